//! The user documentation (`README.md`, `docs/`) stays true where that is
//! cheap to check:
//! - every config key the decoder accepts has a row in
//!   `docs/configuration.md` saying whether a reload applies it, and every
//!   key documented there exists. The keys are read from the decoder
//!   itself: an unknown key makes it list the keys its block takes, so the
//!   test walks the whole schema that way and a key added to the decoder
//!   without documentation fails here;
//! - the example configs in `docs/configuration.md` are the shipped
//!   `config/hookrelay.yaml` verbatim, and load;
//! - every metric family on a live gateway's `/metrics` page is in
//!   `docs/metrics.md` with its type, its label names and its label values;
//! - the signature and event id examples are what the code computes;
//! - links stay inside the repository (none starts with `../`) and point at
//!   files that exist; README's two commands are intact.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hookrelay::config::ConfigError;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- the config schema, as the decoder knows it --------------------------------

/// One step of a key path: a mapping key, or the first item of a list.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Item,
}

/// The path as the decoder names it (`routes[0].subscribers[0].url`).
fn key_path(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Item => out.push_str("[0]"),
        }
    }
    out
}

/// The path as the documentation writes it (`routes[].subscribers[].url`).
fn doc_path(path: &[Step]) -> String {
    key_path(path).replace("[0]", "[]")
}

/// A small valid config the probes are put into.
fn base() -> Value {
    json!({
        "server": {"listen": "127.0.0.1:0"},
        "routes": [{
            "name": "r", "path": "/r", "source": "muapi",
            "auth": {"tokens": ["t"]},
            "subscribers": [{"name": "s", "url": "http://127.0.0.1:9/"}]
        }]
    })
}

/// `root` with `value` at `path` (missing mappings and lists are created).
fn with_value_at(mut root: Value, path: &[Step], value: Value) -> Value {
    let mut node = &mut root;
    for (i, step) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        match step {
            Step::Key(key) => {
                if !node.is_object() {
                    *node = json!({});
                }
                let map = node.as_object_mut().unwrap();
                if last {
                    map.insert(key.clone(), value);
                    return root;
                }
                node = map.entry(key.clone()).or_insert(json!({}));
            }
            Step::Item => {
                if node.as_array().is_none_or(|a| a.is_empty()) {
                    *node = json!([{}]);
                }
                let first = &mut node.as_array_mut().unwrap()[0];
                if last {
                    *first = value;
                    return root;
                }
                node = first;
            }
        }
    }
    root
}

/// The keys the block at `path` takes, from the decoder's answer to an
/// unknown key put there; `None` when `path` holds no block of keys.
fn block_keys(path: &[Step]) -> Option<Vec<String>> {
    const PROBE: &str = "zz_probe";
    let doc = if path.is_empty() {
        let mut doc = base();
        doc[PROBE] = json!("x");
        doc
    } else {
        let mut probe = serde_json::Map::new();
        probe.insert(PROBE.to_string(), json!("x"));
        with_value_at(base(), path, Value::Object(probe))
    };
    // JSON is YAML (flow style).
    let problems = match hookrelay::Config::from_yaml(&doc.to_string(), &|_| Some("x".into())) {
        Err(ConfigError::Invalid(problems)) => problems,
        _ => return None,
    };
    let probe_key = if path.is_empty() {
        PROBE.to_string()
    } else {
        format!("{}.{PROBE}", key_path(path))
    };
    let message = problems
        .iter()
        .find(|p| p.key == probe_key)?
        .message
        .strip_prefix("unknown key; this block takes ")?
        .to_string();
    let list = message.split(" (line").next().unwrap();
    Some(list.split(", ").map(str::to_string).collect())
}

