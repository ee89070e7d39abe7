//! Loader tests for the defects of issue 9 (each failed before the loader
//! was rewritten) and for the loader's own rules.

use std::time::Duration;

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

const SECRET: &str = "s3cret-Zq9-value-never-shown";

fn env(name: &str) -> Option<String> {
    match name {
        "MUAPI_WEBHOOK_TOKEN" | "SIGNING" => Some(SECRET.into()),
        "PORT" => Some("8443".into()),
        _ => None,
    }
}

fn load(yaml: &str) -> Config {
    Config::from_yaml(yaml, &env).unwrap_or_else(|e| panic!("{e}"))
}

fn problems_of(yaml: &str) -> Vec<Problem> {
    match Config::from_yaml(yaml, &env) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(p)) => p,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[track_caller]
fn assert_problem(yaml: &str, key: &str, needle: &str) {
    let problems = problems_of(yaml);
    assert!(
        problems
            .iter()
            .any(|p| p.key == key && p.message.contains(needle)),
        "expected a problem at {key} containing {needle:?}, got {problems:#?}"
    );
}

// ---- item 2: config errors never print values ---------------------------

#[test]
fn a_secret_where_a_list_belongs_is_not_echoed() {
    let yaml = VALID
        .replace(
            "auth: { tokens: [\"t0ken\"] }",
            "auth: { tokens: \"${MUAPI_WEBHOOK_TOKEN}\" }",
        )
        .replace(
            "        url: http://127.0.0.1:3000/x",
            "        url: http://127.0.0.1:3000/x\n        signing_secrets: \"${SIGNING}\"",
        );
    let err = Config::from_yaml(&yaml, &env).unwrap_err();
    let text = format!("{err} {:?}", err.problems());
    assert!(!text.contains(SECRET), "the secret leaked: {text}");
    assert_problem(&yaml, "routes[0].auth.tokens", "list");
    assert_problem(&yaml, "routes[0].subscribers[0].signing_secrets", "list");
}

#[test]
fn unreadable_file_paths_are_not_echoed() {
    // Found by the `config` fuzz target: a `ca_file` (or TLS file) path
    // from the environment was quoted in the problem about the file.
    let dir = format!("/nonexistent/{SECRET}");
    let yaml = VALID
        .replace(
            "  listen: \"127.0.0.1:0\"\nadmin",
            "  listen: \"127.0.0.1:0\"\n  tls: { cert: \"/nonexistent/${SIGNING}/cert.pem\", key: k.pem }\nadmin",
        )
        .replace(
            "        url: http://127.0.0.1:3000/x",
            "        url: http://127.0.0.1:3000/x\n        ca_file: \"/nonexistent/${SIGNING}/ca.pem\"",
        );
    let err = Config::from_yaml(&yaml, &env).unwrap_err();
    let text = format!("{err} {:?}", err.problems());
    assert!(!text.contains(&dir), "the path leaked: {text}");
    assert_problem(
        &yaml,
        "routes[0].subscribers[0].ca_file",
        "cannot read CA certificates",
    );
    assert_problem(
        &yaml,
        "server.tls",
        "cannot load the certificate chain from `cert`",
    );
    // A readable chain, so the key is read (and cannot be).
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("cert.pem");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    let yaml = yaml
        .replace("/nonexistent/${SIGNING}/cert.pem", cert.to_str().unwrap())
        .replace("k.pem", "\"/nonexistent/${SIGNING}/key.pem\"");
    let err = Config::from_yaml(&yaml, &env).unwrap_err();
    let text = format!("{err} {:?}", err.problems());
    assert!(!text.contains(&dir), "the path leaked: {text}");
    assert_problem(
        &yaml,
        "server.tls",
        "cannot load the private key from `key`",
    );
}

// ---- item 4: plain scalars keep their text --------------------------------

