//! Prometheus metrics, named as DESIGN.md's contract says (prefix
//! `hookrelay_`). Each gateway owns its registry, so several gateways can
//! run in one test process. Labels carry route and subscriber names only,
//! never tokens, URLs or query strings.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Attempt result classes (the `result` label).
pub const ATTEMPT_CLASSES: [&str; 7] = [
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "timeout",
    "connect_error",
    "error",
];

/// Poll results (the `result` label of `reconcile_polls_total`).
pub const POLL_RESULTS: [&str; 8] = [
    "completed",
    "failed",
    "cancelled",
    "pending",
    "throttled",
    "unauthorized",
    "not_found",
    "error",
];

/// One subscriber's metric handles, resolved once per lane so an attempt
/// never hashes label values.
#[derive(Clone)]
pub struct SubscriberMetrics {
    attempts: Vec<IntCounter>,
    /// `delivery_attempt_duration_seconds`.
    pub attempt_duration: Histogram,
    /// `delivery_latency_seconds`.
    pub latency: Histogram,
    /// `deliveries_total{outcome="delivered"}`.
    pub delivered: IntCounter,
    /// `deliveries_total{outcome="dead"}`.
    pub dead: IntCounter,
    /// `circuit_open`.
    pub circuit_open: IntGauge,
}

impl SubscriberMetrics {
    /// The attempts counter of a result class (see [`ATTEMPT_CLASSES`]).
    pub fn attempts(&self, class: &str) -> &IntCounter {
        let i = ATTEMPT_CLASSES
            .iter()
            .position(|c| *c == class)
            .unwrap_or(ATTEMPT_CLASSES.len() - 1);
        &self.attempts[i]
    }
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// `ingress_requests_total{route,outcome}`.
    pub ingress_requests: IntCounterVec,
    /// `ingress_request_duration_seconds{route}`: receipt to answer.
    pub ingress_duration: HistogramVec,
    /// `deliveries_total{route,subscriber,outcome}`: delivered or dead.
    pub deliveries: IntCounterVec,
    /// `delivery_attempts_total{route,subscriber,result}`.
    pub attempts: IntCounterVec,
    /// `delivery_attempt_duration_seconds{route,subscriber}`.
    pub attempt_duration: HistogramVec,
    /// `delivery_latency_seconds{route,subscriber}`: receipt to 2xx.
    pub delivery_latency: HistogramVec,
    /// `deliveries_pending{route,subscriber}`, read from the store.
    pub pending: IntGaugeVec,
    /// `dead_letters{route,subscriber}`, read from the store.
    pub dead_letters: IntGaugeVec,
    /// `deliveries_orphaned{route,subscriber}`: pending deliveries of a
    /// subscriber this process's config does not have.
    pub orphaned: IntGaugeVec,
    /// `store_bytes{kind="file|used"}`.
    pub store_bytes: IntGaugeVec,
    /// `circuit_open{route,subscriber}`: 1 while open.
    pub circuit_open: IntGaugeVec,
    /// `idempotency_keys`.
    pub idempotency_keys: IntGauge,
    /// `store_commit_duration_seconds`.
    pub commit_duration: Histogram,
    /// `store_commit_batch_size`.
    pub commit_batch: Histogram,
    /// `config_reloads_total{result}`.
    pub reloads: IntCounterVec,
    /// `expected_tasks{route,state}`: tasks whose result is expected, read
    /// from the store.
    pub expected_tasks: IntGaugeVec,
    /// `reconciled_total{route,status}`: results fetched by polling and
    /// delivered because their callback never came.
    pub reconciled: IntCounterVec,
    /// `reconcile_polls_total{route,result}`: polls of the result API.
    pub reconcile_polls: IntCounterVec,
}

