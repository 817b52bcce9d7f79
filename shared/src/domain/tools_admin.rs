//! Registered MCP servers (`api.md` §3): add, list, delete, refresh, toggle, the tool catalogue,
//! direct tool calls, and the preset file registered at start-up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::blob::ObjectStore;
use crate::domain::DomainError;
use crate::store::{McpServerRecord, McpServerStore, SessionStore};
use crate::tools::{
    BuiltinTools, CODE_TOOLS, CodeSandbox, DownloadPolicy, McpError, McpPolicy, McpPool,
    McpServerConfig, ToolCallError, ToolSpec, WORKSPACE_TOOLS, check_arguments, code_tools,
    discover_tools, followup_tool_spec, workspace_tool_specs, workspace_tools,
};
use crate::util::{SessionId, UserId, now_secs};
use crate::wire::api::{McpServerSummary, ToolEntry};

/// The `source` Sage gives its built-in tools ("basic tools"), which its web client shows.
const BASIC_TOOL_SOURCE: &str = "基础工具";

/// Owner of the preset servers: every user may use them, nobody may change them over the API.
pub const SHARED_OWNER: &str = "system";

/// Registered MCP servers and direct tool calls.
#[derive(Clone)]
pub struct ToolsAdmin {
    servers: Arc<dyn McpServerStore>,
    pool: Arc<McpPool>,
    policy: McpPolicy,
    tool_timeout: Duration,
    preset_file: PathBuf,
    workspaces: SessionWorkspaces,
}

/// What runs the built-in file and code tools outside a run: the conversations they work in,
/// their workspaces, and the same policies a run has.
#[derive(Clone)]
pub struct SessionWorkspaces {
    pub sessions: Arc<dyn SessionStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub downloads: DownloadPolicy,
    pub code: CodeSandbox,
}

fn validate_name(name: &str) -> Result<(), DomainError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "name: 1 to 64 characters of letters, digits, '_', '-' or '.'",
        ))
    }
}

fn discovery_error(name: &str, error: McpError) -> DomainError {
    match error {
        McpError::NoTransport | McpError::InvalidUrl(_) => DomainError::invalid(error.to_string()),
        McpError::StdioNotAllowed | McpError::StdioUnsupported | McpError::ForbiddenAddress(_) => {
            DomainError::Forbidden(error.to_string())
        }
        McpError::Timeout(_) => {
            DomainError::UpstreamTimeout(format!("MCP server `{name}` did not answer: {error}"))
        }
        other => DomainError::Upstream(format!(
            "MCP server `{name}` is unreachable or not an MCP server: {other}"
        )),
    }
}

#[derive(Debug, Deserialize)]
struct PresetFile {
    #[serde(rename = "mcpServers", default)]
    mcp_servers: BTreeMap<String, McpServerConfig>,
}

impl ToolsAdmin {
    pub fn new(
        servers: Arc<dyn McpServerStore>,
        pool: Arc<McpPool>,
        policy: McpPolicy,
        tool_timeout: Duration,
        preset_file: PathBuf,
        workspaces: SessionWorkspaces,
    ) -> Self {
        Self {
            servers,
            pool,
            policy,
            tool_timeout,
            preset_file,
            workspaces,
        }
    }

    /// Registers a server for `owner`: refused as a duplicate, checked against the policy, reached
    /// and its tools listed; nothing is saved unless all of that succeeds.
    pub async fn add_server(
        &self,
        owner: &UserId,
        name: &str,
        config: McpServerConfig,
    ) -> Result<McpServerRecord, DomainError> {
        let owner = owner.as_str();
        validate_name(name)?;
        let taken = self.servers.get_mcp_server(owner, name).await?.is_some()
            || self
                .servers
                .get_mcp_server(SHARED_OWNER, name)
                .await?
                .is_some();
        if taken {
            return Err(DomainError::Conflict(format!(
                "an MCP server named `{name}` already exists"
            )));
        }
        if config.transport().is_none() {
            return Err(discovery_error(name, McpError::NoTransport));
        }
        self.policy
            .check(&config)
            .await
            .map_err(|error| discovery_error(name, error))?;
        let tools = discover_tools(name, &config, self.tool_timeout)
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
        if !self.servers.insert_mcp_server(&record).await? {
            return Err(DomainError::Conflict(format!(
                "an MCP server named `{name}` already exists"
            )));
        }
        Ok(record)
    }

    /// The caller's servers, then the shared ones.
    pub async fn visible_servers(
        &self,
        owner: &UserId,
    ) -> Result<Vec<McpServerRecord>, DomainError> {
        let owner = owner.as_str();
        let mut servers = self.servers.list_mcp_servers(owner).await?;
        if owner != SHARED_OWNER {
            let own: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
            let shared = self.servers.list_mcp_servers(SHARED_OWNER).await?;
            servers.extend(shared.into_iter().filter(|s| !own.contains(&s.name)));
        }
        Ok(servers)
    }

