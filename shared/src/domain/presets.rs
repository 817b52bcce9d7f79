//! Agent presets (`--preset_running_config`): shared, read-only agents (`domain::agents`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::wire::MemoryType;
use crate::wire::{AgentMode, LlmModelConfig};

/// The id of the agent offered when there is no preset file.
pub const BUILTIN_AGENT_ID: &str = "default";

/// The system prompt of the built-in agent, and the one a new agent starts from.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant. Think through the task, \
use the tools you are given when they help, and answer clearly and concisely in the user's \
language.";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentPreset {
    pub name: Option<String>,
    pub system_prefix: Option<String>,
    pub system_context: Option<serde_json::Map<String, Value>>,
    pub available_tools: Option<Vec<String>>,
    pub available_workflows: Option<BTreeMap<String, Vec<Value>>>,
    pub memory_type: Option<MemoryType>,
    pub deep_thinking: Option<bool>,
    pub agent_mode: Option<AgentMode>,
    pub max_loop_count: Option<u32>,
    #[serde(rename = "llm_model_config")]
    pub llm_model_config: Option<LlmModelConfig>,
    /// Tools whose calls wait for the session owner's approval.
    #[serde(default, alias = "tools_requiring_approval")]
    pub tools_requiring_approval: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid agent preset file: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Default)]
pub struct AgentPresets {
    agents: HashMap<String, AgentPreset>,
}

impl AgentPresets {
    /// A missing file means one built-in agent (a log line, not an error): Sage's client shows no
    /// input box without an agent to pick. A malformed file is an error.
    pub fn load(path: &Path) -> Result<Self, PresetError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(
                    path = %path.display(),
                    "no agent preset file; offering the built-in agent `{BUILTIN_AGENT_ID}`"
                );
                return Ok(Self::builtin());
            }
            Err(source) => {
                return Err(PresetError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::parse(&text).map_err(|source| PresetError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// The one agent offered when there is no preset file.
    pub fn builtin() -> Self {
        let agent = AgentPreset {
            name: Some("Sage".into()),
            system_prefix: Some(DEFAULT_SYSTEM_PROMPT.into()),
            ..AgentPreset::default()
        };
        Self {
            agents: HashMap::from([(BUILTIN_AGENT_ID.to_owned(), agent)]),
        }
    }

    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let raw: serde_json::Map<String, Value> = serde_json::from_str(text)?;
        let single = raw.contains_key("systemPrefix") || raw.contains_key("systemContext");
        let agents = if single {
            HashMap::from([(
                "default".to_owned(),
                serde_json::from_value(Value::Object(raw))?,
            )])
        } else {
            raw.into_iter()
                .map(|(id, value)| Ok((id, serde_json::from_value(value)?)))
                .collect::<Result<_, serde_json::Error>>()?
        };
        Ok(Self { agents })
    }

    pub fn get(&self, agent_id: &str) -> Option<&AgentPreset> {
        self.agents.get(agent_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &AgentPreset)> {
        self.agents.iter()
    }
}
