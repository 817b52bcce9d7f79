//! The Health function's routes.

use sage_e2e::*;
use serde_json::Value;

async fn get(url: String) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_on_both_paths_and_active_says_available() {
    let env = TestEnv::new().await;
    for path in ["/api/health", "/health"] {
        let (status, body) = get(format!("{}{path}", env.server.url)).await;
        assert_eq!(status, 200);
        assert_eq!(body["code"], 200);
        assert_eq!(body["data"]["status"], "healthy");
        assert_eq!(body["data"]["service"], "SagePlatform");
        assert!(body["data"]["version"].is_string());
        assert!(body["timestamp"].is_f64());
    }
    let (status, body) = get(format!("{}/active", env.server.url)).await;
    assert_eq!(status, 200);
    assert_eq!(body, "Service is available.");
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_checks_each_dependency() {
    let env = TestEnv::new().await;
    let (status, body) = get(format!("{}/api/health/ready", env.server.url)).await;
    assert_eq!(status, 200, "{body}");
    let checks = body["data"]["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("store (File): ok"))
    );
    assert!(
        checks
            .iter()
            .any(|c| c.as_str().unwrap().contains("reachable"))
    );

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let down = Server::start(test_config(
        &format!("http://127.0.0.1:{port}/v1"),
        dir.path(),
        &[],
    ))
    .await;
    let (status, body) = get(format!("{}/api/health/ready", down.url)).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], 503);
    assert!(body["data"]["checks"].to_string().contains("unreachable"));
}
