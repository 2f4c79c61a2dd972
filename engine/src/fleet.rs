//! What the engine remembers about the fleet: every known node, its latest
//! labels, a bounded history of recent signal times per signal type (behind
//! `events_within`), and its open faults.
//!
//! Memory is the constraint here: a fleet has hundreds of thousands of nodes
//! and the engine keeps them all. Names are interned once, labels are stored
//! as pairs of small symbols, and each history is a short sorted ring of
//! 32-bit second offsets that ages out by time and by count.

use std::collections::VecDeque;

use rhai::ImmutableString;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::decision::Severity;
use crate::signal::Labels;
use crate::time::Timestamp;

/// An interned string: node names, signal types, fault classes, label keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(u32);

/// Interns strings so each distinct one is stored once and compared as an integer.
#[derive(Default, Debug)]
pub struct Interner {
    ids: FxHashMap<ImmutableString, Sym>,
    names: Vec<ImmutableString>,
}

impl Interner {
    /// The symbol for `name`, creating it on first sight.
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(&sym) = self.ids.get(name) {
            return sym;
        }
        let sym = Sym(u32::try_from(self.names.len()).expect("fewer than 2^32 distinct names"));
        let shared = ImmutableString::from(name);
        self.names.push(shared.clone());
        self.ids.insert(shared, sym);
        sym
    }

    /// The symbol for `name`, if it was ever interned.
    pub fn get(&self, name: &str) -> Option<Sym> {
        self.ids.get(name).copied()
    }

    /// The text of a symbol.
    pub fn name(&self, sym: Sym) -> &str {
        &self.names[sym.0 as usize]
    }

    /// The interned Rhai string for `text`, or a new one if it was never interned.
    pub fn shared_or_new(&self, text: &str) -> ImmutableString {
        self.ids
            .get_key_value(text)
            .map_or_else(|| text.into(), |(k, _)| k.clone())
    }

    /// The text of a symbol as a shared Rhai string (no copy).
    pub fn shared(&self, sym: Sym) -> &ImmutableString {
        &self.names[sym.0 as usize]
    }
}

/// Dense index of a known node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

/// Bounds on what is remembered per node and signal type.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLimits {
    /// Most signal times kept per node and type; `events_within` saturates here.
    pub per_type: usize,
    /// Signal times older than this (behind the newest one) are forgotten.
    pub horizon_secs: i64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            per_type: 64,
            horizon_secs: 24 * 3600,
        }
    }
}

/// Second offsets are counted from 2000-01-01T00:00:00Z so they fit in 32 bits until 2136.
const EPOCH_OFFSET_SECS: i64 = 946_684_800;

fn offset_secs(t: Timestamp) -> u32 {
    (t.secs() - EPOCH_OFFSET_SECS).clamp(0, u32::MAX as i64) as u32
}

/// Recent times of one signal type on one node, sorted ascending.
#[derive(Debug)]
struct History {
    r#type: Sym,
    times: VecDeque<u32>,
}

impl History {
    fn record(&mut self, at: u32, limits: &HistoryLimits) {
        // Signals mostly arrive in order: the insertion point is nearly always the end.
        let pos = self.times.partition_point(|&t| t <= at);
        self.times.insert(pos, at);
        let newest = *self.times.back().expect("just inserted");
        let oldest_kept =
            newest.saturating_sub(limits.horizon_secs.clamp(0, u32::MAX as i64) as u32);
        while self.times.front().is_some_and(|&t| t < oldest_kept)
            || self.times.len() > limits.per_type
        {
            self.times.pop_front();
        }
    }

    /// Times in `(now - seconds, now]`.
    fn count_within(&self, now: u32, seconds: i64) -> usize {
        let from = i64::from(now) - seconds;
        let hi = self.times.partition_point(|&t| t <= now);
        let lo = self.times.partition_point(|&t| i64::from(t) <= from);
        hi.saturating_sub(lo)
    }
}

/// A fault that is open on a node.
#[derive(Clone, Debug)]
pub struct OpenFault {
    /// The fault class.
    pub fault: Sym,
    /// Severity it opened with.
    pub severity: Severity,
    /// Index of the rule that opened it.
    pub rule: usize,
    /// When it opened (event time).
    pub opened_at: Timestamp,
    /// Signal types that classified into it; a resolved signal of any of them clears it.
    pub types: SmallVec<[Sym; 2]>,
}

/// Everything known about one node.
#[derive(Debug, Default)]
struct NodeState {
    labels: SmallVec<[(Sym, Sym); 3]>,
    last_seen: i64,
    history: Vec<History>,
    faults: Vec<OpenFault>,
}

