//! Each function binary under cargo-lambda's emulator, fed the events AWS sends (fixtures in
//! `tests/fixtures/`): API Gateway REST (v1), HTTP API (v2) and Function URL payloads through
//! `cargo lambda invoke`, and Stream's answer arriving incrementally through the emulator's
//! Invoke API. Also `cargo lambda deploy --dry`, which must pick up each function's metadata
//! and agree with the SAM template.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use clap::CommandFactory;
use sage_core::Config;
use sage_mock_llm::MockOptions;
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    let path = workspace_root().join("tests/fixtures").join(name);
    assert!(path.exists(), "fixture {} is missing", path.display());
    path
}

fn template() -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(workspace_root().join("template.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("template.yaml parses")
}

/// The Lambda runtime variables the template sets on every function (`AWS_LAMBDA_*`, read by
/// lambda_http), so the emulated function routes events exactly as the deployed one.
fn template_runtime_vars() -> Vec<String> {
    let template = template();
    let vars = template["Globals"]["Function"]["Environment"]["Variables"]
        .as_mapping()
        .expect("the template sets variables in Globals");
    let runtime: Vec<String> = vars
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str()?;
            let value = value.as_str()?;
            name.starts_with("AWS_LAMBDA_")
                .then(|| format!("{name}={value}"))
        })
        .collect();
    assert!(
        runtime
            .iter()
            .any(|var| var == "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH=true"),
        "REST API events carry their stage in the path; the template must tell lambda_http to drop it"
    );
    runtime
}

/// cargo-lambda's emulator serving Lambda's APIs, and the built bootstrap of each of `functions`
/// (`cargo lambda build`, as deployed) taking its invocations. The DynamoDB store (moto, a fresh
/// table), as in the cloud, and the template's runtime variables.
struct Emulator {
    port: u16,
    table: String,
    _functions: Vec<ChildGuard>,
    _apis: ChildGuard,
}

impl Emulator {
    async fn start(functions: &[&str], extra_env: &[String]) -> Self {
        let port = free_port();
        let table = fresh_name("lambda");
        let mut env_vars = vec![
            "SAGE_DB_TYPE=dynamodb".to_owned(),
            format!("SAGE_DYNAMODB_ENDPOINT={}", dynamodb_endpoint()),
            format!("SAGE_DYNAMODB_TABLE={table}"),
            // Files in an S3 bucket, as in the cloud (moto serves S3 beside DynamoDB).
            format!("SAGE_MINIO_ENDPOINT={}", dynamodb_endpoint()),
            format!("SAGE_MINIO_BUCKET_NAME={table}"),
            "SAGE_PRESET_RUNNING_CONFIG_PATH=/nonexistent/agent_setting.json".to_owned(),
            "SAGE_MCP_CONFIG_PATH=/nonexistent/mcp_setting.json".to_owned(),
            // The emulator serves Lambda's Invoke API: a function that calls another (Stream
            // calling the sandbox function) reaches it here.
            format!("AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:{port}"),
        ];
        env_vars.extend(
            MOTO_ENV
                .iter()
                .map(|(name, value)| format!("{name}={value}")),
        );
        env_vars.extend(template_runtime_vars());
        env_vars.extend_from_slice(extra_env);
        let apis = start_lambda_apis(port).await;
        let env_vars: Vec<(String, String)> = env_vars
            .iter()
            .map(|var| {
                let (name, value) = var.split_once('=').expect("NAME=value");
                (name.to_owned(), value.to_owned())
            })
            .collect();
        let functions = functions
            .iter()
            .map(|function| start_bootstrap(function, port, &env_vars))
            .collect();
        Self {
            port,
            table,
            _functions: functions,
            _apis: apis,
        }
    }

    /// `cargo lambda invoke FUNCTION --data-file FIXTURE`: the function's raw answer.
    async fn invoke(&self, function: &str, fixture_name: &str) -> Vec<u8> {
        self.invoke_file(function, &fixture(fixture_name), fixture_name)
            .await
    }

