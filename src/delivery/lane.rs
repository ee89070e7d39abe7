//! One lane per subscriber: the deliveries it holds, ordered by due time,
//! its in-flight limit and its circuit breaker.
//!
//! The store is the authority on what is pending; a lane holds a bounded
//! window of it in memory. It gets deliveries two ways: the intake hands it
//! the deliveries of an event this process just accepted (already claimed,
//! with the body), and the lane claims due ones from the store a page at a
//! time ([`crate::store::Store::claim_due`]): at start (that is how a
//! restart resumes), every [`REFILL_EVERY`], and when woken (a replay, a
//! delivery released by another replica). A retry due within
//! [`HOLD_WINDOW`] stays in memory (its claim kept); a later one is released
//! and claimed again when due, so a subscriber that is down for hours costs
//! bounded memory.
//!
//! The lane task owns its queue and breaker, so neither needs a lock. Each
//! attempt runs in its own task; when it ends (result recorded), it reports
//! back and the lane reschedules or forgets the delivery. A subscriber that
//! hangs only fills its own in-flight slots: other lanes never wait for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::breaker::CircuitBreaker;
use super::client::{AttemptResult, DeliveryClient};
use crate::config::Subscriber;
use crate::metrics::{Metrics, SubscriberMetrics};
use crate::store::{
    now_ms, AttemptRecord, AttemptUpdate, Claimed, EventId, Next, Origin, Recorded, Store,
};

/// Body bytes a lane keeps in memory for its waiting deliveries; beyond
/// that, a delivery waits with its body in the store only (read back when
/// due).
const BODY_BYTES_IN_MEMORY: usize = 4 * 1024 * 1024;

/// Deliveries a lane claims from the store at most (waiting plus in
/// flight): what a restart or a backlog loads, a page at a time.
pub const LANE_CAPACITY: usize = 1024;

/// Deliveries handed over by this process's intake that a lane keeps
/// (beyond them a new delivery waits in the store, released). Higher than
/// [`LANE_CAPACITY`]: a burst of fresh callbacks keeps its bodies in memory
/// (within the body budget) instead of being released and read back, while
/// a held delivery without its body costs about a hundred bytes.
pub const HANDOVER_CAPACITY: usize = 16 * 1024;

/// A retry due within this window keeps its claim and stays in memory; a
/// later one is released to the store. Refills claim this far ahead, so a
/// delivery due soon is always held in time to start on the dot.
pub const HOLD_WINDOW: Duration = Duration::from_secs(5);

/// How often a lane with room claims due deliveries from the store.
pub const REFILL_EVERY: Duration = Duration::from_secs(1);

/// A delivery held by a lane.
#[derive(Debug, Clone)]
pub struct Job {
    /// The event.
    pub event: EventId,
    /// Attempts made so far in this schedule.
    pub attempts: u32,
    /// Next attempt time, unix ms.
    pub due_ms: u64,
    /// Start of the schedule (`max_elapsed` counts from here).
    pub schedule_start_ms: u64,
    /// Receipt time (for the latency histogram).
    pub received_ms: u64,
    /// Callback or reconciled (sent as `hookrelay-origin`).
    pub origin: Origin,
    /// The body when known; read from the store otherwise.
    pub body: Option<Bytes>,
}

impl From<Claimed> for Job {
    fn from(c: Claimed) -> Self {
        Job {
            event: c.event,
            attempts: c.attempts,
            due_ms: c.due_ms,
            schedule_start_ms: c.schedule_start_ms,
            received_ms: c.received_ms,
            origin: c.origin,
            body: None,
        }
    }
}

/// Deliveries and failures of the last minutes, in 5-second buckets.
#[derive(Debug, Default)]
struct Recent {
    /// (bucket start in unix seconds / 5, delivered, failed attempts).
    buckets: std::collections::VecDeque<(u64, u64, u64)>,
}

/// How far back [`LaneStats::recent`] looks.
pub const RECENT_WINDOW: Duration = Duration::from_secs(300);

impl Recent {
    fn add(&mut self, now_ms: u64, delivered: bool, failed: bool) {
        let bucket = now_ms / 5000;
        match self.buckets.back_mut() {
            Some(last) if last.0 == bucket => {
                last.1 += u64::from(delivered);
                last.2 += u64::from(failed);
            }
            _ => self
                .buckets
                .push_back((bucket, u64::from(delivered), u64::from(failed))),
        }
        let oldest = bucket.saturating_sub(RECENT_WINDOW.as_secs() / 5);
        while self.buckets.front().is_some_and(|b| b.0 <= oldest) {
            self.buckets.pop_front();
        }
    }

