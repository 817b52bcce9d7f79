//! Tool calls that wait for their owner's approval: the run pauses with nothing running, and
//! `POST /api/sessions/{id}/approve` (approve, reject, edit) continues it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::builtin_tools::call;
use crate::common::*;

const USER: &str = "ada";

fn paused_request(session: &str, message: &str) -> Value {
    json!({
        "session_id": session, "user_id": USER,
        "available_tools": ["file_write", "file_read"],
        "tools_requiring_approval": ["file_write"],
        "messages": [{"role": "user", "content": message}],
    })
}

fn write_call(content: &str) -> String {
    call(
        "file_write",
        json!({"file_path": "notes/out.txt", "content": content}),
    )
}

async fn approve(base: &str, session: &str, user: &str, body: Value) -> (u16, Vec<Value>) {
    let response = reqwest::Client::new()
        .post(format!(
            "{base}/api/sessions/{session}/approve?user_id={user}"
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    if status == 200 {
        (status, ndjson_events(&text))
    } else {
        (status, vec![serde_json::from_str(&text).unwrap()])
    }
}

async fn workspace_file(base: &str, session: &str) -> Option<String> {
    let response = reqwest::get(format!(
        "{base}/api/sessions/{session}/file_workspace/download?user_id={USER}&file_path=notes/out.txt"
    ))
    .await
    .unwrap();
    if response.status() != 200 {
        return None;
    }
    Some(response.text().await.unwrap())
}

async fn status_of(base: &str, session: &str) -> Value {
    let (_, body) = get_json(&format!(
        "{base}/api/conversations/{session}/messages?user_id={USER}"
    ))
    .await;
    body["data"]["conversation_info"]["status"].clone()
}

/// Pauses `session` on a `file_write` of `content`; returns the approval request event.
async fn pause(env: &TestEnv, session: &str, content: &str) -> Value {
    let events = post_ndjson(
        &env.stream_url(),
        &paused_request(session, &write_call(content)),
    )
    .await;
    assert_tail(&events, session);
    assert!(
        of_type(&events, "tool_call_result").is_empty(),
        "{events:#?}"
    );
    let requests = of_type(&events, "tool_approval_request");
    assert_eq!(requests.len(), 1, "{events:#?}");
    let request = requests[0].clone();
    assert_eq!(request["content"]["tool_name"], "file_write");
    assert_eq!(request["content"]["arguments"]["content"], content);
    assert_eq!(
        request["tool_call_id"],
        of_type(&events, "tool_call")[0]["tool_calls"][0]["id"]
    );
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_pauses_with_nothing_running_until_its_owner_approves() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    let request = pause(&env, "ap-1", "approved text").await;
    assert_eq!(status_of(&base, "ap-1").await, "awaiting_approval");
    assert_eq!(workspace_file(&base, "ap-1").await, None, "nothing ran");

    // Nothing runs while it waits: the session is free (tasks_status), and the model is not
    // asked anything more.
    let asked = env.llm.requests().await.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.llm.requests().await.len(), asked);
    let (_, tasks) = send_json(
        Method::POST,
        &format!("{base}/api/sessions/ap-1/tasks_status?user_id={USER}"),
        &json!({}),
    )
    .await;
    assert_ne!(tasks["data"]["status"], "running", "{tasks}");

    // Another user can neither approve nor see that anything waits.
    let (status, body) = approve(&base, "ap-1", "mallory", json!({"decision": "approve"})).await;
    assert!(matches!(status, 403 | 404), "{status} {body:?}");
    assert_eq!(workspace_file(&base, "ap-1").await, None);

    let response = reqwest::Client::new()
        .post(format!("{base}/api/sessions/ap-1/approve?user_id={USER}"))
        .json(&json!({"decision": "approve", "approval_id": request["content"]["approval_id"]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let first_seq = first_seq(&response).expect("the first event's sequence number");
    let events = ndjson_events(&response.text().await.unwrap());
    assert_eq!(status, 200, "{events:?}");
    assert_tail(&events, "ap-1");
    let results = of_type(&events, "tool_call_result");
    assert_eq!(results.len(), 1, "{events:#?}");
    assert_eq!(results[0]["tool_call_id"], request["tool_call_id"]);
    assert_eq!(results[0]["content"]["success"], true, "{events:#?}");
    assert!(
        answer_text(&events).starts_with("Tool results:"),
        "the model goes on with the result: {events:#?}"
    );
    assert_eq!(
        workspace_file(&base, "ap-1").await.as_deref(),
        Some("approved text")
    );
    assert_eq!(status_of(&base, "ap-1").await, "idle");

    // A decision is taken once.
    let (status, body) = approve(&base, "ap-1", USER, json!({"decision": "approve"})).await;
    assert_eq!(status, 409, "{body:?}");

    // The log holds the pause, then the continuation, each event once, in order; a client
    // resumes the continuation from its first sequence number.
    let resume = |after: u64| {
        let url = format!("{base}/api/stream/resume/ap-1?user_id={USER}&last_index={after}");
        async move { ndjson_events(&reqwest::get(url).await.unwrap().text().await.unwrap()) }
    };
    let kinds = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter_map(|event| event["type"].as_str().map(str::to_owned))
            .filter(|kind| kind != "token_usage")
            .collect()
    };
    let continuation = resume(first_seq - 1).await;
    assert_eq!(kinds(&continuation), kinds(&events));
    let everything = kinds(&resume(0).await);
    let paused = &everything[..everything.len() - kinds(&events).len()];
    assert!(
        paused.ends_with(&[
            "tool_call".into(),
            "tool_approval_request".into(),
            "stream_end".into()
        ]),
        "{everything:#?}"
    );
    assert_eq!(everything[paused.len()..], kinds(&events));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_call_does_not_run_and_the_model_hears_why() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    pause(&env, "ap-2", "never written").await;
    let (status, events) = approve(
        &base,
        "ap-2",
        USER,
        json!({"decision": "reject", "reason": "not that file"}),
    )
    .await;
    assert_eq!(status, 200, "{events:?}");
    assert_tail(&events, "ap-2");
    let result = &of_type(&events, "tool_call_result")[0]["content"];
    assert!(
        result["error"].as_str().unwrap().contains("rejected"),
        "{result}"
    );
    assert_eq!(result["reason"], "not that file");
    let answer = answer_text(&events);
    assert!(
        answer.contains("rejected") && answer.contains("not that file"),
        "{answer}"
    );
    assert_eq!(workspace_file(&base, "ap-2").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_call_runs_with_the_owners_arguments() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    pause(&env, "ap-3", "the model's text").await;
    let (status, events) = approve(
        &base,
        "ap-3",
        USER,
        json!({"decision": "edit",
               "arguments": {"file_path": "notes/out.txt", "content": "the owner's text"}}),
    )
    .await;
    assert_eq!(status, 200, "{events:?}");
    assert_eq!(
        workspace_file(&base, "ap-3").await.as_deref(),
        Some("the owner's text")
    );
    // Arguments that break the tool's schema are the tool's error, as for the model's own.
    pause(&env, "ap-4", "x").await;
    let (_, events) = approve(
        &base,
        "ap-4",
        USER,
        json!({"decision": "edit", "arguments": {"file_path": 7}}),
    )
    .await;
    let result = &of_type(&events, "tool_call_result")[0]["content"];
    assert_eq!(result["error_type"], "INVALID_ARGUMENTS", "{result}");
    assert_eq!(workspace_file(&base, "ap-4").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_decisions_are_refused_and_change_nothing() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    for (body, field) in [
        (json!({"decision": "maybe"}), "decision"),
        (json!({"decision": "approve", "arguments": {}}), "arguments"),
        (json!({"decision": "edit", "arguments": "x"}), "arguments"),
        (json!({"decision": "approve", "extra": 1}), "extra"),
    ] {
        let (status, body) = approve(&base, "ap-5", USER, body).await;
        assert_eq!(status, 422, "{body:?}");
        assert!(body[0].to_string().contains(field), "{body:?}");
    }
    let (status, body) = approve(&base, "ap-5", USER, json!({"decision": "approve"})).await;
    assert_eq!(status, 404, "no such conversation: {body:?}");
    let request = pause(&env, "ap-5", "kept waiting").await;
    let (status, body) = approve(
        &base,
        "ap-5",
        USER,
        json!({"decision": "approve", "approval_id": "stale"}),
    )
    .await;
    assert_eq!(status, 409, "{body:?}");
    assert_eq!(status_of(&base, "ap-5").await, "awaiting_approval");
    let (status, _) = approve(
        &base,
        "ap-5",
        USER,
        json!({"decision": "approve", "approval_id": request["content"]["approval_id"]}),
    )
    .await;
    assert_eq!(status, 200, "the refusals changed nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_that_expired_ends_the_run_with_an_error() {
    let env = TestEnv::with(Default::default(), &["--approval_timeout_seconds", "0.5"]).await;
    let base = env.server.url.clone();
    let request = pause(&env, "ap-6", "too late").await;
    assert!(request["content"]["expires_at"].as_f64().unwrap() > 0.0);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let asked = env.llm.requests().await.len();
    let (status, events) = approve(&base, "ap-6", USER, json!({"decision": "approve"})).await;
    assert_eq!(status, 200, "{events:?}");
    assert_tail(&events, "ap-6");
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1, "{events:#?}");
    assert!(
        errors[0]["content"].as_str().unwrap().contains("expired"),
        "{events:#?}"
    );
    assert_eq!(
        env.llm.requests().await.len(),
        asked,
        "the model is not asked"
    );
    assert_eq!(workspace_file(&base, "ap-6").await, None);
    assert_eq!(status_of(&base, "ap-6").await, "error");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_message_drops_the_approval_it_waited_for() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    pause(&env, "ap-7", "dropped").await;
    let events = post_ndjson(
        &env.stream_url(),
        &paused_request("ap-7", "never mind, words:3"),
    )
    .await;
    assert_tail(&events, "ap-7");
    assert_eq!(answer_text(&events), "tok0 tok1 tok2 ");
    let (status, body) = approve(&base, "ap-7", USER, json!({"decision": "approve"})).await;
    assert_eq!(status, 409, "{body:?}");
    assert_eq!(workspace_file(&base, "ap-7").await, None);
}

/// A server registered with `require_approval` holds every call to its tools; calls to tools
/// that need no approval run in the same turn, before the pause.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_requires_approval_holds_its_calls_and_the_others_run() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    let body = json!({
        "session_id": "ap-8", "user_id": USER,
        "available_tools": ["echo", "file_read"],
        "extra_mcp_config": {"guarded": stdio_peer(json!({"require_approval": true}))},
        "messages": [{"role": "user", "content": format!(
            "{} {}", call("echo", json!({"text": "held"})),
            call("file_read", json!({"file_path": "missing.txt"})))}],
    });
    let events = post_ndjson(&env.stream_url(), &body).await;
    assert_tail(&events, "ap-8");
    let results = of_type(&events, "tool_call_result");
    assert_eq!(results.len(), 1, "file_read ran: {events:#?}");
    let requests = of_type(&events, "tool_approval_request");
    assert_eq!(requests.len(), 1, "{events:#?}");
    assert_eq!(requests[0]["content"]["tool_name"], "echo");
    let (status, events) = approve(&base, "ap-8", USER, json!({"decision": "approve"})).await;
    assert_eq!(status, 200);
    let results = of_type(&events, "tool_call_result");
    assert_eq!(results.len(), 1, "{events:#?}");
    assert!(
        results[0]["content"].to_string().contains("held"),
        "{events:#?}"
    );
}

/// Multi mode cannot wait for a decision: a call that needs one is refused, never run.
#[tokio::test(flavor = "multi_thread")]
async fn where_a_run_cannot_wait_a_call_that_needs_approval_is_refused() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    let mut body = paused_request("ap-9", &write_call("unapproved"));
    body["agent_mode"] = json!("multi");
    body["messages"][0]["content"] = json!(format!("steps:1 {}", write_call("unapproved")));
    let events = post_ndjson(&env.stream_url(), &body).await;
    assert_tail(&events, "ap-9");
    assert!(of_type(&events, "tool_approval_request").is_empty());
    let refused: Vec<_> = of_type(&events, "tool_call_result")
        .into_iter()
        .filter(|result| result["content"].to_string().contains("approval"))
        .collect();
    assert!(!refused.is_empty(), "{events:#?}");
    assert_eq!(workspace_file(&base, "ap-9").await, None);
}

/// An agent saved with `tools_requiring_approval` holds those calls in every run that uses it.
#[tokio::test(flavor = "multi_thread")]
async fn an_agents_approval_list_holds_its_runs_calls() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    let (status, created) = send_json(
        Method::POST,
        &format!("{base}/api/agent/create?user_id={USER}"),
        &json!({"name": "Careful writer", "availableTools": ["file_write"],
                "toolsRequiringApproval": ["file_write"]}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"session_id": "ap-10", "user_id": USER,
                "agent_id": created["data"]["agent_id"],
                "messages": [{"role": "user", "content": write_call("by the agent")}]}),
    )
    .await;
    assert_eq!(
        of_type(&events, "tool_approval_request").len(),
        1,
        "{events:#?}"
    );
    let (status, _) = approve(&base, "ap-10", USER, json!({"decision": "approve"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        workspace_file(&base, "ap-10").await.as_deref(),
        Some("by the agent")
    );
}

/// The pause outlives the process that paused: one `sage-local` pauses on DynamoDB (moto) and
/// is killed; another, on the same table, continues the run when the owner approves.
#[tokio::test(flavor = "multi_thread")]
async fn another_instance_continues_a_run_paused_on_dynamodb() {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (first, table) = sage_local_on_dynamodb(dir.path(), &llm.base_url, &[]).await;
    let body = paused_request("ap-11", &write_call("across instances"));
    let events = post_ndjson(&format!("{}/api/stream", first.url), &body).await;
    assert_eq!(
        of_type(&events, "tool_approval_request").len(),
        1,
        "{events:#?}"
    );
    first.kill();

    let second = sage_local_on_dynamodb_table(dir.path(), &llm.base_url, &table, &[]).await;
    let (status, events) =
        approve(&second.url, "ap-11", USER, json!({"decision": "approve"})).await;
    assert_eq!(status, 200, "{events:?}");
    assert_tail(&events, "ap-11");
    let results = of_type(&events, "tool_call_result");
    assert_eq!(results[0]["content"]["success"], true, "{events:#?}");
    assert!(
        answer_text(&events).starts_with("Tool results:"),
        "{events:#?}"
    );
}

/// A registered server (`/api/mcp/add`) with `require_approval` holds every call to its tools.
#[tokio::test(flavor = "multi_thread")]
async fn a_registered_server_that_requires_approval_holds_its_calls() {
    let peer = HttpPeer::start("streamable-http").await;
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    let (status, added) = send_json(
        Method::POST,
        &format!("{base}/api/mcp/add?user_id={USER}"),
        &json!({"name": "guarded", "url": peer.streamable_http_url(), "require_approval": true}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"session_id": "ap-12", "user_id": USER, "available_tools": ["echo"],
                "messages": [{"role": "user", "content": call("echo", json!({"text": "registered"}))}]}),
    )
    .await;
    let requests = of_type(&events, "tool_approval_request");
    assert_eq!(requests.len(), 1, "{events:#?}");
    assert!(of_type(&events, "tool_call_result").is_empty());
    let (status, events) = approve(&base, "ap-12", USER, json!({"decision": "approve"})).await;
    assert_eq!(status, 200);
    assert!(
        of_type(&events, "tool_call_result")[0]["content"]
            .to_string()
            .contains("registered"),
        "{events:#?}"
    );
}

/// A run's limits bound the whole run: its continuation counts what it spent before the pause.
#[tokio::test(flavor = "multi_thread")]
async fn a_continuation_counts_what_the_run_spent_before_its_pause() {
    let env = TestEnv::with(Default::default(), &["--run_max_llm_calls", "1"]).await;
    let base = env.server.url.clone();
    pause(&env, "ap-13", "limited").await;
    let asked = env.llm.requests().await.len();
    let (status, events) = approve(&base, "ap-13", USER, json!({"decision": "approve"})).await;
    assert_eq!(status, 200);
    assert_tail(&events, "ap-13");
    assert_eq!(
        of_type(&events, "tool_call_result")[0]["content"]["success"],
        true,
        "the approved call runs: {events:#?}"
    );
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1, "{events:#?}");
    assert!(
        errors[0]["content"]
            .as_str()
            .unwrap()
            .contains("1 model calls (run_max_llm_calls)"),
        "{events:#?}"
    );
    assert_eq!(
        env.llm.requests().await.len(),
        asked,
        "no further model call"
    );
}
