// The chat page: sign in, pick an agent, stream a run, stop it, resume it after a reload, browse
// and search conversations, upload files and fetch the session's workspace files.
import './style.css';
import { ApiError, call, download, setToken, stream, token } from './api.js';
import { renderMarkdown } from './markdown.js';

const $ = (id) => document.getElementById(id);
const RUN_KEY = 'sage.run';
const LABELS = {
  task_analysis: 'Task analysis',
  task_decomposition: 'Tasks',
  planning: 'Plan',
  observation: 'Observation',
  final_answer: 'Summary',
  query_suggest: 'Suggestions',
  execution: 'Execution',
};
const COLLAPSED = new Set(['task_analysis', 'planning', 'observation', 'task_decomposition']);

const state = {
  sessionId: null,
  running: false,
  views: new Map(),
  toolCards: new Map(),
  attachments: [],
  pending: new Set(),
};

// ---- errors and sign-in ------------------------------------------------------------------------

function showError(message) {
  const banner = $('error-banner');
  banner.textContent = message;
  banner.hidden = !message;
}

async function guarded(action) {
  try {
    showError('');
    return await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      setToken(null);
      await signIn();
      return undefined;
    }
    if (error.name !== 'AbortError') showError(error.message);
    return undefined;
  }
}

function signIn() {
  const dialog = $('login-dialog');
  return new Promise((resolve) => {
    $('login-form').onsubmit = async (event) => {
      event.preventDefault();
      $('login-error').textContent = '';
      try {
        const pair = await call('POST', '/api/user/login', {
          username: $('login-username').value,
          password: $('login-password').value,
        });
        setToken(pair.access_token);
        dialog.close();
        $('logout').hidden = false;
        resolve();
      } catch (error) {
        $('login-error').textContent = error.message;
      }
    };
    if (!dialog.open) dialog.showModal();
  });
}

async function ensureSignedIn() {
  const info = await call('GET', '/api/system/info');
  if (!info.auth_required) return;
  if (token()) {
    try {
      await call('GET', '/api/user/check_login');
      $('logout').hidden = false;
      return;
    } catch {
      setToken(null);
    }
  }
  await signIn();
}

// ---- rendering ---------------------------------------------------------------------------------

function scrollToEnd() {
  const messages = $('messages');
  messages.scrollTop = messages.scrollHeight;
}

function newView(messageId, role, type, agentName) {
  const element = document.createElement('article');
  element.dataset.testid = 'message';
  element.dataset.role = role;
  element.dataset.type = type;
  element.dataset.messageId = messageId;
  element.className = `message ${role} ${type}`;
  const label = LABELS[type] || (type === 'error' ? 'Error' : null);
  let body;
  if (COLLAPSED.has(type)) {
    const details = document.createElement('details');
    const summary = document.createElement('summary');
    summary.textContent = label;
    body = document.createElement('div');
    details.append(summary, body);
    element.append(details);
  } else {
    if (label || agentName) {
      const heading = document.createElement('div');
      heading.className = 'label';
      heading.textContent = [agentName, label].filter(Boolean).join(' · ');
      element.append(heading);
    }
    body = document.createElement('div');
    element.append(body);
  }
  body.className = 'message-text';
  $('messages').append(element);
  const view = { element, body, text: '', role };
  state.views.set(messageId, view);
  return view;
}

function paint(view) {
  state.pending.add(view);
  if (state.pending.size > 1) return;
  requestAnimationFrame(() => {
    for (const pending of state.pending) {
      pending.body.innerHTML =
        pending.role === 'user' ? '' : renderMarkdown(pending.text);
      if (pending.role === 'user') pending.body.textContent = pending.text;
      pending.element.dataset.raw = pending.text;
    }
    state.pending.clear();
    scrollToEnd();
  });
}

function text(content) {
  if (content === null || content === undefined) return '';
  return typeof content === 'string' ? content : JSON.stringify(content, null, 2);
}

