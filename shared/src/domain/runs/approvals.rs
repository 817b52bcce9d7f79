//! Runs paused for an approval: what a paused run stores, and the owner's decision on it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::agent::{ApprovalGate, DecidedTurn, Decision, HeldTurn};
use crate::store::{PendingApprovalRecord, RunControl};
use crate::util::{InputError, new_id, now_secs};
use crate::wire::{ApproveRequest, StreamRequest};

/// What a paused run keeps for its continuation: its request, resolved (agent applied, model
/// chosen), and the turn it holds.
#[derive(Serialize, Deserialize)]
pub(super) struct PausedRun {
    pub request: StreamRequest,
    pub turn: HeldTurn,
    /// Set on a running run's checkpoint (see `hand_off`): the run whose lock its
    /// continuation takes over. Such a record waits for no approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hand_off_of: Option<String>,
}

/// The [`ApprovalGate`] of one run: holds its turn in the run control store.
pub(super) struct RunApprovals {
    pub control: Arc<dyn RunControl>,
    pub session_id: String,
    pub user_id: String,
    /// The run's request, resolved, without its new messages (they are in the log).
    pub request: StreamRequest,
    pub timeout: Duration,
}

#[async_trait]
impl ApprovalGate for RunApprovals {
    async fn hold(&self, turn: &HeldTurn) -> Result<(String, f64), String> {
        let state = serde_json::to_string(&PausedRun {
            request: self.request.clone(),
            turn: turn.clone(),
            hand_off_of: None,
        })
        .map_err(|error| error.to_string())?;
        let created_at = now_secs();
        let record = PendingApprovalRecord {
            session_id: self.session_id.clone(),
            approval_id: new_id(),
            user_id: self.user_id.clone(),
            created_at,
            expires_at: created_at + self.timeout.as_secs_f64(),
            due_at: created_at + self.timeout.as_secs_f64(),
            state,
        };
        self.control
            .put_pending_approval(&record)
            .await
            .map_err(|error| crate::telemetry::chain(&error).to_string())?;
        Ok((record.approval_id, record.expires_at))
    }
}

/// An owner's decision, checked against nothing yet but itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalDecision {
    approval_id: Option<String>,
    kind: DecisionKind,
}

#[derive(Debug, Clone, PartialEq)]
enum DecisionKind {
    Approve,
    Reject {
        reason: Option<String>,
    },
    Edit {
        tool_call_id: Option<String>,
        arguments: String,
    },
}

fn schema(detail: &str) -> InputError {
    InputError::Schema {
        detail: detail.to_owned(),
    }
}

impl ApprovalDecision {
    pub fn parse(request: ApproveRequest) -> Result<Self, InputError> {
        let edit_only = |present: bool, field: &str| {
            if present {
                Err(schema(&format!("{field}: only with decision edit")))
            } else {
                Ok(())
            }
        };
        let kind = match request.decision.as_str() {
            "approve" => {
                edit_only(request.arguments.is_some(), "arguments")?;
                edit_only(request.tool_call_id.is_some(), "tool_call_id")?;
                if request.reason.is_some() {
                    return Err(schema("reason: only with decision reject"));
                }
                DecisionKind::Approve
            }
            "reject" => {
                edit_only(request.arguments.is_some(), "arguments")?;
                edit_only(request.tool_call_id.is_some(), "tool_call_id")?;
                DecisionKind::Reject {
                    reason: request.reason.filter(|reason| !reason.trim().is_empty()),
                }
            }
            "edit" => {
                if request.reason.is_some() {
                    return Err(schema("reason: only with decision reject"));
                }
                let arguments = match request.arguments {
                    Some(arguments @ serde_json::Value::Object(_)) => arguments.to_string(),
                    _ => {
                        return Err(schema(
                            "arguments: an object is required with decision edit",
                        ));
                    }
                };
                DecisionKind::Edit {
                    tool_call_id: request.tool_call_id,
                    arguments,
                }
            }
            _ => return Err(schema("decision: expected one of approve, reject, edit")),
        };
        Ok(Self {
            approval_id: request.approval_id,
            kind,
        })
    }

    pub(super) fn approval_id(&self) -> Option<&str> {
        self.approval_id.as_deref()
    }

