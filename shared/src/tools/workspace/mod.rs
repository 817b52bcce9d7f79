//! Sage's built-in file and plan tools (`file_read`, `file_write`, `file_update`,
//! `search_content_in_file`, `download_file_from_url`, `convert_csv_to_excel`,
//! `extract_text_from_non_text_file`, `todo_write`, `todo_read`), over the session's folder in
//! the object store. Whatever path the model sends, a call reads and writes only inside that folder: paths
//! are relative to it (Sage's `/workspace/` prefix is accepted), and `..`, other absolute paths,
//! backslashes, encoded separators and the reserved `.sage` folder are refused.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{BuiltinTools, JsonObject, ToolCallError, ToolSpec};
use crate::blob::{BlobError, ObjectKey, ObjectStore, RESERVED_FOLDER};

#[cfg(feature = "documents")]
mod documents;
mod download;

pub use crate::util::fetch::DownloadPolicy;

pub const FILE_READ: &str = "file_read";
pub const FILE_WRITE: &str = "file_write";
pub const FILE_UPDATE: &str = "file_update";
pub const SEARCH_CONTENT_IN_FILE: &str = "search_content_in_file";
pub const DOWNLOAD_FILE_FROM_URL: &str = "download_file_from_url";
pub const CONVERT_CSV_TO_EXCEL: &str = "convert_csv_to_excel";
pub const EXTRACT_TEXT: &str = "extract_text_from_non_text_file";
pub const TODO_WRITE: &str = "todo_write";
pub const TODO_READ: &str = "todo_read";

/// The tools of this module, by Sage's names.
pub const WORKSPACE_TOOLS: [&str; 9] = [
    FILE_READ,
    FILE_WRITE,
    FILE_UPDATE,
    SEARCH_CONTENT_IN_FILE,
    DOWNLOAD_FILE_FROM_URL,
    CONVERT_CSV_TO_EXCEL,
    EXTRACT_TEXT,
    TODO_WRITE,
    TODO_READ,
];

const TODO_FILE: &str = ".sage/todo.json";

/// A file the tools read whole is at most this big.
pub const MAX_READ_BYTES: u64 = 4 * 1024 * 1024;
/// What one write may leave in a file.
pub const MAX_WRITE_BYTES: usize = 8 * 1024 * 1024;
/// What `file_read` returns at most; the rest is read by line range.
const MAX_RETURNED_CHARS: usize = 100_000;
const MAX_SEARCH_MATCHES: usize = 200;
const MAX_TODOS: usize = 200;
const MAX_PATTERN_LEN: usize = 4096;

/// The built-in tools of one session's workspace.
pub struct WorkspaceTools {
    objects: Arc<dyn ObjectStore>,
    root: ObjectKey,
    enabled: Vec<&'static str>,
    downloads: DownloadPolicy,
}

/// The workspace tools among `requested` (a run's `available_tools`), for the session's folder;
/// `None` when the request names none of them.
pub fn workspace_tools(
    objects: Arc<dyn ObjectStore>,
    session_id: &str,
    requested: &[String],
    downloads: DownloadPolicy,
) -> Option<Arc<dyn BuiltinTools>> {
    let (root, enabled) = super::session_tools(&WORKSPACE_TOOLS, session_id, requested)?;
    Some(Arc::new(WorkspaceTools {
        objects,
        root,
        enabled,
        downloads,
    }))
}

/// One line of the system prompt for a run that has the file tools.
pub const PROMPT_BLOCK: &str = "Your file tools work in this conversation's workspace folder: \
    give paths relative to it (for example `notes/plan.md`). Files you write there are shown to \
    the user.";

fn invalid(message: impl Into<String>) -> ToolCallError {
    ToolCallError::Execution(message.into())
}

fn store_failed(error: BlobError) -> ToolCallError {
    if let BlobError::InvalidKey(_) = error {
        return invalid("that path is not inside the workspace");
    }
    tracing::warn!(%error, "workspace tool: object store call failed");
    ToolCallError::Unavailable("the workspace storage failed; try again".into())
}