#[test]
fn plain_scalars_that_look_like_other_types_stay_text() {
    let yaml = VALID
        .replace("  - name: muapi", "  - name: n")
        .replace("      - name: app", "      - name: on")
        .replace("[\"t0ken\"]", "[0123456, 1e3, 0x1F, ~x, 1_000]")
        .replace(
            "        url: http://127.0.0.1:3000/x",
            "        url: http://127.0.0.1:3000/x\n        headers: {X-Flag: yes, X-Num: 012, X-Float: 1.50}",
        );
    let c = load(&yaml);
    assert_eq!(c.routes[0].name, "n");
    assert_eq!(c.routes[0].subscribers[0].name, "on");
    assert_eq!(
        c.routes[0].auth.tokens,
        ["0123456", "1e3", "0x1F", "~x", "1_000"]
    );
    let headers = &c.routes[0].subscribers[0].headers;
    assert_eq!(headers["X-Flag"], "yes");
    assert_eq!(headers["X-Num"], "012");
    assert_eq!(headers["X-Float"], "1.50");
}

// ---- item 5: every problem in one run -------------------------------------

#[test]
fn type_errors_unknown_keys_and_bad_values_are_listed_together() {
    let yaml = VALID
        .replace(
            "  listen: \"127.0.0.1:0\"\nadmin",
            "  listen: nope\n  max_body_bytes: lots\nadmin",
        )
        .replace("    source: muapi", "    source: muapi\n    sauce: x")
        .replace("http://127.0.0.1:3000/x", "ftp://127.0.0.1/x");
    let problems = problems_of(&yaml);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "server.listen",
        "server.max_body_bytes",
        "routes[0].sauce",
        "routes[0].subscribers[0].url",
    ] {
        assert!(keys.contains(&key), "{key} missing from {problems:#?}");
    }
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

// ---- item 6 and 17: one merged view of defaults and overrides -------------

#[test]
fn subscriber_retry_is_checked_against_the_files_defaults() {
    // Valid: 500ms is not shorter than the file's 100ms initial interval.
    let yaml = VALID.replace(
        "        url: http://127.0.0.1:3000/x",
        "        url: http://127.0.0.1:3000/x\n        retry: { max_interval: 500ms }",
    );
    let yaml = format!("{yaml}defaults: {{ retry: {{ initial_interval: 100ms }} }}\n");
    let c = load(&yaml);
    let rt = c.compile().unwrap();
    let sub = &rt.route_named("muapi").unwrap().subscribers[0];
    assert_eq!(
        sub.retry.config.initial_interval,
        Duration::from_millis(100)
    );
    assert_eq!(sub.retry.config.max_interval, Duration::from_millis(500));

    // The reverse mistake: the file's initial interval is longer than the
    // subscriber's max_interval.
    let yaml = VALID.replace(
        "        url: http://127.0.0.1:3000/x",
        "        url: http://127.0.0.1:3000/x\n        retry: { max_interval: 10m }",
    );
    let yaml = format!("{yaml}defaults: {{ retry: {{ initial_interval: 30m }} }}\n");
    assert_problem(
        &yaml,
        "routes[0].subscribers[0].retry.max_interval",
        "defaults.retry.initial_interval",
    );
}

#[test]
fn a_partial_retry_override_is_checked_with_the_inherited_values() {
    let yaml = VALID.replace(
        "        url: http://127.0.0.1:3000/x",
        "        url: http://127.0.0.1:3000/x\n        retry: { initial_interval: 2h }",
    );
    assert_problem(
        &yaml,
        "routes[0].subscribers[0].retry.initial_interval",
        "defaults.retry.max_interval",
    );
    // And the same typed config is refused by compile(), which validates the
    // same merged view.
    let mut c = load(VALID);
    c.routes[0].subscribers[0].retry = Some(RetryOverride {
        initial_interval: Some(Duration::from_secs(7200)),
        ..RetryOverride::default()
    });
    let problems = c.compile().unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.key == "routes[0].subscribers[0].retry.initial_interval"),
        "{problems:#?}"
    );
}

// ---- item 16: durations stay in range --------------------------------------

#[test]
fn an_overflowing_duration_is_a_problem_not_a_panic() {
    let yaml = format!("{VALID}shutdown_grace: 199999999999999d99999999999999d\n");
    assert_problem(&yaml, "shutdown_grace", "365d");
}

