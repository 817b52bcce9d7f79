//! Fetching a file a user names by URL (the download tool, skill imports): every address the
//! name resolves to, on every redirect, must be public (no loopback, private, link-local, shared
//! or metadata address) unless the operator allows private ones; the connection goes to the
//! address that was checked, and the body stops at the size limit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

pub use super::DownloadPolicy;

const MAX_REDIRECTS: usize = 5;
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a file could not be fetched; the reasons never carry the URL (it may hold credentials).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// A fetched file: the URL it finally came from, its content type and its bytes.
#[derive(Debug)]
pub struct Fetched {
    pub url: reqwest::Url,
    pub content_type: String,
    pub body: Bytes,
}

fn is_public_v4(address: Ipv4Addr) -> bool {
    let [a, b, ..] = address.octets();
    !(address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254))
        }
    }
}

/// The URL's host and one address of it that the policy lets a download reach.
async fn checked_address(
    url: &reqwest::Url,
    policy: DownloadPolicy,
) -> Result<(String, SocketAddr), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Refused(
            "the URL must be an http or https URL".into(),
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| FetchError::Refused("the URL has no host".into()))?
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(address) => vec![SocketAddr::new(address, port)],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| FetchError::Failed(format!("cannot resolve {host}")))?
            .collect(),
    };
    let refused = addresses.iter().any(|address| !is_public(address.ip()));
    if refused && !policy.allow_private {
        return Err(FetchError::Refused(format!(
            "{host} is not a public address; downloads reach public http(s) servers only"
        )));
    }
    let address = addresses
        .into_iter()
        .next()
        .ok_or_else(|| FetchError::Failed(format!("cannot resolve {host}")))?;
    Ok((host, address))
}

/// Fetches `raw_url` within `policy`, following at most five redirects.
pub async fn fetch_public(raw_url: &str, policy: DownloadPolicy) -> Result<Fetched, FetchError> {
    let mut url = reqwest::Url::parse(raw_url.trim())
        .map_err(|_| FetchError::Refused("the URL is not valid".into()))?;
    let mut hops = 0;
    let response = loop {
        let (host, address) = checked_address(&url, policy).await?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .resolve(&host, address)
            .build()
            .map_err(|_| FetchError::Failed("the download could not start".into()))?;
        let response = client.get(url.clone()).send().await.map_err(|error| {
            FetchError::Failed(format!("the download failed: {}", without_url(&error)))
        })?;
        if !response.status().is_redirection() {
            break response;
        }
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(FetchError::Failed(format!(
                "more than {MAX_REDIRECTS} redirects"
            )));
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| FetchError::Failed("a redirect without a location".into()))?;
        url = url
            .join(location)
            .map_err(|_| FetchError::Failed("a redirect to an invalid URL".into()))?;
    };
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Failed(format!("the server answered {status}")));
    }
    let too_large = || {
        FetchError::Refused(format!(
            "the file is larger than the download limit of {} bytes",
            policy.max_bytes
        ))
    };
    if response
        .content_length()
        .is_some_and(|length| length > policy.max_bytes)
    {
        return Err(too_large());
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| {
            FetchError::Failed(format!("the download failed: {}", without_url(&error)))
        })?;
        if (body.len() + chunk.len()) as u64 > policy.max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        url,
        content_type,
        body: Bytes::from(body),
    })
}

/// A reqwest error's reason without the URL it carries (which may hold credentials).
fn without_url(error: &reqwest::Error) -> String {
    let reason = if error.is_timeout() {
        "it took too long"
    } else if error.is_connect() {
        "the server could not be reached"
    } else if error.is_body() || error.is_decode() {
        "the body could not be read"
    } else {
        "the request failed"
    };
    reason.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "fc00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
