//! Runs: resolve the request, take the session's run lock, store the new messages, then drive
//! the agent in the background while the caller streams the stored events.

mod approvals;
mod follow;
mod hand_off;
mod sub_sessions;
mod watch;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use super::paused_runs::{HandOffTicket, RelayError, RunRelay};
pub use approvals::ApprovalDecision;
pub use follow::LogReader;
pub use hand_off::{INVOCATION_MARGIN, Invocation};
pub use watch::RunWatch;

use crate::agent::{
    Agent, ApprovalGate, DecidedTurn, FIBRE_MAX_LOOP_COUNT, FibreSetup, HeldTurn, RunCheckpoints,
    RunMode, RunOutcome, RunSpec, SYS_FINISH_TASK, SubAgent, finish_tool,
};
use crate::config::{BudgetLeft, LlmConfig, PriceTable, RunLimits};
use crate::context::{
    ContextSettings, content_as_text, merge_events, merge_events_with, to_model_messages,
};
use crate::domain::DomainError;
use crate::domain::agents::Agents;
use crate::domain::knowledge::{Knowledge, RunKnowledgeBase};
use crate::domain::knowledge_tools::{knowledge_prompt_block, knowledge_tools};
use crate::domain::memory::Memories;
use crate::domain::model::resolve_llm;
use crate::domain::providers::Providers;
use crate::domain::sessions::Sessions;
use crate::domain::skills::{
    RunSkill, Skills, asked_skill_block, prompt_block as skill_prompt_block, requested_skill,
    skill_tools,
};
use crate::domain::tools_admin::ToolsAdmin;
use crate::domain::usage::Usage;
use crate::llm::{ChatModel, LlmSettings};
use crate::store::{
    EventLog, EventSink, IdempotencyRecord, McpServerRecord, RunControl, RunStatus, RunTally,
    SEARCH_TEXT_LIMIT, SessionRecord, SessionStore, Store, StoreError, SummaryStore,
};
use crate::tools::{
    CodeSandbox, DownloadPolicy, FILE_WRITE, McpPolicy, McpPool, TODO_READ, TODO_WRITE,
    WORKSPACE_PROMPT_BLOCK, code_tools, followup_tool, workspace_tools,
};
use crate::util::{InputError, SessionId, UserId, new_id, now_secs};
use crate::wire::{
    AgentMode, ContextBudgetConfig, Event, EventStream, EventType, InputMessage, MemoryType, Role,
    StoredEvent, StreamRequest,
};
use approvals::{PausedRun, RunApprovals};
use follow::{Takeover, follow, live_then_log};
use hand_off::RunHandOffs;
use sub_sessions::RunSubSessions;
use watch::keep_lease;
use writer::{LiveFeed, RunAccount, WriterEnd, spawn_writer};

const DEFAULT_MAX_LOOP_COUNT: u32 = 50;
const TITLE_CHARS: usize = 50;
const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A started (or re-attached) run: its session and the events the caller streams.
pub struct StartedRun {
    pub session_id: String,
    /// Sequence number of the run's first streamed event.
    pub first_seq: u64,
    pub events: EventStream,
}

/// A client's `Idempotency-Key` and the hash of the request body it came with.
pub struct Idempotency {
    key: String,
    body_hash: String,
}

impl Idempotency {
    pub fn parse(key: &str, body_hash: String) -> Result<Self, InputError> {
        let key = key.trim();
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(InputError::Invalid(format!(
                "Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            )));
        }
        Ok(Self {
            key: key.to_owned(),
            body_hash,
        })
    }
}

/// What runs take from the configuration.
#[derive(Clone)]
pub struct RunDefaults {
    pub llm: LlmConfig,
    pub context: ContextSettings,
    pub force_summary: bool,
    pub memory_type: MemoryType,
    pub after_run: AfterRun,
    pub lease: Duration,
    pub approval_timeout: Duration,
    /// `--run_deadline_seconds`: how long a run goes on in one invocation before it hands off.
    pub run_deadline: Option<Duration>,
    pub tool_timeout: Duration,
    pub mcp_policy: McpPolicy,
    pub downloads: DownloadPolicy,
    pub code: CodeSandbox,
    pub limits: RunLimits,
    pub prices: Option<PriceTable>,
}

/// When the work that follows a run (memory extraction) happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRun {
    /// After `stream_end`: the caller does not wait for it (a long-lived server).
    AfterStreamEnd,
    /// Before `stream_end`, while the response is open: where a process is frozen once its
    /// response ends (a Lambda function).
    BeforeStreamEnd,
}

/// The stores a run touches.
#[derive(Clone)]
pub struct RunStores {
    pub sessions: Arc<dyn SessionStore>,
    pub events: Arc<dyn EventLog>,
    pub control: Arc<dyn RunControl>,
    pub summaries: Arc<dyn SummaryStore>,
    /// A run's opening and closing writes, which span the session and its lock.
    pub lifecycle: Arc<dyn Store>,
    pub sink: EventSink,
}

/// The run service.
#[derive(Clone)]
pub struct Runs {
    stores: RunStores,
    defaults: Arc<RunDefaults>,
    agents: Agents,
    providers: Providers,
    llm: Arc<dyn ChatModel>,
    pool: Arc<McpPool>,
    tools: ToolsAdmin,
    sessions: Sessions,
    memories: Memories,
    skills: Skills,
    knowledge: Knowledge,
    usage: Usage,
    watch: Arc<RunWatch>,
    /// Where a handed-off run continues; in this process without one.
    relay: Option<Arc<dyn RunRelay>>,
    tasks: TaskTracker,
}

impl Runs {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stores: RunStores,
        defaults: RunDefaults,
        agents: Agents,
        providers: Providers,
        llm: Arc<dyn ChatModel>,
        pool: Arc<McpPool>,
        tools: ToolsAdmin,
        sessions: Sessions,
        memories: Memories,
        skills: Skills,
        knowledge: Knowledge,
        usage: Usage,
        relay: Option<Arc<dyn RunRelay>>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        let watch = RunWatch::start(stores.control.clone(), shutdown);
        Self {
            stores,
            defaults: Arc::new(defaults),
            agents,
            providers,
            llm,
            pool,
            tools,
            sessions,
            memories,
            skills,
            knowledge,
            usage,
            watch,
            relay,
            tasks,
        }
    }

