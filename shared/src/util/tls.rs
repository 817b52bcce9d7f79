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
    feature = "opensearch"
))]
pub fn aws_config_loader() -> aws_config::ConfigLoader {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(https)
}
