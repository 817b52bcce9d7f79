//! MCP servers behind OAuth: discovery, dynamic client registration and PKCE through rmcp's
//! `AuthorizationManager`; what it keeps between steps (the verifier, the client, the tokens)
//! lives sealed in the store, per user and server, so any instance can take the callback or use
//! the tokens. A token about to expire is refreshed by one instance at a time: it takes a lease
//! by a conditional write on the credentials' version, and the others wait for its result.

use std::sync::Arc;
use std::time::Duration;

use oauth2::TokenResponse;
use rmcp::transport::auth::{
    AuthError, AuthorizationManager, AuthorizationMetadata, CredentialStore,
    InMemoryCredentialStore, InMemoryStateStore, OAuthClientConfig, StateStore,
    StoredAuthorizationState, StoredCredentials,
};
use serde::{Deserialize, Serialize};

use super::{McpOAuthSettings, McpServerConfig, TransportKind};
use crate::store::{McpAuthorizationRecord, McpCredentialsRecord, McpServerStore, StoreError};
use crate::util::now_secs;
use crate::util::sealing::Sealer;

/// How long a user has to finish an authorization once started.
const AUTHORIZATION_TTL: Duration = Duration::from_secs(600);
/// How long one instance may hold the refresh before another may take it over.
const REFRESH_LEASE: Duration = Duration::from_secs(30);
/// How often a caller waiting for another instance's refresh looks again.
const REFRESH_POLL: Duration = Duration::from_millis(100);
/// The client name given at registration.
const CLIENT_NAME: &str = "Sage";

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error(
        "MCP servers with OAuth need --jwt_key (SAGE_JWT_KEY): their tokens are encrypted with a key derived from it"
    )]
    NotConfigured,
    #[error("OAuth needs the server's streamable HTTP URL (streamable_http_url or url)")]
    NotHttp,
    #[error("the server's OAuth authorization could not be set up: {0}")]
    Discovery(String),
    #[error("this authorization is unknown or was already used; start it again")]
    UnknownState,
    #[error("this authorization took longer than {} minutes; start it again", AUTHORIZATION_TTL.as_secs() / 60)]
    Expired,
    #[error("the authorization server refused: {0}")]
    Denied(String),
    #[error("the authorization code was not accepted: {0}")]
    Exchange(String),
    #[error("MCP server `{0}` needs the user's authorization: POST /api/mcp/{0}/authorize")]
    AuthorizationRequired(String),
    #[error("the server's OAuth token could not be refreshed: {0}")]
    Refresh(String),
    #[error(
        "the server's stored OAuth credentials cannot be opened (was --jwt_key changed?): authorize it again"
    )]
    Unreadable,
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// The client registered with the authorization server, and where it is.
#[derive(Serialize, Deserialize)]
struct Client {
    client_id: String,
    client_secret: Option<String>,
    redirect_uri: String,
    scopes: Vec<String>,
    metadata: AuthorizationMetadata,
}

impl Client {
    fn config(&self) -> OAuthClientConfig {
        let mut config = OAuthClientConfig::new(self.client_id.clone(), self.redirect_uri.clone())
            .with_scopes(self.scopes.clone());
        if let Some(secret) = &self.client_secret {
            config = config.with_client_secret(secret.clone());
        }
        config
    }

    async fn manager(&self, url: &str) -> Result<AuthorizationManager, AuthError> {
        let mut manager = AuthorizationManager::new(url).await?;
        manager.set_metadata(self.metadata.clone());
        manager.configure_client(self.config())?;
        Ok(manager)
    }
}

/// What an authorization in progress keeps.
#[derive(Serialize, Deserialize)]
struct Pending {
    client: Client,
    state: StoredAuthorizationState,
}

/// What a user's credentials for one server keep.
#[derive(Serialize, Deserialize)]
struct Sealed {
    client: Client,
    credentials: StoredCredentials,
}

