//! The PostgreSQL store: one database shared by several replicas.
//!
//! Guarantees as the embedded store, across processes:
//! - Appends are group-committed: a writer task takes every waiting append
//!   (and attempt result) and writes them in one transaction — all events
//!   in one multi-row statement, whose `ON CONFLICT` on the event id makes
//!   the same callback arriving at two replicas at once exactly one event
//!   (the other answers `duplicate`) — then commits once.
//! - Claims are leases: `owner` (this replica) and `lease_until` (database
//!   clock), taken with `FOR UPDATE SKIP LOCKED` in small batches by due
//!   time from the unclaimed rows only (an index of their own), kept while
//!   the replica's heartbeat (one row per replica, renewed every third of
//!   the lease) lives, and released at shutdown. A replica that dies
//!   without releasing loses its claims once their leases and its heartbeat
//!   have ended: the next heartbeat of any live replica gives them back and
//!   wakes every replica's lanes, which then claim them. An
//!   attempt's result is written only while `owner` is still this replica,
//!   so a replica that lost its lease never overwrites another's result.
//! - When the server is unreachable every write fails fast (the ingress
//!   answers 503) and [`Store::available`] turns false (readiness 503);
//!   the pool reconnects by itself when the server returns.
//!
//! Schema migrations are SQL files embedded in the binary, applied at start
//! (and by `hookrelay migrate`) under an advisory lock, so replicas starting
//! together apply each exactly once.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_postgres::Row;
use tokio_util::sync::CancellationToken;

use super::{
    AppendOutcome, AttemptRecord, AttemptUpdate, Claimed, DeadLetterQuery, DeadSelector,
    DeliveryBrief, DeliveryState, DeliveryView, EventId, EventPage, EventQuery, EventSummary,
    EventView, ExpectedQuery, ExpectedState, ExpectedTask, LaneCounts, NewEvent, NewExpected, Next,
    Origin, PollNext, PollUpdate, PrunePolicy, PruneReport, Recorded, Store, StoreError, StoreSize,
    ATTEMPT_HISTORY,
};

/// The migrations, in order: (version, SQL with `{schema}` placeholders).
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("0001_init.sql")),
    (2, include_str!("0002_expected.sql")),
    (3, include_str!("0003_replicas.sql")),
    (4, include_str!("0004_free_claims.sql")),
    (5, include_str!("0005_derived_open.sql")),
];

/// The database clock in unix milliseconds (leases are compared with it,
/// so replicas with skewed clocks still agree on who holds what).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The SQL condition under which a row of `{table}` (aliased `alias`) may
/// be claimed: nobody holds it, or its lease ended and its owner's
/// heartbeat stopped (the owner died or lost the database).
fn claimable(schema: &str, alias: &str) -> String {
    format!(
        "({alias}.owner IS NULL OR ({alias}.lease_until < {NOW_MS} AND NOT EXISTS (
            SELECT 1 FROM {schema}.replicas r
            WHERE r.owner = {alias}.owner AND r.alive_until >= {NOW_MS})))"
    )
}

/// The first key of every advisory lock this store takes ("hrly").
const LOCK_SPACE: i32 = 0x6872_6c79;

/// Called after every group commit with the batch size and duration.
pub type CommitObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

/// Settings of the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresOptions {
    /// Connection URL (`postgres://user:password@host:port/db?sslmode=…`).
    /// Never logged or echoed.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Schema holding the tables (a plain identifier).
    pub schema: String,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// Most appends and attempt results one group commit takes.
    pub max_batch: usize,
    /// Told about every group commit (for metrics).
    pub observer: Option<CommitObserver>,
    /// Extra CA certificates trusted for the server's certificate.
    pub ca_certs: Vec<rustls_pki_types::CertificateDer<'static>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn state_from(code: i16) -> Result<DeliveryState, StoreError> {
    Ok(match code {
        0 => DeliveryState::Pending,
        1 => DeliveryState::Delivered,
        2 => DeliveryState::Dead,
        3 => DeliveryState::Deleted,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "unknown delivery state {code}"
            )))
        }
    })
}

fn origin_code(o: Origin) -> i16 {
    match o {
        Origin::Callback => 0,
        Origin::Reconciled => 1,
    }
}

fn origin_from(code: i16) -> Origin {
    if code == 1 {
        Origin::Reconciled
    } else {
        Origin::Callback
    }
}

fn event_id(bytes: &[u8]) -> Result<EventId, StoreError> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("event id is not 16 bytes".into()))?;
    Ok(EventId::from_bytes(array))
}

fn ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn db_ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn attempt_json(a: &AttemptRecord) -> Value {
    serde_json::to_value(a).expect("attempts serialise")
}

fn attempt_from(v: &Value) -> AttemptRecord {
    AttemptRecord {
        attempt: v["attempt"].as_u64().unwrap_or(0) as u32,
        at_ms: v["at_ms"].as_u64().unwrap_or(0),
        status: v["status"].as_u64().map(|s| s as u16),
        error: v["error"].as_str().map(str::to_string),
        duration_ms: v["duration_ms"].as_u64().unwrap_or(0),
    }
}

/// A group-committed write.
enum Write {
    Append(NewEvent, oneshot::Sender<Result<AppendOutcome, StoreError>>),
    Attempt(AttemptUpdate, oneshot::Sender<Result<Recorded, StoreError>>),
}

/// SQL text with the schema filled in, built once.
struct Sql {
    append: String,
    attempt: String,
    claim: String,
    dead_owners: String,
    takeover: String,
    release: String,
    release_events: String,
    renew: String,
    release_all: String,
    notify: String,
    listen: String,
}

impl Sql {
    fn new(s: &str) -> Self {
        Self {
            append: format!(
                "WITH input AS (
                   SELECT * FROM unnest($1::bytea[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                                        $6::smallint[], $7::jsonb[], $8::bytea[], $9::int[], $10::bigint[],
                                        $17::bool[])
                     AS t(id, route, received_ms, source_id, status, origin, headers, body, open_count,
                          ttl_ms, settles)
                 ), ins AS (
                   INSERT INTO {s}.events AS e (id, route, received_ms, source_id, status, origin,
                                                headers, body, body_len, open_count, done_ms)
                   SELECT id, route, received_ms, source_id, status, origin, headers, body,
                          length(body), open_count, CASE WHEN open_count = 0 THEN received_ms END
                   FROM input
                   ON CONFLICT (id) DO UPDATE SET
                     seq = nextval(pg_get_serial_sequence('{s}.events', 'seq')),
                     route = EXCLUDED.route, received_ms = EXCLUDED.received_ms,
                     source_id = EXCLUDED.source_id, status = EXCLUDED.status,
                     origin = EXCLUDED.origin, headers = EXCLUDED.headers, body = EXCLUDED.body,
                     body_len = EXCLUDED.body_len, open_count = EXCLUDED.open_count,
                     done_ms = EXCLUDED.done_ms, pruned = false
                   WHERE e.pruned
                     AND e.received_ms < EXCLUDED.received_ms
                         - (SELECT i.ttl_ms FROM input i WHERE i.id = EXCLUDED.id)
                   RETURNING e.id
                 ), dl AS (
                   INSERT INTO {s}.deliveries (event_id, subscriber, route, state, due_ms,
                                               schedule_start_ms, updated_ms, owner, lease_until)
                   SELECT d.event_id, d.subscriber, d.route, 0, d.due_ms, d.due_ms, d.due_ms,
                          $15, {NOW_MS} + $16
                   FROM unnest($11::bytea[], $12::text[], $13::text[], $14::bigint[])
                     AS d(event_id, subscriber, route, due_ms)
                   WHERE d.event_id IN (SELECT id FROM ins)
                 ), settle AS (
                   UPDATE {s}.expected_tasks t SET state = 2, settled_by = i.origin, status = i.status,
                     updated_ms = i.received_ms, owner = NULL, lease_until = NULL
                   FROM input i
                   WHERE i.settles AND t.route = i.route AND t.id = i.source_id AND t.state IN (0, 1)
                     AND i.id IN (SELECT id FROM ins)
                 )
                 SELECT id FROM ins"
            ),
            attempt: format!(
                "WITH u AS (
                   SELECT * FROM unnest($1::bytea[], $2::text[], $3::int[], $4::jsonb[], $5::bigint[],
                                        $6::smallint[], $7::bigint[], $8::text[], $9::bool[])
                     AS t(event_id, subscriber, attempt, record, now_ms, state, due_ms, reason,
                          keep)
                 ), d AS (
                 UPDATE {s}.deliveries d SET
                   attempts = GREATEST(d.attempts, u.attempt),
                   history = CASE WHEN u.record IS NULL THEN d.history
                             ELSE (CASE WHEN jsonb_array_length(d.history) >= {ATTEMPT_HISTORY}
                                        THEN d.history - 0 ELSE d.history END)
                                  || jsonb_build_array(u.record)
                             END,
                   updated_ms = u.now_ms,
                   state = u.state,
                   due_ms = CASE WHEN u.state = 0 THEN u.due_ms ELSE d.due_ms END,
                   dead_reason = CASE WHEN u.state = 2 THEN u.reason ELSE d.dead_reason END,
                   owner = CASE WHEN u.keep THEN d.owner ELSE NULL END,
                   lease_until = CASE WHEN u.keep THEN d.lease_until ELSE NULL END
                 FROM u
                 -- Rows are found by primary key, one per result (see
                 -- BEGIN_BY_KEY). The two other tests are written so that no
                 -- index matches them (`IS NOT DISTINCT FROM` is `=` here,
                 -- `state + 0` is `state`): otherwise the planner may drive
                 -- this update from the owner index or the pending-rows
                 -- index and compare every row this replica holds with
                 -- every result. The event row is not touched: whether it
                 -- is still open is read from its deliveries, and a
                 -- closing row tells the pruner (migration 5).
                 WHERE d.event_id = u.event_id AND d.subscriber = u.subscriber
                   AND d.state + 0 = 0 AND d.owner IS NOT DISTINCT FROM $10
                 RETURNING d.event_id, d.subscriber, d.state, d.updated_ms
                 ), closed AS (
                   -- A delivered result tells the pruner (migration 5).
                   INSERT INTO {s}.closings (event_id, closed_ms)
                   SELECT event_id, max(updated_ms) FROM d WHERE state = 1 GROUP BY event_id
                 )
                 SELECT event_id, subscriber FROM d"
            ),
            // Only unclaimed rows, through their own partial index
            // (`deliveries_free`): rows this or another live replica holds
            // are never walked, however long the backlog. Claims of a dead
            // replica are first given back by `takeover`.
            claim: format!(
                "WITH picked AS (
                   SELECT event_id, subscriber FROM {s}.deliveries
                   WHERE route = $1 AND subscriber = $2 AND state = 0 AND owner IS NULL
                     AND due_ms <= $3
                   ORDER BY due_ms LIMIT $4
                   FOR UPDATE SKIP LOCKED
                 )
                 UPDATE {s}.deliveries d SET owner = $5, lease_until = {NOW_MS} + $6
                 FROM picked, {s}.events e
                 WHERE d.event_id = picked.event_id AND d.subscriber = picked.subscriber
                   AND e.id = d.event_id
                 RETURNING d.event_id, d.attempts, d.due_ms, d.schedule_start_ms, e.received_ms, e.origin"
            ),
            dead_owners: format!("SELECT owner FROM {s}.replicas WHERE alive_until < {NOW_MS}"),
            takeover: format!(
                "UPDATE {s}.deliveries SET owner = NULL, lease_until = NULL
                 WHERE owner = $1 AND lease_until < {NOW_MS}"
            ),
            release: format!(
                "UPDATE {s}.deliveries SET owner = NULL, lease_until = NULL
                 WHERE owner IS NOT DISTINCT FROM $1 AND route = $2 AND subscriber = $3
                   AND event_id = ANY($4) AND state = 0"
            ),
            // Only events of that batch: the same id received at another
            // time is an earlier event whose claims may be a lane's.
            release_events: format!(
                "UPDATE {s}.deliveries d SET owner = NULL, lease_until = NULL
                 FROM {s}.events e, unnest($2::bytea[], $3::bigint[]) AS b(id, received_ms)
                 WHERE e.id = b.id AND e.received_ms = b.received_ms
                   AND d.event_id = e.id AND d.owner = $1 AND d.state = 0"
            ),
            renew: format!(
                "INSERT INTO {s}.replicas (owner, alive_until, started_ms)
                 VALUES ($1, {NOW_MS} + $2, {NOW_MS})
                 ON CONFLICT (owner) DO UPDATE SET alive_until = EXCLUDED.alive_until"
            ),
            release_all: format!(
                "WITH t AS (UPDATE {s}.expected_tasks SET owner = NULL, lease_until = NULL WHERE owner = $1),
                      h AS (DELETE FROM {s}.replicas WHERE owner = $1)
                 UPDATE {s}.deliveries SET owner = NULL, lease_until = NULL WHERE owner = $1"
            ),
            notify: format!("SELECT pg_notify('hookrelay_{s}', 'work')"),
            listen: format!("LISTEN hookrelay_{s}"),
        }
    }
}

