//! Node final state (contract 10), as a user runs it: `remedy simulate
//! rollout` converges 2,000 workers from kubelet 1.30.4 to 1.31.2 in a
//! closed loop with the pipeline (examples/rollout.toml), and `remedy run`
//! keeps a wave's steps across a kill -9.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use remedy_engine::Timestamp;
use serde_json::Value;

fn simulate(config: &Path, args: &[&str]) -> (Vec<Value>, String) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .current_dir(repo)
        .args(["simulate", "rollout", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("remedy runs");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let decisions = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a decision per line"))
        .collect();
    (decisions, stderr)
}

fn ts(d: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(d["ts"].as_str().expect("ts")).expect("RFC 3339")
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).expect("RFC 3339")
}

fn is(d: &Value, event: &str, fault: &str, action: &str) -> bool {
    d["event"] == event && d["fault"] == fault && (action.is_empty() || d["action"] == action)
}

fn done(d: &Value) -> bool {
    d["outcome"] == "executed" || d["outcome"] == "dry_run"
}

fn cluster(node: &str) -> String {
    let i: u64 = node.trim_start_matches("node-").parse().expect("node-N");
    format!("c{:03}", i / 2000)
}

/// When each node's upgrade started: its first rollout action's decision.
fn starts(decisions: &[Value]) -> BTreeMap<String, Timestamp> {
    let mut starts = BTreeMap::new();
    for d in decisions {
        if is(d, "action", "version_drift", "cordon") && d["why"]["rung"] == "rollout" {
            starts
                .entry(d["node"].as_str().unwrap().to_string())
                .or_insert(ts(d));
        }
    }
    starts
}

#[test]
fn a_wave_keeps_its_window_its_concurrency_and_the_budget_it_shares_with_a_repair_storm() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (decisions, stderr) = simulate(
        &repo.join("examples/rollout.toml"),
        &["--minutes", "300", "--storm", "--fail", "0"],
    );
    // The window: Tuesday 02:00-05:00 in Berlin is 01:00-04:00 UTC.
    let (open, close) = (at("2026-11-24T01:00:00Z"), at("2026-11-24T04:00:00Z"));
    let starts = starts(&decisions);
    assert!(
        starts.len() >= 500,
        "{} nodes started:\n{stderr}",
        starts.len()
    );
    for (node, t) in &starts {
        assert!(
            *t >= open && *t < close,
            "{node} started at {t}, outside the window"
        );
    }
    // Concurrency: from a node's start to its gates_passed, at most 25 at once.
    let mut converging = BTreeSet::new();
    let mut most = 0;
    // Budget: nodes cordoned and not yet uncordoned, per cluster, repairs
    // (the storm's power failures) and upgrades together.
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut most_out = 0;
    let mut power_cordons = 0;
    for d in &decisions {
        let node = d["node"].as_str().unwrap().to_string();
        if is(d, "action", "version_drift", "cordon") && starts.get(&node) == Some(&ts(d)) {
            converging.insert(node.clone());
        }
        if d["event"] == "step" && d["step"] == "gates_passed" {
            assert!(
                converging.remove(&node),
                "{node} passed its gates without starting"
            );
        }
        most = most.max(converging.len());
        if d["event"] == "action" && done(d) {
            let set = out.entry(cluster(&node)).or_default();
            match d["action"].as_str() {
                Some("cordon") => {
                    set.insert(node.clone());
                    power_cordons += usize::from(d["fault"] == "power_failure");
                }
                Some("uncordon") => {
                    set.remove(&node);
                }
                _ => {}
            }
            most_out = most_out.max(set.len());
        }
    }
    assert_eq!(most, 25, "concurrency 25 was {most}");
    assert!(power_cordons > 0, "the storm cordoned nothing:\n{stderr}");
    assert!(
        most_out <= 100,
        "{most_out} nodes of a cluster out of service at once, max_unhealthy 5% of 2,000 is 100"
    );
    assert!(
        decisions
            .iter()
            .any(|d| d["outcome"] == "budget_exhausted" && d["fault"] == "version_drift"),
        "the storm never held an upgrade step back"
    );
    // Every node that started converged, every converged node went back
    // into service, and each step happened once per node.
    let mut steps: BTreeMap<(String, String), usize> = BTreeMap::new();
    for d in decisions.iter().filter(|d| d["event"] == "step") {
        *steps
            .entry((
                d["node"].as_str().unwrap().into(),
                d["step"].as_str().unwrap().into(),
            ))
            .or_default() += 1;
    }
    let end = at("2026-11-24T05:00:00Z");
    for node in starts.keys() {
        for step in ["cordoned", "drained", "applied", "gates_passed"] {
            let n = steps.get(&(node.clone(), step.to_string())).copied();
            assert_eq!(n, Some(1), "{node}: step {step} {n:?} times");
        }
        // Back in service: by its upgrade's uncordon, or by the repair's
        // when a power failure had it out of service too.
        let passed = decisions
            .iter()
            .find(|d| d["node"] == *node && d["step"] == "gates_passed")
            .map(ts)
            .unwrap();
        let back = decisions
            .iter()
            .any(|d| d["node"] == *node && d["action"] == "uncordon" && done(d) && ts(d) >= passed);
        let late = end.0 - passed.0 < 30 * 60 * 1000;
        assert!(
            back || late,
            "{node} passed its gates at {passed} and was never uncordoned"
        );
        let uncordoned = steps.get(&(node.clone(), "uncordoned".into())).copied();
        assert!(
            uncordoned.unwrap_or(0) <= 1,
            "{node} uncordoned {uncordoned:?} times"
        );
    }
    assert!(stderr.contains("most converging at once: 25"), "{stderr}");
}

