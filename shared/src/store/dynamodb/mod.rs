//! The `dynamodb` store: one table, keys `pk`/`sk`, GSI `by_user` (`gsi1pk`/`gsi1sk`), TTL
//! attribute `ttl`. The item layout is written down in infra/dynamodb.md.

mod pack;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, DeleteRequest, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem, WriteRequest,
};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    AccountRecord, AccountStore, AgentRecord, AgentStore, EventLog, IdempotencyRecord,
    KnowledgeBaseRecord, KnowledgeStore, McpAuthorizationRecord, McpCredentialsRecord,
    McpServerRecord, McpServerStore, PendingApprovalRecord, ProviderRecord, ProviderStore,
    RefreshTokenRecord, RunControl, RunLock, RunStatus, SessionRecord, SessionStore, SkillRecord,
    SkillStore, Store, StoreError, SummaryRecord, SummaryStore, SystemSettingsRecord, UsageLedger,
    UsageRecord, UserMemoryRecord, UserMemoryStore, lease_deadline,
};
use crate::blob::{ObjectKey, ObjectStore};
use crate::config::StoreConfig;
use crate::util::now_secs;
use crate::wire::StoredEvent;
use crate::wire::mcp::{McpServerConfig, ToolSpec};

/// DynamoDB's item size limit.
pub const ITEM_LIMIT: usize = 400 * 1024;
const USER_INDEX: &str = "by_user";
/// Locks and idempotency keys linger this long after they stop mattering, then TTL removes them.
const TTL_GRACE_SECS: f64 = 86_400.0;

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Every page of a query's items, read consistently.
async fn every_item(query: QueryFluentBuilder) -> Result<Vec<Item>, StoreError> {
    query
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(dynamo_error)
}

fn session_pk(session_id: &str) -> String {
    format!("SESSION#{session_id}")
}

fn event_sk(seq: u64) -> String {
    format!("EVENT#{seq:012}")
}

fn dynamo_error<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StoreError::Dynamo(Box::new(error))
}

fn build_error(error: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Dynamo(Box::new(error))
}

/// `Ok(true)` when a conditional write happened, `Ok(false)` when its condition failed.
fn conditional<O, E, R>(result: Result<O, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(error)
            if error.as_service_error().and_then(|e| e.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(error) => Err(dynamo_error(error)),
    }
}

fn to_item<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    let item: Item =
        serde_dynamo::to_item(value).map_err(|error| StoreError::Mapping(Box::new(error)))?;
    check_size(&item)?;
    Ok(item)
}

fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|error| StoreError::Mapping(Box::new(error)))
}

/// DynamoDB's measure of an item: attribute names plus their values' sizes.
fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) | AttributeValue::N(text) => text.len(),
        AttributeValue::B(blob) => blob.as_ref().len(),
        AttributeValue::Ss(texts) | AttributeValue::Ns(texts) => {
            texts.iter().map(String::len).sum()
        }
        AttributeValue::M(map) => 3 + item_size(map) + map.len(),
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        _ => 1,
    }
}

fn check_size(item: &Item) -> Result<(), StoreError> {
    let size = item_size(item);
    if size > ITEM_LIMIT {
        return Err(StoreError::ItemTooLarge {
            size,
            limit: ITEM_LIMIT,
        });
    }
    Ok(())
}

/// A session's record: `SESSION#<id>` / `META`, indexed by user and last update.
#[derive(Serialize, Deserialize)]
struct SessionItem {
    pk: String,
    sk: String,
    session_id: String,
    user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_name: Option<String>,
    title: String,
    created_at: f64,
    updated_at: f64,
    message_count: u64,
    user_count: u64,
    agent_count: u64,
    #[serde(default)]
    search_text: String,
    #[serde(default)]
    status: RunStatus,
    #[serde(default)]
    log_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent_session_id: Option<String>,
    gsi1pk: String,
    gsi1sk: String,
}

impl From<&SessionRecord> for SessionItem {
    fn from(session: &SessionRecord) -> Self {
        Self {
            pk: session_pk(&session.session_id),
            sk: "META".into(),
            session_id: session.session_id.clone(),
            user_id: session.user_id.clone(),
            agent_id: session.agent_id.clone(),
            agent_name: session.agent_name.clone(),
            title: session.title.clone(),
            created_at: session.created_at,
            updated_at: session.updated_at,
            message_count: session.message_count,
            user_count: session.user_count,
            agent_count: session.agent_count,
            search_text: session.search_text.clone(),
            status: session.status,
            log_seq: session.log_seq,
            parent_session_id: session.parent_session_id.clone(),
            gsi1pk: format!("USER#{}", session.user_id),
            gsi1sk: format!("SESSION#{:020.6}", session.updated_at),
        }
    }
}

impl From<SessionItem> for SessionRecord {
    fn from(item: SessionItem) -> Self {
        Self {
            session_id: item.session_id,
            user_id: item.user_id,
            agent_id: item.agent_id,
            agent_name: item.agent_name,
            title: item.title,
            created_at: item.created_at,
            updated_at: item.updated_at,
            message_count: item.message_count,
            user_count: item.user_count,
            agent_count: item.agent_count,
            search_text: item.search_text,
            status: item.status,
            log_seq: item.log_seq,
            parent_session_id: item.parent_session_id,
        }
    }
}

fn session_item(session: &SessionRecord) -> Result<Item, StoreError> {
    to_item(&SessionItem::from(session))
}

fn session_from_item(item: Item) -> Result<SessionRecord, StoreError> {
    from_item::<SessionItem>(item).map(SessionRecord::from)
}

/// Events `seq..=last` of a session's log: `SESSION#<id>` / `EVENT#<seq, zero-padded>`.
#[derive(Serialize, Deserialize)]
struct EventItem {
    pk: String,
    sk: String,
    seq: u64,
    /// The last event of a packed item (see `pack`); absent when the item holds one event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<u64>,
    /// The event as the wire carries it, so a replay is byte-identical; empty when `packed` or
    /// `body_key` holds it.
    #[serde(default)]
    body: String,
    /// The events of a packed item, deflated (see `pack`).
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    packed: Option<Vec<u8>>,
    /// An event too large for an item: the object store key of its body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_key: Option<String>,
}

/// Bodies above this go to the object store: an item's other attributes and its key stay well
/// under DynamoDB's 400 KB limit.
const SPILL_BYTES: usize = 350 * 1024;

/// Where a session's spilled event bodies live: no session id starts with a dot.
fn spill_folder(session_id: &str) -> Result<ObjectKey, StoreError> {
    Ok(ObjectKey::parse(&format!(".events/{session_id}"))?)
}

/// A session's run lock: `SESSION#<id>` / `LOCK`.
#[derive(Serialize, Deserialize)]
struct LockItem {
    pk: String,
    sk: String,
    run_id: String,
    expires_at: f64,
    #[serde(default)]
    cancel_requested: bool,
    ttl: u64,
}

/// An `Idempotency-Key` binding: `IDEM#<user>\n<key>` / `META`.
#[derive(Serialize, Deserialize)]
struct IdempotencyItem {
    pk: String,
    sk: String,
    idem_key: String,
    request_hash: String,
    session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_seq: Option<u64>,
    created_at: f64,
    ttl: u64,
}

