//! Writes the alert-storm scenario to stdout (see `remedy::synth::storm`):
//! `cargo run --example gen_storm > storm.jsonl`, then
//! `remedy replay --config examples/storm.toml storm.jsonl`.
//! An optional argument sets the quiet minutes between storm and recovery
//! (default 30).

use std::io::Write;

fn main() -> std::io::Result<()> {
    let minutes = match std::env::args().nth(1) {
        None => 30,
        Some(a) => a.parse().unwrap_or_else(|_| {
            eprintln!("gen_storm: expected minutes after the storm, got {a:?}");
            std::process::exit(2)
        }),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in remedy::synth::storm(minutes) {
        writeln!(out, "{line}")?;
    }
    out.flush()
}
