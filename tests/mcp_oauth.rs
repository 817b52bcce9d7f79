//! MCP servers behind OAuth, against the Python SDK's authorization and resource server
//! (tests/peers/mcp_oauth_server.py): a user adds one, is sent through its authorization, and
//! runs call its tools with the user's token; an expired token is refreshed once for two
//! instances calling at the same moment; the tokens outlive a restart, sealed in the store.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const JWT_KEY: &str = "mcp-oauth-test-jwt-key-0123456789abcdef";
/// Seconds an access token lives on the fixture. A token is refreshed once less than half its
/// life is left (rmcp's margin), so a refreshed one stays good for 3 s: time enough for a
/// second caller on a loaded machine to pick it up instead of refreshing again.
const TOKEN_SECONDS: u64 = 6;

async fn instance(dir: &std::path::Path, llm: &MockLlm, key: &str) -> ShimProcess {
    sage_local_on_file_store(dir, &llm.base_url, &["--jwt_key", key], &[]).await
}

/// Adds Alice's `guarded` server at `base`: the answer, which must be a 200.
async fn add_guarded(base: &str, peer: &OAuthPeer) -> Value {
    let (status, added) = send_json(
        Method::POST,
        &format!("{base}/api/mcp/add"),
        &add_request(peer),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    added
}

fn add_request(peer: &OAuthPeer) -> Value {
    json!({"name": "guarded", "user_id": "alice", "streamable_http_url": peer.url(), "oauth": {}})
}

/// GET as a browser does (`Accept: text/html`): status, content type and body.
async fn browse(url: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .get(url)
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, kind, response.text().await.unwrap())
}

async fn call_tool(base: &str, user: &str, directive: &str, tool: &str) -> Vec<Value> {
    post_ndjson(
        &format!("{base}/api/stream"),
        &json!({"user_id": user, "available_tools": [tool],
                "messages": [{"role": "user", "content": directive}]}),
    )
    .await
}

