//! Tool calls served by the official MCP Python SDK server, over stdio and streamable HTTP.

use crate::common::*;
use serde_json::{Value, json};

fn run_with_tools(text: &str, servers: Value, tools: &[&str]) -> Value {
    json!({
        "messages": [{"role": "user", "content": text}],
        "available_tools": tools,
        "extra_mcp_config": servers,
    })
}

fn tool_results(events: &[Value]) -> Vec<&Value> {
    of_type(events, "tool_call_result")
}

/// The checks every successful single tool call shares.
fn assert_one_call_fed_back(events: &[Value], tool: &str, expected: &str) {
    assert_tail(events, &session_of(events));
    let calls = of_type(events, "tool_call");
    assert_eq!(calls.len(), 1, "{events:#?}");
    let call = &calls[0]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], tool);
    assert!(
        calls[0].get("content").is_none(),
        "tool_call events carry no content"
    );
    let results = tool_results(events);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["role"], "tool");
    assert_eq!(results[0]["tool_call_id"], call["id"]);
    assert_eq!(results[0]["content"], expected);
    assert_eq!(answer_text(events), format!("Tool results: {expected}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stdio_tool_result_is_fed_back_and_answered() {
    let env = TestEnv::new().await;
    let body = run_with_tools(
        r#"call:echo{"text":"hello over stdio"}"#,
        json!({"peer": stdio_peer(json!({}))}),
        &["echo"],
    );
    let events = post_ndjson(&env.stream_url(), &body).await;
    assert_one_call_fed_back(&events, "echo", "hello over stdio");

    let requests = env.llm.requests().await;
    assert_eq!(requests.len(), 3, "two turns, then the completion judge");
    assert!(is_judge_request(&requests[2]), "{}", requests[2]);
    assert!(
        requests[2]["tools"].is_null(),
        "the judge is offered no tools"
    );
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, vec!["echo"], "only allowed tools are offered");
    assert!(requests[0]["tools"][0]["function"]["parameters"]["properties"]["text"].is_object());
    let fed_back = requests[1]["messages"].as_array().unwrap();
    assert_eq!(fed_back[fed_back.len() - 1]["role"], "tool");
    assert_eq!(fed_back[fed_back.len() - 1]["content"], "hello over stdio");
    assert_eq!(
        fed_back[fed_back.len() - 2]["tool_calls"][0]["function"]["name"],
        "echo"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamable_http_tool_result_is_fed_back_and_answered() {
    let peer = HttpPeer::start("streamable-http").await;
    let env = TestEnv::new().await;
    let body = run_with_tools(
        r#"call:add{"a":2,"b":40}"#,
        json!({"peer": {"url": peer.streamable_http_url()}}),
        &["add"],
    );
    let events = post_ndjson(&env.stream_url(), &body).await;
    assert_tail(&events, &session_of(&events));
    let results = tool_results(&events);
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0]["content"],
        json!({"sum": 42}),
        "JSON text becomes an object"
    );
    assert_eq!(answer_text(&events), r#"Tool results: {"sum":42}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_calls_in_one_turn_run_concurrently() {
    let env = TestEnv::new().await;
    // Each call waits for the other: run one after the other, both would answer "alone".
    let body = run_with_tools(
        r#"call:rendezvous{"key":"k1"} call:rendezvous{"key":"k1"}"#,
        json!({"peer": stdio_peer(json!({}))}),
        &["rendezvous"],
    );
    let events = post_ndjson(&env.stream_url(), &body).await;
    assert_tail(&events, &session_of(&events));
    assert_eq!(
        of_type(&events, "tool_call")[0]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let results: Vec<&Value> = tool_results(&events)
        .iter()
        .map(|e| &e["content"])
        .collect();
    assert_eq!(results, vec!["met", "met"]);
}

async fn single_error(text: &str, servers: Value, tools: &[&str]) -> (Vec<Value>, Value) {
    let env = TestEnv::new().await;
    let events = post_ndjson(&env.stream_url(), &run_with_tools(text, servers, tools)).await;
    assert_tail(&events, &session_of(&events));
    let results = tool_results(&events);
    assert_eq!(results.len(), 1, "{events:#?}");
    let content = results[0]["content"].clone();
    assert_eq!(content["error"], true);
    assert!(
        answer_text(&events).starts_with("Tool results: "),
        "the run goes on after a tool error"
    );
    (events, content)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_that_times_out_becomes_a_timeout_error_event() {
    let (_, content) = single_error(
        r#"call:sleep{"seconds":30}"#,
        json!({"peer": stdio_peer(json!({"timeout_s": 1}))}),
        &["sleep"],
    )
    .await;
    assert_eq!(content["error_type"], "TIMEOUT");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_that_raises_becomes_an_execution_error_event() {
    let (_, content) = single_error(
        "call:fail",
        json!({"peer": stdio_peer(json!({}))}),
        &["fail"],
    )
    .await;
    assert_eq!(content["error_type"], "EXECUTION_ERROR");
    assert!(
        content["message"]
            .as_str()
            .unwrap()
            .contains("scripted tool failure")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_tool_becomes_a_not_found_error_event() {
    let (_, content) = single_error(
        "call:ghost_tool",
        json!({"peer": stdio_peer(json!({}))}),
        &["echo"],
    )
    .await;
    assert_eq!(content["error_type"], "TOOL_NOT_FOUND");
    assert_eq!(content["tool_name"], "ghost_tool");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_outside_the_allow_list_is_not_callable() {
    let (_, content) = single_error(
        r#"call:add{"a":1,"b":2}"#,
        json!({"peer": stdio_peer(json!({}))}),
        &["echo"],
    )
    .await;
    assert_eq!(content["error_type"], "TOOL_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn arguments_that_are_not_json_become_an_invalid_json_error_event() {
    let (_, content) = single_error(
        "call:echo{not-json",
        json!({"peer": stdio_peer(json!({}))}),
        &["echo"],
    )
    .await;
    assert_eq!(content["error_type"], "INVALID_JSON");
}

/// Arguments that break the tool's schema never reach the tool: the result is a tool error that
/// names each problem, and the model goes on.
#[tokio::test(flavor = "multi_thread")]
async fn arguments_that_break_the_schema_become_an_invalid_arguments_error_event() {
    let (_, content) = single_error(
        r#"call:add{"a":"one"}"#,
        json!({"peer": stdio_peer(json!({}))}),
        &["add"],
    )
    .await;
    assert_eq!(content["error_type"], "INVALID_ARGUMENTS", "{content}");
    let message = content["message"].as_str().unwrap();
    assert!(message.contains("`a`"), "{message}");
    assert!(
        message.contains("\"b\" is a required property"),
        "{message}"
    );

    let env = TestEnv::new().await;
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"session_id": "schema-builtin", "available_tools": ["file_write"],
                "messages": [{"role": "user", "content": r#"call:file_write{"file_path":5,"content":"x"}"#}]}),
    )
    .await;
    let results = tool_results(&events);
    assert_eq!(results[0]["content"]["error_type"], "INVALID_ARGUMENTS");
    assert!(
        results[0]["content"]["message"]
            .as_str()
            .unwrap()
            .contains("`file_path`: 5 is not of type \"string\""),
        "{results:?}"
    );
    assert!(
        !env.workspace().join("schema-builtin").exists(),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_leaves_its_tools_unknown_and_the_run_goes_on() {
    let port = free_port();
    let (_, content) = single_error(
        r#"call:echo{"text":"x"}"#,
        json!({"gone": {"url": format!("http://127.0.0.1:{port}/mcp"), "timeout_s": 2}}),
        &["echo"],
    )
    .await;
    assert_eq!(content["error_type"], "TOOL_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_loop_stops_at_max_loop_count_with_a_normal_event() {
    let env = TestEnv::new().await;
    let mut body = run_with_tools(
        r#"call-forever:echo{"text":"again"}"#,
        json!({"peer": stdio_peer(json!({}))}),
        &["echo"],
    );
    body["max_loop_count"] = json!(3);
    let events = post_ndjson(&env.stream_url(), &body).await;
    assert_tail(&events, &session_of(&events));
    assert_eq!(tool_results(&events).len(), 3);
    let normal = of_type(&events, "normal");
    assert_eq!(normal.len(), 1);
    assert!(normal[0]["content"].as_str().unwrap().contains('3'));
    // Three tool-calling turns, then the summary of a run that ended on a tool result.
    assert_eq!(env.llm.requests().await.len(), 4);
    assert!(!of_type(&events, "final_answer").is_empty());
}
