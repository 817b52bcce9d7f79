//! The Session function: `/api/conversations*`, `/api/share/*`, `/api/sessions/*`,
//! `/api/memories*`, `/api/user/*`, `/api/system/*`, `/api/agent/*`, `/api/llm-provider/*`, `/api/skills*`, `/api/oss/*`.

use sage_core::telemetry::exit_on_error;
use sage_core::{App, Config, session_router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = exit_on_error("configuration", Config::from_env());
    exit_on_error("telemetry", sage_core::init_telemetry(&config));
    let app = exit_on_error("start-up", App::from_config(config).await);
    exit_on_error("the first admin", app.ensure_admin().await);
    lambda_http::run(session_router(app)).await
}
