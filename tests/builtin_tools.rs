//! Sage's built-in file and plan tools, named in `available_tools`: what a run writes lands in
//! the session's workspace (listed and downloaded through the Session routes), on the local
//! directory and on S3 (moto) under `sage-local`; no path the model sends leaves the workspace.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

/// Sage's names of the file and plan tools, as `/api/tools?type=basic` lists them.
pub const FILE_TOOLS: [&str; 9] = [
    "file_read",
    "file_write",
    "file_update",
    "search_content_in_file",
    "download_file_from_url",
    "convert_csv_to_excel",
    "extract_text_from_non_text_file",
    "todo_write",
    "todo_read",
];

pub fn call(tool: &str, arguments: Value) -> String {
    format!("call:{tool}{arguments}")
}

/// One run in `session` whose model makes `calls` (in one turn); the tool results' contents, in
/// the order of the calls.
pub async fn run_tools(base: &str, session: &str, user: &str, calls: &[String]) -> Vec<Value> {
    run_tools_named(base, session, user, &FILE_TOOLS, calls).await
}

/// Like [`run_tools`], with `tools` as the run's `available_tools`.
pub async fn run_tools_named(
    base: &str,
    session: &str,
    user: &str,
    tools: &[&str],
    calls: &[String],
) -> Vec<Value> {
    let events = post_ndjson(
        &format!("{base}/api/stream"),
        &json!({"session_id": session, "user_id": user, "available_tools": tools,
                "messages": [{"role": "user", "content": calls.join(" ")}]}),
    )
    .await;
    assert_tail(&events, session);
    // Calls of one turn run together: their results arrive in any order.
    let results = of_type(&events, "tool_call_result");
    assert_eq!(results.len(), calls.len(), "{events:#?}");
    of_type(&events, "tool_call")[0]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|call| {
            let result = results
                .iter()
                .find(|result| result["tool_call_id"] == call["id"])
                .unwrap();
            result["content"].clone()
        })
        .collect()
}

