//! `deploy/`, checked the way an operator relies on it: the Kubernetes
//! manifests hold together (the Deployment mounts what the config names,
//! probes the right endpoints, runs locked down; the ClusterRole grants
//! exactly what the kubernetes executor calls), the image and the systemd
//! unit run remedy unprivileged with a config remedy accepts, the Grafana
//! dashboard asks only for metrics remedy exports, and the local stack turns
//! a real Prometheus alert into a fault and a dry-run cordon, then stops
//! every process it started.
//!
//! The image itself is not built here (no container engine on the test
//! machines): its Dockerfile is read and checked instead.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use remedy::config::Config;
use remedy_actions::executors::kubernetes::API_CALLS;
use serde::Deserialize;
use serde_json::Value;

mod common;
use common::{free_port, request};

/// What the kubernetes executor (actions/src/executors/kubernetes.rs) calls
/// on the API server, by resource of the core API group: cordon and
/// uncordon read the node and merge-patch it; with gates (contract 10) they
/// also patch its status subresource (the gates' conditions); drain also
/// lists the node's pods (cluster-wide, by field selector), reads each one
/// while waiting for it to leave, and evicts it through the Eviction
/// subresource; `[identity] kubernetes = true` lists the nodes for their
/// addresses. The ClusterRole must grant exactly these verbs: less breaks
/// an action, more is privilege nobody uses.
const EXECUTOR_CALLS: &[(&str, &[&str])] = &[
    ("nodes", &["get", "list", "patch"]),
    ("nodes/status", &["patch"]),
    ("pods", &["get", "list"]),
    ("pods/eviction", &["create"]),
];

/// The namespace and ServiceAccount every manifest agrees on.
const NAMESPACE: &str = "remedy";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a (multi-document) YAML file, as JSON values.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The Kubernetes objects of deploy/kubernetes: (file name, object). The
/// Alertmanager fragment is configuration, not an object, and is left out.
fn kubernetes_objects() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut objects = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "alertmanager-receiver.yaml" {
            continue;
        }
        for doc in yaml_documents(&path) {
            objects.push((name.clone(), doc));
        }
    }
    objects
}

/// The one object of this kind and name.
fn object<'a>(objects: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .map(|(_, o)| o)
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} {name} in deploy/kubernetes"
    );
    found[0]
}

fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v}"))
}

fn array<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v}"))
}

/// The `remedy.toml` of the ConfigMap remedy-config, parsed by remedy's own parser.
fn configmap_config(objects: &[(String, Value)]) -> Config {
    let cm = object(objects, "ConfigMap", "remedy-config");
    let toml = text(&cm["data"]["remedy.toml"], "remedy-config data remedy.toml");
    Config::parse(toml)
        .unwrap_or_else(|e| panic!("remedy-config's remedy.toml is not a valid config: {e}"))
}

/// The SQLite journal's file the config names.
fn journal_path(config: &Config) -> PathBuf {
    match config.journal.url.clone() {
        remedy::config::JournalUrl::Sqlite(path) => path,
        other => panic!("the single-replica manifest journals to SQLite, not {other}"),
    }
}

/// Whether `[http] listen` stays on loopback.
fn listens_on_loopback(config: &Config) -> bool {
    config.http.listen.ip().is_loopback()
}

/// The shipped rule library: rule name (path under rules/) -> source.
fn shipped_rules() -> BTreeMap<String, String> {
    let mut shipped = BTreeMap::new();
    let rules = repo().join("rules");
    let mut stack = vec![rules.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("rules directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rhai") {
                let name = path
                    .strip_prefix(&rules)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                shipped.insert(name, read(&path));
            }
        }
    }
    shipped
}

#[test]
fn every_manifest_parses_names_itself_and_is_applied_by_the_kustomization() {
    let objects = kubernetes_objects();
    assert!(!objects.is_empty());
    let cluster_scoped = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "Kustomization",
    ];
    for (file, o) in &objects {
        assert!(
            o["apiVersion"].is_string() && o["kind"].is_string(),
            "{file}: a document without apiVersion and kind: {o}"
        );
        if o["kind"] == "Kustomization" {
            continue;
        }
        assert!(
            o["metadata"]["name"].is_string(),
            "{file}: {} without a name",
            o["kind"]
        );
        if !cluster_scoped.contains(&text(&o["kind"], "kind")) {
            assert_eq!(
                o["metadata"]["namespace"], NAMESPACE,
                "{file}: {} {} is not in namespace {NAMESPACE}",
                o["kind"], o["metadata"]["name"]
            );
        }
    }
    // Every manifest is applied by `kubectl apply -k`, but for the two that
    // need something a plain cluster lacks.
    let k = objects
        .iter()
        .find(|(_, o)| o["kind"] == "Kustomization")
        .map(|(_, o)| o)
        .expect("deploy/kubernetes/kustomization.yaml");
    let listed: BTreeSet<&str> = array(&k["resources"], "kustomization resources")
        .iter()
        .map(|r| text(r, "a kustomization resource"))
        .collect();
    let files: BTreeSet<&str> = objects
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| !["kustomization.yaml", "servicemonitor.yaml"].contains(f))
        .collect();
    assert_eq!(
        listed, files,
        "kustomization.yaml must list every manifest (servicemonitor.yaml is optional)"
    );
}

