//! The admin listener: health, readiness, metrics, the `/api/v1/` API (its
//! OpenAPI document at `/api/v1/openapi.json`) and the operator console at
//! `/console/` ([`crate::console`]).
//!
//! Plain HTTP meant for a private address. `/api/v1/*` needs
//! `Authorization: Bearer <admin.token>`; without a configured token the API
//! answers 403 and says why. Everything it shows about deliveries comes from
//! the store (shared by every replica); what only this process knows (in
//! flight, circuit state, recent activity) is marked as such in the docs.
//!
//! The gateway hands this module an [`AdminState`] with what it needs, so
//! the dependency runs one way (gateway → admin).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::answer::{json, ApiError};
use crate::config::Runtime;
use crate::delivery::Dispatcher;
use crate::ingress::service::token_matches;
use crate::intake::idempotency::IdempotencyCache;
use crate::metrics::Metrics;
use crate::store::{now_ms, DeadLetterQuery, DeadSelector, DeliveryId, EventId, EventQuery, Store};

/// Largest `limit` for listings.
const MAX_LIMIT: usize = 1000;

/// Dead letters changed per store call by batch operations (each call is
/// its own short transaction, so ingress never waits behind a long one).
const BATCH: usize = 500;

/// Re-reads the config file and applies it; the problems when it is refused.
pub type ReloadFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), Vec<String>>> + Send>> + Send + Sync>;

/// What the admin API needs from the running gateway.
pub struct AdminState {
    /// The current compiled config (for the token and the subscribers).
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// This process's lanes.
    pub dispatcher: Arc<Dispatcher>,
    /// Metrics (the page, and gauges refreshed from the store on scrape).
    pub metrics: Arc<Metrics>,
    /// The idempotency cache (its size is a gauge).
    pub cache: Arc<IdempotencyCache>,
    /// True between start-up and the beginning of shutdown.
    pub ready: Arc<AtomicBool>,
    /// `POST /api/v1/reload`.
    pub reload: ReloadFn,
}

impl AdminState {
    fn configured(&self) -> HashSet<(String, String)> {
        self.runtime
            .load()
            .subscribers()
            .map(|s| (s.route.to_string(), s.name.to_string()))
            .collect()
    }

    /// Refreshes the store-derived gauges (pending, dead letters, orphans,
    /// store size).
    pub async fn refresh_gauges(&self) {
        self.metrics.idempotency_keys.set(self.cache.len() as i64);
        match self.store.counts().await {
            Ok(counts) => {
                let configured = self.configured();
                self.metrics.set_counts(&counts, |r, s| {
                    configured.contains(&(r.to_string(), s.to_string()))
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot read delivery counts from the store"),
        }
        crate::reconcile::Reconciler::refresh_gauges(&*self.store, &self.metrics).await;
        match self.store.size().await {
            Ok(size) => {
                let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                let m = &self.metrics.store_bytes;
                m.with_label_values(&["file"]).set(gauge(size.file_bytes));
                m.with_label_values(&["used"]).set(gauge(size.used_bytes));
                if let Some((free, total)) = size.disk {
                    m.with_label_values(&["disk_free"]).set(gauge(free));
                    m.with_label_values(&["disk_size"]).set(gauge(total));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the store's size"),
        }
    }
}

/// Handles one admin request.
pub async fn handle(state: Arc<AdminState>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            if !state.store.available() {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "not ready", "reason": "the store is unavailable"}),
                )
            } else if state.ready.load(Ordering::SeqCst) {
                json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "not ready"}),
                )
            }
        }
        (&Method::GET, "/metrics") => {
            state.refresh_gauges().await;
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (_, "/healthz" | "/readyz" | "/metrics") => {
            ApiError::MethodNotAllowed("GET").into_response()
        }
        (method, crate::console::OPENAPI_PATH) => crate::console::openapi(method),
        (method, p) if p == "/console" || p.starts_with(crate::console::PREFIX) => {
            crate::console::serve(method, p, request.headers())
        }
        (_, p) if p.starts_with("/api/v1/") => match api(&state, request).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        },
        _ => ApiError::NotFound("no such endpoint".into()).into_response(),
    }
}

