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
    BuiltinTools, CODE_TOOLS, CodeSandbox, DownloadPolicy, McpError, McpOAuth, McpPolicy, McpPool,
    McpServerConfig, OAuthError, ToolCallError, ToolSpec, WORKSPACE_TOOLS, check_arguments,
    code_tools, discover_tools, followup_tool_spec, oauth_url, workspace_tool_specs,
    workspace_tools,
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
    oauth: McpOAuth,
    policy: McpPolicy,
    tool_timeout: Duration,
    preset_file: PathBuf,
    workspaces: SessionWorkspaces,
    public_url: Option<String>,
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

fn oauth_error(error: OAuthError) -> DomainError {
    match error {
        OAuthError::NotConfigured | OAuthError::Unreadable => {
            DomainError::Unavailable(error.to_string())
        }
        OAuthError::NotHttp | OAuthError::UnknownState | OAuthError::Expired => {
            DomainError::invalid(error.to_string())
        }
        OAuthError::Denied(_) => DomainError::Forbidden(error.to_string()),
        OAuthError::AuthorizationRequired(_) => DomainError::Conflict(error.to_string()),
        OAuthError::Discovery(_) | OAuthError::Exchange(_) | OAuthError::Refresh(_) => {
            DomainError::Upstream(error.to_string())
        }
        OAuthError::Store(error) => DomainError::Store(error),
    }
}

/// A server just added: its record, and for one with OAuth where to send the user.
pub struct AddedServer {
    pub record: McpServerRecord,
    pub authorization_url: Option<String>,
}

