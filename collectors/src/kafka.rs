//! `[kafka]`: signals from Kafka topics, read in a consumer group, at least
//! once (contract sections 2 and 5).
//!
//! The source is pulled, never pushed: the service asks for a [`Batch`] with
//! [`Source::next_batch`] when it can take one, and tells the source with
//! [`Source::commit`] once the batch's decisions are journaled. Nothing is
//! buffered here beyond the batch being assembled; the only queue is
//! librdkafka's own prefetch, bounded by `queued.max.messages.kbytes`
//! (64 MiB unless `options` says otherwise). When the decider's queue is
//! full the service can also [`Source::pause`] fetching altogether, and
//! [`Source::resume`] it later without losing or repeating a message.
//!
//! Guarantees:
//! - Every message is accounted for. A message that is a valid signal goes
//!   into the batch; one that is not (bad JSON, a missing or wrong field,
//!   not UTF-8, no payload) is published to the `dead_letter` topic with its
//!   key and payload and the headers `remedy-reason` (the decode error, which
//!   names the field), `remedy-topic`, `remedy-partition` and
//!   `remedy-offset`. A batch is handed out only once every dead letter in
//!   it is confirmed by the broker; a dead letter that cannot be delivered
//!   is retried, never dropped (so after a retry it can appear twice; the
//!   headers say which message it is).
//! - Offsets are committed only for what the service has journaled, and
//!   only by the consumer that still owns the partition. Offset handling:
//!   `enable.auto.offset.store = false` with librdkafka's auto-commit on.
//!   [`Source::commit`] stores the batch's offsets and asks for an
//!   asynchronous commit, so it never blocks the runtime; librdkafka also
//!   commits what was stored when it gives partitions up at a rebalance and
//!   on close, so the next owner starts right after the last journaled
//!   message. Nothing that was read but not journaled is ever committed.
//! - A partition reassigned between reading a batch and committing it is not
//!   committed by this consumer (every assignment carries a generation, and
//!   the batch remembers the generation it read under): its messages are
//!   redelivered to the new owner, and the journal's signal-id dedup makes
//!   the repeat harmless.
//! - Partitions move between the instances of a group with the
//!   `cooperative-sticky` assignor, so a rebalance revokes only the
//!   partitions that move and the others keep committing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
    StreamConsumer,
};
use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use remedy_engine::{DecodeError, Signal, Timestamp};
use remedy_kafka::{describe, Redacted};
use serde::Deserialize;

use crate::intake::{Intake, IntakeError, Report, Reporter, SourceStatus};

/// How long a call of [`Source::next_batch`] keeps retrying dead letters the
/// broker refuses before it gives up for now (they are kept for the next call).
const DEAD_LETTER_PATIENCE: Duration = Duration::from_secs(30);

/// librdkafka settings remedy sets itself, from other keys of `[kafka]` or
/// because its guarantees depend on them.
const RESERVED: [(&str, &str); 3] = [
    ("bootstrap.servers", "set `brokers` instead"),
    ("group.id", "set `group` instead"),
    (
        "enable.auto.offset.store",
        "remedy stores offsets itself, after the decisions are journaled",
    ),
];

/// `[kafka]` in the config.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The consumer group shared by every remedy instance. Default `remedy`.
    #[serde(default = "default_group")]
    pub group: String,
    /// Topics of signals, one JSON signal per message. Default: none (then
    /// no [`Source`] is built; `decisions` may still be published).
    #[serde(default)]
    pub signals: Vec<String>,
    /// Where messages that are not valid signals go. Required with `signals`.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Topic every decision is published to, key = node (see
    /// `remedy_actions::publish`). Default: decisions are not published.
    #[serde(default)]
    pub decisions: Option<String>,
    /// librdkafka settings passed through as written, e.g.
    /// `{ "security.protocol" = "SASL_SSL", "sasl.mechanism" = "PLAIN" }`;
    /// they override remedy's defaults. Values may be strings, numbers or
    /// booleans. Values of secret settings never appear in logs or errors.
    #[serde(default, deserialize_with = "remedy_kafka::options")]
    pub options: BTreeMap<String, String>,
    /// How long a signal waits for the other partitions to reach its event
    /// time before it goes to the rules anyway (contract 9). Default "5s".
    #[serde(default = "default_max_lateness")]
    pub max_lateness: remedy_engine::Duration,
}

fn default_max_lateness() -> remedy_engine::Duration {
    remedy_engine::Duration::from_secs(5)
}

fn default_group() -> String {
    "remedy".to_string()
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("signals", &self.signals)
            .field("dead_letter", &self.dead_letter)
            .field("decisions", &self.decisions)
            .field("options", &Redacted(&self.options))
            .finish()
    }
}

/// What went wrong with the Kafka source. Every message names the key,
/// topic or group concerned.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A `[kafka]` key is missing or not usable.
    #[error("[kafka] {key}: {why}")]
    Config {
        /// The key, e.g. `dead_letter` or `options."group.id"`.
        key: String,
        /// What is wrong with it.
        why: String,
    },
    /// librdkafka refused to build a client (usually a bad `options`
    /// entry; the value of a secret setting is not shown).
    #[error("[kafka] cannot create the {what}: {why}")]
    Client {
        /// `consumer` or `dead-letter producer`.
        what: &'static str,
        /// librdkafka's reason.
        why: String,
    },
    /// The subscription to the signal topics failed.
    #[error("cannot subscribe group {group} to {topics}: {source}")]
    Subscribe {
        /// The consumer group.
        group: String,
        /// The signal topics, comma-separated.
        topics: String,
        /// librdkafka's reason.
        source: Box<RdKafkaError>,
    },
    /// Reading the signal topics failed (nothing was read in this call).
    #[error("consuming {topics} in group {group}: {source}")]
    Consume {
        /// The consumer group.
        group: String,
        /// The signal topics, comma-separated.
        topics: String,
        /// librdkafka's reason.
        source: Box<RdKafkaError>,
    },
    /// Malformed messages could not be published to the dead-letter topic
    /// yet; they and the batch they belong to are kept and retried by the
    /// next call of [`Source::next_batch`].
    #[error(
        "dead-letter topic {topic}: {count} malformed message(s) not delivered yet \
         (first from {first}): {why}; kept and retried"
    )]
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
        /// How many are waiting.
        count: usize,
        /// `topic/partition@offset` of the first one.
        first: String,
        /// The broker's last answer.
        why: String,
    },
    /// Storing or committing offsets failed.
    #[error("committing offsets of group {group}: {source}")]
    Commit {
        /// The consumer group.
        group: String,
        /// librdkafka's reason.
        source: Box<RdKafkaError>,
    },
    /// Pausing or resuming the assigned partitions failed.
    #[error("cannot {what} the partitions of group {group}: {source}")]
    Pause {
        /// `pause` or `resume`.
        what: &'static str,
        /// The consumer group.
        group: String,
        /// librdkafka's reason.
        source: Box<RdKafkaError>,
    },
}