/// A run paused for an approval: `SESSION#<id>` / `APPROVAL`, gone with its session.
#[derive(Serialize, Deserialize)]
struct ApprovalItem {
    pk: String,
    sk: String,
    /// `PAUSED#<shard>`: the sweep's query, spread over [`PAUSED_SHARDS`] partitions (absent on
    /// items written before the sweep, like `due_at`).
    #[serde(default)]
    gsi1pk: String,
    /// `<due_at {:020.6}>#<session_id>`.
    #[serde(default)]
    gsi1sk: String,
    session_id: String,
    approval_id: String,
    user_id: String,
    created_at: f64,
    expires_at: f64,
    #[serde(default)]
    due_at: f64,
    state: String,
    ttl: u64,
}

/// The paused runs' index partitions: every checkpoint write lands in one, so they are spread
/// by session; the sweep queries each.
const PAUSED_SHARDS: u32 = 8;

fn paused_partition(session_id: &str) -> String {
    let shard = session_id.bytes().fold(0u32, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(byte.into())
    }) % PAUSED_SHARDS;
    format!("PAUSED#{shard}")
}

fn paused_run_from_item(item: Item) -> Result<PendingApprovalRecord, StoreError> {
    let item: ApprovalItem = from_item(item)?;
    Ok(PendingApprovalRecord {
        session_id: item.session_id,
        approval_id: item.approval_id,
        user_id: item.user_id,
        created_at: item.created_at,
        expires_at: item.expires_at,
        due_at: item.due_at,
        state: item.state,
    })
}

/// An MCP OAuth authorization in progress: `MCPAUTH#<state>` / `MCPAUTH`, gone after its TTL.
#[derive(Serialize, Deserialize)]
struct McpAuthorizationItem {
    pk: String,
    sk: String,
    state: String,
    owner: String,
    server: String,
    sealed: String,
    expires_at: f64,
    ttl: u64,
}

/// A user's OAuth credentials for an MCP server: `USER#<owner>` / `MCPCRED#<server>`.
#[derive(Serialize, Deserialize)]
struct McpCredentialsItem {
    pk: String,
    sk: String,
    owner: String,
    server: String,
    sealed: String,
    version: u64,
    refreshing_until: f64,
    updated_at: f64,
}

/// A registered MCP server: `USER#<owner>` / `MCP#<name>`.
#[derive(Serialize, Deserialize)]
struct McpItem {
    pk: String,
    sk: String,
    owner: String,
    name: String,
    config: McpServerConfig,
    tools: Vec<ToolSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    updated_at: f64,
}

fn mcp_item(record: &McpServerRecord) -> Result<Item, StoreError> {
    to_item(&McpItem {
        pk: format!("USER#{}", record.owner),
        sk: format!("MCP#{}", record.name),
        owner: record.owner.clone(),
        name: record.name.clone(),
        config: record.config.clone(),
        tools: record.tools.clone(),
        last_error: record.last_error.clone(),
        updated_at: record.updated_at,
    })
}

fn mcp_from_item(item: Item) -> Result<McpServerRecord, StoreError> {
    let item: McpItem = from_item(item)?;
    Ok(McpServerRecord {
        owner: item.owner,
        name: item.name,
        config: item.config,
        tools: item.tools,
        last_error: item.last_error,
        updated_at: item.updated_at,
    })
}

/// A user's memory: `USER#<user>` / `MEMORY#<key>`.
#[derive(Serialize, Deserialize)]
struct UserMemoryItem {
    pk: String,
    sk: String,
    user_id: String,
    memory_key: String,
    content: String,
    memory_type: String,
    tags: Vec<String>,
    created_at: f64,
    updated_at: f64,
}

fn user_memory_item(memory: &UserMemoryRecord) -> Result<Item, StoreError> {
    to_item(&UserMemoryItem {
        pk: format!("USER#{}", memory.user_id),
        sk: format!("MEMORY#{}", memory.key),
        user_id: memory.user_id.clone(),
        memory_key: memory.key.clone(),
        content: memory.content.clone(),
        memory_type: memory.memory_type.clone(),
        tags: memory.tags.clone(),
        created_at: memory.created_at,
        updated_at: memory.updated_at,
    })
}

fn user_memory_from_item(item: Item) -> Result<UserMemoryRecord, StoreError> {
    let item: UserMemoryItem = from_item(item)?;
    Ok(UserMemoryRecord {
        user_id: item.user_id,
        key: item.memory_key,
        content: item.content,
        memory_type: item.memory_type,
        tags: item.tags,
        created_at: item.created_at,
        updated_at: item.updated_at,
    })
}

/// A session's summary: `SESSION#<id>` / `SUMMARY`.
#[derive(Serialize, Deserialize)]
struct SummaryItem {
    pk: String,
    sk: String,
    session_id: String,
    summary: String,
    covers_seq: u64,
    created_at: f64,
}

fn summary_from_item(item: Item) -> Result<SummaryRecord, StoreError> {
    let item: SummaryItem = from_item(item)?;
    Ok(SummaryRecord {
        session_id: item.session_id,
        summary: item.summary,
        covers_seq: item.covers_seq,
        created_at: item.created_at,
    })
}

/// An account: `ACCOUNT#<user_id>` / `ACCOUNT`, in the index under `gsi1pk = ACCOUNTS` so the
/// admin's list is one query. Each login key (lowercase username, email) has its own item,
/// `LOGIN#<key>` / `LOGIN`, written in the same transaction, which is what keeps them unique.
#[derive(Serialize, Deserialize)]
struct AccountItem {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    user_id: String,
    username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phonenum: Option<String>,
    role: String,
    password_hash: String,
    token_generation: u64,
    created_at: f64,
}

const ACCOUNTS: &str = "ACCOUNTS";

fn account_pk(user_id: &str) -> String {
    format!("ACCOUNT#{user_id}")
}

fn login_pk(login_key: &str) -> String {
    format!("LOGIN#{login_key}")
}

fn account_item(account: &AccountRecord) -> Result<Item, StoreError> {
    to_item(&AccountItem {
        pk: account_pk(&account.user_id),
        sk: "ACCOUNT".into(),
        gsi1pk: ACCOUNTS.into(),
        gsi1sk: format!("ACCOUNT#{:020.6}#{}", account.created_at, account.user_id),
        user_id: account.user_id.clone(),
        username: account.username.clone(),
        email: account.email.clone(),
        phonenum: account.phonenum.clone(),
        role: account.role.clone(),
        password_hash: account.password_hash.clone(),
        token_generation: account.token_generation,
        created_at: account.created_at,
    })
}

fn account_from_item(item: Item) -> Result<AccountRecord, StoreError> {
    let item: AccountItem = from_item(item)?;
    Ok(AccountRecord {
        user_id: item.user_id,
        username: item.username,
        email: item.email,
        phonenum: item.phonenum,
        role: item.role,
        password_hash: item.password_hash,
        token_generation: item.token_generation,
        created_at: item.created_at,
    })
}

