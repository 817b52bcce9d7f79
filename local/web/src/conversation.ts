// One conversation on screen: a list of blocks built from stream events or stored messages (the
// same object shape), rendered into the DOM. The blocks are plain data so that the page can keep
// them in sessionStorage and redraw them after a reload.
import { renderMarkdown } from './markdown';

export interface ToolCall {
  id: string;
  type?: string;
  function?: { name?: string; arguments?: string };
}

/** A stream event (Sage's MessageChunk) or a stored message of `GET /api/conversations/{id}/messages`. */
export interface SageEvent {
  role?: string;
  content?: unknown;
  tool_calls?: ToolCall[] | null;
  tool_call_id?: string;
  message_id?: string;
  type?: string;
  message_type?: string;
  session_id?: string;
  agent_name?: string;
  timestamp?: number;
  metadata?: Record<string, any>;
}

export interface Usage {
  prompt_tokens?: number;
  completion_tokens?: number;
  total_tokens?: number;
}

export interface ToolStep {
  id: string;
  name: string;
  args: string;
  result?: string;
  failed?: boolean;
}

export type Block =
  | { kind: 'text'; key: string; role: string; type: string; agent?: string; sub?: string; text: string }
  | { kind: 'tools'; key: string; agent?: string; sub?: string; calls: ToolStep[] }
  | { kind: 'usage'; key: string; total: Usage; steps: { step_name: string; usage: Usage | null }[] }
  | { kind: 'approval'; key: string; approvalId: string; toolCallId: string; tool: string; args: string; decided?: string };

export type Decision = 'approve' | 'reject';

const LABELS: Record<string, string> = {
  task_analysis: 'Task analysis',
  task_decomposition: 'Task decomposition',
  planning: 'Plan',
  execution: 'Execution',
  observation: 'Observation',
  final_answer: 'Final answer',
  query_suggest: 'Suggestions',
  error: 'Error',
};
/** Shown folded into a box that opens, as Sage's client does for the task analysis. */
const FOLDED = new Set(['task_analysis']);

interface View {
  element: HTMLElement;
  body?: HTMLElement;
}

function asText(content: unknown): string {
  if (content === null || content === undefined) return '';
  return typeof content === 'string' ? content : JSON.stringify(content, null, 2);
}