#[test]
fn the_deployment_probes_health_limits_resources_and_runs_locked_down() {
    let objects = kubernetes_objects();
    let d = object(&objects, "Deployment", "remedy");
    assert_eq!(d["spec"]["replicas"], 1, "one writer of the SQLite journal");
    assert_eq!(
        d["spec"]["strategy"]["type"], "Recreate",
        "an old and a new pod must not write the journal together"
    );
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], NAMESPACE);
    let containers = array(&pod["containers"], "containers");
    let c = containers
        .iter()
        .find(|c| c["name"] == "remedy")
        .expect("a container named remedy");

    let http = array(&c["ports"], "ports")
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http");
    assert_eq!(http["containerPort"], 9477);
    let probe_port = |probe: &str| -> (String, Value) {
        let get = &c[probe]["httpGet"];
        (text(&get["path"], probe).to_string(), get["port"].clone())
    };
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let (p, port) = probe_port(probe);
        assert_eq!(p, path, "{probe}");
        assert!(
            port == "http" || port == 9477,
            "{probe} must probe the http port, not {port}"
        );
    }

    let resources = &c["resources"];
    for key in ["requests.cpu", "requests.memory", "limits.memory"] {
        let (a, b) = key.split_once('.').unwrap();
        assert!(
            resources[a][b].is_string(),
            "resources.{key} is not set: {resources}"
        );
    }

    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert!(
        sc["runAsNonRoot"] == true || pod["securityContext"]["runAsNonRoot"] == true,
        "runAsNonRoot is not set"
    );
    assert!(
        array(&sc["capabilities"]["drop"], "capabilities.drop").contains(&Value::from("ALL")),
        "every capability must be dropped"
    );

    // What the config names is what the pod mounts.
    let volumes = array(&pod["volumes"], "volumes");
    let volume = |name: &str| -> &Value {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    // (mount path, volume) of every mount.
    let mounts: Vec<(PathBuf, &Value, bool)> = array(&c["volumeMounts"], "volumeMounts")
        .iter()
        .map(|m| {
            (
                PathBuf::from(text(&m["mountPath"], "mountPath")),
                volume(text(&m["name"], "volume name")),
                m["readOnly"] == true,
            )
        })
        .collect();
    let mounted_at = |dir: &Path| -> (&Value, bool) {
        mounts
            .iter()
            .find(|(p, ..)| p == dir)
            .map(|(_, v, ro)| (*v, *ro))
            .unwrap_or_else(|| panic!("nothing is mounted at {}", dir.display()))
    };

    let args: Vec<&str> = array(&c["args"], "args")
        .iter()
        .map(|a| text(a, "an arg"))
        .collect();
    assert_eq!(args[0], "run");
    let config_file = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| PathBuf::from(args[i + 1]))
        .expect("run --config FILE");
    let (v, _) = mounted_at(config_file.parent().unwrap());
    assert_eq!(v["configMap"]["name"], "remedy-config");
    let config = configmap_config(&objects);
    assert_eq!(
        config_file.file_name().unwrap(),
        "remedy.toml",
        "the config file is the ConfigMap's key"
    );

    let (v, ro) = mounted_at(&config.rules);
    assert_eq!(
        v["configMap"]["name"],
        "remedy-rules",
        "rules = {} must be the rules ConfigMap",
        config.rules.display()
    );
    assert!(ro, "the rules are mounted read-only");

    // The root filesystem is read-only: the journal needs its own volume,
    // and one that outlives the pod.
    let journal = journal_path(&config);
    let (v, ro) = mounted_at(journal.parent().unwrap());
    assert!(!ro, "the journal's volume must be writable");
    let claim = text(
        &v["persistentVolumeClaim"]["claimName"],
        "the journal volume's claim",
    );
    object(&objects, "PersistentVolumeClaim", claim);

    // Beyond loopback, so a token, from a Secret.
    assert!(!listens_on_loopback(&config));
    let token = config
        .http
        .token_file
        .clone()
        .expect("listening beyond loopback needs [http] token_file");
    let (v, _) = mounted_at(token.parent().unwrap());
    assert!(
        v["secret"]["secretName"].is_string(),
        "the token comes from a Secret: {v}"
    );
}

#[test]
fn the_configmap_config_is_one_remedy_accepts_with_kubernetes_node_actions() {
    let objects = kubernetes_objects();
    let config = configmap_config(&objects);
    for op in ["cordon", "uncordon", "drain"] {
        let action = config
            .actions
            .get(op)
            .unwrap_or_else(|| panic!("[actions.{op}] is not configured"));
        // Typed and checked when the config was read, as the service reads it.
        assert_eq!(
            action.executor.kind(),
            remedy_actions::ExecutorKind::Kubernetes,
            "[actions.{op}]"
        );
        assert_eq!(action.op, op, "[actions.{op}]");
    }
    assert!(
        config.dry_run,
        "the shipped config starts in dry-run: an operator turns it off"
    );
}

