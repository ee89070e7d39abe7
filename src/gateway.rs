//! Wiring: builds every part from a [`Config`], runs them, reloads them and
//! shuts them down in order.
//!
//! Shutdown order (one cancellation token from `main`): stop accepting and
//! let open ingress requests finish; stop starting attempts; let attempts in
//! flight finish within `shutdown_grace`; stop the admin listener; close the
//! store (its writer finishes what is queued).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Problem, Runtime};
use crate::delivery::Dispatcher;
use crate::ingress::listener::{self, Limits, SharedTls};
use crate::ingress::service::IngressState;
use crate::ingress::tls::{self, TlsError};
use crate::intake::idempotency::IdempotencyCache;
use crate::intake::{digest_of, Intake};
use crate::metrics::Metrics;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::{now_ms, PrunePolicy, Store, StoreError};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The config breaks rules.
    #[error("invalid config: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Config(Vec<Problem>),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// State shared by the ingress, the admin API and reloads.
pub struct Shared {
    /// Current compiled config.
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Lanes.
    pub dispatcher: Arc<Dispatcher>,
    /// Intake (holds the idempotency cache).
    pub intake: Arc<Intake>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// False until listeners are bound and pending work is loaded, and again once shutdown starts.
    pub ready: AtomicBool,
    /// The ingress TLS config, swapped by reloads.
    tls: Option<SharedTls>,
    /// Serialises reloads.
    reload_lock: tokio::sync::Mutex<()>,
}

/// A running gateway.
pub struct Gateway {
    /// Bound ingress address (useful with port 0).
    pub ingress_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// Shared state.
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Opens the store, loads pending deliveries, binds both listeners and
    /// starts serving. Returns once the gateway is ready.
    pub async fn start(config: Config) -> Result<Gateway, GatewayError> {
        let runtime = config.compile().map_err(GatewayError::Config)?;
        let metrics = Arc::new(Metrics::new());
        metrics.prime(&runtime);
        let observer = {
            let metrics = metrics.clone();
            Arc::new(move |size: usize, took: Duration| {
                metrics.commit_batch.observe(size as f64);
                metrics.commit_duration.observe(took.as_secs_f64());
            })
        };
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(
            &config.store.path,
            EmbeddedOptions {
                max_batch: config.store.max_batch,
                cache_bytes: config.store.cache_bytes,
                observer: Some(observer),
            },
        )?);
        let tls = match &config.server.tls {
            Some(t) => Some(Arc::new(ArcSwap::new(tls::server_config(t)?))),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let lanes_stop = CancellationToken::new();
        let attempts = TaskTracker::new();
        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            metrics.clone(),
            attempts.clone(),
            lanes_stop.clone(),
        ));
        dispatcher.sync(&runtime);

        let cache = Arc::new(IdempotencyCache::new(
            config.idempotency.ttl.as_millis() as u64,
            config.idempotency.max_keys,
        ));
        let now = now_ms();
        let since = now.saturating_sub(config.idempotency.ttl.as_millis() as u64);
        for (event_id, at) in store
            .recent_keys(since, config.idempotency.max_keys)
            .await?
        {
            if let Some(digest) = digest_of(&event_id) {
                cache.insert_committed(digest, at);
            }
        }
        let stats = store.stats().await?;
        for ((route, subscriber), count) in &stats.dead {
            metrics
                .dead_letters
                .with_label_values(&[route, subscriber])
                .set(*count as i64);
        }
        let mut resumed = 0;
        for record in store.pending().await? {
            if dispatcher.enqueue_record(&record) {
                resumed += 1;
            } else {
                dispatcher
                    .orphan(&record.id, &record.route, &record.subscriber, false)
                    .await;
            }
        }
        if resumed > 0 {
            tracing::info!(resumed, "resumed pending deliveries from the store");
        }

        let intake = Arc::new(Intake::new(store.clone(), cache, dispatcher.clone()));
        let ingress = TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: config.server.listen,
                source,
            })?;
        let admin = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: config.admin.listen,
                source,
            })?;
        let ingress_addr = ingress.local_addr().expect("bound socket has an address");
        let admin_addr = admin.local_addr().expect("bound socket has an address");

        let shared = Arc::new(Shared {
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            store: store.clone(),
            dispatcher,
            intake: intake.clone(),
            metrics: metrics.clone(),
            ready: AtomicBool::new(false),
            tls: tls.clone(),
            reload_lock: tokio::sync::Mutex::new(()),
        });

        let grace = config.shutdown_grace;
        let server = &config.server;
        let ingress_limits = Limits {
            header_read_timeout: server.header_read_timeout,
            max_connections: server.max_connections as usize,
            grace,
            idle_timeout: server.idle_timeout,
        };
        let ingress_state = Arc::new(IngressState {
            runtime: shared.runtime.clone(),
            intake,
            metrics: metrics.clone(),
        });
        let ingress_handler: listener::Handler = Arc::new(move |peer, request| {
            Box::pin(crate::ingress::service::handle(
                ingress_state.clone(),
                peer,
                request,
            ))
        });
        let ingress_task = tokio::spawn(listener::serve(
            ingress,
            tls,
            ingress_limits,
            ingress_handler,
            shutdown.clone(),
        ));
        let admin_stop = CancellationToken::new();
        let admin_shared = shared.clone();
        let admin_handler: listener::Handler = Arc::new(move |_peer, request| {
            Box::pin(crate::admin::handle(admin_shared.clone(), request))
        });
        let admin_task = tokio::spawn(listener::serve(
            admin,
            None,
            Limits {
                header_read_timeout: Duration::from_secs(10),
                max_connections: 64,
                grace: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(60),
            },
            admin_handler,
            admin_stop.clone(),
        ));
        let pruner = tokio::spawn(prune_loop(
            shared.clone(),
            config.clone(),
            lanes_stop.clone(),
        ));

        shared.ready.store(true, Ordering::SeqCst);
        tracing::info!(
            ingress = %ingress_addr,
            admin = %admin_addr,
            tls = config.server.tls.is_some(),
            "hookrelay listening"
        );

        let supervisor_shared = shared.clone();
        let supervisor_shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            supervisor_shutdown.cancelled().await;
            // One grace period covers both draining requests and attempts.
            let deadline = tokio::time::Instant::now() + grace;
            supervisor_shared.ready.store(false, Ordering::SeqCst);
            tracing::info!("shutting down: draining open requests");
            let _ = ingress_task.await;
            tracing::info!("ingress closed; letting attempts in flight finish");
            lanes_stop.cancel();
            attempts.close();
            if tokio::time::timeout_at(deadline, attempts.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "attempts still running after shutdown_grace; they stay pending in the store"
                );
            }
            let _ = pruner.await;
            admin_stop.cancel();
            let _ = admin_task.await;
            tracing::info!("shutdown complete");
        });

        Ok(Gateway {
            ingress_addr,
            admin_addr,
            shared,
            shutdown,
            task,
        })
    }

    /// The token that starts shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts shutdown and waits for it to finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the gateway has shut down.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Applies a new config atomically (see [`Shared::reload`]).
    pub async fn reload(&self, config: Config) -> Result<(), Vec<Problem>> {
        self.shared.reload(config).await
    }
}

