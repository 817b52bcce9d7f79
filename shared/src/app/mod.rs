//! Wiring: builds the backends from the configuration, then the domain services over them, then
//! the routers with their middleware; owns the background tasks and the drain on shutdown.

#[cfg(feature = "lambda-relay")]
mod relay;
#[cfg(feature = "ssm")]
mod ssm;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;

use crate::blob::{BlobError, ObjectStore, open_objects};
use crate::config::{AuthConfig, Config};
use crate::domain::DomainError;
use crate::domain::accounts::{AccountPolicy, Accounts, TokenKeys};
#[cfg(feature = "llm")]
use crate::domain::agent_drafts::AgentDrafts;
use crate::domain::agents::Agents;
use crate::domain::files::Files;
use crate::domain::health::{Dependencies, HealthCheck};
use crate::domain::knowledge::Knowledge;
use crate::domain::memory::Memories;
#[cfg(feature = "llm")]
use crate::domain::model::resolve_llm;
use crate::domain::presets::AgentPresets;
use crate::domain::presets::PresetError;
use crate::domain::providers::{KeySealer, Providers};
#[cfg(feature = "mcp")]
use crate::domain::runs::{AfterRun, RunDefaults, RunStores, Runs};
use crate::domain::sessions::Sessions;
use crate::domain::skills::Skills;
#[cfg(feature = "llm")]
use crate::domain::summaries::Summaries;
#[cfg(feature = "mcp")]
use crate::domain::tools_admin::{SessionWorkspaces, ToolsAdmin};
use crate::domain::usage::Usage;
use crate::http::routes;
use crate::http::{Documented, Limits, with_middleware, with_timeout};
#[cfg(feature = "llm")]
use crate::jobs::{JobReport, JobRequest, SummaryJob};
#[cfg(feature = "llm")]
use crate::llm::{ChatModel, OpenAiCompatible};
use crate::search::{SearchError, SearchIndex, TextEmbedder, open_search};
#[cfg(feature = "mcp")]
use crate::store::EventSink;
use crate::store::{Store, StoreError, open_store};
#[cfg(feature = "mcp")]
use crate::tools::{McpOAuth, McpPolicy, McpPool};
#[cfg(feature = "mcp")]
use crate::util::sealing::Sealer;

/// How long one timer-driven summary job may take (the next tick waits for it).
#[cfg(feature = "llm")]
const TIMER_JOB_TIME: Duration = Duration::from_secs(300);

