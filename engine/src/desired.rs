//! Node final state (contract 10): `[[node_class]]` declares, per class of
//! nodes (a selector on node labels), the component versions they must run,
//! the readiness gates that must hold, and how fast a wave of upgrades may
//! go. This module holds the declarations, checked when the config loads,
//! and the bookkeeping of each class's rollout; the lifecycle
//! ([`crate::Engine`]) opens the faults and asks for the steps.
//!
//! A node drifts when a component reports a version other than the desired
//! one (`version_drift`); a continuous gate whose condition reports false
//! fails (`gate_failed`). A condition never reported, or not reported again
//! within the class's `stale_after`, is unknown: not true, so no upgrade or
//! repair counts as done, but it cordons nothing (a monitoring outage must
//! not cordon a fleet).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, TimeZone, Timelike};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

pub use crate::decision::StepKind;
use crate::fleet::NodeId;
use crate::time::{Duration, Timestamp};

/// The fault a drifted component opens.
pub const VERSION_DRIFT: &str = "version_drift";
/// The fault a failing continuous gate opens.
pub const GATE_FAILED: &str = "gate_failed";

/// `[[node_class]]` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeClassConfig {
    /// The class's name.
    #[serde(default)]
    pub name: String,
    /// Node labels a member has (all of them).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Component -> desired version.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// The action that converges one component (a job naming it and the
    /// version). Default `upgrade`.
    #[serde(default)]
    pub upgrade: Option<String>,
    /// Readiness gates.
    #[serde(default)]
    pub gates: Vec<GateConfig>,
    /// Pacing of the upgrade wave.
    #[serde(default)]
    pub rollout: RolloutConfig,
    /// A version or condition not reported again within this is unknown.
    /// Default 10m.
    #[serde(default)]
    pub stale_after: Option<Duration>,
}

/// One readiness gate as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The condition that must hold (a `condition` signal's label).
    #[serde(default)]
    pub condition: Option<String>,
    /// `continuous` (default): failing cordons the node until it holds
    /// again; `bootstrap`: only checked before a node counts as done.
    #[serde(default)]
    pub mode: GateMode,
}

/// When a gate is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    /// Always: the node is schedulable only while it holds.
    #[default]
    Continuous,
    /// Only before an upgrade or repair counts as done.
    Bootstrap,
}

/// `rollout = { ... }` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// Nodes of the class converging at once. Default 1.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// When new nodes may start. Default: any time.
    #[serde(default)]
    pub window: Option<WindowConfig>,
    /// A place freed by a node done waits this long before the next node
    /// takes it. Default 0s.
    #[serde(default)]
    pub pause_after: Option<Duration>,
    /// A failed step stops the wave (default true); false: the node stays
    /// as it is and the wave goes on.
    #[serde(default)]
    pub halt_on_failure: Option<bool>,
    /// A step not done this long after it was asked for halts the wave.
    /// Default 30m.
    #[serde(default)]
    pub deadline: Option<Duration>,
}

/// `window = { days = [...], hours = "09:00-17:00", tz = "Europe/Berlin" }`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// `mon` .. `sun`; default every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM-HH:MM`, local time; default the whole day.
    #[serde(default)]
    pub hours: Option<String>,
    /// IANA time zone; default UTC.
    #[serde(default)]
    pub tz: Option<String>,
}

