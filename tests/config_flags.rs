//! Configuration: every documented flag exists, CLI beats env beats default, bad input stops
//! start-up with a message naming the setting.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use sage_core::Config;
use sage_core::config::DbType;
use secrecy::ExposeSecret;

/// Every flag of `api.md` §6 that the product acts on, with a valid value (`None` = a switch
/// given without a value). Flags accepted but not acted on yet are in
/// `a_setting_accepted_but_not_acted_on_is_named_in_a_start_up_warning`.
const FLAGS_THAT_ACT: &[(&str, Option<&str>)] = &[
    ("--host", Some("127.0.0.1")),
    ("--port", Some("18080")),
    ("--workspace", Some("ws")),
    ("--preset_mcp_config", Some("mcp.json")),
    ("--preset_running_config", Some("agents.json")),
    ("--default_llm_api_key", Some("k1,k2")),
    ("--default_llm_api_base_url", Some("http://llm.local/v1")),
    ("--default_llm_model_name", Some("m")),
    ("--default_llm_max_tokens", Some("100")),
    ("--default_llm_temperature", Some("0.7")),
    ("--default_llm_max_model_len", Some("8000")),
    ("--default_llm_top_p", Some("0.5")),
    ("--default_llm_presence_penalty", Some("0.1")),
    ("--llm_connect_timeout", Some("3")),
    ("--llm_idle_timeout", Some("30")),
    ("--llm_max_retries", Some("1")),
    ("--tool_timeout", Some("5")),
    ("--mcp_allow_stdio", None),
    ("--mcp_allow_link_local", Some("false")),
    ("--download_allow_private", None),
    ("--download_max_bytes", Some("1048576")),
    ("--code_sandbox", Some("off")),
    ("--code_timeout_seconds", Some("7")),
    ("--code_memory_mb", Some("256")),
    ("--code_network", Some("false")),
    ("--run_lease_seconds", Some("12.5")),
    ("--run_sweep_seconds", Some("0")),
    ("--run_max_llm_calls", Some("40")),
    ("--run_max_tokens", Some("200000")),
    ("--run_max_seconds", Some("600")),
    ("--run_max_cost", Some("2.5")),
    (
        "--price_table",
        Some(r#"{"m": {"input_per_million": 0.5, "output_per_million": 1}}"#),
    ),
    ("--sse_ping_seconds", Some("20")),
    ("--default_llm_api_key_parameter", Some("/sage/llm-key")),
    ("--db_type", Some("memory")),
    ("--db_path", Some("dbdir")),
    ("--mysql_host", Some("db.local")),
    ("--mysql_port", Some("3307")),
    ("--mysql_user", Some("u")),
    ("--mysql_password", Some("p")),
    ("--mysql_database", Some("d")),
    ("--dynamodb_table", Some("t")),
    ("--dynamodb_endpoint", Some("http://127.0.0.1:5000")),
    ("--event_pack_window_ms", Some("40")),
];

fn acting_flag_args() -> Vec<String> {
    let mut args = vec!["sage".to_owned()];
    for (flag, value) in FLAGS_THAT_ACT {
        args.push((*flag).to_owned());
        if let Some(value) = value {
            args.push((*value).to_owned());
        }
    }
    args
}

#[test]
fn every_flag_that_acts_is_accepted_and_applied() {
    let config = Config::try_from_args(acting_flag_args()).expect("every flag parses");
    assert_eq!(config.server.port, 18080);
    let keys: Vec<String> = config
        .llm
        .keys()
        .iter()
        .map(|key| key.expose_secret().to_owned())
        .collect();
    assert_eq!(keys, ["k1", "k2"]);
    assert_eq!(config.llm.max_model_len, 8000);
    assert_eq!(config.store.db_type, DbType::Memory);
    assert_eq!(config.store.mysql_port, 3307);
    assert!(config.tools.mcp_allow_stdio && !config.tools.mcp_allow_link_local);
    assert!(config.tools.download_allow_private);
    assert_eq!(config.tools.download_max_bytes, 1_048_576);
    assert_eq!(config.tools.code_timeout, Duration::from_secs(7));
    assert_eq!(config.tools.code_memory_mb, 256);
    assert_eq!(config.limits.max_cost, Some(2.5));
    let price = config
        .pricing
        .price_table
        .as_ref()
        .unwrap()
        .price_of("m")
        .unwrap();
    assert_eq!(price.cost(2_000_000, 1_000_000), 2.0);
    assert_eq!(config.server.run_lease, Duration::from_millis(12_500));
    assert_eq!(config.limits.max_llm_calls, Some(40));
    assert_eq!(config.limits.max_tokens, Some(200_000));
    assert_eq!(config.limits.max_duration, Some(Duration::from_secs(600)));
    assert_eq!(config.store.event_pack_window(), Duration::from_millis(40));
}

#[test]
fn defaults_follow_the_seed() {
    let config = Config::try_from_args(["sage"]).unwrap();
    assert_eq!(config.server.port, 8080);
    assert_eq!(config.store.db_type, DbType::File);
    assert_eq!(config.store.db_path.to_str(), Some("./data/"));
    assert_eq!(config.llm.base_url, "https://api.deepseek.com/v1");
    assert_eq!(config.llm.model_name, "deepseek-chat");
    assert_eq!(config.llm.max_tokens, 4096);
    assert_eq!(config.llm.max_model_len, 54000);
    assert_eq!(config.store.event_pack_window(), Duration::ZERO);
    let dynamodb = Config::try_from_args(["sage", "--db_type", "dynamodb"]).unwrap();
    assert_eq!(
        dynamodb.store.event_pack_window(),
        Duration::from_millis(100),
        "DynamoDB prices each item: its deltas wait up to 100 ms to share one"
    );
}

fn start_failure(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(workspace_binary("sage-local"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "start-up should fail for {args:?} {env:?}"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_value_or_unknown_flag_stops_start_up_naming_it() {
    assert!(start_failure(&["--port", "eighty"], &[]).contains("--port"));
    assert!(
        start_failure(&["--context_history_ratio", "1.5"], &[]).contains("--context_history_ratio")
    );
    assert!(start_failure(&["--db_type", "oracle"], &[]).contains("--db_type"));
    assert!(start_failure(&["--no-such-flag"], &[]).contains("--no-such-flag"));
    assert!(start_failure(&["--code_sandbox", "docker"], &[]).contains("--code_sandbox"));
    assert!(
        start_failure(&["--run_max_cost", "5"], &[]).contains("--run_max_cost needs --price_table")
    );
    assert!(start_failure(&["--price_table", "{\"m\": 1}"], &[]).contains("--price_table"));
    // Asked for bubblewrap where there is none: no silent fallback to running code unsandboxed.
    assert!(
        start_failure(
            &["--code_sandbox", "bwrap", "--db_type", "memory"],
            &[("PATH", "/nonexistent")]
        )
        .contains("--code_sandbox bwrap: `bwrap` is not on the PATH")
    );
    assert!(
        start_failure(&[], &[("SAGE_DEFAULT_LLM_MAX_TOKENS", "many")])
            .contains("--default_llm_max_tokens")
    );
    assert!(
        start_failure(&["--event_pack_window_ms", "5000"], &[]).contains("--event_pack_window_ms")
    );
    // The sandbox function's settings belong together, and nothing of them is ignored.
    let memory = ["--db_type", "memory"];
    for (args, says) in [
        (
            &["--code_sandbox", "lambda"][..],
            "--code_sandbox lambda needs --code_sandbox_function",
        ),
        (
            &["--code_sandbox_function", "sandbox"][..],
            "--code_sandbox_function names the sandbox function of --code_sandbox lambda",
        ),
        (
            &[
                "--code_sandbox",
                "lambda",
                "--code_sandbox_function",
                "sandbox",
                "--code_network",
            ][..],
            "--code_network does not apply to --code_sandbox lambda",
        ),
    ] {
        let all: Vec<&str> = args.iter().chain(&memory).copied().collect();
        let stderr = start_failure(&all, &[]);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

async fn model_seen_by_llm(extra_args: &[&str], env: &[(&str, &str)]) -> String {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = ChildGuard(
        Command::new(workspace_binary("sage-local"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--db_path",
            ])
            .arg(dir.path())
            .args([
                "--default_llm_api_key",
                "k",
                "--default_llm_api_base_url",
                &llm.base_url,
            ])
            .args(extra_args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, Duration::from_secs(20)).await;
    post_ndjson(
        &format!("http://127.0.0.1:{port}/api/stream"),
        &user_message("hi"),
    )
    .await;
    let request = llm.requests().await.pop().unwrap();
    request["model"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cli_flag_beats_its_environment_variable_which_beats_the_default() {
    let env = [("SAGE_DEFAULT_LLM_MODEL_NAME", "model-from-env")];
    assert_eq!(
        model_seen_by_llm(&["--default_llm_model_name", "model-from-cli"], &env).await,
        "model-from-cli"
    );
    assert_eq!(model_seen_by_llm(&[], &env).await, "model-from-env");
    assert_eq!(model_seen_by_llm(&[], &[]).await, "deepseek-chat");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shim_starts_with_every_flag_that_acts_and_logs_a_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut args = acting_flag_args();
    args.remove(0);
    let port_at = args.iter().position(|arg| arg == "--port").unwrap();
    args[port_at + 1] = port.to_string();
    let server = ChildGuard(
        Command::new(workspace_binary("sage-local"))
            .args(&args)
            .current_dir(dir.path())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, Duration::from_secs(20)).await;
    let health: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/api/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["data"]["status"], "healthy");
    drop(server);

    let logged = shim_startup_log(dir.path(), &["--db_type", "memory"], &[]).await;
    assert!(logged.contains("no LLM API key configured"), "{logged}");
    assert!(logged.contains("SAGE_DEFAULT_LLM_API_KEY"), "{logged}");
}

/// The text of the start-up warning for a setting given explicitly that the product does not
/// act on yet.
const NOT_ACTED_ON: &str = "accepted but not acted on yet";

/// Each setting that is accepted but not acted on yet, when given explicitly (flag or `SAGE_*`
/// variable), gets one WARN line on stderr at start-up naming its flag; settings left at their
/// defaults, and settings that act, get none.
#[tokio::test(flavor = "multi_thread")]
async fn a_setting_accepted_but_not_acted_on_is_named_in_a_start_up_warning() {
    let dir = tempfile::tempdir().unwrap();
    let logged = shim_startup_log(
        dir.path(),
        &[
            "--db_type",
            "memory",
            "--force_summary",
            "true",
            "--enable_trace",
            "true",
            "--memory_root",
            "/srv/sage/memories",
        ],
        &[
            ("SAGE_LOGS_DIR_PATH", "/srv/sage/logs"),
            ("SAGE_EMBEDDING_MODEL", "text-embedding-3-small"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let warnings: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains(NOT_ACTED_ON))
        .collect();
    for flag in ["--memory_root", "--logs-dir"] {
        let naming: Vec<&str> = warnings
            .iter()
            .copied()
            .filter(|line| line.contains(flag))
            .collect();
        assert_eq!(naming.len(), 1, "one warning naming {flag}:\n{logged}");
        assert!(naming[0].contains("WARN"), "a WARN line: {}", naming[0]);
    }
    assert_eq!(
        warnings.len(),
        2,
        "no warning for a setting that acts:\n{logged}"
    );

    let defaults = shim_startup_log(
        dir.path(),
        &["--db_type", "memory"],
        &[("RUST_LOG", "warn")],
    )
    .await;
    assert!(
        !defaults.contains(NOT_ACTED_ON),
        "settings left at their defaults are not warned about:\n{defaults}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_llm_key_can_come_from_an_ssm_parameter() {
    let endpoint = dynamodb_endpoint();
    let credentials =
        aws_sdk_ssm::config::Credentials::new("testing", "testing", None, None, "tests");
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::Config::builder()
            .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
            .region(aws_sdk_ssm::config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(credentials)
            .build(),
    );
    let name = format!("/sage-test/{}/llm-key", uuid::Uuid::new_v4().simple());
    ssm.put_parameter()
        .name(&name)
        .value("key-from-ssm")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("moto stores the parameter");

    let llm = MockLlm::start(sage_mock_llm::MockOptions {
        api_key: Some("key-from-ssm".into()),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().display().to_string();
    let mut env: Vec<(&str, &str)> = MOTO_ENV.to_vec();
    env.push(("AWS_ENDPOINT_URL_SSM", &endpoint));
    let server = ShimProcess::start(
        dir.path(),
        &[
            "--db_path",
            &db,
            "--default_llm_api_base_url",
            &llm.base_url,
            "--default_llm_api_key_parameter",
            &name,
        ],
        &env,
    )
    .await;
    let events = post_ndjson(&format!("{}/api/stream", server.url), &user_message("hi")).await;
    assert!(of_type(&events, "error").is_empty(), "{events:?}");
    assert!(!answer_text(&events).is_empty());

    let missing = Command::new(workspace_binary("sage-local"))
        .args([
            "--db_type",
            "memory",
            "--default_llm_api_key_parameter",
            "/sage-test/missing",
        ])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("/sage-test/missing"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn context_ratios_that_do_not_add_up_to_one_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let logged = shim_startup_log(
        dir.path(),
        &["--db_type", "memory", "--context_active_ratio", "0.6"],
        &[("RUST_LOG", "warn")],
    )
    .await;
    assert!(
        logged.contains("add up to 1.30, not 1"),
        "a warning names the sum:\n{logged}"
    );
    let balanced = shim_startup_log(
        dir.path(),
        &[
            "--db_type",
            "memory",
            "--context_active_ratio",
            "0.6",
            "--context_max_new_message_ratio",
            "0.2",
        ],
        &[("RUST_LOG", "warn")],
    )
    .await;
    assert!(!balanced.contains("add up to"), "{balanced}");
}
