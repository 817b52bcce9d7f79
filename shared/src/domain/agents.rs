//! Agents: the presets from `--preset_running_config` (shared, read-only) and the ones users
//! save (`/api/agent/*`). A run that names an agent takes its name, prompt, context, tools,
//! workflows and memory type over the request's, and its deep thinking, mode, suggestions and
//! loop cap where the request left them unset (`sage-client.md` §0.2).

use std::sync::Arc;

use crate::domain::DomainError;
use crate::domain::knowledge::Knowledge;
use crate::domain::presets::{AgentPreset, AgentPresets, DEFAULT_SYSTEM_PROMPT};
use crate::domain::providers::Providers;
use crate::domain::skills::Skills;
use crate::store::{AgentRecord, AgentStore};
use crate::util::{InputError, UserId, iso_time, now_secs};
use crate::wire::StreamRequest;
use crate::wire::agent::{AgentConfig, AgentSaved, AgentView, PromptTemplate};

const MAX_NAME_CHARS: usize = 64;
const MAX_DESCRIPTION_CHARS: usize = 2_000;
const MAX_PROMPT_CHARS: usize = 100_000;
const MAX_TOOLS: usize = 500;
const MAX_LOOP_COUNT: u32 = 1_000;
const MAX_SKILLS: usize = 50;
/// Sub-agents a fibre run starts with (as many as a run may spawn).
const MAX_SUB_AGENTS: usize = 16;

/// Agent settings, checked: a name of 1 to 64 characters, bounded texts and lists, and nothing
/// this service cannot act on yet (knowledge bases, sub-agents).
#[derive(Debug, Clone)]
pub struct ValidAgent(AgentConfig);

impl ValidAgent {
    pub fn parse(mut config: AgentConfig) -> Result<Self, InputError> {
        config.name = config.name.trim().to_owned();
        let invalid = |message: &str| Err(InputError::Invalid(message.to_owned()));
        if config.name.is_empty() || config.name.chars().count() > MAX_NAME_CHARS {
            return invalid("name: 1 to 64 characters");
        }
        if config.name.chars().any(char::is_control) {
            return invalid("name: no control characters");
        }
        if config.description.chars().count() > MAX_DESCRIPTION_CHARS {
            return invalid("description: at most 2,000 characters");
        }
        if config
            .system_prefix
            .as_ref()
            .is_some_and(|prompt| prompt.chars().count() > MAX_PROMPT_CHARS)
        {
            return invalid("systemPrefix: at most 100,000 characters");
        }
        if config.available_tools.len() > MAX_TOOLS {
            return invalid("availableTools: at most 500 names");
        }
        if config.tools_requiring_approval.len() > MAX_TOOLS {
            return invalid("toolsRequiringApproval: at most 500 names");
        }
        if config
            .max_loop_count
            .is_some_and(|count| count == 0 || count > MAX_LOOP_COUNT)
        {
            return invalid("maxLoopCount: 1 to 1,000");
        }
        if config.available_skills.len() > MAX_SKILLS {
            return invalid("availableSkills: at most 50 names");
        }
        if config.available_knowledge_bases.len() > MAX_SKILLS {
            return invalid("availableKnowledgeBases: at most 50 ids");
        }
        if config.available_sub_agent_ids.len() > MAX_SUB_AGENTS {
            return invalid("availableSubAgentIds: at most 16 agent ids");
        }
        config.llm_provider_id = config.llm_provider_id.filter(|id| !id.is_empty());
        Ok(Self(config))
    }
}

#[derive(Clone)]
pub struct Agents {
    store: Arc<dyn AgentStore>,
    presets: Arc<AgentPresets>,
    providers: Providers,
    skills: Skills,
    knowledge: Knowledge,
}

impl Agents {
    pub fn new(
        store: Arc<dyn AgentStore>,
        presets: Arc<AgentPresets>,
        providers: Providers,
        skills: Skills,
        knowledge: Knowledge,
    ) -> Self {
        Self {
            store,
            presets,
            providers,
            skills,
            knowledge,
        }
    }

