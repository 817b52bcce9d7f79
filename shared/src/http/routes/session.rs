//! The Session function's routes (`api.md` §4).

use axum::extract::{Path, State};

use axum::Json;
use axum::response::Response;
use serde::Deserialize;

use crate::domain::DomainError;
use crate::domain::sessions::Sessions;
use crate::http::extract::{Caller, RawBody, ValidJson, ValidQuery, parse_json};
use crate::http::{ApiError, Envelope, ok};
use crate::store::{SessionQuery, SortBy};
use crate::util::SessionId;
use crate::wire::api::{
    Conversation, FileList, Interrupted, Renamed, RunsStopped, SessionList, SessionRef, TaskStatus,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Answer<T> = Result<Json<Envelope<T>>, ApiError>;

pub fn router(sessions: Sessions) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(remove))
        .routes(routes!(messages))
        .routes(routes!(rename))
        .routes(routes!(shared_messages))
        .routes(routes!(interrupt))
        .routes(routes!(stop_user_runs))
        .routes(routes!(status))
        .routes(routes!(files))
        .routes(routes!(download))
        .with_state(sessions)
}

/// No conversation can have an id that does not parse, so such a path names none.
fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw)
        .map_err(|_| DomainError::NotFound(format!("no conversation {raw}")).into())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// From 1.
    #[param(minimum = 1)]
    page: Option<u64>,
    /// 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u64>,
    search: Option<String>,
    agent_id: Option<String>,
    #[param(inline)]
    sort_by: Option<SortBy>,
}

#[utoipa::path(get, path = "/api/conversations", tag = "session", params(ListParams), responses((status = 200, body = Envelope<SessionList>)))]
async fn list(
    State(sessions): State<Sessions>,
    caller: Caller,
    ValidQuery(params): ValidQuery<ListParams>,
) -> Answer<SessionList> {
    let query = SessionQuery {
        user_id: caller.user()?.to_string(),
        page: params.page.unwrap_or(1),
        page_size: params.page_size.unwrap_or(10),
        search: params.search,
        agent_id: params.agent_id.filter(|id| !id.is_empty()),
        sort_by: params.sort_by.unwrap_or(SortBy::Date),
    };
    Ok(ok(sessions.list(&query).await?))
}

#[utoipa::path(get, path = "/api/conversations/{session_id}/messages", tag = "session", params(("session_id" = String, Path)), responses((status = 200, body = Envelope<Conversation>)))]
async fn messages(
    State(sessions): State<Sessions>,
    Path(id): Path<String>,
    caller: Caller,
) -> Answer<Conversation> {
    let id = session_id(&id)?;
    Ok(ok(sessions.messages(&id, Some(&caller.user()?)).await?))
}

#[utoipa::path(get, path = "/api/share/conversations/{session_id}/messages", tag = "session", params(("session_id" = String, Path)), responses((status = 200, body = Envelope<Conversation>)))]
async fn shared_messages(
    State(sessions): State<Sessions>,
    Path(id): Path<String>,
) -> Answer<Conversation> {
    Ok(ok(sessions.messages(&session_id(&id)?, None).await?))
}

