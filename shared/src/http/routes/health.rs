//! The Health function's routes (`api.md` §5).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::health::HealthCheck;
use crate::http::{Envelope, ok};
use crate::util::now_secs;
use crate::wire::api::{Health, Readiness};

pub fn router(check: HealthCheck) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(health_alias))
        .routes(routes!(active))
        .routes(routes!(ready))
        .with_state(check)
}

/// The service is up.
#[utoipa::path(get, path = "/api/health", tag = "health",
    responses((status = 200, body = Envelope<Health>)))]
async fn health() -> Json<Envelope<Health>> {
    ok(Health {
        status: "healthy",
        timestamp: now_secs(),
        service: "SagePlatform",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// The path Sage's deployment guide documents for the health check.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, body = Envelope<Health>)))]
async fn health_alias() -> Json<Envelope<Health>> {
    health().await
}

/// Sage's liveness answer.
#[utoipa::path(get, path = "/active", tag = "health",
    responses((status = 200, body = String, content_type = "application/json",
        example = json!("Service is available."))))]
async fn active() -> Json<&'static str> {
    Json("Service is available.")
}

/// Checks each configured dependency; 503 with the same body when any is down.
#[utoipa::path(get, path = "/api/health/ready", tag = "health", responses(
    (status = 200, body = Envelope<Readiness>),
    (status = 503, description = "A dependency is down", body = Envelope<Readiness>),
))]
async fn ready(State(check): State<HealthCheck>) -> Response {
    let readiness = check.readiness().await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Envelope {
        code: status.as_u16(),
        message: if readiness.ready {
            "ready"
        } else {
            "not ready"
        }
        .into(),
        data: readiness,
        timestamp: now_secs(),
    };
    (status, Json(body)).into_response()
}
