//! Ingress contract: TLS over HTTP/1.1 and HTTP/2, every row of DESIGN.md's
//! answer table, header read timeout, and inbound Standard Webhooks checks.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "muapi-test-token";

fn config(sink: &Sink, extra_route: &str) -> String {
    format!(
        r#"
server:
  listen: "127.0.0.1:0"
{{tls}}
  max_body_bytes: 1024
  header_read_timeout: 500ms
admin:
  listen: "127.0.0.1:0"
store:
  path: "{{store}}"
shutdown_grace: 2s
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth:
      tokens: ["old-token", "{TOKEN}"]
    subscribers:
      - name: app
        url: {url}
  - name: office
    path: /hooks/office
    source: muapi
    auth:
      tokens: ["{TOKEN}"]
      allow_ips: ["203.0.113.0/24"]
    subscribers:
      - name: app
        url: {url}
{extra_route}"#,
        url = sink.url("/hook")
    )
}

#[tokio::test]
async fn tls_http1_and_http2_accept_then_duplicate() {
    let pki = Pki::new();
    let sink = Sink::start().await;
    let gw = TestGateway::start(&config(&sink, ""), Some(&pki)).await;
    for (proto, id) in [(Proto::Http1, "task-h1"), (Proto::Http2, "task-h2")] {
        let client = TestClient::tls(&pki, gw.ingress, proto);
        let body = muapi_body(id, "completed");
        let first = client.post("/hooks/muapi", TOKEN, &body).await;
        assert_eq!(first.status, StatusCode::OK, "{proto:?}: {:?}", first.body);
        let expected_version = match proto {
            Proto::Http1 => http::Version::HTTP_11,
            Proto::Http2 => http::Version::HTTP_2,
        };
        assert_eq!(first.version, expected_version);
        assert_eq!(first.body["status"], "accepted");
        let event_id = first.body["event_id"].as_str().unwrap().to_string();
        assert!(!event_id.contains('.'));
        let again = client.post("/hooks/muapi", TOKEN, &body).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.body["status"], "duplicate");
        assert_eq!(again.body["event_id"], event_id.as_str());
        // The failed callback of the same task is another event.
        let failed = client
            .post("/hooks/muapi", TOKEN, &muapi_body(id, "failed"))
            .await;
        assert_eq!(failed.body["status"], "accepted");
        assert_ne!(failed.body["event_id"], event_id.as_str());
    }
    sink.wait_for(4, Duration::from_secs(10)).await;
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn query_token_and_rotation_are_accepted() {
    let sink = Sink::start().await;
    let gw = TestGateway::start(&config(&sink, ""), None).await;
    let client = TestClient::plain(gw.ingress);
    let body = muapi_body("task-q", "completed");
    let by_query = client
        .send(
            "POST",
            &format!("/hooks/muapi?token={TOKEN}"),
            &[],
            body.clone(),
        )
        .await;
    assert_eq!(by_query.status, StatusCode::OK);
    let old = client
        .post(
            "/hooks/muapi",
            "old-token",
            &muapi_body("task-r", "completed"),
        )
        .await;
    assert_eq!(old.status, StatusCode::OK);
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn ids_no_store_can_keep_are_refused_by_name() {
    let pki = Pki::new();
    let sink = Sink::start().await;
    let yaml = config(&sink, "").replace("max_body_bytes: 1024", "max_body_bytes: 4096");
    let gw = TestGateway::start(&yaml, Some(&pki)).await;
    let client = TestClient::tls(&pki, gw.ingress, Proto::Http1);
    // Ids no store could keep: too long (PostgreSQL cannot index it), or
    // with a NUL (PostgreSQL cannot hold it as text). Named, never quoted.
    let long_id = client
        .post(
            "/hooks/muapi",
            TOKEN,
            &format!(r#"{{"id":"{}","status":"completed"}}"#, "x".repeat(1100)),
        )
        .await;
    assert_eq!(long_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        long_id.body["error"],
        "required field `id` is longer than 1024 bytes"
    );
    let nul_id = client
        .post(
            "/hooks/muapi",
            TOKEN,
            r#"{"id":"secret\u0000id","status":"completed"}"#,
        )
        .await;
    assert_eq!(nul_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        nul_id.body["error"],
        "required field `id` contains a control character"
    );

    // The longest accepted id is stored and delivered.
    let longest = "é".repeat(512);
    let ok = client
        .post(
            "/hooks/muapi",
            TOKEN,
            &format!(r#"{{"id":"{longest}","status":"completed"}}"#),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(sink.count(), 1);
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn every_error_row_of_the_contract() {
    let pki = Pki::new();
    let sink = Sink::start().await;
    let gw = TestGateway::start(&config(&sink, ""), Some(&pki)).await;
    let client = TestClient::tls(&pki, gw.ingress, Proto::Http1);

    let bad_json = client.post("/hooks/muapi", TOKEN, "{not json").await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    assert!(bad_json.body["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));

    let missing_id = client
        .post("/hooks/muapi", TOKEN, r#"{"status":"completed"}"#)
        .await;
    assert_eq!(missing_id.status, StatusCode::BAD_REQUEST);
    assert!(missing_id.body["error"].as_str().unwrap().contains("`id`"));

    let no_token = client
        .send("POST", "/hooks/muapi", &[], muapi_body("t", "completed"))
        .await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    assert_eq!(no_token.body["error"], "unauthorized");

    let wrong_token = client
        .post("/hooks/muapi", "nope", &muapi_body("t", "completed"))
        .await;
    assert_eq!(wrong_token.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_token.body["error"], "unauthorized");

    let forbidden = client
        .post("/hooks/office", TOKEN, &muapi_body("t", "completed"))
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert!(forbidden.body["error"].is_string());

    let not_found = client
        .post("/hooks/nothing", TOKEN, &muapi_body("t", "completed"))
        .await;
    assert_eq!(not_found.status, StatusCode::NOT_FOUND);
    assert!(not_found.body["error"].is_string());

    let get = client.send("GET", "/hooks/muapi", &[], "").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.headers["allow"], "POST");
    assert!(get.body["error"].is_string());

    // No body was stored for any of these.
    assert_eq!(sink.count(), 0);
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn oversized_chunked_body_gets_413_before_it_is_all_sent() {
    let pki = Pki::new();
    let sink = Sink::start().await;
    let gw = TestGateway::start(&config(&sink, ""), Some(&pki)).await;
    // A raw HTTP/1.1 request with chunked encoding and no Content-Length:
    // the limit must be enforced while reading.
    let mut tls = tls_connect(&pki, gw.ingress, b"http/1.1").await;
    let head = format!(
        "POST /hooks/muapi HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 600, "x".repeat(600));
    // Two chunks exceed the 1024-byte limit; the rest is never sent.
    tls.write_all(chunk.as_bytes()).await.unwrap();
    tls.write_all(chunk.as_bytes()).await.unwrap();
    let text = read_answer(&mut tls, "\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 413"), "got: {text}");
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn declared_oversized_body_gets_413() {
    let sink = Sink::start().await;
    let gw = TestGateway::start(&config(&sink, ""), None).await;
    let client = TestClient::plain(gw.ingress);
    let big = format!(
        r#"{{"id":"t","status":"completed","pad":"{}"}}"#,
        "x".repeat(2000)
    );
    let answer = client.post("/hooks/muapi", TOKEN, &big).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.body["error"].as_str().unwrap().contains("1024"));
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn trickled_header_is_cut_off_after_header_read_timeout() {
    let sink = Sink::start().await;
    let gw = TestGateway::start(&config(&sink, ""), None).await;
    let mut stream = tokio::net::TcpStream::connect(gw.ingress).await.unwrap();
    let started = Instant::now();
    stream.write_all(b"POST /hooks/mu").await.unwrap();
    let mut buf = [0u8; 256];
    // The gateway closes the connection; we only bound the wait.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the gateway must close a connection that trickles its header");
    let elapsed = started.elapsed();
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            // hyper may answer 408 before closing; then the next read is EOF.
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(text.starts_with("HTTP/1.1 408"), "unexpected answer {text}");
        }
    }
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed too early: {elapsed:?}"
    );
    println!("half header cut off after {elapsed:?} (header_read_timeout 500ms)");
    // A TLS client that never finishes its handshake is cut off too.
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn stalled_tls_handshake_is_cut_off() {
    let pki = Pki::new();
    let sink = Sink::start().await;
    let gw = TestGateway::start(&config(&sink, ""), Some(&pki)).await;
    let mut stream = tokio::net::TcpStream::connect(gw.ingress).await.unwrap();
    stream.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("a stalled handshake must be cut off");
    assert!(matches!(read, Ok(0) | Err(_)));
    // And the gateway still serves others.
    let client = TestClient::tls(&pki, gw.ingress, Proto::Http1);
    let ok = client
        .post(
            "/hooks/muapi",
            TOKEN,
            &muapi_body("after-bad-handshake", "completed"),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn generic_route_verifies_standard_webhooks_signatures() {
    use base64::Engine;
    let secret_b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let sink = Sink::start().await;
    let route = format!(
        r#"  - name: generic
    path: /hooks/generic
    source: generic
    auth:
      standard_webhooks_secret: "whsec_{secret_b64}"
    subscribers:
      - name: app
        url: {}
"#,
        sink.url("/g")
    );
    let gw = TestGateway::start(&config(&sink, &route), None).await;
    let client = TestClient::plain(gw.ingress);
    let body = r#"{"type":"invoice.paid","data":{"id":1}}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let signature = expected_signature(&secret_b64, "msg_1", &now, body.as_bytes());
    let headers = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", now.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let ok = client.send("POST", "/hooks/generic", &headers, body).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_eq!(ok.body["status"], "accepted");
    let dup = client.send("POST", "/hooks/generic", &headers, body).await;
    assert_eq!(dup.body["status"], "duplicate");

    let tampered = client
        .send(
            "POST",
            "/hooks/generic",
            &headers,
            r#"{"type":"invoice.paid","data":{"id":2}}"#,
        )
        .await;
    assert_eq!(tampered.status, StatusCode::UNAUTHORIZED);
    let old = "1000000000";
    let stale_sig = expected_signature(&secret_b64, "msg_2", old, body.as_bytes());
    let stale = client
        .send(
            "POST",
            "/hooks/generic",
            &[
                ("webhook-id", "msg_2"),
                ("webhook-timestamp", old),
                ("webhook-signature", stale_sig.as_str()),
            ],
            body,
        )
        .await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    let unsigned = client.send("POST", "/hooks/generic", &[], body).await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_for_a_slot() {
    let sink = Sink::start().await;
    let yaml = config(&sink, "").replace(
        "header_read_timeout: 500ms",
        "header_read_timeout: 30s\n  max_connections: 2",
    );
    let gw = TestGateway::start(&yaml, None).await;
    // Two idle connections take both slots.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(gw.ingress).await.unwrap());
    }
    // A third client is accepted by the kernel but not served yet.
    let client = TestClient::plain(gw.ingress);
    let mut waiting = tokio::spawn(async move {
        client
            .post("/hooks/muapi", TOKEN, &muapi_body("slot-1", "completed"))
            .await
    });
    // A bounded negative check: no answer while both slots are taken.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
    assert!(early.is_err(), "served beyond max_connections");
    // A slot frees up: the waiting request is served, nothing crashed.
    drop(idle.pop());
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_idle_timeout() {
    let pki = Pki::new();
    let sink = Sink::start().await;
    let yaml = config(&sink, "").replace(
        "header_read_timeout: 500ms",
        "header_read_timeout: 5s\n  idle_timeout: 500ms",
    );
    let gw = TestGateway::start(&yaml, Some(&pki)).await;
    let (mut sender, driver) = h2_connection(&pki, gw.ingress).await;
    let response = sender
        .send_request(muapi_request(gw.ingress, TOKEN, "idle-h2"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    let started = Instant::now();
    // The gateway closes the idle connection: the client's driver ends.
    tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("an idle HTTP/2 connection must be closed")
        .unwrap()
        .ok();
    let idle = started.elapsed();
    println!("idle HTTP/2 connection closed after {idle:?} (idle_timeout 500ms)");
    assert!(
        idle >= Duration::from_millis(400),
        "closed too early: {idle:?}"
    );
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn a_busy_http2_connection_outlives_the_first_request_deadline() {
    let pki = Pki::new();
    let sink = Sink::start().await;
    // header_read_timeout 500ms bounds only the first request head; an
    // HTTP/2 connection in use stays open past it.
    let gw = TestGateway::start(&config(&sink, ""), Some(&pki)).await;
    let (mut sender, _driver) = h2_connection(&pki, gw.ingress).await;
    let started = Instant::now();
    for i in 0..4 {
        let request = muapi_request(gw.ingress, TOKEN, &format!("long-h2-{i}"));
        let response = sender
            .send_request(request)
            .await
            .expect("the connection is still open");
        assert_eq!(response.status(), StatusCode::OK);
        // Time passing is the subject here: 4 × 300ms spans the 500ms deadline.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(started.elapsed() > Duration::from_millis(1000));
    gw.gateway.shutdown().await;
}

/// A route that knows its senders only by their Standard Webhooks
/// signature: bodies are read before anyone is authenticated.
fn signed_route(secret_b64: &str, sink: &Sink) -> String {
    format!(
        r#"  - name: signed
    path: /hooks/signed
    source: generic
    auth:
      standard_webhooks_secret: "whsec_{secret_b64}"
    subscribers:
      - name: app
        url: {}
"#,
        sink.url("/s")
    )
}

/// The muapi route's token carries a `+` (and a `/`): muapi calls the
/// configured URL verbatim, so `?token=` must take it as written, and a
/// client that percent-encodes it must work too.
#[tokio::test]
async fn query_token_with_plus_is_taken_as_written() {
    let sink = Sink::start().await;
    let route = format!(
        r#"  - name: plus
    path: /hooks/plus
    source: muapi
    auth:
      tokens: ["tok+en/x"]
    subscribers:
      - name: app
        url: {}
"#,
        sink.url("/p")
    );
    let gw = TestGateway::start(&config(&sink, &route), None).await;
    let client = TestClient::plain(gw.ingress);
    for (i, query) in ["token=tok+en/x", "token=tok%2Ben%2Fx", "a=1&token=tok+en/x"]
        .iter()
        .enumerate()
    {
        let answer = client
            .send(
                "POST",
                &format!("/hooks/plus?{query}"),
                &[],
                muapi_body(&format!("plus-{i}"), "completed"),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{query}: {:?}", answer.body);
    }
    let bearer = client
        .post(
            "/hooks/plus",
            "tok+en/x",
            &muapi_body("plus-b", "completed"),
        )
        .await;
    assert_eq!(bearer.status, StatusCode::OK);
    // `+` is a plus sign, never a space: neither spelling of "tok en/x" passes.
    for query in ["token=tok%20en/x", "token=tok en/x"] {
        let answer = client
            .send(
                "POST",
                &format!("/hooks/plus?{}", query.replace(' ', "%20")),
                &[],
                muapi_body("plus-no", "completed"),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{query}");
    }
    gw.gateway.shutdown().await;
}

/// Bodies that are not strictly valid JSON are refused on every source,
/// with the same words; duplicate keys are refused on every source.
#[tokio::test]
async fn bodies_must_be_strictly_valid_json_on_every_source() {
    let sink = Sink::start().await;
    let generic = format!(
        r#"  - name: generic
    path: /hooks/generic
    source: generic
    auth:
      tokens: ["{TOKEN}"]
    subscribers:
      - name: app
        url: {}
"#,
        sink.url("/g")
    );
    let gw = TestGateway::start(&config(&sink, &generic), None).await;
    let client = TestClient::plain(gw.ingress);
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str())];
    let bad: &[(&[u8], &str)] = &[
        (
            b"{\"id\":\"-\",\"status\":\"d\",\"\":\"\xce\"}",
            "not valid JSON",
        ),
        (
            b"{\"id\":\"-\",\"status\":\"d\",\"x\":\"\\ud800\"}",
            "not valid JSON",
        ),
        (
            b"{\"id\":\"-\",\"status\":\"d\",\"x\":[1e400]}",
            "not valid JSON",
        ),
        (
            b"{\"id\":\"-\",\"status\":\"d\",\"\xce\":1}",
            "not valid JSON",
        ),
        (b"not json at all", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"{\"id\":\"a\",\"id\":\"a\",\"status\":\"d\"}", "duplicate"),
        (
            b"{\"id\":\"a\",\"status\":\"d\",\"x\":{\"k\":1,\"k\":2}}",
            "duplicate",
        ),
        (
            b"{\"id\":\"a\",\"status\":\"d\",\"key\":1,\"k\\u0065y\":2}",
            "duplicate",
        ),
        (
            b"[{\"id\":\"a\",\"status\":\"d\"}]",
            "must be a JSON object",
        ),
    ];
    for path in ["/hooks/muapi", "/hooks/generic"] {
        for (body, words) in bad {
            let answer = client.send("POST", path, &headers, body.to_vec()).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{path} accepted {}",
                String::from_utf8_lossy(body)
            );
            let error = answer.body["error"].as_str().unwrap();
            assert!(
                error.contains(words),
                "{path}, {}: {error}",
                String::from_utf8_lossy(body)
            );
        }
        // Escaped surrogate pairs, escaped keys, big integers and deep
        // nesting are fine.
        let good = format!(
            r#"{{"id":"ok{}","status":"completed","e":"\ud83d\ude00","k\u0065y1":1,"key2":2,"n":123456789012345678901234567890,"m":-0.0e-5,"d":[[[{{}}]]]}}"#,
            path.len()
        );
        let answer = client.send("POST", path, &headers, good).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.body);
    }
    gw.gateway.shutdown().await;
}

/// What `curl` made of one request: its exit code, the status it read
/// (`%{http_code}`) and the body it wrote.
struct Curled {
    exit: i32,
    code: String,
    body: String,
    stderr: String,
}

/// Runs the machine's `curl` (Debian 12: 7.88) against the gateway over
/// TLS, trusting the test CA, posting the file `body` with `headers`.
async fn curl(
    dir: &std::path::Path,
    pki: &Pki,
    proto: &str,
    url: &str,
    headers: &[&str],
    body: &std::path::Path,
) -> Curled {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let out = dir.join("curl-answer.json");
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-sS", proto, "--cacert"])
        .arg(&ca)
        .args(["--max-time", "20", "-o"])
        .arg(&out)
        .args(["-w", "%{http_code}"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()));
    for h in headers {
        command.args(["-H", h]);
    }
    command.arg(url).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("curl finishes")
        .expect("curl runs (Debian's curl package)");
    Curled {
        exit: output.status.code().unwrap_or(-1),
        code: String::from_utf8_lossy(&output.stdout).to_string(),
        body: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    }
}

/// A 401, 404 or 413 is decided from the head, while the client is still
/// sending its body. curl 7.88 must still read the answer: over HTTP/2 a
/// `RST_STREAM(NO_ERROR)` after the answer makes it fail (exit 92), and
/// over HTTP/1.1 a close with unread data may reset the connection.
#[tokio::test]
async fn early_answers_are_readable_by_curl() {
    let pki = Pki::new();
    let sink = Sink::start().await;
    let gw = TestGateway::start(&config(&sink, ""), Some(&pki)).await;
    let dir = tempfile::tempdir().unwrap();
    // Bigger than max_body_bytes (1024) and than one HTTP/2 flow-control
    // window, so the answer is decided long before the body is sent.
    let body = dir.path().join("body.json");
    std::fs::write(
        &body,
        format!(
            r#"{{"id":"big","status":"completed","pad":"{}"}}"#,
            "x".repeat(700 * 1024)
        ),
    )
    .unwrap();
    let base = format!("https://localhost:{}", gw.ingress.port());
    let good = format!("authorization: Bearer {TOKEN}");
    let cases = [
        ("/hooks/muapi", "authorization: Bearer nope", "401"),
        ("/hooks/nothing", good.as_str(), "404"),
        ("/hooks/muapi", good.as_str(), "413"),
    ];
    for proto in ["--http2", "--http1.1"] {
        for (path, auth, code) in cases {
            let got = curl(
                dir.path(),
                &pki,
                proto,
                &format!("{base}{path}"),
                &[auth, "content-type: application/json"],
                &body,
            )
            .await;
            assert_eq!(
                (got.exit, got.code.as_str()),
                (0, code),
                "{proto} {path}: curl said {}",
                got.stderr
            );
            let answer: serde_json::Value = serde_json::from_str(&got.body)
                .unwrap_or_else(|e| panic!("{proto} {path}: body {:?}: {e}", got.body));
            assert!(answer["error"].is_string(), "{proto} {path}: {answer}");
        }
    }
    // The connection-level answers did not cost the gateway its health.
    let small = dir.path().join("small.json");
    std::fs::write(&small, muapi_body("after-curl", "completed")).unwrap();
    let ok = curl(
        dir.path(),
        &pki,
        "--http2",
        &format!("{base}/hooks/muapi"),
        &[good.as_str()],
        &small,
    )
    .await;
    assert_eq!((ok.exit, ok.code.as_str()), (0, "200"), "{}", ok.stderr);
    gw.gateway.shutdown().await;
}

/// Python `requests` (HTTP/1.1 over TLS, verifying the test CA) is a
/// client senders use: a muapi callback is accepted, also with a `+` in
/// the query token, which `requests` sends as written.
#[tokio::test]
async fn python_requests_posts_a_callback() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import requests"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        // Said loudly: this machine lacks python3 or `requests`.
        eprintln!(
            "SKIPPED python_requests_posts_a_callback: python3 with `requests` is not installed"
        );
        return;
    }
    let pki = Pki::new();
    let sink = Sink::start().await;
    let route = format!(
        r#"  - name: plus
    path: /hooks/plus
    source: muapi
    auth:
      tokens: ["py+th/on"]
    subscribers:
      - name: app
        url: {}
"#,
        sink.url("/p")
    );
    let gw = TestGateway::start(&config(&sink, &route), Some(&pki)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let script = r#"
import json, sys, requests
url, ca, body = sys.argv[1], sys.argv[2], sys.argv[3]
r = requests.post(url, data=body.encode(), headers={"content-type": "application/json"}, verify=ca, timeout=20)
print(json.dumps({"code": r.status_code, "version": r.raw.version, "body": r.json()}))
"#;
    let url = format!(
        "https://localhost:{}/hooks/plus?token=py+th/on",
        gw.ingress.port()
    );
    let mut command = tokio::process::Command::new("python3");
    command
        .args(["-c", script, &url])
        .arg(&ca)
        .arg(muapi_body("from-requests", "completed"))
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("python finishes")
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(got["code"], 200, "{got}");
    assert_eq!(got["version"], 11, "{got}");
    assert_eq!(got["body"]["status"], "accepted", "{got}");
    sink.wait_for(1, Duration::from_secs(10)).await;
    gw.gateway.shutdown().await;
}

/// A request body fed by the test, frame by frame; it ends when the
/// sender is dropped.
struct FedBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl hyper::body::Body for FedBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// On a route authenticated only by its signature, bodies are held before
/// anyone is authenticated: what they may hold is bounded per connection
/// and in total, and a request beyond either bound is answered 503 with
/// `Retry-After` instead of being buffered. Held bytes are given back when
/// the request ends.
#[tokio::test]
async fn unauthenticated_bodies_are_bounded_per_connection_and_in_total() {
    use base64::Engine;
    use http_body_util::BodyExt;
    let secret_b64 = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let pki = Pki::new();
    let sink = Sink::start().await;
    let yaml = config(&sink, &signed_route(&secret_b64, &sink)).replace(
        "header_read_timeout: 500ms",
        "header_read_timeout: 30s\n  max_unauthenticated_body_bytes: 8192\n  max_unauthenticated_body_bytes_per_connection: 4096",
    );
    let gw = TestGateway::start(&yaml, Some(&pki)).await;
    // Three HTTP/2 connections, six streams each, each stream declaring a
    // 1000-byte body and sending 10 bytes of it: at most 4 per connection
    // and 8 in all can be held, so exactly 10 are refused whatever the order.
    let mut feeds = Vec::new();
    let mut answers = tokio::task::JoinSet::new();
    let mut drivers = Vec::new();
    for conn in 0..3 {
        let tls = tls_connect(&pki, gw.ingress, b"h2").await;
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        drivers.push(tokio::spawn(connection));
        for stream in 0..6 {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(bytes::Bytes::from_static(b"{\"padding\":"))
                .await
                .unwrap();
            let request = http::Request::post(format!(
                "https://localhost:{}/hooks/signed",
                gw.ingress.port()
            ))
            .header("content-length", "1000")
            .body(FedBody(rx))
            .unwrap();
            sender.ready().await.unwrap();
            let response = sender.send_request(request);
            feeds.push(tx);
            answers.spawn(async move {
                let response = response.await.expect("an answer");
                let status = response.status();
                let retry_after = response.headers().get("retry-after").cloned();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (conn, stream, status, retry_after, body)
            });
        }
    }
    let mut refused = [0usize; 3];
    for _ in 0..10 {
        let (conn, _, status, retry_after, body) =
            tokio::time::timeout(Duration::from_secs(10), answers.join_next())
                .await
                .expect("requests beyond the bounds are refused at once")
                .unwrap()
                .unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry_after.is_some(), "503 without Retry-After");
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(error["error"].is_string());
        refused[conn] += 1;
    }
    assert!(
        refused.iter().all(|&n| n >= 2),
        "per connection: {refused:?}"
    );
    // A bounded negative check: the 8 held requests are still waiting.
    let more = tokio::time::timeout(Duration::from_millis(300), answers.join_next()).await;
    assert!(more.is_err(), "answered more than 10: {more:?}");
    // Meanwhile a signed callback on a fresh connection finds no room.
    let client = TestClient::tls(&pki, gw.ingress, Proto::Http1);
    // 8000 bytes are held: 192 are left, fewer than this body needs.
    let body = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(300));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let signature = expected_signature(&secret_b64, "msg_b", &now, body.as_bytes());
    let signed = [
        ("webhook-id", "msg_b"),
        ("webhook-timestamp", now.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let busy = client
        .send("POST", "/hooks/signed", &signed, body.clone())
        .await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(busy.headers.contains_key("retry-after"));
    // The held requests send the rest of their bodies (unsigned: 401);
    // what they held is given back, and the signed callback is accepted.
    let rest = format!("\"{}\"}}", "x".repeat(986));
    assert_eq!(11 + rest.len(), 1000);
    for feed in feeds {
        // A refused stream's body is gone; only the held ones take it.
        let _ = feed.send(bytes::Bytes::from(rest.clone())).await;
    }
    while let Some(done) = tokio::time::timeout(Duration::from_secs(10), answers.join_next())
        .await
        .expect("the held requests end")
    {
        let (_, _, status, _, _) = done.unwrap();
        assert!(status.is_client_error(), "{status}");
    }
    let ok = client.send("POST", "/hooks/signed", &signed, body).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    for driver in drivers {
        driver.abort();
    }
    gw.gateway.shutdown().await;
}

/// Over HTTP/1.1, an early answer after the whole body was read and
/// dropped keeps the connection usable; a body that stops coming is not
/// waited for beyond the discard bound: the answer goes out and the
/// connection closes.
#[tokio::test]
async fn early_answers_over_http1_keep_or_close_the_connection() {
    let pki = Pki::new();
    let sink = Sink::start().await;
    let yaml = config(&sink, "").replace("header_read_timeout: 500ms", "header_read_timeout: 30s");
    let gw = TestGateway::start(&yaml, Some(&pki)).await;
    let mut tls = tls_connect(&pki, gw.ingress, b"http/1.1").await;
    let pad = "x".repeat(3000);
    let refused = format!(
        "POST /hooks/muapi HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer nope\r\ncontent-length: {}\r\n\r\n{pad}",
        pad.len()
    );
    tls.write_all(refused.as_bytes()).await.unwrap();
    let text = read_answer(&mut tls, "unauthorized\"}").await;
    assert!(text.starts_with("HTTP/1.1 401"), "got: {text}");
    assert!(
        !text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let body = muapi_body("after-401-h1", "completed");
    let next = format!(
        "POST /hooks/muapi HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(next.as_bytes()).await.unwrap();
    let text = read_answer(&mut tls, "\"}").await;
    assert!(text.starts_with("HTTP/1.1 200"), "got: {text}");

    let mut tls = tls_connect(&pki, gw.ingress, b"http/1.1").await;
    let stalled = "POST /hooks/muapi HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer nope\r\ncontent-length: 5000\r\n\r\n{\"id\":";
    tls.write_all(stalled.as_bytes()).await.unwrap();
    let text = read_answer(&mut tls, "unauthorized\"}").await;
    assert!(text.starts_with("HTTP/1.1 401"), "got: {text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection stays open");
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn a_reload_applies_connection_limits_live() {
    let sink = Sink::start().await;
    let yaml = config(&sink, "").replace(
        "header_read_timeout: 500ms",
        "header_read_timeout: 30s\n  max_connections: 10",
    );
    let gw = TestGateway::start(&yaml, None).await;
    // Lowered to one connection by a reload: the next connections wait.
    gw.reload(&yaml.replace("max_connections: 10", "max_connections: 1"))
        .await;
    let idle = tokio::net::TcpStream::connect(gw.ingress).await.unwrap();
    let client = TestClient::plain(gw.ingress);
    let mut waiting = tokio::spawn(async move {
        client
            .post(
                "/hooks/muapi",
                TOKEN,
                &muapi_body("live-limit", "completed"),
            )
            .await
    });
    let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
    assert!(
        early.is_err(),
        "the reloaded max_connections was not applied"
    );
    drop(idle);
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once the slot is free")
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    gw.gateway.shutdown().await;
}
