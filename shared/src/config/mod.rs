//! One typed configuration for every function and the local shim: sections flattened into one
//! clap command.
//!
//! Every setting is a CLI flag and an environment variable (clap), CLI beats env beats default.
//! Flag and variable names follow Sage's configuration guide so existing deployments keep working.

mod inert;
mod prices;

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

pub use crate::wire::MemoryType;
pub use inert::InertSetting;
pub use prices::{ModelPrice, PriceTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DbType {
    File,
    Memory,
    Mysql,
    Dynamodb,
}

/// Where the code tools run (`--code_sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CodeSandboxMode {
    /// bubblewrap when `bwrap` is on the PATH; otherwise the code tools are off.
    Auto,
    /// bubblewrap, which must be installed: start-up fails without it.
    Bwrap,
    /// The code tools are off: every call answers that this server runs no code.
    Off,
    /// The sandbox function named by `--code_sandbox_function` runs them (the cloud).
    Lambda,
}

fn ratio(value: &str) -> Result<f64, String> {
    let parsed: f64 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    if (0.0..=1.0).contains(&parsed) {
        Ok(parsed)
    } else {
        Err(format!("`{value}` is not between 0 and 1"))
    }
}

/// Seconds, where 0 turns the thing off.
fn seconds_or_never(value: &str) -> Result<Duration, String> {
    if value.trim().parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    seconds(value)
}

fn seconds(value: &str) -> Result<Duration, String> {
    let parsed: f64 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    if parsed > 0.0 && parsed.is_finite() {
        Duration::try_from_secs_f64(parsed).map_err(|error| format!("`{value}`: {error}"))
    } else {
        Err(format!("`{value}` must be a positive number of seconds"))
    }
}

fn hours(value: &str) -> Result<Duration, String> {
    let parsed: f64 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    if parsed > 0.0 && parsed.is_finite() {
        Duration::try_from_secs_f64(parsed * 3600.0).map_err(|error| format!("`{value}`: {error}"))
    } else {
        Err(format!("`{value}` must be a positive number of hours"))
    }
}

fn secret(value: &str) -> Result<SecretString, Infallible> {
    Ok(SecretString::from(value))
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "sage",
    version,
    about = "Sage Functions: a streaming LLM-agent backend",
    rename_all = "snake_case"
)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub llm: LlmConfig,
    #[command(flatten)]
    pub tools: ToolsConfig,
    #[command(flatten)]
    pub limits: RunLimits,
    #[command(flatten)]
    pub budget: DailyBudget,
    #[command(flatten)]
    pub pricing: PricingConfig,
    #[command(flatten)]
    pub context: ContextConfig,
    #[command(flatten)]
    pub store: StoreConfig,
    #[command(flatten)]
    pub search: SearchConfig,
    #[command(flatten)]
    pub blob: BlobConfig,
    #[command(flatten)]
    pub trace: TraceConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    /// Settings given explicitly that are accepted but not acted on yet (warned at start-up).
    #[arg(skip)]
    pub inert: Vec<InertSetting>,
}

