//! Tokens from an identity provider (`--jwt_jwks_url`): RS256/ES256 tokens checked against the
//! provider's published keys, fetched once, kept for an hour, and fetched again when a token
//! names a key not seen yet (key rotation), at most every 5 seconds.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::{GatewayIdentity, Identity, claim_text};
use crate::domain::DomainError;

const KEEP: Duration = Duration::from_secs(3600);
const MIN_REFETCH: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

pub struct JwksVerifier {
    url: String,
    issuer: Option<String>,
    client: reqwest::Client,
    cache: Mutex<Option<(JwkSet, Instant)>>,
}

impl JwksVerifier {
    pub fn new(url: String, issuer: Option<String>) -> Result<Self, reqwest::Error> {
        crate::util::tls::install_crypto_provider();
        let client = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?;
        Ok(Self {
            url,
            issuer,
            client,
            cache: Mutex::new(None),
        })
    }

    /// True when the token is signed with one of the provider's algorithms (else it may be
    /// ours).
    pub fn handles(token: &str) -> bool {
        jsonwebtoken::decode_header(token).is_ok_and(|header| ALGORITHMS.contains(&header.alg))
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, DomainError> {
        let refused = || DomainError::Unauthorized("the token is invalid or expired".into());
        let header = jsonwebtoken::decode_header(token).map_err(|_| refused())?;
        let kid = header.kid.ok_or_else(refused)?;
        let key = self.key(&kid).await?.ok_or_else(refused)?;
        let mut validation = Validation::new(header.alg);
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|_| refused())?
            .claims;
        let claim = |name: &str| claim_text(claims.get(name));
        GatewayIdentity::from_claims(claim)
            .map(|GatewayIdentity(identity)| identity)
            .ok_or_else(|| DomainError::Unauthorized("the token names no user (sub)".into()))
    }

    async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, DomainError> {
        let mut cache = self.cache.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|(_, fetched)| fetched.elapsed() < KEEP);
        let known = cache.as_ref().and_then(|(set, _)| set.find(kid).cloned());
        let may_refetch = cache
            .as_ref()
            .is_none_or(|(_, fetched)| fetched.elapsed() >= MIN_REFETCH);
        let jwk = match known {
            Some(jwk) if fresh => Some(jwk),
            known if may_refetch || cache.is_none() => {
                match self.fetch().await {
                    Ok(set) => {
                        let found = set.find(kid).cloned();
                        *cache = Some((set, Instant::now()));
                        found
                    }
                    // The provider is down: keep using what we had.
                    Err(error) if known.is_some() => {
                        tracing::warn!(%error, "JWKS refresh failed; using the cached keys");
                        known
                    }
                    Err(error) => return Err(error),
                }
            }
            known => known,
        };
        Ok(jwk.and_then(|jwk| DecodingKey::from_jwk(&jwk).ok()))
    }

    async fn fetch(&self) -> Result<JwkSet, DomainError> {
        let unavailable = |what: String| {
            DomainError::Unavailable(format!("cannot read the identity provider's keys: {what}"))
        };
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|error| unavailable(error.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status().as_u16())));
        }
        response
            .json::<JwkSet>()
            .await
            .map_err(|error| unavailable(error.without_url().to_string()))
    }
}
