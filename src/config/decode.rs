//! From the YAML tree to the typed [`Config`]: our own small decoder.
//!
//! It keeps going after a mistake, so one run reports every unknown key,
//! wrong type and unparsable value; a failed key gets a placeholder and is
//! remembered, so validation does not report it a second time. Messages
//! name the key and what it takes, never the value (it may be a secret).
//!
//! What a scalar means depends only on the key it sits under:
//! - text fields take the text exactly as written, whatever it looks like
//!   (`on`, `n`, `yes`, `0123456` stay text);
//! - numbers, durations and addresses are parsed from the text after
//!   `${NAME}` interpolation, so `listen: "0.0.0.0:${PORT}"` or
//!   `max_in_flight: ${LANES}` work, quoted or not;
//! - a key whose value is a plain empty, `~` or `null` counts as not given
//!   (decided on the text as written, so an environment variable can never
//!   switch a key off);
//! - `when.json` values are JSON: a plain scalar is resolved by the YAML 1.2
//!   core schema (null, true/false, integers, floats), a quoted one is a
//!   string.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::yaml::{Entry, Kind, Node};
use super::{
    duration, interpolate, AdminConfig, AuthConfig, BreakerConfig, BreakerOverride, Config,
    DeliveryDefaults, IdempotencyConfig, LogConfig, MuapiConfig, PollConfig, PostgresConfig,
    Problem, RetryConfig, RetryOverride, RouteConfig, ServerConfig, StoreConfig, SubscriberConfig,
    TlsConfig, WhenConfig,
};

/// Collects problems while decoding.
pub(super) struct Decoder<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Everything found wrong so far, in document order.
    pub problems: Vec<Problem>,
    /// Keys whose value could not be decoded (they hold a placeholder).
    pub failed: Vec<String>,
}

impl<'a> Decoder<'a> {
    /// A decoder resolving `${NAME}` with `lookup`.
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            problems: Vec::new(),
            failed: Vec::new(),
        }
    }

    /// Records a problem at `key` and marks the key as failed.
    fn fail(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
        self.failed.push(key.to_string());
    }

    /// Records a problem that does not make the key's value unusable.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
    }

    fn wrong_type(&mut self, node: &Node, key: &str, expected: &str) {
        if matches!(node.kind, Kind::Refused) {
            // Already reported while building the tree.
            self.failed.push(key.to_string());
        } else {
            self.fail(
                key,
                format!("expected {expected}, found {}", node.describe()),
            );
        }
    }

    /// The text of a scalar after `${NAME}` interpolation.
    fn text(&mut self, node: &Node, key: &str, expected: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar { text, .. } if !text.contains('$') => Some(text.clone()),
            Kind::Scalar { text, .. } => match interpolate::expand(text, self.lookup) {
                Ok(expanded) => Some(expanded),
                Err(message) => {
                    self.fail(key, message);
                    None
                }
            },
            _ => {
                self.wrong_type(node, key, expected);
                None
            }
        }
    }

    /// A scalar parsed by `parse`, whose error names what is expected.
    fn parsed<T>(
        &mut self,
        node: &Node,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(node, key, expected)?;
        match parse(&text) {
            Ok(value) => Some(value),
            Err(message) => {
                self.fail(key, message);
                None
            }
        }
    }
}

/// A type the decoder can read from a node.
pub(super) trait Decode: Sized {
    /// What a value looks like, for "expected ..., found ..." messages.
    fn expected() -> String;
    /// Decodes `node`, found at `key`; on failure records a problem and
    /// returns `None`.
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self>;
    /// Stands in for a value that failed to decode, so the rest of the
    /// config can still be decoded and validated (positions in lists stay
    /// aligned with the file).
    fn placeholder() -> Self;
}

