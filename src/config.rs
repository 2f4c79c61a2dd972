//! The configuration file (TOML, contract sections 5 and 8), typed when it
//! is loaded.
//!
//! Every command (`run`, `replay`, `diff`, `check --config`) reads the
//! whole file into these structs, dry-run or not: every section refuses
//! unknown keys, every value is parsed (durations, rates, addresses, URLs,
//! paths, the executor's own settings), every action a policy names must
//! be defined in `[actions]` or be built in. An error names the file,
//! line, column and key. The structs are the documentation of the file:
//! each field says what it is for and what it defaults to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use remedy_actions::{
    ActionGuards, ActionKind, BreakerConfig, Budget, ExecutorConfig, ExecutorKind, GuardConfig,
    Rate, Silence, Spec, BUILT_IN,
};
use remedy_engine::{Duration, Flap, Policy};
use serde::Deserialize;
use toml::Spanned;

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
    /// `[faults.NAME]` as written, with where each is (read into `faults`).
    #[serde(default, rename = "faults")]
    raw_faults: BTreeMap<String, Spanned<Policy>>,
    /// Policy per fault class; `"*"` is the default for classes not listed.
    #[serde(skip)]
    pub faults: BTreeMap<String, Policy>,
    /// HTTP API (used by `remedy run`).
    #[serde(default)]
    pub http: HttpSection,
    /// Journal (used by `remedy run`).
    #[serde(default)]
    pub journal: JournalSection,
    /// Kafka source and decisions topic (used by `remedy run`).
    #[serde(default)]
    pub kafka: Option<remedy_collectors::kafka::Config>,
    /// PromQL queries polled as signals by `remedy run`.
    #[serde(default)]
    pub prometheus: Vec<remedy_collectors::promql::Config>,
    /// Exposition endpoints scraped as signals by `remedy run`.
    #[serde(default)]
    pub scrape: Vec<remedy_collectors::scrape::Config>,
    /// `[actions.NAME]` as written, with where each key is (read into `actions`).
    #[serde(default, rename = "actions")]
    raw_actions: BTreeMap<String, Spanned<RawTable>>,
    /// Every `[actions.NAME]`, typed: what it does, its executor, its quotas.
    #[serde(skip)]
    pub actions: BTreeMap<String, Action>,
    /// Storm protection and circuit breakers.
    #[serde(default)]
    pub guards: GuardsSection,
    /// The fault lifecycle.
    #[serde(default)]
    pub lifecycle: LifecycleSection,
    /// Silences known from the start (replay uses them as the service does).
    #[serde(default)]
    pub silences: Vec<Silence>,
    /// Node identity: which names are one machine.
    #[serde(default)]
    pub identity: IdentitySection,
    /// What `remedy run` takes in (contract 13).
    #[serde(default)]
    pub limits: remedy_collectors::Limits,
    /// `[[correlate]]`: common causes named once (contract 9).
    #[serde(default)]
    pub correlate: Vec<CorrelateSection>,
    /// The efficacy ledger (contract 11).
    #[serde(default)]
    pub efficacy: EfficacySection,
    /// Several instances on one PostgreSQL journal (contract 12).
    #[serde(default)]
    pub ha: Option<HaSection>,
    /// `[[node_class]]` as written (checked into `node_classes`).
    #[serde(default, rename = "node_class")]
    raw_node_classes: Vec<Spanned<remedy_engine::desired::NodeClassConfig>>,
    /// The node final state (contract 10): desired versions, readiness
    /// gates and rollout pacing per class of nodes.
    #[serde(skip)]
    pub node_classes: Vec<remedy_engine::desired::Class>,
}

/// `[ha]`: one leader, standbys ready to take over.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HaSection {
    /// The leader's lease, renewed every third of it; a standby takes over
    /// once it lapses. Default "10s".
    #[serde(default = "default_lease")]
    pub lease: remedy_engine::Duration,
}

fn default_lease() -> remedy_engine::Duration {
    remedy_engine::Duration::from_secs(10)
}

/// `[efficacy]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EfficacySection {
    /// Split the ledger (`/v1/efficacy`, `/metrics`, `remedy report`) by
    /// this node label, e.g. a hardware model: the same repair may work on
    /// one model and not on another. `efficacy()` and `demote` count every
    /// value together. Default: not split.
    #[serde(default)]
    pub by: Option<String>,
}

/// One `[[correlate]]` block.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelateSection {
    /// The label whose values are the domains: rack, switch, pdu,
    /// kernel_version, agent_version, ...
    pub label: String,
    /// The fault classes that count; `["*"]`: any.
    pub faults: Vec<String>,
    /// Opens at this many distinct nodes within `within`...
    #[serde(default)]
    pub min_nodes: Option<usize>,
    /// ...or at this share of the domain's known nodes (`"30%"`).
    #[serde(default, deserialize_with = "de_share")]
    pub min_share: Option<f64>,
    /// Faults opened within this long count.
    pub within: Duration,
    /// The domain fault's class (its policy: `[faults.NAME]`).
    pub fault: String,
    /// Per-node disruptive actions in that domain wait while it is open.
    #[serde(default = "default_true")]
    pub hold: bool,
    /// Per-node disruptive repairs of these classes wait this long after
    /// their fault opened, so the first nodes of a common cause are held
    /// too (not only those after it showed). Default "0s": none.
    #[serde(default)]
    pub settle: Duration,
}

fn de_share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let text = String::deserialize(d)?;
    match text
        .trim()
        .strip_suffix('%')
        .map(|p| p.trim().parse::<f64>())
    {
        Some(Ok(p)) if p > 0.0 && p <= 100.0 => Ok(Some(p / 100.0)),
        _ => Err(serde::de::Error::custom(format!(
            "invalid min_share {text:?}: write a share such as \"30%\""
        ))),
    }
}

