//! What-if costs: `remedy simulate` throughput, and `remedy diff` against a
//! single replay of the same file (targets: >= 1M signals/s, <= 2.2x).
//!
//! `cargo bench --bench whatif`. Criterion reports each; a side-by-side run
//! (interleaved, median of 3) then prints the rate and the ratio.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{self, Cursor};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use remedy::pipeline::Pipeline;
use remedy::replay::{replay, Display};
use remedy::simulate::{self, Scenario, Spec};
use remedy_actions::{GuardConfig, Guards};
use remedy_engine::{Engine, Options, Policies};

/// 1M signals of a 100k-node fleet (one signal per node every 30 s, 5 minutes).
fn simulate_spec() -> Spec {
    Spec {
        nodes: 100_000,
        seed: 1,
        minutes: 5,
        per_second: None,
    }
}

fn simulate_1m() -> u64 {
    simulate::write(Scenario::Steady, &simulate_spec(), &mut io::sink()).expect("sink")
}

fn pipeline() -> Pipeline {
    let rules = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    let engine = Engine::load(rules, Policies::default(), &Options::default()).expect("rules");
    let guards = Guards::new(GuardConfig::default(), BTreeMap::new());
    Pipeline::new(engine, guards)
}

fn replay_once(input: &[u8]) -> u64 {
    let display = Display {
        source: "bench".into(),
        progress: false,
        total_bytes: None,
    };
    let mut p = pipeline();
    replay(
        &mut p,
        Cursor::new(input),
        &display,
        &mut io::sink(),
        &mut io::sink(),
    )
    .expect("replay")
    .signals
}

fn diff_once(input: &[u8]) -> usize {
    let (mut old, mut new) = (pipeline(), pipeline());
    remedy::diff::diff(
        &mut old,
        &mut new,
        Cursor::new(input),
        "bench",
        "cluster",
        &mut io::sink(),
    )
    .expect("diff")
    .differences
    .len()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    // A rack power loss in a 10k-node fleet, 20 minutes: about 200k signals.
    let spec = Spec {
        nodes: 10_000,
        seed: 1,
        minutes: if benching { 60 } else { 1 },
        per_second: Some(if benching { 60 } else { 5 }),
    };
    let mut input = Vec::new();
    let lines = simulate::write(Scenario::RackPowerLoss, &spec, &mut input).expect("write");

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    {
        let mut g = c.benchmark_group("whatif");
        if benching {
            g.throughput(Throughput::Elements(1_000_000));
            g.bench_function("simulate_1m", |b| b.iter(simulate_1m));
        }
        g.throughput(Throughput::Elements(lines));
        g.bench_function("replay", |b| b.iter(|| replay_once(black_box(&input))));
        g.bench_function("diff", |b| b.iter(|| diff_once(black_box(&input))));
        g.finish();
    }
    if !benching {
        return;
    }

    let (mut sim, mut rep, mut dif) = (Vec::new(), Vec::new(), Vec::new());
    let mut simulated = 0;
    for _ in 0..3 {
        let t = Instant::now();
        simulated = black_box(simulate_1m());
        sim.push(t.elapsed());
        let t = Instant::now();
        black_box(replay_once(&input));
        rep.push(t.elapsed());
        let t = Instant::now();
        black_box(diff_once(&input));
        dif.push(t.elapsed());
    }
    let (s, r, d) = (median(sim), median(rep), median(dif));
    println!();
    println!("side by side, median of 3 on one core:");
    println!(
        "  simulate (steady, 100k nodes)  {:>10.0} signals/s ({simulated} signals)",
        simulated as f64 / s.as_secs_f64()
    );
    println!(
        "  replay ({lines} signals)        {:>10.0} signals/s",
        lines as f64 / r.as_secs_f64()
    );
    println!(
        "  diff / replay                  {:>10.2}x",
        d.as_secs_f64() / r.as_secs_f64()
    );
    c.final_summary();
}
