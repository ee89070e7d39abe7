//! Wiring: builds every part from a [`Config`], runs them, reloads them and
//! shuts them down in order.
//!
//! Shutdown order (one cancellation token from `main`), within one
//! `shutdown_grace`: readiness turns 503; the ingress stops accepting and
//! lets open requests finish, cutting what is still open when the grace
//! ends; commits in progress finish and hand their deliveries over; lanes
//! stop starting attempts and release what they hold; attempts in flight
//! finish (an unfinished one stays pending in the store); the admin
//! listener closes; the store closes (its writer finishes its queue and the
//! file is closed cleanly).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{AdminState, ReloadFn};
use crate::config::{Config, Problem, Runtime};
use crate::delivery::Dispatcher;
use crate::ingress::listener::{self, Limits, SharedLimits, SharedTls};
use crate::ingress::service::IngressState;
use crate::ingress::tls::{self, TlsError};
use crate::intake::idempotency::IdempotencyCache;
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::reconcile::Reconciler;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::postgres::{PostgresOptions, PostgresStore};
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
    /// False until listeners are bound, and again once shutdown starts.
    pub ready: Arc<AtomicBool>,
    /// The ingress TLS config, swapped by reloads.
    tls: Option<SharedTls>,
    /// The ingress listener's limits, swapped by reloads.
    limits: SharedLimits,
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

/// The ingress listener's limits from a config.
fn ingress_limits(config: &Config) -> Limits {
    let server = &config.server;
    Limits {
        header_read_timeout: server.header_read_timeout,
        max_connections: server.max_connections as usize,
        grace: config.shutdown_grace,
        idle_timeout: server.idle_timeout,
    }
}

/// The PostgreSQL store's settings from a config.
fn postgres_options(config: &Config, pg: &crate::config::PostgresConfig) -> PostgresOptions {
    PostgresOptions {
        url: pg.url.clone(),
        pool_size: pg.pool_size as usize,
        schema: pg.schema.clone(),
        lease: pg.lease,
        max_batch: config.store.max_batch,
        observer: None,
        // Validated at load; a file gone since leaves only the web roots.
        ca_certs: pg
            .ca_file
            .as_deref()
            .and_then(|f| crate::delivery::client::load_ca_file(f).ok())
            .unwrap_or_default(),
    }
}

