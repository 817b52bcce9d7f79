//! `/api/conversations?search=` through the search index, on the embedded index and on
//! OpenSearch (osmem-server): what a run wrote is found, a rename is found by its new title, a
//! deleted conversation is gone, and nobody finds another's. An unreachable search service
//! answers 503 on the routes that need it, and runs go on without it.

use axum::http::Method;
use serde_json::{Value, json};

use crate::common::*;

async fn run(env: &AppEnv, session: &str, user: &str, text: &str) {
    let events = env
        .app
        .post_ndjson(
            "/api/stream",
            &json!({"session_id": session, "user_id": user, "messages": [{"role": "user", "content": text}]}),
        )
        .await;
    assert_tail(&events, session);
}

async fn found(env: &AppEnv, user: &str, search: &str) -> Vec<String> {
    let (status, body) = env
        .app
        .get_json(&format!(
            "/api/conversations?user_id={user}&search={search}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<String> = body["data"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn searched_through_the_index(flags: &[&str]) {
    let env = AppEnv::with_flags(flags).await;
    // Unique words per test: the OpenSearch index is shared by every test of the run.
    let word = format!("zest{}", uuid::Uuid::new_v4().simple());
    let user = format!("lee{}", &word[4..12]);
    run(&env, "cs-apple", &user, &format!("apple pie with {word}")).await;
    run(&env, "cs-bread", &user, "banana bread recipe").await;
    run(&env, "cs-other", "kim", &format!("apple cider and {word}")).await;

    assert_eq!(
        found(&env, &user, &word).await,
        ["cs-apple"],
        "message text is found"
    );
    assert_eq!(found(&env, &user, "BANANA").await, ["cs-bread"]);
    assert!(found(&env, &user, "zebra").await.is_empty());
    assert_eq!(
        found(&env, &user, &format!("pie+{word}")).await,
        ["cs-apple"],
        "every word must match"
    );
    assert!(
        found(&env, &user, &format!("banana+{word}"))
            .await
            .is_empty()
    );
    assert_eq!(
        found(&env, "kim", &word).await,
        ["cs-other"],
        "each finds their own"
    );

    let (status, body) = env
        .app
        .send_json(
            Method::PUT,
            &format!("/api/conversations/cs-bread/title?user_id={user}"),
            &json!({"title": "sourdough notes"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        found(&env, &user, "sourdough").await,
        ["cs-bread"],
        "the new title is found"
    );

    let (status, body) = env
        .app
        .send_json(
            Method::DELETE,
            &format!("/api/conversations/cs-apple?user_id={user}"),
            &Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        found(&env, &user, &word).await.is_empty(),
        "a deleted conversation is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conversations_are_searched_through_the_embedded_index() {
    searched_through_the_index(&[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conversations_are_searched_through_opensearch() {
    let url = opensearch_url();
    searched_through_the_index(&["--es_url", &url]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_search_service_is_a_503_where_it_is_needed_and_runs_go_on() {
    let down = format!("http://127.0.0.1:{}", free_port());
    let env = AppEnv::with_flags(&["--es_url", &down]).await;
    run(&env, "cs-down", "lee", "still answered").await;

    let (status, body) = env.app.get_json("/api/conversations?user_id=lee").await;
    assert_eq!(status, 200, "listing needs no search: {body}");
    let (status, body) = env
        .app
        .get_json("/api/conversations?user_id=lee&search=answered")
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], 503);
    assert!(
        body["message"].as_str().unwrap().contains("search"),
        "{body}"
    );

    let (status, created) = env
        .app
        .send_json(
            Method::POST,
            "/api/knowledge-base/add?user_id=lee",
            &json!({"name": "notes"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let (status, body) = env
        .app
        .send_json(
            Method::POST,
            "/api/knowledge-base/retrieve?user_id=lee",
            &json!({"kdb_id": created["data"]["kdb_id"], "query": "notes"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no internals: {body}"
    );

    let (status, ready) = env.app.get_json("/api/health/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["data"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |line| line.as_str().unwrap().starts_with("search (OpenSearch at")
                    && line.as_str().unwrap().ends_with("unreachable")
            ),
        "{ready}"
    );
}
