//! Users' own LLM providers (`/api/llm-provider/*`): their keys sealed with AES-256-GCM under a
//! key derived from `--jwt_key`, never shown but as their last four characters. A run uses the
//! provider its request or agent names, else the user's default one, else the configured
//! default model.

use std::sync::Arc;

use secrecy::SecretString;

use crate::domain::DomainError;
use crate::store::{ProviderRecord, ProviderStore, StoreError};
use crate::util::sealing::Sealer;
use crate::util::{InputError, UserId, iso_time, now_secs};
use crate::wire::LlmModelConfig;
use crate::wire::provider::{ProviderCreated, ProviderInput, ProviderSettings, ProviderView};

const MASK: &str = "****";
const MAX_KEYS: usize = 20;

/// Seals and opens provider keys; bound to the provider they belong to, so a sealed value
/// copied onto another provider does not open.
pub struct KeySealer(Sealer);

impl KeySealer {
    pub fn new(secret: &SecretString) -> Self {
        Self(Sealer::new(secret, b"sage-functions/llm-provider-keys"))
    }

    fn seal(&self, keys: &[String], bound_to: &str) -> Result<String, DomainError> {
        let data = serde_json::to_vec(keys).map_err(StoreError::from)?;
        self.0
            .seal(&data, bound_to)
            .ok_or_else(|| DomainError::Unavailable("cannot seal the provider's keys".into()))
    }

    fn open(&self, sealed: &str, bound_to: &str) -> Result<Vec<String>, DomainError> {
        self.0
            .open(sealed, bound_to)
            .and_then(|opened| serde_json::from_slice(&opened).ok())
            .ok_or_else(|| {
                DomainError::Unavailable(
                    "the provider's keys cannot be opened (was --jwt_key changed?): save its keys again"
                        .into(),
                )
            })
    }
}

fn bound_to(owner: &str, provider_id: &str) -> String {
    format!("{owner}\n{provider_id}")
}

/// `****` and the key's last four characters (only `****` for a short key).
pub fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return MASK.into();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{MASK}{tail}")
}

#[derive(Clone)]
pub struct Providers {
    store: Arc<dyn ProviderStore>,
    /// None without a configured `--jwt_key`: keys sealed under a key made up for one process
    /// would not open after it ends, so no provider can be saved then.
    sealer: Option<Arc<KeySealer>>,
}

impl Providers {
    pub fn new(store: Arc<dyn ProviderStore>, sealer: Option<KeySealer>) -> Self {
        Self {
            store,
            sealer: sealer.map(Arc::new),
        }
    }

    fn sealer(&self) -> Result<&KeySealer, DomainError> {
        self.sealer.as_deref().ok_or_else(|| {
            DomainError::Unavailable(
                "stored providers need --jwt_key (SAGE_JWT_KEY): their API keys are encrypted \
                 with a key derived from it"
                    .into(),
            )
        })
    }

    pub async fn list(&self, owner: &UserId) -> Result<Vec<ProviderView>, DomainError> {
        let records = self.store.owner_providers(owner.as_str()).await?;
        let mut views = Vec::with_capacity(records.len());
        for record in records {
            let keys = self
                .sealer()?
                .open(
                    &record.sealed_keys,
                    &bound_to(&record.owner, &record.provider_id),
                )
                .unwrap_or_default();
            views.push(view(record, &keys)?);
        }
        Ok(views)
    }