function toolCard(call, container) {
  let card = state.toolCards.get(call.id);
  if (!card) {
    card = document.createElement('details');
    card.dataset.testid = 'tool-step';
    card.dataset.toolCallId = call.id;
    card.className = 'tool-step';
    const summary = document.createElement('summary');
    const args = document.createElement('pre');
    args.className = 'tool-args';
    const result = document.createElement('pre');
    result.className = 'tool-result';
    result.dataset.testid = 'tool-result';
    result.textContent = '…';
    card.append(summary, args, result);
    container.append(card);
    state.toolCards.set(call.id, card);
  }
  card.querySelector('summary').textContent = `Tool: ${call.function?.name ?? 'tool'}`;
  card.querySelector('.tool-args').textContent = call.function?.arguments ?? '';
  return card;
}

function toolResult(toolCallId, content) {
  const card = state.toolCards.get(toolCallId);
  if (!card) return;
  const result = card.querySelector('.tool-result');
  result.textContent = text(content);
  const failed =
    (typeof content === 'object' && content?.error === true) ||
    (typeof content === 'string' && /"error"\s*:\s*true/.test(content));
  card.classList.toggle('failed', failed);
}

function usageLine(metadata) {
  const total = metadata?.token_usage?.total_info || {};
  const element = document.createElement('div');
  element.dataset.testid = 'token-usage';
  element.className = 'token-usage';
  const count = (n) => (typeof n === 'number' ? n : 0);
  element.textContent = `Tokens: ${count(total.total_tokens)} (${count(total.prompt_tokens)} in, ${count(total.completion_tokens)} out)`;
  $('messages').append(element);
  scrollToEnd();
}

/** One event of a stream, or one stored message of the history (whole content). */
function apply(event) {
  const type = event.type || 'normal';
  if (type === 'stream_end') return;
  if (type === 'token_usage') {
    usageLine(event.metadata);
    return;
  }
  if (event.role === 'tool' || type === 'tool_call_result') {
    toolResult(event.tool_call_id, event.content);
    return;
  }
  const id = event.message_id || `${type}-${Math.random()}`;
  const agent = event.session_id && event.session_id !== state.sessionId ? event.agent_name : null;
  const view = state.views.get(id) || newView(id, event.role || 'assistant', type, agent);
  if (event.tool_calls) {
    for (const call of event.tool_calls) toolCard(call, view.element);
  }
  const piece = text(event.content);
  if (piece) {
    view.text += piece;
    paint(view);
  }
}

function clearMessages() {
  $('messages').replaceChildren();
  state.views.clear();
  state.toolCards.clear();
}

// ---- runs --------------------------------------------------------------------------------------

function setRunning(running) {
  state.running = running;
  $('send-button').hidden = running;
  $('stop-button').hidden = !running;
  document.body.dataset.runState = running ? 'running' : 'idle';
}

function saveRun(run) {
  if (run) sessionStorage.setItem(RUN_KEY, JSON.stringify(run));
  else sessionStorage.removeItem(RUN_KEY);
}

function setSession(id) {
  state.sessionId = id;
  history.replaceState(null, '', id ? `#session=${encodeURIComponent(id)}` : '#');
}

/** Follows a stream to its end, remembering where it is so that a reload can continue it. */
async function follow(path, init, run) {
  setRunning(true);
  try {
    await stream(
      path,
      init,
      (event, id) => {
        if (id !== null) {
          run.lastSeq = id;
          saveRun(run);
        }
        apply(event);
      },
      undefined,
      (headers) => {
        const first = Number(headers.get('x-sage-first-seq'));
        if (run.firstSeq === undefined && Number.isFinite(first)) {
          run.firstSeq = first;
          saveRun(run);
        }
      },
    );
    saveRun(null);
  } finally {
    setRunning(false);
    refreshConversations();
    refreshWorkspace();
  }
}

