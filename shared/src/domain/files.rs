//! Files in the object store: each session's workspace (key prefix `<session_id>/`, as Sage's
//! `agent_workspace/<session_id>/`), and uploads (`.uploads/<random id>/<name>`), which no
//! session id can name because session ids never start with a dot.

use std::io::{Seek, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::io::ReaderStream;

use crate::blob::{BlobError, ObjectBody, ObjectKey, ObjectStore, RESERVED_FOLDER};
use crate::domain::DomainError;
use crate::util::{SessionId, UserId};
use crate::wire::api::{FileEntry, Uploaded};

const UPLOADS: &str = ".uploads";
/// The longest a presigned URL may live (SigV4's limit).
const URL_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_NAME_CHARS: usize = 100;

/// A file or a zipped folder, read as it is sent.
pub struct FileDownload {
    pub name: String,
    pub content_type: &'static str,
    pub size: Option<u64>,
    pub body: ObjectBody,
}

#[derive(Clone)]
pub struct Files {
    objects: Arc<dyn ObjectStore>,
}

/// Whether a path inside a workspace is in the folder the server keeps for itself.
fn is_reserved(relative: &str) -> bool {
    relative.split('/').next() == Some(RESERVED_FOLDER)
}

fn unavailable(error: BlobError) -> DomainError {
    tracing::warn!(error = %error, source = ?std::error::Error::source(&error), "object storage failed");
    DomainError::Unavailable("the file storage is not available; try again".into())
}

/// A file name safe in a key and a header: its last path segment, letters, digits, `-`, `_`,
/// `.` and spaces as `_`, no leading dot, at most 100 characters.
pub fn safe_file_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    let cleaned: String = cleaned
        .chars()
        .rev()
        .take(MAX_NAME_CHARS)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if cleaned.is_empty() {
        "file".into()
    } else {
        cleaned
    }
}

impl Files {
    pub fn new(objects: Arc<dyn ObjectStore>) -> Self {
        Self { objects }
    }

    /// The store the session workspaces live in (the built-in file tools work there).
    pub fn objects(&self) -> Arc<dyn ObjectStore> {
        self.objects.clone()
    }

    fn session_root(session_id: &SessionId) -> Result<ObjectKey, DomainError> {
        ObjectKey::parse(session_id.as_str()).map_err(unavailable)
    }

    /// The session's files, and the folders they are in, by path.
    pub async fn list(&self, session_id: &SessionId) -> Result<Vec<FileEntry>, DomainError> {
        let root = Self::session_root(session_id)?;
        let objects = self.objects.list(&root).await.map_err(unavailable)?;
        let mut entries: Vec<FileEntry> = Vec::new();
        let mut folders = std::collections::BTreeMap::<String, f64>::new();
        for object in objects {
            let path = object.key.as_str()[root.as_str().len() + 1..].to_owned();
            if is_reserved(&path) {
                continue;
            }
            let mut folder = String::new();
            for segment in path
                .split('/')
                .rev()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                if !folder.is_empty() {
                    folder.push('/');
                }
                folder.push_str(segment);
                let modified = folders.entry(folder.clone()).or_insert(0.0);
                *modified = modified.max(object.modified);
            }
            entries.push(FileEntry {
                name: path.rsplit('/').next().unwrap_or_default().to_owned(),
                path,
                size: object.size,
                modified_time: object.modified,
                is_directory: false,
            });
        }
        entries.extend(folders.into_iter().map(|(path, modified)| FileEntry {
            name: path.rsplit('/').next().unwrap_or_default().to_owned(),
            path,
            size: 0,
            modified_time: modified,
            is_directory: true,
        }));
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// One file of the session, or a folder as a zip; a path that leaves the session's folder
    /// is refused.
    pub async fn open(
        &self,
        session_id: &SessionId,
        file_path: &str,
    ) -> Result<FileDownload, DomainError> {
        let relative = file_path.trim_start_matches("./").trim_end_matches('/');
        let root = Self::session_root(session_id)?;
        let key = root.join(relative).map_err(|_| {
            DomainError::invalid("file_path: must stay inside the conversation's folder")
        })?;
        let not_found = || DomainError::NotFound(format!("no file {file_path}"));
        if is_reserved(relative) {
            return Err(not_found());
        }
        if let Some(read) = self.objects.get(&key).await.map_err(unavailable)? {
            return Ok(FileDownload {
                name: safe_file_name(relative),
                content_type: "application/octet-stream",
                size: Some(read.info.size),
                body: read.body,
            });
        }
        let inside = self.objects.list(&key).await.map_err(unavailable)?;
        if inside.is_empty() {
            return Err(not_found());
        }
        let (size, body) = self.zip(&key, inside).await?;
        Ok(FileDownload {
            name: format!("{}.zip", safe_file_name(relative)),
            content_type: "application/zip",
            size: Some(size),
            body,
        })
    }

