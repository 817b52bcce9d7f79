//! Argon2id password hashes in the PHC string format, computed off the async threads.

use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::DomainError;

/// The crate's defaults: Argon2id, 19 MiB, two passes (OWASP's recommendation).
fn hasher() -> Argon2<'static> {
    Argon2::default()
}

pub async fn hash(password: SecretString) -> Result<String, DomainError> {
    blocking(move || {
        // 16 bytes from the OS's generator (a v4 UUID is 122 random bits).
        let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).map_err(|error| {
            DomainError::Unavailable(format!("cannot salt a password: {error}"))
        })?;
        hasher()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| DomainError::Unavailable(format!("cannot hash a password: {error}")))
    })
    .await
}

/// Whether `password` matches `stored`. With no stored hash (no such account) it checks
/// against a fixed hash instead, so that the answer takes as long either way.
pub async fn verify(password: SecretString, stored: Option<String>) -> Result<bool, DomainError> {
    let known = stored.is_some();
    let stored = match stored {
        Some(stored) => stored,
        None => stand_in_hash().await?,
    };
    let matches = blocking(move || {
        Ok(PasswordHash::new(&stored).is_ok_and(|parsed| {
            hasher()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok()
        }))
    })
    .await?;
    Ok(known && matches)
}

async fn stand_in_hash() -> Result<String, DomainError> {
    static STAND_IN: OnceLock<Arc<str>> = OnceLock::new();
    if let Some(hash) = STAND_IN.get() {
        return Ok(hash.to_string());
    }
    let computed = hash(SecretString::from(crate::util::new_id())).await?;
    Ok(STAND_IN.get_or_init(|| computed.into()).to_string())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DomainError> + Send + 'static,
) -> Result<T, DomainError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| DomainError::Unavailable(format!("password hashing stopped: {error}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_accepts_its_password_only() {
        let stored = hash(SecretString::from("correct horse")).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(
            verify(SecretString::from("correct horse"), Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify(SecretString::from("wrong horse"), Some(stored))
                .await
                .unwrap()
        );
        assert!(
            !verify(SecretString::from("correct horse"), None)
                .await
                .unwrap()
        );
    }
}
