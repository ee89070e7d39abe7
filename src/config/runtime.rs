//! The compiled configuration: what the hot paths read.
//!
//! Everything a request or an attempt needs is parsed once here (tokens as
//! bytes, CIDRs, decoded secrets, header values, merged retry settings), so
//! the ingress and the lanes never parse config text again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

use super::validate::{
    decode_whsec, parse_cidr, parse_http_url_without_query, parse_subscriber_url,
};
use super::{Config, MuapiConfig, Problem, RetryConfig, SubscriberConfig};

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
                .map_err(|_| "names an invalid header (`header:NAME`)".to_string())
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

/// Exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// The merged settings.
    pub config: RetryConfig,
}

impl RetryPolicy {
    /// The wait before attempt `attempts_done + 1`, given `attempts_done >= 1`
    /// attempts have failed: `initial_interval × multiplier^(attempts_done-1)`
    /// capped by `max_interval`, spread by ±`jitter`, then `retry_after`
    /// (from a 429/503) as a floor, capped by `max_interval` as well.
    /// `unit` in [0,1) draws the jitter.
    ///
    /// The exponential base comes from `backon`'s exponential builder (the
    /// schedule library this project uses); it is asked for at most the
    /// number of steps it takes to reach `max_interval` (later steps stay
    /// at the cap), with inputs held to the validated ranges, so it never
    /// overflows or loops for long, whatever the settings and however many
    /// attempts were made. Jitter and `Retry-After` are applied with
    /// saturating arithmetic.
    pub fn delay(&self, attempts_done: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let c = &self.config;
        let cap = c.max_interval.min(super::duration::MAX);
        let initial = c.initial_interval.min(cap);
        let factor = if c.multiplier.is_finite() {
            c.multiplier.clamp(1.0, 100.0)
        } else {
            1.0
        };
        // Steps until the cap: beyond them every delay is the cap.
        let steps_to_cap = if factor <= 1.0 || initial.is_zero() {
            0
        } else {
            let ratio = cap.as_secs_f64() / initial.as_secs_f64();
            (ratio.ln() / factor.ln()).ceil().clamp(0.0, 64.0) as usize
        };
        let step = (attempts_done.saturating_sub(1) as usize).min(steps_to_cap);
        use backon::BackoffBuilder;
        let base = backon::ExponentialBuilder::default()
            .with_min_delay(initial)
            .with_factor(factor as f32)
            .with_max_delay(cap)
            .without_max_times()
            .build()
            .nth(step)
            .unwrap_or(cap)
            .min(cap);
        let jitter = if c.jitter.is_finite() {
            c.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let jittered = scale(base, 1.0 + jitter * (2.0 * unit - 1.0), cap);
        match retry_after {
            Some(wait) => jittered.max(wait.min(cap)),
            None => jittered,
        }
    }
}

/// `d × factor`, saturating at `cap` (a NaN or negative factor gives zero).
fn scale(d: Duration, factor: f64, cap: Duration) -> Duration {
    let secs = d.as_secs_f64() * factor;
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap))
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
    /// muapi.ai API access (`routes[].muapi:`), only on muapi routes.
    pub muapi: Option<MuapiSettings>,
}

/// A muapi route's `muapi:` block, parsed: what reconciliation needs.
#[derive(Clone)]
pub struct MuapiSettings {
    /// muapi.ai API key. Secret: never log it (`Debug` redacts it).
    pub api_key: String,
    /// muapi.ai API base, absolute http(s), no query.
    pub base_url: Uri,
    /// The URL muapi calls back, without the token (hookrelay adds one of
    /// the route's tokens as `?token=`); its path is the route's path.
    pub public_url: Uri,
    /// A task with no callback after this long is polled.
    pub reconcile_after: Duration,
    /// Wait before the second poll of a task.
    pub poll_initial_interval: Duration,
    /// Cap on the wait between polls (not shorter than the initial one).
    pub poll_max_interval: Duration,
    /// A task unresolved this long after submission is given up (longer
    /// than `reconcile_after`).
    pub give_up_after: Duration,
    /// Poll requests in flight at once for this route (1..=256).
    pub max_polls_in_flight: u32,
    /// The full callback URL handed to muapi: `public_url` with the
    /// route's first token as `?token=` (percent-encoded). Secret: it holds
    /// the token (`Debug` redacts it).
    pub callback_url: String,
}