/// Parses the URL and builds the pool (no connection yet).
fn pool(options: &PostgresOptions) -> Result<(tokio_postgres::Config, Pool), StoreError> {
    let config = tokio_postgres::Config::from_str(&options.url).map_err(|_| {
        StoreError::Backend(
            "store.postgres.url is not a valid PostgreSQL connection URL \
             (postgres://user:password@host:port/database?sslmode=disable|prefer|require)"
                .into(),
        )
    })?;
    let manager = Manager::from_config(
        config.clone(),
        tls(&options.ca_certs),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .post_create(deadpool_postgres::Hook::async_fn(|client, _| {
            Box::pin(async move {
                // Every statement is planned for the table as it is when it
                // runs. A prepared statement otherwise switches to a
                // generic plan after five runs, costed on the tables as
                // they were then: on a fresh schema (empty tables, and no
                // statistics until autovacuum's first ANALYZE, never where
                // autovacuum is off) that plan scans whole tables, and it
                // stays cached for the connection's life (BENCHMARKS.md,
                // "What changed for PostgreSQL"). The two statements of
                // the writers, which find rows only by key, are the
                // exception (`BEGIN_BY_KEY`). Best effort: the server was
                // checked at open (12 or later has the setting).
                let _ = client
                    .batch_execute("SET plan_cache_mode = force_custom_plan")
                    .await;
                Ok(())
            })
        }))
        .max_size(options.pool_size.max(2))
        .wait_timeout(Some(Duration::from_secs(2)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
    Ok((config, pool))
}

/// TLS to the database (used when `sslmode` asks for it): rustls with the
/// webpki roots plus `store.postgres.ca_file`, so the server's certificate
/// is always verified.
fn tls(
    extra: &[rustls_pki_types::CertificateDer<'static>],
) -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        let _ = roots.add(cert.clone());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// A connection error as one line, without the URL (it may hold a password).
fn connect_error(e: &deadpool_postgres::PoolError) -> String {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                let more = inner.to_string();
                if !text.contains(&more) {
                    text.push_str(": ");
                    text.push_str(&more);
                }
                source = inner.source();
            }
            text
        }
        PoolError::Timeout(_) => "timed out connecting to the server".into(),
        other => other.to_string(),
    }
}

/// Applies every migration not applied yet, under an advisory lock (so
/// replicas starting together apply each once); returns the versions applied.
pub async fn migrate(options: &PostgresOptions) -> Result<Vec<i32>, StoreError> {
    let (_, pool) = pool(options)?;
    migrate_with(&pool, &options.schema).await
}

/// The oldest server accepted (`server_version_num` of 12.0).
const MIN_SERVER_VERSION: i32 = 120_000;

async fn migrate_with(pool: &Pool, schema: &str) -> Result<Vec<i32>, StoreError> {
    let mut client = pool.get().await.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot connect to PostgreSQL: {}",
            connect_error(&e)
        ))
    })?;
    // PostgreSQL 12 has every setting the writers rely on
    // (`plan_cache_mode`); older servers are refused here, clearly, not
    // by a failing commit later.
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(unavailable)?
        .get(0);
    if version < MIN_SERVER_VERSION {
        return Err(StoreError::Backend(format!(
            "PostgreSQL 12 or later is needed; this server is version {}.{}",
            version / 10000,
            version % 10000 / 100
        )));
    }
    let tx = client.transaction().await.map_err(unavailable)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_SPACE, &schema],
    )
    .await
    .map_err(unavailable)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(|e| StoreError::Backend(format!("cannot create schema {schema}: {e}")))?;
    let done: Vec<i32> = tx
        .query(
            &format!("SELECT version FROM {schema}.schema_migrations"),
            &[],
        )
        .await
        .map_err(unavailable)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(&sql.replace("{schema}", schema))
            .await
            .map_err(|e| StoreError::Backend(format!("migration {version} failed: {e}")))?;
        tx.execute(
            &format!("INSERT INTO {schema}.schema_migrations (version) VALUES ($1)"),
            &[version],
        )
        .await
        .map_err(unavailable)?;
        applied.push(*version);
    }
    tx.commit().await.map_err(unavailable)?;
    for version in &applied {
        tracing::info!(version, schema, "database migration applied");
    }
    Ok(applied)
}

struct Inner {
    pool: Pool,
    sql: Sql,
    schema: String,
    owner: String,
    lease_ms: i64,
    available: AtomicBool,
    wake: Arc<Notify>,
    stop: CancellationToken,
    observer: Option<CommitObserver>,
    /// The high half of the advisory lock each batch with appends holds
    /// until its transaction ends ([`batch_lock`]): random per process, so
    /// replicas' batches do not share keys.
    batch_class: u32,
    /// The low half: this process's batches, numbered.
    batches: AtomicU32,
}

impl Inner {
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        match self.pool.get().await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.available.store(false, Ordering::Relaxed);
                Err(StoreError::Unavailable(format!(
                    "cannot reach PostgreSQL: {}",
                    connect_error(&e)
                )))
            }
        }
    }

    /// Maps a query error, noting when the server is gone. A server error
    /// is reported by its message and code only (its detail may quote row
    /// values).
    fn failed(&self, e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            // The server ends the session (shutting down, restarting, the
            // backend terminated: class 57P) or the connection is broken
            // (class 08): the server is gone as surely as when the socket
            // fails, and a commit in flight may or may not have been made.
            Some(db)
                if ["57P", "08"]
                    .iter()
                    .any(|c| db.code().code().starts_with(c)) =>
            {
                self.available.store(false, Ordering::Relaxed);
                StoreError::Unavailable(format!(
                    "PostgreSQL: {} ({})",
                    db.message(),
                    db.code().code()
                ))
            }
            Some(db) => StoreError::Backend(format!(
                "PostgreSQL: {} ({})",
                db.message(),
                db.code().code()
            )),
            None => {
                self.available.store(false, Ordering::Relaxed);
                StoreError::Unavailable(e.to_string())
            }
        }
    }

    async fn notify(&self) {
        if let Ok(client) = self.client().await {
            let _ = client.execute(&self.sql.notify, &[]).await;
        }
    }
}

