//! Starting a run: resolve the request, take the session's run lock, store the new messages,
//! then drive the agent in the background while the caller streams the stored events.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::agent::{Agent, RunSpec};
use crate::app::AppState;
use crate::config::{Config, split_keys};
use crate::error::{ApiError, now_secs};
use crate::event::{Event, EventType, Role, StoredEvent};
use crate::event_log::{spawn_writer, token_usage_event};
use crate::history::{
    content_as_text, estimate_tokens, fit_to_budget, merge_events, to_model_messages,
};
use crate::llm::LlmSettings;
use crate::request::{InputMessage, LlmModelConfig, StreamRequest};
use crate::store::{SessionRecord, Store};

pub const DEFAULT_USER: &str = "default_user";
const DEFAULT_MAX_LOOP_COUNT: u32 = 50;
const TITLE_CHARS: usize = 50;

pub struct StartedRun {
    pub session_id: String,
    pub events: mpsc::UnboundedReceiver<StoredEvent>,
}

/// The default provider overlaid with the request's `llm_model_config`; 503 without a key.
pub fn resolve_llm(
    config: &Config,
    overrides: Option<&LlmModelConfig>,
) -> Result<LlmSettings, ApiError> {
    let overrides = overrides.cloned().unwrap_or_default();
    let api_keys = match overrides.api_key.as_deref() {
        Some(list) if !split_keys(list).is_empty() => split_keys(list),
        _ => config.default_llm_keys(),
    };
    if api_keys.is_empty() {
        return Err(ApiError::Unavailable(
            "no LLM API key configured: set SAGE_DEFAULT_LLM_API_KEY (--default_llm_api_key) \
             or send llm_model_config.api_key"
                .into(),
        ));
    }
    Ok(LlmSettings {
        base_url: overrides
            .base_url
            .unwrap_or_else(|| config.default_llm_api_base_url.clone()),
        api_keys,
        model: overrides
            .model
            .unwrap_or_else(|| config.default_llm_model_name.clone()),
        max_tokens: overrides
            .max_tokens
            .unwrap_or(config.default_llm_max_tokens),
        temperature: overrides
            .temperature
            .unwrap_or(config.default_llm_temperature),
        top_p: overrides.top_p.unwrap_or(config.default_llm_top_p),
        presence_penalty: overrides
            .presence_penalty
            .unwrap_or(config.default_llm_presence_penalty),
        max_model_len: overrides
            .max_model_len
            .unwrap_or(config.default_llm_max_model_len),
    })
}

fn system_prompt(request: &StreamRequest) -> Option<String> {
    let mut prompt = request.system_prefix.clone().unwrap_or_default();
    if let Some(context) = request.system_context.as_ref().filter(|c| !c.is_empty()) {
        prompt.push_str("\n\nContext:");
        for (key, value) in context {
            let value = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            prompt.push_str(&format!("\n- {key}: {value}"));
        }
    }
    if let Some(workflows) = request
        .available_workflows
        .as_ref()
        .filter(|w| !w.is_empty())
    {
        prompt.push_str("\n\nWorkflows you can follow:");
        for (name, steps) in workflows {
            prompt.push_str(&format!("\n{name}:"));
            for (index, step) in steps.iter().enumerate() {
                prompt.push_str(&format!("\n  {}. {}", index + 1, content_as_text(step)));
            }
        }
    }
    let prompt = prompt.trim().to_owned();
    (!prompt.is_empty()).then_some(prompt)
}

fn title_of(messages: &[InputMessage]) -> String {
    let first = messages
        .iter()
        .find(|message| message.role == "user")
        .map(|message| content_as_text(&message.content))
        .unwrap_or_default();
    let first = first.trim();
    if first.is_empty() {
        return "新会话".into();
    }
    if first.chars().count() > TITLE_CHARS {
        format!("{}...", first.chars().take(TITLE_CHARS).collect::<String>())
    } else {
        first.to_owned()
    }
}

fn input_event(session_id: &str, message: &InputMessage) -> Event {
    let role = match message.role.as_str() {
        "assistant" => Role::Assistant,
        "system" => Role::System,
        "tool" => Role::Tool,
        _ => Role::User,
    };
    let kind = if role == Role::Assistant {
        EventType::FinalAnswer
    } else {
        EventType::Normal
    };
    Event {
        content: Some(message.content.clone()),
        message_id: Some(
            message
                .message_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        ),
        ..Event::new(session_id, role, kind)
    }
}

