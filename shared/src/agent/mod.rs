//! The simple-mode agent (`api.md` §2): LLM → tool calls (concurrently) → results fed back →
//! repeat until the model answers without tools or the loop cap is reached.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};

mod emitter;

pub use emitter::Emitter;

use crate::context::content_as_text;
use crate::llm::{
    ChatDelta, ChatModel, ChatRequest, LlmError, LlmSettings, ToolCallAssembler, Usage,
};
use crate::store::McpServerRecord;
use crate::tools::{McpPolicy, McpPool, McpServerConfig, ToolBox};
use crate::util::new_id;
use crate::wire::{Event, EventType, Role, ToolCall};

const EXECUTION_AGENT: &str = "SimpleAgent";
const ANALYSIS_AGENT: &str = "TaskAnalysisAgent";
const ANALYSIS_PROMPT: &str = "Before anyone answers, analyse the user's task: the goal, what is \
    known, what is missing, and the steps (and tools) needed. Do not answer the task itself.";

/// Everything a run needs, resolved from the request, the presets and the server defaults.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub session_id: String,
    pub settings: LlmSettings,
    pub system_prompt: Option<String>,
    /// OpenAI-shaped history, ending with the new messages, already fitted to the context.
    pub history: Vec<Value>,
    pub max_loop_count: u32,
    pub deep_thinking: bool,
    pub available_tools: Vec<String>,
    /// The caller's enabled registered servers, then the shared ones.
    pub registered_servers: Vec<McpServerRecord>,
    /// `extra_mcp_config`: servers for this request only.
    pub request_servers: BTreeMap<String, McpServerConfig>,
    pub mcp_policy: McpPolicy,
    pub tool_timeout: Duration,
}

#[derive(Default)]
struct UsageTally {
    total: Usage,
    steps: Vec<Value>,
}

impl UsageTally {
    fn record(&mut self, step: &str, usage: Option<Usage>) {
        if let Some(usage) = &usage {
            self.total.add(usage);
        }
        self.steps.push(json!({"step_name": step, "usage": usage}));
    }

    fn to_json(&self) -> Value {
        json!({"total_info": self.total, "per_step_info": self.steps})
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Completed,
    Interrupted,
    Failed,
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
}

impl Agent {
    pub fn new(
        spec: RunSpec,
        llm: Arc<dyn ChatModel>,
        pool: Arc<McpPool>,
        emitter: Emitter,
    ) -> Self {
        Self {
            spec,
            llm,
            pool,
            emitter,
            usage: UsageTally::default(),
        }
    }

    /// Runs to the end and emits `token_usage`; the event log adds `stream_end`.
    pub async fn run(mut self) -> RunOutcome {
        let tools = ToolBox::build(
            &self.spec.registered_servers,
            &self.spec.request_servers,
            &self.spec.available_tools,
            self.spec.mcp_policy,
            self.pool.clone(),
            self.spec.tool_timeout,
        )
        .await;
        let mut outcome = match self.execute(&tools).await {
            Ok(()) => RunOutcome::Completed,
            Err(error) => {
                self.emit_text(
                    EventType::Error,
                    EXECUTION_AGENT,
                    &new_id(),
                    error.to_string(),
                )
                .await;
                RunOutcome::Failed
            }
        };
        if self.emitter.is_interrupted() {
            outcome = RunOutcome::Interrupted;
        }
        tools.close().await;
        let usage = Event::token_usage(&self.spec.session_id, &self.usage.to_json());
        self.emitter.emit(usage).await;
        outcome
    }

    async fn execute(&mut self, tools: &ToolBox) -> Result<(), LlmError> {
        let mut system = self.spec.system_prompt.clone().unwrap_or_default();
        if self.spec.deep_thinking {
            let analysis = self.analyse().await?;
            if !analysis.is_empty() {
                system = format!("{system}\n\nTask analysis:\n{analysis}")
                    .trim()
                    .to_owned();
            }
        }
        let mut messages = Vec::with_capacity(self.spec.history.len() + 1);
        if !system.is_empty() {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.extend(self.spec.history.iter().cloned());
        let definitions = tools.definitions();

        for _ in 0..self.spec.max_loop_count {
            if self.emitter.is_aborted() {
                return Ok(());
            }
            let request = ChatRequest {
                settings: self.spec.settings.clone(),
                messages: messages.clone(),
                tools: definitions.clone(),
            };
            let turn = self
                .stream_turn(
                    &request,
                    EventType::DoSubtaskResult,
                    EXECUTION_AGENT,
                    "direct_execution",
                )
                .await?;
            if turn.tool_calls.is_empty() || self.emitter.is_aborted() {
                return Ok(());
            }
            self.emitter
                .emit(Event {
                    tool_calls: Some(turn.tool_calls.clone()),
                    message_id: Some(turn.message_id.clone()),
                    agent_name: Some(EXECUTION_AGENT.into()),
                    ..Event::new(&self.spec.session_id, Role::Assistant, EventType::ToolCall)
                })
                .await;
            messages.push(json!({
                "role": "assistant",
                "content": turn.text,
                "tool_calls": turn.tool_calls,
            }));
            if self.emitter.is_aborted() {
                return Ok(());
            }
            for (call, content) in turn
                .tool_calls
                .iter()
                .zip(self.call_tools(tools, &turn.tool_calls).await)
            {
                messages.push(json!({
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": content_as_text(&content),
                }));
            }
        }
        let limit = self.spec.max_loop_count;
        self.emit_text(
            EventType::Normal,
            EXECUTION_AGENT,
            &new_id(),
            format!("Agent执行次数超过最大循环次数：{limit}, 任务暂停，是否需要继续执行？"),
        )
        .await;
        Ok(())
    }

    async fn analyse(&mut self) -> Result<String, LlmError> {
        let mut messages = vec![json!({"role": "system", "content": ANALYSIS_PROMPT})];
        messages.extend(self.spec.history.iter().cloned());
        let request = ChatRequest {
            settings: self.spec.settings.clone(),
            messages,
            tools: Vec::new(),
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
    ) -> Result<TurnOutput, LlmError> {
        let message_id = new_id();
        let reasoning_id = new_id();
        let mut text = String::new();
        let mut assembler = ToolCallAssembler::default();
        let mut usage = None;
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
        .await;
        self.usage.record(step, usage);
        result.map(|()| TurnOutput {
            message_id,
            text,
            tool_calls: assembler.finish(),
        })
    }

    /// Runs the calls concurrently, emits each result as it lands, returns them in call order.
    async fn call_tools(&self, tools: &ToolBox, calls: &[ToolCall]) -> Vec<Value> {
        let mut pending: FuturesUnordered<_> = calls
            .iter()
            .enumerate()
            .map(|(index, call)| async move {
                let outcome = tools
                    .call(&call.function.name, &call.function.arguments)
                    .await;
                (index, outcome)
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
            self.emitter
                .emit(Event {
                    content: Some(content.clone()),
                    tool_call_id: Some(call.id.clone()),
                    message_id: Some(new_id()),
                    agent_name: Some(EXECUTION_AGENT.into()),
                    ..Event::new(&self.spec.session_id, Role::Tool, EventType::ToolCallResult)
                })
                .await;
            results[index] = content;
        }
        results
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