/// A mapping being read into a struct: looks keys up by name and reports
/// the keys nobody asked for.
pub(super) struct Fields<'n> {
    key: String,
    entries: &'n [Entry],
    known: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    /// The fields of `node`, or a problem if it is not a mapping.
    pub fn of(node: &'n Node, key: &str, d: &mut Decoder) -> Option<Fields<'n>> {
        match &node.kind {
            Kind::Map(entries) => Some(Fields {
                key: key.to_string(),
                entries,
                known: Vec::new(),
            }),
            _ => {
                d.wrong_type(node, key, "a mapping of keys");
                None
            }
        }
    }

    /// The key path of field `name`.
    pub fn at(&self, name: &str) -> String {
        if self.key.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.key)
        }
    }

    /// Whether `name` is given a value (not absent, empty, `~` or null).
    pub fn given(&mut self, name: &'static str) -> bool {
        self.node(name).is_some()
    }

    /// The node of `name`, unless absent or null.
    fn node(&mut self, name: &'static str) -> Option<&'n Node> {
        self.known.push(name);
        self.entries
            .iter()
            .find(|e| e.key == name)
            .map(|e| &e.value)
            .filter(|n| !n.is_null())
    }

    /// An optional field: `None` when absent, null, or not decodable.
    pub fn opt<T: Decode>(&mut self, d: &mut Decoder, name: &'static str) -> Option<T> {
        let node = self.node(name)?;
        T::decode(node, &self.at(name), d)
    }

    /// A field with a default.
    pub fn or<T: Decode>(&mut self, d: &mut Decoder, name: &'static str, default: T) -> T {
        self.opt(d, name).unwrap_or(default)
    }

    /// A required field; its placeholder when missing or not decodable.
    pub fn req<T: Decode>(&mut self, d: &mut Decoder, name: &'static str) -> T {
        let at = self.at(name);
        match self.node(name) {
            Some(node) => T::decode(node, &at, d).unwrap_or_else(T::placeholder),
            None => {
                let given = self.entries.iter().any(|e| e.key == name);
                d.fail(
                    &at,
                    if given {
                        format!(
                            "is required: expected {}, found nothing (empty, `~` or null)",
                            T::expected()
                        )
                    } else {
                        format!("is required: expected {}", T::expected())
                    },
                );
                T::placeholder()
            }
        }
    }

    /// Reports every key that no field asked for.
    pub fn finish(self, d: &mut Decoder) {
        for entry in self.entries {
            if !self.known.contains(&entry.key.as_str()) {
                let mut expected: Vec<&str> = Vec::new();
                for name in &self.known {
                    if !expected.contains(name) {
                        expected.push(name);
                    }
                }
                d.fail(
                    &self.at(&entry.key),
                    format!("unknown key; this block takes {}", expected.join(", ")),
                );
            }
        }
    }
}

// ---- scalars ---------------------------------------------------------------

impl Decode for String {
    fn expected() -> String {
        "text".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        d.text(node, key, "text")
    }
    fn placeholder() -> Self {
        String::new()
    }
}

impl Decode for PathBuf {
    fn expected() -> String {
        "a file path".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        d.text(node, key, "a file path").map(PathBuf::from)
    }
    fn placeholder() -> Self {
        PathBuf::new()
    }
}

macro_rules! whole_number {
    ($($t:ty),*) => {$(
        impl Decode for $t {
            fn expected() -> String {
                "a whole number such as 16".into()
            }
            fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
                d.parsed(node, key, "a whole number such as 16", |text| {
                    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                        return Err("expected a whole number such as 16 (digits only)".into());
                    }
                    text.parse::<$t>()
                        .map_err(|_| format!("is too large (at most {})", <$t>::MAX))
                })
            }
            fn placeholder() -> Self {
                0
            }
        }
    )*};
}
whole_number!(u32, u64, usize);

impl Decode for f64 {
    fn expected() -> String {
        "a number such as 0.5".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        d.parsed(node, key, "a number such as 0.5", |text| {
            let ok = !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
            match text.parse::<f64>() {
                Ok(n) if ok && n.is_finite() => Ok(n),
                _ => Err("expected a number such as 0.5".into()),
            }
        })
    }
    fn placeholder() -> Self {
        0.0
    }
}

impl Decode for Duration {
    fn expected() -> String {
        "a duration such as 30s".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        d.parsed(node, key, "a duration such as 30s", duration::parse)
    }
    fn placeholder() -> Self {
        Duration::ZERO
    }
}

impl Decode for SocketAddr {
    fn expected() -> String {
        "an address such as 0.0.0.0:8443".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        d.parsed(node, key, "an address such as 0.0.0.0:8443", |text| {
            text.parse()
                .map_err(|_| "expected an address such as 0.0.0.0:8443 or [::1]:8443".into())
        })
    }
    fn placeholder() -> Self {
        SocketAddr::from(([0, 0, 0, 0], 0))
    }
}

