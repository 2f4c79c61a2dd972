//! `remedy run`, end to end: the real binary on a free loopback port, a
//! journal in a temp directory, requests over plain HTTP/1.1.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{request, Alertmanager, NodeExporter, Prometheus, Remedy};

const UE: &str = r#"{"node":"n1","kind":"hardware","type":"memory.ecc.uncorrectable","ts":"2026-11-24T23:58:07Z","labels":{"cluster":"c1"}}"#;
const DISK: &str = r#"{"node":"n2","kind":"hardware","type":"disk.smart.failing","ts":"2026-11-24T23:58:09Z","labels":{"cluster":"c1"}}"#;

fn events(decisions: &Value) -> Vec<(String, String, String)> {
    decisions["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| {
            (
                d["event"].as_str().unwrap_or("").to_string(),
                d["node"].as_str().unwrap_or("").to_string(),
                d["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn signals_are_decided_journaled_and_bad_lines_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    let body = format!("{UE}\n{{\"node\":\"n9\"}}\nnot json\n{DISK}\n");
    let (status, answer) = s.request("POST", "/v1/signals", &body, None);
    assert_eq!(status, 400, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(answer["errors"][0]["line"], 2);
    assert!(answer["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("\"kind\""));
    assert_eq!(answer["errors"][1]["line"], 3);

    let (status, _) = s.request("POST", "/v1/signals", UE, None);
    assert_eq!(status, 202, "a repeat is accepted, and opens nothing");
    let faults = s.json("/v1/faults?state=open");
    let open: Vec<(&str, &str)> = faults
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["node"].as_str().unwrap(), f["fault"].as_str().unwrap()))
        .collect();
    assert_eq!(open, [("n1", "memory_failure"), ("n2", "disk_failure")]);
    let all = s.json("/v1/decisions");
    let opened = events(&all)
        .iter()
        .filter(|e| e.0 == "fault_opened")
        .count();
    assert_eq!(opened, 2);
    let next = all["next"].as_i64().unwrap();
    assert_eq!(events(&s.json(&format!("/v1/decisions?since={next}"))), []);
    assert_eq!(
        s.request("GET", "/v1/faults?state=sideways", "", None).0,
        400
    );
    assert_eq!(s.json("/readyz")["journal_writable"], true);

    let (code, stderr) = s.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("remedy stopped"), "{stderr}");
}

#[test]
fn after_kill_9_a_restart_reopens_nothing_and_repeats_no_action() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = Remedy::start(dir.path(), &[]);
    assert_eq!(
        s.request("POST", "/v1/signals", &format!("{UE}\n{DISK}"), None)
            .0,
        202
    );
    let before = s.json("/v1/decisions");
    let faults_before = s.json("/v1/faults");
    s.kill_9();

    let s = Remedy::start(dir.path(), &[]);
    assert_eq!(
        s.json("/v1/faults"),
        faults_before,
        "the same faults after the crash"
    );
    // The same signals again, as an at-least-once producer would resend them.
    assert_eq!(
        s.request("POST", "/v1/signals", &format!("{UE}\n{DISK}"), None)
            .0,
        202
    );
    let next = before["next"].as_i64().unwrap();
    let after = s.json(&format!("/v1/decisions?since={next}"));
    let new = events(&after);
    assert!(
        new.iter().all(|e| e.0 == "action" && e.2 == "reinstall"),
        "nothing reopened, nothing repeated (only the escalation that fell due): {new:?}"
    );
    let reinstalls = new.iter().filter(|e| e.2 == "reinstall").count();
    // Restart once more: the reinstall escalation is not asked for again.
    let (code, _) = s.stop();
    assert_eq!(code, 0);
    let s = Remedy::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1500)); // a timer tick or two
    let later = events(&s.json(&format!("/v1/decisions?since={next}")));
    assert_eq!(
        later.iter().filter(|e| e.2 == "reinstall").count(),
        reinstalls,
        "{later:?}"
    );
}

#[test]
fn a_token_guards_the_api_and_big_bodies_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[("REMEDY_TOKEN", "s3cret-token-0123456789")]);
    assert_eq!(s.request("POST", "/v1/signals", UE, None).0, 401);
    assert_eq!(s.request("POST", "/v1/signals", UE, Some("wrong")).0, 401);
    assert_eq!(
        s.request("POST", "/v1/signals", UE, Some("s3cret-token-0123456789"))
            .0,
        202
    );
    // The scheme is case-insensitive (RFC 9110).
    let raw = "GET /v1/faults HTTP/1.1\r\nHost: localhost\r\nAuthorization: bearer s3cret-token-0123456789\r\nConnection: close\r\n\r\n";
    let answer = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        stream.write_all(raw.as_bytes()).unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A silence without any matcher would silence the whole fleet.
    let (status, why) = s.request(
        "POST",
        "/v1/silences",
        r#"{"until":"2099-01-01T00:00:00Z","comment":"oops"}"#,
        Some("s3cret-token-0123456789"),
    );
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("whole fleet"), "{why}");
    let (status, _) = s.request(
        "POST",
        "/v1/silences",
        r#"{"until":"2099-01-01T00:00:00Z","all":true,"comment":"maintenance"}"#,
        Some("s3cret-token-0123456789"),
    );
    assert_eq!(status, 201, "all = true says it is meant");
    assert_eq!(
        s.request("GET", "/healthz", "", None).0,
        200,
        "health needs no token"
    );
    let big = format!(
        "{{\"node\":\"n1\",\"kind\":\"hardware\",\"type\":\"x\",\"message\":\"{}\"}}",
        "a".repeat(10 << 20)
    );
    assert_eq!(
        s.request("POST", "/v1/signals", &big, Some("s3cret-token-0123456789"))
            .0,
        413
    );
    let (code, stderr) = s.stop();
    assert_eq!(code, 0);
    assert!(
        !stderr.contains("s3cret-token-0123456789"),
        "the token is never logged: {stderr}"
    );
}

#[test]
fn listening_beyond_loopback_without_a_token_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .current_dir(dir.path())
        .arg("run")
        .env("REMEDY_LISTEN", "0.0.0.0:0")
        .env_remove("REMEDY_TOKEN")
        .output()
        .expect("remedy runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("without a token") && err.contains("0.0.0.0"),
        "{err}"
    );
}

#[test]
fn the_real_alertmanager_webhook_opens_the_faults_it_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/real/alertmanager_0.25_webhook.jsonl");
    for body in std::fs::read_to_string(fixture).expect("fixture").lines() {
        let (status, answer) = s.request("POST", "/v1/alertmanager", body, None);
        assert_eq!(status, 202, "{answer}");
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap()["accepted"],
            1
        );
    }
    let faults = s.json("/v1/faults?state=open&node=127.0.0.1");
    let mut names: Vec<&str> = faults
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fault"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["disk_pressure", "high_load"]);
    let (status, answer) = s.request("POST", "/v1/alertmanager", "{\"alerts\": 3}", None);
    assert_eq!(status, 400);
    assert!(
        answer.contains("not an Alertmanager webhook payload"),
        "{answer}"
    );
}

