//! Users' long-term memory (`memory_type: "user"`): what the routes list and forget, the block
//! each run's system prompt carries, the built-in tools the model remembers and recalls with, and
//! the extraction after a run. Always the caller's own memories: every operation takes the user.

#[cfg(feature = "mcp")]
mod extract;
#[cfg(feature = "mcp")]
mod tools;

use std::sync::Arc;

#[cfg(feature = "mcp")]
pub use extract::EXTRACTION_INSTRUCTION;
#[cfg(feature = "mcp")]
pub use tools::memory_tool_specs;

use crate::context::rank_by_relevance;
use crate::domain::DomainError;
use crate::search::{Collection, Removal, SearchDocument, SearchIndex, SearchQuery};
use crate::store::{UserMemoryRecord, UserMemoryStore};
use crate::util::{InputError, UserId, now_secs};
use crate::wire::api::{MemoryForgotten, UserMemory, UserMemoryList};

pub const MAX_KEY_CHARS: usize = 64;
pub const MAX_CONTENT_CHARS: usize = 2000;
const MAX_TAGS: usize = 10;
const MAX_TAG_CHARS: usize = 32;
/// Sage's memory types.
pub const MEMORY_TYPES: &[&str] = &[
    "preference",
    "requirement",
    "persona",
    "constraint",
    "context",
    "project",
    "workflow",
    "experience",
    "learning",
    "skill",
    "note",
    "bookmark",
    "pattern",
];
/// The kinds every run's system prompt carries, at most `INJECTED_PER_KIND` of each.
const INJECTED_TYPES: &[&str] = &["preference", "requirement", "persona", "constraint"];
const INJECTED_PER_KIND: usize = 10;
pub const DEFAULT_RECALL_LIMIT: usize = 5;
const MAX_RECALL_LIMIT: usize = 50;

/// A memory to store, checked: a key of 1 to 64 visible characters, content of 1 to 2,000
/// characters, one of Sage's memory types, at most ten short tags.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMemory {
    key: String,
    content: String,
    memory_type: String,
    tags: Vec<String>,
}

