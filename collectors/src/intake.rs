//! The one way a source hands signals on: an [`Intake`] handle to the
//! decider's queue, and a [`Report`] of its own health.
//!
//! Every source (HTTP and Alertmanager intake, Kafka, PromQL, scrapes)
//! owns its run loop, turns its transport into [`Signal`]s and delivers
//! them in batches through the intake, waiting until the batch is
//! journaled: a slow journal slows the source, not memory. The decider
//! behind the queue is the service's; a source knows no rule and no journal.

use std::sync::Arc;

use remedy_engine::{DecodeError, Duration, Signal, Timestamp};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// [`Intake::admit`] at `now`: the first limit a signal breaks, naming the
/// field.
pub fn admit(signal: &Signal, now: Timestamp, limits: &Limits) -> Result<(), DecodeError> {
    let too_long = |field: &str, len: usize, max: usize| {
        Err(DecodeError(format!(
            "field \"{field}\": {len} bytes, more than the limit of {max}"
        )))
    };
    if signal.node.len() > limits.node_name {
        return too_long("node", signal.node.len(), limits.node_name);
    }
    if signal.labels.len() > limits.labels {
        return Err(DecodeError(format!(
            "field \"labels\": {} labels, more than the limit of {}",
            signal.labels.len(),
            limits.labels
        )));
    }
    for (k, v) in signal.labels.iter() {
        if k.len().max(v.len()) > limits.label_size {
            return Err(DecodeError(format!(
                "field \"labels\": label {:?}: {} bytes, more than the limit of {}",
                k.chars().take(64).collect::<String>(),
                k.len().max(v.len()),
                limits.label_size
            )));
        }
    }
    if let Some(m) = &signal.message {
        if m.len() > limits.message {
            return too_long("message", m.len(), limits.message);
        }
    }
    match signal.ts {
        Some(ts) if ts.0 > now.0.saturating_add(limits.max_skew.0) => Err(DecodeError(format!(
            "field \"ts\": {ts} is more than {} ahead of remedy's clock ({now}); \
             check the producer's clock",
            limits.max_skew
        ))),
        _ => Ok(()),
    }
}

/// Signals on their way to the decider, with where to say how it went.
#[derive(Debug)]
pub struct Batch {
    /// The signals, in the order they arrived.
    pub signals: Vec<Signal>,
    /// Answered once the batch's decisions are journaled (how many
    /// signals), or with why they are not yet.
    pub reply: oneshot::Sender<Result<usize, String>>,
}

/// Why a batch was not taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// The decider's queue is full (HTTP answers 429).
    #[error("overloaded: the decision queue is full; retry later")]
    Full,
    /// The service is stopping.
    #[error("shutting down")]
    Closed,
    /// Decided, but the journal write failed: not acknowledged.
    #[error("{0}")]
    NotJournaled(String),
    /// No answer within the wait.
    #[error("the decider did not answer")]
    NoAnswer,
}

/// A handle to the decider's queue; cheap to clone, one per source.
#[derive(Clone, Debug)]
pub struct Intake {
    tx: mpsc::Sender<Batch>,
    limits: Limits,
}

/// How far ahead of the service's clock a signal's `ts` may be
/// (`[limits] max_skew`, contract 13) when none is configured.
pub const MAX_SKEW: Duration = Duration(30_000);

/// `[limits]` (contract 13): what one signal may carry, checked before it
/// reaches the decider, so no input can stall or bloat it; past a limit it
/// is refused naming the field (HTTP 400, dead-lettered from Kafka). And
/// how long a request may take to arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// How far a `ts` may be ahead of the service's clock: no input can move
    /// remedy's clock. Default "30s".
    pub max_skew: Duration,
    /// Longest node name, in bytes. Default 253 (a DNS name).
    pub node_name: usize,
    /// Most labels per signal. Default 64.
    pub labels: usize,
    /// Longest label key or value, in bytes. Default 1024.
    pub label_size: usize,
    /// Longest message, in bytes. Default 8192.
    pub message: usize,
    /// A request's headers, and then its body, must arrive within this.
    /// Default "30s".
    pub request_timeout: Duration,
    /// A node with no open fault and no signal for this long is forgotten
    /// (it leaves its domains' sizes; if it comes back it is new). Default
    /// "7d"; "0s" keeps every node forever.
    pub forget_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_skew: MAX_SKEW,
            node_name: 253,
            labels: 64,
            label_size: 1024,
            message: 8 * 1024,
            request_timeout: Duration(30_000),
            forget_after: Duration(7 * 24 * 3_600_000),
        }
    }
}

