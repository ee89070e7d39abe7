//! The embedded store: one redb file under `store.path`, written by one
//! writer thread with group commit.
//!
//! Every change is a [`Request`] sent to the writer. The writer takes the
//! first waiting request and everything else already queued (up to
//! `max_batch`), applies them all in one write transaction, commits once
//! (one fsync), then answers every waiter. Under load the batch grows, so
//! throughput grows with load instead of being capped at one fsync per
//! callback. Reads use their own read transactions and never wait for the
//! writer.
//!
//! Layout. Events are keyed by a sequence number in receipt order, so a
//! commit appends to the right edge of its trees and dirties few pages (a
//! copy-on-write B-tree rewrites every page it touches; random keys such as
//! event ids would touch a different page per insert). Only `ids`, the
//! idempotency index, takes random keys. Keys sort, so every index below is
//! a range, never a scan:
//! - `ids`: event id → (seq, received ms)
//! - `events`: seq → [`EventMeta`] (JSON)
//! - `bodies`: seq → raw body bytes
//! - `open`: seq → deliveries not yet delivered
//! - `deliveries`: (seq, subscriber) → [`DeliveryRecord`] (JSON)
//! - `due`: (due ms, seq, subscriber) for pending deliveries
//! - `dead`: (dead-at ms, seq, subscriber) for dead letters
//! - `done`: (done ms, seq) for events whose deliveries all succeeded
//! - `counters`: `next_seq`

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::{
    AppendOutcome, AttemptUpdate, DeadLetterQuery, DeliveryRecord, DeliveryState, EventMeta,
    NewEvent, Next, PrunePolicy, ReplaySelector, Store, StoreError, StoreStats, ATTEMPT_HISTORY,
};

const IDS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("ids");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
const OPEN: TableDefinition<u64, u32> = TableDefinition::new("open");
const DELIVERIES: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("deliveries");
const DUE: TableDefinition<(u64, u64, &str), ()> = TableDefinition::new("due");
const DEAD: TableDefinition<(u64, u64, &str), ()> = TableDefinition::new("dead");
const DONE: TableDefinition<(u64, u64), ()> = TableDefinition::new("done");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// The next event sequence number, kept so numbers are never reused after a prune.
const NEXT_SEQ: &str = "next_seq";

/// The store file's name inside `store.path`.
pub const FILE_NAME: &str = "hookrelay.redb";

/// How long a writer request may wait for room in the queue before the
/// ingress answers 503 (the disk is not keeping up).
const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Called after every commit with the batch size and commit duration.
pub type CommitObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

/// A change for the writer.
enum Op {
    Append(NewEvent),
    Attempt(AttemptUpdate),
    Replay(ReplaySelector, u64),
    Kill(String, String, u64),
    Delete(String),
    Prune(PrunePolicy),
}

/// What a change produced.
enum Done {
    Append(AppendOutcome),
    Records(Vec<DeliveryRecord>),
    Flag(bool),
    Count(usize),
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The open database, shared by the writer and readers. After an I/O
/// error redb refuses further work until the file is closed and opened
/// again; the writer does that here (readers hold their clone only for the
/// length of one read transaction).
struct Handle {
    path: PathBuf,
    cache_bytes: usize,
    current: RwLock<Option<Arc<Database>>>,
    /// Held (shared) by every read for the life of its read transaction,
    /// and (exclusively) by a reopen: an open read transaction keeps the
    /// file lock, so the file can only be reopened once none is left.
    readers: RwLock<()>,
}

impl Handle {
    fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.current
            .read()
            .expect("store handle lock")
            .clone()
            .ok_or_else(|| {
                StoreError::Unavailable("the store is being reopened after an I/O error".into())
            })
    }

    /// Closes the database and opens it again (redb repairs it if needed).
    fn reopen(&self) -> Result<(), StoreError> {
        // Wait for reads in progress to end; new ones wait for the reopen.
        let _no_readers = self.readers.write().expect("store readers lock");
        drop(self.current.write().expect("store handle lock").take());
        let db = open_database(&self.path, self.cache_bytes)?;
        *self.current.write().expect("store handle lock") = Some(Arc::new(db));
        tracing::warn!(path = %self.path.display(), "store reopened after an error");
        Ok(())
    }
}

