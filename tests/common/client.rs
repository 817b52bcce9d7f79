//! Clients over real sockets for both framings, and the checks every stream shares.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// The content type of an NDJSON stream.
pub const NDJSON_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// An NDJSON body: one JSON object per line, no blank lines.
pub fn ndjson_events(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("every line is one JSON object"))
        .collect()
}

/// POSTs to a streaming endpoint and reads the NDJSON answer to its end.
pub async fn post_ndjson(url: &str, body: &Value) -> Vec<Value> {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "stream request failed");
    assert_eq!(response.headers()["content-type"], NDJSON_CONTENT_TYPE);
    ndjson_events(&response.text().await.unwrap())
}

#[derive(Debug, Clone, PartialEq)]
pub struct SseFrame {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// POSTs with `Accept: text/event-stream` and parses the frames.
pub async fn post_sse(url: &str, body: &Value) -> Vec<SseFrame> {
    let response = reqwest::Client::new()
        .post(url)
        .header("accept", "text/event-stream")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    read_sse(response).await
}

/// Reads an SSE answer to its end.
pub async fn read_sse(response: reqwest::Response) -> Vec<SseFrame> {
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut events = response.bytes_stream().eventsource();
    let mut frames = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.expect("well-formed SSE");
        frames.push(SseFrame {
            id: event.id,
            event: event.event,
            data: serde_json::from_str(&event.data).expect("data is JSON"),
        });
    }
    frames
}

