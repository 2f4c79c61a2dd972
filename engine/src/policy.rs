//! Policy: what to do about each fault class (`[faults.NAME]` in the config,
//! `[faults."*"]` as the default). This holds the actions taken when a fault
//! opens and when it resolves; debouncing, escalation and approvals build on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What to do about one fault class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Actions run when the fault opens (a rule's `actions` replaces these).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Actions run when the fault resolves, e.g. `uncordon`.
    #[serde(default)]
    pub on_resolve: Vec<String>,
}

/// Policies by fault class, with a default for classes not listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policies {
    by_fault: BTreeMap<String, Policy>,
    default: Policy,
}

fn policy(actions: &[&str], on_resolve: &[&str]) -> Policy {
    Policy {
        actions: actions.iter().map(ToString::to_string).collect(),
        on_resolve: on_resolve.iter().map(ToString::to_string).collect(),
    }
}

impl Default for Policies {
    /// The embedded default for the shipped fault classes:
    /// failed hardware is taken out of service and ticketed for repair and put
    /// back when it clears; a degraded DIMM gets a ticket; everything else
    /// (components, resource pressure, rack events, unknown classes) notifies.
    fn default() -> Self {
        let failed = policy(&["cordon", "ticket"], &["uncordon"]);
        let by_fault = [
            ("power_failure", failed.clone()),
            ("disk_failure", failed.clone()),
            ("memory_failure", failed.clone()),
            ("motherboard_failure", failed),
            ("memory_degraded", policy(&["ticket"], &[])),
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
        assert_eq!(p.get("disk_failure").actions, ["cordon", "ticket"]);
        assert!(p.get("high_load").actions.is_empty());
        assert_eq!(Policies::default().get("high_load").actions, ["notify"]);
    }
}
