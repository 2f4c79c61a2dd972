//! Sending to Kafka and knowing it arrived: one producer type with remedy's
//! defaults, and the one "send, wait for each delivery report, send the
//! refused ones again with backoff until a deadline" loop that the
//! decisions publisher and the command executor share.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use remedy_engine::{Backoff, Duration};
use tokio::time::Instant;

use crate::KafkaLog;

/// One message: its key and payload.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// The partitioning key (remedy keys by node).
    pub key: &'a str,
    /// The message.
    pub payload: &'a str,
}

/// Where the broker put a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Its partition.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
}

/// What was still not confirmed at the deadline.
#[derive(Debug, thiserror::Error)]
#[error("{} of {total} messages not delivered to {topic}: {why}", undelivered.len())]
pub struct Undelivered {
    /// The topic.
    pub topic: String,
    /// Positions (in the records given) of the messages not confirmed.
    pub undelivered: Vec<usize>,
    /// How many were given.
    pub total: usize,
    /// The last refusal.
    pub why: String,
}

/// A producer whose sends are confirmed: librdkafka gives up on a message
/// after 10 s (`message.timeout.ms`), then remedy sends it again.
pub struct Producer {
    inner: FutureProducer<KafkaLog>,
    backoff: Backoff,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// The default waits between resends: 100 ms doubling up to 5 s.
pub const RESEND: Backoff = Backoff::new(Duration(100), Duration(5_000));

impl Producer {
    /// A producer on `brokers` named `client_id`, with remedy's defaults
    /// and then `options` (which override them). No network round trip.
    pub fn new(
        brokers: &str,
        client_id: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Self, RdKafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("client.id", client_id)
            // librdkafka gives up on a message after this; remedy retries it.
            .set("message.timeout.ms", "10000");
        for (k, v) in options {
            config.set(k, v);
        }
        Ok(Producer {
            inner: config.create_with_context(KafkaLog)?,
            backoff: RESEND,
        })
    }

    /// The waits between resends.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sends every record to `topic`, all at once, and waits until the
    /// broker has confirmed each; refused ones are sent again, waiting the
    /// backoff between rounds, until `give_up`. Answers where each went,
    /// in order, or which were never confirmed and why.
    pub async fn send_confirmed(
        &self,
        topic: &str,
        records: &[Record<'_>],
        give_up: Instant,
    ) -> Result<Vec<Delivered>, Undelivered> {
        let mut placed = vec![
            Delivered {
                partition: -1,
                offset: -1
            };
            records.len()
        ];
        let mut waiting: Vec<usize> = (0..records.len()).collect();
        let mut delays = self.backoff.delays();
        loop {
            let mut why = String::new();
            let mut in_flight = Vec::with_capacity(waiting.len());
            for &i in &waiting {
                let record = FutureRecord::to(topic)
                    .key(records[i].key)
                    .payload(records[i].payload);
                match self.inner.send_result(record) {
                    Ok(delivery) => in_flight.push((i, Some(delivery))),
                    Err((e, _)) => {
                        why = e.to_string();
                        in_flight.push((i, None));
                    }
                }
            }
            let mut refused = Vec::new();
            for (i, delivery) in in_flight {
                let Some(delivery) = delivery else {
                    refused.push(i);
                    continue;
                };
                match tokio::time::timeout_at(give_up, delivery).await {
                    Ok(Ok(Ok(d))) => {
                        placed[i] = Delivered {
                            partition: d.partition,
                            offset: d.offset,
                        }
                    }
                    Ok(Ok(Err((e, _)))) => {
                        why = e.to_string();
                        refused.push(i);
                    }
                    Ok(Err(_canceled)) => {
                        why = "the producer was closed".to_string();
                        refused.push(i);
                    }
                    Err(_elapsed) => {
                        why = "no confirmation from the broker".to_string();
                        refused.push(i);
                    }
                }
            }
            if refused.is_empty() {
                return Ok(placed);
            }
            let now = Instant::now();
            if now >= give_up {
                return Err(Undelivered {
                    topic: topic.to_string(),
                    undelivered: refused,
                    total: records.len(),
                    why,
                });
            }
            let wait = delays.next().unwrap_or_default();
            tracing::warn!(
                topic,
                waiting = refused.len(),
                "messages refused ({why}), sending again in {wait:?}"
            );
            tokio::time::sleep(wait.min(give_up - now)).await;
            waiting = refused;
        }
    }
}
