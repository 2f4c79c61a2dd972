//! The alert storm, end to end: `remedy replay` of the generated scenario
//! (examples/gen_storm.rs) with the guards of examples/storm.toml, run as a
//! user runs it.
//!
//! 10,000 known nodes; 1,000 of cluster c002 report an uncorrectable ECC
//! error within 60 s. With max_unhealthy = "5%" (100 of c002's 2,000 nodes)
//! and cordon at 20/min, every fault opens, no more than 100 nodes are
//! cordoned at once, and every other cordon is held with a reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn replay(file: &Path) -> (String, String) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .current_dir(repo)
        .args(["replay", "--config", "examples/storm.toml"])
        .arg(file)
        .output()
        .expect("remedy runs");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    (String::from_utf8(out.stdout).expect("utf-8"), stderr)
}

#[test]
fn a_storm_is_contained_by_the_budget_and_the_quota_and_replays_identically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("storm.jsonl");
    std::fs::write(&file, remedy::synth::storm(30).join("\n") + "\n").expect("write scenario");

    let (first, stderr) = replay(&file);
    let (second, _) = replay(&file);
    assert!(first == second, "two replays of the same storm differ");

    let decisions: Vec<Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON decision per line"))
        .collect();
    let text = |d: &Value, k: &str| d[k].as_str().unwrap_or("").to_string();

    let opened = decisions
        .iter()
        .filter(|d| d["event"] == "fault_opened")
        .count();
    assert_eq!(opened, 1000, "every fault opens, whatever the guards hold");

    // Walk the decisions as a consumer would: who is cordoned right now?
    let mut cordoned = BTreeSet::new();
    let mut most = 0;
    let mut outcomes: BTreeMap<(String, String), usize> = BTreeMap::new();
    for d in decisions.iter().filter(|d| d["event"] == "action") {
        let (action, outcome, node) = (text(d, "action"), text(d, "outcome"), text(d, "node"));
        *outcomes
            .entry((action.clone(), outcome.clone()))
            .or_default() += 1;
        match (action.as_str(), outcome.as_str()) {
            ("cordon", "dry_run") => {
                assert!(cordoned.insert(node.clone()), "{node} cordoned twice");
                most = most.max(cordoned.len());
            }
            ("uncordon", "dry_run") => {
                cordoned.remove(&node);
            }
            ("cordon", "budget_exhausted" | "rate_limited") => {
                assert!(!text(d, "reason").is_empty(), "a held action says why: {d}");
            }
            ("cordon", other) => panic!("unexpected cordon outcome {other}: {d}"),
            _ => {}
        }
    }
    let count = |a: &str, o: &str| outcomes.get(&(a.into(), o.into())).copied().unwrap_or(0);
    assert_eq!(
        most, 100,
        "at most 5% of c002 (100 nodes) under remediation at once"
    );
    assert!(count("cordon", "dry_run") <= 500);
    // 100 during the storm; 100 more after 200 storm nodes recover.
    assert_eq!(count("cordon", "dry_run"), 200);
    assert_eq!(
        count("ticket", "dry_run"),
        1000,
        "tickets take nothing out of service"
    );
    assert!(count("cordon", "budget_exhausted") > 0);
    assert!(count("cordon", "rate_limited") > 0);

    // The quota: no more than 40 cordons in any minute (a burst of 20, plus
    // 20 refilled within the minute).
    let mut per_minute: BTreeMap<String, usize> = BTreeMap::new();
    for d in &decisions {
        if d["action"] == "cordon" && d["outcome"] == "dry_run" {
            *per_minute
                .entry(text(d, "ts")[..16].to_string())
                .or_default() += 1;
        }
    }
    assert!(per_minute.values().all(|&n| n <= 40), "{per_minute:?}");

    assert!(
        stderr.contains("faults: 1000 opened, 200 resolved"),
        "{stderr}"
    );
    assert!(stderr.contains("actions still held back"), "{stderr}");
}