// ---- collections -------------------------------------------------------------

impl<T: Decode> Decode for Vec<T> {
    fn expected() -> String {
        format!("a list of {}", T::expected())
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        match &node.kind {
            Kind::Seq(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        T::decode(item, &format!("{key}[{i}]"), d).unwrap_or_else(T::placeholder)
                    })
                    .collect(),
            ),
            _ => {
                d.wrong_type(node, key, &Self::expected());
                None
            }
        }
    }
    fn placeholder() -> Self {
        Vec::new()
    }
}

impl<T: Decode> Decode for BTreeMap<String, T> {
    fn expected() -> String {
        format!("a mapping of names to {}", T::expected())
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        match &node.kind {
            Kind::Map(entries) => Some(
                entries
                    .iter()
                    .filter_map(|e| {
                        let value = T::decode(&e.value, &format!("{key}.{}", e.key), d)?;
                        Some((e.key.clone(), value))
                    })
                    .collect(),
            ),
            _ => {
                d.wrong_type(node, key, &Self::expected());
                None
            }
        }
    }
    fn placeholder() -> Self {
        BTreeMap::new()
    }
}

impl Decode for serde_json::Value {
    fn expected() -> String {
        "a JSON value".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        use serde_json::Value;
        match &node.kind {
            Kind::Scalar { plain, .. } => {
                if node.is_null() {
                    return Some(Value::Null);
                }
                let plain = *plain;
                d.parsed(node, key, "a JSON value", |text| {
                    if plain {
                        core_schema(text)
                    } else {
                        Ok(Value::String(text.to_string()))
                    }
                })
            }
            Kind::Seq(_) => Vec::<Value>::decode(node, key, d).map(Value::Array),
            Kind::Map(_) => BTreeMap::<String, Value>::decode(node, key, d)
                .map(|m| Value::Object(m.into_iter().collect())),
            Kind::Refused => {
                d.wrong_type(node, key, "a JSON value");
                None
            }
        }
    }
    fn placeholder() -> Self {
        serde_json::Value::Null
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema: null, booleans,
/// integers (decimal, `0o` octal, `0x` hex), floats; anything else is a
/// string.
fn core_schema(text: &str) -> Result<serde_json::Value, String> {
    use serde_json::{Number, Value};
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            return Err("is infinite or NaN, which JSON cannot hold; quote it to match text".into())
        }
        _ => {}
    }
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let radix = if let Some(hex) = text.strip_prefix("0x") {
        digits(hex, 16).then_some((hex, 16))
    } else if let Some(oct) = text.strip_prefix("0o") {
        digits(oct, 8).then_some((oct, 8))
    } else {
        None
    };
    if let Some((body, radix)) = radix {
        return u64::from_str_radix(body, radix)
            .map(|n| Value::Number(n.into()))
            .map_err(|_| "is an integer too large for a JSON filter".into());
    }
    if digits(unsigned, 10) {
        if let Ok(n) = text.trim_start_matches('+').parse::<i64>() {
            return Ok(Value::Number(n.into()));
        }
        if let Ok(n) = text.trim_start_matches('+').parse::<u64>() {
            return Ok(Value::Number(n.into()));
        }
    }
    if is_core_float(unsigned) {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Ok(Value::Number(n));
        }
    }
    Ok(Value::String(text.to_string()))
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, the sign already removed.
fn is_core_float(text: &str) -> bool {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (int.bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit()))
                && (!int.is_empty() || !frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

// ---- the config's blocks --------------------------------------------------------

impl Decode for Config {
    fn expected() -> String {
        "a mapping with `server:` and `routes:`".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let config = Config {
            server: f.req(d, "server"),
            admin: f.or(d, "admin", AdminConfig::default()),
            store: f.or(d, "store", StoreConfig::default()),
            idempotency: f.or(d, "idempotency", IdempotencyConfig::default()),
            shutdown_grace: f.or(d, "shutdown_grace", super::d_shutdown_grace()),
            defaults: f.or(d, "defaults", DeliveryDefaults::default()),
            log: f.or(d, "log", LogConfig::default()),
            routes: f.req(d, "routes"),
            source: None,
        };
        f.finish(d);
        Some(config)
    }
    /// Never used (a root that is not a mapping ends decoding), but total.
    fn placeholder() -> Self {
        Config {
            server: ServerConfig::placeholder(),
            admin: AdminConfig::default(),
            store: StoreConfig::default(),
            idempotency: IdempotencyConfig::default(),
            shutdown_grace: super::d_shutdown_grace(),
            defaults: DeliveryDefaults::default(),
            log: LogConfig::default(),
            routes: Vec::new(),
            source: None,
        }
    }
}

/// Implements `expected` and `placeholder` for a block with a `Default`.
macro_rules! block {
    ($t:ty) => {
        fn expected() -> String {
            "a mapping of keys".into()
        }
        fn placeholder() -> Self {
            <$t>::default()
        }
    };
}

impl Decode for ServerConfig {
    fn expected() -> String {
        "a mapping with at least `listen:`".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let server = ServerConfig {
            listen: f.req(d, "listen"),
            tls: f.opt(d, "tls"),
            max_body_bytes: f.or(d, "max_body_bytes", super::d_max_body()),
            header_read_timeout: f.or(d, "header_read_timeout", super::d_header_timeout()),
            max_connections: f.or(d, "max_connections", super::d_max_connections()),
            idle_timeout: f.or(d, "idle_timeout", super::d_idle_timeout()),
            max_unauthenticated_body_bytes: f.or(
                d,
                "max_unauthenticated_body_bytes",
                super::d_max_unauth_body(),
            ),
            max_unauthenticated_body_bytes_per_connection: f.or(
                d,
                "max_unauthenticated_body_bytes_per_connection",
                super::d_max_unauth_body_conn(),
            ),
        };
        f.finish(d);
        Some(server)
    }
    fn placeholder() -> Self {
        ServerConfig {
            listen: SocketAddr::placeholder(),
            tls: None,
            max_body_bytes: super::d_max_body(),
            header_read_timeout: super::d_header_timeout(),
            max_connections: super::d_max_connections(),
            idle_timeout: super::d_idle_timeout(),
            max_unauthenticated_body_bytes: super::d_max_unauth_body(),
            max_unauthenticated_body_bytes_per_connection: super::d_max_unauth_body_conn(),
        }
    }
}

impl Decode for TlsConfig {
    block!(TlsConfig);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let tls = TlsConfig {
            cert: f.opt(d, "cert"),
            key: f.opt(d, "key"),
            self_signed: f.opt(d, "self_signed"),
        };
        f.finish(d);
        Some(tls)
    }
}

