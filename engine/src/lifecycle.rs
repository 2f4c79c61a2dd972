//! The fault lifecycle: the pure, clock-driven state machine that turns
//! signals into decisions. `Engine::on_signal(signal, now)` does no I/O and
//! reads no clock, so replay, rule tests and the live service run the same code
//! and the same input always gives the same output.
//!
//! Per signal: first any escalation that fell due by its event time; then
//! drop it if its `id` was seen; remember the node and the event; a
//! `resolved` signal closes the faults its type asserted (unless flapping);
//! any other signal meets the rules indexed for its type, and each fault they
//! name opens once per node (repeats only add evidence), after its policy's
//! `for` when it has one.
//!
//! The engine decides which actions a fault wants ([`Output::Act`]); what
//! becomes of them is the guard chain's business (the `actions` crate).

mod converge;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::Path;
use std::rc::Rc;

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::{smallvec, SmallVec};

use crate::decision::{Decision, Intent, Outcome, Trigger};
pub use crate::desired::Observed;
use crate::fleet::{
    series_key, Fleet, Freshness, HistoryLimits, NodeId, OpenFault, Sym, MAX_SERIES,
};
use crate::identity::Identity;
use crate::policy::{Flap, Policies, Policy};
use crate::rules::{Classification, LoadError, RuleError, RuleSet, Sandbox, SignalArg, World};
use crate::signal::Signal;
use crate::time::{Duration, Timestamp};

/// Tunables of the engine itself (not of any rule).
#[derive(Clone, Debug)]
pub struct Options {
    /// Bounds on per-node history.
    pub history: HistoryLimits,
    /// Bounds on each rule call.
    pub sandbox: Sandbox,
    /// How many recent signal `id`s are remembered to drop repeats.
    pub dedup_ids: usize,
    /// When a fault that keeps opening and resolving is held open.
    pub flap: Flap,
    /// Labels whose value, on a signal that names its node, is an alias of
    /// that node (`[identity] alias_labels`).
    pub alias_labels: Vec<String>,
    /// `remedy run`: the lifecycle runs on the clock it is handed, a
    /// signal's `ts` only places it in count windows (contract 13). Off:
    /// each signal's `ts` is the clock (replay, diff, tests).
    pub service_clock: bool,
    /// A node with no open fault and no signal for this long is forgotten
    /// (`[limits] forget_after`); `None`: never.
    pub forget_after: Option<Duration>,
    /// `[[correlate]]`: common causes named once instead of N node repairs.
    pub correlations: Vec<crate::correlate::Correlation>,
    /// The efficacy ledger's rows are split by this node label (`[efficacy] by`).
    pub efficacy_by: Option<String>,
    /// `[[node_class]]`: desired versions, readiness gates, rollout pacing.
    pub node_classes: Vec<crate::desired::Class>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            history: HistoryLimits::default(),
            sandbox: Sandbox::default(),
            dedup_ids: 100_000,
            flap: Flap::default(),
            alias_labels: Vec::new(),
            service_clock: false,
            forget_after: Some(Duration::from_secs(7 * 24 * 3600)),
            correlations: Vec::new(),
            efficacy_by: None,
            node_classes: Vec::new(),
        }
    }
}

/// (due, node, fault, opened_at, resolved_at) of an `on_resolve` waiting
/// for `healthy_delay`.
type Recovery = (Timestamp, NodeId, Sym, Timestamp, Timestamp);

/// One thing a signal led to, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// `fault_opened` or `fault_resolved`.
    Decision(Decision),
    /// An action the fault wants; the guard chain turns it into a decision.
    Act(Intent),
    /// A condition fault went stale (`true`) or was asserted again
    /// (`false`): disruptive actions held back for it wait, or may go.
    Stale {
        /// The node.
        node: String,
        /// The fault class.
        fault: String,
        /// Stale now.
        stale: bool,
    },
    /// The fault resolved: held-back actions for it are void, and the node
    /// leaves the storm budget once `on_resolve` actions (the next `Act`s) pass.
    Released {
        /// The node.
        node: String,
        /// The fault class.
        fault: String,
        /// How many `on_resolve` actions follow.
        on_resolve: usize,
    },
    /// A common cause (`[[correlate]]` with `hold`) opened (`hold`) or
    /// resolved in the domain `label = value`: per-node disruptive actions
    /// there wait, or may go.
    Hold {
        /// The label.
        label: String,
        /// Its value.
        value: String,
        /// The domain fault's class.
        fault: String,
        /// Opened (or resolved).
        hold: bool,
    },
}

/// What one signal led to.
#[derive(Debug, Default)]
pub struct Step {
    /// Fault decisions, action intents and releases, in order.
    pub out: Vec<Output>,
    /// Every rule the signal met, by index.
    pub evaluated: Vec<usize>,
    /// Every rule that classified the signal: (rule index, its answer).
    pub answers: Vec<(usize, Classification)>,
    /// Rules that failed on the signal.
    pub errors: Vec<RuleError>,
    /// What rules printed.
    pub prints: Vec<String>,
    /// The signal repeated an `id` already seen and was ignored.
    pub duplicate: bool,
    /// Faults held open by flap detection instead of resolving.
    pub held_open: usize,
    /// Aliases the signal taught: (alias, canonical node), to journal.
    pub learned: Vec<(String, String)>,
    /// Nodes forgotten (`forget_after`), to drop from the journal.
    pub forgotten: Vec<String>,
}

impl Step {
    /// Empties it for the next step, keeping its buffers.
    pub fn clear(&mut self) {
        self.out.clear();
        self.evaluated.clear();
        self.answers.clear();
        self.errors.clear();
        self.prints.clear();
        self.duplicate = false;
        self.held_open = 0;
        self.learned.clear();
        self.forgotten.clear();
    }

    /// The fault decisions only.
    pub fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.out.iter().filter_map(|o| match o {
            Output::Decision(d) => Some(d),
            _ => None,
        })
    }
}

/// A fault being asserted but not yet for its policy's `for`.
#[derive(Debug)]
struct Pending {
    first: Timestamp,
    last: Timestamp,
}

/// Opens of one fault on one node, for flap detection.
#[derive(Debug, Default)]
struct Flaps {
    opens: VecDeque<Timestamp>,
    flapping: bool,
    last_asserted: Timestamp,
}

/// An escalation rung falling due.
type Timer = Reverse<(Timestamp, NodeId, Sym, Timestamp, usize)>;

/// Remembers the most recent signal ids, forgetting the oldest past a bound.
#[derive(Debug)]
struct IdWindow {
    seen: FxHashSet<Rc<str>>,
    order: VecDeque<Rc<str>>,
    capacity: usize,
}

