//! `remedy diff`: the same recorded signals through two rule sets (or two
//! configs), side by side in event time, and what would have been decided
//! differently: faults opened on one side only, different severities, and
//! actions that pass on one side and are held back or absent on the other.

use std::collections::BTreeMap;
use std::io::{self, BufRead};

use remedy_collectors::JsonLines;
use remedy_engine::{Decision, Event, Outcome, Severity, Step, Timestamp};
use serde::Serialize;

use crate::pipeline::Pipeline;

/// What one side decided about one fault on one node (its first open).
#[derive(Clone, Debug, PartialEq)]
struct Opened {
    at: Timestamp,
    severity: Option<Severity>,
}

/// What became of one action of one fault on one node, over the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Fate {
    /// First time it passed (executed or dry-run), and how.
    passed: Option<(Timestamp, Outcome)>,
    /// The last refusal, if it never passed.
    held: Option<Outcome>,
}

impl Fate {
    fn describe(fate: Option<&Fate>) -> String {
        match fate {
            None => "absent".to_string(),
            Some(Fate {
                passed: Some((_, o)),
                ..
            }) => o.as_str().to_string(),
            Some(Fate {
                held: Some(o),
                passed: None,
            }) => format!("held: {}", o.as_str()),
            Some(_) => "absent".to_string(),
        }
    }

    /// What counts as different: passing (and how), held back, or absent;
    /// two refusals for different reasons are the same here.
    fn category(fate: Option<&Fate>) -> Option<Option<Outcome>> {
        match fate {
            Some(Fate {
                passed: Some((_, o)),
                ..
            }) => Some(Some(*o)),
            Some(Fate { held: Some(_), .. }) => Some(None),
            _ => None,
        }
    }
}

/// One side's record of the run.
#[derive(Debug, Default)]
struct Record {
    opened: BTreeMap<(String, String), Opened>,
    actions: BTreeMap<(String, String, String), Fate>,
}

impl Record {
    fn note(&mut self, d: &Decision) {
        match d.event {
            Event::FaultOpened => {
                self.opened
                    .entry((d.node.clone(), d.fault.clone()))
                    .or_insert(Opened {
                        at: d.ts,
                        severity: d.severity,
                    });
            }
            Event::FaultResolved | Event::FaultStale | Event::FaultUnverified | Event::Step => {}
            Event::Action => {
                let (Some(action), Some(outcome)) = (&d.action, d.outcome) else {
                    return;
                };
                let fate = self
                    .actions
                    .entry((d.node.clone(), d.fault.clone(), action.clone()))
                    .or_default();
                if matches!(outcome, Outcome::Executed | Outcome::DryRun) {
                    fate.passed.get_or_insert((d.ts, outcome));
                } else if fate.passed.is_none() {
                    fate.held = Some(outcome);
                }
            }
        }
    }
}

/// One difference between the two sides.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Difference {
    /// `opened_only_in_old`, `opened_only_in_new`, `severity`, or `action`.
    pub kind: &'static str,
    /// The node.
    pub node: String,
    /// The fault class.
    pub fault: String,
    /// The action, for `action` differences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The node's failure domain (value of the domain label), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// What the old side did.
    pub old: String,
    /// What the new side did.
    pub new: String,
}

/// A `[[node_class]]` whose desired versions the new side changes (or
/// adds): which nodes would converge, and how many waves that takes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preview {
    /// The class.
    pub class: String,
    /// Its desired versions on the new side.
    pub desired: BTreeMap<String, String>,
    /// On the old side (`None`: the class is new).
    pub was: Option<BTreeMap<String, String>>,
    /// Nodes it selects (that reported a version or condition).
    pub nodes: usize,
    /// The nodes whose reported versions differ from the new ones.
    pub converge: Vec<String>,
    /// Nodes converging at once: the class's concurrency, or less where a
    /// budget allows fewer.
    pub per_wave: usize,
    /// What sets `per_wave`.
    pub limited_by: String,
    /// Waves of `per_wave` nodes.
    pub waves: usize,
    /// The maintenance window, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Hours a week the window is open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_hours_per_week: Option<f64>,
}

