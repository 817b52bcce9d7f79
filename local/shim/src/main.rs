use std::ffi::OsString;
use std::time::Duration;

use sage_core::{App, Config};

/// `sage-local jobs <job>` runs one job and exits; it may take this long.
const JOB_TIME: Duration = Duration::from_secs(3600);

#[tokio::main]
async fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == "jobs") {
        run_job(args).await;
        return;
    }
    let config = Config::try_from_args(args).unwrap_or_else(|error| error.exit());
    telemetry(&config);
    let address = format!("{}:{}", config.server.host, config.server.port);
    let state = start(config).await;
    let listener = sage_local::listen(&address).await.unwrap_or_else(|error| {
        eprintln!("sage-local: cannot listen on {address}: {error}");
        std::process::exit(1);
    });
    state.start_background_tasks();
    tracing::info!(%address, "sage-local serving every function");
    if let Err(error) = sage_local::serve(listener, state, shutdown_signal()).await {
        eprintln!("sage-local: server failed: {error}");
        std::process::exit(1);
    }
}

fn telemetry(config: &Config) {
    if let Err(error) = sage_core::init_telemetry(config) {
        eprintln!(
            "sage-local: cannot start: {}",
            sage_core::telemetry::chain(&error)
        );
        std::process::exit(1);
    }
}

async fn start(config: Config) -> App {
    let started = match App::from_config(config).await {
        Ok(app) => app.ensure_admin().await.map(|()| app),
        Err(error) => Err(error),
    };
    started.unwrap_or_else(|error| {
        eprintln!(
            "sage-local: cannot start: {}",
            sage_core::telemetry::chain(&error)
        );
        std::process::exit(1);
    })
}

/// `sage-local jobs summarize [--session ID]... [--user_id ID] [--limit N] [settings...]`,
/// `sage-local jobs index [--limit N] [settings...]` or `sage-local jobs runs [--limit N]
/// [settings...]`: the job's report on stdout as JSON. The `runs` job's continuations run in
/// this process, which exits when they are done.
async fn run_job(args: Vec<OsString>) {
    let usage = "usage: sage-local jobs summarize [--session ID]... [--user_id ID] [--limit N] \
                 [any server setting]\n       sage-local jobs index [--limit N] [any server setting]\
                 \n       sage-local jobs runs [--limit N] [any server setting]";
    let Some(job) = args.get(2).and_then(|job| job.to_str()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mut payload = serde_json::json!({"job": job});
    let mut sessions = Vec::new();
    let mut settings = vec![args[0].clone()];
    let mut rest = args.into_iter().skip(3);
    while let Some(arg) = rest.next() {
        let Some(name) = arg
            .to_str()
            .filter(|name| matches!(*name, "--session" | "--user_id" | "--limit"))
        else {
            settings.push(arg);
            continue;
        };
        let Some(value) = rest.next().and_then(|value| value.into_string().ok()) else {
            eprintln!("sage-local jobs: {name} needs a value\n{usage}");
            std::process::exit(2);
        };
        match name {
            "--session" => sessions.push(value),
            "--user_id" => payload["user_id"] = value.into(),
            _ => match value.parse::<u64>() {
                Ok(limit) => payload["limit"] = limit.into(),
                Err(_) => {
                    eprintln!("sage-local jobs: --limit takes a number\n{usage}");
                    std::process::exit(2);
                }
            },
        }
    }
    if !sessions.is_empty() {
        payload["session_ids"] = sessions.into();
    }
    let config = Config::try_from_args(settings).unwrap_or_else(|error| error.exit());
    telemetry(&config);
    let app = start(config).await;
    let report = app.run_job(payload, JOB_TIME).await;
    app.finish_background_work(JOB_TIME).await;
    match report {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("a report serializes")
            );
            if !report.failed.is_empty() || !report.index_failures.is_empty() {
                std::process::exit(1);
            }
        }
        Err(error) => {
            eprintln!("sage-local jobs: {error}");
            std::process::exit(2);
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
