//! `Config::validate`: every rule a config must meet, each reported with the
//! key it concerns. All rules run, so `check-config` lists every problem.
//!
//! Subscribers are checked on their effective settings
//! ([`Config::effective`]: `defaults:` with the subscriber's overrides on
//! top), the same merged view [`Config::compile`] turns into the runtime,
//! so what validates is what runs. No message quotes a value from the
//! config: it names the key, what the key takes, and where an inherited
//! value comes from.

use std::collections::HashSet;
use std::time::Duration;

use super::duration::{MAX as MAX_DURATION, MAX_TEXT};
use super::{
    BreakerConfig, Config, MuapiConfig, PostgresConfig, Problem, RetryConfig, RouteConfig,
    SubscriberConfig,
};

/// One subscriber's delivery settings with `defaults:` filled in where it
/// overrides nothing: the one view both validation and compilation use.
#[derive(Debug, Clone)]
pub struct EffectiveDelivery {
    /// Per-attempt timeout, connect to last byte.
    pub timeout: Duration,
    /// Attempts in flight at once.
    pub max_in_flight: u32,
    /// Retry schedule.
    pub retry: RetryConfig,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
}

impl Config {
    /// The settings `sub` runs with: each value it overrides, else the
    /// file's `defaults:` (which themselves default to the built-ins).
    pub fn effective(&self, sub: &SubscriberConfig) -> EffectiveDelivery {
        let d = &self.defaults;
        let r = sub.retry.clone().unwrap_or_default();
        let b = sub.circuit_breaker.clone().unwrap_or_default();
        EffectiveDelivery {
            timeout: sub.timeout.unwrap_or(d.timeout),
            max_in_flight: sub.max_in_flight.unwrap_or(d.max_in_flight),
            retry: RetryConfig {
                initial_interval: r.initial_interval.unwrap_or(d.retry.initial_interval),
                multiplier: r.multiplier.unwrap_or(d.retry.multiplier),
                max_interval: r.max_interval.unwrap_or(d.retry.max_interval),
                max_elapsed: r.max_elapsed.unwrap_or(d.retry.max_elapsed),
                jitter: r.jitter.unwrap_or(d.retry.jitter),
            },
            breaker: BreakerConfig {
                failure_threshold: b
                    .failure_threshold
                    .unwrap_or(d.circuit_breaker.failure_threshold),
                cooldown: b.cooldown.unwrap_or(d.circuit_breaker.cooldown),
            },
        }
    }