impl Sealed {
    fn access_token(&self) -> Option<String> {
        let response = self.credentials.token_response.as_ref()?;
        Some(response.access_token().secret().clone())
    }

    /// Whether the token is still good for a while: rmcp's own margin, the smaller of 30 s and
    /// half its lifetime, at least a second. A token without a lifetime is good until refused.
    fn fresh(&self, now: f64) -> bool {
        let Some(response) = self.credentials.token_response.as_ref() else {
            return false;
        };
        let (Some(lifetime), Some(received)) =
            (response.expires_in(), self.credentials.token_received_at)
        else {
            return true;
        };
        let lifetime = lifetime.as_secs_f64();
        let margin = (lifetime / 2.0).clamp(1.0, 30.0);
        received as f64 + lifetime - margin > now
    }
}

/// The URL OAuth is for: the server's streamable HTTP endpoint.
pub fn oauth_url(config: &McpServerConfig) -> Result<String, OAuthError> {
    match config.transport() {
        Some(TransportKind::StreamableHttp(url)) => Ok(url),
        _ => Err(OAuthError::NotHttp),
    }
}

fn bound_to(owner: &str, server: &str) -> String {
    format!("mcp-oauth\n{owner}\n{server}")
}

fn auth_message(error: AuthError) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

/// Users' OAuth authorizations of their MCP servers.
#[derive(Clone)]
pub struct McpOAuth {
    store: Arc<dyn McpServerStore>,
    sealer: Option<Arc<Sealer>>,
}

impl McpOAuth {
    /// `sealer`: None without a configured secret, when nothing can be authorized.
    pub fn new(store: Arc<dyn McpServerStore>, sealer: Option<Sealer>) -> Self {
        Self {
            store,
            sealer: sealer.map(Arc::new),
        }
    }

    fn sealer(&self) -> Result<&Sealer, OAuthError> {
        self.sealer.as_deref().ok_or(OAuthError::NotConfigured)
    }

    fn seal<T: Serialize>(&self, value: &T, bound: &str) -> Result<String, OAuthError> {
        let plain = serde_json::to_vec(value).map_err(StoreError::from)?;
        self.sealer()?
            .seal(&plain, bound)
            .ok_or_else(|| OAuthError::Discovery("no randomness to seal with".into()))
    }

    fn open<T: for<'de> Deserialize<'de>>(
        &self,
        sealed: &str,
        bound: &str,
    ) -> Result<T, OAuthError> {
        self.sealer()?
            .open(sealed, bound)
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or(OAuthError::Unreadable)
    }

    /// Discovers the server's authorization server, registers a client whose redirect is
    /// `redirect_uri` and keeps the PKCE verifier: the URL to send the user to.
    pub async fn start(
        &self,
        owner: &str,
        server: &str,
        url: &str,
        settings: &McpOAuthSettings,
        redirect_uri: &str,
    ) -> Result<String, OAuthError> {
        self.sealer()?;
        let discovery = |error: AuthError| OAuthError::Discovery(auth_message(error));
        let mut manager = AuthorizationManager::new(url).await.map_err(discovery)?;
        let resolution = manager.resolve_metadata().await.map_err(discovery)?;
        if !resolution.source.is_discovered() {
            return Err(OAuthError::Discovery(
                "the server publishes no OAuth metadata (RFC 9728 or RFC 8414)".into(),
            ));
        }
        manager.set_metadata(resolution.metadata.clone());
        let states = InMemoryStateStore::new();
        manager.set_state_store(states.clone());
        let scopes = if settings.scopes.is_empty() {
            manager.select_scopes(None, &[])
        } else {
            settings.scopes.clone()
        };
        let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let registered = manager
            .register_client(CLIENT_NAME, redirect_uri, &scope_refs)
            .await
            .map_err(discovery)?;
        let authorization_url = manager
            .get_authorization_url(&scope_refs)
            .await
            .map_err(discovery)?;
        let state = url::Url::parse(&authorization_url)
            .ok()
            .and_then(|parsed| {
                parsed
                    .query_pairs()
                    .find(|(name, _)| name == "state")
                    .map(|(_, value)| value.into_owned())
            })
            .ok_or_else(|| OAuthError::Discovery("the authorization URL has no state".into()))?;
        let stored = StateStore::load(&states, &state)
            .await
            .map_err(discovery)?
            .ok_or_else(|| OAuthError::Discovery("the authorization state was not kept".into()))?;
        let pending = Pending {
            client: Client {
                client_id: registered.client_id,
                client_secret: registered.client_secret,
                redirect_uri: redirect_uri.to_owned(),
                scopes,
                metadata: resolution.metadata,
            },
            state: stored,
        };
        self.store
            .put_mcp_authorization(&McpAuthorizationRecord {
                sealed: self.seal(&pending, &format!("{}\n{state}", bound_to(owner, server)))?,
                state,
                owner: owner.to_owned(),
                server: server.to_owned(),
                expires_at: now_secs() + AUTHORIZATION_TTL.as_secs_f64(),
            })
            .await?;
        Ok(authorization_url)
    }