    pub async fn create(
        &self,
        owner: &UserId,
        input: ProviderInput,
    ) -> Result<ProviderCreated, DomainError> {
        let sealer = self.sealer()?;
        let settings = ProviderSettings {
            name: input.name.clone().unwrap_or_default(),
            base_url: input.base_url.clone().unwrap_or_default(),
            model: input.model.clone().unwrap_or_default(),
            max_tokens: None,
            temperature: None,
            top_p: None,
            presence_penalty: None,
            max_model_len: None,
            is_default: false,
        };
        let keys = input.api_keys.clone().unwrap_or_default();
        let (settings, keys) = merge(settings, input, keys)?;
        let provider_id = format!(
            "provider_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let now = now_secs();
        let record = ProviderRecord {
            sealed_keys: sealer.seal(&keys, &bound_to(owner.as_str(), &provider_id))?,
            provider_id: provider_id.clone(),
            owner: owner.to_string(),
            config: serde_json::to_value(&settings).map_err(StoreError::from)?,
            created_at: now,
            updated_at: now,
        };
        if settings.is_default {
            self.clear_default(owner, &provider_id).await?;
        }
        self.store.put_provider(&record).await?;
        Ok(ProviderCreated { id: provider_id })
    }

    /// Changes the fields the input names; a key sent back masked stays as it was.
    pub async fn update(
        &self,
        owner: &UserId,
        provider_id: &str,
        input: ProviderInput,
    ) -> Result<ProviderView, DomainError> {
        let sealer = self.sealer()?;
        let record = self.owned(owner, provider_id).await?;
        let bound = bound_to(&record.owner, &record.provider_id);
        let stored_keys = sealer.open(&record.sealed_keys, &bound)?;
        let settings: ProviderSettings =
            serde_json::from_value(record.config.clone()).map_err(StoreError::from)?;
        let sent = input.api_keys.clone();
        let keys = match sent {
            None => stored_keys.clone(),
            Some(sent) => sent
                .into_iter()
                .map(|key| {
                    stored_keys
                        .iter()
                        .find(|stored| key.starts_with(MASK) && mask(stored) == key)
                        .cloned()
                        .unwrap_or(key)
                })
                .collect(),
        };
        let (settings, keys) = merge(settings, input, keys)?;
        if settings.is_default {
            self.clear_default(owner, provider_id).await?;
        }
        let updated = ProviderRecord {
            config: serde_json::to_value(&settings).map_err(StoreError::from)?,
            sealed_keys: sealer.seal(&keys, &bound)?,
            updated_at: now_secs(),
            ..record
        };
        self.store.put_provider(&updated).await?;
        view(updated, &keys)
    }

    pub async fn delete(&self, owner: &UserId, provider_id: &str) -> Result<(), DomainError> {
        if self
            .store
            .delete_provider(owner.as_str(), provider_id)
            .await?
        {
            Ok(())
        } else {
            Err(DomainError::NotFound(format!("no provider {provider_id}")))
        }
    }

    /// Whether the owner has this provider (an agent may name only its owner's).
    pub async fn exists(&self, owner: &UserId, provider_id: &str) -> Result<bool, DomainError> {
        Ok(self
            .store
            .provider(owner.as_str(), provider_id)
            .await?
            .is_some())
    }

    /// The model settings of the provider a run names, else of the user's default provider;
    /// `None` when the run names none and the user has no default.
    pub async fn for_run(
        &self,
        owner: &UserId,
        named: Option<&str>,
    ) -> Result<Option<LlmModelConfig>, DomainError> {
        let record = match named.filter(|id| !id.is_empty()) {
            Some(provider_id) => Some(
                self.store
                    .provider(owner.as_str(), provider_id)
                    .await?
                    .ok_or_else(|| {
                        DomainError::NotFound(format!("llm_provider_id: no provider {provider_id}"))
                    })?,
            ),
            None => self
                .store
                .owner_providers(owner.as_str())
                .await?
                .into_iter()
                .find(|record| record.config["is_default"] == true),
        };
        let Some(record) = record else {
            return Ok(None);
        };
        let keys = self.sealer()?.open(
            &record.sealed_keys,
            &bound_to(&record.owner, &record.provider_id),
        )?;
        let settings: ProviderSettings =
            serde_json::from_value(record.config).map_err(StoreError::from)?;
        Ok(Some(LlmModelConfig {
            base_url: Some(settings.base_url),
            api_key: Some(keys.join(",")),
            model: Some(settings.model),
            max_tokens: settings.max_tokens,
            temperature: settings.temperature,
            top_p: settings.top_p,
            presence_penalty: settings.presence_penalty,
            max_model_len: settings.max_model_len,
        }))
    }

    async fn owned(
        &self,
        owner: &UserId,
        provider_id: &str,
    ) -> Result<ProviderRecord, DomainError> {
        self.store
            .provider(owner.as_str(), provider_id)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("no provider {provider_id}")))
    }

    /// One default per user: the others stop being it.
    async fn clear_default(&self, owner: &UserId, keep: &str) -> Result<(), DomainError> {
        for mut record in self.store.owner_providers(owner.as_str()).await? {
            if record.provider_id != keep && record.config["is_default"] == true {
                record.config["is_default"] = false.into();
                self.store.put_provider(&record).await?;
            }
        }
        Ok(())
    }
}