/// A saved agent: `AGENT#<agent_id>` / `AGENT`, in the index under `gsi1pk = AGENTS` and
/// `gsi1sk = <owner>#<name>#<agent_id>` (an owner's agents are one prefix query, all of them
/// one query); its name is held by `AGENTNAME#<owner>#<name>` / `AGENTNAME`, written in
/// the same transaction, which keeps names unique per owner. `config` is the client's JSON.
#[derive(Serialize, Deserialize)]
struct AgentItem {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    agent_id: String,
    owner: String,
    name: String,
    config: String,
    created_at: f64,
    updated_at: f64,
}

fn agent_pk(agent_id: &str) -> String {
    format!("AGENT#{agent_id}")
}

fn agent_name_pk(owner: &str, name: &str) -> String {
    format!("AGENTNAME#{owner}#{name}")
}

fn agent_item(agent: &AgentRecord) -> Result<Item, StoreError> {
    to_item(&AgentItem {
        pk: agent_pk(&agent.agent_id),
        sk: "AGENT".into(),
        gsi1pk: "AGENTS".into(),
        gsi1sk: format!("{}#{}#{}", agent.owner, agent.name, agent.agent_id),
        agent_id: agent.agent_id.clone(),
        owner: agent.owner.clone(),
        name: agent.name.clone(),
        config: serde_json::to_string(&agent.config)?,
        created_at: agent.created_at,
        updated_at: agent.updated_at,
    })
}

fn agent_from_item(item: Item) -> Result<AgentRecord, StoreError> {
    let item: AgentItem = from_item(item)?;
    Ok(AgentRecord {
        agent_id: item.agent_id,
        owner: item.owner,
        name: item.name,
        config: serde_json::from_str(&item.config)?,
        created_at: item.created_at,
        updated_at: item.updated_at,
    })
}

/// A skill: `SKILL#<name>` / `SKILL` (names are unique across owners), listed per owner by
/// `gsi1pk` `SKILLS#<owner>`; `package` is the instructions and files as JSON.
#[derive(Serialize, Deserialize)]
struct SkillItem {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    name: String,
    owner: String,
    description: String,
    package: String,
    created_at: f64,
    updated_at: f64,
}

fn skill_pk(name: &str) -> String {
    format!("SKILL#{name}")
}

fn skill_from_item(item: Item) -> Result<SkillRecord, StoreError> {
    let item: SkillItem = from_item(item)?;
    Ok(SkillRecord {
        name: item.name,
        owner: item.owner,
        description: item.description,
        package: serde_json::from_str(&item.package)?,
        created_at: item.created_at,
        updated_at: item.updated_at,
    })
}

/// A knowledge base and its documents: `USER#<owner>` / `KB#<id>`; while a document waits for
/// indexing, in the index under `gsi1pk = KB_PENDING` (the attributes are absent otherwise).
#[derive(Serialize, Deserialize)]
struct KnowledgeBaseItem {
    pk: String,
    sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
    id: String,
    owner: String,
    name: String,
    kind: String,
    intro: String,
    language: String,
    documents: String,
    revision: u64,
    created_at: f64,
    updated_at: f64,
}

const KB_PENDING: &str = "KB_PENDING";

fn knowledge_base_item(base: &KnowledgeBaseRecord, revision: u64) -> Result<Item, StoreError> {
    let pending = base.has_pending();
    to_item(&KnowledgeBaseItem {
        pk: format!("USER#{}", base.owner),
        sk: format!("KB#{}", base.id),
        gsi1pk: pending.then(|| KB_PENDING.to_owned()),
        gsi1sk: pending.then(|| format!("{:020.6}#{}", base.updated_at, base.id)),
        id: base.id.clone(),
        owner: base.owner.clone(),
        name: base.name.clone(),
        kind: base.kind.clone(),
        intro: base.intro.clone(),
        language: base.language.clone(),
        documents: serde_json::to_string(&base.documents)?,
        revision,
        created_at: base.created_at,
        updated_at: base.updated_at,
    })
}

fn knowledge_base_from_item(item: Item) -> Result<KnowledgeBaseRecord, StoreError> {
    let item: KnowledgeBaseItem = from_item(item)?;
    Ok(KnowledgeBaseRecord {
        id: item.id,
        owner: item.owner,
        name: item.name,
        kind: item.kind,
        intro: item.intro,
        language: item.language,
        documents: serde_json::from_str(&item.documents)?,
        revision: item.revision,
        created_at: item.created_at,
        updated_at: item.updated_at,
    })
}

/// A user's LLM provider: `USER#<owner>` / `PROVIDER#<provider_id>`; `config` is the client's
/// JSON without the keys, `sealed_keys` the encrypted keys.
#[derive(Serialize, Deserialize)]
struct ProviderItem {
    pk: String,
    sk: String,
    provider_id: String,
    owner: String,
    config: String,
    sealed_keys: String,
    created_at: f64,
    updated_at: f64,
}

fn provider_from_item(item: Item) -> Result<ProviderRecord, StoreError> {
    let item: ProviderItem = from_item(item)?;
    Ok(ProviderRecord {
        provider_id: item.provider_id,
        owner: item.owner,
        config: serde_json::from_str(&item.config)?,
        sealed_keys: item.sealed_keys,
        created_at: item.created_at,
        updated_at: item.updated_at,
    })
}

/// An unused refresh token: `REFRESH#<token_id>` / `REFRESH`, removed by TTL after it expires.
#[derive(Serialize, Deserialize)]
struct RefreshTokenItem {
    pk: String,
    sk: String,
    token_id: String,
    user_id: String,
    expires_at: f64,
    ttl: u64,
}

fn key(pk: String, sk: &str) -> Item {
    Item::from([("pk".into(), s(pk)), ("sk".into(), s(sk))])
}

pub struct DynamoStore {
    client: Client,
    table: String,
    spill: Option<Arc<dyn ObjectStore>>,
}