#[test]
fn a_failed_upgrade_halts_the_wave_once_and_its_node_stays_cordoned_until_its_gate_holds() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("rollout.toml");
    std::fs::write(
        &config,
        format!(
            r#"rules = "{}"
[[node_class]]
name = "worker"
selector = {{ role = "worker" }}
components = {{ kubelet = "1.31.2" }}
gates = [{{ condition = "KubeletOK" }}, {{ condition = "DiskOK", mode = "bootstrap" }}]
rollout = {{ concurrency = 10, deadline = "20m" }}
"#,
            repo.join("rules").display()
        ),
    )
    .unwrap();
    let (decisions, stderr) = simulate(&config, &["--minutes", "200", "--fail", "60"]);
    let halts: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["event"] == "step" && d["step"] == "halted")
        .collect();
    assert!(
        !halts.is_empty(),
        "no node failed within the run:\n{stderr}"
    );
    let starts = starts(&decisions);
    for halt in &halts {
        let node = halt["node"].as_str().unwrap();
        let halted = ts(halt);
        let resumed = decisions
            .iter()
            .find(|d| d["node"] == node && d["step"] == "gates_passed")
            .map(ts);
        // The wave waits for the node that stopped it.
        for (other, t) in &starts {
            assert!(
                !(*t > halted && resumed.is_none_or(|r| *t < r)),
                "{other} started at {t}, while the wave was halted by {node} ({halted}..{resumed:?})"
            );
        }
        // One decision, one notification.
        let said = |f: &dyn Fn(&Value) -> bool| {
            decisions
                .iter()
                .filter(|d| d["node"] == node && f(d))
                .count()
        };
        assert_eq!(
            said(&|d| d["step"] == "halted"),
            1,
            "{node} halted more than once"
        );
        assert_eq!(said(&|d| is(d, "action", "version_drift", "notify")), 1);
        // Its failing gate cordoned it, and nothing put it back before the
        // gate held again.
        let gate = |event: &str| {
            decisions
                .iter()
                .find(|d| d["node"] == node && is(d, event, "gate_failed", ""))
                .map(ts)
        };
        let failed = gate("fault_opened").expect("a gate_failed");
        assert!(
            decisions.iter().any(|d| d["node"] == node
                && is(d, "action", "gate_failed", "cordon")
                && done(d)
                && d["params"]["gates"] == "KubeletOK=false,DiskOK=true"),
            "{node}: no cordon for its failing gate"
        );
        let held = gate("fault_resolved").unwrap_or(at("2100-01-01T00:00:00Z"));
        for d in decisions
            .iter()
            .filter(|d| d["node"] == node && d["action"] == "uncordon" && done(d))
        {
            assert!(
                ts(d) > held,
                "{node} uncordoned at {} while KubeletOK failed ({failed}..{held})",
                ts(d)
            );
        }
    }
}