fn authorize(state: &AdminState, request: &Request<Incoming>) -> Result<(), ApiError> {
    let runtime = state.runtime.load();
    let Some(token) = runtime.config.admin.token.as_deref() else {
        return Err(ApiError::Closed);
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if token_matches(&[token.as_bytes().to_vec()], presented.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

async fn api(
    state: &AdminState,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    authorize(state, &request)?;
    let path = request
        .uri()
        .path()
        .trim_start_matches("/api/v1/")
        .to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let method = request.method().clone();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["subscribers"]) => subscribers(state).await,
        (_, ["subscribers"]) => Err(ApiError::MethodNotAllowed("GET")),
        (Method::GET, ["events"]) => {
            let query = event_query(&query)?;
            let page = state.store.events(query).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::to_value(&page).expect("serialisable"),
            ))
        }
        (_, ["events"]) => Err(ApiError::MethodNotAllowed("GET")),
        (Method::GET, ["events", id]) => event(state, id).await,
        (_, ["events", _]) => Err(ApiError::MethodNotAllowed("GET")),
        (Method::GET, ["dead-letters"]) => {
            let query = dead_letter_query(&query)?;
            let letters = state.store.dead_letters(query).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "dead_letters": letters }),
            ))
        }
        (_, ["dead-letters"]) => Err(ApiError::MethodNotAllowed("GET")),
        (Method::POST, ["dead-letters", "replay"]) => {
            let selector = read_json::<SelectorBody>(request).await?.selector()?;
            let mut requeued = 0;
            for batch in batches(selector) {
                let ids = matches!(batch, DeadSelector::Ids(_));
                loop {
                    let done = state.store.replay(batch.clone(), now_ms(), BATCH).await?;
                    requeued += done.len();
                    if ids || done.len() < BATCH {
                        break;
                    }
                }
            }
            state.dispatcher.wake_all();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "requeued": requeued }),
            ))
        }
        (_, ["dead-letters", "replay"]) => Err(ApiError::MethodNotAllowed("POST")),
        (Method::POST, ["dead-letters", "delete"]) => {
            let selector = read_json::<SelectorBody>(request).await?.selector()?;
            let mut deleted = 0;
            for batch in batches(selector) {
                let ids = matches!(batch, DeadSelector::Ids(_));
                loop {
                    let done = state
                        .store
                        .delete_dead(batch.clone(), now_ms(), BATCH)
                        .await?;
                    deleted += done.len();
                    if ids || done.len() < BATCH {
                        break;
                    }
                }
            }
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "deleted": deleted }),
            ))
        }
        (_, ["dead-letters", "delete"]) => Err(ApiError::MethodNotAllowed("POST")),
        (Method::DELETE, ["dead-letters", id]) => {
            let parsed: DeliveryId = id
                .parse()
                .map_err(|_| ApiError::NotFound("no such dead letter".into()))?;
            let done = state
                .store
                .delete_dead(DeadSelector::Ids(vec![parsed]), now_ms(), 1)
                .await?;
            if done.is_empty() {
                Err(ApiError::NotFound("no such dead letter".into()))
            } else {
                Ok(json(StatusCode::OK, &serde_json::json!({ "deleted": id })))
            }
        }
        (_, ["dead-letters", _]) => Err(ApiError::MethodNotAllowed("DELETE")),
        (Method::POST, ["orphans", "resolve"]) => {
            let body = read_json::<OrphanBody>(request).await?;
            if state.dispatcher.has_lane(&body.route, &body.subscriber) {
                return Err(ApiError::Conflict(
                    "that subscriber is configured on this instance: its deliveries are not orphans"
                        .into(),
                ));
            }
            let reason = "subscriber removed from the config (resolved by an operator)";
            let mut total = 0;
            loop {
                let n = state
                    .store
                    .kill_pending(&body.route, &body.subscriber, reason, now_ms(), BATCH)
                    .await?;
                total += n;
                if n < BATCH {
                    break;
                }
            }
            // They ended dead: counted like any delivery that died.
            state
                .metrics
                .deliveries
                .with_label_values(&[&body.route, &body.subscriber, "dead"])
                .inc_by(total as u64);
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "dead_lettered": total }),
            ))
        }
        (_, ["orphans", "resolve"]) => Err(ApiError::MethodNotAllowed("POST")),
        (Method::POST, ["expected"]) => {
            let body = read_json::<ExpectBody>(request).await?;
            let runtime = state.runtime.load_full();
            let Some(route) = runtime.route_named(&body.route).cloned() else {
                return Err(ApiError::NotFound("no route with that name".into()));
            };
            let Some(settings) = route.muapi.as_ref() else {
                return Err(ApiError::BadRequest(
                    "that route has no `muapi:` block: its results are not reconciled".into(),
                ));
            };
            // Control characters cannot be stored as text by PostgreSQL,
            // and are in no muapi request id or endpoint name.
            let clean = |s: &str| !s.chars().any(char::is_control);
            let chars = |s: &str| s.chars().count();
            if body.id.is_empty() || chars(&body.id) > 256 || !clean(&body.id) {
                return Err(ApiError::BadRequest(
                    "id must be the task's request_id (1 to 256 characters, no control characters)"
                        .into(),
                ));
            }
            let endpoint = body.endpoint.unwrap_or_default();
            if chars(&endpoint) > 256 || !clean(&endpoint) {
                return Err(ApiError::BadRequest(
                    "endpoint must be a muapi endpoint name \
                     (up to 256 characters, no control characters)"
                        .into(),
                ));
            }
            let (task, created) =
                crate::reconcile::expect(&*state.store, &route, settings, &body.id, &endpoint)
                    .await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "task": task, "created": created }),
            ))
        }
        (Method::GET, ["expected"]) => {
            let query = expected_query(&query)?;
            let tasks = state.store.expected(query).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "expected": tasks }),
            ))
        }
        (_, ["expected"]) => Err(ApiError::MethodNotAllowed("GET, POST")),
        (Method::POST, ["reload"]) => {
            (state.reload)().await.map_err(ApiError::Reload)?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "status": "reloaded" }),
            ))
        }
        (_, ["reload"]) => Err(ApiError::MethodNotAllowed("POST")),
        _ => Err(ApiError::NotFound("no such endpoint".into())),
    }
}

