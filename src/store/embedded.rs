//! The embedded store: one redb file under `store.path`, written by one
//! writer thread with group commit, for one process.
//!
//! Every change is a request to the writer. The writer takes the first
//! waiting request and everything else already queued (up to `max_batch`),
//! applies them all in one write transaction, commits once (one fsync),
//! then answers every waiter. Under load the batch grows, so throughput
//! grows with load instead of being capped at one fsync per callback. Reads
//! use their own read transactions and never wait for the writer.
//!
//! Layout (records in [`super::codec`]'s compact, versioned format; route
//! and subscriber names are small numbers from `names`):
//! - `keys`: event id (u128) → when it was accepted, its record's sequence
//!   number, its route. The idempotency index; outlives the details until
//!   `idempotency.ttl`, swept in slices of the id space.
//! - `events`: sequence number → the event, its deliveries and its body.
//!   Sequence numbers follow receipt, so commits append to the right edge
//!   of the tree (a copy-on-write B-tree rewrites every page it touches).
//! - `due`: (lane, due ms, seq) for pending deliveries, per subscriber so a
//!   lane reads only its own, a page at a time.
//! - `dead`: (lane, dead since ms, seq) for dead letters.
//! - `done`: (done ms, seq) for events whose deliveries all ended: the
//!   pruner drops their details after `store.retention`.
//! - `sources`: (hash of route and source id, seq): lookups by muapi task id.
//! - `counts`: lane → (pending, dead), kept in every transaction, so
//!   gauges are read, never counted.
//! - `names`: number → route name or `route/subscriber`; `meta`: counters.
//!
//! Claims (which deliveries a lane holds) live in memory: one process owns
//! the file (redb's lock), so a claim never outlives its process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::codec::{self, DeliveryRecord, EventRecord, KeyRecord, StoredBody};
use super::{
    AppendOutcome, AttemptUpdate, Claimed, DeadLetterQuery, DeadSelector, DeliveryBrief,
    DeliveryId, DeliveryState, DeliveryView, EventId, EventPage, EventQuery, EventSummary,
    EventView, ExpectedQuery, ExpectedState, ExpectedTask, LaneCounts, NewEvent, NewExpected, Next,
    PollNext, PollUpdate, PrunePolicy, PruneReport, Recorded, Store, StoreError, StoreSize,
};

const NAMES: TableDefinition<u32, &str> = TableDefinition::new("names");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const KEYS: TableDefinition<u128, &[u8]> = TableDefinition::new("keys");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const DUE: TableDefinition<(u32, u64, u64), ()> = TableDefinition::new("due");
const DEAD: TableDefinition<(u32, u64, u64), ()> = TableDefinition::new("dead");
const DONE: TableDefinition<(u64, u64), ()> = TableDefinition::new("done");
const SOURCES: TableDefinition<(u64, u64), ()> = TableDefinition::new("sources");
const COUNTS: TableDefinition<u32, (u64, u64)> = TableDefinition::new("counts");
const EXPECTED: TableDefinition<(u32, &str), &[u8]> = TableDefinition::new("expected");
const POLLS: TableDefinition<(u64, u32, &str), ()> = TableDefinition::new("expected_polls");
const EXPECTED_BY_TIME: TableDefinition<(u64, u32, &str), ()> =
    TableDefinition::new("expected_by_time");
const EXPECTED_CLOSED: TableDefinition<(u64, u32, &str), ()> =
    TableDefinition::new("expected_closed");
const EXPECTED_COUNTS: TableDefinition<(u32, u8), u64> = TableDefinition::new("expected_counts");

/// `meta` keys.
const NEXT_SEQ: &str = "next_seq";
const NEXT_NAME: &str = "next_name";
const SWEEP_SLICE: &str = "key_sweep_slice";
const SWEEP_AT: &str = "key_sweep_at";
const FORMAT: &str = "format";
/// The layout version of this file (tables and their meaning).
const FORMAT_VERSION: u64 = 3;

/// The store file's name inside `store.path`.
pub const FILE_NAME: &str = "hookrelay.redb";

/// How long a writer request may wait for room in the queue before the
/// ingress answers 503 (the disk is not keeping up).
const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The key sweep visits the id space in this many slices, a few per prune
/// run, so no run touches more than a slice of the keys.
const SWEEP_SLICES: u64 = 256;

/// An event listing looks at most this many records per page (a rare
/// route's page may come back short, with a cursor to go on).
const LIST_SCAN: usize = 10_000;

/// Called after every commit with the batch size and commit duration.
pub type CommitObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

/// Settings of the embedded store.
#[derive(Clone)]
pub struct EmbeddedOptions {
    /// Most requests one group commit takes.
    pub max_batch: usize,
    /// redb's page cache (reads and writes).
    pub cache_bytes: usize,
    /// Told about every commit (for metrics).
    pub observer: Option<CommitObserver>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            cache_bytes: 8 * 1024 * 1024,
            observer: None,
        }
    }
}

/// A change for the writer.
enum Op {
    /// A new event, with its body already packed by the caller's task (so
    /// deflate runs beside other requests, not on the writer thread).
    Append(NewEvent, StoredBody),
    Attempt(AttemptUpdate),
    Replay(DeadSelector, u64, usize),
    Delete(DeadSelector, u64, usize),
    Kill(String, String, String, u64, usize),
    Prune(PrunePolicy),
    Expect(NewExpected),
    Poll(PollUpdate),
}

/// What a change produced.
enum Done {
    Append(AppendOutcome),
    Recorded(Recorded),
    Views(Vec<DeliveryView>),
    Count(usize),
    Pruned(PruneReport),
    Expected(ExpectedTask, bool),
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// Route and subscriber names and their numbers (small, loaded at open).
#[derive(Default)]
struct Names {
    by_id: HashMap<u32, Arc<str>>,
    by_name: HashMap<Arc<str>, u32>,
}

impl Names {
    fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    fn name(&self, id: u32) -> Option<&Arc<str>> {
        self.by_id.get(&id)
    }

    fn lane_id(&self, route: &str, subscriber: &str) -> Option<u32> {
        self.id(&lane_name(route, subscriber))
    }

    /// (route, subscriber) of a lane number.
    fn lane(&self, id: u32) -> (String, String) {
        match self.name(id).and_then(|n| n.split_once('/')) {
            Some((r, s)) => (r.to_string(), s.to_string()),
            None => (String::new(), format!("#{id}")),
        }
    }

    fn route(&self, id: u32) -> String {
        self.name(id).map(|n| n.to_string()).unwrap_or_default()
    }

    fn insert(&mut self, id: u32, name: &str) {
        let name: Arc<str> = Arc::from(name);
        self.by_id.insert(id, name.clone());
        self.by_name.insert(name, id);
    }

    fn lanes(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_id
            .iter()
            .filter(|(_, n)| n.contains('/'))
            .map(|(id, _)| *id)
    }

    fn route_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_id
            .iter()
            .filter(|(_, n)| !n.contains('/'))
            .map(|(id, _)| *id)
    }
}

fn lane_name(route: &str, subscriber: &str) -> String {
    format!("{route}/{subscriber}")
}

/// The open database, shared by the writer and readers. After an I/O
/// error redb refuses further work until the file is closed and opened
/// again; the writer does that here.
struct Handle {
    path: PathBuf,
    cache_bytes: usize,
    current: RwLock<Option<Arc<Database>>>,
    /// Held (shared) by every read for the life of its read transaction,
    /// and (exclusively) by a reopen or close: an open read transaction
    /// keeps the file lock, so the file can only be closed once none is left.
    readers: RwLock<()>,
    names: RwLock<Names>,
    /// Deliveries claimed by lanes of this process: (lane, seq).
    claims: Mutex<HashSet<(u32, u64)>>,
    /// Expected tasks being polled by this process: (route, task id).
    poll_claims: Mutex<HashSet<(u32, String)>>,
}