#[test]
fn silences_and_approvals_are_operated_over_the_api() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[faults.disk_failure]\nactions = [\"cordon\"]\napproval = true\n",
    )
    .unwrap();
    let s = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    // Silence memory failures on n1 until far in the future.
    let (status, answer) = s.request(
        "POST",
        "/v1/silences",
        r#"{"node":"n1","fault":"memory_failure","until":"2099-01-01T00:00:00Z","comment":"DIMM swap booked"}"#,
        None,
    );
    assert_eq!(status, 201, "{answer}");
    let id = serde_json::from_str::<Value>(&answer).unwrap()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(s.json("/v1/silences")[0]["comment"], "DIMM swap booked");
    assert_eq!(
        s.request("POST", "/v1/signals", &format!("{UE}\n{DISK}"), None)
            .0,
        202
    );
    let decisions = s.json("/v1/decisions");
    let outcome = |node: &str, action: &str| -> Vec<String> {
        decisions["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["node"] == node && d["action"] == action)
            .map(|d| d["outcome"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(outcome("n1", "cordon"), ["silenced"]);
    assert_eq!(outcome("n2", "cordon"), ["awaiting_approval"]);
    let waiting = s.json("/v1/approvals");
    let approval = waiting[0]["id"].as_u64().unwrap();
    assert_eq!(waiting[0]["node"], "n2");
    let (status, _) = s.request(
        "POST",
        &format!("/v1/approvals/{approval}/approve"),
        "",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        s.request(
            "POST",
            &format!("/v1/approvals/{approval}/reject"),
            "",
            None
        )
        .0,
        404
    );
    let after = s.json(&format!("/v1/decisions?since={}", decisions["next"]));
    assert_eq!(after["decisions"][0]["outcome"], "dry_run");
    assert_eq!(after["decisions"][0]["action"], "cordon");
    assert_eq!(
        s.request("DELETE", &format!("/v1/silences/{id}"), "", None)
            .0,
        204
    );
    assert_eq!(
        s.request("DELETE", &format!("/v1/silences/{id}"), "", None)
            .0,
        404
    );
    assert_eq!(
        s.request("POST", "/v1/silences", r#"{"node":"n1"}"#, None)
            .0,
        400,
        "until is required"
    );
}

#[test]
fn metrics_speak_prometheus_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    assert_eq!(
        s.request("POST", "/v1/signals", &format!("{UE}\nnot json"), None)
            .0,
        400
    );
    let (status, text) = s.request("GET", "/metrics", "", None);
    assert_eq!(status, 200);
    for line in [
        "remedy_signals_total{source=\"http\"} 1",
        "remedy_signals_rejected_total{source=\"http\"} 1",
        "remedy_rule_evaluations_total{rule=\"hardware/memory.rhai\"} 1",
        "remedy_faults_open{fault=\"memory_failure\"} 1",
        "remedy_actions_total{action=\"cordon\",outcome=\"dry_run\"} 1",
        "remedy_guard_under_remediation{level=\"cluster\",domain=\"c1\"} 1",
        "remedy_evaluation_seconds_count 1",
        "remedy_queue_depth 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn a_broken_rule_is_reported_and_the_old_rules_keep_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    let rule = dir.path().join("rules/hardware/memory.rhai");
    let good = std::fs::read_to_string(&rule).unwrap();
    std::fs::write(&rule, "fn classify(s) { let x = ; }").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let (_, body) = s.request("GET", "/readyz", "", None);
        let v: Value = serde_json::from_str(&body).unwrap();
        if v.get("last_reload_error").is_some() || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let error = ready["last_reload_error"]
        .as_str()
        .expect("the failure is reported");
    assert!(error.contains("hardware/memory.rhai:1:"), "{error}");
    // The old rules still classify.
    assert_eq!(s.request("POST", "/v1/signals", UE, None).0, 202);
    assert_eq!(
        s.json("/v1/faults?state=open")[0]["fault"],
        "memory_failure"
    );
    let (_, text) = s.request("GET", "/metrics", "", None);
    assert!(
        text.contains("remedy_rules_reload_failures_total 1"),
        "{text}"
    );
    // Fixed: reloaded, and the error is gone.
    std::fs::write(&rule, good).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = s.request("GET", "/readyz", "", None);
        if !body.contains("last_reload_error") {
            break;
        }
        assert!(Instant::now() < deadline, "never reloaded: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real Alertmanager (Debian's prometheus-alertmanager, which tests/run.sh
/// installs) with a webhook receiver pointing at remedy: an alert posted to
/// it arrives and opens the fault it names.
#[test]
fn a_real_alertmanager_delivers_to_remedy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    let am = Alertmanager::start(dir.path(), s.port);
    let alert = r#"[{"labels":{"alertname":"NodeHighLoad","instance":"10.1.2.3:9100","fault_class":"resource","cluster":"c7"},"annotations":{"summary":"load 9.1 on 10.1.2.3"}}]"#;
    am.post(alert);
    let faults = s.nonempty_within("/v1/faults?node=10.1.2.3", Duration::from_secs(30));
    drop(am);
    assert_eq!(faults[0]["fault"], "high_load", "{faults}");
    assert!(faults[0]["reason"]
        .as_str()
        .unwrap()
        .contains("NodeHighLoad"));
}

/// 10,000 malformed bodies between valid signals: the service stays up,
/// answers each bad one 400 with a reason, and decides every valid one.
#[test]
fn ten_thousand_malformed_bodies_cost_no_valid_signal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    let deep = format!(
        r#"{{"node":"d","kind":"hardware","type":"x","nested":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let bad = |i: usize| -> String {
        match i % 6 {
            0 => format!("this is not JSON {i}"),
            1 => format!(r#"{{"kind":"hardware","type":"memory.ecc.uncorrectable","id":"{i}"}}"#),
            2 => r#"{"node":7,"kind":"hardware","type":"x"}"#.to_string(),
            3 => r#"{"node":"n","kind":"weather","type":"x"}"#.to_string(),
            4 => r#"{"node":"n","kind":"hardware","type":"x","ts":"yesterday"}"#.to_string(),
            _ => deep.clone(),
        }
    };
    let mut valid = 0;
    for i in 0..10_000 {
        let (status, body) = s.request("POST", "/v1/signals", &bad(i), None);
        assert_eq!(status, 400, "body {i}: {body}");
        assert!(body.contains("\"reason\""), "body {i}: {body}");
        if i % 10 == 0 {
            let signal = format!(
                r#"{{"node":"v{i}","kind":"hardware","type":"memory.ecc.uncorrectable","labels":{{"cluster":"c{}"}}}}"#,
                i % 7
            );
            let (status, body) = s.request("POST", "/v1/signals", &signal, None);
            assert_eq!(status, 202, "valid {i}: {body}");
            valid += 1;
        }
    }
    let huge = format!(
        r#"{{"node":"n","kind":"hardware","type":"x","message":"{}"}}"#,
        "x".repeat(10 << 20)
    );
    assert_eq!(s.request("POST", "/v1/signals", &huge, None).0, 413);
    assert_eq!(s.request("GET", "/healthz", "", None).0, 200, "still alive");
    let open = s.json("/v1/faults?state=open");
    assert_eq!(
        open.as_array().unwrap().len(),
        valid,
        "every valid signal decided"
    );
    let (_, metrics) = s.request("GET", "/metrics", "", None);
    assert!(
        metrics.contains("remedy_signals_rejected_total{source=\"http\"} 10000"),
        "{metrics}"
    );
}

/// SIGTERM while clients are sending: exit 0 promptly, and every signal
/// that was answered 202 is in the journal.
#[test]
fn shutdown_under_load_keeps_every_acknowledged_signal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    let port = s.port;
    let senders: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut acknowledged = 0;
                for i in 0..100_000 {
                    let signal = format!(
                        r#"{{"node":"t{t}-{i}","kind":"hardware","type":"memory.ecc.uncorrectable","labels":{{"cluster":"c{t}"}}}}"#
                    );
                    match request(port, "POST", "/v1/signals", &signal, None).0 {
                        202 => acknowledged += 1,
                        0 => break, // the listener is gone
                        _ => {}
                    }
                }
                acknowledged
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    let (code, stderr) = s.stop();
    let took = started.elapsed();
    let acknowledged: usize = senders.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(code, 0, "{stderr}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    assert!(acknowledged > 0);

    let s = Remedy::start(dir.path(), &[]);
    let open = s.json("/v1/faults?state=open").as_array().unwrap().len();
    assert!(
        open >= acknowledged,
        "{acknowledged} acknowledged, {open} journaled"
    );
}

/// A cordon held back by the budget survives kill -9: after the restart it
/// waits again, and goes when the budget frees.
#[test]
fn a_held_back_action_is_not_forgotten_across_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No escalation ladder, so only the cordons are in play.
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[guards]\nmax_unhealthy = 1\n\
         [faults.memory_failure]\nactions = [\"cordon\", \"ticket\"]\non_resolve = [\"uncordon\"]\n\
         [faults.disk_failure]\nactions = [\"cordon\", \"ticket\"]\non_resolve = [\"uncordon\"]\n",
    )
    .unwrap();
    let args = ["--config", "remedy.toml"];
    let mut s = Remedy::start_with(dir.path(), &[], &args);
    assert_eq!(
        s.request("POST", "/v1/signals", &format!("{UE}\n{DISK}"), None)
            .0,
        202
    );
    let before = s.json("/v1/decisions");
    let cordons: Vec<(String, String)> = before["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"] == "cordon")
        .map(|d| {
            (
                d["node"].as_str().unwrap().into(),
                d["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        cordons,
        [
            ("n1".to_string(), "dry_run".to_string()),
            ("n2".into(), "budget_exhausted".into())
        ]
    );
    s.kill_9();

    let s = Remedy::start_with(dir.path(), &[], &args);
    let (_, metrics) = s.request("GET", "/metrics", "", None);
    assert!(metrics.contains("remedy_guard_held_actions 1"), "{metrics}");
    assert!(
        metrics.contains("remedy_guard_under_remediation{level=\"cluster\",domain=\"c1\"} 1"),
        "{metrics}"
    );
    // n1 recovers: its uncordon frees the budget and n2's cordon goes, unasked.
    let clear = r#"{"node":"n1","kind":"hardware","type":"memory.ecc.uncorrectable","ts":"2026-11-24T23:59:00Z","resolved":true,"labels":{"cluster":"c1"}}"#;
    assert_eq!(s.request("POST", "/v1/signals", clear, None).0, 202);
    let after = s.json(&format!("/v1/decisions?since={}", before["next"]));
    let actions: Vec<(String, String, String)> = after["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["event"] == "action" && d["action"] != "reinstall")
        .map(|d| {
            (
                d["node"].as_str().unwrap().into(),
                d["action"].as_str().unwrap().into(),
                d["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            (
                "n1".to_string(),
                "uncordon".to_string(),
                "dry_run".to_string()
            ),
            ("n2".into(), "cordon".into(), "dry_run".into())
        ]
    );
}

/// A real node exporter (Debian's prometheus-node-exporter, which
/// tests/run.sh installs) scraped by `[[scrape]]`: its samples arrive as
/// signals and open the fault their mapped type calls for.
#[test]
fn a_scraped_node_exporter_feeds_signals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exporter = NodeExporter::start(&[]);
    let port = exporter.port;
    // node_time_seconds is far above any load threshold: a sure high_load.
    std::fs::write(
        dir.path().join("remedy.toml"),
        format!(
            "[[scrape]]\nurl = \"http://127.0.0.1:{port}/metrics\"\nevery = \"500ms\"\nnode = \"scraped-1\"\n\
             metrics = {{ \"node_time_seconds\" = \"load.high\" }}\n"
        ),
    )
    .unwrap();
    let s = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let faults = s.nonempty_within("/v1/faults?node=scraped-1", Duration::from_secs(20));
    let collector = format!("scrape http://127.0.0.1:{port}/metrics");
    let (_, metrics) = s.request("GET", "/metrics", "", None);
    let up = |v: u8| format!("remedy_collector_up{{collector=\"{collector}\"}} {v}");
    assert!(metrics.contains(&up(1)), "{metrics}");
    drop(exporter);
    assert_eq!(faults[0]["fault"], "high_load", "{faults}");
    assert!(
        metrics.contains("remedy_signals_total{source=\"scrape\"}"),
        "{metrics}"
    );
    // The exporter is gone: the collector says so, and why.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = s.json("/readyz");
        if ready["collectors"][&collector]["up"] == false {
            assert!(
                ready["collectors"][&collector]["last_error"].is_string(),
                "{ready}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never reported down: {ready}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, metrics) = s.request("GET", "/metrics", "", None);
    assert!(metrics.contains(&up(0)), "{metrics}");
}

/// A real Prometheus (Debian's package, installed by tests/run.sh) scraping
/// a real node exporter, queried by `[[prometheus]]`: the query's series
/// arrive as signals and open the fault their type calls for.
#[test]
fn a_promql_query_on_a_real_prometheus_opens_and_resolves_a_fault() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exporter = NodeExporter::start(&[]);
    let prometheus = Prometheus::start(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            exporter.port
        ),
        None,
    );
    let prom_port = prometheus.port;
    std::fs::write(
        dir.path().join("remedy.toml"),
        format!(
            "[[prometheus]]\nurl = \"http://127.0.0.1:{prom_port}\"\nquery = \"node_time_seconds\"\ntype = \"load.high\"\nevery = \"500ms\"\n"
        ),
    )
    .unwrap();
    let s = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let faults = s.nonempty_within("/v1/faults?node=127.0.0.1", Duration::from_secs(40));
    // The exporter goes away: Prometheus marks its series stale, the query
    // stops returning it, and the fault resolves.
    drop(exporter);
    let resolved = if faults.as_array().unwrap().is_empty() {
        Value::Null
    } else {
        s.nonempty_within(
            "/v1/faults?state=resolved&node=127.0.0.1",
            Duration::from_secs(40),
        )
    };
    drop(prometheus);
    assert_eq!(faults[0]["fault"], "high_load", "{faults}");
    assert_eq!(
        resolved[0]["fault"], "high_load",
        "the series left the query's result, so the fault resolved: {resolved}"
    );
    let (_, metrics) = s.request("GET", "/metrics", "", None);
    assert!(
        metrics.contains("remedy_signals_total{source=\"prometheus\"}"),
        "{metrics}"
    );
}

/// A producer that resends a signal by its `id` after remedy crashed is
/// still ignored: the ids are journaled with the decisions.
#[test]
fn a_resent_signal_id_is_ignored_across_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = Remedy::start(dir.path(), &[]);
    let open = r#"{"node":"n1","kind":"hardware","type":"memory.ecc.uncorrectable","ts":"2026-11-24T23:58:07Z","id":"ue-1","labels":{"cluster":"c1"}}"#;
    let clear = r#"{"node":"n1","kind":"hardware","type":"memory.ecc.uncorrectable","ts":"2026-11-24T23:59:07Z","resolved":true,"id":"ue-1-clear","labels":{"cluster":"c1"}}"#;
    assert_eq!(
        s.request("POST", "/v1/signals", &format!("{open}\n{clear}"), None)
            .0,
        202
    );
    assert_eq!(s.json("/v1/faults?state=open").as_array().unwrap().len(), 0);
    s.kill_9();

    let s = Remedy::start(dir.path(), &[]);
    // The at-least-once producer resends the first one: not a new fault.
    assert_eq!(s.request("POST", "/v1/signals", open, None).0, 202);
    assert_eq!(
        s.json("/v1/faults?state=open").as_array().unwrap().len(),
        0,
        "ue-1 was seen before the crash"
    );
    // A new id is a new signal.
    let again = open.replace("ue-1", "ue-2");
    assert_eq!(s.request("POST", "/v1/signals", &again, None).0, 202);
    assert_eq!(s.json("/v1/faults?state=open").as_array().unwrap().len(), 1);
}

/// A cluster-wide alert (kubernetes-mixin's KubeletDown carries only
/// `{cluster, severity}`) is taken in as a domain signal: a rule sees
/// `s.node == ()` and `s.domain`, the fault it opens is kept under the
/// domain, and nothing that acts on one node is done to a domain.
#[test]
fn a_cluster_wide_alert_is_a_domain_signal_and_no_node_is_cordoned_for_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules");
    common::copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"), &rules);
    std::fs::write(
        rules.join("component/cluster_kubelets.rhai"),
        r#"const TYPES = ["KubeletDown"];
fn classify(s) {
    if s.node != () { return (); }
    #{ fault: "component_crash", severity: "critical",
       reason: `no kubelet answers in cluster ${s.domain.cluster}` }
}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[faults.component_crash]\nactions = [\"cordon\", \"notify\"]\n",
    )
    .unwrap();
    let s = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let body = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"KubeletDown","cluster":"c1","severity":"critical"},"annotations":{"summary":"Target disappeared from Prometheus target discovery."},"startsAt":"2026-11-24T10:00:00Z","fingerprint":"a1"}]}"#;
    let (status, answer) = s.request("POST", "/v1/alertmanager", body, None);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["accepted"],
        1
    );
    let decisions = s.decisions();
    let summary: Vec<(&str, &str, &str, &str)> = decisions
        .iter()
        .map(|d| {
            let f = |k: &str| d[k].as_str().unwrap_or("");
            (f("event"), f("node"), f("action"), f("outcome"))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("fault_opened", "cluster=c1", "", ""),
            ("action", "cluster=c1", "cordon", "rejected"),
            ("action", "cluster=c1", "notify", "dry_run"),
        ],
        "{decisions:?}"
    );
    assert_eq!(decisions[0]["reason"], "no kubelet answers in cluster c1");
    assert!(
        decisions[1]["reason"]
            .as_str()
            .unwrap()
            .contains("failure domain"),
        "{}",
        decisions[1]
    );
    // The shipped rules leave the cluster-wide alert alone: no node fault.
    let faults = s.json("/v1/faults?state=open");
    assert_eq!(faults.as_array().unwrap().len(), 1, "{faults}");
}

