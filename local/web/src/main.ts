// The chat page: sign in, pick an agent and tools, stream a run, stop it, continue it after a
// reload, browse / search / rename / delete conversations, attach files, fetch workspace files.
import './style.css';
import { ApiError, call, claims, download, setToken, stream, token } from './api';
import { Conversation, type Block, type Decision, type SageEvent } from './conversation';

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const enc = encodeURIComponent;

/** The run in progress in this tab: enough to continue it after a reload (sessionStorage). */
interface Run {
  sessionId: string;
  /** Idempotency-Key of its POST: re-sending the same body re-attaches to the same run. */
  key: string;
  body: string;
  /** Where it is posted: `/api/stream`, or a paused run's approval. */
  path?: string;
  /** The seq of its first event (`X-Sage-First-Seq`), once known. */
  firstSeq?: number;
  /** The seq of the last event drawn. */
  lastSeq?: number;
}
/** What is on screen and the seq of the last event in it, saved together. */
interface Snapshot {
  sessionId: string;
  lastSeq: number | null;
  blocks: Block[];
}

const RUN_KEY = 'sage.run';
const VIEW_KEY = 'sage.view';
const AGENT_KEY = 'sage.agent';
const TOOLS_KEY = 'sage.tools';
const PAGE_SIZE = 20;

const input = $<HTMLTextAreaElement>('message-input');
const conversation = new Conversation(
  $('messages'),
  (text) => {
    input.value = text;
    input.focus();
  },
  (approvalId, decision) => void decide(approvalId, decision),
);

const state = {
  running: false,
  run: null as Run | null,
  controller: null as AbortController | null,
  attachments: [] as { name: string; url: string }[],
  page: 1,
  hasNext: false,
  tools: [] as string[],
};

// ---- small helpers -----------------------------------------------------------------------------

function uuid(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function readJson<T>(storage: Storage, key: string): T | null {
  try {
    return JSON.parse(storage.getItem(key) || 'null') as T | null;
  } catch {
    return null;
  }
}

function showError(message: string): void {
  $('error-text').textContent = message;
  $('error-banner').hidden = !message;
}

/** Runs an action, showing its error's `message`; a 401 opens the sign-in and retries once. */
async function guarded<T>(action: () => Promise<T>, retried = false): Promise<T | undefined> {
  try {
    return await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && !retried) {
      setToken(null);
      await signIn();
      return guarded(action, true);
    }
    if ((error as Error).name !== 'AbortError') showError((error as Error).message || String(error));
    return undefined;
  }
}

// ---- sign-in -----------------------------------------------------------------------------------

let signingIn: Promise<void> | null = null;

function signIn(): Promise<void> {
  if (signingIn) return signingIn;
  const dialog = $<HTMLDialogElement>('login-dialog');
  signingIn = new Promise<void>((resolve) => {
    $('login-form').onsubmit = async (event) => {
      event.preventDefault();
      $('login-error').textContent = '';
      const submit = $<HTMLButtonElement>('login-submit');
      submit.disabled = true;
      try {
        const pair = await call<{ access_token: string }>('POST', '/api/user/login', {
          username_or_email: $<HTMLInputElement>('login-username').value.trim(),
          password: $<HTMLInputElement>('login-password').value,
        });
        setToken(pair.access_token);
        $<HTMLInputElement>('login-password').value = '';
        dialog.close();
        showUser();
        signingIn = null;
        resolve();
      } catch (error) {
        $('login-error').textContent = (error as Error).message;
      } finally {
        submit.disabled = false;
      }
    };
    if (!dialog.open) dialog.showModal();
    $('login-username').focus();
  });
  return signingIn;
}

function showUser(): void {
  const me = claims();
  $('user-name').textContent = me ? String(me.username ?? me.userid ?? '') : '';
  $('logout').hidden = !me;
}

async function ensureSignedIn(): Promise<void> {
  let required: boolean | undefined;
  try {
    const info = await call<{ auth_required?: boolean }>('GET', '/api/system/info');
    if (typeof info?.auth_required === 'boolean') required = info.auth_required;
  } catch {
    // an older server: ask check_login below
  }
  if (token() && !claims()) setToken(null); // expired
  if (required === false) {
    showUser();
    return;
  }
  if (token() || required === undefined) {
    try {
      await call('GET', '/api/user/check_login');
      showUser();
      return;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) throw error;
      setToken(null);
    }
  }
  await signIn();
}