/// Applies the PostgreSQL store's migrations (`hookrelay migrate`); says
/// what it did.
pub async fn migrate(config: &Config) -> Result<String, StoreError> {
    let Some(pg) = &config.store.postgres else {
        return Ok(
            "the embedded store has no migrations (a file from an older \
                   hookrelay is converted when it opens)"
                .into(),
        );
    };
    let applied = crate::store::postgres::migrate(&postgres_options(config, pg)).await?;
    Ok(if applied.is_empty() {
        format!("schema {} is up to date", pg.schema)
    } else {
        format!(
            "schema {}: applied migration(s) {}",
            pg.schema,
            applied
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Opens the store the config names.
async fn open_store(config: &Config, metrics: &Arc<Metrics>) -> Result<Arc<dyn Store>, StoreError> {
    let observer = {
        let metrics = metrics.clone();
        Arc::new(move |size: usize, took: Duration| {
            metrics.commit_batch.observe(size as f64);
            metrics.commit_duration.observe(took.as_secs_f64());
        })
    };
    if let Some(pg) = &config.store.postgres {
        let options = PostgresOptions {
            observer: Some(observer),
            ..postgres_options(config, pg)
        };
        return Ok(Arc::new(PostgresStore::open(options).await?));
    }
    Ok(Arc::new(EmbeddedStore::open(
        &config.store.path,
        EmbeddedOptions {
            max_batch: config.store.max_batch,
            cache_bytes: config.store.cache_bytes,
            observer: Some(observer),
        },
    )?))
}

impl Gateway {
    /// Opens the store, binds both listeners and starts serving; lanes
    /// resume pending deliveries from the store as they start. Returns once
    /// the gateway is ready.
    pub async fn start(config: Config) -> Result<Gateway, GatewayError> {
        let runtime = config.compile().map_err(GatewayError::Config)?;
        let metrics = Arc::new(Metrics::new());
        metrics.prime(&runtime);
        let tls = match &config.server.tls {
            Some(t) => Some(Arc::new(ArcSwap::new(tls::server_config(t)?))),
            None => None,
        };
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
        let store = open_store(&config, &metrics).await?;

        let shutdown = CancellationToken::new();
        let lanes_stop = CancellationToken::new();
        let abandon = CancellationToken::new();
        let attempts = TaskTracker::new();
        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            metrics.clone(),
            attempts.clone(),
            lanes_stop.clone(),
            abandon.clone(),
        ));
        dispatcher.sync(&runtime);
        // Another replica made work claimable: every lane claims now.
        if let Some(wake) = store.wakeups() {
            let dispatcher = dispatcher.clone();
            let stop = lanes_stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = wake.notified() => dispatcher.wake_all(),
                    }
                }
            });
        }

        let cache = Arc::new(IdempotencyCache::new(
            millis(config.idempotency.ttl),
            config.idempotency.max_keys,
        ));
        let intake = Arc::new(Intake::new(
            store.clone(),
            cache.clone(),
            dispatcher.clone(),
        ));
        let limits: SharedLimits = Arc::new(ArcSwap::from_pointee(ingress_limits(&config)));
        let shared = Arc::new(Shared {
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            store: store.clone(),
            dispatcher: dispatcher.clone(),
            intake: intake.clone(),
            metrics: metrics.clone(),
            ready: Arc::new(AtomicBool::new(false)),
            tls: tls.clone(),
            limits: limits.clone(),
            reload_lock: tokio::sync::Mutex::new(()),
        });

        let ingress_state = Arc::new(IngressState {
            runtime: shared.runtime.clone(),
            intake: intake.clone(),
            metrics: metrics.clone(),
            store: store.clone(),
            muapi: crate::reconcile::MuapiClient::new(),
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
            limits,
            ingress_handler,
            shutdown.clone(),
        ));
        let reload: ReloadFn = {
            let weak = Arc::downgrade(&shared);
            Arc::new(move || {
                let weak = weak.clone();
                Box::pin(async move {
                    match weak.upgrade() {
                        Some(shared) => shared.reload_from_file().await,
                        None => Err(vec!["the gateway is shutting down".to_string()]),
                    }
                })
            })
        };
        let admin_state = Arc::new(AdminState {
            runtime: shared.runtime.clone(),
            store: store.clone(),
            dispatcher: dispatcher.clone(),
            metrics: metrics.clone(),
            cache,
            ready: shared.ready.clone(),
            reload,
        });
        let admin_stop = CancellationToken::new();
        let admin_handler: listener::Handler = Arc::new(move |_peer, request| {
            Box::pin(crate::admin::handle(admin_state.clone(), request))
        });
        let admin_limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 64,
            grace: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
        };
        let admin_task = tokio::spawn(listener::serve(
            admin,
            None,
            Arc::new(ArcSwap::from_pointee(admin_limits)),
            admin_handler,
            admin_stop.clone(),
        ));
        let pruner = tokio::spawn(prune_loop(shared.clone(), lanes_stop.clone()));
        // Polls of late results feed the intake: they stop with the ingress.
        let reconcile_stop = CancellationToken::new();
        let polls = TaskTracker::new();
        let reconciler = tokio::spawn(
            Reconciler::new(
                store.clone(),
                intake.clone(),
                shared.runtime.clone(),
                metrics.clone(),
            )
            .run(reconcile_stop.clone(), polls.clone()),
        );

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
            let shared = supervisor_shared;
            // One grace period (the one in force now) covers draining
            // requests and attempts.
            let grace = shared.runtime.load().config.shutdown_grace;
            let deadline = tokio::time::Instant::now() + grace;
            shared.ready.store(false, Ordering::SeqCst);
            tracing::info!("shutting down: draining open requests");
            let _ = ingress_task.await;
            reconcile_stop.cancel();
            let _ = reconciler.await;
            polls.close();
            if tokio::time::timeout_at(deadline, polls.wait())
                .await
                .is_err()
            {
                tracing::warn!("result polls still running after shutdown_grace; they run again after the restart");
            }
            // Requests are gone; their commits finish and hand over (a
            // delivery that finds no lane stays pending in the store).
            shared.intake.drain().await;
            tracing::info!("ingress closed; letting attempts in flight finish");
            lanes_stop.cancel();
            shared.dispatcher.stopped().await;
            attempts.close();
            if tokio::time::timeout_at(deadline, attempts.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "attempts still running after shutdown_grace; they stay pending in the store"
                );
                abandon.cancel();
            }
            let _ = pruner.await;
            admin_stop.cancel();
            let _ = admin_task.await;
            shared.store.close().await;
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Shared {
    /// Swaps routes, subscribers, tokens, secrets, the TLS certificate and
    /// every limit that can change live. Requests in flight finish on the old
    /// config; an invalid config changes nothing. Pending deliveries of a
    /// removed subscriber wait in the store (orphans) until it returns or an
    /// operator resolves them.
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
        let (o, n) = (&old.config, &config);
        for (key, changed) in [
            ("server.listen", o.server.listen != n.server.listen),
            ("admin.listen", o.admin.listen != n.admin.listen),
            ("store.path", o.store.path != n.store.path),
            (
                "store.postgres",
                o.store
                    .postgres
                    .as_ref()
                    .map(|p| (&p.url, p.pool_size, &p.schema, p.lease, &p.ca_file))
                    != n.store
                        .postgres
                        .as_ref()
                        .map(|p| (&p.url, p.pool_size, &p.schema, p.lease, &p.ca_file)),
            ),
            ("store.max_batch", o.store.max_batch != n.store.max_batch),
            (
                "store.cache_bytes",
                o.store.cache_bytes != n.store.cache_bytes,
            ),
            ("log.format", o.log.format != n.log.format),
            ("log.level", o.log.level != n.log.level),
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
        // Live: connection limits and timeouts (new connections), the
        // shutdown grace, the idempotency window and bound, retention (read
        // by the pruner at its next run).
        self.limits.store(Arc::new(ingress_limits(&config)));
        self.intake
            .cache()
            .set_limits(millis(config.idempotency.ttl), config.idempotency.max_keys);
        let runtime = Arc::new(runtime);
        self.metrics.prime(&runtime);
        self.runtime.store(runtime.clone());
        let removed = self.dispatcher.sync(&runtime);
        for (route, subscriber) in removed {
            tracing::warn!(
                route,
                subscriber,
                "subscriber removed: its pending deliveries wait in the store as orphans \
                 (see /api/v1/subscribers; resolve with POST /api/v1/orphans/resolve)"
            );
        }
        Ok(())
    }
}

/// Prunes the store (expired dead letters, details past retention, keys
/// past the idempotency window) and expires cached keys: once a minute, or
/// four times per window when a window is shorter. Settings are read at
/// every run, so a reload applies at the next one.
async fn prune_loop(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let config = shared.runtime.load().config.clone();
        let shortest = config
            .idempotency
            .ttl
            .min(config.store.retention)
            .max(Duration::from_millis(1));
        let period = (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let now = now_ms();
        let expired = shared.intake.cache().expire(now);
        let policy = PrunePolicy {
            now_ms: now,
            retention_ms: millis(config.store.retention),
            ttl_ms: millis(config.idempotency.ttl),
            dead_letter_retention_ms: millis(config.store.dead_letter_retention),
            max_items: 512,
        };
        loop {
            match shared.store.prune(policy).await {
                Ok(report) => {
                    if report.details + report.keys + report.dead_letters > 0 || expired > 0 {
                        tracing::debug!(
                            details = report.details,
                            keys = report.keys,
                            dead_letters = report.dead_letters,
                            cached_keys = expired,
                            "pruned"
                        );
                    }
                    if !report.more || stop.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "prune failed; will retry");
                    break;
                }
            }
        }
    }
}
