//! The YAML configuration: schema, loading, validation and the compiled form
//! the rest of the gateway runs on.
//!
//! Loading goes text → YAML tree (serde-saphyr) → `${NAME}` interpolation →
//! typed [`Config`] (unknown keys refused, every error names its key) →
//! [`Config::validate`] (every rule, every problem) → [`Config::compile`]
//! into [`Runtime`], the shape the hot paths use.

pub mod duration;
mod interpolate;
mod runtime;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use runtime::{Breaker, Filter, KeySpec, RetryPolicy, Route, Runtime, SourceKind, Subscriber};

/// One thing wrong with a config file: the key it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending key, e.g. `routes[0].subscribers[1].url`.
    pub key: String,
    /// What is wrong, never quoting a secret value.
    pub message: String,
}

impl Problem {
    /// Builds a problem for `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file we tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not well-formed YAML.
    #[error("config is not valid YAML: {0}")]
    Syntax(String),
    /// The YAML parsed but breaks one or more rules; all of them are listed.
    #[error("{}", list_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem, one per entry (a syntax error counts as one).
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(problems) => problems.iter().map(|p| p.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn list_problems(problems: &[Problem]) -> String {
    let mut out = format!("config has {} problem(s):", problems.len());
    for p in problems {
        out.push_str("\n  - ");
        out.push_str(&p.to_string());
    }
    out
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The ingress listener.
    pub server: ServerConfig,
    /// The admin listener (health, metrics, API).
    #[serde(default)]
    pub admin: AdminConfig,
    /// The embedded store.
    #[serde(default)]
    pub store: StoreConfig,
    /// How long and how many idempotency keys are remembered.
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
    /// How long attempts in flight may run on after a shutdown signal.
    #[serde(
        default = "d_shutdown_grace",
        deserialize_with = "duration::deserialize"
    )]
    pub shutdown_grace: Duration,
    /// Delivery settings applied to every subscriber unless it overrides them.
    #[serde(default)]
    pub defaults: DeliveryDefaults,
    /// Logging format and level.
    #[serde(default)]
    pub log: LogConfig,
    /// The webhook routes; at least one.
    pub routes: Vec<RouteConfig>,
    /// The file this config came from (reloads read it again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `server:` — the public ingress.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind, e.g. `0.0.0.0:8443` (port 0 picks a free port).
    pub listen: SocketAddr,
    /// TLS settings; absent means plain HTTP (behind a TLS-terminating proxy).
    pub tls: Option<TlsConfig>,
    /// Larger bodies are refused with 413 while they are being read.
    #[serde(default = "d_max_body")]
    pub max_body_bytes: u64,
    /// A client that has not sent a full request head by then is cut off.
    #[serde(
        default = "d_header_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub header_read_timeout: Duration,
    /// Connections beyond this wait in the kernel backlog.
    #[serde(default = "d_max_connections")]
    pub max_connections: u32,
    /// A connection with no request in flight for this long is closed, so
    /// idle (HTTP/2) connections cannot hold `max_connections` slots forever.
    #[serde(default = "d_idle_timeout", deserialize_with = "duration::deserialize")]
    pub idle_timeout: Duration,
    /// Bytes of request bodies held at once, in all, before their senders
    /// are authenticated (routes with `standard_webhooks_secret` and no
    /// `tokens` read the body to check the signature): bounds the memory
    /// unauthenticated clients can take. A request beyond it gets 503.
    #[serde(default = "d_max_unauth_body")]
    pub max_unauthenticated_body_bytes: u64,
    /// The same bound for one connection, so one client cannot take it all.
    #[serde(default = "d_max_unauth_body_conn")]
    pub max_unauthenticated_body_bytes_per_connection: u64,
}

/// `server.tls:` — either files or a dev-only self-signed certificate.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Names for a certificate generated at start (development only).
    pub self_signed: Option<Vec<String>>,
}

/// `admin:` — health, readiness, metrics and the admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Plain-HTTP listener; keep it private.
    #[serde(default = "d_admin_listen")]
    pub listen: SocketAddr,
    /// Bearer token for `/api/*`; without it the API is closed.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: d_admin_listen(),
            token: None,
        }
    }
}