async fn workspace_paths(base: &str, session: &str, user: &str) -> Vec<String> {
    let (status, listed) = send_json(
        Method::POST,
        &format!("{base}/api/sessions/{session}/file_workspace?user_id={user}"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    listed["data"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["path"].as_str().unwrap().to_owned())
        .collect()
}

/// A file of the session's workspace, through the Session route: its status and text.
pub async fn download(base: &str, session: &str, user: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!(
        "{base}/api/sessions/{session}/file_workspace/download?user_id={user}&file_path={path}"
    ))
    .await
    .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Write, update, read by lines, search, and keep a plan, one run each, as a user sees them.
async fn file_and_plan_round(base: &str, session: &str, user: &str) {
    let written = run_tools(
        base,
        session,
        user,
        &[call(
            "file_write",
            json!({"file_path": "/workspace/notes/plan.md", "content": "alpha\nbeta\ngamma\n"}),
        )],
    )
    .await;
    assert_eq!(written[0]["success"], true, "{}", written[0]);
    assert_eq!(written[0]["file_path"], "notes/plan.md");
    let appended = run_tools(
        base,
        session,
        user,
        &[call(
            "file_write",
            json!({"file_path": "notes/plan.md", "content": "delta beta\n", "mode": "append"}),
        )],
    )
    .await;
    assert_eq!(appended[0]["size"], 28, "{}", appended[0]);

    let updated = run_tools(
        base,
        session,
        user,
        &[call(
            "file_update",
            json!({"file_path": "notes/plan.md", "search_pattern": "b(e)ta", "replacement": "B${1}TA", "use_regex": true}),
        )],
    )
    .await;
    assert_eq!(updated[0]["replacements"], 2, "{}", updated[0]);
    let read = run_tools(
        base,
        session,
        user,
        &[call(
            "file_read",
            json!({"file_path": "notes/plan.md", "start_line": 2, "end_line": 3}),
        )],
    )
    .await;
    assert_eq!(read[0]["content"], "BeTA\ngamma\n", "{}", read[0]);
    assert_eq!(read[0]["total_lines"], 4);
    let found = run_tools(
        base,
        session,
        user,
        &[call(
            "search_content_in_file",
            json!({"file_path": "notes/plan.md", "keywords": ["BETA", "zeta"]}),
        )],
    )
    .await;
    assert_eq!(found[0]["total_matches"], 2, "{}", found[0]);
    assert_eq!(found[0]["matches"][1]["line_number"], 4);
    assert_eq!(found[0]["matches"][1]["line"], "delta BeTA");

    let planned = run_tools(
        base,
        session,
        user,
        &[call(
            "todo_write",
            json!({"tasks": [{"id": "1", "content": "draft"}, {"id": "2", "content": "review"}]}),
        )],
    )
    .await;
    assert_eq!(planned[0]["pending"], 2, "{}", planned[0]);
    run_tools(
        base,
        session,
        user,
        &[call(
            "todo_write",
            json!({"tasks": [{"id": "1", "content": "", "completed": true}]}),
        )],
    )
    .await;
    let plan = run_tools(base, session, user, &[call("todo_read", json!({}))]).await;
    assert_eq!(
        plan[0]["tasks"],
        json!([{"id": "1", "content": "draft", "completed": true},
               {"id": "2", "content": "review", "completed": false}]),
        "the plan is kept with the session between runs"
    );

    assert_eq!(
        workspace_paths(base, session, user).await,
        ["notes", "notes/plan.md"],
        "the plan's folder is not shown"
    );
    assert_eq!(
        download(base, session, user, "notes/plan.md").await,
        (200, "alpha\nBeTA\ngamma\ndelta BeTA\n".to_owned())
    );
    assert_eq!(
        download(base, session, user, ".sage/todo.json").await.0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn file_and_plan_tools_work_in_the_session_workspace() {
    let env = TestEnv::new().await;
    file_and_plan_round(&env.server.url, "bt-local", "lee").await;

    let (status, basic) = get_json(&format!("{}/api/tools?type=basic", env.server.url)).await;
    assert_eq!(status, 200, "{basic}");
    let listed: Vec<&str> = basic["data"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| {
            assert_eq!(tool["type"], "basic");
            assert_eq!(tool["source"], "基础工具");
            tool["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(listed[..FILE_TOOLS.len()], FILE_TOOLS);
    assert_eq!(
        listed[FILE_TOOLS.len()..],
        [
            "execute_shell_command",
            "execute_python_code",
            "execute_javascript_code",
            "check_command_availability",
            "remember_user_memory",
            "recall_user_memory",
            "forget_user_memory",
            "ask_followup_question",
            "load_skill",
            "sys_spawn_agent",
            "sys_delegate_task",
            "sys_finish_task"
        ]
    );
    let (_, all) = get_json(&format!("{}/api/tools", env.server.url)).await;
    assert_eq!(
        all["data"]["tools"].as_array().unwrap().len(),
        listed.len(),
        "without a type, the built-in tools and the caller's MCP tools (none here): {all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_without_the_tools_named_cannot_call_them() {
    let env = TestEnv::new().await;
    let events = post_ndjson(
        &format!("{}/api/stream", env.server.url),
        &json!({"session_id": "bt-none", "user_id": "lee", "available_tools": ["file_read"],
                "messages": [{"role": "user", "content": call("file_write", json!({"file_path": "x.txt", "content": "x"}))}]}),
    )
    .await;
    let result = &of_type(&events, "tool_call_result")[0]["content"];
    assert_eq!(result["error_type"], "TOOL_NOT_FOUND", "{result}");
    assert!(
        workspace_paths(&env.server.url, "bt-none", "lee")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_path_leaves_the_workspace() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    run_tools(
        &base,
        "bt-other",
        "kim",
        &[call(
            "file_write",
            json!({"file_path": "secret.txt", "content": "kim's"}),
        )],
    )
    .await;
    let workspace = env.workspace();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "outside").unwrap();
    run_tools(
        &base,
        "bt-escape",
        "lee",
        &[call(
            "file_write",
            json!({"file_path": "own.txt", "content": "mine"}),
        )],
    )
    .await;
    std::os::unix::fs::symlink(outside.path(), workspace.join("bt-escape").join("link")).unwrap();

    let escapes = [
        "../bt-other/secret.txt",
        "notes/../../bt-other/secret.txt",
        "/etc/passwd",
        "/workspace/../bt-other/secret.txt",
        "..%2fbt-other%2fsecret.txt",
        "%2E%2E/bt-other/secret.txt",
        "..\\bt-other\\secret.txt",
        "~/secret.txt",
        ".sage/todo.json",
        "link/secret.txt",
    ];
    let reads: Vec<String> = escapes
        .iter()
        .map(|path| call("file_read", json!({ "file_path": path })))
        .collect();
    for (path, result) in escapes
        .iter()
        .zip(run_tools(&base, "bt-escape", "lee", &reads).await)
    {
        assert_eq!(result["error"], true, "{path}: {result}");
        let message = result["message"].as_str().unwrap();
        assert!(
            !message.contains("kim's")
                && !message.contains("outside")
                && !message.contains("root:"),
            "{path}: {message}"
        );
    }
    let writes: Vec<String> = escapes
        .iter()
        .map(|path| {
            call(
                "file_write",
                json!({"file_path": path, "content": "overwritten"}),
            )
        })
        .collect();
    for (path, result) in escapes
        .iter()
        .zip(run_tools(&base, "bt-escape", "lee", &writes).await)
    {
        assert_eq!(result["error"], true, "{path}: {result}");
    }
    assert_eq!(
        std::fs::read_to_string(workspace.join("bt-other/secret.txt")).unwrap(),
        "kim's"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret.txt")).unwrap(),
        "outside"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    assert_eq!(
        workspace_paths(&base, "bt-escape", "lee").await,
        ["own.txt"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_tool_errors_and_change_nothing() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    run_tools(
        &base,
        "bt-bad",
        "lee",
        &[call(
            "file_write",
            json!({"file_path": "a.txt", "content": "keep"}),
        )],
    )
    .await;
    let calls = [
        call("file_write", json!({"file_path": "a.txt"})),
        call(
            "file_write",
            json!({"file_path": "a.txt", "content": "x", "mode": "truncate"}),
        ),
        call(
            "file_update",
            json!({"file_path": "a.txt", "search_pattern": "(", "replacement": "x", "use_regex": true}),
        ),
        call(
            "file_update",
            json!({"file_path": "a.txt", "search_pattern": "absent", "replacement": "x"}),
        ),
        call(
            "file_read",
            json!({"file_path": "a.txt", "start_line": "two"}),
        ),
        call("file_read", json!({"file_path": "missing.txt"})),
        call("todo_write", json!({"tasks": "not a list"})),
        call(
            "search_content_in_file",
            json!({"file_path": "a.txt", "keywords": []}),
        ),
    ];
    let expected = [
        "content",
        "mode",
        "regex",
        "not found",
        "start_line",
        "no file missing.txt",
        "tasks",
        "keywords",
    ];
    for (expected, result) in expected
        .iter()
        .zip(run_tools(&base, "bt-bad", "lee", &calls).await)
    {
        assert_eq!(result["error"], true, "{result}");
        assert!(
            result["message"].as_str().unwrap().contains(expected),
            "{expected}: {result}"
        );
    }
    assert_eq!(
        download(&base, "bt-bad", "lee", "a.txt").await,
        (200, "keep".to_owned())
    );
}

/// The same round with the workspace in an S3 bucket (moto) under `sage-local`.
#[tokio::test(flavor = "multi_thread")]
async fn file_and_plan_tools_work_on_s3_under_sage_local() {
    let local = SageLocalOnS3::start("sage-tools").await;
    file_and_plan_round(&local.shim.url, "bt-s3", "lee").await;

    use sage_core::blob::{ObjectKey, ObjectStore};
    let bucket_store = s3_objects(&local.bucket, None).await;
    let stored = bucket_store
        .list(&ObjectKey::parse("bt-s3").unwrap())
        .await
        .unwrap();
    let keys: Vec<&str> = stored.iter().map(|object| object.key.as_str()).collect();
    assert_eq!(keys, ["bt-s3/.sage/todo.json", "bt-s3/notes/plan.md"]);
}

/// `/api/tools/exec` runs a built-in file tool in one of the caller's conversations, in its
/// workspace and confined to it as in a run; the tools that only make sense in a run, another
/// user's conversation and a missing one are refused.
#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_a_built_in_tool_in_a_named_conversation_of_the_caller() {
    let env = TestEnv::new().await;
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"session_id": "exec-1", "user_id": "ann", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_tail(&events, "exec-1");
    let url = format!("{}/api/tools/exec", env.server.url);
    let exec = |tool: &str, session: Option<&str>, user: &str, params: Value| {
        let mut body = json!({"tool_name": tool, "user_id": user, "tool_params": params});
        if let Some(session) = session {
            body["session_id"] = json!(session);
        }
        let url = url.clone();
        async move { send_json(Method::POST, &url, &body).await }
    };
    let (status, written) = exec(
        "file_write",
        Some("exec-1"),
        "ann",
        json!({"file_path": "notes/a.txt", "content": "hello from exec"}),
    )
    .await;
    assert_eq!(status, 200, "{written}");
    let (status, read) = exec(
        "file_read",
        Some("exec-1"),
        "ann",
        json!({"file_path": "notes/a.txt"}),
    )
    .await;
    assert_eq!(status, 200, "{read}");
    assert!(
        read["data"].to_string().contains("hello from exec"),
        "{read}"
    );
    let (_, files) = send_json(
        Method::POST,
        &format!(
            "{}/api/sessions/exec-1/file_workspace?user_id=ann",
            env.server.url
        ),
        &json!({}),
    )
    .await;
    assert!(
        files["data"].to_string().contains("notes/a.txt"),
        "the file is in the conversation's workspace: {files}"
    );

    // (tool, session, user, arguments, status, what the message says)
    let refusals = [
        (
            "file_read",
            Some("exec-1"),
            "ann",
            json!({"file_path": "../exec-2/secret.txt"}),
            400,
            "not inside the workspace",
        ),
        (
            "file_write",
            Some("exec-1"),
            "ann",
            json!({"file_path": "b.txt"}),
            400,
            "content",
        ),
        (
            "file_read",
            None,
            "ann",
            json!({"file_path": "a.txt"}),
            400,
            "session_id:",
        ),
        (
            "file_read",
            Some("exec-1"),
            "bob",
            json!({"file_path": "notes/a.txt"}),
            403,
            "another user",
        ),
        (
            "file_read",
            Some("no-such-conversation"),
            "ann",
            json!({"file_path": "a.txt"}),
            404,
            "no conversation",
        ),
        (
            "file_read",
            Some("../x"),
            "ann",
            json!({}),
            400,
            "session_id:",
        ),
        (
            "ask_followup_question",
            Some("exec-1"),
            "ann",
            json!({"question": "?"}),
            400,
            "runs only inside a run",
        ),
        (
            "echo",
            Some("exec-1"),
            "ann",
            json!({"text": "x"}),
            400,
            "session_id:",
        ),
    ];
    for (tool, session, user, arguments, expected, says) in refusals {
        let (status, body) = exec(tool, session, user, arguments).await;
        assert_eq!(status, expected, "{tool} {session:?} {user}: {body}");
        assert_eq!(body["code"], expected);
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{tool}: {message}");
    }
}
