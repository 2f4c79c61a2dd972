//! End-to-end tests of the `remedy` binary, run exactly as a user runs it:
//! a real process, real files, exit codes and the lines it prints. The
//! behaviour checked here is the public contract (commands, signal input,
//! decision output); fixtures live under `tests/fixtures/`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

mod common;
use common::copy_tree;

/// A run of the binary still going after this long is killed and the test
/// fails: a hang (e.g. a runaway rule) must be a failure, not a stuck suite.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Outcomes an `action` decision may carry (contract section 4).
const OUTCOMES: [&str; 11] = [
    "executed",
    "dry_run",
    "failed",
    "rate_limited",
    "budget_exhausted",
    "circuit_open",
    "silenced",
    "awaiting_approval",
    "rejected",
    "attempts_exhausted",
    "held_common_cause",
];

// ---------------------------------------------------------------------------
// Helpers: running the binary, fixtures, scratch directories
// ---------------------------------------------------------------------------

/// The repository root, where the shipped `rules/` live.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file or directory under `tests/fixtures/`.
fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

/// The `remedy` binary built for these tests, run from the repository root
/// unless the test says otherwise (so `./rules` are the shipped rules).
fn remedy() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_remedy"));
    cmd.current_dir(repo());
    cmd
}

/// What a finished run left behind.
struct Output {
    /// Exit code.
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }

    /// Every non-empty line the user sees, stdout first: for messages whose
    /// stream the contract leaves open.
    fn all_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// Both streams, for assertion messages.
    fn dump(&self) -> String {
        format!(
            "exit code {}\n--- stdout\n{}--- stderr\n{}---",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Reads a child's pipe to the end on its own thread, so a chatty child
/// never blocks on a full pipe while we wait for it.
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Runs `cmd` with `input` on stdin; kills it and fails the test when it is
/// still running after [`TIMEOUT`].
fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the remedy binary starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // Dropping stdin at the end of the thread closes it: end of input.
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for remedy") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "remedy {:?} was still running after {TIMEOUT:?} and was killed",
                cmd.get_args().collect::<Vec<_>>()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let _ = feeder.join();
    let text = |h: thread::JoinHandle<Vec<u8>>| {
        String::from_utf8_lossy(&h.join().expect("pipe reader")).into_owned()
    };
    Output {
        code: status
            .code()
            .expect("remedy exited normally, not by a signal"),
        stdout: text(stdout),
        stderr: text(stderr),
    }
}

/// Runs `cmd` with nothing on stdin.
fn run(cmd: &mut Command) -> Output {
    run_with_stdin(cmd, b"")
}

/// A scratch directory laid out as a user runs remedy: `rules/` holds a copy
/// of each of `rule_dirs`.
fn workspace(rule_dirs: &[&Path]) -> TempDir {
    let dir = TempDir::new().expect("temp dir");
    for rules in rule_dirs {
        copy_tree(rules, &dir.path().join("rules"));
    }
    dir
}

/// Every stdout line parsed as a decision, each checked against the shape of
/// contract section 4.
fn decisions(out: &Output) -> Vec<Value> {
    out.stdout_lines()
        .into_iter()
        .map(|line| {
            let d: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            check_decision_shape(&d);
            d
        })
        .collect()
}

/// The fields contract section 4 requires of every decision, and of each event.
fn check_decision_shape(d: &Value) {
    let text = |key: &str| {
        d[key]
            .as_str()
            .unwrap_or_else(|| panic!("decision without string `{key}`: {d}"))
    };
    let ts = text("ts");
    assert!(
        ts.len() >= 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
        "`ts` is not an RFC 3339 UTC time: {d}"
    );
    text("node");
    text("fault");
    match text("event") {
        "fault_opened" => {
            let severity = text("severity");
            assert!(
                ["info", "warning", "critical"].contains(&severity),
                "unknown severity: {d}"
            );
            text("rule");
        }
        "fault_resolved" => {}
        "action" => {
            text("action");
            let outcome = text("outcome");
            assert!(OUTCOMES.contains(&outcome), "unknown outcome: {d}");
            if outcome != "executed" && outcome != "dry_run" {
                text("reason");
            }
        }
        other => panic!("unknown event {other:?}: {d}"),
    }
}

/// Asserts the decisions are, in order, the `expected` ones; each expected
/// object lists only the fields that matter to the test.
fn assert_decisions(actual: &[Value], expected: &[Value]) {
    let shown = || {
        actual
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        actual.len(),
        expected.len(),
        "expected {} decisions, got:\n{}",
        expected.len(),
        shown()
    );
    for (i, (got, want)) in actual.iter().zip(expected).enumerate() {
        for (key, value) in want.as_object().expect("expected decisions are objects") {
            assert_eq!(
                &got[key],
                value,
                "decision {} field `{key}`; all decisions:\n{}",
                i + 1,
                shown()
            );
        }
    }
}

/// Splits a `remedy check` problem, `path:line:col: message`.
fn problem(line: &str) -> (String, usize, usize, String) {
    let parse = || -> Option<(String, usize, usize, String)> {
        let (path, rest) = line.split_once(".rhai:")?;
        let mut parts = rest.splitn(3, ':');
        let row = parts.next()?.parse().ok()?;
        let col = parts.next()?.parse().ok()?;
        let message = parts.next()?.trim().to_string();
        Some((format!("{path}.rhai"), row, col, message))
    };
    parse().unwrap_or_else(|| panic!("not a `path:line:col: message` line: {line}"))
}

/// The replay rejections on stderr for `source`, as (line number, reason).
fn rejections(out: &Output, source: &str) -> Vec<(u64, String)> {
    out.stderr_lines()
        .into_iter()
        .filter(|l| l.contains(": rejected: "))
        .map(|l| {
            let rest = l
                .strip_prefix(&format!("{source}:"))
                .unwrap_or_else(|| panic!("rejection does not start with `{source}:`: {l}"));
            let (number, reason) = rest
                .split_once(": rejected: ")
                .expect("`LINE: rejected: reason`");
            let number = number
                .parse()
                .unwrap_or_else(|_| panic!("no line number in: {l}"));
            (number, reason.to_string())
        })
        .collect()
}

/// `remedy replay FILE` on the shipped rules and the embedded default config.
fn replay_shipped(file: &Path) -> Output {
    run(remedy().arg("replay").arg(file))
}

// ---------------------------------------------------------------------------
// remedy check
// ---------------------------------------------------------------------------

#[test]
fn check_accepts_the_shipped_rules() {
    let out = run(remedy().args(["check", "rules"]));
    assert_eq!(out.code, 0, "{}", out.dump());
    assert!(
        !out.all_lines().iter().any(|l| l.contains(".rhai:")),
        "no rule may be reported: {}",
        out.dump()
    );
}

#[test]
fn check_prints_one_line_per_broken_rule_with_its_position() {
    let dir = fixture("rulesets/broken");
    let out = run(remedy().arg("check").arg(&dir));
    assert_eq!(out.code, 1, "{}", out.dump());

    let mut problems: Vec<_> = out.all_lines().into_iter().map(problem).collect();
    problems.sort();
    assert_eq!(
        problems.len(),
        2,
        "one line per broken rule: {}",
        out.dump()
    );

    let (path, row, col, message) = &problems[0];
    assert_eq!(path, &dir.join("no_classify.rhai").display().to_string());
    assert!(message.contains("classify"), "{message}");
    assert!(
        *row >= 1 && *col >= 1,
        "positions are 1-based: {}",
        out.dump()
    );

    // The stray `)` sits on line 5, column 21 of the file.
    let (path, row, col, message) = &problems[1];
    assert_eq!(path, &dir.join("stray_paren.rhai").display().to_string());
    assert_eq!((*row, *col), (5, 21), "{}", out.dump());
    assert!(!message.is_empty());

    assert!(!out.stdout.contains("good.rhai") && !out.stderr.contains("good.rhai"));
}

#[test]
fn check_of_a_missing_directory_exits_2_naming_it() {
    let scratch = TempDir::new().expect("temp dir");
    let missing = scratch.path().join("no-such-rules");
    let out = run(remedy().arg("check").arg(&missing));
    assert_eq!(out.code, 2, "{}", out.dump());
    let lines = out.all_lines();
    assert_eq!(lines.len(), 1, "{}", out.dump());
    assert!(
        lines[0].contains(&missing.display().to_string()),
        "{}",
        out.dump()
    );
}

#[test]
fn check_with_an_unknown_flag_exits_2_with_one_line() {
    let out = run(remedy().args(["check", "--frobnicate"]));
    assert_eq!(out.code, 2, "{}", out.dump());
    let lines = out.all_lines();
    assert_eq!(lines.len(), 1, "{}", out.dump());
    assert!(lines[0].contains("--frobnicate"), "{}", out.dump());
}

// ---------------------------------------------------------------------------
// remedy test
// ---------------------------------------------------------------------------

#[test]
fn test_passes_every_case_of_the_shipped_rules() {
    let out = run(remedy().args(["test", "rules"]));
    assert_eq!(out.code, 0, "{}", out.dump());
    let last = *out.stdout_lines().last().expect("a closing line");
    let passed = last
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("closing line is not `N passed, 0 failed`: {last:?}"));
    assert!(passed > 0, "the shipped rules ship tests: {last}");
}

