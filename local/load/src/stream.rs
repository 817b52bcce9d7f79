//! `sage-load stream` and `sage-load hold`: many concurrent streams against `/api/stream` (or,
//! as the baseline, straight against an OpenAI-compatible model), one client, one runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Client, StatusCode, Url};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::parse::{Classified, LineSplitter, Wire};
use crate::stats::{Failure, Outcome, Percentiles, Report, Stats};
use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// One JSON object per line (Sage's default).
    Ndjson,
    /// Server-sent events (`Accept: text/event-stream`).
    Sse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `POST {url}/api/stream` of a Sage server.
    Server,
    /// `POST {url}/v1/chat/completions` of an OpenAI-compatible model (the baseline).
    Llm,
}

/// What `stream` and `hold` share: where, what, how.
#[derive(Debug, Args)]
pub struct Common {
    /// Base URL: the server's, or with `--target llm` the model's (its root or `.../v1`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, value_enum, default_value_t = Target::Server)]
    pub target: Target,
    /// Framing of `/api/stream` (`--target llm` always reads SSE).
    #[arg(long, value_enum, default_value_t = Framing::Ndjson)]
    pub framing: Framing,
    /// The user message (the scripted model reads directives in it, e.g. `words:N`); default
    /// `words:20` for `stream`, `words:100` for `hold`.
    #[arg(long)]
    pub message: Option<String>,
    /// A tool the agent may use (`available_tools`); repeatable.
    #[arg(long = "available-tool", value_name = "NAME")]
    pub available_tools: Vec<String>,
    /// `user_id` of the requests (and of the set-up calls).
    #[arg(long)]
    pub user_id: Option<String>,
    /// `model` of the chat-completion requests (`--target llm`).
    #[arg(long, default_value = "mock")]
    pub model: String,
    /// Print JSON on stdout instead of the table on stderr, and no progress bar.
    #[arg(long)]
    pub json: bool,
    /// No progress bar or per-second lines, only the report.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub common: Common,
    /// Number of requests.
    #[arg(short = 'n', long = "requests", default_value_t = 100)]
    pub requests: u64,
    /// Concurrent streams (closed loop: each worker sends its next request when one ends). With
    /// `--rate`, a cap on requests in flight (none by default).
    #[arg(short = 'c', long)]
    pub concurrency: Option<usize>,
    /// Open loop: start requests at this rate (requests/s) whatever the answers do.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Per-request timeout, from sending to the end of the stream.
    #[arg(long = "timeout-s", default_value_t = 120.0)]
    pub timeout_s: f64,
    /// Spread the workers' first requests over this many seconds (closed loop).
    #[arg(long = "ramp-s", default_value_t = 0.0)]
    pub ramp_s: f64,
    /// Set-up phase: register this legacy-SSE MCP server (`POST /api/mcp/add`) before the run.
    #[arg(
        long = "setup-mcp-sse-url",
        value_name = "URL",
        requires = "setup_tool"
    )]
    pub setup_mcp_sse_url: Option<String>,
    /// Name of the MCP server registered in the set-up phase.
    #[arg(long = "setup-mcp-name", default_value = "sage-load")]
    pub setup_mcp_name: String,
    /// Set-up phase: wait until `/api/tools` lists this tool, then allow it in every request.
    #[arg(
        long = "setup-tool",
        value_name = "TOOL",
        requires = "setup_mcp_sse_url"
    )]
    pub setup_tool: Option<String>,
    /// How long the set-up phase may take.
    #[arg(long = "setup-timeout-s", default_value_t = 60.0)]
    pub setup_timeout_s: f64,
    /// A process to charge CPU time to (the server, the model): its CPU-seconds over the run
    /// and per 1,000 streamed events are reported. Repeatable.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    pub common: Common,
    /// Streams to open and hold.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub concurrency: usize,
    /// How long to hold them.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Spread the opening of the streams over this many seconds.
    #[arg(long = "ramp-s", default_value_t = 0.0)]
    pub ramp_s: f64,
    /// The server's process id: sample its RSS every second (and per open stream at the end).
    #[arg(long = "server-pid")]
    pub server_pid: Option<u32>,
}

