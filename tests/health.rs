//! The Health function's routes, called in process.

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_on_both_paths_and_active_says_available() {
    let env = AppEnv::new().await;
    for path in ["/api/health", "/health"] {
        let (status, body) = env.app.get_json(path).await;
        assert_eq!(status, 200);
        assert_eq!(body["code"], 200);
        assert_eq!(body["data"]["status"], "healthy");
        assert_eq!(body["data"]["service"], "SagePlatform");
        assert!(body["data"]["version"].is_string());
        assert!(body["timestamp"].is_f64());
    }
    let (status, body) = env.app.get_json("/active").await;
    assert_eq!(status, 200);
    assert_eq!(body, "Service is available.");
}

fn checks(body: &serde_json::Value) -> Vec<&str> {
    body["data"]["checks"]
        .as_array()
        .expect("a list of checks")
        .iter()
        .map(|check| check.as_str().expect("each check is a line"))
        .collect()
}

/// The one check line about the LLM: `llm (<base url>): <state>`.
fn llm_line<'a>(lines: &[&'a str]) -> &'a str {
    let llm: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| line.starts_with("llm ("))
        .collect();
    assert_eq!(llm.len(), 1, "one LLM check: {lines:?}");
    llm[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_checks_each_dependency() {
    let env = AppEnv::new().await;
    let (status, body) = env.app.get_json("/api/health/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["ready"], true);
    let lines = checks(&body);
    assert!(
        lines.iter().any(|c| c.starts_with("store (File): ok")),
        "{lines:?}"
    );
    assert!(llm_line(&lines).ends_with("): reachable"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_is_a_503_when_the_llm_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let down_url = format!("http://127.0.0.1:{}/v1", free_port());
    let app = App::new(test_config(&down_url, dir.path(), &[])).await;
    let (status, body) = app.get_json("/api/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], 503);
    assert_eq!(body["data"]["ready"], false);
    let lines = checks(&body);
    assert!(llm_line(&lines).ends_with("): unreachable"), "{lines:?}");
    assert!(
        lines.iter().any(|c| c.starts_with("store (File): ok")),
        "only the LLM is down: {lines:?}"
    );
}
