//! `cargo lambda build` produces each function's `bootstrap`, each built on its own so it links
//! only its own backends (`tests/run.sh` runs those builds before the tests, in the dev profile
//! unless `SAGE_TEST_FULL_RELEASE=1` asks for the release one; this checks what they produced;
//! BENCHMARKS.md has the deployed sizes).

use std::io::Read;

use crate::common::{FUNCTIONS, newest_source, target_dir};

#[test]
fn cargo_lambda_build_release_produced_every_bootstrap() {
    for (function, dir) in FUNCTIONS {
        let bootstrap = target_dir().join("lambda").join(function).join("bootstrap");
        let metadata = std::fs::metadata(&bootstrap).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run `bash tests/run.sh`, which runs `cargo lambda build`",
                bootstrap.display()
            )
        });
        let mut magic = [0u8; 4];
        std::fs::File::open(&bootstrap)
            .unwrap()
            .read_exact(&mut magic)
            .unwrap();
        assert_eq!(&magic, b"\x7fELF", "{function}: an executable");
        let (newest, source) = newest_source(&["shared", dir, "Cargo.toml", "Cargo.lock"]);
        assert!(
            metadata.modified().unwrap() >= newest,
            "{function}: the bootstrap is older than {}; run `cargo lambda build -p {function}`",
            source.display()
        );
        eprintln!("{function}: bootstrap {} bytes", metadata.len());
    }
}
