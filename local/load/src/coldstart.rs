//! `sage-load cold-start`: a Lambda function binary's cold start, measured without cargo-lambda.
//!
//! We serve the Lambda Runtime API ourselves on 127.0.0.1 (the endpoints lambda_runtime 1.x
//! calls: `GET /2018-06-01/runtime/invocation/next`, `POST .../invocation/{id}/response` —
//! buffered, or streamed with `Lambda-Runtime-Function-Response-Mode: streaming`, chunked, a
//! JSON prelude then 8 NUL bytes then the body, error trailers — `POST .../invocation/{id}/error`
//! and `POST /2018-06-01/runtime/init/error`), start the binary with the environment Lambda
//! gives it, hand it one event, and time process start → `next` (init done) → first response
//! byte → whole response.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::stats::median;

#[derive(Debug, Args)]
pub struct ColdStartArgs {
    /// The function binary (a `bootstrap`, or target/debug/sage-health ...).
    #[arg(long)]
    pub bootstrap: PathBuf,
    /// The invocation event (JSON), e.g. tests/fixtures/function-url-health.json.
    #[arg(long)]
    pub event: PathBuf,
    /// How many cold starts to measure.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Extra environment for the function; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// AWS_LAMBDA_FUNCTION_NAME (default: the binary's file name).
    #[arg(long = "function-name")]
    pub function_name: Option<String>,
    /// Port of the Runtime API (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Give up on a run after this long.
    #[arg(long = "timeout-s", default_value_t = 30.0)]
    pub timeout_s: f64,
    /// Acknowledge the function's writes as the kernel does by default (delayed ACKs). By default
    /// the Runtime API ACKs at once: lambda_runtime's client does not set TCP_NODELAY, so behind
    /// a delayed ACK the bytes after a streamed response's prelude wait ~40 ms (Nagle), which
    /// would measure the TCP stack rather than the function.
    #[arg(long = "delayed-ack")]
    pub delayed_ack: bool,
    /// Let the function's stdout/stderr through instead of capturing them.
    #[arg(long = "show-output")]
    pub show_output: bool,
    #[arg(long)]
    pub json: bool,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Splits a streamed response into its metadata prelude (JSON) and its payload, at the first
/// run of 8 NUL bytes.
pub fn split_prelude(body: &[u8]) -> Option<(&[u8], &[u8])> {
    const DELIMITER: [u8; 8] = [0; 8];
    let at = body.windows(8).position(|w| w == DELIMITER)?;
    Some((&body[..at], &body[at + 8..]))
}

/// The HTTP status a proxy (Function URL, API Gateway) would answer: `statusCode` of the
/// streamed prelude, or of a buffered proxy response.
pub fn response_status(body: &[u8], streaming: bool) -> Option<u16> {
    let json = if streaming {
        split_prelude(body)?.0
    } else {
        body
    };
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    value.get("statusCode")?.as_u64()?.try_into().ok()
}

/// What the Runtime API saw, in order.
#[derive(Debug)]
enum Signal {
    Next(Instant),
    ResponseStart {
        streaming: bool,
    },
    FirstByte(Instant),
    /// Streamed: the first byte after the prelude and its delimiter.
    FirstPayloadByte(Instant),
    ResponseEnd {
        at: Instant,
        body: Vec<u8>,
        error_trailer: Option<String>,
    },
    Error {
        what: &'static str,
        error_type: String,
        body: String,
    },
    Unknown(String),
}

struct Invocation {
    request_id: String,
    function_arn: String,
    event: Bytes,
    delivered: bool,
    deadline_ms: u64,
    signals: mpsc::UnboundedSender<Signal>,
}

#[derive(Default)]
struct Api {
    current: Mutex<Option<Invocation>>,
}

impl Api {
    fn signal(&self, signal: Signal) {
        if let Ok(current) = self.current.lock()
            && let Some(invocation) = current.as_ref()
        {
            let _ = invocation.signals.send(signal);
        }
    }
}

fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(unknown)
        .with_state(api)
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        "{\"status\":\"OK\"}",
    )
        .into_response()
}