impl Decode for AdminConfig {
    block!(AdminConfig);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let admin = AdminConfig {
            listen: f.or(d, "listen", super::d_admin_listen()),
            token: f.opt(d, "token"),
        };
        f.finish(d);
        Some(admin)
    }
}

impl Decode for StoreConfig {
    block!(StoreConfig);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let path_given = f.given("path");
        let store = StoreConfig {
            path: f.or(d, "path", super::d_store_path()),
            max_batch: f.or(d, "max_batch", super::d_commit_batch()),
            cache_bytes: f.or(d, "cache_bytes", super::d_cache_bytes()),
            retention: f.or(d, "retention", super::d_retention()),
            dead_letter_retention: f.or(
                d,
                "dead_letter_retention",
                super::d_dead_letter_retention(),
            ),
            postgres: f.opt(d, "postgres"),
        };
        if path_given && store.postgres.is_some() {
            d.problem(
                &f.at("path"),
                "is the embedded store's directory, but `store.postgres` is set too: \
                 which store is meant is ambiguous; remove one of them",
            );
        }
        f.finish(d);
        Some(store)
    }
}

impl Decode for PostgresConfig {
    fn expected() -> String {
        "a mapping with at least `url:`".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let pg = PostgresConfig {
            url: f.req(d, "url"),
            pool_size: f.or(d, "pool_size", super::d_pool_size()),
            schema: f.or(d, "schema", super::d_pg_schema()),
            lease: f.or(d, "lease", super::d_lease()),
            ca_file: f.opt(d, "ca_file"),
        };
        f.finish(d);
        Some(pg)
    }
    fn placeholder() -> Self {
        PostgresConfig {
            url: String::new(),
            pool_size: super::d_pool_size(),
            schema: super::d_pg_schema(),
            lease: super::d_lease(),
            ca_file: None,
        }
    }
}

