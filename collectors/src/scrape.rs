//! `[[scrape]]`: an exporter's exposition text, parsed with prometheus-parse;
//! each sample of a configured metric becomes a `resource` signal (contract
//! sections 2 and 5), and a series that was there last time and is gone now
//! becomes a `resolved: true` signal, so pressure faults close. With
//! `preset = "NAME"` instead of `metrics`, a [`Preset`] reads the exporter's
//! hardware metrics into hardware signals (contract section 7).
//!
//! [`Scraper`] is the parser and the series bookkeeping; [`run`] is the
//! source's loop: fetch the endpoint every `every`, deliver its signals.

use std::collections::{BTreeMap, BTreeSet};

use remedy_engine::{Duration, Kind, Signal, Timestamp};

use crate::intake::{http_client, now, Intake, IntakeError, Reporter};
use crate::presets::{Preset, PresetState, Sample};
use serde::Deserialize;

/// `[[scrape]]` in the config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The exposition endpoint, e.g. `http://127.0.0.1:9100/metrics`.
    pub url: String,
    /// How often to scrape.
    pub every: Duration,
    /// The node the endpoint describes.
    pub node: String,
    /// Metric name -> signal type (`resource` signals, the sample's value),
    /// or `{ type = "...", labels = {...}, rename = {...} }` to add fixed
    /// labels and rename the sample's (`node_uname_info` as the kernel's
    /// version: `{ type = "component.version", labels = { component =
    /// "kernel" }, rename = { release = "version" } }`).
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricMap>,
    /// Or a known exporter whose hardware metrics need no mapping.
    #[serde(default)]
    pub preset: Option<Preset>,
}

impl Config {
    /// What serde cannot say: exactly one of `metrics` and `preset`.
    pub fn check(&self) -> Result<(), String> {
        match (self.metrics.is_empty(), self.preset) {
            (true, None) => Err(format!(
                "give `metrics` (metric name -> signal type) or `preset` (one of {})",
                Preset::known()
            )),
            (false, Some(p)) => Err(format!("give `metrics` or `preset = \"{p}\"`, not both")),
            _ => Ok(()),
        }
    }
}

/// What one metric's samples become.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricMap {
    /// The signal type.
    pub r#type: String,
    /// Labels added to each signal.
    pub labels: BTreeMap<String, String>,
    /// Sample label -> signal label (a label already there is replaced).
    pub rename: BTreeMap<String, String>,
}

impl std::ops::Deref for MetricMap {
    type Target = str;
    /// The signal type.
    fn deref(&self) -> &str {
        &self.r#type
    }
}