/// `preset = "smartmon"`: a real node exporter serves the smartmon textfile
/// collector's output (tests/fixtures/exporters/smartmon.prom, in the
/// format of Debian's smartmon.sh) and remedy maps it with no `metrics`
/// table: failing disks open a disk failure on the configured node, and the
/// fault resolves once the collector reports the disks healthy again.
#[test]
fn a_smartmon_preset_over_a_real_node_exporter_opens_and_resolves_a_disk_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir(&textfiles).unwrap();
    let recorded = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exporters/smartmon.prom"),
    )
    .unwrap();
    // The collector writes to a temp file and renames it, as smartmon's timer does.
    let publish = |text: &str| {
        let tmp = textfiles.join("smartmon.prom.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, textfiles.join("smartmon.prom")).unwrap();
    };
    publish(&recorded);
    let exporter = NodeExporter::start(&[format!(
        "--collector.textfile.directory={}",
        textfiles.display()
    )]);
    let port = exporter.port;
    std::fs::write(
        dir.path().join("remedy.toml"),
        format!(
            "[[scrape]]\nurl = \"http://127.0.0.1:{port}/metrics\"\nevery = \"500ms\"\nnode = \"node-a\"\npreset = \"smartmon\"\n"
        ),
    )
    .unwrap();
    let s = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let faults = s.nonempty_within("/v1/faults?node=node-a&state=open", Duration::from_secs(20));
    assert_eq!(faults[0]["fault"], "disk_failure", "{faults}");
    assert_eq!(faults[0]["severity"], "critical", "{faults}");
    let reason = faults[0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("node-a"), "{faults}");

    // Only the healthy disk is left: the failing ones' conditions clear.
    let healthy: String = recorded
        .lines()
        .filter(|l| !l.contains("/dev/sdb") && !l.contains("/dev/sdc"))
        .map(|l| format!("{l}\n"))
        .collect();
    publish(&healthy);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = s.json("/v1/faults?node=node-a&state=open");
        if open.as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never resolved: {open}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(exporter);
    let resolved = s
        .decisions()
        .iter()
        .filter(|d| d["event"] == "fault_resolved" && d["node"] == "node-a")
        .count();
    assert_eq!(resolved, 1);
}

