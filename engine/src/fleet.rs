//! What the engine remembers about the fleet: every known node, its latest
//! labels, a bounded history of recent signal times per signal type (behind
//! `events_within`), and its open faults.
//!
//! Memory is the constraint here: a fleet has hundreds of thousands of nodes
//! and the engine keeps them all. Names are interned once, labels are stored
//! as pairs of small symbols, and each history is a short sorted ring of
//! 32-bit second offsets that ages out by time and by count.
// The one module with unsafe code: huge-page hints (madvise) and cache
// prefetches for the node index and states; each block says why it is sound.
#![allow(unsafe_code)]

use std::hash::Hasher;

use rhai::ImmutableString;
use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use smallvec::SmallVec;

use crate::decision::Severity;
use crate::signal::Labels;
use crate::time::Timestamp;

/// An interned string: node names, signal types, fault classes, label keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(u32);

/// An open-addressing table of `(hash, id)` pairs packed in eight bytes
/// (`hash << 32 | id + 1`, zero when empty), a power of two many (or none),
/// linear probing. What an id names is kept elsewhere and compared there.
#[derive(Default, Debug)]
struct Slots(Vec<u64>);

impl Slots {
    /// The first id under `hash` that `is` accepts.
    fn find(&self, hash: u32, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.0.is_empty() {
            return None;
        }
        let mask = self.0.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = self.0[i];
            if slot == 0 {
                return None;
            }
            let id = (slot as u32) - 1;
            if (slot >> 32) as u32 == hash && is(id) {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }

    fn place(slots: &mut [u64], slot: u64) {
        let mask = slots.len() - 1;
        let mut i = (slot >> 32) as usize & mask;
        while slots[i] != 0 {
            i = (i + 1) & mask;
        }
        slots[i] = slot;
    }

    /// Adds `id` (not in the table yet) under `hash`, first growing the
    /// table if `ids` ids would fill more than `eighths` eighths of it.
    fn insert(&mut self, hash: u32, id: u32, ids: usize, eighths: usize) {
        if ids * 8 > self.0.len() * eighths {
            let cap = (self.0.len() * 2).max(16);
            let old = std::mem::replace(&mut self.0, vec![0; cap]);
            huge_pages(&self.0);
            for slot in old.into_iter().filter(|&s| s != 0) {
                Self::place(&mut self.0, slot);
            }
        }
        Self::place(&mut self.0, u64::from(hash) << 32 | u64::from(id + 1));
    }

    /// Takes `id` (stored under `hash`) out of the table, moving later
    /// entries of its probe run back so that every lookup still finds them.
    fn remove(&mut self, hash: u32, id: u32) {
        if self.0.is_empty() {
            return;
        }
        let mask = self.0.len() - 1;
        let wanted = u64::from(hash) << 32 | u64::from(id + 1);
        let mut i = hash as usize & mask;
        while self.0[i] != wanted {
            if self.0[i] == 0 {
                return;
            }
            i = (i + 1) & mask;
        }
        // Backward shift: an entry after the hole moves into it unless its
        // home slot lies (cyclically) after the hole and up to where it is.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while self.0[j] != 0 {
            let home = (self.0[j] >> 32) as usize & mask;
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.0[hole] = self.0[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.0[hole] = 0;
    }

    /// Asks the CPU to start loading the slot a lookup of `hash` reads first.
    fn prefetch(&self, hash: u32) {
        if !self.0.is_empty() {
            prefetch(&self.0[hash as usize & (self.0.len() - 1)]);
        }
    }
}

/// Strings stored once each and numbered: the names sit back to back in one
/// buffer, indexed by [`Slots`]. A lookup reads one slot and compares
/// against the compact buffer, which stays in cache, instead of chasing a
/// pointer per name into the heap.
#[derive(Default, Debug)]
struct Strings {
    /// At most three quarters used.
    slots: Slots,
    /// Every string, back to back.
    text: String,
    /// Where each string ends in `text` (it starts where the one before ends).
    ends: Vec<u32>,
}

impl Strings {
    fn find(&self, text: &str, hash: u32) -> Option<Sym> {
        self.slots
            .find(hash, |sym| self.get(Sym(sym)) == text)
            .map(Sym)
    }

    /// The symbol of `text`, and whether it is new.
    fn intern(&mut self, text: &str) -> (Sym, bool) {
        let hash = hash_str(text);
        if let Some(sym) = self.find(text, hash) {
            return (sym, false);
        }
        let sym = u32::try_from(self.ends.len())
            .ok()
            .filter(|&n| n < u32::MAX)
            .expect("fewer than 2^32 - 1 distinct strings");
        self.text.push_str(text);
        self.ends
            .push(u32::try_from(self.text.len()).expect("interned strings fit in 4 GiB"));
        self.slots.insert(hash, sym, self.ends.len(), 6);
        (Sym(sym), true)
    }

    fn get(&self, sym: Sym) -> &str {
        let i = sym.0 as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

/// Interns strings so each distinct one is stored once and compared as an
/// integer, and handed to rules as a shared Rhai string without a copy.
#[derive(Default, Debug)]
pub struct Interner {
    strings: Strings,
    /// Each name as a shared Rhai string.
    shared: Vec<ImmutableString>,
}

fn hash_str(text: &str) -> u32 {
    let mut h = FxHasher::default();
    h.write(text.as_bytes());
    let h = h.finish();
    (h ^ (h >> 32)) as u32
}

impl Interner {
    /// The symbol for `name`, creating it on first sight.
    pub fn intern(&mut self, name: &str) -> Sym {
        let (sym, new) = self.strings.intern(name);
        if new {
            self.shared.push(ImmutableString::from(name));
        }
        sym
    }

    /// The symbol for `name`, if it was ever interned.
    pub fn get(&self, name: &str) -> Option<Sym> {
        self.strings.find(name, hash_str(name))
    }

    /// The text of a symbol.
    pub fn name(&self, sym: Sym) -> &str {
        self.strings.get(sym)
    }

    /// The interned Rhai string for `text`, or a new one if it was never interned.
    pub fn shared_or_new(&self, text: &str) -> ImmutableString {
        self.get(text)
            .map_or_else(|| text.into(), |sym| self.shared(sym).clone())
    }

    /// The text of a symbol as a shared Rhai string (no copy).
    pub fn shared(&self, sym: Sym) -> &ImmutableString {
        &self.shared[sym.0 as usize]
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

/// Recent signal times of one node, per signal type, in one flat buffer: a
/// run of `[type, count, time, time, ...]` per type, times sorted ascending.
/// A node's first few dozen entries live inside its [`NodeState`], so
/// recording or counting reads the cache lines the node's lookup already
/// brought in; a busier node spills to one heap block.
#[derive(Debug, Default)]
struct History(SmallVec<[u32; HISTORY_INLINE]>);

/// History entries kept inside the node state (see [`NodeState`]'s size).
const HISTORY_INLINE: usize = 22;

impl History {
    /// Where the times of `type` start, and how many there are.
    fn find(&self, r#type: Sym) -> Option<(usize, usize)> {
        let h = &self.0;
        let mut i = 0;
        while i < h.len() {
            let len = h[i + 1] as usize;
            if h[i] == r#type.0 {
                return Some((i + 2, len));
            }
            i += 2 + len;
        }
        None
    }

    fn record(&mut self, r#type: Sym, at: u32, limits: &HistoryLimits) {
        let (start, len) = self.find(r#type).unwrap_or_else(|| {
            self.0.extend([r#type.0, 0]);
            (self.0.len(), 0)
        });
        let h = &mut self.0;
        // Signals mostly arrive in order: the insertion point is nearly always the end.
        let pos = h[start..start + len].partition_point(|&t| t <= at);
        h.insert(start + pos, at);
        let len = len + 1;
        let newest = h[start + len - 1];
        let oldest_kept =
            newest.saturating_sub(limits.horizon_secs.clamp(0, u32::MAX as i64) as u32);
        let aged = h[start..start + len].partition_point(|&t| t < oldest_kept);
        let drop = aged.max(len.saturating_sub(limits.per_type));
        if drop > 0 {
            h.drain(start..start + drop);
        }
        h[start - 1] = (len - drop) as u32;
    }

    /// Times of `type` in `(now - seconds, now]`.
    fn count_within(&self, r#type: Sym, now: u32, seconds: i64) -> usize {
        let Some((start, len)) = self.find(r#type) else {
            return 0;
        };
        let times = &self.0[start..start + len];
        let from = i64::from(now) - seconds;
        let hi = times.partition_point(|&t| t <= now);
        let lo = times.partition_point(|&t| i64::from(t) <= from);
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
    /// Opened (or re-asserted) by a condition that its source repeats (a
    /// firing alert, a gauge): when it last did, and whether that is too
    /// long ago (stale). `None` for faults opened by events.
    pub condition: Option<Freshness>,
    /// The condition series holding it open: (type, label-set key). A
    /// series' resolved signal closes the fault only once no other holds
    /// it (two filesystems full on one node: one freed is not the fault gone).
    pub series: SmallVec<[(Sym, u64); 2]>,
}

/// Condition series an open fault remembers at most (beyond that, a
/// resolved series closes it as its type would).
pub const MAX_SERIES: usize = 64;

/// The key of a condition series: its labels, in any order.
pub fn series_key(labels: &Labels) -> u64 {
    let mut pairs: SmallVec<[(&str, &str); 8]> = labels.iter().collect();
    pairs.sort_unstable();
    let mut h = FxHasher::default();
    for (k, v) in pairs {
        h.write(k.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xfe);
    }
    h.finish()
}

/// How fresh the evidence of a condition fault is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// When its condition was last asserted (event time).
    pub asserted: Timestamp,
    /// Neither re-asserted nor resolved within `stale_after`.
    pub stale: bool,
}

/// A node name as the index compares it: inline when it is short (most
/// are), so a lookup reads no other memory than the node state it returns.
#[derive(Clone, Copy, Debug)]
struct NameKey {
    bytes: [u8; NAME_INLINE],
    /// The name's length when it is inline, [`NameKey::LONG`] when it is not.
    len: u8,
}

/// Name bytes kept inline in a [`NameKey`].
const NAME_INLINE: usize = 23;

impl NameKey {
    const LONG: u8 = u8::MAX;

    fn new(name: &str) -> Self {
        let mut bytes = [0; NAME_INLINE];
        match bytes.get_mut(..name.len()) {
            Some(head) => {
                head.copy_from_slice(name.as_bytes());
                NameKey {
                    bytes,
                    len: name.len() as u8,
                }
            }
            None => NameKey {
                bytes,
                len: Self::LONG,
            },
        }
    }
}

/// Everything known about one node, laid out so that handling a signal
/// touches three adjacent cache lines of it and nothing else: the fleet has
/// hundreds of thousands of nodes, so every other place a signal would read
/// is a cache miss.
#[derive(Debug)]
#[repr(C, align(64))]
struct NodeState {
    key: NameKey,
    labels: SmallVec<[(Sym, Sym); 3]>,
    last_seen: i64,
    /// The node's name as rules see it (shared, never copied per signal).
    name: ImmutableString,
    history: History,
    faults: Vec<OpenFault>,
}

impl NodeState {
    fn new(name: ImmutableString) -> Self {
        NodeState {
            key: NameKey::new(&name),
            labels: SmallVec::new(),
            last_seen: 0,
            name,
            history: History::default(),
            faults: Vec::new(),
        }
    }

    fn is_named(&self, name: &str) -> bool {
        if self.key.len == NameKey::LONG {
            self.name.as_str() == name
        } else {
            self.key.bytes.get(..self.key.len as usize) == Some(name.as_bytes())
        }
    }
}

/// Finds a node by name: [`Slots`] of `(hash, node)`, the name itself
/// compared in the node's state. The whole index of 100k nodes is 2 MiB,
/// and a lookup reads one slot of it.
#[derive(Debug, Default)]
struct NodeIndex {
    /// At most seven eighths used.
    slots: Slots,
}

impl NodeIndex {
    fn find(&self, states: &[NodeState], name: &str, hash: u32) -> Option<NodeId> {
        self.slots
            .find(hash, |id| states[id as usize].is_named(name))
            .map(NodeId)
    }

    /// Adds node `id`, known not to be in the index yet.
    fn insert(&mut self, id: NodeId, hash: u32, nodes: usize) {
        self.slots.insert(hash, id.0, nodes, 7);
    }

    /// Takes node `id` (named with `hash`) out of the index.
    fn remove(&mut self, id: NodeId, hash: u32) {
        self.slots.remove(hash, id.0);
    }

    /// Asks the CPU to start loading the slot a lookup of `hash` reads first.
    fn prefetch(&self, hash: u32) {
        self.slots.prefetch(hash);
    }

    /// The node a lookup of `hash` most likely ends at, without comparing
    /// names (which would wait for the node state to load).
    fn probable(&self, hash: u32) -> Option<NodeId> {
        self.slots.find(hash, |_| true).map(NodeId)
    }
}

/// Asks Linux to back `buffer`'s spare capacity and contents with 2 MiB
/// pages where it can, before they are first written. The node states of
/// 100k nodes span 19 MB: in 4 KiB pages that is more than the TLB covers, so
/// every signal would also wait for a page-table walk. Only a hint: where
/// huge pages are off or unavailable nothing changes.
fn huge_pages<T>(buffer: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buffer.as_ptr() as usize;
        let end = start + buffer.capacity() * std::mem::size_of::<T>();
        let (first, last) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if last > first {
            // SAFETY: the range lies inside `buffer`'s allocation; MADV_HUGEPAGE
            // changes how memory is backed, never what it holds.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buffer;
}

/// A hint to load `value`'s cache line; nothing happens where the CPU has no such hint.
#[inline(always)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and does not change memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// The engine's memory of the fleet.
#[derive(Debug, Default)]
pub struct Fleet {
    nodes: NodeIndex,
    /// Signal types, fault classes, label keys and values.
    pub symbols: Interner,
    states: Vec<NodeState>,
    /// Nodes with each fault class open, for `nodes_within`.
    open_by_fault: FxHashMap<Sym, Vec<NodeId>>,
    limits: HistoryLimits,
    /// The node last touched and the type last recorded: rules mostly ask
    /// about the signal being processed, so these skip a hash lookup.
    last_node: Option<NodeId>,
    last_type: Option<Sym>,
    /// Known nodes per (label, value): failure domain sizes for storm budgets.
    domains: FxHashMap<(Sym, Sym), u32>,
    /// The entries that are failure domains (a cluster-wide alert's faults),
    /// not machines: never counted in a domain's size, never acted on
    /// disruptively. Kept apart so a node's state stays three cache lines.
    domain_entries: FxHashSet<NodeId>,
    /// States of forgotten nodes (empty names), reused by the next new node.
    free: Vec<NodeId>,
    /// Changes to the domains' sizes so far (a node joined, left or moved).
    generation: u64,
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
        &self.states[node.0 as usize].name
    }

    /// The node named `node`, trying the one last touched first.
    pub fn find_node(&self, node: &str) -> Option<NodeId> {
        if let Some(last) = self.last_node {
            if self.states[last.0 as usize].is_named(node) {
                return Some(last);
            }
        }
        self.node_id(node)
    }

    /// The node named `node`, if it is known.
    fn node_id(&self, node: &str) -> Option<NodeId> {
        self.nodes.find(&self.states, node, hash_str(node))
    }

    /// The symbol of signal type `type`, trying the one last recorded first.
    fn find_type(&self, r#type: &str) -> Option<Sym> {
        if let Some(last) = self.last_type {
            if self.symbols.name(last) == r#type {
                return Some(last);
            }
        }
        self.symbols.get(r#type)
    }

    /// Asks the CPU to start loading what handling a signal from `node` will
    /// read first: the node's index slot. Together with
    /// [`Fleet::prefetch_state`] a few signals later, this lets a caller that
    /// knows the next signals overlap their cache misses instead of waiting
    /// for each in turn. Only a hint: nothing changes.
    pub fn prefetch_index(&self, node: &str) {
        self.nodes.prefetch(hash_str(node));
    }

    /// Asks the CPU to start loading the state of `node` (its index slot
    /// should be loaded by now, see [`Fleet::prefetch_index`]).
    pub fn prefetch_state(&self, node: &str) {
        if let Some(id) = self.nodes.probable(hash_str(node)) {
            let state = &self.states[id.0 as usize];
            let lines: *const [u8; 64] = (state as *const NodeState).cast();
            for line in 0..std::mem::size_of::<NodeState>() / 64 {
                // SAFETY: the state is `NodeState`-sized and 64-aligned, so each line is inside it.
                prefetch(unsafe { &*lines.add(line) });
            }
        }
    }

    /// Registers a node (or finds it), merges its labels and notes when it was seen.
    pub fn touch(&mut self, node: &str, labels: &Labels, at: Timestamp) -> NodeId {
        self.touch_as(node, labels, at, false)
    }

    /// Like [`Fleet::touch`], for the entry of a failure domain named `name`
    /// (a domain signal's [`Signal::domain_key`](crate::Signal::domain_key)):
    /// its labels are kept for silences and reasons but count in no
    /// domain's size.
    pub fn touch_domain(&mut self, name: &str, labels: &Labels, at: Timestamp) -> NodeId {
        self.touch_as(name, labels, at, true)
    }

    /// Whether `node` is a failure domain's entry, not a machine.
    pub fn is_domain(&self, node: NodeId) -> bool {
        !self.domain_entries.is_empty() && self.domain_entries.contains(&node)
    }

    fn touch_as(&mut self, node: &str, labels: &Labels, at: Timestamp, domain: bool) -> NodeId {
        let hash = hash_str(node);
        let id = match self.nodes.find(&self.states, node, hash) {
            Some(id) => id,
            None if !self.free.is_empty() => {
                let id = self.free.pop().expect("a free state");
                self.states[id.0 as usize] = NodeState::new(node.into());
                if domain {
                    self.domain_entries.insert(id);
                }
                self.nodes
                    .insert(id, hash, self.states.len() - self.free.len());
                self.generation += 1;
                id
            }
            None => {
                let id = NodeId(
                    u32::try_from(self.states.len())
                        .ok()
                        .filter(|&n| n < u32::MAX)
                        .expect("fewer than 2^32 - 1 nodes"),
                );
                if self.states.len() == self.states.capacity() {
                    // Grown by hand so the new buffer can ask for huge pages before it is written.
                    let mut grown = Vec::with_capacity((self.states.len() * 2).max(64));
                    huge_pages(&grown);
                    grown.append(&mut self.states);
                    self.states = grown;
                }
                self.states.push(NodeState::new(node.into()));
                if domain {
                    self.domain_entries.insert(id);
                }
                self.nodes.insert(id, hash, self.states.len());
                self.generation += 1;
                id
            }
        };
        self.last_node = Some(id);
        let counted = u32::from(!self.is_domain(id));
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
                Some((k, v)) => {
                    let (k, old) = (*k, *v);
                    *v = self.symbols.intern(value);
                    let new = *v;
                    if let Some(n) = self.domains.get_mut(&(k, old)) {
                        *n -= counted;
                    }
                    *self.domains.entry((k, new)).or_default() += counted;
                    self.generation += 1;
                }
                None => {
                    let pair = (self.symbols.intern(key), self.symbols.intern(value));
                    state.labels.push(pair);
                    *self.domains.entry(pair).or_default() += counted;
                    self.generation += 1;
                }
            }
        }
        id
    }

    /// Remembers that `node` sent a signal of `type` at `at`.
    pub fn record(&mut self, node: NodeId, r#type: Sym, at: Timestamp) {
        let limits = self.limits;
        let state = &mut self.states[node.0 as usize];
        state.history.record(r#type, offset_secs(at), &limits);
        self.last_type = Some(r#type);
    }

    /// Moves `from`'s recent signal times into `to`'s (an alias turned out
    /// to be that node): its count windows count them from now on.
    pub fn merge_history(&mut self, from: NodeId, to: NodeId) {
        if from == to {
            return;
        }
        let limits = self.limits;
        let moved = std::mem::take(&mut self.states[from.0 as usize].history);
        let h = &moved.0;
        let target = &mut self.states[to.0 as usize].history;
        let mut i = 0;
        while i + 1 < h.len() {
            let (r#type, len) = (Sym(h[i]), h[i + 1] as usize);
            for &at in &h[i + 2..i + 2 + len] {
                target.record(r#type, at, &limits);
            }
            i += 2 + len;
        }
    }

    /// Signals of `type` from `node` within the last `seconds` before `now`, inclusive of `now`.
    pub fn events_within(&self, node: &str, r#type: &str, seconds: i64, now: Timestamp) -> usize {
        let (Some(node), Some(r#type)) = (self.find_node(node), self.find_type(r#type)) else {
            return 0;
        };
        self.count_within(node, r#type, seconds, now)
    }

    /// Signals of `type` from `node` within the last `seconds` before `now`, as [`Fleet::events_within`].
    pub fn count_within(&self, node: NodeId, r#type: Sym, seconds: i64, now: Timestamp) -> usize {
        self.states[node.0 as usize]
            .history
            .count_within(r#type, offset_secs(now), seconds)
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

    /// Every open fault of every node: (node, fault class, opened at).
    pub fn for_each_open(&self, mut f: impl FnMut(NodeId, Sym, Timestamp)) {
        for (&fault, nodes) in &self.open_by_fault {
            for &node in nodes {
                if let Some(open) = self.open_fault(node, fault) {
                    f(node, fault, open.opened_at);
                }
            }
        }
    }

    /// Whether the node carries `label = value`.
    pub fn has_label(&self, node: NodeId, label: Sym, value: Sym) -> bool {
        self.states[node.0 as usize]
            .labels
            .contains(&(label, value))
    }

    /// The value of `label` on the node, if it carries it.
    pub fn label_of(&self, node: NodeId, label: Sym) -> Option<Sym> {
        self.states[node.0 as usize]
            .labels
            .iter()
            .find(|(k, _)| *k == label)
            .map(|&(_, v)| v)
    }

    /// The open fault of this class on this node.
    pub fn open_fault(&self, node: NodeId, fault: Sym) -> Option<&OpenFault> {
        self.states[node.0 as usize]
            .faults
            .iter()
            .find(|f| f.fault == fault)
    }

    /// The open fault of this class on `node`, to change.
    pub fn open_fault_mut(&mut self, node: NodeId, fault: Sym) -> Option<&mut OpenFault> {
        self.states[node.0 as usize]
            .faults
            .iter_mut()
            .find(|f| f.fault == fault)
    }

    /// Whether `fault` is open on the node named `node`.
    pub fn has_fault(&self, node: &str, fault: &str) -> bool {
        match (self.find_node(node), self.symbols.get(fault)) {
            (Some(n), Some(f)) => self.open_fault(n, f).is_some(),
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

    /// A number that changes whenever a domain's size may have changed (a
    /// node joined, was forgotten, or its labels changed).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many nodes are known: they sent a signal and were not forgotten.
    pub fn known_nodes(&self) -> usize {
        self.states.len() - self.free.len() - self.domain_entries.len()
    }

    /// Forgets every node (and domain entry) with no open fault and no
    /// signal since `before`, except those `keep` still needs: its name,
    /// labels and history are gone and it leaves its domains' sizes; if it
    /// sends again it is simply new. Returns the forgotten nodes.
    pub fn forget(
        &mut self,
        before: Timestamp,
        keep: impl Fn(NodeId) -> bool,
    ) -> Vec<(NodeId, String)> {
        let before = before.millis();
        let gone: Vec<NodeId> = self
            .states
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.name.is_empty() && s.faults.is_empty() && s.last_seen < before)
            .map(|(i, _)| NodeId(i as u32))
            .filter(|&id| !keep(id))
            .collect();
        let mut names = Vec::with_capacity(gone.len());
        for id in gone {
            let state = std::mem::replace(
                &mut self.states[id.0 as usize],
                NodeState::new(ImmutableString::new()),
            );
            self.nodes.remove(id, hash_str(&state.name));
            let counted = u32::from(!self.domain_entries.remove(&id));
            for pair in &state.labels {
                if let Some(n) = self.domains.get_mut(pair) {
                    *n -= counted;
                    if *n == 0 {
                        self.domains.remove(pair);
                    }
                }
            }
            if self.last_node == Some(id) {
                self.last_node = None;
            }
            self.free.push(id);
            self.generation += 1;
            names.push((id, state.name.to_string()));
        }
        names
    }

    /// How many faults are open across the fleet.
    pub fn open_faults(&self) -> usize {
        self.open_by_fault.values().map(Vec::len).sum()
    }
}

/// Lookups the lifecycle and the guard chain need about faults and domains.
impl Fleet {
    /// Open faults of `node` that a signal of `type` asserted.
    pub fn asserted_by(&self, node: NodeId, r#type: Sym) -> SmallVec<[Sym; 2]> {
        self.states[node.0 as usize]
            .faults
            .iter()
            .filter(|f| f.types.contains(&r#type))
            .map(|f| f.fault)
            .collect()
    }

    /// Closes one open fault of `node`.
    pub fn close(&mut self, node: NodeId, fault: Sym) -> Option<OpenFault> {
        let state = &mut self.states[node.0 as usize];
        let pos = state.faults.iter().position(|f| f.fault == fault)?;
        let closed = state.faults.swap_remove(pos);
        if let Some(nodes) = self.open_by_fault.get_mut(&fault) {
            if let Some(pos) = nodes.iter().position(|n| *n == node) {
                nodes.swap_remove(pos);
            }
        }
        Some(closed)
    }

    /// The value of one label of the node named `node`, as last seen.
    pub fn label_value(&self, node: &str, key: &str) -> Option<String> {
        let node = self.node_id(node)?;
        let key = self.symbols.get(key)?;
        self.states[node.0 as usize]
            .labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, v)| self.symbols.name(v).to_string())
    }

    /// The node named `node` and its open faults, if it is known.
    pub fn open_faults_named(&self, node: &str) -> Option<(NodeId, Vec<OpenFault>)> {
        let id = self.node_id(node)?;
        Some((id, self.states[id.0 as usize].faults.clone()))
    }

    /// Whether the entry named `node` is a failure domain's, not a machine's.
    pub fn is_domain_named(&self, node: &str) -> bool {
        self.node_id(node).is_some_and(|id| self.is_domain(id))
    }

    /// The labels of the node named `node`, as last seen.
    pub fn labels_named(&self, node: &str) -> Option<Vec<(String, String)>> {
        Some(self.labels_of(self.node_id(node)?))
    }

    /// The node's labels as last seen.
    pub fn labels_of(&self, node: NodeId) -> Vec<(String, String)> {
        self.states[node.0 as usize]
            .labels
            .iter()
            .map(|&(k, v)| {
                (
                    self.symbols.name(k).to_string(),
                    self.symbols.name(v).to_string(),
                )
            })
            .collect()
    }

    /// Known nodes whose `label` is `value` (a failure domain's size); with
    /// an empty `value`, the known nodes that do not carry the label.
    pub fn known_in(&self, label: &str, value: &str) -> usize {
        let Some(k) = self.symbols.get(label) else {
            // Nobody carries the label: every node is in the "without it" domain.
            return if value.is_empty() {
                self.known_nodes()
            } else {
                0
            };
        };
        if value.is_empty() {
            let with: u32 = self
                .domains
                .iter()
                .filter(|((key, _), _)| *key == k)
                .map(|(_, n)| *n)
                .sum();
            return self.known_nodes() - with as usize;
        }
        self.symbols
            .get(value)
            .and_then(|v| self.domains.get(&(k, v)))
            .map_or(0, |&n| n as usize)
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
    fn node_state_is_three_cache_lines() {
        assert_eq!(std::mem::size_of::<NodeState>(), 192);
    }

    #[test]
    fn nodes_are_found_by_short_and_long_names_across_growth() {
        let mut fleet = Fleet::default();
        let long = "a-node-name-longer-than-the-inline-key.example.internal";
        let names: Vec<String> = (0..5000)
            .map(|i| {
                if i % 3 == 0 {
                    format!("{long}-{i}")
                } else {
                    format!("n{i}")
                }
            })
            .collect();
        let ids: Vec<NodeId> = names
            .iter()
            .map(|n| fleet.touch(n, &Labels::default(), at(0)))
            .collect();
        for (name, id) in names.iter().zip(&ids) {
            assert_eq!(fleet.touch(name, &Labels::default(), at(1)), *id);
            assert_eq!(fleet.node_id(name), Some(*id));
            assert_eq!(fleet.node_name(*id), name.as_str());
        }
        assert_eq!(fleet.known_nodes(), 5000);
        assert_eq!(fleet.node_id("n5000"), None);
        assert_eq!(fleet.node_id(&format!("{long}-1")), None);
        assert_eq!(fleet.node_id(""), None);
    }

    #[test]
    fn interner_finds_every_name_across_growth() {
        let mut names = Interner::default();
        assert_eq!(names.get("n0"), None);
        let syms: Vec<Sym> = (0..1000).map(|i| names.intern(&format!("n{i}"))).collect();
        for (i, sym) in syms.iter().enumerate() {
            let name = format!("n{i}");
            assert_eq!(names.intern(&name), *sym);
            assert_eq!(names.get(&name), Some(*sym));
            assert_eq!(names.name(*sym), name);
            assert!(names.shared_or_new(&name).ptr_eq(names.shared(*sym)));
        }
        assert_eq!(names.get("n1000"), None);
        assert_eq!(names.shared_or_new("n1000"), "n1000");
    }

    #[test]
    fn histories_of_several_types_stay_apart() {
        let (mut fleet, node, ty) = fleet_with(HistoryLimits::default());
        let other = fleet.symbols.intern("memory.ecc.correctable");
        for s in [0, 10, 20] {
            fleet.record(node, ty, at(s));
            fleet.record(node, other, at(s + 5));
        }
        fleet.record(node, other, at(1));
        assert_eq!(fleet.events_within("n1", "disk.io.error", 100, at(30)), 3);
        assert_eq!(
            fleet.events_within("n1", "memory.ecc.correctable", 100, at(30)),
            4
        );
        assert_eq!(
            fleet.events_within("n1", "memory.ecc.correctable", 24, at(30)),
            2
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
                condition: None,
                series: SmallVec::new(),
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

    #[test]
    fn label_lists_merge_exactly_in_any_order_and_length() {
        let mut f = Fleet::default();
        let mut l = Labels::default();
        l.insert("rack", "r1");
        l.insert("cluster", "c1");
        let n = f.touch("n1", &l, at(0));
        f.touch("n2", &l, at(0));
        assert_eq!(f.touch("n1", &l, at(1)), n);
        assert_eq!(f.known_in("rack", "r1"), 2);
        // Same keys in another order, a value with a control character, a
        // long key: all merge exactly.
        let mut reordered = Labels::default();
        reordered.insert("cluster", "c1");
        reordered.insert("rack", "r1");
        f.touch("n1", &reordered, at(2));
        let mut tricky = Labels::default();
        tricky.insert("rack", "r1\u{2}cl");
        f.touch("n1", &tricky, at(3));
        assert_eq!(f.label_value("n1", "rack").as_deref(), Some("r1\u{2}cl"));
        let long = "k".repeat(200);
        let mut big = Labels::default();
        big.insert(long.as_str(), "v");
        big.insert("rack", "r2");
        f.touch("n1", &big, at(4));
        f.touch("n1", &big, at(5));
        assert_eq!(f.label_value("n1", &long).as_deref(), Some("v"));
        assert_eq!(f.label_value("n1", "rack").as_deref(), Some("r2"));
        // Back to the first list: the rack moves back.
        f.touch("n1", &l, at(6));
        assert_eq!(f.label_value("n1", "rack").as_deref(), Some("r1"));
        assert_eq!(f.known_in("rack", "r1"), 2);
        assert_eq!(f.known_in("rack", "r2"), 0);
        assert_eq!(f.label_value("n1", "cluster").as_deref(), Some("c1"));
    }

    #[test]
    fn domain_sizes_follow_labels_as_they_come_and_change() {
        let mut f = Fleet::new(HistoryLimits::default());
        let labels = |pairs: &[(&str, &str)]| {
            let mut l = Labels::default();
            for (k, v) in pairs {
                l.insert(*k, *v);
            }
            l
        };
        let t = Timestamp::from_secs(1_800_000_000);
        f.touch("a", &labels(&[("cluster", "c1"), ("rack", "r1")]), t);
        f.touch("b", &labels(&[("cluster", "c1")]), t);
        f.touch("c", &labels(&[("cluster", "c2")]), t);
        f.touch("d", &labels(&[]), t);
        f.touch("a", &labels(&[("cluster", "c1")]), t); // seen again: not counted twice
        assert_eq!(f.known_in("cluster", "c1"), 2);
        assert_eq!(f.known_in("cluster", "c2"), 1);
        assert_eq!(f.known_in("cluster", ""), 1, "d carries no cluster label");
        assert_eq!(f.known_in("cluster", "c9"), 0);
        assert_eq!(f.known_in("zone", ""), 4, "nobody carries a zone label");
        f.touch("b", &labels(&[("cluster", "c2")]), t); // moved
        assert_eq!(
            (f.known_in("cluster", "c1"), f.known_in("cluster", "c2")),
            (1, 2)
        );
        // A cluster-wide alert's entry is no machine: no domain grows by it.
        let d = f.touch_domain("cluster=c1", &labels(&[("cluster", "c1")]), t);
        assert!(f.is_domain(d) && f.is_domain_named("cluster=c1") && !f.is_domain_named("a"));
        assert_eq!(f.known_in("cluster", "c1"), 1);
        assert_eq!(f.known_in("zone", ""), 4);
        assert_eq!(f.known_nodes(), 4);
        assert_eq!(
            f.labels_of(NodeId(0)),
            [
                ("cluster".to_string(), "c1".to_string()),
                ("rack".into(), "r1".into())
            ]
        );
    }

    #[test]
    fn idle_nodes_are_forgotten_and_come_back_new() {
        let mut f = Fleet::new(HistoryLimits::default());
        let ty = f.symbols.intern("kubelet.crash");
        let rack = |r: usize| {
            let mut l = Labels::default();
            l.insert("rack", format!("r{r}"));
            l
        };
        for i in 0..1000 {
            let id = f.touch(&format!("node-{i:04}"), &rack(i % 2), at(i as i64));
            f.record(id, ty, at(i as i64));
        }
        let busy = f.find_node("node-0001").unwrap();
        let gone = f.forget(at(500), |id| id == busy);
        assert_eq!(gone.len(), 499, "nodes 0..500 idle, one of them kept");
        assert_eq!(f.known_nodes(), 501);
        assert_eq!(f.known_in("rack", "r0") + f.known_in("rack", "r1"), 501);
        assert_eq!(
            f.known_in("rack", "r1"),
            251,
            "250 idle odd nodes, one kept"
        );
        for i in 0..1000 {
            let name = format!("node-{i:04}");
            assert_eq!(
                f.find_node(&name).is_some(),
                i >= 500 || i == 1,
                "{name} after forgetting"
            );
        }
        // Back: a new node, with no history, in its domain again.
        let back = f.touch("node-0002", &rack(0), at(2000));
        assert_eq!(f.count_within(back, ty, 100_000, at(2000)), 0);
        assert_eq!(f.known_in("rack", "r0"), 251);
        // Slots are reused, every name still found.
        for i in 0..600 {
            f.touch(&format!("new-{i}"), &rack(3), at(3000));
        }
        assert_eq!(f.known_nodes(), 502 + 600);
        for i in 0..600 {
            assert!(f.find_node(&format!("new-{i}")).is_some());
        }
        assert!(f.find_node("node-0999").is_some() && f.find_node("node-0003").is_none());
    }

    proptest::proptest! {
        /// Removing from the open-addressing table never loses another entry.
        #[test]
        fn slots_find_every_entry_after_any_removals(
            ops in proptest::collection::vec((proptest::bool::ANY, 0u32..64), 1..400),
        ) {
            let mut slots = Slots::default();
            let mut model: std::collections::BTreeMap<u32, u32> = Default::default();
            let mut next = 0u32;
            for (add, key) in ops {
                // Few distinct hashes so probe runs collide and wrap.
                let hash = key.wrapping_mul(0x9e37_79b9) >> 3 | (key % 4);
                if add || model.is_empty() {
                    slots.insert(hash, next, model.len() + 1, 7);
                    model.insert(next, hash);
                    next += 1;
                } else {
                    let (&id, &h) = model.iter().nth(key as usize % model.len()).unwrap();
                    slots.remove(h, id);
                    model.remove(&id);
                }
                for (&id, &h) in &model {
                    proptest::prop_assert_eq!(slots.find(h, |x| x == id), Some(id));
                }
            }
        }
    }
}
