//! `kafka`: a command for the node agents. The job becomes one message on the
//! command `topic`, keyed by node (so one node's commands stay in order on
//! one partition):
//!
//! ```json
//! {"id":"node-7/memory_failure/2026-11-24T23:58:07Z/reinstall","node":"node-7",
//!  "action":"reinstall","fault":"memory_failure","reason":"UE on node-7",
//!  "deadline":"2026-11-25T00:08:07Z"}
//! ```
//!
//! `reason` is left out when the fault has none; `deadline` is when remedy
//! stops waiting (now + `timeout`).
//!
//! Without `reply_topic` the action is `executed` once the broker confirms
//! the command (`published to TOPIC partition P offset O`). With it, remedy
//! waits for the agent's answer on the reply topic,
//! `{"id": ..., "ok": true|false, "message": "..."}` (`message` optional):
//! `ok: true` is `executed` (`acknowledged by agent: MESSAGE`), `ok: false`
//! is `failed` with the agent's message, and no answer within `timeout` is
//! `failed` (`no acknowledgement on REPLY_TOPIC within 10m`), which counts
//! for the executor's circuit breaker like every failure.
//!
//! Idempotency: `id` is the job id, the same for every retry of the action
//! and after a restart of remedy, so an agent can recognise a command it has
//! already carried out; it should then answer again with the same
//! acknowledgement instead of acting twice.
//!
//! The reply topic is read without a consumer group: at the first job, the
//! executor looks up every partition's end offset and assigns itself all
//! partitions from there, so it sees every acknowledgement written after
//! that moment (and so after any command it sends), needs no group join
//! before it can work, and never competes with other remedy instances for
//! partitions: every instance reads every acknowledgement and picks out its
//! own jobs by id. Partitions added to the reply topic later are not read
//! until remedy restarts.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use remedy_engine::{Duration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, OnceCell};

use super::{BoxFuture, ConfigError, ExecError, Executor, Job};
use remedy_kafka::{describe, KafkaLog, Producer, Record, Redacted};

/// `[actions.NAME] executor = "kafka"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The command topic the agents read.
    pub topic: String,
    /// Where agents acknowledge, `{"id": ..., "ok": true|false, "message": ...}`.
    /// Default: no acknowledgement is awaited.
    #[serde(default)]
    pub reply_topic: Option<String>,
    /// How long a command may take: the wait for the acknowledgement, or for
    /// the broker's confirmation without `reply_topic`. Default 10m with
    /// `reply_topic`, 30s without.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// The bootstrap brokers. The service fills in `[kafka] brokers` when
    /// the action does not set it; required by the time the executor is built.
    #[serde(default)]
    pub brokers: Option<String>,
    /// librdkafka settings passed through as written (e.g. SASL); values
    /// of secret settings never appear in logs or errors.
    #[serde(default, deserialize_with = "remedy_kafka::options")]
    pub options: BTreeMap<String, String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("topic", &self.topic)
            .field("reply_topic", &self.reply_topic)
            .field("timeout", &self.timeout)
            .field("brokers", &self.brokers)
            .field("options", &Redacted(&self.options))
            .finish()
    }
}

/// The command message.
#[derive(Serialize)]
struct CommandMessage<'a> {
    id: &'a str,
    node: &'a str,
    action: &'a str,
    fault: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    /// What the action is to do beyond its name: an upgrade's component
    /// and version.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    params: &'a std::collections::BTreeMap<String, String>,
    deadline: Timestamp,
}

/// An agent's answer.
#[derive(Debug, Deserialize)]
struct Ack {
    id: String,
    ok: bool,
    #[serde(default)]
    message: Option<String>,
}

/// Jobs waiting for their acknowledgement, by job id.
type Waiting = Arc<Mutex<HashMap<String, Vec<oneshot::Sender<Ack>>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reply topic's reader: started at the first job, stopped with the executor.
struct Replies {
    topic: String,
    config: ClientConfig,
    waiting: Waiting,
    reader: OnceCell<Reader>,
}

