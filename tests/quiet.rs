//! A lane waiting on an open circuit breaker must sleep, not spin. This
//! measures the test process's own CPU time, so it runs in a binary of its
//! own: no other test may share the process while it measures.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "quiet-token";

fn base(subscribers: &str, retry: &str) -> String {
    format!(
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
{retry}
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth:
      tokens: ["{TOKEN}"]
    subscribers:
{subscribers}"#
    )
}

/// CPU seconds this process has used (user + system).
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

#[tokio::test]
async fn an_open_circuit_waits_quietly_and_survives_a_reload() {
    let sink = Sink::start().await;
    sink.set_default(Reply::Status(500, vec![]));
    let subs = format!(
        "      - name: app\n        url: {}\n        circuit_breaker: {{ failure_threshold: 1, cooldown: 100ms }}\n",
        sink.url("/x")
    );
    // The next attempt is due long after the cooldown ends.
    let retry =
        "    initial_interval: 30s\n    max_interval: 1m\n    max_elapsed: 1h\n    jitter: 0.0\n";
    let yaml = base(&subs, retry);
    let gw = TestGateway::start(&yaml, None).await;
    let client = TestClient::plain(gw.ingress);
    let admin = TestClient::plain(gw.admin);
    client
        .post("/hooks/muapi", TOKEN, &muapi_body("quiet-1", "completed"))
        .await;
    sink.wait_for(1, Duration::from_secs(10)).await;
    admin
        .get_until(
            "/api/v1/subscribers",
            Some("admin-token"),
            Duration::from_secs(5),
            "the circuit to open",
            |v| v["subscribers"][0]["circuit"] == "open",
        )
        .await;
    // Past the cooldown, nothing is due: the lane must sleep, not spin.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = own_cpu_seconds();
    let window = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let used = own_cpu_seconds() - before;
    println!(
        "CPU used while the open circuit waited {:?}: {used:.2}s",
        window.elapsed()
    );
    assert!(
        used < 0.5,
        "the lane busy-looped: {used:.2}s of CPU in 1.5s"
    );
    // A reload that does not touch the breaker keeps its state.
    gw.reload(&yaml).await;
    let subs = admin
        .send(
            "GET",
            "/api/v1/subscribers",
            &[("authorization", "Bearer admin-token")],
            "",
        )
        .await;
    assert_ne!(
        subs.body["subscribers"][0]["circuit"], "closed",
        "{:?}",
        subs.body
    );
    assert_eq!(sink.count(), 1);
    gw.gateway.shutdown().await;
}
