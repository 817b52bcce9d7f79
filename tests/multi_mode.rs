//! Multi mode as Sage runs it (`sage-client.md` §5): a forced `todo_write` decomposition, rounds
//! of plan, execute, observe and judge over the stored plan, then the summary; and its stop
//! rules.

use serde_json::{Value, json};

use crate::common::*;

const CAP_NOTICE: &str = "最大循环次数";

async fn run(env: &TestEnv, session: &str, message: &str, extra: Value) -> Vec<Value> {
    let mut body = json!({"session_id": session, "agent_mode": "multi",
                          "messages": [{"role": "user", "content": message}]});
    for (name, value) in extra.as_object().unwrap() {
        body[name] = value.clone();
    }
    let events = post_ndjson(&env.stream_url(), &body).await;
    assert_tail(&events, session);
    assert!(of_type(&events, "error").is_empty(), "{events:#?}");
    events
}

/// The event types in order, each run of one type said once.
fn phases(events: &[Value]) -> Vec<String> {
    let mut phases: Vec<String> = Vec::new();
    for event in events {
        let kind = event["type"].as_str().unwrap().to_owned();
        if phases.last() != Some(&kind) {
            phases.push(kind);
        }
    }
    phases
}

fn stored_plan(env: &TestEnv, session: &str) -> Value {
    let path = env.workspace().join(session).join(".sage/todo.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_run_decomposes_then_plans_executes_observes_and_summarises() {
    let env = TestEnv::new().await;
    let events = run(&env, "mm-order", "steps:2 words:3", json!({})).await;
    assert_eq!(
        phases(&events),
        [
            "task_decomposition",
            "tool_call",
            "task_decomposition",
            "planning",
            "do_subtask_result",
            "observation",
            "planning",
            "do_subtask_result",
            "observation",
            "final_answer",
            "token_usage",
            "stream_end"
        ]
    );
    assert_eq!(
        usage_steps(&events),
        [
            "task_decomposition",
            "planning",
            "execution",
            "observation",
            "task_completion_judge",
            "planning",
            "execution",
            "observation",
            "task_completion_judge",
            "summary"
        ]
    );
    let decomposition = texts_by_message(&events, "task_decomposition");
    assert_eq!(
        decomposition,
        [
            "I split the task into steps.",
            "\n1. Step 1 of the task\n2. Step 2 of the task"
        ]
    );
    let calls = of_type(&events, "tool_call");
    assert_eq!(calls[0]["tool_calls"][0]["function"]["name"], "todo_write");
    assert!(
        of_type(&events, "tool_call_result").is_empty(),
        "the plan is told as text"
    );
    assert_eq!(
        texts_by_message(&events, "planning"),
        ["Next: 1. Step 1 of the task", "Next: 2. Step 2 of the task"],
        "each round takes the next open task"
    );
    assert_eq!(
        texts_by_message(&events, "do_subtask_result"),
        ["tok0 tok1 tok2 ", "tok0 tok1 tok2 "]
    );
    assert_eq!(
        texts_by_message(&events, "final_answer"),
        ["Summary: steps:2 words:3"]
    );
    assert!(of_type(&events, "normal").is_empty(), "{events:#?}");
    assert_eq!(
        stored_plan(&env, "mm-order"),
        json!([{"id": "1", "content": "Step 1 of the task", "completed": true},
               {"id": "2", "content": "Step 2 of the task", "completed": true}])
    );

    let requests = env.llm.requests().await;
    let decompose = &requests[0];
    assert_eq!(decompose["tool_choice"]["function"]["name"], "todo_write");
    assert_eq!(
        decompose["tools"].as_array().map(Vec::len),
        Some(1),
        "the decomposition can only write the plan"
    );
    let execute = requests
        .iter()
        .find(|request| {
            request["messages"]
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|last| last["content"].as_str().unwrap().starts_with("Carry out"))
        })
        .expect("an execution call");
    let mut offered: Vec<&str> = execute["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["function"]["name"].as_str().unwrap())
        .collect();
    offered.sort_unstable();
    assert_eq!(offered, ["todo_read", "todo_write"]);
    assert!(execute.get("tool_choice").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_round_executes_with_the_runs_tools() {
    let env = TestEnv::new().await;
    let events = run(
        &env,
        "mm-tools",
        r#"steps:2 call:file_write{"file_path":"notes.md","content":"x","mode":"append"}"#,
        json!({"available_tools": ["file_write"]}),
    )
    .await;
    let calls: Vec<&Value> = of_type(&events, "tool_call")
        .into_iter()
        .filter(|event| event["tool_calls"][0]["function"]["name"] == "file_write")
        .collect();
    assert_eq!(calls.len(), 2, "one write per round");
    assert!(calls.iter().all(|c| c["agent_name"] == "ExecutorAgent"));
    assert_eq!(of_type(&events, "tool_call_result").len(), 2);
    assert_eq!(
        std::fs::read_to_string(env.workspace().join("mm-tools/notes.md")).unwrap(),
        "xx"
    );
    assert_eq!(texts_by_message(&events, "final_answer").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_runs_stop_by_the_rules() {
    let env = TestEnv::new().await;
    struct Case {
        message: &'static str,
        extra: Value,
        rounds: usize,
        summary: bool,
        capped: bool,
    }
    let cases = [
        // Nothing open after the decomposition: the run ends there, without a summary.
        Case {
            message: "steps:0",
            extra: json!({}),
            rounds: 0,
            summary: false,
            capped: false,
        },
        Case {
            message: "steps:none",
            extra: json!({}),
            rounds: 0,
            summary: false,
            capped: false,
        },
        Case {
            message: "steps:3 status:completed",
            extra: json!({}),
            rounds: 1,
            summary: true,
            capped: false,
        },
        Case {
            message: "steps:3 status:need_user_input",
            extra: json!({}),
            rounds: 1,
            summary: true,
            capped: false,
        },
        Case {
            message: "steps:3 status:failed",
            extra: json!({}),
            rounds: 1,
            summary: true,
            capped: false,
        },
        // A judge answer that is not JSON counts as completed, never as "go on".
        Case {
            message: "steps:3 judge:garbage",
            extra: json!({}),
            rounds: 1,
            summary: true,
            capped: false,
        },
        // At most max_loop_count − 1 rounds.
        Case {
            message: "steps:5",
            extra: json!({"max_loop_count": 3}),
            rounds: 2,
            summary: true,
            capped: true,
        },
        Case {
            message: "steps:5 status:in_progress",
            extra: json!({"max_loop_count": 1}),
            rounds: 1,
            summary: true,
            capped: true,
        },
    ];
    for (index, case) in cases.iter().enumerate() {
        let session = format!("mm-stop-{index}");
        let events = run(&env, &session, case.message, case.extra.clone()).await;
        let label = format!("{} {}", case.message, case.extra);
        assert_eq!(
            texts_by_message(&events, "planning").len(),
            case.rounds,
            "{label}"
        );
        assert_eq!(
            texts_by_message(&events, "observation").len(),
            case.rounds,
            "{label}"
        );
        assert_eq!(
            texts_by_message(&events, "final_answer").len(),
            usize::from(case.summary),
            "{label}"
        );
        let notices = texts_by_message(&events, "normal");
        assert_eq!(
            notices.iter().any(|n| n.contains(CAP_NOTICE)),
            case.capped,
            "{label}: {notices:?}"
        );
    }
    let events = run(&env, "mm-stop-none", "steps:none", json!({})).await;
    assert!(of_type(&events, "tool_call").is_empty());
    assert_eq!(usage_steps(&events), ["task_decomposition"]);

    // A question for the user ends the run in its execution step: no observation, no summary.
    let events = run(
        &env,
        "mm-stop-ask",
        r#"steps:3 call:ask_followup_question{"question":"Which city?"}"#,
        json!({"available_tools": ["ask_followup_question"]}),
    )
    .await;
    assert_eq!(texts_by_message(&events, "planning").len(), 1);
    assert!(of_type(&events, "observation").is_empty());
    assert!(of_type(&events, "final_answer").is_empty());
    assert_eq!(
        usage_steps(&events),
        ["task_decomposition", "planning", "execution"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runaway_executor_is_bounded_by_the_loop_cap_and_suggestions_follow_the_summary() {
    let env = TestEnv::new().await;
    let events = run(
        &env,
        "mm-forever",
        r#"steps:1 call-forever:todo_read"#,
        json!({"max_loop_count": 3, "more_suggest": true}),
    )
    .await;
    let reads = of_type(&events, "tool_call")
        .iter()
        .filter(|event| event["tool_calls"][0]["function"]["name"] == "todo_read")
        .count();
    assert_eq!(reads, 3, "the execution step stops at max_loop_count turns");
    let tail: Vec<String> = phases(&events).into_iter().rev().take(4).collect();
    assert_eq!(
        tail,
        ["stream_end", "token_usage", "query_suggest", "final_answer"]
    );
}

/// Past its invocation's deadline a multi run hands off between rounds: each round after the
/// first runs in an invocation of its own, the continuation reads the plan back and goes on
/// from the conversation as it stood, and the run comes to what an uninterrupted one does.
#[tokio::test(flavor = "multi_thread")]
async fn a_multi_run_hands_off_between_rounds_and_ends_as_an_uninterrupted_one() {
    use crate::hand_off::{EVERY_TURN, USER, hand_offs};
    let message = "steps:3 words:2";
    let uninterrupted = {
        let env = TestEnv::new().await;
        let events = run(&env, "mm-whole", message, json!({})).await;
        assert!(hand_offs(&events).is_empty(), "{events:#?}");
        events
    };

    let env = TestEnv::with(Default::default(), &EVERY_TURN).await;
    let body = json!({"session_id": "mm-split", "user_id": USER, "agent_mode": "multi",
                      "messages": [{"role": "user", "content": message}]});
    let first = post_ndjson(&env.stream_url(), &body).await;
    let handed = hand_offs(&first);
    assert_eq!(handed.len(), 1, "{first:#?}");
    assert_eq!(
        first.last(),
        Some(handed[0]),
        "the first invocation ends with it"
    );
    assert!(of_type(&first, "stream_end").is_empty(), "{first:#?}");
    assert_eq!(
        texts_by_message(&first, "planning"),
        ["Next: 1. Step 1 of the task"],
        "one round, then the hand-off"
    );
    let path = handed[0]["metadata"]["resume"].as_str().unwrap();
    let response = reqwest::get(format!("{}{path}&user_id={USER}", env.server.url))
        .await
        .unwrap();
    let rest = ndjson_events(&response.text().await.unwrap());
    assert_eq!(rest.last().unwrap()["type"], "stream_end", "{rest:#?}");
    let all: Vec<Value> = first.iter().chain(&rest).cloned().collect();
    assert_eq!(hand_offs(&all).len(), 2, "three rounds, three invocations");
    assert!(of_type(&all, "error").is_empty(), "{all:#?}");

    let said = |events: &[Value]| {
        [
            "task_decomposition",
            "planning",
            "do_subtask_result",
            "observation",
            "final_answer",
        ]
        .map(|kind| texts_by_message(events, kind))
    };
    assert_eq!(said(&all), said(&uninterrupted));
    assert_eq!(
        of_type(&all, "tool_call").len(),
        1,
        "the plan is decomposed once: {all:#?}"
    );
    assert_eq!(
        stored_plan(&env, "mm-split"),
        stored_plan_of(&uninterrupted)
    );

    // The second round's planning call, in the second invocation, goes on from the first
    // round's work as the log holds it (the decomposition, planning, execution and observation
    // texts), with the open tasks read back from the stored plan.
    let requests = env.llm.requests().await;
    let plans: Vec<&Value> = requests
        .iter()
        .filter(|request| {
            request["messages"]
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|last| {
                    last["content"]
                        .as_str()
                        .is_some_and(|text| text.starts_with("Plan the next step"))
                })
        })
        .collect();
    assert_eq!(plans.len(), 3);
    let second = plans[1]["messages"].to_string();
    let first_execution = &texts_by_message(&first, "do_subtask_result")[0];
    assert!(
        second.contains(&format!(
            "\"content\":\"{first_execution}\",\"role\":\"assistant\""
        )),
        "{second}"
    );
    for said in [
        "I split the task into steps.",
        "Next: 1. Step 1 of the task",
    ] {
        assert!(second.contains(said), "{said}: {second}");
    }
    let observed = &texts_by_message(&first, "observation")[0];
    assert!(second.contains(observed.as_str()), "{second}");
    assert!(
        !second.contains("Next: 2."),
        "nothing of the next round: {second}"
    );
    assert!(
        plans[1]["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_str()
            .unwrap()
            .contains("2. Step 2 of the task\n3. Step 3 of the task"),
        "the open tasks read back: {second}"
    );
}

/// The plan every task of which the run completed, as `stored_plan` reads it.
fn stored_plan_of(events: &[Value]) -> Value {
    let steps = texts_by_message(events, "planning").len();
    Value::Array(
        (1..=steps)
            .map(|id| {
                json!({"id": id.to_string(), "content": format!("Step {id} of the task"), "completed": true})
            })
            .collect(),
    )
}

/// A round whose execution calls tools is not cut inside: past the deadline the run still hands
/// off only between rounds, and each write happens once.
#[tokio::test(flavor = "multi_thread")]
async fn a_multi_run_past_its_deadline_hands_off_only_between_rounds() {
    use crate::hand_off::{EVERY_TURN, USER, hand_offs};
    let env = TestEnv::with(Default::default(), &EVERY_TURN).await;
    let body = json!({"session_id": "mm-tools-split", "user_id": USER, "agent_mode": "multi",
        "available_tools": ["file_write"],
        "messages": [{"role": "user", "content": r#"steps:2 call:file_write{"file_path":"notes.md","content":"x","mode":"append"}"#}]});
    let first = post_ndjson(&env.stream_url(), &body).await;
    assert_eq!(hand_offs(&first).len(), 1, "{first:#?}");
    assert_eq!(
        of_type(&first, "tool_call_result").len(),
        1,
        "round 1 whole"
    );
    assert!(!of_type(&first, "observation").is_empty(), "{first:#?}");
    let path = hand_offs(&first)[0]["metadata"]["resume"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = reqwest::get(format!("{}{path}&user_id={USER}", env.server.url))
        .await
        .unwrap();
    let rest = ndjson_events(&response.text().await.unwrap());
    assert_eq!(rest.last().unwrap()["type"], "stream_end", "{rest:#?}");
    assert_eq!(of_type(&rest, "tool_call_result").len(), 1, "round 2 whole");
    assert_eq!(texts_by_message(&rest, "final_answer").len(), 1);
    assert_eq!(
        std::fs::read_to_string(env.workspace().join("mm-tools-split/notes.md")).unwrap(),
        "xx"
    );
}