// ---- runs --------------------------------------------------------------------------------------

function setRunning(running: boolean): void {
  state.running = running;
  $('send-button').hidden = running;
  $('stop-button').hidden = !running;
  $<HTMLButtonElement>('stop-button').disabled = false;
  document.body.dataset.runState = running ? 'running' : 'idle';
}

function saveRun(run: Run | null): void {
  if (!run) {
    sessionStorage.removeItem(RUN_KEY);
    sessionStorage.removeItem(VIEW_KEY);
    return;
  }
  const { lastSeq: _, ...meta } = run;
  sessionStorage.setItem(RUN_KEY, JSON.stringify(meta));
}

let viewTimer: ReturnType<typeof setTimeout> | undefined;

/** Saves what is on screen with the seq of its last event; at most every 250 ms, or now. */
function saveView(now = false): void {
  if (!state.run) return;
  if (!now) {
    viewTimer ??= setTimeout(() => saveView(true), 250);
    return;
  }
  clearTimeout(viewTimer);
  viewTimer = undefined;
  const snapshot: Snapshot = {
    sessionId: state.run.sessionId,
    lastSeq: state.run.lastSeq ?? null,
    blocks: conversation.blocks,
  };
  try {
    sessionStorage.setItem(VIEW_KEY, JSON.stringify(snapshot));
  } catch {
    // too big for sessionStorage: a reload rebuilds from the history instead
    sessionStorage.removeItem(VIEW_KEY);
  }
}
addEventListener('pagehide', () => saveView(true));

function sessionFromHash(): string | null {
  return new URLSearchParams(location.hash.slice(1)).get('session');
}

function setSession(id: string | null): void {
  conversation.sessionId = id;
  history.replaceState(null, '', id ? `#session=${enc(id)}` : location.pathname + location.search);
  for (const row of document.querySelectorAll<HTMLElement>('[data-testid="conversation-item"]')) {
    row.classList.toggle('current', row.dataset.sessionId === id);
  }
}

type Mode = 'post' | 'resume';

/**
 * Follows a run to its tail. `post` sends (or, with the same Idempotency-Key, re-attaches to)
 * the run; `resume` asks for the events after the last one drawn. A broken connection is
 * resumed the same way, as EventSource would.
 */
async function follow(run: Run, mode: Mode): Promise<void> {
  state.run = run;
  const controller = new AbortController();
  state.controller = controller;
  setRunning(true);
  let ended = false;
  // The run went on in a fresh invocation: follow it there at once.
  let handedOff = false;
  const handlers = {
    open(headers: Headers) {
      const first = Number(headers.get('x-sage-first-seq'));
      if (run.firstSeq === undefined && Number.isInteger(first) && first > 0) {
        run.firstSeq = first;
        saveRun(run);
      }
    },
    event(data: SageEvent, id: number | null) {
      if (id !== null) {
        if (run.lastSeq !== undefined && id <= run.lastSeq) return; // already drawn
        run.lastSeq = id;
      }
      if (data.type === 'stream_end') {
        ended = true;
        saveRun(null);
        state.run = null;
      }
      if (data.type === 'normal' && data.metadata?.continues === true) {
        handedOff = true;
        return;
      }
      conversation.apply(data);
      if (!ended) saveView();
    },
  };
  try {
    for (let attempt = 0; !ended; attempt += 1) {
      try {
        if (mode === 'post') {
          const headers: Record<string, string> = { 'Content-Type': 'application/json' };
          if (!run.path) headers['Idempotency-Key'] = run.key;
          await stream(
            run.path ?? '/api/stream',
            { method: 'POST', headers, body: run.body },
            handlers,
            controller.signal,
          );
        } else {
          const after = run.lastSeq ?? (run.firstSeq !== undefined ? run.firstSeq - 1 : 0);
          await stream(
            `/api/stream/resume/${enc(run.sessionId)}`,
            { method: 'GET', headers: { 'Last-Event-ID': String(after) } },
            handlers,
            controller.signal,
          );
        }
      } catch (error) {
        if (error instanceof ApiError || controller.signal.aborted) throw error;
        // the connection broke: try again below
      }
      if (ended || controller.signal.aborted) break;
      mode = run.lastSeq !== undefined || run.firstSeq !== undefined ? 'resume' : 'post';
      if (handedOff) {
        handedOff = false;
        attempt = -1;
        continue;
      }
      if (attempt >= 5) throw new Error('The connection to the server was lost; reload the page to continue.');
      await sleep(500 * (attempt + 1));
      mode = run.lastSeq !== undefined || run.firstSeq !== undefined ? 'resume' : 'post';
    }
  } finally {
    if (ended || controller.signal.aborted) conversation.settle();
    conversation.flush();
    if (ended || controller.signal.aborted) {
      saveRun(null);
      state.run = null;
    }
    state.controller = null;
    setRunning(false);
    void refreshConversations();
    void refreshWorkspace();
  }
}