    fn reader(&self) -> LogReader {
        LogReader {
            events: self.stores.events.clone(),
            control: self.stores.control.clone(),
            takeover: Some(Arc::new(self.clone())),
        }
    }

    /// Stops every run of this process as an interrupt would; the number stopped.
    pub fn interrupt_all(&self) -> usize {
        self.watch.interrupt_all()
    }

    /// Starts a run. Errors before the stream change nothing. With an idempotency key seen
    /// before (same body), the caller is attached to that run instead.
    ///
    /// The start runs to its end on a task of its own: a client that hangs up while its run
    /// starts must not leave it half-started (an `Idempotency-Key` claimed but never bound to
    /// its first event, a run lock held until its lease runs out). The run then goes on, as it
    /// does when a client leaves mid-stream, and a retry with the key attaches to it.
    pub async fn start(
        &self,
        request: StreamRequest,
        idempotency: Option<Idempotency>,
        invocation: Invocation,
    ) -> Result<StartedRun, DomainError> {
        let runs = self.clone();
        let starting = self.tasks.spawn(Box::pin(
            async move { runs.start_here(request, idempotency, invocation).await }
                .in_current_span(),
        ));
        starting.await.unwrap_or_else(|error| {
            tracing::error!(%error, "a run's start failed");
            Err(DomainError::Unavailable("the run could not start".into()))
        })
    }

    async fn start_here(
        &self,
        mut request: StreamRequest,
        idempotency: Option<Idempotency>,
        invocation: Invocation,
    ) -> Result<StartedRun, DomainError> {
        request.validate()?;
        let user = UserId::from_optional(request.user_id.as_deref());
        self.agents.apply(&user, &mut request).await?;
        // Both only read, so they run at once (one round trip to DynamoDB or MariaDB before the
        // model is asked, not two); their errors still come in this order.
        let provider = async {
            match request.llm_model_config {
                Some(_) => Ok(None),
                None => self
                    .providers
                    .for_run(&user, request.llm_provider_id.as_deref())
                    .await
                    .map(Some),
            }
        };
        let (provider, extras) = tokio::join!(provider, self.run_extras(&user, &request));
        if let Some(config) = provider? {
            request.llm_model_config = config;
        }
        let settings = resolve_llm(&self.defaults.llm, request.llm_model_config.as_ref())?;
        let skills = extras?;
        let asked_for = request.session_id.as_deref().filter(|id| !id.is_empty());
        let session_id = match asked_for {
            Some(id) => SessionId::parse(id)?,
            None => SessionId::generate(),
        };
        let begin = Begin {
            user: &user,
            session_id: &session_id,
            fresh: asked_for.is_none(),
            invocation,
        };
        let Some(idempotency) = idempotency else {
            return self
                .begin(&request, &settings, &skills, begin, None, None)
                .await;
        };
        let record = IdempotencyRecord {
            key: format!("{user}\n{}", idempotency.key),
            request_hash: idempotency.body_hash,
            session_id: session_id.to_string(),
            first_seq: None,
            created_at: now_secs(),
        };
        let control = &self.stores.control;
        if let Some(existing) = control.claim_idempotency_key(&record).await? {
            if existing.request_hash != record.request_hash {
                return Err(DomainError::Conflict(
                    "this Idempotency-Key was already used with a different request".into(),
                ));
            }
            return self.reattach(existing).await;
        }
        let started = self
            .begin(&request, &settings, &skills, begin, Some(&record.key), None)
            .await;
        if started.is_err() {
            let _ = control.release_idempotency_key(&record.key).await;
        }
        started
    }

    /// Replays the events after `after`, then follows the live run; the caller must own it.
    pub async fn resume(
        &self,
        user: &UserId,
        session_id: &SessionId,
        after: u64,
    ) -> Result<EventStream, DomainError> {
        self.sessions.owned(user, session_id).await?;
        Ok(follow(self.reader(), session_id.to_string(), after))
    }

    /// The owner's decision on the calls a paused run holds: continues the run (or ends it,
    /// when the wait has expired) and streams it like [`Runs::start`].
    pub async fn approve(
        &self,
        user: &UserId,
        session_id: &SessionId,
        decision: ApprovalDecision,
        invocation: Invocation,
    ) -> Result<StartedRun, DomainError> {
        self.sessions.owned(user, session_id).await?;
        let record = self
            .stores
            .control
            .pending_approval(session_id.as_str())
            .await?
            .filter(|record| record.user_id == user.as_str())
            .ok_or_else(|| {
                DomainError::Conflict(format!(
                    "nothing in session {session_id} waits for approval"
                ))
            })?;
        if decision
            .approval_id()
            .is_some_and(|id| id != record.approval_id)
        {
            return Err(DomainError::Conflict(
                "approval_id: that approval was already decided".into(),
            ));
        }
        let paused: PausedRun = serde_json::from_str(&record.state).map_err(StoreError::from)?;
        if paused.hand_off_of.is_some() {
            return Err(DomainError::Conflict(format!(
                "nothing in session {session_id} waits for approval"
            )));
        }
        let decided = decision.decide(paused.turn, now_secs() > record.expires_at)?;
        let request = paused.request;
        let settings = resolve_llm(&self.defaults.llm, request.llm_model_config.as_ref())?;
        let extras = self.run_extras(user, &request).await?;
        let resume = Resume::Approval {
            approval_id: record.approval_id,
            decided,
        };
        let begin = Begin {
            user,
            session_id,
            fresh: false,
            invocation,
        };
        self.begin(&request, &settings, &extras, begin, None, Some(resume))
            .await
    }

