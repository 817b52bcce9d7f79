//! On DynamoDB a message's text deltas are packed into items of about 1 KB, so the write units
//! of a run follow the bytes it streamed, not the number of chunks the model sent. Counted on
//! moto, with `sage-local` as users run it.

use std::time::Duration;

use crate::common::*;
use aws_sdk_dynamodb::types::AttributeValue;
use sage_mock_llm::MockOptions;
use serde_json::json;

/// The items of a session's event log, as `(first seq, last seq, size in bytes)`, sizes measured
/// as DynamoDB does: attribute names plus values.
async fn event_items(table: &str, session_id: &str) -> Vec<(u64, u64, usize)> {
    let items: Vec<_> = dynamo_client()
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :events)")
        .expression_attribute_values(":pk", AttributeValue::S(format!("SESSION#{session_id}")))
        .expression_attribute_values(":events", AttributeValue::S("EVENT#".into()))
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|item| item.expect("moto answers the query"))
        .collect();
    let number = |item: &std::collections::HashMap<String, AttributeValue>, name: &str| {
        item.get(name)
            .and_then(|value| value.as_n().ok())
            .map(|text| text.parse::<u64>().unwrap())
    };
    items
        .iter()
        .map(|item| {
            let first = number(item, "seq").expect("every event item has its seq");
            let size = item
                .iter()
                .map(|(name, value)| {
                    name.len()
                        + match value {
                            AttributeValue::S(text) | AttributeValue::N(text) => text.len(),
                            AttributeValue::B(bytes) => bytes.as_ref().len(),
                            _ => 1,
                        }
                })
                .sum();
            (first, number(item, "last").unwrap_or(first), size)
        })
        .collect()
}

async fn sse_resume(url: &str, session_id: &str, after: u64) -> Vec<SseFrame> {
    let response = reqwest::Client::new()
        .get(format!("{url}/api/stream/resume/{session_id}"))
        .header("accept", "text/event-stream")
        .header("last-event-id", after.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    read_sse(response).await
}

/// A 1,000-token answer from a model that sends a chunk every 2 ms (without the pack window
/// most writes would carry one or two deltas), streamed by `sage-local` on a fresh DynamoDB table
/// with `flags` added.
struct Answered {
    shim: ShimProcess,
    events: Vec<serde_json::Value>,
    items: Vec<(u64, u64, usize)>,
    _llm: MockLlm,
    _dir: tempfile::TempDir,
}

async fn answer_on_dynamodb(flags: &[&str]) -> Answered {
    answer_at_pace(Duration::from_millis(2), 1000, flags).await
}

async fn answer_at_pace(token_delay: Duration, words: usize, flags: &[&str]) -> Answered {
    let llm = MockLlm::start(MockOptions {
        token_delay,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (shim, table) = sage_local_on_dynamodb(dir.path(), &llm.base_url, flags).await;
    let content = format!("words:{words}");
    let body = json!({"session_id": "pack-1", "messages": [{"role": "user", "content": content}]});
    let events = post_ndjson(&format!("{}/api/stream", shim.url), &body).await;
    assert_tail(&events, "pack-1");
    let expected: String = (0..words).map(|i| format!("tok{i} ")).collect();
    assert_eq!(answer_text(&events), expected);
    assert!(of_type(&events, "do_subtask_result").len() >= words);
    let items = event_items(&table, "pack-1").await;
    Answered {
        shim,
        events,
        items,
        _llm: llm,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_delta_answer_on_dynamodb_is_written_by_the_kilobyte() {
    let Answered {
        shim,
        events,
        items,
        ..
    } = answer_on_dynamodb(&[]).await;
    let events_stored: u64 = items.iter().map(|(first, last, _)| last - first + 1).sum();
    let bytes: usize = events
        .iter()
        .map(|event| serde_json::to_string(event).unwrap().len())
        .sum();
    let bound = bytes.div_ceil(1024) + 8;
    // Write units (2 per KB in a transaction, an upper bound for the plain puts): as stored, and
    // as the log stored it before packing, one item per event.
    let units = |sizes: &mut dyn Iterator<Item = usize>| -> usize {
        sizes.map(|size| 2 * size.div_ceil(1024)).sum()
    };
    let units_packed = units(&mut items.iter().map(|(_, _, size)| *size));
    let units_unpacked = units(
        &mut events
            .iter()
            .map(|event| serde_json::to_string(event).unwrap().len() + 60),
    );
    println!(
        "event log of a 1,000-delta answer: {events_stored} events, {bytes} bytes streamed, \
         {} items (bound {bound}); write units at most {units_packed} packed, \
         {units_unpacked} one item per event",
        items.len()
    );
    assert!(
        items.len() <= bound,
        "{} items for {bytes} bytes: {items:?}",
        items.len()
    );
    assert!(
        items
            .iter()
            .all(|(first, last, size)| first == last || *size <= 1024),
        "a packed item fits one write unit: {items:?}"
    );
    let mut seqs: Vec<u64> = items
        .iter()
        .flat_map(|(first, last, _)| *first..=*last)
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=events_stored).collect::<Vec<_>>(),
        "each event stored once"
    );

    // Resuming after any number inside a packed item returns exactly the events after it.
    let full = sse_resume(&shim.url, "pack-1", 0).await;
    let packed: Vec<&(u64, u64, usize)> = items.iter().filter(|(f, l, _)| l > f).collect();
    assert!(
        packed.len() >= 10,
        "most items hold several events: {items:?}"
    );
    for (first, last, _) in packed.iter().step_by(packed.len() / 8) {
        for after in [*first, (first + last) / 2, last - 1] {
            let resumed = sse_resume(&shim.url, "pack-1", after).await;
            let expected: Vec<&SseFrame> = full
                .iter()
                .filter(|frame| frame.id.parse::<u64>().is_ok_and(|id| id > after))
                .collect();
            assert_eq!(
                resumed.iter().collect::<Vec<_>>(),
                expected,
                "resumed after {after}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pack_window_is_what_gathers_a_slow_models_deltas() {
    let windowed = answer_on_dynamodb(&[]).await.items.len();
    let unwindowed = answer_on_dynamodb(&["--event_pack_window_ms", "0"])
        .await
        .items
        .len();
    println!(
        "items for a 1,000-delta answer: {windowed} with the default window, {unwindowed} without"
    );
    assert!(
        unwindowed > 3 * windowed,
        "without the window each write carries what queued during the last one: \
         {unwindowed} items against {windowed}"
    );
}

/// BENCHMARKS.md, "The DynamoDB event log": items and write units per 1,000-token answer at three
/// model paces and three pack windows (300-token answers, scaled). Run with
/// `cargo nextest run -p sage-e2e --run-ignored only -E 'test(event_log_write_units)' --no-capture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: about two minutes"]
async fn event_log_write_units_by_model_pace() {
    const WORDS: usize = 300;
    println!(
        "| chunk every | window | items per 1,000 tokens | write units per 1,000 tokens (at most) |"
    );
    println!("|---|---|---|---|");
    for delay in [2, 20, 50] {
        for window in ["0", "100", "250"] {
            let answered = answer_at_pace(
                Duration::from_millis(delay),
                WORDS,
                &["--event_pack_window_ms", window],
            )
            .await;
            let scale = 1000.0 / WORDS as f64;
            let items = answered.items.len() as f64 * scale;
            let units: usize = answered
                .items
                .iter()
                .map(|(_, _, size)| 2 * size.div_ceil(1024))
                .sum();
            println!(
                "| {delay} ms | {window} ms | {items:.0} | {:.0} |",
                units as f64 * scale
            );
        }
    }
}
