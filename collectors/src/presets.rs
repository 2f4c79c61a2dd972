//! Presets: hardware exporters without a mapping (contract section 7).
//!
//! `[[scrape]]` and `[[prometheus]]` may name a preset instead of
//! `metrics`/`query`/`type`. A preset knows the metric names, labels and value
//! conventions of one exporter and turns its samples into `hardware` signals,
//! of the types the shipped rules understand wherever one means the same
//! (`memory.ecc.*`, `disk.smart.failing`, `disk.io.error`, `NodeRAIDDiskFailure`,
//! `power.*`, `motherboard.sel.critical`), of new types where none does:
//!
//! - a **counter** (an error count) becomes one event per new error since the
//!   previous sample of the same series. The first sample of a series is a
//!   baseline and yields nothing; a decrease is a reset (reboot, exporter
//!   restart, log cleared) and becomes the new baseline. One series yields at
//!   most [`MAX_EVENTS_PER_SERIES`] events per scrape.
//! - a **state** (a failed member, a sensor in critical state, a set alarm)
//!   becomes a condition: a signal on every scrape while the bad state holds,
//!   and one `resolved: true` signal when it clears or its series disappears.
//!
//! A source that stops reporting is unknown, never healthy: a node whose
//! snapshot holds none of the preset's metrics, or whose exporter says the
//! collector behind some metrics failed (`node_scrape_collector_success`,
//! `ipmi_up`), keeps its counters and conditions as they were, and nothing is
//! resolved for it. Call [`PresetState::signals`] only with a scrape that
//! succeeded; a failed scrape is not an empty one.
//!
//! | preset | metric | signal |
//! | --- | --- | --- |
//! | `node-edac` | `node_edac_{,csrow_}correctable_errors_total` | event `memory.ecc.correctable` per new error |
//! | `node-edac` | `node_edac_{,csrow_}uncorrectable_errors_total` | event `memory.ecc.uncorrectable` per new error |
//! | | (each controller at one level: its csrows if it has real ones, else its total) | |
//! | `node-mdraid` | `node_md_disks{state="failed"} > 0` | `NodeRAIDDiskFailure` |
//! | `node-mdraid` | `node_md_degraded > 0`, else `node_md_disks_required - node_md_disks{state="active"} > 0` | `NodeRAIDDegraded` |
//! | `node-mdraid` | `node_md_state{state="inactive"} == 1` | `disk.raid.inactive` |
//! | `node-hwmon` | `node_hwmon_temp_{crit,emergency}_alarm_celsius > 0`, `node_hwmon_temp_celsius >= node_hwmon_temp_crit_celsius` | `thermal.critical` |
//! | `node-hwmon` | `node_hwmon_temp_alarm`, `node_hwmon_temp_max_alarm_celsius > 0` | `thermal.high` |
//! | `node-hwmon` | `node_hwmon_fan_{alarm,fault,min_alarm} > 0` | `fan.failed` |
//! | `node-hwmon` | `node_hwmon_in_{crit,lcrit}_alarm_volts > 0` | `voltage.critical` |
//! | `smartmon` | `smartmon_device_smart_healthy == 0` | `disk.smart.failing` |
//! | `smartmon` | `current_pending_sector`, `offline_uncorrectable` raw value `> 0` | `disk.smart.failing` |
//! | `smartmon` | `reallocated_sector_ct`, `grown_defects_count` raw value | event `disk.sector.reallocated` per new sector |
//! | `smartmon` | `reported_uncorrect` raw value | event `disk.io.error` per new error |
//! | `nvme` | `nvme_critical_warning{,_total}` bits 0, 2-5 | `disk.smart.failing` |
//! | `nvme` | `nvme_critical_warning{,_total}` bit 1 | `thermal.high` |
//! | `nvme` | `nvme_media_errors_total` | event `disk.io.error` per new error |
//! | `nvme` | `nvme_percentage_used_ratio >= 1` | `disk.wearout` |
//! | `ipmi` | `ipmi_sensor_state{type="Power Supply"} >= 2` | `power.psu.failed` (label `psu`), `power.redundancy.lost` for a redundancy sensor |
//! | `ipmi` | `ipmi_sensor_state{type="Power Unit"} >= 2` | `power.lost`, `power.redundancy.lost` for a redundancy sensor |
//! | `ipmi` | `ipmi_sensor_state{type="Memory"} >= 2` | `memory.ecc.uncorrectable` |
//! | `ipmi` | `ipmi_sensor_state{type="Drive Slot"} >= 2`, `ipmi_chassis_drive_fault_state == 0` | `disk.failed` |
//! | `ipmi` | `ipmi_fan_speed_state >= 2`, `ipmi_sensor_state{type="Fan"} >= 2`, `ipmi_chassis_cooling_fault_state == 0` | `fan.failed` |
//! | `ipmi` | `ipmi_temperature_state >= 2` (`== 1`: `thermal.high`), `ipmi_sensor_state{type="Temperature"} >= 2` | `thermal.critical` |
//! | `ipmi` | `ipmi_voltage_state`, `ipmi_current_state >= 2`; `ipmi_sensor_state >= 2` of type Processor, Critical Interrupt, Module/Board or Chip Set | `motherboard.sel.critical` |
//! | `ipmi` | `ipmi_sel_events_count_by_state{state="Critical"}` | event `motherboard.sel.critical` per new entry |
//! | `ipmi` | `ipmi_chassis_power_state == 0` | `power.off` |
//! | `node-problem-detector` | `problem_gauge{type,reason} > 0` | `problem_gauge` (component; a condition per type and reason) |
//! | `node-problem-detector` | `problem_counter{reason}` | event `problem_counter` (component) per new occurrence |
//!
//! Labels are the sample's (without `__name__`), plus what the exporter's
//! info metrics add: `serial_number`/`device_model`/`model_family` (smartmon),
//! `serial`/`model`/`firmware` (nvme), `label`/`chip_name` (hwmon), `psu`
//! (IPMI power supplies), and `device` (smartmon's shell collector names the
//! disk `disk`; the rules read `device`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use remedy_engine::{Kind, Signal, Timestamp};
use serde::Deserialize;

/// The most events one counter series yields from one scrape. A DIMM or disk
/// that throws thousands of errors between two scrapes still yields this
/// many, far beyond any rule's threshold, without flooding the engine; the
/// event's message carries the real count.
pub const MAX_EVENTS_PER_SERIES: u64 = 100;

/// A known exporter, named in the config as `preset = "NAME"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub enum Preset {
    /// `node-edac`: node_exporter's EDAC collector (memory ECC error counts).
    NodeEdac,
    /// `node-mdraid`: node_exporter's mdadm collector (Linux software RAID).
    NodeMdraid,
    /// `node-hwmon`: node_exporter's hwmon collector (temperature, fan and
    /// voltage alarms of sensor chips).
    NodeHwmon,
    /// `smartmon`: the smartmon textfile collector (`smartmon.sh` as Debian
    /// ships it, and `smartmon.py`).
    Smartmon,
    /// `nvme`: the nvme textfile collector (`nvme_metrics.sh` as Debian ships
    /// it, and the newer `nvme_metrics.py`).
    Nvme,
    /// `ipmi`: prometheus-community/ipmi_exporter.
    Ipmi,
    /// `node-problem-detector`: NPD's own `/metrics` (port 20257):
    /// `problem_gauge{type,reason}` conditions and `problem_counter{reason}`
    /// events, as `component` signals.
    NodeProblemDetector,
}

/// A preset name that is not one of [`Preset::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown preset {name:?} (known presets: {})", Preset::known())]
pub struct UnknownPreset {
    /// The name as given.
    pub name: String,
}

impl Preset {
    /// Every preset, in the order of [`Preset::known`].
    pub const ALL: [Preset; 7] = [
        Preset::NodeEdac,
        Preset::NodeMdraid,
        Preset::NodeHwmon,
        Preset::Smartmon,
        Preset::Nvme,
        Preset::Ipmi,
        Preset::NodeProblemDetector,
    ];