#[test]
fn test_reports_a_wrong_case_with_expected_and_actual() {
    let out = run(remedy().arg("test").arg(fixture("rulesets/failing-case")));
    assert_eq!(out.code, 1, "{}", out.dump());
    let lines = out.stdout_lines();
    assert_eq!(lines.last(), Some(&"2 passed, 1 failed"), "{}", out.dump());

    let named = lines
        .iter()
        .position(|l| l.contains("heavy swapping is critical"))
        .unwrap_or_else(|| panic!("the failing case is not named: {}", out.dump()));
    let details = &lines[named + 1..lines.len() - 1];
    assert!(
        details
            .iter()
            .any(|l| l.trim_start().starts_with("expected:") && l.contains("critical")),
        "{}",
        out.dump()
    );
    assert!(
        details
            .iter()
            .any(|l| l.trim_start().starts_with("actual:") && l.contains("warning")),
        "{}",
        out.dump()
    );
    for passing in ["a quiet node is no fault", "heavy swapping is a swap storm"] {
        assert!(
            !out.stdout.contains(passing),
            "{passing} passed: {}",
            out.dump()
        );
    }
}

// ---------------------------------------------------------------------------
// remedy replay: input handling
// ---------------------------------------------------------------------------

#[test]
fn replay_rejects_each_malformed_line_naming_its_number_and_field() {
    let file = fixture("signals/mixed.jsonl");
    let out = replay_shipped(&file);
    assert_eq!(out.code, 0, "{}", out.dump());

    // (line, what the reason must mention), in file order.
    let expected = [
        (2, "JSON"),      // not JSON at all
        (3, "\"node\""),  // required field missing
        (4, "\"value\""), // a string where a number belongs
        (5, "\"kind\""),  // not hardware | component | resource
        (6, "\"ts\""),    // not RFC 3339
        (8, "\"node\""),  // an empty object lacks every required field
        (9, "object"),    // an array, not a signal object
        (11, "EOF"),      // cut off in the middle of a string
        (13, "EOF"),      // the last line, cut off without a newline
    ];
    let got = rejections(&out, &file.display().to_string());
    let numbers: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        expected.iter().map(|(n, _)| *n).collect::<Vec<u64>>(),
        "one rejection per bad line: {}",
        out.dump()
    );
    for ((number, reason), (_, mention)) in got.iter().zip(expected) {
        assert!(
            reason.contains(mention),
            "line {number}: reason should mention {mention}: {reason}"
        );
    }
}

#[test]
fn replay_decides_on_every_valid_line_among_malformed_ones() {
    let out = replay_shipped(&fixture("signals/mixed.jsonl"));
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_decisions(
        &decisions(&out),
        &[
            json!({"ts": "2026-11-24T23:58:07Z", "event": "fault_opened", "node": "node-a",
                   "fault": "memory_failure", "severity": "critical", "rule": "hardware/memory.rhai"}),
            json!({"ts": "2026-11-24T23:58:07Z", "event": "action", "node": "node-a",
                   "fault": "memory_failure", "action": "cordon", "outcome": "dry_run"}),
            json!({"ts": "2026-11-24T23:58:07Z", "event": "action", "node": "node-a",
                   "fault": "memory_failure", "action": "ticket", "outcome": "dry_run"}),
            json!({"ts": "2026-11-24T23:59:00Z", "event": "fault_opened", "node": "node-b",
                   "fault": "disk_failure", "severity": "critical", "rule": "hardware/disk.rhai"}),
            // The default storm budget (5% of a domain, at least one node)
            // holds the second cordon while node-a is out of service...
            json!({"event": "action", "node": "node-b", "fault": "disk_failure",
                   "action": "cordon", "outcome": "budget_exhausted",
                   "reason": "nodes without a cluster label: 1 of 2 known nodes under remediation, max_unhealthy 5% allows 1"}),
            json!({"event": "action", "node": "node-b", "fault": "disk_failure",
                   "action": "ticket", "outcome": "dry_run"}),
            json!({"ts": "2026-11-24T23:59:40Z", "event": "fault_resolved", "node": "node-a",
                   "fault": "memory_failure"}),
            json!({"ts": "2026-11-24T23:59:40Z", "event": "action", "node": "node-a",
                   "fault": "memory_failure", "action": "uncordon", "outcome": "dry_run"}),
            // ...and lets it go, as a new decision, once node-a is back.
            json!({"ts": "2026-11-24T23:59:40Z", "event": "action", "node": "node-b",
                   "fault": "disk_failure", "action": "cordon", "outcome": "dry_run"}),
            json!({"ts": "2026-11-25T00:01:00Z", "event": "fault_opened", "node": "node-c",
                   "fault": "memory_failure", "severity": "critical"}),
            json!({"event": "action", "node": "node-c", "fault": "memory_failure",
                   "action": "cordon", "outcome": "budget_exhausted"}),
            json!({"event": "action", "node": "node-c", "fault": "memory_failure",
                   "action": "ticket", "outcome": "dry_run"}),
        ],
    );
}

