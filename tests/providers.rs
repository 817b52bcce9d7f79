//! Stored LLM providers: created with keys that never come back but masked, used by a stream
//! (the model sees the provider's key and model), changed with the masked key left as it was,
//! made the default, named by an agent, deleted; out of other users' reach.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const PROVIDER_KEY: &str = "sk-provider-key-9876abcd";
const JWT_KEY: &str = "providers-test-jwt-key-0123456789abcdef";

async fn call(env: &TestEnv, method: Method, path: &str, body: Option<Value>) -> (u16, String) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", env.server.url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn stream(env: &TestEnv, body: Value) -> (u16, Vec<Value>) {
    let (status, text) = call(env, Method::POST, "/api/stream", Some(body)).await;
    let events = if status == 200 {
        ndjson_events(&text)
    } else {
        vec![serde_json::from_str(&text).unwrap()]
    };
    (status, events)
}

fn hello(user: &str, extra: Value) -> Value {
    let mut body = json!({"user_id": user, "messages": [{"role": "user", "content": "hello"}]});
    for (name, value) in extra.as_object().unwrap() {
        body[name] = value.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_is_saved_sealed_used_changed_made_default_and_deleted() {
    // The model takes only the provider's key; the server's default key is wrong.
    let env = TestEnv::with(
        sage_mock_llm::MockOptions {
            api_key: Some(PROVIDER_KEY.into()),
            ..Default::default()
        },
        &["--jwt_key", JWT_KEY],
    )
    .await;
    let (status, events) = stream(&env, hello("lee", json!({}))).await;
    assert_eq!(status, 200);
    assert!(
        !of_type(&events, "error").is_empty(),
        "the default key is refused"
    );

    let create = json!({
        "name": "Mine", "base_url": env.llm.base_url, "api_keys": [PROVIDER_KEY],
        "model": "provider-model-x", "max_tokens": 512, "temperature": 0.5
    });
    let (status, text) = call(
        &env,
        Method::POST,
        "/api/llm-provider/create?user_id=lee",
        Some(create),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains(PROVIDER_KEY));
    let created: Value = serde_json::from_str(&text).unwrap();
    let id = created["data"]["id"].as_str().unwrap().to_owned();

    let (status, text) = call(
        &env,
        Method::GET,
        "/api/llm-provider/list?user_id=lee",
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        !text.contains(PROVIDER_KEY),
        "keys never come back in clear: {text}"
    );
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["data"][0]["api_keys"], json!(["****abcd"]));
    assert_eq!(list["data"][0]["model"], "provider-model-x");
    assert_eq!(list["data"][0]["is_default"], false);
    let (_, text) = call(
        &env,
        Method::GET,
        "/api/llm-provider/list?user_id=kim",
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["data"],
        json!([])
    );

    let (status, events) = stream(&env, hello("lee", json!({"llm_provider_id": id}))).await;
    assert_eq!(status, 200);
    assert!(of_type(&events, "error").is_empty(), "{events:?}");
    assert!(!answer_text(&events).is_empty());
    let seen = env.llm.requests().await.pop().unwrap();
    assert_eq!(seen["model"], "provider-model-x");
    assert_eq!(seen["max_tokens"], 512);

    let (status, events) = stream(&env, hello("kim", json!({"llm_provider_id": id}))).await;
    assert_eq!(status, 404, "another user's provider: {events:?}");

    // The masked key sent back stays the key; only the model changes.
    let change = json!({"model": "provider-model-y", "api_keys": ["****abcd"], "is_default": true});
    let (status, text) = call(
        &env,
        Method::PUT,
        &format!("/api/llm-provider/update/{id}?user_id=lee"),
        Some(change),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, events) = stream(&env, hello("lee", json!({}))).await;
    assert_eq!(status, 200);
    assert!(
        of_type(&events, "error").is_empty(),
        "the default provider answers: {events:?}"
    );
    assert_eq!(
        env.llm.requests().await.pop().unwrap()["model"],
        "provider-model-y"
    );

    // An agent names it; an agent cannot name a provider its owner does not have.
    let agent = json!({"name": "Via provider", "llm_provider_id": id});
    let (status, text) = call(
        &env,
        Method::POST,
        "/api/agent/create?user_id=lee",
        Some(agent.clone()),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = call(
        &env,
        Method::POST,
        "/api/agent/create?user_id=kim",
        Some(agent),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("llm_provider_id"));

    let (status, text) = call(
        &env,
        Method::DELETE,
        &format!("/api/llm-provider/delete/{id}?user_id=kim"),
        None,
    )
    .await;
    assert_eq!(status, 404, "{text}");
    let (status, text) = call(
        &env,
        Method::DELETE,
        &format!("/api/llm-provider/delete/{id}?user_id=lee"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["data"],
        Value::Null
    );
    let (status, _) = stream(&env, hello("lee", json!({"llm_provider_id": id}))).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_provider_settings_are_refused_by_name_and_keys_need_a_jwt_key() {
    let env = TestEnv::with(
        sage_mock_llm::MockOptions::default(),
        &["--jwt_key", JWT_KEY],
    )
    .await;
    let good = json!({"name": "Mine", "base_url": "https://api.example.test/v1", "api_keys": ["sk-123456789"], "model": "m"});
    for (change, field) in [
        (json!({"base_url": "ftp://example.test"}), "base_url"),
        (json!({"api_keys": []}), "api_keys"),
        (json!({"api_keys": ["****6789"]}), "api_keys"),
        (json!({"name": ""}), "name"),
        (json!({"model": ""}), "model"),
        (json!({"temperature": 3.5}), "temperature"),
        (json!({"top_p": -0.1}), "top_p"),
    ] {
        let mut body = good.clone();
        for (name, value) in change.as_object().unwrap() {
            body[name] = value.clone();
        }
        let (status, text) = call(
            &env,
            Method::POST,
            "/api/llm-provider/create?user_id=lee",
            Some(body),
        )
        .await;
        assert_eq!(status, 400, "{change}: {text}");
        assert!(text.contains(field), "{change}: {text}");
    }
    let (_, text) = call(
        &env,
        Method::GET,
        "/api/llm-provider/list?user_id=lee",
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["data"],
        json!([]),
        "nothing saved"
    );

    let keyless = TestEnv::new().await;
    let (status, text) = call(
        &keyless,
        Method::POST,
        "/api/llm-provider/create?user_id=lee",
        Some(good),
    )
    .await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("--jwt_key"), "{text}");
}
