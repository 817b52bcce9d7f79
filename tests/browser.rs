//! The chat page and the API docs in headless Chromium (Debian's package, driven by Playwright
//! from npm: `tests/browser/*.mjs`), against `sage-local` with auth on and the scripted model.
//! Screenshots of each step are kept under `target/browser/` for a person to look at.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sage_mock_llm::MockOptions;

use crate::common::*;

const PASSWORD: &str = "Browser-admin-pass-1";
const JWT_KEY: &str = "fedcba9876543210fedcba9876543210";

fn chromium() -> PathBuf {
    let chromium = std::env::var_os("SAGE_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.exists(),
        "{} is missing; run `bash tests/run.sh`, which installs Debian's chromium",
        chromium.display()
    );
    chromium
}

fn browser_scripts() -> PathBuf {
    let dir = workspace_root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing; run `bash tests/run.sh`, which runs npm ci in tests/browser"
    );
    dir
}

/// `sage-local` with auth on, the page embedded, the scripted model answering at a reading pace.
async fn page_server(dir: &std::path::Path) -> (MockLlm, ShimProcess) {
    let llm = MockLlm::start(MockOptions {
        token_delay: Duration::from_millis(30),
        ..MockOptions::default()
    })
    .await;
    let shim = sage_local_on_file_store(
        dir,
        &llm.base_url,
        &[
            "--no_auth",
            "false",
            "--jwt_key",
            JWT_KEY,
            "--admin_password",
            PASSWORD,
            // The page's upload test has the model download the attachment from this server.
            "--download_allow_private",
            // Every tool turn ends an invocation: the page follows each run across its
            // hand-offs.
            "--run_deadline_seconds",
            "0.001",
        ],
        &[],
    )
    .await;
    (llm, shim)
}

/// Runs one script with node; its output is the failure message when it exits non-zero.
async fn run_script(script: &str, base_url: &str) {
    let scripts = browser_scripts();
    let screenshots = target_dir()
        .join("browser")
        .join(script.trim_end_matches(".mjs"));
    std::fs::create_dir_all(&screenshots).unwrap();
    let run = tokio::process::Command::new("node")
        .arg(scripts.join(script))
        .env("BASE_URL", base_url)
        .env("SAGE_USERNAME", "admin")
        .env("SAGE_PASSWORD", PASSWORD)
        .env("SCREENSHOT_DIR", &screenshots)
        .env("CHROMIUM", chromium())
        .current_dir(&scripts)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 5 minutes"))
        .expect("node runs");
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_chats_stops_reloads_searches_and_uploads_in_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let (_llm, shim) = page_server(dir.path()).await;
    run_script("chat.mjs", &shim.url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_docs_render_with_nothing_fetched_beyond_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (_llm, shim) = page_server(dir.path()).await;
    run_script("docs.mjs", &shim.url).await;
}

/// `sage-local` embeds `local/web/dist`, committed so that a fresh clone serves the page without
/// npm; `tests/run.sh` builds the sources into `target/web-dist`, which must be the same bytes.
#[test]
fn the_committed_page_is_the_build_of_its_sources() {
    let built = target_dir().join("web-dist");
    assert!(
        built.exists(),
        "{} is missing; run `bash tests/run.sh`, which builds local/web there",
        built.display()
    );
    let committed = workspace_root().join("local/web/dist");
    let files = |root: &std::path::Path| {
        let mut files = std::collections::BTreeMap::new();
        let mut folders = vec![root.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    let relative = path.strip_prefix(root).unwrap().display().to_string();
                    files.insert(relative, std::fs::read(&path).unwrap());
                }
            }
        }
        files
    };
    let (built, committed) = (files(&built), files(&committed));
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        committed.keys().collect::<Vec<_>>(),
        "local/web/dist is stale: run `(cd local/web && npm run build)` and commit dist/"
    );
    for (name, bytes) in &built {
        assert!(
            committed[name] == *bytes,
            "local/web/dist/{name} differs from the build of local/web: run `(cd local/web && \
             npm run build)` and commit dist/"
        );
    }
}