/// `[identity]`: one machine is one node, whichever name a source uses for
/// it (contract section 7). Faults and decisions carry the canonical name.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// Labels whose value, on a signal that also names its node, is another
    /// name of that node (the value and, for an address, its host part).
    /// List only labels that name the machine itself: `instance` is the
    /// scrape target, the node for node_exporter's and the kubelet's
    /// alerts but kube-state-metrics' own pod for its alerts. Default: none.
    #[serde(default)]
    pub alias_labels: Vec<String>,
    /// A file of `alias,node` lines (`#` comments), relative to the config.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// `remedy run` learns InternalIP, ExternalIP and Hostname -> name from
    /// the API server's node list (at the start, then every 5 minutes),
    /// with the kubeconfig of the first `[actions.*]` whose executor is
    /// `kubernetes` (else in-cluster, `$KUBECONFIG`, `~/.kube/config`).
    #[serde(default)]
    pub kubernetes: bool,
    /// The aliases read from `file`, in file order.
    #[serde(skip)]
    pub aliases: Vec<(String, String)>,
}

/// The keys of one table, each with where it is in the file.
type RawTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// `[http]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address to listen on. Default `127.0.0.1:9477`; listening beyond
    /// loopback needs a token. `REMEDY_LISTEN` overrides it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// File holding the bearer token `/v1/*` then requires.
    /// `REMEDY_TOKEN` (the token itself) takes precedence.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: default_listen(),
            token_file: None,
        }
    }
}

/// `[journal]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// Where decisions are journaled: `sqlite://PATH` (relative paths are
    /// relative to the working directory), or `postgres://USER@HOST/DB`
    /// (several instances share it). Default `sqlite://remedy.db`.
    /// `REMEDY_JOURNAL` overrides it.
    #[serde(default)]
    pub url: JournalUrl,
    /// How long the input (signals, with when each was taken in) is kept
    /// for `replay --journal`. Default "7d".
    #[serde(default = "default_keep_inputs")]
    pub keep_inputs: remedy_engine::Duration,
}

fn default_keep_inputs() -> remedy_engine::Duration {
    crate::service::journal::KEEP_INPUTS
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            url: JournalUrl::default(),
            keep_inputs: default_keep_inputs(),
        }
    }
}

/// A journal's URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (its connection URL, password included).
    Postgres(String),
}

impl std::fmt::Display for JournalUrl {
    /// Where it is, without a password (for messages and logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalUrl::Sqlite(path) => write!(f, "{}", path.display()),
            JournalUrl::Postgres(url) => f.write_str(&crate::service::postgres::redacted(url)),
        }
    }
}

impl Default for JournalUrl {
    fn default() -> Self {
        JournalUrl::Sqlite(PathBuf::from("remedy.db"))
    }
}

impl std::str::FromStr for JournalUrl {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(format!("{url:?}: give the file, e.g. sqlite://remedy.db"));
            }
            return Ok(JournalUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(JournalUrl::Postgres(url.to_string()));
        }
        Err(format!(
            "{:?}: expected sqlite://PATH or postgres://USER@HOST/DATABASE",
            crate::service::postgres::redacted(url)
        ))
    }
}

impl<'de> Deserialize<'de> for JournalUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The keys every `[actions.NAME]` has, whatever its executor.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSection {
    /// kubernetes | kafka | http | exec | log. Default: log.
    #[serde(default)]
    pub executor: ExecutorKind,
    /// What the action does: for the kubernetes executor `cordon`,
    /// `uncordon` or `drain`; for any executor it sets the defaults of
    /// `disruptive` and `restores`. Default: the action's name.
    #[serde(default)]
    pub op: Option<String>,
    /// Counts against the storm budgets. Default: true for the ops cordon,
    /// drain, reinstall, restart, reboot, power_cycle and upgrade.
    #[serde(default)]
    pub disruptive: Option<bool>,
    /// Undoes a disruptive action (uncordon-like): waits while another
    /// fault keeps the node out. Default: true for the op uncordon.
    #[serde(default)]
    pub restores: Option<bool>,
    /// Fleet-wide quota, e.g. `20/min` (burst = the count).
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Quota per failure domain: `{ label = "rack", rate = "2/hour" }`.
    #[serde(default)]
    pub per: Option<PerDomain>,
    /// Transient failures (connection refused or reset, timeout, 5xx, 429)
    /// are tried again with backoff for this long after the first try; a
    /// permanent one is final at once. Default 10m; "0s": never again.
    #[serde(default)]
    pub retry_for: Option<Duration>,
}

/// The keys of [`ActionSection`]; every other key is the executor's.
const COMMON_ACTION_KEYS: [&str; 7] = [
    "executor",
    "op",
    "disruptive",
    "restores",
    "rate",
    "per",
    "retry_for",
];

/// One `[actions.NAME]`, typed.
#[derive(Clone, Debug)]
pub struct Action {
    /// What it does (`op`).
    pub op: String,
    /// Whether it counts against budgets or undoes a disruptive action.
    pub kind: ActionKind,
    /// Its executor and the executor's settings.
    pub executor: ExecutorConfig,
    /// Fleet-wide quota.
    pub rate: Option<Rate>,
    /// Quota per failure domain.
    pub per: Option<PerDomain>,
    /// How long transient failures are tried again.
    pub retry_for: Duration,
}