#[test]
fn replay_gives_byte_identical_output_on_every_run() {
    let file = fixture("signals/fleet.jsonl");
    let first = replay_shipped(&file);
    let second = replay_shipped(&file);
    assert_eq!(first.code, 0, "{}", first.dump());
    assert!(
        decisions(&first).len() >= 20,
        "the fleet fixture should open many faults: {}",
        first.dump()
    );
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn replay_from_stdin_matches_replay_from_the_file() {
    for name in ["signals/fleet.jsonl", "signals/mixed.jsonl"] {
        let file = fixture(name);
        let bytes = fs::read(&file).expect("read fixture");
        let from_file = replay_shipped(&file);
        let from_stdin = run_with_stdin(remedy().args(["replay", "-"]), &bytes);
        assert_eq!(from_stdin.code, 0, "{}", from_stdin.dump());
        assert!(!from_file.stdout.is_empty());
        assert_eq!(from_stdin.stdout, from_file.stdout, "{name}");
    }
}

// ---------------------------------------------------------------------------
// remedy replay: rules and lifecycle
// ---------------------------------------------------------------------------

#[test]
fn replay_stops_runaway_rules_and_still_opens_the_good_rules_fault() {
    let ws = workspace(&[&fixture("rulesets/hostile")]);
    let good = ws.path().join("rules/hardware/memory.rhai");
    fs::create_dir_all(good.parent().expect("parent")).expect("create rules/hardware");
    fs::copy(repo().join("rules/hardware/memory.rhai"), &good).expect("copy the memory rule");

    let out = run(remedy()
        .current_dir(ws.path())
        .arg("replay")
        .arg(fixture("signals/two-failures.jsonl")));
    assert_eq!(out.code, 0, "{}", out.dump());

    // The hostile rules meet both signals too; the memory rule still answers both.
    assert_decisions(
        &decisions(&out),
        &[
            json!({"event": "fault_opened", "node": "node-a", "fault": "memory_failure",
                   "rule": "hardware/memory.rhai"}),
            json!({"event": "action", "node": "node-a", "action": "cordon"}),
            json!({"event": "action", "node": "node-a", "action": "ticket"}),
            json!({"event": "fault_opened", "node": "node-b", "fault": "memory_failure",
                   "rule": "hardware/memory.rhai"}),
            json!({"event": "action", "node": "node-b", "action": "cordon"}),
            json!({"event": "action", "node": "node-b", "action": "ticket"}),
        ],
    );
    for rule in [
        "endless_loop.rhai",
        "unbounded_recursion.rhai",
        "growing_string.rhai",
    ] {
        assert!(
            out.stderr_lines()
                .iter()
                .any(|l| l.contains(rule) && l.contains("stopped")),
            "stderr should say {rule} was stopped: {}",
            out.dump()
        );
    }
}

#[test]
fn replay_ignores_a_repeated_id() {
    // Line 2 is a redelivery of line 1; line 3 reuses the id for another signal.
    let out = replay_shipped(&fixture("signals/repeated-ids.jsonl"));
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_decisions(
        &decisions(&out),
        &[
            json!({"event": "fault_opened", "node": "node-a", "fault": "memory_failure"}),
            json!({"event": "action", "node": "node-a", "action": "cordon"}),
            json!({"event": "action", "node": "node-a", "action": "ticket"}),
        ],
    );
}

#[test]
fn replay_opens_a_fault_once_however_often_it_repeats_until_it_resolves() {
    let out = replay_shipped(&fixture("signals/repeats.jsonl"));
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_decisions(
        &decisions(&out),
        &[
            json!({"ts": "2026-11-24T23:58:07Z", "event": "fault_opened", "fault": "memory_failure"}),
            json!({"ts": "2026-11-24T23:58:07Z", "event": "action", "action": "cordon"}),
            json!({"ts": "2026-11-24T23:58:07Z", "event": "action", "action": "ticket"}),
            json!({"ts": "2026-11-25T00:05:00Z", "event": "fault_resolved", "fault": "memory_failure"}),
            json!({"ts": "2026-11-25T00:05:00Z", "event": "action", "action": "uncordon"}),
            json!({"ts": "2026-11-25T00:10:00Z", "event": "fault_opened", "fault": "memory_failure"}),
            json!({"ts": "2026-11-25T00:10:00Z", "event": "action", "action": "cordon"}),
            json!({"ts": "2026-11-25T00:10:00Z", "event": "action", "action": "ticket"}),
        ],
    );
}

#[test]
fn replay_lets_rules_read_unknown_signal_fields() {
    let ws = workspace(&[&fixture("rulesets/unknown-field")]);
    let file = fixture("signals/unknown-fields.jsonl");
    let out = run(remedy().current_dir(ws.path()).arg("replay").arg(&file));
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        rejections(&out, &file.display().to_string()),
        [],
        "unknown fields are never an error: {}",
        out.dump()
    );
    assert_decisions(
        &decisions(&out),
        &[
            json!({"event": "fault_opened", "node": "node-a", "fault": "probe_seen",
                   "severity": "info", "rule": "probe.rhai",
                   "reason": "some_field=from the producer slot=A1"}),
            json!({"event": "action", "node": "node-a", "fault": "probe_seen"}),
        ],
    );
}

// ---------------------------------------------------------------------------
// remedy replay: configuration and missing files
// ---------------------------------------------------------------------------

#[test]
fn replay_refuses_a_config_with_an_unknown_key() {
    let out = run(remedy()
        .arg("replay")
        .arg("--config")
        .arg(fixture("config/unknown-key.toml"))
        .arg(fixture("signals/two-failures.jsonl")));
    assert_eq!(out.code, 2, "{}", out.dump());
    assert!(out.stdout.is_empty(), "no decisions: {}", out.dump());
    let lines = out.all_lines();
    assert_eq!(lines.len(), 1, "{}", out.dump());
    assert!(lines[0].contains("actons"), "{}", out.dump());
}

#[test]
fn replay_runs_the_actions_the_config_sets_for_a_fault() {
    let ws = workspace(&[&repo().join("rules")]);
    fs::copy(fixture("config/drain.toml"), ws.path().join("remedy.toml")).expect("copy config");
    let out = run(remedy()
        .current_dir(ws.path())
        .args(["replay", "--config", "remedy.toml"])
        .arg(fixture("signals/two-failures.jsonl")));
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_decisions(
        &decisions(&out),
        &[
            json!({"event": "fault_opened", "node": "node-a", "fault": "memory_failure"}),
            json!({"event": "action", "node": "node-a", "fault": "memory_failure",
                   "action": "drain", "outcome": "dry_run"}),
            json!({"event": "fault_opened", "node": "node-b", "fault": "memory_failure"}),
            json!({"event": "action", "node": "node-b", "fault": "memory_failure",
                   "action": "drain", "outcome": "dry_run"}),
        ],
    );
}

/// Exit 2, nothing on stdout, and one line that names `path`.
fn assert_usage_error_naming(out: &Output, path: &Path) {
    assert_eq!(out.code, 2, "{}", out.dump());
    assert!(out.stdout.is_empty(), "{}", out.dump());
    let lines = out.all_lines();
    assert_eq!(lines.len(), 1, "{}", out.dump());
    assert!(
        lines[0].contains(&path.display().to_string()),
        "{}",
        out.dump()
    );
}

#[test]
fn replay_of_a_missing_file_exits_2_naming_it() {
    let scratch = TempDir::new().expect("temp dir");
    let missing = scratch.path().join("no-such-signals.jsonl");
    let out = run(remedy().arg("replay").arg(&missing));
    assert_usage_error_naming(&out, &missing);
}

#[test]
fn replay_with_a_missing_config_file_exits_2_naming_it() {
    let scratch = TempDir::new().expect("temp dir");
    let missing = scratch.path().join("no-such-config.toml");
    let out = run(remedy()
        .arg("replay")
        .arg("--config")
        .arg(&missing)
        .arg(fixture("signals/two-failures.jsonl")));
    assert_usage_error_naming(&out, &missing);
}

#[test]
fn replay_without_a_file_names_the_missing_argument() {
    let out = run(remedy().arg("replay"));
    assert_eq!(out.code, 2, "{}", out.dump());
    let lines = out.all_lines();
    assert_eq!(lines.len(), 1, "{}", out.dump());
    assert!(lines[0].contains("FILE"), "{}", out.dump());
}

// ---------------------------------------------------------------------------
// The config as typed at load: what an action is, not what it is called
// ---------------------------------------------------------------------------

