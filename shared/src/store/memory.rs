use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    AccountRecord, AccountStore, AgentRecord, AgentStore, EventLog, IdempotencyRecord,
    KnowledgeBaseRecord, KnowledgeStore, McpAuthorizationRecord, McpCredentialsRecord,
    McpServerRecord, McpServerStore, PendingApprovalRecord, ProviderRecord, ProviderStore,
    RefreshTokenRecord, RunControl, RunLock, SessionRecord, SessionStore, SkillRecord, SkillStore,
    Store, StoreError, SummaryRecord, SummaryStore, SystemSettingsRecord, UsageLedger, UsageRecord,
    UserMemoryRecord, UserMemoryStore, lease_deadline,
};
use crate::util::now_secs;
use crate::wire::StoredEvent;

/// Keeps everything in process memory: for tests and throwaway runs.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, SessionRecord>,
    events: HashMap<String, Vec<StoredEvent>>,
    locks: HashMap<String, RunLock>,
    mcp_servers: BTreeMap<(String, String), McpServerRecord>,
    mcp_authorizations: HashMap<String, McpAuthorizationRecord>,
    mcp_credentials: HashMap<(String, String), McpCredentialsRecord>,
    idempotency: HashMap<String, IdempotencyRecord>,
    approvals: HashMap<String, PendingApprovalRecord>,
    user_memories: BTreeMap<(String, String), UserMemoryRecord>,
    summaries: HashMap<String, SummaryRecord>,
    accounts: BTreeMap<String, AccountRecord>,
    refresh_tokens: HashMap<String, RefreshTokenRecord>,
    system_settings: Option<SystemSettingsRecord>,
    agents: BTreeMap<String, AgentRecord>,
    providers: BTreeMap<(String, String), ProviderRecord>,
    skills: BTreeMap<String, SkillRecord>,
    knowledge_bases: BTreeMap<(String, String), KnowledgeBaseRecord>,
    usage: BTreeMap<(String, u64), UsageRecord>,
}

