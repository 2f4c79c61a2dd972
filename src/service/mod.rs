//! `remedy run`: the service, as wiring. It starts, in order:
//!
//! - the journal (`journal`: SQLite) and the executors (`remedy_actions`);
//! - the decider thread (`decider`): the same [`Pipeline`] as `replay`,
//!   the journal, one command at a time;
//! - the sources (`remedy_collectors`): HTTP and Alertmanager intake
//!   mounted in the API, Kafka, PromQL queries, scrapes, each with its
//!   own loop, delivering through one [`Intake`];
//! - the job runner (`decider::execute`), the clock's ticks, the rules
//!   watcher (`watch`), the Kubernetes node list as aliases (`identity`)
//!   and the decisions topic (`publisher`);
//! - the HTTP API (`http`: faults, decisions, silences, approvals,
//!   health, metrics) until SIGINT or SIGTERM, then a graceful stop.

mod decider;
mod http;
mod identity;
pub mod journal;
pub mod lease;
pub mod metrics;
pub mod postgres;
mod publisher;
mod serve;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use remedy_actions::Executors;
use remedy_collectors::{Intake, Reporter};
use tokio::sync::{mpsc, Notify};

use crate::config::{Config, ConfigError, JournalUrl};
use crate::pipeline::Pipeline;
use decider::{execute, recover, tick, Command, Decider};
use journal::{Journal, JournalError};
use metrics::Metrics;
use remedy_engine::LoadError;

/// Where and how the service listens and journals.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `[http] listen`, `REMEDY_LISTEN`; default 127.0.0.1:9477.
    pub listen: SocketAddr,
    /// Bearer token for `/v1/*`: `REMEDY_TOKEN`, else `[http] token_file`.
    pub token: Option<String>,
    /// `[journal] url` (`sqlite://PATH` or `postgres://...`),
    /// `REMEDY_JOURNAL`; default ./remedy.db.
    pub journal: JournalUrl,
    /// `[journal] keep_inputs`: how long the journal keeps its input.
    pub keep_inputs: remedy_engine::Duration,
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
    /// `[identity] kubernetes`: the client settings of the node list.
    pub node_directory: Option<remedy_actions::executors::kubernetes::Config>,
    /// `[limits]`: what a signal may carry.
    pub limits: remedy_collectors::Limits,
    /// `[limits] request_timeout`: headers, then the body, within this.
    pub request_timeout: std::time::Duration,
    /// `[faults.*]`: the policies.
    pub policies: remedy_engine::Policies,
    /// `[efficacy] by`: the label the ledger is split by.
    pub efficacy_by: Option<String>,
    /// `[ha] lease`: several instances, one leader.
    pub ha: Option<std::time::Duration>,
}

impl Settings {
    /// From the typed config (with its `REMEDY_*` overrides applied);
    /// reads the token file. The error names the key.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let listen = config.http.listen;
        let token = config.token()?;
        let journal = config.journal.url.clone();
        let ha = match (&config.ha, &journal) {
            (None, _) => None,
            (Some(ha), JournalUrl::Postgres(_)) if ha.lease.0 >= 1000 => {
                Some(std::time::Duration::from_millis(ha.lease.0 as u64))
            }
            (Some(ha), JournalUrl::Postgres(_)) => {
                return Err(ConfigError::Env {
                    var: "[ha] lease",
                    message: format!("{} is too short: at least 1s", ha.lease),
                })
            }
            (Some(_), other) => {
                return Err(ConfigError::Env {
                    var: "[ha]",
                    message: format!(
                        "several instances share one PostgreSQL journal; [journal] url is {other}: \
                         set it to postgres://USER@HOST/DATABASE"
                    ),
                })
            }
        };
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
            keep_inputs: config.journal.keep_inputs,
            max_body: 8 << 20,
            queue: 256,
            rules: config.rules.clone(),
            scrape: config.scrape.clone(),
            prometheus: config.prometheus.clone(),
            executors: config.executor_specs(),
            dry_run: config.dry_run,
            kafka: config.kafka.clone(),
            node_directory: config.node_directory(),
            limits: config.limits,
            request_timeout: std::time::Duration::from_millis(
                config.limits.request_timeout.0.max(1) as u64,
            ),
            policies: config.policies(),
            efficacy_by: config.efficacy.by.clone(),
            ha,
        })
    }
}