/// A valid signal and where it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// The decoded signal.
    pub signal: Signal,
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The message's Kafka timestamp, if it has one (a candidate for the
    /// ingestion time of a signal without `ts`).
    pub timestamp: Option<Timestamp>,
}

/// A message that was not a valid signal; it is in the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Where it was read.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Why it is not a signal (the `remedy-reason` header).
    pub reason: String,
}

/// What one [`Source::next_batch`] read: the signals to decide, the
/// malformed messages already dead-lettered, and the offsets to commit once
/// the signals' decisions are journaled.
#[derive(Debug, Default)]
pub struct Batch {
    /// Valid signals, in the order read (per partition: offset order).
    pub signals: Vec<Received>,
    /// Malformed messages, delivered to the dead-letter topic.
    pub dead_lettered: Vec<Rejected>,
    marks: Vec<Mark>,
    /// Partitions (by number) read to their end during the batch.
    pub ends: Vec<i32>,
}

/// The next offset to commit of one partition, and the assignment
/// generation it was read under.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mark {
    topic: String,
    partition: i32,
    generation: u64,
    next: i64,
}

impl Batch {
    /// Messages read: signals and dead letters.
    pub fn len(&self) -> usize {
        self.signals.len() + self.dead_lettered.len()
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.signals.is_empty() && self.dead_lettered.is_empty()
    }

    /// Per partition read, `(topic, partition, next offset)`: what
    /// [`Source::commit`] commits if the partition is still this consumer's.
    pub fn offsets(&self) -> Vec<(String, i32, i64)> {
        let mut out: Vec<_> = self
            .marks
            .iter()
            .map(|m| (m.topic.clone(), m.partition, m.next))
            .collect();
        out.sort();
        out
    }

    /// Per partition read: (topic, partition, generation, last offset read).
    pub fn read(&self) -> Vec<(String, i32, u64, i64)> {
        self.marks
            .iter()
            .map(|m| (m.topic.clone(), m.partition, m.generation, m.next - 1))
            .collect()
    }

    /// Notes that `offset` of a partition was read under `generation`.
    fn mark(&mut self, topic: &str, partition: i32, offset: i64, generation: u64) {
        let next = offset + 1;
        match self
            .marks
            .iter_mut()
            .find(|m| m.partition == partition && m.topic == topic)
        {
            // A later assignment replaces what was read under an earlier one.
            Some(m) if m.generation != generation => {
                m.generation = generation;
                m.next = next;
            }
            Some(m) => m.next = m.next.max(next),
            None => self.marks.push(Mark {
                topic: topic.to_string(),
                partition,
                generation,
                next,
            }),
        }
    }
}

/// An assigned partition in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Messages between the last committed offset and the end of the
    /// partition, from librdkafka's statistics (refreshed every
    /// `statistics.interval.ms`, default 5s); `None` until known.
    pub lag: Option<i64>,
}

/// The source's health, for `/readyz` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// A broker connection is up (from librdkafka's statistics and the last
    /// messages read; false after "all brokers down").
    pub connected: bool,
    /// When a broker last proved reachable (messages read, or statistics
    /// showing a connection up).
    pub last_success: Option<Timestamp>,
    /// Errors so far: client errors, failed reads, commits, dead letters.
    pub errors: u64,
    /// The last of them.
    pub last_error: Option<String>,
    /// Rebalances seen (assignments and revocations).
    pub generation: u64,
    /// The partitions assigned to this instance, sorted.
    pub partitions: Vec<PartitionStatus>,
    /// Fetching is paused by [`Source::pause`].
    pub paused: bool,
    /// Messages dead-lettered so far.
    pub dead_lettered: u64,
}

/// Assigned partitions, each with the generation it was assigned in.
#[derive(Debug, Default)]
struct Assignment {
    generation: u64,
    partitions: HashMap<(String, i32), u64>,
}

/// Health counters, updated by librdkafka's callbacks and the source.
#[derive(Debug, Default)]
struct Health {
    connected: bool,
    last_success: Option<Timestamp>,
    errors: u64,
    last_error: Option<String>,
    lag: HashMap<(String, i32), i64>,
}

/// librdkafka's callbacks: rebalances, commit results, errors, statistics.
#[derive(Debug, Default)]
struct Context {
    assignment: Mutex<Assignment>,
    health: Mutex<Health>,
    paused: AtomicBool,
    dead_lettered: AtomicU64,
}

/// Locks a mutex; a panic elsewhere does not make the data unusable here.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp(ms)
}

impl Context {
    fn failed(&self, why: String) {
        let mut h = lock(&self.health);
        h.errors += 1;
        h.last_error = Some(why);
    }

    fn reachable(&self) {
        let mut h = lock(&self.health);
        h.connected = true;
        h.last_success = Some(now());
    }

    /// The generation a partition was assigned in, or 0 if it is not assigned.
    fn generation_of(&self, topic: &str, partition: i32) -> u64 {
        let a = lock(&self.assignment);
        a.partitions
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(0)
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        remedy_kafka::log(level, facility, message);
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "kafka source: {error}: {reason}");
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            lock(&self.health).connected = false;
        }
        self.failed(format!("{error}: {reason}"));
    }

    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(stats) = serde_json::from_slice::<Stats>(statistics) else {
            return;
        };
        let up = stats.brokers.values().any(|b| b.state == "UP");
        let mut lag = HashMap::new();
        for (topic, t) in stats.topics {
            for p in t.partitions.into_values() {
                if p.partition >= 0 && p.consumer_lag >= 0 {
                    lag.insert((topic.clone(), p.partition), p.consumer_lag);
                }
            }
        }
        let mut h = lock(&self.health);
        h.connected = up;
        if up {
            h.last_success = Some(now());
        }
        h.lag = lag;
    }
}