fn append_to_log(
    inner: &mut Inner,
    session_id: &str,
    events: &[StoredEvent],
) -> Result<(), StoreError> {
    let log = inner.events.entry(session_id.to_owned()).or_default();
    let mut last = log.last().map_or(0, |stored| stored.seq);
    for stored in events {
        if stored.seq <= last {
            return Err(StoreError::SeqConflict {
                session_id: session_id.to_owned(),
                seq: stored.seq,
            });
        }
        last = stored.seq;
    }
    log.extend_from_slice(events);
    Ok(())
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

#[async_trait]
impl UsageLedger for MemoryStore {
    async fn user_usage(
        &self,
        user_id: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let mut records = self.all_usage(from, to).await?;
        records.retain(|record| record.user_id == user_id);
        Ok(records)
    }

    async fn all_usage(&self, from: &str, to: &str) -> Result<Vec<UsageRecord>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .usage
                .values()
                .filter(|record| (from..=to).contains(&record.day.as_str()))
                .cloned()
                .collect()
        }))
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.with(|inner| inner.sessions.get(session_id).cloned()))
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<SessionRecord, StoreError> {
        Ok(self.with(|inner| {
            inner
                .sessions
                .entry(session.session_id.clone())
                .or_insert_with(|| session.clone())
                .clone()
        }))
    }

    async fn update_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.with(|inner| {
            if let Some(stored) = inner.sessions.get_mut(&session.session_id) {
                *stored = session.clone();
            }
        });
        Ok(())
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .sessions
                .values()
                .filter(|s| s.user_id == user_id)
                .cloned()
                .collect()
        }))
    }

    async fn delete_session(&self, session_id: &str) -> Result<(), StoreError> {
        self.with(|inner| {
            inner.sessions.remove(session_id);
            inner.events.remove(session_id);
            inner.locks.remove(session_id);
            inner.summaries.remove(session_id);
            inner.approvals.remove(session_id);
        });
        Ok(())
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn append_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), StoreError> {
        self.with(|inner| append_to_log(inner, session_id, events))
    }

    async fn append_events_with_usage(
        &self,
        session_id: &str,
        events: &[StoredEvent],
        usage: &UsageRecord,
    ) -> Result<(), StoreError> {
        self.with(|inner| {
            let key = (usage.session_id.clone(), usage.seq);
            if inner.usage.contains_key(&key) {
                return Err(StoreError::SeqConflict {
                    session_id: session_id.to_owned(),
                    seq: usage.seq,
                });
            }
            append_to_log(inner, session_id, events)?;
            inner.usage.insert(key, usage.clone());
            Ok(())
        })
    }

    async fn events_after(
        &self,
        session_id: &str,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .events
                .get(session_id)
                .map(|log| log.iter().filter(|e| e.seq > after).cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn last_seq(&self, session_id: &str) -> Result<u64, StoreError> {
        Ok(self.with(|inner| {
            inner
                .events
                .get(session_id)
                .and_then(|log| log.last())
                .map_or(0, |stored| stored.seq)
        }))
    }
}

#[async_trait]
impl RunControl for MemoryStore {
    async fn try_lock_run(
        &self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.with(|inner| match inner.locks.get(session_id) {
            Some(lock) if lock.is_live() => false,
            _ => {
                inner.locks.insert(
                    session_id.to_owned(),
                    RunLock {
                        run_id: run_id.to_owned(),
                        expires_at: lease_deadline(lease),
                        cancel_requested: false,
                    },
                );
                true
            }
        }))
    }

    async fn renew_run_lock(
        &self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.with(|inner| match inner.locks.get_mut(session_id) {
            Some(lock) if lock.run_id == run_id => {
                lock.expires_at = lease_deadline(lease);
                true
            }
            _ => false,
        }))
    }

    async fn release_run_lock(&self, session_id: &str, run_id: &str) -> Result<(), StoreError> {
        self.with(|inner| {
            if inner
                .locks
                .get(session_id)
                .is_some_and(|lock| lock.run_id == run_id)
            {
                inner.locks.remove(session_id);
            }
        });
        Ok(())
    }

    async fn run_lock(&self, session_id: &str) -> Result<Option<RunLock>, StoreError> {
        Ok(self.with(|inner| inner.locks.get(session_id).cloned()))
    }

    async fn request_cancel(&self, session_id: &str) -> Result<bool, StoreError> {
        let now = now_secs();
        Ok(self.with(|inner| match inner.locks.get_mut(session_id) {
            Some(lock) if lock.expires_at > now => {
                lock.cancel_requested = true;
                true
            }
            _ => false,
        }))
    }

    async fn claim_idempotency_key(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(self.with(|inner| {
            if let Some(existing) = inner.idempotency.get(&record.key) {
                return Some(existing.clone());
            }
            inner.idempotency.insert(record.key.clone(), record.clone());
            None
        }))
    }

    async fn get_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(self.with(|inner| inner.idempotency.get(key).cloned()))
    }

    async fn set_idempotency_first_seq(&self, key: &str, first_seq: u64) -> Result<(), StoreError> {
        self.with(|inner| {
            if let Some(record) = inner.idempotency.get_mut(key) {
                record.first_seq = Some(first_seq);
            }
        });
        Ok(())
    }

    async fn release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        self.with(|inner| inner.idempotency.remove(key));
        Ok(())
    }

    async fn put_pending_approval(&self, record: &PendingApprovalRecord) -> Result<(), StoreError> {
        self.with(|inner| {
            inner
                .approvals
                .insert(record.session_id.clone(), record.clone())
        });
        Ok(())
    }

    async fn pending_approval(
        &self,
        session_id: &str,
    ) -> Result<Option<PendingApprovalRecord>, StoreError> {
        Ok(self.with(|inner| inner.approvals.get(session_id).cloned()))
    }

    async fn due_paused_runs(
        &self,
        now: f64,
        limit: usize,
    ) -> Result<Vec<PendingApprovalRecord>, StoreError> {
        let mut due: Vec<PendingApprovalRecord> = self.with(|inner| {
            inner
                .approvals
                .values()
                .filter(|record| record.due_at <= now)
                .cloned()
                .collect()
        });
        due.sort_by(|a, b| a.due_at.total_cmp(&b.due_at));
        due.truncate(limit);
        Ok(due)
    }

    async fn take_pending_approval(
        &self,
        session_id: &str,
        approval_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            let ours = inner
                .approvals
                .get(session_id)
                .is_some_and(|record| record.approval_id == approval_id);
            if ours {
                inner.approvals.remove(session_id);
            }
            ours
        }))
    }
}

