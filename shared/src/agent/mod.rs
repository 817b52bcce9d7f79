//! The simple-mode agent (`api.md` §2, `sage-client.md` §5): LLM → tool calls (concurrently) →
//! results fed back → repeat. It stops on an empty turn, after a `complete_task` or
//! `sys_finish_task` call, at the loop cap, or when the completion judge reads a text turn as
//! the end of the task (a run without tools ends on its first answer).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};
use tracing::Instrument;

mod approvals;
mod decisions;
mod emitter;
mod fibre;
mod multi;

pub use approvals::{ApprovalGate, DecidedTurn, Decision, HeldTurn, MultiProgress, RunCheckpoints};
pub use decisions::{JUDGE_INSTRUCTION, MAX_TOOLS_WITHOUT_SELECTION, TOOL_SELECTION_INSTRUCTION};
pub use emitter::Emitter;
pub use fibre::{
    FIBRE_MAX_LOOP_COUNT, SYS_DELEGATE_TASK, SYS_FINISH_TASK, SYS_SPAWN_AGENT, SubAgent,
    SubSessionError, SubSessions, finish_tool, team_specs,
};

use crate::config::{BudgetLeft, ModelPrice, RunLimits};
use crate::context::{
    Budgets, ContextSettings, MAX_INPUT_TOKENS, PromptMessage, content_as_text, fit_call,
    message_tokens, plan_history, tool_tokens,
};
use crate::llm::{
    ChatDelta, ChatModel, ChatRequest, LlmError, LlmSettings, ToolCallAssembler, Usage,
};
use crate::store::McpServerRecord;
use crate::tools::{
    ASK_FOLLOWUP_QUESTION, BuiltinTools, McpPolicy, McpPool, McpServerConfig, ToolBox,
};
use crate::util::{new_id, now_secs};
use crate::wire::{Event, EventType, Role, ToolCall};

const EXECUTION_AGENT: &str = "SimpleAgent";
const ANALYSIS_AGENT: &str = "TaskAnalysisAgent";
const ANALYSIS_PROMPT: &str = "Before anyone answers, analyse the user's task: the goal, what is \
    known, what is missing, and the steps (and tools) needed. Do not answer the task itself.";
/// The last message of the summary step (`sage-mock-llm` recognises its first words).
pub const SUMMARY_INSTRUCTION: &str = "Summarize the work above for the user: what was asked, \
    what was done and found, and the answer. Reply in the user's language, without calling tools.";

/// A model call's span; its usage and time to first token are recorded when it ends.
fn llm_span(request: &ChatRequest, step: &str) -> tracing::Span {
    tracing::info_span!(
        "llm.call",
        step,
        model = %request.settings.model,
        prompt_tokens = tracing::field::Empty,
        completion_tokens = tracing::field::Empty,
        time_to_first_token_ms = tracing::field::Empty,
        error = tracing::field::Empty
    )
}

fn record_llm_span(
    span: &tracing::Span,
    usage: Option<&Usage>,
    first_chunk: Option<Duration>,
    error: Option<&LlmError>,
) {
    if let Some(usage) = usage {
        span.record("prompt_tokens", usage.prompt_tokens);
        span.record("completion_tokens", usage.completion_tokens);
    }
    if let Some(first_chunk) = first_chunk {
        span.record("time_to_first_token_ms", first_chunk.as_millis() as u64);
    }
    if let Some(error) = error {
        span.record("error", tracing::field::display(error));
    }
}

/// The last message of the suggestion step (`sage-mock-llm` recognises its first words).
pub const SUGGEST_INSTRUCTION: &str = "Suggest follow-up questions the user may ask next: at     most three, each on its own line starting with \"- \", in the user's language, nothing else.";
/// The system message of the workflow choice (`sage-mock-llm` recognises its first words).
pub const WORKFLOW_INSTRUCTION: &str = "Pick the one workflow below that fits the user's request.     Answer with its name exactly as written, or with none when no workflow fits.";
/// Up to this many workflows go into the prompt whole; more, and one model call picks one.
const MAX_PROMPT_WORKFLOWS: usize = 5;
const SUGGEST_AGENT: &str = "QuerySuggestAgent";