async fn next(State(api): State<Arc<Api>>) -> Response {
    let ready = {
        let Ok(mut current) = api.current.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        match current.as_mut() {
            Some(invocation) if !invocation.delivered => {
                invocation.delivered = true;
                let _ = invocation.signals.send(Signal::Next(Instant::now()));
                Some((
                    invocation.request_id.clone(),
                    invocation.function_arn.clone(),
                    invocation.deadline_ms,
                    invocation.event.clone(),
                ))
            }
            _ => None,
        }
    };
    let Some((request_id, arn, deadline_ms, event)) = ready else {
        // One invocation per process: the next `next` waits until the process is killed.
        return std::future::pending().await;
    };
    let simple = request_id.replace('-', "");
    let trace = format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        deadline_ms / 1000,
        &simple[..24],
        &simple[16..32]
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", request_id)
        .header("lambda-runtime-deadline-ms", deadline_ms.to_string())
        .header("lambda-runtime-invoked-function-arn", arn)
        .header("lambda-runtime-trace-id", trace)
        .body(Body::from(event))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn is_current(api: &Api, id: &str) -> bool {
    api.current
        .lock()
        .ok()
        .is_some_and(|current| current.as_ref().is_some_and(|i| i.request_id == id))
}

async fn response(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !is_current(&api, &id) {
        return (StatusCode::BAD_REQUEST, "unknown request id").into_response();
    }
    let streaming = headers
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"streaming"));
    api.signal(Signal::ResponseStart { streaming });
    let mut body = body;
    let mut bytes = Vec::new();
    let mut first = true;
    let mut payload_seen = false;
    let mut error_trailer = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                api.signal(Signal::Error {
                    what: "response body",
                    error_type: "read".into(),
                    body: error.to_string(),
                });
                return StatusCode::BAD_REQUEST.into_response();
            }
        };
        if let Some(data) = frame.data_ref() {
            if data.is_empty() {
                continue;
            }
            if first {
                first = false;
                api.signal(Signal::FirstByte(Instant::now()));
            }
            bytes.extend_from_slice(data);
            if streaming
                && !payload_seen
                && split_prelude(&bytes).is_some_and(|(_, payload)| !payload.is_empty())
            {
                payload_seen = true;
                api.signal(Signal::FirstPayloadByte(Instant::now()));
            }
        } else if let Some(trailers) = frame.trailers_ref()
            && let Some(kind) = trailers.get("lambda-runtime-function-error-type")
        {
            let body = trailers
                .get("lambda-runtime-function-error-body")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            error_trailer = Some(format!("{}: {body}", kind.to_str().unwrap_or("?")));
        }
    }
    api.signal(Signal::ResponseEnd {
        at: Instant::now(),
        body: bytes,
        error_trailer,
    });
    accepted()
}

