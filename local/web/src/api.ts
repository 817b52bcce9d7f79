// The server's routes, on the page's own origin. Every error answer is the envelope
// {code, message, error_detail}; `ApiError.message` is its `message`.

const TOKEN_KEY = 'sage.token';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly detail: string | null = null,
  ) {
    super(message);
  }
}

export function token(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(value: string | null): void {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

/** The claims of the stored token, unverified (the server verifies); null when none or expired. */
export function claims(): Record<string, unknown> | null {
  const current = token();
  if (!current) return null;
  try {
    const part = current.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    const json = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof json.exp === 'number' && json.exp * 1000 < Date.now()) return null;
    return json;
  } catch {
    return null;
  }
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const result = { ...extra };
  const current = token();
  if (current) result.Authorization = `Bearer ${current}`;
  return result;
}

async function failure(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`.trim();
  let detail: string | null = null;
  try {
    const body = await response.json();
    if (body && typeof body.message === 'string' && body.message) message = body.message;
    if (body && typeof body.error_detail === 'string') detail = body.error_detail;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, detail);
}

/** A JSON call; resolves to the envelope's `data`. */
export async function call<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit & { headers: Record<string, string> } = { method, headers: headers() };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  const envelope = await response.json();
  // Sage sometimes answered HTTP 200 with an error code inside.
  if (envelope && typeof envelope.code === 'number' && envelope.code >= 400) {
    throw new ApiError(envelope.code, envelope.message || `error ${envelope.code}`, envelope.error_detail ?? null);
  }
  return envelope.data as T;
}

/** A file the server answers with, fetched with the token and handed to the browser to save. */
export async function download(path: string, name: string): Promise<void> {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

export interface StreamHandlers {
  /** Once the answer starts, with its headers. */
  open?: (headers: Headers) => void;
  /** Each SSE message: its parsed `data` and its `id` (null when it has none). */
  event: (data: any, id: number | null) => void;
}

/**
 * Reads an SSE answer of `fetch(path, init)` (EventSource cannot POST nor send a token). Resolves
 * when the answer's body ends; rejects with ApiError on an error answer.
 */
export async function stream(path: string, init: RequestInit, handlers: StreamHandlers, signal?: AbortSignal): Promise<void> {
  const response = await fetch(path, {
    ...init,
    signal,
    headers: headers({ Accept: 'text/event-stream', ...((init.headers as Record<string, string>) || {}) }),
  });
  if (!response.ok) throw await failure(response);
  handlers.open?.(response.headers);
  if (!response.body) return;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let id: number | null = null;
  let data: string[] = [];
  const dispatch = () => {
    if (data.length) {
      const text = data.join('\n');
      data = [];
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        return; // not an event object
      }
      handlers.event(parsed, id);
    }
    id = null;
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end: number;
    while ((end = buffer.search(/\r\n|\n|\r(?=[^\n])/)) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1));
      if (line === '') {
        dispatch();
        continue;
      }
      if (line.startsWith(':')) continue; // a comment (": ping")
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let content = colon < 0 ? '' : line.slice(colon + 1);
      if (content.startsWith(' ')) content = content.slice(1);
      if (field === 'data') data.push(content);
      else if (field === 'id') id = /^\d+$/.test(content) ? Number(content) : null;
    }
  }
  dispatch();
}
