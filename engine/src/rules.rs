//! The rule runtime: SRE-written Rhai scripts that classify signals into
//! faults (contract section 3).
//!
//! Every `*.rhai` file under the rules directory is one rule, named by its
//! path relative to that directory. Each is compiled once; its top-level code
//! runs once at load (so `const` values are computed once and then inlined
//! into `classify` by re-optimising the script); `const TYPES` indexes the rule
//! by signal type so a signal meets only the rules that asked for it.
//!
//! Rules run sandboxed: no `eval`, no modules, no I/O (Rhai has none unless a
//! host registers it, and we register only pure lookups), and bounds on
//! operations, call depth, expression depth and data sizes. A rule that hits a
//! bound or throws yields a [`RuleError`]; other rules still see the signal.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rhai::{
    Array, CallFnOptions, Dynamic, Engine as Rhai, EvalAltResult, ImmutableString, Map,
    OptimizationLevel, Position, Scope, AST,
};
use rustc_hash::FxHashMap;

use crate::decision::Severity;
use crate::fleet::{Fleet, Sym};
use crate::signal::{Kind, Signal};
use crate::time::Timestamp;

/// What rules may consume. Generous for classification logic, tight enough
/// that a runaway rule is stopped within about a millisecond.
#[derive(Clone, Copy, Debug)]
pub struct Sandbox {
    /// Rhai operations per `classify` call (and for a rule's top-level code at load).
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_levels: usize,
    /// Expression nesting at top level and inside functions.
    pub max_expr_depth: (usize, usize),
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Elements in one array.
    pub max_array_size: usize,
    /// Entries in one object map.
    pub max_map_size: usize,
    /// Variables in scope at once.
    pub max_variables: usize,
    /// Functions one script may define.
    pub max_functions: usize,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            max_operations: 100_000,
            max_call_levels: 32,
            max_expr_depth: (64, 32),
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 1_000,
            max_variables: 256,
            max_functions: 64,
        }
    }
}

/// State that host functions read while a rule runs: the fleet and the
/// current event time. Shared with the lifecycle, which mutates it only
/// between rule calls.
#[derive(Debug, Default)]
pub struct World {
    /// Nodes, histories, open faults.
    pub fleet: Fleet,
    /// Event time of the signal being classified (what `events_within`
    /// counts back from: the history is kept in event time).
    pub now: Timestamp,
    /// The lifecycle's clock at this signal (what faults are opened on:
    /// the signal's time in replay, the service's clock in `run`), which
    /// `nodes_within` counts back from.
    pub clock: Timestamp,
    /// Output of `print`/`debug` from rules since it was last drained.
    pub prints: Vec<String>,
    /// How often each repair worked, for `efficacy()` and `demote`.
    pub efficacy: crate::efficacy::Ledger,
}

/// The signal as a rule sees it (`s` in `classify(s)`): one read-only object
/// map, shared by reference with every rule call and refilled in place for
/// each signal. Rhai reads a map property directly, where a custom type's
/// getter is a full native call; and a shared value is not copied per call.
///
/// Read-only means a rule cannot assign to `s` or change an existing field,
/// and so cannot change what the next rule sees. Rhai does let a rule add a
/// key to a nested map (`s.labels.x = 1`); [`SignalArg::after_call`] notices
/// that by size and rebuilds the nested values before the next rule runs.
#[derive(Debug)]
pub struct SignalArg {
    map: Dynamic,
    /// Unknown fields of the current signal (removed before the next one).
    extra: Vec<String>,
    /// Entries in `labels` as filled, to notice additions by a rule.
    labels_len: usize,
    /// Whether an unknown field holds a map or array (which a rule could grow).
    nested_extra: bool,
    kinds: [ImmutableString; 3],
}

/// The contract's fields of `s`, in key order (the order of an object map).
const FIELDS: [&str; 9] = [
    "id", "kind", "labels", "message", "node", "resolved", "ts", "type", "value",
];

const KINDS: [Kind; 3] = [Kind::Hardware, Kind::Component, Kind::Resource];

impl Default for SignalArg {
    fn default() -> Self {
        let map: Map = FIELDS.iter().map(|&f| (f.into(), Dynamic::UNIT)).collect();
        SignalArg {
            map: Dynamic::from_map(map).into_read_only().into_shared(),
            extra: Vec::new(),
            labels_len: 0,
            nested_extra: false,
            kinds: KINDS.map(|k| k.as_str().into()),
        }
    }
}

