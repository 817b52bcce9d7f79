//! The Health function's routes, called in process.

use std::time::Duration;

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

/// A burst of clients connecting at once while the server is busy is queued by the kernel, not
/// dropped: with the listener's default queue of 128, the connections beyond it lost their SYN
/// and retried a second later (Sage's load test starts 200 users together). The server is
/// stopped (SIGSTOP) while 300 clients connect; every one connects at once, and each is
/// answered once the server runs again.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_connections_is_queued_while_the_server_is_busy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CLIENTS: usize = 300;
    let port = free_port();
    let server = ChildGuard(
        std::process::Command::new(workspace_binary("sage-local"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--db_type", "memory", "--default_llm_api_key", "unused"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, Duration::from_secs(20)).await;
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &server.0.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {name}");
    };
    signal("-STOP");
    // A dropped SYN is sent again after a second: a connection that takes longer was not queued.
    let connects = (0..CLIENTS).map(|_| {
        tokio::time::timeout(
            Duration::from_millis(900),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
    });
    let connected: Vec<_> = futures_util::future::join_all(connects).await;
    signal("-CONT");
    let mut streams = Vec::new();
    for (client, result) in connected.into_iter().enumerate() {
        match result {
            Ok(Ok(stream)) => streams.push(stream),
            Ok(Err(error)) => panic!("client {client} was refused: {error}"),
            Err(_) => panic!("client {client} was not queued: it waited for a SYN retry"),
        }
    }
    let answers = streams.into_iter().map(|mut stream| async move {
        stream
            .write_all(b"GET /api/health HTTP/1.1\r\nhost: sage\r\nconnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    });
    let answers = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(answers),
    )
    .await
    .expect("every queued client is answered");
    for answer in answers {
        let answer = answer.expect("the queued connection works");
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
}
