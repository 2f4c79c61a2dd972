//! `remedy simulate rollout`: a fleet converging to a new desired state, in
//! a closed loop with the same pipeline `replay` and the service run. Every
//! node reports its kubelet version and its gates every five minutes; the
//! class declares a newer kubelet; each node's agent answers an `upgrade`
//! (executed or, as here, dry_run) by reporting the new version with its
//! gates 1-3 minutes later. A few nodes fail theirs: KubeletOK turns false
//! and the version stays, until they recover 45 minutes later. With
//! `--storm`, a tenth of the fleet loses power halfway through, so repairs
//! and upgrades compete for the same budgets.
//!
//! Decisions go to stdout as JSON lines; progress and a summary (waves, the
//! most nodes converging at once per class, the most out of service per
//! cluster) to stderr.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::io::{self, Write};

use remedy_engine::desired::StepKind;
use remedy_engine::{Decision, Duration, Event, Outcome, Signal, Step, Timestamp};

use crate::pipeline::Pipeline;
use crate::synth::Rng;

/// The fleet and its bad luck.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Nodes (clusters of 2,000, racks of 40), all `role=worker`.
    pub nodes: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Length of the run in event time.
    pub minutes: u64,
    /// Nodes whose upgrade fails (recovering 45 minutes later).
    pub fail: u64,
    /// A tenth of the fleet loses power halfway through, for 20 minutes.
    pub storm: bool,
    /// The kubelet version every node starts with.
    pub from: String,
}

/// What the run showed.
#[derive(Debug, Default)]
pub struct Summary {
    /// Signals the fleet sent.
    pub signals: u64,
    /// Decisions made.
    pub decisions: u64,
    /// Steps by name.
    pub steps: BTreeMap<&'static str, u64>,
    /// Nodes that passed their gates with the new version.
    pub converged: u64,
    /// Most nodes converging at once (first step to gates_passed), by class.
    pub most_in_progress: usize,
    /// Most nodes out of service (cordoned, not yet uncordoned) at once, by cluster.
    pub most_out: BTreeMap<String, usize>,
    /// Halts, with their reason.
    pub halts: Vec<String>,
    /// At the end: actions held back by a guard, and the nodes under
    /// remediation per domain.
    pub held: usize,
    /// (level, domain, nodes) under remediation at the end.
    pub under: Vec<(String, String, usize)>,
}

impl Summary {
    /// The summary printed on stderr.
    pub fn render(&self) -> String {
        let steps: Vec<String> = self.steps.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let out: Vec<String> = self
            .most_out
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let mut text = format!(
            "rollout: {} signals, {} decisions; {} nodes converged\nsteps: {}\nmost converging at once: {}\nmost out of service at once: {}\nhalts: {}\n",
            self.signals,
            self.decisions,
            self.converged,
            steps.join(", "),
            self.most_in_progress,
            out.join(", "),
            self.halts.len()
        );
        for h in &self.halts {
            text.push_str(&format!("  {h}\n"));
        }
        let under: Vec<String> = self
            .under
            .iter()
            .map(|(l, v, n)| format!("{l} {v} {n}"))
            .collect();
        text.push_str(&format!(
            "at the end: {} actions held back by a guard; under remediation: {}\n",
            self.held,
            if under.is_empty() {
                "none".to_string()
            } else {
                under.join(", ")
            }
        ));
        text
    }
}

fn node_name(i: u64) -> String {
    format!("node-{i:05}")
}

/// The fleet's index of a node named by [`node_name`].
fn node_index(name: &str) -> Option<u64> {
    name.strip_prefix("node-")?.parse().ok()
}

/// Clusters of 2,000 nodes.
fn cluster(i: u64) -> String {
    format!("c{:03}", i / 2000)
}

fn labels(i: u64) -> String {
    format!(
        r#""role":"worker","cluster":"{}","rack":"r{:04}""#,
        cluster(i),
        i / 40
    )
}

fn version_signal(at: Timestamp, i: u64, version: &str) -> String {
    format!(
        r#"{{"ts":"{at}","node":"{}","kind":"component","type":"component.version","labels":{{"component":"kubelet","version":"{version}",{}}}}}"#,
        node_name(i),
        labels(i)
    )
}