/// One machine, one node (`[identity]`): the kubelet's alerts name it
/// `worker-7` with `instance` 10.0.0.7:10250, node_exporter's alerts only by
/// `instance` 10.0.0.7:9100. With `alias_labels = ["instance"]` the disk
/// alert opens its fault on worker-7, and after a restart (the alias comes
/// back from the journal) the address's resolved alert closes it there.
/// An alias from `[identity] file` works from the first signal.
#[test]
fn one_machine_named_by_address_and_by_node_name_is_one_node_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("nodes.csv"),
        "# alias,node\n10.0.0.8,worker-8\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[identity]\nalias_labels = [\"instance\"]\nfile = \"nodes.csv\"\n",
    )
    .unwrap();
    let alert = |status: &str, labels: &str| {
        format!(
            r#"{{"version":"4","status":"{status}","alerts":[{{"status":"{status}","labels":{labels},"startsAt":"2026-11-24T10:00:00Z","endsAt":"2026-11-24T10:30:00Z","fingerprint":"{:x}"}}]}}"#,
            labels
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        )
    };
    let kubelet = r#"{"alertname":"KubeletTooManyPods","node":"worker-7","instance":"10.0.0.7:10250","job":"kubelet","metrics_path":"/metrics","namespace":"kube-system","service":"kubelet","endpoint":"https-metrics","severity":"info"}"#;
    let disk = |host: &str| {
        format!(
            r#"{{"alertname":"NodeFilesystemAlmostOutOfSpace","instance":"{host}:9100","job":"node","device":"/dev/sda1","fstype":"ext4","mountpoint":"/","severity":"warning"}}"#
        )
    };
    let args = ["--config", "remedy.toml"];
    let mut s = Remedy::start_with(dir.path(), &[], &args);
    for body in [
        alert("firing", kubelet),
        alert("firing", &disk("10.0.0.7")),
        alert("firing", &disk("10.0.0.8")),
    ] {
        let (status, answer) = s.request("POST", "/v1/alertmanager", &body, None);
        assert_eq!(status, 202, "{answer}");
    }
    let open: Vec<(String, String)> = s
        .json("/v1/faults?state=open")
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["node"].as_str().unwrap().into(),
                f["fault"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        open,
        [
            ("worker-7".to_string(), "disk_pressure".to_string()),
            ("worker-8".into(), "disk_pressure".into())
        ]
    );
    s.kill_9();
    let s = Remedy::start_with(dir.path(), &[], &args);
    let (status, answer) = s.request(
        "POST",
        "/v1/alertmanager",
        &alert("resolved", &disk("10.0.0.7")),
        None,
    );
    assert_eq!(status, 202, "{answer}");
    let open = s.json("/v1/faults?state=open");
    let nodes: Vec<&str> = open
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["worker-8"], "worker-7's fault closed: {open}");
    assert!(
        s.decisions().iter().all(|d| d["node"] != "10.0.0.7"),
        "nothing is decided under the address"
    );
}

/// Condition hygiene: an alert neither repeated nor resolved within the
/// fault's `stale_after` makes its fault stale (`fault_stale`), and the
/// escalation to a drain that falls due meanwhile waits; Alertmanager's
/// repeat of the same alert (same fingerprint and startsAt) makes it fresh
/// and the drain goes.
#[test]
fn a_stale_alert_is_marked_stale_and_its_drain_waits_for_the_alert_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[faults.disk_pressure]\nactions = [\"notify\"]\nstale_after = \"2s\"\n\
         escalate = [{ after = \"3s\", actions = [\"drain\"] }]\n",
    )
    .unwrap();
    let s = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let starts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = format!(
        r#"{{"version":"4","status":"firing","alerts":[{{"status":"firing","labels":{{"alertname":"NodeFilesystemAlmostOutOfSpace","instance":"10.0.0.7:9100","job":"node","device":"/dev/sda1","fstype":"ext4","mountpoint":"/","severity":"critical"}},"startsAt":"{starts}","fingerprint":"5e1f"}}]}}"#
    );
    let sent = Instant::now();
    assert_eq!(s.request("POST", "/v1/alertmanager", &body, None).0, 202);
    let events = |s: &Remedy| -> Vec<(String, String)> {
        s.decisions()
            .iter()
            .map(|d| {
                let f = |k: &str| d[k].as_str().unwrap_or("").to_string();
                (f("event"), f("action"))
            })
            .collect()
    };
    common::wait_for("fault_stale", Duration::from_secs(15), || {
        events(&s).iter().any(|(e, _)| e == "fault_stale")
    });
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "stale after its 2s"
    );
    // Past the escalation's 3s: the drain has not gone on old evidence.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(sent.elapsed()));
    let before = events(&s);
    assert!(
        !before.iter().any(|(_, a)| a == "drain"),
        "drain waits while stale: {before:?}"
    );
    // Alertmanager repeats the alert as it was: the drain goes.
    assert_eq!(s.request("POST", "/v1/alertmanager", &body, None).0, 202);
    common::wait_for("the drain", Duration::from_secs(10), || {
        events(&s).iter().any(|(_, a)| a == "drain")
    });
    let after = events(&s);
    let kinds: Vec<(&str, &str)> = after
        .iter()
        .map(|(e, a)| (e.as_str(), a.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("fault_opened", ""),
            ("action", "notify"),
            ("fault_stale", ""),
            ("action", "drain")
        ]
    );
}

/// `max_attempts` is counted in the journal: three cycles, a kill -9, and
/// the fourth opening after the restart still goes to a person.
#[test]
fn max_attempts_are_counted_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[faults.memory_failure]\nactions = [\"cordon\"]\non_resolve = [\"uncordon\"]\n\
         max_attempts = { count = 3, within = \"7d\", then = [\"ticket\"] }\n",
    )
    .unwrap();
    let args = ["--config", "remedy.toml"];
    let signal = |hour: u32, resolved: bool| {
        format!(
            r#"{{"node":"n1","kind":"hardware","type":"memory.ecc.uncorrectable","ts":"2026-11-24T{hour:02}:00:00Z","resolved":{resolved},"labels":{{"cluster":"c1"}}}}"#
        )
    };
    let mut s = Remedy::start_with(dir.path(), &[], &args);
    for hour in [0, 5, 10] {
        assert_eq!(
            s.request("POST", "/v1/signals", &signal(hour, false), None)
                .0,
            202
        );
        assert_eq!(
            s.request("POST", "/v1/signals", &signal(hour + 1, true), None)
                .0,
            202
        );
    }
    s.kill_9();
    let s = Remedy::start_with(dir.path(), &[], &args);
    assert_eq!(
        s.request("POST", "/v1/signals", &signal(20, false), None).0,
        202
    );
    // In `run` decisions carry the service's time: the last two actions.
    let decisions = s.decisions();
    let actions: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["event"] == "action")
        .collect();
    let last: Vec<(String, String)> = actions[actions.len() - 2..]
        .iter()
        .map(|d| {
            (
                d["action"].as_str().unwrap().to_string(),
                d["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        last,
        [
            ("cordon".to_string(), "attempts_exhausted".to_string()),
            ("ticket".into(), "dry_run".into())
        ]
    );
}

/// No input can move remedy's clock (contract 13): a signal dated a day
/// ahead is refused with a 400 naming `ts`, and a back-dated one opens its
/// fault now, so its escalation (a reinstall after 1h) is not due at once.
#[test]
fn a_signal_can_be_evidence_but_never_a_clock() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[faults.memory_failure]\nactions = [\"cordon\"]\nescalate = [{ after = \"1h\", actions = [\"reinstall\"] }]\n",
    )
    .unwrap();
    let s = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let at = |hours: i64| {
        (chrono::Utc::now() + chrono::Duration::hours(hours))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let ahead = format!(
        r#"{{"node":"n9","kind":"component","type":"node.heartbeat","ts":"{}"}}"#,
        at(24)
    );
    let (status, answer) = s.request("POST", "/v1/signals", &ahead, None);
    assert_eq!(status, 400, "{answer}");
    let reason = serde_json::from_str::<Value>(&answer).unwrap()["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.starts_with("field \"ts\": ") && reason.contains("ahead of remedy's clock"),
        "{reason}"
    );
    let back_dated = format!(
        r#"{{"node":"n1","kind":"hardware","type":"memory.ecc.uncorrectable","ts":"{}","labels":{{"cluster":"c1"}}}}"#,
        at(-24)
    );
    assert_eq!(s.request("POST", "/v1/signals", &back_dated, None).0, 202);
    std::thread::sleep(Duration::from_millis(2500)); // two ticks of the service clock
    let actions: Vec<String> = s
        .decisions()
        .iter()
        .filter(|d| d["event"] == "action")
        .map(|d| d["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["cordon"], "no reinstall a day early");
    let opened = s.json("/v1/faults?state=open");
    let opened_at = opened[0]["opened_at"]
        .as_str()
        .or(opened[0]["ts"].as_str())
        .unwrap_or("");
    assert!(
        opened_at.starts_with(&at(0)[..10]),
        "opened now, not a day ago: {opened}"
    );
}

/// Hostile input is judged line by line and cheaply (contract 13): an
/// invalid UTF-8 line is one bad line among valid ones, a body of bad
/// lines gets a bounded answer, and a signal with 100,000 labels is
/// refused at once naming the field, while valid signals keep flowing.
#[test]
fn bad_input_is_judged_line_by_line_with_bounded_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    // A batch with one line of invalid UTF-8 between two valid ones.
    let mut body = Vec::new();
    body.extend_from_slice(UE.as_bytes());
    body.extend_from_slice(b"\n{\"node\":\"n\xff\xfe\",\"kind\":\"hardware\",\"type\":\"x\"}\n");
    body.extend_from_slice(DISK.as_bytes());
    let (status, answer) = common::request_bytes(s.port, "POST", "/v1/signals", &body, None);
    assert_eq!(status, 400, "{answer}");
    let v: Value = serde_json::from_str(&answer).expect("a JSON answer");
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(v["errors"][0]["line"], 2);
    assert!(
        v["errors"][0]["reason"].as_str().unwrap().contains("UTF-8"),
        "{v}"
    );
    let opened = s.json("/v1/faults?state=open").as_array().unwrap().len();
    assert_eq!(opened, 2, "the valid lines were decided");

    // 200,000 bad lines: the answer lists 100 and counts the rest.
    let bad = "x\n".repeat(200_000);
    let (status, answer) = s.request("POST", "/v1/signals", &bad, None);
    assert_eq!(status, 400);
    assert!(answer.len() < 64 * 1024, "bounded: {} bytes", answer.len());
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["rejected"], 200_000);
    assert_eq!(v["errors"].as_array().unwrap().len(), 100);
    assert_eq!(v["more_errors"], 199_900);

    // A label bomb is refused before it reaches the decider.
    let labels: Vec<String> = (0..100_000).map(|i| format!("\"k{i}\":\"v\"")).collect();
    let bomb = format!(
        r#"{{"node":"n3","kind":"hardware","type":"memory.ecc.uncorrectable","labels":{{{}}}}}"#,
        labels.join(",")
    );
    // Sent while another client keeps sending: both are served at once.
    let started = Instant::now();
    let (status, answer, served) = std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            (0..20)
                .map(|_| s.request("POST", "/v1/signals", UE, None).0)
                .collect::<Vec<u16>>()
        });
        let (status, answer) = s.request("POST", "/v1/signals", &bomb, None);
        (status, answer, other.join().unwrap())
    });
    eprintln!("label bomb answered in {:?}", started.elapsed());
    assert!(served.iter().all(|&c| c == 202), "{served:?}");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("field \\\"labels\\\": 100000 labels, more than the limit of 64"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // An Alertmanager status it does not know is that alert's error.
    let odd = r#"{"version":"4","alerts":[{"status":"pending","labels":{"alertname":"NodeClockSkewDetected","instance":"10.0.0.1:9100"},"startsAt":"2026-11-24T10:00:00Z"}]}"#;
    let (status, answer) = s.request("POST", "/v1/alertmanager", odd, None);
    assert_eq!(status, 400);
    assert!(
        answer.contains("status \\\"pending\\\" is neither firing nor resolved"),
        "{answer}"
    );
}