async fn error_report(api: &Api, what: &'static str, headers: &HeaderMap, body: Bytes) {
    let error_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_owned();
    api.signal(Signal::Error {
        what,
        error_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
}

async fn invocation_error(
    State(api): State<Arc<Api>>,
    Path(_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    error_report(&api, "invocation error", &headers, body).await;
    accepted()
}

async fn init_error(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    error_report(&api, "init error", &headers, body).await;
    accepted()
}

async fn unknown(State(api): State<Arc<Api>>, method: Method, uri: Uri) -> Response {
    api.signal(Signal::Unknown(format!("{method} {uri}")));
    StatusCode::NOT_FOUND.into_response()
}

/// Sets TCP_QUICKACK: the kernel leaves quick-ACK mode again on its own, so it is set after every
/// read.
fn quick_ack(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `one` for the given length; the descriptor is open.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A connection that acknowledges every read at once.
struct QuickAckStream(tokio::net::TcpStream);

impl tokio::io::AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if polled.is_ready() {
            quick_ack(&self.0);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

struct QuickAckListener(tokio::net::TcpListener);

impl axum::serve::Listener for QuickAckListener {
    type Io = QuickAckStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, address)) => {
                    let _ = stream.set_nodelay(true);
                    quick_ack(&stream);
                    return (QuickAckStream(stream), address);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// One cold start.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Process start → the runtime's first `GET .../invocation/next` (init done).
    pub init_ms: Option<f64>,
    /// Process start → the first byte of the response (for a streamed one: of its prelude).
    pub first_byte_ms: Option<f64>,
    /// Streamed: process start → the first byte of the body after the prelude.
    pub first_payload_byte_ms: Option<f64>,
    /// Process start → the end of the response.
    pub full_ms: Option<f64>,
    pub streaming: bool,
    pub status_code: Option<u16>,
    pub response_bytes: usize,
    pub failure: Option<String>,
}

/// Keeps the last bytes a child wrote, for the failure message.
fn capture<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: Option<R>,
    sink: Arc<Mutex<Vec<u8>>>,
) {
    const KEEP: usize = 4096;
    let Some(mut reader) = reader else { return };
    tokio::spawn(async move {
        let mut buffer = [0u8; 4096];
        while let Ok(read) = reader.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            if let Ok(mut sink) = sink.lock() {
                sink.extend_from_slice(&buffer[..read]);
                if sink.len() > 2 * KEEP {
                    let cut = sink.len() - KEEP;
                    sink.drain(..cut);
                }
            }
        }
    });
}

fn since(start: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(start).as_secs_f64() * 1000.0
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

async fn run_once(
    args: &ColdStartArgs,
    api: &Arc<Api>,
    address: &str,
    function_name: &str,
    event: &Bytes,
) -> Result<Run, String> {
    let (signals, mut received) = mpsc::unbounded_channel();
    let request_id = uuid::Uuid::new_v4().to_string();
    let timeout = Duration::from_secs_f64(args.timeout_s);
    *api.current.lock().map_err(|_| "lock poisoned")? = Some(Invocation {
        request_id: request_id.clone(),
        function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function_name}"),
        event: event.clone(),
        delivered: false,
        deadline_ms: epoch_ms() + timeout.as_millis() as u64,
        signals,
    });

    let mut command = tokio::process::Command::new(&args.bootstrap);
    command
        .env("AWS_LAMBDA_RUNTIME_API", address)
        .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env(
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!("2026/01/01/[$LATEST]{}", request_id.replace('-', "")),
        )
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function_name}"),
        )
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .envs(args.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = Arc::new(Mutex::new(Vec::new()));
    if !args.show_output {
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    }
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.bootstrap.display()))?;
    capture(child.stdout.take(), output.clone());
    capture(child.stderr.take(), output.clone());

    let mut run = Run {
        init_ms: None,
        first_byte_ms: None,
        first_payload_byte_ms: None,
        full_ms: None,
        streaming: false,
        status_code: None,
        response_bytes: 0,
        failure: None,
    };
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            signal = received.recv() => match signal {
                Some(Signal::Next(at)) => run.init_ms = Some(since(start, at)),
                Some(Signal::ResponseStart { streaming }) => run.streaming = streaming,
                Some(Signal::FirstByte(at)) => run.first_byte_ms = Some(since(start, at)),
                Some(Signal::FirstPayloadByte(at)) => {
                    run.first_payload_byte_ms = Some(since(start, at));
                }
                Some(Signal::ResponseEnd { at, body, error_trailer }) => {
                    run.full_ms = Some(since(start, at));
                    run.response_bytes = body.len();
                    run.status_code = response_status(&body, run.streaming);
                    if let Some(trailer) = error_trailer {
                        run.failure = Some(format!("mid-stream error trailer {trailer}"));
                    } else if run.status_code.is_none() {
                        let shown: String = String::from_utf8_lossy(&body).chars().take(300).collect();
                        run.failure = Some(format!("no statusCode in the response: {shown:?}"));
                    }
                    break;
                }
                Some(Signal::Error { what, error_type, body }) => {
                    run.failure = Some(format!("{what} ({error_type}): {body}"));
                    break;
                }
                Some(Signal::Unknown(request)) => {
                    run.failure = Some(format!("unexpected Runtime API call {request}"));
                    break;
                }
                None => {
                    run.failure = Some("the Runtime API stopped".into());
                    break;
                }
            },
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                // Let the output readers drain.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let tail = output.lock().map(|o| String::from_utf8_lossy(&o).into_owned()).unwrap_or_default();
                let tail: String = tail.chars().rev().take(1500).collect::<Vec<_>>().into_iter().rev().collect();
                run.failure = Some(format!("the process exited ({status}) before responding; its output ends with: {}", tail.trim()));
                break;
            }
            _ = &mut deadline => {
                run.failure = Some(format!("no complete response within {timeout:?}"));
                break;
            }
        }
    }
    let _ = child.kill().await;
    if let Ok(mut current) = api.current.lock() {
        *current = None;
    }
    Ok(run)
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

