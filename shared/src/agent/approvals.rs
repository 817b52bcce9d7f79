//! Tool calls that wait for their owner's approval. The run holds the turn, stores what its
//! continuation needs through the [`ApprovalGate`], says so with `tool_approval_request` events
//! and ends: nothing runs while it waits. A decision starts the continuation, which runs (or
//! refuses) the held calls and goes on with the tool loop.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Spent;
use super::fibre::SubAgent;
use crate::wire::ToolCall;

/// A turn held for approval: the model's text and the calls that wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldTurn {
    pub text: String,
    /// The calls that wait, in the model's order.
    pub waiting: Vec<ToolCall>,
    /// Model turns the run had used: its continuation's loop goes on from there.
    pub turns_used: u32,
    /// What the run had spent: its continuation's limits count it.
    #[serde(default)]
    pub spent: Spent,
    /// Seconds the run had run, in this invocation and those before it (not the time it
    /// waited): its continuation's time limit counts them.
    #[serde(default)]
    pub seconds: f64,
    /// A multi-mode run's checkpoint: where it stood between two rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi: Option<MultiProgress>,
    /// A fibre run's checkpoint: its sub-agents (those it started with and those it spawned),
    /// which its continuation delegates to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<Vec<SubAgent>>,
}

/// Where a multi-mode run stood at its checkpoint, after a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiProgress {
    /// The ids of the tasks its decomposition wrote (the plan itself is stored with the session).
    pub plan: Vec<String>,
    /// Rounds done: its continuation begins with the next.
    pub rounds_done: u32,
    /// When the checkpoint was saved (Unix seconds): what the run said after it is not part of
    /// the conversation its continuation goes on from.
    pub saved_at: f64,
    /// When the run began (Unix seconds): its own planning and observation texts since then are
    /// part of the conversation its continuation goes on from, as they were before the hand-off.
    #[serde(default)]
    pub since: f64,
}

/// What became of one waiting call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    Approve,
    /// Approved, with these arguments (a JSON object's text) instead of the model's.
    Edit {
        arguments: String,
    },
    Reject {
        reason: Option<String>,
    },
    /// Nobody decided before the wait ran out.
    Expired,
}

/// A held turn with a decision for each waiting call: where a continuation starts.
#[derive(Debug, Clone)]
pub struct DecidedTurn {
    pub turn: HeldTurn,
    /// One per waiting call, in the same order.
    pub decisions: Vec<Decision>,
}

impl DecidedTurn {
    /// The waiting calls as they will run (edited arguments in place), with their decisions.
    pub fn calls(&self) -> impl Iterator<Item = (ToolCall, &Decision)> {
        self.turn
            .waiting
            .iter()
            .zip(&self.decisions)
            .map(|(call, decision)| {
                let mut call = call.clone();
                if let Decision::Edit { arguments } = decision {
                    call.function.arguments = arguments.clone();
                }
                (call, decision)
            })
    }

    pub fn expired(&self) -> bool {
        self.decisions.contains(&Decision::Expired)
    }
}

/// Where an approval request is kept until its owner decides.
#[async_trait]
pub trait ApprovalGate: Send + Sync {
    /// Stores the held turn with what the run's continuation needs; returns the approval's id
    /// and when it expires (Unix seconds).
    async fn hold(&self, turn: &HeldTurn) -> Result<(String, f64), String>;
}

/// Where a run that may outlive its invocation keeps its checkpoint: after each complete tool
/// turn (every call answered, the conversation in the log) what its continuation needs to go on
/// from there, as a turn with no waiting calls.
#[async_trait]
pub trait RunCheckpoints: Send + Sync {
    async fn save(&self, at: &HeldTurn) -> Result<(), String>;
}

/// Which calls wait: those to the tools named, and those to servers that require approval.
pub(super) fn waits(listed: &[String], tool: &str, server_requires_approval: bool) -> bool {
    server_requires_approval || listed.iter().any(|name| name == tool)
}

/// A `tool_approval_request` event's content.
pub(super) fn request_content(approval_id: &str, call: &ToolCall, expires_at: f64) -> Value {
    let arguments = serde_json::from_str::<Value>(&call.function.arguments)
        .unwrap_or_else(|_| Value::String(call.function.arguments.clone()));
    json!({
        "approval_id": approval_id,
        "tool_call_id": call.id,
        "tool_name": call.function.name,
        "arguments": arguments,
        "expires_at": expires_at,
        "message": format!(
            "The tool {} waits for your approval: approve, reject or edit the call with POST \
             /api/sessions/{{session_id}}/approve.",
            call.function.name
        ),
    })
}

/// The result a refused call gets instead of running.
pub(super) fn refusal(decision: &Decision) -> Option<Value> {
    match decision {
        Decision::Approve | Decision::Edit { .. } => None,
        Decision::Reject { reason } => Some(json!({
            "error": "The user rejected this call; it did not run.",
            "reason": reason,
        })),
        Decision::Expired => Some(json!({
            "error": "Nobody approved this call in time; it did not run.",
        })),
    }
}

/// The result of a call that needs approval in a run that cannot wait for one.
pub(super) fn cannot_wait() -> Value {
    json!({
        "error": "This tool runs only with its owner's approval, which only simple-mode runs \
                  can wait for; it did not run.",
    })
}
