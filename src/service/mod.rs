//! `remedy run`: the service. HTTP ingestion feeds one decider thread that
//! owns the engine and guard chain (the same [`Pipeline`] as replay) and the
//! journal; every decision is journaled before the request that caused it
//! is answered, and the API reads the journal.
//!
//! Built so far: ingestion (`POST /v1/signals`, `POST /v1/alertmanager`), the SQLite journal with
//! restart recovery of open faults, `GET /v1/faults`, `GET /v1/decisions`,
//! `/healthz`, `/readyz`, bearer auth, body limits, back-pressure (429) and
//! graceful shutdown, silences and approvals, `/metrics`, hot reload of
//! rules, tracing logs, and held-back actions across a restart.

pub mod alertmanager;
mod http;
pub mod journal;
pub mod metrics;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use remedy_actions::{Executors, Job, Silence};
use remedy_engine::{
    Decision, Intent, Lookahead, Outcome, Severity, Signal, Step, Timestamp, Trigger,
};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::{Config, ConfigError, JournalUrl};
use crate::pipeline::Pipeline;
use journal::{Journal, Sqlite, Write};
use metrics::Metrics;

/// Where and how the service listens and journals.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `[http] listen`, `REMEDY_LISTEN`; default 127.0.0.1:9477.
    pub listen: SocketAddr,
    /// Bearer token for `/v1/*`: `REMEDY_TOKEN`, else `[http] token_file`.
    pub token: Option<String>,
    /// `[journal] url` (`sqlite://PATH`), `REMEDY_JOURNAL`; default ./remedy.db.
    pub journal: PathBuf,
    /// Largest request body accepted (413 beyond).
    pub max_body: usize,
    /// Requests waiting for the decider before new ones get 429.
    pub queue: usize,
    /// The rules directory, watched for changes (reloaded on change and SIGHUP).
    pub rules: PathBuf,
    /// `[[scrape]]` endpoints.
    pub scrape: Vec<remedy_collectors::scrape::Config>,
    /// `[[prometheus]]` queries.
    pub prometheus: Vec<remedy_collectors::promql::Config>,
    /// `[actions.*]`: the executors.
    pub executors: Vec<remedy_actions::Spec>,
    /// `dry_run`: nothing is executed (executors are not even built).
    pub dry_run: bool,
    /// `[kafka]`: signals consumed in a group, decisions published.
    pub kafka: Option<remedy_collectors::kafka::Config>,
}

impl Settings {
    /// From the typed config (with its `REMEDY_*` overrides applied);
    /// reads the token file. The error names the key.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let listen = config.http.listen;
        let token = config.token()?;
        let JournalUrl::Sqlite(journal) = config.journal.url.clone();
        if !listen.ip().is_loopback() && token.is_none() {
            return Err(ConfigError::Env {
                var: "[http] listen",
                message: format!(
                    "refusing to listen on {listen} without a token: set [http] token_file or REMEDY_TOKEN, or listen on 127.0.0.1"
                ),
            });
        }
        Ok(Settings {
            listen,
            token,
            journal,
            max_body: 8 << 20,
            queue: 256,
            rules: config.rules.clone(),
            scrape: config.scrape.clone(),
            prometheus: config.prometheus.clone(),
            executors: config.executor_specs(),
            dry_run: config.dry_run,
            kafka: config.kafka.clone(),
        })
    }
}

/// The wall clock, for signals without `ts` and for timers.
fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_millis())
}

