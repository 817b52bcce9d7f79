//! The body of `POST /api/stream` (`api.md` §2) and the JSON extractor that names bad fields.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::MemoryType;
use crate::error::ApiError;
use crate::mcp::McpServerConfig;

#[derive(Debug, Clone, Deserialize)]
pub struct InputMessage {
    #[serde(default)]
    pub message_id: Option<String>,
    pub role: String,
    #[serde(default)]
    pub content: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LlmModelConfig {
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub max_model_len: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    Simple,
    Multi,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamRequest {
    pub messages: Vec<InputMessage>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub system_prefix: Option<String>,
    pub system_context: Option<serde_json::Map<String, Value>>,
    pub available_tools: Option<Vec<String>>,
    pub llm_model_config: Option<LlmModelConfig>,
    pub max_loop_count: Option<u32>,
    pub deep_thinking: Option<bool>,
    pub agent_mode: Option<AgentMode>,
    pub multi_agent: Option<bool>,
    pub more_suggest: Option<bool>,
    pub force_summary: Option<bool>,
    pub memory_type: Option<MemoryType>,
    pub available_workflows: Option<BTreeMap<String, Vec<Value>>>,
    pub extra_mcp_config: Option<BTreeMap<String, McpServerConfig>>,
}

impl StreamRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::BadRequest("messages must not be empty".into()));
        }
        for (index, message) in self.messages.iter().enumerate() {
            if !matches!(
                message.role.as_str(),
                "user" | "assistant" | "system" | "tool"
            ) {
                return Err(ApiError::InvalidBody {
                    detail: format!(
                        "messages[{index}].role: expected one of user, assistant, system, tool"
                    ),
                });
            }
        }
        if let Some(session_id) = &self.session_id
            && !session_id.is_empty()
        {
            crate::sessions::validate_session_id(session_id)?;
        }
        if self.max_loop_count == Some(0) {
            return Err(ApiError::InvalidBody {
                detail: "max_loop_count: must be at least 1".into(),
            });
        }
        Ok(())
    }
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
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        parse_json(&bytes).map(ValidJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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
        ApiError::InvalidBody { detail }
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
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ValidQuery)
            .map_err(|error| {
                let path = error.path().to_string();
                ApiError::BadRequest(format!("query {path}: {}", error.into_inner()))
            })
    }
}