impl DynamoStore {
    /// Builds the client from the environment (region, credentials) and warms its connection.
    /// With an endpoint override (DynamoDB Local, moto) the table is created when missing.
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        let mut loader = crate::util::tls::aws_config_loader();
        if let Some(endpoint) = &config.dynamodb_endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let store = Self::with_client(
            Client::new(&crate::util::tls::load_aws_config(loader).await),
            &config.dynamodb_table,
        );
        if config.dynamodb_endpoint.is_some() {
            store.create_table().await?;
        }
        store.ping().await?;
        Ok(store)
    }

    pub fn with_client(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
            spill: None,
        }
    }

    /// Events too large for an item are kept in `objects`, the item holding their key.
    pub fn with_spill(mut self, objects: Arc<dyn ObjectStore>) -> Self {
        self.spill = Some(objects);
        self
    }

    /// Puts a body too large for an item in the object store; returns its key.
    async fn spill_body(
        &self,
        objects: &Arc<dyn ObjectStore>,
        session_id: &str,
        seq: u64,
        body: String,
    ) -> Result<String, StoreError> {
        // A unique key: a batch that loses its sequence numbers to another writer leaves an
        // orphan, never overwrites the winner's body.
        let key = spill_folder(session_id)?
            .join(&format!("{seq:012}-{}.json", uuid::Uuid::new_v4().simple()))?;
        objects.put(&key, body.into()).await?;
        Ok(key.to_string())
    }

    /// The batch as items, each with its first sequence number: small events packed together, a
    /// huge one's body in the object store.
    async fn event_items(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<Vec<(u64, Item)>, StoreError> {
        let mut bodies = Vec::with_capacity(events.len());
        for stored in events {
            bodies.push((stored.seq, stored.json().to_owned()));
        }
        let mut items = Vec::new();
        for pack::Pack { first, last, body } in pack::pack(bodies) {
            let (body, packed, body_key) = match (body, self.spill.as_ref()) {
                (pack::PackBody::Deflated(bytes), _) => (String::new(), Some(bytes), None),
                (pack::PackBody::Plain(body), Some(objects)) if body.len() > SPILL_BYTES => {
                    let key = self.spill_body(objects, session_id, first, body).await?;
                    (String::new(), None, Some(key))
                }
                (pack::PackBody::Plain(body), _) => (body, None, None),
            };
            let item = to_item(&EventItem {
                pk: session_pk(session_id),
                sk: event_sk(first),
                seq: first,
                last: (last != first).then_some(last),
                body,
                packed,
                body_key,
            })?;
            items.push((first, item));
        }
        Ok(items)
    }

    async fn read_spilled(&self, key: &str) -> Result<String, StoreError> {
        let objects = self.spill.as_ref().ok_or_else(|| {
            StoreError::Config(format!(
                "event body {key} is in the object store, which this store was not given"
            ))
        })?;
        let key = ObjectKey::parse(key)?;
        let read = objects.get(&key).await?.ok_or_else(|| {
            StoreError::Mapping(format!("the event body {key} is missing").into())
        })?;
        let mut bytes = Vec::with_capacity(read.info.size as usize);
        let mut body = read.body;
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        String::from_utf8(bytes).map_err(|error| StoreError::Mapping(Box::new(error)))
    }

    /// Creates the table as template.yaml declares it; an existing table is left alone.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)
        };
        let key_element = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build_error)
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(USER_INDEX)
            .key_schema(key_element("gsi1pk", KeyType::Hash)?)
            .key_schema(key_element("gsi1sk", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(build_error)?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .attribute_definitions(attribute("gsi1pk")?)
            .attribute_definitions(attribute("gsi1sk")?)
            .key_schema(key_element("pk", KeyType::Hash)?)
            .key_schema(key_element("sk", KeyType::Range)?)
            .global_secondary_indexes(index)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                return Ok(());
            }
            Err(error) => return Err(dynamo_error(error)),
        }
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name("ttl")
            .build()
            .map_err(build_error)?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(())
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(output.item)
    }

    /// Deletes the item and returns what it held; `None` when there was none. Of two callers
    /// racing to delete the same item, only one gets it.
    async fn delete_returning(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(output.attributes.filter(|old| !old.is_empty()))
    }

    /// Every item under one partition key whose sort key starts with `prefix`.
    async fn query_prefix(&self, pk: String, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut query = self.client.query().table_name(&self.table);
        query = if prefix.is_empty() {
            query.key_condition_expression("pk = :pk")
        } else {
            query
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":prefix", s(prefix))
        };
        every_item(query.expression_attribute_values(":pk", s(pk))).await
    }

    /// The partition's items with a sort key in `from..=to`, read consistently.
    async fn query_range(
        &self,
        pk: String,
        from: String,
        to: String,
    ) -> Result<Vec<Item>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(to));
        every_item(query).await
    }

    /// Puts the item when `condition` holds; false when it did not.
    async fn put_when(&self, item: Item, condition: &str) -> Result<bool, StoreError> {
        check_size(&item)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .send()
            .await;
        conditional(result)
    }

    async fn put_if_absent(&self, item: Item) -> Result<bool, StoreError> {
        self.put_when(item, "attribute_not_exists(pk)").await
    }

    async fn put(&self, item: Item) -> Result<(), StoreError> {
        check_size(&item)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.get(session_pk(session_id), "META")
            .await?
            .map(session_from_item)
            .transpose()
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<SessionRecord, StoreError> {
        self.put_if_absent(session_item(session)?).await?;
        Ok(self
            .get_session(&session.session_id)
            .await?
            .unwrap_or_else(|| session.clone()))
    }

    async fn update_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.put_when(session_item(session)?, "attribute_exists(pk)")
            .await
            .map(|_| ())
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(USER_INDEX)
            .key_condition_expression("gsi1pk = :user")
            .expression_attribute_values(":user", s(format!("USER#{user_id}")))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(dynamo_error)?;
        items.into_iter().map(session_from_item).collect()
    }

    async fn delete_session(&self, session_id: &str) -> Result<(), StoreError> {
        if let Some(objects) = &self.spill {
            objects.delete_prefix(&spill_folder(session_id)?).await?;
        }
        let items = self.query_prefix(session_pk(session_id), "").await?;
        for chunk in items.chunks(25) {
            let deletes = chunk
                .iter()
                .map(|item| {
                    let key = Item::from([
                        ("pk".into(), item["pk"].clone()),
                        ("sk".into(), item["sk"].clone()),
                    ]);
                    DeleteRequest::builder()
                        .set_key(Some(key))
                        .build()
                        .map(|delete| WriteRequest::builder().delete_request(delete).build())
                        .map_err(build_error)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut pending = HashMap::from([(self.table.clone(), deletes)]);
            while !pending.is_empty() {
                let output = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(dynamo_error)?;
                pending = output.unprocessed_items.unwrap_or_default();
                pending.retain(|_, requests| !requests.is_empty());
            }
        }
        Ok(())
    }
}

/// A run's usage: `USAGE#<user_id>` / `<day>#<session_id>#<seq>`, and in the index under
/// `gsi1pk = USAGE` by day, so one user's days and the admin's view over everyone are queries.
#[derive(Serialize, Deserialize)]
struct UsageItem {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    #[serde(flatten)]
    usage: UsageRecord,
}

const USAGE: &str = "USAGE";

fn usage_pk(user_id: &str) -> String {
    format!("USAGE#{user_id}")
}

fn usage_item(usage: &UsageRecord) -> Result<Item, StoreError> {
    let key = format!("{}#{}", usage.session_id, event_sk(usage.seq));
    to_item(&UsageItem {
        pk: usage_pk(&usage.user_id),
        sk: format!("{}#{key}", usage.day),
        gsi1pk: USAGE.into(),
        gsi1sk: format!("{}#{}#{key}", usage.day, usage.user_id),
        usage: usage.clone(),
    })
}

fn usage_from_item(item: Item) -> Result<UsageRecord, StoreError> {
    Ok(from_item::<UsageItem>(item)?.usage)
}

impl DynamoStore {
    /// Writes the events, 100 items per transaction at most, with `usage` in the last one. A
    /// batch that fits one item and carries no usage is a plain conditional put, which costs
    /// half the write units of a transaction.
    async fn put_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
        usage: Option<&UsageRecord>,
    ) -> Result<(), StoreError> {
        let conflict = |seq: u64| StoreError::SeqConflict {
            session_id: session_id.to_owned(),
            seq,
        };
        let items = self.event_items(session_id, events).await?;
        if usage.is_none() && items.len() <= 1 {
            let Some((seq, item)) = items.into_iter().next() else {
                return Ok(());
            };
            return match self.put_if_absent(item).await? {
                true => Ok(()),
                false => Err(conflict(seq)),
            };
        }
        let mut remaining = items.into_iter().peekable();
        loop {
            let chunk: Vec<(u64, Item)> = remaining.by_ref().take(99).collect();
            let is_last = remaining.peek().is_none();
            let chunk_seq = chunk.first().map_or(0, |(seq, _)| *seq);
            let mut writes = chunk
                .into_iter()
                .map(|(_, item)| self.put_new(item))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(usage) = usage.filter(|_| is_last) {
                writes.push(self.put_new(usage_item(usage)?)?);
            }
            if !writes.is_empty() && !self.transact(writes).await? {
                return Err(conflict(chunk_seq));
            }
            if is_last {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl UsageLedger for DynamoStore {
    async fn user_usage(
        &self,
        user_id: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let items = self
            .query_range(usage_pk(user_id), format!("{from}#"), format!("{to}#~"))
            .await?;
        items.into_iter().map(usage_from_item).collect()
    }

    async fn all_usage(&self, from: &str, to: &str) -> Result<Vec<UsageRecord>, StoreError> {
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(USER_INDEX)
            .key_condition_expression("gsi1pk = :usage AND gsi1sk BETWEEN :from AND :to")
            .expression_attribute_values(":usage", s(USAGE))
            .expression_attribute_values(":from", s(format!("{from}#")))
            .expression_attribute_values(":to", s(format!("{to}#~")))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(dynamo_error)?;
        items.into_iter().map(usage_from_item).collect()
    }
}

#[async_trait]
impl EventLog for DynamoStore {
    async fn append_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), StoreError> {
        self.put_events(session_id, events, None).await
    }

    async fn append_events_with_usage(
        &self,
        session_id: &str,
        events: &[StoredEvent],
        usage: &UsageRecord,
    ) -> Result<(), StoreError> {
        self.put_events(session_id, events, Some(usage)).await
    }

    async fn events_after(
        &self,
        session_id: &str,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // The item holding `after + 1` may begin up to a pack's length before it.
        let items = self
            .query_range(
                session_pk(session_id),
                event_sk(pack::earliest_item_holding(after + 1)),
                "EVENT#~".into(),
            )
            .await?;
        let mut events = Vec::with_capacity(items.len());
        for item in items {
            let item: EventItem = from_item(item)?;
            let last = item.last.unwrap_or(item.seq);
            if last <= after {
                continue;
            }
            let body = match (item.packed, &item.body_key) {
                (Some(bytes), _) => pack::PackBody::Deflated(bytes),
                (None, Some(key)) => pack::PackBody::Plain(self.read_spilled(key).await?),
                (None, None) => pack::PackBody::Plain(item.body),
            };
            let lines = pack::unpack(item.seq, last, body).ok_or_else(|| {
                StoreError::Mapping(
                    format!(
                        "the event item at {} does not hold events {}..={last}",
                        item.seq, item.seq
                    )
                    .into(),
                )
            })?;
            for (seq, line) in lines.into_iter().filter(|(seq, _)| *seq > after) {
                events.push(StoredEvent::from_json(seq, &line)?);
            }
        }
        Ok(events)
    }

    async fn last_seq(&self, session_id: &str) -> Result<u64, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(session_pk(session_id)))
            .expression_attribute_values(":prefix", s("EVENT#"))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        match output.items.unwrap_or_default().into_iter().next() {
            Some(item) => {
                let item = from_item::<EventItem>(item)?;
                Ok(item.last.unwrap_or(item.seq))
            }
            None => Ok(0),
        }
    }
}

#[async_trait]
impl RunControl for DynamoStore {
    async fn try_lock_run(
        &self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let expires_at = lease_deadline(lease);
        let item = to_item(&LockItem {
            pk: session_pk(session_id),
            sk: "LOCK".into(),
            run_id: run_id.to_owned(),
            expires_at,
            cancel_requested: false,
            ttl: (expires_at + TTL_GRACE_SECS) as u64,
        })?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", n(now_secs()))
            .send()
            .await;
        conditional(result)
    }

    async fn renew_run_lock(
        &self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let expires_at = lease_deadline(lease);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(session_pk(session_id), "LOCK")))
            .update_expression("SET expires_at = :expires, #ttl = :ttl")
            .condition_expression("run_id = :me")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":expires", n(expires_at))
            .expression_attribute_values(":ttl", n((expires_at + TTL_GRACE_SECS) as u64))
            .expression_attribute_values(":me", s(run_id))
            .send()
            .await;
        conditional(result)
    }

    async fn release_run_lock(&self, session_id: &str, run_id: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(session_pk(session_id), "LOCK")))
            .condition_expression("run_id = :me")
            .expression_attribute_values(":me", s(run_id))
            .send()
            .await;
        conditional(result).map(|_| ())
    }

    async fn run_lock(&self, session_id: &str) -> Result<Option<RunLock>, StoreError> {
        let Some(item) = self.get(session_pk(session_id), "LOCK").await? else {
            return Ok(None);
        };
        let item: LockItem = from_item(item)?;
        Ok(Some(RunLock {
            run_id: item.run_id,
            expires_at: item.expires_at,
            cancel_requested: item.cancel_requested,
        }))
    }

    async fn request_cancel(&self, session_id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(session_pk(session_id), "LOCK")))
            .update_expression("SET cancel_requested = :yes")
            .condition_expression("attribute_exists(pk) AND expires_at > :now")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":now", n(now_secs()))
            .send()
            .await;
        conditional(result)
    }

    async fn claim_idempotency_key(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let item = to_item(&IdempotencyItem {
            pk: format!("IDEM#{}", record.key),
            sk: "META".into(),
            idem_key: record.key.clone(),
            request_hash: record.request_hash.clone(),
            session_id: record.session_id.clone(),
            first_seq: record.first_seq,
            created_at: record.created_at,
            ttl: (record.created_at + TTL_GRACE_SECS) as u64,
        })?;
        if self.put_if_absent(item).await? {
            return Ok(None);
        }
        self.get_idempotency_key(&record.key).await
    }

    async fn get_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(item) = self.get(format!("IDEM#{key}"), "META").await? else {
            return Ok(None);
        };
        let item: IdempotencyItem = from_item(item)?;
        Ok(Some(IdempotencyRecord {
            key: item.idem_key,
            request_hash: item.request_hash,
            session_id: item.session_id,
            first_seq: item.first_seq,
            created_at: item.created_at,
        }))
    }

    async fn set_idempotency_first_seq(
        &self,
        key_text: &str,
        first_seq: u64,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("IDEM#{key_text}"), "META")))
            .update_expression("SET first_seq = :seq")
            .expression_attribute_values(":seq", n(first_seq))
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(())
    }

    async fn release_idempotency_key(&self, key_text: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("IDEM#{key_text}"), "META")))
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(())
    }

    async fn put_pending_approval(&self, record: &PendingApprovalRecord) -> Result<(), StoreError> {
        let item = to_item(&ApprovalItem {
            pk: session_pk(&record.session_id),
            sk: "APPROVAL".into(),
            gsi1pk: paused_partition(&record.session_id),
            gsi1sk: format!("{:020.6}#{}", record.due_at, record.session_id),
            session_id: record.session_id.clone(),
            approval_id: record.approval_id.clone(),
            user_id: record.user_id.clone(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            due_at: record.due_at,
            state: record.state.clone(),
            ttl: (record.expires_at + TTL_GRACE_SECS) as u64,
        })?;
        self.put(item).await
    }

    async fn pending_approval(
        &self,
        session_id: &str,
    ) -> Result<Option<PendingApprovalRecord>, StoreError> {
        self.get(session_pk(session_id), "APPROVAL")
            .await?
            .map(paused_run_from_item)
            .transpose()
    }

    async fn due_paused_runs(
        &self,
        now: f64,
        limit: usize,
    ) -> Result<Vec<PendingApprovalRecord>, StoreError> {
        let up_to = s(format!("{now:020.6}#~"));
        let queries = (0..PAUSED_SHARDS).map(|shard| {
            self.client
                .query()
                .table_name(&self.table)
                .index_name(USER_INDEX)
                .key_condition_expression("gsi1pk = :paused AND gsi1sk <= :now")
                .expression_attribute_values(":paused", s(format!("PAUSED#{shard}")))
                .expression_attribute_values(":now", up_to.clone())
                .limit(limit.min(1000) as i32)
                .send()
        });
        let mut due = Vec::new();
        for page in futures_util::future::try_join_all(queries)
            .await
            .map_err(dynamo_error)?
        {
            for item in page.items.unwrap_or_default() {
                due.push(paused_run_from_item(item)?);
            }
        }
        due.sort_by(|a, b| a.due_at.total_cmp(&b.due_at));
        due.truncate(limit);
        Ok(due)
    }

    async fn take_pending_approval(
        &self,
        session_id: &str,
        approval_id: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(session_pk(session_id), "APPROVAL")))
            .condition_expression("approval_id = :id")
            .expression_attribute_values(":id", AttributeValue::S(approval_id.to_owned()))
            .send()
            .await;
        conditional(result)
    }
}

