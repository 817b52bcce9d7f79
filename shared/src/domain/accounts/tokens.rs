//! Signed tokens: HS256 access tokens with Sage's claims, and single-use refresh tokens signed
//! with their own key. Each kind names its audience, so neither passes for the other.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::wire::api::AccessClaims;

const ACCESS_AUDIENCE: &str = "sage-access";
const REFRESH_AUDIENCE: &str = "sage-refresh";
/// Larger tokens are refused before any work is done on them.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What an access token carries: Sage's claims, its audience and the account's token
/// generation when it was issued.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct AccessToken {
    #[serde(flatten)]
    pub claims: AccessClaims,
    pub aud: String,
    pub generation: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RefreshToken {
    pub uid: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    pub aud: String,
    pub generation: u64,
}

/// The signing keys, and how long each kind of token lives.
pub struct TokenKeys {
    access_encoding: EncodingKey,
    access_decoding: DecodingKey,
    refresh_encoding: EncodingKey,
    refresh_decoding: DecodingKey,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl TokenKeys {
    pub fn new(
        access_key: &SecretString,
        refresh_key: &SecretString,
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> Self {
        let access = access_key.expose_secret().as_bytes();
        let refresh = refresh_key.expose_secret().as_bytes();
        Self {
            access_encoding: EncodingKey::from_secret(access),
            access_decoding: DecodingKey::from_secret(access),
            refresh_encoding: EncodingKey::from_secret(refresh),
            refresh_decoding: DecodingKey::from_secret(refresh),
            access_ttl,
            refresh_ttl,
        }
    }

    pub(super) fn sign_access(&self, token: &AccessToken) -> String {
        sign(token, &self.access_encoding)
    }

    pub(super) fn sign_refresh(&self, token: &RefreshToken) -> String {
        sign(token, &self.refresh_encoding)
    }

    /// The token's content when its signature, audience and expiry check out.
    pub(super) fn open_access(&self, token: &str) -> Option<AccessToken> {
        open(token, &self.access_decoding, ACCESS_AUDIENCE)
    }

    pub(super) fn open_refresh(&self, token: &str) -> Option<RefreshToken> {
        open(token, &self.refresh_decoding, REFRESH_AUDIENCE)
    }

    pub(super) fn access_audience() -> String {
        ACCESS_AUDIENCE.into()
    }

    pub(super) fn refresh_audience() -> String {
        REFRESH_AUDIENCE.into()
    }
}

fn sign<T: Serialize>(token: &T, key: &EncodingKey) -> String {
    // HMAC signing of a serialisable struct cannot fail.
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), token, key).unwrap_or_default()
}

fn open<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    audience: &str,
) -> Option<T> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    // Only HS256: a header naming another algorithm ("none" included) is refused.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<T>(token, key, &validation)
        .ok()
        .map(|data| data.claims)
}
