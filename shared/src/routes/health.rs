//! The Health function's routes (`api.md` §5).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;
use crate::error::{now_secs, ok};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health))
        .route("/health", get(health))
        .route("/active", get(active))
        .route("/api/health/ready", get(ready))
}

async fn health() -> Response {
    ok(json!({
        "status": "healthy",
        "timestamp": now_secs(),
        "service": "SagePlatform",
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn active() -> Json<&'static str> {
    Json("Service is available.")
}

/// One line per configured dependency; 503 when any of them is down.
async fn ready(State(state): State<AppState>) -> Response {
    let mut lines = Vec::new();
    let mut healthy = true;
    match state.store.ping().await {
        Ok(()) => lines.push(format!("store ({:?}): ok", state.config.db_type)),
        Err(error) => {
            healthy = false;
            tracing::warn!(%error, "store readiness check failed");
            lines.push(format!("store ({:?}): unreachable", state.config.db_type));
        }
    }
    let llm = &state.config.default_llm_api_base_url;
    if state.config.default_llm_keys().is_empty() {
        healthy = false;
        lines.push("llm: no API key configured (SAGE_DEFAULT_LLM_API_KEY)".into());
    } else if llm_reachable(llm).await {
        lines.push(format!("llm ({llm}): reachable"));
    } else {
        healthy = false;
        lines.push(format!("llm ({llm}): unreachable"));
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "code": status.as_u16(),
        "message": if healthy { "ready" } else { "not ready" },
        "data": {"ready": healthy, "checks": lines},
        "timestamp": now_secs(),
    });
    (status, Json(body)).into_response()
}

async fn llm_reachable(base_url: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    else {
        return false;
    };
    client
        .get(format!("{}/models", base_url.trim_end_matches('/')))
        .send()
        .await
        .is_ok()
}
