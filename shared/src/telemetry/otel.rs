//! Traces over OTLP/HTTP: with [`super::init_logging_with_traces`], `tracing` spans become
//! OpenTelemetry spans. Spans are batched on the SDK's thread and sent with
//! the model client's reqwest on the tokio runtime; [`flush_traces`] sends what is pending,
//! which a Lambda function does before each invocation ends (a frozen process sends nothing).

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Registry;

pub(super) type OtelLayer =
    tracing_opentelemetry::OpenTelemetryLayer<Registry, opentelemetry_sdk::trace::Tracer>;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("--trace_jaeger_url {0:?} is not an http(s) URL")]
    Url(String),
    #[error("cannot build the OTLP exporter")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot build the HTTP client for traces")]
    Client(#[from] reqwest::Error),
    #[error("traces are already on")]
    AlreadyOn,
}

/// The exporter's HTTP client: reqwest on the tokio runtime, driven from the SDK's own thread.
#[derive(Debug)]
struct OtlpHttp {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move {
                let request = reqwest::Request::try_from(request)?;
                let response = client.execute(request).await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                let mut answer = Response::builder().status(status).body(body)?;
                *answer.headers_mut() = headers;
                Ok::<_, HttpError>(answer)
            })
            .await?
    }
}

/// `http://host:4318` gets OTLP's `/v1/traces`; a URL with a path is used as given.
fn traces_endpoint(url: &str) -> Result<String, TraceError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| TraceError::Url(url.to_owned()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(TraceError::Url(url.to_owned()));
    }
    Ok(if matches!(parsed.path(), "" | "/") {
        format!("{}/v1/traces", url.trim_end_matches('/'))
    } else {
        url.to_owned()
    })
}

/// The layer that exports spans to `url` as `service`. Call from within the tokio runtime.
pub(super) fn layer(url: &str, service: &str) -> Result<OtelLayer, TraceError> {
    let endpoint = traces_endpoint(url)?;
    crate::util::tls::install_crypto_provider();
    let client = reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpHttp {
            client,
            runtime: tokio::runtime::Handle::current(),
        })
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("sage"));
    PROVIDER.set(provider).map_err(|_| TraceError::AlreadyOn)?;
    Ok(layer)
}

/// Whether spans are being exported.
pub fn traces_on() -> bool {
    PROVIDER.get().is_some()
}

/// Sends the spans still batched; a no-op when traces are off.
pub async fn flush_traces() {
    let Some(provider) = PROVIDER.get() else {
        return;
    };
    let provider = provider.clone();
    let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    if let Ok(Err(error)) = flushed {
        tracing::warn!(%error, "could not send the pending spans");
    }
}

/// The OpenTelemetry trace id of `span`, when traces are on.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    PROVIDER.get()?;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}
