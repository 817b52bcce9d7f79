//! Extractors: bodies and queries that name the bad field, bodies within the size limit, and the
//! caller's identity.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::domain::DomainError;
use crate::domain::accounts::{Accounts, GatewayIdentity, Identity, MAX_TOKEN_BYTES};
use crate::util::{InputError, UserId};

/// The raw body, within the configured limit (413 in the envelope beyond it).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request
            .extensions()
            .get::<super::Limits>()
            .map(|limits| limits.max_body_bytes);
        Bytes::from_request(request, state)
            .await
            .map(RawBody)
            .map_err(|rejection| body_error(rejection, limit))
    }
}

fn body_error(rejection: BytesRejection, limit: Option<usize>) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::TooLarge {
            limit: limit.unwrap_or_default(),
        };
    }
    InputError::Invalid(rejection.body_text()).into()
}

/// Like `axum::Json`, but a body that does not fit the schema answers 422 in the envelope with
/// the path of the offending field in `error_detail`.
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        Ok(ValidJson(parse_json(&bytes)?))
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, InputError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let detail = match (missing, path.as_str()) {
            _ if inner.is_syntax() || inner.is_eof() => format!("body: {message}"),
            (Some(field), ".") => format!("{field}: {message}"),
            (Some(field), parent) => format!("{parent}.{field}: {message}"),
            (None, ".") => format!("body: {message}"),
            (None, path) => format!("{path}: {message}"),
        };
        InputError::Schema { detail }
    })
}

/// Like `axum::extract::Query`, but a bad parameter answers 400 in the envelope, naming it.
pub struct ValidQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ValidQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts).map(ValidQuery)
    }
}

fn parse_query<T: DeserializeOwned>(parts: &Parts) -> Result<T, ApiError> {
    let query = parts.uri.query().unwrap_or_default();
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        InputError::Invalid(format!("query {path}: {}", error.into_inner())).into()
    })
}

/// Who the request acts for, decided here and nowhere else.
///
/// In Lambda, an identity an API Gateway authorizer vouched for comes first. Otherwise a
/// request with `Authorization: Bearer <token>` acts as the token's account (checked against
/// the store on every request); a `user_id` it names (body, else query) must be that account's
/// unless the account is an admin. Without a token: with auth required, 401; with `--no_auth`,
/// the named `user_id`, else Sage's `default_user`.
pub struct Caller {
    identity: Option<Identity>,
    query_user: Option<String>,
}

#[derive(Deserialize)]
struct CallerQuery {
    user_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query: CallerQuery = parse_query(parts)?;
        // An API Gateway authorizer checked the caller already; the Authorization header then
        // holds its credentials (a SigV4 signature, an identity provider's token), not ours.
        if let Some(GatewayIdentity(identity)) = parts.extensions.get::<GatewayIdentity>() {
            return Ok(Self {
                identity: Some(identity.clone()),
                query_user: query.user_id,
            });
        }
        let accounts = parts.extensions.get::<Accounts>().cloned();
        let token = bearer_token(parts)?;
        let identity = match (&accounts, token) {
            (Some(accounts), Some(token)) => Some(accounts.verify(&token).await?),
            (None, Some(_)) => {
                return Err(DomainError::Unauthorized(
                    "this function does not accept tokens".into(),
                )
                .into());
            }
            (Some(accounts), None) if accounts.auth_required() => {
                return Err(DomainError::Unauthorized(
                    "sign in first: send `Authorization: Bearer <access_token>` from \
                     /api/user/login"
                        .into(),
                )
                .into());
            }
            _ => None,
        };
        Ok(Self {
            identity,
            query_user: query.user_id,
        })
    }
}

fn bearer_token(parts: &Parts) -> Result<Option<String>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::from(DomainError::Unauthorized(
            "Authorization: expected `Bearer <access_token>`".into(),
        ))
    };
    if value.len() > MAX_TOKEN_BYTES + 16 {
        return Err(malformed());
    }
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token.to_owned()))
}

impl Caller {
    /// For routes whose body carries no `user_id`.
    pub fn user(&self) -> Result<UserId, ApiError> {
        self.with_body(None)
    }

    /// For routes whose body may name the user: a non-empty body `user_id` wins over the
    /// query's.
    pub fn with_body(&self, body_user: Option<&str>) -> Result<UserId, ApiError> {
        let named = body_user
            .filter(|id| !id.is_empty())
            .or(self.query_user.as_deref().filter(|id| !id.is_empty()));
        let Some(identity) = &self.identity else {
            return Ok(UserId::from_optional(named));
        };
        match named {
            None => Ok(identity.user_id.clone()),
            Some(named) if named == identity.user_id.as_str() => Ok(identity.user_id.clone()),
            Some(named) if identity.is_admin() => Ok(UserId::new(named)),
            Some(_) => Err(DomainError::Forbidden(
                "user_id: not the signed-in user's; only an admin may act for another user".into(),
            )
            .into()),
        }
    }

    /// A signed-in admin (never without a token).
    pub fn is_admin(&self) -> bool {
        self.identity.as_ref().is_some_and(Identity::is_admin)
    }

    /// For operator routes: a signed-in admin, or anyone while no account is signed in under
    /// `--no_auth` (the trusted local mode); any other signed-in account is refused with
    /// `refusal`.
    pub fn operator(&self, refusal: &str) -> Result<(), ApiError> {
        match &self.identity {
            Some(identity) if !identity.is_admin() => {
                Err(DomainError::Forbidden(refusal.to_owned()).into())
            }
            _ => Ok(()),
        }
    }

    /// The signed-in account, for routes that need one whatever the auth mode (401 without a
    /// token).
    pub fn signed_in(&self) -> Result<&Identity, ApiError> {
        self.identity.as_ref().ok_or_else(|| {
            DomainError::Unauthorized(
                "sign in first: send `Authorization: Bearer <access_token>` from /api/user/login"
                    .into(),
            )
            .into()
        })
    }
}

/// The URL the API Gateway stage that received the request is reached at.
#[cfg(feature = "mcp")]
#[derive(Clone)]
pub struct GatewayBase(pub String);

/// Where the request was addressed to: its API Gateway stage's URL, else the scheme and host
/// as proxies forward them (`X-Forwarded-Proto`, `X-Forwarded-Host`, else `Host`):
/// `http://localhost:8080`.
#[cfg(feature = "mcp")]
pub struct RequestOrigin(pub String);

#[cfg(feature = "mcp")]
impl<S: Send + Sync> FromRequestParts<S> for RequestOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(GatewayBase(base)) = parts.extensions.get::<GatewayBase>() {
            return Ok(Self(base.clone()));
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split(',').next())
                .map(str::trim)
                .filter(|value| !value.is_empty())
        };
        let host = header("x-forwarded-host")
            .or_else(|| header("host"))
            .or_else(|| parts.uri.authority().map(|authority| authority.as_str()))
            .filter(|host| {
                host.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
            })
            .ok_or_else(|| {
                ApiError::from(DomainError::invalid(
                    "Host: the request names no valid host to send the authorization back to",
                ))
            })?;
        let scheme = match header("x-forwarded-proto") {
            Some("https") => "https",
            _ => "http",
        };
        Ok(Self(format!("{scheme}://{host}")))
    }
}
