//! Sage's formats, with no I/O: the stream request, the event object, MCP server configuration.

pub mod agent;
pub mod api;
pub mod event;
pub mod knowledge;
pub mod mcp;
pub mod provider;
pub mod request;
pub mod skill;

pub use api::MergedMessage;
pub use event::{Event, EventStream, EventType, FunctionCall, Role, StoredEvent, ToolCall};
pub use request::{
    AgentMode, ApproveRequest, ContextBudgetConfig, InputMessage, LlmModelConfig, MemoryType,
    StreamRequest,
};