impl SignalArg {
    /// Makes `s` show `signal`. `node` and `type_name` are its node and type as
    /// (cached) Rhai strings (no node: a domain signal, `s.node == ()`);
    /// `label_value` gives a label value as one.
    pub fn fill(
        &mut self,
        signal: &Signal,
        node: Option<ImmutableString>,
        type_name: ImmutableString,
        mut label_value: impl FnMut(&str) -> ImmutableString,
    ) {
        let mut guard = self
            .map
            .write_lock::<Map>()
            .expect("the signal map is a map");
        let map = &mut *guard;
        for key in self.extra.drain(..) {
            map.remove(key.as_str());
        }
        // With the unknown fields gone the map holds exactly FIELDS, which
        // are in key order: fill the slots in place, no key lookups.
        debug_assert!(map.keys().map(|k| k.as_str()).eq(FIELDS));
        let kind = KINDS.iter().position(|&k| k == signal.kind).unwrap_or(0);
        let mut slots = map.values_mut();
        let put = |slot: Option<&mut Dynamic>, value: Dynamic| {
            if let Some(slot) = slot {
                *slot = value.into_read_only();
            }
        };
        put(slots.next(), opt_text(&signal.id));
        put(slots.next(), self.kinds[kind].clone().into());
        let labels = fill_labels(slots.next(), signal, &mut label_value);
        put(slots.next(), opt_text(&signal.message));
        put(slots.next(), node.map_or(Dynamic::UNIT, Into::into));
        put(slots.next(), signal.resolved.into());
        put(slots.next(), signal.ts.map_or(0, Timestamp::secs).into());
        put(slots.next(), type_name.into());
        put(
            slots.next(),
            signal.value.map_or(Dynamic::UNIT, Dynamic::from_float),
        );
        self.labels_len = labels;
        self.nested_extra = false;
        for (key, value) in &signal.extra {
            let value = extra_value(value);
            self.nested_extra |= value.is_map() || value.is_array();
            map.insert(key.as_str().into(), value);
            self.extra.push(key.clone());
        }
    }

    /// The argument for one call.
    fn arg(&self) -> Dynamic {
        self.map.clone()
    }

    /// Undoes what a rule may have added to nested values of `s`.
    fn after_call(&mut self, signal: &Signal) {
        let mut guard = self
            .map
            .write_lock::<Map>()
            .expect("the signal map is a map");
        let map = &mut *guard;
        let grown = map
            .get("labels")
            .and_then(|l| l.read_lock::<Map>().map(|l| l.len() != self.labels_len))
            .unwrap_or(true);
        if grown {
            map.insert("labels".into(), labels_value(signal, &mut |v| v.into()));
        }
        if self.nested_extra {
            for (key, value) in &signal.extra {
                map.insert(key.as_str().into(), extra_value(value));
            }
        }
    }
}

/// Fills the `labels` slot: in place when the keys are those of the last
/// signal (the common case: a fleet labels every node alike), else anew.
/// Returns the number of labels.
fn fill_labels(
    slot: Option<&mut Dynamic>,
    signal: &Signal,
    label_value: &mut impl FnMut(&str) -> ImmutableString,
) -> usize {
    let Some(slot) = slot else {
        return 0;
    };
    let reused = slot.write_lock::<Map>().is_some_and(|mut labels| {
        labels.len() == signal.labels.len()
            && signal.labels.iter().all(|(k, v)| match labels.get_mut(k) {
                Some(value) => {
                    *value = Dynamic::from(label_value(v)).into_read_only();
                    true
                }
                None => false,
            })
    });
    if !reused {
        *slot = labels_value(signal, label_value);
    }
    signal.labels.len()
}

/// `s.labels`: a read-only map of the signal's labels.
fn labels_value(signal: &Signal, label_value: &mut impl FnMut(&str) -> ImmutableString) -> Dynamic {
    let labels: Map = signal
        .labels
        .iter()
        .map(|(k, v)| (k.into(), Dynamic::from(label_value(v)).into_read_only()))
        .collect();
    Dynamic::from_map(labels).into_read_only()
}

/// An unknown field as a read-only Rhai value (`()` if it cannot be one).
fn extra_value(value: &serde_json::Value) -> Dynamic {
    rhai::serde::to_dynamic(value)
        .unwrap_or(Dynamic::UNIT)
        .into_read_only()
}

fn opt_text(t: &Option<String>) -> Dynamic {
    t.as_deref()
        .map_or(Dynamic::UNIT, |t| ImmutableString::from(t).into())
}

/// A rule's answer: the signal shows this fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Classification {
    /// Fault class, snake_case.
    pub fault: String,
    /// Severity (default warning).
    pub severity: Severity,
    /// Why, for humans.
    pub reason: Option<String>,
    /// Actions replacing the policy's first step.
    pub actions: Option<Vec<String>>,
}

/// A rule failed on a signal (threw, hit a sandbox bound, or answered nonsense).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule}{}: {message}", at(*.line, *.column))]
pub struct RuleError {
    /// The rule's name.
    pub rule: String,
    /// Where in the script, when known.
    pub line: Option<usize>,
    /// Column, when known.
    pub column: Option<usize>,
    /// What went wrong.
    pub message: String,
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at {l}:{c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// A problem found while loading rules: `path:line:col: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file, as given (rules dir joined with the rule's name).
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Loading a rule set failed; every problem found is listed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The rules directory could not be read.
    #[error("rules directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory holds no rule at all.
    #[error("rules directory {}: no *.rhai rules found", path.display())]
    Empty {
        /// The directory.
        path: PathBuf,
    },
    /// One or more rules are invalid.
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Each problem, in path order.
        problems: Vec<Problem>,
    },
}

/// One compiled rule.
struct Rule {
    name: String,
    /// [`content_hash`] of its source.
    hash: String,
    ast: AST,
    types: Option<Vec<String>>,
    /// `VALUE_ABOVE`: per type, the value a signal must exceed to be asked about.
    value_above: Vec<(String, f64)>,
    /// `EVENTS_AT_LEAST`: per type, how many signals of it the node must
    /// have sent within how many seconds for this one to be asked about.
    events_at_least: Vec<(String, (usize, i64))>,
}

