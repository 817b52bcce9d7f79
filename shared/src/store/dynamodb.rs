//! The `dynamodb` store: one table, keys `pk`/`sk`, GSI `by_user` (`gsi1pk`/`gsi1sk`), TTL
//! attribute `ttl`. The item layout is written down in infra/dynamodb.md.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem, WriteRequest,
};

use super::{
    IdempotencyRecord, McpServerRecord, RunLock, RunStatus, SessionRecord, Store, StoreError,
    lease_deadline,
};
use crate::config::Config;
use crate::error::now_secs;
use crate::event::StoredEvent;

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

fn session_pk(session_id: &str) -> String {
    format!("SESSION#{session_id}")
}

fn event_sk(seq: u64) -> String {
    format!("EVENT#{seq:012}")
}

fn dynamo_error<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Dynamo(DisplayErrorContext(error).to_string())
}

/// `Ok(true)` when a conditional write happened, `Ok(false)` when its condition failed.
fn conditional<O, E, R>(result: Result<O, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
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

fn text(item: &Item, name: &str) -> Result<String, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(StoreError::Dynamo(format!(
            "item lacks the string `{name}`"
        ))),
    }
}

fn optional_text(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Some(value.clone()),
        _ => None,
    }
}

fn number(item: &Item, name: &str) -> Result<f64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| StoreError::Dynamo(format!("`{name}` is not a number"))),
        _ => Err(StoreError::Dynamo(format!(
            "item lacks the number `{name}`"
        ))),
    }
}

fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(text) | AttributeValue::N(text) => text.len(),
                    _ => 8,
                }
        })
        .sum()
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

fn session_item(session: &SessionRecord) -> Item {
    let mut item = Item::from([
        ("pk".into(), s(session_pk(&session.session_id))),
        ("sk".into(), s("META")),
        ("session_id".into(), s(&session.session_id)),
        ("user_id".into(), s(&session.user_id)),
        ("title".into(), s(&session.title)),
        ("created_at".into(), n(session.created_at)),
        ("updated_at".into(), n(session.updated_at)),
        ("message_count".into(), n(session.message_count)),
        ("user_count".into(), n(session.user_count)),
        ("agent_count".into(), n(session.agent_count)),
        ("search_text".into(), s(&session.search_text)),
        ("status".into(), s(session.status.as_str())),
        ("gsi1pk".into(), s(format!("USER#{}", session.user_id))),
        (
            "gsi1sk".into(),
            s(format!("SESSION#{:020.6}", session.updated_at)),
        ),
    ]);
    if let Some(agent_id) = &session.agent_id {
        item.insert("agent_id".into(), s(agent_id));
    }
    if let Some(agent_name) = &session.agent_name {
        item.insert("agent_name".into(), s(agent_name));
    }
    item
}

fn session_from_item(item: &Item) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        session_id: text(item, "session_id")?,
        user_id: text(item, "user_id")?,
        agent_id: optional_text(item, "agent_id"),
        agent_name: optional_text(item, "agent_name"),
        title: text(item, "title")?,
        created_at: number(item, "created_at")?,
        updated_at: number(item, "updated_at")?,
        message_count: number(item, "message_count")? as u64,
        user_count: number(item, "user_count")? as u64,
        agent_count: number(item, "agent_count")? as u64,
        search_text: optional_text(item, "search_text").unwrap_or_default(),
        status: RunStatus::parse(&optional_text(item, "status").unwrap_or_default()),
    })
}

fn mcp_item(record: &McpServerRecord) -> Result<Item, StoreError> {
    let mut item = Item::from([
        ("pk".into(), s(format!("USER#{}", record.owner))),
        ("sk".into(), s(format!("MCP#{}", record.name))),
        ("owner".into(), s(&record.owner)),
        ("name".into(), s(&record.name)),
        ("config".into(), s(serde_json::to_string(&record.config)?)),
        ("tools".into(), s(serde_json::to_string(&record.tools)?)),
        ("updated_at".into(), n(record.updated_at)),
    ]);
    if let Some(error) = &record.last_error {
        item.insert("last_error".into(), s(error));
    }
    check_size(&item)?;
    Ok(item)
}

fn mcp_from_item(item: &Item) -> Result<McpServerRecord, StoreError> {
    Ok(McpServerRecord {
        owner: text(item, "owner")?,
        name: text(item, "name")?,
        config: serde_json::from_str(&text(item, "config")?)?,
        tools: serde_json::from_str(&text(item, "tools")?)?,
        last_error: optional_text(item, "last_error"),
        updated_at: number(item, "updated_at")?,
    })
}

fn idempotency_from_item(item: &Item) -> Result<IdempotencyRecord, StoreError> {
    Ok(IdempotencyRecord {
        key: text(item, "idem_key")?,
        request_hash: text(item, "request_hash")?,
        session_id: text(item, "session_id")?,
        first_seq: number(item, "first_seq").ok().map(|seq| seq as u64),
        created_at: number(item, "created_at")?,
    })
}

fn key(pk: String, sk: &str) -> Item {
    Item::from([("pk".into(), s(pk)), ("sk".into(), s(sk))])
}

pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// Builds the client from the environment (region, credentials) and warms its connection.
    /// With an endpoint override (DynamoDB Local, moto) the table is created when missing.
    pub async fn connect(config: &Config) -> Result<Self, StoreError> {
        let region = aws_config::meta::region::RegionProviderChain::default_provider()
            .or_else(aws_config::Region::new("us-east-1"));
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(region);
        if let Some(endpoint) = &config.dynamodb_endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let store = Self::with_client(Client::new(&loader.load().await), &config.dynamodb_table);
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
        }
    }

    /// Creates the table as template.yaml declares it; an existing table is left alone.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| StoreError::Dynamo(e.to_string()))
        };
        let key_element = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| StoreError::Dynamo(e.to_string()))
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
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
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
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
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
        query
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(dynamo_error)
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
impl Store for DynamoStore {
    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.get(session_pk(session_id), "META")
            .await?
            .as_ref()
            .map(session_from_item)
            .transpose()
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<SessionRecord, StoreError> {
        self.put_if_absent(session_item(session)).await?;
        Ok(self
            .get_session(&session.session_id)
            .await?
            .unwrap_or_else(|| session.clone()))
    }

    async fn update_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.put_when(session_item(session), "attribute_exists(pk)")
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
        items.iter().map(session_from_item).collect()
    }

    async fn delete_session(&self, session_id: &str) -> Result<(), StoreError> {
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
                        .map_err(|e| StoreError::Dynamo(e.to_string()))
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

    async fn append_events(
        &self,
        session_id: &str,
        events: &[StoredEvent],
    ) -> Result<(), StoreError> {
        // A transaction takes at most 100 items; our batches are smaller, larger ones are split.
        for chunk in events.chunks(100) {
            let mut writes = Vec::with_capacity(chunk.len());
            for stored in chunk {
                let item = Item::from([
                    ("pk".into(), s(session_pk(session_id))),
                    ("sk".into(), s(event_sk(stored.seq))),
                    ("seq".into(), n(stored.seq)),
                    ("body".into(), s(serde_json::to_string(&stored.event)?)),
                ]);
                check_size(&item)?;
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .map_err(|e| StoreError::Dynamo(e.to_string()))?;
                writes.push(TransactWriteItem::builder().put(put).build());
            }
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(writes))
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_transaction_canceled_exception()) =>
                {
                    return Err(StoreError::SeqConflict {
                        session_id: session_id.to_owned(),
                        seq: chunk[0].seq,
                    });
                }
                Err(error) => return Err(dynamo_error(error)),
            }
        }
        Ok(())
    }

    async fn events_after(
        &self,
        session_id: &str,
        after: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(session_pk(session_id)))
            .expression_attribute_values(":from", s(event_sk(after + 1)))
            .expression_attribute_values(":to", s("EVENT#~"))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(dynamo_error)?;
        items
            .iter()
            .map(|item| {
                Ok(StoredEvent {
                    seq: number(item, "seq")? as u64,
                    event: serde_json::from_str(&text(item, "body")?)?,
                })
            })
            .collect()
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
        match output.items().first() {
            Some(item) => Ok(number(item, "seq")? as u64),
            None => Ok(0),
        }
    }

    async fn try_lock_run(
        &self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let expires_at = lease_deadline(lease);
        let mut item = key(session_pk(session_id), "LOCK");
        item.insert("run_id".into(), s(run_id));
        item.insert("expires_at".into(), n(expires_at));
        item.insert("cancel_requested".into(), AttributeValue::Bool(false));
        item.insert("ttl".into(), n((expires_at + TTL_GRACE_SECS) as u64));
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
        Ok(Some(RunLock {
            run_id: text(&item, "run_id")?,
            expires_at: number(&item, "expires_at")?,
            cancel_requested: matches!(
                item.get("cancel_requested"),
                Some(AttributeValue::Bool(true))
            ),
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
        let mut item = key(format!("IDEM#{}", record.key), "META");
        item.insert("idem_key".into(), s(&record.key));
        item.insert("request_hash".into(), s(&record.request_hash));
        item.insert("session_id".into(), s(&record.session_id));
        item.insert("created_at".into(), n(record.created_at));
        item.insert("ttl".into(), n((record.created_at + TTL_GRACE_SECS) as u64));
        if let Some(first_seq) = record.first_seq {
            item.insert("first_seq".into(), n(first_seq));
        }
        if self.put_if_absent(item).await? {
            return Ok(None);
        }
        self.get_idempotency_key(&record.key).await
    }

    async fn get_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.get(format!("IDEM#{key}"), "META")
            .await?
            .as_ref()
            .map(idempotency_from_item)
            .transpose()
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
            .as_ref()
            .map(mcp_from_item)
            .transpose()
    }

    async fn list_mcp_servers(&self, owner: &str) -> Result<Vec<McpServerRecord>, StoreError> {
        let items = self.query_prefix(format!("USER#{owner}"), "MCP#").await?;
        items.iter().map(mcp_from_item).collect()
    }

    async fn delete_mcp_server(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("USER#{owner}"), &format!("MCP#{name}"))))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.get("PING".into(), "PING").await.map(|_| ())
    }
}
