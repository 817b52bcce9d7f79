//! An MCP server as configured (preset file, storage, `extra_mcp_config`) and a tool as a server
//! describes it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The same shape in the preset file, in storage and in `extra_mcp_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// Every call to this server's tools waits for the session owner's approval.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
    /// The server takes OAuth tokens, which each user obtains by authorizing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<McpOAuthSettings>,
}

/// The settings a server registered with OAuth carries (`"oauth": {...}` in its config).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct McpOAuthSettings {
    /// The scopes to ask for; empty: those the server advertises.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
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
    /// The transport the fields select: legacy SSE, then streamable HTTP, then stdio.
    pub fn transport(&self) -> Option<TransportKind> {
        if let Some(url) = &self.sse_url {
            return Some(TransportKind::LegacySse(url.clone()));
        }
        if let Some(url) = self.streamable_http_url.as_ref().or(self.url.as_ref()) {
            return Some(TransportKind::StreamableHttp(url.clone()));
        }
        self.command.as_ref().map(|command| TransportKind::Stdio {
            command: command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
        })
    }

    /// The transport's name as `/api/mcp/list` shows it.
    pub fn protocol_name(&self) -> String {
        match self.transport() {
            Some(TransportKind::LegacySse(_)) => "sse".into(),
            Some(TransportKind::StreamableHttp(_)) => "streamable_http".into(),
            Some(TransportKind::Stdio { .. }) => "stdio".into(),
            None => self.protocol.clone().unwrap_or_default(),
        }
    }

    pub fn call_timeout(&self, default: Duration) -> Duration {
        self.timeout_s
            .filter(|seconds| *seconds > 0.0 && seconds.is_finite())
            .map(Duration::from_secs_f64)
            .unwrap_or(default)
    }
}

/// A tool as a server describes it, kept with the server so runs need not list tools anew.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The tool's input JSON schema.
    pub parameters: Value,
}

impl ToolSpec {
    /// The OpenAI `tools` entry.
    pub fn definition(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }
}
