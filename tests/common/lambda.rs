//! The Lambda side: the functions, cargo-lambda and its emulator.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::process::{ChildGuard, wait_for_port, workspace_root};

/// Each function: its package (and binary) and its directory.
pub const FUNCTIONS: [(&str, &str); 6] = [
    ("sage-stream", "functions/stream"),
    ("sage-health", "functions/health"),
    ("sage-mcp-admin", "functions/mcp-admin"),
    ("sage-session", "functions/session"),
    ("sage-jobs", "functions/jobs"),
    ("sage-sandbox", "functions/sandbox"),
];

/// cargo-lambda, from the test venv or the PATH (`tests/run.sh` installs it).
pub fn cargo_lambda() -> PathBuf {
    let venv = workspace_root().join(".venv/bin/cargo-lambda");
    if venv.exists() {
        return venv;
    }
    let on_path = std::process::Command::new("cargo-lambda")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    assert!(
        on_path.is_ok_and(|status| status.success()),
        "cargo-lambda is missing; run `bash tests/run.sh`, which installs it"
    );
    PathBuf::from("cargo-lambda")
}

/// `cargo lambda watch` on 127.0.0.1:`port`, run from `dir`, with `--env-var`s; waits until it
/// listens. Killed on drop.
pub async fn start_cargo_lambda_watch(dir: &Path, port: u16, env_vars: &[String]) -> ChildGuard {
    let mut command = std::process::Command::new(cargo_lambda());
    command
        .args(["lambda", "watch", "--ignore-changes", "--quiet"])
        .args([
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &port.to_string(),
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for var in env_vars {
        command.args(["--env-var", var]);
    }
    let child = ChildGuard(command.spawn().expect("cargo lambda watch starts"));
    wait_for_port(port, Duration::from_secs(120)).await;
    child
}