/// Everything a run needs, resolved from the request, the presets and the server defaults.
#[derive(Clone)]
pub struct RunSpec {
    pub session_id: String,
    pub settings: LlmSettings,
    pub system_prompt: Option<String>,
    /// The session's whole conversation, ending with the new messages; the run fits it to the
    /// window once its tools (and so their schemas' size) are known.
    pub history: Vec<PromptMessage>,
    /// The summary job's latest summary of the session: first into the history budget.
    pub summary: Option<String>,
    pub context: ContextSettings,
    /// End with a summary step even when the model ended on an answer.
    pub force_summary: bool,
    pub max_loop_count: u32,
    pub deep_thinking: bool,
    pub available_tools: Vec<String>,
    /// The caller's enabled registered servers, then the shared ones.
    pub registered_servers: Vec<McpServerRecord>,
    /// `extra_mcp_config`: servers for this request only.
    pub request_servers: BTreeMap<String, McpServerConfig>,
    /// In-process tools (user memory), offered whatever `available_tools` says.
    pub builtin_tools: Vec<Arc<dyn BuiltinTools>>,
    pub mcp_policy: McpPolicy,
    pub tool_timeout: Duration,
    /// Said first, as `normal` events: what the request asked for that this run cannot do.
    pub notices: Vec<String>,
    /// `available_workflows`: guidance for the model (see [`MAX_PROMPT_WORKFLOWS`]).
    pub workflows: BTreeMap<String, Vec<Value>>,
    /// `more_suggest`: end with follow-up suggestions (`query_suggest` events).
    pub suggest: bool,
    pub limits: RunLimits,
    /// What is left of the user's daily budget: bounds the run like `limits`.
    pub budget_left: BudgetLeft,
    /// What the run has spent so far, shared with its sub-agents.
    pub meter: Arc<RunMeter>,
    /// What the run's model costs (`--price_table`), when known.
    pub price: Option<ModelPrice>,
    pub mode: RunMode,
    /// The name its text and tool events carry; `SimpleAgent` when unset.
    pub agent_name: Option<String>,
    /// Fibre mode: the sub-agents that exist from the start, and where their sub-sessions live.
    pub fibre: Option<FibreSetup>,
    /// Tools whose calls wait for the owner's approval (`tools_requiring_approval`); the
    /// calls to a server that requires approval wait too.
    pub approval_tools: Vec<String>,
    /// Where a held turn is kept. Without one (multi and fibre modes, sub-agents) the run
    /// cannot wait, and a call that needs approval is refused instead of run.
    pub approval_gate: Option<Arc<dyn ApprovalGate>>,
    /// Where a simple- or fibre-mode run saves a checkpoint after each complete tool turn, and
    /// a multi-mode run after each round; with a `deadline`, it stops at the first checkpoint
    /// past it and hands the run off.
    pub checkpoints: Option<Arc<dyn RunCheckpoints>>,
    /// When this invocation should stop the run and hand it off.
    pub deadline: Option<tokio::time::Instant>,
    /// A continuation: the turn a decision released.
    pub resumed: Option<DecidedTurn>,
}

/// What a fibre-mode run starts with.
#[derive(Clone)]
pub struct FibreSetup {
    pub sub_agents: Vec<SubAgent>,
    pub sub_sessions: Arc<dyn SubSessions>,
}

/// How a run works through its task (`agent_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunMode {
    /// The tool loop.
    #[default]
    Simple,
    /// Decompose into a plan, then rounds of plan, execute, observe and judge, then a summary.
    Multi,
    /// The tool loop with sub-agents: tasks delegated to them run concurrently, each in its own
    /// sub-session.
    Fibre,
}

#[derive(Default)]
struct UsageTally {
    total: Usage,
    steps: Vec<Value>,
    /// US dollars, when the model's price is known.
    cost: Option<f64>,
}

impl UsageTally {
    fn new(price: Option<ModelPrice>) -> Self {
        Self {
            cost: price.map(|_| 0.0),
            ..Self::default()
        }
    }

    fn record(&mut self, step: &str, usage: Option<Usage>, price: Option<ModelPrice>) {
        let mut entry = json!({"step_name": step, "usage": usage});
        if let (Some(usage), Some(price)) = (&usage, price) {
            let cost = price.cost(usage.prompt_tokens, usage.completion_tokens);
            *self.cost.get_or_insert(0.0) += cost;
            entry["cost"] = json!(cost);
        }
        if let Some(usage) = &usage {
            self.total.add(usage);
        }
        self.steps.push(entry);
    }

    fn to_json(&self) -> Value {
        let mut total = json!(self.total);
        if let Some(cost) = self.cost {
            total["cost"] = json!(cost);
        }
        json!({"total_info": total, "per_step_info": self.steps})
    }
}

/// What a whole run has spent, its sub-agents' calls included: what its limits and the user's
/// daily budget are checked against. Sub-agents share their parent's meter.
#[derive(Debug, Default)]
pub struct RunMeter {
    spent: std::sync::Mutex<Spent>,
}

/// What a run has spent: carried across its pauses, so its limits bound the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spent {
    pub calls: u32,
    pub tokens: u64,
    /// US dollars, of the calls whose model is priced.
    pub cost: f64,
}

impl RunMeter {
    fn add(&self, usage: Option<&Usage>, price: Option<ModelPrice>) {
        let mut spent = self
            .spent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        spent.calls = spent.calls.saturating_add(1);
        if let Some(usage) = usage {
            spent.tokens += usage.total_tokens;
            if let Some(price) = price {
                spent.cost += price.cost(usage.prompt_tokens, usage.completion_tokens);
            }
        }
    }

    /// Starts a continuation's meter from what the run spent before its pause.
    fn seed(&self, before: Spent) {
        let mut spent = self
            .spent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        spent.calls = spent.calls.saturating_add(before.calls);
        spent.tokens += before.tokens;
        spent.cost += before.cost;
    }