fn spread(values: impl Iterator<Item = Option<f64>>) -> Option<Spread> {
    let values: Vec<f64> = values.flatten().collect();
    Some(Spread {
        min: values.iter().copied().reduce(f64::min)?,
        median: median(&values)?,
        max: values.iter().copied().reduce(f64::max)?,
    })
}

#[derive(Serialize)]
struct Summary {
    init_ms: Option<Spread>,
    first_byte_ms: Option<Spread>,
    first_payload_byte_ms: Option<Spread>,
    full_ms: Option<Spread>,
}

#[derive(Serialize)]
struct Output<'a> {
    bootstrap: String,
    bootstrap_bytes: Option<u64>,
    event: String,
    runs: &'a [Run],
    /// Over the successful runs.
    summary: Summary,
    successes: usize,
    status_codes: Vec<u16>,
}

pub async fn cold_start(args: ColdStartArgs) -> Result<(), String> {
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let event = Bytes::from(
        std::fs::read(&args.event)
            .map_err(|e| format!("cannot read {}: {e}", args.event.display()))?,
    );
    serde_json::from_slice::<serde_json::Value>(&event)
        .map_err(|e| format!("{} is not JSON: {e}", args.event.display()))?;
    let size = std::fs::metadata(&args.bootstrap)
        .map_err(|e| format!("cannot find {}: {e}", args.bootstrap.display()))?
        .len();
    let function_name = args.function_name.clone().unwrap_or_else(|| {
        args.bootstrap
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "function".into())
    });

    let api = Arc::new(Api::default());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", args.port))?;
    let address = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    let server = if args.delayed_ack {
        tokio::spawn(axum::serve(listener, router(api.clone())).into_future())
    } else {
        tokio::spawn(axum::serve(QuickAckListener(listener), router(api.clone())).into_future())
    };

    let mut runs = Vec::with_capacity(args.runs);
    for index in 0..args.runs {
        let run = run_once(&args, &api, &address, &function_name, &event).await?;
        if !args.json {
            eprintln!(
                "run {:>2}: init {}  first byte {}{}  full {}  status {}{}",
                index + 1,
                ms(run.init_ms),
                ms(run.first_byte_ms),
                if run.streaming {
                    format!("  first payload byte {}", ms(run.first_payload_byte_ms))
                } else {
                    String::new()
                },
                ms(run.full_ms),
                run.status_code
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                run.failure
                    .as_deref()
                    .map(|f| format!("  FAILED: {f}"))
                    .unwrap_or_default()
            );
        }
        runs.push(run);
    }
    server.abort();

    let ok: Vec<&Run> = runs.iter().filter(|r| r.failure.is_none()).collect();
    let summary = Summary {
        init_ms: spread(ok.iter().map(|r| r.init_ms)),
        first_byte_ms: spread(ok.iter().map(|r| r.first_byte_ms)),
        first_payload_byte_ms: spread(ok.iter().map(|r| r.first_payload_byte_ms)),
        full_ms: spread(ok.iter().map(|r| r.full_ms)),
    };
    let mut status_codes: Vec<u16> = runs.iter().filter_map(|r| r.status_code).collect();
    status_codes.sort_unstable();
    status_codes.dedup();
    let output = Output {
        bootstrap: args.bootstrap.display().to_string(),
        bootstrap_bytes: Some(size),
        event: args.event.display().to_string(),
        runs: &runs,
        summary,
        successes: ok.len(),
        status_codes,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&output).map_err(|e| e.to_string())?
        );
    } else {
        eprintln!(
            "{} ({:.1} MiB), {} of {} runs succeeded, status codes {:?}",
            output.bootstrap,
            size as f64 / (1024.0 * 1024.0),
            output.successes,
            runs.len(),
            output.status_codes
        );
        if output.successes > 0 {
            eprintln!(
                "{:<28}{:>10}{:>10}{:>10}",
                "ms from process start", "min", "median", "max"
            );
        }
        for (name, spread) in [
            ("  init done (next)", output.summary.init_ms),
            ("  first response byte", output.summary.first_byte_ms),
            ("  first payload byte", output.summary.first_payload_byte_ms),
            ("  full response", output.summary.full_ms),
        ] {
            if let Some(s) = spread {
                eprintln!("{name:<28}{:>10.2}{:>10.2}{:>10.2}", s.min, s.median, s.max);
            }
        }
    }
    let failed = runs.len() - ok.len();
    if failed > 0 {
        return Err(format!("{failed} of {} runs failed", runs.len()));
    }
    Ok(())
}

