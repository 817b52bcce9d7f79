//! The embedded index: every document in memory with its word counts, BM25 over the candidates
//! that pass the filters and brute-force cosine over their vectors. Changes are appended to a
//! journal file (one JSON line each), which is rewritten as a snapshot when it holds more than
//! twice the live documents. Another process using the same file (`sage-local jobs index` beside
//! a running server) is picked up before each use: every use takes the file's lock, and reads
//! what was appended since, or the whole file when it was rewritten (a new file in its place).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{
    Collection, Removal, SearchDocument, SearchError, SearchHit, SearchIndex, SearchQuery,
    rank_hits,
};
use crate::util::words::{bm25_weight, tokenize};

/// Compaction waits until the journal holds this many entries, whatever the live count.
const COMPACTION_FLOOR: usize = 256;

pub struct EmbeddedIndex {
    file: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// How much of the journal file held open `documents` reflects; `None` before it is read.
    read: Option<u64>,
    /// Entries in the journal, live or replaced.
    entries: usize,
    documents: HashMap<String, Indexed>,
    /// Kept open between uses: opening, reading the header and closing cost a dozen system
    /// calls each time, where checking that the path still names this file costs one.
    open: Option<OpenFiles>,
}

struct OpenFiles {
    lock: Arc<File>,
    journal: File,
    journal_id: FileId,
}

/// A file's device and inode: a compaction by any process puts a new file in the journal's
/// place, and an open handle keeps the old inode from being reused while it is held.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: u64,
    inode: u64,
}

impl From<&std::fs::Metadata> for FileId {
    fn from(metadata: &std::fs::Metadata) -> Self {
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    sage_index: u32,
    generation: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Upsert(SearchDocument),
    Remove {
        owner: String,
        collection: Collection,
        scope: String,
        parent: Option<String>,
    },
}

/// A new generation's first line. Handles of this version tell a rewritten journal by its inode;
/// the generation keeps telling it to older versions sharing the file.
fn header_line() -> String {
    let header = Header {
        sage_index: 1,
        generation: uuid::Uuid::new_v4().simple().to_string(),
    };
    let mut line = serde_json::to_string(&header).expect("a header serialises");
    line.push('\n');
    line
}

/// The journal's exclusive lock, held while it is read or written; released on drop.
struct Locked {
    lock: Arc<File>,
}

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.lock.unlock();
    }
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

    fn folder(&self) -> &Path {
        self.file
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.file.clone().into_os_string();
        name.push(".lock");
        PathBuf::from(name)
    }

    fn open_journal(&self) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.file)
    }

    /// The index before journals: one JSON array beside the journal, as `index.json`.
    fn legacy_file(&self) -> Option<PathBuf> {
        (self.file.extension()? == "jsonl").then(|| self.file.with_extension("json"))
    }

    /// Takes the journal's lock, through the lock file kept open unless it was removed.
    fn lock(&self, state: &mut State) -> Result<Locked, SearchError> {
        if let Some(open) = &state.open {
            open.lock.lock()?;
            let locked = Locked {
                lock: open.lock.clone(),
            };
            if open.lock.metadata()?.nlink() > 0 {
                return Ok(locked);
            }
            state.open = None;
        }
        std::fs::create_dir_all(self.folder())?;
        let lock = Arc::new(
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.lock_path())?,
        );
        lock.lock()?;
        let locked = Locked { lock: lock.clone() };
        let journal = self.open_journal()?;
        let journal_id = FileId::from(&journal.metadata()?);
        state.open = Some(OpenFiles {
            lock,
            journal,
            journal_id,
        });
        // A journal not read through this handle yet is read from its header.
        state.read = None;
        Ok(locked)
    }

    /// Takes the journal's lock and brings `state` up to the journal: what was appended since
    /// the last read, or all of it when it was rewritten.
    fn sync(&self, state: &mut State) -> Result<Locked, SearchError> {
        let locked = self.lock(state)?;
        let on_disk = match std::fs::metadata(&self.file) {
            Ok(metadata) => Some(metadata),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(error.into()),
        };
        let open = state.open.as_mut().expect("opened by lock");
        match &on_disk {
            Some(metadata) if FileId::from(metadata) == open.journal_id => {}
            _ => {
                open.journal = self.open_journal()?;
                open.journal_id = FileId::from(&open.journal.metadata()?);
                state.read = None;
            }
        }
        let length = match &on_disk {
            Some(metadata) if FileId::from(metadata) == open.journal_id => metadata.len(),
            _ => open.journal.metadata()?.len(),
        };
        if length == 0 {
            return self.start_journal(state, locked);
        }
        match &state.read {
            Some(read) if *read == length => return Ok(locked),
            // Shorter than what was read: cut by another handle; read it again from the start.
            Some(read) if *read > length => state.read = None,
            _ => {}
        }
        let journal = &mut open.journal;
        let start = match state.read {
            Some(read) => read,
            None => {
                let mut header = [0u8; 4096];
                journal.seek(SeekFrom::Start(0))?;
                let header_length = journal.read(&mut header)?;
                let line_end = header[..header_length]
                    .iter()
                    .position(|byte| *byte == b'\n')
                    .ok_or_else(|| std::io::Error::other("the index journal has no header line"))?;
                serde_json::from_slice::<Header>(&header[..line_end])?;
                state.documents.clear();
                state.entries = 0;
                line_end as u64 + 1
            }
        };
        let mut bytes = Vec::new();
        journal.seek(SeekFrom::Start(start))?;
        journal.read_to_end(&mut bytes)?;
        let complete = bytes
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |at| at + 1);
        if complete < bytes.len() {
            tracing::warn!(
                file = %self.file.display(),
                "the search index's journal ended inside an entry (a write was cut); dropped it"
            );
            journal.set_len(start + complete as u64)?;
        }
        for line in bytes[..complete].split(|byte| *byte == b'\n') {
            if !line.is_empty() {
                state.apply(serde_json::from_slice(line)?);
            }
        }
        state.read = Some(start + complete as u64);
        Ok(locked)
    }

    /// A journal that is new or empty starts from the index before journals, when there is one.
    fn start_journal(&self, state: &mut State, locked: Locked) -> Result<Locked, SearchError> {
        let legacy = self.legacy_file();
        let documents: Vec<SearchDocument> = match legacy.as_ref().map(std::fs::read) {
            Some(Ok(bytes)) => serde_json::from_slice(&bytes)?,
            Some(Err(error)) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error.into());
            }
            _ => Vec::new(),
        };
        state.documents = documents
            .into_iter()
            .map(|document| (document.id.clone(), Indexed::new(document)))
            .collect();
        self.rewrite(state)?;
        if let Some(legacy) = legacy {
            match std::fs::remove_file(legacy) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(error.into());
                }
                _ => {}
            }
        }
        Ok(locked)
    }

    /// Appends entries to the journal, and rewrites it when most of it is replaced entries.
    fn append(&self, state: &mut State, lines: &[u8], count: usize) -> Result<(), SearchError> {
        let journal = &mut state.open.as_mut().expect("opened by sync").journal;
        if let Err(error) = journal.write_all(lines) {
            // What is in memory is ahead of the file: the next use reads the file again.
            state.read = None;
            return Err(error.into());
        }
        if let Some(read) = state.read.as_mut() {
            *read += lines.len() as u64;
        }
        state.entries += count;
        if state.entries > COMPACTION_FLOOR.max(2 * state.documents.len())
            && let Err(error) = self.rewrite(state)
        {
            tracing::warn!(error = %error, "the search index's journal was not compacted");
        }
        Ok(())
    }

    /// Writes the live documents as a new generation and puts it in the journal's place.
    fn rewrite(&self, state: &mut State) -> Result<(), SearchError> {
        let header = header_line();
        let mut bytes = header.into_bytes();
        for indexed in state.documents.values() {
            push_upsert(&mut bytes, &indexed.document)?;
        }
        let staging = self
            .folder()
            .join(format!(".index-{}.jsonl", uuid::Uuid::new_v4().simple()));
        std::fs::write(&staging, &bytes)?;
        std::fs::rename(&staging, &self.file)?;
        if let Some(open) = state.open.as_mut() {
            open.journal = self.open_journal()?;
            open.journal_id = FileId::from(&open.journal.metadata()?);
        }
        state.entries = state.documents.len();
        state.read = Some(bytes.len() as u64);
        Ok(())
    }

    /// The state, brought up to the journal.
    async fn current(&self) -> Result<tokio::sync::MutexGuard<'_, State>, SearchError> {
        let mut state = self.state.lock().await;
        self.sync(&mut state)?;
        Ok(state)
    }
}

