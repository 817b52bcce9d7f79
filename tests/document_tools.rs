//! The document and download tools: `extract_text_from_non_text_file` reads PDF, DOCX and
//! spreadsheets of the workspace, `convert_csv_to_excel` writes a real workbook, and
//! `download_file_from_url` saves public files only, within `--download_max_bytes`.

use std::io::{Read, Write};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::builtin_tools::{call, run_tools};
use crate::common::*;

const DOCUMENT_XML: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
<w:p><w:r><w:t>Hello &amp; welcome</w:t></w:r><w:r><w:tab/><w:t xml:space="preserve">tabbed </w:t></w:r></w:p>
<w:p><w:r><w:t>Second paragraph</w:t></w:r></w:p></w:body></w:document>"#;

fn docx() -> Vec<u8> {
    let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    archive.start_file("[Content_Types].xml", options).unwrap();
    archive.write_all(b"<Types/>").unwrap();
    archive.start_file("word/document.xml", options).unwrap();
    archive.write_all(DOCUMENT_XML.as_bytes()).unwrap();
    archive.finish().unwrap().into_inner()
}

fn put(env: &TestEnv, session: &str, path: &str, bytes: &[u8]) {
    let file = env.workspace().join(session).join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, bytes).unwrap();
}

fn extract(path: &str, extra: Value) -> String {
    let mut arguments = json!({"input_file_path": path});
    for (name, value) in extra.as_object().unwrap() {
        arguments[name] = value.clone();
    }
    call("extract_text_from_non_text_file", arguments)
}

#[tokio::test(flavor = "multi_thread")]
async fn text_comes_out_of_pdf_docx_and_spreadsheets() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    put(&env, "dt-read", "docs/report.docx", &docx());
    put(
        &env,
        "dt-read",
        "paper.pdf",
        &minimal_pdf("Lighthouse keepers record the weather"),
    );
    put(&env, "dt-read", "notes.txt", b"plain text");
    put(&env, "dt-read", "broken.docx", b"PK not really");
    let results = run_tools(
        &base,
        "dt-read",
        "ada",
        &[
            extract("docs/report.docx", json!({})),
            extract(
                "/workspace/docs/report.docx",
                json!({"start_index": 6, "max_length": 9}),
            ),
            extract("paper.pdf", json!({})),
            extract("notes.txt", json!({})),
            extract("broken.docx", json!({})),
            extract("../dt-other/secret.pdf", json!({})),
        ],
    )
    .await;
    assert_eq!(
        results[0]["text"],
        "Hello & welcome\ttabbed \nSecond paragraph\n"
    );
    assert_eq!(results[0]["total_length"], 41);
    assert!(results[0].get("note").is_none());
    assert_eq!(results[1]["text"], "& welcome");
    assert_eq!(results[1]["end_index"], 15);
    assert!(
        results[1]["note"]
            .as_str()
            .unwrap()
            .contains("start_index 15"),
        "{}",
        results[1]
    );
    assert!(
        results[2]["text"]
            .as_str()
            .unwrap()
            .contains("Lighthouse keepers record the weather"),
        "{}",
        results[2]
    );
    for (result, expected) in [
        (&results[3], "only PDF, DOCX and spreadsheet"),
        (&results[4], "not a DOCX"),
        (&results[5], "not inside the workspace"),
    ] {
        assert_eq!(result["error"], true, "{result}");
        assert!(
            result["message"].as_str().unwrap().contains(expected),
            "{expected}: {result}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_becomes_a_workbook_that_reads_back() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    put(
        &env,
        "dt-csv",
        "data/sales.csv",
        "\u{feff}region,units,code\n\"North, upper\",12.5,007\nSouth,3,x\n".as_bytes(),
    );
    let results = run_tools(
        &base,
        "dt-csv",
        "ada",
        &[call(
            "convert_csv_to_excel",
            json!({"csv_file_path": "data/sales.csv"}),
        )],
    )
    .await;
    assert_eq!(
        results[0]["excel_file_path"], "data/sales.xlsx",
        "{}",
        results[0]
    );
    assert_eq!(
        (results[0]["rows"].clone(), results[0]["columns"].clone()),
        (json!(3), json!(3))
    );

    // The workbook is a real OOXML package: the sheet holds the number as a number.
    let bytes = std::fs::read(env.workspace().join("dt-csv/data/sales.xlsx")).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut sheet = String::new();
    archive
        .by_name("xl/worksheets/sheet1.xml")
        .unwrap()
        .read_to_string(&mut sheet)
        .unwrap();
    assert!(sheet.contains("<v>12.5</v>"), "{sheet}");

    let results = run_tools(
        &base,
        "dt-csv",
        "ada",
        &[
            extract("data/sales.xlsx", json!({})),
            call(
                "convert_csv_to_excel",
                json!({"csv_file_path": "data/sales.csv", "excel_file_path": "out.csv"}),
            ),
            call(
                "convert_csv_to_excel",
                json!({"csv_file_path": "data/missing.csv"}),
            ),
        ],
    )
    .await;
    assert_eq!(
        results[0]["text"],
        "## Sheet1\nregion\tunits\tcode\nNorth, upper\t12.5\t007\nSouth\t3\tx\n\n"
    );
    assert!(results[1]["message"].as_str().unwrap().contains(".xlsx"));
    assert!(results[2]["message"].as_str().unwrap().contains("no file"));
    assert!(!env.workspace().join("dt-csv/out.csv").exists());
}

