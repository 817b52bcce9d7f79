//! MCP tool servers: their configuration, connections (rmcp client) and the per-run tool box.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject, Tool};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The same shape in the preset file, in storage and in `extra_mcp_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpServerConfig {
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streamable_http_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransportKind {
    LegacySse(String),
    StreamableHttp(String),
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
}

impl McpServerConfig {
    pub fn transport(&self) -> Result<TransportKind, McpError> {
        if let Some(url) = &self.sse_url {
            return Ok(TransportKind::LegacySse(url.clone()));
        }
        if let Some(url) = self.streamable_http_url.as_ref().or(self.url.as_ref()) {
            return Ok(TransportKind::StreamableHttp(url.clone()));
        }
        if let Some(command) = &self.command {
            return Ok(TransportKind::Stdio {
                command: command.clone(),
                args: self.args.clone(),
                env: self.env.clone(),
            });
        }
        Err(McpError::NoTransport)
    }

    pub fn call_timeout(&self, default: Duration) -> Duration {
        self.timeout_s
            .filter(|seconds| *seconds > 0.0 && seconds.is_finite())
            .map(Duration::from_secs_f64)
            .unwrap_or(default)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("no transport configured: set sse_url, streamable_http_url/url or command")]
    NoTransport,
    #[error("the legacy HTTP+SSE transport is not supported yet")]
    LegacySseUnsupported,
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("MCP handshake failed: {0}")]
    Handshake(String),
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
    #[error("no result within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Execution(String),
}

impl ToolCallError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "TOOL_NOT_FOUND",
            Self::InvalidJson(_) => "INVALID_JSON",
            Self::Timeout(_) => "TIMEOUT",
            Self::Execution(_) => "EXECUTION_ERROR",
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

/// A live connection to one MCP server, with the tools it listed.
pub struct McpConnection {
    pub name: String,
    service: RunningService<RoleClient, ()>,
    tools: Vec<Tool>,
    call_timeout: Duration,
}

impl McpConnection {
    pub async fn connect(
        name: &str,
        config: &McpServerConfig,
        default_timeout: Duration,
    ) -> Result<Self, McpError> {
        let call_timeout = config.call_timeout(default_timeout);
        let service = tokio::time::timeout(call_timeout, start_service(config))
            .await
            .map_err(|_| McpError::Timeout(call_timeout))??;
        let tools = tokio::time::timeout(call_timeout, service.list_all_tools())
            .await
            .map_err(|_| McpError::Timeout(call_timeout))?
            .map_err(McpError::ListTools)?;
        Ok(Self {
            name: name.to_owned(),
            service,
            tools,
            call_timeout,
        })
    }

    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    pub async fn call(&self, tool: &str, arguments: JsonObject) -> Result<Value, ToolCallError> {
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let result = tokio::time::timeout(self.call_timeout, self.service.call_tool(request))
            .await
            .map_err(|_| ToolCallError::Timeout(self.call_timeout))?
            .map_err(|error| ToolCallError::Execution(error.to_string()))?;
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
) -> Result<RunningService<RoleClient, ()>, McpError> {
    let handshake =
        |error: rmcp::service::ClientInitializeError| McpError::Handshake(error.to_string());
    match config.transport()? {
        TransportKind::LegacySse(_) => Err(McpError::LegacySseUnsupported),
        TransportKind::StreamableHttp(url) => {
            let mut transport_config = StreamableHttpClientTransportConfig::with_uri(url);
            if let Some(key) = &config.api_key {
                transport_config = transport_config.auth_header(key.clone());
            }
            let transport = StreamableHttpClientTransport::from_config(transport_config);
            ().serve(transport).await.map_err(handshake)
        }
        TransportKind::Stdio { command, args, env } => {
            let mut process = tokio::process::Command::new(&command);
            process.args(&args).envs(&env);
            let transport = TokioChildProcess::new(process).map_err(|source| McpError::Spawn {
                command: command.clone(),
                source,
            })?;
            ().serve(transport).await.map_err(handshake)
        }
    }
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

/// The tools one run may use: the allow-list resolved against its connected servers.
#[derive(Default)]
pub struct ToolBox {
    connections: Vec<Arc<McpConnection>>,
    by_name: HashMap<String, (Arc<McpConnection>, Tool)>,
}

impl ToolBox {
    /// Connects to every server concurrently; a server that fails is logged and skipped.
    pub async fn connect(
        servers: &BTreeMap<String, McpServerConfig>,
        allowed: &[String],
        default_timeout: Duration,
    ) -> Self {
        let enabled = servers.iter().filter(|(_, config)| !config.disabled);
        let attempts = enabled.map(|(name, config)| async move {
            (
                name,
                McpConnection::connect(name, config, default_timeout).await,
            )
        });
        let mut toolbox = Self::default();
        for (name, attempt) in futures_util::future::join_all(attempts).await {
            match attempt {
                Ok(connection) => toolbox.add(Arc::new(connection), allowed),
                Err(error) => {
                    tracing::warn!(server = %name, %error, "MCP server unavailable for this run")
                }
            }
        }
        for name in allowed {
            if !toolbox.by_name.contains_key(name) {
                tracing::warn!(tool = %name, "requested tool is not offered by any server; dropped");
            }
        }
        toolbox
    }

    fn add(&mut self, connection: Arc<McpConnection>, allowed: &[String]) {
        for tool in connection.tools() {
            if allowed.iter().any(|name| name == tool.name.as_ref()) {
                self.by_name
                    .entry(tool.name.to_string())
                    .or_insert_with(|| (connection.clone(), tool.clone()));
            }
        }
        self.connections.push(connection);
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Tool definitions in the OpenAI `tools` format, sorted by name for stable prompts.
    pub fn definitions(&self) -> Vec<Value> {
        let mut tools: Vec<&Tool> = self.by_name.values().map(|(_, tool)| tool).collect();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
            .into_iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description.as_deref().unwrap_or(""),
                        "parameters": tool.input_schema.as_ref(),
                    }
                })
            })
            .collect()
    }

    pub async fn call(&self, tool: &str, arguments: &str) -> Result<Value, ToolCallError> {
        let (connection, _) = self
            .by_name
            .get(tool)
            .ok_or_else(|| ToolCallError::NotFound(tool.to_owned()))?;
        let arguments: JsonObject = if arguments.trim().is_empty() {
            JsonObject::new()
        } else {
            serde_json::from_str(arguments)
                .map_err(|error| ToolCallError::InvalidJson(error.to_string()))?
        };
        connection.call(tool, arguments).await
    }

    pub async fn close(self) {
        drop(self.by_name);
        for connection in self.connections {
            if let Ok(connection) = Arc::try_unwrap(connection) {
                connection.close().await;
            }
        }
    }
}
