//! The code tools run in bubblewrap on a copy of the session's workspace: what they write there
//! is kept; they cannot read another file of the host, reach the network, see the server's
//! environment, outgrow their memory or outlive their time limit.

use serde_json::{Value, json};

use crate::builtin_tools::{call, run_tools_named};
use crate::common::*;

const CODE_TOOLS: [&str; 4] = [
    "execute_shell_command",
    "execute_python_code",
    "execute_javascript_code",
    "check_command_availability",
];

fn shell(command: &str, extra: Value) -> String {
    let mut arguments = json!({"command": command});
    for (name, value) in extra.as_object().unwrap() {
        arguments[name] = value.clone();
    }
    call("execute_shell_command", arguments)
}

fn python(code: &str) -> String {
    call("execute_python_code", json!({"code": code}))
}

async fn sandboxed() -> TestEnv {
    TestEnv::with(
        Default::default(),
        &[
            "--code_sandbox",
            "bwrap",
            "--code_timeout_seconds",
            "20",
            "--code_memory_mb",
            "1024",
        ],
    )
    .await
}

fn text(result: &Value, field: &str) -> String {
    result[field].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn code_works_on_the_workspace_and_its_files_are_kept() {
    let env = sandboxed().await;
    let folder = env.workspace().join("ct-work");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("data.txt"), "hello sandbox").unwrap();
    let results = run_tools_named(
        &env.server.url,
        "ct-work",
        "ada",
        &CODE_TOOLS,
        &[
            python(
                "import os\nprint(open('data.txt').read().upper())\nos.makedirs('out', exist_ok=True)\nopen('out/result.txt', 'w').write('from python')",
            ),
            call("execute_javascript_code", json!({"code": "console.log(6 * 7)"})),
            shell("pwd && echo made > here.txt", json!({"workdir": "/workspace/sub"})),
            call(
                "check_command_availability",
                json!({"commands": ["python3", "node", "sh", "no-such-command-x"]}),
            ),
        ],
    )
    .await;
    assert_eq!(
        text(&results[0], "stdout"),
        "HELLO SANDBOX\n",
        "{}",
        results[0]
    );
    assert_eq!(results[0]["exit_code"], 0);
    assert_eq!(results[0]["files_changed"], json!(["out/result.txt"]));
    assert_eq!(text(&results[1], "stdout"), "42\n", "{}", results[1]);
    assert_eq!(
        text(&results[2], "stdout"),
        "/workspace/sub\n",
        "{}",
        results[2]
    );
    assert_eq!(
        results[3],
        json!({"available": ["python3", "node", "sh"], "missing": ["no-such-command-x"]})
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("out/result.txt")).unwrap(),
        "from python"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("sub/here.txt")).unwrap(),
        "made\n"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("data.txt")).unwrap(),
        "hello sandbox",
        "unchanged files are left alone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn code_cannot_leave_its_sandbox() {
    let env = sandboxed().await;
    let secret = env.workspace().join("other-session/secret.txt");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "TOP-SECRET-42").unwrap();
    let llm_port = env.llm.port;
    let results = run_tools_named(
        &env.server.url,
        "ct-jail",
        "ada",
        &CODE_TOOLS,
        &[
            shell(
                &format!(
                    "cat {} ../other-session/secret.txt /etc/passwd 2>&1; ls / ; ls /work /root 2>&1",
                    secret.display()
                ),
                json!({}),
            ),
            python(&format!(
                "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {llm_port}), 2)\n    print('connected')\nexcept OSError as error:\n    print('no network:', type(error).__name__)"
            )),
            shell("env", json!({})),
            shell("sleep 30; echo woke", json!({"timeout": 1})),
            python("x = bytearray(1536 * 1024 * 1024)\nprint('allocated')"),
        ],
    )
    .await;
    let reads = format!(
        "{}{}",
        text(&results[0], "stdout"),
        text(&results[0], "stderr")
    );
    assert!(!reads.contains("TOP-SECRET-42"), "{reads}");
    assert!(!reads.contains("root:"), "no host /etc: {reads}");
    assert!(reads.contains("No such file"), "{reads}");
    assert!(
        text(&results[1], "stdout").starts_with("no network:"),
        "{}",
        results[1]
    );
    let environment = text(&results[2], "stdout");
    let names: Vec<&str> = environment
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    assert!(
        names.iter().all(|name| [
            "PATH",
            "HOME",
            "LANG",
            "MALLOC_ARENA_MAX",
            "PWD",
            "SHLVL",
            "_"
        ]
        .contains(name)),
        "nothing of the server's environment: {environment}"
    );
    assert_eq!(results[3]["timed_out"], true, "{}", results[3]);
    assert!(!text(&results[3], "stdout").contains("woke"));
    assert!(results[3]["duration_ms"].as_u64().unwrap() < 10_000);
    assert_ne!(results[4]["exit_code"], 0, "{}", results[4]);
    assert!(
        text(&results[4], "stderr").contains("MemoryError"),
        "{}",
        results[4]
    );
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "TOP-SECRET-42",
        "the other session's file is untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_code_calls_and_a_server_without_a_sandbox_say_so() {
    let env = sandboxed().await;
    let results = run_tools_named(
        &env.server.url,
        "ct-bad",
        "ada",
        &CODE_TOOLS,
        &[
            shell("ls", json!({"workdir": "../other"})),
            call(
                "execute_python_code",
                json!({"code": "print(1)", "requirement_list": ["requests"]}),
            ),
        ],
    )
    .await;
    assert!(text(&results[0], "message").contains("not inside the workspace"));
    assert!(
        text(&results[1], "message").contains("needs the network"),
        "{}",
        results[1]
    );

    let off = TestEnv::with(Default::default(), &["--code_sandbox", "off"]).await;
    let results = run_tools_named(
        &off.server.url,
        "ct-off",
        "ada",
        &CODE_TOOLS,
        &[python("print(1)")],
    )
    .await;
    assert!(
        text(&results[0], "message").contains("this server runs no code"),
        "{}",
        results[0]
    );
}

