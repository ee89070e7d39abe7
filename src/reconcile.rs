//! No lost task result: the muapi submit proxy, expected tasks, and the
//! reconciler that fetches a result itself when its callback is late.
//!
//! muapi retries a failed callback only three times. hookrelay knows which
//! results to expect — tasks submitted through its proxy
//! (`POST {route.path}/submit/{endpoint…}`) or registered with
//! `POST /api/v1/expected` — and for any task whose final callback has not
//! arrived `reconcile_after` after submission, it polls muapi's result API
//! (`GET {base_url}/api/v1/predictions/{id}/result`) with exponential
//! backoff, honouring 429/503 `Retry-After`, at most `max_polls_in_flight`
//! per route. A final result (`completed`, `failed`, `cancelled`) goes
//! through the same intake as a callback, keyed the same way (route + id +
//! status), so subscribers get it once, signed as usual, with
//! `hookrelay-origin: reconciled`; a real callback arriving later is a
//! `duplicate`. Past `give_up_after` a task is `expired`. The store makes
//! one poller per task across replicas (claims).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_util::sync::CancellationToken;

use crate::config::{MuapiSettings, Route, Runtime};
use crate::intake::{Intake, IntakeError};
use crate::metrics::Metrics;
use crate::store::{now_ms, ExpectedTask, NewExpected, Origin, PollNext, PollUpdate, Store};

/// How long one call to muapi may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest answer read from muapi.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// How often the reconciler looks for due polls.
const TICK: Duration = Duration::from_millis(250);

/// A 401/403 from muapi is logged at most this often per route.
const AUTH_LOG_EVERY: Duration = Duration::from_secs(300);

/// Why a call to muapi failed before it answered.
#[derive(Debug, thiserror::Error)]
pub enum MuapiError {
    /// No answer (connect error, timeout, TLS).
    #[error("muapi is unreachable: {0}")]
    Unreachable(String),
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Calls muapi's API (submit and result endpoints) with the route's key.
#[derive(Clone)]
pub struct MuapiClient {
    client: HttpsClient,
}

impl Default for MuapiClient {
    fn default() -> Self {
        Self::new()
    }
}

/// muapi's answer, verbatim.
#[derive(Debug)]
pub struct MuapiAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its content type, if any.
    pub content_type: Option<HeaderValue>,
    /// `Retry-After` of a 429/503.
    pub retry_after: Option<Duration>,
    /// Its body.
    pub body: Bytes,
}