    /// Continues a handed-off run from its checkpoint, in this invocation, or ends a run whose
    /// approval's wait ran out: `ticket` must name the paused record the session holds, and only
    /// one continuation takes it.
    pub async fn continue_run(
        &self,
        ticket: &HandOffTicket,
        invocation: Invocation,
    ) -> Result<StartedRun, DomainError> {
        let unknown = || DomainError::NotFound("no run to continue with this ticket".into());
        let session_id = SessionId::parse(&ticket.session_id).map_err(|_| unknown())?;
        let record = self
            .stores
            .control
            .pending_approval(session_id.as_str())
            .await?
            .filter(|record| record.approval_id == ticket.token)
            .ok_or_else(unknown)?;
        let paused: PausedRun = serde_json::from_str(&record.state).map_err(StoreError::from)?;
        let resume = match paused.hand_off_of {
            Some(run_id) => Resume::HandOff {
                run_id,
                token: record.approval_id,
                at: paused.turn,
            },
            // An approval's wait that ran out with nobody deciding (the sweep's ticket): the run
            // ends as a decision after the expiry would end it.
            None if now_secs() > record.expires_at => Resume::Approval {
                approval_id: record.approval_id,
                decided: approvals::expired_turn(paused.turn),
            },
            None => return Err(unknown()),
        };
        let user = UserId::from_optional(Some(&record.user_id));
        let request = paused.request;
        let settings = resolve_llm(&self.defaults.llm, request.llm_model_config.as_ref())?;
        let extras = self.run_extras(&user, &request).await?;
        let begin = Begin {
            user: &user,
            session_id: &session_id,
            fresh: false,
            invocation,
        };
        self.begin(&request, &settings, &extras, begin, None, Some(resume))
            .await
    }

    /// Starts a handed-off run's continuation: through the relay, else on a task here.
    async fn hand_off(&self, ticket: HandOffTicket) {
        if let Err(error) = RunRelay::relay(self, &ticket).await {
            tracing::error!(session_id = %ticket.session_id, error = %crate::telemetry::chain(&error), "could not hand the run off; it continues when someone follows it after its lease");
        }
    }

