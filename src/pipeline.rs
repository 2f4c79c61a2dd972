//! Engine and guard chain together: what `run`, `replay`, `diff` and the
//! tests run, built in one place from the typed config
//! ([`Pipeline::from_config`]). The engine says which faults open and which
//! actions they want; the guard chain decides what becomes of each action.
//! Both run on the time they are handed.

use std::path::Path;

use remedy_actions::{DomainSizes, ExecError, Finished, Guards, Silence};
use remedy_engine::{Decision, Engine, LoadError, Output, Signal, Step, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Who runs the pipeline: only the service acts; offline commands
/// (`replay`, `diff`) are always dry-run, whatever the config says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `remedy run`: actions are carried out unless `dry_run`.
    Live,
    /// `replay`, `diff`, tests: nothing is carried out.
    Offline,
}

/// Known nodes per failure domain, from the engine's fleet.
pub struct Known<'a>(pub &'a remedy_engine::fleet::Fleet);

impl DomainSizes for Known<'_> {
    fn known(&self, label: &str, value: &str) -> usize {
        self.0.known_in(label, value)
    }
}

/// One step the service's pipeline took, taken in at a time of the
/// service's clock: what the journal keeps of the service's input, so that
/// `replay --journal` runs exactly the steps `run` ran, at the same times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// A signal: its JSON text ([`Signal::to_json`]), and whether a
    /// collector took it for a repeated condition (not part of the JSON).
    Signal {
        /// The signal.
        json: String,
        /// [`Signal::condition`].
        condition: bool,
    },
    /// The clock's tick: time moved with no signal (kept only when it
    /// decided something or forgot a node).
    Tick,
    /// An alias of a node from the Kubernetes node list.
    Alias {
        /// The other name.
        alias: String,
        /// The node's name.
        node: String,
    },
    /// An executor's result for a job.
    Finished {
        /// The job's id.
        id: String,
        /// What the executor answered.
        result: Result<String, ExecError>,
    },
    /// An operator's answer to an approval request.
    Approval {
        /// The request's id.
        id: u64,
        /// Approved (or rejected).
        approve: bool,
    },
    /// A silence added over the API.
    Silence(Silence),
    /// A silence removed over the API.
    Unsilence(u64),
    /// An operator released the hold of a common cause on `label = value`.
    ReleaseHold {
        /// The label.
        label: String,
        /// Its value.
        value: String,
    },
    /// An operator resumed the halted rollout of a `[[node_class]]`.
    ResumeRollout {
        /// The class.
        class: String,
    },
}

impl From<&Signal> for Input {
    fn from(signal: &Signal) -> Self {
        Input::Signal {
            json: signal.to_json(),
            condition: signal.condition,
        }
    }
}

impl Input {
    /// How the journal stores it: (kind, body). A signal's body is its own
    /// JSON, the other kinds' their fields.
    pub fn to_row(&self) -> (&'static str, String) {
        match self {
            Input::Signal { json, condition } => (
                if *condition { "condition" } else { "signal" },
                json.clone(),
            ),
            Input::Tick => ("tick", String::new()),
            other => (
                "step",
                serde_json::to_string(other).expect("inputs serialize"),
            ),
        }
    }

    /// Back from a journal row.
    pub fn from_row(kind: &str, body: String) -> Result<Input, String> {
        match kind {
            "signal" | "condition" => Ok(Input::Signal {
                json: body,
                condition: kind == "condition",
            }),
            "tick" => Ok(Input::Tick),
            "step" => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
            other => Err(format!("unknown input kind {other:?}")),
        }
    }
}

/// The engine and its guard chain.
#[derive(Debug)]
pub struct Pipeline {
    /// Rules, fleet state, lifecycle.
    pub engine: Engine,
    /// Budgets, limits, breakers, silences, approvals.
    pub guards: Guards,
    /// The fleet's [`generation`](remedy_engine::fleet::Fleet::generation)
    /// the guards last heard of.
    sizes_seen: u64,
}