/// The task reading the reply topic.
struct Reader(tokio::task::AbortHandle);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `kafka` command executor.
pub struct Command {
    topic: String,
    timeout: Duration,
    producer: Producer,
    replies: Option<Replies>,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("topic", &self.topic)
            .field("reply_topic", &self.replies.as_ref().map(|r| &r.topic))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The settings as read, without building a client: the topic, the
/// brokers (this section's or `[kafka]`'s), the reply topic and the timeout.
pub fn check(action: &str, config: &Config) -> Result<(), ConfigError> {
    checked(action, config).map(drop)
}

fn checked(action: &str, config: &Config) -> Result<(String, Duration), ConfigError> {
    if config.topic.trim().is_empty() {
        return Err(ConfigError::new(
            action,
            "topic: give the command topic, e.g. \"node-commands\"",
        ));
    }
    let brokers = match &config.brokers {
        Some(b) if !b.trim().is_empty() => b.clone(),
        _ => {
            return Err(ConfigError::new(
                action,
                "brokers: not set here and no [kafka] brokers to take it from",
            ))
        }
    };
    if let Some(reply) = &config.reply_topic {
        if reply.trim().is_empty() || *reply == config.topic {
            return Err(ConfigError::new(
                action,
                "reply_topic: give the topic agents acknowledge on, other than `topic`",
            ));
        }
    }
    let timeout = config.timeout.unwrap_or(if config.reply_topic.is_some() {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(30)
    });
    if timeout.0 <= 0 {
        return Err(ConfigError::new(action, "timeout: must be longer than 0s"));
    }
    Ok((brokers, timeout))
}

impl Command {
    /// Checks the settings and builds the producer (no network round trip:
    /// the reply topic is looked up at the first job).
    pub fn new(action: &str, config: Config) -> Result<Command, ConfigError> {
        let (brokers, timeout) = checked(action, &config)?;
        let producer =
            Producer::new(&brokers, "remedy-commands", &config.options).map_err(|e| {
                ConfigError::new(
                    action,
                    format!("cannot create the producer: {}", describe(&e)),
                )
            })?;
        let replies = config.reply_topic.as_ref().map(|topic| {
            let mut consumer = ClientConfig::new();
            consumer
                .set("bootstrap.servers", &brokers)
                .set("client.id", "remedy-command-acks")
                // librdkafka's assign needs a group id; without a
                // subscription the group is never joined, and nothing is
                // committed.
                .set("group.id", "remedy-command-acks")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false");
            for (k, v) in &config.options {
                consumer.set(k, v);
            }
            Replies {
                topic: topic.clone(),
                config: consumer,
                waiting: Waiting::default(),
                reader: OnceCell::new(),
            }
        });
        Ok(Command {
            topic: config.topic,
            timeout,
            producer,
            replies,
        })
    }

    /// How long this executor waits itself: a little less than
    /// [`Executor::timeout`], so that its own reason reaches the decision
    /// rather than the generic timeout.
    fn wait(&self) -> std::time::Duration {
        let timeout = std::time::Duration::from_millis(self.timeout.0 as u64);
        let margin = (timeout / 10).clamp(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_secs(5),
        );
        timeout.saturating_sub(margin)
    }

    async fn run(&self, job: &Job) -> Result<String, ExecError> {
        let give_up = tokio::time::Instant::now() + self.wait();
        let intent = &job.intent;
        let payload = serde_json::to_string(&CommandMessage {
            id: &job.id,
            node: &intent.node,
            action: &intent.action,
            fault: &intent.fault,
            reason: intent.reason.as_deref(),
            params: &intent.params,
            deadline: wall_clock().add(self.timeout),
        })
        .map_err(|e| ExecError::Permanent(format!("cannot encode the command: {e}")))?;

        let Some(replies) = &self.replies else {
            let (partition, offset) = self.send(&intent.node, &payload, give_up).await?;
            return Ok(format!(
                "published to {} partition {partition} offset {offset}",
                self.topic
            ));
        };
        replies.start(give_up).await.map_err(|why| {
            ExecError::Transient(format!("cannot read reply topic {}: {why}", replies.topic))
        })?;
        // Registered before the command leaves, so no answer can come too early.
        let mut registration = Registration::new(&replies.waiting, &job.id);
        self.send(&intent.node, &payload, give_up).await?;
        let answer = registration.answer.take().expect("a fresh registration");
        match tokio::time::timeout_at(give_up, answer).await {
            Ok(Ok(ack)) if ack.ok => Ok(match ack.message {
                Some(m) if !m.trim().is_empty() => format!("acknowledged by agent: {m}"),
                _ => "acknowledged by agent".to_string(),
            }),
            Ok(Ok(ack)) => Err(ExecError::Permanent(match ack.message {
                Some(m) if !m.trim().is_empty() => m,
                _ => "the agent answered ok: false without a message".to_string(),
            })),
            Ok(Err(_)) => Err(ExecError::Transient(format!(
                "the reader of reply topic {} stopped",
                replies.topic
            ))),
            Err(_elapsed) => Err(ExecError::Transient(format!(
                "no acknowledgement on {} within {}",
                replies.topic, self.timeout
            ))),
        }
    }

