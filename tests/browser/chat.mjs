// The chat page as a person uses it, against a server whose model is the scripted sage-mock-llm
// (tests/browser.rs: auth on, 30 ms a token). Each step leaves a screenshot in SCREENSHOT_DIR.
// Exits non-zero with the failing step's message. Settings: see lib.mjs.
import { readFile } from 'node:fs/promises';
import { BASE_URL, PASSWORD, USERNAME, api, check, launch, main, shot, signIn, step } from './lib.mjs';

const ASSISTANT = '[data-testid="message"][data-role="assistant"][data-type="do_subtask_result"]';

await main(async () => {
  // Words no earlier run on the same server used: the history search must find this run's only.
  const tag = Date.now().toString(36);
  const zebra = `Zebra${tag} report words:60`;
  const reload = `Reload${tag} words:120`;
  const token = await signIn();
  const authOn = token !== null;
  const agent = await api(
    'POST',
    '/api/agent/create',
    {
      name: `Browser helper ${Date.now()}`,
      description: 'Reads its plan and saves downloads.',
      availableTools: ['todo_read', 'download_file_from_url'],
    },
    token,
  );
  const agentId = agent.agent_id;
  const careful = await api(
    'POST',
    '/api/agent/create',
    {
      name: `Careful writer ${Date.now()}`,
      description: 'Writes files only when allowed.',
      availableTools: ['file_write'],
      toolsRequiringApproval: ['file_write'],
    },
    token,
  );
  const stored = (sessionId) => api('GET', `/api/conversations/${encodeURIComponent(sessionId)}/messages`, undefined, token);
  /** The stored text of the last assistant answer, as the page concatenates it. */
  const storedAnswer = async (sessionId) => {
    const conversation = await stored(sessionId);
    const answers = conversation.messages.filter((m) => m.role === 'assistant' && m.type === 'do_subtask_result');
    return answers.length ? answers[answers.length - 1].content : undefined;
  };

  const browser = await launch();
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
  const consoleErrors = [];
  const pageErrors = [];
  const requests = [];
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.on('request', (request) => {
    if (request.url().includes('/api/stream')) {
      requests.push({ url: request.url(), method: request.method(), headers: request.headers(), body: request.postData() });
    }
  });

  const idle = (timeout = 60_000) => page.waitForSelector('body[data-run-state="idle"]', { timeout });
  const lastAnswer = () => page.$$eval(ASSISTANT, (all) => (all.length ? (all[all.length - 1].dataset.raw ?? '') : ''));
  const currentSession = () => page.evaluate(() => new URLSearchParams(location.hash.slice(1)).get('session'));
  const waitAnswerLonger = (length) =>
    page.waitForFunction(
      ([selector, min]) => {
        const all = document.querySelectorAll(selector);
        return all.length > 0 && (all[all.length - 1].dataset.raw ?? '').length > min;
      },
      [ASSISTANT, length],
      { timeout: 30_000 },
    );
  async function sendMessage(text) {
    await page.fill('[data-testid="message-input"]', text);
    await page.click('[data-testid="send-button"]');
    await page.waitForSelector('body[data-run-state="running"]', { timeout: 10_000 });
  }
  async function newChat() {
    await page.click('[data-testid="new-chat"]');
    await page.waitForFunction(() => !location.hash.includes('session='));
  }
  const items = () => page.$$eval('[data-testid="conversation-item"]', (all) => all.map((row) => row.textContent));
  async function searchFor(text, expect) {
    await page.fill('[data-testid="conversation-search"]', text);
    await page.waitForFunction(
      ([want]) => {
        const rows = [...document.querySelectorAll('[data-testid="conversation-item"]')];
        return want === null ? rows.length === 0 : rows.length === 1 && rows[0].textContent.includes(want);
      },
      [expect],
      { timeout: 10_000 },
    ).catch(async () => {
      throw new Error(`searching "${text}" should list ${expect === null ? 'nothing' : `only "${expect}"`}: ${JSON.stringify(await items())}`);
    });
  }

  try {
    await step('the page loads with no console error', async () => {
      await page.goto(BASE_URL + '/');
      if (authOn) await page.waitForSelector('[data-testid="login-dialog"][open]');
      else await page.waitForSelector('body[data-ready="true"]');
      await page.waitForLoadState('networkidle');
      await shot(page, authOn ? 'login' : 'loaded');
      check(consoleErrors.length === 0, `console errors on load: ${consoleErrors.join(' | ')}`);
      check(pageErrors.length === 0, `uncaught errors on load: ${pageErrors.join(' | ')}`);
    });

    if (authOn) {
      await step('sign in: a wrong password shows the server\'s message, the right one gets in', async () => {
        await page.fill('[data-testid="login-username"]', USERNAME);
        await page.fill('[data-testid="login-password"]', 'wrong password');
        await page.click('[data-testid="login-submit"]');
        await page.waitForFunction(() => document.querySelector('[data-testid="login-error"]').textContent.length > 0);
        const message = await page.textContent('[data-testid="login-error"]');
        check(!/^\d{3}\b/.test(message), `the envelope's message is shown, not a status line: ${message}`);
        await page.fill('[data-testid="login-password"]', PASSWORD);
        await page.click('[data-testid="login-submit"]');
        await page.waitForSelector('body[data-ready="true"]');
        check(!(await page.isVisible('[data-testid="login-dialog"]')), 'the login dialog closed');
        check(await page.evaluate(() => !!localStorage.getItem('sage.token')), 'the token is kept');
        await shot(page, 'signed-in');
      });
    }

    await step('pick an agent and watch the answer stream in', async () => {
      await page.selectOption('[data-testid="agent-select"]', agentId);
      await sendMessage(zebra);
      const lengths = [];
      for (let i = 0; i < 10; i += 1) {
        lengths.push((await lastAnswer()).length);
        await page.waitForTimeout(120);
      }
      await idle();
      const grew = lengths.filter((length, i) => i > 0 && length > lengths[i - 1]).length;
      check(grew >= 3, `the text grew while streaming (sampled lengths ${lengths.join(', ')})`);
      const answer = await lastAnswer();
      check(answer.startsWith('tok0 ') && answer.includes('tok59'), `the whole answer: ${answer}`);
      const sent = JSON.parse(requests.filter((r) => r.method === 'POST').pop().body);
      check(sent.agent_id === agentId, `the stream body names the agent: ${JSON.stringify(sent)}`);
      check(sent.messages[0].content === zebra, 'the stream body carries the message');
      const usage = page.locator('[data-testid="token-usage"]').last();
      await usage.waitFor();
      check(Number(await usage.getAttribute('data-total')) > 0, `token usage shown: ${await usage.textContent()}`);
      check(answer === (await storedAnswer(await currentSession())), 'the streamed text is the stored text');
      await shot(page, 'streamed');
    });

    await step('a tool call appears as a step that expands', async () => {
      await newChat();
      await page.selectOption('[data-testid="agent-select"]', '');
      await page.click('[data-testid="tools-picker"] summary');
      await page.check('[data-testid="tool-option"][data-tool="todo_read"] input');
      await page.click('[data-testid="tools-picker"] summary');
      await sendMessage('call:todo_read next: say:The plan is read.');
      const sent = JSON.parse(requests.filter((r) => r.method === 'POST').pop().body);
      check(
        JSON.stringify(sent.available_tools) === '["todo_read"]' && !sent.agent_id,
        `the body offers the picked tool, no agent: ${JSON.stringify(sent)}`,
      );
      const card = page.locator('[data-testid="tool-step"]').last();
      await card.waitFor({ timeout: 20_000 });
      await idle();
      check((await card.locator('summary').textContent()).includes('todo_read'), 'the step names its tool');
      check((await card.getAttribute('data-status')) === 'done', `the step is done: ${await card.getAttribute('data-status')}`);
      check(!(await card.evaluate((element) => element.open)), 'the step starts folded');
      await card.locator('summary').click();
      check(await card.evaluate((element) => element.open), 'the step expanded');
      check(await card.locator('[data-testid="tool-result"]').isVisible(), 'its result is visible once expanded');
      const result = await card.locator('[data-testid="tool-result"]').textContent();
      check(result.includes('tasks'), `the tool result is shown: ${result}`);
      // The server hands the run off after its tool turn: the page followed it to its answer.
      const shown = await page.locator('[data-testid="messages"]').textContent();
      check(!shown.includes('continues in a new invocation'), 'the hand-off is not shown as a message');
      check(shown.includes('Tool results:'), `the answer after the hand-off is shown: ${shown.slice(-300)}`);
      await shot(page, 'tool-step');
      await page.click('[data-testid="tools-picker"] summary');
      await page.uncheck('[data-testid="tool-option"][data-tool="todo_read"] input');
      await page.click('[data-testid="tools-picker"] summary');
    });

    await step('a call that needs approval waits for a click, then the run goes on', async () => {
      await newChat();
      await page.selectOption('[data-testid="agent-select"]', careful.agent_id);
      await sendMessage('call:file_write{"file_path": "approved.txt", "content": "allowed"}');
      await idle();
      const card = page.locator('[data-testid="approval"]').last();
      await card.waitFor({ timeout: 20_000 });
      check((await card.textContent()).includes('file_write'), `the request names its tool: ${await card.textContent()}`);
      check((await card.textContent()).includes('approved.txt'), 'the request shows the arguments');
      const step = page.locator('[data-testid="tool-step"]').last();
      check((await step.getAttribute('data-status')) === 'awaiting approval', `nothing ran yet: ${await step.getAttribute('data-status')}`);
      await shot(page, 'approval-waiting');
      await card.locator('[data-testid="approve-button"]').click();
      await page.waitForFunction(() => {
        const cards = document.querySelectorAll('[data-testid="approval"]');
        return cards.length && cards[cards.length - 1].dataset.decided === 'approve';
      });
      await idle();
      await page.waitForFunction(
        () => [...document.querySelectorAll('[data-testid="tool-step"]')].pop()?.dataset.status === 'done',
        undefined,
        { timeout: 20_000 },
      );
      check((await card.locator('button').count()) === 0, 'the buttons are gone once decided');
      const answer = await lastAnswer();
      check(answer.startsWith('Tool results:') && answer.includes('approved.txt'), `the model went on with the result: ${answer}`);
      await shot(page, 'approval-approved');
      await page.selectOption('[data-testid="agent-select"]', '');
    });

    await step('stop a slow run: it ends with the tail', async () => {
      await newChat();
      await sendMessage('words:400');
      await waitAnswerLonger(30);
      const started = Date.now();
      await page.click('[data-testid="stop-button"]');
      await idle(10_000);
      const answer = await lastAnswer();
      check(!answer.includes('tok399'), 'the run stopped before its end');
      check(
        (await page.locator('[data-testid="token-usage"]').count()) === 1,
        'the stream tail (token usage) arrived after the stop',
      );
      const status = await api('POST', `/api/sessions/${encodeURIComponent(await currentSession())}/tasks_status`, undefined, token);
      check(status.status !== 'running', `the session no longer runs: ${JSON.stringify(status)}`);
      check(answer === (await storedAnswer(await currentSession())), 'the page shows what was stored up to the stop');
      console.log(`     stopped ${Date.now() - started} ms after the click, ${answer.split(' ').length - 1} tokens in`);
      await shot(page, 'stopped');
    });

    await step('reload in the middle of a run: the same text, no token lost or repeated', async () => {
      await newChat();
      await sendMessage(reload);
      await waitAnswerLonger(60);
      const sessionId = await currentSession();
      const before = requests.length;
      await page.reload();
      await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
      check((await currentSession()) === sessionId, 'the page keeps its conversation');
      await idle();
      const resume = requests.slice(before).find((r) => r.url.includes(`/api/stream/resume/${encodeURIComponent(sessionId)}`));
      check(resume, `the page resumed the run: ${JSON.stringify(requests.slice(before).map((r) => r.url))}`);
      const lastEventId = Number(resume.headers['last-event-id']);
      check(lastEventId > 2, `it asked for the events after the last one drawn (Last-Event-ID: ${resume.headers['last-event-id']})`);
      const shown = await lastAnswer();
      const saved = await storedAnswer(sessionId);
      check(saved !== undefined, 'the conversation is stored');
      check(shown === saved, `the page shows exactly what is stored:\n${shown}\n---\n${saved}`);
      const expected = Array.from({ length: 120 }, (_, i) => `tok${i}`).join(' ');
      check(shown.trim() === expected, `every token once, in order: ${shown}`);
      const userMessages = await page.$$eval('[data-testid="message"][data-role="user"]', (all) => all.map((m) => m.dataset.raw));
      check(
        userMessages.length === 1 && userMessages[0] === reload,
        `the question is shown once: ${JSON.stringify(userMessages)}`,
      );
      check((await page.locator('[data-testid="token-usage"]').count()) === 1, 'one token usage line');
      await shot(page, 'reloaded');
    });

    await step('search, open, rename and delete conversations', async () => {
      await searchFor(`Zebra${tag}`, `Zebra${tag}`);
      await shot(page, 'searched');
      await page.click('[data-testid="conversation-item"] [data-testid="open-conversation"]');
      await page.waitForFunction(
        ([text]) => document.querySelector('[data-testid="message"][data-role="user"]')?.dataset.raw === text,
        [zebra],
      );
      const zebraSession = await currentSession();
      check((await lastAnswer()) === (await storedAnswer(zebraSession)), 'the opened conversation shows its stored answer');
      await page.click('[data-testid="conversation-item"] [data-testid="rename-conversation"]');
      await page.fill('[data-testid="rename-input"]', `Striped ${tag}`);
      await page.press('[data-testid="rename-input"]', 'Enter');
      await page.waitForSelector('[data-testid="rename-input"]', { state: 'detached' });
      await searchFor(`Striped ${tag}`, `Striped ${tag}`);
      const renamed = await stored(zebraSession);
      check(renamed.conversation_info.title === `Striped ${tag}`, `the title is stored: ${renamed.conversation_info.title}`);
      await searchFor(`Reload${tag}`, `Reload${tag}`);
      const doomed = await page.getAttribute('[data-testid="conversation-item"]', 'data-session-id');
      await page.click('[data-testid="conversation-item"] [data-testid="delete-conversation"]');
      await page.click('[data-testid="conversation-item"] [data-testid="confirm-delete"]');
      await searchFor(`Reload${tag}`, null);
      const gone = await fetch(`${BASE_URL}/api/conversations/${encodeURIComponent(doomed)}/messages`, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
      });
      check(gone.status === 404, `the deleted conversation is gone (HTTP ${gone.status})`);
      await page.fill('[data-testid="conversation-search"]', '');
      await shot(page, 'renamed-and-deleted');
    });

    await step('upload a file into a message and find it in the workspace', async () => {
      await newChat();
      await page.selectOption('[data-testid="agent-select"]', agentId);
      await page.setInputFiles('[data-testid="file-input"]', {
        name: 'notes.txt',
        mimeType: 'text/plain',
        buffer: Buffer.from('meeting notes\n'),
      });
      const chip = page.locator('[data-testid="attachment"]');
      await chip.waitFor();
      const url = await chip.getAttribute('data-url');
      check(url.startsWith(BASE_URL), `the upload's link is absolute on the server: ${url}`);
      // The model (scripted) fetches the attachment into the session's workspace.
      await sendMessage(`call:download_file_from_url{"url":"${url}"} next: say:Saved it.`);
      const sent = JSON.parse(requests.filter((r) => r.method === 'POST').pop().body);
      check(sent.messages[0].content.endsWith(`\n${url}`), `the link is put into the message: ${sent.messages[0].content}`);
      await idle();
      await page.click('[data-testid="workspace-toggle"]');
      // Uploads are stored under a timestamped name: notes_<time>.txt.
      const saved = page.locator('[data-testid="workspace-file"][data-path*="notes"]');
      await saved.waitFor({ timeout: 10_000 });
      await shot(page, 'workspace');
      const path = await saved.getAttribute('data-path');
      const download = page.waitForEvent('download');
      await saved.locator('[data-testid="workspace-download"]').click();
      const file = await download;
      check(file.suggestedFilename() === path.split('/').pop(), `downloaded ${file.suggestedFilename()}, not ${path}`);
      const body = await readFile(await file.path(), 'utf8');
      check(body === 'meeting notes\n', `the downloaded file holds what was uploaded: ${JSON.stringify(body)}`);
    });

    await step('readable on a phone-sized screen', async () => {
      await page.setViewportSize({ width: 390, height: 844 });
      await shot(page, 'phone-files');
      await page.click('[data-testid="workspace-close"]');
      check(!(await page.isVisible('[data-testid="sidebar"]')), 'the sidebar folds away');
      check(await page.isVisible('[data-testid="message-input"]'), 'the composer is on screen');
      check(await page.isVisible('[data-testid="send-button"]'), 'the send button is on screen');
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      check(overflow <= 0, `no sideways scrolling (${overflow}px too wide)`);
      await shot(page, 'phone');
      await page.click('[data-testid="sidebar-toggle"]');
      check(await page.isVisible('[data-testid="sidebar"]'), 'the sidebar opens');
      await shot(page, 'phone-sidebar');
    });

    check(pageErrors.length === 0, `uncaught errors in the page: ${pageErrors.join(' | ')}`);
  } finally {
    await browser.close();
  }
});
