//! Agent presets (`--preset_running_config`): an `agent_id` in a request fills its unset fields.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::wire::MemoryType;
use crate::wire::{AgentMode, LlmModelConfig, StreamRequest};

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
    /// A missing file means no presets (a log line, not an error); a malformed one is an error.
    pub fn load(path: &Path) -> Result<Self, PresetError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no agent preset file; running without presets");
                return Ok(Self::default());
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

    /// Fills the fields the request left unset from its agent's preset.
    pub fn apply(&self, request: &mut StreamRequest) {
        let Some(preset) = request.agent_id.as_ref().and_then(|id| self.agents.get(id)) else {
            return;
        };
        let preset = preset.clone();
        fill(&mut request.agent_name, preset.name);
        fill(&mut request.system_prefix, preset.system_prefix);
        fill(&mut request.system_context, preset.system_context);
        fill(&mut request.available_tools, preset.available_tools);
        fill(&mut request.available_workflows, preset.available_workflows);
        fill(&mut request.memory_type, preset.memory_type);
        fill(&mut request.deep_thinking, preset.deep_thinking);
        fill(&mut request.agent_mode, preset.agent_mode);
        fill(&mut request.max_loop_count, preset.max_loop_count);
        fill(&mut request.llm_model_config, preset.llm_model_config);
    }
}

fn fill<T>(slot: &mut Option<T>, preset: Option<T>) {
    if slot.is_none() {
        *slot = preset;
    }
}
