//! Simple mode as Sage runs it (`sage-client.md` §5): the completion judge after a text turn,
//! `complete_task` ending a run, `ask_followup_question` ending it waiting for the user, the loop
//! cap, and the tool selection over 15 tools.

use serde_json::{Value, json};

use crate::common::*;

const CAP_NOTICE: &str = "最大循环次数";

async fn judge_requests(env: &TestEnv) -> usize {
    env.llm
        .requests()
        .await
        .iter()
        .filter(|request| is_judge_request(request))
        .count()
}

async fn run(env: &TestEnv, body: Value) -> Vec<Value> {
    let events = post_ndjson(&env.stream_url(), &body).await;
    assert_tail(&events, body["session_id"].as_str().unwrap());
    assert!(of_type(&events, "error").is_empty(), "{events:#?}");
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn the_judge_keeps_a_run_with_tools_going_until_it_says_done() {
    let env = TestEnv::new().await;
    let events = run(
        &env,
        json!({"session_id": "sm-judge", "available_tools": ["todo_read"],
               "messages": [{"role": "user", "content": "judge:2 words:3"}]}),
    )
    .await;
    assert_eq!(
        texts_by_message(&events, "do_subtask_result"),
        ["tok0 tok1 tok2 ", "tok0 tok1 tok2 "],
        "a second turn after the judge said the task goes on"
    );
    assert_eq!(judge_requests(&env).await, 2);
    assert_eq!(
        usage_steps(&events),
        [
            "direct_execution",
            "completion_judge",
            "direct_execution",
            "completion_judge"
        ]
    );
    assert!(texts_by_message(&events, "normal").is_empty(), "not capped");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_judge_that_never_says_done_stops_at_the_loop_cap() {
    let env = TestEnv::new().await;
    let events = run(
        &env,
        json!({"session_id": "sm-cap", "available_tools": ["todo_read"], "max_loop_count": 3,
               "messages": [{"role": "user", "content": "judge:never words:2"}]}),
    )
    .await;
    assert_eq!(texts_by_message(&events, "do_subtask_result").len(), 3);
    let notices = texts_by_message(&events, "normal");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains(CAP_NOTICE), "{notices:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_judge_answer_that_is_not_json_counts_as_done() {
    let env = TestEnv::new().await;
    let events = run(
        &env,
        json!({"session_id": "sm-garbage", "available_tools": ["todo_read"], "max_loop_count": 5,
               "messages": [{"role": "user", "content": "judge:garbage words:2"}]}),
    )
    .await;
    assert_eq!(texts_by_message(&events, "do_subtask_result").len(), 1);
    assert_eq!(judge_requests(&env).await, 1);
    assert!(texts_by_message(&events, "normal").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_without_tools_ends_on_its_answer_without_a_judge() {
    let env = TestEnv::new().await;
    let events = run(
        &env,
        json!({"session_id": "sm-plain",
               "messages": [{"role": "user", "content": "judge:never words:2"}]}),
    )
    .await;
    assert_eq!(texts_by_message(&events, "do_subtask_result").len(), 1);
    assert_eq!(env.llm.requests().await.len(), 1);
}

/// `complete_task` (an MCP tool, as Sage's `sage_mcp` offers it) and `sys_finish_task` (the
/// built-in, when the agent names it) each end a simple run after their turn.
#[tokio::test(flavor = "multi_thread")]
async fn complete_task_ends_the_run_after_its_turn() {
    let env = TestEnv::new().await;
    for (session, finisher, call, said) in [
        (
            "sm-complete",
            "complete_task",
            r#"call:complete_task{"result":"all done"}"#,
            "completed: all done",
        ),
        (
            "sm-finish",
            "sys_finish_task",
            r#"call:sys_finish_task{"status":"success","result":"all finished"}"#,
            "all finished",
        ),
    ] {
        let events = run(
            &env,
            json!({"session_id": session, "max_loop_count": 6,
                   "available_tools": ["echo", finisher],
                   "extra_mcp_config": {"peer": stdio_peer(json!({}))},
                   "messages": [{"role": "user", "content": format!(r#"call-forever:echo{{"text":"x"}} {call}"#)}]}),
        )
        .await;
        assert_eq!(
            of_type(&events, "tool_call").len(),
            1,
            "{finisher}: without the finishing call the model would call echo until the cap"
        );
        let results: Vec<String> = of_type(&events, "tool_call_result")
            .iter()
            .map(|event| event["content"].to_string())
            .collect();
        assert!(results.iter().any(|r| r.contains(said)), "{results:?}");
        assert!(
            texts_by_message(&events, "normal").is_empty(),
            "{finisher}: not capped"
        );
        assert_eq!(
            texts_by_message(&events, "final_answer").len(),
            1,
            "{finisher}: ended on a tool result: summarised"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_fifteen_tools_a_selection_step_picks_what_the_request_needs() {
    let env = TestEnv::new().await;
    let mut allowed = vec![
        "add",
        "complete_task",
        "echo",
        "fail",
        "rendezvous",
        "repeat",
        "sleep",
    ];
    allowed.extend(crate::builtin_tools::FILE_TOOLS);
    allowed.extend([
        "get-sum",
        "get-tiny-image",
        "get-structured-content",
        "trigger-long-running-operation",
    ]);
    let events = run(
        &env,
        json!({"session_id": "sm-select", "available_tools": allowed,
               "extra_mcp_config": {
                   "peer": stdio_peer(json!({})),
                   "everything": {"command": "node", "args": [everything_server_script(), "stdio"]},
               },
               "messages": [{"role": "user", "content": r#"call:repeat{"text":"ab","times":2}"#}]}),
    )
    .await;
    let results = of_type(&events, "tool_call_result");
    assert_eq!(results[0]["content"], "abab", "{events:#?}");
    assert_eq!(usage_steps(&events)[0], "tool_selection");

    let requests = env.llm.requests().await;
    let selection = &requests[0];
    assert_eq!(
        selection["messages"][0]["content"],
        sage_core::agent::TOOL_SELECTION_INSTRUCTION
    );
    let listing = selection["messages"][1]["content"].as_str().unwrap();
    for name in &allowed {
        assert!(
            listing.contains(&format!("- {name}: ")),
            "{name} not listed: {listing}"
        );
    }
    let offered: Vec<&str> = requests[1]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        ["complete_task", "repeat"],
        "the chosen tool, and the finishing one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fifteen_tools_or_fewer_are_all_offered_without_a_selection() {
    let env = TestEnv::new().await;
    let events = run(
        &env,
        json!({"session_id": "sm-few", "available_tools": ["file_read", "todo_read"],
               "messages": [{"role": "user", "content": "words:2"}]}),
    )
    .await;
    assert!(!usage_steps(&events).contains(&"tool_selection".to_owned()));
    let requests = env.llm.requests().await;
    assert_eq!(requests[0]["tools"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_followup_question_ends_the_run_and_the_answer_continues_it() {
    let env = TestEnv::new().await;
    let ask = r#"call-forever:ask_followup_question{"question":"Which year?","follow_up":["2024","2025"]}"#;
    let events = run(
        &env,
        json!({"session_id": "sm-ask", "max_loop_count": 5,
               "available_tools": ["ask_followup_question", "todo_read"],
               "messages": [{"role": "user", "content": ask}]}),
    )
    .await;
    assert_eq!(of_type(&events, "tool_call").len(), 1, "{events:#?}");
    let result = &of_type(&events, "tool_call_result")[0]["content"];
    assert_eq!(result["question"], "Which year?", "{result}");
    assert_eq!(result["follow_up"], json!(["2024", "2025"]));
    assert!(
        texts_by_message(&events, "final_answer").is_empty(),
        "no summary while waiting"
    );
    assert!(texts_by_message(&events, "normal").is_empty(), "not capped");
    assert_eq!(judge_requests(&env).await, 0);

    let answered = run(
        &env,
        json!({"session_id": "sm-ask", "available_tools": ["ask_followup_question"],
               "messages": [{"role": "user", "content": "2025 say:Noted: 2025."}]}),
    )
    .await;
    assert_eq!(
        texts_by_message(&answered, "do_subtask_result"),
        ["Noted: 2025."]
    );
    let requests = env.llm.turn_requests().await;
    let history = requests.last().unwrap()["messages"].to_string();
    assert!(
        history.contains("Which year?"),
        "the question is in the next run's history: {history}"
    );

    let events = run(
        &env,
        json!({"session_id": "sm-ask-empty", "available_tools": ["ask_followup_question"],
               "messages": [{"role": "user", "content": r#"call:ask_followup_question{"question":" "}"#}]}),
    )
    .await;
    let result = &of_type(&events, "tool_call_result")[0]["content"];
    assert_eq!(result["error"], true, "{result}");
    assert_eq!(
        texts_by_message(&events, "do_subtask_result").len(),
        1,
        "a refused question does not end the run: the model goes on"
    );
}
