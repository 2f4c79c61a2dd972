//! The configuration file (TOML, contract section 5).
//!
//! This struct is the documentation of the file: every field says what it is
//! for and what it defaults to. `[http]` and `[journal]` are read by `remedy
//! run` (see `service::Settings`); sections of components still being built
//! (`[kafka]` and the executor settings of `[actions.*]`) are accepted as written in the contract so that one file
//! serves every command. A key the contract does not know is an error naming
//! the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use remedy_actions::{ActionGuards, BreakerConfig, Budget, GuardConfig, Rate, Silence};
use remedy_engine::{Duration, Flap, Policy};
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
    pub faults: BTreeMap<String, Policy>,
    /// HTTP API (used by `remedy run`).
    #[serde(default)]
    pub http: Option<toml::Table>,
    /// Journal (used by `remedy run`).
    #[serde(default)]
    pub journal: Option<toml::Table>,
    /// Kafka source and decisions topic (used by `remedy run`).
    #[serde(default)]
    pub kafka: Option<toml::Table>,
    /// PromQL queries polled as signals by `remedy run`.
    #[serde(default)]
    pub prometheus: Vec<remedy_collectors::promql::Config>,
    /// Exposition endpoints scraped as signals by `remedy run`.
    #[serde(default)]
    pub scrape: Vec<remedy_collectors::scrape::Config>,
    /// Executors and quotas, by action name.
    #[serde(default)]
    pub actions: BTreeMap<String, ActionSection>,
    /// Storm protection, circuit breakers, flap detection.
    #[serde(default)]
    pub guards: GuardsSection,
    /// Silences known from the start (replay uses them as the service does).
    #[serde(default)]
    pub silences: Vec<Silence>,
}

/// `[actions.NAME]`.
#[derive(Debug, Deserialize)]
pub struct ActionSection {
    /// kubernetes | kafka | http | exec | log. Default: log.
    #[serde(default = "default_executor")]
    pub executor: String,
    /// Fleet-wide quota, e.g. `20/min` (burst = the count).
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Quota per failure domain: `{ label = "rack", rate = "2/hour" }`.
    #[serde(default)]
    pub per: Option<PerDomain>,
    /// The executor's own settings (op, kubeconfig, topic, url, ...).
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// `per = { label, rate }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerDomain {
    /// The label naming the domain.
    pub label: String,
    /// Its quota.
    pub rate: Rate,
}

/// `[guards]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardsSection {
    /// Nodes of one domain under remediation at once: a count or `"5%"`.
    /// Default `"5%"`.
    #[serde(default = "default_budget", deserialize_with = "de_budget")]
    pub max_unhealthy: Option<Budget>,
    /// The label that names a node's failure domain. Default `cluster`.
    #[serde(default = "default_domain")]
    pub domain: String,
    /// After a domain was over budget, held-back actions resume only once it
    /// has stayed under budget this long. Default `0s`.
    #[serde(default)]
    pub storm_recovery: Duration,
    /// Circuit breaker per executor. Default 5 failures in 60s, 120s cooldown.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Flap detection. Default: more than 3 opens within 1h.
    #[serde(default)]
    pub flap: Flap,
}

impl Default for GuardsSection {
    fn default() -> Self {
        toml::from_str("").expect("the empty [guards] is valid")
    }
}

fn default_executor() -> String {
    "log".to_string()
}

fn default_domain() -> String {
    "cluster".to_string()
}

fn default_budget() -> Option<Budget> {
    Some(Budget::Percent(5.0))
}