/// A maintenance window, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    days: [bool; 7],
    from: u32,
    to: u32,
    tz: chrono_tz::Tz,
    text: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    fn parse(w: &WindowConfig) -> Result<Window, String> {
        let mut days = [w.days.is_empty(); 7];
        for d in &w.days {
            let i = DAYS
                .iter()
                .position(|x| x.eq_ignore_ascii_case(d))
                .ok_or_else(|| format!("window day {d:?} is not one of {}", DAYS.join(", ")))?;
            days[i] = true;
        }
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
        };
        let (from, to) = match &w.hours {
            None => (0, 24 * 60),
            Some(h) => {
                let parsed = h
                    .split_once('-')
                    .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)));
                match parsed {
                    Some((a, b)) if a != b => (a, b),
                    _ => return Err(format!("window hours {h:?} is not HH:MM-HH:MM")),
                }
            }
        };
        let tz: chrono_tz::Tz = match &w.tz {
            None => chrono_tz::UTC,
            Some(t) => t
                .parse()
                .map_err(|_| format!("window tz {t:?} is not an IANA time zone"))?,
        };
        let text = format!(
            "{} {} {}",
            if w.days.is_empty() {
                "daily".to_string()
            } else {
                w.days.join(",")
            },
            w.hours.as_deref().unwrap_or("00:00-24:00"),
            tz.name()
        );
        Ok(Window {
            days,
            from,
            to,
            tz,
            text,
        })
    }

    /// Whether new nodes may start at `at`.
    pub fn open_at(&self, at: Timestamp) -> bool {
        let Some(utc) = chrono::DateTime::from_timestamp_millis(at.0) else {
            return false;
        };
        let local = self.tz.from_utc_datetime(&utc.naive_utc());
        let day = local.weekday().num_days_from_monday() as usize;
        let minute = local.hour() * 60 + local.minute();
        if self.from < self.to {
            self.days[day] && minute >= self.from && minute < self.to
        } else {
            // Over midnight: the evening belongs to its day, the morning
            // to the day before.
            (self.days[day] && minute >= self.from)
                || (self.days[(day + 6) % 7] && minute < self.to)
        }
    }

    /// Hours a week it is open.
    pub fn hours_per_week(&self) -> f64 {
        let span = if self.from < self.to {
            self.to - self.from
        } else {
            24 * 60 - self.from + self.to
        };
        let days = self.days.iter().filter(|d| **d).count() as u32;
        f64::from(days * span) / 60.0
    }

    /// The first minute at or after `at` the window is open, within a week.
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        let step = 60_000;
        let start = Timestamp(at.0 - at.0.rem_euclid(step));
        (0..=7 * 24 * 60)
            .map(|i| Timestamp(start.0 + i * step))
            .find(|&t| t >= at && self.open_at(t))
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A readiness gate, checked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gate {
    /// The condition.
    pub condition: String,
    /// When it is checked.
    pub mode: GateMode,
}

/// Rollout pacing, with its defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollout {
    /// Nodes converging at once.
    pub concurrency: usize,
    /// When new nodes may start.
    pub window: Option<Window>,
    /// Wait after each node is done.
    pub pause_after: Duration,
    /// A failed step stops the wave.
    pub halt_on_failure: bool,
    /// How long a step may take.
    pub deadline: Duration,
}

/// One `[[node_class]]`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Class {
    /// Its name.
    pub name: String,
    /// Labels a member has.
    pub selector: Vec<(String, String)>,
    /// Component -> desired version, sorted.
    pub components: Vec<(String, String)>,
    /// The upgrade action.
    pub upgrade: String,
    /// Readiness gates.
    pub gates: Vec<Gate>,
    /// Pacing.
    pub rollout: Rollout,
    /// When reports go stale.
    pub stale_after: Duration,
}

impl Class {
    /// Whether a node with these labels is a member.
    pub fn selects<'a>(&self, mut label: impl FnMut(&str) -> Option<&'a str>) -> bool {
        self.selector
            .iter()
            .all(|(k, v)| label(k).is_some_and(|x| x == v))
    }

    /// What `observed` says of gate `condition` at `now`: `None` unknown.
    pub fn condition(
        &self,
        observed: Option<&Observed>,
        condition: &str,
        now: Timestamp,
    ) -> Option<bool> {
        let (holds, at) = observed?.conditions.get(condition)?;
        if now.0 - at.0 > self.stale_after.0 {
            return None;
        }
        *holds
    }

    /// Every gate's state at `now`.
    pub fn gates_at(
        &self,
        observed: Option<&Observed>,
        now: Timestamp,
    ) -> Vec<(&Gate, Option<bool>)> {
        self.gates
            .iter()
            .map(|g| (g, self.condition(observed, &g.condition, now)))
            .collect()
    }

    /// Whether every gate (continuous and bootstrap) holds at `now`.
    pub fn all_hold(&self, observed: Option<&Observed>, now: Timestamp) -> bool {
        self.gates
            .iter()
            .all(|g| self.condition(observed, &g.condition, now) == Some(true))
    }

    /// The continuous gates that report false at `now`.
    pub fn failing(&self, observed: Option<&Observed>, now: Timestamp) -> Vec<String> {
        self.gates
            .iter()
            .filter(|g| g.mode == GateMode::Continuous)
            .filter(|g| self.condition(observed, &g.condition, now) == Some(false))
            .map(|g| g.condition.clone())
            .collect()
    }

    /// Components whose reported version is not the desired one:
    /// (component, desired, observed). One never reported is not judged.
    pub fn drift(&self, observed: Option<&Observed>) -> Vec<(String, String, String)> {
        let Some(o) = observed else {
            return Vec::new();
        };
        self.components
            .iter()
            .filter_map(|(c, want)| {
                let (have, _) = o.components.get(c)?;
                (have != want).then(|| (c.clone(), want.clone(), have.clone()))
            })
            .collect()
    }
}

