//! The fault lifecycle: the pure, clock-driven state machine that turns
//! signals into decisions. `Engine::on_signal(signal, now)` does no I/O and
//! reads no clock, so replay, rule tests and the live service run the same code
//! and the same input always gives the same output.
//!
//! Per signal: drop it if its `id` was seen; remember the node and the event;
//! a `resolved` signal closes the faults its type asserted; any other signal
//! meets the rules indexed for its type, and each fault they name opens once
//! per node (repeats only add evidence).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;

use rustc_hash::FxHashSet;
use smallvec::smallvec;

use crate::decision::{Decision, Outcome};
use crate::fleet::{Fleet, HistoryLimits, OpenFault};
use crate::policy::Policies;
use crate::rules::{Classification, LoadError, RuleError, RuleSet, Sandbox, SignalArg, World};
use crate::signal::Signal;
use crate::time::Timestamp;

/// Tunables of the engine itself (not of any rule).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Bounds on per-node history.
    pub history: HistoryLimits,
    /// Bounds on each rule call.
    pub sandbox: Sandbox,
    /// How many recent signal `id`s are remembered to drop repeats.
    pub dedup_ids: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            history: HistoryLimits::default(),
            sandbox: Sandbox::default(),
            dedup_ids: 100_000,
        }
    }
}

/// What one signal led to.
#[derive(Debug, Default)]
pub struct Step {
    /// Decisions, in order.
    pub decisions: Vec<Decision>,
    /// Every rule that classified the signal: (rule index, its answer).
    pub answers: Vec<(usize, Classification)>,
    /// Rules that failed on the signal.
    pub errors: Vec<RuleError>,
    /// What rules printed.
    pub prints: Vec<String>,
    /// The signal repeated an `id` already seen and was ignored.
    pub duplicate: bool,
}