impl MuapiClient {
    /// A pooled client trusting the webpki roots (plain http for tests and
    /// private deployments is allowed by the URL).
    pub fn new() -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(connector),
        }
    }

    async fn call(&self, request: Request<Full<Bytes>>) -> Result<MuapiAnswer, MuapiError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| MuapiError::Unreachable(describe(&e)))?;
            let status = response.status();
            let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(crate::delivery::client::parse_retry_after);
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|_| MuapiError::Unreachable("the answer could not be read".into()))?
                .to_bytes();
            Ok(MuapiAnswer {
                status,
                content_type,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| MuapiError::Unreachable(format!("no answer within {CALL_TIMEOUT:?}")))?
    }

    /// `POST {base_url}/api/v1/{endpoint}?webhook={callback_url}` with the
    /// app's body.
    pub async fn submit(
        &self,
        settings: &MuapiSettings,
        endpoint: &str,
        content_type: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<MuapiAnswer, MuapiError> {
        let webhook = percent_encoding::utf8_percent_encode(
            &settings.callback_url,
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        let url = format!(
            "{}/api/v1/{endpoint}?webhook={webhook}",
            settings.base_url.to_string().trim_end_matches('/')
        );
        let request = Request::post(url)
            .header("x-api-key", &settings.api_key)
            .header(
                http::header::CONTENT_TYPE,
                content_type
                    .cloned()
                    .unwrap_or(HeaderValue::from_static("application/json")),
            )
            .header(http::header::USER_AGENT, USER_AGENT)
            .body(Full::new(body))
            .map_err(|_| MuapiError::Unreachable("the request could not be built".into()))?;
        self.call(request).await
    }

    /// `GET {base_url}/api/v1/predictions/{id}/result`.
    pub async fn result(
        &self,
        settings: &MuapiSettings,
        id: &str,
    ) -> Result<MuapiAnswer, MuapiError> {
        let id: String = percent_segment(id);
        let url = format!(
            "{}/api/v1/predictions/{id}/result",
            settings.base_url.to_string().trim_end_matches('/')
        );
        let request = Request::get(url)
            .header("x-api-key", &settings.api_key)
            .header(http::header::USER_AGENT, USER_AGENT)
            .body(Full::new(Bytes::new()))
            .map_err(|_| MuapiError::Unreachable("the request could not be built".into()))?;
        self.call(request).await
    }
}

const USER_AGENT: &str = concat!("hookrelay/", env!("CARGO_PKG_VERSION"));

/// A task id as one URL path segment.
fn percent_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The error chain as one line (hyper's errors name no URL or query, so
/// neither the API key nor the callback token can appear).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = if e.is_connect() {
        "connect error".to_string()
    } else {
        "request error".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Whether `endpoint` is a plain path under `/api/v1/` (no `..`, no empty
/// segment, only URL-safe characters), so the proxy cannot be steered
/// elsewhere on muapi's host.
pub fn valid_endpoint(endpoint: &str) -> bool {
    !endpoint.is_empty()
        && endpoint.len() <= 200
        && endpoint.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

/// The `request_id` of muapi's answer to a submission.
pub fn request_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = value.get("request_id")?.as_str()?;
    (!id.is_empty() && id.len() <= 256).then(|| id.to_string())
}

/// Records an expected task for a route (`submitted` now): the first poll
/// is due `reconcile_after` later.
pub async fn expect(
    store: &dyn Store,
    route: &Route,
    settings: &MuapiSettings,
    id: &str,
    endpoint: &str,
) -> Result<(ExpectedTask, bool), crate::store::StoreError> {
    let now = now_ms();
    store
        .expect(NewExpected {
            route: route.name.to_string(),
            id: id.to_string(),
            endpoint: endpoint.to_string(),
            submitted_ms: now,
            first_poll_ms: now.saturating_add(millis(settings.reconcile_after)),
        })
        .await
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Polls the result API for tasks whose callback is late and feeds final
/// results to the intake.
pub struct Reconciler {
    store: Arc<dyn Store>,
    intake: Arc<Intake>,
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    client: MuapiClient,
    /// Polls running now, per route.
    in_flight: Mutex<HashMap<Arc<str>, usize>>,
    /// When a 401/403 was last logged, per route.
    auth_logged: Mutex<HashMap<Arc<str>, Instant>>,
}

impl Reconciler {
    /// A reconciler over the gateway's parts.
    pub fn new(
        store: Arc<dyn Store>,
        intake: Arc<Intake>,
        runtime: Arc<ArcSwap<Runtime>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            intake,
            runtime,
            metrics,
            client: MuapiClient::new(),
            in_flight: Mutex::new(HashMap::new()),
            auth_logged: Mutex::new(HashMap::new()),
        })
    }

    /// Runs until `stop`: claims due polls within the routes' limits and
    /// runs each in a task of its own (tracked by `tracker` for shutdown).
    pub async fn run(
        self: Arc<Self>,
        stop: CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let runtime = self.runtime.load_full();
            let capacity: usize = runtime
                .muapi_routes()
                .map(|(route, m)| {
                    let running = self
                        .in_flight
                        .lock()
                        .expect("in-flight lock")
                        .get(&route.name)
                        .copied()
                        .unwrap_or(0);
                    (m.max_polls_in_flight as usize).saturating_sub(running)
                })
                .sum();
            if capacity == 0 {
                continue;
            }
            let tasks = match self.store.claim_polls(now_ms(), capacity).await {
                Ok(tasks) => tasks,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim due polls; will retry");
                    continue;
                }
            };
            for task in tasks {
                let Some(route) = runtime.route_named(&task.route).cloned() else {
                    self.give_back(&task, "route not configured on this instance")
                        .await;
                    continue;
                };
                if route.muapi.is_none() {
                    self.give_back(&task, "route has no muapi reconciliation here")
                        .await;
                    continue;
                }
                *self
                    .in_flight
                    .lock()
                    .expect("in-flight lock")
                    .entry(route.name.clone())
                    .or_default() += 1;
                let this = self.clone();
                tracker.spawn(async move {
                    let name = route.name.clone();
                    this.poll(&route, task).await;
                    if let Some(n) = this
                        .in_flight
                        .lock()
                        .expect("in-flight lock")
                        .get_mut(&name)
                    {
                        *n = n.saturating_sub(1);
                    }
                });
            }
        }
    }

    /// Returns a task this instance cannot poll, due again later.
    async fn give_back(&self, task: &ExpectedTask, why: &str) {
        let _ = self
            .store
            .record_poll(PollUpdate {
                route: task.route.clone(),
                id: task.id.clone(),
                result: why.to_string(),
                next: PollNext::Again {
                    at_ms: now_ms().saturating_add(60_000),
                },
                now_ms: now_ms(),
            })
            .await;
    }

    /// One poll of one task, and its consequence.
    async fn poll(&self, route: &Arc<Route>, task: ExpectedTask) {
        let Some(settings) = route.muapi.as_ref() else {
            return;
        };
        let now = now_ms();
        let give_up_at = task
            .submitted_ms
            .saturating_add(millis(settings.give_up_after));
        let record = |result: String, next: PollNext| PollUpdate {
            route: task.route.clone(),
            id: task.id.clone(),
            result,
            next,
            now_ms: now_ms(),
        };
        if now >= give_up_at {
            tracing::warn!(route = %route.name, task = %task.id, "no result within give_up_after; the task expires");
            self.save(record("gave up".into(), PollNext::Expired)).await;
            return;
        }
        // Exponential backoff from the initial interval, capped, never
        // beyond the give-up time (the task expires right then).
        let backoff = |at_least: Option<Duration>| {
            let base = settings
                .poll_initial_interval
                .saturating_mul(2u32.saturating_pow(task.polls.min(30)))
                .min(settings.poll_max_interval);
            let wait = at_least.map_or(base, |floor| {
                base.max(floor.min(settings.poll_max_interval))
            });
            PollNext::Again {
                at_ms: now_ms().saturating_add(millis(wait)).min(give_up_at),
            }
        };
        let label = |result: &str| {
            self.metrics
                .reconcile_polls
                .with_label_values(&[&*route.name, result])
                .inc();
        };
        let answer = match self.client.result(settings, &task.id).await {
            Ok(answer) => answer,
            Err(e) => {
                label("error");
                tracing::info!(route = %route.name, task = %task.id, error = %e, "result poll failed");
                self.save(record(e.to_string(), backoff(None))).await;
                return;
            }
        };
        match answer.status.as_u16() {
            200..=299 => {}
            401 | 403 => {
                label("unauthorized");
                self.log_auth(route, answer.status);
                self.save(record(
                    format!(
                        "HTTP {} (check routes[].muapi.api_key)",
                        answer.status.as_u16()
                    ),
                    PollNext::Again {
                        at_ms: now_ms()
                            .saturating_add(millis(settings.poll_max_interval))
                            .min(give_up_at),
                    },
                ))
                .await;
                return;
            }
            429 | 503 => {
                label("throttled");
                let next = backoff(Some(answer.retry_after.unwrap_or(Duration::ZERO)));
                self.save(record(format!("HTTP {}", answer.status.as_u16()), next))
                    .await;
                return;
            }
            404 => {
                label("not_found");
                self.save(record("HTTP 404".into(), backoff(None))).await;
                return;
            }
            other => {
                label("error");
                self.save(record(format!("HTTP {other}"), backoff(None)))
                    .await;
                return;
            }
        }
        let status = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string));
        let Some(status) = status else {
            label("error");
            self.save(record("answer without a status".into(), backoff(None)))
                .await;
            return;
        };
        if !crate::store::FINAL_STATUSES.contains(&status.as_str()) {
            label("pending");
            self.save(record(status, backoff(None))).await;
            return;
        }
        label(&status);
        // The result goes through the intake as a callback would.
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self
            .intake
            .accept_from(
                route,
                &headers,
                answer.body.clone(),
                now_ms(),
                Origin::Reconciled,
            )
            .await
        {
            Ok(accepted) => {
                let via = if accepted.duplicate {
                    Origin::Callback
                } else {
                    self.metrics
                        .reconciled
                        .with_label_values(&[&*route.name, status.as_str()])
                        .inc();
                    tracing::info!(route = %route.name, task = %task.id, %status, event_id = %accepted.event_id, "result reconciled: its callback never came");
                    Origin::Reconciled
                };
                self.save(record(status.clone(), PollNext::Done { status, via }))
                    .await;
            }
            Err(IntakeError::Invalid(why)) => {
                tracing::warn!(route = %route.name, task = %task.id, reason = %why, "muapi's result was refused by the intake");
                self.save(record(format!("result refused: {why}"), backoff(None)))
                    .await;
            }
            Err(e) => {
                tracing::warn!(route = %route.name, task = %task.id, error = %e, "cannot record the reconciled result; will poll again");
                self.save(record(e.to_string(), backoff(None))).await;
            }
        }
    }

    async fn save(&self, update: PollUpdate) {
        if let Err(e) = self.store.record_poll(update).await {
            tracing::warn!(error = %e, "cannot record a poll; the task is polled again later");
        }
    }

    fn log_auth(&self, route: &Route, status: StatusCode) {
        let mut logged = self.auth_logged.lock().expect("auth log lock");
        let due = logged
            .get(&route.name)
            .is_none_or(|at| at.elapsed() >= AUTH_LOG_EVERY);
        if due {
            logged.insert(route.name.clone(), Instant::now());
            tracing::error!(
                route = %route.name,
                status = status.as_u16(),
                "muapi refused the API key (routes[].muapi.api_key); polls continue slowly"
            );
        }
    }

    /// Refreshes `expected_tasks{route,state}` from the store.
    pub async fn refresh_gauges(store: &dyn Store, metrics: &Metrics) {
        if let Ok(counts) = store.expected_counts().await {
            for (route, state, n) in counts {
                metrics
                    .expected_tasks
                    .with_label_values(&[&route, state.name()])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_stay_under_the_api_path() {
        assert!(valid_endpoint("flux-dev-image"));
        assert!(valid_endpoint("endpoint/generate_wan_ai_effects"));
        assert!(!valid_endpoint(""));
        assert!(!valid_endpoint("../admin"));
        assert!(!valid_endpoint("a//b"));
        assert!(!valid_endpoint("a/./b"));
        assert!(!valid_endpoint("a?b=c"));
        assert!(!valid_endpoint("a%2F..%2Fb"));
    }

    #[test]
    fn request_ids_are_read_from_muapi_answers() {
        assert_eq!(
            request_id(br#"{"request_id":"abc-1","status":"processing"}"#).as_deref(),
            Some("abc-1")
        );
        assert_eq!(request_id(br#"{"status":"processing"}"#), None);
        assert_eq!(request_id(br#"{"request_id":""}"#), None);
        assert_eq!(request_id(b"not json"), None);
    }

    #[test]
    fn task_ids_are_one_path_segment() {
        assert_eq!(percent_segment("a-b_c.1"), "a-b_c.1");
        assert_eq!(percent_segment("a/b?c"), "a%2Fb%3Fc");
    }
}
