//! Durable state behind the [`Store`] trait: accepted events, one delivery
//! per (event, subscriber), dead letters, and who is working on what.
//!
//! The trait speaks the gateway's domain, not one engine's: events are
//! named by their [`EventId`], deliveries by (event, route, subscriber).
//! Two implementations: [`embedded::EmbeddedStore`] (one redb file, one
//! process) and [`postgres::PostgresStore`] (shared by several replicas).
//!
//! Guarantees every implementation keeps:
//! - [`Store::append`] returns `Accepted` only once the event and its
//!   deliveries are durable; the ingress answers 2xx only after that.
//! - A delivery is *claimed* by at most one store instance (one process) at
//!   a time. The instance that appends an event claims its deliveries; others
//!   are claimed with [`Store::claim_due`]. An attempt's result is recorded
//!   only while the claim is held ([`Recorded::Stale`] otherwise), so a
//!   process that lost its claim never overwrites another's result.
//! - A delivery never disappears: it is pending, delivered, dead, or deleted
//!   (a dead letter an operator removed). A pending delivery whose subscriber
//!   is missing from the running config simply waits (an *orphan*, visible in
//!   [`Store::counts`]) until the subscriber returns or an operator resolves it.

pub mod codec;
pub mod embedded;
pub mod postgres;
mod upgrade;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use serde::{Serialize, Serializer};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store directory.
    #[error("the store at {0} is in use by another hookrelay process (one store, one process)")]
    Locked(String),
    /// The write queue is full: the disk cannot keep up right now.
    #[error("the store is overloaded")]
    Overloaded,
    /// The store is stopping, being reopened, or its server is unreachable.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The database reported an error (I/O, corruption, full disk).
    #[error("store error: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// The stable id of an event: the first 128 bits of SHA-256(route, key).
///
/// Shown as 22 characters of URL-safe base64 (no `.`, so a delivery id
/// `{event_id}.{subscriber}` splits unambiguously).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u128);

impl EventId {
    /// The id's 16 bytes, big-endian.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        EventId(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 22];
        URL_SAFE_NO_PAD
            .encode_slice(self.to_bytes(), &mut out)
            .expect("16 bytes fit in 22 base64 characters");
        f.write_str(std::str::from_utf8(&out).expect("base64 is ASCII"))
    }
}

impl FromStr for EventId {
    type Err = ();
    /// Parses the 22-character form; anything else is not one of ours.
    fn from_str(text: &str) -> Result<Self, ()> {
        if text.len() != 22 {
            return Err(());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| ())?;
        let array: [u8; 16] = bytes.try_into().map_err(|_| ())?;
        Ok(EventId::from_bytes(array))
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A delivery's public id, `{event_id}.{subscriber}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryId {
    /// The event.
    pub event: EventId,
    /// The subscriber's name (unique within the event's route).
    pub subscriber: String,
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.event, self.subscriber)
    }
}

impl FromStr for DeliveryId {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        let (event, subscriber) = text.split_once('.').ok_or(())?;
        if subscriber.is_empty() {
            return Err(());
        }
        Ok(DeliveryId {
            event: event.parse()?,
            subscriber: subscriber.to_string(),
        })
    }
}

/// How an event reached hookrelay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The sender posted it (the normal case).
    Callback,
    /// hookrelay fetched it from the provider's result API because the
    /// callback did not arrive in time (muapi reconciliation).
    Reconciled,
}

/// An accepted callback, ready to be made durable.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Stable id derived from the idempotency key.
    pub id: EventId,
    /// Route name.
    pub route: Arc<str>,
    /// Receipt time, unix milliseconds.
    pub received_ms: u64,
    /// The sender's own id for what this event is about (a muapi task id,
    /// a generic webhook's `webhook-id`), for operators' lookups.
    pub source_id: Option<String>,
    /// The callback's `status`, when it has one (shown to operators).
    pub status: Option<String>,
    /// Callback or reconciled.
    pub origin: Origin,
    /// Request headers worth keeping for operators (never credentials).
    pub headers: Vec<(String, String)>,
    /// The body exactly as received.
    pub body: Bytes,
    /// The subscribers whose filters matched: one delivery each.
    pub subscribers: Vec<Arc<str>>,
    /// How long a stored event with the same id counts as a duplicate
    /// (`idempotency.ttl`); past it, and once that event's details are
    /// gone, the id is accepted again as new.
    pub ttl_ms: u64,
    /// This event is a task's final result (a muapi callback with a
    /// terminal status on a route that reconciles): an expected task with
    /// the route and `source_id` is settled by it, in the same commit.
    pub settles: bool,
}

