//! The Alertmanager webhook (payload version 4) as signals, per contract
//! sections 2 and 7: `type` is `alertname`; `node` where
//! [`node_of`](crate::promql::node_of) finds it (`node`, `nodename`,
//! `kubernetes_node`, `hostname`, the host part of `instance`), and an alert
//! that names none (a cluster-wide alert) is a domain signal about the
//! failure domain its labels name; `kind` the `fault_class` label, else `resource`;
//! `labels` the alert's labels; `resolved` follows the alert's status; `id`
//! is fingerprint + status + startsAt. `ts` is `startsAt` while firing and
//! `endsAt` once resolved; `message` the `summary` annotation.

use std::collections::BTreeMap;

use crate::promql::node_of;
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

/// The signals of one webhook body; alerts without an alertname or with an
/// unknown `fault_class` are skipped with a reason. An unreadable body is an error.
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
        // No node: a domain signal (empty node), about its failure domain.
        let node = node_of(|k| a.labels.get(k).map(String::as_str)).unwrap_or_default();
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
        let resolved = match a.status.as_str() {
            "resolved" => true,
            "firing" => false,
            other => {
                skipped.push(Skipped {
                    index,
                    reason: format!("{alertname}: status {other:?} is neither firing nor resolved"),
                });
                continue;
            }
        };
        let mut s = Signal::new(node, kind, alertname);
        s.resolved = resolved;
        // Alertmanager repeats a firing alert every repeat_interval.
        s.condition = true;
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

    /// The label sets of the public alert sets: node-mixin's alerts carry
    /// `instance`, kubernetes-mixin's kubelet alerts `node`, kube-state-metrics
    /// relabelled ones `kubernetes_node`, and its cluster-wide KubeletDown
    /// only `{cluster, severity}`.
    #[test]
    fn the_node_is_found_in_the_contract_order_and_a_cluster_wide_alert_is_a_domain_signal() {
        let one = |labels: &str| {
            let body = format!(
                r#"{{"version":"4","alerts":[{{"status":"firing","labels":{labels},"startsAt":"2026-11-24T10:00:00Z","fingerprint":"f"}}]}}"#
            );
            let (mut signals, skipped) = signals(&body).unwrap();
            assert!(skipped.is_empty(), "{skipped:?}");
            signals.remove(0)
        };
        let cases = [
            (
                r#"{"alertname":"A","nodename":"web-1","instance":"10.0.0.1:9100","hostname":"h"}"#,
                "web-1",
            ),
            (
                r#"{"alertname":"A","kubernetes_node":"worker-3","hostname":"h","instance":"10.0.0.3:9100"}"#,
                "worker-3",
            ),
            (
                r#"{"alertname":"A","hostname":"db-2","instance":"10.0.0.2:9100"}"#,
                "db-2",
            ),
            (
                r#"{"alertname":"NodeFilesystemAlmostOutOfSpace","instance":"10.0.0.4:9100","job":"node","device":"/dev/sda1","fstype":"ext4","mountpoint":"/"}"#,
                "10.0.0.4",
            ),
            (
                r#"{"alertname":"KubeNodeNotReady","node":"worker-5","instance":"10.0.0.9:8080","condition":"Ready"}"#,
                "worker-5",
            ),
            (r#"{"alertname":"A","node":"","nodename":"web-9"}"#, "web-9"),
        ];
        for (labels, node) in cases {
            assert_eq!(one(labels).node, node, "{labels}");
        }
        let down = one(r#"{"alertname":"KubeletDown","cluster":"c1","severity":"critical"}"#);
        assert!(down.is_domain());
        assert_eq!(down.domain(), [("cluster", "c1")]);
        assert_eq!(down.domain_key(), "cluster=c1");
        assert_eq!(down.r#type, "KubeletDown");
    }

    #[test]
    fn node_label_wins_resolved_follows_status_and_bad_alerts_are_named() {
        let body = r#"{"version":"4","status":"resolved","alerts":[
            {"status":"resolved","labels":{"alertname":"KubeletDown","node":"node-7","instance":"10.0.0.7:10250","fault_class":"component"},
             "startsAt":"2026-11-24T10:00:00Z","endsAt":"2026-11-24T10:05:00Z","fingerprint":"ab"},
            {"status":"firing","labels":{"alertname":"X"},"startsAt":"2026-11-24T10:00:00Z","fingerprint":"cd"},
            {"status":"firing","labels":{"alertname":"Y","instance":"[::1]:9100","fault_class":"weather"},"fingerprint":"ef"}]}"#;
        let (signals, skipped) = signals(body).unwrap();
        assert_eq!(signals.len(), 2);
        let s = &signals[0];
        assert_eq!(
            (s.node.as_str(), s.kind, s.resolved),
            ("node-7", Kind::Component, true)
        );
        assert_eq!(s.ts, Timestamp::parse_rfc3339("2026-11-24T10:05:00Z").ok());
        assert!(signals[1].is_domain(), "X names no node: a domain signal");
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].index, 2);
        assert!(skipped[0].reason.contains("weather"));
        assert!(super::signals("{}")
            .unwrap_err()
            .contains("not an Alertmanager"));
        assert!(super::signals(r#"{"version":"3","alerts":[]}"#)
            .unwrap_err()
            .contains("version"));
    }
}