    /// An agent may name only its owner's providers and knowledge bases, and skills the owner
    /// can load.
    async fn check_references(
        &self,
        owner: &UserId,
        agent: &ValidAgent,
    ) -> Result<(), DomainError> {
        self.skills
            .check_reachable(owner, &agent.0.available_skills, "availableSkills")
            .await?;
        self.knowledge
            .for_run(owner.as_str(), &agent.0.available_knowledge_bases)
            .await
            .map_err(|error| match error {
                DomainError::NotFound(message) => DomainError::NotFound(
                    message.replace("available_knowledge_bases", "availableKnowledgeBases"),
                ),
                other => other,
            })?;
        self.sub_agent_configs(
            owner,
            &agent.0.available_sub_agent_ids,
            "availableSubAgentIds",
        )
        .await?;
        match agent.0.llm_provider_id.as_deref() {
            Some(provider_id) if !self.providers.exists(owner, provider_id).await? => {
                Err(DomainError::NotFound(format!(
                    "llm_provider_id: you have no provider {provider_id}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The presets, then the caller's own agents (an admin's list has everyone's), by name.
    pub async fn list(&self, caller: &UserId, admin: bool) -> Result<Vec<AgentView>, DomainError> {
        let mut views: Vec<AgentView> = self
            .presets
            .iter()
            .map(|(id, preset)| AgentView {
                id: id.clone(),
                user_id: String::new(),
                config: preset_config(id, preset),
                created_at: String::new(),
                updated_at: String::new(),
            })
            .collect();
        views.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        let saved = if admin {
            self.store.all_agents().await?
        } else {
            self.store.owner_agents(caller.as_str()).await?
        };
        for record in saved {
            views.push(view(record)?);
        }
        Ok(views)
    }

    pub async fn create(
        &self,
        owner: &UserId,
        agent: ValidAgent,
    ) -> Result<AgentSaved, DomainError> {
        self.check_references(owner, &agent).await?;
        let now = now_secs();
        let record = AgentRecord {
            agent_id: format!("agent_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            owner: owner.to_string(),
            name: agent.0.name.clone(),
            config: serde_json::to_value(&agent.0).map_err(crate::store::StoreError::from)?,
            created_at: now,
            updated_at: now,
        };
        if self.store.insert_agent(&record).await? {
            Ok(AgentSaved {
                agent_id: record.agent_id,
            })
        } else {
            Err(name_taken(&record.name))
        }
    }

    /// Replaces a saved agent's settings; its owner's or an admin's to change.
    pub async fn update(
        &self,
        caller: &UserId,
        admin: bool,
        agent_id: &str,
        agent: ValidAgent,
    ) -> Result<AgentSaved, DomainError> {
        let stored = self.editable(caller, admin, agent_id).await?;
        self.check_references(&UserId::new(stored.owner.clone()), &agent)
            .await?;
        let record = AgentRecord {
            name: agent.0.name.clone(),
            config: serde_json::to_value(&agent.0).map_err(crate::store::StoreError::from)?,
            updated_at: now_secs(),
            ..stored
        };
        if self.store.replace_agent(&record).await? {
            Ok(AgentSaved {
                agent_id: record.agent_id,
            })
        } else {
            Err(name_taken(&record.name))
        }
    }

    pub async fn delete(
        &self,
        caller: &UserId,
        admin: bool,
        agent_id: &str,
    ) -> Result<(), DomainError> {
        self.editable(caller, admin, agent_id).await?;
        self.store.delete_agent(agent_id).await?;
        Ok(())
    }

    pub fn default_system_prompt(&self) -> PromptTemplate {
        PromptTemplate {
            content: DEFAULT_SYSTEM_PROMPT,
        }
    }

    /// Applies the agent the request names, which must be a preset or the caller's own: a
    /// missing one is 404, someone else's 403.
    pub async fn apply(
        &self,
        caller: &UserId,
        request: &mut StreamRequest,
    ) -> Result<(), DomainError> {
        let Some(agent_id) = request.agent_id.clone().filter(|id| !id.is_empty()) else {
            return Ok(());
        };
        if let Some(preset) = self.presets.get(&agent_id) {
            apply_preset(preset, request);
            return Ok(());
        }
        let record = self
            .store
            .agent(&agent_id)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("agent_id: no agent {agent_id}")))?;
        if record.owner != caller.as_str() {
            return Err(DomainError::Forbidden(format!(
                "agent_id: agent {agent_id} belongs to another user"
            )));
        }
        let config: AgentConfig =
            serde_json::from_value(record.config).map_err(crate::store::StoreError::from)?;
        apply_config(config, request);
        Ok(())
    }

    /// The agents `ids` name, each a preset or one of the caller's own: a missing one is 404,
    /// someone else's 403, both naming `field`.
    async fn sub_agent_configs(
        &self,
        caller: &UserId,
        ids: &[String],
        field: &str,
    ) -> Result<Vec<(String, AgentConfig)>, DomainError> {
        if ids.len() > MAX_SUB_AGENTS {
            return Err(DomainError::invalid(format!(
                "{field}: at most {MAX_SUB_AGENTS} agent ids"
            )));
        }
        let mut configs = Vec::new();
        for id in ids {
            let config = if let Some(preset) = self.presets.get(id) {
                preset_config(id, preset)
            } else {
                let record = self
                    .store
                    .agent(id)
                    .await?
                    .ok_or_else(|| DomainError::NotFound(format!("{field}: no agent {id}")))?;
                if record.owner != caller.as_str() {
                    return Err(DomainError::Forbidden(format!(
                        "{field}: agent {id} belongs to another user"
                    )));
                }
                let mut config: AgentConfig = serde_json::from_value(record.config)
                    .map_err(crate::store::StoreError::from)?;
                config.name = record.name;
                config
            };
            configs.push((id.clone(), config));
        }
        Ok(configs)
    }

    /// The agents a fibre run starts with (`available_sub_agent_ids`).
    #[cfg(feature = "mcp")]
    pub async fn sub_agents(
        &self,
        caller: &UserId,
        ids: &[String],
    ) -> Result<Vec<crate::agent::SubAgent>, DomainError> {
        Ok(self
            .sub_agent_configs(caller, ids, "available_sub_agent_ids")
            .await?
            .into_iter()
            .map(|(id, config)| crate::agent::SubAgent {
                id,
                name: config.name,
                description: config.description,
                system_prompt: config.system_prefix.unwrap_or_default(),
            })
            .collect())
    }

    async fn editable(
        &self,
        caller: &UserId,
        admin: bool,
        agent_id: &str,
    ) -> Result<AgentRecord, DomainError> {
        if self.presets.get(agent_id).is_some() {
            return Err(DomainError::Forbidden(format!(
                "agent {agent_id} is a preset: presets are read-only"
            )));
        }
        let stored = self
            .store
            .agent(agent_id)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("no agent {agent_id}")))?;
        if stored.owner != caller.as_str() && !admin {
            return Err(DomainError::Forbidden(format!(
                "agent {agent_id} belongs to another user"
            )));
        }
        Ok(stored)
    }
}

fn name_taken(name: &str) -> DomainError {
    DomainError::Conflict(format!("name: you already have an agent named {name}"))
}

fn view(record: AgentRecord) -> Result<AgentView, DomainError> {
    let mut config: AgentConfig =
        serde_json::from_value(record.config).map_err(crate::store::StoreError::from)?;
    config.name = record.name;
    Ok(AgentView {
        id: record.agent_id,
        user_id: record.owner,
        config,
        created_at: iso_time(record.created_at),
        updated_at: iso_time(record.updated_at),
    })
}

fn preset_config(id: &str, preset: &AgentPreset) -> AgentConfig {
    AgentConfig {
        name: preset.name.clone().unwrap_or_else(|| id.to_owned()),
        system_prefix: preset.system_prefix.clone(),
        system_context: preset.system_context.clone(),
        available_tools: preset.available_tools.clone().unwrap_or_default(),
        available_workflows: preset.available_workflows.clone(),
        memory_type: preset.memory_type,
        agent_mode: preset.agent_mode,
        deep_thinking: preset.deep_thinking,
        max_loop_count: preset.max_loop_count,
        tools_requiring_approval: preset.tools_requiring_approval.clone(),
        ..AgentConfig::default()
    }
}

fn apply_preset(preset: &AgentPreset, request: &mut StreamRequest) {
    let preset = preset.clone();
    replace(&mut request.agent_name, preset.name);
    replace(&mut request.system_prefix, preset.system_prefix);
    replace(&mut request.system_context, preset.system_context);
    replace(&mut request.available_tools, preset.available_tools);
    replace(&mut request.available_workflows, preset.available_workflows);
    replace(&mut request.memory_type, preset.memory_type);
    fill(&mut request.deep_thinking, preset.deep_thinking);
    fill(&mut request.agent_mode, preset.agent_mode);
    fill(&mut request.max_loop_count, preset.max_loop_count);
    fill(&mut request.llm_model_config, preset.llm_model_config);
    require_approval(request, preset.tools_requiring_approval);
}

fn apply_config(config: AgentConfig, request: &mut StreamRequest) {
    request.agent_name = Some(config.name);
    replace(&mut request.system_prefix, config.system_prefix);
    replace(&mut request.system_context, config.system_context);
    request.available_tools = Some(config.available_tools);
    request.available_skills = Some(config.available_skills);
    if !config.available_knowledge_bases.is_empty() {
        request.available_knowledge_bases = Some(config.available_knowledge_bases);
    }
    if !config.available_sub_agent_ids.is_empty() {
        request.available_sub_agent_ids = Some(config.available_sub_agent_ids);
    }
    replace(&mut request.available_workflows, config.available_workflows);
    replace(&mut request.memory_type, config.memory_type);
    fill(&mut request.deep_thinking, config.deep_thinking);
    fill(&mut request.agent_mode, config.agent_mode);
    fill(&mut request.more_suggest, config.more_suggest);
    fill(&mut request.max_loop_count, config.max_loop_count);
    fill(&mut request.llm_provider_id, config.llm_provider_id);
    require_approval(request, config.tools_requiring_approval);
}

/// The agent's approval list adds to the request's: a request never runs fewer calls unapproved.
fn require_approval(request: &mut StreamRequest, agent: Vec<String>) {
    if agent.is_empty() {
        return;
    }
    let list = request.tools_requiring_approval.get_or_insert_default();
    for name in agent {
        if !list.contains(&name) {
            list.push(name);
        }
    }
}

/// The agent's setting wins where it has one.
fn replace<T>(slot: &mut Option<T>, agent: Option<T>) {
    if agent.is_some() {
        *slot = agent;
    }
}

/// The request's setting wins where it has one.
fn fill<T>(slot: &mut Option<T>, agent: Option<T>) {
    if slot.is_none() {
        *slot = agent;
    }
}
