//! Skills: a zip with `SKILL.md` uploaded, listed, read and edited, offered to a run (the model
//! sees the list and loads one with `load_skill`, or the message asks for one with
//! `<skill>NAME</skill>`), deleted; another user's skill stays out of reach, and bad archives
//! are refused with the field named.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

async fn call(env: &TestEnv, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    call_json(method, &format!("{}{path}", env.server.url), body.as_ref()).await
}

fn csv_skill() -> Vec<u8> {
    skill_zip(
        "csv-report",
        "Turns a CSV file into a short report.",
        "Step 1: read the CSV. Step 2: write REPORT-FORMAT-77.",
        &[("template.md", "# Report for {{title}}")],
    )
}

/// Lee sends `content` in a new conversation; the system prompt and tool names the model got.
async fn lee_asks(env: &TestEnv, content: &str) -> (String, Vec<String>) {
    post_ndjson(
        &env.stream_url(),
        &json!({"user_id": "lee", "messages": [{"role": "user", "content": content}]}),
    )
    .await;
    last_model_request(env).await
}

/// The system prompt and tool names of the model's latest request.
async fn last_model_request(env: &TestEnv) -> (String, Vec<String>) {
    let request = env.llm.turn_requests().await.pop().unwrap();
    let system = request["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let tools = request["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|tool| tool["function"]["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    (system, tools)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_skill_is_uploaded_listed_loaded_by_the_model_edited_and_deleted() {
    let env = TestEnv::new().await;
    let url = env.server.url.clone();
    let (status, uploaded) = upload_skill(&url, "?user_id=lee", None, csv_skill()).await;
    assert_eq!(status, 200, "{uploaded}");
    assert_eq!(
        uploaded["data"],
        json!({"name": "csv-report", "description": "Turns a CSV file into a short report.", "user_id": "lee"})
    );
    let (_, list) = call(&env, Method::GET, "/api/skills?user_id=lee", None).await;
    assert_eq!(list["data"]["skills"], json!([uploaded["data"]]));
    let (_, content) = call(
        &env,
        Method::GET,
        "/api/skills/content?user_id=lee&name=csv-report",
        None,
    )
    .await;
    assert!(
        content["data"]["content"]
            .as_str()
            .unwrap()
            .contains("REPORT-FORMAT-77"),
        "{content}"
    );

    // The model sees the skill in its prompt, gets load_skill, and loads it.
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"user_id": "lee", "available_skills": ["csv-report"],
                "messages": [{"role": "user", "content": r#"call:load_skill{"skill_name": "csv-report"}"#}]}),
    )
    .await;
    assert_tail(&events, &session_of(&events));
    let result = of_type(&events, "tool_call_result");
    assert_eq!(result.len(), 1, "{events:?}");
    let result_text = result[0]["content"].to_string();
    assert!(
        result_text.contains("REPORT-FORMAT-77") && result_text.contains("# Report for"),
        "the instructions and the packed file come back: {result_text}"
    );
    let requests = env.llm.requests().await;
    let first = &requests[requests.len() - 2];
    assert!(
        first["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("csv-report: Turns a CSV file into a short report."),
        "{first}"
    );

    // `<skill>NAME</skill>` at the start of a message puts the instructions and the packed
    // files in the prompt; as in Sage, a run with skills can write files, and runs no code
    // unless its agent names the code tools.
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"user_id": "lee", "messages": [{"role": "user", "content": "<skill>csv-report</skill> sales.csv please"}]}),
    )
    .await;
    assert!(of_type(&events, "error").is_empty(), "{events:?}");
    let (system, tools) = last_model_request(&env).await;
    assert!(system.contains("REPORT-FORMAT-77"), "{system}");
    assert!(
        system.contains("template.md") && system.contains("# Report for {{title}}"),
        "the skill's file is in the prompt: {system}"
    );
    assert!(tools.contains(&"load_skill".to_owned()), "{tools:?}");
    assert!(tools.contains(&"file_write".to_owned()), "{tools:?}");
    assert!(
        !tools.iter().any(|tool| tool.starts_with("execute_")),
        "{tools:?}"
    );
    let (_, plain) = lee_asks(&env, "no skill").await;
    assert!(
        !plain.contains(&"file_write".to_owned()) && !plain.contains(&"load_skill".to_owned()),
        "{plain:?}"
    );

    // Edited: SKILL.md's new text is what the next run loads.
    let new_text = "---\nname: csv-report\ndescription: Reports on CSV, v2.\n---\nUse FORMAT-V2.\n";
    let (status, edited) = call(
        &env,
        Method::PUT,
        "/api/skills/content?user_id=lee",
        Some(json!({"name": "csv-report", "content": new_text})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["data"]["description"], "Reports on CSV, v2.");
    let (system, _) = lee_asks(&env, "<skill>csv-report</skill> again").await;
    assert!(
        system.contains("FORMAT-V2") && !system.contains("REPORT-FORMAT-77"),
        "{system}"
    );
    let (status, renamed) = call(
        &env,
        Method::PUT,
        "/api/skills/content?user_id=lee",
        Some(json!({"name": "csv-report", "content": new_text.replace("name: csv-report", "name: other")})),
    )
    .await;
    assert_eq!(status, 400, "the name stays: {renamed}");

    let (status, _) = call(
        &env,
        Method::DELETE,
        "/api/skills?user_id=lee&name=csv-report",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, list) = call(&env, Method::GET, "/api/skills?user_id=lee", None).await;
    assert_eq!(list["data"]["skills"], json!([]));
    let response = reqwest::Client::new()
        .post(env.stream_url())
        .json(&json!({"user_id": "lee", "available_skills": ["csv-report"], "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        404,
        "a deleted skill is not offered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn another_users_skill_is_out_of_reach_and_its_name_taken() {
    let env = TestEnv::new().await;
    let url = env.server.url.clone();
    let (status, _) = upload_skill(&url, "?user_id=lee", None, csv_skill()).await;
    assert_eq!(status, 200);

    let hijack = skill_zip("csv-report", "Mine now.", "EVIL", &[]);
    let (status, refused) = upload_skill(&url, "?user_id=mallory", None, hijack).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("name"),
        "{refused}"
    );

    let (_, list) = call(&env, Method::GET, "/api/skills?user_id=mallory", None).await;
    assert_eq!(list["data"]["skills"], json!([]));
    for (method, path, body) in [
        (
            Method::GET,
            "/api/skills/content?user_id=mallory&name=csv-report",
            None,
        ),
        (
            Method::PUT,
            "/api/skills/content?user_id=mallory",
            Some(
                json!({"name": "csv-report", "content": "---\nname: csv-report\ndescription: x\n---\nEVIL"}),
            ),
        ),
        (
            Method::DELETE,
            "/api/skills?user_id=mallory&name=csv-report",
            None,
        ),
    ] {
        let (status, body) = call(&env, method.clone(), path, body).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    for body in [
        json!({"user_id": "mallory", "available_skills": ["csv-report"], "messages": [{"role": "user", "content": "hi"}]}),
        json!({"user_id": "mallory", "messages": [{"role": "user", "content": "<skill>csv-report</skill> hi"}]}),
    ] {
        let response = reqwest::Client::new()
            .post(env.stream_url())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 404, "{body}");
    }
    assert!(
        env.llm.requests().await.is_empty(),
        "no run started with lee's skill"
    );

    let (_, content) = call(
        &env,
        Method::GET,
        "/api/skills/content?user_id=lee&name=csv-report",
        None,
    )
    .await;
    assert!(
        content["data"]["content"]
            .as_str()
            .unwrap()
            .contains("REPORT-FORMAT-77"),
        "lee's skill is unchanged: {content}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_archives_are_refused_with_the_field_named_and_nothing_stored() {
    let env = TestEnv::new().await;
    let url = env.server.url.clone();
    let bad_name = skill_zip("..%2f..", "d", "x", &[]);
    let no_front_matter = {
        use std::io::Write;
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        writer
            .start_file("SKILL.md", zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(b"just text").unwrap();
        writer.finish().unwrap().into_inner()
    };
    let escaping = {
        use std::io::Write;
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        writer.start_file("SKILL.md", options).unwrap();
        writer
            .write_all(b"---\nname: ok\ndescription: d\n---\nx")
            .unwrap();
        writer.start_file("../../etc/cron.d/x", options).unwrap();
        writer.write_all(b"* * * * * root evil").unwrap();
        writer.finish().unwrap().into_inner()
    };
    for (case, archive, expected) in [
        ("not a zip", b"plain text".to_vec(), "not a zip"),
        ("no SKILL.md front matter", no_front_matter, "front matter"),
        (
            "a path that leaves the archive",
            escaping,
            "leaves the archive",
        ),
        ("a name with path characters", bad_name, "name"),
        // Just over the 1 MiB limit: the server answers 413 without reading the rest, and a
        // client still writing a much larger body could see the connection close first.
        (
            "over the size limit",
            vec![0u8; 1024 * 1024 + 64 * 1024],
            "",
        ),
    ] {
        let (status, body) = upload_skill(&url, "?user_id=lee", None, archive).await;
        assert!(status == 400 || status == 413, "{case}: {status} {body}");
        assert_eq!(body["code"], status, "{case}: the envelope: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(expected),
            "{case}: {body}"
        );
    }
    let response = reqwest::Client::new()
        .post(format!("{url}/api/skills/upload?user_id=lee"))
        .multipart(reqwest::multipart::Form::new().text("other", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("file"), "{body}");
    let (_, list) = call(&env, Method::GET, "/api/skills?user_id=lee", None).await;
    assert_eq!(list["data"]["skills"], json!([]));
}

/// A file server on loopback: the skill's zip at `/csv-report.zip`, anything else 404.
async fn zip_server() -> String {
    let zip = csv_skill();
    let app = axum::Router::new().route(
        "/csv-report.zip",
        axum::routing::get(move || {
            let zip = zip.clone();
            async move { ([("content-type", "application/zip")], zip) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_skill_is_imported_from_a_url_through_the_download_guard() {
    let files = zip_server().await;
    let url = format!("{files}/csv-report.zip");

    // Loopback is not public: refused unless the operator allows private addresses.
    let guarded = TestEnv::new().await;
    let (status, answer) = call(
        &guarded,
        Method::POST,
        "/api/skills/import-url?user_id=ada",
        Some(json!({"url": url})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.starts_with("url: ") && message.contains("not a public address"),
        "{answer}"
    );
    let (_, listed) = call(&guarded, Method::GET, "/api/skills?user_id=ada", None).await;
    assert_eq!(listed["data"]["skills"], json!([]), "nothing was saved");

    let env = TestEnv::with(Default::default(), &["--download_allow_private"]).await;
    let (status, answer) = call(
        &env,
        Method::POST,
        "/api/skills/import-url?user_id=ada",
        Some(json!({"url": url})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["name"], "csv-report");
    let (_, content) = call(
        &env,
        Method::GET,
        "/api/skills/content?name=csv-report&user_id=ada",
        None,
    )
    .await;
    assert!(
        content["data"]["content"]
            .as_str()
            .unwrap()
            .contains("REPORT-FORMAT-77"),
        "{content}"
    );

    for (body, field_message) in [
        (json!({"url": format!("{files}/missing.zip")}), "404"),
        (
            json!({"url": "ftp://example.com/skill.zip"}),
            "http or https",
        ),
        (json!({"url": " "}), "url:"),
    ] {
        let (status, answer) = call(
            &env,
            Method::POST,
            "/api/skills/import-url?user_id=ada",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(field_message),
            "{body}: {answer}"
        );
    }
}
