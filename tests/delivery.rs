//! Delivery: fan-out with signatures, retries and backoff, Retry-After,
//! 410, exhaustion into dead letters, filters, HTTPS subscribers with a
//! private CA, and isolation from a subscriber that never answers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;

const TOKEN: &str = "delivery-token";
const SECRET_A: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "c2Vjb25kLXNlY3JldC1mb3ItdGVzdHMtb25seQ==";

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

const FAST_RETRY: &str = "    initial_interval: 100ms\n    multiplier: 2.0\n    max_interval: 2s\n    max_elapsed: 1m\n    jitter: 0.0\n";

#[tokio::test]
async fn one_callback_reaches_three_subscribers_signed_and_verbatim() {
    let sinks = [
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    ];
    let subs = format!(
        r#"      - name: app
        url: {}
        signing_secrets: ["whsec_{SECRET_A}", "whsec_{SECRET_B}"]
        headers: {{ X-Env: test }}
      - name: analytics
        url: {}
        signing_secrets: ["whsec_{SECRET_B}"]
      - name: notifier
        url: {}
"#,
        sinks[0].url("/app"),
        sinks[1].url("/analytics"),
        sinks[2].url("/notify")
    );
    let gw = TestGateway::start(&base(&subs, FAST_RETRY), None).await;
    let client = TestClient::plain(gw.ingress);
    // Unusual spacing and field order: forwarded byte for byte, never re-serialised.
    let body = "{ \"status\":\"completed\",  \"id\":\"fan-1\", \"outputs\":[\"https://x/1.png\"], \"extra\": {\"k\": 1.50} }";
    let answer = client.post("/hooks/muapi", TOKEN, body).await;
    assert_eq!(answer.status, StatusCode::OK);
    let event_id = answer.body["event_id"].as_str().unwrap().to_string();
    for sink in &sinks {
        sink.wait_for(1, Duration::from_secs(10)).await;
        let got = &sink.received()[0];
        assert_eq!(got.body, body.as_bytes(), "body must be verbatim");
        assert_eq!(got.headers["webhook-id"], event_id.as_str());
        assert_eq!(got.headers["content-type"], "application/json");
        assert_eq!(got.headers["hookrelay-attempt"], "1");
        assert_eq!(got.headers["hookrelay-route"], "muapi");
        assert!(got.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("hookrelay/"));
    }
    let check = |sink: &Sink, secrets: &[&str]| {
        let got = &sink.received()[0];
        let ts = got.headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(ts.parse::<u64>().unwrap().abs_diff(now) < 60);
        let expected: Vec<String> = secrets
            .iter()
            .map(|s| expected_signature(s, &event_id, &ts, &got.body))
            .collect();
        assert_eq!(
            got.headers["webhook-signature"].to_str().unwrap(),
            expected.join(" ")
        );
    };
    check(&sinks[0], &[SECRET_A, SECRET_B]);
    check(&sinks[1], &[SECRET_B]);
    assert!(sinks[2].received()[0]
        .headers
        .get("webhook-signature")
        .is_none());
    assert_eq!(sinks[0].received()[0].headers["x-env"], "test");
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn failing_subscriber_is_retried_with_growing_gaps() {
    let sink = Sink::start().await;
    sink.script(vec![
        Reply::Status(500, vec![]),
        Reply::Status(500, vec![]),
        Reply::Status(500, vec![]),
    ]);
    let subs = format!("      - name: app\n        url: {}\n", sink.url("/x"));
    // Waits of 150, 450 and 1350 ms: far enough apart that scheduling noise
    // on a loaded machine cannot reorder them.
    let retry = "    initial_interval: 150ms\n    multiplier: 3.0\n    max_interval: 5s\n    max_elapsed: 1m\n    jitter: 0.0\n";
    let gw = TestGateway::start(&base(&subs, retry), None).await;
    let client = TestClient::plain(gw.ingress);
    let answer = client
        .post("/hooks/muapi", TOKEN, &muapi_body("retry-1", "completed"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    sink.wait_for(4, Duration::from_secs(20)).await;
    let got = sink.received();
    let attempts: Vec<_> = got
        .iter()
        .map(|r| r.headers["hookrelay-attempt"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(attempts, ["1", "2", "3", "4"]);
    let ids: std::collections::HashSet<_> = got
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids.len(), 1, "the same webhook-id on every attempt");
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    println!("retry gaps: {gaps:?}");
    assert!(gaps[0] >= Duration::from_millis(140));
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "gaps must grow: {gaps:?}"
    );
    // Delivered on attempt 4: no fifth request.
    let event_id = answer.body["event_id"].as_str().unwrap();
    let admin = TestClient::plain(gw.admin);
    let view = admin
        .get_until(
            &format!("/api/v1/events/{event_id}"),
            Some("admin-token"),
            Duration::from_secs(5),
            "the store to record the delivery",
            |v| v["deliveries"][0]["state"] == "delivered",
        )
        .await;
    assert_eq!(view["deliveries"][0]["attempts"], 4);
    assert_eq!(
        view["deliveries"][0]["history"].as_array().unwrap().len(),
        4
    );
    assert_eq!(sink.count(), 4);
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let sink = Sink::start().await;
    sink.script(vec![Reply::Status(429, vec![("retry-after", "1".into())])]);
    let subs = format!("      - name: app\n        url: {}\n", sink.url("/x"));
    let gw = TestGateway::start(&base(&subs, FAST_RETRY), None).await;
    let client = TestClient::plain(gw.ingress);
    client
        .post("/hooks/muapi", TOKEN, &muapi_body("ra-1", "completed"))
        .await;
    sink.wait_for(2, Duration::from_secs(10)).await;
    let got = sink.received();
    let gap = got[1].at - got[0].at;
    println!("gap after 429 Retry-After: 1 = {gap:?}");
    assert!(
        gap >= Duration::from_secs(1),
        "Retry-After ignored: {gap:?}"
    );
    gw.gateway.shutdown().await;
}

async fn dead_letters(admin: &TestClient) -> serde_json::Value {
    admin
        .get_until(
            "/api/v1/dead-letters",
            Some("admin-token"),
            Duration::from_secs(15),
            "a dead letter",
            |v| v["dead_letters"].as_array().is_some_and(|a| !a.is_empty()),
        )
        .await
}

#[tokio::test]
async fn gone_410_is_a_dead_letter_after_one_attempt() {
    let sink = Sink::start().await;
    sink.set_default(Reply::Status(410, vec![]));
    let subs = format!("      - name: app\n        url: {}\n", sink.url("/x"));
    let gw = TestGateway::start(&base(&subs, FAST_RETRY), None).await;
    let client = TestClient::plain(gw.ingress);
    let admin = TestClient::plain(gw.admin);
    client
        .post("/hooks/muapi", TOKEN, &muapi_body("gone-1", "completed"))
        .await;
    sink.wait_for(1, Duration::from_secs(10)).await;
    let letters = dead_letters(&admin).await;
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["attempts"], 1);
    assert!(letter["dead_reason"].as_str().unwrap().contains("410"));
    assert_eq!(letter["history"][0]["status"], 410);
    assert_eq!(sink.count(), 1, "410 stops retries at once");
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn exhaustion_makes_a_dead_letter_with_the_last_error() {
    let sink = Sink::start().await;
    sink.set_default(Reply::Status(503, vec![]));
    let subs = format!("      - name: app\n        url: {}\n", sink.url("/x"));
    let retry = "    initial_interval: 50ms\n    multiplier: 2.0\n    max_interval: 200ms\n    max_elapsed: 600ms\n    jitter: 0.0\n";
    let gw = TestGateway::start(&base(&subs, retry), None).await;
    let client = TestClient::plain(gw.ingress);
    let admin = TestClient::plain(gw.admin);
    client
        .post("/hooks/muapi", TOKEN, &muapi_body("exhaust-1", "completed"))
        .await;
    let letters = dead_letters(&admin).await;
    let letter = &letters["dead_letters"][0];
    let reason = letter["dead_reason"].as_str().expect("a dead letter");
    assert!(reason.contains("HTTP 503"), "{reason}");
    assert!(reason.contains("max_elapsed"), "{reason}");
    let attempts = letter["attempts"].as_u64().unwrap();
    assert!(attempts >= 3, "{attempts} attempts");
    assert_eq!(sink.count() as u64, attempts);
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn status_filter_keeps_failed_callbacks_away() {
    let only_completed = Sink::start().await;
    let everything = Sink::start().await;
    let out_of_memory = Sink::start().await;
    let subs = format!(
        "      - name: app\n        url: {}\n        when: {{ status: [completed] }}\n      - name: all\n        url: {}\n      - name: oom\n        url: {}\n        when: {{ json: {{ \"/error\": \"out of memory\" }} }}\n",
        only_completed.url("/c"),
        everything.url("/a"),
        out_of_memory.url("/o")
    );
    let gw = TestGateway::start(&base(&subs, FAST_RETRY), None).await;
    let client = TestClient::plain(gw.ingress);
    client
        .post("/hooks/muapi", TOKEN, &muapi_body("f-1", "failed"))
        .await;
    client
        .post("/hooks/muapi", TOKEN, &muapi_body("f-2", "completed"))
        .await;
    client
        .post("/hooks/muapi", TOKEN, &muapi_body("f-3", "failed"))
        .await;
    everything.wait_for(3, Duration::from_secs(10)).await;
    only_completed.wait_for(1, Duration::from_secs(10)).await;
    // Every delivery for "all" is done; "app" was never given the failed ones.
    assert_eq!(only_completed.count(), 1);
    // A JSON-pointer filter: only the two failed callbacks carry that error.
    out_of_memory.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(out_of_memory.count(), 2);
    let got: serde_json::Value =
        serde_json::from_slice(&only_completed.received()[0].body).unwrap();
    assert_eq!(got["status"], "completed");
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn https_subscriber_with_private_ca() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let sink = Sink::start_with(Some(pki.server_config())).await;
    let subs = format!(
        "      - name: app\n        url: https://localhost:{}/secure\n        ca_file: {}\n",
        sink.addr.port(),
        ca.display()
    );
    let gw = TestGateway::start(&base(&subs, FAST_RETRY), None).await;
    let client = TestClient::plain(gw.ingress);
    client
        .post("/hooks/muapi", TOKEN, &muapi_body("tls-1", "completed"))
        .await;
    sink.wait_for(1, Duration::from_secs(10)).await;
    // The subscriber offers h2 by ALPN, so the pooled client speaks HTTP/2.
    assert_eq!(sink.received()[0].version, http::Version::HTTP_2);
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = Sink::start().await;
    let redirecting = Sink::start().await;
    redirecting.set_default(Reply::Status(
        302,
        vec![("location", target.url("/elsewhere"))],
    ));
    let subs = format!(
        "      - name: app\n        url: {}\n",
        redirecting.url("/x")
    );
    let gw = TestGateway::start(&base(&subs, FAST_RETRY), None).await;
    let client = TestClient::plain(gw.ingress);
    client
        .post(
            "/hooks/muapi",
            TOKEN,
            &muapi_body("redirect-1", "completed"),
        )
        .await;
    // A 3xx is not a success: it is retried, and the Location is never visited.
    redirecting.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(target.count(), 0);
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn identical_callbacks_at_the_same_instant_make_one_event() {
    let sink = Sink::start().await;
    let subs = format!("      - name: app\n        url: {}\n", sink.url("/x"));
    let gw = TestGateway::start(&base(&subs, FAST_RETRY), None).await;
    let body = muapi_body("same-instant", "completed");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = TestClient::plain(gw.ingress);
        let body = body.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client.post("/hooks/muapi", TOKEN, &body).await
        }));
    }
    let mut statuses = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let answer = t.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        statuses.push(answer.body["status"].as_str().unwrap().to_string());
        ids.insert(answer.body["event_id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        statuses.iter().filter(|s| *s == "accepted").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| *s == "duplicate").count(), 19);
    assert_eq!(ids.len(), 1);
    sink.wait_for(1, Duration::from_secs(10)).await;
    gw.gateway.shutdown().await;
    assert_eq!(sink.count(), 1);
}

#[tokio::test]
async fn circuit_breaker_opens_holds_deliveries_and_recovers_with_a_probe() {
    let sink = Sink::start().await;
    sink.set_default(Reply::Status(500, vec![]));
    let subs = format!(
        "      - name: app\n        url: {}\n        circuit_breaker: {{ failure_threshold: 3, cooldown: 1500ms }}\n",
        sink.url("/x")
    );
    let retry = "    initial_interval: 50ms\n    multiplier: 2.0\n    max_interval: 200ms\n    max_elapsed: 1m\n    jitter: 0.0\n";
    let gw = TestGateway::start(&base(&subs, retry), None).await;
    let client = TestClient::plain(gw.ingress);
    let admin = TestClient::plain(gw.admin);
    client
        .post("/hooks/muapi", TOKEN, &muapi_body("breaker-1", "completed"))
        .await;
    sink.wait_for(3, Duration::from_secs(10)).await;
    // Three consecutive failures open the circuit.
    let subs = admin
        .get_until(
            "/api/v1/subscribers",
            Some("admin-token"),
            Duration::from_secs(5),
            "the circuit to open",
            |v| v["subscribers"][0]["circuit"] == "open",
        )
        .await;
    assert_eq!(subs["subscribers"][0]["pending"], 1, "held, not failed");
    let metrics = String::from_utf8(admin.send_raw("GET", "/metrics").await).unwrap();
    assert!(metrics.contains("hookrelay_circuit_open{route=\"muapi\",subscriber=\"app\"} 1"));
    sink.set_default(Reply::Status(200, vec![]));
    sink.wait_for(4, Duration::from_secs(10)).await;
    let got = sink.received();
    let held = got[3].at - got[2].at;
    println!("breaker held the fourth attempt for {held:?} (retry interval 200ms, cooldown 1.5s)");
    assert!(
        held >= Duration::from_millis(1400),
        "the open circuit did not hold: {held:?}"
    );
    admin
        .get_until(
            "/api/v1/subscribers",
            Some("admin-token"),
            Duration::from_secs(5),
            "the probe to close the circuit",
            |v| v["subscribers"][0]["circuit"] == "closed" && v["subscribers"][0]["pending"] == 0,
        )
        .await;
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_that_never_answers_does_not_delay_the_others() {
    let hole = black_hole().await;
    let healthy = Sink::start().await;
    let subs = format!(
        "      - name: stuck\n        url: http://{hole}/never\n        timeout: 2s\n        max_in_flight: 4\n      - name: healthy\n        url: {}\n",
        healthy.url("/ok")
    );
    let gw = TestGateway::start(&base(&subs, FAST_RETRY), None).await;
    let client = TestClient::plain(gw.ingress);
    let started = Instant::now();
    let mut sent_at = Vec::new();
    for i in 0..200 {
        sent_at.push(Instant::now());
        let answer = client
            .post(
                "/hooks/muapi",
                TOKEN,
                &muapi_body(&format!("iso-{i}"), "completed"),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    healthy.wait_for(200, Duration::from_secs(30)).await;
    let total = started.elapsed();
    let received = healthy.received();
    let worst = received
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let i: usize = body["id"].as_str().unwrap()[4..].parse().unwrap();
            r.at.saturating_duration_since(sent_at[i])
        })
        .max()
        .unwrap();
    println!(
        "200 callbacks reached the healthy subscriber in {total:?}; worst per-callback delay {worst:?} (stuck subscriber timeout 2s)"
    );
    // Generous bound: the stuck subscriber's 2s timeouts must not serialise
    // the healthy one's deliveries (that would take 200 × 2s / 4).
    assert!(
        worst < Duration::from_secs(2),
        "healthy deliveries waited {worst:?}"
    );
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn delivered_events_are_pruned_after_the_keep_window() {
    let sink = Sink::start().await;
    let subs = format!("      - name: app\n        url: {}\n", sink.url("/x"));
    let yaml = base(&subs, FAST_RETRY).replace(
        "shutdown_grace: 2s\n",
        "shutdown_grace: 2s\nidempotency: { ttl: 4s }\n",
    );
    let yaml = yaml.replace(
        "  path: \"{store}\"\n",
        "  path: \"{store}\"\n  retention: 1s\n",
    );
    let gw = TestGateway::start(&yaml, None).await;
    let client = TestClient::plain(gw.ingress);
    let admin = TestClient::plain(gw.admin);
    let body = muapi_body("prune-1", "completed");
    let first = client.post("/hooks/muapi", TOKEN, &body).await;
    let event_id = first.body["event_id"].as_str().unwrap().to_string();
    sink.wait_for(1, Duration::from_secs(10)).await;
    // Within the window: still a duplicate, still inspectable.
    assert_eq!(
        client.post("/hooks/muapi", TOKEN, &body).await.body["status"],
        "duplicate"
    );
    // After `store.retention` the pruner drops the details: the event view
    // says so instead of failing, and the key still answers `duplicate`.
    let path = format!("/api/v1/events/{event_id}");
    let view = admin
        .get_until(
            &path,
            Some("admin-token"),
            Duration::from_secs(15),
            "the delivered event's details to be pruned",
            |v| v["event"]["pruned"] == true,
        )
        .await;
    assert!(view["deliveries"].as_array().unwrap().is_empty());
    assert!(view["event"].get("body").is_none());
    let again = client.post("/hooks/muapi", TOKEN, &body).await;
    assert_eq!(again.body["status"], "duplicate");
    assert_eq!(again.body["event_id"], event_id.as_str());
    // Once `idempotency.ttl` has passed too, the key goes (the cache first).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let keys = String::from_utf8(admin.send_raw("GET", "/metrics").await).unwrap();
        if keys.contains("hookrelay_idempotency_keys 0") {
            break;
        }
        assert!(Instant::now() < deadline, "expired keys stay in memory");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // After the window the same callback is a new event (same stable id).
    let again = client.post("/hooks/muapi", TOKEN, &body).await;
    let view = admin
        .send("GET", &path, &[("authorization", "Bearer admin-token")], "")
        .await;
    assert_eq!(view.body["event"]["pruned"], false, "{:?}", view.body);
    assert_eq!(again.body["status"], "accepted");
    assert_eq!(again.body["event_id"], event_id.as_str());
    sink.wait_for(2, Duration::from_secs(10)).await;
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn a_sender_that_hangs_up_mid_request_loses_nothing() {
    use tokio::io::AsyncWriteExt;
    let sink = Sink::start().await;
    let subs = format!("      - name: app\n        url: {}\n", sink.url("/x"));
    let gw = TestGateway::start(&base(&subs, FAST_RETRY), None).await;
    let client = TestClient::plain(gw.ingress);
    let mut ids = std::collections::HashSet::new();
    for i in 0..40 {
        let body = muapi_body(&format!("hangup-{i}"), "completed");
        // Send the whole request, then hang up without reading the answer.
        let mut raw = tokio::net::TcpStream::connect(gw.ingress).await.unwrap();
        let request = format!(
            "POST /hooks/muapi HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        raw.write_all(request.as_bytes()).await.unwrap();
        drop(raw);
        // The sender retries, as muapi does: accepted, or a duplicate of
        // the first try if that one was committed.
        let answer = client.post("/hooks/muapi", TOKEN, &body).await;
        assert_eq!(answer.status, StatusCode::OK);
        ids.insert(answer.body["event_id"].as_str().unwrap().to_string());
    }
    // Every callback reaches the subscriber, whichever try committed it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got: std::collections::HashSet<String> = sink
            .received()
            .iter()
            .map(|r| r.headers["webhook-id"].to_str().unwrap().to_string())
            .collect();
        if ids.iter().all(|id| got.contains(id)) {
            break;
        }
        let missing = ids.iter().filter(|id| !got.contains(*id)).count();
        assert!(
            Instant::now() < deadline,
            "{missing} callbacks never delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn lowering_max_in_flight_on_reload_never_runs_old_and_new_slots_together() {
    let sink = Sink::start().await;
    sink.set_default(Reply::Delay(200, Duration::from_millis(400)));
    let subs = |n: u32| {
        format!(
            "      - name: app\n        url: {}\n        max_in_flight: {n}\n",
            sink.url("/x")
        )
    };
    let yaml = base(&subs(4), FAST_RETRY);
    let gw = TestGateway::start(&yaml, None).await;
    let client = TestClient::plain(gw.ingress);
    for i in 0..12 {
        client
            .post(
                "/hooks/muapi",
                TOKEN,
                &muapi_body(&format!("slots-{i}"), "completed"),
            )
            .await;
    }
    eventually(Duration::from_secs(10), "four attempts in flight", || {
        sink.open_now() == 4
    })
    .await;
    sink.reset_peak();
    gw.reload(&base(&subs(1), FAST_RETRY)).await;
    // The four running attempts finish; no new one starts beside them.
    eventually(
        Duration::from_secs(10),
        "the old attempts to finish",
        || sink.count() >= 5,
    )
    .await;
    assert!(
        sink.peak() <= 4,
        "old and new slots ran together: {}",
        sink.peak()
    );
    // From then on, one at a time.
    eventually(Duration::from_secs(10), "the old slots to drain", || {
        sink.open_now() <= 1
    })
    .await;
    sink.reset_peak();
    sink.wait_for(12, Duration::from_secs(20)).await;
    assert_eq!(sink.peak(), 1, "more than max_in_flight ran at once");
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn a_lane_holds_a_bounded_window_of_a_large_backlog() {
    use hookrelay::store::embedded::{EmbeddedOptions, EmbeddedStore};
    use hookrelay::store::{EventId, NewEvent, Origin, Store};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A backlog of 3000 pending deliveries, written as a previous run left it.
    let backlog = 3000u128;
    {
        let store = Arc::new(EmbeddedStore::open(&data, EmbeddedOptions::default()).unwrap());
        let now = hookrelay::store::now_ms();
        let mut waits = tokio::task::JoinSet::new();
        for n in 0..backlog {
            let store = store.clone();
            waits.spawn(async move {
                store
                    .append(NewEvent {
                        id: EventId(n + 1),
                        route: Arc::from("muapi"),
                        received_ms: now,
                        source_id: None,
                        status: Some("completed".into()),
                        origin: Origin::Callback,
                        headers: vec![],
                        body: bytes::Bytes::from_static(b"{\"id\":\"x\",\"status\":\"completed\"}"),
                        subscribers: vec![Arc::from("app")],
                        ttl_ms: 3_600_000,
                        settles: false,
                    })
                    .await
                    .unwrap()
            });
        }
        while let Some(done) = waits.join_next().await {
            done.unwrap();
        }
        store.close().await;
    }
    let sink = Sink::start().await;
    sink.set_default(Reply::Hang);
    let yaml = base(
        &format!(
            "      - name: app\n        url: {}\n        max_in_flight: 2\n        timeout: 30s\n",
            sink.url("/x")
        ),
        FAST_RETRY,
    )
    .replace("{store}", &data.display().to_string());
    let gateway =
        hookrelay::Gateway::start(hookrelay::Config::from_yaml(&yaml, &|_| None).unwrap())
            .await
            .unwrap();
    let admin = TestClient::plain(gateway.admin_addr);
    let lane = admin
        .get_until(
            "/api/v1/subscribers",
            Some("admin-token"),
            Duration::from_secs(10),
            "the lane to hold its first page",
            |v| v["subscribers"][0]["queued"].as_u64().unwrap_or(0) > 0,
        )
        .await;
    let row = &lane["subscribers"][0];
    assert_eq!(row["pending"], 3000, "{row}");
    let held = row["queued"].as_u64().unwrap() + row["in_flight"].as_u64().unwrap();
    assert!(
        held <= hookrelay::delivery::lane::LANE_CAPACITY as u64,
        "the lane loaded {held} deliveries at once"
    );
    gateway.shutdown().await;
}
