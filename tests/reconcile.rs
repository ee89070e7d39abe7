//! No lost task result: the submit proxy, expected tasks and reconciliation
//! against a fake muapi (tests/common/muapi.rs) that implements the submit
//! and result endpoints and calls the webhook as scripted.

mod common;

use std::time::{Duration, Instant};

use common::muapi::{result_body, FakeMuapi, PollAnswer, Script};
use common::*;
use http::StatusCode;

/// A token with a `+`: the callback URL must carry it intact.
const TOKEN: &str = "rec+token";
const API_KEY: &str = "muapi-key-do-not-log-7f3a";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup<'a> {
    port: u16,
    store: &'a str,
    fake: &'a FakeMuapi,
    sink: &'a Sink,
    reconcile_after: &'a str,
    give_up_after: &'a str,
    log: &'a str,
}

fn config(s: &Setup) -> String {
    format!(
        r#"
server:
  listen: "127.0.0.1:{port}"
admin:
  listen: "127.0.0.1:0"
  token: admin-token
{store}shutdown_grace: 2s
{log}defaults:
  retry: {{ initial_interval: 100ms, max_interval: 1s, max_elapsed: 10m, jitter: 0.0 }}
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth: {{ tokens: ["{TOKEN}"] }}
    muapi:
      api_key: "{API_KEY}"
      base_url: "{base}"
      public_url: "http://127.0.0.1:{port}/hooks/muapi"
      reconcile_after: {reconcile_after}
      poll: {{ initial_interval: 100ms, max_interval: 1s }}
      give_up_after: {give_up_after}
    subscribers:
      - name: app
        url: {sink}
"#,
        port = s.port,
        store = if s.store.starts_with("store:") {
            s.store.to_string()
        } else {
            format!("store:\n  path: \"{}\"\n", s.store)
        },
        base = s.fake.base_url(),
        reconcile_after = s.reconcile_after,
        give_up_after = s.give_up_after,
        log = s.log,
        sink = s.sink.url("/app"),
    )
}

async fn start(s: &Setup<'_>) -> hookrelay::Gateway {
    let config = hookrelay::Config::from_yaml(&config(s), &|_| None).unwrap();
    hookrelay::Gateway::start(config).await.unwrap()
}

async fn submit(client: &TestClient) -> String {
    let answer = client
        .send(
            "POST",
            "/hooks/muapi/submit/flux-dev-image",
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "application/json"),
            ],
            r#"{"prompt":"a lighthouse at dusk","seed":7}"#,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "processing");
    answer.body["request_id"].as_str().unwrap().to_string()
}

