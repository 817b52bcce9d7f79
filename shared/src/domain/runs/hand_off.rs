//! Runs that outlive an invocation. A simple- or fibre-mode run saves a checkpoint after each
//! complete tool turn, a multi-mode run after each round (the session's paused-run record, marked as a
//! hand-off). Past its invocation's deadline it stops at such a point, ends its client's stream
//! with a hand-off event and asks the [`RunRelay`](crate::domain::paused_runs::RunRelay) for a
//! fresh invocation, which takes the run's lock over by its id and goes on. A run whose process
//! died is continued the same way from its last checkpoint, once its lease has expired and
//! someone follows it or the `runs` job sweeps it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::approvals::PausedRun;
use crate::agent::{HeldTurn, RunCheckpoints};
use crate::domain::paused_runs::HandOffTicket;
use crate::store::{PendingApprovalRecord, RunControl};
use crate::util::now_secs;
use crate::wire::StreamRequest;

/// How long an unfollowed checkpoint is kept (DynamoDB's TTL removes it after).
const CHECKPOINT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Left of a Lambda invocation when a run stops at its next checkpoint: a model turn and its
/// tool calls usually fit. A turn that does not is cut with the invocation and continued from
/// the checkpoint before it.
pub const INVOCATION_MARGIN: Duration = Duration::from_secs(90);

/// The invocation a run starts in: when it ends, if it ends (a Lambda invocation's deadline).
#[derive(Debug, Clone, Copy, Default)]
pub struct Invocation {
    pub ends_at: Option<SystemTime>,
}

impl Invocation {
    /// When a run started now stops at its next checkpoint: `--run_deadline_seconds` from now,
    /// or the invocation's end less [`INVOCATION_MARGIN`], whichever comes first.
    pub(super) fn deadline(&self, run_deadline: Option<Duration>) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        let by_setting = run_deadline.map(|limit| now + limit);
        let by_invocation = self.ends_at.map(|ends_at| {
            let left = ends_at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(INVOCATION_MARGIN);
            now + left
        });
        match (by_setting, by_invocation) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The [`RunCheckpoints`] of one run: its checkpoint, under a token of its own.
pub(super) struct RunHandOffs {
    pub control: Arc<dyn RunControl>,
    pub session_id: String,
    pub user_id: String,
    pub run_id: String,
    pub token: String,
    /// The run's request, resolved, without its new messages (they are in the log).
    pub request: StreamRequest,
    /// A checkpoint was saved: the run removes it when it ends.
    pub saved: AtomicBool,
    /// The run lock's lease: a checkpoint not saved again within it may be a dead run's, and
    /// the sweep looks at it.
    pub lease: Duration,
}

impl RunHandOffs {
    pub fn ticket(&self) -> HandOffTicket {
        HandOffTicket {
            session_id: self.session_id.clone(),
            token: self.token.clone(),
        }
    }

    /// Removes the run's checkpoint, if it saved one and it is still there.
    pub async fn remove(&self) {
        if !self.saved.load(Ordering::Relaxed) {
            return;
        }
        if let Err(error) = self
            .control
            .take_pending_approval(&self.session_id, &self.token)
            .await
        {
            tracing::warn!(session_id = %self.session_id, error = %crate::telemetry::chain(&error), "could not remove the run's checkpoint");
        }
    }
}

#[async_trait]
impl RunCheckpoints for RunHandOffs {
    async fn save(&self, at: &HeldTurn) -> Result<(), String> {
        let state = serde_json::to_string(&PausedRun {
            request: self.request.clone(),
            turn: at.clone(),
            hand_off_of: Some(self.run_id.clone()),
        })
        .map_err(|error| error.to_string())?;
        let created_at = now_secs();
        let record = PendingApprovalRecord {
            session_id: self.session_id.clone(),
            approval_id: self.token.clone(),
            user_id: self.user_id.clone(),
            created_at,
            expires_at: created_at + CHECKPOINT_LIFETIME.as_secs_f64(),
            due_at: created_at + self.lease.as_secs_f64(),
            state,
        };
        self.control
            .put_pending_approval(&record)
            .await
            .map_err(|error| crate::telemetry::chain(&error).to_string())?;
        self.saved.store(true, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_the_earlier_of_the_setting_and_the_invocations_end() {
        let now = tokio::time::Instant::now();
        assert!(Invocation::default().deadline(None).is_none());
        let by_setting = Invocation::default()
            .deadline(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(by_setting >= now + Duration::from_secs(5));
        let ending = Invocation {
            ends_at: Some(SystemTime::now() + INVOCATION_MARGIN + Duration::from_secs(2)),
        };
        let by_invocation = ending.deadline(Some(Duration::from_secs(60))).unwrap();
        assert!(by_invocation <= tokio::time::Instant::now() + Duration::from_secs(2));
        let past = Invocation {
            ends_at: Some(SystemTime::now()),
        };
        assert!(past.deadline(None).unwrap() <= tokio::time::Instant::now());
    }
}
