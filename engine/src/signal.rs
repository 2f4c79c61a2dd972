//! The signal: one observation about one node (contract section 2).
//!
//! This is the single definition of the input schema; HTTP, Kafka and replay
//! all decode through [`Signal::from_json`]. The decoder is written by hand
//! rather than derived so that unknown fields are kept without serde's slow
//! `flatten` buffering, known keys are matched without allocating, and every
//! error names the field a producer must fix.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Timestamp;

/// Signal type whose only meaning is "this node exists and is alive".
pub const HEARTBEAT: &str = "node.heartbeat";

/// The broad class of what a signal reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// DIMM, disk, PSU, motherboard...
    Hardware,
    /// kubelet, container runtime, system services...
    Component,
    /// load, memory or disk pressure...
    Resource,
}

impl Kind {
    /// The contract's name for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hardware => "hardware",
            Kind::Component => "component",
            Kind::Resource => "resource",
        }
    }

    /// Parses the contract's name (exact, lower case).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "hardware" => Some(Kind::Hardware),
            "component" => Some(Kind::Component),
            "resource" => Some(Kind::Resource),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signal's labels, string to string, in the order they arrived. Failure
/// domains (`rack`, `idc`, `cluster`) live here. A handful of entries is the
/// norm, so a vector beats a map for both decoding and lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(pub Vec<(String, String)>);

/// A report of a node's observed state (contract 10): a component's
/// version, or whether a condition holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Report<'a> {
    /// `component.version` with labels `component` and `version`.
    Version {
        /// The component.
        component: &'a str,
        /// Its version.
        version: &'a str,
    },
    /// `condition` with label `condition` and value 1 (holds) or 0 (does
    /// not); any other value or none: unknown.
    Condition {
        /// The condition.
        condition: &'a str,
        /// Holds, does not, or unknown.
        holds: Option<bool>,
    },
}

/// The label keys of a state report: what it is about, not the node.
const REPORT_KEYS: [&str; 3] = ["component", "version", "condition"];

impl Labels {
    /// The value of a label, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a label, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Iterates over `(key, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No labels at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The labels that name a failure domain, outermost first: a signal that
/// names no node (a cluster-wide alert) is about the domain these say.
pub const DOMAIN_LABELS: [&str; 6] = ["region", "zone", "datacenter", "idc", "cluster", "rack"];

/// One observation about one node.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    /// The node it is about (required).
    pub node: String,
    /// hardware, component or resource (required).
    pub kind: Kind,
    /// Dotted type name such as `memory.ecc.uncorrectable`, or an alert name (required).
    pub r#type: String,
    /// Event time; `None` means "the time of ingestion", decided by the caller.
    pub ts: Option<Timestamp>,
    /// A measured value, e.g. load per core.
    pub value: Option<f64>,
    /// Labels, including failure domains.
    pub labels: Labels,
    /// Free text from the producer.
    pub message: Option<String>,
    /// The condition behind this type has cleared on this node.
    pub resolved: bool,
    /// Producer's idempotency key: a repeated id is ignored.
    pub id: Option<String>,
    /// Fields the contract does not name, kept for rules in arrival order.
    pub extra: Vec<(String, Value)>,
    /// A condition its source repeats while it holds (a firing alert, a
    /// scraped or queried gauge), not a one-off event: the faults it opens
    /// go stale when it stops coming. Set by the collectors, not in JSON.
    pub condition: bool,
}

impl Signal {
    /// The observed state this signal reports, if it is a state report
    /// (`component.version` or `condition`) naming what it is about.
    pub fn report(&self) -> Option<Report<'_>> {
        match self.r#type.as_str() {
            "component.version" => Some(Report::Version {
                component: self.labels.get("component")?,
                version: self.labels.get("version")?,
            }),
            "condition" => Some(Report::Condition {
                condition: self.labels.get("condition")?,
                holds: match self.value {
                    Some(1.0) => Some(true),
                    Some(0.0) => Some(false),
                    _ => None,
                },
            }),
            _ => None,
        }
    }

    /// The labels that describe the node: a state report's `component`,
    /// `version` and `condition` say what it reports, and would otherwise
    /// become node labels (and change its failure domains on every report).
    pub fn node_labels(&self) -> std::borrow::Cow<'_, Labels> {
        if self.report().is_none() {
            return std::borrow::Cow::Borrowed(&self.labels);
        }
        std::borrow::Cow::Owned(Labels(
            self.labels
                .0
                .iter()
                .filter(|(k, _)| !REPORT_KEYS.contains(&k.as_str()))
                .cloned()
                .collect(),
        ))
    }
}