/// `per = { label, rate }`.
#[derive(Clone, Debug, Deserialize)]
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
    /// Circuit breaker per executor instance (failsafe). Default 5
    /// failures in 60s, 120s cooldown.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Flap detection, read here as well for configs written before
    /// `[lifecycle] flap` (where it acts); give it in one place only.
    #[serde(default)]
    pub flap: Option<Flap>,
    /// `[[guards.levels]]`: nested failure domains (rack, zone, cluster,
    /// ...), each with its own budget; an action must fit every level.
    #[serde(default)]
    pub levels: Vec<LevelSection>,
    /// `[guards.fleet]`: the budget of the whole fleet.
    #[serde(default)]
    pub fleet: Option<LevelSection>,
}

/// One `[[guards.levels]]` entry, or `[guards.fleet]` (which has no label).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelSection {
    /// The label whose values are this level's domains (`rack`, `zone`,
    /// ...); required in `[[guards.levels]]`, not given in `[guards.fleet]`.
    #[serde(default)]
    pub label: Option<String>,
    /// Nodes under remediation at once per domain: a count or `"N%"` of
    /// its known nodes.
    #[serde(default, deserialize_with = "de_budget")]
    pub max_unhealthy: Option<Budget>,
    /// Disruptive actions executing at once per domain.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Disruptive actions started per period, per domain (`"4/hour"`).
    #[serde(default)]
    pub rate: Option<remedy_actions::Rate>,
}

impl LevelSection {
    fn level(&self) -> remedy_actions::Level {
        remedy_actions::Level {
            label: self.label.clone(),
            max_unhealthy: self.max_unhealthy,
            max_in_flight: self.max_in_flight,
            rate: self.rate,
        }
    }
}

impl Default for GuardsSection {
    fn default() -> Self {
        toml::from_str("").expect("the empty [guards] is valid")
    }
}

/// `[lifecycle]`: how faults open, flap and resolve.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSection {
    /// A fault that opens more than `opens` times within `window` is
    /// flapping: held open, flagged. Default: more than 3 opens within 1h.
    #[serde(default)]
    pub flap: Option<Flap>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9477))
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
        Config::parse("").expect("the empty config is valid")
    }
}

/// The shortest bearer token accepted: one guessable in a few tries is none.
pub const MIN_TOKEN: usize = 16;

/// Why a config file could not be used.
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
    /// A key or value is wrong.
    #[error("config {}:{line}:{column}: {key}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where (from 1).
        line: usize,
        /// Where (from 1).
        column: usize,
        /// The key, as a dotted path (`actions.cordon.rate`).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A line of the `[identity] file` is wrong.
    #[error("aliases {}:{line}: {message}", path.display())]
    Aliases {
        /// The file.
        path: PathBuf,
        /// Where (from 1; 0 when the file cannot be read).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An environment override is wrong.
    #[error("{var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The `alias,node` lines of an alias file; blank lines and `#` comments
/// are skipped. An error names the file and line.
fn read_aliases(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let bad = |line: usize, message: String| ConfigError::Aliases {
        path: path.to_path_buf(),
        line,
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(0, e.to_string()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        match fields[..] {
            [alias, node] if !alias.is_empty() && !node.is_empty() && alias != node => {
                out.push((alias.to_string(), node.to_string()));
            }
            [alias, node] if alias == node && !alias.is_empty() => {
                return Err(bad(
                    i + 1,
                    format!("{alias:?} is given as an alias of itself"),
                ))
            }
            _ => return Err(bad(i + 1, format!("expected `alias,node`, found {line:?}"))),
        }
    }
    Ok(out)
}

/// The keys each `[faults.NAME]` table of `text` writes (the text parsed
/// once more as plain TOML; it already parsed as the config).
fn given_fault_keys(text: &str) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return BTreeMap::new();
    };
    let Some(toml::Value::Table(faults)) = table.get("faults") else {
        return BTreeMap::new();
    };
    faults
        .iter()
        .filter_map(|(name, v)| {
            v.as_table()
                .map(|t| (name.clone(), t.keys().cloned().collect()))
        })
        .collect()
}

/// A problem at a byte range of the text, before it is placed.
struct Problem {
    at: std::ops::Range<usize>,
    key: Option<String>,
    message: String,
}

impl Problem {
    fn place(self, path: &Path, text: &str) -> ConfigError {
        let (line, column) = line_col(text, self.at.start);
        let key = self.key.unwrap_or_else(|| key_at(text, self.at.start));
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            key,
            message: self.message,
        }
    }
}