#[async_trait]
impl McpServerStore for MemoryStore {
    async fn insert_mcp_server(&self, record: &McpServerRecord) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            let key = (record.owner.clone(), record.name.clone());
            if inner.mcp_servers.contains_key(&key) {
                return false;
            }
            inner.mcp_servers.insert(key, record.clone());
            true
        }))
    }

    async fn put_mcp_server(&self, record: &McpServerRecord) -> Result<(), StoreError> {
        self.with(|inner| {
            inner
                .mcp_servers
                .insert((record.owner.clone(), record.name.clone()), record.clone())
        });
        Ok(())
    }

    async fn get_mcp_server(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<McpServerRecord>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .mcp_servers
                .get(&(owner.to_owned(), name.to_owned()))
                .cloned()
        }))
    }

    async fn list_mcp_servers(&self, owner: &str) -> Result<Vec<McpServerRecord>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .mcp_servers
                .values()
                .filter(|record| record.owner == owner)
                .cloned()
                .collect()
        }))
    }

    async fn delete_mcp_server(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            inner
                .mcp_servers
                .remove(&(owner.to_owned(), name.to_owned()))
                .is_some()
        }))
    }

    async fn put_mcp_authorization(
        &self,
        record: &McpAuthorizationRecord,
    ) -> Result<(), StoreError> {
        self.with(|inner| {
            inner
                .mcp_authorizations
                .insert(record.state.clone(), record.clone())
        });
        Ok(())
    }

    async fn take_mcp_authorization(
        &self,
        state: &str,
    ) -> Result<Option<McpAuthorizationRecord>, StoreError> {
        Ok(self.with(|inner| inner.mcp_authorizations.remove(state)))
    }

    async fn mcp_credentials(
        &self,
        owner: &str,
        server: &str,
    ) -> Result<Option<McpCredentialsRecord>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .mcp_credentials
                .get(&(owner.to_owned(), server.to_owned()))
                .cloned()
        }))
    }

    async fn put_mcp_credentials(
        &self,
        record: &McpCredentialsRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            let key = (record.owner.clone(), record.server.clone());
            let stored = inner.mcp_credentials.get(&key).map(|stored| stored.version);
            if stored != expected {
                return false;
            }
            inner.mcp_credentials.insert(key, record.clone());
            true
        }))
    }

    async fn delete_mcp_credentials(&self, owner: &str, server: &str) -> Result<(), StoreError> {
        self.with(|inner| {
            inner
                .mcp_credentials
                .remove(&(owner.to_owned(), server.to_owned()))
        });
        Ok(())
    }
}

#[async_trait]
impl UserMemoryStore for MemoryStore {
    async fn put_user_memory(&self, memory: &UserMemoryRecord) -> Result<(), StoreError> {
        self.with(|inner| {
            inner
                .user_memories
                .insert((memory.user_id.clone(), memory.key.clone()), memory.clone())
        });
        Ok(())
    }

    async fn user_memories(&self, user_id: &str) -> Result<Vec<UserMemoryRecord>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .user_memories
                .values()
                .filter(|memory| memory.user_id == user_id)
                .cloned()
                .collect()
        }))
    }

    async fn delete_user_memory(&self, user_id: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            inner
                .user_memories
                .remove(&(user_id.to_owned(), key.to_owned()))
                .is_some()
        }))
    }
}

#[async_trait]
impl SummaryStore for MemoryStore {
    async fn session_summary(&self, session_id: &str) -> Result<Option<SummaryRecord>, StoreError> {
        Ok(self.with(|inner| inner.summaries.get(session_id).cloned()))
    }

