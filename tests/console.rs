//! Browser tests of the operator console: headless Chromium, driven over
//! WebDriver (chromedriver, started here on a free loopback port) with
//! fantoccini, against a real gateway started in-process and real sinks.
//!
//! Run with `cargo test --features browser-tests --test console` (plain
//! `cargo test` does not build this file). Without Chromium or its driver
//! these tests FAIL and say what to install: Debian's `chromium` and
//! `chromium-driver` (`HOOKRELAY_CHROMIUM` / `HOOKRELAY_CHROMEDRIVER` name
//! other binaries).
//!
//! Every test writes a screenshot of each page it checks to
//! `target/console-screenshots/` (or `$HOOKRELAY_SCREENSHOTS`), plus
//! `<test>-FAILED.png` and the page's text when a step fails.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use http::StatusCode;
use serde_json::json;

const ADMIN_TOKEN: &str = "console-admin-token-0123";
const INGRESS_TOKEN: &str = "console-ingress-token";
/// How long a step may take before it fails (a page refreshes every 3 s).
const STEP: Duration = Duration::from_secs(20);

type Step<T = ()> = Result<T, String>;

/// Fails the step with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Where screenshots go: `$HOOKRELAY_SCREENSHOTS`, else
/// `<target dir>/console-screenshots`.
fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("HOOKRELAY_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("the target dir")
                .join("console-screenshots")
        });
    std::fs::create_dir_all(&dir).expect("screenshot dir can be created");
    dir
}

/// A binary named by `env`, else the first of `names` on `PATH`; the test
/// fails (it does not skip) when there is none.
fn binary(env: &str, names: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env} names {}, which is not a file",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the browser tests need {} on PATH (or {env} set): install Debian's \
         chromium and chromium-driver (`apt-get install -y chromium chromium-driver`); \
         `.ci/run` does this itself",
        names.join(" or ")
    );
}

