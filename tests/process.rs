//! The built binary as a child process: `check-config`, clean exit on
//! SIGTERM, crash safety under `kill -9`, and resuming persisted retry
//! schedules after a restart.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use tokio::process::Command;
const TOKEN: &str = "process-token";

fn write_config(dir: &Path, pki: &Pki, subscribers: &str, retry: &str) -> std::path::PathBuf {
    let tls = tls_block(pki, dir);
    let text = format!(
        r#"
server:
  listen: "127.0.0.1:0"
{tls}admin:
  listen: "127.0.0.1:0"
  token: admin-token
store:
  path: "{store}"
shutdown_grace: 2s
log:
  format: json
  level: info
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
{subscribers}"#,
        store = dir.join("data").display()
    );
    let path = dir.join("hookrelay.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn check_config_accepts_valid_and_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let good = write_config(
        dir.path(),
        &pki,
        "      - name: app\n        url: http://127.0.0.1:9/x\n",
        "    jitter: 0.0\n",
    );
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad_text = std::fs::read_to_string(&good)
        .unwrap()
        .replace("path: /hooks/muapi", "path: hooks/muapi")
        .replace("http://127.0.0.1:9/x", "ftp://127.0.0.1/x")
        .replace("    jitter: 0.0", "    jitter: 0.0\n    multiplier: 0.1");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, bad_text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "routes[0].path",
        "routes[0].subscribers[0].url",
        "defaults.retry.multiplier",
    ] {
        assert!(stderr.contains(key), "{key} not named in:\n{stderr}");
    }
    // `run` refuses the same file with exit 2.
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A missing environment variable is named.
    let env_text = std::fs::read_to_string(&good)
        .unwrap()
        .replace("admin-token", "${HOOKRELAY_TEST_UNSET_VAR}");
    let env_file = dir.path().join("env.yaml");
    std::fs::write(&env_file, env_text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&env_file)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOOKRELAY_TEST_UNSET_VAR"));
}

#[tokio::test]
async fn sigterm_exits_zero_after_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let sink = Sink::start().await;
    let config = write_config(
        dir.path(),
        &pki,
        &format!("      - name: app\n        url: {}\n", sink.url("/x")),
        "    jitter: 0.0\n",
    );
    let mut running = spawn(&config).await;
    let client = TestClient::tls(&pki, running.ingress, Proto::Http1);
    let ok = client
        .post("/hooks/muapi", TOKEN, &muapi_body("term-1", "completed"))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    sink.wait_for(1, Duration::from_secs(10)).await;
    let pid = running.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), running.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    // Its last lines may still be in the pipe when it exits.
    eventually(Duration::from_secs(5), "the shutdown to be logged", || {
        running.log_text().contains("shutdown complete")
    })
    .await;
    // The store was closed cleanly: the next start needs no repair.
    let again = spawn(&config).await;
    let log = again.log_text();
    assert!(
        !log.contains("not closed cleanly"),
        "a clean SIGTERM left the store needing repair: {log}"
    );
}