    async fn put_session_summary(
        &self,
        summary: &SummaryRecord,
        previous_seq: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            let covered = inner
                .summaries
                .get(&summary.session_id)
                .map_or(0, |stored| stored.covers_seq);
            if covered != previous_seq || !inner.sessions.contains_key(&summary.session_id) {
                return false;
            }
            inner
                .summaries
                .insert(summary.session_id.clone(), summary.clone());
            true
        }))
    }

    async fn sessions_due_for_summary(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
        Ok(self.with(|inner| {
            let mut due: Vec<(SessionRecord, u64)> = inner
                .sessions
                .values()
                .filter(|session| after.is_none_or(|after| session.session_id.as_str() > after))
                .map(|session| {
                    let covered = inner
                        .summaries
                        .get(&session.session_id)
                        .map_or(0, |stored| stored.covers_seq);
                    (session.clone(), covered)
                })
                .filter(|(session, covered)| session.log_seq > *covered)
                .collect();
            due.sort_by(|a, b| a.0.session_id.cmp(&b.0.session_id));
            due.truncate(limit);
            due
        }))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl AccountStore for MemoryStore {
    async fn insert_account(&self, account: &AccountRecord) -> Result<bool, StoreError> {
        let keys = account.login_keys();
        Ok(self.with(|inner| {
            let taken = inner.accounts.contains_key(&account.user_id)
                || inner
                    .accounts
                    .values()
                    .any(|other| other.login_keys().iter().any(|key| keys.contains(key)));
            if !taken {
                inner
                    .accounts
                    .insert(account.user_id.clone(), account.clone());
            }
            !taken
        }))
    }

    async fn account(&self, user_id: &str) -> Result<Option<AccountRecord>, StoreError> {
        Ok(self.with(|inner| inner.accounts.get(user_id).cloned()))
    }

    async fn account_by_login(&self, login: &str) -> Result<Option<AccountRecord>, StoreError> {
        let login = login.to_lowercase();
        Ok(self.with(|inner| {
            inner
                .accounts
                .values()
                .find(|account| account.login_keys().contains(&login))
                .cloned()
        }))
    }

    async fn update_account(&self, account: &AccountRecord) -> Result<bool, StoreError> {
        Ok(
            self.with(|inner| match inner.accounts.get_mut(&account.user_id) {
                Some(stored) => {
                    stored.password_hash = account.password_hash.clone();
                    stored.role = account.role.clone();
                    stored.phonenum = account.phonenum.clone();
                    stored.token_generation = account.token_generation;
                    true
                }
                None => false,
            }),
        )
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let mut accounts: Vec<AccountRecord> =
            self.with(|inner| inner.accounts.values().cloned().collect());
        accounts.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        Ok(accounts)
    }

    async fn delete_account(&self, user_id: &str) -> Result<bool, StoreError> {
        Ok(self.with(|inner| inner.accounts.remove(user_id).is_some()))
    }

    async fn put_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError> {
        self.with(|inner| {
            inner
                .refresh_tokens
                .insert(token.token_id.clone(), token.clone())
        });
        Ok(())
    }

    async fn take_refresh_token(
        &self,
        token_id: &str,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        Ok(self.with(|inner| inner.refresh_tokens.remove(token_id)))
    }

    async fn system_settings(&self) -> Result<Option<SystemSettingsRecord>, StoreError> {
        Ok(self.with(|inner| inner.system_settings.clone()))
    }

    async fn put_system_settings(&self, settings: &SystemSettingsRecord) -> Result<(), StoreError> {
        self.with(|inner| inner.system_settings = Some(settings.clone()));
        Ok(())
    }
}

#[async_trait]
impl AgentStore for MemoryStore {
    async fn insert_agent(&self, agent: &AgentRecord) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            let taken = inner.agents.contains_key(&agent.agent_id)
                || inner
                    .agents
                    .values()
                    .any(|other| other.owner == agent.owner && other.name == agent.name);
            if !taken {
                inner.agents.insert(agent.agent_id.clone(), agent.clone());
            }
            !taken
        }))
    }

    async fn replace_agent(&self, agent: &AgentRecord) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            let taken = inner.agents.values().any(|other| {
                other.owner == agent.owner
                    && other.name == agent.name
                    && other.agent_id != agent.agent_id
            });
            if !taken {
                inner.agents.insert(agent.agent_id.clone(), agent.clone());
            }
            !taken
        }))
    }

    async fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        Ok(self.with(|inner| inner.agents.get(agent_id).cloned()))
    }

    async fn owner_agents(&self, owner: &str) -> Result<Vec<AgentRecord>, StoreError> {
        let mut agents: Vec<AgentRecord> = self.with(|inner| {
            inner
                .agents
                .values()
                .filter(|agent| agent.owner == owner)
                .cloned()
                .collect()
        });
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(agents)
    }

    async fn all_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let mut agents: Vec<AgentRecord> =
            self.with(|inner| inner.agents.values().cloned().collect());
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(agents)
    }

    async fn delete_agent(&self, agent_id: &str) -> Result<bool, StoreError> {
        Ok(self.with(|inner| inner.agents.remove(agent_id).is_some()))
    }
}

