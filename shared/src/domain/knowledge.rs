//! Knowledge bases as Sage's client uses them: a user's named collections of documents
//! (uploaded files, or Q&A pairs), indexed into passages by the scheduled indexing job and
//! searched by the retrieve route and the run's retrieval tool.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

use super::DomainError;
use super::files::safe_file_name;
use crate::blob::{BlobError, ObjectKey, ObjectStore};
use crate::search::{
    Collection, Removal, SearchDocument, SearchError, SearchHit, SearchIndex, SearchQuery,
    TextEmbedder,
};
use crate::store::{DocStatus, KnowledgeBaseRecord, KnowledgeDocRecord, KnowledgeStore};
use crate::util::now_secs;

const FOLDER: &str = ".knowledge";
pub const MAX_DOCUMENT_BYTES: usize = 10 * 1024 * 1024;
const MAX_DOCUMENTS: usize = 500;
const MAX_ATTEMPTS: u32 = 3;
/// A document still marked as being indexed after this long was abandoned (a killed job).
const STALE_RUNNING_SECS: f64 = 600.0;
const PASSAGE_CHARS: usize = 1200;
const MAX_TOP_K: usize = 50;
const WRITE_RETRIES: usize = 8;
/// The file kinds the indexing job reads: text, and PDF (its text layer).
const TEXT_EXTENSIONS: &[&str] = &["txt", "md", "markdown", "csv", "json", "html", "htm"];
const PDF_EXTENSION: &str = "pdf";

#[derive(Clone)]
pub struct Knowledge {
    store: Arc<dyn KnowledgeStore>,
    objects: Arc<dyn ObjectStore>,
    search: Arc<dyn SearchIndex>,
    embedder: Option<Arc<dyn TextEmbedder>>,
}

/// What a new base is given.
#[derive(Debug, Clone, Default)]
pub struct NewKnowledgeBase {
    pub name: String,
    pub kind: String,
    pub intro: String,
    pub language: String,
}

/// A change to a base's description; `None` keeps the field.
#[derive(Debug, Clone, Default)]
pub struct KnowledgeBaseChange {
    pub name: Option<String>,
    pub intro: Option<String>,
    pub language: Option<String>,
}

/// One uploaded file for a base.
pub struct NewDocument {
    pub name: String,
    pub bytes: Bytes,
}

/// A base as a run sees it: the name the model reads and the index name it passes back.
#[derive(Debug, Clone, PartialEq)]
pub struct RunKnowledgeBase {
    pub id: String,
    pub name: String,
    pub intro: String,
    pub index_name: String,
}

/// What one indexing pass did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct IndexReport {
    pub indexed: Vec<String>,
    pub failed: Vec<IndexFailure>,
    /// False when documents were left for the next pass (its limit or its time).
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IndexFailure {
    pub doc_id: String,
    pub error: String,
    /// Whether it will be tried again.
    pub retrying: bool,
}

/// Sage's index name for a base: "kdb_" and eight hex digits of its id's hash.
pub fn index_name(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("kdb_{hex}")
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn storage_unavailable(error: BlobError) -> DomainError {
    tracing::warn!(error = %crate::telemetry::chain(&error), "object storage failed");
    DomainError::Unavailable("the file storage is not available; try again".into())
}

fn search_unavailable(error: SearchError) -> DomainError {
    tracing::warn!(error = %crate::telemetry::chain(&error), "search failed");
    DomainError::Unavailable("the search index is not available; try again".into())
}

fn check_text(field: &str, value: &str, max: usize, required: bool) -> Result<String, DomainError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(DomainError::invalid(format!("{field}: must not be empty")));
    }
    if value.chars().count() > max {
        return Err(DomainError::invalid(format!(
            "{field}: at most {max} characters"
        )));
    }
    Ok(value.to_owned())
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())
}

