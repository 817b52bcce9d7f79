//! The application under test: in process without a socket (`App`), on a real socket in this
//! process (`Server`), or as the `sage-local` binary (`ShimProcess`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request};
use http_body_util::BodyExt;
use sage_core::Config;
use sage_mock_llm::MockOptions;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt;

use super::client::{NDJSON_CONTENT_TYPE, ndjson_events};
use super::llm::MockLlm;
use super::process::{ChildGuard, free_port, wait_for_port, workspace_binary};

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

/// The application as sage-local builds it (its state and every function's router), called in
/// process: each request goes through the router without a socket.
#[derive(Clone)]
pub struct App {
    pub state: sage_core::App,
    router: Router,
}

impl App {
    /// The one place the tests build the application from a configuration.
    pub async fn new(config: Config) -> Self {
        let state = sage_core::App::from_config(config)
            .await
            .expect("the application builds");
        let router = sage_core::local_router(state.clone());
        Self { state, router }
    }

    /// One request through the router, its answer read to the end.
    async fn call(&self, request: Request<Body>) -> (u16, HeaderMap, Bytes) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the body reads").to_bytes();
        (parts.status.as_u16(), parts.headers, body)
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        json_body: Option<String>,
    ) -> (u16, HeaderMap, Bytes) {
        let request = Request::builder().method(method).uri(uri);
        let request = match json_body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body)),
            None => request.body(Body::empty()),
        };
        self.call(request.unwrap()).await
    }

    /// GET, returning status and JSON body.
    pub async fn get_json(&self, uri: &str) -> (u16, Value) {
        let (status, _, body) = self.send(Method::GET, uri, None).await;
        (status, serde_json::from_slice(&body).expect("a JSON body"))
    }

    /// GET, returning status and text body.
    pub async fn get_text(&self, uri: &str) -> (u16, String) {
        let (status, _, body) = self.send(Method::GET, uri, None).await;
        (status, String::from_utf8(body.to_vec()).expect("UTF-8"))
    }

    /// Sends `body` as JSON with `method`, returning status and JSON body.
    pub async fn send_json(&self, method: Method, uri: &str, body: &Value) -> (u16, Value) {
        self.send_raw_json(method, uri, &body.to_string()).await
    }

    /// Sends `body` as it is (well-formed or not) labelled as JSON, returning status and JSON
    /// body.
    pub async fn send_raw_json(&self, method: Method, uri: &str, body: &str) -> (u16, Value) {
        let (status, _, body) = self.send(method, uri, Some(body.to_owned())).await;
        (status, serde_json::from_slice(&body).expect("a JSON body"))
    }

    /// POSTs to a streaming endpoint and reads the NDJSON answer to its end.
    pub async fn post_ndjson(&self, uri: &str, body: &Value) -> Vec<Value> {
        let (status, headers, text) = self.send(Method::POST, uri, Some(body.to_string())).await;
        assert_eq!(status, 200, "stream request failed");
        assert_eq!(headers["content-type"], NDJSON_CONTENT_TYPE);
        ndjson_events(std::str::from_utf8(&text).expect("UTF-8"))
    }
}

/// The local shim serving every function on a real socket, in this process.
/// Dropping it shuts the server down.
pub struct Server {
    pub url: String,
    pub state: sage_core::App,
    _shutdown: oneshot::Sender<()>,
}

impl Server {
    pub async fn start(config: Config) -> Self {
        let state = App::new(config).await.state;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(sage_local::serve(listener, state.clone(), async {
            let _ = stop.await;
        }));
        Self {
            url: format!("http://{address}"),
            state,
            _shutdown: shutdown,
        }
    }

    /// Starts with the preset MCP servers registering in the background, as the binaries do.
    pub async fn start_with_presets(config: Config) -> Self {
        let server = Self::start(config).await;
        server.state.start_background_tasks();
        server
    }
}

