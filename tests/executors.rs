//! Executors end to end: the real `remedy run` binary with `dry_run = false`,
//! a real Alertmanager delivering its webhook, and local servers playing the
//! Kubernetes API server and a ticket system, which record every request.
//! The loop: alert fires -> fault -> cordon + ticket -> alert resolves ->
//! uncordon.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

mod common;
use common::{free_port, request, wait_for, Alertmanager, Remedy};

/// One request a fake server saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    idempotency_key: String,
    body: String,
}

#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<Seen>>,
    node: Mutex<Value>,
    /// Answer every node request 403 Forbidden (RBAC without `nodes/patch`).
    forbid: std::sync::atomic::AtomicBool,
}

impl Fake {
    fn record(&self, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        self.seen.lock().unwrap().push(Seen {
            method: method.to_string(),
            path: path.to_string(),
            content_type: header("content-type"),
            idempotency_key: header("idempotency-key"),
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }

    fn seen(&self, prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// RFC 7386 merge patch (what both merge and strategic patches of these
/// fields amount to).
use remedy_testkit::merge_patch as merge;

async fn get_node(
    State(fake): State<Arc<Fake>>,
    UrlPath(name): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> impl IntoResponse {
    fake.record(&method, &format!("/api/v1/nodes/{name}"), &headers, b"");
    if fake.forbid.load(std::sync::atomic::Ordering::Relaxed) {
        return forbidden(&name).into_response();
    }
    Json(fake.node.lock().unwrap().clone()).into_response()
}

/// The Status a Kubernetes API server answers without RBAC for a node.
fn forbidden(name: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::FORBIDDEN,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("nodes \"{name}\" is forbidden: User \"system:serviceaccount:remedy:remedy\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"),
            "reason": "Forbidden", "details": {"name": name, "kind": "nodes"}, "code": 403
        })),
    )
}

/// The node list, as `GET /api/v1/nodes` answers it (one page).
async fn list_nodes(
    State(fake): State<Arc<Fake>>,
    method: Method,
    headers: HeaderMap,
) -> impl IntoResponse {
    fake.record(&method, "/api/v1/nodes", &headers, b"");
    Json(json!({
        "apiVersion": "v1",
        "kind": "NodeList",
        "metadata": {"resourceVersion": "7"},
        "items": [fake.node.lock().unwrap().clone()]
    }))
}

async fn patch_node(
    State(fake): State<Arc<Fake>>,
    UrlPath(name): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    fake.record(&method, &format!("/api/v1/nodes/{name}"), &headers, &body);
    let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut node = fake.node.lock().unwrap();
    merge(&mut node, &patch);
    Json(node.clone())
}

async fn ticket(
    State(fake): State<Arc<Fake>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    fake.record(&method, "/tickets", &headers, &body);
    (StatusCode::CREATED, Json(json!({"id": "REPAIR-1"})))
}

/// Starts the fake API server and ticket receiver on one port, on a thread
/// of their own.
fn start_fakes(node: &str) -> (Arc<Fake>, u16) {
    start_fakes_on(node, TcpListener::bind("127.0.0.1:0").unwrap())
}

/// The fakes on a listener of the caller's (a port chosen before it is served).
fn start_fakes_on(node: &str, listener: TcpListener) -> (Arc<Fake>, u16) {
    let fake = Arc::new(Fake::default());
    *fake.node.lock().unwrap() = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
        "spec": {},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.7"},
            {"type": "Hostname", "address": format!("{node}.example")}
        ]}
    });
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let app = Router::new()
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{name}", get(get_node).patch(patch_node))
        .route("/tickets", post(ticket))
        .with_state(fake.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (fake, port)
}

/// A kubeconfig in `dir` for the fake API server on `port`.
fn kubeconfig(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: remedy\n  user:\n    token: not-a-secret\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: remedy\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    path
}

/// (status, body) of one request to 127.0.0.1:`port`.
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    request(port, method, path, body, None)
}

/// (event, action, outcome) of every journaled decision.
fn decisions(port: u16) -> Vec<(String, String, String, Value)> {
    let (status, body) = http(port, "GET", "/v1/decisions?since=0", "");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
            (s("event"), s("action"), s("outcome"), d.clone())
        })
        .collect()
}