impl Intake {
    /// A queue of `capacity` batches: the handle and the decider's end.
    pub fn new(capacity: usize) -> (Intake, mpsc::Receiver<Batch>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Intake {
                tx,
                limits: Limits::default(),
            },
            rx,
        )
    }

    /// The same queue, admitting what `limits` allow.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// What a signal may carry.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether a decoded signal may be taken in now: a `ts` more than
    /// `max_skew` ahead of the service's clock is refused, naming the field
    /// (no input can move remedy's clock; an old `ts` is evidence only).
    pub fn admit(&self, signal: &Signal) -> Result<(), DecodeError> {
        admit(signal, now(), &self.limits)
    }

    /// Whether the queue has no room (a Kafka source then pauses its
    /// partitions rather than hold messages in memory).
    pub fn is_full(&self) -> bool {
        self.tx.capacity() == 0
    }

    /// Waits for room, hands the signals on and waits until they are
    /// journaled: how many were.
    pub async fn deliver(&self, signals: Vec<Signal>) -> Result<usize, IntakeError> {
        if signals.is_empty() {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Batch { signals, reply })
            .await
            .map_err(|_| IntakeError::Closed)?;
        Self::answer(answer).await
    }

    /// Hands the signals on only if there is room now (an HTTP client is
    /// told to come back instead of waiting), then waits up to `wait` for
    /// them to be journaled.
    pub async fn offer(
        &self,
        signals: Vec<Signal>,
        wait: std::time::Duration,
    ) -> Result<usize, IntakeError> {
        if signals.is_empty() {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Batch { signals, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => IntakeError::Full,
                mpsc::error::TrySendError::Closed(_) => IntakeError::Closed,
            })?;
        match tokio::time::timeout(wait, Self::answer(answer)).await {
            Ok(result) => result,
            Err(_) => Err(IntakeError::NoAnswer),
        }
    }

    async fn answer(
        answer: oneshot::Receiver<Result<usize, String>>,
    ) -> Result<usize, IntakeError> {
        match answer.await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(IntakeError::NotJournaled(e)),
            Err(_) => Err(IntakeError::NoAnswer),
        }
    }
}

/// A source's health, as `/readyz` and `/metrics` show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SourceStatus {
    /// Whether the last attempt succeeded.
    pub up: bool,
    /// When it last succeeded (Unix seconds), if ever.
    pub last_success: Option<i64>,
    /// Failed attempts so far.
    pub errors: u64,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// Messages not yet consumed (Kafka: summed over the assigned partitions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// Kafka: the partitions assigned to this instance, as `topic/partition`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<String>>,
}

/// Where sources report what they took in and how they are doing (the
/// service's metrics).
pub trait Report: Send + Sync {
    /// Signals taken in and input rejected, by source kind (`http`,
    /// `alertmanager`, `kafka`, `scrape`, `prometheus`).
    fn received(&self, source: &'static str, accepted: usize, rejected: usize);
    /// One attempt of the source `name`: `Ok(unix seconds)` or why it failed.
    fn collected(&self, name: &str, result: Result<i64, String>);
    /// The whole status of the source `name` (Kafka reports lag and partitions).
    fn status(&self, name: &str, status: SourceStatus);
}

/// A report that keeps nothing (tests, embedding).
#[derive(Debug, Default)]
pub struct NoReport;

impl Report for NoReport {
    fn received(&self, _: &'static str, _: usize, _: usize) {}
    fn collected(&self, _: &str, _: Result<i64, String>) {}
    fn status(&self, _: &str, _: SourceStatus) {}
}

/// A shared report.
pub type Reporter = Arc<dyn Report>;

/// The service's clock, for signals without `ts` and for scrape times.
pub fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_millis())
}

/// The HTTP client pollers and scrapers use (10 s timeout); `None`, logged
/// naming `url`, when none can be built.
pub fn http_client(url: &str) -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(%url, "cannot build an HTTP client: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_engine::Kind;

    #[test]
    fn a_ts_beyond_max_skew_is_refused_naming_the_field_and_an_old_one_is_evidence() {
        let now = Timestamp::from_secs(1_800_000_000);
        let at = |secs: i64| {
            let mut s = Signal::new("n1", Kind::Component, "node.heartbeat");
            s.ts = Some(Timestamp::from_secs(1_800_000_000 + secs));
            s
        };
        let limits = Limits::default();
        assert!(
            admit(&at(30), now, &limits).is_ok(),
            "30s ahead is within the skew"
        );
        let e = admit(&at(31), now, &limits).unwrap_err().0;
        assert!(
            e.starts_with("field \"ts\": ") && e.contains("30s ahead"),
            "{e}"
        );
        assert!(
            admit(&at(-86_400), now, &limits).is_ok(),
            "old: evidence only"
        );
        assert!(admit(&Signal::new("n1", Kind::Component, "x"), now, &limits).is_ok());
        let strict = Limits {
            max_skew: Duration(0),
            ..limits
        };
        assert!(admit(&at(10), now, &strict).is_err());
    }

    #[test]
    fn names_labels_and_messages_past_the_limits_are_refused_naming_the_field() {
        let now = Timestamp::from_secs(1_800_000_000);
        let limits = Limits::default();
        let reason = |s: &Signal| admit(s, now, &limits).unwrap_err().0;
        let mut s = Signal::new("n".repeat(254), Kind::Component, "x");
        assert_eq!(
            reason(&s),
            "field \"node\": 254 bytes, more than the limit of 253"
        );
        s.node = "n1".into();
        for i in 0..65 {
            s.labels.insert(format!("k{i}"), "v");
        }
        assert_eq!(
            reason(&s),
            "field \"labels\": 65 labels, more than the limit of 64"
        );
        s.labels = Default::default();
        s.labels.insert("rack", "r".repeat(1025));
        assert!(reason(&s).starts_with("field \"labels\": label \"rack\": 1025 bytes"));
        s.labels = Default::default();
        s.message = Some("m".repeat(8 * 1024 + 1));
        assert!(reason(&s).starts_with("field \"message\": 8193 bytes"));
        s.message = Some("m".repeat(8 * 1024));
        assert!(admit(&s, now, &limits).is_ok());
    }
}