impl Signal {
    /// A domain signal (contract section 7): about no node, about the
    /// failure domain its labels name (an alert that names no node).
    pub fn is_domain(&self) -> bool {
        self.node.is_empty()
    }

    /// A domain signal's failure-domain labels, in [`DOMAIN_LABELS`] order.
    pub fn domain(&self) -> Vec<(&'static str, &str)> {
        DOMAIN_LABELS
            .iter()
            .filter_map(|&k| self.labels.get(k).map(|v| (k, v)))
            .collect()
    }

    /// The name a domain signal's faults are kept under: its domain as
    /// `cluster=c1` (`zone=z1,cluster=c1` for several labels), `fleet` when it
    /// carries none. Never a Kubernetes node name (those have no `=`).
    pub fn domain_key(&self) -> String {
        let domain = self.domain();
        if domain.is_empty() {
            return "fleet".to_string();
        }
        domain
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A signal with only the required fields set.
    pub fn new(node: impl Into<String>, kind: Kind, r#type: impl Into<String>) -> Self {
        Signal {
            node: node.into(),
            kind,
            r#type: r#type.into(),
            ts: None,
            value: None,
            labels: Labels::default(),
            message: None,
            resolved: false,
            id: None,
            extra: Vec::new(),
            condition: false,
        }
    }

    /// Decodes one JSON object. The error says which field is wrong and why.
    pub fn from_json(text: &str) -> Result<Signal, DecodeError> {
        serde_json::from_str(text).map_err(DecodeError::from_json)
    }

    /// Decodes one already-parsed JSON value (used where the JSON is nested
    /// inside something else, e.g. a test case).
    pub fn from_value(value: Value) -> Result<Signal, DecodeError> {
        serde_json::from_value(value).map_err(DecodeError::from_json)
    }

    /// An unknown field by name.
    pub fn extra(&self, name: &str) -> Option<&Value> {
        self.extra.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Encodes as one JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a signal always serialises")
    }
}

/// Why a line is not a valid signal. The text is meant for the producer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    fn from_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let text = e.to_string();
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                // serde_json says "at line 1 column N"; for one record the column is what helps.
                let what = text.split(" at line ").next().unwrap_or(&text);
                DecodeError(format!("not valid JSON: {what} at column {}", e.column()))
            }
            Category::Data => {
                let what = text.split(" at line ").next().unwrap_or(&text);
                DecodeError(what.to_string())
            }
        }
    }
}

/// Known keys, matched without allocating.
enum Field {
    Node,
    Kind,
    Type,
    Ts,
    Value,
    Labels,
    Message,
    Resolved,
    Id,
    Other(String),
}

