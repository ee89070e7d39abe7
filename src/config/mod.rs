//! The YAML configuration: schema, loading, validation and the compiled form
//! the rest of the gateway runs on.
//!
//! Loading goes text → YAML tree keeping every scalar's text as written
//! (`yaml.rs`, on granit-parser, the parser under serde-saphyr) → typed
//! [`Config`] by our own decoder, which interpolates `${NAME}` per scalar and
//! collects every unknown key, wrong type and bad value (`decode.rs`) →
//! [`Config::validate`] over one merged view of defaults and subscriber
//! overrides (every rule, every problem) → [`Config::compile`] into
//! [`Runtime`], the shape the hot paths use. No message quotes a value: a
//! problem names its key, what the key takes and the line.

mod decode;
pub mod duration;
mod interpolate;
mod runtime;
mod validate;
mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::MAX as MAX_DURATION;
pub use runtime::{
    Breaker, Filter, KeySpec, MuapiSettings, RetryPolicy, Route, Runtime, SourceKind, Subscriber,
};
pub use validate::EffectiveDelivery;

/// One thing wrong with a config file: the key it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending key, e.g. `routes[0].subscribers[1].url`.
    pub key: String,
    /// What is wrong and what the key takes, never quoting a value from
    /// the config (it may be a secret). Problems found by
    /// [`Config::from_yaml`] end with ` (line N)` where the key is written.
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
#[derive(Debug, Clone)]
pub struct Config {
    /// The ingress listener.
    pub server: ServerConfig,
    /// The admin listener (health, metrics, API).
    pub admin: AdminConfig,
    /// Where accepted callbacks are made durable.
    pub store: StoreConfig,
    /// How long and how many idempotency keys are remembered.
    pub idempotency: IdempotencyConfig,
    /// How long attempts in flight may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Delivery settings applied to every subscriber unless it overrides them.
    pub defaults: DeliveryDefaults,
    /// Logging format and level.
    pub log: LogConfig,
    /// The webhook routes; at least one.
    pub routes: Vec<RouteConfig>,
    /// The file this config came from (reloads read it again).
    pub source: Option<PathBuf>,
}

/// `server:` — the public ingress.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind, e.g. `0.0.0.0:8443` (port 0 picks a free port).
    pub listen: SocketAddr,
    /// TLS settings; absent means plain HTTP (behind a TLS-terminating proxy).
    pub tls: Option<TlsConfig>,
    /// Larger bodies are refused with 413 while they are being read.
    pub max_body_bytes: u64,
    /// A client that has not sent a full request head by then is cut off.
    pub header_read_timeout: Duration,
    /// Connections beyond this wait in the kernel backlog.
    pub max_connections: u32,
    /// A connection with no request in flight for this long is closed, so
    /// idle (HTTP/2) connections cannot hold `max_connections` slots forever.
    pub idle_timeout: Duration,
    /// Bytes of request bodies held at once, in all, before their senders
    /// are authenticated (routes with `standard_webhooks_secret` and no
    /// `tokens` read the body to check the signature): bounds the memory
    /// unauthenticated clients can take. A request beyond it gets 503.
    pub max_unauthenticated_body_bytes: u64,
    /// The same bound for one connection, so one client cannot take it all.
    pub max_unauthenticated_body_bytes_per_connection: u64,
}

/// `server.tls:` — either files or a dev-only self-signed certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Names for a certificate generated at start (development only).
    pub self_signed: Option<Vec<String>>,
}