#[derive(Debug, Clone, Args)]
#[command(rename_all = "snake_case")]
pub struct ServerConfig {
    /// Address the local shim listens on.
    #[arg(long, env = "SAGE_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port the local shim listens on.
    #[arg(long, env = "SAGE_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Workspace directory (session files, uploads).
    #[arg(long, env = "SAGE_WORKSPACE_PATH", default_value = "agent_workspace")]
    pub workspace: PathBuf,
    /// Log directory (logs also go to stderr).
    #[arg(long = "logs-dir", env = "SAGE_LOGS_DIR_PATH", default_value = "logs")]
    pub logs_dir: PathBuf,
    /// Preset MCP servers (`{"mcpServers":{...}}`).
    #[arg(long, env = "SAGE_MCP_CONFIG_PATH", default_value = "mcp_setting.json")]
    pub preset_mcp_config: PathBuf,
    /// Agent presets (`{agent_id: {...}}`).
    #[arg(
        long,
        env = "SAGE_PRESET_RUNNING_CONFIG_PATH",
        default_value = "agent_setting.json"
    )]
    pub preset_running_config: PathBuf,
    /// Seconds between SSE `: ping` comments while a run is quiet (API Gateway REST drops a
    /// stream idle for 5 minutes, 30 s on edge endpoints).
    #[arg(long = "sse_ping_seconds", env = "SAGE_SSE_PING_SECONDS", default_value = "15", value_parser = seconds)]
    pub sse_ping: Duration,
    /// Seconds a run's lock lives without a heartbeat: how long a crashed run blocks its session.
    #[arg(long = "run_lease_seconds", env = "SAGE_RUN_LEASE_SECONDS", default_value = "30", value_parser = seconds)]
    pub run_lease: Duration,
    /// Seconds between the sweeps of paused runs in `sage-local` (the `runs` job: it continues
    /// a run whose process died past a checkpoint, and ends one whose approval's wait ran out,
    /// when no client's resume did it first); 0: never. The cloud runs it on a schedule.
    #[arg(long = "run_sweep_seconds", env = "SAGE_RUN_SWEEP_SECONDS", default_value = "60", value_parser = seconds_or_never)]
    pub run_sweep: Duration,
    /// Seconds a run paused for a tool call's approval waits for its owner's decision; a later
    /// decision ends the run with an `error` event instead of continuing it.
    #[arg(long = "approval_timeout_seconds", env = "SAGE_APPROVAL_TIMEOUT_SECONDS", default_value = "3600", value_parser = seconds)]
    pub approval_timeout: Duration,
    /// Seconds a run goes on in one invocation: past them it stops after its current tool turn
    /// and continues in a fresh invocation (in Lambda, also the invocation's own deadline less
    /// 90 s). Unset: no limit but Lambda's.
    #[arg(long = "run_deadline_seconds", env = "SAGE_RUN_DEADLINE_SECONDS", value_parser = seconds)]
    pub run_deadline: Option<Duration>,
    /// Largest request body accepted, in bytes (larger ones answer 413).
    #[arg(long, env = "SAGE_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds a non-streaming request may take before it answers 504.
    #[arg(long = "request_timeout_seconds", env = "SAGE_REQUEST_TIMEOUT_SECONDS", default_value = "60", value_parser = seconds)]
    pub request_timeout: Duration,
    /// Seconds `sage-local` waits for running streams to end after SIGTERM before it exits.
    #[arg(long = "shutdown_grace_seconds", env = "SAGE_SHUTDOWN_GRACE_SECONDS", default_value = "10", value_parser = seconds)]
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    pub fn run_sweep_interval(&self) -> Option<Duration> {
        (!self.run_sweep.is_zero()).then_some(self.run_sweep)
    }
}

