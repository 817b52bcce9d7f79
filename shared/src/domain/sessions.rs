//! Conversations (`api.md` §4): list, read, share, rename, delete, interrupt, status, files.

use std::sync::Arc;

use crate::context::merge_events;
use crate::domain::DomainError;
use crate::domain::files::{FileDownload, Files};
use crate::search::{Collection, Removal, SearchDocument, SearchIndex, SearchQuery};
use crate::store::{
    AccountStore, EventLog, RunControl, RunStatus, SessionQuery, SessionRecord, SessionStore,
    SummaryStore, query_sessions_within,
};
use crate::util::{SessionId, UserId, iso_time, now_secs};
use crate::wire::api::{Conversation, FileEntry, SessionList, SessionSummary, TaskStatus};

pub const MAX_PAGE_SIZE: u64 = 100;
const MAX_TITLE_CHARS: usize = 200;
/// The most conversations one search finds.
const MAX_SEARCH_HITS: usize = 1000;

/// The conversation service.
#[derive(Clone)]
pub struct Sessions {
    sessions: Arc<dyn SessionStore>,
    accounts: Arc<dyn AccountStore>,
    events: Arc<dyn EventLog>,
    runs: Arc<dyn RunControl>,
    summaries: Arc<dyn SummaryStore>,
    files: Files,
    search: Arc<dyn SearchIndex>,
}

fn conversation_document(session: &SessionRecord) -> SearchDocument {
    SearchDocument {
        id: format!("conversation-{}", session.session_id),
        owner: session.user_id.clone(),
        collection: Collection::Conversations,
        scope: String::new(),
        parent: session.session_id.clone(),
        title: session.title.clone(),
        // The title too, so that every word of a search can be found in one field.
        text: format!("{}\n{}", session.title, session.search_text),
        source: serde_json::Value::Null,
        vector: None,
    }
}

pub fn summary(session: &SessionRecord, text: Option<String>) -> SessionSummary {
    SessionSummary {
        session_id: session.session_id.clone(),
        user_id: session.user_id.clone(),
        agent_id: session.agent_id.clone(),
        agent_name: session.agent_name.clone(),
        title: session.title.clone(),
        message_count: session.message_count,
        user_count: session.user_count,
        agent_count: session.agent_count,
        created_at: iso_time(session.created_at),
        updated_at: iso_time(session.updated_at),
        status: session.status.as_str(),
        summary: text,
    }
}

impl Sessions {
    pub fn files(&self) -> &Files {
        &self.files
    }

    pub fn new(
        sessions: Arc<dyn SessionStore>,
        accounts: Arc<dyn AccountStore>,
        events: Arc<dyn EventLog>,
        runs: Arc<dyn RunControl>,
        summaries: Arc<dyn SummaryStore>,
        files: Files,
        search: Arc<dyn SearchIndex>,
    ) -> Self {
        Self {
            sessions,
            accounts,
            events,
            runs,
            summaries,
            files,
            search,
        }
    }

