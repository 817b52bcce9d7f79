//! A text answer, streamed in both framings, stored before it is sent, kept across restarts.

use std::time::Duration;

use crate::common::*;
use sage_core::store::{EventLog, SqlStore};
use serde_json::{Value, json};

const ANSWER: &str = "This is a mock response from the scripted model.";

#[tokio::test(flavor = "multi_thread")]
async fn text_answer_streams_as_ndjson_with_the_tail() {
    let env = TestEnv::new().await;
    let events = post_ndjson(&env.stream_url(), &user_message("hi")).await;

    let session_id = session_of(&events);
    assert_tail(&events, &session_id);
    assert_eq!(answer_text(&events), ANSWER);
    let deltas = of_type(&events, "do_subtask_result");
    assert!(deltas.len() > 1, "the answer arrives as deltas");
    let message_id = &deltas[0]["message_id"];
    for delta in &deltas {
        assert_eq!(delta["role"], "assistant");
        assert_eq!(
            &delta["message_id"], message_id,
            "one message_id per message"
        );
        assert_eq!(delta["agent_name"], "SimpleAgent");
        assert_eq!(delta["metadata"], json!({}));
    }
    let usage = &events[events.len() - 2]["metadata"]["token_usage"];
    assert_eq!(usage["per_step_info"][0]["step_name"], "direct_execution");
    assert!(usage["total_info"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_alias_of_the_stream_route_answers() {
    let env = TestEnv::new().await;
    for path in ["/api/chat", "/api/web-stream"] {
        let events = post_ndjson(&format!("{}{path}", env.server.url), &user_message("hi")).await;
        assert_eq!(answer_text(&events), ANSWER, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn text_answer_streams_as_sse_with_sequence_ids() {
    let env = TestEnv::new().await;
    let frames = post_sse(&env.stream_url(), &user_message("hi")).await;

    let events: Vec<Value> = frames.iter().map(|frame| frame.data.clone()).collect();
    assert_tail(&events, &session_of(&events));
    assert_eq!(answer_text(&events), ANSWER);
    let ids: Vec<u64> = frames
        .iter()
        .map(|frame| frame.id.parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids increase: {ids:?}"
    );
    for frame in &frames {
        assert_eq!(frame.event, frame.data["type"].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stored_log_holds_exactly_what_was_sent() {
    let env = TestEnv::new().await;
    let frames = post_sse(
        &env.stream_url(),
        &json!({"session_id": "stored-1", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let stored = env
        .server
        .state
        .store()
        .events_after("stored-1", 0)
        .await
        .unwrap();
    let sent: Vec<(u64, Value)> = frames
        .iter()
        .map(|frame| (frame.id.parse().unwrap(), frame.data.clone()))
        .collect();
    let streamed_from_log: Vec<(u64, Value)> = stored
        .iter()
        .filter(|entry| entry.event.is_streamed())
        .map(|entry| (entry.seq, serde_json::to_value(&entry.event).unwrap()))
        .collect();
    assert_eq!(streamed_from_log, sent);
    assert_eq!(
        stored[0].event.content_text(),
        "hi",
        "the user message is logged first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conversation_survives_a_restart_of_the_shim_process() {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let start = |port: u16| {
        ChildGuard(
            std::process::Command::new(workspace_binary("sage-local"))
                .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
                .args(["--db_type", "file", "--db_path"])
                .arg(dir.path())
                .args([
                    "--default_llm_api_key",
                    "k",
                    "--default_llm_api_base_url",
                    &llm.base_url,
                ])
                .current_dir(dir.path())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/api/stream");
    let first = start(port);
    wait_for_port(port, Duration::from_secs(20)).await;
    let body = |text: &str| json!({"session_id": "restart-1", "messages": [{"role": "user", "content": text}]});
    let before = post_ndjson(&url, &body("first question")).await;
    assert_eq!(answer_text(&before), ANSWER);
    drop(first);

    let _second = start(port);
    wait_for_port(port, Duration::from_secs(20)).await;
    let after = post_ndjson(&url, &body("second question")).await;
    assert_tail(&after, "restart-1");

    let requests = llm.requests().await;
    let history = requests.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone();
    let roles_and_text: Vec<(String, String)> = history
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        roles_and_text,
        vec![
            ("user".to_owned(), "first question".to_owned()),
            ("assistant".to_owned(), ANSWER.to_owned()),
            ("user".to_owned(), "second question".to_owned()),
        ],
        "the model sees the conversation from before the restart"
    );
    drop(_second);

    let store = SqlStore::open(&dir.path().join("sage.db")).await.unwrap();
    let log = store.events_after("restart-1", 0).await.unwrap();
    let ends = log
        .iter()
        .filter(|e| e.event.kind == sage_core::wire::EventType::StreamEnd)
        .count();
    assert_eq!(ends, 2, "both runs are in the SQLite file");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_message_replaces_the_original_in_the_history() {
    let env = TestEnv::new().await;
    let url = env.stream_url();
    let send = |id: &str, text: &str| json!({"session_id": "edit-1", "messages": [{"message_id": id, "role": "user", "content": text}]});
    post_ndjson(&url, &send("m1", "original wording")).await;
    post_ndjson(&url, &send("m1", "edited wording")).await;
    let requests = env.llm.requests().await;
    let history = requests.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(history[0]["content"], "edited wording");
    assert!(!history.iter().any(|m| m["content"] == "original wording"));
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_thinking_and_reasoning_content_stream_as_task_analysis() {
    let env = TestEnv::new().await;
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"deep_thinking": true, "messages": [{"role": "user", "content": "plan this think:"}]}),
    )
    .await;
    assert_tail(&events, &session_of(&events));
    let analysis = of_type(&events, "task_analysis");
    assert!(!analysis.is_empty());
    assert!(
        analysis
            .iter()
            .any(|e| e["agent_name"] == "TaskAnalysisAgent")
    );
    let steps = &events[events.len() - 2]["metadata"]["token_usage"]["per_step_info"];
    assert_eq!(steps[0]["step_name"], "task_analysis");
    assert_eq!(steps[1]["step_name"], "direct_execution");
    assert_eq!(answer_text(&events), ANSWER);
}

#[tokio::test(flavor = "multi_thread")]
async fn system_prefix_and_context_reach_the_model() {
    let env = TestEnv::new().await;
    post_ndjson(
        &env.stream_url(),
        &json!({
            "system_prefix": "You are Sage.",
            "system_context": {"city": "Paris"},
            "messages": [{"role": "user", "content": "hi"}],
        }),
    )
    .await;
    let request = env.llm.requests().await.pop().unwrap();
    let system = request["messages"][0].clone();
    assert_eq!(system["role"], "system");
    let text = system["content"].as_str().unwrap();
    assert!(text.starts_with("You are Sage."), "{text}");
    assert!(text.contains("city: Paris"), "{text}");
    assert_eq!(request["stream"], true);
    assert_eq!(request["stream_options"]["include_usage"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_sse_stream_sends_ping_comments() {
    let env = TestEnv::with(
        sage_mock_llm::MockOptions {
            token_delay: Duration::from_millis(1500),
            ..Default::default()
        },
        &["--sse_ping_seconds", "0.5"],
    )
    .await;
    let response = reqwest::Client::new()
        .post(env.stream_url())
        .header("accept", "text/event-stream")
        .json(&user_message("words:2"))
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap();
    assert!(
        body.contains("\n: ping\n") || body.starts_with(": ping\n"),
        "{body}"
    );
    let frames = body.split("\n\n").filter(|f| f.contains("data:")).count();
    assert!(frames >= 4, "the events still arrive: {body}");
}

/// Sage's client sends `agent_mode` simple, multi, fibre or auto: each is accepted. Multi (also
/// Sage's older `multi_agent: true`) decomposes the task first; fibre answers like simple when
/// it delegates nothing; sub-agent ids outside fibre say that they do nothing.
#[tokio::test(flavor = "multi_thread")]
async fn every_agent_mode_is_accepted_and_runs_its_way() {
    let env = TestEnv::new().await;
    let notices = |events: &[Value]| -> Vec<String> {
        of_type(events, "normal")
            .iter()
            .filter_map(|event| event["content"].as_str().map(str::to_owned))
            .collect()
    };
    for (fields, multi, expected) in [
        (json!({"agent_mode": "simple"}), false, vec![]),
        (json!({"agent_mode": "auto"}), false, vec![]),
        (json!({"agent_mode": "multi"}), true, vec![]),
        (json!({"agent_mode": "fibre"}), false, vec![]),
        (
            json!({"agent_mode": "simple", "available_sub_agent_ids": ["helper"]}),
            false,
            vec![
                "available_sub_agent_ids acts in agent_mode fibre only: this run has no sub-agents",
            ],
        ),
        (json!({"multi_agent": true}), true, vec![]),
        (
            json!({"multi_agent": true, "agent_mode": "simple"}),
            false,
            vec![],
        ),
    ] {
        let mut body = user_message("hi");
        for (name, value) in fields.as_object().unwrap() {
            body[name] = value.clone();
        }
        let events = post_ndjson(&env.stream_url(), &body).await;
        assert_eq!(
            !of_type(&events, "task_decomposition").is_empty(),
            multi,
            "{fields}"
        );
        if !multi {
            assert_eq!(answer_text(&events), ANSWER, "{fields}");
        }
        assert_eq!(notices(&events), expected, "{fields}");
        assert_tail(&events, &session_of(&events));
    }
    let (status, body) = send_json(
        reqwest::Method::POST,
        &env.stream_url(),
        &json!({"agent_mode": "swarm", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error_detail"]
            .as_str()
            .unwrap()
            .contains("agent_mode"),
        "{body}"
    );
}

/// `more_suggest` ends the run with one more model call, streamed as `query_suggest` events
/// before the tail, and counted in the usage.
#[tokio::test(flavor = "multi_thread")]
async fn more_suggest_ends_the_run_with_follow_up_suggestions() {
    let env = TestEnv::new().await;
    let mut body = user_message("plan my trip to Lisbon");
    body["more_suggest"] = json!(true);
    let events = post_ndjson(&env.stream_url(), &body).await;
    assert_tail(&events, &session_of(&events));
    assert_eq!(answer_text(&events), ANSWER);
    let suggested: String = of_type(&events, "query_suggest")
        .iter()
        .map(|event| event["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        suggested,
        "\n- More about plan my trip?\n- Can you give an example?"
    );
    let first_suggestion = events
        .iter()
        .position(|event| event["type"] == "query_suggest")
        .unwrap();
    let last_answer = events
        .iter()
        .rposition(|event| event["type"] == "do_subtask_result")
        .unwrap();
    assert!(
        last_answer < first_suggestion,
        "suggestions come after the answer"
    );
    let usage = &of_type(&events, "token_usage")[0]["metadata"]["token_usage"];
    let steps: Vec<&str> = usage["per_step_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["step_name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["direct_execution", "query_suggest"]);

    let plain = post_ndjson(&env.stream_url(), &user_message("no suggestions")).await;
    assert!(of_type(&plain, "query_suggest").is_empty());
}

/// Up to five workflows go into the prompt whole; with more, one model call picks the one that
/// fits the request and only it is in the prompt (none when none fits).
#[tokio::test(flavor = "multi_thread")]
async fn workflows_guide_the_model_and_past_five_one_is_picked() {
    let env = TestEnv::new().await;
    let workflows = |count: usize| -> Value {
        (0..count)
            .map(|i| {
                (
                    format!("flow{i}"),
                    json!([format!("step A of flow{i}"), format!("step B of flow{i}")]),
                )
            })
            .collect::<serde_json::Map<String, Value>>()
            .into()
    };
    let system_of_last_call = || async {
        let requests = env.llm.requests().await;
        let last = requests.last().unwrap();
        last["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    let mut body = user_message("hello");
    body["available_workflows"] = workflows(3);
    post_ndjson(&env.stream_url(), &body).await;
    let system = system_of_last_call().await;
    for i in 0..3 {
        assert!(
            system.contains(&format!("flow{i}:\n  1. step A of flow{i}")),
            "{system}"
        );
    }

    let mut body = user_message("please run flow4 on the data");
    body["available_workflows"] = workflows(7);
    let events = post_ndjson(&env.stream_url(), &body).await;
    let system = system_of_last_call().await;
    assert!(
        system.contains("flow4:\n  1. step A of flow4\n  2. step B of flow4"),
        "{system}"
    );
    assert!(
        !system.contains("flow1:") && !system.contains("flow6:"),
        "{system}"
    );
    let requests = env.llm.requests().await;
    let choice = &requests[requests.len() - 2];
    assert!(
        choice["messages"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Pick the one workflow"),
        "one call picks: {choice}"
    );
    let usage = &of_type(&events, "token_usage")[0]["metadata"]["token_usage"];
    assert_eq!(usage["per_step_info"][0]["step_name"], "workflow_selection");

    let mut body = user_message("just chat");
    body["available_workflows"] = workflows(7);
    post_ndjson(&env.stream_url(), &body).await;
    let system = system_of_last_call().await;
    assert!(!system.contains("Workflows you can follow"), "{system}");
}
