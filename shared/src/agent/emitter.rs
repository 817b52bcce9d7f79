//! What a run holds to emit its events, and to learn that it should stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::wire::Event;

#[derive(Clone)]
pub struct Emitter {
    events: mpsc::Sender<Event>,
    aborted: Arc<AtomicBool>,
    cancel: CancellationToken,
}

impl Emitter {
    /// `aborted` is set by whoever consumes `events` when it can take no more (the log cannot be
    /// written); `cancel` fires when the run is interrupted.
    pub fn new(
        events: mpsc::Sender<Event>,
        aborted: Arc<AtomicBool>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            events,
            aborted,
            cancel,
        }
    }

    /// An emitter into `events` that stops when this one does: a sub-agent's, whose events
    /// another task routes.
    pub fn child(&self, events: mpsc::Sender<Event>) -> Self {
        Self {
            events,
            aborted: self.aborted.clone(),
            cancel: self.cancel.clone(),
        }
    }

    /// Waits while the writer is behind: a run never gets ahead of its log by more than the
    /// channel holds.
    pub async fn emit(&self, event: Event) {
        let _ = self.events.send(event).await;
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