/// chromedriver on a free loopback port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Driver {
    async fn start(dir: &Path) -> Driver {
        let exe = binary("HOOKRELAY_CHROMEDRIVER", &["chromedriver"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = dir.join("chromedriver.log");
        let child = Command::new(&exe)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let client = TestClient::plain(addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(answer) = client.try_send("GET", "/status", &[], "").await {
                if answer.body["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready within 30 s (log: {})",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver {
            child,
            url: format!("http://{addr}"),
            log,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session and what a test step needs from it.
struct Browser {
    client: Client,
    name: &'static str,
    shots: PathBuf,
    _profile: tempfile::TempDir,
    driver: Driver,
}

impl Browser {
    /// A fresh browser (own profile) for the test `name`.
    async fn start(name: &'static str) -> Browser {
        let chromium = binary(
            "HOOKRELAY_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let profile = tempfile::tempdir().unwrap();
        let driver = Driver::start(profile.path()).await;
        let user_data = profile.path().join("profile");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--disable-default-apps",
                    "--disable-domain-reliability",
                    "--disable-client-side-phishing-detection",
                    "--no-pings",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", user_data.display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start {}: {e} (log: {})",
                    chromium.display(),
                    driver.log.display()
                )
            });
        Browser {
            client,
            name,
            shots: screenshot_dir(),
            _profile: profile,
            driver,
        }
    }

    /// Runs a test's steps; on failure, saves a screenshot and the page's
    /// text, then panics with the step's message.
    async fn run(&self, steps: impl std::future::Future<Output = Step>) {
        let outcome = steps.await;
        if let Err(message) = outcome {
            let _ = self.shot("FAILED").await;
            let text = match self.client.find(Locator::Css("body")).await {
                Ok(body) => body.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let _ = self.client.clone().close().await;
            panic!(
                "{}: {message}\n--- page text ---\n{text}\n--- screenshots in {} (chromedriver log: {})",
                self.name,
                self.shots.display(),
                self.driver.log.display()
            );
        }
        let _ = self.client.clone().close().await;
    }

    /// Writes `<test>-<what>.png`.
    async fn shot(&self, what: &str) -> Step<PathBuf> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| format!("screenshot {what}: {e}"))?;
        let path = self.shots.join(format!("{}-{what}.png", self.name));
        std::fs::write(&path, png).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(path)
    }

    async fn goto(&self, url: &str) -> Step {
        self.client
            .goto(url)
            .await
            .map_err(|e| format!("open {url}: {e}"))
    }

    /// Waits until `css` matches a displayed element whose text contains
    /// `text`; returns that text.
    async fn wait_text(&self, css: &str, text: &str) -> Step<String> {
        let deadline = Instant::now() + STEP;
        let mut last = String::from("(no such element)");
        loop {
            if let Ok(elements) = self.client.find_all(Locator::Css(css)).await {
                for element in elements {
                    if let (Ok(true), Ok(seen)) =
                        (element.is_displayed().await, element.text().await)
                    {
                        if seen.contains(text) {
                            return Ok(seen);
                        }
                        last = seen;
                    }
                }
            }
            ensure!(
                Instant::now() < deadline,
                "no `{css}` showing {text:?} within {STEP:?}; last seen: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `script` (a function body returning a value) returns true.
    async fn wait_js(&self, script: &str, what: &str) -> Step {
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(serde_json::Value::Bool(true)) = self.client.execute(script, vec![]).await {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn js(&self, script: &str) -> Step<serde_json::Value> {
        self.client
            .execute(script, vec![])
            .await
            .map_err(|e| format!("script failed: {e}"))
    }

    /// Clicks the displayed element `css` (waiting for it).
    async fn click(&self, css: &str) -> Step {
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if matches!(element.is_displayed().await, Ok(true)) && element.click().await.is_ok()
                {
                    return Ok(());
                }
            }
            ensure!(Instant::now() < deadline, "cannot click `{css}`");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces the text of the input `css` with `text`.
    async fn fill(&self, css: &str, text: &str) -> Step {
        let element = self
            .client
            .wait()
            .at_most(STEP)
            .for_element(Locator::Css(css))
            .await
            .map_err(|e| format!("no `{css}`: {e}"))?;
        element
            .clear()
            .await
            .map_err(|e| format!("clear {css}: {e}"))?;
        element
            .send_keys(text)
            .await
            .map_err(|e| format!("type into {css}: {e}"))
    }

    /// Logs in through the form with `token`.
    async fn login(&self, token: &str) -> Step {
        self.wait_text("#login", "Admin token").await?;
        self.fill("#token", token).await?;
        self.click("#login-submit").await
    }
}

/// The console's URL on a gateway.
fn console(gateway: &TestGateway, hash: &str) -> String {
    format!("http://{}/console/{hash}", gateway.admin)
}

struct Sinks {
    app: Sink,
    analytics: Sink,
    archive: Sink,
}

/// Three subscribers: `app` (answers 200), `analytics` (answers 500: it
/// fails, and its circuit opens after `breaker` failures) and `archive`
/// (answers 410: every delivery becomes a dead letter).
async fn gateway(admin_token: Option<&str>, breaker: u32) -> (TestGateway, Sinks) {
    let sinks = Sinks {
        app: Sink::start().await,
        analytics: Sink::start().await,
        archive: Sink::start().await,
    };
    sinks.analytics.set_default(Reply::Status(500, vec![]));
    sinks.archive.set_default(Reply::Status(410, vec![]));
    let token = admin_token
        .map(|t| format!("  token: \"{t}\"\n"))
        .unwrap_or_default();
    let yaml = format!(
        r#"
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
{token}store:
  path: "{{store}}"
shutdown_grace: 1s
defaults:
  retry: {{ initial_interval: 100ms, multiplier: 2.0, max_interval: 300ms, max_elapsed: 1h, jitter: 0.0 }}
  circuit_breaker: {{ failure_threshold: {breaker}, cooldown: 10m }}
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth:
      tokens: ["{INGRESS_TOKEN}"]
    subscribers:
      - name: app
        url: {}
      - name: analytics
        url: {}
      - name: archive
        url: {}
"#,
        sinks.app.url("/app"),
        sinks.analytics.url("/analytics"),
        sinks.archive.url("/archive"),
    );
    (TestGateway::start(&yaml, None).await, sinks)
}

/// Posts a callback body; returns its event id.
async fn post(gateway: &TestGateway, body: &str, headers: &[(&str, &str)]) -> String {
    let auth = format!("Bearer {INGRESS_TOKEN}");
    let mut all = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    all.extend_from_slice(headers);
    let answer = TestClient::plain(gateway.ingress)
        .send("POST", "/hooks/muapi", &all, body.to_string())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["event_id"].as_str().unwrap().to_string()
}

fn admin(gateway: &TestGateway) -> TestClient {
    TestClient::plain(gateway.admin)
}

/// Waits until the admin API shows `n` dead letters of `archive`.
async fn dead_letters(gateway: &TestGateway, n: usize) -> Vec<serde_json::Value> {
    admin(gateway)
        .get_until(
            "/api/v1/dead-letters?subscriber=archive",
            Some(ADMIN_TOKEN),
            STEP,
            &format!("{n} dead letters"),
            |v| v["dead_letters"].as_array().is_some_and(|a| a.len() == n),
        )
        .await["dead_letters"]
        .as_array()
        .unwrap()
        .clone()
}

/// Log in (a wrong token first: the error state), see the failing
/// subscriber with its last error and open circuit, and the healthy one;
/// then the gateway stops: the console says the admin API is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_subscribers_and_unreachable_api() {
    let (gw, sinks) = gateway(Some(ADMIN_TOKEN), 3).await;
    post(&gw, &muapi_body("task-sub-1", "completed"), &[]).await;
    sinks.analytics.wait_for(3, STEP).await;
    let browser = Browser::start("subscribers").await;
    let b = &browser;
    let steps = async move {
        b.goto(&console(&gw, "")).await?;
        b.wait_text("#login", "Admin token").await?;
        b.shot("login").await?;

        b.login("not-the-token").await?;
        b.wait_text("#error", "Wrong admin token").await?;
        b.wait_text("#error", "401").await?;
        b.wait_text("#login", "Admin token").await?;
        let stored = b
            .js("return sessionStorage.getItem('hookrelay.adminToken');")
            .await?;
        ensure!(stored.is_null(), "a refused token is not kept: {stored}");
        b.shot("wrong-token").await?;

        b.login(ADMIN_TOKEN).await?;
        let failing = r#"#subscribers tr[data-subscriber="analytics"]"#;
        b.wait_text(&format!("{failing} [data-field=circuit]"), "open")
            .await?;
        b.wait_text(&format!("{failing} [data-field=last_error]"), "HTTP 500")
            .await?;
        let failed = b
            .wait_text(&format!("{failing} [data-field=failed_5m]"), "")
            .await?;
        ensure!(
            failed.trim().parse::<u32>().is_ok_and(|n| n >= 3),
            "failed_5m shows {failed:?}"
        );
        let healthy = r#"#subscribers tr[data-subscriber="app"]"#;
        b.wait_text(&format!("{healthy} [data-field=circuit]"), "closed")
            .await?;
        b.wait_text(&format!("{healthy} [data-field=delivered_5m]"), "1")
            .await?;
        b.wait_text(&format!("{healthy} [data-field=last_error]"), "none")
            .await?;
        let success = b
            .wait_text(&format!("{healthy} [data-field=last_success]"), "ago")
            .await?;
        ensure!(!success.contains("never"), "last success: {success:?}");
        b.wait_text(
            r#"#subscribers tr[data-subscriber="archive"] [data-field=dead_letters]"#,
            "1",
        )
        .await?;
        let stored = b
            .js("return sessionStorage.getItem('hookrelay.adminToken');")
            .await?;
        ensure!(
            stored == ADMIN_TOKEN,
            "the token is kept for the tab: {stored}"
        );
        let shot = b.shot("subscribers").await?;
        if std::env::var_os("HOOKRELAY_README_SCREENSHOT").is_some() {
            let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");
            std::fs::copy(&shot, &readme).map_err(|e| format!("copy to docs/: {e}"))?;
        }

        // The page refreshes by itself: a new failure shows up unasked.
        let before = b
            .wait_text(&format!("{failing} [data-field=pending]"), "1")
            .await?;
        post(&gw, &muapi_body("task-sub-2", "completed"), &[]).await;
        b.wait_text(&format!("{failing} [data-field=pending]"), "2")
            .await?;
        ensure!(before.trim() == "1", "pending was {before:?}");

        gw.gateway.shutdown().await;
        b.wait_text("#error", "Admin API unreachable").await?;
        b.shot("unreachable").await?;
        Ok(())
    };
    browser.run(steps).await;
}

/// Find an event by its muapi task id and by its event id, see its body,
/// headers and each subscriber's attempts as a timeline; an event whose
/// body and headers hold HTML is shown as text and runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_search_timeline_and_untrusted_bodies() {
    // The breaker opens after three failures (cooldown 10 min), so the
    // timeline holds exactly three attempts and a pending next one however
    // long the browser takes to start (with retries going on, attempt 3
    // would leave the newest-20 view after a few seconds).
    let (gw, sinks) = gateway(Some(ADMIN_TOKEN), 3).await;
    let event = post(&gw, &muapi_body("task-console-42", "completed"), &[]).await;
    // Three failed attempts of `analytics` for the timeline.
    sinks.analytics.wait_for(3, STEP).await;
    for n in 0..3 {
        post(
            &gw,
            &muapi_body(&format!("task-other-{n}"), "completed"),
            &[],
        )
        .await;
    }
    let hostile = json!({
        "id": "task-xss",
        "status": "failed",
        "error": "<img src=x onerror=\"window.__pwned='img';document.title='pwned'\">",
        "note": "<script>window.__pwned='script';document.title='pwned'</script>",
    })
    .to_string();
    let hostile_event = post(
        &gw,
        &hostile,
        &[(
            "x-request-id",
            "<img src=x onerror=\"window.__pwned='header'\">",
        )],
    )
    .await;
    let browser = Browser::start("events").await;
    let b = &browser;
    let steps = async move {
        b.goto(&console(&gw, "#/events")).await?;
        b.login(ADMIN_TOKEN).await?;
        b.wait_text("#events", "task-other-0").await?;
        b.shot("list").await?;

        b.fill("#search", "task-console-42").await?;
        b.click("#search-submit").await?;
        b.wait_js(
            "return document.querySelectorAll('#events tbody tr').length === 1 \
             && document.querySelector('#events tbody tr').dataset.eventId !== undefined \
             && location.hash.includes('task-console-42');",
            "one search result",
        )
        .await?;
        let row = b
            .wait_text(
                &format!(r#"#events tr[data-event-id="{event}"]"#),
                "task-console-42",
            )
            .await?;
        ensure!(row.contains("app: delivered"), "row: {row:?}");
        ensure!(row.contains("archive: dead"), "row: {row:?}");
        b.shot("search").await?;

        b.click(&format!(r#"#events tr[data-event-id="{event}"] a"#))
            .await?;
        b.wait_text("#event-id", &event).await?;
        b.wait_text("#body", "\"id\": \"task-console-42\"").await?;
        b.wait_text("#headers", "content-type").await?;
        let analytics = r#"section.delivery[data-subscriber="analytics"]"#;
        b.wait_text(&format!("{analytics} li[data-attempt='3']"), "HTTP 500")
            .await?;
        b.wait_text(
            &format!("{analytics} li[data-next=pending]"),
            "Next attempt due",
        )
        .await?;
        let first = b
            .wait_text(
                &format!("{analytics} li[data-attempt='1']"),
                "next attempt at",
            )
            .await?;
        ensure!(
            first.contains(" ms"),
            "attempt 1 shows no duration: {first:?}"
        );
        b.wait_text(
            r#"section.delivery[data-subscriber="app"] li[data-next=delivered]"#,
            "delivered",
        )
        .await?;
        b.wait_text(
            r#"section.delivery[data-subscriber="archive"] li[data-next=dead]"#,
            "410",
        )
        .await?;
        b.shot("event").await?;

        // By event id, too.
        b.goto(&console(&gw, "#/events")).await?;
        b.fill("#search", &event).await?;
        b.click("#search-submit").await?;
        b.wait_text(
            &format!(r#"#events tr[data-event-id="{event}"]"#),
            "task-console-42",
        )
        .await?;

        // Nothing found: the empty state.
        b.fill("#search", "no-such-task").await?;
        b.click("#search-submit").await?;
        b.wait_text("[data-state=empty]", "No event found").await?;
        b.shot("not-found").await?;

        // Untrusted HTML is text.
        b.fill("#search", "task-xss").await?;
        b.click("#search-submit").await?;
        b.click(&format!(r#"#events tr[data-event-id="{hostile_event}"] a"#))
            .await?;
        b.wait_text("#body", "<script>window.__pwned='script'")
            .await?;
        b.wait_text("#body", "<img src=x onerror=").await?;
        b.wait_text("#headers", "<img src=x onerror=").await?;
        let injected = b
            .js("return document.querySelectorAll('main img, main script, #body *, #headers td *').length;")
            .await?;
        ensure!(
            injected == 0,
            "HTML from the event became elements: {injected}"
        );
        let ran = b
            .js("return [window.__pwned === undefined, document.title];")
            .await?;
        ensure!(
            ran == json!([true, "hookrelay console"]),
            "something ran: {ran}"
        );
        b.js("document.getElementById('headers').scrollIntoView();")
            .await?;
        b.shot("untrusted-body").await?;
        Ok(())
    };
    browser.run(steps).await;
}

/// Dead letters: select one and replay it (after a confirmation, and not
/// on Cancel), see it delivered; delete the rest of one subscriber; the
/// empty state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_and_delete() {
    let (gw, sinks) = gateway(Some(ADMIN_TOKEN), 3).await;
    let mut events = Vec::new();
    for n in 1..=3 {
        events.push(post(&gw, &muapi_body(&format!("task-dl-{n}"), "completed"), &[]).await);
    }
    dead_letters(&gw, 3).await;
    let replayed = format!("{}.archive", events[0]);
    let browser = Browser::start("dead-letters").await;
    let b = &browser;
    let sinks = &sinks;
    let steps = async move {
        b.goto(&console(&gw, "#/dead-letters")).await?;
        b.login(ADMIN_TOKEN).await?;
        b.wait_js(
            "return document.querySelectorAll('#dead-letters tbody tr').length === 3;",
            "three dead letters",
        )
        .await?;
        b.wait_text(&format!(r#"#dead-letters tr[data-id="{replayed}"]"#), "410")
            .await?;
        b.shot("list").await?;

        // Cancel changes nothing.
        b.click(&format!(r#"input[data-id="{replayed}"]"#)).await?;
        b.wait_text("#selected-count", "1 selected").await?;
        b.click("#replay-selected").await?;
        b.wait_text("#confirm", "Replay 1 selected dead letter?")
            .await?;
        b.shot("confirm").await?;
        b.click("#confirm-cancel").await?;
        b.wait_js(
            "return !document.getElementById('confirm').open;",
            "the dialog to close",
        )
        .await?;
        ensure!(
            dead_letters(&gw, 3).await.len() == 3,
            "cancel replayed something"
        );

        // Replay it once the subscriber is back.
        sinks.archive.set_default(Reply::Status(200, vec![]));
        let received = sinks.archive.count();
        b.click("#replay-selected").await?;
        b.click("#confirm-ok").await?;
        b.wait_text("#notice", "Requeued 1 dead letter.").await?;
        b.wait_js(
            "return document.querySelectorAll('#dead-letters tbody tr').length === 2;",
            "two dead letters left",
        )
        .await?;
        b.shot("replayed").await?;
        sinks.archive.wait_for(received + 1, STEP).await;
        b.click(&format!(
            r#"#dead-letters tr[data-id="{}.archive"] a"#,
            events[1]
        ))
        .await?;
        b.wait_text("#event-id", &events[1]).await?;
        b.goto(&console(&gw, &format!("#/event/{}", events[0])))
            .await?;
        b.wait_text(
            r#"section.delivery[data-subscriber="archive"] li[data-next=delivered]"#,
            "delivered",
        )
        .await?;
        b.shot("delivered").await?;

        // Filter by route and subscriber, select all, delete.
        b.goto(&console(&gw, "#/dead-letters")).await?;
        b.wait_js(
            "return [...document.querySelectorAll('#dl-subscriber option')].some(o => o.value === 'archive');",
            "the subscriber filter",
        )
        .await?;
        b.js("const s = document.getElementById('dl-route'); s.value = 'muapi'; s.dispatchEvent(new Event('change'));")
            .await?;
        b.wait_js(
            "return location.hash.includes('route=muapi');",
            "the route filter",
        )
        .await?;
        b.wait_js(
            "return [...document.querySelectorAll('#dl-subscriber option')].some(o => o.value === 'archive');",
            "the subscriber filter",
        )
        .await?;
        b.js("const s = document.getElementById('dl-subscriber'); s.value = 'archive'; s.dispatchEvent(new Event('change'));")
            .await?;
        b.wait_text("#delete-all", "Delete all of muapi/archive")
            .await?;
        b.wait_js(
            "return document.querySelectorAll('#dead-letters tbody tr').length === 2;",
            "two dead letters of archive",
        )
        .await?;
        b.click("#select-all").await?;
        b.wait_text("#selected-count", "2 selected").await?;
        b.click("#delete-selected").await?;
        b.wait_text("#confirm", "Delete 2 selected dead letters?")
            .await?;
        b.click("#confirm-ok").await?;
        b.wait_text("#notice", "Deleted 2 dead letters.").await?;
        b.wait_text("[data-state=empty]", "No dead letters.")
            .await?;
        b.shot("empty").await?;
        ensure!(dead_letters(&gw, 0).await.is_empty(), "dead letters remain");
        Ok(())
    };
    browser.run(steps).await;
}

/// A gateway without `admin.token`: the API is closed, and the console
/// says so instead of showing empty pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_admin_api_shows_its_error_state() {
    let (gw, _sinks) = gateway(None, 3).await;
    let browser = Browser::start("closed").await;
    let b = &browser;
    let steps = async move {
        b.goto(&console(&gw, "")).await?;
        b.login("any-token").await?;
        b.wait_text("#error", "Admin API closed").await?;
        b.wait_text("[data-state=error]", "admin.token").await?;
        b.shot("closed").await?;
        Ok(())
    };
    browser.run(steps).await;
}
