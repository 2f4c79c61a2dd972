//! `remedy simulate`: fleet-scale fault scenarios as signal streams (JSON
//! lines in event time), deterministic per seed, to pipe into `replay` or
//! `diff`. Each scenario is a healthy fleet's background (see
//! [`Background::next_healthy_into`]) with one kind of bad day laid over it.

use std::fmt;
use std::io::{self, Write};

use remedy_engine::{Duration, Timestamp};

use crate::synth::{fields, write_line, Background, Extra, Fleet, Rng};

/// The named scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A healthy fleet: heartbeats, pressure readings, the odd hardware fault.
    Steady,
    /// One rack loses power 15 minutes in (every node reports `power.lost`
    /// within 20 s) and comes back 30 minutes later. A correct policy opens
    /// power_failure on each node and rack_power_event from the third node
    /// on, cordons what the budget allows, and uncordons when power returns.
    RackPowerLoss,
    /// A new kubelet version rolls out over cluster c000, 5% of it every two
    /// minutes, and every upgraded node reports `component.config.invalid`.
    /// A correct policy notifies (the embedded default) rather than cordoning
    /// a whole cluster; a cordon policy stays within the storm budget.
    BadRollout,
    /// Aging disks fail at a rising rate: 2% of the fleet over the run, most
    /// towards its end, as SMART warnings and bursts of I/O errors. A correct
    /// policy cordons and tickets each, within the storm budget.
    DiskWave,
    /// Monitoring misfires: `KubeletDown` fires for 30% of all nodes within a
    /// minute, 20 minutes in, and clears 5 minutes later. A correct policy
    /// opens every fault but holds almost every restart back (budget), and
    /// forgets them when the alerts clear.
    AlertStorm,
    /// One rack's top-of-rack switch fails 15 minutes in: every node behind
    /// it (label `switch`) turns `KubeNodeUnreachable` within a minute, and
    /// is back 20 minutes later. A correct policy names one switch fault
    /// (`[[correlate]] label = "switch"`) and holds the node repairs.
    TorSwitchPartition,
    /// A new kernel (label `kernel_version`) rolls out over cluster c000, 5%
    /// every two minutes, and two in three upgraded nodes hit `KernelOops`.
    /// A correct policy names the kernel once (`[[correlate]] label =
    /// "kernel_version"`) instead of rebooting the cluster.
    BadKernelRollout,
    /// A broken detector release (label `detector`) flags `KernelDeadlock`
    /// on 20% of the fleet, on and off every 3 minutes, for the whole run.
    /// A correct policy holds the flapping faults open and names the
    /// detector once rather than rebooting a fifth of the fleet.
    FlappingDetector,
    /// Not a signal stream but a closed loop (contract 10): every node runs
    /// kubelet 1.30.4, the config's `[[node_class]]` wants another; agents
    /// answer each upgrade by reporting the new version and gates 1-3
    /// minutes later, `--fail` of them fail theirs (KubeletOK false until a
    /// person fixes them 45 minutes later), and `--storm` has a tenth of the
    /// fleet lose power halfway through. Prints the decisions, and on
    /// stderr progress and a summary (waves, most nodes converging and out
    /// of service at once, halts). Needs `--config`.
    Rollout,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use clap::ValueEnum;
        let name = self.to_possible_value().expect("every scenario has a name");
        f.write_str(name.get_name())
    }
}

/// How big and how long.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Nodes in the fleet (racks of 40, clusters of 2,000).
    pub nodes: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Length of the run in event time.
    pub minutes: u64,
    /// Background signals per second (default: one per node every 30 s).
    pub per_second: Option<u64>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            nodes: 2_000,
            seed: 1,
            minutes: 60,
            per_second: None,
        }
    }
}

/// Start of every simulated run.
pub fn start() -> Timestamp {
    Timestamp::parse_rfc3339("2026-11-24T00:00:00Z").expect("valid start")
}

fn minutes(m: f64) -> Duration {
    Duration((m * 60_000.0) as i64)
}

