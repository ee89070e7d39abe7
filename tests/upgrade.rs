//! Stores written by earlier builds open in this one.
//!
//! - hookrelay 0.1 (redb 2 file format, JSON records) is converted at start:
//!   every pending delivery is still delivered, dead letters and delivered
//!   history survive, keys still answer `duplicate`, and the old file is
//!   kept as a backup.
//! - Record version 1 (redb 4, the compact format with bodies kept raw;
//!   commit `4a8fa64`) is read as it is, beside the version 2 records (bodies
//!   deflated) this build writes.
//!
//! Both fixtures were made by the build they stand for, with the same
//! scenario: six muapi callbacks (`fixture-task-1`..`5` completed,
//! `fixture-task-6` failed; the bodies of `common::muapi_body` for the
//! version 1 fixture) to a route with `app` (answering 503 or unreachable:
//! all six pending, one failed attempt each, the next one far off), `ok`
//! (delivered) and `gone` (failed only; answered 410: a dead letter).

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;

fn fixture_config(data: &std::path::Path, app: &Sink, ok: &Sink, gone: &Sink) -> hookrelay::Config {
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
    hookrelay::Config::from_yaml(&yaml, &|_| None).unwrap()
}

/// Writes a gzipped fixture as the store file of a new data directory.
fn unpack_fixture(gz: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut old = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut old)
        .unwrap();
    std::fs::write(data.join("hookrelay.redb"), &old).unwrap();
    (dir, data)
}

#[tokio::test]
async fn a_store_from_0_1_is_converted_and_its_pending_deliveries_delivered() {
    let (_dir, data) = unpack_fixture(include_bytes!("fixtures/store-0.1.redb.gz"));

    let app = Sink::start().await;
    let ok = Sink::start().await;
    let gone = Sink::start().await;
    let config = fixture_config(&data, &app, &ok, &gone);
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

#[tokio::test]
async fn a_store_with_version_1_records_opens_and_its_pending_deliveries_are_delivered() {
    let (_dir, data) = unpack_fixture(include_bytes!("fixtures/store-v1.redb.gz"));
    let app = Sink::start().await;
    let ok = Sink::start().await;
    let gone = Sink::start().await;
    let gateway = hookrelay::Gateway::start(fixture_config(&data, &app, &ok, &gone))
        .await
        .unwrap();
    let expected_body = |n: u32| {
        let status = if n == 6 { "failed" } else { "completed" };
        muapi_body(&format!("fixture-task-{n}"), status)
    };

    // Every pending delivery is delivered once, its body byte for byte as
    // the version 1 record kept it, its attempt number continuing.
    app.wait_for(6, Duration::from_secs(15)).await;
    let mut bodies: Vec<String> = app
        .received()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    bodies.sort();
    let mut want: Vec<String> = (1..=6).map(expected_body).collect();
    want.sort();
    assert_eq!(bodies, want);
    assert!(app
        .received()
        .iter()
        .all(|r| r.headers["hookrelay-attempt"] == "2"));
    assert_eq!(ok.count(), 0, "delivered before, not again");
    assert_eq!(gone.count(), 0, "a dead letter waits for a replay");

    // The admin API reads the old records: lengths, history, dead letter.
    let admin = TestClient::plain(gateway.admin_addr);
    let auth = [("authorization", "Bearer admin-token")];
    let event = admin
        .get_until(
            "/api/v1/events/HfJRCZKUB9If47OkesYvfA",
            Some("admin-token"),
            Duration::from_secs(10),
            "fixture-task-1 to show app delivered",
            |v| {
                v["deliveries"]
                    .as_array()
                    .is_some_and(|d| d.iter().all(|d| d["state"] == "delivered"))
            },
        )
        .await;
    assert_eq!(event["event"]["body_len"], expected_body(1).len());
    assert_eq!(event["event"]["body"], expected_body(1));
    let letters = admin.send("GET", "/api/v1/dead-letters", &auth, "").await;
    let letters = letters.body["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["dead_reason"], "subscriber answered 410 Gone");

    // Keys answer `duplicate` with the same id; a new callback is stored in
    // the new format beside the old records and delivered.
    let client = TestClient::plain(gateway.ingress_addr);
    let again = client
        .post("/hooks/muapi", "fixture-token", &expected_body(1))
        .await;
    assert_eq!(again.body["status"], "duplicate");
    assert_eq!(again.body["event_id"], "HfJRCZKUB9If47OkesYvfA");
    let fresh = muapi_body("fixture-task-7", "completed");
    let accepted = client.post("/hooks/muapi", "fixture-token", &fresh).await;
    assert_eq!(accepted.body["status"], "accepted");
    ok.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(ok.received()[0].body, fresh.as_bytes());

    // A replay of the old dead letter delivers its old body.
    let replayed = admin
        .post(
            "/api/v1/dead-letters/replay",
            "admin-token",
            &format!(r#"{{"ids":["{}"]}}"#, letters[0]["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(replayed.body["requeued"], 1);
    gone.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(gone.received()[0].body, expected_body(6).as_bytes());
    gateway.shutdown().await;

    // The file now says layout 3 (it holds version-2 records), so a build
    // that reads only version-1 records refuses it at open.
    use redb::ReadableDatabase as _;
    let db = redb::Database::open(data.join("hookrelay.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn
        .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
        .unwrap();
    assert_eq!(meta.get("format").unwrap().unwrap().value(), 3);
}