/// What [`Store::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Newly written with its deliveries, which this instance now claims.
    Accepted,
    /// The event id was already stored (within its idempotency window, or
    /// still held); nothing written.
    Duplicate,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its due time, or in flight.
    Pending,
    /// A subscriber answered 2xx.
    Delivered,
    /// Given up; kept for inspection and replay.
    Dead,
    /// A dead letter an operator deleted (or that outlived
    /// `store.dead_letter_retention`); never delivered.
    Deleted,
}

impl DeliveryState {
    /// Whether the delivery still holds its event open (its body is kept).
    pub fn is_open(self) -> bool {
        matches!(self, DeliveryState::Pending | DeliveryState::Dead)
    }
}

/// One attempt's outcome, as kept in the store and shown by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Start of the attempt, unix milliseconds.
    pub at_ms: u64,
    /// HTTP status, when the subscriber answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Transport error or timeout, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
}

/// How many attempt records a delivery keeps (the newest).
pub const ATTEMPT_HISTORY: usize = 20;

/// A delivery claimed by this instance: what a lane needs to attempt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The event to deliver.
    pub event: EventId,
    /// Attempts made so far in this schedule.
    pub attempts: u32,
    /// When the next attempt is due, unix ms.
    pub due_ms: u64,
    /// Start of the schedule (`max_elapsed` counts from here).
    pub schedule_start_ms: u64,
    /// Receipt of the event (for the latency histogram).
    pub received_ms: u64,
    /// Callback or reconciled (sent as `hookrelay-origin`).
    pub origin: Origin,
}

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (unix ms).
    Retry {
        /// Next due time.
        due_ms: u64,
        /// Keep the claim (the lane keeps the delivery in memory because it
        /// is due soon); otherwise the claim is released and any instance
        /// may claim it when it is due.
        keep_claim: bool,
    },
    /// Done: the subscriber took it.
    Delivered,
    /// Given up, with the reason.
    Dead {
        /// e.g. "subscriber answered 410 Gone".
        reason: String,
    },
}

/// The result of one attempt, to persist before the lane moves on.
#[derive(Debug, Clone)]
pub struct AttemptUpdate {
    /// The event delivered.
    pub event: EventId,
    /// Route name.
    pub route: Arc<str>,
    /// Subscriber name.
    pub subscriber: Arc<str>,
    /// The attempt (absent when none was made, e.g. the body was gone).
    pub attempt: Option<AttemptRecord>,
    /// Its consequence.
    pub next: Next,
}

/// Whether an attempt's result was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written; the delivery moved on.
    Applied,
    /// Not ours any more (the claim was lost, or the delivery is no longer
    /// pending): nothing was written, and the caller must forget it.
    Stale,
}

/// A delivery as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryView {
    /// `{event_id}.{subscriber}`.
    pub id: String,
    /// The event delivered.
    pub event_id: EventId,
    /// Route name.
    pub route: String,
    /// Subscriber name.
    pub subscriber: String,
    /// Current state.
    pub state: DeliveryState,
    /// Attempts made so far in this schedule.
    pub attempts: u32,
    /// When the next attempt is due (pending only), unix ms.
    pub due_ms: u64,
    /// When the event was received.
    pub received_ms: u64,
    /// When the schedule started (receipt, or the last replay).
    pub schedule_start_ms: u64,
    /// Last change, unix ms.
    pub updated_ms: u64,
    /// Why it is dead (or was, before it was deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<String>,
    /// The newest attempts, oldest first.
    pub history: Vec<AttemptRecord>,
}

