//! One typed configuration for every function and the local shim.
//!
//! Every setting is a CLI flag and an environment variable (clap), CLI beats env beats default.
//! Flag and variable names follow Sage's configuration guide so existing deployments keep working.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DbType {
    File,
    Memory,
    Mysql,
    Dynamodb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryType {
    Session,
    User,
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

fn positive_seconds(value: &str) -> Result<f64, String> {
    let parsed: f64 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    if parsed > 0.0 && parsed.is_finite() {
        Ok(parsed)
    } else {
        Err(format!("`{value}` must be a positive number of seconds"))
    }
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "sage",
    version,
    about = "Sage Functions: a streaming LLM-agent backend",
    rename_all = "snake_case"
)]
pub struct Config {
    // --- server ---
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
    /// End every run with a summary step.
    #[arg(long, env = "SAGE_FORCE_SUMMARY", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub force_summary: bool,
    /// Take the caller's identity from `user_id` instead of a verified token.
    #[arg(long, env = "SAGE_NO_AUTH", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub no_auth: bool,
    /// Secret for HS256 tokens when auth is on.
    #[arg(long, env = "SAGE_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
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

    // --- default LLM ---
    /// API key of the default provider; a comma-separated list rotates.
    #[arg(long, env = "SAGE_DEFAULT_LLM_API_KEY", hide_env_values = true)]
    pub default_llm_api_key: Option<String>,
    /// Name of an SSM SecureString parameter holding the API key (read once at start-up; how
    /// the Lambda functions get their key).
    #[arg(long, env = "SAGE_DEFAULT_LLM_API_KEY_PARAMETER")]
    pub default_llm_api_key_parameter: Option<String>,
    #[arg(
        long,
        env = "SAGE_DEFAULT_LLM_API_BASE_URL",
        default_value = "https://api.deepseek.com/v1"
    )]
    pub default_llm_api_base_url: String,
    #[arg(
        long,
        env = "SAGE_DEFAULT_LLM_MODEL_NAME",
        default_value = "deepseek-chat"
    )]
    pub default_llm_model_name: String,
    #[arg(long, env = "SAGE_DEFAULT_LLM_MAX_TOKENS", default_value_t = 4096)]
    pub default_llm_max_tokens: u32,
    #[arg(long, env = "SAGE_DEFAULT_LLM_TEMPERATURE", default_value_t = 0.2)]
    pub default_llm_temperature: f64,
    #[arg(long, env = "SAGE_DEFAULT_LLM_MAX_MODEL_LEN", default_value_t = 54000)]
    pub default_llm_max_model_len: u32,
    #[arg(long, env = "SAGE_DEFAULT_LLM_TOP_P", default_value_t = 0.9)]
    pub default_llm_top_p: f64,
    #[arg(long, env = "SAGE_DEFAULT_LLM_PRESENCE_PENALTY", default_value_t = 0.0)]
    pub default_llm_presence_penalty: f64,
    /// Seconds to wait for the provider's TCP/TLS connection.
    #[arg(long, env = "SAGE_LLM_CONNECT_TIMEOUT", default_value_t = 10.0, value_parser = positive_seconds)]
    pub llm_connect_timeout: f64,
    /// Seconds the provider may stay silent mid-stream before the request fails.
    #[arg(long, env = "SAGE_LLM_IDLE_TIMEOUT", default_value_t = 120.0, value_parser = positive_seconds)]
    pub llm_idle_timeout: f64,
    /// Retries before the first chunk (connection errors, 429, 5xx).
    #[arg(long, env = "SAGE_LLM_MAX_RETRIES", default_value_t = 2)]
    pub llm_max_retries: u32,

    // --- tools ---
    /// Seconds a tool call may take unless its server sets `timeout_s`.
    #[arg(long, env = "SAGE_TOOL_TIMEOUT", default_value_t = 60.0, value_parser = positive_seconds)]
    pub tool_timeout: f64,
    /// Let API callers register stdio MCP servers (arbitrary commands on this host).
    #[arg(long, env = "SAGE_MCP_ALLOW_STDIO", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub mcp_allow_stdio: bool,
    /// Let API callers point MCP servers at link-local / cloud metadata addresses.
    #[arg(long, env = "SAGE_MCP_ALLOW_LINK_LOCAL", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub mcp_allow_link_local: bool,

    // --- context and memory ---
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
    /// Root directory of long-term user memories.
    #[arg(long, env = "MEMORY_ROOT_PATH")]
    pub memory_root: Option<PathBuf>,

    // --- store ---
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
        hide_env_values = true
    )]
    pub mysql_password: String,
    #[arg(long, env = "SAGE_MYSQL_DATABASE", default_value = "sage")]
    pub mysql_database: String,
    /// Seconds between SSE `: ping` comments while a run is quiet (API Gateway REST drops a
    /// stream idle for 5 minutes, 30 s on edge endpoints).
    #[arg(long, env = "SAGE_SSE_PING_SECONDS", default_value_t = 15.0, value_parser = positive_seconds)]
    pub sse_ping_seconds: f64,
    /// Seconds a run's lock lives without a heartbeat: how long a crashed run blocks its session.
    #[arg(long, env = "SAGE_RUN_LEASE_SECONDS", default_value_t = 30.0, value_parser = positive_seconds)]
    pub run_lease_seconds: f64,
    #[arg(long, env = "SAGE_DYNAMODB_TABLE", default_value = "sage")]
    pub dynamodb_table: String,
    /// Endpoint override (DynamoDB Local, moto).
    #[arg(long, env = "SAGE_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,

    // --- embedding and search ---
    #[arg(long, env = "SAGE_EMBEDDING_API_KEY", hide_env_values = true)]
    pub embedding_api_key: Option<String>,
    #[arg(long, env = "SAGE_EMBEDDING_BASE_URL")]
    pub embedding_base_url: Option<String>,
    #[arg(
        long,
        env = "SAGE_EMBEDDING_MODEL",
        default_value = "text-embedding-3-large"
    )]
    pub embedding_model: String,
    #[arg(long, env = "SAGE_ELASTICSEARCH_URL")]
    pub es_url: Option<String>,
    #[arg(long, env = "SAGE_ELASTICSEARCH_API_KEY", hide_env_values = true)]
    pub es_api_key: Option<String>,
    #[arg(long, env = "SAGE_ELASTICSEARCH_USERNAME")]
    pub es_username: Option<String>,
    #[arg(long, env = "SAGE_ELASTICSEARCH_PASSWORD", hide_env_values = true)]
    pub es_password: Option<String>,

    // --- object storage (MinIO / S3); `--s3_*` and `SAGE_S3_*` are accepted too ---
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
        hide_env_values = true
    )]
    pub minio_secret_key: Option<String>,
    #[arg(long, alias = "s3_bucket_name", env = "SAGE_MINIO_BUCKET_NAME")]
    pub minio_bucket_name: Option<String>,
    #[arg(long, alias = "s3_secure", env = "SAGE_MINIO_SECURE", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub minio_secure: bool,

    // --- tracing ---
    /// OTLP HTTP endpoint, e.g. http://localhost:4318/v1/traces.
    #[arg(long, alias = "trace_jaeger_endpoint", env = "SAGE_TRACE_JAEGER_URL")]
    pub trace_jaeger_url: Option<String>,
    #[arg(long, env = "SAGE_ENABLE_TRACE", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_trace: bool,
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
        if aliased.is_empty() {
            return Self::from_arg_matches(&matches);
        }
        // Aliased variables become flags so they get the same validation and error messages.
        args.extend(aliased.into_iter().map(Into::into));
        let matches = Self::command().try_get_matches_from(&args)?;
        Self::from_arg_matches(&matches)
    }

    /// Environment only: how a Lambda function is configured.
    pub fn from_env() -> Result<Self, clap::Error> {
        Self::try_from_args(["sage"])
    }

    pub fn default_llm_keys(&self) -> Vec<String> {
        split_keys(self.default_llm_api_key.as_deref().unwrap_or(""))
    }

    pub fn sqlite_file(&self) -> PathBuf {
        self.db_path.join("sage.db")
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

pub fn split_keys(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(str::to_owned)
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
        assert_eq!(config.minio_endpoint.as_deref(), Some("http://minio:9000"));
        assert!(config.minio_secure);
        assert_eq!(
            config.trace_jaeger_url.as_deref(),
            Some("http://jaeger:4318")
        );
    }
}