fn push_upsert(bytes: &mut Vec<u8>, document: &SearchDocument) -> Result<(), SearchError> {
    bytes.extend_from_slice(b"{\"upsert\":");
    serde_json::to_writer(&mut *bytes, document)?;
    bytes.extend_from_slice(b"}\n");
    Ok(())
}

impl State {
    fn apply(&mut self, entry: Entry) {
        self.entries += 1;
        match entry {
            Entry::Upsert(document) => {
                self.documents
                    .insert(document.id.clone(), Indexed::new(document));
            }
            Entry::Remove {
                owner,
                collection,
                scope,
                parent,
            } => self.remove(&Removal {
                owner,
                collection,
                scope,
                parent,
            }),
        }
    }

    fn remove(&mut self, removal: &Removal) {
        self.documents.retain(|_, indexed| {
            let document = &indexed.document;
            !(document.owner == removal.owner
                && document.collection == removal.collection
                && document.scope == removal.scope
                && removal
                    .parent
                    .as_ref()
                    .is_none_or(|parent| *parent == document.parent))
        });
    }
}

#[async_trait]
impl SearchIndex for EmbeddedIndex {
    #[tracing::instrument(name = "search.upsert", skip_all)]
    async fn upsert(&self, documents: Vec<SearchDocument>) -> Result<(), SearchError> {
        if documents.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().await;
        let _locked = self.sync(&mut state)?;
        let mut lines = Vec::new();
        for document in &documents {
            push_upsert(&mut lines, document)?;
        }
        let count = documents.len();
        for document in documents {
            state
                .documents
                .insert(document.id.clone(), Indexed::new(document));
        }
        self.append(&mut state, &lines, count)
    }

    #[tracing::instrument(name = "search.remove", skip_all)]
    async fn remove(&self, removal: &Removal) -> Result<u64, SearchError> {
        let mut state = self.state.lock().await;
        let _locked = self.sync(&mut state)?;
        let before = state.documents.len();
        state.remove(removal);
        let removed = (before - state.documents.len()) as u64;
        if removed > 0 {
            let mut line = serde_json::to_vec(&Entry::Remove {
                owner: removal.owner.clone(),
                collection: removal.collection,
                scope: removal.scope.clone(),
                parent: removal.parent.clone(),
            })?;
            line.push(b'\n');
            self.append(&mut state, &line, 1)?;
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