/// GET, returning status and JSON body.
pub async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Sends `body` as JSON with `method`, returning status and JSON body.
pub async fn send_json(method: reqwest::Method, url: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// `method` on `url`, with `body` as JSON when there is one; status and JSON answer.
pub async fn call_json(method: reqwest::Method, url: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// The `x-sage-first-seq` header of a streamed response: its first event's sequence number.
pub fn first_seq(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("x-sage-first-seq")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// Reads an NDJSON stream event by event, as a client that may hang up mid-run.
pub struct NdjsonReader {
    pub status: u16,
    pub first_seq: Option<u64>,
    stream: ByteStream,
    buffer: String,
}

impl NdjsonReader {
    pub async fn open(request: reqwest::RequestBuilder) -> Self {
        let response = request.send().await.unwrap();
        let first_seq = first_seq(&response);
        Self {
            status: response.status().as_u16(),
            first_seq,
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    pub async fn post(url: &str, body: &Value) -> Self {
        Self::open(reqwest::Client::new().post(url).json(body)).await
    }

    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(newline) = self.buffer.find('\n') {
                let line: String = self.buffer.drain(..=newline).collect();
                return Some(serde_json::from_str(line.trim()).expect("a JSON line"));
            }
            let chunk = self.stream.next().await?.expect("the stream reads");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    pub async fn rest(mut self) -> Vec<Value> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// Reads an NDJSON body to its end, noting when each event arrived.
pub async fn read_arrivals(response: reqwest::Response) -> Vec<(Duration, Value)> {
    let started = std::time::Instant::now();
    let mut arrivals = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(newline) = buffer.find('\n') {
            let line: String = buffer.drain(..=newline).collect();
            if !line.trim().is_empty() {
                arrivals.push((
                    started.elapsed(),
                    serde_json::from_str(line.trim()).unwrap(),
                ));
            }
        }
    }
    arrivals
}

/// Asserts that at least two events arrived `gap` or more before the last one: the stream was
/// delivered as it was produced, not buffered to the end.
pub fn assert_incremental(arrivals: &[(Duration, Value)], gap: Duration) {
    let end = arrivals.last().expect("some events").0;
    let early = arrivals.iter().filter(|(at, _)| end - *at >= gap).count();
    assert!(
        early >= 2,
        "at least two events arrive well before the run ends: {:?}",
        arrivals
            .iter()
            .map(|(at, e)| (at.as_millis(), e["type"].clone()))
            .collect::<Vec<_>>()
    );
}

/// Asserts the mandatory tail: `token_usage` then `stream_end` counting the events before it.
pub fn assert_tail(events: &[Value], session_id: &str) {
    let count = events.len();
    assert!(count >= 2, "a stream has at least its tail: {events:?}");
    let usage = &events[count - 2];
    assert_eq!(usage["type"], "token_usage", "{usage}");
    assert_eq!(usage["role"], "assistant");
    assert_eq!(usage["session_id"], session_id);
    assert!(usage["metadata"]["token_usage"]["total_info"].is_object());
    assert!(usage["metadata"]["token_usage"]["per_step_info"].is_array());
    let end = &events[count - 1];
    assert_eq!(end["type"], "stream_end", "{end}");
    assert_eq!(end["session_id"], session_id);
    assert_eq!(end["total_stream_count"], (count - 1) as u64);
    // A fibre run's sub-agents speak from their sub-sessions.
    let sub_session = format!("{session_id}_sub_");
    for event in events {
        let from = event["session_id"].as_str().unwrap_or_default();
        assert!(
            from == session_id || from.starts_with(&sub_session),
            "session_id on every event: {from} in {session_id}'s stream"
        );
        assert!(event["timestamp"].is_f64());
        assert_ne!(event["role"], "user", "user input is never echoed");
    }
}

pub fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["type"] == kind)
        .collect()
}

/// The `step_name`s of the run's `token_usage` event, in order.
pub fn usage_steps(events: &[Value]) -> Vec<String> {
    let usage = of_type(events, "token_usage");
    usage[0]["metadata"]["token_usage"]["per_step_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["step_name"].as_str().unwrap().to_owned())
        .collect()
}

/// The texts of the events of `kind`, one per `message_id`, in the order they began.
pub fn texts_by_message(events: &[Value], kind: &str) -> Vec<String> {
    let mut by_message: Vec<(String, String)> = Vec::new();
    for event in of_type(events, kind) {
        let id = event["message_id"].as_str().unwrap().to_owned();
        let text = event["content"].as_str().unwrap_or_default();
        match by_message.iter_mut().find(|(seen, _)| *seen == id) {
            Some((_, all)) => all.push_str(text),
            None => by_message.push((id, text.to_owned())),
        }
    }
    by_message.into_iter().map(|(_, text)| text).collect()
}

/// The answer text: the `do_subtask_result` deltas concatenated.
pub fn answer_text(events: &[Value]) -> String {
    of_type(events, "do_subtask_result")
        .iter()
        .filter_map(|event| event["content"].as_str())
        .collect()
}

pub fn session_of(events: &[Value]) -> String {
    events[0]["session_id"].as_str().unwrap().to_owned()
}

pub fn user_message(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

/// Base64url without padding (JWT segments, JWK numbers): the tests need no base64 crate.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A skill archive: `SKILL.md` with `name` and `description`, its `body`, and `files` beside it,
/// all in one folder as people zip them.
pub fn skill_zip(name: &str, description: &str, body: &str, files: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    let skill_md = format!("---\nname: {name}\ndescription: {description}\n---\n{body}\n");
    let mut entries = vec![("SKILL.md", skill_md.as_str())];
    entries.extend_from_slice(files);
    for (path, content) in entries {
        writer
            .start_file(format!("{name}/{path}"), options)
            .unwrap();
        writer.write_all(content.as_bytes()).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// `POST /api/skills/upload{query}` with the archive as the multipart field `file`.
pub async fn upload_skill(
    url: &str,
    query: &str,
    token: Option<&str>,
    archive: Vec<u8>,
) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(archive)
        .file_name("skill.zip")
        .mime_str("application/zip")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("file", part);
    let mut request = reqwest::Client::new()
        .post(format!("{url}/api/skills/upload{query}"))
        .multipart(form);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A one-page PDF whose text layer is `text` (Helvetica, one line), with a correct xref table.
pub fn minimal_pdf(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_owned(),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_owned(),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (at, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", at + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}