impl Knowledge {
    /// Knowledge bases need one index every instance sees: inside Lambda that is OpenSearch.
    fn require_shared_index(&self) -> Result<(), DomainError> {
        if self.search.is_shared() {
            Ok(())
        } else {
            Err(DomainError::Unavailable(
                "knowledge bases need a search service every instance shares: deploy with \
                 EnableOpenSearch=true (--es_url)"
                    .into(),
            ))
        }
    }

    pub fn new(
        store: Arc<dyn KnowledgeStore>,
        objects: Arc<dyn ObjectStore>,
        search: Arc<dyn SearchIndex>,
        embedder: Option<Arc<dyn TextEmbedder>>,
    ) -> Self {
        Self {
            store,
            objects,
            search,
            embedder,
        }
    }

    pub async fn create(
        &self,
        owner: &str,
        new: NewKnowledgeBase,
    ) -> Result<KnowledgeBaseRecord, DomainError> {
        self.require_shared_index()?;
        let kind = match new.kind.trim() {
            "" | "document" => "document",
            "qa" => "qa",
            other => {
                return Err(DomainError::invalid(format!(
                    "type: `{other}` is not document or qa"
                )));
            }
        };
        let now = now_secs();
        let base = KnowledgeBaseRecord {
            id: new_id(),
            owner: owner.to_owned(),
            name: check_text("name", &new.name, 100, true)?,
            kind: kind.to_owned(),
            intro: check_text("intro", &new.intro, 2000, false)?,
            language: check_text("language", &new.language, 32, false)?,
            documents: Vec::new(),
            revision: 1,
            created_at: now,
            updated_at: now,
        };
        if !self.store.create_knowledge_base(&base).await? {
            return Err(DomainError::Conflict(
                "a knowledge base with this id exists".into(),
            ));
        }
        Ok(base)
    }

    /// The owner's bases whose name contains `name` (any case) and of `kind` when given.
    pub async fn list(
        &self,
        owner: &str,
        name: Option<&str>,
        kind: Option<&str>,
    ) -> Result<Vec<KnowledgeBaseRecord>, DomainError> {
        let name = name.map(str::to_lowercase).filter(|name| !name.is_empty());
        let kind = kind.filter(|kind| !kind.is_empty());
        Ok(self
            .store
            .owner_knowledge_bases(owner)
            .await?
            .into_iter()
            .filter(|base| {
                name.as_ref()
                    .is_none_or(|name| base.name.to_lowercase().contains(name))
                    && kind.is_none_or(|kind| base.kind == kind)
            })
            .collect())
    }

    pub async fn get(&self, owner: &str, id: &str) -> Result<KnowledgeBaseRecord, DomainError> {
        let missing = || DomainError::NotFound(format!("no knowledge base {id}"));
        if !valid_id(id) {
            return Err(missing());
        }
        self.store
            .knowledge_base(owner, id)
            .await?
            .ok_or_else(missing)
    }

    /// Reads the base, applies `change`, and writes it back unless another write came first
    /// (then again, on the newer base).
    async fn modify<T>(
        &self,
        owner: &str,
        id: &str,
        mut change: impl FnMut(&mut KnowledgeBaseRecord) -> Result<T, DomainError>,
    ) -> Result<(KnowledgeBaseRecord, T), DomainError> {
        for _ in 0..WRITE_RETRIES {
            let mut base = self.get(owner, id).await?;
            let outcome = change(&mut base)?;
            base.updated_at = now_secs();
            if self.store.update_knowledge_base(&base).await? {
                base.revision += 1;
                return Ok((base, outcome));
            }
        }
        Err(DomainError::Conflict(
            "the knowledge base kept changing; try again".into(),
        ))
    }