/// One row per (route, subscriber): the configured ones with this process's
/// lane state, and any other the store holds deliveries for (orphans).
async fn subscribers(state: &AdminState) -> Result<Response<Full<Bytes>>, ApiError> {
    let counts = state.store.counts().await?;
    let lanes = state.dispatcher.snapshot();
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for lane in &lanes {
        let c = counts
            .iter()
            .find(|c| c.route == lane.route && c.subscriber == lane.subscriber);
        let mut row = serde_json::to_value(lane).expect("serialisable");
        row["configured"] = true.into();
        row["pending"] = c.map_or(0, |c| c.pending).into();
        row["dead_letters"] = c.map_or(0, |c| c.dead).into();
        row["orphaned"] = 0.into();
        seen.insert((lane.route.clone(), lane.subscriber.clone()));
        rows.push(row);
    }
    for c in counts {
        if seen.contains(&(c.route.clone(), c.subscriber.clone()))
            || (c.pending == 0 && c.dead == 0)
        {
            continue;
        }
        rows.push(serde_json::json!({
            "route": c.route,
            "subscriber": c.subscriber,
            "configured": false,
            "pending": c.pending,
            "dead_letters": c.dead,
            "orphaned": c.pending,
            "in_flight": 0,
            "queued": 0,
            "circuit": "closed",
            "delivered_5m": 0,
            "failed_5m": 0,
        }));
    }
    rows.sort_by(|a, b| {
        (a["route"].as_str(), a["subscriber"].as_str())
            .cmp(&(b["route"].as_str(), b["subscriber"].as_str()))
    });
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "subscribers": rows }),
    ))
}

async fn event(state: &AdminState, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    let not_found = || ApiError::NotFound("no such event".into());
    let event: EventId = id.parse().map_err(|_| not_found())?;
    let Some(view) = state.store.event(event).await? else {
        return Err(not_found());
    };
    let mut value = serde_json::to_value(&view).expect("serialisable");
    let deliveries = value
        .as_object_mut()
        .and_then(|o| o.remove("deliveries"))
        .unwrap_or_default();
    if !view.pruned {
        if let Some(body) = state.store.body(event).await? {
            value["body"] = String::from_utf8_lossy(&body).into_owned().into();
        }
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "event": value, "deliveries": deliveries }),
    ))
}

/// Splits a selector of many ids into store-sized batches.
fn batches(selector: DeadSelector) -> Vec<DeadSelector> {
    match selector {
        DeadSelector::Ids(ids) => ids
            .chunks(BATCH)
            .map(|c| DeadSelector::Ids(c.to_vec()))
            .collect(),
        other => vec![other],
    }
}

