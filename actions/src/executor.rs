//! What an executor is: the [`Executor`] trait, the [`Job`] it carries
//! out and the [`ExecError`] it answers with. The registry that builds one
//! executor per `[actions.NAME]` lives in [`crate::executors`]; each kind of
//! executor is one module there.
//!
//! Every executor is idempotent on the job id ([`Job::id`], the same for a
//! retry and after a restart), bounded by its timeout, and answers with a
//! one-line summary of what it did or a typed error. The error stays typed
//! up to the guard chain, which feeds the executor's breaker with it and
//! turns it into the `failed` decision's reason.

use std::future::Future;
use std::pin::Pin;

use remedy_engine::{Duration, Intent, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A boxed future, as executors return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An action that passed every guard, for its executor to carry out (not
/// made in dry-run). Its result comes back through
/// [`Guards::finished`](crate::Guards::finished), which feeds the
/// executor's breaker and makes the `executed` or `failed` decision:
/// executors run concurrently, the guard chain never waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// [`Intent::key`]: the same for a retry of the same action, also
    /// after a restart, so executors can make it idempotent.
    pub id: String,
    /// The executor instance: the action's name (`[actions.NAME]`), whose
    /// breaker guards it.
    pub executor: String,
    /// Time it passed the guards.
    pub at: Timestamp,
    /// What is asked for.
    pub intent: Intent,
    /// Tries after the first that transient failures asked for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// Waiting to be tried again: not before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// When its first try failed (service time): `retry_for` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why an executor could not carry out a job (the `failed` decision's
/// reason). Whether it is worth trying again is part of the type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecError {
    /// It took longer than the executor's timeout.
    #[error("timed out after {0}")]
    Timeout(Duration),
    /// The target could not be reached or was busy (connection refused or
    /// reset, 5xx, 429, no answer in time): the same job may succeed later.
    #[error("{0}")]
    Transient(String),
    /// The target refused the job for good (4xx other than 429, a refused
    /// acknowledgement, a command that exited non-zero).
    #[error("{0}")]
    Permanent(String),
}

impl ExecError {
    /// Whether the same job may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        matches!(self, ExecError::Timeout(_) | ExecError::Transient(_))
    }
}

/// Carries out jobs for one `[actions.NAME]`.
pub trait Executor: Send + Sync {
    /// Does it; `Ok` is a one-line summary of the response. Must be
    /// idempotent on `job.id`.
    fn execute<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<String, ExecError>>;

    /// The longest a job may take, retries included.
    fn timeout(&self) -> Duration;
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
