//! Writes recorded signals to stdout.
//!
//! `cargo run --example gen_signals > examples/signals.jsonl` writes the
//! example day; `cargo run --release --example gen_signals -- COUNT [NODES]`
//! writes COUNT signals of a healthy large fleet (default 100k nodes, the
//! benchmark's mix), e.g. to watch `remedy replay` move through a million.

use std::io::Write;

use remedy::synth::{Background, Fleet};
use remedy_engine::Timestamp;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| -> u64 {
        args.get(i).map_or(default, |a| {
            a.parse().unwrap_or_else(|_| {
                eprintln!("gen_signals: expected a number, got {a:?}");
                std::process::exit(2)
            })
        })
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.is_empty() {
        for line in remedy::synth::example_day() {
            writeln!(out, "{line}")?;
        }
    } else {
        let (count, nodes) = (number(0, 0), number(1, 100_000));
        let start = Timestamp::parse_rfc3339("2026-11-24T00:00:00Z").expect("valid");
        let mut fleet = Background::new(Fleet::new(nodes), 42, start, 500);
        for _ in 0..count {
            writeln!(out, "{}", fleet.next_line())?;
        }
    }
    out.flush()
}