#[async_trait]
impl McpServerStore for DynamoStore {
    async fn insert_mcp_server(&self, record: &McpServerRecord) -> Result<bool, StoreError> {
        self.put_if_absent(mcp_item(record)?).await
    }

    async fn put_mcp_server(&self, record: &McpServerRecord) -> Result<(), StoreError> {
        self.put(mcp_item(record)?).await
    }

    async fn get_mcp_server(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<McpServerRecord>, StoreError> {
        self.get(format!("USER#{owner}"), &format!("MCP#{name}"))
            .await?
            .map(mcp_from_item)
            .transpose()
    }

    async fn list_mcp_servers(&self, owner: &str) -> Result<Vec<McpServerRecord>, StoreError> {
        let items = self.query_prefix(format!("USER#{owner}"), "MCP#").await?;
        items.into_iter().map(mcp_from_item).collect()
    }

    async fn delete_mcp_server(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .delete_returning(format!("USER#{owner}"), &format!("MCP#{name}"))
            .await?
            .is_some())
    }

    async fn put_mcp_authorization(
        &self,
        record: &McpAuthorizationRecord,
    ) -> Result<(), StoreError> {
        self.put(to_item(&McpAuthorizationItem {
            pk: format!("MCPAUTH#{}", record.state),
            sk: "MCPAUTH".into(),
            state: record.state.clone(),
            owner: record.owner.clone(),
            server: record.server.clone(),
            sealed: record.sealed.clone(),
            expires_at: record.expires_at,
            ttl: (record.expires_at + TTL_GRACE_SECS) as u64,
        })?)
        .await
    }

