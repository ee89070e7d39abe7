//! End-to-end load harness: the release gateway (the built binary, TLS, the
//! embedded store with fsync on) between a load generator of its own and N
//! fast in-process sinks, next to a bare hyper + rustls server measured
//! with the same load generator in the same run.
//!
//! Run: `cargo bench --bench e2e` (full, a few minutes) or
//! `cargo bench --bench e2e -- --smoke` (tiny load, seconds). Prints one
//! JSON line of results. Options: `--callbacks N`, `--concurrency C`,
//! `--proto h1|h2`, `--keys N` (idempotency keys for the memory figure).
//! Everything runs on 127.0.0.1 and stops by itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_hookrelay");
const TOKEN: &str = "bench-token";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    H1,
    H2,
}

#[derive(Clone, Debug)]
struct Options {
    callbacks: usize,
    concurrency: usize,
    proto: Proto,
    keys: usize,
    smoke: bool,
    /// Run only the scenarios whose name contains this (exploration).
    only: Option<String>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let smoke = args.iter().any(|a| a == "--smoke");
    Options {
        callbacks: value("--callbacks")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 200 } else { 20_000 }),
        concurrency: value("--concurrency")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 8 } else { 64 }),
        proto: match value("--proto").as_deref() {
            Some("h2") => Proto::H2,
            _ => Proto::H1,
        },
        keys: value("--keys")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 10_000 } else { 1_000_000 }),
        smoke,
        only: value("--only"),
    }
}

// ---------------------------------------------------------------- PKI

struct Pki {
    ca_der: rustls_pki_types::CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
    cert_pem: String,
    key_pem: String,
}

fn pki(dir: &Path) -> Pki {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    Pki {
        ca_der: ca.der().clone(),
        cert,
        key,
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------- load generator

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn client(pki: &Pki, proto: Proto) -> HttpsClient {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    // TCP_NODELAY: an HTTP/2 request is a HEADERS and a DATA frame; with
    // Nagle on, the second waits for the peer's delayed ACK (~40 ms).
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = match proto {
        Proto::H1 => builder.enable_http1().wrap_connector(http),
        Proto::H2 => builder.enable_http2().wrap_connector(http),
    };
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_max_idle_per_host(1);
    if proto == Proto::H2 {
        b.http2_only(true);
    }
    b.build(connector)
}

fn muapi_body(id: &str) -> String {
    json!({
        "id": id,
        "outputs": [format!("https://cdn.muapi.ai/outputs/{id}/out-0.png")],
        "urls": {"get": format!("https://api.muapi.ai/api/v1/predictions/{id}/result")},
        "has_nsfw_contents": [false],
        "status": "completed",
        "created_at": "2026-11-27T00:00:00.000Z",
        "error": null,
        "executionTime": 1234,
        "timings": {"inference": 1.234}
    })
    .to_string()
}

/// A muapi-like task id (UUID-shaped, unique per run and index).
fn task_id(run: u64, i: usize) -> String {
    let n = (run << 32) ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (n >> 32) as u32,
        (n >> 16) as u16,
        n as u16 & 0xfff,
        i as u16 & 0xfff,
        i
    )
}

struct Load {
    latencies: Vec<Duration>,
    accepted: usize,
    errors: usize,
    elapsed: Duration,
    sent: HashMap<String, Instant>,
}

/// Closed loop: `concurrency` workers, each on its own connection, send
/// `total` callbacks as fast as answers come back. With `rate` set, the
/// loop is open: each worker waits for its scheduled send time.
async fn run_load(
    pki: &Pki,
    addr: SocketAddr,
    proto: Proto,
    total: usize,
    concurrency: usize,
    rate: Option<f64>,
    run: u64,
) -> Load {
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let client = client(pki, proto);
        let url: http::Uri = format!("https://localhost:{}/hooks/muapi", addr.port())
            .parse()
            .unwrap();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut sent = Vec::new();
            let mut errors = 0;
            let mut i = w;
            while i < total {
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let id = task_id(run, i);
                let request = Request::post(url.clone())
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(muapi_body(&id))))
                    .unwrap();
                let t0 = Instant::now();
                let outcome = tokio::time::timeout(Duration::from_secs(30), async {
                    let response = client.request(request).await.ok()?;
                    let status = response.status();
                    let body = response.into_body().collect().await.ok()?.to_bytes();
                    Some((status, body))
                })
                .await;
                match outcome {
                    Ok(Some((StatusCode::OK, body))) => {
                        latencies.push(t0.elapsed());
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        if let Some(event_id) = v["event_id"].as_str() {
                            sent.push((event_id.to_string(), t0));
                        }
                    }
                    _ => errors += 1,
                }
                i += concurrency;
            }
            (latencies, sent, errors)
        }));
    }
    let mut load = Load {
        latencies: Vec::with_capacity(total),
        accepted: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        sent: HashMap::with_capacity(total),
    };
    for w in workers {
        let (latencies, sent, errors) = w.await.unwrap();
        load.accepted += latencies.len();
        load.latencies.extend(latencies);
        load.sent.extend(sent);
        load.errors += errors;
    }
    load.elapsed = started.elapsed();
    load.latencies.sort();
    load
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    (sorted[i].as_secs_f64() * 1e6).round() / 1e3
}

