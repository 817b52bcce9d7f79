//! The Lambda side: the functions, cargo-lambda and its emulator.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::process::{ChildGuard, newest_source, target_dir, wait_for_port, workspace_root};

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

/// The function's `bootstrap` as `cargo lambda build -p FUNCTION` (in `tests/run.sh`) made it:
/// built on its own, with only its own backends, as it is deployed. Fails when it is missing or
/// older than its sources.
pub fn built_bootstrap(function: &str) -> PathBuf {
    let dir = FUNCTIONS
        .iter()
        .find(|(name, _)| *name == function)
        .map(|(_, dir)| *dir)
        .unwrap_or_else(|| panic!("{function} is not a function"));
    let bootstrap = target_dir().join("lambda").join(function).join("bootstrap");
    let built = std::fs::metadata(&bootstrap)
        .and_then(|metadata| metadata.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing; run `bash tests/run.sh`, which runs `cargo lambda build`",
                bootstrap.display()
            )
        });
    let (newest, source) = newest_source(&["shared", dir, "Cargo.toml", "Cargo.lock"]);
    assert!(
        built >= newest,
        "{function}: the bootstrap is older than {}; run `cargo lambda build -p {function}`",
        source.display()
    );
    bootstrap
}

/// The emulator's Lambda APIs alone (`cargo lambda watch --only-lambda-apis`) on
/// 127.0.0.1:`port`: it compiles nothing, and [`start_bootstrap`] runs the function.
pub async fn start_lambda_apis(port: u16) -> ChildGuard {
    let child = std::process::Command::new(cargo_lambda())
        .args(["lambda", "watch", "--only-lambda-apis", "--quiet"])
        .args([
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &port.to_string(),
        ])
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cargo lambda watch starts");
    let child = ChildGuard(child);
    wait_for_port(port, Duration::from_secs(120)).await;
    child
}

/// Runs `function`'s built bootstrap against the emulator's runtime API on `port`, as Lambda
/// runs it: it takes the invocations sent to `/lambda-url/FUNCTION/...`.
pub fn start_bootstrap(function: &str, port: u16, env_vars: &[(String, String)]) -> ChildGuard {
    let child = std::process::Command::new(built_bootstrap(function))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{port}/.rt/{function}"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .envs(env_vars.iter().map(|(name, value)| (name, value)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{function}'s bootstrap does not start: {error}"));
    ChildGuard(child)
}