#[tokio::test]
async fn kill_9_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let sinks = [Sink::start().await, Sink::start().await];
    let subs = format!(
        "      - name: app\n        url: {}\n      - name: analytics\n        url: {}\n",
        sinks[0].url("/a"),
        sinks[1].url("/b")
    );
    let config = write_config(
        dir.path(),
        &pki,
        &subs,
        "    initial_interval: 100ms\n    max_interval: 500ms\n    jitter: 0.0\n",
    );
    let mut running = spawn(&config).await;

    // Several senders; record every acknowledged callback (body and event id).
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut senders = Vec::new();
    for worker in 0..4 {
        let client = TestClient::tls(&pki, running.ingress, Proto::Http1);
        let acked = acked.clone();
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..500 {
                if stop.is_cancelled() {
                    break;
                }
                let body = muapi_body(&format!("crash-{worker}-{i}"), "completed");
                let send = client.try_post("/hooks/muapi", TOKEN, &body);
                match tokio::time::timeout(Duration::from_secs(5), send).await {
                    Ok(Ok(answer)) if answer.status == StatusCode::OK => {
                        let id = answer.body["event_id"].as_str().unwrap().to_string();
                        acked.lock().unwrap().insert(id, body);
                    }
                    _ => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 150 {
        assert!(Instant::now() < deadline, "callbacks were not acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.child.start_kill().unwrap();
    let _ = running.child.wait().await;
    stop.cancel();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    println!("{} callbacks acknowledged before kill -9", acked.len());

    let running = spawn(&config).await;
    // The repair is noticed (and logged) after a crash; a clean shutdown
    // never triggers it (see sigterm_exits_zero_after_a_clean_shutdown).
    assert!(
        running.log_text().contains("not closed cleanly"),
        "no repair logged after kill -9"
    );
    let expected: HashSet<&String> = acked.keys().collect();
    for (name, sink) in ["app", "analytics"].iter().zip(&sinks) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got: HashSet<String> = sink
                .received()
                .iter()
                .map(|r| r.headers["webhook-id"].to_str().unwrap().to_string())
                .collect();
            let missing = expected.iter().filter(|id| !got.contains(**id)).count();
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} acknowledged callbacks never reached {name}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Resent after the restart: answered duplicate with the same event id.
    let client = TestClient::tls(&pki, running.ingress, Proto::Http2);
    for (id, body) in acked.iter().take(50) {
        let again = client.post("/hooks/muapi", TOKEN, body).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.body["status"], "duplicate");
        assert_eq!(again.body["event_id"], id.as_str());
    }
}

#[tokio::test]
async fn restart_resumes_retries_at_their_persisted_due_times() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let sink = Sink::start().await;
    sink.script(vec![Reply::Status(500, vec![])]);
    let config = write_config(
        dir.path(),
        &pki,
        &format!("      - name: app\n        url: {}\n", sink.url("/x")),
        "    initial_interval: 4s\n    max_interval: 10s\n    jitter: 0.0\n",
    );
    let mut running = spawn(&config).await;
    let client = TestClient::tls(&pki, running.ingress, Proto::Http1);
    let answer = client
        .post("/hooks/muapi", TOKEN, &muapi_body("resume-1", "completed"))
        .await;
    let event_id = answer.body["event_id"].as_str().unwrap().to_string();
    sink.wait_for(1, Duration::from_secs(10)).await;
    let first = sink.received()[0].at;
    // Wait until the failed attempt and its next due time are persisted.
    let admin = TestClient::plain(running.admin);
    admin
        .get_until(
            &format!("/api/v1/events/{event_id}"),
            Some("admin-token"),
            Duration::from_secs(10),
            "the first attempt to be persisted",
            |v| v["deliveries"][0]["attempts"] == 1,
        )
        .await;
    running.child.start_kill().unwrap();
    let _ = running.child.wait().await;
    let _restarted = spawn(&config).await;
    sink.wait_for(2, Duration::from_secs(20)).await;
    let second = &sink.received()[1];
    let gap = second.at - first;
    println!("second attempt {gap:?} after the first (persisted backoff 4s)");
    assert_eq!(
        second.headers["hookrelay-attempt"], "2",
        "the schedule resumes, not restarts"
    );
    assert!(
        gap >= Duration::from_millis(3900),
        "fired early after restart: {gap:?}"
    );
    assert!(
        gap < Duration::from_secs(10),
        "fired late after restart: {gap:?}"
    );
}

#[tokio::test]
async fn a_second_process_on_the_same_store_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let config = write_config(
        dir.path(),
        &pki,
        "      - name: app\n        url: http://127.0.0.1:9/x\n",
        "    jitter: 0.0\n",
    );
    let _first = spawn(&config).await;
    let second = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .output(),
    )
    .await
    .expect("the second process exits")
    .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another hookrelay process"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_full_disk_answers_503_with_retry_after_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let sink = Sink::start().await;
    let config = write_config(
        dir.path(),
        &pki,
        &format!("      - name: app\n        url: {}\n", sink.url("/x")),
        "    jitter: 0.0\n",
    );
    // The store file may not grow past ~4 MB: writes beyond fail like a full
    // disk (SIGXFSZ ignored, so the write returns EFBIG instead of killing).
    let mut command = Command::new("bash");
    command.arg("-c").arg(format!(
        "trap '' XFSZ; ulimit -S -f 4096; exec {BIN} run --config {}",
        config.display()
    ));
    let running = spawn_command(command).await;
    let client = TestClient::tls(&pki, running.ingress, Proto::Http1);
    // Incompressible padding (the store deflates bodies): hex of a
    // pseudo-random sequence, different for every callback.
    let pad = |i: usize| {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
        (0..25_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{:08x}", x as u32)
            })
            .collect::<String>()
    };
    let body = |i: usize| {
        serde_json::json!({"id": format!("disk-{i}"), "status": "completed", "pad": pad(i)})
            .to_string()
    };
    let mut accepted = HashSet::new();
    let mut refused = None;
    for i in 0..100 {
        let answer = client.post("/hooks/muapi", TOKEN, &body(i)).await;
        match answer.status {
            StatusCode::OK => {
                accepted.insert(answer.body["event_id"].as_str().unwrap().to_string());
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(answer.headers["retry-after"], "5");
                assert!(answer.body["error"]
                    .as_str()
                    .unwrap()
                    .contains("retry later"));
                refused = Some(i);
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let refused = refused.expect("the store never filled up");
    println!(
        "{} callbacks accepted before the disk filled; #{refused} got 503",
        accepted.len()
    );
    // Space comes back; the sender's retry of the refused callback is accepted.
    let pid = running.child.id().unwrap().to_string();
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited"])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = client.post("/hooks/muapi", TOKEN, &body(refused)).await;
        if answer.status == StatusCode::OK {
            assert_eq!(
                answer.body["status"], "accepted",
                "a refused callback was not stored"
            );
            accepted.insert(answer.body["event_id"].as_str().unwrap().to_string());
            break;
        }
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "the store never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: HashSet<String> = sink
            .received()
            .iter()
            .map(|r| r.headers["webhook-id"].to_str().unwrap().to_string())
            .collect();
        if accepted.iter().all(|id| got.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "accepted callbacks were not all delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_during_startup_is_a_clean_shutdown() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookrelay.yaml");
    // A self-signed certificate: its warning is logged while the gateway is
    // still starting, which tells the test when to send the signal.
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: \"127.0.0.1:0\"\n  tls: {{ self_signed: [localhost] }}\nadmin:\n  listen: \"127.0.0.1:0\"\nstore:\n  path: \"{}\"\nlog: {{ format: json }}\nroutes:\n  - name: muapi\n    path: /hooks/muapi\n    source: muapi\n    auth: {{ tokens: [t] }}\n    subscribers: [{{ name: app, url: \"http://127.0.0.1:9/x\" }}]\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let pid = child.id().unwrap().to_string();
    let mut signalled = false;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        if !signalled && line.contains("self-signed") {
            // Mid-start: the signal must be queued, not kill the process.
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap();
            signalled = true;
        }
    }
    assert!(signalled, "the start-up warning never appeared");
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}