/// Starts a run. Errors before the stream are plain API errors and change nothing.
pub async fn start_run(
    state: &AppState,
    mut request: StreamRequest,
) -> Result<StartedRun, ApiError> {
    request.validate()?;
    state.presets.apply(&mut request);
    let settings = resolve_llm(&state.config, request.llm_model_config.as_ref())?;
    let user_id = request
        .user_id
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| DEFAULT_USER.to_owned());
    let session_id = request
        .session_id
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());

    let store = state.store.clone();
    if let Some(existing) = store.get_session(&session_id).await?
        && existing.user_id != user_id
    {
        return Err(ApiError::Forbidden(format!(
            "session {session_id} belongs to another user"
        )));
    }
    let run_id = uuid::Uuid::new_v4().to_string();
    if !store
        .try_lock_run(&session_id, &run_id, state.run_lease)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "session {session_id} is already running"
        )));
    }
    match prepare(state, &request, &settings, &session_id, &user_id).await {
        Ok((spec, after_seq)) => {
            let events = launch(state, spec, run_id, after_seq);
            Ok(StartedRun { session_id, events })
        }
        Err(error) => {
            let _ = store.release_run_lock(&session_id, &run_id).await;
            Err(error)
        }
    }
}

async fn prepare(
    state: &AppState,
    request: &StreamRequest,
    settings: &LlmSettings,
    session_id: &str,
    user_id: &str,
) -> Result<(RunSpec, u64), ApiError> {
    let store = &state.store;
    let now = now_secs();
    store
        .create_session(&SessionRecord {
            session_id: session_id.to_owned(),
            user_id: user_id.to_owned(),
            agent_id: request.agent_id.clone(),
            agent_name: request.agent_name.clone(),
            title: title_of(&request.messages),
            created_at: now,
            updated_at: now,
        })
        .await?;
    let mut log = store.events_after(session_id, 0).await?;
    let mut seq = log.last().map_or(0, |stored| stored.seq);
    let inputs: Vec<StoredEvent> = request
        .messages
        .iter()
        .map(|message| {
            seq += 1;
            StoredEvent {
                seq,
                event: input_event(session_id, message),
            }
        })
        .collect();
    store.append_events(session_id, &inputs).await?;
    log.extend(inputs);

    let system_prompt = system_prompt(request);
    let history = to_model_messages(&merge_events(log.iter().map(|stored| &stored.event)));
    let reserved = system_prompt.as_deref().map_or(0, estimate_tokens);
    let budget = u64::from(settings.max_model_len).saturating_sub(reserved);
    let spec = RunSpec {
        session_id: session_id.to_owned(),
        settings: settings.clone(),
        system_prompt,
        history: fit_to_budget(history, budget),
        max_loop_count: request.max_loop_count.unwrap_or(DEFAULT_MAX_LOOP_COUNT),
        deep_thinking: request.deep_thinking.unwrap_or(false),
        available_tools: request.available_tools.clone().unwrap_or_default(),
        registered_servers: crate::mcp_admin::enabled_servers(state, user_id).await?,
        request_servers: request.extra_mcp_config.clone().unwrap_or_default(),
        mcp_policy: state.mcp_policy,
        tool_timeout: Duration::from_secs_f64(state.config.tool_timeout),
    };
    Ok((spec, seq))
}

fn launch(
    state: &AppState,
    spec: RunSpec,
    run_id: String,
    after_seq: u64,
) -> mpsc::UnboundedReceiver<StoredEvent> {
    let (client, events) = mpsc::unbounded_channel();
    let store = state.store.clone();
    let llm = state.llm.clone();
    let pool = state.mcp_pool.clone();
    let lease = state.run_lease;
    let session_id = spec.session_id.clone();
    tokio::spawn(async move {
        let (emitter, writer) =
            spawn_writer(store.clone(), session_id.clone(), after_seq, client.clone());
        let heartbeat = tokio::spawn(keep_lock(
            store.clone(),
            session_id.clone(),
            run_id.clone(),
            lease,
        ));
        let fallback = emitter.clone();
        if let Err(panic) = tokio::spawn(Agent::new(spec, llm, pool, emitter).run()).await {
            tracing::error!(%session_id, error = %panic, "agent run panicked");
            fallback.emit(Event {
                content: Some(Value::String("The agent failed unexpectedly.".into())),
                message_id: Some(uuid::Uuid::new_v4().to_string()),
                ..Event::new(&session_id, Role::Assistant, EventType::Error)
            });
            fallback.emit(token_usage_event(
                &session_id,
                &serde_json::json!({"total_info": {}, "per_step_info": []}),
            ));
        }
        drop(fallback);
        let end = writer.await.ok().flatten();
        heartbeat.abort();
        if let Err(error) = store.touch_session(&session_id, now_secs()).await {
            tracing::warn!(%session_id, %error, "could not update the session's timestamp");
        }
        if let Err(error) = store.release_run_lock(&session_id, &run_id).await {
            tracing::warn!(%session_id, %error, "could not release the run lock; it expires with its lease");
        }
        // Sent last: a client that saw stream_end may start the next run at once.
        if let Some(end) = end {
            let _ = client.send(end);
        }
    });
    events
}

async fn keep_lock(store: Arc<dyn Store>, session_id: String, run_id: String, lease: Duration) {
    let mut ticker = tokio::time::interval(lease / 3);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match store.renew_run_lock(&session_id, &run_id, lease).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(%session_id, "run lock was taken over"),
            Err(error) => tracing::warn!(%session_id, %error, "run lock renewal failed"),
        }
    }
}
