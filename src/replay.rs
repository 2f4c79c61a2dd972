//! `remedy replay`: recorded signals through the same rules, lifecycle and
//! guard chain as the service, with time taken from each signal's `ts`. Same
//! input, same output: decisions as JSON lines on stdout, diagnostics on stderr.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use remedy_collectors::JsonLines;
use remedy_engine::{Decision, Event, Lookahead, Outcome, Signal, Step, Timestamp};

use crate::pipeline::Input;

use crate::pipeline::Pipeline;

/// Rule errors printed per rule before the rest are only counted.
const ERRORS_SHOWN_PER_RULE: usize = 10;

/// Lines between progress updates (cheap enough to be invisible in the profile).
const PROGRESS_EVERY: u64 = 16_384;

/// What a replay did, for the closing summary.
#[derive(Debug, Default)]
pub struct Summary {
    /// Valid signals processed (duplicates included).
    pub signals: u64,
    /// Lines rejected as not a valid signal.
    pub rejected: u64,
    /// Signals ignored because their `id` repeated.
    pub duplicates: u64,
    /// Rule failures (throws, sandbox limits, bad answers).
    pub rule_errors: u64,
    /// Per fault class: (opened, resolved).
    pub faults: BTreeMap<String, (u64, u64)>,
    /// Actions by outcome name.
    pub actions: BTreeMap<&'static str, u64>,
    /// Resolves ignored because the fault is flapping (held open).
    pub held_open: u64,
    /// Actions still held back by a guard at the end.
    pub still_held: usize,
    /// Wall time taken.
    pub elapsed: std::time::Duration,
    /// What a run must never do, checked as it went.
    pub invariants: Invariants,
}

/// The safety invariants of a replay (contract 9): how far each level got
/// out of service, repairs repeated, actions a silence should have held,
/// and how long repairs took.
#[derive(Debug, Default)]
pub struct Invariants {
    /// Per level (its label, or `fleet`): (most nodes out at once, in which
    /// domain, its max_unhealthy).
    pub peak: BTreeMap<String, (usize, String, Option<remedy_actions::Budget>)>,
    /// Nodes that got the same disruptive action twice while one fault
    /// stayed open.
    pub acted_twice: std::collections::BTreeSet<String>,
    /// Actions that passed where a silence was in force.
    pub after_silence: u64,
    /// Per repaired occurrence: milliseconds from fault_opened to fault_resolved.
    repairs: Vec<i64>,
    /// (node, fault) -> when it opened.
    open: std::collections::HashMap<(String, String), Timestamp>,
    /// (node, fault, action) -> passes during the occurrence.
    passes: std::collections::HashMap<(String, String, String), u32>,
}

