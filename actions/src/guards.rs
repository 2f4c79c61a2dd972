//! The guard chain every action passes, in this order: silence, approval,
//! storm protection (budget per failure domain), rate limits (governor, fleet-
//! wide and per domain), the executor's circuit breaker, and then the
//! executor, or dry-run. Each refusal is a decision with a reason.
//!
//! Held back is not forgotten: an action refused by the budget, a rate limit
//! or an open breaker waits in a queue and is tried again, first in first out,
//! when its guard frees (a node leaves the budget, the quota refills, the
//! breaker half-opens) for as long as its fault stays open; the retry that
//! passes is a new decision. Everything runs on event time, so a replay
//! reproduces the live run exactly.

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU32;

use remedy_engine::{Backoff, Decision, Duration, Intent, Met, Outcome, Timestamp, Trigger};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::breaker::{Breaker, BreakerConfig};
use crate::executor::{ExecError, Job};
use crate::rate::{self, Direct, EventClock, Keyed, Rate};
use crate::silence::Silence;

/// A quota: (action, `None` fleet-wide or `Some(value)` of its per-domain label).
type QuotaKey = (String, Option<String>);

/// `max_unhealthy`: a node count, or a share of the domain's known nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// At most this many nodes.
    Count(u32),
    /// At most this percentage of the domain's known nodes (at least one node).
    Percent(f64),
}

impl Budget {
    /// Nodes of a domain of `known` nodes that may be under remediation.
    pub fn limit(self, known: usize) -> usize {
        match self {
            Budget::Count(n) => n as usize,
            Budget::Percent(p) => ((known as f64 * p / 100.0).floor() as usize).max(1),
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Count(n) => write!(f, "{n}"),
            Budget::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for Budget {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid max_unhealthy {text:?}: write a node count (50) or a share (\"5%\")")
        };
        match text.trim().strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(p > 0.0 && p <= 100.0) {
                    return Err(bad());
                }
                Ok(Budget::Percent(p))
            }
            None => text.trim().parse().map(Budget::Count).map_err(|_| bad()),
        }
    }
}

/// `[guards]`.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    /// Storm protection; `None` means no budget.
    pub max_unhealthy: Option<Budget>,
    /// The label that names a node's failure domain.
    pub domain: String,
    /// How long a domain must stay under budget before held-back actions resume.
    pub storm_recovery: Duration,
    /// Per executor.
    pub breaker: BreakerConfig,
    /// Run nothing: the last step answers `dry_run`.
    pub dry_run: bool,
    /// `[[guards.levels]]` and `[guards.fleet]`: nested failure domains,
    /// each with its own budget; an action must fit every one.
    pub levels: Vec<Level>,
    /// `[[correlate]] settle`: per-node disruptive repairs of these fault
    /// classes wait this long after their fault opened, so that a common
    /// cause can show (and hold them) before one node is acted on.
    pub settle: Vec<Settle>,
}

/// One `[[correlate]]` block's `settle`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settle {
    /// The block's label (rack, switch, ...): only nodes that carry it wait.
    pub label: String,
    /// The fault classes it counts; `*`: any.
    pub faults: Vec<String>,
    /// How long after the fault opened.
    pub wait: Duration,
}

impl Settle {
    fn covers(&self, fault: &str) -> bool {
        self.faults.iter().any(|f| f == fault || f == "*")
    }
}

/// One level of failure domains (`[[guards.levels]]`, `[guards.fleet]`):
/// the nodes sharing a value of `label` (or the whole fleet), with what a
/// disruptive repair must fit in there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Level {
    /// The label whose values are this level's domains; `None`: the fleet.
    pub label: Option<String>,
    /// Nodes under remediation at once: a count or a share of the domain's
    /// known nodes.
    pub max_unhealthy: Option<Budget>,
    /// Disruptive actions executing at once.
    pub max_in_flight: Option<u32>,
    /// Disruptive actions started per period, per domain.
    pub rate: Option<Rate>,
}

impl Level {
    /// How a domain of this level is named in reasons.
    fn name(&self, value: &str) -> String {
        match &self.label {
            None => "fleet".to_string(),
            Some(label) if value.is_empty() => format!("nodes without a {label} label"),
            Some(label) => format!("{label} {value}"),
        }
    }

    /// The quota scope of this level's rate (journaled with the quotas).
    fn scope(&self) -> String {
        match &self.label {
            None => "@fleet".to_string(),
            Some(label) => format!("@{label}"),
        }
    }

    /// Whether `scope` is this level's (without building its name: this
    /// is asked on every quota check).
    fn has_scope(&self, scope: &str) -> bool {
        match (&self.label, scope.strip_prefix('@')) {
            (None, Some(rest)) => rest == "fleet",
            (Some(label), Some(rest)) => rest == label,
            (_, None) => false,
        }
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_unhealthy: Some(Budget::Percent(5.0)),
            domain: "cluster".into(),
            storm_recovery: Duration(0),
            breaker: BreakerConfig::default(),
            dry_run: true,
            levels: Vec::new(),
            settle: Vec::new(),
        }
    }
}

impl GuardConfig {
    /// Every level an action must fit, outermost as configured: the older
    /// single level (`max_unhealthy` per `domain`) first unless a
    /// `[[guards.levels]]` entry has the same label, then the levels.
    pub fn effective_levels(&self) -> Vec<Level> {
        let mut levels = Vec::new();
        let legacy = Some(self.domain.clone());
        if self.max_unhealthy.is_some() && !self.levels.iter().any(|l| l.label == legacy) {
            levels.push(Level {
                label: legacy,
                max_unhealthy: self.max_unhealthy,
                ..Level::default()
            });
        }
        levels.extend(self.levels.iter().cloned());
        levels
    }
}

/// What an action does to a node, which is what the guards judge it by
/// (never by its name): `[actions.NAME] disruptive` and `restores`,
/// defaulting from its `op`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionKind {
    /// Takes the node out of service or changes it: counts against the
    /// storm budget.
    pub disruptive: bool,
    /// Undoes a disruptive action (uncordon-like): skipped while another
    /// open fault still keeps the node under remediation.
    pub restores: bool,
}

impl ActionKind {
    /// The kind an operation has unless the config says otherwise:
    /// cordon, drain, reinstall, restart, reboot, power_cycle and upgrade
    /// are disruptive; uncordon restores; anything else (ticket, notify,
    /// a webhook) is neither.
    pub fn of_op(op: &str) -> Self {
        ActionKind {
            disruptive: matches!(
                op,
                "cordon" | "drain" | "reinstall" | "restart" | "reboot" | "power_cycle" | "upgrade"
            ),
            restores: op == "uncordon",
        }
    }
}

/// The actions every config knows without an `[actions.NAME]` section;
/// without one they are carried out by the `log` executor (they only log),
/// and their op is their name.
pub const BUILT_IN: [&str; 10] = [
    "cordon",
    "uncordon",
    "drain",
    "reinstall",
    "restart",
    "reboot",
    "power_cycle",
    "upgrade",
    "ticket",
    "notify",
];

/// `[actions.NAME]`: what the guards need to know about one action.
#[derive(Clone, Debug, Default)]
pub struct ActionGuards {
    /// Which kind of executor carries it out (for reasons and metrics).
    pub executor: String,
    /// What it does to a node.
    pub kind: ActionKind,
    /// Fleet-wide quota.
    pub rate: Option<Rate>,
    /// Quota per failure domain: (label, rate).
    pub per: Option<(String, Rate)>,
    /// How long after a job's first try its transient failures are tried
    /// again (`[actions.NAME] retry_for`); zero: never.
    pub retry_for: Duration,
}

/// `retry_for` when an action does not say.
pub const RETRY_FOR: Duration = Duration(600_000);

/// The wait before each try again: 5s doubling up to 2 minutes.
pub const RETRY: Backoff = Backoff::new(Duration(5_000), Duration(120_000));

/// What became of a finished job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Decided (`executed` or `failed` for good): forget the job.
    Done,
    /// Failed transiently: the job, with its next try, stays (journal it).
    Retry(Box<Job>),
}

impl ActionGuards {
    /// A built-in action without a section: the log executor, the kind of its name.
    pub fn built_in(name: &str) -> Self {
        ActionGuards {
            executor: "log".into(),
            kind: ActionKind::of_op(name),
            retry_for: RETRY_FOR,
            ..ActionGuards::default()
        }
    }
}

/// How many known nodes a failure domain has (every node that sent a signal).
pub trait DomainSizes {
    /// Known nodes whose `label` is `value`.
    fn known(&self, label: &str, value: &str) -> usize;

    /// Known nodes in the whole fleet.
    fn all(&self) -> usize {
        self.known("", "")
    }
}

#[derive(Debug)]
struct Held {
    request: Intent,
    /// Not before this time (rate limit, breaker); budget waits for a release.
    wake: Option<Timestamp>,
    outcome: Outcome,
    /// The domain whose budget held it, where it counts as waiting.
    counted: Option<DomainKey>,
}

/// Why a guard holds an action: outcome, reason, when to try again.
type Refusal = (Outcome, String, Option<Timestamp>);

/// A failure domain: (index of its level, the label's value).
type DomainKey = (usize, String);

/// A node under remediation: its domains at every level, and the faults
/// keeping it there.
#[derive(Debug, Default)]
struct Remediating {
    domains: Vec<DomainKey>,
    faults: FxHashSet<String>,
}

#[derive(Debug, Default)]
struct Domain {
    /// Nodes under remediation.
    nodes: FxHashSet<String>,
    /// Disruptive jobs with an executor.
    in_flight: usize,
    /// Actions held back by this domain's budget.
    waiting: usize,
    /// Back under budget since (set when a node leaves, cleared when full).
    under_since: Option<Timestamp>,
}

/// The guard chain with its state: budgets, limiters, breakers, silences,
/// approvals and held-back actions.
pub struct Guards {
    config: GuardConfig,
    actions: BTreeMap<String, ActionGuards>,
    clock: EventClock,
    fleet_limits: FxHashMap<String, Direct>,
    domain_limits: FxHashMap<String, (String, Keyed)>,
    /// Each quota's governor state (its theoretical arrival time, in
    /// nanoseconds), kept beside governor: a quota is tested without taking
    /// a token, and saved and put back across a restart. Key: (action,
    /// `None` fleet-wide or `Some(value)` of its per-domain label).
    tats: FxHashMap<QuotaKey, u64>,
    /// Quotas whose state changed since [`Guards::take_quotas`].
    tats_changed: FxHashSet<QuotaKey>,
    breakers: BTreeMap<String, Breaker>,
    /// [`GuardConfig::effective_levels`].
    levels: Vec<Level>,
    /// Per level with a rate: a limiter keyed by domain value.
    level_limits: Vec<Option<Keyed>>,
    domains: FxHashMap<DomainKey, Domain>,
    /// Nodes under remediation.
    remediating: FxHashMap<String, Remediating>,
    /// (node, fault) -> on_resolve actions still to pass before the node leaves the budget.
    recovering: FxHashMap<(String, String), usize>,
    held: VecDeque<Held>,
    /// Per node, how many of `held` are its (a node whose fault resolves
    /// with none held is not looked for in the whole queue).
    held_nodes: FxHashMap<String, u32>,
    /// Earliest time a held action might pass without a release.
    next_wake: Option<Timestamp>,
    released: bool,
    /// When a change of the domains' sizes is next worth a look.
    next_size_check: Timestamp,
    silences: Vec<Silence>,
    next_silence: u64,
    approvals: BTreeMap<u64, Intent>,
    next_approval: u64,
    /// Jobs handed out by `take_jobs` or waiting to be, by id, until they finish.
    running: BTreeMap<String, Job>,
    /// Jobs not yet taken.
    outbox: Vec<Job>,
    /// Jobs that failed transiently, waiting for their `retry_at`.
    retrying: Vec<Job>,
    /// Domains with an open common cause: (label, value) -> its fault.
    holds: BTreeMap<(String, String), String>,
    /// (node, fault) of condition faults whose evidence is stale: their
    /// held-back disruptive actions wait until it is asserted again.
    stale: FxHashSet<(String, String)>,
}