#[test]
fn durations_beyond_the_maximum_are_refused_by_name() {
    let yaml = format!("{VALID}defaults: {{ retry: {{ initial_interval: 200000000000000d }} }}\n");
    assert_problem(&yaml, "defaults.retry.initial_interval", "at most 365d");
    let yaml = format!("{VALID}defaults: {{ retry: {{ max_interval: 300000000000d }} }}\n");
    assert_problem(&yaml, "defaults.retry.max_interval", "at most 365d");
    let yaml = format!("{VALID}idempotency: {{ ttl: 366d }}\n");
    assert_problem(&yaml, "idempotency.ttl", "at most 365d");
    // The maximum itself is fine.
    load(&format!("{VALID}idempotency: {{ ttl: 365d }}\n"));
}

// ---- the loader's own rules -------------------------------------------------

#[test]
fn numbers_and_addresses_may_come_from_the_environment() {
    let yaml = VALID.replace(
        "listen: \"127.0.0.1:0\"\nadmin",
        "listen: \"127.0.0.1:${PORT}\"\n  max_connections: ${PORT}\nadmin",
    );
    let c = load(&yaml);
    assert_eq!(c.server.listen.port(), 8443);
    assert_eq!(c.server.max_connections, 8443);
}

#[test]
fn an_empty_or_null_key_counts_as_not_given() {
    let yaml = format!("{VALID}idempotency:\n  ttl:\n  max_keys: ~\nshutdown_grace: null\n");
    let c = load(&yaml);
    assert_eq!(c.idempotency.ttl, Duration::from_secs(72 * 3600));
    assert_eq!(c.idempotency.max_keys, 1_000_000);
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    // A required key that is null is missing.
    let yaml = VALID.replace("    path: /hooks/muapi", "    path: ~");
    assert_problem(&yaml, "routes[0].path", "is required");
    // Quoted, it is text.
    let yaml = VALID.replace("- name: app", "- name: 'null'");
    assert_eq!(load(&yaml).routes[0].subscribers[0].name, "null");
}

#[test]
fn an_environment_variable_cannot_switch_a_key_off() {
    let lookup = |name: &str| (name == "EMPTY").then(String::new);
    let yaml = VALID.replace(
        "  listen: \"127.0.0.1:0\"\nroutes",
        "  listen: \"127.0.0.1:0\"\n  token: ${EMPTY}\nroutes",
    );
    let problems = match Config::from_yaml(&yaml, &lookup) {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("{other:?}"),
    };
    assert!(problems
        .iter()
        .any(|p| p.key == "admin.token" && p.message.contains("empty")));
}

#[test]
fn missing_variables_are_named_with_their_key() {
    let yaml = VALID.replace("t0ken", "${MUAPI_TOKEN_UNSET}");
    assert_problem(
        &yaml,
        "routes[0].auth.tokens[0]",
        "`MUAPI_TOKEN_UNSET` is not set",
    );
    // An unknown key is not interpolated (so it causes one problem, not two).
    let yaml = format!("{VALID}extra: ${{UNSET_TOO}}\n");
    let problems = problems_of(&yaml);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].key, "extra");
}

#[test]
fn when_json_values_follow_the_yaml_core_schema() {
    let yaml = VALID.replace(
        "        url: http://127.0.0.1:3000/x",
        "        url: http://127.0.0.1:3000/x\n        when: { json: { /n: 42, /s: \"42\", /b: true, /q: 'true', /z: null, /t: on, /f: 1.5, /l: [1, x] } }",
    );
    let c = load(&yaml);
    let json = &c.routes[0].subscribers[0].when.as_ref().unwrap().json;
    assert_eq!(json["/n"], serde_json::json!(42));
    assert_eq!(json["/s"], serde_json::json!("42"));
    assert_eq!(json["/b"], serde_json::json!(true));
    assert_eq!(json["/q"], serde_json::json!("true"));
    assert_eq!(json["/z"], serde_json::json!(null));
    assert_eq!(json["/t"], serde_json::json!("on"));
    assert_eq!(json["/f"], serde_json::json!(1.5));
    assert_eq!(json["/l"], serde_json::json!([1, "x"]));
}

#[test]
fn problems_carry_lines_and_come_in_file_order() {
    // A decode problem (line 3), a validation problem (line 8), another
    // decode problem (line 14): listed top to bottom.
    let yaml = VALID
        .replace("path: /hooks/muapi", "path: hooks")
        .replace("  listen: \"127.0.0.1:0\"\nadmin", "  listen: nope\nadmin")
        .replace("/x\n", "/x\n        colour: red\n");
    let problems = problems_of(&yaml);
    let found: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.message.rsplit_once(" (").unwrap().1))
        .collect();
    assert_eq!(
        found,
        [
            ("server.listen", "line 3)"),
            ("routes[0].path", "line 8)"),
            ("routes[0].subscribers[0].colour", "line 14)"),
        ]
    );
}

