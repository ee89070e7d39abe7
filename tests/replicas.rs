//! Several replicas on one PostgreSQL database: callbacks taken by any
//! replica are delivered; the same callback at two replicas at once is one
//! event; a replica killed with -9 leaves its work to the others after the
//! lease, never delivering it twice at the same time; the database going
//! away means 503 (never 2xx) and recovery without a restart; replicas
//! starting together apply migrations once; a bad URL is one clear error.
//!
//! Each test has a schema of its own (tests/common/pg.rs), dropped after.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg::TestSchema;
use common::*;
use http::StatusCode;

const TOKEN: &str = "replica-token";

/// A replica's config file, on the test schema.
fn replica_config(dir: &Path, name: &str, db: &TestSchema, lease: &str, subs: &str) -> PathBuf {
    let text = format!(
        r#"server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
  token: admin-token
{store}shutdown_grace: 2s
log:
  format: json
  level: info
defaults:
  timeout: 2s
  retry: {{ initial_interval: 100ms, max_interval: 1s, max_elapsed: 10m, jitter: 0.0 }}
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth: {{ tokens: ["{TOKEN}"] }}
    subscribers:
{subs}"#,
        store = db.store_yaml(lease)
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn subs(sinks: &[(&str, &Sink)]) -> String {
    sinks
        .iter()
        .map(|(name, sink)| format!("      - name: {name}\n        url: {}\n", sink.url("/x")))
        .collect()
}

/// The webhook-ids a sink received, with how often.
fn received_ids(sink: &Sink) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in sink.received() {
        *out.entry(r.headers["webhook-id"].to_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

#[tokio::test]
async fn two_replicas_share_the_work_and_a_simultaneous_duplicate_is_one_event() {
    let db = TestSchema::new();
    let dir = tempfile::tempdir().unwrap();
    let app = Sink::start().await;
    let analytics = Sink::start().await;
    let subs = subs(&[("app", &app), ("analytics", &analytics)]);
    let a = spawn(&replica_config(dir.path(), "a", &db, "5s", &subs)).await;
    let b = spawn(&replica_config(dir.path(), "b", &db, "5s", &subs)).await;
    let clients = [TestClient::plain(a.ingress), TestClient::plain(b.ingress)];

    let mut accepted = HashSet::new();
    for i in 0..300 {
        let answer = clients[i % 2]
            .post(
                "/hooks/muapi",
                TOKEN,
                &muapi_body(&format!("spread-{i}"), "completed"),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(answer.body["status"], "accepted");
        accepted.insert(answer.body["event_id"].as_str().unwrap().to_string());
    }
    for (name, sink) in [("app", &app), ("analytics", &analytics)] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = received_ids(sink);
            let missing = accepted.iter().filter(|id| !got.contains_key(*id)).count();
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} callbacks never reached {name}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The same callback at both replicas at the same instant.
    let body = muapi_body("both-at-once", "completed");
    let (one, two) = tokio::join!(
        clients[0].post("/hooks/muapi", TOKEN, &body),
        clients[1].post("/hooks/muapi", TOKEN, &body)
    );
    let mut statuses = vec![
        one.body["status"].as_str().unwrap().to_string(),
        two.body["status"].as_str().unwrap().to_string(),
    ];
    statuses.sort();
    assert_eq!(statuses, vec!["accepted", "duplicate"]);
    assert_eq!(one.body["event_id"], two.body["event_id"]);
    let id = one.body["event_id"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(10),
        "the duplicate's one delivery",
        || received_ids(&app).get(&id) == Some(&1),
    )
    .await;
    // Any replica's admin API sees the shared store.
    let admin_b = TestClient::plain(b.admin);
    let view = admin_b
        .send(
            "GET",
            &format!("/api/v1/events/{id}"),
            &[("authorization", "Bearer admin-token")],
            "",
        )
        .await;
    assert_eq!(view.status, StatusCode::OK);
    assert_eq!(view.body["deliveries"].as_array().unwrap().len(), 2);
    assert_eq!(received_ids(&app).get(&id), Some(&1), "delivered once");
}

#[tokio::test]
async fn a_killed_replicas_deliveries_go_to_the_other_after_the_lease() {
    let db = TestSchema::new();
    let dir = tempfile::tempdir().unwrap();
    // A slow subscriber: attempts are in flight when the replica dies.
    let slow = Sink::start().await;
    slow.set_default(Reply::Delay(200, Duration::from_millis(1500)));
    let subs = subs(&[("app", &slow)]);
    // Lease 3s, longer than the 2s attempt timeout.
    let mut a = spawn(&replica_config(dir.path(), "a", &db, "3s", &subs)).await;
    let b = spawn(&replica_config(dir.path(), "b", &db, "3s", &subs)).await;
    let client = TestClient::plain(a.ingress);
    let mut acked = HashSet::new();
    for i in 0..20 {
        let answer = client
            .post(
                "/hooks/muapi",
                TOKEN,
                &muapi_body(&format!("crash-{i}"), "completed"),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        acked.insert(answer.body["event_id"].as_str().unwrap().to_string());
    }
    eventually(
        Duration::from_secs(10),
        "attempts in flight at the doomed replica",
        || slow.open_now() > 0,
    )
    .await;
    let killed_at = Instant::now();
    a.child.start_kill().unwrap();
    let _ = a.child.wait().await;

    // Replica B delivers everything A acknowledged: the shared store says
    // delivered for each (a request the sink saw whose answer A never
    // recorded does not count).
    let admin_b = TestClient::plain(b.admin);
    for id in &acked {
        admin_b
            .get_until(
                &format!("/api/v1/events/{id}"),
                Some("admin-token"),
                Duration::from_secs(60),
                "every acknowledged callback to be delivered",
                |v| v["deliveries"][0]["state"] == "delivered",
            )
            .await;
    }
    eventually(
        Duration::from_secs(10),
        "the sink to finish its answers",
        || slow.open_now() == 0,
    )
    .await;
    // Never two attempts of one delivery at the same time.
    let mut by_id: HashMap<String, Vec<(Instant, Instant)>> = HashMap::new();
    for (id, start, end) in slow.intervals() {
        by_id
            .entry(id)
            .or_default()
            .push((start, end.expect("all finished")));
    }
    let mut retaken = 0;
    for (id, mut spans) in by_id {
        spans.sort();
        for pair in spans.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1,
                "{id} was attempted twice at the same time"
            );
            if pair[1].0 > killed_at {
                retaken += 1;
            }
        }
    }
    println!("{retaken} deliveries re-attempted by the surviving replica");
    assert!(retaken > 0, "the surviving replica never took over");
    assert!(b.log_text().contains("hookrelay listening"));
}

/// A TCP proxy in front of PostgreSQL that the test can cut and restore,
/// or arm to lose the server's answer to one `COMMIT`.
struct Proxy {
    addr: SocketAddr,
    up: Arc<Mutex<bool>>,
    cut: Arc<tokio::sync::Notify>,
    /// When set: the connection whose client sends these bytes has the
    /// server's next answer that holds a `COMMIT` command tag swallowed
    /// (the commit is carried out, its answer never arrives), and is
    /// closed.
    ambush: Arc<Mutex<Option<Vec<u8>>>>,
    /// Set once an armed ambush has swallowed a `COMMIT`'s answer.
    sprung: Arc<std::sync::atomic::AtomicBool>,
    /// When set: the connection whose client sends these bytes is closed on
    /// the client's side as soon as the client's `COMMIT` has been passed
    /// on, while the server's side stays open and its answers are read and
    /// dropped (the server finishes the transaction for a client that is
    /// gone).
    detach: Arc<Mutex<Option<Vec<u8>>>>,
    /// Set once a detached server side has answered its `COMMIT`.
    committed_alone: Arc<std::sync::atomic::AtomicBool>,
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(Mutex::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let ambush: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(None));
        let sprung = Arc::new(AtomicBool::new(false));
        let detach: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(None));
        let committed_alone = Arc::new(AtomicBool::new(false));
        let (up2, cut2, ambush2, sprung2) =
            (up.clone(), cut.clone(), ambush.clone(), sprung.clone());
        let (detach2, alone2) = (detach.clone(), committed_alone.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !*up2.lock().unwrap() {
                    continue; // refused: dropped at once
                }
                let (cut, ambush, sprung) = (cut2.clone(), ambush2.clone(), sprung2.clone());
                let (detach, alone) = (detach2.clone(), alone2.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let marked = AtomicBool::new(false);
                    let detaching = AtomicBool::new(false);
                    let detached = AtomicBool::new(false);
                    let upstream = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        // The end of the previous read, so that a marker
                        // split over two reads is still seen.
                        let mut seen = Vec::new();
                        let mut after_mark = Vec::new();
                        loop {
                            let n = from_client.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            seen.drain(..seen.len().saturating_sub(64));
                            seen.extend_from_slice(&buf[..n]);
                            let armed = ambush.lock().unwrap().clone();
                            if armed.is_some_and(|m| holds(&seen, &m)) {
                                marked.store(true, Ordering::SeqCst);
                            }
                            // What the client sent from the marker on: the
                            // COMMIT looked for is the one after it.
                            if detaching.load(Ordering::SeqCst) {
                                after_mark.extend_from_slice(&buf[..n]);
                            } else if let Some(m) = detach.lock().unwrap().clone() {
                                if let Some(at) = seen.windows(m.len()).position(|w| w == m) {
                                    detaching.store(true, Ordering::SeqCst);
                                    after_mark = seen[at..].to_vec();
                                }
                            }
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            if detaching.load(Ordering::SeqCst) && holds(&after_mark, b"COMMIT\0") {
                                detach.lock().unwrap().take();
                                detached.store(true, Ordering::SeqCst);
                                return; // the client's side closes below
                            }
                        }
                    };
                    let downstream = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = from_server.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            if marked.load(Ordering::SeqCst) && holds(&buf[..n], b"COMMIT\0") {
                                ambush.lock().unwrap().take();
                                sprung.store(true, Ordering::SeqCst);
                                return; // the answer is lost; both sides close
                            }
                            if to_client.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = upstream => {}
                        _ = downstream => {}
                        _ = cut.notified() => {}
                    }
                    if detached.load(Ordering::SeqCst) {
                        drop((from_client, to_client));
                        // The server carries on alone: read its answers
                        // until the one to the COMMIT.
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = from_server.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            if holds(&buf[..n], b"COMMIT\0") {
                                alone.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            up,
            cut,
            ambush,
            sprung,
            detach,
            committed_alone,
        }
    }

    fn cut(&self) {
        *self.up.lock().unwrap() = false;
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        *self.up.lock().unwrap() = true;
    }

    /// Arms the ambush for the transaction that carries `marker`.
    fn lose_the_commit_answer_of(&self, marker: &str) {
        *self.ambush.lock().unwrap() = Some(marker.as_bytes().to_vec());
    }

    /// Arms the detach for the transaction that carries `marker`.
    fn leave_the_server_alone_with(&self, marker: &str) {
        *self.detach.lock().unwrap() = Some(marker.as_bytes().to_vec());
    }

    fn committed_alone(&self) -> bool {
        self.committed_alone
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn sprung(&self) -> bool {
        self.sprung.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The address of the test database's server, for a proxy to forward to.
async fn server_of(db: &TestSchema) -> SocketAddr {
    let hostport = db
        .url
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    tokio::net::lookup_host(hostport)
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// A gateway on the test schema reached through `proxy`, delivering to
/// `sink` within `timeout`.
async fn gateway_behind(
    db: &TestSchema,
    server: SocketAddr,
    proxy: &Proxy,
    sink: &Sink,
    timeout: &str,
) -> hookrelay::Gateway {
    let proxied_url = db.url.replace(&server.to_string(), &proxy.addr.to_string());
    let yaml = format!(
        r#"
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
  token: admin-token
{store}defaults:
  timeout: {timeout}
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth: {{ tokens: ["{TOKEN}"] }}
    subscribers:
      - name: app
        url: {url}
"#,
        store = db.store_yaml_at(&proxied_url, "10s"),
        url = sink.url("/x")
    );
    hookrelay::Gateway::start(hookrelay::Config::from_yaml(&yaml, &|_| None).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn losing_the_database_means_503_then_recovery_without_a_restart() {
    let db = TestSchema::new();
    let server = server_of(&db).await;
    let proxy = Proxy::start(server).await;
    let slow = Sink::start().await;
    slow.set_default(Reply::Delay(200, Duration::from_millis(800)));
    let gw = gateway_behind(&db, server, &proxy, &slow, "5s").await;
    let client = TestClient::plain(gw.ingress_addr);
    let admin = TestClient::plain(gw.admin_addr);
    let first = client
        .post(
            "/hooks/muapi",
            TOKEN,
            &muapi_body("before-outage", "completed"),
        )
        .await;
    assert_eq!(first.body["status"], "accepted");
    let first_id = first.body["event_id"].as_str().unwrap().to_string();
    // Its attempt is in flight when the database goes away.
    eventually(Duration::from_secs(10), "the attempt in flight", || {
        slow.open_now() == 1
    })
    .await;
    proxy.cut();
    // Ingress answers 503 with Retry-After, never 2xx; readiness turns 503.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = client
            .post(
                "/hooks/muapi",
                TOKEN,
                &muapi_body("during-outage", "completed"),
            )
            .await;
        assert_ne!(answer.status, StatusCode::OK, "a 2xx without a database");
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(answer.headers.contains_key("retry-after"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 503 while the database is gone"
        );
    }
    admin
        .get_until(
            "/readyz",
            None,
            Duration::from_secs(10),
            "/readyz to turn 503",
            |v| v["status"] == "not ready",
        )
        .await;
    // The attempt finished meanwhile (200): its result waits for the database.
    eventually(
        Duration::from_secs(10),
        "the in-flight attempt to end",
        || slow.open_now() == 0,
    )
    .await;
    proxy.restore();
    admin
        .get_until(
            "/readyz",
            None,
            Duration::from_secs(20),
            "/readyz to recover",
            |v| v["status"] == "ready",
        )
        .await;
    let after = client
        .post(
            "/hooks/muapi",
            TOKEN,
            &muapi_body("after-outage", "completed"),
        )
        .await;
    assert_eq!(after.body["status"], "accepted");
    slow.wait_for(2, Duration::from_secs(20)).await;
    // The result recorded after the outage: delivered once, not again.
    let view = admin
        .get_until(
            &format!("/api/v1/events/{first_id}"),
            Some("admin-token"),
            Duration::from_secs(20),
            "the first delivery's result to be recorded",
            |v| v["deliveries"][0]["state"] == "delivered",
        )
        .await;
    assert_eq!(view["deliveries"][0]["attempts"], 1);
    assert_eq!(received_ids(&slow).get(&first_id), Some(&1));
    // Counted once each, when its result was written (not when it failed
    // to be). The metric moves after the writer reads the server's answer
    // to its COMMIT, which a reader on another connection may see before:
    // wait until both deliveries are recorded, then for the count, and
    // check that it never passes 2.
    let second_id = after.body["event_id"].as_str().unwrap().to_string();
    admin
        .get_until(
            &format!("/api/v1/events/{second_id}"),
            Some("admin-token"),
            Duration::from_secs(20),
            "the second delivery's result to be recorded",
            |v| v["deliveries"][0]["state"] == "delivered",
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivered = loop {
        let page = String::from_utf8(admin.send_raw("GET", "/metrics").await).unwrap();
        let delivered = page
            .lines()
            .find(|l| {
                l.starts_with("hookrelay_deliveries_total{") && l.contains(r#"outcome="delivered""#)
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if delivered >= 2 || Instant::now() > deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(delivered, 2, "each delivery counted exactly once");
    assert_eq!(received_ids(&slow).len(), 2);
    assert!(received_ids(&slow).values().all(|n| *n == 1));
    gw.shutdown().await;
}

/// A gateway whose store reaches the test database through a [`Proxy`],
/// with one callback accepted and delivered: the writer's connections are
/// open and have prepared their statements.
struct Proxied {
    gw: hookrelay::Gateway,
    client: TestClient,
    sink: Sink,
    proxy: Proxy,
    db: TestSchema,
}

async fn proxied_and_warm() -> Proxied {
    let db = TestSchema::new();
    let server = server_of(&db).await;
    let proxy = Proxy::start(server).await;
    let sink = Sink::start().await;
    let gw = gateway_behind(&db, server, &proxy, &sink, "5s").await;
    let client = TestClient::plain(gw.ingress_addr);
    let warm = client
        .post("/hooks/muapi", TOKEN, &muapi_body("warm-up", "completed"))
        .await;
    assert_eq!(warm.body["status"], "accepted");
    sink.wait_for(1, Duration::from_secs(20)).await;
    Proxied {
        gw,
        client,
        sink,
        proxy,
        db,
    }
}

/// The connection fails after the batch's `COMMIT` was carried out but
/// before its answer arrived: the caller is answered 503 (the gateway
/// cannot know), and the deliveries that commit created must not stay
/// claimed by this live replica, which holds no lane for them: they are
/// released and delivered without a restart, and muapi's retry of the
/// callback answers `duplicate`.
#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_still_delivered_without_a_restart() {
    // Bound schema first, so that it drops last.
    let Proxied {
        db: _db,
        proxy,
        sink,
        client,
        gw,
    } = proxied_and_warm().await;
    proxy.lose_the_commit_answer_of("lost-commit-answer");
    let body = muapi_body("lost-commit-answer", "completed");
    let first = client.post("/hooks/muapi", TOKEN, &body).await;
    assert!(proxy.sprung(), "the proxy did not meet the batch's COMMIT");
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "an unanswered commit is not a 2xx: {:?}",
        first.body
    );
    // Its deliveries were committed; they reach the subscriber.
    sink.wait_for(2, Duration::from_secs(30)).await;
    let delivered: Vec<_> = sink
        .received()
        .into_iter()
        .filter(|r| holds(&r.body, b"lost-commit-answer"))
        .collect();
    assert_eq!(delivered.len(), 1, "delivered once");
    // muapi's retry is a duplicate of that event. The lost connection marked
    // the database unreachable until the next health check (each second),
    // so a retry may first meet a 503 with Retry-After, as a sender would.
    let deadline = Instant::now() + Duration::from_secs(10);
    let retry = loop {
        let answer = client.post("/hooks/muapi", TOKEN, &body).await;
        if answer.status != StatusCode::SERVICE_UNAVAILABLE {
            break answer;
        }
        assert!(answer.headers.contains_key("retry-after"));
        assert!(
            Instant::now() < deadline,
            "still 503 after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.body["status"], "duplicate");
    assert_eq!(
        retry.body["event_id"].as_str().unwrap(),
        delivered[0].headers["webhook-id"].to_str().unwrap()
    );
    gw.shutdown().await;
}

/// Whether, within 10 s, a backend of `schema`'s batch is seen waiting for
/// a lock while another session waits for that backend's advisory lock.
async fn release_waits_for_batch(db: &tokio_postgres::Client, schema: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = format!("{schema}.events");
    while Instant::now() < deadline {
        let waiting: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity b
                   JOIN pg_locks h ON h.pid = b.pid AND h.locktype = 'advisory' AND h.granted
                   JOIN pg_locks w ON w.locktype = 'advisory' AND NOT w.granted
                    AND w.classid = h.classid AND w.objid = h.objid AND w.objsubid = h.objsubid
                 WHERE b.wait_event_type = 'Lock' AND position($1 in b.query) > 0",
                &[&events],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// As above, but the server is still running the transaction when its
/// client learns the connection is gone: the batch waits for a lock the
/// test holds, and commits only after the gateway has answered 503 and
/// started to give the claims back. The release must wait for that end
/// (it takes the batch's advisory lock first); a release that ran at once
/// would find nothing, and the deliveries committed after it would stay
/// claimed by this live replica for good.
#[tokio::test]
async fn a_commit_still_running_when_its_client_is_gone_is_released_once_it_ends() {
    // Bound schema first, so that it drops last.
    let Proxied {
        db,
        proxy,
        sink,
        client,
        gw,
    } = proxied_and_warm().await;
    // A session of the test's own holds back every insert of an event
    // while it holds an advisory lock: a trigger waits for that lock when
    // the insert runs (not when it is planned, so a connection that has not
    // prepared the statement yet is held back at the same point). The
    // session's connection runs on a thread of its own, so that a failing
    // test still closes it (and its lock) before the schema is dropped.
    let (blocker, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(connection)
    });
    let hold: i64 = 0x686f_6c64_0000_0000 | i64::from(rand::random::<u32>());
    blocker
        .batch_execute(&format!(
            "CREATE FUNCTION {s}.hold_inserts() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_advisory_xact_lock({hold}); RETURN NEW; END $$;
             CREATE TRIGGER hold BEFORE INSERT ON {s}.events
               FOR EACH ROW EXECUTE FUNCTION {s}.hold_inserts();
             SELECT pg_advisory_lock({hold})",
            s = db.schema
        ))
        .await
        .unwrap();
    proxy.leave_the_server_alone_with("still-running-commit");
    let body = muapi_body("still-running-commit", "completed");
    let first = tokio::time::timeout(
        Duration::from_secs(30),
        client.post("/hooks/muapi", TOKEN, &body),
    )
    .await
    .expect("the callback was not answered");
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "an unanswered commit is not a 2xx: {:?}",
        first.body
    );
    // The batch is still running on the server, waiting for the lock; the
    // gateway's release waits for the batch's own lock. (Checked before the
    // lock is given up, asserted after: a failure must not leave the lock
    // held, or dropping the schema would wait for it.)
    let release_waits = release_waits_for_batch(&blocker, &db.schema).await;
    // The batch goes on and commits for a client that is gone; then the
    // release gives its claims back and the deliveries go out.
    blocker
        .batch_execute(&format!("SELECT pg_advisory_unlock({hold})"))
        .await
        .unwrap();
    assert!(
        release_waits,
        "the release did not wait for the unanswered batch to end"
    );
    sink.wait_for(2, Duration::from_secs(30)).await;
    assert!(
        proxy.committed_alone(),
        "the server did not commit the batch"
    );
    let delivered = sink
        .received()
        .into_iter()
        .filter(|r| holds(&r.body, b"still-running-commit"))
        .count();
    assert_eq!(delivered, 1, "delivered once");
    gw.shutdown().await;
}

#[tokio::test]
async fn replicas_starting_together_apply_each_migration_once() {
    use hookrelay::store::postgres::{migrate, PostgresOptions};
    let db = TestSchema::new();
    let options = PostgresOptions {
        url: db.url.clone(),
        pool_size: 2,
        schema: db.schema.clone(),
        lease: Duration::from_secs(30),
        max_batch: 16,
        observer: None,
        ca_certs: Vec::new(),
    };
    let (one, two, three) = tokio::join!(migrate(&options), migrate(&options), migrate(&options));
    let runs = vec![one, two, three];
    let mut applied: Vec<i32> = runs.into_iter().flat_map(|r| r.unwrap()).collect();
    applied.sort();
    let every: Vec<i32> = (1..=applied.len() as i32).collect();
    assert!(applied.len() >= 3, "{applied:?}");
    assert_eq!(applied, every, "each migration applied exactly once");
    // A fourth start finds the schema up to date.
    assert!(migrate(&options).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_database_at_start_is_one_clear_error_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let db = TestSchema {
        url: "postgres://hookrelay:s3cret-password@127.0.0.1:1/nowhere?sslmode=disable".into(),
        schema: "unused".into(),
    };
    let config = replica_config(dir.path(), "bad", &db, "30s", &subs(&[("app", &sink)]));
    let out = tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let plain: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("hookrelay:"))
        .collect();
    assert_eq!(plain.len(), 1, "{stderr}");
    assert!(plain[0].contains("PostgreSQL"), "{stderr}");
    assert!(
        !stderr.contains("s3cret-password"),
        "the password leaked: {stderr}"
    );
    // A database that does not exist says so, too.
    let real = TestSchema::new();
    let missing = TestSchema {
        url: real
            .url
            .replace("/test?", "/no_such_database?")
            .replace("/postgres?", "/no_such_database?"),
        schema: "unused".into(),
    };
    let config = replica_config(
        dir.path(),
        "missing",
        &missing,
        "30s",
        &subs(&[("app", &sink)]),
    );
    let out = tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no_such_database"), "{stderr}");
}
