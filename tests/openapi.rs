//! `/openapi.json`: a valid OpenAPI 3.1 document of every route, each function serving its own
//! part, and generated requests (schemathesis) that never get a 5xx or an answer outside it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use reqwest::Method;
use sage_mock_llm::MockOptions;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::*;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// `(METHOD, path)` of every operation the document lists.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(|method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

fn venv_tool(name: &str) -> PathBuf {
    python().with_file_name(name)
}

async fn document_of(router: axum::Router) -> Value {
    let response = router
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).expect("the document is JSON")
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1_with_the_envelope_and_the_stream() {
    let env = AppEnv::new().await;
    let (status, document) = env.app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(document["openapi"], "3.1.0");

    let file = env.dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let validated = std::process::Command::new(python())
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("openapi-spec-validator runs (tests/run.sh installs it)");
    assert!(
        validated.status.success(),
        "the document is not valid OpenAPI: {}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );

    // Every operation answers its errors in the envelope.
    let schemas = &document["components"]["schemas"];
    assert_eq!(
        schemas["ErrorBody"]["required"],
        json!(["code", "message", "error_detail", "timestamp"])
    );
    for (method, path) in operations(&document) {
        let operation = &document["paths"][&path][method.to_lowercase()];
        assert_eq!(
            operation["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{method} {path} documents no error envelope"
        );
        assert!(operation["operationId"].is_string(), "{method} {path}");
    }

    // The stream: both framings of the event object, whose tail types are listed.
    let stream = &document["paths"]["/api/stream"]["post"];
    assert_eq!(
        stream["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/StreamRequest"
    );
    for media in ["application/x-ndjson", "text/event-stream"] {
        assert_eq!(
            stream["responses"]["200"]["content"][media]["schema"]["$ref"],
            "#/components/schemas/Event",
            "{media}"
        );
    }
    let event = &schemas["Event"];
    for field in ["type", "session_id", "timestamp"] {
        assert!(
            event["required"]
                .as_array()
                .unwrap()
                .contains(&json!(field)),
            "Event requires {field}"
        );
    }
    let types = schemas["EventType"]["enum"].as_array().unwrap();
    for kind in ["tool_call", "token_usage", "stream_end", "error"] {
        assert!(types.contains(&json!(kind)), "EventType lacks {kind}");
    }
    assert!(
        schemas["StreamRequest"]["required"] == json!(["messages"]),
        "only messages is required: {}",
        schemas["StreamRequest"]
    );
}

/// Sage's routes as `api.md` and `sage-client.md` name them: each must be in the document.
const CONTRACT: &[(&str, &str)] = &[
    ("POST", "/api/stream"),
    ("POST", "/api/chat"),
    ("POST", "/api/web-stream"),
    ("GET", "/api/stream/resume/{session_id}"),
    ("POST", "/api/mcp/add"),
    ("GET", "/api/mcp/list"),
    ("DELETE", "/api/mcp/{name}"),
    ("POST", "/api/mcp/{name}/refresh"),
    ("PUT", "/api/mcp/{name}/toggle"),
    ("GET", "/api/tools"),
    ("POST", "/api/tools/exec"),
    ("GET", "/api/conversations"),
    ("GET", "/api/conversations/{session_id}/messages"),
    ("GET", "/api/share/conversations/{session_id}/messages"),
    ("DELETE", "/api/conversations/{session_id}"),
    ("PUT", "/api/conversations/{session_id}/title"),
    ("POST", "/api/sessions/{session_id}/interrupt"),
    ("POST", "/api/sessions/{session_id}/tasks_status"),
    ("POST", "/api/sessions/{session_id}/file_workspace"),
    ("GET", "/api/sessions/{session_id}/file_workspace/download"),
    ("GET", "/api/health"),
    ("GET", "/health"),
    ("GET", "/active"),
    ("GET", "/api/health/ready"),
    ("POST", "/api/user/login"),
    ("GET", "/api/user/check_login"),
    ("GET", "/api/system/info"),
    ("GET", "/api/agent/list"),
    ("POST", "/api/agent/create"),
    ("GET", "/api/agent/template/default_system_prompt"),
    ("GET", "/api/llm-provider/list"),
    ("GET", "/api/skills"),
    ("POST", "/api/skills/upload"),
    ("GET", "/api/knowledge-base/list"),
    ("POST", "/api/knowledge-base/retrieve"),
    ("POST", "/api/oss/upload"),
];

#[tokio::test]
async fn every_route_is_in_the_document_and_every_documented_route_is_served() {
    let env = AppEnv::new().await;
    let (_, document) = env.app.get_json("/openapi.json").await;
    let documented = operations(&document);
    for (method, path) in CONTRACT {
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is missing from /openapi.json"
        );
    }

    // A route registered beside the document (plain `.route`, `nest`) would be served and
    // undocumented: every router registers its handlers through `routes!`.
    let routes_dir = workspace_root().join("shared/src/http/routes");
    for entry in std::fs::read_dir(&routes_dir).unwrap() {
        let path = entry.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap();
        for bypass in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            assert!(
                !source.contains(bypass),
                "{} registers a route with `{bypass}`, which /openapi.json cannot see",
                path.display()
            );
        }
    }

    // And every documented operation exists: called with placeholder parameters, none answers
    // "no such route" or 405.
    let base = TestEnv::new().await;
    let client = reqwest::Client::new();
    for (method, path) in &documented {
        let concrete = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "placeholder"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method.clone(), format!("{}{concrete}", base.server.url))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {path}: method not allowed");
        assert!(
            !(status == 404 && body.contains("no such route")),
            "{method} {path} is documented but not served"
        );
    }
}

