//! Sage's two framings of a run's events: NDJSON (one JSON object per line) and SSE.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::wire::EventStream;

/// Response header with the sequence number of the run's first event: an NDJSON client adds the
/// lines it received to resume with `last_index` (SSE clients have the `id:` of each event).
pub const FIRST_SEQ_HEADER: &str = "x-sage-first-seq";

pub fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// Marks a response whose body is a run's events, sent as they happen: nothing may buffer it.
#[derive(Debug, Clone, Copy)]
pub struct StreamedEvents;

/// The framing the client asked for.
pub fn event_response(headers: &HeaderMap, events: EventStream, ping: Duration) -> Response {
    let mut response = if wants_sse(headers) {
        sse_response(events, ping)
    } else {
        ndjson_response(events)
    };
    response.extensions_mut().insert(StreamedEvents);
    response
}

/// One JSON object per line, UTF-8 unescaped.
fn ndjson_response(events: EventStream) -> Response {
    let lines = events.map(|stored| {
        let json = stored.json();
        let mut line = Vec::with_capacity(json.len() + 1);
        line.extend_from_slice(json.as_bytes());
        line.push(b'\n');
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
fn sse_response(events: EventStream, ping: Duration) -> Response {
    let frames = events.map(|stored| {
        Ok::<_, Infallible>(
            SseEvent::default()
                .id(stored.seq.to_string())
                .event(stored.event.kind.as_str())
                .data(stored.json()),
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
