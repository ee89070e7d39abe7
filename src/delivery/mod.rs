//! Delivery: from durable deliveries to subscribers' 2xx.
//!
//! The [`Dispatcher`] keeps one [`lane::Lane`] per (route, subscriber) of
//! the running config. Lanes are independent tasks: a slow or dead
//! subscriber fills only its own in-flight slots and trips only its own
//! circuit breaker. The store stays the authority on what is pending; a
//! delivery whose subscriber has no lane here simply waits in the store
//! (an orphan, visible in the admin API) and is never killed by a process
//! that does not know its subscriber.

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
use crate::store::{EventId, Origin, Store};
use client::DeliveryClient;
use lane::{Job, Lane, LaneDeps, LaneMsg, LaneStats, RecentActivity};

/// A lane's identity: (route name, subscriber name).
type LaneKey = (Arc<str>, Arc<str>);

struct LaneHandle {
    subscriber: Arc<Subscriber>,
    tx: mpsc::UnboundedSender<LaneMsg>,
    stats: Arc<LaneStats>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// A lane's state in this process, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LaneSnapshot {
    /// Route name.
    pub route: String,
    /// Subscriber name.
    pub subscriber: String,
    /// Attempts running now.
    pub in_flight: u64,
    /// Deliveries this process holds, waiting for their due time.
    pub queued: u64,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    /// Deliveries and failures of the last minutes.
    #[serde(flatten)]
    pub activity: RecentActivity,
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
    /// A dispatcher with no lanes yet; call [`Dispatcher::sync`]. Lanes stop
    /// starting attempts when `shutdown` is cancelled; attempts waiting to
    /// record a result give up when `abandon` is.
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        abandon: CancellationToken,
    ) -> Self {
        Self {
            lanes: RwLock::new(HashMap::new()),
            deps: Arc::new(LaneDeps {
                store,
                metrics,
                tracker,
                abandon,
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

    /// Makes the lanes match `runtime`: starts lanes for new subscribers
    /// (each claims its due deliveries from the store at once), updates
    /// changed ones, stops removed ones (their waiting deliveries go back to
    /// the store). Returns the (route, subscriber) pairs removed.
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
            let metrics: Arc<SubscriberMetrics> = Arc::new(
                self.deps
                    .metrics
                    .subscriber(&subscriber.route, &subscriber.name),
            );
            let lane = Lane::new(
                subscriber.clone(),
                metrics,
                self.client_for(&subscriber),
                self.deps.clone(),
                stats.clone(),
                rx,
                tx.clone(),
                stop.clone(),
            );
            let task = tokio::spawn(lane.run());
            lanes.insert(
                key,
                LaneHandle {
                    subscriber,
                    tx,
                    stats,
                    stop,
                    task,
                },
            );
        }
        removed
    }

    /// Hands the deliveries of a just-accepted event (claimed by this
    /// process) to their lanes, with the body so no re-read is needed. A
    /// delivery whose subscriber has no lane (removed by a reload while the
    /// request was in flight) is released: it waits in the store, pending.
    pub async fn hand_over(
        &self,
        event: EventId,
        received_ms: u64,
        origin: Origin,
        body: &Bytes,
        subscribers: &[Arc<Subscriber>],
    ) {
        let mut orphans = Vec::new();
        {
            let lanes = self.lanes.read().expect("lane map");
            for subscriber in subscribers {
                let job = Job {
                    event,
                    attempts: 0,
                    due_ms: received_ms,
                    schedule_start_ms: received_ms,
                    received_ms,
                    origin,
                    body: Some(body.clone()),
                };
                let key = (subscriber.route.clone(), subscriber.name.clone());
                let sent = lanes
                    .get(&key)
                    .is_some_and(|lane| lane.tx.send(LaneMsg::Job(job)).is_ok());
                if !sent {
                    orphans.push(subscriber.clone());
                }
            }
        }
        for subscriber in orphans {
            tracing::warn!(
                route = %subscriber.route,
                subscriber = %subscriber.name,
                event_id = %event,
                "no lane for this subscriber now; the delivery waits in the store"
            );
            if let Err(e) = self
                .deps
                .store
                .release(&subscriber.route, &subscriber.name, &[event])
                .await
            {
                tracing::debug!(error = %e, "cannot release an orphaned delivery");
            }
        }
    }

    /// Asks every lane to claim due deliveries from the store now (after a
    /// replay, or when another replica released work).
    pub fn wake_all(&self) {
        for handle in self.lanes.read().expect("lane map").values() {
            let _ = handle.tx.send(LaneMsg::Wake);
        }
    }

    /// Whether this process has a lane for the subscriber.
    pub fn has_lane(&self, route: &str, subscriber: &str) -> bool {
        self.lanes
            .read()
            .expect("lane map")
            .keys()
            .any(|(r, s)| &**r == route && &**s == subscriber)
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
                queued: handle.stats.queued.load(Ordering::Relaxed),
                circuit: handle.stats.circuit_name(),
                activity: handle.stats.activity(),
            })
            .collect();
        out.sort_by(|a, b| (&a.route, &a.subscriber).cmp(&(&b.route, &b.subscriber)));
        out
    }

    /// Waits for every lane task to end (after the shutdown token): each
    /// has released the claims of the deliveries it was holding.
    pub async fn stopped(&self) {
        let tasks: Vec<_> = self
            .lanes
            .write()
            .expect("lane map")
            .drain()
            .map(|(_, h)| {
                h.stop.cancel();
                h.task
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}
