//! Running a code tool's program: in a folder that holds a copy of the session's workspace, with
//! an empty environment and a time limit, keeping what the program made or changed there. The
//! server runs it under bubblewrap (`tools::code`); in the cloud the sandbox function runs it
//! (`functions/sandbox`, `run_request`), a Lambda function with no permissions of its own,
//! called with a `RunRequest` and answering a `RunOutcome`.

#[cfg(feature = "lambda-sandbox")]
mod function;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

#[cfg(feature = "lambda-sandbox")]
pub use function::{FunctionError, SandboxFunction};

/// What an answer carries of each output stream.
const MAX_OUTPUT_BYTES: usize = 32 * 1024;
/// The workspace a call gets: at most this much, in at most this many files.
pub const MAX_WORKSPACE_BYTES: u64 = 64 * 1024 * 1024;
pub const MAX_WORKSPACE_FILES: usize = 2000;
/// The programs a sandboxed call finds.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// In the sandbox function, the programs of its Lambda layers (`/opt/bin`) too.
const FUNCTION_PATH: &str = "/opt/bin:/usr/local/bin:/usr/bin:/bin";
/// glibc's malloc reserves 64 MiB of address space for each thread's arena; under an
/// address-space limit a threaded program (Node, npm) then fails on reservations it never
/// touches. Two arenas make the limit measure the memory a program uses.
pub const MALLOC_ARENA_MAX: (&str, &str) = ("MALLOC_ARENA_MAX", "2");

/// One file of the workspace, relative to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceFile {
    pub path: String,
    #[serde(with = "base64_bytes")]
    pub bytes: Vec<u8>,
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// A program to run in a copy of the workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    pub argv: Vec<String>,
    #[serde(default)]
    pub stdin: Option<String>,
    /// The working folder, relative to the workspace.
    #[serde(default)]
    pub workdir: String,
    pub timeout_ms: u64,
    /// The address space the program may use, in bytes (`prlimit --as`).
    pub memory_bytes: u64,
    pub files: Vec<WorkspaceFile>,
}

/// How a program ended, and the files it made or changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub output_truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
    pub files: Vec<WorkspaceFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the file {0:?} is not inside the workspace")]
    OutsideWorkspace(String),
    #[error("the workspace grew past its limits (64 MiB, 2,000 files)")]
    TooLarge,
    #[error("the sandbox could not {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Io { what, source }
}

/// A relative path with no way out of the folder it is joined to.
fn inside(path: &str) -> Result<&Path, SandboxError> {
    let relative = Path::new(path);
    let plain = relative
        .components()
        .all(|part| matches!(part, std::path::Component::Normal(_)));
    if path.is_empty() || !plain {
        return Err(SandboxError::OutsideWorkspace(path.to_owned()));
    }
    Ok(relative)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Writes the files under `dir`; returns each one's digest, to tell later what changed.
pub async fn write_files(
    dir: &Path,
    files: &[WorkspaceFile],
) -> Result<HashMap<String, [u8; 32]>, SandboxError> {
    let mut written = HashMap::with_capacity(files.len());
    for file in files {
        let target = dir.join(inside(&file.path)?);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io("prepare the workspace"))?;
        }
        tokio::fs::write(&target, &file.bytes)
            .await
            .map_err(io("prepare the workspace"))?;
        written.insert(file.path.clone(), digest(&file.bytes));
    }
    Ok(written)
}

/// Every regular file under `dir` (links are never followed), relative, with its bytes.
fn files_under(dir: &Path) -> Result<Vec<WorkspaceFile>, SandboxError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    let mut total = 0u64;
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).map_err(io("read the results"))? {
            let entry = entry.map_err(io("read the results"))?;
            let kind = entry.file_type().map_err(io("read the results"))?;
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let Some(relative) = path.strip_prefix(dir).ok().and_then(Path::to_str) else {
                    continue;
                };
                total += entry.metadata().map_err(io("read the results"))?.len();
                if total > MAX_WORKSPACE_BYTES || found.len() >= MAX_WORKSPACE_FILES {
                    return Err(SandboxError::TooLarge);
                }
                found.push(WorkspaceFile {
                    path: relative.to_owned(),
                    bytes: std::fs::read(&path).map_err(io("read the results"))?,
                });
            }
        }
    }
    Ok(found)
}

