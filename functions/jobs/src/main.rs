//! The Jobs function: the scheduled work (session summaries, knowledge-base indexing, the sweep of
//! paused runs), invoked by EventBridge Scheduler or by hand with a JSON payload such as
//! `{"job": "summarize"}`.

use std::time::{Duration, SystemTime};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sage_core::telemetry::exit_on_error;
use sage_core::{App, Config};
use serde_json::Value;

/// Left of the invocation's time when the job stops.
const MARGIN: Duration = Duration::from_secs(5);
/// Deadlines before this are not epoch times: cargo-lambda's emulator sends the timeout itself.
const YEAR_2000: Duration = Duration::from_secs(946_684_800);

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = exit_on_error("configuration", Config::from_env());
    exit_on_error("telemetry", sage_core::init_telemetry(&config));
    let app = exit_on_error("start-up", App::from_config(config).await);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let app = app.clone();
        async move {
            let time_left = time_left(event.context.deadline()).saturating_sub(MARGIN);
            let report = app.run_job(event.payload, time_left).await?;
            Ok::<Value, Error>(serde_json::to_value(report)?)
        }
    }))
    .await
}

fn time_left(deadline: SystemTime) -> Duration {
    let since_epoch = deadline
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    if since_epoch < YEAR_2000 {
        return since_epoch;
    }
    deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}
