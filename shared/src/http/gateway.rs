//! In Lambda: the caller an API Gateway authorizer already checked. A Cognito or JWT authorizer
//! leaves the token's claims in the request context, a Lambda authorizer its context, IAM
//! authorization the signer's ARN; lambda_http keeps the context in the request's extensions.
//! Nobody but API Gateway or the Lambda service writes it, so it is trusted as it is.

#[cfg(feature = "mcp")]
use std::time::{Duration, SystemTime};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use serde_json::Value;

#[cfg(feature = "mcp")]
use super::extract::GatewayBase;
use crate::domain::accounts::{GatewayIdentity, claim_text as text};
#[cfg(feature = "mcp")]
use crate::domain::runs::Invocation;

/// Adds the authorizer's identity to the request, when there is one, and when the invocation
/// ends (a run hands off before).
pub async fn gateway_identity(mut request: Request, next: Next) -> Response {
    if let Some(identity) = request.request_context_ref().and_then(identity_of) {
        request.extensions_mut().insert(identity);
    }
    #[cfg(feature = "mcp")]
    if let Some(base) = request.request_context_ref().and_then(stage_url) {
        request.extensions_mut().insert(base);
    }
    #[cfg(feature = "mcp")]
    if let Some(context) = request.lambda_context_ref() {
        let invocation = Invocation {
            ends_at: Some(invocation_end(context.deadline)),
        };
        request.extensions_mut().insert(invocation);
    }
    next.run(request).await
}

#[cfg(feature = "mcp")]
/// The invocation's deadline (milliseconds since the epoch). Before 2000 it is no epoch time:
/// cargo-lambda's emulator sends the timeout itself.
fn invocation_end(deadline_ms: u64) -> SystemTime {
    const YEAR_2000_MS: u64 = 946_684_800_000;
    if deadline_ms < YEAR_2000_MS {
        SystemTime::now() + Duration::from_millis(deadline_ms)
    } else {
        SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms)
    }
}

/// Sends the request's spans before the invocation ends: Lambda freezes the process once the
/// response is out. The body is read first (lambda_http buffers it anyway), which ends the
/// request's span. A streamed run sends its own spans when it ends.
pub async fn flush_traces_after(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    // Only a function with the agent (Stream) serves event streams.
    #[cfg(feature = "mcp")]
    let streamed = response
        .extensions()
        .get::<super::framing::StreamedEvents>()
        .is_some();
    #[cfg(not(feature = "mcp"))]
    let streamed = false;
    if streamed || !crate::telemetry::traces_on() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%error, "could not read the response body");
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    crate::telemetry::flush_traces().await;
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

#[cfg(feature = "mcp")]
/// A REST API's own URL names its stage, which the request's host does not: the base of the
/// URLs that lead back to this API. Custom domains, HTTP APIs' `$default` stage and Function
/// URLs are the request's host itself.
fn stage_url(context: &RequestContext) -> Option<GatewayBase> {
    let RequestContext::ApiGatewayV1(context) = context else {
        return None;
    };
    let domain = context.domain_name.as_deref()?;
    let stage = context.stage.as_deref()?;
    domain
        .contains(".execute-api.")
        .then(|| GatewayBase(format!("https://{domain}/{stage}")))
}

fn identity_of(context: &RequestContext) -> Option<GatewayIdentity> {
    match context {
        RequestContext::ApiGatewayV1(context) => {
            let fields = &context.authorizer.fields;
            let claims = fields.get("claims").and_then(Value::as_object);
            claims
                .and_then(|claims| GatewayIdentity::from_claims(|name| text(claims.get(name))))
                .or_else(|| GatewayIdentity::from_claims(|name| text(fields.get(name))))
                .or_else(|| {
                    context
                        .identity
                        .user_arn
                        .clone()
                        .map(GatewayIdentity::signer)
                })
        }
        RequestContext::ApiGatewayV2(context) => {
            let authorizer = context.authorizer.as_ref()?;
            authorizer
                .jwt
                .as_ref()
                .and_then(|jwt| GatewayIdentity::from_claims(|name| jwt.claims.get(name).cloned()))
                .or_else(|| GatewayIdentity::from_claims(|name| text(authorizer.fields.get(name))))
                .or_else(|| {
                    authorizer
                        .iam
                        .as_ref()
                        .and_then(|iam| iam.user_arn.clone())
                        .map(GatewayIdentity::signer)
                })
        }
        _ => None,
    }
}
