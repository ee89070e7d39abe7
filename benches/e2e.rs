//! End-to-end load harness: the release gateway (the built binary, TLS, the
//! embedded store with fsync on, or PostgreSQL) between a load generator of
//! its own and N fast in-process sinks, next to a bare hyper + rustls server
//! and, when nginx is installed, nginx (`return 200`, and proxy + two
//! `mirror`s to the same three sinks), all measured with the same load
//! generator in the same run.
//!
//! Run: `cargo bench --bench e2e` (full, a few minutes) or
//! `cargo bench --bench e2e -- --smoke` (tiny load, seconds). Prints one
//! JSON line of results on stdout and a readable summary on stderr.
//! Options: `--callbacks N`, `--concurrency C`, `--proto h1|h2`, `--keys N`
//! (store size for the start-time figure and cache size for the memory
//! figure), `--store embedded|postgres` (postgres: the PostgreSQL set, next
//! to the embedded fan-out 3), `--rate R` (offered rate of the half-rate and
//! steady scenarios when fan-out 3 is not measured in the same run),
//! `--only NAME` (only the scenarios whose name contains NAME), `--pairs K`
//! (PostgreSQL set: one replica and two replicas measured K times, in
//! alternating order; 3 by default, 1 with `--smoke`).
//! Everything runs on 127.0.0.1 and stops by itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// The PostgreSQL server of `--store postgres` unless
/// `HOOKRELAY_BENCH_DATABASE_URL` names another.
const LOCAL_PG: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";
/// The variable the gateway's config reads the database URL from (so the
/// URL, which may hold a password, is never written to a file).
const PG_URL_VAR: &str = "HOOKRELAY_DATABASE_URL";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    H1,
    H2,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum StoreKind {
    Embedded,
    Postgres,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Postgres => "postgres",
        }
    }
}

#[derive(Clone, Debug)]
struct Options {
    callbacks: usize,
    concurrency: usize,
    proto: Proto,
    keys: usize,
    smoke: bool,
    /// Which set of scenarios: the embedded plan, or the PostgreSQL one.
    store: StoreKind,
    /// Offered rate of the open-loop scenarios when the closed-loop rate
    /// they halve is not measured in this run (`--only`).
    rate: Option<f64>,
    /// Run only the scenarios whose name contains this (exploration).
    only: Option<String>,
    /// Times the PostgreSQL set measures one replica against two. One
    /// pair of three-second runs moves by ±15 % with this machine's
    /// footing; the target is judged on the median of the pairs' ratios.
    pairs: usize,
}

impl Options {
    fn wants(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| name.contains(only))
    }

    /// The rate the half-rate scenarios offer: half of `measured` (the
    /// closed-loop fan-out-3 rate of this run), else `--rate`, else a
    /// modest default.
    fn half_rate(&self, measured: Option<f64>) -> f64 {
        match (measured, self.rate) {
            (Some(r), _) if r.is_finite() && r > 0.0 => (r / 2.0).max(1.0),
            (_, Some(r)) => r,
            _ => {
                if self.smoke {
                    100.0
                } else {
                    1000.0
                }
            }
        }
    }
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
    let store = match value("--store").as_deref() {
        None | Some("embedded") => StoreKind::Embedded,
        Some("postgres") => StoreKind::Postgres,
        Some(_) => {
            eprintln!("e2e: --store takes `embedded` or `postgres`");
            std::process::exit(2);
        }
    };
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
        store,
        rate: value("--rate").and_then(|v| v.parse().ok()),
        only: value("--only"),
        pairs: value("--pairs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 1 } else { 3 })
            .max(1),
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
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

impl Load {
    fn rate(&self) -> f64 {
        (self.accepted as f64 / self.elapsed.as_secs_f64()).round()
    }

    fn ingress_ms(&self) -> Value {
        json!({
            "p50": quantile(&self.latencies, 0.5),
            "p99": quantile(&self.latencies, 0.99),
            "p999": quantile(&self.latencies, 0.999),
        })
    }
}

/// Closed loop: `concurrency` workers, each on its own connection (worker
/// `w` to `addrs[w % addrs.len()]`), send `total` callbacks as fast as
/// answers come back. With `rate` set, the loop is open: each worker waits
/// for its scheduled send time.
async fn run_load(
    pki: &Pki,
    addrs: &[SocketAddr],
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
        let addr = addrs[w % addrs.len()];
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

impl SinkLog {
    /// Waits (bounded) until `expected` deliveries arrived; returns how
    /// many did.
    async fn wait_for(&self, expected: u64, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        while self.total.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.total.load(Ordering::Relaxed)
    }
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

async fn bare(opts: &Options, pki: &Pki) -> Value {
    let addr = start_bare(pki).await;
    let load = run_load(
        pki,
        &[addr],
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
        "accepted_per_s": load.rate(),
        "ingress_ms": load.ingress_ms(),
    })
}

// ---------------------------------------------------------------- the nginx anchor

/// The nginx binary: `HOOKRELAY_BENCH_NGINX` (a path, or `off` to skip the
/// anchor), else on PATH or where distributions put it.
fn find_nginx() -> Option<PathBuf> {
    if let Some(chosen) = std::env::var_os("HOOKRELAY_BENCH_NGINX") {
        return (chosen != "off").then(|| PathBuf::from(chosen));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (effective uid 0), from /proc.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

struct Nginx {
    child: tokio::process::Child,
    addr: SocketAddr,
    /// Config, pid file, error log and temp paths; removed when dropped.
    _dir: tempfile::TempDir,
}

/// Starts nginx terminating TLS on a free 127.0.0.1 port: with no sinks it
/// answers `return 200`; with sinks it proxies to the first and mirrors
/// every request (body included) to each of the others, over keep-alive
/// upstream connections. Everything it writes goes to a temp dir.
async fn start_nginx(bin: &Path, pki: &Pki, sinks: &[SocketAddr]) -> Result<Nginx, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path().display().to_string();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut upstreams = String::new();
    for (i, sink) in sinks.iter().enumerate() {
        upstreams.push_str(&format!(
            "  upstream sink{i} {{ server {sink}; keepalive 64; keepalive_requests 1000000; }}\n"
        ));
    }
    let locations = if sinks.is_empty() {
        "    location / { return 200 '{\"status\":\"accepted\",\"event_id\":\"nginx\"}'; }\n"
            .to_string()
    } else {
        let mut main = String::from("    location / {\n");
        for i in 1..sinks.len() {
            main.push_str(&format!("      mirror /m{i};\n"));
        }
        main.push_str("      mirror_request_body on;\n      proxy_pass http://sink0;\n    }\n");
        for i in 1..sinks.len() {
            main.push_str(&format!(
                "    location = /m{i} {{ internal; proxy_pass http://sink{i}$request_uri; }}\n"
            ));
        }
        main
    };
    // As root the workers would otherwise run as `nobody`, who cannot
    // write to this process's temp dir.
    let user = if is_root() { "user root;\n" } else { "" };
    let conf = format!(
        r#"{user}worker_processes auto;
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  default_type application/json;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
{upstreams}  server {{
    listen {addr} ssl http2;
    server_name localhost;
    ssl_certificate {cert};
    ssl_certificate_key {key};
{locations}  }}
}}
"#,
        cert = pki.cert.display(),
        key = pki.key.display(),
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(bin)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdout(std::process::Stdio::null())
        // A file, not a pipe nobody reads while it runs (a full pipe would
        // block nginx).
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            return Err(format!(
                "nginx exited at start ({status}): {} {}",
                stderr.trim(),
                log.trim()
            ));
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            return Err("nginx did not listen within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Nginx {
        child,
        addr,
        _dir: dir,
    })
}

/// Stops nginx (SIGTERM to the master, which stops its workers).
async fn stop_nginx(mut nginx: Nginx) {
    if let Some(pid) = nginx.child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(10), nginx.child.wait())
        .await
        .is_err()
    {
        let _ = nginx.child.start_kill();
        let _ = nginx.child.wait().await;
    }
}