/// A node name with a newline in it cannot forge a line of the human log.
#[test]
fn a_newline_in_a_node_name_cannot_forge_a_log_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    let forged = r#"{"node":"n1\n2026-11-30T00:00:00Z  INFO remedy: forged","kind":"hardware","type":"memory.ecc.uncorrectable","labels":{"cluster":"c1"}}"#;
    assert_eq!(s.request("POST", "/v1/signals", forged, None).0, 202);
    let (code, log) = s.stop();
    assert_eq!(code, 0);
    assert!(
        log.contains("n1\\n2026"),
        "the node is in the log, escaped: {log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("INFO remedy: forged") && !l.contains("n1\\n")),
        "{log}"
    );
}

/// What the rules count survives a restart: two kubelet crashes, a kill -9,
/// a third crash: three within ten minutes, a component_crash.
#[test]
fn crash_counts_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let crash = |secs_ago: i64| {
        let ts = (chrono::Utc::now() - chrono::Duration::seconds(secs_ago))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        format!(
            r#"{{"node":"n1","kind":"component","type":"component.crash","ts":"{ts}","labels":{{"component":"kubelet","cluster":"c1"}}}}"#
        )
    };
    let mut s = Remedy::start(dir.path(), &[]);
    assert_eq!(s.request("POST", "/v1/signals", &crash(120), None).0, 202);
    assert_eq!(s.request("POST", "/v1/signals", &crash(60), None).0, 202);
    assert!(s
        .json("/v1/faults?state=open")
        .as_array()
        .unwrap()
        .is_empty());
    s.kill_9();
    let s = Remedy::start(dir.path(), &[]);
    assert_eq!(s.request("POST", "/v1/signals", &crash(0), None).0, 202);
    let open = s.json("/v1/faults?state=open");
    assert_eq!(open[0]["fault"], "component_crash", "{open}");
    assert!(
        open[0]["reason"].as_str().unwrap().contains("3 crashes"),
        "{open}"
    );
}

/// A short token is refused at the start, naming the variable.
#[test]
fn a_token_shorter_than_sixteen_characters_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .current_dir(dir.path())
        .arg("run")
        .env("REMEDY_LISTEN", "127.0.0.1:0")
        .env("REMEDY_TOKEN", "  hunter2  ")
        .output()
        .expect("remedy runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("REMEDY_TOKEN: too short: at least 16 characters"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the token is never shown: {err}");
}

/// A journal deleted under the running service takes nothing more: signals
/// get 503 (never a 202 for what no restart would find) and `/readyz` says
/// why.
#[test]
fn a_journal_deleted_while_running_acknowledges_nothing_more() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    assert_eq!(s.request("POST", "/v1/signals", UE, None).0, 202);
    assert_eq!(s.get("/readyz").0, 200);
    std::fs::remove_file(dir.path().join("remedy.db")).unwrap();
    let (status, answer) = s.request("POST", "/v1/signals", DISK, None);
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("deleted or replaced"), "{answer}");
    let (status, ready) = s.get("/readyz");
    assert_eq!(status, 503, "{ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["journal_writable"], false, "{ready}");
}

/// A client that sends half a request cannot hold a stop: SIGTERM exits
/// cleanly within the grace period, and what was acknowledged is kept.
#[test]
fn a_half_sent_request_cannot_hold_the_stop() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    assert_eq!(s.request("POST", "/v1/signals", UE, None).0, 202);
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    slow.write_all(
        b"POST /v1/signals HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{\"node\"",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    drop(slow);
    let s = Remedy::start(dir.path(), &[]);
    assert_eq!(s.json("/v1/faults?state=open").as_array().unwrap().len(), 1);
}

/// A rule "file" that would block on read (a FIFO named `x.rhai`) is
/// reported by the reload and skipped; the rules in use stay, ingestion is
/// unaffected, and `/readyz` says the decider is fine.
#[test]
fn a_fifo_among_the_rules_is_reported_and_blocks_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    let fifo = dir.path().join("rules/component/x.rhai");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    common::wait_for(
        "the reload to report the FIFO",
        Duration::from_secs(20),
        || {
            s.json("/readyz")["last_reload_error"]
                .as_str()
                .is_some_and(|e| e.contains("x.rhai") && e.contains("not a regular file"))
        },
    );
    let started = Instant::now();
    assert_eq!(s.request("POST", "/v1/signals", UE, None).0, 202);
    assert!(started.elapsed() < Duration::from_secs(5));
    let ready = s.json("/readyz");
    assert_eq!(ready["decider"], "ok", "{ready}");
    assert_eq!(
        s.json("/v1/faults?state=open")[0]["fault"],
        "memory_failure"
    );
}

/// A client that trickles its request is cut off after `[limits]
/// request_timeout`: headers that do not arrive in time close the
/// connection, a body that does not arrive in time gets 408; other clients
/// are served meanwhile.
#[test]
fn a_slow_client_is_cut_off_after_the_request_timeout() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[limits]\nrequest_timeout = \"2s\"\n",
    )
    .unwrap();
    let s = Remedy::start_with(dir.path(), &[], &["--config", "remedy.toml"]);
    let trickle = |head: &[u8], bytes: &[u8]| -> (Duration, String) {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        c.write_all(head).unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        for b in bytes.iter().cycle().take(40) {
            if c.write_all(&[*b]).is_err() {
                break;
            }
            let mut buf = [0u8; 4096];
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(_) => {}
            }
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).to_string(),
        )
    };
    // Headers, a byte every 300 ms.
    let (took, answer) = trickle(b"POST /v1/signals HTTP/1.1\r\n", b"X-Slow: 1");
    assert!(
        took < Duration::from_secs(6),
        "cut off after {took:?}: {answer}"
    );
    // The body, a byte every 300 ms.
    let (took, answer) = trickle(
        b"POST /v1/signals HTTP/1.1\r\nHost: localhost\r\nContent-Length: 500\r\n\r\n",
        b"{",
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(s.request("POST", "/v1/signals", UE, None).0, 202);
}

