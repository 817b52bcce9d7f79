//! Shared fixtures for the end-to-end tests: the scripted LLM, the shim on a real socket, the
//! official MCP SDK peers, and clients that read both framings.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use sage_core::{AppState, Config};
use sage_mock_llm::MockOptions;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The scripted OpenAI-compatible model, in process, on its own port.
pub struct MockLlm {
    pub base_url: String,
    _shutdown: oneshot::Sender<()>,
}

impl MockLlm {
    pub async fn start(options: MockOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(sage_mock_llm::serve(listener, options, async {
            let _ = stop.await;
        }));
        Self {
            base_url: format!("http://{address}/v1"),
            _shutdown: shutdown,
        }
    }

    /// The chat-completion bodies the model received, oldest first.
    pub async fn requests(&self) -> Vec<Value> {
        let url = format!("{}/../_mock/requests", self.base_url);
        let url = url.replace("/v1/../", "/");
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }
}

/// A configuration for tests: the `file` store in `db_dir`, the mock as default provider.
pub fn test_config(llm_base_url: &str, db_dir: &Path, extra: &[&str]) -> Config {
    let db_path = db_dir.display().to_string();
    let workspace = db_dir.join("workspace").display().to_string();
    let mut args = vec![
        "sage",
        "--workspace",
        &workspace,
        "--db_type",
        "file",
        "--db_path",
        &db_path,
        "--default_llm_api_key",
        "test-key",
        "--default_llm_api_base_url",
        llm_base_url,
        "--preset_running_config",
        "/nonexistent/agent_setting.json",
        "--preset_mcp_config",
        "/nonexistent/mcp_setting.json",
        "--mcp_allow_stdio",
    ];
    args.extend_from_slice(extra);
    Config::try_from_args(args).expect("test configuration parses")
}

/// The local shim serving every function on a real socket.
pub struct Server {
    pub url: String,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(config: Config) -> Self {
        let state = AppState::from_config(config).await.expect("state builds");
        Self::with_state(state).await
    }

    /// Starts with the preset MCP servers registering in the background, as the binaries do.
    pub async fn start_with_presets(config: Config) -> Self {
        let server = Self::start(config).await;
        server.state.start_background_tasks();
        server
    }

    pub async fn with_state(state: AppState) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let handle = tokio::spawn(sage_local::serve(listener, state.clone(), async {
            let _ = stop.await;
        }));
        Self {
            url: format!("http://{address}"),
            state,
            shutdown: Some(shutdown),
            handle: Some(handle),
        }
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
    }
}

/// A mock model plus a shim using it, over a fresh SQLite directory.
pub struct TestEnv {
    pub llm: MockLlm,
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with(MockOptions::default(), &[]).await
    }

    pub async fn with(options: MockOptions, extra_flags: &[&str]) -> Self {
        let llm = MockLlm::start(options).await;
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(test_config(&llm.base_url, dir.path(), extra_flags)).await;
        Self { llm, server, dir }
    }

    pub fn stream_url(&self) -> String {
        format!("{}/api/stream", self.server.url)
    }
}

/// POSTs to a streaming endpoint and reads the NDJSON answer to its end.
pub async fn post_ndjson(url: &str, body: &Value) -> Vec<Value> {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "stream request failed");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).expect("every line is one JSON object"))
        .collect()
}

#[derive(Debug, Clone)]
pub struct SseFrame {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// POSTs with `Accept: text/event-stream` and parses the frames.
pub async fn post_sse(url: &str, body: &Value) -> Vec<SseFrame> {
    let response = reqwest::Client::new()
        .post(url)
        .header("accept", "text/event-stream")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut events = response.bytes_stream().eventsource();
    let mut frames = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.expect("well-formed SSE");
        frames.push(SseFrame {
            id: event.id,
            event: event.event,
            data: serde_json::from_str(&event.data).expect("data is JSON"),
        });
    }
    frames
}