async function send(event) {
  event.preventDefault();
  const input = $('message-input');
  const content = [input.value.trim(), ...state.attachments.map((file) => file.url)]
    .filter(Boolean)
    .join('\n');
  if (!content || state.running) return;
  if (!state.sessionId) setSession(`session_${Date.now()}`);
  input.value = '';
  state.attachments = [];
  renderAttachments();
  apply({ message_id: `user-${Date.now()}`, role: 'user', type: 'normal', content });
  const body = { messages: [{ role: 'user', content }], session_id: state.sessionId };
  const agent = $('agent-select').value;
  if (agent) body.agent_id = agent;
  const run = { sessionId: state.sessionId };
  await guarded(() =>
    follow('/api/stream', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) }, run),
  );
}

async function stop() {
  if (!state.sessionId) return;
  await guarded(() => call('POST', `/api/sessions/${encodeURIComponent(state.sessionId)}/interrupt`, {}));
}

/** After a reload in the middle of a run: the turns before it from the history, then the run's
 * own events from its first one, live to its end. */
async function resumeRun(run) {
  const conversation = await call('GET', `/api/conversations/${encodeURIComponent(run.sessionId)}/messages`);
  const messages = conversation.messages;
  const lastUser = messages.map((m) => m.role).lastIndexOf('user');
  setSession(run.sessionId);
  clearMessages();
  messages.slice(0, lastUser + 1).forEach(apply);
  // As EventSource reconnects: the events after Last-Event-ID. The run's own events from its
  // first one, since the turns before it came from the history.
  const after = run.firstSeq !== undefined ? run.firstSeq - 1 : 0;
  await follow(
    `/api/stream/resume/${encodeURIComponent(run.sessionId)}`,
    { method: 'GET', headers: { 'Last-Event-ID': String(after) } },
    run,
  );
}

// ---- conversations, agents, files --------------------------------------------------------------

async function openConversation(id) {
  if (state.running) return;
  const conversation = await call('GET', `/api/conversations/${encodeURIComponent(id)}/messages`);
  setSession(id);
  clearMessages();
  conversation.messages.forEach(apply);
  const agentId = conversation.conversation_info?.agent_id;
  if (agentId) $('agent-select').value = agentId;
  closeSidebarOnPhone();
  refreshWorkspace();
}

async function refreshConversations() {
  await guarded(async () => {
    const search = $('conversation-search').value.trim();
    const query = new URLSearchParams({ page: '1', page_size: '50' });
    if (search) query.set('search', search);
    const page = await call('GET', `/api/conversations?${query}`);
    const list = $('conversation-list');
    list.replaceChildren(
      ...page.list.map((item) => {
        const row = document.createElement('li');
        row.dataset.testid = 'conversation-item';
        row.dataset.sessionId = item.session_id;
        row.classList.toggle('current', item.session_id === state.sessionId);
        const open = document.createElement('button');
        open.type = 'button';
        open.className = 'conversation-title';
        open.textContent = item.title;
        open.onclick = () => guarded(() => openConversation(item.session_id));
        const rename = document.createElement('button');
        rename.type = 'button';
        rename.dataset.testid = 'rename-conversation';
        rename.title = 'Rename';
        rename.textContent = '✎';
        rename.onclick = () => {
          const input = document.createElement('input');
          input.dataset.testid = 'rename-input';
          input.value = item.title;
          input.className = 'conversation-title';
          input.onkeydown = (event) => {
            if (event.key === 'Escape') refreshConversations();
            if (event.key !== 'Enter' || !input.value.trim()) return;
            guarded(async () => {
              await call('PUT', `/api/conversations/${encodeURIComponent(item.session_id)}/title`, {
                title: input.value.trim(),
              });
              await refreshConversations();
            });
          };
          open.replaceWith(input);
          input.focus();
          input.select();
        };
        const remove = document.createElement('button');
        remove.type = 'button';
        remove.dataset.testid = 'delete-conversation';
        remove.title = 'Delete';
        remove.textContent = '✕';
        remove.onclick = () => {
          const sure = document.createElement('button');
          sure.type = 'button';
          sure.dataset.testid = 'confirm-delete';
          sure.className = 'danger';
          sure.textContent = 'Delete?';
          sure.onclick = () =>
            guarded(async () => {
              await call('DELETE', `/api/conversations/${encodeURIComponent(item.session_id)}`);
              if (item.session_id === state.sessionId) newChat();
              await refreshConversations();
            });
          remove.replaceWith(sure);
        };
        row.append(open, rename, remove);
        return row;
      }),
    );
  });
}

