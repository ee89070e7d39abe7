//! Durable state: accepted events, their deliveries, the due-time index and
//! dead letters, behind the [`Store`] trait.
//!
//! The ingress awaits [`Store::append`] before answering 2xx: once it
//! returns `Accepted`, the event and one delivery per matching subscriber
//! are on disk. The embedded implementation ([`embedded::EmbeddedStore`],
//! redb) group-commits all waiting writes in one transaction.

pub mod embedded;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store directory.
    #[error("the store at {0} is in use by another hookrelay process (one store, one process)")]
    Locked(String),
    /// The write queue is full: the disk cannot keep up right now.
    #[error("the store is overloaded")]
    Overloaded,
    /// The writer has stopped (shutdown) or the database failed.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The database reported an error (I/O, corruption, full disk).
    #[error("store error: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// An accepted callback, ready to be made durable.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Stable id derived from the idempotency key.
    pub event_id: String,
    /// Route name.
    pub route: Arc<str>,
    /// Receipt time, unix milliseconds.
    pub received_ms: u64,
    /// Request headers worth keeping for operators (content type, sender ids).
    pub headers: Vec<(String, String)>,
    /// The body exactly as received.
    pub body: Bytes,
    /// Names of the subscribers whose filters matched: one delivery each.
    pub subscribers: Vec<Arc<str>>,
}

/// What [`Store::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Newly written, with its deliveries, under this sequence number.
    Accepted {
        /// The store's key for the event (receipt order).
        seq: u64,
    },
    /// The event id was already stored; nothing written.
    Duplicate,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its due time (or in flight: that is only known in memory).
    Pending,
    /// A subscriber answered 2xx.
    Delivered,
    /// Given up; kept for inspection and replay.
    Dead,
}

/// One attempt's outcome, as kept in the store and shown by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Start of the attempt, unix milliseconds.
    pub at_ms: u64,
    /// HTTP status, when the subscriber answered.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    /// Transport error or timeout, when it did not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
}

/// How many attempt records a delivery keeps (the newest).
pub const ATTEMPT_HISTORY: usize = 20;

/// One (event, subscriber) delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// `{event_id}.{subscriber}`: event ids contain no `.`.
    pub id: String,
    /// The event's sequence number in the store (its internal key).
    #[serde(default)]
    pub seq: u64,
    /// The event delivered.
    pub event_id: String,
    /// Route name.
    pub route: String,
    /// Subscriber name.
    pub subscriber: String,
    /// Current state.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending only), unix milliseconds.
    pub due_ms: u64,
    /// When the event was received; `max_elapsed` counts from here.
    pub received_ms: u64,
    /// When a replay restarted the schedule (counts for `max_elapsed` instead).
    #[serde(default)]
    pub schedule_start_ms: u64,
    /// Last change, unix milliseconds.
    pub updated_ms: u64,
    /// Why it is dead, when it is.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dead_reason: Option<String>,
    /// The newest attempts, oldest first.
    #[serde(default)]
    pub history: Vec<AttemptRecord>,
}

impl DeliveryRecord {
    /// The delivery id for an event and subscriber.
    pub fn id_for(event_id: &str, subscriber: &str) -> String {
        format!("{event_id}.{subscriber}")
    }

    /// The last attempt, if any.
    pub fn last(&self) -> Option<&AttemptRecord> {
        self.history.last()
    }
}

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (unix ms).
    Retry {
        /// Next due time.
        due_ms: u64,
    },
    /// Done: the subscriber took it.
    Delivered,
    /// Given up, with the reason.
    Dead {
        /// e.g. "410 Gone", "max_elapsed reached: last 500".
        reason: String,
    },
}

