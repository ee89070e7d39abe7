//! Operations: the metrics page, the admin API, hot reload (SIGHUP on the
//! binary, certificates included), draining on SIGTERM, and logs free of
//! secrets.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "ops-token-0123456789";
const ADMIN: &str = "Bearer admin-secret-token";

fn config(app: &Sink, dying: &Sink, admin_token: bool) -> String {
    format!(
        r#"
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
{token}
store:
  path: "{{store}}"
shutdown_grace: 2s
defaults:
  retry: {{ initial_interval: 50ms, max_interval: 200ms, jitter: 0.0 }}
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth:
      tokens: ["{TOKEN}"]
    subscribers:
      - name: app
        url: {}
      - name: dying
        url: {}
        signing_secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
"#,
        app.url("/app"),
        dying.url("/dying"),
        token = if admin_token {
            "  token: admin-secret-token"
        } else {
            ""
        }
    )
}

async fn wait_dead(admin: &TestClient, n: usize) -> serde_json::Value {
    admin
        .get_until(
            "/api/v1/dead-letters",
            Some("admin-secret-token"),
            Duration::from_secs(10),
            &format!("{n} dead letters"),
            |v| v["dead_letters"].as_array().map_or(0, |a| a.len()) >= n,
        )
        .await
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

async fn scrape(admin: &TestClient) -> (String, prometheus_parse::Scrape) {
    let response = reqwest_text(admin, "/metrics").await;
    let lines = response.lines().map(|l| Ok(l.to_string()));
    let parsed =
        prometheus_parse::Scrape::parse(lines).expect("the page parses as Prometheus text");
    (response, parsed)
}

/// GETs a text page from the admin listener.
async fn reqwest_text(admin: &TestClient, path: &str) -> String {
    let raw = admin.send_raw("GET", path).await;
    String::from_utf8(raw).unwrap()
}

#[tokio::test]
async fn metrics_count_every_outcome_and_parse_and_survive_restart() {
    let app = Sink::start().await;
    let dying = Sink::start().await;
    dying.set_default(Reply::Status(410, vec![]));
    let gw = TestGateway::start(&config(&app, &dying, true), None).await;
    let client = TestClient::plain(gw.ingress);
    let admin = TestClient::plain(gw.admin);
    let body = muapi_body("metrics-1", "completed");
    assert_eq!(
        client.post("/hooks/muapi", TOKEN, &body).await.body["status"],
        "accepted"
    );
    assert_eq!(
        client.post("/hooks/muapi", TOKEN, &body).await.body["status"],
        "duplicate"
    );
    assert_eq!(
        client.post("/hooks/muapi", "wrong", &body).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        client.post("/hooks/muapi", TOKEN, "[1,2").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        client.post("/nowhere", TOKEN, &body).await.status,
        StatusCode::NOT_FOUND
    );
    app.wait_for(1, Duration::from_secs(10)).await;
    wait_dead(&admin, 1).await;

    let (page, m) = scrape(&admin).await;
    let ingress = "hookrelay_ingress_requests_total";
    for (outcome, n) in [
        ("accepted", 1.0),
        ("duplicate", 1.0),
        ("unauthorized", 1.0),
        ("invalid", 1.0),
    ] {
        assert_eq!(
            sample(&m, ingress, &[("route", "muapi"), ("outcome", outcome)]),
            n,
            "{outcome}"
        );
    }
    assert_eq!(sample(&m, ingress, &[("outcome", "not_found")]), 1.0);
    let app_l = [("route", "muapi"), ("subscriber", "app")];
    let dying_l = [("route", "muapi"), ("subscriber", "dying")];
    let with = |base: &[(&'static str, &'static str); 2], k: &'static str, v: &'static str| {
        vec![base[0], base[1], (k, v)]
    };
    assert_eq!(
        sample(
            &m,
            "hookrelay_deliveries_total",
            &with(&app_l, "outcome", "delivered")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "hookrelay_deliveries_total",
            &with(&dying_l, "outcome", "dead")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "hookrelay_delivery_attempts_total",
            &with(&app_l, "result", "2xx")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "hookrelay_delivery_attempts_total",
            &with(&dying_l, "result", "4xx")
        ),
        1.0
    );
    assert_eq!(sample(&m, "hookrelay_dead_letters", &dying_l), 1.0);
    assert_eq!(sample(&m, "hookrelay_deliveries_pending", &app_l), 0.0);
    assert_eq!(sample(&m, "hookrelay_circuit_open", &app_l), 0.0);
    assert_eq!(sample(&m, "hookrelay_idempotency_keys", &[]), 1.0);
    assert!(sample(&m, "hookrelay_store_commit_batch_size_count", &[]) >= 1.0);
    assert!(
        sample(
            &m,
            "hookrelay_ingress_request_duration_seconds_count",
            &[("route", "muapi")]
        ) >= 4.0
    );
    assert!(sample(&m, "hookrelay_delivery_latency_seconds_count", &app_l) >= 1.0);
    assert!(page.contains("hookrelay_delivery_attempt_duration_seconds_bucket"));
    assert!(page.contains("hookrelay_store_commit_duration_seconds_bucket"));
    assert!(page.contains("process_resident_memory_bytes"));
    assert!(!page.contains(TOKEN) && !page.contains("whsec_") && !page.contains("admin-secret"));

    // Gauges are derived from the store after a restart.
    let store_dir = gw.dir;
    gw.gateway.shutdown().await;
    let text = config(&app, &dying, true)
        .replace(
            "{store}",
            &store_dir.path().join("data").display().to_string(),
        )
        .replace("{tls}\n", "");
    let deadline = Instant::now() + Duration::from_secs(10);
    let restarted = loop {
        let cfg = hookrelay::Config::from_yaml(&text, &|_| None).unwrap();
        match hookrelay::Gateway::start(cfg).await {
            Ok(g) => break g,
            Err(hookrelay::GatewayError::Store(hookrelay::store::StoreError::Locked(_))) => {
                assert!(Instant::now() < deadline, "store lock never released");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let admin = TestClient::plain(restarted.admin_addr);
    let (_, m) = scrape(&admin).await;
    assert_eq!(sample(&m, "hookrelay_dead_letters", &dying_l), 1.0);
    // The cache starts empty (nothing is loaded at start); the store answers
    // for keys the cache has not seen, and the cache learns them.
    assert_eq!(sample(&m, "hookrelay_idempotency_keys", &[]), 0.0);
    let client = TestClient::plain(restarted.ingress_addr);
    assert_eq!(
        client.post("/hooks/muapi", TOKEN, &body).await.body["status"],
        "duplicate"
    );
    let (_, m) = scrape(&admin).await;
    assert_eq!(sample(&m, "hookrelay_idempotency_keys", &[]), 1.0);
    restarted.shutdown().await;
}

/// A gateway whose `dying` subscriber answers 410, after one callback
/// (task `id`) made a dead letter there; `app` got it.
struct OneDeadLetter {
    app: Sink,
    dying: Sink,
    gw: TestGateway,
    client: TestClient,
    admin: TestClient,
    event_id: String,
}

async fn one_dead_letter(id: &str) -> OneDeadLetter {
    let app = Sink::start().await;
    let dying = Sink::start().await;
    dying.set_default(Reply::Status(410, vec![]));
    let gw = TestGateway::start(&config(&app, &dying, true), None).await;
    let client = TestClient::plain(gw.ingress);
    let admin = TestClient::plain(gw.admin);
    let accepted = client
        .post("/hooks/muapi", TOKEN, &muapi_body(id, "completed"))
        .await;
    let event_id = accepted.body["event_id"].as_str().unwrap().to_string();
    wait_dead(&admin, 1).await;
    OneDeadLetter {
        app,
        dying,
        gw,
        client,
        admin,
        event_id,
    }
}

#[tokio::test]
async fn admin_api_endpoints_with_and_without_token_and_replay() {
    let OneDeadLetter {
        app: _app,
        dying,
        gw,
        client,
        admin,
        event_id,
    } = one_dead_letter("admin-1").await;
    let letters = wait_dead(&admin, 1).await;
    let dead_id = letters["dead_letters"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(dead_id, format!("{event_id}.dying"));

    let endpoints = [
        ("GET", "/api/v1/subscribers".to_string()),
        ("GET", format!("/api/v1/events/{event_id}")),
        ("GET", "/api/v1/dead-letters".to_string()),
        ("POST", "/api/v1/dead-letters/replay".to_string()),
        ("DELETE", format!("/api/v1/dead-letters/{dead_id}")),
        ("POST", "/api/v1/reload".to_string()),
    ];
    for (method, path) in &endpoints {
        let none = admin.send(method, path, &[], "").await;
        assert_eq!(
            none.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without token"
        );
        let wrong = admin
            .send(method, path, &[("authorization", "Bearer nope")], "")
            .await;
        assert_eq!(
            wrong.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} wrong token"
        );
    }
    assert_eq!(
        admin.send("GET", "/healthz", &[], "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        admin.send("GET", "/readyz", &[], "").await.status,
        StatusCode::OK
    );

    let subs = admin
        .send(
            "GET",
            "/api/v1/subscribers",
            &[("authorization", ADMIN)],
            "",
        )
        .await;
    assert_eq!(subs.status, StatusCode::OK);
    let list = subs.body["subscribers"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let dying_row = list.iter().find(|s| s["subscriber"] == "dying").unwrap();
    assert_eq!(dying_row["dead_letters"], 1);
    assert_eq!(dying_row["circuit"], "closed");
    assert_eq!(dying_row["route"], "muapi");

    let event = admin
        .send(
            "GET",
            &format!("/api/v1/events/{event_id}"),
            &[("authorization", ADMIN)],
            "",
        )
        .await;
    assert_eq!(event.status, StatusCode::OK);
    assert_eq!(event.body["event"]["route"], "muapi");
    let deliveries = event.body["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    let attempt = &deliveries
        .iter()
        .find(|d| d["subscriber"] == "dying")
        .unwrap()["history"][0];
    assert_eq!(attempt["status"], 410);
    assert!(attempt["at_ms"].as_u64().unwrap() > 0);
    assert!(attempt.get("duration_ms").is_some());
    let missing = admin
        .send(
            "GET",
            "/api/v1/events/nope",
            &[("authorization", ADMIN)],
            "",
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    for bad in ["limit=abc", "limit=0", "limit=5000", "colour=red"] {
        let answer = admin
            .send(
                "GET",
                &format!("/api/v1/dead-letters?{bad}"),
                &[("authorization", ADMIN)],
                "",
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(answer.body["error"].is_string());
    }
    let filtered = admin
        .send(
            "GET",
            "/api/v1/dead-letters?route=muapi&subscriber=app&limit=5",
            &[("authorization", ADMIN)],
            "",
        )
        .await;
    assert_eq!(filtered.body["dead_letters"].as_array().unwrap().len(), 0);
    let bad_replay = admin
        .send(
            "POST",
            "/api/v1/dead-letters/replay",
            &[("authorization", ADMIN)],
            r#"{"route":"muapi"}"#,
        )
        .await;
    assert_eq!(bad_replay.status, StatusCode::BAD_REQUEST);

    // The subscriber recovers; the replayed dead letter is delivered.
    dying.set_default(Reply::Status(200, vec![]));
    let replay = admin
        .send(
            "POST",
            "/api/v1/dead-letters/replay",
            &[("authorization", ADMIN)],
            // The same id twice is replayed once.
            format!(r#"{{"ids":["{dead_id}","{dead_id}"]}}"#),
        )
        .await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.body["requeued"], 1);
    dying.wait_for(2, Duration::from_secs(10)).await;
    let replayed = &dying.received()[1];
    assert_eq!(replayed.headers["webhook-id"], event_id.as_str());
    let after = admin
        .send(
            "GET",
            "/api/v1/dead-letters",
            &[("authorization", ADMIN)],
            "",
        )
        .await;
    assert_eq!(after.body["dead_letters"].as_array().unwrap().len(), 0);

    // Replay by subscriber, then delete.
    dying.set_default(Reply::Status(410, vec![]));
    client
        .post("/hooks/muapi", TOKEN, &muapi_body("admin-2", "completed"))
        .await;
    let letters = wait_dead(&admin, 1).await;
    let second = letters["dead_letters"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let by_sub = admin
        .send(
            "POST",
            "/api/v1/dead-letters/replay",
            &[("authorization", ADMIN)],
            r#"{"route":"muapi","subscriber":"dying"}"#,
        )
        .await;
    assert_eq!(by_sub.body["requeued"], 1);
    wait_dead(&admin, 1).await;
    let deleted = admin
        .send(
            "DELETE",
            &format!("/api/v1/dead-letters/{second}"),
            &[("authorization", ADMIN)],
            "",
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    let again = admin
        .send(
            "DELETE",
            &format!("/api/v1/dead-letters/{second}"),
            &[("authorization", ADMIN)],
            "",
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn admin_api_without_a_configured_token_is_closed() {
    let app = Sink::start().await;
    let dying = Sink::start().await;
    let gw = TestGateway::start(&config(&app, &dying, false), None).await;
    let admin = TestClient::plain(gw.admin);
    let answer = admin
        .send(
            "GET",
            "/api/v1/subscribers",
            &[("authorization", "Bearer anything")],
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.body["error"]
        .as_str()
        .unwrap()
        .contains("admin.token"));
    assert_eq!(
        admin.send("GET", "/healthz", &[], "").await.status,
        StatusCode::OK
    );
    gw.gateway.shutdown().await;
}

fn binary_config(
    dir: &std::path::Path,
    pki: &Pki,
    tokens: &str,
    subscribers: &str,
) -> std::path::PathBuf {
    let tls = tls_block(pki, dir);
    let text = format!(
        r#"server:
  listen: "127.0.0.1:0"
{tls}  header_read_timeout: 10s
admin:
  listen: "127.0.0.1:0"
  token: admin-secret-token
store:
  path: "{}"
shutdown_grace: 5s
log:
  format: json
  level: debug
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth:
      tokens: [{tokens}]
    subscribers:
{subscribers}"#,
        dir.join("data").display()
    );
    let path = dir.join("hookrelay.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Opens a TLS connection and sends a request head plus part of the body.
async fn half_request(
    pki: &Pki,
    addr: std::net::SocketAddr,
    token: &str,
    body: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = tls_connect(pki, addr, b"http/1.1").await;
    let head = format!(
        "POST /hooks/muapi HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body.as_bytes()[..10]).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

async fn finish_request(
    mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    body: &str,
) -> String {
    tls.write_all(&body.as_bytes()[10..]).await.unwrap();
    tls.flush().await.unwrap();
    read_answer(&mut tls, "}").await
}

#[tokio::test]
async fn sighup_reloads_tokens_subscribers_and_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let app = Sink::start().await;
    let added = Sink::start().await;
    let app_sub = format!(
        "      - name: app\n        url: {}\n        signing_secrets: [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n",
        app.url("/a")
    );
    let config = binary_config(dir.path(), &pki, "\"old-token-aaaa\"", &app_sub);
    let running = spawn(&config).await;
    let client = TestClient::tls(&pki, running.ingress, Proto::Http1);
    let first = client
        .post(
            "/hooks/muapi",
            "old-token-aaaa",
            &muapi_body("reload-0", "completed"),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK);

    // A request mid-flight across the reload: head and part of the body now.
    let body = muapi_body("reload-inflight", "completed");
    let inflight = half_request(&pki, running.ingress, "old-token-aaaa", &body).await;

    // New token, a new subscriber, and a certificate from a new CA.
    let new_pki = Pki::new();
    let both = format!(
        "{app_sub}      - name: added\n        url: {}\n",
        added.url("/added")
    );
    binary_config(dir.path(), &new_pki, "\"new-token-bbbb\"", &both);
    running.signal("-HUP");
    let new_client = TestClient::tls(&new_pki, running.ingress, Proto::Http2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(a) = new_client
            .try_post(
                "/hooks/muapi",
                "new-token-bbbb",
                &muapi_body("reload-1", "completed"),
            )
            .await
        {
            assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a client trusting only the new CA never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old = new_client
        .post(
            "/hooks/muapi",
            "old-token-aaaa",
            &muapi_body("reload-2", "completed"),
        )
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    added.wait_for(1, Duration::from_secs(10)).await;
    let got: serde_json::Value = serde_json::from_slice(&added.received()[0].body).unwrap();
    assert_eq!(got["id"], "reload-1");
    // A new connection trusting only the old CA is refused.
    let old_ca = TestClient::tls(&pki, running.ingress, Proto::Http1);
    assert!(old_ca
        .try_post(
            "/hooks/muapi",
            "new-token-bbbb",
            &muapi_body("reload-3", "completed")
        )
        .await
        .is_err());
    // The request that began before the reload completes on the old config.
    let answer = finish_request(inflight, &body).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"accepted\""), "{answer}");

    // An invalid file changes nothing and is counted.
    std::fs::write(&config, "routes: [oops").unwrap();
    running.signal("-HUP");
    let admin = TestClient::plain(running.admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = String::from_utf8(admin.send_raw("GET", "/metrics").await).unwrap();
        if page.contains("hookrelay_config_reloads_total{result=\"error\"} 1") {
            assert!(page.contains("hookrelay_config_reloads_total{result=\"ok\"} 1"));
            break;
        }
        assert!(Instant::now() < deadline, "failed reload not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let still = new_client
        .post(
            "/hooks/muapi",
            "new-token-bbbb",
            &muapi_body("reload-4", "completed"),
        )
        .await;
    assert_eq!(still.status, StatusCode::OK);
    added.wait_for(2, Duration::from_secs(10)).await;

    // No secret reached the logs.
    let logs = running.log_text();
    for secret in [
        "old-token-aaaa",
        "new-token-bbbb",
        "admin-secret-token",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ] {
        assert!(!logs.contains(secret), "{secret} appeared in the logs");
    }
    assert!(logs.contains("config reload refused"));
    assert!(logs.contains("\"outcome\":\"accepted\""));
}

#[tokio::test]
async fn removed_subscriber_leaves_its_pending_deliveries_as_orphans_until_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let app = Sink::start().await;
    let failing = Sink::start().await;
    failing.set_default(Reply::Status(500, vec![]));
    let subs = format!(
        "      - name: app\n        url: {}\n      - name: doomed\n        url: {}\n        retry: {{ initial_interval: 1h, max_interval: 2h, max_elapsed: 24h }}\n",
        app.url("/a"),
        failing.url("/d")
    );
    let config = binary_config(dir.path(), &pki, "\"tok-cccc\"", &subs);
    let running = spawn(&config).await;
    let client = TestClient::tls(&pki, running.ingress, Proto::Http1);
    client
        .post(
            "/hooks/muapi",
            "tok-cccc",
            &muapi_body("orphan-1", "completed"),
        )
        .await;
    app.wait_for(1, Duration::from_secs(10)).await;
    failing.wait_for(1, Duration::from_secs(10)).await;
    binary_config(
        dir.path(),
        &pki,
        "\"tok-cccc\"",
        &format!("      - name: app\n        url: {}\n", app.url("/a")),
    );
    running.signal("-HUP");
    let admin = TestClient::plain(running.admin);
    // The delivery is not killed: it waits in the store, visibly orphaned.
    let subscribers = admin
        .get_until(
            "/api/v1/subscribers",
            Some("admin-secret-token"),
            Duration::from_secs(10),
            "the removed subscriber to show as orphaned",
            |v| {
                v["subscribers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["subscriber"] == "doomed" && s["configured"] == false)
            },
        )
        .await;
    let doomed = subscribers["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subscriber"] == "doomed")
        .unwrap()
        .clone();
    assert_eq!(doomed["orphaned"], 1, "{doomed}");
    assert_eq!(doomed["pending"], 1, "{doomed}");
    assert_eq!(doomed["dead_letters"], 0, "{doomed}");
    let (_, m) = scrape(&admin).await;
    assert_eq!(
        sample(
            &m,
            "hookrelay_deliveries_orphaned",
            &[("route", "muapi"), ("subscriber", "doomed")]
        ),
        1.0
    );
    assert_eq!(
        admin
            .send(
                "GET",
                "/api/v1/dead-letters",
                &[("authorization", "Bearer admin-secret-token")],
                ""
            )
            .await
            .body["dead_letters"],
        serde_json::json!([])
    );
    // A configured subscriber's deliveries are not orphans.
    let refused = admin
        .post(
            "/api/v1/orphans/resolve",
            "admin-secret-token",
            r#"{"route":"muapi","subscriber":"app"}"#,
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    // The operator resolves them: they become dead letters (replayable).
    let resolved = admin
        .post(
            "/api/v1/orphans/resolve",
            "admin-secret-token",
            r#"{"route":"muapi","subscriber":"doomed"}"#,
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK);
    assert_eq!(resolved.body["dead_lettered"], 1);
    let letters = wait_dead(&admin, 1).await;
    let (_, m) = scrape(&admin).await;
    let doomed_labels = [("route", "muapi"), ("subscriber", "doomed")];
    assert_eq!(sample(&m, "hookrelay_dead_letters", &doomed_labels), 1.0);
    assert_eq!(
        sample(&m, "hookrelay_deliveries_orphaned", &doomed_labels),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            "hookrelay_deliveries_total",
            &[
                ("route", "muapi"),
                ("subscriber", "doomed"),
                ("outcome", "dead")
            ]
        ),
        1.0,
        "a delivery that died is counted as dead"
    );
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["subscriber"], "doomed");
    assert!(
        letter["dead_reason"]
            .as_str()
            .unwrap()
            .contains("subscriber removed"),
        "{letter}"
    );
}

#[tokio::test]
async fn a_request_finishing_after_the_shutdown_grace_is_never_a_silent_dead_letter() {
    // A request still receiving its body when `shutdown_grace` ends: either
    // it is cut (no 2xx) or, if it was acknowledged, it is delivered after
    // the restart. It must never be answered 200 and then turned into a
    // dead letter that was never sent.
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let app = Sink::start().await;
    let config = binary_config(
        dir.path(),
        &pki,
        "\"tok-gggg\"",
        &format!("      - name: app\n        url: {}\n", app.url("/a")),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("shutdown_grace: 5s", "shutdown_grace: 1s");
    std::fs::write(&config, text).unwrap();
    let mut running = spawn(&config).await;
    let body = muapi_body("late-1", "completed");
    let mut open = half_request(&pki, running.ingress, "tok-gggg", &body).await;
    // A slow admin client (its request head half sent) keeps the admin
    // listener draining for its own grace: in 0.1 that kept the process
    // alive past `shutdown_grace`, long enough to accept the late request.
    let mut slow_admin = tokio::net::TcpStream::connect(running.admin).await.unwrap();
    slow_admin
        .write_all(b"GET /readyz HTTP/1.1\r\n")
        .await
        .unwrap();
    let signalled = Instant::now();
    running.signal("-TERM");
    // An orchestrator watching readiness holds a keep-alive connection to
    // the admin listener while the gateway drains (this kept 0.1 alive past
    // the grace, long enough to accept the late request and then kill its
    // delivery).
    let watcher = TestClient::plain(running.admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while watcher.send("GET", "/readyz", &[], "").await.status != StatusCode::SERVICE_UNAVAILABLE {
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Time passing is what this test is about: finish the body after the grace.
    tokio::time::sleep(Duration::from_millis(1300).saturating_sub(signalled.elapsed())).await;
    let sent = open.write_all(&body.as_bytes()[10..]).await.is_ok() && open.flush().await.is_ok();
    let answer = if sent {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).to_string()
    } else {
        String::new()
    };
    let exit = tokio::time::timeout(Duration::from_secs(20), running.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    let acknowledged = answer.starts_with("HTTP/1.1 200");
    let restarted = spawn(&config).await;
    let admin = TestClient::plain(restarted.admin);
    if acknowledged {
        app.wait_for(1, Duration::from_secs(10)).await;
    }
    let letters = admin
        .send(
            "GET",
            "/api/v1/dead-letters",
            &[("authorization", "Bearer admin-secret-token")],
            "",
        )
        .await;
    assert_eq!(
        letters.body["dead_letters"],
        serde_json::json!([]),
        "answer was {answer:?}"
    );
    let subs = admin
        .get_until(
            "/api/v1/subscribers",
            Some("admin-secret-token"),
            Duration::from_secs(10),
            "nothing pending",
            |v| v["subscribers"][0]["pending"] == 0,
        )
        .await;
    assert_eq!(subs["subscribers"][0]["dead_letters"], 0);
}

#[tokio::test]
async fn readyz_is_503_while_draining_and_open_requests_finish() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let app = Sink::start().await;
    let config = binary_config(
        dir.path(),
        &pki,
        "\"tok-dddd\"",
        &format!("      - name: app\n        url: {}\n", app.url("/a")),
    );
    let mut running = spawn(&config).await;
    let admin = TestClient::plain(running.admin);
    assert_eq!(
        admin.send("GET", "/readyz", &[], "").await.status,
        StatusCode::OK
    );
    let body = muapi_body("drain-1", "completed");
    let open = half_request(&pki, running.ingress, "tok-dddd", &body).await;
    running.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A keep-alive connection closing under a request is retried; the
        // admin listener itself stays up until the drain is over.
        let ready = admin.try_send("GET", "/readyz", &[], "").await;
        if ready.is_ok_and(|r| r.status == StatusCode::SERVICE_UNAVAILABLE) {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // New connections are refused while the open request may finish.
    let answer = finish_request(open, &body).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let exit = tokio::time::timeout(Duration::from_secs(20), running.child.wait())
        .await
        .expect("exits after draining")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    // Acknowledged during the drain, so durable: delivered now or after the
    // restart (shutdown stops starting new attempts).
    let _restarted = spawn(&config).await;
    app.wait_for(1, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn dead_letters_cli_lists_and_replays_through_the_admin_api() {
    let OneDeadLetter {
        app: _app,
        dying,
        gw,
        event_id,
        ..
    } = one_dead_letter("cli-1").await;
    let url = format!("http://{}", gw.admin);
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(["dead-letters"])
            .args(args)
            .args(["--admin", &url])
            .env("HOOKRELAY_ADMIN_TOKEN", "admin-secret-token");
        command
    };
    let table = cli(&["list", "--route", "muapi"]).output().await.unwrap();
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains(&format!("{event_id}.dying")), "{text}");
    assert!(text.contains("HTTP 410"), "{text}");
    assert!(text.contains("1 dead letter(s)"), "{text}");
    let json = cli(&["list", "--json", "--limit", "5"])
        .output()
        .await
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["dead_letters"][0]["subscriber"], "dying");
    // Without the token the CLI fails with the API's reason.
    let denied = tokio::process::Command::new(BIN)
        .args(["dead-letters", "list", "--admin", &url])
        .env_remove("HOOKRELAY_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));

    dying.set_default(Reply::Status(200, vec![]));
    let replay = cli(&["replay", "--route", "muapi", "--subscriber", "dying"])
        .output()
        .await
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&replay.stdout).trim(),
        "requeued 1 dead letter(s)"
    );
    dying.wait_for(2, Duration::from_secs(10)).await;
    gw.gateway.shutdown().await;
}

#[tokio::test]
async fn api_reload_applies_a_good_file_and_counts_a_refused_one() {
    let app = Sink::start().await;
    let dying = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookrelay.yaml");
    let text = config(&app, &dying, true)
        .replace("{store}", &dir.path().join("data").display().to_string())
        .replace("{tls}\n", "");
    std::fs::write(&path, &text).unwrap();
    let gateway = hookrelay::Gateway::start(hookrelay::Config::load(&path).unwrap())
        .await
        .unwrap();
    let admin = TestClient::plain(gateway.admin_addr);
    let client = TestClient::plain(gateway.ingress_addr);
    // Series exist at zero before anything happened.
    let (_, m) = scrape(&admin).await;
    assert_eq!(
        sample(&m, "hookrelay_config_reloads_total", &[("result", "error")]),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            "hookrelay_ingress_requests_total",
            &[("route", "muapi"), ("outcome", "unavailable")]
        ),
        0.0
    );
    std::fs::write(&path, text.replace(TOKEN, "rotated-token-1234")).unwrap();
    let ok = admin
        .send("POST", "/api/v1/reload", &[("authorization", ADMIN)], "")
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let rotated = client
        .post(
            "/hooks/muapi",
            "rotated-token-1234",
            &muapi_body("api-reload", "completed"),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    std::fs::write(&path, "server: {listen: nope}\n").unwrap();
    let refused = admin
        .send("POST", "/api/v1/reload", &[("authorization", ADMIN)], "")
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body["problems"][0]
        .as_str()
        .unwrap()
        .contains("server.listen"));
    let (_, m) = scrape(&admin).await;
    assert_eq!(
        sample(&m, "hookrelay_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        sample(&m, "hookrelay_config_reloads_total", &[("result", "error")]),
        1.0
    );
    let still = client
        .post(
            "/hooks/muapi",
            "rotated-token-1234",
            &muapi_body("api-reload-2", "completed"),
        )
        .await;
    assert_eq!(still.status, StatusCode::OK);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_reload_names_each_setting_that_needs_a_restart_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let app = Sink::start().await;
    let subs = format!("      - name: app\n        url: {}\n", app.url("/a"));
    let config = binary_config(dir.path(), &pki, "\"tok-hhhh\"", &subs);
    let running = spawn(&config).await;
    let text = std::fs::read_to_string(&config).unwrap();
    let moved = text
        .replace(
            "admin:\n  listen: \"127.0.0.1:0\"",
            "admin:\n  listen: \"127.0.0.1:1\"",
        )
        .replace(
            &format!("store:\n  path: \"{}\"", dir.path().join("data").display()),
            &format!(
                "store:\n  path: \"{}\"\n  max_batch: 7",
                dir.path().join("data").display()
            ),
        )
        .replace("level: debug", "level: info");
    assert_ne!(moved, text);
    std::fs::write(&config, moved).unwrap();
    running.signal("-HUP");
    eventually(Duration::from_secs(10), "the reload to be logged", || {
        running.log_text().contains("config reloaded")
    })
    .await;
    let logs = running.log_text();
    for key in ["admin.listen", "store.max_batch", "log.level"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("changes only after a restart")
                    && l.contains(&format!("\"key\":\"{key}\""))),
            "{key} not named: {logs}"
        );
    }
    // The admin listener stays where it was.
    let admin = TestClient::plain(running.admin);
    assert_eq!(
        admin.send("GET", "/healthz", &[], "").await.status,
        StatusCode::OK
    );
}