    /// Publishes the command and waits for the broker's confirmation,
    /// sending it again with backoff when refused, until `give_up`.
    async fn send(
        &self,
        node: &str,
        payload: &str,
        give_up: tokio::time::Instant,
    ) -> Result<(i32, i64), ExecError> {
        let record = Record { key: node, payload };
        match self
            .producer
            .send_confirmed(&self.topic, &[record], give_up)
            .await
        {
            Ok(placed) => Ok((placed[0].partition, placed[0].offset)),
            Err(e) => Err(ExecError::Transient(format!(
                "cannot publish to {}: {}",
                self.topic, e.why
            ))),
        }
    }
}

impl Replies {
    /// Starts the reader at the first call (positions it at the end of
    /// every partition); later calls return at once. A failed start is
    /// tried again by the next job.
    async fn start(&self, give_up: tokio::time::Instant) -> Result<(), String> {
        self.reader
            .get_or_try_init(|| async {
                let consumer: Arc<StreamConsumer<KafkaLog>> = Arc::new(
                    self.config
                        .create_with_context(KafkaLog)
                        .map_err(|e| format!("cannot create the consumer: {}", describe(&e)))?,
                );
                let budget = give_up.saturating_duration_since(tokio::time::Instant::now());
                let lookup = consumer.clone();
                let topic = self.topic.clone();
                let ends = tokio::task::spawn_blocking(move || ends(&lookup, &topic, budget))
                    .await
                    .map_err(|e| format!("the lookup of its partitions failed: {e}"))??;
                consumer
                    .assign(&ends)
                    .map_err(|e| format!("cannot assign its partitions: {e}"))?;
                let task = tokio::spawn(read_acks(
                    consumer,
                    self.topic.clone(),
                    self.waiting.clone(),
                ));
                Ok::<_, String>(Reader(task.abort_handle()))
            })
            .await
            .map(|_| ())
    }
}

/// Every partition of `topic` at its current end offset (blocking).
fn ends(
    consumer: &StreamConsumer<KafkaLog>,
    topic: &str,
    budget: std::time::Duration,
) -> Result<TopicPartitionList, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), budget)
        .map_err(|e| format!("no metadata: {e}"))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or("not in the metadata")?;
    if let Some(e) = t.error() {
        return Err(format!("{:?}", rdkafka::types::RDKafkaErrorCode::from(e)));
    }
    if t.partitions().is_empty() {
        return Err("no partitions".to_string());
    }
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (_, high) = consumer
            .fetch_watermarks(topic, p.id(), budget)
            .map_err(|e| format!("no end offset of partition {}: {e}", p.id()))?;
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))
            .map_err(|e| e.to_string())?;
    }
    Ok(tpl)
}

