//! Funnels the event writes of every run in a process into shared batches: with SQLite one
//! transaction then carries the events of many sessions, instead of one commit per run per flush.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError};
use crate::event::StoredEvent;

const MAX_REQUESTS_PER_WRITE: usize = 256;

struct Append {
    session_id: String,
    events: Vec<StoredEvent>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Where runs append their events: straight to the store, or through the shared batcher when
/// the store gains from it.
#[derive(Clone)]
pub struct EventSink {
    store: Arc<dyn Store>,
    batcher: Option<mpsc::UnboundedSender<Append>>,
}

impl EventSink {
    /// Must be called inside a tokio runtime when the store coalesces writes.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let batcher = store.coalesces_writes().then(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(run_batcher(store.clone(), receiver));
            sender
        });
        Self { store, batcher }
    }

    pub async fn append(
        &self,
        session_id: &str,
        events: Vec<StoredEvent>,
    ) -> Result<(), StoreError> {
        let Some(batcher) = &self.batcher else {
            return self.store.append_events(session_id, &events).await;
        };
        let (done, result) = oneshot::channel();
        let request = Append {
            session_id: session_id.to_owned(),
            events,
            done,
        };
        if let Err(unsent) = batcher.send(request) {
            let request = unsent.0;
            return self
                .store
                .append_events(&request.session_id, &request.events)
                .await;
        }
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Config("the event batcher stopped".into())))
    }
}

async fn run_batcher(store: Arc<dyn Store>, mut requests: mpsc::UnboundedReceiver<Append>) {
    let mut pending = Vec::with_capacity(MAX_REQUESTS_PER_WRITE);
    while requests
        .recv_many(&mut pending, MAX_REQUESTS_PER_WRITE)
        .await
        > 0
    {
        let batch: Vec<Append> = std::mem::take(&mut pending);
        if batch.len() == 1 {
            let request = batch.into_iter().next().expect("one request");
            let result = store
                .append_events(&request.session_id, &request.events)
                .await;
            let _ = request.done.send(result);
            continue;
        }
        let batches: Vec<(String, Vec<StoredEvent>)> = batch
            .iter()
            .map(|request| (request.session_id.clone(), request.events.clone()))
            .collect();
        match store.append_event_batches(&batches).await {
            Ok(()) => {
                for request in batch {
                    let _ = request.done.send(Ok(()));
                }
            }
            // One bad batch must not fail the others: write them one by one to find it.
            Err(_) => {
                for request in batch {
                    let result = store
                        .append_events(&request.session_id, &request.events)
                        .await;
                    let _ = request.done.send(result);
                }
            }
        }
    }
}
