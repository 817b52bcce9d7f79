//! One conformance suite for every store backend: the same tests against memory, SQLite,
//! MariaDB and DynamoDB (moto). A backend that cannot be reached fails its tests.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use sage_core::store::{
    AccountRecord, AgentRecord, DocStatus, EventBatch, IdempotencyRecord, KnowledgeBaseRecord,
    KnowledgeDocRecord, McpAuthorizationRecord, McpCredentialsRecord, McpServerRecord, MemoryStore,
    PendingApprovalRecord, ProviderRecord, RefreshTokenRecord, RunStatus, RunTally, SessionQuery,
    SessionRecord, SkillRecord, SortBy, SqlStore, Store, StoreError, SummaryRecord,
    SystemSettingsRecord, UsageRecord, UserMemoryRecord, query_sessions,
};
use sage_core::wire::mcp::{McpServerConfig, ToolSpec};
use sage_core::wire::{Event, EventType, StoredEvent};
use serde_json::json;

fn events(session_id: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<StoredEvent> {
    seqs.map(|seq| {
        StoredEvent::new(
            seq,
            Event::text(
                session_id,
                EventType::DoSubtaskResult,
                "m1",
                "SimpleAgent",
                format!("delta {seq} 你好"),
            ),
        )
    })
    .collect()
}

async fn sessions_are_created_once_and_updated(store: Arc<dyn Store>) {
    assert!(store.get_session("s1").await.unwrap().is_none());
    let created = store
        .create_session(&SessionRecord::new("s1", "alice", "hello"))
        .await
        .unwrap();
    assert_eq!(created.user_id, "alice");
    let again = store
        .create_session(&SessionRecord::new("s1", "bob", "other"))
        .await
        .unwrap();
    assert_eq!(
        again.user_id, "alice",
        "an existing session is not overwritten"
    );
    let mut changed = again.clone();
    changed.title = "renamed ✓".into();
    changed.updated_at = 42.5;
    changed.message_count = 7;
    changed.user_count = 3;
    changed.agent_count = 4;
    changed.search_text = "needle in text".into();
    changed.status = RunStatus::Interrupted;
    changed.agent_id = Some("agent-1".into());
    store.update_session(&changed).await.unwrap();
    assert_eq!(store.get_session("s1").await.unwrap().unwrap(), changed);
}

async fn sessions_are_listed_searched_sorted_and_paged(store: Arc<dyn Store>) {
    for (index, (title, text, messages)) in [
        ("banana talk", "about fruit", 2),
        ("apple talk", "the needle is here", 9),
        ("cherry talk", "nothing", 5),
    ]
    .into_iter()
    .enumerate()
    {
        let mut session = SessionRecord::new(&format!("q{index}"), "lister", title);
        store.create_session(&session).await.unwrap();
        session.search_text = text.into();
        session.message_count = messages;
        session.updated_at = 1000.0 + index as f64;
        session.agent_id = Some(if index == 2 { "special" } else { "plain" }.into());
        store.update_session(&session).await.unwrap();
    }
    store
        .create_session(&SessionRecord::new("other-user", "someone", "apple"))
        .await
        .unwrap();
    // A fibre run's sub-session is stored like any session, but is not one of the conversations.
    let mut sub = SessionRecord::new("q0_sub_1", "lister", "apple sub-task");
    sub.parent_session_id = Some("q0".into());
    store.create_session(&sub).await.unwrap();
    assert_eq!(store.get_session("q0_sub_1").await.unwrap().unwrap(), sub);
    let query =
        |sort_by, page, page_size, search: Option<&str>, agent: Option<&str>| SessionQuery {
            user_id: "lister".into(),
            page,
            page_size,
            search: search.map(str::to_owned),
            agent_id: agent.map(str::to_owned),
            sort_by,
        };
    let ids = |page: sage_core::store::SessionPage| {
        page.sessions
            .into_iter()
            .map(|s| s.session_id)
            .collect::<Vec<_>>()
    };
    let by_date = query_sessions(store.as_ref(), &query(SortBy::Date, 1, 10, None, None))
        .await
        .unwrap();
    assert_eq!(by_date.total, 3);
    assert_eq!(ids(by_date), ["q2", "q1", "q0"]);
    let by_title = query_sessions(store.as_ref(), &query(SortBy::Title, 1, 10, None, None))
        .await
        .unwrap();
    assert_eq!(ids(by_title), ["q1", "q0", "q2"]);
    let by_messages = query_sessions(store.as_ref(), &query(SortBy::Messages, 1, 10, None, None))
        .await
        .unwrap();
    assert_eq!(ids(by_messages), ["q1", "q2", "q0"]);
    let second_page = query_sessions(store.as_ref(), &query(SortBy::Date, 2, 2, None, None))
        .await
        .unwrap();
    assert_eq!(second_page.total, 3);
    assert_eq!(ids(second_page), ["q0"]);
    let found = query_sessions(
        store.as_ref(),
        &query(SortBy::Date, 1, 10, Some("NEEDLE"), None),
    )
    .await
    .unwrap();
    assert_eq!(
        ids(found),
        ["q1"],
        "search covers message text, case-insensitively"
    );
    let found = query_sessions(
        store.as_ref(),
        &query(SortBy::Date, 1, 10, Some("cherry"), None),
    )
    .await
    .unwrap();
    assert_eq!(ids(found), ["q2"], "search covers titles");
    let special = query_sessions(
        store.as_ref(),
        &query(SortBy::Date, 1, 10, None, Some("special")),
    )
    .await
    .unwrap();
    assert_eq!(ids(special), ["q2"]);
}

async fn events_come_back_in_order_after_a_sequence_number(store: Arc<dyn Store>) {
    let written = events("s2", 1..=5);
    store.append_events("s2", &written[..3]).await.unwrap();
    store.append_events("s2", &written[3..]).await.unwrap();
    store
        .append_events("other", &events("other", 1..=2))
        .await
        .unwrap();
    let all = store.events_after("s2", 0).await.unwrap();
    assert_eq!(all, written, "events round-trip unchanged, in order");
    let tail = store.events_after("s2", 3).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(store.last_seq("s2").await.unwrap(), 5);
    assert_eq!(store.last_seq("never").await.unwrap(), 0);
    assert!(store.events_after("never", 0).await.unwrap().is_empty());
}

/// Two writers that read the same last sequence number collide on their first event.
async fn a_taken_sequence_number_fails_the_whole_batch(store: Arc<dyn Store>) {
    let written = events("s3", 1..=4);
    store.append_events("s3", &written[..2]).await.unwrap();
    store.append_events("s3", &written[2..]).await.unwrap();
    let error = store
        .append_events("s3", &events("s3", 3..=6))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::SeqConflict { .. }), "{error}");
    assert_eq!(
        store.last_seq("s3").await.unwrap(),
        4,
        "nothing of the batch was written"
    );
    assert_eq!(store.events_after("s3", 0).await.unwrap(), written);
}

