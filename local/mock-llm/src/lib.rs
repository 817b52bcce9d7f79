//! `sage-mock-llm`: a scripted OpenAI-compatible chat model, the one test double of the project.
//!
//! `POST /v1/chat/completions` (also `/chat/completions`) streams SSE chunks exactly like an
//! OpenAI-compatible provider: text token by token, tool calls in fragments, a usage chunk, then
//! `[DONE]`. What it answers is scripted by directives in the LAST USER MESSAGE:
//!
//! | directive | effect |
//! |---|---|
//! | `call:NAME` or `call:NAME{"json":"args"}` | the answer is a tool call (several directives = several calls in one turn) |
//! | `call-forever:NAME` | like `call:`, and keeps calling after tool results (loop-limit tests) |
//! | `A next: B` | stages: the first turn follows A; after its tool results, the next turn follows B |
//! | `think:` | DeepSeek-style `reasoning_content` deltas before the answer |
//! | `words:N` | the text answer is N tokens long |
//! | `say:TEXT` | the text answer is TEXT, everything after `say:` verbatim (no directive in it counts) |
//! | `fail:NNN` | HTTP status NNN with an OpenAI error body, before any streaming |
//! | `fail:drop` | streams a few tokens, then drops the connection |
//! | `judge:N`, `judge:never`, `judge:garbage` | how the completion judge answers (below) |
//! | `steps:N`, `steps:none` | multi mode's decomposition writes N steps (default 2), or no plan at all |
//! | `status:STATUS` | multi mode's progress judge answers STATUS (default `in_progress`; `judge:garbage` applies too) |
//!
//! When the last message is a tool result (and no `call-forever:`), the answer is text:
//! `Tool results: <content> | <content>`, so a test sees what was fed back. When the last message
//! is a system message starting with `Summarize` (a run's summary step), the answer is
//! `Summary: <every user message before it, joined by " / ">` and never a tool call. When the
//! first message is a system message starting with `Extract long-term memories` (memory
//! extraction), the answer is a fenced JSON array with one `preference` memory per `I prefer X`
//! the transcript's user lines say (key `prefers_<first three words>`). When it starts with
//! `Summarize this conversation` (the summary job), the answer is `Summary: ` and the previous
//! summary's points then each `user:` line of the transcript, joined by ` / `. When the last
//! message is a system message starting with `Suggest follow-up questions` (the suggestion step),
//! the answer is `\n- More about <the user's first three words>?\n- Can you give an example?`.
//! When the first is a system message starting with `Pick the one workflow`, the answer is the
//! first listed workflow whose name the user's request contains, else `none`. When it starts
//! with `You design AI agents` (drafting an agent) and the request has no `say:`, the answer is
//! an agent as a JSON object named after the description's first three words. When it starts
//! with `Choose the tools needed` (tool selection), the answer is a JSON list of the listed tools
//! whose names the request contains. When the last message is a system message starting with
//! `Decide whether the task is done` (the completion judge), the answer is
//! `{"reason", "task_interrupted"}`, scripted by `judge:N` / `judge:never` / `judge:garbage` (see
//! [`verdict`]); without it, the first text reply ends the task. Multi mode's steps end with a
//! system instruction too: `Break the user's task` (the decomposition) is answered with a
//! sentence and a `todo_write` call of `steps:N` tasks `Step K of the task`; `Plan the next
//! step` with `Next: ` and the first open task listed; `Observe the step` with a fixed
//! sentence; `Judge the progress` with `{"completion_status": ...}` (see [`progress`]).
//! Otherwise the
//! answer is `--reply-words` tokens (default: a short fixed sentence). `GET /_mock/requests`
//! returns the last 1,000 request bodies received.
//!
//! `POST /v1/embeddings` (also `/embeddings`) answers each input with a deterministic vector of
//! `dimensions` (default 64) numbers: the text's lowercase character trigrams hashed into the
//! dimensions, normalised, so texts sharing word stems ("kitten", "kittens") are close where
//! whole-word text search sees no match.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Pause between streamed chunks.
    pub token_delay: Duration,
    /// Length of the default text answer in tokens; 0 = the fixed sentence.
    pub reply_words: usize,
    /// When set, requests must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            token_delay: Duration::ZERO,
            reply_words: 0,
            api_key: None,
        }
    }
}

#[derive(Clone)]
struct MockState {
    options: Arc<MockOptions>,
    requests: Arc<Mutex<Vec<Value>>>,
}

/// How many request bodies `/_mock/requests` keeps (the newest), so long benchmarks stay lean.
const KEPT_REQUESTS: usize = 1000;