    async fn take_mcp_authorization(
        &self,
        state: &str,
    ) -> Result<Option<McpAuthorizationRecord>, StoreError> {
        let Some(old) = self
            .delete_returning(format!("MCPAUTH#{state}"), "MCPAUTH")
            .await?
        else {
            return Ok(None);
        };
        let item: McpAuthorizationItem = from_item(old)?;
        Ok(Some(McpAuthorizationRecord {
            state: item.state,
            owner: item.owner,
            server: item.server,
            sealed: item.sealed,
            expires_at: item.expires_at,
        }))
    }

    async fn mcp_credentials(
        &self,
        owner: &str,
        server: &str,
    ) -> Result<Option<McpCredentialsRecord>, StoreError> {
        let Some(item) = self
            .get(format!("USER#{owner}"), &format!("MCPCRED#{server}"))
            .await?
        else {
            return Ok(None);
        };
        let item: McpCredentialsItem = from_item(item)?;
        Ok(Some(McpCredentialsRecord {
            owner: item.owner,
            server: item.server,
            sealed: item.sealed,
            version: item.version,
            refreshing_until: item.refreshing_until,
            updated_at: item.updated_at,
        }))
    }

    async fn put_mcp_credentials(
        &self,
        record: &McpCredentialsRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let item = to_item(&McpCredentialsItem {
            pk: format!("USER#{}", record.owner),
            sk: format!("MCPCRED#{}", record.server),
            owner: record.owner.clone(),
            server: record.server.clone(),
            sealed: record.sealed.clone(),
            version: record.version,
            refreshing_until: record.refreshing_until,
            updated_at: record.updated_at,
        })?;
        let Some(version) = expected else {
            return self.put_if_absent(item).await;
        };
        check_size(&item)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("version = :version")
            .expression_attribute_values(":version", AttributeValue::N(version.to_string()))
            .send()
            .await;
        conditional(result)
    }

    async fn delete_mcp_credentials(&self, owner: &str, server: &str) -> Result<(), StoreError> {
        self.delete_returning(format!("USER#{owner}"), &format!("MCPCRED#{server}"))
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl UserMemoryStore for DynamoStore {
    async fn put_user_memory(&self, memory: &UserMemoryRecord) -> Result<(), StoreError> {
        self.put(user_memory_item(memory)?).await
    }

    async fn user_memories(&self, user_id: &str) -> Result<Vec<UserMemoryRecord>, StoreError> {
        let items = self
            .query_prefix(format!("USER#{user_id}"), "MEMORY#")
            .await?;
        items.into_iter().map(user_memory_from_item).collect()
    }

    async fn delete_user_memory(&self, user_id: &str, key_text: &str) -> Result<bool, StoreError> {
        Ok(self
            .delete_returning(format!("USER#{user_id}"), &format!("MEMORY#{key_text}"))
            .await?
            .is_some())
    }
}

impl DynamoStore {
    /// Runs the writes as one transaction; false when one of their conditions failed.
    async fn transact(&self, writes: Vec<TransactWriteItem>) -> Result<bool, StoreError> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_transaction_canceled_exception()) =>
            {
                Ok(false)
            }
            Err(error) => Err(dynamo_error(error)),
        }
    }

    fn put_new(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn delete_write(&self, pk: String, sk: &str) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }
}