/// A batch may be stored packed (DynamoDB); reading after any number inside it, or across
/// batches, returns exactly the events after that number.
async fn reading_after_any_number_inside_a_batch_returns_exactly_the_rest(store: Arc<dyn Store>) {
    let mut written = events("s9", 1..=150);
    for stored in written.iter_mut().skip(40).take(3) {
        stored.event.content = Some(json!("long ".repeat(400)));
    }
    store.append_events("s9", &written[..130]).await.unwrap();
    store.append_events("s9", &written[130..131]).await.unwrap();
    store.append_events("s9", &written[131..]).await.unwrap();
    for after in 0..=150 {
        let read = store.events_after("s9", after).await.unwrap();
        assert_eq!(read, written[after as usize..], "after {after}");
    }
    assert_eq!(store.last_seq("s9").await.unwrap(), 150);
}

fn usage(user_id: &str, session_id: &str, seq: u64, day: &str, tokens: u64) -> UsageRecord {
    UsageRecord {
        user_id: user_id.into(),
        session_id: session_id.into(),
        seq,
        run_id: format!("run-{session_id}-{seq}"),
        day: day.into(),
        model: "model-a".into(),
        calls: 2,
        prompt_tokens: tokens - 1,
        completion_tokens: 1,
        total_tokens: tokens,
        cost: tokens.is_multiple_of(2).then_some(0.25),
        recorded_at: 1_796_342_400.0,
    }
}

async fn usage_is_written_with_its_events_or_not_at_all(store: Arc<dyn Store>) {
    let sorted = |mut records: Vec<UsageRecord>| {
        records.sort_by(|a, b| (&a.session_id, a.seq).cmp(&(&b.session_id, b.seq)));
        records
    };
    store
        .append_events("u1", &events("u1", 1..=2))
        .await
        .unwrap();
    let first = usage("ann", "u1", 4, "2026-12-03", 10);
    store
        .append_events_with_usage("u1", &events("u1", 3..=5), &first)
        .await
        .unwrap();
    assert_eq!(store.last_seq("u1").await.unwrap(), 5, "the events landed");

    // A taken sequence number fails the write: neither the events nor the usage land.
    let clash = usage("ann", "u1", 6, "2026-12-03", 99);
    let error = store
        .append_events_with_usage("u1", &events("u1", 3..=6), &clash)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::SeqConflict { .. }), "{error}");
    assert_eq!(store.last_seq("u1").await.unwrap(), 5);
    // The same usage again (a retried write) is refused too: it is never counted twice.
    let error = store
        .append_events_with_usage("u1", &events("u1", 6..=6), &first)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::SeqConflict { .. }), "{error}");
    assert_eq!(store.last_seq("u1").await.unwrap(), 5);

    let second = usage("ann", "u2", 1, "2026-12-04", 7);
    let other_user = usage("bob", "u3", 1, "2026-12-04", 5);
    let later = usage("ann", "u4", 1, "2026-12-05", 3);
    for record in [&second, &other_user, &later] {
        store
            .append_events_with_usage(
                &record.session_id,
                &events(&record.session_id, 1..=1),
                record,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        sorted(
            store
                .user_usage("ann", "2026-12-03", "2026-12-04")
                .await
                .unwrap()
        ),
        vec![first.clone(), second.clone()],
        "one user's records, days inclusive"
    );
    assert_eq!(
        sorted(
            store
                .user_usage("ann", "2026-12-05", "2026-12-05")
                .await
                .unwrap()
        ),
        vec![later.clone()]
    );
    assert!(
        store
            .user_usage("carol", "2026-01-01", "2026-12-31")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        sorted(store.all_usage("2026-12-04", "2026-12-04").await.unwrap()),
        vec![second.clone(), other_user.clone()],
        "every user's records of the day"
    );

    // The ledger is an account of what was spent: deleting the conversation keeps it.
    store.delete_session("u1").await.unwrap();
    assert_eq!(store.last_seq("u1").await.unwrap(), 0);
    assert_eq!(
        sorted(
            store
                .user_usage("ann", "2026-12-03", "2026-12-03")
                .await
                .unwrap()
        ),
        vec![first]
    );
}

async fn batched_writes_carry_their_usage(store: Arc<dyn Store>) {
    let closing = usage("ann", "b1", 2, "2026-12-03", 10);
    store
        .append_event_batches(&[
            EventBatch {
                session_id: "b1".into(),
                events: events("b1", 1..=2),
                usage: Some(closing.clone()),
            },
            EventBatch {
                session_id: "b2".into(),
                events: events("b2", 1..=1),
                usage: None,
            },
        ])
        .await
        .unwrap();
    assert_eq!(store.last_seq("b1").await.unwrap(), 2);
    assert_eq!(store.last_seq("b2").await.unwrap(), 1);
    let ledger = || store.user_usage("ann", "2026-12-03", "2026-12-03");
    assert_eq!(ledger().await.unwrap(), vec![closing.clone()]);

    // A batch whose events clash writes neither them nor its usage.
    let error = store
        .append_event_batches(&[EventBatch {
            session_id: "b1".into(),
            events: events("b1", 1..=3),
            usage: Some(usage("ann", "b1", 3, "2026-12-03", 5)),
        }])
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::SeqConflict { .. }), "{error}");
    assert_eq!(store.last_seq("b1").await.unwrap(), 2);
    assert_eq!(ledger().await.unwrap(), vec![closing]);
}

/// Runs streaming side by side, as a server writes them: each run's input first, then its
/// answer a few events at a time; one run ends while the others go on, one collides with a
/// taken number, one is deleted. Every read in between sees exactly what was written. Enough
/// events that SQLite's recent tier is swept several times.
async fn streaming_runs_read_back_exactly_while_they_stream_and_after(store: Arc<dyn Store>) {
    let sessions = ["run-a", "run-b", "run-c"];
    let mut written: Vec<Vec<StoredEvent>> = vec![Vec::new(); sessions.len()];
    for (index, session_id) in sessions.iter().enumerate() {
        let input = events(session_id, 1..=1);
        store.append_events(session_id, &input).await.unwrap();
        written[index].extend(input);
    }
    for round in 0..120u64 {
        for (index, session_id) in sessions.iter().enumerate() {
            if index == 0 && round >= 60 {
                continue;
            }
            let from = written[index].len() as u64 + 1;
            let mut batch = events(session_id, from..=from + 15);
            if index == 0 && round == 59 {
                let seq = from + 16;
                batch.push(StoredEvent::new(seq, Event::stream_end(session_id, seq)));
            }
            store.append_events(session_id, &batch).await.unwrap();
            written[index].extend(batch);
        }
        if round % 25 == 7 {
            // Where run-b's last batch starts: where two writers of one session would meet.
            let taken = written[1].len() as u64 - 15;
            let error = store
                .append_events("run-b", &events("run-b", taken..=taken + 4))
                .await
                .unwrap_err();
            assert!(matches!(error, StoreError::SeqConflict { .. }), "{error}");
            for (index, session_id) in sessions.iter().enumerate() {
                let all = store.events_after(session_id, 0).await.unwrap();
                assert_eq!(all, written[index], "{session_id} after round {round}");
                let last = written[index].len() as u64;
                assert_eq!(store.last_seq(session_id).await.unwrap(), last);
                let tail = store.events_after(session_id, last - 20).await.unwrap();
                assert_eq!(tail, written[index][last as usize - 20..]);
            }
        }
    }
    store.delete_session("run-c").await.unwrap();
    assert!(store.events_after("run-c", 0).await.unwrap().is_empty());
    assert_eq!(store.last_seq("run-c").await.unwrap(), 0);
    let again = events("run-c", 1..=3);
    store.append_events("run-c", &again).await.unwrap();
    assert_eq!(store.events_after("run-c", 0).await.unwrap(), again);
    for index in 0..2 {
        let all = store.events_after(sessions[index], 0).await.unwrap();
        assert_eq!(all.len(), written[index].len());
        assert_eq!(all, written[index]);
    }
}