impl std::fmt::Debug for Guards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guards")
            .field("held", &self.held.len())
            .field("remediating", &self.remediating.len())
            .finish()
    }
}

impl Guards {
    /// A chain with `config` and per-action settings.
    pub fn new(config: GuardConfig, mut actions: BTreeMap<String, ActionGuards>) -> Self {
        for name in BUILT_IN {
            actions
                .entry(name.to_string())
                .or_insert_with(|| ActionGuards::built_in(name));
        }
        let clock = EventClock::default();
        let mut fleet_limits = FxHashMap::default();
        let mut domain_limits = FxHashMap::default();
        for (name, a) in &actions {
            if let Some(r) = a.rate {
                fleet_limits.insert(name.clone(), r.direct(&clock));
            }
            if let Some((label, r)) = &a.per {
                domain_limits.insert(name.clone(), (label.clone(), r.keyed(&clock)));
            }
        }
        let levels = config.effective_levels();
        let level_limits = levels
            .iter()
            .map(|l| l.rate.map(|r| r.keyed(&clock)))
            .collect();
        Guards {
            config,
            actions,
            levels,
            level_limits,
            clock,
            fleet_limits,
            domain_limits,
            tats: FxHashMap::default(),
            tats_changed: FxHashSet::default(),
            breakers: BTreeMap::new(),
            domains: FxHashMap::default(),
            remediating: FxHashMap::default(),
            recovering: FxHashMap::default(),
            held: VecDeque::new(),
            held_nodes: FxHashMap::default(),
            next_wake: None,
            released: false,
            next_size_check: Timestamp(i64::MIN),
            silences: Vec::new(),
            next_silence: 1,
            approvals: BTreeMap::new(),
            next_approval: 1,
            running: BTreeMap::new(),
            outbox: Vec::new(),
            stale: FxHashSet::default(),
            holds: BTreeMap::new(),
            retrying: Vec::new(),
        }
    }

    /// Whether jobs passed every guard since the last [`Guards::take_jobs`].
    pub fn has_jobs(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Jobs that passed every guard since the last call, for the executors.
    /// They count as running until [`Guards::finished`] hears of them.
    pub fn take_jobs(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.outbox)
    }

    /// Jobs handed out and not yet finished.
    pub fn running(&self) -> impl Iterator<Item = &Job> {
        self.running.values()
    }

    /// After a restart: a job the journal says was running when the service
    /// stopped. It keeps its node under remediation and is handed out again
    /// (executors are idempotent on the job id).
    pub fn restore_job(&mut self, job: Job) {
        if self.running.contains_key(&job.id) {
            return;
        }
        self.passed(&job.intent, job.at);
        self.in_flight(&job.intent, true);
        self.outbox.push(job.clone());
        self.running.insert(job.id.clone(), job);
    }

    /// An executor finished job `id` at `now`: `Ok` with a summary of its
    /// response, or `Err` saying why it failed. Feeds the executor's breaker
    /// and decides `executed` or `failed`. False if no such job runs.
    ///
    /// A failed disruptive action keeps its node counted against the budget
    /// until the fault resolves: what failed half-way may still have taken
    /// the node out, and storm protection errs on the side of fewer repairs.
    pub fn finished(
        &mut self,
        id: &str,
        result: Result<String, ExecError>,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) -> Option<Finished> {
        let mut job = self.running.remove(id)?;
        self.outbox.retain(|j| j.id != id);
        self.clock.set(now);
        let retry_for = self
            .actions
            .get(&job.intent.action)
            .map_or(RETRY_FOR, |a| a.retry_for);
        let breaker = self.breaker(&job.intent.action);
        let mut retry = None;
        let mut d = match result {
            Ok(summary) => {
                breaker.success();
                let mut d = decision(&job.intent, now, Outcome::Executed, None);
                d.detail = (!summary.is_empty()).then_some(summary);
                d
            }
            Err(why) => {
                breaker.failure();
                let since = *job.failing_since.get_or_insert(now);
                let give_up = since.add(retry_for);
                let next = now.add(RETRY.nth(job.attempt));
                let mut reason = why.to_string();
                if why.is_transient() && retry_for.0 > 0 && next <= give_up {
                    retry = Some(next);
                } else if why.is_transient() && job.attempt > 0 {
                    reason = format!(
                        "{reason} (gave up after {} tries over {})",
                        job.attempt + 1,
                        Duration(now.0 - since.0)
                    );
                }
                let mut d = decision(&job.intent, now, Outcome::Failed, Some(reason));
                d.retry_at = retry;
                d
            }
        };
        d.ts = d.ts.max(job.at);
        out.push(d);
        // A half-open breaker may let the next held action through now.
        self.wake_at(Some(now));
        Some(match retry {
            None => {
                self.in_flight(&job.intent, false);
                Finished::Done
            }
            Some(at) => {
                job.attempt += 1;
                job.retry_at = Some(at);
                self.wake_at(Some(at));
                self.running.insert(job.id.clone(), job.clone());
                self.retrying.push(job.clone());
                Finished::Retry(Box::new(job))
            }
        })
    }

    /// Jobs whose `retry_at` has come go to their executor again, unless
    /// its breaker is open (then they wait until it half-opens).
    fn retry_due(&mut self, now: Timestamp) {
        let waiting = std::mem::take(&mut self.retrying);
        for mut job in waiting {
            if job.retry_at.is_some_and(|at| at > now) {
                self.wake_at(job.retry_at);
                self.retrying.push(job);
                continue;
            }
            if let Some((_, _, wake)) = self.check_breaker(&job.intent, now, &mut Vec::new()) {
                job.retry_at = Some(wake.unwrap_or(now.add(RETRY.nth(0))));
                self.wake_at(job.retry_at);
                self.retrying.push(job);
                continue;
            }
            job.retry_at = None;
            self.running.insert(job.id.clone(), job.clone());
            self.outbox.push(job);
        }
    }

    /// Adds a silence; returns its id.
    pub fn silence(&mut self, mut s: Silence) -> u64 {
        if s.id == 0 {
            s.id = self.next_silence;
        }
        self.next_silence = self.next_silence.max(s.id + 1);
        let id = s.id;
        self.silences.push(s);
        id
    }

    /// Removes a silence; false if there was none with that id.
    pub fn unsilence(&mut self, id: u64) -> bool {
        let before = self.silences.len();
        self.silences.retain(|s| s.id != id);
        self.silences.len() != before
    }

    /// Every level an action must fit: (its label or `fleet`, max_unhealthy).
    pub fn levels(&self) -> Vec<(String, Option<Budget>)> {
        self.levels
            .iter()
            .map(|l| {
                (
                    l.label.clone().unwrap_or_else(|| "fleet".into()),
                    l.max_unhealthy,
                )
            })
            .collect()
    }

    /// The actions held back for `node`: (action, fault, outcome, when it
    /// may be tried again if a quota or breaker says).
    pub fn held_for(&self, node: &str) -> Vec<(String, String, Outcome, Option<Timestamp>)> {
        self.held
            .iter()
            .filter(|h| h.request.node == node)
            .map(|h| {
                let r = &h.request;
                (r.action.clone(), r.fault.clone(), h.outcome, h.wake)
            })
            .collect()
    }

    /// The budget of every level for a node with `labels`: (level label or
    /// `fleet`, domain value, nodes under remediation there, known nodes,
    /// max_unhealthy).
    pub fn budgets_for(
        &self,
        labels: &[(String, String)],
        sizes: &dyn DomainSizes,
    ) -> Vec<(String, String, usize, usize, Option<Budget>)> {
        self.levels
            .iter()
            .enumerate()
            .map(|(i, level)| {
                let value = level.label.as_ref().map_or("", |l| {
                    labels
                        .iter()
                        .find(|(k, _)| k == l)
                        .map_or("", |(_, v)| v.as_str())
                });
                let known = match &level.label {
                    Some(l) => sizes.known(l, value),
                    None => sizes.all(),
                };
                let under = self
                    .domains
                    .get(&(i, value.to_string()))
                    .map_or(0, |d| d.nodes.len());
                let name = level.label.clone().unwrap_or_else(|| "fleet".into());
                (name, value.to_string(), under, known, level.max_unhealthy)
            })
            .collect()
    }

    /// Whether `action` takes a node out of service (counts against budgets).
    pub fn is_disruptive(&self, action: &str) -> bool {
        self.kind(action).disruptive
    }

    /// The silences in force or not yet expired.
    pub fn silences(&self) -> &[Silence] {
        &self.silences
    }

    /// Actions waiting for approval, by id.
    pub fn awaiting(&self) -> impl Iterator<Item = (u64, &Intent)> {
        self.approvals.iter().map(|(id, r)| (*id, r))
    }

    /// Nodes under remediation in a domain of the `[guards] domain` label.
    pub fn under_remediation(&self, domain: &str) -> usize {
        self.under_remediation_in(Some(&self.config.domain), domain)
    }

    /// Nodes under remediation in the domain `value` of the level of
    /// `label` (`None`: the fleet level, `value` empty).
    pub fn under_remediation_in(&self, label: Option<&str>, value: &str) -> usize {
        self.levels
            .iter()
            .position(|l| l.label.as_deref() == label)
            .and_then(|i| self.domains.get(&(i, value.to_string())))
            .map_or(0, |d| d.nodes.len())
    }

    /// Every domain with nodes under remediation: (level label, or `fleet`;
    /// domain value; nodes).
    pub fn domains(&self) -> Vec<(String, String, usize)> {
        let mut v: Vec<(String, String, usize)> = self
            .domains
            .iter()
            .filter(|(_, d)| !d.nodes.is_empty())
            .map(|((i, value), d)| {
                let level = self.levels[*i].label.as_deref().unwrap_or("fleet");
                (level.to_string(), value.clone(), d.nodes.len())
            })
            .collect();
        v.sort();
        v
    }

    /// The nodes known to the domains changed (a node joined, left or was
    /// relabelled): actions held back by a budget are judged again, since
    /// a budget in percent grows with its domain.
    /// At most once a second: a fleet filling up at start would otherwise
    /// judge every held action again for every node that joins.
    pub fn sizes_changed(&mut self, now: Timestamp) {
        if now < self.next_size_check {
            return;
        }
        if self
            .held
            .iter()
            .any(|h| h.outcome == Outcome::BudgetExhausted)
        {
            self.released = true;
            self.next_size_check = now.add(Duration(1_000));
        }
    }