/// A problem of `[[node_class]]`, naming what to fix.
///
/// The error also gives the index of the first class with a problem (for
/// an overlap, the second of the two), for the config's line.
pub fn compile(configs: &[NodeClassConfig]) -> Result<Vec<Class>, (usize, Vec<String>)> {
    let mut problems = Vec::new();
    let mut first: Option<usize> = None;
    let mut classes = Vec::new();
    let mut names = BTreeSet::new();
    for (i, c) in configs.iter().enumerate() {
        let before = problems.len();
        let at = if c.name.is_empty() {
            format!("[[node_class]] #{}", i + 1)
        } else {
            format!("[[node_class]] {:?}", c.name)
        };
        if c.name.is_empty() {
            problems.push(format!("{at}: name is missing"));
        } else if !names.insert(c.name.clone()) {
            problems.push(format!("{at}: two classes have this name"));
        }
        let mut gates = Vec::new();
        let mut seen = BTreeSet::new();
        for (j, g) in c.gates.iter().enumerate() {
            match g.condition.as_deref().map(str::trim) {
                None | Some("") => problems.push(format!(
                    "{at}: gates[{j}] has no condition (gates = [{{ condition = \"KubeletOK\" }}])"
                )),
                Some(name) if !seen.insert(name.to_string()) => {
                    problems.push(format!("{at}: gate {name:?} is listed twice"));
                }
                Some(name) => gates.push(Gate {
                    condition: name.to_string(),
                    mode: g.mode,
                }),
            }
        }
        for (component, version) in &c.components {
            if version.trim().is_empty() {
                problems.push(format!("{at}: component {component:?} has no version"));
            }
        }
        if c.components.is_empty() && gates.is_empty() {
            problems.push(format!("{at}: declares neither components nor gates"));
        }
        let window = match c.rollout.window.as_ref().map(Window::parse) {
            Some(Err(e)) => {
                problems.push(format!("{at}: rollout {e}"));
                None
            }
            Some(Ok(w)) => Some(w),
            None => None,
        };
        let concurrency = c.rollout.concurrency.unwrap_or(1);
        if concurrency == 0 {
            problems.push(format!("{at}: rollout concurrency must be at least 1"));
        }
        let upgrade = c.upgrade.clone().unwrap_or_else(|| "upgrade".into());
        if upgrade.trim().is_empty() {
            problems.push(format!("{at}: upgrade names no action"));
        }
        classes.push(Class {
            name: c.name.clone(),
            selector: c.selector.clone().into_iter().collect(),
            components: c.components.clone().into_iter().collect(),
            upgrade,
            gates,
            rollout: Rollout {
                concurrency: concurrency.max(1),
                window,
                pause_after: c.rollout.pause_after.unwrap_or(Duration(0)),
                halt_on_failure: c.rollout.halt_on_failure.unwrap_or(true),
                deadline: c
                    .rollout
                    .deadline
                    .filter(|d| d.0 > 0)
                    .unwrap_or(Duration::from_secs(30 * 60)),
            },
            stale_after: c.stale_after.unwrap_or(Duration::from_secs(600)),
        });
        if problems.len() > before {
            first.get_or_insert(i);
        }
    }
    // A node must belong to one class: two selectors that agree on every
    // label they share select one node with the labels of both.
    for (i, a) in classes.iter().enumerate() {
        for (j, b) in classes.iter().enumerate().skip(i + 1) {
            let conflict = a
                .selector
                .iter()
                .any(|(k, v)| b.selector.iter().any(|(k2, v2)| k == k2 && v != v2));
            if !conflict {
                let both: BTreeMap<&str, &str> = a
                    .selector
                    .iter()
                    .chain(&b.selector)
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let labels: Vec<String> = both.iter().map(|(k, v)| format!("{k}={v}")).collect();
                first.get_or_insert(j);
                problems.push(format!(
                    "[[node_class]] {:?} and {:?} overlap: a node labelled {{{}}} matches both (make their selectors differ on a label)",
                    a.name,
                    b.name,
                    labels.join(", ")
                ));
            }
        }
    }
    match first {
        None => Ok(classes),
        Some(at) => Err((at, problems)),
    }
}

