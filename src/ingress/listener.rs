//! Accepting and serving connections, shared by the ingress and the admin
//! listener.
//!
//! One task per connection: an optional TLS handshake, then hyper-util's
//! `auto` builder (HTTP/1.1 and HTTP/2 on one port). Limits: at most
//! `max_connections` at once (further ones wait in the kernel backlog), a
//! deadline for the TLS handshake and the first request head, hyper's
//! `header_read_timeout` for later heads, [`MAX_CONCURRENT_STREAMS`] per
//! HTTP/2 connection. Every request carries the [`BodyPools`] of its
//! connection and listener, which the handler may draw on. On shutdown: stop accepting, ask
//! every connection to finish its open requests, wait up to the grace.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::budget::{BodyPools, Pool};

/// Requests one HTTP/2 connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// Handles one request from a peer.
pub type Handler = Arc<dyn Fn(SocketAddr, Request<Incoming>) -> ResponseFuture + Send + Sync>;

/// TLS configuration that a reload can swap; new connections use the new one.
pub type SharedTls = Arc<ArcSwap<rustls::ServerConfig>>;

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time allowed for the TLS handshake and each request head.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long open requests may run on after shutdown begins.
    pub grace: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

/// Limits a reload may change: read for every new connection.
pub type SharedLimits = Arc<ArcSwap<Limits>>;

/// Serves `listener` until `shutdown`, then drains: open connections are
/// asked to finish their requests, and after the current `grace` the ones
/// still open are cut (their tasks end, so no request outlives the drain).
pub async fn serve(
    listener: TcpListener,
    tls: Option<SharedTls>,
    limits: SharedLimits,
    handler: Handler,
    shutdown: CancellationToken,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(tokio::sync::Notify::new());
    let body_total = Arc::new(Pool::default());
    let connections = TaskTracker::new();
    let cut = CancellationToken::new();
    loop {
        // Wait for a free slot under the current `max_connections`
        // (further connections wait in the kernel backlog).
        loop {
            let notified = closed.notified();
            if open.load(Ordering::Acquire) < limits.load().max_connections.max(1) {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = notified => {}
            }
        }
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.as_ref().map(|t| t.load_full());
        let handler = handler.clone();
        let limits = **limits.load();
        let shutdown = shutdown.clone();
        let cut = cut.clone();
        let slot = Slot::take(open.clone(), closed.clone());
        let pools = BodyPools {
            connection: Arc::default(),
            total: body_total.clone(),
        };
        connections.spawn(async move {
            let _slot = slot;
            let builder = builder(&limits);
            tokio::select! {
                _ = serve_connection(stream, peer, tls, limits, handler, &builder, shutdown, pools) => {}
                _ = cut.cancelled() => tracing::debug!(%peer, "connection cut at the end of the shutdown grace"),
            }
        });
    }
    drop(listener);
    connections.close();
    let grace = limits.load().grace;
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace; cutting them");
        cut.cancel();
        connections.wait().await;
    }
}

/// One connection's place under `max_connections`, given back on drop.
struct Slot {
    open: Arc<AtomicUsize>,
    closed: Arc<tokio::sync::Notify>,
}

impl Slot {
    fn take(open: Arc<AtomicUsize>, closed: Arc<tokio::sync::Notify>) -> Self {
        open.fetch_add(1, Ordering::AcqRel);
        Slot { open, closed }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.closed.notify_waiters();
    }
}

/// hyper-util's HTTP/1.1 + HTTP/2 builder for these limits.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        // RFC 9113 recommends no fewer than 100; more only multiplies what
        // one connection can make the gateway hold at once.
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    builder
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    handler: Handler,
    builder: &auto::Builder<TokioExecutor>,
    shutdown: CancellationToken,
    pools: BodyPools,
) {
    let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
    let activity = Arc::new(Activity::default());
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let busy = Busy::start(seen.clone());
        // The handler bounds what bodies it holds per connection and in all.
        request.extensions_mut().insert(pools.clone());
        let answer = handler(peer, request);
        async move {
            let response = answer.await;
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    match tls {
        None => {
            drive(
                stream,
                builder,
                service,
                deadline,
                limits.idle_timeout,
                &activity,
                &shutdown,
            )
            .await
        }
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(stream)) => {
                    drive(
                        stream,
                        builder,
                        service,
                        deadline,
                        limits.idle_timeout,
                        &activity,
                        &shutdown,
                    )
                    .await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// What a connection is doing, for its first-request deadline and its
/// idle timeout.
#[derive(Default)]
struct Activity {
    /// Requests whose answer is not written yet.
    in_flight: AtomicUsize,
    /// Whether any request head arrived.
    started: AtomicBool,
    /// When the last answer finished (epoch: the process's first call).
    last_done_ms: AtomicU64,
    /// Wakes the connection's supervisor when a request starts or ends.
    changed: tokio::sync::Notify,
}

/// Counts a request in flight while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Self {
        activity.started.store(true, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.changed.notify_one();
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_done_ms.store(clock_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

/// Milliseconds on a monotonic clock local to this process.
fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

#[allow(clippy::too_many_arguments)]
async fn drive<IO, S>(
    io: IO,
    builder: &auto::Builder<TokioExecutor>,
    service: S,
    deadline: tokio::time::Instant,
    idle_timeout: Duration,
    activity: &Activity,
    shutdown: &CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        // An open connection with no request in flight for `idle_timeout`
        // is closed (gracefully): an idle HTTP/2 connection would otherwise
        // hold a `max_connections` slot forever.
        let idle_since = activity.last_done_ms.load(Ordering::Relaxed);
        let idle_left = Duration::from_millis(
            (idle_since + idle_timeout.as_millis() as u64).saturating_sub(clock_ms()),
        );
        let idle = activity.started.load(Ordering::Relaxed)
            && activity.in_flight.load(Ordering::Relaxed) == 0
            && !draining;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            // A client that never completes its first request head is cut
            // off (covers the protocol sniffing that precedes hyper's own
            // header timeout).
            _ = tokio::time::sleep_until(deadline), if !activity.started.load(Ordering::Relaxed) => {
                if !activity.started.load(Ordering::Relaxed) {
                    tracing::debug!("no complete request head in time; closing");
                    return;
                }
            }
            // A request started or ended: recompute the timers above.
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep(idle_left), if idle => {
                let quiet = activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.last_done_ms.load(Ordering::Relaxed) == idle_since;
                if quiet {
                    tracing::debug!("connection idle; closing");
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