/// nginx `return 200` and nginx proxy + mirrors to three sinks, under the
/// same load as everything else; `{"skipped": …}` without nginx.
async fn nginx_anchor(opts: &Options, pki: &Pki) -> Value {
    let Some(bin) = find_nginx() else {
        eprintln!("e2e: nginx not installed; skipping the anchor");
        return json!({ "skipped": "nginx not installed" });
    };
    eprintln!("e2e: nginx anchor with {}", bin.display());
    let version = std::process::Command::new(&bin)
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    out.insert("version".into(), json!(version));
    out.insert("worker_processes".into(), json!("auto"));
    if opts.wants("nginx_return200") {
        eprintln!("e2e: nginx_return200");
        let nginx = start_nginx(&bin, pki, &[])
            .await
            .unwrap_or_else(|e| panic!("e2e: nginx_return200: {e}"));
        let load = run_load(
            pki,
            &[nginx.addr],
            opts.proto,
            opts.callbacks,
            opts.concurrency,
            None,
            2,
        )
        .await;
        stop_nginx(nginx).await;
        out.insert(
            "return200".into(),
            json!({
                "scenario": "nginx_return200",
                "accepted": load.accepted,
                "errors": load.errors,
                "accepted_per_s": load.rate(),
                "ingress_ms": load.ingress_ms(),
            }),
        );
    }
    if opts.wants("nginx_mirror") {
        eprintln!("e2e: nginx_mirror");
        let log = Arc::new(SinkLog::default());
        let mut sinks = Vec::new();
        for _ in 0..3 {
            sinks.push(start_sink(log.clone()).await);
        }
        let nginx = start_nginx(&bin, pki, &sinks)
            .await
            .unwrap_or_else(|e| panic!("e2e: nginx_mirror: {e}"));
        let load = run_load(
            pki,
            &[nginx.addr],
            opts.proto,
            opts.callbacks,
            opts.concurrency,
            None,
            3,
        )
        .await;
        let expected = load.accepted as u64 * 3;
        let delivered = log.wait_for(expected, Duration::from_secs(30)).await;
        stop_nginx(nginx).await;
        out.insert(
            "mirror".into(),
            json!({
                "scenario": "nginx_mirror",
                "accepted": load.accepted,
                "errors": load.errors,
                "accepted_per_s": load.rate(),
                "ingress_ms": load.ingress_ms(),
                "deliveries": delivered,
                "deliveries_expected": expected,
            }),
        );
    }
    Value::Object(out)
}

// ---------------------------------------------------------------- PostgreSQL

/// The database URL of `--store postgres` (never printed: it may hold a
/// password).
fn pg_url() -> String {
    std::env::var("HOOKRELAY_BENCH_DATABASE_URL").unwrap_or_else(|_| LOCAL_PG.to_string())
}

/// Where the URL came from, for the report.
fn pg_source() -> &'static str {
    if std::env::var_os("HOOKRELAY_BENCH_DATABASE_URL").is_some() {
        "HOOKRELAY_BENCH_DATABASE_URL"
    } else {
        "local server (127.0.0.1:5432, database test)"
    }
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL ({}): {e}", pg_source()))?;
    tokio::spawn(conn);
    Ok(client)
}

/// A schema of its own for one scenario; dropped (with everything the
/// gateways created in it) when this is dropped, even on a panic.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(tag: &str) -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() % 1_000_000_000)
            .unwrap_or(0);
        Schema {
            url: pg_url(),
            name: format!("bench_{}_{ms}_{tag}", std::process::id()),
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let name = self.name.clone();
        // Its own thread and runtime: drop may run inside the harness's
        // runtime, which must not be blocked on from within.
        let outcome = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = pg_connect(&url).await?;
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await
                    .map_err(|e| format!("DROP SCHEMA failed: {e}"))
            })
        })
        .join();
        if let Ok(Err(e)) = outcome {
            eprintln!("e2e: could not drop the bench schema {}: {e}", self.name);
        }
    }
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
    /// The embedded store's file (none with PostgreSQL).
    store_file: Option<PathBuf>,
}

/// What a gateway process is started with.
struct Setup<'a> {
    /// (name, url, timeout) per subscriber.
    subscribers: &'a [(String, String, &'a str)],
    /// The PostgreSQL schema, or `None` for the embedded store.
    schema: Option<&'a Schema>,
    /// `store.retention` (default: the config's).
    retention: Option<&'a str>,
    /// `idempotency.ttl` (default: the config's).
    ttl: Option<&'a str>,
}