    pub async fn update(
        &self,
        owner: &str,
        id: &str,
        change: KnowledgeBaseChange,
    ) -> Result<KnowledgeBaseRecord, DomainError> {
        let name = change
            .name
            .map(|name| check_text("name", &name, 100, true))
            .transpose()?;
        let intro = change
            .intro
            .map(|intro| check_text("intro", &intro, 2000, false))
            .transpose()?;
        let language = change
            .language
            .map(|language| check_text("language", &language, 32, false))
            .transpose()?;
        let (base, ()) = self
            .modify(owner, id, |base| {
                if let Some(name) = &name {
                    base.name.clone_from(name);
                }
                if let Some(intro) = &intro {
                    base.intro.clone_from(intro);
                }
                if let Some(language) = &language {
                    base.language.clone_from(language);
                }
                Ok(())
            })
            .await?;
        Ok(base)
    }

    pub async fn delete(&self, owner: &str, id: &str) -> Result<(), DomainError> {
        self.get(owner, id).await?;
        self.forget_documents(owner, id, None).await?;
        if !self.store.delete_knowledge_base(owner, id).await? {
            return Err(DomainError::NotFound(format!("no knowledge base {id}")));
        }
        Ok(())
    }

    /// Removes every document of the base, keeping the base.
    pub async fn clear(&self, owner: &str, id: &str) -> Result<(), DomainError> {
        self.modify(owner, id, |base| {
            base.documents.clear();
            Ok(())
        })
        .await?;
        self.forget_documents(owner, id, None).await
    }

    /// Removes the passages and stored files of one document, or of all of a base's.
    async fn forget_documents(
        &self,
        owner: &str,
        base_id: &str,
        doc_id: Option<&str>,
    ) -> Result<(), DomainError> {
        self.search
            .remove(&Removal {
                owner: owner.to_owned(),
                collection: Collection::Knowledge,
                scope: base_id.to_owned(),
                parent: doc_id.map(str::to_owned),
            })
            .await
            .map_err(search_unavailable)?;
        let folder = match doc_id {
            Some(doc_id) => format!("{FOLDER}/{base_id}/{doc_id}"),
            None => format!("{FOLDER}/{base_id}"),
        };
        let prefix = ObjectKey::parse(&folder).map_err(storage_unavailable)?;
        self.objects
            .delete_prefix(&prefix)
            .await
            .map_err(storage_unavailable)?;
        Ok(())
    }

    /// Stores the files and queues them for indexing; with `replace`, a document of the same
    /// name is replaced. Returns the task id the documents carry.
    pub async fn add_documents(
        &self,
        owner: &str,
        id: &str,
        replace: bool,
        files: Vec<NewDocument>,
    ) -> Result<String, DomainError> {
        self.require_shared_index()?;
        if files.is_empty() {
            return Err(DomainError::invalid("files: at least one file"));
        }
        let base = self.get(owner, id).await?;
        let task_id = new_id();
        let now = now_secs();
        let mut added = Vec::new();
        for file in files {
            let name = safe_file_name(&file.name);
            let extension = name
                .rsplit_once('.')
                .map(|(_, extension)| extension.to_ascii_lowercase())
                .unwrap_or_default();
            let pdf = extension == PDF_EXTENSION;
            if !pdf && !TEXT_EXTENSIONS.contains(&extension.as_str()) {
                return Err(DomainError::invalid(format!(
                    "files: {name}: only {}, pdf files can be indexed",
                    TEXT_EXTENSIONS.join(", ")
                )));
            }
            if file.bytes.len() > MAX_DOCUMENT_BYTES {
                return Err(DomainError::invalid(format!(
                    "files: {name}: larger than {} MiB",
                    MAX_DOCUMENT_BYTES / 1024 / 1024
                )));
            }
            if pdf && !file.bytes.starts_with(b"%PDF-") {
                return Err(DomainError::invalid(format!("files: {name}: not a PDF")));
            }
            if !pdf && std::str::from_utf8(&file.bytes).is_err() {
                return Err(DomainError::invalid(format!(
                    "files: {name}: not UTF-8 text"
                )));
            }
            let doc_id = new_id();
            let key = ObjectKey::parse(&format!("{FOLDER}/{}/{doc_id}/{name}", base.id))
                .map_err(|_| DomainError::invalid("files: the file name cannot be stored"))?;
            added.push((
                KnowledgeDocRecord {
                    id: doc_id,
                    name,
                    object_key: key.as_str().to_owned(),
                    size: file.bytes.len() as u64,
                    status: DocStatus::Waiting,
                    attempts: 0,
                    error: None,
                    task_id: task_id.clone(),
                    passages: 0,
                    created_at: now,
                    updated_at: now,
                },
                key,
                file.bytes,
            ));
        }
        for (_, key, bytes) in &added {
            self.objects
                .put(key, bytes.clone())
                .await
                .map_err(storage_unavailable)?;
        }
        let documents: Vec<KnowledgeDocRecord> =
            added.into_iter().map(|(record, _, _)| record).collect();
        let (_, replaced) = self
            .modify(owner, id, |base| {
                let mut replaced = Vec::new();
                if replace {
                    base.documents.retain(|old| {
                        let same = documents.iter().any(|new| new.name == old.name);
                        if same {
                            replaced.push(old.id.clone());
                        }
                        !same
                    });
                }
                if base.documents.len() + documents.len() > MAX_DOCUMENTS {
                    return Err(DomainError::invalid(format!(
                        "files: a knowledge base holds at most {MAX_DOCUMENTS} documents"
                    )));
                }
                base.documents.extend(documents.iter().cloned());
                Ok(replaced)
            })
            .await?;
        for doc_id in replaced {
            self.forget_documents(owner, id, Some(&doc_id)).await?;
        }
        Ok(task_id)
    }

