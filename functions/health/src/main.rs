//! The Health function: `/api/health`, `/health`, `/active`, `/api/health/ready`.

use sage_core::telemetry::exit_on_error;
use sage_core::{AppState, Config, health_router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    sage_core::telemetry::init_logging();
    let config = exit_on_error("configuration", Config::from_env());
    let state = exit_on_error("start-up", AppState::from_config(config).await);
    lambda_http::run(health_router(state)).await
}
