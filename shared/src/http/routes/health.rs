//! The Health function's routes (`api.md` §5).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::domain::health::HealthCheck;
use crate::http::{Envelope, ok};
use crate::util::now_secs;
use crate::wire::api::Health;

pub fn router(check: HealthCheck) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/health", get(health))
        .route("/active", get(active))
        .route("/api/health/ready", get(ready))
        .with_state(check)
}

async fn health() -> Json<Envelope<Health>> {
    ok(Health {
        status: "healthy",
        timestamp: now_secs(),
        service: "SagePlatform",
        version: env!("CARGO_PKG_VERSION"),
    })
}

async fn active() -> Json<&'static str> {
    Json("Service is available.")
}

/// 503 with the same body when any dependency is down.
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
