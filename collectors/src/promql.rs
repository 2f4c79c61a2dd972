//! `[[prometheus]]`: a PromQL query polled over Prometheus's HTTP API; each
//! series of the result becomes a `resource` signal (contract section 2:
//! node from the `node` label, else the host of `instance`; `value` the
//! sample), and a series that leaves the result becomes `resolved: true`.
//!
//! This is the response mapping and the series bookkeeping; polling on a
//! schedule belongs to the service's collector loop.

use std::collections::{BTreeMap, BTreeSet};

use remedy_engine::{Duration, Kind, Signal, Timestamp};
use serde::Deserialize;

use crate::intake::{http_client, now, Intake, IntakeError, Reporter};

/// `[[prometheus]]` in the config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Prometheus server, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    /// An instant-vector PromQL expression.
    pub query: String,
    /// The signal type of its series.
    pub r#type: String,
    /// How often to query.
    pub every: Duration,
}

/// Why a response could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("query {query:?}: {why}")]
pub struct QueryError {
    query: String,
    why: String,
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// `10.0.0.7:9100` -> `10.0.0.7`; `[::1]:9100` -> `::1`; a name stays itself.
pub fn instance_host(instance: &str) -> &str {
    if let Some(rest) = instance.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match instance.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => instance,
    }
}

/// Turns successive results of one query into signals.
#[derive(Debug)]
pub struct Poller {
    config: Config,
    present: BTreeSet<(String, Vec<(String, String)>)>,
}

impl Poller {
    /// A poller for one `[[prometheus]]` entry.
    pub fn new(config: Config) -> Self {
        Poller {
            config,
            present: BTreeSet::new(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The signals of one `/api/v1/query` response body taken at `at`, and
    /// the series that name no node (skipped, with the reason).
    pub fn signals(
        &mut self,
        body: &str,
        at: Timestamp,
    ) -> Result<(Vec<Signal>, Vec<String>), QueryError> {
        let err = |why: String| QueryError {
            query: self.config.query.clone(),
            why,
        };
        let response: Response = serde_json::from_str(body)
            .map_err(|e| err(format!("not a Prometheus API response: {e}")))?;
        if response.status != "success" {
            return Err(err(response
                .error
                .unwrap_or_else(|| format!("status {}", response.status))));
        }
        let data = response
            .data
            .ok_or_else(|| err("no data in the response".into()))?;
        if data.result_type != "vector" {
            return Err(err(format!(
                "result type {} (want an instant vector)",
                data.result_type
            )));
        }
        let (mut out, mut skipped) = (Vec::new(), Vec::new());
        let mut now = BTreeSet::new();
        for series in data.result {
            let node = series.metric.get("node").cloned().or_else(|| {
                series
                    .metric
                    .get("instance")
                    .map(|i| instance_host(i).to_string())
            });
            let Some(node) = node.filter(|n| !n.is_empty()) else {
                skipped.push(format!(
                    "series {:?} has neither a node nor an instance label",
                    series.metric
                ));
                continue;
            };
            let Ok(value) = series.value.1.parse::<f64>() else {
                skipped.push(format!(
                    "series of {node}: value {:?} is not a number",
                    series.value.1
                ));
                continue;
            };
            let labels: Vec<(String, String)> = series.metric.into_iter().collect();
            let mut s = self.signal(&node, &labels, at);
            s.value = Some(value);
            out.push(s);
            now.insert((node, labels));
        }
        for (node, labels) in self.present.difference(&now) {
            let mut s = self.signal(node, labels, at);
            s.resolved = true;
            out.push(s);
        }
        self.present = now;
        Ok((out, skipped))
    }

    fn signal(&self, node: &str, labels: &[(String, String)], at: Timestamp) -> Signal {
        let mut s = Signal::new(node, Kind::Resource, self.config.r#type.clone());
        s.ts = Some(at);
        for (k, v) in labels {
            s.labels.insert(k.clone(), v.clone());
        }
        s
    }
}

/// Polls one PromQL query every `every` and delivers its signals; a failed
/// query is reported and tried again next time. Ends when the intake closes.
pub async fn run(config: Config, intake: Intake, report: Reporter) {
    let Some(client) = http_client(&config.url) else {
        return;
    };
    let every = std::time::Duration::from_millis(config.every.0.max(100) as u64);
    let endpoint = format!("{}/api/v1/query", config.url.trim_end_matches('/'));
    let mut poller = Poller::new(config);
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let query = poller.config().query.clone();
        let url = match reqwest::Url::parse_with_params(&endpoint, [("query", query.as_str())]) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(%endpoint, "not a URL: {e}");
                return;
            }
        };
        let body = client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        let body: Result<String, String> = match body {
            Ok(r) => r.text().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let name = format!("prometheus {query}");
        let signals = match body.and_then(|b| poller.signals(&b, now()).map_err(|e| e.to_string()))
        {
            Ok((signals, skipped)) => {
                for why in &skipped {
                    tracing::warn!(%query, "series skipped: {why}");
                }
                report.received("prometheus", signals.len(), skipped.len());
                report.collected(&name, Ok(now().secs()));
                signals
            }
            Err(e) => {
                tracing::warn!(%query, "query failed: {e}");
                report.received("prometheus", 0, 1);
                report.collected(&name, Err(e));
                continue;
            }
        };
        if let Err(IntakeError::Closed) = intake.deliver(signals).await {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poller() -> Poller {
        Poller::new(Config {
            url: "http://127.0.0.1:9090".into(),
            query: "node_load15 > 2".into(),
            r#type: "load.high".into(),
            every: Duration::from_secs(30),
        })
    }

    #[test]
    fn series_become_signals_and_leave_as_resolved() {
        let mut p = poller();
        let at = Timestamp::from_secs(1_800_000_000);
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"node_load15","instance":"10.0.0.7:9100","job":"node"},"value":[1800000000.1,"3.5"]},
            {"metric":{"node":"node-9","instance":"10.0.0.9:9100"},"value":[1800000000.1,"2.5"]},
            {"metric":{"job":"node"},"value":[1800000000.1,"9"]}]}}"#;
        let (signals, skipped) = p.signals(body, at).unwrap();
        assert_eq!(signals.len(), 2);
        assert_eq!(
            (signals[0].node.as_str(), signals[0].value),
            ("10.0.0.7", Some(3.5))
        );
        assert_eq!(signals[0].r#type, "load.high");
        assert_eq!(signals[1].node, "node-9", "the node label wins");
        assert_eq!(skipped.len(), 1);
        let (next, _) = p
            .signals(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"node":"node-9"},"value":[1,"2.6"]}]}}"#, at)
            .unwrap();
        let resolved: Vec<_> = next
            .iter()
            .filter(|s| s.resolved)
            .map(|s| s.node.as_str())
            .collect();
        assert_eq!(
            resolved,
            ["10.0.0.7", "node-9"],
            "both earlier series left (node-9's labels changed)"
        );
        assert!(p
            .signals(r#"{"status":"error","error":"bad query"}"#, at)
            .unwrap_err()
            .to_string()
            .contains("bad query"));
        assert!(p.signals("<html>", at).is_err());
        assert_eq!(instance_host("[::1]:9100"), "::1");
        assert_eq!(instance_host("host.example"), "host.example");
    }
}
