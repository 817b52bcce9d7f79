//! What keeps a server robust whoever calls it: request ids, the body limit, the timeout of
//! routes that answer at once, a drain on SIGTERM, and a client that stops reading.

use std::time::Duration;

use sage_mock_llm::MockOptions;
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_given_one_is_kept() {
    let env = TestEnv::new().await;
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/api/health", env.server.url))
        .send()
        .await
        .unwrap();
    let generated = health.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let missing = client
        .get(format!("{}/no/such/route", env.server.url))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_in_the_envelope_and_changes_nothing() {
    let env = TestEnv::with(MockOptions::default(), &["--max_body_bytes", "2048"]).await;
    let big = "x".repeat(4096);
    let body = json!({"session_id": "big-1", "messages": [{"role": "user", "content": big}]});
    let response = reqwest::Client::new()
        .post(env.stream_url())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(envelope["code"], 413);
    assert!(
        envelope["message"].as_str().unwrap().contains("2048"),
        "{envelope}"
    );
    let (status, _) = get_json(&format!(
        "{}/api/conversations/big-1/messages",
        env.server.url
    ))
    .await;
    assert_eq!(status, 404, "nothing was stored");
    assert!(
        env.llm.requests().await.is_empty(),
        "the model was not called"
    );

    let (status, envelope) = send_json(
        reqwest::Method::POST,
        &format!("{}/api/mcp/add", env.server.url),
        &json!({"name": "big", "url": format!("http://127.0.0.1:9/{big}")}),
    )
    .await;
    assert_eq!(status, 413, "{envelope}");
    let (_, listed) = get_json(&format!("{}/api/mcp/list", env.server.url)).await;
    assert_eq!(listed["data"]["servers"], json!([]));

    // Under the limit the same route works.
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"session_id": "small-1", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_tail(&events, "small-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_outlives_the_timeout_answers_504_in_the_envelope() {
    let peer = HttpPeer::start("streamable-http").await;
    let env = TestEnv::with(
        MockOptions::default(),
        &["--request_timeout_seconds", "2", "--tool_timeout", "30"],
    )
    .await;
    let (status, added) = send_json(
        reqwest::Method::POST,
        &format!("{}/api/mcp/add", env.server.url),
        &json!({"name": "slow", "url": peer.streamable_http_url()}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    let started = std::time::Instant::now();
    let (status, envelope) = send_json(
        reqwest::Method::POST,
        &format!("{}/api/tools/exec", env.server.url),
        &json!({"tool_name": "sleep", "tool_params": {"seconds": 10}}),
    )
    .await;
    assert_eq!(status, 504, "{envelope}");
    assert_eq!(envelope["code"], 504);
    assert!(
        envelope["message"].as_str().unwrap().contains("2s"),
        "{envelope}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // A quick call on the same route still answers.
    let (status, result) = send_json(
        reqwest::Method::POST,
        &format!("{}/api/tools/exec", env.server.url),
        &json!({"tool_name": "echo", "tool_params": {"text": "still here"}}),
    )
    .await;
    assert_eq!(status, 200, "{result}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_running_streams_with_their_tail_and_exits_within_the_grace() {
    let llm = MockLlm::start(MockOptions {
        token_delay: Duration::from_millis(50),
        ..MockOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = dir.path().display().to_string();
    let shim = workspace_binary("sage-local");
    let args = |port: u16| {
        vec![
            "--host".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            port.to_string(),
            "--db_type".to_owned(),
            "file".to_owned(),
            "--db_path".to_owned(),
            db.clone(),
            "--default_llm_api_key".to_owned(),
            "k".to_owned(),
            "--default_llm_api_base_url".to_owned(),
            llm.base_url.clone(),
            "--shutdown_grace_seconds".to_owned(),
            "5".to_owned(),
        ]
    };
    let mut child = std::process::Command::new(&shim)
        .args(args(port))
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(30)).await;
    let url = format!("http://127.0.0.1:{port}");
    let mut reader = NdjsonReader::post(
        &format!("{url}/api/stream"),
        &json!({"session_id": "drain-1", "messages": [{"role": "user", "content": "words:400"}]}),
    )
    .await;
    assert_eq!(reader.status, 200);
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(reader.next().await.expect("the run streams"));
    }
    let signalled = std::time::Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    events.extend(reader.rest().await);
    assert_tail(&events, "drain-1");
    assert!(
        answer_text(&events).split_whitespace().count() < 400,
        "the run was stopped, not finished"
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "a clean exit: {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "exited within the grace: {:?}",
        signalled.elapsed()
    );

    // Everything the client saw was stored, and the session says how its run ended.
    let port = free_port();
    let _restarted = ChildGuard(
        std::process::Command::new(&shim)
            .args(args(port))
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, Duration::from_secs(30)).await;
    let (code, status) = send_json(
        reqwest::Method::POST,
        &format!("http://127.0.0.1:{port}/api/sessions/drain-1/tasks_status"),
        &json!({}),
    )
    .await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["data"]["status"], "interrupted");
    let (_, conversation) = get_json(&format!(
        "http://127.0.0.1:{port}/api/conversations/drain-1/messages"
    ))
    .await;
    let stored = conversation["data"]["messages"][1]["content"]
        .as_str()
        .unwrap();
    assert_eq!(
        stored,
        answer_text(&events),
        "the partial answer was stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_does_not_hold_up_its_run_and_misses_nothing() {
    let env = TestEnv::new().await;
    let words = 20_000;
    let response = reqwest::Client::new()
        .post(env.stream_url())
        .header("accept", "text/event-stream")
        .json(&json!({"session_id": "lazy-1", "messages": [{"role": "user", "content": format!("words:{words}")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first_seq = first_seq(&response).expect("the first event's sequence number");
    // Read nothing until the run is over: it must finish without the client.
    let status_url = format!("{}/api/sessions/lazy-1/tasks_status", env.server.url);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, status) = send_json(reqwest::Method::POST, &status_url, &json!({})).await;
        if status["data"]["status"] == "idle" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not end while its client read nothing: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let frames = read_sse(response).await;
    let ids: Vec<u64> = frames.iter().map(|f| f.id.parse().unwrap()).collect();
    let expected: Vec<u64> = (first_seq..first_seq + ids.len() as u64).collect();
    assert_eq!(ids, expected, "every event once, in order");
    let events: Vec<Value> = frames.into_iter().map(|f| f.data).collect();
    assert_tail(&events, "lazy-1");
    assert_eq!(answer_text(&events).split_whitespace().count(), words);
}