impl<'a> Setup<'a> {
    fn new(subscribers: &'a [(String, String, &'a str)], schema: Option<&'a Schema>) -> Self {
        Setup {
            subscribers,
            schema,
            retention: None,
            ttl: None,
        }
    }
}

/// Starts the gateway binary with its config in `dir/{name}.yaml` and, on
/// the embedded store, its data in `dir/data`; returns once it is ready.
async fn start_gateway(dir: &Path, name: &str, pki: &Pki, setup: &Setup<'_>) -> Gateway {
    let ingress: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut subs = String::new();
    for (name, url, timeout) in setup.subscribers {
        subs.push_str(&format!(
            "      - name: {name}\n        url: {url}\n        timeout: {timeout}\n"
        ));
    }
    let retention = setup
        .retention
        .map(|r| format!("  retention: {r}\n"))
        .unwrap_or_default();
    let (store, store_file) = match setup.schema {
        Some(schema) => (
            format!(
                "store:\n  postgres:\n    url: \"${{{PG_URL_VAR}}}\"\n    schema: {}\n    pool_size: 16\n{retention}",
                schema.name
            ),
            None,
        ),
        None => {
            let data = dir.join("data");
            (
                format!(
                    "store:\n  path: {}\n{retention}{cache}",
                    data.display(),
                    // Exploration knob: the store's page cache (default: the config's).
                    cache = std::env::var("HOOKRELAY_BENCH_CACHE_BYTES")
                        .map(|v| format!("  cache_bytes: {v}\n"))
                        .unwrap_or_default(),
                ),
                Some(data.join("hookrelay.redb")),
            )
        }
    };
    let idempotency = setup
        .ttl
        .map(|t| format!("idempotency:\n  ttl: {t}\n"))
        .unwrap_or_default();
    let config = format!(
        r#"server:
  listen: "{ingress}"
  tls: {{ cert: {}, key: {} }}
admin:
  listen: "{admin}"
{store}{idempotency}log: {{ format: json, level: warn }}
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
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    // `HOOKRELAY_BENCH_BIN` runs another build's gateway under the same
    // harness (before/after comparisons on one machine, one day).
    let bin = std::env::var_os("HOOKRELAY_BENCH_BIN").unwrap_or_else(|| BIN.into());
    let mut command = tokio::process::Command::new(bin);
    command
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    if let Some(schema) = setup.schema {
        command.env(PG_URL_VAR, &schema.url);
    }
    let mut child = command.spawn().expect("the gateway binary starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while admin_get(admin, "/readyz").await.map(|(s, _)| s) != Some(200) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the gateway exited before it was ready ({status}); its log is above");
        }
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Gateway {
        child,
        ingress,
        admin,
        store_file,
    }
}

async fn admin_get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{admin}{path}").parse().ok()?;
    let response = client.get(uri).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).to_string()))
}

async fn metrics_page(gateway: &Gateway) -> String {
    admin_get(gateway.admin, "/metrics")
        .await
        .map(|(_, p)| p)
        .unwrap_or_default()
}