#[derive(Debug, Clone, Args)]
#[command(rename_all = "snake_case")]
pub struct LlmConfig {
    /// API key of the default provider; a comma-separated list rotates.
    #[arg(long = "default_llm_api_key", env = "SAGE_DEFAULT_LLM_API_KEY", hide_env_values = true, value_parser = secret)]
    pub api_key: Option<SecretString>,
    /// Name of an SSM SecureString parameter holding the API key (read once at start-up; how
    /// the Lambda functions get their key).
    #[arg(
        long = "default_llm_api_key_parameter",
        env = "SAGE_DEFAULT_LLM_API_KEY_PARAMETER"
    )]
    pub api_key_parameter: Option<String>,
    #[arg(
        long = "default_llm_api_base_url",
        env = "SAGE_DEFAULT_LLM_API_BASE_URL",
        default_value = "https://api.deepseek.com/v1"
    )]
    pub base_url: String,
    #[arg(
        long = "default_llm_model_name",
        env = "SAGE_DEFAULT_LLM_MODEL_NAME",
        default_value = "deepseek-chat"
    )]
    pub model_name: String,
    #[arg(
        long = "default_llm_max_tokens",
        env = "SAGE_DEFAULT_LLM_MAX_TOKENS",
        default_value_t = 4096
    )]
    pub max_tokens: u32,
    #[arg(
        long = "default_llm_temperature",
        env = "SAGE_DEFAULT_LLM_TEMPERATURE",
        default_value_t = 0.2
    )]
    pub temperature: f64,
    #[arg(
        long = "default_llm_max_model_len",
        env = "SAGE_DEFAULT_LLM_MAX_MODEL_LEN",
        default_value_t = 54000
    )]
    pub max_model_len: u32,
    #[arg(
        long = "default_llm_top_p",
        env = "SAGE_DEFAULT_LLM_TOP_P",
        default_value_t = 0.9
    )]
    pub top_p: f64,
    #[arg(
        long = "default_llm_presence_penalty",
        env = "SAGE_DEFAULT_LLM_PRESENCE_PENALTY",
        default_value_t = 0.0
    )]
    pub presence_penalty: f64,
    /// Seconds to wait for the provider's TCP/TLS connection.
    #[arg(long = "llm_connect_timeout", env = "SAGE_LLM_CONNECT_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub connect_timeout: Duration,
    /// Seconds the provider may stay silent mid-stream before the request fails.
    #[arg(long = "llm_idle_timeout", env = "SAGE_LLM_IDLE_TIMEOUT", default_value = "120", value_parser = seconds)]
    pub idle_timeout: Duration,
    /// Retries before the first chunk (connection errors, 429, 5xx).
    #[arg(
        long = "llm_max_retries",
        env = "SAGE_LLM_MAX_RETRIES",
        default_value_t = 2
    )]
    pub max_retries: u32,
}

impl LlmConfig {
    /// The default provider's keys, in rotation order.
    pub fn keys(&self) -> Vec<SecretString> {
        self.api_key
            .as_ref()
            .map(|list| split_keys(list.expose_secret()))
            .unwrap_or_default()
    }
}

/// Bounds on one run, whatever the request asks: crossing one ends the run with an `error` event
/// naming it. None is set by default.
#[derive(Debug, Clone, Copy, Default, Args)]
#[command(rename_all = "snake_case")]
pub struct RunLimits {
    /// Most model calls one run may make (every step counts: turns, judge, selection, summary).
    #[arg(id = "run_max_llm_calls", long = "run_max_llm_calls", value_name = "CALLS", env = "SAGE_RUN_MAX_LLM_CALLS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_llm_calls: Option<u32>,
    /// Most tokens (prompt and completion, every call) one run may use; checked before each
    /// model call, so the last call may go past it.
    #[arg(id = "run_max_tokens", long = "run_max_tokens", value_name = "TOKENS", env = "SAGE_RUN_MAX_TOKENS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tokens: Option<u64>,
    /// Most seconds one run may take, model calls and tools together.
    #[arg(id = "run_max_seconds", long = "run_max_seconds", value_name = "SECONDS", env = "SAGE_RUN_MAX_SECONDS", value_parser = seconds)]
    pub max_duration: Option<Duration>,
    /// Most US dollars one run may spend on its model calls, priced by `--price_table`; checked
    /// before each model call.
    #[arg(id = "run_max_cost", long = "run_max_cost", value_name = "USD", env = "SAGE_RUN_MAX_COST", value_parser = dollars)]
    pub max_cost: Option<f64>,
}

/// What one user may spend per UTC day, counted in the usage ledger; none is set by default.
/// A user whose budget is spent gets 429 before a run starts, and a run stops when it would
/// spend more than what is left of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Args)]
#[command(rename_all = "snake_case")]
pub struct DailyBudget {
    /// Most tokens (prompt and completion) one user's runs may use per UTC day.
    #[arg(id = "user_daily_tokens", long = "user_daily_tokens", value_name = "TOKENS", env = "SAGE_USER_DAILY_TOKENS", value_parser = clap::value_parser!(u64).range(1..))]
    pub tokens: Option<u64>,
    /// Most US dollars one user's runs may spend per UTC day, priced by `--price_table`.
    #[arg(id = "user_daily_cost", long = "user_daily_cost", value_name = "USD", env = "SAGE_USER_DAILY_COST", value_parser = dollars)]
    pub cost: Option<f64>,
}

