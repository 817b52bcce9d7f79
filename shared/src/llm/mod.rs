//! The OpenAI-compatible chat model client: `/chat/completions` with `stream: true`.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sse_stream::SseStream;

use secrecy::{ExposeSecret, SecretString};

use crate::wire::{FunctionCall, ToolCall};

/// The provider settings of one request: server defaults overlaid with `llm_model_config`.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    pub base_url: String,
    pub api_keys: Vec<SecretString>,
    pub model: String,
    pub max_tokens: u32,
    pub temperature: f64,
    pub top_p: f64,
    pub presence_penalty: f64,
    pub max_model_len: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// One chat completion call: OpenAI-shaped messages and tool definitions.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub settings: LlmSettings,
    pub messages: Vec<Value>,
    pub tools: Vec<Value>,
    /// The tool the answer must call (`tool_choice`), one of `tools`.
    pub forced_tool: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChatDelta {
    Text(String),
    /// DeepSeek's `reasoning_content`.
    Reasoning(String),
    ToolCall {
        index: usize,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    Usage(Usage),
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("LLM request failed: {status} from {base_url}: {message}")]
    Status {
        status: reqwest::StatusCode,
        base_url: String,
        message: String,
    },
    #[error("LLM request failed: cannot reach {base_url}: {source}")]
    Connect {
        base_url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("LLM stream broke off: {0}")]
    Stream(String),
    #[error("LLM stream stalled: nothing received for {0:?}")]
    Idle(Duration),
    #[error("LLM sent an unreadable chunk: {0}")]
    Decode(#[from] serde_json::Error),
}

impl LlmError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                *status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
            Self::Connect { .. } => true,
            _ => false,
        }
    }
}

pub type DeltaStream = Pin<Box<dyn Stream<Item = Result<Vec<ChatDelta>, LlmError>> + Send>>;

#[async_trait]
pub trait ChatModel: Send + Sync + 'static {
    /// Starts a streamed completion. Retries happen only here, before the first chunk.
    async fn stream_chat(&self, request: &ChatRequest) -> Result<DeltaStream, LlmError>;
}

/// The whole text of an answer (a call without tools), read to its end.
pub async fn complete_text(
    model: &dyn ChatModel,
    request: &ChatRequest,
) -> Result<String, LlmError> {
    let mut stream = model.stream_chat(request).await?;
    let mut answer = String::new();
    while let Some(deltas) = stream.next().await {
        for delta in deltas? {
            if let ChatDelta::Text(text) = delta {
                answer.push_str(&text);
            }
        }
    }
    Ok(answer)
}

pub struct OpenAiCompatible {
    http: reqwest::Client,
    key_cursor: AtomicUsize,
    max_retries: usize,
    idle_timeout: Duration,
}

impl OpenAiCompatible {
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_retries: u32,
    ) -> Result<Self, reqwest::Error> {
        crate::util::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            key_cursor: AtomicUsize::new(0),
            max_retries: max_retries as usize,
            idle_timeout,
        })
    }

    fn next_key<'a>(&self, keys: &'a [SecretString]) -> Option<&'a str> {
        if keys.is_empty() {
            return None;
        }
        let index = self.key_cursor.fetch_add(1, Ordering::Relaxed) % keys.len();
        Some(keys[index].expose_secret())
    }

    async fn send_once(&self, request: &ChatRequest) -> Result<reqwest::Response, LlmError> {
        let settings = &request.settings;
        let url = format!(
            "{}/chat/completions",
            settings.base_url.trim_end_matches('/')
        );
        let mut body = json!({
            "model": settings.model,
            "messages": request.messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "presence_penalty": settings.presence_penalty,
        });
        if !request.tools.is_empty() {
            body["tools"] = Value::Array(request.tools.clone());
        }
        if let Some(name) = &request.forced_tool {
            body["tool_choice"] = json!({"type": "function", "function": {"name": name}});
        }
        let mut builder = self.http.post(&url).json(&body);
        if let Some(key) = self.next_key(&settings.api_keys) {
            builder = builder.bearer_auth(key);
        }
        let response = builder.send().await.map_err(|source| LlmError::Connect {
            base_url: settings.base_url.clone(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(LlmError::Status {
            status,
            base_url: settings.base_url.clone(),
            message: provider_message(&text),
        })
    }
}

/// The provider's own words from an error body (`{"error":{"message":...}}`), kept short.
fn provider_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|value| {
            value
                .pointer("/error/message")
                .or_else(|| value.get("message"))
                .or_else(|| value.get("error"))
        })
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.trim().to_owned());
    message.chars().take(300).collect()
}