/// What the decider is asked to do.
enum Command {
    /// Decide on these signals, journal, then answer with how many.
    Ingest {
        signals: Vec<Signal>,
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// Let time pass: escalations and held-back actions.
    Tick,
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
    /// An executor finished a job: a summary of its response, or why it failed.
    Finished {
        id: String,
        result: Result<String, remedy_actions::ExecError>,
    },
}

/// Shared with the HTTP handlers.
struct Shared {
    tx: mpsc::Sender<Command>,
    reader: Mutex<Sqlite>,
    token: Option<String>,
    rules_loaded: AtomicBool,
    metrics: Arc<Metrics>,
}

/// Puts the journal's open faults back into the engine so nothing reopens,
/// and what became of their actions back into the guard chain: nodes under
/// remediation stay so, held-back actions wait again, approvals await again.
fn recover(
    pipeline: &mut Pipeline,
    journal: &dyn Journal,
    metrics: &Metrics,
) -> Result<usize, String> {
    let err = |e: journal::JournalError| e.to_string();
    for id in journal.recent_ids(journal::KEPT_IDS).map_err(err)? {
        pipeline.engine.remember_id(&id);
    }
    let open = journal.faults(Some(true), None).map_err(err)?;
    let restarted = now();
    for f in &open {
        metrics.recovered(&f.fault);
        let severity = f
            .severity
            .as_deref()
            .and_then(Severity::parse)
            .unwrap_or(Severity::Warning);
        let labels = journal.node_labels(&f.node).map_err(err)?;
        let mut known = remedy_engine::Labels::default();
        for (k, v) in &labels {
            known.insert(k.clone(), v.clone());
        }
        pipeline.engine.restore_node(&f.node, &known, f.opened_at);
        let types: Vec<String> = f.signal_type.iter().cloned().collect();
        let states = journal
            .action_states(&f.node, &f.fault, f.opened_at)
            .map_err(err)?;
        let done: Vec<String> = states.iter().map(|(action, ..)| action.clone()).collect();
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
        for (action, last, passed) in states {
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
                node: f.node.clone(),
                fault: f.fault.clone(),
                opened: f.opened_at,
                reason: None,
                action,
                labels: labels.clone(),
                trigger: Trigger::Remedy,
                approval,
            };
            pipeline.guards.restore(intent, outcome, restarted);
        }
    }
    // Jobs that were with an executor when the service stopped run again
    // (idempotent on their id); their result has not been decided yet.
    for job in journal.running_jobs().map_err(err)? {
        tracing::info!(id = %job.id, executor = %job.executor, "job was running at the last stop: running it again");
        pipeline.guards.restore_job(job);
    }
    Ok(open.len())
}

/// The decider: owns the pipeline and the journal, one command at a time.
struct Decider {
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
    runner: Option<mpsc::UnboundedSender<Job>>,
    /// Woken after each journal write (the decisions topic follows the journal).
    written: Arc<Notify>,
}

impl Decider {
    fn new(
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
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
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
            match command {
                Command::Tick => {
                    self.out.clear();
                    self.pipeline.advance(now(), &mut self.step, &mut self.out);
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
                    let _ = reply.send(self.journal().map(|()| n));
                }
                Command::Reload => self.reload(),
                Command::Silence(silence, reply) => {
                    let _ = reply.send(self.pipeline.guards.silence(silence));
                }
                Command::Unsilence(id, reply) => {
                    let _ = reply.send(self.pipeline.guards.unsilence(id));
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
                Command::Decide(id, approve, reply) => {
                    let found = self.approve(id, approve);
                    let _ = reply.send(self.journal().map(|()| found));
                }
            }
            self.guard_metrics();
        }
    }

    /// An executor's result becomes a decision (journaled with the next write).
    fn finish(&mut self, id: String, result: Result<String, remedy_actions::ExecError>) {
        self.out.clear();
        if self
            .pipeline
            .guards
            .finished(&id, result, now(), &mut self.out)
        {
            self.pending.finished.push(id);
        }
        self.metrics.counted(&self.out);
        self.pending
            .entries
            .extend(self.out.drain(..).map(|d| (d, None)));
    }

    fn guard_metrics(&self) {
        let guards = &self.pipeline.guards;
        self.metrics
            .guards(guards.held(), guards.domains(), guards.breakers());
    }