/// The part of librdkafka's statistics JSON the status uses.
#[derive(Deserialize)]
struct Stats {
    #[serde(default)]
    brokers: HashMap<String, BrokerStats>,
    #[serde(default)]
    topics: HashMap<String, TopicStats>,
}

#[derive(Deserialize)]
struct BrokerStats {
    state: String,
}

#[derive(Deserialize)]
struct TopicStats {
    #[serde(default)]
    partitions: HashMap<String, PartitionStats>,
}

#[derive(Deserialize)]
struct PartitionStats {
    partition: i32,
    consumer_lag: i64,
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut a = lock(&self.assignment);
            a.generation += 1;
            for e in tpl.elements() {
                a.partitions.remove(&(e.topic().to_string(), e.partition()));
            }
            tracing::info!(
                revoked = tpl.count(),
                generation = a.generation,
                "kafka source: partitions revoked"
            );
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                {
                    let mut a = lock(&self.assignment);
                    a.generation += 1;
                    if !matches!(
                        consumer.rebalance_protocol(),
                        RebalanceProtocol::Cooperative
                    ) {
                        // An eager assignment replaces the whole set.
                        a.partitions.clear();
                    }
                    let generation = a.generation;
                    for e in tpl.elements() {
                        a.partitions
                            .insert((e.topic().to_string(), e.partition()), generation);
                    }
                    tracing::info!(
                        assigned = tpl.count(),
                        generation,
                        "kafka source: partitions assigned"
                    );
                }
                if self.paused.load(Ordering::SeqCst) {
                    // Partitions that arrive while paused stay paused.
                    if let Err(e) = consumer.pause(tpl) {
                        self.failed(format!("pausing newly assigned partitions: {e}"));
                    }
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => self.failed(format!("rebalance: {e}")),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {}
            // Nothing new to commit (an auto-commit after ours).
            Err(RdKafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!("kafka source: commit failed: {e}");
                self.failed(format!("commit failed: {e}"));
            }
        }
    }
}

/// A malformed message on its way to the dead-letter topic.
struct DeadLetter {
    rejected: Rejected,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    /// The delivery report to wait for; `None` when it is not enqueued.
    delivery: Option<DeliveryFuture>,
    /// The broker's or librdkafka's last refusal.
    last_error: String,
    /// The broker confirmed it.
    delivered: bool,
}

/// The Kafka source: a consumer in `group` on the `signals` topics, and a
/// producer for the dead-letter topic.
pub struct Source {
    consumer: StreamConsumer<Context>,
    producer: FutureProducer,
    group: String,
    topics: String,
    dead_letter: String,
    /// Read but not handed out yet: the current call's batch, or the batch
    /// of a call that failed (it is handed out by the next one).
    carry: Batch,
    /// Dead letters whose delivery is not confirmed yet.
    unconfirmed: Vec<DeadLetter>,
    /// What a signal may carry; past it, it is dead-lettered.
    limits: crate::intake::Limits,
    /// `[kafka] max_lateness`.
    max_lateness: remedy_engine::Duration,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("dead_letter", &self.dead_letter)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Builds the consumer (subscribed to `signals`) and the dead-letter
    /// producer; call it inside a tokio runtime. No network round trip
    /// happens here: connecting is librdkafka's background work, visible in
    /// [`Source::status`].
    pub fn new(config: &Config) -> Result<Source, KafkaError> {
        let bad = |key: &str, why: &str| KafkaError::Config {
            key: key.to_string(),
            why: why.to_string(),
        };
        if config.brokers.trim().is_empty() {
            return Err(bad(
                "brokers",
                "give the bootstrap brokers, e.g. \"127.0.0.1:9092\"",
            ));
        }
        if config.group.trim().is_empty() {
            return Err(bad("group", "must not be empty"));
        }
        if config.signals.is_empty() || config.signals.iter().any(|t| t.trim().is_empty()) {
            return Err(bad(
                "signals",
                "give the topics to read, e.g. [\"node-signals\"]",
            ));
        }
        let dead_letter = match &config.dead_letter {
            Some(t) if !t.trim().is_empty() => t.clone(),
            _ => return Err(bad(
                "dead_letter",
                "give the topic for messages that are not valid signals, e.g. \"node-signals.dlq\"",
            )),
        };
        if config.signals.contains(&dead_letter) {
            return Err(bad(
                "dead_letter",
                "must not be one of the `signals` topics",
            ));
        }
        for (key, why) in RESERVED {
            if config.options.contains_key(key) {
                return Err(bad(&format!("options.{key:?}"), why));
            }
        }

        let mut consumer_config = ClientConfig::new();
        consumer_config
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("client.id", "remedy")
            .set("enable.auto.commit", "true")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("queued.max.messages.kbytes", "65536")
            .set("statistics.interval.ms", "5000")
            // A partition read to its end holds no other back (event-time order).
            .set("enable.partition.eof", "true");
        for (k, v) in &config.options {
            consumer_config.set(k, v);
        }
        consumer_config.set("enable.auto.offset.store", "false");
        let client = |what, e: RdKafkaError| KafkaError::Client {
            what,
            why: describe(&e),
        };
        let consumer: StreamConsumer<Context> = consumer_config
            .create_with_context(Context::default())
            .map_err(|e| client("consumer", e))?;

        let mut producer_config = ClientConfig::new();
        producer_config
            .set("bootstrap.servers", &config.brokers)
            .set("client.id", "remedy-dead-letter")
            .set("message.timeout.ms", "10000");
        for (k, v) in &config.options {
            producer_config.set(k, v);
        }
        let producer: FutureProducer = producer_config
            .create()
            .map_err(|e| client("dead-letter producer", e))?;

        let topics: Vec<&str> = config.signals.iter().map(String::as_str).collect();
        let topic_list = config.signals.join(",");
        consumer
            .subscribe(&topics)
            .map_err(|e| KafkaError::Subscribe {
                group: config.group.clone(),
                topics: topic_list.clone(),
                source: Box::new(e),
            })?;
        Ok(Source {
            consumer,
            producer,
            group: config.group.clone(),
            topics: topic_list,
            dead_letter,
            carry: Batch::default(),
            unconfirmed: Vec::new(),
            limits: crate::intake::Limits::default(),
            max_lateness: config.max_lateness,
        })
    }

