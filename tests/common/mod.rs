//! Shared test fixtures: a test PKI (rcgen), the gateway started in-process
//! on 127.0.0.1:0, TLS clients that trust the test CA, and real HTTP sinks
//! that record what they receive and answer as a script says.
#![allow(dead_code)]

pub mod muapi;
pub mod pg;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use hookrelay::{Config, Gateway};

/// Polls `check` until it is true or `limit` passes (never a bare sleep as
/// synchronisation: the condition is what we wait for).
pub async fn eventually<F: FnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A test certificate authority and a server certificate it signed.
pub struct Pki {
    /// CA certificate (what clients trust).
    pub ca_der: CertificateDer<'static>,
    /// CA certificate as PEM (for `ca_file`).
    pub ca_pem: String,
    /// Server certificate chain as PEM.
    pub cert_pem: String,
    /// Server key as PEM.
    pub key_pem: String,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    /// A fresh CA and a certificate for localhost and 127.0.0.1.
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hookrelay test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let (cert_pem, key_pem) = Self::leaf(&ca_cert, &ca_key);
        Self {
            ca_der: ca_cert.der().clone(),
            ca_pem: ca_cert.pem(),
            cert_pem,
            key_pem,
            ca_cert,
            ca_key,
        }
    }

    fn leaf(ca_cert: &rcgen::Certificate, ca_key: &rcgen::KeyPair) -> (String, String) {
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca_cert, ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the server cert and key into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    /// A rustls client config trusting only this CA, with the given ALPN.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A server config for a test HTTPS sink.
    pub fn server_config(&self) -> rustls::ServerConfig {
        use rustls_pki_types::pem::PemObject;
        let chain = vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
    }
}

/// An HTTP response from the gateway, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    pub version: http::Version,
}

/// Which protocol a test client speaks.
#[derive(Clone, Copy, Debug)]
pub enum Proto {
    Http1,
    Http2,
}

/// A client for the gateway's ingress.
#[derive(Clone)]
pub struct TestClient {
    client: Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    base: String,
}

impl TestClient {
    /// TLS client trusting `pki`'s CA, speaking `proto` only.
    pub fn tls(pki: &Pki, addr: SocketAddr, proto: Proto) -> Self {
        // hyper-rustls sets ALPN itself from the enabled protocols.
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(pki.client_config(&[]))
            .https_only();
        let connector = match proto {
            Proto::Http1 => builder.enable_http1().build(),
            Proto::Http2 => builder.enable_http2().build(),
        };
        let mut client = Client::builder(TokioExecutor::new());
        if matches!(proto, Proto::Http2) {
            client.http2_only(true);
        }
        Self {
            client: client.build(connector),
            base: format!("https://localhost:{}", addr.port()),
        }
    }