impl Preview {
    /// One paragraph.
    pub fn render(&self) -> String {
        let versions = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let was = self
            .was
            .as_ref()
            .map_or("new class".to_string(), |w| format!("was {}", versions(w)));
        let mut text = format!(
            "node_class {}: {} ({was})\n  {} of {} nodes would converge",
            self.class,
            versions(&self.desired),
            self.converge.len(),
            self.nodes
        );
        if !self.converge.is_empty() {
            let shown: Vec<&str> = self.converge.iter().take(5).map(String::as_str).collect();
            let more = self.converge.len().saturating_sub(shown.len());
            text.push_str(&format!(": {}", shown.join(", ")));
            if more > 0 {
                text.push_str(&format!(" and {more} more"));
            }
            text.push_str(&format!(
                "\n  {} waves of {} ({})",
                self.waves, self.per_wave, self.limited_by
            ));
        }
        if let (Some(w), Some(h)) = (&self.window, self.window_hours_per_week) {
            text.push_str(&format!(", starting only within {w} ({h} hours a week)"));
        }
        text.push('\n');
        text
    }
}

/// The outcome of a diff.
#[derive(Debug, Default)]
pub struct Report {
    /// Valid signals compared.
    pub signals: u64,
    /// Lines that were not valid signals (reported on stderr, skipped on both sides).
    pub rejected: u64,
    /// Every difference, sorted by node, fault and action.
    pub differences: Vec<Difference>,
    /// Classes whose desired state changes: what their rollout would do.
    pub previews: Vec<Preview>,
}

impl Report {
    /// Differences counted by fault class and by failure domain.
    pub fn counts(&self) -> (BTreeMap<&str, usize>, BTreeMap<&str, usize>) {
        let (mut by_fault, mut by_domain) = (BTreeMap::new(), BTreeMap::new());
        for d in &self.differences {
            *by_fault.entry(d.fault.as_str()).or_default() += 1;
            *by_domain
                .entry(d.domain.as_deref().unwrap_or("(no domain label)"))
                .or_default() += 1;
        }
        (by_fault, by_domain)
    }

    /// The human table and summary.
    pub fn render(&self, domain_label: &str) -> String {
        let mut out = String::new();
        if self.differences.is_empty() {
            out.push_str(&format!(
                "no differences over {} signals ({} rejected lines skipped)\n",
                self.signals, self.rejected
            ));
            for p in &self.previews {
                out.push('\n');
                out.push_str(&p.render());
            }
            return out;
        }
        let header = ["KIND", "NODE", "FAULT", "ACTION", "OLD", "NEW"];
        let rows: Vec<[String; 6]> = self
            .differences
            .iter()
            .map(|d| {
                [
                    d.kind.to_string(),
                    d.node.clone(),
                    d.fault.clone(),
                    d.action.clone().unwrap_or_else(|| "-".into()),
                    d.old.clone(),
                    d.new.clone(),
                ]
            })
            .collect();
        let mut width = header.map(str::len);
        for r in &rows {
            for (w, cell) in width.iter_mut().zip(r) {
                *w = (*w).max(cell.len());
            }
        }
        let mut line = |cells: [&str; 6]| {
            let mut l = String::new();
            for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
                if i == 5 {
                    l.push_str(cell);
                } else {
                    l.push_str(&format!("{cell:w$}  "));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(header);
        for r in &rows {
            line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]].map(|s| s.as_str()));
        }
        let (by_fault, by_domain) = self.counts();
        let list = |m: &BTreeMap<&str, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "\n{} differences over {} signals\n  by fault: {}\n  by {domain_label}: {}\n",
            self.differences.len(),
            self.signals,
            list(&by_fault),
            list(&by_domain)
        ));
        for p in &self.previews {
            out.push('\n');
            out.push_str(&p.render());
        }
        out
    }
}