/// What `hold` asks by default: a stream lasts 100 × the scripted model's `--token-delay-ms`
/// (e.g. 500 s at 5000). The mock builds every frame of its answer before streaming it (~150
/// bytes and some CPU a token), so a huge `words:N` times thousands of streams overloads it.
const HOLD_MESSAGE: &str = "words:100";

/// One prepared request, sent many times.
pub struct Plan {
    client: Client,
    url: String,
    body: Bytes,
    sse: bool,
    wire: Wire,
    timeout: Duration,
}

pub fn base_url(url: &str) -> &str {
    url.trim_end_matches('/')
}

fn llm_url(url: &str) -> String {
    let base = base_url(url);
    if base.ends_with("/chat/completions") {
        base.to_owned()
    } else if base.ends_with("/v1") {
        format!("{base}/chat/completions")
    } else {
        format!("{base}/v1/chat/completions")
    }
}

fn build_client(pool: usize) -> Result<Client, String> {
    Client::builder()
        .pool_max_idle_per_host(pool.max(1))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .map_err(|error| format!("cannot build the HTTP client: {error}"))
}

impl Plan {
    fn new(
        common: &Common,
        default_message: &str,
        extra_tools: &[String],
        pool: usize,
        timeout: Duration,
    ) -> Result<Self, String> {
        let message = common.message.as_deref().unwrap_or(default_message);
        let messages = json!([{"role": "user", "content": message}]);
        let (url, body, sse, wire) = match common.target {
            Target::Server => {
                let mut body = json!({"messages": messages});
                let tools: Vec<&String> =
                    extra_tools.iter().chain(&common.available_tools).collect();
                if !tools.is_empty() {
                    body["available_tools"] = json!(tools);
                }
                if let Some(user) = &common.user_id {
                    body["user_id"] = json!(user);
                }
                let url = format!("{}/api/stream", base_url(&common.url));
                (url, body, common.framing == Framing::Sse, Wire::Sage)
            }
            Target::Llm => {
                let body = json!({
                    "model": common.model,
                    "stream": true,
                    "stream_options": {"include_usage": true},
                    "messages": messages,
                });
                (llm_url(&common.url), body, true, Wire::OpenAi)
            }
        };
        Url::parse(&url).map_err(|error| format!("bad --url {url}: {error}"))?;
        Ok(Self {
            client: build_client(pool)?,
            url,
            body: Bytes::from(body.to_string()),
            sse,
            wire,
            timeout,
        })
    }
}

/// Counts of one request's stream.
#[derive(Default)]
struct Tally {
    first_event: Option<Duration>,
    events: u64,
    tokens: u64,
    ended: bool,
    malformed: Option<String>,
}

impl Tally {
    fn event(
        &mut self,
        wire: Wire,
        data: &[u8],
        start: Instant,
        on_first: &mut Option<impl FnOnce(Duration)>,
    ) {
        let class = wire.classify(data);
        if class == Classified::End && wire == Wire::OpenAi {
            // `[DONE]` closes the stream; it is not a chunk.
            self.ended = true;
            return;
        }
        self.events += 1;
        if self.first_event.is_none() {
            let elapsed = start.elapsed();
            self.first_event = Some(elapsed);
            if let Some(on_first) = on_first.take() {
                on_first(elapsed);
            }
        }
        match class {
            Classified::Text => self.tokens += 1,
            Classified::End => self.ended = true,
            Classified::Malformed => {
                if self.malformed.is_none() {
                    self.malformed =
                        Some(String::from_utf8_lossy(&data[..data.len().min(200)]).into());
                }
            }
            Classified::Other => {}
        }
    }
}

/// Sends one request and reads its stream to the end; `on_first` runs at the first event.
pub async fn run_one(plan: &Plan, on_first: impl FnOnce(Duration)) -> Outcome {
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut on_first = Some(on_first);
    let result =
        match tokio::time::timeout(plan.timeout, drive(plan, start, &mut tally, &mut on_first))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(Failure::timeout(plan.timeout)),
        };
    Outcome {
        result,
        first_event: tally.first_event,
        duration: start.elapsed(),
        events: tally.events,
        tokens: tally.tokens,
    }
}

