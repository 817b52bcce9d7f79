//! MCP-admin: the life cycle of a registered server, Sage's load-test sequence, ownership,
//! safety, errors, presets.

use std::time::Duration;

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn url(env: &TestEnv, path: &str) -> String {
    format!("{}{path}", env.server.url)
}

async fn tools_of(env: &TestEnv, user: &str) -> Vec<String> {
    let (status, body) = get_json(&url(env, &format!("/api/tools?type=mcp&user_id={user}"))).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn servers_of(env: &TestEnv, user: &str) -> Vec<Value> {
    let (status, body) = get_json(&url(env, &format!("/api/mcp/list?user_id={user}"))).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["servers"].as_array().unwrap().clone()
}

fn run_calling(tool_call: &str, tools: &[&str], user: &str) -> Value {
    json!({"user_id": user, "available_tools": tools,
           "messages": [{"role": "user", "content": tool_call}]})
}

fn error_type(events: &[Value]) -> Option<String> {
    of_type(events, "tool_call_result")
        .first()
        .and_then(|e| e["content"]["error_type"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_life_cycle_add_use_restart_refresh_toggle_delete() {
    let peer = HttpPeer::start("streamable-http").await;
    let port = peer.port;
    let env = TestEnv::new().await;
    let (status, added) = send_json(
        Method::POST,
        &url(&env, "/api/mcp/add"),
        &json!({"name": "life", "protocol": "streamable_http", "streamable_http_url": peer.streamable_http_url()}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert!(
        tools_of(&env, "default_user")
            .await
            .contains(&"echo".to_owned())
    );

    let call = run_calling(r#"call:echo{"text":"first"}"#, &["echo"], "default_user");
    let events = post_ndjson(&env.stream_url(), &call).await;
    assert_eq!(answer_text(&events), "Tool results: first");

    // The server restarts: the pooled connection is stale, the next run still gets through.
    peer.stop().await;
    let _peer = HttpPeer::start_on("streamable-http", port).await;
    let (status, refreshed) = send_json(
        Method::POST,
        &url(&env, "/api/mcp/life/refresh"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(refreshed["data"]["status"], "refreshed");
    let call = run_calling(
        r#"call:echo{"text":"after restart"}"#,
        &["echo"],
        "default_user",
    );
    let events = post_ndjson(&env.stream_url(), &call).await;
    assert_eq!(answer_text(&events), "Tool results: after restart");

    let (status, toggled) = send_json(
        Method::PUT,
        &url(&env, "/api/mcp/life/toggle"),
        &json!({"disabled": true}),
    )
    .await;
    assert_eq!(status, 200, "{toggled}");
    assert_eq!(
        toggled["data"],
        json!({"server_name": "life", "disabled": true})
    );
    assert!(
        tools_of(&env, "default_user").await.is_empty(),
        "a disabled server's tools are hidden"
    );
    let events = post_ndjson(&env.stream_url(), &call).await;
    assert_eq!(error_type(&events).as_deref(), Some("TOOL_NOT_FOUND"));
    assert!(
        env.llm
            .requests()
            .await
            .last()
            .unwrap()
            .get("tools")
            .is_none()
    );
    let (status, refreshed) = send_json(
        Method::POST,
        &url(&env, "/api/mcp/life/refresh"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(refreshed["data"]["status"], "disabled");

    let response = reqwest::Client::new()
        .delete(url(&env, "/api/mcp/life"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(servers_of(&env, "default_user").await.is_empty());
    let response = reqwest::Client::new()
        .delete(url(&env, "/api/mcp/life"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn sage_load_test_sequence_works() {
    let peer = HttpPeer::start("sse").await;
    let env = TestEnv::new().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = get_json(&url(&env, "/api/health")).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
    }
    let add_body = json!({"name": "load-test", "protocol": "sse", "sse_url": peer.sse_url()});
    let (status, added) = send_json(Method::POST, &url(&env, "/api/mcp/add"), &add_body).await;
    assert_eq!(status, 200, "{added}");
    while !tools_of(&env, "default_user")
        .await
        .contains(&"echo".to_owned())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tool never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = post_ndjson(
        &env.stream_url(),
        &run_calling(r#"call:echo{"text":"load"}"#, &["echo"], "default_user"),
    )
    .await;
    assert_eq!(answer_text(&events), "Tool results: load");

    let (status, duplicate) = send_json(Method::POST, &url(&env, "/api/mcp/add"), &add_body).await;
    assert_eq!(status, 409, "{duplicate}");
    assert_eq!(duplicate["code"], 409);
    let (status, _) = send_json(
        Method::POST,
        &url(&env, "/api/mcp/load-test/refresh"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_user_can_neither_see_nor_use_another_users_servers() {
    let peer = HttpPeer::start("streamable-http").await;
    let env = TestEnv::new().await;
    let (status, _) = send_json(
        Method::POST,
        &url(&env, "/api/mcp/add?user_id=alice"),
        &json!({"name": "alices", "url": peer.streamable_http_url(), "api_key": "sk-alice-0123456789"}),
    )
    .await;
    assert_eq!(status, 200);
    let alices = servers_of(&env, "alice").await;
    assert_eq!(alices.len(), 1);
    assert_eq!(alices[0]["user_id"], "alice");
    assert_eq!(
        alices[0]["api_key"], "****6789",
        "the key is never returned in clear"
    );
    assert!(!alices[0].to_string().contains("sk-alice"));

    assert!(servers_of(&env, "bob").await.is_empty());
    assert!(tools_of(&env, "bob").await.is_empty());
    let events = post_ndjson(
        &env.stream_url(),
        &run_calling(r#"call:echo{"text":"x"}"#, &["echo"], "bob"),
    )
    .await;
    assert_eq!(error_type(&events).as_deref(), Some("TOOL_NOT_FOUND"));
    let (status, _) = send_json(
        Method::POST,
        &url(&env, "/api/tools/exec?user_id=bob"),
        &json!({"tool_name": "echo", "tool_params": {"text": "x"}}),
    )
    .await;
    assert_eq!(status, 404);
    let response = reqwest::Client::new()
        .delete(url(&env, "/api/mcp/alices?user_id=bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(servers_of(&env, "alice").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_errors_save_nothing() {
    let env = TestEnv::new().await;
    let add = |body: Value| {
        let url = url(&env, "/api/mcp/add");
        async move { send_json(Method::POST, &url, &body).await }
    };
    let (status, body) =
        add(json!({"name": "meta", "url": "http://169.254.169.254/latest/mcp"})).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("metadata"));
    let (status, body) =
        add(json!({"name": "v6meta", "sse_url": "http://[fd00:ec2::254]/sse"})).await;
    assert_eq!(status, 403, "{body}");

    let port = free_port();
    let (status, body) =
        add(json!({"name": "down", "url": format!("http://127.0.0.1:{port}/mcp")})).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["message"].as_str().unwrap().contains("down"));

    let (status, body) =
        add(json!({"name": "not-mcp", "url": format!("{}/api/health", env.server.url)})).await;
    assert_eq!(status, 502, "{body}");

    let (status, body) = add(json!({"name": "bad name!", "url": "http://127.0.0.1:1/mcp"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = add(json!({"name": "nothing"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = add(json!({"url": "http://127.0.0.1:1/mcp"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error_detail"].as_str().unwrap().starts_with("name"));

    assert!(servers_of(&env, "default_user").await.is_empty());
    let (status, _) = send_json(
        Method::POST,
        &url(&env, "/api/mcp/ghost/refresh"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send_json(
        Method::PUT,
        &url(&env, "/api/mcp/ghost/toggle"),
        &json!({"disabled": true}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_over_the_api_needs_the_operators_consent() {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = sage_core::Config::try_from_args([
        "sage",
        "--db_path",
        &dir.path().display().to_string(),
        "--default_llm_api_key",
        "k",
        "--default_llm_api_base_url",
        &llm.base_url,
        "--preset_running_config",
        "/nonexistent.json",
    ])
    .unwrap();
    let server = Server::start(config).await;
    let mut body = stdio_peer(json!({}));
    body["name"] = json!("local");
    let (status, refused) =
        send_json(Method::POST, &format!("{}/api/mcp/add", server.url), &body).await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("--mcp_allow_stdio")
    );

    // The same holds for a request's extra_mcp_config.
    let events = post_ndjson(
        &format!("{}/api/stream", server.url),
        &json!({"messages": [{"role": "user", "content": r#"call:echo{"text":"x"}"#}],
                "available_tools": ["echo"], "extra_mcp_config": {"local": stdio_peer(json!({}))}}),
    )
    .await;
    assert_eq!(error_type(&events).as_deref(), Some("TOOL_NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_dies_mid_call_is_a_tool_error_and_the_run_goes_on() {
    let peer = HttpPeer::start("streamable-http").await;
    let env = TestEnv::new().await;
    let (status, _) = send_json(
        Method::POST,
        &url(&env, "/api/mcp/add"),
        &json!({"name": "mortal", "url": peer.streamable_http_url(), "timeout_s": 5}),
    )
    .await;
    assert_eq!(status, 200);
    let events = post_ndjson(
        &env.stream_url(),
        &run_calling("call:die", &["die"], "default_user"),
    )
    .await;
    assert_tail(&events, &session_of(&events));
    let result = &of_type(&events, "tool_call_result")[0]["content"];
    assert_eq!(result["error"], true, "{result}");
    assert!(answer_text(&events).starts_with("Tool results: "));
}

#[tokio::test(flavor = "multi_thread")]
async fn preset_servers_register_in_the_background_and_are_shared_read_only() {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let preset = dir.path().join("mcp_setting.json");
    let port = free_port();
    std::fs::write(
        &preset,
        json!({"mcpServers": {
            "preset-py": {"command": python().display().to_string(), "args": [peer_script(), "stdio"]},
            "preset-down": {"url": format!("http://127.0.0.1:{port}/mcp"), "timeout_s": 2},
            "preset-off": {"disabled": true, "url": "http://127.0.0.1:1/mcp"},
        }})
        .to_string(),
    )
    .unwrap();
    let db_path = dir.path().display().to_string();
    let preset_path = preset.display().to_string();
    let config = sage_core::Config::try_from_args([
        "sage",
        "--db_path",
        &db_path,
        "--default_llm_api_key",
        "k",
        "--default_llm_api_base_url",
        &llm.base_url,
        "--preset_running_config",
        "/nonexistent.json",
        "--preset_mcp_config",
        &preset_path,
    ])
    .unwrap();
    let server = Server::start_with_presets(config).await;
    let list_url = format!("{}/api/mcp/list?user_id=carol", server.url);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let servers = loop {
        let (_, body) = get_json(&list_url).await;
        let servers = body["data"]["servers"].as_array().unwrap().clone();
        if servers.len() == 3 {
            break servers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presets never registered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_name = |name: &str| servers.iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(
        by_name("preset-py")["disabled"],
        false,
        "no `disabled` means enabled"
    );
    assert_eq!(by_name("preset-py")["tool_count"], 8);
    assert!(by_name("preset-down")["last_error"].is_string());
    assert_eq!(by_name("preset-off")["disabled"], true);

    let events = post_ndjson(
        &format!("{}/api/stream", server.url),
        &run_calling(r#"call:echo{"text":"from a preset"}"#, &["echo"], "carol"),
    )
    .await;
    assert_eq!(answer_text(&events), "Tool results: from a preset");
    let response = reqwest::Client::new()
        .delete(format!("{}/api/mcp/preset-py?user_id=carol", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}
