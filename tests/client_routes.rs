//! The routes Sage's web client calls besides the stream — system info, providers, skills,
//! agents — through their whole life, signed in with a token and auth on, on SQLite and on
//! DynamoDB (moto): created, listed, used in a stream, changed, deleted.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const JWT_KEY: &str = "client-routes-jwt-key-0123456789abcdef";
const ADMIN_PASSWORD: &str = "client-routes-admin-pw";
const PROVIDER_KEY: &str = "sk-client-routes-provider-4321";

struct Client {
    url: String,
    token: Option<String>,
}

impl Client {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| Value::Array(ndjson_events(&text)));
        (status, body)
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(method.clone(), path, body).await;
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["data"].clone()
    }
}

fn auth_flags() -> Vec<String> {
    [
        "--no_auth",
        "false",
        "--jwt_key",
        JWT_KEY,
        "--admin_username",
        "admin",
        "--admin_password",
        ADMIN_PASSWORD,
    ]
    .map(str::to_owned)
    .to_vec()
}

async fn lifecycle(url: &str, llm: &MockLlm) {
    let anonymous = Client {
        url: url.to_owned(),
        token: None,
    };
    let (status, info) = anonymous.call(Method::GET, "/api/system/info", None).await;
    assert_eq!(
        (status, &info["data"]["allow_registration"]),
        (200, &json!(false))
    );
    let (status, _) = anonymous.call(Method::GET, "/api/agent/list", None).await;
    assert_eq!(status, 401, "auth is on");
    let login = anonymous
        .ok(
            Method::POST,
            "/api/user/login",
            Some(json!({"username_or_email": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    let admin = Client {
        url: url.to_owned(),
        token: Some(login["access_token"].as_str().unwrap().to_owned()),
    };

    // System settings: the admin opens registration, and the public info says so.
    admin
        .ok(
            Method::POST,
            "/api/system/update_settings",
            Some(json!({"allow_registration": true})),
        )
        .await;
    let (_, info) = anonymous.call(Method::GET, "/api/system/info", None).await;
    assert_eq!(info["data"]["allow_registration"], true);

    // A provider, a skill and an agent that uses both.
    let provider = admin
        .ok(
            Method::POST,
            "/api/llm-provider/create",
            Some(
                json!({"name": "Mine", "base_url": llm.base_url, "api_keys": [PROVIDER_KEY],
                        "model": "provider-model-1", "is_default": false}),
            ),
        )
        .await;
    let provider_id = provider["id"].as_str().unwrap().to_owned();
    let listed = admin.ok(Method::GET, "/api/llm-provider/list", None).await;
    assert_eq!(listed[0]["api_keys"], json!(["****4321"]), "{listed}");

    let (status, skill) = upload_skill(
        url,
        "",
        admin.token.as_deref(),
        skill_zip("tidy-notes", "Tidies notes.", "TIDY-RULES-5", &[]),
    )
    .await;
    assert_eq!(status, 200, "{skill}");
    let skills = admin.ok(Method::GET, "/api/skills", None).await;
    assert_eq!(skills["skills"][0]["name"], "tidy-notes");

    let agent = json!({"name": "Tidy", "systemPrefix": "You are TIDY-AGENT-1.",
                       "availableSkills": ["tidy-notes"], "llm_provider_id": provider_id});
    let created = admin
        .ok(Method::POST, "/api/agent/create", Some(agent.clone()))
        .await;
    let agent_id = created["agent_id"].as_str().unwrap().to_owned();
    let agents = admin.ok(Method::GET, "/api/agent/list", None).await;
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .any(|listed| listed["id"] == agent_id.as_str() && listed["name"] == "Tidy"),
        "{agents}"
    );

    // Used in a stream: the agent's prompt, its skill, its provider's model and key.
    let stream = |content: &str| json!({"agent_id": agent_id, "messages": [{"role": "user", "content": content}]});
    let (status, events) = admin
        .call(
            Method::POST,
            "/api/stream",
            Some(stream(r#"call:load_skill{"skill_name": "tidy-notes"}"#)),
        )
        .await;
    assert_eq!(status, 200, "{events}");
    let events = events.as_array().unwrap().clone();
    assert!(of_type(&events, "error").is_empty(), "{events:?}");
    assert!(
        of_type(&events, "tool_call_result")[0]["content"]
            .to_string()
            .contains("TIDY-RULES-5"),
        "{events:?}"
    );
    let requests = llm.requests().await;
    let first = &requests[requests.len() - 2];
    let system = first["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("TIDY-AGENT-1") && system.contains("tidy-notes: Tidies notes."),
        "{system}"
    );
    assert_eq!(first["model"], "provider-model-1");

    // Changed: the next run sees the new prompt and the new skill text.
    let mut changed = agent.clone();
    changed["systemPrefix"] = json!("You are TIDY-AGENT-2.");
    admin
        .ok(
            Method::PUT,
            &format!("/api/agent/{agent_id}"),
            Some(changed),
        )
        .await;
    admin
        .ok(
            Method::PUT,
            "/api/skills/content",
            Some(json!({"name": "tidy-notes",
                        "content": "---\nname: tidy-notes\ndescription: Tidies notes, v2.\n---\nTIDY-RULES-6"})),
        )
        .await;
    admin
        .ok(
            Method::PUT,
            &format!("/api/llm-provider/update/{provider_id}"),
            Some(json!({"model": "provider-model-2"})),
        )
        .await;
    let (status, _) = admin
        .call(Method::POST, "/api/stream", Some(stream("hello again")))
        .await;
    assert_eq!(status, 200);
    let last = llm.requests().await.pop().unwrap();
    let system = last["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("TIDY-AGENT-2") && system.contains("Tidies notes, v2."),
        "{system}"
    );
    assert_eq!(last["model"], "provider-model-2");

    // Deleted: gone from every list, and a stream naming the agent is a 404.
    admin
        .ok(Method::DELETE, &format!("/api/agent/{agent_id}"), None)
        .await;
    admin
        .ok(Method::DELETE, "/api/skills?name=tidy-notes", None)
        .await;
    let deleted = admin
        .ok(
            Method::DELETE,
            &format!("/api/llm-provider/delete/{provider_id}"),
            None,
        )
        .await;
    assert_eq!(deleted, Value::Null);
    let agents = admin.ok(Method::GET, "/api/agent/list", None).await;
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["id"] != agent_id.as_str()),
        "{agents}"
    );
    assert_eq!(
        admin.ok(Method::GET, "/api/skills", None).await["skills"],
        json!([])
    );
    assert_eq!(
        admin.ok(Method::GET, "/api/llm-provider/list", None).await,
        json!([])
    );
    let (status, _) = admin
        .call(Method::POST, "/api/stream", Some(stream("hello")))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clients_routes_live_and_die_on_sqlite() {
    let llm = MockLlm::start(sage_mock_llm::MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let flags = auth_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start(test_config(&llm.base_url, dir.path(), &flags)).await;
    server.state.ensure_admin().await.unwrap();
    lifecycle(&server.url, &llm).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clients_routes_live_and_die_on_dynamodb() {
    let llm = MockLlm::start(sage_mock_llm::MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace").display().to_string();
    let mut args = auth_flags();
    args.extend(
        [
            "--workspace",
            &workspace,
            "--preset_running_config",
            "/nonexistent/agent_setting.json",
            "--preset_mcp_config",
            "/nonexistent/mcp_setting.json",
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (shim, _) = sage_local_on_dynamodb(dir.path(), &llm.base_url, &args).await;
    lifecycle(&shim.url, &llm).await;
}
