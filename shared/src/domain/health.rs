//! Readiness: one line per dependency this function uses, and whether all of them answer.

use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;
use crate::wire::api::Readiness;

#[derive(Clone)]
pub struct HealthCheck {
    store: Arc<dyn Store>,
    store_label: String,
    llm_base_url: String,
    llm_has_key: bool,
    http: reqwest::Client,
}

impl HealthCheck {
    pub fn new(
        store: Arc<dyn Store>,
        store_label: String,
        llm_base_url: String,
        llm_has_key: bool,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()?;
        Ok(Self {
            store,
            store_label,
            llm_base_url,
            llm_has_key,
            http,
        })
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

    async fn llm_reachable(&self) -> bool {
        self.http
            .get(format!("{}/models", self.llm_base_url.trim_end_matches('/')))
            .send()
            .await
            .is_ok()
    }
}
