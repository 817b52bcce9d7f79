//! Records as the API shows them: the `data` of each route's envelope.

use serde::Serialize;
use serde_json::Value;

use super::event::{EventType, Role, ToolCall};

/// One message of a conversation, merged from its events by `message_id`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MergedMessage {
    pub message_id: String,
    pub role: Role,
    pub content: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The type of the message's first event.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When the message began.
    pub timestamp: f64,
}

/// A conversation as lists show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionSummary {
    pub session_id: String,
    pub user_id: String,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub title: String,
    pub message_count: u64,
    pub user_count: u64,
    pub agent_count: u64,
    /// ISO 8601 with offset (Sage's client reads them with `new Date()`).
    pub created_at: String,
    pub updated_at: String,
    pub status: &'static str,
    /// The summary job's latest summary of the conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// `GET /api/conversations`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub list: Vec<SessionSummary>,
    pub total: u64,
    pub page: u64,
    pub page_size: u64,
    pub total_pages: u64,
    pub has_next: bool,
    pub has_prev: bool,
}

/// `GET /api/conversations/{id}/messages` and the share view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Conversation {
    pub conversation_id: String,
    pub messages: Vec<MergedMessage>,
    pub message_count: usize,
    pub conversation_info: SessionSummary,
}

/// `POST /api/sessions/{id}/tasks_status`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskStatus {
    pub session_id: String,
    pub status: &'static str,
    pub interrupt_requested: bool,
    pub updated_at: f64,
    pub message_count: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionRef {
    pub session_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Renamed {
    pub session_id: String,
    pub title: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Interrupted {
    pub session_id: String,
    pub user_id: String,
    pub interrupted: bool,
}

/// `POST /api/sessions/runs/stop`: the conversations whose runs were asked to stop.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunsStopped {
    pub user_id: String,
    pub stopped: Vec<String>,
}

/// One entry of a conversation's file workspace.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    pub size: u64,
    pub modified_time: f64,
    pub is_directory: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileList {
    pub session_id: String,
    pub files: Vec<FileEntry>,
}

/// `POST /api/oss/upload`: where the stored file can be fetched.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Uploaded {
    pub url: String,
}

/// An MCP server as `/api/mcp/list` shows it; its `api_key` masked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct McpServerSummary {
    pub name: String,
    pub protocol: String,
    pub disabled: bool,
    pub streamable_http_url: Option<String>,
    pub sse_url: Option<String>,
    pub user_id: String,
    pub tool_count: usize,
    pub tools: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// For a server with OAuth: whether its owner has authorized it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorized: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct McpServerList {
    pub servers: Vec<McpServerSummary>,
}

/// What adding or refreshing a server answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct McpServerTools {
    pub server_name: String,
    pub status: &'static str,
    pub tools: Vec<String>,
    /// For a server with OAuth: where to send the user to authorize it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
}

/// Where to send the user to authorize an MCP server.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct McpAuthorization {
    pub server_name: String,
    pub authorization_url: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct McpServerRef {
    pub server_name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct McpServerToggled {
    pub server_name: String,
    pub disabled: bool,
}

/// A tool of `/api/tools`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolEntry {
    pub name: String,
    pub description: String,
    pub parameters: Value,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub source: String,
    pub server_name: String,
    pub user_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolList {
    pub tools: Vec<ToolEntry>,
}

/// `GET /api/health`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub timestamp: f64,
    pub service: &'static str,
    pub version: &'static str,
}

/// `GET /api/health/ready`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<String>,
}

/// One long-term memory, as `GET /api/memories` and the recall tool show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UserMemory {
    pub key: String,
    pub content: String,
    pub memory_type: String,
    pub tags: Vec<String>,
    pub created_at: f64,
    pub updated_at: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserMemoryList {
    pub memories: Vec<UserMemory>,
    pub total: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemoryForgotten {
    pub key: String,
}

/// `POST /api/user/login` and `/api/user/refresh`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    pub token_type: &'static str,
}

/// The claims of an access token, as Sage's client keeps them (`userInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AccessClaims {
    pub userid: String,
    pub username: String,
    pub email: String,
    pub phonenum: String,
    /// "admin" or "user".
    pub role: String,
    pub exp: u64,
    pub iat: u64,
}

/// `GET /api/user/check_login`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginCheck {
    pub user: AccessClaims,
}

/// `POST /api/user/register` and `/api/user/add`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountCreated {
    pub user_id: String,
}

/// One account in the admin's list (never its password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountSummary {
    pub user_id: String,
    /// The same id again: Sage's client deletes by `id`.
    pub id: String,
    pub username: String,
    pub email: String,
    pub phonenum: String,
    pub role: String,
    /// ISO 8601, UTC.
    pub created_at: String,
}

/// `GET /api/user/list`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountList {
    pub items: Vec<AccountSummary>,
    pub total: usize,
}

/// `GET /api/user/options`: one entry per account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountOption {
    pub label: String,
    pub value: String,
}

/// An answer with nothing to say: `{}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Empty {}

/// `GET /api/system/info` (public).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SystemInfo {
    pub allow_registration: bool,
    /// Every route but the public ones needs a token.
    pub auth_required: bool,
    pub version: &'static str,
}

/// What runs spent: totals of the usage ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UsageTotals {
    pub runs: u64,
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// US dollars; null when no run was priced.
    pub cost: Option<f64>,
}

/// One day's spending on one model (and, in the admin's view, by one user).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UsageLine {
    pub day: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub model: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// `GET /api/usage` and `GET /api/usage/all`: the days `from..=to`, by day and model.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    pub total: UsageTotals,
    pub lines: Vec<UsageLine>,
}