/// One node converging: what it was last asked for and since when.
#[derive(Clone, Debug, PartialEq)]
pub struct Active {
    /// When its `version_drift` opened.
    pub opened: Timestamp,
    /// Its steps: (action, params), in order.
    pub plan: Vec<(String, Vec<(String, String)>)>,
    /// The step asked for now (`plan.len()`: all done, waiting for the
    /// versions and gates).
    pub asked: usize,
    /// Its last step done, if any.
    pub step: Option<StepKind>,
    /// When the step now asked for was asked (its deadline counts from
    /// here); `None` after a restart until the clock is known.
    pub since: Option<Timestamp>,
    /// A step failed: nothing more happens to it until it converges.
    pub stuck: bool,
    /// Restored with a step not yet asked for: ask at the first tick.
    pub resume: bool,
}

/// One class's wave.
#[derive(Clone, Debug, Default)]
pub struct Wave {
    /// Drifted nodes not started yet, oldest drift first.
    pub waiting: BTreeSet<(Timestamp, NodeId)>,
    /// Nodes converging now.
    pub active: FxHashMap<NodeId, Active>,
    /// When each of the last nodes was done, while its place rests
    /// `pause_after` before the next node takes it.
    pub resting: std::collections::VecDeque<Timestamp>,
    /// Stopped: (when, node, why). Lifts once that node converges.
    pub halted: Option<(Timestamp, String, String)>,
    /// Nodes done since the service started.
    pub done: u64,
    /// Nodes whose step failed.
    pub failed: u64,
    /// Starts with nothing else in progress: each a new wave.
    pub waves: u64,
    /// Whether the window was open, as of which minute.
    pub window_open: Option<(i64, bool)>,
}

/// Each (node, fault)'s last step and when: what a restart reads back.
pub type Remembered = FxHashMap<(String, String), (StepKind, Timestamp)>;

/// Per class, its wave; per node, its class.
#[derive(Debug, Default)]
pub struct Rollouts {
    /// The classes.
    pub classes: Vec<Class>,
    /// Per class.
    pub waves: Vec<Wave>,
    /// Each classed node's class, by index.
    pub member: FxHashMap<NodeId, usize>,
    /// The last step of each (node name, fault).
    pub remembered: Remembered,
    /// The symbols of `version_drift` and `gate_failed`, once interned.
    pub syms: Option<(crate::fleet::Sym, crate::fleet::Sym)>,
}

impl Rollouts {
    /// For these classes.
    pub fn new(classes: Vec<Class>) -> Self {
        Rollouts {
            waves: vec![Wave::default(); classes.len()],
            classes,
            ..Rollouts::default()
        }
    }

    /// Whether any class is declared.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// The class of `node` for its labels (`label`), remembered.
    pub fn class_of<'a>(
        &mut self,
        node: NodeId,
        label: impl FnMut(&str) -> Option<&'a str> + Copy,
    ) -> Option<usize> {
        let found = self.classes.iter().position(|c| c.selects(label));
        match found {
            Some(i) => {
                self.member.insert(node, i);
            }
            None => {
                self.member.remove(&node);
            }
        }
        found
    }

    /// The class of `node` as last computed.
    pub fn member(&self, node: NodeId) -> Option<usize> {
        self.member.get(&node).copied()
    }

    /// Where `node` is in its class's wave: waiting, its active step, or
    /// neither.
    pub fn position(&self, node: NodeId) -> Option<(&Class, Option<&Active>, bool)> {
        let i = self.member(node)?;
        let wave = &self.waves[i];
        let waiting = wave.waiting.iter().any(|(_, n)| *n == node);
        Some((&self.classes[i], wave.active.get(&node), waiting))
    }
}