#[test]
fn the_rules_configmap_is_the_shipped_library_mounted_under_each_rules_name() {
    let objects = kubernetes_objects();
    let cm = object(&objects, "ConfigMap", "remedy-rules");
    let data = cm["data"].as_object().expect("remedy-rules data");
    let shipped = shipped_rules();
    let in_configmap: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.replace("__", "/"), text(v, k).to_string()))
        .collect();
    let fix = "regenerate it: deploy/kubernetes/rules-configmap.sh > deploy/kubernetes/rules.yaml";
    assert_eq!(
        in_configmap.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>(),
        "rules.yaml does not hold the rules of rules/: {fix}"
    );
    for (name, source) in &shipped {
        assert!(
            in_configmap[name] == *source,
            "rules.yaml's {name} differs from rules/{name}: {fix}"
        );
    }

    // Each key is mounted at its rule's path, so rule names stay the same
    // inside the pod (hardware/memory.rhai, not hardware__memory.rhai).
    let d = object(&objects, "Deployment", "remedy");
    let volume = array(&d["spec"]["template"]["spec"]["volumes"], "volumes")
        .iter()
        .find(|v| v["configMap"]["name"] == "remedy-rules")
        .expect("a volume of the ConfigMap remedy-rules");
    let items: BTreeMap<&str, &str> = array(&volume["configMap"]["items"], "items")
        .iter()
        .map(|i| (text(&i["key"], "key"), text(&i["path"], "path")))
        .collect();
    let expected: BTreeMap<String, String> = data
        .keys()
        .map(|k| (k.clone(), k.replace("__", "/")))
        .collect();
    let items: BTreeMap<String, String> = items
        .into_iter()
        .map(|(k, p)| (k.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        items, expected,
        "the rules volume's items: deploy/kubernetes/rules-configmap.sh --items prints them"
    );
}

#[test]
fn the_cluster_role_grants_exactly_what_the_kubernetes_executor_calls() {
    let objects = kubernetes_objects();
    let sa = object(&objects, "ServiceAccount", NAMESPACE);
    assert_eq!(sa["metadata"]["namespace"], NAMESPACE);

    let role = object(&objects, "ClusterRole", NAMESPACE);
    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in array(&role["rules"], "ClusterRole rules") {
        let groups = array(&rule["apiGroups"], "apiGroups");
        assert_eq!(
            groups,
            &vec![Value::from("")],
            "only the core API group: {rule}"
        );
        for resource in array(&rule["resources"], "resources") {
            for verb in array(&rule["verbs"], "verbs") {
                granted
                    .entry(text(resource, "resource").to_string())
                    .or_default()
                    .insert(text(verb, "verb").to_string());
            }
        }
        assert!(
            rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
            "{rule}"
        );
    }
    let expected: BTreeMap<String, BTreeSet<String>> = EXECUTOR_CALLS
        .iter()
        .map(|(r, verbs)| (r.to_string(), verbs.iter().map(|v| v.to_string()).collect()))
        .collect();
    assert_eq!(granted, expected);
    // The calls the executor declares (its tests check each request it
    // makes against them) are these, so rbac.yaml grants every one.
    let declared: BTreeMap<String, BTreeSet<String>> = API_CALLS.iter().fold(
        BTreeMap::new(),
        |mut calls: BTreeMap<String, BTreeSet<String>>, (resource, verb)| {
            calls
                .entry(resource.to_string())
                .or_default()
                .insert(verb.to_string());
            calls
        },
    );
    assert_eq!(
        declared, granted,
        "remedy_actions::executors::kubernetes::API_CALLS and the ClusterRole remedy"
    );

    let binding = object(&objects, "ClusterRoleBinding", NAMESPACE);
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], NAMESPACE);
    assert!(
        array(&binding["subjects"], "subjects").iter().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == NAMESPACE && s["namespace"] == NAMESPACE
        }),
        "the binding names the ServiceAccount remedy/remedy"
    );
}

#[test]
fn the_service_is_scraped_and_alertmanager_posts_to_its_webhook() {
    let objects = kubernetes_objects();
    let d = object(&objects, "Deployment", "remedy");
    let s = object(&objects, "Service", "remedy");
    let pod_labels = d["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    for (k, v) in s["spec"]["selector"].as_object().expect("a selector") {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "the Service selects {k}={v}, which the pods do not carry"
        );
    }
    let port = array(&s["spec"]["ports"], "ports")
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a Service port named http");
    assert_eq!(port["targetPort"], "http");
    let service_port = port["port"].as_u64().expect("a port number");

    // Scrape annotations, on the Service and the pods alike.
    for (what, annotations) in [
        ("Service", &s["metadata"]["annotations"]),
        (
            "pod template",
            &d["spec"]["template"]["metadata"]["annotations"],
        ),
    ] {
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{what}");
        assert_eq!(annotations["prometheus.io/port"], "9477", "{what}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{what}");
    }
    let monitor = object(&objects, "ServiceMonitor", "remedy");
    let endpoint = &array(&monitor["spec"]["endpoints"], "endpoints")[0];
    assert_eq!(
        (&endpoint["port"], &endpoint["path"]),
        (&Value::from("http"), &Value::from("/metrics"))
    );

    // The Alertmanager fragment: valid for Alertmanager itself, aimed at the
    // Service's webhook, with the token, and resolved alerts sent too.
    let fragment = repo().join("deploy/kubernetes/alertmanager-receiver.yaml");
    let amtool = "/usr/bin/amtool";
    assert!(
        Path::new(amtool).exists(),
        "amtool (prometheus-alertmanager) is not installed: run tests/run.sh, which installs it"
    );
    let out = Command::new(amtool)
        .arg("check-config")
        .arg(&fragment)
        .output()
        .expect("amtool runs");
    assert!(
        out.status.success(),
        "amtool check-config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let am = &yaml_documents(&fragment)[0];
    let receiver = array(&am["receivers"], "receivers")
        .iter()
        .find(|r| r["name"] == "remedy")
        .expect("a receiver named remedy");
    let hook = &array(&receiver["webhook_configs"], "webhook_configs")[0];
    assert_eq!(
        hook["url"],
        format!("http://remedy.{NAMESPACE}.svc:{service_port}/v1/alertmanager")
    );
    assert_eq!(
        hook["send_resolved"], true,
        "resolved alerts resolve the faults they opened"
    );
    assert!(
        hook["http_config"]["authorization"]["credentials_file"].is_string(),
        "remedy in the cluster wants its bearer token"
    );
    // The alerts it routes are ones the shipped rules understand.
    let rules: String = shipped_rules().into_values().collect();
    let route = &array(&am["route"]["routes"], "routes")[0];
    assert_eq!(route["receiver"], "remedy");
    let matcher = text(&array(&route["matchers"], "matchers")[0], "matcher");
    let names = matcher
        .split_once('"')
        .map(|(_, rest)| rest.trim_end_matches('"'))
        .expect("alertname =~ \"A|B\"");
    for alert in names.split('|') {
        assert!(
            rules.contains(&format!("\"{alert}\"")),
            "the route sends {alert}, which no shipped rule maps to a fault"
        );
    }
}

