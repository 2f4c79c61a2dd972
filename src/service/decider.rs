//! The decider: one thread that owns the pipeline (rules, lifecycle,
//! guards) and the journal, and takes one command at a time: batches of
//! signals from the sources, the clock's ticks, executor results, operator
//! commands. Every decision is journaled before the command that caused it
//! is answered; a job goes to its executor only once it is journaled.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use remedy_actions::{Executors, Job, Silence};
use remedy_engine::{Decision, Intent, Lookahead, Outcome, Severity, Signal, Step, Trigger};
use tokio::sync::{mpsc, oneshot, Notify};

use super::journal::{self, Journal, Write};
use super::metrics::Metrics;
use crate::pipeline::{Input, Pipeline};

/// The service's clock (for timers and signals without `ts`), the one the sources read.
pub(super) use remedy_collectors::intake::now;

/// What the decider is asked to do.
pub(super) enum Command {
    /// Decide on these signals, journal, then answer with how many.
    Ingest {
        signals: Vec<Signal>,
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// Let time pass: escalations and held-back actions.
    Tick,
    /// The service stops: journal what is pending and end.
    Finish,
    /// Names of nodes from the Kubernetes node list: (alias, node).
    Aliases(Vec<(String, String)>),
    /// Load the rules again (file change, SIGHUP); the old ones stay on error.
    Reload,
    /// Add a silence; answers its id.
    Silence(Silence, oneshot::Sender<u64>),
    /// Remove a silence; answers whether there was one.
    Unsilence(u64, oneshot::Sender<bool>),
    /// The silences.
    Silences(oneshot::Sender<Vec<Silence>>),
    /// Actions awaiting approval.
    Awaiting(oneshot::Sender<Vec<(u64, Intent)>>),
    /// Approve (true) or reject (false) one; answers whether it was waiting.
    Decide(u64, bool, oneshot::Sender<Result<bool, String>>),
    /// What the decider knows of a node now (`None`: nothing).
    Node(String, oneshot::Sender<Option<serde_json::Value>>),
    /// Each `[[node_class]]`'s rollout now (contract 10).
    Rollouts(oneshot::Sender<Vec<serde_json::Value>>),
    /// An operator resumes a class's halted rollout; answers whether it was
    /// halted.
    ResumeRollout(String, oneshot::Sender<Result<bool, String>>),
    /// The holds of open common causes: (label, value, fault).
    Holds(oneshot::Sender<Vec<(String, String, String)>>),
    /// An operator releases the hold on (label, value); answers whether
    /// there was one.
    ReleaseHold(String, String, oneshot::Sender<Result<bool, String>>),
    /// An executor finished a job: a summary of its response, or why it failed.
    Finished {
        id: String,
        result: Result<String, remedy_actions::ExecError>,
    },
}

/// Puts the journal's open faults back into the engine so nothing reopens,
/// and what became of their actions back into the guard chain: nodes under
/// remediation stay so, held-back actions wait again, approvals await again.
/// How often a node that keeps sending with the same labels has its
/// last-seen time journaled again (for `forget_after` across restarts).
const SEEN_REFRESH_MS: i64 = 3_600_000;

pub(super) fn recover(
    pipeline: &mut Pipeline,
    journal: &dyn Journal,
    metrics: &Metrics,
) -> Result<usize, journal::JournalError> {
    // Quotas first: putting them back moves the guards' clock up to now.
    pipeline.guards.restore_quotas(journal.quotas()?, now());
    for id in journal.recent_ids(journal::KEPT_IDS)? {
        pipeline.engine.remember_id(&id);
    }
    for (alias, node) in journal.aliases()? {
        pipeline.engine.restore_alias(&alias, &node);
    }
    // Which nodes exist (domain sizes) and what the rules count survive a restart.
    for (seen, last) in journal.seen()? {
        // Journaled from a map: each key once, already as Labels holds them.
        let known = remedy_engine::Labels(seen.labels);
        pipeline
            .engine
            .restore_node(&seen.node, &known, last, false);
    }
    let since = remedy_engine::Timestamp(now().0 - journal::HISTORY_KEPT_MS);
    for (node, r#type, ts) in journal.history(since)? {
        pipeline.engine.restore_signal(&node, &r#type, ts);
    }
    // How well each repair worked so far (`efficacy()`, `demote`).
    journal.each_decision(&mut |d| {
        pipeline.engine.remember(d);
        Ok(())
    })?;
    // Openings within the longest max_attempts window: a restart does not
    // reset the count.
    if let Some(window) = pipeline.engine.policies().attempts_window() {
        let since = remedy_engine::Timestamp(now().0.saturating_sub(window.0));
        let mut by_fault: BTreeMap<(String, String), Vec<remedy_engine::Timestamp>> =
            BTreeMap::new();
        for (node, fault, opened) in journal.openings(since)? {
            by_fault.entry((node, fault)).or_default().push(opened);
        }
        for ((node, fault), opened) in by_fault {
            if pipeline.engine.policy(&fault).max_attempts.is_some() {
                pipeline.engine.restore_node(
                    &node,
                    &remedy_engine::Labels::default(),
                    opened[0],
                    false,
                );
                pipeline.engine.restore_attempts(&node, &fault, &opened);
            }
        }
    }
    let open = journal.faults(Some(true), None)?;
    let restarted = now();
    // Jobs still with an executor count as asked for: their rung must not
    // be asked again (the job is run again below, once).
    let running = journal.running_jobs()?;
    // Holds an operator released stay released.
    let released = match open.iter().map(|f| f.opened_at).min() {
        Some(oldest) if !pipeline.engine.correlations().is_empty() => {
            journal.released_holds(oldest)?
        }
        _ => Vec::new(),
    };
    for f in &open {
        metrics.recovered(&f.fault);
        let severity = f
            .severity
            .as_deref()
            .and_then(Severity::parse)
            .unwrap_or(Severity::Warning);
        let node = journal.node(&f.node)?;
        let labels = node.labels;
        let known = remedy_engine::Labels(labels.clone());
        pipeline
            .engine
            .restore_node(&f.node, &known, f.opened_at, node.domain);
        // An open common cause holds its domain again.
        for c in pipeline.engine.correlations().to_vec() {
            let value = f.node.strip_prefix(&format!("{}=", c.label));
            if let (Some(value), true, true) = (value, node.domain, c.hold && c.fault == f.fault) {
                let was_released = released
                    .iter()
                    .any(|(l, v, at)| *l == c.label && v == value && *at >= f.opened_at);
                if !was_released {
                    pipeline.guards.hold(&c.label, value, &c.fault, true);
                }
            }
        }
        let types: Vec<String> = f.signal_type.iter().cloned().collect();
        let states = journal.action_states(&f.node, &f.fault, f.opened_at)?;
        let mut done: Vec<String> = states.iter().map(|s| s.action.clone()).collect();
        done.extend(
            running
                .iter()
                .map(|j| &j.intent)
                .filter(|i| i.node == f.node && i.fault == f.fault && i.opened == f.opened_at)
                .map(|i| i.action.clone()),
        );
        pipeline.engine.restore_open(
            &f.node,
            &f.fault,
            severity,
            f.rule.as_deref().unwrap_or(""),
            f.opened_at,
            &types,
            &done,
        );
        let approval = pipeline.engine.policy(&f.fault).approval;
        for journal::ActionState {
            action,
            last,
            passed,
            retry_at,
            why,
            params,
        } in states
        {
            let outcome = if passed {
                Outcome::DryRun
            } else {
                match serde_json::from_value::<Outcome>(serde_json::Value::String(last)) {
                    Ok(o) => o,
                    Err(_) => continue,
                }
            };
            let intent = Intent {
                at: restarted,
                domain: node.domain,
                node: f.node.clone(),
                fault: f.fault.clone(),
                opened: f.opened_at,
                reason: None,
                action,
                labels: labels.clone(),
                trigger: Trigger::Remedy,
                approval,
                why,
                params,
            };
            pipeline
                .guards
                .restore(intent, outcome, retry_at.unwrap_or(restarted));
        }
    }
    // Jobs that were with an executor when the service stopped run again
    // (idempotent on their id); their result has not been decided yet.
    for job in running {
        tracing::info!(id = %job.id, executor = %job.executor, "job was running at the last stop: running it again");
        pipeline.guards.restore_job(job);
    }
    Ok(open.len())
}

/// The decider: owns the pipeline and the journal, one command at a time.
pub(super) struct Decider {
    pipeline: Pipeline,
    journal: Box<dyn Journal>,
    metrics: Arc<Metrics>,
    rules: PathBuf,
    step: Step,
    out: Vec<Decision>,
    /// What the next journal write records: empty unless the last write
    /// failed, when it goes out with the next command's.
    pending: Write,
    /// Jobs journaled as started but not yet handed to the executors.
    unsent: Vec<Job>,
    /// Where jobs go to be executed; `None` in tests that only decide.
    pub(super) runner: Option<mpsc::UnboundedSender<Job>>,
    /// Woken after each journal write (the decisions topic follows the journal).
    pub(super) written: Arc<Notify>,
    /// Per node, a hash of the labels last journaled as seen and when: a
    /// node whose labels did not change is written again only after
    /// [`SEEN_REFRESH_MS`] (so a restart knows roughly when it was last seen).
    seen: rustc_hash::FxHashMap<String, (u64, i64)>,
    /// When the efficacy ledger last went to the metrics, at which version.
    efficacy_shown: (std::time::Instant, u64),
}

impl Decider {
    pub(super) fn new(
        pipeline: Pipeline,
        journal: Box<dyn Journal>,
        metrics: Arc<Metrics>,
        rules: PathBuf,
    ) -> Self {
        Decider {
            pipeline,
            journal,
            metrics,
            rules,
            step: Step::default(),
            out: Vec::new(),
            pending: Write::default(),
            unsent: Vec::new(),
            runner: None,
            written: Arc::new(Notify::new()),
            seen: rustc_hash::FxHashMap::default(),
            efficacy_shown: (std::time::Instant::now(), u64::MAX),
        }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // Jobs restored from the journal go out at once.
        let _ = self.journal();
        self.guard_metrics();
        // A command taken from the queue while gathering job results.
        let mut next = None;
        loop {
            let command = match next.take() {
                Some(c) => c,
                None => match rx.blocking_recv() {
                    Some(c) => c,
                    None => break,
                },
            };
            self.metrics.beat(now().0);
            match command {
                Command::Finish => {
                    let _ = self.journal();
                    break;
                }
                Command::Aliases(aliases) => {
                    for (alias, node) in aliases {
                        self.out.clear();
                        let at = now();
                        self.pipeline
                            .alias(&alias, &node, at, &mut self.step, &mut self.out);
                        self.pending.inputs.push((at, Input::Alias { alias, node }));
                        self.pending.aliases.append(&mut self.step.learned);
                        self.metrics.counted(&self.out);
                        self.pending
                            .entries
                            .extend(self.out.drain(..).map(|d| (d, None)));
                    }
                    let _ = self.journal();
                }
                Command::Tick => {
                    self.out.clear();
                    let at = now();
                    self.pipeline.advance(at, &mut self.step, &mut self.out);
                    // A tick that changed nothing is not worth a journal row.
                    if !self.out.is_empty()
                        || !self.step.forgotten.is_empty()
                        || self.pipeline.guards.has_jobs()
                    {
                        self.pending.inputs.push((at, Input::Tick));
                    }
                    self.forgotten();
                    self.metrics.counted(&self.out);
                    self.pending
                        .entries
                        .extend(self.out.drain(..).map(|d| (d, None)));
                    // A failed write is logged, and /readyz reports the journal.
                    let _ = self.journal();
                }
                Command::Finished { id, result } => {
                    self.finish(id, result);
                    // Jobs finish in bursts: decide every result already
                    // waiting, then write them in one transaction.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(Command::Finished { id, result }) => self.finish(id, result),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let _ = self.journal();
                }
                Command::Ingest { signals, reply } => {
                    let n = signals.len();
                    // In order, with each node's state loading a few signals ahead (as replay does).
                    let mut ahead = Lookahead::default();
                    for signal in signals {
                        if let Some(signal) = ahead.push(&self.pipeline.engine, signal, |s| Some(s))
                        {
                            self.decide(signal);
                        }
                    }
                    while let Some(signal) = ahead.pop() {
                        self.decide(signal);
                    }
                    // The source tells its client (an HTTP answer, a
                    // Kafka offset not committed) why it is not acknowledged.
                    let journaled = self.journal().map(|()| n).map_err(|e| e.to_string());
                    // What a client reads next (/metrics) includes this batch.
                    self.guard_metrics();
                    let _ = reply.send(journaled);
                }
                Command::Reload => self.reload(),
                Command::Silence(silence, reply) => {
                    let id = self.pipeline.guards.silence(silence);
                    let added = self.pipeline.guards.silences().iter().find(|s| s.id == id);
                    if let Some(s) = added {
                        self.pending.inputs.push((now(), Input::Silence(s.clone())));
                    }
                    let _ = self.journal();
                    let _ = reply.send(id);
                }
                Command::Unsilence(id, reply) => {
                    let found = self.pipeline.guards.unsilence(id);
                    if found {
                        self.pending.inputs.push((now(), Input::Unsilence(id)));
                        let _ = self.journal();
                    }
                    let _ = reply.send(found);
                }
                Command::Silences(reply) => {
                    let _ = reply.send(self.pipeline.guards.silences().to_vec());
                }
                Command::Awaiting(reply) => {
                    let list = self
                        .pipeline
                        .guards
                        .awaiting()
                        .map(|(id, i)| (id, i.clone()));
                    let _ = reply.send(list.collect());
                }
                Command::Node(node, reply) => {
                    let _ = reply.send(self.node_state(&node));
                }
                Command::Holds(reply) => {
                    let _ = reply.send(self.pipeline.guards.holds());
                }
                Command::Rollouts(reply) => {
                    let _ = reply.send(self.pipeline.engine.rollout_status(now()));
                }
                Command::ResumeRollout(class, reply) => {
                    let r = self.pipeline.engine.rollouts();
                    let halted = r
                        .classes
                        .iter()
                        .zip(&r.waves)
                        .any(|(c, w)| c.name == class && w.halted.is_some());
                    let answer = if halted {
                        self.operator(Input::ResumeRollout { class })
                    } else {
                        Ok(false)
                    };
                    let _ = reply.send(answer);
                }
                Command::ReleaseHold(label, value, reply) => {
                    let held = self.pipeline.guards.holds();
                    let holds = held.iter().any(|(l, v, _)| *l == label && *v == value);
                    let answer = if holds {
                        self.operator(Input::ReleaseHold { label, value })
                    } else {
                        Ok(false)
                    };
                    let _ = reply.send(answer);
                }
                Command::Decide(id, approve, reply) => {
                    let found = self.approve(id, approve);
                    let _ = reply.send(self.journal().map(|()| found).map_err(|e| e.to_string()));
                }
            }
            self.guard_metrics();
        }
    }

    /// An operator's input (a hold released, a rollout resumed), journaled
    /// with what it led to; `true` once written.
    fn operator(&mut self, input: Input) -> Result<bool, String> {
        self.out.clear();
        let at = now();
        self.pending.inputs.push((at, input.clone()));
        // Infallible for these inputs: they carry no signal to decode.
        let _ = self
            .pipeline
            .apply(input, at, &mut self.step, &mut self.out);
        self.metrics.counted(&self.out);
        self.pending
            .entries
            .extend(self.out.drain(..).map(|d| (d, None)));
        self.journal().map(|()| true).map_err(|e| e.to_string())
    }

    /// An executor's result becomes a decision (journaled with the next write).
    fn finish(&mut self, id: String, result: Result<String, remedy_actions::ExecError>) {
        self.out.clear();
        let at = now();
        let input = Input::Finished {
            id: id.clone(),
            result: result.clone(),
        };
        self.pending.inputs.push((at, input));
        match self.pipeline.finished(&id, result, at, &mut self.out) {
            Some(remedy_actions::Finished::Done) => self.pending.finished.push(id),
            // Journaled with its next try: a restart resumes it.
            Some(remedy_actions::Finished::Retry(job)) => self.pending.started.push(*job),
            None => {}
        }
        self.metrics.counted(&self.out);
        self.pending
            .entries
            .extend(self.out.drain(..).map(|d| (d, None)));
    }

    fn guard_metrics(&mut self) {
        // The ledger's rows when a decision changed them, and once a
        // second (time alone judges pending runs).
        let version = self.pipeline.engine.efficacy().version();
        if version != self.efficacy_shown.1
            || self.efficacy_shown.0.elapsed() >= std::time::Duration::from_secs(1)
        {
            self.efficacy_shown = (std::time::Instant::now(), version);
            let rows = self.pipeline.engine.efficacy().rows_at(now());
            self.metrics.efficacy(rows);
        }
        let guards = &self.pipeline.guards;
        self.metrics
            .guards(guards.held(), guards.domains(), guards.breakers());
        let known = self.pipeline.engine.with_fleet(|f| f.known_nodes());
        self.metrics.nodes(known, 0);
    }

    fn decide(&mut self, signal: Signal) {
        let started = std::time::Instant::now();
        let r#type = signal.r#type.clone();
        let id = signal.id.clone();
        let at = now();
        // What the rules will count of it, journaled so a restart counts it too.
        // Its labels are copied only when they differ from what was journaled.
        let counted = (!signal.resolved && !signal.is_domain()).then(|| {
            // What describes the node, not what a state report is about.
            let labels = signal.node_labels();
            let hash = {
                use std::hash::{Hash, Hasher};
                // Compared with itself only (never journaled): a fast hash.
                let mut h = rustc_hash::FxHasher::default();
                labels.0.hash(&mut h);
                h.finish()
            };
            let changed = self
                .seen
                .get(&signal.node)
                .is_none_or(|&(h, written)| h != hash || at.0 - written >= SEEN_REFRESH_MS);
            (
                signal.node.clone(),
                signal.ts.unwrap_or(at),
                changed.then(|| (hash, labels.0.clone())),
            )
        });
        // One span per signal: node, type, and the rules that matched (the
        // events below also name their node, for logs read without spans).
        let span = tracing::info_span!(
            "signal",
            node = %signal.node,
            r#type = %r#type,
            rules = tracing::field::Empty
        );
        let _entered = span.enter();
        self.out.clear();
        self.pending.inputs.push((at, Input::from(&signal)));
        self.pipeline
            .on_signal(signal, at, &mut self.step, &mut self.out);
        // Before this signal's node is noted as seen: it may be one just
        // forgotten and back (new now).
        self.forgotten();
        if let (Some(id), false) = (id, self.step.duplicate) {
            self.pending.ids.push(id);
        }
        if let (Some((node, ts, changed)), false) = (counted, self.step.duplicate) {
            self.pending
                .history
                .push((node.clone(), r#type.clone(), ts));
            if let Some((hash, labels)) = changed {
                self.seen.insert(node.clone(), (hash, at.0));
                self.pending.seen.insert(node, (labels, at));
            }
        }
        self.pending.aliases.append(&mut self.step.learned);
        for e in &self.step.errors {
            tracing::warn!(rule = %e.rule, r#type = %r#type, "rule error: {e}");
        }
        let rules = self.pipeline.engine.rules();
        if !self.step.answers.is_empty() && !span.is_disabled() {
            let matched: Vec<&str> = self
                .step
                .answers
                .iter()
                .map(|(i, _)| rules.name(*i))
                .collect();
            span.record("rules", tracing::field::display(matched.join(",")));
        }
        for d in &self.out {
            match (d.action.as_deref(), d.outcome) {
                (Some(action), Some(outcome)) => {
                    tracing::debug!(node = %d.node, fault = %d.fault, action, outcome = outcome.as_str(), "action")
                }
                _ => {
                    tracing::info!(node = %d.node, fault = %d.fault, event = ?d.event, reason = d.reason.as_deref(), "fault")
                }
            }
        }
        self.metrics.decided(
            self.step.evaluated.iter().map(|&i| rules.name(i)),
            self.step.errors.iter().map(|e| e.rule.as_str()),
            &self.out,
            started.elapsed().as_secs_f64(),
        );
        self.pending
            .entries
            .extend(self.out.drain(..).map(|d| (d, Some(r#type.clone()))));
    }

    /// `GET /v1/nodes/{node}`: its labels, open faults, held actions and
    /// its domains' budgets, as the decider has them now.
    fn node_state(&self, node: &str) -> Option<serde_json::Value> {
        let now = crate::explain::NodeNow::of(&self.pipeline, node, self::now())?;
        Some(serde_json::json!({
            "node": node,
            "labels": now.labels.into_iter().collect::<BTreeMap<String, String>>(),
            "open_faults": now.open,
            "held": now.held.iter().map(|(action, fault, outcome, retry)| serde_json::json!({
                "action": action, "fault": fault, "outcome": outcome.as_str(), "retry_at": retry,
            })).collect::<Vec<_>>(),
            "budgets": now.budgets,
            "observed": now.observed,
            "final_state": now.final_state,
        }))
    }

    /// Nodes the engine just forgot leave the journal's known nodes too.
    fn forgotten(&mut self) {
        if self.step.forgotten.is_empty() {
            return;
        }
        tracing::info!(
            nodes = self.step.forgotten.len(),
            "forgot nodes idle for forget_after"
        );
        self.metrics.nodes(
            self.pipeline.engine.with_fleet(|f| f.known_nodes()),
            self.step.forgotten.len(),
        );
        for node in &self.step.forgotten {
            self.seen.remove(node);
            self.pending.seen.remove(node);
        }
        self.pending.forgotten.append(&mut self.step.forgotten);
    }

    fn approve(&mut self, id: u64, approve: bool) -> bool {
        self.out.clear();
        let at = now();
        let found = self.pipeline.approval(id, approve, at, &mut self.out);
        if found {
            self.pending
                .inputs
                .push((at, Input::Approval { id, approve }));
        }
        self.metrics.counted(&self.out);
        self.pending
            .entries
            .extend(self.out.drain(..).map(|d| (d, None)));
        found
    }

    fn reload(&mut self) {
        match self.pipeline.engine.reload(&self.rules) {
            Ok(n) => {
                tracing::info!(rules = n, dir = %self.rules.display(), "rules reloaded");
                self.metrics.reloaded(None);
            }
            Err(e) => {
                let e = e.to_string().replace('\n', "; ");
                tracing::error!("rules reload failed, the previous rules keep running: {e}");
                self.metrics.reloaded(Some(e));
            }
        }
    }

    /// Writes what the last command decided, with the jobs it started,
    /// then hands those jobs to the executors: a job runs only once it is
    /// journaled, so a restart finds every job that may have run.
    fn journal(&mut self) -> Result<(), journal::JournalError> {
        let jobs = self.pipeline.guards.take_jobs();
        self.pending
            .quotas
            .extend(self.pipeline.guards.take_quotas());
        self.pending.started.extend(jobs.iter().cloned());
        self.unsent.extend(jobs);
        // The failure domains of nodes with actions, and which entries are
        // domains (cluster-wide alerts), for a restart.
        let nodes: BTreeMap<&str, journal::KnownNode> = self
            .pending
            .entries
            .iter()
            .filter_map(|(d, _)| {
                self.pipeline.engine.with_fleet(|f| {
                    let domain = f.is_domain_named(&d.node);
                    (d.action.is_some() || domain).then(|| {
                        let node = journal::KnownNode {
                            node: d.node.clone(),
                            labels: f.labels_named(&d.node).unwrap_or_default(),
                            domain,
                        };
                        (d.node.as_str(), node)
                    })
                })
            })
            .collect();
        self.pending.nodes = nodes.into_values().collect();
        let pending = self.pending.entries.len();
        let journaled = self.journal.record(&mut self.pending);
        self.metrics
            .journaled(journaled.as_ref().map(|_| ()).map_err(ToString::to_string));
        match &journaled {
            Ok(()) => {
                if pending > 0 {
                    self.written.notify_one();
                }
                if let Some(runner) = &self.runner {
                    for job in self.unsent.drain(..) {
                        // The runner goes only at shutdown; the job stays journaled.
                        let _ = runner.send(job);
                    }
                }
            }
            // The engine has already moved on: keep what it decided and write
            // it with the next command, or it would never be journaled.
            Err(e) => tracing::error!(
                pending,
                "journal write failed, will retry with the next write: {e}"
            ),
        }
        journaled
    }
}

/// Runs jobs as they come, at most `limit` at once, and reports each result
/// to the decider. Dropping this task (at shutdown) aborts the jobs still
/// running; they stay journaled and run again at the next start.
pub(super) async fn execute(
    executors: Arc<Executors>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    tx: mpsc::Sender<Command>,
    limit: usize,
    lease: Option<super::lease::Held>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            job = jobs.recv() => {
                let Some(job) = job else { break };
                // With [ha], only while the lease surely holds: after a pause
                // past it, the renewal decides (and a deposed leader exits).
                while lease.as_ref().is_some_and(|l| !l.valid()) {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let executors = executors.clone();
                let tx = tx.clone();
                running.spawn(async move {
                    let _slot = slot;
                    let result = executors.run(&job).await;
                    match &result {
                        Ok(summary) => tracing::info!(id = %job.id, executor = %job.executor, summary, "executed"),
                        Err(why) => tracing::warn!(id = %job.id, executor = %job.executor, "failed: {why}"),
                    }
                    let _ = tx.send(Command::Finished { id: job.id, result }).await;
                });
            }
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
}

/// Lets time pass every second: escalations fall due, held actions retry.
/// Under load the queue is busy with signals, which move time on anyway: a
/// tick that finds it full is skipped rather than taking a request's place.
/// Moves the sources' batches into the decider's queue, in order.
pub(super) async fn forward(
    mut batches: mpsc::Receiver<remedy_collectors::Batch>,
    tx: mpsc::Sender<Command>,
) {
    while let Some(b) = batches.recv().await {
        let command = Command::Ingest {
            signals: b.signals,
            reply: b.reply,
        };
        if tx.send(command).await.is_err() {
            break;
        }
    }
}

pub(super) async fn tick(tx: mpsc::Sender<Command>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        match tx.try_send(Command::Tick) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::journal::{FaultRow, JournalError, Journaled};
    use super::*;
    use crate::config::Config;

    /// Fails its first write, then keeps what it is given.
    struct Flaky {
        failed: bool,
        kept: Arc<Mutex<Vec<Decision>>>,
    }

    impl Journal for Flaky {
        fn record(&mut self, write: &mut Write) -> Result<(), JournalError> {
            if write.is_empty() {
                return Ok(());
            }
            if !self.failed {
                self.failed = true;
                return Err(JournalError::Sqlite(rusqlite::Error::InvalidQuery));
            }
            self.kept
                .lock()
                .unwrap()
                .extend(write.entries.drain(..).map(|(d, _)| d));
            *write = Write::default();
            Ok(())
        }
        fn running_jobs(&self) -> Result<Vec<Job>, JournalError> {
            Ok(Vec::new())
        }
        fn faults(&self, _: Option<bool>, _: Option<&str>) -> Result<Vec<FaultRow>, JournalError> {
            Ok(Vec::new())
        }
        fn decisions(&self, _: i64, _: usize) -> Result<Vec<Journaled>, JournalError> {
            Ok(Vec::new())
        }
        fn writable(&self) -> bool {
            true
        }
        fn cursor(&self, _: &str) -> Result<i64, JournalError> {
            Ok(0)
        }
        fn set_cursor(&mut self, _: &str, _: i64) -> Result<(), JournalError> {
            Ok(())
        }
        fn recent_ids(&self, _: usize) -> Result<Vec<String>, JournalError> {
            Ok(Vec::new())
        }
        fn action_states(
            &self,
            _: &str,
            _: &str,
            _: remedy_engine::Timestamp,
        ) -> Result<Vec<journal::ActionState>, JournalError> {
            Ok(Vec::new())
        }
        fn aliases(&self) -> Result<Vec<(String, String)>, JournalError> {
            Ok(Vec::new())
        }
        fn history(
            &self,
            _: remedy_engine::Timestamp,
        ) -> Result<Vec<(String, String, remedy_engine::Timestamp)>, JournalError> {
            Ok(Vec::new())
        }
        fn seen(
            &self,
        ) -> Result<Vec<(journal::KnownNode, remedy_engine::Timestamp)>, JournalError> {
            Ok(Vec::new())
        }
        fn openings(
            &self,
            _: remedy_engine::Timestamp,
        ) -> Result<Vec<(String, String, remedy_engine::Timestamp)>, JournalError> {
            Ok(Vec::new())
        }
        fn node(&self, _: &str) -> Result<journal::KnownNode, JournalError> {
            Ok(journal::KnownNode::default())
        }
        fn inputs(
            &self,
            _: i64,
            _: usize,
        ) -> Result<Vec<(i64, remedy_engine::Timestamp, crate::pipeline::Input)>, JournalError>
        {
            Ok(Vec::new())
        }
        fn quotas(&self) -> Result<Vec<journal::Quota>, JournalError> {
            Ok(Vec::new())
        }
        fn decisions_of(&self, _: &str, _: i64, _: usize) -> Result<Vec<Journaled>, JournalError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn decisions_of_a_failed_journal_write_go_out_with_the_next_one() {
        let config = Config::default();
        let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let engine = remedy_engine::Engine::load(
            &rules,
            config.policies(),
            &remedy_engine::Options::default(),
        )
        .unwrap();
        let (guards, actions) = config.guards();
        let pipeline = Pipeline::new(engine, remedy_actions::Guards::new(guards, actions));
        let kept = Arc::new(Mutex::new(Vec::new()));
        let decider = Decider::new(
            pipeline,
            Box::new(Flaky {
                failed: false,
                kept: kept.clone(),
            }),
            Arc::new(Metrics::default()),
            rules,
        );
        let (tx, rx) = mpsc::channel(4);
        let (r1, a1) = oneshot::channel();
        let (r2, a2) = oneshot::channel();
        let signal = |node: &str| {
            Signal::from_json(&format!(
                r#"{{"node":"{node}","kind":"hardware","type":"memory.ecc.uncorrectable"}}"#
            ))
            .unwrap()
        };
        tx.try_send(Command::Ingest {
            signals: vec![signal("n1")],
            reply: r1,
        })
        .ok()
        .unwrap();
        tx.try_send(Command::Ingest {
            signals: vec![signal("n2")],
            reply: r2,
        })
        .ok()
        .unwrap();
        drop(tx);
        decider.run(rx);
        assert!(
            a1.blocking_recv().unwrap().is_err(),
            "the first write failed and says so"
        );
        assert_eq!(a2.blocking_recv().unwrap(), Ok(1));
        let kept = kept.lock().unwrap();
        let opened: Vec<&str> = kept
            .iter()
            .filter(|d| d.event == remedy_engine::Event::FaultOpened)
            .map(|d| d.node.as_str())
            .collect();
        assert_eq!(
            opened,
            ["n1", "n2"],
            "n1's fault was not lost with the failed write"
        );
    }
}