    /// The preset of this name, if there is one.
    pub fn named(name: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            Preset::NodeEdac => "node-edac",
            Preset::NodeMdraid => "node-mdraid",
            Preset::NodeHwmon => "node-hwmon",
            Preset::Smartmon => "smartmon",
            Preset::Nvme => "nvme",
            Preset::Ipmi => "ipmi",
            Preset::NodeProblemDetector => "node-problem-detector",
        }
    }

    /// The known names, comma separated, for an error message.
    pub fn known() -> String {
        Preset::ALL.map(Preset::name).join(", ")
    }

    /// The metric names it reads, guards included. Everything else in a
    /// scrape is ignored.
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            Preset::NodeEdac => &[
                EDAC_CE,
                EDAC_UE,
                EDAC_CSROW_CE,
                EDAC_CSROW_UE,
                NODE_COLLECTOR,
            ],
            Preset::NodeMdraid => &[MD_DISKS, MD_REQUIRED, MD_DEGRADED, MD_STATE, NODE_COLLECTOR],
            Preset::NodeHwmon => &[
                HW_TEMP,
                HW_TEMP_CRIT,
                HW_TEMP_CRIT_ALARM,
                HW_TEMP_EMERGENCY_ALARM,
                HW_TEMP_ALARM,
                HW_TEMP_MAX_ALARM,
                HW_FAN_RPM,
                HW_FAN_ALARM,
                HW_FAN_FAULT,
                HW_FAN_MIN_ALARM,
                HW_IN_CRIT_ALARM,
                HW_IN_LCRIT_ALARM,
                HW_SENSOR_LABEL,
                HW_CHIP_NAMES,
                NODE_COLLECTOR,
            ],
            Preset::Smartmon => &[
                SM_HEALTHY,
                SM_INFO,
                SM_PENDING,
                SM_OFFLINE_UNC,
                SM_REALLOCATED,
                SM_GROWN_DEFECTS,
                SM_REPORTED_UNC,
                SM_ATTR_RAW,
            ],
            Preset::Nvme => &[
                NVME_WARNING,
                NVME_WARNING_TOTAL,
                NVME_MEDIA_ERRORS,
                NVME_USED,
                NVME_INFO,
            ],
            Preset::Ipmi => &[
                IPMI_SENSOR,
                IPMI_FAN,
                IPMI_TEMPERATURE,
                IPMI_VOLTAGE,
                IPMI_CURRENT,
                IPMI_CHASSIS_POWER,
                IPMI_CHASSIS_DRIVE,
                IPMI_CHASSIS_COOLING,
                IPMI_SEL_BY_STATE,
                IPMI_UP,
            ],
            Preset::NodeProblemDetector => &[NPD_GAUGE, NPD_COUNTER],
        }
    }

    /// The kind of its signals: node problems are about components, the
    /// exporters' metrics about hardware.
    pub fn kind(self) -> Kind {
        match self {
            Preset::NodeProblemDetector => Kind::Component,
            _ => Kind::Hardware,
        }
    }

    /// Whether it reads this metric (filter a scrape before converting it).
    pub fn reads(self, metric: &str) -> bool {
        self.metrics().contains(&metric)
    }

    /// An instant-vector PromQL query for `[[prometheus]]` that returns every
    /// series the preset reads; node_exporter's per-collector success series
    /// are limited to the collector it is about.
    pub fn promql(self) -> String {
        let names: Vec<&str> = self
            .metrics()
            .iter()
            .copied()
            .filter(|m| *m != NODE_COLLECTOR)
            .collect();
        let mut query = format!("{{__name__=~\"{}\"}}", names.join("|"));
        if let Some(collector) = self.node_collector() {
            query.push_str(&format!(
                " or {NODE_COLLECTOR}{{collector=\"{collector}\"}}"
            ));
        }
        query
    }

    /// node_exporter's name of the collector behind a `node-*` preset.
    fn node_collector(self) -> Option<&'static str> {
        match self {
            Preset::NodeEdac => Some("edac"),
            Preset::NodeMdraid => Some("mdadm"),
            Preset::NodeHwmon => Some("hwmon"),
            _ => None,
        }
    }

    /// Guards: a guard series present with a value other than 1 makes the
    /// metrics it vouches for unknown in this snapshot.
    fn guards(self) -> Vec<Guard> {
        match self {
            Preset::Ipmi => IPMI_GUARDS.to_vec(),
            p => match p.node_collector() {
                Some(c) => vec![(NODE_COLLECTOR, c, p.metrics())],
                None => Vec::new(),
            },
        }
    }

    /// The static name of a metric it reads.
    fn canonical(self, metric: &str) -> Option<&'static str> {
        self.metrics().iter().copied().find(|m| *m == metric)
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = UnknownPreset;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Preset::named(name).ok_or_else(|| UnknownPreset { name: name.into() })
    }
}

impl TryFrom<String> for Preset {
    type Error = UnknownPreset;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

/// One sample of one series, wherever it came from: a scraped exposition
/// text or one series of a PromQL instant-query result.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub metric: String,
    /// Its labels, without `__name__`.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// A sample from its parts; a `__name__` among the labels is dropped.
    pub fn new<K, V>(
        metric: impl Into<String>,
        labels: impl IntoIterator<Item = (K, V)>,
        value: f64,
    ) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut labels: BTreeMap<String, String> = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        labels.remove("__name__");
        Sample {
            metric: metric.into(),
            labels,
            value,
        }
    }

    /// A sample parsed by prometheus-parse; `None` for histograms and
    /// summaries, which no preset reads.
    pub fn from_parsed(sample: &prometheus_parse::Sample) -> Option<Self> {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => return None,
        };
        Some(Sample::new(
            sample.metric.clone(),
            sample.labels.iter().map(|(k, v)| (k.clone(), v.clone())),
            value,
        ))
    }

    /// One series of a PromQL result: the metric name is its `__name__`
    /// label (`None` without one: an expression, not a raw series).
    pub fn from_series(metric: &BTreeMap<String, String>, value: f64) -> Option<Self> {
        let name = metric.get("__name__")?;
        Some(Sample::new(name.clone(), metric.clone(), value))
    }

    /// The samples of an exposition text that `preset` reads.
    pub fn parse_text(text: &str, preset: Preset) -> std::io::Result<Vec<Sample>> {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines)?;
        Ok(scrape
            .samples
            .iter()
            .filter(|s| preset.reads(&s.metric))
            .filter_map(Sample::from_parsed)
            .collect())
    }

    fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// Turns successive snapshots of one preset's metrics into signals,
/// remembering counter baselines and held conditions per node.
#[derive(Debug)]
pub struct PresetState {
    preset: Preset,
    nodes: BTreeMap<String, NodeState>,
}

impl PresetState {
    /// Empty state: every counter's first sample will be a baseline.
    pub fn new(preset: Preset) -> Self {
        PresetState {
            preset,
            nodes: BTreeMap::new(),
        }
    }

    /// Its preset.
    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// The signals of one scrape of an exporter that describes `node`, taken
    /// at `at`: events for counter increases (at most
    /// [`MAX_EVENTS_PER_SERIES`] per series), a signal per bad state that
    /// holds, then a resolved signal per condition that cleared or whose
    /// series is gone. Samples of metrics the preset does not read are
    /// ignored; a scrape with none of its metrics changes nothing (the
    /// source is unknown). Other nodes' state is untouched.
    pub fn signals(&mut self, samples: &[Sample], node: &str, at: Timestamp) -> Vec<Signal> {
        let mut out = Vec::new();
        let state = self.nodes.entry(node.to_string()).or_default();
        step(self.preset, state, samples.iter(), node, at, &mut out);
        out
    }

    /// The signals of one PromQL result taken at `at`, each sample with the
    /// node it is about. The result is the whole picture: a node that held
    /// conditions and is absent from it is unknown (kept, not resolved).
    pub fn signals_per_node(&mut self, samples: &[(String, Sample)], at: Timestamp) -> Vec<Signal> {
        let mut by_node: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
        for (node, sample) in samples {
            by_node.entry(node.as_str()).or_default().push(sample);
        }
        let mut out = Vec::new();
        for (node, samples) in by_node {
            let state = self.nodes.entry(node.to_string()).or_default();
            step(self.preset, state, samples.into_iter(), node, at, &mut out);
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Metric names, as the exporters print them.

const NODE_COLLECTOR: &str = "node_scrape_collector_success";

const EDAC_CE: &str = "node_edac_correctable_errors_total";
const EDAC_UE: &str = "node_edac_uncorrectable_errors_total";
const EDAC_CSROW_CE: &str = "node_edac_csrow_correctable_errors_total";
const EDAC_CSROW_UE: &str = "node_edac_csrow_uncorrectable_errors_total";

const MD_DISKS: &str = "node_md_disks";
const MD_REQUIRED: &str = "node_md_disks_required";
const MD_DEGRADED: &str = "node_md_degraded";
const MD_STATE: &str = "node_md_state";

const HW_TEMP: &str = "node_hwmon_temp_celsius";
const HW_TEMP_CRIT: &str = "node_hwmon_temp_crit_celsius";
const HW_TEMP_CRIT_ALARM: &str = "node_hwmon_temp_crit_alarm_celsius";
const HW_TEMP_EMERGENCY_ALARM: &str = "node_hwmon_temp_emergency_alarm_celsius";
const HW_TEMP_ALARM: &str = "node_hwmon_temp_alarm";
const HW_TEMP_MAX_ALARM: &str = "node_hwmon_temp_max_alarm_celsius";
const HW_FAN_RPM: &str = "node_hwmon_fan_rpm";
const HW_FAN_ALARM: &str = "node_hwmon_fan_alarm";
const HW_FAN_FAULT: &str = "node_hwmon_fan_fault";
const HW_FAN_MIN_ALARM: &str = "node_hwmon_fan_min_alarm";
const HW_IN_CRIT_ALARM: &str = "node_hwmon_in_crit_alarm_volts";
const HW_IN_LCRIT_ALARM: &str = "node_hwmon_in_lcrit_alarm_volts";
const HW_SENSOR_LABEL: &str = "node_hwmon_sensor_label";
const HW_CHIP_NAMES: &str = "node_hwmon_chip_names";

const SM_HEALTHY: &str = "smartmon_device_smart_healthy";
const SM_INFO: &str = "smartmon_device_info";
const SM_PENDING: &str = "smartmon_current_pending_sector_raw_value";
const SM_OFFLINE_UNC: &str = "smartmon_offline_uncorrectable_raw_value";
const SM_REALLOCATED: &str = "smartmon_reallocated_sector_ct_raw_value";
const SM_GROWN_DEFECTS: &str = "smartmon_grown_defects_count_raw_value";
const SM_REPORTED_UNC: &str = "smartmon_reported_uncorrect_raw_value";
/// smartmon.py: one metric for every attribute, named by the `name` label.
const SM_ATTR_RAW: &str = "smartmon_attr_raw_value";
const SM_INFO_FIELDS: &[&str] = &[
    "vendor",
    "product",
    "revision",
    "lun_id",
    "model_family",
    "device_model",
    "serial_number",
    "firmware_version",
];

/// nvme_metrics.py (a gauge).
const NVME_WARNING: &str = "nvme_critical_warning";
/// nvme_metrics.sh as Debian ships it (typed counter, still the bitmap).
const NVME_WARNING_TOTAL: &str = "nvme_critical_warning_total";
const NVME_MEDIA_ERRORS: &str = "nvme_media_errors_total";
const NVME_USED: &str = "nvme_percentage_used_ratio";
const NVME_INFO: &str = "nvme_device_info";

const NPD_GAUGE: &str = "problem_gauge";
const NPD_COUNTER: &str = "problem_counter";

const IPMI_SENSOR: &str = "ipmi_sensor_state";
const IPMI_FAN: &str = "ipmi_fan_speed_state";
const IPMI_TEMPERATURE: &str = "ipmi_temperature_state";
const IPMI_VOLTAGE: &str = "ipmi_voltage_state";
const IPMI_CURRENT: &str = "ipmi_current_state";
const IPMI_CHASSIS_POWER: &str = "ipmi_chassis_power_state";
const IPMI_CHASSIS_DRIVE: &str = "ipmi_chassis_drive_fault_state";
const IPMI_CHASSIS_COOLING: &str = "ipmi_chassis_cooling_fault_state";
const IPMI_SEL_BY_STATE: &str = "ipmi_sel_events_count_by_state";
const IPMI_UP: &str = "ipmi_up";
/// ipmi_exporter reports each collector's success as `ipmi_up{collector}`.
const IPMI_GUARDS: &[Guard] = &[
    (
        IPMI_UP,
        "ipmi",
        &[
            IPMI_SENSOR,
            IPMI_FAN,
            IPMI_TEMPERATURE,
            IPMI_VOLTAGE,
            IPMI_CURRENT,
        ],
    ),
    (
        IPMI_UP,
        "chassis",
        &[IPMI_CHASSIS_POWER, IPMI_CHASSIS_DRIVE, IPMI_CHASSIS_COOLING],
    ),
    (IPMI_UP, "sel-events", &[IPMI_SEL_BY_STATE]),
];

/// (guard metric, its `collector` label value, the metrics it vouches for).
type Guard = (&'static str, &'static str, &'static [&'static str]);

// ---------------------------------------------------------------------------
// What a snapshot says, before it meets the remembered state.

/// Sorted label pairs.
type Pairs = Vec<(String, String)>;

/// One finding of a preset in one node's snapshot.
#[derive(Debug)]
enum Obs {
    /// A counter: one event per unit of increase.
    Count {
        metric: &'static str,
        r#type: &'static str,
        labels: Pairs,
        extra: Pairs,
        value: f64,
        /// What counts, e.g. `EDAC MC0 csrow 1`.
        subject: String,
        /// What is counted, singular and plural.
        noun: (&'static str, &'static str),
    },
    /// A bad state that holds now.
    Holds {
        /// The metric it is read from (to know when it is unknown).
        source: &'static str,
        r#type: &'static str,
        labels: Pairs,
        extra: Pairs,
        value: f64,
        message: String,
    },
}

/// One node's samples of one snapshot, by metric.
struct View<'a> {
    by_metric: BTreeMap<&'static str, Vec<&'a Sample>>,
}

impl<'a> View<'a> {
    fn of(&self, metric: &str) -> impl Iterator<Item = &'a Sample> + '_ {
        self.by_metric.get(metric).into_iter().flatten().copied()
    }

