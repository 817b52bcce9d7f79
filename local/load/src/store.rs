//! `sage-load store`: time and CPU per stored event, through the `Store` trait the server uses.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use sage_core::store::{DynamoStore, SessionRecord, SqlStore, Store};
use sage_core::wire::{Event, EventType, StoredEvent};
use serde::Serialize;

use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite (the `file` store) in a temporary directory.
    Sqlite,
    /// MySQL / MariaDB, in a fresh database dropped afterwards.
    Mysql,
    /// DynamoDB (moto, DynamoDB Local), in a fresh table deleted afterwards.
    Dynamodb,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// Events to append.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Events per `append_events` call (the server writes whatever queued, at most 64; a model
    /// streaming slower than the store writes gives batches of 1).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long = "mysql-host", default_value = "127.0.0.1")]
    pub mysql_host: String,
    #[arg(long = "mysql-port", default_value_t = 3306)]
    pub mysql_port: u16,
    #[arg(long = "mysql-user", default_value = "root")]
    pub mysql_user: String,
    #[arg(long = "mysql-password", default_value = "")]
    pub mysql_password: String,
    #[arg(long = "dynamodb-endpoint", default_value = "http://127.0.0.1:5123")]
    pub dynamodb_endpoint: String,
    /// The database server's process id (mariadbd, moto): its CPU time is reported too.
    #[arg(long = "server-pid")]
    pub server_pid: Option<u32>,
    /// Keep the database / table instead of dropping it.
    #[arg(long)]
    pub keep: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct StoreReport {
    backend: Backend,
    events: u64,
    batch: usize,
    writes: u64,
    /// Mean size of one stored event body (JSON).
    event_bytes: f64,
    wall_s: f64,
    cpu_s: f64,
    wall_us_per_event: f64,
    cpu_us_per_event: f64,
    events_per_s: f64,
    wall_ms_per_write: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_us_per_event: Option<f64>,
    location: String,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Mysql {
        url: String,
        database: String,
    },
    Dynamo {
        client: aws_sdk_dynamodb::Client,
        table: String,
    },
}

fn fresh_name() -> String {
    format!("sage_load_{}", uuid::Uuid::new_v4().simple())
}

fn mysql_url(args: &StoreArgs) -> Result<String, String> {
    let mut url = reqwest::Url::parse("mysql://localhost/").map_err(|e| e.to_string())?;
    url.set_host(Some(&args.mysql_host))
        .map_err(|e| format!("bad --mysql-host: {e}"))?;
    url.set_port(Some(args.mysql_port))
        .map_err(|_| "bad --mysql-port")?;
    url.set_username(&args.mysql_user)
        .map_err(|_| "bad --mysql-user")?;
    if !args.mysql_password.is_empty() {
        url.set_password(Some(&args.mysql_password))
            .map_err(|_| "bad --mysql-password")?;
    }
    Ok(url.to_string())
}

async fn open(args: &StoreArgs) -> Result<(Box<dyn Store>, Cleanup, String), String> {
    match args.backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
            let file = dir.path().join("sage.db");
            let store = SqlStore::open(&file)
                .await
                .map_err(|e| format!("SQLite at {}: {e}", file.display()))?;
            Ok((
                Box::new(store),
                Cleanup::Sqlite(dir),
                file.display().to_string(),
            ))
        }
        Backend::Mysql => {
            let database = fresh_name();
            let store = SqlStore::connect_mysql(
                &args.mysql_host,
                args.mysql_port,
                &args.mysql_user,
                &args.mysql_password,
                &database,
            )
            .await
            .map_err(|e| format!("MySQL at {}:{}: {e}", args.mysql_host, args.mysql_port))?;
            let location = format!("{}:{}/{database}", args.mysql_host, args.mysql_port);
            Ok((
                Box::new(store),
                Cleanup::Mysql {
                    url: mysql_url(args)?,
                    database,
                },
                location,
            ))
        }
        Backend::Dynamodb => {
            let table = fresh_name();
            let credentials = aws_sdk_dynamodb::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "sage-load",
            );
            let config = aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
                .endpoint_url(&args.dynamodb_endpoint)
                .credentials_provider(credentials)
                .build();
            let client = aws_sdk_dynamodb::Client::from_conf(config);
            let store = DynamoStore::with_client(client.clone(), &table);
            store
                .create_table()
                .await
                .map_err(|e| format!("DynamoDB at {}: {e}", args.dynamodb_endpoint))?;
            let location = format!("{} table {table}", args.dynamodb_endpoint);
            Ok((Box::new(store), Cleanup::Dynamo { client, table }, location))
        }
    }
}

