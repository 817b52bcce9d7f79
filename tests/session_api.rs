//! The Session function: listing, reading, sharing, renaming, deleting, status, files, and
//! ownership on every route. In process.

use axum::http::Method;
use serde_json::{Value, json};

use crate::common::*;

async fn run(env: &AppEnv, session: &str, user: &str, text: &str) -> Vec<Value> {
    env.app
        .post_ndjson(
            "/api/stream",
            &json!({"session_id": session, "user_id": user, "messages": [{"role": "user", "content": text}]}),
        )
        .await
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn conversations_are_listed_paged_sorted_and_searched_with_true_counts() {
    let env = AppEnv::new().await;
    run(&env, "c-banana", "lee", "banana bread recipe").await;
    run(&env, "c-apple", "lee", "apple pie").await;
    run(&env, "c-apple", "lee", "with cinnamon please").await;
    run(&env, "c-cherry", "lee", "cherry jam").await;
    run(&env, "c-other", "kim", "apple cider").await;

    let (status, page) = env.app.get_json("/api/conversations?user_id=lee").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        ids(&page),
        ["c-cherry", "c-apple", "c-banana"],
        "newest first"
    );
    let data = &page["data"];
    assert_eq!(data["total"], 3);
    assert_eq!(
        (data["page"].as_u64(), data["page_size"].as_u64()),
        (Some(1), Some(10))
    );
    assert_eq!(data["total_pages"], 1);
    assert_eq!(
        (data["has_next"].as_bool(), data["has_prev"].as_bool()),
        (Some(false), Some(false))
    );
    let apple = data["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == "c-apple")
        .unwrap();
    assert_eq!(apple["title"], "apple pie");
    assert_eq!(apple["user_count"], 2);
    assert_eq!(apple["agent_count"], 2);
    assert_eq!(apple["message_count"], 4);
    // ISO 8601 with offset, which Sage's client reads with `new Date()`; same format, so the
    // strings order as the times do.
    let created = apple["created_at"].as_str().unwrap();
    let updated = apple["updated_at"].as_str().unwrap();
    assert!(
        created.starts_with("20") && created.ends_with("+00:00"),
        "{created}"
    );
    assert!(updated > created, "{created} {updated}");

    let (_, by_messages) = env
        .app
        .get_json("/api/conversations?user_id=lee&sort_by=messages")
        .await;
    assert_eq!(ids(&by_messages)[0], "c-apple");
    let (_, by_title) = env
        .app
        .get_json("/api/conversations?user_id=lee&sort_by=title")
        .await;
    assert_eq!(ids(&by_title), ["c-apple", "c-banana", "c-cherry"]);
    let (_, paged) = env
        .app
        .get_json("/api/conversations?user_id=lee&page=2&page_size=2")
        .await;
    assert_eq!(ids(&paged), ["c-banana"]);
    assert_eq!(paged["data"]["total_pages"], 2);
    assert_eq!(paged["data"]["has_prev"], true);
    assert_eq!(paged["data"]["has_next"], false);
    let (_, found) = env
        .app
        .get_json("/api/conversations?user_id=lee&search=cinnamon")
        .await;
    assert_eq!(ids(&found), ["c-apple"], "search reaches message text");
    let (_, found) = env
        .app
        .get_json("/api/conversations?user_id=lee&search=JAM")
        .await;
    assert_eq!(ids(&found), ["c-cherry"]);

    for bad in [
        "page=0",
        "page_size=0",
        "page_size=101",
        "page=abc",
        "sort_by=size",
    ] {
        let (status, body) = env
            .app
            .get_json(&format!("/api/conversations?user_id=lee&{bad}"))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["code"], 400);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_are_merged_and_shareable_read_only() {
    let env = AppEnv::new().await;
    let events = run(&env, "m-1", "lee", "hello there").await;
    let (status, body) = env
        .app
        .get_json("/api/conversations/m-1/messages?user_id=lee")
        .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["conversation_id"], "m-1");
    assert_eq!(data["message_count"], 2);
    let messages = data["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "hello there");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"], answer_text(&events).as_str());
    assert_eq!(
        messages[1]["message_id"],
        of_type(&events, "do_subtask_result")[0]["message_id"]
    );
    assert_eq!(data["conversation_info"]["title"], "hello there");

    let (status, shared) = env
        .app
        .get_json("/api/share/conversations/m-1/messages")
        .await;
    assert_eq!(status, 200);
    assert_eq!(shared["data"]["messages"], data["messages"]);
    let (status, _) = env
        .app
        .get_json("/api/share/conversations/nope/messages")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rename_during_a_run_outlasts_the_run() {
    let env = AppEnv::with(
        sage_mock_llm::MockOptions {
            token_delay: std::time::Duration::from_millis(40),
            reply_words: 12,
            ..sage_mock_llm::MockOptions::default()
        },
        &[],
    )
    .await;
    let streamed = async {
        let events = run(&env, "r-1", "lee", "the words that would be the title").await;
        (events, std::time::Instant::now())
    };
    let rename = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let answer = env
            .app
            .send_json(
                Method::PUT,
                "/api/conversations/r-1/title?user_id=lee",
                &json!({"title": "Renamed mid-run"}),
            )
            .await;
        (answer, std::time::Instant::now())
    };
    let ((events, ended), ((status, renamed), renamed_at)) = tokio::join!(streamed, rename);
    assert_eq!(
        status, 200,
        "the session exists once its run began: {renamed}"
    );
    assert!(renamed_at < ended, "the rename came while the run streamed");
    assert_eq!(of_type(&events, "stream_end").len(), 1);
    let (status, body) = env
        .app
        .get_json("/api/conversations/r-1/messages?user_id=lee")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["conversation_info"]["title"],
        "Renamed mid-run"
    );
    assert_eq!(
        body["data"]["message_count"], 2,
        "the run's tally is there too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn titles_change_and_deleting_removes_events_and_files() {
    let env = AppEnv::new().await;
    run(
        &env,
        "d-1",
        "lee",
        "a long first message that is well over fifty characters long indeed",
    )
    .await;
    let (_, listed) = env.app.get_json("/api/conversations?user_id=lee").await;
    let title = listed["data"]["list"][0]["title"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(title.chars().count(), 53, "50 characters and ...: {title}");
    assert!(title.ends_with("..."));

    let (status, renamed) = env
        .app
        .send_json(
            Method::PUT,
            "/api/conversations/d-1/title?user_id=lee",
            &json!({"title": "  Renamed  "}),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(
        renamed["data"],
        json!({"session_id": "d-1", "title": "Renamed"})
    );
    let (status, _) = env
        .app
        .send_json(
            Method::PUT,
            "/api/conversations/d-1/title?user_id=lee",
            &json!({"title": " "}),
        )
        .await;
    assert_eq!(status, 400);

    let folder = env.dir.path().join("workspace/d-1");
    std::fs::create_dir_all(folder.join("out")).unwrap();
    std::fs::write(folder.join("out/report.txt"), "report body").unwrap();
    let (status, deleted) = env
        .app
        .send_json(
            Method::DELETE,
            "/api/conversations/d-1?user_id=lee",
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["data"]["session_id"], "d-1");
    assert!(!folder.exists(), "the files are gone");
    assert!(
        env.app
            .state
            .store()
            .events_after("d-1", 0)
            .await
            .unwrap()
            .is_empty()
    );
    let (status, _) = env
        .app
        .get_json("/api/conversations/d-1/messages?user_id=lee")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_listed_and_downloaded_but_never_outside_the_session() {
    let env = AppEnv::new().await;
    run(&env, "f-1", "lee", "make files").await;
    let folder = env.dir.path().join("workspace/f-1");
    std::fs::create_dir_all(folder.join("charts")).unwrap();
    std::fs::write(folder.join("charts/plot.csv"), "x,y\n1,2\n").unwrap();
    std::fs::write(env.dir.path().join("workspace/secret.txt"), "not yours").unwrap();

    let (status, listed) = env
        .app
        .send_json(
            Method::POST,
            "/api/sessions/f-1/file_workspace?user_id=lee",
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let files = listed["data"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["path"], "charts");
    assert_eq!(files[0]["is_directory"], true);
    assert_eq!(files[1]["path"], "charts/plot.csv");
    assert_eq!(files[1]["name"], "plot.csv");
    assert_eq!(files[1]["size"], 8);

    let download = |path: &str| {
        let uri = format!("/api/sessions/f-1/file_workspace/download?user_id=lee&file_path={path}");
        let app = env.app.clone();
        async move { app.get_text(&uri).await }
    };
    let (status, text) = download("charts/plot.csv").await;
    assert_eq!(status, 200);
    assert_eq!(text, "x,y\n1,2\n");
    for escape in ["../secret.txt", "charts/../../secret.txt", "/etc/passwd"] {
        let (status, _) = download(escape).await;
        assert_eq!(status, 400, "{escape}");
    }
    assert_eq!(download("missing.txt").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_interrupt_of_an_idle_session() {
    let env = AppEnv::new().await;
    run(&env, "s-1", "lee", "hi").await;
    let (status, body) = env
        .app
        .send_json(
            Method::POST,
            "/api/sessions/s-1/tasks_status?user_id=lee",
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["status"], "idle");
    let (status, body) = env
        .app
        .send_json(
            Method::POST,
            "/api/sessions/s-1/interrupt?user_id=lee",
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!({"session_id": "s-1", "user_id": "lee", "interrupted": false})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_user_can_touch_nothing_of_another_users_conversations() {
    let env = AppEnv::new().await;
    run(&env, "private", "alice", "secret plans").await;
    let (_, listed) = env.app.get_json("/api/conversations?user_id=bob").await;
    assert_eq!(listed["data"]["total"], 0);
    let (_, found) = env
        .app
        .get_json("/api/conversations?user_id=bob&search=secret")
        .await;
    assert_eq!(found["data"]["total"], 0);
    let attempts = [
        (
            Method::GET,
            "/api/conversations/private/messages?user_id=bob",
            json!({}),
        ),
        (
            Method::PUT,
            "/api/conversations/private/title?user_id=bob",
            json!({"title": "mine now"}),
        ),
        (
            Method::POST,
            "/api/sessions/private/interrupt?user_id=bob",
            json!({}),
        ),
        (
            Method::POST,
            "/api/sessions/private/tasks_status?user_id=bob",
            json!({}),
        ),
        (
            Method::POST,
            "/api/sessions/private/file_workspace?user_id=bob",
            json!({}),
        ),
        (
            Method::DELETE,
            "/api/conversations/private?user_id=bob",
            json!({}),
        ),
    ];
    for (method, path, body) in attempts {
        let (status, response) = env.app.send_json(method.clone(), path, &body).await;
        assert_eq!(status, 403, "{method} {path}: {response}");
        assert_eq!(response["code"], 403);
    }
    let (status, body) = env
        .app
        .get_json("/api/conversations/private/messages?user_id=alice")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["conversation_info"]["title"], "secret plans",
        "nothing changed"
    );
}