// ---------------------------------------------------------------- sinks

#[derive(Default)]
struct SinkLog {
    /// Per event id: deliveries received and the last receipt.
    seen: Mutex<HashMap<String, (u32, Instant)>>,
    total: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

/// A fast sink: reads the body, answers 200 at once, records the receipt.
async fn start_sink(log: Arc<SinkLog>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let id = req
                            .headers()
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let _ = req.into_body().collect().await;
                        let now = Instant::now();
                        {
                            let mut seen = log.seen.lock().unwrap();
                            let entry = seen.entry(id).or_insert((0, now));
                            entry.0 += 1;
                            entry.1 = now;
                        }
                        log.total.fetch_add(1, Ordering::Relaxed);
                        log.first.lock().unwrap().get_or_insert(now);
                        *log.last.lock().unwrap() = Some(now);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Accepts connections and never answers.
async fn start_black_hole() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

// ---------------------------------------------------------------- the bare baseline

/// hyper + rustls answering 200 at once (it drains the body, nothing else:
/// no parsing, no store, no fan-out).
async fn start_bare(pki: &Pki) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    let chain =
        vec![rustls_pki_types::CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        br#"{"status":"accepted","event_id":"bare"}"#,
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------- the gateway process

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway {
    child: tokio::process::Child,
    ingress: SocketAddr,
    admin: SocketAddr,
}

async fn start_gateway(dir: &Path, pki: &Pki, subscribers: &[(String, String, &str)]) -> Gateway {
    let ingress: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut subs = String::new();
    for (name, url, timeout) in subscribers {
        subs.push_str(&format!(
            "      - name: {name}\n        url: {url}\n        timeout: {timeout}\n"
        ));
    }
    let config = format!(
        r#"server:
  listen: "{ingress}"
  tls: {{ cert: {}, key: {} }}
admin:
  listen: "{admin}"
store:
  path: {}
{cache}log: {{ format: json, level: warn }}
defaults:
  max_in_flight: 64
  retry: {{ initial_interval: 1s, max_interval: 10s }}
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth: {{ tokens: ["{TOKEN}"] }}
    subscribers:
{subs}"#,
        pki.cert.display(),
        pki.key.display(),
        dir.join("data").display(),
        // Exploration knob: the store's page cache (default: the config's).
        cache = std::env::var("HOOKRELAY_BENCH_CACHE_BYTES")
            .map(|v| format!("  cache_bytes: {v}\n"))
            .unwrap_or_default(),
    );
    let path = dir.join("hookrelay.yaml");
    std::fs::write(&path, config).unwrap();
    let child = tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the gateway binary starts");
    let gateway = Gateway {
        child,
        ingress,
        admin,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while admin_get(admin, "/readyz").await.map(|(s, _)| s) != Some(200) {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway
}

async fn admin_get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{admin}{path}").parse().ok()?;
    let response = client.get(uri).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).to_string()))
}

fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Peak and current resident set of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kib| (kib / 1024.0 * 10.0).round() / 10.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ")".
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after ")".
    (ticks(11) + ticks(12)) / 100.0
}

async fn stop(mut gateway: Gateway) {
    if let Some(pid) = gateway.child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), gateway.child.wait()).await;
    let _ = gateway.child.start_kill();
}

// ---------------------------------------------------------------- scenarios

struct Scenario {
    name: &'static str,
    fanout: usize,
    black_hole: bool,
}

