//! How a session's history becomes the messages of one model call (`context.md`): events merged
//! into messages, the token estimate, the run's budgets and active window, recall of older
//! messages, and compression.

mod budget;
mod compress;
mod history;
mod recall;
mod tokens;

use serde_json::Value;

pub use budget::{
    Budgets, ContextSettings, HistoryPlan, MAX_INPUT_TOKENS, fit_call, plan_history, tool_tokens,
};
pub use compress::{Compressed, Level};
pub use history::{content_as_text, merge_events, merge_events_with, to_model_messages};
pub use recall::rank as rank_by_relevance;
pub use tokens::{estimate_tokens, message_tokens};

/// One OpenAI-shaped message of the conversation, with when it was said (compression treats
/// messages older than a day harder).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptMessage {
    pub message: Value,
    pub timestamp: f64,
}

impl PromptMessage {
    pub fn new(message: Value, timestamp: f64) -> Self {
        Self { message, timestamp }
    }
}