#[async_trait]
impl ProviderStore for MemoryStore {
    async fn put_provider(&self, provider: &ProviderRecord) -> Result<(), StoreError> {
        self.with(|inner| {
            inner.providers.insert(
                (provider.owner.clone(), provider.provider_id.clone()),
                provider.clone(),
            )
        });
        Ok(())
    }

    async fn provider(
        &self,
        owner: &str,
        provider_id: &str,
    ) -> Result<Option<ProviderRecord>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .providers
                .get(&(owner.to_owned(), provider_id.to_owned()))
                .cloned()
        }))
    }

    async fn owner_providers(&self, owner: &str) -> Result<Vec<ProviderRecord>, StoreError> {
        let mut providers: Vec<ProviderRecord> = self.with(|inner| {
            inner
                .providers
                .values()
                .filter(|provider| provider.owner == owner)
                .cloned()
                .collect()
        });
        providers.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        Ok(providers)
    }

    async fn delete_provider(&self, owner: &str, provider_id: &str) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            inner
                .providers
                .remove(&(owner.to_owned(), provider_id.to_owned()))
                .is_some()
        }))
    }
}

#[async_trait]
impl SkillStore for MemoryStore {
    async fn put_skill(&self, skill: &SkillRecord) -> Result<bool, StoreError> {
        Ok(self.with(|inner| match inner.skills.get(&skill.name) {
            Some(stored) if stored.owner != skill.owner => false,
            _ => {
                inner.skills.insert(skill.name.clone(), skill.clone());
                true
            }
        }))
    }

    async fn skill(&self, name: &str) -> Result<Option<SkillRecord>, StoreError> {
        Ok(self.with(|inner| inner.skills.get(name).cloned()))
    }

    async fn owner_skills(&self, owner: &str) -> Result<Vec<SkillRecord>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .skills
                .values()
                .filter(|skill| skill.owner == owner)
                .cloned()
                .collect()
        }))
    }

    async fn delete_skill(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.with(|inner| inner.skills.remove(name).is_some()))
    }
}

#[async_trait]
impl KnowledgeStore for MemoryStore {
    async fn create_knowledge_base(&self, base: &KnowledgeBaseRecord) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            let key = (base.owner.clone(), base.id.clone());
            if inner
                .knowledge_bases
                .values()
                .any(|stored| stored.id == base.id)
            {
                return false;
            }
            inner.knowledge_bases.insert(
                key,
                KnowledgeBaseRecord {
                    revision: 1,
                    ..base.clone()
                },
            );
            true
        }))
    }

    async fn update_knowledge_base(&self, base: &KnowledgeBaseRecord) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            match inner
                .knowledge_bases
                .get_mut(&(base.owner.clone(), base.id.clone()))
            {
                Some(stored) if stored.revision == base.revision => {
                    *stored = KnowledgeBaseRecord {
                        revision: base.revision + 1,
                        ..base.clone()
                    };
                    true
                }
                _ => false,
            }
        }))
    }

    async fn knowledge_base(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<KnowledgeBaseRecord>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .knowledge_bases
                .get(&(owner.to_owned(), id.to_owned()))
                .cloned()
        }))
    }

    async fn owner_knowledge_bases(
        &self,
        owner: &str,
    ) -> Result<Vec<KnowledgeBaseRecord>, StoreError> {
        let mut bases: Vec<KnowledgeBaseRecord> = self.with(|inner| {
            inner
                .knowledge_bases
                .values()
                .filter(|base| base.owner == owner)
                .cloned()
                .collect()
        });
        bases.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
        Ok(bases)
    }

    async fn delete_knowledge_base(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self.with(|inner| {
            inner
                .knowledge_bases
                .remove(&(owner.to_owned(), id.to_owned()))
                .is_some()
        }))
    }

    async fn pending_knowledge_bases(
        &self,
        limit: usize,
    ) -> Result<Vec<KnowledgeBaseRecord>, StoreError> {
        let mut bases: Vec<KnowledgeBaseRecord> = self.with(|inner| {
            inner
                .knowledge_bases
                .values()
                .filter(|base| base.has_pending())
                .cloned()
                .collect()
        });
        bases.sort_by(|a, b| a.updated_at.total_cmp(&b.updated_at));
        bases.truncate(limit);
        Ok(bases)
    }
}