#[tokio::test]
async fn each_function_serves_the_document_of_its_own_routes() {
    let env = AppEnv::new().await;
    let state = env.app.state.clone();
    let (_, whole) = env.app.get_json("/openapi.json").await;
    let functions = [
        ("stream", sage_core::stream_router(state.clone())),
        ("mcp", sage_core::mcp_admin_router(state.clone())),
        ("session", sage_core::session_router(state.clone())),
        ("health", sage_core::health_router(state.clone())),
    ];
    let mut union = BTreeSet::new();
    for (tag, router) in functions {
        let document = document_of(router).await;
        let own = operations(&document);
        assert!(!own.is_empty(), "{tag} documents no route");
        for (method, path) in &own {
            let operation = &document["paths"][path][method.to_lowercase()];
            assert_eq!(
                operation["tags"],
                json!([tag]),
                "{method} {path} in the {tag} function's document"
            );
        }
        union.extend(own);
    }
    assert_eq!(
        union,
        operations(&whole),
        "the functions' documents together are the local one"
    );
}

/// Generated requests against every route, with auth on and an admin's token: no 5xx, no answer
/// outside the documented schema or content type, no request left without an answer within the
/// timeout. The configuration is `tests/fuzz/schemathesis.toml`.
#[tokio::test]
async fn generated_requests_get_documented_answers_and_never_a_server_error() {
    let llm = MockLlm::start(MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let password = "Fuzz-admin-pass-1";
    let jwt_key = "0123456789abcdef0123456789abcdef";
    let shim = sage_local_on_file_store(
        dir.path(),
        &llm.base_url,
        &[
            "--no_auth",
            "false",
            "--jwt_key",
            jwt_key,
            "--admin_password",
            password,
            "--mcp_allow_stdio",
            "false",
        ],
        &[],
    )
    .await;
    let (status, login) = send_json(
        Method::POST,
        &format!("{}/api/user/login", shim.url),
        &json!({"username": "admin", "password": password}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let token = login["data"]["access_token"].as_str().unwrap();

    let schemathesis = venv_tool("schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing; run `bash tests/run.sh`, which installs it",
        schemathesis.display()
    );
    let config = workspace_root().join("tests/fuzz/schemathesis.toml");
    let mut command = tokio::process::Command::new(&schemathesis);
    command
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/openapi.json", shim.url))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "40",
            // Two workers parse Hypothesis' lambdas in two threads, which trips CPython 3.11's
            // "AST constructor recursion depth mismatch" now and then (a generator crash, not an
            // answer of ours); one worker is as fast on two cores.
            "--workers",
            "1",
            "--no-color",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Ok(seed) = std::env::var("SAGE_FUZZ_SEED") {
        command.args(["--seed", &seed]);
    }
    let run = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("schemathesis finishes within 10 minutes")
        .expect("schemathesis runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        run.status.success(),
        "schemathesis found failures:\n{output}"
    );

    let generated = output
        .lines()
        .find_map(|line| {
            let line = line.trim();
            let (count, rest) = line.split_once(' ')?;
            rest.starts_with("generated")
                .then(|| count.parse::<u64>().ok())?
        })
        .unwrap_or_else(|| panic!("no count of generated cases in:\n{output}"));
    assert!(
        generated >= 2_000,
        "only {generated} generated requests:\n{output}"
    );
    let (_, document) = get_json(&format!("{}/openapi.json", shim.url)).await;
    let tested = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested: "))
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        tested,
        operations(&document).len().to_string(),
        "every operation is tested:\n{output}"
    );
}