/// A mock model plus the shim on a socket using it, over a fresh SQLite directory.
pub struct TestEnv {
    pub llm: MockLlm,
    pub server: Server,
    dir: tempfile::TempDir,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with(MockOptions::default(), &[]).await
    }

    /// The folder the server keeps session workspaces in (the local object store).
    pub fn workspace(&self) -> std::path::PathBuf {
        self.dir.path().join("workspace")
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

/// A mock model plus the application in process (no socket) using it, over a fresh SQLite
/// directory.
pub struct AppEnv {
    pub llm: MockLlm,
    pub app: App,
    pub dir: tempfile::TempDir,
}

impl AppEnv {
    pub async fn new() -> Self {
        Self::with_flags(&[]).await
    }

    /// With `flags` added to the test configuration.
    pub async fn with_flags(flags: &[&str]) -> Self {
        Self::with(MockOptions::default(), flags).await
    }

    /// A model scripted with `options`, and `flags` added to the test configuration.
    pub async fn with(options: MockOptions, flags: &[&str]) -> Self {
        let llm = MockLlm::start(options).await;
        let dir = tempfile::tempdir().unwrap();
        let app = App::new(test_config(&llm.base_url, dir.path(), flags)).await;
        Self { llm, app, dir }
    }
}

/// `sage-local` as a process, killed on drop.
/// `sage-local` on the `file` store in `dir`, the scripted model at `llm_base_url` as its
/// provider, with `extra` flags and `env` added.
pub async fn sage_local_on_file_store(
    dir: &Path,
    llm_base_url: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> ShimProcess {
    let db = dir.join("db").display().to_string();
    let mut args = vec![
        "--db_type",
        "file",
        "--db_path",
        &db,
        "--default_llm_api_key",
        "k",
        "--default_llm_api_base_url",
        llm_base_url,
    ];
    args.extend_from_slice(extra);
    ShimProcess::start(dir, &args, env).await
}

/// `sage-local` on a fresh DynamoDB table on moto, the scripted model at `llm_base_url` as its
/// provider, with `extra` flags; the table's name with it.
pub async fn sage_local_on_dynamodb(
    dir: &Path,
    llm_base_url: &str,
    extra: &[&str],
) -> (ShimProcess, String) {
    let table = crate::common::fresh_name("sage_dynamo");
    let shim = sage_local_on_dynamodb_table(dir, llm_base_url, &table, extra).await;
    (shim, table)
}

/// `sage-local` on DynamoDB table `table` on moto (another instance may share it), the scripted
/// model at `llm_base_url` as its provider, with `extra` flags.
pub async fn sage_local_on_dynamodb_table(
    dir: &Path,
    llm_base_url: &str,
    table: &str,
    extra: &[&str],
) -> ShimProcess {
    let endpoint = crate::common::dynamodb_endpoint();
    let mut args = crate::common::dynamodb_flags(&endpoint, table).to_vec();
    args.extend([
        "--default_llm_api_key",
        "k",
        "--default_llm_api_base_url",
        llm_base_url,
    ]);
    args.extend_from_slice(extra);
    ShimProcess::start(dir, &args, &crate::common::MOTO_ENV).await
}

/// `sage-local` on the `file` store with its files in a fresh S3 bucket on moto, the scripted
/// model as its provider.
pub struct SageLocalOnS3 {
    _llm: MockLlm,
    pub shim: ShimProcess,
    pub bucket: String,
    _dir: tempfile::TempDir,
}

impl SageLocalOnS3 {
    pub async fn start(bucket_prefix: &str) -> Self {
        let llm = MockLlm::start(MockOptions::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let endpoint = crate::common::dynamodb_endpoint();
        let bucket = crate::common::fresh_name(bucket_prefix).replace('_', "-");
        let flags = [
            "--minio_endpoint",
            endpoint.as_str(),
            "--minio_bucket_name",
            bucket.as_str(),
        ];
        let shim =
            sage_local_on_file_store(dir.path(), &llm.base_url, &flags, &crate::common::MOTO_ENV)
                .await;
        Self {
            _llm: llm,
            shim,
            bucket,
            _dir: dir,
        }
    }
}

pub struct ShimProcess {
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
            url: format!("http://127.0.0.1:{port}"),
            _child: ChildGuard(child),
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would: no cleanup runs.
    pub fn kill(self) {}
}

/// What `sage-local` wrote on stderr from its start until it served a request: started with
/// `--host 127.0.0.1 --port <free port>`, `args` and exactly the environment `env`, in `dir`.
pub async fn shim_startup_log(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let shim = ChildGuard(
        std::process::Command::new(workspace_binary("sage-local"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("sage-local starts"),
    );
    wait_for_port(port, Duration::from_secs(30)).await;
    // An answer means start-up is over: everything it logs is in the file.
    reqwest::get(format!("http://127.0.0.1:{port}/api/health"))
        .await
        .expect("sage-local answers once it listens");
    drop(shim);
    strip_ansi(&std::fs::read_to_string(log.path()).unwrap())
}

/// `text` without ANSI escape sequences (the log colours its levels).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
