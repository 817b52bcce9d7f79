//! Files through the routes: uploads (`/api/oss/upload`) answered with a URL that serves the
//! bytes, and a session's workspace listed, downloaded (a folder as a zip) and deleted with the
//! session, on the local directory and on S3 (moto) under `sage-local`.

use std::io::Read;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

async fn upload(base: &str, query: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str("text/plain")
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{base}/api/oss/upload{query}"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The URL an upload answered, made absolute against the server when it is a path.
fn absolute(base: &str, url: &str) -> String {
    if url.starts_with('/') {
        format!("{base}{url}")
    } else {
        url.to_owned()
    }
}

fn zip_entries(bytes: &[u8]) -> Vec<(String, String)> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut entries = Vec::new();
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        entries.push((file.name().unwrap().into_owned(), text));
    }
    entries.sort();
    entries
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_is_stored_under_a_random_key_and_served_by_its_url() {
    let env = TestEnv::with(
        sage_mock_llm::MockOptions::default(),
        &["--max_body_bytes", "65536"],
    )
    .await;
    let base = env.server.url.clone();
    let (status, answer) = upload(
        &base,
        "?user_id=lee",
        "../../notes 1.txt",
        b"hello file".to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let url = answer["data"]["url"].as_str().unwrap().to_owned();
    let name = url.rsplit('/').next().unwrap();
    assert!(
        name.starts_with("notes_1_")
            && name.ends_with(".txt")
            && name.len() == "notes_1_".len() + 14 + 4,
        "Sage's <name>_<YYYYmmddHHMMSS><ext>, no folders: {url}"
    );
    let id = url.split('/').rev().nth(1).unwrap();
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{url}"
    );
    let fetched = reqwest::get(absolute(&base, &url)).await.unwrap();
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(fetched.text().await.unwrap(), "hello file");
    let (status, _) = upload(&base, "?user_id=lee", "other.txt", b"x".to_vec()).await;
    assert_eq!(status, 200);
    let guessed = absolute(&base, &url.replace(id, &"0".repeat(32)));
    assert_eq!(reqwest::get(guessed).await.unwrap().status().as_u16(), 404);

    let (status, answer) = upload(&base, "?user_id=lee", "big.bin", vec![7u8; 100_000]).await;
    assert_eq!((status, &answer["code"]), (413, &json!(413)), "{answer}");
    let response = reqwest::Client::new()
        .post(format!("{base}/api/oss/upload?user_id=lee"))
        .multipart(reqwest::multipart::Form::new().text("note", "no file"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["message"].as_str().unwrap().contains("file"),
        "{answer}"
    );
}

/// sage-local with its files in an S3 bucket: what a run's function wrote there is listed,
/// downloaded and zipped through the Session routes, and goes with the session.
#[tokio::test(flavor = "multi_thread")]
async fn the_workspace_lives_in_the_bucket_under_sage_local() {
    let local = SageLocalOnS3::start("sage-files").await;
    let (base, bucket) = (local.shim.url.clone(), local.bucket.clone());

    let events = post_ndjson(
        &format!("{base}/api/stream"),
        &json!({"session_id": "f-s3", "user_id": "lee", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_tail(&events, "f-s3");
    // What the Stream function would write, straight into the bucket.
    let bucket_store = s3_objects(&bucket, None).await;
    use sage_core::blob::{ObjectKey, ObjectStore};
    for (path, text) in [
        ("f-s3/charts/plot.csv", "x,y\n1,2\n"),
        ("f-s3/charts/notes.md", "# notes"),
        ("f-s3/answer.txt", "42"),
        ("other-session/secret.txt", "not yours"),
    ] {
        bucket_store
            .put(&ObjectKey::parse(path).unwrap(), text.into())
            .await
            .unwrap();
    }

    let (status, listed) = send_json(
        Method::POST,
        &format!("{base}/api/sessions/f-s3/file_workspace?user_id=lee"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let paths: Vec<(&str, bool)> = listed["data"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap(),
                f["is_directory"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("answer.txt", false),
            ("charts", true),
            ("charts/notes.md", false),
            ("charts/plot.csv", false)
        ]
    );
    let download = |path: &str| {
        reqwest::get(format!(
            "{base}/api/sessions/f-s3/file_workspace/download?user_id=lee&file_path={path}"
        ))
    };
    let file = download("charts/plot.csv").await.unwrap();
    assert_eq!(file.status().as_u16(), 200);
    assert_eq!(file.headers()["content-length"], "8");
    assert_eq!(file.text().await.unwrap(), "x,y\n1,2\n");
    let folder = download("charts").await.unwrap();
    assert_eq!(folder.status().as_u16(), 200);
    assert_eq!(folder.headers()["content-type"], "application/zip");
    assert!(
        folder.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("charts.zip")
    );
    assert_eq!(
        zip_entries(&folder.bytes().await.unwrap()),
        [
            ("notes.md".to_owned(), "# notes".to_owned()),
            ("plot.csv".to_owned(), "x,y\n1,2\n".to_owned())
        ]
    );
    for escape in [
        "../other-session/secret.txt",
        "charts/../../other-session/secret.txt",
    ] {
        assert_eq!(
            download(escape).await.unwrap().status().as_u16(),
            400,
            "{escape}"
        );
    }
    assert_eq!(
        download("missing.txt").await.unwrap().status().as_u16(),
        404
    );
    let (status, _) = send_json(
        Method::POST,
        &format!("{base}/api/sessions/f-s3/file_workspace?user_id=mallory"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 403);

    // An upload's URL is presigned by the bucket.
    let (status, answer) = upload(&base, "?user_id=lee", "data.csv", b"a,b".to_vec()).await;
    assert_eq!(status, 200, "{answer}");
    let url = answer["data"]["url"].as_str().unwrap();
    assert!(
        url.contains(&bucket) && url.contains("X-Amz-Signature="),
        "{url}"
    );
    assert_eq!(
        reqwest::get(url).await.unwrap().text().await.unwrap(),
        "a,b"
    );

    let (status, ready) = get_json(&format!("{base}/api/health/ready")).await;
    assert_eq!(status, 200, "{ready}");
    assert!(
        ready["data"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|check| check.as_str().unwrap() == format!("files (S3 bucket {bucket}): ok")),
        "{ready}"
    );

    let (status, _) = send_json(
        Method::DELETE,
        &format!("{base}/api/conversations/f-s3?user_id=lee"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let left: Vec<String> = bucket_store
        .list(&ObjectKey::parse("f-s3").unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.key.to_string())
        .collect();
    assert!(
        left.is_empty(),
        "the session's files went with it: {left:?}"
    );
    assert_eq!(
        bucket_store
            .list(&ObjectKey::parse("other-session").unwrap())
            .await
            .unwrap()
            .len(),
        1
    );
}

/// On DynamoDB an event over the 400 KB item limit (here a 480 KB tool result, and the answer
/// that quotes it) goes to the object store with its key in the log: the run completes, the
/// conversation and a replay carry every byte, and deleting the session removes the bodies.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_too_large_for_a_dynamodb_item_round_trips_through_the_bucket() {
    let llm = MockLlm::start(sage_mock_llm::MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = dynamodb_endpoint();
    let bucket = fresh_name("sage-spill").replace('_', "-");
    let flags = [
        "--minio_endpoint",
        &endpoint,
        "--minio_bucket_name",
        &bucket,
        "--mcp_allow_stdio",
    ];
    let (shim, _) = sage_local_on_dynamodb(dir.path(), &llm.base_url, &flags).await;
    let base = shim.url.clone();
    let times = 60_000;
    let events = post_ndjson(
        &format!("{base}/api/stream"),
        &json!({
            "session_id": "big-1", "user_id": "lee",
            "messages": [{"role": "user", "content": format!(r#"call:repeat{{"text": "abcdefgh", "times": {times}}}"#)}],
            "available_tools": ["repeat"],
            "extra_mcp_config": {"peer": stdio_peer(json!({}))},
        }),
    )
    .await;
    assert_tail(&events, "big-1");
    assert!(
        of_type(&events, "error").is_empty(),
        "{:?}",
        of_type(&events, "error")
    );
    let result = of_type(&events, "tool_call_result");
    assert_eq!(result[0]["content"].as_str().unwrap().len(), 8 * times);

    let bucket_store = s3_objects(&bucket, None).await;
    use sage_core::blob::{ObjectKey, ObjectStore};
    let spilled = bucket_store
        .list(&ObjectKey::parse(".events/big-1").unwrap())
        .await
        .unwrap();
    assert!(
        spilled.len() >= 2,
        "the tool result and the answer: {spilled:?}"
    );

    let replay = reqwest::get(format!(
        "{base}/api/stream/resume/big-1?user_id=lee&last_index=0"
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let replayed = ndjson_events(&replay);
    assert_eq!(
        of_type(&replayed, "tool_call_result")[0]["content"],
        result[0]["content"],
        "the replay carries the spilled body"
    );
    let (status, messages) = get_json(&format!(
        "{base}/api/conversations/big-1/messages?user_id=lee"
    ))
    .await;
    assert_eq!(status, 200);
    assert!(
        messages.to_string().len() > 2 * 8 * times,
        "both large messages are there"
    );

    let (status, _) = send_json(
        Method::DELETE,
        &format!("{base}/api/conversations/big-1?user_id=lee"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        bucket_store
            .list(&ObjectKey::parse(".events/big-1").unwrap())
            .await
            .unwrap()
            .is_empty(),
        "the bodies went with the session"
    );
}

/// An object store that stops answering after start-up: the routes that need it answer 503 in
/// the envelope without its address or error, readiness names it, and runs go on without it.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_object_store_is_a_503_and_runs_go_on() {
    let port = free_port();
    let moto = ChildGuard(
        std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server is on PATH (tests/run.sh installs it)"),
    );
    wait_for_port(port, Duration::from_secs(30)).await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let llm = MockLlm::start(sage_mock_llm::MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let shim = sage_local_on_file_store(
        dir.path(),
        &llm.base_url,
        &[
            "--minio_endpoint",
            &endpoint,
            "--minio_bucket_name",
            "going-away",
        ],
        &MOTO_ENV,
    )
    .await;
    let base = shim.url.clone();
    drop(moto);

    let (status, answer) = upload(&base, "?user_id=lee", "notes.txt", b"hello".to_vec()).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], 503);
    assert!(
        !answer.to_string().contains(&port.to_string()),
        "no address in the answer: {answer}"
    );
    let events = post_ndjson(
        &format!("{base}/api/stream"),
        &json!({"session_id": "gone-1", "user_id": "lee", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_tail(&events, "gone-1");
    let (status, listed) = send_json(
        Method::POST,
        &format!("{base}/api/sessions/gone-1/file_workspace?user_id=lee"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 503, "{listed}");
    let (status, ready) = get_json(&format!("{base}/api/health/ready")).await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["data"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|line| line.as_str().unwrap().starts_with("files (")
                && !line.as_str().unwrap().ends_with(": ok")),
        "{ready}"
    );
}