impl DeliveryView {
    /// The last attempt, if any.
    pub fn last(&self) -> Option<&AttemptRecord> {
        self.history.last()
    }
}

/// An event as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// Event id.
    pub event_id: EventId,
    /// Route name (unknown once details are pruned and the route is gone).
    pub route: String,
    /// Receipt time, unix ms.
    pub received_ms: u64,
    /// The sender's own id (muapi task id), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The callback's status, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Callback or reconciled.
    pub origin: Origin,
    /// Kept headers.
    pub headers: Vec<(String, String)>,
    /// Body size in bytes.
    pub body_len: u64,
    /// Deliveries not yet delivered or deleted (pending or dead).
    pub open: u32,
    /// True when the body, headers and attempt history were pruned after
    /// `store.retention`: only the key (for duplicates) is left.
    pub pruned: bool,
    /// Each delivery with its attempts (empty once pruned).
    pub deliveries: Vec<DeliveryView>,
}

/// One row of an event listing.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    /// Event id.
    pub event_id: EventId,
    /// Route name.
    pub route: String,
    /// Receipt time, unix ms.
    pub received_ms: u64,
    /// The sender's own id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The callback's status, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Callback or reconciled.
    pub origin: Origin,
    /// Body size in bytes.
    pub body_len: u64,
    /// Each delivery's subscriber, state and attempts so far.
    pub deliveries: Vec<DeliveryBrief>,
}

/// A delivery in an event listing.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryBrief {
    /// Subscriber name.
    pub subscriber: String,
    /// Current state.
    pub state: DeliveryState,
    /// Attempts so far.
    pub attempts: u32,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only this route.
    pub route: Option<String>,
    /// Only events with this source id (a muapi task id).
    pub source_id: Option<String>,
    /// Only events older than this cursor (from a previous page).
    pub before: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// A page of events, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    /// The events.
    pub events: Vec<EventSummary>,
    /// Pass as `before` for the next (older) page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
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

/// Which dead letters to move back to pending, or to delete.
#[derive(Debug, Clone)]
pub enum DeadSelector {
    /// These deliveries.
    Ids(Vec<DeliveryId>),
    /// The dead letters of one subscriber (a bounded batch per call).
    Subscriber {
        /// Route name.
        route: String,
        /// Subscriber name.
        subscriber: String,
    },
}

/// What the pruner may remove in one bounded run.
#[derive(Debug, Clone, Copy)]
pub struct PrunePolicy {
    /// Now, unix ms.
    pub now_ms: u64,
    /// Events whose deliveries all ended this long ago lose their body,
    /// headers and attempt history (`store.retention`).
    pub retention_ms: u64,
    /// Keys older than this stop answering `duplicate` and are removed once
    /// their event's details are gone (`idempotency.ttl`).
    pub ttl_ms: u64,
    /// Dead letters older than this are deleted (`store.dead_letter_retention`).
    pub dead_letter_retention_ms: u64,
    /// At most this many items per kind and run (keeps transactions short).
    pub max_items: usize,
}

/// What one prune run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Events whose details were dropped.
    pub details: usize,
    /// Keys removed.
    pub keys: usize,
    /// Dead letters deleted for age.
    pub dead_letters: usize,
    /// True when a limit was reached: run again.
    pub more: bool,
}

/// Store-derived counts of one (route, subscriber), for gauges and the
/// admin API. Every subscriber the store has deliveries for appears, also
/// one that the running config no longer has (its pending deliveries are
/// orphans).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaneCounts {
    /// Route name.
    pub route: String,
    /// Subscriber name.
    pub subscriber: String,
    /// Pending deliveries (waiting or in flight).
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
}

/// How much room the store takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSize {
    /// Bytes the store occupies (the file, or the tables on the server).
    pub file_bytes: u64,
    /// Bytes holding live data (the rest is free space the store reuses).
    pub used_bytes: u64,
    /// Free bytes and size of the filesystem holding the store (embedded
    /// store only: the volume that would fill up).
    pub disk: Option<(u64, u64)>,
}

