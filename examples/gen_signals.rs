//! Writes the example recorded-signals file to stdout:
//! `cargo run --example gen_signals > examples/signals.jsonl`.

use std::io::Write;

fn main() -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in remedy::synth::example_day() {
        writeln!(out, "{line}")?;
    }
    out.flush()
}
