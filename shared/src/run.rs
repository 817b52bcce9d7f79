//! Starting a run: resolve the request, take the session's run lock, store the new messages,
//! then drive the agent in the background while the caller streams the stored events.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, RunOutcome, RunSpec};
use crate::app::AppState;
use crate::config::{Config, split_keys};
use crate::error::{ApiError, now_secs};
use crate::event::{Event, EventType, Role, StoredEvent};
use crate::event_log::{spawn_writer, token_usage_event};
use crate::follow::follow;
use crate::history::{
    content_as_text, estimate_tokens, fit_to_budget, merge_events, to_model_messages,
};
use crate::llm::LlmSettings;
use crate::request::{InputMessage, LlmModelConfig, StreamRequest};
use crate::store::{
    IdempotencyRecord, RunStatus, SEARCH_TEXT_LIMIT, SessionRecord, Store, StoreError,
};

pub const DEFAULT_USER: &str = "default_user";
const DEFAULT_MAX_LOOP_COUNT: u32 = 50;
const TITLE_CHARS: usize = 50;

pub struct StartedRun {
    pub session_id: String,
    /// Sequence number of the run's first streamed event.
    pub first_seq: u64,
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

/// A client's `Idempotency-Key` and the hash of the request body it came with.
pub struct Idempotency {
    pub key: String,
    pub body_hash: String,
}

/// Starts a run. Errors before the stream are plain API errors and change nothing. With an
/// idempotency key seen before (same body), the caller is attached to that run instead.
pub async fn start_run(
    state: &AppState,
    mut request: StreamRequest,
    idempotency: Option<Idempotency>,
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
    let Some(idempotency) = idempotency else {
        return begin(state, &request, &settings, &user_id, &session_id, None).await;
    };
    let record = IdempotencyRecord {
        key: format!("{user_id}\n{}", idempotency.key),
        request_hash: idempotency.body_hash,
        session_id: session_id.clone(),
        first_seq: None,
        created_at: now_secs(),
    };
    if let Some(existing) = state.store.claim_idempotency_key(&record).await? {
        if existing.request_hash != record.request_hash {
            return Err(ApiError::Conflict(
                "this Idempotency-Key was already used with a different request".into(),
            ));
        }
        return reattach(state, existing).await;
    }
    let started = begin(
        state,
        &request,
        &settings,
        &user_id,
        &session_id,
        Some(&record.key),
    )
    .await;
    if started.is_err() {
        let _ = state.store.release_idempotency_key(&record.key).await;
    }
    started
}

/// The same request again: stream the run it started, from its first event.
async fn reattach(state: &AppState, existing: IdempotencyRecord) -> Result<StartedRun, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut record = Some(existing);
    loop {
        match &record {
            Some(IdempotencyRecord {
                first_seq: Some(first_seq),
                session_id,
                ..
            }) => {
                let events = follow(state.store.clone(), session_id.clone(), first_seq - 1);
                return Ok(StartedRun {
                    session_id: session_id.clone(),
                    first_seq: *first_seq,
                    events,
                });
            }
            Some(pending) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                record = state.store.get_idempotency_key(&pending.key).await?;
            }
            Some(_) => {
                return Err(ApiError::Conflict(
                    "the request with this Idempotency-Key is still starting; retry shortly".into(),
                ));
            }
            None => {
                return Err(ApiError::Conflict(
                    "the request with this Idempotency-Key failed before it started; \
                     send it again with a new key"
                        .into(),
                ));
            }
        }
    }
}

