//! Reading a run from the event log instead of from the process that runs it: resume after a
//! disconnect, attach a retried request, follow a run on another instance, or catch up a client
//! that fell behind the live feed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream;
use tokio::sync::mpsc;

use crate::store::{EventLog, RunControl};
use crate::wire::{Event, EventStream, EventType, StoredEvent};

const POLL: Duration = Duration::from_millis(100);
/// How long a follower that asked for a dead run's continuation waits for it to take the lock.
const TAKEOVER_GRACE: Duration = Duration::from_secs(15);

/// Continues a run whose process is gone, from its checkpoint.
#[async_trait]
pub trait Takeover: Send + Sync {
    /// True when the session had a checkpoint and its continuation was asked for.
    async fn take_over(&self, session_id: &str) -> bool;
}

/// The log and the run lock, which is all a follower reads; and what continues a run that
/// died past a checkpoint.
#[derive(Clone)]
pub struct LogReader {
    pub events: Arc<dyn EventLog>,
    pub control: Arc<dyn RunControl>,
    pub takeover: Option<Arc<dyn Takeover>>,
}

struct Follower {
    reader: LogReader,
    session_id: String,
    cursor: u64,
    sent: u64,
    pending: VecDeque<StoredEvent>,
    confirmed_idle: bool,
    /// Set once this follower asked for the run's continuation: until then, a run without a
    /// live lock is still waited for.
    took_over_at: Option<tokio::time::Instant>,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<StoredEvent> {
        loop {
            if self.done {
                return None;
            }
            if let Some(stored) = self.pending.pop_front() {
                self.cursor = stored.seq;
                if !stored.event.is_streamed() {
                    continue;
                }
                self.sent += 1;
                // A later run's events may follow this run's end: the replay goes on through
                // them, and ends with the last run's tail.
                self.done = stored.event.kind == EventType::StreamEnd
                    && self.pending.is_empty()
                    && !self.more_stored().await;
                return Some(stored);
            }
            if !self.fill().await {
                self.make_up_tail();
            }
        }
    }

    /// Loads what the log holds past the cursor, without waiting; true when it held something.
    async fn more_stored(&mut self) -> bool {
        match self
            .reader
            .events
            .events_after(&self.session_id, self.cursor)
            .await
        {
            Ok(batch) if !batch.is_empty() => {
                self.pending.extend(batch);
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(session_id = %self.session_id, %error, "cannot read the event log to resume");
                false
            }
        }
    }

    /// Loads what the log has past the cursor, waiting while the run is live; false when the run
    /// is over without a stored `stream_end`.
    async fn fill(&mut self) -> bool {
        let session_id = &self.session_id;
        loop {
            match self
                .reader
                .events
                .events_after(session_id, self.cursor)
                .await
            {
                Ok(batch) if !batch.is_empty() => {
                    self.pending.extend(batch);
                    self.confirmed_idle = false;
                    return true;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%session_id, %error, "cannot read the event log to resume");
                    return false;
                }
            }
            let live = match self.reader.control.run_lock(session_id).await {
                Ok(lock) => lock.is_some_and(|lock| lock.is_live()),
                Err(error) => {
                    tracing::warn!(%session_id, %error, "cannot read the run lock to resume");
                    false
                }
            };
            let taking_over = self
                .took_over_at
                .is_some_and(|at| at.elapsed() < TAKEOVER_GRACE);
            if live || taking_over {
                self.confirmed_idle = false;
                tokio::time::sleep(POLL).await;
                continue;
            }
            // The writer stores stream_end before it releases the lock: look once more.
            if self.confirmed_idle {
                if self.took_over_at.is_none()
                    && let Some(takeover) = &self.reader.takeover
                    && takeover.take_over(session_id).await
                {
                    self.took_over_at = Some(tokio::time::Instant::now());
                    self.confirmed_idle = false;
                    continue;
                }
                return false;
            }
            self.confirmed_idle = true;
        }
    }

    /// A run that died without its tail (its lease expired) gets one made up, unstored.
    fn make_up_tail(&mut self) {
        self.pending.push_back(StoredEvent::new(
            self.cursor + 1,
            Event::empty_token_usage(&self.session_id),
        ));
        self.pending.push_back(StoredEvent::new(
            self.cursor + 2,
            Event::stream_end(&self.session_id, self.sent + 1),
        ));
    }
}

/// Streams the session's events after `after` up to the end of the last run: replays what is
/// stored (through every later run's events), then follows the live run, then ends with its tail. Reads the log only as
/// fast as the client takes events.
pub fn follow(reader: LogReader, session_id: String, after: u64) -> EventStream {
    let follower = Follower {
        reader,
        session_id,
        cursor: after,
        sent: 0,
        pending: VecDeque::new(),
        confirmed_idle: false,
        took_over_at: None,
        done: false,
    };
    stream::unfold(follower, |mut follower| async move {
        follower.next().await.map(|event| (event, follower))
    })
    .boxed()
}

/// The run's live events as its writer hands them over, up to its `stream_end` or its hand-off; if the writer drops this feed because
/// the client fell behind, the rest comes from the log, each event still exactly once.
pub fn live_then_log(
    live: mpsc::Receiver<StoredEvent>,
    reader: LogReader,
    session_id: String,
    after: u64,
) -> EventStream {
    enum Source {
        Live(mpsc::Receiver<StoredEvent>),
        Log(EventStream),
    }
    struct State {
        source: Source,
        reader: LogReader,
        session_id: String,
        last_seq: u64,
        ended: bool,
    }
    let state = State {
        source: Source::Live(live),
        reader,
        session_id,
        last_seq: after,
        ended: false,
    };
    stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        loop {
            let next = match &mut state.source {
                Source::Live(receiver) => match receiver.recv().await {
                    Some(event) => Some(event),
                    None => {
                        tracing::debug!(session_id = %state.session_id, after = state.last_seq, "client fell behind the live feed; reading the log");
                        let rest =
                            follow(state.reader.clone(), state.session_id.clone(), state.last_seq);
                        state.source = Source::Log(rest);
                        continue;
                    }
                },
                Source::Log(rest) => rest.next().await,
            };
            let event = next?;
            state.last_seq = event.seq;
            // A hand-off ends this stream too: the client follows the run on with a resume.
            state.ended = event.event.kind == EventType::StreamEnd || event.event.is_hand_off();
            return Some((event, state));
        }
    })
    .boxed()
}