async function loadAgents() {
  const agents = await call('GET', '/api/agent/list');
  const select = $('agent-select');
  for (const agent of agents) {
    const option = document.createElement('option');
    option.value = agent.id;
    option.textContent = agent.name;
    select.append(option);
  }
}

async function refreshWorkspace() {
  const list = $('workspace-files');
  if (!state.sessionId) {
    list.replaceChildren();
    return;
  }
  await guarded(async () => {
    let files = [];
    try {
      files = (await call('POST', `/api/sessions/${encodeURIComponent(state.sessionId)}/file_workspace`)).files;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) files = [];
      else throw error;
    }
    list.replaceChildren(
      ...files
        .filter((file) => !file.is_directory)
        .map((file) => {
          const row = document.createElement('li');
          row.dataset.testid = 'workspace-file';
          row.dataset.path = file.path;
          const link = document.createElement('button');
          link.type = 'button';
          link.textContent = `${file.path} (${file.size} B)`;
          link.onclick = () =>
            guarded(() =>
              download(
                `/api/sessions/${encodeURIComponent(state.sessionId)}/file_workspace/download?file_path=${encodeURIComponent(file.path)}`,
                file.name,
              ),
            );
          row.append(link);
          return row;
        }),
    );
  });
}

function renderAttachments() {
  $('attachments').replaceChildren(
    ...state.attachments.map((file) => {
      const chip = document.createElement('span');
      chip.className = 'attachment';
      chip.dataset.testid = 'attachment';
      chip.dataset.url = file.url;
      chip.textContent = file.name;
      return chip;
    }),
  );
}

async function attach(event) {
  const file = event.target.files[0];
  event.target.value = '';
  if (!file) return;
  await guarded(async () => {
    const form = new FormData();
    form.append('file', file);
    const uploaded = await call('POST', '/api/oss/upload', form);
    state.attachments.push({ name: file.name, url: new URL(uploaded.url, location.href).href });
    renderAttachments();
  });
}

function newChat() {
  if (state.running) return;
  setSession(null);
  clearMessages();
  refreshWorkspace();
  closeSidebarOnPhone();
}

function closeSidebarOnPhone() {
  document.body.classList.remove('sidebar-open');
}

// ---- start -------------------------------------------------------------------------------------

let searchTimer;
$('composer').addEventListener('submit', send);
$('message-input').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey) send(event);
});
$('stop-button').addEventListener('click', stop);
$('file-input').addEventListener('change', attach);
$('new-chat').addEventListener('click', newChat);
$('refresh-workspace').addEventListener('click', refreshWorkspace);
$('workspace-toggle').addEventListener('click', () => {
  $('workspace-panel').hidden = !$('workspace-panel').hidden;
  refreshWorkspace();
});
$('workspace-close').addEventListener('click', () => {
  $('workspace-panel').hidden = true;
});
$('sidebar-toggle').addEventListener('click', () => document.body.classList.toggle('sidebar-open'));
$('conversation-search').addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(refreshConversations, 250);
});
$('logout').addEventListener('click', () => {
  setToken(null);
  location.reload();
});

async function start() {
  setRunning(false);
  await guarded(ensureSignedIn);
  await guarded(loadAgents);
  await refreshConversations();
  const saved = JSON.parse(sessionStorage.getItem(RUN_KEY) || 'null');
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('session');
  if (saved) await guarded(() => resumeRun(saved));
  else if (fromHash) await guarded(() => openConversation(fromHash));
  document.body.dataset.ready = 'true';
  performance.mark('sage-ready');
}

start();