/// Every key path the decoder accepts, as the docs write it, and whether
/// it holds a block (a mapping of keys, or a list of them).
fn config_keys() -> BTreeMap<String, bool> {
    fn walk(path: Vec<Step>, out: &mut BTreeMap<String, bool>) {
        let keys =
            block_keys(&path).unwrap_or_else(|| panic!("{} is not a block", key_path(&path)));
        for key in keys {
            let mut child = path.clone();
            child.push(Step::Key(key));
            let mut item = child.clone();
            item.push(Step::Item);
            if block_keys(&child).is_some() {
                out.insert(doc_path(&child), true);
                walk(child, out);
            } else if block_keys(&item).is_some() {
                out.insert(doc_path(&child), true);
                walk(item, out);
            } else {
                out.insert(doc_path(&child), false);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(Vec::new(), &mut out);
    out
}

/// The first cell of every table row whose first cell is one `code` span.
fn documented_rows(doc: &str) -> BTreeMap<String, String> {
    doc.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `")?;
            let end = rest.find("` |")?;
            Some((rest[..end].to_string(), line.to_string()))
        })
        .collect()
}

#[test]
fn every_config_key_is_documented_with_its_reload_behaviour() {
    let keys = config_keys();
    // The walk reached the deepest blocks: it is not vacuous.
    for key in [
        "server.max_unauthenticated_body_bytes_per_connection",
        "store.postgres.lease",
        "routes[].muapi.poll.max_interval",
        "routes[].subscribers[].retry.jitter",
        "routes[].subscribers[].when.json",
        "defaults.circuit_breaker.cooldown",
    ] {
        assert_eq!(keys.get(key), Some(&false), "the schema walk missed {key}");
    }
    assert!(keys.len() >= 80, "only {} keys found: {keys:?}", keys.len());

    let doc = read("docs/configuration.md");
    let rows = documented_rows(&doc);
    let mut missing = Vec::new();
    for (key, block) in &keys {
        match rows.get(key) {
            None => missing.push(key.clone()),
            Some(row) if !block => {
                let reload = row.rsplit('|').nth(1).unwrap_or_default();
                assert!(
                    reload.contains("live") || reload.contains("restart"),
                    "docs/configuration.md: the row of `{key}` must end with whether a reload \
                     applies it (live or restart): {row}"
                );
            }
            Some(_) => {}
        }
    }
    assert!(
        missing.is_empty(),
        "config keys the decoder accepts but docs/configuration.md has no table row for: {missing:?}"
    );
    let unknown: Vec<&String> = rows.keys().filter(|k| !keys.contains_key(*k)).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys the decoder does not take: {unknown:?}"
    );
}

/// The fenced blocks of `lang` in a Markdown text, each with the line
/// before its opening fence.
fn fenced(doc: &str, lang: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines().peekable();
    let mut before = "";
    while let Some(line) = lines.next() {
        if line.trim_start() == format!("```{lang}") {
            let mut body = String::new();
            for inner in lines.by_ref() {
                if inner.trim_start() == "```" {
                    break;
                }
                body.push_str(inner);
                body.push('\n');
            }
            out.push((before.to_string(), body));
        }
        before = line;
    }
    out
}

fn stand_in(name: &str) -> Option<String> {
    Some(if name.ends_with("DATABASE_URL") {
        "postgres://hookrelay:stand-in@db.example.com:5432/hookrelay?sslmode=require".into()
    } else {
        "whsec_ZHVtbXktc2VjcmV0LWZvci10ZXN0cy0xMjM0".into()
    })
}

#[test]
fn the_example_configs_in_the_docs_are_the_shipped_one_and_load() {
    let doc = read("docs/configuration.md");
    let blocks = fenced(&doc, "yaml");
    let shipped = read("config/hookrelay.yaml");
    assert!(
        blocks.iter().any(|(_, body)| *body == shipped),
        "docs/configuration.md must show config/hookrelay.yaml verbatim (copy it again)"
    );
    let checked: Vec<&String> = blocks
        .iter()
        .filter(|(before, _)| before.starts_with("<!-- checked: a complete config"))
        .map(|(_, body)| body)
        .collect();
    assert!(
        !checked.is_empty(),
        "the PostgreSQL example is marked as checked"
    );
    for body in checked {
        let config = hookrelay::Config::from_yaml(body, &stand_in)
            .unwrap_or_else(|e| panic!("a config in docs/configuration.md: {e}\n{body}"));
        assert!(config.store.postgres.is_some(), "the PostgreSQL example");
    }
}

// ---- metrics -------------------------------------------------------------------

async fn http(addr: std::net::SocketAddr, request: String) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8(answer).expect("UTF-8 answer")
}

