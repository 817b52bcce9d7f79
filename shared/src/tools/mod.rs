//! MCP tool servers: their configuration, connections (rmcp client over streamable HTTP, stdio
//! and the legacy HTTP+SSE transport), the shared connection pool and the per-run tool box.

mod builtin;
mod code;
mod followup;
mod guard;
mod legacy_sse;
mod oauth;
mod pool;
mod toolbox;
mod workspace;

pub use builtin::BuiltinTools;
pub use code::{CODE_TOOLS, CodeSandbox, SandboxMissing, code_tool_specs_listed, code_tools};
pub use followup::{ASK_FOLLOWUP_QUESTION, followup_tool, followup_tool_spec};
pub use guard::McpPolicy;
pub use legacy_sse::{LegacySseError, LegacySseTransport};
pub use oauth::{McpOAuth, OAuthError, oauth_url};
pub use pool::McpPool;
pub use toolbox::ToolBox;
pub use workspace::{
    DownloadPolicy, FILE_WRITE, PROMPT_BLOCK as WORKSPACE_PROMPT_BLOCK, TODO_READ, TODO_WRITE,
    TodoItem, WORKSPACE_TOOLS, workspace_tool_specs, workspace_tools,
};

pub use crate::wire::mcp::{McpOAuthSettings, McpServerConfig, ToolSpec, TransportKind};

use std::time::Duration;

pub use rmcp::model::JsonObject;
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
#[cfg(feature = "mcp-stdio")]
use rmcp::transport::TokioChildProcess;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("no transport configured: set sse_url, streamable_http_url/url or command")]
    NoTransport,
    #[error(
        "stdio servers (local commands) are not allowed here; the server's operator can enable them with --mcp_allow_stdio"
    )]
    StdioNotAllowed,
    #[error("this build cannot start stdio servers (feature `mcp-stdio`)")]
    StdioUnsupported,
    #[error("`{0}` is not an http(s) URL")]
    InvalidUrl(String),
    #[error("{0} resolves to a link-local or cloud metadata address, which is refused")]
    ForbiddenAddress(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("legacy SSE connection failed: {0}")]
    LegacySse(#[from] LegacySseError),
    #[error("MCP handshake failed: {0}")]
    Handshake(String),
    #[error("the server refused the authorization: {0}")]
    Unauthorized(String),
    #[error("listing tools failed: {0}")]
    ListTools(#[source] rmcp::ServiceError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Why a tool call produced an error object instead of a result.
#[derive(Debug, thiserror::Error)]
pub enum ToolCallError {
    #[error("tool `{0}` is not available")]
    NotFound(String),
    #[error("arguments are not a JSON object: {0}")]
    InvalidJson(String),
    /// The arguments break the tool's schema: each problem, with the argument it is in.
    #[error("the arguments do not match the tool's schema: {}", .0.join("; "))]
    InvalidArguments(Vec<String>),
    #[error("no result within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Execution(String),
    /// Something the tool needs (the workspace storage, the code sandbox) failed: the call was
    /// fine and may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// The request never left: safe to try once more on a new connection.
    #[error("the request could not be sent: {0}")]
    Unsent(String),
    /// The connection died; the request may have been delivered, so it is not retried.
    #[error("the connection to the MCP server closed: {0}")]
    Closed(String),
    /// The server refused the token the call carried; it never ran.
    #[error("the MCP server refused the authorization: {0}")]
    Unauthorized(String),
}

impl ToolCallError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "TOOL_NOT_FOUND",
            Self::InvalidJson(_) => "INVALID_JSON",
            Self::InvalidArguments(_) => "INVALID_ARGUMENTS",
            Self::Timeout(_) => "TIMEOUT",
            Self::Execution(_)
            | Self::Unavailable(_)
            | Self::Unsent(_)
            | Self::Closed(_)
            | Self::Unauthorized(_) => "EXECUTION_ERROR",
        }
    }

    /// The tool event's content: `{"error":true,"error_type":...,"message":...}`.
    pub fn to_content(&self, tool_name: &str) -> Value {
        json!({
            "error": true,
            "error_type": self.kind(),
            "message": self.to_string(),
            "tool_name": tool_name,
        })
    }
}