/// What is left today of a user's daily budget: it bounds a run as its `RunLimits` do.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetLeft {
    pub tokens: Option<u64>,
    /// US dollars.
    pub cost: Option<f64>,
}

/// What model tokens cost.
#[derive(Debug, Clone, Default, Args)]
#[command(rename_all = "snake_case")]
pub struct PricingConfig {
    /// Model prices as JSON, or a JSON file's path: `{"model": {"input_per_million": 0.27,
    /// "output_per_million": 1.1}}`, `*` for any other model. Runs then report their cost.
    #[arg(long, env = "SAGE_PRICE_TABLE", value_parser = prices::price_table)]
    pub price_table: Option<PriceTable>,
}

fn dollars(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(amount) if amount > 0.0 && amount.is_finite() => Ok(amount),
        _ => Err(format!("`{value}` must be a positive amount of US dollars")),
    }
}

#[derive(Debug, Clone, Args)]
#[command(rename_all = "snake_case")]
pub struct ToolsConfig {
    /// Seconds a tool call may take unless its server sets `timeout_s`.
    #[arg(long = "tool_timeout", env = "SAGE_TOOL_TIMEOUT", default_value = "60", value_parser = seconds)]
    pub timeout: Duration,
    /// The URL this API is reached at (scheme, host and any path prefix, such as an API Gateway
    /// stage), for the redirect back from an MCP server's OAuth authorization; unset: the
    /// request's own host (`X-Forwarded-Host`/`Host`, `X-Forwarded-Proto`).
    #[arg(long = "public_url", env = "SAGE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Let API callers register stdio MCP servers (arbitrary commands on this host).
    #[arg(long, env = "SAGE_MCP_ALLOW_STDIO", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub mcp_allow_stdio: bool,
    /// Let API callers point MCP servers at link-local / cloud metadata addresses.
    #[arg(long, env = "SAGE_MCP_ALLOW_LINK_LOCAL", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub mcp_allow_link_local: bool,
    /// Let `download_file_from_url` reach loopback, private and link-local addresses.
    #[arg(long, env = "SAGE_DOWNLOAD_ALLOW_PRIVATE", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub download_allow_private: bool,
    /// The largest file `download_file_from_url` saves, in bytes.
    #[arg(long, env = "SAGE_DOWNLOAD_MAX_BYTES", default_value = "20971520", value_parser = clap::value_parser!(u64).range(1..))]
    pub download_max_bytes: u64,
    /// Where the code tools (`execute_*`) run: never in the server's own process.
    #[arg(long, env = "SAGE_CODE_SANDBOX", value_enum, default_value = "auto")]
    pub code_sandbox: CodeSandboxMode,
    /// The Lambda function that runs the code tools under `--code_sandbox lambda`.
    #[arg(long, env = "SAGE_CODE_SANDBOX_FUNCTION")]
    pub code_sandbox_function: Option<String>,
    /// Seconds a code tool call may run (a call may ask for less).
    #[arg(long = "code_timeout_seconds", env = "SAGE_CODE_TIMEOUT_SECONDS", default_value = "30", value_parser = seconds)]
    pub code_timeout: Duration,
    /// The address space a code tool call may use, in MiB.
    #[arg(long, env = "SAGE_CODE_MEMORY_MB", default_value = "1024", value_parser = clap::value_parser!(u64).range(64..))]
    pub code_memory_mb: u64,
    /// Let code tool calls reach the network.
    #[arg(long, env = "SAGE_CODE_NETWORK", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub code_network: bool,
}

