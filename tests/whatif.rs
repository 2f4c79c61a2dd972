//! `remedy simulate` and `remedy diff`, run as a user runs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::copy_tree;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn remedy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_remedy"))
        .current_dir(repo())
        .args(args)
        .output()
        .expect("remedy runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("utf-8")
}

/// A copy of the shipped rules with `edit` applied to one file.
fn edited_rules(dir: &Path, file: &str, from: &str, to: &str) -> PathBuf {
    let rules = dir.join("rules");
    copy_tree(&repo().join("rules"), &rules);
    let path = rules.join(file);
    let source = fs::read_to_string(&path).expect("rule source");
    assert!(source.contains(from), "{file} has no {from:?}");
    fs::write(&path, source.replace(from, to)).expect("write rule");
    rules
}

fn simulate(dir: &Path, args: &[&str]) -> PathBuf {
    let out = remedy(&[&["simulate"], args].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = dir.join("signals.jsonl");
    fs::write(&file, &out.stdout).expect("write signals");
    file
}

#[test]
fn simulate_is_deterministic_per_seed_and_replays_cleanly() {
    let args = [
        "rack-power-loss",
        "--nodes",
        "2000",
        "--minutes",
        "50",
        "--rate",
        "20",
    ];
    let a = remedy(&[&["simulate"], &args[..]].concat());
    let b = remedy(&[&["simulate"], &args[..]].concat());
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert_eq!(a.stdout, b.stdout, "same seed, same stream");
    let c = remedy(&[&["simulate"], &args[..], &["--seed", "2"]].concat());
    assert_ne!(a.stdout, c.stdout);
    let lines = text(&a.stdout);
    assert!(
        lines.lines().count() > 60_000,
        "50 min at 20/s plus the rack"
    );
    assert_eq!(lines.matches(r#""type":"power.lost""#).count(), 80);

    let bad = remedy(&["simulate", "meteor-strike"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = text(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("meteor-strike") && err.contains("rack-power-loss"),
        "{err}"
    );
}

#[test]
fn diff_of_the_same_rules_is_empty_and_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = simulate(
        dir.path(),
        &["disk-wave", "--nodes", "2000", "--rate", "10"],
    );
    let file = file.to_str().unwrap();
    let out = remedy(&["diff", "rules", "rules", file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("no differences over "),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn diff_shows_what_a_rule_change_would_change_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = simulate(
        dir.path(),
        &["rack-power-loss", "--nodes", "2000", "--rate", "10"],
    );
    // The proposed change: a rack event from the second node on, not the third.
    let new = edited_rules(
        dir.path(),
        "hardware/rack_power.rhai",
        "const RACK_NODES = 3;",
        "const RACK_NODES = 2;",
    );
    let (file, new) = (file.to_str().unwrap(), new.to_str().unwrap());

    let out = remedy(&["diff", "rules", new, file]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("KIND") && rows[0].contains("ACTION  OLD"),
        "{table}"
    );
    let opened: Vec<&&str> = rows
        .iter()
        .filter(|r| r.starts_with("opened_only_in_new"))
        .collect();
    assert_eq!(
        opened.len(),
        1,
        "exactly the second node of the rack: {table}"
    );
    assert!(
        opened[0].contains("rack_power_event") && opened[0].contains("not opened"),
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("action") && r.contains("notify") && r.contains("absent")),
        "its notify is new: {table}"
    );
    assert!(table.contains("2 differences over "), "{table}");
    assert!(table.contains("by fault: rack_power_event 2"), "{table}");
    assert!(table.contains("by cluster: c000 2"), "{table}");

    let json = remedy(&["diff", "--json", "rules", new, file]);
    assert_eq!(json.status.code(), Some(1));
    let diffs: Vec<Value> = text(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(diffs.len(), 2);
    assert_eq!(diffs[1]["kind"], "opened_only_in_new");
    assert_eq!(diffs[1]["domain"], "c000");
    assert_eq!(diffs[0]["action"], "notify");
    assert_eq!(
        (diffs[0]["old"].as_str(), diffs[0]["new"].as_str()),
        (Some("absent"), Some("dry_run"))
    );
    assert!(
        text(&json.stderr).contains("2 differences"),
        "{}",
        text(&json.stderr)
    );
}

#[test]
fn diff_compares_configs_and_names_a_bad_side() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = simulate(
        dir.path(),
        &["alert-storm", "--nodes", "2000", "--rate", "10"],
    );
    let file = file.to_str().unwrap();
    // The same rules under a tighter budget: fewer restarts pass.
    let tight = dir.path().join("tight.toml");
    let rules = repo().join("rules");
    fs::write(
        &tight,
        format!(
            "rules = {:?}\n[guards]\nmax_unhealthy = 10\n",
            rules.display().to_string()
        ),
    )
    .expect("write config");
    let out = remedy(&["diff", "rules", tight.to_str().unwrap(), file, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let diffs: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    // At least 90: 100 restarts pass at once at 5% of 2,000, 10 with the tight
    // budget; more as alerts clear and the budget frees on each side.
    assert!(diffs.len() >= 90, "{}", diffs.len());
    assert!(diffs.iter().all(|d| d["kind"] == "action"
        && d["action"] == "restart"
        && d["old"] == "dry_run"
        && d["new"] == "held: budget_exhausted"));

    let out = remedy(&["diff", "rules", "no/such/rules", file]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("no/such/rules") && err.lines().count() == 1,
        "{err}"
    );
}
