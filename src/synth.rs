//! Synthetic fleet signals, deterministic per seed: the background of a
//! healthy fleet (heartbeats, pressure readings, the odd correctable error or
//! component restart) with incidents laid on top. Used for the example file a
//! newcomer replays and for the replay benchmark.
//!
//! Output is JSON lines written directly (no intermediate structs), so the
//! generator is never the bottleneck of what it feeds.

use std::fmt::Write as _;

use remedy_engine::{Duration, Timestamp};

/// SplitMix64: tiny, fast and stable across versions, so a seed always
/// gives the same stream.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Shape of the simulated fleet.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// Number of nodes.
    pub nodes: u64,
    /// Nodes per rack.
    pub rack_size: u64,
    /// Racks per cluster.
    pub racks_per_cluster: u64,
    /// Clusters per IDC.
    pub clusters_per_idc: u64,
}

impl Fleet {
    /// A fleet of `nodes` nodes in racks of 40, clusters of 50 racks (2,000 nodes), 5 clusters per IDC.
    pub fn new(nodes: u64) -> Self {
        Fleet {
            nodes,
            rack_size: 40,
            racks_per_cluster: 50,
            clusters_per_idc: 5,
        }
    }

    /// The node's name.
    pub fn name(&self, node: u64) -> String {
        let mut out = String::new();
        self.write_name(&mut out, node);
        out
    }

    /// Appends the node's name.
    pub fn write_name(&self, out: &mut String, node: u64) {
        let _ = write!(out, "node-{node:06}");
    }

    /// The node's labels as a JSON object (rack, cluster, idc follow from its
    /// index), with one more label when given.
    pub fn labels(&self, node: u64, more: Option<(&str, &str)>) -> String {
        let mut out = String::new();
        self.write_labels(&mut out, node, more);
        out
    }

    /// Appends the node's labels as a JSON object.
    pub fn write_labels(&self, out: &mut String, node: u64, more: Option<(&str, &str)>) {
        let rack = node / self.rack_size;
        let cluster = rack / self.racks_per_cluster;
        let idc = cluster / self.clusters_per_idc;
        let _ = write!(
            out,
            r#"{{"rack":"r{rack:04}","cluster":"c{cluster:03}","idc":"idc{idc}""#
        );
        if let Some((k, v)) = more {
            let _ = write!(out, r#","{k}":"{v}""#);
        }
        out.push('}');
    }

    /// The rack of a node, as its label value.
    pub fn rack_of(&self, node: u64) -> String {
        format!("r{:04}", node / self.rack_size)
    }

    /// Nodes per cluster.
    pub fn cluster_size(&self) -> u64 {
        self.rack_size * self.racks_per_cluster
    }
}

/// What a generated signal says beyond node, kind, type and time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extra<'a> {
    /// One label beyond the failure domains.
    pub label: Option<(&'a str, &'a str)>,
    /// More JSON members, each starting with a comma (`,"value":3`).
    pub fields: &'a str,
}

