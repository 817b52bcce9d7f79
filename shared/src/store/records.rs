//! What the stores keep, as the domain sees it.

use crate::util::now_secs;
use crate::wire::mcp::{McpServerConfig, ToolSpec};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    #[default]
    Idle,
    Running,
    Interrupted,
    Error,
    /// Paused on tool calls that wait for the owner's approval; nothing runs meanwhile.
    #[serde(rename = "awaiting_approval")]
    AwaitingApproval,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Interrupted => "interrupted",
            Self::Error => "error",
            Self::AwaitingApproval => "awaiting_approval",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "running" => Self::Running,
            "interrupted" => Self::Interrupted,
            "error" => Self::Error,
            "awaiting_approval" => Self::AwaitingApproval,
            _ => Self::Idle,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub session_id: String,
    pub user_id: String,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub title: String,
    pub created_at: f64,
    pub updated_at: f64,
    pub message_count: u64,
    pub user_count: u64,
    pub agent_count: u64,
    /// The conversation's text, for search (bounded).
    pub search_text: String,
    /// How the last run ended (`running` while one runs).
    pub status: RunStatus,
    /// The sequence number of the log's last event when the last run ended.
    pub log_seq: u64,
    /// A fibre run's sub-session: the conversation it works for. Such sessions are not listed
    /// among the user's conversations and go when it goes.
    pub parent_session_id: Option<String>,
}

/// What a finished run leaves on its session: the counts, search text, status and log position
/// its transcript gives. Nothing else of the session (its title, its agent) is the run's to set.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTally {
    pub message_count: u64,
    pub user_count: u64,
    pub agent_count: u64,
    pub search_text: String,
    pub status: RunStatus,
    pub log_seq: u64,
    pub updated_at: f64,
}

impl RunTally {
    pub fn apply_to(&self, session: &mut SessionRecord) {
        session.message_count = self.message_count;
        session.user_count = self.user_count;
        session.agent_count = self.agent_count;
        session.search_text.clone_from(&self.search_text);
        session.status = self.status;
        session.log_seq = self.log_seq;
        session.updated_at = self.updated_at;
    }
}

impl SessionRecord {
    pub fn new(session_id: &str, user_id: &str, title: &str) -> Self {
        let now = now_secs();
        Self {
            session_id: session_id.to_owned(),
            user_id: user_id.to_owned(),
            agent_id: None,
            agent_name: None,
            title: title.to_owned(),
            created_at: now,
            updated_at: now,
            message_count: 0,
            user_count: 0,
            agent_count: 0,
            search_text: String::new(),
            status: RunStatus::Idle,
            log_seq: 0,
            parent_session_id: None,
        }
    }
}

/// A session's run lock as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLock {
    pub run_id: String,
    pub expires_at: f64,
    pub cancel_requested: bool,
}

impl RunLock {
    pub fn is_live(&self) -> bool {
        self.expires_at > now_secs()
    }
}

/// What an `Idempotency-Key` is bound to.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    /// The caller's user id and the key, joined: keys are per user.
    pub key: String,
    pub request_hash: String,
    pub session_id: String,
    /// Sequence number of the run's first streamed event, once the run has started.
    pub first_seq: Option<u64>,
    pub created_at: f64,
}

/// A run paused on tool calls that wait for the session owner's decision: at most one per
/// session, taken by exactly one decision.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingApprovalRecord {
    pub session_id: String,
    pub approval_id: String,
    pub user_id: String,
    pub created_at: f64,
    pub expires_at: f64,
    /// When the sweep looks at it: an approval's expiry; a checkpoint's lease after it was saved.
    pub due_at: f64,
    /// What the run's continuation needs (the domain's JSON): its request and the held turn.
    pub state: String,
}

/// A registered MCP server with the tools it listed when last reached.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerRecord {
    /// The user it belongs to; `SHARED_OWNER` for the preset servers everyone may use.
    pub owner: String,
    pub name: String,
    pub config: McpServerConfig,
    pub tools: Vec<ToolSpec>,
    pub last_error: Option<String>,
    pub updated_at: f64,
}

/// An MCP OAuth authorization in progress: the user was sent to the authorization server and
/// its callback names this record by the OAuth `state`. Accepted once, until `expires_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct McpAuthorizationRecord {
    pub state: String,
    pub owner: String,
    pub server: String,
    /// The PKCE verifier and the client, sealed: only this server's key opens it.
    pub sealed: String,
    pub expires_at: f64,
}

/// A user's OAuth credentials for one of their MCP servers, sealed. `version` grows with each
/// write, which is conditional on the version read; `refreshing_until` is the lease of the one
/// instance refreshing them.
#[derive(Debug, Clone, PartialEq)]
pub struct McpCredentialsRecord {
    pub owner: String,
    pub server: String,
    pub sealed: String,
    pub version: u64,
    pub refreshing_until: f64,
    pub updated_at: f64,
}

/// One long-term memory of a user, under a key unique per user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserMemoryRecord {
    pub user_id: String,
    pub key: String,
    pub content: String,
    /// preference, requirement, persona, constraint, ... (validated by the domain).
    pub memory_type: String,
    pub tags: Vec<String>,
    pub created_at: f64,
    pub updated_at: f64,
}

