//! Writes a run's events to the session's log, then hands them to the client: nothing is sent
//! that was not stored first. Events that queue up while a write is in flight go in the next
//! write as one batch, so a fast stream costs few writes and a slow one adds no delay.
//!
//! Every channel here is bounded. The run waits when the log falls behind (back-pressure on the
//! agent, never on the client); a client that falls behind loses its live feed and reads the
//! rest from the log (`follow::live_then_log`), so a reader that stops reading costs nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent::Emitter;
use crate::store::{EventSink, UsageRecord};
use crate::util::{Day, new_id};
use crate::wire::{Event, EventType, Role, StoredEvent};

const MAX_BATCH: usize = 64;
/// How long the writer holds a run's `token_usage` for the end of the run, so both are stored in
/// one write; the agent returns right after it.
const TAIL_WAIT: std::time::Duration = std::time::Duration::from_millis(5);
/// Events the agent may get ahead of the log.
const EMIT_CAPACITY: usize = 256;
/// Stored events a client may leave unread before it is switched to reading the log.
pub const LIVE_CAPACITY: usize = 1024;

/// The client's live feed; dropped for good once the client falls behind.
pub struct LiveFeed {
    sender: Option<mpsc::Sender<StoredEvent>>,
    session_id: String,
}

impl LiveFeed {
    pub fn new(session_id: &str) -> (Self, mpsc::Receiver<StoredEvent>) {
        let (sender, receiver) = mpsc::channel(LIVE_CAPACITY);
        let feed = Self {
            sender: Some(sender),
            session_id: session_id.to_owned(),
        };
        (feed, receiver)
    }

    /// A feed nobody reads.
    pub fn closed() -> Self {
        Self {
            sender: None,
            session_id: String::new(),
        }
    }

    pub fn send(&mut self, event: StoredEvent) {
        let Some(sender) = &self.sender else { return };
        match sender.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::debug!(session_id = %self.session_id, "client fell behind; it reads the log from here");
                self.sender = None;
            }
            Err(TrySendError::Closed(_)) => self.sender = None,
        }
    }
}

/// Whose run a writer stores: its `token_usage` event is recorded in the usage ledger under
/// this user, run and model, in the same write.
#[derive(Debug, Clone)]
pub struct RunAccount {
    pub user_id: String,
    pub run_id: String,
    pub model: String,
}

