//! Agents: the presets and the caller's own in one list, saved, used in a stream (the model gets
//! the agent's prompt), changed, deleted; someone else's agent and the presets stay out of reach.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

struct Env {
    llm: MockLlm,
    server: Server,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    let llm = MockLlm::start(sage_mock_llm::MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let presets = dir.path().join("agent_setting.json");
    std::fs::write(
        &presets,
        json!({"preset-analyst": {"name": "Analyst", "systemPrefix": "You are the preset analyst.", "maxLoopCount": 3}})
            .to_string(),
    )
    .unwrap();
    let db = dir.path().display().to_string();
    let workspace = dir.path().join("workspace").display().to_string();
    let presets = presets.display().to_string();
    let config = sage_core::Config::try_from_args([
        "sage",
        "--db_path",
        &db,
        "--workspace",
        &workspace,
        "--default_llm_api_key",
        "k",
        "--default_llm_api_base_url",
        &llm.base_url,
        "--preset_running_config",
        &presets,
        "--preset_mcp_config",
        "/nonexistent/mcp_setting.json",
    ])
    .unwrap();
    let server = Server::start(config).await;
    Env {
        llm,
        server,
        _dir: dir,
    }
}

impl Env {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        call_json(method, &format!("{}{path}", self.server.url), body.as_ref()).await
    }

