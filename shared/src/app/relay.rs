//! The Stream function's hand-off: an asynchronous `Invoke` of itself with a Function URL event
//! for `POST /api/internal/runs/continue`, which continues the run in the fresh invocation. The
//! Jobs function's `runs` job sends the same to the Stream function.

use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde_json::json;

use crate::domain::paused_runs::{HandOffTicket, RelayError, RunRelay};
use crate::util::tls::LazyLambdaClient;
use crate::util::{new_id, now_secs};

pub const CONTINUE_PATH: &str = "/api/internal/runs/continue";

/// Invokes `function` (this function: `AWS_LAMBDA_FUNCTION_NAME`) once per hand-off.
pub struct LambdaRelay {
    client: LazyLambdaClient,
    function: String,
}

impl LambdaRelay {
    pub fn new(function: &str) -> Self {
        Self {
            client: LazyLambdaClient::default(),
            function: function.to_owned(),
        }
    }

    async fn client(&self) -> &Client {
        self.client.get().await
    }
}

/// The event a Function URL would send for the continue request.
fn continue_event(ticket: &HandOffTicket) -> serde_json::Value {
    let body = serde_json::to_string(ticket).unwrap_or_default();
    let now = now_secs();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": CONTINUE_PATH,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "user-agent": "sage-relay"},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "sage-relay",
            "domainName": "sage-relay",
            "domainPrefix": "sage-relay",
            "http": {
                "method": "POST",
                "path": CONTINUE_PATH,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "sage-relay",
            },
            "requestId": new_id(),
            "routeKey": "$default",
            "stage": "$default",
            "time": "",
            "timeEpoch": (now * 1000.0) as u64,
        },
        "body": body,
        "isBase64Encoded": false,
    })
}

#[async_trait]
impl RunRelay for LambdaRelay {
    async fn relay(&self, ticket: &HandOffTicket) -> Result<(), RelayError> {
        let payload = serde_json::to_vec(&continue_event(ticket))
            .map_err(|error| RelayError(Box::new(error)))?;
        self.client()
            .await
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|error| RelayError(Box::new(error)))?;
        Ok(())
    }
}

#[cfg(all(test, feature = "lambda"))]
mod tests {
    use super::*;

    #[test]
    fn the_event_is_one_lambda_http_reads_as_a_post_to_the_continue_route() {
        let ticket = HandOffTicket {
            session_id: "s-1".into(),
            token: "t".into(),
        };
        let event: lambda_http::request::LambdaRequest =
            serde_json::from_value(continue_event(&ticket)).unwrap();
        let request: lambda_http::Request = event.into();
        assert_eq!(request.method(), "POST");
        assert_eq!(request.uri().path(), CONTINUE_PATH);
        let body: HandOffTicket = serde_json::from_slice(request.body().as_ref()).unwrap();
        assert_eq!(body, ticket);
    }
}
