//! The sweep of paused runs (the `runs` job): a run whose process died past a checkpoint goes on,
//! and a run whose approval nobody decided ends when its wait runs out, with no client
//! following either.

use std::time::Duration;

use sage_mock_llm::MockOptions;
use serde_json::{Value, json};

use crate::builtin_tools::call;
use crate::common::*;

const USER: &str = "ada";

fn paused_request(session: &str) -> Value {
    json!({
        "session_id": session, "user_id": USER,
        "available_tools": ["file_write"],
        "tools_requiring_approval": ["file_write"],
        "messages": [{"role": "user", "content": call("file_write", json!({"file_path": "late.txt", "content": "x"}))}],
    })
}

async fn conversation_status(base: &str, session: &str) -> Value {
    let (_, body) = get_json(&format!(
        "{base}/api/conversations/{session}/messages?user_id={USER}"
    ))
    .await;
    body["data"]["conversation_info"]["status"].clone()
}

/// The session's run after `after`, to its end.
async fn resume_after(base: &str, session: &str, after: u64) -> Vec<Value> {
    let response = reqwest::Client::new()
        .get(format!(
            "{base}/api/stream/resume/{session}?user_id={USER}&last_index={after}"
        ))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    ndjson_events(&response.text().await.unwrap())
}

/// Pauses `session` on an approval at `base` (over SSE); the run's stream ends with its tail.
/// Returns the sequence number of its last event.
async fn pause(base: &str, session: &str) -> u64 {
    let frames = post_sse(&format!("{base}/api/stream"), &paused_request(session)).await;
    let events: Vec<Value> = frames.iter().map(|frame| frame.data.clone()).collect();
    assert_tail(&events, session);
    assert_eq!(
        of_type(&events, "tool_approval_request").len(),
        1,
        "{events:#?}"
    );
    frames.last().unwrap().id.parse().unwrap()
}

/// With the sweep off, an undecided approval past its expiry just waits; with it on, the run
/// ends with the expiry's `error` event and nobody asked the model again.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_nobody_decides_ends_when_its_wait_runs_out() {
    let llm = MockLlm::start(MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let short_wait = ["--approval_timeout_seconds", "0.5"];
    let config = |sweep: &str| {
        let mut flags = short_wait.to_vec();
        flags.extend(["--run_sweep_seconds", sweep]);
        test_config(&llm.base_url, dir.path(), &flags)
    };

    let unswept = Server::start_with_presets(config("0")).await;
    let paused_at = pause(&unswept.url, "sw-1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        conversation_status(&unswept.url, "sw-1").await,
        "awaiting_approval",
        "--run_sweep_seconds 0: nothing sweeps"
    );
    drop(unswept);

    let asked = llm.requests().await.len();
    let swept = Server::start_with_presets(config("0.3")).await;
    let mut status = Value::Null;
    for _ in 0..100 {
        status = conversation_status(&swept.url, "sw-1").await;
        // The sweep's continuation runs briefly (`running`) before it ends the run.
        if status != "awaiting_approval" && status != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "error", "the sweep ended the run");
    let events = resume_after(&swept.url, "sw-1", paused_at).await;
    assert_eq!(events.last().unwrap()["type"], "stream_end", "{events:#?}");
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1, "{events:#?}");
    assert!(
        errors[0]["content"].as_str().unwrap().contains("expired"),
        "{events:#?}"
    );
    assert_eq!(llm.requests().await.len(), asked, "the model is not asked");
    let (status, _) = get_json(&format!(
        "{}/api/sessions/sw-1/file_workspace/download?user_id={USER}&file_path=late.txt",
        swept.url
    ))
    .await;
    assert_eq!(status, 404, "the refused call never ran");
    let (status, answer) = send_json(
        reqwest::Method::POST,
        &format!("{}/api/sessions/sw-1/approve?user_id={USER}", swept.url),
        &json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(status, 409, "nothing waits any more: {answer}");
}

