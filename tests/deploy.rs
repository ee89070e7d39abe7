//! The deploy files (`deploy/`) must not rot: every Kubernetes manifest
//! parses and names itself, every hookrelay config they (and the container
//! image) carry passes `hookrelay check-config`, the manifests agree with
//! their configs (ports, paths, env, grace), and every metric the alert
//! rules and the Grafana dashboard query is on a live gateway's `/metrics`.
//!
//! promtool, systemd-analyze and kustomize checks of the same files run in
//! `.ci/run`.

#[path = "common/pg.rs"]
mod pg;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.yaml`/`.yml` file under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The documents of a (possibly multi-document) YAML file, split on `\n---`;
/// empty documents are skipped.
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    text.split("\n---")
        .map(|chunk| chunk.strip_prefix("---").unwrap_or(chunk))
        .filter_map(|chunk| {
            let doc: Value = serde_saphyr::from_str(chunk)
                .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()));
            (!doc.is_null()).then_some(doc)
        })
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Every Kubernetes manifest, with the file it came from.
fn manifests() -> Vec<(PathBuf, Value)> {
    let root = repo().join("deploy/kubernetes");
    let files = yaml_files(&root);
    assert!(!files.is_empty(), "no manifests under {}", root.display());
    files
        .into_iter()
        .flat_map(|f| documents(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

/// `${NAME}` references in a config (not `$${...}`, which is a literal).
fn env_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(pos) = rest.find("${") {
        let escaped = rest[..pos].ends_with('$');
        let tail = &rest[pos + 2..];
        let end = tail.find('}').expect("unclosed ${ in a config");
        if !escaped {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end + 1..];
    }
    out
}

/// A value for `${NAME}` that every place the deploy configs use one accepts:
/// a `whsec_` secret (valid as a token too), a database URL or a URL.
fn dummy_value(name: &str) -> String {
    if name.ends_with("DATABASE_URL") {
        "postgres://hookrelay:stand-in@db.example.com:5432/hookrelay?sslmode=require".into()
    } else if name.ends_with("_URL") {
        "http://127.0.0.1:3000/webhooks/muapi".into()
    } else {
        // "whsec_" + base64 of 24 bytes.
        "whsec_ZHVtbXktc2VjcmV0LWZvci10ZXN0cy0xMjM0".into()
    }
}

/// The hookrelay configs the deploy files ship: each ConfigMap's
/// `hookrelay.yaml` and the container image's built-in config.
fn shipped_configs() -> Vec<(String, String)> {
    let mut configs: Vec<(String, String)> = manifests()
        .into_iter()
        .filter(|(_, doc)| str_at(doc, "/kind") == Some("ConfigMap"))
        .filter_map(|(file, doc)| {
            let text = str_at(&doc, "/data/hookrelay.yaml")?.to_string();
            let name = str_at(&doc, "/metadata/name").unwrap_or("?");
            Some((format!("{} ({name})", file.display()), text))
        })
        .collect();
    let docker = repo().join("deploy/docker/hookrelay.yaml");
    configs.push((docker.display().to_string(), read(&docker)));
    configs
}

/// A throwaway certificate in `dir`, and `text` with `/etc/hookrelay/tls/`
/// pointing there instead (check-config loads the PEM files).
fn with_test_tls(text: &str, dir: &Path) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), cert.key_pair.serialize_pem()).unwrap();
    text.replace("/etc/hookrelay/tls/", &format!("{}/", dir.display()))
}

fn check_config(path: &Path, env: &BTreeMap<String, String>) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["check-config", "--config"])
        .arg(path)
        .env_clear()
        .envs(env)
        .output()
        .expect("run hookrelay check-config")
}

#[test]
fn every_manifest_parses_and_names_itself() {
    let all = manifests();
    for (file, doc) in &all {
        let at = file.display();
        let kind = str_at(doc, "/kind").unwrap_or_default();
        assert!(
            str_at(doc, "/apiVersion").is_some_and(|v| !v.is_empty()),
            "{at}: a document has no apiVersion"
        );
        assert!(!kind.is_empty(), "{at}: a document has no kind");
        if kind != "Kustomization" {
            assert!(
                str_at(doc, "/metadata/name").is_some_and(|v| !v.is_empty()),
                "{at}: a {kind} has no metadata.name"
            );
        }
    }
    let kinds: BTreeSet<&str> = all.iter().filter_map(|(_, d)| str_at(d, "/kind")).collect();
    for kind in [
        "Kustomization",
        "Deployment",
        "ConfigMap",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
        "Certificate",
        "PodMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(kind), "no {kind} under deploy/kubernetes");
    }
}

#[test]
fn each_kustomization_lists_exactly_its_manifests() {
    for variant in ["sidecar", "edge", "edge-ha", "monitoring"] {
        let dir = repo().join("deploy/kubernetes").join(variant);
        let kustomization = documents(&dir.join("kustomization.yaml"));
        assert_eq!(kustomization.len(), 1, "{variant}/kustomization.yaml");
        let listed: BTreeSet<String> = array_at(&kustomization[0], "/resources")
            .iter()
            .map(|r| r.as_str().expect("resource paths are strings").to_string())
            .collect();
        let present: BTreeSet<String> = yaml_files(&dir)
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .filter(|name| name != "kustomization.yaml")
            .collect();
        assert_eq!(
            listed, present,
            "{variant}/kustomization.yaml must list every manifest of its folder, and only those"
        );
    }
}

#[test]
fn every_shipped_config_passes_check_config() {
    let configs = shipped_configs();
    assert!(
        configs.len() >= 4,
        "expected the sidecar, edge and edge-ha ConfigMaps and the image's config, found {configs:?}"
    );
    for (origin, text) in configs {
        let dir = tempfile::tempdir().unwrap();
        let text = with_test_tls(&text, dir.path());
        let path = dir.path().join("hookrelay.yaml");
        std::fs::write(&path, &text).unwrap();
        let vars = env_vars(&text);
        assert!(
            !vars.is_empty(),
            "{origin}: secrets belong in ${{VARIABLES}}, not in the file"
        );
        let env: BTreeMap<String, String> =
            vars.iter().map(|v| (v.clone(), dummy_value(v))).collect();
        let out = check_config(&path, &env);
        assert!(
            out.status.success(),
            "{origin}: check-config failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The check is not vacuous: without the environment it must fail.
        let out = check_config(&path, &BTreeMap::new());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{origin}: check-config accepted the config with its variables unset"
        );
    }
}

/// The files a container sees under each mount path, as far as the
/// manifests tell (ConfigMap keys, listed Secret items).
fn mounted_files(
    pod: &Value,
    container: &Value,
    config_maps: &BTreeMap<String, Value>,
) -> BTreeSet<String> {
    let volumes: BTreeMap<&str, &Value> = array_at(pod, "/volumes")
        .iter()
        .filter_map(|v| Some((str_at(v, "/name")?, v)))
        .collect();
    let source_files = |source: &Value| -> Vec<String> {
        let items = array_at(source, "/items");
        if !items.is_empty() {
            return items
                .iter()
                .filter_map(|i| str_at(i, "/path").map(str::to_string))
                .collect();
        }
        let name = str_at(source, "/name").unwrap_or_default();
        config_maps
            .get(name)
            .and_then(|cm| cm.pointer("/data")?.as_object())
            .map(|data| data.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut files = BTreeSet::new();
    for mount in array_at(container, "/volumeMounts") {
        let (Some(name), Some(at)) = (str_at(mount, "/name"), str_at(mount, "/mountPath")) else {
            continue;
        };
        let Some(volume) = volumes.get(name) else {
            panic!("volumeMount {name} has no volume")
        };
        let mut names = Vec::new();
        for key in ["configMap", "secret"] {
            if let Some(source) = volume.get(key) {
                names.extend(source_files(source));
            }
        }
        for source in array_at(volume, "/projected/sources") {
            for key in ["configMap", "secret"] {
                if let Some(s) = source.get(key) {
                    names.extend(source_files(s));
                }
            }
        }
        if volume.get("persistentVolumeClaim").is_some() {
            names.push(String::new());
        }
        for n in names {
            files.insert(format!("{}/{n}", at.trim_end_matches('/')));
        }
    }
    files
}

fn port_of(listen: &str) -> u64 {
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {listen}"))
}

fn named_port(container: &Value, name: &str) -> Option<u64> {
    array_at(container, "/ports")
        .iter()
        .find(|p| str_at(p, "/name") == Some(name))
        .and_then(|p| p.pointer("/containerPort")?.as_u64())
}

/// The manifests agree with the config they mount: every `${VAR}` is in the
/// container's environment, every file the config names is mounted, the
/// probes, annotations and Service hit the configured ports, the grace
/// period outlasts `shutdown_grace`, and one store means one replica.
#[test]
fn deployments_agree_with_their_configs() {
    let all = manifests();
    let mut deployments = 0;
    for (file, deployment) in all
        .iter()
        .filter(|(_, d)| str_at(d, "/kind") == Some("Deployment"))
    {
        let dir = file.parent().unwrap();
        let here = |kind: &str| -> Vec<&Value> {
            all.iter()
                .filter(|(f, d)| f.parent() == Some(dir) && str_at(d, "/kind") == Some(kind))
                .map(|(_, d)| d)
                .collect()
        };
        let config_maps: BTreeMap<String, Value> = here("ConfigMap")
            .into_iter()
            .map(|cm| {
                (
                    str_at(cm, "/metadata/name").unwrap().to_string(),
                    cm.clone(),
                )
            })
            .collect();
        let at = format!(
            "{} ({})",
            file.display(),
            str_at(deployment, "/metadata/name").unwrap()
        );
        let template = deployment.pointer("/spec/template").expect("pod template");
        let pod = template.pointer("/spec").expect("pod spec");
        let containers = array_at(pod, "/containers");
        let Some(gateway) = containers
            .iter()
            .find(|c| str_at(c, "/image").is_some_and(|i| i.starts_with("hookrelay")))
        else {
            continue;
        };
        deployments += 1;

        // The config it runs.
        let args: Vec<&str> = array_at(gateway, "/args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            args,
            ["run", "--config", "/etc/hookrelay/hookrelay.yaml"],
            "{at}: hookrelay's args"
        );
        let files = mounted_files(pod, gateway, &config_maps);
        assert!(
            files.contains("/etc/hookrelay/hookrelay.yaml"),
            "{at}: /etc/hookrelay/hookrelay.yaml is not mounted (mounted: {files:?})"
        );
        let mounted_maps: Vec<&Value> = config_maps
            .values()
            .filter(|cm| {
                let name = str_at(cm, "/metadata/name").unwrap();
                array_at(pod, "/volumes").iter().any(|v| {
                    str_at(v, "/configMap/name") == Some(name)
                        || array_at(v, "/projected/sources")
                            .iter()
                            .any(|s| str_at(s, "/configMap/name") == Some(name))
                })
            })
            .collect();
        assert_eq!(
            mounted_maps.len(),
            1,
            "{at}: expected one mounted ConfigMap"
        );
        let text = str_at(mounted_maps[0], "/data/hookrelay.yaml").expect("hookrelay.yaml key");
        let raw: Value = serde_saphyr::from_str(text).unwrap();
        let tls_dir = tempfile::tempdir().unwrap();
        let lookup = |name: &str| Some(dummy_value(name));
        let config = hookrelay::Config::from_yaml(&with_test_tls(text, tls_dir.path()), &lookup)
            .unwrap_or_else(|e| panic!("{at}: {e}"));

        // Every ${VAR} comes from the container's environment.
        let env: BTreeSet<&str> = array_at(gateway, "/env")
            .iter()
            .filter_map(|e| str_at(e, "/name"))
            .collect();
        for var in env_vars(text) {
            assert!(
                env.contains(var.as_str()),
                "{at}: ${{{var}}} is not in hookrelay's env"
            );
            // Every variable these configs use holds a secret (or a URL
            // with a password): it comes from a Secret, never a literal.
            let entry = array_at(gateway, "/env")
                .iter()
                .find(|e| str_at(e, "/name") == Some(var.as_str()))
                .unwrap();
            assert!(
                entry.pointer("/valueFrom/secretKeyRef/name").is_some()
                    && str_at(entry, "/valueFrom/secretKeyRef/key") == Some(var.as_str()),
                "{at}: ${{{var}}} must come from the Secret's key {var} (valueFrom.secretKeyRef)"
            );
        }

        // Every file the config names is mounted.
        for key in ["/server/tls/cert", "/server/tls/key"] {
            if let Some(path) = str_at(&raw, key) {
                assert!(
                    files.contains(path),
                    "{at}: {key} {path} is not mounted ({files:?})"
                );
            }
        }
        // The store: the embedded one on a mounted volume, or PostgreSQL
        // with no volume at all and its URL (it holds a password) from a
        // Secret.
        let claims = array_at(pod, "/volumes")
            .iter()
            .filter(|v| v.get("persistentVolumeClaim").is_some())
            .count();
        if config.store.postgres.is_none() {
            let store = str_at(&raw, "/store/path").expect("store.path");
            assert!(
                files.contains(&format!("{}/", store.trim_end_matches('/'))),
                "{at}: store.path {store} is not a mounted volume ({files:?})"
            );
        } else {
            assert_eq!(claims, 0, "{at}: a PostgreSQL store needs no volume");
            assert!(
                here("PersistentVolumeClaim").is_empty(),
                "{at}: no PersistentVolumeClaim beside a PostgreSQL store"
            );
            let url = str_at(&raw, "/store/postgres/url").expect("store.postgres.url");
            let vars = env_vars(url);
            assert!(
                vars.len() == 1 && url == format!("${{{}}}", vars.first().unwrap()),
                "{at}: store.postgres.url must be one ${{VARIABLE}} (from the Secret)"
            );
        }

        // Ports: probes and annotations on the admin port, the Service on the ingress port.
        let admin = port_of(&config.admin.listen.to_string());
        assert_eq!(
            named_port(gateway, "admin"),
            Some(admin),
            "{at}: port `admin`"
        );
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            let p = gateway
                .get(probe)
                .unwrap_or_else(|| panic!("{at}: no {probe}"));
            assert_eq!(str_at(p, "/httpGet/path"), Some(path), "{at}: {probe}");
            assert_eq!(str_at(p, "/httpGet/port"), Some("admin"), "{at}: {probe}");
        }
        let annotations = template
            .pointer("/metadata/annotations")
            .expect("annotations");
        assert_eq!(
            str_at(annotations, "/prometheus.io~1scrape"),
            Some("true"),
            "{at}"
        );
        assert_eq!(
            str_at(annotations, "/prometheus.io~1port"),
            Some(admin.to_string().as_str()),
            "{at}"
        );
        assert_eq!(
            str_at(annotations, "/prometheus.io~1path"),
            Some("/metrics"),
            "{at}"
        );
        let ingress = port_of(&config.server.listen.to_string());
        let services = here("Service");
        assert!(!services.is_empty(), "{at}: no Service beside it");
        for service in services {
            for port in array_at(service, "/spec/ports") {
                let target = str_at(port, "/targetPort").expect("named targetPort");
                assert_eq!(
                    named_port(gateway, target),
                    Some(ingress),
                    "{at}: Service port {target} must reach server.listen"
                );
            }
        }

        // Shutdown: the grace period outlasts a preStop pause plus
        // shutdown_grace.
        let pause = match gateway.pointer("/lifecycle/preStop/exec/command") {
            None => 0,
            Some(command) => {
                let words: Vec<&str> = command
                    .as_array()
                    .expect("preStop command")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                match words.as_slice() {
                    ["sleep", secs] => secs.parse::<u64>().expect("sleep seconds"),
                    other => panic!("{at}: preStop is not a plain sleep: {other:?}"),
                }
            }
        };
        let grace = pod
            .pointer("/terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .expect("terminationGracePeriodSeconds");
        assert!(
            Duration::from_secs(grace) > Duration::from_secs(pause) + config.shutdown_grace,
            "{at}: terminationGracePeriodSeconds {grace} must exceed the preStop pause \
             {pause}s plus shutdown_grace {:?}",
            config.shutdown_grace
        );

        // Replicas: one embedded store is one process; PostgreSQL takes
        // several, replaced one at a time and kept up through drains.
        let pod_labels = template.pointer("/metadata/labels").expect("pod labels");
        let selects_pods = |selector: Option<&Value>| {
            let labels = selector
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty());
            labels.is_some_and(|m| m.iter().all(|(k, v)| pod_labels.get(k) == Some(v)))
        };
        let replicas = deployment
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .expect("replicas");
        let strategy = str_at(deployment, "/spec/strategy/type");
        if config.store.postgres.is_none() {
            assert_eq!(replicas, 1, "{at}: one redb store, one process");
            assert_eq!(
                strategy,
                Some("Recreate"),
                "{at}: one redb store, one process"
            );
        } else {
            assert!(replicas >= 2, "{at}: PostgreSQL is for several replicas");
            assert_eq!(strategy, Some("RollingUpdate"), "{at}");
            let rolling = |key: &str| {
                deployment
                    .pointer(&format!("/spec/strategy/rollingUpdate/{key}"))
                    .and_then(Value::as_u64)
            };
            assert_eq!(
                rolling("maxUnavailable"),
                Some(0),
                "{at}: a rollout must never drop below the ready replicas"
            );
            assert!(
                rolling("maxSurge").is_some_and(|n| n >= 1),
                "{at}: with maxUnavailable 0, a rollout needs maxSurge >= 1"
            );
            let budgets = here("PodDisruptionBudget");
            assert_eq!(budgets.len(), 1, "{at}: one PodDisruptionBudget beside it");
            let budget = budgets[0];
            assert!(
                selects_pods(budget.pointer("/spec/selector/matchLabels")),
                "{at}: the PodDisruptionBudget must select these pods"
            );
            let min = budget.pointer("/spec/minAvailable").and_then(Value::as_u64);
            assert!(
                min.is_some_and(|n| n >= 1 && n < replicas),
                "{at}: minAvailable must keep some replicas up and still let a drain proceed"
            );
            let spread = array_at(pod, "/topologySpreadConstraints");
            assert!(
                spread.iter().any(|c| {
                    str_at(c, "/topologyKey") == Some("kubernetes.io/hostname")
                        && selects_pods(c.pointer("/labelSelector/matchLabels"))
                }),
                "{at}: replicas must be spread across nodes"
            );
            assert!(
                pause > 0,
                "{at}: a preStop pause lets the endpoints drop the pod first"
            );
        }

        // Hardening.
        let security = gateway.get("securityContext").expect("securityContext");
        assert_eq!(
            security.get("runAsNonRoot"),
            Some(&Value::Bool(true)),
            "{at}"
        );
        assert_eq!(
            security.get("readOnlyRootFilesystem"),
            Some(&Value::Bool(true)),
            "{at}"
        );
        assert!(
            array_at(security, "/capabilities/drop").contains(&Value::from("ALL")),
            "{at}: drop ALL capabilities"
        );

        // Scraped by the PodMonitor, as job="hookrelay" (what the alerts select).
        let labels = pod_labels;
        for (_, monitor) in all
            .iter()
            .filter(|(_, d)| str_at(d, "/kind") == Some("PodMonitor"))
        {
            let selector = monitor
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .expect("matchLabels");
            for (k, v) in selector {
                assert_eq!(labels.get(k), Some(v), "{at}: PodMonitor selects {k}={v}");
            }
            for endpoint in array_at(monitor, "/spec/podMetricsEndpoints") {
                let port = str_at(endpoint, "/port").expect("endpoint port");
                assert_eq!(
                    named_port(gateway, port),
                    Some(admin),
                    "{at}: PodMonitor port"
                );
                assert_eq!(str_at(endpoint, "/path"), Some("/metrics"));
            }
            let job_label = str_at(monitor, "/spec/jobLabel").expect("jobLabel");
            assert_eq!(
                labels.get(job_label).and_then(Value::as_str),
                Some("hookrelay"),
                "{at}: the alerts select job=\"hookrelay\""
            );
        }
    }
    assert_eq!(
        deployments, 3,
        "expected the sidecar, edge and edge-ha Deployments"
    );
}

#[test]
fn prometheus_rule_matches_alerts_file() {
    let alerts = documents(&repo().join("deploy/prometheus/alerts.yaml"));
    let rule = documents(&repo().join("deploy/kubernetes/monitoring/prometheusrule.yaml"));
    assert_eq!(
        rule[0].pointer("/spec/groups"),
        alerts[0].pointer("/groups"),
        "prometheusrule.yaml's spec.groups must equal deploy/prometheus/alerts.yaml's groups"
    );
}

#[test]
fn dockerfile_matches_the_repository() {
    let dockerfile = read(&repo().join("deploy/docker/Dockerfile"));
    let ignore = read(&repo().join(".dockerignore"));
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    for needed in ["target", "data", ".git"] {
        assert!(
            ignored.contains(&needed),
            ".dockerignore must exclude {needed}/"
        );
    }
    let instructions: Vec<String> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let with = |word: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter_map(|l| l.strip_prefix(word)?.strip_prefix(' '))
            .map(str::trim)
            .collect()
    };
    // Every file copied from the build context exists and is not ignored.
    for copy in with("COPY") {
        let parts: Vec<&str> = copy.split_whitespace().collect();
        if parts.iter().any(|p| p.starts_with("--from")) {
            continue;
        }
        for source in &parts[..parts.len() - 1] {
            if *source == "." {
                continue;
            }
            assert!(
                repo().join(source).exists(),
                "Dockerfile copies missing {source}"
            );
            assert!(
                !ignored.iter().any(|i| source.starts_with(i)),
                ".dockerignore hides {source}"
            );
        }
    }
    let copies_config =
        with("COPY").contains(&"deploy/docker/hookrelay.yaml /etc/hookrelay/hookrelay.yaml");
    assert!(
        copies_config,
        "the image carries deploy/docker/hookrelay.yaml as its config"
    );
    assert_eq!(
        with("CMD"),
        [r#"["run", "--config", "/etc/hookrelay/hookrelay.yaml"]"#]
    );
    // The image's config listens where the image says it does.
    let lookup = |name: &str| Some(dummy_value(name));
    let tls = tempfile::tempdir().unwrap();
    let text = with_test_tls(
        &read(&repo().join("deploy/docker/hookrelay.yaml")),
        tls.path(),
    );
    let config = hookrelay::Config::from_yaml(&text, &lookup).unwrap();
    let ingress = port_of(&config.server.listen.to_string());
    let admin = port_of(&config.admin.listen.to_string());
    assert_eq!(with("EXPOSE"), [format!("{ingress} {admin}")]);
    assert_eq!(config.store.path, Path::new("/data"));
    assert_eq!(with("VOLUME"), [r#"["/data"]"#]);
    let health = with("HEALTHCHECK");
    assert!(
        health.len() == 1 && health[0].contains(&format!("http://127.0.0.1:{admin}/healthz")),
        "HEALTHCHECK must hit the admin port's /healthz: {health:?}"
    );
    let user = with("USER");
    assert!(
        user.len() == 1 && !user[0].starts_with("0") && !user[0].starts_with("root"),
        "the image must run as a non-root user: {user:?}"
    );
    assert_eq!(with("STOPSIGNAL"), ["SIGTERM"]);
}

// ---- metric names against a live gateway -------------------------------------

/// Metric names (`hookrelay_*`, `process_*`) in `text`, with `_bucket`,
/// `_count` and `_sum` stripped.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["hookrelay_", "process_"] {
        let mut from = 0;
        while let Some(pos) = text[from..].find(prefix) {
            let start = from + pos;
            let boundary = text[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            let len = text[start + prefix.len()..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(text.len() - start - prefix.len());
            from = start + prefix.len() + len;
            if !boundary || len == 0 {
                continue;
            }
            out.insert(text[start..from].to_string());
        }
    }
    out
}

fn base_name(name: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// `(metric, label names)` of every `metric{...}` selector in a PromQL
/// expression.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c == '"' {
            // Skip string literals.
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let ident = &expr[start..i];
            if i < bytes.len() && bytes[i] == b'{' {
                let mut labels = Vec::new();
                i += 1;
                loop {
                    while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b',') {
                        i += 1;
                    }
                    if i >= bytes.len() || bytes[i] == b'}' {
                        i += 1;
                        break;
                    }
                    let l = i;
                    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_')
                    {
                        i += 1;
                    }
                    labels.push(expr[l..i].to_string());
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += 1;
                    }
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                out.push((ident.to_string(), labels));
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Every `expr` string in a JSON tree (the dashboard's queries).
fn exprs_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k == "expr" => out.push(s.clone()),
                    _ => exprs_in(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs_in(v, out)),
        _ => {}
    }
}

/// Families on a `/metrics` page (`# TYPE` lines) with the label names
/// their samples carry.
fn families(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            out.entry(name.to_string()).or_default();
        }
    }
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let family = if out.contains_key(name) {
            name
        } else {
            base_name(name)
        };
        if let (Some(labels), Some(open)) = (out.get_mut(family), line.find('{')) {
            let close = line.rfind('}').unwrap_or(line.len());
            for pair in line[open + 1..close].split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    out
}

