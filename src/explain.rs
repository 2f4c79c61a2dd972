//! `remedy explain NODE`: one node's story, in time order, from recorded
//! signals (replayed in event time) or from the input a `remedy run`
//! journaled (replayed at the times it was taken in): the signals it sent
//! (repeats condensed), what the rules answered, the faults that opened and
//! resolved, and every action with its guard's verdict. `--at` stops there
//! and shows the node's state: open faults, held actions, and the budgets
//! of its failure domains with their numbers.

use std::io::{self, BufRead, Write};

use remedy_engine::{Decision, Event, Met, Signal, Step, Timestamp, Why};
use serde::Serialize;

use crate::pipeline::{Known, Pipeline};

/// One line of the story.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// Signals of one type in a row (`count` of them, `first` to `last`).
    Signals {
        /// The first one's time.
        ts: Timestamp,
        /// The last one's time.
        last: Timestamp,
        /// Its type.
        r#type: String,
        /// How many in a row.
        count: u64,
        /// They said the condition cleared.
        resolved: bool,
    },
    /// A rule's answer to one of its signals.
    Answer {
        /// When.
        ts: Timestamp,
        /// The rule file.
        rule: String,
        /// The fault it named.
        fault: String,
        /// Its reason.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A decision about the node (fault opened, resolved, stale,
    /// unverified, or an action with its outcome and reason).
    Decision(Decision),
}

impl Entry {
    fn ts(&self) -> Timestamp {
        match self {
            Entry::Signals { ts, .. } | Entry::Answer { ts, .. } => *ts,
            Entry::Decision(d) => d.ts,
        }
    }
}

/// The node's state at the end of the story (or at `--at`).
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct State {
    /// The time of the state.
    pub at: Option<Timestamp>,
    /// The node's labels as last seen.
    pub labels: Vec<(String, String)>,
    /// Open faults: (class, opened at).
    pub open_faults: Vec<(String, Timestamp)>,
    /// Actions held back for it: (action, fault, outcome, retry at).
    pub held: Vec<(String, String, String, Option<Timestamp>)>,
    /// Its failure domains' budgets: level, value, under remediation,
    /// known nodes, max_unhealthy, nodes it allows.
    pub budgets: Vec<Budget>,
    /// What it last reported of its state (component versions, conditions).
    pub observed: remedy_engine::Observed,
    /// Its class's desired state, its gates and where it is in its rollout
    /// (contract 10); `None` when no `[[node_class]]` selects it.
    pub final_state: Option<serde_json::Value>,
}

/// One level's budget as the node's domain there has it.
#[derive(Debug, PartialEq, Serialize)]
pub struct Budget {
    /// The level's label, or `fleet`.
    pub level: String,
    /// The node's value of it.
    pub value: String,
    /// Nodes under remediation there.
    pub under_remediation: usize,
    /// Known nodes there.
    pub known: usize,
    /// `max_unhealthy` as configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unhealthy: Option<String>,
    /// How many it allows now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allows: Option<usize>,
}

/// An open fault of a node, as [`NodeNow`] has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenFault {
    /// The fault class.
    pub fault: String,
    /// When it opened.
    pub opened_at: Timestamp,
    /// Its severity.
    pub severity: remedy_engine::Severity,
    /// Its condition went stale.
    pub stale: bool,
}

/// What the pipeline knows of a node now: what `explain` ends with and
/// `GET /v1/nodes/NODE` answers.
#[derive(Debug, Default)]
pub struct NodeNow {
    /// Its labels as last seen.
    pub labels: Vec<(String, String)>,
    /// Its open faults.
    pub open: Vec<OpenFault>,
    /// Actions held back for it: (action, fault, outcome, retry at).
    pub held: Vec<(String, String, remedy_engine::Outcome, Option<Timestamp>)>,
    /// The budget of each of its domains.
    pub budgets: Vec<Budget>,
    /// What it last reported of its state (component versions, conditions).
    pub observed: remedy_engine::Observed,
    /// Desired versions, gates and rollout step (contract 10).
    pub final_state: Option<serde_json::Value>,
}

