//! Delivery: from durable deliveries to subscribers' 2xx.
//!
//! The [`Dispatcher`] keeps one [`lane::Lane`] per (route, subscriber) and
//! routes each delivery to its lane. Lanes are independent tasks: a slow or
//! dead subscriber fills only its own in-flight permits and trips only its
//! own circuit breaker.

pub mod breaker;
pub mod client;
pub mod lane;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Runtime, Subscriber};
use crate::metrics::{Metrics, SubscriberMetrics};
use crate::store::{now_ms, DeliveryRecord, Store};
use client::DeliveryClient;
use lane::{Job, Lane, LaneDeps, LaneMsg, LaneStats};

/// A lane's identity: (route name, subscriber name).
type LaneKey = (Arc<str>, Arc<str>);

struct LaneHandle {
    subscriber: Arc<Subscriber>,
    metrics: Arc<SubscriberMetrics>,
    tx: mpsc::UnboundedSender<LaneMsg>,
    stats: Arc<LaneStats>,
    stop: CancellationToken,
}

/// A lane's state for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LaneSnapshot {
    /// Route name.
    pub route: String,
    /// Subscriber name.
    pub subscriber: String,
    /// Attempts running now.
    pub in_flight: u64,
    /// Deliveries not finished.
    pub pending: i64,
    /// Dead letters held.
    pub dead_letters: i64,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
}

/// Routes deliveries to per-subscriber lanes.
pub struct Dispatcher {
    lanes: RwLock<HashMap<LaneKey, LaneHandle>>,
    deps: Arc<LaneDeps>,
    default_client: DeliveryClient,
    ca_clients: RwLock<HashMap<PathBuf, DeliveryClient>>,
    shutdown: CancellationToken,
}