    /// Dead-letters signals past `limits` (`[limits]`: a `ts` too far ahead,
    /// too many or too long labels...).
    pub fn set_limits(&mut self, limits: crate::intake::Limits) {
        self.limits = limits;
    }

    /// Reads up to `max` messages, waiting at most `wait` for them, and
    /// returns them as a batch: valid signals to decide, malformed ones
    /// already in the dead-letter topic. An empty batch means nothing
    /// arrived within `wait`.
    ///
    /// Call it at least every `max.poll.interval.ms` (default 5 minutes),
    /// also while paused (it then returns empty batches): rebalances and
    /// statistics are served inside this call, and a consumer that stops
    /// calling it leaves the group.
    ///
    /// The call can outlast `wait` while dead letters are confirmed, by up
    /// to 30s when the dead-letter topic refuses them; then it fails with
    /// [`KafkaError::DeadLetter`]. An error never loses anything: what was
    /// read is kept and handed out by the next call, which first retries the
    /// dead letters. A read error ends the batch early; with nothing read it
    /// is returned as [`KafkaError::Consume`], otherwise it is counted in
    /// [`Source::status`] and the batch is returned.
    pub async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, KafkaError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut read = 0usize;
        while self.carry.len() < max.max(1) {
            let result = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(result) => result,
            };
            match result {
                // Read to the end of a partition: not an error, a fact.
                Err(RdKafkaError::PartitionEOF(partition)) => {
                    if !self.carry.ends.contains(&partition) {
                        self.carry.ends.push(partition);
                    }
                }
                Ok(message) => {
                    read += 1;
                    let mut sink = Sink {
                        producer: &self.producer,
                        dead_letter: &self.dead_letter,
                        carry: &mut self.carry,
                        unconfirmed: &mut self.unconfirmed,
                        limits: self.limits,
                    };
                    sink.take(self.consumer.context(), &message);
                }
                Err(source) => {
                    let context = self.consumer.context();
                    context.failed(format!("consuming {}: {source}", self.topics));
                    if self.carry.is_empty() && self.unconfirmed.is_empty() {
                        return Err(KafkaError::Consume {
                            group: self.group.clone(),
                            topics: self.topics.clone(),
                            source: Box::new(source),
                        });
                    }
                    tracing::warn!(topics = %self.topics, "kafka source: {source}");
                    break;
                }
            }
        }
        if read > 0 {
            self.consumer.context().reachable();
        }
        self.confirm_dead_letters().await?;
        Ok(std::mem::take(&mut self.carry))
    }

    /// Waits for every dead letter's delivery report, resending refused
    /// ones with backoff, for up to [`DEAD_LETTER_PATIENCE`].
    async fn confirm_dead_letters(&mut self) -> Result<(), KafkaError> {
        let give_up = tokio::time::Instant::now() + DEAD_LETTER_PATIENCE;
        let mut delays = remedy_kafka::delivery::RESEND.delays();
        loop {
            let mut delivered = 0u64;
            for letter in &mut self.unconfirmed {
                let Some(delivery) = letter.delivery.take() else {
                    continue;
                };
                let outcome = match tokio::time::timeout_at(give_up, delivery).await {
                    Ok(Ok(Ok(_))) => Ok(()),
                    Ok(Ok(Err((e, _)))) => Err(e.to_string()),
                    Ok(Err(_canceled)) => Err("the producer was closed".to_string()),
                    // Still in librdkafka's hands: left to its own retries,
                    // counted as undelivered for now.
                    Err(_elapsed) => Err("no delivery report yet".to_string()),
                };
                match outcome {
                    Ok(()) => {
                        letter.delivered = true;
                        delivered += 1;
                    }
                    Err(why) => letter.last_error = why,
                }
            }
            self.unconfirmed.retain(|l| !l.delivered);
            self.consumer
                .context()
                .dead_lettered
                .fetch_add(delivered, Ordering::Relaxed);
            let Some(first) = self.unconfirmed.first() else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= give_up {
                let r = &first.rejected;
                let e = KafkaError::DeadLetter {
                    topic: self.dead_letter.clone(),
                    count: self.unconfirmed.len(),
                    first: format!("{}/{}@{}", r.topic, r.partition, r.offset),
                    why: first.last_error.clone(),
                };
                self.consumer.context().failed(e.to_string());
                return Err(e);
            }
            let backoff = delays.next().unwrap_or_default();
            tracing::warn!(
                topic = %self.dead_letter,
                waiting = self.unconfirmed.len(),
                "kafka source: dead letters refused ({}), retrying in {backoff:?}",
                first.last_error
            );
            tokio::time::sleep(backoff).await;
            for letter in &mut self.unconfirmed {
                send(&self.producer, &self.dead_letter, letter);
            }
        }
    }

    /// Commits, per partition, the offset after the last message of
    /// `batch` — called once the batch's decisions are journaled, batches in
    /// the order they were read. A partition that was revoked (or revoked
    /// and assigned again) since the batch was read is skipped: its messages
    /// go to its current owner again.
    ///
    /// Stores the offsets and asks for an asynchronous commit; it does not
    /// wait for the broker. A refused commit is counted in
    /// [`Source::status`]; the next commit (or librdkafka's auto-commit of
    /// the stored offsets) makes up for it.
    pub fn commit(&mut self, batch: &Batch) -> Result<(), KafkaError> {
        let marks: Vec<(String, i32, u64, i64)> = batch
            .marks
            .iter()
            .map(|m| (m.topic.clone(), m.partition, m.generation, m.next))
            .collect();
        self.commit_to(&marks)
    }

    /// The partitions assigned now, each with the generation it was assigned in.
    pub fn assigned(&self) -> Vec<((String, i32), u64)> {
        let a = lock(&self.consumer.context().assignment);
        let mut out: Vec<_> = a.partitions.iter().map(|(k, g)| (k.clone(), *g)).collect();
        out.sort();
        out
    }

    /// Like [`Source::commit`], for `(topic, partition, generation, next
    /// offset)`: what the event-time reorder says is safe to commit.
    pub fn commit_to(&mut self, marks: &[(String, i32, u64, i64)]) -> Result<(), KafkaError> {
        let context = self.consumer.context().clone();
        let assignment = lock(&context.assignment);
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, generation, next) in marks {
            let current = assignment.partitions.get(&(topic.clone(), *partition));
            if current == Some(generation) {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(|source| self.commit_error(source))?;
            } else {
                tracing::info!(
                    topic = %topic,
                    partition,
                    "kafka source: partition reassigned since the batch was read, not committed \
                     (its messages are redelivered to its owner)"
                );
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        self.consumer
            .store_offsets(&tpl)
            .map_err(|source| self.commit_error(source))?;
        self.consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|source| self.commit_error(source))?;
        drop(assignment);
        Ok(())
    }

    fn commit_error(&self, source: RdKafkaError) -> KafkaError {
        let e = KafkaError::Commit {
            group: self.group.clone(),
            source: Box::new(source),
        };
        self.consumer.context().failed(e.to_string());
        e
    }

    /// Stops fetching from every assigned partition (and from partitions
    /// assigned later) until [`Source::resume`]; for when the service's
    /// decider queue is full. While paused, [`Source::next_batch`] returns
    /// empty batches (librdkafka drops what it had prefetched for the paused
    /// partitions) but must still be called: it keeps the group membership.
    /// After resume, fetching restarts at the first message not handed out,
    /// so nothing is skipped or repeated.
    pub fn pause(&self) -> Result<(), KafkaError> {
        self.consumer.context().paused.store(true, Ordering::SeqCst);
        self.set_paused(true)
    }

    /// Fetches again after [`Source::pause`].
    pub fn resume(&self) -> Result<(), KafkaError> {
        self.consumer
            .context()
            .paused
            .store(false, Ordering::SeqCst);
        self.set_paused(false)
    }

    fn set_paused(&self, pause: bool) -> Result<(), KafkaError> {
        let error = |e| KafkaError::Pause {
            what: if pause { "pause" } else { "resume" },
            group: self.group.clone(),
            source: Box::new(e),
        };
        let assignment = self.consumer.assignment().map_err(error)?;
        if assignment.count() == 0 {
            return Ok(());
        }
        if pause {
            self.consumer.pause(&assignment).map_err(error)
        } else {
            self.consumer.resume(&assignment).map_err(error)
        }
    }

    /// Health: connection, errors, assigned partitions with their lag.
    pub fn status(&self) -> Status {
        let context = self.consumer.context();
        let (generation, mut partitions) = {
            let a = lock(&context.assignment);
            let parts: Vec<(String, i32)> = a.partitions.keys().cloned().collect();
            (a.generation, parts)
        };
        partitions.sort();
        let h = lock(&context.health);
        Status {
            connected: h.connected,
            last_success: h.last_success,
            errors: h.errors,
            last_error: h.last_error.clone(),
            generation,
            partitions: partitions
                .into_iter()
                .map(|(topic, partition)| {
                    let lag = h.lag.get(&(topic.clone(), partition)).copied();
                    PartitionStatus {
                        topic,
                        partition,
                        lag,
                    }
                })
                .collect(),
            paused: context.paused.load(Ordering::SeqCst),
            dead_lettered: context.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

/// Where [`Source::next_batch`] puts what it reads (the parts of the
/// source a borrowed message leaves free).
struct Sink<'a> {
    producer: &'a FutureProducer,
    dead_letter: &'a str,
    carry: &'a mut Batch,
    unconfirmed: &'a mut Vec<DeadLetter>,
    limits: crate::intake::Limits,
}

impl Sink<'_> {
    /// Decodes one message into the batch, or sends it to the dead-letter topic.
    fn take(&mut self, context: &Context, message: &BorrowedMessage<'_>) {
        let topic = message.topic();
        let partition = message.partition();
        let offset = message.offset();
        let generation = context.generation_of(topic, partition);
        self.carry.mark(topic, partition, offset, generation);
        let decoded = decode(message.payload()).and_then(|signal| {
            crate::intake::admit(&signal, crate::intake::now(), &self.limits).map(|()| signal)
        });
        match decoded {
            Ok(signal) => self.carry.signals.push(Received {
                signal,
                topic: topic.to_string(),
                partition,
                offset,
                timestamp: message.timestamp().to_millis().map(Timestamp),
            }),
            Err(reason) => {
                let rejected = Rejected {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    reason: reason.0,
                };
                tracing::debug!(
                    topic,
                    partition,
                    offset,
                    reason = %rejected.reason,
                    "kafka source: not a signal, dead-lettered"
                );
                let mut letter = DeadLetter {
                    rejected: rejected.clone(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    delivery: None,
                    last_error: String::new(),
                    delivered: false,
                };
                send(self.producer, self.dead_letter, &mut letter);
                self.unconfirmed.push(letter);
                self.carry.dead_lettered.push(rejected);
            }
        }
    }
}

/// A message's payload as a signal, or why it is not one.
fn decode(payload: Option<&[u8]>) -> Result<Signal, DecodeError> {
    let Some(bytes) = payload else {
        return Err(DecodeError("empty message (no payload)".to_string()));
    };
    crate::lines::decode(bytes)
}

/// Enqueues a dead letter (key, payload and the four headers); a refusal
/// to enqueue (full queue) is left for the retry.
fn send(producer: &FutureProducer, topic: &str, letter: &mut DeadLetter) {
    let r = &letter.rejected;
    let partition = r.partition.to_string();
    let offset = r.offset.to_string();
    let headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "remedy-reason",
            value: Some(r.reason.as_str()),
        })
        .insert(Header {
            key: "remedy-topic",
            value: Some(r.topic.as_str()),
        })
        .insert(Header {
            key: "remedy-partition",
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: "remedy-offset",
            value: Some(offset.as_str()),
        });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(key) = &letter.key {
        record = record.key(key.as_slice());
    }
    if let Some(payload) = &letter.payload {
        record = record.payload(payload.as_slice());
    }
    match producer.send_result(record) {
        Ok(delivery) => letter.delivery = Some(delivery),
        Err((e, _)) => {
            letter.delivery = None;
            letter.last_error = e.to_string();
        }
    }
}

