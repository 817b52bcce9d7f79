//! Runs that wait outside any process: a run paused for an approval, and a running run's
//! checkpoint for its hand-off. What continues one (a [`RunRelay`] given its [`HandOffTicket`]),
//! and the sweep that finds those nobody will continue otherwise: approvals whose wait expired
//! and runs whose process died past a checkpoint while no client follows them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::store::{PendingApprovalRecord, RunControl, StoreError};
use crate::util::now_secs;

/// What a fresh invocation needs to continue a paused run: the session, and the paused record's
/// id (a checkpoint's token, which only the run's own processes see, or an expired approval's id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandOffTicket {
    pub session_id: String,
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the run's continuation could not be started")]
pub struct RelayError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Starts a paused run's continuation in a fresh invocation (or on a task of this process).
#[async_trait]
pub trait RunRelay: Send + Sync {
    async fn relay(&self, ticket: &HandOffTicket) -> Result<(), RelayError>;
}

/// The one part of a paused record's state the sweep reads: a checkpoint names the run it
/// continues; an approval does not.
#[derive(Deserialize)]
struct PausedKind {
    #[serde(default)]
    hand_off_of: Option<serde::de::IgnoredAny>,
}

fn is_checkpoint(record: &PendingApprovalRecord) -> bool {
    serde_json::from_str::<PausedKind>(&record.state).is_ok_and(|kind| kind.hand_off_of.is_some())
}

/// What one sweep did, by session.
#[derive(Debug, Default, PartialEq)]
pub struct SweepOutcome {
    /// Runs whose process died past a checkpoint: their continuation was asked for.
    pub continued: Vec<String>,
    /// Approvals whose wait ran out: their run was asked to end with its `error` event.
    pub expired: Vec<String>,
    /// Due checkpoints of runs that still hold a live lease: left alone.
    pub running: Vec<String>,
    /// Continuations that could not be asked for (tried again on the next sweep).
    pub failed: Vec<String>,
    /// False when the limit or the time stopped the sweep with due records left.
    pub complete: bool,
}

/// Asks `relay` to continue every paused run that is due by now, oldest first, up to `limit`
/// runs or until `deadline`.
pub async fn sweep_paused_runs(
    control: &dyn RunControl,
    relay: &dyn RunRelay,
    limit: usize,
    deadline: Instant,
) -> Result<SweepOutcome, StoreError> {
    let now = now_secs();
    let due = control.due_paused_runs(now, limit + 1).await?;
    let mut outcome = SweepOutcome {
        complete: due.len() <= limit,
        ..SweepOutcome::default()
    };
    for record in due.into_iter().take(limit) {
        if Instant::now() >= deadline {
            outcome.complete = false;
            break;
        }
        let session_id = record.session_id.clone();
        let checkpoint = is_checkpoint(&record);
        if !checkpoint && record.expires_at > now {
            continue;
        }
        if control
            .run_lock(&session_id)
            .await?
            .is_some_and(|lock| lock.is_live())
        {
            outcome.running.push(session_id);
            continue;
        }
        let ticket = HandOffTicket {
            session_id: session_id.clone(),
            token: record.approval_id,
        };
        match relay.relay(&ticket).await {
            Ok(()) if checkpoint => {
                tracing::info!(%session_id, "the run's process is gone; asked for its continuation");
                outcome.continued.push(session_id);
            }
            Ok(()) => {
                tracing::info!(%session_id, "the approval's wait ran out; asked to end its run");
                outcome.expired.push(session_id);
            }
            Err(error) => {
                tracing::warn!(%session_id, error = %crate::telemetry::chain(&error), "could not ask for the paused run's continuation");
                outcome.failed.push(session_id);
            }
        }
    }
    Ok(outcome)
}
