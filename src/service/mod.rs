//! `remedy run`: the service. HTTP ingestion feeds one decider thread that
//! owns the engine and guard chain (the same [`Pipeline`] as replay) and the
//! journal; every decision is journaled before the request that caused it
//! is answered, and the API reads the journal.
//!
//! Built so far: ingestion (`POST /v1/signals`, `POST /v1/alertmanager`), the SQLite journal with
//! restart recovery of open faults, `GET /v1/faults`, `GET /v1/decisions`,
//! `/healthz`, `/readyz`, bearer auth, body limits, back-pressure (429) and
//! graceful shutdown. Still to come: silences and
//! approvals over HTTP, `/metrics`, hot reload, held-back actions across a
//! restart.

pub mod alertmanager;
mod http;
pub mod journal;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use remedy_engine::{Decision, Severity, Signal, Step, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::pipeline::Pipeline;
use journal::{Journal, Sqlite};

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
}

impl Settings {
    /// From the config and the environment; the error names the key.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let http = config.http.clone().unwrap_or_default();
        let text = |t: &toml::Table, key: &str, section: &str| -> Result<Option<String>, String> {
            match t.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("[{section}] {key} must be a string")),
            }
        };
        let listen = std::env::var("REMEDY_LISTEN")
            .ok()
            .or(text(&http, "listen", "http")?)
            .unwrap_or_else(|| "127.0.0.1:9477".into());
        let listen: SocketAddr = listen.parse().map_err(|_| {
            format!("[http] listen: {listen:?} is not an address like 127.0.0.1:9477")
        })?;
        let token = match std::env::var("REMEDY_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(t) => Some(t),
            None => match text(&http, "token_file", "http")? {
                Some(path) => {
                    let t = std::fs::read_to_string(&path)
                        .map_err(|e| format!("[http] token_file {path}: {e}"))?;
                    let t = t.trim().to_string();
                    if t.is_empty() {
                        return Err(format!("[http] token_file {path} is empty"));
                    }
                    Some(t)
                }
                None => None,
            },
        };
        let journal_table = config.journal.clone().unwrap_or_default();
        let url = std::env::var("REMEDY_JOURNAL")
            .ok()
            .or(text(&journal_table, "url", "journal")?)
            .unwrap_or_else(|| "sqlite://remedy.db".into());
        let journal = match url.strip_prefix("sqlite://") {
            Some(path) => PathBuf::from(path),
            None => {
                return Err(format!(
                    "[journal] url {url:?}: only sqlite://PATH is supported so far"
                ))
            }
        };
        if !listen.ip().is_loopback() && token.is_none() {
            return Err(format!(
                "refusing to listen on {listen} without a token: set [http] token_file or REMEDY_TOKEN, or listen on 127.0.0.1"
            ));
        }
        Ok(Settings {
            listen,
            token,
            journal,
            max_body: 8 << 20,
            queue: 256,
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
}

/// Shared with the HTTP handlers.
struct Shared {
    tx: mpsc::Sender<Command>,
    reader: Mutex<Sqlite>,
    token: Option<String>,
    rules_loaded: AtomicBool,
}

/// Puts the journal's open faults back into the engine so nothing reopens.
fn recover(pipeline: &mut Pipeline, journal: &Sqlite) -> Result<usize, String> {
    let open = journal
        .faults(Some(true), None)
        .map_err(|e| e.to_string())?;
    for f in &open {
        let severity = f
            .severity
            .as_deref()
            .and_then(Severity::parse)
            .unwrap_or(Severity::Warning);
        let types: Vec<String> = f.signal_type.iter().cloned().collect();
        let done = journal
            .decided_actions(&f.node, &f.fault, f.opened_at)
            .map_err(|e| e.to_string())?;
        pipeline.engine.restore_open(
            &f.node,
            &f.fault,
            severity,
            f.rule.as_deref().unwrap_or(""),
            f.opened_at,
            &types,
            &done,
        );
    }
    Ok(open.len())
}

/// The decider: owns the pipeline and the journal, one command at a time.
fn decide(mut pipeline: Pipeline, mut journal: Sqlite, mut rx: mpsc::Receiver<Command>) {
    let (mut step, mut out) = (Step::default(), Vec::new());
    let mut entries: Vec<(Decision, Option<String>)> = Vec::new();
    while let Some(command) = rx.blocking_recv() {
        entries.clear();
        let reply = match command {
            Command::Tick => {
                out.clear();
                pipeline.advance(now(), &mut step, &mut out);
                entries.extend(out.drain(..).map(|d| (d, None)));
                None
            }
            Command::Ingest { signals, reply } => {
                let n = signals.len();
                for signal in signals {
                    let r#type = signal.r#type.clone();
                    out.clear();
                    pipeline.on_signal(signal, now(), &mut step, &mut out);
                    for e in &step.errors {
                        eprintln!("rule error: {e}");
                    }
                    entries.extend(out.drain(..).map(|d| (d, Some(r#type.clone()))));
                }
                Some((reply, n))
            }
        };
        let journaled = journal.record(&entries).map_err(|e| e.to_string());
        if let Err(e) = &journaled {
            eprintln!("error: {e}");
        }
        if let Some((reply, n)) = reply {
            let _ = reply.send(journaled.map(|()| n));
        }
    }
}

/// Builds the pipeline on the decider thread (the engine is not `Send`).
pub type Build = Box<dyn FnOnce() -> Result<Pipeline, String> + Send>;

/// Runs the service until SIGINT or SIGTERM. `build` makes the pipeline;
/// its error (e.g. rules that do not compile) stops the start.
pub fn run(settings: Settings, build: Build) -> Result<(), String> {
    let journal = Sqlite::open(&settings.journal)
        .map_err(|e| format!("{}: {e}", settings.journal.display()))?;
    let reader = Sqlite::reader(&settings.journal)
        .map_err(|e| format!("{}: {e}", settings.journal.display()))?;
    let (tx, rx) = mpsc::channel(settings.queue);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let decider = thread::Builder::new()
        .name("decider".into())
        .spawn(move || {
            let started = build().and_then(|mut pipeline| {
                let recovered = recover(&mut pipeline, &journal)?;
                Ok((pipeline, recovered))
            });
            match started {
                Ok((pipeline, recovered)) => {
                    let _ = started_tx.send(Ok(recovered));
                    decide(pipeline, journal, rx);
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
        let shared = Arc::new(Shared {
            tx: tx.clone(),
            reader: Mutex::new(reader),
            token: settings.token.clone(),
            rules_loaded: AtomicBool::new(true),
        });
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every.tick().await;
                if tx.send(Command::Tick).await.is_err() {
                    break;
                }
            }
        });
        eprintln!(
            "remedy listening on http://{} (journal {}, {recovered} open faults recovered)",
            settings.listen,
            settings.journal.display()
        );
        let app = http::router(shared.clone(), settings.max_body);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| format!("serving: {e}"))?;
        // Intake has stopped: let the decider finish what is queued.
        ticker.abort();
        let _ = ticker.await;
        shared.rules_loaded.store(false, Ordering::Relaxed);
        drop(shared);
        tokio::task::spawn_blocking(move || decider.join())
            .await
            .map_err(|e| format!("stopping: {e}"))?
            .map_err(|_| "the decider panicked".to_string())?;
        eprintln!("remedy stopped");
        Ok(())
    })
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
    eprintln!("remedy: stopping (finishing queued work)");
}