/// One line of signal JSON.
pub fn line(
    fleet: &Fleet,
    node: u64,
    kind: &str,
    r#type: &str,
    ts: Timestamp,
    extra: Extra<'_>,
) -> String {
    let mut out = String::with_capacity(200);
    write_line(&mut out, fleet, node, kind, r#type, ts, extra);
    out
}

/// Appends one line of signal JSON (no newline) to `out`.
pub fn write_line(
    out: &mut String,
    fleet: &Fleet,
    node: u64,
    kind: &str,
    r#type: &str,
    ts: Timestamp,
    extra: Extra<'_>,
) {
    out.push_str(r#"{"node":""#);
    fleet.write_name(out, node);
    let _ = write!(
        out,
        r#"","kind":"{kind}","type":"{type}","ts":"{ts}","labels":"#,
        r#type = r#type
    );
    fleet.write_labels(out, node, extra.label);
    out.push_str(extra.fields);
    out.push('}');
}

/// A correctable ECC error, as EDAC reports one.
fn write_correctable(out: &mut String, fleet: &Fleet, node: u64, ts: Timestamp) {
    let extra = fields(r#","message":"EDAC MC0: 1 CE memory read error""#);
    write_line(
        out,
        fleet,
        node,
        "hardware",
        "memory.ecc.correctable",
        ts,
        extra,
    );
}

/// A component signal of a type no shipped rule handles.
fn write_unhandled(out: &mut String, fleet: &Fleet, node: u64, ts: Timestamp, rng: &mut Rng) {
    let t = ["net.link.flap", "ntp.drift", "kernel.softlockup"][rng.below(3) as usize];
    write_line(out, fleet, node, "component", t, ts, Extra::default());
}

/// Extra JSON members only.
pub fn fields(fields: &str) -> Extra<'_> {
    Extra {
        label: None,
        fields,
    }
}

/// The background of a healthy fleet: one signal per call, time advancing
/// so that `per_second` signals arrive each second on average.
///
/// The mix, by share of signals: heartbeats 50%; memory, disk and load
/// readings 12%, 12% and 8% (values mostly healthy, a few past the shipped
/// thresholds); correctable ECC errors 6%; component crashes 4%; disk I/O
/// errors 3%; types no shipped rule handles 3.5%; recoveries (resolved
/// pressure) 1%; and rare hard failures (UE, PSU, SMART, MCE, bad config) 0.5%.
pub struct Background {
    fleet: Fleet,
    rng: Rng,
    start: Timestamp,
    per_second: u64,
    emitted: u64,
}

impl Background {
    /// A background stream starting at `start`.
    pub fn new(fleet: Fleet, seed: u64, start: Timestamp, per_second: u64) -> Self {
        Background {
            fleet,
            rng: Rng::new(seed),
            start,
            per_second: per_second.max(1),
            emitted: 0,
        }
    }

    /// The fleet this stream describes.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Event time of the next signal.
    pub fn now(&self) -> Timestamp {
        self.start
            .add(Duration((self.emitted * 1000 / self.per_second) as i64))
    }

    /// The next signal as one JSON line.
    pub fn next_line(&mut self) -> String {
        let mut out = String::with_capacity(200);
        self.next_into(&mut out);
        out
    }

    /// Appends the next signal of a realistically healthy fleet: the same
    /// kinds of signal as [`Background::next_into`] but faults as rare as in
    /// a well-run fleet (a pressure reading past its threshold one in 20,000,
    /// a hard failure one signal in a million, no crash loops), so that a
    /// scenario's own faults stand out.
    pub fn next_healthy_into(&mut self, out: &mut String) {
        let ts = self.now();
        self.emitted += 1;
        let node = self.rng.below(self.fleet.nodes);
        let roll = self.rng.below(1_000_000);
        let f = &self.fleet;
        let mut reading = |rng: &mut Rng, r#type: &str, (base, spread): (f64, f64), bad: f64| {
            let v = if rng.below(20_000) == 0 {
                bad
            } else {
                base + rng.unit() * spread
            };
            let v = format!(r#","value":{v:.1}"#);
            write_line(out, f, node, "resource", r#type, ts, fields(&v));
        };
        match roll {
            0..=599_999 => write_line(
                out,
                f,
                node,
                "component",
                "node.heartbeat",
                ts,
                Extra::default(),
            ),
            600_000..=729_999 => reading(&mut self.rng, "memory.pressure", (0.0, 15.0), 35.0),
            730_000..=859_999 => reading(&mut self.rng, "disk.pressure", (20.0, 65.0), 95.5),
            860_000..=959_999 => reading(&mut self.rng, "load.high", (0.1, 1.8), 3.4),
            960_000..=969_999 => write_correctable(out, f, node, ts),
            970_000..=999_998 => write_unhandled(out, f, node, ts, &mut self.rng),
            _ => {
                let t = [
                    "memory.ecc.uncorrectable",
                    "disk.smart.failing",
                    "power.psu.failed",
                ][self.rng.below(3) as usize];
                write_line(out, f, node, "hardware", t, ts, Extra::default());
            }
        }
    }

    /// Appends the next signal as one JSON line (no newline) to `out`.
    pub fn next_into(&mut self, out: &mut String) {
        let ts = self.now();
        self.emitted += 1;
        let node = self.rng.below(self.fleet.nodes);
        let roll = self.rng.below(1000);
        let f = &self.fleet;
        // One reading in `one_in` is past the threshold: (base, spread) each.
        let reading = |rng: &mut Rng, one_in: u64, bad: (f64, f64), good: (f64, f64)| {
            let (base, spread) = if rng.below(one_in) == 0 { bad } else { good };
            format!(r#","value":{:.1}"#, base + rng.unit() * spread)
        };
        let none = Extra::default();
        match roll {
            0..=499 => write_line(out, f, node, "component", "node.heartbeat", ts, none),
            500..=619 => {
                let v = reading(&mut self.rng, 50, (21.0, 30.0), (0.0, 15.0));
                write_line(out, f, node, "resource", "memory.pressure", ts, fields(&v))
            }
            620..=739 => {
                let v = reading(&mut self.rng, 100, (90.5, 9.0), (20.0, 65.0));
                write_line(out, f, node, "resource", "disk.pressure", ts, fields(&v))
            }
            740..=819 => {
                let v = reading(&mut self.rng, 50, (2.1, 3.0), (0.1, 1.8));
                write_line(out, f, node, "resource", "load.high", ts, fields(&v))
            }
            820..=879 => write_correctable(out, f, node, ts),
            880..=919 => {
                let component =
                    ["kubelet", "containerd", "docker", "pouch"][self.rng.below(4) as usize];
                let extra = Extra {
                    label: Some(("component", component)),
                    fields: "",
                };
                write_line(out, f, node, "component", "component.crash", ts, extra)
            }
            920..=949 => write_line(
                out,
                f,
                node,
                "hardware",
                "disk.io.error",
                ts,
                fields(r#","message":"blk_update_request: I/O error, dev sdb""#),
            ),
            950..=984 => write_unhandled(out, f, node, ts, &mut self.rng),
            985..=994 => {
                let t =
                    ["memory.pressure", "disk.pressure", "load.high"][self.rng.below(3) as usize];
                write_line(
                    out,
                    f,
                    node,
                    "resource",
                    t,
                    ts,
                    fields(r#","resolved":true"#),
                )
            }
            _ => {
                let (kind, t) = [
                    ("hardware", "memory.ecc.uncorrectable"),
                    ("hardware", "power.psu.failed"),
                    ("hardware", "disk.smart.failing"),
                    ("hardware", "motherboard.mce"),
                    ("component", "component.config.invalid"),
                ][self.rng.below(5) as usize];
                write_line(out, f, node, kind, t, ts, none)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_engine::Signal;

    #[test]
    fn the_same_seed_gives_the_same_stream_and_every_line_is_a_valid_signal() {
        let start = Timestamp::parse_rfc3339("2026-11-24T00:00:00Z").unwrap();
        let mut a = Background::new(Fleet::new(1000), 7, start, 100);
        let mut b = Background::new(Fleet::new(1000), 7, start, 100);
        let mut types = std::collections::BTreeSet::new();
        for _ in 0..5000 {
            let line = a.next_line();
            assert_eq!(line, b.next_line());
            let s = Signal::from_json(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(s.labels.get("rack").is_some());
            if s.r#type == "component.crash" {
                assert!(s.labels.get("component").is_some(), "{line}");
            }
            types.insert(s.r#type);
        }
        assert!(types.len() >= 15, "{types:?}");
        assert_eq!(a.now(), start.add(Duration::from_secs(50)));
    }
}

/// The example a newcomer replays (`examples/signals.jsonl`): about 50
/// minutes of a 200-node fleet, with incidents laid over the background —
/// an uncorrectable ECC error, a storm of correctable ones, four nodes of one
/// rack losing power, a kubelet crash loop, a RAID alert, a filesystem filling
/// up and recovering — and two malformed lines, to show how they are reported.
pub fn example_day() -> Vec<String> {
    let fleet = Fleet::new(200);
    let start = Timestamp::parse_rfc3339("2026-11-24T08:00:00Z").expect("valid start");
    let at = |minutes: f64| start.add(Duration((minutes * 60_000.0) as i64));
    let mut lines: Vec<(Timestamp, String)> = Vec::new();
    let mut background = Background::new(fleet.clone(), 20261124, start, 1);
    for _ in 0..3000 {
        let ts = background.now();
        lines.push((ts, background.next_line()));
    }
    let mut add = |ts: Timestamp, node: u64, kind: &str, r#type: &str, extra: Extra<'_>| {
        lines.push((ts, line(&fleet, node, kind, r#type, ts, extra)));
    };
    let msg = |m: &'static str| fields(m);
    add(
        at(5.0),
        17,
        "hardware",
        "memory.ecc.uncorrectable",
        msg(r#","message":"EDAC MC1: 1 UE memory read error on DIMM B2""#),
    );
    for i in 0..12 {
        add(
            at(10.0 + f64::from(i) * 0.8),
            42,
            "hardware",
            "memory.ecc.correctable",
            msg(r#","message":"EDAC MC0: 1 CE memory read error""#),
        );
    }
    for (i, node) in (80..84).enumerate() {
        add(
            at(30.0 + i as f64 * 0.5),
            node,
            "hardware",
            "power.lost",
            msg(r#","message":"BMC: AC lost""#),
        );
    }
    for i in 0..3 {
        let crash = Extra {
            label: Some(("component", "kubelet")),
            fields: r#","message":"kubelet.service: Main process exited, code=exited, status=1/FAILURE""#,
        };
        add(
            at(40.0 + f64::from(i) * 2.0),
            150,
            "component",
            "component.crash",
            crash,
        );
    }
    add(
        at(41.0),
        99,
        "hardware",
        "NodeRAIDDiskFailure",
        msg(r#","message":"RAID array md0 degraded""#),
    );
    add(
        at(45.0),
        7,
        "resource",
        "disk.pressure",
        msg(r#","value":95.2"#),
    );
    add(
        at(48.0),
        7,
        "resource",
        "disk.pressure",
        msg(r#","value":97.0"#),
    );
    add(
        at(49.5),
        7,
        "resource",
        "disk.pressure",
        msg(r#","value":61.3,"resolved":true"#),
    );
    lines.sort_by_key(|(ts, _)| *ts);
    let mut out: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
    // Two producers with bugs: what a rejected line looks like.
    out.insert(1200, r#"{"node":"node-000031","kind":"hardware","type":"disk.io.error","ts":"2026-11-24 08:20:00"}"#.to_string());
    out.insert(
        2400,
        r#"{"kind":"resource","type":"load.high","value":3.1}"#.to_string(),
    );
    out
}

/// An alert storm: 10,000 known nodes (five clusters of 2,000) each send a
/// heartbeat in the first 10 minutes; then 1,000 nodes of cluster c002
/// report `memory.ecc.uncorrectable` within 60 s (a bad firmware push, a
/// mis-set EDAC threshold); then the fleet is quiet but for heartbeats for
/// `quiet_minutes`, after which the first 200 nodes of the storm report the
/// condition cleared, and 10 more quiet minutes follow (so held-back actions
/// can be seen to resume).
pub fn storm(quiet_minutes: u64) -> Vec<String> {
    let fleet = Fleet::new(10_000);
    let start = Timestamp::parse_rfc3339("2026-11-24T02:00:00Z").expect("valid start");
    let ms = |ms: u64| start.add(Duration(ms as i64));
    let mut lines: Vec<(Timestamp, String)> = Vec::with_capacity(14_000);
    let mut rng = Rng::new(0x5707);
    let none = Extra::default();
    for node in 0..fleet.nodes {
        let ts = ms(node * 60); // 10,000 heartbeats over 10 minutes
        lines.push((
            ts,
            line(&fleet, node, "component", "node.heartbeat", ts, none),
        ));
    }
    let storm_start = 10 * 60_000;
    let first = 2 * 2_000; // cluster c002
    let mut failed: Vec<(u64, u64)> = (0..1_000)
        .map(|k| (storm_start + rng.below(60_000), first + k * 2))
        .collect();
    failed.sort_unstable();
    let ue = |ts: Timestamp, node: u64, extra: &str| {
        line(
            &fleet,
            node,
            "hardware",
            "memory.ecc.uncorrectable",
            ts,
            fields(extra),
        )
    };
    for &(at, node) in &failed {
        let ts = ms(at);
        lines.push((
            ts,
            ue(ts, node, r#","message":"EDAC MC0: 1 UE memory read error""#),
        ));
    }
    let mut quiet = |from: u64, minutes: u64, lines: &mut Vec<(Timestamp, String)>| {
        for second in 0..minutes * 60 {
            let ts = ms(from + second * 1_000);
            let node = rng.below(fleet.nodes);
            lines.push((
                ts,
                line(&fleet, node, "component", "node.heartbeat", ts, none),
            ));
        }
    };
    let quiet_start = storm_start + 60_000;
    quiet(quiet_start, quiet_minutes, &mut lines);
    let recovery = quiet_start + quiet_minutes * 60_000;
    for (k, &(_, node)) in failed.iter().take(200).enumerate() {
        let ts = ms(recovery + k as u64 * 100);
        lines.push((ts, ue(ts, node, r#","resolved":true"#)));
    }
    quiet(recovery + 20_000, 10, &mut lines);
    lines.sort_by_key(|(ts, _)| *ts);
    lines.into_iter().map(|(_, l)| l).collect()
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn the_committed_example_is_what_the_generator_writes() {
        let committed = include_str!("../examples/signals.jsonl");
        let generated = super::example_day().join("\n") + "\n";
        assert!(committed == generated, "examples/signals.jsonl is stale: run `cargo run --example gen_signals > examples/signals.jsonl`");
    }
}