impl Invariants {
    /// Notes what `decisions` did, with the guards as they are now.
    pub fn observe(&mut self, decisions: &[Decision], pipeline: &Pipeline) {
        let mut passed = false;
        for d in decisions {
            match d.event {
                Event::FaultOpened => {
                    self.open.insert((d.node.clone(), d.fault.clone()), d.ts);
                }
                Event::FaultResolved => {
                    let key = (d.node.clone(), d.fault.clone());
                    if let Some(opened) = self.open.remove(&key) {
                        self.repairs.push(d.ts.0 - opened.0);
                    }
                    self.passes
                        .retain(|(n, f, _), _| !(*n == key.0 && *f == key.1));
                }
                Event::Action => {
                    let (Some(action), Some(Outcome::DryRun | Outcome::Executed)) =
                        (&d.action, d.outcome)
                    else {
                        continue;
                    };
                    passed = true;
                    let guards = &pipeline.guards;
                    if guards.is_disruptive(action) {
                        let key = (d.node.clone(), d.fault.clone(), action.clone());
                        let n = self.passes.entry(key).or_default();
                        *n += 1;
                        if *n > 1 {
                            self.acted_twice.insert(d.node.clone());
                        }
                    }
                    if !guards.silences().is_empty() {
                        let labels = pipeline
                            .engine
                            .with_fleet(|f| f.labels_named(&d.node))
                            .unwrap_or_default();
                        if guards
                            .silences()
                            .iter()
                            .any(|s| s.matches(&d.node, &d.fault, &labels, d.ts))
                        {
                            self.after_silence += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        if passed {
            let budgets: BTreeMap<String, Option<remedy_actions::Budget>> =
                pipeline.guards.levels().into_iter().collect();
            for (level, domain, n) in pipeline.guards.domains() {
                let peak = self
                    .peak
                    .entry(level.clone())
                    .or_insert_with(|| (0, String::new(), budgets.get(&level).copied().flatten()));
                if n > peak.0 {
                    peak.0 = n;
                    peak.1 = domain;
                }
            }
        }
    }

    /// `p` (0-1) of the repair times, if there were any.
    pub fn repair_time(&self, p: f64) -> Option<remedy_engine::Duration> {
        let mut t = self.repairs.clone();
        if t.is_empty() {
            return None;
        }
        t.sort_unstable();
        let i = ((t.len() as f64 * p).ceil() as usize).clamp(1, t.len()) - 1;
        // Whole seconds: what a person reads.
        Some(remedy_engine::Duration((t[i] + 500) / 1000 * 1000))
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if !self.peak.is_empty() {
            let levels: Vec<String> = self
                .peak
                .iter()
                .map(|(level, (n, domain, budget))| {
                    let budget = budget
                        .map_or_else(|| "no budget".to_string(), |b| format!("max_unhealthy {b}"));
                    if level == "fleet" {
                        format!("fleet {n} ({budget})")
                    } else {
                        format!("{level} {n} in {domain} ({budget})")
                    }
                })
                .collect();
            out.push_str(&format!("peak out of service: {}\n", levels.join(", ")));
        }
        out.push_str(&format!(
            "nodes acted on twice: {}; actions where a silence was in force: {}\n",
            self.acted_twice.len(),
            self.after_silence
        ));
        if let (Some(p50), Some(p99)) = (self.repair_time(0.5), self.repair_time(0.99)) {
            out.push_str(&format!(
                "time to repair: p50 {p50}, p99 {p99} ({} repaired)\n",
                self.repairs.len()
            ));
        }
        out
    }
}

impl Summary {
    fn count(&mut self, decisions: &[Decision]) {
        for d in decisions {
            match d.event {
                Event::FaultOpened => self.faults.entry(d.fault.clone()).or_default().0 += 1,
                Event::FaultResolved => self.faults.entry(d.fault.clone()).or_default().1 += 1,
                Event::FaultStale | Event::FaultUnverified | Event::Step => {}
                Event::Action => {
                    if let Some(o) = d.outcome {
                        *self.actions.entry(o.as_str()).or_default() += 1;
                    }
                }
            }
        }
    }

    /// The human summary printed on stderr at the end.
    pub fn render(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.signals as f64 / secs
        } else {
            0.0
        };
        let opened: u64 = self.faults.values().map(|f| f.0).sum();
        let resolved: u64 = self.faults.values().map(|f| f.1).sum();
        let mut out = format!(
            "replayed {} signals in {secs:.2}s ({rate:.0}/s): {} rejected, {} duplicates, {} rule errors\n\
             faults: {opened} opened, {resolved} resolved\n",
            self.signals, self.rejected, self.duplicates, self.rule_errors
        );
        if !self.faults.is_empty() {
            let width = self
                .faults
                .keys()
                .map(String::len)
                .max()
                .unwrap_or(5)
                .max(5);
            out.push_str(&format!(
                "  {:width$}  {:>8}  {:>8}\n",
                "fault", "opened", "resolved"
            ));
            for (name, (o, r)) in &self.faults {
                out.push_str(&format!("  {name:width$}  {o:>8}  {r:>8}\n"));
            }
        }
        if !self.actions.is_empty() {
            let parts: Vec<String> = self
                .actions
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            out.push_str(&format!("actions: {}\n", parts.join(", ")));
        }
        if self.still_held > 0 {
            out.push_str(&format!(
                "{} actions still held back by a guard at the end of the input\n",
                self.still_held
            ));
        }
        if self.held_open > 0 {
            out.push_str(&format!(
                "{} resolves ignored: flapping faults held open\n",
                self.held_open
            ));
        }
        out.push_str(&self.invariants.render());
        out
    }
}

/// How replay reports on itself.
pub struct Display {
    /// Name of the input in diagnostics (`file.jsonl`, or `stdin`).
    pub source: String,
    /// Draw a progress bar on stderr (only sensible on a terminal).
    pub progress: bool,
    /// Size of the input, when known, for a proportional bar.
    pub total_bytes: Option<u64>,
}

fn progress_bar(display: &Display) -> ProgressBar {
    if !display.progress {
        return ProgressBar::hidden();
    }
    let bar = match display.total_bytes {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {percent:>3}%  {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{elapsed_precise} {spinner} {msg}")
                .expect("valid template"),
        ),
    };
    bar.set_message("starting");
    bar
}

/// Writes `decisions` as JSON lines; `false` when the reader went away
/// (a closed pipe, e.g. into `head`): the replay ends there, without error.
fn write_decisions(out: &mut dyn Write, decisions: &[Decision]) -> io::Result<bool> {
    for d in decisions {
        let written = serde_json::to_writer(&mut *out, d)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        match written {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
            other => other?,
        }
    }
    Ok(true)
}

/// Replays every line of `input` through `pipeline`. Decisions go to `out`,
/// rejections and rule errors to `diag`. Returns when the input ends, or
/// early without error when `out` is closed (e.g. piped into `head`).
pub fn replay<R: BufRead>(
    pipeline: &mut Pipeline,
    input: R,
    display: &Display,
    out: &mut dyn Write,
    diag: &mut dyn Write,
) -> io::Result<Summary> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut errors_per_rule: BTreeMap<String, usize> = BTreeMap::new();
    let bar = progress_bar(display);
    let mut lines = JsonLines::new(input);
    // Signals without `ts` take the time of the signal before them: deterministic, unlike the wall clock.
    let mut clock = Timestamp::default();
    let mut step = Step::default();
    let mut decisions = Vec::new();
    let mut seen = 0_u64;
    // Lines are decoded a few ahead of their turn so the engine can start
    // loading their nodes' state early; they are handled in input order.
    let mut ahead = Lookahead::default();
    let mut read_error = None;
    loop {
        let line = match read_error.is_none().then(|| lines.next()).flatten() {
            Some(Ok(line)) => {
                seen += 1;
                if seen % PROGRESS_EVERY == 0 {
                    let rate = summary.signals as f64 / started.elapsed().as_secs_f64().max(1e-9);
                    bar.set_position(lines.bytes_read());
                    bar.set_message(format!(
                        "{} signals, {:.0}/s, {} rejected",
                        summary.signals, rate, summary.rejected
                    ));
                }
                match ahead.push(&pipeline.engine, line, |l| l.signal.as_ref().ok()) {
                    Some(line) => line,
                    None => continue,
                }
            }
            // The lines read before the error are still handled, then it is reported.
            Some(Err(e)) => {
                read_error = Some(e);
                continue;
            }
            None => match ahead.pop() {
                Some(line) => line,
                None => break,
            },
        };
        let signal = match line.signal {
            Ok(s) => s,
            Err(reason) => {
                summary.rejected += 1;
                bar.suspend(|| {
                    writeln!(
                        diag,
                        "{}:{}: rejected: {reason}",
                        display.source, line.number
                    )
                })?;
                continue;
            }
        };
        summary.signals += 1;
        if let Some(ts) = signal.ts {
            clock = ts;
        }
        decisions.clear();
        pipeline.on_signal(signal, clock, &mut step, &mut decisions);
        summary.held_open += step.held_open as u64;
        summary.count(&decisions);
        if !decisions.is_empty() {
            summary.invariants.observe(&decisions, pipeline);
        }
        if step.duplicate {
            summary.duplicates += 1;
            continue;
        }
        for e in &step.errors {
            summary.rule_errors += 1;
            let shown = errors_per_rule.entry(e.rule.clone()).or_default();
            *shown += 1;
            if *shown <= ERRORS_SHOWN_PER_RULE {
                let suffix = if *shown == ERRORS_SHOWN_PER_RULE {
                    " (further errors of this rule are only counted)"
                } else {
                    ""
                };
                bar.suspend(|| writeln!(diag, "{}:{}: {e}{suffix}", display.source, line.number))?;
            }
        }
        for p in &step.prints {
            bar.suspend(|| writeln!(diag, "{}:{}: print: {p}", display.source, line.number))?;
        }
        if !write_decisions(out, &decisions)? {
            bar.finish_and_clear();
            summary.elapsed = started.elapsed();
            summary.still_held = pipeline.guards.held();
            return Ok(summary);
        }
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e),
        _ => {}
    }
    if let Some(e) = read_error {
        bar.finish_and_clear();
        return Err(e);
    }
    bar.finish_and_clear();
    summary.elapsed = started.elapsed();
    summary.still_held = pipeline.guards.held();
    Ok(summary)
}

/// Inputs read from the journal at a time.
const JOURNAL_PAGE: usize = 10_000;

/// Replays the input `remedy run` journaled (contract 13): each signal,
/// tick, executor result, approval, silence and alias, at the service-clock
/// time it was taken in, through `pipeline` (built as the service builds
/// it). Jobs are never executed: their results are the journaled ones. So
/// the decisions on `out` are the ones `run` made. Returns when the
/// journal's input ends, or early when `out` is closed.
pub fn replay_journal(
    pipeline: &mut Pipeline,
    journal: &dyn crate::service::journal::Journal,
    display: &Display,
    out: &mut dyn Write,
    diag: &mut dyn Write,
) -> io::Result<Summary> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let bar = progress_bar(display);
    let mut inputs = 0_u64;
    let mut closed = false;
    journal_steps(pipeline, journal, None, |_, s| {
        inputs += 1;
        if inputs % PROGRESS_EVERY == 0 {
            let rate = inputs as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{inputs} inputs ({} signals), {rate:.0}/s, at {}",
                summary.signals, s.at
            ));
            bar.tick();
        }
        if let Some(reason) = s.rejected {
            summary.rejected += 1;
            bar.suspend(|| writeln!(diag, "{}: input {}: {reason}", display.source, s.seq))?;
            return Ok(true);
        }
        summary.count(s.decisions);
        if s.signal.is_some() {
            summary.signals += 1;
            summary.held_open += s.step.held_open as u64;
            summary.duplicates += u64::from(s.step.duplicate);
            summary.rule_errors += s.step.errors.len() as u64;
        }
        closed = !write_decisions(out, s.decisions)?;
        Ok(!closed)
    })
    .map_err(|e| io::Error::other(format!("{}: {e}", display.source)))?;
    if !closed {
        match out.flush() {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e),
            _ => {}
        }
    }
    bar.finish_and_clear();
    summary.elapsed = started.elapsed();
    if !closed {
        summary.still_held = pipeline.guards.held();
    }
    Ok(summary)
}