/// `{"ids":[…]}` or `{"route":"…","subscriber":"…"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectorBody {
    ids: Option<Vec<String>>,
    route: Option<String>,
    subscriber: Option<String>,
}

impl SelectorBody {
    fn selector(self) -> Result<DeadSelector, ApiError> {
        match self {
            SelectorBody {
                ids: Some(ids),
                route: None,
                subscriber: None,
            } if !ids.is_empty() => {
                let mut parsed = Vec::with_capacity(ids.len());
                for id in ids {
                    match id.parse::<DeliveryId>() {
                        Ok(d) => parsed.push(d),
                        Err(()) => {
                            return Err(ApiError::BadRequest(
                                "each id must be a delivery id `<event_id>.<subscriber>`".into(),
                            ))
                        }
                    }
                }
                Ok(DeadSelector::Ids(parsed))
            }
            SelectorBody {
                ids: None,
                route: Some(route),
                subscriber: Some(subscriber),
            } => Ok(DeadSelector::Subscriber { route, subscriber }),
            _ => Err(ApiError::BadRequest(
                "send {\"ids\":[...]} or {\"route\":\"...\",\"subscriber\":\"...\"}".into(),
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectBody {
    route: String,
    id: String,
    endpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrphanBody {
    route: String,
    subscriber: String,
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, ApiError> {
    let body = Limited::new(request.into_body(), 1024 * 1024)
        .collect()
        .await
        .map_err(|_| ApiError::BadRequest("body unreadable or over 1 MiB".into()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        // serde's message names the field and the expected type; it may
        // quote a value only for unknown variants, which these bodies lack.
        ApiError::BadRequest(format!("invalid JSON body: {e}"))
    })
}

/// The decoded `key=value` pairs of a query string.
fn pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn limit(value: &str) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            ApiError::BadRequest(format!("limit must be a number from 1 to {MAX_LIMIT}"))
        })
}

fn dead_letter_query(query: &str) -> Result<DeadLetterQuery, ApiError> {
    let mut out = DeadLetterQuery {
        limit: 100,
        ..Default::default()
    };
    for (key, value) in pairs(query) {
        match key.as_str() {
            "route" if !value.is_empty() => out.route = Some(value),
            "subscriber" if !value.is_empty() => out.subscriber = Some(value),
            "limit" => out.limit = limit(&value)?,
            "route" | "subscriber" => {}
            _ => {
                return Err(ApiError::BadRequest(
                    "unknown parameter (use route, subscriber, limit)".into(),
                ))
            }
        }
    }
    Ok(out)
}

fn event_query(query: &str) -> Result<EventQuery, ApiError> {
    let mut out = EventQuery {
        limit: 50,
        ..Default::default()
    };
    for (key, value) in pairs(query) {
        match key.as_str() {
            "route" if !value.is_empty() => out.route = Some(value),
            "source_id" if !value.is_empty() => out.source_id = Some(value),
            "before" if !value.is_empty() => {
                // A cursor is a number below 2^63 (PostgreSQL's bigint)
                // written as `next_before` writes it: no sign, no leading 0.
                let cursor = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| i64::try_from(*n).is_ok() && n.to_string() == value);
                if cursor.is_none() {
                    return Err(ApiError::BadRequest(
                        "before must be a cursor from a previous page (`next_before`)".into(),
                    ));
                }
                out.before = Some(value)
            }
            "limit" => out.limit = limit(&value)?,
            "route" | "source_id" | "before" => {}
            _ => {
                return Err(ApiError::BadRequest(
                    "unknown parameter (use route, source_id, before, limit)".into(),
                ))
            }
        }
    }
    Ok(out)
}

fn expected_query(query: &str) -> Result<crate::store::ExpectedQuery, ApiError> {
    let mut out = crate::store::ExpectedQuery {
        limit: 100,
        ..Default::default()
    };
    for (key, value) in pairs(query) {
        match key.as_str() {
            "route" if !value.is_empty() => out.route = Some(value),
            "state" if !value.is_empty() => {
                out.state = Some(crate::store::ExpectedState::parse(&value).ok_or_else(|| {
                    ApiError::BadRequest("state must be waiting, polling, done or expired".into())
                })?)
            }
            "limit" => out.limit = limit(&value)?,
            "route" | "state" => {}
            _ => {
                return Err(ApiError::BadRequest(
                    "unknown parameter (use route, state, limit)".into(),
                ))
            }
        }
    }
    Ok(out)
}