    /// Labels joined from an info metric: for a finding with `labels`, the
    /// `copy` labels (non-empty) of the `info` sample whose labels, without
    /// its `fields`, equal the finding's without `ignore`.
    fn join(
        &self,
        info: &str,
        fields: &[&str],
        ignore: &[&str],
        copy: &[(&str, &str)],
        labels: &Pairs,
    ) -> Pairs {
        let key = without(labels, ignore);
        let Some(found) = self
            .of(info)
            .find(|s| without_map(&s.labels, fields) == key)
        else {
            return Vec::new();
        };
        copy.iter()
            .filter_map(|(from, to)| {
                let v = found.label(from).trim();
                (!v.is_empty()).then(|| (to.to_string(), v.to_string()))
            })
            .collect()
    }
}

fn pairs(labels: &BTreeMap<String, String>) -> Pairs {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn without(labels: &Pairs, drop: &[&str]) -> Pairs {
    labels
        .iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .cloned()
        .collect()
}

fn without_map(labels: &BTreeMap<String, String>, drop: &[&str]) -> Pairs {
    labels
        .iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn holds(
    source: &'static str,
    r#type: &'static str,
    s: &Sample,
    extra: Pairs,
    value: f64,
    message: String,
) -> Obs {
    Obs::Holds {
        source,
        r#type,
        labels: pairs(&s.labels),
        extra,
        value,
        message,
    }
}

impl Preset {
    /// The findings of one node's snapshot.
    fn observe(self, view: &View<'_>) -> Vec<Obs> {
        match self {
            Preset::NodeEdac => edac(view),
            Preset::NodeMdraid => mdraid(view),
            Preset::NodeHwmon => hwmon(view),
            Preset::Smartmon => smartmon(view),
            Preset::Nvme => nvme(view),
            Preset::Ipmi => ipmi(view),
            Preset::NodeProblemDetector => npd(view),
        }
    }
}

/// EDAC counts nest: a controller's total is the sum of its csrows' counts
/// (csrow "unknown" holding the errors EDAC could not attribute). Counting
/// both would count each error twice, so each controller is counted at one
/// level: its csrows when it has real ones (they name the DIMM's row), else
/// its total. Newer node_exporters also break csrows down by channel; those
/// are sums again and are not read.
fn edac(view: &View<'_>) -> Vec<Obs> {
    let families = [
        (
            EDAC_CE,
            EDAC_CSROW_CE,
            "memory.ecc.correctable",
            ("correctable error", "correctable errors"),
        ),
        (
            EDAC_UE,
            EDAC_CSROW_UE,
            "memory.ecc.uncorrectable",
            ("uncorrectable error", "uncorrectable errors"),
        ),
    ];
    let mut out = Vec::new();
    for (total, rows, r#type, noun) in families {
        // Controller (with the labels other than csrow) -> has real csrows.
        let mut real_rows: BTreeMap<Pairs, bool> = BTreeMap::new();
        for s in view.of(rows) {
            let key = without_map(&s.labels, &["csrow"]);
            let real = s.label("csrow") != "unknown";
            *real_rows.entry(key).or_default() |= real;
        }
        let totals: BTreeSet<Pairs> = view.of(total).map(|s| pairs(&s.labels)).collect();
        for s in view.of(total) {
            if real_rows.get(&pairs(&s.labels)) == Some(&true) {
                continue;
            }
            out.push(Obs::Count {
                metric: total,
                r#type,
                labels: pairs(&s.labels),
                extra: Vec::new(),
                value: s.value,
                subject: format!("EDAC MC{}", s.label("controller")),
                noun,
            });
        }
        for s in view.of(rows) {
            let key = without_map(&s.labels, &["csrow"]);
            if real_rows.get(&key) != Some(&true) && totals.contains(&key) {
                continue;
            }
            out.push(Obs::Count {
                metric: rows,
                r#type,
                labels: pairs(&s.labels),
                extra: Vec::new(),
                value: s.value,
                subject: format!(
                    "EDAC MC{} csrow {}",
                    s.label("controller"),
                    s.label("csrow")
                ),
                noun,
            });
        }
    }
    out
}

fn mdraid(view: &View<'_>) -> Vec<Obs> {
    let mut out = Vec::new();
    // Device (labels without `state`) -> its value per state.
    let mut disks: BTreeMap<Pairs, BTreeMap<&str, f64>> = BTreeMap::new();
    for s in view.of(MD_DISKS) {
        disks
            .entry(without_map(&s.labels, &["state"]))
            .or_default()
            .insert(s.label("state"), s.value);
        if s.label("state") == "failed" && s.value > 0.0 {
            out.push(holds(
                MD_DISKS,
                "NodeRAIDDiskFailure",
                s,
                Vec::new(),
                s.value,
                format!("{}: {} failed member disk(s)", s.label("device"), s.value),
            ));
        }
    }
    let mut activity: BTreeMap<Pairs, &str> = BTreeMap::new();
    for s in view.of(MD_STATE) {
        if s.value == 1.0 {
            activity.insert(without_map(&s.labels, &["state"]), s.label("state"));
        }
        if s.label("state") == "inactive" && s.value == 1.0 {
            out.push(holds(
                MD_STATE,
                "disk.raid.inactive",
                s,
                Vec::new(),
                s.value,
                format!("{} is inactive (not running)", s.label("device")),
            ));
        }
    }
    let degraded: BTreeMap<Pairs, &Sample> = view
        .of(MD_DEGRADED)
        .map(|s| (pairs(&s.labels), s))
        .collect();
    let mut degraded_obs = |source, s: &Sample, missing: f64, of: Option<f64>| {
        if missing > 0.0 {
            let key = pairs(&s.labels);
            let of = of.map(|n| format!(" of {n}")).unwrap_or_default();
            let state = activity
                .get(&key)
                .map(|a| format!(", {a}"))
                .unwrap_or_default();
            out.push(holds(
                source,
                "NodeRAIDDegraded",
                s,
                Vec::new(),
                missing,
                format!(
                    "{} degraded: {missing}{of} member disk(s) missing{state}",
                    s.label("device")
                ),
            ));
        }
    };
    for s in degraded.values() {
        degraded_obs(MD_DEGRADED, s, s.value, None);
    }
    for s in view.of(MD_REQUIRED) {
        let key = pairs(&s.labels);
        if degraded.contains_key(&key) {
            continue;
        }
        if let Some(active) = disks.get(&key).and_then(|d| d.get("active")) {
            degraded_obs(MD_REQUIRED, s, s.value - active, Some(s.value));
        }
    }
    out
}

fn hwmon(view: &View<'_>) -> Vec<Obs> {
    let extra = |labels: &Pairs| {
        let mut extra = view.join(
            HW_SENSOR_LABEL,
            &["label"],
            &[],
            &[("label", "label")],
            labels,
        );
        extra.extend(view.join(
            HW_CHIP_NAMES,
            &["chip_name"],
            &["sensor"],
            &[("chip_name", "chip_name")],
            labels,
        ));
        extra
    };
    let name = |s: &Sample, extra: &Pairs| {
        let label = extra.iter().find(|(k, _)| k == "label");
        match label {
            Some((_, l)) => format!("{l} ({} {})", s.label("chip"), s.label("sensor")),
            None => format!("{} {}", s.label("chip"), s.label("sensor")),
        }
    };
    let temps: BTreeMap<Pairs, f64> = view
        .of(HW_TEMP)
        .map(|s| (pairs(&s.labels), s.value))
        .collect();
    let fans: BTreeMap<Pairs, f64> = view
        .of(HW_FAN_RPM)
        .map(|s| (pairs(&s.labels), s.value))
        .collect();
    let mut out = Vec::new();
    for crit in view.of(HW_TEMP_CRIT) {
        let labels = pairs(&crit.labels);
        if let Some(&t) = temps.get(&labels) {
            if crit.value > 0.0 && t >= crit.value {
                let extra = extra(&labels);
                let message = format!(
                    "{}: {t} °C, critical limit {} °C",
                    name(crit, &extra),
                    crit.value
                );
                out.push(holds(
                    HW_TEMP_CRIT,
                    "thermal.critical",
                    crit,
                    extra,
                    t,
                    message,
                ));
            }
        }
    }
    let alarms = [
        (
            HW_TEMP_CRIT_ALARM,
            "thermal.critical",
            "critical temperature alarm",
        ),
        (
            HW_TEMP_EMERGENCY_ALARM,
            "thermal.critical",
            "emergency temperature alarm",
        ),
        (HW_TEMP_ALARM, "thermal.high", "temperature alarm"),
        (HW_TEMP_MAX_ALARM, "thermal.high", "high temperature alarm"),
        (HW_FAN_ALARM, "fan.failed", "fan alarm"),
        (HW_FAN_FAULT, "fan.failed", "fan fault"),
        (
            HW_FAN_MIN_ALARM,
            "fan.failed",
            "fan below its minimum speed",
        ),
        (
            HW_IN_CRIT_ALARM,
            "voltage.critical",
            "critical voltage alarm",
        ),
        (
            HW_IN_LCRIT_ALARM,
            "voltage.critical",
            "critical low voltage alarm",
        ),
    ];
    for (metric, r#type, what) in alarms {
        for s in view.of(metric) {
            // Alarm files with a unit suffix come out scaled (1 -> 0.001).
            if s.value <= 0.0 {
                continue;
            }
            let labels = pairs(&s.labels);
            let extra = extra(&labels);
            let reading = if r#type.starts_with("thermal") {
                temps.get(&labels).map(|t| (*t, format!(", {t} °C")))
            } else if r#type == "fan.failed" {
                fans.get(&labels).map(|r| (*r, format!(", {r} RPM")))
            } else {
                None
            };
            let (value, reading) = reading.unwrap_or((s.value, String::new()));
            let message = format!("{}: {what}{reading}", name(s, &extra));
            out.push(holds(metric, r#type, s, extra, value, message));
        }
    }
    out
}

fn smartmon(view: &View<'_>) -> Vec<Obs> {
    let extra = |s: &Sample| {
        let labels = pairs(&s.labels);
        let mut extra = Vec::new();
        // smartmon.sh names the disk `disk`; the rules read `device`.
        if !s.labels.contains_key("device") && !s.label("disk").is_empty() {
            extra.push(("device".to_string(), s.label("disk").to_string()));
        }
        extra.extend(view.join(
            SM_INFO,
            SM_INFO_FIELDS,
            &["smart_id", "name"],
            &[
                ("serial_number", "serial_number"),
                ("device_model", "device_model"),
                ("model_family", "model_family"),
            ],
            &labels,
        ));
        extra
    };
    let disk = |s: &Sample| match s.labels.get("device") {
        Some(d) => d.clone(),
        None => s.label("disk").to_string(),
    };
    let mut out = Vec::new();
    for s in view.of(SM_HEALTHY) {
        if s.value == 0.0 {
            let message = format!("{}: SMART overall-health self-assessment failed", disk(s));
            out.push(holds(
                SM_HEALTHY,
                "disk.smart.failing",
                s,
                extra(s),
                0.0,
                message,
            ));
        }
    }
    // smartmon.sh: one metric per attribute; smartmon.py: `name` label.
    let attributes = view.of(SM_ATTR_RAW).filter_map(|s| {
        let metric = match s.label("name") {
            "current_pending_sector" => SM_PENDING,
            "offline_uncorrectable" => SM_OFFLINE_UNC,
            "reallocated_sector_ct" => SM_REALLOCATED,
            "reported_uncorrect" => SM_REPORTED_UNC,
            _ => return None,
        };
        Some((metric, SM_ATTR_RAW, s))
    });
    let attributes = [
        SM_PENDING,
        SM_OFFLINE_UNC,
        SM_REALLOCATED,
        SM_GROWN_DEFECTS,
        SM_REPORTED_UNC,
    ]
    .into_iter()
    .flat_map(|m| view.of(m).map(move |s| (m, m, s)))
    .chain(attributes);
    for (attribute, metric, s) in attributes {
        let v = s.value;
        match attribute {
            SM_PENDING | SM_OFFLINE_UNC if v > 0.0 => {
                let what = if attribute == SM_PENDING {
                    "sector(s) unreadable, pending reallocation"
                } else {
                    "uncorrectable sector(s) found by the offline scan"
                };
                let message = format!("{}: {v} {what}", disk(s));
                out.push(holds(metric, "disk.smart.failing", s, extra(s), v, message));
            }
            SM_REALLOCATED | SM_GROWN_DEFECTS => out.push(Obs::Count {
                metric,
                r#type: "disk.sector.reallocated",
                labels: pairs(&s.labels),
                extra: extra(s),
                value: v,
                subject: disk(s),
                noun: ("reallocated sector", "reallocated sectors"),
            }),
            SM_REPORTED_UNC => out.push(Obs::Count {
                metric,
                r#type: "disk.io.error",
                labels: pairs(&s.labels),
                extra: extra(s),
                value: v,
                subject: disk(s),
                noun: ("uncorrectable error", "uncorrectable errors"),
            }),
            _ => {}
        }
    }
    out
}

/// NVMe SMART / Health log, critical warning bits (NVMe base spec).
const NVME_WARNINGS: [(u64, &str); 6] = [
    (0x01, "available spare below threshold"),
    (0x02, "temperature beyond threshold"),
    (0x04, "reliability degraded by media or internal errors"),
    (0x08, "media placed in read-only mode"),
    (0x10, "volatile memory backup failed"),
    (0x20, "persistent memory region read-only"),
];

fn nvme(view: &View<'_>) -> Vec<Obs> {
    let extra = |s: &Sample| {
        view.join(
            NVME_INFO,
            &["model", "firmware", "serial"],
            &[],
            &[
                ("serial", "serial"),
                ("model", "model"),
                ("firmware", "firmware"),
            ],
            &pairs(&s.labels),
        )
    };
    let mut out = Vec::new();
    for metric in [NVME_WARNING, NVME_WARNING_TOTAL] {
        for s in view.of(metric) {
            if s.value.is_nan() || s.value <= 0.0 {
                continue;
            }
            let bits = s.value as u64;
            let decode = |mask: u64| {
                NVME_WARNINGS
                    .iter()
                    .filter(|(bit, _)| bits & mask & bit != 0)
                    .map(|(_, what)| *what)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let device = s.label("device");
            if bits & !0x02 != 0 {
                let message = format!(
                    "{device}: NVMe critical warning {bits:#04x}: {}",
                    decode(!0x02)
                );
                out.push(holds(
                    metric,
                    "disk.smart.failing",
                    s,
                    extra(s),
                    s.value,
                    message,
                ));
            }
            if bits & 0x02 != 0 {
                let message = format!("{device}: NVMe critical warning: {}", decode(0x02));
                out.push(holds(metric, "thermal.high", s, extra(s), s.value, message));
            }
        }
    }
    for s in view.of(NVME_MEDIA_ERRORS) {
        out.push(Obs::Count {
            metric: NVME_MEDIA_ERRORS,
            r#type: "disk.io.error",
            labels: pairs(&s.labels),
            extra: extra(s),
            value: s.value,
            subject: s.label("device").to_string(),
            noun: ("media error", "media errors"),
        });
    }
    for s in view.of(NVME_USED) {
        if s.value >= 1.0 {
            let message = format!(
                "{}: {}% of its rated endurance used",
                s.label("device"),
                (s.value * 100.0).round()
            );
            out.push(holds(
                NVME_USED,
                "disk.wearout",
                s,
                extra(s),
                s.value,
                message,
            ));
        }
    }
    out
}

/// IPMI sensor states: 0 nominal, 1 warning, 2 critical, 3 non-recoverable
/// (native mode), NaN when the BMC has none.
/// node-problem-detector's metrics: a condition whose gauge is above 0
/// holds (its series, by `type` and `reason`, resolves when it drops to 0
/// or goes away); a counter's increase is one event per new occurrence.
fn npd(view: &View<'_>) -> Vec<Obs> {
    let mut out = Vec::new();
    for s in view.of(NPD_GAUGE) {
        if s.value > 0.0 {
            let message = format!(
                "node-problem-detector: {} ({})",
                s.label("type"),
                s.label("reason")
            );
            out.push(holds(NPD_GAUGE, NPD_GAUGE, s, Vec::new(), s.value, message));
        }
    }
    for s in view.of(NPD_COUNTER) {
        out.push(Obs::Count {
            metric: NPD_COUNTER,
            r#type: NPD_COUNTER,
            labels: pairs(&s.labels),
            extra: Vec::new(),
            value: s.value,
            subject: format!("node-problem-detector {}", s.label("reason")),
            noun: ("occurrence", "occurrences"),
        });
    }
    out
}

fn ipmi(view: &View<'_>) -> Vec<Obs> {
    const CRITICAL: f64 = 2.0;
    let mut out = Vec::new();
    let sensor = |s: &Sample, what: &str| {
        let state = if s.value >= 3.0 {
            "non-recoverable"
        } else {
            what
        };
        match s.labels.get("type") {
            Some(t) => format!("IPMI sensor {} ({t}) {state}", s.label("name")),
            None => format!("IPMI sensor {} {state}", s.label("name")),
        }
    };
    for s in view.of(IPMI_SENSOR) {
        if s.value.is_nan() || s.value < CRITICAL {
            continue;
        }
        let kind = s.label("type").to_ascii_lowercase();
        let redundancy = s.label("name").to_ascii_lowercase().contains("redundan");
        let mut extra = Vec::new();
        let r#type = if kind.contains("power supply") {
            if redundancy {
                "power.redundancy.lost"
            } else {
                extra.push(("psu".to_string(), s.label("name").to_string()));
                "power.psu.failed"
            }
        } else if kind.contains("power unit") {
            if redundancy {
                "power.redundancy.lost"
            } else {
                "power.lost"
            }
        } else if kind.contains("memory") {
            "memory.ecc.uncorrectable"
        } else if kind.contains("drive") {
            "disk.failed"
        } else if kind.contains("fan") || kind.contains("cooling") {
            "fan.failed"
        } else if kind.contains("temperature") {
            "thermal.critical"
        } else if [
            "processor",
            "critical interrupt",
            "module",
            "chip",
            "voltage",
            "current",
        ]
        .iter()
        .any(|k| kind.contains(k))
        {
            "motherboard.sel.critical"
        } else {
            continue;
        };
        out.push(holds(
            IPMI_SENSOR,
            r#type,
            s,
            extra,
            s.value,
            sensor(s, "critical"),
        ));
    }
    let typed = [
        (IPMI_FAN, "fan.failed", None),
        (IPMI_TEMPERATURE, "thermal.critical", Some("thermal.high")),
        (IPMI_VOLTAGE, "motherboard.sel.critical", None),
        (IPMI_CURRENT, "motherboard.sel.critical", None),
    ];
    for (metric, critical, warning) in typed {
        for s in view.of(metric) {
            let (r#type, what) = match warning {
                _ if s.value >= CRITICAL => (critical, "critical"),
                Some(warning) if s.value == 1.0 => (warning, "warning"),
                _ => continue,
            };
            out.push(holds(
                metric,
                r#type,
                s,
                Vec::new(),
                s.value,
                sensor(s, what),
            ));
        }
    }
    let chassis = [
        (IPMI_CHASSIS_POWER, "power.off", "IPMI chassis power is off"),
        (
            IPMI_CHASSIS_DRIVE,
            "disk.failed",
            "IPMI chassis reports a drive fault",
        ),
        (
            IPMI_CHASSIS_COOLING,
            "fan.failed",
            "IPMI chassis reports a cooling/fan fault",
        ),
    ];
    for (metric, r#type, message) in chassis {
        for s in view.of(metric) {
            // 1 = on / no fault, 0 = off / fault.
            if s.value == 0.0 {
                out.push(holds(
                    metric,
                    r#type,
                    s,
                    Vec::new(),
                    s.value,
                    message.to_string(),
                ));
            }
        }
    }
    for s in view.of(IPMI_SEL_BY_STATE) {
        if s.label("state") == "Critical" {
            out.push(Obs::Count {
                metric: IPMI_SEL_BY_STATE,
                r#type: "motherboard.sel.critical",
                labels: pairs(&s.labels),
                extra: Vec::new(),
                value: s.value,
                subject: "IPMI SEL".to_string(),
                noun: ("critical entry", "critical entries"),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The remembered state and what a snapshot does to it.

/// A held condition: the metric it came from and its labels as signalled.
#[derive(Debug)]
struct Held {
    source: &'static str,
    labels: Pairs,
}

#[derive(Debug, Default)]
struct NodeState {
    /// (metric, labels) -> last value.
    counters: BTreeMap<(&'static str, Pairs), f64>,
    /// (type, labels without joined extras) -> the condition.
    conditions: BTreeMap<(&'static str, Pairs), Held>,
    /// Metrics whose absent series were known to be zero last time (their
    /// exporter omits a zero count: IPMI SEL entries by state).
    zero: BTreeSet<&'static str>,
}

fn step<'a>(
    preset: Preset,
    state: &mut NodeState,
    samples: impl Iterator<Item = &'a Sample>,
    node: &str,
    at: Timestamp,
    out: &mut Vec<Signal>,
) {
    let mut by_metric: BTreeMap<&'static str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        if let Some(m) = preset.canonical(&s.metric) {
            by_metric.entry(m).or_default().push(s);
        }
    }
    let guards = preset.guards();
    let guard_metrics: BTreeSet<&str> = guards.iter().map(|(m, _, _)| *m).collect();
    if by_metric.keys().all(|m| guard_metrics.contains(m)) {
        // Nothing the preset reads: the source is unknown, not healthy.
        return;
    }
    let view = View { by_metric };
    let mut unknown: BTreeSet<&'static str> = BTreeSet::new();
    let mut up: BTreeSet<&'static str> = BTreeSet::new();
    for (metric, collector, vouches) in guards {
        for s in view
            .of(metric)
            .filter(|s| s.label("collector") == collector)
        {
            if s.value == 1.0 {
                up.extend(vouches.iter().copied());
            } else {
                unknown.extend(vouches.iter().copied());
            }
        }
    }
    let mut zero = BTreeSet::new();
    if preset == Preset::Ipmi && up.contains(IPMI_SEL_BY_STATE) {
        zero.insert(IPMI_SEL_BY_STATE);
    }

    let mut counts = Vec::new();
    let mut conditions = Vec::new();
    for obs in preset.observe(&view) {
        match obs {
            Obs::Count { .. } => counts.push(obs),
            Obs::Holds { .. } => conditions.push(obs),
        }
    }
    let signal = |r#type: &str, labels: &Pairs, extra: &Pairs| {
        let mut s = Signal::new(node, preset.kind(), r#type);
        s.ts = Some(at);
        let all: BTreeMap<&str, &str> = labels
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (k, v) in all {
            s.labels.insert(k, v);
        }
        s
    };

    let mut counters = BTreeMap::new();
    counts.sort_by(|a, b| count_key(a).cmp(&count_key(b)));
    for obs in counts {
        let Obs::Count {
            metric,
            r#type,
            labels,
            extra,
            value,
            subject,
            noun,
        } = obs
        else {
            continue;
        };
        let key = (metric, labels);
        let before = state
            .counters
            .get(&key)
            .copied()
            .or_else(|| state.zero.contains(metric).then_some(0.0));
        if value.is_nan() {
            if let Some(b) = state.counters.get(&key) {
                counters.insert(key, *b);
            }
            continue;
        }
        if let Some(before) = before {
            let new = (value - before).round();
            if new >= 1.0 {
                let noun = if new == 1.0 { noun.0 } else { noun.1 };
                let mut message = format!("{subject}: {new} new {noun}, {value} in total");
                let n = (new as u64).min(MAX_EVENTS_PER_SERIES);
                if n < new as u64 {
                    message.push_str(&format!(" (only {n} signalled)"));
                }
                let mut s = signal(r#type, &key.1, &extra);
                s.value = Some(value);
                s.message = Some(message);
                out.extend(std::iter::repeat_n(s, n as usize));
            }
            // Otherwise unchanged, or lower: a reset, the new baseline.
        }
        counters.insert(key, value);
    }
    for (key, value) in &state.counters {
        if unknown.contains(key.0) && !counters.contains_key(key) {
            counters.insert(key.clone(), *value);
        }
    }

    let mut held = BTreeMap::new();
    conditions.sort_by(|a, b| hold_key(a).cmp(&hold_key(b)));
    for obs in conditions {
        let Obs::Holds {
            source,
            r#type,
            labels,
            extra,
            value,
            message,
        } = obs
        else {
            continue;
        };
        let key = (r#type, labels);
        if held.contains_key(&key) {
            continue; // Two readings of one bad state: the first says it.
        }
        let mut s = signal(r#type, &key.1, &extra);
        s.condition = true;
        let labels = s.labels.0.clone();
        s.value = Some(value);
        s.message = Some(message);
        out.push(s);
        held.insert(key, Held { source, labels });
    }
    let before = std::mem::take(&mut state.conditions);
    for (key, was) in before {
        if held.contains_key(&key) {
            continue;
        }
        if unknown.contains(was.source) {
            held.insert(key, was);
            continue;
        }
        let mut s = Signal::new(node, preset.kind(), key.0);
        s.ts = Some(at);
        s.labels.0 = was.labels;
        s.resolved = true;
        s.condition = true;
        out.push(s);
    }
    state.counters = counters;
    state.conditions = held;
    state.zero = zero;
}

fn count_key(obs: &Obs) -> (&str, &Pairs) {
    match obs {
        Obs::Count { metric, labels, .. } => (metric, labels),
        Obs::Holds { source, labels, .. } => (source, labels),
    }
}

fn hold_key(obs: &Obs) -> (&str, &Pairs) {
    match obs {
        Obs::Holds { r#type, labels, .. } | Obs::Count { r#type, labels, .. } => (r#type, labels),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_engine::Duration;

    const EDAC: &str = include_str!("../../tests/fixtures/exporters/edac.prom");
    const MDRAID: &str = include_str!("../../tests/fixtures/exporters/mdraid.prom");
    const HWMON: &str = include_str!("../../tests/fixtures/exporters/hwmon.prom");
    const SMARTMON: &str = include_str!("../../tests/fixtures/exporters/smartmon.prom");
    const NVME: &str = include_str!("../../tests/fixtures/exporters/nvme.prom");
    const NVME_PY: &str = include_str!("../../tests/fixtures/exporters/nvme_python.prom");
    const IPMI: &str = include_str!("../../tests/fixtures/exporters/ipmi.prom");
    const REAL: &str = include_str!("../../tests/fixtures/real/node_exporter_1.5.0.prom");

    const NODE: &str = "node-0042";

    /// Scrapes `text` every 15 s from a fixed start.
    struct Scrapes {
        state: PresetState,
        at: Timestamp,
    }

    impl Scrapes {
        fn new(preset: Preset) -> Self {
            Scrapes {
                state: PresetState::new(preset),
                at: Timestamp::from_secs(1_800_000_000),
            }
        }

        fn scrape(&mut self, text: &str) -> Vec<Signal> {
            self.at = self.at.add(Duration::from_secs(15));
            let samples = Sample::parse_text(text, self.state.preset()).expect("exposition text");
            let out = self.state.signals(&samples, NODE, self.at);
            for s in &out {
                assert_eq!(
                    (s.node.as_str(), s.kind, s.ts),
                    (NODE, Kind::Hardware, Some(self.at))
                );
            }
            out
        }
    }

    /// `text` with the sample line of `series` set to `value`.
    fn set(text: &str, series: &str, value: &str) -> String {
        let mut found = false;
        let out = text
            .lines()
            .map(|l| match l.strip_prefix(series) {
                Some(rest) if rest.starts_with(' ') => {
                    found = true;
                    format!("{series} {value}")
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(found, "no sample {series} in the fixture");
        out
    }

    /// `text` without the sample lines starting with `prefix`.
    fn drop_lines(text: &str, prefix: &str) -> String {
        text.lines()
            .filter(|l| !l.starts_with(prefix))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn of<'a>(signals: &'a [Signal], r#type: &str) -> Vec<&'a Signal> {
        signals.iter().filter(|s| s.r#type == r#type).collect()
    }

    /// Type, resolved, labels.
    type Summary = (String, bool, Vec<(String, String)>);

    fn summary(signals: &[Signal]) -> Vec<Summary> {
        signals
            .iter()
            .map(|s| (s.r#type.clone(), s.resolved, s.labels.0.clone()))
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn presets_are_found_by_name_and_an_unknown_name_lists_the_known_ones() {
        for p in Preset::ALL {
            assert_eq!(Preset::named(p.name()), Some(p));
            assert_eq!(p.to_string().parse::<Preset>(), Ok(p));
        }
        assert_eq!(Preset::named("node-edac"), Some(Preset::NodeEdac));
        assert_eq!(Preset::named("smart"), None);
        let err = "smart".parse::<Preset>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown preset \"smart\" (known presets: node-edac, node-mdraid, node-hwmon, smartmon, nvme, ipmi, node-problem-detector)"
        );
        #[derive(Deserialize)]
        struct Entry {
            preset: Preset,
        }
        let entry: Entry = toml::from_str("preset = \"ipmi\"").unwrap();
        assert_eq!(entry.preset, Preset::Ipmi);
        let bad = toml::from_str::<Entry>("preset = \"ipmitool\"")
            .err()
            .unwrap();
        assert!(
            bad.to_string().contains("known presets: node-edac"),
            "{bad}"
        );
    }

    #[test]
    fn a_preset_queries_what_it_reads() {
        assert_eq!(
            Preset::NodeMdraid.promql(),
            "{__name__=~\"node_md_disks|node_md_disks_required|node_md_degraded|node_md_state\"} \
             or node_scrape_collector_success{collector=\"mdadm\"}"
        );
        assert!(!Preset::Nvme.promql().contains(" or "));
        assert!(Preset::Smartmon.reads("smartmon_device_smart_healthy"));
        assert!(!Preset::Smartmon.reads("node_load15"));
        let samples = Sample::parse_text(REAL, Preset::NodeEdac).unwrap();
        assert!(
            samples.iter().all(|s| s.metric == NODE_COLLECTOR),
            "the real 1.5.0 output has no EDAC metrics, only collector results"
        );
        let mut s = Scrapes::new(Preset::NodeEdac);
        assert!(s.scrape(REAL).is_empty());
    }

    #[test]
    fn edac_counts_each_new_error_once_at_one_level() {
        let mut s = Scrapes::new(Preset::NodeEdac);
        assert!(s.scrape(EDAC).is_empty(), "the first scrape is a baseline");
        assert!(s.scrape(EDAC).is_empty(), "no change, no event");

        // Controller 0 has csrows: they are counted, its total is not.
        let text = set(
            EDAC,
            r#"node_edac_csrow_correctable_errors_total{controller="0",csrow="1"}"#,
            "5",
        );
        let text = set(
            &text,
            r#"node_edac_correctable_errors_total{controller="0"}"#,
            "8",
        );
        // Controller 1 has only csrow "unknown": its total is counted.
        let text = set(
            &text,
            r#"node_edac_correctable_errors_total{controller="1"}"#,
            "3",
        );
        let text = set(
            &text,
            r#"node_edac_csrow_uncorrectable_errors_total{controller="0",csrow="0"}"#,
            "1",
        );
        let text = set(
            &text,
            r#"node_edac_uncorrectable_errors_total{controller="0"}"#,
            "1",
        );
        let out = s.scrape(&text);
        let ce = of(&out, "memory.ecc.correctable");
        assert_eq!(ce.len(), 4, "{:#?}", summary(&out));
        assert_eq!(ce[0].labels.0, labels(&[("controller", "1")]));
        assert_eq!(
            ce[0].message.as_deref(),
            Some("EDAC MC1: 1 new correctable error, 3 in total")
        );
        for e in &ce[1..] {
            assert_eq!(e.labels.0, labels(&[("controller", "0"), ("csrow", "1")]));
            assert_eq!(e.value, Some(5.0));
            assert_eq!(
                e.message.as_deref(),
                Some("EDAC MC0 csrow 1: 3 new correctable errors, 5 in total")
            );
            assert!(!e.resolved);
        }
        let ue = of(&out, "memory.ecc.uncorrectable");
        assert_eq!(ue.len(), 1);
        assert_eq!(
            ue[0].labels.0,
            labels(&[("controller", "0"), ("csrow", "0")])
        );
        assert_eq!(out.len(), 5);
        assert!(s.scrape(&text).is_empty());

        // A reset (reboot) is a new baseline, and counting goes on from it.
        let reset = set(
            &text,
            r#"node_edac_csrow_correctable_errors_total{controller="0",csrow="1"}"#,
            "0",
        );
        assert!(s.scrape(&reset).is_empty(), "a decrease is a reset");
        let after = set(
            &reset,
            r#"node_edac_csrow_correctable_errors_total{controller="0",csrow="1"}"#,
            "2",
        );
        assert_eq!(of(&s.scrape(&after), "memory.ecc.correctable").len(), 2);

        // A storm is capped per series and scrape; the message has the count.
        let storm = set(
            &after,
            r#"node_edac_csrow_correctable_errors_total{controller="0",csrow="1"}"#,
            "5002",
        );
        let out = s.scrape(&storm);
        assert_eq!(out.len() as u64, MAX_EVENTS_PER_SERIES);
        assert_eq!(
            out[0].message.as_deref(),
            Some(
                "EDAC MC0 csrow 1: 5000 new correctable errors, 5002 in total (only 100 signalled)"
            )
        );
    }

    #[test]
    fn edac_without_csrows_in_the_query_counts_the_csrows_it_has() {
        // A PromQL result may hold only the csrow series.
        let mut state = PresetState::new(Preset::NodeEdac);
        let at = Timestamp::from_secs(1_800_000_000);
        let series = |v: &str| {
            let metric: BTreeMap<String, String> = [
                ("__name__", EDAC_CSROW_UE),
                ("controller", "0"),
                ("csrow", "unknown"),
                ("instance", "10.0.0.7:9100"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            vec![(
                "10.0.0.7".to_string(),
                Sample::from_series(&metric, v.parse().unwrap()).unwrap(),
            )]
        };
        assert!(state.signals_per_node(&series("0"), at).is_empty());
        let out = state.signals_per_node(&series("1"), at);
        assert_eq!(
            summary(&out),
            [(
                "memory.ecc.uncorrectable".to_string(),
                false,
                labels(&[
                    ("controller", "0"),
                    ("csrow", "unknown"),
                    ("instance", "10.0.0.7:9100")
                ])
            )]
        );
        assert_eq!(out[0].node, "10.0.0.7");
    }

    #[test]
    fn mdraid_conditions_hold_every_scrape_and_resolve_once() {
        let mut s = Scrapes::new(Preset::NodeMdraid);
        let out = s.scrape(MDRAID);
        assert_eq!(
            summary(&out),
            [
                (
                    "NodeRAIDDegraded".into(),
                    false,
                    labels(&[("device", "md1")])
                ),
                (
                    "NodeRAIDDegraded".into(),
                    false,
                    labels(&[("device", "md2")])
                ),
                (
                    "NodeRAIDDiskFailure".into(),
                    false,
                    labels(&[("device", "md1"), ("state", "failed")])
                ),
                (
                    "disk.raid.inactive".into(),
                    false,
                    labels(&[("device", "md3"), ("state", "inactive")])
                ),
            ]
        );
        assert_eq!(out[1].value, Some(1.0));
        assert_eq!(
            out[1].message.as_deref(),
            Some("md2 degraded: 1 of 3 member disk(s) missing, recovering")
        );
        assert_eq!(
            out[2].message.as_deref(),
            Some("md1: 1 failed member disk(s)")
        );
        assert_eq!(
            s.scrape(MDRAID),
            out.iter()
                .map(|x| {
                    let mut x = x.clone();
                    x.ts = Some(s.at);
                    x
                })
                .collect::<Vec<_>>(),
            "every scrape re-asserts"
        );

        // md1's failed member replaced and rebuilt; md3 stopped and gone.
        let fixed = set(MDRAID, r#"node_md_disks{device="md1",state="active"}"#, "2");
        let fixed = set(&fixed, r#"node_md_disks{device="md1",state="failed"}"#, "0");
        let fixed = drop_lines(&fixed, r#"node_md_state{device="md3""#);
        let out = s.scrape(&fixed);
        assert_eq!(
            summary(&out),
            [
                (
                    "NodeRAIDDegraded".into(),
                    false,
                    labels(&[("device", "md2")])
                ),
                (
                    "NodeRAIDDegraded".into(),
                    true,
                    labels(&[("device", "md1")])
                ),
                (
                    "NodeRAIDDiskFailure".into(),
                    true,
                    labels(&[("device", "md1"), ("state", "failed")])
                ),
                (
                    "disk.raid.inactive".into(),
                    true,
                    labels(&[("device", "md3"), ("state", "inactive")])
                ),
            ]
        );
        assert!(out[1..].iter().all(|x| x.value.is_none()));
        let again = s.scrape(&fixed);
        assert_eq!(
            summary(&again),
            summary(&out[..1]),
            "resolved once, not every scrape"
        );
    }

    #[test]
    fn mdraid_prefers_the_degraded_count_of_newer_node_exporters() {
        let mut s = Scrapes::new(Preset::NodeMdraid);
        let text = "node_md_disks{device=\"md0\",state=\"active\"} 1\n\
                    node_md_disks_required{device=\"md0\"} 2\n\
                    node_md_degraded{device=\"md0\"} 0\n";
        assert!(
            s.scrape(text).is_empty(),
            "sysfs says not degraded (reshape)"
        );
        let out = s.scrape(&text.replace(
            "node_md_degraded{device=\"md0\"} 0",
            "node_md_degraded{device=\"md0\"} 1",
        ));
        assert_eq!(
            summary(&out),
            [(
                "NodeRAIDDegraded".into(),
                false,
                labels(&[("device", "md0")])
            )]
        );
        assert_eq!(
            out[0].message.as_deref(),
            Some("md0 degraded: 1 member disk(s) missing")
        );
    }

    #[test]
    fn a_failed_collector_or_a_silent_source_is_unknown_not_healthy() {
        let mut s = Scrapes::new(Preset::NodeMdraid);
        let held = s.scrape(MDRAID);
        assert_eq!(held.len(), 4);
        assert!(s.scrape("").is_empty(), "an empty scrape resolves nothing");
        let failed = "node_scrape_collector_success{collector=\"mdadm\"} 0\n\
                      node_scrape_collector_success{collector=\"cpu\"} 1\n";
        assert!(s.scrape(failed).is_empty(), "only the guard: unknown");
        let partial = format!("{failed}node_md_disks{{device=\"md9\",state=\"failed\"}} 0\n");
        assert!(
            s.scrape(&partial).is_empty(),
            "the collector failed: keep what was held"
        );
        let out = s.scrape(&MDRAID.replace(
            "node_md_disks{device=\"md1\",state=\"failed\"} 1",
            "node_md_disks{device=\"md1\",state=\"failed\"} 0",
        ));
        assert_eq!(of(&out, "NodeRAIDDiskFailure").len(), 1);
        assert!(
            of(&out, "NodeRAIDDiskFailure")[0].resolved,
            "a success again: the cleared state resolves"
        );
    }

    #[test]
    fn hwmon_alarms_and_critical_temperatures() {
        let mut s = Scrapes::new(Preset::NodeHwmon);
        let out = s.scrape(HWMON);
        assert_eq!(
            summary(&out),
            [
                (
                    "fan.failed".into(),
                    false,
                    labels(&[
                        ("chip", "platform_nct6775_656"),
                        ("chip_name", "nct6779"),
                        ("sensor", "fan2")
                    ])
                ),
                (
                    "thermal.critical".into(),
                    false,
                    labels(&[
                        ("chip", "platform_coretemp_0"),
                        ("chip_name", "coretemp"),
                        ("label", "Package id 0"),
                        ("sensor", "temp1")
                    ])
                ),
            ],
            "one signal per bad sensor; an unconnected input's alarm and intrusion are not faults"
        );
        assert_eq!(out[0].value, Some(0.0));
        assert_eq!(
            out[0].message.as_deref(),
            Some("platform_nct6775_656 fan2: fan alarm, 0 RPM")
        );
        assert_eq!(out[1].value, Some(101.0));
        assert_eq!(
            out[1].message.as_deref(),
            Some("Package id 0 (platform_coretemp_0 temp1): 101 °C, critical limit 100 °C")
        );
        // Cooled down: the alarm clears; input below crit.
        let cool = set(
            HWMON,
            r#"node_hwmon_temp_celsius{chip="platform_coretemp_0",sensor="temp1"}"#,
            "71",
        );
        let cool = set(
            &cool,
            r#"node_hwmon_temp_crit_alarm_celsius{chip="platform_coretemp_0",sensor="temp1"}"#,
            "0",
        );
        let out = s.scrape(&cool);
        assert_eq!(of(&out, "thermal.critical").len(), 1);
        assert!(of(&out, "thermal.critical")[0].resolved);
        assert_eq!(
            of(&out, "thermal.critical")[0].labels.get("label"),
            Some("Package id 0")
        );
        // Only the alarm, without a reading: still one condition.
        let alarm = set(
            &cool,
            r#"node_hwmon_temp_alarm{chip="nvme_nvme0",sensor="temp1"}"#,
            "1",
        );
        let out = s.scrape(&alarm);
        let high = of(&out, "thermal.high");
        assert_eq!(high.len(), 1);
        assert_eq!(
            high[0].message.as_deref(),
            Some("Composite (nvme_nvme0 temp1): temperature alarm, 40.85 °C")
        );
    }

    #[test]
    fn smartmon_failing_disks_and_new_bad_sectors() {
        let mut s = Scrapes::new(Preset::Smartmon);
        let out = s.scrape(SMARTMON);
        assert_eq!(out.len(), 3, "{:#?}", summary(&out));
        assert!(out
            .iter()
            .all(|x| x.r#type == "disk.smart.failing" && !x.resolved));
        let sdc = &out[2];
        assert_eq!(
            sdc.labels.0,
            labels(&[
                ("device", "/dev/sdc"),
                ("device_model", "ST4000NM0035-1V4107"),
                ("disk", "/dev/sdc"),
                ("model_family", "Seagate Exos 7E8"),
                ("serial_number", "ZC1G7H8J"),
                ("type", "sat"),
            ])
        );
        assert_eq!(
            sdc.message.as_deref(),
            Some("/dev/sdc: SMART overall-health self-assessment failed")
        );
        let sdb: Vec<_> = out[..2]
            .iter()
            .map(|x| {
                (
                    x.labels.get("smart_id"),
                    x.labels.get("serial_number"),
                    x.value,
                )
            })
            .collect();
        assert_eq!(
            sdb,
            [
                (Some("197"), Some("ZC1D4E5F"), Some(16.0)),
                (Some("198"), Some("ZC1D4E5F"), Some(16.0))
            ]
        );
        assert_eq!(
            out[0].message.as_deref(),
            Some("/dev/sdb: 16 sector(s) unreadable, pending reallocation")
        );

        let text = set(
            SMARTMON,
            r#"smartmon_reported_uncorrect_raw_value{disk="/dev/sdb",type="sat",smart_id="187"}"#,
            "5.000000e+00",
        );
        let text = set(
            &text,
            r#"smartmon_reallocated_sector_ct_raw_value{disk="/dev/sda",type="sat",smart_id="5"}"#,
            "9.000000e+00",
        );
        let out = s.scrape(&text);
        let io = of(&out, "disk.io.error");
        assert_eq!(io.len(), 3);
        assert_eq!(io[0].labels.get("device"), Some("/dev/sdb"));
        assert_eq!(
            io[0].message.as_deref(),
            Some("/dev/sdb: 3 new uncorrectable errors, 5 in total")
        );
        let moved = of(&out, "disk.sector.reallocated");
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].labels.get("serial_number"), Some("ZC1A2B3C"));
        assert_eq!(of(&out, "disk.smart.failing").len(), 3, "still failing");

        // The pending sectors were rewritten and remapped.
        let text = set(
            &text,
            r#"smartmon_current_pending_sector_raw_value{disk="/dev/sdb",type="sat",smart_id="197"}"#,
            "0.000000e+00",
        );
        let out = s.scrape(&text);
        let resolved: Vec<_> = out
            .iter()
            .filter(|x| x.resolved)
            .map(|x| (x.r#type.as_str(), x.labels.get("smart_id")))
            .collect();
        assert_eq!(resolved, [("disk.smart.failing", Some("197"))]);
    }

    #[test]
    fn smartmon_python_collector() {
        let text = "# TYPE smartmon_device_smart_healthy gauge\n\
            smartmon_device_smart_healthy{device=\"/dev/sda\",disk=\"0\"} 0\n\
            # TYPE smartmon_attr_raw_value gauge\n\
            smartmon_attr_raw_value{name=\"current_pending_sector\",device=\"/dev/sda\",disk=\"0\"} 8\n\
            smartmon_attr_raw_value{name=\"reported_uncorrect\",device=\"/dev/sda\",disk=\"0\"} 1\n\
            smartmon_attr_raw_value{name=\"power_on_hours\",device=\"/dev/sda\",disk=\"0\"} 100\n\
            # TYPE smartmon_device_info gauge\n\
            smartmon_device_info{device=\"/dev/sda\",disk=\"0\",serial_number=\"WD-1\",device_model=\"WDC\"} 1\n";
        let mut s = Scrapes::new(Preset::Smartmon);
        let out = s.scrape(text);
        assert_eq!(
            summary(&out),
            [
                (
                    "disk.smart.failing".into(),
                    false,
                    labels(&[
                        ("device", "/dev/sda"),
                        ("device_model", "WDC"),
                        ("disk", "0"),
                        ("serial_number", "WD-1")
                    ])
                ),
                (
                    "disk.smart.failing".into(),
                    false,
                    labels(&[
                        ("device", "/dev/sda"),
                        ("device_model", "WDC"),
                        ("disk", "0"),
                        ("name", "current_pending_sector"),
                        ("serial_number", "WD-1")
                    ])
                ),
            ]
        );
        let out = s.scrape(&text.replace(
            "\"reported_uncorrect\",device=\"/dev/sda\",disk=\"0\"} 1",
            "\"reported_uncorrect\",device=\"/dev/sda\",disk=\"0\"} 2",
        ));
        assert_eq!(of(&out, "disk.io.error").len(), 1);
    }

    #[test]
    fn nvme_warnings_wear_and_media_errors_from_the_debian_collector() {
        let mut s = Scrapes::new(Preset::Nvme);
        let out = s.scrape(NVME);
        assert_eq!(
            summary(&out),
            [
                (
                    "disk.smart.failing".into(),
                    false,
                    labels(&[("device", "nvme1n1")])
                ),
                (
                    "disk.wearout".into(),
                    false,
                    labels(&[("device", "nvme1n1")])
                ),
            ]
        );
        assert_eq!(
            out[0].message.as_deref(),
            Some("nvme1n1: NVMe critical warning 0x05: available spare below threshold, reliability degraded by media or internal errors")
        );
        assert_eq!(out[0].value, Some(5.0));
        assert_eq!(
            out[1].message.as_deref(),
            Some("nvme1n1: 101% of its rated endurance used")
        );
        let text = set(NVME, r#"nvme_media_errors_total{device="nvme1n1"}"#, "10");
        let text = set(
            &text,
            r#"nvme_critical_warning_total{device="nvme0n1"}"#,
            "2",
        );
        let out = s.scrape(&text);
        assert_eq!(of(&out, "disk.io.error").len(), 3);
        let hot = of(&out, "thermal.high");
        assert_eq!(hot.len(), 1);
        assert_eq!(hot[0].labels.get("device"), Some("nvme0n1"));
        assert_eq!(
            hot[0].message.as_deref(),
            Some("nvme0n1: NVMe critical warning: temperature beyond threshold")
        );
        assert!(of(&out, "disk.smart.failing")
            .iter()
            .all(|x| x.labels.get("device") == Some("nvme1n1")));
    }

    #[test]
    fn nvme_python_collector_with_device_info() {
        let mut s = Scrapes::new(Preset::Nvme);
        let out = s.scrape(NVME_PY);
        assert_eq!(
            summary(&out),
            [(
                "disk.smart.failing".into(),
                false,
                labels(&[
                    ("device", "nvme1n1"),
                    ("firmware", "GDC5602Q"),
                    ("model", "SAMSUNG MZQL23T8HCLS-00A07"),
                    ("serial", "S64HNE0T598765")
                ])
            )]
        );
        let out = s.scrape(&set(
            NVME_PY,
            r#"nvme_media_errors_total{device="nvme1n1"}"#,
            "6.0",
        ));
        let io = of(&out, "disk.io.error");
        assert_eq!(io.len(), 3);
        assert_eq!(io[0].labels.get("serial"), Some("S64HNE0T598765"));
        let out = s.scrape(&set(
            NVME_PY,
            r#"nvme_critical_warning{device="nvme1n1"}"#,
            "0.0",
        ));
        assert_eq!(
            summary(&out),
            [(
                "disk.smart.failing".into(),
                true,
                labels(&[
                    ("device", "nvme1n1"),
                    ("firmware", "GDC5602Q"),
                    ("model", "SAMSUNG MZQL23T8HCLS-00A07"),
                    ("serial", "S64HNE0T598765")
                ])
            )],
            "a media error count that went back down is a reset, not news"
        );
    }

    #[test]
    fn ipmi_sensor_states_chassis_and_sel() {
        let mut s = Scrapes::new(Preset::Ipmi);
        let out = s.scrape(IPMI);
        let got: Vec<_> = out
            .iter()
            .map(|x| (x.r#type.as_str(), x.labels.get("name"), x.labels.get("psu")))
            .collect();
        assert_eq!(
            got,
            [
                ("fan.failed", None, None),
                ("fan.failed", Some("Fan1B"), None),
                ("power.psu.failed", Some("PS2 Status"), Some("PS2 Status")),
                ("power.redundancy.lost", Some("PS Redundancy"), None),
                ("thermal.critical", Some("CPU1 Temp"), None),
                ("thermal.high", Some("CPU2 Temp"), None),
            ],
            "no SEL event on the first scrape: a baseline"
        );
        assert_eq!(
            out[0].message.as_deref(),
            Some("IPMI chassis reports a cooling/fan fault")
        );
        assert_eq!(
            out[2].message.as_deref(),
            Some("IPMI sensor PS2 Status (Power Supply) critical")
        );
        assert_eq!(out[2].labels.get("type"), Some("Power Supply"));
        assert_eq!(
            out[4].message.as_deref(),
            Some("IPMI sensor CPU1 Temp critical")
        );

        let sel = r#"ipmi_sel_events_count_by_state{state="Critical"}"#;
        let out = s.scrape(&set(IPMI, sel, "3"));
        let events = of(&out, "motherboard.sel.critical");
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].message.as_deref(),
            Some("IPMI SEL: 1 new critical entry, 3 in total")
        );
        assert_eq!(out.len(), 7, "the conditions hold as well");

        // The SEL is cleared: no critical count at all, which is zero.
        let cleared = drop_lines(IPMI, "ipmi_sel_events_count_by_state");
        assert!(of(&s.scrape(&cleared), "motherboard.sel.critical").is_empty());
        let one = format!("{cleared}\n{sel} 1\n");
        assert_eq!(
            of(&s.scrape(&one), "motherboard.sel.critical").len(),
            1,
            "the first critical entry after a clear counts"
        );

        // The BMC stops answering sensor reads: those are unknown, not nominal.
        let down = drop_lines(
            &set(IPMI, r#"ipmi_up{collector="ipmi"}"#, "0"),
            "ipmi_sensor_state",
        );
        let down = drop_lines(&down, "ipmi_temperature_state");
        let down = drop_lines(&down, "ipmi_fan_speed_state");
        let out = s.scrape(&down);
        assert!(out.iter().all(|x| !x.resolved), "{:#?}", summary(&out));
        assert_eq!(of(&out, "fan.failed").len(), 1, "the chassis still answers");
        assert!(of(&out, "power.psu.failed").is_empty());
        assert!(s.scrape(&down).iter().all(|x| !x.resolved));
        // Back and healthy: now they resolve.
        let healthy = set(
            IPMI,
            r#"ipmi_sensor_state{id="51",name="PS2 Status",type="Power Supply"}"#,
            "0",
        );
        let out = s.scrape(&healthy);
        let resolved: Vec<_> = out
            .iter()
            .filter(|x| x.resolved)
            .map(|x| x.r#type.as_str())
            .collect();
        assert_eq!(resolved, ["power.psu.failed"]);
    }

    /// node-problem-detector's own metrics: each condition whose gauge is 1
    /// is a condition series of its own (type and reason), resolved when its
    /// gauge drops to 0; counters are events per new occurrence.
    #[test]
    fn npd_conditions_resolve_per_series_and_counters_are_events() {
        let text = include_str!("../../tests/fixtures/exporters/npd.prom");
        let mut state = PresetState::new(Preset::NodeProblemDetector);
        let at = Timestamp::from_secs(1_800_000_000);
        let samples = Sample::parse_text(text, Preset::NodeProblemDetector).unwrap();
        let first = state.signals(&samples, "n1", at);
        let seen: Vec<(&str, Option<&str>, bool, bool, Kind)> = first
            .iter()
            .map(|s| {
                (
                    s.r#type.as_str(),
                    s.labels.get("type"),
                    s.resolved,
                    s.condition,
                    s.kind,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [(
                "problem_gauge",
                Some("KernelDeadlock"),
                false,
                true,
                Kind::Component
            )],
            "counters start as a baseline"
        );
        assert_eq!(first[0].labels.get("reason"), Some("DockerHung"));
        // Another OOM kill and a read-only filesystem; the deadlock clears.
        let later = text
            .replace("{reason=\"OOMKilling\"} 2", "{reason=\"OOMKilling\"} 3")
            .replace(
                ",type=\"ReadonlyFilesystem\"} 0",
                ",type=\"ReadonlyFilesystem\"} 1",
            )
            .replace(",type=\"KernelDeadlock\"} 1", ",type=\"KernelDeadlock\"} 0");
        let samples = Sample::parse_text(&later, Preset::NodeProblemDetector).unwrap();
        let next = state.signals(&samples, "n1", at);
        let seen: Vec<(&str, Option<&str>, bool)> = next
            .iter()
            .map(|s| {
                let label = s.labels.get("type").or(s.labels.get("reason"));
                (s.r#type.as_str(), label, s.resolved)
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("problem_counter", Some("OOMKilling"), false),
                ("problem_gauge", Some("ReadonlyFilesystem"), false),
                ("problem_gauge", Some("KernelDeadlock"), true),
            ]
        );
        assert!(!next[0].condition, "an event is no condition");
    }

    #[test]
    fn promql_results_are_per_node_and_a_missing_node_is_unknown() {
        let mut state = PresetState::new(Preset::Ipmi);
        let at = Timestamp::from_secs(1_800_000_000);
        let series = |node: &str, name: &str, value: f64| {
            let metric: BTreeMap<String, String> = [
                ("__name__", "ipmi_temperature_state"),
                ("id", "3"),
                ("name", name),
                ("instance", node),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            (
                node.to_string(),
                Sample::from_series(&metric, value).unwrap(),
            )
        };
        let out = state.signals_per_node(
            &[series("a", "CPU1 Temp", 2.0), series("b", "CPU1 Temp", 2.0)],
            at,
        );
        assert_eq!(
            out.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(out[0].labels.get("instance"), Some("a"));
        assert!(out[0].labels.get("__name__").is_none());
        let out = state.signals_per_node(&[series("a", "CPU1 Temp", 0.0)], at);
        assert_eq!(
            out.iter()
                .map(|s| (s.node.as_str(), s.resolved))
                .collect::<Vec<_>>(),
            [("a", true)],
            "b is absent from the result: unknown, not cooled down"
        );
        assert!(Sample::from_series(&BTreeMap::new(), 1.0).is_none());
    }
}