/// One scenario event: when, which node, and the rest of its line.
struct Event {
    at: Timestamp,
    node: u64,
    kind: &'static str,
    r#type: &'static str,
    label: Option<(&'static str, String)>,
    fields: &'static str,
}

fn event(at: Timestamp, node: u64, kind: &'static str, r#type: &'static str) -> Event {
    Event {
        at,
        node,
        kind,
        r#type,
        label: None,
        fields: "",
    }
}

/// The scenario's own signals, sorted by time.
fn events(scenario: Scenario, fleet: &Fleet, spec: &Spec, rng: &mut Rng) -> Vec<Event> {
    let t0 = start();
    let end = t0.add(minutes(spec.minutes as f64));
    let mut out = Vec::new();
    match scenario {
        Scenario::Rollout => {}
        Scenario::Steady => {}
        Scenario::RackPowerLoss => {
            let racks = fleet.nodes.div_ceil(fleet.rack_size).max(1);
            let rack = rng.below(racks);
            let nodes = rack * fleet.rack_size..((rack + 1) * fleet.rack_size).min(fleet.nodes);
            for node in nodes.clone() {
                let at = jittered(t0, 15.0, 20_000, rng);
                out.push(Event {
                    fields: r#","message":"BMC: AC power lost""#,
                    ..event(at, node, "hardware", "power.lost")
                });
            }
            for node in nodes {
                let at = jittered(t0, 45.0, 20_000, rng);
                out.push(Event {
                    fields: r#","resolved":true"#,
                    ..event(at, node, "hardware", "power.lost")
                });
            }
        }
        Scenario::BadRollout => {
            let cluster = fleet.cluster_size().min(fleet.nodes);
            let mut order: Vec<u64> = (0..cluster).collect();
            shuffle(&mut order, rng);
            let wave = (cluster / 20).max(1);
            for (i, node) in order.into_iter().enumerate() {
                let wave_no = i as u64 / wave;
                let at = jittered(t0, 5.0 + 2.0 * wave_no as f64, 60_000, rng);
                if at < end {
                    out.push(Event {
                        label: Some(("component", "kubelet".into())),
                        fields: r#","message":"kubelet: unknown flag --cgroup-driver-v2 (v1.31.0)""#,
                        ..event(at, node, "component", "component.config.invalid")
                    });
                }
            }
        }
        Scenario::DiskWave => {
            let failing = (fleet.nodes / 50).max(1);
            let mut order: Vec<u64> = (0..fleet.nodes).collect();
            shuffle(&mut order, rng);
            let span = spec.minutes as f64;
            for (i, &node) in order.iter().take(failing as usize).enumerate() {
                // Rising rate: the k-th failure at span * sqrt(k / n).
                let at = t0.add(minutes(
                    span * ((i as f64 + rng.unit()) / failing as f64).sqrt(),
                ));
                if i % 2 == 0 {
                    out.push(Event {
                        fields: r#","message":"SMART: Reallocated_Sector_Ct above threshold""#,
                        ..event(at, node, "hardware", "disk.smart.failing")
                    });
                } else {
                    for k in 0..5 {
                        out.push(Event {
                            fields: r#","message":"blk_update_request: I/O error, dev sda""#,
                            ..event(
                                at.add(Duration(k * 30_000)),
                                node,
                                "hardware",
                                "disk.io.error",
                            )
                        });
                    }
                }
            }
        }
        Scenario::AlertStorm => {
            let mut order: Vec<u64> = (0..fleet.nodes).collect();
            shuffle(&mut order, rng);
            let misfiring = fleet.nodes * 3 / 10;
            for &node in order.iter().take(misfiring as usize) {
                let at = jittered(t0, 20.0, 60_000, rng);
                out.push(event(at, node, "component", "KubeletDown"));
                let clear = jittered(t0, 25.0, 60_000, rng);
                out.push(Event {
                    fields: r#","resolved":true"#,
                    ..event(clear, node, "component", "KubeletDown")
                });
            }
        }
        Scenario::TorSwitchPartition => {
            let racks = fleet.nodes.div_ceil(fleet.rack_size).max(1);
            let rack = rng.below(racks);
            let switch = format!("tor-{}", fleet.rack_of(rack * fleet.rack_size));
            let nodes = rack * fleet.rack_size..((rack + 1) * fleet.rack_size).min(fleet.nodes);
            for node in nodes {
                let down = jittered(t0, 15.0, 60_000, rng);
                let back = jittered(t0, 35.0, 60_000, rng);
                for (at, fields) in [(down, ""), (back, r#","resolved":true"#)] {
                    out.push(Event {
                        label: Some(("switch", switch.clone())),
                        fields,
                        ..event(at, node, "component", "KubeNodeUnreachable")
                    });
                }
            }
        }
        Scenario::BadKernelRollout => {
            let cluster = fleet.cluster_size().min(fleet.nodes);
            let mut order: Vec<u64> = (0..cluster).collect();
            shuffle(&mut order, rng);
            let wave = (cluster / 20).max(1);
            for (i, node) in order.into_iter().enumerate() {
                let upgraded = jittered(t0, 5.0 + 2.0 * (i as u64 / wave) as f64, 60_000, rng);
                if rng.below(3) < 2 {
                    let at = upgraded.add(Duration(rng.below(300_000) as i64));
                    out.push(Event {
                        label: Some(("kernel_version", "5.15.0-91-generic".into())),
                        fields: r#","message":"BUG: unable to handle kernel NULL pointer dereference""#,
                        ..event(at, node, "component", "KernelOops")
                    });
                }
            }
        }
        Scenario::FlappingDetector => {
            let mut order: Vec<u64> = (0..fleet.nodes).collect();
            shuffle(&mut order, rng);
            for &node in order.iter().take((fleet.nodes / 5) as usize) {
                let mut at = jittered(t0, 2.0, 180_000, rng);
                let mut firing = true;
                while at < end {
                    out.push(Event {
                        label: Some(("detector", "npd-v0.8.99".into())),
                        fields: if firing { "" } else { r#","resolved":true"# },
                        ..event(at, node, "component", "KernelDeadlock")
                    });
                    firing = !firing;
                    at = at.add(minutes(1.5)).add(Duration(rng.below(10_000) as i64));
                }
            }
        }
    }
    out.retain(|e| e.at < end);
    out.sort_by_key(|e| (e.at, e.node));
    out
}

/// `minutes` after `t0`, plus up to `spread_ms` of random jitter.
fn jittered(t0: Timestamp, minutes_in: f64, spread_ms: u64, rng: &mut Rng) -> Timestamp {
    t0.add(minutes(minutes_in))
        .add(Duration(rng.below(spread_ms) as i64))
}

fn shuffle(v: &mut [u64], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// Writes the scenario as JSON lines; returns how many.
pub fn write(scenario: Scenario, spec: &Spec, out: &mut dyn Write) -> io::Result<u64> {
    if scenario == Scenario::Rollout {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "rollout runs in a closed loop with the pipeline: remedy simulate rollout --config FILE",
        ));
    }
    let fleet = Fleet::new(spec.nodes.max(1));
    let mut rng = Rng::new(spec.seed ^ 0x5ce7_a210);
    let events = events(scenario, &fleet, spec, &mut rng);
    let per_second = spec.per_second.unwrap_or(spec.nodes / 30).max(1);
    let mut background = Background::new(fleet.clone(), spec.seed, start(), per_second);
    let end = start().add(minutes(spec.minutes as f64));
    let mut line = String::with_capacity(256);
    let mut written = 0;
    let mut next = events.iter().peekable();
    loop {
        let bg_at = background.now();
        let take_event = next.peek().is_some_and(|e| e.at <= bg_at || bg_at >= end);
        line.clear();
        if take_event {
            let e = next.next().expect("peeked");
            let extra = Extra {
                label: e.label.as_ref().map(|(k, v)| (*k, v.as_str())),
                ..fields(e.fields)
            };
            write_line(&mut line, &fleet, e.node, e.kind, e.r#type, e.at, extra);
        } else if bg_at < end {
            background.next_healthy_into(&mut line);
        } else {
            break;
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        written += 1;
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_engine::Signal;

    fn lines(scenario: Scenario, spec: &Spec) -> Vec<String> {
        let mut out = Vec::new();
        write(scenario, spec, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn scenarios_are_valid_sorted_and_deterministic_per_seed() {
        let spec = Spec {
            nodes: 400,
            minutes: 50,
            per_second: Some(20),
            ..Spec::default()
        };
        for scenario in [
            Scenario::Steady,
            Scenario::RackPowerLoss,
            Scenario::BadRollout,
            Scenario::DiskWave,
            Scenario::AlertStorm,
            Scenario::TorSwitchPartition,
            Scenario::BadKernelRollout,
            Scenario::FlappingDetector,
        ] {
            let a = lines(scenario, &spec);
            assert_eq!(
                a,
                lines(scenario, &spec),
                "{scenario}: same seed, same stream"
            );
            let other = lines(scenario, &Spec { seed: 2, ..spec });
            assert_ne!(a, other, "{scenario}: another seed, another stream");
            let mut last = Timestamp(i64::MIN);
            for l in &a {
                let s = Signal::from_json(l).unwrap_or_else(|e| panic!("{scenario}: {e}: {l}"));
                let ts = s.ts.expect("every line has a ts");
                assert!(ts >= last, "{scenario}: out of order at {l}");
                assert!(
                    ts < start().add(minutes(50.0)),
                    "{scenario}: past the end: {l}"
                );
                last = ts;
            }
        }
    }

    #[test]
    fn each_scenario_lays_its_bad_day_over_the_background() {
        let spec = Spec {
            nodes: 4_000,
            per_second: Some(10),
            ..Spec::default()
        };
        let count = |scenario, r#type: &str| {
            lines(scenario, &spec)
                .iter()
                .filter(|l| l.contains(&format!(r#""type":"{type}""#)))
                .count()
        };
        assert_eq!(
            count(Scenario::RackPowerLoss, "power.lost"),
            80,
            "40 down, 40 back"
        );
        assert_eq!(
            count(Scenario::BadRollout, "component.config.invalid"),
            2_000
        );
        assert_eq!(count(Scenario::AlertStorm, "KubeletDown"), 2 * 1_200);
        assert_eq!(count(Scenario::Steady, "KubeletDown"), 0);
        let smart = count(Scenario::DiskWave, "disk.smart.failing");
        assert!((35..=45).contains(&smart), "{smart}");
    }
}
