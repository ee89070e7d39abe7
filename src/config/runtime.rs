//! The compiled configuration: what the hot paths read.
//!
//! Everything a request or an attempt needs is parsed once here (tokens as
//! bytes, CIDRs, decoded secrets, header values, merged retry settings), so
//! the ingress and the lanes never parse config text again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use http::{HeaderName, HeaderValue, Uri};

use super::validate::{decode_whsec, parse_cidr, parse_subscriber_url};
use super::{Config, Problem, RetryConfig, SubscriberConfig};

/// How a route's bodies are parsed and keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// muapi.ai task callbacks: `id` and `status` required.
    Muapi,
    /// Any JSON object.
    Generic,
}

/// Where a generic route finds its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// A request header.
    Header(HeaderName),
    /// A JSON pointer into the body (the value's JSON text is the key).
    Json(String),
}

impl KeySpec {
    /// Parses `header:NAME` or `json:/pointer`.
    pub fn parse(text: &str) -> Result<KeySpec, String> {
        if let Some(name) = text.strip_prefix("header:") {
            HeaderName::from_bytes(name.trim().as_bytes())
                .map(KeySpec::Header)
                .map_err(|_| format!("`{name}` is not a valid header name"))
        } else if let Some(pointer) = text.strip_prefix("json:") {
            if pointer.starts_with('/') {
                Ok(KeySpec::Json(pointer.to_string()))
            } else {
                Err("a JSON pointer starts with `/`, e.g. json:/data/id".into())
            }
        } else {
            Err("must be `header:NAME` or `json:/pointer`".into())
        }
    }
}

/// A subscriber's `when:` filter, evaluated once per event at intake.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Accepted `status` values; `None` accepts any.
    pub statuses: Option<Vec<String>>,
    /// `(pointer, expected value)` pairs that must all match.
    pub json: Vec<(String, serde_json::Value)>,
}

impl Filter {
    /// Whether an event with this status (and parsed body, needed only
    /// when [`Filter::json`] is not empty) goes to the subscriber.
    pub fn matches(&self, status: Option<&str>, body: Option<&serde_json::Value>) -> bool {
        if let Some(statuses) = &self.statuses {
            if !status.is_some_and(|s| statuses.iter().any(|x| x == s)) {
                return false;
            }
        }
        self.json
            .iter()
            .all(|(pointer, expected)| body.and_then(|b| b.pointer(pointer)) == Some(expected))
    }
}

/// Exponential backoff with jitter, built on `backon`'s exponential builder.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// The merged settings.
    pub config: RetryConfig,
}

impl RetryPolicy {
    /// The wait before attempt `attempts_done + 1`, given `attempts_done >= 1`
    /// attempts have failed; `retry_after` (from a 429/503) is honoured as a
    /// floor, capped by `max_interval`. `unit` in [0,1) draws the jitter.
    pub fn delay(&self, attempts_done: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let c = &self.config;
        let base = backon::ExponentialBuilder::default()
            .with_min_delay(c.initial_interval)
            .with_factor(c.multiplier as f32)
            .with_max_delay(c.max_interval)
            .without_max_times()
            .build()
            .nth(attempts_done.saturating_sub(1) as usize)
            .unwrap_or(c.max_interval)
            .min(c.max_interval);
        let spread = 1.0 + c.jitter * (2.0 * unit - 1.0);
        let jittered = base.mul_f64(spread.max(0.0)).min(c.max_interval);
        match retry_after {
            Some(wait) => jittered.max(wait.min(c.max_interval)),
            None => jittered,
        }
    }
}

/// Circuit-breaker settings of one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
}

/// One delivery destination, fully resolved.
#[derive(Debug)]
pub struct Subscriber {
    /// Owning route's name (metrics, `hookrelay-route` header).
    pub route: Arc<str>,
    /// Unique within the route.
    pub name: Arc<str>,
    /// Target URL.
    pub url: Uri,
    /// Which events it receives.
    pub filter: Filter,
    /// Decoded signing keys, newest first.
    pub signing_keys: Vec<Vec<u8>>,
    /// Extra request headers, pre-validated.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Extra trust for https.
    pub ca_file: Option<PathBuf>,
    /// Per-attempt timeout, connect to last byte.
    pub timeout: Duration,
    /// Attempts in flight at once.
    pub max_in_flight: u32,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// Circuit breaker.
    pub breaker: Breaker,
}

impl Subscriber {
    /// `route/subscriber`, the lane's identity.
    pub fn key(&self) -> String {
        format!("{}/{}", self.route, self.name)
    }
}

/// One ingress route, fully resolved.
#[derive(Debug)]
pub struct Route {
    /// Name (metrics, logs, idempotency namespace).
    pub name: Arc<str>,
    /// Exact path.
    pub path: String,
    /// Body parsing and keying.
    pub source: SourceKind,
    /// SHA-256 digests of the accepted tokens (compared in constant time;
    /// the tokens themselves are not kept here).
    pub tokens: Vec<crate::ingress::auth::TokenDigest>,
    /// Allowed client networks; empty allows all.
    pub allow_ips: Vec<ipnet::IpNet>,
    /// Decoded Standard Webhooks key for inbound verification.
    pub inbound_secret: Option<Vec<u8>>,
    /// Configured key location for generic routes.
    pub key_spec: Option<KeySpec>,
    /// Some subscriber filters on a JSON pointer, so intake must parse the
    /// whole body into a tree (otherwise muapi bodies are only skimmed).
    pub needs_json: bool,
    /// Destinations.
    pub subscribers: Vec<Arc<Subscriber>>,
}