/// What one node last reported of its state (contract 10).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Observed {
    /// Component -> (version, when reported).
    pub components: std::collections::BTreeMap<String, (String, Timestamp)>,
    /// Condition -> (holds: true, false, or unknown; when reported).
    pub conditions: std::collections::BTreeMap<String, (Option<bool>, Timestamp)>,
}

impl Observed {
    pub(crate) fn note(&mut self, report: &crate::signal::Report<'_>, at: Timestamp) {
        match *report {
            crate::signal::Report::Version { component, version } => {
                self.components
                    .insert(component.to_string(), (version.to_string(), at));
            }
            crate::signal::Report::Condition { condition, holds } => {
                self.conditions.insert(condition.to_string(), (holds, at));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, selector: &[(&str, &str)]) -> NodeClassConfig {
        NodeClassConfig {
            name: name.into(),
            selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            components: [("kubelet".to_string(), "1.31.2".to_string())].into(),
            ..NodeClassConfig::default()
        }
    }

    #[test]
    fn overlapping_selectors_and_gates_without_a_condition_are_named() {
        let mut gpu = class("gpu", &[("role", "worker"), ("pool", "gpu")]);
        gpu.gates.push(GateConfig {
            condition: None,
            mode: GateMode::Continuous,
        });
        let problems = compile(&[
            class("worker", &[("role", "worker")]),
            gpu,
            class("infra", &[("role", "infra")]),
        ])
        .unwrap_err();
        assert_eq!(problems.0, 1, "the first class with a problem: gpu");
        let problems = problems.1;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("\"gpu\": gates[0] has no condition"));
        assert!(
            problems[1].contains("\"worker\" and \"gpu\" overlap")
                && problems[1].contains("pool=gpu, role=worker"),
            "{problems:?}"
        );
        // Disjoint on a shared label: no problem.
        assert!(compile(&[
            class("a", &[("role", "worker")]),
            class("b", &[("role", "infra")])
        ])
        .is_ok());
    }

    #[test]
    fn a_window_is_open_on_its_days_and_hours_in_its_time_zone() {
        let w = Window::parse(&WindowConfig {
            days: vec!["mon".into(), "tue".into()],
            hours: Some("09:00-17:00".into()),
            tz: Some("Europe/Berlin".into()),
        })
        .unwrap();
        let t = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        // 2026-11-30 is a Monday; Berlin is UTC+1 in winter.
        assert!(!w.open_at(t("2026-11-30T07:59:00Z")));
        assert!(w.open_at(t("2026-11-30T08:00:00Z")));
        assert!(w.open_at(t("2026-11-30T15:59:00Z")));
        assert!(!w.open_at(t("2026-11-30T16:00:00Z")));
        assert!(!w.open_at(t("2026-12-02T10:00:00Z")), "Wednesday");
        assert_eq!(
            w.next_open(t("2026-11-30T17:30:00Z")),
            Some(t("2026-12-01T08:00:00Z"))
        );
        assert_eq!(
            w.next_open(t("2026-12-01T17:30:00Z")),
            Some(t("2026-12-07T08:00:00Z"))
        );
        let bad = Window::parse(&WindowConfig {
            days: vec!["monday".into()],
            hours: Some("9-17".into()),
            tz: Some("Mars/Olympus".into()),
        });
        assert!(bad.unwrap_err().contains("\"monday\""));
        let night = Window::parse(&WindowConfig {
            days: vec!["sat".into()],
            hours: Some("22:00-04:00".into()),
            tz: None,
        })
        .unwrap();
        assert!(night.open_at(t("2026-12-05T23:00:00Z")), "Saturday night");
        assert!(
            night.open_at(t("2026-12-06T03:00:00Z")),
            "early Sunday belongs to Saturday"
        );
        assert!(!night.open_at(t("2026-12-06T23:00:00Z")));
    }
}
