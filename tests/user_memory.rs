//! Long-term user memory (`memory_type: "user"`): the three tools, the memories in every run's
//! system prompt, extraction after a run, the list and forget routes, and no user seeing
//! another's.

use std::time::Duration;

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};

const MEMORY_TOOLS: [&str; 3] = [
    "forget_user_memory",
    "recall_user_memory",
    "remember_user_memory",
];

/// The model calls of runs (memory extraction calls left out), oldest first.
async fn run_requests(llm: &MockLlm) -> Vec<Value> {
    llm.requests()
        .await
        .into_iter()
        .filter(|request| !is_extraction(request))
        .collect()
}

fn is_extraction(request: &Value) -> bool {
    request["messages"][0]["content"]
        .as_str()
        .is_some_and(|text| text.starts_with("Extract long-term memories"))
}

fn system_text(request: &Value) -> String {
    let first = &request["messages"][0];
    if first["role"] == "system" {
        first["content"].as_str().unwrap_or_default().to_owned()
    } else {
        String::new()
    }
}

fn offered_tools(request: &Value) -> Vec<String> {
    let mut names: Vec<String> = request["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|tool| tool["function"]["name"].as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn say(env: &AppEnv, user: &str, text: &str, extra: Value) -> Vec<Value> {
    let mut body = json!({"user_id": user, "messages": [{"role": "user", "content": text}]});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let events = env.app.post_ndjson("/api/stream", &body).await;
    assert_tail(&events, &session_of(&events));
    events
}

async fn memories_of(env: &AppEnv, user: &str) -> Vec<Value> {
    let (status, body) = env
        .app
        .get_json(&format!("/api/memories?user_id={user}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["total"].as_u64().unwrap() as usize,
        body["data"]["memories"].as_array().unwrap().len()
    );
    body["data"]["memories"].as_array().unwrap().clone()
}

/// Extraction runs after `stream_end`; wait until it has been asked and answered.
async fn wait_for_extractions(env: &AppEnv, count: usize) {
    for _ in 0..100 {
        let asked = env
            .llm
            .requests()
            .await
            .iter()
            .filter(|request| is_extraction(request))
            .count();
        if asked >= count {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no memory extraction happened");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remembered_preference_is_in_every_later_run_of_that_user_until_forgotten() {
    let env = AppEnv::with_flags(&["--memory_type", "user"]).await;
    let events = say(
        &env,
        "ada",
        r#"call:remember_user_memory{"memory_key":"tone","content":"Answer tersely","memory_type":"preference","tags":["style"]}"#,
        json!({}),
    )
    .await;
    let results = of_type(&events, "tool_call_result");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["content"]["success"], true, "{}", results[0]);
    let first = run_requests(&env.llm).await;
    assert_eq!(
        offered_tools(&first[0]),
        MEMORY_TOOLS,
        "offered with no allow-list"
    );

    let stored = memories_of(&env, "ada").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["key"], "tone");
    assert_eq!(stored[0]["content"], "Answer tersely");
    assert_eq!(stored[0]["memory_type"], "preference");
    assert_eq!(stored[0]["tags"], json!(["style"]));

    say(&env, "ada", "hello again", json!({})).await;
    let latest = run_requests(&env.llm).await.pop().unwrap();
    assert!(
        system_text(&latest).contains("- [preference] tone: Answer tersely"),
        "{}",
        system_text(&latest)
    );

    // Another user neither sees nor forgets it.
    say(&env, "bob", "hello", json!({})).await;
    let bobs = run_requests(&env.llm).await.pop().unwrap();
    assert!(!system_text(&bobs).contains("Answer tersely"));
    assert!(memories_of(&env, "bob").await.is_empty());
    let (status, body) = env
        .app
        .send_json(Method::DELETE, "/api/memories/tone?user_id=bob", &json!({}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(memories_of(&env, "ada").await.len(), 1);

    let (status, body) = env
        .app
        .send_json(Method::DELETE, "/api/memories/tone?user_id=ada", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["key"], "tone");
    assert!(memories_of(&env, "ada").await.is_empty());
    say(&env, "ada", "and now?", json!({})).await;
    let latest = run_requests(&env.llm).await.pop().unwrap();
    assert!(!system_text(&latest).contains("Answer tersely"));
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_type_in_the_request_or_the_flag_decides_whether_memory_is_used() {
    let env = AppEnv::with_flags(&[]).await;
    say(&env, "ada", "hi", json!({})).await;
    say(&env, "ada", "hi", json!({"memory_type": "user"})).await;
    let requests = run_requests(&env.llm).await;
    assert!(
        offered_tools(&requests[0]).is_empty(),
        "session memory: no tools"
    );
    assert_eq!(offered_tools(&requests[1]), MEMORY_TOOLS);
    wait_for_extractions(&env, 1).await;
    let extractions = env.llm.requests().await.into_iter().filter(is_extraction);
    assert_eq!(extractions.count(), 1, "only the user-memory run is read");

    let env = AppEnv::with_flags(&["--memory_type", "user"]).await;
    say(&env, "ada", "hi", json!({"memory_type": "session"})).await;
    let requests = run_requests(&env.llm).await;
    assert!(offered_tools(&requests[0]).is_empty(), "the request wins");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_run_the_users_new_preferences_are_extracted_once() {
    let env = AppEnv::with_flags(&["--memory_type", "user"]).await;
    say(
        &env,
        "cy",
        "I prefer metric units. How far is a mile?",
        json!({}),
    )
    .await;
    wait_for_extractions(&env, 1).await;
    let stored = memories_of(&env, "cy").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["key"], "prefers_metric_units");
    assert_eq!(stored[0]["content"], "Prefers metric units");
    let first_update = stored[0]["updated_at"].clone();

    // Said again: the same key and content, so nothing changes.
    say(&env, "cy", "Again: I prefer metric units.", json!({})).await;
    wait_for_extractions(&env, 2).await;
    let stored = memories_of(&env, "cy").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["updated_at"], first_update);

    let extraction = env
        .llm
        .requests()
        .await
        .into_iter()
        .rfind(is_extraction)
        .unwrap();
    let known = extraction["messages"][0]["content"].as_str().unwrap();
    assert!(
        known.contains("- prefers_metric_units: Prefers metric units"),
        "the call is told what is known: {known}"
    );
    assert!(memories_of(&env, "ada").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn recall_finds_memories_by_their_words_and_bad_memories_are_refused() {
    let env = AppEnv::with_flags(&["--memory_type", "user"]).await;
    say(
        &env,
        "ada",
        r#"call:remember_user_memory{"memory_key":"editor","content":"Uses helix","memory_type":"note"} call:remember_user_memory{"memory_key":"pet","content":"Has a cat named Miso"}"#,
        json!({}),
    )
    .await;
    let events = say(
        &env,
        "ada",
        r#"call:recall_user_memory{"query":"which editor"}"#,
        json!({}),
    )
    .await;
    let result = &of_type(&events, "tool_call_result")[0]["content"];
    assert_eq!(result["memories"][0]["key"], "editor", "{result}");
    assert_eq!(result["memories"][0]["content"], "Uses helix");

    let long_key = "k".repeat(65);
    let events = say(
        &env,
        "ada",
        &format!(
            r#"call:remember_user_memory{{"memory_key":"{long_key}","content":"x"}} call:remember_user_memory{{"memory_key":"mood","content":"x","memory_type":"feelings"}}"#
        ),
        json!({}),
    )
    .await;
    let results = of_type(&events, "tool_call_result");
    assert_eq!(results.len(), 2);
    let errors: Vec<String> = results.iter().map(|r| r["content"].to_string()).collect();
    assert!(errors[0].contains("memory_key"), "{}", errors[0]);
    assert!(errors[1].contains("memory_type"), "{}", errors[1]);
    let keys: Vec<Value> = memories_of(&env, "ada")
        .await
        .into_iter()
        .map(|memory| memory["key"].clone())
        .collect();
    assert_eq!(keys.len(), 2, "nothing else stored: {keys:?}");

    let (status, body) = env
        .app
        .send_json(Method::DELETE, "/api/memories/nothing-here", &json!({}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], 404, "{body}");
}

/// With a search service configured, memories are indexed there (and removed when forgotten),
/// and recall asks it: a stemless BM25 in process would rank the same, so the test reads the
/// service itself.
#[tokio::test(flavor = "multi_thread")]
async fn with_opensearch_memories_are_indexed_and_recalled_through_it() {
    let url = opensearch_url();
    let env = AppEnv::with_flags(&["--memory_type", "user", "--es_url", &url]).await;
    let user = format!("ada{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    say(
        &env,
        &user,
        r#"call:remember_user_memory{"memory_key":"editor","content":"Uses helix with a dark theme","memory_type":"note"}"#,
        json!({}),
    )
    .await;
    let in_service = || async {
        let (status, found) = call_json(
            reqwest::Method::POST,
            &format!("{url}/sage-search/_search"),
            Some(&json!({"query": {"bool": {"filter": [
                {"term": {"owner": user}},
                {"term": {"collection": "memories"}},
            ]}}})),
        )
        .await;
        assert_eq!(status, 200, "{found}");
        found["hits"]["hits"].as_array().unwrap().clone()
    };
    let stored = in_service().await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["_source"]["parent"], "editor");

    let events = say(
        &env,
        &user,
        r#"call:recall_user_memory{"query":"dark theme"}"#,
        json!({}),
    )
    .await;
    let result = &of_type(&events, "tool_call_result")[0]["content"];
    assert_eq!(result["memories"][0]["key"], "editor", "{result}");

    let (status, body) = env
        .app
        .send_json(
            axum::http::Method::DELETE,
            &format!("/api/memories/editor?user_id={user}"),
            &Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        in_service().await.is_empty(),
        "forgotten in the service too"
    );
}