/// A sample's value on a Prometheus text page; `name` includes the labels
/// exactly as the page writes them (`hookrelay_store_bytes{kind="file"}`).
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The store's size as the gateway reports it: (file, used) bytes.
fn store_bytes(page: &str) -> (f64, f64) {
    (
        metric(page, r#"hookrelay_store_bytes{kind="file"}"#),
        metric(page, r#"hookrelay_store_bytes{kind="used"}"#),
    )
}

fn file_len(path: Option<&PathBuf>) -> f64 {
    path.and_then(|p| std::fs::metadata(p).ok())
        .map_or(f64::NAN, |m| m.len() as f64)
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
            .map(|kib| round(kib / 1024.0, 1))
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
    let _ = gateway.child.wait().await;
}

// ---------------------------------------------------------------- scenarios

struct Scenario {
    name: &'static str,
    fanout: usize,
    black_hole: bool,
    store: StoreKind,
    /// Gateway processes sharing the store (PostgreSQL only); the load
    /// generator spreads its connections over all of them.
    replicas: usize,
}

impl Scenario {
    const fn embedded(name: &'static str, fanout: usize, black_hole: bool) -> Self {
        Scenario {
            name,
            fanout,
            black_hole,
            store: StoreKind::Embedded,
            replicas: 1,
        }
    }

    const fn postgres(name: &'static str, replicas: usize) -> Self {
        Scenario {
            name,
            fanout: 3,
            black_hole: false,
            store: StoreKind::Postgres,
            replicas,
        }
    }
}

async fn scenario(opts: &Options, pki: &Pki, s: &Scenario, run: u64, rate: Option<f64>) -> Value {
    eprintln!(
        "e2e: {}{}",
        s.name,
        rate.map(|r| format!(" (offered {r:.0}/s)"))
            .unwrap_or_default()
    );
    let dir = tempfile::tempdir().unwrap();
    let schema = (s.store == StoreKind::Postgres).then(|| Schema::new(&format!("r{run}")));
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
    let setup = Setup::new(&subs, schema.as_ref());
    let mut gateways = Vec::new();
    for r in 0..s.replicas.max(1) {
        gateways.push(start_gateway(dir.path(), &format!("replica{r}"), pki, &setup).await);
    }
    let empty_page = metrics_page(&gateways[0]).await;
    let (empty_file, empty_used) = store_bytes(&empty_page);
    let addrs: Vec<SocketAddr> = gateways.iter().map(|g| g.ingress).collect();
    let load = run_load(
        pki,
        &addrs,
        opts.proto,
        opts.callbacks,
        opts.concurrency,
        rate,
        run,
    )
    .await;
    // Wait for every healthy delivery (bounded).
    let expected = (load.accepted * s.fanout) as u64;
    let limit = Duration::from_secs(if opts.smoke { 30 } else { 120 });
    let delivered = log.wait_for(expected, limit).await;
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
    let mut commits = 0.0;
    let mut records = 0.0;
    let mut cpu = 0.0;
    let mut peaks = Vec::new();
    let mut end_page = String::new();
    for (i, gateway) in gateways.iter().enumerate() {
        let page = metrics_page(gateway).await;
        commits += metric(&page, "hookrelay_store_commit_batch_size_count");
        records += metric(&page, "hookrelay_store_commit_batch_size_sum");
        let pid = gateway.child.id().unwrap();
        peaks.push(rss_mib(pid).0);
        cpu += cpu_seconds(pid);
        if i == 0 {
            end_page = page;
        }
    }
    let (metric_file, metric_used) = store_bytes(&end_page);
    let file = file_len(gateways[0].store_file.as_ref());
    let store_file = gateways[0].store_file.clone();
    for gateway in gateways {
        stop(gateway).await;
    }
    drop(schema);
    let per_callback = |bytes: f64| round(bytes / load.accepted.max(1) as f64, 0);
    // What each table of the embedded store costs per callback (bytes
    // include redb's page overhead and fragmentation).
    let tables = store_file.as_deref().map(store_tables).map(|mut t| {
        if let Some(map) = t.as_object_mut() {
            for v in map.values_mut() {
                if let Some(bytes) = v.get("bytes").and_then(Value::as_f64) {
                    v["bytes_per_callback"] = json!(per_callback(bytes));
                }
            }
        }
        t
    });
    let peak = peaks.iter().copied().fold(0.0, f64::max);
    json!({
        "scenario": s.name,
        "store": s.store.name(),
        "replicas": s.replicas,
        "fanout": s.fanout,
        "black_hole": s.black_hole,
        "offered_rate": rate,
        "callbacks": opts.callbacks,
        "accepted": load.accepted,
        "errors": load.errors,
        "accepted_per_s": load.rate(),
        "deliveries": delivered,
        "deliveries_expected": expected,
        "deliveries_per_s": (delivered as f64 / delivery_window.max(1e-9)).round(),
        "ingress_ms": load.ingress_ms(),
        "e2e_ms": {"p50": quantile(&e2e, 0.5), "p99": quantile(&e2e, 0.99)},
        "peak_rss_mib": peak,
        "peak_rss_mib_per_replica": peaks,
        "gateway_cpu_s": round(cpu, 2),
        "gateway_cpu_ms_per_callback": round(cpu * 1000.0 / load.accepted.max(1) as f64, 3),
        "store_commits": commits,
        "mean_batch": round(records / commits, 1),
        // Store size once every delivery is done: the file (embedded: the
        // redb file as `ls` sees it; postgres: the events and deliveries
        // tables with their indexes and TOAST) and the part holding live
        // data, from the gateway's `hookrelay_store_bytes`, and per
        // accepted callback; `empty_*` is the same at start.
        "store_bytes": {
            "file": file,
            "metric_file": metric_file,
            "metric_used": metric_used,
            "empty_file": empty_file,
            "empty_used": empty_used,
            "file_per_callback": per_callback(if file.is_nan() { metric_file } else { file }),
            "used_per_callback": per_callback(metric_used),
            "tables": tables,
            "used_per_callback_net": per_callback(metric_used - empty_used),
        },
    })
}

// ---------------------------------------------------------------- steady state

/// The embedded store's tables as the harness reads them after the gateway
/// stopped: entries and bytes of `keys`, `events` and the store's other
/// tables. Reads redb directly
/// (read-only, untyped), so it follows the store's table names; a layout
/// without them gives an `error` entry, not a failure.
fn store_tables(file: &Path) -> Value {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
    let read = || -> Result<Value, String> {
        let db = redb::ReadOnlyDatabase::open(file).map_err(|e| e.to_string())?;
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let table = |name: &str| -> Result<Value, String> {
            // Untyped: only the name matters, so a changed record type
            // cannot make this fail.
            let t = txn
                .open_untyped_table(TableDefinition::<u64, u64>::new(name))
                .map_err(|e| e.to_string())?;
            let stats = t.stats().map_err(|e| e.to_string())?;
            Ok(json!({
                "entries": t.len().map_err(|e| e.to_string())?,
                "bytes": stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes(),
                "stored_bytes": stats.stored_bytes(),
                "pages": stats.leaf_pages() + stats.branch_pages(),
            }))
        };
        // `keys` and `events` must exist; the other tables are reported
        // when present (a name missing from a later layout is skipped).
        let mut out = json!({ "keys": table("keys")?, "events": table("events")? });
        for name in ["due", "dead", "done", "sources", "counts", "names", "meta"] {
            if let Ok(t) = table(name) {
                out[name] = t;
            }
        }
        Ok(out)
    };
    read().unwrap_or_else(|e| json!({ "error": e }))
}

/// A run longer than the retention window at a constant, moderate offered
/// rate: the store file must stop growing once the pruner keeps up (its
/// size sampled every second), and what a key costs once its event's
/// details are gone.
async fn steady(opts: &Options, pki: &Pki, rate: f64) -> Value {
    // Short windows, keys outliving bodies (as in production: 72h vs 24h).
    let (retention, ttl, load_secs) = if opts.smoke { (1, 4, 5) } else { (5, 10, 30) };
    let rate = if opts.smoke { rate.min(200.0) } else { rate };
    eprintln!("e2e: steady_state (offered {rate:.0}/s for {load_secs} s, retention {retention} s, idempotency.ttl {ttl} s)");
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SinkLog::default());
    let mut subs = Vec::new();
    for i in 0..3 {
        let addr = start_sink(log.clone()).await;
        subs.push((format!("sink{i}"), format!("http://{addr}/hook"), "15s"));
    }
    let retention_s = format!("{retention}s");
    let ttl_s = format!("{ttl}s");
    let setup = Setup {
        retention: Some(&retention_s),
        ttl: Some(&ttl_s),
        ..Setup::new(&subs, None)
    };
    let gateway = start_gateway(dir.path(), "steady", pki, &setup).await;
    let (empty_file, empty_used) = store_bytes(&metrics_page(&gateway).await);
    let file = gateway.store_file.clone();
    let admin = gateway.admin;
    // One sample a second: (seconds since start, file bytes as `ls` sees
    // it, the gateway's file and used bytes, keys in its cache).
    let samples = Arc::new(Mutex::new(Vec::<[f64; 5]>::new()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let samples = samples.clone();
        let sampling = sampling.clone();
        let file = file.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while sampling.load(Ordering::Relaxed) {
                tick.tick().await;
                let page = admin_get(admin, "/metrics")
                    .await
                    .map(|(_, p)| p)
                    .unwrap_or_default();
                let (mf, mu) = store_bytes(&page);
                samples.lock().unwrap().push([
                    round(t0.elapsed().as_secs_f64(), 1),
                    file_len(file.as_ref()),
                    mf,
                    mu,
                    metric(&page, "hookrelay_idempotency_keys"),
                ]);
            }
        })
    };
    let total = (rate * load_secs as f64).round() as usize;
    let load = run_load(
        pki,
        &[gateway.ingress],
        opts.proto,
        total,
        opts.concurrency,
        Some(rate),
        40,
    )
    .await;
    let load_samples = samples.lock().unwrap().len();
    let expected = load.accepted as u64 * 3;
    let delivered = log.wait_for(expected, Duration::from_secs(60)).await;
    // Past the retention (plus two pruner periods) every event's details
    // are gone while the keys of the last `ttl - wait` seconds are still
    // inside their window. A wait for time itself, not for an event: the
    // pruner's work is what is measured here.
    let prune_period = (retention as f64 / 4.0).clamp(0.1, 60.0);
    let wait = retention as f64 + 2.0 * prune_period + 0.25;
    debug_assert!(wait < ttl as f64);
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    let page = metrics_page(&gateway).await;
    let (after_file, after_used) = store_bytes(&page);
    let cache_keys = metric(&page, "hookrelay_idempotency_keys");
    let (peak, _) = rss_mib(gateway.child.id().unwrap());
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    stop(gateway).await;
    let tables = file.as_deref().map(store_tables).unwrap_or(Value::Null);
    let store_keys = tables["keys"]["entries"].as_f64().unwrap_or(f64::NAN);
    let keys_table_bytes = tables["keys"]["bytes"].as_f64().unwrap_or(f64::NAN);

    let samples = samples.lock().unwrap().clone();
    // The last half of the samples taken while the load ran.
    let during = &samples[..load_samples.min(samples.len())];
    let last_half = &during[during.len() / 2..];
    let files: Vec<f64> = last_half.iter().map(|s| s[1]).collect();
    let (min, max) = files
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let mean = files.iter().sum::<f64>() / files.len().max(1) as f64;
    let within = !files.is_empty() && min >= 0.9 * mean && max <= 1.1 * mean;
    json!({
        "scenario": "steady_state",
        "retention_s": retention,
        "idempotency_ttl_s": ttl,
        "load_s": load_secs,
        "offered_rate": rate,
        "accepted": load.accepted,
        "errors": load.errors,
        "accepted_per_s": load.rate(),
        "ingress_ms": load.ingress_ms(),
        "deliveries": delivered,
        "deliveries_expected": expected,
        "peak_rss_mib": peak,
        "empty_file_bytes": empty_file,
        "empty_used_bytes": empty_used,
        // [s since start, file bytes (ls), metric file, metric used, cache keys]
        "samples": samples,
        "last_half": {
            "samples": files.len(),
            "file_min": min,
            "file_max": max,
            "file_mean": mean.round(),
            "within_10pct": within,
        },
        // Once retention has passed after the load: no event details left,
        // the keys of the last idempotency window still held.
        "after_retention": {
            "measured_s_after_load": round(wait, 2),
            "file_bytes": after_file,
            "used_bytes": after_used,
            "cache_keys": cache_keys,
            "store_tables": tables,
            "used_bytes_per_key": round((after_used - empty_used) / store_keys, 1),
            "keys_table_bytes_per_key": round(keys_table_bytes / store_keys, 1),
        },
    })
}