/// `store:` — where accepted callbacks are made durable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory holding the store file (`hookrelay.redb`).
    #[serde(default = "d_store_path")]
    pub path: PathBuf,
    /// Most records one group commit takes.
    #[serde(default = "d_commit_batch")]
    pub max_batch: usize,
    /// Memory for the store's page cache, in bytes.
    #[serde(default = "d_cache_bytes")]
    pub cache_bytes: usize,
    /// Delivered events are kept this long after delivery (for lookups and
    /// duplicates) before the pruner removes them; at least the idempotency TTL applies.
    #[serde(default = "d_retention", deserialize_with = "duration::deserialize")]
    pub retention: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: d_store_path(),
            max_batch: d_commit_batch(),
            cache_bytes: d_cache_bytes(),
            retention: d_retention(),
        }
    }
}

/// `idempotency:` — duplicate detection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// Longer than any sender's retry window.
    #[serde(default = "d_idem_ttl", deserialize_with = "duration::deserialize")]
    pub ttl: Duration,
    /// Keys held in memory; the oldest are evicted first (the store still
    /// recognises a duplicate of an evicted key while it holds the event).
    #[serde(default = "d_max_keys")]
    pub max_keys: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            ttl: d_idem_ttl(),
            max_keys: d_max_keys(),
        }
    }
}

/// `log:` — how the process logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(default = "d_log_format")]
    pub format: String,
    /// A `tracing` filter such as `info` or `hookrelay=debug`; `RUST_LOG` wins.
    #[serde(default = "d_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: d_log_format(),
            level: d_log_level(),
        }
    }
}

/// `defaults:` — delivery settings shared by all subscribers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryDefaults {
    /// One attempt, connect to last response byte.
    #[serde(default = "d_timeout", deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// Attempts in flight at once per subscriber.
    #[serde(default = "d_max_in_flight")]
    pub max_in_flight: u32,
    /// Retry schedule.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Circuit breaker.
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
}

impl Default for DeliveryDefaults {
    fn default() -> Self {
        Self {
            timeout: d_timeout(),
            max_in_flight: d_max_in_flight(),
            retry: RetryConfig::default(),
            circuit_breaker: BreakerConfig::default(),
        }
    }
}

/// `retry:` — exponential backoff with jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Wait before the second attempt.
    #[serde(default = "d_initial", deserialize_with = "duration::deserialize")]
    pub initial_interval: Duration,
    /// Each wait is this many times the previous one.
    #[serde(default = "d_multiplier")]
    pub multiplier: f64,
    /// Cap on one wait (also caps a subscriber's `Retry-After`).
    #[serde(default = "d_max_interval", deserialize_with = "duration::deserialize")]
    pub max_interval: Duration,
    /// After this long since receipt, the delivery becomes a dead letter.
    #[serde(default = "d_max_elapsed", deserialize_with = "duration::deserialize")]
    pub max_elapsed: Duration,
    /// Fraction of random spread (0.2 = ±20 %) so retries do not synchronise.
    #[serde(default = "d_jitter")]
    pub jitter: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_interval: d_initial(),
            multiplier: d_multiplier(),
            max_interval: d_max_interval(),
            max_elapsed: d_max_elapsed(),
            jitter: d_jitter(),
        }
    }
}

/// A subscriber's partial override of [`RetryConfig`].
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    /// See [`RetryConfig::initial_interval`].
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub initial_interval: Option<Duration>,
    /// See [`RetryConfig::multiplier`].
    pub multiplier: Option<f64>,
    /// See [`RetryConfig::max_interval`].
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub max_interval: Option<Duration>,
    /// See [`RetryConfig::max_elapsed`].
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub max_elapsed: Option<Duration>,
    /// See [`RetryConfig::jitter`].
    pub jitter: Option<f64>,
}

/// `circuit_breaker:` — stop hammering a subscriber that keeps failing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    #[serde(default = "d_failures")]
    pub failure_threshold: u32,
    /// Open time before one probe attempt decides.
    #[serde(default = "d_cooldown", deserialize_with = "duration::deserialize")]
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: d_failures(),
            cooldown: d_cooldown(),
        }
    }
}

/// A subscriber's partial override of [`BreakerConfig`].
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BreakerOverride {
    /// See [`BreakerConfig::failure_threshold`].
    pub failure_threshold: Option<u32>,
    /// See [`BreakerConfig::cooldown`].
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub cooldown: Option<Duration>,
}

