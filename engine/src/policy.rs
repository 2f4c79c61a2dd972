//! Policy: what to do about each fault class (`[faults.NAME]` in the config,
//! `[faults."*"]` as the default): how long the condition must persist before
//! the fault opens (`for`), the actions on open, the escalation ladder while
//! it stays open, the actions when it resolves, and whether an operator must
//! approve. Flap detection is global (`[guards] flap`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Duration;

/// What to do about one fault class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Open only after signals keep asserting the fault this long (each
    /// within `for` of the previous one). Default 0s: open at once.
    #[serde(default, rename = "for")]
    pub hold: Duration,
    /// Actions run when the fault opens (a rule's `actions` replaces these).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Actions taken while the fault stays open, each once its `after` has passed.
    #[serde(default)]
    pub escalate: Vec<Escalation>,
    /// Actions run when the fault resolves, e.g. `uncordon`.
    #[serde(default)]
    pub on_resolve: Vec<String>,
    /// Every action of this fault waits for an operator's approval.
    #[serde(default)]
    pub approval: bool,
    /// A fault opened from a condition its source repeats (a firing alert,
    /// a gauge) that is neither re-asserted nor resolved this long is
    /// stale: disruptive actions for it wait. Default 1h; "0s": never.
    #[serde(default)]
    pub stale_after: Option<Duration>,
    /// At most `count` remediation cycles (openings) per node within
    /// `within`; past it the `then` actions (a ticket for a person) instead.
    #[serde(default)]
    pub max_attempts: Option<MaxAttempts>,
    /// `on_resolve` actions wait until the fault has stayed resolved this
    /// long; a fault back within it never got them. Default 0s.
    #[serde(default)]
    pub healthy_delay: Option<Duration>,
    /// Still open this long after its last action (executed, or dry_run in
    /// replay): that action did not help, the next rung now. Default: off.
    #[serde(default)]
    pub verify: Option<Duration>,
    /// Skip a rung whose actions rarely fix this fault (the efficacy
    /// ledger): `demote = { below = 0.2, min_runs = 20 }`. The last rung is
    /// never skipped. Default: off.
    #[serde(default)]
    pub demote: Option<Demote>,
}

/// `demote = { below = 0.2, min_runs = 20 }`: a rung whose every action
/// fixed the fault in fewer than `below` of at least `min_runs` judged
/// runs is skipped (an `action` decision `demoted` says so) for the next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demote {
    /// Success rate under which a rung is skipped (0 to 1).
    pub below: f64,
    /// Judged runs needed before the rate counts.
    pub min_runs: usize,
}

/// `max_attempts = { count = 3, within = "7d", then = ["ticket"] }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxAttempts {
    /// Openings allowed within the window.
    pub count: u32,
    /// The window.
    pub within: Duration,
    /// What to do instead once they are used up.
    #[serde(default)]
    pub then: Vec<String>,
}

impl Policy {
    /// Takes from `base` every field that `given` (the keys a config table
    /// wrote) does not name: `[faults.X] for = "5m"` keeps X's default
    /// actions instead of dropping them.
    pub fn keep_defaults(&mut self, base: &Policy, given: &std::collections::BTreeSet<String>) {
        let kept = |key: &str| !given.contains(key);
        if kept("for") {
            self.hold = base.hold;
        }
        if kept("actions") {
            self.actions.clone_from(&base.actions);
        }
        if kept("escalate") {
            self.escalate.clone_from(&base.escalate);
        }
        if kept("on_resolve") {
            self.on_resolve.clone_from(&base.on_resolve);
        }
        if kept("approval") {
            self.approval = base.approval;
        }
        if kept("stale_after") {
            self.stale_after = base.stale_after;
        }
        if kept("max_attempts") {
            self.max_attempts.clone_from(&base.max_attempts);
        }
        if kept("healthy_delay") {
            self.healthy_delay = base.healthy_delay;
        }
        if kept("verify") {
            self.verify = base.verify;
        }
        if kept("demote") {
            self.demote.clone_from(&base.demote);
        }
    }
}

/// How long a condition fault may go without re-assertion by default.
pub const STALE_AFTER: Duration = Duration(3_600_000);

impl Policy {
    /// Its `stale_after`, or the default; `None` when staleness is off.
    pub fn stale_after(&self) -> Option<Duration> {
        let after = self.stale_after.unwrap_or(STALE_AFTER);
        (after.0 > 0).then_some(after)
    }
}

/// One rung of an escalation ladder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// How long after opening.
    pub after: Duration,
    /// What to do then.
    pub actions: Vec<String>,
}

/// A fault that opens and resolves more than `opens` times within `window`
/// is flapping: it is held open (no recovery actions) and flagged, until it
/// has been quiet for a whole window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Flap {
    /// Opens allowed within the window.
    pub opens: u32,
    /// The window.
    pub window: Duration,
}

impl Default for Flap {
    fn default() -> Self {
        Flap {
            opens: 3,
            window: Duration::from_secs(3600),
        }
    }
}

