//! `[[prometheus]]`: a PromQL query polled over Prometheus's HTTP API; each
//! series of the result becomes a `resource` signal (its node where
//! [`node_of`] finds it; `value` the sample), and a series that leaves the
//! result becomes `resolved: true`. With `preset = "NAME"` instead of
//! `query` and `type`, the preset's own query is polled and the [`Preset`]
//! reads the series into hardware signals, per node.
//!
//! This is the response mapping and the series bookkeeping; polling on a
//! schedule belongs to the service's collector loop.

use std::collections::{BTreeMap, BTreeSet};

use remedy_engine::{Duration, Kind, Signal, Timestamp};
use serde::Deserialize;

use crate::intake::{http_client, now, Intake, IntakeError, Reporter};
use crate::presets::{Preset, PresetState, Sample};

/// `[[prometheus]]` in the config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Prometheus server, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    /// An instant-vector PromQL expression.
    #[serde(default)]
    pub query: Option<String>,
    /// The signal type of its series.
    #[serde(default)]
    pub r#type: Option<String>,
    /// Or a known exporter whose hardware metrics need no query and no type.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// How often to query.
    pub every: Duration,
}

impl Config {
    /// What serde cannot say: `query` and `type`, or `preset` alone.
    pub fn check(&self) -> Result<(), String> {
        match (&self.query, &self.r#type, self.preset) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => Ok(()),
            (_, _, Some(p)) => Err(format!(
                "preset = \"{p}\" brings its own query and types: drop `query` and `type`"
            )),
            (None, _, None) => Err(format!(
                "give `query` and `type`, or `preset` (one of {})",
                Preset::known()
            )),
            (Some(_), None, None) => {
                Err("`type` is missing: the signal type of the query's series".into())
            }
        }
    }

    /// The PromQL expression polled: `query`, or the preset's.
    pub fn expression(&self) -> String {
        match (self.preset, &self.query) {
            (Some(p), _) => p.promql(),
            (None, Some(q)) => q.clone(),
            (None, None) => String::new(),
        }
    }
}

/// The labels that name a node, in the order they are looked at (contract
/// section 7); after them the host part of `instance`.
pub const NODE_LABELS: [&str; 4] = ["node", "nodename", "kubernetes_node", "hostname"];

/// The node a label set is about: `node`, else `nodename`,
/// `kubernetes_node`, `hostname`, else the host part of `instance`; `None`
/// when none is there (a cluster-wide series or alert).
pub fn node_of<'a>(label: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    NODE_LABELS
        .iter()
        .find_map(|name| label(name).filter(|v| !v.is_empty()))
        .or_else(|| {
            label("instance")
                .map(instance_host)
                .filter(|h| !h.is_empty())
        })
        .map(str::to_string)
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

/// `10.0.0.7:9100` -> `10.0.0.7`; `[::1]:9100` -> `::1`; a name stays
/// itself (the engine's reading of an address, for node identity too).
pub use remedy_engine::identity::host_of as instance_host;

/// Turns successive results of one query into signals.
#[derive(Debug)]
pub struct Poller {
    config: Config,
    present: BTreeSet<(String, Vec<(String, String)>)>,
    preset: Option<PresetState>,
}

impl Poller {
    /// A poller for one `[[prometheus]]` entry.
    pub fn new(config: Config) -> Self {
        Poller {
            preset: config.preset.map(PresetState::new),
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
            query: self.config.expression(),
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
        if let Some(state) = &mut self.preset {
            let mut samples = Vec::with_capacity(data.result.len());
            for series in data.result {
                let node = node_of(|k| series.metric.get(k).map(String::as_str));
                let value = series.value.1.parse::<f64>().ok();
                match (
                    node,
                    value,
                    Sample::from_series(&series.metric, value.unwrap_or(0.0)),
                ) {
                    (Some(node), Some(_), Some(sample)) => samples.push((node, sample)),
                    _ => skipped.push(format!(
                        "series {:?} = {:?}: no node, no metric name or not a number",
                        series.metric, series.value.1
                    )),
                }
            }
            return Ok((state.signals_per_node(&samples, at), skipped));
        }
        let mut now = BTreeSet::new();
        for series in data.result {
            let node = node_of(|k| series.metric.get(k).map(String::as_str));
            let Some(node) = node else {
                skipped.push(format!(
                    "series {:?} names no node (node, nodename, kubernetes_node, hostname or instance label)",
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
        let r#type = self.config.r#type.clone().unwrap_or_default();
        let mut s = Signal::new(node, Kind::Resource, r#type);
        s.ts = Some(at);
        // Every scrape or poll repeats it while it holds.
        s.condition = true;
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
        let query = poller.config().expression();
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
            query: Some("node_load15 > 2".into()),
            r#type: Some("load.high".into()),
            preset: None,
            every: Duration::from_secs(30),
        })
    }

    /// `preset = "node-edac"`: the preset's own query, its series read per
    /// node (found as the contract orders it), counter increases as events.
    #[test]
    fn a_preset_polls_its_own_query_and_reads_the_series_per_node() {
        let mut p = Poller::new(Config {
            url: "http://127.0.0.1:9090".into(),
            query: None,
            r#type: None,
            preset: Some(Preset::NodeEdac),
            every: Duration::from_secs(30),
        });
        assert!(p.config().check().is_ok());
        assert!(p
            .config()
            .expression()
            .contains("node_edac_correctable_errors_total"));
        let body = |ce: u32| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[
                {{"metric":{{"__name__":"node_edac_correctable_errors_total","controller":"0","instance":"10.0.0.7:9100","job":"node"}},"value":[1,"{ce}"]}},
                {{"metric":{{"__name__":"node_edac_correctable_errors_total","controller":"0","nodename":"web-1","instance":"10.0.0.8:9100"}},"value":[1,"{ce}"]}},
                {{"metric":{{"controller":"0"}},"value":[1,"1"]}}]}}}}"#
            )
        };
        let at = Timestamp::from_secs(1_800_000_000);
        let (first, skipped) = p.signals(&body(5), at).unwrap();
        assert!(
            first.is_empty(),
            "the first sample is a baseline: {first:?}"
        );
        assert_eq!(skipped.len(), 1, "no node, no name: {skipped:?}");
        let (next, _) = p.signals(&body(7), at).unwrap();
        let seen: Vec<(&str, &str)> = next
            .iter()
            .map(|s| (s.node.as_str(), s.r#type.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("10.0.0.7", "memory.ecc.correctable"),
                ("10.0.0.7", "memory.ecc.correctable"),
                ("web-1", "memory.ecc.correctable"),
                ("web-1", "memory.ecc.correctable"),
            ],
            "two new errors on each node"
        );
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