/// The compiled config the gateway runs on; swapped whole on reload.
#[derive(Debug)]
pub struct Runtime {
    /// Routes by exact path.
    pub routes: HashMap<String, Arc<Route>>,
    /// The source it was compiled from.
    pub config: Config,
}

impl Runtime {
    /// Every subscriber of every route.
    pub fn subscribers(&self) -> impl Iterator<Item = &Arc<Subscriber>> {
        self.routes.values().flat_map(|r| r.subscribers.iter())
    }

    /// The route with this name.
    pub fn route_named(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.values().find(|r| &*r.name == name)
    }
}

impl Config {
    /// Resolves a validated config into its runtime form.
    pub fn compile(&self) -> Result<Runtime, Vec<Problem>> {
        self.validate()?;
        let mut routes = HashMap::new();
        for route in &self.routes {
            let name: Arc<str> = Arc::from(route.name.as_str());
            let subscribers: Vec<Arc<Subscriber>> = route
                .subscribers
                .iter()
                .map(|s| Arc::new(self.compile_subscriber(&name, s)))
                .collect();
            let needs_json = subscribers.iter().any(|s| !s.filter.json.is_empty());
            let compiled = Route {
                name,
                path: route.path.clone(),
                source: if route.source == "muapi" {
                    SourceKind::Muapi
                } else {
                    SourceKind::Generic
                },
                tokens: route
                    .auth
                    .tokens
                    .iter()
                    .map(|t| crate::ingress::auth::TokenDigest::of(t.as_bytes()))
                    .collect(),
                allow_ips: route
                    .auth
                    .allow_ips
                    .iter()
                    .filter_map(|c| parse_cidr(c).ok())
                    .collect(),
                inbound_secret: route
                    .auth
                    .standard_webhooks_secret
                    .as_deref()
                    .and_then(|s| decode_whsec(s).ok()),
                key_spec: route
                    .idempotency_key
                    .as_deref()
                    .and_then(|k| KeySpec::parse(k).ok()),
                needs_json,
                subscribers,
            };
            routes.insert(route.path.clone(), Arc::new(compiled));
        }
        Ok(Runtime {
            routes,
            config: self.clone(),
        })
    }

    fn compile_subscriber(&self, route: &Arc<str>, s: &SubscriberConfig) -> Subscriber {
        let d = &self.defaults;
        let r = s.retry.clone().unwrap_or_default();
        let b = s.circuit_breaker.clone().unwrap_or_default();
        Subscriber {
            route: route.clone(),
            name: Arc::from(s.name.as_str()),
            url: parse_subscriber_url(&s.url).expect("validated"),
            filter: s
                .when
                .as_ref()
                .map(|w| Filter {
                    statuses: w.status.clone(),
                    json: w.json.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                })
                .unwrap_or_default(),
            signing_keys: s
                .signing_secrets
                .iter()
                .filter_map(|k| decode_whsec(k).ok())
                .collect(),
            headers: s
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(k.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect(),
            ca_file: s.ca_file.clone(),
            timeout: s.timeout.unwrap_or(d.timeout),
            max_in_flight: s.max_in_flight.unwrap_or(d.max_in_flight),
            retry: RetryPolicy {
                config: RetryConfig {
                    initial_interval: r.initial_interval.unwrap_or(d.retry.initial_interval),
                    multiplier: r.multiplier.unwrap_or(d.retry.multiplier),
                    max_interval: r.max_interval.unwrap_or(d.retry.max_interval),
                    max_elapsed: r.max_elapsed.unwrap_or(d.retry.max_elapsed),
                    jitter: r.jitter.unwrap_or(d.retry.jitter),
                },
            },
            breaker: Breaker {
                failure_threshold: b
                    .failure_threshold
                    .unwrap_or(d.circuit_breaker.failure_threshold),
                cooldown: b.cooldown.unwrap_or(d.circuit_breaker.cooldown),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            config: RetryConfig {
                initial_interval: Duration::from_secs(1),
                multiplier: 2.0,
                max_interval: Duration::from_secs(10),
                max_elapsed: Duration::from_secs(100),
                jitter,
            },
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = policy(0.0);
        let waits: Vec<u64> = (1..=6).map(|n| p.delay(n, None, 0.5).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let p = policy(0.2);
        assert_eq!(p.delay(2, None, 0.0), Duration::from_millis(1600));
        assert_eq!(p.delay(2, None, 1.0), Duration::from_millis(2400));
    }

    #[test]
    fn retry_after_is_a_floor_capped_by_max_interval() {
        let p = policy(0.0);
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(5)), 0.5),
            Duration::from_secs(5)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(500)), 0.5),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn filter_matches_status_and_pointer() {
        let f = Filter {
            statuses: Some(vec!["completed".into()]),
            json: vec![("/model".into(), serde_json::json!("flux"))],
        };
        let flux = serde_json::json!({"model":"flux"});
        let sd = serde_json::json!({"model":"sd"});
        assert!(f.matches(Some("completed"), Some(&flux)));
        assert!(!f.matches(Some("failed"), Some(&flux)));
        assert!(!f.matches(Some("completed"), Some(&sd)));
        assert!(!f.matches(None, Some(&flux)));
    }
}