/// `{ type = ..., labels = ..., rename = ... }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricTable {
    r#type: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for MetricMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MetricMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a signal type, or { type = \"...\", labels = {...}, rename = {...} }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MetricMap, E> {
                Ok(MetricMap {
                    r#type: v.to_string(),
                    labels: BTreeMap::new(),
                    rename: BTreeMap::new(),
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<MetricMap, A::Error> {
                let t =
                    MetricTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(MetricMap {
                    r#type: t.r#type,
                    labels: t.labels,
                    rename: t.rename,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Why a scrape could not be read.
#[derive(Debug, thiserror::Error)]
#[error("exposition text from {url}: {source}")]
pub struct ScrapeError {
    url: String,
    source: std::io::Error,
}

/// One series: its signal type and its sorted labels.
type Series = (String, Vec<(String, String)>);

/// Turns successive scrapes of one endpoint into signals.
#[derive(Debug)]
pub struct Scraper {
    config: Config,
    present: BTreeSet<Series>,
    preset: Option<PresetState>,
}

impl Scraper {
    /// A scraper for one `[[scrape]]` entry.
    pub fn new(config: Config) -> Self {
        Scraper {
            preset: config.preset.map(PresetState::new),
            config,
            present: BTreeSet::new(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The signals of one scrape taken at `at`. With a preset, what the
    /// preset makes of it ([`PresetState::signals`]). Else one per sample of a
    /// configured metric, in a stable order, then a resolved signal for each
    /// series of the previous scrape that is gone. Histograms and summaries
    /// are not single values and are skipped.
    pub fn signals(&mut self, text: &str, at: Timestamp) -> Result<Vec<Signal>, ScrapeError> {
        if let Some(state) = &mut self.preset {
            let samples =
                Sample::parse_text(text, state.preset()).map_err(|source| ScrapeError {
                    url: self.config.url.clone(),
                    source,
                })?;
            return Ok(state.signals(&samples, &self.config.node, at));
        }
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let when = chrono::DateTime::from_timestamp_millis(at.0).unwrap_or_default();
        let scrape =
            prometheus_parse::Scrape::parse_at(lines, when).map_err(|source| ScrapeError {
                url: self.config.url.clone(),
                source,
            })?;
        let mut seen: BTreeMap<Series, f64> = BTreeMap::new();
        for sample in scrape.samples {
            let Some(map) = self.config.metrics.get(&sample.metric) else {
                continue;
            };
            let r#type = &map.r#type;
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            let mut renamed: BTreeMap<String, String> = BTreeMap::new();
            for (k, v) in sample.labels.iter() {
                if !map.rename.values().any(|to| to == k) {
                    let k = map.rename.get(k).unwrap_or(k);
                    renamed.insert(k.clone(), v.clone());
                }
            }
            for (from, to) in &map.rename {
                if let Some(v) = sample.labels.get(from) {
                    renamed.insert(to.clone(), v.to_string());
                }
            }
            for (k, v) in &map.labels {
                renamed.insert(k.clone(), v.clone());
            }
            let labels: Vec<(String, String)> = renamed.into_iter().collect();
            seen.insert((r#type.clone(), labels), value);
        }
        let mut out = Vec::with_capacity(seen.len());
        for ((r#type, labels), value) in &seen {
            let mut s = self.signal(r#type, labels, at);
            s.value = Some(*value);
            out.push(s);
        }
        let now: BTreeSet<Series> = seen.into_keys().collect();
        for (r#type, labels) in self.present.difference(&now) {
            let mut s = self.signal(r#type, labels, at);
            s.resolved = true;
            out.push(s);
        }
        self.present = now;
        Ok(out)
    }

    fn signal(&self, r#type: &str, labels: &[(String, String)], at: Timestamp) -> Signal {
        let mut s = Signal::new(self.config.node.clone(), Kind::Resource, r#type);
        s.ts = Some(at);
        // Every scrape or poll repeats it while it holds.
        s.condition = true;
        for (k, v) in labels {
            s.labels.insert(k.clone(), v.clone());
        }
        s
    }
}

/// Scrapes one endpoint every `every` and delivers its signals; a failed
/// scrape is reported and tried again next time. Ends when the intake closes.
pub async fn run(config: Config, intake: Intake, report: Reporter) {
    let Some(client) = http_client(&config.url) else {
        return;
    };
    let name = format!("scrape {}", config.url);
    let every = std::time::Duration::from_millis(config.every.0.max(100) as u64);
    let mut scraper = Scraper::new(config);
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let url = scraper.config().url.clone();
        let text = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.map_err(|e| e.to_string()),
            Ok(r) => Err(format!("HTTP {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        let signals = text.and_then(|t| scraper.signals(&t, now()).map_err(|e| e.to_string()));
        let signals = match signals {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%url, "scrape failed: {e}");
                report.received("scrape", 0, 1);
                report.collected(&name, Err(e));
                continue;
            }
        };
        report.received("scrape", signals.len(), 0);
        report.collected(&name, Ok(now().secs()));
        if let Err(IntakeError::Closed) = intake.deliver(signals).await {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = include_str!("../../tests/fixtures/real/node_exporter_1.5.0.prom");

    fn scraper() -> Scraper {
        Scraper::new(
            toml::from_str(
                r#"url = "http://127.0.0.1:9100/metrics"
                   every = "15s"
                   node = "node-0042"
                   metrics = { "node_pressure_memory_waiting_seconds_total" = "memory.pressure", "node_load15" = "load.high", "node_filesystem_avail_bytes" = "disk.avail" }"#,
            )
            .expect("valid config"),
        )
    }

    #[test]
    fn the_real_node_exporter_output_becomes_signals() {
        let mut s = scraper();
        let at = Timestamp::parse_rfc3339("2026-11-24T23:58:07Z").unwrap();
        let signals = s.signals(REAL, at).unwrap();
        let find = |t: &str| signals.iter().filter(|x| x.r#type == t).collect::<Vec<_>>();
        let load = find("load.high");
        assert_eq!(load.len(), 1);
        assert_eq!(
            (load[0].node.as_str(), load[0].kind, load[0].value),
            ("node-0042", Kind::Resource, Some(0.9))
        );
        assert_eq!(load[0].ts, Some(at));
        assert_eq!(find("memory.pressure")[0].value, Some(0.0));
        let root = find("disk.avail");
        assert!(root
            .iter()
            .any(|x| x.labels.get("mountpoint") == Some("/") && x.value == Some(8.4540878848e10)));
        assert!(signals.iter().all(|x| !x.resolved));
        assert_eq!(
            s.signals(REAL, at).unwrap(),
            signals,
            "same text, same signals, same order"
        );
    }

    #[test]
    fn a_series_that_disappears_is_resolved_once() {
        let mut s = scraper();
        let at = Timestamp::from_secs(1_800_000_000);
        s.signals(
            "node_load15 3.5\nnode_filesystem_avail_bytes{mountpoint=\"/\"} 10\n",
            at,
        )
        .unwrap();
        let next = s
            .signals(
                "node_filesystem_avail_bytes{mountpoint=\"/\"} 9\n",
                at.add(Duration::from_secs(15)),
            )
            .unwrap();
        assert_eq!(next.len(), 2);
        assert_eq!(
            (next[1].r#type.as_str(), next[1].resolved),
            ("load.high", true)
        );
        assert_eq!(next[1].value, None);
        let again = s
            .signals(
                "node_filesystem_avail_bytes{mountpoint=\"/\"} 9\n",
                at.add(Duration::from_secs(30)),
            )
            .unwrap();
        assert!(
            again.iter().all(|x| !x.resolved),
            "resolved once, not every scrape"
        );
    }
}