    /// After a restart, puts back what the journal says became of an action
    /// of a still-open fault, without a new decision: one that passed keeps
    /// its node under remediation; one held back waits again (retried when
    /// its guard frees, not before `now`: its journaled `retry_at`, or the
    /// restart); one awaiting approval awaits again (with a new id).
    pub fn restore(&mut self, intent: Intent, last: Outcome, now: Timestamp) {
        match last {
            Outcome::Executed | Outcome::DryRun => self.passed(&intent, now),
            Outcome::BudgetExhausted
            | Outcome::RateLimited
            | Outcome::CircuitOpen
            | Outcome::HeldCommonCause => {
                let wake =
                    matches!(last, Outcome::RateLimited | Outcome::CircuitOpen).then_some(now);
                self.wake_at(wake);
                self.released = true;
                // Judged again at once; it counts as waiting where it is held then.
                count_held(&mut self.held_nodes, &intent.node, true);
                self.held.push_back(Held {
                    request: intent,
                    wake,
                    outcome: last,
                    counted: None,
                });
            }
            Outcome::AwaitingApproval => {
                let id = self.next_approval;
                self.next_approval += 1;
                self.approvals.insert(id, intent);
            }
            Outcome::Failed
            | Outcome::Silenced
            | Outcome::Rejected
            | Outcome::AttemptsExhausted
            | Outcome::Demoted => {}
        }
    }

    /// Every executor instance (by action) that has run something, and
    /// whether its breaker is open now.
    pub fn breakers(&self) -> Vec<(String, bool)> {
        self.breakers
            .iter()
            .map(|(name, b)| (name.clone(), b.is_open()))
            .collect()
    }

    /// Actions held back, waiting for a guard to free.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Asks for an action at `now`; decisions go to `out`.
    pub fn submit(
        &mut self,
        mut request: Intent,
        now: Timestamp,
        sizes: &dyn DomainSizes,
        out: &mut Vec<Decision>,
    ) {
        self.clock.set(now);
        if let Some(s) = self
            .silences
            .iter()
            .find(|s| s.matches(&request.node, &request.fault, &request.labels, now))
        {
            request.why.guards.push(Met::Silence {
                id: s.id,
                until: s.until,
                comment: s.comment.clone(),
            });
            out.push(decision(&request, now, Outcome::Silenced, Some(s.reason())));
            self.recovered_one(&request, now);
            return;
        }
        if request.approval {
            let id = self.next_approval;
            self.next_approval += 1;
            request.why.guards.push(Met::Approval {
                id,
                approved: false,
            });
            out.push(decision(
                &request,
                now,
                Outcome::AwaitingApproval,
                Some(format!("approval {id}: POST /v1/approvals/{id}/approve")),
            ));
            self.approvals.insert(id, request);
            return;
        }
        self.attempt(request, now, sizes, out, None);
    }

    /// An operator approves action `id`; it goes on through the remaining guards.
    pub fn approve(
        &mut self,
        id: u64,
        now: Timestamp,
        sizes: &dyn DomainSizes,
        out: &mut Vec<Decision>,
    ) -> bool {
        let Some(mut request) = self.approvals.remove(&id) else {
            return false;
        };
        for m in &mut request.why.guards {
            if let Met::Approval {
                id: asked,
                approved,
            } = m
            {
                *approved |= *asked == id;
            }
        }
        self.clock.set(now);
        self.attempt(request, now, sizes, out, None);
        true
    }

    /// An operator rejects action `id`.
    pub fn reject(&mut self, id: u64, now: Timestamp, out: &mut Vec<Decision>) -> bool {
        let Some(request) = self.approvals.remove(&id) else {
            return false;
        };
        out.push(decision(
            &request,
            now,
            Outcome::Rejected,
            Some(format!("approval {id} rejected")),
        ));
        self.recovered_one(&request, now);
        true
    }

    /// A condition fault went stale (`true`) or its condition was asserted
    /// again (`false`): its held-back disruptive actions wait, or may go.
    pub fn stale(&mut self, node: &str, fault: &str, stale: bool) {
        let key = (node.to_string(), fault.to_string());
        if stale {
            self.stale.insert(key);
        } else if self.stale.remove(&key) {
            self.released = true;
        }
    }

    /// The fault resolved on the node: forget what it still had held back or
    /// awaiting approval, and release the node from the budget once
    /// `on_resolve` (that many actions, submitted next) has passed.
    pub fn resolved(&mut self, node: &str, fault: &str, on_resolve: usize, now: Timestamp) {
        self.stale.remove(&(node.to_string(), fault.to_string()));
        if self.held_nodes.get(node).is_some_and(|&n| n > 0) {
            let domains = &mut self.domains;
            let held_nodes = &mut self.held_nodes;
            self.held.retain(|h| {
                let r = &h.request;
                let drop = r.node == node && r.fault == fault && r.trigger == Trigger::Remedy;
                if drop {
                    if let Some(d) = h.counted.as_ref().and_then(|k| domains.get_mut(k)) {
                        d.waiting -= 1;
                    }
                    count_held(held_nodes, node, false);
                }
                !drop
            });
        }
        if self.held_nodes.get(node) == Some(&0) {
            self.held_nodes.remove(node);
        }
        self.approvals
            .retain(|_, r| !(r.node == node && r.fault == fault && r.trigger == Trigger::Remedy));
        if on_resolve == 0 {
            self.release(node, fault, now);
        } else {
            *self
                .recovering
                .entry((node.to_string(), fault.to_string()))
                .or_default() += on_resolve;
        }
    }

    /// Retries held-back actions whose guard may have freed by `now`.
    pub fn tick(&mut self, now: Timestamp, sizes: &dyn DomainSizes, out: &mut Vec<Decision>) {
        if !self.retrying.is_empty() {
            self.retry_due(now);
        }
        let due = self.released || self.next_wake.is_some_and(|w| w <= now);
        if !due || self.held.is_empty() {
            return;
        }
        self.clock.set(now);
        self.released = false;
        self.next_wake = None;
        let held = std::mem::take(&mut self.held);
        for h in held {
            if h.wake.is_some_and(|w| w > now) {
                self.wake_at(h.wake);
                self.held.push_back(h);
                continue;
            }
            if !self.stale.is_empty()
                && self.kind(&h.request.action).disruptive
                && self
                    .stale
                    .contains(&(h.request.node.clone(), h.request.fault.clone()))
            {
                // Not on old evidence: it waits for the condition again.
                self.held.push_back(h);
                continue;
            }
            if let Some(d) = h.counted.as_ref().and_then(|k| self.domains.get_mut(k)) {
                d.waiting -= 1;
            }
            count_held(&mut self.held_nodes, &h.request.node, false);
            self.attempt(h.request, now, sizes, out, Some(h.outcome));
        }
    }

    /// The action's failure domain at every level.
    fn domains_of(&self, r: &Intent) -> Vec<DomainKey> {
        self.levels
            .iter()
            .enumerate()
            .map(|(i, level)| {
                let value = level
                    .label
                    .as_deref()
                    .map_or("", |label| r.label(label).unwrap_or(""));
                (i, value.to_string())
            })
            .collect()
    }

    fn wake_at(&mut self, at: Option<Timestamp>) {
        if let Some(at) = at {
            self.next_wake = Some(self.next_wake.map_or(at, |w| w.min(at)));
        }
    }

    /// Budget, rate limits, breaker, then dispatch or dry-run. A held-back
    /// action is queued; a retry refused again for the same reason is not
    /// reported again.
    fn attempt(
        &mut self,
        mut request: Intent,
        now: Timestamp,
        sizes: &dyn DomainSizes,
        out: &mut Vec<Decision>,
        previously: Option<Outcome>,
    ) {
        if !self.running.is_empty() && self.running.contains_key(&request.key()) {
            return; // already with its executor (asked again after a restart)
        }
        if !self.actions.contains_key(&request.action) {
            let reason = format!(
                "unknown action {:?}: define [actions.{}] or use a built-in action ({})",
                request.action,
                request.action,
                BUILT_IN.join(", ")
            );
            out.push(decision(&request, now, Outcome::Rejected, Some(reason)));
            self.recovered_one(&request, now);
            return;
        }
        let kind = self.kind(&request.action);
        if request.domain && (kind.disruptive || kind.restores) {
            let reason = format!(
                "{} is a failure domain (a cluster-wide alert), not a node: {} acts on one node; \
                 notify or ticket instead",
                request.node, request.action
            );
            out.push(decision(&request, now, Outcome::Rejected, Some(reason)));
            self.recovered_one(&request, now);
            return;
        }
        if let Some(other) = self.still_needed(&request) {
            let reason = format!(
                "{} is still under remediation for {other}: {} would put it back in service too early",
                request.node, request.action
            );
            out.push(decision(&request, now, Outcome::Rejected, Some(reason)));
            self.recovered_one(&request, now);
            return;
        }
        let retry = previously.is_some();
        let mut counted = None;
        // Each try meets the guards afresh; an approval given stays.
        let mut met = std::mem::take(&mut request.why.guards);
        met.retain(|m| matches!(m, Met::Approval { .. }));
        let refusal = self
            .check_hold(&request, &mut met)
            .or_else(|| self.check_settle(&request, now, &mut met))
            .or_else(|| {
                self.check_budget(&request, now, sizes, retry, &mut met)
                    .map(|(refusal, domain)| {
                        counted = Some(domain);
                        refusal
                    })
            })
            .or_else(|| self.check_rates(&request, &mut met))
            .or_else(|| self.check_breaker(&request, now, &mut met));
        request.why.guards = met;
        if let Some((outcome, reason, wake)) = refusal {
            if previously != Some(outcome) {
                let mut d = decision(&request, now, outcome, Some(reason));
                // When a quota or breaker lets it try again (a restart waits as long).
                d.retry_at = wake.filter(|_| outcome != Outcome::BudgetExhausted);
                out.push(d);
            }
            if let Some(d) = counted.as_ref().and_then(|k| self.domains.get_mut(k)) {
                d.waiting += 1;
            }
            self.wake_at(wake);
            count_held(&mut self.held_nodes, &request.node, true);
            self.held.push_back(Held {
                request,
                wake,
                outcome,
                counted,
            });
            return;
        }
        if self.config.dry_run {
            request.why.guards.push(Met::DryRun);
            out.push(decision(&request, now, Outcome::DryRun, None));
            self.passed(&request, now);
            return;
        }
        let job = Job {
            id: request.key(),
            executor: request.action.clone(),
            at: now,
            intent: request,
            attempt: 0,
            retry_at: None,
            failing_since: None,
        };
        self.passed(&job.intent, now);
        self.in_flight(&job.intent, true);
        self.outbox.push(job.clone());
        self.running.insert(job.id.clone(), job);
    }

    /// A disruptive repair's job went to its executor (`true`) or is done
    /// with it (`false`): `max_in_flight` counts it in each of its domains.
    fn in_flight(&mut self, r: &Intent, started: bool) {
        if r.trigger != Trigger::Remedy || !self.kind(&r.action).disruptive {
            return;
        }
        for key in self.domains_of(r) {
            let d = self.domains.entry(key).or_default();
            if started {
                d.in_flight += 1;
            } else {
                d.in_flight = d.in_flight.saturating_sub(1);
                self.released = true;
            }
        }
    }

    /// For a restoring action (`uncordon`): another fault that still keeps
    /// the node under remediation.
    fn still_needed(&self, r: &Intent) -> Option<String> {
        if r.trigger != Trigger::Recover || !self.kind(&r.action).restores {
            return None;
        }
        let node = self.remediating.get(&r.node)?;
        node.faults.iter().filter(|f| **f != r.fault).min().cloned()
    }

    fn executor(&self, action: &str) -> &str {
        self.actions
            .get(action)
            .map_or("log", |a| a.executor.as_str())
    }

    fn kind(&self, action: &str) -> ActionKind {
        self.actions
            .get(action)
            .map_or_else(ActionKind::default, |a| a.kind)
    }