fn open_database(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    let db = match redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)
    {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(StoreError::Locked(path.display().to_string()))
        }
        Err(e) => return Err(StoreError::Backend(format!("{}: {e}", path.display()))),
    };
    // Create every table up front so readers never meet a missing one.
    let txn = db.begin_write().map_err(backend)?;
    txn.open_table(IDS).map_err(backend)?;
    txn.open_table(EVENTS).map_err(backend)?;
    txn.open_table(BODIES).map_err(backend)?;
    txn.open_table(OPEN).map_err(backend)?;
    txn.open_table(DELIVERIES).map_err(backend)?;
    txn.open_table(DUE).map_err(backend)?;
    txn.open_table(DEAD).map_err(backend)?;
    txn.open_table(DONE).map_err(backend)?;
    txn.open_table(COUNTERS).map_err(backend)?;
    txn.commit().map_err(backend)?;
    Ok(db)
}

/// redb behind the [`Store`] trait, with a group-commit writer thread.
pub struct EmbeddedStore {
    db: Arc<Handle>,
    writer: mpsc::Sender<Request>,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish()
    }
}

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

impl EmbeddedStore {
    /// Opens (or creates) the store under `dir` and starts its writer.
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
        let db = Arc::new(Handle {
            current: RwLock::new(Some(Arc::new(open_database(&path, cache_bytes)?))),
            path: path.clone(),
            cache_bytes,
            readers: RwLock::new(()),
        });
        let (tx, rx) = mpsc::channel(max_batch.max(64) * 4);
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("hookrelay-store".into())
            .spawn(move || writer_loop(writer_db, rx, max_batch.max(1), observer))
            .map_err(|e| StoreError::Backend(format!("cannot start store writer: {e}")))?;
        Ok(Self {
            db,
            writer: tx,
            path,
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, answer) = oneshot::channel();
        match self
            .writer
            .send_timeout(Request { op, reply }, QUEUE_WAIT)
            .await
        {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => return Err(StoreError::Overloaded),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                return Err(StoreError::Unavailable(
                    "the store writer has stopped".into(),
                ))
            }
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let _reading = db.readers.read().expect("store readers lock");
            let txn = db.get()?.begin_read().map_err(backend)?;
            f(&txn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records always serialise")
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
        // The first sequence number this batch hands out (known once its
        // transaction began): events at or above it were written by it.
        let mut first_seq = None;
        let applied = match db.get() {
            Ok(database) => apply_batch(&database, &mut batch, &mut first_seq),
            // A previous reopen failed: try again before giving up on this batch.
            Err(_) => db.reopen().and_then(|_| {
                let database = db.get()?;
                apply_batch(&database, &mut batch, &mut first_seq)
            }),
        };
        match applied {
            Ok(results) => {
                if let Some(observe) = &observer {
                    observe(size, started.elapsed());
                }
                for (request, result) in batch.drain(..).zip(results) {
                    let _ = request.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = size, "store commit failed");
                // redb refuses all work after an I/O error until reopened.
                let reopened = db.reopen();
                if let Err(e) = &reopened {
                    tracing::error!(error = %e, "cannot reopen the store; will retry on the next write");
                }
                for request in batch.drain(..) {
                    // A commit can fail after its data reached the disk: an
                    // event found in the reopened store was committed, and
                    // its sender must hear so (a 503 would make its retry a
                    // `duplicate` whose deliveries no lane was given).
                    let durable = match (&reopened, &request.op, first_seq) {
                        (Ok(()), Op::Append(event), Some(first)) => {
                            committed_seq(&db, &event.event_id).filter(|seq| *seq >= first)
                        }
                        _ => None,
                    };
                    let answer = match durable {
                        Some(seq) => Ok(Done::Append(AppendOutcome::Accepted { seq })),
                        None => Err(StoreError::Unavailable(e.to_string())),
                    };
                    let _ = request.reply.send(answer);
                }
            }
        }
    }
    tracing::debug!("store writer stopped");
}

/// The sequence number of a stored event, if the store holds it.
fn committed_seq(db: &Handle, event_id: &str) -> Option<u64> {
    let _reading = db.readers.read().ok()?;
    let txn = db.get().ok()?.begin_read().ok()?;
    let ids = txn.open_table(IDS).ok()?;
    let found = ids.get(event_id).ok()??;
    Some(found.value().0)
}

/// Applies every request in one transaction. A per-request problem (a
/// missing record) is that request's answer; a database error aborts the
/// whole transaction and fails every waiter.
fn apply_batch(
    db: &Database,
    batch: &mut [Request],
    first_seq: &mut Option<u64>,
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut t = Tables::open(&txn)?;
        *first_seq = Some(t.next_seq);
        for request in batch.iter_mut() {
            let result = match &mut request.op {
                Op::Append(event) => t.append(event).map(Done::Append),
                Op::Attempt(update) => t.attempt(update).map(Done::Flag),
                Op::Replay(selector, now) => t.replay(selector, *now).map(Done::Records),
                Op::Kill(id, reason, now) => t.kill(id, reason, *now).map(Done::Flag),
                Op::Delete(id) => t.delete_dead(id).map(Done::Flag),
                Op::Prune(policy) => t.prune(*policy).map(Done::Count),
            };
            match result {
                Err(StoreError::Backend(e)) => return Err(StoreError::Backend(e)),
                other => results.push(other),
            }
        }
        t.save_counters()?;
    }
    txn.commit().map_err(backend)?;
    Ok(results)
}

