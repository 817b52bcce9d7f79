//! Knowledge bases end to end under `sage-local`: create a base, upload documents, let the
//! indexing job (its timer, or `sage-local jobs index`) parse, embed and index them, retrieve
//! passages, and give a run the retrieval tool; on the embedded index with embeddings from the
//! scripted model, and on OpenSearch (osmem-server) text only. Nobody reaches another's bases.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const RUST_DOC: &str = "# Ownership\n\nEach value in Rust has one owner. When the owner goes out of \
    scope, the value is dropped.\n\nBorrowing lends a value without moving ownership.";
const KITTEN_DOC: &str = "Kitten care\n\nFeed a young kitten four small meals a day and keep \
    fresh water nearby.";

async fn call(
    base: &str,
    method: Method,
    path: &str,
    user: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let separator = if path.contains('?') { '&' } else { '?' };
    call_json(
        method,
        &format!("{base}{path}{separator}user_id={user}"),
        body,
    )
    .await
}

async fn create_base(base: &str, user: &str, name: &str, kind: &str) -> String {
    let (status, answer) = call(
        base,
        Method::POST,
        "/api/knowledge-base/add",
        user,
        Some(&json!({"name": name, "type": kind, "intro": "test notes", "language": "en"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["user_id"], user);
    answer["data"]["kdb_id"].as_str().unwrap().to_owned()
}

async fn add_files(base: &str, user: &str, kdb_id: &str, files: &[(&str, &str)]) -> (u16, Value) {
    let files: Vec<(&str, Vec<u8>)> = files
        .iter()
        .map(|(name, text)| (*name, text.as_bytes().to_vec()))
        .collect();
    add_file_bytes(base, user, kdb_id, files).await
}

async fn add_file_bytes(
    base: &str,
    user: &str,
    kdb_id: &str,
    files: Vec<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new()
        .text("kdb_id", kdb_id.to_owned())
        .text("override", "true");
    for (name, bytes) in files {
        form = form.part(
            "files",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
        );
    }
    let response = reqwest::Client::new()
        .post(format!(
            "{base}/api/knowledge-base/doc/add_by_files?user_id={user}"
        ))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn documents(base: &str, user: &str, kdb_id: &str) -> Vec<Value> {
    let (status, answer) = call(
        base,
        Method::GET,
        &format!("/api/knowledge-base/doc/list?kdb_id={kdb_id}&page_no=1&page_size=50"),
        user,
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["data"]["list"].as_array().unwrap().clone()
}

/// Waits until no document of the base is waiting or being indexed.
async fn indexed(base: &str, user: &str, kdb_id: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let docs = documents(base, user, kdb_id).await;
        if docs.iter().all(|doc| doc["status"].as_u64().unwrap() >= 2) {
            return docs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "documents still waiting: {docs:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn retrieve(base: &str, user: &str, kdb_id: &str, query: &str) -> (u16, Value) {
    call(
        base,
        Method::POST,
        "/api/knowledge-base/retrieve",
        user,
        Some(&json!({"kdb_id": kdb_id, "query": query, "top_k": 5})),
    )
    .await
}

fn doc_names(answer: &Value) -> Vec<String> {
    answer["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| hit["title"].as_str().unwrap().to_owned())
        .collect()
}

fn shim_args<'a>(dir: &'a str, llm: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--db_type",
        "file",
        "--db_path",
        dir,
        "--workspace",
        dir,
        "--default_llm_api_key",
        "k",
        "--default_llm_api_base_url",
        llm,
        "--preset_running_config",
        "/nonexistent/agent_setting.json",
        "--preset_mcp_config",
        "/nonexistent/mcp_setting.json",
    ];
    args.extend_from_slice(extra);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_are_indexed_with_vectors_retrieved_and_given_to_a_run() {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().display().to_string();
    let args = shim_args(
        &dir_text,
        &llm.base_url,
        &[
            "--embedding_base_url",
            &llm.base_url,
            "--embedding_model",
            "mock-embed",
            "--embedding_dims",
            "64",
            "--knowledge_index_interval_seconds",
            "1",
        ],
    );
    let shim = ShimProcess::start(dir.path(), &args, &[]).await;
    let base = shim.url.clone();

    let (status, ready) = get_json(&format!("{base}/api/health/ready")).await;
    assert_eq!(status, 200, "{ready}");
    let search_line = ready["data"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|line| line.starts_with("search ("))
        .unwrap_or_else(|| panic!("a search check: {ready}"))
        .to_owned();
    assert!(
        search_line.contains("embedded index") && search_line.contains("vectors: mock-embed"),
        "{search_line}"
    );
    assert!(search_line.ends_with("): ok"), "{search_line}");

    let kdb_id = create_base(&base, "alice", "Handbook", "document").await;
    let (status, added) = add_files(
        &base,
        "alice",
        &kdb_id,
        &[("rust.md", RUST_DOC), ("pets.txt", KITTEN_DOC)],
    )
    .await;
    assert_eq!(status, 200, "{added}");
    let task_id = added["data"]["taskId"].as_str().unwrap().to_owned();
    let docs = indexed(&base, "alice", &kdb_id).await;
    assert_eq!(docs.len(), 2);
    for doc in &docs {
        assert_eq!(doc["status"], 2, "indexed: {doc}");
        assert_eq!(doc["task_id"], task_id.as_str());
        assert!(doc["passages"].as_u64().unwrap() >= 1, "{doc}");
    }
    let embedded: Vec<Value> = llm
        .requests()
        .await
        .into_iter()
        .filter(|body| body.get("input").is_some())
        .collect();
    assert!(!embedded.is_empty(), "the passages were embedded");
    assert_eq!(embedded[0]["model"], "mock-embed");
    assert_eq!(embedded[0]["dimensions"], 64);

    let (status, found) = retrieve(&base, "alice", &kdb_id, "who owns a value?").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(doc_names(&found)[0], "rust.md", "{found}");
    let top = &found["data"]["results"][0];
    assert!(top["doc_content"].as_str().unwrap().contains("one owner"));
    assert!(top["path"].as_str().unwrap().ends_with("/rust.md"), "{top}");
    assert!(docs.iter().any(|doc| doc["id"] == top["doc_id"]), "{top}");
    // "kittens" is not a word of either document: the vectors find the stem.
    let (status, stems) = retrieve(&base, "alice", &kdb_id, "kittens").await;
    assert_eq!(status, 200, "{stems}");
    assert_eq!(
        doc_names(&stems).first().map(String::as_str),
        Some("pets.txt"),
        "{stems}"
    );

    // Another user sees none of it.
    let (status, theirs) = retrieve(&base, "bob", &kdb_id, "owner").await;
    assert_eq!(status, 404, "{theirs}");
    let (status, listed) = call(&base, Method::GET, "/api/knowledge-base/list", "bob", None).await;
    assert_eq!(
        (status, listed["data"]["total"].clone()),
        (200, json!(0)),
        "{listed}"
    );
    let (status, _) = add_files(&base, "bob", &kdb_id, &[("x.txt", "mine")]).await;
    assert_eq!(status, 404);
    let doc_id = top["doc_id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &base,
        Method::DELETE,
        &format!("/api/knowledge-base/doc/delete/{doc_id}"),
        "bob",
        None,
    )
    .await;
    assert_eq!(status, 404, "bob cannot delete alice's document");

    // The list as the knowledge page shows it.
    let (status, listed) = call(
        &base,
        Method::GET,
        "/api/knowledge-base/list?query_name=hand&page_no=1&page_size=10",
        "alice",
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let item = &listed["data"]["list"][0];
    assert_eq!(item["id"], kdb_id.as_str());
    assert_eq!(item["docNum"], 2);
    assert!(item["index_name"].as_str().unwrap().starts_with("kdb_"));
    assert!(
        item["createTime"].as_str().unwrap().starts_with("20"),
        "{item}"
    );
    let index_name = item["index_name"].as_str().unwrap().to_owned();

    // A run with the base gets the retrieval tool, and its results cite the document.
    let message = format!(
        r#"call:retrieve_on_zavixai_db{{"index_name": "{index_name}", "query": "ownership of a value"}}"#
    );
    let events = post_ndjson(
        &format!("{base}/api/stream"),
        &json!({
            "session_id": "kb-run", "user_id": "alice",
            "messages": [{"role": "user", "content": message}],
            "available_knowledge_bases": [kdb_id],
        }),
    )
    .await;
    assert_tail(&events, "kb-run");
    let results = of_type(&events, "tool_call_result");
    assert_eq!(results.len(), 1, "{events:?}");
    let content = results[0]["content"].to_string();
    assert!(results[0]["content"].get("error").is_none(), "{content}");
    assert!(
        content.contains("one owner") && content.contains(&doc_id) && content.contains("rust.md"),
        "{content}"
    );
    let prompts = llm.requests().await;
    let system = prompts
        .iter()
        .rev()
        .find_map(|body| body["messages"][0]["content"].as_str().map(str::to_owned))
        .unwrap_or_default();
    assert!(
        system.contains(&format!("\"Handbook数据库的index_name\": \"{index_name}\"")),
        "{system}"
    );
    let (status, refused) = send_json(
        Method::POST,
        &format!("{base}/api/stream"),
        &json!({
            "user_id": "bob", "messages": [{"role": "user", "content": "hi"}],
            "available_knowledge_bases": [kdb_id],
        }),
    )
    .await;
    assert_eq!(
        status, 404,
        "another user's base is not given to a run: {refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("available_knowledge_bases")
    );

    // Deleting a document takes its passages with it; deleting the base, everything.
    let (status, answer) = call(
        &base,
        Method::DELETE,
        &format!("/api/knowledge-base/doc/delete/{doc_id}"),
        "alice",
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (_, after) = retrieve(&base, "alice", &kdb_id, "owner ownership").await;
    assert!(
        !doc_names(&after).contains(&"rust.md".to_owned()),
        "{after}"
    );
    let (status, _) = call(
        &base,
        Method::DELETE,
        &format!("/api/knowledge-base/delete/{kdb_id}"),
        "alice",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = retrieve(&base, "alice", &kdb_id, "kitten").await;
    assert_eq!(status, 404);
    assert!(
        !dir.path().join(".knowledge").join(&kdb_id).exists(),
        "the stored files are gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_that_cannot_be_indexed_fails_after_its_retries_and_can_be_redone() {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().display().to_string();
    let args = shim_args(
        &dir_text,
        &llm.base_url,
        &["--knowledge_index_interval_seconds", "1"],
    );
    let shim = ShimProcess::start(dir.path(), &args, &[]).await;
    let base = shim.url.clone();
    let kdb_id = create_base(&base, "ana", "FAQ", "qa").await;
    let (status, _) = add_files(
        &base,
        "ana",
        &kdb_id,
        &[
            (
                "faq.txt",
                "Q: Opening hours?\nA: Nine to five.\n\nQ: Parking?\nA: Behind the shop.",
            ),
            ("prose.txt", "Just a paragraph with no questions."),
            ("scan.pdf", "%PDF-1.4\nnothing a reader can use"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let docs = indexed(&base, "ana", &kdb_id).await;
    let by_name = |name: &str| {
        docs.iter()
            .find(|doc| doc["doc_name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("faq.txt")["status"], 2);
    assert_eq!(by_name("faq.txt")["passages"], 2, "one passage per pair");
    let failed = by_name("prose.txt");
    assert_eq!(failed["status"], 3, "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("Q&A"),
        "{failed}"
    );
    let (_, found) = retrieve(&base, "ana", &kdb_id, "parking").await;
    assert_eq!(found["data"]["results"][0]["title"], "Parking?", "{found}");

    let (status, _) = call(
        &base,
        Method::POST,
        &format!(
            "/api/knowledge-base/doc/redo/{}",
            failed["id"].as_str().unwrap()
        ),
        "ana",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let again = documents(&base, "ana", &kdb_id).await;
    let redone = again
        .iter()
        .find(|doc| doc["doc_name"] == "prose.txt")
        .unwrap();
    assert!(
        redone["status"].as_u64().unwrap() < 3,
        "queued again: {redone}"
    );
    let docs = indexed(&base, "ana", &kdb_id).await;
    assert_eq!(
        docs.iter()
            .find(|doc| doc["doc_name"] == "prose.txt")
            .unwrap()["status"],
        3,
        "tried again and failed again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_knowledge_requests_are_refused_and_change_nothing() {
    let env = TestEnv::new().await;
    let base = env.server.url.clone();
    let (status, answer) = call(
        &base,
        Method::POST,
        "/api/knowledge-base/add",
        "eve",
        Some(&json!({"name": "x", "type": "wiki"})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("type"),
        "{answer}"
    );
    let (status, answer) = call(
        &base,
        Method::POST,
        "/api/knowledge-base/add",
        "eve",
        Some(&json!({"name": "  "})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("name"));
    let kdb_id = create_base(&base, "eve", "Notes", "document").await;
    let (status, answer) = add_files(&base, "eve", &kdb_id, &[("tool.exe", "MZ")]).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("tool.exe"),
        "{answer}"
    );
    let (status, answer) = call(
        &base,
        Method::POST,
        "/api/knowledge-base/retrieve",
        "eve",
        Some(&json!({"kdb_id": kdb_id, "query": "x", "top_k": 0})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("top_k"));
    let (status, _) = retrieve(&base, "eve", "../../etc", "x").await;
    assert_eq!(status, 404);
    assert!(
        documents(&base, "eve", &kdb_id).await.is_empty(),
        "nothing was added"
    );
    let (status, answer) = call(
        &base,
        Method::GET,
        "/api/knowledge-base/list?page_size=1000",
        "eve",
        None,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("page_size"));
}

/// On OpenSearch, with the job run by hand (`sage-local jobs index`) and no embeddings: text
/// search, and readiness names the service.
#[tokio::test(flavor = "multi_thread")]
async fn on_opensearch_the_job_command_indexes_and_retrieval_is_text_only() {
    let es_url = opensearch_url();
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().display().to_string();
    let args = shim_args(
        &dir_text,
        &llm.base_url,
        &[
            "--es_url",
            &es_url,
            "--knowledge_index_interval_seconds",
            "0",
        ],
    );
    let shim = ShimProcess::start(dir.path(), &args, &[]).await;
    let base = shim.url.clone();
    let (status, ready) = get_json(&format!("{base}/api/health/ready")).await;
    assert_eq!(status, 200, "{ready}");
    let checks = ready["data"]["checks"].to_string();
    assert!(
        checks.contains("search (OpenSearch at")
            && checks.contains("text only: no --embedding_base_url): ok"),
        "{checks}"
    );

    let kdb_id = create_base(&base, "olga", "Manual", "document").await;
    let (status, added) = add_file_bytes(
        &base,
        "olga",
        &kdb_id,
        vec![
            ("rust.md", RUST_DOC.as_bytes().to_vec()),
            (
                "lighthouse.pdf",
                minimal_pdf("Lighthouse keepers record the weather every night"),
            ),
        ],
    )
    .await;
    assert_eq!(status, 200, "{added}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        documents(&base, "olga", &kdb_id).await[0]["status"],
        0,
        "no timer: the documents wait for the job"
    );
    let mut job_args = vec!["index".to_owned()];
    job_args.extend(args.iter().map(|arg| arg.to_string()));
    let report = sage_local_job(dir.path(), &job_args, &[]).await;
    assert_eq!(report["job"], "index");
    assert_eq!(report["indexed"].as_array().unwrap().len(), 2, "{report}");
    for doc in documents(&base, "olga", &kdb_id).await {
        assert_eq!(doc["status"], 2, "{doc}");
    }
    let (status, from_pdf) = retrieve(&base, "olga", &kdb_id, "lighthouse weather").await;
    assert_eq!(status, 200, "{from_pdf}");
    assert_eq!(
        doc_names(&from_pdf),
        ["lighthouse.pdf"],
        "the PDF's text is indexed"
    );

    let (status, found) = retrieve(&base, "olga", &kdb_id, "borrowing ownership").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(doc_names(&found)[0], "rust.md");
    let (_, none) = retrieve(&base, "olga", &kdb_id, "kittens").await;
    assert!(
        doc_names(&none).is_empty(),
        "text only: no stem matches: {none}"
    );
    assert!(
        llm.requests()
            .await
            .iter()
            .all(|body| body.get("input").is_none()),
        "no embeddings were asked for"
    );
}

/// Inside Lambda without OpenSearch each instance's embedded index is its own: knowledge bases
/// are refused with what to deploy instead, and conversation search scans the stored text.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_shared_index_in_lambda_knowledge_bases_say_what_they_need() {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().display().to_string();
    let args = shim_args(&dir_text, &llm.base_url, &[]);
    // What tells the library it runs in a Lambda function; nothing here calls that address.
    let shim = ShimProcess::start(
        dir.path(),
        &args,
        &[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")],
    )
    .await;
    let base = shim.url.clone();
    let (status, answer) = call(
        &base,
        Method::POST,
        "/api/knowledge-base/add",
        "lee",
        Some(&json!({"name": "notes"})),
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("EnableOpenSearch"),
        "{answer}"
    );

    let events = post_ndjson(
        &format!("{base}/api/stream"),
        &json!({"session_id": "l-1", "user_id": "lee", "messages": [{"role": "user", "content": "quince jelly"}]}),
    )
    .await;
    assert_tail(&events, "l-1");
    let (status, found) = call(
        &base,
        Method::GET,
        "/api/conversations?search=quince",
        "lee",
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        found["data"]["total"], 1,
        "the stored text is scanned: {found}"
    );
}
