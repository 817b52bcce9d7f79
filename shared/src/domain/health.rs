//! Readiness: one line per dependency this function uses, and whether all of them answer.

use std::sync::Arc;
use std::time::Duration;

use crate::blob::ObjectStore;
use crate::search::SearchIndex;
use crate::store::Store;
use crate::wire::api::Readiness;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct HealthCheck {
    store: Arc<dyn Store>,
    store_label: String,
    objects: Arc<dyn ObjectStore>,
    search: Arc<dyn SearchIndex>,
    /// What gives search its vectors, or why it has none.
    vectors: String,
    llm_base_url: String,
    llm_has_key: bool,
}

/// What readiness checks, and how each is named.
pub struct Dependencies {
    pub store: Arc<dyn Store>,
    pub store_label: String,
    pub objects: Arc<dyn ObjectStore>,
    pub search: Arc<dyn SearchIndex>,
    pub vectors: String,
    pub llm_base_url: String,
    pub llm_has_key: bool,
}

impl HealthCheck {
    pub fn new(dependencies: Dependencies) -> Self {
        let Dependencies {
            store,
            store_label,
            objects,
            search,
            vectors,
            llm_base_url,
            llm_has_key,
        } = dependencies;
        Self {
            store,
            store_label,
            objects,
            search,
            vectors,
            llm_base_url,
            llm_has_key,
        }
    }

    pub async fn readiness(&self) -> Readiness {
        let mut checks = Vec::new();
        let mut ready = true;
        let label = &self.store_label;
        match self.store.ping().await {
            Ok(()) => checks.push(format!("store ({label}): ok")),
            Err(error) => {
                ready = false;
                tracing::warn!(error = %crate::telemetry::chain(&error), "store readiness check failed");
                checks.push(format!("store ({label}): unreachable"));
            }
        }
        let files = self.objects.describe();
        match tokio::time::timeout(CHECK_TIMEOUT, self.objects.ping()).await {
            Ok(Ok(())) => checks.push(format!("files ({files}): ok")),
            Ok(Err(error)) => {
                ready = false;
                tracing::warn!(error = %crate::telemetry::chain(&error), "object storage readiness check failed");
                checks.push(format!("files ({files}): unreachable"));
            }
            Err(_) => {
                ready = false;
                checks.push(format!("files ({files}): no answer within 3 s"));
            }
        }
        let search = format!("{}; {}", self.search.describe(), self.vectors);
        match tokio::time::timeout(CHECK_TIMEOUT, self.search.ping()).await {
            Ok(Ok(())) => checks.push(format!("search ({search}): ok")),
            Ok(Err(error)) => {
                ready = false;
                tracing::warn!(error = %crate::telemetry::chain(&error), "search readiness check failed");
                checks.push(format!("search ({search}): unreachable"));
            }
            Err(_) => {
                ready = false;
                checks.push(format!("search ({search}): no answer within 3 s"));
            }
        }
        let llm = &self.llm_base_url;
        if !self.llm_has_key {
            ready = false;
            checks.push("llm: no API key configured (SAGE_DEFAULT_LLM_API_KEY)".into());
        } else if self.llm_reachable().await {
            checks.push(format!("llm ({llm}): reachable"));
        } else {
            ready = false;
            checks.push(format!("llm ({llm}): unreachable"));
        }
        Readiness { ready, checks }
    }

    /// The provider's host accepts a connection on the base URL's port. A TCP check keeps an
    /// HTTP client out of the functions that never call the model.
    async fn llm_reachable(&self) -> bool {
        let Ok(uri) = self.llm_base_url.parse::<http::Uri>() else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let default_port = if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        };
        let address = (
            host.trim_start_matches('[').trim_end_matches(']'),
            uri.port_u16().unwrap_or(default_port),
        );
        matches!(
            tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(address)).await,
            Ok(Ok(_))
        )
    }
}