    /// A decision for each of the turn's waiting calls; every call is refused as expired when
    /// the wait ran out.
    pub(super) fn decide(&self, turn: HeldTurn, expired: bool) -> Result<DecidedTurn, InputError> {
        if expired {
            return Ok(expired_turn(turn));
        }
        let decisions = {
            match &self.kind {
                DecisionKind::Approve => vec![Decision::Approve; turn.waiting.len()],
                DecisionKind::Reject { reason } => vec![
                    Decision::Reject {
                        reason: reason.clone()
                    };
                    turn.waiting.len()
                ],
                DecisionKind::Edit {
                    tool_call_id,
                    arguments,
                } => {
                    let edited = match tool_call_id {
                        Some(id) => turn
                            .waiting
                            .iter()
                            .position(|call| &call.id == id)
                            .ok_or_else(|| {
                                InputError::Invalid(format!(
                                    "tool_call_id: no call {id} waits for approval"
                                ))
                            })?,
                        None if turn.waiting.len() == 1 => 0,
                        None => {
                            return Err(InputError::Invalid(format!(
                                "tool_call_id: {} calls wait; name the one to edit",
                                turn.waiting.len()
                            )));
                        }
                    };
                    (0..turn.waiting.len())
                        .map(|index| {
                            if index == edited {
                                Decision::Edit {
                                    arguments: arguments.clone(),
                                }
                            } else {
                                Decision::Approve
                            }
                        })
                        .collect()
                }
            }
        };
        Ok(DecidedTurn { turn, decisions })
    }
}

/// The turn of a wait that ran out: every call is refused as expired.
pub(super) fn expired_turn(turn: HeldTurn) -> DecidedTurn {
    DecidedTurn {
        decisions: vec![Decision::Expired; turn.waiting.len()],
        turn,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::{FunctionCall, ToolCall};

    fn request(body: serde_json::Value) -> Result<ApprovalDecision, InputError> {
        ApprovalDecision::parse(serde_json::from_value(body).unwrap())
    }

    fn turn(calls: &[&str]) -> HeldTurn {
        HeldTurn {
            text: String::new(),
            waiting: calls
                .iter()
                .map(|id| ToolCall {
                    id: (*id).to_owned(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: "file_write".into(),
                        arguments: "{}".into(),
                    },
                })
                .collect(),
            turns_used: 1,
            spent: Default::default(),
            seconds: 0.0,
            multi: None,
            team: None,
        }
    }

    fn detail(error: InputError) -> String {
        match error {
            InputError::Schema { detail } => detail,
            InputError::Invalid(message) => message,
        }
    }

    #[test]
    fn fields_that_do_not_fit_the_decision_are_refused_by_name() {
        for (body, field) in [
            (json!({"decision": "maybe"}), "decision"),
            (json!({"decision": "approve", "arguments": {}}), "arguments"),
            (
                json!({"decision": "reject", "tool_call_id": "a"}),
                "tool_call_id",
            ),
            (json!({"decision": "approve", "reason": "no"}), "reason"),
            (json!({"decision": "edit"}), "arguments"),
            (json!({"decision": "edit", "arguments": [1]}), "arguments"),
        ] {
            let error = request(body.clone()).expect_err(&body.to_string());
            assert!(detail(error).starts_with(field), "{body}");
        }
    }

    #[test]
    fn an_edit_changes_one_call_and_approves_the_rest() {
        let decision =
            request(json!({"decision": "edit", "tool_call_id": "b", "arguments": {"x": 1}}))
                .unwrap();
        let decided = decision.decide(turn(&["a", "b"]), false).unwrap();
        assert_eq!(
            decided.decisions,
            vec![
                Decision::Approve,
                Decision::Edit {
                    arguments: r#"{"x":1}"#.into()
                }
            ]
        );
        let calls: Vec<_> = decided.calls().collect();
        assert_eq!(calls[1].0.function.arguments, r#"{"x":1}"#);
        let unnamed = request(json!({"decision": "edit", "arguments": {}})).unwrap();
        assert!(
            detail(unnamed.decide(turn(&["a", "b"]), false).unwrap_err())
                .starts_with("tool_call_id")
        );
        let unknown =
            request(json!({"decision": "edit", "tool_call_id": "z", "arguments": {}})).unwrap();
        assert!(unknown.decide(turn(&["a"]), false).is_err());
    }

    #[test]
    fn an_expired_wait_refuses_every_call_whatever_was_decided() {
        let decided = request(json!({"decision": "approve"}))
            .unwrap()
            .decide(turn(&["a", "b"]), true)
            .unwrap();
        assert_eq!(decided.decisions, vec![Decision::Expired; 2]);
        assert!(decided.expired());
    }
}