impl Pipeline {
    /// Rules, policies, lifecycle options, guards, action kinds and
    /// silences, all as `config` says; `rules` overrides its rules directory.
    pub fn from_config(
        config: &Config,
        rules: Option<&Path>,
        mode: Mode,
    ) -> Result<Self, LoadError> {
        let dir = rules.unwrap_or(&config.rules);
        let options = remedy_engine::Options {
            service_clock: mode == Mode::Live,
            ..config.engine_options()
        };
        let mut engine = Engine::load(dir, config.policies(), &options)?;
        for (alias, node) in &config.identity.aliases {
            engine.restore_alias(alias, node);
        }
        let (mut guard_config, actions) = config.guards();
        guard_config.dry_run |= mode == Mode::Offline;
        let mut guards = Guards::new(guard_config, actions);
        for silence in &config.silences {
            guards.silence(silence.clone());
        }
        Ok(Pipeline::new(engine, guards))
    }

    /// Joins an engine and a guard chain.
    pub fn new(engine: Engine, guards: Guards) -> Self {
        Pipeline {
            engine,
            guards,
            sizes_seen: 0,
        }
    }

    /// Moves time to `now` with no signal: escalations that fell due and
    /// held-back actions whose guard freed (the service calls this on a timer).
    pub fn advance(&mut self, now: Timestamp, step: &mut Step, out: &mut Vec<Decision>) {
        step.out.clear();
        self.engine.advance(now, step);
        self.drain(now, step, out);
    }

    /// Declares `alias` a name of `node` at `now` (the Kubernetes node
    /// list): what is open under the alias moves to the node; the alias, if
    /// new, is in `step.learned`.
    pub fn alias(
        &mut self,
        alias: &str,
        node: &str,
        now: Timestamp,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) {
        self.engine.alias(alias, node, now, step);
        self.drain(now, step, out);
    }

    /// An executor's `result` for job `id` at `now`: its decision (and a
    /// retry's) goes to `out`, and the engine learns what was done.
    pub fn finished(
        &mut self,
        id: &str,
        result: Result<String, ExecError>,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) -> Option<Finished> {
        let start = out.len();
        let finished = self.guards.finished(id, result, now, out);
        self.observe(&out[start..]);
        finished
    }

    /// An operator's answer to approval request `id`; `false` if there is none.
    pub fn approval(
        &mut self,
        id: u64,
        approve: bool,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) -> bool {
        let start = out.len();
        let found = if approve {
            let guards = &mut self.guards;
            self.engine
                .with_fleet(|fleet| guards.approve(id, now, &Known(fleet), out))
        } else {
            self.guards.reject(id, now, out)
        };
        self.observe(&out[start..]);
        found
    }

    /// Runs one journaled input at `at`, as the service ran it.
    pub fn apply(
        &mut self,
        input: Input,
        at: Timestamp,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) -> Result<(), String> {
        match input {
            Input::Signal { json, condition } => {
                let mut signal = Signal::from_json(&json).map_err(|e| format!("{e}: {json}"))?;
                signal.condition = condition;
                self.on_signal(signal, at, step, out);
            }
            Input::Tick => self.advance(at, step, out),
            Input::Alias { alias, node } => self.alias(&alias, &node, at, step, out),
            Input::Finished { id, result } => {
                self.finished(&id, result, at, out);
            }
            Input::Approval { id, approve } => {
                self.approval(id, approve, at, out);
            }
            Input::Silence(silence) => {
                self.guards.silence(silence);
            }
            Input::Unsilence(id) => {
                self.guards.unsilence(id);
            }
            Input::ResumeRollout { class } => {
                step.clear();
                if self.engine.resume(&class, at, step) {
                    self.drain(at, step, out);
                }
            }
            Input::ReleaseHold { label, value } => {
                // What it held goes on at once, through the other guards.
                if self.guards.release_hold(&label, &value) {
                    self.advance(at, step, out);
                }
            }
        }
        Ok(())
    }

    /// Tells the engine every decision made: the efficacy ledger learns
    /// from each, and an action done (executed, or dry_run) starts its
    /// `verify` window.
    fn observe(&mut self, decisions: &[Decision]) {
        for d in decisions {
            self.engine.observe(d);
        }
    }

