//! The MCP-admin function: `/api/mcp/*`, `/api/tools`, `/api/tools/exec`.

use sage_core::{AppState, Config, mcp_admin_router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    sage_core::telemetry::init_logging();
    let state = AppState::from_config(Config::from_env()?).await?;
    state.start_background_tasks();
    lambda_http::run(mcp_admin_router(state)).await
}
