//! Node identity (contract section 7): one machine is one node, whichever
//! name a source uses for it. A static scrape names it `10.0.0.7:9100`, the
//! node exporter's alerts `10.0.0.7`, kubernetes-mixin's alerts `worker-7`:
//! [`Identity`] maps every alias to the canonical node name before the
//! engine looks at a signal, so faults, decisions, budgets and history are
//! per machine.
//!
//! Aliases come from `[identity] file` (static), are taught by signals that
//! carry a node name and an alias label (`alias_labels`, e.g. `instance`),
//! and are journaled by the service so a restart knows them. No I/O here.

use rustc_hash::FxHashMap;

use crate::signal::Signal;

/// Aliases -> canonical node names.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// Labels whose value, on a signal that names its node, is an alias of it.
    labels: Vec<String>,
    aliases: FxHashMap<String, String>,
}

/// The host part of an `instance` label: `10.0.0.7:9100` -> `10.0.0.7`,
/// `[::1]:9100` -> `::1`; a name without a port stays itself.
pub fn host_of(instance: &str) -> &str {
    if let Some(rest) = instance.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match instance.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => instance,
    }
}

impl Identity {
    /// Learns from signals carrying any of `alias_labels`.
    pub fn new(alias_labels: Vec<String>) -> Self {
        Identity {
            labels: alias_labels,
            aliases: FxHashMap::default(),
        }
    }

    /// Nothing to map and nothing to learn: the engine skips it.
    pub fn is_idle(&self) -> bool {
        self.labels.is_empty() && self.aliases.is_empty()
    }

    /// How many aliases are known.
    pub fn len(&self) -> usize {
        self.aliases.len()
    }

    /// No alias known.
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty()
    }

    /// The canonical name of `name`, if it is an alias.
    pub fn canonical(&self, name: &str) -> Option<&str> {
        self.aliases.get(name).map(String::as_str)
    }

    /// Declares `alias` a name of `node`; true when that is new (an alias
    /// that named another node before now names this one: addresses are
    /// reused). A node is never its own alias, and an alias of an alias
    /// points at the canonical name.
    pub fn insert(&mut self, alias: &str, node: &str) -> bool {
        let node = self.canonical(node).unwrap_or(node).to_string();
        if alias.is_empty() || alias == node {
            return false;
        }
        if self.aliases.get(alias) == Some(&node) {
            return false;
        }
        // Names that pointed at `alias` as a node now point at `node`.
        for target in self.aliases.values_mut() {
            if target == alias {
                target.clone_from(&node);
            }
        }
        self.aliases.insert(alias.to_string(), node);
        true
    }

    /// What `signal` (its node already canonical) teaches: each alias label
    /// it carries, and the host part of an address, as names of its node.
    /// Returns the aliases that are new.
    pub fn learn(&mut self, signal: &Signal) -> Vec<(String, String)> {
        let mut learned = Vec::new();
        if signal.is_domain() {
            return learned;
        }
        for label in &self.labels {
            let Some(value) = signal.labels.get(label) else {
                continue;
            };
            for alias in [value, host_of(value)] {
                if alias != signal.node && !learned.iter().any(|(a, _)| a == alias) {
                    learned.push((alias.to_string(), signal.node.clone()));
                }
            }
        }
        learned.retain(|(alias, node)| self.insert(alias, node));
        learned
    }

    /// Every alias and its node, sorted (for the journal and tests).
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .aliases
            .iter()
            .map(|(a, n)| (a.clone(), n.clone()))
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Kind;

    fn signal(node: &str, labels: &[(&str, &str)]) -> Signal {
        let mut s = Signal::new(node, Kind::Resource, "KubeNodeNotReady");
        for (k, v) in labels {
            s.labels.insert(*k, *v);
        }
        s
    }

    #[test]
    fn a_signal_with_a_node_and_an_address_teaches_both_forms_once() {
        let mut id = Identity::new(vec!["instance".into(), "hostname".into()]);
        let learned = id.learn(&signal(
            "worker-7",
            &[("instance", "10.0.0.7:9100"), ("hostname", "worker-7")],
        ));
        assert_eq!(
            learned,
            [
                ("10.0.0.7:9100".to_string(), "worker-7".to_string()),
                ("10.0.0.7".into(), "worker-7".into())
            ]
        );
        assert_eq!(id.canonical("10.0.0.7"), Some("worker-7"));
        assert_eq!(
            id.canonical("worker-7"),
            None,
            "a node is not its own alias"
        );
        assert!(
            id.learn(&signal("worker-7", &[("instance", "10.0.0.7:9100")]))
                .is_empty(),
            "known already"
        );
        // The address moves to another machine: the newer word counts.
        assert_eq!(
            id.learn(&signal("worker-9", &[("instance", "10.0.0.7:9100")])),
            [
                ("10.0.0.7:9100".to_string(), "worker-9".to_string()),
                ("10.0.0.7".into(), "worker-9".into())
            ]
        );
        let mut domain = signal("", &[("instance", "10.0.0.1:9090")]);
        domain.node.clear();
        assert!(
            id.learn(&domain).is_empty(),
            "a domain signal names no node"
        );
    }

    #[test]
    fn aliases_point_at_the_canonical_name() {
        let mut id = Identity::default();
        assert!(id.insert("10.0.0.7", "host-7"));
        assert!(id.insert("host-7", "worker-7"));
        assert_eq!(id.canonical("10.0.0.7"), Some("worker-7"));
        assert!(id.insert("10.0.0.7:9100", "10.0.0.7"));
        assert_eq!(id.canonical("10.0.0.7:9100"), Some("worker-7"));
        assert!(!id.insert("worker-7", "worker-7"));
        assert_eq!(host_of("[::1]:9100"), "::1");
        assert_eq!(host_of("worker-7"), "worker-7");
    }
}