    /// Takes the session's run lock; a continuation waits a little for the paused run to let
    /// go of it (its last events may still be on their way).
    async fn lock_run(
        &self,
        session_id: &SessionId,
        run_id: &str,
        waits: bool,
    ) -> Result<bool, DomainError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let locked = self
                .stores
                .control
                .try_lock_run(session_id.as_str(), run_id, self.defaults.lease)
                .await?;
            if locked || !waits || tokio::time::Instant::now() >= deadline {
                return Ok(locked);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The same request again: stream the run it started, from its first event.
    async fn reattach(&self, existing: IdempotencyRecord) -> Result<StartedRun, DomainError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut record = Some(existing);
        loop {
            match &record {
                Some(IdempotencyRecord {
                    first_seq: Some(first_seq),
                    session_id,
                    ..
                }) => {
                    let events = follow(self.reader(), session_id.clone(), first_seq - 1);
                    return Ok(StartedRun {
                        session_id: session_id.clone(),
                        first_seq: *first_seq,
                        events,
                    });
                }
                Some(pending) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    record = self
                        .stores
                        .control
                        .get_idempotency_key(&pending.key)
                        .await?;
                }
                Some(_) => {
                    return Err(DomainError::Conflict(
                        "the request with this Idempotency-Key is still starting; retry shortly"
                            .into(),
                    ));
                }
                None => {
                    return Err(DomainError::Conflict(
                        "the request with this Idempotency-Key failed before it started; \
                         send it again with a new key"
                            .into(),
                    ));
                }
            }
        }
    }

    async fn begin(
        &self,
        request: &StreamRequest,
        settings: &LlmSettings,
        extras: &RunExtras,
        begin: Begin<'_>,
        idempotency_key: Option<&str>,
        resume: Option<Resume>,
    ) -> Result<StartedRun, DomainError> {
        let Begin {
            user,
            session_id,
            fresh,
            invocation,
        } = begin;
        let stores = &self.stores;
        let existing = if fresh {
            None
        } else {
            stores.sessions.get_session(session_id.as_str()).await?
        };
        if let Some(existing) = &existing
            && existing.user_id != user.as_str()
        {
            return Err(DomainError::Forbidden(format!(
                "session {session_id} belongs to another user"
            )));
        }
        let continues_hand_off = matches!(resume, Some(Resume::HandOff { .. }));
        let run_id = match &resume {
            Some(Resume::HandOff { run_id, .. }) => run_id.clone(),
            _ => new_id(),
        };
        let new_session = existing.is_none();
        // A continuation takes its run's lock over by the run's id, even after its lease ran
        // out; never once another run has the session. A new conversation is stored with its
        // lock.
        let locked = if continues_hand_off {
            stores
                .control
                .renew_run_lock(session_id.as_str(), &run_id, self.defaults.lease)
                .await?
        } else if new_session && resume.is_none() {
            let mut session = SessionRecord::new(
                session_id.as_str(),
                user.as_str(),
                &title_of(&request.messages),
            );
            session.agent_id = request.agent_id.clone();
            session.agent_name = request.agent_name.clone();
            match stores
                .lifecycle
                .open_run(&session, &run_id, self.defaults.lease)
                .await?
            {
                // Stored by another user's run since this one looked.
                Some(stored) if stored.user_id != user.as_str() => {
                    let _ = stores
                        .control
                        .release_run_lock(session_id.as_str(), &run_id)
                        .await;
                    return Err(DomainError::Forbidden(format!(
                        "session {session_id} belongs to another user"
                    )));
                }
                stored => stored.is_some(),
            }
        } else {
            self.lock_run(session_id, &run_id, resume.is_some()).await?
        };
        if !locked {
            return Err(DomainError::Conflict(format!(
                "session {session_id} is already running"
            )));
        }
        let hand_offs = Arc::new(RunHandOffs {
            control: stores.control.clone(),
            session_id: session_id.to_string(),
            user_id: user.as_str().to_owned(),
            run_id: run_id.clone(),
            token: new_id(),
            request: StreamRequest {
                messages: Vec::new(),
                session_id: Some(session_id.to_string()),
                ..request.clone()
            },
            saved: Default::default(),
            lease: self.defaults.lease,
        });
        let paused = existing.is_some_and(|session| session.status == RunStatus::AwaitingApproval);
        let account = RunAccount {
            user_id: user.as_str().to_owned(),
            run_id: run_id.clone(),
            model: settings.model.clone(),
        };
        let prepared = async {
            let resumed = self
                .settle_pending_approval(session_id.as_str(), paused, resume, &hand_offs)
                .await?;
            let (mut spec, after_seq, log) = self
                .prepare(
                    request,
                    settings,
                    extras,
                    session_id,
                    user,
                    &account,
                    resumed,
                    new_session,
                )
                .await?;
            if matches!(spec.mode, RunMode::Simple | RunMode::Multi | RunMode::Fibre) {
                spec.checkpoints = Some(hand_offs.clone() as Arc<dyn RunCheckpoints>);
                spec.deadline = invocation.deadline(self.defaults.run_deadline);
            }
            if let Some(key) = idempotency_key {
                stores
                    .control
                    .set_idempotency_first_seq(key, after_seq + 1)
                    .await?;
            }
            Ok::<_, DomainError>((spec, after_seq, log))
        }
        .await;
        match prepared {
            Ok((spec, after_seq, log)) => {
                let remembers = self.uses_user_memory(request).then(|| user.clone());
                Ok(StartedRun {
                    session_id: session_id.to_string(),
                    first_seq: after_seq + 1,
                    events: self.launch(spec, account, log, remembers, hand_offs),
                })
            }
            Err(error) => {
                // A continuation that lost the race leaves the lock to the one that won.
                if !continues_hand_off {
                    let _ = stores
                        .control
                        .release_run_lock(session_id.as_str(), &run_id)
                        .await;
                }
                Err(error)
            }
        }
    }

    /// Under the run lock: a continuation takes its approval (exactly one decision does) or
    /// its checkpoint (exactly one continuation does, and saves it again under its own token
    /// at once); a new message to a paused session drops the approval it waited for.
    async fn settle_pending_approval(
        &self,
        session_id: &str,
        paused: bool,
        resume: Option<Resume>,
        hand_offs: &RunHandOffs,
    ) -> Result<Option<DecidedTurn>, DomainError> {
        let control = &self.stores.control;
        match resume {
            Some(Resume::Approval {
                approval_id,
                decided,
            }) => {
                if control
                    .take_pending_approval(session_id, &approval_id)
                    .await?
                {
                    Ok(Some(decided))
                } else {
                    Err(DomainError::Conflict(
                        "that approval was already decided".into(),
                    ))
                }
            }
            Some(Resume::HandOff { token, at, .. }) => {
                if !control.take_pending_approval(session_id, &token).await? {
                    return Err(DomainError::Conflict(
                        "the run was already continued".into(),
                    ));
                }
                if let Err(error) = hand_offs.save(&at).await {
                    tracing::warn!(%session_id, %error, "could not save the continuation's checkpoint");
                }
                Ok(Some(DecidedTurn {
                    turn: at,
                    decisions: Vec::new(),
                }))
            }
            None => {
                if paused && let Some(pending) = control.pending_approval(session_id).await? {
                    control
                        .take_pending_approval(session_id, &pending.approval_id)
                        .await?;
                }
                Ok(None)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn prepare(
        &self,
        request: &StreamRequest,
        settings: &LlmSettings,
        extras: &RunExtras,
        session_id: &SessionId,
        user: &UserId,
        account: &RunAccount,
        resumed: Option<DecidedTurn>,
        new_session: bool,
    ) -> Result<(RunSpec, u64, Vec<StoredEvent>), DomainError> {
        let stores = &self.stores;
        let session_id = session_id.as_str();
        // A conversation that was not stored when the run began has no log to read yet (it
        // was stored with the run's lock).
        let mut log = if new_session {
            Vec::new()
        } else {
            stores.events.events_after(session_id, 0).await?
        };
        let mut seq = log.last().map_or(0, |stored| stored.seq);
        let inputs: Vec<StoredEvent> = request
            .messages
            .iter()
            .map(|message| {
                seq += 1;
                StoredEvent::new(seq, input_event(session_id, message))
            })
            .collect();
        // Through the sink: written together with what concurrent runs write meanwhile.
        log.extend(stores.sink.append(session_id, inputs).await?);

        let mut system_prompt = system_prompt(request);
        let mut builtin_tools = Vec::new();
        if self.uses_user_memory(request) {
            if let Some(block) = self.memories.prompt_block(user).await? {
                append_block(&mut system_prompt, &block);
            }
            builtin_tools.push(self.memories.tools(user));
        }
        let skills = &extras.skills;
        if !skills.is_empty() {
            append_block(&mut system_prompt, &skill_prompt_block(skills));
            if let Some(asked) = tagged_skill(request)
                .and_then(|name| skills.iter().find(|skill| skill.name == name))
            {
                append_block(&mut system_prompt, &asked_skill_block(asked));
            }
            builtin_tools.push(skill_tools(skills.to_vec()));
        }
        if !extras.knowledge.is_empty() {
            append_block(
                &mut system_prompt,
                &knowledge_prompt_block(&extras.knowledge),
            );
            builtin_tools.push(knowledge_tools(
                self.knowledge.clone(),
                user.as_str(),
                extras.knowledge.clone(),
            ));
        }
        let mode = match request.requested_mode() {
            AgentMode::Multi => RunMode::Multi,
            AgentMode::Fibre => RunMode::Fibre,
            AgentMode::Simple | AgentMode::Auto => RunMode::Simple,
        };
        let fibre = if mode == RunMode::Fibre {
            Some(FibreSetup {
                sub_agents: extras.sub_agents.clone(),
                sub_sessions: Arc::new(RunSubSessions {
                    stores: self.stores.clone(),
                    account: account.clone(),
                    parent: session_id.to_owned(),
                }),
            })
        } else {
            None
        };
        let mut requested_tools = request.available_tools.clone().unwrap_or_default();
        if mode == RunMode::Multi {
            requested_tools.extend([TODO_WRITE, TODO_READ].map(str::to_owned));
        }
        // As in Sage, a run with skills can write what they make; the code tools stay off
        // unless the agent names them.
        if !skills.is_empty() {
            requested_tools.push(FILE_WRITE.to_owned());
        }
        let requested_tools = requested_tools.as_slice();
        if let Some(tools) = workspace_tools(
            self.sessions.files().objects(),
            session_id,
            requested_tools,
            self.defaults.downloads,
        ) {
            append_block(&mut system_prompt, WORKSPACE_PROMPT_BLOCK);
            builtin_tools.push(tools);
        }
        builtin_tools.extend(followup_tool(requested_tools));
        builtin_tools.extend(code_tools(
            self.sessions.files().objects(),
            session_id,
            requested_tools,
            self.defaults.code.clone(),
        ));
        if mode != RunMode::Fibre && requested_tools.iter().any(|name| name == SYS_FINISH_TASK) {
            builtin_tools.push(finish_tool());
        }
        let continues = resumed.is_some();
        let continues_hand_off = resumed
            .as_ref()
            .is_some_and(|resumed| resumed.turn.waiting.is_empty());
        // A multi-mode checkpoint falls between rounds: what the run said after it was saved
        // is not part of the conversation.
        let multi_progress = resumed
            .as_ref()
            .and_then(|resumed| resumed.turn.multi.as_ref());
        let said_by = multi_progress.map_or(f64::INFINITY, |progress| progress.saved_at);
        // ... and its own planning, observation and decomposition texts were part of it.
        let run_since = multi_progress.map_or(f64::INFINITY, |progress| progress.since);
        let approval_gate = (mode == RunMode::Simple).then(|| {
            Arc::new(RunApprovals {
                control: stores.control.clone(),
                session_id: session_id.to_owned(),
                user_id: user.as_str().to_owned(),
                request: StreamRequest {
                    messages: Vec::new(),
                    session_id: Some(session_id.to_owned()),
                    ..request.clone()
                },
                timeout: self.defaults.approval_timeout,
            }) as Arc<dyn ApprovalGate>
        });
        let spec = RunSpec {
            session_id: session_id.to_owned(),
            settings: settings.clone(),
            system_prompt,
            // A fibre run's log also holds its sub-agents' events: they are not this
            // conversation's turns.
            history: {
                let mut history = to_model_messages(merge_events_with(
                    log.iter()
                        .map(|stored| &stored.event)
                        .filter(|event| event.session_id == session_id)
                        .filter(|event| event.timestamp <= said_by),
                    |event| {
                        event.timestamp >= run_since
                            && matches!(
                                event.kind,
                                EventType::TaskDecomposition
                                    | EventType::Planning
                                    | EventType::Observation
                            )
                    },
                ));
                if continues_hand_off && said_by.is_infinite() {
                    back_to_checkpoint(&mut history);
                }
                history
            },
            summary: if new_session {
                None
            } else {
                stores
                    .summaries
                    .session_summary(session_id)
                    .await?
                    .map(|record| record.summary)
            },
            context: context_settings(
                self.defaults.context,
                request.context_budget_config.as_ref(),
            ),
            force_summary: request.force_summary.unwrap_or(self.defaults.force_summary),
            max_loop_count: if mode == RunMode::Fibre {
                FIBRE_MAX_LOOP_COUNT
            } else {
                request.max_loop_count.unwrap_or(DEFAULT_MAX_LOOP_COUNT)
            },
            // A continuation goes on from its held turn: the opening steps ran already.
            deep_thinking: request.deep_thinking.unwrap_or(false) && !continues,
            available_tools: request.available_tools.clone().unwrap_or_default(),
            registered_servers: extras.registered_servers.clone(),
            request_servers: request.extra_mcp_config.clone().unwrap_or_default(),
            builtin_tools,
            mcp_policy: self.defaults.mcp_policy,
            tool_timeout: self.defaults.tool_timeout,
            notices: if continues {
                Vec::new()
            } else {
                request.unsupported_options()
            },
            workflows: if continues {
                Default::default()
            } else {
                request.available_workflows.clone().unwrap_or_default()
            },
            suggest: request.more_suggest.unwrap_or(false),
            limits: self.defaults.limits,
            budget_left: extras.budget_left,
            meter: Default::default(),
            price: self
                .defaults
                .prices
                .as_ref()
                .and_then(|prices| prices.price_of(&settings.model)),
            mode,
            agent_name: None,
            fibre,
            approval_tools: request.tools_requiring_approval.clone().unwrap_or_default(),
            approval_gate,
            checkpoints: None,
            deadline: None,
            resumed,
        };
        Ok((spec, seq, log))
    }

    /// What the run brings beside its request, checked before it starts.
    async fn run_extras(
        &self,
        user: &UserId,
        request: &StreamRequest,
    ) -> Result<RunExtras, DomainError> {
        Ok(RunExtras {
            budget_left: self.usage.budget_left(user).await?,
            skills: self.run_skills(user, request).await?,
            knowledge: self
                .knowledge
                .for_run(
                    user.as_str(),
                    request
                        .available_knowledge_bases
                        .as_deref()
                        .unwrap_or_default(),
                )
                .await?,
            sub_agents: if request.requested_mode() == AgentMode::Fibre {
                self.agents
                    .sub_agents(
                        user,
                        request
                            .available_sub_agent_ids
                            .as_deref()
                            .unwrap_or_default(),
                    )
                    .await?
            } else {
                Vec::new()
            },
            registered_servers: self.tools.enabled_servers(user).await?,
        })
    }

    /// The skills the request (or its agent) names, and the one its message asks for.
    async fn run_skills(
        &self,
        user: &UserId,
        request: &StreamRequest,
    ) -> Result<Vec<RunSkill>, DomainError> {
        let mut names = request.available_skills.clone().unwrap_or_default();
        if let Some(asked) = tagged_skill(request)
            && !names.iter().any(|name| name == asked)
        {
            names.push(asked.to_owned());
        }
        self.skills.for_run(user, &names).await
    }

    fn uses_user_memory(&self, request: &StreamRequest) -> bool {
        request.memory_type.unwrap_or(self.defaults.memory_type) == MemoryType::User
    }

    /// Drives the run in the background; with `remembers`, memories are extracted from the
    /// conversation once the run has ended and the caller has its `stream_end`.
    /// `log` is the session's log as the run begins, its new messages included.
    fn launch(
        &self,
        spec: RunSpec,
        account: RunAccount,
        log: Vec<StoredEvent>,
        remembers: Option<UserId>,
        hand_offs: Arc<RunHandOffs>,
    ) -> EventStream {
        let after_seq = log.last().map_or(0, |stored| stored.seq);
        let runs = self.clone();
        let run_id = account.run_id.clone();
        let session_id = spec.session_id.clone();
        let settings = spec.settings.clone();
        let sessions = self.sessions.clone();
        let memories = self.memories.clone();
        let after_run = self.defaults.after_run;
        let (feed, live) = LiveFeed::new(&session_id);
        let events = live_then_log(live, self.reader(), session_id.clone(), after_seq);
        let stores = self.stores.clone();
        let watch = self.watch.clone();
        let llm = self.llm.clone();
        let pool = self.pool.clone();
        let lease = self.defaults.lease;
        // One trace per run: its model calls, tool calls and log writes are spans inside it.
        let span = tracing::info_span!(
            "run",
            session_id = %session_id,
            run_id = %run_id,
            trace_id = tracing::field::Empty
        );
        let trace_id = crate::telemetry::trace_id(&span);
        if let Some(trace_id) = &trace_id {
            span.record("trace_id", trace_id.as_str());
        }
        self.tasks.spawn(Box::pin(async move {
            let cancel = CancellationToken::new();
            let driven = async {
                let (emitter, writer) = spawn_writer(
                    stores.sink.clone(),
                    session_id.clone(),
                    after_seq,
                    feed,
                    cancel.clone(),
                    trace_id,
                    account,
                );
                watch.register(&session_id, &run_id, cancel);
                let supervisor = tokio::spawn(keep_lease(
                    stores.control.clone(),
                    session_id.clone(),
                    run_id.clone(),
                    lease,
                ));
                let fallback = emitter.clone();
                let agent = Agent::new(spec, llm.clone(), pool, emitter);
                let outcome = match tokio::spawn(Box::pin(agent.run().in_current_span())).await {
                    Ok(outcome) => outcome,
                    Err(panic) => {
                        tracing::error!(%session_id, error = %panic, "agent run panicked");
                        fallback
                            .emit(Event {
                                content: Some(Value::String(
                                    "The agent failed unexpectedly.".into(),
                                )),
                                message_id: Some(new_id()),
                                ..Event::new(&session_id, Role::Assistant, EventType::Error)
                            })
                            .await;
                        fallback.emit(Event::empty_token_usage(&session_id)).await;
                        RunOutcome::Failed
                    }
                };
                drop(fallback);
                let finished = writer.await.unwrap_or_else(|error| {
                    tracing::error!(%session_id, %error, "event writer failed");
                    WriterEnd {
                        end: None,
                        feed: LiveFeed::closed(),
                        written: None,
                    }
                });
                (outcome, finished, supervisor)
            }
            .instrument(span.clone());
            let (outcome, finished, supervisor) = driven.await;
            let WriterEnd {
                end,
                mut feed,
                written,
            } = finished;
            supervisor.abort();
            watch.unregister(&session_id, &run_id);
            if outcome == RunOutcome::HandedOff {
                // The session and its lock stay as they are: the continuation takes them over.
                // The client hears of the hand-off only once it is under way: where a process
                // is frozen when its response ends (Lambda), it would never start.
                runs.hand_off(hand_offs.ticket()).instrument(span).await;
                if let Some(end) = end {
                    feed.send(end);
                }
                return;
            }
            hand_offs.remove().await;
            async {
                let transcript = written.map(|written| {
                    let mut log = log;
                    log.extend(written);
                    log
                });
                let closed = match tally_of(stores.events.as_ref(), &session_id, outcome, transcript).await {
                    Ok(tally) => stores.lifecycle.close_run(&session_id, &run_id, &tally).await,
                    Err(error) => Err(error),
                };
                match closed {
                    Ok(Some(session)) => sessions.index_session(&session).await,
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%session_id, error = %crate::telemetry::chain(&error), "could not update the session after its run");
                        if let Err(error) = stores.control.release_run_lock(&session_id, &run_id).await {
                            tracing::warn!(%session_id, error = %crate::telemetry::chain(&error), "could not release the run lock; it expires with its lease");
                        }
                        sessions.index_conversation(&session_id).await;
                    }
                }
            }
            .instrument(span)
            .await;
            // Sent last: a client that saw stream_end may start the next run at once. Where
            // work after the response is frozen (Lambda), the extraction goes first.
            let extraction = remembers.map(|user| {
                extract_memories(memories, user, llm, settings, stores.events, session_id)
            });
            match (extraction, after_run) {
                (extraction, AfterRun::BeforeStreamEnd) => {
                    if let Some(extraction) = extraction {
                        extraction.await;
                    }
                    // The run's spans leave before the response ends and the process freezes.
                    crate::telemetry::flush_traces().await;
                    if let Some(end) = end {
                        feed.send(end);
                    }
                }
                (extraction, _) => {
                    if let Some(end) = end {
                        feed.send(end);
                    }
                    if let Some(extraction) = extraction {
                        extraction.await;
                    }
                }
            }
        }));
        events
    }
}