#[test]
fn classes_that_overlap_and_gates_without_a_condition_are_refused_naming_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        r#"
[[node_class]]
name = "worker"
selector = { role = "worker" }
components = { kubelet = "1.31.2" }

[[node_class]]
name = "gpu"
selector = { pool = "gpu" }
components = { kubelet = "1.31.2" }
gates = [{ mode = "bootstrap" }]
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["simulate", "rollout", "--config"])
        .arg(&config)
        .output()
        .expect("remedy runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"gpu\": gates[0] has no condition"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "\"worker\" and \"gpu\" overlap: a node labelled {pool=gpu, role=worker} matches both"
        ),
        "{stderr}"
    );
}

fn post(remedy: &common::Remedy, lines: &[String]) {
    let (status, body) = remedy.request("POST", "/v1/signals", &lines.join("\n"), None);
    assert_eq!(status, 202, "{body}");
}

fn report(node: &str, version: &str) -> Vec<String> {
    let labels = r#""role":"worker","cluster":"c1""#;
    vec![
        format!(
            r#"{{"node":"{node}","kind":"component","type":"component.version","labels":{{"component":"kubelet","version":"{version}",{labels}}}}}"#
        ),
        format!(
            r#"{{"node":"{node}","kind":"component","type":"condition","labels":{{"condition":"KubeletOK",{labels}}},"value":1}}"#
        ),
    ]
}

#[test]
fn a_wave_killed_mid_step_resumes_where_it_was_and_repeats_no_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Two at a time; the second drain waits an hour for the drain quota,
    // so the wave is mid-step when the service dies.
    std::fs::write(
        dir.path().join("remedy.toml"),
        r#"
dry_run = true
[[node_class]]
name = "worker"
selector = { role = "worker" }
components = { kubelet = "1.31.2" }
gates = [{ condition = "KubeletOK" }]
rollout = { concurrency = 2 }

[faults.version_drift]
healthy_delay = "0s"

[actions.drain]
rate = "1/hour"

[guards]
max_unhealthy = "100%"
"#,
    )
    .unwrap();
    let args = ["--config", "remedy.toml"];
    let mut remedy = common::Remedy::start_with(dir.path(), &[], &args);
    for node in ["n1", "n2", "n3"] {
        post(&remedy, &report(node, "1.30.4"));
    }
    let steps_of = |decisions: &[Value], node: &str| -> Vec<String> {
        decisions
            .iter()
            .filter(|d| d["node"] == node && d["event"] == "step" && d["fault"] == "version_drift")
            .map(|d| d["step"].as_str().unwrap().to_string())
            .collect()
    };
    common::wait_for(
        "n1 applied and n2's drain held",
        Duration::from_secs(20),
        || {
            let d = remedy.decisions();
            steps_of(&d, "n1").contains(&"applied".to_string())
                && d.iter().any(|d| {
                    d["node"] == "n2" && d["action"] == "drain" && d["outcome"] == "rate_limited"
                })
        },
    );
    remedy.kill_9();

    let remedy = common::Remedy::start_on(remedy.port, dir.path(), &[], &args);
    let rollouts = remedy.json("/v1/rollouts");
    let worker = &rollouts[0];
    assert_eq!(worker["class"], "worker", "{rollouts}");
    assert_eq!(
        worker["in_progress"].as_array().map(Vec::len),
        Some(2),
        "{rollouts}"
    );
    assert_eq!(
        worker["pending"], 1,
        "n3 waits for a free place: {rollouts}"
    );
    // n1 converges: its gates pass, it goes back into service, n3 starts.
    post(&remedy, &report("n1", "1.31.2"));
    common::wait_for("n3 started", Duration::from_secs(20), || {
        steps_of(&remedy.decisions(), "n3").contains(&"cordoned".to_string())
    });
    let decisions = remedy.decisions();
    assert_eq!(
        steps_of(&decisions, "n1"),
        [
            "cordoned",
            "drained",
            "applied",
            "gates_passed",
            "uncordoned"
        ],
        "n1's steps, each once"
    );
    assert_eq!(
        steps_of(&decisions, "n2"),
        ["cordoned"],
        "n2 still waits for its drain"
    );
    let asked = |node: &str, action: &str| {
        decisions
            .iter()
            .filter(|d| d["node"] == node && d["fault"] == "version_drift" && d["action"] == action)
            .filter(|d| d["outcome"] != "rate_limited")
            .count()
    };
    assert_eq!(asked("n1", "cordon"), 1);
    assert_eq!(asked("n1", "upgrade"), 1, "n1's upgrade was not sent again");
    assert_eq!(asked("n2", "cordon"), 1);
    assert_eq!(
        asked("n2", "upgrade"),
        0,
        "n2 is not upgraded before it is drained"
    );
    let node = remedy.json("/v1/nodes/n1");
    assert_eq!(node["final_state"]["rollout"], "converged", "{node}");
    assert_eq!(node["final_state"]["gates"][0]["holds"], true, "{node}");
    let n2 = remedy.json("/v1/nodes/n2");
    assert_eq!(n2["final_state"]["rollout"], "in_progress", "{n2}");
    assert_eq!(n2["final_state"]["step"], "cordoned", "{n2}");
}

