//! One ingress request: route, method, client address, token, body limit,
//! then intake. Every outcome is counted, timed and logged (path only: the
//! query string may carry a token and is never logged).
//!
//! Two things protect what happens before a sender is known:
//! - A body read before authentication (a route with only
//!   `standard_webhooks_secret`) holds a [`Reservation`] against the
//!   connection's and the listener's bounds
//!   (`server.max_unauthenticated_body_bytes[_per_connection]`); one that
//!   does not fit is refused with 503 and `Retry-After`.
//! - An answer decided before the body has arrived (401, 404, 413, …) is
//!   sent only after the rest of the body was read and dropped, within
//!   [`DISCARD_EXTRA_BYTES`] past `max_body_bytes` and [`DISCARD_TIME`]:
//!   some clients cannot read an answer that arrives while they send (over
//!   HTTP/2, curl 7.88 fails on the `RST_STREAM(NO_ERROR)` that follows an
//!   early answer; over HTTP/1.1, closing with unread data can reset the
//!   connection before the answer is read). Past those bounds the answer
//!   goes out anyway and the connection (HTTP/1.1) or stream is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use tracing::Instrument;

use super::auth;
pub use super::auth::token_matches;
use super::budget::{self, BodyPools, Reservation};
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
    /// Durable state (the submit proxy records expected tasks).
    pub store: Arc<dyn crate::store::Store>,
    /// Calls muapi for the submit proxy.
    pub muapi: crate::reconcile::MuapiClient,
}

/// What a request to a route led to.
enum Handled {
    /// A callback, accepted or a duplicate.
    Callback(Accepted),
    /// A task submitted through the proxy: muapi's answer, relayed.
    Submitted(Response<Full<Bytes>>),
}

/// The route and endpoint of a submit-proxy path
/// (`{route.path}/submit/{endpoint…}` on a route with `muapi:`).
fn submit_target<'a>(runtime: &'a Runtime, path: &'a str) -> Option<(&'a Arc<Route>, &'a str)> {
    runtime.muapi_routes().find_map(|(route, _)| {
        let endpoint = path
            .strip_prefix(route.path.as_str())?
            .strip_prefix("/submit/")?;
        Some((route, endpoint))
    })
}