    /// Checks every rule; returns all problems found (never just the first).
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut p = Vec::new();
        self.check_server(&mut p);
        self.check_limits(&mut p);
        self.check_store(&mut p);
        self.check_routes(&mut p);
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }

    fn check_server(&self, p: &mut Vec<Problem>) {
        if let Some(tls) = &self.server.tls {
            match (&tls.cert, &tls.key, &tls.self_signed) {
                (Some(cert), Some(key), None) => {
                    // The message names the key, not the path (it may
                    // come from the environment).
                    use crate::ingress::tls::TlsError;
                    match crate::ingress::tls::load_pem_files(cert, key) {
                        Ok(_) => {}
                        Err(TlsError::Cert { reason, .. }) => p.push(Problem::new(
                            "server.tls",
                            format!("cannot load the certificate chain from `cert`: {reason}"),
                        )),
                        Err(TlsError::Key { reason, .. }) => p.push(Problem::new(
                            "server.tls",
                            format!("cannot load the private key from `key`: {reason}"),
                        )),
                        Err(e) => p.push(Problem::new("server.tls", e.to_string())),
                    }
                }
                (None, None, Some(names)) => {
                    if names.is_empty() {
                        p.push(Problem::new(
                            "server.tls.self_signed",
                            "needs at least one name, e.g. [localhost, 127.0.0.1]",
                        ));
                    }
                }
                (Some(_), None, None) => p.push(Problem::new(
                    "server.tls.key",
                    "`cert` is set but `key` is missing",
                )),
                (None, Some(_), None) => p.push(Problem::new(
                    "server.tls.cert",
                    "`key` is set but `cert` is missing",
                )),
                (None, None, None) => p.push(Problem::new(
                    "server.tls",
                    "needs `cert` and `key`, or `self_signed`; omit the block for plain HTTP",
                )),
                _ => p.push(Problem::new(
                    "server.tls",
                    "`self_signed` cannot be combined with `cert`/`key`",
                )),
            }
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            p.push(Problem::new("log.format", "must be `text` or `json`"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            p.push(Problem::new(
                "log.level",
                "is not a valid log filter (e.g. `info`)",
            ));
        }
        if let Some(token) = &self.admin.token {
            if token.trim().is_empty() {
                p.push(Problem::new(
                    "admin.token",
                    "is empty; remove it to close the API",
                ));
            }
        }
    }

    fn check_limits(&self, p: &mut Vec<Problem>) {
        if self.server.max_body_bytes == 0 {
            p.push(Problem::new("server.max_body_bytes", "must be positive"));
        }
        if self.server.max_connections == 0 {
            p.push(Problem::new("server.max_connections", "must be positive"));
        }
        // Below max_body_bytes, a signed callback of the allowed size could
        // never be read on a route authenticated only by its signature.
        for (key, value) in [
            (
                "server.max_unauthenticated_body_bytes",
                self.server.max_unauthenticated_body_bytes,
            ),
            (
                "server.max_unauthenticated_body_bytes_per_connection",
                self.server.max_unauthenticated_body_bytes_per_connection,
            ),
        ] {
            if value < self.server.max_body_bytes {
                p.push(Problem::new(key, "must be at least server.max_body_bytes"));
            }
        }
        check_duration(
            p,
            "server.header_read_timeout",
            self.server.header_read_timeout,
            true,
        );
        check_duration(p, "server.idle_timeout", self.server.idle_timeout, true);
        check_duration(p, "shutdown_grace", self.shutdown_grace, false);
        if self.idempotency.max_keys == 0 {
            p.push(Problem::new("idempotency.max_keys", "must be positive"));
        }
        check_duration(p, "idempotency.ttl", self.idempotency.ttl, true);
        let d = &self.defaults;
        check_duration(p, "defaults.timeout", d.timeout, true);
        if d.max_in_flight == 0 {
            p.push(Problem::new("defaults.max_in_flight", "must be positive"));
        }
        check_retry(p, &d.retry, &|field| {
            Some(format!("defaults.retry.{field}"))
        });
        if d.circuit_breaker.failure_threshold == 0 {
            p.push(Problem::new(
                "defaults.circuit_breaker.failure_threshold",
                "must be positive",
            ));
        }
        check_duration(
            p,
            "defaults.circuit_breaker.cooldown",
            d.circuit_breaker.cooldown,
            true,
        );
    }

    fn check_store(&self, p: &mut Vec<Problem>) {
        let s = &self.store;
        if s.max_batch == 0 {
            p.push(Problem::new("store.max_batch", "must be positive"));
        }
        if s.cache_bytes < 1024 * 1024 {
            p.push(Problem::new(
                "store.cache_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        check_duration(p, "store.retention", s.retention, true);
        check_duration(
            p,
            "store.dead_letter_retention",
            s.dead_letter_retention,
            true,
        );
        if let Some(pg) = &s.postgres {
            self.check_postgres(pg, p);
        }
    }

    fn check_postgres(&self, pg: &PostgresConfig, p: &mut Vec<Problem>) {
        if let Err(e) = check_postgres_url(&pg.url) {
            p.push(Problem::new("store.postgres.url", e));
        }
        if !(1..=1024).contains(&pg.pool_size) {
            p.push(Problem::new(
                "store.postgres.pool_size",
                "must be from 1 to 1024",
            ));
        }
        if !is_sql_identifier(&pg.schema) {
            p.push(Problem::new(
                "store.postgres.schema",
                "must be a plain SQL identifier: a lowercase letter or `_`, then up to 62 lowercase letters, digits or `_`",
            ));
        }
        check_duration(p, "store.postgres.lease", pg.lease, true);
        if let Some(ca) = &pg.ca_file {
            if let Err(e) = crate::delivery::client::load_ca_file(ca) {
                p.push(Problem::new("store.postgres.ca_file", e.to_string()));
            }
        }
        // A lease shorter than an attempt would let another instance take
        // over a delivery whose attempt is still running.
        let mut inherited = false;
        for (i, route) in self.routes.iter().enumerate() {
            for (s, sub) in route.subscribers.iter().enumerate() {
                match sub.timeout {
                    Some(timeout) if timeout >= pg.lease => p.push(Problem::new(
                        "store.postgres.lease",
                        format!(
                            "must be longer than the attempt timeout routes[{i}].subscribers[{s}].timeout"
                        ),
                    )),
                    Some(_) => {}
                    None => inherited = true,
                }
            }
        }
        if inherited && self.defaults.timeout >= pg.lease {
            p.push(Problem::new(
                "store.postgres.lease",
                "must be longer than the attempt timeout defaults.timeout (used by subscribers without their own `timeout`)",
            ));
        }
    }

    fn check_routes(&self, p: &mut Vec<Problem>) {
        if self.routes.is_empty() {
            p.push(Problem::new("routes", "at least one route is needed"));
        }
        let mut names = HashSet::new();
        let mut paths = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            check_name(&format!("{at}.name"), &route.name, p);
            if !names.insert(route.name.as_str()) {
                p.push(Problem::new(
                    format!("{at}.name"),
                    "is used twice: route names must be unique",
                ));
            }
            if !route.path.starts_with('/') {
                p.push(Problem::new(format!("{at}.path"), "must start with `/`"));
            } else if route.path.contains(['?', '#']) {
                p.push(Problem::new(
                    format!("{at}.path"),
                    "must be a plain path without `?` or `#`",
                ));
            }
            if !paths.insert(route.path.as_str()) {
                p.push(Problem::new(format!("{at}.path"), "is used by two routes"));
            }
            let generic = match route.source.as_str() {
                "muapi" => false,
                "generic" => true,
                _ => {
                    p.push(Problem::new(
                        format!("{at}.source"),
                        "must be `muapi` or `generic`",
                    ));
                    true
                }
            };
            match &route.idempotency_key {
                Some(_) if !generic => p.push(Problem::new(
                    format!("{at}.idempotency_key"),
                    "only generic sources take an idempotency_key (muapi uses id + status)",
                )),
                Some(spec) => {
                    if let Err(e) = super::KeySpec::parse(spec) {
                        p.push(Problem::new(format!("{at}.idempotency_key"), e));
                    }
                }
                None => {}
            }
            let auth = &route.auth;
            if auth.tokens.is_empty() && auth.standard_webhooks_secret.is_none() {
                p.push(Problem::new(
                    format!("{at}.auth"),
                    "needs `tokens` or `standard_webhooks_secret`: an open webhook route accepts anyone's callbacks",
                ));
            }
            for (t, token) in auth.tokens.iter().enumerate() {
                if token.trim().is_empty() {
                    p.push(Problem::new(format!("{at}.auth.tokens[{t}]"), "is empty"));
                }
            }
            for (c, cidr) in auth.allow_ips.iter().enumerate() {
                if let Err(e) = parse_cidr(cidr) {
                    p.push(Problem::new(format!("{at}.auth.allow_ips[{c}]"), e));
                }
            }
            if let Some(secret) = &auth.standard_webhooks_secret {
                if let Err(e) = decode_whsec(secret) {
                    p.push(Problem::new(
                        format!("{at}.auth.standard_webhooks_secret"),
                        e,
                    ));
                }
            }
            if let Some(muapi) = &route.muapi {
                if route.source == "muapi" {
                    check_muapi(&at, route, muapi, p);
                } else {
                    p.push(Problem::new(
                        format!("{at}.muapi"),
                        "only `source: muapi` routes take a `muapi:` block",
                    ));
                }
            }
            if route.subscribers.is_empty() {
                p.push(Problem::new(
                    format!("{at}.subscribers"),
                    "at least one subscriber is needed (callbacks would go nowhere)",
                ));
            }
            let mut subs = HashSet::new();
            for (s, sub) in route.subscribers.iter().enumerate() {
                let at = format!("{at}.subscribers[{s}]");
                if !subs.insert(sub.name.as_str()) {
                    p.push(Problem::new(
                        format!("{at}.name"),
                        "is used twice in this route: subscriber names must be unique within a route",
                    ));
                }
                self.check_subscriber(&at, sub, p);
            }
        }
    }

    fn check_subscriber(&self, at: &str, sub: &SubscriberConfig, p: &mut Vec<Problem>) {
        check_name(&format!("{at}.name"), &sub.name, p);
        if let Err(e) = parse_subscriber_url(&sub.url) {
            p.push(Problem::new(format!("{at}.url"), e));
        }
        for (k, secret) in sub.signing_secrets.iter().enumerate() {
            if let Err(e) = decode_whsec(secret) {
                p.push(Problem::new(format!("{at}.signing_secrets[{k}]"), e));
            }
        }
        for (name, value) in &sub.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(Problem::new(
                    format!("{at}.headers.{name}"),
                    "is not a valid header name",
                ));
            } else if http::HeaderValue::from_str(value).is_err() {
                p.push(Problem::new(
                    format!("{at}.headers.{name}"),
                    "is not a valid header value",
                ));
            }
        }
        if let Some(ca) = &sub.ca_file {
            // The message names the key, not the path (it may come from
            // the environment).
            if let Err(reason) = crate::pem::certificates(ca) {
                p.push(Problem::new(
                    format!("{at}.ca_file"),
                    format!("cannot read CA certificates from the file: {reason}"),
                ));
            }
        }
        if let Some(timeout) = sub.timeout {
            check_duration(p, &format!("{at}.timeout"), timeout, true);
        }
        if sub.max_in_flight == Some(0) {
            p.push(Problem::new(
                format!("{at}.max_in_flight"),
                "must be positive",
            ));
        }
        if let Some(r) = &sub.retry {
            // The merged schedule, checked where the subscriber sets a value;
            // what it inherits was checked under `defaults.retry`.
            let effective = self.effective(sub).retry;
            let own = |field: &str| {
                let set = match field {
                    "initial_interval" => r.initial_interval.is_some(),
                    "multiplier" => r.multiplier.is_some(),
                    "max_interval" => r.max_interval.is_some(),
                    "max_elapsed" => r.max_elapsed.is_some(),
                    _ => r.jitter.is_some(),
                };
                set.then(|| format!("{at}.retry.{field}"))
            };
            check_retry(p, &effective, &own);
        }
        if let Some(b) = &sub.circuit_breaker {
            if b.failure_threshold == Some(0) {
                p.push(Problem::new(
                    format!("{at}.circuit_breaker.failure_threshold"),
                    "must be positive",
                ));
            }
            if let Some(cooldown) = b.cooldown {
                check_duration(p, &format!("{at}.circuit_breaker.cooldown"), cooldown, true);
            }
        }
        if let Some(when) = &sub.when {
            if when.status.as_ref().is_some_and(|s| s.is_empty()) {
                p.push(Problem::new(
                    format!("{at}.when.status"),
                    "is empty: no callback could ever match; remove the subscriber instead",
                ));
            }
            for pointer in when.json.keys() {
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    p.push(Problem::new(
                        format!("{at}.when.json.{pointer}"),
                        "a JSON pointer starts with `/`",
                    ));
                }
            }
        }
    }
}

