//! What a caller may point the server at: stdio commands only when the operator allows them, no
//! link-local or cloud metadata addresses unless the operator allows them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{McpError, McpServerConfig, TransportKind};

const EC2_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

#[derive(Debug, Clone, Copy, Default)]
pub struct McpPolicy {
    pub allow_stdio: bool,
    pub allow_link_local: bool,
}

impl McpPolicy {
    /// Checks a configuration that came over the API (the preset file is trusted).
    pub async fn check(&self, config: &McpServerConfig) -> Result<(), McpError> {
        match config.transport().ok_or(McpError::NoTransport)? {
            TransportKind::Stdio { .. } if !self.allow_stdio => Err(McpError::StdioNotAllowed),
            TransportKind::Stdio { .. } => Ok(()),
            TransportKind::LegacySse(url) | TransportKind::StreamableHttp(url) => {
                if self.allow_link_local {
                    return Ok(());
                }
                check_url(&url).await
            }
        }
    }
}

fn forbidden(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_link_local_v4(v4),
        IpAddr::V6(v6) => {
            v6 == EC2_METADATA_V6
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(is_link_local_v4)
        }
    }
}

fn is_link_local_v4(address: Ipv4Addr) -> bool {
    address.is_link_local()
}

async fn check_url(url: &str) -> Result<(), McpError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| McpError::InvalidUrl(url.to_owned()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(McpError::InvalidUrl(url.to_owned()));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| McpError::InvalidUrl(url.to_owned()))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<IpAddr> = match literal.parse::<IpAddr>() {
        Ok(address) => vec![address],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| McpError::Resolve {
                host: host.to_owned(),
                source,
            })?
            .map(|socket| socket.ip())
            .collect(),
    };
    if addresses.into_iter().any(forbidden) {
        return Err(McpError::ForbiddenAddress(host.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str) -> McpServerConfig {
        McpServerConfig {
            url: Some(url.to_owned()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn metadata_and_link_local_addresses_are_refused() {
        let policy = McpPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.1.1:8080/mcp",
            "http://[fd00:ec2::254]/mcp",
            "http://[fe80::1]/mcp",
            "http://[::ffff:169.254.169.254]/mcp",
        ] {
            let refused = policy.check(&http(url)).await;
            assert!(
                matches!(refused, Err(McpError::ForbiddenAddress(_))),
                "{url}: {refused:?}"
            );
        }
        assert!(policy.check(&http("http://127.0.0.1:9/mcp")).await.is_ok());
        assert!(policy.check(&http("file:///etc/passwd")).await.is_err());
        let open = McpPolicy {
            allow_link_local: true,
            ..Default::default()
        };
        assert!(open.check(&http("http://169.254.169.254/")).await.is_ok());
    }

    #[tokio::test]
    async fn stdio_needs_the_operator_s_consent() {
        let stdio = McpServerConfig {
            command: Some("sh".into()),
            ..Default::default()
        };
        assert!(matches!(
            McpPolicy::default().check(&stdio).await,
            Err(McpError::StdioNotAllowed)
        ));
        let allowed = McpPolicy {
            allow_stdio: true,
            ..Default::default()
        };
        assert!(allowed.check(&stdio).await.is_ok());
    }
}
