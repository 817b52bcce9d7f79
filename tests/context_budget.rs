//! The prompt budget (`context.md`): what the model receives from a session longer than its
//! window, read back from the scripted model's request log, and what each `--context_*` setting
//! changes in it.

use crate::common::*;
use sage_core::context::message_tokens;
use serde_json::{Value, json};

const QUESTION: &str = "what is the name of my dog?";
const DOG: &str = "My dog is named Biscuit";
const WINDOW: u64 = 3000;

fn filler_user(turn: usize) -> String {
    format!("question {turn} about routine matters")
}

/// `turns` earlier turns (the second one about the dog, the rest filler with answers of
/// `answer_chars` characters), then the question.
fn long_session(turns: usize, answer_chars: usize) -> Vec<Value> {
    let mut messages = Vec::new();
    for turn in 0..turns {
        let (user, answer) = if turn == 1 {
            (DOG.to_owned(), "Noted, a fine name.".to_owned())
        } else {
            (filler_user(turn), "w".repeat(answer_chars))
        };
        messages.push(json!({"role": "user", "content": user}));
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    messages.push(json!({"role": "user", "content": QUESTION}));
    messages
}

/// Runs the question after a long session on a server with `flags`; the request the model
/// received.
async fn prompt_after(flags: &[&str], turns: usize, answer_chars: usize) -> Value {
    let env = AppEnv::with_flags(flags).await;
    let events = env
        .app
        .post_ndjson(
            "/api/stream",
            &json!({
                "system_prefix": "You are Sage.",
                "messages": long_session(turns, answer_chars),
                "llm_model_config": {"max_model_len": WINDOW},
            }),
        )
        .await;
    assert_tail(&events, &session_of(&events));
    env.llm
        .requests()
        .await
        .pop()
        .expect("the model was called")
}

fn messages(request: &Value) -> &[Value] {
    request["messages"].as_array().unwrap()
}

fn system_text(request: &Value) -> &str {
    let first = &messages(request)[0];
    assert_eq!(first["role"], "system");
    first["content"].as_str().unwrap()
}

fn user_texts(request: &Value) -> Vec<&str> {
    messages(request)
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect()
}

fn assistant_texts(request: &Value) -> Vec<&str> {
    messages(request)
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["content"].as_str().unwrap())
        .collect()
}