fn name(n: &str) -> String {
    format!("hookrelay_{n}")
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |n: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name(n), help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |n: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name(n), help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |n: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name(n), help).buckets(buckets), labels)
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        // 100 µs .. ~26 s: ingress answers are sub-millisecond to seconds.
        let fast = exponential_buckets(0.0001, 2.0, 19).expect("buckets");
        // 1 ms .. ~4 h: delivery latency includes retries spanning hours.
        let slow = exponential_buckets(0.001, 2.5, 19).expect("buckets");
        let ingress_requests = counter(
            "ingress_requests_total",
            "Ingress requests by route and outcome",
            &["route", "outcome"],
        );
        let ingress_duration = histogram(
            "ingress_request_duration_seconds",
            "Receipt to answer, per route",
            &["route"],
            fast.clone(),
        );
        let deliveries = counter(
            "deliveries_total",
            "Deliveries finished, by outcome (delivered, dead)",
            &["route", "subscriber", "outcome"],
        );
        let attempts = counter(
            "delivery_attempts_total",
            "Delivery attempts by result (2xx, 3xx, 4xx, 5xx, timeout, connect_error, error)",
            &["route", "subscriber", "result"],
        );
        let attempt_duration = histogram(
            "delivery_attempt_duration_seconds",
            "One attempt, connect to last byte",
            &["route", "subscriber"],
            fast.clone(),
        );
        let delivery_latency = histogram(
            "delivery_latency_seconds",
            "Receipt to the subscriber's 2xx",
            &["route", "subscriber"],
            slow,
        );
        let pending = gauge(
            "deliveries_pending",
            "Deliveries waiting or in flight",
            &["route", "subscriber"],
        );
        let dead_letters = gauge(
            "dead_letters",
            "Dead letters held",
            &["route", "subscriber"],
        );
        let orphaned = gauge(
            "deliveries_orphaned",
            "Pending deliveries of a subscriber missing from this process's config",
            &["route", "subscriber"],
        );
        let store_bytes = gauge(
            "store_bytes",
            "Store size: the whole file (file), what holds live data (used), and the free space and size of its volume (disk_free, disk_size; embedded store)",
            &["kind"],
        );
        let circuit_open = gauge(
            "circuit_open",
            "1 while the subscriber's circuit breaker is open",
            &["route", "subscriber"],
        );
        let idempotency_keys =
            IntGauge::new(name("idempotency_keys"), "Idempotency keys held in memory")
                .expect("valid metric");
        registry
            .register(Box::new(idempotency_keys.clone()))
            .expect("unique metric");
        let commit_duration = Histogram::with_opts(
            HistogramOpts::new(name("store_commit_duration_seconds"), "One group commit")
                .buckets(fast),
        )
        .expect("valid metric");
        registry
            .register(Box::new(commit_duration.clone()))
            .expect("unique metric");
        let commit_batch = Histogram::with_opts(
            HistogramOpts::new(name("store_commit_batch_size"), "Records per group commit")
                .buckets(exponential_buckets(1.0, 2.0, 12).expect("buckets")),
        )
        .expect("valid metric");
        registry
            .register(Box::new(commit_batch.clone()))
            .expect("unique metric");
        let reloads = counter(
            "config_reloads_total",
            "Config reloads by result (ok, error)",
            &["result"],
        );
        let expected_tasks = gauge(
            "expected_tasks",
            "Tasks whose result is expected, by state (waiting, polling, done, expired)",
            &["route", "state"],
        );
        let reconciled = counter(
            "reconciled_total",
            "Results fetched from the provider's result API because no callback came, by status",
            &["route", "status"],
        );
        let reconcile_polls = counter(
            "reconcile_polls_total",
            "Polls of the provider's result API, by result",
            &["route", "result"],
        );
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(process));
        }
        Self {
            registry,
            ingress_requests,
            ingress_duration,
            deliveries,
            attempts,
            attempt_duration,
            delivery_latency,
            pending,
            dead_letters,
            orphaned,
            store_bytes,
            circuit_open,
            idempotency_keys,
            commit_duration,
            commit_batch,
            reloads,
            expected_tasks,
            reconciled,
            reconcile_polls,
        }
    }

    /// The handles of one subscriber (creating its series at zero).
    pub fn subscriber(&self, route: &str, subscriber: &str) -> SubscriberMetrics {
        let labels = [route, subscriber];
        SubscriberMetrics {
            attempts: ATTEMPT_CLASSES
                .iter()
                .map(|class| self.attempts.with_label_values(&[route, subscriber, class]))
                .collect(),
            attempt_duration: self.attempt_duration.with_label_values(&labels),
            latency: self.delivery_latency.with_label_values(&labels),
            delivered: self
                .deliveries
                .with_label_values(&[route, subscriber, "delivered"]),
            dead: self
                .deliveries
                .with_label_values(&[route, subscriber, "dead"]),
            circuit_open: self.circuit_open.with_label_values(&labels),
        }
    }

    /// Creates every labelled series of the config at zero, so alerts and
    /// dashboards see a series before its first increment.
    pub fn prime(&self, runtime: &crate::config::Runtime) {
        for result in ["ok", "error"] {
            self.reloads.with_label_values(&[result]);
        }
        for route in runtime.routes.values() {
            for outcome in [
                "accepted",
                "duplicate",
                "unauthorized",
                "forbidden",
                "invalid",
                "too_large",
                "unavailable",
            ] {
                self.ingress_requests
                    .with_label_values(&[&route.name, outcome]);
            }
            for subscriber in &route.subscribers {
                self.subscriber(&route.name, &subscriber.name);
                let labels = [&*route.name, &*subscriber.name];
                self.pending.with_label_values(&labels);
                self.dead_letters.with_label_values(&labels);
                self.orphaned.with_label_values(&labels);
            }
        }
        for kind in ["file", "used"] {
            self.store_bytes.with_label_values(&[kind]);
        }
        for (route, _) in runtime.muapi_routes() {
            let name: &str = &route.name;
            for state in crate::store::ExpectedState::ALL {
                self.expected_tasks.with_label_values(&[name, state.name()]);
            }
            for status in crate::store::FINAL_STATUSES {
                self.reconciled.with_label_values(&[name, status]);
            }
            for result in POLL_RESULTS {
                self.reconcile_polls.with_label_values(&[name, result]);
            }
        }
    }

    /// Sets the store-derived gauges: pending and dead per subscriber, and
    /// orphaned for subscribers `configured` does not know.
    pub fn set_counts(
        &self,
        counts: &[crate::store::LaneCounts],
        configured: impl Fn(&str, &str) -> bool,
    ) {
        for c in counts {
            let labels = [c.route.as_str(), c.subscriber.as_str()];
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.pending
                .with_label_values(&labels)
                .set(gauge(c.pending));
            self.dead_letters
                .with_label_values(&labels)
                .set(gauge(c.dead));
            let orphans = if configured(&c.route, &c.subscriber) {
                0
            } else {
                c.pending
            };
            self.orphaned.with_label_values(&labels).set(gauge(orphans));
        }
    }

    /// The whole page in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
