//! Tokens from an identity provider (`--jwt_jwks_url`): a local JWKS server (the fixture) with
//! RSA and EC keys made by openssl, key rotation, the issuer check, and the provider's groups.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::common::*;

const JWT_KEY: &str = "jwks-test-jwt-key-0123456789abcdef0123";
const ISSUER: &str = "https://idp.example.test/pool-1";

fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (Debian's openssl package)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A key pair: its private key in PEM and its public JWK.
struct Key {
    pem: Vec<u8>,
    jwk: Value,
    algorithm: jsonwebtoken::Algorithm,
    kid: String,
}

fn rsa_key(dir: &std::path::Path, kid: &str) -> Key {
    let path = dir.join(format!("{kid}.pem"));
    let path_text = path.display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &path_text,
    ]);
    let modulus =
        String::from_utf8(openssl(&["rsa", "-in", &path_text, "-noout", "-modulus"])).unwrap();
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    Key {
        pem: std::fs::read(&path).unwrap(),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": base64url(&bytes), "e": "AQAB"}),
        algorithm: jsonwebtoken::Algorithm::RS256,
        kid: kid.into(),
    }
}

fn ec_key(dir: &std::path::Path, kid: &str) -> Key {
    let path = dir.join(format!("{kid}.pem"));
    let path_text = path.display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &path_text,
    ]);
    let der = openssl(&["pkey", "-in", &path_text, "-pubout", "-outform", "DER"]);
    // The DER ends with the uncompressed point: 0x04, X (32 bytes), Y (32 bytes).
    let point = &der[der.len() - 64..];
    Key {
        pem: std::fs::read(&path).unwrap(),
        jwk: json!({"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256", "x": base64url(&point[..32]), "y": base64url(&point[32..])}),
        algorithm: jsonwebtoken::Algorithm::ES256,
        kid: kid.into(),
    }
}

impl Key {
    fn sign(&self, claims: &Value) -> String {
        let key = match self.algorithm {
            jsonwebtoken::Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(&self.pem),
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(&self.pem),
        }
        .unwrap();
        let mut header = jsonwebtoken::Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// Signed with this key but naming another key's id.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&self.pem).unwrap();
        let mut header = jsonwebtoken::Header::new(self.algorithm);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// The identity provider's key endpoint: serves whatever set it holds, counting the fetches.
#[derive(Clone, Default)]
struct Provider {
    keys: Arc<Mutex<Value>>,
    fetches: Arc<Mutex<u32>>,
}

async fn jwks(State(provider): State<Provider>) -> axum::Json<Value> {
    *provider.fetches.lock().unwrap() += 1;
    axum::Json(provider.keys.lock().unwrap().clone())
}

fn claims(sub: &str, groups: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"sub": sub, "iss": ISSUER, "exp": now + 600, "iat": now, "cognito:groups": [groups], "token_use": "access"})
}

async fn status(url: &str, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_provider_tokens_are_checked_against_its_rotating_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa_1, rsa_2, ec_1) = (
        rsa_key(dir.path(), "rsa-1"),
        rsa_key(dir.path(), "rsa-2"),
        ec_key(dir.path(), "ec-1"),
    );
    let provider = Provider::default();
    *provider.keys.lock().unwrap() = json!({"keys": [rsa_1.jwk]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let app = Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(provider.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let env = TestEnv::with(
        sage_mock_llm::MockOptions::default(),
        &[
            "--no_auth",
            "false",
            "--jwt_key",
            JWT_KEY,
            "--jwt_jwks_url",
            &jwks_url,
            "--jwt_jwks_issuer",
            ISSUER,
            "--admin_password",
            "jwks-admin-password",
        ],
    )
    .await;
    env.server.state.ensure_admin().await.unwrap();
    let base = env.server.url.clone();
    let conversations = format!("{base}/api/conversations");

    let reader = rsa_1.sign(&claims("idp-user-1", "readers"));
    let response = reqwest::Client::new()
        .post(format!("{base}/api/stream"))
        .bearer_auth(&reader)
        .json(&json!({"session_id": "idp-1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let events = ndjson_events(&response.text().await.unwrap());
    assert!(!answer_text(&events).is_empty());
    let (code, list) = status(&conversations, &reader).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["data"]["list"][0]["session_id"], "idp-1");
    assert_eq!(list["data"]["list"][0]["user_id"], "idp-user-1");
    let (code, me) = status(&format!("{base}/api/user/check_login"), &reader).await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["data"]["user"]["userid"], "idp-user-1");
    assert_eq!(me["data"]["user"]["role"], "user");
    let (code, _) = status(&format!("{conversations}?user_id=someone-else"), &reader).await;
    assert_eq!(code, 403, "a reader acts only for itself");

    // Refused: another issuer, expired, a key id the signature does not match.
    let mut foreign = claims("idp-user-1", "readers");
    foreign["iss"] = json!("https://elsewhere.example.test");
    let mut expired = claims("idp-user-1", "readers");
    expired["exp"] = json!(1_000_000_000u64);
    for (what, token) in [
        ("another issuer", rsa_1.sign(&foreign)),
        ("expired", rsa_1.sign(&expired)),
        (
            "signed by rsa-2 claiming rsa-1",
            rsa_2.sign_as("rsa-1", &claims("idp-user-1", "readers")),
        ),
    ] {
        let (code, body) = status(&conversations, &token).await;
        assert_eq!(code, 401, "{what}: {body}");
    }

    // The provider rotates: rsa-1 retired, rsa-2 and ec-1 published.
    *provider.keys.lock().unwrap() = json!({"keys": [rsa_2.jwk, ec_1.jwk]});
    let admin = rsa_2.sign(&claims("idp-admin", "admin"));
    let (code, _) = status(&conversations, &admin).await;
    assert_eq!(
        code, 401,
        "a key id seen within 5 s of the last fetch is not fetched for"
    );
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let (code, body) = status(&format!("{conversations}?user_id=idp-user-1"), &admin).await;
    assert_eq!(code, 200, "the new key is fetched: {body}");
    assert_eq!(
        body["data"]["list"][0]["session_id"], "idp-1",
        "an admin acts for others"
    );
    let (code, _) = status(&conversations, &ec_1.sign(&claims("idp-user-2", "readers"))).await;
    assert_eq!(code, 200, "ES256 from the same set");
    let (code, _) = status(&conversations, &reader).await;
    assert_eq!(code, 401, "rsa-1 was retired");

    // Our own tokens still work beside the provider's.
    let login: Value = reqwest::Client::new()
        .post(format!("{base}/api/user/login"))
        .json(&json!({"username_or_email": "admin", "password": "jwks-admin-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ours = login["data"]["access_token"].as_str().unwrap();
    let (code, _) = status(&conversations, ours).await;
    assert_eq!(code, 200);
    let fetches = *provider.fetches.lock().unwrap();
    assert!(
        (2..=3).contains(&fetches),
        "keys are cached: {fetches} fetches"
    );
}
