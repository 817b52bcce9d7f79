//! The usage ledger and the daily budgets: every run's usage is recorded once, with its
//! `token_usage` event; `GET /api/usage` reads it back by day and model, and an operator reads
//! everyone's; a spent daily budget answers 429 on every instance sharing the store.

use serde_json::{Value, json};

use crate::common::*;

/// A price that makes each token cost a whole dollar (two for completion tokens).
const DOLLAR_A_TOKEN: &str =
    r#"{"*": {"input_per_million": 1000000, "output_per_million": 2000000}}"#;

fn today() -> String {
    sage_core::util::Day::today().to_string()
}

/// What the run's `token_usage` event says it spent: (calls, total tokens, cost if priced).
fn spent(events: &[Value]) -> (u64, u64, f64) {
    let usage = &of_type(events, "token_usage")[0]["metadata"]["token_usage"];
    let calls = usage["per_step_info"].as_array().unwrap().len() as u64;
    let total = &usage["total_info"];
    (
        calls,
        total["total_tokens"].as_u64().unwrap(),
        total["cost"].as_f64().unwrap_or(f64::NAN),
    )
}

fn looping_run(session: &str, user: &str) -> Value {
    json!({"session_id": session, "user_id": user, "available_tools": ["todo_read"],
           "max_loop_count": 3,
           "messages": [{"role": "user", "content": "call-forever:todo_read"}]})
}