    fn drain(&mut self, at: Timestamp, step: &mut Step, out: &mut Vec<Decision>) {
        loop {
            let start = out.len();
            self.route(at, step, out);
            self.observe(&out[start..]);
            // A step done asks for the next (contract 10): routed at once.
            self.engine.take_queued(&mut step.out);
            if !step.out.is_empty() {
                continue;
            }
            // An action done now may be due for verification by now already
            // (a replay that jumps hours): check before the next signal.
            if !self.engine.verify_due(at) {
                break;
            }
            step.out.clear();
            self.engine.advance(at, step);
        }
    }

    fn route(&mut self, at: Timestamp, step: &mut Step, out: &mut Vec<Decision>) {
        let Pipeline {
            engine,
            guards,
            sizes_seen,
        } = self;
        engine.with_fleet(|fleet| {
            let known = Known(fleet);
            if fleet.generation() != *sizes_seen {
                // A budget in percent grows with its domain: judge held actions again.
                *sizes_seen = fleet.generation();
                guards.sizes_changed(at);
            }
            guards.tick(at, &known, out);
            for o in step.out.drain(..) {
                match o {
                    Output::Decision(d) => out.push(d),
                    Output::Released {
                        node,
                        fault,
                        on_resolve,
                    } => guards.resolved(&node, &fault, on_resolve, at),
                    Output::Stale { node, fault, stale } => guards.stale(&node, &fault, stale),
                    Output::Hold {
                        label,
                        value,
                        fault,
                        hold,
                    } => guards.hold(&label, &value, &fault, hold),
                    Output::Act(intent) => {
                        let when = intent.at;
                        guards.submit(intent, when, &known, out);
                    }
                }
            }
            guards.tick(at, &known, out);
        });
    }