/// Hands every acknowledgement to the jobs waiting for its id.
async fn read_acks(consumer: Arc<StreamConsumer<KafkaLog>>, topic: String, waiting: Waiting) {
    loop {
        let ack = match consumer.recv().await {
            Ok(message) => serde_json::from_slice::<Ack>(message.payload().unwrap_or_default()),
            Err(e) => {
                tracing::warn!(topic, "reading acknowledgements: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        let ack = match ack {
            Ok(ack) => ack,
            Err(e) => {
                tracing::warn!(topic, "not an acknowledgement ({e}), skipped");
                continue;
            }
        };
        let senders = lock(&waiting).remove(&ack.id);
        match senders {
            // Another instance's job, or one that gave up already.
            None => tracing::debug!(topic, id = %ack.id, "acknowledgement for no waiting job"),
            Some(senders) => {
                for tx in senders {
                    let _ = tx.send(Ack {
                        id: ack.id.clone(),
                        ok: ack.ok,
                        message: ack.message.clone(),
                    });
                }
            }
        }
    }
}

/// A job waiting for its acknowledgement; unregisters itself when dropped
/// (answered, timed out or cancelled).
struct Registration<'a> {
    waiting: &'a Waiting,
    id: String,
    answer: Option<oneshot::Receiver<Ack>>,
}

impl<'a> Registration<'a> {
    fn new(waiting: &'a Waiting, id: &str) -> Self {
        let (tx, rx) = oneshot::channel();
        lock(waiting).entry(id.to_string()).or_default().push(tx);
        Registration {
            waiting,
            id: id.to_string(),
            answer: Some(rx),
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        drop(self.answer.take());
        let mut waiting = lock(self.waiting);
        if let Some(senders) = waiting.get_mut(&self.id) {
            senders.retain(|tx| !tx.is_closed());
            if senders.is_empty() {
                waiting.remove(&self.id);
            }
        }
    }
}

/// Now, by the wall clock (for the command's deadline).
fn wall_clock() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp(ms)
}

impl Executor for Command {
    fn execute<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<String, ExecError>> {
        Box::pin(self.run(job))
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rdkafka::Message;
    use remedy_testkit::{produce, read, Tansu};
    use serde_json::{json, Value};

    use super::*;
    use crate::executors::{settings as read_settings, testing::job, Executors};

    const COMMANDS: &str = "node-commands";
    const ACKS: &str = "node-command-acks";

    fn executors(tansu: &Tansu, reply: Option<&str>, timeout: Option<&str>) -> Executors {
        let config = Config {
            topic: COMMANDS.into(),
            reply_topic: reply.map(str::to_string),
            timeout: timeout.map(|t| t.parse().unwrap()),
            brokers: Some(tansu.brokers()),
            options: BTreeMap::new(),
        };
        let command: Arc<dyn Executor> = Arc::new(Command::new("reinstall", config).unwrap());
        Executors::from_map(BTreeMap::from([("reinstall".to_string(), command)]))
    }

    fn broker_with_topics() -> Tansu {
        let tansu = Tansu::start();
        tansu.create_topic(COMMANDS, 3);
        tansu.create_topic(ACKS, 2);
        tansu
    }

    /// A node agent: reads the first command, answers `answer(command)` on
    /// the reply topic (after an answer for another job and a line that is
    /// not an answer at all), and hands the command back.
    fn agent(tansu: &Tansu, answer: fn(&Value) -> Value) -> tokio::task::JoinHandle<Value> {
        let brokers = tansu.brokers();
        tokio::spawn(async move {
            let got = read(&brokers, COMMANDS, 1, std::time::Duration::from_secs(30)).await;
            let command: Value = serde_json::from_slice(got[0].payload().unwrap()).unwrap();
            let reply = answer(&command).to_string();
            let other =
                json!({"id": "node-9/disk_failure/2026-11-24T23:58:07Z/reinstall", "ok": true})
                    .to_string();
            produce(
                &brokers,
                ACKS,
                &[
                    ("node-9", other.as_str()),
                    ("node-7", "not json"),
                    ("node-7", reply.as_str()),
                ],
            )
            .await;
            command
        })
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn without_a_reply_topic_the_command_is_published_keyed_by_node() {
        let tansu = broker_with_topics();
        let job = job("node-7", "reinstall");
        let before = wall_clock();
        let summary = executors(&tansu, None, None).run(&job).await.unwrap();
        let after = wall_clock();

        let got = read(
            &tansu.brokers(),
            COMMANDS,
            1,
            std::time::Duration::from_secs(30),
        )
        .await;
        let message = &got[0];
        assert_eq!(
            summary,
            format!(
                "published to {COMMANDS} partition {} offset {}",
                message.partition(),
                message.offset()
            )
        );
        assert_eq!(message.key(), Some(&b"node-7"[..]));
        let command: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let deadline = Timestamp::parse_rfc3339(command["deadline"].as_str().unwrap()).unwrap();
        assert!(
            before.add(Duration::from_secs(30)) <= deadline
                && deadline <= after.add(Duration::from_secs(30)),
            "deadline {deadline} is not now + 30s"
        );
        assert_eq!(
            command,
            json!({
                "id": "node-7/memory_failure/2026-11-24T23:58:07Z/reinstall",
                "node": "node-7",
                "action": "reinstall",
                "fault": "memory_failure",
                "reason": "UE on node-7",
                "deadline": command["deadline"],
            })
        );
        assert_eq!(command["id"], job.id);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_acknowledgement_makes_it_executed() {
        let tansu = broker_with_topics();
        let agent = agent(
            &tansu,
            |c| json!({"id": c["id"], "ok": true, "message": "reinstalled in 42s"}),
        );
        let job = job("node-7", "reinstall");
        let result = executors(&tansu, Some(ACKS), Some("30s")).run(&job).await;
        assert_eq!(
            result,
            Ok("acknowledged by agent: reinstalled in 42s".to_string())
        );
        assert_eq!(agent.await.unwrap()["id"], job.id);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_upgrade_command_names_its_component_and_version() {
        let tansu = broker_with_topics();
        let agent = agent(
            &tansu,
            |c| json!({"id": c["id"], "ok": true, "message": format!("{} {}", c["params"]["component"], c["params"]["version"])}),
        );
        let config = Config {
            topic: COMMANDS.into(),
            reply_topic: Some(ACKS.into()),
            timeout: Some("30s".parse().unwrap()),
            brokers: Some(tansu.brokers()),
            options: BTreeMap::new(),
        };
        let command: Arc<dyn Executor> = Arc::new(Command::new("upgrade", config).unwrap());
        let executors = Executors::from_map(BTreeMap::from([("upgrade".to_string(), command)]));
        let mut job = job("node-7", "upgrade");
        job.intent.fault = "version_drift".into();
        job.intent.params = BTreeMap::from([
            ("component".to_string(), "kubelet".to_string()),
            ("version".to_string(), "1.31.2".to_string()),
        ]);
        job.id = job.intent.key();
        let result = executors.run(&job).await;
        assert_eq!(
            result,
            Ok("acknowledged by agent: \"kubelet\" \"1.31.2\"".to_string())
        );
        let command = agent.await.unwrap();
        assert_eq!(
            command["id"], "node-7/version_drift/2026-11-24T23:58:07Z/upgrade/kubelet",
            "one job per component"
        );
        assert_eq!(
            command["params"],
            json!({"component": "kubelet", "version": "1.31.2"})
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_refusal_fails_with_the_agents_message() {
        let tansu = broker_with_topics();
        let _agent = agent(
            &tansu,
            |c| json!({"id": c["id"], "ok": false, "message": "BMC unreachable"}),
        );
        let result = executors(&tansu, Some(ACKS), Some("30s"))
            .run(&job("node-7", "reinstall"))
            .await;
        assert_eq!(
            result,
            Err(ExecError::Permanent("BMC unreachable".to_string())),
            "a refused acknowledgement is final"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn no_acknowledgement_fails_within_the_timeout() {
        let tansu = broker_with_topics();
        let executors = executors(&tansu, Some(ACKS), Some("2s"));
        let started = std::time::Instant::now();
        let result = executors.run(&job("node-7", "reinstall")).await;
        assert_eq!(
            result,
            Err(ExecError::Transient(format!(
                "no acknowledgement on {ACKS} within 2s"
            )))
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // The command did go out.
        read(
            &tansu.brokers(),
            COMMANDS,
            1,
            std::time::Duration::from_secs(10),
        )
        .await;
    }

    #[test]
    fn brokers_are_required() {
        let table: toml::Table = toml::from_str("topic = \"node-commands\"").unwrap();
        let config: Config = read_settings("reinstall", &table).unwrap();
        let e = Command::new("reinstall", config).unwrap_err();
        assert!(
            e.to_string().starts_with("[actions.reinstall] brokers:"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_and_secrets_stay_out_of_debug_output() {
        let table: toml::Table = toml::from_str("topic = \"c\"\nreply = \"a\"").unwrap();
        let e = read_settings::<Config>("reinstall", &table).unwrap_err();
        assert!(e.to_string().contains("reply"), "{e}");

        let table: toml::Table = toml::from_str(
            "topic = \"c\"\nbrokers = \"127.0.0.1:9092\"\n\
             options = { \"sasl.password\" = \"hunter2\", \"linger.ms\" = 5 }",
        )
        .unwrap();
        let config: Config = read_settings("reinstall", &table).unwrap();
        assert_eq!(config.options["linger.ms"], "5");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let command = Command::new("reinstall", config).unwrap();
        assert_eq!(command.timeout(), Duration::from_secs(30));
    }

    #[test]
    fn waiting_for_acknowledgements_defaults_to_ten_minutes() {
        let table: toml::Table =
            toml::from_str("topic = \"c\"\nreply_topic = \"a\"\nbrokers = \"127.0.0.1:9092\"")
                .unwrap();
        let command =
            Command::new("reinstall", read_settings("reinstall", &table).unwrap()).unwrap();
        assert_eq!(command.timeout(), Duration::from_secs(600));
        assert!(command.wait() < std::time::Duration::from_secs(600));
    }
}
