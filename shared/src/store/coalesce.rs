//! Funnels the event writes of every run in a process into shared batches: with SQLite one
//! transaction then carries the events of many sessions, instead of one commit per run per flush.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{EventLog, StoreError, UsageRecord};
use crate::wire::StoredEvent;

const MAX_REQUESTS_PER_WRITE: usize = 256;
/// Appends that may wait for the batcher; a run that finds it full waits (back-pressure).
const QUEUE_CAPACITY: usize = 1024;

type Done = oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>;

struct Append {
    session_id: String,
    events: Vec<StoredEvent>,
    done: Done,
}

/// Where runs append their events: straight to the store, or through the shared batcher when
/// the store gains from it.
#[derive(Clone)]
pub struct EventSink {
    store: Arc<dyn EventLog>,
    batcher: Option<mpsc::Sender<Append>>,
    pack_window: Duration,
}

impl EventSink {
    /// Must be called inside a tokio runtime when the store coalesces writes.
    pub fn new(store: Arc<dyn EventLog>) -> Self {
        let batcher = store.coalesces_writes().then(|| {
            let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
            tokio::spawn(run_batcher(store.clone(), receiver));
            sender
        });
        Self {
            store,
            batcher,
            pack_window: Duration::ZERO,
        }
    }

    /// How long a writer may hold a message's text deltas to write them together.
    pub fn with_pack_window(mut self, window: Duration) -> Self {
        self.pack_window = window;
        self
    }

    pub fn pack_window(&self) -> Duration {
        self.pack_window
    }

    /// Stores the events and hands them back.
    pub async fn append(
        &self,
        session_id: &str,
        events: Vec<StoredEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let Some(batcher) = &self.batcher else {
            self.store.append_events(session_id, &events).await?;
            return Ok(events);
        };
        let (done, result) = oneshot::channel();
        let request = Append {
            session_id: session_id.to_owned(),
            events,
            done,
        };
        if let Err(unsent) = batcher.send(request).await {
            let request = unsent.0;
            self.store
                .append_events(&request.session_id, &request.events)
                .await?;
            return Ok(request.events);
        }
        result.await.unwrap_or(Err(StoreError::WriterStopped))
    }

    /// Stores a run's closing events with the usage they account for, in one write of their
    /// own (the ledger row must commit with them, not with other sessions' batches).
    pub async fn append_with_usage(
        &self,
        session_id: &str,
        events: Vec<StoredEvent>,
        usage: &UsageRecord,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.store
            .append_events_with_usage(session_id, &events, usage)
            .await?;
        Ok(events)
    }
}

async fn run_batcher(store: Arc<dyn EventLog>, mut requests: mpsc::Receiver<Append>) {
    let mut pending = Vec::with_capacity(MAX_REQUESTS_PER_WRITE);
    while requests
        .recv_many(&mut pending, MAX_REQUESTS_PER_WRITE)
        .await
        > 0
    {
        let (batches, senders): (Vec<(String, Vec<StoredEvent>)>, Vec<Done>) = pending
            .drain(..)
            .map(|request| ((request.session_id, request.events), request.done))
            .unzip();
        let written = if batches.len() == 1 {
            store.append_events(&batches[0].0, &batches[0].1).await
        } else {
            store.append_event_batches(&batches).await
        };
        match written {
            Ok(()) => {
                for ((_, events), done) in batches.into_iter().zip(senders) {
                    let _ = done.send(Ok(events));
                }
            }
            Err(error) if batches.len() == 1 => {
                let _ = senders.into_iter().next().map(|done| done.send(Err(error)));
            }
            // One bad batch must not fail the others: write them one by one to find it.
            Err(_) => {
                for ((session_id, events), done) in batches.into_iter().zip(senders) {
                    let result = store.append_events(&session_id, &events).await;
                    let _ = done.send(result.map(|()| events));
                }
            }
        }
    }
}