    /// The breaker of the executor instance of `action`.
    fn breaker(&mut self, action: &str) -> &mut Breaker {
        let config = self.config.breaker;
        self.breakers
            .entry(action.to_string())
            .or_insert_with(|| Breaker::new(config))
    }

    /// A common cause open in one of the node's domains holds its
    /// disruptive repairs (`[[correlate]] hold`).
    fn check_hold(&self, r: &Intent, met: &mut Vec<Met>) -> Option<Refusal> {
        if self.holds.is_empty() || r.trigger != Trigger::Remedy || !self.kind(&r.action).disruptive
        {
            return None;
        }
        let ((label, value), fault) = self
            .holds
            .iter()
            .find(|((label, value), _)| r.label(label) == Some(value.as_str()))?;
        let reason = format!(
            "{label} {value}: common cause {fault} is open; held until it resolves or an operator \
             releases it (POST /v1/holds/{label}/{value}/release)"
        );
        met.push(Met::Hold {
            label: label.clone(),
            value: value.clone(),
            cause: fault.clone(),
        });
        Some((Outcome::HeldCommonCause, reason, None))
    }

    /// `settle`: a disruptive repair of a node whose fault opened less than
    /// `settle` ago waits until then, so that a common cause in its domain
    /// can show first (and hold it).
    fn check_settle(&self, r: &Intent, now: Timestamp, met: &mut Vec<Met>) -> Option<Refusal> {
        if self.config.settle.is_empty()
            || r.trigger != Trigger::Remedy
            || !self.kind(&r.action).disruptive
        {
            return None;
        }
        let (s, value) = self
            .config
            .settle
            .iter()
            .filter(|s| s.covers(&r.fault) && s.wait.0 > 0)
            .find_map(|s| r.label(&s.label).map(|v| (s, v)))?;
        let until = r.opened.add(s.wait);
        if now >= until {
            return None;
        }
        met.push(Met::Settle {
            label: s.label.clone(),
            value: value.to_string(),
            until,
        });
        let reason = format!(
            "{} {value}: waiting until {until} (settle {}) for a common cause to show before \
             acting on one node",
            s.label, s.wait
        );
        Some((Outcome::HeldCommonCause, reason, Some(until)))
    }

    /// A common cause opened (`hold`) or resolved in `label = value`.
    pub fn hold(&mut self, label: &str, value: &str, fault: &str, hold: bool) {
        let key = (label.to_string(), value.to_string());
        if hold {
            self.holds.insert(key, fault.to_string());
        } else if self.holds.remove(&key).is_some() {
            self.released = true;
        }
    }

    /// An operator releases the hold on `label = value`: its held repairs
    /// go on through the other guards. False if there is none.
    pub fn release_hold(&mut self, label: &str, value: &str) -> bool {
        let found = self
            .holds
            .remove(&(label.to_string(), value.to_string()))
            .is_some();
        self.released |= found;
        found
    }

    /// The holds in force: (label, value, common cause).
    pub fn holds(&self) -> Vec<(String, String, String)> {
        self.holds
            .iter()
            .map(|((l, v), f)| (l.clone(), v.clone(), f.clone()))
            .collect()
    }

    /// Every level's budget for a disruptive repair of a node not yet
    /// under remediation, outermost first: the first domain it does not
    /// fit names itself and its numbers (and is where the action waits).
    fn check_budget(
        &mut self,
        r: &Intent,
        now: Timestamp,
        sizes: &dyn DomainSizes,
        retry: bool,
        met: &mut Vec<Met>,
    ) -> Option<(Refusal, DomainKey)> {
        if self.levels.is_empty()
            || r.trigger != Trigger::Remedy
            || !self.kind(&r.action).disruptive
        {
            return None;
        }
        if self.remediating.contains_key(&r.node) {
            return None; // already out of service: no further budget needed
        }
        let recovery = self.config.storm_recovery;
        for key in self.domains_of(r) {
            let level = &self.levels[key.0];
            let name = level.name(&key.1);
            let known = match &level.label {
                Some(label) => sizes.known(label, &key.1),
                None => sizes.all(),
            }
            .max(1);
            let (budget, max_in_flight) = (level.max_unhealthy, level.max_in_flight);
            if budget.is_none() && max_in_flight.is_none() {
                continue;
            }
            let d = self.domains.entry(key.clone()).or_default();
            met.push(Met::Budget {
                level: name.clone(),
                under: d.nodes.len(),
                known,
                allows: budget.map(|b| b.limit(known)),
                in_flight: max_in_flight.map(|_| d.in_flight),
                max_in_flight,
                pass: true,
            });
            let mut refuse = |refusal: Refusal| {
                if let Some(Met::Budget { pass, .. }) = met.last_mut() {
                    *pass = false;
                }
                Some((refusal, key.clone()))
            };
            if let Some(budget) = budget {
                let limit = budget.limit(known);
                if d.nodes.len() >= limit {
                    d.under_since = None;
                    let reason = format!(
                        "{name}: {} of {known} known nodes under remediation, max_unhealthy {budget} allows {limit}",
                        d.nodes.len()
                    );
                    return refuse((Outcome::BudgetExhausted, reason, None));
                }
            }
            if let Some(max) = max_in_flight {
                if d.in_flight >= max as usize {
                    let reason = format!(
                        "{name}: {} disruptive actions in flight, max_in_flight {max}",
                        d.in_flight
                    );
                    return refuse((Outcome::BudgetExhausted, reason, None));
                }
            }
            if !retry && d.waiting > 0 {
                let reason = format!(
                    "{name}: {} actions held back by the budget go first",
                    d.waiting
                );
                return refuse((Outcome::BudgetExhausted, reason, None));
            }
            if retry {
                if let Some(since) = d.under_since {
                    let resume = since.add(recovery);
                    if now < resume {
                        let reason = format!(
                            "{name} was over budget; held-back actions resume after {} under it (storm_recovery), at {resume}",
                            show(recovery)
                        );
                        return refuse((Outcome::BudgetExhausted, reason, Some(resume)));
                    }
                }
            }
        }
        None
    }

    /// Per-domain quota, then fleet-wide: an action takes a token from
    /// each or from none. Each is tested first on the state kept beside
    /// governor (governor cannot test without taking), so a refusal by one
    /// never spends the other's token, and over any window the passes of
    /// `N/period` stay within N + window/period.
    fn check_rates(
        &mut self,
        r: &Intent,
        met: &mut Vec<Met>,
    ) -> Option<(Outcome, String, Option<Timestamp>)> {
        let t0 = self.clock.nanos();
        let a = &self.actions[&r.action];
        let mut quotas: smallvec::SmallVec<[(QuotaKey, Rate, String); 2]> =
            smallvec::SmallVec::new();
        if let (Some((label, rate)), true) = (&a.per, self.domain_limits.contains_key(&r.action)) {
            let value = r.label(label).unwrap_or("").to_string();
            let name = format!("{} per {label} ({label} {value})", r.action);
            quotas.push(((r.action.clone(), Some(value)), *rate, name));
        }
        if let (Some(rate), true) = (a.rate, self.fleet_limits.contains_key(&r.action)) {
            quotas.push((
                (r.action.clone(), None),
                rate,
                format!("{} fleet-wide", r.action),
            ));
        }
        // A level's rate counts every disruptive repair in its domains.
        if r.trigger == Trigger::Remedy && a.kind.disruptive {
            for (i, value) in self.domains_of(r) {
                let level = &self.levels[i];
                if let Some(rate) = level.rate {
                    let name = format!("disruptive actions in {}", level.name(&value));
                    quotas.push(((level.scope(), Some(value)), rate, name));
                }
            }
        }
        // A quota that would refuse answers first, and nothing is taken.
        let refusing = quotas
            .iter()
            .position(|(key, rate, _)| !rate.conforms(self.tats.get(key).copied(), t0));
        let order: smallvec::SmallVec<[usize; 2]> = match refusing {
            Some(i) => smallvec::smallvec![i],
            None => (0..quotas.len()).collect(),
        };
        for i in order {
            let (key, rate, name) = &quotas[i];
            let checked = self.limiter_check(key, None);
            match checked {
                Ok(_) => {
                    let tat = rate.passed(self.tats.get(key).copied(), t0);
                    self.tats.insert(key.clone(), tat);
                    self.tats_changed.insert(key.clone());
                    met.push(Met::Quota {
                        quota: name.clone(),
                        rate: rate.to_string(),
                        left: rate.left(Some(tat), t0),
                        refill_at: rate
                            .refill_at(Some(tat), t0)
                            .map(|n| rate::EventInstant::of_nanos(n).timestamp()),
                        pass: true,
                    });
                }
                Err(refused) => {
                    met.push(Met::Quota {
                        quota: name.clone(),
                        rate: rate.to_string(),
                        left: 0,
                        refill_at: Some(rate::retry_at(&refused)),
                        pass: false,
                    });
                    return Some(rate_limited(name.clone(), Some(*rate), &refused));
                }
            }
        }
        None
    }

    /// Takes one token (or `n`) from the limiter of quota `key`.
    fn limiter_check(
        &self,
        key: &QuotaKey,
        n: Option<NonZeroU32>,
    ) -> Result<(), governor::NotUntil<rate::EventInstant>> {
        let n = n.unwrap_or(NonZeroU32::MIN);
        let level = self.levels.iter().position(|l| l.has_scope(&key.0));
        let checked = match (&key.1, level) {
            (Some(value), Some(i)) => self.level_limits[i]
                .as_ref()
                .map(|l| l.check_key_n(value, n)),
            (Some(value), None) => self
                .domain_limits
                .get(&key.0)
                .map(|(_, l)| l.check_key_n(value, n)),
            (None, _) => self.fleet_limits.get(&key.0).map(|l| l.check_n(n)),
        };
        match checked {
            Some(Ok(result)) => result,
            // More than the burst, or no such limiter: nothing to take.
            Some(Err(_)) | None => Ok(()),
        }
    }

    /// The quotas whose state changed since the last call: (action, domain
    /// value or `None` for fleet-wide, state in nanoseconds), to journal.
    pub fn take_quotas(&mut self) -> Vec<(String, Option<String>, u64)> {
        let mut out: Vec<_> = self
            .tats_changed
            .drain()
            .filter_map(|key| self.tats.get(&key).map(|&tat| (key.0, key.1, tat)))
            .collect();
        out.sort();
        out
    }

    /// Puts back quotas as they were before a restart (from
    /// [`Guards::take_quotas`], journaled), as of `now`: an emptied quota
    /// stays empty and refills when it would have. Call it first, on a
    /// fresh chain (its clock is set on the way, never past `now`).
    pub fn restore_quotas(&mut self, quotas: Vec<(String, Option<String>, u64)>, now: Timestamp) {
        let now = rate::nanos_of(now);
        // governor's state is set only by calls: from a full bucket, `n`
        // calls at time `c` leave it at `c + n * interval`, so that is
        // where the clock is put, earliest first (it never runs backwards).
        let mut calls: Vec<(u64, NonZeroU32, QuotaKey, u64)> = Vec::new();
        // A quota given twice: its later state counts.
        let last: FxHashMap<QuotaKey, u64> = quotas
            .into_iter()
            .map(|(action, domain, tat)| ((action, domain), tat))
            .collect();
        for ((action, domain), tat) in last {
            let level = self.levels.iter().find(|l| l.has_scope(&action));
            let rate = match (level, self.actions.get(&action), &domain) {
                (Some(level), _, _) => level.rate,
                (None, Some(a), Some(_)) => a.per.as_ref().map(|p| p.1),
                (None, Some(a), None) => a.rate,
                // The action or level is no longer configured.
                (None, None, _) => None,
            };
            let Some(rate) = rate else { continue };
            if tat <= now {
                continue; // refilled by now: a full bucket
            }
            let step = rate.interval().max(1);
            let n = (tat - now)
                .div_ceil(step)
                .clamp(1, u64::from(rate.count.get()));
            let at = tat.saturating_sub(n * step);
            let n = NonZeroU32::new(n as u32).expect("at least one call");
            calls.push((at, n, (action, domain), tat));
        }
        calls.sort();
        for (at, n, key, tat) in calls {
            self.clock.set_nanos(at);
            if self.limiter_check(&key, Some(n)).is_ok() {
                self.tats.insert(key, tat);
            }
        }
    }