/// `[limits] forget_after`: a node with no open fault and no signal for that
/// long is forgotten, across a restart too; one with an open fault is kept,
/// and a forgotten node that comes back is new (its old crashes no longer count).
#[test]
fn idle_nodes_are_forgotten_and_a_returning_one_is_new() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[limits]\nforget_after = \"6s\"\n",
    )
    .unwrap();
    let args = ["--config", "remedy.toml"];
    let signal = |node: &str, r#type: &str| {
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        format!(
            r#"{{"node":"{node}","kind":"component","type":"{type}","ts":"{ts}","labels":{{"component":"kubelet","cluster":"c1"}}}}"#
        )
    };
    let known = |s: &Remedy| -> u64 {
        let (_, text) = s.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("remedy_known_nodes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    let mut s = Remedy::start_with(dir.path(), &[], &args);
    for (node, r#type) in [
        ("idle", "component.crash"),
        ("idle", "component.crash"),
        ("busy", "node.heartbeat"),
    ] {
        assert_eq!(
            s.request("POST", "/v1/signals", &signal(node, r#type), None)
                .0,
            202
        );
    }
    let ue = r#"{"node":"broken","kind":"hardware","type":"memory.ecc.uncorrectable","labels":{"cluster":"c1"}}"#;
    assert_eq!(s.request("POST", "/v1/signals", ue, None).0, 202);
    assert_eq!(known(&s), 3);
    // `busy` keeps sending; `idle` falls silent; `broken` has an open fault.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while known(&s) != 2 {
        assert!(std::time::Instant::now() < deadline, "idle never forgotten");
        assert_eq!(
            s.request(
                "POST",
                "/v1/signals",
                &signal("busy", "node.heartbeat"),
                None
            )
            .0,
            202
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(s
        .get("/metrics")
        .1
        .contains("remedy_nodes_forgotten_total 1"));
    s.kill_9();
    let s = Remedy::start_with(dir.path(), &[], &args);
    assert_eq!(
        known(&s),
        2,
        "a forgotten node stays forgotten across a restart"
    );
    // Back: new. A third crash within the hour is its first.
    assert_eq!(
        s.request(
            "POST",
            "/v1/signals",
            &signal("idle", "component.crash"),
            None
        )
        .0,
        202
    );
    let open = s.json("/v1/faults?state=open&node=idle");
    assert!(open.as_array().unwrap().is_empty(), "{open}");
    assert_eq!(known(&s), 3);
}

/// Contract 13: the journal records what `run` took in and when, so
/// `remedy replay --journal` gives exactly the decisions `run` made: on the
/// service's clock, with executor results, escalations that fell due on a
/// tick, guards, and a kill -9 in the middle.
#[test]
fn replaying_the_journal_gives_the_decisions_run_made() {
    run_then_replay_the_journal(false);
}

/// The same across a kill -9: the guards (quotas, budgets, held actions)
/// are restored as they were, so the restart changes no decision.
#[test]
fn replaying_the_journal_gives_the_decisions_run_made_across_a_kill_9() {
    run_then_replay_the_journal(true);
}

/// One step of a scripted run: a POST of signals, a pause (ticks happen),
/// or a kill -9 and restart on the same journal.
enum Step {
    Post(String),
    Sleep(u64),
    Kill,
}

fn journal_signal(node: usize, r#type: &str, resolved: bool) -> String {
    format!(
        r#"{{"node":"n{node}","kind":"hardware","type":"{type}","resolved":{resolved},"labels":{{"cluster":"c{}","rack":"r{}"}}}}"#,
        node % 2,
        node % 4
    )
}

fn run_then_replay_the_journal(kill: bool) {
    let mut script = vec![];
    for n in 0..8 {
        script.push(Step::Post(journal_signal(n, "node.heartbeat", false)));
    }
    let storm: Vec<String> = (0..6)
        .map(|n| journal_signal(n, "memory.ecc.uncorrectable", false))
        .collect();
    script.push(Step::Post(storm.join("\n")));
    script.push(Step::Post(journal_signal(
        0,
        "memory.ecc.uncorrectable",
        true,
    )));
    script.push(Step::Sleep(2500)); // escalations fall due on ticks
    if kill {
        script.push(Step::Kill);
    }
    script.push(Step::Post(journal_signal(
        1,
        "memory.ecc.uncorrectable",
        true,
    )));
    script.push(Step::Post(journal_signal(
        6,
        "memory.ecc.uncorrectable",
        false,
    )));
    script.push(Step::Post(journal_signal(
        7,
        "memory.ecc.uncorrectable",
        false,
    )));
    script.push(Step::Sleep(2500));
    run_script_then_replay(script, "");
}

/// Contract 9, item 4: a storm sent to `run` with kill -9s at random
/// moments (two seeds) decides like `replay --journal` of its input: nested
/// budgets, quotas, held actions and a common cause survive every restart.
#[test]
fn a_storm_with_kill_9s_at_random_moments_decides_like_replay_of_its_journal() {
    for seed in [7u64, 11] {
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) % n
        };
        let mut script = vec![];
        for n in 0..16 {
            script.push(Step::Post(journal_signal(n, "node.heartbeat", false)));
        }
        for _ in 0..30 {
            let node = next(16) as usize;
            let step = match next(10) {
                0..=3 => Step::Post(journal_signal(node, "memory.ecc.uncorrectable", false)),
                4..=5 => Step::Post(journal_signal(node, "memory.ecc.uncorrectable", true)),
                6..=7 => Step::Post(journal_signal(node, "disk.smart.failing", false)),
                8 => Step::Post(journal_signal(node, "disk.smart.failing", true)),
                _ => Step::Sleep(300 + next(900)),
            };
            script.push(step);
            if next(8) == 0 {
                script.push(Step::Kill);
            }
        }
        script.push(Step::Kill);
        script.push(Step::Sleep(2500));
        run_script_then_replay(
            script,
            "[[guards.levels]]\nlabel = \"rack\"\nmax_unhealthy = 1\n\
             [[correlate]]\nlabel = \"rack\"\nfaults = [\"disk_failure\"]\nmin_nodes = 2\n\
             within = \"5m\"\nfault = \"rack_disks\"\n",
        );
    }
}

/// Runs `script` against `remedy run` (the config below plus `more`), then
/// checks `remedy replay --journal` prints exactly the decisions it made.
fn run_script_then_replay(script: Vec<Step>, more: &str) {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let config = r#"
dry_run = false
[guards]
max_unhealthy = 3
domain = "cluster"
[faults.memory_failure]
actions = ["cordon", "ticket"]
escalate = [{ after = "2s", actions = ["reinstall"] }]
on_resolve = ["uncordon"]
[faults.disk_failure]
actions = ["cordon"]
on_resolve = ["uncordon"]
[faults.rack_disks]
actions = ["ticket"]
[actions.cordon]
executor = "log"
op = "cordon"
rate = "4/min"
[actions.uncordon]
executor = "log"
op = "uncordon"
[actions.ticket]
executor = "log"
[actions.reinstall]
executor = "log"
"#;
    std::fs::write(dir.join("remedy.toml"), format!("{config}{more}")).unwrap();
    let args = ["--config", "remedy.toml"];
    let mut s = Remedy::start_with(dir, &[], &args);
    let mut kills = 0;
    for step in script {
        match step {
            Step::Post(body) => {
                assert_eq!(s.request("POST", "/v1/signals", &body, None).0, 202)
            }
            Step::Sleep(ms) => std::thread::sleep(Duration::from_millis(ms)),
            Step::Kill => {
                s.kill_9();
                s = Remedy::start_with(dir, &[], &args);
                kills += 1;
            }
        }
    }
    let ran: Vec<Value> = s
        .decisions()
        .into_iter()
        .map(|mut d| {
            d.as_object_mut().unwrap().remove("seq");
            d
        })
        .collect();
    let (code, _) = s.stop();
    assert_eq!(code, 0);
    let actions = ran.iter().filter(|d| d["event"] == "action").count();
    assert!(
        ran.iter().any(|d| d["action"] == "reinstall") && actions >= 10,
        "the scenario should act, escalate and hold ({kills} kills): {ran:#?}"
    );
    let replayed = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .current_dir(dir)
        .args([
            "replay",
            "--journal",
            "remedy.db",
            "--config",
            "remedy.toml",
        ])
        .output()
        .expect("replay runs");
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8(replayed.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a decision per line"))
        .collect();
    assert_eq!(
        replayed.len(),
        ran.len(),
        "run: {ran:#?}\nreplay: {replayed:#?}"
    );
    for (i, (r, p)) in ran.iter().zip(&replayed).enumerate() {
        assert_eq!(r, p, "decision {i} differs");
    }
}

/// Defect 2 of the hardening issue: four 8 MiB bodies of one-byte bad lines
/// at once each get a bounded answer, the service stays up and serving, and
/// its memory comes back down.
#[test]
fn four_bodies_of_millions_of_bad_lines_at_once_cost_bounded_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    let body = "x\n".repeat(4 << 20); // 8 MiB, the largest body taken
    let started = s.rss();
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let posts: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| s.request("POST", "/v1/signals", &body, None)))
            .collect();
        posts.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for (status, answer) in &answers {
        assert_eq!(*status, 400);
        assert!(answer.len() < 64 * 1024, "bounded: {} bytes", answer.len());
        let v: Value = serde_json::from_str(answer).unwrap();
        assert_eq!(v["rejected"], 4 << 20);
    }
    assert_eq!(
        s.request("POST", "/v1/signals", UE, None).0,
        202,
        "still serving"
    );
    let after = s.rss();
    eprintln!(
        "RSS: {} MiB at start, {} MiB after",
        started >> 20,
        after >> 20
    );
    assert!(
        after < started + (128 << 20),
        "RSS grew from {} MiB to {} MiB",
        started >> 20,
        after >> 20
    );
}

