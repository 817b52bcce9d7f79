//! Connections to registered servers, kept open and shared between runs of one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::JsonObject;
use serde_json::Value;

use super::{
    McpConnection, McpError, McpOAuth, McpServerConfig, OAuthError, ToolCallError, oauth_url,
};

pub struct McpPool {
    default_timeout: Duration,
    oauth: Option<McpOAuth>,
    connections: Mutex<HashMap<String, Arc<McpConnection>>>,
}

fn pool_key(owner: &str, name: &str, config: &McpServerConfig) -> String {
    let fingerprint = serde_json::to_string(config).unwrap_or_default();
    format!("{owner}\u{0}{name}\u{0}{fingerprint}")
}

impl McpPool {
    pub fn new(default_timeout: Duration) -> Self {
        Self {
            default_timeout,
            oauth: None,
            connections: Mutex::default(),
        }
    }

    /// Servers registered with OAuth are called with the calling user's tokens from `oauth`.
    pub fn with_oauth(mut self, oauth: McpOAuth) -> Self {
        self.oauth = Some(oauth);
        self
    }

    /// The configuration to connect with: an OAuth server's carries the user's current token
    /// (`refused`: one the server just refused, which is refreshed).
    pub async fn authorized(
        &self,
        owner: &str,
        name: &str,
        config: &McpServerConfig,
        refused: Option<&str>,
    ) -> Result<McpServerConfig, OAuthError> {
        let mut config = config.clone();
        if config.oauth.is_some() {
            let oauth = self.oauth.as_ref().ok_or(OAuthError::NotConfigured)?;
            let url = oauth_url(&config)?;
            config.api_key = Some(oauth.access_token(owner, name, &url, refused).await?);
        }
        Ok(config)
    }

    fn cached(&self, key: &str, api_key: Option<&str>) -> Option<Arc<McpConnection>> {
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections
            .get(key)
            .filter(|c| c.is_alive() && c.carries(api_key))
            .cloned()
    }

    fn evict(&self, key: &str, dead: &Arc<McpConnection>) {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if connections
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, dead))
        {
            connections.remove(key);
        }
    }

    async fn connection(
        &self,
        key: &str,
        name: &str,
        config: &McpServerConfig,
    ) -> Result<Arc<McpConnection>, ToolCallError> {
        if let Some(connection) = self.cached(key, config.api_key.as_deref()) {
            return Ok(connection);
        }
        let connection = McpConnection::connect(name, config, self.default_timeout)
            .await
            .map(Arc::new)
            .map_err(|error| match error {
                McpError::Unauthorized(reason) => ToolCallError::Unauthorized(reason),
                error => {
                    ToolCallError::Execution(format!("MCP server `{name}` is unavailable: {error}"))
                }
            })?;
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        Ok(connections
            .entry(key.to_owned())
            .and_modify(|existing| {
                if !existing.is_alive() || !existing.carries(config.api_key.as_deref()) {
                    *existing = connection.clone();
                }
            })
            .or_insert(connection)
            .clone())
    }

    /// Calls a tool on a registered server. A request that never left is tried once more on a
    /// fresh connection, and so is one whose OAuth token was refused, with a refreshed token;
    /// one that may have reached the server is never repeated.
    pub async fn call(
        &self,
        owner: &str,
        name: &str,
        config: &McpServerConfig,
        tool: &str,
        arguments: JsonObject,
    ) -> Result<Value, ToolCallError> {
        let key = pool_key(owner, name, config);
        let mut attempt = 0;
        let mut refused = None;
        loop {
            attempt += 1;
            let authorized = self
                .authorized(owner, name, config, refused.as_deref())
                .await
                .map_err(|error| ToolCallError::Unavailable(error.to_string()))?;
            let retry_refused = config.oauth.is_some() && attempt < 2;
            let connection = match self.connection(&key, name, &authorized).await {
                Ok(connection) => connection,
                Err(ToolCallError::Unauthorized(reason)) if retry_refused => {
                    tracing::info!(server = %name, %reason, "the server refused its OAuth token; refreshing it");
                    refused = authorized.api_key;
                    continue;
                }
                Err(error) => return Err(error),
            };
            match connection.call(tool, arguments.clone()).await {
                Err(ToolCallError::Unauthorized(reason)) => {
                    self.evict(&key, &connection);
                    if !retry_refused {
                        return Err(ToolCallError::Unauthorized(reason));
                    }
                    tracing::info!(server = %name, %reason, "the server refused its OAuth token; refreshing it");
                    refused = authorized.api_key;
                }
                Err(ToolCallError::Unsent(reason)) => {
                    self.evict(&key, &connection);
                    if attempt >= 2 {
                        return Err(ToolCallError::Unsent(reason));
                    }
                    tracing::info!(server = %name, %reason, "reconnecting to resend an unsent tool call");
                }
                Err(error @ ToolCallError::Closed(_)) => {
                    self.evict(&key, &connection);
                    return Err(error);
                }
                other => return other,
            }
        }
    }
}