/// What a signal of one type must show before one rule is asked about it:
/// the rule's own declaration that it has nothing to say otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Gate {
    /// `VALUE_ABOVE`: the signal's value must exceed this.
    pub value_above: Option<f64>,
    /// `EVENTS_AT_LEAST`: `events_within(node, type, seconds)` must reach this count.
    pub events_at_least: Option<(usize, i64)>,
}

impl Gate {
    fn is_open(&self) -> bool {
        self.value_above.is_none() && self.events_at_least.is_none()
    }
}

/// Every rule of a directory, compiled and indexed by signal type.
pub struct RuleSet {
    rhai: Rhai,
    rules: Vec<Rule>,
    by_type: FxHashMap<Sym, Vec<usize>>,
    /// For types some rule gates (`VALUE_ABOVE`, `EVENTS_AT_LEAST`): one
    /// entry per rule in `by_type`'s list.
    gates: FxHashMap<Sym, Vec<Gate>>,
    catch_all: Vec<usize>,
    scope: RefCell<Scope<'static>>,
    world: Rc<RefCell<World>>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

/// Builds the sandboxed Rhai engine with the host functions bound to `world`.
fn sandboxed_engine(limits: &Sandbox, world: &Rc<RefCell<World>>) -> Rhai {
    let mut rhai = Rhai::new();
    rhai.set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth.0, limits.max_expr_depth.1)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_variables(limits.max_variables)
        .set_max_functions(limits.max_functions)
        // Inline constants and fold operators; never call host functions at compile time.
        .set_optimization_level(OptimizationLevel::Simple)
        // Rhai interns strings held in variables in a small cache; with a fleet's worth
        // of distinct node names it overflows on nearly every call and each eviction
        // scans the whole cache. Plain allocation is cheaper here.
        .set_max_strings_interned(0);
    rhai.disable_symbol("eval");

    let w = world.clone();
    rhai.on_print(move |text| w.borrow_mut().prints.push(text.to_string()));
    let w = world.clone();
    rhai.on_debug(move |text, _src, pos| {
        w.borrow_mut()
            .prints
            .push(format!("{text}{}", at(pos.line(), pos.position())))
    });

    let w = world.clone();
    rhai.register_fn(
        "events_within",
        move |node: &str, r#type: &str, seconds: i64| -> i64 {
            let w = w.borrow();
            w.fleet.events_within(node, r#type, seconds, w.now) as i64
        },
    );
    let w = world.clone();
    rhai.register_fn(
        "nodes_within",
        move |fault: &str, label: &str, value: &str, seconds: i64| -> i64 {
            let w = w.borrow();
            w.fleet.nodes_within(fault, label, value, seconds, w.clock) as i64
        },
    );
    // A missing label is `()`: asking about it is simply zero nodes.
    rhai.register_fn("nodes_within", |_: &str, _: &str, _: (), _: i64| -> i64 {
        0
    });
    let w = world.clone();
    rhai.register_fn("efficacy", move |fault: &str, action: &str| -> rhai::Map {
        let w = w.borrow();
        let stats = w.efficacy.stats(fault, action, w.clock);
        let mut map = rhai::Map::new();
        map.insert("runs".into(), Dynamic::from(stats.runs as i64));
        let rate = stats.success_rate();
        map.insert(
            "success_rate".into(),
            rate.map_or(Dynamic::UNIT, Dynamic::from_float),
        );
        map.insert(
            "median_secs".into(),
            stats.median_secs.map_or(Dynamic::UNIT, Dynamic::from_float),
        );
        map
    });
    let w = world.clone();
    rhai.register_fn("has_fault", move |node: &str, fault: &str| -> bool {
        w.borrow().fleet.has_fault(node, fault)
    });
    rhai
}

/// The 1-based line and column of the first line of `source` that mentions `needle`.
fn locate(source: &str, needle: &str) -> (usize, usize) {
    source
        .lines()
        .enumerate()
        .find_map(|(i, line)| line.find(needle).map(|c| (i + 1, c + 1)))
        .unwrap_or((1, 1))
}

fn position(pos: Position) -> (usize, usize) {
    (pos.line().unwrap_or(1), pos.position().unwrap_or(1))
}

/// The innermost error of a chain of function-call wrappers, which is the one
/// with a useful position and message.
fn innermost(err: EvalAltResult) -> EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => innermost(*inner),
        other => other,
    }
}

fn describe(err: EvalAltResult) -> (Option<usize>, Option<usize>, String) {
    let mut err = innermost(err);
    let pos = err.take_position();
    let message = match &err {
        EvalAltResult::ErrorTooManyOperations(_) => {
            "stopped: too many operations (sandbox limit)".to_string()
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            "stopped: call depth limit reached (sandbox limit)".to_string()
        }
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            format!("stopped: {what} over the sandbox limit")
        }
        other => other.to_string(),
    };
    (pos.line(), pos.position(), message)
}