/// PostgreSQL behind the [`Store`] trait.
pub struct PostgresStore {
    inner: Arc<Inner>,
    /// The queues of the group-committing writers: appends, and attempt
    /// results. Kept apart so that appends are always taken first: a
    /// callback's 2xx never waits behind queued attempt results, and a
    /// backlog of results never makes ingress `Overloaded`.
    writer: Mutex<Option<[mpsc::Sender<Write>; 2]>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("owner", &self.inner.owner)
            .finish()
    }
}

/// This replica's name in `owner`: host, process and a random part (a
/// restarted process never inherits the claims of its predecessor).
fn owner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().chars().take(40).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl PostgresStore {
    /// Connects, applies migrations and starts the writer, the lease
    /// renewal, the health check and the listener for work signals. Fails
    /// with one clear error (never quoting the URL) when the database is
    /// unreachable or refuses the credentials.
    pub async fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        let (config, pool) = pool(&options)?;
        migrate_with(&pool, &options.schema).await?;
        let inner = Arc::new(Inner {
            pool,
            sql: Sql::new(&options.schema),
            schema: options.schema.clone(),
            owner: owner_id(),
            lease_ms: db_ms(options.lease.as_millis() as u64),
            available: AtomicBool::new(true),
            wake: Arc::new(Notify::new()),
            stop: CancellationToken::new(),
            observer: options.observer.clone(),
            batch_class: rand::random::<u32>(),
            batches: AtomicU32::new(0),
        });
        // This replica's heartbeat, before it claims anything.
        inner
            .client()
            .await?
            .execute(&inner.sql.renew, &[&inner.owner, &inner.lease_ms])
            .await
            .map_err(|e| inner.failed(e))?;
        takeover(&inner).await?;
        // Two queues (appends, attempt results) drained by [`WRITERS`]
        // writers taking turns, so one batch's commit (a round trip and the
        // server's fsync) overlaps the next batch. Each batch takes the
        // waiting appends first and the waiting results with them: one
        // transaction where two would be made (with two replicas on one
        // database every transaction counts twice, BENCHMARKS.md).
        let mut tasks = Vec::new();
        let (appends_tx, appends) = mpsc::channel(options.max_batch.max(64) * 4);
        let (attempts_tx, attempts) = mpsc::channel(options.max_batch.max(64) * 4);
        let queue = Arc::new(Queue {
            rx: tokio::sync::Mutex::new(Receivers { appends, attempts }),
            committing: AtomicUsize::new(0),
            committed: Notify::new(),
        });
        for _ in 0..WRITERS {
            tasks.push(tokio::spawn(writer_loop(
                inner.clone(),
                queue.clone(),
                options.max_batch.max(1),
            )));
        }
        let queues = [appends_tx, attempts_tx];
        tasks.push(tokio::spawn(renew_loop(inner.clone(), options.lease)));
        tasks.push(tokio::spawn(health_loop(inner.clone())));
        tasks.push(tokio::spawn(listen_loop(
            inner.clone(),
            config,
            options.ca_certs.clone(),
        )));
        tracing::info!(schema = %options.schema, owner = %inner.owner, "PostgreSQL store open");
        Ok(Self {
            inner,
            writer: Mutex::new(Some(queues)),
            tasks: Mutex::new(tasks),
        })
    }

    /// This replica's owner id (shown in logs; claims carry it).
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<T, StoreError> {
        let stopped = || StoreError::Unavailable("the store is closed".into());
        let queues = self.writer.lock().expect("writer lock").clone();
        let queues = queues.ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        let write = make(reply);
        let queue = match write {
            Write::Append(..) => &queues[0],
            Write::Attempt(..) => &queues[1],
        };
        match queue.send_timeout(write, Duration::from_secs(2)).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => return Err(StoreError::Overloaded),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(stopped()),
        }
        answer.await.map_err(|_| stopped())?
    }
}

/// Writers committing batches at the same time.
const WRITERS: usize = 2;

/// Appends waiting for which a second writer starts a batch while the
/// first one's commit is still under way. With fewer, the second writer
/// waits for that commit and then takes everything queued: one transaction
/// instead of several small ones, each with its round trip and WAL flush
/// (with two replicas on one database, batches halved and transactions
/// doubled, BENCHMARKS.md). A deep queue is worth the overlap. The depth is
/// read when the wait begins and again when the other commit ends (or the
/// wait times out), not on every arrival.
const OVERLAP_FROM: usize = 16;

/// Longest a writer waits for the other writer's commit before starting
/// its own batch anyway.
const OVERLAP_WAIT: Duration = Duration::from_millis(20);

/// Attempt results a batch that also carries appends takes at most: about
/// 4 ms of the server's time (BENCHMARKS.md), so a backlog of results
/// delays a callback's 2xx by little. A batch without appends takes up to
/// `max_batch`.
const ATTEMPTS_WITH_APPENDS: usize = 256;

/// The writers' two queues, received together so that one batch can take
/// from both.
struct Receivers {
    appends: mpsc::Receiver<Write>,
    attempts: mpsc::Receiver<Write>,
}

/// The queues of writes and what their writers share.
struct Queue {
    rx: tokio::sync::Mutex<Receivers>,
    /// Writers whose batch is being committed now.
    committing: AtomicUsize,
    /// Signalled when a writer's commit ends.
    committed: Notify,
}

async fn writer_loop(inner: Arc<Inner>, queue: Arc<Queue>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = queue.rx.lock().await;
            let rx = &mut *rx;
            // The first write to arrive, an append if both are waiting.
            // Both queues closed and drained: the store is closing.
            tokio::select! {
                biased;
                Some(first) = rx.appends.recv() => batch.push(first),
                Some(first) = rx.attempts.recv() => batch.push(first),
                else => return,
            }
            // Another writer is committing and little is waiting: join the
            // next batch instead of starting a small one beside it. The
            // queues keep filling while this writer holds them. A full
            // batch of results waiting is worth its own transaction too.
            let deadline = tokio::time::Instant::now() + OVERLAP_WAIT;
            loop {
                let done = queue.committed.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if queue.committing.load(Ordering::Acquire) == 0
                    || rx.appends.len() + usize::from(matches!(batch[0], Write::Append(..)))
                        >= OVERLAP_FROM
                    || rx.attempts.len() >= max_batch
                {
                    break;
                }
                if tokio::time::timeout_at(deadline, done).await.is_err() {
                    break;
                }
            }
            take_batch(rx, &mut batch, max_batch);
            queue.committing.fetch_add(1, Ordering::AcqRel);
        }
        let committing = Committing(&queue);
        let started = Instant::now();
        let result = commit_batch(&inner, &batch).await;
        drop(committing);
        let mixed = batch.iter().any(|w| matches!(w, Write::Append(..)))
            && batch.iter().any(|w| matches!(w, Write::Attempt(..)));
        match result {
            Err(StoreError::Backend(e)) if mixed => {
                // The server refused a statement of one kind (a result it
                // cannot store, say): each kind is committed alone, so
                // that no callback is refused for a result beside it, nor
                // a result for a callback.
                tracing::warn!(error = %e, "a batch failed on the server; its callbacks and results are committed apart");
                let (appends, attempts): (Vec<Write>, Vec<Write>) = batch
                    .drain(..)
                    .partition(|w| matches!(w, Write::Append(..)));
                for part in [appends, attempts] {
                    let started = Instant::now();
                    let result = commit_batch(&inner, &part).await;
                    answer(&inner, part, result, started);
                }
            }
            result => answer(&inner, std::mem::take(&mut batch), result, started),
        }
    }
}