    /// Zips the objects into a temporary file, one chunk at a time, and streams the file.
    async fn zip(
        &self,
        folder: &ObjectKey,
        objects: Vec<crate::blob::ObjectInfo>,
    ) -> Result<(u64, ObjectBody), DomainError> {
        let failed = |error: std::io::Error| {
            tracing::warn!(%error, "cannot build the folder's zip");
            DomainError::Unavailable("the folder cannot be zipped; try again".into())
        };
        let file = tempfile::tempfile().map_err(failed)?;
        let mut writer = zip::ZipWriter::new(file);
        for object in objects {
            let name = object.key.as_str()[folder.as_str().len() + 1..].to_owned();
            let Some(read) = self.objects.get(&object.key).await.map_err(unavailable)? else {
                continue;
            };
            writer = blocking(move || {
                writer.start_file(name, zip::write::SimpleFileOptions::default())?;
                Ok(writer)
            })
            .await
            .map_err(failed)?;
            let mut body = read.body;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(unavailable)?;
                writer = blocking(move || {
                    writer.write_all(&chunk)?;
                    Ok(writer)
                })
                .await
                .map_err(failed)?;
            }
        }
        let mut file = blocking(move || Ok(writer.finish()?))
            .await
            .map_err(failed)?;
        let size = blocking(move || {
            let size = file.stream_position()?;
            file.rewind()?;
            Ok((size, file))
        })
        .await
        .map_err(failed)?;
        let (size, file) = size;
        let body = ReaderStream::new(tokio::fs::File::from_std(file))
            .map(|chunk| chunk.map_err(BlobError::from));
        Ok((size, Box::pin(body)))
    }

    pub async fn delete_session_files(&self, session_id: &SessionId) -> Result<(), DomainError> {
        let root = Self::session_root(session_id)?;
        self.objects
            .delete_prefix(&root)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Stores an uploaded file under a random id; its URL is the store's (public or presigned)
    /// or this server's `/api/oss/file/<id>/<name>`.
    pub async fn upload(
        &self,
        user: &UserId,
        file_name: &str,
        bytes: Bytes,
    ) -> Result<Uploaded, DomainError> {
        let name = safe_file_name(file_name);
        let (stem, extension) = match name.rsplit_once('.') {
            Some((stem, extension)) if !stem.is_empty() => {
                (stem.to_owned(), format!(".{extension}"))
            }
            _ => (name.clone(), String::new()),
        };
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day][hour][minute][second]"
            ))
            .unwrap_or_default();
        let stored_name = format!("{stem}_{stamp}{extension}");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let key = ObjectKey::parse(&format!("{UPLOADS}/{id}/{stored_name}"))
            .map_err(|_| DomainError::invalid("file: the file name cannot be stored"))?;
        self.objects.put(&key, bytes).await.map_err(unavailable)?;
        tracing::info!(user = %user, key = %key, "stored an upload");
        let url = match self
            .objects
            .url(&key, URL_LIFETIME)
            .await
            .map_err(unavailable)?
        {
            Some(url) => url,
            None => format!("/api/oss/file/{id}/{stored_name}"),
        };
        Ok(Uploaded { url })
    }

    /// An uploaded file by its id and name (the URL is the capability, as a presigned one is).
    pub async fn open_upload(&self, id: &str, name: &str) -> Result<FileDownload, DomainError> {
        let not_found = || DomainError::NotFound("no such file".into());
        let valid_id = id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit());
        if !valid_id {
            return Err(not_found());
        }
        let key = ObjectKey::parse(&format!("{UPLOADS}/{id}/{name}")).map_err(|_| not_found())?;
        let read = self
            .objects
            .get(&key)
            .await
            .map_err(unavailable)?
            .ok_or_else(not_found)?;
        Ok(FileDownload {
            name: safe_file_name(name),
            content_type: "application/octet-stream",
            size: Some(read.info.size),
            body: read.body,
        })
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, std::io::Error> + Send + 'static,
) -> Result<T, std::io::Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::safe_file_name;

    #[test]
    fn uploaded_names_lose_their_folders_and_odd_characters() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(
            safe_file_name("C:\\Users\\me\\report 1.pdf"),
            "report_1.pdf"
        );
        assert_eq!(safe_file_name(".env"), "env");
        assert_eq!(safe_file_name("..."), "file");
        assert_eq!(safe_file_name("a\u{0}b.txt"), "a_b.txt");
    }
}