    fn spent(&self) -> Spent {
        *self
            .spent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Completed,
    Interrupted,
    Failed,
    /// Paused on calls that wait for the owner's approval.
    AwaitingApproval,
    /// Stopped at a checkpoint past the invocation's deadline: a fresh invocation goes on.
    HandedOff,
}

/// Why a run ended early with an `error` event.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(
        "The input is too long: about {0} tokens, over the limit of {MAX_INPUT_TOKENS}. \
         Send a shorter message."
    )]
    InputTooLong(u64),
    #[error("This run reached its limit of {0}; it stops here.")]
    Limit(String),
    #[error(
        "This server bounds each run's cost, and the price table has no price for model {0}, \
         so this run cannot start."
    )]
    Unpriced(String),
    #[error("The run could not pause for the approval of {0}; it stops here.")]
    Hold(String),
    #[error("The approval request expired before anyone decided; the run ended.")]
    ApprovalExpired,
}

/// The messages of a run's model calls: its system prompt and the active conversation, which
/// the tool loop extends; each call sends them fitted to the window.
#[derive(Clone)]
struct Prompt {
    session_id: String,
    system: String,
    messages: Vec<PromptMessage>,
    budgets: Budgets,
    schema_tokens: u64,
}

impl Prompt {
    fn push(&mut self, message: Value) {
        self.messages.push(PromptMessage::new(message, now_secs()));
    }

    fn fit(&self, step: &str, call: u32) -> Vec<Value> {
        let system = (!self.system.is_empty()).then_some(self.system.as_str());
        let fitted = fit_call(
            system,
            &self.messages,
            &self.budgets,
            self.schema_tokens,
            now_secs(),
        );
        tracing::debug!(
            session_id = %self.session_id,
            step,
            call,
            messages = fitted.messages.len(),
            tokens = fitted.tokens + self.schema_tokens,
            compression = %fitted.level.map_or_else(|| "none".to_owned(), |level| level.to_string()),
            "prompt fitted"
        );
        fitted.messages
    }
}

/// How a tool loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoopEnd {
    /// A text turn that ends it: empty, in a loop without a judge, or judged the end.
    Answered,
    /// A finishing tool (`complete_task`, `sys_finish_task`) ran.
    Finished,
    /// `ask_followup_question`: the run waits for the user's next message.
    WaitingForUser,
    /// Calls wait for the owner's approval; the run ends until a decision continues it.
    AwaitingApproval,
    /// The invocation's deadline passed: the run goes on in a fresh one.
    HandedOff,
    /// The turn cap came first.
    Capped,
    /// The client interrupted.
    Aborted,
}

/// Who speaks in a tool loop, its step name in the usage, whether the completion judge reads
/// its text turns, and its turn cap.
struct ToolLoop<'a> {
    agent: &'a str,
    step: &'a str,
    judged: bool,
    cap: u32,
}

struct TurnOutput {
    message_id: String,
    text: String,
    tool_calls: Vec<ToolCall>,
}

pub struct Agent {
    spec: RunSpec,
    llm: Arc<dyn ChatModel>,
    pool: Arc<McpPool>,
    emitter: Emitter,
    usage: UsageTally,
    /// The last text the run answered with (an execution turn or the summary).
    last_answer: String,
    /// The `result` of the finishing call that ended the run, if one did.
    finish_result: Option<String>,
    /// The run held a turn for approval.
    held: bool,
    /// The run stopped at a checkpoint past its deadline.
    handed_off: bool,
    /// A fibre run's sub-agents, as its team tools keep them.
    team: Option<Arc<tokio::sync::Mutex<Vec<SubAgent>>>>,
    /// Model turns used before this invocation (a continuation goes on from its held turn).
    turns_before: u32,
    /// When this invocation's part of the run began, and the seconds its earlier ones ran.
    started: tokio::time::Instant,
    seconds_before: f64,
}

impl Agent {
    pub fn new(
        spec: RunSpec,
        llm: Arc<dyn ChatModel>,
        pool: Arc<McpPool>,
        emitter: Emitter,
    ) -> Self {
        Self {
            usage: UsageTally::new(spec.price),
            spec,
            llm,
            pool,
            emitter,
            last_answer: String::new(),
            finish_result: None,
            held: false,
            handed_off: false,
            team: None,
            turns_before: 0,
            started: tokio::time::Instant::now(),
            seconds_before: 0.0,
        }
    }

    /// Seconds the run has run so far, over its invocations.
    fn seconds_run(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }

    fn name(&self) -> String {
        self.spec
            .agent_name
            .clone()
            .unwrap_or_else(|| EXECUTION_AGENT.to_owned())
    }

    /// Runs to the end and emits `token_usage`; the event log adds `stream_end`.
    pub async fn run(self) -> RunOutcome {
        self.run_for_result().await.0
    }