impl Shared {
    /// Swaps routes, subscribers, tokens, secrets and the TLS certificate.
    /// Requests in flight finish on the old config; an invalid config
    /// changes nothing. Deliveries pending for a removed subscriber become
    /// dead letters ("subscriber removed").
    pub async fn reload(&self, config: Config) -> Result<(), Vec<Problem>> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let result = self.try_reload(config).await;
        let problems: Vec<String> = match &result {
            Ok(()) => Vec::new(),
            Err(problems) => problems.iter().map(|p| p.to_string()).collect(),
        };
        self.record_reload(&problems);
        result
    }

    /// Re-reads the file the running config came from and applies it
    /// (SIGHUP and `POST /api/v1/reload`). Every refusal is logged and
    /// counted, whether the file does not load or the config does not apply.
    pub async fn reload_from_file(&self) -> Result<(), Vec<String>> {
        let Some(path) = self.runtime.load().config.source.clone() else {
            return Err(vec![
                "this gateway was not started from a config file".into()
            ]);
        };
        match Config::load(&path) {
            Ok(config) => self
                .reload(config)
                .await
                .map_err(|problems| problems.iter().map(|p| p.to_string()).collect()),
            Err(e) => {
                let problems = e.problems();
                self.record_reload(&problems);
                Err(problems)
            }
        }
    }

    fn record_reload(&self, problems: &[String]) {
        let label = if problems.is_empty() { "ok" } else { "error" };
        self.metrics.reloads.with_label_values(&[label]).inc();
        if problems.is_empty() {
            tracing::info!("config reloaded");
        }
        for problem in problems {
            tracing::error!(%problem, "config reload refused; the old config stays");
        }
    }

    async fn try_reload(&self, config: Config) -> Result<(), Vec<Problem>> {
        let runtime = config.compile()?;
        let old = self.runtime.load_full();
        let new_tls = match (&config.server.tls, &self.tls) {
            (Some(t), Some(_)) => Some(
                tls::server_config(t)
                    .map_err(|e| vec![Problem::new("server.tls", e.to_string())])?,
            ),
            (None, None) => None,
            _ => {
                return Err(vec![Problem::new(
                    "server.tls",
                    "turning TLS on or off needs a restart",
                )])
            }
        };
        for (key, changed) in [
            (
                "server.listen",
                old.config.server.listen != config.server.listen,
            ),
            (
                "admin.listen",
                old.config.admin.listen != config.admin.listen,
            ),
            ("store.path", old.config.store.path != config.store.path),
        ] {
            if changed {
                tracing::warn!(
                    key,
                    "this setting changes only after a restart; keeping the running value"
                );
            }
        }
        if let (Some(shared), Some(new)) = (&self.tls, new_tls) {
            shared.store(new);
        }
        let runtime = Arc::new(runtime);
        self.metrics.prime(&runtime);
        self.runtime.store(runtime.clone());
        let removed = self.dispatcher.sync(&runtime);
        if !removed.is_empty() {
            match self.store.pending().await {
                Ok(pending) => {
                    for record in pending {
                        if removed
                            .iter()
                            .any(|(r, s)| r == &record.route && s == &record.subscriber)
                        {
                            // Counted as pending while its lane held it.
                            self.dispatcher
                                .orphan(&record.id, &record.route, &record.subscriber, true)
                                .await;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot list pending deliveries of removed subscribers")
                }
            }
        }
        Ok(())
    }
}

/// Expires idempotency keys and prunes delivered events: once a minute, or
/// four times per keep window when that is shorter.
async fn prune_loop(shared: Arc<Shared>, config: Config, stop: CancellationToken) {
    let keep = config.idempotency.ttl.max(config.store.retention);
    let period = (keep / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let expired = shared.intake.cache().expire(now);
        loop {
            let policy = PrunePolicy {
                now_ms: now,
                keep_ms: keep.as_millis() as u64,
                max_events: 512,
            };
            match shared.store.prune(policy).await {
                Ok(n) if n == policy.max_events => continue,
                Ok(n) => {
                    if n > 0 || expired > 0 {
                        tracing::debug!(pruned_events = n, expired_keys = expired, "pruned");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "prune failed; will retry");
                    break;
                }
            }
        }
    }
}