/// Defect 8 of the hardening issue: a journal that answers reads but takes
/// no write (its WAL made immutable, as a full or read-only disk would)
/// makes `/readyz` 503 with `journal_writable: false`, and no signal is
/// acknowledged; once writable again, both recover. Needs root (chattr).
#[test]
fn a_journal_that_takes_no_write_is_not_ready() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    assert_eq!(s.request("POST", "/v1/signals", UE, None).0, 202);
    let wal = dir.path().join("remedy.db-wal");
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&wal)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        let uid = Command::new("id").arg("-u").output().expect("id -u").stdout;
        assert_ne!(
            String::from_utf8_lossy(&uid).trim(),
            "0",
            "chattr +i failed although running as root"
        );
        eprintln!("skipped: making the WAL immutable needs root");
        return;
    }
    let (status, ready) = s.get("/readyz");
    let (post, answer) = s.request("POST", "/v1/signals", DISK, None);
    assert!(chattr("-i"), "chattr -i");
    assert_eq!(status, 503, "{ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["journal_writable"], false, "{ready}");
    assert_eq!(
        post, 503,
        "nothing acknowledged that was not written: {answer}"
    );
    // The batch that failed is written with the next write (a tick).
    let back = Instant::now() + Duration::from_secs(10);
    while s.get("/readyz").0 != 200 {
        assert!(
            Instant::now() < back,
            "not ready again: {}\n{}",
            s.get("/readyz").1,
            s.logged()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.request("POST", "/v1/signals", DISK, None).0, 202);
    let open = s.json("/v1/faults?state=open");
    assert_eq!(open.as_array().unwrap().len(), 2, "{open}");
}

/// Contract 9: an open common cause holds its domain's repairs, across a
/// restart, until an operator releases it over the API.
#[test]
fn an_operator_releases_a_common_cause_hold_over_the_api() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[guards]\nmax_unhealthy = \"none\"\n\
         [[correlate]]\nlabel = \"switch\"\nfaults = [\"*\"]\nmin_nodes = 3\nwithin = \"5m\"\n\
         fault = \"switch_down\"\n\
         [faults.switch_down]\nactions = [\"ticket\"]\n",
    )
    .unwrap();
    let args = ["--config", "remedy.toml"];
    let ue = |n: usize| {
        format!(
            r#"{{"node":"n{n}","kind":"hardware","type":"memory.ecc.uncorrectable","labels":{{"cluster":"c1","switch":"tor-7"}}}}"#
        )
    };
    let mut s = Remedy::start_with(dir.path(), &[], &args);
    for n in 0..4 {
        assert_eq!(s.request("POST", "/v1/signals", &ue(n), None).0, 202);
    }
    let holds = s.json("/v1/holds");
    assert_eq!(holds[0]["label"], "switch");
    assert_eq!(holds[0]["value"], "tor-7");
    assert_eq!(holds[0]["fault"], "switch_down");
    s.kill_9();
    let s = Remedy::start_with(dir.path(), &[], &args);
    assert_eq!(
        s.json("/v1/holds").as_array().unwrap().len(),
        1,
        "held across a restart"
    );
    let outcome = |s: &Remedy, node: &str| {
        s.decisions()
            .iter()
            .rev()
            .find(|d| d["node"] == node && d["action"] == "cordon")
            .map(|d| d["outcome"].as_str().unwrap().to_string())
    };
    assert_eq!(outcome(&s, "n3").as_deref(), Some("held_common_cause"));
    let (status, body) = s.request("POST", "/v1/holds/switch/tor-7/release", "", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        outcome(&s, "n3").as_deref(),
        Some("dry_run"),
        "released at once"
    );
    assert!(s.json("/v1/holds").as_array().unwrap().is_empty());
    let (status, body) = s.request("POST", "/v1/holds/switch/tor-7/release", "", None);
    assert_eq!(status, 404);
    assert!(
        body.contains("no common cause holds switch tor-7"),
        "{body}"
    );
    // Released stays released across a restart, while the cause is open.
    let mut s = s;
    s.kill_9();
    let s = Remedy::start_with(dir.path(), &[], &args);
    assert!(
        s.json("/v1/holds").as_array().unwrap().is_empty(),
        "still released"
    );
    assert_eq!(s.request("POST", "/v1/signals", &ue(4), None).0, 202);
    assert_eq!(outcome(&s, "n4").as_deref(), Some("dry_run"));
}

