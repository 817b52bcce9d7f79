//! `sage-stream`'s deployed bootstrap under cargo-lambda's emulator, called at its Function URL
//! path.

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
        ("SAGE_DEFAULT_LLM_API_KEY", "test-key".to_owned()),
        ("SAGE_DEFAULT_LLM_API_BASE_URL", llm.base_url.clone()),
        // One stream needs no store shared with another process.
        ("SAGE_DB_TYPE", "memory".to_owned()),
        (
            "SAGE_PRESET_RUNNING_CONFIG_PATH",
            "/nonexistent.json".to_owned(),
        ),
    ]
    .map(|(name, value)| (name.to_owned(), value));
    let _emulator = start_lambda_apis(port).await;
    // The bootstrap `cargo lambda build -p sage-stream` made: built alone, as it is deployed.
    let _function = start_bootstrap("sage-stream", port, &env_vars);

    let url = format!("http://127.0.0.1:{port}/lambda-url/sage-stream/api/stream");
    let client = reqwest::Client::new();
    let response = client
        .post(&url)
        .json(&user_message("words:6"))
        .timeout(Duration::from_secs(60))
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
