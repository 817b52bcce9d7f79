//! Vectors from an OpenAI-compatible `/embeddings` endpoint (`--embedding_base_url`,
//! `--embedding_model`, `--embedding_api_key`, `--embedding_dims`).

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use async_trait::async_trait;

use super::{SearchError, TextEmbedder};
use crate::config::SearchConfig;

/// Inputs per request: providers cap a batch (OpenAI: 2,048).
const BATCH: usize = 64;

pub struct Embedder {
    client: reqwest::Client,
    url: String,
    model: String,
    dims: Option<usize>,
    api_key: Option<SecretString>,
}

#[derive(Deserialize)]
struct EmbeddingsAnswer {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

fn failed(reason: String) -> SearchError {
    SearchError::Embeddings(reason.into())
}

impl Embedder {
    /// None when no `--embedding_base_url` is set: search is text only.
    pub fn from_config(config: &SearchConfig) -> Option<Self> {
        let base = config.embedding_base_url.as_deref()?.trim_end_matches('/');
        crate::util::tls::install_crypto_provider();
        Some(Self {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
            url: format!("{base}/embeddings"),
            model: config.embedding_model.clone(),
            dims: config.embedding_dims.map(usize::from),
            api_key: config.embedding_api_key.clone(),
        })
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, SearchError> {
        let mut body = json!({"model": self.model, "input": texts});
        if let Some(dims) = self.dims {
            body["dimensions"] = json!(dims);
        }
        let mut request = self.client.post(&self.url).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let response = request
            .send()
            .await
            .map_err(|error| SearchError::Embeddings(Box::new(error)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!(
                "the embeddings endpoint answered {}",
                status.as_u16()
            )));
        }
        let mut answer: EmbeddingsAnswer = response
            .json()
            .await
            .map_err(|error| SearchError::Embeddings(Box::new(error)))?;
        if answer.data.len() != texts.len() {
            return Err(failed(format!(
                "{} vectors for {} texts",
                answer.data.len(),
                texts.len()
            )));
        }
        answer.data.sort_by_key(|item| item.index);
        let vectors: Vec<Vec<f32>> = answer.data.into_iter().map(|item| item.embedding).collect();
        if let Some(dims) = self.dims
            && let Some(wrong) = vectors.iter().find(|vector| vector.len() != dims)
        {
            return Err(failed(format!(
                "a vector of {} dimensions; --embedding_dims is {dims}",
                wrong.len()
            )));
        }
        Ok(vectors)
    }
}

#[async_trait]
impl TextEmbedder for Embedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, SearchError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            vectors.extend(self.embed_batch(batch).await?);
        }
        Ok(vectors)
    }

    fn describe(&self) -> String {
        format!("embeddings {} from {}", self.model, self.url)
    }
}
