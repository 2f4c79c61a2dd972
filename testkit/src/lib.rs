//! Test helpers for remedy: a private PostgreSQL cluster per test
//! ([`Postgres`]), and for the Kafka code a real Kafka-compatible broker
//! ([tansu](https://github.com/tansu-io/tansu), in-memory storage) started
//! per test on a free loopback port, plus producing to and reading from its
//! topics and looking up committed and end offsets.
//!
//! Every helper panics with a message that says what failed: these are for
//! tests, where a panic is the report. Every wait has a deadline, so a test
//! using them always stops by itself.
//!
//! The broker binary is looked up in `$TANSU`, then on `PATH`, then in
//! `$HOME/.cache/remedy/tools/bin/tansu`; install it with
//! `cargo install tansu --features dynostore --root ~/.cache/remedy/tools`.

#![warn(missing_docs)]

pub mod postgres;
pub use postgres::Postgres;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

/// How long the broker may take to answer its first metadata request.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long one blocking request of a helper may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A tansu broker with in-memory storage on a free loopback port, killed
/// when dropped. Its output goes to a log file, shown when it fails to start.
#[derive(Debug)]
pub struct Tansu {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts a broker and waits until it answers a metadata request.
    ///
    /// Panics when the binary is missing (naming the paths tried and how to
    /// install it) or when the broker does not come up within 30s (with the
    /// end of its log).
    pub fn start() -> Tansu {
        let binary = binary();
        let dir = tempfile::tempdir().expect("a temporary directory for the tansu log");
        // A port picked as free can be taken before tansu binds it: try a few.
        let mut last = String::new();
        for attempt in 0..3 {
            let port = free_port();
            let log = dir.path().join(format!("tansu-{attempt}.log"));
            let out = File::create(&log).expect("the tansu log file");
            let err = out.try_clone().expect("the tansu log file");
            let url = format!("tcp://127.0.0.1:{port}");
            let child = Command::new(&binary)
                .args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/"])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut child = KillOnDrop(Some(child));
            match wait_ready(child.0.as_mut().expect("the child"), port) {
                Ok(()) => {
                    return Tansu {
                        child: child.0.take().expect("the child"),
                        port,
                        log,
                        _dir: dir,
                    }
                }
                Err(why) => last = format!("{why}\n--- {} ---\n{}", log.display(), tail(&log)),
            }
        }
        panic!("tansu ({}) did not start: {last}", binary.display());
    }

    /// The `bootstrap.servers` of this broker, e.g. `127.0.0.1:40123`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the broker's output goes (for a test that wants to show it).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Creates a topic with this many partitions and waits until its
    /// metadata shows them all.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let binary = binary();
        let output = Command::new(&binary)
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--partitions", &partitions.to_string(), name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} topic create: {e}", binary.display()));
        assert!(
            output.status.success(),
            "tansu topic create {name} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let consumer: BaseConsumer = reader_config(&self.brokers())
            .create()
            .expect("a metadata client");
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let seen = partition_count(&consumer, name);
            if seen == Ok(partitions) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {name}: expected {partitions} partitions in the metadata, got {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A starting broker, killed if it does not come up.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the broker on `port` answers a metadata request, or says why not.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let consumer: BaseConsumer = reader_config(&format!("127.0.0.1:{port}"))
        .create()
        .map_err(|e| format!("cannot create a client: {e}"))?;
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("tansu exited with {status}"));
        }
        match consumer.fetch_metadata(None, Duration::from_millis(500)) {
            Ok(m) if !m.brokers().is_empty() => return Ok(()),
            Ok(_) => {}
            Err(e) if started.elapsed() > START_DEADLINE => {
                return Err(format!("no metadata after {START_DEADLINE:?}: {e}"))
            }
            Err(_) => {}
        }
        if started.elapsed() > START_DEADLINE {
            return Err(format!(
                "no broker in the metadata after {START_DEADLINE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tansu binary: `$TANSU`, then `PATH`, then the project's tool cache.
fn binary() -> PathBuf {
    let mut tried = Vec::new();
    if let Some(path) = std::env::var_os("TANSU") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return path;
        }
        tried.push(format!("$TANSU={}", path.display()));
    }
    if let Some(dirs) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&dirs) {
            let path = dir.join("tansu");
            if path.is_file() {
                return path;
            }
        }
        tried.push("tansu on PATH".to_string());
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = Path::new(&home).join(".cache/remedy/tools/bin/tansu");
        if path.is_file() {
            return path;
        }
        tried.push(path.display().to_string());
    }
    panic!(
        "the Kafka tests need the tansu broker, not found (tried {}); install it with \
         `cargo install tansu --features dynostore --root ~/.cache/remedy/tools` \
         or point $TANSU at the binary",
        tried.join(", ")
    );
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("a bound address").port()
}

/// The last 40 lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A client that reads by assignment: a group id (librdkafka's assign needs
/// one) but no subscription, so it never joins the group, and no commits.
fn reader_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "remedy-testkit-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("log_level", "3");
    config
}

/// Assigns `consumer` every partition of `topic` from its beginning (no
/// consumer group); answers how many partitions there are.
fn assign_from_beginning(consumer: &impl Consumer, topic: &str) -> i32 {
    let partitions =
        partition_count(consumer, topic).unwrap_or_else(|e| panic!("cannot read {topic}: {e}"));
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("a partition");
    }
    consumer.assign(&tpl).expect("assign");
    partitions
}

