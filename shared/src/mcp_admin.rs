//! Registered MCP servers (`api.md` §3): add, list, delete, refresh, toggle, the tool catalogue,
//! direct tool calls, and the preset file registered at start-up.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::{ApiError, now_secs};
use crate::mcp::{McpError, McpServerConfig, ToolCallError, ToolSpec, discover_tools};
use crate::store::McpServerRecord;

/// Owner of the preset servers: every user may use them, nobody may change them over the API.
pub const SHARED_OWNER: &str = "system";

fn tool_timeout(state: &AppState) -> Duration {
    Duration::from_secs_f64(state.config.tool_timeout)
}

pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "name: 1 to 64 characters of letters, digits, '_', '-' or '.'".into(),
        ))
    }
}

fn discovery_error(name: &str, error: McpError) -> ApiError {
    match error {
        McpError::NoTransport | McpError::InvalidUrl(_) => ApiError::BadRequest(error.to_string()),
        McpError::StdioNotAllowed | McpError::ForbiddenAddress(_) => {
            ApiError::Forbidden(error.to_string())
        }
        McpError::Timeout(_) => {
            ApiError::GatewayTimeout(format!("MCP server `{name}` did not answer: {error}"))
        }
        other => ApiError::BadGateway(format!(
            "MCP server `{name}` is unreachable or not an MCP server: {other}"
        )),
    }
}

/// Registers a server for `owner`: refused as a duplicate, checked against the policy, reached
/// and its tools listed; nothing is saved unless all of that succeeds.
pub async fn add_server(
    state: &AppState,
    owner: &str,
    name: &str,
    config: McpServerConfig,
) -> Result<McpServerRecord, ApiError> {
    validate_name(name)?;
    let taken = state.store.get_mcp_server(owner, name).await?.is_some()
        || state
            .store
            .get_mcp_server(SHARED_OWNER, name)
            .await?
            .is_some();
    if taken {
        return Err(ApiError::Conflict(format!(
            "an MCP server named `{name}` already exists"
        )));
    }
    config
        .transport()
        .map_err(|error| discovery_error(name, error))?;
    state
        .mcp_policy
        .check(&config)
        .await
        .map_err(|error| discovery_error(name, error))?;
    let tools = discover_tools(name, &config, tool_timeout(state))
        .await
        .map_err(|error| discovery_error(name, error))?;
    let record = McpServerRecord {
        owner: owner.to_owned(),
        name: name.to_owned(),
        config,
        tools,
        last_error: None,
        updated_at: now_secs(),
    };
    if !state.store.insert_mcp_server(&record).await? {
        return Err(ApiError::Conflict(format!(
            "an MCP server named `{name}` already exists"
        )));
    }
    Ok(record)
}

/// The caller's servers, then the shared ones.
pub async fn visible_servers(
    state: &AppState,
    owner: &str,
) -> Result<Vec<McpServerRecord>, ApiError> {
    let mut servers = state.store.list_mcp_servers(owner).await?;
    if owner != SHARED_OWNER {
        let own: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
        let shared = state.store.list_mcp_servers(SHARED_OWNER).await?;
        servers.extend(shared.into_iter().filter(|s| !own.contains(&s.name)));
    }
    Ok(servers)
}

pub async fn enabled_servers(
    state: &AppState,
    owner: &str,
) -> Result<Vec<McpServerRecord>, ApiError> {
    let mut servers = visible_servers(state, owner).await?;
    servers.retain(|server| !server.config.disabled);
    Ok(servers)
}

/// A server the caller may change: their own. A shared one is 403, anything else 404.
async fn owned_server(
    state: &AppState,
    owner: &str,
    name: &str,
) -> Result<McpServerRecord, ApiError> {
    if let Some(record) = state.store.get_mcp_server(owner, name).await? {
        return Ok(record);
    }
    if state
        .store
        .get_mcp_server(SHARED_OWNER, name)
        .await?
        .is_some()
    {
        return Err(ApiError::Forbidden(format!(
            "MCP server `{name}` is a preset server and cannot be changed over the API"
        )));
    }
    Err(ApiError::NotFound(format!("no MCP server named `{name}`")))
}

pub async fn delete_server(state: &AppState, owner: &str, name: &str) -> Result<(), ApiError> {
    owned_server(state, owner, name).await?;
    state.store.delete_mcp_server(owner, name).await?;
    Ok(())
}

pub async fn toggle_server(
    state: &AppState,
    owner: &str,
    name: &str,
    disabled: bool,
) -> Result<(), ApiError> {
    let mut record = owned_server(state, owner, name).await?;
    record.config.disabled = disabled;
    record.updated_at = now_secs();
    state.store.put_mcp_server(&record).await?;
    Ok(())
}

