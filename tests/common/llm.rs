//! The scripted OpenAI-compatible model.

use sage_mock_llm::MockOptions;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The scripted model, in process, on its own port.
pub struct MockLlm {
    pub base_url: String,
    pub port: u16,
    _shutdown: oneshot::Sender<()>,
}

impl MockLlm {
    pub async fn start(options: MockOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(sage_mock_llm::serve(listener, options, async {
            let _ = stop.await;
        }));
        Self {
            base_url: format!("http://{address}/v1"),
            port: address.port(),
            _shutdown: shutdown,
        }
    }

    /// The chat-completion bodies the model received, oldest first.
    pub async fn requests(&self) -> Vec<Value> {
        let url = format!("{}/../_mock/requests", self.base_url);
        let url = url.replace("/v1/../", "/");
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }

    /// The requests of the run's turns: without the completion judge's.
    pub async fn turn_requests(&self) -> Vec<Value> {
        let mut requests = self.requests().await;
        requests.retain(|request| !is_judge_request(request));
        requests
    }
}

/// Whether a chat request is the completion judge's (its last message is the judge's
/// instruction).
pub fn is_judge_request(request: &Value) -> bool {
    request["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .is_some_and(|last| {
            last["role"] == "system"
                && last["content"]
                    .as_str()
                    .is_some_and(|text| text == sage_core::agent::JUDGE_INSTRUCTION)
        })
}
