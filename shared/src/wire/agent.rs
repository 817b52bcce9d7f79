//! An agent as Sage's client edits it (`/api/agent/*`): its settings, camelCase as the client
//! sends them, and the record the list shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::request::{AgentMode, MemoryType};

/// What an agent sets for the runs that name it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub system_prefix: Option<String>,
    #[serde(default)]
    pub system_context: Option<Map<String, Value>>,
    #[serde(default)]
    pub available_tools: Vec<String>,
    #[serde(default)]
    pub available_skills: Vec<String>,
    #[serde(default)]
    pub available_knowledge_bases: Vec<String>,
    #[serde(default)]
    pub available_sub_agent_ids: Vec<String>,
    #[serde(default)]
    pub available_workflows: Option<BTreeMap<String, Vec<Value>>>,
    #[serde(default)]
    pub memory_type: Option<MemoryType>,
    #[serde(default)]
    pub agent_mode: Option<AgentMode>,
    #[serde(default)]
    pub deep_thinking: Option<bool>,
    #[serde(default)]
    pub more_suggest: Option<bool>,
    #[serde(default)]
    pub max_loop_count: Option<u32>,
    #[serde(default, rename = "llm_provider_id")]
    pub llm_provider_id: Option<String>,
}

/// An agent in `GET /api/agent/list`: a preset (`user_id` "", read-only) or a saved one.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub id: String,
    pub user_id: String,
    #[serde(flatten)]
    pub config: AgentConfig,
    /// ISO 8601; empty for presets.
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /api/agent/create`, `PUT /api/agent/{id}`
#[derive(Debug, Serialize)]
pub struct AgentSaved {
    pub agent_id: String,
}

/// `GET /api/agent/template/default_system_prompt`
#[derive(Debug, Serialize)]
pub struct PromptTemplate {
    pub content: &'static str,
}
