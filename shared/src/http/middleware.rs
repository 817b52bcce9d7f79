//! The stack every router gets: a request id (set, propagated, returned in `x-request-id`), a
//! trace span per request, the body limit, and one log line per failed request, inside its span.

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::ApiError;
use super::error::{LoggedError, error_response};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request limits every router enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
}

/// A timeout for routes that do not stream; past it they answer 504 in the envelope.
pub fn with_timeout<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    limit: Duration,
) -> Router<S> {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(
                move |_: tower::BoxError| async move { ApiError::Timeout(limit) },
            ))
            .timeout(limit),
    )
}

/// Any origin may call: credentials travel as a bearer token, never as a cookie, so a page of
/// another origin gains nothing it could not do with the token itself. Outermost, so that every
/// answer carries the headers: a 401 without them reaches a browser page as a network error, and
/// Sage's client would never reopen its login.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([REQUEST_ID, HeaderName::from_static("x-sage-first-seq")])
        .max_age(Duration::from_secs(600))
}

/// Wraps a finished router in the stack, outermost first: CORS, request id, trace span, error
/// log, limits.
pub fn with_middleware(router: Router, limits: Limits) -> Router {
    router
        .fallback(|| async { ApiError::NoRoute })
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &Request| {
                        let request_id = request
                            .headers()
                            .get(REQUEST_ID)
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!(
                            "request",
                            method = %request.method(),
                            path = %request.uri().path(),
                            request_id,
                        )
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(middleware::from_fn(log_errors))
                .layer(axum::Extension(limits))
                .layer(DefaultBodyLimit::max(limits.max_body_bytes)),
        )
        .layer(cors())
}

/// Logs a failed request once, with its source chain; an internal error's body gets the
/// request id to quote, never the cause.
async fn log_errors(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let response = next.run(request).await;
    let Some(LoggedError(error)) = response.extensions().get::<LoggedError>().cloned() else {
        return response;
    };
    let status = response.status();
    let chain = crate::telemetry::chain(error.as_ref());
    if error.is_internal() {
        tracing::error!(%status, error = %chain, "request failed");
        let detail = format!("request id {request_id}");
        return error_response(status, "internal error", Some(&detail));
    }
    if status == StatusCode::NOT_FOUND || status.is_client_error() {
        tracing::info!(%status, error = %chain, "request refused");
    } else {
        tracing::warn!(%status, error = %chain, "request failed");
    }
    response.into_response()
}