/// A tool as the server listed it, in the shape we keep.
fn tool_spec(tool: &Tool) -> ToolSpec {
    ToolSpec {
        name: tool.name.to_string(),
        description: tool.description.as_deref().unwrap_or("").to_owned(),
        parameters: Value::Object(tool.input_schema.as_ref().clone()),
    }
}

const MIN_SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A live connection to one MCP server, with the tools it listed.
pub struct McpConnection {
    pub name: String,
    service: RunningService<RoleClient, ()>,
    tools: Vec<Tool>,
    call_timeout: Duration,
    api_key: Option<String>,
}

impl McpConnection {
    /// Connects and lists the tools; the configured timeout bounds each step.
    pub async fn connect(
        name: &str,
        config: &McpServerConfig,
        default_timeout: Duration,
    ) -> Result<Self, McpError> {
        let call_timeout = config.call_timeout(default_timeout);
        // Starting a server (a process, a handshake) may take longer than one call may.
        let setup_timeout = call_timeout.max(MIN_SETUP_TIMEOUT);
        let service = tokio::time::timeout(setup_timeout, start_service(config, setup_timeout))
            .await
            .map_err(|_| McpError::Timeout(setup_timeout))??;
        let tools = tokio::time::timeout(setup_timeout, service.list_all_tools())
            .await
            .map_err(|_| McpError::Timeout(setup_timeout))?
            .map_err(McpError::ListTools)?;
        Ok(Self {
            name: name.to_owned(),
            service,
            tools,
            call_timeout,
            api_key: config.api_key.clone(),
        })
    }

    /// Whether the connection carries this key (an OAuth token changes when refreshed).
    pub fn carries(&self, api_key: Option<&str>) -> bool {
        self.api_key.as_deref() == api_key
    }

    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    pub fn tool_specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(tool_spec).collect()
    }

    pub fn is_alive(&self) -> bool {
        !self.service.is_closed() && !self.service.is_transport_closed()
    }

    pub async fn call(&self, tool: &str, arguments: JsonObject) -> Result<Value, ToolCallError> {
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let result = tokio::time::timeout(self.call_timeout, self.service.call_tool(request))
            .await
            .map_err(|_| ToolCallError::Timeout(self.call_timeout))?
            .map_err(|error| match error {
                error if error.is_authorization_required() => {
                    ToolCallError::Unauthorized(error.to_string())
                }
                rmcp::ServiceError::TransportSend(source) => {
                    ToolCallError::Unsent(source.to_string())
                }
                rmcp::ServiceError::TransportClosed => {
                    ToolCallError::Closed("transport closed".into())
                }
                rmcp::ServiceError::Timeout { timeout } => ToolCallError::Timeout(timeout),
                other => ToolCallError::Execution(other.to_string()),
            })?;
        let content = result_content(&result);
        if result.is_error == Some(true) {
            let message = match &content {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            return Err(ToolCallError::Execution(message));
        }
        Ok(content)
    }

    pub async fn close(self) {
        if let Err(error) = self.service.cancel().await {
            tracing::debug!(server = %self.name, %error, "MCP connection did not close cleanly");
        }
    }
}

