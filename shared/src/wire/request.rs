//! The body of `POST /api/stream` (`api.md` §2).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::mcp::McpServerConfig;
use crate::util::{InputError, SessionId};

/// Where a run's long-term memory lives: with the session, or with the user.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MemoryType {
    Session,
    User,
}

#[derive(Debug, Clone, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct InputMessage {
    #[serde(default)]
    pub message_id: Option<String>,
    pub role: String,
    #[serde(default)]
    pub content: Value,
}

#[derive(Debug, Clone, Default, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct LlmModelConfig {
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub max_model_len: Option<u32>,
}

/// A request's `context_budget_config`: the `--context_*` settings for this run.
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextBudgetConfig {
    pub history_ratio: Option<f64>,
    pub active_ratio: Option<f64>,
    pub max_new_message_ratio: Option<f64>,
    pub recent_turns: Option<u32>,
}

impl ContextBudgetConfig {
    fn validate(&self) -> Result<(), InputError> {
        for (name, ratio) in [
            ("history_ratio", self.history_ratio),
            ("active_ratio", self.active_ratio),
            ("max_new_message_ratio", self.max_new_message_ratio),
        ] {
            if let Some(ratio) = ratio
                && !(0.0..=1.0).contains(&ratio)
            {
                return Err(InputError::Schema {
                    detail: format!("context_budget_config.{name}: must be between 0 and 1"),
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    Simple,
    Multi,
    Fibre,
    /// Sage runs it as simple.
    Auto,
}

impl AgentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Simple => "simple",
            Self::Multi => "multi",
            Self::Fibre => "fibre",
            Self::Auto => "auto",
        }
    }
}

impl StreamRequest {
    /// The mode the run is asked for: `agent_mode`, else Sage's older `multi_agent` flag.
    pub fn requested_mode(&self) -> AgentMode {
        match (self.agent_mode, self.multi_agent) {
            (Some(mode), _) => mode,
            (None, Some(true)) => AgentMode::Multi,
            _ => AgentMode::Simple,
        }
    }

    /// What the request asks for that its run cannot act on, each as a sentence for a `normal`
    /// event at the start of the run.
    pub fn unsupported_options(&self) -> Vec<String> {
        let mut notices = Vec::new();
        if self.requested_mode() != AgentMode::Fibre
            && self
                .available_sub_agent_ids
                .as_ref()
                .is_some_and(|ids| !ids.is_empty())
        {
            notices.push(
                "available_sub_agent_ids acts in agent_mode fibre only: this run has no sub-agents"
                    .into(),
            );
        }
        notices
    }
}

#[derive(Debug, Clone, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamRequest {
    #[schema(min_items = 1)]
    pub messages: Vec<InputMessage>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub system_prefix: Option<String>,
    pub system_context: Option<serde_json::Map<String, Value>>,
    pub available_tools: Option<Vec<String>>,
    /// Skills (`/api/skills`) the model may load.
    pub available_skills: Option<Vec<String>>,
    pub available_knowledge_bases: Option<Vec<String>>,
    pub available_sub_agent_ids: Option<Vec<String>>,
    pub llm_model_config: Option<LlmModelConfig>,
    /// One of the caller's stored providers (`/api/llm-provider`), when `llm_model_config` is
    /// not given.
    pub llm_provider_id: Option<String>,
    pub max_loop_count: Option<u32>,
    pub deep_thinking: Option<bool>,
    pub agent_mode: Option<AgentMode>,
    pub multi_agent: Option<bool>,
    pub more_suggest: Option<bool>,
    pub force_summary: Option<bool>,
    pub context_budget_config: Option<ContextBudgetConfig>,
    pub memory_type: Option<MemoryType>,
    pub available_workflows: Option<BTreeMap<String, Vec<Value>>>,
    pub extra_mcp_config: Option<BTreeMap<String, McpServerConfig>>,
    /// Tools that run only once the session's owner approves the call
    /// (`POST /api/sessions/{id}/approve`); the agent's own list is added to these.
    pub tools_requiring_approval: Option<Vec<String>>,
}

impl StreamRequest {
    pub fn validate(&self) -> Result<(), InputError> {
        if self.messages.is_empty() {
            return Err(InputError::Invalid("messages must not be empty".into()));
        }
        for (index, message) in self.messages.iter().enumerate() {
            if !matches!(
                message.role.as_str(),
                "user" | "assistant" | "system" | "tool"
            ) {
                return Err(InputError::Schema {
                    detail: format!(
                        "messages[{index}].role: expected one of user, assistant, system, tool"
                    ),
                });
            }
        }
        if let Some(session_id) = &self.session_id
            && !session_id.is_empty()
        {
            SessionId::parse(session_id)?;
        }
        if let Some(context) = &self.context_budget_config {
            context.validate()?;
        }
        if self.max_loop_count == Some(0) {
            return Err(InputError::Schema {
                detail: "max_loop_count: must be at least 1".into(),
            });
        }
        if let Some((name, _)) = self
            .extra_mcp_config
            .iter()
            .flatten()
            .find(|(_, config)| config.oauth.is_some())
        {
            return Err(InputError::Schema {
                detail: format!(
                    "extra_mcp_config.{name}.oauth: a server with OAuth is added with /api/mcp/add, where its user authorizes it"
                ),
            });
        }
        Ok(())
    }
}

/// `POST /api/sessions/{session_id}/approve`: the owner's decision on the calls a paused run
/// holds. A decision covers every waiting call; `edit` replaces the arguments of one of them
/// (`tool_call_id`, needed when several wait) and approves the rest.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// `approve`, `reject` or `edit`.
    pub decision: String,
    /// The approval decided (from the `tool_approval_request` event); a stale one is refused.
    pub approval_id: Option<String>,
    /// `edit`: the call whose arguments change.
    pub tool_call_id: Option<String>,
    /// `edit`: the arguments the call runs with instead of the model's (an object).
    pub arguments: Option<Value>,
    /// `reject`: why, for the model.
    pub reason: Option<String>,
}