/// The budget of each domain of a node with these labels, as the guards
/// have them now.
pub fn budgets(pipeline: &Pipeline, labels: &[(String, String)]) -> Vec<Budget> {
    let guards = &pipeline.guards;
    pipeline
        .engine
        .with_fleet(|f| guards.budgets_for(labels, &Known(f)))
        .into_iter()
        .map(|(level, value, under, known, budget)| Budget {
            level,
            value,
            under_remediation: under,
            known,
            max_unhealthy: budget.map(|b| b.to_string()),
            allows: budget.map(|b| b.limit(known.max(1))),
        })
        .collect()
}

impl NodeNow {
    /// `None` when the node is not known (never seen, or forgotten) and
    /// nothing is held for it.
    pub fn of(pipeline: &Pipeline, node: &str, now: Timestamp) -> Option<NodeNow> {
        let engine = &pipeline.engine;
        let guards = &pipeline.guards;
        let (labels, open) = engine.with_fleet(|f| {
            let open = f.open_faults_named(node).map(|(_, faults)| {
                faults
                    .iter()
                    .map(|o| OpenFault {
                        fault: f.symbols.name(o.fault).to_string(),
                        opened_at: o.opened_at,
                        severity: o.severity,
                        stale: o.condition.is_some_and(|c| c.stale),
                    })
                    .collect::<Vec<_>>()
            });
            (f.labels_named(node), open.unwrap_or_default())
        });
        let held = guards.held_for(node);
        if labels.is_none() && held.is_empty() {
            return None;
        }
        let labels = labels.unwrap_or_default();
        let budgets = budgets(pipeline, &labels);
        Some(NodeNow {
            labels,
            open,
            held,
            budgets,
            observed: engine.observed(node).cloned().unwrap_or_default(),
            final_state: engine.final_state(node, now),
        })
    }
}

/// A node's story.
#[derive(Debug, Default, Serialize)]
pub struct Story {
    /// The node.
    pub node: String,
    /// What happened, in time order.
    pub events: Vec<Entry>,
    /// Its state at the end (or at `--at`).
    pub state: State,
}

impl Story {
    fn new(node: &str) -> Self {
        Story {
            node: node.to_string(),
            ..Story::default()
        }
    }

