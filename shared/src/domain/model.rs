//! Which model a call uses: the configured provider, overlaid by a request's choices.

use crate::config::{LlmConfig, split_keys};
use crate::domain::DomainError;
use crate::llm::LlmSettings;
use crate::wire::LlmModelConfig;

/// The default provider overlaid with the request's `llm_model_config`; unavailable without a
/// key.
pub fn resolve_llm(
    defaults: &LlmConfig,
    overrides: Option<&LlmModelConfig>,
) -> Result<LlmSettings, DomainError> {
    let overrides = overrides.cloned().unwrap_or_default();
    let api_keys = match overrides.api_key.as_deref().map(split_keys) {
        Some(keys) if !keys.is_empty() => keys,
        _ => defaults.keys(),
    };
    if api_keys.is_empty() {
        return Err(DomainError::Unavailable(
            "no LLM API key configured: set SAGE_DEFAULT_LLM_API_KEY (--default_llm_api_key) \
             or send llm_model_config.api_key"
                .into(),
        ));
    }
    Ok(LlmSettings {
        base_url: overrides
            .base_url
            .unwrap_or_else(|| defaults.base_url.clone()),
        api_keys,
        model: overrides
            .model
            .unwrap_or_else(|| defaults.model_name.clone()),
        max_tokens: overrides.max_tokens.unwrap_or(defaults.max_tokens),
        temperature: overrides.temperature.unwrap_or(defaults.temperature),
        top_p: overrides.top_p.unwrap_or(defaults.top_p),
        presence_penalty: overrides
            .presence_penalty
            .unwrap_or(defaults.presence_penalty),
        max_model_len: overrides.max_model_len.unwrap_or(defaults.max_model_len),
    })
}