/// Policies by fault class, with a default for classes not listed.
#[derive(Clone, Debug, PartialEq)]
pub struct Policies {
    by_fault: BTreeMap<String, Policy>,
    default: Policy,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn policy(actions: &[&str], on_resolve: &[&str]) -> Policy {
    Policy {
        actions: names(actions),
        on_resolve: names(on_resolve),
        ..Policy::default()
    }
}

impl Default for Policies {
    /// The embedded default for the shipped fault classes (all dry-run unless
    /// the config says `dry_run = false`):
    ///
    /// | fault | on open | escalate | on resolve |
    /// | --- | --- | --- | --- |
    /// | power, disk, memory, motherboard failure | cordon, ticket | reinstall after 4h | uncordon |
    /// | memory_degraded | ticket | | |
    /// | component_crash | restart | cordon, ticket after 30m | uncordon |
    /// | runtime_storage_corrupt (Ready, but cannot start containers) | cordon, ticket | | uncordon |
    /// | version_drift (`[[node_class]]`: then the class's upgrade per component, paced) | cordon, drain | | uncordon, once every gate held 2m |
    /// | gate_failed (a continuous readiness gate false) | cordon | | uncordon, once every gate held 2m |
    /// | node_not_ready, network_degraded, kernel_deadlock, kernel_fault, certificate_expiry | ticket | | |
    /// | clock_skew | notify | ticket after 1h | |
    /// | anything else (misconfiguration, pressure, saturation, rack power) | notify | | |
    ///
    /// No cordon for node_not_ready: Kubernetes already keeps pods off a
    /// NotReady node, and the mixin's alerts fire only for schedulable
    /// nodes, so a cordon would clear the alert and the uncordon bring it
    /// back, in a loop.
    fn default() -> Self {
        let failed = Policy {
            escalate: vec![Escalation {
                after: Duration::from_secs(4 * 3600),
                actions: names(&["reinstall"]),
            }],
            ..policy(&["cordon", "ticket"], &["uncordon"])
        };
        let crash = Policy {
            escalate: vec![Escalation {
                after: Duration::from_secs(30 * 60),
                actions: names(&["cordon", "ticket"]),
            }],
            ..policy(&["restart"], &["uncordon"])
        };
        let by_fault = [
            ("power_failure", failed.clone()),
            ("disk_failure", failed.clone()),
            ("memory_failure", failed.clone()),
            ("motherboard_failure", failed),
            ("memory_degraded", policy(&["ticket"], &[])),
            ("component_crash", crash),
            (
                "runtime_storage_corrupt",
                policy(&["cordon", "ticket"], &["uncordon"]),
            ),
            (
                crate::desired::VERSION_DRIFT,
                Policy {
                    healthy_delay: Some(Duration::from_secs(120)),
                    ..policy(&["cordon", "drain"], &["uncordon"])
                },
            ),
            (
                crate::desired::GATE_FAILED,
                Policy {
                    healthy_delay: Some(Duration::from_secs(120)),
                    ..policy(&["cordon"], &["uncordon"])
                },
            ),
            ("node_not_ready", policy(&["ticket"], &[])),
            ("network_degraded", policy(&["ticket"], &[])),
            ("kernel_deadlock", policy(&["ticket"], &[])),
            ("kernel_fault", policy(&["ticket"], &[])),
            ("certificate_expiry", policy(&["ticket"], &[])),
            (
                "clock_skew",
                Policy {
                    escalate: vec![Escalation {
                        after: Duration::from_secs(3600),
                        actions: names(&["ticket"]),
                    }],
                    ..policy(&["notify"], &[])
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Policies {
            by_fault,
            default: policy(&["notify"], &[]),
        }
    }
}

impl Policies {
    /// Builds from `[faults.*]` tables; `"*"` replaces the default, other
    /// names replace (not merge with) the embedded policy for that class.
    pub fn from_config(tables: BTreeMap<String, Policy>) -> Self {
        let mut policies = Policies::default();
        for (name, p) in tables {
            if name == "*" {
                policies.default = p;
            } else {
                policies.by_fault.insert(name, p);
            }
        }
        policies
    }

    /// The policy for a fault class.
    pub fn get(&self, fault: &str) -> &Policy {
        self.by_fault.get(fault).unwrap_or(&self.default)
    }

    /// The longest `max_attempts` window of any policy: how far back a
    /// restart must read openings. `None` when no policy caps attempts.
    pub fn attempts_window(&self) -> Option<Duration> {
        self.by_fault
            .values()
            .chain([&self.default])
            .filter_map(|p| p.max_attempts.as_ref().map(|m| m.within))
            .max_by_key(|d| d.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_classes_replace_the_defaults_and_star_sets_the_fallback() {
        let mut tables = BTreeMap::new();
        tables.insert("memory_failure".to_string(), policy(&["drain"], &[]));
        tables.insert("*".to_string(), policy(&[], &[]));
        let p = Policies::from_config(tables);
        assert_eq!(p.get("memory_failure").actions, ["drain"]);
        assert!(p.get("memory_failure").escalate.is_empty());
        assert_eq!(p.get("disk_failure").actions, ["cordon", "ticket"]);
        assert_eq!(p.get("disk_failure").escalate[0].actions, ["reinstall"]);
        assert!(p.get("high_load").actions.is_empty());
        assert_eq!(Policies::default().get("high_load").actions, ["notify"]);
    }
}
