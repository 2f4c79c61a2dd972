//! The decisions topic (`[kafka] decisions`): every decision published as its
//! contract JSON (section 4), key = node, so that one node's decisions land
//! in one partition, in order.
//!
//! Guarantees: [`Publisher::publish`] returns `Ok` only when the broker has
//! confirmed every decision of the call. A refused delivery is retried with
//! backoff (100ms doubling to 5s) until the publisher's deadline (30s by
//! default); past it the call fails naming the topic and which decisions are
//! missing, and the caller keeps them and publishes them again later. Nothing
//! is dropped silently; after a retry a decision can appear twice, and a
//! retried decision can land after a later one of the same node.
//!
//! The sending and confirming is `remedy_kafka`'s [`Producer`], shared with
//! the command executor.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use remedy_engine::Decision;
use remedy_kafka::{describe, Producer, Record};

/// How long a publish keeps retrying by default.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Why decisions could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A setting is missing or unusable.
    #[error("decisions topic {topic}: {why}")]
    Config {
        /// The topic.
        topic: String,
        /// What is wrong.
        why: String,
    },
    /// librdkafka refused to build the producer (usually a bad `options`
    /// entry; the value of a secret setting is not shown).
    #[error("decisions topic {topic}: cannot create the producer: {why}")]
    Client {
        /// The topic.
        topic: String,
        /// librdkafka's reason.
        why: String,
    },
    /// Some decisions were not confirmed by the broker before the deadline.
    #[error(
        "decisions topic {topic}: {} of {total} decision(s) not delivered within {within:?}: {why}",
        undelivered.len()
    )]
    Undelivered {
        /// The topic.
        topic: String,
        /// Indices (into the published slice) of the decisions not delivered.
        undelivered: Vec<usize>,
        /// How many were published.
        total: usize,
        /// How long it tried.
        within: Duration,
        /// The last refusal.
        why: String,
    },
}

/// Publishes decisions to one topic.
pub struct Publisher {
    producer: Producer,
    topic: String,
    deadline: Duration,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A producer for `topic` on `brokers`; `options` are librdkafka
    /// settings passed through (the `[kafka] options` table). No network
    /// round trip happens here.
    pub fn new(
        brokers: &str,
        topic: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Publisher, PublishError> {
        let bad = |why: &str| PublishError::Config {
            topic: topic.to_string(),
            why: why.to_string(),
        };
        if topic.trim().is_empty() {
            return Err(bad("the topic name must not be empty"));
        }
        if brokers.trim().is_empty() {
            return Err(bad("give the bootstrap brokers, e.g. \"127.0.0.1:9092\""));
        }
        let producer = Producer::new(brokers, "remedy-decisions", options).map_err(|e| {
            PublishError::Client {
                topic: topic.to_string(),
                why: describe(&e),
            }
        })?;
        Ok(Publisher {
            producer,
            topic: topic.to_string(),
            deadline: DEFAULT_DEADLINE,
        })
    }

    /// Retries refused deliveries for up to `deadline` per call (default 30s).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The topic decisions go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes every decision (its JSON, key = node), all at once, and
    /// waits until the broker has confirmed each; refused ones are sent
    /// again until the deadline. On error, [`PublishError::Undelivered`]
    /// lists which decisions are missing.
    pub async fn publish(&self, decisions: &[Decision]) -> Result<(), PublishError> {
        let give_up = tokio::time::Instant::now() + self.deadline;
        let payloads: Vec<String> = decisions.iter().map(Decision::to_json).collect();
        let records: Vec<Record<'_>> = decisions
            .iter()
            .zip(&payloads)
            .map(|(d, payload)| Record {
                key: d.node.as_str(),
                payload,
            })
            .collect();
        match self
            .producer
            .send_confirmed(&self.topic, &records, give_up)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(PublishError::Undelivered {
                topic: self.topic.clone(),
                undelivered: e.undelivered,
                total: e.total,
                within: self.deadline,
                why: e.why,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use remedy_engine::{Outcome, Severity, Timestamp};
    use remedy_testkit::{read, Tansu};

    use super::*;

    fn decisions(n: usize) -> Vec<Decision> {
        let ts = Timestamp::parse_rfc3339("2026-11-24T23:58:07Z").unwrap();
        (0..n)
            .map(|i| {
                let node = format!("node-{:04}", i % 97);
                match i % 3 {
                    0 => Decision::opened(
                        ts,
                        &node,
                        "memory_failure",
                        Severity::Critical,
                        "hardware/memory.rhai",
                        Some(format!("UE #{i}")),
                    ),
                    1 => Decision::action(
                        ts,
                        &node,
                        "memory_failure",
                        "cordon",
                        Outcome::DryRun,
                        None,
                    ),
                    _ => Decision::resolved(ts, &node, "memory_failure"),
                }
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_decision_arrives_as_its_json_keyed_by_node() {
        let tansu = Tansu::start();
        tansu.create_topic("remedy-decisions", 3);
        let publisher =
            Publisher::new(&tansu.brokers(), "remedy-decisions", &BTreeMap::new()).unwrap();
        let sent = decisions(1_000);
        publisher.publish(&sent).await.unwrap();

        let got = read(
            &tansu.brokers(),
            "remedy-decisions",
            sent.len(),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(got.len(), sent.len());
        let mut expected: Vec<(String, String)> =
            sent.iter().map(|d| (d.node.clone(), d.to_json())).collect();
        let mut actual: Vec<(String, String)> = got
            .iter()
            .map(|m| {
                use rdkafka::Message;
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                let payload = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                (key, payload)
            })
            .collect();
        expected.sort();
        actual.sort();
        assert_eq!(actual, expected);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unreachable_broker_fails_naming_the_topic_and_what_is_missing() {
        // Nothing listens on port 1 of loopback.
        let publisher = Publisher::new("127.0.0.1:1", "remedy-decisions", &BTreeMap::new())
            .unwrap()
            .with_deadline(Duration::from_millis(1500));
        let started = std::time::Instant::now();
        let e = publisher.publish(&decisions(3)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        match &e {
            PublishError::Undelivered {
                topic, undelivered, ..
            } => {
                assert_eq!(topic, "remedy-decisions");
                assert_eq!(undelivered, &vec![0, 1, 2]);
            }
            other => panic!("expected Undelivered, got {other}"),
        }
        assert!(
            e.to_string()
                .starts_with("decisions topic remedy-decisions: 3 of 3"),
            "{e}"
        );
    }
}
