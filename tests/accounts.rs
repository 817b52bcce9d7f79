//! Accounts and tokens over a real socket: log in, stream and list as that account, refresh
//! rotation, expiry, revocation by a password change or a deletion, the no-auth mode, forged
//! tokens, and the first admin.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const JWT_KEY: &str = "test-jwt-key-0123456789abcdef0123456789";
const ADMIN_PASSWORD: &str = "admin-password-1";

/// One client of the shim, with or without a token.
struct Api {
    url: String,
    client: reqwest::Client,
}

impl Api {
    fn new(env: &TestEnv) -> Self {
        Self {
            url: env.server.url.clone(),
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the shim answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        // A JSON answer, or a stream: its NDJSON events as an array.
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| Value::Array(ndjson_events(&text)));
        (status, body)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn login(&self, username: &str, password: &str) -> Tokens {
        let (status, body) = self
            .post(
                "/api/user/login",
                None,
                &json!({"username_or_email": username, "password": password}),
            )
            .await;
        assert_eq!(status, 200, "login of {username}: {body}");
        Tokens {
            access: body["data"]["access_token"].as_str().unwrap().to_owned(),
            refresh: body["data"]["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// The admin adds an account; returns its user id.
    async fn add_user(&self, admin: &str, username: &str, password: &str) -> String {
        let (status, body) = self
            .post(
                "/api/user/add",
                Some(admin),
                &json!({"username": username, "password": password, "email": format!("{username}@example.com")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["user_id"].as_str().unwrap().to_owned()
    }

    async fn stream(&self, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.post("/api/stream", token, body).await
    }
}

struct Tokens {
    access: String,
    refresh: String,
}

async fn auth_on(extra: &[&str]) -> TestEnv {
    auth_on_with(sage_mock_llm::MockOptions::default(), extra).await
}

async fn auth_on_with(options: sage_mock_llm::MockOptions, extra: &[&str]) -> TestEnv {
    let mut flags = vec![
        "--no_auth",
        "false",
        "--jwt_key",
        JWT_KEY,
        "--admin_password",
        ADMIN_PASSWORD,
    ];
    flags.extend_from_slice(extra);
    let env = TestEnv::with(options, &flags).await;
    env.server.state.ensure_admin().await.unwrap();
    env
}

fn session_ids(body: &Value) -> Vec<String> {
    body["data"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"))
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_refused(status: u16, body: &Value, expected: u16) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], expected, "the envelope: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_logs_in_streams_and_lists_only_their_own_conversations() {
    let env = auth_on(&[]).await;
    let api = Api::new(&env);
    let admin = api.login("admin", ADMIN_PASSWORD).await;
    let alice_id = api.add_user(&admin.access, "alice", "alice-password").await;
    api.add_user(&admin.access, "bob", "bob-password").await;
    let alice = api.login("alice@EXAMPLE.com", "alice-password").await;
    let bob = api.login("bob", "bob-password").await;

    // Without a token nothing but the public routes answers.
    let (status, body) = api
        .stream(
            None,
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_refused(status, &body, 401);
    let (status, body) = api.get("/api/conversations", None).await;
    assert_refused(status, &body, 401);
    let (status, _) = api.get("/api/health", None).await;
    assert_eq!(status, 200);

    let (status, events) = api
        .stream(
            Some(&alice.access),
            &json!({"session_id": "alice-1", "messages": [{"role": "user", "content": "hello from alice"}]}),
        )
        .await;
    assert_eq!(status, 200, "{events}");
    assert!(!answer_text(events.as_array().unwrap()).is_empty());

    let (status, list) = api.get("/api/conversations", Some(&alice.access)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(session_ids(&list), ["alice-1"]);
    assert_eq!(list["data"]["list"][0]["user_id"], alice_id.as_str());

    let (_, list) = api.get("/api/conversations", Some(&bob.access)).await;
    assert!(session_ids(&list).is_empty(), "bob sees {list}");
    let (status, body) = api
        .get("/api/conversations/alice-1/messages", Some(&bob.access))
        .await;
    assert_refused(status, &body, 403);
    // Naming alice does not make bob alice.
    let (status, body) = api
        .get(
            &format!("/api/conversations?user_id={alice_id}"),
            Some(&bob.access),
        )
        .await;
    assert_refused(status, &body, 403);
    let (status, body) = api
        .stream(
            Some(&bob.access),
            &json!({"session_id": "alice-1", "user_id": alice_id, "messages": [{"role": "user", "content": "mine now"}]}),
        )
        .await;
    assert_refused(status, &body, 403);
    let (status, body) = api
        .stream(
            Some(&bob.access),
            &json!({"session_id": "alice-1", "messages": [{"role": "user", "content": "mine now"}]}),
        )
        .await;
    assert_refused(status, &body, 403);
    // An admin may act for another user.
    let (status, list) = api
        .get(
            &format!("/api/conversations?user_id={alice_id}"),
            Some(&admin.access),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(session_ids(&list), ["alice-1"]);
    let (_, messages) = api
        .get("/api/conversations/alice-1/messages", Some(&alice.access))
        .await;
    assert_eq!(
        messages["data"]["message_count"], 2,
        "bob's attempts changed nothing"
    );

    let (status, me) = api.get("/api/user/check_login", Some(&alice.access)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["data"]["user"]["userid"], alice_id.as_str());
    assert_eq!(me["data"]["user"]["username"], "alice");
    assert_eq!(me["data"]["user"]["role"], "user");
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_rotate_and_each_works_once() {
    let env = auth_on(&[]).await;
    let api = Api::new(&env);
    let first = api.login("admin", ADMIN_PASSWORD).await;
    let (status, body) = api
        .post(
            "/api/user/refresh",
            None,
            &json!({"refresh_token": first.refresh}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let second_refresh = body["data"]["refresh_token"].as_str().unwrap().to_owned();
    let second_access = body["data"]["access_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first.refresh);
    let (status, _) = api.get("/api/user/check_login", Some(&second_access)).await;
    assert_eq!(status, 200);

    let (status, body) = api
        .post(
            "/api/user/refresh",
            None,
            &json!({"refresh_token": first.refresh}),
        )
        .await;
    assert_refused(status, &body, 401);
    // An access token is not a refresh token, nor the other way round.
    let (status, body) = api
        .post(
            "/api/user/refresh",
            None,
            &json!({"refresh_token": second_access}),
        )
        .await;
    assert_refused(status, &body, 401);
    let (status, body) = api
        .get("/api/user/check_login", Some(&second_refresh))
        .await;
    assert_refused(status, &body, 401);
    let (status, _) = api
        .post(
            "/api/user/refresh",
            None,
            &json!({"refresh_token": second_refresh}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_token_expires() {
    // 0.0005 hours: 1.8 seconds.
    let env = auth_on(&["--jwt_expire_hours", "0.0005"]).await;
    let api = Api::new(&env);
    let tokens = api.login("admin", ADMIN_PASSWORD).await;
    let (status, _) = api.get("/api/user/check_login", Some(&tokens.access)).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (status, body) = api.get("/api/user/check_login", Some(&tokens.access)).await;
    assert_refused(status, &body, 401);
    assert_eq!(body["message"], "the token is invalid or expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_answers_alike_whether_or_not_the_account_exists() {
    let env = auth_on(&[]).await;
    let api = Api::new(&env);
    let attempt = |login: &'static str| {
        let api = &api;
        async move {
            let started = Instant::now();
            let (status, body) = api
                .post(
                    "/api/user/login",
                    None,
                    &json!({"username_or_email": login, "password": "not-the-password"}),
                )
                .await;
            (status, body["message"].clone(), started.elapsed())
        }
    };
    // Warm up: the stand-in hash for unknown accounts is computed once.
    attempt("nobody").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..5 {
        let (status, message, took) = attempt("admin").await;
        assert_eq!(
            (status, message.as_str()),
            (401, Some("invalid username or password"))
        );
        known.push(took);
        let (status, message, took) = attempt("nobody").await;
        assert_eq!(
            (status, message.as_str()),
            (401, Some("invalid username or password"))
        );
        unknown.push(took);
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[2], unknown[2]);
    // Both check a password hash: the medians are of the same order.
    assert!(
        unknown * 3 > known && known * 3 > unknown,
        "known account {known:?}, unknown {unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_the_password_or_deleting_the_account_ends_its_tokens() {
    let env = auth_on(&[]).await;
    let api = Api::new(&env);
    let admin = api.login("admin", ADMIN_PASSWORD).await;
    let carol_id = api.add_user(&admin.access, "carol", "carol-password").await;
    let carol = api.login("carol", "carol-password").await;

    let (status, body) = api
        .post(
            "/api/user/change-password",
            Some(&carol.access),
            &json!({"old_password": "wrong-password", "new_password": "carol-new-password"}),
        )
        .await;
    assert_refused(status, &body, 400);
    assert!(
        body["message"].as_str().unwrap().contains("old_password"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/api/user/change-password",
            Some(&carol.access),
            &json!({"old_password": "carol-password", "new_password": "short"}),
        )
        .await;
    assert_refused(status, &body, 400);
    assert!(
        body["message"].as_str().unwrap().contains("new_password"),
        "{body}"
    );

    let (status, body) = api
        .post(
            "/api/user/change-password",
            Some(&carol.access),
            &json!({"old_password": "carol-password", "new_password": "carol-new-password"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.get("/api/conversations", Some(&carol.access)).await;
    assert_refused(status, &body, 401);
    let (status, body) = api
        .post(
            "/api/user/refresh",
            None,
            &json!({"refresh_token": carol.refresh}),
        )
        .await;
    assert_refused(status, &body, 401);
    let (status, _) = api
        .post(
            "/api/user/login",
            None,
            &json!({"username_or_email": "carol", "password": "carol-password"}),
        )
        .await;
    assert_eq!(status, 401);
    let carol = api.login("carol", "carol-new-password").await;

    // Only an admin lists, adds and deletes accounts.
    let (status, body) = api.get("/api/user/list", Some(&carol.access)).await;
    assert_refused(status, &body, 403);
    let (status, body) = api
        .post(
            "/api/user/delete",
            Some(&carol.access),
            &json!({"user_id": carol_id}),
        )
        .await;
    assert_refused(status, &body, 403);
    let (status, list) = api
        .get("/api/user/list?page=1&page_size=20", Some(&admin.access))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"]["total"], 2);
    let listed = &list["data"]["items"][1];
    assert_eq!(listed["username"], "carol");
    assert_eq!(listed["id"], carol_id.as_str());
    assert!(
        listed["created_at"].as_str().unwrap().starts_with("20"),
        "{listed}"
    );
    assert!(!list.to_string().contains("argon2"), "no hash in the list");

    // Running a tool outside a run is an operator's job.
    let exec = json!({"tool_name": "echo", "tool_params": {"text": "x"}});
    let (status, body) = api
        .post("/api/tools/exec", Some(&carol.access), &exec)
        .await;
    assert_refused(status, &body, 403);
    assert!(
        body["message"].as_str().unwrap().contains("admin"),
        "{body}"
    );
    let (status, body) = api
        .post("/api/tools/exec", Some(&admin.access), &exec)
        .await;
    assert_refused(status, &body, 404);

    let (status, body) = api
        .post(
            "/api/user/delete",
            Some(&admin.access),
            &json!({"id": carol_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.get("/api/user/check_login", Some(&carol.access)).await;
    assert_refused(status, &body, 401);
    let (status, body) = api
        .post(
            "/api/user/delete",
            Some(&admin.access),
            &json!({"user_id": carol_id}),
        )
        .await;
    assert_refused(status, &body, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_is_closed_unless_allowed_and_names_stay_unique() {
    let closed = auth_on(&[]).await;
    let api = Api::new(&closed);
    let (status, body) = api
        .post(
            "/api/user/register",
            None,
            &json!({"username": "dave", "password": "dave-password"}),
        )
        .await;
    assert_refused(status, &body, 403);

    let open = auth_on(&["--allow_registration"]).await;
    let api = Api::new(&open);
    let (status, body) = api
        .post(
            "/api/user/register",
            None,
            &json!({"username": "dave", "password": "dave-password", "email": "dave@example.com", "phonenum": "+1 555 0100"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let dave_id = body["data"]["user_id"].as_str().unwrap();
    assert!(dave_id.len() == 32 && dave_id.chars().all(|c| c.is_ascii_hexdigit()));
    for (taken, field) in [
        (
            json!({"username": "DAVE", "password": "other-password"}),
            409,
        ),
        (
            json!({"username": "dave2", "password": "other-password", "email": "Dave@Example.com"}),
            409,
        ),
        (json!({"username": "x", "password": "other-password"}), 400),
        (
            json!({"username": "robert'); DROP TABLE accounts;--", "password": "other-password"}),
            400,
        ),
        (
            json!({"username": "../../etc", "password": "other-password"}),
            400,
        ),
        (
            json!({"username": "erin", "password": "other-password", "role": "admin"}),
            403,
        ),
        (
            json!({"username": "erin", "password": "other-password", "email": "not-an-email"}),
            400,
        ),
    ] {
        let (status, body) = api.post("/api/user/register", None, &taken).await;
        assert_refused(status, &body, field);
    }
    let dave = api.login("dave", "dave-password").await;
    let (_, me) = api.get("/api/user/check_login", Some(&dave.access)).await;
    assert_eq!(me["data"]["user"]["email"], "dave@example.com");
    assert_eq!(me["data"]["user"]["phonenum"], "+1 555 0100");
    let (status, options) = api.get("/api/user/options", Some(&dave.access)).await;
    assert_eq!(status, 200, "{options}");
    let labels: Vec<&str> = options["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["admin", "dave"]);
}

/// Tokens that must not pass: each answers 401 in the envelope, says nothing of why beyond
/// that, and lets nothing through.
#[tokio::test(flavor = "multi_thread")]
async fn forged_expired_and_malformed_tokens_are_refused() {
    let env = auth_on(&[]).await;
    let api = Api::new(&env);
    let admin = api.login("admin", ADMIN_PASSWORD).await;
    let (_, me) = api.get("/api/user/check_login", Some(&admin.access)).await;
    let claims = me["data"]["user"].clone();
    let admin_id = claims["userid"].as_str().unwrap().to_owned();

    let sign = |key: &str, claims: &Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut full = claims.clone();
    full["aud"] = json!("sage-access");
    full["generation"] = json!(0);
    full["exp"] = json!(now + 3600);
    let valid_by_hand = sign(JWT_KEY, &full);
    let (status, _) = api.get("/api/user/check_login", Some(&valid_by_hand)).await;
    assert_eq!(
        status, 200,
        "the hand-made token is right, so the rest test one thing each"
    );

    let mut expired = full.clone();
    expired["exp"] = json!(now - 5);
    let mut no_audience = full.clone();
    no_audience.as_object_mut().unwrap().remove("aud");
    let mut unknown_user = full.clone();
    unknown_user["userid"] = json!("0".repeat(32));
    let b64 = |text: &str| base64url(text.as_bytes());
    let parts: Vec<&str> = admin.access.split('.').collect();
    let mut tampered_claims = full.clone();
    tampered_claims["userid"] = json!("someone-else");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&tampered_claims.to_string()),
        parts[2]
    );
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&full.to_string())
    );
    let cases: Vec<(&str, String)> = vec![
        (
            "signed with another key",
            sign("another-key-0123456789abcdef0123456789", &full),
        ),
        ("expired", sign(JWT_KEY, &expired)),
        ("without an audience", sign(JWT_KEY, &no_audience)),
        (
            "for an account that does not exist",
            sign(JWT_KEY, &unknown_user),
        ),
        ("claims changed after signing", tampered),
        ("alg none", alg_none),
        ("garbage", "not.a.token".into()),
        ("oversized", "a".repeat(5000)),
    ];
    for (what, token) in cases {
        let (status, body) = api.get("/api/conversations", Some(&token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["code"], 401, "{what}: {body}");
        let (status, _) = api
            .stream(
                Some(&token),
                &json!({"messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(status, 401, "{what}");
    }
    for header in ["Basic YWRtaW46YWRtaW4=", "Bearer", "token-without-scheme"] {
        let response = reqwest::Client::new()
            .get(format!("{}/api/conversations", api.url))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{header}");
    }
    let (_, list) = api
        .get(
            &format!("/api/conversations?user_id={admin_id}"),
            Some(&admin.access),
        )
        .await;
    assert!(
        session_ids(&list).is_empty(),
        "no stream got through: {list}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auth_a_token_still_decides_and_its_absence_falls_back_to_user_id() {
    let env = TestEnv::with(
        sage_mock_llm::MockOptions::default(),
        &["--admin_password", ADMIN_PASSWORD],
    )
    .await;
    env.server.state.ensure_admin().await.unwrap();
    let api = Api::new(&env);
    let (status, _) = api
        .stream(
            None,
            &json!({"session_id": "anon-1", "user_id": "lee", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, list) = api.get("/api/conversations?user_id=lee", None).await;
    assert_eq!(session_ids(&list), ["anon-1"]);

    // Sage's client logs in even so, and its token decides who it is.
    let admin = api.login("admin", ADMIN_PASSWORD).await;
    let lee_id = api.add_user(&admin.access, "lee", "lee-password").await;
    let lee = api.login("lee", "lee-password").await;
    let (status, _) = api
        .stream(
            Some(&lee.access),
            &json!({"session_id": "lee-1", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, list) = api.get("/api/conversations", Some(&lee.access)).await;
    assert_eq!(
        session_ids(&list),
        ["lee-1"],
        "the account's, not the user named lee"
    );
    let (_, list) = api
        .get(&format!("/api/conversations?user_id={lee_id}"), None)
        .await;
    assert_eq!(session_ids(&list), ["lee-1"]);
    let (status, body) = api
        .get("/api/conversations?user_id=lee", Some(&lee.access))
        .await;
    assert_refused(status, &body, 403);
    let (status, body) = api.get("/api/conversations", Some("not.a.token")).await;
    assert_refused(status, &body, 401);
    // Account routes need a token in every mode.
    let (status, body) = api.get("/api/user/check_login", None).await;
    assert_refused(status, &body, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_on_needs_a_strong_jwt_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().display().to_string();
    let without =
        sage_core::Config::try_from_args(["sage", "--db_path", &base, "--no_auth", "false"]);
    let message = without.unwrap_err().to_string();
    assert!(message.contains("--jwt_key"), "{message}");
    let short =
        sage_core::Config::try_from_args(["sage", "--no_auth", "false", "--jwt_key", "secret"]);
    let message = short.unwrap_err().to_string();
    assert!(message.contains("at least 32 bytes"), "{message}");
    assert!(
        !message.contains("secret\""),
        "the key is not echoed: {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_start_creates_an_admin_with_a_password_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").display().to_string();
    let args = ["--db_type", "file", "--db_path", &db];
    let first = shim_startup_log(dir.path(), &args, &[]).await;
    let line = first
        .lines()
        .find(|line| line.contains("created the first admin account"))
        .unwrap_or_else(|| panic!("no admin line in:\n{first}"));
    let password = line
        .split("password=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no password in {line}"))
        .to_owned();
    assert!(password.len() >= 16, "{password}");
    assert!(first.contains("authentication is OFF"), "{first}");

    let second = shim_startup_log(dir.path(), &args, &[]).await;
    assert!(!second.contains("created the first admin"), "{second}");
    assert!(!second.contains(&password));

    // The password works.
    let shim = ShimProcess::start(dir.path(), &args, &[]).await;
    let (status, body) = send_json(
        Method::POST,
        &format!("{}/api/user/login", shim.url),
        &json!({"username_or_email": "admin", "password": password}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["expires_in"].as_u64().unwrap() > 0);
}

/// Every route that acts for a caller × who calls: the owner, another user, an admin (acting as
/// themselves), nobody, and three bad tokens. The expected status for each, and afterwards the
/// proof that nothing crossed over.
#[tokio::test(flavor = "multi_thread")]
async fn the_isolation_matrix_over_every_route() {
    let env = auth_on(&[]).await;
    let api = Api::new(&env);
    let admin = api.login("admin", ADMIN_PASSWORD).await;
    api.add_user(&admin.access, "alice", "alice-password").await;
    api.add_user(&admin.access, "bob", "bob-password").await;
    let alice = api.login("alice", "alice-password").await;
    let bob = api.login("bob", "bob-password").await;
    let (status, _) = api
        .stream(
            Some(&alice.access),
            &json!({"session_id": "iso-1", "messages": [{"role": "user", "content": "private words"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = upload_skill(
        &api.url,
        "",
        Some(&alice.access),
        skill_zip(
            "alice-notes",
            "private words skill",
            "private words inside",
            &[],
        ),
    )
    .await;
    assert_eq!(status, 200);
    let (status, created) = api
        .call(
            Method::POST,
            "/api/knowledge-base/add",
            Some(&alice.access),
            Some(&json!({"name": "private words base", "type": "document"})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let kdb_id = created["data"]["kdb_id"].as_str().unwrap().to_owned();
    let kb_info = format!("/api/knowledge-base/info?kdb_id={kdb_id}");
    let kb_documents = format!("/api/knowledge-base/doc/list?kdb_id={kdb_id}");
    let kb_delete = format!("/api/knowledge-base/delete/{kdb_id}");

    let alice_claims = jsonwebtoken::decode::<Value>(
        &alice.access,
        &jsonwebtoken::DecodingKey::from_secret(JWT_KEY.as_bytes()),
        &{
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            validation.set_audience(&["sage-access"]);
            validation
        },
    )
    .unwrap()
    .claims;
    let sign = |key: &str, claims: &Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let mut claims = alice_claims.clone();
    claims["exp"] = json!(1_000_000_000u64);
    let expired = sign(JWT_KEY, &claims);
    let mut claims = alice_claims.clone();
    claims["role"] = json!("admin");
    let other_key = sign("someone-elses-key-0123456789abcdef0123", &claims);
    let tampered = {
        let parts: Vec<&str> = alice.access.split('.').collect();
        let bob_parts: Vec<&str> = bob.access.split('.').collect();
        // Alice's claims with Bob's signature.
        format!("{}.{}.{}", parts[0], parts[1], bob_parts[2])
    };

    // (method, path, body, owner's status, another user's status)
    let routes: Vec<(Method, &str, Option<Value>, u16, u16)> = vec![
        (Method::GET, "/api/conversations", None, 200, 200),
        (
            Method::GET,
            "/api/conversations/iso-1/messages",
            None,
            200,
            403,
        ),
        (
            Method::GET,
            "/api/stream/resume/iso-1?last_index=0",
            None,
            200,
            403,
        ),
        (
            Method::POST,
            "/api/sessions/iso-1/tasks_status",
            Some(json!({})),
            200,
            403,
        ),
        (
            Method::POST,
            "/api/sessions/iso-1/file_workspace",
            Some(json!({})),
            200,
            403,
        ),
        (
            Method::GET,
            "/api/sessions/iso-1/file_workspace/download?file_path=a.txt",
            None,
            404,
            403,
        ),
        (
            Method::POST,
            "/api/sessions/iso-1/interrupt",
            Some(json!({})),
            200,
            403,
        ),
        (
            Method::PUT,
            "/api/conversations/iso-1/title",
            Some(json!({"title": "renamed"})),
            200,
            403,
        ),
        (
            Method::POST,
            "/api/stream",
            Some(json!({"session_id": "iso-1", "messages": [{"role": "user", "content": "more"}]})),
            200,
            403,
        ),
        (Method::GET, "/api/memories", None, 200, 200),
        (Method::DELETE, "/api/memories/no-such-key", None, 404, 404),
        (Method::GET, "/api/mcp/list", None, 200, 200),
        (Method::GET, "/api/tools", None, 200, 200),
        (Method::DELETE, "/api/mcp/nothing-here", None, 404, 404),
        (
            Method::POST,
            "/api/mcp/nothing-here/refresh",
            Some(json!({})),
            404,
            404,
        ),
        (
            Method::PUT,
            "/api/mcp/nothing-here/toggle",
            Some(json!({"disabled": true})),
            404,
            404,
        ),
        (Method::GET, "/api/user/check_login", None, 200, 200),
        (Method::GET, "/api/user/options", None, 200, 200),
        (Method::GET, "/api/agent/list", None, 200, 200),
        (Method::GET, "/api/llm-provider/list", None, 200, 200),
        (
            Method::DELETE,
            "/api/llm-provider/delete/provider_none",
            None,
            404,
            404,
        ),
        (Method::GET, "/api/skills", None, 200, 200),
        (
            Method::GET,
            "/api/skills/content?name=alice-notes",
            None,
            200,
            404,
        ),
        (
            Method::PUT,
            "/api/skills/content",
            Some(json!({"name": "alice-notes",
                        "content": "---\nname: alice-notes\ndescription: private words skill\n---\nprivate words, v2"})),
            200,
            404,
        ),
        (
            Method::DELETE,
            "/api/skills?name=alice-notes",
            None,
            200,
            404,
        ),
        (
            Method::POST,
            "/api/agent/system-prompt/optimize",
            Some(json!({"original_prompt": "be brief say:Be brief."})),
            200,
            200,
        ),
        (Method::GET, "/api/knowledge-base/list", None, 200, 200),
        (Method::GET, &kb_info, None, 200, 404),
        (Method::GET, &kb_documents, None, 200, 404),
        (
            Method::POST,
            "/api/knowledge-base/update",
            Some(json!({"kdb_id": kdb_id, "intro": "private words intro"})),
            200,
            404,
        ),
        (
            Method::POST,
            "/api/knowledge-base/retrieve",
            Some(json!({"kdb_id": kdb_id, "query": "private words"})),
            200,
            404,
        ),
        (
            Method::POST,
            "/api/knowledge-base/clear",
            Some(json!({"kdb_id": kdb_id})),
            200,
            404,
        ),
        (Method::DELETE, &kb_delete, None, 200, 404),
        (Method::DELETE, "/api/conversations/iso-1", None, 200, 403),
    ];
    let bad_tokens: [(&str, Option<&str>); 4] = [
        ("anonymous", None),
        ("expired", Some(&expired)),
        ("signed with another key", Some(&other_key)),
        ("tampered", Some(&tampered)),
    ];
    for (method, path, body, owner_status, other_status) in &routes {
        for (who, token) in &bad_tokens {
            let (status, answer) = api.call(method.clone(), path, *token, body.as_ref()).await;
            assert_eq!(status, 401, "{who} {method} {path}: {answer}");
            assert_eq!(answer["code"], 401, "{who} {method} {path}: {answer}");
        }
        for (who, token) in [("bob", &bob.access), ("the admin", &admin.access)] {
            let (status, answer) = api
                .call(method.clone(), path, Some(token), body.as_ref())
                .await;
            assert_eq!(status, *other_status, "{who} {method} {path}: {answer}");
            assert!(
                !answer.to_string().contains("private words"),
                "{who} {method} {path} read alice's words: {answer}"
            );
        }
        if *path == "/api/conversations/iso-1/messages" {
            let (_, answer) = api.get(path, Some(&alice.access)).await;
            assert_eq!(
                answer["data"]["message_count"], 2,
                "nobody else wrote: {answer}"
            );
        }
        if *path == "/api/conversations" {
            for token in [&bob.access, &admin.access] {
                let (_, answer) = api.get(path, Some(token)).await;
                assert_eq!(answer["data"]["total"], 0, "{answer}");
            }
        }
        let (status, answer) = api
            .call(method.clone(), path, Some(&alice.access), body.as_ref())
            .await;
        assert_eq!(status, *owner_status, "alice {method} {path}: {answer}");
    }
}

/// sage-local at `debug`, auth on, put through logins (right and wrong), token use, forged
/// tokens, a password change and a stream: its whole log holds none of the secrets used.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_log() {
    let llm = crate::common::MockLlm::start(sage_mock_llm::MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").display().to_string();
    let port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    const LLM_KEY: &str = "sk-provider-secret-4f9a1c";
    let shim = ChildGuard(
        std::process::Command::new(workspace_binary("sage-local"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--db_type", "file", "--db_path", &db])
            .args(["--no_auth", "false", "--jwt_key", JWT_KEY])
            .args(["--admin_password", ADMIN_PASSWORD])
            .args(["--default_llm_api_base_url", &llm.base_url])
            .args(["--preset_running_config", "/nonexistent/agent_setting.json"])
            .args(["--preset_mcp_config", "/nonexistent/mcp_setting.json"])
            .env("SAGE_DEFAULT_LLM_API_KEY", LLM_KEY)
            .env("RUST_LOG", "debug")
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("sage-local starts"),
    );
    wait_for_port(port, Duration::from_secs(30)).await;
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut request = client.post(format!("{url}{path}")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (status, text) = post(
        "/api/user/login",
        None,
        json!({"username_or_email": "admin", "password": ADMIN_PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let tokens: Value = serde_json::from_str(&text).unwrap();
    let access = tokens["data"]["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["data"]["refresh_token"].as_str().unwrap().to_owned();
    let (status, _) = post(
        "/api/user/login",
        None,
        json!({"username_or_email": "admin", "password": "wrong-password-77"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(
        "/api/user/add",
        Some(&access),
        json!({"username": "erin", "password": "erin-password-55"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, text) = post(
        "/api/stream",
        Some(&access),
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains(LLM_KEY));
    let (status, _) = post("/api/user/refresh", None, json!({"refresh_token": refresh})).await;
    assert_eq!(status, 200);
    let (status, _) = post("/api/user/refresh", None, json!({"refresh_token": refresh})).await;
    assert_eq!(status, 401);
    let (status, _) = post(
        "/api/stream",
        Some(&format!("{access}x")),
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, text) = post(
        "/api/llm-provider/create",
        Some(&access),
        json!({"name": "p", "base_url": "https://api.example.test/v1", "api_keys": ["sk-stored-provider-7777"], "model": "m"}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, _) = post(
        "/api/user/change-password",
        Some(&access),
        json!({"old_password": ADMIN_PASSWORD, "new_password": "admin-password-2"}),
    )
    .await;
    assert_eq!(status, 200);
    drop(shim);

    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        logged.contains("request refused"),
        "the refusals were logged:\n{logged}"
    );
    for secret in [
        JWT_KEY,
        ADMIN_PASSWORD,
        "wrong-password-77",
        "erin-password-55",
        "admin-password-2",
        LLM_KEY,
        "sk-stored-provider-7777",
        &access,
        &refresh,
        "$argon2id$",
    ] {
        assert!(
            !logged.contains(secret),
            "the log holds {secret:?}:\n{logged}"
        );
    }
}

/// `GET /api/system/info` is public; the admin opens and closes registration at run time.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_opens_and_closes_registration() {
    let env = auth_on(&[]).await;
    let api = Api::new(&env);
    let (status, info) = api.get("/api/system/info", None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["data"]["allow_registration"], false);
    assert_eq!(info["data"]["auth_required"], true);
    assert!(
        info["data"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );

    let admin = api.login("admin", ADMIN_PASSWORD).await;
    api.add_user(&admin.access, "frank", "frank-password").await;
    let frank = api.login("frank", "frank-password").await;
    let open = json!({"allow_registration": true});
    let (status, body) = api.post("/api/system/update_settings", None, &open).await;
    assert_refused(status, &body, 401);
    let (status, body) = api
        .post("/api/system/update_settings", Some(&frank.access), &open)
        .await;
    assert_refused(status, &body, 403);
    let (status, body) = api
        .post(
            "/api/system/update_settings",
            Some(&admin.access),
            &json!({"allow_registration": "yes"}),
        )
        .await;
    assert_refused(status, &body, 422);
    let (_, info) = api.get("/api/system/info", None).await;
    assert_eq!(
        info["data"]["allow_registration"], false,
        "refused changes changed nothing"
    );

    let (status, body) = api
        .post("/api/system/update_settings", Some(&admin.access), &open)
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, info) = api.get("/api/system/info", None).await;
    assert_eq!(info["data"]["allow_registration"], true);
    let newcomer = json!({"username": "grace", "password": "grace-password"});
    let (status, body) = api.post("/api/user/register", None, &newcomer).await;
    assert_eq!(status, 200, "{body}");

    let (status, _) = api
        .post(
            "/api/system/update_settings",
            Some(&admin.access),
            &json!({"allow_registration": false}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = api
        .post(
            "/api/user/register",
            None,
            &json!({"username": "heidi", "password": "heidi-password"}),
        )
        .await;
    assert_refused(status, &body, 403);
}

/// A page of another origin (Sage's web client served elsewhere) can call the API: preflights
/// are answered, and every answer, a 401 included, carries the CORS headers.
#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_cors_headers_a_401_included() {
    let env = auth_on(&[]).await;
    let client = reqwest::Client::new();
    let preflight = client
        .request(Method::OPTIONS, format!("{}/api/stream", env.server.url))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed.contains("authorization") || allowed == "*",
        "{allowed}"
    );

    let refused = client
        .get(format!("{}/api/conversations", env.server.url))
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(refused.headers()["access-control-allow-origin"], "*");
    let exposed = refused.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

/// The kill switch: an admin stops every running run of one user, through the durable cancel
/// flag any instance honours; the user keeps the tail and what was said; no one else may.
#[tokio::test(flavor = "multi_thread")]
async fn an_admin_stops_every_running_run_of_a_user() {
    let options = sage_mock_llm::MockOptions {
        token_delay: std::time::Duration::from_millis(30),
        ..Default::default()
    };
    let env = auth_on_with(options, &[]).await;
    let api = Api::new(&env);
    let admin = api.login("admin", ADMIN_PASSWORD).await;
    let ann_id = api.add_user(&admin.access, "ann", "ann-password-1").await;
    let ann = api.login("ann", "ann-password-1").await;
    let runs: Vec<_> = ["kill-1", "kill-2"]
        .into_iter()
        .map(|session| {
            let url = format!("{}/api/stream", env.server.url);
            let token = ann.access.clone();
            tokio::spawn(async move {
                let reader = NdjsonReader::open(
                    reqwest::Client::new().post(url).bearer_auth(token).json(
                        &json!({"session_id": session, "messages": [{"role": "user", "content": "words:300"}]}),
                    ),
                )
                .await;
                reader.rest().await
            })
        })
        .collect();
    for session in ["kill-1", "kill-2"] {
        let mut running = false;
        for _ in 0..100 {
            let (_, status) = api
                .post(
                    &format!("/api/sessions/{session}/tasks_status"),
                    Some(&ann.access),
                    &json!({}),
                )
                .await;
            if status["data"]["status"] == "running" {
                running = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(running, "{session} is running");
    }

    let (status, refused) = api
        .post(
            "/api/sessions/runs/stop",
            Some(&ann.access),
            &json!({"user_id": ann_id}),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = api
        .post("/api/sessions/runs/stop", None, &json!({"user_id": ann_id}))
        .await;
    assert_eq!(status, 401, "{refused}");
    let (status, bad) = api
        .post(
            "/api/sessions/runs/stop",
            Some(&admin.access),
            &json!({"user": ann_id}),
        )
        .await;
    assert_eq!(status, 422, "{bad}");

    let (status, stopped) = api
        .post(
            "/api/sessions/runs/stop",
            Some(&admin.access),
            &json!({"user_id": ann_id}),
        )
        .await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["data"]["stopped"], json!(["kill-1", "kill-2"]));
    for (run, session) in runs.into_iter().zip(["kill-1", "kill-2"]) {
        let events = tokio::time::timeout(std::time::Duration::from_secs(10), run)
            .await
            .expect("the run stops")
            .unwrap();
        assert_tail(&events, session);
        let said = answer_text(&events).split_whitespace().count();
        assert!(said < 300, "{session} stopped early: {said} tokens");
    }
    let (_, again) = api
        .post(
            "/api/sessions/runs/stop",
            Some(&admin.access),
            &json!({"user_id": ann_id}),
        )
        .await;
    assert_eq!(
        again["data"]["stopped"],
        json!([]),
        "nothing is running now"
    );
}

/// The usage ledger is per user: each reads their own, only an admin reads another's or
/// everyone's.
#[tokio::test(flavor = "multi_thread")]
async fn each_user_reads_only_their_own_usage_and_an_admin_reads_everyones() {
    let env = auth_on(&[]).await;
    let api = Api::new(&env);
    let admin = api.login("admin", ADMIN_PASSWORD).await;
    let alice_id = api.add_user(&admin.access, "alice", "alice-password").await;
    let bob_id = api.add_user(&admin.access, "bob", "bob-password").await;
    let alice = api.login("alice", "alice-password").await;
    let bob = api.login("bob", "bob-password").await;
    for (token, session, words) in [(&alice.access, "use-a", 3), (&bob.access, "use-b", 6)] {
        let (status, _) = api
            .stream(
                Some(token),
                &json!({"session_id": session, "messages": [{"role": "user", "content": format!("words:{words}")}]}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (status, mine) = api.get("/api/usage", Some(&alice.access)).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["data"]["total"]["runs"], 1, "{mine}");
    let (status, bobs) = api
        .get(&format!("/api/usage?user_id={bob_id}"), Some(&admin.access))
        .await;
    assert_eq!(status, 200, "{bobs}");
    assert_eq!(bobs["data"]["total"]["runs"], 1);
    assert_ne!(
        bobs["data"]["total"]["total_tokens"],
        mine["data"]["total"]["total_tokens"]
    );

    let (status, body) = api
        .get(&format!("/api/usage?user_id={bob_id}"), Some(&alice.access))
        .await;
    assert_refused(status, &body, 403);
    let (status, body) = api.get("/api/usage/all", Some(&alice.access)).await;
    assert_refused(status, &body, 403);
    let (status, body) = api.get("/api/usage", None).await;
    assert_refused(status, &body, 401);

    let (status, all) = api.get("/api/usage/all", Some(&admin.access)).await;
    assert_eq!(status, 200, "{all}");
    let mut users: Vec<&str> = all["data"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["user_id"].as_str().unwrap())
        .collect();
    users.sort();
    let mut expected = [alice_id.as_str(), bob_id.as_str()];
    expected.sort();
    assert_eq!(users, expected, "{all}");
}