const DEFAULT_REPLY: &str = "This is a mock response from the scripted model.";

pub fn app(options: MockOptions) -> Router {
    let state = MockState {
        options: Arc::new(options),
        requests: Arc::default(),
    };
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/chat/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/_mock/requests", get(requests))
        .with_state(state)
}

pub async fn serve(
    listener: TcpListener,
    options: MockOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app(options))
        .with_graceful_shutdown(shutdown)
        .await
}

const DEFAULT_DIMENSIONS: usize = 64;

/// The trigram-hash vector of `text` (see the module's documentation).
pub fn embedding_of(text: &str, dimensions: usize) -> Vec<f32> {
    let dimensions = dimensions.max(1);
    let mut vector = vec![0.0_f32; dimensions];
    let lower: Vec<char> = text.to_lowercase().chars().collect();
    for word in lower
        .split(|c| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let padded: Vec<char> = std::iter::once(' ')
            .chain(word.iter().copied())
            .chain(std::iter::once(' '))
            .collect();
        for trigram in padded.windows(3) {
            // FNV-1a: stable across runs and platforms.
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for c in trigram {
                for byte in c.to_string().bytes() {
                    hash ^= u64::from(byte);
                    hash = hash.wrapping_mul(0x0100_0000_01b3);
                }
            }
            vector[(hash % dimensions as u64) as usize] += 1.0;
        }
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

async fn embeddings(
    State(state): State<MockState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(key) = &state.options.api_key {
        let expected = format!("Bearer {key}");
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&expected)
        {
            return error_response(StatusCode::UNAUTHORIZED, "invalid api key");
        }
    }
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(body.clone());
        let excess = requests.len().saturating_sub(KEPT_REQUESTS);
        requests.drain(..excess);
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => return error_response(StatusCode::BAD_REQUEST, "input: a string or a list"),
    };
    let dimensions = body["dimensions"]
        .as_u64()
        .map_or(DEFAULT_DIMENSIONS, |d| d as usize);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": embedding_of(text, dimensions)})
        })
        .collect();
    let tokens: usize = inputs
        .iter()
        .map(|text| text.split_whitespace().count())
        .sum();
    Json(json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "mock-model", "object": "model"}]}))
}

async fn requests(State(state): State<MockState>) -> Json<Value> {
    let requests = state.requests.lock().map(|r| r.clone()).unwrap_or_default();
    Json(Value::Array(requests))
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let body =
        json!({"error": {"message": message, "type": "mock_error", "code": status.as_u16()}});
    (status, Json(body)).into_response()
}

/// What the script says to do for one request.
#[derive(Debug, Default, PartialEq)]
struct Script {
    calls: Vec<(String, String)>,
    call_forever: bool,
    think: bool,
    words: Option<usize>,
    say: Option<String>,
    fail_status: Option<u16>,
    drop_connection: bool,
}

/// The agent a designer model drafts from the description in `request`.
fn drafted_agent(request: &str) -> String {
    let description = request
        .split_once("The agent to design:")
        .map_or(request, |(_, description)| description);
    let words: Vec<&str> = description.split_whitespace().take(3).collect();
    let name = if words.is_empty() {
        "Assistant".to_owned()
    } else {
        words.join(" ").chars().take(64).collect()
    };
    let topic: String = description.trim().chars().take(500).collect();
    json!({
        "name": name,
        "description": format!("An agent for: {topic}"),
        "systemPrefix": format!("You are {name}. Help the user with: {topic}"),
        "availableTools": [],
    })
    .to_string()
}

/// The workflow choice: the first listed workflow (`- name: ...` lines) whose name the user's
/// request mentions, else `none`.
fn chosen_workflow(listing: &str) -> String {
    let (list, request) = listing
        .split_once("The user's request:")
        .unwrap_or((listing, ""));
    list.lines()
        .filter_map(|line| line.strip_prefix("- "))
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.trim()))
        .find(|name| request.contains(name))
        .unwrap_or("none")
        .to_owned()
}

/// The tool selection: the listed tools whose names the request mentions, as a JSON list.
fn chosen_tools(listing: &str) -> String {
    let (list, request) = listing
        .split_once("\n\nThe user's request:\n")
        .unwrap_or((listing, ""));
    let names: Vec<&str> = list
        .lines()
        .filter_map(|line| line.strip_prefix("- "))
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| request.contains(name))
        .collect();
    serde_json::to_string(&names).unwrap_or_default()
}

