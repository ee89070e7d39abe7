//! `hookrelay sink` as a child process, with the real gateway delivering to
//! it: a correct signature is reported valid, a wrong one is flagged,
//! `--fail-first` lets the gateway's retries through, `--status` and
//! `--delay` shape the answer, Ctrl-C exits 0, and bad input exits 1 or 2
//! with a clear message that never quotes a secret.

mod common;

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;

const TOKEN: &str = "sink-token";
const SECRET_A: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "c2Vjb25kLXNlY3JldC1mb3ItdGVzdHMtb25seQ==";
const LIMIT: Duration = Duration::from_secs(15);

/// A running `hookrelay sink` and its stdout, line by line.
struct SinkProcess {
    child: tokio::process::Child,
    addr: SocketAddr,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl SinkProcess {
    /// Starts `hookrelay sink --listen 127.0.0.1:0 ARGS` and reads the
    /// address from its first line.
    async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["sink", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let (tx, mut lines) = mpsc::unbounded_channel();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr: Arc<Mutex<String>> = Arc::default();
        let mut err = child.stderr.take().unwrap();
        let collected = stderr.clone();
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            collected.lock().unwrap().push_str(&text);
        });
        let first = tokio::time::timeout(Duration::from_secs(30), lines.recv())
            .await
            .expect("the sink reports its address in time")
            .expect("the sink exited before listening");
        let addr = first
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .parse()
            .unwrap();
        Self {
            child,
            addr,
            lines,
            stderr,
        }
    }

    /// The next `n` lines that mention `id=<event_id>`, in order.
    async fn lines_for(&mut self, event_id: &str, n: usize) -> Vec<String> {
        let needle = format!(" id={event_id} ");
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + LIMIT;
        while found.len() < n {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("only {found:?} for {event_id} within {LIMIT:?}"))
                .expect("the sink's stdout stays open");
            if line.contains(&needle) {
                found.push(line);
            }
        }
        found
    }

    /// The next line, whatever it is.
    async fn next_line(&mut self) -> String {
        tokio::time::timeout(LIMIT, self.lines.recv())
            .await
            .expect("a line in time")
            .expect("the sink's stdout stays open")
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits for the exit, polling.
    async fn interrupt(&mut self) -> (ExitStatus, Duration) {
        let pid = self.child.id().expect("child running").to_string();
        let sent = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = sent + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, sent.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "the sink did not exit within 10s of SIGINT"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGINT, then a clean exit is expected.
    async fn stop(mut self) {
        let (status, _) = self.interrupt().await;
        assert_eq!(
            status.code(),
            Some(0),
            "stderr: {}",
            self.stderr.lock().unwrap()
        );
    }
}

/// The value of `key=` in a sink line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// A plain-HTTP gateway whose muapi route delivers to the sink at `addr`,
/// signing with `secret`, retrying after 50 ms, 100 ms, …
async fn gateway_for(addr: SocketAddr, secret: &str) -> TestGateway {
    let yaml = format!(
        r#"
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
  token: admin-token
store:
  path: "{{store}}"
shutdown_grace: 2s
defaults:
  timeout: 2s
  retry:
    initial_interval: 50ms
    multiplier: 2.0
    max_interval: 1s
    max_elapsed: 1m
    jitter: 0.0
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth:
      tokens: ["{TOKEN}"]
    subscribers:
      - name: app
        url: http://{addr}/webhooks/muapi
        signing_secrets: ["whsec_{secret}"]
"#
    );
    TestGateway::start(&yaml, None).await
}

/// Posts a muapi callback; returns the event id.
async fn post_callback(gw: &TestGateway, id: &str) -> String {
    let body = muapi_body(id, "completed");
    let answer = TestClient::plain(gw.ingress)
        .post("/hooks/muapi", TOKEN, &body)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["event_id"].as_str().unwrap().to_string()
}

/// The gateway's view of the event's one delivery, once `done` holds.
async fn delivery_state(
    gw: &TestGateway,
    event_id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let view = TestClient::plain(gw.admin)
        .get_until(
            &format!("/api/v1/events/{event_id}"),
            Some("admin-token"),
            LIMIT,
            "the gateway to record the delivery",
            |v| done(&v["deliveries"][0]),
        )
        .await;
    view["deliveries"][0].clone()
}

#[tokio::test]
async fn a_correct_signature_is_reported_valid_with_the_body() {
    let secret = format!("whsec_{SECRET_A}");
    let mut sink = SinkProcess::start(&["--secret", &secret, "--body"]).await;
    let gw = gateway_for(sink.addr, SECRET_A).await;
    // Keys not in alphabetical order, and a number serde would rewrite.
    let body =
        r#"{"status":"completed","id":"sink-valid","outputs":[],"timings":{"inference":1.50}}"#;
    let answer = TestClient::plain(gw.ingress)
        .post("/hooks/muapi", TOKEN, body)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let event_id = answer.body["event_id"].as_str().unwrap().to_string();

    let line = sink.lines_for(&event_id, 1).await.remove(0);
    assert_eq!(field(&line, "signature"), "valid", "{line}");
    assert_eq!(field(&line, "attempt"), "1");
    assert_eq!(field(&line, "route"), "muapi");
    assert_eq!(field(&line, "size"), body.len().to_string());
    assert_eq!(field(&line, "status"), "200");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[1..3], ["POST", "/webhooks/muapi"], "{line}");
    // RFC 3339, UTC, with milliseconds.
    let time = words[0];
    assert!(
        time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
        "{line}"
    );
    // --body: the JSON follows, indented, exactly as sent otherwise.
    let mut shown = Vec::new();
    for _ in 0..8 {
        shown.push(sink.next_line().await);
    }
    assert_eq!(
        shown,
        [
            "  {",
            "    \"status\": \"completed\",",
            "    \"id\": \"sink-valid\",",
            "    \"outputs\": [],",
            "    \"timings\": {",
            "      \"inference\": 1.50",
            "    }",
            "  }",
        ]
    );

    let delivery = delivery_state(&gw, &event_id, |d| d["state"] == "delivered").await;
    assert_eq!(delivery["attempts"], 1);
    gw.gateway.shutdown().await;
    sink.stop().await;
}

