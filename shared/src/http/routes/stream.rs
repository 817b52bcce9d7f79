//! The Stream function's routes (`api.md` §2).

use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::runs::{ApprovalDecision, HandOffTicket, Idempotency, Invocation, Runs};
use crate::http::ApiError;
use crate::http::extract::{Caller, RawBody, ValidQuery, parse_json};
use crate::http::framing::{FIRST_SEQ_HEADER, event_response};
use crate::util::{InputError, SessionId};
use crate::wire::event::Event;
use crate::wire::{ApproveRequest, StreamRequest};

const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Clone)]
struct StreamState {
    runs: Runs,
    sse_ping: Duration,
}

pub fn router(runs: Runs, sse_ping: Duration) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(stream))
        .routes(routes!(chat))
        .routes(routes!(web_stream))
        .routes(routes!(resume))
        .routes(routes!(approve))
        .routes(routes!(continue_run))
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

/// Starts a run and streams its events: NDJSON by default, SSE (`id` = the event's sequence
/// number) with `Accept: text/event-stream`. Every stream ends with the tail: `token_usage`
/// when the model was called, then `stream_end`.
#[utoipa::path(post, path = "/api/stream", tag = "stream",
    request_body = StreamRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "a retry with the same key and body re-attaches to the same run"),
    ),
    responses(
        (status = 200, description = "The run's events, one per line (NDJSON) or per SSE message",
            headers(("x-sage-first-seq" = u64, description = "sequence number of the run's first event")),
            content(
                (Event = "application/x-ndjson"),
                (Event = "text/event-stream"),
            )),
    ))]
async fn stream(
    State(state): State<StreamState>,
    caller: Caller,
    invocation: Option<Extension<Invocation>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let mut request: StreamRequest = parse_json(&body)?;
    request.user_id = Some(caller.with_body(request.user_id.as_deref())?.to_string());
    let idempotency = idempotency(&headers, &body)?;
    let invocation = invocation.map(|Extension(invocation)| invocation);
    let run = state
        .runs
        .start(request, idempotency, invocation.unwrap_or_default())
        .await?;
    let mut response = event_response(&headers, run.events, state.sse_ping);
    response
        .headers_mut()
        .insert(FIRST_SEQ_HEADER, HeaderValue::from(run.first_seq));
    Ok(response)
}

/// The same as `/api/stream` (Sage's older path).
#[utoipa::path(post, path = "/api/chat", tag = "stream", request_body = StreamRequest,
    responses((status = 200, description = "The run's events, as `/api/stream`",
        content((Event = "application/x-ndjson"), (Event = "text/event-stream")))))]
async fn chat(
    state: State<StreamState>,
    caller: Caller,
    invocation: Option<Extension<Invocation>>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    stream(state, caller, invocation, headers, body).await
}

/// The same as `/api/stream` (the path Sage's web client posts to).
#[utoipa::path(post, path = "/api/web-stream", tag = "stream", request_body = StreamRequest,
    responses((status = 200, description = "The run's events, as `/api/stream`",
        content((Event = "application/x-ndjson"), (Event = "text/event-stream")))))]
async fn web_stream(
    state: State<StreamState>,
    caller: Caller,
    invocation: Option<Extension<Invocation>>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    stream(state, caller, invocation, headers, body).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ResumeParams {
    /// Replay the events after this sequence number (default 0: all of them).
    last_index: Option<u64>,
}

/// Replays the events after `last_index` (or SSE `Last-Event-ID`), then follows the live run,
/// then ends with the tail.
#[utoipa::path(get, path = "/api/stream/resume/{session_id}", tag = "stream",
    params(
        ("session_id" = String, Path, description = "the conversation"),
        ResumeParams,
        ("Last-Event-ID" = Option<u64>, Header, description = "SSE reconnect: the last event seen"),
    ),
    responses((status = 200, description = "The events after the given one",
        content((Event = "application/x-ndjson"), (Event = "text/event-stream")))))]
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

/// The owner's decision on the tool calls a paused run holds (its `tool_approval_request`
/// events): `approve`, `reject` (the model is told, and goes on) or `edit` (the call runs with
/// other arguments). Streams the run's continuation as `/api/stream` does; after the wait has
/// expired, the continuation ends the run with an `error` event.
#[utoipa::path(post, path = "/api/sessions/{session_id}/approve", tag = "stream",
    request_body = ApproveRequest,
    params(("session_id" = String, Path, description = "the paused conversation")),
    responses(
        (status = 200, description = "The continuation's events, as `/api/stream`",
            headers(("x-sage-first-seq" = u64, description = "sequence number of its first event")),
            content((Event = "application/x-ndjson"), (Event = "text/event-stream"))),
        (status = 409, description = "Nothing waits for approval, or it was already decided"),
    ))]
async fn approve(
    State(state): State<StreamState>,
    Path(session_id): Path<String>,
    caller: Caller,
    invocation: Option<Extension<Invocation>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let request: ApproveRequest = parse_json(&body)?;
    let decision = ApprovalDecision::parse(request)?;
    let session_id = SessionId::parse(&session_id).map_err(|_| {
        crate::domain::DomainError::NotFound(format!("no conversation {session_id}"))
    })?;
    let run = state
        .runs
        .approve(
            &caller.user()?,
            &session_id,
            decision,
            invocation
                .map(|Extension(invocation)| invocation)
                .unwrap_or_default(),
        )
        .await?;
    let mut response = event_response(&headers, run.events, state.sse_ping);
    response
        .headers_mut()
        .insert(FIRST_SEQ_HEADER, HeaderValue::from(run.first_seq));
    Ok(response)
}

/// Continues a handed-off run in this invocation (the Stream function sends this to itself
/// when a run reaches its invocation's deadline). The ticket's token is the capability: only
/// the run's own processes ever see it. Answers once the run has stopped again; its events
/// are in the log, where clients follow them.
#[utoipa::path(post, path = "/api/internal/runs/continue", tag = "stream",
    request_body = HandOffTicket,
    responses(
        (status = 200, description = "The continuation ran; the last sequence number it reached",
            body = serde_json::Value),
        (status = 404, description = "No checkpoint with this ticket"),
        (status = 409, description = "Another continuation took it"),
    ))]
async fn continue_run(
    State(state): State<StreamState>,
    invocation: Option<Extension<Invocation>>,
    RawBody(body): RawBody,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    use futures_util::StreamExt;
    let ticket: HandOffTicket = parse_json(&body)?;
    let invocation = invocation.map(|Extension(invocation)| invocation);
    let run = state
        .runs
        .continue_run(&ticket, invocation.unwrap_or_default())
        .await?;
    let mut last_seq = run.first_seq.saturating_sub(1);
    let mut events = run.events;
    while let Some(event) = events.next().await {
        last_seq = event.seq;
    }
    Ok(axum::Json(serde_json::json!({
        "session_id": run.session_id,
        "last_seq": last_seq,
    })))
}
