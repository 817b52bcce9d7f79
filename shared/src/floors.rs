//! The library reads as floors and arrows only point down: each top-level module may import only
//! from the floors below it, so the import graph has no circles; axum stays in `http/` and
//! `app/`, and domain code never names an HTTP status.

use std::path::{Path, PathBuf};

/// Lowest first.
const FLOORS: &[&str] = &[
    "util",
    "telemetry",
    "wire",
    "config",
    "blob",
    "store",
    "search",
    "llm",
    "tools",
    "context",
    "agent",
    "domain",
    "jobs",
    "http",
    "app",
];

fn sources(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

fn floor_of(root: &Path, file: &Path) -> Option<usize> {
    let first = file.strip_prefix(root).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?.trim_end_matches(".rs");
    FLOORS.iter().position(|floor| *floor == name)
}

/// The top-level modules a file names as `crate::<module>`.
fn imported_floors(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if let Some(floor) = FLOORS.iter().position(|floor| *floor == name) {
            found.push((floor, name));
        }
    }
    found
}

#[test]
fn every_import_points_to_a_lower_floor() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let Some(floor) = floor_of(&root, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (imported, name) in imported_floors(&text) {
            if imported > floor {
                upward.push(format!(
                    "{} ({}) imports crate::{name}",
                    file.strip_prefix(&root).unwrap().display(),
                    FLOORS[floor]
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports pointing up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn only_http_and_app_know_axum_and_the_domain_no_status_codes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let http = FLOORS.iter().position(|floor| *floor == "http").unwrap();
    let mut leaks = Vec::new();
    for file in &files {
        let Some(floor) = floor_of(&root, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let in_domain = FLOORS[floor] == "domain";
        if (floor < http && text.contains("axum")) || (in_domain && text.contains("StatusCode")) {
            leaks.push(file.strip_prefix(&root).unwrap().display().to_string());
        }
    }
    assert!(leaks.is_empty(), "HTTP below http/: {leaks:?}");
}