/// `max_unhealthy = 50`, `"5%"`, or `"none"` (no storm protection).
fn de_budget<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Budget>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Count(u32),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Count(n) => Ok(Some(Budget::Count(n))),
        Raw::Text(t) if t == "none" => Ok(None),
        Raw::Text(t) => t.parse().map(Some).map_err(serde::de::Error::custom),
    }
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
        remedy_engine::Policies::from_config(self.faults.clone())
    }

    /// The guard chain's settings and per-action quotas.
    pub fn guards(&self) -> (GuardConfig, BTreeMap<String, ActionGuards>) {
        let g = &self.guards;
        let config = GuardConfig {
            max_unhealthy: g.max_unhealthy,
            domain: g.domain.clone(),
            storm_recovery: g.storm_recovery,
            breaker: g.breaker,
            dry_run: self.dry_run,
        };
        let actions = self
            .actions
            .iter()
            .map(|(name, a)| {
                let guards = ActionGuards {
                    executor: a.executor.clone(),
                    rate: a.rate,
                    per: a.per.as_ref().map(|p| (p.label.clone(), p.rate)),
                };
                (name.clone(), guards)
            })
            .collect();
        (config, actions)
    }

    /// The executor of every `[actions.NAME]`. A kafka executor without its
    /// own `brokers` uses `[kafka] brokers`.
    pub fn executor_specs(&self) -> Vec<remedy_actions::Spec> {
        let brokers = self.kafka.as_ref().and_then(|k| k.get("brokers")).cloned();
        self.actions
            .iter()
            .map(|(name, a)| {
                let mut settings = a.settings.clone();
                if a.executor == "kafka" && !settings.contains_key("brokers") {
                    if let Some(b) = &brokers {
                        settings.insert("brokers".into(), b.clone());
                    }
                }
                remedy_actions::Spec {
                    action: name.clone(),
                    executor: a.executor.clone(),
                    settings,
                }
            })
            .collect()
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
        assert_eq!(
            c.scrape[0].metrics["node_pressure_memory_waiting_seconds_total"],
            "memory.pressure"
        );
        assert_eq!(c.scrape[0].every, "15s".parse().unwrap());
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
    }

    #[test]
    fn guards_and_actions_parse_and_bad_values_name_the_key() {
        let c = Config::parse(
            "[guards]\nmax_unhealthy = 25\ndomain = \"rack\"\nstorm_recovery = \"5m\"\n\
             breaker = { failures = 3 }\nflap = { opens = 5 }\n\
             [actions.cordon]\nexecutor = \"kubernetes\"\nrate = \"20/min\"\n\
             per = { label = \"rack\", rate = \"2/hour\" }\nkubeconfig = \"~/.kube/config\"\n\
             [[silences]]\nnode = \"n1\"\nuntil = \"2026-12-01T00:00:00Z\"\ncomment = \"BIOS update\"",
        )
        .unwrap();
        let (g, actions) = c.guards();
        assert_eq!(g.max_unhealthy, Some(Budget::Count(25)));
        assert_eq!(
            (g.domain.as_str(), g.storm_recovery),
            ("rack", "5m".parse().unwrap())
        );
        assert_eq!(g.breaker.failures, 3);
        assert_eq!(
            g.breaker.cooldown,
            "120s".parse().unwrap(),
            "unset keys keep their default"
        );
        assert_eq!(
            (c.guards.flap.opens, c.guards.flap.window),
            (5, "1h".parse().unwrap())
        );
        assert_eq!(actions["cordon"].rate.unwrap().to_string(), "20/min");
        assert_eq!(actions["cordon"].per.as_ref().unwrap().0, "rack");
        assert_eq!(c.silences[0].node.as_deref(), Some("n1"));

        assert_eq!(
            Config::default().guards().0.max_unhealthy,
            Some(Budget::Percent(5.0))
        );
        let off = Config::parse("[guards]\nmax_unhealthy = \"none\"").unwrap();
        assert_eq!(off.guards().0.max_unhealthy, None);

        let e = Config::parse("[guards]\nmax_unhealthy = \"five percent\"").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("invalid max_unhealthy"),
            "{e}"
        );
        let e = Config::parse("[actions.cordon]\nrate = \"20 a minute\"").unwrap_err();
        assert!(e.contains("line 2") && e.contains("invalid rate"), "{e}");
        let e = Config::parse("[guards]\nbudget = 5").unwrap_err();
        assert!(e.contains("unknown field `budget`"), "{e}");
        let e = Config::parse("[[silences]]\nnode = \"n1\"").unwrap_err();
        assert!(e.contains("missing field `until`"), "{e}");
    }
}
