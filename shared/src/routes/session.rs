//! The Session function's routes (`api.md` §4).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::error::{ApiError, ok};
use crate::request::{ValidJson, ValidQuery};
use crate::run::DEFAULT_USER;
use crate::sessions::{self, MAX_PAGE_SIZE};
use crate::store::{SessionQuery, SortBy};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/conversations", get(list))
        .route(
            "/api/conversations/{session_id}",
            axum::routing::delete(delete),
        )
        .route("/api/conversations/{session_id}/messages", get(messages))
        .route("/api/conversations/{session_id}/title", put(rename))
        .route(
            "/api/share/conversations/{session_id}/messages",
            get(shared_messages),
        )
        .route("/api/sessions/{session_id}/interrupt", post(interrupt))
        .route("/api/sessions/{session_id}/tasks_status", post(status))
        .route("/api/sessions/{session_id}/file_workspace", post(files))
        .route(
            "/api/sessions/{session_id}/file_workspace/download",
            get(download),
        )
}

#[derive(Debug, Default, Deserialize)]
struct Caller {
    user_id: Option<String>,
}

impl Caller {
    fn id(&self) -> String {
        self.user_id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| DEFAULT_USER.to_owned())
    }
}

#[derive(Debug, Deserialize)]
struct ListParams {
    page: Option<u64>,
    page_size: Option<u64>,
    user_id: Option<String>,
    search: Option<String>,
    agent_id: Option<String>,
    sort_by: Option<SortBy>,
}

async fn list(
    State(state): State<AppState>,
    ValidQuery(params): ValidQuery<ListParams>,
) -> Result<Response, ApiError> {
    let page = params.page.unwrap_or(1);
    let page_size = params.page_size.unwrap_or(10);
    if page == 0 {
        return Err(ApiError::BadRequest("page: starts at 1".into()));
    }
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ApiError::BadRequest(format!(
            "page_size: between 1 and {MAX_PAGE_SIZE}"
        )));
    }
    let query = SessionQuery {
        user_id: Caller {
            user_id: params.user_id,
        }
        .id(),
        page,
        page_size,
        search: params.search,
        agent_id: params.agent_id.filter(|id| !id.is_empty()),
        sort_by: params.sort_by.unwrap_or(SortBy::Date),
    };
    Ok(ok(sessions::list(&state, &query).await?).into_response())
}

async fn messages(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    ValidQuery(caller): ValidQuery<Caller>,
) -> Result<Response, ApiError> {
    let data = sessions::messages(&state, &session_id, Some(&caller.id())).await?;
    Ok(ok(data).into_response())
}

async fn shared_messages(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(ok(sessions::messages(&state, &session_id, None).await?).into_response())
}

async fn delete(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    ValidQuery(caller): ValidQuery<Caller>,
) -> Result<Response, ApiError> {
    sessions::delete(&state, &caller.id(), &session_id).await?;
    Ok(ok(json!({"session_id": session_id})).into_response())
}

#[derive(Debug, Deserialize)]
struct TitleRequest {
    title: String,
    user_id: Option<String>,
}

async fn rename(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    ValidQuery(caller): ValidQuery<Caller>,
    ValidJson(request): ValidJson<TitleRequest>,
) -> Result<Response, ApiError> {
    let user_id = request.user_id.unwrap_or_else(|| caller.id());
    let title = sessions::rename(&state, &user_id, &session_id, &request.title).await?;
    Ok(ok(json!({"session_id": session_id, "title": title})).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct InterruptRequest {
    #[allow(dead_code)]
    message: Option<String>,
    user_id: Option<String>,
}

async fn interrupt(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    ValidQuery(caller): ValidQuery<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: InterruptRequest = if body.is_empty() {
        InterruptRequest::default()
    } else {
        crate::request::parse_json(&body)?
    };
    let user_id = request.user_id.unwrap_or_else(|| caller.id());
    let interrupted = sessions::interrupt(&state, &user_id, &session_id).await?;
    Ok(
        ok(json!({"session_id": session_id, "user_id": user_id, "interrupted": interrupted}))
            .into_response(),
    )
}

async fn status(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    ValidQuery(caller): ValidQuery<Caller>,
) -> Result<Response, ApiError> {
    Ok(ok(sessions::status(&state, &caller.id(), &session_id).await?).into_response())
}

async fn files(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    ValidQuery(caller): ValidQuery<Caller>,
) -> Result<Response, ApiError> {
    let files = sessions::list_files(&state, &caller.id(), &session_id).await?;
    Ok(ok(json!({"session_id": session_id, "files": files})).into_response())
}

#[derive(Debug, Deserialize)]
struct DownloadParams {
    file_path: String,
    user_id: Option<String>,
}

async fn download(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    ValidQuery(params): ValidQuery<DownloadParams>,
) -> Result<Response, ApiError> {
    let user_id = Caller {
        user_id: params.user_id,
    }
    .id();
    let path =
        sessions::file_for_download(&state, &user_id, &session_id, &params.file_path).await?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::NotFound(format!("no file {}", params.file_path)))?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().replace('"', ""))
        .unwrap_or_default();
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from(bytes),
    )
        .into_response())
}
