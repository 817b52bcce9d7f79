//! The memory tools the model gets with `memory_type: "user"`. Sage's tools take `user_id` from
//! the model; these always act for the run's user, and a `user_id` argument is not offered.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{DEFAULT_RECALL_LIMIT, MEMORY_TYPES, Memories, NewMemory};
use crate::domain::DomainError;
use crate::tools::{BuiltinTools, JsonObject, ToolCallError, ToolSpec};
use crate::util::UserId;

pub const REMEMBER: &str = "remember_user_memory";
pub const RECALL: &str = "recall_user_memory";
pub const FORGET: &str = "forget_user_memory";

/// The memory tools of one run, bound to its user.
pub struct MemoryTools {
    memories: Memories,
    user: UserId,
}

impl Memories {
    pub fn tools(&self, user: &UserId) -> std::sync::Arc<dyn BuiltinTools> {
        std::sync::Arc::new(MemoryTools {
            memories: self.clone(),
            user: user.clone(),
        })
    }
}

fn text<'a>(arguments: &'a JsonObject, name: &str) -> Option<&'a str> {
    arguments.get(name).and_then(Value::as_str)
}

fn required<'a>(arguments: &'a JsonObject, name: &str) -> Result<&'a str, ToolCallError> {
    text(arguments, name)
        .ok_or_else(|| ToolCallError::Execution(format!("`{name}` (a string) is required")))
}

/// Tags as a list, or as Sage's models often send them: one comma-separated string.
fn tags(arguments: &JsonObject) -> Vec<String> {
    match arguments.get("tags") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(list)) => list.split(',').map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn failed(error: DomainError) -> ToolCallError {
    match error {
        DomainError::Store(_) => ToolCallError::Unavailable("the memory store failed".into()),
        other => ToolCallError::Execution(other.to_string()),
    }
}

/// The memory tools, as a run with user memory gets them and `/api/tools?type=basic` lists them.
pub fn memory_tool_specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: REMEMBER.into(),
            description: "Remember something about the user for future conversations \
                    (a preference, requirement, persona detail, constraint, ...). The same key \
                    replaces what it held."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "memory_key": {"type": "string", "description": "a short unique name, e.g. reply_language"},
                    "content": {"type": "string", "description": "what to remember"},
                    "memory_type": {"type": "string", "enum": MEMORY_TYPES},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["memory_key", "content"],
            }),
        },
        ToolSpec {
            name: RECALL.into(),
            description: "Search what you remember about the user.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "memory_type": {"type": "string", "enum": MEMORY_TYPES},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 50},
                },
                "required": ["query"],
            }),
        },
        ToolSpec {
            name: FORGET.into(),
            description: "Forget one memory about the user, by its key.".into(),
            parameters: json!({
                "type": "object",
                "properties": {"memory_key": {"type": "string"}},
                "required": ["memory_key"],
            }),
        },
    ]
}

#[async_trait]
impl BuiltinTools for MemoryTools {
    fn specs(&self) -> Vec<ToolSpec> {
        memory_tool_specs()
    }

    async fn call(&self, tool: &str, arguments: JsonObject) -> Result<Value, ToolCallError> {
        match tool {
            REMEMBER => {
                let memory = NewMemory::parse(
                    required(&arguments, "memory_key")?,
                    required(&arguments, "content")?,
                    text(&arguments, "memory_type"),
                    tags(&arguments),
                )
                .map_err(|error| ToolCallError::Execution(error.to_string()))?;
                let stored = self
                    .memories
                    .remember(&self.user, memory)
                    .await
                    .map_err(failed)?;
                Ok(json!({"success": true, "message": format!("remembered `{}`", stored.key)}))
            }
            RECALL => {
                let limit = arguments
                    .get("limit")
                    .and_then(Value::as_u64)
                    .map_or(DEFAULT_RECALL_LIMIT, |limit| limit as usize);
                let found = self
                    .memories
                    .recall(
                        &self.user,
                        text(&arguments, "query").unwrap_or_default(),
                        text(&arguments, "memory_type"),
                        limit,
                    )
                    .await
                    .map_err(failed)?;
                Ok(json!({"memories": found, "total": found.len()}))
            }
            FORGET => {
                let key = required(&arguments, "memory_key")?;
                self.memories
                    .forget(&self.user, key)
                    .await
                    .map_err(failed)?;
                Ok(json!({"success": true, "message": format!("forgot `{key}`")}))
            }
            other => Err(ToolCallError::NotFound(other.to_owned())),
        }
    }
}