    /// Processes one signal at `now` (its `ts` if it has one). Rule errors and
    /// prints are left in `step`; every decision, in order, goes to `out`.
    pub fn on_signal(
        &mut self,
        signal: Signal,
        now: Timestamp,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) {
        let at = if self.engine.service_clock() {
            now
        } else {
            signal.ts.unwrap_or(now)
        };
        self.engine.on_signal_into(signal, now, step);
        // Held-back actions whose guard freed by now go before new ones; a
        // node this signal released lets held actions go at once.
        self.drain(at, step, out);
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;
    use std::path::Path;

    use proptest::prelude::*;
    use remedy_actions::{ActionGuards, ActionKind, Budget, GuardConfig, Rate};
    use remedy_engine::{Kind, Options, Outcome, Policies};

    use super::*;

    fn pipeline(budget: Budget, recovery_secs: i64) -> Pipeline {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let engine = Engine::load(&rules, Policies::default(), &Options::default())
            .expect("shipped rules compile");
        let config = GuardConfig {
            max_unhealthy: Some(budget),
            storm_recovery: remedy_engine::Duration::from_secs(recovery_secs),
            ..GuardConfig::default()
        };
        let uncordon: Rate = "6/min".parse().unwrap();
        let actions = BTreeMap::from([(
            "uncordon".to_string(),
            ActionGuards {
                executor: "kubernetes".into(),
                kind: ActionKind::of_op("uncordon"),
                rate: Some(uncordon),
                per: None,
                retry_for: remedy_engine::Duration(0),
            },
        )]);
        Pipeline::new(engine, Guards::new(config, actions))
    }

    /// (node, what, seconds later): 0 heartbeat, 1 UE, 2 UE resolved,
    /// 3 disk SMART failing, 4 SMART resolved.
    fn signals() -> impl Strategy<Value = Vec<(u8, u8, u16)>> {
        proptest::collection::vec((0u8..30, 0u8..5, 0u16..90), 1..250)
    }

    /// A cordon held while its cluster had two known nodes is judged again
    /// as the cluster grows: 5% of 202 nodes allows ten.
    #[test]
    fn a_held_cordon_goes_once_its_cluster_has_grown() {
        let mut p = pipeline(Budget::Percent(5.0), 0);
        let t0 = Timestamp::parse_rfc3339("2026-11-24T00:00:00Z").unwrap();
        let (mut step, mut out) = (Step::default(), Vec::new());
        let mut send = |p: &mut Pipeline, node: usize, r#type: &str, secs: i64| {
            let mut s = Signal::new(format!("n{node}"), Kind::Hardware, r#type);
            let at = t0.add(remedy_engine::Duration::from_secs(secs));
            s.ts = Some(at);
            s.labels.insert("cluster", "c1");
            out.clear();
            p.on_signal(s, at, &mut step, &mut out);
            out.iter()
                .filter(|d| d.action.as_deref() == Some("cordon"))
                .map(|d| (d.node.clone(), d.outcome.unwrap()))
                .collect::<Vec<_>>()
        };
        send(&mut p, 0, "node.heartbeat", 0);
        send(&mut p, 1, "node.heartbeat", 0);
        assert_eq!(
            send(&mut p, 0, "memory.ecc.uncorrectable", 1),
            [("n0".into(), Outcome::DryRun)]
        );
        assert_eq!(
            send(&mut p, 1, "memory.ecc.uncorrectable", 2),
            [("n1".into(), Outcome::BudgetExhausted)]
        );
        let mut passed = Vec::new();
        for n in 2..202 {
            passed.extend(send(&mut p, n, "node.heartbeat", 3 + n as i64 / 50));
        }
        assert_eq!(passed, [("n1".to_string(), Outcome::DryRun)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Through rules, lifecycle and guards: whatever signals arrive, no
        /// cluster ever has more nodes under remediation than its budget of
        /// the nodes known at that moment, and the decisions say the same.
        #[test]
        fn no_sequence_of_signals_exceeds_a_domain_budget(
            input in signals(),
            budget in prop_oneof![
                (1u32..4).prop_map(Budget::Count),
                (10u32..50).prop_map(|p| Budget::Percent(p as f64)),
            ],
            recovery in 0i64..300,
        ) {
            let mut p = pipeline(budget, recovery);
            let mut now = Timestamp::parse_rfc3339("2026-11-24T00:00:00Z").unwrap();
            let (mut step, mut out) = (Step::default(), Vec::new());
            let mut cordoned: BTreeMap<String, String> = BTreeMap::new();
            for (node, what, later) in input {
                now = now.add(remedy_engine::Duration::from_secs(i64::from(later)));
                let (r#type, resolved) = match what {
                    0 => ("node.heartbeat", false),
                    1 => ("memory.ecc.uncorrectable", false),
                    2 => ("memory.ecc.uncorrectable", true),
                    3 => ("disk.smart.failing", false),
                    _ => ("disk.smart.failing", true),
                };
                let mut s = Signal::new(format!("n{node}"), Kind::Hardware, r#type);
                s.ts = Some(now);
                s.resolved = resolved;
                let cluster = format!("c{}", node % 2);
                s.labels.insert("cluster", cluster.clone());
                out.clear();
                p.on_signal(s, now, &mut step, &mut out);
                for d in &out {
                    let disruptive = d.action.as_deref() == Some("cordon");
                    let restore = d.action.as_deref() == Some("uncordon");
                    if d.outcome == Some(remedy_engine::Outcome::DryRun) && disruptive {
                        cordoned.insert(d.node.clone(), d.fault.clone());
                    }
                    if d.outcome == Some(remedy_engine::Outcome::DryRun) && restore {
                        cordoned.remove(&d.node);
                    }
                }
                for c in ["c0", "c1"] {
                    let known = p.engine.with_fleet(|f| f.known_in("cluster", c));
                    let limit = budget.limit(known.max(1));
                    prop_assert!(
                        p.guards.under_remediation(c) <= limit,
                        "{c}: {} under remediation, budget {budget} of {known}",
                        p.guards.under_remediation(c)
                    );
                    let cordoned_here = cordoned
                        .keys()
                        .filter(|n| n[1..].parse::<u8>().unwrap() % 2 == c[1..].parse::<u8>().unwrap())
                        .count();
                    prop_assert!(cordoned_here <= limit, "{c}: {cordoned_here} cordoned, limit {limit}");
                }
            }
        }
    }
}

#[cfg(test)]
mod rollout {
    use remedy_actions::ExecError;
    use remedy_engine::{Decision, Duration, Signal, Step, Timestamp};

    use super::{Input, Mode, Pipeline};
    use crate::config::Config;

    /// A pipeline as `replay` builds it from `config`, with no rules.
    fn offline(config: &str) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("none.rhai"), "fn classify(s) { () }").unwrap();
        let config = Config::parse(config).unwrap();
        Pipeline::from_config(&config, Some(dir.path()), Mode::Offline).unwrap()
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_secs(1_800_000_000 + s)
    }

    fn version(node: &str, component: &str, version: &str, at: Timestamp) -> Signal {
        Signal::from_json(&format!(
            r#"{{"ts":"{at}","node":"{node}","kind":"component","type":"component.version","labels":{{"component":"{component}","version":"{version}","role":"worker"}}}}"#
        ))
        .unwrap()
    }

    fn kubelet_ok(node: &str, at: Timestamp) -> Signal {
        Signal::from_json(&format!(
            r#"{{"ts":"{at}","node":"{node}","kind":"component","type":"condition","labels":{{"condition":"KubeletOK","role":"worker"}},"value":1}}"#
        ))
        .unwrap()
    }

    /// A pipeline and every decision it made so far.
    struct Run {
        p: Pipeline,
        step: Step,
        out: Vec<Decision>,
    }

    impl Run {
        fn new(p: Pipeline) -> Self {
            Run {
                p,
                step: Step::default(),
                out: Vec::new(),
            }
        }

        fn send(&mut self, s: Signal, at: Timestamp) {
            self.p.on_signal(s, at, &mut self.step, &mut self.out);
        }

        /// A node's kubelet version and a KubeletOK that holds.
        fn report(&mut self, node: &str, v: &str, at: Timestamp) {
            self.send(version(node, "kubelet", v, at), at);
            self.send(kubelet_ok(node, at), at);
        }

        fn tick(&mut self, at: Timestamp) {
            self.p.advance(at, &mut self.step, &mut self.out);
        }

        fn apply(&mut self, input: Input, at: Timestamp) {
            self.p
                .apply(input, at, &mut self.step, &mut self.out)
                .unwrap();
        }

        /// Runs every job the guards hand out: upgrades fail for good, the
        /// rest work.
        fn execute(&mut self, at: Timestamp) {
            loop {
                let jobs = self.p.guards.take_jobs();
                if jobs.is_empty() {
                    return;
                }
                for job in jobs {
                    let result = if job.intent.action == "upgrade" {
                        Err(ExecError::Permanent("image pull failed".into()))
                    } else {
                        Ok("done".to_string())
                    };
                    self.p.finished(&job.id, result, at, &mut self.out);
                }
                self.tick(at);
            }
        }

        fn steps(&self, node: &str) -> Vec<String> {
            self.out
                .iter()
                .filter(|d| d.node == node && d.step.is_some())
                .map(|d| d.step.unwrap().as_str().to_string())
                .collect()
        }

        fn count(&self, node: &str, action: &str) -> usize {
            self.out
                .iter()
                .filter(|d| d.node == node && d.action.as_deref() == Some(action))
                .count()
        }
    }

    /// Two drifted workers whose jobs run; n1's upgrade fails and halts the
    /// wave; an hour later n2 has not started. (run, that hour)
    fn halted() -> (Run, Timestamp) {
        let config = r#"
dry_run = false
[[node_class]]
name = "worker"
selector = { role = "worker" }
components = { kubelet = "1.31.2" }
gates = [{ condition = "KubeletOK" }]
[guards]
max_unhealthy = "100%"
"#;
        let mut p = offline(config);
        // Offline is dry-run whatever the config says; here the jobs run.
        let config = Config::parse(config).unwrap();
        p.guards = remedy_actions::Guards::new(
            remedy_actions::GuardConfig {
                dry_run: false,
                ..config.guards().0
            },
            config.guards().1,
        );
        let mut run = Run::new(p);
        let t0 = Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        for node in ["n1", "n2"] {
            run.report(node, "1.30.4", t0);
        }
        run.execute(t0);
        let later = t0.add(Duration::from_secs(3600));
        run.tick(later);
        run.execute(later);
        (run, later)
    }

    #[test]
    fn a_failed_upgrade_halts_the_wave_once_until_its_node_converges() {
        let (mut run, later) = halted();
        assert_eq!(run.steps("n1"), ["cordoned", "drained", "halted"]);
        let halted = run
            .out
            .iter()
            .find(|d| d.step.is_some_and(|s| s.as_str() == "halted"))
            .unwrap();
        assert!(
            halted
                .reason
                .as_deref()
                .unwrap()
                .starts_with("upgrade failed: image pull failed"),
            "{halted:?}"
        );
        let notified = run
            .out
            .iter()
            .filter(|d| d.action.as_deref() == Some("notify"))
            .count();
        assert_eq!(notified, 1, "one notification");
        assert!(
            run.steps("n2").is_empty(),
            "n2 waits while the wave is halted, an hour on"
        );
        // A person fixes n1: it reports the new version, the wave goes on.
        run.report("n1", "1.31.2", later);
        let tick = later.add(Duration::from_secs(1));
        run.tick(tick);
        run.execute(tick);
        assert_eq!(
            run.steps("n1").last().map(String::as_str),
            Some("gates_passed")
        );
        assert_eq!(
            run.steps("n2"),
            ["cordoned", "drained", "halted"],
            "n2 started and failed in turn"
        );
    }

    #[test]
    fn an_operator_resumes_a_halted_wave_and_the_failed_node_is_left_as_it_is() {
        let (mut run, at) = halted();
        assert!(run.steps("n2").is_empty());
        let resume = || Input::ResumeRollout {
            class: "worker".into(),
        };
        let before = run.out.len();
        run.apply(resume(), at);
        let resumed = &run.out[before];
        assert_eq!(resumed.node, "n1");
        assert_eq!(resumed.step.map(|s| s.as_str()), Some("resumed"));
        let tick = at.add(Duration::from_secs(1));
        run.tick(tick);
        run.execute(tick);
        assert_eq!(
            run.steps("n2"),
            ["cordoned", "drained", "halted"],
            "the wave went on"
        );
        assert_eq!(run.steps("n1").last().map(String::as_str), Some("resumed"));
        // Not halted by n1 any more; n2 halted it: one resume each.
        let again = run.out.len();
        run.apply(resume(), tick);
        assert_eq!(
            run.out[again..].iter().filter(|d| d.node == "n2").count(),
            1
        );
        let idle = Timestamp(tick.0 + 1);
        let before = run.out.len();
        run.apply(resume(), idle);
        assert_eq!(run.out.len(), before, "nothing to resume");
        // Fixed by hand later, the node left as it was goes back into
        // service: it was taken out.
        let fixed = Timestamp(idle.0 + 1_000);
        run.report("n1", "1.31.2", fixed);
        let later = fixed.add(Duration::from_secs(180));
        run.tick(later);
        run.execute(later);
        assert!(
            run.count("n1", "uncordon") > 0,
            "n1 uncordoned once it converged"
        );
    }

    #[test]
    fn a_component_that_drifts_while_its_node_converges_is_upgraded_once_too() {
        let mut run = Run::new(offline(
            r#"
[[node_class]]
name = "worker"
selector = { role = "worker" }
components = { kubelet = "1.31.2", containerd = "1.7.22" }
[faults.version_drift]
healthy_delay = "0s"
"#,
        ));
        run.send(version("n1", "kubelet", "1.30.4", t(0)), t(0));
        run.tick(t(1));
        // Dry-run: cordon, drain and the kubelet upgrade pass at once.
        run.send(version("n1", "containerd", "1.7.20", t(2)), t(2));
        run.send(version("n1", "kubelet", "1.30.4", t(3)), t(3));
        run.send(version("n1", "kubelet", "1.31.2", t(4)), t(4));
        run.send(version("n1", "containerd", "1.7.22", t(5)), t(5));
        let upgrades: Vec<String> = run
            .out
            .iter()
            .filter(|d| d.action.as_deref() == Some("upgrade"))
            .map(|d| format!("{} {}", d.params["component"], d.params["version"]))
            .collect();
        assert_eq!(
            upgrades,
            ["kubelet 1.31.2", "containerd 1.7.22"],
            "each once"
        );
        assert_eq!(
            run.steps("n1"),
            [
                "cordoned",
                "drained",
                "applied",
                "applied",
                "gates_passed",
                "uncordoned"
            ]
        );
    }

    #[test]
    fn a_node_that_converges_before_its_turn_is_not_uncordoned() {
        let mut run = Run::new(offline(
            r#"
[[node_class]]
name = "worker"
selector = { role = "worker" }
components = { kubelet = "1.31.2" }
[faults.version_drift]
healthy_delay = "0s"
"#,
        ));
        // n1 starts (dry-run: its steps pass at once and it waits for its
        // version); n2 waits for the one place.
        run.send(version("n1", "kubelet", "1.30.4", t(0)), t(0));
        run.send(version("n2", "kubelet", "1.30.4", t(1)), t(1));
        run.tick(t(2));
        // Someone upgrades n2 by hand before its turn.
        run.send(version("n2", "kubelet", "1.31.2", t(3)), t(3));
        run.send(version("n1", "kubelet", "1.31.2", t(4)), t(4));
        let of = |node: &str| -> Vec<String> {
            run.out
                .iter()
                .filter(|d| d.node == node)
                .map(|d| {
                    d.action
                        .clone()
                        .or(d.step.map(|s| s.as_str().to_string()))
                        .unwrap_or_else(|| d.event.as_str().to_string())
                })
                .collect()
        };
        assert_eq!(
            of("n2"),
            ["fault_opened", "fault_resolved"],
            "never taken out, never put back"
        );
        assert_eq!(
            of("n1"),
            [
                "fault_opened",
                "cordon",
                "cordoned",
                "drain",
                "drained",
                "upgrade",
                "applied",
                "gates_passed",
                "fault_resolved",
                "uncordon",
                "uncordoned"
            ]
        );
    }

    #[test]
    fn a_node_converged_in_waiting_is_not_upgraded_but_waits_again_if_it_drifts_again() {
        let mut run = Run::new(offline(
            r#"
[[node_class]]
name = "worker"
selector = { role = "worker" }
components = { kubelet = "1.31.2" }
gates = [{ condition = "KubeletOK" }]
[faults.version_drift]
healthy_delay = "0s"
"#,
        ));
        // Each signal, then a tick a second later.
        let send = |run: &mut Run, s: Signal, at: Timestamp| {
            run.send(s, at);
            run.tick(at.add(Duration::from_secs(1)));
        };
        send(&mut run, version("n1", "kubelet", "1.30.4", t(0)), t(0));
        send(&mut run, version("n2", "kubelet", "1.30.4", t(2)), t(2));
        // n2's kubelet is upgraded by other means while it waits; its gate
        // is not reported, so its fault stays open.
        send(&mut run, version("n2", "kubelet", "1.31.2", t(4)), t(4));
        send(&mut run, kubelet_ok("n1", t(6)), t(6));
        send(&mut run, version("n1", "kubelet", "1.31.2", t(8)), t(8));
        assert_eq!(run.count("n1", "cordon"), 1);
        assert_eq!(
            run.count("n2", "cordon"),
            0,
            "nothing to upgrade on n2 when its turn came"
        );
        // It drifts again: it waits again, and its turn comes.
        send(&mut run, version("n2", "kubelet", "1.30.4", t(10)), t(10));
        assert_eq!(
            run.count("n2", "cordon"),
            1,
            "n2 started once it drifted again"
        );
        send(&mut run, kubelet_ok("n2", t(12)), t(12));
        send(&mut run, version("n2", "kubelet", "1.31.2", t(14)), t(14));
        let passed = run
            .out
            .iter()
            .filter(|d| d.step.is_some_and(|s| s.as_str() == "gates_passed"))
            .count();
        assert_eq!(passed, 2);
    }
}
