//! The one error type every handler returns, and the response envelope of `api.md` §1.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::DomainError;
use crate::util::{InputError, now_secs};

/// `{"code":200,"message":...,"data":...,"timestamp":...}`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope<T: Serialize> {
    pub code: u16,
    pub message: String,
    pub data: T,
    pub timestamp: f64,
}

pub fn ok<T: Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope {
        code: 200,
        message: "success".into(),
        data,
        timestamp: now_secs(),
    })
}

/// Every error: `code` is the HTTP status; `error_detail` names the field when the body broke
/// the schema.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ErrorBody<'a> {
    pub code: u16,
    pub message: &'a str,
    #[schema(required)]
    pub error_detail: Option<&'a str>,
    pub timestamp: f64,
}

pub(super) fn error_response(status: StatusCode, message: &str, detail: Option<&str>) -> Response {
    let body = ErrorBody {
        code: status.as_u16(),
        message,
        error_detail: detail,
        timestamp: now_secs(),
    };
    (status, Json(body)).into_response()
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("request body too large: at most {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request took longer than {0:?}")]
    Timeout(Duration),
    #[error("no such route")]
    NoRoute,
}

impl From<InputError> for ApiError {
    fn from(error: InputError) -> Self {
        Self::Domain(DomainError::Input(error))
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Domain(error) => match error {
                DomainError::Input(InputError::Invalid(_)) => StatusCode::BAD_REQUEST,
                DomainError::Input(InputError::Schema { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
                DomainError::NotFound(_) => StatusCode::NOT_FOUND,
                DomainError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                DomainError::Forbidden(_) => StatusCode::FORBIDDEN,
                DomainError::Conflict(_) => StatusCode::CONFLICT,
                DomainError::LimitReached(_) => StatusCode::TOO_MANY_REQUESTS,
                DomainError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                DomainError::Upstream(_) => StatusCode::BAD_GATEWAY,
                DomainError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
                DomainError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::NoRoute => StatusCode::NOT_FOUND,
        }
    }

    /// True when the cause is ours, not the caller's: its details stay in the log.
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Domain(DomainError::Store(_)))
    }
}

/// The error a response was made from, for the middleware that logs it inside the request's
/// span.
#[derive(Clone)]
pub(super) struct LoggedError(pub Arc<ApiError>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = match &self {
            Self::Domain(DomainError::Input(InputError::Schema { detail })) => {
                error_response(status, &self.to_string(), Some(detail))
            }
            // The request id is added by the middleware, which knows it.
            error if error.is_internal() => error_response(status, "internal error", None),
            other => error_response(status, &other.to_string(), None),
        };
        response
            .extensions_mut()
            .insert(LoggedError(Arc::new(self)));
        response
    }
}