function requestBody(content: string, sessionId: string): Record<string, unknown> {
  const body: Record<string, unknown> = { messages: [{ role: 'user', content }], session_id: sessionId };
  const agent = $<HTMLSelectElement>('agent-select').value;
  if (agent) body.agent_id = agent;
  if (state.tools.length) body.available_tools = state.tools;
  return body;
}

async function send(event?: Event): Promise<void> {
  event?.preventDefault();
  const content = [input.value.trim(), ...state.attachments.map((file) => file.url)].filter(Boolean).join('\n');
  if (!content || state.running) return;
  showError('');
  if (!conversation.sessionId) setSession(`session_${Date.now()}`);
  const sessionId = conversation.sessionId!;
  const run: Run = { sessionId, key: uuid(), body: JSON.stringify(requestBody(content, sessionId)) };
  const typed = { text: input.value, attachments: state.attachments };
  input.value = '';
  state.attachments = [];
  renderAttachments();
  conversation.user(content, `user-${run.key}`);
  await launch(run, () => {
    // refused before it started (busy session, no model...): nothing to continue; the message
    // goes back into the box
    conversation.remove(`user-${run.key}`);
    if (!input.value) input.value = typed.text;
    if (!state.attachments.length) state.attachments = typed.attachments;
    renderAttachments();
  });
}

/** Posts a new run and follows it; `refused` undoes what the page showed when the server
 * refuses it before it starts. A 401 is not a refusal: the person signs in and it is sent again. */
async function launch(run: Run, refused: () => void): Promise<void> {
  state.run = run;
  saveRun(run);
  saveView(true);
  await guarded(async () => {
    try {
      await follow(run, 'post');
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      if (run.firstSeq === undefined) {
        saveRun(null);
        state.run = null;
        refused();
      }
      throw error;
    }
  });
}

/** The owner's decision on a paused run's tool call: its continuation streams like a run. */
async function decide(approvalId: string, decision: Decision): Promise<void> {
  const sessionId = conversation.sessionId;
  if (!sessionId || state.running) return;
  showError('');
  conversation.decided(approvalId, decision);
  const run: Run = {
    sessionId,
    key: uuid(),
    path: `/api/sessions/${enc(sessionId)}/approve`,
    body: JSON.stringify({ decision, approval_id: approvalId }),
  };
  // refused (already decided, expired and gone): the buttons come back
  await launch(run, () => conversation.decided(approvalId, undefined));
}

async function stop(): Promise<void> {
  const sessionId = state.run?.sessionId ?? conversation.sessionId;
  if (!sessionId) return;
  $<HTMLButtonElement>('stop-button').disabled = true;
  await guarded(() => call('POST', `/api/sessions/${enc(sessionId)}/interrupt`, { message: 'Stopped from the page' }));
  // The run ends its stream with the tail; if it does not within 20 s, stop listening.
  const controller = state.controller;
  setTimeout(() => {
    if (state.controller === controller && controller) controller.abort();
  }, 20_000);
}