fn alert(status: &str) -> String {
    let ends = if status == "resolved" {
        let past = chrono::Utc::now() - chrono::Duration::seconds(1);
        format!(
            r#","endsAt":"{}""#,
            past.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    } else {
        String::new()
    };
    format!(
        r#"[{{"labels":{{"alertname":"KubeletDown","node":"node-7","fault_class":"component","cluster":"c1"}},"annotations":{{"summary":"kubelet on node-7 is down"}}{ends}}}]"#
    )
}

#[test]
fn a_real_alert_cordons_and_tickets_and_its_resolution_uncordons() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, fake_port) = start_fakes("node-7");
    let kubeconfig = kubeconfig(dir.path(), fake_port);
    let config = dir.path().join("remedy.toml");
    std::fs::write(
        &config,
        format!(
            r#"rules = "rules"
dry_run = false

[faults.component_crash]
actions = ["cordon", "ticket"]
on_resolve = ["uncordon"]

[actions.cordon]
executor = "kubernetes"
kubeconfig = "{k}"

[actions.uncordon]
executor = "kubernetes"
kubeconfig = "{k}"

[actions.ticket]
executor = "http"
url = "http://127.0.0.1:{fake_port}/tickets"
"#,
            k = kubeconfig.display()
        ),
    )
    .unwrap();
    let remedy = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let port = remedy.port;
    let logged = || remedy.logged();

    let am = Alertmanager::start(dir.path(), port);

    // The alert fires: the fault opens, the node is cordoned and a ticket filed.
    am.post(&alert("firing"));
    let executed = |action: &str| {
        decisions(port)
            .iter()
            .any(|(e, a, o, _)| e == "action" && a == action && o == "executed")
    };
    wait_for(
        "cordon and ticket executed",
        Duration::from_secs(40),
        || executed("cordon") && executed("ticket"),
    );
    let all = decisions(port);
    let opened = all
        .iter()
        .find(|(e, ..)| e == "fault_opened")
        .expect("fault_opened");
    assert_eq!(opened.3["fault"], "component_crash", "{}", logged());
    assert_eq!(opened.3["node"], "node-7");
    let opened_at = opened.3["ts"].as_str().unwrap().to_string();

    let api = fake.seen("/api/v1/nodes/node-7");
    let patches: Vec<&Seen> = api.iter().filter(|s| s.method == "PATCH").collect();
    assert_eq!(patches.len(), 1, "one PATCH cordons the node: {api:?}");
    let patch: Value = serde_json::from_str(&patches[0].body).unwrap();
    assert_eq!(patch["spec"]["unschedulable"], true, "{patch}");
    assert!(
        patches[0].content_type.contains("merge-patch+json"),
        "{patches:?}"
    );
    assert_eq!(fake.node.lock().unwrap()["spec"]["unschedulable"], true);

    let tickets = fake.seen("/tickets");
    assert_eq!(tickets.len(), 1, "one ticket: {tickets:?}");
    assert_eq!(
        tickets[0].idempotency_key,
        format!("node-7/component_crash/{opened_at}")
    );
    let ticket: Value = serde_json::from_str(&tickets[0].body).unwrap();
    assert_eq!(ticket["node"], "node-7");
    assert_eq!(ticket["fault"], "component_crash");
    let ticket_decision = all
        .iter()
        .find(|(_, a, o, _)| a == "ticket" && o == "executed")
        .unwrap();
    assert!(
        ticket_decision.3["detail"]
            .as_str()
            .unwrap_or("")
            .contains("REPAIR-1"),
        "the executor's answer is journaled: {}",
        ticket_decision.3
    );

    // The alert resolves: the fault closes and remedy uncordons what it cordoned.
    am.post(&alert("resolved"));
    wait_for("uncordon executed", Duration::from_secs(40), || {
        executed("uncordon")
    });
    let all = decisions(port);
    assert!(all.iter().any(|(e, ..)| e == "fault_resolved"));
    assert_eq!(
        fake.node.lock().unwrap()["spec"]["unschedulable"],
        Value::Bool(false),
        "{}",
        fake.node.lock().unwrap()
    );
    let actions: Vec<(&str, &str)> = all
        .iter()
        .filter(|(e, ..)| e == "action")
        .map(|(_, a, o, _)| (a.as_str(), o.as_str()))
        .collect();
    let mut sorted = actions.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("cordon", "executed"),
            ("ticket", "executed"),
            ("uncordon", "executed")
        ],
        "each action once: {actions:?}\n{}",
        logged()
    );
}