impl Dispatcher {
    /// A dispatcher with no lanes yet; call [`Dispatcher::sync`].
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            lanes: RwLock::new(HashMap::new()),
            deps: Arc::new(LaneDeps {
                store,
                metrics,
                tracker,
            }),
            default_client: DeliveryClient::new(&[]),
            ca_clients: RwLock::new(HashMap::new()),
            shutdown,
        }
    }

    fn client_for(&self, subscriber: &Subscriber) -> DeliveryClient {
        let Some(path) = &subscriber.ca_file else {
            return self.default_client.clone();
        };
        if let Some(client) = self.ca_clients.read().expect("client map").get(path) {
            return client.clone();
        }
        match DeliveryClient::for_ca_file(path) {
            Ok(client) => {
                self.ca_clients
                    .write()
                    .expect("client map")
                    .insert(path.clone(), client.clone());
                client
            }
            Err(e) => {
                // Validated at load; if the file vanished since, fall back to webpki roots.
                tracing::error!(error = %e, "subscriber CA file unusable; using default roots");
                self.default_client.clone()
            }
        }
    }

    /// Makes the lanes match `runtime`: starts lanes for new subscribers,
    /// updates changed ones, stops removed ones. Returns the (route,
    /// subscriber) pairs removed.
    pub fn sync(&self, runtime: &Runtime) -> Vec<(String, String)> {
        // CA files are read again: a reload may point at new contents.
        self.ca_clients.write().expect("client map").clear();
        let mut lanes = self.lanes.write().expect("lane map");
        let mut wanted = HashMap::new();
        for subscriber in runtime.subscribers() {
            wanted.insert(
                (subscriber.route.clone(), subscriber.name.clone()),
                subscriber.clone(),
            );
        }
        let mut removed = Vec::new();
        lanes.retain(|key, handle| {
            if wanted.contains_key(key) {
                true
            } else {
                handle.stop.cancel();
                removed.push((key.0.to_string(), key.1.to_string()));
                false
            }
        });
        for (key, subscriber) in wanted {
            if let Some(handle) = lanes.get_mut(&key) {
                if !Arc::ptr_eq(&handle.subscriber, &subscriber) {
                    handle.subscriber = subscriber.clone();
                    let client = Box::new(self.client_for(&subscriber));
                    let _ = handle.tx.send(LaneMsg::Update(subscriber, client));
                }
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let stats = Arc::new(LaneStats::default());
            let stop = self.shutdown.child_token();
            let metrics = Arc::new(
                self.deps
                    .metrics
                    .subscriber(&subscriber.route, &subscriber.name),
            );
            let lane = Lane::new(
                subscriber.clone(),
                metrics.clone(),
                self.client_for(&subscriber),
                self.deps.clone(),
                stats.clone(),
                rx,
                stop.clone(),
            );
            tokio::spawn(lane.run());
            lanes.insert(
                key,
                LaneHandle {
                    subscriber,
                    metrics,
                    tx,
                    stats,
                    stop,
                },
            );
        }
        removed
    }

    fn send(&self, key: &LaneKey, job: Job) -> bool {
        let lanes = self.lanes.read().expect("lane map");
        match lanes.get(key) {
            Some(handle) => {
                handle.metrics.pending.inc();
                handle.tx.send(LaneMsg::Job(job)).is_ok()
            }
            None => false,
        }
    }

    /// Schedules the deliveries of a just-committed event, due now. A
    /// delivery whose subscriber was removed by a reload after the request
    /// began becomes a dead letter ("subscriber removed").
    pub async fn enqueue_new(
        &self,
        event_id: &str,
        seq: u64,
        received_ms: u64,
        body: &Bytes,
        subscribers: &[Arc<Subscriber>],
    ) {
        for subscriber in subscribers {
            let delivery_id = DeliveryRecord::id_for(event_id, &subscriber.name);
            let job = Job {
                delivery_id: delivery_id.clone(),
                event_id: event_id.to_string(),
                seq,
                attempts: 0,
                due_ms: received_ms,
                schedule_start_ms: received_ms,
                received_ms,
                body: Some(body.clone()),
            };
            if !self.send(&(subscriber.route.clone(), subscriber.name.clone()), job) {
                self.orphan(&delivery_id, &subscriber.route, &subscriber.name, false)
                    .await;
            }
        }
    }

    /// A pending delivery whose subscriber no longer exists becomes a dead
    /// letter with the reason "subscriber removed". `was_queued` says
    /// whether a lane held it (and so counted it as pending).
    pub async fn orphan(&self, delivery_id: &str, route: &str, subscriber: &str, was_queued: bool) {
        let store = &self.deps.store;
        match store
            .kill(delivery_id, "subscriber removed", now_ms())
            .await
        {
            Ok(true) => {
                let m = &self.deps.metrics;
                m.dead_letters.with_label_values(&[route, subscriber]).inc();
                if was_queued {
                    m.pending.with_label_values(&[route, subscriber]).dec();
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(
                delivery = delivery_id,
                error = %e,
                "cannot mark a delivery of a removed subscriber dead"
            ),
        }
    }

    /// Schedules a stored pending delivery (at start, or after a replay) at
    /// its persisted due time. False when its subscriber has no lane.
    pub fn enqueue_record(&self, record: &DeliveryRecord) -> bool {
        let job = Job {
            delivery_id: record.id.clone(),
            event_id: record.event_id.clone(),
            seq: record.seq,
            attempts: record.attempts,
            due_ms: record.due_ms,
            schedule_start_ms: record.schedule_start_ms.max(record.received_ms),
            received_ms: record.received_ms,
            body: None,
        };
        let key = (
            Arc::<str>::from(record.route.as_str()),
            Arc::<str>::from(record.subscriber.as_str()),
        );
        self.send(&key, job)
    }

    /// Every lane's state, sorted by route and subscriber.
    pub fn snapshot(&self) -> Vec<LaneSnapshot> {
        let lanes = self.lanes.read().expect("lane map");
        let mut out: Vec<_> = lanes
            .iter()
            .map(|((route, sub), handle)| LaneSnapshot {
                route: route.to_string(),
                subscriber: sub.to_string(),
                in_flight: handle.stats.in_flight.load(Ordering::Relaxed),
                pending: handle.metrics.pending.get(),
                dead_letters: handle.metrics.dead_letters.get(),
                circuit: handle.stats.circuit_name(),
            })
            .collect();
        out.sort_by(|a, b| (&a.route, &a.subscriber).cmp(&(&b.route, &b.subscriber)));
        out
    }
}