    /// Invokes with `event`, written to a file first.
    async fn invoke_event(&self, function: &str, event: &Value, label: &str) -> Vec<u8> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), event.to_string()).unwrap();
        self.invoke_file(function, file.path(), label).await
    }

    async fn invoke_file(
        &self,
        function: &str,
        data: &std::path::Path,
        fixture_name: &str,
    ) -> Vec<u8> {
        let mut command = tokio::process::Command::new(cargo_lambda());
        command
            .args(["lambda", "invoke", function, "--data-file"])
            .arg(data)
            .args([
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &self.port.to_string(),
            ])
            .current_dir(workspace_root())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .unwrap_or_else(|_| panic!("invoking {function} with {fixture_name} timed out"))
            .expect("cargo lambda invoke runs");
        assert!(
            output.status.success(),
            "cargo lambda invoke {function} {fixture_name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }
}

/// The JSON an API Gateway or Function URL integration gets back from a buffered function.
fn health_answer(raw: &[u8], fixture_name: &str) -> Value {
    let response: Value = serde_json::from_slice(raw)
        .unwrap_or_else(|_| panic!("{fixture_name}: not JSON: {}", String::from_utf8_lossy(raw)));
    assert_eq!(response["statusCode"], 200, "{fixture_name}: {response}");
    assert_eq!(response["isBase64Encoded"], false, "{fixture_name}");
    let body = response["body"].as_str().expect("a text body");
    serde_json::from_str(body).expect("the body is the JSON envelope")
}

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_rest_v1_http_v2_and_function_url_events() {
    // The fixtures are what each integration sends.
    let rest: Value =
        serde_json::from_slice(&std::fs::read(fixture("apigw-rest-health.json")).unwrap()).unwrap();
    assert_eq!(rest["requestContext"]["stage"], "prod");
    assert!(rest["multiValueHeaders"].is_object() && rest["version"].is_null());
    for name in ["apigw-http-health.json", "function-url-health.json"] {
        let v2: Value = serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap();
        assert_eq!(v2["version"], "2.0", "{name}");
        assert_eq!(v2["requestContext"]["http"]["method"], "GET", "{name}");
    }

    let emulator = Emulator::start(&["sage-health"], &[]).await;
    for name in [
        "apigw-rest-health.json",
        "apigw-http-health.json",
        "function-url-health.json",
    ] {
        let raw = emulator.invoke("sage-health", name).await;
        let envelope = health_answer(&raw, name);
        assert_eq!(envelope["code"], 200, "{name}: {envelope}");
        assert_eq!(envelope["data"]["status"], "healthy", "{name}: {envelope}");
        assert_eq!(envelope["data"]["service"], "SagePlatform", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_admin_and_session_answer_rest_v1_http_v2_and_function_url_events() {
    let emulator = Emulator::start(&["sage-mcp-admin", "sage-session"], &[]).await;
    for kind in ["apigw-rest", "apigw-http", "function-url"] {
        let name = format!("{kind}-mcp-list.json");
        let raw = emulator.invoke("sage-mcp-admin", &name).await;
        let envelope = health_answer(&raw, &name);
        assert_eq!(envelope["code"], 200, "{name}: {envelope}");
        assert!(envelope["data"]["servers"].is_array(), "{name}: {envelope}");

        let name = format!("{kind}-conversations.json");
        let raw = emulator.invoke("sage-session", &name).await;
        let envelope = health_answer(&raw, &name);
        assert_eq!(envelope["code"], 200, "{name}: {envelope}");
        assert_eq!(envelope["data"]["total"], 0, "{name}: {envelope}");
        assert_eq!(envelope["data"]["page"], 1, "{name}: {envelope}");
    }
}

/// The status and the envelope of a buffered function's answer.
fn status_and_envelope(raw: &[u8], fixture_name: &str) -> (u64, Value) {
    let response: Value = serde_json::from_slice(raw)
        .unwrap_or_else(|_| panic!("{fixture_name}: not JSON: {}", String::from_utf8_lossy(raw)));
    let body = response["body"].as_str().expect("a text body");
    let envelope = serde_json::from_str(body).expect("the body is the JSON envelope");
    (response["statusCode"].as_u64().unwrap(), envelope)
}

/// With auth on, the identity an API Gateway authorizer put in the request context decides who
/// calls: Cognito claims (REST), JWT authorizer claims (HTTP API), an IAM signer acting for the
/// user it names. The Authorization header is then the gateway's, not a token of ours.
#[tokio::test(flavor = "multi_thread")]
async fn with_auth_on_the_session_function_trusts_the_authorizers_identity() {
    let emulator = Emulator::start(
        &["sage-session"],
        &[
            "SAGE_NO_AUTH=false".to_owned(),
            "SAGE_JWT_KEY=lambda-test-jwt-key-0123456789abcdef".to_owned(),
        ],
    )
    .await;
    let store = dynamo_store(&emulator.table).await;
    use sage_core::store::SessionStore;
    let session = sage_core::store::SessionRecord::new(
        "s-cognito",
        "cognito-user-1",
        "from the identity provider",
    );
    store.create_session(&session).await.unwrap();

    let name = "apigw-rest-conversations.json";
    let (status, envelope) =
        status_and_envelope(&emulator.invoke("sage-session", name).await, name);
    assert_eq!(
        (status, &envelope["code"]),
        (401, &Value::from(401)),
        "{name}: {envelope}"
    );

    for name in [
        "apigw-rest-conversations-cognito.json",
        "apigw-http-conversations-jwt.json",
        "apigw-rest-conversations-iam.json",
    ] {
        let (status, envelope) =
            status_and_envelope(&emulator.invoke("sage-session", name).await, name);
        assert_eq!(status, 200, "{name}: {envelope}");
        let listed: Vec<&str> = envelope["data"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, ["s-cognito"], "{name}: {envelope}");
    }

    // A sample of the isolation matrix, as a Cognito user of the REST API: another user's
    // conversations, messages and skill stay out of reach; their own lists answer.
    let other = sage_core::store::SessionRecord::new("s-other", "other-user", "other's words");
    store.create_session(&other).await.unwrap();
    use sage_core::store::SkillStore;
    store
        .put_skill(&sage_core::store::SkillRecord {
            name: "other-skill".into(),
            owner: "other-user".into(),
            description: "other's words".into(),
            package: json!({"instructions": "other's words", "files": []}),
            created_at: 1.0,
            updated_at: 1.0,
        })
        .await
        .unwrap();
    let cognito: Value = serde_json::from_slice(
        &std::fs::read(fixture("apigw-rest-conversations-cognito.json")).unwrap(),
    )
    .unwrap();
    type Query<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, &str, Query, u64); 6] = [
        (
            "GET",
            "/api/conversations",
            &[("user_id", "other-user")],
            403,
        ),
        ("GET", "/api/conversations/s-other/messages", &[], 403),
        (
            "GET",
            "/api/skills/content",
            &[("name", "other-skill")],
            404,
        ),
        ("DELETE", "/api/skills", &[("name", "other-skill")], 404),
        ("GET", "/api/skills", &[], 200),
        ("GET", "/api/agent/list", &[], 200),
    ];
    for (method, path, query, expected) in cases {
        let mut event = cognito.clone();
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        set_rest_request(&mut event, method, path, "/api/{proxy+}", &query);
        let label = format!("{method} {path}");
        let (status, envelope) = status_and_envelope(
            &emulator.invoke_event("sage-session", &event, &label).await,
            &label,
        );
        assert_eq!(status, expected, "{label}: {envelope}");
        assert!(
            !envelope.to_string().contains("other's words"),
            "{label}: {envelope}"
        );
    }
    assert!(
        store.skill("other-skill").await.unwrap().is_some(),
        "the other user's skill is still there"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_answers_the_function_url_event_incrementally() {
    let delay = Duration::from_millis(150);
    let llm = MockLlm::start(MockOptions {
        token_delay: delay,
        ..Default::default()
    })
    .await;
    let emulator = Emulator::start(
        &["sage-stream"],
        &[
            "SAGE_DEFAULT_LLM_API_KEY=test-key".to_owned(),
            format!("SAGE_DEFAULT_LLM_API_BASE_URL={}", llm.base_url),
        ],
    )
    .await;
    let event = std::fs::read(fixture("function-url-stream.json")).unwrap();
    let request: Value = serde_json::from_slice(&event).unwrap();
    assert_eq!(request["requestContext"]["http"]["method"], "POST");
    assert_eq!(request["rawPath"], "/api/stream");

    // Through `cargo lambda invoke` (which prints the body once the stream is over).
    let raw = emulator
        .invoke("sage-stream", "function-url-stream.json")
        .await;
    let text = String::from_utf8(raw).expect("UTF-8 NDJSON");
    let events: Vec<Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_tail(&events, &session_of(&events));
    assert_eq!(answer_text(&events), "tok0 tok1 tok2 tok3 ");

    // Through the emulator's Invoke API, as Lambda streams to a RESPONSE_STREAM Function URL:
    // events arrive while the run goes on.
    let url = format!(
        "http://127.0.0.1:{}/2015-03-31/functions/sage-stream/invocations",
        emulator.port
    );
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(event)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["lambda-runtime-function-response-mode"],
        "streaming",
        "the function answers with lambda_http's streaming runner"
    );
    let arrivals = read_arrivals(response).await;
    let events: Vec<Value> = arrivals.iter().map(|(_, event)| event.clone()).collect();
    assert_tail(&events, &session_of(&events));
    assert_eq!(answer_text(&events), "tok0 tok1 tok2 tok3 ");
    assert_incremental(&arrivals, delay * 2);
}

/// Jobs under the emulator, invoked with the payload the template's schedule sends and with an
/// EventBridge scheduled event: the changed session is summarized once, on DynamoDB.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_summarizes_on_the_schedules_payload_and_on_a_scheduled_event() {
    let llm = MockLlm::start(MockOptions::default()).await;
    let emulator = Emulator::start(
        &["sage-jobs"],
        &[
            "SAGE_DEFAULT_LLM_API_KEY=test-key".to_owned(),
            format!("SAGE_DEFAULT_LLM_API_BASE_URL={}", llm.base_url),
        ],
    )
    .await;
    let store = dynamo_store(&emulator.table).await;
    let mut session = sage_core::store::SessionRecord::new("lambda-job-1", "ada", "a title");
    store.create_session(&session).await.unwrap();
    let said = sage_core::wire::Event {
        content: Some(Value::String("what is a summary".into())),
        message_id: Some("m1".into()),
        ..sage_core::wire::Event::new(
            "lambda-job-1",
            sage_core::wire::Role::User,
            sage_core::wire::EventType::Normal,
        )
    };
    store
        .append_events(
            "lambda-job-1",
            &[sage_core::wire::StoredEvent::new(1, said)],
        )
        .await
        .unwrap();
    session.log_seq = 1;
    store.update_session(&session).await.unwrap();

    let raw = emulator.invoke("sage-jobs", "scheduled-summary.json").await;
    let report: Value = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&raw)));
    assert_eq!(report["job"], "summarize", "{report}");
    assert_eq!(
        report["summarized"],
        serde_json::json!(["lambda-job-1"]),
        "{report}"
    );
    let summary = store
        .session_summary("lambda-job-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.summary, "Summary: what is a summary");
    assert_eq!(summary.covers_seq, 1);

    let raw = emulator
        .invoke("sage-jobs", "eventbridge-scheduled-event.json")
        .await;
    let report: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        report["summarized"],
        serde_json::json!([]),
        "nothing new: {report}"
    );
}