// ---------------------------------------------------------------- a big store, a big cache

/// Start time and memory of the gateway on a store holding `keys` events
/// (filled through the library, muapi-like UUID task ids), next to its
/// start on an empty store. The gateway does not warm its idempotency cache
/// from the store (the store answers duplicates of keys the cache does not
/// hold), so neither figure should grow with the store.
async fn start_with_keys(pki: &Pki, keys: usize) -> Value {
    use hookrelay::store::embedded::{EmbeddedOptions, EmbeddedStore};
    use hookrelay::store::{NewEvent, Store};
    eprintln!("e2e: start_with_keys ({keys} events in the store)");
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = measure_start(pki, empty_dir.path()).await;

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
            let task = task_id(7, i);
            let key = format!("{task}\ncompleted");
            let digest = hookrelay::intake::event_digest("muapi", &key);
            let event = NewEvent {
                id: hookrelay::store::EventId(digest),
                route: route.clone(),
                received_ms: now,
                source_id: Some(task),
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
        // Ends the writer and closes the file (and its lock) cleanly.
        store.close().await;
    }
    let fill = started.elapsed();
    let full = measure_start(pki, dir.path()).await;
    let ratio = full["start_s"].as_f64().unwrap_or(f64::NAN)
        / empty["start_s"].as_f64().unwrap_or(f64::NAN);
    json!({
        "scenario": "start_with_keys",
        "keys": keys,
        "store_fill_s": round(fill.as_secs_f64(), 1),
        "empty_store": empty,
        "full_store": full,
        "start_ratio_full_vs_empty": round(ratio, 2),
    })
}

/// Starts a gateway on the embedded store in `dir` (one subscriber that is
/// never called) and reports its time to ready and its memory then.
async fn measure_start(pki: &Pki, dir: &Path) -> Value {
    let subs = [(
        "sink0".to_string(),
        "http://127.0.0.1:9/x".to_string(),
        "1s",
    )];
    let t0 = Instant::now();
    let gateway = start_gateway(dir, "start", pki, &Setup::new(&subs, None)).await;
    let ready = t0.elapsed();
    // A scrape computes the store's size gauges: on the embedded store
    // inside a write transaction, so its time is time the writer is busy.
    let t1 = Instant::now();
    let page = metrics_page(&gateway).await;
    let scrape = t1.elapsed();
    let (peak, rss) = rss_mib(gateway.child.id().unwrap());
    let (file, used) = store_bytes(&page);
    stop(gateway).await;
    json!({
        "start_s": round(ready.as_secs_f64(), 3),
        "metrics_scrape_s": round(scrape.as_secs_f64(), 3),
        "rss_mib": rss,
        "peak_rss_mib": peak,
        "keys_held": metric(&page, "hookrelay_idempotency_keys"),
        "store_file_bytes": file,
        "store_used_bytes": used,
    })
}