    /// Runs to the end; also returns what the run came to: its finishing call's `result`, else
    /// its last answer.
    pub async fn run_for_result(mut self) -> (RunOutcome, String) {
        if let Some(resumed) = &self.spec.resumed {
            self.spec.meter.seed(resumed.turn.spent);
            self.seconds_before = resumed.turn.seconds;
        }
        if let Some(fibre) = self.spec.fibre.clone() {
            let tools = self.fibre_tools(fibre);
            self.spec.builtin_tools.push(tools);
        }
        let mut tools = ToolBox::build(
            &self.spec.registered_servers,
            &self.spec.request_servers,
            &self.spec.available_tools,
            self.spec.mcp_policy,
            &self.spec.builtin_tools,
            self.pool.clone(),
            self.spec.tool_timeout,
        )
        .await;
        self.select_tools(&mut tools).await;
        for notice in std::mem::take(&mut self.spec.notices) {
            self.emit_text(EventType::Normal, EXECUTION_AGENT, &new_id(), notice)
                .await;
        }
        let executed = match self.spec.limits.max_duration {
            Some(limit) => tokio::time::timeout(
                limit.saturating_sub(
                    Duration::try_from_secs_f64(self.seconds_before).unwrap_or_default(),
                ),
                self.execute(&tools),
            )
            .await
            .unwrap_or_else(|_| {
                Err(RunError::Limit(format!(
                    "{} seconds (run_max_seconds)",
                    limit.as_secs_f64()
                )))
            }),
            None => self.execute(&tools).await,
        };
        let mut outcome = match executed {
            Ok(()) => RunOutcome::Completed,
            Err(error) => {
                self.emit_text(EventType::Error, &self.name(), &new_id(), error.to_string())
                    .await;
                RunOutcome::Failed
            }
        };
        if self.emitter.is_interrupted() {
            outcome = RunOutcome::Interrupted;
        } else if self.held && outcome == RunOutcome::Completed {
            outcome = RunOutcome::AwaitingApproval;
        } else if self.handed_off && outcome == RunOutcome::Completed {
            outcome = RunOutcome::HandedOff;
        }
        tools.close().await;
        let usage = Event::token_usage(&self.spec.session_id, &self.usage.to_json());
        self.emitter.emit(usage).await;
        if outcome == RunOutcome::HandedOff {
            self.emitter
                .emit(Event::hand_off(&self.spec.session_id, &self.name()))
                .await;
        }
        let result = self
            .finish_result
            .take()
            .filter(|result| !result.trim().is_empty())
            .unwrap_or_else(|| std::mem::take(&mut self.last_answer));
        (outcome, result)
    }

    async fn execute(&mut self, tools: &ToolBox) -> Result<(), RunError> {
        let definitions = tools.definitions();
        let prompt = self.opening_prompt(tool_tokens(&definitions)).await?;
        match self.spec.mode {
            RunMode::Simple | RunMode::Fibre => self.run_simple(tools, &definitions, prompt).await,
            RunMode::Multi => self.run_multi(tools, &definitions, prompt).await,
        }
    }

    /// The system prompt (workflows, the older history, the task analysis) and the active
    /// conversation, fitted to the window beside tool schemas of `schema_tokens`.
    async fn opening_prompt(&mut self, schema_tokens: u64) -> Result<Prompt, RunError> {
        let mut system = self.spec.system_prompt.clone().unwrap_or_default();
        if let Some(guidance) = self.workflow_guidance().await? {
            system = format!("{system}\n\n{guidance}").trim().to_owned();
        }
        let budgets = Budgets::new(
            &self.spec.context,
            u64::from(self.spec.settings.max_model_len),
            crate::context::estimate_tokens(&system) + schema_tokens,
        );
        let plan = plan_history(
            std::mem::take(&mut self.spec.history),
            self.spec.summary.as_deref(),
            &self.spec.context,
            budgets,
        );
        let input: u64 = plan.active.iter().map(|m| message_tokens(&m.message)).sum();
        if input > MAX_INPUT_TOKENS {
            return Err(RunError::InputTooLong(input));
        }
        if let Some(block) = &plan.history_block {
            system = format!("{system}\n\nEarlier in this conversation:\n{block}")
                .trim()
                .to_owned();
        }
        tracing::debug!(
            session_id = %self.spec.session_id,
            available = budgets.available,
            history_budget = budgets.history,
            active_budget = budgets.active,
            max_new_tokens = budgets.max_new_tokens,
            dropped_turns = plan.dropped_turns,
            older_turns = plan.older_turns,
            recalled = plan.recalled,
            "history planned"
        );
        let mut prompt = Prompt {
            session_id: self.spec.session_id.clone(),
            system,
            messages: plan.active,
            budgets,
            schema_tokens,
        };
        if self.spec.deep_thinking {
            let analysis = self.analyse(&prompt).await?;
            if !analysis.is_empty() {
                prompt.system = format!("{}\n\nTask analysis:\n{analysis}", prompt.system)
                    .trim()
                    .to_owned();
            }
        }
        Ok(prompt)
    }

    async fn run_simple(
        &mut self,
        tools: &ToolBox,
        definitions: &[Value],
        mut prompt: Prompt,
    ) -> Result<(), RunError> {
        let agent = self.name();
        let mut cap = self.spec.max_loop_count;
        if let Some(decided) = self.spec.resumed.take() {
            self.resume_turn(tools, &decided, &agent, &mut prompt)
                .await?;
            self.turns_before = decided.turn.turns_used;
            cap = cap.saturating_sub(decided.turn.turns_used).max(1);
        }
        let end = self
            .tool_loop(
                tools,
                definitions,
                &mut prompt,
                ToolLoop {
                    agent: &agent,
                    step: "direct_execution",
                    judged: !tools.is_empty(),
                    cap,
                },
            )
            .await?;
        if matches!(
            end,
            LoopEnd::Aborted | LoopEnd::AwaitingApproval | LoopEnd::HandedOff
        ) {
            return Ok(());
        }
        if end == LoopEnd::Capped {
            self.say_capped().await;
        }
        let ended_on_tool_result = prompt
            .messages
            .last()
            .is_some_and(|m| m.message["role"] == "tool");
        if (self.spec.force_summary || ended_on_tool_result)
            && end != LoopEnd::WaitingForUser
            && !self.emitter.is_aborted()
        {
            self.summarize(&mut prompt).await?;
        }
        if self.spec.suggest && !self.emitter.is_aborted() {
            self.suggest(&mut prompt).await?;
        }
        Ok(())
    }

