//! Fibre mode (`sage-client.md` §5): the main agent runs the tool loop (at most
//! [`FIBRE_MAX_LOOP_COUNT`] turns) with `sys_spawn_agent`, `sys_delegate_task` and
//! `sys_finish_task` beside its own tools. The tasks of one delegation run concurrently, each a
//! simple-mode sub-agent in its own sub-session of the same user, on the same workspace: its
//! events go to the sub-session's log and, but for its `token_usage`, into the main stream,
//! carrying the sub-session's id and the sub-agent's name. A sub-agent ends with
//! `sys_finish_task` (its `result`) or an answer; the delegation returns every result at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use super::{Agent, FibreSetup, RunMode, RunOutcome, RunSpec};
use crate::context::PromptMessage;
use crate::llm::ChatModel;
use crate::tools::{BuiltinTools, JsonObject, McpPool, ToolCallError, ToolSpec};
use crate::util::{new_id, now_secs};
use crate::wire::{Event, EventType};

pub const SYS_SPAWN_AGENT: &str = "sys_spawn_agent";
pub const SYS_DELEGATE_TASK: &str = "sys_delegate_task";
pub const SYS_FINISH_TASK: &str = "sys_finish_task";
/// Sage's main fibre agent always has this turn cap, whatever the request says.
pub const FIBRE_MAX_LOOP_COUNT: u32 = 50;
const MAX_DELEGATED_TASKS: usize = 8;
const MAX_SUB_AGENTS: usize = 16;
/// Events a sub-agent may get ahead of the task routing them.
const ROUTE_CAPACITY: usize = 256;

const FIBRE_RULES: &str = "You lead a team of sub-agents. Create one with sys_spawn_agent (a \
    name, what it is for, its instructions) when part of the task needs a specialist, and hand \
    tasks to sub-agents with sys_delegate_task: the tasks of one call run at the same time and \
    their results come back together. Do small things yourself. When the whole task is done, \
    call sys_finish_task with the result.";
const SUB_AGENT_RULES: &str = "You are a sub-agent working on one task handed to you by the \
    lead agent. Use your tools as needed; when the task is done, call sys_finish_task with its \
    result.";

/// An agent tasks can be delegated to.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct SubAgent {
    pub id: String,
    pub name: String,
    pub description: String,
    pub system_prompt: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SubSessionError {
    #[error("session {0} is not one of the caller's, or not a valid session id")]
    Refused(String),
    #[error("the sub-session could not be stored")]
    Store,
}

/// Where sub-agents' conversations are kept: each in its own session of the run's user.
#[async_trait]
pub trait SubSessions: Send + Sync {
    /// Opens `session_id` (new, or one of the caller's) for `task`, stored as its user message.
    /// Events sent to the emitter are stored in its log; the future resolves once they are and
    /// the session's record is up to date.
    async fn open(
        &self,
        session_id: &str,
        agent_name: &str,
        task: &str,
    ) -> Result<(super::Emitter, BoxFuture<'static, ()>), SubSessionError>;
}

fn invalid(message: impl Into<String>) -> ToolCallError {
    ToolCallError::Execution(message.into())
}

/// `sys_finish_task(status, result)`: ends the run once its turn's tools have run.
struct FinishTool;

fn finish_spec() -> ToolSpec {
    ToolSpec {
        name: SYS_FINISH_TASK.into(),
        description:
            "Finish the task: say how it ended and give its result. The run ends after this call."
                .into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["success", "failure", "partial"]},
                "result": {"type": "string", "description": "what the task came to"},
            },
            "required": ["result"],
        }),
    }
}

fn finish(arguments: &JsonObject) -> Value {
    json!({
        "status": arguments.get("status").and_then(Value::as_str).unwrap_or("success"),
        "result": arguments.get("result").and_then(Value::as_str).unwrap_or_default(),
        "finished": true,
    })
}

#[async_trait]
impl BuiltinTools for FinishTool {
    fn specs(&self) -> Vec<ToolSpec> {
        vec![finish_spec()]
    }

    async fn call(&self, tool: &str, arguments: JsonObject) -> Result<Value, ToolCallError> {
        match tool {
            SYS_FINISH_TASK => Ok(finish(&arguments)),
            other => Err(ToolCallError::NotFound(other.to_owned())),
        }
    }
}

/// `sys_finish_task` alone: for sub-agents, and for any run that names it.
pub fn finish_tool() -> Arc<dyn BuiltinTools> {
    Arc::new(FinishTool)
}

#[derive(Deserialize)]
struct DelegatedTask {
    agent_id: String,
    content: String,
    #[serde(default)]
    session_id: Option<String>,
}