/// The engine's memory of the fleet.
#[derive(Debug, Default)]
pub struct Fleet {
    /// Node names.
    pub nodes: Interner,
    /// Signal types, fault classes, label keys and values.
    pub symbols: Interner,
    states: Vec<NodeState>,
    /// Nodes with each fault class open, for `nodes_within`.
    open_by_fault: FxHashMap<Sym, Vec<NodeId>>,
    limits: HistoryLimits,
}

impl Fleet {
    /// An empty fleet with the given history bounds.
    pub fn new(limits: HistoryLimits) -> Self {
        Fleet {
            limits,
            ..Fleet::default()
        }
    }

    /// A known node's name.
    pub fn node_name(&self, node: NodeId) -> &ImmutableString {
        self.nodes.shared(Sym(node.0))
    }

    /// Registers a node (or finds it), merges its labels and notes when it was seen.
    pub fn touch(&mut self, node: &str, labels: &Labels, at: Timestamp) -> NodeId {
        let sym = self.nodes.intern(node);
        let id = NodeId(sym.0);
        if id.0 as usize == self.states.len() {
            self.states.push(NodeState::default());
        }
        let state = &mut self.states[id.0 as usize];
        state.last_seen = state.last_seen.max(at.millis());
        for (key, value) in labels.iter() {
            // Steady state: the node already carries this exact label, no hashing needed.
            let known = state
                .labels
                .iter_mut()
                .find(|(k, _)| self.symbols.name(*k) == key);
            match known {
                Some((_, v)) if self.symbols.name(*v) == value => {}
                Some((_, v)) => *v = self.symbols.intern(value),
                None => {
                    let pair = (self.symbols.intern(key), self.symbols.intern(value));
                    state.labels.push(pair);
                }
            }
        }
        id
    }

    /// Remembers that `node` sent a signal of `type` at `at`.
    pub fn record(&mut self, node: NodeId, r#type: Sym, at: Timestamp) {
        let limits = self.limits;
        let state = &mut self.states[node.0 as usize];
        let at = offset_secs(at);
        match state.history.iter_mut().find(|h| h.r#type == r#type) {
            Some(h) => h.record(at, &limits),
            None => {
                let mut h = History {
                    r#type,
                    times: VecDeque::with_capacity(1),
                };
                h.record(at, &limits);
                state.history.push(h);
            }
        }
    }