async fn task(admin: &TestClient, id: &str) -> serde_json::Value {
    let list = admin
        .send(
            "GET",
            "/api/v1/expected?route=muapi",
            &[("authorization", "Bearer admin-token")],
            "",
        )
        .await;
    list.body["expected"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
async fn submitted_task_whose_callback_comes_is_delivered_once_and_never_polled() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeMuapi::start().await;
    let sink = Sink::start().await;
    let port = free_port();
    let store = dir.path().join("data").display().to_string();
    let setup = Setup {
        port,
        store: &store,
        fake: &fake,
        sink: &sink,
        reconcile_after: "800ms",
        give_up_after: "1h",
        log: "",
    };
    let gw = start(&setup).await;
    let client = TestClient::plain(gw.ingress_addr);
    let admin = TestClient::plain(gw.admin_addr);
    fake.next_script(Script {
        callback_after: Some(Duration::from_millis(100)),
        ..Script::default()
    });
    let id = submit(&client).await;

    // muapi got the body verbatim, the key, and the route's callback URL.
    let sub = &fake.submissions()[0];
    assert_eq!(sub.endpoint, "flux-dev-image");
    assert_eq!(
        &sub.body[..],
        br#"{"prompt":"a lighthouse at dusk","seed":7}"#
    );
    assert_eq!(sub.api_key.as_deref(), Some(API_KEY));
    assert_eq!(
        sub.webhook.as_deref(),
        Some(format!("http://127.0.0.1:{port}/hooks/muapi?token=rec%2Btoken").as_str())
    );
    assert_eq!(sub.request_id, id);
    // Listed as expected.
    assert!(task(&admin, &id).await.is_object());

    // The callback arrives: delivered once, the task done by callback.
    sink.wait_for(1, Duration::from_secs(10)).await;
    let done = admin
        .get_until(
            "/api/v1/expected?route=muapi&state=done",
            Some("admin-token"),
            Duration::from_secs(10),
            "the task to be done",
            |v| v["expected"].as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    assert_eq!(done["expected"][0]["settled_by"], "callback");
    // Past reconcile_after (time passing is the thing tested): no poll.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fake.poll_count(),
        0,
        "a task whose callback came was polled"
    );
    assert_eq!(sink.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_task_without_callback_is_reconciled_once_and_the_late_callback_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeMuapi::start().await;
    let sink = Sink::start().await;
    let store = dir.path().join("data").display().to_string();
    let setup = Setup {
        port: free_port(),
        store: &store,
        fake: &fake,
        sink: &sink,
        reconcile_after: "300ms",
        give_up_after: "1h",
        log: "",
    };
    let gw = start(&setup).await;
    let client = TestClient::plain(gw.ingress_addr);
    let admin = TestClient::plain(gw.admin_addr);
    fake.next_script(Script {
        polls: vec![
            PollAnswer::Status("processing"),
            PollAnswer::Status("processing"),
        ],
        ..Script::default()
    });
    let id = submit(&client).await;

    sink.wait_for(1, Duration::from_secs(15)).await;
    let delivery = &sink.received()[0];
    assert_eq!(delivery.headers["hookrelay-origin"], "reconciled");
    let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["status"], "completed");
    assert_eq!(
        fake.polls_of(&id).len(),
        3,
        "processing, processing, completed"
    );
    assert!(fake
        .poll_keys()
        .iter()
        .all(|k| k.as_deref() == Some(API_KEY)));
    let done = admin
        .get_until(
            "/api/v1/expected?route=muapi&state=done",
            Some("admin-token"),
            Duration::from_secs(10),
            "the task to be done, with its last poll counted",
            |v| v["expected"][0]["polls"] == 3,
        )
        .await;
    let t = &done["expected"][0];
    assert_eq!(t["id"], id.as_str());
    assert_eq!(t["settled_by"], "reconciled");
    assert_eq!(t["polls"], 3);
    // The event says how it arrived.
    let event_id = delivery.headers["webhook-id"].to_str().unwrap().to_string();
    let view = admin
        .send(
            "GET",
            &format!("/api/v1/events/{event_id}"),
            &[("authorization", "Bearer admin-token")],
            "",
        )
        .await;
    assert_eq!(view.body["event"]["origin"], "reconciled");
    // The real callback, late: a duplicate, no second delivery.
    let late = client
        .post(
            &format!("/hooks/muapi?token={}", "rec%2Btoken"),
            TOKEN,
            &result_body(&id, "completed"),
        )
        .await;
    assert_eq!(late.body["status"], "duplicate");
    assert_eq!(late.body["event_id"], event_id.as_str());
    let page = String::from_utf8(admin.send_raw("GET", "/metrics").await).unwrap();
    assert!(
        page.contains(r#"hookrelay_reconciled_total{route="muapi",status="completed"} 1"#),
        "{page}"
    );
    assert!(page.contains(r#"hookrelay_reconcile_polls_total{result="pending",route="muapi"} 2"#));
    assert!(page.contains(r#"hookrelay_expected_tasks{route="muapi",state="done"} 1"#));
    assert_eq!(sink.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_result_whose_callbacks_all_failed_while_the_gateway_was_down_still_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeMuapi::start().await;
    let sink = Sink::start().await;
    let store = dir.path().join("data").display().to_string();
    let setup = Setup {
        port: free_port(),
        store: &store,
        fake: &fake,
        sink: &sink,
        reconcile_after: "500ms",
        give_up_after: "1h",
        log: "",
    };
    let gw = start(&setup).await;
    fake.next_script(Script {
        callback_after: Some(Duration::from_millis(500)),
        ..Script::default()
    });
    let id = submit(&TestClient::plain(gw.ingress_addr)).await;
    gw.shutdown().await;
    // muapi tries three times and gives up: nobody is listening.
    eventually(
        Duration::from_secs(10),
        "muapi's three failed callbacks",
        || fake.callbacks().len() == 3,
    )
    .await;
    assert!(fake.callbacks().iter().all(|(_, status)| *status == 0));
    let gw = start(&setup).await;
    sink.wait_for(1, Duration::from_secs(15)).await;
    let body: serde_json::Value = serde_json::from_slice(&sink.received()[0].body).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(sink.received()[0].headers["hookrelay-origin"], "reconciled");
    gw.shutdown().await;
}

#[tokio::test]
async fn retry_after_delays_the_next_poll_and_give_up_after_expires_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeMuapi::start().await;
    let sink = Sink::start().await;
    let store = dir.path().join("data").display().to_string();
    let setup = Setup {
        port: free_port(),
        store: &store,
        fake: &fake,
        sink: &sink,
        reconcile_after: "200ms",
        give_up_after: "4s",
        log: "",
    };
    let gw = start(&setup).await;
    let client = TestClient::plain(gw.ingress_addr);
    let admin = TestClient::plain(gw.admin_addr);
    // Throttled first: the next poll waits for Retry-After (1 s), not the
    // 100 ms initial interval.
    fake.next_script(Script {
        polls: vec![PollAnswer::Http(429, Some(1))],
        ..Script::default()
    });
    let throttled = submit(&client).await;
    // Never finishes: expires at give_up_after.
    fake.next_script(Script {
        polls: vec![PollAnswer::Status("processing"); 100],
        ..Script::default()
    });
    let endless = submit(&client).await;
    sink.wait_for(1, Duration::from_secs(15)).await;
    let polls = fake.polls_of(&throttled);
    assert_eq!(polls.len(), 2);
    let gap = polls[1].0 - polls[0].0;
    assert!(
        gap >= Duration::from_millis(950),
        "the poll after a 429 came {gap:?} later, before Retry-After"
    );
    assert!(gap < Duration::from_secs(3), "{gap:?}");
    let expired = admin
        .get_until(
            "/api/v1/expected?state=expired",
            Some("admin-token"),
            Duration::from_secs(15),
            "the endless task to expire",
            |v| v["expected"].as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    assert_eq!(expired["expected"][0]["id"], endless.as_str());
    assert!(fake.polls_of(&endless).len() >= 2);
    let page = String::from_utf8(admin.send_raw("GET", "/metrics").await).unwrap();
    assert!(page.contains(r#"hookrelay_expected_tasks{route="muapi",state="expired"} 1"#));
    assert!(page.contains(r#"hookrelay_reconcile_polls_total{result="throttled",route="muapi"} 1"#));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_refused_api_key_is_logged_once_and_the_key_appears_in_no_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeMuapi::start().await;
    let sink = Sink::start().await;
    let store = dir.path().join("data").display().to_string();
    let setup = Setup {
        port: free_port(),
        store: &store,
        fake: &fake,
        sink: &sink,
        reconcile_after: "200ms",
        give_up_after: "1h",
        log: "log: { format: json, level: debug }\n",
    };
    let path = dir.path().join("hookrelay.yaml");
    std::fs::write(&path, config(&setup)).unwrap();
    let running = spawn(&path).await;
    let client = TestClient::plain(running.ingress);
    fake.next_script(Script {
        polls: vec![PollAnswer::Http(401, None); 10],
        ..Script::default()
    });
    let id = submit(&client).await;
    // Registered through the API too (idempotent).
    let admin = TestClient::plain(running.admin);
    let again = admin
        .post(
            "/api/v1/expected",
            "admin-token",
            &format!(r#"{{"route":"muapi","id":"{id}"}}"#),
        )
        .await;
    assert_eq!(again.body["created"], false);
    // Ids and endpoints no store could keep are refused, named not quoted.
    for body in [
        r#"{"route":"muapi","id":"a\u0000b"}"#.to_string(),
        format!(r#"{{"route":"muapi","id":"{}"}}"#, "é".repeat(257)),
        r#"{"route":"muapi","id":"t-1","endpoint":"flux\u0000"}"#.to_string(),
    ] {
        let refused = admin.post("/api/v1/expected", "admin-token", &body).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
        let error = refused.body["error"].as_str().unwrap();
        assert!(error.contains("no control characters"), "{error}");
    }
    eventually(Duration::from_secs(10), "two refused polls", || {
        fake.polls_of(&id).len() >= 2
    })
    .await;
    let logs = running.log_text();
    assert_eq!(
        logs.matches("muapi refused the API key").count(),
        1,
        "logged once per period"
    );
    assert!(!logs.contains(API_KEY), "the API key reached a log line");
    assert!(
        !logs.contains("rec+token") && !logs.contains("rec%2Btoken"),
        "the token reached a log line"
    );
    let page = String::from_utf8(admin.send_raw("GET", "/metrics").await).unwrap();
    assert!(!page.contains(API_KEY));
    let answer = admin
        .send(
            "GET",
            "/api/v1/expected",
            &[("authorization", "Bearer admin-token")],
            "",
        )
        .await;
    assert!(!answer.body.to_string().contains(API_KEY));
}

#[tokio::test]
async fn polling_resumes_after_a_restart_and_never_runs_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeMuapi::start().await;
    let sink = Sink::start().await;
    let store = dir.path().join("data").display().to_string();
    let setup = Setup {
        port: free_port(),
        store: &store,
        fake: &fake,
        sink: &sink,
        reconcile_after: "100ms",
        give_up_after: "1h",
        log: "",
    };
    let gw = start(&setup).await;
    let client = TestClient::plain(gw.ingress_addr);
    let mut ids = Vec::new();
    for _ in 0..3 {
        fake.next_script(Script {
            polls: vec![PollAnswer::Status("processing"); 4],
            poll_delay: Duration::from_millis(300),
            ..Script::default()
        });
        ids.push(submit(&client).await);
    }
    eventually(Duration::from_secs(10), "polls under way", || {
        fake.poll_count() >= 3
    })
    .await;
    gw.shutdown().await;
    let gw = start(&setup).await;
    sink.wait_for(3, Duration::from_secs(30)).await;
    for id in &ids {
        let mut spans: Vec<(Instant, Instant)> = fake
            .polls_of(id)
            .into_iter()
            .map(|(start, end)| (start, end.unwrap_or_else(Instant::now)))
            .collect();
        spans.sort();
        assert_eq!(spans.len(), 5, "four processing then completed");
        for pair in spans.windows(2) {
            assert!(pair[1].0 >= pair[0].1, "{id} was polled twice at once");
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn on_postgresql_two_replicas_never_poll_one_task_at_once() {
    let db = common::pg::TestSchema::new();
    let fake = FakeMuapi::start().await;
    let sink = Sink::start().await;
    let store = db.store_yaml("30s");
    let setup_a = Setup {
        port: free_port(),
        store: &store,
        fake: &fake,
        sink: &sink,
        reconcile_after: "100ms",
        give_up_after: "1h",
        log: "",
    };
    let setup_b = Setup {
        port: free_port(),
        ..Setup { ..setup_a }
    };
    let a = start(&setup_a).await;
    let b = start(&setup_b).await;
    let client = TestClient::plain(a.ingress_addr);
    let mut ids = Vec::new();
    for _ in 0..4 {
        fake.next_script(Script {
            polls: vec![PollAnswer::Status("processing"); 3],
            poll_delay: Duration::from_millis(200),
            ..Script::default()
        });
        ids.push(submit(&client).await);
    }
    sink.wait_for(4, Duration::from_secs(30)).await;
    for id in &ids {
        let mut spans: Vec<(Instant, Instant)> = fake
            .polls_of(id)
            .into_iter()
            .map(|(start, end)| (start, end.unwrap_or_else(Instant::now)))
            .collect();
        spans.sort();
        assert_eq!(spans.len(), 4, "three processing then completed");
        for pair in spans.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1,
                "{id} was polled by two replicas at once"
            );
        }
    }
    // Each result delivered once.
    let mut delivered: Vec<String> = sink
        .received()
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    delivered.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(delivered, expected);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_submit_proxy_relays_muapi_errors_and_answers_502_when_it_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeMuapi::start().await;
    let sink = Sink::start().await;
    let store = dir.path().join("data").display().to_string();
    let setup = Setup {
        port: free_port(),
        store: &store,
        fake: &fake,
        sink: &sink,
        reconcile_after: "1m",
        give_up_after: "1h",
        log: "",
    };
    let gw = start(&setup).await;
    let client = TestClient::plain(gw.ingress_addr);
    let admin = TestClient::plain(gw.admin_addr);
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    // muapi's refusal passes through unchanged; nothing is expected.
    fake.next_script(Script {
        refuse_with: Some(422),
        ..Script::default()
    });
    let refused = client
        .send("POST", "/hooks/muapi/submit/flux-dev-image", &headers, "{}")
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["detail"], "prompt is required");
    // Authenticated like the route; endpoints stay under /api/v1/.
    let no_token = client
        .send("POST", "/hooks/muapi/submit/flux-dev-image", &[], "{}")
        .await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    let sneaky = client
        .send("POST", "/hooks/muapi/submit/../../admin", &headers, "{}")
        .await;
    assert!(sneaky.status == StatusCode::BAD_REQUEST || sneaky.status == StatusCode::NOT_FOUND);
    let listed = admin
        .send(
            "GET",
            "/api/v1/expected",
            &[("authorization", "Bearer admin-token")],
            "",
        )
        .await;
    assert_eq!(listed.body["expected"], serde_json::json!([]));
    gw.shutdown().await;

    // muapi unreachable: 502 with a JSON error.
    let closed = FakeMuapi::start().await;
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let text = config(&Setup {
        fake: &closed,
        ..Setup { ..setup }
    })
    .replace(&closed.base_url(), &unreachable);
    let gw = hookrelay::Gateway::start(hookrelay::Config::from_yaml(&text, &|_| None).unwrap())
        .await
        .unwrap();
    let client = TestClient::plain(gw.ingress_addr);
    let answer = client
        .send("POST", "/hooks/muapi/submit/flux-dev-image", &headers, "{}")
        .await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.body["error"]
        .as_str()
        .unwrap()
        .contains("muapi is unreachable"));
    gw.shutdown().await;
}