/// `true` for `snake_case` names: lowercase ASCII letters, digits and `_`, starting with a letter.
fn is_snake_case(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Turns `classify`'s return value into an answer.
fn parse_answer(value: Dynamic) -> Result<Option<Classification>, String> {
    if value.is_unit() {
        return Ok(None);
    }
    let type_name = value.type_name();
    let Some(mut map) = value.try_cast::<Map>() else {
        return Err(format!(
            "classify must return () or a map with a `fault`, got {type_name}"
        ));
    };
    let fault = match map.remove("fault") {
        None => return Err("classify returned a map without `fault`".into()),
        Some(f) => f
            .into_string()
            .map_err(|t| format!("`fault` must be a string, got {t}"))?,
    };
    if !is_snake_case(&fault) {
        return Err(format!("`fault` must be snake_case, got {fault:?}"));
    }
    let severity = match map.remove("severity") {
        None => Severity::Warning,
        Some(s) => {
            let text = s
                .into_string()
                .map_err(|t| format!("`severity` must be a string, got {t}"))?;
            Severity::parse(&text).ok_or_else(|| {
                format!("`severity` must be info, warning or critical, got {text:?}")
            })?
        }
    };
    let reason = match map.remove("reason") {
        None => None,
        Some(r) if r.is_unit() => None,
        Some(r) => Some(r.to_string()),
    };
    let actions = match map.remove("actions") {
        None => None,
        Some(a) if a.is_unit() => None,
        Some(a) => {
            let t = a.type_name();
            let list = a
                .try_cast::<Array>()
                .ok_or_else(|| format!("`actions` must be an array of action names, got {t}"))?;
            let names = list
                .into_iter()
                .map(|v| {
                    v.into_string()
                        .map_err(|t| format!("`actions` must hold strings, got {t}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(names)
        }
    };
    if let Some(key) = map.keys().next() {
        return Err(format!(
            "classify returned an unknown key `{key}` (expected fault, severity, reason, actions)"
        ));
    }
    Ok(Some(Classification {
        fault,
        severity,
        reason,
        actions,
    }))
}

/// Finds every `*.rhai` under `dir`, as (name relative to dir with `/`, full path), sorted by name.
fn discover(dir: &Path) -> Result<Vec<(String, PathBuf)>, LoadError> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            if entry.file_type()?.is_dir() {
                if !name.starts_with('.') {
                    walk(&path, &rel, out)?;
                }
            } else if name.ends_with(".rhai") {
                out.push((rel, path));
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(dir, "", &mut found).map_err(|source| LoadError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    found.sort();
    Ok(found)
}

/// The rule files of a directory, read but not compiled: compile them as
/// often as needed (each compiled set is bound to its own world).
#[derive(Clone, Debug)]
pub struct Sources {
    /// The directory they came from.
    pub dir: PathBuf,
    /// (name relative to `dir` with `/`, path, source text), sorted by name.
    pub files: Vec<(String, PathBuf, String)>,
}

impl Sources {
    /// Reads every `*.rhai` under `dir`.
    pub fn read(dir: &Path) -> Result<Self, LoadError> {
        let found = discover(dir)?;
        if found.is_empty() {
            return Err(LoadError::Empty {
                path: dir.to_path_buf(),
            });
        }
        let mut files = Vec::with_capacity(found.len());
        let mut problems = Vec::new();
        for (name, path) in found {
            // A FIFO or a device named *.rhai would block the read for good.
            if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                problems.push(Problem {
                    path,
                    line: 1,
                    column: 1,
                    message: "not a regular file: skipped (a FIFO or device would block the read)"
                        .into(),
                });
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push((name, path, text)),
                Err(e) => problems.push(Problem {
                    path,
                    line: 1,
                    column: 1,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if !problems.is_empty() {
            return Err(LoadError::Invalid { problems });
        }
        Ok(Sources {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// Compiles them against `world`.
    pub fn compile(
        &self,
        sandbox: &Sandbox,
        world: Rc<RefCell<World>>,
    ) -> Result<RuleSet, LoadError> {
        let refs: Vec<(&str, &Path, &str)> = self
            .files
            .iter()
            .map(|(n, p, t)| (n.as_str(), p.as_path(), t.as_str()))
            .collect();
        RuleSet::compile(&refs, sandbox, world)
    }
}

impl RuleSet {
    /// Reads and compiles every rule under `dir`. On failure, every problem is reported.
    pub fn load(
        dir: &Path,
        sandbox: &Sandbox,
        world: Rc<RefCell<World>>,
    ) -> Result<Self, LoadError> {
        Sources::read(dir)?.compile(sandbox, world)
    }

    /// Compiles rules given as `(name, path for messages, source)`.
    pub fn compile(
        sources: &[(&str, &Path, &str)],
        sandbox: &Sandbox,
        world: Rc<RefCell<World>>,
    ) -> Result<Self, LoadError> {
        let rhai = sandboxed_engine(sandbox, &world);
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for &(name, path, source) in sources {
            match compile_one(&rhai, name, source) {
                Ok(rule) => rules.push(rule),
                Err((line, column, message)) => problems.push(Problem {
                    path: path.to_path_buf(),
                    line,
                    column,
                    message,
                }),
            }
        }
        // Top-level prints at load are not a signal's business.
        world.borrow_mut().prints.clear();
        if !problems.is_empty() {
            return Err(LoadError::Invalid { problems });
        }

        let mut by_type: FxHashMap<Sym, Vec<usize>> = FxHashMap::default();
        let mut catch_all = Vec::new();
        {
            let symbols = &mut world.borrow_mut().fleet.symbols;
            for (i, rule) in rules.iter().enumerate() {
                match &rule.types {
                    None => catch_all.push(i),
                    Some(types) => {
                        for t in types {
                            let list = by_type.entry(symbols.intern(t)).or_default();
                            if !list.contains(&i) {
                                list.push(i);
                            }
                        }
                    }
                }
            }
        }
        // A type's list holds its own rules and the catch-all ones, in rule order.
        for list in by_type.values_mut() {
            list.extend(&catch_all);
            list.sort_unstable();
        }
        let mut gates = FxHashMap::default();
        {
            let w = world.borrow();
            let symbols = &w.fleet.symbols;
            for (&t, list) in &by_type {
                let name = symbols.name(t).to_string();
                let gate: Vec<Gate> = list
                    .iter()
                    .map(|&i| Gate {
                        value_above: find_gate(&rules[i].value_above, &name),
                        events_at_least: find_gate(&rules[i].events_at_least, &name),
                    })
                    .collect();
                if gate.iter().any(|g| !g.is_open()) {
                    gates.insert(t, gate);
                }
            }
        }
        Ok(RuleSet {
            rhai,
            rules,
            by_type,
            gates,
            catch_all,
            scope: RefCell::new(Scope::new()),
            world,
        })
    }

    /// Rule names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// No rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The name of rule `index`.
    pub fn name(&self, index: usize) -> &str {
        &self.rules[index].name
    }

    /// The content hash of rule `index` ([`content_hash`]).
    pub fn hash(&self, index: usize) -> &str {
        &self.rules[index].hash
    }

    /// The index of the rule called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.name == name)
    }

    /// Signal types rule `index` declared in `TYPES`, if it did.
    pub fn types_of(&self, index: usize) -> Option<&[String]> {
        self.rules[index].types.as_deref()
    }

    /// The rules a signal of this (interned) type must meet, in rule order.
    pub fn rules_for(&self, r#type: Sym) -> &[usize] {
        self.by_type
            .get(&r#type)
            .map_or(&self.catch_all, Vec::as_slice)
    }

    /// The gates of [`RuleSet::rules_for`]'s list, one per rule, when any
    /// rule gates this type.
    pub fn gates_for(&self, r#type: Sym) -> Option<&[Gate]> {
        self.gates.get(&r#type).map(Vec::as_slice)
    }

    /// Asks rule `index` to classify the signal in `arg` (which is `signal`).
    /// The world must not be borrowed mutably.
    pub fn classify(
        &self,
        index: usize,
        arg: &mut SignalArg,
        signal: &Signal,
    ) -> Result<Option<Classification>, RuleError> {
        let rule = &self.rules[index];
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        let result = self.rhai.call_fn_with_options::<Dynamic>(
            options,
            &mut self.scope.borrow_mut(),
            &rule.ast,
            "classify",
            (arg.arg(),),
        );
        arg.after_call(signal);
        let error = |line, column, message| RuleError {
            rule: rule.name.clone(),
            line,
            column,
            message,
        };
        match result {
            Ok(value) => parse_answer(value).map_err(|m| error(None, None, m)),
            Err(e) => {
                let (line, column, message) = describe(*e);
                Err(error(line, column, message))
            }
        }
    }

    /// The shared world the host functions read.
    pub fn world(&self) -> &Rc<RefCell<World>> {
        &self.world
    }
}

/// Compiles one rule: parse, run its top-level code once, read `TYPES`,
/// inline its constants into `classify`.
fn compile_one(rhai: &Rhai, name: &str, source: &str) -> Result<Rule, (usize, usize, String)> {
    let ast = rhai.compile(source).map_err(|e| {
        let (line, column) = position(e.position());
        (line, column, e.err_type().to_string())
    })?;
    let classify = ast.iter_functions().find(|f| f.name == "classify");
    match classify {
        None => {
            return Err((1, 1, "rule defines no `classify(s)` function".to_string()));
        }
        Some(f) if f.params.len() != 1 => {
            let (line, column) = locate(source, "fn classify");
            return Err((
                line,
                column,
                format!(
                    "`classify` must take exactly one parameter (the signal), it takes {}",
                    f.params.len()
                ),
            ));
        }
        Some(_) => {}
    }
    let mut scope = Scope::new();
    rhai.run_ast_with_scope(&mut scope, &ast).map_err(|e| {
        let (line, column, message) = describe(*e);
        (
            line.unwrap_or(1),
            column.unwrap_or(1),
            format!("top-level code failed: {message}"),
        )
    })?;
    let types = match scope.get("TYPES") {
        None => None,
        Some(value) => {
            let (line, column) = locate(source, "TYPES");
            let bad = |what: String| (line, column, what);
            let list = value.clone().try_cast::<Array>().ok_or_else(|| {
                bad(format!(
                    "`TYPES` must be an array of signal type names, got {}",
                    value.type_name()
                ))
            })?;
            let mut types = Vec::with_capacity(list.len());
            for item in list {
                let t = item
                    .into_string()
                    .map_err(|t| bad(format!("`TYPES` must hold strings, got {t}")))?;
                if t.trim().is_empty() {
                    return Err(bad("`TYPES` holds an empty type name".into()));
                }
                types.push(t);
            }
            if types.is_empty() {
                return Err(bad("`TYPES` is empty, so the rule would never run".into()));
            }
            Some(types)
        }
    };
    let value_above = gate_map(&scope, source, types.as_ref(), "VALUE_ABOVE", |v| {
        v.as_float()
            .or_else(|_| v.as_int().map(|i| i as f64))
            .map_err(|got| format!("must be a number, got {got}"))
    })?;
    let events_at_least = gate_map(&scope, source, types.as_ref(), "EVENTS_AT_LEAST", |v| {
        let pair = v.clone().into_typed_array::<i64>().ok();
        match pair.as_deref() {
            Some(&[count, seconds]) if count > 0 && seconds > 0 => Ok((count as usize, seconds)),
            _ => Err(format!(
                "must be [count, seconds], two positive whole numbers, got {v}"
            )),
        }
    })?;
    let mut constants = Scope::new();
    for (var, is_constant, value) in scope.iter() {
        if is_constant {
            constants.push_constant_dynamic(var, value);
        }
    }
    let mut ast = rhai.optimize_ast(&constants, ast, OptimizationLevel::Simple);
    ast.set_source(name);
    Ok(Rule {
        name: name.to_string(),
        hash: content_hash(source),
        ast,
        types,
        value_above,
        events_at_least,
    })
}

/// The first 12 hex digits of the SHA-256 of a rule's source: what
/// `sha256sum` prints for its file, so a decision's `rule_hash` names the
/// exact version of the rule that opened the fault.
pub fn content_hash(source: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(source.as_bytes());
    let mut hex = String::with_capacity(12);
    for byte in &digest[..6] {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// The threshold a gate declaration sets for signal type `name`.
fn find_gate<T: Copy>(gates: &[(String, T)], name: &str) -> Option<T> {
    gates.iter().find(|(ty, _)| ty == name).map(|&(_, g)| g)
}

/// A rule's optional gate declaration `NAME`: a map from signal types the
/// rule declares in `TYPES` to a threshold `parse` reads.
fn gate_map<T>(
    scope: &Scope,
    source: &str,
    types: Option<&Vec<String>>,
    name: &str,
    parse: impl Fn(&Dynamic) -> Result<T, String>,
) -> Result<Vec<(String, T)>, (usize, usize, String)> {
    let Some(value) = scope.get(name) else {
        return Ok(Vec::new());
    };
    let (line, column) = locate(source, name);
    let bad = |what: String| (line, column, what);
    let map = value.clone().try_cast::<Map>().ok_or_else(|| {
        bad(format!(
            "`{name}` must be a map of signal type to threshold, got {}",
            value.type_name()
        ))
    })?;
    let Some(types) = types else {
        return Err(bad(format!(
            "`{name}` needs `TYPES`: it gates types the rule declares"
        )));
    };
    let mut gates = Vec::with_capacity(map.len());
    for (t, v) in map {
        let t = t.to_string();
        if !types.contains(&t) {
            return Err(bad(format!(
                "`{name}` names {t:?}, which is not in `TYPES`"
            )));
        }
        let v = parse(&v).map_err(|why| bad(format!("`{name}` for {t:?} {why}")))?;
        gates.push((t, v));
    }
    Ok(gates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Kind;

    fn set(sources: &[(&str, &str)]) -> Result<RuleSet, LoadError> {
        let world = Rc::new(RefCell::new(World::default()));
        let owned: Vec<(&str, &Path, &str)> = sources
            .iter()
            .map(|(n, s)| (*n, Path::new(*n), *s))
            .collect();
        RuleSet::compile(&owned, &Sandbox::default(), world)
    }

    fn view(f: impl FnOnce(&mut Signal)) -> Signal {
        let mut s = Signal::new("n1", Kind::Hardware, "memory.ecc.uncorrectable");
        s.ts = Some(Timestamp::from_secs(1_000));
        f(&mut s);
        s
    }

    fn bind(s: &Signal) -> SignalArg {
        let mut arg = SignalArg::default();
        arg.fill(
            s,
            Some(s.node.as_str().into()),
            s.r#type.as_str().into(),
            |v| v.into(),
        );
        arg
    }

    fn ask(rules: &RuleSet, index: usize, s: &Signal) -> Result<Option<Classification>, RuleError> {
        rules.classify(index, &mut bind(s), s)
    }

    fn problems(e: LoadError) -> Vec<String> {
        match e {
            LoadError::Invalid { problems } => problems.iter().map(ToString::to_string).collect(),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn signal_fields_and_unknown_fields_are_visible() {
        let rules = set(&[(
            "r.rhai",
            r#"fn classify(s) {
                #{ fault: "seen", reason: `${s.node} ${s.kind} ${s.type} ${s.ts} ${s.value} ${s.labels.rack} ${s.labels.missing} ${s.dimm.slot} ${s.nothing} ${s.resolved}` }
            }"#,
        )])
        .unwrap();
        let v = view(|s| {
            s.value = Some(2.5);
            s.labels.insert("rack", "r7");
            s.extra
                .push(("dimm".into(), serde_json::json!({"slot": "A1"})));
        });
        let c = ask(&rules, 0, &v).unwrap().unwrap();
        assert_eq!(
            c.reason.unwrap(),
            "n1 hardware memory.ecc.uncorrectable 1000 2.5 r7  A1  false"
        );
        assert_eq!(c.severity, Severity::Warning);
    }

    #[test]
    fn top_level_constants_are_inlined_into_classify() {
        let rules = set(&[(
            "r.rhai",
            r#"const LIMIT = 2; const NAME = "too_" + "high"; const TYPES = ["load.high"];
               fn classify(s) { if s.value > LIMIT { #{ fault: NAME, severity: "critical" } } }"#,
        )])
        .unwrap();
        let c = ask(&rules, 0, &view(|s| s.value = Some(3.0)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.fault.as_str(), c.severity),
            ("too_high", Severity::Critical)
        );
        assert_eq!(
            ask(&rules, 0, &view(|s| s.value = Some(1.0))).unwrap(),
            None
        );
        assert_eq!(rules.types_of(0).unwrap(), ["load.high"]);
    }

    #[test]
    fn rules_are_indexed_by_declared_types() {
        let rules = set(&[
            (
                "a.rhai",
                r#"const TYPES = ["x", "y"]; fn classify(s) { () }"#,
            ),
            ("b.rhai", r#"fn classify(s) { () }"#),
            ("c.rhai", r#"const TYPES = ["y"]; fn classify(s) { () }"#),
        ])
        .unwrap();
        let world = rules.world().clone();
        let mut w = world.borrow_mut();
        let (x, y, z) = (
            w.fleet.symbols.intern("x"),
            w.fleet.symbols.intern("y"),
            w.fleet.symbols.intern("z"),
        );
        assert_eq!(rules.rules_for(x), [0, 1]);
        assert_eq!(rules.rules_for(y), [0, 1, 2]);
        assert_eq!(rules.rules_for(z), [1]);
    }

    #[test]
    fn compile_problems_carry_line_and_column() {
        let found = problems(
            set(&[
                ("bad.rhai", "fn classify(s) {\n  let x = ;\n}"),
                ("none.rhai", "let x = 1;"),
                ("arity.rhai", "\n\nfn classify(a, b) { () }"),
                ("types.rhai", "const TYPES = \"x\";\nfn classify(s) { () }"),
                ("eval.rhai", "fn classify(s) { eval(\"1\") }"),
            ])
            .unwrap_err(),
        );
        assert!(found[0].starts_with("bad.rhai:2:11: "), "{found:?}");
        assert_eq!(
            found[1],
            "none.rhai:1:1: rule defines no `classify(s)` function"
        );
        assert!(
            found[2].starts_with("arity.rhai:3:1: `classify` must take exactly one parameter"),
            "{found:?}"
        );
        assert!(
            found[3].starts_with("types.rhai:1:7: `TYPES` must be an array"),
            "{found:?}"
        );
        assert!(found[4].starts_with("eval.rhai:1:"), "{found:?}");
        assert_eq!(found.len(), 5);
    }

    #[test]
    fn a_rule_cannot_change_what_the_next_rule_sees() {
        let rules = set(&[
            ("a_assign.rhai", "fn classify(s) { s.value = 99.0; () }"),
            ("b_nested.rhai", "fn classify(s) { s.labels.rack = \"evil\"; () }"),
            ("c_grow.rhai", "fn classify(s) { s.labels.zone = \"z9\"; s.dimm.extra = 1; () }"),
            ("d_clear.rhai", "fn classify(s) { s.labels.clear(); () }"),
            (
                "e_look.rhai",
                "fn classify(s) { #{ fault: \"seen\", reason: `${s.value} ${s.labels} ${s.dimm}` } }",
            ),
        ])
        .unwrap();
        let signal = view(|s| {
            s.value = Some(2.5);
            s.labels.insert("rack", "r7");
            s.extra
                .push(("dimm".into(), serde_json::json!({"slot": "A1"})));
        });
        let mut arg = bind(&signal);
        for index in 0..4 {
            let e = rules.classify(index, &mut arg, &signal);
            assert!(matches!(e, Ok(None) | Err(_)), "{e:?}");
        }
        let c = rules.classify(4, &mut arg, &signal).unwrap().unwrap();
        assert_eq!(c.reason.unwrap(), r#"2.5 #{"rack": "r7"} #{"slot": "A1"}"#);
    }

    #[test]
    fn value_above_gates_a_declared_type_and_is_checked() {
        let rules = set(&[(
            "g.rhai",
            r#"const LIMIT = 2.0; const TYPES = ["load.high", "x"]; const VALUE_ABOVE = #{ "load.high": LIMIT };
               fn classify(s) { () }"#,
        )])
        .unwrap();
        let world = rules.world().clone();
        let (load, x) = {
            let mut w = world.borrow_mut();
            (
                w.fleet.symbols.intern("load.high"),
                w.fleet.symbols.intern("x"),
            )
        };
        let gate = Gate {
            value_above: Some(2.0),
            events_at_least: None,
        };
        assert_eq!(rules.gates_for(load), Some(&[gate][..]));
        assert_eq!(
            rules.gates_for(x),
            None,
            "only the types it names are gated"
        );
        let found = gate_problems("VALUE_ABOVE", "1", &["\"high\""]);
        assert!(
            found[2].contains("`VALUE_ABOVE` for \"x\" must be a number"),
            "{found:?}"
        );
        assert!(found[3].contains("must be a map"), "{found:?}");
    }

    /// The problems of rules declaring gate `name` wrongly: without TYPES,
    /// for an undeclared type (both with threshold `good`), each of `bad`
    /// as the threshold, and not as a map.
    fn gate_problems(name: &str, good: &str, bad: &[&str]) -> Vec<String> {
        let types = "const TYPES = [\"x\"];\n";
        let rule = |decl: String| format!("{decl}\nfn classify(s) {{ () }}");
        let mut sources = vec![
            (
                "a.rhai".to_string(),
                rule(format!("const {name} = #{{ \"x\": {good} }};")),
            ),
            (
                "b.rhai".into(),
                rule(format!("{types}const {name} = #{{ \"y\": {good} }};")),
            ),
        ];
        for (i, value) in bad.iter().enumerate() {
            let decl = format!("{types}const {name} = #{{ \"x\": {value} }};");
            sources.push((format!("c{i}.rhai"), rule(decl)));
        }
        sources.push(("d.rhai".into(), rule(format!("{types}const {name} = 3;"))));
        let list: Vec<(&str, &str)> = sources
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_str()))
            .collect();
        let found = problems(set(&list).unwrap_err());
        assert_eq!(found.len(), sources.len(), "{found:?}");
        assert!(
            found[0].starts_with(&format!("a.rhai:1:7: `{name}` needs `TYPES`")),
            "{found:?}"
        );
        assert!(
            found[1].starts_with(&format!(
                "b.rhai:2:7: `{name}` names \"y\", which is not in `TYPES`"
            )),
            "{found:?}"
        );
        found
    }

    #[test]
    fn events_at_least_gates_a_declared_type_and_is_checked() {
        let rules = set(&[(
            "g.rhai",
            r#"const N = 3; const TYPES = ["crash", "x"]; const EVENTS_AT_LEAST = #{ "crash": [N, 600] };
               fn classify(s) { () }"#,
        )])
        .unwrap();
        let crash = rules.world().borrow_mut().fleet.symbols.intern("crash");
        let gate = Gate {
            value_above: None,
            events_at_least: Some((3, 600)),
        };
        assert_eq!(rules.gates_for(crash), Some(&[gate][..]));
        let found = gate_problems(
            "EVENTS_AT_LEAST",
            "[1, 60]",
            &["3", "[0, 60]", "[2, 60, 1]"],
        );
        for f in &found[2..5] {
            assert!(
                f.contains("`EVENTS_AT_LEAST` for \"x\" must be [count, seconds]"),
                "{found:?}"
            );
        }
        assert!(found[5].contains("must be a map"), "{found:?}");
    }

    #[test]
    fn runaway_rules_are_stopped_and_named() {
        let rules = set(&[
            ("loop.rhai", "fn classify(s) { loop { } }"),
            ("deep.rhai", "fn f(n) { f(n + 1) }\nfn classify(s) { f(0) }"),
            (
                "big.rhai",
                "fn classify(s) { let x = \"a\"; loop { x += x; } }",
            ),
            ("throw.rhai", "fn classify(s) { throw \"no\"; }"),
            (
                "bad_answer.rhai",
                "fn classify(s) { #{ fault: \"Not Snake\" } }",
            ),
        ])
        .unwrap();
        let v = view(|_| {});
        let e = ask(&rules, 0, &v).unwrap_err();
        assert!(e.to_string().starts_with("rule loop.rhai"), "{e}");
        assert!(e.message.contains("too many operations"), "{e}");
        let e = ask(&rules, 1, &v).unwrap_err();
        assert!(e.message.contains("call depth"), "{e}");
        let e = ask(&rules, 2, &v).unwrap_err();
        assert!(e.message.contains("over the sandbox limit"), "{e}");
        let e = ask(&rules, 3, &v).unwrap_err();
        assert!(e.message.contains("no"), "{e}");
        let e = ask(&rules, 4, &v).unwrap_err();
        assert!(e.message.contains("snake_case"), "{e}");
    }

    #[test]
    fn answers_are_validated() {
        assert_eq!(parse_answer(Dynamic::UNIT), Ok(None));
        assert!(parse_answer(Dynamic::from(1_i64))
            .unwrap_err()
            .contains("got i64"));
        let mut m = Map::new();
        m.insert("severity".into(), "critical".into());
        assert!(parse_answer(Dynamic::from_map(m.clone()))
            .unwrap_err()
            .contains("without `fault`"));
        m.insert("fault".into(), "disk_failure".into());
        m.insert("severity".into(), "fatal".into());
        assert!(parse_answer(Dynamic::from_map(m.clone()))
            .unwrap_err()
            .contains("info, warning or critical"));
        m.insert("severity".into(), "critical".into());
        m.insert("actions".into(), Dynamic::from_array(vec!["cordon".into()]));
        let c = parse_answer(Dynamic::from_map(m.clone())).unwrap().unwrap();
        assert_eq!(c.actions.unwrap(), ["cordon"]);
        m.insert("sevrity".into(), "x".into());
        assert!(parse_answer(Dynamic::from_map(m))
            .unwrap_err()
            .contains("unknown key `sevrity`"));
    }
}