/** After a reload in the middle of a run: what was on screen, then the events after it. */
async function restoreRun(run: Run): Promise<void> {
  setSession(run.sessionId);
  const snapshot = readJson<Snapshot>(sessionStorage, VIEW_KEY);
  if (snapshot && snapshot.sessionId === run.sessionId && Array.isArray(snapshot.blocks)) {
    conversation.load(snapshot.blocks);
    run.lastSeq = snapshot.lastSeq ?? undefined;
  } else {
    // No snapshot: the turns before this run from the history, this run from its first event.
    conversation.clear();
    let messages: SageEvent[] = [];
    try {
      messages = (await call<{ messages: SageEvent[] }>('GET', `/api/conversations/${enc(run.sessionId)}/messages`)).messages;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
    }
    const lastUser = messages.map((m) => m.role).lastIndexOf('user');
    conversation.history(messages.slice(0, lastUser + 1));
    const sent = (JSON.parse(run.body).messages?.[0]?.content as string) ?? '';
    if (lastUser < 0 || messages[lastUser].content !== sent) conversation.user(sent, `user-${run.key}`);
    conversation.flush();
    run.lastSeq = undefined;
  }
  const mode: Mode = run.lastSeq !== undefined || run.firstSeq !== undefined ? 'resume' : 'post';
  void guarded(async () => {
    try {
      await follow(run, mode);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      if (mode === 'post' && error.status === 409 && !(await stored(run))) {
        // The first POST was cut off so early that the server never stored the message, yet it
        // keeps its Idempotency-Key "still starting": send it once more under a new key.
        run.key = uuid();
        saveRun(run);
        await follow(run, 'post');
        return;
      }
      // the server knows no such run any more: show what it stored
      saveRun(null);
      state.run = null;
      await openConversation(run.sessionId);
    }
  });
}

/** Whether the server stored the run's message as the conversation's last user message. */
async function stored(run: Run): Promise<boolean> {
  try {
    const data = await call<{ messages: SageEvent[] }>('GET', `/api/conversations/${enc(run.sessionId)}/messages`);
    const users = data.messages.filter((m) => m.role === 'user');
    return users.length > 0 && users[users.length - 1].content === JSON.parse(run.body).messages?.[0]?.content;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return false;
    throw error;
  }
}

// ---- conversations -----------------------------------------------------------------------------

const BUSY = 'A run is in progress here: stop it or wait for its end first.';

async function openConversation(id: string): Promise<void> {
  if (state.running) {
    if (id !== conversation.sessionId) showError(BUSY);
    return;
  }
  const data = await call<{ messages: SageEvent[]; conversation_info?: { agent_id?: string | null } }>(
    'GET',
    `/api/conversations/${enc(id)}/messages`,
  );
  setSession(id);
  conversation.clear();
  conversation.history(data.messages);
  const agentId = data.conversation_info?.agent_id;
  const select = $<HTMLSelectElement>('agent-select');
  if (agentId && [...select.options].some((option) => option.value === agentId)) select.value = agentId;
  closePanelsOnPhone();
  void refreshWorkspace();
}

interface ConversationItem {
  session_id: string;
  title: string;
  message_count?: number;
  updated_at?: string;
}


/** A small button that shows a glyph and names its action for screen readers. */
function iconButton(testid: string, label: string, glyph: string): HTMLButtonElement {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'icon';
  button.dataset.testid = testid;
  button.title = label;
  button.setAttribute('aria-label', label);
  button.textContent = glyph;
  return button;
}

function conversationRow(item: ConversationItem): HTMLLIElement {
  const row = document.createElement('li');
  row.dataset.testid = 'conversation-item';
  row.dataset.sessionId = item.session_id;
  row.classList.toggle('current', item.session_id === conversation.sessionId);
  const open = document.createElement('button');
  open.type = 'button';
  open.className = 'conversation-title';
  open.dataset.testid = 'open-conversation';
  open.textContent = item.title || item.session_id;
  open.title = item.updated_at ? `${item.title}\n${new Date(item.updated_at).toLocaleString()}` : item.title;
  open.onclick = () => guarded(() => openConversation(item.session_id));
  const rename = iconButton('rename-conversation', 'Rename', '✎');
  rename.onclick = () => {
    const field = document.createElement('input');
    field.dataset.testid = 'rename-input';
    field.value = item.title;
    field.className = 'conversation-title';
    field.setAttribute('aria-label', 'New title');
    let done = false;
    field.onkeydown = (event) => {
      if (event.key === 'Escape') {
        done = true;
        field.replaceWith(open);
      }
      if (event.key !== 'Enter' || event.isComposing || !field.value.trim()) return;
      done = true;
      void guarded(async () => {
        await call('PUT', `/api/conversations/${enc(item.session_id)}/title`, { title: field.value.trim() });
        await refreshConversations();
      });
    };
    field.onblur = () => {
      if (!done) field.replaceWith(open);
    };
    open.replaceWith(field);
    field.focus();
    field.select();
  };
  const remove = iconButton('delete-conversation', 'Delete', '✕');
  remove.onclick = () => {
    const sure = document.createElement('button');
    sure.type = 'button';
    sure.dataset.testid = 'confirm-delete';
    sure.className = 'danger';
    sure.textContent = 'Delete?';
    sure.onclick = () =>
      guarded(async () => {
        await call('DELETE', `/api/conversations/${enc(item.session_id)}`);
        if (item.session_id === conversation.sessionId && !state.running) newChat();
        await refreshConversations();
      });
    sure.onblur = () => setTimeout(() => sure.isConnected && sure.replaceWith(remove), 200);
    remove.replaceWith(sure);
    sure.focus();
  };
  row.append(open, rename, remove);
  return row;
}