#[utoipa::path(delete, path = "/api/conversations/{session_id}", tag = "session", params(("session_id" = String, Path)), responses((status = 200, body = Envelope<SessionRef>)))]
async fn remove(
    State(sessions): State<Sessions>,
    Path(id): Path<String>,
    caller: Caller,
) -> Answer<SessionRef> {
    let id = session_id(&id)?;
    sessions.delete(&caller.user()?, &id).await?;
    Ok(ok(SessionRef {
        session_id: id.to_string(),
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct TitleRequest {
    title: String,
    user_id: Option<String>,
}

#[utoipa::path(put, path = "/api/conversations/{session_id}/title", tag = "session", params(("session_id" = String, Path)), request_body = TitleRequest, responses((status = 200, body = Envelope<Renamed>)))]
async fn rename(
    State(sessions): State<Sessions>,
    Path(id): Path<String>,
    caller: Caller,
    ValidJson(request): ValidJson<TitleRequest>,
) -> Answer<Renamed> {
    let id = session_id(&id)?;
    let user = caller.with_body(request.user_id.as_deref())?;
    let title = sessions.rename(&user, &id, &request.title).await?;
    Ok(ok(Renamed {
        session_id: id.to_string(),
        title,
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
struct InterruptRequest {
    /// Sage's clients send a reason; it is not kept.
    #[serde(rename = "message")]
    _message: Option<String>,
    user_id: Option<String>,
}

#[utoipa::path(post, path = "/api/sessions/{session_id}/interrupt", tag = "session", params(("session_id" = String, Path)), request_body(content = Option<InterruptRequest>, description = "optional; Sage's clients send a reason"), responses((status = 200, body = Envelope<Interrupted>)))]
async fn interrupt(
    State(sessions): State<Sessions>,
    Path(id): Path<String>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Answer<Interrupted> {
    let id = session_id(&id)?;
    let request: InterruptRequest = if body.is_empty() {
        InterruptRequest::default()
    } else {
        parse_json(&body)?
    };
    let user = caller.with_body(request.user_id.as_deref())?;
    let interrupted = sessions.interrupt(&user, &id).await?;
    Ok(ok(Interrupted {
        session_id: id.to_string(),
        user_id: user.to_string(),
        interrupted,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StopRunsRequest {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    all: bool,
}

/// The kill switch: an admin stops every running run of one user, or of everyone.
#[utoipa::path(post, path = "/api/sessions/runs/stop", tag = "session", request_body = StopRunsRequest, responses((status = 200, body = Envelope<RunsStopped>)))]
async fn stop_user_runs(
    State(sessions): State<Sessions>,
    caller: Caller,
    ValidJson(request): ValidJson<StopRunsRequest>,
) -> Answer<RunsStopped> {
    caller.operator("only an admin may stop another user's runs")?;
    let user_id = request
        .user_id
        .as_deref()
        .map(str::trim)
        .unwrap_or_default();
    let (user_id, stopped) = match (user_id.is_empty(), request.all) {
        (false, false) => {
            let user = crate::util::UserId::new(user_id);
            (user.to_string(), sessions.stop_user_runs(&user).await?)
        }
        (true, true) => ("*".to_owned(), sessions.stop_all_runs().await?),
        _ => {
            return Err(DomainError::invalid(
                "user_id: the user whose runs to stop, or `all: true` for everyone's (not both)",
            )
            .into());
        }
    };
    Ok(ok(RunsStopped { user_id, stopped }))
}

#[utoipa::path(post, path = "/api/sessions/{session_id}/tasks_status", tag = "session", params(("session_id" = String, Path)), responses((status = 200, body = Envelope<TaskStatus>)))]
async fn status(
    State(sessions): State<Sessions>,
    Path(id): Path<String>,
    caller: Caller,
) -> Answer<TaskStatus> {
    let id = session_id(&id)?;
    Ok(ok(sessions.status(&caller.user()?, &id).await?))
}

#[utoipa::path(post, path = "/api/sessions/{session_id}/file_workspace", tag = "session", params(("session_id" = String, Path)), responses((status = 200, body = Envelope<FileList>)))]
async fn files(
    State(sessions): State<Sessions>,
    Path(id): Path<String>,
    caller: Caller,
) -> Answer<FileList> {
    let id = session_id(&id)?;
    let files = sessions.list_files(&caller.user()?, &id).await?;
    Ok(ok(FileList {
        session_id: id.to_string(),
        files,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DownloadParams {
    file_path: String,
}

#[utoipa::path(get, path = "/api/sessions/{session_id}/file_workspace/download", tag = "session", params(("session_id" = String, Path), DownloadParams), responses((status = 200, description = "The file", content_type = "*/*", body = Vec<u8>)))]
async fn download(
    State(sessions): State<Sessions>,
    Path(id): Path<String>,
    caller: Caller,
    ValidQuery(params): ValidQuery<DownloadParams>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let file = sessions
        .download(&caller.user()?, &id, &params.file_path)
        .await?;
    Ok(super::files::file_response(file))
}