/// The instructions of a Dockerfile, continuation lines joined, comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((word.to_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn the_image_is_built_in_one_stage_and_runs_unprivileged_in_another() {
    let instructions = dockerfile_instructions(&read(&repo().join("deploy/docker/Dockerfile")));
    let froms: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| i == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert!(
        froms.len() >= 2,
        "multi-stage: build in one image, run in a small one"
    );
    let build = &instructions[froms[0]].1;
    assert!(
        build.starts_with("rust:") && build.contains(" AS build"),
        "{build}"
    );
    assert!(
        instructions[froms[0]..*froms.last().unwrap()]
            .iter()
            .any(|(i, a)| i == "RUN" && a.contains("cargo build --release --locked")),
        "the build stage builds the release binary from Cargo.lock"
    );

    let runtime = &instructions[*froms.last().unwrap()..];
    let base = &runtime[0].1;
    assert!(
        !base.starts_with("rust:"),
        "the runtime image is not the toolchain: {base}"
    );
    let last = |word: &str| -> &str {
        runtime
            .iter()
            .rev()
            .find(|(i, _)| i == word)
            .map(|(_, a)| a.as_str())
            .unwrap_or_else(|| panic!("the runtime stage has no {word}"))
    };
    let user = last("USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        !["root", "0"].contains(&uid),
        "the image must not run as root: USER {user}"
    );
    assert_eq!(last("EXPOSE"), "9477");
    let entrypoint: Vec<String> =
        serde_json::from_str(last("ENTRYPOINT")).expect("ENTRYPOINT in exec form");
    assert_eq!(entrypoint, ["/usr/local/bin/remedy"]);
    let cmd: Vec<String> = serde_json::from_str(last("CMD")).expect("CMD in exec form");
    assert_eq!(cmd[..3], ["run", "--config", "/etc/remedy/remedy.toml"]);
    assert!(runtime.iter().any(|(i, a)| i == "COPY"
        && a.contains("--from=build")
        && a.ends_with("/usr/local/bin/remedy")));

    // The config baked in at /etc/remedy/remedy.toml: accepted by remedy,
    // reachable from outside the container only with a token, journal on
    // the image's volume, rules where the image puts them.
    let copied = |to: &str| -> String {
        runtime
            .iter()
            .filter(|(i, _)| i == "COPY")
            .find(|(_, a)| a.ends_with(&format!(" {to}")))
            .map(|(_, a)| {
                a.split_whitespace()
                    .rev()
                    .nth(1)
                    .expect("COPY SRC DEST")
                    .to_string()
            })
            .unwrap_or_else(|| panic!("nothing is copied to {to}"))
    };
    let config_src = copied("/etc/remedy/remedy.toml");
    let config = Config::parse(&read(&repo().join(&config_src)))
        .unwrap_or_else(|e| panic!("{config_src}: {e}"));
    assert_eq!(copied("/etc/remedy/rules"), "rules");
    assert_eq!(config.rules, Path::new("/etc/remedy/rules"));
    assert!(!listens_on_loopback(&config));
    assert!(
        config.http.token_file.is_some(),
        "{config_src}: beyond loopback, a token is required"
    );
    let volume: Vec<String> = serde_json::from_str(last("VOLUME")).expect("VOLUME [...]");
    assert_eq!(
        journal_path(&config).parent().unwrap(),
        Path::new(&volume[0]),
        "the journal lives on the image's volume"
    );
    assert_eq!(last("WORKDIR"), volume[0]);
}

/// `Key=value` lines of a systemd unit, by section; a key may repeat.
fn unit_sections(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not Key=value: {line}"));
        sections
            .entry(section.clone())
            .or_default()
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    sections
}