    fn check_breaker(
        &mut self,
        r: &Intent,
        now: Timestamp,
        met: &mut Vec<Met>,
    ) -> Option<(Outcome, String, Option<Timestamp>)> {
        if self.config.dry_run {
            return None; // nothing is executed, so nothing can fail
        }
        let executor = self.executor(&r.action).to_string();
        let breaker = self.breaker(&r.action);
        // Asking moves an open breaker whose time is up to half-open.
        let permit = breaker.permit();
        let state = breaker.state();
        match permit {
            Ok(()) => {
                met.push(Met::Breaker {
                    executor,
                    state: state.to_string(),
                    since: None,
                    until: None,
                    pass: true,
                });
                None
            }
            Err(left) => {
                let until = now.add(Duration(left.as_millis().min(i64::MAX as u128) as i64));
                let open = state != "half_open";
                let since = open.then(|| {
                    let interval = breaker.open_interval().as_millis().min(i64::MAX as u128);
                    Timestamp(until.0 - interval as i64)
                });
                met.push(Met::Breaker {
                    executor: executor.clone(),
                    state: if open { "open" } else { state }.to_string(),
                    since,
                    until: Some(until),
                    pass: false,
                });
                Some((
                    Outcome::CircuitOpen,
                    format!(
                        "executor {executor} of {}: circuit open after repeated failures; half-open at {until}",
                        r.action
                    ),
                    Some(until),
                ))
            }
        }
    }

    /// An action passed (executed or dry-run): budget bookkeeping.
    fn passed(&mut self, r: &Intent, now: Timestamp) {
        match r.trigger {
            Trigger::Remedy if !self.levels.is_empty() && self.kind(&r.action).disruptive => {
                if !self.remediating.contains_key(&r.node) {
                    let domains = self.domains_of(r);
                    for key in &domains {
                        let d = self.domains.entry(key.clone()).or_default();
                        d.nodes.insert(r.node.clone());
                    }
                    let node = Remediating {
                        domains,
                        faults: FxHashSet::default(),
                    };
                    self.remediating.insert(r.node.clone(), node);
                }
                if let Some(node) = self.remediating.get_mut(&r.node) {
                    node.faults.insert(r.fault.clone());
                }
            }
            Trigger::Remedy => {}
            Trigger::Recover => self.recovered_one(r, now),
        }
    }

    /// One `on_resolve` action is done with (passed, silenced or rejected).
    fn recovered_one(&mut self, r: &Intent, now: Timestamp) {
        if r.trigger != Trigger::Recover {
            return;
        }
        let key = (r.node.clone(), r.fault.clone());
        let done = match self.recovering.get_mut(&key) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if done {
            self.recovering.remove(&key);
            self.release(&r.node, &r.fault, now);
        }
    }

    /// The node's fault no longer keeps it under remediation.
    fn release(&mut self, node: &str, fault: &str, now: Timestamp) {
        let Some(state) = self.remediating.get_mut(node) else {
            return;
        };
        state.faults.remove(fault);
        if !state.faults.is_empty() {
            return;
        }
        let Some(state) = self.remediating.remove(node) else {
            return;
        };
        for key in state.domains {
            if let Some(d) = self.domains.get_mut(&key) {
                d.nodes.remove(node);
                if d.under_since.is_none() {
                    d.under_since = Some(now);
                }
            }
        }
        self.released = true;
    }
}

/// One more (`true`) or one fewer held action of `node`. A count that
/// drops to zero stays until the node's fault resolves, so a retry held
/// again allocates nothing.
fn count_held(counts: &mut FxHashMap<String, u32>, node: &str, more: bool) {
    match (counts.get_mut(node), more) {
        (Some(n), true) => *n += 1,
        (Some(n), false) => *n = n.saturating_sub(1),
        (None, true) => {
            counts.insert(node.to_string(), 1);
        }
        (None, false) => {}
    }
}

/// A rate-limit refusal: which quota, its rate, and when it refills.
fn rate_limited(
    quota: String,
    rate: Option<Rate>,
    refused: &governor::NotUntil<rate::EventInstant>,
) -> (Outcome, String, Option<Timestamp>) {
    let at = rate::retry_at(refused);
    let rate = rate.map_or_else(String::new, |r| r.to_string());
    (
        Outcome::RateLimited,
        format!("{quota}: {rate}; next at {at}"),
        Some(at),
    )
}

fn show(d: Duration) -> String {
    if d.0 % 1000 == 0 {
        format!("{}s", d.0 / 1000)
    } else {
        format!("{}ms", d.0)
    }
}

