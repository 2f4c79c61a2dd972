//! `kubernetes`: cordon, uncordon, drain. (Being written.)

use remedy_engine::Duration;
use serde::Deserialize;

use super::{BoxFuture, ConfigError, ExecError, Executor};
use crate::guards::Job;

/// `[actions.NAME] executor = "kubernetes"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// cordon | uncordon | drain; default: the action name.
    #[serde(default)]
    pub op: Option<String>,
}

/// The `kubernetes` executor.
#[derive(Debug)]
pub struct Kubernetes {
    config: Config,
}

impl Kubernetes {
    /// Builds it.
    pub async fn new(_action: &str, config: Config) -> Result<Self, ConfigError> {
        Ok(Kubernetes { config })
    }
}

impl Executor for Kubernetes {
    fn execute<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Result<String, ExecError>> {
        Box::pin(async move {
            Err(ExecError::Failed(format!(
                "{}: not built yet",
                self.config.op.as_deref().unwrap_or("?")
            )))
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}
