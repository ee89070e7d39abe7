//! One lane per subscriber: its queue of deliveries ordered by due time, its
//! in-flight limit and its circuit breaker.
//!
//! The lane task owns the queue and the breaker, so neither needs a lock.
//! Each attempt runs in its own task holding a semaphore permit; when it
//! ends (result persisted), it reports back and the lane reschedules or
//! forgets the delivery. A subscriber that hangs only fills its own
//! permits: other lanes never wait for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::breaker::CircuitBreaker;
use super::client::{AttemptResult, DeliveryClient};
use crate::config::Subscriber;
use crate::metrics::{Metrics, SubscriberMetrics};
use crate::store::{now_ms, AttemptRecord, AttemptUpdate, Next, Store};

/// Body bytes a lane keeps in memory for its waiting deliveries; beyond
/// that, a delivery waits with its body in the store only (read back when
/// due), so a subscriber that is down for hours costs bounded memory.
const BODY_BYTES_IN_MEMORY: usize = 4 * 1024 * 1024;

/// A delivery waiting in a lane.
#[derive(Debug, Clone)]
pub struct Job {
    /// `{event_id}.{subscriber}`.
    pub delivery_id: String,
    /// The event.
    pub event_id: String,
    /// The event's sequence number in the store.
    pub seq: u64,
    /// Attempts made so far in this schedule.
    pub attempts: u32,
    /// Next attempt time, unix ms.
    pub due_ms: u64,
    /// Start of the schedule (`max_elapsed` counts from here).
    pub schedule_start_ms: u64,
    /// Receipt time (for the latency histogram).
    pub received_ms: u64,
    /// The body when known; loaded from the store otherwise (after a restart).
    pub body: Option<Bytes>,
}

/// Counters of one lane, read by the admin API.
#[derive(Debug, Default)]
pub struct LaneStats {
    /// Attempts running now.
    pub in_flight: AtomicU64,
    /// 0 closed, 1 open, 2 half-open.
    pub circuit: AtomicU8,
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
}

/// Messages to a lane.
pub enum LaneMsg {
    /// A delivery to schedule.
    Job(Job),
    /// New settings after a reload, with the client for its (maybe new) CA file.
    Update(Arc<Subscriber>, Box<DeliveryClient>),
}

/// What an attempt task reports back.
struct AttemptDone {
    /// For the breaker: false on transport errors, timeouts, 5xx, 429;
    /// `None` when no request was made (the body could not be read).
    healthy: Option<bool>,
    /// The delivery again, when it must be retried.
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
}

/// The lane task's state.
pub struct Lane {
    subscriber: Arc<Subscriber>,
    metrics: Arc<SubscriberMetrics>,
    client: DeliveryClient,
    deps: Arc<LaneDeps>,
    stats: Arc<LaneStats>,
    rx: mpsc::UnboundedReceiver<LaneMsg>,
    stop: CancellationToken,
}