async fn deleting_a_session_removes_its_events_and_lock(store: Arc<dyn Store>) {
    store
        .create_session(&SessionRecord::new("gone", "u", "t"))
        .await
        .unwrap();
    store
        .append_events("gone", &events("gone", 1..=30))
        .await
        .unwrap();
    assert!(
        store
            .try_lock_run("gone", "r", Duration::from_secs(30))
            .await
            .unwrap()
    );
    store
        .create_session(&SessionRecord::new("kept", "u", "t"))
        .await
        .unwrap();
    store
        .append_events("kept", &events("kept", 1..=2))
        .await
        .unwrap();
    store.delete_session("gone").await.unwrap();
    assert!(store.get_session("gone").await.unwrap().is_none());
    assert!(store.events_after("gone", 0).await.unwrap().is_empty());
    assert!(store.run_lock("gone").await.unwrap().is_none());
    assert_eq!(store.events_after("kept", 0).await.unwrap().len(), 2);
    assert_eq!(store.user_sessions("u").await.unwrap().len(), 1);
}

async fn the_run_lock_admits_one_run_until_released_or_expired(store: Arc<dyn Store>) {
    let lease = Duration::from_secs(30);
    assert!(store.try_lock_run("s4", "run-a", lease).await.unwrap());
    assert!(
        !store.try_lock_run("s4", "run-b", lease).await.unwrap(),
        "busy"
    );
    assert!(store.renew_run_lock("s4", "run-a", lease).await.unwrap());
    assert!(
        !store.renew_run_lock("s4", "run-b", lease).await.unwrap(),
        "not b's lock"
    );
    store.release_run_lock("s4", "run-b").await.unwrap();
    assert!(
        !store.try_lock_run("s4", "run-c", lease).await.unwrap(),
        "b cannot release a's lock"
    );
    store.release_run_lock("s4", "run-a").await.unwrap();
    assert!(store.try_lock_run("s4", "run-c", lease).await.unwrap());

    let short = Duration::from_millis(300);
    assert!(store.try_lock_run("s5", "crashed", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        store.try_lock_run("s5", "next", lease).await.unwrap(),
        "an expired lease is taken over"
    );
    assert!(!store.renew_run_lock("s5", "crashed", lease).await.unwrap());
}

async fn a_run_opens_with_its_session_and_closes_with_its_tally(store: Arc<dyn Store>) {
    let lease = Duration::from_secs(30);
    let mut opening = SessionRecord::new("o1", "alice", "first words");
    opening.agent_id = Some("helper".into());
    assert_eq!(
        store.open_run(&opening, "run-a", lease).await.unwrap(),
        Some(opening.clone())
    );
    assert_eq!(store.get_session("o1").await.unwrap().unwrap(), opening);
    assert_eq!(store.run_lock("o1").await.unwrap().unwrap().run_id, "run-a");

    let intruder = SessionRecord::new("o1", "bob", "bob's words");
    assert!(
        store
            .open_run(&intruder, "run-b", lease)
            .await
            .unwrap()
            .is_none(),
        "the session is running"
    );
    assert_eq!(
        store.get_session("o1").await.unwrap().unwrap().user_id,
        "alice"
    );
    assert_eq!(store.run_lock("o1").await.unwrap().unwrap().run_id, "run-a");

    let mut renamed = store.get_session("o1").await.unwrap().unwrap();
    renamed.title = "renamed during the run".into();
    store.update_session(&renamed).await.unwrap();
    let tally = RunTally {
        message_count: 2,
        user_count: 1,
        agent_count: 1,
        search_text: "first words\nan answer".into(),
        status: RunStatus::Interrupted,
        log_seq: 11,
        updated_at: 1234.5,
    };
    let closed = store
        .close_run("o1", "run-a", &tally)
        .await
        .unwrap()
        .expect("the session is there");
    let mut expected = renamed.clone();
    tally.apply_to(&mut expected);
    assert_eq!(closed, expected, "the tally is recorded, the rename kept");
    assert_eq!(store.get_session("o1").await.unwrap().unwrap(), expected);
    assert!(store.run_lock("o1").await.unwrap().is_none(), "released");

    assert_eq!(
        store.open_run(&intruder, "run-c", lease).await.unwrap(),
        Some(expected.clone()),
        "an idle session opens; the record stored before is kept and returned, whoever's it is"
    );
    assert_eq!(store.get_session("o1").await.unwrap().unwrap(), expected);
    store.release_run_lock("o1", "run-c").await.unwrap();

    let short = Duration::from_millis(300);
    let crashed = SessionRecord::new("o2", "alice", "crashed run");
    assert!(
        store
            .open_run(&crashed, "crashed", short)
            .await
            .unwrap()
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        store.open_run(&crashed, "next", lease).await.unwrap(),
        Some(crashed.clone()),
        "an expired lease is taken over"
    );
    assert_eq!(store.run_lock("o2").await.unwrap().unwrap().run_id, "next");

    assert!(store.try_lock_run("o3", "orphan", lease).await.unwrap());
    assert!(
        store
            .close_run("o3", "orphan", &tally)
            .await
            .unwrap()
            .is_none(),
        "no session to record on"
    );
    assert!(
        store.run_lock("o3").await.unwrap().is_none(),
        "the lock goes all the same"
    );
}

async fn the_cancel_flag_reaches_only_a_live_run(store: Arc<dyn Store>) {
    assert!(!store.request_cancel("idle").await.unwrap(), "nothing runs");
    assert!(
        store
            .try_lock_run("c1", "run", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        !store
            .run_lock("c1")
            .await
            .unwrap()
            .unwrap()
            .cancel_requested
    );
    assert!(store.request_cancel("c1").await.unwrap());
    assert!(
        store.request_cancel("c1").await.unwrap(),
        "asking twice still says it runs"
    );
    let lock = store.run_lock("c1").await.unwrap().unwrap();
    assert!(lock.cancel_requested && lock.is_live());
    assert_eq!(lock.run_id, "run");
    store.release_run_lock("c1", "run").await.unwrap();
    assert!(
        store
            .try_lock_run("c1", "next", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        !store
            .run_lock("c1")
            .await
            .unwrap()
            .unwrap()
            .cancel_requested,
        "a new run starts clean"
    );
}

async fn an_idempotency_key_binds_once(store: Arc<dyn Store>) {
    let record = IdempotencyRecord {
        key: "user\nkey-1".into(),
        request_hash: "abc".into(),
        session_id: "s".into(),
        first_seq: None,
        created_at: 1.5,
    };
    assert!(
        store
            .claim_idempotency_key(&record)
            .await
            .unwrap()
            .is_none()
    );
    let second = IdempotencyRecord {
        request_hash: "other".into(),
        ..record.clone()
    };
    let existing = store.claim_idempotency_key(&second).await.unwrap().unwrap();
    assert_eq!(existing, record);
    store
        .set_idempotency_first_seq(&record.key, 17)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_idempotency_key(&record.key)
            .await
            .unwrap()
            .unwrap()
            .first_seq,
        Some(17)
    );
    store.release_idempotency_key(&record.key).await.unwrap();
    assert!(
        store
            .get_idempotency_key(&record.key)
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_pending_approval_is_taken_by_one_decision(store: Arc<dyn Store>) {
    let record = |approval_id: &str| PendingApprovalRecord {
        session_id: "paused".into(),
        approval_id: approval_id.into(),
        user_id: "u".into(),
        created_at: 1.0,
        expires_at: 4_000_000_000.0,
        due_at: 4_000_000_000.0,
        state: format!(
            "{{\"turn\": \"{approval_id}\", \"text\": \"{}\"}}",
            "é".repeat(3000)
        ),
    };
    assert!(store.pending_approval("paused").await.unwrap().is_none());
    store.put_pending_approval(&record("first")).await.unwrap();
    store.put_pending_approval(&record("second")).await.unwrap();
    assert_eq!(
        store.pending_approval("paused").await.unwrap(),
        Some(record("second")),
        "a newer pause replaces the older one"
    );
    assert!(
        !store
            .take_pending_approval("paused", "first")
            .await
            .unwrap()
    );
    let takes = futures_util::future::join_all(
        (0..4).map(|_| store.take_pending_approval("paused", "second")),
    )
    .await;
    assert_eq!(
        takes
            .into_iter()
            .filter(|taken| *taken.as_ref().unwrap())
            .count(),
        1,
        "exactly one decision takes it"
    );
    assert!(store.pending_approval("paused").await.unwrap().is_none());

    store
        .create_session(&SessionRecord::new("paused", "u", "t"))
        .await
        .unwrap();
    store.put_pending_approval(&record("third")).await.unwrap();
    store.delete_session("paused").await.unwrap();
    assert!(store.pending_approval("paused").await.unwrap().is_none());
}

async fn paused_runs_come_due_earliest_first(store: Arc<dyn Store>) {
    let paused = |session_id: &str, due_at: f64| PendingApprovalRecord {
        session_id: session_id.into(),
        approval_id: format!("{session_id}-token"),
        user_id: "u".into(),
        created_at: 100.0,
        expires_at: 4_000_000_000.0,
        due_at,
        state: "{}".into(),
    };
    assert!(store.due_paused_runs(1e12, 10).await.unwrap().is_empty());
    for (session, due_at) in [("late", 900.5), ("early", 200.25), ("later", 2_000.0)] {
        store
            .put_pending_approval(&paused(session, due_at))
            .await
            .unwrap();
    }
    let sessions = |records: Vec<PendingApprovalRecord>| {
        records
            .into_iter()
            .map(|record| record.session_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        store.due_paused_runs(1_000.0, 10).await.unwrap(),
        vec![paused("early", 200.25), paused("late", 900.5)],
        "due by now, earliest first, as stored"
    );
    assert_eq!(
        sessions(store.due_paused_runs(1_000.0, 1).await.unwrap()),
        ["early"]
    );
    assert_eq!(
        sessions(store.due_paused_runs(900.5, 10).await.unwrap()),
        ["early", "late"],
        "due at exactly now"
    );
    assert!(store.due_paused_runs(200.0, 10).await.unwrap().is_empty());
    // A checkpoint saved again comes due later; a taken one is gone.
    store
        .put_pending_approval(&paused("early", 5_000.0))
        .await
        .unwrap();
    assert!(
        store
            .take_pending_approval("late", "late-token")
            .await
            .unwrap()
    );
    assert_eq!(
        sessions(store.due_paused_runs(3_000.0, 10).await.unwrap()),
        ["later"]
    );
    // Many sessions (spread over the store's partitions) come back in one order.
    for index in 0..20 {
        store
            .put_pending_approval(&paused(&format!("many-{index:02}"), 10.0 + index as f64))
            .await
            .unwrap();
    }
    let due = sessions(store.due_paused_runs(3_000.0, 30).await.unwrap());
    let mut expected: Vec<String> = (0..20).map(|index| format!("many-{index:02}")).collect();
    expected.push("later".into());
    assert_eq!(due, expected);
    assert_eq!(store.due_paused_runs(3_000.0, 5).await.unwrap().len(), 5);
}

async fn an_mcp_authorization_is_taken_once(store: Arc<dyn Store>) {
    let state = format!("state-{}", uuid::Uuid::new_v4().simple());
    let record = McpAuthorizationRecord {
        state: state.clone(),
        owner: "alice".into(),
        server: "guarded".into(),
        sealed: "00ff".into(),
        expires_at: 1_900_000_000.0,
    };
    store.put_mcp_authorization(&record).await.unwrap();
    let (first, second) = tokio::join!(
        store.take_mcp_authorization(&state),
        store.take_mcp_authorization(&state)
    );
    let taken: Vec<_> = [first.unwrap(), second.unwrap()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(taken, [record], "one of two racing callbacks takes it");
    assert!(
        store
            .take_mcp_authorization(&state)
            .await
            .unwrap()
            .is_none()
    );
}

async fn mcp_credentials_are_written_by_version(store: Arc<dyn Store>) {
    let owner = format!("alice-{}", uuid::Uuid::new_v4().simple());
    let first = McpCredentialsRecord {
        owner: owner.clone(),
        server: "guarded".into(),
        sealed: "aa".into(),
        version: 1,
        refreshing_until: 0.0,
        updated_at: 1.0,
    };
    assert!(
        store
            .mcp_credentials(&owner, "guarded")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.put_mcp_credentials(&first, None).await.unwrap());
    assert!(
        !store.put_mcp_credentials(&first, None).await.unwrap(),
        "a first write when some are stored"
    );
    assert_eq!(
        store.mcp_credentials(&owner, "guarded").await.unwrap(),
        Some(first.clone())
    );
    let leased = McpCredentialsRecord {
        version: 2,
        refreshing_until: 99.0,
        ..first.clone()
    };
    let other = McpCredentialsRecord {
        version: 2,
        sealed: "bb".into(),
        ..first.clone()
    };
    let (a, b) = tokio::join!(
        store.put_mcp_credentials(&leased, Some(1)),
        store.put_mcp_credentials(&other, Some(1))
    );
    assert_eq!(
        [a.unwrap(), b.unwrap()].iter().filter(|won| **won).count(),
        1,
        "of two writers of version 1, one wins"
    );
    let stored = store
        .mcp_credentials(&owner, "guarded")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version, 2);
    assert!(stored == leased || stored == other);
    assert!(
        !store
            .put_mcp_credentials(
                &McpCredentialsRecord {
                    version: 3,
                    ..first.clone()
                },
                Some(1)
            )
            .await
            .unwrap(),
        "a write from a stale version"
    );
    assert!(
        store
            .mcp_credentials("bob", "guarded")
            .await
            .unwrap()
            .is_none()
    );
    store
        .delete_mcp_credentials(&owner, "guarded")
        .await
        .unwrap();
    assert!(
        store
            .mcp_credentials(&owner, "guarded")
            .await
            .unwrap()
            .is_none()
    );
}

async fn mcp_servers_are_kept_per_owner(store: Arc<dyn Store>) {
    let record = McpServerRecord {
        owner: "alice".into(),
        name: "files".into(),
        config: McpServerConfig {
            url: Some("http://127.0.0.1:1/mcp".into()),
            api_key: Some("k".into()),
            ..Default::default()
        },
        tools: vec![ToolSpec {
            name: "read".into(),
            description: "reads".into(),
            parameters: json!({"type": "object"}),
        }],
        last_error: None,
        updated_at: 3.0,
    };
    assert!(store.insert_mcp_server(&record).await.unwrap());
    assert!(
        !store.insert_mcp_server(&record).await.unwrap(),
        "duplicate"
    );
    assert_eq!(
        store
            .get_mcp_server("alice", "files")
            .await
            .unwrap()
            .unwrap(),
        record
    );
    assert!(
        store
            .get_mcp_server("bob", "files")
            .await
            .unwrap()
            .is_none()
    );
    let mut changed = record.clone();
    changed.last_error = Some("down".into());
    changed.config.disabled = true;
    store.put_mcp_server(&changed).await.unwrap();
    assert_eq!(
        store.list_mcp_servers("alice").await.unwrap(),
        vec![changed]
    );
    assert!(store.list_mcp_servers("bob").await.unwrap().is_empty());
    let server_of = |owner: &str, name: &str| McpServerRecord {
        owner: owner.into(),
        name: name.into(),
        ..record.clone()
    };
    for (owner, name) in [("bob", "zeta"), ("bob", "apps"), ("carol", "beta")] {
        assert!(
            store
                .insert_mcp_server(&server_of(owner, name))
                .await
                .unwrap()
        );
    }
    let names = |servers: Vec<McpServerRecord>| {
        servers
            .into_iter()
            .map(|server| format!("{}/{}", server.owner, server.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.list_mcp_servers_of(&["bob", "alice"]).await.unwrap()),
        ["bob/apps", "bob/zeta", "alice/files"],
        "each owner's by name, the owners in the order asked"
    );
    assert!(store.list_mcp_servers_of(&[]).await.unwrap().is_empty());
    for (owner, name) in [("bob", "zeta"), ("bob", "apps"), ("carol", "beta")] {
        assert!(store.delete_mcp_server(owner, name).await.unwrap());
    }
    assert!(store.delete_mcp_server("alice", "files").await.unwrap());
    assert!(!store.delete_mcp_server("alice", "files").await.unwrap());
}

async fn user_memories_are_kept_per_user_and_key(store: Arc<dyn Store>) {
    let memory = UserMemoryRecord {
        user_id: "alice".into(),
        key: "tone".into(),
        content: "Answer tersely".into(),
        memory_type: "preference".into(),
        tags: vec!["style".into(), "语气".into()],
        created_at: 1.0,
        updated_at: 1.0,
    };
    store.put_user_memory(&memory).await.unwrap();
    let other = UserMemoryRecord {
        key: "editor".into(),
        content: "helix".into(),
        memory_type: "note".into(),
        tags: vec![],
        ..memory.clone()
    };
    store.put_user_memory(&other).await.unwrap();
    assert_eq!(
        store.user_memories("alice").await.unwrap(),
        vec![other.clone(), memory.clone()],
        "by key"
    );
    assert!(store.user_memories("bob").await.unwrap().is_empty());
    assert!(!store.delete_user_memory("bob", "tone").await.unwrap());

    let changed = UserMemoryRecord {
        content: "Answer at length".into(),
        updated_at: 2.0,
        ..memory.clone()
    };
    store.put_user_memory(&changed).await.unwrap();
    assert_eq!(
        store.user_memories("alice").await.unwrap(),
        vec![other, changed],
        "the same key is replaced"
    );
    assert!(store.delete_user_memory("alice", "tone").await.unwrap());
    assert!(!store.delete_user_memory("alice", "tone").await.unwrap());
    assert_eq!(store.user_memories("alice").await.unwrap().len(), 1);
}

async fn summaries_are_written_once_per_log_position(store: Arc<dyn Store>) {
    for (id, log_seq) in [("s-a", 4), ("s-b", 0), ("s-c", 2)] {
        let mut session = SessionRecord::new(id, "alice", id);
        store.create_session(&session).await.unwrap();
        session.log_seq = log_seq;
        store.update_session(&session).await.unwrap();
    }
    let due = |store: Arc<dyn Store>, after: Option<&'static str>, limit| async move {
        store
            .sessions_due_for_summary(after, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|(session, covered)| (session.session_id, covered))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        due(store.clone(), None, 10).await,
        [("s-a".to_owned(), 0), ("s-c".to_owned(), 0)],
        "a session with an empty log is not due"
    );
    assert_eq!(
        due(store.clone(), Some("s-a"), 10).await,
        [("s-c".to_owned(), 0)]
    );
    assert_eq!(due(store.clone(), None, 1).await.len(), 1);

    let first = SummaryRecord {
        session_id: "s-a".into(),
        summary: "asked about cats".into(),
        covers_seq: 4,
        created_at: 1.0,
    };
    assert!(store.put_session_summary(&first, 0).await.unwrap());
    let rival = SummaryRecord {
        summary: "a second opinion".into(),
        ..first.clone()
    };
    assert!(
        !store.put_session_summary(&rival, 0).await.unwrap(),
        "the position moved: the second writer loses"
    );
    assert_eq!(
        store.session_summary("s-a").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(due(store.clone(), None, 10).await, [("s-c".to_owned(), 0)]);

    let mut session = store.get_session("s-a").await.unwrap().unwrap();
    session.log_seq = 9;
    store.update_session(&session).await.unwrap();
    assert_eq!(
        due(store.clone(), None, 10).await,
        [("s-a".to_owned(), 4), ("s-c".to_owned(), 0)]
    );
    let next = SummaryRecord {
        summary: "cats, then dogs".into(),
        covers_seq: 9,
        ..first.clone()
    };
    assert!(!store.put_session_summary(&next, 0).await.unwrap());
    assert!(store.put_session_summary(&next, 4).await.unwrap());
    assert!(!store.put_session_summary(&next, 4).await.unwrap());
    assert_eq!(store.session_summary("s-a").await.unwrap(), Some(next));

    store.delete_session("s-a").await.unwrap();
    assert_eq!(store.session_summary("s-a").await.unwrap(), None);
    assert!(store.session_summary("s-b").await.unwrap().is_none());
}

fn account(user_id: &str, username: &str, email: Option<&str>, created_at: f64) -> AccountRecord {
    AccountRecord {
        user_id: user_id.into(),
        username: username.into(),
        email: email.map(Into::into),
        phonenum: Some("555-0100".into()),
        role: "user".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        token_generation: 0,
        created_at,
    }
}

async fn accounts_have_unique_login_names(store: Arc<dyn Store>) {
    let alice = account("a1", "Alice", Some("alice@example.com"), 10.0);
    assert!(store.insert_account(&alice).await.unwrap());
    // The username and the email are each taken, whatever their case.
    for taken in [
        account("a2", "ALICE", None, 11.0),
        account("a3", "someone", Some("Alice@Example.com"), 12.0),
        account("a4", "alice@example.com", None, 13.0),
    ] {
        assert!(
            !store.insert_account(&taken).await.unwrap(),
            "{} was accepted",
            taken.username
        );
        assert!(store.account(&taken.user_id).await.unwrap().is_none());
    }
    let bob = account("b1", "bob", None, 5.0);
    assert!(store.insert_account(&bob).await.unwrap());
    // A rejected insert left no login key behind.
    assert!(store.account_by_login("someone").await.unwrap().is_none());

    assert_eq!(store.account("a1").await.unwrap(), Some(alice.clone()));
    for login in ["alice", "ALICE", "alice@EXAMPLE.com"] {
        assert_eq!(
            store
                .account_by_login(login)
                .await
                .unwrap()
                .map(|a| a.user_id),
            Some("a1".to_string()),
            "{login}"
        );
    }
    let listed: Vec<String> = store
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.user_id)
        .collect();
    assert_eq!(listed, ["b1", "a1"], "oldest first");
}

async fn accounts_are_updated_and_deleted(store: Arc<dyn Store>) {
    let alice = account("a1", "alice", Some("alice@example.com"), 10.0);
    assert!(store.insert_account(&alice).await.unwrap());
    let changed = AccountRecord {
        password_hash: "$argon2id$new".into(),
        role: "admin".into(),
        phonenum: None,
        token_generation: 3,
        ..alice.clone()
    };
    assert!(store.update_account(&changed).await.unwrap());
    assert_eq!(store.account("a1").await.unwrap(), Some(changed.clone()));
    assert_eq!(
        store.account_by_login("alice").await.unwrap(),
        Some(changed)
    );
    let nobody = account("zz", "nobody", None, 1.0);
    assert!(!store.update_account(&nobody).await.unwrap());
    assert!(store.account("zz").await.unwrap().is_none());

    assert!(store.delete_account("a1").await.unwrap());
    assert!(!store.delete_account("a1").await.unwrap());
    assert!(store.account("a1").await.unwrap().is_none());
    assert!(
        store
            .account_by_login("alice@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.list_accounts().await.unwrap().is_empty());
    // Its names are free again.
    assert!(
        store
            .insert_account(&account("a9", "Alice", Some("alice@example.com"), 20.0))
            .await
            .unwrap()
    );
}

async fn a_refresh_token_is_taken_once(store: Arc<dyn Store>) {
    let token = RefreshTokenRecord {
        token_id: "t1".into(),
        user_id: "a1".into(),
        expires_at: 2_000_000_000.0,
    };
    store.put_refresh_token(&token).await.unwrap();
    let (first, second) = tokio::join!(
        store.take_refresh_token("t1"),
        store.take_refresh_token("t1")
    );
    let taken: Vec<RefreshTokenRecord> = [first.unwrap(), second.unwrap()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(taken, vec![token]);
    assert!(store.take_refresh_token("t1").await.unwrap().is_none());
    assert!(store.take_refresh_token("never").await.unwrap().is_none());
}

async fn system_settings_are_kept_and_replaced(store: Arc<dyn Store>) {
    assert!(store.system_settings().await.unwrap().is_none());
    let open = SystemSettingsRecord {
        allow_registration: Some(true),
        updated_at: 10.0,
    };
    store.put_system_settings(&open).await.unwrap();
    assert_eq!(store.system_settings().await.unwrap(), Some(open));
    let closed = SystemSettingsRecord {
        allow_registration: Some(false),
        updated_at: 11.0,
    };
    store.put_system_settings(&closed).await.unwrap();
    assert_eq!(store.system_settings().await.unwrap(), Some(closed));
}

fn agent(agent_id: &str, owner: &str, name: &str) -> AgentRecord {
    AgentRecord {
        agent_id: agent_id.into(),
        owner: owner.into(),
        name: name.into(),
        config: json!({"name": name, "systemPrefix": "You help.", "availableTools": ["echo"]}),
        created_at: 1.0,
        updated_at: 1.0,
    }
}

async fn agents_have_names_unique_per_owner(store: Arc<dyn Store>) {
    let writer = agent("agent_0001", "alice", "Writer");
    assert!(store.insert_agent(&writer).await.unwrap());
    assert!(
        !store
            .insert_agent(&agent("agent_0002", "alice", "Writer"))
            .await
            .unwrap(),
        "alice has a Writer"
    );
    assert!(store.agent("agent_0002").await.unwrap().is_none());
    assert!(
        store
            .insert_agent(&agent("agent_0003", "bob", "Writer"))
            .await
            .unwrap(),
        "bob's names are his own"
    );
    assert!(
        store
            .insert_agent(&agent("agent_0004", "alice", "Analyst"))
            .await
            .unwrap()
    );
    // An owner whose id extends another's with '#' does not mix with it.
    assert!(
        store
            .insert_agent(&agent("agent_0005", "alice#x", "Zed"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.agent("agent_0001").await.unwrap(),
        Some(writer.clone())
    );
    let names = |agents: Vec<AgentRecord>| -> Vec<String> {
        agents
            .into_iter()
            .map(|a| format!("{}/{}", a.owner, a.name))
            .collect()
    };
    assert_eq!(
        names(store.owner_agents("alice").await.unwrap()),
        ["alice/Analyst", "alice/Writer"]
    );
    assert_eq!(names(store.all_agents().await.unwrap()).len(), 4);

    // Renaming onto a taken name fails; onto a free one frees the old.
    let clash = AgentRecord {
        name: "Analyst".into(),
        ..writer.clone()
    };
    assert!(!store.replace_agent(&clash).await.unwrap());
    assert_eq!(
        store.agent("agent_0001").await.unwrap(),
        Some(writer.clone())
    );
    let renamed = AgentRecord {
        name: "Editor".into(),
        config: json!({"name": "Editor"}),
        updated_at: 2.0,
        ..writer.clone()
    };
    assert!(store.replace_agent(&renamed).await.unwrap());
    assert_eq!(store.agent("agent_0001").await.unwrap(), Some(renamed));
    assert!(
        store
            .insert_agent(&agent("agent_0006", "alice", "Writer"))
            .await
            .unwrap(),
        "the old name is free again"
    );

    assert!(store.delete_agent("agent_0006").await.unwrap());
    assert!(!store.delete_agent("agent_0006").await.unwrap());
    assert!(
        store
            .insert_agent(&agent("agent_0007", "alice", "Writer"))
            .await
            .unwrap(),
        "a deleted agent's name is free"
    );
}

async fn providers_are_kept_per_owner(store: Arc<dyn Store>) {
    let provider = |owner: &str, id: &str, created_at: f64| ProviderRecord {
        provider_id: id.into(),
        owner: owner.into(),
        config: json!({"name": id, "model": "m"}),
        sealed_keys: "00ff".into(),
        created_at,
        updated_at: created_at,
    };
    store
        .put_provider(&provider("alice", "p2", 2.0))
        .await
        .unwrap();
    store
        .put_provider(&provider("alice", "p1", 1.0))
        .await
        .unwrap();
    store
        .put_provider(&provider("bob", "p1", 3.0))
        .await
        .unwrap();
    let ids = |providers: Vec<ProviderRecord>| -> Vec<String> {
        providers.into_iter().map(|p| p.provider_id).collect()
    };
    assert_eq!(
        ids(store.owner_providers("alice").await.unwrap()),
        ["p1", "p2"]
    );
    assert_eq!(ids(store.owner_providers("bob").await.unwrap()), ["p1"]);
    assert!(store.provider("bob", "p2").await.unwrap().is_none());
    let mut changed = provider("alice", "p1", 1.0);
    changed.sealed_keys = "abcd".into();
    changed.updated_at = 5.0;
    store.put_provider(&changed).await.unwrap();
    assert_eq!(store.provider("alice", "p1").await.unwrap(), Some(changed));
    assert!(!store.delete_provider("bob", "p2").await.unwrap());
    assert!(store.delete_provider("alice", "p1").await.unwrap());
    assert!(!store.delete_provider("alice", "p1").await.unwrap());
    assert_eq!(ids(store.owner_providers("alice").await.unwrap()), ["p2"]);
    assert!(
        store.provider("bob", "p1").await.unwrap().is_some(),
        "bob's p1 is his"
    );
}

async fn skill_names_are_unique_across_owners(store: Arc<dyn Store>) {
    let skill = |name: &str, owner: &str, text: &str, at: f64| SkillRecord {
        name: name.into(),
        owner: owner.into(),
        description: format!("{name} by {owner}"),
        package: json!({"instructions": text, "files": []}),
        created_at: at,
        updated_at: at,
    };
    assert!(
        store
            .put_skill(&skill("csv", "alice", "v1", 1.0))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_skill(&skill("pdf", "alice", "p", 2.0))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_skill(&skill("base", "", "sys", 3.0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_skill(&skill("csv", "bob", "hijack", 4.0))
            .await
            .unwrap(),
        "another owner's name is refused"
    );
    assert_eq!(
        store.skill("csv").await.unwrap(),
        Some(skill("csv", "alice", "v1", 1.0)),
        "and the refused write changed nothing"
    );
    let mut changed = skill("csv", "alice", "v2", 1.0);
    changed.updated_at = 5.0;
    assert!(
        store.put_skill(&changed).await.unwrap(),
        "the owner replaces"
    );
    assert_eq!(store.skill("csv").await.unwrap(), Some(changed));
    let names = |skills: Vec<SkillRecord>| -> Vec<String> {
        skills.into_iter().map(|skill| skill.name).collect()
    };
    assert_eq!(
        names(store.owner_skills("alice").await.unwrap()),
        ["csv", "pdf"]
    );
    assert_eq!(names(store.owner_skills("").await.unwrap()), ["base"]);
    assert!(store.owner_skills("bob").await.unwrap().is_empty());
    assert!(store.delete_skill("csv").await.unwrap());
    assert!(!store.delete_skill("csv").await.unwrap());
    assert!(store.skill("csv").await.unwrap().is_none());
    assert!(
        store
            .put_skill(&skill("csv", "bob", "mine now", 6.0))
            .await
            .unwrap(),
        "a deleted skill's name is free"
    );
}

fn knowledge_document(id: &str, status: DocStatus) -> KnowledgeDocRecord {
    KnowledgeDocRecord {
        id: id.into(),
        name: format!("{id}.md"),
        object_key: format!(".knowledge/kb/{id}/{id}.md"),
        size: 10,
        status,
        attempts: 0,
        error: None,
        task_id: "t1".into(),
        passages: 0,
        created_at: 1.0,
        updated_at: 1.0,
    }
}

async fn knowledge_bases_are_kept_per_owner_and_written_by_revision(store: Arc<dyn Store>) {
    let base = |id: &str, owner: &str, at: f64| KnowledgeBaseRecord {
        id: id.into(),
        owner: owner.into(),
        name: format!("base {id}"),
        kind: "document".into(),
        intro: "notes".into(),
        language: "en".into(),
        documents: Vec::new(),
        revision: 1,
        created_at: at,
        updated_at: at,
    };
    assert!(
        store
            .create_knowledge_base(&base("k1", "alice", 1.0))
            .await
            .unwrap()
    );
    assert!(
        store
            .create_knowledge_base(&base("k2", "alice", 2.0))
            .await
            .unwrap()
    );
    assert!(
        store
            .create_knowledge_base(&base("k3", "bob", 3.0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_knowledge_base(&base("k1", "alice", 4.0))
            .await
            .unwrap(),
        "an id is created once"
    );
    let ids = |bases: Vec<KnowledgeBaseRecord>| -> Vec<String> {
        bases.into_iter().map(|base| base.id).collect()
    };
    assert_eq!(
        ids(store.owner_knowledge_bases("alice").await.unwrap()),
        ["k2", "k1"],
        "newest first, the owner's only"
    );
    assert!(store.knowledge_base("bob", "k1").await.unwrap().is_none());

    let mut read = store.knowledge_base("alice", "k1").await.unwrap().unwrap();
    assert_eq!(read.revision, 1);
    let stale = read.clone();
    read.documents = vec![
        knowledge_document("d1", DocStatus::Waiting),
        knowledge_document("d2", DocStatus::Indexed),
    ];
    read.updated_at = 5.0;
    assert!(store.update_knowledge_base(&read).await.unwrap());
    assert!(
        !store.update_knowledge_base(&stale).await.unwrap(),
        "a write based on an older revision changes nothing"
    );
    let stored = store.knowledge_base("alice", "k1").await.unwrap().unwrap();
    assert_eq!(stored.revision, 2);
    assert_eq!(stored.documents, read.documents);

    let pending = store.pending_knowledge_bases(10).await.unwrap();
    assert_eq!(ids(pending), ["k1"], "only bases with a waiting document");
    let mut done = stored.clone();
    done.documents[0].status = DocStatus::Failed;
    done.documents[0].error = Some("not text".into());
    assert!(store.update_knowledge_base(&done).await.unwrap());
    assert!(store.pending_knowledge_bases(10).await.unwrap().is_empty());

    assert!(!store.delete_knowledge_base("bob", "k1").await.unwrap());
    assert!(store.delete_knowledge_base("alice", "k1").await.unwrap());
    assert!(!store.delete_knowledge_base("alice", "k1").await.unwrap());
    assert!(store.knowledge_base("alice", "k1").await.unwrap().is_none());
    let mut gone = done.clone();
    gone.revision = 3;
    assert!(
        !store.update_knowledge_base(&gone).await.unwrap(),
        "a deleted base is not written again"
    );
}

async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            conformance!(@test $make, sessions_are_created_once_and_updated);
            conformance!(@test $make, sessions_are_listed_searched_sorted_and_paged);
            conformance!(@test $make, events_come_back_in_order_after_a_sequence_number);
            conformance!(@test $make, a_taken_sequence_number_fails_the_whole_batch);
            conformance!(@test $make, deleting_a_session_removes_its_events_and_lock);
            conformance!(@test $make, streaming_runs_read_back_exactly_while_they_stream_and_after);
            conformance!(@test $make, usage_is_written_with_its_events_or_not_at_all);
            conformance!(@test $make, batched_writes_carry_their_usage);
            conformance!(@test $make, reading_after_any_number_inside_a_batch_returns_exactly_the_rest);
            conformance!(@test $make, the_run_lock_admits_one_run_until_released_or_expired);
            conformance!(@test $make, a_run_opens_with_its_session_and_closes_with_its_tally);
            conformance!(@test $make, the_cancel_flag_reaches_only_a_live_run);
            conformance!(@test $make, an_idempotency_key_binds_once);
            conformance!(@test $make, a_pending_approval_is_taken_by_one_decision);
            conformance!(@test $make, paused_runs_come_due_earliest_first);
            conformance!(@test $make, mcp_servers_are_kept_per_owner);
            conformance!(@test $make, an_mcp_authorization_is_taken_once);
            conformance!(@test $make, mcp_credentials_are_written_by_version);
            conformance!(@test $make, user_memories_are_kept_per_user_and_key);
            conformance!(@test $make, summaries_are_written_once_per_log_position);
            conformance!(@test $make, accounts_have_unique_login_names);
            conformance!(@test $make, accounts_are_updated_and_deleted);
            conformance!(@test $make, a_refresh_token_is_taken_once);
            conformance!(@test $make, system_settings_are_kept_and_replaced);
            conformance!(@test $make, agents_have_names_unique_per_owner);
            conformance!(@test $make, providers_are_kept_per_owner);
            conformance!(@test $make, skill_names_are_unique_across_owners);
            conformance!(@test $make, knowledge_bases_are_kept_per_owner_and_written_by_revision);
            conformance!(@test $make, ping_answers);
        }
    };
    (@test $make:expr, $name:ident) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let (store, _guard) = $make.await;
            super::$name(store).await;
        }
    };
}

async fn memory() -> (Arc<dyn Store>, ()) {
    (Arc::new(MemoryStore::default()), ())
}

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(&dir.path().join("nested/sage.db"))
        .await
        .unwrap();
    (Arc::new(store), dir)
}

async fn mariadb() -> (Arc<dyn Store>, ()) {
    (Arc::new(mysql_store(&fresh_name("sage_test")).await), ())
}

async fn dynamodb() -> (Arc<dyn Store>, ()) {
    (Arc::new(dynamo_store(&fresh_name("sage_test")).await), ())
}

/// SQLite keeps streaming runs' events in a tier of their own until each run ends. A process
/// killed mid-run leaves them there: the next to open the file finds them in the log, and
/// another process reading the file sees a run whole once it has ended.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_keeps_a_killed_processs_streaming_events_and_shows_an_ended_run_to_others() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sage.db");
    let mut written = events("killed", 1..=1);
    let ended: Vec<StoredEvent>;
    {
        let store = SqlStore::open(&file).await.unwrap();
        store.append_events("killed", &written).await.unwrap();
        for from in (2..200).step_by(9) {
            let batch = events("killed", from..=from + 8);
            store.append_events("killed", &batch).await.unwrap();
            written.extend(batch);
        }
        let mut run = events("ended", 1..=1);
        store.append_events("ended", &run).await.unwrap();
        let mut answer = events("ended", 2..=40);
        answer.push(StoredEvent::new(41, Event::stream_end("ended", 41)));
        for batch in answer.chunks(5) {
            store.append_events("ended", batch).await.unwrap();
        }
        run.extend(answer);
        ended = run;
        let other = SqlStore::open(&file).await.unwrap();
        assert_eq!(other.events_after("ended", 0).await.unwrap(), ended);
        assert_eq!(store.events_after("killed", 0).await.unwrap(), written);
        for from in (200..260).step_by(6) {
            let batch = events("killed", from..=from + 5);
            store.append_events("killed", &batch).await.unwrap();
            written.extend(batch);
        }
        assert_eq!(store.events_after("killed", 0).await.unwrap(), written);
        // Dropped without ending its run, as a killed process would leave the file.
        std::mem::forget(store);
    }
    let reopened = SqlStore::open(&file).await.unwrap();
    assert_eq!(reopened.events_after("killed", 0).await.unwrap(), written);
    assert_eq!(reopened.last_seq("killed").await.unwrap(), 259);
    assert_eq!(reopened.events_after("ended", 0).await.unwrap(), ended);
    let error = reopened
        .append_events("killed", &events("killed", 259..=260))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::SeqConflict { .. }), "{error}");
}

conformance!(memory_store, memory());
conformance!(sqlite_store, sqlite());
conformance!(mariadb_store, mariadb());
conformance!(dynamodb_store, dynamodb());

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_refuses_an_item_over_400_kb_clearly() {
    let store = dynamo_store(&fresh_name("sage_test")).await;
    let huge = StoredEvent::new(
        1,
        Event::text(
            "big",
            EventType::DoSubtaskResult,
            "m",
            "SimpleAgent",
            "x".repeat(500 * 1024),
        ),
    );
    let error = store.append_events("big", &[huge]).await.unwrap_err();
    assert!(matches!(error, StoreError::ItemTooLarge { .. }), "{error}");
    assert!(error.to_string().contains("limit"));
    assert!(store.events_after("big", 0).await.unwrap().is_empty());
}