/// Sends each write of a committed (or failed) batch its answer.
fn answer(
    inner: &Inner,
    batch: Vec<Write>,
    result: Result<(Vec<AppendOutcome>, Vec<Recorded>), StoreError>,
    started: Instant,
) {
    let size = batch.len();
    match result {
        Ok((appends, attempts)) => {
            inner.available.store(true, Ordering::Relaxed);
            if let Some(observe) = &inner.observer {
                observe(size, started.elapsed());
            }
            let (mut a, mut r) = (appends.into_iter(), attempts.into_iter());
            for write in batch {
                match write {
                    Write::Append(_, reply) => {
                        let _ = reply.send(Ok(a.next().expect("one outcome per append")));
                    }
                    Write::Attempt(_, reply) => {
                        let _ = reply.send(Ok(r.next().expect("one result per attempt")));
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, batch = size, "PostgreSQL commit failed");
            for write in batch {
                let err = || StoreError::Unavailable(e.to_string());
                match write {
                    Write::Append(_, reply) => {
                        let _ = reply.send(Err(err()));
                    }
                    Write::Attempt(_, reply) => {
                        let _ = reply.send(Err(err()));
                    }
                }
            }
        }
    }
}

/// Fills a batch whose first write is taken: every waiting append first
/// (up to `max_batch`), then the waiting attempt results, at most
/// [`ATTEMPTS_WITH_APPENDS`] beside appends and never past `max_batch`
/// writes in all.
fn take_batch(rx: &mut Receivers, batch: &mut Vec<Write>, max_batch: usize) {
    while batch.len() < max_batch {
        match rx.appends.try_recv() {
            Ok(more) => batch.push(more),
            Err(_) => break,
        }
    }
    let appends = batch
        .iter()
        .filter(|w| matches!(w, Write::Append(..)))
        .count();
    let room = if appends > 0 {
        ATTEMPTS_WITH_APPENDS.min(max_batch.saturating_sub(appends))
    } else {
        max_batch
    };
    let mut attempts = batch.len() - appends;
    while attempts < room {
        match rx.attempts.try_recv() {
            Ok(more) => batch.push(more),
            Err(_) => break,
        }
        attempts += 1;
    }
}

/// The advisory lock key of a new batch: the process's class in the high
/// half, the batch's number in the low half. A key shared by chance (two
/// processes with one class) only makes a release wait for an unrelated
/// batch's end.
fn batch_lock(inner: &Inner) -> i64 {
    let n = inner.batches.fetch_add(1, Ordering::Relaxed);
    ((u64::from(inner.batch_class) << 32) | u64::from(n)) as i64
}

/// Longest a release waits at a time for the unanswered batch to end
/// before it lets its connection go and tries again (a transaction whose
/// client is gone ends when the server notices, at the latest through TCP
/// keepalive: each try holds one pooled connection for this long).
const RELEASE_LOCK_WAIT: &str = "2s";

/// Gives back the claims that a batch whose commit went unanswered may have
/// taken (the connection failed after the `COMMIT` was sent, so the
/// transaction may or may not have been carried out). The server may still
/// be running that transaction (waiting for a lock, say) while its client
/// is gone: the release first takes the batch's advisory lock, which the
/// batch holds until it ends, so it reads the batch's rows only once they
/// are committed or gone for good. Retried until the database answers or
/// the store stops; when the batch was not committed nothing matches. A
/// muapi retry of such a callback then answers `duplicate`, and the
/// deliveries are claimed like any free work, by whichever replica's
/// lanes come first.
async fn release_unanswered(inner: Arc<Inner>, ids: Vec<Vec<u8>>, received: Vec<i64>, key: i64) {
    let mut pause = Duration::from_millis(100);
    loop {
        let released = async {
            let mut client = inner.client().await?;
            // Read committed whatever the server's default: the release
            // must read with a snapshot taken after the lock is granted.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
                .start()
                .await
                .map_err(|e| inner.failed(e))?;
            // Its own statement: the release below reads with a snapshot
            // taken after the lock is granted.
            tx.batch_execute(&format!(
                "SET LOCAL lock_timeout = '{RELEASE_LOCK_WAIT}'; SELECT pg_advisory_xact_lock({key})"
            ))
            .await
            .map_err(|e| inner.failed(e))?;
            let n = tx
                .execute(&inner.sql.release_events, &[&inner.owner, &ids, &received])
                .await
                .map_err(|e| inner.failed(e))?;
            if n > 0 {
                tx.execute(&inner.sql.notify, &[])
                    .await
                    .map_err(|e| inner.failed(e))?;
            }
            tx.commit().await.map_err(|e| inner.failed(e))?;
            Ok::<_, StoreError>(n)
        }
        .await;
        match released {
            Ok(n) => {
                if n > 0 {
                    tracing::warn!(
                        deliveries = n,
                        "a commit went unanswered but was carried out; its deliveries are released to every replica"
                    );
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot yet release the claims of an unanswered commit")
            }
        }
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Counts a writer's commit as under way until dropped (also when the
/// commit fails), and wakes a writer waiting for it.
struct Committing<'a>(&'a Queue);

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.0.committing.fetch_sub(1, Ordering::AcqRel);
        self.0.committed.notify_waiters();
    }
}

/// Opens the transaction of a batch, sent in the same round trip as its
/// statements and its `COMMIT` (pipelined). The append and attempt
/// statements find every row they touch by key, and must: without the
/// settings the planner, short of statistics (a fresh table, or autovacuum
/// off) and misled by the tests it cannot see through, may read the held
/// rows by a full or bitmap scan and compare each with every result
/// (measured 26 to 75 ms per attempt statement of 50 to 130 results,
/// instead of 2 ms). With scans ruled out the plan does not depend on the
/// parameters, so it is made once per connection (a generic plan) instead
/// of for every batch: planning took about a third of these statements'
/// time on the server (BENCHMARKS.md). `SET LOCAL` ends with the
/// transaction; other statements keep `force_custom_plan` (see `pool`).
const BEGIN_BY_KEY: &str = "BEGIN; SET LOCAL enable_seqscan = off; \
                            SET LOCAL enable_bitmapscan = off; \
                            SET LOCAL plan_cache_mode = force_generic_plan";

/// One transaction in one round trip: `BEGIN` with its settings, every
/// append of the batch in one statement, every attempt result in another,
/// and `COMMIT`, all sent before the first answer is read. Nobody is
/// answered before the `COMMIT`'s own answer arrives (a statement that
/// fails aborts the transaction, and the server then ends it at `COMMIT`
/// without writing anything); after any error the connection is dropped
/// rather than returned to the pool, so no half-finished transaction can
/// reach the next batch.
async fn commit_batch(
    inner: &Arc<Inner>,
    batch: &[Write],
) -> Result<(Vec<AppendOutcome>, Vec<Recorded>), StoreError> {
    let client = inner.client().await?;
    // Appends: the same id twice in one batch is one event (the later one a
    // duplicate), as the unique key would make it across batches.
    let events: Vec<&NewEvent> = batch
        .iter()
        .filter_map(|w| match w {
            Write::Append(e, _) => Some(e),
            _ => None,
        })
        .collect();
    let mut first_of = std::collections::HashMap::new();
    for (i, e) in events.iter().enumerate() {
        first_of.entry(e.id).or_insert(i);
    }
    let mut unique: Vec<&NewEvent> = events
        .iter()
        .enumerate()
        .filter(|(i, e)| first_of[&e.id] == *i)
        .map(|(_, e)| *e)
        .collect();
    // One key order in every transaction: two replicas' batches never wait
    // on each other in a cycle.
    unique.sort_by_key(|e| e.id);
    let ids: Vec<Vec<u8>> = unique.iter().map(|e| e.id.to_bytes().to_vec()).collect();
    let routes: Vec<&str> = unique.iter().map(|e| &*e.route).collect();
    let received: Vec<i64> = unique.iter().map(|e| db_ms(e.received_ms)).collect();
    let sources: Vec<Option<&str>> = unique.iter().map(|e| e.source_id.as_deref()).collect();
    let statuses: Vec<Option<&str>> = unique.iter().map(|e| e.status.as_deref()).collect();
    let origins: Vec<i16> = unique.iter().map(|e| origin_code(e.origin)).collect();
    let headers: Vec<Value> = unique
        .iter()
        .map(|e| serde_json::to_value(&e.headers).expect("headers serialise"))
        .collect();
    let bodies: Vec<&[u8]> = unique.iter().map(|e| &e.body[..]).collect();
    let open: Vec<i32> = unique.iter().map(|e| e.subscribers.len() as i32).collect();
    let ttls: Vec<i64> = unique.iter().map(|e| db_ms(e.ttl_ms)).collect();
    let settles: Vec<bool> = unique.iter().map(|e| e.settles).collect();
    let mut d_ids = Vec::new();
    let mut d_subs = Vec::new();
    let mut d_routes = Vec::new();
    let mut d_due = Vec::new();
    for e in &unique {
        for s in &e.subscribers {
            d_ids.push(e.id.to_bytes().to_vec());
            d_subs.push(&**s);
            d_routes.push(&*e.route);
            d_due.push(db_ms(e.received_ms));
        }
    }
    let append_params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[
        &ids,
        &routes,
        &received,
        &sources,
        &statuses,
        &origins,
        &headers,
        &bodies,
        &open,
        &ttls,
        &d_ids,
        &d_subs,
        &d_routes,
        &d_due,
        &inner.owner,
        &inner.lease_ms,
        &settles,
    ];
    // Attempt results: every one of the batch in one statement.
    let updates: Vec<&AttemptUpdate> = batch
        .iter()
        .filter_map(|w| match w {
            Write::Attempt(u, _) => Some(u),
            _ => None,
        })
        .collect();
    let mut u_ids = Vec::with_capacity(updates.len());
    let mut subs = Vec::with_capacity(updates.len());
    let mut numbers = Vec::with_capacity(updates.len());
    let mut records = Vec::with_capacity(updates.len());
    let mut nows = Vec::with_capacity(updates.len());
    let mut states = Vec::with_capacity(updates.len());
    let mut dues = Vec::with_capacity(updates.len());
    let mut reasons = Vec::with_capacity(updates.len());
    let mut keeps = Vec::with_capacity(updates.len());
    for u in &updates {
        u_ids.push(u.event.to_bytes().to_vec());
        subs.push(u.subscriber.to_string());
        numbers.push(u.attempt.as_ref().map_or(0, |a| a.attempt as i32));
        records.push(u.attempt.as_ref().map(attempt_json));
        nows.push(db_ms(u.attempt.as_ref().map_or_else(super::now_ms, |a| {
            a.at_ms.saturating_add(a.duration_ms)
        })));
        let (state, due, reason, keep) = match &u.next {
            Next::Retry { due_ms, keep_claim } => (0i16, db_ms(*due_ms), None, *keep_claim),
            Next::Delivered => (1, 0, None, false),
            Next::Dead { reason } => (2, 0, Some(reason.clone()), false),
        };
        states.push(state);
        dues.push(due);
        reasons.push(reason);
        keeps.push(keep);
    }
    let attempt_params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[
        &u_ids,
        &subs,
        &numbers,
        &records,
        &nows,
        &states,
        &dues,
        &reasons,
        &keeps,
        &inner.owner,
    ];
    // Prepared once per connection (cached): after the first batch these
    // cost no round trip.
    let prepared = async {
        let append = if unique.is_empty() {
            None
        } else {
            Some(client.prepare_cached(&inner.sql.append).await?)
        };
        let attempt = if updates.is_empty() {
            None
        } else {
            Some(client.prepare_cached(&inner.sql.attempt).await?)
        };
        Ok::<_, tokio_postgres::Error>((append, attempt))
    }
    .await;
    let (append, attempt) = match prepared {
        Ok(statements) => statements,
        Err(e) => {
            let error = inner.failed(e);
            drop(deadpool_postgres::Object::take(client));
            return Err(error);
        }
    };
    // A batch that appends holds its own advisory lock until it ends, so
    // that if its answer is lost the claims it may take are given back
    // only once it has ended (`release_unanswered`).
    let lock = (!ids.is_empty()).then(|| batch_lock(inner));
    let begin = match lock {
        Some(key) => std::borrow::Cow::Owned(format!(
            "{BEGIN_BY_KEY}; SELECT pg_advisory_xact_lock({key})"
        )),
        None => std::borrow::Cow::Borrowed(BEGIN_BY_KEY),
    };
    // `biased`: polled in this order, each sends its request on its first
    // poll, so the server receives them in this order.
    let sent = tokio::try_join!(
        biased;
        client.batch_execute(&begin),
        async {
            match &append {
                Some(s) => client.query(s, append_params).await,
                None => Ok(Vec::new()),
            }
        },
        async {
            match &attempt {
                Some(s) => client.query(s, attempt_params).await,
                None => Ok(Vec::new()),
            }
        },
        client.batch_execute("COMMIT"),
    );
    let (_, appended, recorded, _) = match sent {
        Ok(answers) => answers,
        Err(e) => {
            let error = inner.failed(e);
            drop(deadpool_postgres::Object::take(client));
            if matches!(error, StoreError::Unavailable(_)) && !ids.is_empty() {
                // The COMMIT may have been carried out before the answer
                // was lost. Its callers are answered 503, so no lane holds
                // these events, yet their deliveries would then be claimed
                // by this live replica for good: give the claims back.
                let key = lock.expect("a batch with appends holds a lock");
                tokio::spawn(release_unanswered(inner.clone(), ids, received, key));
            }
            return Err(error);
        }
    };
    let mut inserted = std::collections::HashSet::new();
    for row in appended {
        inserted.insert(event_id(row.get::<_, &[u8]>(0))?);
    }
    let appends: Vec<AppendOutcome> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if first_of[&e.id] == i && inserted.contains(&e.id) {
                AppendOutcome::Accepted
            } else {
                AppendOutcome::Duplicate
            }
        })
        .collect();
    let applied: std::collections::HashSet<(Vec<u8>, String)> = recorded
        .iter()
        .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, String>(1)))
        .collect();
    let attempts: Vec<Recorded> = u_ids
        .into_iter()
        .zip(subs)
        .map(|key| {
            if applied.contains(&key) {
                Recorded::Applied
            } else {
                Recorded::Stale
            }
        })
        .collect();
    Ok((appends, attempts))
}

