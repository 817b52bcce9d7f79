//! `sage-stream`'s deployed bootstrap under cargo-lambda's emulator, called at its Function URL
//! path.

use std::time::Duration;

use crate::common::*;
use sage_mock_llm::MockOptions;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn sage_stream_streams_events_incrementally_through_the_emulator() {
    let delay = Duration::from_millis(150);
    let llm = MockLlm::start(MockOptions {
        token_delay: delay,
        ..Default::default()
    })
    .await;
    let port = free_port();
    let env_vars = [
        ("SAGE_DEFAULT_LLM_API_KEY", "test-key".to_owned()),
        ("SAGE_DEFAULT_LLM_API_BASE_URL", llm.base_url.clone()),
        // One stream needs no store shared with another process.
        ("SAGE_DB_TYPE", "memory".to_owned()),
        (
            "SAGE_PRESET_RUNNING_CONFIG_PATH",
            "/nonexistent.json".to_owned(),
        ),
    ]
    .map(|(name, value)| (name.to_owned(), value));
    let _emulator = start_lambda_apis(port).await;
    // The bootstrap `cargo lambda build -p sage-stream` made: built alone, as it is deployed.
    let _function = start_bootstrap("sage-stream", port, &env_vars);

    let url = format!("http://127.0.0.1:{port}/lambda-url/sage-stream/api/stream");
    let client = reqwest::Client::new();
    let response = client
        .post(&url)
        .json(&user_message("words:6"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let arrivals = read_arrivals(response).await;
    let events: Vec<Value> = arrivals.iter().map(|(_, event)| event.clone()).collect();
    assert_tail(&events, &session_of(&events));
    assert_eq!(answer_text(&events), "tok0 tok1 tok2 tok3 tok4 tok5 ");
    assert_incremental(&arrivals, delay * 2);
}

/// A run past its invocation's deadline hands off to a fresh invocation of the function (an
/// asynchronous `Invoke` of itself, through the emulator's Lambda API); a resume follows it to
/// its end, and it comes to what an uninterrupted run does.
#[tokio::test(flavor = "multi_thread")]
async fn sage_stream_hands_a_run_off_to_a_fresh_invocation_of_itself() {
    use crate::hand_off::*;
    let llm = MockLlm::start(MockOptions::default()).await;
    let workspace = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env_vars = functions_env(
        &llm.base_url,
        &fresh_name("handoff"),
        workspace.path(),
        port,
    );
    env_vars.push(("SAGE_RUN_DEADLINE_SECONDS".into(), EVERY_TURN[1].to_owned()));
    let _emulator = start_lambda_apis(port).await;
    // The emulator answers an asynchronous Invoke only once its invocation is over, so each
    // invocation that hands off waits for the next: one instance per invocation.
    let _instances: Vec<ChildGuard> = (0..3)
        .map(|_| start_bootstrap("sage-stream", port, &env_vars))
        .collect();

    let base = format!("http://127.0.0.1:{port}/lambda-url/sage-stream");
    let (first, path) = first_invocation(&base, &two_turns("lw-1"), "lw-1").await;
    let rest = follow_on(&base, &path).await;
    assert_eq!(rest.last().unwrap()["type"], "stream_end", "{rest:#?}");
    let all: Vec<Value> = first.into_iter().chain(rest).collect();
    assert_eq!(hand_offs(&all).len(), 2, "{all:#?}");
    assert_eq!(of_type(&all, "token_usage").len(), 3, "{all:#?}");
    assert_eq!(transcript(&all), transcript(&uninterrupted("lw-1").await));
}

/// The Jobs function's `runs` job, invoked as its schedule does, finds a run killed past its
/// checkpoint that nobody follows and continues it in the Stream function (an asynchronous
/// `Invoke` of `STREAM_FUNCTION_NAME` through the emulator's Lambda API).
#[tokio::test(flavor = "multi_thread")]
async fn sage_jobs_continues_a_dead_run_in_the_stream_function() {
    let crate::paused_runs::KilledRun { llm, dir, table } =
        crate::paused_runs::killed_run("lw-sweep", &["--run_sweep_seconds", "0"]).await;

    let port = free_port();
    let mut env_vars = functions_env(&llm.base_url, &table, dir.path(), port);
    env_vars.extend([
        ("SAGE_RUN_LEASE_SECONDS".into(), "1".into()),
        ("STREAM_FUNCTION_NAME".into(), "sage-stream".into()),
    ]);
    let _emulator = start_lambda_apis(port).await;
    let _stream = start_bootstrap("sage-stream", port, &env_vars);
    let _jobs = start_bootstrap("sage-jobs", port, &env_vars);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let report: Value = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/2015-03-31/functions/sage-jobs/invocations"
        ))
        .json(&serde_json::json!({"job": "runs"}))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        report["continued"],
        serde_json::json!(["lw-sweep"]),
        "{report}"
    );

    let response = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/lambda-url/sage-stream/api/stream/resume/lw-sweep?user_id=ada"
        ))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    let events = ndjson_events(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap()["type"], "stream_end", "{events:#?}");
    let answers = texts_by_message(&events, "do_subtask_result");
    assert_eq!(answers.len(), 2, "{events:#?}");
    assert!(answers[1].contains("\"success\":true"), "{answers:?}");
    assert_eq!(of_type(&events, "tool_call_result").len(), 1, "{events:#?}");
}

/// The environment of bootstraps under the emulator at `port`: the scripted model, DynamoDB
/// table `table` on moto (the invocations are processes of their own and share the store, as in
/// the cloud), workspaces in `workspace`, and the emulator's Lambda API for their invokes.
fn functions_env(
    llm_base_url: &str,
    table: &str,
    workspace: &std::path::Path,
    port: u16,
) -> Vec<(String, String)> {
    let mut env_vars: Vec<(String, String)> = [
        ("SAGE_DEFAULT_LLM_API_KEY", "test-key".to_owned()),
        ("SAGE_DEFAULT_LLM_API_BASE_URL", llm_base_url.to_owned()),
        ("SAGE_DB_TYPE", "dynamodb".to_owned()),
        ("SAGE_DYNAMODB_ENDPOINT", dynamodb_endpoint()),
        ("SAGE_DYNAMODB_TABLE", table.to_owned()),
        ("SAGE_WORKSPACE_PATH", workspace.display().to_string()),
        (
            "SAGE_PRESET_RUNNING_CONFIG_PATH",
            "/nonexistent.json".to_owned(),
        ),
        (
            "AWS_ENDPOINT_URL_LAMBDA",
            format!("http://127.0.0.1:{port}"),
        ),
    ]
    .map(|(name, value)| (name.to_owned(), value))
    .into();
    env_vars.extend(
        MOTO_ENV
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    );
    env_vars
}