impl Config {
    /// Reads, types and checks a config file; `rules` is resolved against
    /// its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse_from(&text, path)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        if config.rules.is_relative() {
            config.rules = dir.join(&config.rules);
        }
        if let Some(file) = &mut config.identity.file {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
            config.identity.aliases = read_aliases(file)?;
        }
        Ok(config)
    }

    /// Types and checks config text; the error is one line naming line,
    /// column and key (the file shows as `<config>`).
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_from(text, Path::new("<config>")).map_err(|e| e.to_string())
    }

    fn parse_from(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            Problem {
                at: e.span().unwrap_or(0..0),
                key: None,
                message: e.message().trim().replace('\n', " "),
            }
            .place(path, text)
        })?;
        let given = given_fault_keys(text);
        config.resolve(&given).map_err(|p| p.place(path, text))?;
        Ok(config)
    }

    /// Types what serde could not on its own: each action's executor
    /// settings, and the action names policies use.
    fn resolve(
        &mut self,
        given: &BTreeMap<String, std::collections::BTreeSet<String>>,
    ) -> Result<(), Problem> {
        if let (Some(_), Some(_)) = (&self.guards.flap, &self.lifecycle.flap) {
            return Err(Problem {
                at: 0..0,
                key: Some("guards.flap".into()),
                message:
                    "flap is given in [guards] and in [lifecycle]: keep it in [lifecycle] only"
                        .into(),
            });
        }
        let brokers = self.kafka.as_ref().map(|k| k.brokers.clone());
        for (name, raw) in std::mem::take(&mut self.raw_actions) {
            let action = resolve_action(&name, raw, brokers.as_deref())?;
            self.actions.insert(name, action);
        }
        let urls = (self.prometheus.iter().map(|c| ("prometheus.url", &c.url)))
            .chain(self.scrape.iter().map(|c| ("scrape.url", &c.url)));
        for (key, url) in urls {
            check_url(url).map_err(|message| Problem {
                at: 0..0,
                key: Some(key.into()),
                message,
            })?;
        }
        for (i, l) in self.guards.levels.iter().enumerate() {
            if l.label.is_none() {
                return Err(Problem {
                    at: 0..0,
                    key: Some(format!("guards.levels[{i}]")),
                    message: "give the level's label (rack, zone, cluster, ...); the fleet is [guards.fleet]".into(),
                });
            }
        }
        if let Some(label) = self.guards.fleet.as_ref().and_then(|f| f.label.as_ref()) {
            return Err(Problem {
                at: 0..0,
                key: Some("guards.fleet.label".into()),
                message: format!("the fleet has no label ({label:?}): use [[guards.levels]] for a level of domains"),
            });
        }
        for (i, c) in self.correlate.iter().enumerate() {
            let problem = |message: String| Problem {
                at: 0..0,
                key: Some(format!("correlate[{i}]")),
                message,
            };
            if c.faults.is_empty() {
                return Err(problem(
                    "faults is empty: list fault classes, or \"*\" for any".into(),
                ));
            }
            if c.min_nodes.is_none() && c.min_share.is_none() {
                return Err(problem(
                    "give min_nodes or min_share (either opens it)".into(),
                ));
            }
            if c.within.0 <= 0 {
                return Err(problem("within must be longer than 0s".into()));
            }
            if c.faults.contains(&c.fault) {
                return Err(problem(format!(
                    "fault {:?} cannot count towards itself",
                    c.fault
                )));
            }
        }
        let written: Vec<_> = self
            .raw_node_classes
            .iter()
            .map(|c| c.get_ref().clone())
            .collect();
        self.node_classes =
            remedy_engine::desired::compile(&written).map_err(|(first, problems)| Problem {
                // The first class with a problem: its table's line.
                at: self.raw_node_classes[first].span(),
                key: Some(format!("node_class[{first}]")),
                message: problems.join("; "),
            })?;
        for (i, c) in self.node_classes.iter().enumerate() {
            let action = &c.upgrade;
            if !self.actions.contains_key(action) && !BUILT_IN.contains(&action.as_str()) {
                return Err(Problem {
                    at: self.raw_node_classes[i].span(),
                    key: Some(format!("node_class[{i}].upgrade")),
                    message: format!(
                        "[[node_class]] {:?}: unknown upgrade action {action:?}: define [actions.{action}] or use a built-in action",
                        c.name
                    ),
                });
            }
        }
        if self.silences.iter().any(Silence::matches_everything) {
            return Err(Problem {
                at: 0..0,
                key: Some("silences".into()),
                message: "a silence without node, fault or labels silences the whole fleet: \
                          give a matcher, or all = true if that is meant"
                    .into(),
            });
        }
        let sources = (self.prometheus.iter().map(|c| ("prometheus", c.check())))
            .chain(self.scrape.iter().map(|c| ("scrape", c.check())));
        for (key, checked) in sources {
            checked.map_err(|message| Problem {
                at: 0..0,
                key: Some(key.into()),
                message,
            })?;
        }
        let embedded = remedy_engine::Policies::default();
        for (fault, policy) in std::mem::take(&mut self.raw_faults) {
            let at = policy.span();
            let mut policy = policy.into_inner();
            // Keys not written keep the class's embedded default.
            if let Some(keys) = given.get(&fault) {
                policy.keep_defaults(embedded.get(&fault), keys);
            }
            let named = policy
                .actions
                .iter()
                .map(|a| ("actions", a))
                .chain(
                    policy
                        .escalate
                        .iter()
                        .flat_map(|e| e.actions.iter().map(|a| ("escalate", a))),
                )
                .chain(policy.on_resolve.iter().map(|a| ("on_resolve", a)))
                .chain(
                    policy
                        .max_attempts
                        .iter()
                        .flat_map(|m| m.then.iter().map(|a| ("max_attempts", a))),
                );
            for (key, action) in named {
                if !self.actions.contains_key(action) && !BUILT_IN.contains(&action.as_str()) {
                    return Err(Problem {
                        at: at.clone(),
                        key: Some(format!("faults.{fault}.{key}")),
                        message: format!(
                            "unknown action {action:?}: define [actions.{action}] or use a built-in action ({})",
                            BUILT_IN.join(", ")
                        ),
                    });
                }
            }
            if let Some(d) = &policy.demote {
                if !(0.0..=1.0).contains(&d.below) || d.min_runs == 0 {
                    return Err(Problem {
                        at: at.clone(),
                        key: Some(format!("faults.{fault}.demote")),
                        message: format!(
                            "below = {} and min_runs = {}: below is a success rate from 0 to 1 and min_runs at least 1",
                            d.below, d.min_runs
                        ),
                    });
                }
            }
            self.faults.insert(fault, policy);
        }
        Ok(())
    }

    /// Applies the `REMEDY_*` environment overrides the service honours:
    /// `REMEDY_RULES`, `REMEDY_LISTEN`, `REMEDY_JOURNAL` (and
    /// `REMEDY_TOKEN`, read by [`Config::token`]).
    pub fn with_env(mut self) -> Result<Self, ConfigError> {
        if let Some(rules) = std::env::var_os("REMEDY_RULES") {
            self.rules = PathBuf::from(rules);
        }
        if let Ok(listen) = std::env::var("REMEDY_LISTEN") {
            self.http.listen = listen.parse().map_err(|_| ConfigError::Env {
                var: "REMEDY_LISTEN",
                message: format!("{listen:?} is not an address like 127.0.0.1:9477"),
            })?;
        }
        if let Ok(url) = std::env::var("REMEDY_JOURNAL") {
            self.journal.url = url.parse().map_err(|message| ConfigError::Env {
                var: "REMEDY_JOURNAL",
                message,
            })?;
        }
        Ok(self)
    }

    /// The bearer token `/v1/*` requires: `REMEDY_TOKEN`, else the
    /// contents of `[http] token_file`; `None` when neither is set.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(t) = std::env::var("REMEDY_TOKEN").ok().filter(|t| !t.is_empty()) {
            let t = t.trim().to_string();
            if t.chars().count() < MIN_TOKEN {
                return Err(ConfigError::Env {
                    var: "REMEDY_TOKEN",
                    message: format!("too short: at least {MIN_TOKEN} characters"),
                });
            }
            return Ok(Some(t));
        }
        let Some(path) = &self.http.token_file else {
            return Ok(None);
        };
        let bad = |message: String| ConfigError::Env {
            var: "[http] token_file",
            message,
        };
        let t =
            std::fs::read_to_string(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            return Err(bad(format!("{} is empty", path.display())));
        }
        if t.chars().count() < MIN_TOKEN {
            return Err(bad(format!(
                "{}: too short, at least {MIN_TOKEN} characters",
                path.display()
            )));
        }
        Ok(Some(t))
    }

    /// The Kubernetes client settings `[identity] kubernetes` uses, when it
    /// is on: those of the first `kubernetes` action, else the defaults.
    pub fn node_directory(&self) -> Option<remedy_actions::executors::kubernetes::Config> {
        if !self.identity.kubernetes {
            return None;
        }
        let first = self.actions.values().find_map(|a| match &a.executor {
            remedy_actions::ExecutorConfig::Kubernetes(c) => Some(c.clone()),
            _ => None,
        });
        Some(first.unwrap_or_default())
    }

    /// The engine's policies: the embedded ones, with `[faults.*]` replacing per class.
    pub fn policies(&self) -> remedy_engine::Policies {
        remedy_engine::Policies::from_config(self.faults.clone())
    }

    /// The engine's options: flap detection from `[lifecycle]` (or the
    /// older `[guards] flap`).
    pub fn engine_options(&self) -> remedy_engine::Options {
        remedy_engine::Options {
            flap: self.lifecycle.flap.or(self.guards.flap).unwrap_or_default(),
            alias_labels: self.identity.alias_labels.clone(),
            forget_after: Some(self.limits.forget_after).filter(|d| d.0 > 0),
            efficacy_by: self.efficacy.by.clone(),
            node_classes: self.node_classes.clone(),
            correlations: self
                .correlate
                .iter()
                .map(|c| remedy_engine::Correlation {
                    label: c.label.clone(),
                    faults: c.faults.clone(),
                    min_nodes: c.min_nodes,
                    min_share: c.min_share,
                    within: c.within,
                    fault: c.fault.clone(),
                    hold: c.hold,
                })
                .collect(),
            ..remedy_engine::Options::default()
        }
    }

    /// The guard chain's settings and what it knows of each action.
    pub fn guards(&self) -> (GuardConfig, BTreeMap<String, ActionGuards>) {
        let g = &self.guards;
        let config = GuardConfig {
            max_unhealthy: g.max_unhealthy,
            domain: g.domain.clone(),
            storm_recovery: g.storm_recovery,
            breaker: g.breaker,
            dry_run: self.dry_run,
            levels: g
                .levels
                .iter()
                .chain(&g.fleet)
                .map(LevelSection::level)
                .collect(),
            settle: self
                .correlate
                .iter()
                .filter(|c| c.settle.0 > 0)
                .map(|c| remedy_actions::guards::Settle {
                    label: c.label.clone(),
                    faults: c.faults.clone(),
                    wait: c.settle,
                })
                .collect(),
        };
        let actions = self
            .actions
            .iter()
            .map(|(name, a)| {
                let guards = ActionGuards {
                    executor: a.executor.kind().as_str().to_string(),
                    kind: a.kind,
                    rate: a.rate,
                    per: a.per.as_ref().map(|p| (p.label.clone(), p.rate)),
                    retry_for: a.retry_for,
                };
                (name.clone(), guards)
            })
            .collect();
        (config, actions)
    }

    /// The executor of every `[actions.NAME]`.
    pub fn executor_specs(&self) -> Vec<Spec> {
        self.actions
            .iter()
            .map(|(name, a)| Spec {
                action: name.clone(),
                op: a.op.clone(),
                config: a.executor.clone(),
            })
            .collect()
    }
}