/// The template function whose build produces `binary`, with Globals applied for one property.
fn template_property(binary: &str, property: &str) -> u64 {
    let template = template();
    let resources = template["Resources"].as_mapping().unwrap();
    let function = resources
        .values()
        .find(|r| r["Metadata"]["BuildProperties"]["Binary"] == binary)
        .unwrap_or_else(|| panic!("template.yaml has no function built from {binary}"));
    function["Properties"][property]
        .as_u64()
        .or_else(|| template["Globals"]["Function"][property].as_u64())
        .unwrap_or_else(|| panic!("{binary}: no {property}"))
}

#[test]
fn cargo_lambda_deploy_uses_each_functions_metadata_and_agrees_with_the_template() {
    let settings: BTreeSet<String> = Config::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    for (binary, dir) in FUNCTIONS {
        let manifest =
            std::fs::read_to_string(workspace_root().join(dir).join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("merge_env = true"),
            "{binary}: a code push keeps the variables SAM set (table, bucket, key parameter)"
        );
        // A copy of the binary, so the zip cargo-lambda writes beside it stays out of target/.
        let scratch = tempfile::tempdir().unwrap();
        let copy = scratch.path().join(binary);
        std::fs::copy(workspace_binary(binary), &copy).unwrap();
        let output = Command::new(cargo_lambda())
            .args([
                "lambda",
                "deploy",
                "--dry",
                "--output-format",
                "json",
                "--binary-path",
            ])
            .arg(&copy)
            .arg(binary)
            .current_dir(workspace_root())
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("cargo lambda deploy runs");
        assert!(
            output.status.success(),
            "cargo lambda deploy --dry {binary}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let json_start = stdout.find('{').expect("JSON output");
        let plan: Value = serde_json::from_str(&stdout[json_start..]).unwrap();
        assert_eq!(plan["name"], binary);
        let config = &plan["config"];
        assert_eq!(config["runtime"], "provided.al2023", "{binary}");
        assert_eq!(
            config["memory"].as_u64().unwrap(),
            template_property(binary, "MemorySize"),
            "{binary}: memory as in template.yaml"
        );
        assert_eq!(
            config["timeout"].as_u64().unwrap(),
            template_property(binary, "Timeout"),
            "{binary}: timeout as in template.yaml"
        );
        assert_eq!(
            config["enable_function_url"], false,
            "{binary}: cargo-lambda would create a BUFFERED URL; URLs come from the template"
        );
        if binary == "sage-sandbox" {
            assert!(
                config["env_var"].as_array().is_none_or(Vec::is_empty),
                "the sandbox function is given no settings: {config}"
            );
            assert!(Path::new(&scratch.path().join("bootstrap.zip")).exists());
            continue;
        }
        let vars: Vec<&str> = config["env_var"]
            .as_array()
            .expect("deploy variables")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            vars.contains(&"SAGE_DB_TYPE=dynamodb"),
            "{binary}: {vars:?}"
        );
        for var in &vars {
            let name = var.split('=').next().unwrap();
            assert!(
                settings.contains(name) || name.starts_with("AWS_LAMBDA_"),
                "{binary}: {name} is not a setting of sage_core::Config"
            );
        }
        assert!(Path::new(&scratch.path().join("bootstrap.zip")).exists());
    }
}

