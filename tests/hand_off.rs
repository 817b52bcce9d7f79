//! Runs that outlive an invocation: past `--run_deadline_seconds` (in Lambda, the invocation's
//! own deadline) a run stops after its tool turn, ends its client's stream with a hand-off
//! event and goes on in a fresh invocation; a run whose process died goes on from its last
//! checkpoint once its lease has expired and someone follows it.

use std::time::Duration;

use sage_mock_llm::MockOptions;
use serde_json::{Value, json};

use crate::builtin_tools::call;
use crate::common::*;

pub const USER: &str = "ada";
/// Hands off at every checkpoint: each tool turn ends an invocation.
pub const EVERY_TURN: [&str; 2] = ["--run_deadline_seconds", "0.001"];

/// Two tool turns, then an answer: three invocations under [`EVERY_TURN`].
pub fn two_turns(session: &str) -> Value {
    let write = call(
        "file_write",
        json!({"file_path": "notes.txt", "content": "across invocations"}),
    );
    let read = call("file_read", json!({"file_path": "notes.txt"}));
    json!({
        "session_id": session, "user_id": USER,
        "available_tools": ["file_write", "file_read"],
        "messages": [{"role": "user", "content": format!("{write} next: {read}")}],
    })
}

/// What a reader of the conversation sees, without ids, times or the stream's bookkeeping.
pub fn transcript(events: &[Value]) -> Vec<Value> {
    let mut seen = Vec::new();
    for event in events {
        match event["type"].as_str().unwrap_or_default() {
            "tool_call" => seen.push(json!({"calls": event["tool_calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|call| json!([call["function"]["name"], call["function"]["arguments"]]))
                .collect::<Vec<_>>()})),
            "tool_call_result" => seen.push(json!({"result": event["content"]})),
            _ => {}
        }
    }
    seen.push(json!({"answer": answer_text(events)}));
    seen
}

pub fn hand_offs(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|event| event["type"] == "normal" && event["metadata"]["continues"] == true)
        .collect()
}

/// The resume path a hand-off event names, checked against where it stands in its stream.
pub fn resume_path(hand_off: &Value, session: &str, seq: u64) -> String {
    let path = hand_off["metadata"]["resume"].as_str().unwrap().to_owned();
    assert_eq!(
        path,
        format!("/api/stream/resume/{session}?last_index={seq}")
    );
    assert!(
        hand_off["content"].as_str().unwrap().contains(&path),
        "{hand_off}"
    );
    path
}

/// Starts `body`'s run at `base` and reads its first invocation's NDJSON stream: it ends with a
/// hand-off event, without `stream_end`. Returns those events and the resume path.
pub async fn first_invocation(base: &str, body: &Value, session: &str) -> (Vec<Value>, String) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/stream"))
        .json(body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first_seq = first_seq(&response).expect("the first event's sequence number");
    let events = ndjson_events(&response.text().await.unwrap());
    let last = events.last().unwrap();
    assert!(of_type(&events, "stream_end").is_empty(), "{events:#?}");
    assert_eq!(hand_offs(&events), vec![last], "{events:#?}");
    assert_eq!(of_type(&events, "tool_call_result").len(), 1, "{events:#?}");
    let seq = first_seq + events.len() as u64 - 1;
    let path = resume_path(last, session, seq);
    (events, path)
}

