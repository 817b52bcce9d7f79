//! Accounts and who calls: log in, refresh, register, change a password, the admin's list, and
//! the check every request's token goes through. Tokens are checked against the account on every
//! request, so deleting an account, changing its password or its role takes effect at once.

#[cfg(feature = "llm")]
mod jwks;
mod password;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

#[cfg(feature = "llm")]
pub use jwks::JwksVerifier;
pub use tokens::{MAX_TOKEN_BYTES, TokenKeys};

use crate::domain::DomainError;
use crate::store::{AccountRecord, AccountStore, RefreshTokenRecord, SystemSettingsRecord};
use crate::util::{InputError, UserId, iso_time, now_secs};
use crate::wire::api::{
    AccessClaims, AccountCreated, AccountList, AccountOption, AccountSummary, SystemInfo, TokenPair,
};
use tokens::{AccessToken, RefreshToken};

/// The one answer to a failed login, whether or not the account exists.
const BAD_LOGIN: &str = "invalid username or password";
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_CHARS: usize = 1024;
const MAX_OPTIONS: usize = 1000;
const MAX_PAGE_SIZE: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn parse(text: &str) -> Result<Self, InputError> {
        match text {
            "admin" => Ok(Self::Admin),
            "user" => Ok(Self::User),
            other => Err(InputError::Invalid(format!(
                "role: `{other}` is not one of admin, user"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }
}

/// A caller whose token checked out against a live account.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user_id: UserId,
    pub role: Role,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A caller an API Gateway authorizer vouched for (Cognito, a JWT or Lambda authorizer, or an
/// IAM signature): trusted without a token of ours.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayIdentity(pub Identity);

impl GatewayIdentity {
    /// From an authorizer's claims: the user is `userid` (our tokens' claim), else `sub`, else
    /// `principalId`; an admin when `role` is "admin" or the `cognito:groups` include "admin".
    pub fn from_claims(claim: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let user_id = ["userid", "sub", "principalId"]
            .into_iter()
            .find_map(|name| claim(name).filter(|id| !id.is_empty()))?;
        let groups = claim("cognito:groups").unwrap_or_default();
        let admin = claim("role").as_deref() == Some("admin")
            || groups
                .trim_matches(|c| c == '[' || c == ']')
                .split([',', ' '])
                .any(|group| group.trim_matches('"') == "admin");
        Some(Self(Identity {
            user_id: UserId::new(user_id),
            role: if admin { Role::Admin } else { Role::User },
        }))
    }

    /// A request signed with AWS credentials that may call the API (`EndpointAuth` AWS_IAM): a
    /// trusted service, which may name the user it acts for.
    pub fn signer(user_arn: String) -> Self {
        Self(Identity {
            user_id: UserId::new(user_arn),
            role: Role::Admin,
        })
    }
}

/// A claim as text: strings as they are, lists joined with commas (`cognito:groups`), anything
/// else as its JSON.
pub fn claim_text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    }
}

/// An account to create, checked: a username of 3 to 64 letters, digits, '_', '-', '.'; an
/// optional email with an '@'; a password of 8 to 1,024 characters.
pub struct NewAccount {
    username: String,
    password: SecretString,
    email: Option<String>,
    phonenum: Option<String>,
    role: Role,
}

impl NewAccount {
    pub fn parse(
        username: &str,
        password: SecretString,
        email: Option<&str>,
        phonenum: Option<&str>,
        role: Option<&str>,
    ) -> Result<Self, InputError> {
        let username = username.trim();
        let username_ok = (3..=64).contains(&username.chars().count())
            && username
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !username_ok {
            return Err(InputError::Invalid(
                "username: 3 to 64 letters, digits, '_', '-' or '.'".into(),
            ));
        }
        check_password("password", &password)?;
        let email = email.map(str::trim).filter(|email| !email.is_empty());
        if let Some(email) = email {
            let valid = email.len() <= 191
                && email.split_once('@').is_some_and(|(name, domain)| {
                    !name.is_empty() && !domain.is_empty() && !domain.contains('@')
                })
                && !email.chars().any(char::is_whitespace);
            if !valid {
                return Err(InputError::Invalid("email: not an email address".into()));
            }
        }
        let phonenum = phonenum.map(str::trim).filter(|phone| !phone.is_empty());
        if phonenum.is_some_and(|phone| {
            phone.len() > 32
                || !phone
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')'))
        }) {
            return Err(InputError::Invalid(
                "phonenum: at most 32 digits, spaces and + - ( )".into(),
            ));
        }
        Ok(Self {
            username: username.to_owned(),
            password,
            email: email.map(str::to_owned),
            phonenum: phonenum.map(str::to_owned),
            role: role.map(Role::parse).transpose()?.unwrap_or(Role::User),
        })
    }
}

