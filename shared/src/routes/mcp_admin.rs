//! The MCP-admin function's routes (`api.md` §3).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::{ApiError, ok};
use crate::mcp::McpServerConfig;
use crate::mcp_admin::{self, server_summary};
use crate::request::ValidJson;
use crate::run::DEFAULT_USER;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/mcp/add", post(add))
        .route("/api/mcp/list", get(list))
        .route("/api/mcp/{name}", delete(remove))
        .route("/api/mcp/{name}/refresh", post(refresh))
        .route("/api/mcp/{name}/toggle", put(toggle))
        .route("/api/tools", get(tools))
        .route("/api/tools/exec", post(exec))
}

#[derive(Debug, Default, Deserialize)]
pub struct Caller {
    user_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn caller(query: &Caller, body_user: Option<&str>) -> String {
    body_user
        .or(query.user_id.as_deref())
        .filter(|id| !id.is_empty())
        .unwrap_or(DEFAULT_USER)
        .to_owned()
}

#[derive(Debug, Deserialize)]
struct AddRequest {
    name: String,
    user_id: Option<String>,
    #[serde(flatten)]
    config: McpServerConfig,
}

async fn add(
    State(state): State<AppState>,
    Query(query): Query<Caller>,
    ValidJson(request): ValidJson<AddRequest>,
) -> Result<Response, ApiError> {
    let owner = caller(&query, request.user_id.as_deref());
    let record = mcp_admin::add_server(&state, &owner, &request.name, request.config).await?;
    let tools: Vec<&str> = record.tools.iter().map(|t| t.name.as_str()).collect();
    Ok(
        ok(json!({"server_name": record.name, "status": "success", "tools": tools}))
            .into_response(),
    )
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<Caller>,
) -> Result<Response, ApiError> {
    let servers = mcp_admin::visible_servers(&state, &caller(&query, None)).await?;
    let servers: Vec<Value> = servers.iter().map(server_summary).collect();
    Ok(ok(json!({"servers": servers})).into_response())
}

async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<Caller>,
) -> Result<Response, ApiError> {
    mcp_admin::delete_server(&state, &caller(&query, None), &name).await?;
    Ok(ok(json!({"server_name": name})).into_response())
}

async fn refresh(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<Caller>,
) -> Result<Response, ApiError> {
    let record = mcp_admin::refresh_server(&state, &caller(&query, None), &name).await?;
    let status = if record.config.disabled {
        "disabled"
    } else {
        "refreshed"
    };
    let tools: Vec<&str> = record.tools.iter().map(|t| t.name.as_str()).collect();
    Ok(ok(json!({"server_name": name, "status": status, "tools": tools})).into_response())
}

#[derive(Debug, Deserialize)]
struct ToggleRequest {
    disabled: bool,
    user_id: Option<String>,
}

async fn toggle(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<Caller>,
    ValidJson(request): ValidJson<ToggleRequest>,
) -> Result<Response, ApiError> {
    let owner = caller(&query, request.user_id.as_deref());
    mcp_admin::toggle_server(&state, &owner, &name, request.disabled).await?;
    Ok(ok(json!({"server_name": name, "disabled": request.disabled})).into_response())
}

async fn tools(
    State(state): State<AppState>,
    Query(query): Query<Caller>,
) -> Result<Response, ApiError> {
    let tools = match query.kind.as_deref() {
        None | Some("") | Some("mcp") => {
            mcp_admin::list_tools(&state, &caller(&query, None)).await?
        }
        Some("basic") => Vec::new(),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "type: `{other}` is not one of mcp, basic"
            )));
        }
    };
    Ok(ok(json!({"tools": tools})).into_response())
}

#[derive(Debug, Deserialize)]
struct ExecRequest {
    tool_name: String,
    #[serde(default)]
    tool_params: serde_json::Map<String, Value>,
    user_id: Option<String>,
}

async fn exec(
    State(state): State<AppState>,
    Query(query): Query<Caller>,
    ValidJson(request): ValidJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let owner = caller(&query, request.user_id.as_deref());
    let result =
        mcp_admin::exec_tool(&state, &owner, &request.tool_name, request.tool_params).await?;
    Ok(ok(result).into_response())
}