/// The settings and keys with the input's changes applied, checked.
fn merge(
    mut settings: ProviderSettings,
    input: ProviderInput,
    keys: Vec<String>,
) -> Result<(ProviderSettings, Vec<String>), InputError> {
    let invalid = |message: &str| Err(InputError::Invalid(message.to_owned()));
    if let Some(name) = input.name {
        settings.name = name.trim().to_owned();
    }
    if let Some(base_url) = input.base_url {
        settings.base_url = base_url.trim().to_owned();
    }
    if let Some(model) = input.model {
        settings.model = model.trim().to_owned();
    }
    settings.max_tokens = input.max_tokens.or(settings.max_tokens);
    settings.temperature = input.temperature.or(settings.temperature);
    settings.top_p = input.top_p.or(settings.top_p);
    settings.presence_penalty = input.presence_penalty.or(settings.presence_penalty);
    settings.max_model_len = input.max_model_len.or(settings.max_model_len);
    settings.is_default = input.is_default.unwrap_or(settings.is_default);
    if settings.name.is_empty() || settings.name.chars().count() > 64 {
        return invalid("name: 1 to 64 characters");
    }
    let url_ok = (settings.base_url.starts_with("https://")
        || settings.base_url.starts_with("http://"))
        && settings.base_url.len() <= 2048
        && !settings.base_url.chars().any(char::is_whitespace);
    if !url_ok {
        return invalid("base_url: an http(s) URL");
    }
    if settings.model.is_empty() || settings.model.chars().count() > 128 {
        return invalid("model: 1 to 128 characters");
    }
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return invalid("api_keys: 1 to 20 keys");
    }
    if keys.iter().any(|key| {
        key.trim().is_empty() || key.len() > 512 || key.starts_with(MASK) || key.contains(',')
    }) {
        return invalid(
            "api_keys: each 1 to 512 characters, no comma; a masked key must be one this \
             provider has",
        );
    }
    if settings.max_tokens.is_some_and(|n| n == 0 || n > 1_000_000) {
        return invalid("max_tokens: 1 to 1,000,000");
    }
    if settings
        .temperature
        .is_some_and(|t| !(0.0..=2.0).contains(&t))
    {
        return invalid("temperature: 0 to 2");
    }
    if settings.top_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return invalid("top_p: 0 to 1");
    }
    if settings
        .presence_penalty
        .is_some_and(|p| !(-2.0..=2.0).contains(&p))
    {
        return invalid("presence_penalty: -2 to 2");
    }
    if settings
        .max_model_len
        .is_some_and(|n| n == 0 || n > 10_000_000)
    {
        return invalid("max_model_len: 1 to 10,000,000");
    }
    Ok((settings, keys))
}

fn view(record: ProviderRecord, keys: &[String]) -> Result<ProviderView, DomainError> {
    Ok(ProviderView {
        id: record.provider_id,
        user_id: record.owner,
        settings: serde_json::from_value(record.config).map_err(StoreError::from)?,
        api_keys: keys.iter().map(|key| mask(key)).collect(),
        created_at: iso_time(record.created_at),
        updated_at: iso_time(record.updated_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_for_their_provider_and_secret() {
        let sealer = KeySealer::new(&SecretString::from("a-secret-of-at-least-32-bytes-0123"));
        let keys = vec!["sk-one-1234".to_owned(), "sk-two-5678".to_owned()];
        let sealed = sealer.seal(&keys, "alice\np1").unwrap();
        assert!(!sealed.contains("sk-one"));
        assert_eq!(sealer.open(&sealed, "alice\np1").unwrap(), keys);
        assert!(sealer.open(&sealed, "mallory\np1").is_err());
        let other = KeySealer::new(&SecretString::from("another-secret-of-32-bytes-000000"));
        assert!(other.open(&sealed, "alice\np1").is_err());
        assert_ne!(
            sealed,
            sealer.seal(&keys, "alice\np1").unwrap(),
            "a fresh nonce each time"
        );
        assert_eq!(mask("sk-abcdefgh1234"), "****1234");
        assert_eq!(mask("short"), "****");
    }
}