#[test]
fn the_systemd_unit_is_hardened_and_its_config_matches_it() {
    let unit = unit_sections(&read(&repo().join("deploy/systemd/remedy.service")));
    let service = &unit["Service"];
    let value = |key: &str| -> &str {
        service
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("[Service] has no {key}="))
    };
    for (key, expected) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(value(key), expected, "[Service] {key}");
    }
    assert!(service
        .iter()
        .any(|(k, v)| k == "SystemCallFilter" && v == "@system-service"));
    assert_eq!(
        unit["Install"][0],
        ("WantedBy".into(), "multi-user.target".into())
    );

    // ExecStart runs the config deploy/systemd/remedy.toml is installed as.
    let exec: Vec<&str> = value("ExecStart").split_whitespace().collect();
    assert!(exec[0].starts_with('/') && exec[0].ends_with("/remedy"));
    assert_eq!(exec[1], "run");
    let config_at = exec
        .iter()
        .position(|a| *a == "--config")
        .map(|i| exec[i + 1])
        .expect("--config FILE");
    assert_eq!(
        config_at,
        format!("/etc/{}/remedy.toml", value("ConfigurationDirectory"))
    );
    let config = Config::parse(&read(&repo().join("deploy/systemd/remedy.toml")))
        .unwrap_or_else(|e| panic!("deploy/systemd/remedy.toml: {e}"));
    // With ProtectSystem=strict only the StateDirectory is writable.
    assert_eq!(
        journal_path(&config).parent().unwrap(),
        Path::new("/var/lib").join(value("StateDirectory")),
        "the journal must be in the unit's StateDirectory"
    );
    // The token is the unit's credential.
    let (name, _) = value("LoadCredential")
        .split_once(':')
        .expect("LoadCredential=NAME:PATH");
    assert_eq!(
        config.http.token_file,
        Some(PathBuf::from(format!(
            "/run/credentials/remedy.service/{name}"
        )))
    );
}

/// The metric families `src/service/metrics.rs` exports, with the series
/// names a histogram family adds.
fn exported_metrics() -> BTreeSet<String> {
    let source = read(&repo().join("src/service/metrics.rs"));
    let mut names = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find("\"remedy_") {
        let after = &rest[at + 1..];
        let end = after.find('"').expect("a closing quote");
        let name = &after[..end];
        rest = &after[end..];
        // The family's kind is the next string literal after its name.
        let kind = rest[1..].split('"').nth(1).unwrap_or("");
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// Every `remedy_*` name an expression mentions.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("remedy_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in array(&dashboard["panels"], "panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// (panel title, expression) of every query of the dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo().join("deploy/grafana/remedy.json");
    let dashboard: Value = serde_json::from_str(&read(&path)).expect("the dashboard is JSON");
    panels(&dashboard)
        .into_iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let title = text(&p["title"], "title").to_string();
            array(&p["targets"], &title)
                .iter()
                .map(move |t| (title.clone(), text(&t["expr"], "expr").to_string()))
        })
        .collect()
}

#[test]
fn the_dashboard_shows_only_metrics_remedy_exports() {
    let path = repo().join("deploy/grafana/remedy.json");
    let dashboard: Value = serde_json::from_str(&read(&path)).expect("the dashboard is JSON");
    let ids: Vec<u64> = panels(&dashboard)
        .iter()
        .map(|p| p["id"].as_u64().expect("a panel id"))
        .collect();
    assert_eq!(
        ids.len(),
        ids.iter().collect::<BTreeSet<_>>().len(),
        "panel ids are unique"
    );
    let variables: Vec<&str> = array(&dashboard["templating"]["list"], "templating")
        .iter()
        .map(|v| text(&v["name"], "variable"))
        .collect();
    assert!(variables.contains(&"datasource"));

    let exported = exported_metrics();
    assert!(exported.contains("remedy_actions_total"), "{exported:?}");
    let queries = dashboard_queries();
    let mut used = BTreeSet::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: {expr} shows no remedy metric");
        for name in names {
            assert!(
                exported.contains(&name),
                "panel {title:?} asks for {name}, which src/service/metrics.rs does not export"
            );
            used.insert(name);
        }
    }
    // What the dashboard is for: signals, faults by class, actions by
    // outcome, guard budgets, breaker states.
    for name in [
        "remedy_signals_total",
        "remedy_faults_open",
        "remedy_actions_total",
        "remedy_guard_under_remediation",
        "remedy_guard_held_actions",
        "remedy_breaker_open",
    ] {
        assert!(used.contains(name), "no panel shows {name}");
    }
}

// ---------------------------------------------------------------------------
// The local stack, end to end.

/// (status, body) of a GET to 127.0.0.1:`port`; status 0 when nothing answered.
fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path, "", None)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The start time (clock ticks since boot) of a live, non-zombie process.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    (fields.first() != Some(&"Z")).then(|| fields[19].to_string())
}

/// Local addresses of the TCP sockets `pid` listens on (and of its bound,
/// unconnected UDP sockets), as `/proc/net` spells them.
fn listening(pid: u32) -> Vec<String> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().to_string();
                    l.strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (table, state) in [("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")] {
        let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == state && inodes.contains(f[9]) {
                let unconnected = f[2].trim_end_matches(":0000").chars().all(|c| c == '0');
                if table.starts_with("tcp") || unconnected {
                    out.push(f[1].to_string());
                }
            }
        }
    }
    out
}