impl Decode for IdempotencyConfig {
    block!(IdempotencyConfig);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let idem = IdempotencyConfig {
            ttl: f.or(d, "ttl", super::d_idem_ttl()),
            max_keys: f.or(d, "max_keys", super::d_max_keys()),
        };
        f.finish(d);
        Some(idem)
    }
}

impl Decode for LogConfig {
    block!(LogConfig);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let log = LogConfig {
            format: f.or(d, "format", super::d_log_format()),
            level: f.or(d, "level", super::d_log_level()),
        };
        f.finish(d);
        Some(log)
    }
}

impl Decode for DeliveryDefaults {
    block!(DeliveryDefaults);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let defaults = DeliveryDefaults {
            timeout: f.or(d, "timeout", super::d_timeout()),
            max_in_flight: f.or(d, "max_in_flight", super::d_max_in_flight()),
            retry: f.or(d, "retry", RetryConfig::default()),
            circuit_breaker: f.or(d, "circuit_breaker", BreakerConfig::default()),
        };
        f.finish(d);
        Some(defaults)
    }
}

impl Decode for RetryConfig {
    block!(RetryConfig);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let retry = RetryConfig {
            initial_interval: f.or(d, "initial_interval", super::d_initial()),
            multiplier: f.or(d, "multiplier", super::d_multiplier()),
            max_interval: f.or(d, "max_interval", super::d_max_interval()),
            max_elapsed: f.or(d, "max_elapsed", super::d_max_elapsed()),
            jitter: f.or(d, "jitter", super::d_jitter()),
        };
        f.finish(d);
        Some(retry)
    }
}

impl Decode for RetryOverride {
    block!(RetryOverride);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let retry = RetryOverride {
            initial_interval: f.opt(d, "initial_interval"),
            multiplier: f.opt(d, "multiplier"),
            max_interval: f.opt(d, "max_interval"),
            max_elapsed: f.opt(d, "max_elapsed"),
            jitter: f.opt(d, "jitter"),
        };
        f.finish(d);
        Some(retry)
    }
}

impl Decode for BreakerConfig {
    block!(BreakerConfig);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let breaker = BreakerConfig {
            failure_threshold: f.or(d, "failure_threshold", super::d_failures()),
            cooldown: f.or(d, "cooldown", super::d_cooldown()),
        };
        f.finish(d);
        Some(breaker)
    }
}

impl Decode for BreakerOverride {
    block!(BreakerOverride);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let breaker = BreakerOverride {
            failure_threshold: f.opt(d, "failure_threshold"),
            cooldown: f.opt(d, "cooldown"),
        };
        f.finish(d);
        Some(breaker)
    }
}

impl Decode for RouteConfig {
    fn expected() -> String {
        "a route: a mapping with `name:`, `path:`, `source:`".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let route = RouteConfig {
            name: f.req(d, "name"),
            path: f.req(d, "path"),
            source: f.req(d, "source"),
            auth: f.or(d, "auth", AuthConfig::default()),
            idempotency_key: f.opt(d, "idempotency_key"),
            subscribers: f.or(d, "subscribers", Vec::new()),
            muapi: f.opt(d, "muapi"),
        };
        f.finish(d);
        Some(route)
    }
    fn placeholder() -> Self {
        RouteConfig {
            name: String::new(),
            path: String::new(),
            source: String::new(),
            auth: AuthConfig::default(),
            idempotency_key: None,
            subscribers: Vec::new(),
            muapi: None,
        }
    }
}

impl Decode for MuapiConfig {
    fn expected() -> String {
        "a mapping with `api_key:` and `public_url:`".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let muapi = MuapiConfig {
            api_key: f.req(d, "api_key"),
            base_url: f.or(d, "base_url", super::d_muapi_base_url()),
            public_url: f.req(d, "public_url"),
            reconcile_after: f.or(d, "reconcile_after", super::d_reconcile_after()),
            poll: f.or(d, "poll", PollConfig::default()),
            give_up_after: f.or(d, "give_up_after", super::d_give_up_after()),
            max_polls_in_flight: f.or(d, "max_polls_in_flight", super::d_max_polls()),
        };
        f.finish(d);
        Some(muapi)
    }
    fn placeholder() -> Self {
        MuapiConfig {
            api_key: String::new(),
            base_url: super::d_muapi_base_url(),
            public_url: String::new(),
            reconcile_after: super::d_reconcile_after(),
            poll: PollConfig::default(),
            give_up_after: super::d_give_up_after(),
            max_polls_in_flight: super::d_max_polls(),
        }
    }
}