/// Handles one request end to end and answers.
pub async fn handle(
    state: Arc<IngressState>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let received_ms = now_ms();
    // A `debug` span: routine requests are logged at `debug` too, and a
    // span per request at `info` would cost more than the line it frames.
    let span = tracing::debug_span!(
        "ingress",
        route = tracing::field::Empty,
        event_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
        duration_us = tracing::field::Empty,
    );
    let runtime = state.runtime.load_full();
    let (parts, incoming) = request.into_parts();
    let mut body = RequestBody {
        incoming,
        touched: false,
    };
    let path = parts.uri.path();
    let exact = runtime.routes.get(path).cloned();
    let submit = match exact {
        Some(_) => None,
        None => submit_target(&runtime, path).map(|(r, e)| (r.clone(), e.to_string())),
    };
    let route = exact
        .clone()
        .or_else(|| submit.as_ref().map(|(r, _)| r.clone()));
    let (route_label, result) = match (&exact, &submit) {
        (Some(route), _) => (
            route.name.to_string(),
            process(
                &state,
                &runtime,
                route,
                peer,
                &parts,
                &mut body,
                received_ms,
            )
            .instrument(span.clone())
            .await
            .map(Handled::Callback),
        ),
        (None, Some((route, endpoint))) => (
            route.name.to_string(),
            submit_task(&state, &runtime, route, endpoint, peer, &parts, &mut body)
                .instrument(span.clone())
                .await
                .map(Handled::Submitted),
        ),
        (None, None) => ("unmatched".to_string(), Err(Rejection::NotFound)),
    };
    let (outcome, response, event_id) = match result {
        Ok(Handled::Callback(accepted)) => (
            if accepted.duplicate {
                "duplicate"
            } else {
                "accepted"
            },
            answer::accepted(&accepted),
            Some(accepted.event_id),
        ),
        Ok(Handled::Submitted(response)) => ("submitted", response, None),
        // A slow body already had its time: it is not waited for again.
        Err(rejection @ Rejection::BodyTimeout) => {
            (rejection.outcome(), rejection.into_response(), None)
        }
        Err(rejection) => {
            let outcome = rejection.outcome();
            let server = &runtime.config.server;
            let ended = discard(
                &mut body,
                &parts,
                server.max_body_bytes.saturating_add(DISCARD_EXTRA_BYTES),
                DISCARD_TIME.min(server.header_read_timeout),
            )
            .await;
            let mut response = rejection.into_response();
            if !ended && parts.version <= http::Version::HTTP_11 {
                // The rest of the body stays unread: this connection
                // cannot carry another request.
                response
                    .headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            (outcome, response, None)
        }
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
    // Accepted callbacks are the bulk of the traffic: a line each at
    // `debug` (the metrics count them); everything else at `info`.
    let routine = matches!(outcome, "accepted" | "duplicate" | "submitted");
    span.in_scope(|| {
        if routine {
            tracing::debug!(
                route = %route_label,
                peer = %peer.ip(),
                event_id = event_id.as_deref().unwrap_or(""),
                outcome,
                status = response.status().as_u16(),
                duration_us = elapsed.as_micros() as u64,
                "ingress request"
            )
        } else {
            tracing::info!(
                route = %route_label,
                peer = %peer.ip(),
                event_id = event_id.as_deref().unwrap_or(""),
                outcome,
                status = response.status().as_u16(),
                duration_us = elapsed.as_micros() as u64,
                "ingress request"
            )
        }
    });
    response
}

/// Method, client address and token: the checks every request to a route
/// passes before its body is read.
fn admit(route: &Route, peer: SocketAddr, parts: &Parts) -> Result<(), Rejection> {
    if parts.method != Method::POST {
        return Err(Rejection::MethodNotAllowed);
    }
    if !route.allow_ips.is_empty() {
        let ip = peer.ip().to_canonical();
        if !route.allow_ips.iter().any(|net| net.contains(&ip)) {
            return Err(Rejection::Forbidden);
        }
    }
    if !route.tokens.is_empty() && !token_ok(route, parts) {
        return Err(Rejection::Unauthorized);
    }
    Ok(())
}

/// The submit proxy: forwards the app's task to muapi with the route's API
/// key and callback URL, records the task as expected once muapi took it,
/// then relays muapi's answer verbatim.
async fn submit_task(
    state: &IngressState,
    runtime: &Runtime,
    route: &Arc<Route>,
    endpoint: &str,
    peer: SocketAddr,
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<Response<Full<Bytes>>, Rejection> {
    admit(route, peer, parts)?;
    // A route with `muapi:` always has a token (validated), so the sender
    // is known before its body is read.
    let settings = route.muapi.as_ref().ok_or(Rejection::NotFound)?;
    if !crate::reconcile::valid_endpoint(endpoint) {
        return Err(Rejection::Invalid(
            "the endpoint after /submit/ must be a plain path of letters, digits, `-`, `_`, `.`"
                .into(),
        ));
    }
    let server = &runtime.config.server;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > server.max_body_bytes) {
        return Err(Rejection::TooLarge(server.max_body_bytes));
    }
    let read = read_body(
        body,
        server.max_body_bytes,
        declared,
        None,
        server.header_read_timeout,
    )
    .await?;
    let answer = state
        .muapi
        .submit(
            settings,
            endpoint,
            parts.headers.get(http::header::CONTENT_TYPE),
            read,
        )
        .await
        .map_err(|e| Rejection::BadGateway(e.to_string()))?;
    let mut response = Response::new(Full::new(answer.body.clone()));
    *response.status_mut() = answer.status;
    if let Some(content_type) = answer.content_type {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, content_type);
    }
    if answer.status.is_success() {
        if let Some(id) = crate::reconcile::request_id(&answer.body) {
            match crate::reconcile::expect(&*state.store, route, settings, &id, endpoint).await {
                Ok(_) => {
                    tracing::info!(route = %route.name, task = %id, endpoint, "task submitted; its result is expected");
                }
                Err(e) => {
                    // muapi has the task (and charges for it): its answer
                    // still goes back, so the app does not submit it twice,
                    // marked so the app can register it later.
                    tracing::error!(route = %route.name, task = %id, error = %e, "task submitted but not recorded as expected");
                    response.headers_mut().insert(
                        "hookrelay-expected",
                        HeaderValue::from_static("not-recorded"),
                    );
                }
            }
        }
    }
    Ok(response)
}

async fn process(
    state: &IngressState,
    runtime: &Runtime,
    route: &Arc<Route>,
    peer: SocketAddr,
    parts: &Parts,
    body: &mut RequestBody,
    received_ms: u64,
) -> Result<Accepted, Rejection> {
    admit(route, peer, parts)?;
    let server = &runtime.config.server;
    let limit = server.max_body_bytes;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(Rejection::TooLarge(limit));
    }
    // Without a token, nobody is authenticated until the body's signature
    // is checked: what the body holds meanwhile is bounded.
    let mut reservation = route.tokens.is_empty().then(|| {
        let pools = parts
            .extensions
            .get::<BodyPools>()
            .cloned()
            .unwrap_or_default();
        Reservation::new(
            pools,
            budget::Limits {
                connection: server.max_unauthenticated_body_bytes_per_connection,
                total: server.max_unauthenticated_body_bytes,
            },
        )
    });
    if let (Some(reservation), Some(len)) = (reservation.as_mut(), declared) {
        if !reservation.grow(len) {
            return Err(Rejection::Busy);
        }
    }
    let read = read_body(
        body,
        limit,
        declared,
        reservation.as_mut(),
        server.header_read_timeout,
    )
    .await?;
    // The reservation lasts until intake has checked the signature and
    // made the event durable (or refused it).
    let accepted = state
        .intake
        .accept(route, &parts.headers, read, received_ms)
        .await
        .map_err(Rejection::from);
    drop(reservation);
    accepted
}

/// A request body, and whether reading it began (a client that sent
/// `Expect: 100-continue` sends nothing until then).
struct RequestBody {
    incoming: Incoming,
    touched: bool,
}

