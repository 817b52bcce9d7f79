//! `cargo lambda build` produces each function's `bootstrap`, each built on its own so it links
//! only its own backends (`tests/run.sh` runs those builds before the tests, in the dev profile
//! unless `SAGE_TEST_FULL_RELEASE=1` asks for the release one; this checks what they produced;
//! BENCHMARKS.md has the deployed sizes).

use std::io::Read;

use crate::common::{FUNCTIONS, built_bootstrap, free_port};

#[test]
fn cargo_lambda_build_release_produced_every_bootstrap() {
    for (function, _) in FUNCTIONS {
        let bootstrap = built_bootstrap(function);
        let mut magic = [0u8; 4];
        std::fs::File::open(&bootstrap)
            .unwrap()
            .read_exact(&mut magic)
            .unwrap();
        assert_eq!(&magic, b"\x7fELF", "{function}: an executable");
        let metadata = std::fs::metadata(&bootstrap).unwrap();
        eprintln!("{function}: bootstrap {} bytes", metadata.len());
    }
}

/// Each bootstrap, built on its own as it is deployed, reaches DynamoDB at start-up. A workspace
/// build links the AWS SDK's default HTTPS client through the tests' own dependencies and so
/// hides a bootstrap that cannot make its first AWS call, or that panics at start-up for want of
/// something only another function's features set up; this runs the real bootstraps. With no
/// Lambda runtime API answering they stop after start-up; the table they created is the proof.
#[tokio::test(flavor = "multi_thread")]
async fn every_bootstrap_built_alone_reaches_dynamodb_at_start_up() {
    // The sandbox function has no store: it only runs programs.
    for (function, _) in FUNCTIONS.iter().filter(|(name, _)| *name != "sage-sandbox") {
        let bootstrap = built_bootstrap(function);
        let table = crate::common::fresh_name("boot");
        let output = tokio::process::Command::new(&bootstrap)
            .env_clear()
            .envs(crate::common::MOTO_ENV)
            .env("SAGE_DB_TYPE", "dynamodb")
            .env("SAGE_DYNAMODB_ENDPOINT", crate::common::dynamodb_endpoint())
            .env("SAGE_DYNAMODB_TABLE", &table)
            .env(
                "SAGE_PRESET_RUNNING_CONFIG_PATH",
                "/nonexistent/agent_setting.json",
            )
            .env("SAGE_MCP_CONFIG_PATH", "/nonexistent/mcp_setting.json")
            .env("SAGE_DEFAULT_LLM_API_KEY", "k")
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            // Nothing listens there: the runtime's first poll fails and the bootstrap exits.
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("127.0.0.1:{}", free_port()),
            )
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(std::time::Duration::from_secs(60), output)
            .await
            .unwrap_or_else(|_| panic!("{function}: still running after 60 s"))
            .unwrap_or_else(|error| {
                panic!("{function}: {} does not run: {error}", bootstrap.display())
            });
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("http_client is required"),
            "{function} cannot make an AWS call: {stderr}"
        );
        // It stops because no Runtime API answers, never on a panic of its own start-up.
        assert!(
            !stderr.contains("panicked"),
            "{function} panics at start-up: {stderr}"
        );
        crate::common::dynamo_client()
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!("{function} did not reach DynamoDB at start-up ({error:?}): {stderr}")
            });
    }
}
