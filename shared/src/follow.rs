//! Reading a run from the event log instead of from the process that runs it: resume after a
//! disconnect, attach a retried request, follow a run on another instance.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use crate::event::{EventType, StoredEvent};
use crate::event_log::token_usage_event;
use crate::store::Store;

const POLL: Duration = Duration::from_millis(100);

/// Streams the session's events after `after` up to the end of the run they belong to: replays
/// what is stored, then follows the live run, then ends with its tail. A run that died without
/// its tail (its lease expired) gets one made up, unstored.
pub fn follow(
    store: Arc<dyn Store>,
    session_id: String,
    after: u64,
) -> mpsc::UnboundedReceiver<StoredEvent> {
    let (client, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut cursor = after;
        let mut sent: u64 = 0;
        let mut confirmed_idle = false;
        loop {
            let batch = match store.events_after(&session_id, cursor).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%session_id, %error, "cannot read the event log to resume");
                    break;
                }
            };
            let fresh = !batch.is_empty();
            for stored in batch {
                cursor = stored.seq;
                if !stored.event.is_streamed() {
                    continue;
                }
                let end = stored.event.kind == EventType::StreamEnd;
                if client.send(stored).is_err() {
                    return;
                }
                sent += 1;
                if end {
                    return;
                }
            }
            if fresh {
                confirmed_idle = false;
                continue;
            }
            let live = match store.run_lock(&session_id).await {
                Ok(lock) => lock.is_some_and(|lock| lock.is_live()),
                Err(error) => {
                    tracing::warn!(%session_id, %error, "cannot read the run lock to resume");
                    false
                }
            };
            if live {
                confirmed_idle = false;
                tokio::time::sleep(POLL).await;
                continue;
            }
            // The writer stores stream_end before it releases the lock: look once more.
            if confirmed_idle {
                break;
            }
            confirmed_idle = true;
        }
        let usage = token_usage_event(&session_id, &json!({"total_info": {}, "per_step_info": []}));
        let _ = client.send(StoredEvent {
            seq: cursor + 1,
            event: usage,
        });
        let _ = client.send(StoredEvent {
            seq: cursor + 2,
            event: crate::event::Event::stream_end(&session_id, sent + 1),
        });
    });
    events
}