/// Contract 11: `remedy explain NODE --journal` tells the story of a node
/// as the running service decided it: its decisions are exactly the ones
/// `/v1/decisions` has for it, with the signals and rule answers between.
#[test]
fn explain_from_the_journal_tells_what_the_service_decided() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[guards]\nmax_unhealthy = 1\n[faults.memory_failure]\nactions = [\"cordon\"]\non_resolve = [\"uncordon\"]\n",
    )
    .unwrap();
    let args = ["--config", "remedy.toml"];
    let s = Remedy::start_with(dir.path(), &[], &args);
    let signal = |node: &str, resolved: bool| {
        format!(
            r#"{{"node":"{node}","kind":"hardware","type":"memory.ecc.uncorrectable","resolved":{resolved},"labels":{{"cluster":"c1"}}}}"#
        )
    };
    for body in [signal("n1", false), signal("n2", false), signal("n1", true)] {
        assert_eq!(s.request("POST", "/v1/signals", &body, None).0, 202);
    }
    let ran: Vec<Value> = s
        .decisions()
        .into_iter()
        .filter(|d| d["node"] == "n2")
        .map(|mut d| {
            d.as_object_mut().unwrap().remove("seq");
            d
        })
        .collect();
    assert!(
        ran.iter().any(|d| d["outcome"] == "budget_exhausted")
            && ran.iter().any(|d| d["outcome"] == "dry_run"),
        "n2 waited for n1 and then went: {ran:#?}"
    );
    // The node API: its state now, its timeline, and a clear 404.
    let n2 = s.json("/v1/nodes/n2");
    assert_eq!(n2["labels"]["cluster"], "c1");
    assert_eq!(n2["open_faults"][0]["fault"], "memory_failure");
    assert_eq!(n2["budgets"][0]["level"], "cluster");
    assert_eq!(n2["budgets"][0]["under_remediation"], 1);
    assert_eq!(n2["budgets"][0]["known"], 2);
    assert_eq!(n2["budgets"][0]["allows"], 1);
    let timeline = s.json("/v1/nodes/n2/timeline");
    let listed: Vec<Value> = timeline["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let mut d = d.clone();
            d.as_object_mut().unwrap().remove("seq");
            d
        })
        .collect();
    assert_eq!(listed, ran);
    let (status, body) = s.get("/v1/nodes/nobody");
    assert_eq!(status, 404);
    assert!(body.contains("node \\\"nobody\\\" is not known"), "{body}");
    assert_eq!(s.get("/v1/nodes/nobody/timeline").0, 404);
    // The efficacy ledger: n1's cordon worked (it resolved), n2's is open
    // within its window: pending, not judged yet.
    let ledger = s.json("/v1/efficacy");
    let cordon = ledger
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["fault"] == "memory_failure" && r["action"] == "cordon")
        .unwrap_or_else(|| panic!("{ledger}"))
        .clone();
    assert_eq!(
        (
            cordon["runs"].as_u64(),
            cordon["successes"].as_u64(),
            cordon["pending"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{cordon}"
    );
    // The same ledger on /metrics, and again after a kill -9: the service
    // reads it back from its journal.
    let gauges = |s: &Remedy| {
        let metrics = s.get("/metrics").1;
        for line in [
            "remedy_efficacy_runs{fault=\"memory_failure\",action=\"cordon\"} 1",
            "remedy_efficacy_pending_runs{fault=\"memory_failure\",action=\"cordon\"} 1",
            "remedy_efficacy_success_ratio{fault=\"memory_failure\",action=\"cordon\"} 1",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
        }
    };
    gauges(&s);
    let mut s = s;
    s.kill_9();
    let s = Remedy::start_with(dir.path(), &[], &args);
    gauges(&s);
    let (code, _) = s.stop();
    assert_eq!(code, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .current_dir(dir.path())
        .args([
            "explain",
            "n2",
            "--journal",
            "remedy.db",
            "--config",
            "remedy.toml",
            "--json",
        ])
        .output()
        .expect("explain runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let story: Value = serde_json::from_slice(&out.stdout).unwrap();
    let told: Vec<Value> = story["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "decision")
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().unwrap().remove("kind");
            e
        })
        .collect();
    assert_eq!(told, ran);
    assert_eq!(story["events"][0]["kind"], "signals");
    assert_eq!(story["events"][1]["rule"], "hardware/memory.rhai");
}

/// Contract 12: the journal in PostgreSQL (`[journal] url =
/// "postgres://..."`, here through `REMEDY_JOURNAL`), on a private
/// PostgreSQL 15 cluster. Faults journaled there survive a kill -9 of
/// remedy (nothing opens twice after the restart); PostgreSQL restarted
/// under load costs no acknowledged signal: a batch the database could not
/// take is answered 503 and taken when sent again once remedy reconnects.
#[test]
fn the_service_journals_to_postgresql_and_outlives_a_restart_of_either() {
    let pg = remedy_testkit::Postgres::start();
    let url = pg.database("remedy");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("remedy.toml"),
        "[guards]\nmax_unhealthy = \"none\"\n[faults.memory_failure]\nactions = [\"cordon\"]\n",
    )
    .unwrap();
    let env = [("REMEDY_JOURNAL", url.as_str())];
    let args = ["--config", "remedy.toml"];
    let ue = |node: usize| {
        format!(
            r#"{{"node":"n{node}","kind":"hardware","type":"memory.ecc.uncorrectable","labels":{{"cluster":"c1"}}}}"#
        )
    };
    let mut s = Remedy::start_with(dir.path(), &env, &args);
    for n in 0..5 {
        assert_eq!(s.request("POST", "/v1/signals", &ue(n), None).0, 202);
    }
    assert_eq!(s.json("/v1/faults?state=open").as_array().unwrap().len(), 5);
    // PostgreSQL restarts: every signal sent meanwhile is either taken (202)
    // or refused (503) and sent again until taken.
    pg.restart();
    for n in 5..10 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = s.request("POST", "/v1/signals", &ue(n), None);
            if status == 202 {
                break;
            }
            assert_eq!(status, 503, "{body}");
            assert!(Instant::now() < deadline, "never taken again: {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let opened = |s: &Remedy| {
        s.decisions()
            .iter()
            .filter(|d| d["event"] == "fault_opened")
            .map(|d| d["node"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(opened(&s).len(), 10, "{:?}", opened(&s));
    s.kill_9();
    let s = Remedy::start_with(dir.path(), &env, &args);
    assert_eq!(
        s.json("/v1/faults?state=open").as_array().unwrap().len(),
        10
    );
    for n in 0..10 {
        assert_eq!(s.request("POST", "/v1/signals", &ue(n), None).0, 202);
    }
    let mut nodes = opened(&s);
    nodes.sort();
    nodes.dedup();
    assert_eq!(
        opened(&s).len(),
        10,
        "nothing opened twice: {:?}",
        opened(&s)
    );
    assert_eq!(nodes.len(), 10);
    assert!(
        !dir.path().join("remedy.db").exists(),
        "no SQLite journal was made"
    );
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}

/// The response head of `POST path` to `port` (status line and headers).
fn response_head(port: u16, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.split("\r\n\r\n").next().unwrap_or("").to_lowercase()
}

/// Contract 12: two instances on one PostgreSQL journal. One leads (its
/// `/readyz` says `"role":"leader"`); the other is a standby: `/readyz` 503
/// with `"role":"standby"`, `POST /v1/*` 503 with Retry-After. kill -9 the
/// leader: the standby leads within lease + 5 s, with the open faults (a
/// signal sent again opens nothing twice). Then SIGSTOP the new leader past
/// its lease: a third instance takes over; SIGCONT: the paused one's lease
/// is gone, it steps down (exit 3) without writing, and nothing was opened
/// twice.
#[test]
fn a_standby_takes_over_a_dead_or_paused_leader_and_nothing_opens_twice() {
    let pg = remedy_testkit::Postgres::start();
    let url = pg.database("remedy");
    let config = format!(
        "[journal]\nurl = \"{url}\"\n[ha]\nlease = \"2s\"\n[guards]\nmax_unhealthy = \"none\"\n\
         [faults.memory_failure]\nactions = [\"cordon\"]\n"
    );
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for d in &dirs {
        std::fs::write(d.path().join("remedy.toml"), &config).unwrap();
    }
    // The config names the journal: the harness's SQLite default must not win.
    let env = [("REMEDY_JOURNAL", url.as_str())];
    let args = ["--config", "remedy.toml"];
    let role = |s: &Remedy| {
        let (status, body) = s.get("/readyz");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        (status, v["role"].as_str().unwrap_or("").to_string())
    };
    let leads_within = |s: &Remedy, within: Duration| {
        let deadline = Instant::now() + within;
        while role(s) != (200, "leader".to_string()) {
            assert!(
                Instant::now() < deadline,
                "did not lead within {within:?}: {:?}\n{}",
                role(s),
                s.logged()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let ue = |node: usize| {
        format!(
            r#"{{"node":"n{node}","kind":"hardware","type":"memory.ecc.uncorrectable","labels":{{"cluster":"c1"}}}}"#
        )
    };
    let mut a = Remedy::start_with(dirs[0].path(), &env, &args);
    leads_within(&a, Duration::from_secs(10));
    let mut b = Remedy::start_with(dirs[1].path(), &env, &args);
    assert_eq!(role(&b), (503, "standby".to_string()));
    let head = response_head(b.port, "/v1/signals", &ue(0));
    assert!(
        head.starts_with("http/1.1 503") && head.contains("retry-after: 2"),
        "{head}"
    );
    for n in 0..5 {
        assert_eq!(a.request("POST", "/v1/signals", &ue(n), None).0, 202);
    }
    // The leader dies: the standby leads within the lease + 5 s.
    let died = Instant::now();
    a.kill_9();
    leads_within(&b, Duration::from_secs(2 + 5));
    let failover = died.elapsed();
    assert_eq!(b.json("/v1/faults?state=open").as_array().unwrap().len(), 5);
    for n in 0..8 {
        assert_eq!(b.request("POST", "/v1/signals", &ue(n), None).0, 202);
    }
    // The new leader pauses past its lease; a third instance takes over.
    let c = Remedy::start_with(dirs[2].path(), &env, &args);
    assert_eq!(role(&c).1, "standby");
    b.signal("STOP");
    leads_within(&c, Duration::from_secs(2 + 5));
    for n in 0..10 {
        assert_eq!(c.request("POST", "/v1/signals", &ue(n), None).0, 202);
    }
    b.signal("CONT");
    // Whatever the paused one still tries, its writes are refused.
    let _ = b.request("POST", "/v1/signals", &ue(99), None);
    assert_eq!(
        b.exits_within(Duration::from_secs(10)),
        Some(3),
        "the deposed leader steps down:\n{}",
        b.logged()
    );
    assert!(b.logged().contains("lost the lease: stepping down"));
    let opened: Vec<String> = c
        .decisions()
        .iter()
        .filter(|d| d["event"] == "fault_opened")
        .map(|d| d["node"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..10).map(|n| format!("n{n}")).collect();
    let mut sorted = opened.clone();
    sorted.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(
        sorted, want,
        "each fault opened once, n99 never: {opened:?}"
    );
    eprintln!("failover after kill -9: {failover:?}");
    let (code, log) = c.stop();
    assert_eq!(code, 0, "{log}");
}

/// Contract 10's observed state: `component.version` and `condition`
/// signals are what a node reports of itself. `GET /v1/nodes/NODE` shows
/// the last version of each component and whether each condition holds,
/// with when; their `component`, `version` and `condition` labels describe
/// the report, not the node, so they do not become node labels (and no
/// failure domain changes on a report).
#[test]
fn a_nodes_reported_versions_and_conditions_are_shown_not_taken_for_labels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Remedy::start(dir.path(), &[]);
    let report = |ty: &str, labels: &str, value: &str, ts: &str| {
        format!(
            r#"{{"node":"n1","kind":"component","type":"{ty}","ts":"{ts}","labels":{{"cluster":"c1",{labels}}}{value}}}"#
        )
    };
    let body = [
        report(
            "component.version",
            r#""component":"kubelet","version":"1.31.1""#,
            "",
            "2026-11-24T00:00:00Z",
        ),
        report(
            "component.version",
            r#""component":"containerd","version":"1.7.22""#,
            "",
            "2026-11-24T00:00:01Z",
        ),
        report(
            "condition",
            r#""condition":"KubeletOK""#,
            r#","value":1"#,
            "2026-11-24T00:00:02Z",
        ),
        report(
            "condition",
            r#""condition":"DiskOK""#,
            r#","value":0"#,
            "2026-11-24T00:00:03Z",
        ),
        report(
            "component.version",
            r#""component":"kubelet","version":"1.31.2""#,
            "",
            "2026-11-24T00:00:04Z",
        ),
    ]
    .join("\n");
    assert_eq!(s.request("POST", "/v1/signals", &body, None).0, 202);
    let n1 = s.json("/v1/nodes/n1");
    assert_eq!(
        n1["labels"],
        serde_json::json!({"cluster": "c1"}),
        "report labels are not node labels: {n1}"
    );
    assert_eq!(
        n1["observed"]["components"],
        serde_json::json!({
            "containerd": ["1.7.22", "2026-11-24T00:00:01Z"],
            "kubelet": ["1.31.2", "2026-11-24T00:00:04Z"]
        }),
        "{n1}"
    );
    assert_eq!(
        n1["observed"]["conditions"],
        serde_json::json!({
            "DiskOK": [false, "2026-11-24T00:00:03Z"],
            "KubeletOK": [true, "2026-11-24T00:00:02Z"]
        }),
        "{n1}"
    );
    let (code, _) = s.stop();
    assert_eq!(code, 0);
}
