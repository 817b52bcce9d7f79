//! `sage-load`: the load generator and benchmark driver of Sage Functions.
//!
//! - `stream`: N requests at a concurrency (closed loop) or a rate (open loop) against
//!   `/api/stream` (NDJSON or SSE), or with `--target llm` straight against an
//!   OpenAI-compatible model, the baseline of the server-overhead ratio; a report of success
//!   rate, requests/s, events/s, tokens/s, time to first event and stream duration percentiles,
//!   errors by kind.
//! - `hold`: opens streams and keeps them open, counting them every second (and sampling the
//!   server's RSS), to measure memory per open stream.
//! - `cold-start`: a Lambda function binary's cold start under a Runtime API of our own.
//! - `store`: time and CPU per stored event for SQLite, MySQL/MariaDB and DynamoDB.

mod coldstart;
mod parse;
mod stats;
mod store;
mod stream;
mod sys;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sage-load",
    version,
    about = "Load generator and benchmarks for Sage Functions"
)]
struct Cli {
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream N requests at a concurrency or a rate and report throughput and latency.
    Stream(stream::StreamArgs),
    /// Open streams and hold them, counting open streams every second.
    Hold(stream::HoldArgs),
    /// Measure a Lambda function binary's cold start under a local Runtime API.
    ColdStart(coldstart::ColdStartArgs),
    /// Measure time and CPU per stored event for a store backend.
    Store(store::StoreArgs),
}

fn main() {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = cli.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sage-load: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Stream(args) => stream::stream(args).await,
            Command::Hold(args) => stream::hold(args).await,
            Command::ColdStart(args) => coldstart::cold_start(args).await,
            Command::Store(args) => store::store(args).await,
        }
    });
    // Streams still held by aborted tasks are cut here, not waited for.
    runtime.shutdown_background();
    if let Err(error) = result {
        eprintln!("sage-load: {error}");
        std::process::exit(1);
    }
}