    /// Notes what one input did, if it concerns the node.
    fn observe(
        &mut self,
        signal: Option<&Signal>,
        at: Timestamp,
        step: &Step,
        decisions: &[Decision],
        pipeline: &Pipeline,
    ) {
        if let Some(s) = signal.filter(|s| s.node == self.node) {
            let ts = s.ts.unwrap_or(at);
            match self.events.last_mut() {
                Some(Entry::Signals {
                    last,
                    r#type,
                    count,
                    resolved,
                    ..
                }) if *r#type == s.r#type && *resolved == s.resolved => {
                    *count += 1;
                    *last = ts;
                }
                _ => self.events.push(Entry::Signals {
                    ts,
                    last: ts,
                    r#type: s.r#type.clone(),
                    count: 1,
                    resolved: s.resolved,
                }),
            }
            let rules = pipeline.engine.rules();
            for (index, answer) in &step.answers {
                self.events.push(Entry::Answer {
                    ts: at,
                    rule: rules.name(*index).to_string(),
                    fault: answer.fault.clone(),
                    reason: answer.reason.clone(),
                });
            }
        }
        for d in decisions.iter().filter(|d| d.node == self.node) {
            self.events.push(Entry::Decision(d.clone()));
        }
    }

    /// The node's state now, from the pipeline.
    fn settle(&mut self, at: Option<Timestamp>, pipeline: &Pipeline) {
        let clock = at.unwrap_or(Timestamp(0));
        let now = NodeNow::of(pipeline, &self.node, clock).unwrap_or_default();
        self.state = State {
            at,
            open_faults: now
                .open
                .into_iter()
                .map(|o| (o.fault, o.opened_at))
                .collect(),
            held: now
                .held
                .into_iter()
                .map(|(a, f, o, w)| (a, f, o.as_str().to_string(), w))
                .collect(),
            budgets: now.budgets,
            labels: now.labels,
            observed: now.observed,
            final_state: now.final_state,
        };
        self.events.sort_by_key(Entry::ts);
    }

    /// Whether anything in the input concerned the node.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// One line per event, aligned (an action's `why` on the line below
    /// it); `colour` on a terminal.
    pub fn render(&self, colour: bool) -> String {
        let paint = |code: &str, text: &str| {
            if colour {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_string()
            }
        };
        let mut out = format!("{}\n", self.node);
        for e in &self.events {
            let (kind, code, detail) = match e {
                Entry::Signals {
                    last,
                    r#type,
                    count,
                    resolved,
                    ..
                } => {
                    let cleared = if *resolved { " (resolved)" } else { "" };
                    let times = if *count > 1 {
                        format!(" x{count} until {last}")
                    } else {
                        String::new()
                    };
                    ("signal", "2", format!("{type}{cleared}{times}"))
                }
                Entry::Answer {
                    rule,
                    fault,
                    reason,
                    ..
                } => {
                    let reason = reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    ("rule", "36", format!("{rule} -> {fault}{reason}"))
                }
                Entry::Decision(d) => {
                    let reason = d
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    match d.event {
                        Event::Action => {
                            let outcome = d.outcome.map_or("", |o| o.as_str());
                            let code = match outcome {
                                "executed" | "dry_run" => "32",
                                "failed" | "rejected" => "31",
                                _ => "33",
                            };
                            let action = d.action.as_deref().unwrap_or("");
                            (
                                "action",
                                code,
                                format!("{action} {outcome} ({}){reason}", d.fault),
                            )
                        }
                        Event::FaultOpened => ("opened", "1;31", format!("{}{reason}", d.fault)),
                        Event::FaultResolved => ("resolved", "1;32", d.fault.clone()),
                        Event::FaultStale => ("stale", "33", format!("{}{reason}", d.fault)),
                        Event::FaultUnverified => {
                            ("unverified", "33", format!("{}{reason}", d.fault))
                        }
                        Event::Step => {
                            let step = d.step.map_or("", |s| s.as_str());
                            ("step", "36", format!("{step} ({}){reason}", d.fault))
                        }
                    }
                }
            };
            out.push_str(&format!(
                "{:<24}  {}  {detail}\n",
                e.ts().to_string(),
                paint(code, &format!("{kind:<10}"))
            ));
            if let Entry::Decision(Decision { why: Some(why), .. }) = e {
                out.push_str(&format!("{:<24}  {:<10}  {}\n", "", "", why_line(why)));
            }
        }
        let s = &self.state;
        if let Some(at) = s.at {
            out.push_str(&format!("state at {at}:\n"));
        } else {
            out.push_str("state at the end of the input:\n");
        }
        if s.open_faults.is_empty() {
            out.push_str("  no open fault\n");
        }
        for (fault, opened) in &s.open_faults {
            out.push_str(&format!("  open      {fault} since {opened}\n"));
        }
        for (action, fault, outcome, retry) in &s.held {
            let retry = retry.map(|t| format!(", next try {t}")).unwrap_or_default();
            out.push_str(&format!(
                "  held      {action} ({fault}): {outcome}{retry}\n"
            ));
        }
        for b in &s.budgets {
            let domain = if b.level == "fleet" {
                "fleet".to_string()
            } else {
                format!("{} {}", b.level, b.value)
            };
            let allows = match (&b.max_unhealthy, b.allows) {
                (Some(m), Some(n)) => format!(", max_unhealthy {m} allows {n}"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  budget    {domain}: {} of {} known nodes under remediation{allows}\n",
                b.under_remediation, b.known
            ));
        }
        for (component, (version, at)) in &s.observed.components {
            out.push_str(&format!(
                "  version   {component} {version} (reported {at})\n"
            ));
        }
        for (condition, (holds, at)) in &s.observed.conditions {
            let holds = match holds {
                Some(true) => "holds",
                Some(false) => "does not hold",
                None => "unknown",
            };
            out.push_str(&format!(
                "  condition {condition} {holds} (reported {at})\n"
            ));
        }
        if let Some(f) = &s.final_state {
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".to_string(),
                other => other.to_string(),
            };
            let desired: Vec<String> = f["desired"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k} {}", text(v))).collect())
                .unwrap_or_default();
            let gates: Vec<String> = f["gates"]
                .as_array()
                .map(|g| {
                    g.iter()
                        .map(|g| {
                            let holds = match g["holds"].as_bool() {
                                Some(true) => "holds",
                                Some(false) => "false",
                                None => "unknown",
                            };
                            format!("{} {holds}", text(&g["condition"]))
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "  desired   node_class {}: {}; gates: {}; rollout {} (step {})\n",
                text(&f["class"]),
                desired.join(", "),
                if gates.is_empty() {
                    "none".to_string()
                } else {
                    gates.join(", ")
                },
                text(&f["rollout"]),
                text(&f["step"]),
            ));
        }
        out
    }
}

