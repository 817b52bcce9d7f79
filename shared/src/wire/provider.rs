//! An LLM provider as Sage's client edits it (`/api/llm-provider/*`).

use serde::{Deserialize, Serialize};

/// What the client sends: every field, or (on update) those that change. A key sent back as
/// the masked form the list showed stays as it was.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct ProviderInput {
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub api_keys: Option<Vec<String>>,
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub max_model_len: Option<u32>,
    pub is_default: Option<bool>,
}

/// A provider's settings, its keys aside (they are kept sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderSettings {
    pub name: String,
    pub base_url: String,
    pub model: String,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub max_model_len: Option<u32>,
    pub is_default: bool,
}

/// A provider as the list shows it: each key masked to its last four characters.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    pub id: String,
    pub user_id: String,
    #[serde(flatten)]
    pub settings: ProviderSettings,
    pub api_keys: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /api/llm-provider/create`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderCreated {
    pub id: String,
}
