//! The LLM key from an SSM SecureString parameter: how the Lambda functions get it.

use secrecy::SecretString;

/// Reads the parameter, decrypted. Region, credentials and endpoint come from the standard AWS
/// environment (`AWS_REGION`, the role, `AWS_ENDPOINT_URL_SSM`).
pub async fn read_parameter(name: &str) -> Result<SecretString, String> {
    let shared = crate::util::tls::aws_config_loader().load().await;
    let output = aws_sdk_ssm::Client::new(&shared)
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|error| aws_sdk_ssm::error::DisplayErrorContext(&error).to_string())?;
    output
        .parameter
        .and_then(|parameter| parameter.value)
        .filter(|value| !value.trim().is_empty())
        .map(SecretString::from)
        .ok_or_else(|| "the parameter has no value".into())
}