/// The completion judge, scripted by `judge:` in the user's message: `judge:N` says the task
/// is done once the assistant has given N text replies since that message (default 1),
/// `judge:never` never says so, `judge:garbage` answers with something that is not JSON.
fn verdict(messages: &[Value], last_user: &str) -> String {
    let directive = find_after(last_user, "judge:")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("1");
    if directive == "garbage" {
        return "I think so, probably.".into();
    }
    let replies = messages
        .iter()
        .rev()
        .take_while(|m| m["role"] != "user")
        .filter(|m| {
            m["role"] == "assistant"
                && m.get("tool_calls").is_none_or(Value::is_null)
                && !message_text(m).trim().is_empty()
        })
        .count();
    let done = directive
        .parse::<usize>()
        .is_ok_and(|needed| replies >= needed);
    json!({"reason": format!("{replies} replies so far"), "task_interrupted": done}).to_string()
}

/// Multi mode's progress judge: `status:STATUS` in the user's message, else `in_progress`;
/// `judge:garbage` answers with something that is not JSON.
fn progress(last_user: &str) -> String {
    if last_user.contains("judge:garbage") {
        return "Going well, I would say.".into();
    }
    let status = find_after(last_user, "status:")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("in_progress");
    json!({"completion_status": status, "reason": "scripted"}).to_string()
}

/// Multi mode's decomposition: `steps:N` tasks (default 2) for one `todo_write` call, or
/// `None` for `steps:none`.
fn decomposition(last_user: &str) -> Option<String> {
    let directive = find_after(last_user, "steps:")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("2");
    let count: usize = directive.parse().ok()?;
    let tasks: Vec<Value> = (1..=count)
        .map(|k| json!({"id": k.to_string(), "content": format!("Step {k} of the task"), "completed": false}))
        .collect();
    Some(json!({"tasks": tasks}).to_string())
}

fn find_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    text.find(marker).map(|at| &text[at + marker.len()..])
}

fn parse_script(text: &str) -> Script {
    let (text, say) = match text.find("say:") {
        Some(at) => (&text[..at], Some(text[at + "say:".len()..].to_owned())),
        None => (text, None),
    };
    let mut script = Script {
        say,
        think: text.contains("think:"),
        drop_connection: text.contains("fail:drop"),
        fail_status: find_after(text, "fail:").and_then(|rest| rest.get(..3)?.parse().ok()),
        words: find_after(text, "words:").and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        }),
        ..Script::default()
    };
    let mut rest = text;
    while let Some(at) = rest.find("call") {
        let after = &rest[at + "call".len()..];
        let (forever, after) = if let Some(after) = after.strip_prefix("-forever:") {
            (true, after)
        } else if let Some(after) = after.strip_prefix(':') {
            (false, after)
        } else {
            rest = after;
            continue;
        };
        let name_end = after
            .find(|c: char| !(c.is_alphanumeric() || "_-.".contains(c)))
            .unwrap_or(after.len());
        let name = &after[..name_end];
        let mut tail = &after[name_end..];
        let mut arguments = "{}".to_owned();
        if tail.starts_with('{') {
            let mut values = serde_json::Deserializer::from_str(tail).into_iter::<Value>();
            match values.next() {
                Some(Ok(value)) => {
                    arguments = value.to_string();
                    tail = &tail[values.byte_offset()..];
                }
                _ => {
                    // Not JSON: passed through raw, so a test can send invalid arguments.
                    let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
                    arguments = tail[..end].to_owned();
                    tail = &tail[end..];
                }
            }
        }
        if !name.is_empty() {
            script.calls.push((name.to_owned(), arguments));
            script.call_forever |= forever;
        }
        rest = tail;
    }
    script
}

fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn tokens(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_owned).collect()
}

/// The answer to a memory-extraction call: one `preference` per `I prefer …` said by the user
/// in the transcript, as a fenced JSON array (`[]` when there is none).
fn extracted_memories(transcript: &str) -> String {
    let found: Vec<Value> = transcript
        .lines()
        .filter_map(|line| line.strip_prefix("user: "))
        .filter_map(|said| said.split_once("I prefer ").map(|(_, rest)| rest))
        .map(|rest| {
            let preference = rest.split(['.', '\n']).next().unwrap_or(rest).trim();
            let slug: Vec<String> = preference
                .split_whitespace()
                .take(3)
                .map(|word| {
                    word.chars()
                        .filter(|c| c.is_alphanumeric())
                        .collect::<String>()
                        .to_lowercase()
                })
                .collect();
            json!({
                "key": format!("prefers_{}", slug.join("_")),
                "content": format!("Prefers {preference}"),
                "memory_type": "preference",
                "tags": ["extracted"],
            })
        })
        .collect();
    format!("```json\n{}\n```", Value::Array(found))
}