#[test]
fn a_key_that_failed_to_decode_is_not_reported_again_by_validation() {
    // `tokens` is not a list: one problem, not also "needs `tokens`".
    let yaml = VALID.replace("[\"t0ken\"]", "t0ken");
    let problems = problems_of(&yaml);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].key, "routes[0].auth.tokens");
    // A route that is not a mapping keeps the next route's index right.
    let yaml = format!(
        "{VALID}  - just text\n  - name: two\n    path: two\n    source: muapi\n    auth: {{ tokens: [x] }}\n    subscribers: [{{name: a, url: 'http://h/'}}]\n"
    );
    let keys: Vec<String> = problems_of(&yaml).into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["routes[1]", "routes[2].path"]);
}

#[test]
fn anchors_are_refused_through_the_loader() {
    let yaml = VALID.replace(
        "auth: { tokens: [\"t0ken\"] }",
        "auth: &a { tokens: [\"t0ken\"] }",
    );
    assert_problem(&yaml, "routes[0].auth", "anchors");
}

#[test]
fn a_key_given_twice_is_refused() {
    let yaml = VALID.replace(
        "    source: muapi",
        "    source: muapi\n    source: generic",
    );
    assert_problem(&yaml, "routes[0].source", "given twice");
}

#[test]
fn whole_numbers_are_digits_only() {
    for bad in ["-1", "1.5", "1_000", "0x10", "99999999999"] {
        let yaml = format!("{VALID}defaults: {{ max_in_flight: {bad} }}\n");
        assert_problem(&yaml, "defaults.max_in_flight", "");
    }
}

// ---- durations: positive where zero makes no sense -----------------------

#[test]
fn idle_timeout_is_positive() {
    let yaml = VALID.replace(
        "listen: \"127.0.0.1:0\"\nadmin",
        "listen: \"127.0.0.1:0\"\n  idle_timeout: 0s\nadmin",
    );
    assert_problem(&yaml, "server.idle_timeout", "positive");
}

#[test]
fn subscriber_overrides_are_bounded_and_positive() {
    let sub = |extra: &str| {
        VALID.replace(
            "        url: http://127.0.0.1:3000/x",
            &format!("        url: http://127.0.0.1:3000/x\n        {extra}"),
        )
    };
    assert_problem(
        &sub("timeout: 400d"),
        "routes[0].subscribers[0].timeout",
        "at most 365d",
    );
    assert_problem(
        &sub("timeout: 0s"),
        "routes[0].subscribers[0].timeout",
        "positive",
    );
    assert_problem(
        &sub("circuit_breaker: { cooldown: 366d }"),
        "routes[0].subscribers[0].circuit_breaker.cooldown",
        "at most 365d",
    );
    assert_problem(
        &sub("retry: { jitter: 1.5 }"),
        "routes[0].subscribers[0].retry.jitter",
        "[0, 1)",
    );
    assert_problem(
        &sub("retry: { max_elapsed: 400d }"),
        "routes[0].subscribers[0].retry.max_elapsed",
        "at most 365d",
    );
}

#[test]
fn inherited_values_are_checked_once_under_defaults() {
    // The defaults are wrong; a subscriber overriding something else does
    // not repeat the defaults' problem.
    let yaml = VALID.replace(
        "        url: http://127.0.0.1:3000/x",
        "        url: http://127.0.0.1:3000/x\n        retry: { jitter: 0.1 }",
    );
    let yaml = format!("{yaml}defaults: {{ retry: {{ multiplier: 0.5 }} }}\n");
    let problems = problems_of(&yaml);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["defaults.retry.multiplier"]);
}

// ---- store -------------------------------------------------------------------

const PG: &str = "postgres://hookrelay:pa55-w0rd-secret@db.internal:5432/hookrelay?sslmode=require";

fn with_store(store: &str) -> String {
    format!("{VALID}store:\n{store}")
}