/// Runs recorded signals (JSON lines) through `pipeline` in event time (a
/// signal without `ts` takes the time of the one before), skipping lines
/// that are not signals; `f` sees each signal, its step and its decisions.
/// Signals after `until` are not run.
pub fn signal_steps<R: BufRead>(
    pipeline: &mut Pipeline,
    input: R,
    until: Option<Timestamp>,
    mut f: impl FnMut(&Pipeline, &Signal, Timestamp, &Step, &[Decision]),
) -> io::Result<()> {
    let (mut step, mut decisions) = (Step::default(), Vec::new());
    let mut clock = Timestamp::default();
    for line in JsonLines::new(input) {
        let Ok(signal) = line?.signal else {
            continue;
        };
        if let Some(ts) = signal.ts {
            clock = ts;
        }
        if until.is_some_and(|until| clock > until) {
            break;
        }
        decisions.clear();
        pipeline.on_signal(signal.clone(), clock, &mut step, &mut decisions);
        f(pipeline, &signal, clock, &step, &decisions);
    }
    Ok(())
}

/// One input of a journal, run: what [`journal_steps`] hands its caller.
pub struct JournalStep<'a> {
    /// The input's sequence number in the journal.
    pub seq: i64,
    /// When the service took it in.
    pub at: Timestamp,
    /// The signal, if the input was one.
    pub signal: Option<&'a Signal>,
    /// What the engine did with it.
    pub step: &'a Step,
    /// The decisions it led to.
    pub decisions: &'a [Decision],
    /// Why it could not be run (a stored signal that no longer decodes).
    pub rejected: Option<String>,
}

