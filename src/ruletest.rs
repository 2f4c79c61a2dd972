//! `remedy test`: runs the rule test cases (contract 3.1).
//!
//! Beside `X.rhai` lives an optional `X.test.yaml`, a list of cases. Each case
//! starts from an empty fleet, feeds its signals in order through the whole
//! rule set of the directory (so rules that build on each other's faults, like
//! the rack rule, are tested as they run), and compares *this* rule's answer to
//! the last signal with `expect`.
//!
//! Case format details:
//! - a signal line may carry `repeat: N` and `every: 60s` to expand into N
//!   signals `every` apart (default every: 1s), starting at its `ts`;
//! - a signal without `ts` takes the previous signal's time plus one second
//!   (the first one: 2026-01-01T00:00:00Z);
//! - `expect: null` means "not this rule's"; a map compares the keys present:
//!   `fault`, `severity` and `actions` exactly, `reason` as a substring.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use remedy_engine::{
    Classification, Duration, Engine, LoadError, Options, Policies, Signal, Sources, Timestamp,
};
use serde::Deserialize;
use serde_json::Value;

/// Where a case's clock starts when its first signal has no `ts`.
pub const TEST_EPOCH: &str = "2026-01-01T00:00:00Z";

/// One case of a `.test.yaml` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    signals: Vec<Value>,
    expect: Value,
}

/// What a case expects of the rule's answer to its last signal.
#[derive(Debug, Default, PartialEq)]
struct Expect {
    fault: Option<String>,
    severity: Option<String>,
    reason: Option<String>,
    actions: Option<Vec<String>>,
}

impl Expect {
    fn parse(value: &Value) -> Result<Option<Expect>, String> {
        let map = match value {
            Value::Null => return Ok(None),
            Value::Object(map) => map,
            other => return Err(format!("`expect` must be null or a map, got {other}")),
        };
        let mut expect = Expect::default();
        for (key, v) in map {
            let text = || {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("`expect.{key}` must be a string"))
            };
            match key.as_str() {
                "fault" => expect.fault = Some(text()?),
                "severity" => expect.severity = Some(text()?),
                "reason" => expect.reason = Some(text()?),
                "actions" => {
                    let list = serde_json::from_value::<Vec<String>>(v.clone()).map_err(|_| {
                        "`expect.actions` must be a list of action names".to_string()
                    })?;
                    expect.actions = Some(list);
                }
                other => {
                    return Err(format!(
                        "unknown key `expect.{other}` (expected fault, severity, reason, actions)"
                    ))
                }
            }
        }
        Ok(Some(expect))
    }

    fn matches(&self, actual: &Classification) -> bool {
        self.fault.as_ref().is_none_or(|f| *f == actual.fault)
            && self
                .severity
                .as_ref()
                .is_none_or(|s| s == actual.severity.as_str())
            && self
                .reason
                .as_ref()
                .is_none_or(|r| actual.reason.as_deref().unwrap_or("").contains(r.as_str()))
            && self
                .actions
                .as_ref()
                .is_none_or(|a| Some(a) == actual.actions.as_ref())
    }
}

fn render_answer(answer: Option<&Classification>) -> String {
    let Some(c) = answer else {
        return "null".to_string();
    };
    let mut out = serde_json::json!({"fault": c.fault, "severity": c.severity.as_str()});
    if let Some(r) = &c.reason {
        out["reason"] = r.clone().into();
    }
    if let Some(a) = &c.actions {
        out["actions"] = a.clone().into();
    }
    out.to_string()
}

/// Totals of a run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed (a test file that cannot be read counts as one).
    pub failed: usize,
}