/// Every service of one process, built once; each function serves some of them.
#[derive(Clone)]
pub struct App {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    sessions: Sessions,
    memories: Memories,
    skills: Skills,
    files: Files,
    knowledge: Knowledge,
    usage: Usage,
    accounts: Accounts,
    agents: Agents,
    providers: Providers,
    health: HealthCheck,
    #[cfg(feature = "mcp")]
    tools: ToolsAdmin,
    #[cfg(feature = "mcp")]
    runs: Runs,
    #[cfg(feature = "llm")]
    summary_job: SummaryJob,
    #[cfg(feature = "llm")]
    drafts: AgentDrafts,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("object storage")]
    Objects(#[from] BlobError),
    #[error("search")]
    Search(#[from] SearchError),
    #[cfg(feature = "otel")]
    #[error("traces")]
    Traces(#[from] crate::telemetry::TraceError),
    #[cfg(feature = "llm")]
    #[error("HTTP client")]
    Http(#[from] reqwest::Error),
    #[error("agent presets")]
    Presets(#[from] PresetError),
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot create the first admin account")]
    Admin(#[source] DomainError),
    #[error("cannot read the key in SSM parameter `{name}`: {reason}")]
    KeyParameter { name: String, reason: String },
}

impl App {
    /// Opens the configured store and builds every service. A build with the `ssm` feature (the
    /// functions that call the model) reads the LLM key parameter here; the others never need
    /// the key's value.
    pub async fn from_config(
        #[allow(unused_mut)] mut config: Config,
    ) -> Result<Self, StartupError> {
        #[cfg(feature = "ssm")]
        if config.llm.api_key.is_none()
            && let Some(name) = config.llm.api_key_parameter.clone()
        {
            config.llm.api_key = Some(read_key_parameter(&name).await?);
        }
        #[cfg(feature = "ssm")]
        if config.auth.jwt_key.is_none()
            && let Some(name) = config.auth.jwt_key_parameter.clone()
        {
            let key = read_key_parameter(&name).await?;
            config
                .auth
                .set_jwt_key(key)
                .map_err(|reason| StartupError::KeyParameter { name, reason })?;
        }
        let objects = open_objects(&config.blob, &config.server.workspace).await?;
        let store = open_store(&config.store, objects.clone()).await?;
        let search = open_search(&config.search, &config.server.workspace).await?;
        Self::with_store(config, store, objects, search)
    }

    /// Creates the first admin (`--admin_username`) unless it exists; a generated password is
    /// logged this once. Called by what serves the account routes (sage-local, Session).
    pub async fn ensure_admin(&self) -> Result<(), StartupError> {
        let auth = &self.config.auth;
        let generated = self
            .accounts
            .ensure_admin(&auth.admin_username, auth.admin_password.as_ref())
            .await
            .map_err(StartupError::Admin)?;
        if let Some(password) = generated {
            tracing::warn!(
                username = %auth.admin_username,
                password = %secrecy::ExposeSecret::expose_secret(&password),
                "created the first admin account with a generated password: log in and change \
                 it (POST /api/user/change-password); it is not shown again"
            );
        }
        Ok(())
    }

    /// Must be called inside a tokio runtime.
    pub fn with_store(
        config: Config,
        store: Arc<dyn Store>,
        objects: Arc<dyn ObjectStore>,
        search: Arc<dyn SearchIndex>,
    ) -> Result<Self, StartupError> {
        // Every reqwest client (the model's, MCP servers', traces') needs the provider first.
        #[cfg(feature = "llm")]
        crate::util::tls::install_crypto_provider();
        for setting in &config.inert {
            tracing::warn!("{setting}");
        }
        let ratios = config.context.context_history_ratio
            + config.context.context_active_ratio
            + config.context.context_max_new_message_ratio;
        if (ratios - 1.0).abs() > 0.01 {
            tracing::warn!(
                "the context ratios (history {}, active {}, new message {}) add up to {ratios:.2}, \
                 not 1: prompts may leave the model too little or too much room",
                config.context.context_history_ratio,
                config.context.context_active_ratio,
                config.context.context_max_new_message_ratio,
            );
        }
        if config.llm.keys().is_empty() && config.llm.api_key_parameter.is_none() {
            tracing::warn!(
                "no LLM API key configured: set SAGE_DEFAULT_LLM_API_KEY (--default_llm_api_key); \
                 /api/stream answers 503 unless a request brings llm_model_config.api_key"
            );
        }
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let files = Files::new(objects.clone());
        let sessions = Sessions::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            files.clone(),
            search.clone(),
        );
        let memories = Memories::new(
            store.clone(),
            config.search.es_url.is_some().then(|| search.clone()),
        );
        let downloads = crate::util::DownloadPolicy {
            allow_private: config.tools.download_allow_private,
            max_bytes: config.tools.download_max_bytes,
        };
        let skills = Skills::new(store.clone(), downloads);
        let usage = Usage::new(store.clone(), config.budget);
        #[cfg(feature = "llm")]
        let embedder = crate::search::Embedder::from_config(&config.search)
            .map(|embedder| Arc::new(embedder) as Arc<dyn TextEmbedder>);
        #[cfg(not(feature = "llm"))]
        let embedder: Option<Arc<dyn TextEmbedder>> = None;
        let knowledge = Knowledge::new(store.clone(), objects.clone(), search.clone(), embedder);
        let accounts = accounts(&config.auth, store.clone())?;
        let providers = Providers::new(
            store.clone(),
            config.auth.jwt_key.as_ref().map(KeySealer::new),
        );
        let agents = Agents::new(
            store.clone(),
            Arc::new(AgentPresets::load(&config.server.preset_running_config)?),
            providers.clone(),
            skills.clone(),
            knowledge.clone(),
        );
        let health = HealthCheck::new(Dependencies {
            store: store.clone(),
            store_label: format!("{:?}", config.store.db_type),
            objects: objects.clone(),
            search,
            vectors: match &config.search.embedding_base_url {
                Some(url) => format!("vectors: {} from {url}", config.search.embedding_model),
                None => "text only: no --embedding_base_url".into(),
            },
            llm_base_url: config.llm.base_url.clone(),
            llm_has_key: !config.llm.keys().is_empty() || config.llm.api_key_parameter.is_some(),
        });
        #[cfg(feature = "llm")]
        let llm: Arc<dyn ChatModel> = Arc::new(OpenAiCompatible::new(
            config.llm.connect_timeout,
            config.llm.idle_timeout,
            config.llm.max_retries,
        )?);
        #[cfg(feature = "llm")]
        let drafts = AgentDrafts::new(llm.clone(), config.llm.clone(), providers.clone());
        #[cfg(feature = "llm")]
        let summary_job = SummaryJob {
            sessions: store.clone(),
            due: store.clone(),
            summaries: Summaries::new(store.clone(), store.clone(), store.clone(), llm.clone()),
        };
        #[cfg(feature = "mcp")]
        let (tools, runs) = {
            let oauth = McpOAuth::new(
                store.clone(),
                config
                    .auth
                    .jwt_key
                    .as_ref()
                    .map(|key| Sealer::new(key, b"sage-functions/mcp-oauth")),
            );
            let pool = Arc::new(McpPool::new(config.tools.timeout).with_oauth(oauth.clone()));
            let policy = McpPolicy {
                allow_stdio: config.tools.mcp_allow_stdio,
                allow_link_local: config.tools.mcp_allow_link_local,
            };
            let code = code_sandbox(&config.tools)?;
            if !code.is_available() {
                tracing::info!("the code tools are off: no code sandbox (--code_sandbox)");
            }
            let tools = ToolsAdmin::new(
                store.clone(),
                pool.clone(),
                oauth,
                policy,
                config.tools.timeout,
                config.server.preset_mcp_config.clone(),
                SessionWorkspaces {
                    sessions: store.clone(),
                    objects: objects.clone(),
                    downloads,
                    code: code.clone(),
                },
            )
            .with_public_url(config.tools.public_url.clone());
            let runs = Runs::new(
                RunStores {
                    sessions: store.clone(),
                    events: store.clone(),
                    control: store.clone(),
                    summaries: store.clone(),
                    lifecycle: store.clone(),
                    sink: EventSink::new(store.clone())
                        .with_pack_window(config.store.event_pack_window()),
                },
                RunDefaults {
                    llm: config.llm.clone(),
                    context: crate::context::ContextSettings {
                        history_ratio: config.context.context_history_ratio,
                        active_ratio: config.context.context_active_ratio,
                        max_new_message_ratio: config.context.context_max_new_message_ratio,
                        recent_turns: config.context.context_recent_turns,
                    },
                    force_summary: config.context.force_summary,
                    memory_type: config.context.memory_type,
                    after_run: if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
                        AfterRun::BeforeStreamEnd
                    } else {
                        AfterRun::AfterStreamEnd
                    },
                    lease: config.server.run_lease,
                    approval_timeout: config.server.approval_timeout,
                    run_deadline: config.server.run_deadline,
                    tool_timeout: config.tools.timeout,
                    mcp_policy: policy,
                    code,
                    downloads,
                    limits: config.limits,
                    prices: config.pricing.price_table.clone(),
                },
                agents.clone(),
                providers.clone(),
                llm,
                pool,
                tools.clone(),
                sessions.clone(),
                memories.clone(),
                skills.clone(),
                knowledge.clone(),
                usage.clone(),
                run_relay(),
                shutdown.clone(),
                tasks.clone(),
            );
            (tools, runs)
        };
        Ok(Self {
            config: Arc::new(config),
            store,
            sessions,
            memories,
            skills,
            files,
            knowledge,
            usage,
            accounts,
            agents,
            providers,
            health,
            #[cfg(feature = "mcp")]
            tools,
            #[cfg(feature = "mcp")]
            runs,
            #[cfg(feature = "llm")]
            summary_job,
            #[cfg(feature = "llm")]
            drafts,
            shutdown,
            tasks,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The whole backend, for tools and tests that inspect what was stored.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Work that goes on after start-up: registering the preset MCP servers, and the jobs on
    /// their timers (`--knowledge_index_interval_seconds`, `--summary_interval_seconds`,
    /// `--run_sweep_seconds`).
    pub fn start_background_tasks(&self) {
        #[cfg(feature = "mcp")]
        {
            let tools = self.tools.clone();
            self.tasks
                .spawn(async move { tools.register_presets().await });
        }
        // On Lambda the schedules invoke the Jobs function; a frozen function keeps no timer.
        #[cfg(feature = "llm")]
        if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
            if let Some(interval) = self.config.search.knowledge_index_interval() {
                self.spawn_job_timer("index", interval, true);
            }
            if let Some(interval) = self.config.context.summary_interval() {
                self.spawn_job_timer("summarize", interval, false);
            }
            #[cfg(feature = "mcp")]
            if let Some(interval) = self.config.server.run_sweep_interval() {
                self.spawn_job_timer("runs", interval, true);
            }
        }
    }

    /// Runs `job` every `interval` until shutdown (at once too, when `at_start`), logging what
    /// each run did.
    #[cfg(feature = "llm")]
    fn spawn_job_timer(&self, job: &'static str, interval: Duration, at_start: bool) {
        let app = self.clone();
        self.tasks.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            if !at_start {
                ticks.tick().await;
            }
            loop {
                tokio::select! {
                    _ = app.shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let request = JobRequest {
                    job: job.into(),
                    ..JobRequest::default()
                };
                match app.run_job_request(&request, TIMER_JOB_TIME).await {
                    Ok(report) if report.did_nothing() => {
                        tracing::debug!(job, running = report.running.len(), "nothing to do")
                    }
                    Ok(report) => tracing::info!(
                        job,
                        report = %serde_json::to_string(&report).unwrap_or_default(),
                        "job done"
                    ),
                    Err(error) => {
                        tracing::warn!(job, error = %crate::telemetry::chain(&error), "job failed")
                    }
                }
            }
        });
    }

    /// Runs the job a payload asks for (`jobs::JobRequest`), within `time_left`.
    #[cfg(feature = "llm")]
    pub async fn run_job(
        &self,
        payload: serde_json::Value,
        time_left: Duration,
    ) -> Result<JobReport, DomainError> {
        use tracing::Instrument;
        let request = JobRequest::parse(payload)?;
        let report = self
            .run_job_request(&request, time_left)
            .instrument(tracing::info_span!("job"))
            .await;
        crate::telemetry::flush_traces().await;
        report
    }

    #[cfg(feature = "llm")]
    async fn run_job_request(
        &self,
        request: &JobRequest,
        time_left: Duration,
    ) -> Result<JobReport, DomainError> {
        if request.job == "index" {
            return crate::jobs::run_index_job(&self.knowledge, request, time_left).await;
        }
        if request.job == "runs" {
            let relay = self.paused_run_relay().ok_or_else(|| {
                DomainError::Unavailable(
                    "the runs job continues runs in the Stream function: set \
                     STREAM_FUNCTION_NAME to its name (template.yaml does)"
                        .into(),
                )
            })?;
            return crate::jobs::run_runs_job(
                self.store.as_ref(),
                relay.as_ref(),
                request,
                time_left,
            )
            .await;
        }
        let settings = resolve_llm(&self.config.llm, None)?;
        // What one summary call usually needs; a call still going at the deadline is cut off.
        let per_session = Duration::from_secs(10);
        self.summary_job
            .run(request, &settings, time_left, per_session)
            .await
    }

    /// What continues a paused run: this process's runs (through their own relay in Lambda);
    /// without them (the Jobs function), a fresh invocation of the Stream function.
    #[cfg(feature = "llm")]
    fn paused_run_relay(&self) -> Option<Arc<dyn crate::domain::paused_runs::RunRelay>> {
        #[cfg(feature = "mcp")]
        {
            Some(Arc::new(self.runs.clone()))
        }
        #[cfg(not(feature = "mcp"))]
        {
            stream_function_relay()
        }
    }

    /// Waits up to `grace` for the background work started so far (a `runs` job's
    /// continuations in `sage-local jobs`), without interrupting it.
    pub async fn finish_background_work(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "background work still running at the end of the wait"
            );
        }
    }

    /// Stops this process's runs as an interrupt would (each ends with its tail), then waits up
    /// to `grace` for them and every other background task to finish.
    pub async fn shut_down(&self, grace: Duration) {
        self.begin_shutdown();
        self.finish_background_work(grace).await;
        crate::telemetry::flush_traces().await;
    }

    /// The first half of [`App::shut_down`]: interrupts the runs and stops the watchers.
    pub fn begin_shutdown(&self) {
        #[cfg(feature = "mcp")]
        {
            let stopped = self.runs.interrupt_all();
            if stopped > 0 {
                tracing::info!(runs = stopped, "shutting down: interrupting running runs");
            }
        }
        self.shutdown.cancel();
    }

    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.config.server.max_body_bytes,
        }
    }

    /// The routes and their document, with what every `Caller` needs to check a token.
    fn finish(&self, routes: Documented) -> Router {
        let routes = routes.into_router();
        let routes = routes.layer(axum::Extension(self.accounts.clone()));
        #[cfg(feature = "lambda")]
        let routes = routes.layer(axum::middleware::from_fn(
            crate::http::gateway::gateway_identity,
        ));
        let routes = with_middleware(routes, self.limits());
        // Outermost, so that the request's own span has ended when the spans are sent; only in
        // Lambda, where a process is frozen between invocations.
        #[cfg(feature = "lambda")]
        let routes = if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
            routes.layer(axum::middleware::from_fn(
                crate::http::gateway::flush_traces_after,
            ))
        } else {
            routes
        };
        routes
    }

    /// Routes that do not stream, with the request timeout.
    fn timed(&self, routes: OpenApiRouter) -> Documented {
        Documented::new(routes.split_for_parts())
            .map_routes(|routes| with_timeout(routes, self.config.server.request_timeout))
    }

    fn session_routes(&self) -> Documented {
        let routes = routes::session::router(self.sessions.clone())
            .merge(routes::memory::router(self.memories.clone()))
            .merge(routes::accounts::router(self.accounts.clone()))
            .merge(routes::agents::router(self.agents.clone()))
            .merge(routes::providers::router(self.providers.clone()))
            .merge(routes::skills::router(self.skills.clone()))
            .merge(routes::knowledge::router(self.knowledge.clone()))
            .merge(routes::files::router(self.files.clone()))
            .merge(routes::usage::router(self.usage.clone()));
        #[cfg(feature = "llm")]
        let routes = routes.merge(routes::agents::drafts_router(self.drafts.clone()));
        self.timed(routes)
    }

    fn health_routes(&self) -> Documented {
        self.timed(routes::health::router(self.health.clone()))
    }

    #[cfg(feature = "mcp")]
    fn mcp_admin_routes(&self) -> Documented {
        self.timed(routes::mcp_admin::router(self.tools.clone()))
    }

    #[cfg(feature = "mcp")]
    fn stream_routes(&self) -> Documented {
        Documented::new(
            routes::stream::router(self.runs.clone(), self.config.server.sse_ping)
                .split_for_parts(),
        )
    }
}

