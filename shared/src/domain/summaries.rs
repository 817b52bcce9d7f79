//! Session summaries: one model call over the previous summary and the turns since, stored only
//! if no other writer summarized the session meanwhile (a conditional write on the log position
//! the summary covers), so concurrent or repeated jobs leave one summary per session state.

use std::sync::Arc;

use serde_json::json;

use crate::context::{content_as_text, estimate_tokens, merge_events};
use crate::domain::DomainError;
use crate::llm::{ChatModel, ChatRequest, LlmSettings, complete_text};
use crate::store::{EventLog, RunControl, SessionRecord, SummaryRecord, SummaryStore};
use crate::util::now_secs;
use crate::wire::Role;

/// The system message of a summary call (`sage-mock-llm` recognises its first words).
pub const SUMMARY_JOB_INSTRUCTION: &str = "Summarize this conversation for later reference: \
    the user's goals, the facts and decisions established, what was done and what is still open. \
    Build on the previous summary when there is one. Reply with the summary only, in the \
    conversation's language.";
const MESSAGE_CHARS: usize = 2000;

/// What summarizing one session came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SummaryOutcome {
    /// A new summary covering the log up to `covers_seq`.
    Summarized { covers_seq: u64 },
    /// A run holds the session; it is taken next time.
    Running,
    /// Nothing new since the last summary.
    UpToDate,
    /// Another job wrote a summary first; theirs stands.
    TakenByAnother,
}

/// The summary service.
#[derive(Clone)]
pub struct Summaries {
    events: Arc<dyn EventLog>,
    control: Arc<dyn RunControl>,
    summaries: Arc<dyn SummaryStore>,
    llm: Arc<dyn ChatModel>,
}

impl Summaries {
    pub fn new(
        events: Arc<dyn EventLog>,
        control: Arc<dyn RunControl>,
        summaries: Arc<dyn SummaryStore>,
        llm: Arc<dyn ChatModel>,
    ) -> Self {
        Self {
            events,
            control,
            summaries,
            llm,
        }
    }

    pub async fn summary_of(&self, session_id: &str) -> Result<Option<String>, DomainError> {
        Ok(self
            .summaries
            .session_summary(session_id)
            .await?
            .map(|record| record.summary))
    }

    /// Summarizes what the session's log holds past its summary.
    pub async fn summarize(
        &self,
        session: &SessionRecord,
        settings: &LlmSettings,
    ) -> Result<SummaryOutcome, DomainError> {
        let session_id = session.session_id.as_str();
        if self
            .control
            .run_lock(session_id)
            .await?
            .is_some_and(|lock| lock.is_live())
        {
            return Ok(SummaryOutcome::Running);
        }
        let previous = self.summaries.session_summary(session_id).await?;
        let covered = previous.as_ref().map_or(0, |record| record.covers_seq);
        let new_events = self.events.events_after(session_id, covered).await?;
        let Some(last) = new_events.last() else {
            return Ok(SummaryOutcome::UpToDate);
        };
        let covers_seq = last.seq;
        let transcript = transcript(
            previous.as_ref().map(|record| record.summary.as_str()),
            &new_events
                .iter()
                .map(|stored| &stored.event)
                .collect::<Vec<_>>(),
            u64::from(settings.max_model_len) / 2,
        );
        if transcript.is_empty() {
            return Ok(SummaryOutcome::UpToDate);
        }
        let request = ChatRequest {
            settings: settings.clone(),
            messages: vec![
                json!({"role": "system", "content": SUMMARY_JOB_INSTRUCTION}),
                json!({"role": "user", "content": transcript}),
            ],
            tools: Vec::new(),
            forced_tool: None,
        };
        let summary = complete_text(self.llm.as_ref(), &request)
            .await
            .map_err(|error| DomainError::Upstream(format!("the summary call failed: {error}")))?;
        let summary = summary.trim();
        if summary.is_empty() {
            return Err(DomainError::Upstream(
                "the model answered the summary call with nothing".into(),
            ));
        }
        let record = SummaryRecord {
            session_id: session_id.to_owned(),
            summary: summary.to_owned(),
            covers_seq,
            created_at: now_secs(),
        };
        if self.summaries.put_session_summary(&record, covered).await? {
            Ok(SummaryOutcome::Summarized { covers_seq })
        } else {
            Ok(SummaryOutcome::TakenByAnother)
        }
    }
}

/// The previous summary, then the new messages' text, newest kept when they do not all fit in
/// `budget` tokens.
fn transcript(previous: Option<&str>, events: &[&crate::wire::Event], budget: u64) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut used = 0;
    for message in merge_events(events.iter().copied()).iter().rev() {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            _ => continue,
        };
        let text: String = content_as_text(&message.content)
            .trim()
            .chars()
            .take(MESSAGE_CHARS)
            .collect();
        if text.is_empty() {
            continue;
        }
        let line = format!("{role}: {text}");
        used += estimate_tokens(&line);
        if used > budget && !lines.is_empty() {
            break;
        }
        lines.push(line);
    }
    if lines.is_empty() {
        return String::new();
    }
    lines.reverse();
    let mut transcript = String::new();
    if let Some(previous) = previous {
        transcript.push_str(&format!("Previous summary: {previous}\n\n"));
    }
    transcript.push_str(&lines.join("\n"));
    transcript
}