    /// Puts the conversation's title and text in the search index as they are stored now. A
    /// search backend that fails is logged; the conversation itself is kept either way.
    pub async fn index_conversation(&self, session_id: &str) {
        match self.sessions.get_session(session_id).await {
            Ok(Some(session)) => self.index_session(&session).await,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%session_id, error = %crate::telemetry::chain(&error), "the conversation was not indexed for search");
            }
        }
    }

    /// Puts this stored state of a conversation in the search index.
    pub async fn index_session(&self, session: &SessionRecord) {
        if let Err(error) = self
            .search
            .upsert(vec![conversation_document(session)])
            .await
        {
            tracing::warn!(session_id = %session.session_id, error = %crate::telemetry::chain(&error), "the conversation was not indexed for search");
        }
    }

    /// The user's conversations that match `text`, by the search index.
    async fn matching(
        &self,
        user: &str,
        text: &str,
    ) -> Result<std::collections::HashSet<String>, DomainError> {
        let hits = self
            .search
            .search(&SearchQuery {
                owner: user.to_owned(),
                collection: Collection::Conversations,
                scopes: Vec::new(),
                text: text.to_owned(),
                all_words: true,
                vector: None,
                limit: MAX_SEARCH_HITS,
            })
            .await
            .map_err(|error| {
                tracing::warn!(error = %crate::telemetry::chain(&error), "conversation search failed");
                DomainError::Unavailable("conversation search is not available; try again".into())
            })?;
        Ok(hits.into_iter().map(|hit| hit.parent).collect())
    }

    /// The session when `user` owns it: not found when there is none, forbidden when it is
    /// someone else's.
    pub async fn owned(
        &self,
        user: &UserId,
        session_id: &SessionId,
    ) -> Result<SessionRecord, DomainError> {
        let session = self
            .sessions
            .get_session(session_id.as_str())
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("no conversation {session_id}")))?;
        if session.user_id != user.as_str() {
            return Err(DomainError::Forbidden(format!(
                "conversation {session_id} belongs to another user"
            )));
        }
        Ok(session)
    }

    pub async fn list(&self, query: &SessionQuery) -> Result<SessionList, DomainError> {
        if query.page == 0 {
            return Err(DomainError::invalid("page: starts at 1"));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&query.page_size) {
            return Err(DomainError::invalid(format!(
                "page_size: between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        // An index only this instance sees (the embedded one inside Lambda) would miss what
        // other instances wrote: then the stored text is scanned instead.
        let matching = match query.search.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() && self.search.is_shared() => {
                Some(self.matching(&query.user_id, text).await?)
            }
            _ => None,
        };
        let page = query_sessions_within(self.sessions.as_ref(), query, matching.as_ref()).await?;
        let mut list = Vec::with_capacity(page.sessions.len());
        for session in &page.sessions {
            list.push(summary(
                session,
                self.summary_text(&session.session_id).await?,
            ));
        }
        let total_pages = page.total.div_ceil(query.page_size);
        Ok(SessionList {
            list,
            total: page.total,
            page: query.page,
            page_size: query.page_size,
            total_pages,
            has_next: query.page < total_pages,
            has_prev: query.page > 1,
        })
    }

    /// The merged conversation; `owner` is `None` for the read-only share view.
    pub async fn messages(
        &self,
        session_id: &SessionId,
        owner: Option<&UserId>,
    ) -> Result<Conversation, DomainError> {
        let session = match owner {
            Some(user) => self.owned(user, session_id).await?,
            None => self
                .sessions
                .get_session(session_id.as_str())
                .await?
                .ok_or_else(|| DomainError::NotFound(format!("no conversation {session_id}")))?,
        };
        let log = self.events.events_after(session_id.as_str(), 0).await?;
        let merged = merge_events(log.iter().map(|stored| &stored.event));
        let mut info = summary(&session, self.summary_text(session_id.as_str()).await?);
        // The record keeps how the last run ended; a live lock says one runs now.
        if self.is_running(session_id).await? {
            info.status = RunStatus::Running.as_str();
        }
        Ok(Conversation {
            conversation_id: session_id.to_string(),
            message_count: merged.len(),
            messages: merged,
            conversation_info: info,
        })
    }

    async fn summary_text(&self, session_id: &str) -> Result<Option<String>, DomainError> {
        Ok(self
            .summaries
            .session_summary(session_id)
            .await?
            .map(|record| record.summary))
    }

    async fn is_running(&self, session_id: &SessionId) -> Result<bool, DomainError> {
        Ok(self
            .runs
            .run_lock(session_id.as_str())
            .await?
            .is_some_and(|lock| lock.is_live()))
    }

    /// Deletes the conversation, its events and its files; refused while it runs.
    pub async fn delete(&self, user: &UserId, session_id: &SessionId) -> Result<(), DomainError> {
        self.owned(user, session_id).await?;
        if self.is_running(session_id).await? {
            return Err(DomainError::Conflict(format!(
                "conversation {session_id} is running; interrupt it first"
            )));
        }
        self.sessions.delete_session(session_id.as_str()).await?;
        let mut deleted = vec![session_id.to_string()];
        for sub in self.sessions.user_sessions(user.as_str()).await? {
            if sub.parent_session_id.as_deref() == Some(session_id.as_str()) {
                self.sessions.delete_session(&sub.session_id).await?;
                deleted.push(sub.session_id);
            }
        }
        if let Err(error) = self.files.delete_session_files(session_id).await {
            tracing::warn!(%session_id, %error, "could not delete the conversation's files");
        }
        for parent in deleted {
            let removal = Removal {
                owner: user.to_string(),
                collection: Collection::Conversations,
                scope: String::new(),
                parent: Some(parent),
            };
            if let Err(error) = self.search.remove(&removal).await {
                tracing::warn!(%session_id, error = %crate::telemetry::chain(&error), "could not remove the conversation from search");
            }
        }
        Ok(())
    }

    pub async fn rename(
        &self,
        user: &UserId,
        session_id: &SessionId,
        title: &str,
    ) -> Result<String, DomainError> {
        let title = title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            return Err(DomainError::invalid(format!(
                "title: 1 to {MAX_TITLE_CHARS} characters"
            )));
        }
        let mut session = self.owned(user, session_id).await?;
        session.title = title.to_owned();
        session.updated_at = now_secs();
        self.sessions.update_session(&session).await?;
        self.index_conversation(session_id.as_str()).await;
        Ok(session.title)
    }

    /// Sets the durable cancel flag; true when a run was running.
    pub async fn interrupt(
        &self,
        user: &UserId,
        session_id: &SessionId,
    ) -> Result<bool, DomainError> {
        self.owned(user, session_id).await?;
        Ok(self.runs.request_cancel(session_id.as_str()).await?)
    }

    /// An operator's kill switch: sets the durable cancel flag of every run of `user` now
    /// running, whichever instance runs it; returns their conversations.
    pub async fn stop_user_runs(&self, user: &UserId) -> Result<Vec<String>, DomainError> {
        let mut stopped = Vec::new();
        for session in self.sessions.user_sessions(user.as_str()).await? {
            let running = self
                .runs
                .run_lock(&session.session_id)
                .await?
                .is_some_and(|lock| lock.is_live());
            if running && self.runs.request_cancel(&session.session_id).await? {
                stopped.push(session.session_id);
            }
        }
        stopped.sort();
        Ok(stopped)
    }

    /// The kill switch for everyone: every account's running runs, and the anonymous user's
    /// (`--no_auth`).
    pub async fn stop_all_runs(&self) -> Result<Vec<String>, DomainError> {
        let mut users = vec![UserId::from_optional(None)];
        users.extend(
            self.accounts
                .list_accounts()
                .await?
                .into_iter()
                .map(|account| UserId::new(account.user_id)),
        );
        let mut stopped = Vec::new();
        for user in users {
            stopped.extend(self.stop_user_runs(&user).await?);
        }
        stopped.sort();
        stopped.dedup();
        Ok(stopped)
    }

    pub async fn status(
        &self,
        user: &UserId,
        session_id: &SessionId,
    ) -> Result<TaskStatus, DomainError> {
        let session = self.owned(user, session_id).await?;
        let lock = self.runs.run_lock(session_id.as_str()).await?;
        let running = lock.as_ref().is_some_and(|lock| lock.is_live());
        Ok(TaskStatus {
            session_id: session_id.to_string(),
            status: if running {
                "running"
            } else {
                session.status.as_str()
            },
            interrupt_requested: running && lock.is_some_and(|lock| lock.cancel_requested),
            updated_at: session.updated_at,
            message_count: session.message_count,
        })
    }

    pub async fn list_files(
        &self,
        user: &UserId,
        session_id: &SessionId,
    ) -> Result<Vec<FileEntry>, DomainError> {
        self.owned(user, session_id).await?;
        self.files.list(session_id).await
    }

    /// A file of the session's workspace, or a folder of it as a zip.
    pub async fn download(
        &self,
        user: &UserId,
        session_id: &SessionId,
        file_path: &str,
    ) -> Result<FileDownload, DomainError> {
        self.owned(user, session_id).await?;
        self.files.open(session_id, file_path).await
    }
}
