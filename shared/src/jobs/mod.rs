//! Scheduled work with no HTTP: the summary job, the knowledge-base indexing job, and the sweep
//! of paused runs nobody continues (the `runs` job). A job is asked for by a JSON payload
//! (from EventBridge Scheduler, `sam remote invoke`, `cargo lambda invoke` or `sage-local jobs`),
//! works in bounded batches until its time is nearly up, and reports where it stopped.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::domain::DomainError;
use crate::domain::knowledge::{IndexFailure, Knowledge};
use crate::domain::paused_runs::{RunRelay, sweep_paused_runs};
use crate::domain::summaries::{Summaries, SummaryOutcome};
use crate::llm::LlmSettings;
use crate::store::{RunControl, SessionStore, SummaryStore};
use crate::util::{InputError, SessionId};

pub const JOBS: &[&str] = &["summarize", "index", "runs"];
const DEFAULT_LIMIT: usize = 25;
/// Paused runs one sweep looks at by default.
const DEFAULT_RUNS_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;
const PAGE: usize = 25;

/// What a job invocation asks for.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub job: String,
    /// Only these sessions (each must exist; with `user_id`, each must be that user's).
    #[serde(default)]
    pub session_ids: Vec<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    /// At most this many sessions are summarized in one invocation (default 25, at most 500); the
    /// `runs` job looks at this many paused runs (default 100).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Where an earlier invocation stopped (its report's `next_cursor`).
    #[serde(default)]
    pub cursor: Option<String>,
}

impl JobRequest {
    /// Reads a payload: the request itself, or an EventBridge event whose `detail` is one (an
    /// empty `detail` asks for the summary job).
    pub fn parse(payload: Value) -> Result<Self, InputError> {
        let payload = match payload {
            Value::Object(mut event) if event.contains_key("detail-type") => {
                match event.remove("detail") {
                    Some(Value::Object(detail)) if !detail.is_empty() => Value::Object(detail),
                    _ => serde_json::json!({"job": "summarize"}),
                }
            }
            other => other,
        };
        let request: Self = serde_json::from_value(payload)
            .map_err(|error| InputError::Invalid(format!("job payload: {error}")))?;
        if !JOBS.contains(&request.job.as_str()) {
            return Err(InputError::Invalid(format!(
                "job: unknown job `{}`; the jobs are {}",
                request.job,
                JOBS.join(", ")
            )));
        }
        if let Some(limit) = request.limit
            && !(1..=MAX_LIMIT).contains(&limit)
        {
            return Err(InputError::Invalid(format!(
                "limit: 1 to {MAX_LIMIT} sessions"
            )));
        }
        for id in &request.session_ids {
            SessionId::parse(id)?;
        }
        if request.job != "summarize" {
            for (field, given) in [
                ("session_ids", !request.session_ids.is_empty()),
                ("user_id", request.user_id.is_some()),
                ("cursor", request.cursor.is_some()),
            ] {
                if given {
                    return Err(InputError::Invalid(format!(
                        "{field}: only for the summarize job"
                    )));
                }
            }
        }
        Ok(request)
    }
}

/// What one invocation did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobReport {
    pub job: String,
    pub summarized: Vec<String>,
    /// Sessions with a run in progress: taken next time.
    pub running: Vec<String>,
    /// Sessions another job summarized first.
    pub taken_by_another: Vec<String>,
    pub failed: Vec<FailedSession>,
    /// Documents the indexing job indexed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub indexed: Vec<String>,
    /// Documents it could not index (tried again later unless `retrying` is false).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub index_failures: Vec<IndexFailure>,
    /// Sessions whose run died past a checkpoint: the `runs` job asked for its continuation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub continued: Vec<String>,
    /// Sessions whose approval's wait ran out: the `runs` job asked to end the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expired: Vec<String>,
    /// False when the invocation stopped before the end (its limit or its time).
    pub complete: bool,
    /// Where it stopped, when it stopped early after some session: pass it back as `cursor` to
    /// go on from there.
    pub next_cursor: Option<String>,
}

impl JobReport {
    /// Nothing was summarized, indexed, continued, ended or failed.
    pub fn did_nothing(&self) -> bool {
        self.summarized.is_empty()
            && self.taken_by_another.is_empty()
            && self.failed.is_empty()
            && self.indexed.is_empty()
            && self.index_failures.is_empty()
            && self.continued.is_empty()
            && self.expired.is_empty()
    }
}

/// The indexing job: documents waiting in any user's knowledge bases, oldest base first.
pub async fn run_index_job(
    knowledge: &Knowledge,
    request: &JobRequest,
    time_left: Duration,
) -> Result<JobReport, DomainError> {
    let deadline = Instant::now() + time_left;
    let index = knowledge
        .index_pending(request.limit.unwrap_or(DEFAULT_LIMIT), deadline)
        .await?;
    Ok(JobReport {
        job: request.job.clone(),
        indexed: index.indexed,
        index_failures: index.failed,
        complete: index.complete,
        ..JobReport::default()
    })
}