/// A paused run's continuation: through the configured relay (a fresh Lambda invocation), else
/// on a task of this process.
#[async_trait::async_trait]
impl RunRelay for Runs {
    async fn relay(&self, ticket: &HandOffTicket) -> Result<(), RelayError> {
        if let Some(relay) = &self.relay {
            return relay.relay(ticket).await;
        }
        let runs = self.clone();
        let ticket = ticket.clone();
        self.tasks.spawn(
            async move {
                let session_id = ticket.session_id.clone();
                match runs.continue_run(&ticket, Invocation::default()).await {
                    Ok(started) => {
                        let mut events = started.events;
                        while events.next().await.is_some() {}
                    }
                    Err(error) => {
                        tracing::warn!(%session_id, %error, "the run's continuation did not start")
                    }
                }
            }
            .in_current_span(),
        );
        Ok(())
    }
}

#[async_trait::async_trait]
impl Takeover for Runs {
    async fn take_over(&self, session_id: &str) -> bool {
        let record = match self.stores.control.pending_approval(session_id).await {
            Ok(Some(record)) => record,
            Ok(None) => return false,
            Err(error) => {
                tracing::warn!(%session_id, error = %crate::telemetry::chain(&error), "cannot read the run's checkpoint");
                return false;
            }
        };
        let handed_off = serde_json::from_str::<PausedRun>(&record.state)
            .is_ok_and(|paused| paused.hand_off_of.is_some());
        if !handed_off {
            return false;
        }
        tracing::info!(%session_id, "the run's process is gone; it continues from its checkpoint");
        self.hand_off(HandOffTicket {
            session_id: session_id.to_owned(),
            token: record.approval_id,
        })
        .await;
        true
    }
}