impl Lane {
    /// A lane for `subscriber`, fed through `rx`.
    pub fn new(
        subscriber: Arc<Subscriber>,
        metrics: Arc<SubscriberMetrics>,
        client: DeliveryClient,
        deps: Arc<LaneDeps>,
        stats: Arc<LaneStats>,
        rx: mpsc::UnboundedReceiver<LaneMsg>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            subscriber,
            metrics,
            client,
            deps,
            stats,
            rx,
            stop,
        }
    }

    /// Runs until stopped: starts due attempts within the limits, waits for
    /// new deliveries, finished attempts or the next due time.
    pub async fn run(mut self) {
        let mut queue: BTreeMap<(u64, u64), Job> = BTreeMap::new();
        let mut seq = 0u64;
        // Body bytes held by the jobs in `queue`.
        let mut held = 0usize;
        let mut breaker = CircuitBreaker::new(self.subscriber.breaker);
        let mut permits = Arc::new(Semaphore::new(self.subscriber.max_in_flight as usize));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<AttemptDone>();
        let circuit_gauge = self.metrics.circuit_open.clone();
        loop {
            let now = Instant::now();
            let wall = now_ms();
            while let Some(entry) = queue.first_entry() {
                if entry.key().0 > wall || !breaker.allows(now) {
                    break;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    break;
                };
                let job = entry.remove();
                held -= job.body.as_ref().map_or(0, |b| b.len());
                breaker.on_start();
                self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
                let task = attempt(
                    self.deps.clone(),
                    self.metrics.clone(),
                    self.subscriber.clone(),
                    self.client.clone(),
                    job,
                );
                let done_tx = done_tx.clone();
                let stats = self.stats.clone();
                self.deps.tracker.spawn(async move {
                    let done = task.await;
                    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                    let _ = done_tx.send(done);
                });
            }
            let circuit = match (breaker.is_open(), breaker.reopens_at()) {
                (false, _) => 0,
                (true, Some(_)) => 1,
                (true, None) => 2,
            };
            self.stats.circuit.store(circuit, Ordering::Relaxed);
            circuit_gauge.set(i64::from(circuit != 0));

            // Sleep until something can start: the head of the queue is due
            // and, with an open breaker, its cooldown is over. Never while
            // all permits are taken, a probe is out or nothing is queued (a
            // finishing attempt or a new delivery wakes us).
            let head_due = queue
                .first_key_value()
                .map(|((due, _), _)| now + Duration::from_millis(due.saturating_sub(wall)));
            let wake = if permits.available_permits() == 0 {
                None
            } else if breaker.is_open() {
                match (breaker.reopens_at(), head_due) {
                    (Some(until), Some(due)) => Some(until.max(due)),
                    _ => None,
                }
            } else {
                head_due
            };
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                msg = self.rx.recv() => match msg {
                    Some(LaneMsg::Job(mut job)) => {
                        keep_body_within(&mut job, &mut held);
                        seq += 1;
                        queue.insert((job.due_ms, seq), job);
                    }
                    Some(LaneMsg::Update(subscriber, client)) => {
                        if subscriber.max_in_flight != self.subscriber.max_in_flight {
                            permits = Arc::new(Semaphore::new(subscriber.max_in_flight as usize));
                        }
                        // A reload keeps the breaker's state unless its settings changed.
                        if subscriber.breaker != self.subscriber.breaker {
                            breaker = CircuitBreaker::new(subscriber.breaker);
                        }
                        self.subscriber = subscriber;
                        self.client = *client;
                    }
                    None => break,
                },
                Some(done) = done_rx.recv() => {
                    if let Some(healthy) = done.healthy {
                        breaker.record(healthy, Instant::now());
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

/// One attempt: send, decide what follows, persist it, report back.
async fn attempt(
    deps: Arc<LaneDeps>,
    m: Arc<SubscriberMetrics>,
    subscriber: Arc<Subscriber>,
    client: DeliveryClient,
    mut job: Job,
) -> AttemptDone {
    let body = match job.body.take() {
        Some(body) => body,
        None => match deps.store.body(&job.event_id).await {
            Ok(Some(body)) => body,
            Ok(None) => {
                tracing::error!(delivery = %job.delivery_id, "event body missing from the store");
                let reason = "event body missing from the store";
                if let Ok(true) = deps.store.kill(&job.delivery_id, reason, now_ms()).await {
                    m.dead.inc();
                    m.dead_letters.inc();
                    m.pending.dec();
                }
                return AttemptDone {
                    healthy: None,
                    retry: None,
                };
            }
            Err(e) => {
                tracing::warn!(delivery = %job.delivery_id, error = %e, "cannot read body; retrying in 1s");
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
    let span = tracing::info_span!(
        "delivery_attempt",
        route = %subscriber.route,
        subscriber = %subscriber.name,
        event_id = %job.event_id,
        attempt = number,
    );
    let result = client
        .send(&subscriber, &job.event_id, number, body.clone())
        .instrument(span.clone())
        .await;
    m.attempts(result.class).inc();
    m.attempt_duration.observe(result.elapsed.as_secs_f64());
    let next = decide(&subscriber, &job, number, &result, now_ms());
    span.in_scope(|| match (&result.status, &result.error) {
        (Some(status), _) => tracing::info!(
            status = status.as_u16(),
            duration_ms = result.elapsed.as_millis() as u64,
            next = ?next,
            "attempt finished"
        ),
        (None, error) => tracing::info!(
            error = error.as_deref().unwrap_or(""),
            duration_ms = result.elapsed.as_millis() as u64,
            next = ?next,
            "attempt failed"
        ),
    });
    let update = AttemptUpdate {
        delivery_id: job.delivery_id.clone(),
        seq: job.seq,
        subscriber: subscriber.name.clone(),
        attempt: AttemptRecord {
            attempt: number,
            at_ms,
            status: result.status.map(|s| s.as_u16()),
            error: result.error.clone(),
            duration_ms: result.elapsed.as_millis() as u64,
        },
        next: next.clone(),
    };
    let healthy = Some(match result.status {
        Some(s) => !(s.is_server_error() || s.as_u16() == 429),
        None => false,
    });
    match deps.store.record_attempt(update).await {
        Ok(true) => {}
        Ok(false) => {
            // No longer pending (its subscriber was removed meanwhile and the
            // delivery made a dead letter): the result is not ours to count.
            return AttemptDone {
                healthy,
                retry: None,
            };
        }
        Err(e) => {
            // The in-memory schedule goes on; after a restart the store's
            // older state is resumed, so at worst an attempt is repeated.
            tracing::error!(delivery = %job.delivery_id, error = %e, "cannot persist attempt result");
        }
    }
    match next {
        Next::Retry { due_ms } => {
            job.attempts = number;
            job.due_ms = due_ms;
            job.body = Some(body);
            AttemptDone {
                healthy,
                retry: Some(job),
            }
        }
        Next::Delivered => {
            m.latency
                .observe(now_ms().saturating_sub(job.received_ms) as f64 / 1000.0);
            m.delivered.inc();
            m.pending.dec();
            AttemptDone {
                healthy,
                retry: None,
            }
        }
        Next::Dead { .. } => {
            m.dead.inc();
            m.dead_letters.inc();
            m.pending.dec();
            AttemptDone {
                healthy,
                retry: None,
            }
        }
    }
}

/// What follows an attempt: DESIGN.md's retry rules.
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
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let due_ms = now_ms.saturating_add(millis(delay));
    let budget = millis(policy.config.max_elapsed);
    if due_ms.saturating_sub(job.schedule_start_ms) > budget {
        Next::Dead {
            reason: format!(
                "gave up after {number} attempts (max_elapsed {}); last: {last}",
                crate::config::duration::format(policy.config.max_elapsed)
            ),
        }
    } else {
        Next::Retry { due_ms }
    }
}