#[async_trait]
impl AccountStore for DynamoStore {
    async fn insert_account(&self, account: &AccountRecord) -> Result<bool, StoreError> {
        let mut writes = vec![self.put_new(account_item(account)?)?];
        for login_key in account.login_keys() {
            let item = Item::from([
                ("pk".into(), s(login_pk(&login_key))),
                ("sk".into(), s("LOGIN")),
                ("user_id".into(), s(&account.user_id)),
            ]);
            writes.push(self.put_new(item)?);
        }
        self.transact(writes).await
    }

    async fn account(&self, user_id: &str) -> Result<Option<AccountRecord>, StoreError> {
        self.get(account_pk(user_id), "ACCOUNT")
            .await?
            .map(account_from_item)
            .transpose()
    }

    async fn account_by_login(&self, login: &str) -> Result<Option<AccountRecord>, StoreError> {
        let Some(login_item) = self.get(login_pk(&login.to_lowercase()), "LOGIN").await? else {
            return Ok(None);
        };
        let Some(AttributeValue::S(user_id)) = login_item.get("user_id") else {
            return Err(StoreError::Mapping("login item without user_id".into()));
        };
        self.account(user_id).await
    }

    async fn update_account(&self, account: &AccountRecord) -> Result<bool, StoreError> {
        let Some(stored) = self.account(&account.user_id).await? else {
            return Ok(false);
        };
        let updated = AccountRecord {
            password_hash: account.password_hash.clone(),
            role: account.role.clone(),
            phonenum: account.phonenum.clone(),
            token_generation: account.token_generation,
            ..stored
        };
        self.put_when(account_item(&updated)?, "attribute_exists(pk)")
            .await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(USER_INDEX)
            .key_condition_expression("gsi1pk = :accounts")
            .expression_attribute_values(":accounts", s(ACCOUNTS))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(dynamo_error)?;
        items.into_iter().map(account_from_item).collect()
    }

    async fn delete_account(&self, user_id: &str) -> Result<bool, StoreError> {
        let Some(account) = self.account(user_id).await? else {
            return Ok(false);
        };
        let mut writes = vec![self.delete_write(account_pk(user_id), "ACCOUNT")?];
        for login_key in account.login_keys() {
            writes.push(self.delete_write(login_pk(&login_key), "LOGIN")?);
        }
        self.transact(writes).await
    }

    async fn put_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError> {
        self.put(to_item(&RefreshTokenItem {
            pk: format!("REFRESH#{}", token.token_id),
            sk: "REFRESH".into(),
            token_id: token.token_id.clone(),
            user_id: token.user_id.clone(),
            expires_at: token.expires_at,
            ttl: (token.expires_at + TTL_GRACE_SECS) as u64,
        })?)
        .await
    }

    async fn take_refresh_token(
        &self,
        token_id: &str,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        match self
            .delete_returning(format!("REFRESH#{token_id}"), "REFRESH")
            .await?
        {
            None => Ok(None),
            Some(old) => {
                let item: RefreshTokenItem = from_item(old)?;
                Ok(Some(RefreshTokenRecord {
                    token_id: item.token_id,
                    user_id: item.user_id,
                    expires_at: item.expires_at,
                }))
            }
        }
    }

    async fn system_settings(&self) -> Result<Option<SystemSettingsRecord>, StoreError> {
        let Some(item) = self.get("SYSTEM".into(), "SETTINGS").await? else {
            return Ok(None);
        };
        match item.get("body") {
            Some(AttributeValue::S(body)) => Ok(Some(serde_json::from_str(body)?)),
            _ => Err(StoreError::Mapping("settings item without body".into())),
        }
    }

    async fn put_system_settings(&self, settings: &SystemSettingsRecord) -> Result<(), StoreError> {
        self.put(Item::from([
            ("pk".into(), s("SYSTEM")),
            ("sk".into(), s("SETTINGS")),
            ("body".into(), s(serde_json::to_string(settings)?)),
        ]))
        .await
    }
}

#[async_trait]
impl SummaryStore for DynamoStore {
    async fn session_summary(&self, session_id: &str) -> Result<Option<SummaryRecord>, StoreError> {
        self.get(session_pk(session_id), "SUMMARY")
            .await?
            .map(summary_from_item)
            .transpose()
    }

    async fn put_session_summary(
        &self,
        summary: &SummaryRecord,
        previous_seq: u64,
    ) -> Result<bool, StoreError> {
        let item = to_item(&SummaryItem {
            pk: session_pk(&summary.session_id),
            sk: "SUMMARY".into(),
            session_id: summary.session_id.clone(),
            summary: summary.summary.clone(),
            covers_seq: summary.covers_seq,
            created_at: summary.created_at,
        })?;
        check_size(&item)?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let put = if previous_seq == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("covers_seq = :previous")
                .expression_attribute_values(":previous", n(previous_seq))
        };
        conditional(put.send().await)
    }

    /// A scan of the table (sessions' records and summaries only are kept): fine for a
    /// scheduled job over a modest table; a sparse index would replace it at scale.
    async fn sessions_due_for_summary(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
        let items: Vec<Item> = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("(sk = :meta AND log_seq > :zero) OR sk = :summary")
            .expression_attribute_values(":meta", s("META"))
            .expression_attribute_values(":summary", s("SUMMARY"))
            .expression_attribute_values(":zero", n(0))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(dynamo_error)?;
        let mut sessions = Vec::new();
        let mut covered = std::collections::HashMap::new();
        for item in items {
            if item.get("sk") == Some(&s("SUMMARY")) {
                let summary = summary_from_item(item)?;
                covered.insert(summary.session_id, summary.covers_seq);
            } else {
                sessions.push(session_from_item(item)?);
            }
        }
        let mut due: Vec<(SessionRecord, u64)> = sessions
            .into_iter()
            .filter(|session| after.is_none_or(|after| session.session_id.as_str() > after))
            .map(|session| {
                let seq = covered.get(&session.session_id).copied().unwrap_or(0);
                (session, seq)
            })
            .filter(|(session, seq)| session.log_seq > *seq)
            .collect();
        due.sort_by(|a, b| a.0.session_id.cmp(&b.0.session_id));
        due.truncate(limit);
        Ok(due)
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.get("PING".into(), "PING").await.map(|_| ())
    }
}

impl DynamoStore {
    fn agent_name_item(agent: &AgentRecord) -> Item {
        Item::from([
            ("pk".into(), s(agent_name_pk(&agent.owner, &agent.name))),
            ("sk".into(), s("AGENTNAME")),
            ("agent_id".into(), s(&agent.agent_id)),
        ])
    }