/// With `SAGE_TRACE_JAEGER_URL`, a buffered function sends the request's spans before its
/// invocation returns: the batch timer is set to a minute, so only the flush can have sent them.
#[tokio::test(flavor = "multi_thread")]
async fn a_functions_spans_arrive_before_its_invocation_returns() {
    let (otlp_url, spans) = crate::traces::receiver().await;
    let emulator = Emulator::start(
        &["sage-session"],
        &[
            format!("SAGE_TRACE_JAEGER_URL={otlp_url}"),
            "OTEL_BSP_SCHEDULE_DELAY=60000".to_owned(),
        ],
    )
    .await;
    let name = "apigw-rest-conversations.json";
    let (status, envelope) =
        status_and_envelope(&emulator.invoke("sage-session", name).await, name);
    assert_eq!(status, 200, "{envelope}");
    let received = spans.lock().unwrap().clone();
    let request = received
        .iter()
        .find(|span| span.name == "request")
        .unwrap_or_else(|| panic!("the request span arrived with the answer: {received:#?}"));
    assert_eq!(
        request.attributes["path"], "/api/conversations",
        "{request:?}"
    );
    assert_eq!(request.service, "sage-session");
}

/// In the cloud the code tools run in the sandbox function: Stream, under the emulator, sends the
/// session's files to `sage-sandbox` (its own Lambda function), which runs the program with an
/// empty environment and answers with the files it made; Stream keeps them in the bucket.
#[tokio::test(flavor = "multi_thread")]
async fn stream_runs_the_code_tools_in_the_sandbox_function() {
    let llm = MockLlm::start(MockOptions::default()).await;
    let emulator = Emulator::start(
        &["sage-stream", "sage-sandbox"],
        &[
            "SAGE_DEFAULT_LLM_API_KEY=test-key".to_owned(),
            format!("SAGE_DEFAULT_LLM_API_BASE_URL={}", llm.base_url),
            "SAGE_CODE_SANDBOX=lambda".to_owned(),
            "SAGE_CODE_SANDBOX_FUNCTION=sage-sandbox".to_owned(),
            "SAGE_CODE_TIMEOUT_SECONDS=20".to_owned(),
        ],
    )
    .await;
    let objects = s3_objects(&emulator.table, None).await;
    let data = sage_core::blob::ObjectKey::parse("sandbox-1/data.txt").unwrap();
    sage_core::blob::ObjectStore::put(&objects, &data, "from the bucket".into())
        .await
        .unwrap();

    let code = "import os\nprint(open('data.txt').read().upper())\nprint(sorted(k for k in os.environ if k.startswith(('AWS', 'SAGE'))))\nos.makedirs('out', exist_ok=True)\nopen('out/made.txt', 'w').write('made in the sandbox')";
    let message = format!("call:execute_python_code{}", json!({"code": code}));
    let body = json!({"session_id": "sandbox-1", "available_tools": ["execute_python_code"],
                      "messages": [{"role": "user", "content": message}]});
    let mut event: Value =
        serde_json::from_slice(&std::fs::read(fixture("function-url-stream.json")).unwrap())
            .unwrap();
    event["body"] = Value::String(body.to_string());
    event["headers"]["content-length"] = Value::String(body.to_string().len().to_string());
    let raw = emulator
        .invoke_event("sage-stream", &event, "code tool call")
        .await;
    let events: Vec<Value> = String::from_utf8(raw)
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_tail(&events, "sandbox-1");
    let result = &of_type(&events, "tool_call_result")[0]["content"];
    assert_eq!(result["exit_code"], 0, "{result}");
    assert_eq!(
        result["stdout"], "FROM THE BUCKET\n[]\n",
        "the program reads the session's file and sees no credentials or settings: {result}"
    );
    assert_eq!(result["files_changed"], json!(["out/made.txt"]));
    let made = sage_core::blob::ObjectKey::parse("sandbox-1/out/made.txt").unwrap();
    let read = sage_core::blob::ObjectStore::get(&objects, &made)
        .await
        .unwrap()
        .expect("the made file is in the bucket");
    let bytes: Vec<u8> =
        futures_util::TryStreamExt::try_fold(read.body, Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .unwrap();
    assert_eq!(bytes, b"made in the sandbox");
}

/// Makes a REST API event ask for `method path` (under the route `resource`) with `query`.
fn set_rest_request(
    event: &mut Value,
    method: &str,
    path: &str,
    resource: &str,
    query: &[(String, String)],
) {
    event["httpMethod"] = json!(method);
    event["path"] = json!(path);
    event["resource"] = json!(resource);
    event["requestContext"]["httpMethod"] = json!(method);
    event["requestContext"]["path"] = json!(format!("/prod{path}"));
    event["requestContext"]["resourcePath"] = json!(resource);
    let single: serde_json::Map<String, Value> =
        query.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let multi: serde_json::Map<String, Value> =
        query.iter().map(|(k, v)| (k.clone(), json!([v]))).collect();
    let (single, multi) = if query.is_empty() {
        (Value::Null, Value::Null)
    } else {
        (Value::Object(single), Value::Object(multi))
    };
    event["queryStringParameters"] = single;
    event["multiValueQueryStringParameters"] = multi;
}

/// A REST API event for MCP-admin's `method path` with `query` and a JSON `body`.
fn rest_event(method: &str, path: &str, query: &[(String, String)], body: Option<&Value>) -> Value {
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("apigw-rest-mcp-list.json")).unwrap(),
    )
    .unwrap();
    set_rest_request(&mut event, method, path, "/api/mcp/{proxy+}", query);
    if let Some(body) = body {
        event["body"] = json!(body.to_string());
        event["headers"]["Content-Type"] = json!("application/json");
        event["multiValueHeaders"]["Content-Type"] = json!(["application/json"]);
    }
    event
}