#[test]
fn store_defaults() {
    let c = load(VALID);
    assert_eq!(c.store.retention, Duration::from_secs(24 * 3600));
    assert_eq!(
        c.store.dead_letter_retention,
        Duration::from_secs(14 * 86_400)
    );
    assert!(c.store.postgres.is_none());
}

#[test]
fn store_retentions_are_positive_and_bounded() {
    assert_problem(
        &with_store("  retention: 0s\n"),
        "store.retention",
        "positive",
    );
    assert_problem(
        &with_store("  retention: 400d\n"),
        "store.retention",
        "at most 365d",
    );
    assert_problem(
        &with_store("  dead_letter_retention: 0s\n"),
        "store.dead_letter_retention",
        "positive",
    );
    assert_problem(
        &with_store("  dead_letter_retention: 366d\n"),
        "store.dead_letter_retention",
        "at most 365d",
    );
}

#[test]
fn postgres_defaults_and_typed_settings() {
    let c = load(&with_store(&format!("  postgres:\n    url: \"{PG}\"\n")));
    let pg = c.store.postgres.as_ref().unwrap();
    assert_eq!(pg.url, PG);
    assert_eq!(pg.pool_size, 16);
    assert_eq!(pg.schema, "hookrelay");
    assert_eq!(pg.lease, Duration::from_secs(30));
    assert!(
        !format!("{c:?}").contains("pa55-w0rd-secret"),
        "Debug redacts the URL"
    );
}

#[test]
fn postgres_needs_a_url() {
    assert_problem(
        &with_store("  postgres: { pool_size: 4 }\n"),
        "store.postgres.url",
        "is required",
    );
}

#[test]
fn postgres_url_shape_is_checked_without_echoing_it() {
    let bad = [
        ("mysql://u:pa55-w0rd-secret@h/db", "postgres://"),
        ("postgres://u:pa55-w0rd-secret@/db", "no host"),
        ("postgres://u:pa55-w0rd-secret@h:99999/db", "port"),
        ("postgres://u:pa55-w0rd-secret@h:x/db", "port"),
        ("postgres://u:pa55-w0rd-secret@h ost/db", "spaces"),
        ("postgres://u:pa55-w0rd-secret@[::1/db", "`[`"),
    ];
    for (url, needle) in bad {
        let yaml = with_store(&format!("  postgres:\n    url: \"{url}\"\n"));
        assert_problem(&yaml, "store.postgres.url", needle);
        let text = format!("{:?}", problems_of(&yaml));
        assert!(!text.contains("pa55-w0rd-secret"), "{text}");
    }
    for good in [
        PG,
        "postgresql://db/hookrelay",
        "POSTGRES://u@h1:5432,h2:5433/db",
        "postgres://u@[::1]:5432/db",
        "postgresql:///db?host=/var/run/postgresql",
        "postgres://h",
    ] {
        load(&with_store(&format!("  postgres:\n    url: \"{good}\"\n")));
    }
}

#[test]
fn postgres_pool_size_is_bounded() {
    for bad in ["0", "1025"] {
        let yaml = with_store(&format!(
            "  postgres:\n    url: \"{PG}\"\n    pool_size: {bad}\n"
        ));
        assert_problem(&yaml, "store.postgres.pool_size", "from 1 to 1024");
    }
    load(&with_store(&format!(
        "  postgres:\n    url: \"{PG}\"\n    pool_size: 1024\n"
    )));
}

#[test]
fn postgres_schema_is_a_plain_identifier() {
    for bad in ["Hookrelay", "1abc", "a-b", "\"x y\"", "''", &"a".repeat(64)] {
        let yaml = with_store(&format!(
            "  postgres:\n    url: \"{PG}\"\n    schema: {bad}\n"
        ));
        assert_problem(&yaml, "store.postgres.schema", "SQL identifier");
    }
    let ok = "_a".to_string() + &"9".repeat(61);
    load(&with_store(&format!(
        "  postgres:\n    url: \"{PG}\"\n    schema: {ok}\n"
    )));
}