async fn scenario(opts: &Options, pki: &Pki, s: &Scenario, run: u64, rate: Option<f64>) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SinkLog::default());
    let mut subs = Vec::new();
    for i in 0..s.fanout {
        let addr = start_sink(log.clone()).await;
        subs.push((format!("sink{i}"), format!("http://{addr}/hook"), "15s"));
    }
    if s.black_hole {
        let hole = start_black_hole().await;
        subs.push((
            "blackhole".to_string(),
            format!("http://{hole}/never"),
            "2s",
        ));
    }
    let gateway = start_gateway(dir.path(), pki, &subs).await;
    let pid = gateway.child.id().unwrap();
    let count = opts.callbacks;
    let load = run_load(
        pki,
        gateway.ingress,
        opts.proto,
        count,
        opts.concurrency,
        rate,
        run,
    )
    .await;
    // Wait for every healthy delivery (bounded).
    let expected = (load.accepted * s.fanout) as u64;
    let deadline = Instant::now() + Duration::from_secs(if opts.smoke { 30 } else { 120 });
    while log.total.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered = log.total.load(Ordering::Relaxed);
    let started = Instant::now() - load.elapsed;
    let last = log.last.lock().unwrap().unwrap_or(started);
    let delivery_window = last.saturating_duration_since(started).as_secs_f64();
    let mut e2e: Vec<Duration> = {
        let seen = log.seen.lock().unwrap();
        load.sent
            .iter()
            .filter_map(|(id, t0)| {
                seen.get(id)
                    .filter(|(n, _)| *n as usize >= s.fanout)
                    .map(|(_, at)| at.saturating_duration_since(*t0))
            })
            .collect()
    };
    e2e.sort();
    let page = admin_get(gateway.admin, "/metrics")
        .await
        .map(|(_, p)| p)
        .unwrap_or_default();
    let commits = metric(&page, "hookrelay_store_commit_batch_size_count");
    let records = metric(&page, "hookrelay_store_commit_batch_size_sum");
    let (peak, _) = rss_mib(pid);
    let cpu = cpu_seconds(pid);
    stop(gateway).await;
    json!({
        "gateway_cpu_s": (cpu * 100.0).round() / 100.0,
        "gateway_cpu_ms_per_callback": ((cpu * 1000.0 / load.accepted.max(1) as f64) * 1000.0).round() / 1000.0,
        "scenario": s.name,
        "fanout": s.fanout,
        "black_hole": s.black_hole,
        "offered_rate": rate,
        "callbacks": count,
        "accepted": load.accepted,
        "errors": load.errors,
        "accepted_per_s": (load.accepted as f64 / load.elapsed.as_secs_f64()).round(),
        "deliveries": delivered,
        "deliveries_expected": expected,
        "deliveries_per_s": (delivered as f64 / delivery_window.max(1e-9)).round(),
        "ingress_ms": {"p50": quantile(&load.latencies, 0.5), "p99": quantile(&load.latencies, 0.99), "p999": quantile(&load.latencies, 0.999)},
        "e2e_ms": {"p50": quantile(&e2e, 0.5), "p99": quantile(&e2e, 0.99)},
        "peak_rss_mib": peak,
        "store_commits": commits,
        "mean_batch": ((records / commits) * 10.0).round() / 10.0,
    })
}

/// RSS of a gateway holding `keys` idempotency keys: the store is filled
/// through the library (muapi-like UUID task ids), then the binary starts
/// on it and warms its cache from the store.
async fn memory_with_keys(pki: &Pki, keys: usize) -> Value {
    use hookrelay::store::embedded::{EmbeddedOptions, EmbeddedStore};
    use hookrelay::store::{NewEvent, Store};
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    {
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(
                &dir.path().join("data"),
                EmbeddedOptions {
                    max_batch: 4096,
                    ..EmbeddedOptions::default()
                },
            )
            .unwrap(),
        );
        let now = hookrelay::store::now_ms();
        let body = Bytes::from(muapi_body("00000000-0000-4000-a000-000000000000"));
        let route: Arc<str> = Arc::from("muapi");
        let mut pending = tokio::task::JoinSet::new();
        for i in 0..keys {
            let key = format!("{}\ncompleted", task_id(7, i));
            let digest = hookrelay::intake::event_digest("muapi", &key);
            let event = NewEvent {
                id: hookrelay::store::EventId(digest),
                route: route.clone(),
                received_ms: now,
                source_id: None,
                status: Some("completed".into()),
                origin: hookrelay::store::Origin::Callback,
                headers: vec![],
                body: body.clone(),
                subscribers: vec![],
                ttl_ms: 72 * 3600 * 1000,
                settles: false,
            };
            let store = store.clone();
            pending.spawn(async move { store.append(event).await.unwrap() });
            if pending.len() >= 8192 {
                while pending.len() > 4096 {
                    pending.join_next().await;
                }
            }
        }
        while pending.join_next().await.is_some() {}
    }
    let fill = started.elapsed();
    // The writer thread releases the file lock once the store is dropped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let gateway = start_gateway(
        dir.path(),
        pki,
        &[("sink0".into(), "http://127.0.0.1:9/x".into(), "1s")],
    )
    .await;
    let warm = t0.elapsed();
    let page = admin_get(gateway.admin, "/metrics")
        .await
        .map(|(_, p)| p)
        .unwrap_or_default();
    let held = metric(&page, "hookrelay_idempotency_keys");
    let (peak, rss) = rss_mib(gateway.child.id().unwrap());
    stop(gateway).await;
    json!({
        "keys": keys,
        "keys_held": held,
        "rss_mib": rss,
        "peak_rss_mib": peak,
        "store_fill_s": (fill.as_secs_f64() * 10.0).round() / 10.0,
        "start_with_keys_s": (warm.as_secs_f64() * 100.0).round() / 100.0,
    })
}