/// `--code_timeout_seconds` bounds a call that asks for nothing, and no call may ask for more;
/// `--code_network` lets code reach the network.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_sets_the_time_limit_and_may_open_the_network() {
    let env = TestEnv::with(
        Default::default(),
        &[
            "--code_sandbox",
            "bwrap",
            "--code_timeout_seconds",
            "1",
            "--code_network",
        ],
    )
    .await;
    let llm_port = env.llm.port;
    let results = run_tools_named(
        &env.server.url,
        "ct-limits",
        "ada",
        &CODE_TOOLS,
        &[
            shell("sleep 20; echo woke", json!({})),
            shell("sleep 20; echo woke", json!({"timeout": 60})),
            python(&format!(
                "import socket\nsocket.create_connection(('127.0.0.1', {llm_port}), 2)\nprint('connected')"
            )),
        ],
    )
    .await;
    for result in &results[..2] {
        assert_eq!(result["timed_out"], true, "{result}");
        assert!(result["duration_ms"].as_u64().unwrap() < 10_000, "{result}");
    }
    assert_eq!(text(&results[2], "stdout"), "connected\n", "{}", results[2]);
}

/// With `--code_network`, the packages a call names are installed for it (pip, npm) in the
/// sandbox's own /tmp: the code uses them, and none of their files reach the workspace. A name
/// that is an option, a URL or a path is refused; one the registry does not have fails the call.
#[tokio::test(flavor = "multi_thread")]
async fn the_packages_a_call_names_are_installed_for_it() {
    let env = TestEnv::with(
        Default::default(),
        &[
            "--code_sandbox",
            "bwrap",
            "--code_timeout_seconds",
            "120",
            "--code_network",
        ],
    )
    .await;
    let results = run_tools_named(
        &env.server.url,
        "ct-packages",
        "ada",
        &CODE_TOOLS,
        &[
            call(
                "execute_python_code",
                json!({"code": "import tomli_w\nprint(tomli_w.dumps({'a': 1}).strip())", "requirement_list": ["tomli-w==1.0.0"]}),
            ),
            call(
                "execute_javascript_code",
                json!({"code": "console.log(require('is-odd')(3))", "npm_packages": ["is-odd@3.0.1"]}),
            ),
            call(
                "execute_python_code",
                json!({"code": "print(1)", "requirement_list": ["--index-url=http://127.0.0.1:1/simple"]}),
            ),
            call(
                "execute_python_code",
                json!({"code": "print(1)", "requirement_list": ["sage-no-such-package-zz==9.9"]}),
            ),
            python("import tomli_w"),
        ],
    )
    .await;
    assert_eq!(text(&results[0], "stdout"), "a = 1\n", "{}", results[0]);
    assert_eq!(results[0]["files_changed"], json!([]), "{}", results[0]);
    assert_eq!(text(&results[1], "stdout"), "true\n", "{}", results[1]);
    assert_eq!(results[1]["files_changed"], json!([]), "{}", results[1]);
    assert!(
        text(&results[2], "message").contains("not a package name"),
        "{}",
        results[2]
    );
    assert_eq!(results[3]["exit_code"], 97, "{}", results[3]);
    assert!(text(&results[3], "stderr").contains("installing the packages failed"));
    assert_eq!(
        results[4]["success"], false,
        "a later call starts without them"
    );
    let kept: Vec<_> = std::fs::read_dir(env.workspace().join("ct-packages"))
        .map(|entries| entries.flatten().map(|entry| entry.file_name()).collect())
        .unwrap_or_default();
    assert!(
        kept.is_empty(),
        "nothing installed reaches the workspace: {kept:?}"
    );
}

