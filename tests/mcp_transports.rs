//! Registering real MCP servers over every transport: the official Python SDK server (stdio,
//! streamable HTTP, legacy SSE) and npm server-everything (stdio, streamable HTTP).

use std::sync::{Arc, Mutex};

use crate::common::*;
use axum::http::HeaderMap;
use reqwest::Method;
use serde_json::{Value, json};

async fn add(env: &TestEnv, body: Value) -> (u16, Value) {
    send_json(
        Method::POST,
        &format!("{}/api/mcp/add", env.server.url),
        &body,
    )
    .await
}

async fn exec(env: &TestEnv, tool: &str, params: Value) -> (u16, Value) {
    send_json(
        Method::POST,
        &format!("{}/api/tools/exec", env.server.url),
        &json!({"tool_name": tool, "tool_params": params}),
    )
    .await
}

fn tool_names(body: &Value) -> Vec<String> {
    body["data"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| {
            tool.as_str()
                .unwrap_or_else(|| tool["name"].as_str().unwrap())
                .to_owned()
        })
        .collect()
}

const PYTHON_TOOLS: [&str; 8] = [
    "add",
    "complete_task",
    "die",
    "echo",
    "fail",
    "rendezvous",
    "repeat",
    "sleep",
];

fn assert_python_tools(body: &Value) {
    let mut names = tool_names(body);
    names.sort();
    assert_eq!(names, PYTHON_TOOLS, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_over_stdio() {
    let env = TestEnv::new().await;
    let mut body = stdio_peer(json!({"name": "py-stdio", "protocol": "stdio"}));
    body["name"] = json!("py-stdio");
    let (status, added) = add(&env, body).await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["data"]["status"], "success");
    assert_python_tools(&added);
    let (status, result) = exec(&env, "echo", json!({"text": "over stdio"})).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["data"], "over stdio");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_over_streamable_http() {
    let peer = HttpPeer::start("streamable-http").await;
    let env = TestEnv::new().await;
    let (status, added) = add(
        &env,
        json!({"name": "py-http", "protocol": "streamable_http", "streamable_http_url": peer.streamable_http_url()}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_python_tools(&added);
    let (status, result) = exec(&env, "add", json!({"a": 20, "b": 22})).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["data"], json!({"sum": 42}));
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_over_legacy_sse() {
    let peer = HttpPeer::start("sse").await;
    let env = TestEnv::new().await;
    let (status, added) = add(
        &env,
        json!({"name": "py-sse", "protocol": "sse", "sse_url": peer.sse_url()}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_python_tools(&added);
    let (status, result) = exec(&env, "echo", json!({"text": "over legacy sse"})).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["data"], "over legacy sse");

    // And inside a run, with the result fed back to the model.
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"messages": [{"role": "user", "content": r#"call:echo{"text":"sse in a run"}"#}],
                "available_tools": ["echo"]}),
    )
    .await;
    assert_eq!(answer_text(&events), "Tool results: sse in a run");
}

const EVERYTHING_TOOLS: [&str; 5] = [
    "echo",
    "get-sum",
    "get-tiny-image",
    "get-structured-content",
    "trigger-long-running-operation",
];

fn assert_everything_tools(added: &Value) {
    let names = tool_names(added);
    for expected in EVERYTHING_TOOLS {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_everything_over_stdio() {
    let env = TestEnv::new().await;
    let (status, added) = add(
        &env,
        json!({"name": "everything", "command": "node", "args": [everything_server_script(), "stdio"]}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_everything_tools(&added);
    let (status, listed) = get_json(&format!("{}/api/tools?type=mcp", env.server.url)).await;
    assert_eq!(status, 200);
    let catalogue = listed["data"]["tools"].as_array().unwrap();
    assert_eq!(
        catalogue.len(),
        tool_names(&added).len(),
        "every tool is listed"
    );
    let sum = catalogue.iter().find(|t| t["name"] == "get-sum").unwrap();
    assert_eq!(sum["type"], "mcp");
    assert_eq!(sum["source"], "MCP Server: everything");
    assert!(sum["parameters"]["properties"]["a"].is_object());
    let (status, result) = exec(&env, "get-sum", json!({"a": 2, "b": 3})).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["data"], "The sum of 2 and 3 is 5.", "{result}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_everything_over_streamable_http() {
    let server = EverythingHttp::start().await;
    let env = TestEnv::new().await;
    let (status, added) = add(&env, json!({"name": "everything", "url": server.url()})).await;
    assert_eq!(status, 200, "{added}");
    assert_everything_tools(&added);
    let (status, result) = exec(&env, "echo", json!({"message": "hi everything"})).await;
    assert_eq!(status, 200, "{result}");
    assert!(
        result["data"].to_string().contains("hi everything"),
        "{result}"
    );
}

/// A fake endpoint that records the Authorization header and refuses the request.
async fn header_recorder() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = {
        let seen = seen.clone();
        move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let value = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                seen.lock().unwrap().push(value);
                axum::http::StatusCode::UNAUTHORIZED
            }
        }
    };
    let app = axum::Router::new().fallback(record);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_goes_as_a_bearer_token_on_both_http_transports() {
    let env = TestEnv::new().await;
    for (name, field) in [("bearer-http", "url"), ("bearer-sse", "sse_url")] {
        let (url, seen) = header_recorder().await;
        let (status, body) = add(
            &env,
            json!({"name": name, field: format!("{url}/mcp"), "api_key": "sk-secret-123456"}),
        )
        .await;
        assert_eq!(status, 502, "{body}");
        let seen = seen.lock().unwrap().clone();
        assert!(!seen.is_empty(), "{name}: the server was called");
        assert!(
            seen.iter().all(|h| h == "Bearer sk-secret-123456"),
            "{name}: {seen:?}"
        );
    }
}
