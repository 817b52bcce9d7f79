//! The Session function: `/api/conversations*`, `/api/share/*`, `/api/sessions/*`.

use sage_core::{AppState, Config, session_router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    sage_core::telemetry::init_logging();
    let state = AppState::from_config(Config::from_env()?).await?;
    lambda_http::run(session_router(state)).await
}
