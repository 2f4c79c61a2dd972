//! The Alertmanager webhook (payload version 4) as signals, per contract
//! section 2: `type` is `alertname`; `node` the `node` label, else the host
//! part of `instance`; `kind` the `fault_class` label, else `resource`;
//! `labels` the alert's labels; `resolved` follows the alert's status; `id`
//! is fingerprint + status + startsAt. `ts` is `startsAt` while firing and
//! `endsAt` once resolved; `message` the `summary` annotation.

use std::collections::BTreeMap;

use crate::promql::instance_host;
use remedy_engine::{Kind, Signal, Timestamp};
use serde::Deserialize;

#[derive(Deserialize)]
struct Payload {
    version: Option<String>,
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    #[serde(default)]
    fingerprint: String,
}

/// One alert that could not become a signal, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its position in `alerts` (from 0).
    pub index: usize,
    /// Why.
    pub reason: String,
}

/// The signals of one webhook body; alerts that name no node or no
/// alertname are skipped with a reason. An unreadable body is an error.
pub fn signals(body: &str) -> Result<(Vec<Signal>, Vec<Skipped>), String> {
    let payload: Payload = serde_json::from_str(body)
        .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    if let Some(v) = payload.version.as_deref() {
        if v != "4" {
            return Err(format!(
                "webhook payload version {v:?}: only version 4 is understood"
            ));
        }
    }
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for (index, a) in payload.alerts.into_iter().enumerate() {
        let Some(alertname) = a.labels.get("alertname").cloned() else {
            skipped.push(Skipped {
                index,
                reason: "no alertname label".into(),
            });
            continue;
        };
        let node = a.labels.get("node").cloned().or_else(|| {
            a.labels
                .get("instance")
                .map(|i| instance_host(i).to_string())
        });
        let Some(node) = node.filter(|n| !n.is_empty()) else {
            skipped.push(Skipped {
                index,
                reason: format!("{alertname}: neither a node label nor an instance label"),
            });
            continue;
        };
        let kind = match a.labels.get("fault_class") {
            Some(k) => {
                match Kind::parse(k) {
                    Some(kind) => kind,
                    None => {
                        skipped.push(Skipped {
                        index,
                        reason: format!("{alertname}: fault_class {k:?} is not hardware, component or resource"),
                    });
                        continue;
                    }
                }
            }
            None => Kind::Resource,
        };
        let resolved = a.status == "resolved";
        let mut s = Signal::new(node, kind, alertname);
        s.resolved = resolved;
        let when = if resolved {
            a.ends_at.as_deref()
        } else {
            a.starts_at.as_deref()
        };
        s.ts = when
            .and_then(|t| Timestamp::parse_rfc3339(t).ok())
            .filter(|t| t.0 > 0);
        s.message = a.annotations.get("summary").cloned();
        s.id = Some(format!(
            "{}{}{}",
            a.fingerprint,
            a.status,
            a.starts_at.as_deref().unwrap_or("")
        ));
        for (k, v) in a.labels {
            s.labels.insert(k, v);
        }
        out.push(s);
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_alertmanager_payloads_map_as_the_contract_says() {
        let fixture = include_str!("../../tests/fixtures/real/alertmanager_0.25_webhook.jsonl");
        let mut all = Vec::new();
        for body in fixture.lines() {
            let (signals, skipped) = signals(body).unwrap();
            assert!(skipped.is_empty());
            all.extend(signals);
        }
        assert_eq!(all.len(), 2);
        let load = &all[0];
        assert_eq!(
            (load.node.as_str(), load.r#type.as_str()),
            ("127.0.0.1", "NodeHighLoad")
        );
        assert_eq!(load.kind, Kind::Resource);
        assert!(!load.resolved);
        assert_eq!(
            load.ts,
            Timestamp::parse_rfc3339("2026-11-24T23:58:07.682Z").ok()
        );
        assert_eq!(load.labels.get("rack"), Some("r12"));
        assert_eq!(
            load.id.as_deref(),
            Some("2d4e9f605ccc396bfiring2026-11-24T23:58:07.682Z")
        );
        assert_eq!(
            load.message.as_deref(),
            Some("load 1.86 on 127.0.0.1:19100")
        );
        assert_eq!(all[1].r#type, "NodeFilesystemAlmostFull");
    }

    #[test]
    fn node_label_wins_resolved_follows_status_and_bad_alerts_are_named() {
        let body = r#"{"version":"4","status":"resolved","alerts":[
            {"status":"resolved","labels":{"alertname":"KubeletDown","node":"node-7","instance":"10.0.0.7:10250","fault_class":"component"},
             "startsAt":"2026-11-24T10:00:00Z","endsAt":"2026-11-24T10:05:00Z","fingerprint":"ab"},
            {"status":"firing","labels":{"alertname":"X"},"startsAt":"2026-11-24T10:00:00Z","fingerprint":"cd"},
            {"status":"firing","labels":{"alertname":"Y","instance":"[::1]:9100","fault_class":"weather"},"fingerprint":"ef"}]}"#;
        let (signals, skipped) = signals(body).unwrap();
        assert_eq!(signals.len(), 1);
        let s = &signals[0];
        assert_eq!(
            (s.node.as_str(), s.kind, s.resolved),
            ("node-7", Kind::Component, true)
        );
        assert_eq!(s.ts, Timestamp::parse_rfc3339("2026-11-24T10:05:00Z").ok());
        assert_eq!(skipped[0].index, 1);
        assert!(skipped[0].reason.contains("neither a node label"));
        assert!(skipped[1].reason.contains("weather"));
        assert!(super::signals("{}")
            .unwrap_err()
            .contains("not an Alertmanager"));
        assert!(super::signals(r#"{"version":"3","alerts":[]}"#)
            .unwrap_err()
            .contains("version"));
    }
}