    pub async fn enabled_servers(
        &self,
        owner: &UserId,
    ) -> Result<Vec<McpServerRecord>, DomainError> {
        let owner = owner.as_str();
        let mut servers = self.visible_servers(&UserId::new(owner)).await?;
        servers.retain(|server| !server.config.disabled);
        Ok(servers)
    }

    /// A server the caller may change: their own. A shared one is 403, anything else 404.
    async fn owned_server(&self, owner: &str, name: &str) -> Result<McpServerRecord, DomainError> {
        if let Some(record) = self.servers.get_mcp_server(owner, name).await? {
            return Ok(record);
        }
        if self
            .servers
            .get_mcp_server(SHARED_OWNER, name)
            .await?
            .is_some()
        {
            return Err(DomainError::Forbidden(format!(
                "MCP server `{name}` is a preset server and cannot be changed over the API"
            )));
        }
        Err(DomainError::NotFound(format!(
            "no MCP server named `{name}`"
        )))
    }

    pub async fn delete_server(&self, owner: &UserId, name: &str) -> Result<(), DomainError> {
        let owner = owner.as_str();
        self.owned_server(owner, name).await?;
        self.servers.delete_mcp_server(owner, name).await?;
        Ok(())
    }

    pub async fn toggle_server(
        &self,
        owner: &UserId,
        name: &str,
        disabled: bool,
    ) -> Result<(), DomainError> {
        let owner = owner.as_str();
        let mut record = self.owned_server(owner, name).await?;
        record.config.disabled = disabled;
        record.updated_at = now_secs();
        self.servers.put_mcp_server(&record).await?;
        Ok(())
    }

    /// Reconnects and lists the tools anew; a failure is recorded as `last_error` and answered 502.
    pub async fn refresh_server(
        &self,
        owner: &UserId,
        name: &str,
    ) -> Result<McpServerRecord, DomainError> {
        let owner = owner.as_str();
        let mut record = self.owned_server(owner, name).await?;
        if record.config.disabled {
            return Ok(record);
        }
        self.policy
            .check(&record.config)
            .await
            .map_err(|error| discovery_error(name, error))?;
        record.updated_at = now_secs();
        match discover_tools(name, &record.config, self.tool_timeout).await {
            Ok(tools) => {
                record.tools = tools;
                record.last_error = None;
                self.servers.put_mcp_server(&record).await?;
                Ok(record)
            }
            Err(error) => {
                record.last_error = Some(error.to_string());
                self.servers.put_mcp_server(&record).await?;
                Err(discovery_error(name, error))
            }
        }
    }

    /// `/api/tools`: every tool of the caller's enabled servers.
    pub async fn list_tools(&self, owner: &UserId) -> Result<Vec<ToolEntry>, DomainError> {
        let servers = self.enabled_servers(owner).await?;
        Ok(servers
            .iter()
            .flat_map(|server| {
                server.tools.iter().map(move |tool| ToolEntry {
                    name: tool.name.clone(),
                    description: tool.description.clone(),
                    parameters: tool.parameters.clone(),
                    kind: "mcp",
                    source: format!("MCP Server: {}", server.name),
                    server_name: server.name.clone(),
                    user_id: server.owner.clone(),
                })
            })
            .collect())
    }

    /// `/api/tools?type=basic`: the built-in tools an agent turns on by naming them in
    /// `available_tools` (the `sys_*` team tools come with fibre mode; `sys_finish_task` may
    /// be named in any mode), as Sage lists them.
    pub fn basic_tools(&self) -> Vec<ToolEntry> {
        workspace_tool_specs()
            .into_iter()
            .chain(crate::tools::code_tool_specs_listed())
            .chain([followup_tool_spec()])
            .chain(crate::agent::team_specs())
            .map(|spec| ToolEntry {
                name: spec.name,
                description: spec.description,
                parameters: spec.parameters,
                kind: "basic",
                source: BASIC_TOOL_SOURCE.into(),
                server_name: "builtin".into(),
                user_id: String::new(),
            })
            .collect()
    }