async fn drive(
    plan: &Plan,
    start: Instant,
    tally: &mut Tally,
    on_first: &mut Option<impl FnOnce(Duration)>,
) -> Result<(), Failure> {
    let mut request = plan
        .client
        .post(&plan.url)
        .header(CONTENT_TYPE, "application/json")
        .body(plan.body.clone());
    if plan.sse {
        request = request.header(ACCEPT, "text/event-stream");
    }
    let response = request.send().await.map_err(|e| Failure::send(&e))?;
    let status = response.status();
    if status != StatusCode::OK {
        let body = tokio::time::timeout(Duration::from_secs(2), response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(Failure::http(status.as_u16(), &body));
    }
    let wire = plan.wire;
    let body = response.bytes_stream();
    if plan.sse {
        let mut frames = sse_stream::SseStream::from_bytes_stream(body);
        while let Some(frame) = frames.next().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data {
                        tally.event(wire, data.as_bytes(), start, on_first);
                    }
                }
                Err(sse_stream::Error::Body(error)) => return Err(Failure::read(error.as_ref())),
                Err(error) => return Err(Failure::new("malformed event", error.to_string())),
            }
        }
    } else {
        let mut body = body;
        let mut lines = LineSplitter::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Failure::read(&e))?;
            lines.feed(&chunk, |line| tally.event(wire, line, start, on_first));
        }
        lines.finish(|line| tally.event(wire, line, start, on_first));
    }
    if let Some(sample) = tally.malformed.take() {
        return Err(Failure::new("malformed event", sample));
    }
    if tally.ended {
        Ok(())
    } else {
        let marker = wire.end_marker();
        Err(Failure::new(
            format!("no {marker}"),
            format!(
                "the stream closed after {} events without {marker}",
                tally.events
            ),
        ))
    }
}

/// Live counters for the progress bar.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    events: AtomicU64,
}

impl Progress {
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self, outcome: &Outcome) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.events.fetch_add(outcome.events, Ordering::Relaxed);
        if outcome.result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

fn progress_bar(len: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn spawn_ticker(bar: ProgressBar, progress: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let events = progress.events.load(Ordering::Relaxed);
            let done = progress.done.load(Ordering::Relaxed);
            let seconds = start.elapsed().as_secs_f64();
            bar.set_position(done);
            bar.set_message(format!(
                "{:.0} req/s, {:.0} events/s, {} in flight, {} failed",
                done as f64 / seconds,
                events as f64 / seconds,
                progress.in_flight.load(Ordering::Relaxed),
                progress.failed.load(Ordering::Relaxed),
            ));
        }
    })
}