let listRequest = 0;

async function refreshConversations(more = false): Promise<void> {
  const ticket = ++listRequest;
  await guarded(async () => {
    const search = $<HTMLInputElement>('conversation-search').value.trim();
    const page = more ? state.page + 1 : 1;
    const query = new URLSearchParams({ page: String(page), page_size: String(PAGE_SIZE) });
    if (search) query.set('search', search);
    const data = await call<{ list: ConversationItem[]; has_next?: boolean }>('GET', `/api/conversations?${query}`);
    if (ticket !== listRequest) return; // a newer search answered first
    state.page = page;
    state.hasNext = !!data.has_next;
    const rows = data.list.map(conversationRow);
    const list = $('conversation-list');
    if (more) list.append(...rows);
    else list.replaceChildren(...rows);
    $('conversation-empty').hidden = list.childElementCount > 0;
    $('conversation-more').hidden = !state.hasNext;
  });
}

// ---- agents and tools --------------------------------------------------------------------------

async function loadAgents(): Promise<void> {
  const agents = await call<{ id: string; name: string; description?: string }[]>('GET', '/api/agent/list');
  const select = $<HTMLSelectElement>('agent-select');
  for (const agent of agents ?? []) {
    const option = document.createElement('option');
    option.value = agent.id;
    option.textContent = agent.name || agent.id;
    if (agent.description) option.title = agent.description;
    select.append(option);
  }
  const saved = localStorage.getItem(AGENT_KEY);
  if (saved && [...select.options].some((option) => option.value === saved)) select.value = saved;
}

async function loadTools(): Promise<void> {
  const data = await call<{ tools: { name: string; description?: string; type?: string }[] }>('GET', '/api/tools');
  const saved = new Set(readJson<string[]>(localStorage, TOOLS_KEY) ?? []);
  const names = [...new Set((data?.tools ?? []).map((tool) => tool.name))];
  state.tools = names.filter((name) => saved.has(name));
  const list = $('tool-options');
  list.replaceChildren(
    ...(data?.tools ?? [])
      .filter((tool, i, all) => all.findIndex((other) => other.name === tool.name) === i)
      .map((tool) => {
        const label = document.createElement('label');
        label.dataset.testid = 'tool-option';
        label.dataset.tool = tool.name;
        label.title = tool.description ?? '';
        const box = document.createElement('input');
        box.type = 'checkbox';
        box.value = tool.name;
        box.checked = state.tools.includes(tool.name);
        box.onchange = () => {
          state.tools = [...list.querySelectorAll<HTMLInputElement>('input:checked')].map((b) => b.value);
          localStorage.setItem(TOOLS_KEY, JSON.stringify(state.tools));
          toolCount();
        };
        label.append(box, ` ${tool.name}`);
        return label;
      }),
  );
  $('tools-picker').hidden = names.length === 0;
  toolCount();
}

function toolCount(): void {
  $('tool-count').textContent = state.tools.length ? String(state.tools.length) : '';
}

// ---- files -------------------------------------------------------------------------------------

async function refreshWorkspace(): Promise<void> {
  const list = $('workspace-files');
  const sessionId = conversation.sessionId;
  if (!sessionId || $('workspace-panel').hidden) {
    if (!sessionId) list.replaceChildren();
    return;
  }
  await guarded(async () => {
    let files: { name: string; path: string; size: number; is_directory: boolean }[] = [];
    try {
      files = (await call<{ files: typeof files }>('POST', `/api/sessions/${enc(sessionId)}/file_workspace`)).files ?? [];
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
    }
    if (sessionId !== conversation.sessionId) return;
    const rows = files
      .filter((file) => !file.is_directory)
      .map((file) => {
        const row = document.createElement('li');
        row.dataset.testid = 'workspace-file';
        row.dataset.path = file.path;
        const link = document.createElement('a');
        const href = `/api/sessions/${enc(sessionId)}/file_workspace/download?file_path=${enc(file.path)}`;
        link.href = href;
        link.dataset.testid = 'workspace-download';
        link.textContent = file.path;
        // With auth on a plain link lacks the token: fetch with it and save the blob.
        link.onclick = (event) => {
          event.preventDefault();
          void guarded(() => download(href, file.name || file.path.split('/').pop() || 'file'));
        };
        const size = document.createElement('span');
        size.className = 'size';
        size.textContent = formatSize(file.size);
        row.append(link, size);
        return row;
      });
    list.replaceChildren(...rows);
    $('workspace-empty').hidden = rows.length > 0;
  });
}