/// Whether a `/proc/net` local address is on loopback (127.0.0.0/8, ::1,
/// or 127.x mapped into IPv6).
fn is_loopback(address: &str) -> bool {
    let ip = address.split(':').next().unwrap_or("");
    match ip.len() {
        // Little-endian: 127.x.y.z is "ZZYYXX7F".
        8 => ip.ends_with("7F"),
        32 => {
            ip == "00000000000000000000000001000000"
                || (ip.starts_with("0000000000000000FFFF0000") && ip.ends_with("7F"))
        }
        _ => false,
    }
}

/// Runs a script of deploy/local with the stack's environment; fails after `limit`.
fn run_script(script: &str, env: &[(String, String)], limit: Duration) -> (bool, String) {
    // One file, one offset: stdout and stderr interleave as on a terminal.
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let file = out.reopen().expect("output file");
    let mut cmd = Command::new(repo().join("deploy/local").join(script));
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("output file"))
        .stderr(file);
    for var in [
        "REMEDY_LISTEN",
        "REMEDY_TOKEN",
        "REMEDY_JOURNAL",
        "REMEDY_RULES",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{script}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(out.path()).unwrap_or_default();
    match status {
        Some(s) => (s.success(), output),
        None => (
            false,
            format!("{script} took longer than {limit:?}\n{output}"),
        ),
    }
}

/// Runs down.sh when dropped, so a failing assertion leaves nothing running.
struct Stack {
    env: Vec<(String, String)>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = run_script("down.sh", &self.env, Duration::from_secs(40));
    }
}