/// A file server on 127.0.0.1: a CSV, a redirect to it, a file over the test's size limit and
/// a missing one.
async fn file_server() -> String {
    let app = Router::new()
        .route(
            "/files/report.csv",
            get(|| async { ([(header::CONTENT_TYPE, "text/csv")], "a,b\n1,2\n") }),
        )
        .route(
            "/moved",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/files/report.csv")]) }),
        )
        .route("/big.bin", get(|| async { vec![7u8; 5000] }))
        // No content-length: the limit must hold while the body arrives.
        .route(
            "/streamed.bin",
            get(|| async {
                let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(vec![7u8; 500]));
                axum::body::Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route(
            "/missing",
            get(|| async { StatusCode::NOT_FOUND.into_response() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

fn download(url: &str, extra: Value) -> String {
    let mut arguments = json!({"url": url});
    for (name, value) in extra.as_object().unwrap() {
        arguments[name] = value.clone();
    }
    call("download_file_from_url", arguments)
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_reach_public_addresses_only_by_default() {
    let files = file_server().await;
    let env = TestEnv::new().await;
    let results = run_tools(
        &env.server.url,
        "dt-guard",
        "ada",
        &[
            download(&format!("{files}/files/report.csv"), json!({})),
            download("http://169.254.169.254/latest/meta-data/", json!({})),
            download("http://[::1]:9/x", json!({})),
            download("file:///etc/passwd", json!({})),
        ],
    )
    .await;
    for result in &results[..3] {
        assert!(
            result["message"]
                .as_str()
                .unwrap()
                .contains("is not a public address"),
            "{result}"
        );
    }
    assert!(
        results[3]["message"]
            .as_str()
            .unwrap()
            .contains("http or https")
    );
    assert!(
        !env.workspace().join("dt-guard").exists(),
        "nothing was saved"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_save_into_the_workspace_within_the_size_limit() {
    let files = file_server().await;
    let env = TestEnv::with(
        Default::default(),
        &["--download_allow_private", "--download_max_bytes", "1000"],
    )
    .await;
    let results = run_tools(
        &env.server.url,
        "dt-get",
        "ada",
        &[
            download(
                &format!("{files}/files/report.csv"),
                json!({"working_dir": "inbox"}),
            ),
            download(
                &format!("{files}/moved"),
                json!({"working_dir": "/workspace/later"}),
            ),
            download(&format!("{files}/big.bin"), json!({})),
            download(&format!("{files}/missing"), json!({})),
            download(
                &format!("{files}/files/report.csv"),
                json!({"working_dir": "../dt-other"}),
            ),
            download(&format!("{files}/streamed.bin"), json!({})),
        ],
    )
    .await;
    assert_eq!(
        results[0]["file_path"], "inbox/report.csv",
        "{}",
        results[0]
    );
    assert_eq!(results[0]["content_type"], "text/csv");
    assert_eq!(
        results[1]["file_path"], "later/report.csv",
        "{}",
        results[1]
    );
    let workspace = env.workspace().join("dt-get");
    for saved in ["inbox/report.csv", "later/report.csv"] {
        assert_eq!(
            std::fs::read_to_string(workspace.join(saved)).unwrap(),
            "a,b\n1,2\n"
        );
    }
    assert!(
        results[2]["message"]
            .as_str()
            .unwrap()
            .contains("larger than the download limit of 1000 bytes"),
        "{}",
        results[2]
    );
    assert!(!workspace.join("big.bin").exists());
    assert!(results[3]["message"].as_str().unwrap().contains("404"));
    assert!(
        results[4]["message"]
            .as_str()
            .unwrap()
            .contains("not inside the workspace"),
        "{}",
        results[4]
    );
    assert!(!env.workspace().join("dt-other").exists());
    assert!(
        results[5]["message"]
            .as_str()
            .unwrap()
            .contains("larger than the download limit of 1000 bytes"),
        "a body without a length is cut at the limit: {}",
        results[5]
    );
    assert!(!workspace.join("streamed.bin").exists());
}