    fn decide(&mut self, signal: Signal) {
        let started = std::time::Instant::now();
        let r#type = signal.r#type.clone();
        let id = signal.id.clone();
        // One span per signal: node, type, and the rules that matched.
        let span = tracing::info_span!(
            "signal",
            node = %signal.node,
            r#type = %r#type,
            rules = tracing::field::Empty
        );
        let _entered = span.enter();
        self.out.clear();
        self.pipeline
            .on_signal(signal, now(), &mut self.step, &mut self.out);
        if let (Some(id), false) = (id, self.step.duplicate) {
            self.pending.ids.push(id);
        }
        for e in &self.step.errors {
            tracing::warn!(rule = %e.rule, "rule error: {e}");
        }
        let rules = self.pipeline.engine.rules();
        if !self.step.answers.is_empty() {
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
                    tracing::debug!(fault = %d.fault, action, outcome = outcome.as_str(), "action")
                }
                _ => {
                    tracing::info!(fault = %d.fault, event = ?d.event, reason = d.reason.as_deref(), "fault")
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

    fn approve(&mut self, id: u64, approve: bool) -> bool {
        self.out.clear();
        let found = if approve {
            let guards = &mut self.pipeline.guards;
            self.pipeline.engine.with_fleet(|fleet| {
                guards.approve(id, now(), &crate::pipeline::Known(fleet), &mut self.out)
            })
        } else {
            self.pipeline.guards.reject(id, now(), &mut self.out)
        };
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
    fn journal(&mut self) -> Result<(), String> {
        let jobs = self.pipeline.guards.take_jobs();
        self.pending.started.extend(jobs.iter().cloned());
        self.unsent.extend(jobs);
        // The failure domains of nodes with actions, for a restart.
        let nodes: BTreeMap<&str, Vec<(String, String)>> = self
            .pending
            .entries
            .iter()
            .filter(|(d, _)| d.action.is_some())
            .map(|(d, _)| {
                let labels = self.pipeline.engine.with_fleet(|f| f.labels_named(&d.node));
                (d.node.as_str(), labels.unwrap_or_default())
            })
            .collect();
        self.pending.nodes = nodes.into_iter().map(|(n, l)| (n.to_string(), l)).collect();
        let pending = self.pending.entries.len();
        let journaled = self
            .journal
            .record(&mut self.pending)
            .map_err(|e| e.to_string());
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
async fn execute(
    executors: Arc<Executors>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    tx: mpsc::Sender<Command>,
    limit: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            job = jobs.recv() => {
                let Some(job) = job else { break };
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

/// Builds the pipeline on the decider thread (the engine is not `Send`).
pub type Build = Box<dyn FnOnce() -> Result<Pipeline, String> + Send>;

/// How the service logs: human-readable, or one JSON object per line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For a terminal.
    Human,
    /// For a log pipeline.
    Json,
}

/// Sets up logging on stderr (`RUST_LOG` filters; default `info`).
pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

/// Runs the service until SIGINT or SIGTERM. `build` makes the pipeline;
/// its error (e.g. rules that do not compile) stops the start.
pub fn run(settings: Settings, build: Build) -> Result<(), String> {
    let journal = Sqlite::open(&settings.journal)
        .map_err(|e| format!("{}: {e}", settings.journal.display()))?;
    let reader = Sqlite::reader(&settings.journal)
        .map_err(|e| format!("{}: {e}", settings.journal.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    // Executors connect their clients and read their credentials now, so a
    // wrong [actions.*] stops the start instead of the first action. In
    // dry-run nothing is executed, so none is built (no cluster needed).
    let specs: &[remedy_actions::Spec] = if settings.dry_run {
        &[]
    } else {
        &settings.executors
    };
    let executors = Arc::new(
        runtime
            .block_on(Executors::build(specs))
            .map_err(|e| e.to_string())?,
    );
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    // Kafka clients are built before the start too: a wrong [kafka] stops it.
    // They belong to the runtime (the consumer's stream needs its reactor).
    let _inside = runtime.enter();
    let written = Arc::new(Notify::new());
    let published = written.clone();
    let (source, publisher) = match &settings.kafka {
        None => (None, None),
        Some(k) => {
            let source = if k.signals.is_empty() {
                None
            } else {
                Some(remedy_collectors::kafka::Source::new(k).map_err(|e| e.to_string())?)
            };
            let publisher = match &k.decisions {
                None => None,
                Some(topic) => Some(
                    remedy_actions::publish::Publisher::new(&k.brokers, topic, &k.options)
                        .map_err(|e| e.to_string())?,
                ),
            };
            (source, publisher)
        }
    };
    let (tx, rx) = mpsc::channel(settings.queue);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let metrics = Arc::new(Metrics::default());
    let decider_metrics = metrics.clone();
    let rules = settings.rules.clone();
    let decider = thread::Builder::new()
        .name("decider".into())
        .spawn(move || {
            let started = build().and_then(|mut pipeline| {
                let recovered = recover(&mut pipeline, &journal, &decider_metrics)?;
                Ok((pipeline, recovered))
            });
            match started {
                Ok((pipeline, recovered)) => {
                    let _ = started_tx.send(Ok(recovered));
                    let mut decider =
                        Decider::new(pipeline, Box::new(journal), decider_metrics, rules);
                    decider.runner = Some(jobs_tx);
                    decider.written = written;
                    decider.run(rx);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| format!("starting the decider: {e}"))?;
    let recovered = started_rx
        .recv()
        .map_err(|_| "the decider did not start".to_string())??;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
        let shared = Arc::new(Shared {
            tx: tx.clone(),
            reader: Mutex::new(reader),
            token: settings.token.clone(),
            rules_loaded: AtomicBool::new(true),
            metrics,
        });
        let ticker = tokio::spawn(tick(tx.clone()));
        let runner = tokio::spawn(execute(executors, jobs_rx, tx.clone(), 64));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let consumer = source.map(|source| {
            tokio::spawn(consume(
                source,
                tx.clone(),
                shared.metrics.clone(),
                stopped.clone(),
            ))
        });
        let publisher = publisher.map(|p| {
            tokio::spawn(publish(
                p,
                settings.journal.clone(),
                published,
                shared.metrics.clone(),
                stopped,
            ))
        });
        let watcher = tokio::spawn(watch(settings.rules.clone(), tx.clone()));
        let mut scrapers: Vec<_> = settings
            .scrape
            .iter()
            .map(|c| tokio::spawn(scrape(c.clone(), tx.clone(), shared.metrics.clone())))
            .collect();
        scrapers.extend(
            settings
                .prometheus
                .iter()
                .map(|c| tokio::spawn(poll(c.clone(), tx.clone(), shared.metrics.clone()))),
        );
        drop(tx);
        tracing::info!(
            listen = %settings.listen,
            journal = %settings.journal.display(),
            recovered,
            "remedy listening on http://{}",
            settings.listen
        );
        let app = http::router(shared.clone(), settings.max_body);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| format!("serving: {e}"))?;
        // Intake has stopped: the Kafka consumer finishes and commits the
        // batch it has, then the decider finishes what is queued.
        let _ = stop.send(true);
        if let Some(c) = consumer {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), c).await;
        }
        ticker.abort();
        watcher.abort();
        runner.abort();
        let _ = runner.await;
        for s in &scrapers {
            s.abort();
        }
        let _ = ticker.await;
        let _ = watcher.await;
        shared.rules_loaded.store(false, Ordering::Relaxed);
        drop(shared);
        tokio::task::spawn_blocking(move || decider.join())
            .await
            .map_err(|e| format!("stopping: {e}"))?
            .map_err(|_| "the decider panicked".to_string())?;
        // The last decisions go out to the topic (what does not make it
        // within the grace period goes at the next start: the journal keeps it).
        if let Some(p) = publisher {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), p).await;
        }
        tracing::info!("remedy stopped");
        Ok(())
    })
}

/// Consumes the Kafka signal topics in batches: each batch is decided and
/// journaled before its offsets are committed (at-least-once; a redelivered
/// signal meets an open fault or a known id and changes nothing). While the
/// decider's queue is full the assigned partitions are paused, so nothing
/// piles up in memory. Stops between batches once `stop` says so.
async fn consume(
    mut source: remedy_collectors::kafka::Source,
    tx: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    const NAME: &str = "kafka";
    let mut last_report = std::time::Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        let batch = tokio::select! {
            b = source.next_batch(1000, std::time::Duration::from_millis(200)) => b,
            _ = stop.changed() => break,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("kafka: {e}");
                report(&metrics, NAME, &source);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        for r in &batch.dead_lettered {
            tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, "not a signal, dead-lettered: {}", r.reason);
        }
        // Counted before the signals are taken out: a batch of valid signals
        // only is empty afterwards, and it must be committed all the same.
        let read = batch.len();
        let signals: Vec<Signal> = batch
            .signals
            .drain(..)
            .map(|mut r| {
                // A signal without its own time takes the message's.
                if r.signal.ts.is_none() {
                    r.signal.ts = r.timestamp;
                }
                r.signal
            })
            .collect();
        metrics.received(NAME, signals.len(), batch.dead_lettered.len());
        if !signals.is_empty() {
            let paused = tx.capacity() == 0 && source.pause().is_ok();
            let (reply, answer) = oneshot::channel();
            let sent = tx.send(Command::Ingest { signals, reply }).await;
            if paused {
                let _ = source.resume();
            }
            if sent.is_err() {
                break;
            }
            match answer.await {
                Ok(Ok(_)) => {}
                // Not journaled: no commit. The decider keeps the decisions
                // and writes them with its next write; the offsets of a later
                // batch cover these.
                Ok(Err(e)) => {
                    tracing::warn!("kafka: batch not journaled yet, offsets not committed: {e}");
                    continue;
                }
                Err(_) => break,
            }
        }
        if read > 0 {
            if let Err(e) = source.commit(&batch) {
                tracing::warn!("kafka: commit failed (the messages will be redelivered): {e}");
            }
        }
        if last_report.elapsed() >= std::time::Duration::from_secs(1) {
            report(&metrics, NAME, &source);
            last_report = std::time::Instant::now();
        }
    }
    report(&metrics, NAME, &source);
}

/// The Kafka source's health in `/metrics` and `/readyz`.
fn report(metrics: &Metrics, name: &str, source: &remedy_collectors::kafka::Source) {
    let status = source.status();
    let lag = status
        .partitions
        .iter()
        .filter_map(|p| p.lag)
        .reduce(|a, b| a + b);
    metrics.collector(
        name,
        metrics::Collector {
            up: status.connected,
            last_success: status.last_success.map(|t| t.secs()),
            errors: status.errors,
            last_error: status.last_error,
            lag,
            partitions: Some(
                status
                    .partitions
                    .iter()
                    .map(|p| format!("{}/{}", p.topic, p.partition))
                    .collect(),
            ),
        },
    );
}

/// Publishes every journaled decision to the decisions topic, in journal
/// order, from where the last run left off (the position is journaled after
/// each confirmed publish: at-least-once, nothing skipped across restarts).
/// A publish that fails is tried again, never dropped.
async fn publish(
    publisher: remedy_actions::publish::Publisher,
    journal: PathBuf,
    written: Arc<Notify>,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = format!("decisions {}", publisher.topic());
    let cursor = format!("topic:{}", publisher.topic());
    let mut store = match Sqlite::open(&journal) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("decisions topic: cannot open the journal: {e}");
            return;
        }
    };
    let mut since = store.cursor(&cursor).unwrap_or(0);
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        let batch = match store.decisions(since, 5000) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("decisions topic: reading the journal: {e}");
                Vec::new()
            }
        };
        if batch.is_empty() {
            if *stop.borrow() {
                break;
            }
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(1), written.notified()).await;
            continue;
        }
        let last = batch.last().map_or(since, |j| j.seq);
        let decisions: Vec<Decision> = batch.into_iter().map(|j| j.decision).collect();
        match publisher.publish(&decisions).await {
            Ok(()) => {
                since = last;
                if let Err(e) = store.set_cursor(&cursor, since) {
                    tracing::warn!("decisions topic: saving the position: {e}");
                }
                metrics.collected(&name, Ok(now().secs()));
                backoff = std::time::Duration::from_millis(200);
            }
            Err(e) => {
                tracing::warn!("decisions topic: {e}; retrying in {backoff:?}");
                metrics.collected(&name, Err(e.to_string()));
                if *stop.borrow() {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

/// Lets time pass every second: escalations fall due, held actions retry.
/// Under load the queue is busy with signals, which move time on anyway: a
/// tick that finds it full is skipped rather than taking a request's place.
async fn tick(tx: mpsc::Sender<Command>) {
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

/// Scrapes one exposition endpoint every `every` and hands its signals to
/// the decider; a failed scrape is logged and tried again next time.
async fn scrape(
    config: remedy_collectors::scrape::Config,
    tx: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
) {
    let Some(client) = http_client(&config.url) else {
        return;
    };
    let every = std::time::Duration::from_millis(config.every.0.max(100) as u64);
    let mut scraper = remedy_collectors::Scraper::new(config);
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let url = scraper.config().url.clone();
        let text = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.text().await,
            Ok(r) => {
                tracing::warn!(%url, status = %r.status(), "scrape failed");
                metrics.received("scrape", 0, 1);
                metrics.collected(
                    &format!("scrape {url}"),
                    Err(format!("HTTP {}", r.status())),
                );
                continue;
            }
            Err(e) => Err(e),
        };
        let signals = match text
            .map_err(|e| e.to_string())
            .and_then(|t| scraper.signals(&t, now()).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%url, "scrape failed: {e}");
                metrics.received("scrape", 0, 1);
                metrics.collected(&format!("scrape {url}"), Err(e));
                continue;
            }
        };
        metrics.received("scrape", signals.len(), 0);
        metrics.collected(&format!("scrape {url}"), Ok(now().secs()));
        if !deliver(&tx, signals).await {
            break;
        }
    }
}

