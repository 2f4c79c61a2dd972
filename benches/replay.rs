//! Replay throughput against its transport limit, on one core.
//!
//! 1M generated signals (100k nodes, the healthy-fleet mix of
//! `remedy::synth::Background`) are replayed through the shipped rules and
//! the fault lifecycle, and again with the embedded default guard chain (as
//! `remedy replay` runs); the baseline, measured in the same run, only decodes
//! the same lines into `Signal` (serde_json, no rules). Criterion reports all
//! three; at the end a side-by-side run (5 interleaved rounds, the fastest
//! of each side, and the median for comparison) prints the ratios, and a counting allocator gives the bytes of engine state per
//! tracked node.
//!
//! `cargo bench --bench replay` (REMEDY_BENCH_SIGNALS and REMEDY_BENCH_NODES change
//! the size).
// The counting allocator below is the bench's only unsafe code: it forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use remedy::pipeline::Pipeline;
use remedy::synth::{Background, Fleet};
use remedy_actions::{GuardConfig, Guards};
use remedy_engine::{Engine, Lookahead, Options, Policies, Signal, Step, Timestamp};

/// Counts live heap bytes so engine state can be measured, not estimated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System`, which upholds `GlobalAlloc`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract; forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn nodes() -> u64 {
    std::env::var("REMEDY_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn signals() -> usize {
    std::env::var("REMEDY_BENCH_SIGNALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The input: JSON lines in one buffer, as replay reads them from a file.
fn input(count: usize) -> Vec<String> {
    let start = Timestamp::parse_rfc3339("2026-11-24T00:00:00Z").expect("valid");
    let mut fleet = Background::new(Fleet::new(nodes()), 42, start, 500);
    (0..count).map(|_| fleet.next_line()).collect()
}

fn rules_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))
}

fn engine() -> Engine {
    Engine::load(rules_dir(), Policies::default(), &Options::default())
        .expect("shipped rules compile")
}

/// Decode only: the transport limit.
fn decode_only(lines: &[String]) -> usize {
    let mut ok = 0;
    for line in lines {
        if let Ok(s) = Signal::from_json(line) {
            black_box(&s);
            ok += 1;
        }
    }
    ok
}

/// Decode and run through rules and lifecycle (no guards), reading a few
/// signals ahead as `remedy replay` does.
fn replay(engine: &mut Engine, lines: &[String]) -> usize {
    let mut step = Step::default();
    let mut outputs = 0;
    let mut clock = Timestamp::default();
    let mut ahead = Lookahead::default();
    let mut handle = |engine: &mut Engine, s: Signal| {
        clock = s.ts.unwrap_or(clock);
        engine.on_signal_into(s, clock, &mut step);
        outputs += step.out.len();
    };
    for line in lines {
        if let Ok(s) = Signal::from_json(line) {
            if let Some(s) = ahead.push(engine, s, |s| Some(s)) {
                handle(engine, s);
            }
        }
    }
    while let Some(s) = ahead.pop() {
        handle(engine, s);
    }
    outputs
}

/// The embedded default guard chain (5% per cluster, dry-run).
fn pipeline() -> Pipeline {
    let guards = Guards::new(GuardConfig::default(), BTreeMap::new());
    Pipeline::new(engine(), guards)
}

/// Decode, rules, lifecycle and the guard chain, as `remedy replay` does.
fn replay_guarded(p: &mut Pipeline, lines: &[String]) -> usize {
    let mut step = Step::default();
    let mut out = Vec::new();
    let mut decisions = 0;
    let mut clock = Timestamp::default();
    let mut ahead = Lookahead::default();
    let mut handle = |p: &mut Pipeline, s: Signal| {
        clock = s.ts.unwrap_or(clock);
        out.clear();
        p.on_signal(s, clock, &mut step, &mut out);
        decisions += out.len();
    };
    for line in lines {
        if let Ok(s) = Signal::from_json(line) {
            if let Some(s) = ahead.push(&p.engine, s, |s| Some(s)) {
                handle(p, s);
            }
        }
    }
    while let Some(s) = ahead.pop() {
        handle(p, s);
    }
    decisions
}

/// Rounds of the side-by-side comparison.
const ROUNDS: usize = 5;

/// The fastest of a side's rounds: on a shared machine, interference only
/// ever adds time, so the fastest round is the closest to the code's cost.
fn fastest(v: &[Duration]) -> Duration {
    v.iter().copied().min().unwrap_or_default()
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; test runners (cargo test --all-targets,
    // nextest) list or run the benchmarks once: keep that quick and quiet.
    let benching = std::env::args().any(|a| a == "--bench");
    let count = if benching { signals() } else { 1_000 };
    if benching {
        eprintln!("generating {count} signals over {} nodes...", nodes());
    }
    let lines = input(count);

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    {
        let mut group = c.benchmark_group("replay_1m");
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function("decode_only", |b| b.iter(|| decode_only(black_box(&lines))));
        group.bench_function("replay_shipped_rules", |b| {
            b.iter_batched(
                engine,
                |mut e| replay(&mut e, black_box(&lines)),
                criterion::BatchSize::PerIteration,
            )
        });
        group.bench_function("replay_with_guards", |b| {
            b.iter_batched(
                pipeline,
                |mut p| replay_guarded(&mut p, black_box(&lines)),
                criterion::BatchSize::PerIteration,
            )
        });
        group.finish();
    }
    if !benching {
        return;
    }

    // Side by side, interleaved so drift affects all alike.
    let (mut decode_times, mut replay_times, mut guarded_times) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut decisions = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        black_box(decode_only(&lines));
        decode_times.push(t.elapsed());
        let mut e = engine();
        let t = Instant::now();
        black_box(replay(&mut e, &lines));
        replay_times.push(t.elapsed());
        let mut p = pipeline();
        let t = Instant::now();
        decisions = replay_guarded(&mut p, &lines);
        guarded_times.push(t.elapsed());
    }
    let (d, r, g) = (
        fastest(&decode_times),
        fastest(&replay_times),
        fastest(&guarded_times),
    );
    let rate = |t: Duration| count as f64 / t.as_secs_f64();
    println!();
    println!(
        "side by side on one core, {count} signals, {} nodes, fastest of {ROUNDS} interleaved rounds:",
        nodes()
    );
    println!("  decode only            {:>10.0} signals/s", rate(d));
    println!("  replay (shipped rules) {:>10.0} signals/s", rate(r));
    println!(
        "  replay with guards     {:>10.0} signals/s  ({decisions} decisions)",
        rate(g)
    );
    println!(
        "  replay / decode-only   {:>10.1}%  (median of the rounds: {:.1}%)",
        100.0 * d.as_secs_f64() / r.as_secs_f64(),
        100.0 * median(&decode_times).as_secs_f64() / median(&replay_times).as_secs_f64()
    );
    println!(
        "  guards add             {:>10.1}% to replay time",
        100.0 * (g.as_secs_f64() / r.as_secs_f64() - 1.0)
    );

    // Engine state per tracked node, after the whole stream.
    let before = LIVE.load(Ordering::Relaxed);
    let mut e = engine();
    let compiled = LIVE.load(Ordering::Relaxed);
    replay(&mut e, &lines);
    let after = LIVE.load(Ordering::Relaxed);
    let nodes = e.with_fleet(|f| f.known_nodes());
    println!(
        "  engine state           {:>10.0} bytes per tracked node ({nodes} nodes, {} open faults; rules {} KiB)",
        (after - compiled) as f64 / nodes as f64,
        e.with_fleet(|f| f.open_faults()),
        (compiled - before) / 1024
    );
    c.final_summary();
}
