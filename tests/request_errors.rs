//! Errors before the stream: enveloped JSON, the right status, the field named, nothing changed.
//! In process, except where two requests overlap.

use std::time::Duration;

use axum::http::Method;
use sage_mock_llm::MockOptions;
use serde_json::{Value, json};

use crate::common::*;

const STREAM: &str = "/api/stream";

async fn post(url: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("errors are JSON envelopes");
    (status, body)
}

fn assert_envelope(body: &Value, status: u16) {
    assert_eq!(body["code"], status, "{body}");
    assert!(body["message"].is_string());
    assert!(body["timestamp"].is_f64());
    assert!(body.get("error_detail").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_messages_is_a_400_and_creates_nothing() {
    let env = AppEnv::new().await;
    let (status, body) = env
        .app
        .send_raw_json(Method::POST, STREAM, r#"{"session_id":"e1","messages":[]}"#)
        .await;
    assert_eq!(status, 400);
    assert_envelope(&body, 400);
    assert!(body["message"].as_str().unwrap().contains("messages"));
    assert!(
        env.app
            .state
            .store()
            .get_session("e1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(env.llm.requests().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_type_is_a_422_naming_the_field() {
    let env = AppEnv::new().await;
    let cases = [
        (r#"{"messages":"hi"}"#, "messages"),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"max_loop_count":"ten"}"#,
            "max_loop_count",
        ),
        (
            r#"{"messages":[{"role":5,"content":"x"}]}"#,
            "messages[0].role",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"deep_thinking":"yes"}"#,
            "deep_thinking",
        ),
        (r#"{"session_id":"e2"}"#, "messages"),
        (
            r#"{"messages":[{"role":"wizard","content":"x"}]}"#,
            "messages[0].role",
        ),
    ];
    for (body, field) in cases {
        let (status, response) = env.app.send_raw_json(Method::POST, STREAM, body).await;
        assert_eq!(status, 422, "{body}");
        assert_envelope(&response, 422);
        let detail = response["error_detail"].as_str().unwrap();
        assert!(detail.starts_with(field), "{body} -> {detail}");
    }
    assert!(
        env.app
            .state
            .store()
            .get_session("e2")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_a_422_without_internals() {
    let env = AppEnv::new().await;
    let (status, body) = env
        .app
        .send_raw_json(Method::POST, STREAM, r#"{"messages": [}"#)
        .await;
    assert_eq!(status, 422);
    assert_envelope(&body, 422);
    let text = body.to_string();
    assert!(!text.contains("serde") && !text.contains("src/"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_on_a_busy_session_is_a_409() {
    let env = TestEnv::with(
        MockOptions {
            token_delay: Duration::from_millis(200),
            ..Default::default()
        },
        &[],
    )
    .await;
    let url = env.stream_url();
    let body = json!({"session_id": "busy-1", "messages": [{"role": "user", "content": "hi"}]});
    let first = tokio::spawn({
        let url = url.clone();
        let body = body.clone();
        async move { post_ndjson(&url, &body).await }
    });
    // Wait until the first run holds the session (its first event is stored).
    let store = env.server.state.store();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.events_after("busy-1", 1).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, response) = post(&url, &body.to_string()).await;
    assert_eq!(status, 409);
    assert_envelope(&response, 409);
    assert!(response["message"].as_str().unwrap().contains("busy-1"));

    let events = first.await.unwrap();
    assert_tail(&events, "busy-1");
    // Once the run is over the session takes a new one.
    let again = post_ndjson(&url, &body).await;
    assert_tail(&again, "busy-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_api_key_is_a_503_naming_the_setting() {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().display().to_string();
    let config = sage_core::Config::try_from_args([
        "sage",
        "--db_path",
        &db_path,
        "--default_llm_api_base_url",
        &llm.base_url,
        "--preset_running_config",
        "/nonexistent.json",
    ])
    .unwrap();
    let app = App::new(config).await;
    let (status, body) = app
        .send_raw_json(
            Method::POST,
            STREAM,
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(status, 503);
    assert_envelope(&body, 503);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("SAGE_DEFAULT_LLM_API_KEY")
    );

    // A request that brings its own key still runs.
    let events = app
        .post_ndjson(
            STREAM,
            &json!({"messages": [{"role": "user", "content": "hi"}], "llm_model_config": {"api_key": "mine"}}),
        )
        .await;
    assert_tail(&events, &session_of(&events));
}

#[tokio::test(flavor = "multi_thread")]
async fn another_users_session_is_a_403() {
    let env = AppEnv::new().await;
    env.app
        .post_ndjson(
            STREAM,
            &json!({"session_id": "owned-1", "user_id": "alice", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let store = env.app.state.store();
    let before = store.events_after("owned-1", 0).await.unwrap().len();
    let (status, body) = env
        .app
        .send_raw_json(
            Method::POST,
            STREAM,
            r#"{"session_id":"owned-1","user_id":"bob","messages":[{"role":"user","content":"bob was here"}]}"#,
        )
        .await;
    assert_eq!(status, 403);
    assert_envelope(&body, 403);
    assert_eq!(
        store.events_after("owned-1", 0).await.unwrap().len(),
        before,
        "bob wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_route_is_an_enveloped_404() {
    let env = AppEnv::new().await;
    let (status, body) = env.app.get_json("/api/nope").await;
    assert_eq!(status, 404);
    assert_envelope(&body, 404);
}

/// Found by the schemathesis run (tests/openapi.rs): a page number whose offset overflows
/// crashed the request (the connection closed without an answer).
#[tokio::test(flavor = "multi_thread")]
async fn a_page_far_past_the_end_is_an_empty_page() {
    let env = AppEnv::new().await;
    let huge = u64::MAX / 2 + 1;
    let (status, answer) = env
        .app
        .get_json(&format!("/api/conversations?page={huge}&page_size=100"))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["list"], json!([]));
    assert_eq!(answer["data"]["has_prev"], true);
}