/// The statuses that end a task (muapi's `completed`, `failed`,
/// `cancelled`): an event with one of them settles its expected task.
pub const FINAL_STATUSES: &[&str] = &["completed", "failed", "cancelled"];

/// Where an expected task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedState {
    /// Submitted; its callback has not come and it is not polled yet.
    Waiting,
    /// Its callback is late: the result API is being polled.
    Polling,
    /// Its final result arrived (by callback or by poll).
    Done,
    /// `give_up_after` passed without a final result.
    Expired,
}

impl ExpectedState {
    /// Every state, for gauges.
    pub const ALL: [ExpectedState; 4] = [
        ExpectedState::Waiting,
        ExpectedState::Polling,
        ExpectedState::Done,
        ExpectedState::Expired,
    ];

    /// The state's name (metric label, API).
    pub fn name(self) -> &'static str {
        match self {
            ExpectedState::Waiting => "waiting",
            ExpectedState::Polling => "polling",
            ExpectedState::Done => "done",
            ExpectedState::Expired => "expired",
        }
    }

    /// Parses a name from [`ExpectedState::name`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }

    /// Whether the task still needs its result.
    pub fn is_open(self) -> bool {
        matches!(self, ExpectedState::Waiting | ExpectedState::Polling)
    }
}

/// A task hookrelay expects a result for (muapi reconciliation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedTask {
    /// Route name.
    pub route: String,
    /// The provider's id for the task (muapi `request_id`).
    pub id: String,
    /// The endpoint it was submitted to (empty when registered by the API).
    pub endpoint: String,
    /// When it was submitted (or registered), unix ms.
    pub submitted_ms: u64,
    /// Where it stands.
    pub state: ExpectedState,
    /// How its result came (when done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_by: Option<Origin>,
    /// Its final status (when done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Polls made so far.
    pub polls: u32,
    /// When the next poll is due (open tasks), unix ms.
    pub next_poll_ms: u64,
    /// Last change, unix ms.
    pub updated_ms: u64,
    /// What the last poll saw (`processing`, `HTTP 429`, an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
}

/// A task to expect.
#[derive(Debug, Clone)]
pub struct NewExpected {
    /// Route name.
    pub route: String,
    /// The provider's id for the task.
    pub id: String,
    /// The endpoint it was submitted to.
    pub endpoint: String,
    /// When it was submitted, unix ms.
    pub submitted_ms: u64,
    /// When to poll first if no callback came (`reconcile_after` later).
    pub first_poll_ms: u64,
}

/// Which expected tasks to list.
#[derive(Debug, Clone, Default)]
pub struct ExpectedQuery {
    /// Only this route.
    pub route: Option<String>,
    /// Only this state.
    pub state: Option<ExpectedState>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// What follows a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollNext {
    /// Poll again at this time (unix ms).
    Again {
        /// Next poll.
        at_ms: u64,
    },
    /// The final result was fed to the intake.
    Done {
        /// Its status.
        status: String,
        /// Reconciled (or callback, when the callback beat the poll).
        via: Origin,
    },
    /// Given up (`give_up_after`).
    Expired,
}

/// The result of one poll, to record.
#[derive(Debug, Clone)]
pub struct PollUpdate {
    /// Route name.
    pub route: String,
    /// The task.
    pub id: String,
    /// What the poll saw.
    pub result: String,
    /// What follows.
    pub next: PollNext,
    /// Now, unix ms.
    pub now_ms: u64,
}