fn gate_signal(at: Timestamp, i: u64, gate: &str, holds: bool) -> String {
    format!(
        r#"{{"ts":"{at}","node":"{}","kind":"component","type":"condition","labels":{{"condition":"{gate}",{}}},"value":{}}}"#,
        node_name(i),
        labels(i),
        u8::from(holds)
    )
}

/// What a node reports, and whether it holds.
#[derive(Clone, Debug)]
struct NodeState {
    version: String,
    kubelet_ok: bool,
}

/// The fleet and what it has done so far.
struct Fleet {
    nodes: Vec<NodeState>,
    /// Nodes whose next upgrade fails.
    failing: BTreeSet<u64>,
    queue: Queue,
    seq: u64,
    rng: Rng,
    summary: Summary,
    /// Nodes converging: from their upgrade's cordon to gates_passed.
    in_progress: BTreeSet<String>,
    /// Nodes cordoned and not yet uncordoned, per cluster.
    out_of_service: BTreeMap<String, BTreeSet<String>>,
}

impl Fleet {
    fn push(&mut self, at: Timestamp, h: Happening) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, h)));
    }

    /// What a node sends when `happening` happens at `at`.
    fn signals(&mut self, at: Timestamp, happening: Happening) -> Vec<String> {
        let report = |i: u64, n: &NodeState| {
            vec![
                version_signal(at, i, &n.version),
                gate_signal(at, i, "KubeletOK", n.kubelet_ok),
                gate_signal(at, i, "DiskOK", true),
            ]
        };
        match happening {
            Happening::Report(i) => {
                self.push(at.add(Duration::from_secs(300)), Happening::Report(i));
                report(i, &self.nodes[i as usize])
            }
            Happening::Upgraded(i, version) => {
                if self.failing.contains(&i) {
                    self.nodes[i as usize].kubelet_ok = false;
                    let fixed = at.add(Duration::from_secs(45 * 60));
                    self.push(fixed, Happening::Recovered(i, version));
                } else {
                    let n = &mut self.nodes[i as usize];
                    n.version = version;
                    n.kubelet_ok = true;
                }
                report(i, &self.nodes[i as usize])
            }
            Happening::Recovered(i, version) => {
                self.failing.remove(&i);
                let n = &mut self.nodes[i as usize];
                n.version = version;
                n.kubelet_ok = true;
                report(i, n)
            }
            Happening::PowerLost(i, back) => {
                let resolved = if back { r#","resolved":true"# } else { "" };
                vec![format!(
                    r#"{{"ts":"{at}","node":"{}","kind":"hardware","type":"power.lost","labels":{{{}}},"message":"BMC: AC power lost"{resolved}}}"#,
                    node_name(i),
                    labels(i)
                )]
            }
        }
    }
}

