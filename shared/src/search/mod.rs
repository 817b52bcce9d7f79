//! Search over what users keep (knowledge-base passages today): full text, plus vectors when an
//! embeddings endpoint is configured. One trait, two backends: an embedded index that needs no
//! service (the default) and OpenSearch / Elasticsearch (`--es_url`).

mod embedded;
#[cfg(feature = "llm")]
mod embeddings;
#[cfg(feature = "opensearch")]
mod opensearch;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use embedded::EmbeddedIndex;
#[cfg(feature = "llm")]
pub use embeddings::Embedder;
#[cfg(feature = "opensearch")]
pub use opensearch::OpenSearchIndex;

use crate::config::SearchConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the search index's file cannot be used")]
    Io(#[from] std::io::Error),
    #[error("the search index's file is not valid")]
    Corrupt(#[from] serde_json::Error),
    #[error("search request failed")]
    Remote(#[source] BoxError),
    #[error("search service answered {status}: {reason}")]
    Rejected { status: u16, reason: String },
    #[error("embeddings request failed")]
    Embeddings(#[source] BoxError),
    #[error("search configuration: {0}")]
    Config(String),
}

/// What kind of thing a document is; each kind is searched on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Collection {
    /// Passages of knowledge-base documents; scope = the knowledge base, parent = the document.
    Knowledge,
    /// Conversations: title and message text, one document per session (its parent); scope "".
    Conversations,
    /// Users' long-term memories: one document per key (its parent); scope "".
    Memories,
}

impl Collection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Knowledge => "knowledge",
            Self::Conversations => "conversations",
            Self::Memories => "memories",
        }
    }
}

/// One searchable passage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchDocument {
    /// Unique across the index; writing the same id again replaces the document.
    pub id: String,
    pub owner: String,
    pub collection: Collection,
    pub scope: String,
    pub parent: String,
    pub title: String,
    pub text: String,
    /// Returned with a hit as it was given (where the passage came from).
    #[serde(default)]
    pub source: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub owner: String,
    pub collection: Collection,
    /// Only these scopes; empty means all of the owner's.
    pub scopes: Vec<String>,
    pub text: String,
    /// Only documents holding every word of `text` (a filter), instead of any (a ranking).
    pub all_words: bool,
    pub vector: Option<Vec<f32>>,
    pub limit: usize,
}

/// Which documents to remove: an owner's scope, or one parent's passages in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    pub owner: String,
    pub collection: Collection,
    pub scope: String,
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    pub id: String,
    pub scope: String,
    pub parent: String,
    pub title: String,
    pub text: String,
    pub source: Value,
    /// 0 to 1, higher is better: the text match relative to the best hit, averaged with the
    /// cosine similarity when both sides have vectors.
    pub score: f64,
}

#[async_trait]
pub trait SearchIndex: Send + Sync + 'static {
    /// Adds or replaces documents; searchable when this returns.
    async fn upsert(&self, documents: Vec<SearchDocument>) -> Result<(), SearchError>;
    /// How many documents were removed.
    async fn remove(&self, removal: &Removal) -> Result<u64, SearchError>;
    /// The best `limit` hits, best first; nothing that matches neither the text nor the vector.
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError>;
    /// A real answer of the backend, for readiness.
    async fn ping(&self) -> Result<(), SearchError>;
    fn describe(&self) -> String;
    /// Whether every instance of the service sees the same index: false for the embedded index
    /// inside a Lambda function, whose `/tmp` is its own.
    fn is_shared(&self) -> bool;
}

/// Turns texts into vectors (an embeddings endpoint).
#[async_trait]
pub trait TextEmbedder: Send + Sync + 'static {
    /// One vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, SearchError>;
    fn describe(&self) -> String;
}