/// A job that was running when remedy was killed runs again at the next
/// start, with the same id (so the executor can tell), and is decided once.
#[test]
fn a_job_running_at_a_crash_runs_again_with_its_id_and_is_decided_once() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.txt");
    let script = format!(
        "echo \"$REMEDY_JOB_ID\" >> {}; sleep 2; echo repaired $REMEDY_NODE",
        runs.display()
    );
    std::fs::write(
        dir.path().join("remedy.toml"),
        format!(
            "dry_run = false\n[faults.memory_failure]\nactions = [\"repair\"]\n\
             [actions.repair]\nexecutor = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let start = || Remedy::start_on(port, dir.path(), &[], &["--config", "remedy.toml"]);
    let lines = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let first = start();
    let ue = r#"{"node":"n1","kind":"hardware","type":"memory.ecc.uncorrectable","ts":"2026-11-24T23:58:07Z","labels":{"cluster":"c1"}}"#;
    assert_eq!(http(port, "POST", "/v1/signals", ue).0, 202);
    wait_for("the repair to start", Duration::from_secs(20), || {
        lines().len() == 1
    });
    drop(first); // SIGKILL while the job runs
    assert_eq!(http(port, "GET", "/healthz", "").0, 0, "remedy is gone");

    let _second = start();
    let executed = || {
        decisions(port)
            .iter()
            .filter(|(e, a, o, _)| e == "action" && a == "repair" && o == "executed")
            .count()
    };
    wait_for("the repair to be executed", Duration::from_secs(30), || {
        executed() == 1
    });
    let runs = lines();
    assert_eq!(runs.len(), 2, "run again after the crash: {runs:?}");
    assert_eq!(runs[0], runs[1], "with the same job id");
    // The id names the occurrence: node, fault, when it opened (service time), action.
    let opened = decisions(port)
        .iter()
        .find(|(e, ..)| e == "fault_opened")
        .map(|(.., d)| d["ts"].as_str().unwrap().to_string())
        .expect("fault_opened");
    assert_eq!(runs[0], format!("n1/memory_failure/{opened}/repair"));
    // Wait a moment longer: nothing else runs or is decided.
    std::thread::sleep(Duration::from_millis(2500));
    let all = decisions(port);
    let summary: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|(e, a, o, _)| (e.as_str(), a.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        summary,
        [("fault_opened", "", ""), ("action", "repair", "executed")]
    );
    assert_eq!(all[1].3["detail"], "repaired n1");
    assert_eq!(lines().len(), 2);
}

/// `[identity] kubernetes = true`: the API server's node list says node-7
/// is 10.0.0.7, so node_exporter's alert about `instance` 10.0.0.7:9100
/// opens its fault on node-7 (dry-run: the list is read, nothing is done).
#[test]
fn the_kubernetes_node_list_names_the_machine_an_address_alert_is_about() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, fake_port) = start_fakes("node-7");
    let kubeconfig = kubeconfig(dir.path(), fake_port);
    std::fs::write(
        dir.path().join("remedy.toml"),
        format!(
            "[identity]\nkubernetes = true\n\n[actions.cordon]\nexecutor = \"kubernetes\"\nkubeconfig = \"{}\"\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let remedy = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    wait_for("the node list", Duration::from_secs(20), || {
        !fake.seen("/api/v1/nodes").is_empty()
    });
    let collector = format!("kubernetes nodes http://127.0.0.1:{fake_port}");
    wait_for("the node list reported", Duration::from_secs(20), || {
        remedy.json("/readyz")["collectors"][&collector]["up"] == true
    });
    let alert = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"NodeFilesystemAlmostOutOfSpace","instance":"10.0.0.7:9100","job":"node","device":"/dev/sda1","fstype":"ext4","mountpoint":"/","severity":"critical"},"startsAt":"2026-11-24T10:00:00Z","fingerprint":"77"}]}"#;
    let (status, answer) = remedy.request("POST", "/v1/alertmanager", alert, None);
    assert_eq!(status, 202, "{answer}");
    let faults = remedy.json("/v1/faults?state=open");
    let nodes: Vec<&str> = faults
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["node-7"], "{faults}");
    let list = fake.seen("/api/v1/nodes");
    assert_eq!(list[0].method, "GET");
    assert!(
        fake.seen("/api/v1/nodes/node-7").is_empty(),
        "dry-run: the node itself is not touched"
    );
}