/// Asserts the mandatory tail: `token_usage` then `stream_end` counting the events before it.
pub fn assert_tail(events: &[Value], session_id: &str) {
    let count = events.len();
    assert!(count >= 2, "a stream has at least its tail: {events:?}");
    let usage = &events[count - 2];
    assert_eq!(usage["type"], "token_usage", "{usage}");
    assert_eq!(usage["role"], "assistant");
    assert_eq!(usage["session_id"], session_id);
    assert!(usage["metadata"]["token_usage"]["total_info"].is_object());
    assert!(usage["metadata"]["token_usage"]["per_step_info"].is_array());
    let end = &events[count - 1];
    assert_eq!(end["type"], "stream_end", "{end}");
    assert_eq!(end["session_id"], session_id);
    assert_eq!(end["total_stream_count"], (count - 1) as u64);
    for event in events {
        assert_eq!(event["session_id"], session_id, "session_id on every event");
        assert!(event["timestamp"].is_f64());
        assert_ne!(event["role"], "user", "user input is never echoed");
    }
}

pub fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["type"] == kind)
        .collect()
}

/// The answer text: the `do_subtask_result` deltas concatenated.
pub fn answer_text(events: &[Value]) -> String {
    of_type(events, "do_subtask_result")
        .iter()
        .filter_map(|event| event["content"].as_str())
        .collect()
}

pub fn session_of(events: &[Value]) -> String {
    events[0]["session_id"].as_str().unwrap().to_owned()
}