/// The set-up phase of Sage's own load test: health, register an MCP server, wait for its tool.
async fn setup(plan: &Plan, args: &StreamArgs, sse_url: &str, tool: &str) -> Result<(), String> {
    let base = base_url(&args.common.url);
    let deadline = Instant::now() + Duration::from_secs_f64(args.setup_timeout_s);
    let endpoint = |path: &str| -> Result<Url, String> {
        let mut url =
            Url::parse(&format!("{base}{path}")).map_err(|e| format!("bad --url {base}: {e}"))?;
        if let Some(user) = &args.common.user_id {
            url.query_pairs_mut().append_pair("user_id", user);
        }
        Ok(url)
    };
    let client = &plan.client;
    let health = endpoint("/api/health")?;
    loop {
        let last = match client.get(health.clone()).send().await {
            Ok(response) if response.status() == StatusCode::OK => break,
            Ok(response) => format!("status {}", response.status()),
            Err(error) => crate::stats::error_chain(&error),
        };
        if Instant::now() > deadline {
            return Err(format!("set-up: GET {health} never answered 200 ({last})"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let add = endpoint("/api/mcp/add")?;
    let response = client
        .post(add.clone())
        .json(&json!({"name": args.setup_mcp_name, "protocol": "sse", "sse_url": sse_url}))
        .send()
        .await
        .map_err(|e| format!("set-up: POST {add}: {}", crate::stats::error_chain(&e)))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match status {
        StatusCode::OK => progress_note(args, &format!("set-up: registered {sse_url}")),
        StatusCode::CONFLICT => progress_note(
            args,
            &format!("set-up: {} is registered already", args.setup_mcp_name),
        ),
        other => return Err(format!("set-up: POST {add} answered {other}: {text}")),
    }
    let tools = endpoint("/api/tools")?;
    loop {
        let listed = match client.get(tools.clone()).send().await {
            Ok(response) if response.status() == StatusCode::OK => response
                .json::<Value>()
                .await
                .ok()
                .and_then(|body| {
                    body["data"]["tools"]
                        .as_array()
                        .map(|tools| tools.iter().any(|t| t["name"] == tool))
                })
                .unwrap_or(false),
            _ => false,
        };
        if listed {
            progress_note(args, &format!("set-up: tool {tool} is listed"));
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("set-up: GET {tools} never listed {tool}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn progress_note(args: &StreamArgs, note: &str) {
    if !args.common.json && !args.common.quiet {
        eprintln!("{note}");
    }
}

#[derive(Serialize)]
struct StreamConfig<'a> {
    target: Target,
    url: &'a str,
    framing: Framing,
    message: &'a str,
    requests: u64,
    concurrency: Option<usize>,
    rate: Option<f64>,
    timeout_s: f64,
    nofile: Option<sys::Nofile>,
}

#[derive(Serialize)]
struct StreamOutput<'a> {
    config: StreamConfig<'a>,
    #[serde(flatten)]
    report: &'a Report,
    /// Open loop: how late the latest request started against its schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_start_lag_ms: Option<f64>,
    /// This process's CPU time over the run: a load generator near its cores' limit skews
    /// everything else.
    client_cpu_s: f64,
    server_cpu: Vec<ProcessCpu>,
}

#[derive(Serialize)]
struct ProcessCpu {
    pid: u32,
    cpu_s: f64,
    /// The part of `cpu_s` spent in the kernel.
    system_cpu_s: f64,
    cpu_ms_per_1000_events: f64,
    /// Summed over the threads alive at the start and at the end.
    context_switches: u64,
}

pub async fn stream(args: StreamArgs) -> Result<(), String> {
    if args.requests == 0 {
        return Err("-n must be at least 1".into());
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        return Err("--rate must be a positive number".into());
    }
    let closed_concurrency = args.concurrency.unwrap_or(1).max(1);
    let streams = match args.rate {
        // An uncapped open loop may hold rate × timeout streams at worst.
        Some(rate) => args
            .concurrency
            .unwrap_or((rate * args.timeout_s).ceil() as usize),
        None => closed_concurrency,
    }
    .min(args.requests as usize);
    let nofile = sys::ensure_nofile(streams);
    let mut tools = Vec::new();
    if let Some(tool) = &args.setup_tool {
        tools.push(tool.clone());
    }
    let plan = Arc::new(Plan::new(
        &args.common,
        "words:20",
        &tools,
        streams,
        Duration::from_secs_f64(args.timeout_s),
    )?);
    if let (Some(sse_url), Some(tool)) = (&args.setup_mcp_sse_url, &args.setup_tool) {
        if args.common.target != Target::Server {
            return Err("the set-up phase needs --target server".into());
        }
        setup(&plan, &args, sse_url, tool).await?;
    }

    let server_before: Vec<Option<sys::ProcessUsage>> = args
        .server_pids
        .iter()
        .map(|pid| sys::process_usage(*pid).ok())
        .collect();
    let client_before = sys::self_cpu_time();
    let hidden = args.common.json || args.common.quiet;
    let bar = progress_bar(args.requests, hidden);
    let progress = Arc::new(Progress::default());
    let ticker = spawn_ticker(bar.clone(), progress.clone());
    let (stats, wall, lag) = match args.rate {
        Some(rate) => {
            let (stats, wall, lag) = open_loop(
                plan.clone(),
                args.requests,
                rate,
                args.concurrency,
                &progress,
            )
            .await;
            (stats, wall, Some(lag.as_secs_f64() * 1000.0))
        }
        None => {
            let ramp = Duration::from_secs_f64(args.ramp_s.max(0.0));
            let (stats, wall) = closed_loop(
                plan.clone(),
                args.requests,
                closed_concurrency,
                ramp,
                &progress,
            )
            .await;
            (stats, wall, None)
        }
    };
    ticker.abort();
    bar.finish_and_clear();
    let client_cpu_s = sys::self_cpu_time()
        .saturating_sub(client_before)
        .as_secs_f64();
    let server_cpu: Vec<ProcessCpu> = args
        .server_pids
        .iter()
        .zip(server_before)
        .filter_map(|(pid, before)| {
            let used = sys::process_usage(*pid).ok()?.since(before?);
            Some(ProcessCpu {
                pid: *pid,
                cpu_s: used.cpu.as_secs_f64(),
                system_cpu_s: used.system.as_secs_f64(),
                cpu_ms_per_1000_events: if stats.events > 0 {
                    used.cpu.as_secs_f64() * 1000.0 * 1000.0 / stats.events as f64
                } else {
                    0.0
                },
                context_switches: used.context_switches,
            })
        })
        .collect();

    let report = stats.report(wall);
    let message = args.common.message.as_deref().unwrap_or("words:20");
    let config = StreamConfig {
        target: args.common.target,
        url: &plan.url,
        framing: if plan.sse {
            Framing::Sse
        } else {
            Framing::Ndjson
        },
        message,
        requests: args.requests,
        concurrency: if args.rate.is_some() {
            args.concurrency
        } else {
            Some(closed_concurrency)
        },
        rate: args.rate,
        timeout_s: args.timeout_s,
        nofile,
    };
    if args.common.json {
        let output = StreamOutput {
            config,
            report: &report,
            max_start_lag_ms: lag,
            client_cpu_s,
            server_cpu,
        };
        println!(
            "{}",
            serde_json::to_string(&output).map_err(|e| e.to_string())?
        );
    } else {
        let mode = match args.rate {
            Some(rate) => format!(
                "open loop at {rate} req/s{}",
                args.concurrency
                    .map(|c| format!(", at most {c} in flight"))
                    .unwrap_or_default()
            ),
            None => format!("{closed_concurrency} concurrent"),
        };
        eprintln!(
            "{} {} {} — {} requests, {mode}, message {message:?}",
            match config.target {
                Target::Server => "POST",
                Target::Llm => "POST (baseline)",
            },
            if plan.sse { "SSE" } else { "NDJSON" },
            config.url,
            args.requests,
        );
        let mut stderr = std::io::stderr().lock();
        report.write_table(&mut stderr).map_err(|e| e.to_string())?;
        if let Some(lag) = lag {
            eprintln!("max start lag   {lag:>10.2} ms");
        }
        eprintln!("client CPU      {client_cpu_s:>10.3} s");
        for cpu in &server_cpu {
            eprintln!(
                "CPU of pid {:<5}{:>10.3} s   {:.2} ms per 1,000 events, {:.3} s in the kernel, \
                 {} context switches",
                cpu.pid,
                cpu.cpu_s,
                cpu.cpu_ms_per_1000_events,
                cpu.system_cpu_s,
                cpu.context_switches
            );
        }
    }
    Ok(())
}

async fn closed_loop(
    plan: Arc<Plan>,
    requests: u64,
    concurrency: usize,
    ramp: Duration,
    progress: &Arc<Progress>,
) -> (Stats, Duration) {
    let next = Arc::new(AtomicU64::new(0));
    let workers = concurrency.min(requests as usize);
    // One shared aggregate, locked once per finished request: a histogram per worker would
    // cost ~0.2 MB each.
    let total = Arc::new(Mutex::new(Stats::default()));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for worker in 0..workers {
        let (plan, next, progress, total) =
            (plan.clone(), next.clone(), progress.clone(), total.clone());
        let delay = ramp.mul_f64(worker as f64 / workers as f64);
        set.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                progress.begin();
                let outcome = run_one(&plan, |_| {}).await;
                progress.end(&outcome);
                if let Ok(mut total) = total.lock() {
                    total.record(&outcome);
                }
            }
        });
    }
    let mut panics = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Err(error) = done {
            panics.push(Failure::new("panic", error.to_string()));
        }
    }
    let mut total = std::mem::take(&mut *total.lock().unwrap_or_else(|e| e.into_inner()));
    for panic in &panics {
        total.record_failure(panic);
    }
    (total, start.elapsed())
}

fn record_joined(stats: &mut Stats, done: Result<Outcome, tokio::task::JoinError>) {
    match done {
        Ok(outcome) => stats.record(&outcome),
        Err(error) => {
            stats.requests += 1;
            stats.record_failure(&Failure::new("panic", error.to_string()));
        }
    }
}

async fn open_loop(
    plan: Arc<Plan>,
    requests: u64,
    rate: f64,
    cap: Option<usize>,
    progress: &Arc<Progress>,
) -> (Stats, Duration, Duration) {
    let limit = cap
        .filter(|c| *c > 0)
        .map(|c| Arc::new(tokio::sync::Semaphore::new(c)));
    let start = tokio::time::Instant::now();
    let mut set = JoinSet::new();
    let mut stats = Stats::default();
    let mut max_lag = Duration::ZERO;
    for i in 0..requests {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let permit = match &limit {
            Some(limit) => limit.clone().acquire_owned().await.ok(),
            None => None,
        };
        max_lag = max_lag.max(tokio::time::Instant::now().saturating_duration_since(due));
        let (plan, progress) = (plan.clone(), progress.clone());
        set.spawn(async move {
            progress.begin();
            let outcome = run_one(&plan, |_| {}).await;
            drop(permit);
            progress.end(&outcome);
            outcome
        });
        while let Some(done) = set.try_join_next() {
            record_joined(&mut stats, done);
        }
    }
    while let Some(done) = set.join_next().await {
        record_joined(&mut stats, done);
    }
    (stats, start.elapsed(), max_lag)
}

/// Counters of `hold`.
#[derive(Default)]
struct HoldCounters {
    opening: AtomicU64,
    open: AtomicU64,
    opened_total: AtomicU64,
    peak_open: AtomicU64,
    ended: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
struct HoldSnapshot {
    t_s: f64,
    opening: u64,
    open: u64,
    opened_total: u64,
    ended: u64,
    failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_bytes: Option<u64>,
}

impl HoldCounters {
    fn snapshot(&self, start: Instant, server_pid: Option<u32>) -> HoldSnapshot {
        HoldSnapshot {
            t_s: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            opening: self.opening.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            opened_total: self.opened_total.load(Ordering::Relaxed),
            ended: self.ended.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            server_rss_bytes: server_pid.and_then(|pid| sys::process_rss_bytes(pid).ok()),
        }
    }
}

#[derive(Serialize)]
struct HoldSummary {
    summary: bool,
    url: String,
    framing: Framing,
    message: String,
    requested: usize,
    seconds: u64,
    /// Streams that answered 200 and sent a first event.
    opened: u64,
    open_at_end: u64,
    peak_open: u64,
    /// Streams that ended (normally or not) after opening, during the hold.
    ended_early: u64,
    /// Streams that never opened.
    failed: u64,
    errors: std::collections::BTreeMap<String, crate::stats::ErrorCount>,
    /// Time from sending to the first event.
    time_to_open_ms: Percentiles,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_baseline_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_end_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_per_open_stream_bytes: Option<f64>,
    nofile: Option<sys::Nofile>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub async fn hold(args: HoldArgs) -> Result<(), String> {
    let count = args.concurrency.max(1);
    let nofile = sys::ensure_nofile(count);
    let plan = Arc::new(Plan::new(
        &args.common,
        HOLD_MESSAGE,
        &[],
        count,
        // The streams are cut when the hold ends; this only bounds a stream that never opens.
        Duration::from_secs(args.seconds + 3600),
    )?);
    let counters = Arc::new(HoldCounters::default());
    let stats = Arc::new(Mutex::new(Stats::default()));
    let baseline = args
        .server_pid
        .map(sys::process_rss_bytes)
        .transpose()
        .map_err(|e| format!("cannot read the server's RSS: {e}"))?;
    let start = Instant::now();
    let ramp = Duration::from_secs_f64(args.ramp_s.max(0.0));
    let mut set = JoinSet::new();
    for i in 0..count {
        let (plan, counters, stats) = (plan.clone(), counters.clone(), stats.clone());
        let delay = ramp.mul_f64(i as f64 / count as f64);
        set.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            counters.opening.fetch_add(1, Ordering::Relaxed);
            let on_first = {
                let (counters, stats) = (counters.clone(), stats.clone());
                move |elapsed: Duration| {
                    counters.opening.fetch_sub(1, Ordering::Relaxed);
                    let open = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
                    counters.peak_open.fetch_max(open, Ordering::Relaxed);
                    counters.opened_total.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut stats) = stats.lock() {
                        stats.record_first_event(elapsed);
                    }
                }
            };
            let outcome = run_one(&plan, on_first).await;
            if outcome.first_event.is_some() {
                counters.open.fetch_sub(1, Ordering::Relaxed);
                counters.ended.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.opening.fetch_sub(1, Ordering::Relaxed);
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            if let (Err(failure), Ok(mut stats)) = (&outcome.result, stats.lock()) {
                stats.record_failure(failure);
            }
        });
    }

    let hold_for = Duration::from_secs(args.seconds);
    let mut tick = 1u64;
    loop {
        let next = Duration::from_secs(tick).min(hold_for);
        tokio::time::sleep(next.saturating_sub(start.elapsed())).await;
        let snapshot = counters.snapshot(start, args.server_pid);
        if args.common.json {
            if let Ok(line) = serde_json::to_string(&snapshot) {
                println!("{line}");
            }
        } else if !args.common.quiet {
            eprintln!(
                "t={:>5.1}s  open {:>6}  opening {:>6}  opened {:>6}  ended {:>5}  failed {:>5}{}",
                snapshot.t_s,
                snapshot.open,
                snapshot.opening,
                snapshot.opened_total,
                snapshot.ended,
                snapshot.failed,
                snapshot
                    .server_rss_bytes
                    .map(|rss| format!("  server RSS {:.1} MiB", mib(rss)))
                    .unwrap_or_default()
            );
        }
        if next >= hold_for {
            break;
        }
        tick += 1;
    }
    let end = counters.snapshot(start, args.server_pid);
    set.abort_all();
    while set.join_next().await.is_some() {}

    let stats = stats.lock().map_err(|_| "statistics lock poisoned")?;
    let per_stream = match (baseline, end.server_rss_bytes) {
        (Some(base), Some(end_rss)) if end.open > 0 => {
            Some((end_rss as f64 - base as f64) / end.open as f64)
        }
        _ => None,
    };
    let summary = HoldSummary {
        summary: true,
        url: plan.url.clone(),
        framing: if plan.sse {
            Framing::Sse
        } else {
            Framing::Ndjson
        },
        message: args
            .common
            .message
            .clone()
            .unwrap_or_else(|| HOLD_MESSAGE.into()),
        requested: count,
        seconds: args.seconds,
        opened: end.opened_total,
        open_at_end: end.open,
        peak_open: counters.peak_open.load(Ordering::Relaxed),
        ended_early: end.ended,
        failed: end.failed,
        errors: stats.errors().clone(),
        time_to_open_ms: stats.first_event_percentiles(),
        server_rss_baseline_bytes: baseline,
        server_rss_end_bytes: end.server_rss_bytes,
        server_rss_per_open_stream_bytes: per_stream,
        nofile,
    };
    if args.common.json {
        println!(
            "{}",
            serde_json::to_string(&summary).map_err(|e| e.to_string())?
        );
    } else {
        eprintln!(
            "held {} streams for {} s: opened {} ({} open at the end, peak {}), {} ended early, {} never opened",
            count,
            args.seconds,
            summary.opened,
            summary.open_at_end,
            summary.peak_open,
            summary.ended_early,
            summary.failed
        );
        let p = summary.time_to_open_ms;
        eprintln!(
            "time to open (ms): p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            p.p50, p.p95, p.p99, p.max
        );
        if let (Some(base), Some(end_rss)) = (baseline, summary.server_rss_end_bytes) {
            eprintln!(
                "server RSS: {:.1} MiB before, {:.1} MiB at the end{}",
                mib(base),
                mib(end_rss),
                per_stream
                    .map(|b| format!(", {:.1} KiB per open stream", b / 1024.0))
                    .unwrap_or_default()
            );
        }
        for (kind, count) in &summary.errors {
            eprintln!("  {kind:<20}{:>8}   e.g. {}", count.count, count.example);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llm_urls() {
        assert_eq!(llm_url("http://h:1"), "http://h:1/v1/chat/completions");
        assert_eq!(llm_url("http://h:1/v1/"), "http://h:1/v1/chat/completions");
        assert_eq!(
            llm_url("http://h:1/v1/chat/completions"),
            "http://h:1/v1/chat/completions"
        );
    }

    fn common(target: Target, framing: Framing) -> Common {
        Common {
            url: "http://127.0.0.1:8080/".into(),
            target,
            framing,
            message: None,
            available_tools: vec!["add".into()],
            user_id: Some("alice".into()),
            model: "mock".into(),
            json: false,
            quiet: false,
        }
    }

    #[test]
    fn request_bodies() {
        let timeout = Duration::from_secs(1);
        let plan = Plan::new(
            &common(Target::Server, Framing::Sse),
            "words:20",
            &["echo".into()],
            10,
            timeout,
        )
        .unwrap();
        assert_eq!(plan.url, "http://127.0.0.1:8080/api/stream");
        assert!(plan.sse);
        let body: Value = serde_json::from_slice(&plan.body).unwrap();
        assert_eq!(
            body,
            json!({"messages": [{"role": "user", "content": "words:20"}],
                   "available_tools": ["echo", "add"], "user_id": "alice"})
        );

        let plan = Plan::new(
            &common(Target::Llm, Framing::Ndjson),
            "words:5",
            &[],
            1,
            timeout,
        )
        .unwrap();
        assert_eq!(plan.url, "http://127.0.0.1:8080/v1/chat/completions");
        assert!(plan.sse, "the model always streams SSE");
        assert_eq!(plan.wire, Wire::OpenAi);
        let body: Value = serde_json::from_slice(&plan.body).unwrap();
        assert_eq!(
            body,
            json!({"model": "mock", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "words:5"}]})
        );
    }

    /// The scripted model and a shim using it, in process, on ports of their own.
    async fn start_model_and_server() -> (String, String) {
        let model = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let model_url = format!("http://{}/v1", model.local_addr().unwrap());
        tokio::spawn(sage_mock_llm::serve(
            model,
            sage_mock_llm::MockOptions::default(),
            std::future::pending(),
        ));
        let config = sage_core::Config::try_from_args([
            "sage",
            "--db_type",
            "memory",
            "--default_llm_api_key",
            "k",
            "--default_llm_api_base_url",
            &model_url,
            "--preset_running_config",
            "/nonexistent/agent_setting.json",
            "--preset_mcp_config",
            "/nonexistent/mcp_setting.json",
        ])
        .unwrap();
        let state = sage_core::App::from_config(config).await.unwrap();
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_url = format!("http://{}", server.local_addr().unwrap());
        tokio::spawn(sage_local::serve(server, state, std::future::pending()));
        (model_url, server_url)
    }

    fn plan_for(url: &str, target: Target, framing: Framing, message: &str) -> Plan {
        let mut common = common(target, framing);
        common.url = url.to_owned();
        common.available_tools.clear();
        common.message = Some(message.to_owned());
        Plan::new(&common, "", &[], 4, Duration::from_secs(10)).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_are_counted_end_to_end() {
        let (model, server) = start_model_and_server().await;
        for framing in [Framing::Ndjson, Framing::Sse] {
            let plan = plan_for(&server, Target::Server, framing, "words:7");
            let mut first = None;
            let outcome = run_one(&plan, |t| first = Some(t)).await;
            assert_eq!(outcome.result, Ok(()), "{framing:?}");
            // 7 deltas, token_usage, stream_end.
            assert_eq!((outcome.events, outcome.tokens), (9, 7), "{framing:?}");
            assert!(first.is_some() && first == outcome.first_event);
            assert!(outcome.first_event.unwrap() <= outcome.duration);
        }
        // The baseline: role chunk, 7 deltas, finish, usage; `[DONE]` is not a chunk.
        let plan = plan_for(&model, Target::Llm, Framing::Sse, "words:7");
        let outcome = run_one(&plan, |_| {}).await;
        assert_eq!(outcome.result, Ok(()));
        assert_eq!((outcome.events, outcome.tokens), (10, 7));

        let plan = plan_for(&model, Target::Llm, Framing::Sse, "fail:429");
        let failure = run_one(&plan, |_| {}).await.result.unwrap_err();
        assert_eq!(failure.kind, "http 429");
        let plan = plan_for(&model, Target::Llm, Framing::Sse, "words:50 fail:drop");
        let failure = run_one(&plan, |_| {}).await.result.unwrap_err();
        assert_eq!(failure.kind, "read", "{failure:?}");
        let plan = plan_for("http://127.0.0.1:9", Target::Server, Framing::Ndjson, "x");
        let failure = run_one(&plan, |_| {}).await.result.unwrap_err();
        assert_eq!(failure.kind, "connect", "{failure:?}");
    }
}