    /// Plain-HTTP client (for a gateway without TLS).
    pub fn plain(addr: SocketAddr) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: format!("http://{addr}"),
        }
    }

    /// Sends a request built from `method`, `path_and_query`, headers and body.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        self.try_send(method, path_and_query, headers, body)
            .await
            .expect("request reaches the gateway")
    }

    /// Like [`TestClient::send`], but a transport error is returned.
    pub async fn try_send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Answer, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path_and_query));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self
            .client
            .request(request.body(Full::new(body.into())).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let version = response.version();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(Answer {
            status,
            headers,
            body,
            version,
        })
    }

    /// GETs `path` (with a bearer `token`, if any) until `done` holds for
    /// the JSON answer; panics after `limit`, saying what was awaited.
    pub async fn get_until(
        &self,
        path: &str,
        token: Option<&str>,
        limit: Duration,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let deadline = Instant::now() + limit;
        loop {
            let answer = self.send("GET", path, &headers, "").await;
            if done(&answer.body) {
                return answer.body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; last answer: {}",
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// GETs a path and returns the raw body bytes.
    pub async fn send_raw(&self, method: &str, path: &str) -> Vec<u8> {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self
            .client
            .request(request)
            .await
            .expect("request reaches the gateway");
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    /// POSTs with a bearer token; a transport error is returned.
    pub async fn try_post(&self, path: &str, token: &str, body: &str) -> Result<Answer, String> {
        let auth = format!("Bearer {token}");
        self.try_send(
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await
    }

    /// POSTs a JSON body with a bearer token.
    pub async fn post(&self, path: &str, token: &str, body: &str) -> Answer {
        let auth = format!("Bearer {token}");
        self.send(
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await
    }
}

/// A muapi callback body as the seed page shows it.
pub fn muapi_body(id: &str, status: &str) -> String {
    serde_json::json!({
        "id": id,
        "outputs": if status == "completed" { serde_json::json!([format!("https://cdn.example/{id}.png")]) } else { serde_json::json!([]) },
        "urls": {"get": format!("https://api.muapi.ai/api/v1/predictions/{id}/result")},
        "has_nsfw_contents": [false],
        "status": status,
        "created_at": "2026-11-27T00:00:00.000Z",
        "error": if status == "failed" { serde_json::json!("out of memory") } else { serde_json::Value::Null },
        "executionTime": 1234,
        "timings": {"inference": 1.2}
    })
    .to_string()
}

/// What a sink answers to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status, with these headers.
    Status(u16, Vec<(&'static str, String)>),
    /// Never answer (the connection stays open).
    Hang,
    /// This status after this long.
    Delay(u16, Duration),
}

/// A request a sink received.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

struct SinkInner {
    received: Mutex<Vec<Received>>,
    /// (webhook-id, start, end) of every request; the end is set when the
    /// answer is sent or the client goes away.
    intervals: Mutex<Vec<(String, Instant, Option<Instant>)>>,
    /// Requests being answered now, and the most at once since the last reset.
    open: Mutex<(usize, usize)>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    notify: Notify,
}

/// A real HTTP server that records requests and answers per its script.
#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    inner: Arc<SinkInner>,
}

impl Sink {
    /// A plain-HTTP sink answering 200 unless scripted otherwise.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A sink, over TLS when `tls` is given.
    pub async fn start_with(tls: Option<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(SinkInner {
            received: Mutex::new(Vec::new()),
            intervals: Mutex::new(Vec::new()),
            open: Mutex::new((0, 0)),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::Status(200, vec![])),
            notify: Notify::new(),
        });
        let acceptor = tls.map(|mut c| {
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(c))
        });
        let state = inner.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(sink_answer(state, req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self { addr, inner }
    }

    /// The next answers, in order; then the default.
    pub fn script(&self, replies: Vec<Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    /// The answer once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        *self.inner.default.lock().unwrap() = reply;
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// When each request (by `webhook-id`) started and ended.
    pub fn intervals(&self) -> Vec<(String, Instant, Option<Instant>)> {
        self.inner.intervals.lock().unwrap().clone()
    }

    /// Requests being answered right now.
    pub fn open_now(&self) -> usize {
        self.inner.open.lock().unwrap().0
    }

    /// The most requests open at once since the last [`Sink::reset_peak`].
    pub fn peak(&self) -> usize {
        self.inner.open.lock().unwrap().1
    }

    /// Starts a new peak measurement from the requests open now.
    pub fn reset_peak(&self) {
        let mut open = self.inner.open.lock().unwrap();
        open.1 = open.0;
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.inner.received.lock().unwrap().len()
    }

    /// URL for a path on this sink.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.inner.notify.notified();
            if self.count() >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "sink {} got {} requests, expected {n} within {limit:?}",
                    self.addr,
                    self.count()
                );
            }
        }
    }
}

/// Counts a request as open while it lives (also when the client gives up).
struct OpenRequest(Arc<SinkInner>, usize);

impl OpenRequest {
    fn start(state: Arc<SinkInner>, id: String) -> Self {
        let mut open = state.open.lock().unwrap();
        open.0 += 1;
        open.1 = open.1.max(open.0);
        drop(open);
        let mut intervals = state.intervals.lock().unwrap();
        intervals.push((id, Instant::now(), None));
        let index = intervals.len() - 1;
        drop(intervals);
        OpenRequest(state, index)
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.open.lock().unwrap().0 -= 1;
        self.0.intervals.lock().unwrap()[self.1].2 = Some(Instant::now());
    }
}

async fn sink_answer(state: Arc<SinkInner>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let id = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let _open = OpenRequest::start(state.clone(), id);
    let at = Instant::now();
    let version = req.version();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.default.lock().unwrap().clone());
    state.received.lock().unwrap().push(Received {
        at,
        version,
        headers,
        body,
    });
    state.notify.notify_waiters();
    match reply {
        Reply::Status(code, headers) => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
            *response.status_mut() = StatusCode::from_u16(code).unwrap();
            for (k, v) in headers {
                response.headers_mut().insert(k, v.parse().unwrap());
            }
            response
        }
        Reply::Hang => std::future::pending().await,
        Reply::Delay(code, wait) => {
            tokio::time::sleep(wait).await;
            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
            *response.status_mut() = StatusCode::from_u16(code).unwrap();
            response
        }
    }
}

