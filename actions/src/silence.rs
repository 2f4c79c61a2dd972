//! Silences: an operator's "leave these alone until T".

use remedy_engine::Timestamp;
use serde::{Deserialize, Serialize};

/// `[[silences]]` in the config, or `POST /v1/silences`. Every matcher that
/// is given must match; labels are matched against the node's labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    /// Assigned when added; given ids are kept.
    #[serde(default)]
    pub id: u64,
    /// Only this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only this fault class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Only nodes carrying all these labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "labels")]
    pub labels: Vec<(String, String)>,
    /// Ends at this time (RFC 3339).
    pub until: Timestamp,
    /// Who and why, for the decision's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Meant for the whole fleet: required when no matcher is given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

impl Silence {
    /// No matcher and not explicitly `all`: it would silence every node,
    /// most likely by mistake.
    pub fn matches_everything(&self) -> bool {
        !self.all && self.node.is_none() && self.fault.is_none() && self.labels.is_empty()
    }

    /// Whether it holds an action on `node` for `fault` at `now`.
    pub fn matches(
        &self,
        node: &str,
        fault: &str,
        labels: &[(String, String)],
        now: Timestamp,
    ) -> bool {
        now < self.until
            && self.node.as_deref().is_none_or(|n| n == node)
            && self.fault.as_deref().is_none_or(|f| f == fault)
            && self
                .labels
                .iter()
                .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }

    /// The decision's reason.
    pub fn reason(&self) -> String {
        let mut r = format!("silence {} until {}", self.id, self.until);
        if let Some(c) = &self.comment {
            r.push_str(": ");
            r.push_str(c);
        }
        r
    }
}

mod labels {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        v.iter().cloned().collect::<BTreeMap<_, _>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_given_matcher_must_match_until_it_ends() {
        let until = Timestamp::parse_rfc3339("2026-01-01T01:00:00Z").unwrap();
        let s = Silence {
            id: 1,
            node: None,
            fault: Some("disk_failure".into()),
            labels: vec![("rack".into(), "r7".into())],
            until,
            comment: Some("rack r7 maintenance".into()),
            all: false,
        };
        let rack = |r: &str| {
            vec![
                ("rack".to_string(), r.to_string()),
                ("cluster".into(), "c1".into()),
            ]
        };
        let before = Timestamp(until.0 - 1);
        assert!(s.matches("n1", "disk_failure", &rack("r7"), before));
        assert!(!s.matches("n1", "disk_failure", &rack("r8"), before));
        assert!(!s.matches("n1", "memory_failure", &rack("r7"), before));
        assert!(!s.matches("n1", "disk_failure", &rack("r7"), until));
        assert_eq!(
            s.reason(),
            "silence 1 until 2026-01-01T01:00:00Z: rack r7 maintenance"
        );
    }
}
