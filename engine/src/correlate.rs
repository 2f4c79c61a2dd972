//! Common cause (`[[correlate]]`, contract 9): when faults of some classes
//! concentrate in one value of a label (a rack, a switch, a kernel
//! version), one domain fault names the shared cause instead of N node
//! repairs, and (with `hold`) the per-node disruptive repairs in that
//! domain wait for it.

use std::collections::BTreeMap;

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::fleet::{NodeId, Sym};
use crate::time::{Duration, Timestamp};

/// One `[[correlate]]` block.
#[derive(Clone, Debug, PartialEq)]
pub struct Correlation {
    /// The label whose values are the domains (`rack`, `switch`, `kernel_version`, ...).
    pub label: String,
    /// The fault classes that count; `["*"]`: any node fault.
    pub faults: Vec<String>,
    /// Opens at this many distinct nodes...
    pub min_nodes: Option<usize>,
    /// ...or at this share (0-1) of the domain's known nodes.
    pub min_share: Option<f64>,
    /// Faults opened within this long count.
    pub within: Duration,
    /// The domain fault's class (its policy is `[faults.NAME]`).
    pub fault: String,
    /// Per-node disruptive actions in the domain wait while it is open.
    pub hold: bool,
}

impl Correlation {
    /// Whether faults of class `fault` count for it.
    pub fn counts(&self, fault: &str) -> bool {
        fault != self.fault && self.faults.iter().any(|f| f == "*" || f == fault)
    }

    /// The domain fault's entry key and its domain labels, for `value`.
    pub fn domain(&self, value: &str) -> (String, BTreeMap<String, String>) {
        (
            format!("{}={value}", self.label),
            BTreeMap::from([(self.label.clone(), value.to_string())]),
        )
    }

    /// Whether `nodes` of a domain of `known` nodes are a common cause.
    pub fn concentrated(&self, nodes: usize, known: usize) -> bool {
        self.min_nodes.is_some_and(|n| nodes >= n.max(1))
            || self
                .min_share
                .is_some_and(|share| nodes > 0 && nodes as f64 >= share * known.max(1) as f64)
    }
}

/// What one domain of one correlation has seen.
#[derive(Debug, Default)]
struct Domain {
    /// Counted openings within `within`, oldest first.
    recent: VecDeque<(Timestamp, NodeId)>,
    /// Openings in `recent` per node (distinct nodes = its length).
    per_node: FxHashMap<NodeId, u32>,
    /// Counted faults open in the domain now.
    open: usize,
    /// Its domain fault is open.
    incident: bool,
}

/// The state of every `[[correlate]]` block, updated as node faults open
/// and close (constant work per fault, whatever the fleet's size).
#[derive(Debug, Default)]
pub(crate) struct Correlator {
    /// The blocks, in config order.
    pub rules: Vec<Correlation>,
    domains: FxHashMap<(usize, String), Domain>,
    /// (node, fault class, block) -> the domain value it was counted in.
    counted: FxHashMap<(NodeId, Sym, usize), String>,
}

/// What a change to node faults means for a block's domain.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The faults concentrate: open the domain fault (`nodes` distinct
    /// nodes within `within`, of `known`).
    Open {
        /// Index of the block.
        rule: usize,
        /// The label's value.
        value: String,
        /// Distinct nodes counted.
        nodes: usize,
    },
    /// No counted fault is open in the domain any more: its domain fault resolves.
    Resolve {
        /// Index of the block.
        rule: usize,
        /// The label's value.
        value: String,
    },
}

impl Correlator {
    /// No domain seen yet.
    pub fn new(rules: Vec<Correlation>) -> Self {
        Correlator {
            rules,
            ..Correlator::default()
        }
    }

    /// A node fault of class `fault` opened on `node` (whose `label` values
    /// `value_of` answers) at `at`; `known(label, value)` is a domain's size.
    pub fn opened(
        &mut self,
        (node, fault): (NodeId, Sym),
        name: &str,
        at: Timestamp,
        value_of: impl Fn(&str) -> Option<String>,
        known: impl Fn(&str, &str) -> usize,
        restored: bool,
    ) -> Vec<Verdict> {
        let mut out = Vec::new();
        for (i, c) in self.rules.iter().enumerate() {
            if !c.counts(name) {
                continue;
            }
            let Some(value) = value_of(&c.label) else {
                continue;
            };
            if self
                .counted
                .insert((node, fault, i), value.clone())
                .is_some()
            {
                continue; // already counted (a restored fault)
            }
            let d = self.domains.entry((i, value.clone())).or_default();
            d.open += 1;
            d.recent.push_back((at, node));
            *d.per_node.entry(node).or_default() += 1;
            while let Some(&(t, n)) = d.recent.front() {
                if at.0 - t.0 <= c.within.0 {
                    break;
                }
                d.recent.pop_front();
                if let Some(k) = d.per_node.get_mut(&n) {
                    *k -= 1;
                    if *k == 0 {
                        d.per_node.remove(&n);
                    }
                }
            }
            let nodes = d.per_node.len();
            // A fault put back at a restart counts, but opens nothing: the
            // journal says whether its domain fault was open.
            if !restored && !d.incident && c.concentrated(nodes, known(&c.label, &value)) {
                d.incident = true;
                out.push(Verdict::Open {
                    rule: i,
                    value,
                    nodes,
                });
            }
        }
        out
    }

    /// Whether a block opens domain faults of class `fault`.
    pub fn opens(&self, fault: &str) -> bool {
        !self.rules.is_empty() && self.rules.iter().any(|c| c.fault == fault)
    }

    /// A node fault of class `fault` closed on `node`.
    pub fn closed(&mut self, node: NodeId, fault: Sym) -> Vec<Verdict> {
        let mut out = Vec::new();
        for i in 0..self.rules.len() {
            let Some(value) = self.counted.remove(&(node, fault, i)) else {
                continue;
            };
            let Some(d) = self.domains.get_mut(&(i, value.clone())) else {
                continue;
            };
            d.open = d.open.saturating_sub(1);
            if d.open == 0 && d.incident {
                d.incident = false;
                out.push(Verdict::Resolve { rule: i, value });
            }
        }
        out
    }

    /// After a restart: the domain fault of block `rule` for `value` is open.
    pub fn restore_incident(&mut self, rule: usize, value: &str) {
        self.domains
            .entry((rule, value.to_string()))
            .or_default()
            .incident = true;
    }
}