fn check_muapi(at: &str, route: &RouteConfig, m: &MuapiConfig, p: &mut Vec<Problem>) {
    let at_m = format!("{at}.muapi");
    if m.api_key.trim().is_empty() {
        p.push(Problem::new(format!("{at_m}.api_key"), "is empty"));
    }
    if let Err(e) = parse_http_url_without_query(&m.base_url) {
        p.push(Problem::new(format!("{at_m}.base_url"), e));
    }
    match parse_http_url_without_query(&m.public_url) {
        Err(e) => p.push(Problem::new(format!("{at_m}.public_url"), e)),
        Ok(uri) if uri.path() != route.path => p.push(Problem::new(
            format!("{at_m}.public_url"),
            format!("its path must be the route's path ({at}.path): muapi calls back this URL"),
        )),
        Ok(_) => {}
    }
    check_duration(
        p,
        &format!("{at_m}.reconcile_after"),
        m.reconcile_after,
        true,
    );
    check_duration(
        p,
        &format!("{at_m}.poll.initial_interval"),
        m.poll.initial_interval,
        true,
    );
    check_duration(
        p,
        &format!("{at_m}.poll.max_interval"),
        m.poll.max_interval,
        true,
    );
    if m.poll.max_interval < m.poll.initial_interval {
        p.push(Problem::new(
            format!("{at_m}.poll.max_interval"),
            "must not be shorter than poll.initial_interval",
        ));
    }
    check_duration(p, &format!("{at_m}.give_up_after"), m.give_up_after, true);
    if m.give_up_after <= m.reconcile_after {
        p.push(Problem::new(
            format!("{at_m}.give_up_after"),
            "must be longer than reconcile_after",
        ));
    }
    if !(1..=256).contains(&m.max_polls_in_flight) {
        p.push(Problem::new(
            format!("{at_m}.max_polls_in_flight"),
            "must be from 1 to 256",
        ));
    }
    if route.auth.tokens.is_empty() {
        p.push(Problem::new(
            format!("{at}.auth.tokens"),
            "needs at least one token on a route with `muapi:`: the callback URL given to muapi carries it",
        ));
    }
}