/// Durable storage of events and deliveries. See the module docs for the
/// guarantees.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes an event and its deliveries (claimed by this instance), or
    /// reports it as a duplicate. Returns once durable.
    async fn append(&self, event: NewEvent) -> Result<AppendOutcome, StoreError>;

    /// Claims up to `limit` pending deliveries of one subscriber that are due
    /// by `until_ms` and claimed by no live instance, earliest first.
    async fn claim_due(
        &self,
        route: &str,
        subscriber: &str,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Gives up claims this instance holds without attempting them (a full
    /// lane, a stopped lane): any instance may claim them again.
    async fn release(
        &self,
        route: &str,
        subscriber: &str,
        events: &[EventId],
    ) -> Result<(), StoreError>;

    /// Keeps this instance's claims alive (a lease renewal where claims
    /// expire). Called periodically.
    async fn renew_claims(&self) -> Result<(), StoreError>;

    /// Records an attempt's result and the delivery's next state, if this
    /// instance still holds the claim and the delivery is pending.
    async fn record_attempt(&self, update: AttemptUpdate) -> Result<Recorded, StoreError>;

    /// An event's body (`None` once pruned or unknown).
    async fn body(&self, event: EventId) -> Result<Option<Bytes>, StoreError>;

    /// An event and its deliveries; a pruned event says so.
    async fn event(&self, event: EventId) -> Result<Option<EventView>, StoreError>;

    /// Events, newest first, a page at a time.
    async fn events(&self, query: EventQuery) -> Result<EventPage, StoreError>;

    /// Dead letters, newest first.
    async fn dead_letters(&self, query: DeadLetterQuery) -> Result<Vec<DeliveryView>, StoreError>;

    /// Moves dead letters back to pending with a fresh schedule due now (at
    /// most `limit` per call); returns those requeued. Any instance with the
    /// subscriber configured claims them.
    async fn replay(
        &self,
        selector: DeadSelector,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, StoreError>;

    /// Deletes dead letters (state `deleted`; at most `limit` per call);
    /// returns those deleted.
    async fn delete_dead(
        &self,
        selector: DeadSelector,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, StoreError>;

    /// Turns pending deliveries of one subscriber into dead letters with
    /// `reason` (at most `limit` per call; claimed ones are skipped): how an
    /// operator resolves orphans of a subscriber that is gone for good.
    async fn kill_pending(
        &self,
        route: &str,
        subscriber: &str,
        reason: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError>;

    /// Pending and dead counts per (route, subscriber).
    async fn counts(&self) -> Result<Vec<LaneCounts>, StoreError>;

    /// One bounded prune run.
    async fn prune(&self, policy: PrunePolicy) -> Result<PruneReport, StoreError>;

    /// How much room the store takes.
    async fn size(&self) -> Result<StoreSize, StoreError>;

    /// Records a task whose result is expected (idempotent: an existing one
    /// is returned unchanged, with `false`). A task whose final callback was
    /// already stored is done at once.
    async fn expect(&self, task: NewExpected) -> Result<(ExpectedTask, bool), StoreError>;

    /// Expected tasks, newest first.
    async fn expected(&self, query: ExpectedQuery) -> Result<Vec<ExpectedTask>, StoreError>;

    /// Claims up to `limit` open tasks whose next poll is due (one poller
    /// per task across instances).
    async fn claim_polls(&self, now_ms: u64, limit: usize)
        -> Result<Vec<ExpectedTask>, StoreError>;

    /// Records a poll's result and releases the task's claim.
    async fn record_poll(&self, update: PollUpdate) -> Result<Recorded, StoreError>;

    /// Expected tasks per (route, state), for gauges.
    async fn expected_counts(&self) -> Result<Vec<(String, ExpectedState, u64)>, StoreError>;

    /// Whether the store can take writes now (readiness): false while a
    /// database server is unreachable.
    fn available(&self) -> bool {
        true
    }

    /// Signalled when another process made work claimable (a replay, a
    /// release): lanes then claim at once instead of at their next refill.
    fn wakeups(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// Releases every claim and closes the store; in-flight work is done.
    async fn close(&self);
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_and_delivery_ids_round_trip() {
        let id = EventId(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        let text = id.to_string();
        assert_eq!(text.len(), 22);
        assert!(!text.contains('.'));
        assert_eq!(text.parse::<EventId>(), Ok(id));
        let delivery: DeliveryId = format!("{text}.app").parse().unwrap();
        assert_eq!(delivery.event, id);
        assert_eq!(delivery.subscriber, "app");
        assert_eq!(delivery.to_string(), format!("{text}.app"));
        assert!("short.app".parse::<DeliveryId>().is_err());
        assert!(format!("{text}.").parse::<DeliveryId>().is_err());
    }
}