#[test]
fn a_diff_of_a_new_desired_version_previews_the_nodes_and_the_waves() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    // 400 workers in two clusters; one in ten already runs 1.31.2.
    let mut lines = Vec::new();
    for i in 0..400 {
        let version = if i % 10 == 0 { "1.31.2" } else { "1.30.4" };
        let labels = format!(r#""role":"worker","cluster":"c{}""#, i / 200);
        let at = format!("2026-11-24T00:00:{:02}Z", i % 60);
        lines.push((at.clone(), format!(r#"{{"ts":"{at}","node":"node-{i:05}","kind":"component","type":"component.version","labels":{{"component":"kubelet","version":"{version}",{labels}}}}}"#)));
    }
    lines.sort();
    let input = dir.path().join("reports.jsonl");
    let text: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
    std::fs::write(&input, text.join("\n") + "\n").unwrap();
    let example = std::fs::read_to_string(repo.join("examples/rollout.toml")).unwrap();
    let rules = format!("rules = {:?}", repo.join("rules").display().to_string());
    let new = example.replace(r#"rules = "../rules""#, &rules);
    let old = new.replace("kubelet = \"1.31.2\"", "kubelet = \"1.30.4\"");
    assert_ne!(old, new);
    std::fs::write(dir.path().join("old.toml"), old).unwrap();
    std::fs::write(dir.path().join("new.toml"), new).unwrap();
    let run = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_remedy"));
        cmd.current_dir(dir.path())
            .args(["diff", "old.toml", "new.toml", "reports.jsonl"]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("remedy runs");
        assert_eq!(out.status.code(), Some(1), "differences: exit 1");
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run(false);
    assert!(
        table.contains("node_class worker: kubelet 1.31.2 (was kubelet 1.30.4)"),
        "{table}"
    );
    assert!(
        table.contains("360 of 400 nodes would converge: node-00001, node-00002"),
        "{table}"
    );
    assert!(
        table.contains(
            "36 waves of 10 (the budget of cluster c0: 10 of 200 known nodes, max_unhealthy 5%)"
        ),
        "{table}"
    );
    assert!(
        table.contains("mon,tue,wed,thu 02:00-05:00 Europe/Berlin (12 hours a week)"),
        "{table}"
    );
    let preview: Value = run(true)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["kind"] == "rollout")
        .expect("a rollout preview line");
    assert_eq!(preview["converge"].as_array().map(Vec::len), Some(360));
    assert_eq!(preview["waves"], 36);
    assert!(
        !preview["converge"]
            .as_array()
            .unwrap()
            .contains(&"node-00010".into()),
        "already at 1.31.2"
    );
}

/// The kubelet version a node_exporter's textfile collector reports,
/// written as a textfile producer does (a whole new file, renamed).
fn write_kubelet_version(textfiles: &Path, version: &str) {
    let tmp = textfiles.join("versions.prom.tmp");
    std::fs::write(
        &tmp,
        format!(
            "# HELP component_version Versions of the node's components.\n# TYPE component_version gauge\ncomponent_version{{component=\"kubelet\",version=\"{version}\"}} 1\n"
        ),
    )
    .unwrap();
    std::fs::rename(&tmp, textfiles.join("versions.prom")).unwrap();
}

/// A real node exporter under `dir` whose textfile collector reports
/// kubelet `version`, and that textfile directory.
fn exporter_reporting(dir: &Path, version: &str) -> (common::NodeExporter, PathBuf) {
    let textfiles = dir.join("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    write_kubelet_version(&textfiles, version);
    let exporter = common::NodeExporter::start(&[format!(
        "--collector.textfile.directory={}",
        textfiles.display()
    )]);
    (exporter, textfiles)
}

/// A line of this machine's /proc/sys/kernel.
fn kernel(what: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/kernel/{what}"))
        .unwrap()
        .trim()
        .to_string()
}

/// `GET /v1/nodes/NODE`, or null while the node is not known.
fn node_state(remedy: &common::Remedy, node: &str) -> Value {
    let (status, body) = remedy.get(&format!("/v1/nodes/{node}"));
    if status == 200 {
        serde_json::from_str(&body).unwrap()
    } else {
        Value::Null
    }
}

#[test]
fn versions_scraped_from_a_real_node_exporter_open_drift_and_close_it_when_they_converge() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (exporter, textfiles) = exporter_reporting(dir.path(), "1.30.4");
    let kernel = kernel("osrelease");
    std::fs::write(
        dir.path().join("remedy.toml"),
        format!(
            r#"
[[scrape]]
url = "http://127.0.0.1:{}/metrics"
every = "1s"
node = "node-0042"
metrics = {{ component_version = "component.version", node_uname_info = {{ type = "component.version", labels = {{ component = "kernel" }}, rename = {{ release = "version" }} }} }}

[[node_class]]
name = "all"
selector = {{}}
components = {{ kubelet = "1.31.2", kernel = "{kernel}" }}
"#,
            exporter.port
        ),
    )
    .unwrap();
    let remedy = common::Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let state = |remedy: &common::Remedy| node_state(remedy, "node-0042");
    common::wait_for("kubelet drift", Duration::from_secs(20), || {
        state(&remedy)["final_state"]["drift"][0]["component"] == "kubelet"
    });
    let node = state(&remedy);
    let f = &node["final_state"];
    assert_eq!(
        f["drift"].as_array().map(Vec::len),
        Some(1),
        "the kernel is as desired: {node}"
    );
    assert_eq!(f["drift"][0]["observed"], "1.30.4", "{node}");
    assert_eq!(
        node["observed"]["components"]["kernel"][0],
        kernel.as_str(),
        "{node}"
    );
    assert!(
        node["labels"].get("version").is_none() && node["labels"].get("component").is_none(),
        "a report's labels are not the node's: {node}"
    );
    write_kubelet_version(&textfiles, "1.31.2");
    common::wait_for("converged", Duration::from_secs(20), || {
        state(&remedy)["final_state"]["rollout"] == "converged"
    });
    let decisions = remedy.decisions();
    let events: Vec<(&str, &str)> = decisions
        .iter()
        .filter(|d| d["fault"] == "version_drift" && d["event"] != "action")
        .map(|d| {
            (
                d["event"].as_str().unwrap(),
                d["step"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("fault_opened", ""),
            ("step", "cordoned"),
            ("step", "drained"),
            ("step", "applied"),
            ("step", "gates_passed"),
            ("fault_resolved", "")
        ],
        "the old series going away did not bring 1.30.4 back"
    );
}

#[test]
fn versions_queried_from_a_real_prometheus_name_their_node_and_converge() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (exporter, textfiles) = exporter_reporting(dir.path(), "1.30.4");
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir(&prom_dir).unwrap();
    let prometheus = common::Prometheus::start(
        &prom_dir,
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            exporter.port
        ),
        None,
    );
    let (kernel, host) = (kernel("osrelease"), kernel("hostname"));
    // The README's queries: the kernel from node_uname_info, the kubelet
    // from a textfile metric joined to node_uname_info for its node name.
    std::fs::write(
        dir.path().join("remedy.toml"),
        format!(
            r#"
[[prometheus]]
url = "http://127.0.0.1:{port}"
query = 'label_replace(label_replace(node_uname_info, "version", "$1", "release", "(.*)"), "component", "kernel", "", "")'
type = "component.version"
every = "1s"

[[prometheus]]
url = "http://127.0.0.1:{port}"
query = 'component_version * on (instance) group_left (nodename) node_uname_info'
type = "component.version"
every = "1s"

[[node_class]]
name = "all"
selector = {{}}
components = {{ kubelet = "1.31.2", kernel = "{kernel}" }}
"#,
            port = prometheus.port
        ),
    )
    .unwrap();
    let remedy = common::Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let state = || node_state(&remedy, &host);
    common::wait_for(
        "kubelet drift from Prometheus",
        Duration::from_secs(60),
        || {
            let s = state();
            s["final_state"]["drift"][0]["component"] == "kubelet"
                && s["observed"]["components"]["kernel"][0] == kernel.as_str()
        },
    );
    let node = state();
    assert_eq!(
        node["final_state"]["drift"].as_array().map(Vec::len),
        Some(1),
        "{node}"
    );
    write_kubelet_version(&textfiles, "1.31.2");
    common::wait_for("converged", Duration::from_secs(60), || {
        state()["final_state"]["rollout"] == "converged"
    });
    let decisions = remedy.decisions();
    assert_eq!(
        decisions
            .iter()
            .filter(|d| d["fault"] == "version_drift" && d["event"] == "fault_resolved")
            .count(),
        1,
        "resolved once, not reopened by the old series going away"
    );
}

#[test]
fn an_operator_resumes_a_halted_wave_over_the_api() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("remedy.toml"),
        r#"
[[node_class]]
name = "worker"
selector = { role = "worker" }
components = { kubelet = "1.31.2" }
rollout = { deadline = "1s" }

[guards]
max_unhealthy = "100%"
"#,
    )
    .unwrap();
    let remedy = common::Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    for node in ["n1", "n2"] {
        post(&remedy, &report(node, "1.30.4"));
    }
    // n1's upgrade never reports back: a second later the wave halts.
    common::wait_for("the wave halted", Duration::from_secs(20), || {
        !remedy.json("/v1/rollouts")[0]["halted"].is_null()
    });
    let rollouts = remedy.json("/v1/rollouts");
    assert_eq!(rollouts[0]["halted"]["node"], "n1", "{rollouts}");
    assert_eq!(rollouts[0]["pending"], 1, "n2 waits: {rollouts}");
    let (status, body) = remedy.request("POST", "/v1/rollouts/worker/resume", "", None);
    assert_eq!(status, 200, "{body}");
    common::wait_for("n2 started", Duration::from_secs(20), || {
        remedy
            .decisions()
            .iter()
            .any(|d| d["node"] == "n2" && d["step"] == "cordoned")
    });
    let decisions = remedy.decisions();
    let resumed: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["step"] == "resumed")
        .collect();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["node"], "n1");
    let (status, _) = remedy.request("POST", "/v1/rollouts/nope/resume", "", None);
    assert_eq!(status, 404, "no such class");
    let n1 = remedy.json("/v1/nodes/n1");
    assert_eq!(
        n1["final_state"]["rollout"], "drifted",
        "left as it is: {n1}"
    );
}