    fn totals(&self, now_ms: u64) -> (u64, u64) {
        let oldest = (now_ms / 5000).saturating_sub(RECENT_WINDOW.as_secs() / 5);
        self.buckets
            .iter()
            .filter(|b| b.0 > oldest)
            .fold((0, 0), |(d, f), b| (d + b.1, f + b.2))
    }
}

/// What an operator wants to know about a lane's recent work.
#[derive(Debug, Default)]
struct Health {
    recent: Recent,
    last_error: Option<(u64, String)>,
    last_success_ms: Option<u64>,
}

/// Counters of one lane, read by the admin API (this process's view).
#[derive(Debug, Default)]
pub struct LaneStats {
    /// Attempts running now.
    pub in_flight: AtomicU64,
    /// Deliveries held and waiting.
    pub queued: AtomicU64,
    /// 0 closed, 1 open, 2 half-open.
    pub circuit: AtomicU8,
    health: Mutex<Health>,
}

/// A lane's recent activity for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct RecentActivity {
    /// Deliveries that got a 2xx in the last 5 minutes (this process).
    pub delivered_5m: u64,
    /// Attempts that failed in the last 5 minutes (this process).
    pub failed_5m: u64,
    /// The last failure's time (unix ms) and what it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last failure happened, unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<u64>,
    /// When the last 2xx came, unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
}

impl LaneStats {
    /// The breaker's state as a word.
    pub fn circuit_name(&self) -> &'static str {
        match self.circuit.load(Ordering::Relaxed) {
            1 => "open",
            2 => "half_open",
            _ => "closed",
        }
    }

    /// Deliveries and failures of the last five minutes, and the last of each.
    pub fn activity(&self) -> RecentActivity {
        let health = self.health.lock().expect("lane health lock");
        let (delivered_5m, failed_5m) = health.recent.totals(now_ms());
        RecentActivity {
            delivered_5m,
            failed_5m,
            last_error: health.last_error.as_ref().map(|e| e.1.clone()),
            last_error_ms: health.last_error.as_ref().map(|e| e.0),
            last_success_ms: health.last_success_ms,
        }
    }

    fn record(&self, at_ms: u64, result: &AttemptResult) {
        let mut health = self.health.lock().expect("lane health lock");
        let ok = result.status.is_some_and(|s| s.is_success());
        health.recent.add(at_ms, ok, !ok);
        if ok {
            health.last_success_ms = Some(at_ms);
        } else {
            let what = match (result.status, &result.error) {
                (Some(s), _) => format!("HTTP {}", s.as_u16()),
                (None, Some(e)) => e.clone(),
                (None, None) => "unknown error".into(),
            };
            health.last_error = Some((at_ms, what));
        }
    }
}

/// Messages to a lane.
pub enum LaneMsg {
    /// A delivery this process just accepted (already claimed).
    Job(Job),
    /// Deliveries claimed by a refill.
    Claimed(Vec<Claimed>),
    /// Claim due deliveries from the store now (a replay, a release).
    Wake,
    /// New settings after a reload, with the client for its (maybe new) CA file.
    Update(Arc<Subscriber>, Box<DeliveryClient>),
}

/// What an attempt task reports back.
struct AttemptDone {
    /// For the breaker: `Some(false)` on transport errors, timeouts, 5xx,
    /// 429; `None` when no request was made (the body could not be read).
    healthy: Option<bool>,
    /// The delivery again, when it stays with this lane.
    retry: Option<Job>,
}

/// What a lane needs from the gateway.
pub struct LaneDeps {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Tracks attempt tasks so shutdown can let them finish.
    pub tracker: TaskTracker,
    /// Cancelled when attempts must give up waiting (the end of shutdown).
    pub abandon: CancellationToken,
}

/// The lane task's state.
pub struct Lane {
    subscriber: Arc<Subscriber>,
    metrics: Arc<SubscriberMetrics>,
    client: DeliveryClient,
    deps: Arc<LaneDeps>,
    stats: Arc<LaneStats>,
    rx: mpsc::UnboundedReceiver<LaneMsg>,
    tx: mpsc::UnboundedSender<LaneMsg>,
    stop: CancellationToken,
}