/// Three nodes of one cluster lose a DIMM, one minute apart, with a budget
/// of one node under remediation: the outcomes of `action` for each.
fn budget_outcomes(actions_section: &str, action: &str) -> Vec<String> {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("remedy.toml");
    fs::write(
        &config,
        format!(
            "rules = {:?}\n[guards]\nmax_unhealthy = 1\n\
             [faults.memory_failure]\nactions = [\"{action}\"]\n{actions_section}",
            repo().join("rules").display().to_string()
        ),
    )
    .unwrap();
    let signals: String = (1..=3)
        .map(|i| {
            format!(
                "{{\"node\":\"n{i}\",\"kind\":\"hardware\",\"type\":\"memory.ecc.uncorrectable\",\
                 \"ts\":\"2026-11-24T00:0{i}:00Z\",\"labels\":{{\"cluster\":\"c1\"}}}}\n"
            )
        })
        .collect();
    let out = run_with_stdin(
        remedy()
            .args(["replay", "-", "--quiet", "--config"])
            .arg(&config),
        signals.as_bytes(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    decisions(&out)
        .iter()
        .filter(|d| d["action"] == action)
        .map(|d| d["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_drain_under_another_name_is_held_by_the_budget_like_drain() {
    let drain = budget_outcomes("", "drain");
    assert_eq!(drain, ["dry_run", "budget_exhausted", "budget_exhausted"]);
    let evacuate = budget_outcomes(
        "[actions.evacuate]\nexecutor = \"kubernetes\"\nop = \"drain\"\n",
        "evacuate",
    );
    assert_eq!(evacuate, drain, "op = drain counts against the budget");
    // And the other way round: a ticket called `cordon` takes nobody out.
    let ticket = budget_outcomes(
        "[actions.cordon]\nexecutor = \"http\"\nurl = \"http://127.0.0.1:1/t\"\nop = \"ticket\"\n",
        "cordon",
    );
    assert_eq!(ticket, ["dry_run", "dry_run", "dry_run"]);
}

/// `remedy replay` and `remedy run` refuse the same bad config the same
/// way: exit 2 and one line naming file, line, column and key.
#[test]
fn a_bad_config_is_refused_by_replay_and_run_alike_naming_line_and_key() {
    let dir = TempDir::new().unwrap();
    let cases = [
        (
            "[actions.cordon]\nratee = \"20/min\"\n",
            ":2:1: actions.cordon.ratee: unknown field `ratee`",
        ),
        (
            "[http]\ntokn_file = \"/t\"\n",
            ":2:1: http.tokn_file: unknown field `tokn_file`",
        ),
        (
            "[journal]\nulr = \"sqlite://x.db\"\n",
            ":2:1: journal.ulr: unknown field `ulr`",
        ),
        (
            "[faults.disk_failure]\nfor = \"ten minutes\"\n",
            ":2:7: faults.disk_failure.for: invalid duration",
        ),
        (
            "[actions.cordon]\nrate = \"20 a minute\"\n",
            ":2:1: actions.cordon.rate: invalid rate",
        ),
        (
            "[actions.ticket]\nexecutor = \"http\"\nurl = \"tickets\"\n",
            ":3:1: actions.ticket.url: url: not a URL",
        ),
        (
            "[actions.cordon]\nexecutor = \"kubernets\"\n",
            "actions.cordon.executor: unknown variant `kubernets`",
        ),
        (
            "[faults.disk_failure]\nactions = [\"cordn\"]\n",
            "faults.disk_failure.actions: unknown action \"cordn\"",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("bad-{i}.toml"));
        fs::write(&config, text).unwrap();
        let shown = config.display().to_string();
        for args in [
            vec!["replay", "examples/signals.jsonl", "--config", &shown],
            vec!["run", "--config", &shown],
            vec!["check", "--config", &shown],
        ] {
            let out = run(remedy().args(&args));
            assert_eq!(out.code, 2, "{args:?} {text:?}: {}", out.stderr);
            let line = out.stderr.trim();
            assert!(
                line.starts_with(&format!("error: config {shown}:"))
                    && line.contains(expected)
                    && !line.contains('\n'),
                "{args:?} {text:?}: {line}"
            );
        }
    }
}

#[test]
fn check_with_a_config_checks_the_config_and_its_rules() {
    let out = run(remedy().args(["check", "--config", "examples/storm.toml"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("examples/storm.toml: valid"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("rules valid"), "{}", out.stdout);
}

/// `remedy replay` of `signals` (JSON lines) with a config of `config`
/// and the shipped rules: each decision as `"HH:MM:SS event action outcome"`
/// (empty parts left out), and the whole output for messages.
fn replay_timeline(config: &str, signals: &str) -> (Vec<String>, String) {
    let dir = TempDir::new().unwrap();
    let config_path = dir.path().join("remedy.toml");
    fs::write(&config_path, config).unwrap();
    let input = dir.path().join("signals.jsonl");
    fs::write(&input, signals).unwrap();
    let out = run(remedy().args([
        "replay",
        input.to_str().unwrap(),
        "--config",
        config_path.to_str().unwrap(),
        "--rules",
        "rules",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let timeline = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|d| {
            let f = |k: &str| d[k].as_str().unwrap_or("").to_string();
            let ts = f("ts");
            [
                ts[11..19].to_string(),
                f("event"),
                f("action"),
                f("outcome"),
            ]
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
        })
        .collect();
    (timeline, out.stdout)
}

/// A DIMM failure (or its clearing) on n1 at `time` of 2026-11-24.
fn ue(time: &str, resolved: bool) -> String {
    format!("{{\"node\":\"n1\",\"kind\":\"hardware\",\"type\":\"memory.ecc.uncorrectable\",\"ts\":\"2026-11-24T{time}Z\",\"resolved\":{resolved}}}\n")
}

/// Another node's heartbeat at `time`: event time moves on.
fn beat(time: &str) -> String {
    format!("{{\"node\":\"n2\",\"kind\":\"component\",\"type\":\"node.heartbeat\",\"ts\":\"2026-11-24T{time}Z\"}}\n")
}

const CORDON_UNCORDON: &str =
    "[faults.memory_failure]\nactions = [\"cordon\"]\non_resolve = [\"uncordon\"]\n";

/// `max_attempts`: a DIMM failure that comes back on one node a fourth time
/// within a week is not cordoned a fourth time: `attempts_exhausted`, and
/// the `then` ticket for a person instead. In `replay`, on event time.
#[test]
fn a_fault_back_a_fourth_time_within_max_attempts_goes_to_a_person() {
    let config = format!(
        "{CORDON_UNCORDON}max_attempts = {{ count = 3, within = \"7d\", then = [\"ticket\"] }}\n"
    );
    let signals: String = ["00", "01", "05", "06", "10", "11", "20"]
        .iter()
        .enumerate()
        .map(|(i, h)| ue(&format!("{h}:00:00"), i % 2 == 1))
        .collect();
    let (timeline, stdout) = replay_timeline(&config, &signals);
    let actions: Vec<&String> = timeline.iter().filter(|l| l.contains(" action ")).collect();
    assert_eq!(
        actions,
        [
            "00:00:00 action cordon dry_run",
            "01:00:00 action uncordon dry_run",
            "05:00:00 action cordon dry_run",
            "06:00:00 action uncordon dry_run",
            "10:00:00 action cordon dry_run",
            "11:00:00 action uncordon dry_run",
            "20:00:00 action cordon attempts_exhausted",
            "20:00:00 action ticket dry_run",
        ],
        "{stdout}"
    );
    let exhausted = stdout
        .lines()
        .find(|l| l.contains("attempts_exhausted"))
        .unwrap();
    assert!(
        exhausted.contains(
            "memory_failure opened on n1 4 times within 7d, max_attempts 3: ticket instead"
        ),
        "{exhausted}"
    );
}

/// `healthy_delay`: the uncordon waits until the fault has stayed resolved
/// for it (to the second, on event time in `replay`); a fault back within
/// the delay never gets its node uncordoned in between.
#[test]
fn on_resolve_waits_for_healthy_delay_and_a_fault_back_within_it_is_never_uncordoned() {
    let config = format!("{CORDON_UNCORDON}healthy_delay = \"5m\"\n");
    let signals = [
        ue("00:00:00", false),
        ue("01:00:00", true), // resolved...
        beat("01:04:59"),     // ...not yet healthy for 5m
        beat("01:05:00"),     // now it is: uncordon at 01:05:00
        ue("02:00:00", false),
        ue("03:00:00", true),
        ue("03:03:00", false), // back within the delay: stays cordoned
        beat("03:20:00"),
    ]
    .concat();
    let (timeline, stdout) = replay_timeline(&config, &signals);
    assert_eq!(
        timeline,
        [
            "00:00:00 fault_opened",
            "00:00:00 action cordon dry_run",
            "01:00:00 fault_resolved",
            "01:05:00 action uncordon dry_run",
            "02:00:00 fault_opened",
            "02:00:00 action cordon dry_run",
            "03:00:00 fault_resolved",
            "03:03:00 fault_opened",
            "03:03:00 action cordon dry_run",
        ],
        "{stdout}"
    );
}

/// `verify`: a fault still open 30 minutes after its cordon was done
/// (dry_run in replay) did not get better from it: `fault_unverified`, and
/// the next rung (a reinstall, due after 4h) is asked for at once, once;
/// the same after the reinstall, and past the last rung it says a person
/// has to look.
#[test]
fn a_fault_still_open_verify_after_its_action_escalates_at_once() {
    let config = "[faults.memory_failure]\nactions = [\"cordon\"]\nverify = \"30m\"\n\
         escalate = [{ after = \"4h\", actions = [\"reinstall\"] }, { after = \"8h\", actions = [\"ticket\"] }]\n";
    let signals = [
        ue("00:00:00", false),
        beat("00:29:59"),
        beat("00:30:00"),
        beat("05:00:00"),
    ]
    .concat();
    let (timeline, stdout) = replay_timeline(config, &signals);
    assert_eq!(
        timeline,
        [
            "00:00:00 fault_opened",
            "00:00:00 action cordon dry_run",
            "00:30:00 fault_unverified",
            "00:30:00 action reinstall dry_run",
            "01:00:00 fault_unverified",
            "01:00:00 action ticket dry_run",
            "01:30:00 fault_unverified",
        ],
        "{stdout}"
    );
    assert!(stdout
        .lines()
        .last()
        .unwrap()
        .contains("no rung left: a person has to look"));
    let unverified = stdout
        .lines()
        .find(|l| l.contains("fault_unverified"))
        .unwrap();
    assert!(
        unverified.contains("verification failed: memory_failure on n1 still open 30m after cordon at 2026-11-24T00:00:00Z; escalating to reinstall now"),
        "{unverified}"
    );
}

/// The README's worked example of action safety, decision by decision.
#[test]
fn the_action_safety_example_of_the_readme_replays_as_it_says() {
    let config = format!(
        "{CORDON_UNCORDON}escalate = [{{ after = \"4h\", actions = [\"reinstall\"] }}]\nverify = \"30m\"\n\
         healthy_delay = \"5m\"\nmax_attempts = {{ count = 3, within = \"7d\", then = [\"ticket\"] }}\n"
    );
    let mut signals = String::new();
    let mut expected = Vec::new();
    for hour in ["00", "05", "10"] {
        signals.push_str(&ue(&format!("{hour}:00:00"), false));
        signals.push_str(&beat(&format!("{hour}:30:00")));
        signals.push_str(&ue(&format!("{hour}:50:00"), true));
        signals.push_str(&beat(&format!("{hour}:59:00")));
        expected.extend([
            format!("{hour}:00:00 fault_opened"),
            format!("{hour}:00:00 action cordon dry_run"),
            format!("{hour}:30:00 fault_unverified"),
            format!("{hour}:30:00 action reinstall dry_run"),
            format!("{hour}:50:00 fault_resolved"),
            format!("{hour}:55:00 action uncordon dry_run"),
        ]);
    }
    signals.push_str(&ue("20:00:00", false));
    signals.push_str(&beat("23:00:00"));
    expected.extend([
        "20:00:00 fault_opened".to_string(),
        "20:00:00 action cordon attempts_exhausted".into(),
        "20:00:00 action ticket dry_run".into(),
    ]);
    let (timeline, stdout) = replay_timeline(&config, &signals);
    assert_eq!(timeline, expected, "{stdout}");
}

/// `[faults.X]` with only `for` delays the class without dropping its
/// default actions (they used to be replaced by none).
#[test]
fn a_fault_table_with_only_for_keeps_the_default_actions() {
    let signals = [ue("00:00:00", false), ue("00:01:00", false)].concat();
    let (timeline, stdout) = replay_timeline("[faults.memory_failure]\nfor = \"1m\"\n", &signals);
    assert_eq!(
        timeline,
        [
            "00:01:00 fault_opened",
            "00:01:00 action cordon dry_run",
            "00:01:00 action ticket dry_run",
        ],
        "{stdout}"
    );
}

/// Contract 9: nested budgets. Eighty nodes in two racks of one cluster; a
/// rack allows 2 under remediation, the cluster 10%, the fleet 3, and at
/// most 2 disruptive repairs start per minute in the fleet. Each refusal
/// names the level that held the action, its value and the numbers.
#[test]
fn nested_levels_hold_each_repair_at_the_level_it_does_not_fit() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("remedy.toml");
    fs::write(
        &config,
        format!(
            "rules = {:?}\n\
             [[guards.levels]]\nlabel = \"rack\"\nmax_unhealthy = 2\n\
             [[guards.levels]]\nlabel = \"cluster\"\nmax_unhealthy = \"10%\"\n\
             [guards.fleet]\nmax_unhealthy = 3\nrate = \"2/min\"\n\
             [faults.memory_failure]\nactions = [\"cordon\"]\non_resolve = [\"uncordon\"]\n",
            repo().join("rules").display().to_string()
        ),
    )
    .unwrap();
    let signal = |node: usize, r#type: &str, secs: usize, resolved: bool| {
        format!(
            "{{\"node\":\"n{node}\",\"kind\":\"hardware\",\"type\":\"{type}\",\"resolved\":{resolved},\
             \"ts\":\"2026-11-24T00:{:02}:{:02}Z\",\"labels\":{{\"cluster\":\"c1\",\"rack\":\"r{}\"}}}}\n",
            secs / 60,
            secs % 60,
            node % 2
        )
    };
    let mut input = String::new();
    for n in 0..80 {
        input += &signal(n, "node.heartbeat", 0, false);
    }
    // n0, n2, n4 in rack r0; n1, n3 in rack r1; one a second.
    for (i, n) in [0, 2, 4, 1, 3].into_iter().enumerate() {
        input += &signal(n, "memory.ecc.uncorrectable", 1 + i, false);
    }
    // n0 heals a minute later: its rack and the fleet have room again.
    input += &signal(0, "memory.ecc.uncorrectable", 90, true);
    let out = run_with_stdin(
        remedy()
            .args(["replay", "-", "--quiet", "--config"])
            .arg(&config),
        input.as_bytes(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Vec<(String, String, String, String)> = decisions(&out)
        .iter()
        .filter(|d| d["event"] == "action")
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
            (
                s("ts"),
                s("node"),
                format!("{} {}", s("action"), s("outcome")),
                s("reason"),
            )
        })
        .collect();
    let want = [
        ("2026-11-24T00:00:01Z", "n0", "cordon dry_run", ""),
        ("2026-11-24T00:00:02Z", "n2", "cordon dry_run", ""),
        (
            "2026-11-24T00:00:03Z",
            "n4",
            "cordon budget_exhausted",
            "rack r0: 2 of 40 known nodes under remediation, max_unhealthy 2 allows 2",
        ),
        (
            "2026-11-24T00:00:04Z",
            "n1",
            "cordon rate_limited",
            "disruptive actions in fleet: 2/min; next at 2026-11-24T00:00:31Z",
        ),
        (
            "2026-11-24T00:00:05Z",
            "n3",
            "cordon rate_limited",
            "disruptive actions in fleet: 2/min; next at 2026-11-24T00:00:31Z",
        ),
        // Replay's clock moves with the signals: the next one is n0's, at 01:30.
        ("2026-11-24T00:01:30Z", "n1", "cordon dry_run", ""),
        (
            "2026-11-24T00:01:30Z",
            "n3",
            "cordon budget_exhausted",
            "fleet: 3 of 80 known nodes under remediation, max_unhealthy 3 allows 3",
        ),
        ("2026-11-24T00:01:30Z", "n0", "uncordon dry_run", ""),
        ("2026-11-24T00:01:30Z", "n4", "cordon dry_run", ""),
    ];
    let want: Vec<(String, String, String, String)> = want
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(got, want, "{}", out.stdout);
}

/// Replays 480 nodes in 12 racks (n % 12) with `config`: power lost on
/// twelve of them, `rack_of(i)` the i-th, 5 s apart from 00:01:00, and a
/// heartbeat at 00:03:00 that moves time on.
fn power_loss(config: &Path, rack_of: &dyn Fn(usize) -> usize) -> Vec<Value> {
    let line = |n: usize, ty: &str, ts: &str| {
        format!(
            "{{\"node\":\"n{n}\",\"kind\":\"hardware\",\"type\":\"{ty}\",\"ts\":\"2026-11-24T{ts}Z\",\
             \"labels\":{{\"cluster\":\"c1\",\"rack\":\"r{}\"}}}}\n",
            n % 12
        )
    };
    let mut input: String = (0..480)
        .map(|n| line(n, "node.heartbeat", "00:00:00"))
        .collect();
    for i in 0..12 {
        input += &line(rack_of(i), "power.lost", &format!("00:01:{:02}", i * 5));
    }
    input += &line(479, "node.heartbeat", "00:03:00");
    let out = run_with_stdin(
        remedy()
            .args(["replay", "-", "--quiet", "--config"])
            .arg(config),
        input.as_bytes(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    decisions(&out)
}

/// Contract 9's `settle`: with `settle = "30s"` the first two nodes of the
/// rack wait too, so the common cause holds all twelve cordons (none goes
/// before it showed); twelve racks with one node each are twelve repairs,
/// each 30 s after its fault opened.
#[test]
fn with_settle_the_first_nodes_of_a_common_cause_are_held_too() {
    let dir = TempDir::new().unwrap();
    copy_tree(&repo().join("rules"), &dir.path().join("rules"));
    let config = dir.path().join("remedy.toml");
    fs::write(
        &config,
        "rules = \"rules\"\n[guards]\nmax_unhealthy = \"50%\"\n\
         [[correlate]]\nlabel = \"rack\"\nfaults = [\"power_failure\"]\nmin_nodes = 3\nwithin = \"5m\"\n\
         fault = \"rack_power_event\"\nhold = true\nsettle = \"30s\"\n\
         [faults.power_failure]\nactions = [\"cordon\"]\non_resolve = [\"uncordon\"]\n\
         [faults.rack_power_event]\nactions = [\"ticket\"]\n",
    )
    .unwrap();
    let cordons = |ds: &[Value]| -> Vec<(String, String, String)> {
        ds.iter()
            .filter(|d| d["action"] == "cordon")
            .map(|d| {
                (
                    d["ts"].as_str().unwrap().to_string(),
                    d["node"].as_str().unwrap().to_string(),
                    d["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let one_rack = power_loss(&config, &|i| i * 12);
    let held = cordons(&one_rack);
    assert_eq!(held.len(), 12, "{held:?}");
    assert!(
        held.iter().all(|(_, _, o)| o == "held_common_cause"),
        "none went: {held:?}"
    );
    let first = one_rack
        .iter()
        .find(|d| d["action"] == "cordon" && d["node"] == "n0")
        .unwrap();
    assert_eq!(
        first["reason"],
        "rack r0: waiting until 2026-11-24T00:01:30Z (settle 30s) for a common cause to show \
         before acting on one node",
        "{first}"
    );
    assert_eq!(first["retry_at"], "2026-11-24T00:01:30Z", "{first}");
    assert_eq!(
        first["why"]["guards"],
        json!([{"guard": "settle", "label": "rack", "value": "r0", "until": "2026-11-24T00:01:30Z"}])
    );
    // No common cause: each cordon goes once its 30 s are up.
    let spread = power_loss(&config, &|i| i);
    let passed: Vec<(String, String)> = cordons(&spread)
        .into_iter()
        .filter(|(_, _, o)| o == "dry_run")
        .map(|(ts, n, _)| (n, ts))
        .collect();
    assert_eq!(passed.len(), 12, "{passed:?}");
    assert_eq!(
        passed[0],
        ("n0".to_string(), "2026-11-24T00:01:30Z".to_string()),
        "{passed:?}"
    );
}

/// Contract 9: common cause. Power lost on 12 of the 40 nodes of one rack
/// gives one rack fault (a domain fault), its ticket, and holds the per-node
/// cordons from the third node on; the same count spread over 12 racks is
/// 12 node repairs. The `[[correlate]]` block says what the shipped rule
/// hardware/rack_power.rhai says, under its fault name: the block decides
/// that class, the rule's per-node answers are not opened.
#[test]
fn a_rack_power_loss_is_one_common_cause_and_twelve_racks_are_twelve_repairs() {
    let dir = TempDir::new().unwrap();
    copy_tree(&repo().join("rules"), &dir.path().join("rules"));
    let config = dir.path().join("remedy.toml");
    fs::write(
        &config,
        "rules = \"rules\"\n[guards]\nmax_unhealthy = \"50%\"\n\
         [[correlate]]\nlabel = \"rack\"\nfaults = [\"power_failure\"]\nmin_nodes = 3\nwithin = \"5m\"\n\
         fault = \"rack_power_event\"\nhold = true\n\
         [faults.power_failure]\nactions = [\"cordon\"]\non_resolve = [\"uncordon\"]\n\
         [faults.rack_power_event]\nactions = [\"ticket\"]\n",
    )
    .unwrap();
    let replay = |rack_of: &dyn Fn(usize) -> usize| power_loss(&config, rack_of);
    // Twelve nodes of rack r0: n0, n12, n24, ...
    let one_rack = replay(&|i| i * 12);
    let rack_faults: Vec<&Value> = one_rack
        .iter()
        .filter(|d| d["fault"] == "rack_power_event")
        .collect();
    assert_eq!(
        rack_faults.len(),
        2,
        "opened and its ticket: {rack_faults:#?}"
    );
    assert_eq!(rack_faults[0]["event"], "fault_opened");
    assert_eq!(rack_faults[0]["domain"], json!({"rack": "r0"}));
    assert_eq!(rack_faults[0]["node"], "rack=r0");
    assert_eq!(
        rack_faults[0]["reason"],
        "3 of 40 known nodes in rack r0 with power_failure within 5m: one common cause"
    );
    assert_eq!(
        (
            rack_faults[1]["action"].as_str(),
            rack_faults[1]["outcome"].as_str()
        ),
        (Some("ticket"), Some("dry_run"))
    );
    let cordons: Vec<(String, String)> = one_rack
        .iter()
        .filter(|d| d["action"] == "cordon")
        .map(|d| {
            (
                d["node"].as_str().unwrap().to_string(),
                d["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut want = vec![
        ("n0".to_string(), "dry_run".to_string()),
        ("n12".into(), "dry_run".into()),
    ];
    want.extend((2..12).map(|i| (format!("n{}", i * 12), "held_common_cause".to_string())));
    assert_eq!(cordons, want, "the first two went before the cause showed");
    let held = one_rack
        .iter()
        .find(|d| d["outcome"] == "held_common_cause")
        .unwrap();
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .starts_with("rack r0: common cause rack_power_event is open"),
        "{held}"
    );
    // Twelve racks, one node each: no common cause, twelve repairs.
    let spread = replay(&|i| i);
    assert!(!spread.iter().any(|d| d["fault"] == "rack_power_event"));
    let passed = spread
        .iter()
        .filter(|d| d["action"] == "cordon" && d["outcome"] == "dry_run")
        .count();
    assert_eq!(passed, 12);
}

/// Contract 9's simulations with examples/fleet-safety.toml: each shared
/// cause is named once, no level goes past its budget, no node is acted on
/// twice; the closing summary says so.
#[test]
fn the_fleet_safety_scenarios_name_each_cause_once_within_every_budget() {
    let config = repo().join("examples/fleet-safety.toml");
    for (scenario, node_fault, cause, passed_before) in [
        ("tor-switch-partition", "node_not_ready", "switch_down", 2),
        ("bad-kernel-rollout", "kernel_fault", "bad_kernel", 9),
        ("flapping-detector", "kernel_deadlock", "bad_detector", 19),
    ] {
        let sim = run(remedy().args(["simulate", scenario, "--nodes", "4000"]));
        assert_eq!(sim.code, 0, "{}", sim.stderr);
        let out = run_with_stdin(
            remedy().args(["replay", "-", "--config"]).arg(&config),
            sim.stdout.as_bytes(),
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        let all = decisions(&out);
        let opened: Vec<&Value> = all
            .iter()
            .filter(|d| d["event"] == "fault_opened" && d["fault"] == cause)
            .collect();
        assert_eq!(opened.len(), 1, "{scenario}: one {cause}: {opened:#?}");
        assert!(opened[0]["domain"].is_object(), "{scenario}: {}", opened[0]);
        // Disruptive repairs of the nodes before the cause showed, then held.
        let held = all
            .iter()
            .filter(|d| d["outcome"] == "held_common_cause")
            .count();
        assert!(held > 0, "{scenario}: nothing held");
        let before: std::collections::BTreeSet<&str> = all
            .iter()
            .take_while(|d| d["fault"] != cause)
            .filter(|d| {
                d["fault"] == node_fault && d["action"] == "cordon" && d["outcome"] == "dry_run"
            })
            .map(|d| d["node"].as_str().unwrap())
            .collect();
        assert!(before.len() <= passed_before, "{scenario}: {before:?}");
        assert!(
            out.stderr
                .contains("nodes acted on twice: 0; actions where a silence was in force: 0"),
            "{scenario}: {}",
            out.stderr
        );
        let peak = out
            .stderr
            .lines()
            .find(|l| l.starts_with("peak out of service:"))
            .unwrap_or_else(|| panic!("{scenario}: no peak line: {}", out.stderr));
        // rack 2, cluster 5% of 2,000 = 100, fleet 2% of 4,000 = 80.
        for (level, limit) in [("rack ", 2), ("cluster ", 100), ("fleet ", 80)] {
            let n: usize = peak
                .split(", ")
                .find_map(|p| p.split(": ").last().unwrap_or(p).strip_prefix(level))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{scenario}: no {level}in {peak}"));
            assert!(n <= limit, "{scenario}: {level}{n} > {limit}: {peak}");
        }
    }
}

/// Contract 11: `remedy explain NODE FILE --at TIME` tells a held node's
/// story in time order (its signals, the rule's answer, the fault, the
/// held cordon with its reason) and its state then, with the exact numbers
/// of its domains' budgets; `--json` says the same for tools; an unknown
/// node exits 1 naming it.
#[test]
fn explain_tells_a_held_nodes_story_with_its_budgets() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("remedy.toml");
    fs::write(
        &config,
        format!(
            "rules = {:?}\n[guards]\nmax_unhealthy = \"none\"\n[[guards.levels]]\nlabel = \"rack\"\nmax_unhealthy = 1\n\
             [faults.memory_failure]\nactions = [\"cordon\"]\n",
            repo().join("rules").display().to_string()
        ),
    )
    .unwrap();
    let signal = |node: usize, r#type: &str, secs: usize| {
        format!(
            "{{\"node\":\"n{node}\",\"kind\":\"hardware\",\"type\":\"{type}\",\"ts\":\"2026-11-24T00:00:{secs:02}Z\",\
             \"labels\":{{\"cluster\":\"c1\",\"rack\":\"r1\"}}}}\n"
        )
    };
    let mut input = String::new();
    for n in 0..10 {
        input += &signal(n, "node.heartbeat", 0);
        input += &signal(n, "node.heartbeat", 1);
    }
    input += &signal(1, "memory.ecc.uncorrectable", 10);
    input += &signal(2, "memory.ecc.uncorrectable", 20);
    input += &signal(2, "node.heartbeat", 40);
    let file = dir.path().join("signals.jsonl");
    fs::write(&file, &input).unwrap();
    let out = run(remedy()
        .args(["explain", "n2"])
        .arg(&file)
        .arg("--config")
        .arg(&config)
        .args(["--at", "2026-11-24T00:00:30Z"]));
    assert_eq!(out.code, 0, "{}", out.dump());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "n2");
    assert!(
        lines[1].ends_with("signal      node.heartbeat x2 until 2026-11-24T00:00:01Z"),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].ends_with("signal      memory.ecc.uncorrectable"),
        "{}",
        out.stdout
    );
    assert!(
        lines[3].contains("rule        hardware/memory.rhai -> memory_failure"),
        "{}",
        out.stdout
    );
    assert!(
        lines[4].contains("opened      memory_failure"),
        "{}",
        out.stdout
    );
    assert!(
        lines[5].contains(
            "action      cordon budget_exhausted (memory_failure): rack r1: 1 of 10 known nodes under remediation, max_unhealthy 1 allows 1"
        ),
        "{}",
        out.stdout
    );
    // The line below names the rule with the hash `sha256sum` gives its
    // file, the rung, and every guard with its numbers.
    let sha = Command::new("sha256sum")
        .arg(repo().join("rules/hardware/memory.rhai"))
        .output()
        .unwrap();
    let hash = String::from_utf8(sha.stdout).unwrap()[..12].to_string();
    assert_eq!(
        lines[6].trim_start(),
        format!(
            "why: rule hardware/memory.rhai ({hash}); rung actions; \
             budget rack r1: 1 of 10 under remediation, allows 1 HELD"
        ),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("00:00:40"),
        "--at stops the story: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("state at 2026-11-24T00:00:30Z:"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("  held      cordon (memory_failure): budget_exhausted"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "  budget    rack r1: 1 of 10 known nodes under remediation, max_unhealthy 1 allows 1"
        ),
        "{}",
        out.stdout
    );
    let json = run(remedy()
        .args(["explain", "n2", "--json", "--config"])
        .arg(&config)
        .arg(&file));
    assert_eq!(json.code, 0, "{}", json.dump());
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["node"], "n2");
    assert_eq!(v["state"]["open_faults"][0][0], "memory_failure");
    assert_eq!(v["state"]["budgets"][0]["under_remediation"], 1);
    assert_eq!(v["state"]["budgets"][0]["allows"], 1);
    let held = &v["events"][4];
    assert_eq!(held["outcome"], "budget_exhausted", "{held}");
    assert_eq!(held["why"]["rule_hash"], hash.as_str(), "{held}");
    assert_eq!(
        held["why"]["guards"],
        serde_json::json!([{"guard": "budget", "level": "rack r1", "under": 1, "known": 10,
                            "allows": 1, "pass": false}]),
        "{held}"
    );
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["signals", "signals", "answer", "decision", "decision", "signals"]
    );
    let unknown = run(remedy().args(["explain", "n99"]).arg(&file));
    assert_eq!(unknown.code, 1);
    assert!(
        unknown
            .stderr
            .contains("n99: no signal or decision about it"),
        "{}",
        unknown.dump()
    );
}

/// Contract 11: the efficacy ledger on a history with known outcomes. Five
/// cordons for memory_failure (verify 10m): one fixed in 5 min, one only
/// after 20 min, one fixed in 3 min that came back a day later (a
/// recurrence) and then fixed in 4 min, one never fixed: 2 of 5 worked,
/// median time to healthy (3, 4, 5, 20 min) 4.5 min, one recurrence.
#[test]
fn report_gives_the_exact_efficacy_of_a_known_history() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("remedy.toml");
    fs::write(
        &config,
        format!(
            "rules = {:?}\n[guards]\nmax_unhealthy = \"none\"\n\
             [faults.memory_failure]\nactions = [\"cordon\"]\nverify = \"10m\"\non_resolve = [\"uncordon\"]\n",
            repo().join("rules").display().to_string()
        ),
    )
    .unwrap();
    let ue = |node: &str, minute: u32, resolved: bool| {
        format!(
            "{{\"node\":\"{node}\",\"kind\":\"hardware\",\"type\":\"memory.ecc.uncorrectable\",\"resolved\":{resolved},\
             \"ts\":\"2026-11-{:02}T{:02}:{:02}:00Z\",\"labels\":{{\"cluster\":\"c1\"}}}}\n",
            24 + minute / 1440,
            minute % 1440 / 60,
            minute % 60
        )
    };
    let mut events = vec![
        (0, ue("a", 0, false)),
        (5, ue("a", 5, true)),
        (0, ue("b", 0, false)),
        (20, ue("b", 20, true)),
        (0, ue("c", 0, false)),
        (3, ue("c", 3, true)),
        (1440, ue("c", 1440, false)),
        (1444, ue("c", 1444, true)),
        (0, ue("d", 0, false)),
    ];
    events.sort_by_key(|(m, _)| *m);
    let input: String = events.into_iter().map(|(_, l)| l).collect();
    let file = dir.path().join("history.jsonl");
    fs::write(&file, input).unwrap();
    let out = run(remedy()
        .args(["report", "--json", "--config"])
        .arg(&config)
        .arg(&file));
    assert_eq!(out.code, 0, "{}", out.dump());
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    let cordon = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["fault"] == "memory_failure" && r["action"] == "cordon")
        .unwrap_or_else(|| panic!("{rows}"));
    assert_eq!(cordon["runs"], 5, "{cordon}");
    assert_eq!(cordon["successes"], 2, "{cordon}");
    assert_eq!(cordon["success_rate"], 0.4, "{cordon}");
    assert_eq!(cordon["median_secs"], 270.0, "{cordon}");
    assert_eq!(cordon["recurrences"], 1, "{cordon}");
    let table = run(remedy()
        .args(["report", "--config"])
        .arg(&config)
        .arg(&file));
    assert_eq!(table.code, 0, "{}", table.dump());
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("memory_failure  cordon")
                && l.contains("40%")
                && l.contains("4m30s")),
        "{}",
        table.stdout
    );
}

/// Contract 11: `demote` in replay, with exact timestamps, and `efficacy()`
/// as a rule sees it. memory_failure: cordon, then reinstall after 1h
/// (verify 10m, demote below 20% after 3 runs). Three cordons at 00:00,
/// 00:01 and 00:02 never fix their node (judged failed at 00:10, 00:11 and
/// 00:12); a fourth at 00:11 is cordoned (one run judged), a fifth at
/// 00:20 is not: its cordon is `demoted` and it is reinstalled at once. A
/// probe rule reads `efficacy("memory_failure", "cordon")` at 00:30.
#[test]
fn a_rung_that_rarely_works_is_demoted_at_the_exact_moment_the_ledger_says_so() {
    let dir = TempDir::new().unwrap();
    let rules = dir.path().join("rules");
    fs::create_dir_all(&rules).unwrap();
    fs::copy(
        repo().join("rules/hardware/memory.rhai"),
        rules.join("memory.rhai"),
    )
    .unwrap();
    fs::write(
        rules.join("probe.rhai"),
        "const TYPES = [\"probe\"];\n\
         fn classify(s) {\n\
             let e = efficacy(\"memory_failure\", \"cordon\");\n\
             let r = efficacy(\"memory_failure\", \"reboot\");\n\
             #{ fault: \"probe\", severity: \"info\",\n\
                reason: `cordon ${e.runs} runs ${e.success_rate} median ${e.median_secs}; reboot ${r.runs} ${r.success_rate}` }\n\
         }\n",
    )
    .unwrap();
    let config = dir.path().join("remedy.toml");
    fs::write(
        &config,
        "[guards]\nmax_unhealthy = \"none\"\n\
         [faults.memory_failure]\nactions = [\"cordon\"]\nverify = \"10m\"\n\
         escalate = [{ after = \"1h\", actions = [\"reinstall\"] }]\n\
         demote = { below = 0.2, min_runs = 3 }\n\
         [faults.probe]\nactions = []\n",
    )
    .unwrap();
    let signal = |node: &str, ty: &str, min: u32, sec: u32| {
        format!(
            "{{\"node\":\"{node}\",\"kind\":\"hardware\",\"type\":\"{ty}\",\
             \"ts\":\"2026-11-24T00:{min:02}:{sec:02}Z\",\"labels\":{{\"cluster\":\"c1\"}}}}\n"
        )
    };
    let ue = |node: &str, min: u32| signal(node, "memory.ecc.uncorrectable", min, 0);
    let input = [
        ue("a", 0),
        ue("b", 1),
        ue("c", 2),
        ue("d", 11),
        ue("e", 20),
        signal("p", "probe", 30, 0),
    ]
    .concat();
    let file = dir.path().join("history.jsonl");
    fs::write(&file, input).unwrap();
    let out = run(remedy()
        .args(["replay", "--config"])
        .arg(&config)
        .arg(&file));
    assert_eq!(out.code, 0, "{}", out.dump());
    let decisions: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions_of = |node: &str| -> Vec<(String, String, String)> {
        decisions
            .iter()
            .filter(|d| d["node"] == node && d["event"] == "action")
            .map(|d| {
                (
                    d["ts"].as_str().unwrap().to_string(),
                    d["action"].as_str().unwrap().to_string(),
                    d["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let at = |m: u32| format!("2026-11-24T00:{m:02}:00Z");
    // d at 00:11: one run judged (a's; b's window ends at 00:11, it is not past).
    assert_eq!(
        actions_of("d").first(),
        Some(&(at(11), "cordon".into(), "dry_run".into())),
        "{}",
        out.stdout
    );
    assert_eq!(
        actions_of("e")[..2],
        [
            (at(20), "cordon".into(), "demoted".into()),
            (at(20), "reinstall".into(), "dry_run".into()),
        ],
        "{}",
        out.stdout
    );
    let demoted = decisions
        .iter()
        .find(|d| d["outcome"] == "demoted")
        .unwrap();
    assert_eq!(
        demoted["reason"],
        "cordon fixed memory_failure in 0 of 3 runs (0%), below 20% after at least 3 runs \
         (demote): skipped for escalate[0] (reinstall)",
        "{demoted}"
    );
    assert_eq!(demoted["why"]["rule"], "memory.rhai", "{demoted}");
    let reinstall = decisions
        .iter()
        .find(|d| d["node"] == "e" && d["action"] == "reinstall")
        .unwrap();
    assert_eq!(
        reinstall["why"]["rung"], "actions demoted, then escalate[0] after 1h",
        "{reinstall}"
    );
    // Nobody else was demoted: a, b, c and d were cordoned.
    for node in ["a", "b", "c", "d"] {
        assert_eq!(actions_of(node)[0].1, "cordon", "{node}: {}", out.stdout);
        assert_eq!(actions_of(node)[0].2, "dry_run", "{node}: {}", out.stdout);
    }
    // At 00:30 four cordons are judged (a, b, c; d's window ended at 00:21),
    // none worked; nothing was rebooted.
    let probe = decisions
        .iter()
        .find(|d| d["fault"] == "probe" && d["event"] == "fault_opened")
        .unwrap();
    assert_eq!(
        probe["reason"], "cordon 4 runs 0.0 median ; reboot 0 ",
        "{probe}"
    );
}