/// How many partitions the metadata shows for a topic.
fn partition_count(consumer: &impl Consumer, topic: &str) -> Result<i32, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| format!("no topic {topic} in the metadata"))?;
    if let Some(e) = t.error() {
        return Err(format!("{e:?}"));
    }
    Ok(t.partitions().len() as i32)
}

/// Produces every `(key, payload)` to `topic`, concurrently, and waits for
/// every delivery report; returns each message's `(partition, offset)` in
/// input order. Panics on the first failed delivery.
pub async fn produce<K, P>(brokers: &str, topic: &str, messages: &[(K, P)]) -> Vec<(i32, i64)>
where
    K: AsRef<[u8]>,
    P: AsRef<[u8]>,
{
    produce_batched(brokers, topic, messages, true).await
}

/// Like [`produce`], with every message in a record batch of its own.
///
/// For tests where a consumer fetches from an offset inside what would
/// otherwise be one batch (resuming after a pause, starting at a committed
/// offset): tansu 0.6 answers a fetch only with batches that start at or
/// after the fetch offset, so the rest of a batch fetched from its middle is
/// skipped (Kafka returns the whole batch and the client skips the head).
pub async fn produce_one_per_batch<K, P>(
    brokers: &str,
    topic: &str,
    messages: &[(K, P)],
) -> Vec<(i32, i64)>
where
    K: AsRef<[u8]>,
    P: AsRef<[u8]>,
{
    produce_batched(brokers, topic, messages, false).await
}

async fn produce_batched<K, P>(
    brokers: &str,
    topic: &str,
    messages: &[(K, P)],
    batched: bool,
) -> Vec<(i32, i64)>
where
    K: AsRef<[u8]>,
    P: AsRef<[u8]>,
{
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "30000")
        .set("log_level", "3");
    if !batched {
        config.set("batch.num.messages", "1").set("linger.ms", "0");
    }
    let producer: FutureProducer = config.create().expect("a producer");
    let mut pending = Vec::with_capacity(messages.len());
    for (key, payload) in messages {
        let mut record = FutureRecord::to(topic)
            .key(key.as_ref())
            .payload(payload.as_ref());
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((e, back)) => {
                    assert!(Instant::now() < deadline, "cannot enqueue to {topic}: {e}");
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    let mut positions = Vec::with_capacity(pending.len());
    for delivery in pending {
        match delivery.await {
            Ok(Ok(d)) => positions.push((d.partition, d.offset)),
            Ok(Err((e, _))) => panic!("delivery to {topic} failed: {e}"),
            Err(_) => panic!("the producer for {topic} went away"),
        }
    }
    positions
}

/// Produces one message with headers and waits for its delivery report.
pub async fn produce_with_headers(
    brokers: &str,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: OwnedHeaders,
) -> (i32, i64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("log_level", "3")
        .create()
        .expect("a producer");
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .headers(headers);
    match producer.send(record, REQUEST_TIMEOUT).await {
        Ok(d) => (d.partition, d.offset),
        Err((e, _)) => panic!("delivery to {topic} failed: {e}"),
    }
}

/// Reads `count` messages of `topic` from the beginning of every partition
/// (no consumer group), within `within`; panics naming how many arrived if
/// fewer did. Messages of one partition are in order; partitions interleave.
pub async fn read(brokers: &str, topic: &str, count: usize, within: Duration) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = reader_config(brokers).create().expect("a reader");
    assign_from_beginning(&consumer, topic);
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => panic!(
                "{topic}: {} of {count} messages within {within:?}",
                out.len()
            ),
        }
    }
    out
}

/// Per partition (index = partition), the offset `group` committed on
/// `topic`; -1 where it committed nothing.
pub fn committed_offsets(brokers: &str, group: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = reader_config(brokers)
        .set("group.id", group)
        .create()
        .expect("a client");
    let partitions =
        partition_count(&consumer, topic).unwrap_or_else(|e| panic!("cannot look up {topic}: {e}"));
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("committed offsets of {group} on {topic}: {e}"));
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(n)) => n,
                _ => -1,
            },
        )
        .collect()
}

/// Per partition (index = partition), the end of `topic`: one past its
/// last message.
///
/// Found by reading every partition up to librdkafka's end-of-partition
/// event (which follows the high watermark of fetch responses), not with a
/// ListOffsets request: tansu 0.6 answers ListOffsets LATEST with the first
/// offset of the last record batch + 1, short of the end whenever that batch
/// holds more than one message.
pub fn end_offsets(brokers: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = reader_config(brokers)
        .set("enable.partition.eof", "true")
        .create()
        .expect("a client");
    let partitions = assign_from_beginning(&consumer, topic);
    let mut ends = vec![0i64; partitions as usize];
    let mut done = vec![false; partitions as usize];
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.contains(&false) {
        assert!(
            Instant::now() < deadline,
            "{topic}: no end of partition within 30s (reached: {done:?})"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                ends[p] = ends[p].max(m.offset() + 1);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => done[p as usize] = true,
            Some(Err(e)) => panic!("reading {topic} to its end: {e}"),
        }
    }
    ends
}

/// The value of a header as text, if the message has it.
pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// RFC 7386: what a JSON merge patch does to `target` (what the Kubernetes
/// API-server stand-ins make of the executor's node patches).
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}