/// Runs the loop, writing decisions to `out` and progress to `progress`.
pub fn run(
    pipeline: &mut Pipeline,
    spec: &Spec,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> io::Result<Summary> {
    let t0 = crate::simulate::start();
    let end = t0.add(Duration::from_secs(spec.minutes as i64 * 60));
    let mut fleet = Fleet {
        nodes: (0..spec.nodes)
            .map(|_| NodeState {
                version: spec.from.clone(),
                kubelet_ok: true,
            })
            .collect(),
        failing: BTreeSet::new(),
        queue: BinaryHeap::new(),
        seq: 0,
        rng: Rng::new(spec.seed),
        summary: Summary::default(),
        in_progress: BTreeSet::new(),
        out_of_service: BTreeMap::new(),
    };
    while (fleet.failing.len() as u64) < spec.fail.min(spec.nodes) {
        let i = fleet.rng.below(spec.nodes);
        fleet.failing.insert(i);
    }
    for i in 0..spec.nodes {
        let at = t0.add(Duration(fleet.rng.below(300_000) as i64));
        fleet.push(at, Happening::Report(i));
    }
    if spec.storm {
        let half = t0.add(Duration::from_secs(spec.minutes as i64 * 30));
        for i in (0..spec.nodes).filter(|i| i % 10 == 3) {
            let at = half.add(Duration(fleet.rng.below(60_000) as i64));
            fleet.push(at, Happening::PowerLost(i, false));
            let back = at.add(Duration::from_secs(20 * 60));
            fleet.push(back, Happening::PowerLost(i, true));
        }
    }
    let mut step = Step::default();
    let mut decisions: Vec<Decision> = Vec::new();
    let mut next_tick = t0;
    let mut next_progress = t0;
    while let Some(Reverse((at, _, happening))) = fleet.queue.pop() {
        if at > end {
            break;
        }
        // The service ticks every second; ten seconds is fine-grained
        // enough for pacing measured in minutes.
        while next_tick < at {
            decisions.clear();
            pipeline.advance(next_tick, &mut step, &mut decisions);
            fleet.follow(&decisions, out)?;
            next_tick = next_tick.add(Duration::from_secs(10));
        }
        for line in fleet.signals(at, happening) {
            let signal =
                Signal::from_json(&line).map_err(|e| io::Error::other(format!("{e}: {line}")))?;
            fleet.summary.signals += 1;
            decisions.clear();
            pipeline.on_signal(signal, at, &mut step, &mut decisions);
            fleet.follow(&decisions, out)?;
        }
        if at >= next_progress {
            let s = &fleet.summary;
            writeln!(
                progress,
                "{at}: {} signals, {} converged, {} converging, {} halts",
                s.signals,
                s.converged,
                fleet.in_progress.len(),
                s.halts.len()
            )?;
            next_progress = at.add(Duration::from_secs(30 * 60));
        }
    }
    let mut summary = fleet.summary;
    summary.held = pipeline.guards.held();
    summary.under = pipeline.guards.domains();
    Ok(summary)
}

/// (due, seq, what): what the fleet does next, soonest first.
type Queue = BinaryHeap<Reverse<(Timestamp, u64, Happening)>>;

/// What happens to the fleet next.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    /// A node's periodic report.
    Report(u64),
    /// A node's agent finished an upgrade to this version.
    Upgraded(u64, String),
    /// A failed node is fixed (by a person) and runs this version.
    Recovered(u64, String),
    /// A node lost power (or got it back).
    PowerLost(u64, bool),
}

impl Fleet {
    /// Writes `decisions` out and lets the fleet answer them: an upgrade
    /// done is applied by the node's agent 1-3 minutes later.
    fn follow(&mut self, decisions: &[Decision], out: &mut dyn Write) -> io::Result<()> {
        for d in decisions {
            self.summary.decisions += 1;
            writeln!(out, "{}", d.to_json())?;
            let done = matches!(d.outcome, Some(Outcome::Executed | Outcome::DryRun));
            let index = node_index(&d.node);
            let cluster = index.map(cluster).unwrap_or_default();
            match (d.event, d.action.as_deref()) {
                (Event::Action, Some("upgrade")) if done => {
                    let i = index.unwrap_or(0);
                    let version = d.params.get("version").cloned().unwrap_or_default();
                    let at = d.ts.add(Duration(60_000 + self.rng.below(120_000) as i64));
                    self.push(at, Happening::Upgraded(i, version));
                }
                (Event::Action, Some("cordon")) if done => {
                    let set = self.out_of_service.entry(cluster.clone()).or_default();
                    set.insert(d.node.clone());
                    let most = self.summary.most_out.entry(cluster).or_default();
                    *most = (*most).max(set.len());
                }
                (Event::Action, Some("uncordon")) if done => {
                    if let Some(set) = self.out_of_service.get_mut(&cluster) {
                        set.remove(&d.node);
                    }
                }
                _ => {}
            }
            if d.fault == remedy_engine::desired::VERSION_DRIFT
                && d.event == Event::Action
                && d.action.as_deref() == Some("cordon")
                && done
            {
                self.in_progress.insert(d.node.clone());
                self.summary.most_in_progress =
                    self.summary.most_in_progress.max(self.in_progress.len());
            }
            if let (Event::Step, Some(kind)) = (d.event, d.step) {
                *self.summary.steps.entry(kind.as_str()).or_default() += 1;
                match kind {
                    StepKind::GatesPassed => {
                        self.in_progress.remove(&d.node);
                        self.summary.converged += 1;
                    }
                    StepKind::Halted => self.summary.halts.push(format!(
                        "{} {}: {}",
                        d.ts,
                        d.node,
                        d.reason.as_deref().unwrap_or("")
                    )),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