#[derive(Debug, Clone, Args)]
#[command(rename_all = "snake_case")]
pub struct ContextConfig {
    /// End every run with a summary step.
    #[arg(long, env = "SAGE_FORCE_SUMMARY", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub force_summary: bool,
    #[arg(long, env = "SAGE_CONTEXT_HISTORY_RATIO", default_value_t = 0.2, value_parser = ratio)]
    pub context_history_ratio: f64,
    #[arg(long, env = "SAGE_CONTEXT_ACTIVE_RATIO", default_value_t = 0.3, value_parser = ratio)]
    pub context_active_ratio: f64,
    #[arg(long, env = "SAGE_CONTEXT_MAX_NEW_MESSAGE_RATIO", default_value_t = 0.5, value_parser = ratio)]
    pub context_max_new_message_ratio: f64,
    #[arg(long, env = "SAGE_CONTEXT_RECENT_TURNS", default_value_t = 0)]
    pub context_recent_turns: u32,
    #[arg(long, env = "SAGE_MEMORY_TYPE", value_enum, default_value_t = MemoryType::Session)]
    pub memory_type: MemoryType,
    /// Run the summary job every this many seconds in `sage-local` (0: never; the cloud uses
    /// the EventBridge schedule).
    #[arg(long, env = "SAGE_SUMMARY_INTERVAL_SECONDS", default_value_t = 0)]
    pub summary_interval_seconds: u64,
    /// Sage's directory of memory files; here memories live in the store (`--db_type`), so
    /// this is only warned about.
    #[arg(long, env = "MEMORY_ROOT_PATH")]
    pub memory_root: Option<PathBuf>,
}

impl ContextConfig {
    pub fn summary_interval(&self) -> Option<std::time::Duration> {
        (self.summary_interval_seconds > 0)
            .then(|| std::time::Duration::from_secs(self.summary_interval_seconds))
    }
}

#[derive(Debug, Clone, Args)]
#[command(rename_all = "snake_case")]
pub struct StoreConfig {
    #[arg(long, env = "SAGE_DB_TYPE", value_enum, default_value_t = DbType::File)]
    pub db_type: DbType,
    /// Directory of the SQLite file (`file` store).
    #[arg(long, env = "SAGE_DB_PATH", default_value = "./data/")]
    pub db_path: PathBuf,
    #[arg(long, env = "SAGE_MYSQL_HOST", default_value = "127.0.0.1")]
    pub mysql_host: String,
    #[arg(long, env = "SAGE_MYSQL_PORT", default_value_t = 3306)]
    pub mysql_port: u16,
    #[arg(long, env = "SAGE_MYSQL_USER", default_value = "root")]
    pub mysql_user: String,
    #[arg(
        long,
        env = "SAGE_MYSQL_PASSWORD",
        default_value = "sage.1234",
        hide_env_values = true,
        hide_default_value = true,
        value_parser = secret
    )]
    pub mysql_password: SecretString,
    #[arg(long, env = "SAGE_MYSQL_DATABASE", default_value = "sage")]
    pub mysql_database: String,
    #[arg(long, env = "SAGE_DYNAMODB_TABLE", default_value = "sage")]
    pub dynamodb_table: String,
    /// Endpoint override (DynamoDB Local, moto).
    #[arg(long, env = "SAGE_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,
    /// How long a message's text deltas may wait to be written together (milliseconds): fewer,
    /// fuller writes for a little latency. The first delta of a message is never held. Default:
    /// 100 on DynamoDB, which prices each item written, 0 elsewhere.
    #[arg(long, env = "SAGE_EVENT_PACK_WINDOW_MS", value_parser = clap::value_parser!(u64).range(0..=2000))]
    pub event_pack_window_ms: Option<u64>,
}

impl StoreConfig {
    pub fn event_pack_window(&self) -> std::time::Duration {
        let default = if self.db_type == DbType::Dynamodb {
            100
        } else {
            0
        };
        std::time::Duration::from_millis(self.event_pack_window_ms.unwrap_or(default))
    }

    pub fn sqlite_file(&self) -> PathBuf {
        self.db_path.join("sage.db")
    }
}