/// Scores candidates the same way in every backend: `text_scores` are raw relevance (BM25),
/// normalised by the best; with a query vector, each document with a vector averages that with
/// its cosine similarity (negative similarity counts as none). Only the winners are copied.
pub(crate) fn rank_hits(
    candidates: &[(&SearchDocument, f64)],
    vector: Option<&[f32]>,
    limit: usize,
) -> Vec<SearchHit> {
    let best_text = candidates
        .iter()
        .map(|(_, score)| *score)
        .fold(0.0_f64, f64::max);
    let mut scored: Vec<(&SearchDocument, f64)> = candidates
        .iter()
        .filter_map(|(document, text_score)| {
            let text = if best_text > 0.0 {
                text_score / best_text
            } else {
                0.0
            };
            let score = match (vector, document.vector.as_deref()) {
                (Some(query), Some(own)) => (text + cosine(query, own).max(0.0)) / 2.0,
                _ => text,
            };
            (score > 0.0).then_some((*document, score))
        })
        .collect();
    let order = |a: &(&SearchDocument, f64), b: &(&SearchDocument, f64)| {
        b.1.total_cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id))
    };
    if scored.len() > limit && limit > 0 {
        scored.select_nth_unstable_by(limit - 1, order);
        scored.truncate(limit);
    }
    scored.sort_by(order);
    scored.truncate(limit);
    scored
        .into_iter()
        .map(|(document, score)| SearchHit {
            id: document.id.clone(),
            scope: document.scope.clone(),
            parent: document.parent.clone(),
            title: document.title.clone(),
            text: document.text.clone(),
            source: document.source.clone(),
            score,
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut norm_a, mut norm_b) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        norm_a += x * x;
        norm_b += y * y;
    }
    if norm_a == 0.0 || norm_b == 0.0 {
        0.0
    } else {
        dot / (norm_a.sqrt() * norm_b.sqrt())
    }
}

/// The backend the settings name: OpenSearch / Elasticsearch with `--es_url`, else the embedded
/// index, kept in `<workspace>/.search/`.
pub async fn open_search(
    config: &SearchConfig,
    workspace: &Path,
) -> Result<Arc<dyn SearchIndex>, SearchError> {
    match &config.es_url {
        #[cfg(feature = "opensearch")]
        Some(_) => Ok(Arc::new(OpenSearchIndex::connect(config).await?)),
        #[cfg(not(feature = "opensearch"))]
        Some(_) => {
            tracing::debug!("this function does not search; --es_url is not used here");
            Ok(Arc::new(EmbeddedIndex::open(
                workspace.join(".search").join("index.jsonl"),
            )))
        }
        None => Ok(Arc::new(EmbeddedIndex::open(
            workspace.join(".search").join("index.jsonl"),
        ))),
    }
}

/// Inside a Lambda function each instance has its own `/tmp`.
pub(crate) fn in_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(id: &str, vector: Option<Vec<f32>>) -> SearchDocument {
        SearchDocument {
            id: id.into(),
            owner: "u".into(),
            collection: Collection::Knowledge,
            scope: "kb".into(),
            parent: "d".into(),
            title: String::new(),
            text: String::new(),
            source: Value::Null,
            vector,
        }
    }

    #[test]
    fn vectors_reorder_text_matches_and_opposite_vectors_add_nothing() {
        let documents = [
            document("text-only", None),
            document("close", Some(vec![1.0, 0.0])),
            document("opposite", Some(vec![-1.0, 0.0])),
        ];
        let ranked = rank_hits(
            &[
                (&documents[0], 2.0),
                (&documents[1], 1.0),
                (&documents[2], 0.0),
            ],
            Some(&[1.0, 0.0]),
            10,
        );
        let ids: Vec<&str> = ranked.iter().map(|hit| hit.id.as_str()).collect();
        assert_eq!(ids, ["text-only", "close"]);
        assert!((ranked[0].score - 1.0).abs() < 1e-9);
        assert!((ranked[1].score - 0.75).abs() < 1e-9);
    }
}