/// The result of one attempt, to persist before the lane moves on.
#[derive(Debug, Clone)]
pub struct AttemptUpdate {
    /// Delivery id.
    pub delivery_id: String,
    /// The event's sequence number (so the update needs no id lookup).
    pub seq: u64,
    /// The subscriber.
    pub subscriber: Arc<str>,
    /// The attempt.
    pub attempt: AttemptRecord,
    /// Its consequence.
    pub next: Next,
}

/// A stored event, for the admin API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMeta {
    /// Event id.
    pub event_id: String,
    /// Route name.
    pub route: String,
    /// Receipt time, unix ms.
    pub received_ms: u64,
    /// Kept headers.
    pub headers: Vec<(String, String)>,
    /// Subscribers with a delivery.
    pub subscribers: Vec<String>,
    /// Deliveries not yet delivered (pending or dead). The store's `open`
    /// count is authoritative; this field is filled from it on every read.
    pub open: u32,
    /// Body size in bytes.
    pub body_len: u64,
}

/// Which dead letters to list.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterQuery {
    /// Only this route.
    pub route: Option<String>,
    /// Only this subscriber.
    pub subscriber: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Which dead letters to replay.
#[derive(Debug, Clone)]
pub enum ReplaySelector {
    /// These delivery ids.
    Ids(Vec<String>),
    /// Every dead letter of one subscriber.
    Subscriber {
        /// Route name.
        route: String,
        /// Subscriber name.
        subscriber: String,
    },
}

/// What the pruner may remove.
#[derive(Debug, Clone, Copy)]
pub struct PrunePolicy {
    /// Now, unix ms.
    pub now_ms: u64,
    /// Fully delivered events are kept this long after their last delivery
    /// and after their receipt (so the idempotency TTL is honoured).
    pub keep_ms: u64,
    /// At most this many events per run (keeps write transactions short).
    pub max_events: usize,
}

/// Counts derived from the store at start, for gauges.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Dead letters per (route, subscriber).
    pub dead: Vec<((String, String), u64)>,
}

/// Durable storage of events and deliveries.
///
/// Every method that changes state returns only after the change is on
/// disk. Implementations: [`embedded::EmbeddedStore`] (redb).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes an event and its deliveries, or reports it as a duplicate.
    async fn append(&self, event: NewEvent) -> Result<AppendOutcome, StoreError>;
    /// Records an attempt and the delivery's next state; false when the
    /// delivery was no longer pending (made a dead letter meanwhile), in
    /// which case nothing changes.
    async fn record_attempt(&self, update: AttemptUpdate) -> Result<bool, StoreError>;
    /// Every pending delivery (for the dispatcher at start), by due time.
    async fn pending(&self) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// An event's body.
    async fn body(&self, event_id: &str) -> Result<Option<Bytes>, StoreError>;
    /// An event and its deliveries.
    async fn event(
        &self,
        event_id: &str,
    ) -> Result<Option<(EventMeta, Vec<DeliveryRecord>)>, StoreError>;
    /// Dead letters, newest first.
    async fn dead_letters(&self, query: DeadLetterQuery)
        -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Moves dead letters back to pending with a fresh schedule due now;
    /// returns the requeued deliveries.
    async fn replay(
        &self,
        selector: ReplaySelector,
        now_ms: u64,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Marks a pending delivery dead (e.g. its subscriber was removed).
    async fn kill(&self, delivery_id: &str, reason: &str, now_ms: u64) -> Result<bool, StoreError>;
    /// Deletes one dead letter; false when there was none with that id.
    async fn delete_dead(&self, delivery_id: &str) -> Result<bool, StoreError>;
    /// Removes fully delivered events past their keep time; returns how many.
    async fn prune(&self, policy: PrunePolicy) -> Result<usize, StoreError>;
    /// Event ids and receipt times of stored events (warms the idempotency cache).
    async fn recent_keys(
        &self,
        since_ms: u64,
        max: usize,
    ) -> Result<Vec<(String, u64)>, StoreError>;
    /// Counts for gauges.
    async fn stats(&self) -> Result<StoreStats, StoreError>;
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
