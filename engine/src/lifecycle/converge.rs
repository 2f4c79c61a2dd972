//! Convergence to the node final state (contract 10): drift and failing
//! gates open faults like any rule's, and each drifted node goes through
//! its steps (the policy's actions, by default cordon and drain, then the
//! class's upgrade per component) one at a time, each asked for once the
//! one before is done, paced per class by the rollout settings. The guard
//! chain judges every step like a repair's action, so an upgrade wave and
//! a repair storm share the budgets.

use smallvec::SmallVec;

use super::{Engine, Output, Step};
use crate::decision::{Decision, Outcome, Severity, Trigger};
use crate::desired::{Active, StepKind, GATE_FAILED, VERSION_DRIFT};
use crate::fleet::{NodeId, OpenFault, Sym};
use crate::time::{Duration, Timestamp};

/// One planned step: the action and its params.
type Planned = (String, Vec<(String, String)>);

impl Engine {
    /// The symbols of `version_drift` and `gate_failed`, interned once.
    fn desired_syms(&mut self) -> (Sym, Sym) {
        if let Some(syms) = self.rollouts.syms {
            return syms;
        }
        let syms = {
            let mut w = self.world.borrow_mut();
            let f = &mut w.fleet;
            (
                f.symbols.intern(VERSION_DRIFT),
                f.symbols.intern(GATE_FAILED),
            )
        };
        self.rollouts.syms = Some(syms);
        syms
    }

    /// The class whose selector `node`'s labels match, now (remembered).
    fn class_of(&mut self, node: NodeId) -> Option<usize> {
        let w = self.world.borrow();
        let f = &w.fleet;
        self.rollouts.class_of(node, |k| {
            let key = f.symbols.get(k)?;
            let v = f.label_of(node, key)?;
            Some(f.symbols.name(v))
        })
    }