    async fn say_capped(&self) {
        let limit = self.spec.max_loop_count;
        self.emit_text(
            EventType::Normal,
            &self.name(),
            &new_id(),
            format!("Agent执行次数超过最大循环次数：{limit}, 任务暂停，是否需要继续执行？"),
        )
        .await;
    }

    /// Model turns with tools until a turn ends the loop (see [`LoopEnd`]) or `shape.cap` turns
    /// have run. Text streams as `do_subtask_result`; every call and result is emitted and fed
    /// back.
    async fn tool_loop(
        &mut self,
        tools: &ToolBox,
        definitions: &[Value],
        prompt: &mut Prompt,
        shape: ToolLoop<'_>,
    ) -> Result<LoopEnd, RunError> {
        for call in 0..shape.cap {
            if self.emitter.is_aborted() {
                return Ok(LoopEnd::Aborted);
            }
            let request = ChatRequest {
                settings: self.spec.settings.clone(),
                messages: prompt.fit(shape.step, call),
                tools: definitions.to_vec(),
                forced_tool: None,
            };
            let turn = self
                .stream_turn(
                    &request,
                    EventType::DoSubtaskResult,
                    shape.agent,
                    shape.step,
                )
                .await?;
            if self.emitter.is_aborted() {
                return Ok(LoopEnd::Aborted);
            }
            if turn.tool_calls.is_empty() {
                let said_something = !turn.text.trim().is_empty();
                prompt.push(json!({"role": "assistant", "content": turn.text}));
                if !said_something
                    || !shape.judged
                    || self.emitter.is_aborted()
                    || self.judge_says_done(prompt, call).await?
                {
                    return Ok(LoopEnd::Answered);
                }
                continue;
            }
            let results = self
                .run_tool_turn(
                    tools,
                    turn,
                    shape.agent,
                    prompt,
                    self.turns_before + call + 1,
                )
                .await?;
            if self.emitter.is_aborted() {
                return Ok(LoopEnd::Aborted);
            }
            if self.held {
                return Ok(LoopEnd::AwaitingApproval);
            }
            let mut end = None;
            for (call, content) in &results {
                if call.function.name == ASK_FOLLOWUP_QUESTION
                    && content["waiting_for_user"] == true
                {
                    return Ok(LoopEnd::WaitingForUser);
                }
                if decisions::FINISHING_TOOLS.contains(&call.function.name.as_str()) {
                    let result = serde_json::from_str::<Value>(&call.function.arguments)
                        .ok()
                        .and_then(|arguments| arguments["result"].as_str().map(str::to_owned));
                    if result.is_some() {
                        self.finish_result = result;
                    }
                    end = Some(LoopEnd::Finished);
                }
            }
            if let Some(end) = end {
                return Ok(end);
            }
            // A multi run's checkpoints fall between rounds, not inside a round's execution;
            // a fibre run's sub-agents are done by the end of the turn that delegated to them.
            if matches!(self.spec.mode, RunMode::Simple | RunMode::Fibre)
                && self.checkpoint(self.turns_before + call + 1, None).await
            {
                return Ok(LoopEnd::HandedOff);
            }
        }
        Ok(LoopEnd::Capped)
    }

    /// A safe point: saves the run's checkpoint; true when the invocation's deadline has passed
    /// and the run should hand off from here. A checkpoint that cannot be saved is logged, and
    /// the run goes on in this invocation (a hand-off would lose it).
    async fn checkpoint(&mut self, turns_used: u32, multi: Option<MultiProgress>) -> bool {
        let Some(checkpoints) = self.spec.checkpoints.clone() else {
            return false;
        };
        let at = HeldTurn {
            text: String::new(),
            waiting: Vec::new(),
            turns_used,
            spent: self.spec.meter.spent(),
            seconds: self.seconds_run(),
            multi,
            team: match &self.team {
                Some(team) => Some(team.lock().await.clone()),
                None => None,
            },
        };
        if let Err(error) = checkpoints.save(&at).await {
            tracing::warn!(session_id = %self.spec.session_id, %error, "could not save the run's checkpoint");
            return false;
        }
        self.handed_off = self
            .spec
            .deadline
            .is_some_and(|deadline| tokio::time::Instant::now() >= deadline);
        self.handed_off
    }

