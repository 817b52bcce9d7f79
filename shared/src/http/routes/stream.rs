//! The Stream function's routes (`api.md` §2).

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::runs::{Idempotency, Runs};
use crate::http::ApiError;
use crate::http::extract::{Caller, RawBody, ValidQuery, parse_json};
use crate::http::framing::{FIRST_SEQ_HEADER, event_response};
use crate::util::{InputError, SessionId};
use crate::wire::StreamRequest;

const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Clone)]
struct StreamState {
    runs: Runs,
    sse_ping: Duration,
}

pub fn router(runs: Runs, sse_ping: Duration) -> Router {
    Router::new()
        .route("/api/stream", post(stream))
        .route("/api/chat", post(stream))
        .route("/api/web-stream", post(stream))
        .route("/api/stream/resume/{session_id}", get(resume))
        .with_state(StreamState { runs, sse_ping })
}

fn idempotency(headers: &HeaderMap, body: &[u8]) -> Result<Option<Idempotency>, InputError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let digest = Sha256::digest(body);
    let body_hash = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    Idempotency::parse(value.to_str().unwrap_or_default(), body_hash).map(Some)
}

async fn stream(
    State(state): State<StreamState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let mut request: StreamRequest = parse_json(&body)?;
    request.user_id = Some(caller.with_body(request.user_id.as_deref())?.to_string());
    let idempotency = idempotency(&headers, &body)?;
    let run = state.runs.start(request, idempotency).await?;
    let mut response = event_response(&headers, run.events, state.sse_ping);
    response
        .headers_mut()
        .insert(FIRST_SEQ_HEADER, HeaderValue::from(run.first_seq));
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct ResumeParams {
    last_index: Option<u64>,
}

/// Replays the events after `last_index` (or SSE `Last-Event-ID`), then follows the live run.
async fn resume(
    State(state): State<StreamState>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
    caller: Caller,
    ValidQuery(params): ValidQuery<ResumeParams>,
) -> Result<Response, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value.trim().parse::<u64>().map_err(|_| {
                InputError::Invalid("Last-Event-ID: must be an event id (a number)".into())
            })
        })
        .transpose()?;
    let session_id = SessionId::parse(&session_id).map_err(|_| {
        crate::domain::DomainError::NotFound(format!("no conversation {session_id}"))
    })?;
    let after = params.last_index.or(last_event_id).unwrap_or(0);
    let events = state
        .runs
        .resume(&caller.user()?, &session_id, after)
        .await?;
    Ok(event_response(&headers, events, state.sse_ping))
}
