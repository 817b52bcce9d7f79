//! Writes a run's events to the session's log, then hands them to the client: nothing is sent
//! that was not stored first. Events that queue up while a write is in flight go in the next
//! write as one batch, so a fast stream costs few writes and a slow one adds no delay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, EventType, Role, StoredEvent};
use crate::store::EventSink;

const MAX_BATCH: usize = 64;

/// What the run holds to emit events, and to learn that it should stop.
#[derive(Clone)]
pub struct Emitter {
    events: mpsc::UnboundedSender<Event>,
    aborted: Arc<AtomicBool>,
    cancel: CancellationToken,
}

impl Emitter {
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// True once the run should stop: it was interrupted, or its log cannot be written.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed) || self.cancel.is_cancelled()
    }

    /// True when the run was interrupted by a user.
    pub fn is_interrupted(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the run is interrupted.
    pub async fn interrupted(&self) {
        self.cancel.cancelled().await
    }
}

/// Starts the writer. `after_seq` is the last sequence number already in the session's log. When
/// every `Emitter` is dropped the writer stores `stream_end` and returns it unsent, so the caller
/// can finish its bookkeeping (release the session) before the client learns the run is over.
pub fn spawn_writer(
    sink: EventSink,
    session_id: String,
    after_seq: u64,
    client: mpsc::UnboundedSender<StoredEvent>,
    cancel: CancellationToken,
) -> (Emitter, JoinHandle<Option<StoredEvent>>) {
    let (events, mut incoming) = mpsc::unbounded_channel::<Event>();
    let aborted = Arc::new(AtomicBool::new(false));
    let emitter = Emitter {
        events,
        aborted: aborted.clone(),
        cancel,
    };
    let writer = tokio::spawn(async move {
        let mut seq = after_seq;
        let mut sent: u64 = 0;
        let mut batch = Vec::new();
        while incoming.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let stored: Vec<StoredEvent> = batch
                .drain(..)
                .map(|event| {
                    seq += 1;
                    StoredEvent { seq, event }
                })
                .collect();
            let stored = match sink.append(&session_id, stored).await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::error!(%session_id, %error, "event log write failed; ending the run");
                    aborted.store(true, Ordering::Relaxed);
                    incoming.close();
                    fail_stream(&client, &session_id, seq, sent);
                    return None;
                }
            };
            sent += stored.len() as u64;
            for event in stored {
                let _ = client.send(event);
            }
        }
        let end = StoredEvent {
            seq: seq + 1,
            event: Event::stream_end(&session_id, sent),
        };
        match sink.append(&session_id, vec![end.clone()]).await {
            Ok(mut stored) => stored.pop(),
            Err(error) => {
                tracing::error!(%session_id, %error, "could not store stream_end");
                Some(end)
            }
        }
    });
    (emitter, writer)
}

/// The log is unwritable: tell the client, unstored, and close with the mandatory tail.
fn fail_stream(client: &mpsc::UnboundedSender<StoredEvent>, session_id: &str, seq: u64, sent: u64) {
    let error = Event {
        content: Some(json!(
            "The conversation could not be saved; the run was stopped."
        )),
        message_id: Some(uuid::Uuid::new_v4().to_string()),
        ..Event::new(session_id, Role::Assistant, EventType::Error)
    };
    let usage = token_usage_event(session_id, &json!({"total_info": {}, "per_step_info": []}));
    let tail = [error, usage];
    let count = sent + tail.len() as u64;
    for (offset, event) in tail.into_iter().enumerate() {
        let _ = client.send(StoredEvent {
            seq: seq + 1 + offset as u64,
            event,
        });
    }
    let _ = client.send(StoredEvent {
        seq: seq + 3,
        event: Event::stream_end(session_id, count),
    });
}

pub fn token_usage_event(session_id: &str, token_usage: &serde_json::Value) -> Event {
    Event {
        content: Some(json!("")),
        message_id: Some(uuid::Uuid::new_v4().to_string()),
        metadata: Some(json!({"token_usage": token_usage, "session_id": session_id})),
        ..Event::new(session_id, Role::Assistant, EventType::TokenUsage)
    }
}