#[test]
fn postgres_lease_outlasts_every_attempt_timeout() {
    // The default timeout (15s) against a 10s lease: named by its key.
    let yaml = with_store(&format!("  postgres:\n    url: \"{PG}\"\n    lease: 10s\n"));
    assert_problem(&yaml, "store.postgres.lease", "defaults.timeout");
    // A subscriber's own timeout.
    let yaml = with_store(&format!("  postgres:\n    url: \"{PG}\"\n    lease: 30s\n")).replace(
        "        url: http://127.0.0.1:3000/x",
        "        url: http://127.0.0.1:3000/x\n        timeout: 30s",
    );
    assert_problem(
        &yaml,
        "store.postgres.lease",
        "routes[0].subscribers[0].timeout",
    );
    assert_problem(
        &with_store(&format!("  postgres:\n    url: \"{PG}\"\n    lease: 0s\n")),
        "store.postgres.lease",
        "positive",
    );
}

#[test]
fn postgres_ca_file_must_hold_pem_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-pem.crt");
    std::fs::write(&bad, "not a certificate").unwrap();
    for path in [bad.clone(), dir.path().join("missing.crt")] {
        let yaml = with_store(&format!(
            "  postgres:\n    url: \"{PG}\"\n    ca_file: {}\n",
            path.display()
        ));
        assert_problem(&yaml, "store.postgres.ca_file", "CA certificates");
    }
    let good = dir.path().join("ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(vec!["db.internal".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(&good, ca.pem()).unwrap();
    let c = load(&with_store(&format!(
        "  postgres:\n    url: \"{PG}\"\n    ca_file: {}\n",
        good.display()
    )));
    assert_eq!(c.store.postgres.unwrap().ca_file, Some(good));
}

#[test]
fn store_path_and_postgres_together_are_ambiguous() {
    let yaml = with_store(&format!("  path: ./data\n  postgres:\n    url: \"{PG}\"\n"));
    assert_problem(&yaml, "store.path", "ambiguous");
    // An empty `path` or `postgres` is not given.
    load(&with_store(&format!(
        "  path: ~\n  postgres:\n    url: \"{PG}\"\n"
    )));
    load(&with_store("  path: ./data\n  postgres:\n"));
    // Embedded-only tuning may stay.
    load(&with_store(&format!(
        "  max_batch: 64\n  postgres:\n    url: \"{PG}\"\n"
    )));
}

// ---- routes[].muapi ----------------------------------------------------------

const MUAPI: &str = "    muapi:\n      api_key: \"mk-sEcReT-api-key\"\n      public_url: https://hooks.example.com/hooks/muapi\n";

fn with_muapi(block: &str) -> String {
    VALID.replace("    subscribers:\n", &format!("{block}    subscribers:\n"))
}

#[test]
fn muapi_defaults_and_compiled_settings() {
    let c = load(&with_muapi(MUAPI));
    let m = c.routes[0].muapi.as_ref().unwrap();
    assert_eq!(m.base_url, "https://api.muapi.ai");
    assert_eq!(m.reconcile_after, Duration::from_secs(600));
    assert_eq!(m.poll.initial_interval, Duration::from_secs(30));
    assert_eq!(m.poll.max_interval, Duration::from_secs(600));
    assert_eq!(m.give_up_after, Duration::from_secs(48 * 3600));
    assert_eq!(m.max_polls_in_flight, 4);
    let rt = c.compile().unwrap();
    let route = rt.route_named("muapi").unwrap();
    let s = route.muapi.as_ref().unwrap();
    assert_eq!(s.api_key, "mk-sEcReT-api-key");
    assert_eq!(s.base_url.host(), Some("api.muapi.ai"));
    assert_eq!(s.public_url.path(), "/hooks/muapi");
    assert_eq!(rt.muapi_routes().count(), 1);
    assert!(
        !format!("{c:?} {rt:?}").contains("sEcReT"),
        "Debug redacts the key"
    );
}

#[test]
fn the_callback_url_carries_the_token_exactly() {
    // The ingress reads `?token=` as written or percent-decoded, with `+`
    // a plus sign: a space must travel as %20, a plus as %2B.
    let yaml = with_muapi(MUAPI).replace("tokens: [\"t0ken\"]", "tokens: [\"a b+c/d\"]");
    let runtime = load(&yaml).compile().unwrap();
    let (_, m) = runtime.muapi_routes().next().unwrap();
    assert_eq!(
        m.callback_url,
        "https://hooks.example.com/hooks/muapi?token=a%20b%2Bc%2Fd"
    );
    assert!(
        !format!("{m:?}").contains("a%20b"),
        "Debug redacts the callback URL"
    );
}