    /// Emits a turn's `tool_call`, runs its calls, and feeds the turn and the results back;
    /// returns each call with its result. Calls that wait for approval do not run: where the
    /// run can wait, it holds them (see [`approvals`]) after running the others; where it
    /// cannot, they are refused.
    async fn run_tool_turn(
        &mut self,
        tools: &ToolBox,
        turn: TurnOutput,
        agent: &str,
        prompt: &mut Prompt,
        turns_used: u32,
    ) -> Result<Vec<(ToolCall, Value)>, RunError> {
        self.emitter
            .emit(Event {
                tool_calls: Some(turn.tool_calls.clone()),
                message_id: Some(turn.message_id.clone()),
                agent_name: Some(agent.into()),
                ..Event::new(&self.spec.session_id, Role::Assistant, EventType::ToolCall)
            })
            .await;
        prompt.push(json!({
            "role": "assistant",
            "content": turn.text,
            "tool_calls": turn.tool_calls,
        }));
        if self.emitter.is_aborted() {
            return Ok(Vec::new());
        }
        let (waiting, free): (Vec<ToolCall>, Vec<ToolCall>) =
            turn.tool_calls.into_iter().partition(|call| {
                approvals::waits(
                    &self.spec.approval_tools,
                    &call.function.name,
                    tools.server_requires_approval(&call.function.name),
                )
            });
        let mut results = self.run_calls(tools, free, agent, prompt).await;
        if waiting.is_empty() {
            return Ok(results);
        }
        let Some(gate) = self.spec.approval_gate.clone() else {
            for call in waiting {
                let content = approvals::cannot_wait();
                self.emit_tool_result(&call, &content, agent).await;
                push_tool_result(prompt, &call, &content);
                results.push((call, content));
            }
            return Ok(results);
        };
        let held = HeldTurn {
            text: turn.text,
            waiting,
            turns_used,
            spent: self.spec.meter.spent(),
            seconds: self.seconds_run(),
            multi: None,
            team: None,
        };
        let (approval_id, expires_at) = gate.hold(&held).await.map_err(|error| {
            tracing::error!(session_id = %self.spec.session_id, %error, "could not hold a turn for approval");
            RunError::Hold(held.waiting[0].function.name.clone())
        })?;
        for call in &held.waiting {
            self.emitter
                .emit(Event {
                    content: Some(approvals::request_content(&approval_id, call, expires_at)),
                    tool_call_id: Some(call.id.clone()),
                    message_id: Some(new_id()),
                    agent_name: Some(agent.into()),
                    ..Event::new(
                        &self.spec.session_id,
                        Role::Assistant,
                        EventType::ToolApprovalRequest,
                    )
                })
                .await;
        }
        self.held = true;
        Ok(results)
    }

    /// Runs `calls` concurrently and feeds their results back.
    async fn run_calls(
        &self,
        tools: &ToolBox,
        calls: Vec<ToolCall>,
        agent: &str,
        prompt: &mut Prompt,
    ) -> Vec<(ToolCall, Value)> {
        if calls.is_empty() {
            return Vec::new();
        }
        let results = self.call_tools(tools, &calls, agent).await;
        let results: Vec<(ToolCall, Value)> = calls.into_iter().zip(results).collect();
        for (call, content) in &results {
            push_tool_result(prompt, call, content);
        }
        results
    }

    /// A continuation's first step: the held turn goes back into the prompt, its approved calls
    /// run, and the refused ones get a result that says why.
    async fn resume_turn(
        &mut self,
        tools: &ToolBox,
        decided: &DecidedTurn,
        agent: &str,
        prompt: &mut Prompt,
    ) -> Result<(), RunError> {
        // A hand-off's checkpoint holds no calls: its conversation is all in the log.
        if decided.turn.waiting.is_empty() {
            return Ok(());
        }
        let calls: Vec<(ToolCall, Decision)> = decided
            .calls()
            .map(|(call, decision)| (call, decision.clone()))
            .collect();
        prompt.push(json!({
            "role": "assistant",
            "content": decided.turn.text,
            "tool_calls": calls.iter().map(|(call, _)| call).collect::<Vec<_>>(),
        }));
        let mut approved = Vec::new();
        for (call, decision) in calls {
            match approvals::refusal(&decision) {
                Some(content) => {
                    self.emit_tool_result(&call, &content, agent).await;
                    push_tool_result(prompt, &call, &content);
                }
                None => approved.push(call),
            }
        }
        self.run_calls(tools, approved, agent, prompt).await;
        if decided.expired() {
            return Err(RunError::ApprovalExpired);
        }
        Ok(())
    }

    /// The suggestion step: no tools; the answer streams as `query_suggest`.
    async fn suggest(&mut self, prompt: &mut Prompt) -> Result<(), RunError> {
        prompt.push(json!({"role": "system", "content": SUGGEST_INSTRUCTION}));
        let request = ChatRequest {
            settings: self.spec.settings.clone(),
            messages: prompt.fit("query_suggest", 0),
            tools: Vec::new(),
            forced_tool: None,
        };
        self.stream_turn(
            &request,
            EventType::QuerySuggest,
            SUGGEST_AGENT,
            "query_suggest",
        )
        .await?;
        Ok(())
    }

