//! The efficacy ledger (contract 11): per (fault class, action), how often a
//! repair worked. A run is an action done (executed, or dry_run in replay)
//! while its fault was open; it succeeded when the fault resolved within
//! the policy's `verify` window after it (24 h when the policy sets none)
//! and did not open again on that node within 7 days of resolving. Built
//! from decisions alone, so the journal of a running service and a replay
//! give the same ledger for the same decisions.

use std::collections::{BTreeMap, HashMap};

use remedy_engine::{Decision, Duration, Event, Outcome, Policies, Timestamp};
use serde::Serialize;

/// A fault that opens again this soon after resolving was not repaired.
pub const REOPEN_WINDOW: Duration = Duration(7 * 24 * 3_600_000);

/// How long after the action a fault may take to resolve when its policy
/// has no `verify`.
pub const DEFAULT_WINDOW: Duration = Duration(24 * 3_600_000);

/// One action done for one occurrence of a fault.
#[derive(Debug, Clone)]
struct Run {
    fault: String,
    action: String,
    acted: Timestamp,
    resolved: Option<Timestamp>,
    reopened: bool,
}

/// One row of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The fault class.
    pub fault: String,
    /// The action.
    pub action: String,
    /// Times it was done while its fault was open.
    pub runs: usize,
    /// Runs after which the fault resolved in time and stayed resolved.
    pub successes: usize,
    /// `successes / runs`.
    pub success_rate: f64,
    /// Median time from the action to the fault resolving, of runs whose
    /// fault resolved (seconds).
    pub median_secs: Option<f64>,
    /// Runs whose fault opened again within 7 days of resolving.
    pub recurrences: usize,
}

/// Builds the ledger from decisions in order.
#[derive(Debug, Default)]
pub struct Ledger {
    runs: Vec<Run>,
    /// (node, fault) -> the runs of its open occurrence.
    open: HashMap<(String, String), Vec<usize>>,
    /// (node, fault) -> when it last resolved, and that occurrence's runs.
    closed: HashMap<(String, String), (Timestamp, Vec<usize>)>,
}

impl Ledger {
    /// The ledger of every decision a journal holds, in order.
    pub fn of_journal(
        journal: &dyn crate::service::journal::Journal,
    ) -> Result<Ledger, crate::service::journal::JournalError> {
        let mut ledger = Ledger::default();
        let mut since = 0;
        loop {
            let page = journal.decisions(since, 10_000)?;
            let Some(last) = page.last() else {
                return Ok(ledger);
            };
            since = last.seq;
            for j in &page {
                ledger.observe(&j.decision);
            }
        }
    }

    /// Takes one decision into account.
    pub fn observe(&mut self, d: &Decision) {
        let key = (d.node.clone(), d.fault.clone());
        match d.event {
            Event::FaultOpened => {
                if let Some((resolved, runs)) = self.closed.remove(&key) {
                    if d.ts.0 - resolved.0 <= REOPEN_WINDOW.0 {
                        for i in runs {
                            self.runs[i].reopened = true;
                        }
                    }
                }
                self.open.insert(key, Vec::new());
            }
            Event::FaultResolved => {
                if let Some(runs) = self.open.remove(&key) {
                    for &i in &runs {
                        self.runs[i].resolved = Some(d.ts);
                    }
                    self.closed.insert(key, (d.ts, runs));
                }
            }
            Event::Action => {
                let (Some(action), Some(Outcome::Executed | Outcome::DryRun)) =
                    (&d.action, d.outcome)
                else {
                    return;
                };
                if let Some(runs) = self.open.get_mut(&key) {
                    runs.push(self.runs.len());
                    self.runs.push(Run {
                        fault: d.fault.clone(),
                        action: action.clone(),
                        acted: d.ts,
                        resolved: None,
                        reopened: false,
                    });
                }
            }
            Event::FaultStale | Event::FaultUnverified => {}
        }
    }

    /// The ledger, per (fault, action), with each fault's success window
    /// from `policies`.
    pub fn rows(&self, policies: &Policies) -> Vec<Row> {
        let mut by: BTreeMap<(&str, &str), Vec<&Run>> = BTreeMap::new();
        for r in &self.runs {
            by.entry((r.fault.as_str(), r.action.as_str()))
                .or_default()
                .push(r);
        }
        by.into_iter()
            .map(|((fault, action), runs)| {
                let window = policies.get(fault).verify.unwrap_or(DEFAULT_WINDOW);
                let successes = runs
                    .iter()
                    .filter(|r| {
                        !r.reopened && r.resolved.is_some_and(|t| t.0 - r.acted.0 <= window.0)
                    })
                    .count();
                let mut healthy: Vec<i64> = runs
                    .iter()
                    .filter_map(|r| r.resolved.map(|t| t.0 - r.acted.0))
                    .collect();
                healthy.sort_unstable();
                let median_secs = (!healthy.is_empty()).then(|| {
                    let mid = healthy.len() / 2;
                    let ms = if healthy.len() % 2 == 0 {
                        (healthy[mid - 1] + healthy[mid]) as f64 / 2.0
                    } else {
                        healthy[mid] as f64
                    };
                    ms / 1000.0
                });
                Row {
                    fault: fault.to_string(),
                    action: action.to_string(),
                    runs: runs.len(),
                    successes,
                    success_rate: successes as f64 / runs.len() as f64,
                    median_secs,
                    recurrences: runs.iter().filter(|r| r.reopened).count(),
                }
            })
            .collect()
    }
}

/// The ledger as a table.
pub fn render(rows: &[Row]) -> String {
    let fw = rows.iter().map(|r| r.fault.len()).max().unwrap_or(5).max(5);
    let aw = rows
        .iter()
        .map(|r| r.action.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:fw$}  {:aw$}  {:>6}  {:>7}  {:>17}  {:>11}\n",
        "fault", "action", "runs", "success", "median to healthy", "recurrences"
    );
    for r in rows {
        let median = r.median_secs.map_or_else(
            || "-".to_string(),
            |s| Duration((s * 1000.0).round() as i64 / 1000 * 1000).to_string(),
        );
        out.push_str(&format!(
            "{:fw$}  {:aw$}  {:>6}  {:>6.0}%  {:>17}  {:>11}\n",
            r.fault,
            r.action,
            r.runs,
            r.success_rate * 100.0,
            median,
            r.recurrences
        ));
    }
    out
}