async fn start_service(
    config: &McpServerConfig,
    timeout: Duration,
) -> Result<RunningService<RoleClient, ()>, McpError> {
    let handshake = |error: rmcp::service::ClientInitializeError| {
        if error.is_authorization_required() {
            McpError::Unauthorized(root_cause(&error))
        } else {
            McpError::Handshake(root_cause(&error))
        }
    };
    match config.transport().ok_or(McpError::NoTransport)? {
        TransportKind::LegacySse(url) => {
            let transport =
                LegacySseTransport::connect(&url, config.api_key.as_deref(), timeout).await?;
            ().serve(transport).await.map_err(handshake)
        }
        TransportKind::StreamableHttp(url) => {
            let mut transport_config =
                StreamableHttpClientTransportConfig::with_uri(url).reinit_on_expired_session(true);
            if let Some(key) = &config.api_key {
                transport_config = transport_config.auth_header(key.clone());
            }
            let transport = StreamableHttpClientTransport::from_config(transport_config);
            ().serve(transport).await.map_err(handshake)
        }
        #[cfg(feature = "mcp-stdio")]
        TransportKind::Stdio { command, args, env } => {
            let mut process = tokio::process::Command::new(&command);
            process.args(&args).envs(&env);
            let transport = TokioChildProcess::new(process).map_err(|source| McpError::Spawn {
                command: command.clone(),
                source,
            })?;
            ().serve(transport).await.map_err(handshake)
        }
        #[cfg(not(feature = "mcp-stdio"))]
        TransportKind::Stdio { .. } => Err(McpError::StdioUnsupported),
    }
}

/// The innermost error's message: rmcp's outer layers name Rust types, not causes.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A tool result as the event carries it: structured content, else the text parsed as JSON when
/// it is JSON, else the text.
fn result_content(result: &CallToolResult) -> Value {
    if let Some(structured) = &result.structured_content {
        return structured.clone();
    }
    let text: Vec<&str> = result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.as_str()))
        .collect();
    let joined = text.join("\n");
    serde_json::from_str(&joined).unwrap_or(Value::String(joined))
}

/// Connects, lists the tools, disconnects: what registering or refreshing a server does.
pub async fn discover_tools(
    name: &str,
    config: &McpServerConfig,
    default_timeout: Duration,
) -> Result<Vec<ToolSpec>, McpError> {
    let connection = McpConnection::connect(name, config, default_timeout).await?;
    let tools = connection.tool_specs();
    connection.close().await;
    Ok(tools)
}

/// Parses a model's tool-call arguments.
/// The tools of `all` that `requested` (a run's `available_tools`) names, with the session's
/// workspace folder; `None` when it names none of them.
fn session_tools(
    all: &[&'static str],
    session_id: &str,
    requested: &[String],
) -> Option<(crate::blob::ObjectKey, Vec<&'static str>)> {
    let enabled: Vec<&'static str> = all
        .iter()
        .copied()
        .filter(|name| requested.iter().any(|asked| asked == name))
        .collect();
    if enabled.is_empty() {
        return None;
    }
    Some((crate::blob::ObjectKey::parse(session_id).ok()?, enabled))
}

/// How many schema problems a tool error lists.
const LISTED_SCHEMA_ERRORS: usize = 5;

/// Checks a call's arguments against the tool's JSON Schema before the call leaves. A schema
/// that cannot be compiled (a remote `$ref`, a draft this checker does not know) is left to the
/// tool itself to enforce.
pub fn check_arguments(
    tool: &str,
    schema: &Value,
    arguments: &JsonObject,
) -> Result<(), ToolCallError> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(validator) => validator,
        Err(error) => {
            tracing::debug!(%tool, %error, "the tool's schema cannot be checked here");
            return Ok(());
        }
    };
    let instance = Value::Object(arguments.clone());
    let problems: Vec<String> = validator
        .iter_errors(&instance)
        .take(LISTED_SCHEMA_ERRORS)
        .map(|error| {
            let at = error.instance_path().to_string();
            let at = at.trim_start_matches('/').replace('/', ".");
            if at.is_empty() {
                error.to_string()
            } else {
                format!("`{at}`: {error}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ToolCallError::InvalidArguments(problems))
    }
}

pub fn parse_arguments(arguments: &str) -> Result<JsonObject, ToolCallError> {
    if arguments.trim().is_empty() {
        return Ok(JsonObject::new());
    }
    serde_json::from_str(arguments).map_err(|error| ToolCallError::InvalidJson(error.to_string()))
}
