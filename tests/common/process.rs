//! The workspace on disk and the processes the tests start: binaries, ports, child guards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The newest modification time among the Rust sources and manifests under `roots` (files or
/// directories, relative to the workspace root), with the file that has it.
pub fn newest_source(roots: &[&str]) -> (SystemTime, PathBuf) {
    let mut newest = (SystemTime::UNIX_EPOCH, PathBuf::new());
    let mut pending: Vec<PathBuf> = roots
        .iter()
        .map(|root| workspace_root().join(root))
        .collect();
    while let Some(path) = pending.pop() {
        let metadata = std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        if metadata.is_dir() {
            let name = path.file_name().and_then(|name| name.to_str());
            if matches!(name, Some("target" | "node_modules" | ".git")) {
                continue;
            }
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
            continue;
        }
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        let is_source = name.ends_with(".rs") || name == "Cargo.toml" || name == "Cargo.lock";
        let modified = metadata.modified().unwrap();
        if is_source && modified > newest.0 {
            newest = (modified, path);
        }
    }
    newest
}

/// What every workspace binary may be built from.
const BINARY_SOURCES: &[&str] = &["shared", "local", "functions", "Cargo.toml", "Cargo.lock"];

/// A binary of the workspace, rebuilt with `cargo build --workspace --bins --tests` when it is
/// missing or older than its sources. Checked at most once per test process; concurrent test
/// processes building it wait on cargo's lock.
pub fn workspace_binary(name: &str) -> PathBuf {
    static CHECKED: Mutex<BTreeMap<String, Arc<OnceLock<PathBuf>>>> = Mutex::new(BTreeMap::new());
    let once = CHECKED
        .lock()
        .unwrap()
        .entry(name.to_owned())
        .or_default()
        .clone();
    once.get_or_init(|| {
        let binary = target_dir().join("debug").join(name);
        let built = std::fs::metadata(&binary).and_then(|metadata| metadata.modified());
        let (newest, _) = newest_source(BINARY_SOURCES);
        if !built.is_ok_and(|built| built >= newest) {
            let status = std::process::Command::new(env!("CARGO"))
                // The build tests/run.sh runs: any other selection (`-p`, or binaries without
                // the tests and their dev-dependencies' features) resolves other features and
                // compiles a second variant of the dependencies, tokio and all above it.
                .args(["build", "--workspace", "--bins", "--tests"])
                .current_dir(workspace_root())
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building {name} failed");
        }
        assert!(
            binary.exists(),
            "{} is missing after the build",
            binary.display()
        );
        binary
    })
    .clone()
}

/// A child process killed when dropped.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on port {port} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sage-local jobs <args>` run to its end in `dir` with `env` added: the report it printed,
/// after checking that it succeeded.
pub async fn sage_local_job<S: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    args: &[S],
    env: &[(&str, &str)],
) -> serde_json::Value {
    let output = tokio::process::Command::new(workspace_binary("sage-local"))
        .arg("jobs")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .await
        .expect("sage-local jobs starts");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}
