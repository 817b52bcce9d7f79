use std::fmt;

use super::InputError;

/// A conversation's id. It names a folder in the workspace and a key in every store, so it is
/// kept to characters that cannot escape either.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(value: &str) -> Result<Self, InputError> {
        let valid = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && !value.starts_with('.')
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(InputError::Invalid(
                "session_id: 1 to 128 characters of letters, digits, '-', '_', '.', ':' \
                 (not starting with '.')"
                    .into(),
            ))
        }
    }

    pub fn generate() -> Self {
        Self(super::new_id())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a request acts for. Without authentication it is the `user_id` the caller names, or
/// Sage's `default_user`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub const DEFAULT: &'static str = "default_user";

    /// An empty or missing id is the default user.
    pub fn from_optional(value: Option<&str>) -> Self {
        match value.filter(|id| !id.is_empty()) {
            Some(id) => Self(id.to_owned()),
            None => Self(Self::DEFAULT.to_owned()),
        }
    }

    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_that_could_escape_a_folder_are_refused() {
        for bad in ["", "../x", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(SessionId::parse("s-1_a.b:c").unwrap().as_str(), "s-1_a.b:c");
    }

    #[test]
    fn an_empty_user_id_is_the_default_user() {
        assert_eq!(UserId::from_optional(Some("")).as_str(), "default_user");
        assert_eq!(UserId::from_optional(None).as_str(), "default_user");
        assert_eq!(UserId::from_optional(Some("alice")).as_str(), "alice");
    }
}