/// A TCP server that accepts connections and never answers.
pub async fn black_hole() -> SocketAddr {
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

/// A gateway started in-process from YAML, with its temp dir.
pub struct TestGateway {
    pub gateway: Gateway,
    pub dir: tempfile::TempDir,
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
    /// The TLS block `{tls}` was filled with at start (empty without TLS),
    /// so a reload fills it the same way.
    tls: String,
}

/// The ingress TLS block for `pki`, written into `dir`.
pub fn tls_block(pki: &Pki, dir: &Path) -> String {
    let (cert, key) = pki.write(dir);
    format!(
        "  tls:\n    cert: {}\n    key: {}\n",
        cert.display(),
        key.display()
    )
}

impl TestGateway {
    /// Starts a gateway; `yaml` may use `{store}` and `{tls}` placeholders.
    pub async fn start(yaml: &str, pki: Option<&Pki>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tls = pki.map(|p| tls_block(p, dir.path())).unwrap_or_default();
        let config =
            Config::from_yaml(&fill(yaml, &dir, &tls), &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::start(config).await.expect("gateway starts");
        Self {
            ingress: gateway.ingress_addr,
            admin: gateway.admin_addr,
            gateway,
            dir,
            tls,
        }
    }

    /// Reloads the running gateway with `yaml`, its `{store}` and `{tls}`
    /// placeholders filled as at start (the in-process equivalent of
    /// SIGHUP with a changed file).
    pub async fn reload(&self, yaml: &str) {
        let config = Config::from_yaml(&fill(yaml, &self.dir, &self.tls), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        self.gateway.reload(config).await.expect("reload accepted");
    }
}

/// A test config with its `{store}` and `{tls}` placeholders filled.
fn fill(yaml: &str, dir: &tempfile::TempDir, tls: &str) -> String {
    yaml.replace("{store}", &dir.path().join("data").display().to_string())
        .replace("{tls}\n", tls)
}

/// Verifies a Standard Webhooks signature independently of hookrelay's
/// own signing code: HMAC-SHA256 over `id.timestamp.body`, base64.
pub fn expected_signature(secret_b64: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret_b64)
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// A raw TLS connection to `addr` trusting `pki`, offering only `alpn`.
pub async fn tls_connect(
    pki: &Pki,
    addr: SocketAddr,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki.client_config(&[alpn])));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector.connect(localhost(), tcp).await.unwrap()
}

/// One HTTP/2 connection (not pooled): its sender and its driver task,
/// which ends when the connection closes.
pub async fn h2_connection(
    pki: &Pki,
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tls = tls_connect(pki, addr, b"h2").await;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    (sender, tokio::spawn(connection))
}

/// A muapi callback POST for a raw connection.
pub fn muapi_request(addr: SocketAddr, token: &str, id: &str) -> Request<Full<Bytes>> {
    Request::post(format!("https://localhost:{}/hooks/muapi", addr.port()))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(muapi_body(id, "completed"))))
        .unwrap()
}

/// Reads a raw HTTP answer until `until` appears in it, or the peer
/// closes, bounded by a deadline.
pub async fn read_answer<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, until: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&answer).contains(until) {
        assert!(Instant::now() < deadline, "no answer in time");
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).to_string()
}

/// A server name for raw TLS connections in tests.
pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// The built binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_hookrelay");

/// A running `hookrelay run` child, its bound addresses and its log lines.
pub struct Running {
    pub child: tokio::process::Child,
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
    /// Every stderr line so far (JSON logs).
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Sends a signal (`-TERM`, `-HUP`, …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("child running").to_string();
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// All log lines joined.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

/// Starts `hookrelay run --config FILE` (JSON logs expected) and waits for
/// its "hookrelay listening" line.
pub async fn spawn(config: &Path) -> Running {
    let mut command = tokio::process::Command::new(BIN);
    command.args(["run", "--config"]).arg(config);
    spawn_command(command).await
}

/// Starts a prepared command that execs `hookrelay run` (JSON logs).
pub async fn spawn_command(mut command: tokio::process::Command) -> Running {
    use tokio::io::AsyncBufReadExt;
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            logs.lock().unwrap().push(line.clone());
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "hookrelay listening" {
                let addr = |k: &str| v["fields"][k].as_str().unwrap().parse().unwrap();
                return Some((addr("ingress"), addr("admin")));
            }
        }
        None
    })
    .await
    .expect("the gateway reports its addresses in time")
    .expect("the gateway exited before listening");
    // Keep draining stderr so the child never blocks on a full pipe.
    let sink = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    Running {
        child,
        ingress: found.0,
        admin: found.1,
        logs,
    }
}