/// A duration key: positive if `positive`, and never beyond the maximum.
fn check_duration(p: &mut Vec<Problem>, key: &str, value: Duration, positive: bool) {
    if positive && value.is_zero() {
        p.push(Problem::new(key, "must be positive"));
    } else if value > MAX_DURATION {
        p.push(Problem::new(key, format!("must be at most {MAX_TEXT}")));
    }
}

/// Checks a retry schedule. `own(field)` is the key of a value set at the
/// place being checked, or `None` for one inherited from `defaults.retry`:
/// single-value rules skip inherited values (they are checked where they
/// are written), and a rule between two values is reported at the one set
/// here, naming where the other comes from.
fn check_retry(p: &mut Vec<Problem>, r: &RetryConfig, own: &dyn Fn(&str) -> Option<String>) {
    if let Some(key) = own("initial_interval") {
        check_duration(p, &key, r.initial_interval, true);
    }
    if let Some(key) = own("multiplier") {
        if !(r.multiplier >= 1.0 && r.multiplier <= 100.0) {
            p.push(Problem::new(key, "must be between 1.0 and 100"));
        }
    }
    if let Some(key) = own("max_interval") {
        check_duration(p, &key, r.max_interval, true);
    }
    if let Some(key) = own("max_elapsed") {
        check_duration(p, &key, r.max_elapsed, true);
    }
    if let Some(key) = own("jitter") {
        if !(0.0..1.0).contains(&r.jitter) {
            p.push(Problem::new(key, "must be in [0, 1), e.g. 0.2 for ±20 %"));
        }
    }
    if r.max_interval < r.initial_interval {
        match (own("max_interval"), own("initial_interval")) {
            (Some(key), Some(_)) => p.push(Problem::new(
                key,
                "must not be shorter than initial_interval",
            )),
            (Some(key), None) => p.push(Problem::new(
                key,
                "must not be shorter than the initial_interval inherited from defaults.retry.initial_interval",
            )),
            (None, Some(key)) => p.push(Problem::new(
                key,
                "must not be longer than the max_interval inherited from defaults.retry.max_interval",
            )),
            (None, None) => {}
        }
    }
}

