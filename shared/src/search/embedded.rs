//! The embedded index: every document in memory with its word counts, BM25 over the candidates
//! that pass the filters and brute-force cosine over their vectors, saved to one JSON file after
//! each change. Another process writing the same file (`sage-local jobs index` beside a running
//! server) is picked up by its modification time before each use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{Removal, SearchDocument, SearchError, SearchHit, SearchIndex, SearchQuery, rank_hits};
use crate::util::words::{bm25_weight, tokenize};

pub struct EmbeddedIndex {
    file: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    loaded_from: Option<Option<SystemTime>>,
    documents: HashMap<String, Indexed>,
}

struct Indexed {
    document: SearchDocument,
    words: HashMap<String, u32>,
    length: usize,
}

impl Indexed {
    fn new(document: SearchDocument) -> Self {
        let mut words = HashMap::new();
        let mut length = 0;
        for word in tokenize(&format!("{}\n{}", document.title, document.text)) {
            *words.entry(word).or_insert(0) += 1;
            length += 1;
        }
        Self {
            document,
            words,
            length,
        }
    }
}

impl EmbeddedIndex {
    pub fn open(file: PathBuf) -> Self {
        Self {
            file,
            state: Mutex::new(State::default()),
        }
    }

    fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.file)
            .and_then(|meta| meta.modified())
            .ok()
    }

    /// The state, read again from the file when it changed since it was last read or written.
    async fn current(&self) -> Result<tokio::sync::MutexGuard<'_, State>, SearchError> {
        let mut state = self.state.lock().await;
        let modified = self.modified();
        if state.loaded_from != Some(modified) {
            let documents: Vec<SearchDocument> = match tokio::fs::read(&self.file).await {
                Ok(bytes) => serde_json::from_slice(&bytes)?,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(error) => return Err(error.into()),
            };
            state.documents = documents
                .into_iter()
                .map(|document| (document.id.clone(), Indexed::new(document)))
                .collect();
            state.loaded_from = Some(modified);
        }
        Ok(state)
    }

    async fn save(&self, state: &mut State) -> Result<(), SearchError> {
        let mut documents: Vec<&SearchDocument> = state
            .documents
            .values()
            .map(|indexed| &indexed.document)
            .collect();
        documents.sort_by(|a, b| a.id.cmp(&b.id));
        let bytes = serde_json::to_vec(&documents)?;
        let folder = self
            .file
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        tokio::fs::create_dir_all(&folder).await?;
        let staging = folder.join(format!(".index-{}.json", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&staging, bytes).await?;
        tokio::fs::rename(&staging, &self.file).await?;
        state.loaded_from = Some(self.modified());
        Ok(())
    }
}

#[async_trait]
impl SearchIndex for EmbeddedIndex {
    #[tracing::instrument(name = "search.upsert", skip_all)]
    async fn upsert(&self, documents: Vec<SearchDocument>) -> Result<(), SearchError> {
        if documents.is_empty() {
            return Ok(());
        }
        let mut state = self.current().await?;
        for document in documents {
            state
                .documents
                .insert(document.id.clone(), Indexed::new(document));
        }
        self.save(&mut state).await
    }

    #[tracing::instrument(name = "search.remove", skip_all)]
    async fn remove(&self, removal: &Removal) -> Result<u64, SearchError> {
        let mut state = self.current().await?;
        let before = state.documents.len();
        state.documents.retain(|_, indexed| {
            let document = &indexed.document;
            !(document.owner == removal.owner
                && document.collection == removal.collection
                && document.scope == removal.scope
                && removal
                    .parent
                    .as_ref()
                    .is_none_or(|parent| *parent == document.parent))
        });
        let removed = (before - state.documents.len()) as u64;
        if removed > 0 {
            self.save(&mut state).await?;
        }
        Ok(removed)
    }

    #[tracing::instrument(name = "search.query", skip_all)]
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let state = self.current().await?;
        let candidates: Vec<&Indexed> = state
            .documents
            .values()
            .filter(|indexed| {
                let document = &indexed.document;
                document.owner == query.owner
                    && document.collection == query.collection
                    && (query.scopes.is_empty() || query.scopes.contains(&document.scope))
            })
            .collect();
        let mut terms = tokenize(&query.text);
        terms.sort();
        terms.dedup();
        let count = candidates.len() as f64;
        let average_length = (candidates
            .iter()
            .map(|indexed| indexed.length)
            .sum::<usize>() as f64
            / count.max(1.0))
        .max(1.0);
        let containing: Vec<f64> = terms
            .iter()
            .map(|term| {
                candidates
                    .iter()
                    .filter(|indexed| indexed.words.contains_key(term))
                    .count() as f64
            })
            .collect();
        let scored: Vec<(&SearchDocument, f64)> = candidates
            .into_iter()
            .filter(|indexed| {
                !query.all_words || terms.iter().all(|term| indexed.words.contains_key(term))
            })
            .map(|indexed| {
                let relative_length = indexed.length as f64 / average_length;
                let score = terms
                    .iter()
                    .zip(&containing)
                    .filter_map(|(term, containing)| {
                        let frequency = *indexed.words.get(term)?;
                        Some(bm25_weight(frequency, *containing, count, relative_length))
                    })
                    .sum::<f64>();
                (&indexed.document, score)
            })
            .collect();
        Ok(rank_hits(&scored, query.vector.as_deref(), query.limit))
    }

    async fn ping(&self) -> Result<(), SearchError> {
        self.current().await.map(|_| ())
    }

    fn describe(&self) -> String {
        format!("embedded index at {}", self.file.display())
    }

    fn is_shared(&self) -> bool {
        !super::in_lambda()
    }
}