/// What the authorization server's redirect back carries.
pub struct OAuthCallback {
    pub state: String,
    pub code: Option<String>,
    pub error: Option<String>,
    pub issuer: Option<String>,
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
        oauth: McpOAuth,
        policy: McpPolicy,
        tool_timeout: Duration,
        preset_file: PathBuf,
        workspaces: SessionWorkspaces,
    ) -> Self {
        Self {
            servers,
            pool,
            oauth,
            policy,
            tool_timeout,
            preset_file,
            workspaces,
            public_url: None,
        }
    }

    /// The URL this API is reached at, for OAuth redirects back to it (`--public_url`).
    pub fn with_public_url(mut self, public_url: Option<String>) -> Self {
        self.public_url = public_url;
        self
    }

    pub fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    /// Registers a server for `owner`: refused as a duplicate, checked against the policy, reached
    /// and its tools listed; nothing is saved unless all of that succeeds. A server with OAuth is
    /// saved without tools, and the answer says where to send the user to authorize it; the
    /// authorization server sends them back to `callback_url`.
    pub async fn add_server(
        &self,
        owner: &UserId,
        name: &str,
        config: McpServerConfig,
        callback_url: &str,
    ) -> Result<AddedServer, DomainError> {
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
        if config.oauth.is_some() {
            return self
                .add_oauth_server(owner, name, config, callback_url)
                .await;
        }
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
        Ok(AddedServer {
            record,
            authorization_url: None,
        })
    }

    async fn add_oauth_server(
        &self,
        owner: &str,
        name: &str,
        config: McpServerConfig,
        callback_url: &str,
    ) -> Result<AddedServer, DomainError> {
        if config.api_key.is_some() {
            return Err(DomainError::invalid(
                "api_key: a server with oauth is called with each user's own tokens; give one or the other",
            ));
        }
        oauth_url(&config).map_err(oauth_error)?;
        let record = McpServerRecord {
            owner: owner.to_owned(),
            name: name.to_owned(),
            config,
            tools: Vec::new(),
            last_error: None,
            updated_at: now_secs(),
        };
        if !self.servers.insert_mcp_server(&record).await? {
            return Err(DomainError::Conflict(format!(
                "an MCP server named `{name}` already exists"
            )));
        }
        match self.start_authorization(&record, callback_url).await {
            Ok(authorization_url) => Ok(AddedServer {
                record,
                authorization_url: Some(authorization_url),
            }),
            Err(error) => {
                self.servers.delete_mcp_server(owner, name).await?;
                Err(error)
            }
        }
    }

    async fn start_authorization(
        &self,
        record: &McpServerRecord,
        callback_url: &str,
    ) -> Result<String, DomainError> {
        let settings = record.config.oauth.clone().ok_or_else(|| {
            DomainError::invalid(format!(
                "MCP server `{}` was not added with oauth",
                record.name
            ))
        })?;
        let url = oauth_url(&record.config).map_err(oauth_error)?;
        self.oauth
            .start(&record.owner, &record.name, &url, &settings, callback_url)
            .await
            .map_err(oauth_error)
    }

    /// Sends the user through the server's authorization again (new scopes, revoked tokens):
    /// where to send them.
    pub async fn authorize_server(
        &self,
        owner: &UserId,
        name: &str,
        callback_url: &str,
    ) -> Result<String, DomainError> {
        let record = self.owned_server(owner.as_str(), name).await?;
        self.start_authorization(&record, callback_url).await
    }

    /// The authorization server's redirect back: keeps the user's tokens and lists the server's
    /// tools with them.
    pub async fn complete_authorization(
        &self,
        callback: OAuthCallback,
    ) -> Result<McpServerRecord, DomainError> {
        let code = match (&callback.code, &callback.error) {
            (_, Some(error)) => {
                self.oauth
                    .abandon(&callback.state)
                    .await
                    .map_err(oauth_error)?;
                return Err(oauth_error(OAuthError::Denied(error.clone())));
            }
            (Some(code), None) => code,
            (None, None) => {
                return Err(DomainError::invalid("code: the redirect carries no code"));
            }
        };
        let (owner, name) = self
            .oauth
            .complete(&callback.state, code, callback.issuer.as_deref())
            .await
            .map_err(oauth_error)?;
        let mut record = self
            .servers
            .get_mcp_server(&owner, &name)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("no MCP server named `{name}`")))?;
        self.list_tools_into(&mut record).await?;
        Ok(record)
    }

    /// Lists the server's tools (with the owner's token for one with OAuth) into its record,
    /// and saves it; a failure is kept as `last_error` and answered 502.
    async fn list_tools_into(&self, record: &mut McpServerRecord) -> Result<(), DomainError> {
        let name = record.name.clone();
        record.updated_at = now_secs();
        let config = self
            .pool
            .authorized(&record.owner, &name, &record.config, None)
            .await
            .map_err(oauth_error)?;
        match discover_tools(&name, &config, self.tool_timeout).await {
            Ok(tools) => {
                record.tools = tools;
                record.last_error = None;
                self.servers.put_mcp_server(record).await?;
                Ok(())
            }
            Err(error) => {
                record.last_error = Some(error.to_string());
                self.servers.put_mcp_server(record).await?;
                Err(discovery_error(&name, error))
            }
        }
    }

    /// Whether the owner has authorized each of these OAuth servers (others are left out).
    pub async fn authorizations(
        &self,
        servers: &[McpServerRecord],
    ) -> Result<Vec<(String, bool)>, DomainError> {
        let mut found = Vec::new();
        for server in servers
            .iter()
            .filter(|server| server.config.oauth.is_some())
        {
            let authorized = self
                .oauth
                .authorized(&server.owner, &server.name)
                .await
                .map_err(oauth_error)?;
            found.push((server.name.clone(), authorized));
        }
        Ok(found)
    }

    /// The caller's servers, then the shared ones.
    pub async fn visible_servers(
        &self,
        owner: &UserId,
    ) -> Result<Vec<McpServerRecord>, DomainError> {
        let owner = owner.as_str();
        if owner == SHARED_OWNER {
            return Ok(self.servers.list_mcp_servers(owner).await?);
        }
        let mut servers = self
            .servers
            .list_mcp_servers_of(&[owner, SHARED_OWNER])
            .await?;
        let own: Vec<String> = servers
            .iter()
            .filter(|server| server.owner == owner)
            .map(|server| server.name.clone())
            .collect();
        servers.retain(|server| server.owner == owner || !own.contains(&server.name));
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
        self.oauth.forget(owner, name).await.map_err(oauth_error)?;
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
        self.list_tools_into(&mut record).await?;
        Ok(record)
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

    /// `/api/tools?type=basic`: the built-in tools, as Sage lists them. An agent turns the file,
    /// plan, code and follow-up tools on by naming them in `available_tools`; the memory tools
    /// come with user memory, `load_skill` with skills, the `sys_*` team tools with fibre mode
    /// (`sys_finish_task` may be named in any mode).
    pub fn basic_tools(&self) -> Vec<ToolEntry> {
        workspace_tool_specs()
            .into_iter()
            .chain(crate::tools::code_tool_specs_listed())
            .chain(crate::domain::memory::memory_tool_specs())
            .chain([
                followup_tool_spec(),
                crate::domain::skills::load_skill_spec(None),
            ])
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
                if record.config.oauth.is_some() {
                    tracing::warn!(server = %name, "a preset MCP server cannot use oauth: each user adds such a server and authorizes it; not registered");
                    return;
                }
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
        authorized: None,
    }
}