/// Replays `input` through both pipelines (each signal decoded once) and
/// compares what they decided. Bad lines are reported to `diag` and skipped.
pub fn diff<R: BufRead>(
    old: &mut Pipeline,
    new: &mut Pipeline,
    input: R,
    source: &str,
    domain_label: &str,
    diag: &mut dyn io::Write,
) -> io::Result<Report> {
    let mut report = Report::default();
    let (mut old_rec, mut new_rec) = (Record::default(), Record::default());
    let (mut step, mut out) = (Step::default(), Vec::new());
    let mut clock = Timestamp::default();
    for line in JsonLines::new(input) {
        let line = line?;
        let signal = match line.signal {
            Ok(s) => s,
            Err(reason) => {
                report.rejected += 1;
                writeln!(diag, "{source}:{}: rejected: {reason}", line.number)?;
                continue;
            }
        };
        report.signals += 1;
        if let Some(ts) = signal.ts {
            clock = ts;
        }
        for (pipeline, record, signal) in [
            (&mut *old, &mut old_rec, signal.clone()),
            (&mut *new, &mut new_rec, signal),
        ] {
            out.clear();
            pipeline.on_signal(signal, clock, &mut step, &mut out);
            for d in &out {
                record.note(d);
            }
        }
    }
    let domain = |node: &str| -> Option<String> {
        new.engine
            .with_fleet(|f| f.label_value(node, domain_label))
            .or_else(|| old.engine.with_fleet(|f| f.label_value(node, domain_label)))
    };
    let mut differences = Vec::new();
    let mut push =
        |kind, node: &str, fault: &str, action: Option<&str>, old: String, new: String| {
            differences.push(Difference {
                kind,
                node: node.to_string(),
                fault: fault.to_string(),
                action: action.map(str::to_string),
                domain: domain(node),
                old,
                new,
            });
        };
    let severity = |o: &Opened| {
        format!(
            "opened {} at {}",
            o.severity.map_or("?", Severity::as_str),
            o.at
        )
    };
    for ((node, fault), o) in &old_rec.opened {
        match new_rec.opened.get(&(node.clone(), fault.clone())) {
            None => push(
                "opened_only_in_old",
                node,
                fault,
                None,
                severity(o),
                "not opened".into(),
            ),
            Some(n) if n.severity != o.severity => {
                push("severity", node, fault, None, severity(o), severity(n))
            }
            Some(_) => {}
        }
    }
    for ((node, fault), n) in &new_rec.opened {
        if !old_rec.opened.contains_key(&(node.clone(), fault.clone())) {
            push(
                "opened_only_in_new",
                node,
                fault,
                None,
                "not opened".into(),
                severity(n),
            );
        }
    }
    let mut keys: Vec<&(String, String, String)> = old_rec.actions.keys().collect();
    keys.extend(
        new_rec
            .actions
            .keys()
            .filter(|k| !old_rec.actions.contains_key(*k)),
    );
    for key in keys {
        let (o, n) = (old_rec.actions.get(key), new_rec.actions.get(key));
        if Fate::category(o) != Fate::category(n) {
            let (node, fault, action) = key;
            push(
                "action",
                node,
                fault,
                Some(action),
                Fate::describe(o),
                Fate::describe(n),
            );
        }
    }
    differences.sort();
    report.differences = differences;
    report.previews = previews(old, new);
    Ok(report)
}

/// For each class whose desired versions differ between the sides: the
/// nodes the new side would converge (from what they reported), and how
/// many waves its concurrency and the budgets of their domains allow.
fn previews(old: &Pipeline, new: &Pipeline) -> Vec<Preview> {
    let before: BTreeMap<&str, BTreeMap<String, String>> = old
        .engine
        .rollouts()
        .classes
        .iter()
        .map(|c| (c.name.as_str(), c.components.iter().cloned().collect()))
        .collect();
    let mut previews = Vec::new();
    for (ci, c) in new.engine.rollouts().classes.iter().enumerate() {
        let desired: BTreeMap<String, String> = c.components.iter().cloned().collect();
        let was = before.get(c.name.as_str()).cloned();
        if was.as_ref() == Some(&desired) {
            continue;
        }
        let (nodes, converge) = new.engine.drifted(ci);
        let mut per_wave = c.rollout.concurrency;
        let mut limited_by = format!("concurrency {}", c.rollout.concurrency);
        for node in &converge {
            let labels = new
                .engine
                .with_fleet(|f| f.labels_named(node))
                .unwrap_or_default();
            for b in crate::explain::budgets(new, &labels) {
                if let Some(allows) = b.allows.filter(|a| *a < per_wave) {
                    per_wave = allows.max(1);
                    limited_by = format!(
                        "the budget of {} {}: {} of {} known nodes{}",
                        b.level,
                        b.value,
                        allows,
                        b.known,
                        b.max_unhealthy
                            .map(|m| format!(", max_unhealthy {m}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        previews.push(Preview {
            class: c.name.clone(),
            desired,
            was,
            nodes,
            waves: converge.len().div_ceil(per_wave.max(1)),
            converge,
            per_wave,
            limited_by,
            window: c.rollout.window.as_ref().map(ToString::to_string),
            window_hours_per_week: c.rollout.window.as_ref().map(|w| w.hours_per_week()),
        });
    }
    previews
}