impl Lane {
    /// A lane for `subscriber`, fed through `rx` (`tx` is its own sender,
    /// for refill results).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        subscriber: Arc<Subscriber>,
        metrics: Arc<SubscriberMetrics>,
        client: DeliveryClient,
        deps: Arc<LaneDeps>,
        stats: Arc<LaneStats>,
        rx: mpsc::UnboundedReceiver<LaneMsg>,
        tx: mpsc::UnboundedSender<LaneMsg>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            subscriber,
            metrics,
            client,
            deps,
            stats,
            rx,
            tx,
            stop,
        }
    }

    /// Runs until stopped: starts due attempts within the limits, claims
    /// more from the store when it has room, and waits for new deliveries,
    /// finished attempts, refills or the next due time. On stop, the claims
    /// of deliveries still waiting are released.
    pub async fn run(mut self) {
        let mut queue: BTreeMap<(u64, u64), Job> = BTreeMap::new();
        let mut seq = 0u64;
        let mut held = 0usize;
        let mut in_flight = 0usize;
        let mut breaker = CircuitBreaker::new(self.subscriber.breaker);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<AttemptDone>();
        let circuit_gauge = self.metrics.circuit_open.clone();
        let mut refilling = false;
        let mut next_refill = Instant::now();
        loop {
            let now = Instant::now();
            let wall = now_ms();
            while let Some(entry) = queue.first_entry() {
                if entry.key().0 > wall
                    || in_flight >= self.subscriber.max_in_flight as usize
                    || !breaker.allows(now)
                {
                    break;
                }
                let job = entry.remove();
                held -= job.body.as_ref().map_or(0, |b| b.len());
                breaker.on_start();
                in_flight += 1;
                self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
                let task = attempt(
                    self.deps.clone(),
                    self.metrics.clone(),
                    self.stats.clone(),
                    self.subscriber.clone(),
                    self.client.clone(),
                    job,
                );
                let done_tx = done_tx.clone();
                let stats = self.stats.clone();
                self.deps.tracker.spawn(async move {
                    let done = task.await;
                    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    let _ = done_tx.send(done);
                });
            }
            self.stats
                .queued
                .store(queue.len() as u64, Ordering::Relaxed);
            let circuit = match (breaker.is_open(), breaker.reopens_at()) {
                (false, _) => 0,
                (true, Some(_)) => 1,
                (true, None) => 2,
            };
            self.stats.circuit.store(circuit, Ordering::Relaxed);
            circuit_gauge.set(i64::from(circuit != 0));

            // Claim more when there is room and the breaker lets work through.
            let room = LANE_CAPACITY.saturating_sub(queue.len() + in_flight);
            if !refilling && room > 0 && !breaker.is_open() && now >= next_refill {
                refilling = true;
                next_refill = now + REFILL_EVERY;
                self.refill(room);
            }

            // Sleep until something can start: the head of the queue is due
            // (and, with an open breaker, its cooldown is over), or a refill
            // is due. Never while every slot is taken or a probe is out (a
            // finishing attempt wakes us).
            let head_due = queue
                .first_key_value()
                .map(|((due, _), _)| now + Duration::from_millis(due.saturating_sub(wall)));
            let start_at = if in_flight >= self.subscriber.max_in_flight as usize {
                None
            } else if breaker.is_open() {
                match (breaker.reopens_at(), head_due) {
                    (Some(until), Some(due)) => Some(until.max(due)),
                    _ => None,
                }
            } else {
                head_due
            };
            let refill_at = (!refilling && !breaker.is_open() && room > 0).then_some(next_refill);
            let wake = match (start_at, refill_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                msg = self.rx.recv() => match msg {
                    Some(LaneMsg::Job(mut job)) => {
                        if queue.len() + in_flight >= HANDOVER_CAPACITY {
                            // Full: the delivery waits in the store for a later refill.
                            self.release(vec![job.event]);
                        } else {
                            keep_body_within(&mut job, &mut held);
                            seq += 1;
                            queue.insert((job.due_ms, seq), job);
                        }
                    }
                    Some(LaneMsg::Claimed(claimed)) => {
                        refilling = false;
                        if claimed.len() >= room && room > 0 {
                            // More may be waiting: come back as soon as there is room.
                            next_refill = Instant::now();
                        }
                        for c in claimed {
                            seq += 1;
                            queue.insert((c.due_ms, seq), Job::from(c));
                        }
                    }
                    Some(LaneMsg::Wake) => next_refill = Instant::now(),
                    Some(LaneMsg::Update(subscriber, client)) => {
                        // A reload keeps the breaker's state unless its settings
                        // changed; a lower max_in_flight takes effect as running
                        // attempts finish (never more than the new limit start).
                        if subscriber.breaker != self.subscriber.breaker {
                            breaker = CircuitBreaker::new(subscriber.breaker);
                        }
                        self.subscriber = subscriber;
                        self.client = *client;
                    }
                    None => break,
                },
                Some(done) = done_rx.recv() => {
                    in_flight -= 1;
                    match done.healthy {
                        Some(healthy) => breaker.record(healthy, Instant::now()),
                        // No request was made: a probe that could not run
                        // must not leave the breaker waiting for it forever.
                        None => breaker.abandon(),
                    }
                    if let Some(mut job) = done.retry {
                        keep_body_within(&mut job, &mut held);
                        seq += 1;
                        queue.insert((job.due_ms, seq), job);
                    }
                }
                _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            }
        }
        circuit_gauge.set(0);
        self.stats.queued.store(0, Ordering::Relaxed);
        let waiting: Vec<EventId> = queue.into_values().map(|j| j.event).collect();
        if !waiting.is_empty() {
            // Released until it works (the store may be unreachable right
            // now): a claim this process keeps but no lane holds would keep
            // the deliveries from everyone until the process ends.
            let store = self.deps.store.clone();
            let (route, name) = (self.subscriber.route.clone(), self.subscriber.name.clone());
            tokio::spawn(async move {
                let mut wait = Duration::from_millis(250);
                while let Err(e) = store.release(&route, &name, &waiting).await {
                    tracing::debug!(error = %e, "cannot release claims of a stopped lane; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            });
        }
    }

    /// Claims up to `room` due deliveries in a task of its own; the result
    /// comes back as [`LaneMsg::Claimed`].
    fn refill(&self, room: usize) {
        let store = self.deps.store.clone();
        let tx = self.tx.clone();
        let route = self.subscriber.route.clone();
        let name = self.subscriber.name.clone();
        let until = now_ms().saturating_add(HOLD_WINDOW.as_millis() as u64);
        tokio::spawn(async move {
            let claimed = match store.claim_due(&route, &name, until, room).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(route = %route, subscriber = %name, error = %e, "cannot claim due deliveries; will retry");
                    Vec::new()
                }
            };
            let _ = tx.send(LaneMsg::Claimed(claimed));
        });
    }

    /// Gives claims back to the store in the background.
    fn release(&self, events: Vec<EventId>) {
        let store = self.deps.store.clone();
        let route = self.subscriber.route.clone();
        let name = self.subscriber.name.clone();
        tokio::spawn(async move {
            if let Err(e) = store.release(&route, &name, &events).await {
                tracing::debug!(error = %e, "cannot release claims");
            }
        });
    }
}

/// Keeps the job's body in memory if the lane's budget allows, else drops
/// it (the attempt reads it back from the store).
fn keep_body_within(job: &mut Job, held: &mut usize) {
    if let Some(body) = &job.body {
        if *held + body.len() > BODY_BYTES_IN_MEMORY {
            job.body = None;
        } else {
            *held += body.len();
        }
    }
}

/// One attempt: send, decide what follows, record it, report back.
async fn attempt(
    deps: Arc<LaneDeps>,
    m: Arc<SubscriberMetrics>,
    stats: Arc<LaneStats>,
    subscriber: Arc<Subscriber>,
    client: DeliveryClient,
    mut job: Job,
) -> AttemptDone {
    let body = match job.body.take() {
        Some(body) => body,
        None => match deps.store.body(job.event).await {
            Ok(Some(body)) => body,
            Ok(None) => {
                tracing::error!(event_id = %job.event, subscriber = %subscriber.name, "event body missing from the store");
                let update = AttemptUpdate {
                    event: job.event,
                    route: subscriber.route.clone(),
                    subscriber: subscriber.name.clone(),
                    attempt: None,
                    next: Next::Dead {
                        reason: "event body missing from the store".into(),
                    },
                };
                if record(&deps, update).await == Some(Recorded::Applied) {
                    m.dead.inc();
                }
                return AttemptDone {
                    healthy: None,
                    retry: None,
                };
            }
            Err(e) => {
                tracing::warn!(event_id = %job.event, error = %e, "cannot read the body; retrying in 1s");
                job.due_ms = now_ms() + 1000;
                return AttemptDone {
                    healthy: None,
                    retry: Some(job),
                };
            }
        },
    };
    let number = job.attempts + 1;
    let at_ms = now_ms();
    let result = client
        .send(&subscriber, job.event, number, job.origin, body.clone())
        .await;
    m.attempts(result.class).inc();
    m.attempt_duration.observe(result.elapsed.as_secs_f64());
    stats.record(at_ms, &result);
    let now = now_ms();
    let next = decide(&subscriber, &job, number, &result, now);
    // One line per attempt with everything in it (no span per attempt: on
    // the hot path a span costs more than the line). A 2xx is routine and
    // logged at `debug`; every failure at `info`.
    let duration_ms = result.elapsed.as_millis() as u64;
    match (&result.status, &result.error) {
        (Some(status), _) if status.is_success() => tracing::debug!(
            route = %subscriber.route,
            subscriber = %subscriber.name,
            event_id = %job.event,
            attempt = number,
            status = status.as_u16(),
            duration_ms,
            "attempt delivered"
        ),
        (status, error) => tracing::info!(
            route = %subscriber.route,
            subscriber = %subscriber.name,
            event_id = %job.event,
            attempt = number,
            status = status.map(|s| s.as_u16()),
            error = error.as_deref().unwrap_or(""),
            duration_ms,
            next = ?next,
            "attempt failed"
        ),
    }
    let healthy = Some(match result.status {
        Some(s) => !(s.is_server_error() || s.as_u16() == 429),
        None => false,
    });
    let update = AttemptUpdate {
        event: job.event,
        route: subscriber.route.clone(),
        subscriber: subscriber.name.clone(),
        attempt: Some(AttemptRecord {
            attempt: number,
            at_ms,
            status: result.status.map(|s| s.as_u16()),
            error: result.error.clone(),
            duration_ms: result.elapsed.as_millis() as u64,
        }),
        next: next.clone(),
    };
    if record(&deps, update).await != Some(Recorded::Applied) {
        // Not ours any more, or shutdown gave up waiting for the store: the
        // delivery stays pending in the store and is attempted again later
        // (at worst a second delivery, which at-least-once allows).
        return AttemptDone {
            healthy,
            retry: None,
        };
    }
    match next {
        Next::Retry {
            due_ms,
            keep_claim: true,
        } => {
            job.attempts = number;
            job.due_ms = due_ms;
            job.body = Some(body);
            AttemptDone {
                healthy,
                retry: Some(job),
            }
        }
        Next::Retry { .. } => AttemptDone {
            healthy,
            retry: None,
        },
        Next::Delivered => {
            m.latency
                .observe(now_ms().saturating_sub(job.received_ms) as f64 / 1000.0);
            m.delivered.inc();
            AttemptDone {
                healthy,
                retry: None,
            }
        }
        Next::Dead { .. } => {
            m.dead.inc();
            AttemptDone {
                healthy,
                retry: None,
            }
        }
    }
}

/// Records an attempt's result, retrying while the store is unavailable
/// (its result must not be lost to a brief outage) until shutdown gives up.
async fn record(deps: &LaneDeps, update: AttemptUpdate) -> Option<Recorded> {
    let mut wait = Duration::from_millis(250);
    loop {
        match deps.store.record_attempt(update.clone()).await {
            Ok(recorded) => return Some(recorded),
            Err(e) => {
                tracing::warn!(event_id = %update.event, subscriber = %update.subscriber, error = %e, "cannot record an attempt's result; retrying");
                tokio::select! {
                    _ = deps.abandon.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// What follows an attempt: the delivery contract's retry rules.
pub fn decide(
    subscriber: &Subscriber,
    job: &Job,
    number: u32,
    result: &AttemptResult,
    now_ms: u64,
) -> Next {
    let last = match (result.status, &result.error) {
        (Some(status), _) if status.is_success() => return Next::Delivered,
        (Some(status), _) if status.as_u16() == 410 => {
            return Next::Dead {
                reason: "subscriber answered 410 Gone".into(),
            }
        }
        (Some(status), _) => format!("HTTP {}", status.as_u16()),
        (None, Some(error)) => error.clone(),
        (None, None) => "unknown error".into(),
    };
    let policy = &subscriber.retry;
    let delay = policy.delay(number, result.retry_after, rand::random::<f64>());
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    let due_ms = now_ms.saturating_add(delay_ms);
    let budget = u64::try_from(policy.config.max_elapsed.as_millis()).unwrap_or(u64::MAX);
    if due_ms.saturating_sub(job.schedule_start_ms) > budget {
        Next::Dead {
            reason: format!(
                "gave up after {number} attempts (max_elapsed {}); last: {last}",
                crate::config::duration::format(policy.config.max_elapsed)
            ),
        }
    } else {
        Next::Retry {
            due_ms,
            keep_claim: delay <= HOLD_WINDOW,
        }
    }
}