/// The account service with its keys: the configured secrets, or with auth off and no
/// `--jwt_key`, a secret made up for this process (tokens then end with it).
fn accounts(
    auth: &AuthConfig,
    store: Arc<dyn crate::store::AccountStore>,
) -> Result<Accounts, StartupError> {
    if auth.no_auth {
        tracing::warn!(
            "authentication is OFF (--no_auth true, Sage's default): a request without a token \
             acts as the user_id it names. Run with --no_auth false and --jwt_key for anything \
             reachable by others"
        );
    }
    let jwt_key = auth.jwt_key.clone().unwrap_or_else(|| {
        // A build that does not read SSM names the parameter only because every function
        // shares one environment; it serves no route that takes a token.
        if auth.jwt_key_parameter.is_none() {
            tracing::warn!(
                "no --jwt_key: tokens from /api/user/login are signed with a key made up for \
                 this process and stop working when it ends"
            );
        }
        random_secret()
    });
    let refresh_key = auth
        .refresh_token_secret
        .clone()
        .unwrap_or_else(|| jwt_key.clone());
    let keys = TokenKeys::new(
        &jwt_key,
        &refresh_key,
        auth.jwt_expire_hours,
        auth.refresh_token_expire_hours,
    );
    let policy = AccountPolicy {
        auth_required: !auth.no_auth,
        allow_registration: auth.allow_registration,
    };
    let accounts = Accounts::new(store, keys, policy);
    let Some(url) = auth.jwt_jwks_url.clone() else {
        return Ok(accounts);
    };
    #[cfg(feature = "llm")]
    {
        let verifier =
            crate::domain::accounts::JwksVerifier::new(url, auth.jwt_jwks_issuer.clone())?;
        Ok(accounts.with_identity_provider(verifier))
    }
    #[cfg(not(feature = "llm"))]
    {
        let _ = (url, accounts);
        Err(StartupError::Unsupported(
            "--jwt_jwks_url: this function has no HTTP client to read the keys with; behind API \
             Gateway use its Cognito or JWT authorizer (the functions trust its claims)"
                .into(),
        ))
    }
}