#[derive(Debug, Clone, Args)]
#[command(rename_all = "snake_case")]
pub struct SearchConfig {
    #[arg(long, env = "SAGE_EMBEDDING_API_KEY", hide_env_values = true, value_parser = secret)]
    pub embedding_api_key: Option<SecretString>,
    #[arg(long, env = "SAGE_EMBEDDING_BASE_URL")]
    pub embedding_base_url: Option<String>,
    #[arg(
        long,
        env = "SAGE_EMBEDDING_MODEL",
        default_value = "text-embedding-3-large"
    )]
    pub embedding_model: String,
    /// Asks the endpoint for vectors of this length (`dimensions`) and refuses any other.
    #[arg(long, env = "SAGE_EMBEDDING_DIMS", value_parser = clap::value_parser!(u16).range(1..))]
    pub embedding_dims: Option<u16>,
    #[arg(long, env = "SAGE_ELASTICSEARCH_URL")]
    pub es_url: Option<String>,
    /// Index waiting knowledge-base documents every this many seconds in `sage-local` (0:
    /// never; the cloud uses the EventBridge schedule, `{"job": "index"}`).
    #[arg(
        long,
        env = "SAGE_KNOWLEDGE_INDEX_INTERVAL_SECONDS",
        default_value_t = 5
    )]
    pub knowledge_index_interval_seconds: u64,
    #[arg(long, env = "SAGE_ELASTICSEARCH_API_KEY", hide_env_values = true, value_parser = secret)]
    pub es_api_key: Option<SecretString>,
    #[arg(long, env = "SAGE_ELASTICSEARCH_USERNAME")]
    pub es_username: Option<String>,
    #[arg(long, env = "SAGE_ELASTICSEARCH_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub es_password: Option<SecretString>,
    /// The cluster has OpenSearch's k-NN plugin (Amazon OpenSearch Service has it): vectors are
    /// indexed as `knn_vector` and searched by k-NN beside the text. Needs `--embedding_dims`
    /// and a new index. Without it, stored vectors re-rank the text matches.
    #[arg(long, env = "SAGE_ELASTICSEARCH_KNN", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub es_knn: bool,
}

impl SearchConfig {
    pub fn knowledge_index_interval(&self) -> Option<Duration> {
        (self.knowledge_index_interval_seconds > 0)
            .then(|| Duration::from_secs(self.knowledge_index_interval_seconds))
    }
}

/// Object storage (MinIO / S3); `--s3_*` and `SAGE_S3_*` are accepted too.
#[derive(Debug, Clone, Args)]
#[command(rename_all = "snake_case")]
pub struct BlobConfig {
    #[arg(long, alias = "s3_endpoint", env = "SAGE_MINIO_ENDPOINT")]
    pub minio_endpoint: Option<String>,
    #[arg(
        long,
        alias = "s3_access_key",
        env = "SAGE_MINIO_ACCESS_KEY",
        hide_env_values = true
    )]
    pub minio_access_key: Option<String>,
    #[arg(
        long,
        alias = "s3_secret_key",
        env = "SAGE_MINIO_SECRET_KEY",
        hide_env_values = true,
        value_parser = secret
    )]
    pub minio_secret_key: Option<SecretString>,
    #[arg(long, alias = "s3_bucket_name", env = "SAGE_MINIO_BUCKET_NAME")]
    pub minio_bucket_name: Option<String>,
    #[arg(long, alias = "s3_secure", env = "SAGE_MINIO_SECURE", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub minio_secure: bool,
    /// The base of the URLs handed out for stored files (a CDN or a public bucket); without
    /// it, S3 URLs are presigned and local files are served by `/api/oss/file/`.
    #[arg(long, env = "SAGE_S3_PUBLIC_BASE_URL")]
    pub s3_public_base_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[command(rename_all = "snake_case")]
pub struct TraceConfig {
    /// OTLP HTTP endpoint, e.g. http://localhost:4318/v1/traces.
    #[arg(long, alias = "trace_jaeger_endpoint", env = "SAGE_TRACE_JAEGER_URL")]
    pub trace_jaeger_url: Option<String>,
    #[arg(long, env = "SAGE_ENABLE_TRACE", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_trace: bool,
}