/// The answer to a session-summary call: `Summary: ` then the previous summary's points and the
/// transcript's user lines, joined by ` / `.
fn summarized_session(transcript: &str) -> String {
    let mut points: Vec<&str> = Vec::new();
    for line in transcript.lines() {
        if let Some(previous) = line.strip_prefix("Previous summary: ") {
            let previous = previous.strip_prefix("Summary: ").unwrap_or(previous);
            points.extend(previous.split(" / "));
        } else if let Some(said) = line.strip_prefix("user: ") {
            points.push(said);
        }
    }
    format!("Summary: {}", points.join(" / "))
}

async fn completions(
    State(state): State<MockState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(key) = &state.options.api_key {
        let expected = format!("Bearer {key}");
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&expected)
        {
            return error_response(StatusCode::UNAUTHORIZED, "Authentication Fails");
        }
    }
    if let Ok(mut requests) = state.requests.lock() {
        if requests.len() >= KEPT_REQUESTS {
            requests.remove(0);
        }
        requests.push(body.clone());
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|message| message["role"] == "user")
        .map(message_text)
        .unwrap_or_default();
    let extraction = messages.first().is_some_and(|m| {
        m["role"] == "system" && message_text(m).starts_with("Extract long-term memories")
    });
    let session_summary = messages.first().is_some_and(|m| {
        m["role"] == "system" && message_text(m).starts_with("Summarize this conversation")
    });
    let workflow_choice = messages.first().is_some_and(|m| {
        m["role"] == "system" && message_text(m).starts_with("Pick the one workflow")
    });
    let tool_choice = messages.first().is_some_and(|m| {
        m["role"] == "system" && message_text(m).starts_with("Choose the tools needed")
    });
    let agent_design = messages.first().is_some_and(|m| {
        m["role"] == "system" && message_text(m).starts_with("You design AI agents")
    });
    let judge = messages.last().is_some_and(|m| {
        m["role"] == "system" && message_text(m).starts_with("Decide whether the task is done")
    });
    // `next:` splits the message into stages: the Nth tool-calling turn since the user spoke
    // follows the Nth stage.
    let stage = messages
        .iter()
        .rev()
        .take_while(|m| m["role"] != "user")
        .filter(|m| m["role"] == "assistant" && m.get("tool_calls").is_some_and(|c| !c.is_null()))
        .count();
    let stages: Vec<&str> = last_user.split("next:").collect();
    let staged = stage > 0 && stage < stages.len();
    let script = if extraction || session_summary || workflow_choice || tool_choice {
        Script::default()
    } else {
        parse_script(stages.get(stage).copied().unwrap_or(&last_user))
    };
    if let Some(status) = script.fail_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(status, "scripted failure");
    }
    let model = body["model"].as_str().unwrap_or("mock-model").to_owned();
    let after_tool = messages.last().is_some_and(|m| m["role"] == "tool");
    let summary = messages
        .last()
        .is_some_and(|m| m["role"] == "system" && message_text(m).starts_with("Summarize"));
    let suggestions = messages.last().is_some_and(|m| {
        m["role"] == "system" && message_text(m).starts_with("Suggest follow-up questions")
    });
    let instruction = messages
        .last()
        .filter(|m| m["role"] == "system")
        .map(message_text)
        .unwrap_or_default();
    let decompose = instruction.starts_with("Break the user's task");
    let planning = instruction.starts_with("Plan the next step");
    let observation = instruction.starts_with("Observe the step");
    let progress_judge = instruction.starts_with("Judge the progress");
    let prompt_tokens: usize = messages.iter().map(|m| message_text(m).len() / 4).sum();

    let mut chunks: Vec<Value> = Vec::new();
    let mut completion_tokens = 0;
    if script.think {
        for token in tokens("Let me think about this step by step.") {
            chunks.push(json!({"reasoning_content": token}));
        }
    }
    let plan = decompose.then(|| decomposition(&last_user)).flatten();
    let finish_reason = if let Some(arguments) = plan {
        for token in tokens("I split the task into steps.") {
            completion_tokens += 1;
            chunks.push(json!({"content": token}));
        }
        let id = format!("call_{}_0", messages.len());
        chunks.push(
            json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
            "function": {"name": "todo_write", "arguments": arguments}}]}),
        );
        "tool_calls"
    } else if !summary
        && !suggestions
        && !judge
        && !decompose
        && !planning
        && !observation
        && !progress_judge
        && !script.calls.is_empty()
        && (!after_tool || script.call_forever || staged)
    {
        for (index, (name, arguments)) in script.calls.iter().enumerate() {
            let id = format!("call_{}_{}", messages.len(), index);
            chunks.push(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            );
            let split = arguments.len() / 2;
            let split = (0..=split)
                .rev()
                .find(|i| arguments.is_char_boundary(*i))
                .unwrap_or(0);
            for part in [&arguments[..split], &arguments[split..]] {
                chunks.push(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": part}}]}),
                );
            }
            completion_tokens += 1 + arguments.len() / 4;
        }
        "tool_calls"
    } else {
        let text = if extraction {
            extracted_memories(&last_user)
        } else if workflow_choice {
            chosen_workflow(&last_user)
        } else if tool_choice {
            chosen_tools(&last_user)
        } else if judge {
            verdict(&messages, &last_user)
        } else if progress_judge {
            progress(&last_user)
        } else if decompose {
            "This task needs no steps.".to_owned()
        } else if planning {
            let next = instruction
                .split_once("The open tasks:\n")
                .and_then(|(_, open)| open.lines().next())
                .unwrap_or("nothing");
            format!("Next: {next}")
        } else if observation {
            "Observed: the step is done.".to_owned()
        } else if suggestions {
            let topic: Vec<&str> = last_user.split_whitespace().take(3).collect();
            format!(
                "\n- More about {}?\n- Can you give an example?",
                topic.join(" ")
            )
        } else if session_summary {
            summarized_session(&last_user)
        } else if summary {
            let asked: Vec<String> = messages
                .iter()
                .filter(|m| m["role"] == "user")
                .map(message_text)
                .collect();
            format!("Summary: {}", asked.join(" / "))
        } else if after_tool {
            let results: Vec<String> = messages
                .iter()
                .rev()
                .take_while(|m| m["role"] == "tool")
                .map(message_text)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("Tool results: {}", results.join(" | "))
        } else if agent_design && script.say.is_none() {
            drafted_agent(&last_user)
        } else if let Some(said) = &script.say {
            said.clone()
        } else {
            match script
                .words
                .or(Some(state.options.reply_words).filter(|n| *n > 0))
            {
                Some(count) => (0..count).map(|i| format!("tok{i} ")).collect(),
                None => DEFAULT_REPLY.to_owned(),
            }
        };
        for token in tokens(&text) {
            completion_tokens += 1;
            chunks.push(json!({"content": token}));
        }
        "stop"
    };

    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let frame = move |choices: Value, usage: Option<Value>| {
        let mut chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
            "created": created, "model": model, "choices": choices});
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let mut frames: Vec<Bytes> = vec![frame(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        None,
    )];
    for delta in chunks {
        frames.push(frame(
            json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            None,
        ));
    }
    frames.push(frame(
        json!([{"index": 0, "delta": {}, "finish_reason": finish_reason}]),
        None,
    ));
    frames.push(frame(
        json!([]),
        Some(
            json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}),
        ),
    ));
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));

    let drop_after = script.drop_connection.then_some(4);
    let delay = state.options.token_delay;
    let stream = futures_util::stream::iter(frames.into_iter().enumerate()).then(
        move |(index, bytes)| async move {
            if !delay.is_zero() && index > 0 {
                tokio::time::sleep(delay).await;
            }
            match drop_after {
                Some(limit) if index >= limit => {
                    // Let the frames already written reach the client before the connection dies.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "scripted connection drop",
                    ))
                }
                _ => Ok(bytes),
            }
        },
    );
    let stream = stream.take_while({
        let mut failed = false;
        move |item| {
            let keep = !failed;
            failed |= item.is_err();
            std::future::ready(keep)
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_read_from_the_message() {
        let script = parse_script(
            r#"please call:echo{"text": "hi there"} and call:add then think: words:7"#,
        );
        assert_eq!(
            script.calls,
            vec![
                ("echo".to_owned(), r#"{"text":"hi there"}"#.to_owned()),
                ("add".to_owned(), "{}".to_owned())
            ]
        );
        assert!(script.think);
        assert_eq!(script.words, Some(7));
        assert_eq!(parse_script("fail:500").fail_status, Some(500));
        assert!(parse_script("fail:drop").drop_connection);
        assert!(parse_script("call-forever:echo").call_forever);
        assert_eq!(parse_script("hello").calls, vec![]);
        let said = parse_script(r#"draft say:{"name": "call:x words:3"}"#);
        assert_eq!(said.say.as_deref(), Some(r#"{"name": "call:x words:3"}"#));
        assert_eq!((said.calls, said.words), (vec![], None));
    }
}
