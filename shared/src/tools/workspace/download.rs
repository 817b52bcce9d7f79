//! `download_file_from_url`: a public http(s) file into the session's workspace, fetched
//! through the address guard of [`crate::util::fetch`].

use serde_json::{Value, json};

use super::{JsonObject, ToolCallError, WorkspaceTools, invalid, store_failed, text_argument};
use crate::util::fetch::fetch_public;

const FALLBACK_NAME: &str = "download";

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
        let folder = arguments
            .get("working_dir")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|dir| !dir.is_empty() && *dir != "." && *dir != "/workspace")
            .map(|dir| dir.trim_end_matches('/').to_owned());
        let fetched = fetch_public(raw_url, self.downloads)
            .await
            .map_err(|error| invalid(format!("`url`: {error}")))?;
        let name = file_name_of(&fetched.url);
        let target = match &folder {
            Some(folder) => format!("{folder}/{name}"),
            None => name,
        };
        let (key, relative) = self.path_of(&target)?;
        let size = fetched.body.len();
        self.objects
            .put(&key, fetched.body)
            .await
            .map_err(store_failed)?;
        Ok(json!({
            "file_path": relative,
            "size": size,
            "content_type": fetched.content_type,
            "success": true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
