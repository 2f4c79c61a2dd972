//! The efficacy ledger (contract 11): per (fault class, action), how often a
//! repair worked. A run is an action done (executed, or dry_run in replay)
//! while its fault was open. It succeeded when the fault resolved within
//! the policy's `verify` window after it (24 h when the policy sets none)
//! and has not opened again on that node within 7 days of resolving; it
//! failed when the fault resolved later, opened again within 7 days, or is
//! still open past the window. Until then it is pending and counts for
//! nothing.
//!
//! Built from decisions alone, in order, so the journal of a running
//! service, a replay and the engine itself (for `efficacy()` and `demote`)
//! keep the same ledger for the same decisions. Runs past any change
//! (window and 7 days) are folded into per-row tallies, so the ledger of a
//! service that runs for a year stays small.

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::decision::{Decision, Event, Outcome};
use crate::policy::Policies;
use crate::time::{Duration, Timestamp};

/// A fault that opens again this soon after resolving was not repaired.
pub const REOPEN_WINDOW: Duration = Duration(7 * 24 * 3_600_000);

/// How long after the action a fault may take to resolve when its policy
/// has no `verify`.
pub const DEFAULT_WINDOW: Duration = Duration(24 * 3_600_000);

/// How often runs that can no longer change are folded.
const FOLD_EVERY: Duration = Duration(3_600_000);

/// One action done for one occurrence of a fault.
#[derive(Debug, Clone)]
struct Run {
    acted: Timestamp,
    resolved: Option<Timestamp>,
    reopened: bool,
}

impl Run {
    /// Success, failure, or `None` while pending at `now`.
    fn verdict(&self, window: Duration, now: Timestamp) -> Option<bool> {
        match self.resolved {
            Some(t) if t.0 - self.acted.0 <= window.0 => Some(!self.reopened),
            Some(_) => Some(false),
            None if now.0 - self.acted.0 > window.0 => Some(false),
            None => None,
        }
    }
}

/// What runs add up to.
#[derive(Debug, Clone, Default)]
struct Tally {
    judged: usize,
    successes: usize,
    recurrences: usize,
    /// Time from the action to the fault resolving, of resolved runs (ms);
    /// sorted in an entry's folded tally, so a median never copies it.
    healthy_ms: Vec<i64>,
}

/// One row: (fault, action, value of the split label).
#[derive(Debug, Default)]
struct Entry {
    fault: String,
    action: String,
    value: Option<String>,
    window: Duration,
    tally: Tally,
    /// Runs that may still change, by id.
    live: Vec<u64>,
}

/// One row of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The fault class.
    pub fault: String,
    /// The action.
    pub action: String,
    /// The label the ledger is split by, with this row's value (`-` for
    /// nodes without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The label's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Runs judged: the fault resolved, or its window passed.
    pub runs: usize,
    /// Runs done too recently to judge (their fault is open within its window).
    pub pending: usize,
    /// Runs after which the fault resolved in time and stayed resolved.
    pub successes: usize,
    /// `successes / runs` (0 without runs).
    pub success_rate: f64,
    /// Median time from the action to the fault resolving, of runs whose
    /// fault resolved (seconds).
    pub median_secs: Option<f64>,
    /// Runs whose fault opened again within 7 days of resolving.
    pub recurrences: usize,
}

/// What `efficacy(fault, action)` answers: the judged runs of an action for
/// a fault class, across every value of the split label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Runs judged.
    pub runs: usize,
    /// Of those, successes.
    pub successes: usize,
    /// Median time to healthy (seconds), of resolved runs.
    pub median_secs: Option<f64>,
}

impl Stats {
    /// `successes / runs`; `None` without runs.
    pub fn success_rate(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.successes as f64 / self.runs as f64)
    }
}

/// The ledger, built from decisions in order.
#[derive(Debug)]
pub struct Ledger {
    policies: Policies,
    /// Split rows by this node label (`[efficacy] by`, `report --by`).
    by: Option<String>,
    entries: Vec<Entry>,
    index: FxHashMap<(String, String, Option<String>), usize>,
    runs: FxHashMap<u64, (usize, Run)>,
    next_run: u64,
    /// (node, fault) -> the runs of its open occurrence.
    open: FxHashMap<(String, String), Vec<u64>>,
    /// (node, fault) -> when it last resolved, and that occurrence's runs.
    closed: FxHashMap<(String, String), (Timestamp, Vec<u64>)>,
    /// The latest decision's time.
    now: Timestamp,
    next_fold: Timestamp,
    /// Counts the decisions that changed a run.
    version: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new(Policies::default(), None)
    }
}

