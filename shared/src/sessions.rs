//! Conversations (`api.md` §4): list, read, share, rename, delete, interrupt, status, files.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::{ApiError, now_secs};
use crate::history::merge_events;
use crate::store::{SessionQuery, SessionRecord, query_sessions};

pub const MAX_PAGE_SIZE: u64 = 100;
const MAX_TITLE_CHARS: usize = 200;

/// Session ids name folders in the workspace: keep them to characters that cannot escape it.
pub fn validate_session_id(session_id: &str) -> Result<(), ApiError> {
    let valid = !session_id.is_empty()
        && session_id.len() <= 128
        && !session_id.starts_with('.')
        && session_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "session_id: 1 to 128 characters of letters, digits, '-', '_', '.', ':' \
             (not starting with '.')"
                .into(),
        ))
    }
}

/// The session when `user_id` owns it: 404 when there is none, 403 when it is someone else's.
pub async fn owned_session(
    state: &AppState,
    user_id: &str,
    session_id: &str,
) -> Result<SessionRecord, ApiError> {
    let session = state
        .store
        .get_session(session_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no conversation {session_id}")))?;
    if session.user_id != user_id {
        return Err(ApiError::Forbidden(format!(
            "conversation {session_id} belongs to another user"
        )));
    }
    Ok(session)
}

pub fn summary(session: &SessionRecord) -> Value {
    json!({
        "session_id": session.session_id,
        "user_id": session.user_id,
        "agent_id": session.agent_id,
        "agent_name": session.agent_name,
        "title": session.title,
        "message_count": session.message_count,
        "user_count": session.user_count,
        "agent_count": session.agent_count,
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "status": session.status.as_str(),
    })
}

pub async fn list(state: &AppState, query: &SessionQuery) -> Result<Value, ApiError> {
    let page = query_sessions(state.store.as_ref(), query).await?;
    let total_pages = page.total.div_ceil(query.page_size);
    Ok(json!({
        "list": page.sessions.iter().map(summary).collect::<Vec<_>>(),
        "total": page.total,
        "page": query.page,
        "page_size": query.page_size,
        "total_pages": total_pages,
        "has_next": query.page < total_pages,
        "has_prev": query.page > 1,
    }))
}

/// The merged conversation; `owner` is `None` for the read-only share view.
pub async fn messages(
    state: &AppState,
    session_id: &str,
    owner: Option<&str>,
) -> Result<Value, ApiError> {
    let session = match owner {
        Some(user_id) => owned_session(state, user_id, session_id).await?,
        None => state
            .store
            .get_session(session_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no conversation {session_id}")))?,
    };
    let log = state.store.events_after(session_id, 0).await?;
    let merged = merge_events(log.iter().map(|stored| &stored.event));
    Ok(json!({
        "conversation_id": session_id,
        "messages": merged,
        "message_count": merged.len(),
        "conversation_info": summary(&session),
    }))
}

async fn is_running(state: &AppState, session_id: &str) -> Result<bool, ApiError> {
    Ok(state
        .store
        .run_lock(session_id)
        .await?
        .is_some_and(|lock| lock.is_live()))
}

/// Deletes the conversation, its events and its files; refused while it runs.
pub async fn delete(state: &AppState, user_id: &str, session_id: &str) -> Result<(), ApiError> {
    owned_session(state, user_id, session_id).await?;
    if is_running(state, session_id).await? {
        return Err(ApiError::Conflict(format!(
            "conversation {session_id} is running; interrupt it first"
        )));
    }
    state.store.delete_session(session_id).await?;
    let folder = session_folder(state, session_id);
    match tokio::fs::remove_dir_all(&folder).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(%session_id, %error, "could not delete the conversation's files")
        }
    }
    Ok(())
}

pub async fn rename(
    state: &AppState,
    user_id: &str,
    session_id: &str,
    title: &str,
) -> Result<String, ApiError> {
    let title = title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::BadRequest(format!(
            "title: 1 to {MAX_TITLE_CHARS} characters"
        )));
    }
    let mut session = owned_session(state, user_id, session_id).await?;
    session.title = title.to_owned();
    session.updated_at = now_secs();
    state.store.update_session(&session).await?;
    Ok(session.title)
}

/// Sets the durable cancel flag; true when a run was running.
pub async fn interrupt(
    state: &AppState,
    user_id: &str,
    session_id: &str,
) -> Result<bool, ApiError> {
    owned_session(state, user_id, session_id).await?;
    Ok(state.store.request_cancel(session_id).await?)
}

pub async fn status(state: &AppState, user_id: &str, session_id: &str) -> Result<Value, ApiError> {
    let session = owned_session(state, user_id, session_id).await?;
    let lock = state.store.run_lock(session_id).await?;
    let running = lock.as_ref().is_some_and(|lock| lock.is_live());
    let status = if running {
        "running"
    } else {
        session.status.as_str()
    };
    Ok(json!({
        "session_id": session_id,
        "status": status,
        "interrupt_requested": running && lock.is_some_and(|lock| lock.cancel_requested),
        "updated_at": session.updated_at,
        "message_count": session.message_count,
    }))
}

pub fn session_folder(state: &AppState, session_id: &str) -> PathBuf {
    state.config.workspace.join(session_id)
}

#[derive(Debug, Serialize)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    pub size: u64,
    pub modified_time: f64,
    pub is_directory: bool,
}

fn walk(root: &Path, dir: &Path, entries: &mut Vec<FileEntry>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap_or(&path);
        entries.push(FileEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            path: relative.to_string_lossy().into_owned(),
            size: metadata.len(),
            modified_time: metadata
                .modified()
                .ok()
                .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, |elapsed| elapsed.as_secs_f64()),
            is_directory: metadata.is_dir(),
        });
        if metadata.is_dir() {
            walk(root, &path, entries)?;
        }
    }
    Ok(())
}

pub async fn list_files(
    state: &AppState,
    user_id: &str,
    session_id: &str,
) -> Result<Vec<FileEntry>, ApiError> {
    owned_session(state, user_id, session_id).await?;
    let root = session_folder(state, session_id);
    let mut entries = Vec::new();
    match walk(&root, &root, &mut entries) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(%session_id, %error, "cannot list the conversation's files");
            return Err(ApiError::Unavailable(
                "the file workspace cannot be read".into(),
            ));
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// The file's path inside the session's folder; a path that leaves the folder is 400.
pub async fn file_for_download(
    state: &AppState,
    user_id: &str,
    session_id: &str,
    file_path: &str,
) -> Result<PathBuf, ApiError> {
    owned_session(state, user_id, session_id).await?;
    let escape =
        || ApiError::BadRequest("file_path: must stay inside the conversation's folder".into());
    let requested = Path::new(file_path);
    if requested.is_absolute()
        || requested
            .components()
            .any(|part| matches!(part, std::path::Component::ParentDir))
    {
        return Err(escape());
    }
    let root = session_folder(state, session_id);
    let not_found = || ApiError::NotFound(format!("no file {file_path}"));
    let root = tokio::fs::canonicalize(&root)
        .await
        .map_err(|_| not_found())?;
    let target = tokio::fs::canonicalize(root.join(requested))
        .await
        .map_err(|_| not_found())?;
    if !target.starts_with(&root) {
        return Err(escape());
    }
    if !target.is_file() {
        return Err(not_found());
    }
    Ok(target)
}
