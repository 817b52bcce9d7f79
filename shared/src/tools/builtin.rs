//! Tools that run in this process (user memory, ...), offered beside the MCP servers' tools.

use async_trait::async_trait;
use rmcp::model::JsonObject;
use serde_json::Value;

use super::{ToolCallError, ToolSpec};

#[async_trait]
pub trait BuiltinTools: Send + Sync + 'static {
    fn specs(&self) -> Vec<ToolSpec>;
    async fn call(&self, tool: &str, arguments: JsonObject) -> Result<Value, ToolCallError>;
}