    /// The workflows as prompt text: all of them up to five; past that, the one a model call
    /// picks for the latest request (none when it names none).
    async fn workflow_guidance(&mut self) -> Result<Option<String>, RunError> {
        let workflows = std::mem::take(&mut self.spec.workflows);
        if workflows.is_empty() {
            return Ok(None);
        }
        let chosen: Vec<(&String, &Vec<Value>)> = if workflows.len() <= MAX_PROMPT_WORKFLOWS {
            workflows.iter().collect()
        } else {
            let mut listed = String::from("Workflows:");
            for (name, steps) in &workflows {
                let first = steps.first().map(content_as_text).unwrap_or_default();
                listed.push_str(&format!("\n- {name}: {first}"));
            }
            let answer = self
                .choose_for_request(WORKFLOW_INSTRUCTION, listed, "workflow_selection")
                .await?;
            let answer = answer
                .trim()
                .trim_matches(|c| c == '"' || c == '`' || c == '.');
            tracing::debug!(session_id = %self.spec.session_id, chosen = answer, "workflow chosen");
            workflows
                .iter()
                .filter(|(name, _)| name.as_str() == answer)
                .collect()
        };
        if chosen.is_empty() {
            return Ok(None);
        }
        let mut guidance = String::from("Workflows you can follow:");
        for (name, steps) in chosen {
            guidance.push_str(&format!("\n{name}:"));
            for (index, step) in steps.iter().enumerate() {
                guidance.push_str(&format!("\n  {}. {}", index + 1, content_as_text(step)));
            }
        }
        Ok(Some(guidance))
    }

    /// Refuses the next model call once the run (its sub-agents included) has used what its
    /// limits or the user's daily budget allow.
    fn check_limits(&self) -> Result<(), RunError> {
        let limits = &self.spec.limits;
        let left = &self.spec.budget_left;
        let spent = self.spec.meter.spent();
        if let Some(max) = limits.max_llm_calls
            && spent.calls >= max
        {
            return Err(RunError::Limit(format!(
                "{max} model calls (run_max_llm_calls)"
            )));
        }
        if let Some(max) = limits.max_tokens
            && spent.tokens >= max
        {
            return Err(RunError::Limit(format!("{max} tokens (run_max_tokens)")));
        }
        if let Some(tokens) = left.tokens
            && spent.tokens >= tokens
        {
            return Err(RunError::Limit(format!(
                "the {tokens} tokens left of your daily budget (user_daily_tokens)"
            )));
        }
        if (limits.max_cost.is_some() || left.cost.is_some()) && self.spec.price.is_none() {
            return Err(RunError::Unpriced(self.spec.settings.model.clone()));
        }
        if let Some(max) = limits.max_cost
            && spent.cost >= max
        {
            return Err(RunError::Limit(format!(
                "${max} of model cost (run_max_cost)"
            )));
        }
        if let Some(dollars) = left.cost
            && spent.cost >= dollars
        {
            return Err(RunError::Limit(format!(
                "the ${dollars:.4} left of your daily budget (user_daily_cost)"
            )));
        }
        Ok(())
    }

    /// The text of the conversation's latest user message: what this run was asked.
    fn latest_request(&self) -> String {
        self.spec
            .history
            .iter()
            .rev()
            .find(|m| m.message["role"] == "user")
            .map(|m| content_as_text(&m.message["content"]))
            .unwrap_or_default()
    }

    /// A model call whose answer is read, not streamed to the client; its usage is counted.
    async fn ask_silently(
        &mut self,
        request: &ChatRequest,
        step: &str,
    ) -> Result<String, RunError> {
        self.check_limits()?;
        let mut answer = String::new();
        let mut usage = None;
        let span = llm_span(request, step);
        let started = std::time::Instant::now();
        let mut first_chunk: Option<Duration> = None;
        let result = async {
            let mut stream = self.llm.stream_chat(request).await?;
            while let Some(deltas) = stream.next().await {
                first_chunk.get_or_insert_with(|| started.elapsed());
                for delta in deltas? {
                    match delta {
                        ChatDelta::Text(text) => answer.push_str(&text),
                        ChatDelta::Usage(reported) => usage = Some(reported),
                        _ => {}
                    }
                }
            }
            Ok::<(), LlmError>(())
        }
        .instrument(span.clone())
        .await;
        record_llm_span(&span, usage.as_ref(), first_chunk, result.as_ref().err());
        self.spec.meter.add(usage.as_ref(), self.spec.price);
        self.usage.record(step, usage, self.spec.price);
        Ok(result.map(|()| answer)?)
    }

    /// The summary step: the conversation so far and one instruction, no tools; the answer
    /// streams as `final_answer`.
    async fn summarize(&mut self, prompt: &mut Prompt) -> Result<(), RunError> {
        prompt.push(json!({"role": "system", "content": SUMMARY_INSTRUCTION}));
        let request = ChatRequest {
            settings: self.spec.settings.clone(),
            messages: prompt.fit("summary", 0),
            tools: Vec::new(),
            forced_tool: None,
        };
        let agent = self.name();
        self.stream_turn(&request, EventType::FinalAnswer, &agent, "summary")
            .await?;
        Ok(())
    }

