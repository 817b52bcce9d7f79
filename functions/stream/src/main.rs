//! The Stream function: `/api/stream`, its resume, and a paused run's approval, over Lambda
//! response streaming.

use sage_core::telemetry::exit_on_error;
use sage_core::{App, Config, stream_router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = exit_on_error("configuration", Config::from_env());
    exit_on_error("telemetry", sage_core::init_telemetry(&config));
    let app = exit_on_error("start-up", App::from_config(config).await);
    lambda_http::run_with_streaming_response(stream_router(app)).await
}