/// Reads at most `limit` bytes, refusing as soon as more arrive, and
/// growing `reservation` (if any) ahead of what is held.
async fn read_body(
    body: &mut RequestBody,
    limit: u64,
    declared: Option<u64>,
    mut reservation: Option<&mut Reservation>,
    timeout: Duration,
) -> Result<Bytes, Rejection> {
    body.touched = true;
    let incoming = &mut body.incoming;
    let collect = async {
        // Our own buffer, sized for the declared length: a delivery waiting
        // in a lane then pins exactly the body, not a slice of hyper's
        // read buffer.
        let mut buffer = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
        while let Some(frame) = incoming.frame().await {
            let frame = frame
                .map_err(|_| Rejection::Invalid("the request body could not be read".into()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let total = buffer.len() as u64 + data.len() as u64;
            if total > limit {
                return Err(Rejection::TooLarge(limit));
            }
            if let Some(reservation) = reservation.as_deref_mut() {
                if total > reservation.held() && !reservation.grow(total - reservation.held()) {
                    return Err(Rejection::Busy);
                }
            }
            buffer.extend_from_slice(&data);
        }
        Ok(if buffer.len() == buffer.capacity() {
            Bytes::from(buffer)
        } else {
            Bytes::copy_from_slice(&buffer)
        })
    };
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(Rejection::BodyTimeout),
        Ok(read) => read,
    }
}

/// Most bytes read and dropped, past `max_body_bytes`, to let a client
/// finish sending before it reads an early answer.
pub const DISCARD_EXTRA_BYTES: u64 = 1024 * 1024;

/// Longest time spent reading and dropping a refused body (shortened to
/// `header_read_timeout` if that is shorter).
pub const DISCARD_TIME: Duration = Duration::from_secs(1);

/// Reads and drops what is left of a refused request's body, within
/// `max_bytes` and `max_time`. True when the body was read to its end.
async fn discard(
    body: &mut RequestBody,
    parts: &Parts,
    max_bytes: u64,
    max_time: Duration,
) -> bool {
    let incoming = &mut body.incoming;
    if incoming.is_end_stream() {
        return true;
    }
    // A client waiting for `100 Continue` has sent nothing: it needs no
    // room to finish, and reading would only invite the body.
    let expects_continue = parts
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && !body.touched {
        return false;
    }
    if incoming.size_hint().lower() > max_bytes {
        return false;
    }
    let drain = async {
        let mut dropped = 0u64;
        while let Some(frame) = incoming.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                dropped += data.len() as u64;
                if dropped > max_bytes {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(max_time, drain).await.unwrap_or(false)
}

/// True when `?token=` or `Authorization: Bearer` matches one of the route's
/// tokens. Every configured token is compared, in constant time.
fn token_ok(route: &Route, parts: &Parts) -> bool {
    let bearer = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().as_bytes());
    let bearer_ok = bearer.is_some_and(|t| token_matches(&route.tokens, t));
    let query_ok = parts
        .uri
        .query()
        .and_then(auth::raw_query_token)
        .is_some_and(|raw| {
            let [as_written, decoded] = auth::query_token_candidates(raw);
            // Both compared, so the timing does not say which form matched.
            token_matches(&route.tokens, &as_written) | token_matches(&route.tokens, &decoded)
        });
    bearer_ok | query_ok
}

/// The percent-decoded value of `token=` in a query string (`+` is a plus
/// sign), as the tests below pin it.
#[cfg(test)]
fn query_token(query: &str) -> Option<Vec<u8>> {
    let raw = auth::raw_query_token(query)?;
    let [_, decoded] = auth::query_token_candidates(raw);
    Some(decoded.into_owned())
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

    #[test]
    fn query_token_plus_is_a_plus_and_signs_are_not_hex() {
        assert_eq!(query_token("token=a+b").unwrap(), b"a+b");
        assert_eq!(query_token("token=a%2Bb").unwrap(), b"a+b");
        // `u8::from_str_radix` would take these as 0x04 and 0x01.
        assert_eq!(query_token("token=%+4").unwrap(), b"%+4");
        assert_eq!(query_token("token=%-1x").unwrap(), b"%-1x");
    }

    #[test]
    fn compiled_routes_hold_token_digests_not_tokens() {
        let yaml = "server: { listen: \"127.0.0.1:0\" }\nroutes:\n  - name: r\n    path: /r\n    source: muapi\n    auth: { tokens: [\"s3cr3t-token\"] }\n    subscribers: [{ name: a, url: \"http://127.0.0.1:9/\" }]\n";
        let runtime = crate::Config::from_yaml(yaml, &|_| None)
            .unwrap()
            .compile()
            .unwrap();
        let route = runtime.route_named("r").unwrap();
        let shown = format!("{route:?}");
        let bytes = format!("{:?}", b"s3cr3t-token".to_vec());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains(&bytes[1..bytes.len() - 1]), "{shown}");
        assert!(token_matches(&route.tokens, b"s3cr3t-token"));
        assert!(!token_matches(&route.tokens, b"s3cr3t-toke"));
    }
}