async fn server_entry(base: &str, user: &str) -> Option<Value> {
    let (status, body) = get_json(&format!("{base}/api/mcp/list?user_id={user}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|server| server["name"] == "guarded")
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oauth_server_is_authorized_called_refreshed_once_and_kept_across_a_restart() {
    let peer = OAuthPeer::start(TOKEN_SECONDS).await;
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let first = instance(dir.path(), &llm, JWT_KEY).await;

    let added = add_guarded(&first.url, &peer).await;
    assert_eq!(added["data"]["status"], "authorization_required");
    assert_eq!(added["data"]["tools"], json!([]));
    let authorization_url = added["data"]["authorization_url"].as_str().unwrap();
    let parsed = url::Url::parse(authorization_url).unwrap();
    assert_eq!(
        parsed.origin().ascii_serialization(),
        format!("http://127.0.0.1:{}", peer.port)
    );
    let query: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
    assert_eq!(
        query["redirect_uri"],
        format!("{}/api/mcp/oauth/callback", first.url)
    );
    assert_eq!(query["code_challenge_method"], "S256");
    let listed = server_entry(&first.url, "alice").await.unwrap();
    assert_eq!(listed["authorized"], false);
    assert!(server_entry(&first.url, "bob").await.is_none());

    // The user approves; the authorization server sends the browser back to us.
    let callback = approve(authorization_url).await;
    assert!(callback.starts_with(&format!("{}/api/mcp/oauth/callback?", first.url)));
    let (status, done) = get_json(&callback).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["data"]["status"], "authorized");
    assert_eq!(done["data"]["tools"], json!(["whoami", "echo"]));
    let (status, replayed) = get_json(&callback).await;
    assert_eq!(status, 400, "a callback is used once: {replayed}");
    assert!(
        replayed["message"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    assert_eq!(
        server_entry(&first.url, "alice").await.unwrap()["authorized"],
        true
    );

    let events = call_tool(&first.url, "alice", "call:whoami{}", "whoami").await;
    let answer = answer_text(&events);
    assert!(answer.starts_with("Tool results: alice via "), "{answer}");

    // The token expires; two instances on the same store call at once: one refresh serves both.
    let second = instance(dir.path(), &llm, JWT_KEY).await;
    tokio::time::sleep(Duration::from_secs(TOKEN_SECONDS / 2 + 1)).await;
    let (one, two) = tokio::join!(
        call_tool(&first.url, "alice", r#"call:echo{"text":"one"}"#, "echo"),
        call_tool(&second.url, "alice", r#"call:echo{"text":"two"}"#, "echo"),
    );
    assert_eq!(answer_text(&one), "Tool results: one");
    assert_eq!(answer_text(&two), "Tool results: two");
    let stats = peer.stats().await;
    assert_eq!(stats["registrations"], 1, "{stats}");
    assert_eq!(stats["code_exchanges"], 1, "{stats}");
    assert_eq!(stats["refreshes"], 1, "one refresh for both: {stats}");
    assert_eq!(stats["refresh_failures"], 0, "{stats}");

    // Both instances stop; a new one has the tokens from the store.
    first.kill();
    second.kill();
    let restarted = instance(dir.path(), &llm, JWT_KEY).await;
    let events = call_tool(
        &restarted.url,
        "alice",
        r#"call:echo{"text":"again"}"#,
        "echo",
    )
    .await;
    assert_eq!(answer_text(&events), "Tool results: again");
    // Bob has no such server and cannot reach Alice's.
    let events = call_tool(&restarted.url, "bob", "call:whoami{}", "whoami").await;
    assert!(!answer_text(&events).contains("alice via"));

    // The tokens are in the store sealed: neither the access nor the refresh token is in clear.
    let mut database = Vec::new();
    for file in ["db/sage.db", "db/sage.db-wal"] {
        database.extend(std::fs::read(dir.path().join(file)).unwrap_or_default());
    }
    assert!(
        !database.is_empty(),
        "the SQLite file is where the store keeps it"
    );
    assert!(!String::from_utf8_lossy(&database).contains("\"access_token\""));

    // Deleting the server forgets the tokens: added again, it needs authorizing again.
    let (status, _) = call_json(
        Method::DELETE,
        &format!("{}/api/mcp/guarded?user_id=alice", restarted.url),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let again = add_guarded(&restarted.url, &peer).await;
    assert_eq!(again["data"]["status"], "authorization_required");
    assert_eq!(
        server_entry(&restarted.url, "alice").await.unwrap()["authorized"],
        false
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_authorization_and_bad_oauth_settings_change_nothing() {
    let peer = OAuthPeer::start(TOKEN_SECONDS).await;
    let llm = MockLlm::start(Default::default()).await;

    // Without --jwt_key there is no key to seal tokens with.
    let dir = tempfile::tempdir().unwrap();
    let keyless = sage_local_on_file_store(dir.path(), &llm.base_url, &[], &[]).await;
    let (status, body) = send_json(
        Method::POST,
        &format!("{}/api/mcp/add", keyless.url),
        &add_request(&peer),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["message"].as_str().unwrap().contains("--jwt_key"));
    assert!(server_entry(&keyless.url, "alice").await.is_none());
    keyless.kill();

    let dir = tempfile::tempdir().unwrap();
    let shim = instance(dir.path(), &llm, JWT_KEY).await;
    let add = |body: Value| {
        let url = format!("{}/api/mcp/add", shim.url);
        async move { send_json(Method::POST, &url, &body).await }
    };
    let (status, body) = add(json!({"name": "guarded", "user_id": "alice",
        "streamable_http_url": peer.url(), "oauth": {}, "api_key": "k"}))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("api_key"));
    let (status, body) = add(json!({"name": "guarded", "user_id": "alice",
        "sse_url": format!("http://127.0.0.1:{}/sse", peer.port), "oauth": {}}))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("streamable"));
    // A server that publishes no OAuth metadata.
    let plain = HttpPeer::start("streamable-http").await;
    let (status, body) = add(json!({"name": "guarded", "user_id": "alice",
        "streamable_http_url": plain.streamable_http_url(), "oauth": {}}))
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(server_entry(&shim.url, "alice").await.is_none());

    // A request's own servers have no user to authorize them.
    let response = reqwest::Client::new()
        .post(format!("{}/api/stream", shim.url))
        .json(
            &json!({"user_id": "alice", "messages": [{"role": "user", "content": "hi"}],
                      "extra_mcp_config": {"x": {"streamable_http_url": peer.url(), "oauth": {}}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error_detail"]
            .as_str()
            .unwrap()
            .starts_with("extra_mcp_config.x.oauth:"),
        "{body}"
    );

    let made_up = format!("{}/api/mcp/oauth/callback?state=made-up&code=x", shim.url);
    let (status, body) = get_json(&made_up).await;
    assert_eq!(status, 400, "{body}");
    let (status, kind, page) = browse(&made_up).await;
    assert_eq!(status, 400);
    assert!(kind.starts_with("text/html"), "{kind}");
    assert!(page.contains("unknown or was already used"), "{page}");

    // The user refuses: the authorization ends, and its state cannot be used afterwards.
    let (status, added) = add(add_request(&peer)).await;
    assert_eq!(status, 200, "{added}");
    let authorization_url = added["data"]["authorization_url"].as_str().unwrap();
    let state = url::Url::parse(authorization_url)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "state")
        .unwrap()
        .1
        .into_owned();
    let refused = format!(
        "{}/api/mcp/oauth/callback?state={state}&error=access_denied",
        shim.url
    );
    let (status, body) = get_json(&refused).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("access_denied"));
    let (status, _) = get_json(&format!(
        "{}&code=late",
        refused.replace("&error=access_denied", "")
    ))
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        server_entry(&shim.url, "alice").await.unwrap()["authorized"],
        false
    );
    // Authorizing again starts a new authorization that succeeds; a call before it is refused
    // with what to do.
    let (status, again) = send_json(
        Method::POST,
        &format!("{}/api/mcp/guarded/authorize?user_id=alice", shim.url),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    // The browser that comes back is shown a page.
    let (status, kind, page) =
        browse(&approve(again["data"]["authorization_url"].as_str().unwrap()).await).await;
    assert_eq!(status, 200, "{page}");
    assert!(kind.starts_with("text/html"), "{kind}");
    assert!(
        page.contains("MCP server guarded is authorized, with 2 tools"),
        "{page}"
    );
    let (status, _) = send_json(
        Method::POST,
        &format!("{}/api/mcp/guarded/authorize?user_id=bob", shim.url),
        &json!({}),
    )
    .await;
    assert_eq!(status, 404, "another user's server");
}

/// The redirect back names this API as its users reach it: `--public_url` when set (a stage
/// path included), else the origin a proxy forwarded, else the request's own host.
#[tokio::test(flavor = "multi_thread")]
async fn the_redirect_back_is_the_public_url_or_the_forwarded_origin() {
    let peer = OAuthPeer::start(TOKEN_SECONDS).await;
    let redirect_of = |added: &Value| {
        let url = url::Url::parse(added["data"]["authorization_url"].as_str().unwrap()).unwrap();
        url.query_pairs()
            .find(|(name, _)| name == "redirect_uri")
            .unwrap()
            .1
            .into_owned()
    };
    let configured = TestEnv::with(
        Default::default(),
        &[
            "--jwt_key",
            JWT_KEY,
            "--public_url",
            "https://sage.example/prod/",
        ],
    )
    .await;
    let added = add_guarded(&configured.server.url, &peer).await;
    assert_eq!(
        redirect_of(&added),
        "https://sage.example/prod/api/mcp/oauth/callback"
    );

    let forwarded = TestEnv::with(Default::default(), &["--jwt_key", JWT_KEY]).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/mcp/add", forwarded.server.url))
        .header("x-forwarded-host", "api.example")
        .header("x-forwarded-proto", "https")
        .json(&add_request(&peer))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let added: Value = response.json().await.unwrap();
    assert_eq!(
        redirect_of(&added),
        "https://api.example/api/mcp/oauth/callback"
    );
}

/// The server stops accepting the user's token before it expires: the next call refreshes it
/// once and goes through. When the refresh token is refused too, the credentials are dropped
/// and the tool says the user must authorize the server again.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_is_refreshed_once_and_a_refused_refresh_asks_for_authorization() {
    let peer = OAuthPeer::start(3600).await;
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let shim = instance(dir.path(), &llm, JWT_KEY).await;
    let added = add_guarded(&shim.url, &peer).await;
    let (status, _) =
        get_json(&approve(added["data"]["authorization_url"].as_str().unwrap()).await).await;
    assert_eq!(status, 200);
    let events = call_tool(&shim.url, "alice", r#"call:echo{"text":"first"}"#, "echo").await;
    assert_eq!(answer_text(&events), "Tool results: first");

    peer.revoke(false).await;
    let events = call_tool(&shim.url, "alice", r#"call:echo{"text":"second"}"#, "echo").await;
    assert_eq!(answer_text(&events), "Tool results: second");
    let stats = peer.stats().await;
    assert_eq!(stats["refreshes"], 1, "{stats}");

    peer.revoke(true).await;
    let events = call_tool(&shim.url, "alice", r#"call:echo{"text":"third"}"#, "echo").await;
    let results = of_type(&events, "tool_call_result");
    let message = results[0]["content"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("/api/mcp/guarded/authorize"),
        "{}",
        results[0]
    );
    assert_eq!(
        server_entry(&shim.url, "alice").await.unwrap()["authorized"],
        false
    );
}