/// The main agent's team tools.
struct FibreTools {
    /// The run's spec before the team tools joined it: what sub-agents inherit.
    parent: RunSpec,
    llm: Arc<dyn ChatModel>,
    pool: Arc<McpPool>,
    emitter: super::Emitter,
    sub_sessions: Arc<dyn SubSessions>,
    /// Shared with the main agent, whose checkpoints keep them.
    agents: Arc<Mutex<Vec<SubAgent>>>,
    spawned: AtomicUsize,
}

fn slug(name: &str) -> String {
    let slug: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    slug.trim_matches('_').chars().take(48).collect()
}

impl FibreTools {
    async fn spawn(&self, arguments: &JsonObject) -> Result<Value, ToolCallError> {
        let text = |name: &str| {
            arguments
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let name = text("agent_name");
        if name.is_empty() {
            return Err(invalid("`agent_name` is required"));
        }
        let mut agents = self.agents.lock().await;
        if agents.len() >= MAX_SUB_AGENTS {
            return Err(invalid(format!(
                "a run has at most {MAX_SUB_AGENTS} sub-agents"
            )));
        }
        if agents.iter().any(|agent| agent.name == name) {
            return Err(invalid(format!("a sub-agent named {name} exists already")));
        }
        let number = self.spawned.fetch_add(1, Ordering::Relaxed) + 1;
        let base = slug(&name);
        let id = if base.is_empty() || agents.iter().any(|agent| agent.id == base) {
            format!("agent_{number}")
        } else {
            base
        };
        agents.push(SubAgent {
            id: id.clone(),
            name: name.clone(),
            description: text("description"),
            system_prompt: text("system_prompt"),
        });
        Ok(json!({"agent_id": id, "agent_name": name, "success": true}))
    }

    async fn delegate(&self, arguments: &JsonObject) -> Result<Value, ToolCallError> {
        let tasks: Vec<DelegatedTask> = arguments
            .get("tasks")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|error| invalid(format!("`tasks`: {error}")))?
            .unwrap_or_default();
        if tasks.is_empty() || tasks.len() > MAX_DELEGATED_TASKS {
            return Err(invalid(format!(
                "`tasks`: 1 to {MAX_DELEGATED_TASKS} tasks"
            )));
        }
        let agents = self.agents.lock().await.clone();
        let mut assigned = Vec::new();
        for task in tasks {
            let Some(agent) = agents
                .iter()
                .find(|agent| agent.id == task.agent_id || agent.name == task.agent_id)
            else {
                let known: Vec<&str> = agents.iter().map(|agent| agent.id.as_str()).collect();
                return Err(invalid(format!(
                    "no sub-agent {}; the sub-agents are: {}",
                    task.agent_id,
                    if known.is_empty() {
                        "none yet (create one with sys_spawn_agent)".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            if task.content.trim().is_empty() {
                return Err(invalid("every task needs its `content`"));
            }
            assigned.push((agent.clone(), task));
        }
        let runs = assigned
            .into_iter()
            .map(|(agent, task)| self.run_task(agent, task));
        let results = futures_util::future::join_all(runs).await;
        Ok(json!({"results": results}))
    }

    /// One delegated task: a sub-agent in its sub-session, its events routed to that session's
    /// log and to the main stream.
    async fn run_task(&self, agent: SubAgent, task: DelegatedTask) -> Value {
        let session_id = task
            .session_id
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| {
                let suffix: String = new_id()
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(12)
                    .collect();
                format!("{}_sub_{suffix}", self.parent.session_id)
            });
        let failed = |error: String| json!({"agent_id": agent.id, "session_id": session_id, "status": "failed", "error": error});
        let (stored, closed) = match self
            .sub_sessions
            .open(&session_id, &agent.name, &task.content)
            .await
        {
            Ok(opened) => opened,
            Err(error) => return failed(error.to_string()),
        };
        let (sender, mut receiver) = mpsc::channel::<Event>(ROUTE_CAPACITY);
        let child = self.emitter.child(sender);
        let main = self.emitter.clone();
        let router = tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                let shown = event.kind != EventType::TokenUsage;
                stored.emit(event.clone()).await;
                if shown {
                    main.emit(event).await;
                }
            }
            drop(stored);
            closed.await;
        });
        let mut builtin_tools = self.parent.builtin_tools.clone();
        builtin_tools.push(finish_tool());
        let system_prompt = format!("{}\n\n{SUB_AGENT_RULES}", agent.system_prompt)
            .trim()
            .to_owned();
        let spec = RunSpec {
            session_id: session_id.clone(),
            system_prompt: Some(system_prompt),
            history: vec![PromptMessage::new(
                json!({"role": "user", "content": task.content}),
                now_secs(),
            )],
            summary: None,
            force_summary: false,
            deep_thinking: false,
            builtin_tools,
            notices: Vec::new(),
            workflows: Default::default(),
            suggest: false,
            mode: RunMode::Simple,
            agent_name: Some(agent.name.clone()),
            fibre: None,
            // A sub-agent cannot pause for an approval: such calls are refused there.
            approval_gate: None,
            // Nor hand off: the parent run does, at its own safe points.
            checkpoints: None,
            deadline: None,
            resumed: None,
            ..self.parent.clone()
        };
        let (outcome, result) = Agent::new(spec, self.llm.clone(), self.pool.clone(), child)
            .run_for_result()
            .await;
        if let Err(error) = router.await {
            tracing::warn!(%session_id, %error, "a sub-agent's event routing failed");
        }
        let status = match outcome {
            RunOutcome::Completed => "completed",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::AwaitingApproval => "awaiting approval",
            RunOutcome::HandedOff => "handed off",
            RunOutcome::Failed => "failed",
        };
        json!({
            "agent_id": agent.id,
            "agent_name": agent.name,
            "session_id": session_id,
            "status": status,
            "result": result,
        })
    }
}

/// The team tools of a fibre run, as `/api/tools?type=basic` lists them.
pub fn team_specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: SYS_SPAWN_AGENT.into(),
            description: "Create a sub-agent for part of the task: its name, what it is for, and its instructions. Returns its agent_id.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "agent_name": {"type": "string"},
                    "description": {"type": "string"},
                    "system_prompt": {"type": "string"},
                },
                "required": ["agent_name", "system_prompt"],
            }),
        },
        ToolSpec {
            name: SYS_DELEGATE_TASK.into(),
            description: "Hand tasks to sub-agents; the tasks run at the same time, each in its own sub-session (give a session_id to continue one), and every result comes back at once.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "tasks": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "agent_id": {"type": "string"},
                                "content": {"type": "string"},
                                "session_id": {"type": "string"},
                            },
                            "required": ["agent_id", "content"],
                        },
                    },
                },
                "required": ["tasks"],
            }),
        },
        finish_spec(),
    ]
}

