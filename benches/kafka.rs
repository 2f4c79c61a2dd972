//! End-to-end Kafka throughput of `remedy run` against its transport limit.
//!
//! One tansu broker (started on loopback by remedy-testkit), one 3-partition
//! topic holding 1M generated signals (the healthy-fleet mix of
//! `remedy::synth::Background`, 100k nodes, keyed by node). In the same run:
//!
//! - the baseline: a bare rdkafka consumer (the same bundled librdkafka) in a
//!   group of its own that only counts the topic's messages, timed from its
//!   first message to the last;
//! - remedy: the release `remedy run` binary consuming the topic in its own
//!   group (decode, rules, lifecycle, guards, SQLite journal, offsets
//!   committed after journaling), timed from its first consumed signal to
//!   the moment its committed offsets reach the end of every partition.
//!
//! Prints both rates and their ratio (target: remedy >= 70% of the bare
//! consumer). `cargo bench --bench kafka`; REMEDY_BENCH_SIGNALS changes the
//! size. Needs tansu (tests/run.sh installs it).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use remedy::synth::{Background, Fleet};
use remedy_engine::Timestamp;
use remedy_testkit::{end_offsets, Tansu};

const TOPIC: &str = "bench-signals";

fn signals() -> usize {
    std::env::var("REMEDY_BENCH_SIGNALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The generated lines, each keyed by its node.
fn messages(count: usize) -> Vec<(String, String)> {
    let start = Timestamp::parse_rfc3339("2026-11-25T00:00:00Z").unwrap();
    let mut fleet = Background::new(Fleet::new(100_000), 42, start, 500);
    (0..count)
        .map(|_| {
            let line = fleet.next_line();
            let node = line
                .split_once(r#""node":""#)
                .and_then(|(_, rest)| rest.split_once('"'))
                .map_or_else(String::new, |(n, _)| n.to_string());
            (node, line)
        })
        .collect()
}

/// Seconds from the first message to the last, counting only.
async fn bare(brokers: &str, count: usize, group: &str) -> f64 {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut seen = 0usize;
    let mut first = None;
    while seen < count {
        match tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await {
            Ok(Ok(_)) => {
                first.get_or_insert_with(Instant::now);
                seen += 1;
            }
            Ok(Err(e)) => panic!("bare consumer: {e}"),
            Err(_) => panic!("bare consumer: nothing for 60s after {seen} messages"),
        }
    }
    first.expect("a first message").elapsed().as_secs_f64()
}

fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn consumed(port: u16) -> u64 {
    http_get(port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("remedy_signals_total{source=\"kafka\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Seconds from remedy's first consumed signal to its last commit.
fn remedy(brokers: &str, dir: &Path, group: &str, end: &[i64]) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("remedy.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup = \"{group}\"\nsignals = [\"{TOPIC}\"]\ndead_letter = \"{TOPIC}.dlq\"\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut child = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["run", "--config"])
        .arg(&config)
        .env("REMEDY_RULES", &rules)
        .env("REMEDY_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "REMEDY_JOURNAL",
            format!("sqlite://{}", dir.join("bench.db").display()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("remedy.log")).unwrap())
        .spawn()
        .expect("remedy starts");
    // One client asks for the group's committed offsets (no group join, no
    // metadata round trip per poll).
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a client for committed offsets");
    let mut partitions = TopicPartitionList::new();
    for p in 0..end.len() as i32 {
        partitions.add_partition(TOPIC, p);
    }
    let committed = || -> Vec<i64> {
        watcher
            .committed_offsets(partitions.clone(), Duration::from_secs(5))
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .map(|e| match e.offset() {
                        Offset::Offset(o) => o,
                        _ => -1,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "remedy did not finish in 10 minutes"
        );
        if first.is_none() && consumed(port) > 0 {
            first = Some(Instant::now());
        }
        if first.is_some() && committed() == end {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = first.unwrap().elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    secs
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too:
    // then only check that it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let count = signals();
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    tansu.create_topic(TOPIC, 3);
    tansu.create_topic(&format!("{TOPIC}.dlq"), 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let msgs = messages(count);
    let started = Instant::now();
    rt.block_on(remedy_testkit::produce(&brokers, TOPIC, &msgs));
    eprintln!(
        "produced {count} signals in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    drop(msgs);
    let end = end_offsets(&brokers, TOPIC);

    let dir = tempfile::tempdir().unwrap();
    // Alternate the two, twice, and keep each one's best run.
    let mut bare_best = f64::MAX;
    let mut remedy_best = f64::MAX;
    for round in 0..2 {
        let b = rt.block_on(bare(&brokers, count, &format!("bare-{round}")));
        let r = remedy(
            &brokers,
            &dir.path().join(format!("run{round}")),
            &format!("remedy-{round}"),
            &end,
        );
        eprintln!(
            "round {round}: bare consumer {:.0} signals/s, remedy {:.0} signals/s",
            count as f64 / b,
            count as f64 / r
        );
        bare_best = bare_best.min(b);
        remedy_best = remedy_best.min(r);
    }
    let (bare_rate, remedy_rate) = (count as f64 / bare_best, count as f64 / remedy_best);
    println!("kafka end to end, {count} signals, 3 partitions, one tansu broker on loopback:");
    println!("  bare rdkafka consumer (count only): {bare_rate:>10.0} signals/s");
    println!("  remedy run (decide, journal, commit): {remedy_rate:>8.0} signals/s");
    println!(
        "  ratio: {:.1}% of the transport limit (target >= 70%)",
        100.0 * remedy_rate / bare_rate
    );
}