impl Handle {
    fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.current
            .read()
            .expect("store handle lock")
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is closed or being reopened".into()))
    }

    /// Closes the database and opens it again (redb repairs it if needed).
    fn reopen(&self) -> Result<(), StoreError> {
        let _no_readers = self.readers.write().expect("store readers lock");
        drop(self.current.write().expect("store handle lock").take());
        let db = open_or_convert(&self.path, self.cache_bytes)?;
        *self.names.write().expect("names lock") = load_names(&db)?;
        *self.current.write().expect("store handle lock") = Some(Arc::new(db));
        tracing::warn!(path = %self.path.display(), "store reopened after an error");
        Ok(())
    }

    /// Closes the file once no read is in progress.
    fn close(&self) {
        let _no_readers = self.readers.write().expect("store readers lock");
        if let Some(db) = self.current.write().expect("store handle lock").take() {
            match Arc::try_unwrap(db) {
                Ok(db) => {
                    if let Err(e) = db.close() {
                        tracing::error!(error = %e, "closing the store failed");
                    }
                }
                Err(_) => {
                    tracing::warn!("store still referenced at close; it closes when released")
                }
            }
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Opens (or creates) the file; `None` when it was written by hookrelay 0.1
/// and must be converted first.
fn open_database(path: &Path, cache_bytes: usize) -> Result<Option<Database>, StoreError> {
    let shown = path.display().to_string();
    let mut builder = redb::Builder::new();
    builder.set_cache_size(cache_bytes);
    builder.set_repair_callback(move |session| {
        if session.progress() == 0.0 {
            tracing::warn!(path = %shown, "store was not closed cleanly; repairing it");
        }
    });
    let db = match builder.create(path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(StoreError::Locked(path.display().to_string()))
        }
        Err(redb::DatabaseError::UpgradeRequired(_)) => return Ok(None),
        Err(e) => return Err(StoreError::Backend(format!("{}: {e}", path.display()))),
    };
    // Create every table up front so readers never meet a missing one.
    let txn = db.begin_write().map_err(backend)?;
    {
        txn.open_table(NAMES).map_err(backend)?;
        let mut meta = txn.open_table(META).map_err(backend)?;
        let format = meta.get(FORMAT).map_err(backend)?.map(|v| v.value());
        match format {
            None => {
                meta.insert(FORMAT, FORMAT_VERSION).map_err(backend)?;
            }
            Some(v) if v == FORMAT_VERSION => {}
            // Layout 2 holds records of version 1 only, which this build
            // reads; marking the file 3 makes earlier builds, which cannot
            // read the version-2 records written from now on, refuse it
            // at open instead of failing record by record.
            Some(2) => {
                meta.insert(FORMAT, FORMAT_VERSION).map_err(backend)?;
            }
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "{} has layout version {v}; this hookrelay reads version {FORMAT_VERSION}",
                    path.display()
                )))
            }
        }
        txn.open_table(KEYS).map_err(backend)?;
        txn.open_table(EVENTS).map_err(backend)?;
        txn.open_table(DUE).map_err(backend)?;
        txn.open_table(DEAD).map_err(backend)?;
        txn.open_table(DONE).map_err(backend)?;
        txn.open_table(SOURCES).map_err(backend)?;
        txn.open_table(COUNTS).map_err(backend)?;
        txn.open_table(EXPECTED).map_err(backend)?;
        txn.open_table(POLLS).map_err(backend)?;
        txn.open_table(EXPECTED_BY_TIME).map_err(backend)?;
        txn.open_table(EXPECTED_CLOSED).map_err(backend)?;
        txn.open_table(EXPECTED_COUNTS).map_err(backend)?;
    }
    txn.commit().map_err(backend)?;
    Ok(Some(db))
}

/// Opens the file, converting a 0.1 store first.
fn open_or_convert(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    if let Some(db) = open_database(path, cache_bytes)? {
        return Ok(db);
    }
    super::upgrade::convert_0_1(path, cache_bytes)?;
    open_database(path, cache_bytes)?
        .ok_or_else(|| StoreError::Corrupt(format!("{} could not be converted", path.display())))
}

fn load_names(db: &Database) -> Result<Names, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(NAMES).map_err(backend)?;
    let mut names = Names::default();
    for entry in table.iter().map_err(backend)? {
        let (id, name) = entry.map_err(backend)?;
        names.insert(id.value(), name.value());
    }
    Ok(names)
}

/// redb behind the [`Store`] trait, with a group-commit writer thread.
pub struct EmbeddedStore {
    db: Arc<Handle>,
    writer: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store under `dir` and starts its writer. A
    /// store written by hookrelay 0.1 is converted first (the old file is
    /// kept beside it).
    ///
    /// Fails with [`StoreError::Locked`] if another process has it open.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self, StoreError> {
        let EmbeddedOptions {
            max_batch,
            cache_bytes,
            observer,
        } = options;
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create store directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(FILE_NAME);
        let database = open_or_convert(&path, cache_bytes)?;
        let names = load_names(&database)?;
        let db = Arc::new(Handle {
            current: RwLock::new(Some(Arc::new(database))),
            path: path.clone(),
            cache_bytes,
            readers: RwLock::new(()),
            names: RwLock::new(names),
            claims: Mutex::new(HashSet::new()),
            poll_claims: Mutex::new(HashSet::new()),
        });
        let (tx, rx) = mpsc::channel(max_batch.max(64) * 4);
        let writer_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("hookrelay-store".into())
            .spawn(move || writer_loop(writer_db, rx, max_batch.max(1), observer))
            .map_err(|e| StoreError::Backend(format!("cannot start store writer: {e}")))?;
        Ok(Self {
            db,
            writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            path,
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let stopped = || StoreError::Unavailable("the store writer has stopped".into());
        let writer = self.writer.lock().expect("writer lock").clone();
        let writer = writer.ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        match writer.send_timeout(Request { op, reply }, QUEUE_WAIT).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => return Err(StoreError::Overloaded),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(stopped()),
        }
        answer.await.map_err(|_| stopped())?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Handle, &redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let _reading = db.readers.read().expect("store readers lock");
            let txn = db.get()?.begin_read().map_err(backend)?;
            f(&db, &txn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

/// Read-side helpers over one read transaction.
fn seq_of(txn: &redb::ReadTransaction, event: EventId) -> Result<Option<KeyRecord>, StoreError> {
    let keys = txn.open_table(KEYS).map_err(backend)?;
    match keys.get(event.0).map_err(backend)? {
        Some(v) => codec::decode_key(v.value()).map(Some),
        None => Ok(None),
    }
}

fn read_event(
    txn: &redb::ReadTransaction,
    seq: u64,
    with_body: bool,
) -> Result<Option<EventRecord>, StoreError> {
    let events = txn.open_table(EVENTS).map_err(backend)?;
    match events.get(seq).map_err(backend)? {
        Some(v) => codec::decode_event(v.value(), with_body).map(Some),
        None => Ok(None),
    }
}

fn view(names: &Names, e: &EventRecord, d: &DeliveryRecord) -> DeliveryView {
    let (route, subscriber) = names.lane(d.lane);
    DeliveryView {
        id: DeliveryId {
            event: e.id,
            subscriber: subscriber.clone(),
        }
        .to_string(),
        event_id: e.id,
        route,
        subscriber,
        state: d.state,
        attempts: d.attempts,
        due_ms: d.due_ms,
        received_ms: e.received_ms,
        schedule_start_ms: d.schedule_start_ms,
        updated_ms: d.updated_ms,
        dead_reason: d.dead_reason.clone(),
        history: d.history.clone(),
    }
}

fn expected_task(route: &str, id: &str, e: &codec::ExpectedRecord) -> ExpectedTask {
    ExpectedTask {
        route: route.to_string(),
        id: id.to_string(),
        endpoint: e.endpoint.clone(),
        submitted_ms: e.submitted_ms,
        state: e.state,
        settled_by: e.settled_by,
        status: e.status.clone(),
        polls: e.polls,
        next_poll_ms: e.next_poll_ms,
        updated_ms: e.updated_ms,
        last_result: e.last_result.clone(),
    }
}

fn summary(names: &Names, e: &EventRecord) -> EventSummary {
    EventSummary {
        event_id: e.id,
        route: names.route(e.route),
        received_ms: e.received_ms,
        source_id: e.source_id.clone(),
        status: e.status.clone(),
        origin: e.origin,
        body_len: e.body.len(),
        deliveries: e
            .deliveries
            .iter()
            .map(|d| DeliveryBrief {
                subscriber: names.lane(d.lane).1,
                state: d.state,
                attempts: d.attempts,
            })
            .collect(),
    }
}

fn writer_loop(
    db: Arc<Handle>,
    mut rx: mpsc::Receiver<Request>,
    max_batch: usize,
    observer: Option<CommitObserver>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let size = batch.len();
        let mut effects = Effects::default();
        let applied = match db.get() {
            Ok(database) => apply_batch(&db, &database, &mut batch, &mut effects),
            // A previous reopen failed: try again before giving up on this batch.
            Err(_) => db.reopen().and_then(|_| {
                let database = db.get()?;
                apply_batch(&db, &database, &mut batch, &mut effects)
            }),
        };
        match applied {
            Ok(results) => {
                effects.after_commit(&db);
                if let Some(observe) = &observer {
                    observe(size, started.elapsed());
                }
                for (request, result) in batch.drain(..).zip(results) {
                    let _ = request.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = size, "store commit failed");
                let first_seq = effects.first_seq;
                effects.after_failure(&db);
                // redb refuses all work after an I/O error until reopened.
                let reopened = db.reopen();
                if let Err(e) = &reopened {
                    tracing::error!(error = %e, "cannot reopen the store; will retry on the next write");
                }
                for request in batch.drain(..) {
                    // A commit can fail after its data reached the disk: an
                    // event found in the reopened store under a sequence
                    // number of this batch was committed, and its sender must
                    // hear so (a 503 would make its retry a `duplicate` whose
                    // deliveries no lane was given).
                    let durable = match (&reopened, &request.op, first_seq) {
                        (Ok(()), Op::Append(event, _), Some(first)) => {
                            committed_seq(&db, event.id).is_some_and(|seq| seq >= first)
                        }
                        _ => false,
                    };
                    let answer = if durable {
                        if let Op::Append(event, _) = &request.op {
                            claim_appended(&db, event);
                        }
                        Ok(Done::Append(AppendOutcome::Accepted))
                    } else {
                        Err(StoreError::Unavailable(e.to_string()))
                    };
                    let _ = request.reply.send(answer);
                }
            }
        }
    }
    tracing::debug!("store writer stopped");
}

/// Marks the deliveries of an event found committed as claimed by us.
fn claim_appended(db: &Handle, event: &NewEvent) {
    let Some(seq) = committed_seq(db, event.id) else {
        return;
    };
    let names = db.names.read().expect("names lock");
    let mut claims = db.claims.lock().expect("claims lock");
    for sub in &event.subscribers {
        if let Some(lane) = names.lane_id(&event.route, sub) {
            claims.insert((lane, seq));
        }
    }
}

/// The sequence number of a stored event, if the store holds it.
fn committed_seq(db: &Handle, event: EventId) -> Option<u64> {
    let _reading = db.readers.read().ok()?;
    let txn = db.get().ok()?.begin_read().ok()?;
    seq_of(&txn, event).ok()?.map(|k| k.seq)
}

/// What a batch changes outside the database: claims taken before the
/// commit (so no reader can claim the same delivery in between) and claims
/// to drop after it, and names to forget if the commit fails.
#[derive(Default)]
struct Effects {
    /// The first sequence number the batch handed out.
    first_seq: Option<u64>,
    /// Claims taken by appends of this batch.
    claimed: Vec<(u32, u64)>,
    /// Claims released by this batch's results (dropped once committed).
    released: Vec<(u32, u64)>,
    /// Poll claims released by this batch (dropped once committed).
    released_polls: Vec<(u32, String)>,
    /// Names allocated in this batch.
    new_names: Vec<u32>,
}

impl Effects {
    fn after_commit(self, db: &Handle) {
        if !self.released_polls.is_empty() {
            let mut claims = db.poll_claims.lock().expect("poll claims lock");
            for c in &self.released_polls {
                claims.remove(c);
            }
        }
        if !self.released.is_empty() {
            let mut claims = db.claims.lock().expect("claims lock");
            for c in &self.released {
                claims.remove(c);
            }
        }
    }

    fn after_failure(self, db: &Handle) {
        let mut claims = db.claims.lock().expect("claims lock");
        for c in &self.claimed {
            claims.remove(c);
        }
        drop(claims);
        let mut names = db.names.write().expect("names lock");
        for id in &self.new_names {
            if let Some(name) = names.by_id.remove(id) {
                names.by_name.remove(&name);
            }
        }
    }
}

/// Applies every request in one transaction. A per-request problem is that
/// request's answer; a database error aborts the whole transaction and
/// fails every waiter.
fn apply_batch(
    handle: &Handle,
    db: &Database,
    batch: &mut [Request],
    effects: &mut Effects,
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let mut txn = db.begin_write().map_err(backend)?;
    // A batch of nothing but delivered marks (and pruning) is committed
    // without its own fsync: the next durable commit (the next callback)
    // makes it durable. Losing a delivered mark in a crash only repeats a
    // delivery, which at-least-once allows; every append, retry schedule,
    // dead letter and operator action is durable before it is answered.
    let lazy = batch.iter().all(|r| match &r.op {
        Op::Attempt(u) => matches!(u.next, Next::Delivered),
        Op::Prune(_) => true,
        _ => false,
    });
    if lazy {
        txn.set_durability(redb::Durability::None)
            .map_err(backend)?;
    }
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut t = Tables::open(&txn, handle)?;
        effects.first_seq = Some(t.next_seq);
        for request in batch.iter_mut() {
            let result = match &mut request.op {
                Op::Append(event, body) => t.append(event, body, effects).map(Done::Append),
                Op::Attempt(update) => t.attempt(update, effects).map(Done::Recorded),
                Op::Replay(selector, now, limit) => {
                    t.replay(selector, *now, *limit).map(Done::Views)
                }
                Op::Delete(selector, now, limit) => {
                    t.delete_dead(selector, *now, *limit).map(Done::Views)
                }
                Op::Kill(route, sub, reason, now, limit) => t
                    .kill_pending(route, sub, reason, *now, *limit)
                    .map(Done::Count),
                Op::Prune(policy) => t.prune(*policy).map(Done::Pruned),
                Op::Expect(task) => t.expect(task, effects).map(|(e, n)| Done::Expected(e, n)),
                Op::Poll(update) => t.record_poll(update, effects).map(Done::Recorded),
            };
            match result {
                Err(StoreError::Backend(e)) => return Err(StoreError::Backend(e)),
                other => results.push(other),
            }
        }
        t.save_meta()?;
    }
    txn.commit().map_err(backend)?;
    Ok(results)
}

/// (free, size) in bytes of the filesystem holding `path`.
fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let dir = path.parent()?;
    let st = rustix::fs::statvfs(dir).ok()?;
    let unit = st.f_frsize;
    Some((
        st.f_bavail.saturating_mul(unit),
        st.f_blocks.saturating_mul(unit),
    ))
}

