//! `Config::validate`: every rule a config must meet, each reported with the
//! key it concerns. All rules run, so `check-config` lists every problem.

use std::collections::HashSet;

use super::{Config, Problem, RetryConfig, SubscriberConfig};

impl Config {
    /// Checks every rule; returns all problems found (never just the first).
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut p = Vec::new();
        self.check_server(&mut p);
        self.check_limits(&mut p);
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
                    if let Err(e) = crate::ingress::tls::load_pem_files(cert, key) {
                        p.push(Problem::new("server.tls", e.to_string()));
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
        if self.server.header_read_timeout.is_zero() {
            p.push(Problem::new(
                "server.header_read_timeout",
                "must be positive",
            ));
        }
        if self.idempotency.max_keys == 0 {
            p.push(Problem::new("idempotency.max_keys", "must be positive"));
        }
        if self.idempotency.ttl.is_zero() {
            p.push(Problem::new("idempotency.ttl", "must be positive"));
        }
        if self.store.max_batch == 0 {
            p.push(Problem::new("store.max_batch", "must be positive"));
        }
        if self.store.cache_bytes < 1024 * 1024 {
            p.push(Problem::new(
                "store.cache_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        let d = &self.defaults;
        if d.timeout.is_zero() {
            p.push(Problem::new("defaults.timeout", "must be positive"));
        }
        if d.max_in_flight == 0 {
            p.push(Problem::new("defaults.max_in_flight", "must be positive"));
        }
        check_retry("defaults.retry", &d.retry, p);
        if d.circuit_breaker.failure_threshold == 0 {
            p.push(Problem::new(
                "defaults.circuit_breaker.failure_threshold",
                "must be positive",
            ));
        }
        if d.circuit_breaker.cooldown.is_zero() {
            p.push(Problem::new(
                "defaults.circuit_breaker.cooldown",
                "must be positive",
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
                    format!("route name `{}` is used twice", route.name),
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
                p.push(Problem::new(
                    format!("{at}.path"),
                    format!("path `{}` is used by two routes", route.path),
                ));
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
                        format!("subscriber name `{}` is used twice in this route", sub.name),
                    ));
                }
                check_subscriber(&at, sub, p);
            }
        }
    }
}

fn check_subscriber(at: &str, sub: &SubscriberConfig, p: &mut Vec<Problem>) {
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
        if let Err(e) = crate::delivery::client::load_ca_file(ca) {
            p.push(Problem::new(format!("{at}.ca_file"), e.to_string()));
        }
    }
    if sub.timeout.is_some_and(|t| t.is_zero()) {
        p.push(Problem::new(format!("{at}.timeout"), "must be positive"));
    }
    if sub.max_in_flight == Some(0) {
        p.push(Problem::new(
            format!("{at}.max_in_flight"),
            "must be positive",
        ));
    }
    if let Some(r) = &sub.retry {
        let merged = RetryConfig {
            initial_interval: r
                .initial_interval
                .unwrap_or(std::time::Duration::from_secs(1)),
            multiplier: r.multiplier.unwrap_or(2.0),
            max_interval: r.max_interval.unwrap_or(std::time::Duration::MAX),
            max_elapsed: r.max_elapsed.unwrap_or(std::time::Duration::from_secs(1)),
            jitter: r.jitter.unwrap_or(0.0),
        };
        check_retry(&format!("{at}.retry"), &merged, p);
    }
    if let Some(b) = &sub.circuit_breaker {
        if b.failure_threshold == Some(0) {
            p.push(Problem::new(
                format!("{at}.circuit_breaker.failure_threshold"),
                "must be positive",
            ));
        }
        if b.cooldown.is_some_and(|c| c.is_zero()) {
            p.push(Problem::new(
                format!("{at}.circuit_breaker.cooldown"),
                "must be positive",
            ));
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

fn check_retry(at: &str, r: &RetryConfig, p: &mut Vec<Problem>) {
    if r.initial_interval.is_zero() {
        p.push(Problem::new(
            format!("{at}.initial_interval"),
            "must be positive",
        ));
    }
    if !(r.multiplier >= 1.0 && r.multiplier <= 100.0) {
        p.push(Problem::new(
            format!("{at}.multiplier"),
            "must be between 1.0 and 100",
        ));
    }
    if r.max_interval < r.initial_interval {
        p.push(Problem::new(
            format!("{at}.max_interval"),
            "must not be shorter than initial_interval",
        ));
    }
    if r.max_elapsed.is_zero() {
        p.push(Problem::new(
            format!("{at}.max_elapsed"),
            "must be positive",
        ));
    }
    if !(0.0..1.0).contains(&r.jitter) {
        p.push(Problem::new(
            format!("{at}.jitter"),
            "must be in [0, 1), e.g. 0.2 for ±20 %",
        ));
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
        .map_err(|_| format!("`{text}` is not a CIDR such as 203.0.113.0/24"))
}

/// A subscriber URL must be absolute http(s) with a host.
pub(crate) fn parse_subscriber_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text.parse().map_err(|_| "is not a valid URL".to_string())?;
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
        assert_problem(&yaml, "routes[0].sauce", "unknown field `sauce`");
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
