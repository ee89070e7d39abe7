//! The admin listener: health, readiness, metrics and the `/api/v1/` API.
//!
//! Plain HTTP meant for a private address. `/api/v1/*` needs
//! `Authorization: Bearer <admin.token>`; without a configured token the API
//! answers 403 and says why.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::answer::{json, ApiError};
use crate::gateway::Shared;
use crate::ingress::service::token_matches;
use crate::store::{now_ms, DeadLetterQuery, ReplaySelector};

/// Largest `limit` for listings.
const MAX_LIMIT: usize = 1000;

/// Handles one admin request.
pub async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            if shared.ready.load(Ordering::SeqCst) {
                json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "not ready"}),
                )
            }
        }
        (&Method::GET, "/metrics") => {
            shared
                .metrics
                .idempotency_keys
                .set(shared.intake.cache().len() as i64);
            let mut response = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (_, p) if p.starts_with("/api/v1/") => match api(&shared, request).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        },
        _ => ApiError::NotFound("no such endpoint".into()).into_response(),
    }
}

fn authorize(shared: &Shared, request: &Request<Incoming>) -> Result<(), ApiError> {
    let runtime = shared.runtime.load();
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
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    authorize(shared, &request)?;
    let path = request
        .uri()
        .path()
        .trim_start_matches("/api/v1/")
        .to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let method = request.method().clone();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["subscribers"]) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "subscribers": shared.dispatcher.snapshot() }),
        )),
        (_, ["subscribers"]) => Err(ApiError::MethodNotAllowed("GET")),
        (Method::GET, ["events", id]) => match shared.store.event(id).await? {
            Some((meta, deliveries)) => Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "event": meta, "deliveries": deliveries }),
            )),
            None => Err(ApiError::NotFound(format!("no event {id}"))),
        },
        (Method::GET, ["dead-letters"]) => {
            let query = dead_letter_query(&query)?;
            let letters = shared.store.dead_letters(query).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "dead_letters": letters }),
            ))
        }
        (_, ["dead-letters"]) => Err(ApiError::MethodNotAllowed("GET")),
        (Method::POST, ["dead-letters", "replay"]) => {
            let body = read_json::<ReplayBody>(request).await?;
            let selector = match body {
                ReplayBody {
                    ids: Some(ids),
                    route: None,
                    subscriber: None,
                } if !ids.is_empty() => ReplaySelector::Ids(ids),
                ReplayBody {
                    ids: None,
                    route: Some(route),
                    subscriber: Some(subscriber),
                } => ReplaySelector::Subscriber { route, subscriber },
                _ => {
                    return Err(ApiError::BadRequest(
                        "send {\"ids\":[...]} or {\"route\":\"...\",\"subscriber\":\"...\"}".into(),
                    ))
                }
            };
            let records = shared.store.replay(selector, now_ms()).await?;
            let mut requeued = 0;
            for record in &records {
                shared
                    .metrics
                    .dead_letters
                    .with_label_values(&[&record.route, &record.subscriber])
                    .dec();
                if shared.dispatcher.enqueue_record(record) {
                    requeued += 1;
                } else {
                    let _ = shared
                        .store
                        .kill(&record.id, "subscriber removed", now_ms())
                        .await;
                    shared
                        .metrics
                        .dead_letters
                        .with_label_values(&[&record.route, &record.subscriber])
                        .inc();
                }
            }
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "requeued": requeued }),
            ))
        }
        (_, ["dead-letters", "replay"]) => Err(ApiError::MethodNotAllowed("POST")),
        (Method::DELETE, ["dead-letters", id]) => {
            let record = shared
                .store
                .event(id.split('.').next().unwrap_or(""))
                .await?;
            if shared.store.delete_dead(id).await? {
                if let Some((meta, _)) = record {
                    let subscriber = id.split_once('.').map(|(_, s)| s).unwrap_or("");
                    shared
                        .metrics
                        .dead_letters
                        .with_label_values(&[&meta.route, subscriber])
                        .dec();
                }
                Ok(json(StatusCode::OK, &serde_json::json!({ "deleted": id })))
            } else {
                Err(ApiError::NotFound(format!("no dead letter {id}")))
            }
        }
        (_, ["dead-letters", _]) => Err(ApiError::MethodNotAllowed("DELETE")),
        (Method::POST, ["reload"]) => {
            shared.reload_from_file().await.map_err(ApiError::Reload)?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "status": "reloaded" }),
            ))
        }
        (_, ["reload"]) => Err(ApiError::MethodNotAllowed("POST")),
        _ => Err(ApiError::NotFound("no such endpoint".into())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    ids: Option<Vec<String>>,
    route: Option<String>,
    subscriber: Option<String>,
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, ApiError> {
    let body = Limited::new(request.into_body(), 1024 * 1024)
        .collect()
        .await
        .map_err(|_| ApiError::BadRequest("body unreadable or over 1 MiB".into()))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn dead_letter_query(query: &str) -> Result<DeadLetterQuery, ApiError> {
    let mut out = DeadLetterQuery {
        limit: 100,
        ..Default::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "route" if !value.is_empty() => out.route = Some(value.to_string()),
            "subscriber" if !value.is_empty() => out.subscriber = Some(value.to_string()),
            "limit" => {
                out.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "limit must be a number from 1 to {MAX_LIMIT}"
                        ))
                    })?
            }
            "route" | "subscriber" => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter `{other}` (use route, subscriber, limit)"
                )))
            }
        }
    }
    Ok(out)
}
