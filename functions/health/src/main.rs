//! The Health function: `/api/health`, `/health`, `/active`, `/api/health/ready`.

use sage_core::{AppState, Config, health_router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    sage_core::telemetry::init_logging();
    let state = AppState::from_config(Config::from_env()?).await?;
    lambda_http::run(health_router(state)).await
}