    /// The base holding the owner's document `doc_id`.
    async fn base_of_document(
        &self,
        owner: &str,
        doc_id: &str,
    ) -> Result<KnowledgeBaseRecord, DomainError> {
        let missing = || DomainError::NotFound(format!("no document {doc_id}"));
        if !valid_id(doc_id) {
            return Err(missing());
        }
        self.store
            .owner_knowledge_bases(owner)
            .await?
            .into_iter()
            .find(|base| base.documents.iter().any(|doc| doc.id == doc_id))
            .ok_or_else(missing)
    }

    pub async fn delete_document(&self, owner: &str, doc_id: &str) -> Result<(), DomainError> {
        let base = self.base_of_document(owner, doc_id).await?;
        self.modify(owner, &base.id, |base| {
            base.documents.retain(|doc| doc.id != doc_id);
            Ok(())
        })
        .await?;
        self.forget_documents(owner, &base.id, Some(doc_id)).await
    }

    /// Queues a document for indexing again, whatever its state.
    pub async fn redo_document(&self, owner: &str, doc_id: &str) -> Result<(), DomainError> {
        let base = self.base_of_document(owner, doc_id).await?;
        self.modify(owner, &base.id, |base| {
            if let Some(doc) = base.documents.iter_mut().find(|doc| doc.id == doc_id) {
                doc.status = DocStatus::Waiting;
                doc.attempts = 0;
                doc.error = None;
                doc.updated_at = now_secs();
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// The best passages of the base for `query`.
    pub async fn retrieve(
        &self,
        owner: &str,
        id: &str,
        query: &str,
        top_k: usize,
    ) -> Result<Vec<SearchHit>, DomainError> {
        let base = self.get(owner, id).await?;
        self.search_bases(owner, vec![base.id], query, top_k).await
    }

    pub(crate) async fn search_bases(
        &self,
        owner: &str,
        base_ids: Vec<String>,
        query: &str,
        top_k: usize,
    ) -> Result<Vec<SearchHit>, DomainError> {
        self.require_shared_index()?;
        let query = check_text("query", query, 2000, true)?;
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(DomainError::invalid(format!("top_k: 1 to {MAX_TOP_K}")));
        }
        let vector = match &self.embedder {
            Some(embedder) => embedder
                .embed(std::slice::from_ref(&query))
                .await
                .map_err(search_unavailable)?
                .pop(),
            None => None,
        };
        self.search
            .search(&SearchQuery {
                owner: owner.to_owned(),
                collection: Collection::Knowledge,
                scopes: base_ids,
                text: query,
                all_words: false,
                vector,
                limit: top_k,
            })
            .await
            .map_err(search_unavailable)
    }

    /// The owner's bases a run names; one that is not theirs is a 404.
    pub async fn for_run(
        &self,
        owner: &str,
        ids: &[String],
    ) -> Result<Vec<RunKnowledgeBase>, DomainError> {
        if !ids.is_empty() {
            self.require_shared_index()?;
        }
        let mut bases = Vec::new();
        for id in ids {
            let base = self.get(owner, id).await.map_err(|error| match error {
                DomainError::NotFound(_) => DomainError::NotFound(format!(
                    "available_knowledge_bases: no knowledge base {id}"
                )),
                other => other,
            })?;
            bases.push(RunKnowledgeBase {
                index_name: index_name(&base.id),
                id: base.id,
                name: base.name,
                intro: base.intro,
            });
        }
        Ok(bases)
    }

    /// Indexes up to `limit` waiting documents, starting none after `deadline`.
    pub async fn index_pending(
        &self,
        limit: usize,
        deadline: tokio::time::Instant,
    ) -> Result<IndexReport, DomainError> {
        let mut report = IndexReport {
            complete: true,
            ..IndexReport::default()
        };
        let mut taken = 0;
        let pending = self.store.pending_knowledge_bases(limit.max(1)).await?;
        if !pending.is_empty() {
            self.require_shared_index()?;
        }
        for base in pending {
            let now = now_secs();
            let due: Vec<String> = base
                .documents
                .iter()
                .filter(|doc| {
                    doc.status == DocStatus::Waiting
                        || (doc.status == DocStatus::Running
                            && now - doc.updated_at > STALE_RUNNING_SECS)
                })
                .map(|doc| doc.id.clone())
                .collect();
            for doc_id in due {
                if taken >= limit || tokio::time::Instant::now() >= deadline {
                    report.complete = false;
                    return Ok(report);
                }
                taken += 1;
                self.index_document(&base.owner, &base.id, &doc_id, &mut report)
                    .await?;
            }
        }
        Ok(report)
    }

    async fn index_document(
        &self,
        owner: &str,
        base_id: &str,
        doc_id: &str,
        report: &mut IndexReport,
    ) -> Result<(), DomainError> {
        // Claim it: only one job indexes a document at a time.
        let claimed = self
            .modify(owner, base_id, |base| {
                let now = now_secs();
                let Some(doc) = base.documents.iter_mut().find(|doc| doc.id == doc_id) else {
                    return Ok(None);
                };
                let free = doc.status == DocStatus::Waiting
                    || (doc.status == DocStatus::Running
                        && now - doc.updated_at > STALE_RUNNING_SECS);
                if !free {
                    return Ok(None);
                }
                doc.status = DocStatus::Running;
                doc.attempts += 1;
                doc.updated_at = now;
                Ok(Some((doc.clone(), base.kind.clone())))
            })
            .await;
        let (doc, kind) = match claimed {
            Ok((_, Some(claimed))) => claimed,
            Ok((_, None)) | Err(DomainError::NotFound(_)) => return Ok(()),
            Err(error) => return Err(error),
        };
        let outcome = self.passages_of(owner, base_id, &doc, &kind).await;
        let outcome = match outcome {
            Ok(passages) => self.store_passages(owner, base_id, &doc, passages).await,
            Err(error) => Err(error),
        };
        let retrying = outcome.is_err() && doc.attempts < MAX_ATTEMPTS;
        let failure = outcome.as_ref().err().cloned();
        let finished = self
            .modify(owner, base_id, |base| {
                if let Some(stored) = base.documents.iter_mut().find(|stored| stored.id == doc.id) {
                    stored.updated_at = now_secs();
                    match &outcome {
                        Ok(count) => {
                            stored.status = DocStatus::Indexed;
                            stored.passages = *count;
                            stored.error = None;
                        }
                        Err(reason) => {
                            stored.status = if retrying {
                                DocStatus::Waiting
                            } else {
                                DocStatus::Failed
                            };
                            stored.error = Some(reason.clone());
                        }
                    }
                }
                Ok(())
            })
            .await;
        match finished {
            Ok(_) | Err(DomainError::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
        match failure {
            None => report.indexed.push(doc.id),
            Some(error) => {
                tracing::warn!(doc_id = %doc.id, error = %error, retrying, "indexing a document failed");
                report.failed.push(IndexFailure {
                    doc_id: doc.id,
                    error,
                    retrying,
                });
            }
        }
        Ok(())
    }

    /// The document's passages, read from the object store and split.
    async fn passages_of(
        &self,
        owner: &str,
        base_id: &str,
        doc: &KnowledgeDocRecord,
        kind: &str,
    ) -> Result<Vec<SearchDocument>, String> {
        let key = ObjectKey::parse(&doc.object_key).map_err(|_| "the stored key is invalid")?;
        let read = self
            .objects
            .get(&key)
            .await
            .map_err(|_| "the file storage is not available".to_owned())?
            .ok_or("the uploaded file is gone")?;
        let bytes: Vec<Bytes> = read
            .body
            .try_collect()
            .await
            .map_err(|_| "the file could not be read".to_owned())?;
        let bytes = bytes.concat();
        let text = if doc.name.to_ascii_lowercase().ends_with(".pdf") {
            pdf_text(bytes).await?
        } else {
            String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text")?
        };
        let pieces = if kind == "qa" {
            qa_pairs(&text)?
        } else {
            passages(&text)
                .into_iter()
                .map(|text| (doc.name.clone(), text))
                .collect()
        };
        Ok(pieces
            .into_iter()
            .enumerate()
            .map(|(at, (title, text))| SearchDocument {
                id: format!("{}-{at}", doc.id),
                owner: owner.to_owned(),
                collection: Collection::Knowledge,
                scope: base_id.to_owned(),
                parent: doc.id.clone(),
                title,
                text,
                source: serde_json::json!({
                    "doc_id": doc.id,
                    "doc_name": doc.name,
                    "path": doc.object_key,
                    "passage": at,
                }),
                vector: None,
            })
            .collect())
    }

    async fn store_passages(
        &self,
        owner: &str,
        base_id: &str,
        doc: &KnowledgeDocRecord,
        mut passages: Vec<SearchDocument>,
    ) -> Result<u32, String> {
        if let Some(embedder) = &self.embedder {
            let texts: Vec<String> = passages
                .iter()
                .map(|passage| format!("{}\n{}", passage.title, passage.text))
                .collect();
            let vectors = embedder.embed(&texts).await.map_err(|error| {
                tracing::warn!(error = %crate::telemetry::chain(&error), "embeddings failed");
                "the embeddings endpoint failed".to_owned()
            })?;
            for (passage, vector) in passages.iter_mut().zip(vectors) {
                passage.vector = Some(vector);
            }
        }
        let count = passages.len() as u32;
        let unavailable = |error: SearchError| {
            tracing::warn!(error = %crate::telemetry::chain(&error), "search failed");
            "the search index is not available".to_owned()
        };
        self.search
            .remove(&Removal {
                owner: owner.to_owned(),
                collection: Collection::Knowledge,
                scope: base_id.to_owned(),
                parent: Some(doc.id.clone()),
            })
            .await
            .map_err(unavailable)?;
        self.search.upsert(passages).await.map_err(unavailable)?;
        Ok(count)
    }
}

/// The text layer of a PDF, read off the async threads; a PDF the reader cannot handle (it may
/// panic on malformed files) fails this document only.
#[cfg(feature = "pdf")]
async fn pdf_text(bytes: Vec<u8>) -> Result<String, String> {
    let read =
        tokio::task::spawn_blocking(move || pdf_extract::extract_text_from_mem(&bytes)).await;
    match read {
        Ok(Ok(text)) if !text.trim().is_empty() => Ok(text),
        Ok(Ok(_)) => Err("the PDF has no text layer (a scanned document?)".into()),
        Ok(Err(_)) | Err(_) => Err("the PDF could not be read".into()),
    }
}

#[cfg(not(feature = "pdf"))]
async fn pdf_text(_bytes: Vec<u8>) -> Result<String, String> {
    Err("this function cannot read PDF documents; the indexing job (Jobs, sage-local) can".into())
}

/// Splits text into passages of about [`PASSAGE_CHARS`] characters at paragraph breaks, a long
/// paragraph at line or word breaks.
pub fn passages(text: &str) -> Vec<String> {
    let mut passages = Vec::new();
    let mut current = String::new();
    let mut push = |piece: &str, current: &mut String| {
        if !current.is_empty() && current.chars().count() + piece.chars().count() > PASSAGE_CHARS {
            passages.push(std::mem::take(current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(piece);
    };
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if paragraph.chars().count() <= PASSAGE_CHARS {
            push(paragraph, &mut current);
            continue;
        }
        let mut piece = String::new();
        for word in paragraph.split_inclusive(char::is_whitespace) {
            if piece.chars().count() + word.chars().count() > PASSAGE_CHARS && !piece.is_empty() {
                push(piece.trim(), &mut current);
                piece.clear();
            }
            piece.push_str(word);
        }
        if !piece.trim().is_empty() {
            push(piece.trim(), &mut current);
        }
    }
    if !current.is_empty() {
        passages.push(current);
    }
    passages
}

/// Q&A pairs: a JSON array of `{question, answer}`, or blocks of `Q: ...` / `A: ...` lines.
fn qa_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    #[derive(serde::Deserialize)]
    struct Pair {
        question: String,
        answer: String,
    }
    if text.trim_start().starts_with('[') {
        let pairs: Vec<Pair> = serde_json::from_str(text)
            .map_err(|error| format!("not a JSON list of question/answer pairs: {error}"))?;
        return Ok(pairs
            .into_iter()
            .map(|pair| {
                (
                    pair.question.clone(),
                    format!("{}\n{}", pair.question, pair.answer),
                )
            })
            .collect());
    }
    let mut pairs = Vec::new();
    for block in text.split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
        let question = block
            .lines()
            .find_map(|line| line.trim().strip_prefix("Q:"))
            .map(str::trim);
        let answer_at = block.find("A:");
        match (question, answer_at) {
            (Some(question), Some(at)) => pairs.push((
                question.to_owned(),
                format!("{question}\n{}", block[at + 2..].trim()),
            )),
            _ => {
                return Err(
                    "a Q&A file holds blocks of `Q: ...` and `A: ...` lines, or a JSON list of \
                     {question, answer}"
                        .into(),
                );
            }
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_split_at_paragraphs_and_nothing_is_lost() {
        let paragraph = "word ".repeat(100);
        let text = [paragraph.trim(); 10].join("\n\n");
        let split = passages(&text);
        assert!(split.len() > 1);
        assert!(split.iter().all(|p| p.chars().count() <= PASSAGE_CHARS));
        let words: usize = split.iter().map(|p| p.split_whitespace().count()).sum();
        assert_eq!(words, 1000);
    }

    #[test]
    fn qa_files_are_pairs_in_either_form() {
        let text = "Q: What is Sage?\nA: An agent platform.\n\nQ: Who runs it?\nA: You.";
        let pairs = qa_pairs(text).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[1].0, "Who runs it?");
        let json = r#"[{"question": "Q1", "answer": "A1"}]"#;
        assert_eq!(qa_pairs(json).unwrap()[0].1, "Q1\nA1");
        assert!(qa_pairs("just prose").is_err());
    }

    #[test]
    fn index_names_are_stable_and_short() {
        let name = index_name("0123456789abcdef0123456789abcdef");
        assert_eq!(name, index_name("0123456789abcdef0123456789abcdef"));
        assert!(name.starts_with("kdb_") && name.len() == 12);
    }
}
