//! `kafka`: commands for node agents. (Being written.)

use remedy_engine::Duration;
use serde::Deserialize;

use super::{BoxFuture, ConfigError, ExecError, Executor};
use crate::guards::Job;

/// `[actions.NAME] executor = "kafka"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The command topic.
    pub topic: String,
}

/// The `kafka` command executor.
#[derive(Debug)]
pub struct Command {
    config: Config,
}

impl Command {
    /// Builds it.
    pub fn new(_action: &str, config: Config) -> Result<Self, ConfigError> {
        Ok(Command { config })
    }
}

impl Executor for Command {
    fn execute<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Result<String, ExecError>> {
        Box::pin(async move {
            Err(ExecError::Failed(format!(
                "{}: not built yet",
                self.config.topic
            )))
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}