pub fn user_message(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on port {port} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        let child = tokio::process::Command::new(python())
            .args([peer_script(), transport.to_owned(), port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the MCP peer starts");
        wait_for_port(port, Duration::from_secs(20)).await;
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
        let child = tokio::process::Command::new("node")
            .args([everything_server_script(), "streamableHttp".to_owned()])
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs server-everything");
        wait_for_port(port, Duration::from_secs(30)).await;
        Self {
            port,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// GET with `?user_id=`, returning status and JSON body.
pub async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Sends `body` as JSON with `method`, returning status and JSON body.
pub async fn send_json(method: reqwest::Method, url: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A binary of the workspace, built if it is not there yet (`tests/run.sh` builds them all).
pub fn workspace_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let binary = target.join("debug").join(name);
    if !binary.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--bin", name])
            .current_dir(workspace_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {name} failed");
    }
    binary
}

/// A child process killed when dropped.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// MariaDB / MySQL for the tests: `SAGE_TEST_MYSQL_{HOST,PORT,USER,PASSWORD}`, by default the
/// machine's server at 127.0.0.1:3306 as root (`tests/run.sh` starts one when it is missing).
pub struct MysqlSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

pub fn mysql_settings() -> MysqlSettings {
    let var =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    MysqlSettings {
        host: var("SAGE_TEST_MYSQL_HOST", "127.0.0.1"),
        port: var("SAGE_TEST_MYSQL_PORT", "3306")
            .parse()
            .expect("a port number"),
        user: var("SAGE_TEST_MYSQL_USER", "root"),
        password: var("SAGE_TEST_MYSQL_PASSWORD", ""),
    }
}

/// A fresh database name, so that every test starts empty.
pub fn fresh_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub async fn mysql_store(database: &str) -> sage_core::store::SqlStore {
    let settings = mysql_settings();
    sage_core::store::SqlStore::connect_mysql(
        &settings.host,
        settings.port,
        &settings.user,
        &settings.password,
        database,
    )
    .await
    .unwrap_or_else(|error| {
        panic!(
            "MariaDB/MySQL at {}:{} is not reachable ({error}); run `bash tests/run.sh`, which starts it",
            settings.host, settings.port
        )
    })
}

/// The moto server `tests/run.sh` starts (`SAGE_TEST_DYNAMODB_ENDPOINT`).
pub fn dynamodb_endpoint() -> String {
    std::env::var("SAGE_TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!("SAGE_TEST_DYNAMODB_ENDPOINT is not set; run `bash tests/run.sh`, which starts moto")
    })
}

/// Environment for a child process that talks to moto.
pub const MOTO_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

pub async fn dynamo_store(table: &str) -> sage_core::store::DynamoStore {
    let credentials =
        aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "tests");
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(dynamodb_endpoint())
        .credentials_provider(credentials)
        .build();
    let store = sage_core::store::DynamoStore::with_client(
        aws_sdk_dynamodb::Client::from_conf(config),
        table,
    );
    store.create_table().await.unwrap_or_else(|error| {
        panic!("moto at {} refused the table: {error}", dynamodb_endpoint())
    });
    store
}

/// `sage-local` as a process, killed on drop.
pub struct ShimProcess {
    pub port: u16,
    pub url: String,
    _child: ChildGuard,
}

impl ShimProcess {
    /// Starts `sage-local` with `args` (host and port are added) and `env`, and waits for it.
    pub async fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = std::process::Command::new(workspace_binary("sage-local"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sage-local starts");
        wait_for_port(port, Duration::from_secs(30)).await;
        Self {
            port,
            url: format!("http://127.0.0.1:{port}"),
            _child: ChildGuard(child),
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would: no cleanup runs.
    pub fn kill(self) {}
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// Reads an NDJSON stream event by event, as a client that may hang up mid-run.
pub struct NdjsonReader {
    pub status: u16,
    pub first_seq: Option<u64>,
    stream: ByteStream,
    buffer: String,
}

impl NdjsonReader {
    pub async fn open(request: reqwest::RequestBuilder) -> Self {
        let response = request.send().await.unwrap();
        let first_seq = response
            .headers()
            .get("x-sage-first-seq")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Self {
            status: response.status().as_u16(),
            first_seq,
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    pub async fn post(url: &str, body: &Value) -> Self {
        Self::open(reqwest::Client::new().post(url).json(body)).await
    }

    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(newline) = self.buffer.find('\n') {
                let line: String = self.buffer.drain(..=newline).collect();
                return Some(serde_json::from_str(line.trim()).expect("a JSON line"));
            }
            let chunk = self.stream.next().await?.expect("the stream reads");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    pub async fn rest(mut self) -> Vec<Value> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// Waits until `check` holds, polling; fails with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// cargo-lambda, from the test venv or the PATH (`tests/run.sh` installs it).
pub fn cargo_lambda() -> PathBuf {
    let venv = workspace_root().join(".venv/bin/cargo-lambda");
    if venv.exists() {
        return venv;
    }
    let on_path = std::process::Command::new("cargo-lambda")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    assert!(
        on_path.is_ok_and(|status| status.success()),
        "cargo-lambda is missing; run `bash tests/run.sh`, which installs it"
    );
    PathBuf::from("cargo-lambda")
}

/// Reads an NDJSON body to its end, noting when each event arrived.
pub async fn read_arrivals(response: reqwest::Response) -> Vec<(Duration, Value)> {
    let started = std::time::Instant::now();
    let mut arrivals = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(newline) = buffer.find('\n') {
            let line: String = buffer.drain(..=newline).collect();
            if !line.trim().is_empty() {
                arrivals.push((
                    started.elapsed(),
                    serde_json::from_str(line.trim()).unwrap(),
                ));
            }
        }
    }
    arrivals
}

/// Asserts that at least two events arrived `gap` or more before the last one: the stream was
/// delivered as it was produced, not buffered to the end.
pub fn assert_incremental(arrivals: &[(Duration, Value)], gap: Duration) {
    let end = arrivals.last().expect("some events").0;
    let early = arrivals.iter().filter(|(at, _)| end - *at >= gap).count();
    assert!(
        early >= 2,
        "at least two events arrive well before the run ends: {:?}",
        arrivals
            .iter()
            .map(|(at, e)| (at.as_millis(), e["type"].clone()))
            .collect::<Vec<_>>()
    );
}

/// `cargo lambda watch` on 127.0.0.1:`port`, run from `dir`, with `--env-var`s; waits until it
/// listens. Killed on drop.
pub async fn start_cargo_lambda_watch(dir: &Path, port: u16, env_vars: &[String]) -> ChildGuard {
    let mut command = std::process::Command::new(cargo_lambda());
    command
        .args(["lambda", "watch", "--ignore-changes", "--quiet"])
        .args([
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &port.to_string(),
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for var in env_vars {
        command.args(["--env-var", var]);
    }
    let child = ChildGuard(command.spawn().expect("cargo lambda watch starts"));
    wait_for_port(port, Duration::from_secs(120)).await;
    child
}
