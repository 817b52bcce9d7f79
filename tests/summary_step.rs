//! The summary step of a simple run: `force_summary` (request or `--force_summary`), and a run
//! that ended on a tool result.

use crate::common::*;
use serde_json::{Value, json};

fn summary_text(events: &[Value]) -> String {
    of_type(events, "final_answer")
        .iter()
        .filter_map(|event| event["content"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn force_summary_in_the_request_streams_final_answer_events_before_the_tail() {
    let env = AppEnv::with_flags(&[]).await;
    let events = env
        .app
        .post_ndjson(
            "/api/stream",
            &json!({"messages": [{"role": "user", "content": "plan my week"}],
                    "force_summary": true}),
        )
        .await;
    assert_tail(&events, &session_of(&events));
    assert_eq!(summary_text(&events), "Summary: plan my week");
    let last_summary = events
        .iter()
        .rposition(|event| event["type"] == "final_answer")
        .unwrap();
    let usage = events
        .iter()
        .position(|event| event["type"] == "token_usage")
        .unwrap();
    assert!(last_summary < usage, "the summary comes before the tail");
    assert_eq!(usage_steps(&events), ["direct_execution", "summary"]);

    let requests = env.llm.requests().await;
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1]["tools"].as_array().is_none_or(Vec::is_empty),
        "the summary step offers no tools"
    );
    let sent = requests[1]["messages"].as_array().unwrap();
    assert_eq!(
        sent[sent.len() - 2]["role"],
        "assistant",
        "the answer is summarized"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_force_summary_setting_summarizes_every_run_unless_the_request_says_no() {
    let env = AppEnv::with_flags(&["--force_summary", "true"]).await;
    let events = env
        .app
        .post_ndjson("/api/stream", &user_message("hello there"))
        .await;
    assert_eq!(summary_text(&events), "Summary: hello there");

    let mut body = user_message("no summary please");
    body["force_summary"] = json!(false);
    let events = env.app.post_ndjson("/api/stream", &body).await;
    assert!(of_type(&events, "final_answer").is_empty());
    assert_tail(&events, &session_of(&events));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_force_summary_a_run_that_ends_on_an_answer_has_no_summary() {
    let env = AppEnv::with_flags(&[]).await;
    let events = env
        .app
        .post_ndjson("/api/stream", &user_message("hello"))
        .await;
    assert!(of_type(&events, "final_answer").is_empty());
    assert_eq!(env.llm.requests().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_ends_on_a_tool_result_is_summarized() {
    let env = AppEnv::with_flags(&[]).await;
    let events = env
        .app
        .post_ndjson(
            "/api/stream",
            &json!({
                "messages": [{"role": "user", "content": r#"call-forever:echo{"text":"again"}"#}],
                "available_tools": ["echo"],
                "extra_mcp_config": {"peer": stdio_peer(json!({}))},
                "max_loop_count": 2,
            }),
        )
        .await;
    assert_tail(&events, &session_of(&events));
    assert_eq!(of_type(&events, "tool_call_result").len(), 2);
    let cap = events.iter().position(|e| e["type"] == "normal").unwrap();
    let summary = events
        .iter()
        .position(|e| e["type"] == "final_answer")
        .unwrap();
    assert!(cap < summary, "the cap message, then the summary");
    assert!(summary_text(&events).starts_with("Summary: call-forever:echo"));
}
