//! The server's side of the sandbox function: a synchronous Lambda `Invoke` per code tool call.

use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;

use crate::util::tls::LazyLambdaClient;

use super::{RunOutcome, RunRequest, encoded_size};

/// What one synchronous invocation may carry each way (Lambda's limit is 6 MB), leaving room for
/// the rest of the request.
pub const MAX_PAYLOAD_BYTES: usize = 5_500_000;

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("the workspace is too large to send to the sandbox function (about 4 MiB at most)")]
    TooLarge,
    #[error("the sandbox function could not be called")]
    Invoke(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the sandbox function failed: {0}")]
    Failed(String),
    #[error("the sandbox function's answer is not a run outcome")]
    Answer(#[source] serde_json::Error),
}

/// The Lambda function that runs code tools' programs (`--code_sandbox_function`).
#[derive(Debug, Clone)]
pub struct SandboxFunction {
    client: LazyLambdaClient,
    name: String,
}

impl SandboxFunction {
    /// Its client is made at the first call ([`LazyLambdaClient`]).
    pub fn new(name: &str) -> Self {
        Self {
            client: LazyLambdaClient::default(),
            name: name.to_owned(),
        }
    }

    async fn client(&self) -> &Client {
        self.client.get().await
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn run(&self, request: &RunRequest) -> Result<RunOutcome, FunctionError> {
        if encoded_size(&request.files) > MAX_PAYLOAD_BYTES {
            return Err(FunctionError::TooLarge);
        }
        let payload = serde_json::to_vec(request).map_err(FunctionError::Answer)?;
        let answer = self
            .client()
            .await
            .invoke()
            .function_name(&self.name)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|error| FunctionError::Invoke(Box::new(error)))?;
        let body = answer.payload.map(Blob::into_inner).unwrap_or_default();
        if answer.function_error.is_some() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|error| error["errorMessage"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "no message".into());
            return Err(FunctionError::Failed(message));
        }
        serde_json::from_slice(&body).map_err(FunctionError::Answer)
    }
}