/// The open tables of one write transaction.
struct Tables<'t> {
    handle: &'t Handle,
    names_table: redb::Table<'t, u32, &'static str>,
    meta: redb::Table<'t, &'static str, u64>,
    keys: redb::Table<'t, u128, &'static [u8]>,
    events: redb::Table<'t, u64, &'static [u8]>,
    due: redb::Table<'t, (u32, u64, u64), ()>,
    dead: redb::Table<'t, (u32, u64, u64), ()>,
    done: redb::Table<'t, (u64, u64), ()>,
    sources: redb::Table<'t, (u64, u64), ()>,
    counts: redb::Table<'t, u32, (u64, u64)>,
    expected: redb::Table<'t, (u32, &'static str), &'static [u8]>,
    polls: redb::Table<'t, (u64, u32, &'static str), ()>,
    expected_by_time: redb::Table<'t, (u64, u32, &'static str), ()>,
    expected_closed: redb::Table<'t, (u64, u32, &'static str), ()>,
    expected_counts: redb::Table<'t, (u32, u8), u64>,
    /// Expected-task count changes per (route, state), written at the end.
    expected_delta: BTreeMap<(u32, u8), i64>,
    /// Pending and dead count changes per lane, written once at the end.
    count_delta: BTreeMap<u32, (i64, i64)>,
    /// Event records changed in this batch (`None`: removed), written once
    /// at its end.
    changed: HashMap<u64, Option<EventRecord>>,
    next_seq: u64,
    next_name: u64,
    start: (u64, u64),
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction, handle: &'t Handle) -> Result<Self, StoreError> {
        let meta = txn.open_table(META).map_err(backend)?;
        let get = |k: &str| -> Result<Option<u64>, StoreError> {
            Ok(meta.get(k).map_err(backend)?.map(|v| v.value()))
        };
        let next_seq = get(NEXT_SEQ)?.unwrap_or(1);
        let next_name = get(NEXT_NAME)?.unwrap_or(1);
        Ok(Self {
            handle,
            names_table: txn.open_table(NAMES).map_err(backend)?,
            keys: txn.open_table(KEYS).map_err(backend)?,
            events: txn.open_table(EVENTS).map_err(backend)?,
            due: txn.open_table(DUE).map_err(backend)?,
            dead: txn.open_table(DEAD).map_err(backend)?,
            done: txn.open_table(DONE).map_err(backend)?,
            sources: txn.open_table(SOURCES).map_err(backend)?,
            counts: txn.open_table(COUNTS).map_err(backend)?,
            expected: txn.open_table(EXPECTED).map_err(backend)?,
            polls: txn.open_table(POLLS).map_err(backend)?,
            expected_by_time: txn.open_table(EXPECTED_BY_TIME).map_err(backend)?,
            expected_closed: txn.open_table(EXPECTED_CLOSED).map_err(backend)?,
            expected_counts: txn.open_table(EXPECTED_COUNTS).map_err(backend)?,
            expected_delta: BTreeMap::new(),
            meta,
            count_delta: BTreeMap::new(),
            changed: HashMap::new(),
            next_seq,
            next_name,
            start: (next_seq, next_name),
        })
    }

    /// Writes changed records, counters and count changes.
    fn save_meta(&mut self) -> Result<(), StoreError> {
        self.flush_events()?;
        if self.next_seq != self.start.0 {
            self.meta.insert(NEXT_SEQ, self.next_seq).map_err(backend)?;
        }
        if self.next_name != self.start.1 {
            self.meta
                .insert(NEXT_NAME, self.next_name)
                .map_err(backend)?;
        }
        for (key, delta) in std::mem::take(&mut self.expected_delta) {
            if delta == 0 {
                continue;
            }
            let n = self
                .expected_counts
                .get(key)
                .map_err(backend)?
                .map_or(0, |v| v.value());
            self.expected_counts
                .insert(key, n.saturating_add_signed(delta))
                .map_err(backend)?;
        }
        for (lane, (dp, dd)) in std::mem::take(&mut self.count_delta) {
            if dp == 0 && dd == 0 {
                continue;
            }
            let (p, d) = self
                .counts
                .get(lane)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or((0, 0));
            let apply = |v: u64, delta: i64| v.saturating_add_signed(delta);
            self.counts
                .insert(lane, (apply(p, dp), apply(d, dd)))
                .map_err(backend)?;
        }
        Ok(())
    }

    fn count(&mut self, lane: u32, pending: i64, dead: i64) {
        let entry = self.count_delta.entry(lane).or_default();
        entry.0 += pending;
        entry.1 += dead;
    }

    /// The number of a name, allocating one if it is new.
    fn name_id(&mut self, name: &str, effects: &mut Effects) -> Result<u32, StoreError> {
        if let Some(id) = self.handle.names.read().expect("names lock").id(name) {
            return Ok(id);
        }
        let id = u32::try_from(self.next_name)
            .map_err(|_| StoreError::Backend("name table is full".into()))?;
        self.next_name += 1;
        self.names_table.insert(id, name).map_err(backend)?;
        self.handle
            .names
            .write()
            .expect("names lock")
            .insert(id, name);
        effects.new_names.push(id);
        Ok(id)
    }

    fn lane_id(&self, route: &str, subscriber: &str) -> Option<u32> {
        self.handle
            .names
            .read()
            .expect("names lock")
            .lane_id(route, subscriber)
    }

    fn key(&self, event: EventId) -> Result<Option<KeyRecord>, StoreError> {
        match self.keys.get(event.0).map_err(backend)? {
            Some(v) => codec::decode_key(v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// An event record, as this batch left it: records changed in a batch
    /// are kept decoded and written once at its end (three attempt results
    /// of one event in one batch cost one rewrite, not three).
    fn event(&self, seq: u64) -> Result<Option<EventRecord>, StoreError> {
        if let Some(e) = self.changed.get(&seq) {
            return Ok(e.clone());
        }
        match self.events.get(seq).map_err(backend)? {
            Some(v) => codec::decode_event(v.value(), true).map(Some),
            None => Ok(None),
        }
    }

    /// Whether the event record exists (as this batch left it).
    fn has_event(&self, seq: u64) -> Result<bool, StoreError> {
        match self.changed.get(&seq) {
            Some(e) => Ok(e.is_some()),
            None => Ok(self.events.get(seq).map_err(backend)?.is_some()),
        }
    }

    fn put_event(&mut self, seq: u64, e: &EventRecord) -> Result<(), StoreError> {
        self.changed.insert(seq, Some(e.clone()));
        Ok(())
    }

    fn remove_event(&mut self, seq: u64) {
        self.changed.insert(seq, None);
    }

    /// Writes the records this batch changed.
    fn flush_events(&mut self) -> Result<(), StoreError> {
        for (seq, e) in std::mem::take(&mut self.changed) {
            match e {
                Some(e) => {
                    self.events
                        .insert(seq, codec::encode_event(&e).as_slice())
                        .map_err(backend)?;
                }
                None => {
                    self.events.remove(seq).map_err(backend)?;
                }
            }
        }
        Ok(())
    }

    /// The event of a delivery id with its sequence number.
    fn by_event(&self, event: EventId) -> Result<Option<(u64, EventRecord)>, StoreError> {
        let Some(key) = self.key(event)? else {
            return Ok(None);
        };
        Ok(self.event(key.seq)?.map(|e| (key.seq, e)))
    }

    fn append(
        &mut self,
        event: &NewEvent,
        body: &StoredBody,
        effects: &mut Effects,
    ) -> Result<AppendOutcome, StoreError> {
        if let Some(key) = self.key(event.id)? {
            // A key answers `duplicate` within its window, and for as long
            // as its event is still held (pending deliveries, dead letters,
            // details within retention): the same id cannot name two events.
            let within = event.received_ms.saturating_sub(key.received_ms) <= event.ttl_ms;
            let held = self.has_event(key.seq)?;
            if within || held {
                return Ok(AppendOutcome::Duplicate);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let route = self.name_id(&event.route, effects)?;
        let mut deliveries = Vec::with_capacity(event.subscribers.len());
        for sub in &event.subscribers {
            let lane = self.name_id(&lane_name(&event.route, sub), effects)?;
            deliveries.push(DeliveryRecord {
                lane,
                state: DeliveryState::Pending,
                attempts: 0,
                due_ms: event.received_ms,
                schedule_start_ms: event.received_ms,
                updated_ms: event.received_ms,
                dead_reason: None,
                history: Vec::new(),
            });
        }
        let record = EventRecord {
            id: event.id,
            received_ms: event.received_ms,
            route,
            origin: event.origin,
            status: event.status.clone(),
            source_id: event.source_id.clone(),
            headers: event.headers.clone(),
            deliveries,
            body: body.clone(),
        };
        self.keys
            .insert(
                event.id.0,
                codec::encode_key(&KeyRecord {
                    received_ms: event.received_ms,
                    seq,
                    route,
                })
                .as_slice(),
            )
            .map_err(backend)?;
        self.put_event(seq, &record)?;
        if let Some(source) = &event.source_id {
            self.sources
                .insert((codec::source_hash(route, source), seq), ())
                .map_err(backend)?;
        }
        let mut claims = self.handle.claims.lock().expect("claims lock");
        for d in &record.deliveries {
            self.due
                .insert((d.lane, d.due_ms, seq), ())
                .map_err(backend)?;
            claims.insert((d.lane, seq));
            effects.claimed.push((d.lane, seq));
        }
        drop(claims);
        for d in &record.deliveries {
            self.count(d.lane, 1, 0);
        }
        if record.deliveries.is_empty() {
            self.done
                .insert((event.received_ms, seq), ())
                .map_err(backend)?;
        }
        if let (true, Some(source), Some(status)) = (event.settles, &event.source_id, &event.status)
        {
            self.settle(route, source, event.origin, status, event.received_ms)?;
        }
        Ok(AppendOutcome::Accepted)
    }

    fn expected_record(
        &self,
        route: u32,
        id: &str,
    ) -> Result<Option<codec::ExpectedRecord>, StoreError> {
        match self.expected.get((route, id)).map_err(backend)? {
            Some(v) => codec::decode_expected(v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Writes an expected task and its index entries, replacing `old`.
    fn put_expected(
        &mut self,
        route: u32,
        id: &str,
        old: Option<&codec::ExpectedRecord>,
        new: &codec::ExpectedRecord,
    ) -> Result<(), StoreError> {
        if let Some(old) = old {
            if old.state.is_open() {
                self.polls
                    .remove((old.next_poll_ms, route, id))
                    .map_err(backend)?;
            } else {
                self.expected_closed
                    .remove((old.updated_ms, route, id))
                    .map_err(backend)?;
            }
            *self
                .expected_delta
                .entry((route, codec::expected_state_code(old.state)))
                .or_default() -= 1;
        } else {
            self.expected_by_time
                .insert((new.submitted_ms, route, id), ())
                .map_err(backend)?;
        }
        if new.state.is_open() {
            self.polls
                .insert((new.next_poll_ms, route, id), ())
                .map_err(backend)?;
        } else {
            self.expected_closed
                .insert((new.updated_ms, route, id), ())
                .map_err(backend)?;
        }
        *self
            .expected_delta
            .entry((route, codec::expected_state_code(new.state)))
            .or_default() += 1;
        self.expected
            .insert((route, id), codec::encode_expected(new).as_slice())
            .map_err(backend)?;
        Ok(())
    }

    /// A task's final result arrived: an open expected task is done.
    fn settle(
        &mut self,
        route: u32,
        id: &str,
        via: super::Origin,
        status: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        let Some(old) = self.expected_record(route, id)? else {
            return Ok(());
        };
        if !old.state.is_open() {
            return Ok(());
        }
        let new = codec::ExpectedRecord {
            state: ExpectedState::Done,
            settled_by: Some(via),
            status: Some(status.to_string()),
            updated_ms: now,
            ..old.clone()
        };
        self.put_expected(route, id, Some(&old), &new)
    }

    fn expect(
        &mut self,
        task: &NewExpected,
        effects: &mut Effects,
    ) -> Result<(ExpectedTask, bool), StoreError> {
        let route = self.name_id(&task.route, effects)?;
        if let Some(old) = self.expected_record(route, &task.id)? {
            return Ok((expected_task(&task.route, &task.id, &old), false));
        }
        // Its final callback may have come first.
        let mut settled = None;
        let hash = codec::source_hash(route, &task.id);
        let seqs: Vec<u64> = self
            .sources
            .range((hash, 0)..=(hash, u64::MAX))
            .map_err(backend)?
            .map(|e| e.map(|(k, _)| k.value().1).map_err(backend))
            .collect::<Result<_, _>>()?;
        for seq in seqs {
            if let Some(e) = self.event(seq)? {
                let final_status = e
                    .status
                    .as_deref()
                    .filter(|s| super::FINAL_STATUSES.contains(s));
                if e.source_id.as_deref() == Some(task.id.as_str()) && final_status.is_some() {
                    settled = Some((e.origin, final_status.unwrap_or_default().to_string()));
                }
            }
        }
        let new = codec::ExpectedRecord {
            endpoint: task.endpoint.clone(),
            submitted_ms: task.submitted_ms,
            state: if settled.is_some() {
                ExpectedState::Done
            } else {
                ExpectedState::Waiting
            },
            settled_by: settled.as_ref().map(|s| s.0),
            status: settled.map(|s| s.1),
            polls: 0,
            next_poll_ms: task.first_poll_ms,
            updated_ms: task.submitted_ms,
            last_result: None,
        };
        self.put_expected(route, &task.id, None, &new)?;
        Ok((expected_task(&task.route, &task.id, &new), true))
    }

    fn record_poll(
        &mut self,
        update: &PollUpdate,
        effects: &mut Effects,
    ) -> Result<Recorded, StoreError> {
        let Some(route) = self
            .handle
            .names
            .read()
            .expect("names lock")
            .id(&update.route)
        else {
            return Ok(Recorded::Stale);
        };
        let key = (route, update.id.clone());
        let claimed = self
            .handle
            .poll_claims
            .lock()
            .expect("poll claims lock")
            .contains(&key);
        if !claimed {
            return Ok(Recorded::Stale);
        }
        effects.released_polls.push(key);
        let Some(old) = self.expected_record(route, &update.id)? else {
            return Ok(Recorded::Stale);
        };
        // A final result fed by this very poll may have settled the task
        // already (in the intake's commit): the poll still counts.
        let own_result =
            old.state == ExpectedState::Done && matches!(update.next, PollNext::Done { .. });
        if !old.state.is_open() && !own_result {
            return Ok(Recorded::Stale);
        }
        let mut new = codec::ExpectedRecord {
            polls: old.polls.saturating_add(1),
            updated_ms: update.now_ms,
            last_result: Some(update.result.clone()),
            ..old.clone()
        };
        match &update.next {
            PollNext::Again { at_ms } => {
                new.state = ExpectedState::Polling;
                new.next_poll_ms = *at_ms;
            }
            PollNext::Done { status, via } => {
                new.state = ExpectedState::Done;
                new.settled_by = old.settled_by.or(Some(*via));
                new.status = Some(status.clone());
            }
            PollNext::Expired => new.state = ExpectedState::Expired,
        }
        self.put_expected(route, &update.id, Some(&old), &new)?;
        Ok(Recorded::Applied)
    }

    /// Removes closed expected tasks older than the cutoff; returns how many.
    fn prune_expected(&mut self, cutoff: u64, max: usize) -> Result<(usize, bool), StoreError> {
        let mut victims = Vec::new();
        for entry in self
            .expected_closed
            .range(..(cutoff, 0u32, ""))
            .map_err(backend)?
        {
            let (key, _) = entry.map_err(backend)?;
            let (at, route, id) = key.value();
            victims.push((at, route, id.to_string()));
            if victims.len() >= max {
                break;
            }
        }
        let more = victims.len() >= max;
        let n = victims.len();
        for (at, route, id) in victims {
            self.expected_closed
                .remove((at, route, id.as_str()))
                .map_err(backend)?;
            if let Some(old) = self.expected_record(route, &id)? {
                self.expected_by_time
                    .remove((old.submitted_ms, route, id.as_str()))
                    .map_err(backend)?;
                *self
                    .expected_delta
                    .entry((route, codec::expected_state_code(old.state)))
                    .or_default() -= 1;
            }
            self.expected
                .remove((route, id.as_str()))
                .map_err(backend)?;
        }
        Ok((n, more))
    }

    fn attempt(
        &mut self,
        update: &AttemptUpdate,
        effects: &mut Effects,
    ) -> Result<Recorded, StoreError> {
        let Some(lane) = self.lane_id(&update.route, &update.subscriber) else {
            return Ok(Recorded::Stale);
        };
        let Some((seq, mut e)) = self.by_event(update.event)? else {
            return Ok(Recorded::Stale);
        };
        if !self
            .handle
            .claims
            .lock()
            .expect("claims lock")
            .contains(&(lane, seq))
        {
            return Ok(Recorded::Stale);
        }
        let Some(d) = e.delivery_mut(lane) else {
            return Ok(Recorded::Stale);
        };
        if d.state != DeliveryState::Pending {
            return Ok(Recorded::Stale);
        }
        self.due.remove((lane, d.due_ms, seq)).map_err(backend)?;
        let now = match &update.attempt {
            Some(a) => {
                d.attempts = d.attempts.max(a.attempt);
                let end = a.at_ms.saturating_add(a.duration_ms);
                EventRecord::push_attempt(d, a.clone());
                end
            }
            None => super::now_ms(),
        };
        d.updated_ms = now;
        let mut release = true;
        let mut closed = false;
        match &update.next {
            Next::Retry { due_ms, keep_claim } => {
                d.due_ms = *due_ms;
                release = !keep_claim;
                self.due
                    .insert((lane, d.due_ms, seq), ())
                    .map_err(backend)?;
            }
            Next::Delivered => {
                d.state = DeliveryState::Delivered;
                self.count(lane, -1, 0);
                closed = true;
            }
            Next::Dead { reason } => {
                d.state = DeliveryState::Dead;
                d.dead_reason = Some(reason.clone());
                self.dead.insert((lane, now, seq), ()).map_err(backend)?;
                self.count(lane, -1, 1);
            }
        }
        if closed && e.open() == 0 {
            self.done.insert((now, seq), ()).map_err(backend)?;
        }
        self.put_event(seq, &e)?;
        if release {
            effects.released.push((lane, seq));
        }
        Ok(Recorded::Applied)
    }

    /// The dead letters a selector names (at most `limit`), as (lane, seq).
    fn select_dead(
        &self,
        selector: &DeadSelector,
        limit: usize,
    ) -> Result<Vec<(u32, u64)>, StoreError> {
        let mut out = Vec::new();
        match selector {
            DeadSelector::Ids(ids) => {
                let mut seen = HashSet::new();
                for id in ids {
                    if out.len() >= limit {
                        break;
                    }
                    let Some(key) = self.key(id.event)? else {
                        continue;
                    };
                    let route = self
                        .handle
                        .names
                        .read()
                        .expect("names lock")
                        .route(key.route);
                    let Some(lane) = self.lane_id(&route, &id.subscriber) else {
                        continue;
                    };
                    if seen.insert((lane, key.seq)) {
                        out.push((lane, key.seq));
                    }
                }
            }
            DeadSelector::Subscriber { route, subscriber } => {
                if let Some(lane) = self.lane_id(route, subscriber) {
                    for entry in self
                        .dead
                        .range((lane, 0, 0)..=(lane, u64::MAX, u64::MAX))
                        .map_err(backend)?
                    {
                        let (key, _) = entry.map_err(backend)?;
                        let (_, _, seq) = key.value();
                        out.push((lane, seq));
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn replay(
        &mut self,
        selector: &DeadSelector,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let mut out = Vec::new();
        for (lane, seq) in self.select_dead(selector, limit)? {
            let Some(mut e) = self.event(seq)? else {
                continue;
            };
            let Some(d) = e.delivery_mut(lane) else {
                continue;
            };
            if d.state != DeliveryState::Dead {
                continue;
            }
            self.dead
                .remove((lane, d.updated_ms, seq))
                .map_err(backend)?;
            d.state = DeliveryState::Pending;
            d.attempts = 0;
            d.dead_reason = None;
            d.due_ms = now_ms;
            d.schedule_start_ms = now_ms;
            d.updated_ms = now_ms;
            self.due.insert((lane, now_ms, seq), ()).map_err(backend)?;
            self.count(lane, 1, -1);
            self.put_event(seq, &e)?;
            let names = self.handle.names.read().expect("names lock");
            let d = e
                .deliveries
                .iter()
                .find(|d| d.lane == lane)
                .expect("found above");
            out.push(view(&names, &e, d));
        }
        Ok(out)
    }

    fn delete_dead(
        &mut self,
        selector: &DeadSelector,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let mut out = Vec::new();
        for (lane, seq) in self.select_dead(selector, limit)? {
            if let Some(v) = self.delete_one(lane, seq, now_ms, None)? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Deletes one dead letter (the record stays, in state `deleted`, so the
    /// event's history stays complete). `done_at` overrides when the event
    /// counts as done for the pruner (expired dead letters go at once).
    fn delete_one(
        &mut self,
        lane: u32,
        seq: u64,
        now_ms: u64,
        done_at: Option<u64>,
    ) -> Result<Option<DeliveryView>, StoreError> {
        let Some(mut e) = self.event(seq)? else {
            return Ok(None);
        };
        let Some(d) = e.delivery_mut(lane) else {
            return Ok(None);
        };
        if d.state != DeliveryState::Dead {
            return Ok(None);
        }
        self.dead
            .remove((lane, d.updated_ms, seq))
            .map_err(backend)?;
        d.state = DeliveryState::Deleted;
        d.updated_ms = now_ms;
        self.count(lane, 0, -1);
        if e.open() == 0 {
            self.done
                .insert((done_at.unwrap_or(now_ms), seq), ())
                .map_err(backend)?;
        }
        self.put_event(seq, &e)?;
        let names = self.handle.names.read().expect("names lock");
        let d = e
            .deliveries
            .iter()
            .find(|d| d.lane == lane)
            .expect("found above");
        Ok(Some(view(&names, &e, d)))
    }

    fn kill_pending(
        &mut self,
        route: &str,
        subscriber: &str,
        reason: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let Some(lane) = self.lane_id(route, subscriber) else {
            return Ok(0);
        };
        let mut victims = Vec::new();
        for entry in self
            .due
            .range((lane, 0, 0)..=(lane, u64::MAX, u64::MAX))
            .map_err(backend)?
        {
            let (key, _) = entry.map_err(backend)?;
            victims.push(key.value());
            if victims.len() >= limit {
                break;
            }
        }
        let claims = self.handle.claims.lock().expect("claims lock").clone();
        let mut killed = 0;
        for (lane, due, seq) in victims {
            if claims.contains(&(lane, seq)) {
                continue;
            }
            let Some(mut e) = self.event(seq)? else {
                continue;
            };
            let Some(d) = e.delivery_mut(lane) else {
                continue;
            };
            if d.state != DeliveryState::Pending {
                continue;
            }
            self.due.remove((lane, due, seq)).map_err(backend)?;
            d.state = DeliveryState::Dead;
            d.dead_reason = Some(reason.to_string());
            d.updated_ms = now_ms;
            self.dead.insert((lane, now_ms, seq), ()).map_err(backend)?;
            self.count(lane, -1, 1);
            self.put_event(seq, &e)?;
            killed += 1;
        }
        Ok(killed)
    }

    fn prune(&mut self, policy: PrunePolicy) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        // 1. Dead letters past their retention are deleted.
        let dl_cutoff = policy
            .now_ms
            .saturating_sub(policy.dead_letter_retention_ms);
        let lanes: Vec<u32> = self
            .handle
            .names
            .read()
            .expect("names lock")
            .lanes()
            .collect();
        let mut expired = Vec::new();
        for lane in lanes {
            for entry in self
                .dead
                .range((lane, 0, 0)..(lane, dl_cutoff, 0))
                .map_err(backend)?
            {
                let (key, _) = entry.map_err(backend)?;
                let (lane, _, seq) = key.value();
                expired.push((lane, seq));
                if expired.len() >= policy.max_items {
                    break;
                }
            }
            if expired.len() >= policy.max_items {
                report.more = true;
                break;
            }
        }
        for (lane, seq) in expired {
            // Done "long ago": its details go in this same run.
            if self
                .delete_one(lane, seq, policy.now_ms, Some(0))?
                .is_some()
            {
                report.dead_letters += 1;
            }
        }
        // 2. Events done for longer than the retention lose their details.
        let cutoff = policy.now_ms.saturating_sub(policy.retention_ms);
        let mut victims = Vec::new();
        for entry in self.done.range(..(cutoff, 0)).map_err(backend)? {
            let (key, _) = entry.map_err(backend)?;
            victims.push(key.value());
            if victims.len() >= policy.max_items {
                report.more = true;
                break;
            }
        }
        for (at, seq) in victims {
            self.done.remove((at, seq)).map_err(backend)?;
            let Some(e) = self.event(seq)? else {
                continue;
            };
            if e.open() > 0 {
                // Reopened since (a replay): it is done again later.
                continue;
            }
            if let Some(source) = &e.source_id {
                self.sources
                    .remove((codec::source_hash(e.route, source), seq))
                    .map_err(backend)?;
            }
            self.remove_event(seq);
            report.details += 1;
        }
        // Closed expected tasks go with the same retention as events.
        let (_, more) = self.prune_expected(cutoff, policy.max_items)?;
        report.more |= more;
        // 3. Keys past the idempotency window whose details are gone, a few
        //    slices of the id space per run: enough that the whole space is
        //    swept once per quarter of the window, never all of it at once
        //    unless the window is that short.
        // The sweep reads the records table directly: bring it up to date.
        self.flush_events()?;
        let key_cutoff = policy.now_ms.saturating_sub(policy.ttl_ms);
        let mut slice = self
            .meta
            .get(SWEEP_SLICE)
            .map_err(backend)?
            .map_or(0, |v| v.value());
        let last = self
            .meta
            .get(SWEEP_AT)
            .map_err(backend)?
            .map_or(0, |v| v.value());
        let quarter = (policy.ttl_ms / 4).max(1);
        let elapsed = if last == 0 {
            0
        } else {
            policy.now_ms.saturating_sub(last)
        };
        let slices = (u128::from(SWEEP_SLICES) * u128::from(elapsed))
            .div_ceil(u128::from(quarter))
            .clamp(1, u128::from(SWEEP_SLICES)) as u64;
        let width = u128::MAX / u128::from(SWEEP_SLICES) + 1;
        for _ in 0..slices {
            let lo = width * u128::from(slice);
            let hi = lo.saturating_add(width - 1);
            let events = &self.events;
            let mut failed = None;
            self.keys
                .retain_in(lo..=hi, |_, value| {
                    let Ok(key) = codec::decode_key(value) else {
                        return true;
                    };
                    if key.received_ms >= key_cutoff {
                        return true;
                    }
                    match events.get(key.seq) {
                        Ok(Some(_)) => true,
                        Ok(None) => {
                            report.keys += 1;
                            false
                        }
                        Err(e) => {
                            failed = Some(e.to_string());
                            true
                        }
                    }
                })
                .map_err(backend)?;
            if let Some(e) = failed {
                return Err(StoreError::Backend(e));
            }
            slice = (slice + 1) % SWEEP_SLICES;
        }
        self.meta.insert(SWEEP_SLICE, slice).map_err(backend)?;
        self.meta.insert(SWEEP_AT, policy.now_ms).map_err(backend)?;
        Ok(report)
    }
}

/// Shrinks the store file offline (`hookrelay compact`): moves live pages
/// to the front and truncates the free space at the end. Returns the file
/// size before and after. Refused while a gateway has the store open.
pub fn compact(dir: &Path, cache_bytes: usize) -> Result<(u64, u64), StoreError> {
    let path = dir.join(FILE_NAME);
    if !path.exists() {
        return Err(StoreError::Backend(format!(
            "no store at {} (nothing to compact)",
            path.display()
        )));
    }
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let before = size();
    let mut db = open_or_convert(&path, cache_bytes)?;
    while db.compact().map_err(backend)? {}
    db.close().map_err(backend)?;
    Ok((before, size()))
}

/// Bytes each table holds, for measuring what a callback costs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableBytes {
    /// Table name.
    pub table: String,
    /// Entries.
    pub entries: u64,
    /// Bytes of keys and values.
    pub stored: u64,
    /// Bytes of branch pages and other metadata.
    pub metadata: u64,
    /// Unused bytes inside the table's pages.
    pub fragmented: u64,
}

impl EmbeddedStore {
    /// What each table holds (a read transaction; cheap enough for a
    /// benchmark, not meant for every scrape).
    pub async fn table_bytes(&self) -> Result<Vec<TableBytes>, StoreError> {
        self.read(|_, txn| {
            let mut out = Vec::new();
            macro_rules! stats {
                ($($def:expr),*) => {$(
                    let table = txn.open_table($def).map_err(backend)?;
                    let st = table.stats().map_err(backend)?;
                    out.push(TableBytes {
                        table: redb::TableHandle::name(&$def).to_string(),
                        entries: table.len().map_err(backend)?,
                        stored: st.stored_bytes(),
                        metadata: st.metadata_bytes(),
                        fragmented: st.fragmented_bytes(),
                    });
                )*};
            }
            stats!(KEYS, EVENTS, DUE, DEAD, DONE, SOURCES, COUNTS, NAMES, META);
            Ok(out)
        })
        .await
    }
}

/// A new, empty store file in the current layout (for the 0.1 converter).
pub(super) fn create_for_upgrade(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    open_database(path, cache_bytes)?
        .ok_or_else(|| StoreError::Corrupt("a new store file needs an upgrade".into()))
}

/// Writes whole records with their index entries, for the 0.1 converter.
pub(super) struct RawWriter<'t> {
    names: redb::Table<'t, u32, &'static str>,
    meta: redb::Table<'t, &'static str, u64>,
    keys: redb::Table<'t, u128, &'static [u8]>,
    events: redb::Table<'t, u64, &'static [u8]>,
    due: redb::Table<'t, (u32, u64, u64), ()>,
    dead: redb::Table<'t, (u32, u64, u64), ()>,
    done: redb::Table<'t, (u64, u64), ()>,
    counts_table: redb::Table<'t, u32, (u64, u64)>,
    counts: BTreeMap<u32, (u64, u64)>,
    next_name: u32,
    max_seq: u64,
}

impl<'t> RawWriter<'t> {
    pub(super) fn open(txn: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            names: txn.open_table(NAMES).map_err(backend)?,
            meta: txn.open_table(META).map_err(backend)?,
            keys: txn.open_table(KEYS).map_err(backend)?,
            events: txn.open_table(EVENTS).map_err(backend)?,
            due: txn.open_table(DUE).map_err(backend)?,
            dead: txn.open_table(DEAD).map_err(backend)?,
            done: txn.open_table(DONE).map_err(backend)?,
            counts_table: txn.open_table(COUNTS).map_err(backend)?,
            counts: BTreeMap::new(),
            next_name: 1,
            max_seq: 0,
        })
    }

    pub(super) fn add_name(&mut self, name: &str) -> Result<u32, StoreError> {
        let id = self.next_name;
        self.next_name += 1;
        self.names.insert(id, name).map_err(backend)?;
        Ok(id)
    }

    pub(super) fn put_key(&mut self, id: EventId, key: &KeyRecord) -> Result<(), StoreError> {
        self.keys
            .insert(id.0, codec::encode_key(key).as_slice())
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn put_event(&mut self, seq: u64, e: &EventRecord) -> Result<(), StoreError> {
        self.max_seq = self.max_seq.max(seq);
        self.events
            .insert(seq, codec::encode_event(e).as_slice())
            .map_err(backend)?;
        let mut done_at = e.received_ms;
        for d in &e.deliveries {
            let c = self.counts.entry(d.lane).or_default();
            match d.state {
                DeliveryState::Pending => {
                    c.0 += 1;
                    self.due
                        .insert((d.lane, d.due_ms, seq), ())
                        .map_err(backend)?;
                }
                DeliveryState::Dead => {
                    c.1 += 1;
                    self.dead
                        .insert((d.lane, d.updated_ms, seq), ())
                        .map_err(backend)?;
                }
                _ => done_at = done_at.max(d.updated_ms),
            }
        }
        if e.open() == 0 {
            self.done.insert((done_at, seq), ()).map_err(backend)?;
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<(), StoreError> {
        self.meta
            .insert(NEXT_SEQ, self.max_seq + 1)
            .map_err(backend)?;
        self.meta
            .insert(NEXT_NAME, u64::from(self.next_name))
            .map_err(backend)?;
        for (lane, counts) in std::mem::take(&mut self.counts) {
            self.counts_table.insert(lane, counts).map_err(backend)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn append(&self, event: NewEvent) -> Result<AppendOutcome, StoreError> {
        let body = StoredBody::pack(&event.body);
        match self.submit(Op::Append(event, body)).await? {
            Done::Append(outcome) => Ok(outcome),
            _ => unreachable!("append answers with an outcome"),
        }
    }

    async fn claim_due(
        &self,
        route: &str,
        subscriber: &str,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let lane_key = lane_name(route, subscriber);
        self.read(move |db, _| {
            let Some(lane) = db.names.read().expect("names lock").id(&lane_key) else {
                return Ok(Vec::new());
            };
            // Claims are checked and taken under their lock, with a read
            // transaction begun inside it: the writer drops a claim only
            // after its commit, so what we read is never older than a claim
            // we see released.
            let mut claims = db.claims.lock().expect("claims lock");
            let txn = db.get()?.begin_read().map_err(backend)?;
            let due = txn.open_table(DUE).map_err(backend)?;
            let events = txn.open_table(EVENTS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in due
                .range((lane, 0, 0)..=(lane, until_ms, u64::MAX))
                .map_err(backend)?
            {
                if out.len() >= limit {
                    break;
                }
                let (key, _) = entry.map_err(backend)?;
                let (_, due_ms, seq) = key.value();
                if claims.contains(&(lane, seq)) {
                    continue;
                }
                let Some(bytes) = events.get(seq).map_err(backend)? else {
                    continue;
                };
                let e = codec::decode_event(bytes.value(), false)?;
                let Some(d) = e.deliveries.iter().find(|d| d.lane == lane) else {
                    continue;
                };
                if d.state != DeliveryState::Pending {
                    continue;
                }
                claims.insert((lane, seq));
                out.push(Claimed {
                    event: e.id,
                    attempts: d.attempts,
                    due_ms,
                    schedule_start_ms: d.schedule_start_ms,
                    received_ms: e.received_ms,
                    origin: e.origin,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn release(
        &self,
        route: &str,
        subscriber: &str,
        events: &[EventId],
    ) -> Result<(), StoreError> {
        let lane_key = lane_name(route, subscriber);
        let events = events.to_vec();
        self.read(move |db, txn| {
            let Some(lane) = db.names.read().expect("names lock").id(&lane_key) else {
                return Ok(());
            };
            let mut seqs = Vec::with_capacity(events.len());
            for event in events {
                if let Some(k) = seq_of(txn, event)? {
                    seqs.push(k.seq);
                }
            }
            let mut claims = db.claims.lock().expect("claims lock");
            for seq in seqs {
                claims.remove(&(lane, seq));
            }
            Ok(())
        })
        .await
    }

    async fn renew_claims(&self) -> Result<(), StoreError> {
        // Claims live in this process's memory and end with it.
        Ok(())
    }

    async fn record_attempt(&self, update: AttemptUpdate) -> Result<Recorded, StoreError> {
        match self.submit(Op::Attempt(update)).await? {
            Done::Recorded(r) => Ok(r),
            _ => unreachable!("an attempt answers with a flag"),
        }
    }

    async fn body(&self, event: EventId) -> Result<Option<Bytes>, StoreError> {
        self.read(move |_, txn| {
            let Some(key) = seq_of(txn, event)? else {
                return Ok(None);
            };
            let events = txn.open_table(EVENTS).map_err(backend)?;
            match events.get(key.seq).map_err(backend)? {
                Some(v) => codec::event_body(v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn event(&self, event: EventId) -> Result<Option<EventView>, StoreError> {
        self.read(move |db, txn| {
            let Some(key) = seq_of(txn, event)? else {
                return Ok(None);
            };
            let names = db.names.read().expect("names lock");
            let Some(e) = read_event(txn, key.seq, false)? else {
                return Ok(Some(EventView {
                    event_id: event,
                    route: names.route(key.route),
                    received_ms: key.received_ms,
                    source_id: None,
                    status: None,
                    origin: super::Origin::Callback,
                    headers: Vec::new(),
                    body_len: 0,
                    open: 0,
                    pruned: true,
                    deliveries: Vec::new(),
                }));
            };
            Ok(Some(EventView {
                event_id: e.id,
                route: names.route(e.route),
                received_ms: e.received_ms,
                source_id: e.source_id.clone(),
                status: e.status.clone(),
                origin: e.origin,
                headers: e.headers.clone(),
                body_len: e.body.len(),
                open: e.open(),
                pruned: false,
                deliveries: e.deliveries.iter().map(|d| view(&names, &e, d)).collect(),
            }))
        })
        .await
    }

    async fn events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        self.read(move |db, txn| {
            let names = db.names.read().expect("names lock");
            let route = match &query.route {
                Some(r) => match names.id(r) {
                    Some(id) => Some(id),
                    None => {
                        return Ok(EventPage {
                            events: Vec::new(),
                            next_before: None,
                        })
                    }
                },
                None => None,
            };
            let before = match &query.before {
                Some(cursor) => cursor.parse::<u64>().map_err(|_| {
                    StoreError::Corrupt("the `before` cursor is not one this store made".into())
                })?,
                None => u64::MAX,
            };
            let events = txn.open_table(EVENTS).map_err(backend)?;
            let mut out = Vec::new();
            if let Some(source) = &query.source_id {
                let sources = txn.open_table(SOURCES).map_err(backend)?;
                let routes: Vec<u32> = match route {
                    Some(r) => vec![r],
                    None => names.route_ids().collect(),
                };
                let mut seqs = Vec::new();
                for r in routes {
                    let h = codec::source_hash(r, source);
                    for entry in sources.range((h, 0)..=(h, u64::MAX)).map_err(backend)? {
                        let (key, _) = entry.map_err(backend)?;
                        let seq = key.value().1;
                        if seq < before {
                            seqs.push(seq);
                        }
                    }
                }
                seqs.sort_unstable_by(|a, b| b.cmp(a));
                for seq in seqs {
                    if out.len() >= query.limit {
                        break;
                    }
                    if let Some(v) = events.get(seq).map_err(backend)? {
                        let e = codec::decode_event(v.value(), false)?;
                        if e.source_id.as_deref() == Some(source.as_str()) {
                            out.push(summary(&names, &e));
                        }
                    }
                }
                return Ok(EventPage {
                    events: out,
                    next_before: None,
                });
            }
            let mut scanned = 0;
            let mut last = None;
            for entry in events.range(..before).map_err(backend)?.rev() {
                let (key, value) = entry.map_err(backend)?;
                let seq = key.value();
                last = Some(seq);
                scanned += 1;
                let e = codec::decode_event(value.value(), false)?;
                if route.is_none_or(|r| r == e.route) {
                    out.push(summary(&names, &e));
                }
                if out.len() >= query.limit || scanned >= LIST_SCAN {
                    break;
                }
            }
            let more = match last {
                Some(seq) => events.range(..seq).map_err(backend)?.next_back().is_some(),
                None => false,
            };
            Ok(EventPage {
                events: out,
                next_before: if more {
                    last.map(|s| s.to_string())
                } else {
                    None
                },
            })
        })
        .await
    }

    async fn dead_letters(&self, query: DeadLetterQuery) -> Result<Vec<DeliveryView>, StoreError> {
        self.read(move |db, txn| {
            let names = db.names.read().expect("names lock");
            let dead = txn.open_table(DEAD).map_err(backend)?;
            let lanes: Vec<u32> = names
                .lanes()
                .filter(|id| {
                    let (r, s) = names.lane(*id);
                    query.route.as_ref().is_none_or(|q| *q == r)
                        && query.subscriber.as_ref().is_none_or(|q| *q == s)
                })
                .collect();
            // Newest first across lanes: the newest `limit` of each, merged.
            let mut candidates = Vec::new();
            for lane in lanes {
                for entry in dead
                    .range((lane, 0, 0)..=(lane, u64::MAX, u64::MAX))
                    .map_err(backend)?
                    .rev()
                    .take(query.limit)
                {
                    let (key, _) = entry.map_err(backend)?;
                    candidates.push(key.value());
                }
            }
            candidates.sort_unstable_by_key(|c| std::cmp::Reverse((c.1, c.2)));
            candidates.truncate(query.limit);
            let mut out = Vec::new();
            for (lane, _, seq) in candidates {
                if let Some(e) = read_event(txn, seq, false)? {
                    if let Some(d) = e.deliveries.iter().find(|d| d.lane == lane) {
                        out.push(view(&names, &e, d));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn replay(
        &self,
        selector: DeadSelector,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        match self.submit(Op::Replay(selector, now_ms, limit)).await? {
            Done::Views(v) => Ok(v),
            _ => unreachable!("replay answers with deliveries"),
        }
    }

    async fn delete_dead(
        &self,
        selector: DeadSelector,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        match self.submit(Op::Delete(selector, now_ms, limit)).await? {
            Done::Views(v) => Ok(v),
            _ => unreachable!("delete answers with deliveries"),
        }
    }

    async fn kill_pending(
        &self,
        route: &str,
        subscriber: &str,
        reason: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let op = Op::Kill(
            route.to_string(),
            subscriber.to_string(),
            reason.to_string(),
            now_ms,
            limit,
        );
        match self.submit(op).await? {
            Done::Count(n) => Ok(n),
            _ => unreachable!("kill answers with a count"),
        }
    }

    async fn counts(&self) -> Result<Vec<LaneCounts>, StoreError> {
        self.read(|db, txn| {
            let names = db.names.read().expect("names lock");
            let counts = txn.open_table(COUNTS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in counts.iter().map_err(backend)? {
                let (lane, value) = entry.map_err(backend)?;
                let (pending, dead) = value.value();
                let (route, subscriber) = names.lane(lane.value());
                out.push(LaneCounts {
                    route,
                    subscriber,
                    pending,
                    dead,
                });
            }
            out.sort_by(|a, b| (&a.route, &a.subscriber).cmp(&(&b.route, &b.subscriber)));
            Ok(out)
        })
        .await
    }

    async fn prune(&self, policy: PrunePolicy) -> Result<PruneReport, StoreError> {
        match self.submit(Op::Prune(policy)).await? {
            Done::Pruned(r) => Ok(r),
            _ => unreachable!("prune answers with a report"),
        }
    }

    /// Read from a snapshot beside the writer, never inside its
    /// transaction: redb counts a table's pages by walking it (about 0.17 s
    /// for a million events), and a scrape must not hold up commits for
    /// that long. "Used" is the pages of hookrelay's tables (keys, values,
    /// branch pages and the unused room inside those pages); redb's own
    /// bookkeeping and pages freed by the latest commits are the rest of
    /// the file, with its free space.
    async fn size(&self) -> Result<StoreSize, StoreError> {
        self.read(|handle, txn| {
            let mut used = 0u64;
            macro_rules! pages {
                ($($def:expr),*) => {$(
                    let table = txn.open_table($def).map_err(backend)?;
                    let st = table.stats().map_err(backend)?;
                    used += st.stored_bytes() + st.metadata_bytes() + st.fragmented_bytes();
                )*};
            }
            pages!(
                KEYS,
                EVENTS,
                DUE,
                DEAD,
                DONE,
                SOURCES,
                COUNTS,
                NAMES,
                META,
                EXPECTED,
                POLLS,
                EXPECTED_BY_TIME,
                EXPECTED_CLOSED,
                EXPECTED_COUNTS
            );
            let file = std::fs::metadata(&handle.path)
                .map(|m| m.len())
                .unwrap_or(0);
            Ok(StoreSize {
                file_bytes: file,
                used_bytes: used,
                disk: disk_space(&handle.path),
            })
        })
        .await
    }

    async fn expect(&self, task: NewExpected) -> Result<(ExpectedTask, bool), StoreError> {
        match self.submit(Op::Expect(task)).await? {
            Done::Expected(t, new) => Ok((t, new)),
            _ => unreachable!("expect answers with a task"),
        }
    }

    async fn expected(&self, query: ExpectedQuery) -> Result<Vec<ExpectedTask>, StoreError> {
        self.read(move |db, txn| {
            let names = db.names.read().expect("names lock");
            let route = match &query.route {
                Some(r) => match names.id(r) {
                    Some(id) => Some(id),
                    None => return Ok(Vec::new()),
                },
                None => None,
            };
            let by_time = txn.open_table(EXPECTED_BY_TIME).map_err(backend)?;
            let expected = txn.open_table(EXPECTED).map_err(backend)?;
            let mut out = Vec::new();
            for (scanned, entry) in by_time.iter().map_err(backend)?.rev().enumerate() {
                if out.len() >= query.limit || scanned >= LIST_SCAN {
                    break;
                }
                let (key, _) = entry.map_err(backend)?;
                let (_, r, id) = key.value();
                if route.is_some_and(|want| want != r) {
                    continue;
                }
                let Some(v) = expected.get((r, id)).map_err(backend)? else {
                    continue;
                };
                let e = codec::decode_expected(v.value())?;
                if query.state.is_some_and(|s| s != e.state) {
                    continue;
                }
                out.push(expected_task(&names.route(r), id, &e));
            }
            Ok(out)
        })
        .await
    }

    async fn claim_polls(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<ExpectedTask>, StoreError> {
        self.read(move |db, _| {
            let mut claims = db.poll_claims.lock().expect("poll claims lock");
            let txn = db.get()?.begin_read().map_err(backend)?;
            let polls = txn.open_table(POLLS).map_err(backend)?;
            let expected = txn.open_table(EXPECTED).map_err(backend)?;
            let names = db.names.read().expect("names lock");
            let mut out = Vec::new();
            for entry in polls
                .range(..(now_ms.saturating_add(1), 0u32, ""))
                .map_err(backend)?
            {
                if out.len() >= limit {
                    break;
                }
                let (key, _) = entry.map_err(backend)?;
                let (_, route, id) = key.value();
                if claims.contains(&(route, id.to_string())) {
                    continue;
                }
                let Some(v) = expected.get((route, id)).map_err(backend)? else {
                    continue;
                };
                let e = codec::decode_expected(v.value())?;
                if !e.state.is_open() {
                    continue;
                }
                claims.insert((route, id.to_string()));
                out.push(expected_task(&names.route(route), id, &e));
            }
            Ok(out)
        })
        .await
    }

    async fn record_poll(&self, update: PollUpdate) -> Result<Recorded, StoreError> {
        match self.submit(Op::Poll(update)).await? {
            Done::Recorded(r) => Ok(r),
            _ => unreachable!("a poll answers with a flag"),
        }
    }

    async fn expected_counts(&self) -> Result<Vec<(String, ExpectedState, u64)>, StoreError> {
        self.read(|db, txn| {
            let names = db.names.read().expect("names lock");
            let counts = txn.open_table(EXPECTED_COUNTS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in counts.iter().map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                let (route, state) = key.value();
                out.push((
                    names.route(route),
                    codec::expected_state_from(state)?,
                    value.value(),
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn close(&self) {
        // Dropping the sender ends the writer once its queue is done; then
        // the file is closed cleanly (no repair at the next start).
        drop(self.writer.lock().expect("writer lock").take());
        let thread = self.thread.lock().expect("thread lock").take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let db = self.db.clone();
        let _ = tokio::task::spawn_blocking(move || db.close()).await;
    }
}
