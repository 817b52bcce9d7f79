//! Values kept encrypted at rest: AES-256-GCM under a key derived (HKDF-SHA256) from a
//! configured secret and a purpose, bound to what they belong to, so a sealed value copied onto
//! another record does not open.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};

pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// `purpose` separates the keys of different kinds of values made from one secret.
    pub fn new(secret: &SecretString, purpose: &'static [u8]) -> Self {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, purpose);
        let pseudo_random = salt.extract(secret.expose_secret().as_bytes());
        let okm = pseudo_random
            .expand(&[b"aes-256-gcm"], &AES_256_GCM)
            .expect("AES-256-GCM's key length is within HKDF-SHA256's output");
        Self {
            key: LessSafeKey::new(UnboundKey::from(okm)),
        }
    }

    /// The value sealed, as hex; `None` when the system gives no randomness for a nonce.
    pub fn seal(&self, plain: &[u8], bound_to: &str) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(bound_to.as_bytes()),
                &mut data,
            )
            .ok()?;
        Some(
            nonce
                .iter()
                .chain(&data)
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// The value, when `sealed` was sealed under this key for `bound_to`.
    pub fn open(&self, sealed: &str, bound_to: &str) -> Option<Vec<u8>> {
        let bytes: Vec<u8> = (0..sealed.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(sealed.get(at..at + 2).unwrap_or("zz"), 16))
            .collect::<Result<_, _>>()
            .ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let opened = self
            .key
            .open_in_place(nonce, Aad::from(bound_to.as_bytes()), &mut data)
            .ok()?;
        Some(opened.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_purpose_and_binding() {
        let secret = SecretString::from("a secret of at least thirty-two bytes!!");
        let sealer = Sealer::new(&secret, b"one purpose");
        let sealed = sealer.seal(b"token", "alice\nserver").unwrap();
        assert!(
            !sealed.contains("746f6b656e"),
            "the plain value is not in the sealed one"
        );
        assert_eq!(sealer.open(&sealed, "alice\nserver").unwrap(), b"token");
        assert!(sealer.open(&sealed, "bob\nserver").is_none());
        assert!(
            Sealer::new(&secret, b"another purpose")
                .open(&sealed, "alice\nserver")
                .is_none()
        );
        assert!(sealer.open("zz", "alice\nserver").is_none());
    }
}