/// Names appear in metric labels, headers and delivery ids: keep them plain.
fn check_name(key: &str, name: &str, p: &mut Vec<Problem>) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        p.push(Problem::new(
            key,
            "must be 1-64 characters of letters, digits, `-` or `_`",
        ));
    }
}

/// `[a-z_][a-z0-9_]{0,62}`: safe to use unquoted in SQL.
fn is_sql_identifier(text: &str) -> bool {
    let mut bytes = text.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && text.len() <= 63
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// Checks the shape of a PostgreSQL connection URL without ever quoting
/// it (it may carry a password): `postgres://` or `postgresql://`, then
/// optional `user[:password]@`, one or more `host[:port]` (a bracketed
/// IPv6 address allowed), an optional `/database` and `?params`. A URL
/// without a host must name one with `?host=` (a Unix socket directory).
pub(crate) fn check_postgres_url(text: &str) -> Result<(), &'static str> {
    let lower = text
        .chars()
        .take(13)
        .collect::<String>()
        .to_ascii_lowercase();
    let rest = if lower.starts_with("postgresql://") {
        &text[13..]
    } else if lower.starts_with("postgres://") {
        &text[11..]
    } else {
        return Err("must be a postgres:// or postgresql:// URL");
    };
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains spaces or control characters; percent-encode them");
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let query = tail.split_once('?').map(|(_, q)| q);
    let host_param = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.strip_prefix("host=").is_some_and(|h| !h.is_empty()))
    });
    if hosts.is_empty() {
        return if host_param {
            Ok(())
        } else {
            Err("names no host: write postgres://user@host:5432/db (or ?host=/socket/dir)")
        };
    }
    for host in hosts.split(',') {
        let (name, port) = if let Some(v6) = host.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or("has an unclosed `[` in its host")?;
            if after.is_empty() {
                (addr, None)
            } else {
                let port = after
                    .strip_prefix(':')
                    .ok_or("has text after a bracketed IPv6 host")?;
                (addr, Some(port))
            }
        } else {
            match host.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            }
        };
        if name.is_empty() {
            return Err("has an empty host name");
        }
        if let Some(port) = port {
            let ok = !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
            if !ok {
                return Err("has a port that is not a number from 1 to 65535");
            }
        }
    }
    Ok(())
}