fn decision(r: &Intent, now: Timestamp, outcome: Outcome, reason: Option<String>) -> Decision {
    let mut d = Decision::action(now, &r.node, &r.fault, &r.action, outcome, reason);
    d.why = Some(r.why.clone());
    d.params.clone_from(&r.params);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_engine::Why;

    struct Sizes(usize);

    impl DomainSizes for Sizes {
        fn known(&self, _label: &str, _value: &str) -> usize {
            self.0
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp(1_800_000_000_000 + secs * 1000)
    }

    fn req(node: &str, action: &str) -> Intent {
        Intent {
            domain: false,
            at: t(0),
            node: node.into(),
            fault: "memory_failure".into(),
            opened: t(0),
            reason: None,
            action: action.into(),
            labels: vec![
                ("cluster".into(), "c1".into()),
                ("rack".into(), format!("r-{node}")),
            ],
            trigger: Trigger::Remedy,
            approval: false,
            why: Default::default(),
            params: Default::default(),
        }
    }

    fn recover(node: &str, action: &str) -> Intent {
        Intent {
            trigger: Trigger::Recover,
            ..req(node, action)
        }
    }

    fn guards(config: GuardConfig, actions: &[(&str, ActionGuards)]) -> Guards {
        let actions = actions
            .iter()
            .map(|(n, a)| (n.to_string(), a.clone()))
            .collect();
        Guards::new(config, actions)
    }

    fn budget(b: Budget) -> GuardConfig {
        GuardConfig {
            max_unhealthy: Some(b),
            ..GuardConfig::default()
        }
    }

    fn outcomes(out: &[Decision]) -> Vec<(String, Outcome)> {
        out.iter()
            .map(|d| (d.node.clone(), d.outcome.unwrap()))
            .collect()
    }

    fn pairs(list: &[(&str, Outcome)]) -> Vec<(String, Outcome)> {
        list.iter().map(|(n, o)| (n.to_string(), *o)).collect()
    }

    #[test]
    fn a_silence_holds_matching_actions_and_nothing_else() {
        let mut g = guards(GuardConfig::default(), &[]);
        g.silence(Silence {
            id: 0,
            node: Some("a".into()),
            fault: None,
            labels: vec![],
            until: t(60),
            comment: Some("reboot test".into()),
            all: false,
        });
        let mut out = Vec::new();
        g.submit(req("a", "ticket"), t(1), &Sizes(100), &mut out);
        g.submit(req("b", "ticket"), t(1), &Sizes(100), &mut out);
        g.submit(req("a", "ticket"), t(60), &Sizes(100), &mut out);
        assert_eq!(
            outcomes(&out),
            pairs(&[
                ("a", Outcome::Silenced),
                ("b", Outcome::DryRun),
                ("a", Outcome::DryRun)
            ])
        );
        assert!(out[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("silence 1 until"));
        assert!(out[0].reason.as_deref().unwrap().contains("reboot test"));
        assert_eq!(g.held(), 0, "a silenced action is not retried");
    }

    #[test]
    fn approval_waits_then_goes_on_or_is_rejected() {
        let mut g = guards(GuardConfig::default(), &[]);
        let mut out = Vec::new();
        let ask = |node| Intent {
            approval: true,
            ..req(node, "reinstall")
        };
        g.submit(ask("a"), t(0), &Sizes(100), &mut out);
        g.submit(ask("b"), t(0), &Sizes(100), &mut out);
        assert_eq!(
            outcomes(&out),
            pairs(&[
                ("a", Outcome::AwaitingApproval),
                ("b", Outcome::AwaitingApproval)
            ])
        );
        assert!(out[0].reason.as_deref().unwrap().starts_with("approval 1"));
        assert_eq!(g.awaiting().map(|(id, _)| id).collect::<Vec<_>>(), [1, 2]);
        out.clear();
        assert!(g.approve(1, t(5), &Sizes(100), &mut out));
        assert!(g.reject(2, t(6), &mut out));
        assert!(
            !g.approve(2, t(7), &Sizes(100), &mut out),
            "already decided"
        );
        assert_eq!(
            outcomes(&out),
            pairs(&[("a", Outcome::DryRun), ("b", Outcome::Rejected)])
        );
        assert_eq!(out[0].ts, t(5));
    }

    #[test]
    fn the_budget_holds_actions_back_and_releases_them_when_a_node_recovers() {
        // 20 known nodes, 10%: two may be under remediation at once.
        let mut g = guards(budget(Budget::Percent(10.0)), &[]);
        let sizes = Sizes(20);
        let mut out = Vec::new();
        for node in ["a", "b", "c"] {
            g.submit(req(node, "cordon"), t(0), &sizes, &mut out);
            g.submit(req(node, "ticket"), t(0), &sizes, &mut out);
        }
        assert_eq!(
            outcomes(&out),
            pairs(&[
                ("a", Outcome::DryRun),
                ("a", Outcome::DryRun),
                ("b", Outcome::DryRun),
                ("b", Outcome::DryRun),
                ("c", Outcome::BudgetExhausted),
                ("c", Outcome::DryRun), // a ticket takes nothing out of service
            ])
        );
        assert_eq!(
            out[4].reason.as_deref().unwrap(),
            "cluster c1: 2 of 20 known nodes under remediation, max_unhealthy 10% allows 2"
        );
        assert_eq!(g.under_remediation("c1"), 2);
        // Nothing frees: ticks stay quiet.
        out.clear();
        g.tick(t(10), &sizes, &mut out);
        assert!(out.is_empty());
        // a recovers; its uncordon passes, so a leaves the budget and c goes.
        g.resolved("a", "memory_failure", 1, t(20));
        assert_eq!(
            g.under_remediation("c1"),
            2,
            "still cordoned until uncordon passes"
        );
        g.submit(recover("a", "uncordon"), t(20), &sizes, &mut out);
        g.tick(t(21), &sizes, &mut out);
        assert_eq!(
            outcomes(&out),
            pairs(&[("a", Outcome::DryRun), ("c", Outcome::DryRun)])
        );
        assert_eq!(out[1].ts, t(21), "the retry is a new decision");
        assert_eq!(g.under_remediation("c1"), 2);
        assert_eq!(g.held(), 0);
    }

    /// A transient failure is tried again with backoff until `retry_for`
    /// has passed since the first try; each try is a `failed` decision with
    /// `retry_at` but the last; a permanent failure is final at once.
    #[test]
    fn transient_failures_are_retried_until_retry_for_and_permanent_ones_are_final() {
        let config = GuardConfig {
            dry_run: false,
            ..GuardConfig::default()
        };
        let cordon = ActionGuards {
            executor: "kubernetes".into(),
            kind: ActionKind::of_op("cordon"),
            retry_for: Duration::from_secs(20),
            ..ActionGuards::default()
        };
        let mut g = guards(
            config,
            &[
                ("cordon", cordon.clone()),
                (
                    "ticket",
                    ActionGuards {
                        executor: "http".into(),
                        ..cordon
                    },
                ),
            ],
        );
        let sizes = Sizes(100);
        let mut out = Vec::new();
        g.submit(req("a", "cordon"), t(0), &sizes, &mut out);
        let job = g.take_jobs().remove(0);
        let refused = || Err(ExecError::Transient("connection refused".into()));
        let retried = g.finished(&job.id, refused(), t(1), &mut out);
        let Some(Finished::Retry(again)) = retried else {
            panic!("a transient failure is retried: {retried:?}");
        };
        assert_eq!((again.attempt, again.retry_at), (1, Some(t(6))), "5s later");
        assert_eq!(out[0].outcome, Some(Outcome::Failed));
        assert_eq!(out[0].retry_at, Some(t(6)));
        assert!(
            out[0].to_json().contains("\"retry_at\":\""),
            "{}",
            out[0].to_json()
        );
        g.tick(t(5), &sizes, &mut out);
        assert!(g.take_jobs().is_empty(), "not before retry_at");
        g.tick(t(6), &sizes, &mut out);
        let second = g.take_jobs();
        assert_eq!(second.len(), 1);
        assert_eq!(
            (second[0].id.as_str(), second[0].attempt),
            (job.id.as_str(), 1)
        );
        // Second failure at 7s: next try at 17s (10s), still within 20s.
        let retried = g.finished(&job.id, refused(), t(7), &mut out);
        assert!(matches!(retried, Some(Finished::Retry(_))));
        assert_eq!(out[1].retry_at, Some(t(17)));
        g.tick(t(17), &sizes, &mut out);
        assert_eq!(g.take_jobs().len(), 1);
        // Third at 18s: the next (20s later) would be past 1s + retry_for: final.
        assert_eq!(
            g.finished(&job.id, refused(), t(18), &mut out),
            Some(Finished::Done)
        );
        assert_eq!(out[2].retry_at, None);
        assert_eq!(
            out[2].reason.as_deref(),
            Some("connection refused (gave up after 3 tries over 17s)")
        );
        // A permanent failure is final at once.
        g.submit(req("b", "ticket"), t(30), &sizes, &mut out);
        let job = g.take_jobs().remove(0);
        let forbidden = Err(ExecError::Permanent("HTTP 403 Forbidden".into()));
        assert_eq!(
            g.finished(&job.id, forbidden, t(31), &mut out),
            Some(Finished::Done)
        );
        assert_eq!(
            (out[3].outcome, out[3].retry_at),
            (Some(Outcome::Failed), None)
        );
        g.tick(t(100), &sizes, &mut out);
        assert!(g.take_jobs().is_empty());
    }

    /// A cordon held by the budget whose fault's evidence went stale does
    /// not go when the budget frees: it waits until the condition is
    /// asserted again. A ticket is not disruptive and does not wait.
    #[test]
    fn a_held_disruptive_action_of_a_stale_fault_waits_for_fresh_evidence() {
        let mut g = guards(budget(Budget::Count(1)), &[]);
        let sizes = Sizes(20);
        let mut out = Vec::new();
        g.submit(req("a", "cordon"), t(0), &sizes, &mut out);
        g.submit(req("b", "cordon"), t(0), &sizes, &mut out);
        assert_eq!(
            outcomes(&out),
            pairs(&[("a", Outcome::DryRun), ("b", Outcome::BudgetExhausted)])
        );
        g.stale("b", "memory_failure", true);
        // a recovers: the budget frees, but b's evidence is old.
        g.resolved("a", "memory_failure", 0, t(10));
        out.clear();
        g.tick(t(11), &sizes, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(g.held(), 1);
        // b's alert is repeated: fresh again, its cordon goes.
        g.stale("b", "memory_failure", false);
        g.tick(t(12), &sizes, &mut out);
        assert_eq!(outcomes(&out), pairs(&[("b", Outcome::DryRun)]));
        assert_eq!(g.held(), 0);
    }

    #[test]
    fn a_count_budget_and_a_held_action_dropped_when_its_fault_resolves() {
        let mut g = guards(budget(Budget::Count(1)), &[]);
        let mut out = Vec::new();
        g.submit(req("a", "cordon"), t(0), &Sizes(1000), &mut out);
        g.submit(req("b", "cordon"), t(0), &Sizes(1000), &mut out);
        assert_eq!(g.held(), 1);
        g.resolved("b", "memory_failure", 0, t(5));
        assert_eq!(g.held(), 0, "b's fault is gone: nothing to retry");
        g.resolved("a", "memory_failure", 0, t(6));
        out.clear();
        g.tick(t(7), &Sizes(1000), &mut out);
        assert!(out.is_empty());
        g.submit(req("c", "cordon"), t(8), &Sizes(1000), &mut out);
        assert_eq!(outcomes(&out), pairs(&[("c", Outcome::DryRun)]));
    }

    #[test]
    fn after_a_storm_held_actions_wait_out_storm_recovery() {
        let mut g = guards(
            GuardConfig {
                max_unhealthy: Some(Budget::Count(1)),
                storm_recovery: Duration::from_secs(300),
                ..GuardConfig::default()
            },
            &[],
        );
        let sizes = Sizes(1000);
        let mut out = Vec::new();
        g.submit(req("a", "cordon"), t(0), &sizes, &mut out);
        g.submit(req("b", "cordon"), t(1), &sizes, &mut out);
        g.resolved("a", "memory_failure", 0, t(100));
        out.clear();
        g.tick(t(101), &sizes, &mut out);
        assert_eq!(
            outcomes(&out),
            pairs(&[]),
            "same refusal, not reported again"
        );
        g.submit(req("c", "cordon"), t(102), &sizes, &mut out);
        assert_eq!(outcomes(&out), pairs(&[("c", Outcome::BudgetExhausted)]));
        assert!(out[0].reason.as_deref().unwrap().contains("go first"));
        out.clear();
        g.tick(t(399), &sizes, &mut out);
        assert!(out.is_empty());
        g.tick(t(400), &sizes, &mut out);
        // b goes; c is held again by the budget b now fills (already reported).
        assert_eq!(outcomes(&out), pairs(&[("b", Outcome::DryRun)]));
        assert_eq!(g.held(), 1);
    }

    /// Contract 11: every action decision says which guards it met, with
    /// their numbers: tokens left and the next refill of each quota, the
    /// breaker's state; the last guard of a held one is the one holding it.
    #[test]
    fn each_decision_says_which_guards_it_met_with_their_numbers() {
        let mut g = guards(
            GuardConfig {
                max_unhealthy: None,
                dry_run: false,
                ..GuardConfig::default()
            },
            &[(
                "cordon",
                ActionGuards {
                    executor: "kubernetes".into(),
                    kind: ActionKind::of_op("cordon"),
                    rate: Some("2/min".parse().unwrap()),
                    retry_for: RETRY_FOR,
                    ..ActionGuards::default()
                },
            )],
        );
        let sizes = Sizes(1000);
        let mut out = Vec::new();
        let mut ask = Intent {
            why: Box::new(Why {
                rule: Some("hardware/memory.rhai".into()),
                rule_hash: Some("0123456789ab".into()),
                rung: "actions".into(),
                guards: Vec::new(),
            }),
            ..req("a", "cordon")
        };
        for node in ["a", "b", "c"] {
            ask.node = node.into();
            g.submit(ask.clone(), t(0), &sizes, &mut out);
        }
        for job in g.take_jobs() {
            g.finished(&job.id, Ok(String::new()), t(1), &mut out);
        }
        let quota = |left, refill: i64, pass| Met::Quota {
            quota: "cordon fleet-wide".into(),
            rate: "2/min".into(),
            left,
            refill_at: Some(t(refill)),
            pass,
        };
        let breaker = Met::Breaker {
            executor: "kubernetes".into(),
            state: "closed".into(),
            since: None,
            until: None,
            pass: true,
        };
        let met: Vec<(String, Outcome, Vec<Met>)> = out
            .iter()
            .map(|d| {
                let why = d.why.as_deref().unwrap();
                assert_eq!(why.rule_hash.as_deref(), Some("0123456789ab"));
                assert_eq!(why.rung, "actions");
                (d.node.clone(), d.outcome.unwrap(), why.guards.clone())
            })
            .collect();
        assert_eq!(
            met,
            [
                (
                    "c".to_string(),
                    Outcome::RateLimited,
                    vec![quota(0, 30, false)]
                ),
                (
                    "a".into(),
                    Outcome::Executed,
                    vec![quota(1, 30, true), breaker.clone()]
                ),
                (
                    "b".into(),
                    Outcome::Executed,
                    vec![quota(0, 30, true), breaker]
                ),
            ]
        );
    }

    #[test]
    fn fleet_and_domain_rate_limits_hold_and_refill_in_event_time() {
        let mut g = guards(
            GuardConfig {
                max_unhealthy: None,
                ..GuardConfig::default()
            },
            &[(
                "cordon",
                ActionGuards {
                    executor: "kubernetes".into(),
                    kind: ActionKind::of_op("cordon"),
                    rate: Some("2/min".parse().unwrap()),
                    per: Some(("cluster".into(), "1/hour".parse().unwrap())),
                    retry_for: RETRY_FOR,
                },
            )],
        );
        let sizes = Sizes(1000);
        let mut out = Vec::new();
        let other = |node: &str| Intent {
            labels: vec![("cluster".into(), "c2".into())],
            ..req(node, "cordon")
        };
        g.submit(req("a", "cordon"), t(0), &sizes, &mut out);
        g.submit(req("b", "cordon"), t(0), &sizes, &mut out); // c1 used its hour
        g.submit(other("c"), t(0), &sizes, &mut out);
        g.submit(
            Intent {
                labels: vec![("cluster".into(), "c3".into())],
                ..req("d", "cordon")
            },
            t(0),
            &sizes,
            &mut out,
        ); // fleet-wide 2/min used up
        assert_eq!(
            outcomes(&out),
            pairs(&[
                ("a", Outcome::DryRun),
                ("b", Outcome::RateLimited),
                ("c", Outcome::DryRun),
                ("d", Outcome::RateLimited),
            ])
        );
        let reason = |i: usize| out[i].reason.clone().unwrap();
        assert!(
            reason(1).starts_with("cordon per cluster (cluster c1): 1/hour"),
            "{}",
            reason(1)
        );
        assert!(
            reason(3).starts_with("cordon fleet-wide: 2/min; next at"),
            "{}",
            reason(3)
        );
        out.clear();
        g.tick(t(29), &sizes, &mut out);
        assert!(out.is_empty());
        g.tick(t(30), &sizes, &mut out);
        assert_eq!(outcomes(&out), pairs(&[("d", Outcome::DryRun)]));
        out.clear();
        g.tick(t(3599), &sizes, &mut out);
        assert!(out.is_empty());
        g.tick(t(3600), &sizes, &mut out);
        assert_eq!(outcomes(&out), pairs(&[("b", Outcome::DryRun)]));
    }

    #[test]
    fn uncordon_waits_for_the_last_fault_keeping_the_node_out() {
        let mut g = guards(budget(Budget::Count(5)), &[]);
        let sizes = Sizes(100);
        let mut out = Vec::new();
        let disk = |mut r: Intent| {
            r.fault = "disk_failure".into();
            r
        };
        g.submit(req("a", "cordon"), t(0), &sizes, &mut out);
        g.submit(disk(req("a", "cordon")), t(1), &sizes, &mut out);
        g.resolved("a", "memory_failure", 1, t(2));
        g.submit(recover("a", "uncordon"), t(2), &sizes, &mut out);
        assert_eq!(out[2].outcome, Some(Outcome::Rejected));
        assert_eq!(
            out[2].reason.as_deref(),
            Some("a is still under remediation for disk_failure: uncordon would put it back in service too early")
        );
        assert_eq!(g.under_remediation("c1"), 1);
        g.resolved("a", "disk_failure", 1, t(3));
        g.submit(disk(recover("a", "uncordon")), t(3), &sizes, &mut out);
        assert_eq!(out[3].outcome, Some(Outcome::DryRun));
        assert_eq!(g.under_remediation("c1"), 0);
    }

    #[test]
    fn a_failing_executor_opens_its_breaker_and_recovers_half_open() {
        // The breaker runs on failsafe's clock, moved here in step with the
        // decisions' time.
        failsafe::clock::freeze(|clock| {
            let mut at = 0;
            let mut to = |secs: u64| {
                clock.advance(std::time::Duration::from_secs(secs - at));
                at = secs;
                t(secs as i64)
            };
            let mut g = Guards::new(
                GuardConfig {
                    max_unhealthy: None,
                    dry_run: false,
                    breaker: BreakerConfig {
                        failures: 2,
                        window: Duration::from_secs(60),
                        cooldown: Duration::from_secs(120),
                        max_cooldown: None,
                    },
                    ..GuardConfig::default()
                },
                BTreeMap::new(),
            );
            let sizes = Sizes(1000);
            let mut out = Vec::new();
            // Two jobs go out at once; nothing is decided until they report.
            g.submit(req("a", "cordon"), to(0), &sizes, &mut out);
            g.submit(req("b", "cordon"), to(1), &sizes, &mut out);
            assert!(out.is_empty());
            let jobs = g.take_jobs();
            assert_eq!(jobs.len(), 2);
            assert_eq!(
                jobs[0].executor, "cordon",
                "the executor instance of the action"
            );
            assert_eq!(jobs[0].id, format!("a/memory_failure/{}/cordon", t(0)));
            assert!(g.take_jobs().is_empty(), "a job is handed out once");
            let now = to(2);
            for j in &jobs {
                let failed = Err(ExecError::Permanent("API server said 403".into()));
                assert_eq!(
                    g.finished(&j.id, failed, now, &mut out),
                    Some(Finished::Done)
                );
            }
            assert!(g
                .finished(&jobs[0].id, Ok(String::new()), now, &mut out)
                .is_none());
            g.submit(req("c", "cordon"), to(3), &sizes, &mut out);
            assert_eq!(
                outcomes(&out),
                pairs(&[
                    ("a", Outcome::Failed),
                    ("b", Outcome::Failed),
                    ("c", Outcome::CircuitOpen)
                ])
            );
            assert_eq!(out[0].reason.as_deref(), Some("API server said 403"));
            let reason = out[2].reason.clone().unwrap();
            assert!(
                reason.contains("executor log of cordon: circuit open")
                    && reason.ends_with(&format!("half-open at {}", t(122))),
                "{reason}"
            );
            // Its why: open since the second failure (at 2 s), until 122 s.
            assert_eq!(
                out[2].why.as_deref().map(|w| w.guards.clone()),
                Some(vec![Met::Breaker {
                    executor: "log".into(),
                    state: "open".into(),
                    since: Some(t(2)),
                    until: Some(t(122)),
                    pass: false,
                }])
            );
            out.clear();
            g.tick(to(121), &sizes, &mut out);
            assert!(out.is_empty() && g.take_jobs().is_empty(), "still open");
            // Half-open: one trial goes out; while it runs, nothing else does.
            g.tick(to(123), &sizes, &mut out);
            let trial = g.take_jobs();
            assert_eq!(trial.len(), 1);
            g.submit(req("d", "cordon"), to(124), &sizes, &mut out);
            assert!(g.take_jobs().is_empty());
            let now = to(125);
            assert!(g
                .finished(&trial[0].id, Ok("node cordoned".into()), now, &mut out)
                .is_some());
            g.tick(now, &sizes, &mut out);
            assert_eq!(g.take_jobs().len(), 1, "closed again: d goes out");
            assert_eq!(
                outcomes(&out),
                pairs(&[("d", Outcome::CircuitOpen), ("c", Outcome::Executed)])
            );
            // d met the breaker half-open with its trial out; c went through it half-open.
            let breaker = |i: usize| match out[i].why.as_deref().map(|w| w.guards.as_slice()) {
                Some([Met::Breaker { state, pass, .. }]) => (state.clone(), *pass),
                other => panic!("{other:?}"),
            };
            assert_eq!(breaker(0), ("half_open".to_string(), false));
            assert_eq!(breaker(1), ("half_open".to_string(), true));
            assert_eq!(out[1].detail.as_deref(), Some("node cordoned"));
        });
    }

    #[test]
    fn a_restored_job_goes_out_again_and_is_not_asked_twice() {
        let mut g = Guards::new(
            GuardConfig {
                dry_run: false,
                ..GuardConfig::default()
            },
            BTreeMap::new(),
        );
        let sizes = Sizes(10);
        let mut out = Vec::new();
        let intent = req("a", "cordon");
        g.restore_job(Job {
            attempt: 0,
            retry_at: None,
            failing_since: None,
            id: intent.key(),
            executor: "kubernetes".into(),
            at: t(0),
            intent: intent.clone(),
        });
        assert_eq!(g.under_remediation("c1"), 1);
        g.submit(intent, t(1), &sizes, &mut out);
        assert!(out.is_empty());
        let jobs = g.take_jobs();
        assert_eq!(jobs.len(), 1, "the restored job only");
        assert_eq!(jobs[0].executor, "kubernetes");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    struct Known;

    impl DomainSizes for Known {
        fn known(&self, _: &str, value: &str) -> usize {
            if value == "c0" {
                40
            } else {
                7
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Open(u8, bool),
        Resolve(u8, bool),
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..24, any::<bool>()).prop_map(|(n, drain)| Op::Open(n, drain)),
            2 => (0u8..24, any::<bool>()).prop_map(|(n, u)| Op::Resolve(n, u)),
            1 => (0u16..400).prop_map(Op::Wait),
        ]
    }

    fn request(node: u8, action: &str, trigger: Trigger, at: Timestamp) -> Intent {
        Intent {
            domain: false,
            at,
            node: format!("n{node}"),
            fault: "disk_failure".into(),
            opened: at,
            reason: None,
            action: action.into(),
            labels: vec![("cluster".into(), format!("c{}", node % 2))],
            trigger,
            approval: false,
            why: Default::default(),
            params: Default::default(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever arrives in whatever order, no domain ever has more nodes
        /// under remediation than its budget.
        #[test]
        fn no_sequence_exceeds_a_domain_budget(
            ops in proptest::collection::vec(op(), 1..120),
            budget in prop_oneof![
                (1u32..4).prop_map(Budget::Count),
                (5u32..40).prop_map(|p| Budget::Percent(p as f64)),
            ],
            recovery in 0i64..120,
        ) {
            let mut g = Guards::new(
                GuardConfig {
                    max_unhealthy: Some(budget),
                    storm_recovery: Duration::from_secs(recovery),
                    ..GuardConfig::default()
                },
                [("uncordon".to_string(), ActionGuards {
                    executor: "log".into(),
                    kind: ActionKind::of_op("uncordon"),
                    rate: Some("3/min".parse().unwrap()),
                    per: None,
                    retry_for: RETRY_FOR,
                })].into_iter().collect(),
            );
            let mut now = Timestamp(1_800_000_000_000);
            let mut open = std::collections::BTreeSet::new();
            let mut out = Vec::new();
            for op in ops {
                now = now.add(Duration(1000));
                g.tick(now, &Known, &mut out);
                match op {
                    Op::Open(n, drain) => {
                        if open.insert(n) {
                            let action = if drain { "drain" } else { "cordon" };
                            g.submit(request(n, action, Trigger::Remedy, now), now, &Known, &mut out);
                            g.submit(request(n, "ticket", Trigger::Remedy, now), now, &Known, &mut out);
                        }
                    }
                    Op::Resolve(n, uncordon) => {
                        if open.remove(&n) {
                            g.resolved(&format!("n{n}"), "disk_failure", usize::from(uncordon), now);
                            if uncordon {
                                g.submit(request(n, "uncordon", Trigger::Recover, now), now, &Known, &mut out);
                            }
                        }
                    }
                    Op::Wait(s) => now = now.add(Duration::from_secs(i64::from(s))),
                }
                for (domain, known) in [("c0", 40), ("c1", 7)] {
                    prop_assert!(
                        g.under_remediation(domain) <= budget.limit(known),
                        "{domain}: {} under remediation, budget {budget} of {known}",
                        g.under_remediation(domain)
                    );
                }
            }
            // Every action passed, was refused with a reason, or is still held.
            for d in &out {
                let o = d.outcome.unwrap();
                prop_assert!(o == Outcome::DryRun || d.reason.is_some(), "{d:?}");
            }
        }
    }

    fn rated(fleet: &str, per_rack: &str) -> Guards {
        Guards::new(
            GuardConfig {
                dry_run: true,
                max_unhealthy: None,
                ..GuardConfig::default()
            },
            [(
                "cordon".to_string(),
                ActionGuards {
                    executor: "log".into(),
                    kind: ActionKind::of_op("cordon"),
                    rate: Some(fleet.parse().unwrap()),
                    per: Some(("rack".into(), per_rack.parse().unwrap())),
                    retry_for: RETRY_FOR,
                },
            )]
            .into_iter()
            .collect(),
        )
    }

    fn in_rack(node: u8, at: Timestamp) -> Intent {
        Intent {
            labels: vec![("rack".into(), format!("r{}", node % 4))],
            ..request(node, "cordon", Trigger::Remedy, at)
        }
    }

    /// Over every window between two passes, at most N + window/period passed.
    fn within_rate(passes: &[Timestamp], rate: Rate) -> Result<(), String> {
        for (i, first) in passes.iter().enumerate() {
            for (j, last) in passes.iter().enumerate().skip(i) {
                let window = (last.0 - first.0) as f64 / 1000.0;
                let allowed = f64::from(rate.count.get())
                    + window * f64::from(rate.count.get()) / rate.period_secs as f64;
                if (j - i + 1) as f64 > allowed + 1e-9 {
                    return Err(format!(
                        "{} passes within {window}s, {rate} allows {allowed}",
                        j - i + 1
                    ));
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        /// Rates as observed: fleet-wide and per-rack quotas together, over
        /// any window, never pass more than N + window/period (a refusal by
        /// one quota spends no token of the other).
        #[test]
        fn passes_never_exceed_a_rate_over_any_window(
            arrivals in proptest::collection::vec((0u8..40, 0u16..40), 1..150),
            fleet in 1u32..6,
            rack in 1u32..4,
        ) {
            let (fleet_rate, rack_rate) = (format!("{fleet}/min"), format!("{rack}/min"));
            let mut g = rated(&fleet_rate, &rack_rate);
            let mut now = Timestamp(1_800_000_000_000);
            let mut out = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut passed: Vec<(Timestamp, String)> = Vec::new();
            let collect = |out: &mut Vec<Decision>, passed: &mut Vec<(Timestamp, String)>| {
                for d in out.drain(..) {
                    if d.outcome == Some(Outcome::DryRun) {
                        let node: u8 = d.node[1..].parse().unwrap();
                        passed.push((d.ts, format!("r{}", node % 4)));
                    }
                }
            };
            for (node, gap) in arrivals {
                now = now.add(Duration::from_secs(i64::from(gap)));
                g.tick(now, &Known, &mut out);
                if seen.insert(node) {
                    g.submit(in_rack(node, now), now, &Known, &mut out);
                }
                collect(&mut out, &mut passed);
            }
            // Long enough for 40 nodes at 1/min.
            for _ in 0..200 {
                now = now.add(Duration::from_secs(15));
                g.tick(now, &Known, &mut out);
                collect(&mut out, &mut passed);
            }
            let all: Vec<Timestamp> = passed.iter().map(|p| p.0).collect();
            prop_assert!(within_rate(&all, fleet_rate.parse().unwrap()).is_ok(), "fleet: {:?}", within_rate(&all, fleet_rate.parse().unwrap()));
            for r in 0..4 {
                let name = format!("r{r}");
                let here: Vec<Timestamp> = passed.iter().filter(|p| p.1 == name).map(|p| p.0).collect();
                let check = within_rate(&here, rack_rate.parse().unwrap());
                prop_assert!(check.is_ok(), "{name}: {check:?}");
            }
            prop_assert_eq!(passed.len(), seen.len(), "every cordon passes in the end");
        }

        /// Quotas saved and put back into a fresh chain (a restart) decide
        /// every later action exactly as the chain that never stopped.
        #[test]
        fn restored_quotas_decide_as_if_never_stopped(
            arrivals in proptest::collection::vec((0u8..40, 0u16..30), 2..80),
            split in 1usize..80,
            fleet in 1u32..6,
            rack in 1u32..4,
        ) {
            let (fleet_rate, rack_rate) = (format!("{fleet}/min"), format!("{rack}/min"));
            let mut kept = rated(&fleet_rate, &rack_rate);
            let mut restarted = rated(&fleet_rate, &rack_rate);
            let mut saved = Vec::new();
            let mut now = Timestamp(1_800_000_000_000);
            let split = split.min(arrivals.len() - 1);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let mut before_split: Vec<Intent> = Vec::new();
            for (i, (node, gap)) in arrivals.iter().enumerate() {
                now = now.add(Duration::from_secs(i64::from(*gap)));
                // Distinct nodes each time: no budget, no held action carried over.
                let intent = in_rack(*node, now);
                let intent = Intent { node: format!("n{i}"), ..intent };
                if i < split {
                    kept.submit(intent.clone(), now, &Known, &mut a);
                    saved.extend(kept.take_quotas());
                    before_split.push(intent);
                    continue;
                }
                if i == split {
                    // What a restart does: quotas first, then the actions
                    // still held back, as the journal last saw them.
                    restarted.restore_quotas(saved.clone(), now);
                    for intent in &before_split {
                        let last = a.iter().rev().find(|d| d.node == intent.node).and_then(|d| d.outcome);
                        if let Some(last) = last {
                            restarted.restore(intent.clone(), last, now);
                        }
                    }
                }
                let before = (a.len(), b.len());
                kept.submit(intent.clone(), now, &Known, &mut a);
                restarted.submit(intent, now, &Known, &mut b);
                let (x, y) = (&a[before.0..], &b[before.1..]);
                prop_assert_eq!(
                    x.iter().map(|d| (d.outcome, d.reason.clone())).collect::<Vec<_>>(),
                    y.iter().map(|d| (d.outcome, d.reason.clone())).collect::<Vec<_>>()
                );
            }
        }
    }

    /// Known nodes: 60, in six racks of ten and two zones of thirty.
    struct Nested;

    impl DomainSizes for Nested {
        fn known(&self, label: &str, _: &str) -> usize {
            match label {
                "rack" => 10,
                "zone" => 30,
                _ => 60,
            }
        }
    }

    fn nested(node: u8, trigger: Trigger, action: &str, at: Timestamp) -> Intent {
        Intent {
            labels: vec![
                ("rack".into(), format!("r{}", node % 6)),
                ("zone".into(), format!("z{}", node % 2)),
            ],
            ..request(node, action, trigger, at)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]

        /// Nested levels: whatever storm arrives and whatever the budgets,
        /// no rack, zone or the fleet ever has more nodes under remediation
        /// than its level allows.
        #[test]
        fn no_storm_puts_any_level_over_its_budget(
            ops in proptest::collection::vec(op(), 1..150),
            rack in 1u32..4,
            zone in prop_oneof![(1u32..6).prop_map(Budget::Count), (5u32..30).prop_map(|p| Budget::Percent(p as f64))],
            fleet in prop_oneof![(1u32..9).prop_map(Budget::Count), (2u32..20).prop_map(|p| Budget::Percent(p as f64))],
            in_flight in proptest::option::of(1u32..3),
        ) {
            let levels = vec![
                Level { label: Some("rack".into()), max_unhealthy: Some(Budget::Count(rack)), max_in_flight: in_flight, rate: None },
                Level { label: Some("zone".into()), max_unhealthy: Some(zone), ..Level::default() },
                Level { label: None, max_unhealthy: Some(fleet), rate: Some("30/min".parse().unwrap()), ..Level::default() },
            ];
            let mut g = Guards::new(
                GuardConfig { max_unhealthy: None, levels, dry_run: true, ..GuardConfig::default() },
                BTreeMap::new(),
            );
            let mut now = Timestamp(1_800_000_000_000);
            let mut open = std::collections::BTreeSet::new();
            let mut out = Vec::new();
            for op in ops {
                now = now.add(Duration(1000));
                g.tick(now, &Nested, &mut out);
                match op {
                    Op::Open(n, drain) => {
                        let n = n % 60;
                        if open.insert(n) {
                            let action = if drain { "drain" } else { "cordon" };
                            g.submit(nested(n, Trigger::Remedy, action, now), now, &Nested, &mut out);
                        }
                    }
                    Op::Resolve(n, uncordon) => {
                        let n = n % 60;
                        if open.remove(&n) {
                            g.resolved(&format!("n{n}"), "disk_failure", usize::from(uncordon), now);
                            if uncordon {
                                g.submit(nested(n, Trigger::Recover, "uncordon", now), now, &Nested, &mut out);
                            }
                        }
                    }
                    Op::Wait(s) => now = now.add(Duration::from_secs(i64::from(s))),
                }
                for r in 0..6 {
                    let here = g.under_remediation_in(Some("rack"), &format!("r{r}"));
                    prop_assert!(here <= rack as usize, "rack r{r}: {here} > {rack}");
                }
                for z in 0..2 {
                    let here = g.under_remediation_in(Some("zone"), &format!("z{z}"));
                    prop_assert!(here <= zone.limit(30), "zone z{z}: {here} > {zone} of 30");
                }
                let all = g.under_remediation_in(None, "");
                prop_assert!(all <= fleet.limit(60), "fleet: {all} > {fleet} of 60");
            }
        }
    }

    #[test]
    fn the_level_that_holds_an_action_names_itself_and_its_numbers() {
        let levels = vec![
            Level {
                label: Some("rack".into()),
                max_unhealthy: Some(Budget::Count(2)),
                ..Level::default()
            },
            Level {
                label: Some("zone".into()),
                max_unhealthy: Some(Budget::Percent(10.0)),
                ..Level::default()
            },
            Level {
                label: None,
                max_unhealthy: Some(Budget::Count(5)),
                ..Level::default()
            },
        ];
        let mut g = Guards::new(
            GuardConfig {
                max_unhealthy: None,
                levels,
                dry_run: true,
                ..GuardConfig::default()
            },
            BTreeMap::new(),
        );
        let now = Timestamp(1_800_000_000_000);
        let mut out = Vec::new();
        // Node n is in rack r(n % 6) and zone z(n % 2).
        for n in [0, 6, 12, 1, 3, 5, 7, 2] {
            g.submit(
                nested(n, Trigger::Remedy, "cordon", now),
                now,
                &Nested,
                &mut out,
            );
        }
        let got: Vec<(String, Outcome, String)> = out
            .iter()
            .map(|d| {
                (
                    d.node.clone(),
                    d.outcome.unwrap(),
                    d.reason.clone().unwrap_or_default(),
                )
            })
            .collect();
        let expect = [
            ("n0", Outcome::DryRun, ""),
            ("n6", Outcome::DryRun, ""),
            (
                "n12",
                Outcome::BudgetExhausted,
                "rack r0: 2 of 10 known nodes under remediation, max_unhealthy 2 allows 2",
            ),
            ("n1", Outcome::DryRun, ""),
            ("n3", Outcome::DryRun, ""),
            ("n5", Outcome::DryRun, ""),
            (
                "n7",
                Outcome::BudgetExhausted,
                "zone z1: 3 of 30 known nodes under remediation, max_unhealthy 10% allows 3",
            ),
            (
                "n2",
                Outcome::BudgetExhausted,
                "fleet: 5 of 60 known nodes under remediation, max_unhealthy 5 allows 5",
            ),
        ];
        let got: Vec<(&str, Outcome, &str)> = got
            .iter()
            .map(|(n, o, r)| (n.as_str(), *o, r.as_str()))
            .collect();
        assert_eq!(got, expect);
        g.resolved("n0", "disk_failure", 0, now);
        out.clear();
        g.tick(now.add(Duration(1000)), &Nested, &mut out);
        let passed: Vec<&str> = out
            .iter()
            .filter(|d| d.outcome == Some(Outcome::DryRun))
            .map(|d| d.node.as_str())
            .collect();
        // n0 leaves: n12 fits its rack again and takes the fleet's last place.
        assert_eq!(passed, ["n12"]);
        assert_eq!(g.held(), 2, "n7 waits for its zone, n2 for the fleet");
    }

    /// `max_in_flight`: a second repair in a rack waits while the first is
    /// with its executor, and goes when that one is done.
    #[test]
    fn max_in_flight_holds_a_repair_until_the_one_running_is_done() {
        let levels = vec![Level {
            label: Some("rack".into()),
            max_in_flight: Some(1),
            ..Level::default()
        }];
        let mut g = Guards::new(
            GuardConfig {
                max_unhealthy: None,
                levels,
                dry_run: false,
                ..GuardConfig::default()
            },
            BTreeMap::new(),
        );
        let now = Timestamp(1_800_000_000_000);
        let mut out = Vec::new();
        g.submit(
            nested(0, Trigger::Remedy, "cordon", now),
            now,
            &Nested,
            &mut out,
        );
        g.submit(
            nested(6, Trigger::Remedy, "cordon", now),
            now,
            &Nested,
            &mut out,
        );
        let jobs = g.take_jobs();
        assert_eq!(jobs.len(), 1);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].reason.as_deref(),
            Some("rack r0: 1 disruptive actions in flight, max_in_flight 1")
        );
        out.clear();
        let later = now.add(Duration(5_000));
        g.finished(&jobs[0].id, Ok(String::new()), later, &mut out);
        g.tick(later, &Nested, &mut out);
        let next = g.take_jobs();
        assert_eq!(next.len(), 1, "{out:?}");
        assert_eq!(next[0].intent.node, "n6");
    }
}
