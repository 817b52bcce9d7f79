//! Fibre mode's sub-sessions: each delegated task is a session of the run's user, with its own
//! event log (written before anything is shown, like any run's), resumable and listed like any
//! conversation.

use async_trait::async_trait;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::writer::{LiveFeed, RunAccount, spawn_writer};
use super::{RunStores, input_event, tally_of, title_of};
use crate::agent::{Emitter, RunOutcome, SubSessionError, SubSessions};
use crate::store::{SessionRecord, StoreError};
use crate::util::SessionId;
use crate::wire::{InputMessage, StoredEvent};

pub(super) struct RunSubSessions {
    pub(super) stores: RunStores,
    /// The main run's: a sub-agent's usage is the same user's, in the same run.
    pub(super) account: RunAccount,
    /// The conversation the sub-sessions work for.
    pub(super) parent: String,
}

#[async_trait]
impl SubSessions for RunSubSessions {
    async fn open(
        &self,
        session_id: &str,
        agent_name: &str,
        task: &str,
    ) -> Result<(Emitter, BoxFuture<'static, ()>), SubSessionError> {
        let refused = || SubSessionError::Refused(session_id.chars().take(128).collect());
        SessionId::parse(session_id).map_err(|_| refused())?;
        let stores = &self.stores;
        let stored = |error: crate::store::StoreError| {
            tracing::warn!(%session_id, error = %crate::telemetry::chain(&error), "sub-session store failure");
            SubSessionError::Store
        };
        if let Some(existing) = stores
            .sessions
            .get_session(session_id)
            .await
            .map_err(stored)?
            && existing.user_id != self.account.user_id
        {
            return Err(refused());
        }
        let message = InputMessage {
            message_id: None,
            role: "user".into(),
            content: serde_json::Value::String(task.to_owned()),
        };
        let mut record = SessionRecord::new(
            session_id,
            &self.account.user_id,
            &title_of(std::slice::from_ref(&message)),
        );
        record.agent_name = Some(agent_name.to_owned());
        record.parent_session_id = Some(self.parent.clone());
        let record = stores
            .sessions
            .create_session(&record)
            .await
            .map_err(stored)?;
        if record.user_id != self.account.user_id {
            return Err(refused());
        }
        let last = stores
            .events
            .events_after(session_id, 0)
            .await
            .map_err(stored)?
            .last()
            .map_or(0, |event| event.seq);
        let input = StoredEvent::new(last + 1, input_event(session_id, &message));
        stores
            .events
            .append_events(session_id, &[input])
            .await
            .map_err(stored)?;
        let (emitter, writer) = spawn_writer(
            stores.sink.clone(),
            session_id.to_owned(),
            last + 1,
            LiveFeed::closed(),
            CancellationToken::new(),
            None,
            self.account.clone(),
        );
        let sessions = stores.sessions.clone();
        let events = stores.events.clone();
        let session_id = session_id.to_owned();
        let closed = async move {
            if let Err(error) = writer.await {
                tracing::warn!(%session_id, %error, "a sub-session's writer failed");
            }
            let recorded = async {
                let tally =
                    tally_of(events.as_ref(), &session_id, RunOutcome::Completed, None).await?;
                if let Some(mut session) = sessions.get_session(&session_id).await? {
                    tally.apply_to(&mut session);
                    sessions.update_session(&session).await?;
                }
                Ok::<_, StoreError>(())
            };
            if let Err(error) = recorded.await {
                tracing::warn!(%session_id, error = %crate::telemetry::chain(&error), "could not update the sub-session");
            }
        }
        .boxed();
        Ok((emitter, closed))
    }
}