async fn cleanup(cleanup: Cleanup) -> Result<(), String> {
    match cleanup {
        Cleanup::Sqlite(_dir) => Ok(()),
        Cleanup::Mysql { url, database } => {
            use sqlx::Executor;
            let pool = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            pool.execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS `{database}`"
            )))
            .await
            .map_err(|e| e.to_string())?;
            pool.close().await;
            Ok(())
        }
        Cleanup::Dynamo { client, table } => client
            .delete_table()
            .table_name(&table)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
    }
}

/// `n` answer deltas of one message, as the agent emits them.
fn events(session_id: &str, n: u64) -> Vec<StoredEvent> {
    let message_id = uuid::Uuid::new_v4().to_string();
    (1..=n)
        .map(|seq| {
            StoredEvent::new(
                seq,
                Event::text(
                    session_id,
                    EventType::DoSubtaskResult,
                    &message_id,
                    "SimpleAgent",
                    format!("tok{} ", seq - 1),
                ),
            )
        })
        .collect()
}

pub async fn store(args: StoreArgs) -> Result<(), String> {
    if args.events == 0 || args.batch == 0 {
        return Err("--events and --batch must be at least 1".into());
    }
    let (store, cleanup_plan, location) = open(&args).await?;
    let session_id = uuid::Uuid::new_v4().to_string();
    let result = run(&args, store.as_ref(), &session_id, location).await;
    drop(store);
    if !args.keep
        && let Err(error) = cleanup(cleanup_plan).await
    {
        eprintln!("warning: cleaning up failed: {error}");
    }
    let report = result?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        eprintln!(
            "{:?} store ({}): {} events of ~{:.0} bytes in {} writes of {}",
            report.backend,
            report.location,
            report.events,
            report.event_bytes,
            report.writes,
            report.batch
        );
        eprintln!(
            "wall {:.3} s   CPU {:.3} s (this process)   {:.0} events/s   {:.2} ms per write",
            report.wall_s, report.cpu_s, report.events_per_s, report.wall_ms_per_write
        );
        eprintln!(
            "per event: {:.1} µs wall, {:.1} µs CPU{}",
            report.wall_us_per_event,
            report.cpu_us_per_event,
            report
                .server_cpu_us_per_event
                .map(|us| format!(", {us:.1} µs CPU in the database server"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

async fn run(
    args: &StoreArgs,
    store: &dyn Store,
    session_id: &str,
    location: String,
) -> Result<StoreReport, String> {
    store
        .create_session(&SessionRecord::new(
            session_id,
            "sage-load",
            "store benchmark",
        ))
        .await
        .map_err(|e| format!("create_session: {e}"))?;
    let events = events(session_id, args.events);
    let body_bytes: usize = events
        .iter()
        .map(|e| serde_json::to_string(&e.event).map_or(0, |s| s.len()))
        .sum();

    let server_cpu = || {
        args.server_pid
            .and_then(|pid| sys::process_cpu_time(pid).ok())
    };
    let server_before = server_cpu();
    let cpu_before = sys::self_cpu_time();
    let start = Instant::now();
    let mut writes = 0u64;
    for batch in events.chunks(args.batch) {
        store
            .append_events(session_id, batch)
            .await
            .map_err(|e| format!("append_events at seq {}: {e}", batch[0].seq))?;
        writes += 1;
    }
    let wall = start.elapsed();
    let cpu = sys::self_cpu_time().saturating_sub(cpu_before);
    let server = match (server_before, server_cpu()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };

    let last = store
        .last_seq(session_id)
        .await
        .map_err(|e| format!("last_seq: {e}"))?;
    if last != args.events {
        return Err(format!(
            "the log ends at seq {last}, expected {}",
            args.events
        ));
    }
    let n = args.events as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
    Ok(StoreReport {
        backend: args.backend,
        events: args.events,
        batch: args.batch,
        writes,
        event_bytes: body_bytes as f64 / n,
        wall_s: wall.as_secs_f64(),
        cpu_s: cpu.as_secs_f64(),
        wall_us_per_event: us(wall),
        cpu_us_per_event: us(cpu),
        events_per_s: n / wall.as_secs_f64().max(1e-9),
        wall_ms_per_write: wall.as_secs_f64() * 1000.0 / writes as f64,
        server_cpu_us_per_event: server.map(us),
        location,
    })
}
