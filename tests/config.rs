//! The config loader through the built binary: `check-config` output, `run`
//! refusing a bad file, and the reload paths (SIGHUP and `POST
//! /api/v1/reload`) never echoing a value from the file or the environment.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use http::StatusCode;
use tokio::process::Command;

/// What the environment holds for `${HOOKRELAY_TEST_SECRET}`: it must never
/// appear in any output.
const SECRET: &str = "s3cret-Zq9-value-never-shown";
const ADMIN: &str = "Bearer admin-token-config-tests";

fn config_text(dir: &Path, tokens: &str, extra: &str) -> String {
    format!(
        r#"
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
  token: admin-token-config-tests
store:
  path: "{store}"
shutdown_grace: 2s
log:
  format: json
  level: info
{extra}routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth:
      tokens: {tokens}
    subscribers:
      - name: app
        url: http://127.0.0.1:9/x
        signing_secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
"#,
        store = dir.join("data").display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn check_config(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .env("HOOKRELAY_TEST_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Issue 9 item 2: a secret interpolated where a list belongs is not echoed.
#[tokio::test]
async fn check_config_never_prints_a_secret_put_where_a_list_belongs() {
    let dir = tempfile::tempdir().unwrap();
    let bad = config_text(dir.path(), "\"${HOOKRELAY_TEST_SECRET}\"", "").replace(
        "signing_secrets: [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]",
        "signing_secrets: \"${HOOKRELAY_TEST_SECRET}\"",
    );
    let path = write(dir.path(), "bad.yaml", &bad);
    let (code, out) = check_config(&path).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(!out.contains(SECRET), "the secret leaked:\n{out}");
    assert!(out.contains("routes[0].auth.tokens"), "{out}");
    assert!(
        out.contains("routes[0].subscribers[0].signing_secrets"),
        "{out}"
    );
    assert!(out.contains("list"), "the expected type is named:\n{out}");
}

/// Issue 9 item 5: every problem of the file in one run.
#[tokio::test]
async fn check_config_names_type_errors_unknown_keys_and_bad_values_together() {
    let dir = tempfile::tempdir().unwrap();
    let bad = config_text(dir.path(), "[\"t0ken\"]", "surprise: 1\n")
        .replace(
            "listen: \"127.0.0.1:0\"\nadmin",
            "listen: nope\n  max_body_bytes: lots\nadmin",
        )
        .replace("http://127.0.0.1:9/x", "ftp://127.0.0.1/x");
    let path = write(dir.path(), "bad.yaml", &bad);
    let (code, out) = check_config(&path).await;
    assert_eq!(code, Some(2), "{out}");
    for key in [
        "server.listen",
        "server.max_body_bytes",
        "surprise",
        "routes[0].subscribers[0].url",
    ] {
        assert!(out.contains(key), "{key} not named in:\n{out}");
    }
    assert!(!out.contains("nope") && !out.contains("lots"), "{out}");
}

/// Issue 9 item 16: an overflowing duration is a problem, not a panic
/// (exit 101), for `check-config` and for `run`.
#[tokio::test]
async fn an_overflowing_duration_is_listed_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), "[\"t0ken\"]", "").replace(
        "shutdown_grace: 2s",
        "shutdown_grace: 199999999999999d99999999999999d",
    );
    let path = write(dir.path(), "overflow.yaml", &text);
    let (code, out) = check_config(&path).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("shutdown_grace"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 9 items 2 and 16 on the reload paths: the API's answer and the
/// "config reload refused" log line name the key, never the secret, and an
/// overflowing duration on SIGHUP is refused without a panic.
#[tokio::test]
async fn reloads_refuse_bad_files_without_echoing_or_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let good = config_text(dir.path(), "[\"${HOOKRELAY_TEST_SECRET}\"]", "");
    let path = write(dir.path(), "hookrelay.yaml", &good);
    let mut command = Command::new(BIN);
    command
        .args(["run", "--config"])
        .arg(&path)
        .env("HOOKRELAY_TEST_SECRET", SECRET);
    let running = spawn_command(command).await;
    let admin = TestClient::plain(running.admin);

    // A secret where a list belongs, through the API.
    write(
        dir.path(),
        "hookrelay.yaml",
        &config_text(dir.path(), "\"${HOOKRELAY_TEST_SECRET}\"", ""),
    );
    let refused = admin
        .send("POST", "/api/v1/reload", &[("authorization", ADMIN)], "")
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let body = refused.body.to_string();
    assert!(body.contains("routes[0].auth.tokens"), "{body}");
    assert!(!body.contains(SECRET), "the secret leaked: {body}");

    // The same file through SIGHUP.
    let refusals = |running: &Running| running.log_text().matches("config reload refused").count();
    let before = refusals(&running);
    running.signal("-HUP");
    eventually(Duration::from_secs(10), "the SIGHUP reload refused", || {
        refusals(&running) > before
    })
    .await;

    assert!(
        running.log_text().contains("routes[0].auth.tokens"),
        "the refusal names the key"
    );

    // An overflowing duration through SIGHUP: refused, the process lives on.
    write(
        dir.path(),
        "hookrelay.yaml",
        &good.replace(
            "shutdown_grace: 2s",
            "shutdown_grace: 199999999999999d99999999999999d",
        ),
    );
    let before = refusals(&running);
    running.signal("-HUP");
    eventually(
        Duration::from_secs(10),
        "the overflow reload refused",
        || refusals(&running) > before,
    )
    .await;
    let logs = running.log_text();
    assert!(logs.contains("shutdown_grace"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(!logs.contains(SECRET), "the secret leaked into the logs");
    let health = admin.send("GET", "/healthz", &[], "").await;
    assert_eq!(health.status, StatusCode::OK);
}

/// The shipped example config passes `check-config` as it is.
#[tokio::test]
async fn the_shipped_example_config_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hookrelay.yaml");
    let (code, out) = check_config(&path).await;
    assert_eq!(code, Some(0), "{out}");
}