/// The idempotency cache's memory holding `keys` keys, measured in a child
/// process of its own (this bench binary with `--cache-probe N`) so the
/// harness's own allocations do not blur it.
fn cache_memory(keys: usize) -> Value {
    eprintln!("e2e: idempotency_cache ({keys} keys)");
    let out = std::env::current_exe().ok().and_then(|exe| {
        std::process::Command::new(exe)
            .args(["--cache-probe", &keys.to_string()])
            .output()
            .ok()
    });
    match out {
        Some(o) if o.status.success() => serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| json!({ "error": "the probe printed no JSON" })),
        Some(o) => json!({ "error": format!("the probe failed ({})", o.status) }),
        None => json!({ "error": "the probe could not run" }),
    }
}

/// The child side of [`cache_memory`]: fills a cache like the gateway's
/// (muapi keys, the gateway's digests, `idempotency.max_keys` = keys) and
/// prints its resident memory before and after.
fn cache_probe(keys: usize) {
    use hookrelay::intake::idempotency::IdempotencyCache;
    let before = rss_mib(std::process::id()).1;
    let cache = IdempotencyCache::new(72 * 3600 * 1000, keys.max(1));
    let t0 = Instant::now();
    for i in 0..keys {
        let key = format!("{}\ncompleted", task_id(9, i));
        cache.insert_committed(hookrelay::intake::event_digest("muapi", &key), 1 + i as u64);
    }
    let fill = t0.elapsed();
    let (peak, after) = rss_mib(std::process::id());
    println!(
        "{}",
        json!({
            "keys": keys,
            "held": cache.len(),
            "rss_before_mib": before,
            "rss_after_mib": after,
            "peak_rss_mib": peak,
            "cache_mib": round(after - before, 1),
            "bytes_per_key": round((after - before) * 1024.0 * 1024.0 / keys.max(1) as f64, 1),
            "fill_s": round(fill.as_secs_f64(), 2),
        })
    );
}

// ---------------------------------------------------------------- plans

fn rate_of(v: &Value) -> f64 {
    v["accepted_per_s"].as_f64().unwrap_or(f64::NAN)
}

fn ratio(a: f64, b: f64) -> f64 {
    round(a / b, 3)
}

fn find<'a>(scenarios: &'a [Value], name: &str) -> &'a Value {
    scenarios
        .iter()
        .find(|s| s["scenario"] == name)
        .unwrap_or(&Value::Null)
}