impl IdWindow {
    fn new(capacity: usize) -> Self {
        IdWindow {
            seen: FxHashSet::default(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// `true` if the id is new (and now remembered).
    fn insert(&mut self, id: &str) -> bool {
        if self.capacity == 0 || self.seen.contains(id) {
            return self.capacity == 0;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        let id: Rc<str> = Rc::from(id);
        self.seen.insert(id.clone());
        self.order.push_back(id);
        true
    }
}

/// The engine: rules, fleet state and policies.
#[derive(Debug)]
pub struct Engine {
    rules: RuleSet,
    world: Rc<RefCell<World>>,
    policies: Policies,
    ids: IdWindow,
    /// `s` for the rules, refilled per signal.
    arg: SignalArg,
    sandbox: Sandbox,
    flap: Flap,
    pending: FxHashMap<(NodeId, Sym), Pending>,
    flaps: FxHashMap<(NodeId, Sym), Flaps>,
    /// (due, node, fault, opened_at, rung): escalations of open faults.
    timers: BinaryHeap<Timer>,
    /// Bookkeeping sweeps of `pending`/`flaps`, by event time.
    next_sweep: Timestamp,
    /// See [`Options::forget_after`].
    forget_after: Option<Duration>,
    /// When idle nodes are looked for next.
    next_forget: Timestamp,
    /// Aliases -> canonical node names.
    identity: Identity,
    /// See [`Options::service_clock`].
    service_clock: bool,
    /// (due, node, fault, opened_at): when a condition fault may go stale.
    stale_timers: BinaryHeap<Reverse<(Timestamp, NodeId, Sym, Timestamp)>>,
    /// Escalation rungs that fell due while their fault was stale: they
    /// run once its condition is asserted again.
    deferred: FxHashMap<(NodeId, Sym), (Timestamp, usize)>,
    /// Openings per node and fault class, for `max_attempts` (only classes
    /// whose policy sets it).
    attempts: FxHashMap<(NodeId, Sym), VecDeque<Timestamp>>,
    /// (due, node, fault, opened_at, resolved_at): `on_resolve` actions
    /// waiting for `healthy_delay`.
    recoveries: BinaryHeap<Reverse<Recovery>>,
    /// The occurrence (opened_at) whose recovery waits, per node and fault:
    /// gone when the fault comes back first.
    healing: FxHashMap<(NodeId, Sym), (Timestamp, usize)>,
    /// The next escalation rung of each open fault (opened_at, rung): a
    /// rung asked for early (failed verification) is not asked again.
    rungs: FxHashMap<(NodeId, Sym), (Timestamp, usize)>,
    /// The last action done for an open fault: (when, which).
    acted: FxHashMap<(NodeId, Sym), (Timestamp, String)>,
    /// (due, node, fault, opened_at): `verify` checks.
    verifies: BinaryHeap<Reverse<(Timestamp, NodeId, Sym, Timestamp)>>,
    /// Open faults past `max_attempts`: with a person, nothing to verify.
    handed_over: FxHashSet<(NodeId, Sym)>,
    /// `[[correlate]]`.
    correlator: crate::correlate::Correlator,
    /// What each node last reported of its state (contract 10): component
    /// versions and conditions, with when.
    observed: FxHashMap<NodeId, Observed>,
    /// `[[node_class]]`: each class's wave.
    rollouts: crate::desired::Rollouts,
    /// What observing a decision led to (the next step's action, a step
    /// decision): the pipeline routes it like a signal's outputs.
    queued: Vec<Output>,
}

impl Engine {
    /// Loads the rules under `dir` into a fresh engine.
    pub fn load(dir: &Path, policies: Policies, options: &Options) -> Result<Self, LoadError> {
        let world = Self::world(options);
        let rules = RuleSet::load(dir, &options.sandbox, world.clone())?;
        Ok(Self::with_rules(rules, policies, options))
    }

    /// A fresh, empty world for a rule set to be compiled against.
    pub fn world(options: &Options) -> Rc<RefCell<World>> {
        Rc::new(RefCell::new(World {
            fleet: Fleet::new(options.history),
            ..World::default()
        }))
    }

    /// An engine around an already compiled rule set (and its world).
    pub fn with_rules(rules: RuleSet, policies: Policies, options: &Options) -> Self {
        rules.world().borrow_mut().efficacy =
            crate::efficacy::Ledger::new(policies.clone(), options.efficacy_by.clone());
        Engine {
            world: rules.world().clone(),
            rules,
            policies,
            ids: IdWindow::new(options.dedup_ids),
            arg: SignalArg::default(),
            sandbox: options.sandbox,
            flap: options.flap,
            pending: FxHashMap::default(),
            flaps: FxHashMap::default(),
            timers: BinaryHeap::new(),
            next_sweep: Timestamp(i64::MIN),
            forget_after: options.forget_after,
            next_forget: Timestamp(i64::MIN),
            identity: Identity::new(options.alias_labels.clone()),
            service_clock: options.service_clock,
            stale_timers: BinaryHeap::new(),
            deferred: FxHashMap::default(),
            attempts: FxHashMap::default(),
            recoveries: BinaryHeap::new(),
            healing: FxHashMap::default(),
            rungs: FxHashMap::default(),
            acted: FxHashMap::default(),
            verifies: BinaryHeap::new(),
            handed_over: FxHashSet::default(),
            correlator: crate::correlate::Correlator::new(options.correlations.clone()),
            observed: FxHashMap::default(),
            rollouts: crate::desired::Rollouts::new(options.node_classes.clone()),
            queued: Vec::new(),
        }
    }

    /// Replaces the rules with those under `dir`, keeping all fleet and
    /// fault state. On error the current rules stay in use.
    pub fn reload(&mut self, dir: &Path) -> Result<usize, LoadError> {
        let rules = RuleSet::load(dir, &self.sandbox, self.world.clone())?;
        let n = rules.len();
        self.rules = rules;
        Ok(n)
    }

    /// Remembers a signal `id` as seen (after a restart, from the journal),
    /// so that a producer resending it is ignored as before.
    pub fn remember_id(&mut self, id: &str) {
        self.ids.insert(id);
    }

    /// The policy for a fault class.
    pub fn policy(&self, fault: &str) -> &Policy {
        self.policies.get(fault)
    }

    /// Whether the lifecycle runs on the clock it is handed (`remedy run`).
    pub fn service_clock(&self) -> bool {
        self.service_clock
    }

    /// All policies.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// A signal from before a restart (the journal): it counts in its
    /// node's windows again (`events_within`), as it did. Aliases apply.
    pub fn restore_signal(&mut self, node: &str, r#type: &str, ts: Timestamp) {
        let node = self.identity.canonical(node).unwrap_or(node).to_string();
        let fleet = &mut self.world.borrow_mut().fleet;
        let id = fleet.touch(&node, &crate::signal::Labels::default(), ts);
        let r#type = fleet.symbols.intern(r#type);
        fleet.record(id, r#type, ts);
    }

    /// Tells the engine a node's labels (after a restart, from the journal),
    /// so its failure domain is known before it sends again.
    pub fn restore_node(
        &mut self,
        node: &str,
        labels: &crate::signal::Labels,
        at: Timestamp,
        domain: bool,
    ) {
        let fleet = &mut self.world.borrow_mut().fleet;
        if domain {
            fleet.touch_domain(node, labels, at);
        } else {
            fleet.touch(node, labels, at);
        }
    }

    /// The rules in use.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Read access to the fleet state (known nodes, open faults).
    pub fn with_fleet<T>(&self, f: impl FnOnce(&Fleet) -> T) -> T {
        f(&self.world.borrow().fleet)
    }

    /// Hints that `signal` comes soon: its node's index slot starts loading
    /// (see [`crate::Lookahead`], which calls this and the next one).
    pub fn prefetch_index(&self, signal: &Signal) {
        self.world.borrow().fleet.prefetch_index(&signal.node);
    }

    /// Hints that `signal` comes very soon: its node's state starts loading.
    pub fn prefetch_state(&self, signal: &Signal) {
        self.world.borrow().fleet.prefetch_state(&signal.node);
    }

    /// Processes one signal at event time `now` (used when the signal has no `ts`).
    pub fn on_signal(&mut self, signal: Signal, now: Timestamp) -> Step {
        let mut step = Step::default();
        self.on_signal_into(signal, now, &mut step);
        step
    }

    /// Like [`Engine::on_signal`], reusing `step`'s buffers.
    pub fn on_signal_into(&mut self, mut signal: Signal, now: Timestamp, step: &mut Step) {
        step.clear();
        // The signal's time places it in count windows; what the lifecycle
        // schedules runs on `at`: the signal's time in replay, the service's
        // own clock in `run` (no input can move remedy's clock).
        let ts = *signal.ts.get_or_insert(now);
        let at = if self.service_clock { now } else { ts };
        self.advance(at, step);
        if let Some(id) = &signal.id {
            if !self.ids.insert(id) {
                step.duplicate = true;
                if signal.condition && !signal.resolved {
                    // Alertmanager repeats a firing alert as it was: the
                    // repeat is no new signal, but its condition still holds.
                    self.reasserted(&signal, now.max(at), step);
                }
                return;
            }
        }
        // One machine, one node: an alias becomes the canonical name, and a
        // signal naming its node and an alias label teaches that alias.
        if !self.identity.is_idle() && !signal.is_domain() {
            if let Some(node) = self.identity.canonical(&signal.node) {
                signal.node = node.to_string();
            }
            let learned = self.identity.learn(&signal);
            for (alias, node) in &learned {
                self.merge(alias, node, at, step);
            }
            step.learned.extend(learned);
        }
        // A domain signal (a cluster-wide alert) is kept under its domain's
        // name; rules see `s.node == ()` and `s.domain`.
        let domain = signal.is_domain();
        if domain {
            let labels = signal
                .domain()
                .into_iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
                .collect();
            signal.node = signal.domain_key();
            signal
                .extra
                .push(("domain".into(), serde_json::Value::Object(labels)));
        }
        let (node, r#type) = {
            let mut w = self.world.borrow_mut();
            w.now = ts;
            w.clock = at;
            let fleet = &mut w.fleet;
            let labels = signal.node_labels();
            let node = if domain {
                fleet.touch_domain(&signal.node, &labels, at)
            } else {
                fleet.touch(&signal.node, &labels, at)
            };
            let r#type = fleet.symbols.intern(&signal.r#type);
            if !signal.resolved {
                fleet.record(node, r#type, ts);
            }
            (node, r#type)
        };
        if let (Some(report), false) = (signal.report(), domain) {
            let report = match report {
                // A series gone from a scrape: the version it named is
                // replaced by the next one; the condition is not reported.
                crate::signal::Report::Version { .. } if signal.resolved => None,
                crate::signal::Report::Condition { condition, .. } if signal.resolved => {
                    Some(crate::signal::Report::Condition {
                        condition,
                        holds: None,
                    })
                }
                r => Some(r),
            };
            if let Some(report) = report {
                self.observed.entry(node).or_default().note(&report, ts);
            }
            if !self.rollouts.is_empty() {
                self.converge(node, at, step);
            }
        }

        if signal.resolved {
            let series = signal.condition.then(|| series_key(&signal.labels));
            self.resolve(node, r#type, series, at, step);
            return;
        }

        let all = self.rules.rules_for(r#type);
        // Gates: a rule that declared `VALUE_ABOVE` is not asked about a
        // signal whose value does not exceed it (or that has no value), one
        // that declared `EVENTS_AT_LEAST` not until the node sent that many.
        let mut gated: SmallVec<[usize; 4]> = SmallVec::new();
        let rules: &[usize] = match self.rules.gates_for(r#type) {
            None => all,
            Some(gates) => {
                let w = self.world.borrow();
                gated.extend(all.iter().zip(gates).filter_map(|(&i, gate)| {
                    let pass = gate
                        .value_above
                        .is_none_or(|g| signal.value.is_some_and(|v| v > g))
                        && gate.events_at_least.is_none_or(|(count, seconds)| {
                            w.fleet.count_within(node, r#type, seconds, ts) >= count
                        });
                    pass.then_some(i)
                }));
                &gated
            }
        };
        if rules.is_empty() {
            return;
        }
        {
            let w = self.world.borrow();
            let fleet = &w.fleet;
            self.arg.fill(
                &signal,
                (!domain).then(|| fleet.node_name(node).clone()),
                fleet.symbols.shared(r#type).clone(),
                |v| fleet.symbols.shared_or_new(v),
            );
        }
        step.evaluated.extend_from_slice(rules);
        for &index in rules {
            match self.rules.classify(index, &mut self.arg, &signal) {
                Ok(Some(answer)) => step.answers.push((index, answer)),
                Ok(None) => {}
                Err(e) => step.errors.push(e),
            }
        }
        step.prints.append(&mut self.world.borrow_mut().prints);
        // A condition holds as of its arrival (an alert firing since long
        // ago is asserted now); its event time still dates the fault.
        let asserted = signal
            .condition
            .then(|| (now.max(at), series_key(&signal.labels)));
        for (index, answer) in std::mem::take(&mut step.answers) {
            // A class a [[correlate]] block opens is a domain fault: the
            // block decides it, a rule's answer for one node does not.
            if !self.correlator.opens(&answer.fault) {
                self.assert_fault(node, r#type, at, index, &answer, asserted, step);
            }
            step.answers.push((index, answer));
        }
    }

    /// A repeated condition signal: the faults its type asserted on its
    /// node are fresh again.
    fn reasserted(&mut self, signal: &Signal, at: Timestamp, step: &mut Step) {
        let name = self
            .identity
            .canonical(&signal.node)
            .unwrap_or(&signal.node)
            .to_string();
        let asserted = self.with_fleet(|f| {
            let node = f.find_node(&name)?;
            let r#type = f.symbols.get(&signal.r#type)?;
            Some((node, f.asserted_by(node, r#type)))
        });
        if let Some((node, faults)) = asserted {
            for fault in faults {
                self.refresh(node, fault, at, step);
            }
        }
    }

    /// Declares `alias` a name of `node` (a static alias file, the
    /// Kubernetes node list): what is open under the alias moves to the node.
    pub fn alias(&mut self, alias: &str, node: &str, at: Timestamp, step: &mut Step) {
        step.clear();
        if self.identity.insert(alias, node) {
            let node = self.identity.canonical(alias).unwrap_or(node).to_string();
            self.merge(alias, &node, at, step);
            step.learned.push((alias.to_string(), node));
        }
    }

    /// An alias known from before (the journal at a restart): no decisions.
    pub fn restore_alias(&mut self, alias: &str, node: &str) {
        self.identity.insert(alias, node);
    }

    /// Every known alias and its node, sorted.
    pub fn aliases(&self) -> Vec<(String, String)> {
        self.identity.pairs()
    }

    /// `alias` turned out to be `node`: faults open under the alias resolve
    /// there (no `on_resolve` actions: the alias is no machine to act on)
    /// and open on the node, unless already open there; the signal times
    /// recorded under the alias count for the node.
    fn merge(&mut self, alias: &str, node: &str, at: Timestamp, step: &mut Step) {
        let Some((from, open)) = self.with_fleet(|f| f.open_faults_named(alias)) else {
            return;
        };
        let known = crate::signal::Labels(self.with_fleet(|f| f.labels_of(from)));
        let to = {
            let fleet = &mut self.world.borrow_mut().fleet;
            let to = fleet.touch(node, &known, at);
            // What the alias sent counts for the node ("3 within 10 min").
            fleet.merge_history(from, to);
            to
        };
        for fault in open {
            let name = self.with_fleet(|f| f.symbols.name(fault.fault).to_string());
            if self
                .world
                .borrow_mut()
                .fleet
                .close(from, fault.fault)
                .is_none()
            {
                continue;
            }
            self.pending.retain(|&(n, _), _| n != from);
            let mut resolved = Decision::resolved(at, alias, &name);
            resolved.reason = Some(format!("{alias} is {node}: the fault moves there"));
            step.out.push(Output::Decision(resolved));
            step.out.push(Output::Released {
                node: alias.to_string(),
                fault: name.clone(),
                on_resolve: 0,
            });
            let answer = Classification {
                fault: name,
                severity: fault.severity,
                reason: Some(format!(
                    "{alias} is {node}: fault open under {alias} since {}",
                    fault.opened_at
                )),
                actions: None,
            };
            // The series that held it open move with it (they are labels).
            let first = fault.series.first().copied();
            let r#type = first
                .map(|(t, _)| t)
                .or(fault.types.first().copied())
                .unwrap_or(fault.fault);
            let asserted = fault
                .condition
                .map(|c| (c.asserted, first.map_or(0, |(_, key)| key)));
            self.assert_fault(to, r#type, at, fault.rule, &answer, asserted, step);
            if let Some(open) = self
                .world
                .borrow_mut()
                .fleet
                .open_fault_mut(to, fault.fault)
            {
                if first.is_none() {
                    // No series were known (restored): none is made up.
                    open.series.retain(|s| *s != (r#type, 0));
                }
                for s in &fault.series {
                    if open.series.len() < MAX_SERIES && !open.series.contains(s) {
                        open.series.push(*s);
                    }
                }
            }
            for &t in &fault.types {
                self.world
                    .borrow_mut()
                    .fleet
                    .add_fault_type(to, fault.fault, t);
            }
        }
    }

    /// Moves event time to `now`: escalations that fell due are asked for.
    /// Called for every signal; the service also calls it on a timer.
    pub fn advance(&mut self, now: Timestamp, step: &mut Step) {
        // Staleness first: an escalation due at the same time sees it.
        self.mark_stale(now, step);
        self.check_verified(now, step);
        while let Some(&Reverse((due, node, fault, opened, resolved))) = self.recoveries.peek() {
            if due > now {
                break;
            }
            self.recoveries.pop();
            let Some(&(since, rule)) = self.healing.get(&(node, fault)) else {
                continue;
            };
            if since != opened {
                continue; // it came back: the node was never put back
            }
            if let Some(later) = self.not_ready(node, fault, due) {
                // Back in service only once every gate holds (contract 10).
                self.recoveries
                    .push(Reverse((later, node, fault, opened, resolved)));
                continue;
            }
            self.healing.remove(&(node, fault));
            let name = self.with_fleet(|f| f.symbols.name(fault).to_string());
            let why = format!(
                "{name} resolved at {resolved}, healthy for {}",
                Duration(due.0 - resolved.0)
            );
            self.recover(node, &name, opened, rule, due, why, step);
        }
        while let Some(&Reverse((due, node, fault, opened_at, rung))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let still_open = self.with_fleet(|f| {
                f.open_fault(node, fault)
                    .is_some_and(|o| o.opened_at == opened_at)
            });
            if !still_open {
                continue;
            }
            let stale = self.with_fleet(|f| {
                f.open_fault(node, fault)
                    .and_then(|o| o.condition)
                    .is_some_and(|c| c.stale)
            });
            if stale {
                // Old evidence: the rung waits for the condition to be asserted again.
                self.deferred.insert((node, fault), (opened_at, rung));
                continue;
            }
            if self.rungs.get(&(node, fault)) != Some(&(opened_at, rung)) {
                continue; // asked for early, when verification failed
            }
            let name = self.with_fleet(|f| f.symbols.name(fault).to_string());
            if let Some(e) = self.policies.get(&name).escalate.get(rung) {
                let why = format!("{name} still open after {}: escalated", e.after);
                self.escalate(node, fault, &name, opened_at, rung, due, why, None, step);
            }
        }
        if now >= self.next_sweep {
            self.sweep(now);
        }
        if now >= self.next_forget {
            self.forget(now, step);
        }
        if !self.rollouts.is_empty() {
            self.pace(now, step);
        }
    }

    /// Forgets the nodes idle for `forget_after` (no open fault, no signal,
    /// nothing waiting for them): a fleet that replaces machines does not
    /// keep every name it ever saw. Looked for every eighth of
    /// `forget_after` (at most hourly), so the scan costs nothing per signal.
    fn forget(&mut self, now: Timestamp, step: &mut Step) {
        let Some(after) = self.forget_after else {
            self.next_forget = Timestamp(i64::MAX);
            return;
        };
        let every = Duration((after.0 / 8).clamp(1_000, 3_600_000));
        if self.next_forget == Timestamp(i64::MIN) {
            // The first look comes one period after start, not at once.
            self.next_forget = now.add(every);
            return;
        }
        self.next_forget = now.add(every);
        let mut busy: FxHashSet<NodeId> = FxHashSet::default();
        busy.extend(self.pending.keys().map(|k| k.0));
        busy.extend(self.deferred.keys().map(|k| k.0));
        busy.extend(self.healing.keys().map(|k| k.0));
        busy.extend(self.rungs.keys().map(|k| k.0));
        busy.extend(self.acted.keys().map(|k| k.0));
        busy.extend(self.handed_over.iter().map(|k| k.0));
        let gone = self
            .world
            .borrow_mut()
            .fleet
            .forget(Timestamp(now.0.saturating_sub(after.0)), |id| {
                busy.contains(&id)
            });
        if gone.is_empty() {
            return;
        }
        let ids: FxHashSet<NodeId> = gone.iter().map(|(id, _)| *id).collect();
        // Their slots are reused: what they reported goes with them.
        self.observed.retain(|k, _| !ids.contains(k));
        self.rollouts.member.retain(|k, _| !ids.contains(k));
        self.flaps.retain(|k, _| !ids.contains(&k.0));
        self.attempts.retain(|k, _| !ids.contains(&k.0));
        self.timers.retain(|Reverse(t)| !ids.contains(&t.1));
        self.stale_timers.retain(|Reverse(t)| !ids.contains(&t.1));
        self.verifies.retain(|Reverse(t)| !ids.contains(&t.1));
        self.recoveries.retain(|Reverse(t)| !ids.contains(&t.1));
        step.forgotten
            .extend(gone.into_iter().map(|(_, name)| name));
    }

    /// Condition faults whose `stale_after` passed by `now` without a new
    /// assertion become stale: a `fault_stale` decision, and the guard chain
    /// holds their disruptive actions.
    fn mark_stale(&mut self, now: Timestamp, step: &mut Step) {
        while let Some(&Reverse((due, node, fault, opened_at))) = self.stale_timers.peek() {
            if due > now {
                break;
            }
            self.stale_timers.pop();
            let name = self.with_fleet(|f| f.symbols.name(fault).to_string());
            let Some(after) = self.policies.get(&name).stale_after() else {
                continue;
            };
            let (node_name, asserted) = {
                let mut w = self.world.borrow_mut();
                let fleet = &mut w.fleet;
                let Some(open) = fleet.open_fault_mut(node, fault) else {
                    continue;
                };
                let Some(c) = &mut open.condition else {
                    continue;
                };
                if open.opened_at != opened_at || c.stale {
                    continue;
                }
                let fresh_until = c.asserted.add(after);
                if fresh_until > due {
                    // Asserted since: look again when that assertion ages.
                    self.stale_timers
                        .push(Reverse((fresh_until, node, fault, opened_at)));
                    continue;
                }
                c.stale = true;
                let asserted = c.asserted;
                (fleet.node_name(node).to_string(), asserted)
            };
            let reason = format!(
                "{name} on {node_name}: its condition was last asserted at {asserted}, \
                 neither re-asserted nor resolved within {after}; disruptive actions wait"
            );
            step.out.push(Output::Decision(Decision::stale(
                due, &node_name, &name, reason,
            )));
            step.out.push(Output::Stale {
                node: node_name,
                fault: name,
                stale: true,
            });
        }
    }

    /// The condition behind an open fault was asserted again at `at`: its
    /// evidence is fresh; if it was stale, what waited for it may go.
    fn refresh(&mut self, node: NodeId, fault: Sym, at: Timestamp, step: &mut Step) {
        let name = self.with_fleet(|f| f.symbols.name(fault).to_string());
        let after = self.policies.get(&name).stale_after();
        let (was_stale, first, opened_at, node_name) = {
            let mut w = self.world.borrow_mut();
            let fleet = &mut w.fleet;
            let Some(open) = fleet.open_fault_mut(node, fault) else {
                return;
            };
            let opened_at = open.opened_at;
            let (was_stale, first) = match &mut open.condition {
                Some(c) => {
                    let was = c.stale;
                    c.asserted = c.asserted.max(at);
                    c.stale = false;
                    (was, false)
                }
                None => {
                    // Restored after a restart, or opened by an event: a
                    // condition from now on.
                    open.condition = Some(Freshness {
                        asserted: at,
                        stale: false,
                    });
                    (false, true)
                }
            };
            (
                was_stale,
                first,
                opened_at,
                fleet.node_name(node).to_string(),
            )
        };
        if let (true, Some(after)) = (was_stale || first, after) {
            self.stale_timers
                .push(Reverse((at.add(after), node, fault, opened_at)));
        }
        if was_stale {
            step.out.push(Output::Stale {
                node: node_name,
                fault: name,
                stale: false,
            });
            if let Some((opened, rung)) = self.deferred.remove(&(node, fault)) {
                if opened == opened_at {
                    self.timers.push(Reverse((at, node, fault, opened, rung)));
                }
            }
        }
    }

    /// A rule says `answer` about this node: open the fault, or add evidence.
    #[allow(clippy::too_many_arguments)]
    fn assert_fault(
        &mut self,
        node: NodeId,
        r#type: Sym,
        at: Timestamp,
        index: usize,
        answer: &Classification,
        condition: Option<(Timestamp, u64)>,
        step: &mut Step,
    ) {
        let asserted = condition.map(|(at, _)| at);
        let fault = self.world.borrow_mut().fleet.symbols.intern(&answer.fault);
        if let Some(f) = self.flaps.get_mut(&(node, fault)) {
            f.last_asserted = at;
        }
        let is_open = self.with_fleet(|f| f.open_fault(node, fault).is_some());
        if is_open {
            self.world
                .borrow_mut()
                .fleet
                .add_fault_type(node, fault, r#type);
            if let Some((asserted, series)) = condition {
                if let Some(open) = self.world.borrow_mut().fleet.open_fault_mut(node, fault) {
                    if open.series.len() < MAX_SERIES && !open.series.contains(&(r#type, series)) {
                        open.series.push((r#type, series));
                    }
                }
                self.refresh(node, fault, asserted, step);
            }
            return;
        }
        let policy = self.policies.get(&answer.fault).clone();
        if policy.hold.0 > 0 {
            let p = self.pending.entry((node, fault)).or_insert(Pending {
                first: at,
                last: at,
            });
            if at.0 - p.last.0 > policy.hold.0 {
                p.first = at; // the condition lapsed: start again
            }
            p.last = at;
            if at.0 - p.first.0 < policy.hold.0 {
                return;
            }
            self.pending.remove(&(node, fault));
        }
        // Back within healthy_delay: the node was never put back in service.
        self.healing.remove(&(node, fault));
        self.world.borrow_mut().fleet.open(
            node,
            OpenFault {
                fault,
                severity: answer.severity,
                rule: index,
                opened_at: at,
                types: smallvec![r#type],
                condition: asserted.map(|asserted| Freshness {
                    asserted,
                    stale: false,
                }),
                series: condition.map_or_else(SmallVec::new, |(_, key)| smallvec![(r#type, key)]),
            },
        );
        if let (Some(asserted), Some(after)) = (asserted, policy.stale_after()) {
            self.stale_timers
                .push(Reverse((asserted.add(after), node, fault, at)));
        }
        let flapping = self.count_open(node, fault, at);
        let node_name = self.with_fleet(|f| f.node_name(node).to_string());
        let mut opened = Decision::opened(
            at,
            &node_name,
            &answer.fault,
            answer.severity,
            self.rules.name(index),
            answer.reason.clone(),
        );
        opened.flapping = flapping;
        step.out.push(Output::Decision(opened));
        // A common cause shows before this node's own repair is asked for.
        self.correlate_opened(node, fault, &answer.fault, at, false, step);
        let actions = answer.actions.as_deref().unwrap_or(&policy.actions);
        if let Some((limit, seen)) = self.attempt(node, fault, at, &policy) {
            // Past max_attempts: a person takes over, no further cycle.
            let reason = format!(
                "{} opened on {node_name} {seen} times within {}, max_attempts {}: {}",
                answer.fault,
                limit.within,
                limit.count,
                if limit.then.is_empty() {
                    "left to a person".to_string()
                } else {
                    format!("{} instead", limit.then.join(", "))
                }
            );
            let exhausted = Outcome::AttemptsExhausted;
            let rung = "actions";
            self.not_asked(
                node,
                &answer.fault,
                actions,
                &policy,
                at,
                rung,
                exhausted,
                &reason,
                step,
            );
            let then = "max_attempts";
            self.ask(
                node,
                &answer.fault,
                &limit.then,
                &policy,
                at,
                at,
                then,
                Some(&reason),
                step,
            );
            self.handed_over.insert((node, fault));
            return;
        }
        let rung = if answer.actions.is_some() {
            "actions (the rule's)"
        } else {
            "actions"
        };
        if !policy.escalate.is_empty() {
            if let Some(reason) = self.demotion(&answer.fault, actions, &policy, at) {
                let next = format!(
                    "{reason}: skipped for escalate[0] ({})",
                    policy.escalate[0].actions.join(", ")
                );
                let demoted = Outcome::Demoted;
                self.not_asked(
                    node,
                    &answer.fault,
                    actions,
                    &policy,
                    at,
                    rung,
                    demoted,
                    &next,
                    step,
                );
                let via = Some("actions demoted");
                self.escalate(node, fault, &answer.fault, at, 0, at, next, via, step);
                return;
            }
        }
        let reason = answer.reason.as_deref();
        self.ask(
            node,
            &answer.fault,
            actions,
            &policy,
            at,
            at,
            rung,
            reason,
            step,
        );
        self.schedule(node, fault, at, 0, &policy);
    }

    /// Notes an opening for `max_attempts`: the limit and how many openings
    /// the window holds when this one is past it, else `None`.
    fn attempt(
        &mut self,
        node: NodeId,
        fault: Sym,
        at: Timestamp,
        policy: &Policy,
    ) -> Option<(crate::policy::MaxAttempts, usize)> {
        let limit = policy.max_attempts.as_ref()?;
        let opens = self.attempts.entry((node, fault)).or_default();
        opens.push_back(at);
        while opens.front().is_some_and(|&t| at.0 - t.0 > limit.within.0) {
            opens.pop_front();
        }
        (opens.len() > limit.count as usize).then(|| (limit.clone(), opens.len()))
    }

    /// Openings known from before (the journal at a restart), for `max_attempts`.
    pub fn restore_attempts(&mut self, node: &str, fault: &str, opened: &[Timestamp]) {
        let key = {
            let mut w = self.world.borrow_mut();
            let fleet = &mut w.fleet;
            let Some(id) = fleet.find_node(node) else {
                return;
            };
            (id, fleet.symbols.intern(fault))
        };
        let opens = self.attempts.entry(key).or_default();
        let mut all: Vec<Timestamp> = opens
            .iter()
            .copied()
            .chain(opened.iter().copied())
            .collect();
        all.sort();
        all.dedup();
        *opens = all.into();
    }

    /// Notes an open for flap detection; true when the fault is now flapping.
    fn count_open(&mut self, node: NodeId, fault: Sym, at: Timestamp) -> bool {
        let window = self.flap.window;
        let limit = self.flap.opens as usize;
        let f = self.flaps.entry((node, fault)).or_default();
        f.last_asserted = at;
        f.opens.push_back(at);
        while f.opens.front().is_some_and(|&t| at.0 - t.0 > window.0) {
            f.opens.pop_front();
        }
        if f.opens.len() > limit {
            f.flapping = true;
            f.opens.pop_front();
        }
        f.flapping
    }

    /// A `resolved` signal: close what its type asserted, except faults that
    /// flap and were asserted within the flap window (held open).
    fn resolve(
        &mut self,
        node: NodeId,
        r#type: Sym,
        series: Option<u64>,
        at: Timestamp,
        step: &mut Step,
    ) {
        self.pending.retain(|&(n, _), _| n != node);
        let asserted = self.with_fleet(|f| f.asserted_by(node, r#type));
        for fault in asserted {
            if let Some(key) = series {
                // This series cleared; another may still hold the fault open.
                let mut w = self.world.borrow_mut();
                if let Some(open) = w.fleet.open_fault_mut(node, fault) {
                    open.series.retain(|s| *s != (r#type, key));
                    if !open.series.is_empty() {
                        continue;
                    }
                }
            }
            if let Some(f) = self.flaps.get_mut(&(node, fault)) {
                if f.flapping {
                    if at.0 - f.last_asserted.0 < self.flap.window.0 {
                        step.held_open += 1;
                        continue;
                    }
                    f.flapping = false;
                    f.opens.clear();
                }
            }
            let Some(closed) = self.world.borrow_mut().fleet.close(node, fault) else {
                continue;
            };
            self.after_close(node, fault, closed, at, step, true);
        }
    }

    /// A fault closed: `fault_resolved`, the guards release the node, and
    /// its `on_resolve` actions are asked for (after `healthy_delay`),
    /// unless nothing was done that they would undo (`acted` false: an
    /// upgrade that never started).
    fn after_close(
        &mut self,
        node: NodeId,
        fault: Sym,
        closed: OpenFault,
        at: Timestamp,
        step: &mut Step,
        acted: bool,
    ) {
        self.rungs.remove(&(node, fault));
        self.acted.remove(&(node, fault));
        self.handed_over.remove(&(node, fault));
        let (node_name, name) = self.with_fleet(|f| {
            (
                f.node_name(node).to_string(),
                f.symbols.name(fault).to_string(),
            )
        });
        let mut policy = self.policies.get(&name).clone();
        if !acted {
            policy.on_resolve.clear();
        }
        step.out
            .push(Output::Decision(Decision::resolved(at, &node_name, &name)));
        step.out.push(Output::Released {
            node: node_name,
            fault: name.clone(),
            on_resolve: policy.on_resolve.len(),
        });
        self.correlate_closed(node, fault, at, step);
        if policy.on_resolve.is_empty() {
            return;
        }
        let wait = match policy.healthy_delay.filter(|d| d.0 > 0) {
            // Put back in service only once it stayed healthy.
            Some(delay) => Some(at.add(delay)),
            // A classed node whose gates do not all hold waits for them.
            None => self.not_ready(node, fault, at),
        };
        match wait {
            Some(due) => {
                self.healing
                    .insert((node, fault), (closed.opened_at, closed.rule));
                self.recoveries
                    .push(Reverse((due, node, fault, closed.opened_at, at)));
            }
            None => {
                let why = format!("{name} resolved");
                self.recover(node, &name, closed.opened_at, closed.rule, at, why, step);
            }
        }
    }

    /// A node fault opened: counted for `[[correlate]]`, and a domain
    /// fault opens where they concentrate.
    fn correlate_opened(
        &mut self,
        node: NodeId,
        fault: Sym,
        name: &str,
        at: Timestamp,
        restored: bool,
        step: &mut Step,
    ) {
        if self.correlator.rules.is_empty() {
            return;
        }
        let verdicts = {
            let w = self.world.borrow();
            let f = &w.fleet;
            if f.is_domain(node) {
                return;
            }
            let value_of = |label: &str| {
                let label = f.symbols.get(label)?;
                f.label_of(node, label)
                    .map(|v| f.symbols.name(v).to_string())
            };
            self.correlator.opened(
                (node, fault),
                name,
                at,
                value_of,
                |l, v| f.known_in(l, v),
                restored,
            )
        };
        for v in verdicts {
            if let crate::correlate::Verdict::Open { rule, value, nodes } = v {
                self.open_incident(rule, &value, nodes, at, step);
            }
        }
    }

    /// The domain fault of `[[correlate]]` block `rule` opens for `value`.
    fn open_incident(
        &mut self,
        rule: usize,
        value: &str,
        nodes: usize,
        at: Timestamp,
        step: &mut Step,
    ) {
        let c = self.correlator.rules[rule].clone();
        let (key, domain) = c.domain(value);
        let (entry, sym, known) = {
            let mut w = self.world.borrow_mut();
            let fleet = &mut w.fleet;
            let known = fleet.known_in(&c.label, value);
            let mut labels = crate::signal::Labels::default();
            labels.insert(c.label.clone(), value.to_string());
            let entry = fleet.touch_domain(&key, &labels, at);
            let sym = fleet.symbols.intern(&c.fault);
            if fleet.open_fault(entry, sym).is_some() {
                return;
            }
            fleet.open(
                entry,
                OpenFault {
                    fault: sym,
                    severity: crate::decision::Severity::Critical,
                    rule: usize::MAX,
                    opened_at: at,
                    types: SmallVec::new(),
                    condition: None,
                    series: SmallVec::new(),
                },
            );
            (entry, sym, known)
        };
        let reason = format!(
            "{nodes} of {known} known nodes in {} {value} with {} within {}: one common cause",
            c.label,
            c.faults.join("/"),
            c.within
        );
        let mut opened = Decision::opened(
            at,
            &key,
            &c.fault,
            crate::decision::Severity::Critical,
            &format!("correlate {}", c.label),
            Some(reason.clone()),
        );
        opened.domain = Some(domain);
        step.out.push(Output::Decision(opened));
        if c.hold {
            step.out.push(Output::Hold {
                label: c.label.clone(),
                value: value.to_string(),
                fault: c.fault.clone(),
                hold: true,
            });
        }
        let policy = self.policies.get(&c.fault).clone();
        let actions = &policy.actions;
        self.ask(
            entry,
            &c.fault,
            actions,
            &policy,
            at,
            at,
            "actions",
            Some(&reason),
            step,
        );
        self.schedule(entry, sym, at, 0, &policy);
    }

    /// A node fault closed: a domain fault whose counted faults are all
    /// closed now resolves (and its hold lifts).
    fn correlate_closed(&mut self, node: NodeId, fault: Sym, at: Timestamp, step: &mut Step) {
        if self.correlator.rules.is_empty() {
            return;
        }
        for v in self.correlator.closed(node, fault) {
            let crate::correlate::Verdict::Resolve { rule, value } = v else {
                continue;
            };
            let c = self.correlator.rules[rule].clone();
            let (key, domain) = c.domain(&value);
            let closed = {
                let mut w = self.world.borrow_mut();
                let fleet = &mut w.fleet;
                let sym = fleet.symbols.intern(&c.fault);
                fleet
                    .find_node(&key)
                    .and_then(|entry| fleet.close(entry, sym).map(|f| (entry, sym, f)))
            };
            if c.hold {
                step.out.push(Output::Hold {
                    label: c.label.clone(),
                    value: value.clone(),
                    fault: c.fault.clone(),
                    hold: false,
                });
            }
            let Some((entry, sym, closed)) = closed else {
                continue;
            };
            self.rungs.remove(&(entry, sym));
            self.acted.remove(&(entry, sym));
            let mut resolved = Decision::resolved(at, &key, &c.fault);
            resolved.domain = Some(domain);
            step.out.push(Output::Decision(resolved));
            let policy = self.policies.get(&c.fault).clone();
            step.out.push(Output::Released {
                node: key.clone(),
                fault: c.fault.clone(),
                on_resolve: policy.on_resolve.len(),
            });
            let why = format!(
                "no {} open in {} {value} any more",
                c.faults.join("/"),
                c.label
            );
            self.recover(
                entry,
                &c.fault,
                closed.opened_at,
                closed.rule,
                at,
                why,
                step,
            );
        }
    }

    /// Asks for the `on_resolve` actions of the occurrence of `fault` opened
    /// at `opened`, at `at`.
    #[allow(clippy::too_many_arguments)]
    fn recover(
        &mut self,
        node: NodeId,
        name: &str,
        opened: Timestamp,
        rule: usize,
        at: Timestamp,
        why: String,
        step: &mut Step,
    ) {
        let policy = self.policies.get(name).clone();
        for action in &policy.on_resolve {
            let mut intent = self.intent(
                node,
                name,
                action,
                Trigger::Recover,
                at,
                &policy,
                "on_resolve".into(),
            );
            (intent.why.rule, intent.why.rule_hash) = self.rule_ref(rule, name);
            intent.opened = opened;
            intent.reason = Some(why.clone());
            intent.params = self.gate_params(node, at).into_iter().collect();
            step.out.push(Output::Act(intent));
        }
    }

    /// Rule `index`'s name and content hash; a common cause's block for
    /// a fault no rule opened.
    fn rule_ref(&self, index: usize, fault: &str) -> (Option<String>, Option<String>) {
        if index < self.rules.len() {
            return (
                Some(self.rules.name(index).to_string()),
                Some(self.rules.hash(index).to_string()),
            );
        }
        let block = self.correlator.rules.iter().find(|c| c.fault == fault);
        (block.map(|c| format!("correlate {}", c.label)), None)
    }

    #[allow(clippy::too_many_arguments)]
    fn intent(
        &self,
        node: NodeId,
        fault: &str,
        action: &str,
        trigger: Trigger,
        at: Timestamp,
        policy: &Policy,
        rung: String,
    ) -> Intent {
        self.with_fleet(|f| {
            // The rule behind the open fault, and which version of it.
            let rule = f
                .symbols
                .get(fault)
                .and_then(|sym| f.open_fault(node, sym))
                .map_or(usize::MAX, |o| o.rule);
            let (rule, rule_hash) = self.rule_ref(rule, fault);
            Intent {
                at,
                domain: f.is_domain(node),
                node: f.node_name(node).to_string(),
                fault: fault.to_string(),
                opened: at,
                reason: None,
                action: action.to_string(),
                labels: f.labels_of(node),
                trigger,
                approval: policy.approval,
                why: Box::new(crate::decision::Why {
                    rule,
                    rule_hash,
                    rung,
                    guards: Vec::new(),
                }),
                params: Default::default(),
            }
        })
    }

    fn schedule(
        &mut self,
        node: NodeId,
        fault: Sym,
        opened_at: Timestamp,
        rung: usize,
        policy: &Policy,
    ) {
        if let Some(e) = policy.escalate.get(rung) {
            let due = opened_at.add(e.after);
            self.timers
                .push(Reverse((due, node, fault, opened_at, rung)));
            self.rungs.insert((node, fault), (opened_at, rung));
        } else {
            self.rungs.remove(&(node, fault));
        }
    }

    /// Takes a decision of the pipeline (the engine's own and the guard
    /// chain's) into account: the efficacy ledger learns from it, and an
    /// action done (executed, or dry_run) starts its `verify` window.
    pub fn observe(&mut self, d: &Decision) {
        self.remember(d);
        if let (Some(action), Some(Outcome::Executed | Outcome::DryRun)) = (&d.action, d.outcome) {
            self.acted(&d.node, &d.fault, action, d.ts);
        }
        if !self.rollouts.is_empty() && d.event == crate::decision::Event::Action {
            self.stepped(d);
        }
    }

    /// Moves what observing decisions led to into `out`.
    pub fn take_queued(&mut self, out: &mut Vec<Output>) {
        out.append(&mut self.queued);
    }

    /// Takes a decision made before into the efficacy ledger only (the
    /// journal's decisions at a restart).
    pub fn remember(&mut self, d: &Decision) {
        if let (crate::decision::Event::Step, Some(kind)) = (d.event, d.step) {
            self.rollouts
                .remembered
                .insert((d.node.clone(), d.fault.clone()), (kind, d.ts));
        }
        let mut w = self.world.borrow_mut();
        let World {
            fleet, efficacy, ..
        } = &mut *w;
        efficacy.observe(d, |node, label| {
            let id = fleet.find_node(node)?;
            let label = fleet.symbols.get(label)?;
            let value = fleet.label_of(id, label)?;
            Some(fleet.symbols.name(value).to_string())
        });
    }

    /// What `node` last reported of its state: (component, version, when)
    /// and (condition, holds, when), each sorted by name.
    pub fn observed(&self, node: &str) -> Option<&Observed> {
        let id = self.with_fleet(|f| f.find_node(node))?;
        self.observed.get(&id)
    }

    /// The efficacy ledger.
    pub fn efficacy(&self) -> std::cell::Ref<'_, crate::efficacy::Ledger> {
        std::cell::Ref::map(self.world.borrow(), |w| &w.efficacy)
    }

    /// An action for `fault` on `node` was done at `at` (executed, or
    /// dry_run in replay): with `verify`, the fault must be gone by
    /// `at + verify` or the next rung is asked for then.
    fn acted(&mut self, node: &str, fault: &str, action: &str, at: Timestamp) {
        let Some(verify) = self.policies.get(fault).verify.filter(|v| v.0 > 0) else {
            return;
        };
        let found = self.with_fleet(|f| {
            let id = f.find_node(node)?;
            let sym = f.symbols.get(fault)?;
            Some((id, sym, f.open_fault(id, sym)?.opened_at))
        });
        let Some((id, sym, opened)) = found else {
            return;
        };
        if self.handed_over.contains(&(id, sym)) {
            return; // with a person now
        }
        self.acted.insert((id, sym), (at, action.to_string()));
        self.verifies
            .push(Reverse((at.add(verify), id, sym, opened)));
    }

    /// Asks for the actions of escalation `rung` of the occurrence of
    /// `fault` opened at `opened`, at `at` (`early`: because verification
    /// failed), and schedules the next rung.
    #[allow(clippy::too_many_arguments)]
    fn escalate(
        &mut self,
        node: NodeId,
        fault: Sym,
        name: &str,
        opened: Timestamp,
        rung: usize,
        at: Timestamp,
        why: String,
        early: Option<&str>,
        step: &mut Step,
    ) {
        let policy = self.policies.get(name).clone();
        let Some(e) = policy.escalate.get(rung) else {
            return;
        };
        let label = format!("escalate[{rung}] after {}", e.after);
        let rung_name = match early {
            Some(via) => format!("{via}, then {label}"),
            None => label,
        };
        if policy.escalate.len() > rung + 1 {
            if let Some(reason) = self.demotion(name, &e.actions, &policy, at) {
                let next = format!(
                    "{reason}: skipped for escalate[{}] ({})",
                    rung + 1,
                    policy.escalate[rung + 1].actions.join(", ")
                );
                let demoted = Outcome::Demoted;
                self.not_asked(
                    node, name, &e.actions, &policy, at, &rung_name, demoted, &next, step,
                );
                let via = format!("escalate[{rung}] demoted");
                self.escalate(
                    node,
                    fault,
                    name,
                    opened,
                    rung + 1,
                    at,
                    next,
                    Some(&via),
                    step,
                );
                return;
            }
        }
        self.ask(
            node,
            name,
            &e.actions,
            &policy,
            opened,
            at,
            &rung_name,
            Some(&why),
            step,
        );
        self.schedule(node, fault, opened, rung + 1, &policy);
    }

    /// `demote`: why the rung of `actions` is skipped at `at`, if the
    /// efficacy ledger shows every one of them rarely fixes `fault`.
    fn demotion(
        &self,
        fault: &str,
        actions: &[String],
        policy: &Policy,
        at: Timestamp,
    ) -> Option<String> {
        let demote = policy.demote.as_ref()?;
        if actions.is_empty() {
            return None;
        }
        let w = self.world.borrow();
        let mut parts = Vec::with_capacity(actions.len());
        for action in actions {
            let stats = w.efficacy.stats(fault, action, at);
            let rate = stats.success_rate()?;
            if stats.runs < demote.min_runs || rate >= demote.below {
                return None;
            }
            parts.push(format!(
                "{action} fixed {fault} in {} of {} runs ({:.0}%)",
                stats.successes,
                stats.runs,
                rate * 100.0
            ));
        }
        Some(format!(
            "{}, below {:.0}% after at least {} runs (demote)",
            parts.join("; "),
            demote.below * 100.0,
            demote.min_runs
        ))
    }

    /// One action decision of `outcome` per action of a rung that is not
    /// asked for (`demoted`, `attempts_exhausted`), with its why.
    #[allow(clippy::too_many_arguments)]
    fn not_asked(
        &self,
        node: NodeId,
        fault: &str,
        actions: &[String],
        policy: &Policy,
        at: Timestamp,
        rung: &str,
        outcome: Outcome,
        reason: &str,
        step: &mut Step,
    ) {
        for action in actions {
            let intent = self.intent(
                node,
                fault,
                action,
                Trigger::Remedy,
                at,
                policy,
                rung.to_string(),
            );
            let mut d = Decision::action(
                at,
                &intent.node,
                fault,
                action,
                outcome,
                Some(reason.to_string()),
            );
            d.why = Some(intent.why);
            step.out.push(Output::Decision(d));
        }
    }

    /// Asks for `actions` of `fault`'s occurrence opened at `opened`, at
    /// `at`, for `rung`, each with `reason`.
    #[allow(clippy::too_many_arguments)]
    fn ask(
        &self,
        node: NodeId,
        fault: &str,
        actions: &[String],
        policy: &Policy,
        opened: Timestamp,
        at: Timestamp,
        rung: &str,
        reason: Option<&str>,
        step: &mut Step,
    ) {
        for action in actions {
            let mut intent = self.intent(
                node,
                fault,
                action,
                Trigger::Remedy,
                at,
                policy,
                rung.to_string(),
            );
            intent.opened = opened;
            intent.reason = reason.map(str::to_string);
            step.out.push(Output::Act(intent));
        }
    }

    /// Whether a `verify` check is due by `now`.
    pub fn verify_due(&self, now: Timestamp) -> bool {
        self.verifies
            .peek()
            .is_some_and(|Reverse((due, ..))| *due <= now)
    }

    /// `verify` checks that fell due by `now`: a fault still open, with no
    /// action since, gets `fault_unverified` and its next rung at once.
    fn check_verified(&mut self, now: Timestamp, step: &mut Step) {
        while let Some(&Reverse((due, node, fault, opened))) = self.verifies.peek() {
            if due > now {
                break;
            }
            self.verifies.pop();
            let open = self.with_fleet(|f| {
                f.open_fault(node, fault)
                    .is_some_and(|o| o.opened_at == opened)
            });
            let name = self.with_fleet(|f| f.symbols.name(fault).to_string());
            let policy = self.policies.get(&name).clone();
            let Some(verify) = policy.verify else {
                continue;
            };
            let Some((at, action)) = self.acted.get(&(node, fault)).cloned() else {
                continue;
            };
            if !open || at.add(verify) != due {
                continue; // resolved, or acted on again since
            }
            self.acted.remove(&(node, fault));
            let node_name = self.with_fleet(|f| f.node_name(node).to_string());
            let next = self
                .rungs
                .get(&(node, fault))
                .filter(|(o, _)| *o == opened)
                .map(|(_, r)| *r);
            let then = match next.and_then(|r| policy.escalate.get(r).map(|e| (r, e))) {
                Some((_, e)) => format!("escalating to {} now", e.actions.join(", ")),
                None => "no rung left: a person has to look".to_string(),
            };
            let reason = format!(
                "verification failed: {name} on {node_name} still open {verify} after {action} at {at}; {then}"
            );
            step.out.push(Output::Decision(Decision::unverified(
                due,
                &node_name,
                &name,
                reason.clone(),
            )));
            if let Some(rung) = next {
                self.escalate(
                    node,
                    fault,
                    &name,
                    opened,
                    rung,
                    due,
                    reason,
                    Some("verify"),
                    step,
                );
            }
        }
    }

    /// Forgets debounce and flap state that can no longer matter.
    fn sweep(&mut self, now: Timestamp) {
        let window = self.flap.window.0;
        let policies = &self.policies;
        let world = self.world.borrow();
        let names = &world.fleet.symbols;
        self.pending
            .retain(|&(_, fault), p| now.0 - p.last.0 <= policies.get(names.name(fault)).hold.0);
        self.flaps
            .retain(|_, f| f.flapping || f.opens.back().is_some_and(|t| now.0 - t.0 <= window));
        self.next_sweep = now.add(Duration::from_secs(60));
    }

    /// Puts back a fault that was open before a restart (from the journal),
    /// so that it is not opened again; `types` are the signal types that
    /// asserted it (a `resolved` signal of one of them resolves it), `done`
    /// the actions already decided for it. The escalation ladder goes on
    /// from the first rung whose actions are not all in `done`: a rung that
    /// fell due while the service was down is asked for once, none twice.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_open(
        &mut self,
        node: &str,
        fault: &str,
        severity: crate::decision::Severity,
        rule: &str,
        opened_at: Timestamp,
        types: &[String],
        done: &[String],
    ) {
        let (node_id, fault_sym) = {
            let mut w = self.world.borrow_mut();
            let fleet = &mut w.fleet;
            let node_id = fleet.touch(node, &crate::signal::Labels::default(), opened_at);
            let fault_sym = fleet.symbols.intern(fault);
            if fleet.open_fault(node_id, fault_sym).is_some() {
                return;
            }
            let types = types.iter().map(|t| fleet.symbols.intern(t)).collect();
            let rule = self.rules.index_of(rule).unwrap_or(usize::MAX);
            fleet.open(
                node_id,
                OpenFault {
                    fault: fault_sym,
                    severity,
                    rule,
                    opened_at,
                    types,
                    // Known again once its condition is re-asserted.
                    condition: None,
                    series: SmallVec::new(),
                },
            );
            (node_id, fault_sym)
        };
        self.restore_correlation(node_id, fault_sym, fault, opened_at);
        if fault == crate::desired::VERSION_DRIFT {
            self.adopt(node_id, opened_at, done);
        }
        let policy = self.policies.get(fault).clone();
        let next = policy
            .escalate
            .iter()
            .take_while(|rung| rung.actions.iter().all(|a| done.contains(a)))
            .count();
        self.schedule(node_id, fault_sym, opened_at, next, &policy);
    }

    /// A fault put back at a restart: a node fault counts for `[[correlate]]`
    /// again; a domain fault of a block is its open incident.
    fn restore_correlation(&mut self, node: NodeId, fault: Sym, name: &str, at: Timestamp) {
        if self.correlator.rules.is_empty() {
            return;
        }
        let entry = self.with_fleet(|f| f.is_domain(node).then(|| f.node_name(node).to_string()));
        match entry {
            Some(key) => {
                let found = self.correlator.rules.iter().enumerate().find_map(|(i, c)| {
                    let value = key.strip_prefix(&format!("{}=", c.label))?;
                    (c.fault == name).then(|| (i, value.to_string()))
                });
                if let Some((i, value)) = found {
                    self.correlator.restore_incident(i, &value);
                }
            }
            None => {
                let mut step = Step::default();
                self.correlate_opened(node, fault, name, at, true, &mut step);
            }
        }
    }

    /// The `[[correlate]]` blocks.
    pub fn correlations(&self) -> &[crate::correlate::Correlation] {
        &self.correlator.rules
    }

    /// Faults being asserted but still waiting out their `for`.
    pub fn pending_faults(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Event;
    use crate::policy::Escalation;
    use crate::signal::Kind;
    use std::collections::BTreeMap;

    const MEMORY: &str = r#"
        const TYPES = ["memory.ecc.uncorrectable", "memory.ecc.correctable"];
        fn classify(s) {
            if s.type == "memory.ecc.uncorrectable" {
                return #{ fault: "memory_failure", severity: "critical", reason: `UE on ${s.node}` };
            }
            if events_within(s.node, s.type, 3600) > 10 {
                return #{ fault: "memory_degraded", reason: "CE storm" };
            }
        }"#;

    fn engine(sources: &[(&str, &str)]) -> Engine {
        build(sources, Policies::default(), Options::default())
    }

    /// An engine over `sources` (name, text) with these policies and options.
    fn build(sources: &[(&str, &str)], policies: Policies, options: Options) -> Engine {
        let world = Engine::world(&options);
        let list: Vec<(&str, &Path, &str)> = sources
            .iter()
            .map(|(n, s)| (*n, Path::new(*n), *s))
            .collect();
        let rules = RuleSet::compile(&list, &options.sandbox, world).unwrap();
        Engine::with_rules(rules, policies, &options)
    }

    fn sig(node: &str, r#type: &str, secs: i64) -> Signal {
        let mut s = Signal::new(node, Kind::Hardware, r#type);
        s.ts = Some(Timestamp::from_secs(1_790_000_000 + secs));
        s
    }

    /// Fault decisions and wanted actions, in order.
    fn events(step: &Step) -> Vec<(Event, String, Option<String>)> {
        step.out
            .iter()
            .filter_map(|o| match o {
                Output::Decision(d) => Some((d.event, d.fault.clone(), None)),
                Output::Act(i) => Some((Event::Action, i.fault.clone(), Some(i.action.clone()))),
                Output::Released { .. } | Output::Stale { .. } | Output::Hold { .. } => None,
            })
            .collect()
    }

    fn first_decision(step: &Step) -> &Decision {
        step.decisions().next().expect("a decision")
    }

    /// A fault opened by a condition (a firing alert) that is neither
    /// re-asserted nor resolved within `stale_after` is marked stale once;
    /// an escalation falling due meanwhile waits, and runs when the
    /// condition is asserted again (Alertmanager's repeat of the same
    /// alert, a duplicate id, counts). A fault opened by an event never goes stale.
    #[test]
    fn a_condition_not_reasserted_goes_stale_and_its_escalation_waits() {
        const ALERT: &str = r#"
            const TYPES = ["NodeRAIDDiskFailure", "disk.io.error"];
            fn classify(s) { #{ fault: "disk_failure", severity: "critical", reason: "RAID" } }"#;
        let mut policies = BTreeMap::new();
        policies.insert(
            "disk_failure".to_string(),
            Policy {
                actions: vec!["notify".into()],
                escalate: vec![Escalation {
                    after: Duration::from_secs(7200),
                    actions: vec!["drain".into()],
                }],
                stale_after: Some(Duration::from_secs(3600)),
                ..Policy::default()
            },
        );
        let mut e = build(
            &[("hardware/disk.rhai", ALERT)],
            Policies::from_config(policies),
            Options::default(),
        );
        let t = |secs: i64| Timestamp::from_secs(1_790_000_000 + secs);
        let alert = |secs: i64| {
            let mut s = sig("n1", "NodeRAIDDiskFailure", 0);
            s.condition = true;
            s.id = Some("fp-firing-startsAt".into());
            (s, t(secs))
        };
        let (s, now) = alert(0);
        let opened = e.on_signal(s, now);
        assert_eq!(first_decision(&opened).event, Event::FaultOpened);
        // Re-sent at 30 min: fresh until 1h30.
        let (s, now) = alert(1800);
        assert!(e.on_signal(s, now).duplicate);
        let mut step = Step::default();
        e.advance(t(3600), &mut step);
        assert_eq!(
            step.decisions().count(),
            0,
            "asserted at 30 min: not stale yet"
        );
        e.advance(t(5400), &mut step);
        let stale: Vec<&Decision> = step.decisions().collect();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].event, Event::FaultStale);
        assert_eq!(stale[0].node, "n1");
        assert!(stale[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("disruptive actions wait"));
        assert!(step
            .out
            .iter()
            .any(|o| matches!(o, Output::Stale { stale: true, .. })));
        step.out.clear();
        e.advance(t(6000), &mut step);
        assert_eq!(step.decisions().count(), 0, "stale once, not again");
        step.out.clear();
        e.advance(t(7300), &mut step);
        assert!(
            !step.out.iter().any(|o| matches!(o, Output::Act(_))),
            "the drain rung fell due on old evidence: it waits"
        );
        // Alertmanager repeats the alert: fresh again, the drain goes now.
        let (s, now) = alert(8000);
        let step = e.on_signal(s, now);
        assert!(step
            .out
            .iter()
            .any(|o| matches!(o, Output::Stale { stale: false, .. })));
        let mut step = Step::default();
        e.advance(t(8000), &mut step);
        let acts: Vec<&str> = step
            .out
            .iter()
            .filter_map(|o| match o {
                Output::Act(i) => Some(i.action.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(acts, ["drain"]);

        // An event (not a condition) opens a fault that never goes stale.
        let mut event = sig("n2", "disk.io.error", 0);
        event.ts = Some(t(8000));
        e.on_signal(event, t(8000));
        step.out.clear();
        e.advance(t(8000 + 10 * 3600), &mut step);
        assert!(step.decisions().all(|d| d.node != "n2"), "{:?}", step.out);
    }

    /// Two series of one alert on one node (node-mixin's
    /// NodeFilesystemAlmostOutOfSpace for / and for /var) hold one fault:
    /// the first to clear does not close it, the second does. A resolved
    /// event (not a condition) still closes by type.
    #[test]
    fn a_fault_held_by_two_condition_series_resolves_when_both_clear() {
        const FS: &str = r#"
            const TYPES = ["NodeFilesystemAlmostOutOfSpace", "disk.pressure"];
            fn classify(s) { #{ fault: "disk_pressure", reason: "full" } }"#;
        let mut e = engine(&[("resource/disk.rhai", FS)]);
        let t0 = Timestamp::default();
        let alert = |mountpoint: &str, resolved: bool, secs: i64| {
            let mut s = sig("n1", "NodeFilesystemAlmostOutOfSpace", secs);
            s.condition = true;
            s.resolved = resolved;
            // Arrival order differs: the series is the label set, not the order.
            if mountpoint == "/" {
                s.labels.insert("instance", "10.0.0.1:9100");
                s.labels.insert("mountpoint", mountpoint);
            } else {
                s.labels.insert("mountpoint", mountpoint);
                s.labels.insert("instance", "10.0.0.1:9100");
            }
            s
        };
        let opened = e.on_signal(alert("/", false, 0), t0);
        assert_eq!(first_decision(&opened).event, Event::FaultOpened);
        assert_eq!(
            e.on_signal(alert("/var", false, 10), t0)
                .decisions()
                .count(),
            0
        );
        let root_freed = e.on_signal(alert("/", true, 20), t0);
        assert_eq!(root_freed.decisions().count(), 0, "/var still holds it");
        let var_freed = e.on_signal(alert("/var", true, 30), t0);
        assert_eq!(first_decision(&var_freed).event, Event::FaultResolved);

        e.on_signal(alert("/", false, 40), t0);
        e.on_signal(alert("/var", false, 50), t0);
        let mut cleared = sig("n1", "NodeFilesystemAlmostOutOfSpace", 60);
        cleared.resolved = true;
        let closed = e.on_signal(cleared, t0);
        assert_eq!(
            first_decision(&closed).event,
            Event::FaultResolved,
            "a resolved event closes by type, as before"
        );
    }

    /// One machine named by its address first and by its node name later:
    /// once a signal carries both, the fault open under the address moves
    /// to the node, and the address's signals are the node's from then on.
    #[test]
    fn an_alias_learned_late_moves_the_open_fault_to_the_node() {
        let options = Options {
            alias_labels: vec!["instance".into()],
            ..Options::default()
        };
        let mut e = build(
            &[("hardware/memory.rhai", MEMORY)],
            Policies::default(),
            options,
        );
        let t0 = Timestamp::default();
        let opened = e.on_signal(sig("10.0.0.7", "memory.ecc.uncorrectable", 0), t0);
        assert_eq!(first_decision(&opened).node, "10.0.0.7");
        let mut taught = sig("worker-7", "memory.ecc.correctable", 60);
        taught.labels.insert("instance", "10.0.0.7:9100");
        let step = e.on_signal(taught, t0);
        assert_eq!(
            step.learned,
            [
                ("10.0.0.7:9100".to_string(), "worker-7".to_string()),
                ("10.0.0.7".into(), "worker-7".into())
            ]
        );
        let moved: Vec<(Event, &str, &str)> = step
            .decisions()
            .map(|d| (d.event, d.node.as_str(), d.fault.as_str()))
            .collect();
        assert_eq!(
            moved,
            [
                (Event::FaultResolved, "10.0.0.7", "memory_failure"),
                (Event::FaultOpened, "worker-7", "memory_failure"),
            ]
        );
        let resolved = step.decisions().next().unwrap();
        assert_eq!(
            resolved.reason.as_deref(),
            Some("10.0.0.7 is worker-7: the fault moves there")
        );
        assert!(
            step.out
                .iter()
                .any(|o| matches!(o, Output::Act(i) if i.node == "worker-7")),
            "the node's policy actions are asked for on the node"
        );
        // The address again: the node's fault, already open, is not reopened.
        let again = e.on_signal(sig("10.0.0.7", "memory.ecc.uncorrectable", 120), t0);
        assert_eq!(again.decisions().count(), 0);
        let mut clear = sig("10.0.0.7", "memory.ecc.uncorrectable", 180);
        clear.resolved = true;
        let cleared = e.on_signal(clear, t0);
        assert_eq!(
            cleared
                .decisions()
                .map(|d| (d.event, d.node.as_str()))
                .collect::<Vec<_>>(),
            [(Event::FaultResolved, "worker-7")]
        );
        assert_eq!(e.with_fleet(|f| f.open_faults()), 0);
        assert_eq!(e.aliases().len(), 2);
        let later = Timestamp::from_secs(1_790_000_200);
        assert_eq!(
            e.with_fleet(|f| f.events_within("worker-7", "memory.ecc.uncorrectable", 3600, later)),
            2,
            "the UE the address sent before the alias was known counts for the node, \
             with the one sent after"
        );
    }

    #[test]
    fn a_fault_opens_once_with_its_policy_actions_and_resolves_by_type() {
        let mut e = engine(&[("hardware/memory.rhai", MEMORY)]);
        let t0 = Timestamp::default();
        let first = e.on_signal(sig("n1", "memory.ecc.uncorrectable", 0), t0);
        assert_eq!(
            events(&first),
            [
                (Event::FaultOpened, "memory_failure".into(), None),
                (
                    Event::Action,
                    "memory_failure".into(),
                    Some("cordon".into())
                ),
                (
                    Event::Action,
                    "memory_failure".into(),
                    Some("ticket".into())
                ),
            ]
        );
        assert_eq!(
            first_decision(&first).rule.as_deref(),
            Some("hardware/memory.rhai")
        );
        assert_eq!(first_decision(&first).reason.as_deref(), Some("UE on n1"));
        let again = e.on_signal(sig("n1", "memory.ecc.uncorrectable", 5), t0);
        assert!(
            again.out.is_empty(),
            "repeats must not reopen: {:?}",
            again.out
        );
        assert_eq!(again.answers.len(), 1);
        let other_type = {
            let mut s = sig("n1", "memory.ecc.correctable", 6);
            s.resolved = true;
            e.on_signal(s, t0)
        };
        assert!(
            other_type.out.is_empty(),
            "another type does not resolve it"
        );
        let mut clear = sig("n1", "memory.ecc.uncorrectable", 10);
        clear.resolved = true;
        let resolved = e.on_signal(clear, t0);
        assert_eq!(
            events(&resolved),
            [
                (Event::FaultResolved, "memory_failure".into(), None),
                (
                    Event::Action,
                    "memory_failure".into(),
                    Some("uncordon".into())
                ),
            ]
        );
        assert!(resolved.out.contains(&Output::Released {
            node: "n1".into(),
            fault: "memory_failure".into(),
            on_resolve: 1
        }));
        let reopened = e.on_signal(sig("n1", "memory.ecc.uncorrectable", 20), t0);
        assert_eq!(first_decision(&reopened).event, Event::FaultOpened);
    }

    #[test]
    fn repeated_ids_are_ignored() {
        let mut e = engine(&[("m.rhai", MEMORY)]);
        let mut s = sig("n1", "memory.ecc.uncorrectable", 0);
        s.id = Some("k1".into());
        assert!(!e.on_signal(s.clone(), Timestamp::default()).duplicate);
        let mut resolved = s.clone();
        resolved.resolved = true;
        let step = e.on_signal(resolved, Timestamp::default());
        assert!(step.duplicate && step.out.is_empty());
        assert_eq!(e.with_fleet(Fleet::open_faults), 1);
    }

    #[test]
    fn signals_without_ts_take_the_given_time() {
        let mut e = engine(&[("m.rhai", MEMORY)]);
        let mut s = sig("n1", "memory.ecc.uncorrectable", 0);
        s.ts = None;
        let now = Timestamp::from_secs(1_800_000_000);
        assert_eq!(first_decision(&e.on_signal(s, now)).ts, now);
    }

    #[test]
    fn a_failing_rule_does_not_keep_the_signal_from_other_rules() {
        let mut e = engine(&[
            ("a_loop.rhai", "fn classify(s) { loop {} }"),
            ("b_deep.rhai", "fn f(n) { f(n) }\nfn classify(s) { f(1) }"),
            ("c_memory.rhai", MEMORY),
        ]);
        let step = e.on_signal(
            sig("n1", "memory.ecc.uncorrectable", 0),
            Timestamp::default(),
        );
        assert_eq!(step.errors.len(), 2);
        assert_eq!(step.errors[0].rule, "a_loop.rhai");
        assert_eq!(step.errors[1].rule, "b_deep.rhai");
        assert_eq!(first_decision(&step).fault, "memory_failure");
    }

    #[test]
    fn events_within_sees_this_signal_and_the_last_hour() {
        let mut e = engine(&[("m.rhai", MEMORY)]);
        for i in 0..10 {
            let step = e.on_signal(
                sig("n1", "memory.ecc.correctable", i * 60),
                Timestamp::default(),
            );
            assert!(step.out.is_empty());
        }
        // 11th within the hour opens memory_degraded with its own policy (ticket only).
        let step = e.on_signal(
            sig("n1", "memory.ecc.correctable", 600),
            Timestamp::default(),
        );
        assert_eq!(
            events(&step),
            [
                (Event::FaultOpened, "memory_degraded".into(), None),
                (
                    Event::Action,
                    "memory_degraded".into(),
                    Some("ticket".into())
                ),
            ]
        );
    }

    #[test]
    fn rule_actions_replace_the_policy() {
        let mut e = engine(&[(
            "r.rhai",
            r#"fn classify(s) { #{ fault: "memory_failure", actions: ["drain"] } }"#,
        )]);
        let step = e.on_signal(sig("n1", "x", 0), Timestamp::default());
        assert_eq!(
            events(&step)[1..],
            [(Event::Action, "memory_failure".into(), Some("drain".into()))]
        );
    }

    #[test]
    fn a_value_above_gate_keeps_the_rule_from_being_asked() {
        let mut e = engine(&[(
            "g.rhai",
            r#"const TYPES = ["load.high"]; const VALUE_ABOVE = #{ "load.high": 2 };
               fn classify(s) { print(`asked about ${s.value}`); #{ fault: "high_load" } }"#,
        )]);
        let mut load = |v: Option<f64>, secs| {
            let mut s = sig("n1", "load.high", secs);
            s.value = v;
            e.on_signal(s, Timestamp::default())
        };
        let quiet = load(Some(2.0), 0);
        assert!(quiet.prints.is_empty() && quiet.evaluated.is_empty() && quiet.out.is_empty());
        assert!(load(None, 1).evaluated.is_empty(), "no value: not above");
        let asked = load(Some(2.5), 2);
        assert_eq!(asked.prints, ["asked about 2.5"]);
        assert_eq!(first_decision(&asked).fault, "high_load");
    }

    #[test]
    fn an_events_at_least_gate_asks_the_rule_only_from_the_nth_signal_in_its_window() {
        let mut e = engine(&[(
            "g.rhai",
            r#"const TYPES = ["crash"]; const EVENTS_AT_LEAST = #{ "crash": [3, 600] };
               fn classify(s) { print(`asked at ${events_within(s.node, s.type, 600)}`); #{ fault: "crashing" } }"#,
        )]);
        let mut crash = |node, secs| e.on_signal(sig(node, "crash", secs), Timestamp::default());
        // Spread wider than the window: never three within 600 s.
        for secs in [0, 400, 800, 1200] {
            assert!(crash("n1", secs).evaluated.is_empty(), "at {secs}");
        }
        assert!(crash("n2", 1300).evaluated.is_empty());
        let third = crash("n1", 1300);
        assert_eq!(third.prints, ["asked at 3"]);
        assert_eq!(first_decision(&third).fault, "crashing");
        assert!(crash("n2", 1301).evaluated.is_empty(), "counted per node");
    }

    #[test]
    fn prints_are_collected_per_signal() {
        let mut e = engine(&[("p.rhai", r#"fn classify(s) { print(`saw ${s.node}`); () }"#)]);
        let step = e.on_signal(sig("n9", "x", 0), Timestamp::default());
        assert_eq!(step.prints, ["saw n9"]);
    }

    /// The memory rule, with `policy` for memory_failure.
    fn memory_with(policy: Policy, flap: Flap) -> Engine {
        let policies = Policies::from_config([("memory_failure".to_string(), policy)].into());
        let options = Options {
            flap,
            ..Options::default()
        };
        build(&[("m.rhai", MEMORY)], policies, options)
    }

    fn resolved(node: &str, r#type: &str, secs: i64) -> Signal {
        let mut s = sig(node, r#type, secs);
        s.resolved = true;
        s
    }

    #[test]
    fn a_fault_with_for_opens_only_when_signalled_that_long() {
        let policy = Policy {
            hold: Duration::from_secs(300),
            actions: vec!["cordon".into()],
            ..Policy::default()
        };
        let mut e = memory_with(policy, Flap::default());
        let t0 = Timestamp::default();
        let ue = "memory.ecc.uncorrectable";
        assert!(e.on_signal(sig("n1", ue, 0), t0).out.is_empty());
        assert!(e.on_signal(sig("n1", ue, 200), t0).out.is_empty());
        assert_eq!(e.pending_faults(), 1);
        // a resolve in between starts it over
        assert!(e.on_signal(resolved("n1", ue, 250), t0).out.is_empty());
        assert!(e.on_signal(sig("n1", ue, 260), t0).out.is_empty());
        assert!(e.on_signal(sig("n1", ue, 500), t0).out.is_empty());
        // a gap longer than `for` starts it over too
        assert!(e.on_signal(sig("n1", ue, 900), t0).out.is_empty());
        assert!(e.on_signal(sig("n1", ue, 1100), t0).out.is_empty());
        let step = e.on_signal(sig("n1", ue, 1200), t0);
        assert_eq!(
            events(&step),
            [
                (Event::FaultOpened, "memory_failure".into(), None),
                (
                    Event::Action,
                    "memory_failure".into(),
                    Some("cordon".into())
                ),
            ]
        );
        assert_eq!(
            first_decision(&step).ts,
            Timestamp::from_secs(1_790_001_200)
        );
        assert_eq!(e.pending_faults(), 0);
    }

    #[test]
    fn escalations_are_asked_for_in_order_while_the_fault_stays_open() {
        let policy = Policy {
            actions: vec!["cordon".into()],
            escalate: vec![
                Escalation {
                    after: Duration::from_secs(600),
                    actions: vec!["drain".into()],
                },
                Escalation {
                    after: Duration::from_secs(3600),
                    actions: vec!["reinstall".into(), "ticket".into()],
                },
            ],
            on_resolve: vec!["uncordon".into()],
            approval: true,
            ..Policy::default()
        };
        let mut e = memory_with(policy, Flap::default());
        let t0 = Timestamp::default();
        let ue = "memory.ecc.uncorrectable";
        e.on_signal(sig("n1", ue, 0), t0);
        assert!(e.on_signal(sig("n2", "x", 599), t0).out.is_empty());
        let step = e.on_signal(sig("n2", "x", 4000), t0);
        let acts: Vec<(String, Timestamp, bool)> = step
            .out
            .iter()
            .filter_map(|o| match o {
                Output::Act(i) => Some((i.action.clone(), i.at, i.approval)),
                _ => None,
            })
            .collect();
        let at = |s: i64| Timestamp::from_secs(1_790_000_000 + s);
        assert_eq!(
            acts,
            [
                ("drain".to_string(), at(600), true),
                ("reinstall".to_string(), at(3600), true),
                ("ticket".to_string(), at(3600), true),
            ]
        );
        // resolved: no more rungs, even when a later one would fall due
        let mut e2 = memory_with(
            Policy {
                escalate: vec![Escalation {
                    after: Duration::from_secs(600),
                    actions: vec!["drain".into()],
                }],
                ..Policy::default()
            },
            Flap::default(),
        );
        e2.on_signal(sig("n1", ue, 0), t0);
        e2.on_signal(resolved("n1", ue, 100), t0);
        e2.on_signal(sig("n1", ue, 200), t0); // reopened: its own ladder from 200
        let step = e2.on_signal(sig("n2", "x", 700), t0);
        assert!(events(&step).is_empty(), "{:?}", step.out);
        let step = e2.on_signal(sig("n2", "x", 800), t0);
        assert_eq!(
            events(&step),
            [(Event::Action, "memory_failure".into(), Some("drain".into()))]
        );
    }

    #[test]
    fn a_flapping_fault_is_held_open_and_flagged_until_quiet() {
        let policy = Policy {
            actions: vec!["cordon".into()],
            on_resolve: vec!["uncordon".into()],
            ..Policy::default()
        };
        let flap = Flap {
            opens: 2,
            window: Duration::from_secs(3600),
        };
        let mut e = memory_with(policy, flap);
        let t0 = Timestamp::default();
        let ue = "memory.ecc.uncorrectable";
        for k in 0..2 {
            let open = e.on_signal(sig("n1", ue, k * 100), t0);
            assert!(!first_decision(&open).flapping);
            let close = e.on_signal(resolved("n1", ue, k * 100 + 50), t0);
            assert_eq!(close.decisions().count(), 1);
        }
        // the third open within the hour: flagged, and the next resolve is ignored
        let open = e.on_signal(sig("n1", ue, 200), t0);
        assert!(first_decision(&open).flapping);
        assert!(first_decision(&open)
            .to_json()
            .contains(r#""flapping":true"#));
        let close = e.on_signal(resolved("n1", ue, 250), t0);
        assert!(close.out.is_empty(), "held open: {:?}", close.out);
        assert_eq!(close.held_open, 1);
        // quiet for a whole window: the resolve goes through, with recovery
        let close = e.on_signal(resolved("n1", ue, 200 + 3600), t0);
        assert_eq!(
            events(&close),
            [
                (Event::FaultResolved, "memory_failure".into(), None),
                (
                    Event::Action,
                    "memory_failure".into(),
                    Some("uncordon".into())
                ),
            ]
        );
    }
}