fn prompt_tokens(request: &Value) -> u64 {
    messages(request).iter().map(message_tokens).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_longer_than_the_window_is_fitted_and_recalls_what_matters() {
    let request = prompt_after(&[], 120, 400).await;
    let total: u64 = long_session(120, 400).iter().map(message_tokens).sum();
    assert!(total > 4 * WINDOW, "the session is longer than the window");
    assert!(
        prompt_tokens(&request) <= WINDOW,
        "{}",
        prompt_tokens(&request)
    );

    let system = system_text(&request);
    assert!(system.starts_with("You are Sage."), "{system}");
    assert!(
        system.contains("[Memory 1] (") && system.contains(DOG),
        "the dog turn is recalled: {system}"
    );
    let users = user_texts(&request);
    assert_eq!(users.last(), Some(&QUESTION));
    assert!(users.len() >= 3 && users.len() < 20, "{users:?}");
    let sent: Vec<String> = long_session(120, 400)
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    for user in &users {
        assert!(sent.iter().any(|s| s == user), "user text changed: {user}");
    }
    assert_eq!(
        users[users.len() - 2],
        filler_user(119),
        "the newest turns are whole"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_ratio_sets_the_room_for_recalled_messages() {
    let recalled = prompt_after(&[], 40, 400).await;
    assert!(system_text(&recalled).contains(DOG));
    let none = prompt_after(&["--context_history_ratio", "0"], 40, 400).await;
    assert!(
        !system_text(&none).contains("[Memory"),
        "{}",
        system_text(&none)
    );
    assert!(!system_text(&none).contains(DOG));
}

#[tokio::test(flavor = "multi_thread")]
async fn active_ratio_sets_how_many_whole_turns_are_sent() {
    let default = prompt_after(&[], 40, 400).await;
    let narrow = prompt_after(&["--context_active_ratio", "0.1"], 40, 400).await;
    let wide = prompt_after(
        &[
            "--context_active_ratio",
            "0.5",
            "--context_max_new_message_ratio",
            "0.3",
        ],
        40,
        600,
    )
    .await;
    let (narrow, default, wide) = (
        user_texts(&narrow).len(),
        user_texts(&default).len(),
        user_texts(&wide).len(),
    );
    assert_eq!(narrow, 3, "the last two turns and the current one stay");
    assert!(
        narrow < default && default < wide,
        "{narrow} {default} {wide}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_new_message_ratio_compresses_when_the_room_for_the_answer_is_small() {
    let flags = |ratio: &'static str| {
        [
            "--context_active_ratio",
            "0.5",
            "--context_max_new_message_ratio",
            ratio,
        ]
    };
    let roomy = prompt_after(&flags("0.3"), 40, 400).await;
    assert!(
        assistant_texts(&roomy)
            .iter()
            .all(|text| !text.contains("[Content truncated]")),
        "{roomy}"
    );
    let tight = prompt_after(&flags("0.9"), 40, 400).await;
    let truncated = assistant_texts(&tight)
        .iter()
        .filter(|text| text.ends_with("...[Content truncated]"))
        .count();
    assert!(truncated > 0, "{tight}");
    assert!(prompt_tokens(&tight) < prompt_tokens(&roomy));
    assert_eq!(
        user_texts(&tight),
        user_texts(&roomy),
        "user texts stay whole"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recent_turns_forgets_older_turns_entirely() {
    let request = prompt_after(&["--context_recent_turns", "2"], 40, 400).await;
    assert_eq!(user_texts(&request), [filler_user(39).as_str(), QUESTION]);
    assert!(
        !system_text(&request).contains(DOG),
        "older turns are not recalled either"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_can_set_the_budget_for_its_run() {
    let env = AppEnv::with_flags(&[]).await;
    env.app
        .post_ndjson(
            "/api/stream",
            &json!({
                "messages": long_session(40, 400),
                "llm_model_config": {"max_model_len": WINDOW},
                "context_budget_config": {"recent_turns": 3, "history_ratio": 0},
            }),
        )
        .await;
    let request = env.llm.requests().await.pop().unwrap();
    assert_eq!(user_texts(&request).len(), 3);
    let (status, body) = env
        .app
        .send_json(
            axum::http::Method::POST,
            "/api/stream",
            &json!({"messages": [{"role": "user", "content": "hi"}],
                    "context_budget_config": {"active_ratio": 1.5}}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        body.to_string()
            .contains("context_budget_config.active_ratio"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_compression_level_shows_when_its_trigger_is_set_up() {
    // Level 1: the forced last three turns overflow a tiny active budget; dropping the older
    // answers' <thinking> blocks is enough.
    let env = AppEnv::with_flags(&["--context_active_ratio", "0.05"]).await;
    let thinking = format!("<thinking>{}</thinking>short answer", "t".repeat(2000));
    env.app
        .post_ndjson(
            "/api/stream",
            &json!({
                "messages": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": thinking},
                    {"role": "user", "content": "second"},
                    {"role": "assistant", "content": "fine"},
                    {"role": "user", "content": "third"},
                ],
                "llm_model_config": {"max_model_len": WINDOW},
            }),
        )
        .await;
    let request = env.llm.requests().await.pop().unwrap();
    assert_eq!(assistant_texts(&request), ["short answer", "fine"]);

    // Level 2: answers cut to their first 100 characters (see also max_new_message_ratio).
    let request = prompt_after(&["--context_active_ratio", "0.1"], 10, 2000).await;
    let answers = assistant_texts(&request);
    assert!(
        answers
            .iter()
            .any(|text| *text == format!("{}...[Content truncated]", "w".repeat(100))),
        "{answers:?}"
    );

    // Level 3: the active window (at most 20 turns of ~160 tokens) leaves less than a fifth of
    // the window for the answer, so the call is compressed to 0.3 × the new-message budget: old
    // turns lose their steps, then go.
    let request = prompt_after(
        &[
            "--context_active_ratio",
            "0.9",
            "--context_history_ratio",
            "0.05",
            "--context_max_new_message_ratio",
            "0.05",
        ],
        40,
        600,
    )
    .await;
    let answers = assistant_texts(&request);
    assert!(
        answers.contains(&"...[Execution process omitted]..."),
        "{answers:?}"
    );
    assert_eq!(user_texts(&request).last(), Some(&QUESTION));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_input_over_a_million_tokens_ends_the_run_with_an_error() {
    let env = AppEnv::with_flags(&[]).await;
    // 0.4 tokens per punctuation character: 1.2 million tokens in 3 MB.
    let huge = ".".repeat(3_000_000);
    let events = env
        .app
        .post_ndjson(
            "/api/stream",
            &json!({"messages": [{"role": "user", "content": huge}]}),
        )
        .await;
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1, "{:?}", errors);
    assert!(
        errors[0]["content"].as_str().unwrap().contains("too long"),
        "{}",
        errors[0]
    );
    assert_tail(&events, &session_of(&events));
    assert!(
        env.llm.requests().await.is_empty(),
        "the model is not called"
    );
}
