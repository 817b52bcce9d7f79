//! The Stream function's routes (`api.md` §2).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::app::AppState;
use crate::error::ApiError;
use crate::event::StoredEvent;
use crate::request::{StreamRequest, ValidJson};
use crate::run::start_run;

const PING_INTERVAL: Duration = Duration::from_secs(15);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/stream", post(stream))
        .route("/api/chat", post(stream))
        .route("/api/web-stream", post(stream))
}

async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidJson(request): ValidJson<StreamRequest>,
) -> Result<Response, ApiError> {
    let run = start_run(&state, request).await?;
    Ok(if wants_sse(&headers) {
        sse_response(run.events)
    } else {
        ndjson_response(run.events)
    })
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

fn to_json(stored: &StoredEvent) -> String {
    serde_json::to_string(&stored.event).expect("events always serialize")
}

/// Sage's framing: one JSON object per line, UTF-8 unescaped.
pub fn ndjson_response(events: tokio::sync::mpsc::UnboundedReceiver<StoredEvent>) -> Response {
    let lines = UnboundedReceiverStream::new(events).map(|stored| {
        let mut line = to_json(&stored);
        line.push('\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        Body::from_stream(lines),
    )
        .into_response()
}

/// `id: <seq>`, `event: <type>`, `data: <json>`, and `: ping` while the run is quiet.
pub fn sse_response(events: tokio::sync::mpsc::UnboundedReceiver<StoredEvent>) -> Response {
    let frames = UnboundedReceiverStream::new(events).map(|stored| {
        let kind = serde_json::to_value(stored.event.kind)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        Ok::<_, Infallible>(
            SseEvent::default()
                .id(stored.seq.to_string())
                .event(kind)
                .data(to_json(&stored)),
        )
    });
    let sse = Sse::new(frames).keep_alive(KeepAlive::new().interval(PING_INTERVAL).text("ping"));
    (
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        sse,
    )
        .into_response()
}
