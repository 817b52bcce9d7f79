// The chat page as a person uses it: tests/browser.rs runs this against sage-local (auth on,
// the scripted model at 30 ms a token). Each step leaves a screenshot.
import { BASE_URL, PASSWORD, USERNAME, api, check, launch, shot, step } from './lib.mjs';

const login = await api('POST', '/api/user/login', { username: USERNAME, password: PASSWORD });
const token = login.access_token;
const agent = await api(
  'POST',
  '/api/agent/create',
  {
    name: 'Browser helper',
    description: 'Reads its plan and saves downloads.',
    availableTools: ['todo_read', 'download_file_from_url'],
  },
  token,
);

const agentId = agent.agent_id;
const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
const loadErrors = [];
const pageErrors = [];
let loading = true;
page.on('console', (message) => {
  if (loading && message.type() === 'error') loadErrors.push(message.text());
});
page.on('pageerror', (error) => pageErrors.push(String(error)));

const idle = () => page.waitForSelector('body[data-run-state="idle"]', { timeout: 60_000 });
const lastAnswer = () =>
  page.$$eval('[data-testid="message"][data-role="assistant"][data-type="do_subtask_result"]', (all) =>
    all.length ? all[all.length - 1].dataset.raw ?? '' : '',
  );
async function sendMessage(text) {
  await page.fill('[data-testid="message-input"]', text);
  await page.click('[data-testid="send-button"]');
  await page.waitForSelector('body[data-run-state="running"]', { timeout: 10_000 });
}
async function stored(sessionId) {
  return api('GET', `/api/conversations/${encodeURIComponent(sessionId)}/messages`, undefined, token);
}
const currentSession = () => page.evaluate(() => new URLSearchParams(location.hash.slice(1)).get('session'));