fn words_run(session: &str, user: &str, words: u32) -> Value {
    json!({"session_id": session, "user_id": user,
           "messages": [{"role": "user", "content": format!("words:{words}")}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_equals_the_runs_token_usage_and_replays_never_count_twice() {
    let env = TestEnv::with(Default::default(), &["--price_table", DOLLAR_A_TOKEN]).await;
    let url = env.server.url.clone();
    let mut ann_runs = vec![
        post_ndjson(&env.stream_url(), &words_run("ul-1", "ann", 5)).await,
        post_ndjson(&env.stream_url(), &looping_run("ul-1", "ann")).await,
    ];
    // A retried request with the same Idempotency-Key attaches to the first run.
    let keyed = |body: &Value| {
        reqwest::Client::new()
            .post(format!("{url}/api/stream"))
            .header("idempotency-key", "ul-key")
            .json(body)
    };
    let first = keyed(&words_run("ul-2", "ann", 7)).send().await.unwrap();
    ann_runs.push(ndjson_events(&first.text().await.unwrap()));
    let retried = keyed(&words_run("ul-2", "ann", 7)).send().await.unwrap();
    assert_eq!(retried.status(), 200);
    let replayed = ndjson_events(&retried.text().await.unwrap());
    assert_eq!(
        spent(&replayed),
        spent(&ann_runs[2]),
        "the same run, replayed"
    );
    // A resume replays what was stored.
    let resumed = reqwest::get(format!(
        "{url}/api/stream/resume/ul-1?user_id=ann&last_index=0"
    ))
    .await
    .unwrap();
    assert_eq!(resumed.status(), 200);
    let resumed = ndjson_events(&resumed.text().await.unwrap());
    assert_eq!(
        spent(&resumed),
        spent(&ann_runs[0]),
        "the run that followed event 0, replayed"
    );
    let bob_run = post_ndjson(&env.stream_url(), &words_run("ul-3", "bob", 4)).await;

    let (calls, tokens, cost) = ann_runs
        .iter()
        .map(|run| spent(run))
        .fold((0, 0, 0.0), |(calls, tokens, cost), (c, t, d)| {
            (calls + c, tokens + t, cost + d)
        });
    assert!(calls >= 5, "the looping run made several calls: {calls}");
    let (status, report) = get_json(&format!("{url}/api/usage?user_id=ann")).await;
    assert_eq!(status, 200, "{report}");
    let data = &report["data"];
    assert_eq!(data["to"], today(), "{data}");
    let total = &data["total"];
    assert_eq!(total["runs"], 3, "{data}");
    assert_eq!(total["calls"], calls, "{data}");
    assert_eq!(total["total_tokens"], tokens, "{data}");
    assert!(
        (total["cost"].as_f64().unwrap() - cost).abs() < 1e-6,
        "{data}"
    );
    assert_eq!(
        total["prompt_tokens"].as_u64().unwrap() + total["completion_tokens"].as_u64().unwrap(),
        tokens
    );
    let lines = data["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "one day, one model: {data}");
    assert_eq!(lines[0]["day"], today());
    assert_eq!(lines[0]["model"], "deepseek-chat");
    assert_eq!(lines[0]["total_tokens"], tokens);
    assert!(lines[0].get("user_id").is_none(), "{data}");

    // Everyone's, by user: the operator's view (anyone under --no_auth).
    let (status, all) = get_json(&format!("{url}/api/usage/all")).await;
    assert_eq!(status, 200, "{all}");
    let lines = all["data"]["lines"].as_array().unwrap();
    let users: Vec<&str> = lines
        .iter()
        .map(|l| l["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["ann", "bob"], "{all}");
    assert_eq!(lines[1]["total_tokens"], spent(&bob_run).1);
    assert_eq!(all["data"]["total"]["runs"], 4);

    // Deleting a conversation keeps what it spent.
    let (status, _) = send_json(
        reqwest::Method::DELETE,
        &format!("{url}/api/conversations/ul-1?user_id=ann"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, report) = get_json(&format!("{url}/api/usage?user_id=ann")).await;
    assert_eq!(report["data"]["total"]["total_tokens"], tokens);

    // Other days: nothing spent, no cost known.
    let (status, past) = get_json(&format!(
        "{url}/api/usage?user_id=ann&from=2020-01-01&to=2020-01-31"
    ))
    .await;
    assert_eq!(status, 200, "{past}");
    assert_eq!(past["data"]["total"]["runs"], 0);
    assert_eq!(past["data"]["total"]["cost"], Value::Null);
    assert_eq!(past["data"]["lines"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_usage_span_that_is_not_a_range_of_days_is_refused() {
    let env = TestEnv::new().await;
    for (query, field) in [
        ("from=2026-13-01", "from"),
        ("to=04/12/2026", "to"),
        ("from=2026-12-05&to=2026-12-04", "from"),
        ("from=2020-01-01&to=2026-12-04", "from"),
    ] {
        let (status, body) = get_json(&format!("{}/api/usage?{query}", env.server.url)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], 400);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{query}: {body}"
        );
    }
}

fn mariadb_flags(database: &str) -> Vec<String> {
    let settings = mysql_settings();
    [
        "--db_type",
        "mysql",
        "--mysql_host",
        &settings.host,
        "--mysql_port",
        &settings.port.to_string(),
        "--mysql_user",
        &settings.user,
        "--mysql_password",
        &settings.password,
        "--mysql_database",
        database,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn error_text(events: &[Value]) -> String {
    let errors = of_type(events, "error");
    assert_eq!(errors.len(), 1, "{events:#?}");
    errors[0]["content"].as_str().unwrap().to_owned()
}

/// Two instances on one MariaDB: the budget counts what either spent, a run stops at what was
/// left of it, and the next run is refused with 429 on both; another user is not affected.
#[tokio::test(flavor = "multi_thread")]
async fn a_spent_daily_token_budget_stops_runs_on_every_instance() {
    let llm = MockLlm::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--default_llm_api_key".to_owned(),
        "k".into(),
        "--default_llm_api_base_url".into(),
        llm.base_url.clone(),
        "--user_daily_tokens".into(),
        "200".into(),
    ];
    args.extend(mariadb_flags(&fresh_name("sage_test")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = ShimProcess::start(dir.path(), &args, &[]).await;
    let b = ShimProcess::start(dir.path(), &args, &[]).await;

    let first = post_ndjson(
        &format!("{}/api/stream", a.url),
        &words_run("bud-1", "ann", 5),
    )
    .await;
    assert_tail(&first, "bud-1");
    let (_, used, _) = spent(&first);
    assert!(used < 200, "{used}");
    let mut looping = looping_run("bud-2", "ann");
    looping["max_loop_count"] = json!(50);
    let second = post_ndjson(&format!("{}/api/stream", b.url), &looping).await;
    assert_tail(&second, "bud-2");
    let left = 200 - used;
    assert!(
        error_text(&second).contains(&format!(
            "the {left} tokens left of your daily budget (user_daily_tokens)"
        )),
        "{second:#?}"
    );
    let (_, report) = get_json(&format!("{}/api/usage?user_id=ann", a.url)).await;
    let today_total = report["data"]["total"]["total_tokens"].as_u64().unwrap();
    assert!(today_total >= 200, "{report}");

    for instance in [&a, &b] {
        let (status, refused) = send_json(
            reqwest::Method::POST,
            &format!("{}/api/stream", instance.url),
            &words_run("bud-3", "ann", 3),
        )
        .await;
        assert_eq!(status, 429, "{refused}");
        assert_eq!(refused["code"], 429);
        let message = refused["message"].as_str().unwrap();
        assert!(
            message.contains("daily budget of 200 tokens (user_daily_tokens) is spent"),
            "{message}"
        );
    }
    let (status, messages) = get_json(&format!(
        "{}/api/conversations/bud-3/messages?user_id=ann",
        b.url
    ))
    .await;
    assert_eq!(status, 404, "a refused run stores nothing: {messages}");

    let other = post_ndjson(
        &format!("{}/api/stream", b.url),
        &words_run("bud-4", "bob", 3),
    )
    .await;
    assert_tail(&other, "bud-4");
    assert!(of_type(&other, "error").is_empty(), "{other:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daily_cost_budget_needs_the_price_table_and_refuses_once_spent() {
    let refused = sage_core::Config::try_from_args(["sage", "--user_daily_cost", "1"]).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("--user_daily_cost needs --price_table"),
        "{refused}"
    );
    let env = TestEnv::with(
        Default::default(),
        &["--price_table", DOLLAR_A_TOKEN, "--user_daily_cost", "20"],
    )
    .await;
    let first = post_ndjson(&env.stream_url(), &words_run("cost-1", "ann", 30)).await;
    assert_tail(&first, "cost-1");
    let (_, _, cost) = spent(&first);
    assert!(cost >= 20.0, "one run spent the day's budget: ${cost}");
    let (status, refused) = send_json(
        reqwest::Method::POST,
        &env.stream_url(),
        &words_run("cost-2", "ann", 3),
    )
    .await;
    assert_eq!(status, 429, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("(user_daily_cost) is spent"),
        "{refused}"
    );
}