/// Types one `[actions.NAME]`: its common keys, then its executor's own.
fn resolve_action(
    name: &str,
    raw: Spanned<RawTable>,
    brokers: Option<&str>,
) -> Result<Action, Problem> {
    let header = raw.span();
    let raw = raw.into_inner();
    let spans: BTreeMap<String, std::ops::Range<usize>> = raw
        .iter()
        .map(|(k, v)| (k.get_ref().clone(), k.span().start..v.span().end))
        .collect();
    let (mut common, mut own) = (toml::Table::new(), toml::Table::new());
    for (k, v) in raw {
        let (k, v) = (k.into_inner(), v.into_inner());
        if COMMON_ACTION_KEYS.contains(&k.as_str()) {
            common.insert(k, v);
        } else {
            own.insert(k, v);
        }
    }
    // serde names the key in its message (`unknown field `x`` or `... in `x``).
    let problem = |message: String, fallback: Option<&str>| {
        let key = spans
            .keys()
            .find(|k| message.contains(&format!("`{k}`")))
            .map(String::as_str)
            .or(fallback);
        Problem {
            at: key
                .and_then(|k| spans.get(k))
                .cloned()
                .unwrap_or(header.clone()),
            key: Some(match key {
                Some(k) => format!("actions.{name}.{k}"),
                None => format!("actions.{name}"),
            }),
            message: first_line(&message),
        }
    };
    let section = ActionSection::deserialize(toml::Value::Table(common))
        .map_err(|e| problem(e.to_string(), None))?;
    if section.executor == ExecutorKind::Kafka && !own.contains_key("brokers") {
        if let Some(b) = brokers {
            own.insert("brokers".into(), toml::Value::String(b.to_string()));
        }
    }
    let executor = ExecutorConfig::from_table(section.executor, own)
        .map_err(|e| problem(e.to_string(), None))?;
    let op = section.op.clone().unwrap_or_else(|| name.to_string());
    executor.check(name, &op).map_err(|e| {
        let key = e.message.split(':').next().unwrap_or("").trim().to_string();
        let known = spans.contains_key(&key) || COMMON_ACTION_KEYS.contains(&key.as_str());
        problem(
            e.message.clone(),
            if known { Some(key.as_str()) } else { None },
        )
    })?;
    let defaults = ActionKind::of_op(&op);
    Ok(Action {
        kind: ActionKind {
            disruptive: section.disruptive.unwrap_or(defaults.disruptive),
            restores: section.restores.unwrap_or(defaults.restores),
        },
        op,
        executor,
        rate: section.rate,
        per: section.per,
        retry_for: section.retry_for.unwrap_or(remedy_actions::RETRY_FOR),
    })
}

