//! `/metrics`: Prometheus text exposition of what the service is doing.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use remedy_engine::{Decision, Event};

/// Upper bounds (seconds) of the evaluation latency histogram.
const BUCKETS: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25,
];

#[derive(Debug, Default)]
struct State {
    signals: BTreeMap<&'static str, u64>,
    rejected: BTreeMap<&'static str, u64>,
    rule_evaluations: BTreeMap<String, u64>,
    rule_errors: BTreeMap<String, u64>,
    faults_open: BTreeMap<String, i64>,
    faults_stale: BTreeMap<String, u64>,
    /// Convergence steps (contract 10), by step.
    steps: BTreeMap<&'static str, u64>,
    /// Why the last journal write failed, if it did.
    journal_error: Option<String>,
    /// When the decider last took a command (Unix ms; ticks come every second).
    decider_beat: i64,
    actions: BTreeMap<(String, String), u64>,
    held: usize,
    under_remediation: Vec<(String, String, usize)>,
    known_nodes: usize,
    forgotten: u64,
    breakers: Vec<(String, bool)>,
    efficacy: Vec<remedy_engine::efficacy::Row>,
    latency: [u64; BUCKETS.len() + 1],
    latency_sum: f64,
    latency_count: u64,
    reloads: u64,
    reload_failures: u64,
    last_reload_error: Option<String>,
    collectors: BTreeMap<String, Collector>,
}

/// What one source (a scrape endpoint, a PromQL query, Kafka) last did.
pub use remedy_collectors::SourceStatus as Collector;

/// The sources report into the metrics.
impl remedy_collectors::Report for Metrics {
    fn received(&self, source: &'static str, accepted: usize, rejected: usize) {
        Metrics::received(self, source, accepted, rejected);
    }
    fn collected(&self, name: &str, result: Result<i64, String>) {
        Metrics::collected(self, name, result);
    }
    fn status(&self, name: &str, status: Collector) {
        self.collector(name, status);
    }
}