#[derive(Debug, Clone, Args)]
#[command(rename_all = "snake_case")]
pub struct AuthConfig {
    /// Take the caller's identity from `user_id` instead of a verified token.
    #[arg(long, env = "SAGE_NO_AUTH", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub no_auth: bool,
    /// Secret that signs the HS256 access tokens: at least 32 bytes; required with
    /// `--no_auth false`. Without it (and auth off) each process makes up its own, so tokens
    /// last only as long as the process.
    #[arg(long, env = "SAGE_JWT_KEY", hide_env_values = true, value_parser = secret)]
    pub jwt_key: Option<SecretString>,
    /// Name of an SSM SecureString parameter holding the JWT key, read at start-up by the
    /// builds that check tokens and read SSM (Stream, MCP-admin, Session, sage-local): how the
    /// Lambda functions get it. Ignored when `--jwt_key` is set.
    #[arg(long, env = "SAGE_JWT_KEY_PARAMETER")]
    pub jwt_key_parameter: Option<String>,
    /// An identity provider's JWKS URL (e.g. a Cognito user pool's
    /// `https://cognito-idp.<region>.amazonaws.com/<pool>/.well-known/jwks.json`): its RS256 and
    /// ES256 tokens are accepted too; the user is `sub`, an admin when `cognito:groups` has
    /// `admin`. Builds with an HTTP client only (sage-local, Stream, MCP-admin); behind API
    /// Gateway use its Cognito or JWT authorizer instead.
    #[arg(long, env = "SAGE_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// The `iss` the identity provider's tokens must carry (unchecked when unset).
    #[arg(long, env = "SAGE_JWT_JWKS_ISSUER")]
    pub jwt_jwks_issuer: Option<String>,
    /// Hours an access token lives (fractions allowed).
    #[arg(long, env = "SAGE_JWT_EXPIRE_HOURS", default_value = "24", value_parser = hours)]
    pub jwt_expire_hours: Duration,
    /// Secret that signs refresh tokens (at least 32 bytes); the JWT key when unset.
    #[arg(long, env = "SAGE_REFRESH_TOKEN_SECRET", hide_env_values = true, value_parser = secret)]
    pub refresh_token_secret: Option<SecretString>,
    /// Hours a refresh token lives; each is accepted once.
    #[arg(long, env = "SAGE_REFRESH_TOKEN_EXPIRE_HOURS", default_value = "168", value_parser = hours)]
    pub refresh_token_expire_hours: Duration,
    /// The first admin's username, created at start-up when no account has it.
    #[arg(long, env = "SAGE_ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,
    /// The first admin's password; when unset a random one is generated and logged once.
    #[arg(long, env = "SAGE_ADMIN_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub admin_password: Option<SecretString>,
    /// Let anyone create an account with `POST /api/user/register`.
    #[arg(long, env = "SAGE_ALLOW_REGISTRATION", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub allow_registration: bool,
}

/// The shortest signing secret accepted: HS256 is only as strong as its key.
pub const MIN_SECRET_BYTES: usize = 32;

impl AuthConfig {
    /// Refuses what would make tokens forgeable or the admin unreachable.
    fn validate(&self) -> Result<(), String> {
        for (flag, secret) in [
            ("jwt_key", &self.jwt_key),
            ("refresh_token_secret", &self.refresh_token_secret),
        ] {
            if let Some(secret) = secret
                && secret.expose_secret().len() < MIN_SECRET_BYTES
            {
                return Err(format!(
                    "--{flag}: at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
                ));
            }
        }
        if self.jwt_jwks_issuer.is_some() && self.jwt_jwks_url.is_none() {
            return Err("--jwt_jwks_issuer needs --jwt_jwks_url".into());
        }
        if let Some(url) = &self.jwt_jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err("--jwt_jwks_url: an http(s) URL".into());
        }
        if !self.no_auth && self.jwt_key.is_none() && self.jwt_key_parameter.is_none() {
            return Err(
                "--jwt_key (SAGE_JWT_KEY) or --jwt_key_parameter is required with --no_auth \
                 false: the secret that signs access tokens, at least 32 bytes"
                    .into(),
            );
        }
        Ok(())
    }

    /// The JWT key as read from its parameter, checked like one given directly.
    pub fn set_jwt_key(&mut self, key: SecretString) -> Result<(), String> {
        if key.expose_secret().len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the JWT key parameter's value: at least {MIN_SECRET_BYTES} bytes"
            ));
        }
        self.jwt_key = Some(key);
        Ok(())
    }
}