    /// Signals of `type` from `node` within the last `seconds` before `now`, inclusive of `now`.
    pub fn events_within(&self, node: &str, r#type: &str, seconds: i64, now: Timestamp) -> usize {
        let (Some(node), Some(r#type)) = (self.nodes.get(node), self.symbols.get(r#type)) else {
            return 0;
        };
        self.states[node.0 as usize]
            .history
            .iter()
            .find(|h| h.r#type == r#type)
            .map_or(0, |h| h.count_within(offset_secs(now), seconds))
    }

    /// Distinct nodes with `fault` open, opened within the last `seconds`, whose `label` is `value`.
    pub fn nodes_within(
        &self,
        fault: &str,
        label: &str,
        value: &str,
        seconds: i64,
        now: Timestamp,
    ) -> usize {
        let (Some(fault), Some(label), Some(value)) = (
            self.symbols.get(fault),
            self.symbols.get(label),
            self.symbols.get(value),
        ) else {
            return 0;
        };
        let since = now.millis() - seconds.saturating_mul(1000);
        let Some(nodes) = self.open_by_fault.get(&fault) else {
            return 0;
        };
        nodes
            .iter()
            .filter(|n| {
                let state = &self.states[n.0 as usize];
                state.labels.contains(&(label, value))
                    && state.faults.iter().any(|f| {
                        f.fault == fault && f.opened_at.millis() > since && f.opened_at <= now
                    })
            })
            .count()
    }

    /// The open fault of this class on this node.
    pub fn open_fault(&self, node: NodeId, fault: Sym) -> Option<&OpenFault> {
        self.states[node.0 as usize]
            .faults
            .iter()
            .find(|f| f.fault == fault)
    }

    /// Whether `fault` is open on the node named `node`.
    pub fn has_fault(&self, node: &str, fault: &str) -> bool {
        match (self.nodes.get(node), self.symbols.get(fault)) {
            (Some(n), Some(f)) => self.open_fault(NodeId(n.0), f).is_some(),
            _ => false,
        }
    }

    /// Notes that `type` also asserts the open fault `fault` on `node`.
    pub fn add_fault_type(&mut self, node: NodeId, fault: Sym, r#type: Sym) {
        if let Some(f) = self.states[node.0 as usize]
            .faults
            .iter_mut()
            .find(|f| f.fault == fault)
        {
            if !f.types.contains(&r#type) {
                f.types.push(r#type);
            }
        }
    }

    /// Opens a fault; the caller has checked it is not open yet.
    pub fn open(&mut self, node: NodeId, fault: OpenFault) {
        self.open_by_fault
            .entry(fault.fault)
            .or_default()
            .push(node);
        self.states[node.0 as usize].faults.push(fault);
    }

    /// Closes every open fault on `node` that `type` asserted, returning them in the order they opened.
    pub fn resolve_by_type(&mut self, node: NodeId, r#type: Sym) -> Vec<OpenFault> {
        let state = &mut self.states[node.0 as usize];
        if !state.faults.iter().any(|f| f.types.contains(&r#type)) {
            return Vec::new();
        }
        let (closed, kept): (Vec<_>, Vec<_>) = state
            .faults
            .drain(..)
            .partition(|f| f.types.contains(&r#type));
        state.faults = kept;
        for f in &closed {
            if let Some(nodes) = self.open_by_fault.get_mut(&f.fault) {
                if let Some(pos) = nodes.iter().position(|n| *n == node) {
                    nodes.swap_remove(pos);
                }
            }
        }
        closed
    }

    /// How many nodes have ever sent a signal.
    pub fn known_nodes(&self) -> usize {
        self.states.len()
    }

    /// How many faults are open across the fleet.
    pub fn open_faults(&self) -> usize {
        self.open_by_fault.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(1_790_000_000 + secs)
    }

    fn fleet_with(limits: HistoryLimits) -> (Fleet, NodeId, Sym) {
        let mut fleet = Fleet::new(limits);
        let node = fleet.touch("n1", &Labels::default(), at(0));
        let ty = fleet.symbols.intern("disk.io.error");
        (fleet, node, ty)
    }

    #[test]
    fn events_within_counts_a_sliding_window_including_now() {
        let (mut fleet, node, ty) = fleet_with(HistoryLimits::default());
        for s in [0, 100, 200, 300] {
            fleet.record(node, ty, at(s));
        }
        assert_eq!(fleet.events_within("n1", "disk.io.error", 1000, at(300)), 4);
        assert_eq!(fleet.events_within("n1", "disk.io.error", 200, at(300)), 2);
        assert_eq!(fleet.events_within("n1", "disk.io.error", 0, at(300)), 0);
        assert_eq!(fleet.events_within("n1", "other", 1000, at(300)), 0);
        assert_eq!(fleet.events_within("n2", "disk.io.error", 1000, at(300)), 0);
        // A late signal only sees what came before it in event time.
        assert_eq!(fleet.events_within("n1", "disk.io.error", 150, at(150)), 1);
        assert_eq!(fleet.events_within("n1", "disk.io.error", 151, at(150)), 2);
    }

    #[test]
    fn out_of_order_signals_are_counted_in_event_time() {
        let (mut fleet, node, ty) = fleet_with(HistoryLimits::default());
        for s in [300, 100, 200, 0] {
            fleet.record(node, ty, at(s));
        }
        assert_eq!(fleet.events_within("n1", "disk.io.error", 250, at(300)), 3);
    }

    #[test]
    fn history_is_bounded_by_count_and_by_age() {
        let limits = HistoryLimits {
            per_type: 8,
            horizon_secs: 600,
        };
        let (mut fleet, node, ty) = fleet_with(limits);
        for s in 0..100 {
            fleet.record(node, ty, at(s));
        }
        assert_eq!(
            fleet.events_within("n1", "disk.io.error", 10_000, at(99)),
            8
        );
        fleet.record(node, ty, at(5_000));
        assert_eq!(
            fleet.events_within("n1", "disk.io.error", 100_000, at(5_000)),
            1
        );
    }

    #[test]
    fn labels_are_merged_and_updated() {
        let mut fleet = Fleet::default();
        let mut labels = Labels::default();
        labels.insert("rack", "r1");
        let n = fleet.touch("n1", &labels, at(0));
        let mut moved = Labels::default();
        moved.insert("rack", "r2");
        moved.insert("cluster", "c1");
        assert_eq!(fleet.touch("n1", &moved, at(1)), n);
        let fault = fleet.symbols.intern("power_failure");
        fleet.open(
            n,
            OpenFault {
                fault,
                severity: Severity::Critical,
                rule: 0,
                opened_at: at(1),
                types: SmallVec::new(),
            },
        );
        assert_eq!(
            fleet.nodes_within("power_failure", "rack", "r2", 60, at(2)),
            1
        );
        assert_eq!(
            fleet.nodes_within("power_failure", "rack", "r1", 60, at(2)),
            0
        );
        assert_eq!(
            fleet.nodes_within("power_failure", "cluster", "c1", 60, at(2)),
            1
        );
        assert_eq!(
            fleet.nodes_within("power_failure", "rack", "r2", 60, at(100)),
            0
        );
        assert_eq!(fleet.known_nodes(), 1);
    }
}