    /// The authorization server's redirect back: exchanges the code for tokens and keeps them.
    /// Answers whose server it was, as (owner, server).
    pub async fn complete(
        &self,
        state: &str,
        code: &str,
        issuer: Option<&str>,
    ) -> Result<(String, String), OAuthError> {
        self.sealer()?;
        let record = self
            .store
            .take_mcp_authorization(state)
            .await?
            .ok_or(OAuthError::UnknownState)?;
        if record.expires_at < now_secs() {
            return Err(OAuthError::Expired);
        }
        let pending: Pending = self.open(
            &record.sealed,
            &format!("{}\n{state}", bound_to(&record.owner, &record.server)),
        )?;
        let server = self
            .store
            .get_mcp_server(&record.owner, &record.server)
            .await?
            .ok_or(OAuthError::UnknownState)?;
        let url = oauth_url(&server.config)?;
        let exchange = |error: AuthError| OAuthError::Exchange(auth_message(error));
        let mut manager = pending.client.manager(&url).await.map_err(exchange)?;
        let states = InMemoryStateStore::new();
        StateStore::save(&states, state, pending.state)
            .await
            .map_err(exchange)?;
        manager.set_state_store(states);
        let held = InMemoryCredentialStore::new();
        manager.set_credential_store(held.clone());
        manager
            .exchange_code_for_token_with_issuer(code, state, issuer)
            .await
            .map_err(exchange)?;
        let credentials = CredentialStore::load(&held)
            .await
            .map_err(exchange)?
            .ok_or_else(|| OAuthError::Exchange("no token was kept".into()))?;
        let sealed = Sealed {
            client: pending.client,
            credentials,
        };
        self.replace_credentials(&record.owner, &record.server, &sealed)
            .await?;
        Ok((record.owner, record.server))
    }

    async fn replace_credentials(
        &self,
        owner: &str,
        server: &str,
        sealed: &Sealed,
    ) -> Result<(), OAuthError> {
        let text = self.seal(sealed, &bound_to(owner, server))?;
        loop {
            let current = self.store.mcp_credentials(owner, server).await?;
            let expected = current.as_ref().map(|record| record.version);
            let record = McpCredentialsRecord {
                owner: owner.to_owned(),
                server: server.to_owned(),
                sealed: text.clone(),
                version: expected.map_or(1, |version| version + 1),
                refreshing_until: 0.0,
                updated_at: now_secs(),
            };
            if self.store.put_mcp_credentials(&record, expected).await? {
                return Ok(());
            }
        }
    }

    /// The authorization server sent the user back without a code: the authorization ends.
    pub async fn abandon(&self, state: &str) -> Result<(), OAuthError> {
        self.store
            .take_mcp_authorization(state)
            .await?
            .map(|_| ())
            .ok_or(OAuthError::UnknownState)
    }