/// Expands one YAML signal line into signals with their event times.
fn expand(raw: &Value, clock: &mut Timestamp, index: usize) -> Result<Vec<Signal>, String> {
    let where_ = |msg: String| format!("signal {}: {msg}", index + 1);
    let mut object = match raw {
        Value::Object(map) => map.clone(),
        _ => return Err(where_("must be a map".into())),
    };
    let repeat = match object.remove("repeat") {
        None => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| where_("`repeat` must be a whole number from 1 to 100000".into()))?,
    };
    let every = match object.remove("every") {
        None => Duration::from_secs(1),
        Some(v) => v
            .as_str()
            .ok_or_else(|| where_("`every` must be a duration such as 60s".into()))?
            .parse::<Duration>()
            .map_err(|e| where_(e.to_string()))?,
    };
    // A signal without `node` is a domain signal (a cluster-wide alert), as
    // the Alertmanager intake makes one.
    let domain = !object.contains_key("node");
    if domain {
        object.insert("node".into(), Value::String("domain".into()));
    }
    let mut signal =
        Signal::from_value(Value::Object(object)).map_err(|e| where_(e.to_string()))?;
    if domain {
        signal.node.clear();
    }
    let start = signal
        .ts
        .unwrap_or_else(|| clock.add(Duration::from_secs(1)));
    let mut out = Vec::with_capacity(repeat as usize);
    for i in 0..repeat as i64 {
        let mut s = signal.clone();
        let at = start.add(Duration(every.0 * i));
        s.ts = Some(at);
        *clock = at;
        out.push(s);
    }
    Ok(out)
}

/// Runs one case; `Err` is the failure text.
fn run_case(sources: &Sources, rule: &str, case: &Case) -> Result<(), String> {
    let options = Options::default();
    let world = Engine::world(&options);
    let set = sources
        .compile(&options.sandbox, world)
        .map_err(|e| e.to_string())?;
    let mut engine = Engine::with_rules(set, Policies::default(), &options);
    let target = engine
        .rules()
        .index_of(rule)
        .ok_or_else(|| format!("no rule {rule} in {}", sources.dir.display()))?;
    let expect = Expect::parse(&case.expect)?;
    let mut clock = Timestamp::parse_rfc3339(TEST_EPOCH)
        .expect("valid epoch")
        .sub(Duration::from_secs(1));
    let mut errors = Vec::new();
    let mut last = None;
    if case.signals.is_empty() {
        return Err("the case has no signals".into());
    }
    for (i, raw) in case.signals.iter().enumerate() {
        for signal in expand(raw, &mut clock, i)? {
            let step = engine.on_signal(signal, clock);
            errors.extend(step.errors.into_iter().filter(|e| e.rule == rule));
            last = Some(
                step.answers
                    .into_iter()
                    .find(|(index, _)| *index == target)
                    .map(|(_, c)| c),
            );
        }
    }
    let actual = last.flatten();
    let ok = match (&expect, &actual) {
        (None, None) => true,
        (Some(e), Some(a)) => e.matches(a),
        _ => false,
    };
    if ok && errors.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    let _ = writeln!(text, "  expected: {}", render_expect(&case.expect));
    let _ = write!(text, "  actual:   {}", render_answer(actual.as_ref()));
    for e in errors {
        let _ = write!(text, "\n  error:    {e}");
    }
    Err(text)
}

fn render_expect(expect: &Value) -> String {
    expect.to_string()
}

/// Finds every `*.test.yaml` under `dir`, sorted.
fn test_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".test.yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The rule a test file belongs to: `a/b.test.yaml` -> `a/b.rhai`, relative to `dir`.
fn rule_name(dir: &Path, test: &Path) -> String {
    let rel = test.strip_prefix(dir).unwrap_or(test);
    let rel = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    format!("{}.rhai", rel.trim_end_matches(".test.yaml"))
}

