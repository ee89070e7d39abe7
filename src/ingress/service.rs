//! One ingress request: route, method, client address, token, body limit,
//! then intake. Every outcome is counted, timed and logged (path only: the
//! query string may carry a token and is never logged).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::answer::{self, Rejection};
use crate::config::{Route, Runtime};
use crate::intake::{Accepted, Intake};
use crate::metrics::Metrics;
use crate::store::now_ms;

/// What the ingress handler needs.
pub struct IngressState {
    /// The current compiled config; swapped on reload.
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// Turns bodies into durable events.
    pub intake: Arc<Intake>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Handles one request end to end and answers.
pub async fn handle(
    state: Arc<IngressState>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let received_ms = now_ms();
    let span = tracing::info_span!(
        "ingress",
        route = tracing::field::Empty,
        event_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
        duration_us = tracing::field::Empty,
    );
    let runtime = state.runtime.load_full();
    let route = runtime.routes.get(request.uri().path()).cloned();
    let (route_label, result) = match &route {
        None => ("unmatched".to_string(), Err(Rejection::NotFound)),
        Some(route) => (
            route.name.to_string(),
            process(&state, &runtime, route, peer, request, received_ms)
                .instrument(span.clone())
                .await,
        ),
    };
    let (outcome, response, event_id) = match result {
        Ok(accepted) => (
            if accepted.duplicate {
                "duplicate"
            } else {
                "accepted"
            },
            answer::accepted(&accepted),
            Some(accepted.event_id),
        ),
        Err(rejection) => (rejection.outcome(), rejection.into_response(), None),
    };
    let elapsed = started.elapsed();
    state
        .metrics
        .ingress_requests
        .with_label_values(&[&route_label, outcome])
        .inc();
    if route.is_some() {
        state
            .metrics
            .ingress_duration
            .with_label_values(&[&route_label])
            .observe(elapsed.as_secs_f64());
    }
    span.record("route", route_label.as_str());
    span.record("event_id", event_id.as_deref().unwrap_or(""));
    span.record("outcome", outcome);
    span.record("duration_us", elapsed.as_micros() as u64);
    span.in_scope(|| {
        tracing::info!(
            route = %route_label,
            peer = %peer.ip(),
            event_id = event_id.as_deref().unwrap_or(""),
            outcome,
            status = response.status().as_u16(),
            duration_us = elapsed.as_micros() as u64,
            "ingress request"
        )
    });
    response
}

async fn process(
    state: &IngressState,
    runtime: &Runtime,
    route: &Arc<Route>,
    peer: SocketAddr,
    request: Request<Incoming>,
    received_ms: u64,
) -> Result<Accepted, Rejection> {
    if request.method() != Method::POST {
        return Err(Rejection::MethodNotAllowed);
    }
    if !route.allow_ips.is_empty() {
        let ip = peer.ip().to_canonical();
        if !route.allow_ips.iter().any(|net| net.contains(&ip)) {
            return Err(Rejection::Forbidden);
        }
    }
    if !route.tokens.is_empty() && !token_ok(route, &request) {
        return Err(Rejection::Unauthorized);
    }
    let server = &runtime.config.server;
    let limit = server.max_body_bytes;
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(Rejection::TooLarge(limit));
    }
    let (parts, body) = request.into_parts();
    let body = read_body(body, limit, server.header_read_timeout).await?;
    state
        .intake
        .accept(route, &parts.headers, body, received_ms)
        .await
        .map_err(Rejection::from)
}

/// Reads at most `limit` bytes, refusing as soon as more arrive.
async fn read_body(body: Incoming, limit: u64, timeout: Duration) -> Result<Bytes, Rejection> {
    let collect = Limited::new(body, limit as usize).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(Rejection::BodyTimeout),
        // An exact-size copy: the collected bytes may be a slice of hyper's
        // read buffer, and a delivery waiting in a lane would pin that whole
        // buffer for as long as it waits.
        Ok(Ok(collected)) => Ok(Bytes::copy_from_slice(&collected.to_bytes())),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Rejection::TooLarge(limit)),
        Ok(Err(_)) => Err(Rejection::Invalid(
            "the request body could not be read".into(),
        )),
    }
}

/// True when `?token=` or `Authorization: Bearer` matches one of the route's
/// tokens. Every configured token is compared, in constant time.
fn token_ok(route: &Route, request: &Request<Incoming>) -> bool {
    let bearer = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().as_bytes().to_vec());
    let query = request.uri().query().and_then(query_token);
    [bearer, query]
        .into_iter()
        .flatten()
        .any(|presented| token_matches(&route.tokens, &presented))
}

/// Constant-time comparison against every accepted token (rotation).
pub fn token_matches(tokens: &[Vec<u8>], presented: &[u8]) -> bool {
    let mut any = subtle::Choice::from(0u8);
    for token in tokens {
        any |= token.as_slice().ct_eq(presented);
    }
    any.into()
}

/// The percent-decoded value of `token=` in a query string.
fn query_token(query: &str) -> Option<Vec<u8>> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    Some(percent_decode(raw))
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_rotate_and_compare_fully() {
        let tokens = vec![b"old-token".to_vec(), b"new-token".to_vec()];
        assert!(token_matches(&tokens, b"old-token"));
        assert!(token_matches(&tokens, b"new-token"));
        assert!(!token_matches(&tokens, b"new-toke"));
        assert!(!token_matches(&tokens, b""));
    }

    #[test]
    fn query_token_is_found_and_decoded() {
        assert_eq!(query_token("a=1&token=ab%2Fc").unwrap(), b"ab/c");
        assert_eq!(query_token("token=x").unwrap(), b"x");
        assert_eq!(query_token("tokens=x"), None);
        assert_eq!(query_token("token=100%"), Some(b"100%".to_vec()));
    }
}