#[test]
fn muapi_only_on_muapi_routes() {
    let yaml = with_muapi(MUAPI).replace("source: muapi", "source: generic");
    assert_problem(&yaml, "routes[0].muapi", "only `source: muapi`");
}

#[test]
fn muapi_api_key_is_required_and_not_empty() {
    let yaml = with_muapi("    muapi:\n      public_url: https://h.example/hooks/muapi\n");
    assert_problem(&yaml, "routes[0].muapi.api_key", "is required");
    let yaml = with_muapi(&MUAPI.replace("mk-sEcReT-api-key", " "));
    assert_problem(&yaml, "routes[0].muapi.api_key", "is empty");
}

#[test]
fn muapi_base_url_is_absolute_http_without_query() {
    for (bad, needle) in [
        ("ftp://api.muapi.ai", "http://"),
        ("/api", "http://"),
        ("https://api.muapi.ai/?k=sEcReT", "query"),
    ] {
        let yaml = with_muapi(&format!("{MUAPI}      base_url: \"{bad}\"\n"));
        assert_problem(&yaml, "routes[0].muapi.base_url", needle);
        assert!(!format!("{:?}", problems_of(&yaml)).contains("sEcReT"));
    }
}

#[test]
fn muapi_public_url_is_the_routes_absolute_url_without_query() {
    let yaml = with_muapi("    muapi:\n      api_key: k\n");
    assert_problem(&yaml, "routes[0].muapi.public_url", "is required");
    for (bad, needle) in [
        ("https://hooks.example.com/other", "route's path"),
        ("https://hooks.example.com", "route's path"),
        ("https://hooks.example.com/hooks/muapi?token=x", "query"),
        ("https://hooks.example.com/hooks/muapi#x", "fragment"),
        ("hooks.example.com/hooks/muapi", "http"),
    ] {
        let yaml = with_muapi(&MUAPI.replace("https://hooks.example.com/hooks/muapi", bad));
        assert_problem(&yaml, "routes[0].muapi.public_url", needle);
    }
}

#[test]
fn muapi_poll_initial_is_not_above_max() {
    let yaml = with_muapi(&format!("{MUAPI}      poll: {{ initial_interval: 20m }}\n"));
    assert_problem(
        &yaml,
        "routes[0].muapi.poll.max_interval",
        "initial_interval",
    );
    let yaml = with_muapi(&format!("{MUAPI}      poll: {{ initial_interval: 0s }}\n"));
    assert_problem(&yaml, "routes[0].muapi.poll.initial_interval", "positive");
}

#[test]
fn muapi_give_up_after_outlasts_reconcile_after() {
    let yaml = with_muapi(&format!(
        "{MUAPI}      reconcile_after: 2h\n      give_up_after: 2h\n"
    ));
    assert_problem(
        &yaml,
        "routes[0].muapi.give_up_after",
        "longer than reconcile_after",
    );
    let yaml = with_muapi(&format!("{MUAPI}      reconcile_after: 0s\n"));
    assert_problem(&yaml, "routes[0].muapi.reconcile_after", "positive");
}

#[test]
fn muapi_max_polls_in_flight_is_bounded() {
    for bad in ["0", "257"] {
        let yaml = with_muapi(&format!("{MUAPI}      max_polls_in_flight: {bad}\n"));
        assert_problem(
            &yaml,
            "routes[0].muapi.max_polls_in_flight",
            "from 1 to 256",
        );
    }
    load(&with_muapi(&format!(
        "{MUAPI}      max_polls_in_flight: 256\n"
    )));
}

#[test]
fn muapi_routes_need_a_token_for_the_callback_url() {
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let yaml = with_muapi(MUAPI).replace(
        "auth: { tokens: [\"t0ken\"] }",
        &format!("auth: {{ standard_webhooks_secret: {whsec} }}"),
    );
    assert_problem(&yaml, "routes[0].auth.tokens", "at least one token");
}

#[test]
fn muapi_unknown_keys_are_named() {
    let yaml = with_muapi(&format!("{MUAPI}      pol: {{}}\n"));
    assert_problem(&yaml, "routes[0].muapi.pol", "unknown key");
}
