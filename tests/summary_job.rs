//! The summary job: it summarizes each session whose log grew since its summary, once per state
//! (concurrent jobs, a killed job run again), skips sessions with a run in progress, and its
//! summary shows in the conversation list and the session's record and feeds the next run's
//! prompt. Run in process, by `sage-local jobs summarize`, and on `--summary_interval_seconds`.

use std::time::Duration;

use crate::common::*;

use sage_mock_llm::MockOptions;
use serde_json::{Value, json};

const JOB_TIME: Duration = Duration::from_secs(60);

async fn ask(env: &AppEnv, session_id: &str, user: &str, text: &str) {
    let events = env
        .app
        .post_ndjson(
            "/api/stream",
            &json!({"session_id": session_id, "user_id": user,
                    "messages": [{"role": "user", "content": text}]}),
        )
        .await;
    assert_tail(&events, session_id);
}

async fn summarize(app: &sage_core::App, payload: Value) -> Value {
    let report = app.run_job(payload, JOB_TIME).await.expect("the job runs");
    serde_json::to_value(report).unwrap()
}

fn ids(report: &Value, field: &str) -> Vec<String> {
    let mut ids: Vec<String> = report[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {report}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn summary_of(env: &AppEnv, session_id: &str) -> Option<String> {
    env.app
        .state
        .store()
        .session_summary(session_id)
        .await
        .unwrap()
        .map(|record| record.summary)
}

fn summary_calls(requests: &[Value]) -> usize {
    requests
        .iter()
        .filter(|request| {
            request["messages"][0]["content"]
                .as_str()
                .is_some_and(|text| text.starts_with("Summarize this conversation"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_summary_covers_the_new_turns_shows_in_the_list_and_feeds_the_next_prompt() {
    let env = AppEnv::with_flags(&[]).await;
    ask(&env, "job-cats", "ada", "tell me about cats").await;
    ask(&env, "job-dogs", "ada", "and dogs").await;

    let report = summarize(&env.app.state, json!({"job": "summarize"})).await;
    assert_eq!(
        ids(&report, "summarized"),
        ["job-cats", "job-dogs"],
        "{report}"
    );
    assert_eq!(report["failed"], json!([]));
    assert_eq!(report["complete"], true);
    assert_eq!(
        summary_of(&env, "job-cats").await.as_deref(),
        Some("Summary: tell me about cats")
    );

    let (status, list) = env
        .app
        .get_json("/api/conversations?user_id=ada&page_size=10")
        .await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<(&str, &str)> = list["data"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["session_id"].as_str().unwrap(),
                item["summary"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        listed.contains(&("job-dogs", "Summary: and dogs")),
        "{listed:?}"
    );

    // Nothing new: nothing to do, no model call.
    let calls = summary_calls(&env.llm.requests().await);
    let report = summarize(&env.app.state, json!({"job": "summarize"})).await;
    assert!(ids(&report, "summarized").is_empty(), "{report}");
    assert_eq!(summary_calls(&env.llm.requests().await), calls);

    // The next run has the summary first in its history; the job then builds on it.
    ask(&env, "job-cats", "ada", "how long do they sleep").await;
    let prompt = env.llm.requests().await.pop().unwrap();
    let system = prompt["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("Summary of the earlier conversation: Summary: tell me about cats"),
        "{system}"
    );
    let report = summarize(&env.app.state, json!({"job": "summarize"})).await;
    assert_eq!(ids(&report, "summarized"), ["job-cats"]);
    let (_, conversation) = env
        .app
        .get_json("/api/conversations/job-cats/messages?user_id=ada")
        .await;
    assert_eq!(
        conversation["data"]["conversation_info"]["summary"],
        "Summary: tell me about cats / how long do they sleep"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_jobs_at_once_leave_one_summary_per_session() {
    let env = AppEnv::with(
        MockOptions {
            token_delay: Duration::from_millis(20),
            ..MockOptions::default()
        },
        &[],
    )
    .await;
    let sessions: Vec<String> = (0..6).map(|n| format!("job-pair-{n}")).collect();
    for (n, id) in sessions.iter().enumerate() {
        ask(&env, id, "ada", &format!("question {n}")).await;
    }
    let (first, second) = tokio::join!(
        summarize(&env.app.state, json!({"job": "summarize"})),
        summarize(&env.app.state, json!({"job": "summarize"})),
    );
    let mut written = ids(&first, "summarized");
    written.extend(ids(&second, "summarized"));
    written.sort();
    assert_eq!(
        written, sessions,
        "each session summarized by exactly one job"
    );
    for (n, id) in sessions.iter().enumerate() {
        assert_eq!(
            summary_of(&env, id).await,
            Some(format!("Summary: question {n}"))
        );
    }
    let again = summarize(&env.app.state, json!({"job": "summarize"})).await;
    assert!(ids(&again, "summarized").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_killed_halfway_is_completed_by_the_next_run() {
    let env = AppEnv::with(
        MockOptions {
            token_delay: Duration::from_millis(40),
            ..MockOptions::default()
        },
        &[],
    )
    .await;
    let sessions: Vec<String> = (0..4).map(|n| format!("job-kill-{n}")).collect();
    for (n, id) in sessions.iter().enumerate() {
        ask(&env, id, "ada", &format!("topic {n}")).await;
    }
    let app = env.app.state.clone();
    let job = tokio::spawn(async move { app.run_job(json!({"job": "summarize"}), JOB_TIME).await });
    for _ in 0..200 {
        if summary_of(&env, &sessions[0]).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    job.abort();
    let _ = job.await;
    let done: Vec<bool> =
        futures_util::future::join_all(sessions.iter().map(|id| summary_of(&env, id)))
            .await
            .into_iter()
            .map(|summary| summary.is_some())
            .collect();
    assert!(done[0] && !done[3], "killed halfway: {done:?}");

    let report = summarize(&env.app.state, json!({"job": "summarize"})).await;
    let rest: Vec<String> = sessions
        .iter()
        .zip(&done)
        .filter(|(_, done)| !**done)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(ids(&report, "summarized"), rest);
    for (n, id) in sessions.iter().enumerate() {
        assert_eq!(
            summary_of(&env, id).await,
            Some(format!("Summary: topic {n}"))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_with_a_run_in_progress_is_skipped_and_taken_next_time() {
    let env = AppEnv::with_flags(&[]).await;
    ask(&env, "job-busy", "ada", "a long task").await;
    let store = env.app.state.store();
    assert!(
        store
            .try_lock_run("job-busy", "another-run", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let report = summarize(&env.app.state, json!({"job": "summarize"})).await;
    assert_eq!(ids(&report, "running"), ["job-busy"]);
    assert!(ids(&report, "summarized").is_empty());
    assert!(summary_of(&env, "job-busy").await.is_none());

    store
        .release_run_lock("job-busy", "another-run")
        .await
        .unwrap();
    let report = summarize(&env.app.state, json!({"job": "summarize"})).await;
    assert_eq!(ids(&report, "summarized"), ["job-busy"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn named_sessions_limits_and_cursors_bound_a_run_and_bad_payloads_change_nothing() {
    let env = AppEnv::with_flags(&[]).await;
    for id in ["job-n-a", "job-n-b", "job-n-c"] {
        ask(&env, id, "ada", id).await;
    }
    ask(&env, "job-n-bob", "bob", "bob's").await;
    let app = &env.app.state;

    for (payload, says) in [
        (json!({"job": "reindex"}), "unknown job `reindex`"),
        (json!({"job": "summarize", "limit": 0}), "limit"),
        (json!({"job": "summarize", "sessionids": []}), "sessionids"),
        (
            json!({"job": "summarize", "session_ids": ["job-n-bob"], "user_id": "ada"}),
            "another user",
        ),
        (
            json!({"job": "summarize", "session_ids": ["job-n-a", "no-such"]}),
            "no session no-such",
        ),
    ] {
        let error = app
            .run_job(payload.clone(), JOB_TIME)
            .await
            .expect_err("refused");
        assert!(error.to_string().contains(says), "{payload}: {error}");
    }
    assert!(
        summary_of(&env, "job-n-a").await.is_none(),
        "nothing changed"
    );

    let report = summarize(
        app,
        json!({"job": "summarize", "session_ids": ["job-n-b"], "user_id": "ada"}),
    )
    .await;
    assert_eq!(ids(&report, "summarized"), ["job-n-b"]);

    let report = summarize(app, json!({"job": "summarize", "limit": 1})).await;
    assert_eq!(ids(&report, "summarized"), ["job-n-a"]);
    assert_eq!(report["complete"], false);
    let cursor = report["next_cursor"]
        .as_str()
        .expect("stopped at its limit");
    let report = summarize(
        app,
        json!({"job": "summarize", "cursor": cursor, "user_id": "ada"}),
    )
    .await;
    assert_eq!(ids(&report, "summarized"), ["job-n-c"], "{report}");
    assert!(summary_of(&env, "job-n-bob").await.is_none(), "ada's only");
}

#[tokio::test(flavor = "multi_thread")]
async fn sage_local_runs_the_job_from_the_command_line_and_on_a_timer() {
    let llm = MockLlm::start(MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().display().to_string();
    let flags = |extra: &[&str]| {
        let mut flags = vec![
            "--db_type".to_owned(),
            "file".to_owned(),
            "--db_path".to_owned(),
            db_path.clone(),
            "--default_llm_api_key".to_owned(),
            "test-key".to_owned(),
            "--default_llm_api_base_url".to_owned(),
            llm.base_url.clone(),
        ];
        flags.extend(extra.iter().map(|flag| (*flag).to_owned()));
        flags
    };
    let server = ShimProcess::start(
        dir.path(),
        &flags(&["--summary_interval_seconds", "1"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    )
    .await;
    let events = post_ndjson(
        &format!("{}/api/stream", server.url),
        &json!({"session_id": "job-timer", "messages": [{"role": "user", "content": "tick"}]}),
    )
    .await;
    assert_tail(&events, "job-timer");
    let mut listed = Value::Null;
    for _ in 0..100 {
        let (_, list) = get_json(&format!("{}/api/conversations", server.url)).await;
        listed = list["data"]["list"][0]["summary"].clone();
        if !listed.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed, "Summary: tick", "the timer summarized it");
    drop(server);

    let app = App::new(test_config(&llm.base_url, dir.path(), &[])).await;
    let events = app
        .post_ndjson(
            "/api/stream",
            &json!({"session_id": "job-cli", "messages": [{"role": "user", "content": "by hand"}]}),
        )
        .await;
    assert_tail(&events, "job-cli");
    drop(app);
    let mut args = vec!["summarize".to_owned()];
    args.extend(["--session".to_owned(), "job-cli".to_owned()]);
    args.extend(flags(&[]));
    let report = sage_local_job(dir.path(), &args, &[]).await;
    assert_eq!(report["summarized"], json!(["job-cli"]), "{report}");

    let output = std::process::Command::new(workspace_binary("sage-local"))
        .args(["jobs", "reindex"])
        .args(flags(&[]))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("unknown job `reindex`"), "{said}");
}
