//! Connections to registered servers, kept open and shared between runs of one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::JsonObject;
use serde_json::Value;

use super::{McpConnection, McpServerConfig, ToolCallError};

pub struct McpPool {
    default_timeout: Duration,
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
            connections: Mutex::default(),
        }
    }

    fn cached(&self, key: &str) -> Option<Arc<McpConnection>> {
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections.get(key).filter(|c| c.is_alive()).cloned()
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
        if let Some(connection) = self.cached(key) {
            return Ok(connection);
        }
        let connection = McpConnection::connect(name, config, self.default_timeout)
            .await
            .map(Arc::new)
            .map_err(|error| {
                ToolCallError::Execution(format!("MCP server `{name}` is unavailable: {error}"))
            })?;
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        Ok(connections
            .entry(key.to_owned())
            .and_modify(|existing| {
                if !existing.is_alive() {
                    *existing = connection.clone();
                }
            })
            .or_insert(connection)
            .clone())
    }

    /// Calls a tool on a registered server. A request that never left is tried once more on a
    /// fresh connection; one that may have reached the server is never repeated.
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
        loop {
            attempt += 1;
            let connection = self.connection(&key, name, config).await?;
            match connection.call(tool, arguments.clone()).await {
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
