use crate::store::StoreError;
use crate::util::InputError;

/// Why a domain operation did not happen. The HTTP layer maps each kind to a status; the
/// message of every kind but `Store` is meant for the caller.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    NotFound(String),
    /// The caller is not signed in, or their token no longer holds.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// A budget is spent: the caller must wait for it to reset.
    #[error("{0}")]
    LimitReached(String),
    /// Something this service needs is not configured or not available.
    #[error("{0}")]
    Unavailable(String),
    /// A peer (MCP server, model) failed or answered nonsense.
    #[error("{0}")]
    Upstream(String),
    /// A peer did not answer in time.
    #[error("{0}")]
    UpstreamTimeout(String),
    #[error("storage failure")]
    Store(#[from] StoreError),
}

impl DomainError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Input(InputError::Invalid(message.into()))
    }
}