/// Renews this replica's leases every third of the lease.
async fn renew_loop(inner: Arc<Inner>, lease: Duration) {
    let every = (lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match inner.client().await {
            Ok(client) => {
                if let Err(e) = client
                    .execute(&inner.sql.renew, &[&inner.owner, &inner.lease_ms])
                    .await
                {
                    tracing::warn!(error = %inner.failed(e), "cannot renew delivery leases");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew delivery leases"),
        }
        if let Err(e) = takeover(&inner).await {
            tracing::warn!(error = %e, "cannot take over the claims of stopped replicas");
        }
    }
}

/// Gives back the claims of replicas whose heartbeat stopped (killed, or
/// cut off from the database) once each claim's own lease has ended too,
/// and wakes every replica's lanes to claim them. Runs at open and with
/// every heartbeat, so a dead replica's deliveries move within a third of
/// the lease after it expires. Dead replicas are read first from their
/// small table, and their claims found through the owner index: a replica
/// that is not dead costs nothing here, and claiming (`claim_due`) never
/// walks rows a live replica holds.
async fn takeover(inner: &Inner) -> Result<u64, StoreError> {
    let client = inner.client().await?;
    let dead = client
        .query(&inner.sql.dead_owners, &[])
        .await
        .map_err(|e| inner.failed(e))?;
    let mut released = 0;
    for row in dead {
        let owner: &str = row.get(0);
        released += client
            .execute(&inner.sql.takeover, &[&owner])
            .await
            .map_err(|e| inner.failed(e))?;
    }
    if released > 0 {
        tracing::info!(
            deliveries = released,
            "took over the claims of a stopped replica"
        );
        let _ = client.execute(&inner.sql.notify, &[]).await;
    }
    Ok(released)
}

/// Checks the server every second; readiness follows.
async fn health_loop(inner: Arc<Inner>) {
    let mut was = true;
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let ok = match tokio::time::timeout(Duration::from_secs(2), inner.pool.get()).await {
            Ok(Ok(client)) => matches!(
                tokio::time::timeout(Duration::from_secs(2), client.simple_query("SELECT 1")).await,
                Ok(Ok(_))
            ),
            _ => false,
        };
        inner.available.store(ok, Ordering::Relaxed);
        if ok != was {
            if ok {
                tracing::warn!("PostgreSQL is reachable again");
                // Work may have piled up while it was gone.
                inner.wake.notify_waiters();
            } else {
                tracing::error!("PostgreSQL is unreachable; ingress answers 503 until it returns");
            }
            was = ok;
        }
    }
}

/// Listens for work signals from other replicas (a replay, released
/// claims) on a connection of its own, reconnecting when it drops.
async fn listen_loop(
    inner: Arc<Inner>,
    config: tokio_postgres::Config,
    ca_certs: Vec<rustls_pki_types::CertificateDer<'static>>,
) {
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        match config.connect(tls(&ca_certs)).await {
            Ok((client, mut connection)) => {
                let wake = inner.wake.clone();
                let mut driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                                wake.notify_waiters()
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => return,
                        }
                    }
                });
                if client.batch_execute(&inner.sql.listen).await.is_ok() {
                    tokio::select! {
                        _ = inner.stop.cancelled() => { driver.abort(); return; }
                        _ = &mut driver => {}
                    }
                } else {
                    driver.abort();
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot open the work-signal connection; retrying")
            }
        }
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

fn delivery_view(row: &Row) -> Result<DeliveryView, StoreError> {
    let event = event_id(row.get::<_, &[u8]>("event_id"))?;
    let subscriber: String = row.get("subscriber");
    let history: Value = row.get("history");
    Ok(DeliveryView {
        id: format!("{event}.{subscriber}"),
        event_id: event,
        route: row.get("route"),
        subscriber,
        state: state_from(row.get("state"))?,
        attempts: row.get::<_, i32>("attempts") as u32,
        due_ms: ms(row.get("due_ms")),
        received_ms: ms(row.get("received_ms")),
        schedule_start_ms: ms(row.get("schedule_start_ms")),
        updated_ms: ms(row.get("updated_ms")),
        dead_reason: row.get("dead_reason"),
        history: history
            .as_array()
            .map(|a| a.iter().map(attempt_from).collect())
            .unwrap_or_default(),
    })
}

fn expected_state_code(s: ExpectedState) -> i16 {
    match s {
        ExpectedState::Waiting => 0,
        ExpectedState::Polling => 1,
        ExpectedState::Done => 2,
        ExpectedState::Expired => 3,
    }
}

fn expected_state_from(code: i16) -> Result<ExpectedState, StoreError> {
    Ok(match code {
        0 => ExpectedState::Waiting,
        1 => ExpectedState::Polling,
        2 => ExpectedState::Done,
        3 => ExpectedState::Expired,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "unknown expected-task state {code}"
            )))
        }
    })
}

fn expected_task(row: &Row) -> Result<ExpectedTask, StoreError> {
    Ok(ExpectedTask {
        route: row.get("route"),
        id: row.get("id"),
        endpoint: row.get("endpoint"),
        submitted_ms: ms(row.get("submitted_ms")),
        state: expected_state_from(row.get("state"))?,
        settled_by: row.get::<_, Option<i16>>("settled_by").map(origin_from),
        status: row.get("status"),
        polls: row.get::<_, i32>("polls") as u32,
        next_poll_ms: ms(row.get("next_poll_ms")),
        updated_ms: ms(row.get("updated_ms")),
        last_result: row.get("last_result"),
    })
}

const EXPECTED_COLUMNS: &str = "route, id, endpoint, submitted_ms, state, settled_by, status, \
     polls, next_poll_ms, updated_ms, last_result";

const DELIVERY_COLUMNS: &str = "d.event_id, d.subscriber, d.route, d.state, d.attempts, d.due_ms, \
     d.schedule_start_ms, d.updated_ms, d.dead_reason, d.history, e.received_ms";

