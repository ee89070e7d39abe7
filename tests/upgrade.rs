//! A store written by hookrelay 0.1 (redb 2 file format, JSON records) is
//! converted at start: every pending delivery is still delivered, dead
//! letters and delivered history survive, keys still answer `duplicate`,
//! and the old file is kept as a backup.
//!
//! The fixture was made by hookrelay 0.1 itself: six muapi callbacks
//! (`fixture-task-1`..`5` completed, `fixture-task-6` failed) to a route
//! with `app` (unreachable: all six pending, one failed attempt each),
//! `ok` (delivered) and `gone` (failed only; answered 410: a dead letter).

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;

#[tokio::test]
async fn a_store_from_0_1_is_converted_and_its_pending_deliveries_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut old = Vec::new();
    flate2::read::GzDecoder::new(&include_bytes!("fixtures/store-0.1.redb.gz")[..])
        .read_to_end(&mut old)
        .unwrap();
    std::fs::write(data.join("hookrelay.redb"), &old).unwrap();

    let app = Sink::start().await;
    let ok = Sink::start().await;
    let gone = Sink::start().await;
    let yaml = format!(
        r#"
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
  token: admin-token
store:
  path: "{}"
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth: {{ tokens: ["fixture-token"] }}
    subscribers:
      - name: app
        url: {}
      - name: ok
        url: {}
      - name: gone
        url: {}
        when: {{ status: [failed] }}
"#,
        data.display(),
        app.url("/a"),
        ok.url("/o"),
        gone.url("/g")
    );
    let config = hookrelay::Config::from_yaml(&yaml, &|_| None).unwrap();
    let gateway = hookrelay::Gateway::start(config).await.unwrap();
    assert!(
        data.join("hookrelay.redb.0.1.bak").exists(),
        "the old file is kept"
    );

    // Every pending delivery of 0.1 is delivered, once.
    app.wait_for(6, Duration::from_secs(15)).await;
    let mut ids: Vec<String> = app
        .received()
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            body["id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        (1..=6)
            .map(|n| format!("fixture-task-{n}"))
            .collect::<Vec<_>>()
    );
    // Attempt numbers continue from 0.1's (one failed attempt each).
    assert!(app
        .received()
        .iter()
        .all(|r| r.headers["hookrelay-attempt"] == "2"));
    assert_eq!(ok.count(), 0, "delivered in 0.1, not again");
    assert_eq!(gone.count(), 0, "a dead letter waits for a replay");

    let admin = TestClient::plain(gateway.admin_addr);
    let auth = [("authorization", "Bearer admin-token")];
    let letters = admin.send("GET", "/api/v1/dead-letters", &auth, "").await;
    let letters = letters.body["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["subscriber"], "gone");
    assert_eq!(letters[0]["dead_reason"], "subscriber answered 410 Gone");
    assert_eq!(letters[0]["history"][0]["status"], 410);

    // fixture-task-1 completed: event id as 0.1 made it, history kept.
    let event = admin
        .get_until(
            "/api/v1/events/HfJRCZKUB9If47OkesYvfA",
            Some("admin-token"),
            Duration::from_secs(10),
            "the converted event to show app delivered",
            |v| {
                v["deliveries"]
                    .as_array()
                    .is_some_and(|d| d.iter().all(|d| d["state"] == "delivered"))
            },
        )
        .await;
    let ok_delivery = event["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["subscriber"] == "ok")
        .unwrap()
        .clone();
    assert_eq!(ok_delivery["history"][0]["status"], 200);

    // Keys survive: the same callback is a duplicate with the same id.
    let client = TestClient::plain(gateway.ingress_addr);
    let again = client
        .post(
            "/hooks/muapi",
            "fixture-token",
            r#"{"id":"fixture-task-1","status":"completed"}"#,
        )
        .await;
    assert_eq!(again.body["status"], "duplicate");
    assert_eq!(again.body["event_id"], "HfJRCZKUB9If47OkesYvfA");
    // A replay of the dead letter reaches the subscriber.
    let replayed = admin
        .post(
            "/api/v1/dead-letters/replay",
            "admin-token",
            &format!(r#"{{"ids":["{}"]}}"#, letters[0]["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(replayed.body["requeued"], 1);
    gone.wait_for(1, Duration::from_secs(10)).await;
    gateway.shutdown().await;
}