#[async_trait]
impl ChatModel for OpenAiCompatible {
    async fn stream_chat(&self, request: &ChatRequest) -> Result<DeltaStream, LlmError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(self.max_retries)
            .with_jitter();
        let response = (|| self.send_once(request))
            .retry(backoff)
            .when(LlmError::is_retryable)
            .notify(|error, delay| tracing::warn!(%error, ?delay, "retrying LLM request"))
            .await?;
        let events = SseStream::from_bytes_stream(response.bytes_stream());
        let idle = self.idle_timeout;
        let stream = futures_util::stream::unfold(
            (Box::pin(events), false),
            move |(mut events, finished)| async move {
                if finished {
                    return None;
                }
                loop {
                    let next = match tokio::time::timeout(idle, events.next()).await {
                        Err(_) => return Some((Err(LlmError::Idle(idle)), (events, true))),
                        Ok(next) => next,
                    };
                    match next {
                        None => return None,
                        Some(Err(error)) => {
                            return Some((
                                Err(LlmError::Stream(error.to_string())),
                                (events, true),
                            ));
                        }
                        Some(Ok(event)) => match event.data.as_deref().map(str::trim) {
                            None | Some("") => continue,
                            Some("[DONE]") => return None,
                            Some(data) => match parse_chunk(data) {
                                Ok(deltas) if deltas.is_empty() => continue,
                                Ok(deltas) => return Some((Ok(deltas), (events, false))),
                                Err(error) => return Some((Err(error), (events, true))),
                            },
                        },
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

pub fn parse_chunk(data: &str) -> Result<Vec<ChatDelta>, LlmError> {
    let chunk: Chunk = serde_json::from_str(data)?;
    let mut deltas = Vec::new();
    for choice in chunk.choices {
        let Some(delta) = choice.delta else { continue };
        if let Some(reasoning) = delta.reasoning_content.filter(|text| !text.is_empty()) {
            deltas.push(ChatDelta::Reasoning(reasoning));
        }
        if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
            deltas.push(ChatDelta::Text(text));
        }
        for call in delta.tool_calls.unwrap_or_default() {
            let (name, arguments) = match call.function {
                Some(function) => (function.name, function.arguments.unwrap_or_default()),
                None => (None, String::new()),
            };
            deltas.push(ChatDelta::ToolCall {
                index: call.index,
                id: call.id,
                name,
                arguments,
            });
        }
    }
    if let Some(usage) = chunk.usage {
        deltas.push(ChatDelta::Usage(usage));
    }
    Ok(deltas)
}

/// Assembles streamed tool-call fragments by their `index`.
#[derive(Debug, Default)]
pub struct ToolCallAssembler {
    calls: Vec<(usize, ToolCall)>,
}

impl ToolCallAssembler {
    pub fn push(
        &mut self,
        index: usize,
        id: Option<String>,
        name: Option<String>,
        arguments: &str,
    ) {
        let position = match self.calls.iter().position(|(i, _)| *i == index) {
            Some(position) => position,
            None => {
                self.calls.push((
                    index,
                    ToolCall {
                        id: String::new(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: String::new(),
                            arguments: String::new(),
                        },
                    },
                ));
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[position].1;
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            call.id = id;
        }
        if let Some(name) = name {
            call.function.name.push_str(&name);
        }
        call.function.arguments.push_str(arguments);
    }

    pub fn finish(mut self) -> Vec<ToolCall> {
        self.calls.sort_by_key(|(index, _)| *index);
        self.calls
            .into_iter()
            .map(|(index, mut call)| {
                if call.id.is_empty() {
                    call.id = format!("call_{index}_{}", uuid::Uuid::new_v4().simple());
                }
                call
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_fragments_assemble_by_index() {
        let mut assembler = ToolCallAssembler::default();
        let chunks = [
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"b","function":{"name":"add","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"echo","arguments":"{\"te"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"xt\":1}"}},{"index":1,"function":{"arguments":"{}"}}]}}]}"#,
        ];
        for chunk in chunks {
            for delta in parse_chunk(chunk).unwrap() {
                if let ChatDelta::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                } = delta
                {
                    assembler.push(index, id, name, &arguments);
                }
            }
        }
        let calls = assembler.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "a");
        assert_eq!(calls[0].function.name, "echo");
        assert_eq!(calls[0].function.arguments, r#"{"text":1}"#);
        assert_eq!(calls[1].function.name, "add");
    }

    #[test]
    fn reasoning_text_and_usage_are_separate_deltas() {
        let deltas = parse_chunk(
            r#"{"choices":[{"delta":{"reasoning_content":"hm","content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        )
        .unwrap();
        assert_eq!(deltas[0], ChatDelta::Reasoning("hm".into()));
        assert_eq!(deltas[1], ChatDelta::Text("hi".into()));
        assert!(matches!(&deltas[2], ChatDelta::Usage(u) if u.total_tokens == 5));
    }

    #[test]
    fn provider_error_message_is_extracted() {
        assert_eq!(
            provider_message(r#"{"error":{"message":"Authentication Fails","type":"auth"}}"#),
            "Authentication Fails"
        );
        assert_eq!(provider_message("upstream down"), "upstream down");
    }
}
