//! The outbound HTTP client: one POST per attempt, exactly DESIGN.md's
//! delivery request.
//!
//! hyper-util's pooled client over hyper-rustls (webpki roots, plus a
//! subscriber's `ca_file` when set), keep-alive, HTTP/2 when the subscriber
//! offers it via ALPN, no redirects (hyper's client never follows them), and
//! a per-attempt timeout from connect to the last response byte.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;

use crate::config::Subscriber;
use crate::store::{EventId, Origin};

/// Why a CA file could not be used. Names the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Unreadable or not PEM.
    #[error("cannot read CA certificates from {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Reads every certificate from a PEM file (at least one).
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    crate::pem::certificates(path).map_err(|reason| ClientError::CaFile {
        path: path.display().to_string(),
        reason,
    })
}

/// How an attempt ended, classified for retries, breaker and metrics.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    /// HTTP status, when the subscriber answered.
    pub status: Option<StatusCode>,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
    /// Error text when it did not answer (no secrets, no query string).
    pub error: Option<String>,
    /// Metric label: 2xx, 3xx, 4xx, 5xx, timeout, connect_error, error.
    pub class: &'static str,
    /// Wall time of the attempt.
    pub elapsed: Duration,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends attempts; one pooled client per distinct trust configuration.
#[derive(Clone)]
pub struct DeliveryClient {
    client: HttpsClient,
    user_agent: HeaderValue,
}

impl DeliveryClient {
    /// A client trusting the webpki roots plus `extra_ca`.
    pub fn new(extra_ca: &[CertificateDer<'static>]) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in extra_ca {
            let _ = roots.add(cert.clone());
        }
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
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Self {
            client,
            user_agent: HeaderValue::from_static(concat!("hookrelay/", env!("CARGO_PKG_VERSION"))),
        }
    }

    /// A client for a subscriber with its own `ca_file`.
    pub fn for_ca_file(path: &Path) -> Result<Self, ClientError> {
        Ok(Self::new(&load_ca_file(path)?))
    }

    /// One attempt: the signed POST, bounded by the subscriber's timeout.
    pub async fn send(
        &self,
        subscriber: &Subscriber,
        event: EventId,
        attempt: u32,
        origin: Origin,
        body: Bytes,
    ) -> AttemptResult {
        let started = Instant::now();
        let event_id = event.to_string();
        let event_id = event_id.as_str();
        let timestamp = crate::store::now_ms() / 1000;
        let mut request = Request::post(subscriber.url.clone());
        let headers = request.headers_mut().expect("fresh request builder");
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(http::header::USER_AGENT, self.user_agent.clone());
        headers.insert(
            "webhook-id",
            HeaderValue::from_str(event_id).expect("event ids are header-safe"),
        );
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        if !subscriber.signing_keys.is_empty() {
            let signature =
                crate::signing::sign(&subscriber.signing_keys, event_id, timestamp, &body);
            headers.insert(
                "webhook-signature",
                HeaderValue::from_str(&signature).expect("base64 is header-safe"),
            );
        }
        headers.insert("hookrelay-attempt", HeaderValue::from(attempt));
        headers.insert(
            "hookrelay-route",
            HeaderValue::from_str(&subscriber.route).expect("route names are header-safe"),
        );
        if origin == Origin::Reconciled {
            headers.insert("hookrelay-origin", HeaderValue::from_static("reconciled"));
        }
        for (name, value) in &subscriber.headers {
            headers.insert(name.clone(), value.clone());
        }
        let request = request.body(Full::new(body)).expect("valid request");

        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let retry_after = if status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE
            {
                response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(parse_retry_after)
            } else {
                None
            };
            // Read the answer to its end (bounded) so the connection can be reused.
            let mut body = response.into_body();
            let mut seen = 0usize;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        seen += frame.data_ref().map_or(0, |d| d.len());
                        if seen > 64 * 1024 {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after))
        };
        let outcome = tokio::time::timeout(subscriber.timeout, exchange).await;
        let elapsed = started.elapsed();
        match outcome {
            Err(_) => AttemptResult {
                status: None,
                retry_after: None,
                error: Some(format!("timeout after {:?}", subscriber.timeout)),
                class: "timeout",
                elapsed,
            },
            Ok(Err(e)) => AttemptResult {
                status: None,
                retry_after: None,
                error: Some(describe_error(&e)),
                class: if e.is_connect() {
                    "connect_error"
                } else {
                    "error"
                },
                elapsed,
            },
            Ok(Ok((status, retry_after))) => AttemptResult {
                status: Some(status),
                retry_after,
                error: None,
                class: match status.as_u16() {
                    200..=299 => "2xx",
                    300..=399 => "3xx",
                    400..=499 => "4xx",
                    _ => "5xx",
                },
                elapsed,
            },
        }
    }
}

/// The error chain as one line (hyper's errors name no URL or query).
fn describe_error(e: &hyper_util::client::legacy::Error) -> String {
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

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let date = httpdate::fmt_http_date(later);
        let parsed = parse_retry_after(&HeaderValue::from_str(&date).unwrap()).unwrap();
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120));
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }
}