/// Counters and gauges, shared by the HTTP handlers and the decider.
#[derive(Debug, Default)]
pub struct Metrics(Mutex<State>);

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// Signals taken in and lines rejected, by source.
    pub fn received(&self, source: &'static str, accepted: usize, rejected: usize) {
        self.with(|s| {
            *s.signals.entry(source).or_default() += accepted as u64;
            *s.rejected.entry(source).or_default() += rejected as u64;
        });
    }

    /// A collector's attempt: `Ok(unix seconds)` or the error.
    pub fn collected(&self, name: &str, result: Result<i64, String>) {
        self.with(|s| {
            let c = s.collectors.entry(name.to_string()).or_default();
            match result {
                Ok(at) => {
                    c.up = true;
                    c.last_success = Some(at);
                    c.last_error = None;
                }
                Err(e) => {
                    c.up = false;
                    c.errors += 1;
                    c.last_error = Some(e);
                }
            }
        });
    }

    /// A collector's whole state at once (the Kafka source reports its own).
    pub fn collector(&self, name: &str, state: Collector) {
        self.with(|s| {
            s.collectors.insert(name.to_string(), state);
        });
    }

    /// Every collector's state, by name.
    pub fn collectors(&self) -> BTreeMap<String, Collector> {
        self.with(|s| s.collectors.clone())
    }

    /// One signal decided: the rules it met, those that failed, what it led
    /// to, and how long it took.
    pub fn decided<'a>(
        &self,
        evaluated: impl Iterator<Item = &'a str>,
        errors: impl Iterator<Item = &'a str>,
        decisions: &[Decision],
        seconds: f64,
    ) {
        self.with(|s| {
            for rule in evaluated {
                // No key copied per signal: only a rule's first evaluation
                // allocates its name.
                match s.rule_evaluations.get_mut(rule) {
                    Some(n) => *n += 1,
                    None => {
                        s.rule_evaluations.insert(rule.to_string(), 1);
                    }
                }
            }
            for rule in errors {
                *s.rule_errors.entry(rule.to_string()).or_default() += 1;
            }
            count(s, decisions);
            let bucket = BUCKETS
                .iter()
                .position(|&b| seconds <= b)
                .unwrap_or(BUCKETS.len());
            s.latency[bucket] += 1;
            s.latency_sum += seconds;
            s.latency_count += 1;
        });
    }

    /// Decisions made without a signal (timers), or restored at start.
    pub fn counted(&self, decisions: &[Decision]) {
        self.with(|s| count(s, decisions));
    }

    /// A fault open since before the start.
    pub fn recovered(&self, fault: &str) {
        self.with(|s| *s.faults_open.entry(fault.to_string()).or_default() += 1);
    }

    /// The guard chain's state after a command.
    pub fn guards(
        &self,
        held: usize,
        under_remediation: Vec<(String, String, usize)>,
        breakers: Vec<(String, bool)>,
    ) {
        self.with(|s| {
            s.held = held;
            s.under_remediation = under_remediation;
            s.breakers = breakers;
        });
    }

    /// The efficacy ledger as of now.
    pub fn efficacy(&self, rows: Vec<remedy_engine::efficacy::Row>) {
        self.with(|s| s.efficacy = rows);
    }

    /// How many nodes the engine knows, and how many it just forgot
    /// (`forget_after`).
    pub fn nodes(&self, known: usize, forgotten: usize) {
        self.with(|s| {
            s.known_nodes = known;
            s.forgotten += forgotten as u64;
        });
    }

    /// A rules reload, and its error if it failed (the old rules keep running).
    pub fn reloaded(&self, error: Option<String>) {
        self.with(|s| {
            s.reloads += 1;
            if error.is_some() {
                s.reload_failures += 1;
            }
            s.last_reload_error = error;
        });
    }

    /// The decider took a command at `at` (Unix ms).
    pub fn beat(&self, at: i64) {
        self.with(|s| s.decider_beat = at);
    }

    /// When the decider last took a command (Unix ms), 0 before it started.
    pub fn last_beat(&self) -> i64 {
        self.with(|s| s.decider_beat)
    }

    /// The outcome of the last journal write (`/readyz` reports it).
    pub fn journaled(&self, result: Result<(), String>) {
        self.with(|s| s.journal_error = result.err());
    }

    /// Why the last journal write failed, if it did.
    pub fn journal_error(&self) -> Option<String> {
        self.with(|s| s.journal_error.clone())
    }

    /// Why the last reload failed, if it did.
    pub fn reload_error(&self) -> Option<String> {
        self.with(|s| s.last_reload_error.clone())
    }

    /// The exposition text.
    pub fn render(&self, queue_depth: usize) -> String {
        self.with(|s| render(s, queue_depth))
    }
}