/// A session's summary and how far into its event log it reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRecord {
    pub session_id: String,
    pub summary: String,
    /// The sequence number of the last event the summary covers.
    pub covers_seq: u64,
    pub created_at: f64,
}

/// A person who can log in. `username` and `email` are unique across accounts, compared
/// case-insensitively (the store keeps their lowercase forms as login keys).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
    /// 32 lowercase hex digits.
    pub user_id: String,
    pub username: String,
    pub email: Option<String>,
    pub phonenum: Option<String>,
    /// "admin" or "user" (validated by the domain).
    pub role: String,
    /// Argon2id, in the PHC string format.
    pub password_hash: String,
    /// Raised when the password or role changes: tokens issued before then stop working.
    pub token_generation: u64,
    pub created_at: f64,
}

impl AccountRecord {
    /// The lowercase names the account can log in with.
    pub fn login_keys(&self) -> Vec<String> {
        std::iter::once(&self.username)
            .chain(self.email.as_ref())
            .map(|name| name.to_lowercase())
            .collect()
    }
}

/// An unused refresh token: each is accepted once.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshTokenRecord {
    pub token_id: String,
    pub user_id: String,
    pub expires_at: f64,
}

/// Settings an admin changes at run time (`POST /api/system/update_settings`); unset fields
/// fall back to the configuration.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SystemSettingsRecord {
    pub allow_registration: Option<bool>,
    pub updated_at: f64,
}

/// An agent a user saved: its settings as the client edits them, kept whole as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    /// `agent_` and 8 hex digits.
    pub agent_id: String,
    pub owner: String,
    /// Unique per owner.
    pub name: String,
    pub config: serde_json::Value,
    pub created_at: f64,
    pub updated_at: f64,
}

/// A skill: a named package of instructions (and files) an agent can load. Names are unique
/// across all owners; owner "" is a system skill.
#[derive(Debug, Clone, PartialEq)]
pub struct SkillRecord {
    pub name: String,
    pub owner: String,
    pub description: String,
    /// The instructions and files, kept whole as JSON.
    pub package: serde_json::Value,
    pub created_at: f64,
    pub updated_at: f64,
}

/// A knowledge base and its documents, kept together: one record per base, written whole under
/// an optimistic `revision` (the indexing job and the routes both change documents).
#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeBaseRecord {
    pub id: String,
    pub owner: String,
    pub name: String,
    /// `document` or `qa`.
    pub kind: String,
    pub intro: String,
    pub language: String,
    pub documents: Vec<KnowledgeDocRecord>,
    /// Bumped by the store on each write.
    pub revision: u64,
    pub created_at: f64,
    pub updated_at: f64,
}

impl KnowledgeBaseRecord {
    /// Whether a document waits for the indexing job (or is being indexed).
    pub fn has_pending(&self) -> bool {
        self.documents
            .iter()
            .any(|document| matches!(document.status, DocStatus::Waiting | DocStatus::Running))
    }
}

/// Sage's document states: 0 waiting, 1 being indexed, 2 indexed, 3 failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum DocStatus {
    Waiting,
    Running,
    Indexed,
    Failed,
}

impl From<DocStatus> for u8 {
    fn from(status: DocStatus) -> Self {
        match status {
            DocStatus::Waiting => 0,
            DocStatus::Running => 1,
            DocStatus::Indexed => 2,
            DocStatus::Failed => 3,
        }
    }
}

impl TryFrom<u8> for DocStatus {
    type Error = String;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Self::Waiting),
            1 => Ok(Self::Running),
            2 => Ok(Self::Indexed),
            3 => Ok(Self::Failed),
            other => Err(format!("document status {other}")),
        }
    }
}

/// One uploaded document of a knowledge base; its bytes are in the object store at `object_key`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnowledgeDocRecord {
    pub id: String,
    pub name: String,
    pub object_key: String,
    pub size: u64,
    pub status: DocStatus,
    /// Indexing attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed, in words for the user.
    #[serde(default)]
    pub error: Option<String>,
    pub task_id: String,
    /// Passages indexed.
    #[serde(default)]
    pub passages: u32,
    pub created_at: f64,
    pub updated_at: f64,
}

/// A user's own LLM provider. Its API keys are kept sealed (encrypted by the domain); the rest
/// of its settings as the client sent them.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRecord {
    pub provider_id: String,
    pub owner: String,
    pub config: serde_json::Value,
    pub sealed_keys: String,
    pub created_at: f64,
    pub updated_at: f64,
}

/// One run's model usage, recorded once: keyed by its session and the sequence number of the
/// run's `token_usage` event, and written in the same store write as that event, so the ledger
/// and the transcript agree and a replay or resume never counts twice.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UsageRecord {
    pub user_id: String,
    pub session_id: String,
    pub seq: u64,
    pub run_id: String,
    /// The UTC day it was recorded, `YYYY-MM-DD`.
    pub day: String,
    pub model: String,
    /// Model calls the run made.
    pub calls: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// US dollars, when the model was priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    pub recorded_at: f64,
}