try {
  await step('the page loads with no console error and asks to sign in', async () => {
    await page.goto(BASE_URL + '/');
    await page.waitForSelector('[data-testid="login-dialog"][open]');
    await shot(page, 'login');
    check(loadErrors.length === 0, `console errors on load: ${loadErrors.join(' | ')}`);
    loading = false;
  });

  await step('sign in', async () => {
    await page.fill('[data-testid="login-username"]', 'admin');
    await page.fill('[data-testid="login-password"]', 'wrong password');
    await page.click('[data-testid="login-submit"]');
    await page.waitForFunction(() => document.getElementById('login-error').textContent.length > 0);
    await page.fill('[data-testid="login-password"]', PASSWORD);
    await page.click('[data-testid="login-submit"]');
    await page.waitForSelector('body[data-ready="true"]');
    check(!(await page.isVisible('[data-testid="login-dialog"]')), 'the login dialog closed');
    await shot(page, 'signed-in');
  });

  await step('pick an agent and watch the answer stream in', async () => {
    await page.selectOption('[data-testid="agent-select"]', agentId);
    await sendMessage('Zebra report words:60');
    const lengths = [];
    for (let i = 0; i < 8; i += 1) {
      lengths.push((await lastAnswer()).length);
      await page.waitForTimeout(150);
    }
    await idle();
    const grew = lengths.filter((length, i) => i > 0 && length > lengths[i - 1]).length;
    check(grew >= 3, `the text grew while streaming: ${lengths.join(', ')}`);
    const answer = await lastAnswer();
    check(answer.startsWith('tok0 ') && answer.includes('tok59'), `the whole answer: ${answer}`);
    await page.waitForSelector('[data-testid="token-usage"]');
    await shot(page, 'streamed');
  });

  await step('a tool call appears as a step that expands', async () => {
    await sendMessage('call:todo_read next: say:The plan is read.');
    await idle();
    const card = page.locator('[data-testid="tool-step"]').last();
    await card.locator('summary').click();
    check(await card.evaluate((element) => element.open), 'the step expanded');
    const result = await card.locator('[data-testid="tool-result"]').textContent();
    check(result && result !== '…', `the tool result is shown: ${result}`);
    check((await card.locator('summary').textContent()).includes('todo_read'), 'the step names its tool');
    await shot(page, 'tool-step');
  });

  await step('stop a slow run', async () => {
    await sendMessage('words:400');
    await page.waitForFunction(
      () => [...document.querySelectorAll('[data-type="do_subtask_result"]')].pop()?.dataset.raw?.length > 30,
    );
    await page.click('[data-testid="stop-button"]');
    await page.waitForSelector('body[data-run-state="idle"]', { timeout: 10_000 });
    const answer = await lastAnswer();
    check(!answer.includes('tok399'), 'the run stopped before its end');
    await shot(page, 'stopped');
  });

  await step('reload in the middle of a run: the same text, no token lost or repeated', async () => {
    await page.click('[data-testid="new-chat"]');
    await sendMessage('Reload test words:120');
    await page.waitForFunction(
      () => [...document.querySelectorAll('[data-type="do_subtask_result"]')].pop()?.dataset.raw?.length > 40,
    );
    const sessionId = await currentSession();
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]', { timeout: 60_000 });
    await idle();
    const shown = await lastAnswer();
    const conversation = await stored(sessionId);
    const saved = conversation.messages.filter((m) => m.role === 'assistant' && m.type === 'do_subtask_result').pop();
    check(saved, 'the conversation is stored');
    check(shown === saved.content, `the page shows exactly what is stored:\n${shown}\n---\n${saved.content}`);
    const expected = Array.from({ length: 120 }, (_, i) => `tok${i}`).join(' ');
    check(shown.trim() === expected, `every token once, in order: ${shown}`);
    const userMessages = await page.$$eval('[data-testid="message"][data-role="user"]', (all) => all.length);
    check(userMessages === 1, `the question is shown once, not ${userMessages} times`);
    await shot(page, 'reloaded');
  });

  await step('search, rename and delete conversations', async () => {
    await page.fill('[data-testid="conversation-search"]', 'Zebra');
    await page.waitForFunction(() => {
      const items = [...document.querySelectorAll('[data-testid="conversation-item"]')];
      return items.length === 1 && items[0].textContent.includes('Zebra');
    });
    await shot(page, 'searched');
    await page.click('[data-testid="conversation-item"] [data-testid="rename-conversation"]');
    await page.fill('[data-testid="rename-input"]', 'Striped report');
    await page.press('[data-testid="rename-input"]', 'Enter');
    await page.waitForSelector('[data-testid="rename-input"]', { state: 'detached' });
    await page.fill('[data-testid="conversation-search"]', 'Striped');
    await page.waitForFunction(() => {
      const items = [...document.querySelectorAll('[data-testid="conversation-item"]')];
      return items.length === 1 && items[0].textContent.includes('Striped report');
    });
    await page.fill('[data-testid="conversation-search"]', 'Reload test');
    await page.waitForFunction(() => {
      const items = [...document.querySelectorAll('[data-testid="conversation-item"]')];
      return items.length === 1 && items[0].textContent.includes('Reload test');
    });
    await page.click('[data-testid="conversation-item"] [data-testid="delete-conversation"]');
    await page.click('[data-testid="conversation-item"] [data-testid="confirm-delete"]');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="conversation-item"]').length === 0);
    await page.fill('[data-testid="conversation-search"]', '');
    await shot(page, 'renamed-and-deleted');
  });

  await step('upload a file into a message and find it in the workspace', async () => {
    await page.click('[data-testid="new-chat"]');
    await page.selectOption('[data-testid="agent-select"]', agentId);
    await page.setInputFiles('[data-testid="file-input"]', {
      name: 'notes.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from('meeting notes\n'),
    });
    const chip = page.locator('[data-testid="attachment"]');
    await chip.waitFor();
    const url = await chip.getAttribute('data-url');
    await sendMessage(`call:download_file_from_url{"url":"${url}"} next: say:Saved it.`);
    await idle();
    await page.click('[data-testid="workspace-toggle"]');
    // Uploads are stored under a timestamped name: notes_<time>.txt.
    const saved = page.locator('[data-testid="workspace-file"][data-path^="notes"]');
    await saved.waitFor();
    await shot(page, 'workspace');
    const path = await saved.getAttribute('data-path');
    const download = page.waitForEvent('download');
    await saved.locator('button').click();
    const file = await download;
    check(file.suggestedFilename() === path, `downloaded ${file.suggestedFilename()}, not ${path}`);
    const { readFile } = await import('node:fs/promises');
    const body = await readFile(await file.path(), 'utf8');
    check(body === 'meeting notes\n', `the downloaded file holds what was uploaded: ${body}`);
  });

  await step('readable on a phone-sized screen', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await shot(page, 'phone-files');
    await page.click('[data-testid="workspace-close"]');
    check(!(await page.isVisible('[data-testid="sidebar"]')), 'the sidebar folds away');
    check(await page.isVisible('[data-testid="message-input"]'), 'the composer is on screen');
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