    /// `/api/tools/exec`: one call on the first of the caller's enabled servers offering the tool.
    /// Runs one tool for `owner`: a built-in file or code tool in `session` (one of the owner's
    /// conversations, in its workspace), or a registered MCP server's tool (no session).
    pub async fn exec_tool(
        &self,
        owner: &UserId,
        tool: &str,
        params: serde_json::Map<String, Value>,
        session: Option<&SessionId>,
    ) -> Result<Value, DomainError> {
        if WORKSPACE_TOOLS.contains(&tool) || CODE_TOOLS.contains(&tool) {
            let session = session.ok_or_else(|| {
                DomainError::invalid(format!(
                    "session_id: `{tool}` works in a conversation's workspace; name one of yours"
                ))
            })?;
            return self.exec_in_session(owner, tool, params, session).await;
        }
        if self.basic_tools().iter().any(|entry| entry.name == tool) {
            return Err(DomainError::invalid(format!(
                "tool_name: `{tool}` runs only inside a run"
            )));
        }
        if session.is_some() {
            return Err(DomainError::invalid(format!(
                "session_id: only the built-in file and code tools run in a conversation; \
                 `{tool}` is not one of them"
            )));
        }
        let owner = owner.as_str();
        let servers = self.enabled_servers(&UserId::new(owner)).await?;
        let server = servers
            .iter()
            .find(|server| server.tools.iter().any(|spec: &ToolSpec| spec.name == tool))
            .ok_or_else(|| DomainError::NotFound(format!("no tool named `{tool}`")))?;
        self.pool
            .call(&server.owner, &server.name, &server.config, tool, params)
            .await
            .map_err(|error| match error {
                ToolCallError::Timeout(_) => {
                    DomainError::UpstreamTimeout(format!("tool `{tool}` timed out: {error}"))
                }
                other => DomainError::Upstream(format!("tool `{tool}` failed: {other}")),
            })
    }

    async fn exec_in_session(
        &self,
        owner: &UserId,
        tool: &str,
        params: serde_json::Map<String, Value>,
        session: &SessionId,
    ) -> Result<Value, DomainError> {
        let workspaces = &self.workspaces;
        match workspaces.sessions.get_session(session.as_str()).await? {
            None => return Err(DomainError::NotFound(format!("no conversation {session}"))),
            Some(record) if record.user_id != owner.as_str() => {
                return Err(DomainError::Forbidden(format!(
                    "conversation {session} belongs to another user"
                )));
            }
            Some(_) => {}
        }
        let requested = [tool.to_owned()];
        let tools: Arc<dyn BuiltinTools> = workspace_tools(
            workspaces.objects.clone(),
            session.as_str(),
            &requested,
            workspaces.downloads,
        )
        .or_else(|| {
            code_tools(
                workspaces.objects.clone(),
                session.as_str(),
                &requested,
                workspaces.code.clone(),
            )
        })
        .ok_or_else(|| DomainError::invalid(format!("tool_name: `{tool}` is not built in")))?;
        let refused = |error: ToolCallError| match error {
            ToolCallError::Timeout(_) => {
                DomainError::UpstreamTimeout(format!("tool `{tool}` timed out: {error}"))
            }
            ToolCallError::Unavailable(_) => {
                DomainError::Unavailable(format!("tool `{tool}`: {error}"))
            }
            other => DomainError::invalid(format!("tool `{tool}`: {other}")),
        };
        if let Some(spec) = tools.specs().into_iter().find(|spec| spec.name == tool) {
            check_arguments(tool, &spec.parameters, &params).map_err(refused)?;
        }
        tools.call(tool, params).await.map_err(refused)
    }

    /// Registers the preset file's servers as shared servers. A missing file is a log line; a server
    /// that cannot be reached is stored with its `last_error`; nothing here stops the service.
    pub async fn register_presets(&self) {
        let path = &self.preset_file;
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
                let previous = self
                    .servers
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
                    match discover_tools(&name, &record.config, self.tool_timeout).await {
                        Ok(tools) => record.tools = tools,
                        Err(error) => {
                            tracing::warn!(server = %name, %error, "preset MCP server unavailable");
                            record.last_error = Some(error.to_string());
                        }
                    }
                }
                if let Err(error) = self.servers.put_mcp_server(&record).await {
                    tracing::error!(server = %name, %error, "cannot store preset MCP server");
                }
            });
        futures_util::future::join_all(registrations).await;
    }
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

pub fn server_summary(record: &McpServerRecord) -> McpServerSummary {
    let config = &record.config;
    McpServerSummary {
        name: record.name.clone(),
        protocol: config
            .protocol
            .clone()
            .unwrap_or_else(|| config.protocol_name()),
        disabled: config.disabled,
        streamable_http_url: config
            .streamable_http_url
            .clone()
            .or_else(|| config.url.clone()),
        sse_url: config.sse_url.clone(),
        user_id: record.owner.clone(),
        tool_count: record.tools.len(),
        tools: record.tools.iter().map(|t| t.name.clone()).collect(),
        command: config.command.clone(),
        args: config.command.as_ref().map(|_| config.args.clone()),
        api_key: config.api_key.as_deref().map(mask_key),
        last_error: record.last_error.clone(),
    }
}