/// Families on a `/metrics` page: name → (type, label → values), without
/// the histogram's `le`.
type Families = BTreeMap<String, (String, BTreeMap<String, BTreeSet<String>>)>;

fn families(page: &str) -> Families {
    let mut out = Families::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap().to_string();
            let kind = words.next().unwrap().to_string();
            out.insert(name, (kind, BTreeMap::new()));
        }
    }
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..end];
        let family = if out.contains_key(name) {
            name
        } else {
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| out.contains_key(*f)))
                .unwrap_or(name)
        };
        let (Some((_, labels)), Some(open)) = (out.get_mut(family), line.find('{')) else {
            continue;
        };
        let close = line.rfind('}').unwrap();
        for pair in line[open + 1..close].split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            if k != "le" {
                labels
                    .entry(k.to_string())
                    .or_default()
                    .insert(v.trim_matches('"').to_string());
            }
        }
    }
    out
}

/// Every `` `hookrelay_name{a,b}` `` mention in a text: name → label sets.
fn documented_metrics(doc: &str) -> BTreeMap<String, Vec<BTreeSet<String>>> {
    let mut out: BTreeMap<String, Vec<BTreeSet<String>>> = BTreeMap::new();
    let mut spans = Vec::new();
    for prefix in ["`hookrelay_", "`process_"] {
        let mut rest = doc;
        while let Some(pos) = rest.find(prefix) {
            let tail = &rest[pos + 1..];
            let end = tail.find('`').unwrap_or(tail.len());
            spans.push(&tail[..end]);
            rest = &tail[(end + 1).min(tail.len())..];
        }
    }
    for span in spans {
        let (name, labels) = match span.split_once('{') {
            Some((name, rest)) => (
                name,
                rest.trim_end_matches('}')
                    .split(',')
                    .filter(|l| !l.contains('=') && !l.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            None => (span, BTreeSet::new()),
        };
        out.entry(name.to_string()).or_default().push(labels);
    }
    out
}

#[tokio::test]
async fn every_metric_on_a_live_gateway_is_documented() {
    let store = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
store:
  path: "{}"
routes:
  - name: muapi
    path: /hooks/muapi
    source: muapi
    auth: {{ tokens: [t] }}
    muapi:
      api_key: k
      base_url: http://127.0.0.1:9
      public_url: http://127.0.0.1/hooks/muapi
    subscribers:
      - name: app
        url: http://127.0.0.1:9/app
"#,
        store.path().display()
    );
    let config = hookrelay::Config::from_yaml(&yaml, &|_| None).unwrap();
    let gw = hookrelay::Gateway::start(config.clone()).await.unwrap();
    // A refused callback (nothing to deliver) and a reload make the
    // families that appear on first use appear.
    let body = r#"{"id":"docs-1","status":"completed"}"#;
    let refused = http(
        gw.ingress_addr,
        format!(
            "POST /hooks/muapi HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let not_found = http(
        gw.ingress_addr,
        "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .into(),
    )
    .await;
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
    gw.reload(config).await.expect("reload");

    let wanted = [
        "hookrelay_ingress_request_duration_seconds",
        "hookrelay_config_reloads_total",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let answer = http(
            gw.admin_addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
        )
        .await;
        let page = answer.split_once("\r\n\r\n").expect("a body").1.to_string();
        let found = families(&page);
        if wanted.iter().all(|w| found.contains_key(*w)) {
            break page;
        }
        assert!(Instant::now() < deadline, "families missing from {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    gw.shutdown().await;

    let doc = read("docs/metrics.md");
    let documented = documented_metrics(&doc);
    let rows = documented_rows(&doc);
    let found = families(&page);
    assert!(found.len() >= 15, "suspiciously few families: {found:?}");
    for (name, (kind, labels)) in &found {
        let Some(mentions) = documented.get(name) else {
            panic!("docs/metrics.md does not mention `{name}` ({kind})");
        };
        if !name.starts_with("hookrelay_") {
            continue;
        }
        let names: BTreeSet<String> = labels.keys().cloned().collect();
        assert!(
            mentions.contains(&names),
            "docs/metrics.md must show `{name}` with its labels {names:?}"
        );
        assert!(
            mentions.iter().all(|m| m.is_empty() || *m == names),
            "docs/metrics.md shows `{name}` with other labels than {names:?}"
        );
        let row = rows
            .iter()
            .find(|(key, _)| key.split('{').next() == Some(name))
            .map(|(_, row)| row)
            .unwrap_or_else(|| panic!("docs/metrics.md has no table row for `{name}`"));
        assert!(
            row.contains(&format!("| {kind} |")),
            "docs/metrics.md: `{name}` is a {kind}: {row}"
        );
        for (label, values) in labels {
            if matches!(label.as_str(), "route" | "subscriber") {
                continue;
            }
            for value in values {
                assert!(
                    row.contains(&format!("`{value}`")),
                    "docs/metrics.md: the row of `{name}` does not list {label} value `{value}`"
                );
            }
        }
    }
}

// ---- examples that the code computes -------------------------------------------

#[test]
fn the_signature_and_event_id_examples_are_what_the_code_computes() {
    use hookrelay::intake::event_digest;
    use hookrelay::store::EventId;

    let delivery = read("docs/delivery.md");
    let key = hookrelay::signing::decode_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let id = EventId(event_digest("muapi", "task-1\ncompleted")).to_string();
    let body = r#"{"id":"task-1","status":"completed","outputs":["https://cdn.example/out.png"]}"#;
    let signature =
        hookrelay::signing::sign(std::slice::from_ref(&key), &id, 1764242400, body.as_bytes());
    for line in [
        format!("webhook-id: {id}"),
        "webhook-timestamp: 1764242400".to_string(),
        format!("webhook-signature: {signature}"),
        body.to_string(),
        format!("the {} body bytes", body.len()),
        format!("the {} bytes decoded", key.len()),
    ] {
        assert!(
            delivery.contains(&line),
            "docs/delivery.md: the worked example must say {line:?}"
        );
    }
    // The event id of the README's and http.md's sample callback.
    let sample = EventId(event_digest("muapi", "6a1e0c4e-3f1b-4a7e\ncompleted")).to_string();
    for file in ["docs/http.md", "docs/admin-api.md"] {
        assert!(
            read(file).contains(&sample),
            "{file}: the sample callback's event id is {sample}"
        );
    }
}

// ---- links ---------------------------------------------------------------------

/// Link targets in a Markdown text, outside fenced code blocks.
fn links(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(pos) = rest.find("](") {
            let tail = &rest[pos + 2..];
            let end = tail.find(')').unwrap_or(tail.len());
            out.push(tail[..end].to_string());
            rest = &tail[end..];
        }
        let mut rest = line;
        while let Some(pos) = rest.find("href=\"") {
            let tail = &rest[pos + 6..];
            let end = tail.find('"').unwrap_or(tail.len());
            out.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn readme_and_docs_link_only_inside_the_repository() {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 6, "docs/: {docs:?}");
    files.extend(docs);
    let root = repo().canonicalize().unwrap();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let at = file.strip_prefix(repo()).unwrap().display();
        for target in links(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
                || target.starts_with('#')
            {
                continue;
            }
            assert!(
                !target.starts_with("../"),
                "{at}: links to {target}; README and docs link only inside the repository, \
                 without `../`"
            );
            let path = target.split('#').next().unwrap();
            let resolved = file.parent().unwrap().join(path);
            let resolved = resolved
                .canonicalize()
                .unwrap_or_else(|_| panic!("{at}: the link {target} points at nothing"));
            assert!(
                resolved.starts_with(&root),
                "{at}: the link {target} leaves the repository"
            );
        }
    }
}

#[test]
fn readme_keeps_its_two_commands_and_lists_the_docs() {
    let readme = read("README.md");
    for block in [
        "```sh\ncargo run --release -- run --config config/hookrelay.yaml\n```",
        "```sh\ncargo test\n```",
    ] {
        assert!(readme.contains(block), "README.md lost {block:?}");
    }
    for doc in [
        "docs/configuration.md",
        "docs/http.md",
        "docs/delivery.md",
        "docs/admin-api.md",
        "docs/metrics.md",
    ] {
        assert!(
            readme.contains(&format!("]({doc})")),
            "README.md's Documentation list must link {doc}"
        );
        assert!(Path::new(&repo().join(doc)).exists(), "{doc}");
    }
}
