//! The MCP-admin function's routes (`api.md` §3).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::DomainError;
use crate::domain::tools_admin::{OAuthCallback, ToolsAdmin, server_summary};
use crate::http::extract::{Caller, RequestOrigin, ValidJson, ValidQuery};
use crate::http::{ApiError, Envelope, ok};
use crate::store::McpServerRecord;
use crate::tools::McpServerConfig;
use crate::util::SessionId;
use crate::wire::api::{
    McpAuthorization, McpServerList, McpServerRef, McpServerToggled, McpServerTools, ToolList,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(admin: ToolsAdmin) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(add))
        .routes(routes!(list))
        .routes(routes!(remove))
        .routes(routes!(refresh))
        .routes(routes!(toggle))
        .routes(routes!(tools))
        .routes(routes!(exec))
        .routes(routes!(authorize))
        .routes(routes!(oauth_callback))
        .with_state(admin)
}

/// Where the authorization server sends the user back: `--public_url`, else this request's
/// origin.
fn callback_url(admin: &ToolsAdmin, origin: &RequestOrigin) -> String {
    let base = admin.public_url().unwrap_or(&origin.0);
    format!("{}/api/mcp/oauth/callback", base.trim_end_matches('/'))
}

fn tool_names(record: &crate::store::McpServerRecord) -> Vec<String> {
    record.tools.iter().map(|t| t.name.clone()).collect()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct AddRequest {
    name: String,
    user_id: Option<String>,
    #[serde(flatten)]
    config: McpServerConfig,
}

#[utoipa::path(post, path = "/api/mcp/add", tag = "mcp", request_body = AddRequest, responses((status = 200, body = Envelope<McpServerTools>)))]
async fn add(
    State(admin): State<ToolsAdmin>,
    caller: Caller,
    origin: RequestOrigin,
    ValidJson(request): ValidJson<AddRequest>,
) -> Answer<McpServerTools> {
    let owner = caller.with_body(request.user_id.as_deref())?;
    let added = admin
        .add_server(
            &owner,
            &request.name,
            request.config,
            &callback_url(&admin, &origin),
        )
        .await?;
    Ok(ok(McpServerTools {
        server_name: added.record.name.clone(),
        status: if added.authorization_url.is_some() {
            "authorization_required"
        } else {
            "success"
        },
        tools: tool_names(&added.record),
        authorization_url: added.authorization_url,
    }))
}

/// Starts the OAuth authorization of one of the caller's servers again.
#[utoipa::path(post, path = "/api/mcp/{name}/authorize", tag = "mcp", params(("name" = String, Path)), responses((status = 200, body = Envelope<McpAuthorization>)))]
async fn authorize(
    State(admin): State<ToolsAdmin>,
    Path(name): Path<String>,
    caller: Caller,
    origin: RequestOrigin,
) -> Answer<McpAuthorization> {
    let authorization_url = admin
        .authorize_server(&caller.user()?, &name, &callback_url(&admin, &origin))
        .await?;
    Ok(ok(McpAuthorization {
        server_name: name,
        authorization_url,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CallbackQuery {
    state: String,
    code: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

/// The authorization server's redirect back (no bearer token: the `state` names the user's
/// authorization in progress, once). A browser (`Accept: text/html`) gets a page saying how it
/// went; other clients the envelope.
#[utoipa::path(get, path = "/api/mcp/oauth/callback", tag = "mcp", params(CallbackQuery), responses((status = 200, body = Envelope<McpServerTools>)))]
async fn oauth_callback(
    State(admin): State<ToolsAdmin>,
    headers: HeaderMap,
    ValidQuery(query): ValidQuery<CallbackQuery>,
) -> Result<Response, ApiError> {
    let outcome = admin
        .complete_authorization(OAuthCallback {
            state: query.state,
            code: query.code,
            error: query.error,
            issuer: query.iss,
        })
        .await;
    let wants_page = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_page {
        return Ok(callback_page(outcome));
    }
    let record = outcome?;
    Ok(ok(McpServerTools {
        server_name: record.name.clone(),
        status: "authorized",
        tools: tool_names(&record),
        authorization_url: None,
    })
    .into_response())
}

fn escape_html(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            other => other.to_string(),
        })
        .collect()
}

fn page(title: &str, message: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>",
        escape_html(message)
    )
}

/// The page a browser sees at the end of an authorization: the error's status and message
/// when it failed (internals hidden as in the envelope).
fn callback_page(outcome: Result<McpServerRecord, DomainError>) -> Response {
    match outcome {
        Ok(record) => Html(page(
            "Authorized",
            &format!(
                "MCP server {} is authorized, with {} tools. You can close this window.",
                record.name,
                record.tools.len()
            ),
        ))
        .into_response(),
        Err(error) => {
            let error = ApiError::from(error);
            let message = if error.is_internal() {
                "internal error".to_owned()
            } else {
                error.to_string()
            };
            let (mut parts, _) = error.into_response().into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            Response::from_parts(parts, Body::from(page("Not authorized", &message)))
        }
    }
}

#[utoipa::path(get, path = "/api/mcp/list", tag = "mcp", responses((status = 200, body = Envelope<McpServerList>)))]
async fn list(State(admin): State<ToolsAdmin>, caller: Caller) -> Answer<McpServerList> {
    let servers = admin.visible_servers(&caller.user()?).await?;
    let authorizations = admin.authorizations(&servers).await?;
    Ok(ok(McpServerList {
        servers: servers
            .iter()
            .map(|server| {
                let mut summary = server_summary(server);
                summary.authorized = authorizations
                    .iter()
                    .find(|(name, _)| *name == server.name)
                    .map(|(_, authorized)| *authorized);
                summary
            })
            .collect(),
    }))
}

#[utoipa::path(delete, path = "/api/mcp/{name}", tag = "mcp", params(("name" = String, Path)), responses((status = 200, body = Envelope<McpServerRef>)))]
async fn remove(
    State(admin): State<ToolsAdmin>,
    Path(name): Path<String>,
    caller: Caller,
) -> Answer<McpServerRef> {
    admin.delete_server(&caller.user()?, &name).await?;
    Ok(ok(McpServerRef { server_name: name }))
}

#[utoipa::path(post, path = "/api/mcp/{name}/refresh", tag = "mcp", params(("name" = String, Path)), responses((status = 200, body = Envelope<McpServerTools>)))]
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
        authorization_url: None,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct ToggleRequest {
    disabled: bool,
    user_id: Option<String>,
}

#[utoipa::path(put, path = "/api/mcp/{name}/toggle", tag = "mcp", params(("name" = String, Path)), request_body = ToggleRequest, responses((status = 200, body = Envelope<McpServerToggled>)))]
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ToolsQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[utoipa::path(get, path = "/api/tools", tag = "mcp", params(ToolsQuery), responses((status = 200, body = Envelope<ToolList>)))]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct ExecRequest {
    tool_name: String,
    #[serde(default)]
    tool_params: serde_json::Map<String, Value>,
    user_id: Option<String>,
    /// The conversation whose workspace a built-in file or code tool works in.
    session_id: Option<String>,
}

#[utoipa::path(post, path = "/api/tools/exec", tag = "mcp", request_body = ExecRequest, responses((status = 200, body = Envelope<Value>, description = "the tool result; admins only")))]
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
