//! Runs are bounded whatever the request asks: `--run_max_llm_calls`, `--run_max_tokens` and
//! `--run_max_seconds` end a run with an `error` event naming the limit, then the tail, and
//! what was said before stays in the conversation.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

fn looping_run(session: &str) -> Value {
    json!({"session_id": session, "available_tools": ["todo_read"], "max_loop_count": 20,
           "messages": [{"role": "user", "content": "call-forever:todo_read"}]})
}

fn error_text(events: &[Value]) -> String {
    let errors = of_type(events, "error");
    assert_eq!(errors.len(), 1, "{events:#?}");
    errors[0]["content"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_stops_at_its_model_call_limit() {
    let env = TestEnv::with(Default::default(), &["--run_max_llm_calls", "3"]).await;
    let events = post_ndjson(&env.stream_url(), &looping_run("rl-calls")).await;
    assert_tail(&events, "rl-calls");
    assert!(
        error_text(&events).contains("3 model calls (run_max_llm_calls)"),
        "{events:#?}"
    );
    assert_eq!(env.llm.requests().await.len(), 3);
    assert_eq!(of_type(&events, "tool_call").len(), 3);
    assert_eq!(usage_steps(&events).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_stops_once_it_has_used_its_tokens() {
    let env = TestEnv::with(Default::default(), &["--run_max_tokens", "60"]).await;
    let events = post_ndjson(&env.stream_url(), &looping_run("rl-tokens")).await;
    assert_tail(&events, "rl-tokens");
    assert!(
        error_text(&events).contains("60 tokens (run_max_tokens)"),
        "{events:#?}"
    );
    let usage = &of_type(&events, "token_usage")[0]["metadata"]["token_usage"]["total_info"];
    let used = usage["total_tokens"].as_u64().unwrap();
    let calls = env.llm.requests().await.len();
    assert!(used >= 60, "stopped only once 60 were used: {usage}");
    assert!(calls < 20, "stopped before the loop cap: {calls} calls");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_stops_at_its_time_limit_and_keeps_what_it_said() {
    let options = sage_mock_llm::MockOptions {
        token_delay: Duration::from_millis(20),
        ..Default::default()
    };
    let env = TestEnv::with(options, &["--run_max_seconds", "1"]).await;
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"session_id": "rl-time", "messages": [{"role": "user", "content": "words:400"}]}),
    )
    .await;
    assert_tail(&events, "rl-time");
    assert!(
        error_text(&events).contains("1 seconds (run_max_seconds)"),
        "{events:#?}"
    );
    let said = answer_text(&events);
    let tokens = said.split_whitespace().count();
    assert!(
        tokens > 0 && tokens < 400,
        "part of the answer streamed: {tokens} tokens"
    );
    let (status, stored) = get_json(&format!(
        "{}/api/conversations/rl-time/messages",
        env.server.url
    ))
    .await;
    assert_eq!(status, 200, "{stored}");
    assert!(
        stored.to_string().contains(said.trim()),
        "the partial answer is kept: {stored}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_that_are_not_positive_stop_start_up() {
    for (flag, value) in [
        ("--run_max_llm_calls", "0"),
        ("--run_max_tokens", "lots"),
        ("--run_max_seconds", "0"),
    ] {
        let error = sage_core::Config::try_from_args(["sage", flag, value]).unwrap_err();
        assert!(
            error.to_string().contains(flag.trim_start_matches("--")),
            "{flag}: {error}"
        );
    }
}

/// A price that makes each token cost a whole dollar (two for completion tokens).
const DOLLAR_A_TOKEN: &str =
    r#"{"*": {"input_per_million": 1000000, "output_per_million": 2000000}}"#;

fn cost_of(usage: &Value) -> f64 {
    usage["prompt_tokens"].as_f64().unwrap() + 2.0 * usage["completion_tokens"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_priced_run_reports_its_cost_and_stops_at_its_cost_limit() {
    let env = TestEnv::with(
        Default::default(),
        &["--price_table", DOLLAR_A_TOKEN, "--run_max_cost", "150"],
    )
    .await;
    let events = post_ndjson(&env.stream_url(), &looping_run("rl-cost")).await;
    assert_tail(&events, "rl-cost");
    assert!(
        error_text(&events).contains("$150 of model cost (run_max_cost)"),
        "{events:#?}"
    );
    let usage = &of_type(&events, "token_usage")[0]["metadata"]["token_usage"];
    let total = &usage["total_info"];
    let spent = total["cost"].as_f64().unwrap();
    assert!((spent - cost_of(total)).abs() < 1e-6, "{total}");
    let steps = usage["per_step_info"].as_array().unwrap();
    let last = steps.last().unwrap()["cost"].as_f64().unwrap();
    assert!(
        spent >= 150.0 && spent - last < 150.0,
        "the call that crossed the limit was the last one: {spent} after {last}"
    );
    assert!(
        env.llm.requests().await.len() < 20,
        "stopped before the loop cap"
    );

    // Without a limit, the price table still prices every run.
    let env = TestEnv::with(Default::default(), &["--price_table", DOLLAR_A_TOKEN]).await;
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"session_id": "rl-priced", "messages": [{"role": "user", "content": "words:5"}]}),
    )
    .await;
    let total = &of_type(&events, "token_usage")[0]["metadata"]["token_usage"]["total_info"];
    assert!(total["completion_tokens"].as_u64().unwrap() >= 5);
    assert!(
        (total["cost"].as_f64().unwrap() - cost_of(total)).abs() < 1e-6,
        "{total}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cost_limit_refuses_a_model_the_price_table_lacks() {
    let env = TestEnv::with(
        Default::default(),
        &[
            "--price_table",
            r#"{"some-other-model": {"input_per_million": 1, "output_per_million": 1}}"#,
            "--run_max_cost",
            "1",
        ],
    )
    .await;
    let events = post_ndjson(&env.stream_url(), &looping_run("rl-unpriced")).await;
    assert_tail(&events, "rl-unpriced");
    assert!(
        error_text(&events).contains("no price for model"),
        "{events:#?}"
    );
    assert!(
        env.llm.requests().await.is_empty(),
        "no model call was made"
    );
}