impl Decode for PollConfig {
    block!(PollConfig);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let poll = PollConfig {
            initial_interval: f.or(d, "initial_interval", super::d_poll_initial()),
            max_interval: f.or(d, "max_interval", super::d_poll_max()),
        };
        f.finish(d);
        Some(poll)
    }
}

impl Decode for AuthConfig {
    block!(AuthConfig);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let auth = AuthConfig {
            tokens: f.or(d, "tokens", Vec::new()),
            allow_ips: f.or(d, "allow_ips", Vec::new()),
            standard_webhooks_secret: f.opt(d, "standard_webhooks_secret"),
        };
        f.finish(d);
        Some(auth)
    }
}

impl Decode for SubscriberConfig {
    fn expected() -> String {
        "a subscriber: a mapping with `name:` and `url:`".into()
    }
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let sub = SubscriberConfig {
            name: f.req(d, "name"),
            url: f.req(d, "url"),
            when: f.opt(d, "when"),
            signing_secrets: f.or(d, "signing_secrets", Vec::new()),
            headers: f.or(d, "headers", BTreeMap::new()),
            ca_file: f.opt(d, "ca_file"),
            timeout: f.opt(d, "timeout"),
            max_in_flight: f.opt(d, "max_in_flight"),
            retry: f.opt(d, "retry"),
            circuit_breaker: f.opt(d, "circuit_breaker"),
        };
        f.finish(d);
        Some(sub)
    }
    fn placeholder() -> Self {
        SubscriberConfig {
            name: String::new(),
            url: String::new(),
            when: None,
            signing_secrets: Vec::new(),
            headers: BTreeMap::new(),
            ca_file: None,
            timeout: None,
            max_in_flight: None,
            retry: None,
            circuit_breaker: None,
        }
    }
}

impl Decode for WhenConfig {
    block!(WhenConfig);
    fn decode(node: &Node, key: &str, d: &mut Decoder) -> Option<Self> {
        let mut f = Fields::of(node, key, d)?;
        let when = WhenConfig {
            status: f.opt(d, "status"),
            json: f.or(d, "json", BTreeMap::new()),
        };
        f.finish(d);
        Some(when)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(text: &str) -> serde_json::Value {
        core_schema(text).unwrap()
    }

    #[test]
    fn core_schema_resolves_plain_scalars() {
        assert_eq!(value("null"), json!(null));
        assert_eq!(value("~"), json!(null));
        assert_eq!(value("true"), json!(true));
        assert_eq!(value("FALSE"), json!(false));
        assert_eq!(value("42"), json!(42));
        assert_eq!(value("-7"), json!(-7));
        assert_eq!(value("+7"), json!(7));
        assert_eq!(value("0123"), json!(123));
        assert_eq!(value("0x1F"), json!(31));
        assert_eq!(value("0o17"), json!(15));
        assert_eq!(value("1.5"), json!(1.5));
        assert_eq!(value(".5"), json!(0.5));
        assert_eq!(value("1e3"), json!(1000.0));
        assert_eq!(value("18446744073709551616"), json!(18446744073709551616.0));
        // YAML 1.1 spellings are text under the 1.2 core schema.
        assert_eq!(value("yes"), json!("yes"));
        assert_eq!(value("on"), json!("on"));
        assert_eq!(value("n"), json!("n"));
        assert_eq!(value("1_000"), json!("1_000"));
        assert_eq!(value("1.2.3"), json!("1.2.3"));
        assert_eq!(value("e5"), json!("e5"));
        assert!(core_schema(".inf").is_err());
        assert!(core_schema(".nan").is_err());
    }

    #[test]
    fn core_floats() {
        for ok in ["1", "1.", ".1", "1.0e5", "1E-5", "0.5e+2"] {
            assert!(is_core_float(ok), "{ok}");
        }
        for bad in [".", "e5", "1e", "1.e", "a", "", "1..2"] {
            assert!(!is_core_float(bad), "{bad}");
        }
    }
}
