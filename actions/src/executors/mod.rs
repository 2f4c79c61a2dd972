//! Executors: what carries out a [`Job`] that passed the guard chain.
//!
//! Each executor is one module with its own `Config` (read from the
//! `[actions.NAME]` table, unknown keys refused) and a way to build it.
//! Every executor is idempotent on the job id ([`Job::id`], the same for a
//! retry and after a restart), bounded by a timeout, and answers with a
//! one-line summary of what it did or an error that says why not; the guard
//! chain turns that into `executed` or `failed` and feeds the breaker.

pub mod exec;
pub mod http;
pub mod kafka;
pub mod kubernetes;
pub mod log;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use remedy_engine::Duration;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::guards::Job;

/// A boxed future, as executors return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an executor could not carry out a job (the `failed` decision's reason).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// It took longer than the executor's timeout.
    #[error("timed out after {0}")]
    Timeout(Duration),
    /// The executor says why.
    #[error("{0}")]
    Failed(String),
}

/// Carries out jobs for one `[actions.NAME]`.
pub trait Executor: Send + Sync {
    /// Does it; `Ok` is a one-line summary of the response. Must be
    /// idempotent on `job.id`.
    fn execute<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<String, ExecError>>;

    /// The longest a job may take, retries included.
    fn timeout(&self) -> Duration;
}

/// A configuration problem, naming the action and the key.
#[derive(Debug, thiserror::Error)]
#[error("[actions.{action}] {message}")]
pub struct ConfigError {
    /// The action whose section is wrong.
    pub action: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `[actions.action]`.
    pub fn new(action: &str, message: impl std::fmt::Display) -> Self {
        ConfigError {
            action: action.to_string(),
            message: message.to_string(),
        }
    }
}

/// Reads an executor's `Config` from the rest of an `[actions.NAME]` table.
pub fn settings<T: DeserializeOwned>(action: &str, table: &toml::Table) -> Result<T, ConfigError> {
    T::deserialize(toml::Value::Table(table.clone()))
        .map_err(|e| ConfigError::new(action, e.message().trim().replace('\n', " ")))
}

/// One `[actions.NAME]`: the executor kind and its settings.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The action's name.
    pub action: String,
    /// kubernetes | kafka | http | exec | log.
    pub executor: String,
    /// The executor's own keys.
    pub settings: toml::Table,
}

/// Every configured executor, by action name; actions without a section
/// go to the `log` executor.
pub struct Executors {
    by_action: BTreeMap<String, Arc<dyn Executor>>,
    fallback: Arc<dyn Executor>,
}