/// The files under `dir` that are new or differ from `before`, by path.
pub async fn changed_files(
    dir: PathBuf,
    before: HashMap<String, [u8; 32]>,
) -> Result<Vec<WorkspaceFile>, SandboxError> {
    let after = tokio::task::spawn_blocking(move || files_under(&dir))
        .await
        .map_err(|error| SandboxError::Io {
            what: "read the results",
            source: std::io::Error::other(error),
        })??;
    let mut changed: Vec<WorkspaceFile> = after
        .into_iter()
        .filter(|file| before.get(&file.path) != Some(&digest(&file.bytes)))
        .collect();
    changed.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(changed)
}

/// Reads up to [`MAX_OUTPUT_BYTES`] and drains the rest, so a chatty program never blocks.
async fn capped(mut stream: impl AsyncRead + Unpin) -> (String, bool) {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    let mut truncated = false;
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        let room = MAX_OUTPUT_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..read.min(room)]);
        truncated |= read > room;
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}

/// How a program ended, before its files are looked at.
pub struct Finished {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub output_truncated: bool,
    pub timed_out: bool,
    pub duration: Duration,
}

/// Runs the prepared `command`, feeding it `stdin`, and kills it at `timeout`.
pub async fn run_command(
    mut command: tokio::process::Command,
    stdin: Option<String>,
    timeout: Duration,
) -> Result<Finished, SandboxError> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(io("start"))?;
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
        tokio::spawn(async move {
            let _ = pipe.write_all(input.as_bytes()).await;
        });
    }
    let stdout = tokio::spawn(capped(child.stdout.take().expect("piped")));
    let stderr = tokio::spawn(capped(child.stderr.take().expect("piped")));
    let started = std::time::Instant::now();
    let (exit_code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => (status.code(), false),
        Ok(Err(error)) => return Err(io("run the program")(error)),
        Err(_) => {
            let _ = child.kill().await;
            (None, true)
        }
    };
    let (stdout, stdout_truncated) = stdout.await.unwrap_or_default();
    let (mut stderr, stderr_truncated) = stderr.await.unwrap_or_default();
    if timed_out {
        stderr.push_str(&format!(
            "\n[stopped after {} seconds: the time limit]",
            timeout.as_secs_f64()
        ));
    }
    Ok(Finished {
        exit_code,
        stdout,
        stderr,
        output_truncated: stdout_truncated || stderr_truncated,
        timed_out,
        duration: started.elapsed(),
    })
}

/// `program` with an address-space limit when `prlimit` is on the PATH.
fn limited(program: &[String], memory_bytes: u64) -> tokio::process::Command {
    let prlimit = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("prlimit"))
            .find(|candidate| candidate.is_file())
    });
    match prlimit {
        Some(prlimit) => {
            let mut command = tokio::process::Command::new(prlimit);
            command
                .arg(format!("--as={memory_bytes}"))
                .arg("--core=0")
                .arg("--")
                .args(program);
            command
        }
        None => {
            let mut command = tokio::process::Command::new(&program[0]);
            command.args(&program[1..]);
            command
        }
    }
}