/// `admin:` — health, readiness, metrics and the admin API.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Plain-HTTP listener; keep it private.
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
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory holding the embedded store's file (`hookrelay.redb`).
    /// Not used with [`StoreConfig::postgres`]; writing both is refused.
    pub path: PathBuf,
    /// Most records one group commit of the embedded store takes.
    pub max_batch: usize,
    /// Memory for the embedded store's page cache, in bytes.
    pub cache_bytes: usize,
    /// How long a fully delivered event keeps its body, headers and attempt
    /// history before the pruner removes them (default 24h).
    pub retention: Duration,
    /// How long a dead letter is kept for inspection and replay (default 14d).
    pub dead_letter_retention: Duration,
    /// Use PostgreSQL instead of the embedded store.
    pub postgres: Option<PostgresConfig>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: d_store_path(),
            max_batch: d_commit_batch(),
            cache_bytes: d_cache_bytes(),
            retention: d_retention(),
            dead_letter_retention: d_dead_letter_retention(),
            postgres: None,
        }
    }
}

/// `store.postgres:` — a PostgreSQL database as the store.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://` or `postgresql://` connection URL. It may carry a
    /// password: never log or print it (`Debug` shows it redacted).
    pub url: String,
    /// Connections kept open (1..=1024, default 16).
    pub pool_size: u32,
    /// Schema holding hookrelay's tables: a plain SQL identifier
    /// (`[a-z_][a-z0-9_]{0,62}`, default `hookrelay`).
    pub schema: String,
    /// How long a claimed delivery is leased to one gateway instance before
    /// another may take it over (default 30s). Longer than every
    /// subscriber's attempt timeout, so a live attempt is never taken over.
    pub lease: Duration,
    /// Extra CA certificates (PEM) trusted for the database's TLS
    /// certificate (a managed database signed by a private CA), besides
    /// the public web roots.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("schema", &self.schema)
            .field("lease", &self.lease)
            .finish()
    }
}

/// `idempotency:` — duplicate detection.
#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    /// Longer than any sender's retry window.
    pub ttl: Duration,
    /// Keys held in memory; the oldest are evicted first (the store still
    /// recognises a duplicate of an evicted key while it holds the event).
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
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter such as `info` or `hookrelay=debug`; `RUST_LOG` wins.
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
#[derive(Debug, Clone)]
pub struct DeliveryDefaults {
    /// One attempt, connect to last response byte.
    pub timeout: Duration,
    /// Attempts in flight at once per subscriber.
    pub max_in_flight: u32,
    /// Retry schedule.
    pub retry: RetryConfig,
    /// Circuit breaker.
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
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Wait before the second attempt.
    pub initial_interval: Duration,
    /// Each wait is this many times the previous one.
    pub multiplier: f64,
    /// Cap on one wait (also caps a subscriber's `Retry-After`).
    pub max_interval: Duration,
    /// After this long since receipt, the delivery becomes a dead letter.
    pub max_elapsed: Duration,
    /// Fraction of random spread (0.2 = ±20 %) so retries do not synchronise.
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

/// A subscriber's partial override of [`RetryConfig`]; a missing value is
/// taken from `defaults.retry` (see [`Config::effective`]).
#[derive(Debug, Clone, Default)]
pub struct RetryOverride {
    /// See [`RetryConfig::initial_interval`].
    pub initial_interval: Option<Duration>,
    /// See [`RetryConfig::multiplier`].
    pub multiplier: Option<f64>,
    /// See [`RetryConfig::max_interval`].
    pub max_interval: Option<Duration>,
    /// See [`RetryConfig::max_elapsed`].
    pub max_elapsed: Option<Duration>,
    /// See [`RetryConfig::jitter`].
    pub jitter: Option<f64>,
}

/// `circuit_breaker:` — stop hammering a subscriber that keeps failing.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// Open time before one probe attempt decides.
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
#[derive(Debug, Clone, Default)]
pub struct BreakerOverride {
    /// See [`BreakerConfig::failure_threshold`].
    pub failure_threshold: Option<u32>,
    /// See [`BreakerConfig::cooldown`].
    pub cooldown: Option<Duration>,
}

/// `routes[]` — one public path and who gets its callbacks.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Short name used in metrics, logs and headers (`[A-Za-z0-9_-]`).
    pub name: String,
    /// Exact request path, starting with `/`.
    pub path: String,
    /// How the body is parsed and keyed: `muapi` or `generic`.
    pub source: String,
    /// Who may post here.
    pub auth: AuthConfig,
    /// For generic sources: `header:NAME` or `json:/pointer`.
    pub idempotency_key: Option<String>,
    /// Where each accepted callback goes.
    pub subscribers: Vec<SubscriberConfig>,
    /// muapi.ai API access for `source: muapi` routes: hookrelay then
    /// reconciles tasks whose callback did not arrive by polling muapi.
    pub muapi: Option<MuapiConfig>,
}

