//! The model failing before and during the stream: an `error` event, the tail, nothing lost.

use crate::common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn an_http_500_before_streaming_ends_with_an_error_event_after_retries() {
    let env = TestEnv::with(Default::default(), &["--llm_max_retries", "2"]).await;
    let events = post_ndjson(&env.stream_url(), &user_message("fail:500")).await;
    assert_tail(&events, &session_of(&events));
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1, "{events:#?}");
    let message = errors[0]["content"].as_str().unwrap();
    assert!(message.starts_with("LLM request failed: 500"), "{message}");
    assert!(message.contains(&env.llm.base_url), "{message}");
    assert!(
        message.contains("scripted failure"),
        "the provider's message: {message}"
    );
    assert_eq!(env.llm.requests().await.len(), 3, "one try and two retries");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_authentication_failure_is_not_retried() {
    let env = TestEnv::new().await;
    let events = post_ndjson(&env.stream_url(), &user_message("fail:401")).await;
    let errors = of_type(&events, "error");
    assert!(errors[0]["content"].as_str().unwrap().contains("401"));
    assert_eq!(env.llm.requests().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_mid_stream_keeps_the_partial_answer() {
    let env = TestEnv::new().await;
    let body =
        json!({"session_id": "drop-1", "messages": [{"role": "user", "content": "fail:drop"}]});
    let events = post_ndjson(&env.stream_url(), &body).await;
    assert_tail(&events, "drop-1");
    let partial = answer_text(&events);
    assert!(!partial.is_empty(), "some deltas arrived before the drop");
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("LLM stream broke off")
    );
    assert_eq!(
        env.llm.requests().await.len(),
        1,
        "no retry after the first chunk"
    );

    // The partial answer is stored: the next turn's history carries it.
    post_ndjson(
        &env.stream_url(),
        &json!({"session_id": "drop-1", "messages": [{"role": "user", "content": "go on"}]}),
    )
    .await;
    let history = env.llm.requests().await.pop().unwrap()["messages"].clone();
    assert_eq!(history[1]["role"], "assistant");
    assert_eq!(history[1]["content"], partial.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_provider_is_an_error_event_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let server = Server::start(test_config(
        &base_url,
        dir.path(),
        &["--llm_max_retries", "0"],
    ))
    .await;
    let events = post_ndjson(&format!("{}/api/stream", server.url), &user_message("hi")).await;
    assert_tail(&events, &session_of(&events));
    let message = of_type(&events, "error")[0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("cannot reach") && message.contains(&base_url),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_list_rotates_between_requests() {
    let env = TestEnv::with(
        sage_mock_llm::MockOptions {
            api_key: Some("good".into()),
            ..Default::default()
        },
        &[],
    )
    .await;
    let body = |n: u32| {
        json!({
            "messages": [{"role": "user", "content": format!("hi {n}")}],
            "llm_model_config": {"api_key": "good,bad"},
        })
    };
    let mut failures = 0;
    for n in 0..4 {
        let events = post_ndjson(&env.stream_url(), &body(n)).await;
        failures += of_type(&events, "error").len();
    }
    assert_eq!(failures, 2, "every other request used the bad key");
}