/// A run killed mid-turn on DynamoDB, which no client follows: `sage-local jobs runs` finds its
/// checkpoint past the lease, continues it in its own process and exits when the run is done.
#[tokio::test(flavor = "multi_thread")]
async fn the_runs_job_continues_a_killed_run_nobody_follows() {
    let lease = ["--run_lease_seconds", "1", "--run_sweep_seconds", "0"];
    let KilledRun { llm, dir, table } = killed_run("sw-2", &lease[2..]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let endpoint = dynamodb_endpoint();
    let store = [
        &dynamodb_flags(&endpoint, &table)[..],
        &[
            "--default_llm_api_key",
            "k",
            "--default_llm_api_base_url",
            &llm.base_url,
        ],
    ]
    .concat();
    let args = [&["runs"][..], &store, &lease].concat();
    let report = sage_local_job(dir.path(), &args, &MOTO_ENV).await;
    assert_eq!(report["job"], "runs", "{report}");
    assert_eq!(report["continued"], json!(["sw-2"]), "{report}");
    assert_eq!(report["complete"], true, "{report}");

    let reader = sage_local_on_dynamodb_table(dir.path(), &llm.base_url, &table, &lease).await;
    assert_eq!(conversation_status(&reader.url, "sw-2").await, "idle");
    let events = resume_after(&reader.url, "sw-2", 0).await;
    assert_eq!(events.last().unwrap()["type"], "stream_end", "{events:#?}");
    let answers = texts_by_message(&events, "do_subtask_result");
    assert_eq!(answers.len(), 2, "{events:#?}");
    assert!(answers[1].contains("\"success\":true"), "{answers:?}");
    assert_eq!(
        of_type(&events, "tool_call_result").len(),
        1,
        "the tool turn before the checkpoint does not run again: {events:#?}"
    );

    // Nothing is due any more: a second sweep does nothing.
    let args = [&["runs", "--limit", "5"][..], &store].concat();
    let report = sage_local_job(dir.path(), &args, &MOTO_ENV).await;
    assert!(report.get("continued").is_none(), "{report}");
    assert!(report.get("expired").is_none(), "{report}");
}

/// A run of `session` killed on DynamoDB after its tool turn's checkpoint, under a 1 s lease
/// (`extra` flags added), with the model it used (slow enough to be cut mid-answer), the folder
/// its instance ran in, and the table.
pub struct KilledRun {
    pub llm: MockLlm,
    pub dir: tempfile::TempDir,
    pub table: String,
}

pub async fn killed_run(session: &str, extra: &[&str]) -> KilledRun {
    let llm = MockLlm::start(MockOptions {
        token_delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut flags = vec!["--run_lease_seconds", "1"];
    flags.extend_from_slice(extra);
    let (first, table) = sage_local_on_dynamodb(dir.path(), &llm.base_url, &flags).await;
    read_into_second_turn(&first.url, session).await;
    first.kill();
    KilledRun { llm, dir, table }
}

/// Starts a one-tool-call run of `session` at `base` and reads it until the answer after its
/// tool turn has begun streaming (its checkpoint is saved by then), to kill it there.
async fn read_into_second_turn(base: &str, session: &str) {
    let write = call(
        "file_write",
        json!({"file_path": "kept.txt", "content": "before the crash"}),
    );
    let body = json!({
        "session_id": session, "user_id": USER, "available_tools": ["file_write"],
        "messages": [{"role": "user", "content": write}],
    });
    let mut stream = NdjsonReader::post(&format!("{base}/api/stream"), &body).await;
    let mut seen = Vec::new();
    while let Some(event) = stream.next().await {
        let answering = event["type"] == "do_subtask_result" && !seen.is_empty();
        seen.push(event);
        if answering && of_type(&seen, "tool_call_result").len() == 1 {
            break;
        }
    }
    assert_eq!(of_type(&seen, "tool_call_result").len(), 1, "{seen:#?}");
}
