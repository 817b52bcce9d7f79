//! `download_file_from_url`: a public http(s) file into the session's workspace. Every address
//! the name resolves to, on every redirect, must be public (no loopback, private, link-local,
//! shared or metadata address) unless the operator allows private ones; the connection goes to
//! the address that was checked, and the body stops at the configured size.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{JsonObject, ToolCallError, WorkspaceTools, invalid, store_failed, text_argument};

const MAX_REDIRECTS: usize = 5;
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
const FALLBACK_NAME: &str = "download";

/// What downloads may reach and fetch (`--download_allow_private`, `--download_max_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct DownloadPolicy {
    pub allow_private: bool,
    pub max_bytes: u64,
}

impl Default for DownloadPolicy {
    fn default() -> Self {
        Self {
            allow_private: false,
            max_bytes: 20 * 1024 * 1024,
        }
    }
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
) -> Result<(String, SocketAddr), ToolCallError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("`url` must be an http or https URL"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| invalid("`url` has no host"))?
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(address) => vec![SocketAddr::new(address, port)],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| invalid(format!("cannot resolve {host}")))?
            .collect(),
    };
    let refused = addresses.iter().any(|address| !is_public(address.ip()));
    if refused && !policy.allow_private {
        return Err(invalid(format!(
            "{host} is not a public address; downloads reach public http(s) servers only"
        )));
    }
    let address = addresses
        .into_iter()
        .next()
        .ok_or_else(|| invalid(format!("cannot resolve {host}")))?;
    Ok((host, address))
}

/// The file name the download is saved under: the URL path's last segment, made safe.
fn file_name_of(url: &reqwest::Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or_default();
    let decoded: String =
        form_urlencoded::parse(format!("n={}", last.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
    let safe: String = decoded
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "._- ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim().trim_start_matches('.').to_owned();
    if safe.is_empty() {
        FALLBACK_NAME.to_owned()
    } else {
        safe.chars().take(128).collect()
    }
}

impl WorkspaceTools {
    pub(super) async fn download(&self, arguments: &JsonObject) -> Result<Value, ToolCallError> {
        let raw_url = text_argument(arguments, "url")?;
        let mut url =
            reqwest::Url::parse(raw_url.trim()).map_err(|_| invalid("`url` is not a valid URL"))?;
        let folder = arguments
            .get("working_dir")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|dir| !dir.is_empty() && *dir != "." && *dir != "/workspace")
            .map(|dir| dir.trim_end_matches('/').to_owned());
        let policy = self.downloads;
        let mut hops = 0;
        let response = loop {
            let (host, address) = checked_address(&url, policy).await?;
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(DOWNLOAD_TIMEOUT)
                .resolve(&host, address)
                .build()
                .map_err(|_| invalid("the download could not start"))?;
            let response = client.get(url.clone()).send().await.map_err(|error| {
                invalid(format!("the download failed: {}", without_url(&error)))
            })?;
            if !response.status().is_redirection() {
                break response;
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(invalid(format!("more than {MAX_REDIRECTS} redirects")));
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| invalid("a redirect without a location"))?;
            url = url
                .join(location)
                .map_err(|_| invalid("a redirect to an invalid URL"))?;
        };
        let status = response.status();
        if !status.is_success() {
            return Err(invalid(format!("the server answered {status}")));
        }
        if response
            .content_length()
            .is_some_and(|length| length > policy.max_bytes)
        {
            return Err(invalid(format!(
                "the file is larger than the download limit of {} bytes",
                policy.max_bytes
            )));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let name = file_name_of(&url);
        let target = match &folder {
            Some(folder) => format!("{folder}/{name}"),
            None => name,
        };
        let (key, relative) = self.path_of(&target)?;
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|error| {
                invalid(format!("the download failed: {}", without_url(&error)))
            })?;
            if (body.len() + chunk.len()) as u64 > policy.max_bytes {
                return Err(invalid(format!(
                    "the file is larger than the download limit of {} bytes",
                    policy.max_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let size = body.len();
        self.objects
            .put(&key, Bytes::from(body))
            .await
            .map_err(store_failed)?;
        Ok(json!({
            "file_path": relative,
            "size": size,
            "content_type": content_type,
            "success": true,
        }))
    }
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

    #[test]
    fn saved_names_stay_one_safe_segment() {
        let name = |url: &str| file_name_of(&reqwest::Url::parse(url).unwrap());
        assert_eq!(
            name("https://example.com/data/report%20v2.pdf?x=1"),
            "report v2.pdf"
        );
        assert_eq!(
            name("https://example.com/a/..%2F..%2Fetc%2Fpasswd"),
            "_.._etc_passwd"
        );
        assert_eq!(name("https://example.com/c++.txt"), "c__.txt");
        assert_eq!(name("https://example.com/"), FALLBACK_NAME);
        assert_eq!(name("https://example.com/.env"), "env");
    }
}