/// Reconnects and lists the tools anew; a failure is recorded as `last_error` and answered 502.
pub async fn refresh_server(
    state: &AppState,
    owner: &str,
    name: &str,
) -> Result<McpServerRecord, ApiError> {
    let mut record = owned_server(state, owner, name).await?;
    if record.config.disabled {
        return Ok(record);
    }
    state
        .mcp_policy
        .check(&record.config)
        .await
        .map_err(|error| discovery_error(name, error))?;
    record.updated_at = now_secs();
    match discover_tools(name, &record.config, tool_timeout(state)).await {
        Ok(tools) => {
            record.tools = tools;
            record.last_error = None;
            state.store.put_mcp_server(&record).await?;
            Ok(record)
        }
        Err(error) => {
            record.last_error = Some(error.to_string());
            state.store.put_mcp_server(&record).await?;
            Err(discovery_error(name, error))
        }
    }
}

/// `/api/tools`: every tool of the caller's enabled servers.
pub async fn list_tools(state: &AppState, owner: &str) -> Result<Vec<Value>, ApiError> {
    let servers = enabled_servers(state, owner).await?;
    Ok(servers
        .iter()
        .flat_map(|server| {
            server.tools.iter().map(move |tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                    "type": "mcp",
                    "source": format!("MCP Server: {}", server.name),
                    "server_name": server.name,
                    "user_id": server.owner,
                })
            })
        })
        .collect())
}

/// `/api/tools/exec`: one call on the first of the caller's enabled servers offering the tool.
pub async fn exec_tool(
    state: &AppState,
    owner: &str,
    tool: &str,
    params: serde_json::Map<String, Value>,
) -> Result<Value, ApiError> {
    let servers = enabled_servers(state, owner).await?;
    let server = servers
        .iter()
        .find(|server| server.tools.iter().any(|spec: &ToolSpec| spec.name == tool))
        .ok_or_else(|| ApiError::NotFound(format!("no tool named `{tool}`")))?;
    state
        .mcp_pool
        .call(&server.owner, &server.name, &server.config, tool, params)
        .await
        .map_err(|error| match error {
            ToolCallError::Timeout(_) => {
                ApiError::GatewayTimeout(format!("tool `{tool}` timed out: {error}"))
            }
            other => ApiError::BadGateway(format!("tool `{tool}` failed: {other}")),
        })
}

#[derive(Debug, Deserialize)]
struct PresetFile {
    #[serde(rename = "mcpServers", default)]
    mcp_servers: BTreeMap<String, McpServerConfig>,
}

/// Registers the preset file's servers as shared servers. A missing file is a log line; a server
/// that cannot be reached is stored with its `last_error`; nothing here stops the service.
pub async fn register_presets(state: &AppState) {
    let path = &state.config.preset_mcp_config;
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(error) => {
            tracing::info!(path = %path.display(), %error, "no preset MCP servers loaded");
            return;
        }
    };
    let presets: PresetFile = match serde_json::from_str(&text) {
        Ok(presets) => presets,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "preset MCP file is not valid; ignored");
            return;
        }
    };
    let registrations = presets
        .mcp_servers
        .into_iter()
        .map(|(name, config)| async move {
            let previous = state
                .store
                .get_mcp_server(SHARED_OWNER, &name)
                .await
                .ok()
                .flatten();
            let mut record = McpServerRecord {
                owner: SHARED_OWNER.to_owned(),
                name: name.clone(),
                tools: previous.map(|p| p.tools).unwrap_or_default(),
                config,
                last_error: None,
                updated_at: now_secs(),
            };
            if !record.config.disabled {
                match discover_tools(&name, &record.config, tool_timeout(state)).await {
                    Ok(tools) => record.tools = tools,
                    Err(error) => {
                        tracing::warn!(server = %name, %error, "preset MCP server unavailable");
                        record.last_error = Some(error.to_string());
                    }
                }
            }
            if let Err(error) = state.store.put_mcp_server(&record).await {
                tracing::error!(server = %name, %error, "cannot store preset MCP server");
            }
        });
    futures_util::future::join_all(registrations).await;
}

/// `api_key` as `/api/mcp/list` shows it: never in clear.
pub fn mask_key(key: &str) -> String {
    let visible: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if key.chars().count() <= 8 {
        "****".into()
    } else {
        format!("****{visible}")
    }
}

pub fn server_summary(record: &McpServerRecord) -> Value {
    let config = &record.config;
    let mut summary = json!({
        "name": record.name,
        "protocol": config.protocol.clone().unwrap_or_else(|| config.protocol_name()),
        "disabled": config.disabled,
        "streamable_http_url": config.streamable_http_url.as_ref().or(config.url.as_ref()),
        "sse_url": config.sse_url,
        "user_id": record.owner,
        "tool_count": record.tools.len(),
        "tools": record.tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
    });
    if let Some(command) = &config.command {
        summary["command"] = json!(command);
        summary["args"] = json!(config.args);
    }
    if let Some(key) = &config.api_key {
        summary["api_key"] = json!(mask_key(key));
    }
    if let Some(error) = &record.last_error {
        summary["last_error"] = json!(error);
    }
    summary
}