impl Step {
    fn clear(&mut self) {
        self.decisions.clear();
        self.answers.clear();
        self.errors.clear();
        self.prints.clear();
        self.duplicate = false;
    }
}

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
        Engine {
            world: rules.world().clone(),
            rules,
            policies,
            ids: IdWindow::new(options.dedup_ids),
            arg: SignalArg::default(),
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

    /// Processes one signal at event time `now` (used when the signal has no `ts`).
    pub fn on_signal(&mut self, signal: Signal, now: Timestamp) -> Step {
        let mut step = Step::default();
        self.on_signal_into(signal, now, &mut step);
        step
    }

    /// Like [`Engine::on_signal`], reusing `step`'s buffers.
    pub fn on_signal_into(&mut self, mut signal: Signal, now: Timestamp, step: &mut Step) {
        step.clear();
        let at = *signal.ts.get_or_insert(now);
        if let Some(id) = &signal.id {
            if !self.ids.insert(id) {
                step.duplicate = true;
                return;
            }
        }
        let (node, r#type) = {
            let mut w = self.world.borrow_mut();
            w.now = at;
            let fleet = &mut w.fleet;
            let node = fleet.touch(&signal.node, &signal.labels, at);
            let r#type = fleet.symbols.intern(&signal.r#type);
            if !signal.resolved {
                fleet.record(node, r#type, at);
            }
            (node, r#type)
        };

        if signal.resolved {
            let closed = self.world.borrow_mut().fleet.resolve_by_type(node, r#type);
            let w = self.world.borrow();
            for fault in closed {
                let name = w.fleet.symbols.name(fault.fault);
                step.decisions
                    .push(Decision::resolved(at, &signal.node, name));
                for action in &self.policies.get(name).on_resolve {
                    step.decisions.push(Decision::action(
                        at,
                        &signal.node,
                        name,
                        action,
                        Outcome::DryRun,
                        None,
                    ));
                }
            }
            return;
        }

        let rules = self.rules.rules_for(r#type);
        if rules.is_empty() {
            return;
        }
        {
            let w = self.world.borrow();
            let fleet = &w.fleet;
            self.arg.fill(
                &signal,
                fleet.node_name(node).clone(),
                fleet.symbols.shared(r#type).clone(),
                |v| fleet.symbols.shared_or_new(v),
            );
        }
        for &index in rules {
            match self.rules.classify(index, &mut self.arg, &signal) {
                Ok(Some(answer)) => step.answers.push((index, answer)),
                Ok(None) => {}
                Err(e) => step.errors.push(e),
            }
        }
        let mut w = self.world.borrow_mut();
        step.prints.append(&mut w.prints);
        let node_name = signal.node.as_str();
        for (index, answer) in &step.answers {
            let fault = w.fleet.symbols.intern(&answer.fault);
            if w.fleet.open_fault(node, fault).is_some() {
                w.fleet.add_fault_type(node, fault, r#type);
                continue;
            }
            w.fleet.open(
                node,
                OpenFault {
                    fault,
                    severity: answer.severity,
                    rule: *index,
                    opened_at: at,
                    types: smallvec![r#type],
                },
            );
            step.decisions.push(Decision::opened(
                at,
                node_name,
                &answer.fault,
                answer.severity,
                self.rules.name(*index),
                answer.reason.clone(),
            ));
            let actions = answer
                .actions
                .as_deref()
                .unwrap_or(&self.policies.get(&answer.fault).actions);
            for action in actions {
                step.decisions.push(Decision::action(
                    at,
                    node_name,
                    &answer.fault,
                    action,
                    Outcome::DryRun,
                    None,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Event;
    use crate::signal::Kind;

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
        let options = Options::default();
        let world = Engine::world(&options);
        let list: Vec<(&str, &Path, &str)> = sources
            .iter()
            .map(|(n, s)| (*n, Path::new(*n), *s))
            .collect();
        let rules = RuleSet::compile(&list, &options.sandbox, world).unwrap();
        Engine::with_rules(rules, Policies::default(), &options)
    }

    fn sig(node: &str, r#type: &str, secs: i64) -> Signal {
        let mut s = Signal::new(node, Kind::Hardware, r#type);
        s.ts = Some(Timestamp::from_secs(1_790_000_000 + secs));
        s
    }

    fn events(step: &Step) -> Vec<(Event, String, Option<String>)> {
        step.decisions
            .iter()
            .map(|d| (d.event, d.fault.clone(), d.action.clone()))
            .collect()
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
            first.decisions[0].rule.as_deref(),
            Some("hardware/memory.rhai")
        );
        assert_eq!(first.decisions[0].reason.as_deref(), Some("UE on n1"));
        let again = e.on_signal(sig("n1", "memory.ecc.uncorrectable", 5), t0);
        assert!(
            again.decisions.is_empty(),
            "repeats must not reopen: {:?}",
            again.decisions
        );
        assert_eq!(again.answers.len(), 1);
        let other_type = {
            let mut s = sig("n1", "memory.ecc.correctable", 6);
            s.resolved = true;
            e.on_signal(s, t0)
        };
        assert!(
            other_type.decisions.is_empty(),
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
        let reopened = e.on_signal(sig("n1", "memory.ecc.uncorrectable", 20), t0);
        assert_eq!(reopened.decisions[0].event, Event::FaultOpened);
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
        assert!(step.duplicate && step.decisions.is_empty());
        assert_eq!(e.with_fleet(Fleet::open_faults), 1);
    }

    #[test]
    fn signals_without_ts_take_the_given_time() {
        let mut e = engine(&[("m.rhai", MEMORY)]);
        let mut s = sig("n1", "memory.ecc.uncorrectable", 0);
        s.ts = None;
        let now = Timestamp::from_secs(1_800_000_000);
        assert_eq!(e.on_signal(s, now).decisions[0].ts, now);
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
        assert_eq!(step.decisions[0].fault, "memory_failure");
    }

    #[test]
    fn events_within_sees_this_signal_and_the_last_hour() {
        let mut e = engine(&[("m.rhai", MEMORY)]);
        for i in 0..10 {
            let step = e.on_signal(
                sig("n1", "memory.ecc.correctable", i * 60),
                Timestamp::default(),
            );
            assert!(step.decisions.is_empty());
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
        assert_eq!(step.decisions[1].action.as_deref(), Some("drain"));
        assert_eq!(step.decisions.len(), 2);
    }

    #[test]
    fn prints_are_collected_per_signal() {
        let mut e = engine(&[("p.rhai", r#"fn classify(s) { print(`saw ${s.node}`); () }"#)]);
        let step = e.on_signal(sig("n9", "x", 0), Timestamp::default());
        assert_eq!(step.prints, ["saw n9"]);
    }
}