/// Sets up logging, and span export to `--trace_jaeger_url` unless `--enable_trace false`; a
/// function built without traces (Health) says so instead. Call once, from within the tokio
/// runtime, before [`App::from_config`].
pub fn init_telemetry(config: &Config) -> Result<(), StartupError> {
    let url = config
        .trace
        .trace_jaeger_url
        .as_deref()
        .filter(|_| config.trace.enable_trace);
    let Some(url) = url else {
        crate::telemetry::init_logging();
        return Ok(());
    };
    #[cfg(feature = "otel")]
    {
        let service =
            std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "sage-local".into());
        crate::telemetry::init_logging_with_traces(url, &service)?;
        tracing::info!(url, service, "sending traces over OTLP/HTTP");
    }
    #[cfg(not(feature = "otel"))]
    {
        crate::telemetry::init_logging();
        tracing::warn!(
            url,
            "this function is built without traces: --trace_jaeger_url is not used here"
        );
    }
    Ok(())
}

fn random_secret() -> SecretString {
    let bytes: String = (0..2)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    SecretString::from(bytes)
}

#[cfg(feature = "ssm")]
async fn read_key_parameter(name: &str) -> Result<SecretString, StartupError> {
    ssm::read_parameter(name)
        .await
        .map_err(|reason| StartupError::KeyParameter {
            name: name.to_owned(),
            reason,
        })
}