/// The Kafka source's loop: consumes the signal topics in batches; each
/// batch is decided and journaled before its offsets are committed
/// (at-least-once; a redelivered signal meets an open fault or a known id
/// and changes nothing). While the decider's queue is full the assigned
/// partitions are paused, so nothing piles up in memory. Stops between
/// batches once `stop` says so.
pub async fn run(
    mut source: Source,
    intake: Intake,
    report: Reporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    const NAME: &str = "kafka";
    source.set_limits(intake.limits());
    let mut last_report = std::time::Instant::now();
    // Signals of all partitions go to the rules in event-time order.
    let mut reorder = crate::reorder::Reorder::new(source.max_lateness);
    let mut committed: HashMap<(String, i32), (u64, i64)> = HashMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let batch = tokio::select! {
            b = source.next_batch(1000, Duration::from_millis(200)) => b,
            _ = stop.changed() => break,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("kafka: {e}");
                report_status(report.as_ref(), NAME, &source);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for r in &batch.dead_lettered {
            tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, "not a signal, dead-lettered: {}", r.reason);
        }
        let at = crate::intake::now();
        reorder.assigned(&source.assigned(), at);
        let read = batch.read();
        let generation_of = |topic: &str, partition: i32| {
            read.iter()
                .find(|(t, p, ..)| t == topic && *p == partition)
                .map_or(0, |m| m.2)
        };
        report.received(NAME, batch.signals.len(), batch.dead_lettered.len());
        for mut r in batch.signals.drain(..) {
            // A signal without its own time takes the message's.
            if r.signal.ts.is_none() {
                r.signal.ts = r.timestamp;
            }
            let generation = generation_of(&r.topic, r.partition);
            reorder.push(r, generation, at);
        }
        for (topic, partition, generation, last) in &read {
            reorder.read(&(topic.clone(), *partition), *generation, *last, at);
        }
        for partition in &batch.ends {
            reorder.at_end(*partition);
        }
        let signals: Vec<Signal> = reorder.release(at).into_iter().map(|r| r.signal).collect();
        if !signals.is_empty() {
            let paused = intake.is_full() && source.pause().is_ok();
            let delivered = intake.deliver(signals).await;
            if paused {
                let _ = source.resume();
            }
            match delivered {
                Ok(_) => {}
                // Not journaled: no commit. The decider keeps the decisions
                // and writes them with its next write; a later commit covers these.
                Err(IntakeError::NotJournaled(e)) => {
                    tracing::warn!("kafka: batch not journaled yet, offsets not committed: {e}");
                    continue;
                }
                Err(_) => break,
            }
        }
        // Up to the first signal still waiting in each partition, once what
        // went before it is journaled; only what moved.
        let commits: Vec<(String, i32, u64, i64)> = reorder
            .commits()
            .into_iter()
            .filter(|(t, p, g, next)| committed.get(&(t.clone(), *p)) != Some(&(*g, *next)))
            .collect();
        if !commits.is_empty() {
            match source.commit_to(&commits) {
                Ok(()) => {
                    for (t, p, g, next) in commits {
                        committed.insert((t, p), (g, next));
                    }
                }
                Err(e) => {
                    tracing::warn!("kafka: commit failed (the messages will be redelivered): {e}")
                }
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            report_status(report.as_ref(), NAME, &source);
            last_report = std::time::Instant::now();
        }
    }
    report_status(report.as_ref(), NAME, &source);
}

