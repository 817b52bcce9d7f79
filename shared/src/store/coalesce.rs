//! Funnels the event writes of every run in a process into shared batches: with SQLite one
//! transaction then carries the events of many sessions, instead of one commit per run per flush.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{EventBatch, EventLog, StoreError, UsageRecord};
use crate::wire::StoredEvent;

const MAX_REQUESTS_PER_WRITE: usize = 256;
/// Appends that may wait for the batcher; a run that finds it full waits (back-pressure).
const QUEUE_CAPACITY: usize = 1024;

type Done = oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>;

struct Append {
    batch: EventBatch,
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
        self.submit(EventBatch {
            session_id: session_id.to_owned(),
            events,
            usage: None,
        })
        .await
    }

    /// A run's closing events with the usage they account for: both are stored or neither.
    pub async fn append_with_usage(
        &self,
        session_id: &str,
        events: Vec<StoredEvent>,
        usage: &UsageRecord,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.submit(EventBatch {
            session_id: session_id.to_owned(),
            events,
            usage: Some(usage.clone()),
        })
        .await
    }

    async fn submit(&self, batch: EventBatch) -> Result<Vec<StoredEvent>, StoreError> {
        let Some(batcher) = &self.batcher else {
            append_one(self.store.as_ref(), &batch).await?;
            return Ok(batch.events);
        };
        let (done, result) = oneshot::channel();
        if let Err(unsent) = batcher.send(Append { batch, done }).await {
            let batch = unsent.0.batch;
            append_one(self.store.as_ref(), &batch).await?;
            return Ok(batch.events);
        }
        result.await.unwrap_or(Err(StoreError::WriterStopped))
    }
}

async fn append_one(store: &dyn EventLog, batch: &EventBatch) -> Result<(), StoreError> {
    match &batch.usage {
        Some(usage) => {
            store
                .append_events_with_usage(&batch.session_id, &batch.events, usage)
                .await
        }
        None => store.append_events(&batch.session_id, &batch.events).await,
    }
}

async fn run_batcher(store: Arc<dyn EventLog>, mut requests: mpsc::Receiver<Append>) {
    let mut pending = Vec::with_capacity(MAX_REQUESTS_PER_WRITE);
    while requests
        .recv_many(&mut pending, MAX_REQUESTS_PER_WRITE)
        .await
        > 0
    {
        let (batches, senders): (Vec<EventBatch>, Vec<Done>) = pending
            .drain(..)
            .map(|request| (request.batch, request.done))
            .unzip();
        let written = if batches.len() == 1 {
            append_one(store.as_ref(), &batches[0]).await
        } else {
            store.append_event_batches(&batches).await
        };
        match written {
            Ok(()) => {
                for (batch, done) in batches.into_iter().zip(senders) {
                    let _ = done.send(Ok(batch.events));
                }
            }
            Err(error) if batches.len() == 1 => {
                let _ = senders.into_iter().next().map(|done| done.send(Err(error)));
            }
            // One run's failure (a taken sequence number) must not fail the others.
            Err(_) => {
                for (batch, done) in batches.into_iter().zip(senders) {
                    let result = append_one(store.as_ref(), &batch).await;
                    let _ = done.send(result.map(|()| batch.events));
                }
            }
        }
    }
}