/// Decodes a `whsec_<base64>` secret into its key bytes.
///
/// The message never contains the secret itself.
pub(crate) fn decode_whsec(secret: &str) -> Result<Vec<u8>, String> {
    crate::signing::decode_whsec(secret).map_err(|e| e.to_string())
}

/// Parses a CIDR (`10.0.0.0/8`) or a single address (`127.0.0.1`).
pub(crate) fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    text.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| "is not a CIDR such as 203.0.113.0/24 or an address".to_string())
}

/// A subscriber URL must be absolute http(s) with a host.
pub(crate) fn parse_subscriber_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text.parse().map_err(|_| {
        "is not a valid URL: expected an absolute http:// or https:// URL".to_string()
    })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must be an http:// or https:// URL".into()),
    }
    if uri.host().is_none_or(|h| h.is_empty()) {
        return Err("has no host".into());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("must not carry credentials; use `headers` instead".into());
    }
    Ok(uri)
}

/// An absolute http(s) URL with a host, no credentials and no query.
pub(crate) fn parse_http_url_without_query(text: &str) -> Result<http::Uri, String> {
    if text.contains('#') {
        return Err("must not have a `#fragment`".into());
    }
    let uri = parse_subscriber_url(text)?;
    if uri.query().is_some() {
        return Err("must not have a query string (`?…`)".into());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth: { tokens: ["t0ken"] }
    subscribers:
      - name: app
        url: http://127.0.0.1:3000/x
"#;

    fn env(_: &str) -> Option<String> {
        None
    }

    fn problems_of(yaml: &str) -> Vec<Problem> {
        match Config::from_yaml(yaml, &env) {
            Ok(_) => Vec::new(),
            Err(crate::config::ConfigError::Invalid(p)) => p,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }

    fn assert_problem(yaml: &str, key: &str, needle: &str) {
        let problems = problems_of(yaml);
        assert!(
            problems
                .iter()
                .any(|p| p.key == key && p.message.contains(needle)),
            "expected a problem at {key} containing {needle:?}, got {problems:?}"
        );
    }

    #[test]
    fn valid_config_passes_with_defaults() {
        let c = Config::from_yaml(VALID, &env).unwrap();
        assert_eq!(c.server.max_body_bytes, 262144);
        assert_eq!(c.defaults.max_in_flight, 32);
        assert_eq!(c.idempotency.ttl, std::time::Duration::from_secs(72 * 3600));
    }

    #[test]
    fn unknown_key_is_named() {
        let yaml = VALID.replace("    source: muapi", "    source: muapi\n    sauce: x");
        assert_problem(&yaml, "routes[0].sauce", "unknown key");
    }

    #[test]
    fn missing_env_is_named() {
        let yaml = VALID.replace("t0ken", "${MUAPI_TOKEN_UNSET}");
        assert_problem(&yaml, "routes[0].auth.tokens[0]", "MUAPI_TOKEN_UNSET");
    }

    #[test]
    fn bad_duration_is_named() {
        let yaml = format!("{VALID}shutdown_grace: 30\n");
        assert_problem(&yaml, "shutdown_grace", "no unit");
    }

    #[test]
    fn route_names_unique() {
        let yaml = format!(
            "{VALID}  - name: muapi\n    path: /other\n    source: muapi\n    auth: {{ tokens: [x] }}\n    subscribers: [{{name: a, url: 'http://h/'}}]\n"
        );
        assert_problem(&yaml, "routes[1].name", "used twice");
    }

    #[test]
    fn route_paths_unique() {
        let yaml = format!(
            "{VALID}  - name: other\n    path: /hooks/muapi\n    source: muapi\n    auth: {{ tokens: [x] }}\n    subscribers: [{{name: a, url: 'http://h/'}}]\n"
        );
        assert_problem(&yaml, "routes[1].path", "used by two routes");
    }

    #[test]
    fn path_starts_with_slash() {
        let yaml = VALID.replace("path: /hooks/muapi", "path: hooks/muapi");
        assert_problem(&yaml, "routes[0].path", "must start with `/`");
    }

    #[test]
    fn subscriber_names_unique_within_route() {
        let yaml = format!("{VALID}      - name: app\n        url: http://127.0.0.1:3001/\n");
        assert_problem(&yaml, "routes[0].subscribers[1].name", "used twice");
    }

    #[test]
    fn subscriber_url_is_http_with_host() {
        let yaml = VALID.replace("http://127.0.0.1:3000/x", "ftp://example.com/x");
        assert_problem(&yaml, "routes[0].subscribers[0].url", "http:// or https://");
        let yaml = VALID.replace("http://127.0.0.1:3000/x", "/relative");
        assert_problem(&yaml, "routes[0].subscribers[0].url", "http:// or https://");
    }

    #[test]
    fn limits_are_positive() {
        let yaml = VALID.replace(
            "  listen: \"127.0.0.1:0\"\nadmin",
            "  listen: \"127.0.0.1:0\"\n  max_body_bytes: 0\n  max_connections: 0\nadmin",
        );
        assert_problem(&yaml, "server.max_body_bytes", "positive");
        assert_problem(&yaml, "server.max_connections", "positive");
        let yaml = VALID.replace(
            "  listen: \"127.0.0.1:0\"\nadmin",
            "  listen: \"127.0.0.1:0\"\n  max_body_bytes: 2048\n  max_unauthenticated_body_bytes: 2047\n  max_unauthenticated_body_bytes_per_connection: 100\nadmin",
        );
        assert_problem(
            &yaml,
            "server.max_unauthenticated_body_bytes",
            "max_body_bytes",
        );
        assert_problem(
            &yaml,
            "server.max_unauthenticated_body_bytes_per_connection",
            "max_body_bytes",
        );
        let yaml = format!("{VALID}defaults: {{ max_in_flight: 0 }}\n");
        assert_problem(&yaml, "defaults.max_in_flight", "positive");
        let yaml = format!("{VALID}idempotency: {{ max_keys: 0 }}\n");
        assert_problem(&yaml, "idempotency.max_keys", "positive");
    }

    #[test]
    fn retry_settings_are_sane() {
        let yaml = format!("{VALID}defaults: {{ retry: {{ multiplier: 0.5, jitter: 1.5 }} }}\n");
        assert_problem(&yaml, "defaults.retry.multiplier", "between");
        assert_problem(&yaml, "defaults.retry.jitter", "[0, 1)");
    }

    #[test]
    fn tls_needs_cert_and_key_or_self_signed() {
        let yaml = VALID.replace(
            "  listen: \"127.0.0.1:0\"\nadmin",
            "  listen: \"127.0.0.1:0\"\n  tls: { cert: /nonexistent.pem }\nadmin",
        );
        assert_problem(&yaml, "server.tls.key", "missing");
        let yaml = VALID.replace(
            "  listen: \"127.0.0.1:0\"\nadmin",
            "  listen: \"127.0.0.1:0\"\n  tls: {}\nadmin",
        );
        assert_problem(&yaml, "server.tls", "self_signed");
    }

    #[test]
    fn tls_files_must_be_readable_pem() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "not pem").unwrap();
        let yaml = VALID.replace(
            "  listen: \"127.0.0.1:0\"\nadmin",
            &format!(
                "  listen: \"127.0.0.1:0\"\n  tls: {{ cert: {}, key: {} }}\nadmin",
                cert.display(),
                dir.path().join("missing.key").display()
            ),
        );
        assert_problem(&yaml, "server.tls", "certificate");
    }

    #[test]
    fn whsec_secrets_decode() {
        let yaml = VALID.replace(
            "        url: http://127.0.0.1:3000/x",
            "        url: http://127.0.0.1:3000/x\n        signing_secrets: [\"whsec_!!!\", \"plain\"]",
        );
        assert_problem(
            &yaml,
            "routes[0].subscribers[0].signing_secrets[0]",
            "base64",
        );
        assert_problem(
            &yaml,
            "routes[0].subscribers[0].signing_secrets[1]",
            "whsec_",
        );
    }

    #[test]
    fn cidrs_parse() {
        let yaml = VALID.replace(
            "auth: { tokens: [\"t0ken\"] }",
            "auth: { tokens: [\"t0ken\"], allow_ips: [\"10.0.0.0/33\", \"127.0.0.1\"] }",
        );
        let problems = problems_of(&yaml);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "routes[0].auth.allow_ips[0]");
    }

    #[test]
    fn routes_need_auth() {
        let yaml = VALID.replace("auth: { tokens: [\"t0ken\"] }", "auth: {}");
        assert_problem(&yaml, "routes[0].auth", "needs `tokens`");
    }

    #[test]
    fn names_are_plain() {
        let yaml = VALID.replace("- name: app", "- name: \"my app.v2\"");
        assert_problem(&yaml, "routes[0].subscribers[0].name", "letters, digits");
    }

    #[test]
    fn source_is_known() {
        let yaml = VALID.replace("source: muapi", "source: stripe");
        assert_problem(&yaml, "routes[0].source", "muapi");
    }

    #[test]
    fn idempotency_key_spec_parses() {
        let yaml = VALID
            .replace("source: muapi", "source: generic")
            .replace("    auth:", "    idempotency_key: body:/id\n    auth:");
        assert_problem(&yaml, "routes[0].idempotency_key", "header:");
    }

    #[test]
    fn header_names_valid() {
        let yaml = VALID.replace(
            "        url: http://127.0.0.1:3000/x",
            "        url: http://127.0.0.1:3000/x\n        headers: { \"bad header\": x }",
        );
        assert_problem(
            &yaml,
            "routes[0].subscribers[0].headers.bad header",
            "header name",
        );
    }

    #[test]
    fn all_problems_are_reported_together() {
        let yaml = VALID
            .replace("path: /hooks/muapi", "path: hooks")
            .replace("http://127.0.0.1:3000/x", "gopher://x")
            .replace("source: muapi", "source: stripe");
        assert_eq!(problems_of(&yaml).len(), 3);
    }
}