/// The Stream function: `/api/stream` and its aliases, and resume.
#[cfg(feature = "mcp")]
pub fn stream_router(app: App) -> Router {
    app.finish(app.stream_routes())
}

/// Where a handed-off run continues: in a Lambda function with the relay, a fresh invocation
/// of the same function; elsewhere, this process.
#[cfg(feature = "mcp")]
fn run_relay() -> Option<Arc<dyn crate::domain::runs::RunRelay>> {
    #[cfg(feature = "lambda-relay")]
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
        && let Ok(function) = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
    {
        return Some(Arc::new(relay::LambdaRelay::new(&function)));
    }
    None
}

/// The Jobs function's way to the Stream function (`STREAM_FUNCTION_NAME`), for the `runs` job.
#[cfg(all(feature = "llm", not(feature = "mcp")))]
fn stream_function_relay() -> Option<Arc<dyn crate::domain::paused_runs::RunRelay>> {
    #[cfg(feature = "lambda-relay")]
    if let Ok(function) = std::env::var("STREAM_FUNCTION_NAME") {
        return Some(Arc::new(relay::LambdaRelay::new(&function)));
    }
    None
}

/// The MCP-admin function.
#[cfg(feature = "mcp")]
pub fn mcp_admin_router(app: App) -> Router {
    app.finish(app.mcp_admin_routes())
}