impl Ledger {
    /// An empty ledger judging each fault by its policy's `verify`, its rows
    /// split by node label `by` if given.
    pub fn new(policies: Policies, by: Option<String>) -> Self {
        Ledger {
            policies,
            by,
            entries: Vec::new(),
            index: FxHashMap::default(),
            runs: FxHashMap::default(),
            next_run: 0,
            open: FxHashMap::default(),
            closed: FxHashMap::default(),
            now: Timestamp(i64::MIN),
            next_fold: Timestamp(i64::MIN),
            version: 0,
        }
    }

    /// Changes whenever a decision changed a run (its rows may differ;
    /// time alone can judge a pending run too).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The label rows are split by.
    pub fn split_by(&self) -> Option<&str> {
        self.by.as_deref()
    }

    /// Takes one decision into account. `value` gives the split label's
    /// value on a node (asked only for runs, and only when split).
    pub fn observe(&mut self, d: &Decision, value: impl FnOnce(&str, &str) -> Option<String>) {
        self.now = self.now.max(d.ts);
        match d.event {
            Event::FaultOpened => {
                let key = (d.node.clone(), d.fault.clone());
                if let Some((resolved, runs)) = self.closed.remove(&key) {
                    if d.ts.0 - resolved.0 <= REOPEN_WINDOW.0 {
                        for id in runs {
                            if let Some((_, run)) = self.runs.get_mut(&id) {
                                run.reopened = true;
                                self.version += 1;
                            }
                        }
                    }
                }
                self.open.insert(key, Vec::new());
            }
            Event::FaultResolved => {
                let key = (d.node.clone(), d.fault.clone());
                if let Some(runs) = self.open.remove(&key) {
                    for id in &runs {
                        if let Some((_, run)) = self.runs.get_mut(id) {
                            run.resolved = Some(d.ts);
                            self.version += 1;
                        }
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
                let Some(runs) = self.open.get_mut(&(d.node.clone(), d.fault.clone())) else {
                    return;
                };
                let id = self.next_run;
                self.next_run += 1;
                runs.push(id);
                let value = self
                    .by
                    .as_deref()
                    .map(|label| value(&d.node, label).unwrap_or_else(|| "-".to_string()));
                let key = (d.fault.clone(), action.clone(), value);
                let entry = match self.index.get(&key) {
                    Some(&i) => i,
                    None => {
                        let window = self.window(&d.fault);
                        self.entries.push(Entry {
                            fault: key.0.clone(),
                            action: key.1.clone(),
                            value: key.2.clone(),
                            window,
                            ..Entry::default()
                        });
                        self.index.insert(key, self.entries.len() - 1);
                        self.entries.len() - 1
                    }
                };
                self.entries[entry].live.push(id);
                let run = Run {
                    acted: d.ts,
                    resolved: None,
                    reopened: false,
                };
                self.runs.insert(id, (entry, run));
                self.version += 1;
            }
            Event::FaultStale | Event::FaultUnverified | Event::Step => {}
        }
        if d.ts >= self.next_fold {
            self.fold(d.ts);
        }
    }

    fn window(&self, fault: &str) -> Duration {
        self.policies.get(fault).verify.unwrap_or(DEFAULT_WINDOW)
    }

    /// Folds runs that nothing can change any more (past their window and
    /// 7 days) into their rows' tallies, and forgets resolutions older than
    /// 7 days.
    fn fold(&mut self, now: Timestamp) {
        self.next_fold = now.add(FOLD_EVERY);
        for entry in &mut self.entries {
            let runs = &mut self.runs;
            let window = entry.window;
            let tally = &mut entry.tally;
            entry.live.retain(|id| {
                let Some((_, run)) = runs.get(id) else {
                    return false;
                };
                if now.0 - run.acted.0 <= window.0 + REOPEN_WINDOW.0 {
                    return true;
                }
                let (_, run) = runs.remove(id).expect("just found");
                add(tally, &run, window, now);
                false
            });
            tally.healthy_ms.sort_unstable();
        }
        self.closed
            .retain(|_, (resolved, _)| now.0 - resolved.0 <= REOPEN_WINDOW.0);
        self.open.retain(|_, runs| {
            runs.retain(|id| self.runs.contains_key(id));
            true
        });
    }

    /// The runs of an entry that may still change, as of `now` (their
    /// times to healthy sorted), and how many of them are pending. With the
    /// entry's folded tally, they make its figures.
    fn live(&self, entry: &Entry, now: Timestamp) -> (Tally, usize) {
        let mut tally = Tally::default();
        let mut pending = 0;
        for id in &entry.live {
            let (_, run) = &self.runs[id];
            if run.verdict(entry.window, now).is_none() {
                pending += 1;
            }
            add(&mut tally, run, entry.window, now);
        }
        tally.healthy_ms.sort_unstable();
        (tally, pending)
    }

    /// `efficacy(fault, action)` as of `now`, across every split value.
    pub fn stats(&self, fault: &str, action: &str, now: Timestamp) -> Stats {
        let entries: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.fault == fault && e.action == action)
            .collect();
        let live: Vec<Tally> = entries.iter().map(|e| self.live(e, now).0).collect();
        let tallies = entries.iter().map(|e| &e.tally).chain(&live);
        let (mut runs, mut successes) = (0, 0);
        for t in tallies.clone() {
            runs += t.judged;
            successes += t.successes;
        }
        let sorted: Vec<&[i64]> = tallies.map(|t| t.healthy_ms.as_slice()).collect();
        Stats {
            runs,
            successes,
            median_secs: median_secs(&sorted),
        }
    }

    /// The ledger as of its latest decision, per (fault, action[, value]),
    /// sorted.
    pub fn rows(&self) -> Vec<Row> {
        self.rows_at(self.now)
    }

    /// The ledger as of `now`.
    pub fn rows_at(&self, now: Timestamp) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .entries
            .iter()
            .map(|entry| {
                let (live, pending) = self.live(entry, now);
                let folded = &entry.tally;
                let judged = folded.judged + live.judged;
                let successes = folded.successes + live.successes;
                Row {
                    fault: entry.fault.clone(),
                    action: entry.action.clone(),
                    label: self.by.clone(),
                    value: entry.value.clone(),
                    runs: judged,
                    pending,
                    successes,
                    success_rate: if judged == 0 {
                        0.0
                    } else {
                        successes as f64 / judged as f64
                    },
                    median_secs: median_secs(&[&folded.healthy_ms, &live.healthy_ms]),
                    recurrences: folded.recurrences + live.recurrences,
                }
            })
            .collect();
        rows.sort_by(|a, b| (&a.fault, &a.action, &a.value).cmp(&(&b.fault, &b.action, &b.value)));
        rows
    }
}

