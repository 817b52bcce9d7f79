//! The Stream function's routes (`api.md` §2).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::app::AppState;
use crate::error::ApiError;
use crate::event::StoredEvent;
use crate::follow::follow;
use crate::request::{StreamRequest, ValidQuery, parse_json};
use crate::run::{DEFAULT_USER, Idempotency, start_run};
use crate::sessions::owned_session;

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// Response header with the sequence number of the run's first event: an NDJSON client adds the
/// lines it received to resume with `last_index` (SSE clients have the `id:` of each event).
pub const FIRST_SEQ_HEADER: &str = "x-sage-first-seq";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/stream", post(stream))
        .route("/api/chat", post(stream))
        .route("/api/web-stream", post(stream))
        .route("/api/stream/resume/{session_id}", get(resume))
}

fn idempotency(headers: &HeaderMap, body: &[u8]) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ))
        })?;
    let digest = Sha256::digest(body);
    let body_hash = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(Some(Idempotency {
        key: key.to_owned(),
        body_hash,
    }))
}

async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: StreamRequest = parse_json(&body)?;
    let idempotency = idempotency(&headers, &body)?;
    let run = start_run(&state, request, idempotency).await?;
    let mut response = if wants_sse(&headers) {
        sse_response(run.events, ping_interval(&state))
    } else {
        ndjson_response(run.events)
    };
    response
        .headers_mut()
        .insert(FIRST_SEQ_HEADER, HeaderValue::from(run.first_seq));
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct ResumeParams {
    last_index: Option<u64>,
    user_id: Option<String>,
}

/// Replays the events after `last_index` (or SSE `Last-Event-ID`), then follows the live run.
async fn resume(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
    ValidQuery(params): ValidQuery<ResumeParams>,
) -> Result<Response, ApiError> {
    let user_id = params
        .user_id
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| DEFAULT_USER.to_owned());
    owned_session(&state, &user_id, &session_id).await?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value.trim().parse::<u64>().map_err(|_| {
                ApiError::BadRequest("Last-Event-ID: must be an event id (a number)".into())
            })
        })
        .transpose()?;
    let after = params.last_index.or(last_event_id).unwrap_or(0);
    let events = follow(state.store.clone(), session_id, after);
    Ok(if wants_sse(&headers) {
        sse_response(events, ping_interval(&state))
    } else {
        ndjson_response(events)
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
fn ping_interval(state: &AppState) -> Duration {
    Duration::from_secs_f64(state.config.sse_ping_seconds)
}

pub fn sse_response(
    events: tokio::sync::mpsc::UnboundedReceiver<StoredEvent>,
    ping: Duration,
) -> Response {
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
    let sse = Sse::new(frames).keep_alive(KeepAlive::new().interval(ping).text("ping"));
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