impl PostgresStore {
    /// Selected dead letters, locked for this transaction: (event, subscriber).
    fn dead_filter(selector: &DeadSelector) -> (String, Vec<Vec<u8>>, Vec<String>) {
        match selector {
            DeadSelector::Ids(ids) => (
                "(event_id, subscriber) IN (SELECT * FROM unnest($1::bytea[], $2::text[]))".into(),
                ids.iter().map(|i| i.event.to_bytes().to_vec()).collect(),
                ids.iter().map(|i| i.subscriber.clone()).collect(),
            ),
            DeadSelector::Subscriber { route, subscriber } => (
                "route = ($2::text[])[1] AND subscriber = ($2::text[])[2] AND cardinality($1::bytea[]) = 0"
                    .into(),
                Vec::new(),
                vec![route.clone(), subscriber.clone()],
            ),
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn append(&self, event: NewEvent) -> Result<AppendOutcome, StoreError> {
        self.write(|reply| Write::Append(event, reply)).await
    }

    async fn claim_due(
        &self,
        route: &str,
        subscriber: &str,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let inner = &self.inner;
        let client = inner.client().await?;
        let statement = client
            .prepare_cached(&inner.sql.claim)
            .await
            .map_err(|e| inner.failed(e))?;
        let rows = client
            .query(
                &statement,
                &[
                    &route,
                    &subscriber,
                    &db_ms(until_ms),
                    &(limit as i64),
                    &inner.owner,
                    &inner.lease_ms,
                ],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(Claimed {
                event: event_id(row.get::<_, &[u8]>(0))?,
                attempts: row.get::<_, i32>(1) as u32,
                due_ms: ms(row.get(2)),
                schedule_start_ms: ms(row.get(3)),
                received_ms: ms(row.get(4)),
                origin: origin_from(row.get(5)),
            });
        }
        out.sort_by_key(|c| c.due_ms);
        Ok(out)
    }

    async fn release(
        &self,
        route: &str,
        subscriber: &str,
        events: &[EventId],
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let ids: Vec<Vec<u8>> = events.iter().map(|e| e.to_bytes().to_vec()).collect();
        let client = inner.client().await?;
        let n = client
            .execute(
                &inner.sql.release,
                &[&inner.owner, &route, &subscriber, &ids],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        if n > 0 {
            let _ = client.execute(&inner.sql.notify, &[]).await;
        }
        Ok(())
    }

    async fn renew_claims(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let client = inner.client().await?;
        client
            .execute(&inner.sql.renew, &[&inner.owner, &inner.lease_ms])
            .await
            .map_err(|e| inner.failed(e))?;
        Ok(())
    }

    async fn record_attempt(&self, update: AttemptUpdate) -> Result<Recorded, StoreError> {
        self.write(|reply| Write::Attempt(update, reply)).await
    }

    async fn body(&self, event: EventId) -> Result<Option<Bytes>, StoreError> {
        let inner = &self.inner;
        let client = inner.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT body FROM {}.events WHERE id = $1", inner.schema),
                &[&event.to_bytes().as_slice()],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        Ok(row
            .and_then(|r| r.get::<_, Option<Vec<u8>>>(0))
            .map(Bytes::from))
    }

    async fn event(&self, event: EventId) -> Result<Option<EventView>, StoreError> {
        let inner = &self.inner;
        let s = &inner.schema;
        let client = inner.client().await?;
        let id = event.to_bytes().to_vec();
        let Some(row) = client
            .query_opt(
                &format!(
                    "SELECT route, received_ms, source_id, status, origin, headers, body_len, \
                     (SELECT count(*) FROM {s}.deliveries d \
                      WHERE d.event_id = e.id AND d.state IN (0, 2))::int AS open, \
                     pruned FROM {s}.events e WHERE id = $1"
                ),
                &[&id],
            )
            .await
            .map_err(|e| inner.failed(e))?
        else {
            return Ok(None);
        };
        let pruned: bool = row.get("pruned");
        let deliveries = if pruned {
            Vec::new()
        } else {
            client
                .query(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM {s}.deliveries d JOIN {s}.events e \
                         ON e.id = d.event_id WHERE d.event_id = $1 ORDER BY d.subscriber"
                    ),
                    &[&id],
                )
                .await
                .map_err(|e| inner.failed(e))?
                .iter()
                .map(delivery_view)
                .collect::<Result<_, _>>()?
        };
        let headers: Value = row.get("headers");
        Ok(Some(EventView {
            event_id: event,
            route: row.get("route"),
            received_ms: ms(row.get("received_ms")),
            source_id: if pruned { None } else { row.get("source_id") },
            status: if pruned { None } else { row.get("status") },
            origin: origin_from(row.get("origin")),
            headers: serde_json::from_value(headers).unwrap_or_default(),
            body_len: if pruned {
                0
            } else {
                row.get::<_, i32>("body_len") as u64
            },
            open: row.get::<_, i32>("open") as u32,
            pruned,
            deliveries,
        }))
    }

    async fn events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        let inner = &self.inner;
        let s = &inner.schema;
        let client = inner.client().await?;
        let before = match &query.before {
            Some(c) => c.parse::<i64>().map_err(|_| {
                StoreError::Corrupt("the `before` cursor is not one this store made".into())
            })?,
            None => i64::MAX,
        };
        let columns = "id, seq, route, received_ms, source_id, status, origin, body_len";
        let fetch = query.limit as i64 + 1;
        let rows = match (&query.source_id, &query.route) {
            (Some(source), route) => {
                client
                    .query(
                        &format!(
                            "SELECT {columns} FROM {s}.events WHERE source_id = $1 \
                             AND ($2::text IS NULL OR route = $2) AND seq < $3 AND NOT pruned \
                             ORDER BY seq DESC LIMIT $4"
                        ),
                        &[source, route, &before, &fetch],
                    )
                    .await
            }
            (None, Some(route)) => {
                client
                    .query(
                        &format!(
                            "SELECT {columns} FROM {s}.events WHERE route = $1 AND seq < $2 \
                             AND NOT pruned ORDER BY seq DESC LIMIT $3"
                        ),
                        &[route, &before, &fetch],
                    )
                    .await
            }
            (None, None) => {
                client
                    .query(
                        &format!(
                            "SELECT {columns} FROM {s}.events WHERE seq < $1 AND NOT pruned \
                             ORDER BY seq DESC LIMIT $2"
                        ),
                        &[&before, &fetch],
                    )
                    .await
            }
        }
        .map_err(|e| inner.failed(e))?;
        let more = rows.len() > query.limit;
        let rows = &rows[..rows.len().min(query.limit)];
        let ids: Vec<Vec<u8>> = rows.iter().map(|r| r.get::<_, Vec<u8>>("id")).collect();
        let briefs = client
            .query(
                &format!(
                    "SELECT event_id, subscriber, state, attempts FROM {s}.deliveries \
                     WHERE event_id = ANY($1) ORDER BY subscriber"
                ),
                &[&ids],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let id: Vec<u8> = row.get("id");
            let mut deliveries = Vec::new();
            for b in briefs
                .iter()
                .filter(|b| b.get::<_, &[u8]>(0) == id.as_slice())
            {
                deliveries.push(DeliveryBrief {
                    subscriber: b.get(1),
                    state: state_from(b.get(2))?,
                    attempts: b.get::<_, i32>(3) as u32,
                });
            }
            events.push(EventSummary {
                event_id: event_id(&id)?,
                route: row.get("route"),
                received_ms: ms(row.get("received_ms")),
                source_id: row.get("source_id"),
                status: row.get("status"),
                origin: origin_from(row.get("origin")),
                body_len: row.get::<_, i32>("body_len") as u64,
                deliveries,
            });
        }
        let next_before = if more {
            rows.last().map(|r| r.get::<_, i64>("seq").to_string())
        } else {
            None
        };
        Ok(EventPage {
            events,
            next_before,
        })
    }

    async fn dead_letters(&self, query: DeadLetterQuery) -> Result<Vec<DeliveryView>, StoreError> {
        let inner = &self.inner;
        let s = &inner.schema;
        let client = inner.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM {s}.deliveries d JOIN {s}.events e \
                     ON e.id = d.event_id WHERE d.state = 2 \
                     AND ($1::text IS NULL OR d.route = $1) AND ($2::text IS NULL OR d.subscriber = $2) \
                     ORDER BY d.updated_ms DESC, d.event_id DESC LIMIT $3"
                ),
                &[&query.route, &query.subscriber, &(query.limit as i64)],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        rows.iter().map(delivery_view).collect()
    }

    async fn replay(
        &self,
        selector: DeadSelector,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let inner = &self.inner;
        let s = &inner.schema;
        let (filter, ids, names) = Self::dead_filter(&selector);
        let client = inner.client().await?;
        let rows = client
            .query(
                &format!(
                    "WITH t AS (
                       SELECT event_id, subscriber FROM {s}.deliveries
                       WHERE state = 2 AND {filter}
                       ORDER BY updated_ms LIMIT $3 FOR UPDATE SKIP LOCKED
                     ), d AS (
                       UPDATE {s}.deliveries d SET state = 0, attempts = 0, dead_reason = NULL,
                         due_ms = $4, schedule_start_ms = $4, updated_ms = $4,
                         owner = NULL, lease_until = NULL
                       FROM t WHERE d.event_id = t.event_id AND d.subscriber = t.subscriber
                       RETURNING d.*
                     )
                     SELECT {DELIVERY_COLUMNS} FROM d JOIN {s}.events e ON e.id = d.event_id"
                ),
                &[&ids, &names, &(limit as i64), &db_ms(now_ms)],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        if !rows.is_empty() {
            let _ = client.execute(&inner.sql.notify, &[]).await;
        }
        rows.iter().map(delivery_view).collect()
    }

