//! The application state every function builds once, and the routers built from it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::config::Config;
use crate::llm::{ChatModel, OpenAiCompatible};
use crate::mcp::{McpPolicy, McpPool};
use crate::presets::{AgentPresets, PresetError};
use crate::routes;
use crate::store::{EventSink, Store, StoreError, open_store};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub llm: Arc<dyn ChatModel>,
    pub presets: Arc<AgentPresets>,
    pub mcp_pool: Arc<McpPool>,
    /// Where runs append their events (batched across runs when the store gains from it).
    pub event_sink: EventSink,
    /// Watches the cancel flags of this process's runs.
    pub run_watch: Arc<crate::run::RunWatch>,
    pub mcp_policy: McpPolicy,
    /// How long a run's lock lives without a heartbeat.
    pub run_lease: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("agent presets: {0}")]
    Presets(#[from] PresetError),
    #[error("cannot read the LLM API key from SSM parameter `{name}`: {reason}")]
    KeyParameter { name: String, reason: String },
}

impl AppState {
    pub async fn from_config(mut config: Config) -> Result<Self, StartupError> {
        if config.default_llm_api_key.is_none()
            && let Some(name) = config.default_llm_api_key_parameter.clone()
        {
            config.default_llm_api_key = Some(read_key_parameter(&name).await?);
        }
        let store = open_store(&config).await?;
        Self::with_store(config, store)
    }

    /// Work that goes on after start-up: registering the preset MCP servers.
    pub fn start_background_tasks(&self) {
        let state = self.clone();
        tokio::spawn(async move { crate::mcp_admin::register_presets(&state).await });
    }

    pub fn with_store(config: Config, store: Arc<dyn Store>) -> Result<Self, StartupError> {
        if config.default_llm_keys().is_empty() {
            tracing::warn!(
                "no LLM API key configured: set SAGE_DEFAULT_LLM_API_KEY (--default_llm_api_key); \
                 /api/stream answers 503 unless a request brings llm_model_config.api_key"
            );
        }
        let llm = OpenAiCompatible::new(
            Duration::from_secs_f64(config.llm_connect_timeout),
            Duration::from_secs_f64(config.llm_idle_timeout),
            config.llm_max_retries,
        )?;
        let presets = AgentPresets::load(&config.preset_running_config)?;
        let tool_timeout = Duration::from_secs_f64(config.tool_timeout);
        let config_lease = config.run_lease_seconds;
        let mcp_policy = McpPolicy {
            allow_stdio: config.mcp_allow_stdio,
            allow_link_local: config.mcp_allow_link_local,
        };
        Ok(Self {
            config: Arc::new(config),
            event_sink: EventSink::new(store.clone()),
            run_watch: crate::run::RunWatch::start(store.clone()),
            store,
            llm: Arc::new(llm),
            presets: Arc::new(presets),
            mcp_pool: Arc::new(McpPool::new(tool_timeout)),
            mcp_policy,
            run_lease: Duration::from_secs_f64(config_lease),
        })
    }
}

/// Reads a SecureString parameter (decrypted). Region, credentials and endpoint come from the
/// standard AWS environment (`AWS_REGION`, the role, `AWS_ENDPOINT_URL_SSM`).
async fn read_key_parameter(name: &str) -> Result<String, StartupError> {
    let failure = |reason: String| StartupError::KeyParameter {
        name: name.to_owned(),
        reason,
    };
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let output = aws_sdk_ssm::Client::new(&shared)
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|error| failure(aws_sdk_ssm::error::DisplayErrorContext(&error).to_string()))?;
    output
        .parameter
        .and_then(|parameter| parameter.value)
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| failure("the parameter has no value".into()))
}

/// The Stream function: `/api/stream` and its aliases.
pub fn stream_router(state: AppState) -> Router {
    routes::stream::router()
        .with_state(state)
        .fallback(not_found)
}

/// The MCP-admin function.
pub fn mcp_admin_router(state: AppState) -> Router {
    routes::mcp_admin::router()
        .with_state(state)
        .fallback(not_found)
}

/// The Session function.
pub fn session_router(state: AppState) -> Router {
    routes::session::router()
        .with_state(state)
        .fallback(not_found)
}

/// The Health function.
pub fn health_router(state: AppState) -> Router {
    routes::health::router()
        .with_state(state)
        .fallback(not_found)
}

/// Every function on one router: what the local shim serves.
pub fn local_router(state: AppState) -> Router {
    routes::stream::router()
        .merge(routes::mcp_admin::router())
        .merge(routes::session::router())
        .merge(routes::health::router())
        .with_state(state)
        .fallback(not_found)
}

async fn not_found() -> impl IntoResponse {
    let body = serde_json::json!({
        "code": 404,
        "message": "no such route",
        "error_detail": null,
        "timestamp": crate::error::now_secs(),
    });
    (StatusCode::NOT_FOUND, axum::Json(body))
}
