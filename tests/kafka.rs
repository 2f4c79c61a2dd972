//! `remedy run` against a real Kafka-compatible broker (tansu, started per
//! test on loopback by remedy-testkit): signals consumed in a group, bad
//! messages dead-lettered, offsets committed after journaling, decisions
//! published, a kill -9 halfway, and two instances sharing the partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use remedy_testkit::{committed_offsets, end_offsets, header, read, Tansu};
use serde_json::Value;

mod common;
use common::{copy_tree, wait_for, Remedy};

const GROUP: &str = "remedy";

/// The instances' `session.timeout.ms`: how long the broker keeps a killed
/// instance in the group. 6s, not librdkafka's 45s, keeps the test short; it
/// must stay well above 3s, because tansu 0.6 counts only heartbeats as a
/// member's contact and holds a follower's JoinGroup for 3s, so a joining
/// instance has to outlast its first join rounds before it heartbeats.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Writes remedy.toml (and copies the rules) into `dir`. With `dry_run`
/// false, actions are executed (the default policy's `notify` goes to the
/// log executor), so a kill -9 meets jobs in flight.
fn configure(dir: &Path, brokers: &str, dry_run: bool) {
    // Dynamic membership and the default cooperative-sticky assignor:
    // tansu 0.6 only drops silent members on requests of dynamic ones, so a
    // killed static member (`group.instance.id`) can stay the group's leader
    // for good and no one gets its partitions.
    std::fs::write(
        dir.join("remedy.toml"),
        format!(
            "dry_run = {dry_run}\n[kafka]\nbrokers = \"{brokers}\"\ngroup = \"{GROUP}\"\nsignals = [\"node-signals\"]\n\
             dead_letter = \"node-signals.dlq\"\ndecisions = \"remedy-decisions\"\n\
             options = {{ \"session.timeout.ms\" = {} }}\n",
            SESSION_TIMEOUT.as_millis()
        ),
    )
    .unwrap();
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
        &dir.join("rules"),
    );
}

/// `remedy run` in `dir` with the config [`configure`] writes (dry-run
/// unless the test wrote its own first), consuming from `brokers`.
fn start(dir: &Path, brokers: &str) -> Remedy {
    if !dir.join("remedy.toml").exists() {
        configure(dir, brokers, true);
    }
    Remedy::start_with(dir, &[], &["--config", "remedy.toml"])
}

/// What the Kafka source reports of itself.
trait KafkaSource {
    /// Signals taken in from Kafka so far (from /metrics).
    fn consumed(&self) -> u64;
    /// The Kafka collector's assigned partitions, from /readyz.
    fn partitions(&self) -> Vec<String>;
}