/// Runs every test file under `dir`, writing a line per file, each failure
/// with its case name, expected and actual, and the closing totals line.
/// Notes (rules without tests) go to `notes`.
pub fn run(
    dir: &Path,
    out: &mut dyn std::io::Write,
    notes: &mut dyn std::io::Write,
) -> Result<Totals, LoadError> {
    let sources = Sources::read(dir)?;
    // Compile once up front so a broken rule is reported as such, not as every case failing.
    let options = Options::default();
    sources.compile(&options.sandbox, Engine::world(&options))?;
    let files = test_files(dir).map_err(|source| LoadError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut totals = Totals::default();
    let mut tested = Vec::new();
    for file in &files {
        let rule = rule_name(dir, file);
        tested.push(rule.clone());
        let cases = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                serde_yaml_ng::from_str::<Vec<Case>>(&text).map_err(|e| yaml_error(&e))
            });
        let cases = match cases {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(out, "FAIL {}: {e}", file.display());
                totals.failed += 1;
                continue;
            }
        };
        let (mut passed, mut failed) = (0, 0);
        let mut report = String::new();
        for case in &cases {
            match run_case(&sources, &rule, case) {
                Ok(()) => passed += 1,
                Err(why) => {
                    failed += 1;
                    let _ = writeln!(report, "FAIL {rule}: {}\n{why}", case.name);
                }
            }
        }
        let status = if failed == 0 { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "{status} {rule} ({passed} passed, {failed} failed)");
        let _ = write!(out, "{report}");
        totals.passed += passed;
        totals.failed += failed;
    }
    for (name, _, _) in &sources.files {
        if !tested.contains(name) {
            let _ = writeln!(
                notes,
                "note: {name} has no tests ({})",
                name.replace(".rhai", ".test.yaml")
            );
        }
    }
    let _ = writeln!(out, "{} passed, {} failed", totals.passed, totals.failed);
    Ok(totals)
}

/// A YAML error as `line:col: message`.
fn yaml_error(e: &serde_yaml_ng::Error) -> String {
    match e.location() {
        Some(l) => format!("{}:{}: {e}", l.line(), l.column()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_and_every_expand_from_ts_and_missing_ts_follows_the_clock() {
        let mut clock = Timestamp::parse_rfc3339(TEST_EPOCH).unwrap();
        let raw = serde_json::json!({"node": "n1", "kind": "hardware", "type": "x", "repeat": 3, "every": "60s"});
        let signals = expand(&raw, &mut clock, 0).unwrap();
        let times: Vec<String> = signals.iter().map(|s| s.ts.unwrap().to_string()).collect();
        assert_eq!(
            times,
            [
                "2026-01-01T00:00:01Z",
                "2026-01-01T00:01:01Z",
                "2026-01-01T00:02:01Z"
            ]
        );
        let raw = serde_json::json!({"node": "n1", "kind": "hardware", "type": "x", "ts": "2026-02-01T00:00:00Z"});
        assert_eq!(
            expand(&raw, &mut clock, 1).unwrap()[0]
                .ts
                .unwrap()
                .to_string(),
            "2026-02-01T00:00:00Z"
        );
        let bad = serde_json::json!({"node": "n1", "type": "x"});
        assert_eq!(
            expand(&bad, &mut clock, 2).unwrap_err(),
            "signal 3: missing required field \"kind\""
        );
        let bad = serde_json::json!({"node": "n1", "kind": "hardware", "type": "x", "repeat": 0});
        assert!(expand(&bad, &mut clock, 0)
            .unwrap_err()
            .contains("`repeat`"));
    }

    #[test]
    fn expectations_compare_present_keys_and_reason_as_substring() {
        let e = Expect::parse(&serde_json::json!({"fault": "f", "reason": "rack r1"}))
            .unwrap()
            .unwrap();
        let mut c = Classification {
            fault: "f".into(),
            severity: remedy_engine::Severity::Critical,
            reason: Some("3 nodes of rack r1".into()),
            actions: None,
        };
        assert!(e.matches(&c));
        c.reason = Some("rack r2".into());
        assert!(!e.matches(&c));
        assert!(Expect::parse(&serde_json::json!({"faul": "f"}))
            .unwrap_err()
            .contains("expect.faul"));
        assert_eq!(Expect::parse(&Value::Null).unwrap(), None);
    }

    #[test]
    fn test_files_map_to_their_rule_names() {
        let dir = Path::new("rules");
        assert_eq!(
            rule_name(dir, Path::new("rules/hardware/memory.test.yaml")),
            "hardware/memory.rhai"
        );
    }
}
