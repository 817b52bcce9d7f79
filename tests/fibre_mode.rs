//! Fibre mode (`sage-client.md` §5): the main agent delegates tasks to sub-agents, which run at
//! the same time, each in its own stored, resumable sub-session whose events also reach the main
//! stream with its id and name; the main run waits for every result.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

async fn create_agent(env: &TestEnv, user: &str, name: &str) -> String {
    let (status, body) = send_json(
        Method::POST,
        &format!("{}/api/agent/create?user_id={user}", env.server.url),
        &json!({"name": name, "description": format!("{name} does one part"),
                "systemPrefix": format!("You are {name}.")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["agent_id"].as_str().unwrap().to_owned()
}

fn fibre_run(session: &str, user: &str, message: &str, extra: Value) -> Value {
    let mut body = json!({"session_id": session, "user_id": user, "agent_mode": "fibre",
                          "messages": [{"role": "user", "content": message}]});
    for (name, value) in extra.as_object().unwrap() {
        body[name] = value.clone();
    }
    body
}

fn delegation(tasks: Value) -> String {
    format!("call:sys_delegate_task{}", json!({ "tasks": tasks }))
}

/// What `GET /api/stream/resume/{session}` answers `user` from the start of the log.
async fn resume_status(env: &TestEnv, session: &str, user: &str) -> reqwest::StatusCode {
    reqwest::get(format!(
        "{}/api/stream/resume/{session}?user_id={user}&last_index=0",
        env.server.url
    ))
    .await
    .unwrap()
    .status()
}

/// The tool result of the main run's delegation.
fn delegation_results(events: &[Value], main: &str) -> Vec<Value> {
    let result = of_type(events, "tool_call_result")
        .into_iter()
        .find(|event| event["session_id"] == main && event["content"].get("results").is_some())
        .unwrap_or_else(|| panic!("no delegation result: {events:#?}"));
    result["content"]["results"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn delegated_tasks_run_at_the_same_time_each_in_a_resumable_sub_session() {
    let env = TestEnv::new().await;
    let peer = HttpPeer::start("streamable-http").await;
    let helper = create_agent(&env, "ada", "Helper").await;
    let task = |n: u32| json!({"agent_id": helper, "content": format!(r#"call:rendezvous{{"key":"fibre"}} part {n}"#)});
    let events = post_ndjson(
        &env.stream_url(),
        &fibre_run(
            "fb-main",
            "ada",
            &delegation(json!([task(1), task(2)])),
            json!({"available_sub_agent_ids": [helper], "available_tools": ["rendezvous"],
                   "extra_mcp_config": {"peer": {"url": peer.streamable_http_url()}}}),
        ),
    )
    .await;
    assert_tail(&events, "fb-main");
    assert!(of_type(&events, "error").is_empty(), "{events:#?}");

    let results = delegation_results(&events, "fb-main");
    assert_eq!(results.len(), 2, "{results:?}");
    let subs: Vec<String> = results
        .iter()
        .map(|result| {
            assert_eq!(result["status"], "completed", "{result}");
            assert_eq!(result["agent_name"], "Helper");
            result["session_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_ne!(subs[0], subs[1]);

    // Each sub-agent's rendezvous met the other's: they ran at the same time, and both calls
    // were out before either answer came back.
    let position = |kind: &str, session: &str| -> Vec<usize> {
        events
            .iter()
            .enumerate()
            .filter(|(_, event)| event["type"] == kind && event["session_id"] == session)
            .map(|(index, _)| index)
            .collect()
    };
    for sub in &subs {
        let answers = of_type(&events, "tool_call_result")
            .into_iter()
            .filter(|event| event["session_id"] == sub.as_str())
            .map(|event| event["content"].clone())
            .collect::<Vec<_>>();
        assert_eq!(answers, [json!("met")], "{sub}");
        assert!(
            events
                .iter()
                .filter(|event| event["session_id"] == sub.as_str())
                .all(|event| event["agent_name"] == "Helper" && event["type"] != "token_usage"),
            "sub-agent events carry its name; its token_usage stays in its own log"
        );
    }
    let last_call = subs
        .iter()
        .map(|sub| position("tool_call", sub)[0])
        .max()
        .unwrap();
    let first_answer = subs
        .iter()
        .map(|sub| position("tool_call_result", sub)[0])
        .min()
        .unwrap();
    assert!(last_call < first_answer, "the two sub-agents interleave");
    let delegated_at = events
        .iter()
        .position(|event| event["session_id"] == "fb-main" && event["type"] == "tool_call_result")
        .unwrap();
    assert!(
        subs.iter().all(|sub| position("do_subtask_result", sub)
            .iter()
            .all(|at| *at < delegated_at)),
        "the main run waits for both"
    );
    assert!(
        answer_text(&events[delegated_at..]).starts_with("Tool results: "),
        "the main agent goes on with the results"
    );

    // Each sub-session is a stored conversation of the user: its log replays its task and
    // everything its sub-agent said, with its own tail.
    for sub in &subs {
        let replay = reqwest::get(format!(
            "{}/api/stream/resume/{sub}?user_id=ada&last_index=0",
            env.server.url
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        let replayed = ndjson_events(&replay);
        assert_tail(&replayed, sub);
        let shown: Vec<&Value> = events
            .iter()
            .filter(|event| event["session_id"] == sub.as_str())
            .collect();
        let stored: Vec<&Value> = replayed
            .iter()
            .filter(|event| !matches!(event["type"].as_str(), Some("token_usage" | "stream_end")))
            .collect();
        assert_eq!(
            stored.iter().map(|e| &e["message_id"]).collect::<Vec<_>>(),
            shown.iter().map(|e| &e["message_id"]).collect::<Vec<_>>(),
            "{sub}: the sub-session's log holds what the main stream showed"
        );
        let status = resume_status(&env, sub, "bob").await;
        assert!(
            status.is_client_error(),
            "another user cannot read a sub-session: {status}"
        );
    }

    // The user's conversations are the main one only; deleting it deletes its sub-sessions.
    let (_, listed) = get_json(&format!("{}/api/conversations?user_id=ada", env.server.url)).await;
    let listed: Vec<&str> = listed["data"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|conversation| conversation["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["fb-main"]);
    let (status, _) = send_json(
        Method::DELETE,
        &format!("{}/api/conversations/fb-main?user_id=ada", env.server.url),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    for sub in &subs {
        let status = resume_status(&env, sub, "ada").await;
        assert_eq!(status, 404, "{sub} went with its conversation");
    }
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spawned_sub_agent_takes_a_task_and_finishes_it() {
    let env = TestEnv::new().await;
    let message = format!(
        r#"call:sys_spawn_agent{{"agent_name":"Writer","system_prompt":"You write."}} next: {}"#,
        delegation(json!([
            {"agent_id": "writer", "content": r#"call:sys_finish_task{"status":"success","result":"drafted"}"#},
            {"agent_id": "ghost", "content": "anything"}
        ]))
    );
    let events = post_ndjson(
        &env.stream_url(),
        &fibre_run("fb-spawn", "ada", &message, json!({})),
    )
    .await;
    assert_tail(&events, "fb-spawn");
    let main_results: Vec<Value> = of_type(&events, "tool_call_result")
        .into_iter()
        .filter(|event| event["session_id"] == "fb-spawn")
        .map(|event| event["content"].clone())
        .collect();
    assert_eq!(main_results[0]["agent_id"], "writer", "{main_results:?}");
    assert!(
        main_results[1]["message"]
            .as_str()
            .unwrap()
            .contains("no sub-agent ghost; the sub-agents are: writer"),
        "an unknown agent fails the whole delegation before any task starts: {main_results:?}"
    );
    assert!(
        events.iter().all(|event| event["agent_name"] != "Writer"),
        "nothing ran"
    );

    let message = format!(
        r#"call:sys_spawn_agent{{"agent_name":"Writer","system_prompt":"You write."}} next: {}"#,
        delegation(json!([
            {"agent_id": "writer", "content": r#"call:sys_finish_task{"status":"success","result":"drafted"}"#}
        ]))
    );
    let events = post_ndjson(
        &env.stream_url(),
        &fibre_run("fb-spawn-2", "ada", &message, json!({})),
    )
    .await;
    let results = delegation_results(&events, "fb-spawn-2");
    assert_eq!(results[0]["result"], "drafted", "{results:?}");
    assert_eq!(results[0]["status"], "completed");
}

/// A sub-agent works in the session's own workspace: what it writes the main agent reads, and
/// the user finds it in the conversation's files. Without `sys_finish_task`, its answer is its
/// result.
#[tokio::test(flavor = "multi_thread")]
async fn a_sub_agent_shares_the_sessions_workspace_and_its_answer_is_its_result() {
    let env = TestEnv::new().await;
    let write = r#"call:file_write{"file_path":"draft.md","content":"DRAFT-42"}"#;
    let message = format!(
        r#"call:sys_spawn_agent{{"agent_name":"Writer","system_prompt":"You write."}} next: {} next: call:file_read{{"file_path":"draft.md"}}"#,
        delegation(json!([{"agent_id": "writer", "content": write}]))
    );
    let events = post_ndjson(
        &env.stream_url(),
        &fibre_run(
            "fb-ws",
            "ada",
            &message,
            json!({"available_tools": ["file_write", "file_read"]}),
        ),
    )
    .await;
    assert_tail(&events, "fb-ws");
    let results = delegation_results(&events, "fb-ws");
    assert_eq!(results[0]["status"], "completed", "{results:?}");
    let sub_session = results[0]["session_id"].as_str().unwrap();
    assert_ne!(sub_session, "fb-ws");
    assert!(
        results[0]["result"]
            .as_str()
            .is_some_and(|text| text.starts_with("Tool results:")),
        "the sub-agent's last answer: {results:?}"
    );
    let main_read = of_type(&events, "tool_call_result")
        .into_iter()
        .rfind(|event| event["session_id"] == "fb-ws")
        .unwrap();
    assert!(
        main_read["content"].to_string().contains("DRAFT-42"),
        "the main agent reads the sub-agent's file: {main_read}"
    );
    let base = env.server.url.as_str();
    assert_eq!(
        crate::builtin_tools::download(base, "fb-ws", "ada", "draft.md").await,
        (200, "DRAFT-42".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sub_agent_ids_must_be_the_callers_agents() {
    let env = TestEnv::new().await;
    let bobs = create_agent(&env, "bob", "Private").await;
    for (ids, status) in [(json!(["agent_missing"]), 404), (json!([bobs]), 403)] {
        let (got, body) = send_json(
            Method::POST,
            &env.stream_url(),
            &fibre_run(
                "fb-bad",
                "ada",
                "hi",
                json!({"available_sub_agent_ids": ids}),
            ),
        )
        .await;
        assert_eq!(got, status, "{body}");
        assert!(
            body.to_string().contains("available_sub_agent_ids"),
            "{body}"
        );
    }
    let status = resume_status(&env, "fb-bad", "ada").await;
    assert_eq!(status, 404, "refused before the run started: no session");
}

/// A run's limits bound its sub-agents too: their model calls count against the run's, so two
/// sub-agents that would loop for ever stop once the run as a whole reaches its limit.
#[tokio::test(flavor = "multi_thread")]
async fn sub_agents_spend_from_the_limits_of_their_run() {
    let env = TestEnv::with(Default::default(), &["--run_max_llm_calls", "6"]).await;
    let helper = create_agent(&env, "ada", "Helper").await;
    let task =
        |n: u32| json!({"agent_id": helper, "content": format!("call-forever:todo_read part {n}")});
    let events = post_ndjson(
        &env.stream_url(),
        &fibre_run(
            "fb-limit",
            "ada",
            &delegation(json!([task(1), task(2)])),
            json!({"available_sub_agent_ids": [helper], "available_tools": ["todo_read"]}),
        ),
    )
    .await;
    assert_tail(&events, "fb-limit");
    let calls = env.llm.requests().await.len();
    assert!(
        (6..=8).contains(&calls),
        "{calls} model calls under a limit of 6 for the whole run (two sub-agents may pass the \
         check at the same moment)"
    );
    let limited = of_type(&events, "error")
        .iter()
        .filter(|event| {
            event["content"]
                .as_str()
                .is_some_and(|text| text.contains("6 model calls (run_max_llm_calls)"))
        })
        .count();
    assert!(limited >= 1, "{events:#?}");
}

/// Past its invocation's deadline a fibre run hands off after each of its main agent's tool
/// turns (a delegation's sub-agents are done by then): the sub-agent it spawned in one
/// invocation takes a task in the next, and the run comes to what an uninterrupted one does.
#[tokio::test(flavor = "multi_thread")]
async fn a_fibre_run_hands_off_between_turns_and_keeps_its_spawned_sub_agents() {
    use crate::hand_off::{EVERY_TURN, hand_offs};
    let message = format!(
        r#"call:sys_spawn_agent{{"agent_name":"Writer","system_prompt":"You write."}} next: {}"#,
        delegation(json!([
            {"agent_id": "writer", "content": r#"call:sys_finish_task{"status":"success","result":"drafted"}"#}
        ]))
    );
    let whole = {
        let env = TestEnv::new().await;
        let events = post_ndjson(
            &env.stream_url(),
            &fibre_run("fb-whole", "ada", &message, json!({})),
        )
        .await;
        assert_tail(&events, "fb-whole");
        events
    };

    let env = TestEnv::with(Default::default(), &EVERY_TURN).await;
    let mut all = post_ndjson(
        &env.stream_url(),
        &fibre_run("fb-split", "ada", &message, json!({})),
    )
    .await;
    let first = hand_offs(&all);
    assert_eq!(first.len(), 1, "{all:#?}");
    assert!(
        all.iter().all(|event| event["agent_name"] != "Writer"),
        "only the spawn ran in the first invocation: {all:#?}"
    );
    let path = first[0]["metadata"]["resume"].as_str().unwrap().to_owned();
    let response = reqwest::get(format!("{}{path}&user_id=ada", env.server.url))
        .await
        .unwrap();
    all.extend(ndjson_events(&response.text().await.unwrap()));
    assert_eq!(all.last().unwrap()["type"], "stream_end", "{all:#?}");
    assert_eq!(hand_offs(&all).len(), 2, "spawn, delegation, answer");
    assert!(of_type(&all, "error").is_empty(), "{all:#?}");
    let without_session = |mut results: Vec<Value>| {
        for result in &mut results {
            result.as_object_mut().unwrap().remove("session_id");
        }
        results
    };
    let results = delegation_results(&all, "fb-split");
    assert_eq!(
        without_session(results.clone()),
        without_session(delegation_results(&whole, "fb-whole"))
    );
    assert_eq!(results[0]["result"], "drafted", "{results:?}");
    assert!(
        all.iter().any(|event| event["agent_name"] == "Writer"),
        "the spawned sub-agent ran in a later invocation: {all:#?}"
    );
    let answer = |events: &[Value], main: &str| {
        let sub_session = delegation_results(events, main)[0]["session_id"]
            .as_str()
            .unwrap()
            .to_owned();
        answer_text(events).replace(&sub_session, "SUB")
    };
    assert_eq!(answer(&all, "fb-split"), answer(&whole, "fb-whole"));
}