    async fn analyse(&mut self, prompt: &Prompt) -> Result<String, RunError> {
        let analysis = Prompt {
            system: format!("{}\n\n{ANALYSIS_PROMPT}", prompt.system)
                .trim()
                .to_owned(),
            ..prompt.clone()
        };
        let request = ChatRequest {
            settings: self.spec.settings.clone(),
            messages: analysis.fit("task_analysis", 0),
            tools: Vec::new(),
            forced_tool: None,
        };
        let turn = self
            .stream_turn(
                &request,
                EventType::TaskAnalysis,
                ANALYSIS_AGENT,
                "task_analysis",
            )
            .await?;
        Ok(turn.text)
    }

    /// One streamed LLM call: text deltas become `kind` events as they arrive, reasoning becomes
    /// `task_analysis`, tool-call fragments are assembled.
    async fn stream_turn(
        &mut self,
        request: &ChatRequest,
        kind: EventType,
        agent: &str,
        step: &str,
    ) -> Result<TurnOutput, RunError> {
        self.check_limits()?;
        let message_id = new_id();
        let reasoning_id = new_id();
        let mut text = String::new();
        let mut assembler = ToolCallAssembler::default();
        let mut usage = None;
        let span = llm_span(request, step);
        let started = std::time::Instant::now();
        let mut first_chunk: Option<Duration> = None;
        let result = async {
            let mut stream = tokio::select! {
                biased;
                _ = self.emitter.interrupted() => return Ok(()),
                started = self.llm.stream_chat(request) => started?,
            };
            loop {
                let next = tokio::select! {
                    biased;
                    _ = self.emitter.interrupted() => break,
                    next = stream.next() => next,
                };
                let Some(deltas) = next else { break };
                first_chunk.get_or_insert_with(|| started.elapsed());
                for delta in deltas? {
                    match delta {
                        ChatDelta::Text(chunk) => {
                            text.push_str(&chunk);
                            self.emit_text(kind, agent, &message_id, chunk).await;
                        }
                        ChatDelta::Reasoning(chunk) => {
                            self.emit_text(EventType::TaskAnalysis, agent, &reasoning_id, chunk)
                                .await;
                        }
                        ChatDelta::ToolCall {
                            index,
                            id,
                            name,
                            arguments,
                        } => {
                            assembler.push(index, id, name, &arguments);
                        }
                        ChatDelta::Usage(reported) => usage = Some(reported),
                    }
                }
                if self.emitter.is_aborted() {
                    break;
                }
            }
            Ok(())
        }
        .instrument(span.clone())
        .await;
        record_llm_span(&span, usage.as_ref(), first_chunk, result.as_ref().err());
        self.spec.meter.add(usage.as_ref(), self.spec.price);
        self.usage.record(step, usage, self.spec.price);
        if matches!(kind, EventType::DoSubtaskResult | EventType::FinalAnswer)
            && !text.trim().is_empty()
        {
            self.last_answer.clone_from(&text);
        }
        Ok(result.map(|()| TurnOutput {
            message_id,
            text,
            tool_calls: assembler.finish(),
        })?)
    }

    /// Runs the calls concurrently, emits each result as it lands, returns them in call order.
    async fn call_tools(&self, tools: &ToolBox, calls: &[ToolCall], agent: &str) -> Vec<Value> {
        let mut pending: FuturesUnordered<_> = calls
            .iter()
            .enumerate()
            .map(|(index, call)| {
                let span = tracing::info_span!(
                    "tool.call",
                    tool = %call.function.name,
                    server = tracing::field::Empty,
                    outcome = tracing::field::Empty
                );
                async move {
                    let outcome = tools
                        .call(&call.function.name, &call.function.arguments)
                        .await;
                    let current = tracing::Span::current();
                    if let Some(server) = tools.server_of(&call.function.name) {
                        current.record("server", server);
                    }
                    current.record(
                        "outcome",
                        match &outcome {
                            Ok(_) => "ok",
                            Err(error) => error.kind(),
                        },
                    );
                    (index, outcome)
                }
                .instrument(span)
            })
            .collect();
        let mut results = vec![Value::Null; calls.len()];
        loop {
            let next = tokio::select! {
                biased;
                _ = self.emitter.interrupted() => break,
                next = pending.next() => next,
            };
            let Some((index, outcome)) = next else { break };
            let call = &calls[index];
            let content = outcome.unwrap_or_else(|error| {
                tracing::info!(tool = %call.function.name, %error, "tool call failed");
                error.to_content(&call.function.name)
            });
            self.emit_tool_result(call, &content, agent).await;
            results[index] = content;
        }
        results
    }

    async fn emit_tool_result(&self, call: &ToolCall, content: &Value, agent: &str) {
        self.emitter
            .emit(Event {
                content: Some(content.clone()),
                tool_call_id: Some(call.id.clone()),
                message_id: Some(new_id()),
                agent_name: Some(agent.into()),
                ..Event::new(&self.spec.session_id, Role::Tool, EventType::ToolCallResult)
            })
            .await;
    }

    async fn emit_text(&self, kind: EventType, agent: &str, message_id: &str, text: String) {
        self.emitter
            .emit(Event::text(
                &self.spec.session_id,
                kind,
                message_id,
                agent,
                text,
            ))
            .await;
    }
}

fn push_tool_result(prompt: &mut Prompt, call: &ToolCall, content: &Value) {
    prompt.push(json!({
        "role": "tool",
        "tool_call_id": call.id,
        "content": content_as_text(content),
    }));
}