/// The default run: baselines, the embedded store's scenarios, its storage
/// figures, start time and memory.
async fn embedded_plan(opts: &Options, pki: &Pki) -> Value {
    let bare = if opts.wants("bare_hyper_rustls") {
        eprintln!("e2e: bare_hyper_rustls");
        bare(opts, pki).await
    } else {
        Value::Null
    };
    let nginx = if opts.wants("nginx_return200") || opts.wants("nginx_mirror") {
        nginx_anchor(opts, pki).await
    } else {
        Value::Null
    };
    let plan = [
        Scenario::embedded("fanout_1", 1, false),
        Scenario::embedded("fanout_3", 3, false),
        Scenario::embedded("fanout_3_plus_black_hole", 3, true),
    ];
    let mut scenarios = Vec::new();
    for (i, s) in plan.iter().enumerate() {
        if opts.wants(s.name) {
            scenarios.push(scenario(opts, pki, s, 10 + i as u64, None).await);
        }
    }
    // p99 at half of the sustained fan-out-3 rate (open loop).
    let f3_rate = rate_of(find(&scenarios, "fanout_3"));
    let half_rate = opts.half_rate(Some(f3_rate));
    if opts.wants("fanout_3_half_rate") {
        let half = Scenario::embedded("fanout_3_half_rate", 3, false);
        scenarios.push(scenario(opts, pki, &half, 20, Some(half_rate)).await);
    }
    let steady = if opts.wants("steady_state") {
        steady(opts, pki, half_rate).await
    } else {
        Value::Null
    };
    let keys = if opts.wants("start_with_keys") {
        start_with_keys(pki, opts.keys).await
    } else {
        Value::Null
    };
    let cache = if opts.wants("idempotency_cache") {
        cache_memory(opts.keys)
    } else {
        Value::Null
    };

    let f3 = find(&scenarios, "fanout_3");
    let bh = find(&scenarios, "fanout_3_plus_black_hole");
    let half_p99 = find(&scenarios, "fanout_3_half_rate")["ingress_ms"]["p99"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let healthy_ratio = bh["deliveries_per_s"].as_f64().unwrap_or(f64::NAN)
        / f3["deliveries_per_s"].as_f64().unwrap_or(f64::NAN);
    let peak = scenarios
        .iter()
        .filter_map(|s| s["peak_rss_mib"].as_f64())
        .fold(f64::NAN, f64::max);
    // Gateway RSS at start plus what the cache takes for `keys` keys: the
    // process with a full cache, without running 1M callbacks through it.
    let rss_with_keys = keys["empty_store"]["rss_mib"].as_f64().unwrap_or(f64::NAN)
        + cache["cache_mib"].as_f64().unwrap_or(f64::NAN);
    let f3_rate = rate_of(f3);
    let bare_rate = rate_of(&bare);
    let nginx_return = rate_of(&nginx["return200"]);
    let nginx_mirror = rate_of(&nginx["mirror"]);
    let target = |met: bool, inputs: f64| {
        if inputs.is_nan() {
            Value::Null
        } else {
            json!(met)
        }
    };
    json!({
        "bare": bare,
        "nginx": nginx,
        "scenarios": scenarios,
        "steady": steady,
        "start_with_keys": keys,
        "idempotency_cache": cache,
        "ratios": {
            "fanout3_vs_bare": ratio(f3_rate, bare_rate),
            "fanout3_vs_nginx_return200": ratio(f3_rate, nginx_return),
            "fanout3_vs_nginx_mirror": ratio(f3_rate, nginx_mirror),
            "nginx_mirror_vs_bare": ratio(nginx_mirror, bare_rate),
        },
        "store_bytes_per_callback_fanout3": f3["store_bytes"],
        "healthy_delivery_ratio_with_black_hole": round(healthy_ratio, 3),
        "rss_with_keys_mib_estimate": round(rss_with_keys, 1),
        "targets": {
            "fanout3_ge_50pct_of_bare": target(f3_rate >= 0.5 * bare_rate, f3_rate + bare_rate),
            "p99_at_half_rate_le_10ms": target(half_p99 <= 10.0, half_p99),
            "black_hole_healthy_within_10pct": target(healthy_ratio >= 0.9, healthy_ratio),
            "rss_under_load_le_64mib": target(peak <= 64.0, peak),
            "rss_with_keys_le_256mib": target(rss_with_keys <= 256.0, rss_with_keys),
            "steady_file_within_10pct": steady["last_half"]["within_10pct"].clone(),
        },
    })
}

/// `--store postgres`: fan-out 3 on the embedded store and on PostgreSQL in
/// the same run, PostgreSQL at half its rate, and two replicas on one
/// schema against one.
async fn postgres_plan(opts: &Options, pki: &Pki) -> Value {
    // Fail early and clearly when there is no server.
    if let Err(e) = pg_connect(&pg_url()).await {
        eprintln!("e2e: --store postgres: {e}");
        std::process::exit(1);
    }
    let mut scenarios = Vec::new();
    let embedded = Scenario::embedded("fanout_3_embedded", 3, false);
    if opts.wants(embedded.name) {
        scenarios.push(scenario(opts, pki, &embedded, 50, None).await);
    }
    let one = Scenario::postgres("fanout_3_postgres", 1);
    if opts.wants(one.name) {
        scenarios.push(scenario(opts, pki, &one, 51, None).await);
    }
    let pg_rate = rate_of(find(&scenarios, "fanout_3_postgres"));
    let half = Scenario::postgres("fanout_3_postgres_half_rate", 1);
    if opts.wants(half.name) {
        let rate = opts.half_rate(Some(pg_rate));
        scenarios.push(scenario(opts, pki, &half, 52, Some(rate)).await);
    }
    let two = Scenario::postgres("fanout_3_postgres_2_replicas", 2);
    if opts.wants(two.name) {
        scenarios.push(scenario(opts, pki, &two, 53, None).await);
    }
    // More pairs of one replica and two, the order alternating (two first
    // in the second pair, one first in the third...), so that a drift of
    // the machine's footing during the run weighs on both sides.
    let mut pair_ratios = vec![ratio(
        rate_of(find(&scenarios, "fanout_3_postgres_2_replicas")),
        rate_of(find(&scenarios, "fanout_3_postgres")),
    )];
    let mut pairs = Vec::new();
    if opts.wants(one.name) && opts.wants(two.name) {
        for i in 1..opts.pairs {
            let mut rates = [0.0; 2];
            let order: [(usize, &Scenario); 2] = if i % 2 == 1 {
                [(1, &two), (0, &one)]
            } else {
                [(0, &one), (1, &two)]
            };
            for (slot, s) in order {
                let run = 60 + 2 * i as u64 + slot as u64;
                let result = scenario(opts, pki, s, run, None).await;
                rates[slot] = rate_of(&result);
                pairs.push(json!({
                    "pair": i,
                    "scenario": s.name,
                    "accepted_per_s": result["accepted_per_s"],
                    "ingress_ms": result["ingress_ms"],
                    "gateway_cpu_ms_per_callback": result["gateway_cpu_ms_per_callback"],
                    "mean_batch": result["mean_batch"],
                }));
            }
            pair_ratios.push(ratio(rates[1], rates[0]));
        }
    }
    let median_ratio = {
        let mut r: Vec<f64> = pair_ratios
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        r.sort_by(f64::total_cmp);
        match r.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => r[n / 2],
            n => round((r[n / 2 - 1] + r[n / 2]) / 2.0, 3),
        }
    };
    let emb_rate = rate_of(find(&scenarios, "fanout_3_embedded"));
    let two_rate = rate_of(find(&scenarios, "fanout_3_postgres_2_replicas"));
    let half_p99 = find(&scenarios, "fanout_3_postgres_half_rate")["ingress_ms"]["p99"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let target = |met: bool, inputs: f64| {
        if inputs.is_nan() {
            Value::Null
        } else {
            json!(met)
        }
    };
    json!({
        "database": pg_source(),
        "pool_size": 16,
        "scenarios": scenarios,
        "pairs": pairs,
        "ratios": {
            "postgres_vs_embedded": ratio(pg_rate, emb_rate),
            "two_replicas_vs_one": ratio(two_rate, pg_rate),
            "two_replicas_vs_one_pairs": pair_ratios,
            "two_replicas_vs_one_median": median_ratio,
        },
        "targets": {
            "postgres_fanout3_ge_50pct_of_embedded": target(pg_rate >= 0.5 * emb_rate, pg_rate + emb_rate),
            "postgres_p99_at_half_rate_le_20ms": target(half_p99 <= 20.0, half_p99),
            "two_replicas_ge_one": target(median_ratio >= 1.0, median_ratio),
        },
    })
}

// ---------------------------------------------------------------- report

/// The readable summary (stderr), from the JSON result.
fn summary(r: &Value) -> String {
    let mut out = String::new();
    let f = |v: &Value| match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x}"),
        None => "–".into(),
    };
    let mib = |v: &Value| {
        v.as_f64()
            .map_or("–".into(), |b| format!("{:.1} MiB", b / 1048576.0))
    };
    let line = |out: &mut String, name: &str, v: &Value| {
        out.push_str(&format!(
            "  {name:<30} {:>8}/s  ingress p50/p99/p99.9 {}/{}/{} ms",
            f(&v["accepted_per_s"]),
            f(&v["ingress_ms"]["p50"]),
            f(&v["ingress_ms"]["p99"]),
            f(&v["ingress_ms"]["p999"]),
        ));
        if !v["deliveries"].is_null() {
            out.push_str(&format!(
                "  deliveries {}/{}",
                f(&v["deliveries"]),
                f(&v["deliveries_expected"])
            ));
        }
        if !v["e2e_ms"].is_null() {
            out.push_str(&format!(
                "  e2e p50/p99 {}/{} ms  peak RSS {} MiB  {} B/callback (file), {} B (used)",
                f(&v["e2e_ms"]["p50"]),
                f(&v["e2e_ms"]["p99"]),
                f(&v["peak_rss_mib"]),
                f(&v["store_bytes"]["file_per_callback"]),
                f(&v["store_bytes"]["used_per_callback"]),
            ));
        }
        out.push('\n');
    };
    out.push_str(&format!(
        "hookrelay e2e ({}, {}, {} connections, {} cores{})\n",
        r["store"].as_str().unwrap_or(""),
        r["proto"].as_str().unwrap_or(""),
        f(&r["concurrency"]),
        f(&r["cores"]),
        if r["smoke"] == true { ", smoke" } else { "" },
    ));
    if !r["bare"].is_null() {
        line(&mut out, "bare hyper + rustls", &r["bare"]);
    }
    match &r["nginx"] {
        Value::Null => {}
        n if !n["skipped"].is_null() => {
            out.push_str("  nginx not installed; skipping the anchor\n")
        }
        n => {
            if !n["return200"].is_null() {
                line(&mut out, "nginx return 200", &n["return200"]);
            }
            if !n["mirror"].is_null() {
                line(&mut out, "nginx proxy + 2 mirrors", &n["mirror"]);
            }
        }
    }
    for s in r["scenarios"].as_array().into_iter().flatten() {
        line(&mut out, s["scenario"].as_str().unwrap_or("?"), s);
    }
    if let Some(ratios) = r["ratios"].as_object() {
        let list: Vec<String> = ratios
            .iter()
            .map(|(k, v)| match v.as_array() {
                Some(all) => format!("{k} [{}]", all.iter().map(&f).collect::<Vec<_>>().join(" ")),
                None => format!("{k} {}", f(v)),
            })
            .collect();
        out.push_str(&format!("  ratios: {}\n", list.join(", ")));
    }
    let s = &r["steady"];
    if !s.is_null() {
        out.push_str(&format!(
            "  steady state ({} s at {}/s, retention {} s, ttl {} s): file over the last half {} .. {} (within ±10 %: {}); after retention: {} B used per key held ({} keys, {} events in the store; keys table {} B/key)\n",
            f(&s["load_s"]),
            f(&s["offered_rate"]),
            f(&s["retention_s"]),
            f(&s["idempotency_ttl_s"]),
            mib(&s["last_half"]["file_min"]),
            mib(&s["last_half"]["file_max"]),
            s["last_half"]["within_10pct"],
            f(&s["after_retention"]["used_bytes_per_key"]),
            f(&s["after_retention"]["store_tables"]["keys"]["entries"]),
            f(&s["after_retention"]["store_tables"]["events"]["entries"]),
            f(&s["after_retention"]["keys_table_bytes_per_key"]),
        ));
    }
    let k = &r["start_with_keys"];
    if !k.is_null() {
        out.push_str(&format!(
            "  start: {} s on an empty store, {} s with {} events (RSS {} / {} MiB)\n",
            f(&k["empty_store"]["start_s"]),
            f(&k["full_store"]["start_s"]),
            f(&k["keys"]),
            f(&k["empty_store"]["rss_mib"]),
            f(&k["full_store"]["rss_mib"]),
        ));
    }
    let c = &r["idempotency_cache"];
    if !c.is_null() {
        out.push_str(&format!(
            "  idempotency cache: {} keys take {} MiB ({} B/key); gateway with them ≈ {} MiB\n",
            f(&c["keys"]),
            f(&c["cache_mib"]),
            f(&c["bytes_per_key"]),
            f(&r["rss_with_keys_mib_estimate"]),
        ));
    }
    if let Some(targets) = r["targets"].as_object() {
        let list: Vec<String> = targets
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}: {}",
                    if v.is_null() {
                        "–".into()
                    } else {
                        v.to_string()
                    }
                )
            })
            .collect();
        out.push_str(&format!("  targets: {}\n", list.join(", ")));
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--cache-probe") {
        let keys = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(0);
        cache_probe(keys);
        return;
    }
    let opts = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut result = runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        match opts.store {
            StoreKind::Embedded => embedded_plan(&opts, &pki).await,
            StoreKind::Postgres => postgres_plan(&opts, &pki).await,
        }
    });
    let head = json!({
        "harness": "hookrelay e2e",
        "smoke": opts.smoke,
        "store": opts.store.name(),
        "only": opts.only,
        "proto": format!("{:?}", opts.proto),
        "concurrency": opts.concurrency,
        "callbacks": opts.callbacks,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "wall_s": round(started.elapsed().as_secs_f64(), 1),
    });
    if let (Value::Object(result), Value::Object(head)) = (&mut result, head) {
        for (k, v) in head {
            result.insert(k, v);
        }
    }
    println!("{result}");
    eprint!("{}", summary(&result));
    // Every accepted callback reached every healthy sink, in every scenario
    // of ours that ran (the nginx anchor is reported, not judged).
    let runs = result["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(Some(&result["steady"]).filter(|s| !s.is_null()));
    let mut ok = true;
    for s in runs {
        if s["accepted"].as_u64().unwrap_or(0) == 0 || s["deliveries"] != s["deliveries_expected"] {
            eprintln!(
                "e2e: {} accepted {} and delivered {} of {}",
                s["scenario"], s["accepted"], s["deliveries"], s["deliveries_expected"]
            );
            ok = false;
        }
    }
    let mirror = &result["nginx"]["mirror"];
    if !mirror.is_null() && mirror["deliveries"] != mirror["deliveries_expected"] {
        eprintln!(
            "e2e: note: nginx mirror delivered {} of {} (reported, not judged)",
            mirror["deliveries"], mirror["deliveries_expected"]
        );
    }
    if !ok {
        eprintln!("e2e: some scenario accepted nothing or lost deliveries");
        std::process::exit(1);
    }
}