function formatSize(bytes: number): string {
  if (!Number.isFinite(bytes)) return '';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function renderAttachments(): void {
  $('attachments').replaceChildren(
    ...state.attachments.map((file, index) => {
      const chip = document.createElement('span');
      chip.className = 'attachment';
      chip.dataset.testid = 'attachment';
      chip.dataset.url = file.url;
      chip.textContent = file.name;
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'icon';
      remove.setAttribute('aria-label', `Remove ${file.name}`);
      remove.textContent = '✕';
      remove.onclick = () => {
        state.attachments.splice(index, 1);
        renderAttachments();
      };
      chip.append(remove);
      return chip;
    }),
  );
}

async function attach(event: Event): Promise<void> {
  const field = event.target as HTMLInputElement;
  const files = [...(field.files ?? [])];
  field.value = '';
  for (const file of files) {
    await guarded(async () => {
      const form = new FormData();
      form.append('file', file);
      const uploaded = await call<{ url: string }>('POST', '/api/oss/upload', form);
      state.attachments.push({ name: file.name, url: new URL(uploaded.url, location.href).href });
      renderAttachments();
    });
  }
}

// ---- layout ------------------------------------------------------------------------------------

function newChat(): void {
  if (state.running) {
    showError(BUSY);
    return;
  }
  setSession(null);
  conversation.clear();
  void refreshWorkspace();
  closePanelsOnPhone();
  input.focus();
}

function closePanelsOnPhone(): void {
  document.body.classList.remove('sidebar-open');
}

// ---- start -------------------------------------------------------------------------------------

let searchTimer: ReturnType<typeof setTimeout> | undefined;
$('composer').addEventListener('submit', (event) => void send(event));
input.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) void send(event);
});
$('stop-button').addEventListener('click', () => void stop());
$('file-input').addEventListener('change', (event) => void attach(event));
$('new-chat').addEventListener('click', newChat);
$('refresh-workspace').addEventListener('click', () => void refreshWorkspace());
$('workspace-toggle').addEventListener('click', () => {
  $('workspace-panel').hidden = !$('workspace-panel').hidden;
  void refreshWorkspace();
});
$('workspace-close').addEventListener('click', () => {
  $('workspace-panel').hidden = true;
});
$('sidebar-toggle').addEventListener('click', () => document.body.classList.toggle('sidebar-open'));
$('sidebar-close').addEventListener('click', closePanelsOnPhone);
// On a phone the open sidebar darkens the page (#app::after); a tap there folds it.
$('app').addEventListener('click', (event) => {
  if (event.target === $('app')) closePanelsOnPhone();
});
$('conversation-search').addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => void refreshConversations(), 250);
});
$('conversation-more').addEventListener('click', () => void refreshConversations(true));
$('agent-select').addEventListener('change', () => localStorage.setItem(AGENT_KEY, $<HTMLSelectElement>('agent-select').value));
$('error-close').addEventListener('click', () => showError(''));
$('logout').addEventListener('click', () => {
  setToken(null);
  sessionStorage.clear();
  location.hash = '';
  location.reload();
});
$('login-dialog').addEventListener('cancel', (event) => event.preventDefault());

async function start(): Promise<void> {
  setRunning(false);
  await guarded(ensureSignedIn);
  // The tool list is an extra: without it (an older server, a refusal) the picker stays hidden.
  await Promise.all([guarded(loadAgents), loadTools().catch(() => undefined), refreshConversations()]);
  const run = readJson<Run>(sessionStorage, RUN_KEY);
  const fromHash = sessionFromHash();
  if (run && run.sessionId && (!fromHash || fromHash === run.sessionId)) await guarded(() => restoreRun(run));
  else {
    saveRun(null);
    if (fromHash) await guarded(() => openConversation(fromHash));
  }
  document.body.dataset.ready = 'true';
  performance.mark('sage-ready');
}

void start();