async fn bare(opts: &Options, pki: &Pki) -> Value {
    let addr = start_bare(pki).await;
    let load = run_load(
        pki,
        addr,
        opts.proto,
        opts.callbacks,
        opts.concurrency,
        None,
        1,
    )
    .await;
    json!({
        "scenario": "bare_hyper_rustls",
        "accepted": load.accepted,
        "errors": load.errors,
        "accepted_per_s": (load.accepted as f64 / load.elapsed.as_secs_f64()).round(),
        "ingress_ms": {"p50": quantile(&load.latencies, 0.5), "p99": quantile(&load.latencies, 0.99), "p999": quantile(&load.latencies, 0.999)},
    })
}

fn main() {
    let opts = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let result = runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let plan = [
            Scenario { name: "fanout_1", fanout: 1, black_hole: false },
            Scenario { name: "fanout_3", fanout: 3, black_hole: false },
            Scenario { name: "fanout_3_plus_black_hole", fanout: 3, black_hole: true },
        ];
        if let Some(only) = &opts.only {
            let mut out = Vec::new();
            if "bare".contains(only.as_str()) {
                out.push(bare(&opts, &pki).await);
            }
            for (i, s) in plan.iter().enumerate().filter(|(_, s)| s.name.contains(only.as_str())) {
                out.push(scenario(&opts, &pki, s, 30 + i as u64, None).await);
            }
            return json!({ "only": only, "scenarios": out });
        }
        let bare = bare(&opts, &pki).await;
        let mut scenarios = Vec::new();
        for (i, s) in plan.iter().enumerate() {
            scenarios.push(scenario(&opts, &pki, s, 10 + i as u64, None).await);
        }
        // p99 at half of the sustained fan-out-3 rate (open loop).
        let max_rate = scenarios[1]["accepted_per_s"].as_f64().unwrap_or(100.0);
        let half = Scenario { name: "fanout_3_half_rate", fanout: 3, black_hole: false };
        scenarios.push(scenario(&opts, &pki, &half, 20, Some((max_rate / 2.0).max(1.0))).await);
        let memory = memory_with_keys(&pki, opts.keys).await;

        let bare_rate = bare["accepted_per_s"].as_f64().unwrap_or(f64::NAN);
        let f3 = &scenarios[1];
        let bh = &scenarios[2];
        let half_p99 = scenarios[3]["ingress_ms"]["p99"].as_f64().unwrap_or(f64::NAN);
        let healthy_ratio = bh["deliveries_per_s"].as_f64().unwrap_or(0.0)
            / f3["deliveries_per_s"].as_f64().unwrap_or(f64::NAN);
        let peak = scenarios
            .iter()
            .filter_map(|s| s["peak_rss_mib"].as_f64())
            .fold(0.0, f64::max);
        json!({
            "harness": "hookrelay e2e",
            "smoke": opts.smoke,
            "proto": format!("{:?}", opts.proto),
            "concurrency": opts.concurrency,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "bare": bare,
            "scenarios": scenarios,
            "memory": memory,
            "ratio_fanout3_vs_bare": ((f3["accepted_per_s"].as_f64().unwrap_or(0.0) / bare_rate) * 1000.0).round() / 1000.0,
            "targets": {
                "fanout3_ge_50pct_of_bare": f3["accepted_per_s"].as_f64().unwrap_or(0.0) >= 0.5 * bare_rate,
                "p99_at_half_rate_le_10ms": half_p99 <= 10.0,
                "black_hole_healthy_within_10pct": healthy_ratio >= 0.9,
                "rss_under_load_le_64mib": peak <= 64.0,
                "rss_with_keys_le_256mib": memory["rss_mib"].as_f64().unwrap_or(f64::MAX) <= 256.0,
            },
            "healthy_delivery_ratio_with_black_hole": (healthy_ratio * 1000.0).round() / 1000.0,
            "wall_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        })
    });
    println!("{result}");
    let ok =
        result["scenarios"].as_array().unwrap().iter().all(|s| {
            s["accepted"].as_u64() > Some(0) && s["deliveries"] == s["deliveries_expected"]
        });
    if !ok {
        eprintln!("e2e: some scenario accepted nothing or lost deliveries");
        std::process::exit(1);
    }
}