/// A path the model sent, as a key inside `root`; a path that would leave it is refused.
pub fn resolve_path(root: &ObjectKey, raw: &str) -> Result<ObjectKey, ToolCallError> {
    let refused = || {
        invalid(format!(
            "file_path {:?} is not inside the workspace; use a path relative to it, such as \
             notes/plan.md",
            raw.chars().take(200).collect::<String>()
        ))
    };
    let trimmed = raw.trim();
    let relative = trimmed
        .strip_prefix("/workspace/")
        .unwrap_or(trimmed)
        .trim_start_matches("./");
    let lowered = relative.to_ascii_lowercase();
    let encoded_separator = ["%2f", "%5c", "%2e%2e", "%00"]
        .iter()
        .any(|encoded| lowered.contains(encoded));
    if relative.is_empty()
        || relative.starts_with('/')
        || relative.starts_with('~')
        || encoded_separator
    {
        return Err(refused());
    }
    let first = relative.split('/').next().unwrap_or_default();
    if first == RESERVED_FOLDER {
        return Err(refused());
    }
    root.join(relative).map_err(|_| refused())
}

fn text_argument<'a>(arguments: &'a JsonObject, name: &str) -> Result<&'a str, ToolCallError> {
    arguments
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{name}` (a string) is required")))
}

/// An optional whole number; models often send numbers as strings.
fn number_argument(arguments: &JsonObject, name: &str) -> Result<Option<u64>, ToolCallError> {
    match arguments.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("`{name}` must be a whole number of at least 0"))),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("`{name}` must be a whole number of at least 0"))),
        Some(_) => Err(invalid(format!("`{name}` must be a whole number"))),
    }
}

fn flag_argument(arguments: &JsonObject, name: &str) -> bool {
    match arguments.get(name) {
        Some(Value::Bool(flag)) => *flag,
        Some(Value::String(text)) => text.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TodoItem {
    pub id: String,
    pub content: String,
    #[serde(default)]
    pub completed: bool,
}

impl WorkspaceTools {
    fn path_of(&self, raw: &str) -> Result<(ObjectKey, String), ToolCallError> {
        let key = resolve_path(&self.root, raw)?;
        let relative = key.as_str()[self.root.as_str().len() + 1..].to_owned();
        Ok((key, relative))
    }

    /// The object's bytes, or `None` when it does not exist; refused over [`MAX_READ_BYTES`].
    async fn read_bytes(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, ToolCallError> {
        let Some(read) = self.objects.get(key).await.map_err(store_failed)? else {
            return Ok(None);
        };
        if read.info.size > MAX_READ_BYTES {
            return Err(invalid(format!(
                "the file is {} bytes; these tools read files of up to {MAX_READ_BYTES} bytes",
                read.info.size
            )));
        }
        let bytes: Vec<u8> = read
            .body
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
            .map_err(store_failed)?;
        Ok(Some(bytes))
    }

    async fn read_text(&self, raw: &str) -> Result<(ObjectKey, String, String), ToolCallError> {
        let (key, relative) = self.path_of(raw)?;
        let bytes = self
            .read_bytes(&key)
            .await?
            .ok_or_else(|| invalid(format!("no file {relative} in the workspace")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| invalid(format!("{relative} is not a UTF-8 text file")))?;
        Ok((key, relative, text))
    }

    async fn write_text(&self, key: &ObjectKey, text: String) -> Result<(), ToolCallError> {
        if text.len() > MAX_WRITE_BYTES {
            return Err(invalid(format!(
                "the file would be {} bytes; files written by these tools hold at most \
                 {MAX_WRITE_BYTES} bytes",
                text.len()
            )));
        }
        self.objects
            .put(key, Bytes::from(text))
            .await
            .map_err(store_failed)
    }

    async fn file_read(&self, arguments: &JsonObject) -> Result<Value, ToolCallError> {
        let (_, relative, text) = self
            .read_text(text_argument(arguments, "file_path")?)
            .await?;
        let lines: Vec<&str> = text.lines().collect();
        let total = lines.len() as u64;
        let start = number_argument(arguments, "start_line")?
            .unwrap_or(1)
            .max(1);
        let end = number_argument(arguments, "end_line")?
            .unwrap_or(total)
            .min(total);
        if total > 0 && start > total {
            return Err(invalid(format!(
                "start_line {start} is past the end: {relative} has {total} lines"
            )));
        }
        let mut content = String::new();
        let mut last = start.saturating_sub(1);
        for (number, line) in (start..=end).zip(lines.iter().skip(start as usize - 1)) {
            if content.len() + line.len() > MAX_RETURNED_CHARS {
                break;
            }
            content.push_str(line);
            content.push('\n');
            last = number;
        }
        let mut answer = json!({
            "file_path": relative,
            "content": content,
            "start_line": start,
            "end_line": last,
            "total_lines": total,
        });
        if last < end {
            answer["note"] = json!(format!(
                "the answer stops at line {last} (size limit); read on with start_line {}",
                last + 1
            ));
        }
        Ok(answer)
    }

    async fn file_write(&self, arguments: &JsonObject) -> Result<Value, ToolCallError> {
        let (key, relative) = self.path_of(text_argument(arguments, "file_path")?)?;
        let content = text_argument(arguments, "content")?;
        let mode = arguments
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or("overwrite");
        let text = match mode {
            "overwrite" | "w" | "write" => content.to_owned(),
            "append" | "a" => {
                let mut existing = match self.read_bytes(&key).await? {
                    Some(bytes) => String::from_utf8(bytes).map_err(|_| {
                        invalid(format!(
                            "{relative} is not a UTF-8 text file; cannot append"
                        ))
                    })?,
                    None => String::new(),
                };
                existing.push_str(content);
                existing
            }
            other => {
                return Err(invalid(format!(
                    "mode `{other}` is not one of overwrite, append"
                )));
            }
        };
        let size = text.len();
        self.write_text(&key, text).await?;
        Ok(json!({"file_path": relative, "mode": mode, "size": size, "success": true}))
    }

    async fn file_update(&self, arguments: &JsonObject) -> Result<Value, ToolCallError> {
        let (key, relative, text) = self
            .read_text(text_argument(arguments, "file_path")?)
            .await?;
        let pattern = text_argument(arguments, "search_pattern")?;
        let replacement = text_argument(arguments, "replacement")?;
        if pattern.is_empty() || pattern.len() > MAX_PATTERN_LEN {
            return Err(invalid(format!(
                "`search_pattern` must hold 1 to {MAX_PATTERN_LEN} bytes"
            )));
        }
        let (updated, replacements) = if flag_argument(arguments, "use_regex") {
            let regex = regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|error| {
                    invalid(format!("`search_pattern` is not a valid regex: {error}"))
                })?;
            let count = regex.find_iter(&text).count();
            (regex.replace_all(&text, replacement).into_owned(), count)
        } else {
            (
                text.replace(pattern, replacement),
                text.matches(pattern).count(),
            )
        };
        if replacements == 0 {
            return Err(invalid(format!(
                "`search_pattern` was not found in {relative}; nothing changed"
            )));
        }
        self.write_text(&key, updated).await?;
        Ok(json!({"file_path": relative, "replacements": replacements, "success": true}))
    }

    async fn search_content(&self, arguments: &JsonObject) -> Result<Value, ToolCallError> {
        let (_, relative, text) = self
            .read_text(text_argument(arguments, "file_path")?)
            .await?;
        let keywords: Vec<String> = match arguments.get("keywords") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_lowercase)
                .filter(|keyword| !keyword.trim().is_empty())
                .collect(),
            Some(Value::String(one)) => one
                .split(',')
                .map(|keyword| keyword.trim().to_lowercase())
                .filter(|keyword| !keyword.is_empty())
                .collect(),
            _ => Vec::new(),
        };
        if keywords.is_empty() {
            return Err(invalid("`keywords` (a list of words to find) is required"));
        }
        let mut matches = Vec::new();
        let mut total = 0usize;
        for (index, line) in text.lines().enumerate() {
            let lowered = line.to_lowercase();
            let found: Vec<&String> = keywords
                .iter()
                .filter(|keyword| lowered.contains(keyword.as_str()))
                .collect();
            if found.is_empty() {
                continue;
            }
            total += 1;
            if matches.len() < MAX_SEARCH_MATCHES {
                matches.push(json!({
                    "line_number": index + 1,
                    "line": line.chars().take(1000).collect::<String>(),
                    "keywords": found,
                }));
            }
        }
        Ok(json!({"file_path": relative, "total_matches": total, "matches": matches}))
    }

    fn todo_key(&self) -> Result<ObjectKey, ToolCallError> {
        self.root.join(TODO_FILE).map_err(|_| invalid("no plan"))
    }

    async fn todos(&self) -> Result<Vec<TodoItem>, ToolCallError> {
        match self.read_bytes(&self.todo_key()?).await? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| {
                tracing::warn!(root = %self.root, "the stored plan is not a todo list");
                invalid("the stored plan cannot be read")
            }),
            None => Ok(Vec::new()),
        }
    }

    fn plan_answer(todos: &[TodoItem]) -> Value {
        let done = todos.iter().filter(|todo| todo.completed).count();
        json!({"tasks": todos, "total": todos.len(), "completed": done, "pending": todos.len() - done})
    }

    /// Adds the tasks the call names and updates those it names again (by `id`).
    async fn todo_write(&self, arguments: &JsonObject) -> Result<Value, ToolCallError> {
        let tasks = arguments
            .get("tasks")
            .cloned()
            .ok_or_else(|| invalid("`tasks` (a list of {id, content, completed}) is required"))?;
        let tasks: Vec<TodoItem> = serde_json::from_value(tasks).map_err(|error| {
            invalid(format!(
                "`tasks` must be a list of {{id, content, completed}}: {error}"
            ))
        })?;
        let mut todos = self.todos().await?;
        for task in tasks {
            if task.id.trim().is_empty() {
                return Err(invalid("every task needs a non-empty `id`"));
            }
            match todos.iter_mut().find(|todo| todo.id == task.id) {
                Some(todo) => {
                    if !task.content.is_empty() {
                        todo.content = task.content;
                    }
                    todo.completed = task.completed;
                }
                None => todos.push(task),
            }
        }
        if todos.len() > MAX_TODOS {
            return Err(invalid(format!("a plan holds at most {MAX_TODOS} tasks")));
        }
        let body = serde_json::to_vec(&todos).map_err(|_| invalid("the plan cannot be stored"))?;
        self.objects
            .put(&self.todo_key()?, Bytes::from(body))
            .await
            .map_err(store_failed)?;
        Ok(Self::plan_answer(&todos))
    }

    async fn todo_read(&self) -> Result<Value, ToolCallError> {
        Ok(Self::plan_answer(&self.todos().await?))
    }
}

/// Every tool of this module, with Sage's parameters (`/api/tools?type=basic`).
pub fn workspace_tool_specs() -> Vec<ToolSpec> {
    let path = json!({"type": "string", "description": "a path relative to the workspace, e.g. notes/plan.md"});
    vec![
        ToolSpec {
            name: FILE_READ.into(),
            description: "Read a text file of the workspace, whole or by line range (1-based, inclusive).".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "file_path": path,
                    "start_line": {"type": "integer", "minimum": 1},
                    "end_line": {"type": "integer", "minimum": 1},
                },
                "required": ["file_path"],
            }),
        },
        ToolSpec {
            name: FILE_WRITE.into(),
            description: "Write a text file in the workspace: replace it (mode overwrite, the default) or add to its end (mode append). Folders are made as needed.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "file_path": path,
                    "content": {"type": "string"},
                    "mode": {"type": "string", "enum": ["overwrite", "append"]},
                },
                "required": ["file_path", "content"],
            }),
        },
        ToolSpec {
            name: FILE_UPDATE.into(),
            description: "Replace every occurrence of a text (or a regex, with use_regex) in a workspace file.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "file_path": path,
                    "search_pattern": {"type": "string"},
                    "replacement": {"type": "string"},
                    "use_regex": {"type": "boolean"},
                },
                "required": ["file_path", "search_pattern", "replacement"],
            }),
        },
        ToolSpec {
            name: SEARCH_CONTENT_IN_FILE.into(),
            description: "Find the lines of a workspace file that contain any of the keywords (case-insensitive).".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "file_path": path,
                    "keywords": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["file_path", "keywords"],
            }),
        },
        ToolSpec {
            name: DOWNLOAD_FILE_FROM_URL.into(),
            description: "Download a file from a public http(s) URL into the workspace (into working_dir when given), under the URL's file name. Returns its path, size and content type.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "url": {"type": "string", "description": "an http or https URL"},
                    "working_dir": {"type": "string", "description": "a workspace folder to save into; the workspace itself when empty"},
                },
                "required": ["url"],
            }),
        },
        ToolSpec {
            name: CONVERT_CSV_TO_EXCEL.into(),
            description: "Convert a CSV file of the workspace into an Excel workbook (.xlsx): numbers and true/false become number and boolean cells.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "csv_file_path": path,
                    "excel_file_path": {"type": "string", "description": "where to write the .xlsx; next to the CSV when empty"},
                },
                "required": ["csv_file_path"],
            }),
        },
        ToolSpec {
            name: EXTRACT_TEXT.into(),
            description: "Extract the text of a PDF, Word (.docx) or spreadsheet (.xlsx, .xls, .ods) file of the workspace, max_length characters from start_index.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "input_file_path": path,
                    "start_index": {"type": "integer", "minimum": 0},
                    "max_length": {"type": "integer", "minimum": 1},
                },
                "required": ["input_file_path"],
            }),
        },
        ToolSpec {
            name: TODO_WRITE.into(),
            description: "Keep the task's plan: add tasks, or update tasks already in it by id (content, completed). Returns the whole plan.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "tasks": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "content": {"type": "string"},
                                "completed": {"type": "boolean"},
                            },
                            "required": ["id", "content"],
                        },
                    },
                },
                "required": ["tasks"],
            }),
        },
        ToolSpec {
            name: TODO_READ.into(),
            description: "Read the task's plan: every task with whether it is done.".into(),
            parameters: json!({"type": "object", "properties": {}}),
        },
    ]
}

#[async_trait]
impl BuiltinTools for WorkspaceTools {
    fn specs(&self) -> Vec<ToolSpec> {
        workspace_tool_specs()
            .into_iter()
            .filter(|spec| self.enabled.contains(&spec.name.as_str()))
            .collect()
    }

    async fn call(&self, tool: &str, arguments: JsonObject) -> Result<Value, ToolCallError> {
        if !self.enabled.contains(&tool) {
            return Err(ToolCallError::NotFound(tool.to_owned()));
        }
        match tool {
            FILE_READ => self.file_read(&arguments).await,
            FILE_WRITE => self.file_write(&arguments).await,
            FILE_UPDATE => self.file_update(&arguments).await,
            SEARCH_CONTENT_IN_FILE => self.search_content(&arguments).await,
            DOWNLOAD_FILE_FROM_URL => self.download(&arguments).await,
            #[cfg(feature = "documents")]
            CONVERT_CSV_TO_EXCEL => self.csv_to_excel(&arguments).await,
            #[cfg(feature = "documents")]
            EXTRACT_TEXT => self.extract_text(&arguments).await,
            #[cfg(not(feature = "documents"))]
            CONVERT_CSV_TO_EXCEL | EXTRACT_TEXT => Err(invalid(format!(
                "{tool} is not in this build (cargo feature `documents`)"
            ))),
            TODO_WRITE => self.todo_write(&arguments).await,
            TODO_READ => self.todo_read().await,
            other => Err(ToolCallError::NotFound(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_session_folder() {
        let root = ObjectKey::parse("session_1").unwrap();
        for (raw, key) in [
            ("notes/plan.md", "session_1/notes/plan.md"),
            ("./a.txt", "session_1/a.txt"),
            ("/workspace/a.txt", "session_1/a.txt"),
            (" report.md ", "session_1/report.md"),
            ("100%.txt", "session_1/100%.txt"),
        ] {
            assert_eq!(resolve_path(&root, raw).unwrap().as_str(), key, "{raw}");
        }
        for raw in [
            "",
            "../session_2/a.txt",
            "notes/../../session_2/a.txt",
            "/etc/passwd",
            "/workspace/../x",
            "~/x",
            "a\\..\\b",
            "..%2fsession_2%2fa.txt",
            "%2e%2e/x",
            "notes%5Ca",
            ".sage/todo.json",
            "/workspace/.sage/todo.json",
            "a\0b",
            "a//b",
        ] {
            assert!(resolve_path(&root, raw).is_err(), "{raw:?} must be refused");
        }
    }
}