async fn http(addr: std::net::SocketAddr, request: String) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8(answer).expect("UTF-8 answer")
}

async fn post_callback(addr: std::net::SocketAddr, token: &str, body: &str) -> String {
    http(
        addr,
        format!(
            "POST /hooks/muapi HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

async fn metrics_page(admin: std::net::SocketAddr) -> String {
    let answer = http(
        admin,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "GET /metrics: {answer}");
    let (_, body) = answer.split_once("\r\n\r\n").expect("a body");
    body.to_string()
}

/// A subscriber answering 200 on `/ok` and 410 Gone on anything else, so
/// deliveries finish both ways (delivered and dead).
async fn start_sink() -> std::net::SocketAddr {
    use http_body_util::Empty;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let status = if request.uri().path() == "/ok" {
                            200
                        } else {
                            410
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Empty::<bytes::Bytes>::new())
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn alert_and_dashboard_metrics_exist_on_a_live_gateway() {
    // What the alerts and the dashboard use.
    let alerts_path = repo().join("deploy/prometheus/alerts.yaml");
    let dashboard_path = repo().join("deploy/grafana/hookrelay.json");
    let alerts_text = read(&alerts_path);
    let dashboard_text = read(&dashboard_path);
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("dashboard is JSON");
    let mut used = metric_names(&alerts_text);
    used.extend(metric_names(&dashboard_text));
    assert!(
        used.len() >= 10,
        "suspiciously few metric names found: {used:?}"
    );
    let mut exprs: Vec<String> = documents(&alerts_path)
        .iter()
        .flat_map(|d| array_at(d, "/groups").to_vec())
        .flat_map(|g| array_at(&g, "/rules").to_vec())
        .filter_map(|r| str_at(&r, "/expr").map(str::to_string))
        .collect();
    let alert_count = exprs.len();
    exprs_in(&dashboard, &mut exprs);
    assert!(
        alert_count >= 8 && exprs.len() > alert_count,
        "rules and panel queries"
    );

    // The dashboard itself: unique panel ids, every query on the datasource variable.
    let panels = array_at(&dashboard, "/panels");
    let ids: BTreeSet<u64> = panels
        .iter()
        .filter_map(|p| p.get("id")?.as_u64())
        .collect();
    assert_eq!(ids.len(), panels.len(), "panel ids must be unique");
    for panel in panels {
        for target in array_at(panel, "/targets") {
            assert_eq!(
                str_at(target, "/datasource/uid"),
                Some("${datasource}"),
                "panel {:?}",
                panel.get("title")
            );
        }
    }

    // A real gateway, with traffic that makes every labelled family appear.
    let sink = start_sink().await;
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
    subscribers:
      - name: app
        url: http://{sink}/ok
      - name: gone
        url: http://{sink}/gone
"#,
        store.path().display()
    );
    let config = hookrelay::Config::from_yaml(&yaml, &|_| None).unwrap();
    let gw = hookrelay::Gateway::start(config.clone()).await.unwrap();
    let accepted = post_callback(
        gw.ingress_addr,
        "t",
        r#"{"id":"deploy-test-1","status":"completed"}"#,
    )
    .await;
    assert!(accepted.starts_with("HTTP/1.1 200"), "callback: {accepted}");
    let refused = post_callback(
        gw.ingress_addr,
        "wrong",
        r#"{"id":"x","status":"completed"}"#,
    )
    .await;
    assert!(
        refused.starts_with("HTTP/1.1 401"),
        "wrong token: {refused}"
    );
    // config_reloads_total appears with the first reload.
    gw.reload(config).await.expect("reload");

    let wanted: BTreeSet<&str> = used.iter().map(|n| base_name(n)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = metrics_page(gw.admin_addr).await;
        let found = families(&page);
        let missing: Vec<&&str> = wanted.iter().filter(|n| !found.contains_key(**n)).collect();
        if missing.is_empty() {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "metrics used by deploy/prometheus/alerts.yaml or deploy/grafana/hookrelay.json \
             are not on the gateway's /metrics page: {missing:?}\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    gw.shutdown().await;

    prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_string())))
        .expect("the page parses as Prometheus text");
    let found = families(&page);
    // Label names in selectors exist on the family (job and instance are
    // added by Prometheus).
    for expr in &exprs {
        for (metric, labels) in selectors(expr) {
            let Some(have) = found.get(&metric).or_else(|| found.get(base_name(&metric))) else {
                continue; // up, and names already reported above
            };
            for label in labels {
                assert!(
                    matches!(label.as_str(), "job" | "instance") || have.contains(&label),
                    "`{metric}` has no label `{label}` (it has {have:?}) in: {expr}"
                );
            }
        }
    }
}

// ---- the edge-ha config on a real PostgreSQL -----------------------------------

/// The edge-ha ConfigMap's config runs as shipped on a real database: the
/// `hookrelay migrate` a deploy job would run applies the schema (and a
/// second run finds it up to date), and a replica started on it becomes
/// ready. Only the listen addresses (loopback, free ports), the schema (one
/// per test) and the certificate (generated) are swapped.
#[tokio::test]
async fn the_edge_ha_config_migrates_and_runs_on_postgresql() {
    let db = pg::TestSchema::new();
    let (origin, shipped) = shipped_configs()
        .into_iter()
        .find(|(origin, _)| origin.contains("edge-ha"))
        .expect("the edge-ha ConfigMap");
    let dir = tempfile::tempdir().unwrap();
    let mut text = with_test_tls(&shipped, dir.path());
    for (from, to) in [
        ("\"0.0.0.0:8443\"", "\"127.0.0.1:0\"".to_string()),
        ("\"0.0.0.0:9090\"", "\"127.0.0.1:0\"".to_string()),
        ("schema: hookrelay", format!("schema: {}", db.schema)),
    ] {
        assert_eq!(text.matches(from).count(), 1, "{origin}: {from}");
        text = text.replace(from, &to);
    }
    let path = dir.path().join("hookrelay.yaml");
    std::fs::write(&path, &text).unwrap();
    let env: BTreeMap<String, String> = env_vars(&text)
        .into_iter()
        .map(|v| {
            let value = if v == "HOOKRELAY_DATABASE_URL" {
                db.url.clone()
            } else {
                dummy_value(&v)
            };
            (v, value)
        })
        .collect();

    let migrate = || {
        Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["migrate", "--config"])
            .arg(&path)
            .env_clear()
            .envs(&env)
            .output()
            .expect("run hookrelay migrate")
    };
    let first = migrate();
    let said = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success() && said.contains("applied migration(s)"),
        "{origin}: hookrelay migrate ({}): {said}{}",
        first.status,
        String::from_utf8_lossy(&first.stderr)
    );
    let again = migrate();
    let said = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(
        again.status.success() && said.contains("up to date"),
        "{origin}: a second migrate: {said}"
    );

    let lookup = |name: &str| env.get(name).cloned();
    let config = hookrelay::Config::from_yaml(&text, &lookup).expect("the config loads");
    assert!(
        config.store.postgres.is_some(),
        "{origin}: a PostgreSQL store"
    );
    let gw = hookrelay::Gateway::start(config)
        .await
        .expect("a replica starts");
    let ready = http(
        gw.admin_addr,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(ready.starts_with("HTTP/1.1 200"), "/readyz: {ready}");
    gw.shutdown().await;
}
