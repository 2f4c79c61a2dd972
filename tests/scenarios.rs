//! Every `remedy simulate` scenario through the shipped rules and the
//! embedded default policy and guards: every fault the scenario causes is
//! opened, and no cluster ever has more nodes under remediation than its
//! storm budget (5% of its known nodes).

use std::collections::BTreeSet;
use std::path::Path;

use remedy::config::Config;
use remedy::pipeline::Pipeline;
use remedy::simulate::{self, Scenario, Spec};
use remedy_actions::Guards;
use remedy_engine::{Engine, Event, Options, Signal, Step, Timestamp};

fn pipeline() -> Pipeline {
    let config = Config::default();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let engine = Engine::load(&rules, config.policies(), &Options::default()).expect("rules");
    let (guards, actions) = config.guards();
    Pipeline::new(engine, Guards::new(guards, actions))
}

/// The (node, fault) pairs the scenario's own signals must open.
fn expected(signals: &[Signal]) -> BTreeSet<(String, String)> {
    let mut io_errors = std::collections::BTreeMap::<&str, usize>::new();
    let mut want = BTreeSet::new();
    for s in signals.iter().filter(|s| !s.resolved) {
        let fault = match s.r#type.as_str() {
            "power.lost" if s.message.as_deref() == Some("BMC: AC power lost") => "power_failure",
            "component.config.invalid" => "component_misconfigured",
            "disk.smart.failing" => "disk_failure",
            "disk.io.error" => {
                let n = io_errors.entry(&s.node).or_default();
                *n += 1;
                if *n < 5 {
                    continue;
                }
                "disk_failure"
            }
            "KubeletDown" => "component_crash",
            _ => continue,
        };
        want.insert((s.node.clone(), fault.to_string()));
    }
    want
}

fn run(scenario: Scenario) -> (usize, BTreeSet<(String, String)>) {
    let spec = Spec {
        nodes: 4_000,
        seed: 7,
        minutes: 60,
        per_second: Some(20),
    };
    let mut text = Vec::new();
    simulate::write(scenario, &spec, &mut text).expect("simulate");
    let signals: Vec<Signal> = String::from_utf8(text)
        .expect("utf-8")
        .lines()
        .map(|l| Signal::from_json(l).expect("valid signal"))
        .collect();
    let want = expected(&signals);

    let mut p = pipeline();
    let (mut step, mut out) = (Step::default(), Vec::new());
    let mut opened = BTreeSet::new();
    let mut most = 0;
    for s in signals {
        out.clear();
        p.on_signal(s, Timestamp::default(), &mut step, &mut out);
        for d in out.iter().filter(|d| d.event == Event::FaultOpened) {
            opened.insert((d.node.clone(), d.fault.clone()));
        }
        for cluster in ["c000", "c001"] {
            let known = p.engine.with_fleet(|f| f.known_in("cluster", cluster));
            let limit = (known * 5 / 100).max(1);
            let under = p.guards.under_remediation(cluster);
            assert!(
                under <= limit,
                "{scenario}: {under} nodes of {cluster} under remediation, budget {limit} of {known}"
            );
            most = most.max(under);
        }
    }
    let missing: Vec<_> = want.difference(&opened).collect();
    assert!(
        missing.is_empty(),
        "{scenario}: faults never opened: {missing:?}"
    );
    (most, want)
}

#[test]
fn steady_opens_only_what_the_background_causes() {
    let (most, want) = run(Scenario::Steady);
    assert!(want.is_empty());
    assert!(most <= 100);
}

#[test]
fn rack_power_loss_opens_every_node_of_the_rack_within_budget() {
    let (most, want) = run(Scenario::RackPowerLoss);
    assert_eq!(want.len(), 40);
    assert!(most >= 40, "the whole rack fits in the budget: {most}");
}

#[test]
fn bad_rollout_notifies_on_every_upgraded_node() {
    let (_, want) = run(Scenario::BadRollout);
    assert_eq!(want.len(), 2_000);
}

#[test]
fn disk_wave_opens_every_failing_disk_within_budget() {
    let (_, want) = run(Scenario::DiskWave);
    assert!(want.len() >= 70, "{}", want.len());
}

#[test]
fn alert_storm_opens_every_fault_and_holds_the_restarts() {
    let (most, want) = run(Scenario::AlertStorm);
    assert_eq!(want.len(), 1_200);
    assert_eq!(most, 100, "the budget fills and holds");
}