    async fn stream(&self, user: &str, agent_id: &str) -> (u16, Vec<Value>) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/stream", self.server.url))
            .json(&json!({"user_id": user, "agent_id": agent_id, "messages": [{"role": "user", "content": "hello"}]}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let events = if status == 200 {
            ndjson_events(&text)
        } else {
            vec![serde_json::from_str(&text).unwrap()]
        };
        (status, events)
    }

    /// The system prompt of the model's latest request.
    async fn last_system_prompt(&self) -> String {
        let request = self.llm.requests().await.pop().unwrap();
        request["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn writer() -> Value {
    json!({
        "name": "Writer",
        "description": "drafts texts",
        "systemPrefix": "You are Writer-7, terse and exact.",
        "availableTools": [],
        "availableSkills": [],
        "memoryType": "session",
        "agentMode": "simple",
        "deepThinking": false,
        "moreSuggest": false,
        "maxLoopCount": 5,
        "llm_provider_id": null
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_is_saved_listed_used_changed_and_deleted_by_its_owner_only() {
    let env = start().await;
    let (status, list) = env
        .call(Method::GET, "/api/agent/list?user_id=lee", None)
        .await;
    assert_eq!(status, 200, "{list}");
    let first = &list["data"][0];
    assert_eq!(
        (
            first["id"].as_str(),
            first["user_id"].as_str(),
            first["name"].as_str()
        ),
        (Some("preset-analyst"), Some(""), Some("Analyst")),
        "the client needs a non-empty list: {list}"
    );

    let (status, created) = env
        .call(
            Method::POST,
            "/api/agent/create?user_id=lee",
            Some(writer()),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let agent_id = created["data"]["agent_id"].as_str().unwrap().to_owned();
    assert!(
        agent_id.len() == 14
            && agent_id.starts_with("agent_")
            && agent_id[6..].chars().all(|c| c.is_ascii_hexdigit()),
        "{agent_id}"
    );
    let (status, body) = env
        .call(
            Method::POST,
            "/api/agent/create?user_id=lee",
            Some(writer()),
        )
        .await;
    assert_eq!(status, 409, "one Writer per owner: {body}");
    let (status, _) = env
        .call(
            Method::POST,
            "/api/agent/create?user_id=kim",
            Some(writer()),
        )
        .await;
    assert_eq!(status, 200, "kim may have a Writer of her own");

    let (_, list) = env
        .call(Method::GET, "/api/agent/list?user_id=lee", None)
        .await;
    let mine: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|agent| agent["user_id"] == "lee")
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "lee sees the presets and his own only: {list}"
    );
    assert_eq!(mine[0]["id"], agent_id.as_str());
    assert_eq!(
        mine[0]["systemPrefix"],
        "You are Writer-7, terse and exact."
    );
    assert_eq!(mine[0]["maxLoopCount"], 5);
    assert!(mine[0]["created_at"].as_str().unwrap().ends_with("+00:00"));

    // A stream that names the agent runs with its prompt, and the conversation records it.
    let (status, events) = env.stream("lee", &agent_id).await;
    assert_eq!(status, 200, "{events:?}");
    assert!(!answer_text(&events).is_empty());
    assert!(
        env.last_system_prompt().await.contains("You are Writer-7"),
        "the model got the agent's prompt"
    );
    let (_, conversations) = env
        .call(Method::GET, "/api/conversations?user_id=lee", None)
        .await;
    assert_eq!(
        conversations["data"]["list"][0]["agent_id"],
        agent_id.as_str()
    );
    assert_eq!(conversations["data"]["list"][0]["agent_name"], "Writer");
    let (status, _) = env.stream("lee", "preset-analyst").await;
    assert_eq!(status, 200);
    assert!(
        env.last_system_prompt()
            .await
            .contains("You are the preset analyst.")
    );

    // Someone else's agent, and one that does not exist.
    let (status, events) = env.stream("kim", &agent_id).await;
    assert_eq!(status, 403, "{events:?}");
    let (status, events) = env.stream("lee", "agent_00000000").await;
    assert_eq!(status, 404, "{events:?}");
    assert!(events[0]["message"].as_str().unwrap().contains("agent_id"));

    let path = format!("/api/agent/{agent_id}");
    let mut renamed = writer();
    renamed["name"] = json!("Editor");
    renamed["systemPrefix"] = json!("You are Editor-9.");
    let (status, _) = env
        .call(
            Method::PUT,
            &format!("{path}?user_id=kim"),
            Some(renamed.clone()),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = env
        .call(Method::DELETE, &format!("{path}?user_id=kim"), None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = env
        .call(
            Method::PUT,
            "/api/agent/preset-analyst?user_id=lee",
            Some(renamed.clone()),
        )
        .await;
    assert_eq!(status, 403, "presets are read-only");
    let (status, body) = env
        .call(Method::PUT, &format!("{path}?user_id=lee"), Some(renamed))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = env.stream("lee", &agent_id).await;
    assert_eq!(status, 200);
    assert!(env.last_system_prompt().await.contains("You are Editor-9."));

    let (status, _) = env
        .call(Method::DELETE, &format!("{path}?user_id=lee"), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = env
        .call(Method::DELETE, &format!("{path}?user_id=lee"), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = env.stream("lee", &agent_id).await;
    assert_eq!(status, 404);
    let (_, template) = env
        .call(
            Method::GET,
            "/api/agent/template/default_system_prompt",
            None,
        )
        .await;
    assert!(!template["data"]["content"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_agent_settings_and_ones_this_service_cannot_act_on_are_refused_by_name() {
    let env = start().await;
    for (change, field, status) in [
        (json!({"name": ""}), "name", 400),
        (json!({"name": "x".repeat(65)}), "name", 400),
        (json!({"availableSkills": ["pdf"]}), "availableSkills", 404),
        (
            json!({"availableKnowledgeBases": ["kb1"]}),
            "availableKnowledgeBases",
            404,
        ),
        (
            json!({"availableSubAgentIds": ["agent_1"]}),
            "availableSubAgentIds",
            404,
        ),
        (
            json!({"llm_provider_id": "provider-1"}),
            "llm_provider_id",
            404,
        ),
        (json!({"maxLoopCount": 0}), "maxLoopCount", 400),
        (json!({"agentMode": "swarm"}), "agentMode", 422),
        (json!({"availableTools": "echo"}), "availableTools", 422),
    ] {
        let mut body = writer();
        for (name, value) in change.as_object().unwrap() {
            body[name] = value.clone();
        }
        let (got, answer) = env
            .call(Method::POST, "/api/agent/create?user_id=lee", Some(body))
            .await;
        assert_eq!(got, status, "{change}: {answer}");
        let said = format!("{} {}", answer["message"], answer["error_detail"]);
        assert!(said.contains(field), "{change}: {answer}");
    }
    let (_, list) = env
        .call(Method::GET, "/api/agent/list?user_id=lee", None)
        .await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "nothing was saved: {list}"
    );
}

/// Without a preset file the list still has an agent (Sage's client shows no input box
/// without one), and a stream can name it.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_preset_file_one_built_in_agent_is_offered() {
    let env = TestEnv::new().await;
    let (status, list) = get_json(&format!("{}/api/agent/list?user_id=lee", env.server.url)).await;
    assert_eq!(status, 200, "{list}");
    let agents = list["data"].as_array().unwrap();
    assert_eq!(agents.len(), 1, "{list}");
    assert_eq!(
        (
            agents[0]["id"].as_str(),
            agents[0]["name"].as_str(),
            agents[0]["user_id"].as_str()
        ),
        (Some("default"), Some("Sage"), Some(""))
    );
    let events = post_ndjson(
        &env.stream_url(),
        &json!({"user_id": "lee", "agent_id": "default", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert!(!answer_text(&events).is_empty());
    let request = env.llm.requests().await.pop().unwrap();
    let system = request["messages"][0]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(system.contains("You are a helpful assistant."), "{system}");
}

/// `auto-generate` drafts an agent in one model call (only offered tools survive, nothing is
/// saved); `system-prompt/optimize` rewrites a prompt in one call; a model answer that is not
/// an agent is a clear 502, and bad input a 400 naming the field.
#[tokio::test(flavor = "multi_thread")]
async fn the_model_drafts_an_agent_and_improves_a_prompt() {
    let env = start().await;
    let draft = json!({"name": "Reviewer", "description": "Reviews pull requests.",
                       "systemPrefix": "You review code. DRAFT-PROMPT-3",
                       "availableTools": ["read_diff", "rm_rf"]});
    let (status, answer) = env
        .call(
            Method::POST,
            "/api/agent/auto-generate?user_id=lee",
            Some(
                json!({"agent_description": format!("a code reviewer say:```json\n{draft}\n```"),
                        "available_tools": ["read_diff", "post_comment"]}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let agent = &answer["data"]["agent"];
    assert_eq!(
        (
            agent["id"].as_str(),
            agent["name"].as_str(),
            agent["systemPrefix"].as_str(),
            &agent["availableTools"]
        ),
        (
            Some(""),
            Some("Reviewer"),
            Some("You review code. DRAFT-PROMPT-3"),
            &json!(["read_diff"])
        ),
        "{answer}"
    );
    let asked = env.llm.requests().await.pop().unwrap();
    let question = asked["messages"][1]["content"].as_str().unwrap();
    assert!(
        question.contains("read_diff, post_comment") && question.contains("a code reviewer"),
        "the model is told the description and the tools: {question}"
    );
    let (_, list) = env
        .call(Method::GET, "/api/agent/list?user_id=lee", None)
        .await;
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|agent| agent["name"] != "Reviewer"),
        "a draft is not saved: {list}"
    );

    let (status, answer) = env
        .call(
            Method::POST,
            "/api/agent/system-prompt/optimize?user_id=lee",
            Some(
                json!({"original_prompt": "be helpful say:You are a precise, helpful assistant.",
                        "optimization_goal": "clarity"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["data"]["optimized_prompt"],
        "You are a precise, helpful assistant."
    );
    let asked = env.llm.requests().await.pop().unwrap();
    assert!(
        asked["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("Optimization goal: clarity"),
        "{asked}"
    );

    let (status, answer) = env
        .call(
            Method::POST,
            "/api/agent/auto-generate?user_id=lee",
            Some(json!({"agent_description": "anything say:I would rather not."})),
        )
        .await;
    assert_eq!(status, 502, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("not an agent"));
    for (path, body, field) in [
        (
            "/api/agent/auto-generate?user_id=lee",
            json!({"agent_description": "  "}),
            "agent_description",
        ),
        (
            "/api/agent/system-prompt/optimize?user_id=lee",
            json!({"original_prompt": ""}),
            "original_prompt",
        ),
    ] {
        let (status, answer) = env.call(Method::POST, path, Some(body)).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
}