    /// A node reported a version or a condition: drift and gates are
    /// judged again.
    pub(super) fn converge(&mut self, node: NodeId, at: Timestamp, step: &mut Step) {
        let Some(ci) = self.class_of(node) else {
            return;
        };
        let c = &self.rollouts.classes[ci];
        let observed = self.observed.get(&node);
        let drift = c.drift(observed);
        let failing = c.failing(observed, at);
        let continuous_hold = c
            .gates
            .iter()
            .filter(|g| g.mode == crate::desired::GateMode::Continuous)
            .all(|g| c.condition(observed, &g.condition, at) == Some(true));
        let all_hold = c.all_hold(observed, at);
        let (drift_sym, gate_sym) = self.desired_syms();
        let (drift_open, gate_open) = self.with_fleet(|f| {
            (
                f.open_fault(node, drift_sym).map(|o| o.opened_at),
                f.open_fault(node, gate_sym).is_some(),
            )
        });
        let gate_fails = !failing.is_empty() && !gate_open;
        let gate_holds = gate_open && continuous_hold;
        let drifts = !drift.is_empty() && drift_open.is_none();
        let converged = drift.is_empty() && drift_open.is_some() && all_hold;
        // A component that drifts while its node converges joins its steps.
        let upgrade = &self.rollouts.classes[ci].upgrade;
        let grown: Vec<(String, String)> = match self.rollouts.waves[ci].active.get(&node) {
            Some(a) if drift_open.is_some() && !a.stuck => drift
                .iter()
                .filter(|(c, want, _)| {
                    !a.plan.iter().any(|(action, p)| {
                        action == upgrade
                            && p.iter().any(|(k, v)| k == "component" && v == c)
                            && p.iter().any(|(k, v)| k == "version" && v == want)
                    })
                })
                .map(|(c, want, _)| (c.clone(), want.clone()))
                .collect(),
            _ => Vec::new(),
        };
        if !grown.is_empty() {
            let upgrade = upgrade.clone();
            let a = self.rollouts.waves[ci]
                .active
                .get_mut(&node)
                .expect("active");
            let idle = a.asked >= a.plan.len();
            for (component, version) in grown {
                a.plan.push((
                    upgrade.clone(),
                    vec![("component".into(), component), ("version".into(), version)],
                ));
            }
            if idle {
                a.since = Some(at);
                self.ask_next(ci, node, at, &mut step.out);
            }
        }
        if let (Some(opened), false) = (drift_open, drift.is_empty()) {
            let wave = &self.rollouts.waves[ci];
            if !wave.active.contains_key(&node) && !wave.waiting.contains(&(opened, node)) {
                let name = self.with_fleet(|f| f.node_name(node).to_string());
                let left = self
                    .rollouts
                    .remembered
                    .get(&(name, VERSION_DRIFT.to_string()))
                    .is_some_and(|(kind, t)| {
                        // Left as it is after a failed step (halted without
                        // halt_on_failure, or resumed by an operator).
                        matches!(kind, StepKind::Halted | StepKind::Resumed) && *t >= opened
                    });
                if !left {
                    self.rollouts.waves[ci].waiting.insert((opened, node));
                }
            }
        }
        if !(gate_fails || gate_holds || drifts || converged) {
            return; // nothing changes: the common case, a node as it was
        }
        let class_name = self.rollouts.classes[ci].name.clone();
        // A failing continuous gate takes the node out of service at once.
        if gate_fails {
            let reason = format!("{} false (node_class {class_name})", failing.join(", "));
            self.open_desired(node, gate_sym, GATE_FAILED, &class_name, &reason, at, step);
            let policy = self.policies.get(GATE_FAILED).clone();
            let params = self.gate_params(node, at);
            for action in &policy.actions {
                let planned = (action.clone(), params.clone());
                self.ask_desired(
                    node,
                    GATE_FAILED,
                    &planned,
                    at,
                    at,
                    &class_name,
                    &reason,
                    &mut step.out,
                );
            }
            self.schedule(node, gate_sym, at, 0, &policy);
        } else if gate_holds {
            self.close_desired(node, gate_sym, at, step, true);
        }
        if drifts {
            let reason = drift
                .iter()
                .map(|(c, want, have)| format!("{c}: desired {want}, observed {have}"))
                .collect::<Vec<_>>()
                .join("; ");
            self.open_desired(
                node,
                drift_sym,
                VERSION_DRIFT,
                &class_name,
                &reason,
                at,
                step,
            );
            self.rollouts.waves[ci].waiting.insert((at, node));
        } else if converged {
            let name = self.with_fleet(|f| f.node_name(node).to_string());
            let wave = &mut self.rollouts.waves[ci];
            wave.waiting.retain(|(_, n)| *n != node);
            let started = wave.active.remove(&node).is_some();
            if started {
                wave.done += 1;
                if self.rollouts.classes[ci].rollout.pause_after.0 > 0 {
                    wave.resting.push_back(at);
                }
                let versions = self.rollouts.classes[ci]
                    .components
                    .iter()
                    .map(|(c, v)| format!("{c} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let reason = format!("{versions}; every gate holds");
                step.out.push(Output::Decision(Decision::step(
                    at,
                    &name,
                    VERSION_DRIFT,
                    StepKind::GatesPassed,
                    Some(reason),
                )));
            }
            let wave = &mut self.rollouts.waves[ci];
            if wave.halted.as_ref().is_some_and(|(_, n, _)| *n == name) {
                // The node that stopped the wave converged: it goes on.
                wave.halted = None;
            }
            // A node that converged before its turn was never taken out:
            // nothing to put back. (One an operator left as it was was.)
            let stepped = self
                .rollouts
                .remembered
                .get(&(name.clone(), VERSION_DRIFT.to_string()))
                .is_some_and(|(_, t)| drift_open.is_some_and(|o| *t >= o));
            self.close_desired(node, drift_sym, at, step, started || stepped);
        }
    }

    /// Opens a fault of the node's final state.
    #[allow(clippy::too_many_arguments)]
    fn open_desired(
        &mut self,
        node: NodeId,
        sym: Sym,
        fault: &str,
        class: &str,
        reason: &str,
        at: Timestamp,
        step: &mut Step,
    ) {
        let name = {
            let mut w = self.world.borrow_mut();
            let f = &mut w.fleet;
            f.open(
                node,
                OpenFault {
                    fault: sym,
                    severity: Severity::Warning,
                    rule: usize::MAX,
                    opened_at: at,
                    types: SmallVec::new(),
                    condition: None,
                    series: SmallVec::new(),
                },
            );
            f.node_name(node).to_string()
        };
        self.healing.remove(&(node, sym));
        step.out.push(Output::Decision(Decision::opened(
            at,
            &name,
            fault,
            Severity::Warning,
            &format!("node_class {class}"),
            Some(reason.to_string()),
        )));
    }

    /// Closes a fault of the node's final state as a resolved signal would.
    fn close_desired(
        &mut self,
        node: NodeId,
        sym: Sym,
        at: Timestamp,
        step: &mut Step,
        acted: bool,
    ) {
        let closed = self.world.borrow_mut().fleet.close(node, sym);
        if let Some(closed) = closed {
            self.after_close(node, sym, closed, at, step, acted);
        }
    }

    /// Asks for one planned action of `fault` on `node`.
    #[allow(clippy::too_many_arguments)]
    fn ask_desired(
        &self,
        node: NodeId,
        fault: &str,
        (action, params): &Planned,
        opened: Timestamp,
        at: Timestamp,
        class: &str,
        reason: &str,
        step: &mut Vec<Output>,
    ) {
        let policy = self.policies.get(fault);
        let mut intent = self.intent(
            node,
            fault,
            action,
            Trigger::Remedy,
            at,
            policy,
            // A failing gate's cordon is its policy's actions; a
            // drifted node's steps are its class's rollout.
            if fault == GATE_FAILED {
                "actions"
            } else {
                "rollout"
            }
            .into(),
        );
        intent.opened = opened;
        intent.reason = Some(reason.to_string());
        intent.params = params.iter().cloned().collect();
        intent.why.rule = Some(format!("node_class {class}"));
        step.push(Output::Act(intent));
    }

    /// The steps that converge `node` in class `ci`: the policy's actions
    /// for `version_drift`, then the upgrade of each component (all of the
    /// class's when what drifted is not known, after a restart).
    fn plan(&self, ci: usize, node: NodeId) -> Vec<Planned> {
        let c = &self.rollouts.classes[ci];
        let mut drift = c.drift(self.observed.get(&node));
        if drift.is_empty() {
            drift = c
                .components
                .iter()
                .map(|(c, v)| (c.clone(), v.clone(), String::new()))
                .collect();
        }
        let mut plan: Vec<Planned> = self
            .policies
            .get(VERSION_DRIFT)
            .actions
            .iter()
            .map(|a| (a.clone(), Vec::new()))
            .collect();
        for (component, version, _) in drift {
            plan.push((
                c.upgrade.clone(),
                vec![("component".into(), component), ("version".into(), version)],
            ));
        }
        plan
    }

    /// Asks for the step `node` is at in class `ci` (its plan's `asked`).
    fn ask_next(&mut self, ci: usize, node: NodeId, at: Timestamp, out: &mut Vec<Output>) {
        let Some(a) = self.rollouts.waves[ci].active.get(&node) else {
            return;
        };
        let Some(planned) = a.plan.get(a.asked) else {
            return;
        };
        // A cordon or drain also writes the node's gates (conditions and
        // taints, with the kubernetes executor); an upgrade names its
        // component and version.
        let with_gates;
        let planned = if planned.1.is_empty() {
            with_gates = (planned.0.clone(), self.gate_params(node, at));
            &with_gates
        } else {
            planned
        };
        let reason = match planned.1.as_slice() {
            [(_, component), (_, version)] => format!("{component} -> {version}"),
            _ => format!("step {} of {}", a.asked + 1, a.plan.len()),
        };
        let class = self.rollouts.classes[ci].name.clone();
        let opened = a.opened;
        self.ask_desired(
            node,
            VERSION_DRIFT,
            planned,
            opened,
            at,
            &class,
            &reason,
            out,
        );
    }

    /// Rollout pacing at `now`: steps past their deadline halt their wave;
    /// waiting nodes start while the class has room, inside its window and
    /// after its pause.
    pub(super) fn pace(&mut self, now: Timestamp, step: &mut Step) {
        for ci in 0..self.rollouts.classes.len() {
            let wave = &mut self.rollouts.waves[ci];
            if wave.active.is_empty() && wave.waiting.is_empty() {
                continue;
            }
            let rollout = &self.rollouts.classes[ci].rollout;
            let deadline = rollout.deadline;
            let halted = wave.halted.is_some();
            let halt_on_failure = rollout.halt_on_failure;
            let mut late: SmallVec<[NodeId; 4]> = SmallVec::new();
            let mut resume: SmallVec<[NodeId; 4]> = SmallVec::new();
            for (&node, a) in &mut wave.active {
                match a.since {
                    None => {
                        // Restored: the deadline counts from now, and a step
                        // not asked for before the stop is asked for now.
                        a.since = Some(now);
                        if a.resume {
                            a.resume = false;
                            resume.push(node);
                        }
                    }
                    // A halted wave has said so once: its other steps wait.
                    Some(since) if !a.stuck && !halted && now.0 - since.0 > deadline.0 => {
                        late.push(node);
                    }
                    Some(_) => {}
                }
            }
            for node in resume {
                let mut out = Vec::new();
                self.ask_next(ci, node, now, &mut out);
                step.out.append(&mut out);
            }
            // One halt per wave: the node late the longest stops it.
            let since_of = |n: &NodeId| self.rollouts.waves[ci].active.get(n).and_then(|a| a.since);
            late.sort_by_key(|n| (since_of(n), *n));
            late.truncate(if halt_on_failure { 1 } else { late.len() });
            for node in late {
                let what = self.rollouts.waves[ci]
                    .active
                    .get(&node)
                    .map(|a| match a.plan.get(a.asked) {
                        Some((action, _)) => format!("{action} not done"),
                        None => format!("not converged ({})", self.unconverged(ci, node, now)),
                    })
                    .unwrap_or_default();
                let why = format!("{what} within the deadline {deadline}");
                self.fail(ci, node, now, why, step);
            }
            self.start(ci, now, step);
        }
    }

    /// What keeps `node` of class `ci` from converging at `now`: its
    /// components not at their desired version and its gates not true.
    fn unconverged(&self, ci: usize, node: NodeId, now: Timestamp) -> String {
        let c = &self.rollouts.classes[ci];
        let observed = self.observed.get(&node);
        let mut what: Vec<String> = c
            .components
            .iter()
            .filter_map(|(component, want)| {
                match observed.and_then(|o| o.components.get(component)) {
                    Some((have, _)) if have == want => None,
                    Some((have, _)) => Some(format!("{component} {have}, desired {want}")),
                    None => Some(format!("{component} not reported, desired {want}")),
                }
            })
            .collect();
        what.extend(
            c.gates_at(observed, now)
                .into_iter()
                .filter_map(|(g, holds)| match holds {
                    Some(true) => None,
                    Some(false) => Some(format!("{} false", g.condition)),
                    None => Some(format!("{} unknown", g.condition)),
                }),
        );
        what.join("; ")
    }

    /// Starts waiting nodes of class `ci` while it has room at `now`.
    fn start(&mut self, ci: usize, now: Timestamp, step: &mut Step) {
        let c = &self.rollouts.classes[ci];
        let wave = &self.rollouts.waves[ci];
        if wave.halted.is_some() || wave.waiting.is_empty() {
            return;
        }
        if let Some(w) = &c.rollout.window {
            // Judged once a minute: the window's edges are minutes.
            let minute = now.0.div_euclid(60_000);
            let open = match self.rollouts.waves[ci].window_open {
                Some((m, open)) if m == minute => open,
                _ => {
                    let open = w.open_at(now);
                    self.rollouts.waves[ci].window_open = Some((minute, open));
                    open
                }
            };
            if !open {
                return;
            }
        }
        let c = &self.rollouts.classes[ci];
        // A place freed by a node done rests `pause_after` before the next.
        let pause = c.rollout.pause_after.0;
        let concurrency = c.rollout.concurrency;
        let wave = &mut self.rollouts.waves[ci];
        while wave.resting.front().is_some_and(|t| now.0 - t.0 >= pause) {
            wave.resting.pop_front();
        }
        let (drift_sym, _) = self.desired_syms();
        loop {
            let wave = &self.rollouts.waves[ci];
            if wave.active.len() + wave.resting.len() >= concurrency {
                break;
            }
            let Some(first) = self.rollouts.waves[ci].waiting.pop_first() else {
                break;
            };
            let node = first.1;
            let opened = self.with_fleet(|f| f.open_fault(node, drift_sym).map(|o| o.opened_at));
            let Some(opened) = opened else {
                continue; // resolved or forgotten meanwhile
            };
            let c = &self.rollouts.classes[ci];
            let observed = self.observed.get(&node);
            let known = c
                .components
                .iter()
                .all(|(k, _)| observed.is_some_and(|o| o.components.contains_key(k)));
            if known && c.drift(observed).is_empty() {
                // Its versions converged while it waited (its gates not yet
                // all holding): nothing to upgrade. Should it drift again,
                // it waits again.
                continue;
            }
            let plan = self.plan(ci, node);
            let wave = &mut self.rollouts.waves[ci];
            if wave.active.is_empty() {
                wave.waves += 1;
            }
            wave.active.insert(
                node,
                Active {
                    opened,
                    plan,
                    asked: 0,
                    step: None,
                    since: Some(now),
                    stuck: false,
                    resume: false,
                },
            );
            let mut out = Vec::new();
            self.ask_next(ci, node, now, &mut out);
            step.out.append(&mut out);
        }
    }

    /// A step of `node` failed or went past its deadline: with
    /// `halt_on_failure` its wave stops (one `halted` step, one notify);
    /// without, the node stays as it is and its place goes to the next.
    fn fail(&mut self, ci: usize, node: NodeId, at: Timestamp, why: String, step: &mut Step) {
        let halt = self.rollouts.classes[ci].rollout.halt_on_failure;
        let class = self.rollouts.classes[ci].name.clone();
        let name = self.with_fleet(|f| f.node_name(node).to_string());
        let wave = &mut self.rollouts.waves[ci];
        let Some(a) = wave.active.get_mut(&node) else {
            return;
        };
        if a.stuck {
            return;
        }
        a.stuck = true;
        let opened = a.opened;
        wave.failed += 1;
        let reason = if halt {
            wave.halted = Some((at, name.clone(), why.clone()));
            format!("{why}: rollout of node_class {class} halted; it goes on once {name} converges")
        } else {
            wave.active.remove(&node);
            format!("{why}: {name} left as it is, the rollout of node_class {class} goes on")
        };
        step.out.push(Output::Decision(Decision::step(
            at,
            &name,
            VERSION_DRIFT,
            StepKind::Halted,
            Some(reason.clone()),
        )));
        let planned = ("notify".to_string(), Vec::new());
        self.ask_desired(
            node,
            VERSION_DRIFT,
            &planned,
            opened,
            at,
            &class,
            &reason,
            &mut step.out,
        );
    }

    /// An action decision: a step done (executed, or dry_run) becomes a
    /// `step` decision and the next step is asked for; a step that failed
    /// for good fails its node.
    pub(super) fn stepped(&mut self, d: &Decision) {
        if d.fault != VERSION_DRIFT && d.fault != GATE_FAILED {
            return;
        }
        let (Some(action), Some(outcome)) = (d.action.as_deref(), d.outcome) else {
            return;
        };
        let Some(node) = self.with_fleet(|f| f.find_node(&d.node)) else {
            return;
        };
        let ci = self.rollouts.member(node);
        let upgrade = ci.map(|ci| self.rollouts.classes[ci].upgrade.as_str());
        let kind = match action {
            "cordon" => Some(StepKind::Cordoned),
            "drain" => Some(StepKind::Drained),
            "uncordon" => Some(StepKind::Uncordoned),
            a if Some(a) == upgrade => Some(StepKind::Applied),
            _ => None,
        };
        let done = matches!(outcome, Outcome::Executed | Outcome::DryRun);
        if let (true, Some(kind)) = (done, kind) {
            let mut s = Decision::step(d.ts, &d.node, &d.fault, kind, d.detail.clone());
            if outcome == Outcome::DryRun {
                s.outcome = Some(Outcome::DryRun);
            }
            self.queued.push(Output::Decision(s));
        }
        let (Some(ci), true) = (ci, d.fault == VERSION_DRIFT) else {
            return;
        };
        let Some(a) = self.rollouts.waves[ci].active.get_mut(&node) else {
            return;
        };
        if a.plan.get(a.asked).is_none_or(|(name, _)| name != action) {
            return;
        }
        let failed = matches!(outcome, Outcome::Rejected)
            || (outcome == Outcome::Failed && d.retry_at.is_none());
        if done {
            a.step = kind.or(a.step);
            a.asked += 1;
            a.since = Some(d.ts);
            let mut out = Vec::new();
            self.ask_next(ci, node, d.ts, &mut out);
            self.queued.append(&mut out);
        } else if failed {
            let why = format!(
                "{action} {}: {}",
                outcome.as_str(),
                d.reason.as_deref().unwrap_or("no reason given")
            );
            let mut step = Step::default();
            self.fail(ci, node, d.ts, why, &mut step);
            self.queued.append(&mut step.out);
        }
    }

    /// A `version_drift` put back at a restart: the node is where its
    /// journaled steps left it; a step it never asked for is asked for at
    /// the first tick, one it did (`done`) never again.
    pub(super) fn adopt(&mut self, node: NodeId, opened: Timestamp, done: &[String]) {
        let Some(ci) = self.class_of(node) else {
            return;
        };
        let name = self.with_fleet(|f| f.node_name(node).to_string());
        let last = self
            .rollouts
            .remembered
            .get(&(name.clone(), VERSION_DRIFT.to_string()))
            .filter(|(_, at)| *at >= opened)
            .copied();
        let plan = self.plan(ci, node);
        // The step after the last one done; what was asked for but not
        // done (held by a guard, or with an executor) is in `done` and
        // goes on from there.
        let after = |action: &str| {
            plan.iter()
                .position(|(a, _)| a == action)
                .map_or(0, |i| i + 1)
        };
        let upgrade = self.rollouts.classes[ci].upgrade.clone();
        let asked = match last.map(|(kind, _)| kind) {
            None => 0,
            Some(StepKind::Cordoned) => after("cordon"),
            Some(StepKind::Drained) => after("drain"),
            Some(StepKind::Applied) => plan
                .iter()
                .rposition(|(a, _)| *a == upgrade)
                .map_or(plan.len(), |i| i + 1),
            Some(_) => plan.len(),
        };
        let wave = &mut self.rollouts.waves[ci];
        if last.is_none() && !plan.first().is_some_and(|(a, _)| done.contains(a)) {
            wave.waiting.insert((opened, node));
            return;
        }
        if let Some((StepKind::Resumed, _)) = last {
            return; // left as it is by an operator
        }
        if let Some((StepKind::Halted, at)) = last {
            let why = "halted before the restart".to_string();
            wave.halted = Some((at, name, why));
        }
        // The step asked for last is `asked - 1` when it is still with
        // the guards or an executor; `asked` is asked for at the first tick.
        let resume = asked < plan.len()
            && !matches!(last, Some((StepKind::Halted, _)))
            && !done.contains(&plan[asked].0);
        wave.active.insert(
            node,
            Active {
                opened,
                plan,
                asked,
                step: last.map(|(k, _)| k),
                since: None,
                stuck: matches!(last, Some((StepKind::Halted, _))),
                resume,
            },
        );
    }

    /// An operator resumes class `class`'s halted wave at `at`: the node
    /// that stopped it is left as it is (its fault stays open, it stays
    /// cordoned) and new nodes start again. `false` when the class is not
    /// halted (or unknown).
    pub fn resume(&mut self, class: &str, at: Timestamp, step: &mut Step) -> bool {
        let Some(ci) = self.rollouts.classes.iter().position(|c| c.name == class) else {
            return false;
        };
        let Some((_, name, why)) = self.rollouts.waves[ci].halted.take() else {
            return false;
        };
        if let Some(node) = self.with_fleet(|f| f.find_node(&name)) {
            self.rollouts.waves[ci].active.remove(&node);
        }
        step.out.push(Output::Decision(Decision::step(
            at,
            &name,
            VERSION_DRIFT,
            StepKind::Resumed,
            Some(format!(
                "rollout of node_class {class} resumed by an operator; {name} is left as it is (halted: {why})"
            )),
        )));
        true
    }

    /// When `fault`'s `on_resolve` may put `node` back in service, if not
    /// at `due`: a classed node waits while its gates do not all hold.
    /// (Another fault that keeps it out of service, such as an upgrade in
    /// progress, is the guard chain's to judge: its uncordon is refused.)
    pub(super) fn not_ready(&self, node: NodeId, fault: Sym, due: Timestamp) -> Option<Timestamp> {
        let ci = self.rollouts.member(node)?;
        let c = &self.rollouts.classes[ci];
        if c.all_hold(self.observed.get(&node), due) {
            return None;
        }
        let name = self.with_fleet(|f| f.symbols.name(fault).to_string());
        let wait = self
            .policies
            .get(&name)
            .healthy_delay
            .filter(|d| d.0 > 0)
            .unwrap_or(Duration::from_secs(60));
        Some(due.add(wait))
    }

    /// The gates of a classed node as an action's params (`gates` =
    /// `KubeletOK=true,DiskOK=unknown`): what the kubernetes executor writes
    /// as Node conditions and taints.
    pub(super) fn gate_params(&self, node: NodeId, at: Timestamp) -> Vec<(String, String)> {
        let Some(ci) = self.rollouts.member(node) else {
            return Vec::new();
        };
        let c = &self.rollouts.classes[ci];
        if c.gates.is_empty() {
            return Vec::new();
        }
        let gates = c
            .gates_at(self.observed.get(&node), at)
            .into_iter()
            .map(|(g, state)| {
                let state = match state {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => "unknown",
                };
                format!("{}={state}", g.condition)
            })
            .collect::<Vec<_>>()
            .join(",");
        vec![("gates".into(), gates)]
    }

    /// The nodes class `ci` selects (as of their last report) and those of
    /// them whose reported versions are not its desired ones, by name.
    pub fn drifted(&self, ci: usize) -> (usize, Vec<String>) {
        let c = &self.rollouts.classes[ci];
        let mut members = 0;
        let mut drifted: Vec<String> = Vec::new();
        for (&node, &class) in &self.rollouts.member {
            if class != ci {
                continue;
            }
            members += 1;
            if !c.drift(self.observed.get(&node)).is_empty() {
                drifted.push(self.with_fleet(|f| f.node_name(node).to_string()));
            }
        }
        drifted.sort();
        (members, drifted)
    }

    /// The classes and their waves.
    pub fn rollouts(&self) -> &crate::desired::Rollouts {
        &self.rollouts
    }

    /// Node `node`'s final state: its class, desired versions, gates at
    /// `now` and where it is in its wave.
    pub fn final_state(&self, node: &str, now: Timestamp) -> Option<serde_json::Value> {
        let id = self.with_fleet(|f| f.find_node(node))?;
        let (class, active, waiting) = self.rollouts.position(id)?;
        let observed = self.observed.get(&id);
        let desired: serde_json::Map<String, serde_json::Value> = class
            .components
            .iter()
            .map(|(c, v)| (c.clone(), v.clone().into()))
            .collect();
        let gates: Vec<serde_json::Value> = class
            .gates_at(observed, now)
            .into_iter()
            .map(|(g, state)| {
                serde_json::json!({
                    "condition": g.condition,
                    "mode": g.mode,
                    "holds": state,
                })
            })
            .collect();
        let drift = class.drift(observed);
        let last = self
            .rollouts
            .remembered
            .get(&(node.to_string(), VERSION_DRIFT.to_string()))
            .map(|(kind, _)| *kind);
        let (state, step) = match active {
            Some(a) if a.stuck => ("halted", a.step),
            Some(a) => ("in_progress", a.step),
            None if waiting => ("pending", None),
            None if drift.is_empty() && class.all_hold(observed, now) => ("converged", last),
            None if drift.is_empty() => ("not_ready", last),
            None => ("drifted", None),
        };
        Some(serde_json::json!({
            "class": class.name,
            "desired": desired,
            "drift": drift.iter().map(|(c, want, have)| serde_json::json!({
                "component": c, "desired": want, "observed": have,
            })).collect::<Vec<_>>(),
            "gates": gates,
            "ready": class.all_hold(observed, now),
            "rollout": state,
            "step": step,
        }))
    }

    /// Per class: nodes converged, pending, in progress, failed; whether
    /// the wave is halted and why; its window and waves so far.
    pub fn rollout_status(&self, now: Timestamp) -> Vec<serde_json::Value> {
        let r = &self.rollouts;
        let mut members = vec![0usize; r.classes.len()];
        let mut converged = vec![0usize; r.classes.len()];
        // Waiting is ordered by drift time: one pass to look nodes up by id.
        let waiting: rustc_hash::FxHashSet<NodeId> = r
            .waves
            .iter()
            .flat_map(|w| w.waiting.iter().map(|(_, n)| *n))
            .collect();
        for (&node, &ci) in &r.member {
            members[ci] += 1;
            let c = &r.classes[ci];
            let observed = self.observed.get(&node);
            let drifting = !c.drift(observed).is_empty()
                || r.waves[ci].active.contains_key(&node)
                || waiting.contains(&node);
            if !drifting
                && c.components
                    .iter()
                    .all(|(k, _)| observed.is_some_and(|o| o.components.contains_key(k)))
            {
                converged[ci] += 1;
            }
        }
        r.classes
            .iter()
            .zip(&r.waves)
            .enumerate()
            .map(|(ci, (c, w))| {
                let mut in_progress: Vec<String> = w
                    .active
                    .iter()
                    .map(|(n, a)| {
                        let name = self.with_fleet(|f| f.node_name(*n).to_string());
                        match a.step {
                            Some(s) => format!("{name} ({})", s.as_str()),
                            None => name,
                        }
                    })
                    .collect();
                in_progress.sort();
                let next = c
                    .rollout
                    .window
                    .as_ref()
                    .filter(|win| !win.open_at(now))
                    .and_then(|win| win.next_open(now));
                serde_json::json!({
                    "class": c.name,
                    "desired": c.components.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    "nodes": members[ci],
                    "converged": converged[ci],
                    "pending": w.waiting.len(),
                    "in_progress": in_progress,
                    "done": w.done,
                    "failed": w.failed,
                    "halted": w.halted.as_ref().map(|(at, node, why)| serde_json::json!({
                        "at": at, "node": node, "reason": why,
                    })),
                    "waves": w.waves,
                    "concurrency": c.rollout.concurrency,
                    "window": c.rollout.window.as_ref().map(ToString::to_string),
                    "window_opens": next,
                })
            })
            .collect()
    }
}