/// No node stays schedulable because one call failed: a cordon that meets an
/// API server refusing connections is `failed` with `retry_at`; remedy is
/// killed (-9) while it waits; once the API server is up, the restarted
/// remedy resumes the journaled job and the node is cordoned once.
#[test]
fn a_cordon_refused_by_an_unreachable_api_server_is_retried_and_lands_once_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    // Reserve the API server's port; nothing serves it yet: connection refused.
    let api = TcpListener::bind("127.0.0.1:0").unwrap();
    let api_port = api.local_addr().unwrap().port();
    let api = {
        drop(api);
        api_port
    };
    let kubeconfig = kubeconfig(dir.path(), api);
    std::fs::write(
        dir.path().join("remedy.toml"),
        format!(
            "dry_run = false\n[faults.memory_failure]\nactions = [\"cordon\"]\n\n\
             [actions.cordon]\nexecutor = \"kubernetes\"\nkubeconfig = \"{}\"\nretry_for = \"10m\"\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let args = ["--config", "remedy.toml"];
    let mut first = Remedy::start_on(port, dir.path(), &[], &args);
    let ue = r#"{"node":"node-7","kind":"hardware","type":"memory.ecc.uncorrectable","ts":"2026-11-24T23:58:07Z","labels":{"cluster":"c1"}}"#;
    assert_eq!(http(port, "POST", "/v1/signals", ue).0, 202);
    let cordons = |port: u16| -> Vec<Value> {
        decisions(port)
            .into_iter()
            .filter(|(e, a, ..)| e == "action" && a == "cordon")
            .map(|(.., d)| d)
            .collect()
    };
    wait_for(
        "a failed cordon with retry_at",
        Duration::from_secs(20),
        || cordons(port).iter().any(|d| d["outcome"] == "failed"),
    );
    let failed = cordons(port);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]["retry_at"].is_string(),
        "{}\n{}",
        failed[0],
        first.logged()
    );
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("127.0.0.1"),
        "the reason names the server: {}",
        failed[0]
    );
    first.kill_9();

    let listener = TcpListener::bind(("127.0.0.1", api)).expect("the API server's port");
    let (fake, _) = start_fakes_on("node-7", listener);
    let second = Remedy::start_on(port, dir.path(), &[], &args);
    wait_for("the cordon executed", Duration::from_secs(30), || {
        cordons(second.port)
            .iter()
            .any(|d| d["outcome"] == "executed")
    });
    let outcomes: Vec<String> = cordons(second.port)
        .iter()
        .map(|d| d["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, ["failed", "executed"]);
    let patches: Vec<Seen> = fake
        .seen("/api/v1/nodes/node-7")
        .into_iter()
        .filter(|s| s.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1, "cordoned once: {patches:?}");
    assert_eq!(fake.node.lock().unwrap()["spec"]["unschedulable"], true);
}

/// An API server that is down for a few seconds: the cordon is `failed` with
/// `retry_at`, tried again once it is back, and lands once. One that
/// answers 403 (no RBAC for nodes) is final at once: no retry.
#[test]
fn a_cordon_is_retried_while_the_api_server_is_down_and_a_403_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let api = TcpListener::bind("127.0.0.1:0").unwrap();
    let api_port = api.local_addr().unwrap().port();
    drop(api); // connection refused until the fake serves it
    let kubeconfig = kubeconfig(dir.path(), api_port);
    std::fs::write(
        dir.path().join("remedy.toml"),
        format!(
            "dry_run = false\n[guards]\nmax_unhealthy = 10\n[faults.memory_failure]\nactions = [\"cordon\"]\n\n\
             [actions.cordon]\nexecutor = \"kubernetes\"\nkubeconfig = \"{}\"\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let remedy = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let ue = |node: &str| {
        format!(
            r#"{{"node":"{node}","kind":"hardware","type":"memory.ecc.uncorrectable","ts":"2026-11-24T23:58:07Z","labels":{{"cluster":"c1"}}}}"#
        )
    };
    assert_eq!(
        remedy.request("POST", "/v1/signals", &ue("node-7"), None).0,
        202
    );
    let cordons = |node: &str| -> Vec<Value> {
        remedy
            .decisions()
            .into_iter()
            .filter(|d| d["event"] == "action" && d["action"] == "cordon" && d["node"] == node)
            .collect()
    };
    wait_for("the first failure", Duration::from_secs(20), || {
        !cordons("node-7").is_empty()
    });
    let listener = TcpListener::bind(("127.0.0.1", api_port)).expect("the API server's port");
    let (fake, _) = start_fakes_on("node-7", listener);
    wait_for("the retried cordon", Duration::from_secs(30), || {
        cordons("node-7").iter().any(|d| d["outcome"] == "executed")
    });
    let seen = cordons("node-7");
    let outcomes: Vec<&str> = seen
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "executed"], "{seen:?}");
    assert!(seen[0]["retry_at"].is_string());
    assert_eq!(fake.node.lock().unwrap()["spec"]["unschedulable"], true);

    // RBAC says no: final at once.
    fake.forbid
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        remedy.request("POST", "/v1/signals", &ue("node-8"), None).0,
        202
    );
    wait_for("the 403", Duration::from_secs(20), || {
        !cordons("node-8").is_empty()
    });
    std::thread::sleep(Duration::from_secs(6)); // past the first retry's 5s
    let forbidden = cordons("node-8");
    assert_eq!(forbidden.len(), 1, "no retry: {forbidden:?}");
    assert_eq!(forbidden[0]["outcome"], "failed");
    assert!(forbidden[0]["retry_at"].is_null(), "{}", forbidden[0]);
    assert!(
        forbidden[0]["reason"].as_str().unwrap().contains("403"),
        "{}",
        forbidden[0]
    );
    let gets = fake.seen("/api/v1/nodes/node-8");
    assert_eq!(gets.len(), 1, "asked once: {gets:?}");
}
