//! One conformance suite for every store backend: the same tests against each.

use std::sync::Arc;
use std::time::Duration;

use sage_core::error::now_secs;
use sage_core::event::{Event, EventType, StoredEvent};
use sage_core::store::{MemoryStore, SessionRecord, SqliteStore, Store, StoreError};

fn session(id: &str, user: &str) -> SessionRecord {
    SessionRecord {
        session_id: id.to_owned(),
        user_id: user.to_owned(),
        agent_id: None,
        agent_name: Some("agent".into()),
        title: "title".into(),
        created_at: now_secs(),
        updated_at: now_secs(),
    }
}

fn events(session_id: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<StoredEvent> {
    seqs.map(|seq| StoredEvent {
        seq,
        event: Event::text(
            session_id,
            EventType::DoSubtaskResult,
            "m1",
            "SimpleAgent",
            format!("delta {seq} 你好"),
        ),
    })
    .collect()
}

async fn sessions_are_created_once_and_read_back(store: Arc<dyn Store>) {
    assert!(store.get_session("s1").await.unwrap().is_none());
    let created = store.create_session(&session("s1", "alice")).await.unwrap();
    assert_eq!(created.user_id, "alice");
    let again = store.create_session(&session("s1", "bob")).await.unwrap();
    assert_eq!(
        again.user_id, "alice",
        "an existing session is not overwritten"
    );
    store.touch_session("s1", 42.0).await.unwrap();
    assert_eq!(
        store.get_session("s1").await.unwrap().unwrap().updated_at,
        42.0
    );
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

async fn a_taken_sequence_number_fails_the_whole_batch(store: Arc<dyn Store>) {
    store
        .append_events("s3", &events("s3", 1..=2))
        .await
        .unwrap();
    let error = store
        .append_events("s3", &events("s3", 2..=4))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::SeqConflict { seq: 2, .. }),
        "{error}"
    );
    assert_eq!(
        store.last_seq("s3").await.unwrap(),
        2,
        "nothing of the batch was written"
    );
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

    let short = Duration::from_millis(200);
    assert!(store.try_lock_run("s5", "crashed", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store.try_lock_run("s5", "next", lease).await.unwrap(),
        "an expired lease is taken over"
    );
    assert!(!store.renew_run_lock("s5", "crashed", lease).await.unwrap());
}

async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn sessions_are_created_once_and_read_back() {
                let (store, _guard) = $make.await;
                super::sessions_are_created_once_and_read_back(store).await;
            }

            #[tokio::test]
            async fn events_come_back_in_order_after_a_sequence_number() {
                let (store, _guard) = $make.await;
                super::events_come_back_in_order_after_a_sequence_number(store).await;
            }

            #[tokio::test]
            async fn a_taken_sequence_number_fails_the_whole_batch() {
                let (store, _guard) = $make.await;
                super::a_taken_sequence_number_fails_the_whole_batch(store).await;
            }

            #[tokio::test]
            async fn the_run_lock_admits_one_run_until_released_or_expired() {
                let (store, _guard) = $make.await;
                super::the_run_lock_admits_one_run_until_released_or_expired(store).await;
            }

            #[tokio::test]
            async fn ping_answers() {
                let (store, _guard) = $make.await;
                super::ping_answers(store).await;
            }
        }
    };
}

async fn memory() -> (Arc<dyn Store>, ()) {
    (Arc::new(MemoryStore::default()), ())
}

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nested/sage.db"))
        .await
        .unwrap();
    (Arc::new(store), dir)
}

conformance!(memory_store, memory());
conformance!(sqlite_store, sqlite());