/// The Session function.
pub fn session_router(app: App) -> Router {
    app.finish(app.session_routes())
}

/// The Health function.
pub fn health_router(app: App) -> Router {
    app.finish(app.health_routes())
}

/// Every function on one router: what the local shim serves.
#[cfg(feature = "mcp")]
pub fn local_router(app: App) -> Router {
    let routes = app
        .stream_routes()
        .merge(app.mcp_admin_routes())
        .merge(app.session_routes())
        .merge(app.health_routes());
    app.finish(routes)
}

/// Where the code tools run, from `--code_sandbox`: bubblewrap here, or the sandbox function.
#[cfg(feature = "mcp")]
fn code_sandbox(
    tools: &crate::config::ToolsConfig,
) -> Result<crate::tools::CodeSandbox, StartupError> {
    use crate::config::CodeSandboxMode;
    let function = tools.code_sandbox_function.as_deref();
    if tools.code_sandbox != CodeSandboxMode::Lambda {
        if function.is_some() {
            return Err(StartupError::Unsupported(
                "--code_sandbox_function names the sandbox function of --code_sandbox lambda; \
                 this server's code sandbox is another"
                    .into(),
            ));
        }
        return crate::tools::CodeSandbox::resolve(
            tools.code_sandbox,
            tools.code_timeout,
            tools.code_memory_mb,
            tools.code_network,
        )
        .map_err(|missing| StartupError::Unsupported(missing.to_string()));
    }
    let Some(function) = function else {
        return Err(StartupError::Unsupported(
            "--code_sandbox lambda needs --code_sandbox_function, the sandbox function's name"
                .into(),
        ));
    };
    if tools.code_network {
        return Err(StartupError::Unsupported(
            "--code_network does not apply to --code_sandbox lambda: the sandbox function's \
             network is its own (infra/DEPLOY.md)"
                .into(),
        ));
    }
    #[cfg(feature = "lambda-sandbox")]
    {
        Ok(crate::tools::CodeSandbox::in_function(
            crate::sandbox::SandboxFunction::new(function),
            tools.code_timeout,
            tools.code_memory_mb,
        ))
    }
    #[cfg(not(feature = "lambda-sandbox"))]
    {
        Err(StartupError::Unsupported(format!(
            "--code_sandbox lambda ({function}): this build has no sandbox function client \
             (the `lambda-sandbox` feature)"
        )))
    }
}