/// The Kafka source's health in `/metrics` and `/readyz`.
fn report_status(report: &dyn Report, name: &str, source: &Source) {
    let status = source.status();
    let lag = status
        .partitions
        .iter()
        .filter_map(|p| p.lag)
        .reduce(|a, b| a + b);
    report.status(
        name,
        SourceStatus {
            up: status.connected,
            last_success: status.last_success.map(|t| t.secs()),
            errors: status.errors,
            last_error: status.last_error,
            lag,
            partitions: Some(
                status
                    .partitions
                    .iter()
                    .map(|p| format!("{}/{}", p.topic, p.partition))
                    .collect(),
            ),
        },
    );
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap, HashSet};
    use std::time::Instant;

    use remedy_testkit::{
        committed_offsets, end_offsets, header, produce, produce_one_per_batch, read, Tansu,
    };

    use super::*;

    const SIGNALS: &str = "node-signals";
    const DLQ: &str = "node-signals.dlq";

    fn config(tansu: &Tansu, group: &str) -> Config {
        Config {
            brokers: tansu.brokers(),
            group: group.to_string(),
            signals: vec![SIGNALS.to_string()],
            dead_letter: Some(DLQ.to_string()),
            decisions: None,
            options: BTreeMap::new(),
            max_lateness: default_max_lateness(),
        }
    }

    /// Polls `check` until it is true, for up to `within`.
    fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if check() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The message `i` of a test stream: mostly signals with unique ids,
    /// 1% malformed: in turn plain text, JSON cut short, and JSON without `kind`.
    fn message(i: usize) -> (String, String) {
        let node = format!("node-{:04}", i % 1000);
        let payload = match (i % 100, i % 300) {
            (37, 37) => format!("{node}: EDAC MC0: 1 UE memory read error"),
            (37, 137) => format!("{{\"node\":\"{node}\",\"kind\":"),
            (37, _) => format!("{{\"node\":\"{node}\",\"type\":\"memory.ecc.correctable\"}}"),
            _ => format!(
                "{{\"node\":\"{node}\",\"kind\":\"hardware\",\"type\":\"memory.ecc.correctable\",\
                 \"value\":1,\"id\":\"sig-{i}\"}}"
            ),
        };
        (node, payload)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn fifty_thousand_signals_are_decided_or_dead_lettered_and_committed() {
        let tansu = Tansu::start();
        tansu.create_topic(SIGNALS, 3);
        tansu.create_topic(DLQ, 1);
        let messages: Vec<(String, String)> = (0..50_000).map(message).collect();
        let started = Instant::now();
        let positions = produce(&tansu.brokers(), SIGNALS, &messages).await;
        let produced = started.elapsed();
        let by_position: HashMap<(i32, i64), usize> =
            positions.iter().enumerate().map(|(i, &p)| (p, i)).collect();

        let started = Instant::now();
        let mut config = config(&tansu, "remedy-test");
        config
            .options
            .insert("statistics.interval.ms".into(), "200".into());
        let mut source = Source::new(&config).unwrap();
        let mut ids = HashSet::new();
        let (mut signals, mut dead) = (0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(60);
        while signals + dead < messages.len() && Instant::now() < deadline {
            let batch = source
                .next_batch(5_000, Duration::from_millis(200))
                .await
                .unwrap();
            for r in &batch.signals {
                let i = by_position[&(r.partition, r.offset)];
                assert_eq!(r.signal.id.as_deref(), Some(format!("sig-{i}").as_str()));
                ids.insert(i);
            }
            signals += batch.signals.len();
            dead += batch.dead_lettered.len();
            source.commit(&batch).unwrap();
        }
        let consumed = started.elapsed();
        assert_eq!(signals, 49_500, "signals delivered");
        assert_eq!(ids.len(), 49_500, "distinct signals delivered");
        assert_eq!(dead, 500, "malformed messages dead-lettered");

        let letters = read(&tansu.brokers(), DLQ, 500, Duration::from_secs(30)).await;
        let mut seen = BTreeSet::new();
        for m in &letters {
            let partition: i32 = header(m, "remedy-partition").unwrap().parse().unwrap();
            let offset: i64 = header(m, "remedy-offset").unwrap().parse().unwrap();
            assert_eq!(header(m, "remedy-topic").as_deref(), Some(SIGNALS));
            let i = by_position[&(partition, offset)];
            let (key, payload) = &messages[i];
            assert_eq!(m.key(), Some(key.as_bytes()));
            assert_eq!(m.payload(), Some(payload.as_bytes()));
            let reason = header(m, "remedy-reason").unwrap();
            match i % 300 {
                37 => assert!(reason.starts_with("not valid JSON"), "{i}: {reason}"),
                137 => assert!(reason.starts_with("field \"kind\": "), "{i}: {reason}"),
                _ => assert_eq!(reason, "missing required field \"kind\"", "{i}"),
            }
            seen.insert(i);
        }
        assert_eq!(seen.len(), 500, "distinct dead letters");

        let end = end_offsets(&tansu.brokers(), SIGNALS);
        assert_eq!(end.iter().sum::<i64>(), 50_000);
        let mut committed = Vec::new();
        let caught_up = eventually(Duration::from_secs(10), || {
            committed = committed_offsets(&tansu.brokers(), "remedy-test", SIGNALS);
            committed == end
        });
        assert!(caught_up, "committed {committed:?}, end {end:?}");
        // Statistics are served while the source is polled.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !source.status().partitions.iter().all(|p| p.lag == Some(0)) {
            let batch = source
                .next_batch(100, Duration::from_millis(100))
                .await
                .unwrap();
            assert!(batch.is_empty());
            assert!(Instant::now() < deadline, "lag: {:?}", source.status());
        }
        let status = source.status();
        assert_eq!(status.dead_lettered, 500);
        assert_eq!(status.partitions.len(), 3);
        assert!(
            status.connected && status.last_success.is_some(),
            "{status:?}"
        );
        eprintln!("produced 50,000 in {produced:?}; consumed and committed in {consumed:?}");
    }

    /// Reads with both sources until `b` has partitions and the two hold
    /// all three between them; returns how many messages each read meanwhile.
    async fn until_split(a: &mut Source, b: &mut Source) -> (usize, usize) {
        let (mut read_a, mut read_b) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let wait = Duration::from_millis(200);
            let (x, y) = tokio::join!(a.next_batch(10_000, wait), b.next_batch(10_000, wait));
            read_a += x.unwrap().len();
            read_b += y.unwrap().len();
            let (pa, pb) = (a.status().partitions, b.status().partitions);
            let all: BTreeSet<i32> = pa.iter().chain(&pb).map(|p| p.partition).collect();
            if !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 3 && all.len() == 3 {
                return (read_a, read_b);
            }
            assert!(Instant::now() < deadline, "no split: a {pa:?}, b {pb:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_read_before_a_rebalance_commits_only_partitions_still_owned() {
        let tansu = Tansu::start();
        tansu.create_topic(SIGNALS, 3);
        tansu.create_topic(DLQ, 1);
        let group = "remedy-rebalance";
        let mut a = Source::new(&config(&tansu, group)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while a.status().partitions.len() < 3 {
            let batch = a.next_batch(100, Duration::from_millis(100)).await.unwrap();
            assert!(batch.is_empty());
            assert!(Instant::now() < deadline, "a got no partitions");
        }

        // A reads a batch from all three partitions but has not journaled it yet...
        let first: Vec<(String, String)> = (0..300).map(|i| message(i * 100)).collect();
        produce(&tansu.brokers(), SIGNALS, &first).await;
        let batch = a.next_batch(300, Duration::from_secs(20)).await.unwrap();
        assert_eq!(batch.len(), 300);
        let read_offsets = batch.offsets();
        assert_eq!(read_offsets.len(), 3, "{read_offsets:?}");

        // ...when B joins and takes partitions over.
        let second: Vec<(String, String)> = (300..600).map(|i| message(i * 100)).collect();
        produce(&tansu.brokers(), SIGNALS, &second).await;
        let mut b = Source::new(&config(&tansu, group)).unwrap();
        let (read_a, read_b) = until_split(&mut a, &mut b).await;
        let kept: BTreeSet<i32> = a.status().partitions.iter().map(|p| p.partition).collect();
        let moved: BTreeSet<i32> = b.status().partitions.iter().map(|p| p.partition).collect();
        assert!(read_a + read_b > 0, "nobody read the second round");
        assert!(!kept.is_empty() && !moved.is_empty());

        // A's commit of the old batch covers only what A still owns.
        a.commit(&batch).unwrap();
        let expected: Vec<i64> = (0..3)
            .map(|p| {
                let next = read_offsets.iter().find(|o| o.1 == p).unwrap().2;
                if kept.contains(&p) {
                    next
                } else {
                    -1
                }
            })
            .collect();
        let mut committed = Vec::new();
        let done = eventually(Duration::from_secs(10), || {
            committed = committed_offsets(&tansu.brokers(), group, SIGNALS);
            committed == expected
        });
        assert!(
            done,
            "kept {kept:?}, moved {moved:?}: committed {committed:?}, expected {expected:?}"
        );

        // B reads the moved partitions from the start, the first round included.
        let mut b_total = read_b;
        let moved_messages: i64 = read_offsets
            .iter()
            .filter(|o| moved.contains(&o.1))
            .map(|o| o.2)
            .sum();
        let deadline = Instant::now() + Duration::from_secs(20);
        while (b_total as i64) < moved_messages {
            b_total += b
                .next_batch(10_000, Duration::from_millis(200))
                .await
                .unwrap()
                .len();
            assert!(
                Instant::now() < deadline,
                "b read {b_total} of {moved_messages}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_paused_source_reads_nothing_and_after_resume_misses_nothing() {
        let tansu = Tansu::start();
        tansu.create_topic(SIGNALS, 3);
        tansu.create_topic(DLQ, 1);
        let mut source = Source::new(&config(&tansu, "remedy-pause")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while source.status().partitions.len() < 3 {
            let batch = source.next_batch(100, Duration::from_millis(100)).await;
            assert!(batch.unwrap().is_empty());
            assert!(Instant::now() < deadline, "no partitions");
        }
        // Single-message batches: resuming fetches from inside what a
        // producer would batch (see remedy_testkit::produce_one_per_batch).
        let first: Vec<(String, String)> = (0..99).map(|i| message(i * 100)).collect();
        let mut produced: BTreeSet<(i32, i64)> =
            produce_one_per_batch(&tansu.brokers(), SIGNALS, &first)
                .await
                .into_iter()
                .collect();
        let mut seen = BTreeSet::new();
        let batch = source
            .next_batch(10, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(batch.len(), 10);
        seen.extend(batch.signals.iter().map(|r| (r.partition, r.offset)));

        // Paused with the rest prefetched, and more arriving.
        source.pause().unwrap();
        let second: Vec<(String, String)> = (99..198).map(|i| message(i * 100)).collect();
        produced.extend(produce_one_per_batch(&tansu.brokers(), SIGNALS, &second).await);
        let batch = source
            .next_batch(1_000, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(batch.is_empty(), "read {} while paused", batch.len());
        assert!(source.status().paused);

        source.resume().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < produced.len() {
            let batch = source
                .next_batch(1_000, Duration::from_millis(200))
                .await
                .unwrap();
            for r in &batch.signals {
                assert!(seen.insert((r.partition, r.offset)), "read twice: {r:?}");
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} after resume",
                seen.len(),
                produced.len()
            );
        }
        assert_eq!(seen, produced);
    }

    #[test]
    fn the_contract_section_reads_and_unknown_keys_are_refused() {
        let text = r#"
            brokers = "127.0.0.1:9092"
            group = "remedy"
            signals = ["node-signals"]
            dead_letter = "node-signals.dlq"
            decisions = "remedy-decisions"
            options = { "security.protocol" = "SASL_SSL", "sasl.password" = "hunter2", "queued.max.messages.kbytes" = 16384 }
        "#;
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(config.signals, ["node-signals"]);
        assert_eq!(config.options["queued.max.messages.kbytes"], "16384");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("SASL_SSL"),
            "{shown}"
        );

        let e = toml::from_str::<Config>("brokers = \"b\"\ntopics = [\"x\"]").unwrap_err();
        assert!(e.to_string().contains("topics"), "{e}");
    }

    #[test]
    fn settings_remedy_owns_are_refused_in_options() {
        let mut config: Config = toml::from_str(
            "brokers = \"127.0.0.1:9092\"\nsignals = [\"s\"]\ndead_letter = \"d\"\n\
             options = { \"enable.auto.offset.store\" = true }",
        )
        .unwrap();
        let e = Source::new(&config).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("[kafka] options.\"enable.auto.offset.store\":"),
            "{e}"
        );
        config.options.clear();
        config.dead_letter = None;
        let e = Source::new(&config).unwrap_err();
        assert!(e.to_string().starts_with("[kafka] dead_letter:"), "{e}");
    }

    #[test]
    fn a_batch_commits_the_offset_after_the_last_message_of_the_latest_assignment() {
        let mut batch = Batch::default();
        batch.mark("s", 0, 10, 1);
        batch.mark("s", 0, 12, 1);
        batch.mark("s", 1, 40, 1);
        // Partition 1 was assigned again and redelivered from 30.
        batch.mark("s", 1, 30, 3);
        assert_eq!(
            batch.offsets(),
            [("s".to_string(), 0, 13), ("s".to_string(), 1, 31)]
        );
        assert_eq!(batch.marks[1].generation, 3);
    }

    /// Fleets' brokers speak TLS and SASL: librdkafka is built with OpenSSL
    /// (vendored) and zstd, so these settings are accepted, not refused as
    /// "not available at build time".
    #[tokio::test]
    async fn tls_sasl_and_zstd_are_built_in() {
        let config: Config = toml::from_str(
            "brokers = \"127.0.0.1:1\"\nsignals = [\"s\"]\ndead_letter = \"d\"\n\
             options = { \"security.protocol\" = \"SASL_SSL\", \"sasl.mechanism\" = \"SCRAM-SHA-512\", \
             \"sasl.username\" = \"remedy\", \"sasl.password\" = \"x\", \"ssl.endpoint.identification.algorithm\" = \"https\" }",
        )
        .unwrap();
        if let Err(e) = Source::new(&config) {
            panic!("SASL_SSL with SCRAM refused: {e}");
        }
        let (version, _) = rdkafka::util::get_rdkafka_version();
        let features = {
            let mut c = rdkafka::ClientConfig::new();
            c.set("compression.codec", "zstd");
            c.create::<rdkafka::producer::BaseProducer>().map(|_| ())
        };
        assert!(
            features.is_ok(),
            "zstd refused by librdkafka {version:#x}: {:?}",
            features.err()
        );
    }

    #[tokio::test]
    async fn the_next_batch_future_can_move_between_threads() {
        fn sendable<T: Send>(_: &T) {}
        let config: Config =
            toml::from_str("brokers = \"127.0.0.1:1\"\nsignals = [\"s\"]\ndead_letter = \"d\"")
                .unwrap();
        let mut source = Source::new(&config).unwrap();
        sendable(&source.next_batch(1, Duration::ZERO));
    }
}