/// Hands a collector's signals to the decider and waits until they are
/// journaled (so a slow journal slows the collector, not memory); false
/// once the decider is gone.
async fn deliver(tx: &mpsc::Sender<Command>, signals: Vec<Signal>) -> bool {
    if signals.is_empty() {
        return true;
    }
    let (reply, answer) = oneshot::channel();
    if tx.send(Command::Ingest { signals, reply }).await.is_err() {
        return false;
    }
    let _ = answer.await;
    true
}

/// The HTTP client collectors use (10 s timeout).
fn http_client(url: &str) -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(%url, "cannot build an HTTP client: {e}");
            None
        }
    }
}

/// Polls one PromQL query every `every` and hands its signals to the decider.
async fn poll(
    config: remedy_collectors::promql::Config,
    tx: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
) {
    let Some(client) = http_client(&config.url) else {
        return;
    };
    let every = std::time::Duration::from_millis(config.every.0.max(100) as u64);
    let endpoint = format!("{}/api/v1/query", config.url.trim_end_matches('/'));
    let mut poller = remedy_collectors::Poller::new(config);
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let query = poller.config().query.clone();
        let url = match reqwest::Url::parse_with_params(&endpoint, [("query", query.as_str())]) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(%endpoint, "not a URL: {e}");
                return;
            }
        };
        let body = client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        let body: Result<String, String> = match body {
            Ok(r) => r.text().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let result = body.and_then(|b| poller.signals(&b, now()).map_err(|e| e.to_string()));
        let signals = match result {
            Ok((signals, skipped)) => {
                for why in &skipped {
                    tracing::warn!(%query, "series skipped: {why}");
                }
                metrics.received("prometheus", signals.len(), skipped.len());
                metrics.collected(&format!("prometheus {query}"), Ok(now().secs()));
                signals
            }
            Err(e) => {
                tracing::warn!(%query, "query failed: {e}");
                metrics.received("prometheus", 0, 1);
                metrics.collected(&format!("prometheus {query}"), Err(e));
                continue;
            }
        };
        if !deliver(&tx, signals).await {
            break;
        }
    }
}

