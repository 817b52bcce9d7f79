//! The MCP-admin function: `/api/mcp/*`, `/api/tools`, `/api/tools/exec`.

use sage_core::telemetry::exit_on_error;
use sage_core::{App, Config, mcp_admin_router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = exit_on_error("configuration", Config::from_env());
    exit_on_error("telemetry", sage_core::init_telemetry(&config));
    let app = exit_on_error("start-up", App::from_config(config).await);
    app.start_background_tasks();
    lambda_http::run(mcp_admin_router(app)).await
}