/// Shared with the HTTP handlers.
struct Shared {
    tx: mpsc::Sender<Command>,
    reader: Mutex<Box<dyn Journal>>,
    token: Option<String>,
    rules_loaded: AtomicBool,
    metrics: Arc<Metrics>,
    /// The policies (their `verify` windows judge the efficacy ledger).
    policies: remedy_engine::Policies,
    /// `[efficacy] by`.
    efficacy_by: Option<String>,
    /// `[ha]`: this instance leads (`/readyz` says `"role":"leader"`).
    leading: bool,
}

/// Builds the pipeline on the decider thread (the engine is not `Send`).
pub type Build = Box<dyn FnOnce() -> Result<Pipeline, LoadError> + Send>;

/// What stops `remedy run` from starting, or ends it: each says what a user
/// must look at (the file, the address, the `[section]`).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The rules do not load (every problem listed).
    #[error(transparent)]
    Rules(#[from] LoadError),
    /// The journal cannot be opened, read back at the start, or written.
    #[error("{path}: {source}")]
    Journal {
        /// The journal (a file, or a database without its password).
        path: JournalUrl,
        /// Why.
        source: JournalError,
    },
    /// An `[actions.*]` executor cannot be built (credentials, kubeconfig).
    #[error(transparent)]
    Executor(#[from] remedy_actions::executors::ConfigError),
    /// The `[kafka]` source cannot be built.
    #[error(transparent)]
    Kafka(#[from] remedy_collectors::kafka::KafkaError),
    /// The decisions topic's producer cannot be built.
    #[error(transparent)]
    Publisher(#[from] remedy_actions::publish::PublishError),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// `[http] listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The process could not start a thread or the async runtime, or serve.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The decider thread ended without an answer (it panicked).
    #[error("the decider stopped unexpectedly")]
    Decider,
}

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
        // Values come from the network (node names, types): a newline in one
        // must not forge a log line, so control characters are escaped.
        LogFormat::Human => builder
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
                |w, field, value| {
                    let raw = format!("{value:?}");
                    let text = escape_controls(&raw);
                    if field.name() == "message" {
                        write!(w, "{text}")
                    } else {
                        write!(w, "{}={text}", field.name())
                    }
                },
            ))
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

/// `text` with every control character written as an escape (`\n`,
/// `\u{1b}`), so one logged value stays on its line.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Runs the service until SIGINT or SIGTERM. `build` makes the pipeline;
/// its error (e.g. rules that do not compile) stops the start.
pub fn run(settings: Settings, build: Build) -> Result<(), ServiceError> {
    let journal_error = |path: &JournalUrl| {
        let path = path.clone();
        move |source| ServiceError::Journal { path, source }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| ServiceError::Io {
            what: "starting the runtime",
            source,
        })?;
    // With [ha], a standby until this instance holds the lease; then its
    // every journal write is fenced by the lease's epoch.
    let (journal, leadership): (Box<dyn Journal>, _) = match (&settings.ha, &settings.journal) {
        (Some(lease), JournalUrl::Postgres(url)) => {
            let store = postgres::Postgres::open(url).map_err(journal_error(&settings.journal))?;
            let lease = lease::Lease::new(url, *lease);
            let Some((lease, held)) = runtime.block_on(standby(&settings, lease))? else {
                tracing::info!("remedy stopped (a standby)");
                return Ok(());
            };
            tracing::info!(holder = %lease.holder, epoch = held.epoch, "took the lease: leading");
            let store = store
                .fenced(&lease.holder, held.epoch)
                .keep_inputs(settings.keep_inputs);
            (Box::new(store), Some((lease, held)))
        }
        _ => (
            journal::open(&settings.journal, settings.keep_inputs)
                .map_err(journal_error(&settings.journal))?,
            None,
        ),
    };
    let reader = journal::reader(&settings.journal).map_err(journal_error(&settings.journal))?;
    // Executors connect their clients and read their credentials now, so a
    // wrong [actions.*] stops the start instead of the first action. In
    // dry-run nothing is executed, so none is built (no cluster needed).
    let specs: &[remedy_actions::Spec] = if settings.dry_run {
        &[]
    } else {
        &settings.executors
    };
    let executors = Arc::new(runtime.block_on(Executors::build(specs))?);
    // The node list is read-only: its client is built in dry-run too, and a
    // wrong kubeconfig stops the start.
    let directory = match &settings.node_directory {
        Some(c) => {
            Some(runtime.block_on(remedy_actions::executors::kubernetes::NodeDirectory::new(c))?)
        }
        None => None,
    };
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
                Some(remedy_collectors::kafka::Source::new(k)?)
            };
            let publisher = match &k.decisions {
                None => None,
                Some(topic) => Some(remedy_actions::publish::Publisher::new(
                    &k.brokers, topic, &k.options,
                )?),
            };
            (source, publisher)
        }
    };
    let (tx, rx) = mpsc::channel(settings.queue);
    let (intake, batches) = Intake::new(settings.queue);
    let intake = intake.with_limits(settings.limits);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let metrics = Arc::new(Metrics::default());
    let decider_metrics = metrics.clone();
    let rules = settings.rules.clone();
    let recover_error = journal_error(&settings.journal);
    let decider = thread::Builder::new()
        .name("decider".into())
        .spawn(move || {
            let started = build()
                .map_err(ServiceError::from)
                .and_then(|mut pipeline| {
                    let recovered = recover(&mut pipeline, &*journal, &decider_metrics)
                        .map_err(recover_error)?;
                    Ok((pipeline, recovered))
                });
            match started {
                Ok((pipeline, recovered)) => {
                    let _ = started_tx.send(Ok(recovered));
                    let mut decider = Decider::new(pipeline, journal, decider_metrics, rules);
                    decider.runner = Some(jobs_tx);
                    decider.written = written;
                    decider.run(rx);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            }
        })
        .map_err(|source| ServiceError::Io {
            what: "starting the decider",
            source,
        })?;
    let recovered = started_rx.recv().map_err(|_| ServiceError::Decider)??;
    runtime.block_on(async move {
        let listener = bind(settings.listen).await?;
        let shared = Arc::new(Shared {
            tx: tx.clone(),
            reader: Mutex::new(reader),
            token: settings.token.clone(),
            rules_loaded: AtomicBool::new(true),
            policies: settings.policies.clone(),
            efficacy_by: settings.efficacy_by.clone(),
            leading: settings.ha.is_some(),
            metrics,
        });
        let report: Reporter = shared.metrics.clone();
        let forward = tokio::spawn(decider::forward(batches, tx.clone()));
        let ticker = tokio::spawn(tick(tx.clone()));
        let held = leadership.as_ref().map(|(_, held)| held.clone());
        let runner = tokio::spawn(execute(executors, jobs_rx, tx.clone(), 64, held));
        // The leader renews its lease; once it cannot, it steps down.
        let renewal = leadership.map(|(lease, held)| tokio::spawn(renew(lease, held)));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let consumer = source.map(|source| {
            tokio::spawn(remedy_collectors::kafka::run(
                source,
                intake.clone(),
                report.clone(),
                stopped.clone(),
            ))
        });
        let publisher = publisher.map(|p| {
            tokio::spawn(publisher::publish(
                p,
                settings.journal.clone(),
                published,
                shared.metrics.clone(),
                stopped,
            ))
        });
        let watcher = tokio::spawn(watch::watch(settings.rules.clone(), tx.clone()));
        let nodes = directory.map(|d| tokio::spawn(identity::learn(d, tx.clone(), report.clone())));
        let mut scrapers: Vec<_> = settings
            .scrape
            .iter()
            .map(|c| {
                let run = remedy_collectors::scrape::run(c.clone(), intake.clone(), report.clone());
                tokio::spawn(run)
            })
            .collect();
        scrapers.extend(settings.prometheus.iter().map(|c| {
            let run = remedy_collectors::promql::run(c.clone(), intake.clone(), report.clone());
            tokio::spawn(run)
        }));
        // Kept to tell the decider to finish: a connection still open (a
        // client that never finished its request) holds the other senders.
        let finish = tx.clone();
        drop(tx);
        tracing::info!(
            listen = %settings.listen,
            journal = %settings.journal,
            recovered,
            "remedy listening on http://{}",
            settings.listen
        );
        let sources = remedy_collectors::http::routes(intake, report);
        let app = http::router(
            shared.clone(),
            sources,
            settings.max_body,
            settings.request_timeout,
        );
        // Headers within the request timeout; a stop waits for open requests
        // only so long: a client cannot hold the service (contract 13).
        serve::serve(listener, app, settings.request_timeout, shutdown())
            .await
            .map_err(|source| ServiceError::Io {
                what: "serving",
                source,
            })?;
        // Intake has stopped: the Kafka consumer finishes and commits the
        // batch it has, then the decider finishes what is queued.
        let _ = stop.send(true);
        if let Some(c) = consumer {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), c).await;
        }
        ticker.abort();
        watcher.abort();
        if let Some(n) = &nodes {
            n.abort();
        }
        forward.abort();
        if let Some(r) = &renewal {
            r.abort();
        }
        runner.abort();
        let _ = runner.await;
        for s in &scrapers {
            s.abort();
        }
        let _ = ticker.await;
        let _ = watcher.await;
        shared.rules_loaded.store(false, Ordering::Relaxed);
        drop(shared);
        // After everything queued before it: the decider journals and ends.
        let _ = finish.send(Command::Finish).await;
        drop(finish);
        tokio::task::spawn_blocking(move || decider.join())
            .await
            .map_err(|_| ServiceError::Decider)?
            .map_err(|_| ServiceError::Decider)?;
        // The last decisions go out to the topic (what does not make it
        // within the grace period goes at the next start: the journal keeps it).
        if let Some(p) = publisher {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), p).await;
        }
        tracing::info!("remedy stopped");
        Ok(())
    })
}