/// What identifies the rules on disk: every `.rhai` file's path, size and mtime.
fn fingerprint(dir: &std::path::Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rhai") {
                out.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// Reloads the rules when a file under `dir` changes, and on SIGHUP.
async fn watch(dir: PathBuf, tx: mpsc::Sender<Command>) {
    let mut last = fingerprint(&dir);
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("SIGHUP handler");
    loop {
        #[cfg(unix)]
        let reload = tokio::select! {
            _ = every.tick() => false,
            _ = hangup.recv() => true,
        };
        #[cfg(not(unix))]
        let reload = {
            every.tick().await;
            false
        };
        let now = fingerprint(&dir);
        if reload || now != last {
            last = now;
            if tx.send(Command::Reload).await.is_err() {
                break;
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("stopping: intake closed, finishing queued work");
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::journal::{FaultRow, JournalError, Journaled};
    use super::*;

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
        fn recent_ids(&self, _: usize) -> Result<Vec<String>, JournalError> {
            Ok(Vec::new())
        }
        fn action_states(
            &self,
            _: &str,
            _: &str,
            _: Timestamp,
        ) -> Result<Vec<(String, String, bool)>, JournalError> {
            Ok(Vec::new())
        }
        fn node_labels(&self, _: &str) -> Result<Vec<(String, String)>, JournalError> {
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
