//! The MCP servers the tests register: the official Python SDK server (tests/peers/mcp_server.py)
//! and npm `@modelcontextprotocol/server-everything`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::get_json;
use super::process::{free_port, wait_for_port, workspace_root};

/// The Python interpreter that has the official MCP SDK (`tests/run.sh` installs it).
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = std::env::var_os("SAGE_TEST_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
            let usable = std::process::Command::new(&python)
                .args(["-c", "from mcp.server.fastmcp import FastMCP"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            assert!(
                usable,
                "{} cannot import the MCP Python SDK; run `bash tests/run.sh`, which installs it",
                python.display()
            );
            python
        })
        .clone()
}

pub fn peer_script() -> String {
    workspace_root()
        .join("tests/peers/mcp_server.py")
        .display()
        .to_string()
}

/// `extra_mcp_config` entry for the Python SDK server over stdio.
pub fn stdio_peer(extra: Value) -> Value {
    let mut config = json!({
        "command": python().display().to_string(),
        "args": [peer_script(), "stdio"],
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    config
}

/// Starts a peer server quietly, killed on drop, and waits until it listens on `port`.
async fn spawn_peer(
    mut command: tokio::process::Command,
    port: u16,
    wait: Duration,
) -> tokio::process::Child {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the MCP peer starts");
    wait_for_port(port, wait).await;
    child
}

/// The Python SDK server over an HTTP transport, as a child process killed on drop.
pub struct HttpPeer {
    pub port: u16,
    _child: tokio::process::Child,
}

impl HttpPeer {
    /// `transport` is `streamable-http` (endpoint `/mcp`) or `sse` (endpoint `/sse`).
    pub async fn start(transport: &str) -> Self {
        Self::start_on(transport, free_port()).await
    }

    pub async fn start_on(transport: &str, port: u16) -> Self {
        let mut command = tokio::process::Command::new(python());
        command.args([peer_script(), transport.to_owned(), port.to_string()]);
        let child = spawn_peer(command, port, Duration::from_secs(20)).await;
        Self {
            port,
            _child: child,
        }
    }

    /// Kills the server and waits until it is gone, so its port is free again.
    pub async fn stop(mut self) {
        let _ = self._child.kill().await;
    }

    pub fn streamable_http_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn sse_url(&self) -> String {
        format!("http://127.0.0.1:{}/sse", self.port)
    }
}

/// npm `@modelcontextprotocol/server-everything` (installed by `tests/run.sh` under tests/peers).
pub fn everything_server_script() -> String {
    let script = workspace_root()
        .join("tests/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        script.exists(),
        "{} is missing; run `bash tests/run.sh`, which installs it",
        script.display()
    );
    script.display().to_string()
}

/// server-everything over streamable HTTP (`/mcp`), killed on drop.
pub struct EverythingHttp {
    pub port: u16,
    _child: tokio::process::Child,
}

impl EverythingHttp {
    pub async fn start() -> Self {
        let port = free_port();
        let mut command = tokio::process::Command::new("node");
        command
            .args([everything_server_script(), "streamableHttp".to_owned()])
            .env("PORT", port.to_string());
        let child = spawn_peer(command, port, Duration::from_secs(30)).await;
        Self {
            port,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// The Python SDK's OAuth-protected server (tests/peers/mcp_oauth_server.py): authorization
/// server and resource server in one process, approving every authorization at once; its access
/// tokens live `token_seconds`. Killed on drop.
pub struct OAuthPeer {
    pub port: u16,
    _child: tokio::process::Child,
}

impl OAuthPeer {
    pub async fn start(token_seconds: u64) -> Self {
        let port = free_port();
        let script = workspace_root().join("tests/peers/mcp_oauth_server.py");
        let mut command = tokio::process::Command::new(python());
        command.args([
            script.display().to_string(),
            port.to_string(),
            token_seconds.to_string(),
        ]);
        let child = spawn_peer(command, port, Duration::from_secs(20)).await;
        Self {
            port,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Forgets every access token it issued, and with `refresh_tokens` the refresh tokens too.
    pub async fn revoke(&self, refresh_tokens: bool) {
        let query = if refresh_tokens { "?refresh=1" } else { "" };
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/revoke{query}", self.port))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    /// What it counted: registrations, code exchanges, refreshes, refused refreshes.
    pub async fn stats(&self) -> Value {
        let (status, stats) = get_json(&format!("http://127.0.0.1:{}/stats", self.port)).await;
        assert_eq!(status, 200);
        stats
    }
}

/// Follows the authorization URL as a browser would, to the redirect back to us, which it
/// returns without following.
pub async fn approve(authorization_url: &str) -> String {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = browser.get(authorization_url).send().await.unwrap();
    assert_eq!(response.status(), 302, "{}", response.text().await.unwrap());
    response.headers()["location"].to_str().unwrap().to_owned()
}