/// `routes[].muapi:` — talking back to muapi.ai for a muapi route.
#[derive(Clone)]
pub struct MuapiConfig {
    /// muapi.ai API key (secret: never logged; `Debug` shows it redacted).
    pub api_key: String,
    /// muapi.ai API base, an absolute http(s) URL without query
    /// (default `https://api.muapi.ai`).
    pub base_url: String,
    /// The absolute http(s) URL muapi must call back, as the world reaches
    /// this route: its path is the route's `path`; no query string (the
    /// route's first token is added by hookrelay).
    pub public_url: String,
    /// A task with no callback after this long is looked up by polling
    /// (default 10m).
    pub reconcile_after: Duration,
    /// How often such a task is polled.
    pub poll: PollConfig,
    /// A task still unresolved this long after submission is given up
    /// (default 48h; longer than `reconcile_after`).
    pub give_up_after: Duration,
    /// Poll requests to muapi in flight at once for this route (1..=256,
    /// default 4).
    pub max_polls_in_flight: u32,
}

impl fmt::Debug for MuapiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuapiConfig")
            .field("api_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("public_url", &self.public_url)
            .field("reconcile_after", &self.reconcile_after)
            .field("poll", &self.poll)
            .field("give_up_after", &self.give_up_after)
            .field("max_polls_in_flight", &self.max_polls_in_flight)
            .finish()
    }
}

/// `routes[].muapi.poll:` — backoff between polls of one task.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Wait before the second poll (default 30s).
    pub initial_interval: Duration,
    /// Cap on the wait between polls (default 10m; not shorter than
    /// `initial_interval`).
    pub max_interval: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            initial_interval: d_poll_initial(),
            max_interval: d_poll_max(),
        }
    }
}

/// `routes[].auth:` — how a sender proves itself.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Accepted tokens (`?token=` or `Authorization: Bearer`); several for rotation.
    pub tokens: Vec<String>,
    /// Client networks allowed, as CIDRs; empty allows any.
    pub allow_ips: Vec<String>,
    /// Verify inbound Standard Webhooks signatures with this `whsec_` secret.
    pub standard_webhooks_secret: Option<String>,
}

/// `routes[].subscribers[]` — one destination.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// Unique within the route (`[A-Za-z0-9_-]`).
    pub name: String,
    /// `http://` or `https://` URL that receives the POST.
    pub url: String,
    /// Optional filter deciding at intake whether this subscriber gets an event.
    pub when: Option<WhenConfig>,
    /// `whsec_` secrets; each yields one `v1,` signature (first is newest).
    pub signing_secrets: Vec<String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Extra CA certificates (PEM) trusted for this subscriber's https URL.
    pub ca_file: Option<PathBuf>,
    /// Overrides [`DeliveryDefaults::timeout`].
    pub timeout: Option<Duration>,
    /// Overrides [`DeliveryDefaults::max_in_flight`].
    pub max_in_flight: Option<u32>,
    /// Overrides parts of [`DeliveryDefaults::retry`].
    pub retry: Option<RetryOverride>,
    /// Overrides parts of [`DeliveryDefaults::circuit_breaker`].
    pub circuit_breaker: Option<BreakerOverride>,
}