/// Reads the conversation back and extracts the user's memories from it; failures are logged.
async fn extract_memories(
    memories: Memories,
    user: UserId,
    llm: Arc<dyn ChatModel>,
    settings: LlmSettings,
    events: Arc<dyn EventLog>,
    session_id: String,
) {
    let log = match events.events_after(&session_id, 0).await {
        Ok(log) => log,
        Err(error) => {
            tracing::warn!(%session_id, error = %crate::telemetry::chain(&error), "could not read the conversation for memory extraction");
            return;
        }
    };
    let messages: Vec<Value> = to_model_messages(merge_events(log.iter().map(|s| &s.event)))
        .into_iter()
        .map(|prompt| prompt.message)
        .collect();
    match memories
        .extract(&user, llm.as_ref(), &settings, &messages)
        .await
    {
        Ok(stored) => tracing::debug!(%session_id, stored, "memories extracted"),
        Err(error) => {
            tracing::warn!(%session_id, error = %crate::telemetry::chain(&error), "memory extraction failed")
        }
    }
}

/// The server's `--context_*` settings overlaid with the request's `context_budget_config`.
fn context_settings(
    defaults: ContextSettings,
    overrides: Option<&ContextBudgetConfig>,
) -> ContextSettings {
    let Some(overrides) = overrides else {
        return defaults;
    };
    ContextSettings {
        history_ratio: overrides.history_ratio.unwrap_or(defaults.history_ratio),
        active_ratio: overrides.active_ratio.unwrap_or(defaults.active_ratio),
        max_new_message_ratio: overrides
            .max_new_message_ratio
            .unwrap_or(defaults.max_new_message_ratio),
        recent_turns: overrides.recent_turns.unwrap_or(defaults.recent_turns),
    }
}

