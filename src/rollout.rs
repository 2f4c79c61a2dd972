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

fn labels(i: u64) -> String {
    format!(
        r#""role":"worker","cluster":"c{:03}","rack":"r{:04}""#,
        i / 2000,
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

/// Runs the loop, writing decisions to `out` and progress to `progress`.
pub fn run(
    pipeline: &mut Pipeline,
    spec: &Spec,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> io::Result<Summary> {
    let t0 = crate::simulate::start();
    let end = t0.add(Duration::from_secs(spec.minutes as i64 * 60));
    let mut rng = Rng::new(spec.seed);
    let mut nodes: Vec<NodeState> = (0..spec.nodes)
        .map(|_| NodeState {
            version: spec.from.clone(),
            kubelet_ok: true,
        })
        .collect();
    let mut failing: BTreeSet<u64> = BTreeSet::new();
    while (failing.len() as u64) < spec.fail.min(spec.nodes) {
        failing.insert(rng.below(spec.nodes));
    }
    // (due, seq, what): what the fleet does next.
    let mut queue: Queue = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |q: &mut Queue, at: Timestamp, h: Happening| {
        seq += 1;
        q.push(Reverse((at, seq, h)));
    };
    for i in 0..spec.nodes {
        let at = t0.add(Duration(rng.below(300_000) as i64));
        push(&mut queue, at, Happening::Report(i));
    }
    if spec.storm {
        let half = t0.add(Duration::from_secs(spec.minutes as i64 * 30));
        for i in (0..spec.nodes).filter(|i| i % 10 == 3) {
            let at = half.add(Duration(rng.below(60_000) as i64));
            push(&mut queue, at, Happening::PowerLost(i, false));
            push(
                &mut queue,
                at.add(Duration::from_secs(20 * 60)),
                Happening::PowerLost(i, true),
            );
        }
    }
    let mut summary = Summary::default();
    let mut step = Step::default();
    let mut decisions: Vec<Decision> = Vec::new();
    let mut in_progress: BTreeSet<String> = BTreeSet::new();
    let mut out_of_service: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut next_tick = t0;
    let mut next_progress = t0;
    while let Some(Reverse((at, _, happening))) = queue.pop() {
        if at > end {
            break;
        }
        // The service ticks every second; ten seconds is fine-grained
        // enough for pacing measured in minutes.
        while next_tick < at {
            decisions.clear();
            pipeline.advance(next_tick, &mut step, &mut decisions);
            follow(
                &decisions,
                &mut queue,
                &mut push,
                &mut rng,
                &mut summary,
                &mut in_progress,
                &mut out_of_service,
                out,
            )?;
            next_tick = next_tick.add(Duration::from_secs(10));
        }
        let lines: Vec<String> = match happening {
            Happening::Report(i) => {
                push(
                    &mut queue,
                    at.add(Duration::from_secs(300)),
                    Happening::Report(i),
                );
                let n = &nodes[i as usize];
                vec![
                    version_signal(at, i, &n.version),
                    gate_signal(at, i, "KubeletOK", n.kubelet_ok),
                    gate_signal(at, i, "DiskOK", true),
                ]
            }
            Happening::Upgraded(i, version) => {
                let n = &mut nodes[i as usize];
                if failing.contains(&i) {
                    n.kubelet_ok = false;
                    push(
                        &mut queue,
                        at.add(Duration::from_secs(45 * 60)),
                        Happening::Recovered(i, version),
                    );
                } else {
                    n.version = version;
                    n.kubelet_ok = true;
                }
                let n = &nodes[i as usize];
                vec![
                    version_signal(at, i, &n.version),
                    gate_signal(at, i, "KubeletOK", n.kubelet_ok),
                    gate_signal(at, i, "DiskOK", true),
                ]
            }
            Happening::Recovered(i, version) => {
                failing.remove(&i);
                let n = &mut nodes[i as usize];
                n.version = version;
                n.kubelet_ok = true;
                vec![
                    version_signal(at, i, &n.version),
                    gate_signal(at, i, "KubeletOK", true),
                ]
            }
            Happening::PowerLost(i, back) => {
                let resolved = if back { r#","resolved":true"# } else { "" };
                vec![format!(
                    r#"{{"ts":"{at}","node":"{}","kind":"hardware","type":"power.lost","labels":{{{}}},"message":"BMC: AC power lost"{resolved}}}"#,
                    node_name(i),
                    labels(i)
                )]
            }
        };
        for line in lines {
            let signal =
                Signal::from_json(&line).map_err(|e| io::Error::other(format!("{e}: {line}")))?;
            summary.signals += 1;
            decisions.clear();
            pipeline.on_signal(signal, at, &mut step, &mut decisions);
            follow(
                &decisions,
                &mut queue,
                &mut push,
                &mut rng,
                &mut summary,
                &mut in_progress,
                &mut out_of_service,
                out,
            )?;
        }
        if at >= next_progress {
            writeln!(
                progress,
                "{at}: {} signals, {} converged, {} converging, {} halts",
                summary.signals,
                summary.converged,
                in_progress.len(),
                summary.halts.len()
            )?;
            next_progress = at.add(Duration::from_secs(30 * 60));
        }
    }
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

/// Writes `decisions` out and lets the fleet answer them: an upgrade done
/// is applied by the node's agent 1-3 minutes later.
#[allow(clippy::too_many_arguments)]
fn follow(
    decisions: &[Decision],
    queue: &mut Queue,
    push: &mut impl FnMut(&mut Queue, Timestamp, Happening),
    rng: &mut Rng,
    summary: &mut Summary,
    in_progress: &mut BTreeSet<String>,
    out_of_service: &mut BTreeMap<String, BTreeSet<String>>,
    out: &mut dyn Write,
) -> io::Result<()> {
    for d in decisions {
        summary.decisions += 1;
        writeln!(out, "{}", d.to_json())?;
        let done = matches!(d.outcome, Some(Outcome::Executed | Outcome::DryRun));
        let cluster = d
            .node
            .strip_prefix("node-")
            .and_then(|n| n.parse::<u64>().ok())
            .map(|i| format!("c{:03}", i / 2000))
            .unwrap_or_default();
        match (d.event, d.action.as_deref()) {
            (Event::Action, Some("upgrade")) if done => {
                let i: u64 = d.node.trim_start_matches("node-").parse().unwrap_or(0);
                let version = d.params.get("version").cloned().unwrap_or_default();
                let at = d.ts.add(Duration(60_000 + rng.below(120_000) as i64));
                push(queue, at, Happening::Upgraded(i, version));
            }
            (Event::Action, Some("cordon")) if done => {
                let set = out_of_service.entry(cluster.clone()).or_default();
                set.insert(d.node.clone());
                let most = summary.most_out.entry(cluster).or_default();
                *most = (*most).max(set.len());
            }
            (Event::Action, Some("uncordon")) if done => {
                if let Some(set) = out_of_service.get_mut(&cluster) {
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
            in_progress.insert(d.node.clone());
            summary.most_in_progress = summary.most_in_progress.max(in_progress.len());
        }
        if let (Event::Step, Some(kind)) = (d.event, d.step) {
            *summary.steps.entry(kind.as_str()).or_default() += 1;
            match kind {
                StepKind::GatesPassed => {
                    in_progress.remove(&d.node);
                    summary.converged += 1;
                }
                StepKind::Halted => summary.halts.push(format!(
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