#[async_trait]
impl BuiltinTools for FibreTools {
    fn specs(&self) -> Vec<ToolSpec> {
        team_specs()
    }

    async fn call(&self, tool: &str, arguments: JsonObject) -> Result<Value, ToolCallError> {
        match tool {
            SYS_SPAWN_AGENT => self.spawn(&arguments).await,
            SYS_DELEGATE_TASK => self.delegate(&arguments).await,
            SYS_FINISH_TASK => Ok(finish(&arguments)),
            other => Err(ToolCallError::NotFound(other.to_owned())),
        }
    }
}

impl Agent {
    /// The main fibre agent's team tools; its prompt learns the rules and the sub-agents that
    /// exist from the start.
    pub(super) fn fibre_tools(&mut self, mut setup: FibreSetup) -> Arc<dyn BuiltinTools> {
        if let Some(team) = self
            .spec
            .resumed
            .as_ref()
            .and_then(|resumed| resumed.turn.team.clone())
        {
            setup.sub_agents = team;
        }
        let mut rules = FIBRE_RULES.to_owned();
        if !setup.sub_agents.is_empty() {
            rules.push_str("\nSub-agents ready now (agent_id: what it is for):");
            for agent in &setup.sub_agents {
                rules.push_str(&format!("\n- {}: {}", agent.id, agent.description));
            }
        }
        let parent = self.spec.clone();
        self.spec.system_prompt = Some(
            format!(
                "{}\n\n{rules}",
                self.spec.system_prompt.as_deref().unwrap_or_default()
            )
            .trim()
            .to_owned(),
        );
        let spawned = AtomicUsize::new(setup.sub_agents.len());
        let agents = Arc::new(Mutex::new(setup.sub_agents));
        self.team = Some(agents.clone());
        Arc::new(FibreTools {
            parent,
            llm: self.llm.clone(),
            pool: self.pool.clone(),
            emitter: self.emitter.clone(),
            sub_sessions: setup.sub_sessions,
            spawned,
            agents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_slugs_of_their_names() {
        assert_eq!(slug("Web Researcher"), "web_researcher");
        assert_eq!(slug("  数据 分析 "), "数据_分析");
        assert_eq!(slug("!!!"), "");
    }
}
