//! The tools one run may use: the allow-list resolved against the caller's registered servers
//! (their stored tool lists, connections from the pool) and the request's `extra_mcp_config`
//! (connected for this run only).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{
    BuiltinTools, McpConnection, McpPolicy, McpPool, McpServerConfig, ToolCallError, ToolSpec,
    check_arguments, parse_arguments,
};
use crate::store::McpServerRecord;

enum ToolSource {
    Builtin(Arc<dyn BuiltinTools>),
    Request(Arc<McpConnection>),
    Registered(Box<RegisteredServer>),
}

struct RegisteredServer {
    owner: String,
    name: String,
    config: McpServerConfig,
}

struct ToolEntry {
    spec: ToolSpec,
    source: ToolSource,
    /// Its MCP server requires the owner's approval of every call.
    server_requires_approval: bool,
}

#[derive(Default)]
pub struct ToolBox {
    by_name: HashMap<String, ToolEntry>,
    request_connections: Vec<Arc<McpConnection>>,
    pool: Option<Arc<McpPool>>,
}

impl ToolBox {
    /// Request servers come first, then the registered ones in the order given, then the built-in
    /// tools (which win over an MCP tool of the same name). A request server
    /// that is refused by the policy or cannot be reached is logged and skipped.
    pub async fn build(
        registered: &[McpServerRecord],
        request_servers: &BTreeMap<String, McpServerConfig>,
        allowed: &[String],
        policy: McpPolicy,
        builtin: &[Arc<dyn BuiltinTools>],
        pool: Arc<McpPool>,
        default_timeout: Duration,
    ) -> Self {
        let mut toolbox = Self {
            pool: Some(pool),
            ..Self::default()
        };
        if allowed.is_empty() {
            for tools in builtin {
                toolbox.add_builtin(tools.clone());
            }
            return toolbox;
        }
        let enabled = request_servers
            .iter()
            .filter(|(_, config)| !config.disabled);
        let attempts = enabled.map(|(name, config)| async move {
            if let Err(error) = policy.check(config).await {
                return (name, Err(error));
            }
            (
                name,
                McpConnection::connect(name, config, default_timeout).await,
            )
        });
        for (name, attempt) in futures_util::future::join_all(attempts).await {
            match attempt {
                Ok(connection) => {
                    let connection = Arc::new(connection);
                    let approval = request_servers[name].require_approval;
                    for spec in connection.tool_specs() {
                        toolbox.offer(spec, allowed, approval, || {
                            ToolSource::Request(connection.clone())
                        });
                    }
                    toolbox.request_connections.push(connection);
                }
                Err(error) => {
                    tracing::warn!(server = %name, %error, "MCP server unavailable for this run")
                }
            }
        }
        for record in registered.iter().filter(|record| !record.config.disabled) {
            for spec in &record.tools {
                toolbox.offer(
                    spec.clone(),
                    allowed,
                    record.config.require_approval,
                    || {
                        ToolSource::Registered(Box::new(RegisteredServer {
                            owner: record.owner.clone(),
                            name: record.name.clone(),
                            config: record.config.clone(),
                        }))
                    },
                );
            }
        }
        for tools in builtin {
            toolbox.add_builtin(tools.clone());
        }
        for name in allowed {
            if !toolbox.by_name.contains_key(name) {
                tracing::warn!(tool = %name, "requested tool is not offered by any server; dropped");
            }
        }
        toolbox
    }

    fn offer(
        &mut self,
        spec: ToolSpec,
        allowed: &[String],
        server_requires_approval: bool,
        source: impl FnOnce() -> ToolSource,
    ) {
        if allowed.contains(&spec.name) && !self.by_name.contains_key(&spec.name) {
            self.by_name.insert(
                spec.name.clone(),
                ToolEntry {
                    spec,
                    source: source(),
                    server_requires_approval,
                },
            );
        }
    }

    /// Offers every tool of `tools`, whatever the allow-list; they win over MCP tools of the
    /// same name.
    fn add_builtin(&mut self, tools: Arc<dyn BuiltinTools>) {
        for spec in tools.specs() {
            self.by_name.insert(
                spec.name.clone(),
                ToolEntry {
                    spec,
                    source: ToolSource::Builtin(tools.clone()),
                    server_requires_approval: false,
                },
            );
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The tools on offer, sorted by name.
    pub fn specs(&self) -> Vec<&ToolSpec> {
        let mut specs: Vec<&ToolSpec> = self.by_name.values().map(|entry| &entry.spec).collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }

    /// Withdraws every tool not in `names`: the model is no longer offered them, and a call to
    /// one is a `TOOL_NOT_FOUND` error.
    pub fn keep_only(&mut self, names: &[String]) {
        self.by_name.retain(|name, _| names.contains(name));
    }

    /// Tool definitions in the OpenAI `tools` format, sorted by name for stable prompts.
    pub fn definitions(&self) -> Vec<Value> {
        self.specs().into_iter().map(ToolSpec::definition).collect()
    }

    pub async fn call(&self, tool: &str, arguments: &str) -> Result<Value, ToolCallError> {
        let entry = self
            .by_name
            .get(tool)
            .ok_or_else(|| ToolCallError::NotFound(tool.to_owned()))?;
        let arguments = parse_arguments(arguments)?;
        check_arguments(tool, &entry.spec.parameters, &arguments)?;
        match (&entry.source, &self.pool) {
            (ToolSource::Builtin(tools), _) => tools.call(tool, arguments).await,
            (ToolSource::Request(connection), _) => connection.call(tool, arguments).await,
            (ToolSource::Registered(server), Some(pool)) => {
                pool.call(&server.owner, &server.name, &server.config, tool, arguments)
                    .await
            }
            (ToolSource::Registered(_), None) => Err(ToolCallError::NotFound(tool.to_owned())),
        }
    }

    /// Whether `tool`'s MCP server requires the owner's approval of every call.
    pub fn server_requires_approval(&self, tool: &str) -> bool {
        self.by_name
            .get(tool)
            .is_some_and(|entry| entry.server_requires_approval)
    }

    /// Which server serves `tool`: its MCP server's name, or `builtin`.
    pub fn server_of(&self, tool: &str) -> Option<&str> {
        Some(match &self.by_name.get(tool)?.source {
            ToolSource::Builtin(_) => "builtin",
            ToolSource::Request(connection) => connection.name.as_str(),
            ToolSource::Registered(server) => server.name.as_str(),
        })
    }

    pub async fn close(self) {
        drop(self.by_name);
        for connection in self.request_connections {
            if let Ok(connection) = Arc::try_unwrap(connection) {
                connection.close().await;
            }
        }
    }
}