/// (component, pid, start time) of every process up.sh recorded.
fn recorded_pids(state: &Path) -> Vec<(String, u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(state.join("pids")).expect("the pids directory") {
        let path = entry.expect("directory entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = read(&path);
        let mut f = text.split_whitespace();
        let pid = f.next().and_then(|p| p.parse().ok()).expect("a pid");
        let started = f.next().expect("a start time").to_string();
        out.push((name, pid, started));
    }
    out.sort();
    out
}

#[test]
fn the_local_stack_turns_a_real_alert_into_a_dry_run_cordon_and_stops_cleanly() {
    for b in [
        "/usr/bin/prometheus",
        "/usr/bin/prometheus-alertmanager",
        "/usr/bin/prometheus-node-exporter",
    ] {
        assert!(
            Path::new(b).exists(),
            "{b} is not installed: run tests/run.sh, which installs it"
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let (remedy, prometheus, alertmanager, exporter, kafka) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    // The broker as up.sh finds it (TANSU, else where up.sh installs it);
    // REMEDY_LOCAL_KAFKA=0 runs the stack without it, as up.sh does.
    let tansu = std::env::var("TANSU")
        .ok()
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|h| Path::new(&h).join(".cache/remedy/tools/bin/tansu"))
                .filter(|p| p.exists())
        })
        .filter(|_| std::env::var("REMEDY_LOCAL_KAFKA").as_deref() != Ok("0"));
    let node = "deploy-e2e";
    let mut env: Vec<(String, String)> = [
        ("REMEDY_LOCAL_STATE", state.display().to_string()),
        ("REMEDY_BIN", env!("CARGO_BIN_EXE_remedy").to_string()),
        ("REMEDY_LOCAL_REMEDY_PORT", remedy.to_string()),
        ("REMEDY_LOCAL_PROMETHEUS_PORT", prometheus.to_string()),
        ("REMEDY_LOCAL_ALERTMANAGER_PORT", alertmanager.to_string()),
        ("REMEDY_LOCAL_NODE_EXPORTER_PORT", exporter.to_string()),
        ("REMEDY_LOCAL_KAFKA_PORT", kafka.to_string()),
        ("REMEDY_LOCAL_NODE", node.to_string()),
        // Fast loop: 1s scrapes, evaluations and grouping; the disk alert
        // fires at once (every filesystem has less than 101% free).
        ("REMEDY_LOCAL_INTERVAL", "1s".to_string()),
        ("REMEDY_LOCAL_ALERT_FOR", "0s".to_string()),
        ("REMEDY_LOCAL_DISK_FREE_PCT", "101".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    match &tansu {
        Some(t) => env.push(("TANSU".into(), t.display().to_string())),
        // Without the broker, the stack runs the rest: CI has tansu.
        None => env.push(("REMEDY_LOCAL_KAFKA".into(), "0".into())),
    }
    let stack = Stack { env: env.clone() };

    let (ok, output) = run_script("up.sh", &env, Duration::from_secs(60));
    assert!(ok, "up.sh failed:\n{output}");
    assert!(
        output.contains(&format!("http://127.0.0.1:{remedy}")),
        "up.sh prints where remedy is:\n{output}"
    );
    let pids = recorded_pids(&state);
    let mut expected = vec!["alertmanager", "node-exporter", "prometheus", "remedy"];
    if tansu.is_some() {
        expected.insert(1, "kafka");
    }
    assert_eq!(
        pids.iter().map(|(n, ..)| n.as_str()).collect::<Vec<_>>(),
        expected
    );

    // Nothing listens beyond loopback.
    for (name, pid, _) in &pids {
        let addresses = listening(*pid);
        assert!(
            !addresses.is_empty(),
            "{name} (pid {pid}) listens on nothing"
        );
        for a in addresses {
            assert!(
                is_loopback(&a),
                "{name} (pid {pid}) listens beyond loopback: {a}"
            );
        }
    }

    // node exporter -> Prometheus -> alert -> Alertmanager -> remedy: the
    // fault opens and its cordon is decided, dry-run.
    let deadline = Instant::now() + Duration::from_secs(45);
    let decisions = loop {
        let (status, body) = get(remedy, "/v1/decisions?since=0");
        assert_eq!(status, 200, "{body}");
        let d: Value = serde_json::from_str(&body).expect("decisions JSON");
        let list = d["decisions"].as_array().cloned().unwrap_or_default();
        let opened = list.iter().any(|d| {
            d["event"] == "fault_opened" && d["fault"] == "disk_pressure" && d["node"] == node
        });
        let cordoned = list.iter().any(|d| {
            d["event"] == "action"
                && d["action"] == "cordon"
                && d["outcome"] == "dry_run"
                && d["fault"] == "disk_pressure"
                && d["node"] == node
        });
        if opened && cordoned {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "no disk_pressure fault and dry-run cordon for {node} within 45s: {body}\n\
             remedy's log:\n{}",
            std::fs::read_to_string(state.join("logs/remedy.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // remedy <- Kafka, decisions out: a signal produced to node-signals is
    // decided, and its decision arrives on the decisions topic, keyed by node.
    if tansu.is_some() {
        let brokers = format!("127.0.0.1:{kafka}");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let signal = r#"{"node":"kafka-e2e","kind":"hardware","type":"disk.smart.failing","labels":{"cluster":"local"}}"#;
        rt.block_on(remedy_testkit::produce(
            &brokers,
            "node-signals",
            &[("kafka-e2e", signal)],
        ));
        // Decided (and journaled) first, then published: read as many
        // messages as the journal holds decisions.
        let deadline = Instant::now() + Duration::from_secs(30);
        let journaled = loop {
            let (_, body) = get(remedy, "/v1/decisions?since=0&limit=10000");
            let d: Value = serde_json::from_str(&body).expect("decisions JSON");
            let list = d["decisions"].as_array().cloned().unwrap_or_default();
            if list.iter().any(|d| d["node"] == "kafka-e2e") {
                break list.len();
            }
            assert!(
                Instant::now() < deadline,
                "the signal produced to node-signals was not decided; remedy's log:\n{}",
                std::fs::read_to_string(state.join("logs/remedy.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        let published = rt.block_on(remedy_testkit::read(
            &brokers,
            "remedy-decisions",
            journaled,
            Duration::from_secs(20),
        ));
        let found = published
            .into_iter()
            .find_map(|m| {
                use rdkafka::Message;
                let d: Value = serde_json::from_slice(m.payload()?).ok()?;
                (d["event"] == "fault_opened" && d["node"] == "kafka-e2e").then(|| {
                    (
                        String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                        d,
                    )
                })
            })
            .expect("the Kafka signal's fault_opened on remedy-decisions");
        assert_eq!(found.0, "kafka-e2e", "keyed by node");
        assert_eq!(found.1["fault"], "disk_failure");
    }
    let opened = decisions
        .iter()
        .find(|d| d["event"] == "fault_opened" && d["fault"] == "disk_pressure")
        .unwrap();
    // Both disk alerts of the stack fire on this machine (every filesystem
    // is below 101% free; SpaceFillingUp when it also grows): whichever
    // Alertmanager delivers first opens the fault, which opens once.
    let reason = text(&opened["reason"], "reason");
    assert!(
        reason.contains("NodeFilesystemAlmostOutOfSpace")
            || reason.contains("NodeFilesystemSpaceFillingUp"),
        "{opened}"
    );
    let (_, metrics) = get(remedy, "/metrics");
    assert!(
        metrics.contains("remedy_signals_total{source=\"alertmanager\"}"),
        "{metrics}"
    );

    // Prometheus scrapes remedy, and every dashboard query is one it accepts.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(
            prometheus,
            &format!(
                "/api/v1/query?query={}",
                percent_encode("up{job=\"remedy\"}")
            ),
        );
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if v["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus does not scrape remedy: {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for (title, expr) in dashboard_queries() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "5m")
            .replace("$instance", ".*");
        let (status, body) = get(
            prometheus,
            &format!("/api/v1/query?query={}", percent_encode(&expr)),
        );
        assert_eq!(
            status, 200,
            "panel {title:?}: Prometheus refuses {expr}: {body}"
        );
    }

    // A second up.sh starts nothing new.
    let (ok, output) = run_script("up.sh", &env, Duration::from_secs(60));
    assert!(ok, "the second up.sh failed:\n{output}");
    assert!(output.contains("already running"), "{output}");
    assert_eq!(
        recorded_pids(&state),
        pids,
        "the second up.sh restarted something"
    );

    let (ok, output) = run_script("down.sh", &env, Duration::from_secs(40));
    assert!(ok, "down.sh failed:\n{output}");
    for (name, pid, started) in &pids {
        assert_ne!(
            start_time(*pid).as_ref(),
            Some(started),
            "{name} (pid {pid}) still runs after down.sh"
        );
    }
    for port in [remedy, prometheus, alertmanager, exporter, kafka] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "127.0.0.1:{port} still answers after down.sh"
        );
    }
    assert!(!state.exists(), "down.sh leaves {} behind", state.display());
    drop(stack);
}

/// Contract 12: the two-replica variant (deploy/kubernetes/ha) runs two
/// instances on different nodes, on a PostgreSQL journal whose URL comes
/// from a Secret (never from the ConfigMap), with `[ha]`, a
/// PodDisruptionBudget that keeps one, and no SQLite volume.
#[test]
fn the_ha_variant_runs_two_fenced_instances_on_postgresql() {
    let dir = repo().join("deploy/kubernetes/ha");
    let kustomization = &yaml_documents(&dir.join("kustomization.yaml"))[0];
    let resources: Vec<&str> = array(&kustomization["resources"], "resources")
        .iter()
        .map(|r| text(r, "a resource"))
        .collect();
    assert_eq!(resources, ["../", "pdb.yaml"]);
    let patches: Vec<&str> = array(&kustomization["patches"], "patches")
        .iter()
        .map(|p| text(&p["path"], "a patch path"))
        .collect();
    assert_eq!(patches, ["deployment.yaml", "config.yaml"]);
    let deployment = &yaml_documents(&dir.join("deployment.yaml"))[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let anti =
        &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    let container = &array(&pod["containers"], "containers")[0];
    let env = &array(&container["env"], "env")[0];
    assert_eq!(env["name"], "REMEDY_JOURNAL");
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "remedy-postgres");
    assert_eq!(array(&pod["volumes"], "volumes")[0]["$patch"], "delete");
    let pdb = &yaml_documents(&dir.join("pdb.yaml"))[0];
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "remedy"
    );
    // The config remedy reads: PostgreSQL, [ha], no password in it.
    let cm = &yaml_documents(&dir.join("config.yaml"))[0];
    assert_eq!(cm["metadata"]["name"], "remedy-config");
    let toml = text(&cm["data"]["remedy.toml"], "remedy.toml");
    let config = Config::parse(toml).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.ha.is_some(), "[ha] is set");
    match &config.journal.url {
        // scheme://user@host:port/db: a password would add a third colon.
        remedy::config::JournalUrl::Postgres(url) => {
            assert_eq!(url.matches(':').count(), 2, "no password in {url}")
        }
        other => panic!("expected a PostgreSQL journal, got {other}"),
    }
    // Everything else is the base's config.
    let base = configmap_config(&kubernetes_objects());
    assert_eq!(config.actions.len(), base.actions.len());
    assert_eq!(config.dry_run, base.dry_run);
}

/// The local stack with `REMEDY_LOCAL_INSTANCES=2` (contract 12): a private
/// PostgreSQL and two remedy instances on it, one leading and one standing
/// by; kill -9 the leader and the other leads within the lease (10 s) + 5 s;
/// down.sh stops everything it started.
#[test]
fn the_local_stack_runs_two_instances_and_the_standby_takes_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The PostgreSQL cluster belongs to the postgres user when run as root:
    // it must reach its directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    // Two remedy ports in a row: the second instance takes the next one.
    let remedy = loop {
        let p = free_port();
        if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let env: Vec<(String, String)> = [
        ("REMEDY_LOCAL_STATE", state.display().to_string()),
        ("REMEDY_BIN", env!("CARGO_BIN_EXE_remedy").to_string()),
        ("REMEDY_LOCAL_INSTANCES", "2".to_string()),
        ("REMEDY_LOCAL_KAFKA", "0".to_string()),
        ("REMEDY_LOCAL_REMEDY_PORT", remedy.to_string()),
        ("REMEDY_LOCAL_POSTGRES_PORT", free_port().to_string()),
        ("REMEDY_LOCAL_PROMETHEUS_PORT", free_port().to_string()),
        ("REMEDY_LOCAL_ALERTMANAGER_PORT", free_port().to_string()),
        ("REMEDY_LOCAL_NODE_EXPORTER_PORT", free_port().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let stack = Stack { env: env.clone() };
    let (ok, output) = run_script("up.sh", &env, Duration::from_secs(90));
    assert!(ok, "up.sh failed:\n{output}");
    let pids = recorded_pids(&state);
    let names: Vec<&str> = pids.iter().map(|(n, ..)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "alertmanager",
            "node-exporter",
            "postgres",
            "prometheus",
            "remedy",
            "remedy-2"
        ]
    );
    let role = |port: u16| {
        let (status, body) = get(port, "/readyz");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        (status, v["role"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(role(remedy), (200, "leader".to_string()));
    assert_eq!(role(remedy + 1), (503, "standby".to_string()));
    let leader = pids.iter().find(|(n, ..)| n == "remedy").unwrap().1;
    let status = std::process::Command::new("kill")
        .args(["-KILL", &leader.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10 + 5);
    while role(remedy + 1) != (200, "leader".to_string()) {
        assert!(
            Instant::now() < deadline,
            "the standby did not take over: {:?}\n{}",
            role(remedy + 1),
            std::fs::read_to_string(state.join("logs/remedy-2.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stack);
    for (name, pid, started) in &pids {
        assert_ne!(
            start_time(*pid).as_deref(),
            Some(started.as_str()),
            "{name} (pid {pid}) still runs after down.sh"
        );
    }
}