/// Runs the input a `remedy run` journaled through `pipeline`, each at the
/// time it was taken in, as the service ran it; executors are never
/// called (their results are inputs too). `f` sees each input and its
/// outcome and says whether to go on; inputs after `until` are not run.
pub fn journal_steps(
    pipeline: &mut Pipeline,
    journal: &dyn crate::service::journal::Journal,
    until: Option<Timestamp>,
    mut f: impl FnMut(&Pipeline, JournalStep<'_>) -> io::Result<bool>,
) -> io::Result<()> {
    let (mut step, mut decisions) = (Step::default(), Vec::new());
    let mut after = 0;
    loop {
        let page = journal
            .inputs(after, JOURNAL_PAGE)
            .map_err(io::Error::other)?;
        let Some(&(last, ..)) = page.last() else {
            return Ok(());
        };
        after = last;
        for (seq, at, input) in page {
            if until.is_some_and(|until| at > until) {
                return Ok(());
            }
            let signal = match &input {
                Input::Signal { json, .. } => Signal::from_json(json).ok(),
                _ => None,
            };
            step.clear();
            decisions.clear();
            let rejected = pipeline.apply(input, at, &mut step, &mut decisions).err();
            drop(pipeline.guards.take_jobs());
            let s = JournalStep {
                seq,
                at,
                signal: signal.as_ref(),
                step: &step,
                decisions: &decisions,
                rejected,
            };
            if !f(pipeline, s)? {
                return Ok(());
            }
        }
    }
}
