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
use tokio::sync::Semaphore;
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
#[derive(Debug, Clone, Copy)]
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

/// Serves `listener` until `shutdown`, then drains within `limits.grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<SharedTls>,
    limits: Limits,
    handler: Handler,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let body_total = Arc::new(Pool::default());
    let connections = TaskTracker::new();
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
    let builder = Arc::new(builder);
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("semaphore never closes"),
        };
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
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let pools = BodyPools {
            connection: Arc::default(),
            total: body_total.clone(),
        };
        connections.spawn(async move {
            let _slot = slot;
            serve_connection(
                stream, peer, tls, limits, handler, &builder, shutdown, pools,
            )
            .await;
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace; closing them");
    }
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