async fn begin(
    state: &AppState,
    request: &StreamRequest,
    settings: &LlmSettings,
    user_id: &str,
    session_id: &str,
    idempotency_key: Option<&str>,
) -> Result<StartedRun, ApiError> {
    let store = state.store.clone();
    if let Some(existing) = store.get_session(session_id).await?
        && existing.user_id != user_id
    {
        return Err(ApiError::Forbidden(format!(
            "session {session_id} belongs to another user"
        )));
    }
    let run_id = uuid::Uuid::new_v4().to_string();
    if !store
        .try_lock_run(session_id, &run_id, state.run_lease)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "session {session_id} is already running"
        )));
    }
    let prepared = async {
        let (spec, after_seq) = prepare(state, request, settings, session_id, user_id).await?;
        if let Some(key) = idempotency_key {
            store.set_idempotency_first_seq(key, after_seq + 1).await?;
        }
        Ok::<_, ApiError>((spec, after_seq))
    }
    .await;
    match prepared {
        Ok((spec, after_seq)) => Ok(StartedRun {
            session_id: session_id.to_owned(),
            first_seq: after_seq + 1,
            events: launch(state, spec, run_id, after_seq),
        }),
        Err(error) => {
            let _ = store.release_run_lock(session_id, &run_id).await;
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
    let mut session = SessionRecord::new(session_id, user_id, &title_of(&request.messages));
    session.agent_id = request.agent_id.clone();
    session.agent_name = request.agent_name.clone();
    store.create_session(&session).await?;
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
    let sink = state.event_sink.clone();
    let watch = state.run_watch.clone();
    let llm = state.llm.clone();
    let pool = state.mcp_pool.clone();
    let lease = state.run_lease;
    let session_id = spec.session_id.clone();
    tokio::spawn(async move {
        let cancel = CancellationToken::new();
        let (emitter, writer) = spawn_writer(
            sink,
            session_id.clone(),
            after_seq,
            client.clone(),
            cancel.clone(),
        );
        watch.register(&session_id, &run_id, cancel);
        let supervisor = tokio::spawn(keep_lease(
            store.clone(),
            session_id.clone(),
            run_id.clone(),
            lease,
        ));
        let fallback = emitter.clone();
        let outcome = match tokio::spawn(Agent::new(spec, llm, pool, emitter).run()).await {
            Ok(outcome) => outcome,
            Err(panic) => {
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
                RunOutcome::Failed
            }
        };
        drop(fallback);
        let end = writer.await.ok().flatten();
        supervisor.abort();
        watch.unregister(&session_id, &run_id);
        if let Err(error) = finish_session(store.as_ref(), &session_id, outcome).await {
            tracing::warn!(%session_id, %error, "could not update the session after its run");
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

const CANCEL_POLL: Duration = Duration::from_millis(250);

/// Watches the durable cancel flags of every run in this process with one store read per tick,
/// whatever the number of runs; any instance may set a flag.
pub struct RunWatch {
    runs: std::sync::Mutex<std::collections::HashMap<String, (String, CancellationToken)>>,
}

impl RunWatch {
    /// Must be called inside a tokio runtime.
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let watch = Arc::new(Self {
            runs: Default::default(),
        });
        let weak = Arc::downgrade(&watch);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(CANCEL_POLL);
            loop {
                ticker.tick().await;
                let Some(watch) = weak.upgrade() else { return };
                let sessions: Vec<String> = watch.lock().keys().cloned().collect();
                if sessions.is_empty() {
                    continue;
                }
                match store.cancel_requests(&sessions).await {
                    Ok(flagged) => {
                        let runs = watch.lock();
                        for (session_id, run_id) in flagged {
                            if let Some((current, token)) = runs.get(&session_id)
                                && *current == run_id
                            {
                                tracing::info!(%session_id, "run interrupted");
                                token.cancel();
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cancel flag check failed"),
                }
            }
        });
        watch
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (String, CancellationToken)>>
    {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self, session_id: &str, run_id: &str, token: CancellationToken) {
        self.lock()
            .insert(session_id.to_owned(), (run_id.to_owned(), token));
    }

    fn unregister(&self, session_id: &str, run_id: &str) {
        let mut runs = self.lock();
        if runs
            .get(session_id)
            .is_some_and(|(current, _)| current == run_id)
        {
            runs.remove(session_id);
        }
    }
}

/// Keeps the run's lease alive while it runs.
async fn keep_lease(store: Arc<dyn Store>, session_id: String, run_id: String, lease: Duration) {
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

/// Keeps the session's counts, search text and status true after a run.
pub async fn finish_session(
    store: &dyn Store,
    session_id: &str,
    outcome: RunOutcome,
) -> Result<(), StoreError> {
    let Some(mut session) = store.get_session(session_id).await? else {
        return Ok(());
    };
    let log = store.events_after(session_id, 0).await?;
    let merged = merge_events(log.iter().map(|stored| &stored.event));
    session.user_count = merged.iter().filter(|m| m.role == Role::User).count() as u64;
    session.agent_count = merged.iter().filter(|m| m.role == Role::Assistant).count() as u64;
    session.message_count = session.user_count + session.agent_count;
    let mut search_text = String::new();
    for message in merged.iter().filter(|m| m.role != Role::Tool) {
        let text = content_as_text(&message.content);
        if search_text.len() + text.len() + 1 > SEARCH_TEXT_LIMIT {
            break;
        }
        search_text.push_str(&text);
        search_text.push('\n');
    }
    session.search_text = search_text;
    session.status = match outcome {
        RunOutcome::Completed => RunStatus::Idle,
        RunOutcome::Interrupted => RunStatus::Interrupted,
        RunOutcome::Failed => RunStatus::Error,
    };
    session.updated_at = now_secs();
    store.update_session(&session).await
}
