//! The configuration file (TOML, contract section 5).
//!
//! This struct is the documentation of the file: every field says what it is
//! for and what it defaults to. Sections that belong to components still being
//! built (`[http]`, `[journal]`, `[kafka]`, `[[prometheus]]`, `[[scrape]]`,
//! `[actions.*]`, `[guards]`) are accepted as written in the contract so that
//! one file serves every command, and are validated by the component that uses
//! them. A key the contract does not know is an error naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use remedy_engine::{Duration, Policy};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of `*.rhai` rules; relative paths are relative to the config
    /// file's directory. Default: `rules` (next to the config, or `./rules`).
    #[serde(default = "default_rules")]
    pub rules: PathBuf,
    /// Carry out no action, only report `dry_run`. Default: true.
    #[serde(default = "default_true")]
    pub dry_run: bool,
    /// Policy per fault class; `"*"` is the default for classes not listed.
    #[serde(default)]
    pub faults: BTreeMap<String, FaultPolicy>,
    /// HTTP API (used by `remedy run`).
    #[serde(default)]
    pub http: Option<toml::Table>,
    /// Journal (used by `remedy run`).
    #[serde(default)]
    pub journal: Option<toml::Table>,
    /// Kafka source and decisions topic (used by `remedy run`).
    #[serde(default)]
    pub kafka: Option<toml::Table>,
    /// PromQL queries polled as signals (used by `remedy run`).
    #[serde(default)]
    pub prometheus: Vec<toml::Table>,
    /// Exposition endpoints scraped as signals (used by `remedy run`).
    #[serde(default)]
    pub scrape: Vec<toml::Table>,
    /// Executors, by action name.
    #[serde(default)]
    pub actions: BTreeMap<String, toml::Table>,
    /// Storm protection and circuit breakers.
    #[serde(default)]
    pub guards: Option<toml::Table>,
    /// Silences known from the start.
    #[serde(default)]
    pub silences: Vec<toml::Table>,
}

/// `[faults.NAME]`: what to do about one fault class.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPolicy {
    /// Actions run when the fault opens (a rule's `actions` replaces them). Default: none.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Actions run when the fault resolves. Default: none.
    #[serde(default)]
    pub on_resolve: Vec<String>,
    /// Open only after signals keep the fault this long. Default: 0s.
    #[serde(default, rename = "for")]
    pub for_: Option<Duration>,
    /// Actions taken while the fault stays open, each after its delay.
    #[serde(default)]
    pub escalate: Vec<Escalation>,
    /// Actions wait for an operator's approval. Default: false.
    #[serde(default)]
    pub approval: bool,
}

/// One rung of an escalation ladder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// How long the fault must have been open.
    pub after: Duration,
    /// What to do then.
    pub actions: Vec<String>,
}

fn default_rules() -> PathBuf {
    PathBuf::from("rules")
}

fn default_true() -> bool {
    true
}

impl Default for Config {
    /// The embedded default: rules from `./rules`, everything dry-run, the
    /// engine's built-in policies.
    fn default() -> Self {
        toml::from_str("").expect("the empty config is valid")
    }
}

/// Why a config file could not be used. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or not a valid config.
    #[error("config {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file; `rules` is resolved against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        if config.rules.is_relative() {
            if let Some(dir) = path.parent() {
                config.rules = dir.join(&config.rules);
            }
        }
        Ok(config)
    }

    /// Parses config text; the error is one line naming the key and position.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| one_line(&e))
    }

    /// The engine's policies: the embedded ones, with `[faults.*]` replacing per class.
    pub fn policies(&self) -> remedy_engine::Policies {
        remedy_engine::Policies::from_config(
            self.faults
                .iter()
                .map(|(name, f)| {
                    let policy = Policy {
                        actions: f.actions.clone(),
                        on_resolve: f.on_resolve.clone(),
                    };
                    (name.clone(), policy)
                })
                .collect(),
        )
    }

    /// Settings this build reads but does not act on yet, as warnings naming the key.
    pub fn not_yet_enforced(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (name, f) in &self.faults {
            if f.for_.is_some_and(|d| d.0 > 0) {
                warnings.push(format!(
                    "faults.{name}.for is not enforced yet: faults open at once"
                ));
            }
            if !f.escalate.is_empty() {
                warnings.push(format!("faults.{name}.escalate is not enforced yet"));
            }
            if f.approval {
                warnings.push(format!("faults.{name}.approval is not enforced yet"));
            }
        }
        if self.guards.is_some() {
            warnings.push("[guards] is not enforced yet".to_string());
        }
        if !self.silences.is_empty() {
            warnings.push("[[silences]] are not enforced yet".to_string());
        }
        if !self.dry_run {
            warnings.push(
                "dry_run = false: no executor is available yet, every action stays dry-run"
                    .to_string(),
            );
        }
        warnings
    }
}

/// TOML errors span several lines with a source excerpt; keep the position and the message.
fn one_line(e: &toml::de::Error) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(_) => {
            let first = e.to_string();
            let position = first
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("TOML parse error ")
                .to_string();
            if position.is_empty() {
                message
            } else {
                format!("{position}: {message}")
            }
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_example_parses() {
        let text = include_str!("../tests/fixtures/contract-config.toml");
        let c = Config::parse(text).unwrap();
        assert!(c.dry_run);
        assert_eq!(c.faults["memory_failure"].actions, ["cordon", "ticket"]);
        assert_eq!(
            c.faults["memory_failure"].escalate[0].after,
            "30m".parse().unwrap()
        );
        assert_eq!(c.prometheus.len(), 1);
        assert_eq!(c.policies().get("memory_failure").on_resolve, ["uncordon"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = Config::parse("rulez = \"x\"").unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("unknown field `rulez`"),
            "{e}"
        );
        let e = Config::parse("[faults.disk_failure]\nfor = \"ten minutes\"").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("invalid duration"),
            "{e}"
        );
        let e = Config::parse("[faults.disk_failure]\nactons = []").unwrap_err();
        assert!(e.contains("unknown field `actons`"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn the_empty_config_is_the_embedded_default() {
        let c = Config::default();
        assert_eq!(c.rules, PathBuf::from("rules"));
        assert!(c.dry_run);
        assert_eq!(c.policies(), remedy_engine::Policies::default());
        assert!(c.not_yet_enforced().is_empty());
    }
}