impl std::fmt::Debug for Executors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executors")
            .field("actions", &self.by_action.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Executors {
    /// Builds the executor of every spec (connecting clients, reading
    /// credential files); the error names the action and the key.
    pub async fn build(specs: &[Spec]) -> Result<Self, ConfigError> {
        let mut by_action: BTreeMap<String, Arc<dyn Executor>> = BTreeMap::new();
        for spec in specs {
            let action = spec.action.as_str();
            let executor: Arc<dyn Executor> = match spec.executor.as_str() {
                "log" => Arc::new(log::Log::new(settings(action, &spec.settings)?)),
                "exec" => Arc::new(exec::Exec::new(action, settings(action, &spec.settings)?)?),
                "http" => Arc::new(http::Http::new(action, settings(action, &spec.settings)?)?),
                "kafka" => Arc::new(kafka::Command::new(
                    action,
                    settings(action, &spec.settings)?,
                )?),
                "kubernetes" => Arc::new(
                    kubernetes::Kubernetes::new(action, settings(action, &spec.settings)?).await?,
                ),
                other => {
                    return Err(ConfigError::new(
                        action,
                        format!(
                            "executor {other:?}: expected kubernetes, kafka, http, exec or log"
                        ),
                    ))
                }
            };
            by_action.insert(spec.action.clone(), executor);
        }
        Ok(Executors {
            by_action,
            fallback: Arc::new(log::Log),
        })
    }

    /// Only these executors, by action name (for tests and embedding).
    pub fn from_map(by_action: BTreeMap<String, Arc<dyn Executor>>) -> Self {
        Executors {
            by_action,
            fallback: Arc::new(log::Log),
        }
    }

    /// The executor of an action.
    pub fn get(&self, action: &str) -> Arc<dyn Executor> {
        self.by_action
            .get(action)
            .cloned()
            .unwrap_or_else(|| self.fallback.clone())
    }

    /// Runs a job within its executor's timeout: the summary, or why it failed.
    pub async fn run(&self, job: &Job) -> Result<String, String> {
        let executor = self.get(&job.intent.action);
        let limit = executor.timeout();
        let budget = std::time::Duration::from_millis(limit.0.max(1) as u64);
        match tokio::time::timeout(budget, executor.execute(job)).await {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(ExecError::Timeout(limit).to_string()),
        }
    }
}

/// The JSON executors hand on (exec's stdin, http's default body, the log):
/// the action decision being carried out, with the job id, the fault's
/// opening time and the node's labels.
pub fn job_json(job: &Job) -> serde_json::Value {
    let i = &job.intent;
    let labels: serde_json::Map<String, serde_json::Value> = i
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let mut v = json!({
        "id": job.id,
        "ts": job.at,
        "event": "action",
        "node": i.node,
        "fault": i.fault,
        "action": i.action,
        "opened": i.opened,
        "trigger": i.trigger,
        "labels": labels,
    });
    if let Some(reason) = &i.reason {
        v["reason"] = json!(reason);
    }
    v
}

#[cfg(test)]
pub(crate) mod testing {
    //! A job to hand executors in tests, and a guard chain that executes.
    use std::collections::BTreeMap;

    use remedy_engine::{Decision, Duration, Intent, Timestamp, Trigger};

    use super::Executors;
    use crate::breaker::BreakerConfig;
    use crate::guards::{ActionGuards, DomainSizes, GuardConfig, Guards, Job};

    /// Every failure domain knows 1,000 nodes.
    pub struct Fleet;

    impl DomainSizes for Fleet {
        fn known(&self, _: &str, _: &str) -> usize {
            1000
        }
    }

    /// Guards that execute (no dry-run, no budget), sending `action` to
    /// `executor`, whose breaker opens after 2 failures within 60s and
    /// half-opens after a 120s cooldown.
    pub fn breaker_guards(action: &str, executor: &str) -> Guards {
        Guards::new(
            GuardConfig {
                dry_run: false,
                max_unhealthy: None,
                breaker: BreakerConfig {
                    failures: 2,
                    window: Duration::from_secs(60),
                    cooldown: Duration::from_secs(120),
                },
                ..GuardConfig::default()
            },
            BTreeMap::from([(
                action.to_string(),
                ActionGuards {
                    executor: executor.into(),
                    ..ActionGuards::default()
                },
            )]),
        )
    }

    /// Runs every job the guards hand out and reports each result at `now`;
    /// answers how many ran.
    pub async fn run_jobs(
        guards: &mut Guards,
        executors: &Executors,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) -> usize {
        let jobs = guards.take_jobs();
        for j in &jobs {
            let result = executors.run(j).await;
            assert!(guards.finished(&j.id, result, now, out));
        }
        jobs.len()
    }

    /// A cordon of `node` for a memory failure opened at 2026-11-24T23:58:07Z.
    pub fn job(node: &str, action: &str) -> Job {
        let opened = Timestamp::parse_rfc3339("2026-11-24T23:58:07Z").unwrap();
        let intent = Intent {
            at: opened,
            node: node.into(),
            fault: "memory_failure".into(),
            opened,
            reason: Some(format!("UE on {node}")),
            action: action.into(),
            labels: vec![
                ("cluster".into(), "c1".into()),
                ("rack".into(), "r7".into()),
            ],
            trigger: Trigger::Remedy,
            approval: false,
        };
        Job {
            id: intent.key(),
            executor: "test".into(),
            at: opened,
            intent,
        }
    }
}
