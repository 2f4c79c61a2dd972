//! `log`: writes the action to the log (and, through the decision, to the
//! journal and the decisions topic) and does nothing else. For `notify`
//! actions, and the default for actions without an `[actions.NAME]`.

use remedy_engine::Duration;
use serde::Deserialize;

use super::{BoxFuture, ExecError, Executor, Job};

/// `[actions.NAME] executor = "log"`: no settings of its own.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// The `log` executor.
#[derive(Debug, Default)]
pub struct Log;

impl Log {
    /// Builds it.
    pub fn new(_config: Config) -> Self {
        Log
    }
}

impl Executor for Log {
    fn execute<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<String, ExecError>> {
        Box::pin(async move {
            let i = &job.intent;
            tracing::info!(
                id = %job.id,
                node = %i.node,
                fault = %i.fault,
                action = %i.action,
                reason = i.reason.as_deref(),
                "action"
            );
            Ok("logged".to_string())
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}