/// In the cloud's shape (MCP-admin on DynamoDB, fed REST API events): a server added with OAuth
/// sends the user back to the stage's own URL, and the redirect's event completes the
/// authorization and lists the server's tools.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_admin_authorizes_an_oauth_server_from_rest_api_events() {
    let peer = OAuthPeer::start(3600).await;
    let emulator = Emulator::start(
        &["sage-mcp-admin"],
        &["SAGE_JWT_KEY=lambda-events-jwt-key-0123456789abcdef".to_owned()],
    )
    .await;
    let add = rest_event(
        "POST",
        "/api/mcp/add",
        &[],
        Some(&json!({"name": "guarded", "user_id": "alice",
                     "streamable_http_url": peer.url(), "oauth": {}})),
    );
    let (status, added) = status_and_envelope(
        &emulator.invoke_event("sage-mcp-admin", &add, "add").await,
        "add",
    );
    assert_eq!(status, 200, "{added}");
    let authorization_url = added["data"]["authorization_url"].as_str().unwrap();
    let redirect = url::Url::parse(authorization_url)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "redirect_uri")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(
        redirect,
        "https://a1b2c3d4e5.execute-api.eu-central-1.amazonaws.com/prod/api/mcp/oauth/callback"
    );

    let back = url::Url::parse(&approve(authorization_url).await).unwrap();
    assert_eq!(back.path(), "/prod/api/mcp/oauth/callback");
    let query: Vec<(String, String)> = back.query_pairs().into_owned().collect();
    let callback = rest_event("GET", "/api/mcp/oauth/callback", &query, None);
    let (status, done) = status_and_envelope(
        &emulator
            .invoke_event("sage-mcp-admin", &callback, "callback")
            .await,
        "callback",
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["data"]["tools"], json!(["whoami", "echo"]));
    let stats = peer.stats().await;
    assert_eq!(stats["code_exchanges"], 1, "{stats}");
}