/// An absolute http(s) URL with a host.
fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "{url:?}: expected an http:// or https:// URL with a host, not {}:",
            u.scheme()
        )),
        Err(e) => Err(format!("{url:?} is not a URL: {e}")),
    }
}

fn first_line(message: &str) -> String {
    message.trim().lines().next().unwrap_or("").to_string()
}

/// Line and column (from 1) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// The table a header line names (`[faults."x"]` is `faults.x`, `[[scrape]]` is `scrape`).
fn header(line: &str) -> Option<String> {
    line.starts_with('[').then(|| {
        line.trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim()
            .replace('"', "")
    })
}

/// The dotted key at a byte offset: the table header above it and the key
/// on its line (`faults.disk_failure.for`).
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let mut table = String::new();
    for l in text[..line_start].lines().rev() {
        let l = l.trim();
        if let Some(name) = header(l) {
            table = name;
            break;
        }
    }
    let line = line.trim();
    if let Some(name) = header(line) {
        return name;
    }
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
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
            c.scrape[0].metrics["node_pressure_memory_waiting_seconds_total"].r#type,
            "memory.pressure"
        );
        assert_eq!(c.scrape[0].every, "15s".parse().unwrap());
        assert_eq!(c.policies().get("memory_failure").on_resolve, ["uncordon"]);
        assert_eq!(
            c.actions["cordon"].executor.kind(),
            ExecutorKind::Kubernetes
        );
        assert_eq!(c.actions["reinstall"].executor.kind(), ExecutorKind::Kafka);
        assert_eq!(
            c.journal.url,
            JournalUrl::Sqlite(PathBuf::from("remedy.db"))
        );
        assert_eq!(c.http.listen, default_listen());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_line_column_and_key() {
        let e = Config::parse("rulez = \"x\"").unwrap_err();
        assert!(e.contains(":1:1: rulez: unknown field `rulez`"), "{e}");
        let e = Config::parse("[faults.disk_failure]\nfor = \"ten minutes\"").unwrap_err();
        assert!(
            e.contains(":2:7: faults.disk_failure.for: invalid duration"),
            "{e}"
        );
        let e = Config::parse("[faults.disk_failure]\nactons = []").unwrap_err();
        assert!(e.contains("unknown field `actons`"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    /// One unknown key in every section: each is refused, naming its line and key.
    #[test]
    fn an_unknown_key_in_any_section_is_refused() {
        let cases = [
            ("[http]\ntokn_file = \"t\"", "2:1: http.tokn_file"),
            ("[journal]\nulr = \"sqlite://x.db\"", "2:1: journal.ulr"),
            ("[limits]\nmax_skw = \"1m\"", "2:1: limits.max_skw"),
            (
                "[kafka]\nbrokers = \"b:9092\"\ngroupp = \"g\"",
                "3:1: kafka.groupp",
            ),
            (
                "[[prometheus]]\nurl = \"http://p:9090\"\nquery = \"up\"\ntype = \"t\"\nevery = \"1m\"\nqury = \"x\"",
                "6:1: prometheus.qury",
            ),
            (
                "[[scrape]]\nurl = \"http://n:9100/metrics\"\nevery = \"15s\"\nnode = \"n\"\nmetrics = {}\nnod = \"x\"",
                "6:1: scrape.nod",
            ),
            ("[faults.x]\nactons = []", "2:1: faults.x.actons"),
            ("[actions.cordon]\nratee = \"20/min\"", "2:1: actions.cordon.ratee"),
            (
                "[actions.t]\nexecutor = \"http\"\nurl = \"http://t/\"\nheader = {}",
                "4:1: actions.t.header",
            ),
            ("[guards]\nbudget = 5", "2:1: guards.budget"),
            ("[lifecycle]\nflapp = {}", "2:1: lifecycle.flapp"),
            (
                "[[silences]]\nuntil = \"2026-12-01T00:00:00Z\"\nnod = \"n1\"",
                "3:1: silences.nod",
            ),
        ];
        for (text, expected) in cases {
            let e = Config::parse(text).unwrap_err();
            assert!(
                e.contains(expected) && e.contains("unknown field"),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn an_alias_file_is_read_beside_the_config_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("remedy.toml");
        std::fs::write(&config, "[identity]\nfile = \"nodes.csv\"\n").unwrap();
        std::fs::write(
            dir.path().join("nodes.csv"),
            "# alias,node\n\n10.0.0.7, worker-7\nbmc-7,worker-7\n",
        )
        .unwrap();
        let c = Config::load(&config).unwrap();
        assert_eq!(
            c.identity.aliases,
            [
                ("10.0.0.7".to_string(), "worker-7".to_string()),
                ("bmc-7".into(), "worker-7".into())
            ]
        );
        std::fs::write(
            dir.path().join("nodes.csv"),
            "10.0.0.7,worker-7\nworker-8\n",
        )
        .unwrap();
        let e = Config::load(&config).unwrap_err().to_string();
        assert!(
            e.starts_with("aliases ") && e.contains("nodes.csv:2: expected `alias,node`"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("nodes.csv")).unwrap();
        let e = Config::load(&config).unwrap_err().to_string();
        assert!(e.contains("nodes.csv:0:"), "{e}");
    }

    /// A `[faults.X]` table sets the keys it writes; the others keep the
    /// class's embedded default (`for` alone does not drop the actions).
    #[test]
    fn a_fault_table_keeps_the_defaults_of_the_keys_it_does_not_write() {
        let c = Config::parse(
            "[faults.memory_failure]\nfor = \"5m\"\n\n[faults.disk_failure]\nactions = [\"ticket\"]\nescalate = []\n",
        )
        .unwrap();
        let p = c.policies();
        let memory = p.get("memory_failure");
        assert_eq!(memory.hold, "5m".parse().unwrap());
        assert_eq!(memory.actions, ["cordon", "ticket"], "kept");
        assert_eq!(memory.on_resolve, ["uncordon"], "kept");
        assert_eq!(memory.escalate.len(), 1, "kept");
        let disk = p.get("disk_failure");
        assert_eq!(disk.actions, ["ticket"]);
        assert!(disk.escalate.is_empty(), "written as empty");
        assert_eq!(disk.on_resolve, ["uncordon"], "kept");
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let cases = [
            (
                "[actions.cordon]\nrate = \"20 a minute\"",
                "actions.cordon.rate",
                "invalid rate",
            ),
            (
                "[actions.t]\nexecutor = \"http\"\nurl = \"not a url\"",
                "actions.t.url",
                "not a URL",
            ),
            (
                "[actions.t]\nexecutor = \"exec\"\ncommand = [\"x\"]\ntimeout = \"soon\"",
                "actions.t.timeout",
                "invalid duration",
            ),
            (
                "[http]\nlisten = \"everywhere\"",
                "http.listen",
                "invalid socket address",
            ),
            (
                "[journal]\nurl = \"remedy.db\"",
                "journal.url",
                "expected sqlite://PATH",
            ),
            (
                "[[prometheus]]\nurl = \"ftp://p\"\nquery = \"up\"\ntype = \"t\"\nevery = \"1m\"",
                "prometheus.url",
                "expected an http",
            ),
            (
                "[[scrape]]\nurl = \"http://n:9100/metrics\"\nevery = \"1m\"\nnode = \"n\"\npreset = \"smartctl\"",
                "scrape.preset",
                "unknown preset \"smartctl\" (known presets: node-edac, node-mdraid, node-hwmon, smartmon, nvme, ipmi, node-problem-detector)",
            ),
            (
                "[[scrape]]\nurl = \"http://n:9100/metrics\"\nevery = \"1m\"\nnode = \"n\"",
                "scrape",
                "give `metrics` (metric name -> signal type) or `preset`",
            ),
            (
                "[[scrape]]\nurl = \"http://n:9100/metrics\"\nevery = \"1m\"\nnode = \"n\"\npreset = \"ipmi\"\nmetrics = { up = \"x\" }",
                "scrape",
                "not both",
            ),
            (
                "[[prometheus]]\nurl = \"http://p:9090\"\nevery = \"1m\"\npreset = \"node-edac\"\nquery = \"up\"",
                "prometheus",
                "brings its own query",
            ),
            (
                "[[prometheus]]\nurl = \"http://p:9090\"\nevery = \"1m\"\nquery = \"up\"",
                "prometheus",
                "`type` is missing",
            ),
            (
                "[[silences]]\nuntil = \"2026-12-01T00:00:00Z\"\ncomment = \"oops\"",
                "silences",
                "silences the whole fleet",
            ),
            (
                "[identity]\nalias_label = [\"instance\"]",
                "identity.alias_label",
                "unknown field",
            ),
            (
                "[actions.x]\nexecutor = \"kubernets\"",
                "actions.x.executor",
                "unknown variant",
            ),
            (
                "[actions.evacuate]\nexecutor = \"kubernetes\"\nop = \"evict\"",
                "actions.evacuate.op",
                "not an operation",
            ),
            (
                "[faults.disk_failure]\nactions = [\"cordn\"]",
                "faults.disk_failure.actions",
                "unknown action \"cordn\"",
            ),
            (
                "[faults.disk_failure]\nmax_attempts = { count = 3, within = \"7d\", then = [\"tiket\"] }",
                "faults.disk_failure.max_attempts",
                "unknown action \"tiket\"",
            ),
            (
                "[faults.disk_failure]\nmax_attempts = { count = 3, within = \"a week\" }",
                "faults.disk_failure.max_attempts",
                "invalid duration",
            ),
            (
                "[actions.cordon]\nretry_for = \"ten minutes\"",
                "actions.cordon.retry_for",
                "invalid duration",
            ),
            (
                "[faults.disk_failure]\nescalate = [{ after = \"1h\", actions = [\"reimage\"] }]",
                "faults.disk_failure.escalate",
                "unknown action \"reimage\"",
            ),
            (
                "[faults.disk_failure]\ndemote = { below = 20, min_runs = 20 }",
                "faults.disk_failure.demote",
                "below is a success rate from 0 to 1",
            ),
        ];
        for (text, key, message) in cases {
            let e = Config::parse(text).unwrap_err();
            assert!(
                e.contains(&format!(": {key}: ")) && e.contains(message),
                "{text:?}: {e}"
            );
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn an_actions_kind_comes_from_its_op_and_its_own_keys_never_its_name() {
        let c = Config::parse(
            "[actions.evacuate]\nexecutor = \"kubernetes\"\nop = \"drain\"\n\
             [actions.back]\nexecutor = \"kubernetes\"\nop = \"uncordon\"\n\
             [actions.cordon]\nexecutor = \"http\"\nurl = \"http://t/\"\nop = \"ticket\"\n\
             [actions.reimage]\nexecutor = \"kafka\"\ntopic = \"c\"\nbrokers = \"b:9092\"\nop = \"reinstall\"\n\
             [actions.page]\nexecutor = \"http\"\nurl = \"http://t/\"\ndisruptive = true\n\
             [actions.restart]\nexecutor = \"exec\"\ncommand = [\"x\"]\ndisruptive = false",
        )
        .unwrap();
        let kind = |a: &str| c.actions[a].kind;
        assert_eq!(
            kind("evacuate"),
            ActionKind {
                disruptive: true,
                restores: false
            }
        );
        assert_eq!(
            kind("back"),
            ActionKind {
                disruptive: false,
                restores: true
            }
        );
        assert_eq!(
            kind("cordon"),
            ActionKind::default(),
            "named cordon, does a ticket"
        );
        assert!(kind("reimage").disruptive);
        assert!(kind("page").disruptive, "said so explicitly");
        assert!(!kind("restart").disruptive, "said so explicitly");
        let (_, guards) = c.guards();
        assert_eq!(guards["evacuate"].kind, kind("evacuate"));
        assert_eq!(guards["evacuate"].executor, "kubernetes");
        // Built-ins without a section: the kind of their name, the log executor.
        assert!(ActionKind::of_op("drain").disruptive);
        assert_eq!(ActionKind::of_op("notify"), ActionKind::default());
    }

    #[test]
    fn the_empty_config_is_the_embedded_default() {
        let c = Config::default();
        assert_eq!(c.rules, PathBuf::from("rules"));
        assert!(c.dry_run);
        assert_eq!(c.policies(), remedy_engine::Policies::default());
        assert!(c.actions.is_empty());
    }

    #[test]
    fn guards_and_actions_parse_and_unset_keys_keep_their_defaults() {
        let c = Config::parse(
            "[guards]\nmax_unhealthy = 25\ndomain = \"rack\"\nstorm_recovery = \"5m\"\n\
             breaker = { failures = 3 }\n\
             [lifecycle]\nflap = { opens = 5 }\n\
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
        let flap = c.engine_options().flap;
        assert_eq!((flap.opens, flap.window), (5, "1h".parse().unwrap()));
        assert_eq!(actions["cordon"].rate.unwrap().to_string(), "20/min");
        assert_eq!(actions["cordon"].per.as_ref().unwrap().0, "rack");
        assert_eq!(c.silences[0].node.as_deref(), Some("n1"));

        let old = Config::parse("[guards]\nflap = { opens = 7 }").unwrap();
        assert_eq!(
            old.engine_options().flap.opens,
            7,
            "the older place still works"
        );
        let both =
            Config::parse("[guards]\nflap = { opens = 7 }\n[lifecycle]\nflap = { opens = 2 }");
        assert!(both.unwrap_err().contains("keep it in [lifecycle] only"));

        assert_eq!(
            Config::default().guards().0.max_unhealthy,
            Some(Budget::Percent(5.0))
        );
        let off = Config::parse("[guards]\nmax_unhealthy = \"none\"").unwrap();
        assert_eq!(off.guards().0.max_unhealthy, None);
        let e = Config::parse("[guards]\nmax_unhealthy = \"five percent\"").unwrap_err();
        assert!(
            e.contains(":2:17: guards.max_unhealthy: invalid max_unhealthy"),
            "{e}"
        );
        let e = Config::parse("[[silences]]\nnode = \"n1\"").unwrap_err();
        assert!(e.contains("missing field `until`"), "{e}");
    }

    #[test]
    fn a_kafka_action_takes_the_brokers_of_the_kafka_section() {
        let c = Config::parse(
            "[kafka]\nbrokers = \"k:9092\"\n[actions.reinstall]\nexecutor = \"kafka\"\ntopic = \"cmd\"",
        )
        .unwrap();
        match &c.actions["reinstall"].executor {
            ExecutorConfig::Kafka(k) => assert_eq!(k.brokers.as_deref(), Some("k:9092")),
            other => panic!("{other:?}"),
        }
        let e = Config::parse("[actions.reinstall]\nexecutor = \"kafka\"\ntopic = \"cmd\"")
            .unwrap_err();
        assert!(
            e.contains("actions.reinstall: brokers: not set here"),
            "{e}"
        );
    }
}