impl std::fmt::Debug for MuapiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuapiSettings")
            .field("api_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("public_url", &self.public_url)
            .field("reconcile_after", &self.reconcile_after)
            .field("poll_initial_interval", &self.poll_initial_interval)
            .field("poll_max_interval", &self.poll_max_interval)
            .field("give_up_after", &self.give_up_after)
            .field("max_polls_in_flight", &self.max_polls_in_flight)
            .field("callback_url", &"<redacted>")
            .finish()
    }
}

impl MuapiSettings {
    fn compile(m: &MuapiConfig, token: &str) -> MuapiSettings {
        // Percent-encoded (a space as %20, not `+`: the ingress reads a `+`
        // in `?token=` as a plus sign).
        let token =
            percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        MuapiSettings {
            callback_url: format!("{}?token={token}", m.public_url),
            api_key: m.api_key.clone(),
            base_url: parse_http_url_without_query(&m.base_url).expect("validated"),
            public_url: parse_http_url_without_query(&m.public_url).expect("validated"),
            reconcile_after: m.reconcile_after,
            poll_initial_interval: m.poll.initial_interval,
            poll_max_interval: m.poll.max_interval,
            give_up_after: m.give_up_after,
            max_polls_in_flight: m.max_polls_in_flight,
        }
    }
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

    /// Every route with a `muapi:` block, with its settings.
    pub fn muapi_routes(&self) -> impl Iterator<Item = (&Arc<Route>, &MuapiSettings)> {
        self.routes
            .values()
            .filter_map(|r| r.muapi.as_ref().map(|m| (r, m)))
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
                muapi: route.muapi.as_ref().map(|m| {
                    // Validated: a route with `muapi:` has at least one token.
                    let token = route.auth.tokens.first().map_or("", |t| t.as_str());
                    MuapiSettings::compile(m, token)
                }),
            };
            routes.insert(route.path.clone(), Arc::new(compiled));
        }
        Ok(Runtime {
            routes,
            config: self.clone(),
        })
    }

    fn compile_subscriber(&self, route: &Arc<str>, s: &SubscriberConfig) -> Subscriber {
        let effective = self.effective(s);
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
            timeout: effective.timeout,
            max_in_flight: effective.max_in_flight,
            retry: RetryPolicy {
                config: effective.retry,
            },
            breaker: Breaker {
                failure_threshold: effective.breaker.failure_threshold,
                cooldown: effective.breaker.cooldown,
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

    /// Issue 9 item 16: the largest durations validation allows, the
    /// steepest multiplier and the widest jitter never panic or wrap.
    #[test]
    fn delay_at_the_maximum_durations_stays_in_range() {
        let max = crate::config::MAX_DURATION;
        let p = RetryPolicy {
            config: RetryConfig {
                initial_interval: max,
                multiplier: 100.0,
                max_interval: max,
                max_elapsed: max,
                jitter: 0.999,
            },
        };
        for attempts in [1, 2, 50, 1000, u32::MAX] {
            for unit in [0.0, 0.5, 0.999_999] {
                for retry_after in [None, Some(Duration::MAX)] {
                    let d = p.delay(attempts, retry_after, unit);
                    assert!(d <= max, "{d:?}");
                    assert!(d.as_millis() < u64::MAX as u128);
                }
            }
        }
    }

    /// Values validation refuses (a policy built in code) still never panic.
    #[test]
    fn delay_saturates_for_unvalidated_values() {
        let huge = Duration::from_secs(200_000_000_000_000 * 86_400);
        let p = RetryPolicy {
            config: RetryConfig {
                initial_interval: huge,
                multiplier: 2.0,
                max_interval: Duration::MAX,
                max_elapsed: Duration::MAX,
                jitter: 0.5,
            },
        };
        // Held to the largest duration a config may hold.
        let max = crate::config::duration::MAX;
        assert_eq!(p.delay(1, None, 0.99), max);
        assert_eq!(p.delay(3, Some(Duration::MAX), 0.5), max);
        assert_eq!(p.delay(u32::MAX, None, 0.5), max);
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