impl Field {
    fn from_str(key: &str) -> Field {
        match key {
            "node" => Field::Node,
            "kind" => Field::Kind,
            "type" => Field::Type,
            "ts" => Field::Ts,
            "value" => Field::Value,
            "labels" => Field::Labels,
            "message" => Field::Message,
            "resolved" => Field::Resolved,
            "id" => Field::Id,
            other => Field::Other(other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field::from_str(v))
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

/// Reads the value of a field, prefixing any error with the field's name.
fn value_of<'de, A, T>(map: &mut A, name: &str) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    map.next_value::<T>()
        .map_err(|e| de::Error::custom(format!("field \"{name}\": {e}")))
}

/// Like [`value_of`], with a seed.
fn seeded_value_of<'de, A, S>(map: &mut A, name: &str, seed: S) -> Result<S::Value, A::Error>
where
    A: MapAccess<'de>,
    S: DeserializeSeed<'de>,
{
    map.next_value_seed(seed)
        .map_err(|e| de::Error::custom(format!("field \"{name}\": {e}")))
}

fn set_once<T, E: de::Error>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::custom(format!("field \"{name}\" appears twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// A non-empty string.
struct NonEmpty;

impl<'de> DeserializeSeed<'de> for NonEmpty {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(de::Error::custom("must not be empty"));
        }
        Ok(s)
    }
}

/// `hardware`, `component` or `resource`.
struct KindSeed;

impl<'de> DeserializeSeed<'de> for KindSeed {
    type Value = Kind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Kind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of \"hardware\", \"component\", \"resource\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
                Kind::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "unknown kind {v:?}, expected one of \"hardware\", \"component\", \"resource\""
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// An object of string values, kept in order.
struct LabelsSeed;

impl<'de> DeserializeSeed<'de> for LabelsSeed {
    type Value = Labels;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Labels, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Labels, E> {
                Ok(Labels::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut labels = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<String>().map_err(|e| {
                        de::Error::custom(format!("label {key:?} must be a string ({e})"))
                    })?;
                    labels.push((key, value));
                }
                Ok(Labels(labels))
            }
        }
        d.deserialize_any(V)
    }
}

struct SignalVisitor;

impl<'de> Visitor<'de> for SignalVisitor {
    type Value = Signal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a signal object with \"node\", \"kind\" and \"type\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Signal, A::Error> {
        let mut node = None;
        let mut kind = None;
        let mut r#type = None;
        let mut ts = None;
        let mut value = None;
        let mut labels = None;
        let mut message = None;
        let mut resolved = None;
        let mut id = None;
        let mut extra = Vec::new();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Node => {
                    let v = seeded_value_of(&mut map, "node", NonEmpty)?;
                    set_once(&mut node, "node", v)?;
                }
                Field::Kind => {
                    let v = seeded_value_of(&mut map, "kind", KindSeed)?;
                    set_once(&mut kind, "kind", v)?;
                }
                Field::Type => {
                    let v = seeded_value_of(&mut map, "type", NonEmpty)?;
                    set_once(&mut r#type, "type", v)?;
                }
                Field::Ts => {
                    let v: Option<Timestamp> = value_of(&mut map, "ts")?;
                    set_once(&mut ts, "ts", v)?;
                }
                Field::Value => {
                    let v: Option<f64> = value_of(&mut map, "value")?;
                    set_once(&mut value, "value", v)?;
                }
                Field::Labels => {
                    let v = seeded_value_of(&mut map, "labels", LabelsSeed)?;
                    set_once(&mut labels, "labels", v)?;
                }
                Field::Message => {
                    let v: Option<String> = value_of(&mut map, "message")?;
                    set_once(&mut message, "message", v)?;
                }
                Field::Resolved => {
                    let v: Option<bool> = value_of(&mut map, "resolved")?;
                    set_once(&mut resolved, "resolved", v)?;
                }
                Field::Id => {
                    let v: Option<String> = value_of(&mut map, "id")?;
                    set_once(&mut id, "id", v)?;
                }
                Field::Other(name) => {
                    let v: Value = value_of(&mut map, &name)?;
                    extra.push((name, v));
                }
            }
        }
        let missing = |name: &str| de::Error::custom(format!("missing required field \"{name}\""));
        Ok(Signal {
            node: node.ok_or_else(|| missing("node"))?,
            kind: kind.ok_or_else(|| missing("kind"))?,
            r#type: r#type.ok_or_else(|| missing("type"))?,
            ts: ts.flatten(),
            value: value.flatten(),
            labels: labels.unwrap_or_default(),
            message: message.flatten(),
            resolved: resolved.flatten().unwrap_or(false),
            id: id.flatten(),
            extra,
            condition: false,
        })
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SignalVisitor)
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct LabelsOut<'a>(&'a Labels);
        impl Serialize for LabelsOut<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter())
            }
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("node", &self.node)?;
        m.serialize_entry("kind", self.kind.as_str())?;
        m.serialize_entry("type", &self.r#type)?;
        if let Some(ts) = self.ts {
            m.serialize_entry("ts", &ts)?;
        }
        if let Some(v) = self.value {
            m.serialize_entry("value", &v)?;
        }
        if !self.labels.is_empty() {
            m.serialize_entry("labels", &LabelsOut(&self.labels))?;
        }
        if let Some(msg) = &self.message {
            m.serialize_entry("message", msg)?;
        }
        if self.resolved {
            m.serialize_entry("resolved", &true)?;
        }
        if let Some(id) = &self.id {
            m.serialize_entry("id", id)?;
        }
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_contract_example_and_keeps_unknown_fields() {
        let line = r#"{"node": "node-0042", "kind": "hardware", "type": "memory.ecc.uncorrectable",
 "ts": "2026-11-24T23:58:07Z", "value": 3,
 "labels": {"rack": "r12", "idc": "hz1", "cluster": "c1"},
 "message": "EDAC MC0: 1 UE memory read error", "resolved": false, "id": "producer key",
 "dimm": {"slot": "A1"}}"#;
        let s = Signal::from_json(line).unwrap();
        assert_eq!(s.node, "node-0042");
        assert_eq!(s.kind, Kind::Hardware);
        assert_eq!(s.r#type, "memory.ecc.uncorrectable");
        assert_eq!(s.ts.unwrap().to_string(), "2026-11-24T23:58:07Z");
        assert_eq!(s.value, Some(3.0));
        assert_eq!(s.labels.get("rack"), Some("r12"));
        assert_eq!(s.labels.get("cluster"), Some("c1"));
        assert_eq!(s.id.as_deref(), Some("producer key"));
        assert_eq!(s.extra("dimm").unwrap()["slot"], "A1");
        let again = Signal::from_json(&s.to_json()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn only_node_kind_and_type_are_required() {
        let s = Signal::from_json(r#"{"node":"n1","kind":"resource","type":"load.high"}"#).unwrap();
        assert_eq!(s.ts, None);
        assert!(!s.resolved);
        assert!(s.labels.is_empty());
    }

    fn reason(line: &str) -> String {
        Signal::from_json(line).unwrap_err().to_string()
    }

    #[test]
    fn every_error_names_the_field() {
        assert_eq!(
            reason(r#"{"kind":"hardware","type":"x"}"#),
            "missing required field \"node\""
        );
        assert_eq!(
            reason(r#"{"node":"n","type":"x"}"#),
            "missing required field \"kind\""
        );
        let r = reason(r#"{"node":"n","kind":"hw","type":"x"}"#);
        assert!(r.starts_with("field \"kind\": unknown kind \"hw\""), "{r}");
        let r = reason(r#"{"node":"n","kind":"hardware","type":"x","ts":"yesterday"}"#);
        assert!(
            r.starts_with("field \"ts\": expected an RFC 3339 timestamp"),
            "{r}"
        );
        let r = reason(r#"{"node":"n","kind":"hardware","type":"x","value":"high"}"#);
        assert!(r.starts_with("field \"value\": invalid type"), "{r}");
        let r = reason(r#"{"node":"n","kind":"hardware","type":"x","labels":{"rack":12}}"#);
        assert!(
            r.contains("field \"labels\": label \"rack\" must be a string"),
            "{r}"
        );
        let r = reason(r#"{"node":5,"kind":"hardware","type":"x"}"#);
        assert!(
            r.starts_with("field \"node\": invalid type: integer"),
            "{r}"
        );
        let r = reason(r#"{"node":"","kind":"hardware","type":"x"}"#);
        assert_eq!(r, "field \"node\": must not be empty");
        let r = reason(r#"{"node":"a","node":"b","kind":"hardware","type":"x"}"#);
        assert_eq!(r, "field \"node\" appears twice");
    }

    #[test]
    fn non_json_and_non_objects_are_rejected_with_a_position() {
        let r = reason("not json");
        assert!(r.starts_with("not valid JSON"), "{r}");
        let r = reason(r#"{"node":"n","kind":"hardware""#);
        assert!(r.starts_with("not valid JSON"), "{r}");
        let r = reason("[1,2]");
        assert!(r.contains("expected a signal object"), "{r}");
    }

    #[test]
    fn null_optional_fields_mean_absent() {
        let s = Signal::from_json(
            r#"{"node":"n","kind":"hardware","type":"x","ts":null,"value":null,"labels":null,"id":null}"#,
        )
        .unwrap();
        assert_eq!((s.ts, s.value, s.id), (None, None, None));
    }
}
