//! `exec`: a local command, for sites with their own tooling. The job's JSON
//! (see [`super::job_json`]) goes to its stdin; exit 0 is `executed` with the
//! first line of stdout as the summary; a non-zero exit, a signal or the
//! timeout is `failed` with the end of stderr as the reason. The command is
//! run directly (no shell) and killed when it overruns.

use std::process::Stdio;

use remedy_engine::Duration;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{job_json, BoxFuture, ConfigError, ExecError, Executor, Job};

/// `[actions.NAME] executor = "exec"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The program and its arguments, e.g. `["/usr/local/bin/repair", "--dry"]`.
    pub command: Vec<String>,
    /// Longest run before it is killed and the action `failed`. Default 60s.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

/// The `exec` executor.
#[derive(Debug)]
pub struct Exec {
    config: Config,
}

/// The settings as read, without starting anything.
pub fn check(action: &str, config: &Config) -> Result<(), ConfigError> {
    if config.command.first().is_none_or(|p| p.is_empty()) {
        return Err(ConfigError::new(
            action,
            "command: give the program and its arguments, e.g. [\"/usr/local/bin/repair\"]",
        ));
    }
    if config.timeout.0 <= 0 {
        return Err(ConfigError::new(action, "timeout: must be longer than 0s"));
    }
    Ok(())
}

impl Exec {
    /// Checks the command is given.
    pub fn new(action: &str, config: Config) -> Result<Self, ConfigError> {
        check(action, &config)?;
        Ok(Exec { config })
    }

    async fn run(&self, job: &Job) -> Result<String, ExecError> {
        let program = &self.config.command[0];
        let mut child = tokio::process::Command::new(program)
            .args(&self.config.command[1..])
            .env("REMEDY_JOB_ID", &job.id)
            .env("REMEDY_NODE", &job.intent.node)
            .env("REMEDY_FAULT", &job.intent.fault)
            .env("REMEDY_ACTION", &job.intent.action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ExecError::Permanent(format!("cannot start {program}: {e}")))?;
        let input = format!("{}\n", job_json(job));
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its input is its own business.
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| ExecError::Transient(format!("{program}: {e}")))?;
        if output.status.success() {
            let stdout = String::from_utf8_lossy(&output.stdout);
            let first = stdout.lines().next().unwrap_or("").trim();
            return Ok(if first.is_empty() {
                format!("{program} exited 0")
            } else {
                clip(first)
            });
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let status = match output.status.code() {
            Some(code) => format!("exited {code}"),
            None => "killed by a signal".to_string(),
        };
        Err(ExecError::Permanent(if last.is_empty() {
            format!("{program} {status}")
        } else {
            format!("{program} {status}: {}", clip(last.trim()))
        }))
    }
}

/// At most 200 characters of a line.
fn clip(line: &str) -> String {
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    }
}

impl Executor for Exec {
    fn execute<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<String, ExecError>> {
        Box::pin(self.run(job))
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::executors::{testing::job, Executors};

    fn executors(script: &str, timeout: &str) -> Executors {
        let config = Config {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: timeout.parse().unwrap(),
        };
        let exec: Arc<dyn Executor> = Arc::new(Exec::new("repair", config).unwrap());
        Executors::from_map(BTreeMap::from([("repair".to_string(), exec)]))
    }

    #[tokio::test]
    async fn the_job_arrives_on_stdin_and_stdout_is_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("stdin.json");
        let script = format!(
            "cat > {}; echo \"repaired $REMEDY_NODE\"; echo more",
            seen.display()
        );
        let r = executors(&script, "10s")
            .run(&job("node-7", "repair"))
            .await;
        assert_eq!(r, Ok("repaired node-7".to_string()));
        let input: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
        assert_eq!(input["node"], "node-7");
        assert_eq!(input["action"], "repair");
        assert_eq!(input["fault"], "memory_failure");
        assert_eq!(input["labels"]["rack"], "r7");
        assert_eq!(input["id"], job("node-7", "repair").id);
    }

    #[tokio::test]
    async fn a_non_zero_exit_fails_with_the_end_of_stderr() {
        let r = executors("echo starting >&2; echo 'no BMC answer' >&2; exit 3", "10s")
            .run(&job("node-7", "repair"))
            .await;
        assert_eq!(
            r,
            Err(ExecError::Permanent(
                "/bin/sh exited 3: no BMC answer".to_string()
            ))
        );
    }

    #[tokio::test]
    async fn an_overrun_is_killed_and_fails() {
        let started = std::time::Instant::now();
        let r = executors("sleep 30", "300ms")
            .run(&job("node-7", "repair"))
            .await;
        assert_eq!(r, Err(ExecError::Timeout(Duration(300))));
        assert!(r.unwrap_err().is_transient());
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn an_empty_command_is_a_config_error() {
        let e = Exec::new(
            "repair",
            Config {
                command: vec![],
                timeout: default_timeout(),
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("[actions.repair] command:"),
            "{e}"
        );
    }
}