/// A sandbox function that cannot be reached: a run's call gets a tool error saying the sandbox
/// failed (no address, no SDK message), `/api/tools/exec` answers 503 (the call was fine, the
/// service is not), and the workspace is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_sandbox_function_is_a_503_and_a_plain_tool_error() {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut env: Vec<(&str, &str)> = MOTO_ENV.to_vec();
    env.push(("AWS_ENDPOINT_URL_LAMBDA", &closed));
    let shim = sage_local_on_file_store(
        dir.path(),
        &llm.base_url,
        &[
            "--code_sandbox",
            "lambda",
            "--code_sandbox_function",
            "sage-sandbox",
        ],
        &env,
    )
    .await;
    let results = run_tools_named(
        &shim.url,
        "nosb-1",
        "ann",
        &CODE_TOOLS,
        &[shell("echo hi > made.txt", json!({}))],
    )
    .await;
    assert_eq!(results[0]["error"], true, "{}", results[0]);
    let message = text(&results[0], "message");
    assert_eq!(
        message, "the sandbox could not run the program",
        "{}",
        results[0]
    );

    let (status, answer) = send_json(
        reqwest::Method::POST,
        &format!("{}/api/tools/exec", shim.url),
        &json!({"tool_name": "execute_shell_command", "user_id": "ann", "session_id": "nosb-1",
                "tool_params": {"command": "echo hi > made.txt"}}),
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    let body = answer.to_string();
    assert!(
        body.contains("the sandbox could not run the program"),
        "{body}"
    );
    assert!(
        !body.contains("127.0.0.1") && !body.contains("dispatch"),
        "{body}"
    );
    let (_, files) = send_json(
        reqwest::Method::POST,
        &format!(
            "{}/api/sessions/nosb-1/file_workspace?user_id=ann",
            shim.url
        ),
        &json!({}),
    )
    .await;
    assert!(!files.to_string().contains("made.txt"), "{files}");
}
