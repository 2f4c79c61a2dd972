//! The executor registry: one executor instance per `[actions.NAME]`,
//! built from the section's typed settings ([`ExecutorConfig`], checked
//! when the config is loaded, by every command), and the fallback for
//! built-in actions without a section (the `log` executor).
//!
//! Each kind of executor is one module with its own `Config` (unknown keys
//! refused) and a way to build it; the trait they implement, the job and
//! the error live in [`crate::executor`].

pub mod exec;
pub mod http;
pub mod kafka;
pub mod kubernetes;
pub mod log;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub use crate::executor::{job_json, BoxFuture, ExecError, Executor, Job};

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

/// `executor = "..."`: which kind of executor carries an action out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Node operations through the Kubernetes API (cordon, uncordon, drain).
    Kubernetes,
    /// A command to the node's agent on a Kafka topic.
    Kafka,
    /// An HTTP request (tickets, webhooks).
    Http,
    /// A local program.
    Exec,
    /// Logs the action and does nothing else. The default.
    #[default]
    Log,
}

impl ExecutorKind {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Kubernetes => "kubernetes",
            ExecutorKind::Kafka => "kafka",
            ExecutorKind::Http => "http",
            ExecutorKind::Exec => "exec",
            ExecutorKind::Log => "log",
        }
    }
}

/// The typed settings of one `[actions.NAME]`, by executor kind.
#[derive(Clone, Debug)]
pub enum ExecutorConfig {
    /// `executor = "kubernetes"`.
    Kubernetes(kubernetes::Config),
    /// `executor = "kafka"`.
    Kafka(kafka::Config),
    /// `executor = "http"`.
    Http(http::Config),
    /// `executor = "exec"`.
    Exec(exec::Config),
    /// `executor = "log"`.
    Log(log::Config),
}

impl ExecutorConfig {
    /// Reads the executor's own keys (everything of `[actions.NAME]` but
    /// the common ones). The error is serde's: it names the key (`unknown
    /// field `x``, or `... in `timeout``).
    pub fn from_table(kind: ExecutorKind, table: toml::Table) -> Result<Self, toml::de::Error> {
        fn read<T: DeserializeOwned>(table: toml::Table) -> Result<T, toml::de::Error> {
            T::deserialize(toml::Value::Table(table))
        }
        Ok(match kind {
            ExecutorKind::Kubernetes => ExecutorConfig::Kubernetes(read(table)?),
            ExecutorKind::Kafka => ExecutorConfig::Kafka(read(table)?),
            ExecutorKind::Http => ExecutorConfig::Http(read(table)?),
            ExecutorKind::Exec => ExecutorConfig::Exec(read(table)?),
            ExecutorKind::Log => ExecutorConfig::Log(read(table)?),
        })
    }

    /// Its kind.
    pub fn kind(&self) -> ExecutorKind {
        match self {
            ExecutorConfig::Kubernetes(_) => ExecutorKind::Kubernetes,
            ExecutorConfig::Kafka(_) => ExecutorKind::Kafka,
            ExecutorConfig::Http(_) => ExecutorKind::Http,
            ExecutorConfig::Exec(_) => ExecutorKind::Exec,
            ExecutorConfig::Log(_) => ExecutorKind::Log,
        }
    }

    /// What can be checked without touching anything outside (no file, no
    /// network): every command runs this when it loads the config, so a
    /// wrong setting is found by `replay` as surely as by `run`.
    pub fn check(&self, action: &str, op: &str) -> Result<(), ConfigError> {
        match self {
            ExecutorConfig::Kubernetes(c) => kubernetes::check(action, op, c),
            ExecutorConfig::Kafka(c) => kafka::check(action, c),
            ExecutorConfig::Http(c) => http::check(action, c),
            ExecutorConfig::Exec(c) => exec::check(action, c),
            ExecutorConfig::Log(_) => Ok(()),
        }
    }
}

/// One `[actions.NAME]`: what it does and how its executor is set up.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The action's name.
    pub action: String,
    /// What it does (`op`; default the action's name).
    pub op: String,
    /// The executor and its settings.
    pub config: ExecutorConfig,
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
            spec.config.check(action, &spec.op)?;
            let executor: Arc<dyn Executor> = match &spec.config {
                ExecutorConfig::Log(c) => Arc::new(log::Log::new(c.clone())),
                ExecutorConfig::Exec(c) => Arc::new(exec::Exec::new(action, c.clone())?),
                ExecutorConfig::Http(c) => Arc::new(http::Http::new(action, c.clone())?),
                ExecutorConfig::Kafka(c) => Arc::new(kafka::Command::new(action, c.clone())?),
                ExecutorConfig::Kubernetes(c) => {
                    Arc::new(kubernetes::Kubernetes::new(action, &spec.op, c.clone()).await?)
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
    pub async fn run(&self, job: &Job) -> Result<String, ExecError> {
        let executor = self.get(&job.intent.action);
        let limit = executor.timeout();
        let budget = std::time::Duration::from_millis(limit.0.max(1) as u64);
        match tokio::time::timeout(budget, executor.execute(job)).await {
            Ok(result) => result,
            Err(_) => Err(ExecError::Timeout(limit)),
        }
    }
}

/// Reads an executor's `Config` from a TOML table (tests and embedding).
pub fn settings<T: DeserializeOwned>(action: &str, table: &toml::Table) -> Result<T, ConfigError> {
    T::deserialize(toml::Value::Table(table.clone()))
        .map_err(|e| ConfigError::new(action, e.message().trim().replace('\n', " ")))
}

#[cfg(test)]
pub(crate) mod testing {
    //! A job to hand executors in tests, and a guard chain that executes.
    use std::collections::BTreeMap;

    use remedy_engine::{Decision, Duration, Intent, Timestamp, Trigger};

    use super::{Executors, Job};
    use crate::breaker::BreakerConfig;
    use crate::guards::{ActionGuards, DomainSizes, GuardConfig, Guards};

    /// Every failure domain knows 1,000 nodes.
    pub struct Fleet;

    impl DomainSizes for Fleet {
        fn known(&self, _: &str, _: &str) -> usize {
            1000
        }
    }

    /// The breaker cooldown of [`breaker_guards`], on the service's clock.
    pub const COOLDOWN: std::time::Duration = std::time::Duration::from_millis(500);

    /// Guards that execute (no dry-run, no budget), sending `action` to
    /// `executor`, whose breaker opens after 2 failures within 60s and
    /// half-opens after [`COOLDOWN`].
    pub fn breaker_guards(action: &str, executor: &str) -> Guards {
        Guards::new(
            GuardConfig {
                dry_run: false,
                max_unhealthy: None,
                breaker: BreakerConfig {
                    failures: 2,
                    window: Duration::from_secs(60),
                    cooldown: Duration(COOLDOWN.as_millis() as i64),
                    max_cooldown: None,
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
            assert!(guards.finished(&j.id, result, now, out).is_some());
        }
        jobs.len()
    }

    /// A cordon of `node` for a memory failure opened at 2026-11-24T23:58:07Z.
    pub fn job(node: &str, action: &str) -> Job {
        let opened = Timestamp::parse_rfc3339("2026-11-24T23:58:07Z").unwrap();
        let intent = Intent {
            domain: false,
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
            why: Default::default(),
            params: Default::default(),
        };
        Job {
            attempt: 0,
            retry_at: None,
            failing_since: None,
            id: intent.key(),
            executor: "test".into(),
            at: opened,
            intent,
        }
    }
}
