//! `ask_followup_question`: the model asks the user something and the run ends waiting for the
//! answer, which arrives as the conversation's next message.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{BuiltinTools, JsonObject, ToolCallError, ToolSpec};

pub const ASK_FOLLOWUP_QUESTION: &str = "ask_followup_question";
const MAX_QUESTION_CHARS: usize = 4000;
const MAX_OPTIONS: usize = 10;

pub struct FollowupTool;

/// The tool, when `requested` (a run's `available_tools`) names it.
pub fn followup_tool(requested: &[String]) -> Option<Arc<dyn BuiltinTools>> {
    requested
        .iter()
        .any(|name| name == ASK_FOLLOWUP_QUESTION)
        .then(|| Arc::new(FollowupTool) as Arc<dyn BuiltinTools>)
}

pub fn followup_tool_spec() -> ToolSpec {
    ToolSpec {
        name: ASK_FOLLOWUP_QUESTION.into(),
        description: "Ask the user a question when the task cannot go on without their answer; \
            the run stops here and their reply comes as the next message. follow_up lists \
            answers they may pick."
            .into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "question": {"type": "string"},
                "follow_up": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["question"],
        }),
    }
}

#[async_trait]
impl BuiltinTools for FollowupTool {
    fn specs(&self) -> Vec<ToolSpec> {
        vec![followup_tool_spec()]
    }

    async fn call(&self, tool: &str, arguments: JsonObject) -> Result<Value, ToolCallError> {
        if tool != ASK_FOLLOWUP_QUESTION {
            return Err(ToolCallError::NotFound(tool.to_owned()));
        }
        let question = arguments
            .get("question")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|question| !question.is_empty())
            .ok_or_else(|| {
                ToolCallError::Execution("`question` (a non-empty string) is required".into())
            })?;
        if question.chars().count() > MAX_QUESTION_CHARS {
            return Err(ToolCallError::Execution(format!(
                "`question` holds at most {MAX_QUESTION_CHARS} characters"
            )));
        }
        let follow_up: Vec<&str> = match arguments.get("follow_up") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(_) => {
                return Err(ToolCallError::Execution(
                    "`follow_up` must be a list of strings".into(),
                ));
            }
        };
        if follow_up.len() > MAX_OPTIONS {
            return Err(ToolCallError::Execution(format!(
                "`follow_up` holds at most {MAX_OPTIONS} answers"
            )));
        }
        Ok(json!({
            "question": question,
            "follow_up": follow_up,
            "waiting_for_user": true,
        }))
    }
}