/// The story of `node` in recorded signals (event time), up to `at`.
pub fn from_signals<R: BufRead>(
    pipeline: &mut Pipeline,
    input: R,
    node: &str,
    at: Option<Timestamp>,
) -> io::Result<Story> {
    let mut story = Story::new(node);
    crate::replay::signal_steps(pipeline, input, at, |pipeline, signal, clock, step, out| {
        story.observe(Some(signal), clock, step, out, pipeline);
    })?;
    story.settle(at, pipeline);
    Ok(story)
}

/// The story of `node` in the input a `remedy run` journaled, up to `at`.
pub fn from_journal(
    pipeline: &mut Pipeline,
    journal: &dyn crate::service::journal::Journal,
    node: &str,
    at: Option<Timestamp>,
) -> io::Result<Story> {
    let mut story = Story::new(node);
    crate::replay::journal_steps(pipeline, journal, at, |pipeline, s| {
        if s.rejected.is_none() {
            story.observe(s.signal, s.at, s.step, s.decisions, pipeline);
        }
        Ok(true)
    })?;
    story.settle(at, pipeline);
    Ok(story)
}

/// Writes the story: JSON, or the aligned lines.
pub fn write(story: &Story, json: bool, colour: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, story)?;
        out.write_all(b"\n")
    } else {
        out.write_all(story.render(colour).as_bytes())
    }
}

/// An action's `why` on one line: the rule (and its hash), the rung, then
/// each guard it met with its numbers, `ok` or `HELD`.
pub fn why_line(why: &Why) -> String {
    let mut parts = Vec::new();
    match (&why.rule, &why.rule_hash) {
        (Some(rule), Some(hash)) => parts.push(format!("rule {rule} ({hash})")),
        (Some(rule), None) => parts.push(format!("rule {rule}")),
        _ => {}
    }
    if !why.rung.is_empty() {
        parts.push(format!("rung {}", why.rung));
    }
    let verdict = |pass: bool| if pass { "ok" } else { "HELD" };
    for m in &why.guards {
        parts.push(match m {
            Met::Budget {
                level,
                under,
                known,
                allows,
                in_flight,
                max_in_flight,
                pass,
            } => {
                let mut text = format!("budget {level}: {under} of {known} under remediation");
                if let Some(n) = allows {
                    text.push_str(&format!(", allows {n}"));
                }
                if let (Some(n), Some(max)) = (in_flight, max_in_flight) {
                    text.push_str(&format!(", {n} in flight of {max}"));
                }
                format!("{text} {}", verdict(*pass))
            }
            Met::Quota {
                quota,
                rate,
                left,
                refill_at,
                pass,
            } => {
                let refill = refill_at
                    .map(|t| format!(", next refill {t}"))
                    .unwrap_or_default();
                format!(
                    "quota {quota} {rate}: {left} left{refill} {}",
                    verdict(*pass)
                )
            }
            Met::Breaker {
                executor,
                state,
                since,
                until,
                pass,
            } => {
                let since = since.map(|t| format!(" since {t}")).unwrap_or_default();
                let until = until.map(|t| format!(" until {t}")).unwrap_or_default();
                format!(
                    "breaker of {executor}: {state}{since}{until} {}",
                    verdict(*pass)
                )
            }
            Met::Silence { id, until, comment } => {
                let comment = comment
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                format!("silence {id} until {until}{comment} HELD")
            }
            Met::Approval { id, approved } => {
                format!(
                    "approval {id} {}",
                    if *approved { "given" } else { "asked" }
                )
            }
            Met::Hold {
                label,
                value,
                cause,
            } => format!("common cause {cause} in {label} {value} HELD"),
            Met::Settle {
                label,
                value,
                until,
            } => format!("settle in {label} {value} until {until} HELD"),
            Met::DryRun => "dry-run".to_string(),
        });
    }
    format!("why: {}", parts.join("; "))
}