fn check_password(field: &str, password: &SecretString) -> Result<(), InputError> {
    let chars = password.expose_secret().chars().count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(InputError::Invalid(format!(
            "{field}: {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )))
    }
}

/// How the service treats callers without a token, and who may register.
#[derive(Debug, Clone, Copy)]
pub struct AccountPolicy {
    /// Every route but the public ones needs a valid token (`--no_auth false`).
    pub auth_required: bool,
    /// `POST /api/user/register` is open to anyone.
    pub allow_registration: bool,
}

#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn AccountStore>,
    keys: Arc<TokenKeys>,
    policy: AccountPolicy,
    /// An identity provider's keys (`--jwt_jwks_url`), for its RS256/ES256 tokens.
    #[cfg(feature = "llm")]
    provider: Option<Arc<JwksVerifier>>,
}

impl Accounts {
    pub fn new(store: Arc<dyn AccountStore>, keys: TokenKeys, policy: AccountPolicy) -> Self {
        Self {
            store,
            keys: Arc::new(keys),
            policy,
            #[cfg(feature = "llm")]
            provider: None,
        }
    }

    /// Also accepts the tokens of the identity provider whose keys `verifier` reads.
    #[cfg(feature = "llm")]
    pub fn with_identity_provider(mut self, verifier: JwksVerifier) -> Self {
        self.provider = Some(Arc::new(verifier));
        self
    }

    pub fn auth_required(&self) -> bool {
        self.policy.auth_required
    }

    /// Creates the first admin unless an account named `username` exists. Returns the password
    /// it generated, when it had to generate one and the account was created by this call.
    pub async fn ensure_admin(
        &self,
        username: &str,
        password: Option<&SecretString>,
    ) -> Result<Option<SecretString>, DomainError> {
        if self.store.account_by_login(username).await?.is_some() {
            return Ok(None);
        }
        let generated = password
            .is_none()
            .then(|| SecretString::from(uuid::Uuid::new_v4().simple().to_string()));
        let password = password.or(generated.as_ref()).cloned().unwrap_or_default();
        let account = NewAccount::parse(username, password, None, None, Some("admin"))?;
        match self.insert(account).await {
            Ok(_) => Ok(generated),
            // Another instance created it first.
            Err(DomainError::Conflict(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn login(
        &self,
        login: &str,
        password: SecretString,
    ) -> Result<TokenPair, DomainError> {
        let login = login.trim();
        let account = if login.is_empty() || login.len() > 191 {
            None
        } else {
            self.store.account_by_login(login).await?
        };
        let stored = account
            .as_ref()
            .map(|account| account.password_hash.clone());
        if !password::verify(password, stored).await? {
            return Err(DomainError::Unauthorized(BAD_LOGIN.into()));
        }
        let account = account.ok_or_else(|| DomainError::Unauthorized(BAD_LOGIN.into()))?;
        self.issue(&account).await
    }

    /// A new pair for a refresh token, which is used up: a second use is refused.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, DomainError> {
        let refused =
            || DomainError::Unauthorized("refresh_token: invalid, expired or used".into());
        let token = self.keys.open_refresh(refresh_token).ok_or_else(refused)?;
        let taken = self.store.take_refresh_token(&token.jti).await?;
        if taken.is_none_or(|taken| taken.user_id != token.uid) {
            return Err(refused());
        }
        let account = self
            .store
            .account(&token.uid)
            .await?
            .filter(|account| account.token_generation == token.generation)
            .ok_or_else(refused)?;
        self.issue(&account).await
    }

    /// Whether anyone may register: the admin's saved setting, else `--allow_registration`.
    async fn registration_open(&self) -> Result<bool, DomainError> {
        Ok(self
            .store
            .system_settings()
            .await?
            .and_then(|settings| settings.allow_registration)
            .unwrap_or(self.policy.allow_registration))
    }

    pub async fn system_info(&self) -> Result<SystemInfo, DomainError> {
        Ok(SystemInfo {
            allow_registration: self.registration_open().await?,
            auth_required: self.policy.auth_required,
            version: env!("CARGO_PKG_VERSION"),
        })
    }

    /// The admin opens or closes registration for every instance.
    pub async fn update_settings(
        &self,
        caller: &Identity,
        allow_registration: bool,
    ) -> Result<(), DomainError> {
        require_admin(caller)?;
        let settings = SystemSettingsRecord {
            allow_registration: Some(allow_registration),
            updated_at: now_secs(),
        };
        Ok(self.store.put_system_settings(&settings).await?)
    }

    pub async fn register(&self, account: NewAccount) -> Result<AccountCreated, DomainError> {
        if !self.registration_open().await? {
            return Err(DomainError::Forbidden(
                "registration is closed: an admin adds accounts".into(),
            ));
        }
        if account.role == Role::Admin {
            return Err(DomainError::Forbidden(
                "role: only an admin can create an admin".into(),
            ));
        }
        self.insert(account).await
    }

    pub async fn add(
        &self,
        caller: &Identity,
        account: NewAccount,
    ) -> Result<AccountCreated, DomainError> {
        require_admin(caller)?;
        self.insert(account).await
    }

    pub async fn delete(&self, caller: &Identity, user_id: &str) -> Result<(), DomainError> {
        require_admin(caller)?;
        if caller.user_id.as_str() == user_id {
            return Err(DomainError::invalid(
                "user_id: an admin cannot delete their own account",
            ));
        }
        if self.store.delete_account(user_id).await? {
            Ok(())
        } else {
            Err(DomainError::NotFound(format!("no account {user_id}")))
        }
    }

    pub async fn list(
        &self,
        caller: &Identity,
        page: u64,
        page_size: u64,
    ) -> Result<AccountList, DomainError> {
        require_admin(caller)?;
        if page == 0 || page_size == 0 || page_size > MAX_PAGE_SIZE {
            return Err(DomainError::invalid(format!(
                "page and page_size: page from 1, page_size 1 to {MAX_PAGE_SIZE}"
            )));
        }
        let accounts = self.store.list_accounts().await?;
        let total = accounts.len();
        let items = accounts
            .into_iter()
            .skip(usize::try_from((page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX))
            .take(page_size as usize)
            .map(|account| AccountSummary {
                id: account.user_id.clone(),
                user_id: account.user_id,
                username: account.username,
                email: account.email.unwrap_or_default(),
                phonenum: account.phonenum.unwrap_or_default(),
                role: account.role,
                created_at: iso_time(account.created_at),
            })
            .collect();
        Ok(AccountList { items, total })
    }

    /// Every account's name and id, for choosing whom to share with.
    pub async fn options(&self, _caller: &Identity) -> Result<Vec<AccountOption>, DomainError> {
        Ok(self
            .store
            .list_accounts()
            .await?
            .into_iter()
            .take(MAX_OPTIONS)
            .map(|account| AccountOption {
                label: account.username,
                value: account.user_id,
            })
            .collect())
    }

    /// The caller's claims as a fresh token would carry them; for a caller an identity provider
    /// or an authorizer vouched for (no account here), what is known of them.
    pub async fn claims(&self, caller: &Identity) -> Result<AccessClaims, DomainError> {
        let now = now_secs() as u64;
        match self.store.account(caller.user_id.as_str()).await? {
            Some(account) => Ok(self.access_claims(&account, now)),
            None => Ok(AccessClaims {
                userid: caller.user_id.to_string(),
                username: caller.user_id.to_string(),
                email: String::new(),
                phonenum: String::new(),
                role: caller.role.as_str().into(),
                exp: now + access_seconds(self.keys.access_ttl),
                iat: now,
            }),
        }
    }

    /// Changes the caller's password; every token issued before stops working.
    pub async fn change_password(
        &self,
        caller: &Identity,
        old_password: SecretString,
        new_password: SecretString,
    ) -> Result<(), DomainError> {
        check_password("new_password", &new_password)?;
        let account = self.live_account(caller.user_id.as_str()).await?;
        if !password::verify(old_password, Some(account.password_hash.clone())).await? {
            return Err(DomainError::invalid("old_password: does not match"));
        }
        let updated = AccountRecord {
            password_hash: password::hash(new_password).await?,
            token_generation: account.token_generation + 1,
            ..account
        };
        if self.store.update_account(&updated).await? {
            Ok(())
        } else {
            Err(DomainError::Unauthorized(
                "the account no longer exists".into(),
            ))
        }
    }

    /// Who an access token speaks for: its signature, audience and expiry, then the account,
    /// which must still exist and must not have changed its password since.
    pub async fn verify(&self, access_token: &str) -> Result<Identity, DomainError> {
        #[cfg(feature = "llm")]
        if let Some(provider) = &self.provider
            && JwksVerifier::handles(access_token)
        {
            return provider.verify(access_token).await;
        }
        let token = self
            .keys
            .open_access(access_token)
            .ok_or_else(|| DomainError::Unauthorized("the token is invalid or expired".into()))?;
        let account = self.live_account(&token.claims.userid).await?;
        if account.token_generation != token.generation {
            return Err(DomainError::Unauthorized(
                "the token was revoked (the password changed): log in again".into(),
            ));
        }
        Ok(Identity {
            user_id: UserId::new(account.user_id),
            role: Role::parse(&account.role).unwrap_or(Role::User),
        })
    }

    async fn live_account(&self, user_id: &str) -> Result<AccountRecord, DomainError> {
        self.store
            .account(user_id)
            .await?
            .ok_or_else(|| DomainError::Unauthorized("the account no longer exists".into()))
    }

    async fn insert(&self, account: NewAccount) -> Result<AccountCreated, DomainError> {
        let record = AccountRecord {
            user_id: uuid::Uuid::new_v4().simple().to_string(),
            username: account.username,
            email: account.email,
            phonenum: account.phonenum,
            role: account.role.as_str().into(),
            password_hash: password::hash(account.password).await?,
            token_generation: 0,
            created_at: now_secs(),
        };
        if self.store.insert_account(&record).await? {
            Ok(AccountCreated {
                user_id: record.user_id,
            })
        } else {
            Err(DomainError::Conflict(
                "username or email: already taken".into(),
            ))
        }
    }

    async fn issue(&self, account: &AccountRecord) -> Result<TokenPair, DomainError> {
        let now = now_secs() as u64;
        let access = AccessToken {
            claims: self.access_claims(account, now),
            aud: TokenKeys::access_audience(),
            generation: account.token_generation,
        };
        let refresh = RefreshToken {
            uid: account.user_id.clone(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat: now,
            exp: now + self.keys.refresh_ttl.as_secs().max(1),
            aud: TokenKeys::refresh_audience(),
            generation: account.token_generation,
        };
        self.store
            .put_refresh_token(&RefreshTokenRecord {
                token_id: refresh.jti.clone(),
                user_id: account.user_id.clone(),
                expires_at: refresh.exp as f64,
            })
            .await?;
        Ok(TokenPair {
            access_token: self.keys.sign_access(&access),
            refresh_token: self.keys.sign_refresh(&refresh),
            expires_in: access_seconds(self.keys.access_ttl),
            token_type: "bearer",
        })
    }

    fn access_claims(&self, account: &AccountRecord, now: u64) -> AccessClaims {
        AccessClaims {
            userid: account.user_id.clone(),
            username: account.username.clone(),
            email: account.email.clone().unwrap_or_default(),
            phonenum: account.phonenum.clone().unwrap_or_default(),
            role: account.role.clone(),
            exp: now + access_seconds(self.keys.access_ttl),
            iat: now,
        }
    }
}

fn access_seconds(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

fn require_admin(caller: &Identity) -> Result<(), DomainError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(DomainError::Forbidden("only an admin may do this".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(claims: &[(&str, &str)]) -> Option<GatewayIdentity> {
        let claims: HashMap<&str, &str> = claims.iter().copied().collect();
        GatewayIdentity::from_claims(|name| claims.get(name).map(|value| value.to_string()))
    }

    #[test]
    fn authorizer_claims_name_the_user_and_the_admin_group() {
        let reader = from(&[("sub", "u-1"), ("cognito:groups", "readers")]).unwrap();
        assert_eq!(
            (reader.0.user_id.as_str(), reader.0.role),
            ("u-1", Role::User)
        );
        let admin = from(&[("sub", "u-2"), ("cognito:groups", "[admin readers]")]).unwrap();
        assert_eq!(admin.0.role, Role::Admin);
        let ours = from(&[("userid", "u-3"), ("sub", "ignored"), ("role", "admin")]).unwrap();
        assert_eq!((ours.0.user_id.as_str(), ours.0.role), ("u-3", Role::Admin));
        let lambda = from(&[("principalId", "u-4")]).unwrap();
        assert_eq!(lambda.0.user_id.as_str(), "u-4");
        assert!(
            from(&[("cognito:groups", "admin")]).is_none(),
            "no user, no identity"
        );
        assert!(from(&[("sub", "")]).is_none());
        let almost = from(&[("sub", "u-5"), ("cognito:groups", "administrators")]).unwrap();
        assert_eq!(almost.0.role, Role::User);
    }
}
