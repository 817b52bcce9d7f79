//! `sage-stream` under cargo-lambda's emulator, called at its Function URL path.

use std::time::Duration;

use crate::common::*;
use sage_mock_llm::MockOptions;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn sage_stream_streams_events_incrementally_through_the_emulator() {
    let delay = Duration::from_millis(150);
    let llm = MockLlm::start(MockOptions {
        token_delay: delay,
        ..Default::default()
    })
    .await;
    let port = free_port();
    let env_vars = [
        "SAGE_DEFAULT_LLM_API_KEY=test-key".to_owned(),
        format!("SAGE_DEFAULT_LLM_API_BASE_URL={}", llm.base_url),
        // A function's own build has only the backends it uses in the cloud; one stream needs
        // no store shared with another process.
        "SAGE_DB_TYPE=memory".to_owned(),
        "SAGE_PRESET_RUNNING_CONFIG_PATH=/nonexistent.json".to_owned(),
    ];
    let _emulator =
        start_cargo_lambda_watch(&workspace_root().join("functions/stream"), port, &env_vars).await;

    let url = format!("http://127.0.0.1:{port}/lambda-url/sage-stream/api/stream");
    let client = reqwest::Client::new();
    let response = client
        .post(&url)
        .json(&user_message("words:6"))
        // The first invocation compiles sage-stream with its own features (minutes on 2 cores).
        .timeout(Duration::from_secs(900))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let arrivals = read_arrivals(response).await;
    let events: Vec<Value> = arrivals.iter().map(|(_, event)| event.clone()).collect();
    assert_tail(&events, &session_of(&events));
    assert_eq!(answer_text(&events), "tok0 tok1 tok2 tok3 tok4 tok5 ");
    assert_incremental(&arrivals, delay * 2);
}