impl NewMemory {
    pub fn parse(
        key: &str,
        content: &str,
        memory_type: Option<&str>,
        tags: Vec<String>,
    ) -> Result<Self, InputError> {
        let key = key.trim();
        if key.is_empty()
            || key.chars().count() > MAX_KEY_CHARS
            || key.chars().any(|c| c.is_control() || c == '/')
        {
            return Err(InputError::Invalid(format!(
                "memory_key: 1 to {MAX_KEY_CHARS} characters, no control characters or '/'"
            )));
        }
        let content = content.trim();
        if content.is_empty() || content.chars().count() > MAX_CONTENT_CHARS {
            return Err(InputError::Invalid(format!(
                "content: 1 to {MAX_CONTENT_CHARS} characters"
            )));
        }
        let memory_type = memory_type
            .map(str::trim)
            .filter(|kind| !kind.is_empty())
            .unwrap_or("note")
            .to_lowercase();
        if !MEMORY_TYPES.contains(&memory_type.as_str()) {
            return Err(InputError::Invalid(format!(
                "memory_type: one of {}",
                MEMORY_TYPES.join(", ")
            )));
        }
        let tags: Vec<String> = tags
            .iter()
            .map(|tag| tag.trim().to_owned())
            .filter(|tag| !tag.is_empty())
            .collect();
        if tags.len() > MAX_TAGS || tags.iter().any(|tag| tag.chars().count() > MAX_TAG_CHARS) {
            return Err(InputError::Invalid(format!(
                "tags: at most {MAX_TAGS}, each at most {MAX_TAG_CHARS} characters"
            )));
        }
        Ok(Self {
            key: key.to_owned(),
            content: content.to_owned(),
            memory_type,
            tags,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

fn view(record: UserMemoryRecord) -> UserMemory {
    UserMemory {
        key: record.key,
        content: record.content,
        memory_type: record.memory_type,
        tags: record.tags,
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

/// The memory service.
#[derive(Clone)]
pub struct Memories {
    store: Arc<dyn UserMemoryStore>,
    /// With a search service configured (`--es_url`), memories are indexed there and recall
    /// asks it first.
    search: Option<Arc<dyn SearchIndex>>,
}

fn memory_document(record: &UserMemoryRecord) -> SearchDocument {
    SearchDocument {
        id: format!("memory-{}-{}", record.user_id, record.key),
        owner: record.user_id.clone(),
        collection: Collection::Memories,
        scope: String::new(),
        parent: record.key.clone(),
        title: record.key.replace(['_', '-'], " "),
        text: format!("{} {}", record.content, record.tags.join(" ")),
        source: serde_json::Value::Null,
        vector: None,
    }
}

impl Memories {
    pub fn new(store: Arc<dyn UserMemoryStore>, search: Option<Arc<dyn SearchIndex>>) -> Self {
        Self { store, search }
    }

    /// The keys the search service finds for `query`, best first; `None` without one or when
    /// it fails (recall then ranks in process, and the failure is logged).
    async fn indexed_recall(
        &self,
        user: &UserId,
        query: &str,
        limit: usize,
    ) -> Option<Vec<String>> {
        let search = self.search.as_ref()?;
        let found = search
            .search(&SearchQuery {
                owner: user.to_string(),
                collection: Collection::Memories,
                scopes: Vec::new(),
                text: query.to_owned(),
                all_words: false,
                vector: None,
                limit,
            })
            .await;
        match found {
            Ok(hits) => Some(hits.into_iter().map(|hit| hit.parent).collect()),
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::chain(&error), "memory search failed; recalling in process");
                None
            }
        }
    }

    /// The caller's memories, newest change first.
    pub async fn list(&self, user: &UserId) -> Result<UserMemoryList, DomainError> {
        let memories = self.newest_first(user).await?;
        Ok(UserMemoryList {
            total: memories.len(),
            memories,
        })
    }

    async fn newest_first(&self, user: &UserId) -> Result<Vec<UserMemory>, DomainError> {
        let mut memories: Vec<UserMemory> = self
            .store
            .user_memories(user.as_str())
            .await?
            .into_iter()
            .map(view)
            .collect();
        memories.sort_by(|a, b| {
            b.updated_at
                .total_cmp(&a.updated_at)
                .then_with(|| a.key.cmp(&b.key))
        });
        Ok(memories)
    }

    /// Stores the memory under its key, replacing what the key held (its creation time kept).
    pub async fn remember(
        &self,
        user: &UserId,
        memory: NewMemory,
    ) -> Result<UserMemory, DomainError> {
        let existing = self
            .store
            .user_memories(user.as_str())
            .await?
            .into_iter()
            .find(|stored| stored.key == memory.key);
        let now = now_secs();
        let record = UserMemoryRecord {
            user_id: user.to_string(),
            key: memory.key,
            content: memory.content,
            memory_type: memory.memory_type,
            tags: memory.tags,
            created_at: existing.map_or(now, |stored| stored.created_at),
            updated_at: now,
        };
        self.store.put_user_memory(&record).await?;
        if let Some(search) = &self.search
            && let Err(error) = search.upsert(vec![memory_document(&record)]).await
        {
            tracing::warn!(error = %crate::telemetry::chain(&error), "the memory was not indexed for search");
        }
        Ok(view(record))
    }

    pub async fn forget(&self, user: &UserId, key: &str) -> Result<MemoryForgotten, DomainError> {
        if self.store.delete_user_memory(user.as_str(), key).await? {
            if let Some(search) = &self.search {
                let removal = Removal {
                    owner: user.to_string(),
                    collection: Collection::Memories,
                    scope: String::new(),
                    parent: Some(key.to_owned()),
                };
                if let Err(error) = search.remove(&removal).await {
                    tracing::warn!(error = %crate::telemetry::chain(&error), "the memory stays in the search index");
                }
            }
            Ok(MemoryForgotten {
                key: key.to_owned(),
            })
        } else {
            Err(DomainError::NotFound(format!("no memory `{key}`")))
        }
    }

    /// The memories best matching `query` (BM25 over key, content and tags), optionally of one
    /// type; with an empty query, the newest.
    pub async fn recall(
        &self,
        user: &UserId,
        query: &str,
        memory_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserMemory>, DomainError> {
        let limit = limit.clamp(1, MAX_RECALL_LIMIT);
        let memories: Vec<UserMemory> = self
            .newest_first(user)
            .await?
            .into_iter()
            .filter(|memory| memory_type.is_none_or(|kind| memory.memory_type == kind))
            .collect();
        if query.trim().is_empty() {
            return Ok(memories.into_iter().take(limit).collect());
        }
        // The search service's order first (asked for more, as the type filter comes after),
        // then what only the in-process ranking finds (memories kept before it was configured).
        let indexed = self
            .indexed_recall(user, query, limit.saturating_mul(4))
            .await
            .unwrap_or_default();
        let documents: Vec<String> = memories
            .iter()
            .map(|memory| {
                format!(
                    "{} {} {}",
                    memory.key.replace(['_', '-'], " "),
                    memory.content,
                    memory.tags.join(" ")
                )
            })
            .collect();
        let documents: Vec<&str> = documents.iter().map(String::as_str).collect();
        let in_process = rank_by_relevance(query, &documents);
        let mut ranked: Vec<Option<UserMemory>> = memories.into_iter().map(Some).collect();
        let by_index = indexed.iter().filter_map(|key| {
            ranked
                .iter()
                .position(|memory| memory.as_ref().is_some_and(|memory| &memory.key == key))
        });
        let order: Vec<usize> = by_index.chain(in_process).collect();
        Ok(order
            .into_iter()
            .filter_map(|index| ranked[index].take())
            .take(limit)
            .collect())
    }

    /// What a run's system prompt says about the user: up to ten memories of each injected
    /// kind, newest first; `None` when there are none.
    pub async fn prompt_block(&self, user: &UserId) -> Result<Option<String>, DomainError> {
        let memories = self.newest_first(user).await?;
        let mut lines = Vec::new();
        for kind in INJECTED_TYPES {
            lines.extend(
                memories
                    .iter()
                    .filter(|memory| memory.memory_type == *kind)
                    .take(INJECTED_PER_KIND)
                    .map(|memory| format!("- [{kind}] {}: {}", memory.key, memory.content)),
            );
        }
        if lines.is_empty() {
            return Ok(None);
        }
        Ok(Some(format!(
            "What you know about this user from earlier conversations (long-term memory):\n{}",
            lines.join("\n")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn memory(key: &str, content: &str, kind: &str) -> NewMemory {
        NewMemory::parse(key, content, Some(kind), vec![]).unwrap()
    }

    #[test]
    fn bad_memories_are_refused_with_the_field_named() {
        let long_key = "k".repeat(MAX_KEY_CHARS + 1);
        let long_content = "c".repeat(MAX_CONTENT_CHARS + 1);
        for (key, content, kind, field) in [
            ("", "x", None, "memory_key"),
            (long_key.as_str(), "x", None, "memory_key"),
            ("a/b", "x", None, "memory_key"),
            ("k", "", None, "content"),
            ("k", long_content.as_str(), None, "content"),
            ("k", "x", Some("mood"), "memory_type"),
        ] {
            let error = NewMemory::parse(key, content, kind, vec![]).unwrap_err();
            assert!(error.to_string().starts_with(field), "{error}");
        }
        let tags = vec!["t".to_owned(); MAX_TAGS + 1];
        assert!(NewMemory::parse("k", "x", None, tags).is_err());
        assert_eq!(
            NewMemory::parse(" k ", " x ", None, vec![]).unwrap(),
            NewMemory {
                key: "k".into(),
                content: "x".into(),
                memory_type: "note".into(),
                tags: vec![]
            }
        );
    }

    #[tokio::test]
    async fn the_prompt_carries_the_injected_kinds_and_recall_finds_by_words() {
        let memories = Memories::new(Arc::new(MemoryStore::default()), None);
        let ada = UserId::new("ada");
        memories
            .remember(&ada, memory("tone", "Answer tersely", "preference"))
            .await
            .unwrap();
        memories
            .remember(&ada, memory("editor", "Uses helix as editor", "note"))
            .await
            .unwrap();
        let block = memories.prompt_block(&ada).await.unwrap().unwrap();
        assert!(
            block.contains("- [preference] tone: Answer tersely"),
            "{block}"
        );
        assert!(!block.contains("helix"), "notes are recalled, not injected");

        let found = memories
            .recall(&ada, "which editor", None, 5)
            .await
            .unwrap();
        assert_eq!(found[0].key, "editor");
        let typed = memories
            .recall(&ada, "", Some("preference"), 5)
            .await
            .unwrap();
        assert_eq!(typed.len(), 1);

        let bob = UserId::new("bob");
        assert!(memories.prompt_block(&bob).await.unwrap().is_none());
        assert!(memories.forget(&bob, "tone").await.is_err());
        memories.forget(&ada, "tone").await.unwrap();
        assert!(memories.prompt_block(&ada).await.unwrap().is_none());
    }
}