    /// Whether the user has credentials for the server.
    pub async fn authorized(&self, owner: &str, server: &str) -> Result<bool, OAuthError> {
        Ok(self.store.mcp_credentials(owner, server).await?.is_some())
    }

    /// Forgets the user's credentials for the server.
    pub async fn forget(&self, owner: &str, server: &str) -> Result<(), OAuthError> {
        Ok(self.store.delete_mcp_credentials(owner, server).await?)
    }

    /// A token to call the server with. One about to expire is refreshed first, by one caller
    /// across every instance; `refused` names a token the server has just refused, which is
    /// refreshed even when it looks fresh.
    pub async fn access_token(
        &self,
        owner: &str,
        server: &str,
        url: &str,
        refused: Option<&str>,
    ) -> Result<String, OAuthError> {
        let bound = bound_to(owner, server);
        let required = || OAuthError::AuthorizationRequired(server.to_owned());
        loop {
            let record = self
                .store
                .mcp_credentials(owner, server)
                .await?
                .ok_or_else(required)?;
            let sealed: Sealed = self.open(&record.sealed, &bound)?;
            let now = now_secs();
            let token = sealed.access_token().ok_or_else(required)?;
            if sealed.fresh(now) && refused != Some(token.as_str()) {
                return Ok(token);
            }
            if record.refreshing_until > now {
                tokio::time::sleep(REFRESH_POLL).await;
                continue;
            }
            let leased = McpCredentialsRecord {
                version: record.version + 1,
                refreshing_until: now + REFRESH_LEASE.as_secs_f64(),
                updated_at: now,
                ..record.clone()
            };
            if !self
                .store
                .put_mcp_credentials(&leased, Some(record.version))
                .await?
            {
                continue;
            }
            return self.refresh(leased, sealed, url).await;
        }
    }

    /// Refreshes under the lease `leased` holds, and writes the outcome in its place.
    async fn refresh(
        &self,
        leased: McpCredentialsRecord,
        sealed: Sealed,
        url: &str,
    ) -> Result<String, OAuthError> {
        let (owner, server) = (leased.owner.as_str(), leased.server.as_str());
        tracing::info!(server = %server, "refreshing an MCP server's OAuth token");
        let refreshed = async {
            let mut manager = sealed.client.manager(url).await?;
            let held = InMemoryCredentialStore::new();
            CredentialStore::save(&held, sealed.credentials.clone()).await?;
            manager.set_credential_store(held.clone());
            manager.refresh_token().await?;
            CredentialStore::load(&held)
                .await?
                .ok_or(AuthError::AuthorizationRequired)
        }
        .await;
        let (outcome, sealed_text) = match refreshed {
            Ok(credentials) => {
                let renewed = Sealed {
                    client: sealed.client,
                    credentials,
                };
                let text = self.seal(&renewed, &bound_to(owner, server))?;
                (
                    renewed
                        .access_token()
                        .ok_or_else(|| OAuthError::AuthorizationRequired(server.to_owned())),
                    text,
                )
            }
            Err(AuthError::AuthorizationRequired | AuthError::TokenRefreshRejected(_)) => {
                // The authorization server no longer accepts the refresh token: the user has to
                // authorize again, and nobody should try these credentials.
                self.store.delete_mcp_credentials(owner, server).await?;
                return Err(OAuthError::AuthorizationRequired(server.to_owned()));
            }
            Err(error) => (
                Err(OAuthError::Refresh(auth_message(error))),
                leased.sealed.clone(),
            ),
        };
        let written = McpCredentialsRecord {
            sealed: sealed_text,
            version: leased.version + 1,
            refreshing_until: 0.0,
            updated_at: now_secs(),
            ..leased.clone()
        };
        if !self
            .store
            .put_mcp_credentials(&written, Some(leased.version))
            .await?
        {
            tracing::warn!(server = %server, "an MCP server's refreshed OAuth token was not kept: the lease had passed to another instance");
        }
        outcome
    }
}