/// The `runs` job: continues the runs whose process died past a checkpoint and ends those whose
/// approval's wait ran out, when no client's resume did it first.
pub async fn run_runs_job(
    control: &dyn RunControl,
    relay: &dyn RunRelay,
    request: &JobRequest,
    time_left: Duration,
) -> Result<JobReport, DomainError> {
    let limit = request.limit.unwrap_or(DEFAULT_RUNS_LIMIT);
    let swept = sweep_paused_runs(control, relay, limit, Instant::now() + time_left).await?;
    Ok(JobReport {
        job: request.job.clone(),
        continued: swept.continued,
        expired: swept.expired,
        running: swept.running,
        failed: swept
            .failed
            .into_iter()
            .map(|session_id| FailedSession {
                session_id,
                error: "its continuation could not be asked for; tried again next time".into(),
            })
            .collect(),
        complete: swept.complete,
        ..JobReport::default()
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedSession {
    pub session_id: String,
    pub error: String,
}

/// The summary job over the stores it reads.
#[derive(Clone)]
pub struct SummaryJob {
    pub sessions: std::sync::Arc<dyn SessionStore>,
    pub due: std::sync::Arc<dyn SummaryStore>,
    pub summaries: Summaries,
}

impl SummaryJob {
    /// Runs `request` until done, its limit, or `time_left` is spent: a session is begun only
    /// with at least `per_session` left, and one still going at the deadline counts as failed.
    pub async fn run(
        &self,
        request: &JobRequest,
        settings: &LlmSettings,
        time_left: Duration,
        per_session: Duration,
    ) -> Result<JobReport, DomainError> {
        let deadline = Instant::now() + time_left;
        let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
        let mut report = JobReport {
            job: request.job.clone(),
            complete: true,
            ..JobReport::default()
        };
        if !request.session_ids.is_empty() {
            let mut named = Vec::new();
            for id in &request.session_ids {
                let session = self
                    .sessions
                    .get_session(id)
                    .await?
                    .ok_or_else(|| DomainError::NotFound(format!("no session {id}")))?;
                if request
                    .user_id
                    .as_deref()
                    .is_some_and(|user| user != session.user_id)
                {
                    return Err(DomainError::Forbidden(format!(
                        "session {id} belongs to another user"
                    )));
                }
                named.push(session);
            }
            for (index, session) in named.iter().enumerate() {
                if index >= limit || Instant::now() + per_session > deadline {
                    report.complete = false;
                    report.next_cursor = index
                        .checked_sub(1)
                        .map(|previous| named[previous].session_id.clone());
                    break;
                }
                self.one(session, settings, deadline, &mut report).await;
            }
            return Ok(report);
        }
        let mut cursor = request.cursor.clone();
        let mut taken = 0;
        'pages: loop {
            let page = self
                .due
                .sessions_due_for_summary(cursor.as_deref(), PAGE)
                .await?;
            if page.is_empty() {
                break;
            }
            for (session, _) in &page {
                if request
                    .user_id
                    .as_deref()
                    .is_some_and(|user| user != session.user_id)
                {
                    cursor = Some(session.session_id.clone());
                    continue;
                }
                if taken >= limit || Instant::now() + per_session > deadline {
                    report.complete = false;
                    report.next_cursor = cursor;
                    break 'pages;
                }
                taken += 1;
                self.one(session, settings, deadline, &mut report).await;
                cursor = Some(session.session_id.clone());
            }
        }
        Ok(report)
    }

    async fn one(
        &self,
        session: &crate::store::SessionRecord,
        settings: &LlmSettings,
        deadline: Instant,
        report: &mut JobReport,
    ) {
        let id = session.session_id.clone();
        let outcome =
            tokio::time::timeout_at(deadline, self.summaries.summarize(session, settings))
                .await
                .unwrap_or_else(|_| {
                    Err(DomainError::UpstreamTimeout(
                        "the job's time ran out during this session".into(),
                    ))
                });
        match outcome {
            Ok(SummaryOutcome::Summarized { .. }) => report.summarized.push(id),
            Ok(SummaryOutcome::Running) => report.running.push(id),
            Ok(SummaryOutcome::TakenByAnother) => report.taken_by_another.push(id),
            Ok(SummaryOutcome::UpToDate) => {}
            Err(error) => {
                tracing::warn!(session_id = %id, error = %crate::telemetry::chain(&error), "summary failed");
                let error = match error {
                    DomainError::Store(_) => "storage failure".to_owned(),
                    other => other.to_string(),
                };
                report.failed.push(FailedSession {
                    session_id: id,
                    error,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_are_read_directly_or_from_an_eventbridge_event() {
        let direct = JobRequest::parse(json!({"job": "summarize", "limit": 3})).unwrap();
        assert_eq!(direct.limit, Some(3));
        let scheduled = JobRequest::parse(json!({
            "version": "0", "detail-type": "Scheduled Event", "source": "aws.events",
            "detail": {}
        }))
        .unwrap();
        assert_eq!(scheduled.job, "summarize");
    }

    #[test]
    fn bad_payloads_name_what_is_wrong() {
        let unknown = JobRequest::parse(json!({"job": "reindex"})).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown job `reindex`"),
            "{unknown}"
        );
        let misnamed = JobRequest::parse(json!({"job": "summarize", "sessions": []})).unwrap_err();
        assert!(misnamed.to_string().contains("`sessions`"), "{misnamed}");
        assert!(JobRequest::parse(json!({"job": "summarize", "limit": 0})).is_err());
        assert!(JobRequest::parse(json!({"job": "summarize", "session_ids": ["../x"]})).is_err());
        let scoped = JobRequest::parse(json!({"job": "index", "user_id": "u"})).unwrap_err();
        assert!(scoped.to_string().contains("user_id"), "{scoped}");
        let named = JobRequest::parse(json!({"job": "runs", "session_ids": ["s"]})).unwrap_err();
        assert!(named.to_string().contains("session_ids"), "{named}");
        assert_eq!(
            JobRequest::parse(json!({"job": "index", "limit": 5}))
                .unwrap()
                .limit,
            Some(5)
        );
    }
}