/// Adds a block to the system prompt, after a blank line.
fn append_block(system_prompt: &mut Option<String>, block: &str) {
    let prompt = system_prompt.get_or_insert_with(String::new);
    if !prompt.is_empty() {
        prompt.push_str("\n\n");
    }
    prompt.push_str(block);
}

fn system_prompt(request: &StreamRequest) -> Option<String> {
    let mut prompt = request.system_prefix.clone().unwrap_or_default();
    if let Some(context) = request.system_context.as_ref().filter(|c| !c.is_empty()) {
        prompt.push_str("\n\nContext:");
        for (key, value) in context {
            let value = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            prompt.push_str(&format!("\n- {key}: {value}"));
        }
    }
    let prompt = prompt.trim().to_owned();
    (!prompt.is_empty()).then_some(prompt)
}

fn title_of(messages: &[InputMessage]) -> String {
    let first = messages
        .iter()
        .find(|message| message.role == "user")
        .map(|message| content_as_text(&message.content))
        .unwrap_or_default();
    let first = first.trim();
    if first.is_empty() {
        return "新会话".into();
    }
    if first.chars().count() > TITLE_CHARS {
        format!("{}...", first.chars().take(TITLE_CHARS).collect::<String>())
    } else {
        first.to_owned()
    }
}