/// Settings whose environment variable has an older name that Sage's code used.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("minio_endpoint", "SAGE_S3_ENDPOINT"),
    ("minio_access_key", "SAGE_S3_ACCESS_KEY"),
    ("minio_secret_key", "SAGE_S3_SECRET_KEY"),
    ("minio_bucket_name", "SAGE_S3_BUCKET_NAME"),
    ("minio_secure", "SAGE_S3_SECURE"),
    ("trace_jaeger_url", "SAGE_TRACE_JAEGER_ENDPOINT"),
];

impl Config {
    /// Parses CLI arguments and the process environment; the error names the bad flag or value.
    pub fn try_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let matches = Self::command().try_get_matches_from(&args)?;
        let aliased = aliased_env_flags(&matches, |var| std::env::var(var).ok());
        let matches = if aliased.is_empty() {
            matches
        } else {
            // Aliased variables become flags so they get the same validation and error messages.
            args.extend(aliased.into_iter().map(Into::into));
            Self::command().try_get_matches_from(&args)?
        };
        let mut config = Self::from_arg_matches(&matches)?;
        config.inert = inert::explicitly_set(&matches);
        config.auth.validate().map_err(|message| {
            Self::command().error(clap::error::ErrorKind::ValueValidation, message)
        })?;
        if config.limits.max_cost.is_some() && config.pricing.price_table.is_none() {
            return Err(Self::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--run_max_cost needs --price_table: without prices no cost is known",
            ));
        }
        if config.budget.cost.is_some() && config.pricing.price_table.is_none() {
            return Err(Self::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--user_daily_cost needs --price_table: without prices no cost is known",
            ));
        }
        Ok(config)
    }

    /// Environment only: how a Lambda function is configured.
    pub fn from_env() -> Result<Self, clap::Error> {
        Self::try_from_args(["sage"])
    }
}

fn aliased_env_flags(matches: &ArgMatches, lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    ENV_ALIASES
        .iter()
        .filter(|(id, _)| {
            matches!(
                matches.value_source(id),
                None | Some(ValueSource::DefaultValue)
            )
        })
        .filter_map(|(id, var)| lookup(var).map(|value| format!("--{id}={value}")))
        .collect()
}

/// A comma-separated key list, as the default key and `llm_model_config.api_key` carry it.
pub fn split_keys(list: &str) -> Vec<SecretString> {
    list.split(',')
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(SecretString::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_variable_names_fill_settings_left_unset() {
        let matches = Config::command()
            .try_get_matches_from(["sage", "--minio_bucket_name", "explicit"])
            .unwrap();
        let lookup = |var: &str| match var {
            "SAGE_S3_ENDPOINT" => Some("http://s3.local:9000".to_owned()),
            "SAGE_S3_BUCKET_NAME" => Some("from-alias".to_owned()),
            "SAGE_TRACE_JAEGER_ENDPOINT" => Some("http://jaeger:4318/v1/traces".to_owned()),
            _ => None,
        };
        let flags = aliased_env_flags(&matches, lookup);
        assert_eq!(
            flags,
            vec![
                "--minio_endpoint=http://s3.local:9000".to_owned(),
                "--trace_jaeger_url=http://jaeger:4318/v1/traces".to_owned(),
            ],
            "an explicit flag beats an aliased variable"
        );
    }

    #[test]
    fn old_flag_names_are_accepted() {
        let config = Config::try_from_args([
            "sage",
            "--s3_endpoint",
            "http://minio:9000",
            "--s3_secure",
            "--trace_jaeger_endpoint",
            "http://jaeger:4318",
        ])
        .unwrap();
        assert_eq!(
            config.blob.minio_endpoint.as_deref(),
            Some("http://minio:9000")
        );
        assert!(config.blob.minio_secure);
        assert_eq!(
            config.trace.trace_jaeger_url.as_deref(),
            Some("http://jaeger:4318")
        );
    }
}
