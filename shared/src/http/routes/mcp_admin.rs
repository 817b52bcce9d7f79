//! The MCP-admin function's routes (`api.md` §3).

use axum::extract::{Path, State};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::DomainError;
use crate::domain::tools_admin::{ToolsAdmin, server_summary};
use crate::http::extract::{Caller, ValidJson, ValidQuery};
use crate::http::{ApiError, Envelope, ok};
use crate::tools::McpServerConfig;
use crate::util::SessionId;
use crate::wire::api::{McpServerList, McpServerRef, McpServerToggled, McpServerTools, ToolList};

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(admin: ToolsAdmin) -> Router {
    Router::new()
        .route("/api/mcp/add", post(add))
        .route("/api/mcp/list", get(list))
        .route("/api/mcp/{name}", delete(remove))
        .route("/api/mcp/{name}/refresh", post(refresh))
        .route("/api/mcp/{name}/toggle", put(toggle))
        .route("/api/tools", get(tools))
        .route("/api/tools/exec", post(exec))
        .with_state(admin)
}

fn tool_names(record: &crate::store::McpServerRecord) -> Vec<String> {
    record.tools.iter().map(|t| t.name.clone()).collect()
}

#[derive(Debug, Deserialize)]
struct AddRequest {
    name: String,
    user_id: Option<String>,
    #[serde(flatten)]
    config: McpServerConfig,
}

async fn add(
    State(admin): State<ToolsAdmin>,
    caller: Caller,
    ValidJson(request): ValidJson<AddRequest>,
) -> Answer<McpServerTools> {
    let owner = caller.with_body(request.user_id.as_deref())?;
    let record = admin
        .add_server(&owner, &request.name, request.config)
        .await?;
    Ok(ok(McpServerTools {
        server_name: record.name.clone(),
        status: "success",
        tools: tool_names(&record),
    }))
}

async fn list(State(admin): State<ToolsAdmin>, caller: Caller) -> Answer<McpServerList> {
    let servers = admin.visible_servers(&caller.user()?).await?;
    Ok(ok(McpServerList {
        servers: servers.iter().map(server_summary).collect(),
    }))
}

async fn remove(
    State(admin): State<ToolsAdmin>,
    Path(name): Path<String>,
    caller: Caller,
) -> Answer<McpServerRef> {
    admin.delete_server(&caller.user()?, &name).await?;
    Ok(ok(McpServerRef { server_name: name }))
}

async fn refresh(
    State(admin): State<ToolsAdmin>,
    Path(name): Path<String>,
    caller: Caller,
) -> Answer<McpServerTools> {
    let record = admin.refresh_server(&caller.user()?, &name).await?;
    Ok(ok(McpServerTools {
        status: if record.config.disabled {
            "disabled"
        } else {
            "refreshed"
        },
        tools: tool_names(&record),
        server_name: name,
    }))
}

#[derive(Debug, Deserialize)]
struct ToggleRequest {
    disabled: bool,
    user_id: Option<String>,
}

async fn toggle(
    State(admin): State<ToolsAdmin>,
    Path(name): Path<String>,
    caller: Caller,
    ValidJson(request): ValidJson<ToggleRequest>,
) -> Answer<McpServerToggled> {
    let owner = caller.with_body(request.user_id.as_deref())?;
    admin.toggle_server(&owner, &name, request.disabled).await?;
    Ok(ok(McpServerToggled {
        server_name: name,
        disabled: request.disabled,
    }))
}

#[derive(Debug, Deserialize)]
struct ToolsQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn tools(
    State(admin): State<ToolsAdmin>,
    caller: Caller,
    ValidQuery(query): ValidQuery<ToolsQuery>,
) -> Answer<ToolList> {
    let tools = match query.kind.as_deref() {
        None | Some("") => {
            let mut tools = admin.basic_tools();
            tools.extend(admin.list_tools(&caller.user()?).await?);
            tools
        }
        Some("mcp") => admin.list_tools(&caller.user()?).await?,
        Some("basic") => admin.basic_tools(),
        Some(other) => {
            return Err(
                DomainError::invalid(format!("type: `{other}` is not one of mcp, basic")).into(),
            );
        }
    };
    Ok(ok(ToolList { tools }))
}

#[derive(Debug, Deserialize)]
struct ExecRequest {
    tool_name: String,
    #[serde(default)]
    tool_params: serde_json::Map<String, Value>,
    user_id: Option<String>,
    /// The conversation whose workspace a built-in file or code tool works in.
    session_id: Option<String>,
}

async fn exec(
    State(admin): State<ToolsAdmin>,
    caller: Caller,
    ValidJson(request): ValidJson<ExecRequest>,
) -> Answer<Value> {
    caller.operator("only an admin may run tools directly; agents call tools inside runs")?;
    let owner = caller.with_body(request.user_id.as_deref())?;
    let session = request
        .session_id
        .as_deref()
        .map(SessionId::parse)
        .transpose()
        .map_err(DomainError::from)?;
    let result = admin
        .exec_tool(
            &owner,
            &request.tool_name,
            request.tool_params,
            session.as_ref(),
        )
        .await?;
    Ok(ok(result))
}