/// `routes[]` — one public path and who gets its callbacks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Short name used in metrics, logs and headers (`[A-Za-z0-9_-]`).
    pub name: String,
    /// Exact request path, starting with `/`.
    pub path: String,
    /// How the body is parsed and keyed: `muapi` or `generic`.
    pub source: String,
    /// Who may post here.
    #[serde(default)]
    pub auth: AuthConfig,
    /// For generic sources: `header:NAME` or `json:/pointer`.
    pub idempotency_key: Option<String>,
    /// Where each accepted callback goes.
    #[serde(default)]
    pub subscribers: Vec<SubscriberConfig>,
}

/// `routes[].auth:` — how a sender proves itself.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted tokens (`?token=` or `Authorization: Bearer`); several for rotation.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Client networks allowed, as CIDRs; empty allows any.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Verify inbound Standard Webhooks signatures with this `whsec_` secret.
    pub standard_webhooks_secret: Option<String>,
}

/// `routes[].subscribers[]` — one destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    /// Unique within the route (`[A-Za-z0-9_-]`).
    pub name: String,
    /// `http://` or `https://` URL that receives the POST.
    pub url: String,
    /// Optional filter deciding at intake whether this subscriber gets an event.
    pub when: Option<WhenConfig>,
    /// `whsec_` secrets; each yields one `v1,` signature (first is newest).
    #[serde(default)]
    pub signing_secrets: Vec<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra CA certificates (PEM) trusted for this subscriber's https URL.
    pub ca_file: Option<PathBuf>,
    /// Overrides [`DeliveryDefaults::timeout`].
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub timeout: Option<Duration>,
    /// Overrides [`DeliveryDefaults::max_in_flight`].
    pub max_in_flight: Option<u32>,
    /// Overrides parts of [`DeliveryDefaults::retry`].
    pub retry: Option<RetryOverride>,
    /// Overrides parts of [`DeliveryDefaults::circuit_breaker`].
    pub circuit_breaker: Option<BreakerOverride>,
}

/// `when:` — all given conditions must hold.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WhenConfig {
    /// The callback's `status` must be one of these.
    pub status: Option<Vec<String>>,
    /// Each JSON pointer must point at exactly this value.
    #[serde(default)]
    pub json: BTreeMap<String, serde_json::Value>,
}

impl Config {
    /// Reads, interpolates from the process environment, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_yaml(&text, &|name| std::env::var(name).ok())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates YAML text, resolving `${NAME}` with `lookup`.
    pub fn from_yaml(
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut tree: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        if tree.is_null() {
            return Err(ConfigError::Invalid(vec![Problem::new(
                "",
                "config is empty",
            )]));
        }
        let mut problems = Vec::new();
        interpolate::interpolate(&mut tree, &mut String::new(), lookup, &mut problems);
        let config: Config = match serde_path_to_error::deserialize(tree) {
            Ok(config) => config,
            Err(err) => {
                let key = err.path().to_string();
                let key = if key == "." { String::new() } else { key };
                problems.push(Problem::new(key, err.into_inner().to_string()));
                return Err(ConfigError::Invalid(problems));
            }
        };
        if let Err(more) = config.validate() {
            problems.extend(more);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

fn d_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}
fn d_max_body() -> u64 {
    256 * 1024
}
fn d_max_unauth_body() -> u64 {
    64 * 1024 * 1024
}
fn d_max_unauth_body_conn() -> u64 {
    1024 * 1024
}
fn d_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn d_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn d_max_connections() -> u32 {
    10_000
}
fn d_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn d_store_path() -> PathBuf {
    PathBuf::from("./data")
}
fn d_commit_batch() -> usize {
    1024
}
fn d_cache_bytes() -> usize {
    8 * 1024 * 1024
}
fn d_retention() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn d_idem_ttl() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn d_max_keys() -> usize {
    1_000_000
}
fn d_log_format() -> String {
    "text".into()
}
fn d_log_level() -> String {
    "info".into()
}
fn d_timeout() -> Duration {
    Duration::from_secs(15)
}
fn d_max_in_flight() -> u32 {
    32
}
fn d_initial() -> Duration {
    Duration::from_secs(1)
}
fn d_multiplier() -> f64 {
    2.0
}
fn d_max_interval() -> Duration {
    Duration::from_secs(3600)
}
fn d_max_elapsed() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn d_jitter() -> f64 {
    0.2
}
fn d_failures() -> u32 {
    10
}
fn d_cooldown() -> Duration {
    Duration::from_secs(30)
}