/// Adds a run's verdict at `now` to `tally` (a pending run: only its time
/// to healthy, if it has one).
fn add(tally: &mut Tally, run: &Run, window: Duration, now: Timestamp) {
    if let Some(success) = run.verdict(window, now) {
        tally.judged += 1;
        tally.successes += usize::from(success);
    }
    tally.recurrences += usize::from(run.reopened);
    if let Some(t) = run.resolved {
        tally.healthy_ms.push(t.0 - run.acted.0);
    }
}

/// The median, in seconds, of the values of sorted lists taken together,
/// found without merging them (a year of folded runs is not copied).
fn median_secs(sorted: &[&[i64]]) -> Option<f64> {
    let n: usize = sorted.iter().map(|l| l.len()).sum();
    if n == 0 {
        return None;
    }
    let median = if n % 2 == 0 {
        (kth(sorted, n / 2 - 1) + kth(sorted, n / 2)) as f64 / 2.0
    } else {
        kth(sorted, n / 2) as f64
    };
    Some(median / 1000.0)
}

/// The `k`-th smallest (from 0) of the values of sorted lists: the least
/// value with more than `k` values at or below it, by bisection.
fn kth(sorted: &[&[i64]], k: usize) -> i64 {
    let mut lo = sorted
        .iter()
        .filter_map(|l| l.first())
        .min()
        .copied()
        .unwrap_or(0);
    let mut hi = sorted
        .iter()
        .filter_map(|l| l.last())
        .max()
        .copied()
        .unwrap_or(0);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let at_most: usize = sorted
            .iter()
            .map(|l| l.partition_point(|&v| v <= mid))
            .sum();
        if at_most > k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn t(minutes: i64) -> Timestamp {
        Timestamp(1_800_000_000_000 + minutes * 60_000)
    }

    fn ledger(by: Option<&str>) -> Ledger {
        let policy = Policy {
            verify: Some(Duration(10 * 60_000)),
            ..Policy::default()
        };
        let policies = Policies::from_config([("memory_failure".to_string(), policy)].into());
        Ledger::new(policies, by.map(str::to_string))
    }

    fn feed(l: &mut Ledger, node: &str, opened: i64, acted: i64, resolved: Option<i64>) {
        let model = |n: &str, _: &str| Some(if n < "m" { "A" } else { "B" }.to_string());
        let mut o = Decision::resolved(t(opened), node, "memory_failure");
        o.event = Event::FaultOpened;
        l.observe(&o, model);
        let a = Decision::action(
            t(acted),
            node,
            "memory_failure",
            "cordon",
            Outcome::Executed,
            None,
        );
        l.observe(&a, model);
        if let Some(r) = resolved {
            l.observe(&Decision::resolved(t(r), node, "memory_failure"), model);
        }
    }

    #[test]
    fn the_median_of_several_sorted_lists_is_the_median_of_them_merged() {
        let lists: [&[i64]; 3] = [&[-5, 1, 4, 4, 9], &[2, 3], &[]];
        let mut merged: Vec<i64> = lists.concat();
        merged.sort_unstable();
        for (k, want) in merged.iter().enumerate() {
            assert_eq!(kth(&lists, k), *want, "k = {k}");
        }
        assert_eq!(median_secs(&lists), Some(3.0 / 1000.0));
        assert_eq!(median_secs(&[&[1000, 3000]]), Some(2.0));
        assert_eq!(median_secs(&[&[], &[]]), None);
    }

    #[test]
    fn runs_are_judged_by_their_window_and_pending_ones_count_for_nothing() {
        let mut l = ledger(None);
        feed(&mut l, "a", 0, 0, Some(5)); // fixed in 5 min
        feed(&mut l, "b", 0, 0, Some(20)); // too late
        feed(&mut l, "c", 0, 1, None); // never, judged at minute 11
        feed(&mut l, "d", 0, 8, None); // pending until minute 18
        let s = l.stats("memory_failure", "cordon", t(12));
        assert_eq!((s.runs, s.successes), (3, 1));
        assert_eq!(s.success_rate(), Some(1.0 / 3.0));
        assert_eq!(s.median_secs, Some(750.0)); // (5 + 20) / 2 minutes
        let rows = l.rows_at(t(12));
        assert_eq!((rows[0].runs, rows[0].pending), (3, 1));
        assert_eq!(l.stats("memory_failure", "cordon", t(19)).runs, 4);
        assert_eq!(l.stats("memory_failure", "reinstall", t(19)).runs, 0);
        assert_eq!(
            l.stats("memory_failure", "reinstall", t(19)).success_rate(),
            None
        );
    }

    #[test]
    fn a_fault_back_within_seven_days_undoes_the_success() {
        let mut l = ledger(None);
        feed(&mut l, "a", 0, 0, Some(3));
        assert_eq!(l.stats("memory_failure", "cordon", t(4)).successes, 1);
        feed(&mut l, "a", 6 * 1440, 6 * 1440, Some(6 * 1440 + 4));
        let rows = l.rows_at(t(6 * 1440 + 5));
        assert_eq!(
            (rows[0].runs, rows[0].successes, rows[0].recurrences),
            (2, 1, 1)
        );
        // Back after 8 days: a new fault, the earlier repair stands.
        feed(
            &mut l,
            "a",
            14 * 1440 + 10,
            14 * 1440 + 10,
            Some(14 * 1440 + 12),
        );
        let rows = l.rows_at(t(14 * 1440 + 13));
        assert_eq!(
            (rows[0].runs, rows[0].successes, rows[0].recurrences),
            (3, 2, 1)
        );
    }

    #[test]
    fn folding_old_runs_changes_no_figure_and_keeps_the_ledger_small() {
        let mut l = ledger(Some("model"));
        let mut unfolded = ledger(Some("model"));
        unfolded.next_fold = Timestamp(i64::MAX);
        for day in 0..60 {
            for (i, node) in ["a", "b", "n", "z"].iter().enumerate() {
                let start = day * 1440 + i as i64 * 60;
                let fixed = (day + i as i64) % 3 != 0;
                let end = Some(start + if fixed { 5 } else { 30 });
                let node = format!("{node}{day}");
                feed(&mut l, &node, start, start + 1, end);
                feed(&mut unfolded, &node, start, start + 1, end);
            }
            assert_eq!(l.rows(), unfolded.rows(), "day {day}");
        }
        assert!(l.runs.len() <= 4 * 9, "{} runs kept", l.runs.len());
        assert_eq!(unfolded.runs.len(), 240);
        let rows = l.rows();
        assert_eq!(rows.len(), 2, "split by model: A and B");
        assert_eq!(rows[0].value.as_deref(), Some("A"));
        assert_eq!(rows.iter().map(|r| r.runs).sum::<usize>(), 240);
        let fixed: usize = (0..60)
            .flat_map(|day| (0..4).map(move |i| (day + i) % 3 != 0))
            .filter(|&f| f)
            .count();
        assert_eq!(rows.iter().map(|r| r.successes).sum::<usize>(), fixed);
    }
}
