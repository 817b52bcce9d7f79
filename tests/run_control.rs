//! Never losing a run: resume after a disconnect, idempotent retries, leases that outlive a
//! crash, and interrupts from another instance over MariaDB and DynamoDB.

use std::time::{Duration, Instant};

use crate::common::*;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use sage_mock_llm::MockOptions;
use serde_json::{Value, json};

fn slow(delay_ms: u64) -> MockOptions {
    MockOptions {
        token_delay: Duration::from_millis(delay_ms),
        ..Default::default()
    }
}

fn expected_answer(words: usize) -> String {
    (0..words).map(|i| format!("tok{i} ")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sse_client_that_drops_mid_run_resumes_every_event_exactly_once() {
    let env = TestEnv::with(slow(40), &[]).await;
    let body =
        json!({"session_id": "resume-sse", "messages": [{"role": "user", "content": "words:30"}]});
    let response = reqwest::Client::new()
        .post(env.stream_url())
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut frames = response.bytes_stream().eventsource();
    let mut received: Vec<(u64, Value)> = Vec::new();
    while received.len() < 5 {
        let event = frames.next().await.unwrap().unwrap();
        received.push((
            event.id.parse().unwrap(),
            serde_json::from_str(&event.data).unwrap(),
        ));
    }
    drop(frames); // the client hangs up mid-run

    let last_id = received.last().unwrap().0;
    let resumed = reqwest::Client::new()
        .get(format!("{}/api/stream/resume/resume-sse", env.server.url))
        .header("accept", "text/event-stream")
        .header("last-event-id", last_id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let mut frames = resumed.bytes_stream().eventsource();
    while let Some(event) = frames.next().await {
        let event = event.unwrap();
        received.push((
            event.id.parse().unwrap(),
            serde_json::from_str(&event.data).unwrap(),
        ));
    }
    let ids: Vec<u64> = received.iter().map(|(id, _)| *id).collect();
    assert!(
        ids.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "each event once, in order: {ids:?}"
    );
    let events: Vec<Value> = received.into_iter().map(|(_, event)| event).collect();
    assert_tail(&events, "resume-sse");
    assert_eq!(answer_text(&events), expected_answer(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ndjson_client_resumes_with_its_last_index() {
    let env = TestEnv::with(slow(40), &[]).await;
    let body =
        json!({"session_id": "resume-nd", "messages": [{"role": "user", "content": "words:20"}]});
    let mut reader = NdjsonReader::post(&env.stream_url(), &body).await;
    let first_seq = reader
        .first_seq
        .expect("the first sequence number is in a header");
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(reader.next().await.unwrap());
    }
    drop(reader);
    let last_index = first_seq + events.len() as u64 - 1;
    let resumed = NdjsonReader::open(reqwest::Client::new().get(format!(
        "{}/api/stream/resume/resume-nd?last_index={last_index}",
        env.server.url
    )))
    .await;
    assert_eq!(resumed.status, 200);
    events.extend(resumed.rest().await);
    assert_tail(&events, "resume-nd");
    assert_eq!(answer_text(&events), expected_answer(20));
    for delta in of_type(&events, "do_subtask_result") {
        assert!(
            delta["message_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{delta}"
        );
    }
    let logged: Vec<Value> = env
        .server
        .state
        .store()
        .events_after("resume-nd", first_seq - 1)
        .await
        .unwrap()
        .iter()
        .filter(|entry| entry.event.is_streamed())
        .map(|entry| serde_json::to_value(&entry.event).unwrap())
        .collect();
    assert_eq!(
        events, logged,
        "the first connection and the resume together deliver each logged event once, in order"
    );

    // Resuming a finished run replays it, then ends.
    let replay = NdjsonReader::open(reqwest::Client::new().get(format!(
        "{}/api/stream/resume/resume-nd?last_index={}",
        env.server.url,
        first_seq - 1
    )))
    .await
    .rest()
    .await;
    assert_eq!(replay, events);
}

/// A replay from before several runs goes through all of them and ends with the last one's
/// tail; from inside the last run, it is that run's rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_replay_from_the_start_goes_through_every_run_of_the_session() {
    let env = TestEnv::new().await;
    let mut runs = Vec::new();
    for words in ["words:2", "words:3"] {
        let events = post_ndjson(
            &env.stream_url(),
            &json!({"session_id": "two-runs", "messages": [{"role": "user", "content": words}]}),
        )
        .await;
        assert_tail(&events, "two-runs");
        runs.push(events);
    }
    let resume = |after: usize| {
        let url = format!(
            "{}/api/stream/resume/two-runs?last_index={after}",
            env.server.url
        );
        async move { ndjson_events(&reqwest::get(url).await.unwrap().text().await.unwrap()) }
    };
    let everything = resume(0).await;
    assert_eq!(
        of_type(&everything, "stream_end").len(),
        2,
        "{everything:#?}"
    );
    assert_eq!(everything.last().unwrap()["type"], "stream_end");
    assert_eq!(
        texts_by_message(&everything, "do_subtask_result"),
        [expected_answer(2), expected_answer(3)]
    );
    let first_run_end = everything
        .iter()
        .position(|event| event["type"] == "stream_end")
        .unwrap();
    // The log also holds each run's user message, which a replay does not send.
    let after_first_run = runs[0].len() + 1;
    let rest = resume(after_first_run).await;
    assert_eq!(rest, everything[first_run_end + 1..].to_vec());
    assert_eq!(
        texts_by_message(&rest, "do_subtask_result"),
        [expected_answer(3)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_is_for_the_owner_only() {
    let env = TestEnv::new().await;
    post_ndjson(
        &env.stream_url(),
        &json!({"session_id": "mine", "user_id": "alice", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let url = |user: &str| {
        format!(
            "{}/api/stream/resume/mine?last_index=0&user_id={user}",
            env.server.url
        )
    };
    assert_eq!(reqwest::get(url("bob")).await.unwrap().status(), 403);
    assert_eq!(
        reqwest::get(format!("{}/api/stream/resume/nobody", env.server.url))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(reqwest::get(url("alice")).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_identical_requests_with_one_idempotency_key_make_one_run() {
    let env = TestEnv::with(slow(20), &[]).await;
    let body = json!({"user_id": "u1", "messages": [{"role": "user", "content": "words:10"}]});
    let send = || {
        let url = env.stream_url();
        let body = body.clone();
        async move {
            NdjsonReader::open(
                reqwest::Client::new()
                    .post(url)
                    .header("idempotency-key", "retry-42")
                    .json(&body),
            )
            .await
            .rest()
            .await
        }
    };
    let (first, second) = tokio::join!(send(), send());
    assert_tail(&first, &session_of(&first));
    assert_eq!(first, second, "both callers see the same run");
    assert_eq!(
        env.llm.requests().await.len(),
        1,
        "the model was asked once"
    );
    let (_, listed) = get_json(&format!("{}/api/conversations?user_id=u1", env.server.url)).await;
    assert_eq!(listed["data"]["total"], 1);

    // A later retry with the same key replays the same run.
    let third = send().await;
    assert_eq!(third, first);
    assert_eq!(env.llm.requests().await.len(), 1);
}

/// A client that hangs up while its run starts (here after 1 to 20 ms), then retries with its
/// key, gets that run: the start never stops half-way, so the key is always bound to the run's
/// first event, and no run starts twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_cut_off_while_its_run_starts_is_retried_into_that_run() {
    let env = TestEnv::with(slow(5), &[]).await;
    let attempts = 20u64;
    for attempt in 0..attempts {
        let key = format!("cut-{attempt}");
        let session = format!("cut-s{attempt}");
        let body = json!({"session_id": session, "user_id": "u1",
                          "messages": [{"role": "user", "content": "words:3"}]});
        let request = || {
            reqwest::Client::new()
                .post(env.stream_url())
                .header("idempotency-key", &key)
                .json(&body)
        };
        let cut_off = request()
            .timeout(Duration::from_millis(1 + attempt))
            .send()
            .await;
        drop(cut_off);
        let retried = NdjsonReader::open(request()).await;
        assert_eq!(retried.status, 200, "attempt {attempt}: the retry attaches");
        let events = retried.rest().await;
        assert_tail(&events, &session);
        assert_eq!(answer_text(&events), "tok0 tok1 tok2 ", "attempt {attempt}");
    }
    assert_eq!(
        env.llm.turn_requests().await.len() as u64,
        attempts,
        "one run per key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_key_with_another_body_is_a_409() {
    let env = TestEnv::new().await;
    let post = |text: &str| {
        reqwest::Client::new()
            .post(env.stream_url())
            .header("idempotency-key", "k-409")
            .json(&json!({"messages": [{"role": "user", "content": text}]}))
            .send()
    };
    let first = post("hello").await.unwrap();
    assert_eq!(first.status(), 200);
    first.text().await.unwrap();
    let second = post("something else").await.unwrap();
    assert_eq!(second.status(), 409);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["code"], 409);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_runs_lock_expires_with_its_lease() {
    let llm = MockLlm::start(slow(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().display().to_string();
    let args = [
        "--db_type",
        "file",
        "--db_path",
        &db,
        "--run_lease_seconds",
        "2",
        "--default_llm_api_key",
        "k",
        "--default_llm_api_base_url",
        &llm.base_url,
    ];
    let first = ShimProcess::start(dir.path(), &args, &[]).await;
    let body =
        json!({"session_id": "crash-1", "messages": [{"role": "user", "content": "words:100"}]});
    let mut reader = NdjsonReader::post(&format!("{}/api/stream", first.url), &body).await;
    reader.next().await.expect("the run started");
    first.kill();

    let second = ShimProcess::start(dir.path(), &args, &[]).await;
    let url = format!("{}/api/stream", second.url);
    let busy = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 409, "the dead run still holds its lease");
    let started = Instant::now();
    let events = loop {
        let response = reqwest::Client::new()
            .post(&url)
            .json(&json!({"session_id": "crash-1",
            "messages": [{"role": "user", "content": "words:2"}]}))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break response.text().await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let events: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_tail(&events, "crash-1");
    assert_eq!(answer_text(&events), "tok0 tok1 ");
}

async fn interrupt_from_another_instance(store_args: &[&str], env: &[(&str, &str)]) {
    let llm = MockLlm::start(slow(50)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--default_llm_api_key",
        "k",
        "--default_llm_api_base_url",
        &llm.base_url,
    ];
    args.extend_from_slice(store_args);
    let a = ShimProcess::start(dir.path(), &args, env).await;
    let b = ShimProcess::start(dir.path(), &args, env).await;
    let session = fresh_name("interrupt");
    let body = json!({"session_id": session, "user_id": "ann", "messages": [{"role": "user", "content": "words:400"}]});
    let mut reader = NdjsonReader::post(&format!("{}/api/stream", a.url), &body).await;
    assert_eq!(reader.status, 200);
    let mut events = Vec::new();
    for _ in 0..5 {
        events.push(reader.next().await.unwrap());
    }
    let (status, interrupted) = send_json(
        reqwest::Method::POST,
        &format!("{}/api/sessions/{session}/interrupt?user_id=ann", b.url),
        &json!({"message": "stop"}),
    )
    .await;
    let asked = Instant::now();
    assert_eq!(status, 200, "{interrupted}");
    assert_eq!(interrupted["data"]["interrupted"], true);
    events.extend(reader.rest().await);
    let stopped_after = asked.elapsed();
    assert!(
        stopped_after < Duration::from_secs(1),
        "stopped after {stopped_after:?}"
    );
    assert_tail(&events, &session);
    let partial = answer_text(&events);
    assert!(
        partial.len() < expected_answer(400).len(),
        "the run stopped early"
    );

    let (_, messages) = get_json(&format!(
        "{}/api/conversations/{session}/messages?user_id=ann",
        b.url
    ))
    .await;
    let stored = messages["data"]["messages"].as_array().unwrap();
    assert_eq!(stored[1]["role"], "assistant");
    assert_eq!(
        stored[1]["content"],
        partial.as_str(),
        "the partial answer is stored"
    );
    let (_, status) = send_json(
        reqwest::Method::POST,
        &format!("{}/api/sessions/{session}/tasks_status?user_id=ann", b.url),
        &json!({}),
    )
    .await;
    assert_eq!(status["data"]["status"], "interrupted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_on_one_instance_is_interrupted_through_another_over_mariadb() {
    let settings = mysql_settings();
    let database = fresh_name("sage_test");
    let port = settings.port.to_string();
    interrupt_from_another_instance(
        &[
            "--db_type",
            "mysql",
            "--mysql_host",
            &settings.host,
            "--mysql_port",
            &port,
            "--mysql_user",
            &settings.user,
            "--mysql_password",
            &settings.password,
            "--mysql_database",
            &database,
        ],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_on_one_instance_is_interrupted_through_another_over_dynamodb() {
    let endpoint = dynamodb_endpoint();
    let table = fresh_name("sage_test");
    interrupt_from_another_instance(&dynamodb_flags(&endpoint, &table), &MOTO_ENV).await;
}

/// The conversation's `conversation_info.status` says `running` while a run goes on (as
/// `tasks_status` does), and how it ended afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_reads_as_running_while_its_run_goes_on() {
    let env = TestEnv::with(slow(30), &[]).await;
    let body =
        json!({"session_id": "live-1", "messages": [{"role": "user", "content": "words:20"}]});
    let mut reader = NdjsonReader::post(&env.stream_url(), &body).await;
    let first = reader.next().await.expect("the run has begun");
    let url = format!("{}/api/conversations/live-1/messages", env.server.url);
    let (_, during) = get_json(&url).await;
    assert_eq!(
        during["data"]["conversation_info"]["status"], "running",
        "{during}"
    );
    let mut events = vec![first];
    events.extend(reader.rest().await);
    assert_tail(&events, "live-1");
    let (_, after) = get_json(&url).await;
    assert_eq!(
        after["data"]["conversation_info"]["status"], "idle",
        "{after}"
    );
}