    async fn delete_dead(
        &self,
        selector: DeadSelector,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let inner = &self.inner;
        let s = &inner.schema;
        let (filter, ids, names) = Self::dead_filter(&selector);
        let client = inner.client().await?;
        let rows = client
            .query(
                &format!(
                    "WITH t AS (
                       SELECT event_id, subscriber FROM {s}.deliveries
                       WHERE state = 2 AND {filter}
                       ORDER BY updated_ms LIMIT $3 FOR UPDATE SKIP LOCKED
                     ), d AS (
                       UPDATE {s}.deliveries d SET state = 3, updated_ms = $4
                       FROM t WHERE d.event_id = t.event_id AND d.subscriber = t.subscriber
                       RETURNING d.*
                     ), closed AS (
                       INSERT INTO {s}.closings (event_id, closed_ms)
                       SELECT DISTINCT event_id, $4::bigint FROM d
                     )
                     SELECT {DELIVERY_COLUMNS} FROM d JOIN {s}.events e ON e.id = d.event_id"
                ),
                &[&ids, &names, &(limit as i64), &db_ms(now_ms)],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        rows.iter().map(delivery_view).collect()
    }

    async fn kill_pending(
        &self,
        route: &str,
        subscriber: &str,
        reason: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let inner = &self.inner;
        let s = &inner.schema;
        let free = claimable(s, "dd");
        let client = inner.client().await?;
        let n = client
            .execute(
                &format!(
                    "WITH t AS (
                       SELECT event_id, subscriber FROM {s}.deliveries dd
                       WHERE route = $1 AND subscriber = $2 AND state = 0
                         AND {free}
                       LIMIT $3 FOR UPDATE SKIP LOCKED
                     )
                     UPDATE {s}.deliveries d SET state = 2, dead_reason = $4, updated_ms = $5,
                       owner = NULL, lease_until = NULL
                     FROM t WHERE d.event_id = t.event_id AND d.subscriber = t.subscriber"
                ),
                &[
                    &route,
                    &subscriber,
                    &(limit as i64),
                    &reason,
                    &db_ms(now_ms),
                ],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        Ok(n as usize)
    }

