//! The Stream function: `/api/stream` over Lambda response streaming.

use sage_core::{AppState, Config, stream_router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    sage_core::telemetry::init_logging();
    let state = AppState::from_config(Config::from_env()?).await?;
    lambda_http::run_with_streaming_response(stream_router(state)).await
}
