//! The legacy HTTP+SSE MCP transport (protocol 2024-11-05), which rmcp no longer ships, as an
//! rmcp `Transport`: GET the SSE URL, wait for the `endpoint` event, POST every JSON-RPC message
//! to that endpoint, read the replies from the `message` events of the stream.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, HeaderValue};
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use sse_stream::SseStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum LegacySseError {
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the server answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the event stream ended before the `endpoint` event")]
    NoEndpoint,
    #[error("no `endpoint` event within {0:?}")]
    EndpointTimeout(Duration),
    #[error("the endpoint `{0}` is not a valid URL")]
    BadEndpoint(String),
    #[error("the event stream broke: {0}")]
    Stream(String),
}

pub struct LegacySseTransport {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    api_key: Option<String>,
    incoming: mpsc::Receiver<RxJsonRpcMessage<RoleClient>>,
    reader: JoinHandle<()>,
}

impl LegacySseTransport {
    pub async fn connect(
        sse_url: &str,
        api_key: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, LegacySseError> {
        let base = reqwest::Url::parse(sse_url)
            .map_err(|_| LegacySseError::BadEndpoint(sse_url.to_owned()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()?;
        let mut request = http
            .get(base.clone())
            .header(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(key) = api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(LegacySseError::Status(response.status()));
        }
        let mut events = Box::pin(SseStream::from_bytes_stream(response.bytes_stream()));
        let endpoint = tokio::time::timeout(timeout, async {
            loop {
                match events.next().await {
                    Some(Ok(event)) if event.event.as_deref() == Some("endpoint") => {
                        let data = event.data.as_deref().unwrap_or_default().trim();
                        return base
                            .join(data)
                            .map_err(|_| LegacySseError::BadEndpoint(data.to_owned()));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(LegacySseError::Stream(error.to_string())),
                    None => return Err(LegacySseError::NoEndpoint),
                }
            }
        })
        .await
        .map_err(|_| LegacySseError::EndpointTimeout(timeout))??;

        let (sender, incoming) = mpsc::channel(64);
        let reader = tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                if !matches!(event.event.as_deref(), None | Some("") | Some("message")) {
                    continue;
                }
                let Some(data) = event.data else { continue };
                match serde_json::from_str(&data) {
                    Ok(message) => {
                        if sender.send(message).await.is_err() {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "unreadable message on the MCP SSE stream")
                    }
                }
            }
        });
        Ok(Self {
            http,
            endpoint,
            api_key: api_key.map(str::to_owned),
            incoming,
            reader,
        })
    }
}

impl Transport<RoleClient> for LegacySseTransport {
    type Error = LegacySseError;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let mut request = self.http.post(self.endpoint.clone()).json(&item);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(LegacySseError::Status(response.status()))
            }
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        self.incoming.recv()
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        self.incoming.close();
        Ok(())
    }
}

impl Drop for LegacySseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
