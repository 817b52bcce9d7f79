//! The event object of the wire format (Sage's MessageChunk), and what the log stores.

use std::sync::{Arc, OnceLock};

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::util::now_secs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    Tool,
    System,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    DoSubtaskResult,
    TaskAnalysis,
    ToolCall,
    ToolCallResult,
    FinalAnswer,
    Normal,
    Error,
    TaskDecomposition,
    Planning,
    Execution,
    Observation,
    QuerySuggest,
    /// A tool call that waits for its owner's decision; the run ends its invocation here.
    ToolApprovalRequest,
    TokenUsage,
    StreamEnd,
}

impl EventType {
    /// The name the wire gives it (SSE's `event:` field).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DoSubtaskResult => "do_subtask_result",
            Self::TaskAnalysis => "task_analysis",
            Self::ToolCall => "tool_call",
            Self::ToolCallResult => "tool_call_result",
            Self::FinalAnswer => "final_answer",
            Self::Normal => "normal",
            Self::Error => "error",
            Self::TaskDecomposition => "task_decomposition",
            Self::Planning => "planning",
            Self::Execution => "execution",
            Self::Observation => "observation",
            Self::QuerySuggest => "query_suggest",
            Self::ToolApprovalRequest => "tool_approval_request",
            Self::TokenUsage => "token_usage",
            Self::StreamEnd => "stream_end",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// One event of a run, exactly as both framings carry it; null fields are omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    pub timestamp: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_stream_count: Option<u64>,
}

/// The metadata flag of a hand-off event.
const HAND_OFF: &str = "continues";

impl Event {
    pub fn new(session_id: &str, role: Role, kind: EventType) -> Self {
        Self {
            role: Some(role),
            content: None,
            tool_calls: None,
            tool_call_id: None,
            message_id: None,
            kind,
            session_id: session_id.to_owned(),
            agent_name: None,
            timestamp: now_secs(),
            metadata: Some(Value::Object(Default::default())),
            total_stream_count: None,
        }
    }

    pub fn text(
        session_id: &str,
        kind: EventType,
        message_id: &str,
        agent: &str,
        text: impl Into<String>,
    ) -> Self {
        Self {
            content: Some(Value::String(text.into())),
            message_id: Some(message_id.to_owned()),
            agent_name: Some(agent.to_owned()),
            ..Self::new(session_id, Role::Assistant, kind)
        }
    }

    pub fn stream_end(session_id: &str, total_stream_count: u64) -> Self {
        Self {
            role: None,
            metadata: None,
            total_stream_count: Some(total_stream_count),
            ..Self::new(session_id, Role::Assistant, EventType::StreamEnd)
        }
    }

    /// The run's `token_usage` event: the totals and the per-step figures.
    pub fn token_usage(session_id: &str, token_usage: &Value) -> Self {
        Self {
            content: Some(Value::String(String::new())),
            message_id: Some(uuid::Uuid::new_v4().to_string()),
            metadata: Some(
                serde_json::json!({"token_usage": token_usage, "session_id": session_id}),
            ),
            ..Self::new(session_id, Role::Assistant, EventType::TokenUsage)
        }
    }

    /// The usage event of a run that reported none (it failed, or was cut off).
    pub fn empty_token_usage(session_id: &str) -> Self {
        Self::token_usage(
            session_id,
            &serde_json::json!({"total_info": {}, "per_step_info": []}),
        )
    }

    /// The last event of an invocation that handed its run off to a fresh one: the client's
    /// stream ends here, and `GET /api/stream/resume/{session_id}` follows the run on. The log's
    /// writer completes it with its sequence number ([`Event::seal_hand_off`]).
    pub fn hand_off(session_id: &str, agent: &str) -> Self {
        Self {
            metadata: Some(serde_json::json!({HAND_OFF: true})),
            ..Self::text(
                session_id,
                EventType::Normal,
                &uuid::Uuid::new_v4().to_string(),
                agent,
                "This run continues in a new invocation.",
            )
        }
    }

    /// Says where a client resumes after this hand-off event, stored as event `seq`.
    pub fn seal_hand_off(&mut self, seq: u64) {
        let resume = format!("/api/stream/resume/{}?last_index={seq}", self.session_id);
        self.content = Some(Value::String(format!(
            "This run continues in a new invocation: follow it with GET {resume} (SSE: \
             reconnect with Last-Event-ID: {seq})."
        )));
        self.metadata = Some(serde_json::json!({HAND_OFF: true, "resume": resume}));
    }

    /// True for [`Event::hand_off`]'s event.
    pub fn is_hand_off(&self) -> bool {
        self.kind == EventType::Normal
            && self
                .metadata
                .as_ref()
                .and_then(|metadata| metadata.get(HAND_OFF))
                .and_then(Value::as_bool)
                .unwrap_or(false)
    }

    pub fn content_text(&self) -> &str {
        match &self.content {
            Some(Value::String(text)) => text,
            _ => "",
        }
    }

    /// The caller's own messages live in the log too, but are never sent on a stream.
    pub fn is_streamed(&self) -> bool {
        !matches!(self.role, Some(Role::User | Role::System))
    }
}

/// An event as the log keeps it: with its per-session sequence number, and its JSON, made once
/// however many times the event is stored, sent and followed.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Event,
    json: OnceLock<Arc<str>>,
}

impl StoredEvent {
    pub fn new(seq: u64, event: Event) -> Self {
        Self {
            seq,
            event,
            json: OnceLock::new(),
        }
    }

    /// An event read back from the log, keeping the JSON it was read from.
    pub fn from_json(seq: u64, json: &str) -> Result<Self, serde_json::Error> {
        Ok(Self {
            seq,
            event: serde_json::from_str(json)?,
            json: OnceLock::from(Arc::from(json)),
        })
    }

    /// The event as one line of JSON, serialised the first time it is asked for: the event is
    /// not changed once it has a sequence number.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| {
            serde_json::to_string(&self.event)
                .expect("an event is plain data and always serialises")
                .into()
        })
    }
}

impl PartialEq for StoredEvent {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq && self.event == other.event
    }
}

/// What a client reads of a run: its events, ending with `stream_end`.
pub type EventStream = BoxStream<'static, StoredEvent>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_type_is_named_as_serde_names_it() {
        let kinds = serde_json::from_value::<Vec<EventType>>(serde_json::json!([
            "do_subtask_result",
            "task_analysis",
            "tool_call",
            "tool_call_result",
            "final_answer",
            "normal",
            "error",
            "task_decomposition",
            "planning",
            "execution",
            "observation",
            "query_suggest",
            "tool_approval_request",
            "token_usage",
            "stream_end"
        ]))
        .unwrap();
        for kind in kinds {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn a_stored_event_is_serialised_once_and_read_back_as_it_was_written() {
        let stored = StoredEvent::new(7, Event::stream_end("s1", 3));
        let json = stored.json();
        assert_eq!(json, serde_json::to_string(&stored.event).unwrap());
        let copy = stored.clone();
        assert!(
            std::ptr::eq(json, copy.json()),
            "a clone shares the serialised form"
        );
        let read = StoredEvent::from_json(7, json).unwrap();
        assert_eq!(read, stored);
        assert_eq!(read.json(), json);
    }
}