function isFailure(content: unknown): boolean {
  if (content && typeof content === 'object') return (content as { error?: unknown }).error === true;
  if (typeof content === 'string') return /^\s*\{[\s\S]*"error"\s*:\s*true/.test(content);
  return false;
}

function element<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const count = (n: unknown) => (typeof n === 'number' ? n.toLocaleString('en-US') : '0');

export class Conversation {
  blocks: Block[] = [];
  sessionId: string | null = null;
  private byKey = new Map<string, Block>();
  private calls = new Map<string, ToolStep>();
  private callBlock = new Map<string, Block>();
  private views = new Map<Block, View>();
  private dirty = new Set<Block>();
  private scheduled = false;
  private loading = false;
  /** The last folded box opened while it streamed: folded again once something follows it. */
  private openBox: HTMLDetailsElement | null = null;
  private anonymous = 0;

  constructor(
    private readonly container: HTMLElement,
    private readonly onSuggestion: (text: string) => void,
    private readonly onDecision: (approvalId: string, decision: Decision) => void,
  ) {}

  /** Marks an approval request decided (its buttons go), or open again (`undefined`). */
  decided(approvalId: string, decision: string | undefined): void {
    for (const block of this.blocks) {
      if (block.kind === 'approval' && block.approvalId === approvalId) {
        block.decided = decision;
        this.touch(block);
        this.touch(this.callBlock.get(block.toolCallId));
      }
    }
    this.flush();
  }

  clear(): void {
    this.blocks = [];
    this.byKey.clear();
    this.calls.clear();
    this.callBlock.clear();
    this.views.clear();
    this.dirty.clear();
    this.container.replaceChildren();
  }

  /** Replaces what is shown by saved blocks. */
  load(blocks: Block[]): void {
    this.clear();
    this.loading = true;
    for (const block of blocks) this.add(block);
    this.loading = false;
    this.flush();
  }

  /** Stored messages of a conversation, shown whole. */
  history(messages: SageEvent[]): void {
    this.loading = true;
    for (const message of messages) this.apply(message);
    this.loading = false;
    this.settle();
  }

  /** At the end of a run: tool calls that got no result are marked so. */
  settle(): void {
    for (const [id, step] of this.calls) {
      if (step.result === undefined && !this.awaitsApproval(id)) {
        step.result = '';
        this.touch(this.callBlock.get(id));
      }
    }
    this.flush();
  }

  /** Shows a user's message. */
  user(text: string, key = `user-${Date.now()}`): void {
    this.apply({ role: 'user', type: 'normal', content: text, message_id: key });
  }

  /** One stream event or stored message; `text` of the same `message_id` is concatenated. */
  apply(event: SageEvent): void {
    const type = event.type || event.message_type || (event.role === 'tool' ? 'tool_call_result' : 'normal');
    if (type === 'stream_end') return;
    const key = event.message_id || `anonymous-${++this.anonymous}`;
    const sub = event.session_id && this.sessionId && event.session_id !== this.sessionId ? event.session_id : undefined;
    const agent = sub ? event.agent_name : undefined;
    if (type === 'token_usage') {
      const info = event.metadata?.token_usage ?? {};
      const block: Block = { kind: 'usage', key, total: info.total_info ?? {}, steps: Array.isArray(info.per_step_info) ? info.per_step_info : [] };
      if (this.byKey.has(key)) return;
      this.add(block);
      return;
    }
    if (type === 'tool_approval_request') {
      if (this.byKey.has(key)) return;
      const content = (event.content ?? {}) as Record<string, unknown>;
      const toolCallId = event.tool_call_id || String(content.tool_call_id ?? '');
      this.add({
        kind: 'approval',
        key,
        approvalId: String(content.approval_id ?? ''),
        toolCallId,
        tool: String(content.tool_name ?? 'tool'),
        args: JSON.stringify(content.arguments ?? {}),
      });
      this.touch(this.callBlock.get(toolCallId));
      return;
    }
    if (event.role === 'tool') {
      const id = event.tool_call_id || key;
      for (const block of this.blocks) {
        if (block.kind === 'approval' && block.toolCallId === id && !block.decided) {
          block.decided = 'decided';
          this.touch(block);
        }
      }
      let step = this.calls.get(id);
      if (!step) {
        step = { id, name: event.agent_name ? `tool (${event.agent_name})` : 'tool', args: '' };
        this.add({ kind: 'tools', key: `${key}#tools`, agent, sub, calls: [step] });
      }
      // Sage's client replaces a tool message's content: a result is whole.
      step.result = asText(event.content);
      step.failed = isFailure(event.content);
      this.touch(this.callBlock.get(id));
      return;
    }
    const piece = asText(event.content);
    if (piece) {
      let block = this.byKey.get(key);
      if (!block || block.kind !== 'text') {
        block = { kind: 'text', key, role: event.role || 'assistant', type, agent, sub, text: '' };
        this.add(block);
      }
      block.text += piece;
      this.touch(block);
    }
    if (event.tool_calls && event.tool_calls.length) {
      const toolsKey = `${key}#tools`;
      let block = this.byKey.get(toolsKey);
      if (!block || block.kind !== 'tools') {
        block = { kind: 'tools', key: toolsKey, agent, sub, calls: [] };
        this.add(block);
      }
      for (const call of event.tool_calls) {
        const known = this.calls.get(call.id);
        const step = known ?? { id: call.id, name: '', args: '' };
        step.name = call.function?.name || step.name || 'tool';
        step.args = call.function?.arguments ?? step.args;
        if (!known) {
          block.calls.push(step);
          this.calls.set(call.id, step);
          this.callBlock.set(call.id, block);
        }
      }
      this.touch(block);
    }
  }

  /** Whether the call waits for its owner's decision. */
  private awaitsApproval(toolCallId: string): boolean {
    return this.blocks.some((block) => block.kind === 'approval' && block.toolCallId === toolCallId && !block.decided);
  }

  /** Takes a block off the screen (a message the server refused). */
  remove(key: string): void {
    const block = this.byKey.get(key);
    if (!block) return;
    this.views.get(block)?.element.remove();
    this.views.delete(block);
    this.dirty.delete(block);
    this.byKey.delete(key);
    this.blocks = this.blocks.filter((other) => other !== block);
  }

  /** The text of every message with this role and type, in order (what the tests compare). */
  texts(role = 'assistant'): string[] {
    return this.blocks.flatMap((block) => (block.kind === 'text' && block.role === role ? [block.text] : []));
  }

  private add(block: Block): void {
    this.blocks.push(block);
    this.byKey.set(block.key, block);
    if (block.kind === 'tools') {
      for (const step of block.calls) {
        this.calls.set(step.id, step);
        this.callBlock.set(step.id, block);
      }
    }
    if (this.openBox && !this.openBox.dataset.toggled) this.openBox.open = false;
    this.openBox = null;
    const view = this.create(block);
    this.views.set(block, view);
    this.container.append(view.element);
    this.touch(block);
  }

  private touch(block: Block | undefined): void {
    if (!block) return;
    this.dirty.add(block);
    if (this.scheduled) return;
    this.scheduled = true;
    // Animation frames stop in a hidden tab; a timer keeps the page current there.
    if (document.hidden) setTimeout(() => this.flush(), 100);
    else requestAnimationFrame(() => this.flush());
  }

  /** Draws every changed block now. */
  flush(): void {
    this.scheduled = false;
    if (!this.dirty.size) return;
    const stick = this.container.scrollHeight - this.container.scrollTop - this.container.clientHeight < 80;
    for (const block of this.dirty) this.draw(block);
    this.dirty.clear();
    if (stick) this.container.scrollTop = this.container.scrollHeight;
  }

  private create(block: Block): View {
    if (block.kind === 'approval') {
      const node = element('article', 'message approval');
      node.dataset.testid = 'approval';
      node.dataset.approvalId = block.approvalId;
      return { element: node };
    }
    if (block.kind === 'usage') {
      const node = element('details', 'token-usage');
      node.dataset.testid = 'token-usage';
      return { element: node };
    }
    if (block.kind === 'tools') {
      const node = element('div', 'tool-group');
      node.dataset.testid = 'tool-group';
      node.dataset.messageId = block.key.replace(/#tools$/, '');
      if (block.sub) node.dataset.subSession = block.sub;
      return { element: node };
    }
    const node = element('article', `message ${block.role} ${block.type}${block.sub ? ' sub' : ''}`);
    node.dataset.testid = 'message';
    node.dataset.role = block.role;
    node.dataset.type = block.type;
    node.dataset.messageId = block.key;
    if (block.sub) node.dataset.subSession = block.sub;
    const label = block.role === 'user' ? '' : [block.agent, LABELS[block.type]].filter(Boolean).join(' · ');
    const body = element('div', 'message-text');
    if (FOLDED.has(block.type)) {
      const details = element('details');
      details.open = !this.loading;
      if (details.open) this.openBox = details;
      const summary = element('summary', 'label', label);
      // Once the reader opens or folds it, it stays as they left it.
      summary.addEventListener('click', () => (details.dataset.toggled = 'true'));
      details.append(summary, body);
      node.append(details);
    } else {
      if (label) node.append(element('div', 'label', label));
      node.append(body);
    }
    return { element: node, body };
  }

  private draw(block: Block): void {
    const view = this.views.get(block);
    if (!view) return;
    if (block.kind === 'text') {
      const body = view.body!;
      if (block.role === 'user') body.textContent = block.text;
      else body.innerHTML = renderMarkdown(block.text);
      view.element.dataset.raw = block.text;
      if (block.type === 'query_suggest') this.suggestions(block.text, body);
      return;
    }
    if (block.kind === 'approval') {
      const heading = element('div', 'label', `Approval needed · ${block.tool}`);
      const args = element('pre', 'tool-args', prettyArgs(block.args));
      const row = element('div', 'approval-actions');
      if (block.decided) {
        const said = block.decided === 'approve' ? 'Approved' : block.decided === 'reject' ? 'Rejected' : 'Decided';
        row.append(element('span', 'approval-status', said));
      } else {
        for (const [decision, text] of [['approve', 'Approve'], ['reject', 'Reject']] as const) {
          const button = element('button', `approval-${decision}`, text);
          button.type = 'button';
          button.dataset.testid = `${decision}-button`;
          button.onclick = () => this.onDecision(block.approvalId, decision);
          row.append(button);
        }
      }
      view.element.dataset.decided = block.decided ?? '';
      view.element.replaceChildren(heading, args, row);
      return;
    }
    if (block.kind === 'usage') {
      const total = block.total;
      const summary = element(
        'summary',
        undefined,
        `Tokens: ${count(total.total_tokens)} (${count(total.prompt_tokens)} in, ${count(total.completion_tokens)} out)`,
      );
      const steps = element('ul');
      for (const step of block.steps) {
        const usage = step.usage;
        steps.append(
          element(
            'li',
            undefined,
            usage
              ? `${step.step_name}: ${count(usage.total_tokens)} (${count(usage.prompt_tokens)} in, ${count(usage.completion_tokens)} out)`
              : `${step.step_name}: –`,
          ),
        );
      }
      view.element.replaceChildren(summary, steps);
      view.element.dataset.total = String(total.total_tokens ?? 0);
      return;
    }
    for (const step of block.calls) {
      let card = view.element.querySelector<HTMLDetailsElement>(`details[data-tool-call-id="${CSS.escape(step.id)}"]`);
      if (!card) {
        card = element('details', 'tool-step');
        card.dataset.testid = 'tool-step';
        card.dataset.toolCallId = step.id;
        const summary = element('summary');
        const name = element('span', 'tool-name');
        const status = element('span', 'tool-status');
        status.dataset.testid = 'tool-status';
        summary.append(name, status);
        const args = element('pre', 'tool-args');
        args.dataset.testid = 'tool-args';
        const result = element('pre', 'tool-result');
        result.dataset.testid = 'tool-result';
        card.append(summary, element('div', 'label', 'Arguments'), args, element('div', 'label', 'Result'), result);
        view.element.append(card);
      }
      card.querySelector('.tool-name')!.textContent = `${block.agent ? `${block.agent} · ` : ''}${step.name}`;
      const status =
        step.result === undefined
          ? this.awaitsApproval(step.id)
            ? 'awaiting approval'
            : 'running'
          : step.failed
            ? 'failed'
            : step.result === ''
              ? 'no result'
              : 'done';
      card.querySelector('.tool-status')!.textContent = status;
      card.dataset.status = status;
      card.classList.toggle('failed', !!step.failed);
      card.querySelector('.tool-args')!.textContent = prettyArgs(step.args);
      card.querySelector('.tool-result')!.textContent = step.result === undefined ? '…' : step.result || '(no result)';
    }
  }

  private suggestions(text: string, body: HTMLElement): void {
    const items = [...new Set(text.split('\n').filter((line) => /^\s*[-*]\s+\S/.test(line)).map((line) => line.replace(/^\s*[-*]\s+/, '').trim()))];
    if (!items.length) return;
    const row = element('div', 'suggestions');
    for (const item of items) {
      const button = element('button', 'suggestion', item);
      button.type = 'button';
      button.dataset.testid = 'suggestion';
      button.onclick = () => this.onSuggestion(item);
      row.append(button);
    }
    body.replaceChildren(row);
  }
}

function prettyArgs(args: string): string {
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return args;
  }
}