/// `when:` — all given conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct WhenConfig {
    /// The callback's `status` must be one of these.
    pub status: Option<Vec<String>>,
    /// Each JSON pointer must point at exactly this value. A plain YAML
    /// scalar is read by the YAML 1.2 core schema (`42`, `true`, `null`,
    /// `1.5`); a quoted one is a string.
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
    ///
    /// Every problem is reported: the tree's (anchors, tags, duplicate
    /// keys), the decoder's (unknown keys, wrong types, unparsable values)
    /// and validation's, each with its key and line.
    pub fn from_yaml(
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        use decode::Decode;
        let document = yaml::parse(text).map_err(ConfigError::Syntax)?;
        let Some(root) = document.root else {
            let mut problems = document.problems;
            problems.push(Problem::new("", "config is empty"));
            return Err(ConfigError::Invalid(problems));
        };
        let mut d = decode::Decoder::new(lookup);
        d.problems = document.problems;
        d.failed = document.refused;
        let Some(config) = Config::decode(&root, "", &mut d) else {
            return Err(ConfigError::Invalid(d.problems));
        };
        let mut problems = d.problems;
        if let Err(more) = config.validate() {
            // A key that failed to decode holds a placeholder: what
            // validation says about it (or its block) repeats that mistake.
            problems.extend(
                more.into_iter()
                    .filter(|p| !d.failed.iter().any(|f| related_keys(f, &p.key))),
            );
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            add_lines(&mut problems, &yaml::line_index(&root));
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Whether one key path is the other, or inside it.
fn related_keys(a: &str, b: &str) -> bool {
    fn inside(inner: &str, outer: &str) -> bool {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    }
    a == b || inside(a, b) || inside(b, a)
}

/// Appends ` (line N)` to each problem whose key (or nearest written
/// ancestor) is in the file, and orders the problems by line (those about
/// the whole file first), so `check-config` reads top to bottom.
fn add_lines(problems: &mut Vec<Problem>, lines: &HashMap<String, usize>) {
    let mut placed: Vec<(usize, Problem)> = Vec::with_capacity(problems.len());
    for mut p in problems.drain(..) {
        let mut key = p.key.as_str();
        let line = loop {
            if key.is_empty() {
                break None;
            }
            if let Some(line) = lines.get(key) {
                break Some(*line);
            }
            match key.rfind(['.', '[']) {
                Some(cut) => key = &key[..cut],
                None => break None,
            }
        };
        if let Some(line) = line {
            if !names_a_line(&p.message) {
                p.message.push_str(&format!(" (line {line})"));
            }
        }
        let order = if p.key.is_empty() {
            0
        } else {
            line.unwrap_or(usize::MAX)
        };
        placed.push((order, p));
    }
    placed.sort_by_key(|(order, _)| *order);
    problems.extend(placed.into_iter().map(|(_, p)| p));
}

/// Whether a message already says where it is (`line 3`, `lines 2 and 3`).
fn names_a_line(message: &str) -> bool {
    message.match_indices("line").any(|(i, _)| {
        let rest = &message[i + 4..];
        let rest = rest.strip_prefix('s').unwrap_or(rest);
        rest.strip_prefix(' ')
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    })
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
    Duration::from_secs(24 * 3600)
}
fn d_dead_letter_retention() -> Duration {
    Duration::from_secs(14 * 86_400)
}
fn d_pool_size() -> u32 {
    16
}
fn d_pg_schema() -> String {
    "hookrelay".into()
}
fn d_lease() -> Duration {
    Duration::from_secs(30)
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
fn d_muapi_base_url() -> String {
    "https://api.muapi.ai".into()
}
fn d_reconcile_after() -> Duration {
    Duration::from_secs(600)
}
fn d_poll_initial() -> Duration {
    Duration::from_secs(30)
}
fn d_poll_max() -> Duration {
    Duration::from_secs(600)
}
fn d_give_up_after() -> Duration {
    Duration::from_secs(48 * 3600)
}
fn d_max_polls() -> u32 {
    4
}

#[cfg(test)]
mod tests;