impl RunAccount {
    /// The ledger record of a stored `token_usage` event; none for any other event, or for a run
    /// that made no model call.
    fn usage_of(&self, stored: &StoredEvent) -> Option<UsageRecord> {
        let event = &stored.event;
        if event.kind != EventType::TokenUsage {
            return None;
        }
        let usage = event.metadata.as_ref()?.get("token_usage")?;
        let calls = usage.get("per_step_info")?.as_array()?.len();
        if calls == 0 {
            return None;
        }
        let total = usage.get("total_info");
        let count = |name: &str| {
            total
                .and_then(|total| total.get(name))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        Some(UsageRecord {
            user_id: self.user_id.clone(),
            session_id: event.session_id.clone(),
            seq: stored.seq,
            run_id: self.run_id.clone(),
            day: Day::of(event.timestamp).to_string(),
            model: self.model.clone(),
            calls: u32::try_from(calls).unwrap_or(u32::MAX),
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            total_tokens: count("total_tokens"),
            cost: total
                .and_then(|total| total.get("cost"))
                .and_then(serde_json::Value::as_f64),
            recorded_at: event.timestamp,
        })
    }
}

/// What a writer leaves when its run is over.
pub struct WriterEnd {
    /// The run's last event (`stream_end`, or its hand-off), stored and not yet sent.
    pub end: Option<StoredEvent>,
    pub feed: LiveFeed,
    /// Everything the run stored, `end` included, in order; none when a write failed (what
    /// reached the log is then unknown).
    pub written: Option<Vec<StoredEvent>>,
}

/// Starts the writer. `after_seq` is the last sequence number already in the session's log. When
/// every `Emitter` is dropped the writer stores `stream_end` and returns it unsent, with the
/// feed, so the caller can finish its bookkeeping (release the session) before the client learns
/// the run is over. A run that hands off ends with its hand-off event instead: stored, returned
/// unsent in the same way, and no `stream_end` (the continuation stores it).
pub fn spawn_writer(
    sink: EventSink,
    session_id: String,
    after_seq: u64,
    mut client: LiveFeed,
    cancel: CancellationToken,
    trace_id: Option<String>,
    account: RunAccount,
) -> (Emitter, JoinHandle<WriterEnd>) {
    let (events, mut incoming) = mpsc::channel::<Event>(EMIT_CAPACITY);
    let aborted = Arc::new(AtomicBool::new(false));
    let emitter = Emitter::new(events, aborted.clone(), cancel);
    let writer = tokio::spawn(Box::pin(async move {
        let end_event = |sent: u64| {
            let mut end = Event::stream_end(&session_id, sent);
            if let Some(trace_id) = &trace_id {
                end.metadata = Some(serde_json::json!({"trace_id": trace_id}));
            }
            end
        };
        let mut seq = after_seq;
        let mut sent: u64 = 0;
        let mut batch = Vec::new();
        let window = sink.pack_window();
        let mut open_message: Option<String> = None;
        let mut hand_off: Option<StoredEvent> = None;
        let mut run_log = Vec::new();
        while incoming.recv_many(&mut batch, MAX_BATCH).await > 0 {
            if !window.is_zero() {
                let until = tokio::time::Instant::now() + window;
                while batch.len() < MAX_BATCH && continues_message(&batch, open_message.as_deref()) {
                    let room = MAX_BATCH - batch.len();
                    match tokio::time::timeout_at(until, incoming.recv_many(&mut batch, room)).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                open_message = batch
                    .last()
                    .filter(|event| is_text_delta(event))
                    .and_then(|event| event.message_id.clone());
            }
            let room = MAX_BATCH - batch.len();
            let ends = closes_run(&batch)
                && matches!(
                    tokio::time::timeout(TAIL_WAIT, incoming.recv_many(&mut batch, room)).await,
                    Ok(0)
                );
            let mut stored: Vec<StoredEvent> = batch
                .drain(..)
                .map(|mut event| {
                    seq += 1;
                    if event.is_hand_off() {
                        event.seal_hand_off(seq);
                    }
                    StoredEvent::new(seq, event)
                })
                .collect();
            if ends {
                seq += 1;
                stored.push(StoredEvent::new(seq, end_event(sent + stored.len() as u64)));
            }
            // For the exported trace only: the log's layer formats a span's fields when it is
            // made, whether or not anything is logged inside it (2 % of a short run's CPU).
            let span = if crate::telemetry::traces_on() {
                tracing::info_span!("store.append", events = stored.len())
            } else {
                tracing::Span::none()
            };
            let usage = stored.iter().find_map(|event| account.usage_of(event));
            let written = match &usage {
                Some(usage) => sink.append_with_usage(&session_id, stored, usage).instrument(span).await,
                None => sink.append(&session_id, stored).instrument(span).await,
            };
            let mut stored = match written {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::error!(%session_id, error = %crate::telemetry::chain(&error), "event log write failed; ending the run");
                    aborted.store(true, Ordering::Relaxed);
                    incoming.close();
                    fail_stream(&mut client, &session_id, seq - u64::from(ends), sent);
                    return WriterEnd { end: None, feed: client, written: None };
                }
            };
            run_log.extend(stored.iter().cloned());
            let end = if ends { stored.pop() } else { None };
            sent += stored.len() as u64;
            for event in stored {
                if event.event.is_hand_off() {
                    hand_off = Some(event);
                } else {
                    client.send(event);
                }
            }
            if end.is_some() {
                return WriterEnd { end, feed: client, written: Some(run_log) };
            }
        }
        if hand_off.is_some() {
            return WriterEnd { end: hand_off, feed: client, written: Some(run_log) };
        }
        let end = StoredEvent::new(seq + 1, end_event(sent));
        match sink.append(&session_id, vec![end.clone()]).await {
            Ok(mut stored) => {
                let end = stored.pop();
                run_log.extend(end.clone());
                WriterEnd { end, feed: client, written: Some(run_log) }
            }
            Err(error) => {
                tracing::error!(%session_id, error = %crate::telemetry::chain(&error), "could not store stream_end");
                WriterEnd { end: Some(end), feed: client, written: None }
            }
        }
    }.in_current_span()));
    (emitter, writer)
}

/// The batch ends with the run's usage, which the end of the run follows (no hand-off among
/// them: a run that hands off ends with its hand-off event instead of `stream_end`), and there is
/// room to wait for more.
fn closes_run(batch: &[Event]) -> bool {
    batch.len() < MAX_BATCH
        && batch
            .last()
            .is_some_and(|event| event.kind == EventType::TokenUsage)
        && !batch.iter().any(Event::is_hand_off)
}

/// A piece of a message's text, as the model streams it.
fn is_text_delta(event: &Event) -> bool {
    matches!(event.content, Some(serde_json::Value::String(_)))
        && event.tool_calls.is_none()
        && event.message_id.is_some()
        && !matches!(
            event.kind,
            EventType::Error
                | EventType::TokenUsage
                | EventType::StreamEnd
                | EventType::ToolCallResult
        )
}

/// True while `batch` holds only further deltas of the message whose text was last written: such
/// deltas may wait for the pack window. The first delta of a message, and anything else, goes
/// out at once.
fn continues_message(batch: &[Event], open_message: Option<&str>) -> bool {
    open_message.is_some_and(|open| {
        batch
            .iter()
            .all(|event| is_text_delta(event) && event.message_id.as_deref() == Some(open))
    })
}

/// The log is unwritable: tell the client, unstored, and close with the mandatory tail.
fn fail_stream(client: &mut LiveFeed, session_id: &str, seq: u64, sent: u64) {
    let error = Event {
        content: Some(serde_json::json!(
            "The conversation could not be saved; the run was stopped."
        )),
        message_id: Some(new_id()),
        ..Event::new(session_id, Role::Assistant, EventType::Error)
    };
    let tail = [error, Event::empty_token_usage(session_id)];
    let count = sent + tail.len() as u64;
    for (offset, event) in tail.into_iter().enumerate() {
        client.send(StoredEvent::new(seq + 1 + offset as u64, event));
    }
    client.send(StoredEvent::new(
        seq + 3,
        Event::stream_end(session_id, count),
    ));
}