/// Runs a request in a fresh folder holding its files: `command` makes the program's command
/// from the folder and the request (bubblewrap here, the plain program in the sandbox function).
/// Returns how it ended and the files it made or changed.
pub async fn run_in_folder(
    request: RunRequest,
    command: impl FnOnce(&Path, &RunRequest) -> tokio::process::Command,
) -> Result<RunOutcome, SandboxError> {
    if request.argv.is_empty() {
        return Err(SandboxError::OutsideWorkspace(String::new()));
    }
    let folder = tempfile::tempdir().map_err(io("start"))?;
    let before = write_files(folder.path(), &request.files).await?;
    let workdir = if request.workdir.is_empty() {
        folder.path().to_path_buf()
    } else {
        folder.path().join(inside(&request.workdir)?)
    };
    tokio::fs::create_dir_all(&workdir)
        .await
        .map_err(io("prepare the workspace"))?;
    let program = command(folder.path(), &request);
    let finished = run_command(
        program,
        request.stdin,
        Duration::from_millis(request.timeout_ms),
    )
    .await?;
    let files = changed_files(folder.path().to_path_buf(), before).await?;
    Ok(RunOutcome {
        exit_code: finished.exit_code,
        stdout: finished.stdout,
        stderr: finished.stderr,
        output_truncated: finished.output_truncated,
        timed_out: finished.timed_out,
        duration_ms: finished.duration.as_millis() as u64,
        files,
    })
}

/// What the sandbox function does with one request: the program runs in the folder with an
/// empty environment.
pub async fn run_request(request: RunRequest) -> Result<RunOutcome, SandboxError> {
    run_in_folder(request, |folder, request| {
        let mut command = limited(&request.argv, request.memory_bytes);
        command
            .env_clear()
            .env("PATH", FUNCTION_PATH)
            .env("HOME", folder)
            .env("LANG", "C.UTF-8")
            .env(MALLOC_ARENA_MAX.0, MALLOC_ARENA_MAX.1)
            .current_dir(folder.join(&request.workdir));
        command
    })
    .await
}

/// The size of `files` once encoded for the sandbox function.
pub fn encoded_size(files: &[WorkspaceFile]) -> usize {
    files
        .iter()
        .map(|file| file.path.len() + file.bytes.len().div_ceil(3) * 4 + 32)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> WorkspaceFile {
        WorkspaceFile {
            path: path.into(),
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn a_request_runs_in_its_files_and_returns_what_changed() {
        let outcome = run_request(RunRequest {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "cat in.txt; echo made > out/new.txt; echo -n \"[$AWS_SECRET_ACCESS_KEY]\" >&2"
                    .into(),
            ],
            stdin: None,
            workdir: String::new(),
            timeout_ms: 10_000,
            memory_bytes: 512 * 1024 * 1024,
            files: vec![file("in.txt", "given\n"), file("out/keep.txt", "same")],
        })
        .await
        .unwrap();
        assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
        assert_eq!(outcome.stdout, "given\n");
        assert_eq!(outcome.stderr, "[]", "the environment is empty");
        assert_eq!(outcome.files, [file("out/new.txt", "made\n")]);
    }

    #[tokio::test]
    async fn a_program_past_its_time_is_stopped() {
        let outcome = run_request(RunRequest {
            argv: vec!["sleep".into(), "5".into()],
            stdin: None,
            workdir: String::new(),
            timeout_ms: 200,
            memory_bytes: 512 * 1024 * 1024,
            files: Vec::new(),
        })
        .await
        .unwrap();
        assert!(outcome.timed_out);
        assert!(outcome.duration_ms < 2_000);
    }

    #[tokio::test]
    async fn files_outside_the_folder_are_refused() {
        for path in ["../x", "/etc/passwd", "a/../../x", ""] {
            let error = run_request(RunRequest {
                argv: vec!["true".into()],
                stdin: None,
                workdir: String::new(),
                timeout_ms: 1_000,
                memory_bytes: 512 * 1024 * 1024,
                files: vec![file(path, "x")],
            })
            .await
            .unwrap_err();
            assert!(
                matches!(error, SandboxError::OutsideWorkspace(_)),
                "{path}: {error}"
            );
        }
    }

    #[test]
    fn files_travel_as_base64() {
        let encoded = serde_json::to_value(file("a.bin", "\u{0}\u{1}")).unwrap();
        assert_eq!(encoded["bytes"], "AAE=");
        let back: WorkspaceFile = serde_json::from_value(encoded).unwrap();
        assert_eq!(back, file("a.bin", "\u{0}\u{1}"));
    }
}