/// Follows a hand-off's resume `path` at `base`: the rest of the run, as the owner reads it.
pub async fn follow_on(base: &str, path: &str) -> Vec<Value> {
    let response = reqwest::get(format!("{base}{path}&user_id={USER}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    ndjson_events(&response.text().await.unwrap())
}

/// An uninterrupted run of the same request: what a handed-off one must come to.
pub async fn uninterrupted(session: &str) -> Vec<Value> {
    let env = TestEnv::new().await;
    let events = post_ndjson(&env.stream_url(), &two_turns(session)).await;
    assert_tail(&events, session);
    assert!(hand_offs(&events).is_empty());
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_spanning_three_invocations_ends_as_one_uninterrupted_run_does() {
    let env = TestEnv::with(MockOptions::default(), &EVERY_TURN).await;
    let base = env.server.url.clone();
    let (first, path) = first_invocation(&base, &two_turns("ho-1"), "ho-1").await;

    // The resume follows the run through its next hand-off to its end.
    let rest = follow_on(&base, &path).await;
    assert_eq!(rest.last().unwrap()["type"], "stream_end", "{rest:#?}");
    assert_eq!(hand_offs(&rest).len(), 1, "{rest:#?}");
    let all: Vec<Value> = first.iter().chain(&rest).cloned().collect();
    assert_eq!(
        of_type(&all, "token_usage").len(),
        3,
        "one per invocation: {all:#?}"
    );
    let results = of_type(&all, "tool_call_result");
    assert_eq!(results.len(), 2, "{all:#?}");
    assert_eq!(
        results[1]["content"]["content"].as_str().unwrap().trim(),
        "across invocations"
    );
    assert_eq!(transcript(&all), transcript(&uninterrupted("ho-1").await));

    // Each invocation's model calls are in the ledger once, under one run.
    let spent: u64 = of_type(&all, "token_usage")
        .iter()
        .map(|usage| {
            usage["metadata"]["token_usage"]["total_info"]["total_tokens"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    let (status, report) = get_json(&format!("{base}/api/usage?user_id={USER}")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["data"]["total"]["total_tokens"], spent, "{report}");
    assert_eq!(report["data"]["total"]["runs"], 1, "{report}");

    // The conversation holds the turns, not the hand-offs; the session is free again.
    let (_, conversation) = get_json(&format!(
        "{base}/api/conversations/ho-1/messages?user_id={USER}"
    ))
    .await;
    assert_eq!(
        conversation["data"]["conversation_info"]["status"], "idle",
        "{conversation}"
    );
    assert!(
        !conversation
            .to_string()
            .contains("continues in a new invocation"),
        "{conversation}"
    );
    let next = post_ndjson(
        &env.stream_url(),
        &json!({"session_id": "ho-1", "user_id": USER,
                "messages": [{"role": "user", "content": "say:done"}]}),
    )
    .await;
    assert_tail(&next, "ho-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sse_client_that_reconnects_sees_every_event_once_in_order() {
    let env = TestEnv::with(MockOptions::default(), &EVERY_TURN).await;
    let base = env.server.url.clone();
    let first = post_sse(&env.stream_url(), &two_turns("ho-2")).await;
    let last = first.last().unwrap();
    assert_eq!(last.event, "normal");
    assert_eq!(last.data["metadata"]["continues"], true, "{last:?}");
    assert!(first.iter().all(|frame| frame.event != "stream_end"));

    // What an EventSource does by itself: reconnect with the last id it saw.
    let response = reqwest::Client::new()
        .get(format!("{base}/api/stream/resume/ho-2?user_id={USER}"))
        .header("accept", "text/event-stream")
        .header("last-event-id", &last.id)
        .send()
        .await
        .unwrap();
    let rest = read_sse(response).await;
    assert_eq!(rest.last().unwrap().event, "stream_end", "{rest:#?}");
    let ids: Vec<u64> = first
        .iter()
        .chain(&rest)
        .map(|frame| frame.id.parse().unwrap())
        .collect();
    let start = ids[0];
    assert_eq!(
        ids,
        (start..start + ids.len() as u64).collect::<Vec<_>>(),
        "one unbroken sequence"
    );
    let events: Vec<Value> = first.iter().chain(&rest).map(|f| f.data.clone()).collect();
    assert_eq!(hand_offs(&events).len(), 2);
    assert_eq!(
        transcript(&events),
        transcript(&uninterrupted("ho-2").await)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_hands_off_the_same_way_on_dynamodb() {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (shim, _table) = sage_local_on_dynamodb(dir.path(), &llm.base_url, &EVERY_TURN).await;
    let (first, path) = first_invocation(&shim.url, &two_turns("ho-3"), "ho-3").await;
    let rest = follow_on(&shim.url, &path).await;
    assert_eq!(rest.last().unwrap()["type"], "stream_end", "{rest:#?}");
    let all: Vec<Value> = first.into_iter().chain(rest).collect();
    assert_eq!(hand_offs(&all).len(), 2, "{all:#?}");
    assert_eq!(transcript(&all), transcript(&uninterrupted("ho-3").await));
}

/// A run whose process is killed mid-turn goes on from its last checkpoint once its lease has
/// expired: a client that follows it on another instance sees it to its end.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_continues_from_its_checkpoint_after_its_lease() {
    // No sweep: the follower asks for the continuation.
    let lease = ["--run_lease_seconds", "1", "--run_sweep_seconds", "0"];
    let crate::paused_runs::KilledRun { llm, dir, table } =
        crate::paused_runs::killed_run("ho-4", &lease[2..]).await;

    let second = sage_local_on_dynamodb_table(dir.path(), &llm.base_url, &table, &lease).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let response = reqwest::Client::new()
        .get(format!(
            "{}/api/stream/resume/ho-4?user_id={USER}",
            second.url
        ))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let events = ndjson_events(&response.text().await.unwrap());
    let end = events.last().unwrap();
    assert_eq!(end["type"], "stream_end", "{events:#?}");
    // The turn the crash cut is answered again, whole, after what it had said.
    let answers = texts_by_message(&events, "do_subtask_result");
    assert_eq!(answers.len(), 2, "{events:#?}");
    assert!(answers[1].starts_with("Tool results: {"), "{answers:?}");
    assert!(answers[1].contains("\"success\":true"), "{answers:?}");
    assert!(
        answers[1].starts_with(&answers[0]) && answers[0].len() < answers[1].len(),
        "{answers:?}"
    );
    assert_eq!(
        of_type(&events, "tool_call_result").len(),
        1,
        "the tool turn before the checkpoint does not run again: {events:#?}"
    );
    // The stored stream_end is the continuation's own, not one made up for a dead run.
    let (_, conversation) = get_json(&format!(
        "{}/api/conversations/ho-4/messages?user_id={USER}",
        second.url
    ))
    .await;
    assert_eq!(
        conversation["data"]["conversation_info"]["status"], "idle",
        "{conversation}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continue_request_without_the_runs_ticket_changes_nothing() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    let paused = json!({
        "session_id": "ho-5", "user_id": USER, "available_tools": ["file_write"],
        "tools_requiring_approval": ["file_write"],
        "messages": [{"role": "user", "content": call("file_write", json!({"file_path": "x", "content": "y"}))}],
    });
    let events = post_ndjson(&env.stream_url(), &paused).await;
    let approval_id = of_type(&events, "tool_approval_request")[0]["content"]["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (body, status) in [
        (json!({"session_id": "ho-5", "token": "guessed"}), 404),
        // An approval's id is no hand-off ticket.
        (json!({"session_id": "ho-5", "token": approval_id}), 404),
        (json!({"session_id": "nobody", "token": "t"}), 404),
        (json!({"session_id": "ho-5"}), 422),
        (json!({"session_id": "ho-5", "token": "t", "extra": 1}), 422),
    ] {
        let (got, answer) = send_json(
            reqwest::Method::POST,
            &format!("{base}/api/internal/runs/continue"),
            &body,
        )
        .await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert_eq!(answer["code"], status, "{answer}");
        assert!(answer["message"].is_string(), "{answer}");
    }
    // The paused run still waits for its owner.
    let response = reqwest::Client::new()
        .post(format!("{base}/api/sessions/ho-5/approve?user_id={USER}"))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = ndjson_events(&response.text().await.unwrap());
    assert_eq!(of_type(&events, "tool_call_result").len(), 1, "{events:#?}");
}

/// `--run_max_seconds` bounds the run, not each invocation: the second invocation, which alone
/// would run under the limit, ends the run when both together pass it.
#[tokio::test(flavor = "multi_thread")]
async fn a_runs_time_limit_counts_every_invocation_it_ran_in() {
    // Each tool-calling turn takes about 1.5 s (five frames, 300 ms apart).
    let options = MockOptions {
        token_delay: Duration::from_millis(300),
        ..Default::default()
    };
    let flags = [EVERY_TURN[0], EVERY_TURN[1], "--run_max_seconds", "2.5"];
    let env = TestEnv::with(options, &flags).await;
    let base = env.server.url.clone();
    let (_, path) = first_invocation(&base, &two_turns("ho-6"), "ho-6").await;
    let rest = follow_on(&base, &path).await;
    assert_eq!(rest.last().unwrap()["type"], "stream_end", "{rest:#?}");
    let errors = of_type(&rest, "error");
    assert_eq!(errors.len(), 1, "{rest:#?}");
    assert!(
        errors[0]["content"]
            .as_str()
            .unwrap()
            .contains("(run_max_seconds)"),
        "{}",
        errors[0]
    );
    assert!(hand_offs(&rest).is_empty(), "{rest:#?}");
}