    /// Agents in the index, those whose sort key starts with `prefix` when there is one.
    async fn agents_with_prefix(
        &self,
        prefix: Option<&str>,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(USER_INDEX)
            .expression_attribute_values(":agents", s("AGENTS"));
        let query = match prefix {
            Some(prefix) => query
                .key_condition_expression("gsi1pk = :agents AND begins_with(gsi1sk, :prefix)")
                .expression_attribute_values(":prefix", s(prefix)),
            None => query.key_condition_expression("gsi1pk = :agents"),
        };
        let items: Vec<Item> = query
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(dynamo_error)?;
        let mut agents = items
            .into_iter()
            .map(agent_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        agents.sort_by(|a, b| a.name.cmp(&b.name).then(a.agent_id.cmp(&b.agent_id)));
        Ok(agents)
    }
}

#[async_trait]
impl AgentStore for DynamoStore {
    async fn insert_agent(&self, agent: &AgentRecord) -> Result<bool, StoreError> {
        let writes = vec![
            self.put_new(agent_item(agent)?)?,
            self.put_new(Self::agent_name_item(agent))?,
        ];
        self.transact(writes).await
    }

    async fn replace_agent(&self, agent: &AgentRecord) -> Result<bool, StoreError> {
        let Some(stored) = self.agent(&agent.agent_id).await? else {
            return Ok(false);
        };
        if stored.owner != agent.owner {
            return Ok(false);
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(agent_item(agent)?))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(build_error)?;
        let mut writes = vec![TransactWriteItem::builder().put(put).build()];
        if stored.name != agent.name {
            writes.push(self.put_new(Self::agent_name_item(agent))?);
            writes
                .push(self.delete_write(agent_name_pk(&stored.owner, &stored.name), "AGENTNAME")?);
        }
        self.transact(writes).await
    }

    async fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.get(agent_pk(agent_id), "AGENT")
            .await?
            .map(agent_from_item)
            .transpose()
    }

    async fn owner_agents(&self, owner: &str) -> Result<Vec<AgentRecord>, StoreError> {
        // The prefix also matches owners whose id continues past a '#'.
        let mut agents = self.agents_with_prefix(Some(&format!("{owner}#"))).await?;
        agents.retain(|agent| agent.owner == owner);
        Ok(agents)
    }

    async fn all_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.agents_with_prefix(None).await
    }

    async fn delete_agent(&self, agent_id: &str) -> Result<bool, StoreError> {
        let Some(agent) = self.agent(agent_id).await? else {
            return Ok(false);
        };
        let writes = vec![
            self.delete_write(agent_pk(agent_id), "AGENT")?,
            self.delete_write(agent_name_pk(&agent.owner, &agent.name), "AGENTNAME")?,
        ];
        self.transact(writes).await
    }
}

#[async_trait]
impl ProviderStore for DynamoStore {
    async fn put_provider(&self, provider: &ProviderRecord) -> Result<(), StoreError> {
        self.put(to_item(&ProviderItem {
            pk: format!("USER#{}", provider.owner),
            sk: format!("PROVIDER#{}", provider.provider_id),
            provider_id: provider.provider_id.clone(),
            owner: provider.owner.clone(),
            config: serde_json::to_string(&provider.config)?,
            sealed_keys: provider.sealed_keys.clone(),
            created_at: provider.created_at,
            updated_at: provider.updated_at,
        })?)
        .await
    }

    async fn provider(
        &self,
        owner: &str,
        provider_id: &str,
    ) -> Result<Option<ProviderRecord>, StoreError> {
        self.get(format!("USER#{owner}"), &format!("PROVIDER#{provider_id}"))
            .await?
            .map(provider_from_item)
            .transpose()
    }

    async fn owner_providers(&self, owner: &str) -> Result<Vec<ProviderRecord>, StoreError> {
        let mut providers = self
            .query_prefix(format!("USER#{owner}"), "PROVIDER#")
            .await?
            .into_iter()
            .map(provider_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        providers.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        Ok(providers)
    }

    async fn delete_provider(&self, owner: &str, provider_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .delete_returning(format!("USER#{owner}"), &format!("PROVIDER#{provider_id}"))
            .await?
            .is_some())
    }
}

#[async_trait]
impl SkillStore for DynamoStore {
    async fn put_skill(&self, skill: &SkillRecord) -> Result<bool, StoreError> {
        let item = to_item(&SkillItem {
            pk: skill_pk(&skill.name),
            sk: "SKILL".into(),
            gsi1pk: format!("SKILLS#{}", skill.owner),
            gsi1sk: skill.name.clone(),
            name: skill.name.clone(),
            owner: skill.owner.clone(),
            description: skill.description.clone(),
            package: serde_json::to_string(&skill.package)?,
            created_at: skill.created_at,
            updated_at: skill.updated_at,
        })?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&skill.owner))
            .send()
            .await;
        conditional(result)
    }

    async fn skill(&self, name: &str) -> Result<Option<SkillRecord>, StoreError> {
        self.get(skill_pk(name), "SKILL")
            .await?
            .map(skill_from_item)
            .transpose()
    }

    async fn owner_skills(&self, owner: &str) -> Result<Vec<SkillRecord>, StoreError> {
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(USER_INDEX)
            .key_condition_expression("gsi1pk = :owner")
            .expression_attribute_values(":owner", s(format!("SKILLS#{owner}")))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(dynamo_error)?;
        items.into_iter().map(skill_from_item).collect()
    }

    async fn delete_skill(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .delete_returning(skill_pk(name), "SKILL")
            .await?
            .is_some())
    }
}

#[async_trait]
impl KnowledgeStore for DynamoStore {
    async fn create_knowledge_base(&self, base: &KnowledgeBaseRecord) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(knowledge_base_item(base, 1)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        conditional(result)
    }

    async fn update_knowledge_base(&self, base: &KnowledgeBaseRecord) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(knowledge_base_item(base, base.revision + 1)?))
            .condition_expression("revision = :revision")
            .expression_attribute_values(":revision", n(base.revision))
            .send()
            .await;
        conditional(result)
    }

    async fn knowledge_base(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<KnowledgeBaseRecord>, StoreError> {
        self.get(format!("USER#{owner}"), &format!("KB#{id}"))
            .await?
            .map(knowledge_base_from_item)
            .transpose()
    }

    async fn owner_knowledge_bases(
        &self,
        owner: &str,
    ) -> Result<Vec<KnowledgeBaseRecord>, StoreError> {
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :kb)")
            .expression_attribute_values(":pk", s(format!("USER#{owner}")))
            .expression_attribute_values(":kb", s("KB#"))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(dynamo_error)?;
        let mut bases = items
            .into_iter()
            .map(knowledge_base_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        bases.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
        Ok(bases)
    }

    async fn delete_knowledge_base(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .delete_returning(format!("USER#{owner}"), &format!("KB#{id}"))
            .await?
            .is_some())
    }

    async fn pending_knowledge_bases(
        &self,
        limit: usize,
    ) -> Result<Vec<KnowledgeBaseRecord>, StoreError> {
        let limit = i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(USER_INDEX)
            .key_condition_expression("gsi1pk = :pending")
            .expression_attribute_values(":pending", s(KB_PENDING))
            .limit(limit)
            .send()
            .await
            .map_err(dynamo_error)?;
        // The index is eventually consistent: read each base again by its key.
        let mut bases = Vec::new();
        for item in output.items.unwrap_or_default() {
            let listed = knowledge_base_from_item(item)?;
            if let Some(base) = self.knowledge_base(&listed.owner, &listed.id).await?
                && base.has_pending()
            {
                bases.push(base);
            }
        }
        Ok(bases)
    }
}