fn ms(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.2} ms"))
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_prelude_is_split_at_eight_nuls() {
        let mut body =
            br#"{"statusCode":201,"headers":{"content-type":"text/event-stream"},"cookies":[]}"#
                .to_vec();
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(b"id: 1\ndata: {}\n\n");
        let (prelude, payload) = split_prelude(&body).unwrap();
        assert!(prelude.starts_with(b"{\"statusCode\":201"));
        assert_eq!(payload, b"id: 1\ndata: {}\n\n");
        assert_eq!(response_status(&body, true), Some(201));
        // Fewer than 8 NULs is no delimiter.
        assert_eq!(split_prelude(b"{}\0\0\0\0\0\0\0x"), None);
        // A prelude with an empty body.
        let mut empty = b"{\"statusCode\":204}".to_vec();
        empty.extend_from_slice(&[0; 8]);
        assert_eq!(split_prelude(&empty).unwrap().1, b"");
        assert_eq!(response_status(&empty, true), Some(204));
    }

    #[test]
    fn buffered_proxy_responses_carry_their_status() {
        let body = br#"{"statusCode":200,"headers":{},"multiValueHeaders":{},"body":"{\"code\":200}","isBase64Encoded":false,"cookies":[]}"#;
        assert_eq!(response_status(body, false), Some(200));
        assert_eq!(response_status(b"{\"body\":\"x\"}", false), None);
        assert_eq!(response_status(b"not json", false), None);
        assert_eq!(response_status(body, true), None);
    }

    #[test]
    fn env_pairs_parse() {
        assert_eq!(
            parse_env("A=b=c").unwrap(),
            ("A".to_owned(), "b=c".to_owned())
        );
        assert_eq!(parse_env("A=").unwrap(), ("A".to_owned(), String::new()));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }

    #[test]
    fn spread_ignores_missing_values() {
        let s = spread([Some(3.0), None, Some(1.0), Some(2.0)].into_iter()).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        assert!(spread([None, None].into_iter()).is_none());
    }

    #[tokio::test]
    async fn the_runtime_api_hands_out_one_event_and_reads_responses_and_errors() {
        let api = Arc::new(Api::default());
        let (signals, mut received) = mpsc::unbounded_channel();
        *api.current.lock().unwrap() = Some(Invocation {
            request_id: "6f1e2d3c-0000-4000-8000-0123456789ab".into(),
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
            event: Bytes::from_static(b"{\"hello\":1}"),
            delivered: false,
            deadline_ms: 123,
            signals,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(QuickAckListener(listener), router(api.clone())).into_future());
        let base = format!("http://{address}/2018-06-01/runtime");
        let client = reqwest::Client::new();

        let next = client
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .unwrap();
        assert_eq!(next.status(), 200);
        let headers = next.headers();
        assert_eq!(
            headers["lambda-runtime-aws-request-id"],
            "6f1e2d3c-0000-4000-8000-0123456789ab"
        );
        assert_eq!(headers["lambda-runtime-deadline-ms"], "123");
        assert_eq!(
            headers["lambda-runtime-invoked-function-arn"],
            "arn:aws:lambda:us-east-1:123456789012:function:f"
        );
        let trace = headers["lambda-runtime-trace-id"].to_str().unwrap();
        assert!(
            trace.starts_with("Root=1-") && trace.contains(";Parent="),
            "{trace}"
        );
        assert_eq!(next.text().await.unwrap(), "{\"hello\":1}");
        // The process gets one event; its next `next` waits.
        let again = tokio::time::timeout(
            Duration::from_millis(200),
            client.get(format!("{base}/invocation/next")).send(),
        )
        .await;
        assert!(again.is_err());

        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(br#"{"statusCode":418,"headers":{}}"#.to_vec()),
            Ok(vec![0; 8]),
            Ok(b"{\"type\":\"stream_end\"}\n".to_vec()),
        ];
        let response = client
            .post(format!(
                "{base}/invocation/6f1e2d3c-0000-4000-8000-0123456789ab/response"
            ))
            .header("Lambda-Runtime-Function-Response-Mode", "streaming")
            .header(
                "Content-Type",
                "application/vnd.awslambda.http-integration-response",
            )
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let unknown = client
            .post(format!("{base}/invocation/someone-else/response"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 400);
        let init = client
            .post(format!("{base}/init/error"))
            .header("lambda-runtime-function-error-type", "Runtime.InitError")
            .body(r#"{"errorMessage":"boom"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(init.status(), 202);

        let mut seen = Vec::new();
        while let Ok(Some(signal)) =
            tokio::time::timeout(Duration::from_millis(200), received.recv()).await
        {
            seen.push(signal);
        }
        assert!(matches!(seen[0], Signal::Next(_)), "{seen:?}");
        assert!(matches!(seen[1], Signal::ResponseStart { streaming: true }));
        assert!(matches!(seen[2], Signal::FirstByte(_)));
        assert!(matches!(seen[3], Signal::FirstPayloadByte(_)));
        let Signal::ResponseEnd {
            body,
            error_trailer,
            ..
        } = &seen[4]
        else {
            panic!("{seen:?}");
        };
        assert_eq!(error_trailer, &None);
        assert_eq!(response_status(body, true), Some(418));
        assert_eq!(
            split_prelude(body).unwrap().1,
            b"{\"type\":\"stream_end\"}\n"
        );
        let Signal::Error {
            what,
            error_type,
            body,
        } = &seen[5]
        else {
            panic!("{seen:?}");
        };
        assert_eq!(
            (*what, error_type.as_str(), body.as_str()),
            (
                "init error",
                "Runtime.InitError",
                r#"{"errorMessage":"boom"}"#
            )
        );
        assert_eq!(seen.len(), 6, "{seen:?}");
    }
}