impl KafkaSource for Remedy {
    fn consumed(&self) -> u64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("remedy_signals_total{source=\"kafka\"} "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    fn partitions(&self) -> Vec<String> {
        let (_, body) = self.get("/readyz");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["collectors"]["kafka"]["partitions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `count` messages keyed by node: every 100th (from the 7th) malformed,
/// alternating bad JSON and a missing `kind`; the rest a misconfiguration
/// signal of their own node, with a unique id.
fn messages(count: usize) -> (Vec<(String, String)>, usize) {
    let mut out = Vec::with_capacity(count);
    let mut bad = 0;
    for i in 0..count {
        let node = format!("node-{i:05}");
        let payload = if i % 100 == 7 {
            bad += 1;
            if bad % 2 == 0 {
                format!(r#"{{"node":"{node}","kind":"component","#)
            } else {
                format!(r#"{{"node":"{node}","type":"component.config.invalid"}}"#)
            }
        } else {
            format!(
                r#"{{"id":"s-{i}","node":"{node}","kind":"component","type":"component.config.invalid","ts":"2026-11-25T00:00:00Z","labels":{{"cluster":"c{}"}}}}"#,
                i % 10
            )
        };
        out.push((node, payload));
    }
    (out, bad)
}

/// A broker with the topics the tests use, and its bootstrap address.
fn broker() -> (Tansu, String) {
    let tansu = Tansu::start();
    tansu.create_topic("node-signals", 3);
    tansu.create_topic("node-signals.dlq", 1);
    tansu.create_topic("remedy-decisions", 3);
    let brokers = tansu.brokers();
    (tansu, brokers)
}

/// Produces `count` messages of [`messages`] one per record batch (tansu
/// 0.6 skips the rest of a batch when a fetch starts inside it, as a
/// restart's or a rebalanced member's may; Kafka does not); returns how
/// many are valid signals.
fn produce_one_per_batch(brokers: &str, count: usize) -> usize {
    let (msgs, bad) = messages(count);
    runtime().block_on(remedy_testkit::produce_one_per_batch(
        brokers,
        "node-signals",
        &msgs,
    ));
    msgs.len() - bad
}

fn all_committed(brokers: &str) -> bool {
    committed_offsets(brokers, GROUP, "node-signals") == end_offsets(brokers, "node-signals")
}

/// Waits until the group has committed the end of every partition; on
/// timeout says where it stands and what the instances logged.
fn wait_committed(brokers: &str, instances: &[&Remedy]) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !all_committed(brokers) {
        if Instant::now() > deadline {
            let logs: Vec<String> = instances
                .iter()
                .map(|r| {
                    let log = r.logged();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    format!("consumed {}; log tail:\n{}", r.consumed(), tail.join("\n"))
                })
                .collect();
            panic!(
                "offsets not all committed: committed {:?}, end {:?}\n{}",
                committed_offsets(brokers, GROUP, "node-signals"),
                end_offsets(brokers, "node-signals"),
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `remedy`'s decisions once there is an action decision for each of the
/// `valid` signals, checking that each opened its fault, once.
fn every_fault_acted_on(remedy: &Remedy, valid: usize, what: &str) -> Vec<Value> {
    let mut decisions = Vec::new();
    wait_for(what, Duration::from_secs(60), || {
        decisions = remedy.decisions();
        decisions.iter().filter(|d| d["event"] == "action").count() >= valid
    });
    let opened = opened_once(&decisions);
    assert_eq!(opened.len(), valid, "{}", remedy.logged());
    decisions
}

/// The node of every `fault_opened`, checking none is there twice.
fn opened_once(decisions: &[Value]) -> BTreeSet<String> {
    let mut seen = BTreeMap::<String, usize>::new();
    for d in decisions.iter().filter(|d| d["event"] == "fault_opened") {
        *seen
            .entry(d["node"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "faults opened twice: {twice:?}");
    seen.into_keys().collect()
}

#[test]
fn fifty_thousand_signals_are_decided_once_and_malformed_ones_dead_lettered() {
    let (_tansu, brokers) = broker();
    let rt = runtime();
    let (msgs, bad) = messages(50_000);
    let valid = msgs.len() - bad;
    rt.block_on(remedy_testkit::produce(&brokers, "node-signals", &msgs));
    let dir = tempfile::tempdir().unwrap();
    let remedy = start(dir.path(), &brokers);
    wait_committed(&brokers, &[&remedy]);
    let decisions = every_fault_acted_on(&remedy, valid, "every notify decided");
    let notified = decisions
        .iter()
        .filter(|d| d["event"] == "action" && d["outcome"] == "dry_run")
        .count();
    assert_eq!(notified, valid, "one notify per fault");
    assert_eq!(remedy.consumed(), valid as u64);

    let dead = rt.block_on(read(
        &brokers,
        "node-signals.dlq",
        bad,
        Duration::from_secs(30),
    ));
    assert_eq!(dead.len(), bad);
    for m in &dead {
        let reason = header(m, "remedy-reason").expect("a reason header");
        assert!(
            reason.contains("kind") || reason.contains("line 1") || reason.contains("EOF"),
            "the reason names the problem: {reason}"
        );
        assert_eq!(header(m, "remedy-topic").as_deref(), Some("node-signals"));
        assert!(header(m, "remedy-partition").is_some());
        assert!(header(m, "remedy-offset").is_some());
    }

    // Every decision is on the decisions topic, keyed by node.
    let published = rt.block_on(read(
        &brokers,
        "remedy-decisions",
        decisions.len(),
        Duration::from_secs(60),
    ));
    assert_eq!(published.len(), decisions.len());
    let on_topic: BTreeSet<(String, String)> = published
        .iter()
        .map(|m| {
            use rdkafka::Message;
            let d: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let key = String::from_utf8_lossy(m.key().unwrap()).into_owned();
            assert_eq!(d["node"], key.as_str());
            (d["event"].as_str().unwrap().to_string(), key)
        })
        .collect();
    assert_eq!(on_topic.len(), 2 * valid);
}

#[test]
fn batches_without_a_malformed_message_are_committed_too() {
    let (_tansu, brokers) = broker();
    let rt = runtime();
    let (msgs, bad) = messages(7);
    assert_eq!(bad, 0, "only valid signals");
    rt.block_on(remedy_testkit::produce(&brokers, "node-signals", &msgs));
    let dir = tempfile::tempdir().unwrap();
    let remedy = start(dir.path(), &brokers);
    wait_committed(&brokers, &[&remedy]);
    assert_eq!(opened_once(&remedy.decisions()).len(), msgs.len());
}

#[test]
fn after_kill_9_halfway_nothing_is_lost_or_doubled() {
    let (_tansu, brokers) = broker();
    let valid = produce_one_per_batch(&brokers, 20_000);
    let dir = tempfile::tempdir().unwrap();
    configure(dir.path(), &brokers, false);
    let mut first = start(dir.path(), &brokers);
    wait_for("a third consumed", Duration::from_secs(60), || {
        first.consumed() > 6_000
    });
    first.kill_9();
    let killed = Instant::now();
    assert!(!all_committed(&brokers), "killed halfway, not at the end");

    // The restart joins once the broker can have dropped the killed member
    // (its session has timed out), as it would after a real crash and
    // reschedule. It must not join earlier on tansu 0.6: a member that joins
    // while the killed leader is still registered is told to wait for that
    // leader's assignment; when tansu then drops the leader between that
    // member's JoinGroup and SyncGroup, it takes the member's empty SyncGroup
    // as the leader's, hands out no partitions at all, and never rebalances
    // again. Kafka would make the member join again instead.
    let expired = killed + SESSION_TIMEOUT + Duration::from_millis(500);
    std::thread::sleep(expired.saturating_duration_since(Instant::now()));
    let second = start(dir.path(), &brokers);
    wait_committed(&brokers, &[&first, &second]);
    // Offsets are committed once decisions are journaled; the notify jobs
    // they started report back a moment later.
    let decisions = every_fault_acted_on(&second, valid, "every notify executed");
    let mut actions = BTreeMap::<String, usize>::new();
    for d in decisions.iter().filter(|d| d["event"] == "action") {
        assert_eq!(d["outcome"], "executed", "{d}");
        *actions
            .entry(d["node"].as_str().unwrap().into())
            .or_default() += 1;
    }
    assert_eq!(actions.len(), valid);
    assert!(
        actions.values().all(|n| *n == 1),
        "no action repeated across the crash"
    );
}

#[test]
fn two_instances_in_one_group_split_the_partitions_and_open_nothing_twice() {
    let (_tansu, brokers) = broker();
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    // Nothing is killed here: a long session keeps a member that misses
    // heartbeats on a loaded machine in the group. A rebalance once the
    // partitions are split would hand decided but uncommitted signals to
    // the other instance, whose own journal does not know them (sharing
    // one journal is what [ha] is for).
    for dir in [a_dir.path(), b_dir.path()] {
        configure(dir, &brokers, true);
        let config = std::fs::read_to_string(dir.join("remedy.toml")).unwrap();
        let session = format!("\"session.timeout.ms\" = {}", SESSION_TIMEOUT.as_millis());
        assert!(config.contains(&session), "{config}");
        let config = config.replace(&session, "\"session.timeout.ms\" = 30000");
        std::fs::write(dir.join("remedy.toml"), config).unwrap();
    }
    let a = start(a_dir.path(), &brokers);
    let b = start(b_dir.path(), &brokers);
    wait_for(
        "the group to settle: 3 partitions between the two",
        Duration::from_secs(60),
        || {
            let (pa, pb) = (a.partitions(), b.partitions());
            !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 3
        },
    );
    let valid = produce_one_per_batch(&brokers, 20_000);
    wait_committed(&brokers, &[&a, &b]);
    let in_a = opened_once(&a.decisions());
    let in_b = opened_once(&b.decisions());
    assert!(!in_a.is_empty() && !in_b.is_empty(), "both took a share");
    assert!(
        in_a.is_disjoint(&in_b),
        "no node's fault opened in both: {:?}",
        in_a.intersection(&in_b).take(5).collect::<Vec<_>>()
    );
    assert_eq!(in_a.len() + in_b.len(), valid);
}

/// A message dated further ahead than `[limits] max_skew` is dead-lettered
/// with the reason, as a malformed one is; the valid messages around it are
/// decided and the batch is committed.
#[test]
fn a_signal_dated_ahead_of_the_clock_is_dead_lettered_naming_ts() {
    let (_tansu, brokers) = broker();
    let rt = runtime();
    let ahead = (chrono::Utc::now() + chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let msgs = vec![
        (
            "n1".to_string(),
            r#"{"node":"n1","kind":"component","type":"component.config.invalid","labels":{"cluster":"c1"}}"#.to_string(),
        ),
        (
            "n2".to_string(),
            format!(r#"{{"node":"n2","kind":"component","type":"component.config.invalid","ts":"{ahead}"}}"#),
        ),
        (
            "n3".to_string(),
            r#"{"node":"n3","kind":"component","type":"component.config.invalid","labels":{"cluster":"c1"}}"#.to_string(),
        ),
    ];
    rt.block_on(remedy_testkit::produce(&brokers, "node-signals", &msgs));
    let dir = tempfile::tempdir().unwrap();
    let remedy = start(dir.path(), &brokers);
    wait_committed(&brokers, &[&remedy]);
    let dead = rt.block_on(read(
        &brokers,
        "node-signals.dlq",
        1,
        Duration::from_secs(30),
    ));
    assert_eq!(dead.len(), 1);
    let reason = header(&dead[0], "remedy-reason").expect("a reason header");
    assert!(
        reason.starts_with("field \"ts\": ") && reason.contains("ahead of remedy's clock"),
        "{reason}"
    );
    let opened = opened_once(&remedy.decisions());
    assert_eq!(
        opened.into_iter().collect::<Vec<_>>(),
        ["n1", "n3"],
        "the valid ones around it are decided"
    );
}

/// Contract 9: a rack power history produced over 3 partitions (keyed by
/// node) before remedy starts, consumed as a backlog, reaches the rules in
/// event-time order: the same faults, on the same nodes, as `remedy
/// replay` of the history.
#[test]
fn a_backlog_over_three_partitions_gives_the_faults_replay_gives() {
    let (_tansu, brokers) = broker();
    let mut history: Vec<(String, String)> = Vec::new();
    let signal = |node: usize, r#type: &str, secs: usize| {
        format!(
            r#"{{"node":"node-{node:03}","kind":"hardware","type":"{type}","ts":"2026-11-24T10:{:02}:{:02}Z","labels":{{"cluster":"c1","rack":"r{}"}}}}"#,
            secs / 60,
            secs % 60,
            node % 4
        )
    };
    // Heartbeats of 120 nodes every 10 s for 5 minutes; power lost on
    // seven nodes of rack r1, 20 s apart: the rack event opens from the
    // third of them on, in event-time order.
    let lost: Vec<usize> = vec![101, 5, 73, 29, 117, 45, 89];
    for secs in (0..300).step_by(10) {
        for node in 0..120 {
            history.push((
                format!("node-{node:03}"),
                signal(node, "node.heartbeat", secs),
            ));
        }
        for (i, node) in lost.iter().enumerate() {
            if secs == 60 + i * 20 {
                history.push((
                    format!("node-{node:03}"),
                    signal(*node, "power.lost", secs + 5),
                ));
            }
        }
    }
    runtime().block_on(remedy_testkit::produce_one_per_batch(
        &brokers,
        "node-signals",
        &history,
    ));
    let dir = tempfile::tempdir().unwrap();
    configure(dir.path(), &brokers, true);
    let file = dir.path().join("history.jsonl");
    let lines: Vec<&str> = history.iter().map(|(_, p)| p.as_str()).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let replayed = std::process::Command::new(env!("CARGO_BIN_EXE_remedy"))
        .current_dir(dir.path())
        .args([
            "replay",
            "--quiet",
            "--config",
            "remedy.toml",
            "history.jsonl",
        ])
        .output()
        .expect("replay runs");
    assert!(replayed.status.success());
    let faults = |decisions: &mut dyn Iterator<Item = Value>| -> BTreeSet<(String, String)> {
        decisions
            .filter(|d| d["event"] == "fault_opened")
            .map(|d| {
                (
                    d["node"].as_str().unwrap().to_string(),
                    d["fault"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let want = faults(
        &mut String::from_utf8(replayed.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()),
    );
    let events: Vec<&(String, String)> =
        want.iter().filter(|f| f.1 == "rack_power_event").collect();
    assert_eq!(events.len(), 5, "replay: the 3rd to 7th node: {want:?}");
    let remedy = start(dir.path(), &brokers);
    wait_committed(&brokers, &[&remedy]);
    let got = faults(&mut remedy.decisions().into_iter());
    assert_eq!(
        got, want,
        "run of the backlog against replay of the history"
    );
}

/// Contract 12 with the Kafka source: two instances on one PostgreSQL
/// journal and one broker. Only the leader consumes; kill -9 it a third of
/// the way through 20,000 signals (cordons, 40 per cluster at most): the
/// standby leads within lease + 5 s, consumes the rest from the committed
/// offsets, and across the failover no fault opens twice, no cordon is
/// executed twice, and no cluster ever has more than 40 nodes cordoned.
/// The lease (7 s) outlasts the broker's session timeout (6 s): the new
/// leader joins the group once the killed one has left it (see
/// `after_kill_9_halfway_nothing_is_lost_or_doubled` for why tansu 0.6
/// needs that).
#[test]
fn a_standby_takes_over_the_kafka_source_and_nothing_is_decided_or_executed_twice() {
    let (_tansu, brokers) = broker();
    let pg = remedy_testkit::Postgres::start();
    let url = pg.database("remedy");
    let valid = produce_one_per_batch(&brokers, 20_000);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for d in &dirs {
        configure(d.path(), &brokers, false);
        let mut config = std::fs::read_to_string(d.path().join("remedy.toml")).unwrap();
        config.push_str(&format!(
            "[journal]\nurl = \"{url}\"\n[ha]\nlease = \"7s\"\n[guards]\nmax_unhealthy = 40\n\
             [faults.component_misconfigured]\nactions = [\"cordon\"]\n"
        ));
        std::fs::write(d.path().join("remedy.toml"), config).unwrap();
    }
    let env = [("REMEDY_JOURNAL", url.as_str())];
    let args = ["--config", "remedy.toml"];
    let role = |r: &Remedy| {
        let v: Value = serde_json::from_str(&r.get("/readyz").1).unwrap_or(Value::Null);
        v["role"].as_str().unwrap_or("").to_string()
    };
    let mut a = Remedy::start_with(dirs[0].path(), &env, &args);
    wait_for("the first to lead", Duration::from_secs(20), || {
        role(&a) == "leader"
    });
    let b = Remedy::start_with(dirs[1].path(), &env, &args);
    assert_eq!(role(&b), "standby");
    wait_for("a third consumed", Duration::from_secs(60), || {
        a.consumed() > 6_000
    });
    assert_eq!(b.consumed(), 0, "a standby consumes nothing");
    a.kill_9();
    let killed = Instant::now();
    wait_for("the standby to lead", Duration::from_secs(7 + 5), || {
        role(&b) == "leader"
    });
    let failover = killed.elapsed();
    wait_committed(&brokers, &[&b]);
    let decisions = every_fault_acted_on(&b, valid, "every fault decided");
    let mut executed = BTreeMap::<String, usize>::new();
    for d in &decisions {
        if d["event"] == "action" && d["action"] == "cordon" && d["outcome"] == "executed" {
            *executed
                .entry(d["node"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert!(
        executed.values().all(|n| *n == 1),
        "no cordon executed twice"
    );
    // node-NNNNN is in cluster c(NNNNN % 10).
    let mut per_cluster = BTreeMap::<u32, usize>::new();
    for node in executed.keys() {
        let i: u32 = node.trim_start_matches("node-").parse().unwrap();
        *per_cluster.entry(i % 10).or_default() += 1;
    }
    assert!(
        per_cluster.values().all(|n| *n <= 40),
        "no cluster past its budget: {per_cluster:?}"
    );
    assert!(executed.len() >= 40, "cordons went: {}", executed.len());
    eprintln!("failover with the Kafka source: {failover:?}; cordons executed: {per_cluster:?}");
}