fn count(s: &mut State, decisions: &[Decision]) {
    for d in decisions {
        match d.event {
            Event::FaultOpened => *s.faults_open.entry(d.fault.clone()).or_default() += 1,
            Event::FaultResolved => *s.faults_open.entry(d.fault.clone()).or_default() -= 1,
            Event::FaultStale => *s.faults_stale.entry(d.fault.clone()).or_default() += 1,
            Event::FaultUnverified => {}
            Event::Step => {
                if let Some(step) = d.step {
                    *s.steps.entry(step.as_str()).or_default() += 1;
                }
            }
            Event::Action => {
                if let (Some(a), Some(o)) = (&d.action, d.outcome) {
                    *s.actions
                        .entry((a.clone(), o.as_str().to_string()))
                        .or_default() += 1;
                }
            }
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render(s: &State, queue_depth: usize) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let by = |key: &str, m: &BTreeMap<&'static str, u64>| -> Vec<(String, String)> {
        m.iter()
            .map(|(k, v)| (format!("{{{key}=\"{}\"}}", escape(k)), v.to_string()))
            .collect()
    };
    family(
        "remedy_signals_total",
        "counter",
        "Signals taken in, by source.",
        by("source", &s.signals),
    );
    family(
        "remedy_signals_rejected_total",
        "counter",
        "Lines or alerts rejected as not a valid signal, by source.",
        by("source", &s.rejected),
    );
    let rules = |m: &BTreeMap<String, u64>| -> Vec<(String, String)> {
        m.iter()
            .map(|(k, v)| (format!("{{rule=\"{}\"}}", escape(k)), v.to_string()))
            .collect()
    };
    family(
        "remedy_rule_evaluations_total",
        "counter",
        "classify calls, by rule.",
        rules(&s.rule_evaluations),
    );
    family(
        "remedy_rule_errors_total",
        "counter",
        "Rule failures (throws, sandbox limits, bad answers), by rule.",
        rules(&s.rule_errors),
    );
    family(
        "remedy_faults_open",
        "gauge",
        "Open faults, by class.",
        s.faults_open
            .iter()
            .map(|(k, v)| (format!("{{fault=\"{}\"}}", escape(k)), v.to_string()))
            .collect(),
    );
    family(
        "remedy_faults_stale_total",
        "counter",
        "Condition faults that went stale (neither re-asserted nor resolved within stale_after), by class.",
        s.faults_stale
            .iter()
            .map(|(k, v)| (format!("{{fault=\"{}\"}}", escape(k)), v.to_string()))
            .collect(),
    );
    family(
        "remedy_steps_total",
        "counter",
        "Convergence steps of nodes towards their final state (cordoned, drained, applied, gates_passed, uncordoned, halted).",
        s.steps
            .iter()
            .map(|(k, v)| (format!("{{step=\"{k}\"}}"), v.to_string()))
            .collect(),
    );
    family(
        "remedy_actions_total",
        "counter",
        "Action decisions, by action and outcome.",
        s.actions
            .iter()
            .map(|((a, o), v)| {
                (
                    format!("{{action=\"{}\",outcome=\"{o}\"}}", escape(a)),
                    v.to_string(),
                )
            })
            .collect(),
    );
    family(
        "remedy_guard_held_actions",
        "gauge",
        "Actions held back by a guard, waiting to be retried.",
        vec![(String::new(), s.held.to_string())],
    );
    family(
        "remedy_guard_under_remediation",
        "gauge",
        "Nodes under remediation, by level (its label, or fleet) and failure domain.",
        s.under_remediation
            .iter()
            .map(|(level, d, n)| {
                (
                    format!("{{level=\"{}\",domain=\"{}\"}}", escape(level), escape(d)),
                    n.to_string(),
                )
            })
            .collect(),
    );
    let ledger = |value: fn(&remedy_engine::efficacy::Row) -> Option<String>| {
        s.efficacy
            .iter()
            .filter_map(|r| {
                let split = match (&r.label, &r.value) {
                    (Some(label), Some(v)) => {
                        format!(",label=\"{}\",value=\"{}\"", escape(label), escape(v))
                    }
                    _ => String::new(),
                };
                let labels = format!(
                    "{{fault=\"{}\",action=\"{}\"{split}}}",
                    escape(&r.fault),
                    escape(&r.action)
                );
                value(r).map(|v| (labels, v))
            })
            .collect()
    };
    family(
        "remedy_efficacy_runs",
        "gauge",
        "Runs of an action for a fault class judged by the efficacy ledger (resolved, or past the verify window).",
        ledger(|r| Some(r.runs.to_string())),
    );
    family(
        "remedy_efficacy_pending_runs",
        "gauge",
        "Runs of an action still within their verify window, not judged yet.",
        ledger(|r| Some(r.pending.to_string())),
    );
    family(
        "remedy_efficacy_success_ratio",
        "gauge",
        "Share of judged runs after which the fault resolved within verify and did not return within 7 days.",
        ledger(|r| (r.runs > 0).then(|| r.success_rate.to_string())),
    );
    family(
        "remedy_efficacy_median_healthy_seconds",
        "gauge",
        "Median time from the action to the fault resolving, of runs whose fault resolved.",
        ledger(|r| r.median_secs.map(|m| m.to_string())),
    );
    family(
        "remedy_known_nodes",
        "gauge",
        "Nodes known (they sent a signal and were not forgotten): failure domain sizes count these.",
        vec![(String::new(), s.known_nodes.to_string())],
    );
    family(
        "remedy_nodes_forgotten_total",
        "counter",
        "Nodes forgotten after forget_after with no open fault and no signal.",
        vec![(String::new(), s.forgotten.to_string())],
    );
    family(
        "remedy_breaker_open",
        "gauge",
        "Whether an executor's circuit breaker is open (1) or lets calls through (0).",
        s.breakers
            .iter()
            .map(|(e, open)| {
                (
                    format!("{{executor=\"{}\"}}", escape(e)),
                    u8::from(*open).to_string(),
                )
            })
            .collect(),
    );
    family(
        "remedy_queue_depth",
        "gauge",
        "Requests waiting for the decider.",
        vec![(String::new(), queue_depth.to_string())],
    );
    family(
        "remedy_rules_reloads_total",
        "counter",
        "Rule reloads attempted (file change or SIGHUP).",
        vec![(String::new(), s.reloads.to_string())],
    );
    family(
        "remedy_rules_reload_failures_total",
        "counter",
        "Rule reloads that failed to compile (the previous rules kept running).",
        vec![(String::new(), s.reload_failures.to_string())],
    );
    let collectors = |f: &dyn Fn(&Collector) -> Option<String>| -> Vec<(String, String)> {
        s.collectors
            .iter()
            .filter_map(|(k, c)| f(c).map(|v| (format!("{{collector=\"{}\"}}", escape(k)), v)))
            .collect()
    };
    family(
        "remedy_collector_up",
        "gauge",
        "Whether a collector's last attempt succeeded.",
        collectors(&|c| Some(u8::from(c.up).to_string())),
    );
    family(
        "remedy_collector_errors_total",
        "counter",
        "Failed collector attempts.",
        collectors(&|c| Some(c.errors.to_string())),
    );
    family(
        "remedy_collector_last_success_timestamp_seconds",
        "gauge",
        "When a collector last succeeded.",
        collectors(&|c| c.last_success.map(|t| t.to_string())),
    );
    family(
        "remedy_collector_lag_messages",
        "gauge",
        "Messages a collector has not consumed yet (Kafka consumer lag).",
        collectors(&|c| c.lag.map(|l| l.to_string())),
    );
    let mut cumulative = 0;
    let mut buckets: Vec<(String, String)> = BUCKETS
        .iter()
        .enumerate()
        .map(|(i, b)| {
            cumulative += s.latency[i];
            (format!("_bucket{{le=\"{b}\"}}"), cumulative.to_string())
        })
        .collect();
    buckets.push(("_bucket{le=\"+Inf\"}".into(), s.latency_count.to_string()));
    buckets.push(("_sum".into(), s.latency_sum.to_string()));
    buckets.push(("_count".into(), s.latency_count.to_string()));
    family(
        "remedy_evaluation_seconds",
        "histogram",
        "Time to decide one signal (rules, lifecycle, guards).",
        buckets,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_engine::{Outcome, Severity, Timestamp};

    #[test]
    fn renders_prometheus_text_with_the_usual_names() {
        let m = Metrics::default();
        m.received("http", 3, 1);
        let t = Timestamp(0);
        m.decided(
            ["hardware/memory.rhai"].into_iter(),
            std::iter::empty(),
            &[
                Decision::opened(t, "n1", "memory_failure", Severity::Critical, "r", None),
                Decision::action(t, "n1", "memory_failure", "cordon", Outcome::DryRun, None),
            ],
            0.0003,
        );
        m.guards(
            2,
            vec![("cluster".into(), "c1".into(), 1)],
            vec![("kubernetes".into(), true), ("http".into(), false)],
        );
        let text = m.render(5);
        for line in [
            "remedy_signals_total{source=\"http\"} 3",
            "remedy_signals_rejected_total{source=\"http\"} 1",
            "remedy_rule_evaluations_total{rule=\"hardware/memory.rhai\"} 1",
            "remedy_faults_open{fault=\"memory_failure\"} 1",
            "remedy_actions_total{action=\"cordon\",outcome=\"dry_run\"} 1",
            "remedy_guard_held_actions 2",
            "remedy_guard_under_remediation{level=\"cluster\",domain=\"c1\"} 1",
            "remedy_breaker_open{executor=\"kubernetes\"} 1",
            "remedy_breaker_open{executor=\"http\"} 0",
            "remedy_queue_depth 5",
            "remedy_evaluation_seconds_bucket{le=\"0.0005\"} 1",
            "remedy_evaluation_seconds_bucket{le=\"0.00025\"} 0",
            "remedy_evaluation_seconds_count 1",
            "# TYPE remedy_evaluation_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
