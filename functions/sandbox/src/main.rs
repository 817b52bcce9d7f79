//! The sandbox function: runs one code tool call's program in a copy of the session's workspace
//! and answers with what it printed and the files it made or changed (`sage_core::sandbox`). Its
//! role has no permissions and its environment none of the product's settings.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sage_core::sandbox::{RunOutcome, RunRequest, run_request};

async fn handle(event: LambdaEvent<RunRequest>) -> Result<RunOutcome, Error> {
    Ok(run_request(event.payload).await?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    sage_core::telemetry::init_logging();
    lambda_runtime::run(service_fn(handle)).await
}
