//! The runs of this process: their cancel flags, watched with one store read per tick whatever
//! their number (any instance may set a flag), and their leases, kept alive while they run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::RunControl;

const CANCEL_POLL: Duration = Duration::from_millis(250);

type Runs = HashMap<String, (String, CancellationToken)>;

pub struct RunWatch {
    runs: Mutex<Runs>,
}

impl RunWatch {
    /// Must be called inside a tokio runtime; the poller stops with `shutdown` or when the watch
    /// is dropped.
    pub fn start(control: Arc<dyn RunControl>, shutdown: CancellationToken) -> Arc<Self> {
        let watch = Arc::new(Self {
            runs: Default::default(),
        });
        let weak = Arc::downgrade(&watch);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(CANCEL_POLL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let Some(watch) = weak.upgrade() else { return };
                let sessions: Vec<String> = watch.lock().keys().cloned().collect();
                if sessions.is_empty() {
                    continue;
                }
                match control.cancel_requests(&sessions).await {
                    Ok(flagged) => {
                        let runs = watch.lock();
                        for (session_id, run_id) in flagged {
                            if let Some((current, token)) = runs.get(&session_id)
                                && *current == run_id
                            {
                                tracing::info!(%session_id, "run interrupted");
                                token.cancel();
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %crate::telemetry::chain(&error), "cancel flag check failed")
                    }
                }
            }
        });
        watch
    }

    fn lock(&self) -> MutexGuard<'_, Runs> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn register(&self, session_id: &str, run_id: &str, token: CancellationToken) {
        self.lock()
            .insert(session_id.to_owned(), (run_id.to_owned(), token));
    }

    pub fn unregister(&self, session_id: &str, run_id: &str) {
        let mut runs = self.lock();
        if runs
            .get(session_id)
            .is_some_and(|(current, _)| current == run_id)
        {
            runs.remove(session_id);
        }
    }

    /// Stops every run of this process as an interrupt would: each ends with its tail.
    pub fn interrupt_all(&self) -> usize {
        let runs = self.lock();
        for (_, token) in runs.values() {
            token.cancel();
        }
        runs.len()
    }
}

/// Keeps the run's lease alive while it runs.
pub async fn keep_lease(
    control: Arc<dyn RunControl>,
    session_id: String,
    run_id: String,
    lease: Duration,
) {
    let mut ticker = tokio::time::interval(lease / 3);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match control.renew_run_lock(&session_id, &run_id, lease).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(%session_id, "run lock was taken over"),
            Err(error) => {
                tracing::warn!(%session_id, error = %crate::telemetry::chain(&error), "run lock renewal failed")
            }
        }
    }
}
