//! `http`: repair tickets and webhooks. (Being written.)

use remedy_engine::Duration;
use serde::Deserialize;

use super::{BoxFuture, ConfigError, ExecError, Executor};
use crate::guards::Job;

/// `[actions.NAME] executor = "http"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to POST.
    pub url: String,
}

/// The `http` executor.
#[derive(Debug)]
pub struct Http {
    config: Config,
}

impl Http {
    /// Builds it.
    pub fn new(_action: &str, config: Config) -> Result<Self, ConfigError> {
        Ok(Http { config })
    }
}

impl Executor for Http {
    fn execute<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Result<String, ExecError>> {
        Box::pin(async move {
            Err(ExecError::Failed(format!(
                "{}: not built yet",
                self.config.url
            )))
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}