/// The service's listener on `addr`; the error names the address.
async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ServiceError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::Listen { addr, source })
}

/// Serves as a standby on the service's address until this instance takes
/// the lease (then returns it) or is told to stop (`None`).
async fn standby(
    settings: &Settings,
    mut lease: lease::Lease,
) -> Result<Option<(lease::Lease, lease::Held)>, ServiceError> {
    let listener = bind(settings.listen).await?;
    let every = lease.lease / 3;
    let retry_after = lease.lease.as_secs().max(1);
    let (won_tx, won_rx) = tokio::sync::oneshot::channel();
    let acquire = tokio::spawn(async move {
        let mut told = false;
        loop {
            let (back, result) = tokio::task::spawn_blocking(move || {
                let result = lease.try_acquire();
                (lease, result)
            })
            .await
            .expect("the lease task");
            lease = back;
            match result {
                Ok(Some(held)) => {
                    let _ = won_tx.send(());
                    return (lease, held);
                }
                Ok(None) if !told => {
                    told = true;
                    tracing::info!(
                        holder = %lease.holder,
                        "standby: another instance leads; taking over once its lease lapses"
                    );
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("standby: the lease cannot be read: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let until = async move {
        tokio::select! {
            _ = won_rx => {}
            _ = shutdown() => stopping.store(true, Ordering::Relaxed),
        }
    };
    let app = http::standby_router(retry_after);
    serve::serve(listener, app, settings.request_timeout, until)
        .await
        .map_err(|source| ServiceError::Io {
            what: "serving as a standby",
            source,
        })?;
    if stop.load(Ordering::Relaxed) {
        acquire.abort();
        return Ok(None);
    }
    Ok(Some(acquire.await.map_err(|_| ServiceError::Decider)?))
}

/// Renews the lease every third of it; once it is lost (taken over, or
/// not renewed in time) the instance steps down: it exits, and its
/// supervisor starts it again as a standby. Nothing is lost: what it had
/// not journaled was never acknowledged, and its journal writes are
/// already refused.
async fn renew(mut lease: lease::Lease, held: lease::Held) {
    let every = lease.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let (back, result) = {
            let held = held.clone();
            tokio::task::spawn_blocking(move || {
                let result = lease.renew(&held);
                (lease, result)
            })
            .await
            .expect("the lease task")
        };
        lease = back;
        let lost = match result {
            Ok(renewed) => !renewed,
            // The database is away: leading goes on while the lease surely holds.
            Err(e) => {
                tracing::warn!("the lease could not be renewed: {e}");
                !held.valid()
            }
        };
        if lost {
            tracing::error!(
                holder = %lease.holder,
                epoch = held.epoch,
                "lost the lease: stepping down (exit 3; started again, this instance is a standby)"
            );
            std::process::exit(3);
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
    #[test]
    fn control_characters_in_logged_values_are_escaped() {
        assert_eq!(super::escape_controls("node-1"), "node-1");
        assert_eq!(
            super::escape_controls("n1\nINFO forged\r\u{1b}[31m"),
            "n1\\nINFO forged\\r\\u{1b}[31m"
        );
    }
}