#[tokio::test]
async fn a_wrong_signature_is_flagged_and_still_answered() {
    // Two secrets, neither the gateway's: each is tried, none matches.
    let b = format!("whsec_{SECRET_B}");
    let c = format!("whsec_{}", "dGhpcmQtc2VjcmV0LWZvci10ZXN0cw==");
    let mut sink = SinkProcess::start(&["--secret", &b, "--secret", &c]).await;
    let gw = gateway_for(sink.addr, SECRET_A).await;
    let event_id = post_callback(&gw, "sink-wrong").await;

    let line = sink.lines_for(&event_id, 1).await.remove(0);
    assert_eq!(field(&line, "signature"), "INVALID(mismatch)", "{line}");
    // The sink still answers per its mode (200 here): the developer sees
    // the flag, and the gateway sees a delivered webhook.
    assert_eq!(field(&line, "status"), "200");
    delivery_state(&gw, &event_id, |d| d["state"] == "delivered").await;
    gw.gateway.shutdown().await;
    sink.stop().await;
}

#[tokio::test]
async fn rotation_any_of_several_secrets_verifies() {
    let b = format!("whsec_{SECRET_B}");
    let a = format!("whsec_{SECRET_A}");
    let mut sink = SinkProcess::start(&["--secret", &b, "--secret", &a]).await;
    let gw = gateway_for(sink.addr, SECRET_A).await;
    let event_id = post_callback(&gw, "sink-rotation").await;
    let line = sink.lines_for(&event_id, 1).await.remove(0);
    assert_eq!(field(&line, "signature"), "valid", "{line}");
    gw.gateway.shutdown().await;
    sink.stop().await;
}

#[tokio::test]
async fn fail_first_lets_the_gateways_retry_reach_a_200() {
    let secret = format!("whsec_{SECRET_A}");
    let mut sink = SinkProcess::start(&["--secret", &secret, "--fail-first", "2"]).await;
    let gw = gateway_for(sink.addr, SECRET_A).await;
    let event_id = post_callback(&gw, "sink-retry").await;

    let lines = sink.lines_for(&event_id, 3).await;
    let seen: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                field(l, "attempt"),
                field(l, "status"),
                field(l, "signature"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("1", "500", "valid"),
            ("2", "500", "valid"),
            ("3", "200", "valid")
        ]
    );
    let delivery = delivery_state(&gw, &event_id, |d| d["state"] == "delivered").await;
    assert_eq!(delivery["attempts"], 3);
    gw.gateway.shutdown().await;
    sink.stop().await;
}

#[tokio::test]
async fn status_and_delay_shape_the_answer() {
    let mut sink = SinkProcess::start(&["--status", "503", "--delay", "300ms"]).await;
    let client = TestClient::plain(sink.addr);
    let started = Instant::now();
    let answer = client
        .send(
            "POST",
            "/direct?token=never-printed",
            &[("webhook-id", "direct-1")],
            "not json \x1b[2J",
        )
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered before the delay"
    );
    let line = sink.lines_for("direct-1", 1).await.remove(0);
    assert_eq!(field(&line, "status"), "503");
    assert_eq!(field(&line, "signature"), "unsigned");
    assert_eq!(field(&line, "attempt"), "-");
    assert!(
        !line.contains("never-printed"),
        "query strings stay out: {line}"
    );
    sink.stop().await;
}

#[tokio::test]
async fn ctrl_c_exits_cleanly_and_closes_the_listener() {
    let mut sink = SinkProcess::start(&[]).await;
    // A kept-alive connection with an answered request stays open: the
    // sink must not wait for it.
    let mut held = tokio::net::TcpStream::connect(sink.addr).await.unwrap();
    held.write_all(b"POST /x HTTP/1.1\r\nhost: sink\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let answer = read_answer(&mut held, "ok\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let (status, took) = sink.interrupt().await;
    assert_eq!(
        status.code(),
        Some(0),
        "stderr: {}",
        sink.stderr.lock().unwrap()
    );
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    assert!(
        tokio::net::TcpStream::connect(sink.addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn an_address_in_use_exits_1_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["sink", "--listen", &addr])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn bad_arguments_exit_2_and_never_quote_a_secret() {
    let secret = "whsec_c2hvcnQtc2VjcmV0"; // decodes to 12 bytes: too short
    for (args, expect) in [
        (vec!["--secret", secret], "shorter than 16 bytes"),
        (vec!["--secret", SECRET_A], "must start with `whsec_`"),
        (
            vec!["--fail-first", "1", "--status", "503"],
            "cannot be used with",
        ),
        (vec!["--status", "99"], "--status"),
        (vec!["--delay", "5"], "no unit"),
        (vec!["--listen", "localhost:3000"], "--listen"),
    ] {
        let out = Command::new(BIN)
            .arg("sink")
            .args(&args)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("c2hvcnQtc2VjcmV0") && !stderr.contains(SECRET_A),
            "a secret reached the message: {stderr}"
        );
    }
}
