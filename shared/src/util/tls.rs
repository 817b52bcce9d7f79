//! TLS for every outbound client: rustls on ring, which keeps each bootstrap megabytes smaller
//! than aws-lc (BENCHMARKS.md).

/// reqwest (the model, MCP servers) takes the process-wide provider; installing it twice is a
/// no-op.
#[cfg(any(feature = "llm", feature = "opensearch"))]
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// `aws_config::defaults` with the SDKs' HTTPS client on ring.
#[cfg(any(
    feature = "dynamodb",
    feature = "ssm",
    feature = "s3",
    feature = "opensearch",
    feature = "lambda-sandbox",
    feature = "lambda-relay"
))]
pub fn aws_config_loader() -> aws_config::ConfigLoader {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(https)
}

/// Loads the SDK configuration, in us-east-1 when the environment names no region (what
/// DynamoDB Local, MinIO and moto accept). The region is looked up by the loader itself, over
/// its HTTPS client: the SDK's stand-alone region chain would build an instance-metadata client
/// that needs the SDK's default client, which this build leaves out.
#[cfg(any(
    feature = "dynamodb",
    feature = "s3",
    feature = "lambda-sandbox",
    feature = "lambda-relay"
))]
pub async fn load_aws_config(loader: aws_config::ConfigLoader) -> aws_config::SdkConfig {
    let config = loader.load().await;
    if config.region().is_some() {
        return config;
    }
    config
        .into_builder()
        .region(aws_config::Region::new("us-east-1"))
        .build()
}

/// A Lambda client made at its first use, from the environment (region, credentials;
/// `AWS_ENDPOINT_URL_LAMBDA` points it at an emulator such as `cargo lambda watch`); clones share
/// it.
#[cfg(any(feature = "lambda-sandbox", feature = "lambda-relay"))]
#[derive(Debug, Clone, Default)]
pub struct LazyLambdaClient(std::sync::Arc<tokio::sync::OnceCell<aws_sdk_lambda::Client>>);

#[cfg(any(feature = "lambda-sandbox", feature = "lambda-relay"))]
impl LazyLambdaClient {
    pub async fn get(&self) -> &aws_sdk_lambda::Client {
        self.0
            .get_or_init(|| async {
                aws_sdk_lambda::Client::new(&load_aws_config(aws_config_loader()).await)
            })
            .await
    }
}