fn input_event(session_id: &str, message: &InputMessage) -> Event {
    let role = match message.role.as_str() {
        "assistant" => Role::Assistant,
        "system" => Role::System,
        "tool" => Role::Tool,
        _ => Role::User,
    };
    let kind = if role == Role::Assistant {
        EventType::FinalAnswer
    } else {
        EventType::Normal
    };
    Event {
        content: Some(message.content.clone()),
        message_id: Some(message.message_id.clone().unwrap_or_else(new_id)),
        ..Event::new(session_id, role, kind)
    }
}

/// What the run leaves on its session: counts, search text and status from its transcript (the
/// log it began with and what it wrote, when the run has it; otherwise the log as read).
async fn tally_of(
    events: &dyn EventLog,
    session_id: &str,
    outcome: RunOutcome,
    transcript: Option<Vec<StoredEvent>>,
) -> Result<RunTally, StoreError> {
    let log = match transcript {
        Some(log) => log,
        None => events.events_after(session_id, 0).await?,
    };
    let merged = merge_events(log.iter().map(|stored| &stored.event));
    let user_count = merged.iter().filter(|m| m.role == Role::User).count() as u64;
    let agent_count = merged.iter().filter(|m| m.role == Role::Assistant).count() as u64;
    let mut search_text = String::new();
    for message in merged.iter().filter(|m| m.role != Role::Tool) {
        let text = content_as_text(&message.content);
        if search_text.len() + text.len() + 1 > SEARCH_TEXT_LIMIT {
            break;
        }
        search_text.push_str(&text);
        search_text.push('\n');
    }
    Ok(RunTally {
        message_count: user_count + agent_count,
        user_count,
        agent_count,
        search_text,
        status: match outcome {
            RunOutcome::Completed => RunStatus::Idle,
            RunOutcome::Interrupted => RunStatus::Interrupted,
            RunOutcome::Failed => RunStatus::Error,
            RunOutcome::AwaitingApproval => RunStatus::AwaitingApproval,
            RunOutcome::HandedOff => RunStatus::Running,
        },
        log_seq: log.last().map_or(0, |stored| stored.seq),
        updated_at: now_secs(),
    })
}

/// A checkpoint follows a tool turn's results: what a process that died after it had said of
/// its next turn is not part of the conversation its continuation goes on from.
fn back_to_checkpoint(history: &mut Vec<crate::context::PromptMessage>) {
    let Some(last_result) = history
        .iter()
        .rposition(|prompt| prompt.message["role"] == "tool")
    else {
        return;
    };
    history.truncate(last_result + 1);
}

/// What a continuation goes on from.
enum Resume {
    /// The owner's decision on the calls a paused run holds.
    Approval {
        approval_id: String,
        decided: DecidedTurn,
    },
    /// A handed-off run's checkpoint.
    HandOff {
        run_id: String,
        token: String,
        at: HeldTurn,
    },
}

/// Whose run begins, where, in which invocation.
struct Begin<'a> {
    user: &'a UserId,
    session_id: &'a SessionId,
    /// The id was generated for this run: no session has it yet.
    fresh: bool,
    invocation: Invocation,
}

/// What a run brings beside its request: its skills, knowledge bases and (fibre mode)
/// sub-agents, checked before it starts.
struct RunExtras {
    budget_left: BudgetLeft,
    skills: Vec<RunSkill>,
    knowledge: Vec<RunKnowledgeBase>,
    sub_agents: Vec<SubAgent>,
    registered_servers: Vec<McpServerRecord>,
}

/// `<skill>NAME</skill>` at the start of the newest user message.
fn tagged_skill(request: &StreamRequest) -> Option<&str> {
    request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == "user")
        .and_then(|message| message.content.as_str())
        .and_then(requested_skill)
}
