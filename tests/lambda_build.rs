//! `cargo lambda build --release` produces each function's `bootstrap` (`tests/run.sh` runs that
//! build before the tests; this checks what it produced).

use std::io::Read;

use sage_e2e::workspace_root;

const FUNCTIONS: [(&str, &str); 4] = [
    ("sage-stream", "functions/stream"),
    ("sage-health", "functions/health"),
    ("sage-mcp-admin", "functions/mcp-admin"),
    ("sage-session", "functions/session"),
];

#[test]
fn cargo_lambda_build_release_produced_every_bootstrap() {
    for (function, dir) in FUNCTIONS {
        let bootstrap = workspace_root()
            .join("target/lambda")
            .join(function)
            .join("bootstrap");
        let metadata = std::fs::metadata(&bootstrap).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run `bash tests/run.sh`, which runs `cargo lambda build --release`",
                bootstrap.display()
            )
        });
        let mut magic = [0u8; 4];
        std::fs::File::open(&bootstrap)
            .unwrap()
            .read_exact(&mut magic)
            .unwrap();
        assert_eq!(&magic, b"\x7fELF", "{function}: an executable");
        let source = std::fs::metadata(workspace_root().join(dir).join("src/main.rs")).unwrap();
        assert!(
            metadata.modified().unwrap() >= source.modified().unwrap(),
            "{function}: the bootstrap is older than its source"
        );
        eprintln!("{function}: bootstrap {} bytes", metadata.len());
    }
}