    async fn counts(&self) -> Result<Vec<LaneCounts>, StoreError> {
        let inner = &self.inner;
        let client = inner.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT route, subscriber, count(*) FILTER (WHERE state = 0), \
                     count(*) FILTER (WHERE state = 2) FROM {}.deliveries \
                     WHERE state IN (0, 2) GROUP BY route, subscriber ORDER BY route, subscriber",
                    inner.schema
                ),
                &[],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        Ok(rows
            .iter()
            .map(|r| LaneCounts {
                route: r.get(0),
                subscriber: r.get(1),
                pending: r.get::<_, i64>(2) as u64,
                dead: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    async fn prune(&self, policy: PrunePolicy) -> Result<PruneReport, StoreError> {
        let inner = &self.inner;
        let s = &inner.schema;
        let mut client = inner.client().await?;
        let tx = client.transaction().await.map_err(|e| inner.failed(e))?;
        // One replica prunes at a time; the others skip this run. The key
        // is the migrations' plus one, wrapping (never an int overflow).
        let got: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1,
                   CASE WHEN hashtext($2) = 2147483647 THEN -2147483648 ELSE hashtext($2) + 1 END)",
                &[&LOCK_SPACE, &inner.schema],
            )
            .await
            .map_err(|e| inner.failed(e))?
            .get(0);
        if !got {
            return Ok(PruneReport::default());
        }
        let now = db_ms(policy.now_ms);
        let limit = policy.max_items as i64;
        let dl_cutoff = db_ms(
            policy
                .now_ms
                .saturating_sub(policy.dead_letter_retention_ms),
        );
        // 1. Dead letters past their own retention are deleted; their
        // events' details go in this same run once nothing else holds
        // them (a closing at time 0).
        let dead_letters: i64 = tx
            .query_one(
                &format!(
                    "WITH t AS (
                       SELECT event_id, subscriber FROM {s}.deliveries
                       WHERE state = 2 AND updated_ms < $1 LIMIT $2 FOR UPDATE SKIP LOCKED
                     ), d AS (
                       UPDATE {s}.deliveries d SET state = 3, updated_ms = $3
                       FROM t WHERE d.event_id = t.event_id AND d.subscriber = t.subscriber
                       RETURNING d.event_id
                     ), closed AS (
                       INSERT INTO {s}.closings (event_id, closed_ms)
                       SELECT DISTINCT event_id, 0::bigint FROM d
                     )
                     SELECT count(*) FROM d"
                ),
                &[&dl_cutoff, &limit, &now],
            )
            .await
            .map_err(|e| inner.failed(e))?
            .get(0);
        let dead_letters = dead_letters as usize;
        // 2. Events done for longer than the retention lose their details:
        // none of their deliveries open (pending or dead), none ended
        // within the retention (an event is done when its last delivery
        // ended). Candidates are the closings older than the cutoff, each
        // read once and deleted: an event still open, or closed again
        // later, has (or will have) a later closing of its own.
        let cutoff = db_ms(policy.now_ms.saturating_sub(policy.retention_ms));
        let row = tx
            .query_one(
                &format!(
                    "WITH c AS (
                       DELETE FROM {s}.closings WHERE ctid IN (
                         SELECT ctid FROM {s}.closings WHERE closed_ms < $1
                         ORDER BY closed_ms LIMIT $2 FOR UPDATE SKIP LOCKED)
                       RETURNING event_id, closed_ms
                     ), e AS (
                       SELECT event_id, bool_or(closed_ms = 0) AS forced FROM c GROUP BY event_id
                     ), v AS (
                       SELECT ev.id FROM {s}.events ev JOIN e ON e.event_id = ev.id
                       WHERE NOT ev.pruned
                         AND NOT EXISTS (
                           SELECT 1 FROM {s}.deliveries d WHERE d.event_id = ev.id
                             AND (d.state IN (0, 2) OR (d.updated_ms >= $1 AND NOT e.forced)))
                       FOR UPDATE OF ev
                     ), gone AS (
                       DELETE FROM {s}.deliveries WHERE event_id IN (SELECT id FROM v)
                     ), pruned AS (
                       UPDATE {s}.events SET body = NULL, headers = '[]', source_id = NULL,
                         status = NULL, pruned = true
                       WHERE id IN (SELECT id FROM v)
                       RETURNING 1
                     )
                     SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM pruned)"
                ),
                &[&cutoff, &limit],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        let closings = row.get::<_, i64>(0) as usize;
        let mut details = row.get::<_, i64>(1) as usize;
        // ... and, as before migration 5, events counted done in their own
        // row: those without deliveries (done when received), and those a
        // replica of the previous version closed.
        details += tx
            .execute(
                &format!(
                    "WITH v AS (
                       SELECT id FROM {s}.events
                       WHERE open_count = 0 AND NOT pruned AND done_ms < $1
                       LIMIT $2 FOR UPDATE SKIP LOCKED
                     ), gone AS (
                       DELETE FROM {s}.deliveries WHERE event_id IN (SELECT id FROM v)
                     )
                     UPDATE {s}.events SET body = NULL, headers = '[]', source_id = NULL,
                       status = NULL, pruned = true
                     WHERE id IN (SELECT id FROM v)"
                ),
                &[&cutoff, &limit],
            )
            .await
            .map_err(|e| inner.failed(e))? as usize;
        let tasks = tx
            .execute(
                &format!(
                    "DELETE FROM {s}.expected_tasks WHERE (route, id) IN (
                       SELECT route, id FROM {s}.expected_tasks
                       WHERE state IN (2, 3) AND updated_ms < $1 LIMIT $2)"
                ),
                &[&cutoff, &limit],
            )
            .await
            .map_err(|e| inner.failed(e))? as usize;
        tx.execute(
            &format!(
                "DELETE FROM {s}.replicas WHERE alive_until < {NOW_MS} - 3600000
                 AND NOT EXISTS (SELECT 1 FROM {s}.deliveries d WHERE d.owner = replicas.owner)"
            ),
            &[],
        )
        .await
        .map_err(|e| inner.failed(e))?;
        let key_cutoff = db_ms(policy.now_ms.saturating_sub(policy.ttl_ms));
        let keys = tx
            .execute(
                &format!(
                    "DELETE FROM {s}.events WHERE id IN (
                       SELECT id FROM {s}.events WHERE pruned AND received_ms < $1
                       LIMIT $2 FOR UPDATE SKIP LOCKED)"
                ),
                &[&key_cutoff, &limit],
            )
            .await
            .map_err(|e| inner.failed(e))? as usize;
        tx.commit().await.map_err(|e| inner.failed(e))?;
        Ok(PruneReport {
            details,
            keys,
            dead_letters,
            more: details >= policy.max_items
                || closings == policy.max_items
                || tasks == policy.max_items
                || keys == policy.max_items
                || dead_letters == policy.max_items,
        })
    }

    async fn size(&self) -> Result<StoreSize, StoreError> {
        let inner = &self.inner;
        let client = inner.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT pg_total_relation_size('{s}.events') + pg_total_relation_size('{s}.deliveries'),
                            pg_relation_size('{s}.events') + pg_relation_size('{s}.deliveries')",
                    s = inner.schema
                ),
                &[],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        Ok(StoreSize {
            file_bytes: ms(row.get(0)),
            used_bytes: ms(row.get(1)),
            disk: None,
        })
    }

    async fn expect(&self, task: NewExpected) -> Result<(ExpectedTask, bool), StoreError> {
        let inner = &self.inner;
        let s = &inner.schema;
        let client = inner.client().await?;
        let finals: Vec<&str> = super::FINAL_STATUSES.to_vec();
        let statement = format!(
            "WITH prior AS (
               SELECT e.origin, e.status FROM {s}.events e
               WHERE e.route = $1 AND e.source_id = $2 AND e.status = ANY($6) AND NOT e.pruned
               ORDER BY e.seq LIMIT 1
             ), ins AS (
               INSERT INTO {s}.expected_tasks (route, id, endpoint, submitted_ms, state, settled_by,
                                               status, next_poll_ms, updated_ms)
               SELECT $1, $2, $3, $4, CASE WHEN p.origin IS NULL THEN 0 ELSE 2 END, p.origin,
                      p.status, $5, $4
               FROM (SELECT 1) one LEFT JOIN prior p ON true
               ON CONFLICT (route, id) DO NOTHING
               RETURNING {EXPECTED_COLUMNS}
             )
             SELECT {EXPECTED_COLUMNS}, true AS created FROM ins
             UNION ALL
             SELECT {EXPECTED_COLUMNS}, false FROM {s}.expected_tasks
             WHERE route = $1 AND id = $2 AND NOT EXISTS (SELECT 1 FROM ins)"
        );
        for _ in 0..3 {
            let rows = client
                .query(
                    &statement,
                    &[
                        &task.route,
                        &task.id,
                        &task.endpoint,
                        &db_ms(task.submitted_ms),
                        &db_ms(task.first_poll_ms),
                        &finals,
                    ],
                )
                .await
                .map_err(|e| inner.failed(e))?;
            if let Some(row) = rows.first() {
                return Ok((expected_task(row)?, row.get("created")));
            }
            // Inserted by another replica at the same instant: read it again.
        }
        Err(StoreError::Unavailable(
            "the expected task could not be read back".into(),
        ))
    }

    async fn expected(&self, query: ExpectedQuery) -> Result<Vec<ExpectedTask>, StoreError> {
        let inner = &self.inner;
        let s = &inner.schema;
        let client = inner.client().await?;
        let state = query.state.map(expected_state_code);
        let rows = client
            .query(
                &format!(
                    "SELECT {EXPECTED_COLUMNS} FROM {s}.expected_tasks
                     WHERE ($1::text IS NULL OR route = $1) AND ($2::smallint IS NULL OR state = $2)
                     ORDER BY submitted_ms DESC, id DESC LIMIT $3"
                ),
                &[&query.route, &state, &(query.limit as i64)],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        rows.iter().map(expected_task).collect()
    }

    async fn claim_polls(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<ExpectedTask>, StoreError> {
        let inner = &self.inner;
        let s = &inner.schema;
        let free = claimable(s, "dd");
        let client = inner.client().await?;
        let rows = client
            .query(
                &format!(
                    "WITH picked AS (
                       SELECT route, id FROM {s}.expected_tasks dd
                       WHERE state IN (0, 1) AND next_poll_ms <= $1
                         AND {free}
                       ORDER BY next_poll_ms LIMIT $2 FOR UPDATE SKIP LOCKED
                     )
                     UPDATE {s}.expected_tasks t SET owner = $3, lease_until = {NOW_MS} + $4
                     FROM picked WHERE t.route = picked.route AND t.id = picked.id
                     RETURNING t.route, t.id, t.endpoint, t.submitted_ms, t.state, t.settled_by,
                       t.status, t.polls, t.next_poll_ms, t.updated_ms, t.last_result"
                ),
                &[
                    &db_ms(now_ms),
                    &(limit as i64),
                    &inner.owner,
                    &inner.lease_ms,
                ],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        let mut out: Vec<ExpectedTask> =
            rows.iter().map(expected_task).collect::<Result<_, _>>()?;
        out.sort_by_key(|t| t.next_poll_ms);
        Ok(out)
    }

    async fn record_poll(&self, update: PollUpdate) -> Result<Recorded, StoreError> {
        let inner = &self.inner;
        let s = &inner.schema;
        let client = inner.client().await?;
        let (state, next, via, status) = match &update.next {
            PollNext::Again { at_ms } => (1i16, db_ms(*at_ms), None, None),
            PollNext::Done { status, via } => (2, 0, Some(origin_code(*via)), Some(status.clone())),
            PollNext::Expired => (3, 0, None, None),
        };
        let n = client
            .execute(
                &format!(
                    "UPDATE {s}.expected_tasks SET polls = polls + 1, updated_ms = $3,
                       last_result = $4, state = $5::smallint,
                       next_poll_ms = CASE WHEN $5::smallint = 1 THEN $6::bigint ELSE next_poll_ms END,
                       settled_by = COALESCE(settled_by, $7::smallint), status = COALESCE($8::text, status),
                       owner = NULL, lease_until = NULL
                     WHERE route = $1 AND id = $2 AND owner = $9
                       AND (state IN (0, 1) OR (state = 2 AND $5::smallint = 2))"
                ),
                &[
                    &update.route,
                    &update.id,
                    &db_ms(update.now_ms),
                    &update.result,
                    &state,
                    &next,
                    &via,
                    &status,
                    &inner.owner,
                ],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        Ok(if n > 0 {
            Recorded::Applied
        } else {
            Recorded::Stale
        })
    }

    async fn expected_counts(&self) -> Result<Vec<(String, ExpectedState, u64)>, StoreError> {
        let inner = &self.inner;
        let client = inner.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT route, state, count(*) FROM {}.expected_tasks GROUP BY route, state",
                    inner.schema
                ),
                &[],
            )
            .await
            .map_err(|e| inner.failed(e))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get::<_, String>(0),
                    expected_state_from(r.get(1))?,
                    r.get::<_, i64>(2) as u64,
                ))
            })
            .collect()
    }

    fn available(&self) -> bool {
        self.inner.available.load(Ordering::Relaxed)
    }

    fn wakeups(&self) -> Option<Arc<Notify>> {
        Some(self.inner.wake.clone())
    }

    async fn close(&self) {
        // The writer finishes what is queued, then every claim is released
        // (other replicas are told), then the background tasks stop.
        drop(self.writer.lock().expect("writer lock").take());
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        let mut tasks = tasks.into_iter();
        for writer in tasks.by_ref().take(WRITERS) {
            let _ = writer.await;
        }
        let inner = &self.inner;
        match inner.client().await {
            Ok(client) => {
                if let Err(e) = client
                    .execute(&inner.sql.release_all, &[&inner.owner])
                    .await
                {
                    tracing::warn!(error = %e, "cannot release claims at shutdown; their leases will expire");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot release claims at shutdown; their leases will expire")
            }
        }
        inner.notify().await;
        inner.stop.cancel();
        for task in tasks {
            let _ = task.await;
        }
        inner.pool.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(n: u8) -> Write {
        let event = NewEvent {
            id: EventId::from_bytes([n; 16]),
            route: "muapi".into(),
            received_ms: 1,
            source_id: None,
            status: None,
            origin: Origin::Callback,
            headers: Vec::new(),
            body: Bytes::from_static(b"{}"),
            subscribers: vec!["app".into()],
            ttl_ms: 1,
            settles: false,
        };
        Write::Append(event, oneshot::channel().0)
    }

    fn attempt(n: u8) -> Write {
        let update = AttemptUpdate {
            event: EventId::from_bytes([n; 16]),
            route: "muapi".into(),
            subscriber: "app".into(),
            attempt: None,
            next: Next::Delivered,
        };
        Write::Attempt(update, oneshot::channel().0)
    }

    fn queues(appends: u8, attempts: u16) -> Receivers {
        let (atx, appends_rx) = mpsc::channel(1024);
        let (rtx, attempts_rx) = mpsc::channel(4096);
        for n in 0..appends {
            atx.try_send(append(n)).unwrap();
        }
        for n in 0..attempts {
            rtx.try_send(attempt(n as u8)).unwrap();
        }
        Receivers {
            appends: appends_rx,
            attempts: attempts_rx,
        }
    }

    fn kinds(batch: &[Write]) -> (usize, usize) {
        let appends = batch
            .iter()
            .filter(|w| matches!(w, Write::Append(..)))
            .count();
        (appends, batch.len() - appends)
    }

    #[test]
    fn a_batch_takes_every_waiting_append_and_a_bounded_share_of_results() {
        // The writer took one result first; appends that arrived since go
        // in, then results up to the bound.
        let mut rx = queues(5, 1000);
        let mut batch = vec![attempt(200)];
        take_batch(&mut rx, &mut batch, 1024);
        assert_eq!(kinds(&batch), (5, ATTEMPTS_WITH_APPENDS));
        assert_eq!(rx.attempts.len(), 1000 + 1 - ATTEMPTS_WITH_APPENDS);
    }

    #[test]
    fn a_batch_without_appends_takes_results_up_to_max_batch() {
        let mut rx = queues(0, 3000);
        let mut batch = vec![attempt(200)];
        take_batch(&mut rx, &mut batch, 1024);
        assert_eq!(kinds(&batch), (0, 1024));
    }

    #[test]
    fn a_batch_never_passes_max_batch_and_results_fill_what_appends_leave() {
        let mut rx = queues(100, 10);
        let mut batch = vec![append(200)];
        take_batch(&mut rx, &mut batch, 64);
        assert_eq!(kinds(&batch), (64, 0));
        assert_eq!(rx.appends.len(), 37);
        let mut batch = vec![append(201)];
        take_batch(&mut rx, &mut batch, 64);
        assert_eq!(kinds(&batch), (38, 10));
    }
}