/// Splits a delivery id into event id and subscriber.
fn split_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('.')
}

/// The open tables of one write transaction.
struct Tables<'t> {
    ids: redb::Table<'t, &'static str, (u64, u64)>,
    events: redb::Table<'t, u64, &'static [u8]>,
    bodies: redb::Table<'t, u64, &'static [u8]>,
    open: redb::Table<'t, u64, u32>,
    deliveries: redb::Table<'t, (u64, &'static str), &'static [u8]>,
    due: redb::Table<'t, (u64, u64, &'static str), ()>,
    dead: redb::Table<'t, (u64, u64, &'static str), ()>,
    done: redb::Table<'t, (u64, u64), ()>,
    counters: redb::Table<'t, &'static str, u64>,
    /// The next event's sequence number.
    next_seq: u64,
    /// `next_seq` when the transaction began (saved only if it moved).
    first_seq: u64,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        let events = txn.open_table(EVENTS).map_err(backend)?;
        let counters = txn.open_table(COUNTERS).map_err(backend)?;
        let stored = counters.get(NEXT_SEQ).map_err(backend)?.map(|v| v.value());
        let after_last = match events.last().map_err(backend)? {
            Some((seq, _)) => seq.value() + 1,
            None => 1,
        };
        let next_seq = stored.unwrap_or(1).max(after_last);
        Ok(Self {
            counters,
            first_seq: next_seq,
            ids: txn.open_table(IDS).map_err(backend)?,
            events,
            bodies: txn.open_table(BODIES).map_err(backend)?,
            open: txn.open_table(OPEN).map_err(backend)?,
            deliveries: txn.open_table(DELIVERIES).map_err(backend)?,
            due: txn.open_table(DUE).map_err(backend)?,
            dead: txn.open_table(DEAD).map_err(backend)?,
            done: txn.open_table(DONE).map_err(backend)?,
            next_seq,
        })
    }

    fn seq_of(&self, event_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .ids
            .get(event_id)
            .map_err(backend)?
            .map(|v| v.value().0))
    }

    /// Persists the sequence counter if this transaction used numbers.
    fn save_counters(&mut self) -> Result<(), StoreError> {
        if self.next_seq != self.first_seq {
            self.counters
                .insert(NEXT_SEQ, self.next_seq)
                .map_err(backend)?;
        }
        Ok(())
    }

    fn delivery(&self, seq: u64, subscriber: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        match self.deliveries.get((seq, subscriber)).map_err(backend)? {
            Some(bytes) => decode(bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// The delivery with this id (`{event_id}.{subscriber}`), if any.
    fn delivery_by_id(&self, id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        let Some((event_id, subscriber)) = split_id(id) else {
            return Ok(None);
        };
        match self.seq_of(event_id)? {
            Some(seq) => self.delivery(seq, subscriber),
            None => Ok(None),
        }
    }

    fn put_delivery(&mut self, record: &DeliveryRecord) -> Result<(), StoreError> {
        self.deliveries
            .insert(
                (record.seq, record.subscriber.as_str()),
                encode(record).as_slice(),
            )
            .map_err(backend)?;
        Ok(())
    }

    /// One fewer open delivery for the event; marks it done at zero.
    fn close_one(&mut self, seq: u64, now_ms: u64) -> Result<(), StoreError> {
        let open = self.open.get(seq).map_err(backend)?.map(|v| v.value());
        if let Some(open) = open {
            let left = open.saturating_sub(1);
            self.open.insert(seq, left).map_err(backend)?;
            if left == 0 {
                self.done.insert((now_ms, seq), ()).map_err(backend)?;
            }
        }
        Ok(())
    }

    fn append(&mut self, event: &NewEvent) -> Result<AppendOutcome, StoreError> {
        let id = event.event_id.as_str();
        if self.ids.get(id).map_err(backend)?.is_some() {
            return Ok(AppendOutcome::Duplicate);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let meta = EventMeta {
            event_id: event.event_id.clone(),
            route: event.route.to_string(),
            received_ms: event.received_ms,
            headers: event.headers.clone(),
            subscribers: event.subscribers.iter().map(|s| s.to_string()).collect(),
            open: event.subscribers.len() as u32,
            body_len: event.body.len() as u64,
        };
        self.ids
            .insert(id, (seq, event.received_ms))
            .map_err(backend)?;
        self.events
            .insert(seq, encode(&meta).as_slice())
            .map_err(backend)?;
        self.bodies.insert(seq, &event.body[..]).map_err(backend)?;
        self.open
            .insert(seq, event.subscribers.len() as u32)
            .map_err(backend)?;
        for subscriber in &event.subscribers {
            let record = DeliveryRecord {
                id: DeliveryRecord::id_for(id, subscriber),
                seq,
                event_id: event.event_id.clone(),
                route: event.route.to_string(),
                subscriber: subscriber.to_string(),
                state: DeliveryState::Pending,
                attempts: 0,
                due_ms: event.received_ms,
                received_ms: event.received_ms,
                schedule_start_ms: event.received_ms,
                updated_ms: event.received_ms,
                dead_reason: None,
                history: Vec::new(),
            };
            self.put_delivery(&record)?;
            self.due
                .insert((record.due_ms, seq, &**subscriber), ())
                .map_err(backend)?;
        }
        if event.subscribers.is_empty() {
            self.done
                .insert((event.received_ms, seq), ())
                .map_err(backend)?;
        }
        Ok(AppendOutcome::Accepted { seq })
    }

    fn attempt(&mut self, update: &AttemptUpdate) -> Result<bool, StoreError> {
        let Some(mut record) = self.delivery(update.seq, &update.subscriber)? else {
            return Ok(false);
        };
        if record.state != DeliveryState::Pending {
            // Made a dead letter meanwhile (subscriber removed): ignored.
            return Ok(false);
        }
        let seq = record.seq;
        self.due
            .remove((record.due_ms, seq, record.subscriber.as_str()))
            .map_err(backend)?;
        record.attempts = record.attempts.max(update.attempt.attempt);
        record.history.push(update.attempt.clone());
        if record.history.len() > ATTEMPT_HISTORY {
            let excess = record.history.len() - ATTEMPT_HISTORY;
            record.history.drain(..excess);
        }
        let now = update.attempt.at_ms + update.attempt.duration_ms;
        record.updated_ms = now;
        match &update.next {
            Next::Retry { due_ms } => {
                record.due_ms = *due_ms;
                self.due
                    .insert((record.due_ms, seq, record.subscriber.as_str()), ())
                    .map_err(backend)?;
            }
            Next::Delivered => {
                record.state = DeliveryState::Delivered;
                self.close_one(seq, now)?;
            }
            Next::Dead { reason } => {
                record.state = DeliveryState::Dead;
                record.dead_reason = Some(reason.clone());
                self.dead
                    .insert((now, seq, record.subscriber.as_str()), ())
                    .map_err(backend)?;
            }
        }
        self.put_delivery(&record)?;
        Ok(true)
    }

    fn replay(
        &mut self,
        selector: &ReplaySelector,
        now_ms: u64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut records = Vec::new();
        match selector {
            ReplaySelector::Ids(ids) => {
                // Each id once, even if the request repeats one.
                let mut seen = std::collections::HashSet::new();
                for id in ids.iter().filter(|id| seen.insert(id.as_str())) {
                    if let Some(record) = self.delivery_by_id(id)? {
                        records.push(record);
                    }
                }
            }
            ReplaySelector::Subscriber { route, subscriber } => {
                let mut keys = Vec::new();
                for entry in self.dead.iter().map_err(backend)? {
                    let (key, _) = entry.map_err(backend)?;
                    let (_, seq, sub) = key.value();
                    if sub == subscriber {
                        keys.push(seq);
                    }
                }
                for seq in keys {
                    if let Some(record) = self.delivery(seq, subscriber)? {
                        if &record.route == route {
                            records.push(record);
                        }
                    }
                }
            }
        }
        let mut requeued = Vec::new();
        for mut record in records {
            if record.state != DeliveryState::Dead {
                continue;
            }
            let seq = record.seq;
            self.dead
                .remove((record.updated_ms, seq, record.subscriber.as_str()))
                .map_err(backend)?;
            record.state = DeliveryState::Pending;
            record.attempts = 0;
            record.dead_reason = None;
            record.due_ms = now_ms;
            record.schedule_start_ms = now_ms;
            record.updated_ms = now_ms;
            self.due
                .insert((record.due_ms, seq, record.subscriber.as_str()), ())
                .map_err(backend)?;
            self.put_delivery(&record)?;
            requeued.push(record);
        }
        Ok(requeued)
    }

    fn kill(&mut self, id: &str, reason: &str, now_ms: u64) -> Result<bool, StoreError> {
        let Some(mut record) = self.delivery_by_id(id)? else {
            return Ok(false);
        };
        if record.state != DeliveryState::Pending {
            return Ok(false);
        }
        let seq = record.seq;
        self.due
            .remove((record.due_ms, seq, record.subscriber.as_str()))
            .map_err(backend)?;
        record.state = DeliveryState::Dead;
        record.dead_reason = Some(reason.to_string());
        record.updated_ms = now_ms;
        self.dead
            .insert((now_ms, seq, record.subscriber.as_str()), ())
            .map_err(backend)?;
        self.put_delivery(&record)?;
        Ok(true)
    }

    fn delete_dead(&mut self, id: &str) -> Result<bool, StoreError> {
        let Some(record) = self.delivery_by_id(id)? else {
            return Ok(false);
        };
        if record.state != DeliveryState::Dead {
            return Ok(false);
        }
        let seq = record.seq;
        self.dead
            .remove((record.updated_ms, seq, record.subscriber.as_str()))
            .map_err(backend)?;
        // The delivery stays as a closed record so the event's history is
        // complete; it no longer holds the event open.
        let mut closed = record.clone();
        closed.state = DeliveryState::Delivered;
        closed.dead_reason = Some(format!(
            "deleted dead letter: {}",
            record.dead_reason.as_deref().unwrap_or("")
        ));
        self.put_delivery(&closed)?;
        self.close_one(seq, record.updated_ms)?;
        Ok(true)
    }

    fn prune(&mut self, policy: PrunePolicy) -> Result<usize, StoreError> {
        let cutoff = policy.now_ms.saturating_sub(policy.keep_ms);
        let mut victims = Vec::new();
        for entry in self.done.range(..(cutoff, 0)).map_err(backend)? {
            let (key, _) = entry.map_err(backend)?;
            victims.push(key.value());
            if victims.len() >= policy.max_events {
                break;
            }
        }
        let mut removed = 0;
        for (at, seq) in victims {
            self.done.remove((at, seq)).map_err(backend)?;
            if self.open.get(seq).map_err(backend)?.map(|v| v.value()) != Some(0) {
                // A dead letter was replayed meanwhile: it is done again later.
                continue;
            }
            let meta: EventMeta = match self.events.get(seq).map_err(backend)? {
                Some(bytes) => decode(bytes.value())?,
                None => continue,
            };
            if meta.received_ms > cutoff {
                // Done early but still within its idempotency window: look again later.
                self.done
                    .insert((meta.received_ms, seq), ())
                    .map_err(backend)?;
                continue;
            }
            for subscriber in &meta.subscribers {
                self.deliveries
                    .remove((seq, subscriber.as_str()))
                    .map_err(backend)?;
            }
            self.events.remove(seq).map_err(backend)?;
            self.bodies.remove(seq).map_err(backend)?;
            self.open.remove(seq).map_err(backend)?;
            self.ids.remove(meta.event_id.as_str()).map_err(backend)?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// Read-side helpers over one read transaction.
struct Reader<'a> {
    txn: &'a redb::ReadTransaction,
}

impl Reader<'_> {
    fn seq_of(&self, event_id: &str) -> Result<Option<u64>, StoreError> {
        let ids = self.txn.open_table(IDS).map_err(backend)?;
        Ok(ids.get(event_id).map_err(backend)?.map(|v| v.value().0))
    }

    fn deliveries(
        &self,
    ) -> Result<redb::ReadOnlyTable<(u64, &'static str), &'static [u8]>, StoreError> {
        self.txn.open_table(DELIVERIES).map_err(backend)
    }
}

fn read_delivery(
    table: &redb::ReadOnlyTable<(u64, &'static str), &'static [u8]>,
    seq: u64,
    subscriber: &str,
) -> Result<Option<DeliveryRecord>, StoreError> {
    match table.get((seq, subscriber)).map_err(backend)? {
        Some(bytes) => decode(bytes.value()).map(Some),
        None => Ok(None),
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn append(&self, event: NewEvent) -> Result<AppendOutcome, StoreError> {
        match self.submit(Op::Append(event)).await? {
            Done::Append(outcome) => Ok(outcome),
            _ => unreachable!("append answers with an outcome"),
        }
    }

    async fn record_attempt(&self, update: AttemptUpdate) -> Result<bool, StoreError> {
        match self.submit(Op::Attempt(update)).await? {
            Done::Flag(applied) => Ok(applied),
            _ => unreachable!("an attempt answers with a flag"),
        }
    }

    async fn pending(&self) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.read(|txn| {
            let due = txn.open_table(DUE).map_err(backend)?;
            let deliveries = Reader { txn }.deliveries()?;
            let mut out = Vec::new();
            for entry in due.iter().map_err(backend)? {
                let (key, _) = entry.map_err(backend)?;
                let (_, seq, subscriber) = key.value();
                if let Some(record) = read_delivery(&deliveries, seq, subscriber)? {
                    out.push(record);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn body(&self, event_id: &str) -> Result<Option<Bytes>, StoreError> {
        let id = event_id.to_string();
        self.read(move |txn| {
            let Some(seq) = (Reader { txn }).seq_of(&id)? else {
                return Ok(None);
            };
            let bodies = txn.open_table(BODIES).map_err(backend)?;
            Ok(bodies
                .get(seq)
                .map_err(backend)?
                .map(|b| Bytes::copy_from_slice(b.value())))
        })
        .await
    }

    async fn event(
        &self,
        event_id: &str,
    ) -> Result<Option<(EventMeta, Vec<DeliveryRecord>)>, StoreError> {
        let id = event_id.to_string();
        self.read(move |txn| {
            let reader = Reader { txn };
            let Some(seq) = reader.seq_of(&id)? else {
                return Ok(None);
            };
            let events = txn.open_table(EVENTS).map_err(backend)?;
            let Some(meta) = events.get(seq).map_err(backend)? else {
                return Ok(None);
            };
            let mut meta: EventMeta = decode(meta.value())?;
            let open = txn.open_table(OPEN).map_err(backend)?;
            meta.open = open.get(seq).map_err(backend)?.map_or(0, |v| v.value());
            let deliveries = reader.deliveries()?;
            let mut records = Vec::new();
            for subscriber in &meta.subscribers {
                if let Some(r) = read_delivery(&deliveries, seq, subscriber)? {
                    records.push(r);
                }
            }
            Ok(Some((meta, records)))
        })
        .await
    }

    async fn dead_letters(
        &self,
        query: DeadLetterQuery,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.read(move |txn| {
            let dead = txn.open_table(DEAD).map_err(backend)?;
            let deliveries = Reader { txn }.deliveries()?;
            let mut out = Vec::new();
            for entry in dead.iter().map_err(backend)?.rev() {
                if out.len() >= query.limit {
                    break;
                }
                let (key, _) = entry.map_err(backend)?;
                let (_, seq, subscriber) = key.value();
                if query.subscriber.as_ref().is_some_and(|s| s != subscriber) {
                    continue;
                }
                let Some(record) = read_delivery(&deliveries, seq, subscriber)? else {
                    continue;
                };
                if query.route.as_ref().is_some_and(|r| r != &record.route) {
                    continue;
                }
                out.push(record);
            }
            Ok(out)
        })
        .await
    }

    async fn replay(
        &self,
        selector: ReplaySelector,
        now_ms: u64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        match self.submit(Op::Replay(selector, now_ms)).await? {
            Done::Records(records) => Ok(records),
            _ => unreachable!("replay answers with records"),
        }
    }

    async fn kill(&self, delivery_id: &str, reason: &str, now_ms: u64) -> Result<bool, StoreError> {
        match self
            .submit(Op::Kill(
                delivery_id.to_string(),
                reason.to_string(),
                now_ms,
            ))
            .await?
        {
            Done::Flag(flag) => Ok(flag),
            _ => unreachable!("kill answers with a flag"),
        }
    }

    async fn delete_dead(&self, delivery_id: &str) -> Result<bool, StoreError> {
        match self.submit(Op::Delete(delivery_id.to_string())).await? {
            Done::Flag(flag) => Ok(flag),
            _ => unreachable!("delete answers with a flag"),
        }
    }

    async fn prune(&self, policy: PrunePolicy) -> Result<usize, StoreError> {
        match self.submit(Op::Prune(policy)).await? {
            Done::Count(n) => Ok(n),
            _ => unreachable!("prune answers with a count"),
        }
    }

    async fn recent_keys(
        &self,
        since_ms: u64,
        max: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(move |txn| {
            let ids = txn.open_table(IDS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in ids.iter().map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                let (_, received) = value.value();
                if received >= since_ms {
                    out.push((key.value().to_string(), received));
                }
            }
            if out.len() > max {
                out.sort_unstable_by_key(|(_, at)| std::cmp::Reverse(*at));
                out.truncate(max);
            }
            out.sort_unstable_by_key(|(_, at)| *at);
            Ok(out)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(|txn| {
            let dead = txn.open_table(DEAD).map_err(backend)?;
            let deliveries = Reader { txn }.deliveries()?;
            let mut per: std::collections::BTreeMap<(String, String), u64> = Default::default();
            for entry in dead.iter().map_err(backend)? {
                let (key, _) = entry.map_err(backend)?;
                let (_, seq, subscriber) = key.value();
                if let Some(r) = read_delivery(&deliveries, seq, subscriber)? {
                    *per.entry((r.route, r.subscriber)).or_default() += 1;
                }
            }
            Ok(StoreStats {
                dead: per.into_iter().collect(),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AttemptRecord;

    fn event(id: &str, subs: &[&str], at: u64) -> NewEvent {
        NewEvent {
            event_id: id.into(),
            route: Arc::from("r"),
            received_ms: at,
            headers: vec![],
            body: Bytes::from_static(b"{\"id\":\"x\"}"),
            subscribers: subs.iter().map(|s| Arc::from(*s)).collect(),
        }
    }

    fn attempt(n: u32, status: u16, at: u64) -> AttemptRecord {
        AttemptRecord {
            attempt: n,
            at_ms: at,
            status: Some(status),
            error: None,
            duration_ms: 1,
        }
    }

    #[tokio::test]
    async fn append_is_idempotent_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
            assert_eq!(
                store.append(event("e1", &["a", "b"], 10)).await.unwrap(),
                AppendOutcome::Accepted { seq: 1 }
            );
            assert_eq!(
                store.append(event("e1", &["a", "b"], 11)).await.unwrap(),
                AppendOutcome::Duplicate
            );
        }
        // The writer thread exits when the channel closes; wait for the lock to go.
        let store = loop {
            match EmbeddedStore::open(dir.path(), EmbeddedOptions::default()) {
                Ok(s) => break s,
                Err(StoreError::Locked(_)) => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(
            store.append(event("e1", &["a"], 12)).await.unwrap(),
            AppendOutcome::Duplicate
        );
        let pending = store.pending().await.unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(
            store.body("e1").await.unwrap().unwrap(),
            Bytes::from_static(b"{\"id\":\"x\"}")
        );
    }

    #[tokio::test]
    async fn second_open_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let err = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)));
        assert!(err
            .to_string()
            .contains("in use by another hookrelay process"));
    }

    #[tokio::test]
    async fn dead_letters_replay_delete_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        store.append(event("e1", &["a", "b"], 10)).await.unwrap();
        store
            .record_attempt(AttemptUpdate {
                delivery_id: "e1.a".into(),
                seq: 1,
                subscriber: Arc::from("a"),
                attempt: attempt(1, 200, 20),
                next: Next::Delivered,
            })
            .await
            .unwrap();
        store
            .record_attempt(AttemptUpdate {
                delivery_id: "e1.b".into(),
                seq: 1,
                subscriber: Arc::from("b"),
                attempt: attempt(1, 410, 20),
                next: Next::Dead {
                    reason: "410 Gone".into(),
                },
            })
            .await
            .unwrap();
        let dead = store
            .dead_letters(DeadLetterQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].dead_reason.as_deref(), Some("410 Gone"));
        assert_eq!(dead[0].last().unwrap().status, Some(410));
        // Not prunable while a dead letter holds it open.
        let policy = PrunePolicy {
            now_ms: 1_000_000,
            keep_ms: 100,
            max_events: 100,
        };
        assert_eq!(store.prune(policy).await.unwrap(), 0);

        let requeued = store
            .replay(ReplaySelector::Ids(vec!["e1.b".into()]), 30)
            .await
            .unwrap();
        assert_eq!(requeued.len(), 1);
        assert_eq!(store.pending().await.unwrap().len(), 1);
        store
            .record_attempt(AttemptUpdate {
                delivery_id: "e1.b".into(),
                seq: 1,
                subscriber: Arc::from("b"),
                attempt: attempt(1, 500, 40),
                next: Next::Dead {
                    reason: "max_elapsed".into(),
                },
            })
            .await
            .unwrap();
        assert!(store.delete_dead("e1.b").await.unwrap());
        assert!(!store.delete_dead("e1.b").await.unwrap());
        assert_eq!(store.prune(policy).await.unwrap(), 1);
        assert!(store.event("e1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn prune_waits_for_the_idempotency_window_of_young_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        // No subscriber matched: done at once, at its receipt time.
        store.append(event("young", &[], 1_000)).await.unwrap();
        let early = PrunePolicy {
            now_ms: 1_500,
            keep_ms: 1_000,
            max_events: 10,
        };
        assert_eq!(store.prune(early).await.unwrap(), 0);
        assert!(store.event("young").await.unwrap().is_some());
        let later = PrunePolicy {
            now_ms: 2_500,
            keep_ms: 1_000,
            max_events: 10,
        };
        assert_eq!(store.prune(later).await.unwrap(), 1);
        assert!(store.event("young").await.unwrap().is_none());
        assert_eq!(
            store.append(event("young", &[], 3_000)).await.unwrap(),
            AppendOutcome::Accepted { seq: 2 },
            "sequence numbers are never reused"
        );
    }
}
