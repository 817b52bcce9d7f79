//! Uploads (`POST /api/oss/upload`, served by the Session function) and the file URLs handed
//! out when the store has no public or presigned ones (`GET /api/oss/file/{id}/{name}`).

use axum::body::Body;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::domain::DomainError;
use crate::domain::files::{FileDownload, Files};
use crate::http::extract::Caller;
use crate::http::{ApiError, Envelope, Limits, ok};
use crate::wire::api::Uploaded;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(files: Files) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .routes(routes!(download))
        .with_state(files)
}

/// A stored file as an attachment, streamed.
pub fn file_response(file: FileDownload) -> Response {
    let name = file.name.replace('"', "");
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(file.content_type),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(file.body),
    )
        .into_response();
    if let Some(size) = file.size {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    response
}

/// The upload form, as documented: the handler reads the multipart stream itself.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The multipart field `file`, as Sage's client sends it; the body limit bounds its size.
#[utoipa::path(post, path = "/api/oss/upload", tag = "session", request_body(content = UploadForm, content_type = "multipart/form-data"), responses((status = 200, body = Envelope<Uploaded>)))]
async fn upload(
    State(files): State<Files>,
    caller: Caller,
    limits: Option<Extension<Limits>>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Json<Envelope<Uploaded>>, ApiError> {
    let user = caller.user()?;
    let limit = limits.map_or(0, |Extension(limits)| limits.max_body_bytes);
    let bad_form = |detail: String| ApiError::from(DomainError::invalid(format!("file: {detail}")));
    let mut form = form.map_err(|rejection| bad_form(rejection.body_text()))?;
    while let Some(field) = form.next_field().await.map_err(|error| {
        if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit }
        } else {
            bad_form(error.body_text())
        }
    })? {
        if field.name() == Some("file") {
            let name = field.file_name().unwrap_or("file").to_owned();
            let bytes = field.bytes().await.map_err(|error| {
                if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge { limit }
                } else {
                    bad_form(error.body_text())
                }
            })?;
            return Ok(ok(files.upload(&user, &name, bytes).await?));
        }
    }
    Err(bad_form("the multipart field `file` is missing".into()))
}

#[utoipa::path(get, path = "/api/oss/file/{id}/{name}", tag = "session", params(("id" = String, Path), ("name" = String, Path)), responses((status = 200, description = "The file", content_type = "*/*", body = Vec<u8>)))]
async fn download(
    State(files): State<Files>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(file_response(files.open_upload(&id, &name).await?))
}
