//! Event-time order across Kafka partitions (contract 9): signals keyed by
//! node land on different partitions, which are consumed at different
//! paces (a backlog after a restart most of all). Rules that look across
//! nodes (how many nodes of a rack lost power within 5 minutes) must see
//! them in event-time order, as `replay` of the same history does.
//!
//! Signals wait here until every assigned partition that is still
//! delivering has reached their time (a watermark over the partitions),
//! or until they waited `max_lateness` of the service's clock; then the
//! partitions' queues go out merged in event-time order, each partition in
//! its own order (so what it released is always a prefix). A partition
//! silent for `max_lateness`, or read to its end, holds nothing back.
//! Offsets are committed up to the first signal still waiting in each
//! partition: a restart loses none, and a rebalance hands the new owner
//! only what this instance did not decide.

use std::collections::{BTreeMap, VecDeque};

use remedy_engine::{Duration, Timestamp};

use crate::kafka::Received;

/// Most signals kept waiting: beyond it the oldest go out at once (memory
/// stays bounded whatever the partitions' paces).
pub const MAX_WAITING: usize = 200_000;

/// A partition: (topic, partition).
pub type PartitionKey = (String, i32);

#[derive(Debug, Default)]
struct Partition {
    /// The assignment generation it is read under.
    generation: u64,
    /// The latest event time read from it.
    high: Option<Timestamp>,
    /// When it last delivered (or was assigned), on the service's clock.
    heard: Timestamp,
    /// The offset after the last one read.
    next: Option<i64>,
    /// Its signals still waiting, in offset order (a partition's own order
    /// is kept: what goes out of it is always a prefix, so its offsets can
    /// be committed right behind what was decided).
    waiting: VecDeque<Waiting>,
    /// Read to its end (nothing more to wait for until it delivers again).
    at_end: bool,
}

#[derive(Debug)]
struct Waiting {
    received: Received,
    ts: Timestamp,
    arrived: Timestamp,
}

/// The reorder buffer of one Kafka source.
#[derive(Debug)]
pub struct Reorder {
    lateness: Duration,
    parts: BTreeMap<PartitionKey, Partition>,
    waiting: usize,
}

impl Reorder {
    /// Signals wait at most `max_lateness` for the other partitions.
    pub fn new(max_lateness: Duration) -> Self {
        Reorder {
            lateness: max_lateness,
            parts: BTreeMap::new(),
            waiting: 0,
        }
    }

    /// Signals waiting.
    pub fn len(&self) -> usize {
        self.waiting
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    /// The partitions assigned now, each with its generation: a new one is
    /// waited for (up to `max_lateness`); one revoked or assigned again
    /// drops what it had waiting (its owner reads those messages again).
    pub fn assigned(&mut self, now: &[(PartitionKey, u64)], at: Timestamp) {
        let current: BTreeMap<&PartitionKey, u64> = now.iter().map(|(k, g)| (k, *g)).collect();
        let stale: Vec<PartitionKey> = self
            .parts
            .iter()
            .filter(|(k, p)| current.get(k) != Some(&p.generation))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(part) = self.parts.remove(&key) {
                self.waiting -= part.waiting.len();
            }
        }
        for (key, generation) in now {
            self.parts.entry(key.clone()).or_insert_with(|| Partition {
                generation: *generation,
                heard: at,
                ..Partition::default()
            });
        }
    }

    /// A message was read at `offset` (a signal or a dead letter).
    pub fn read(&mut self, key: &PartitionKey, generation: u64, offset: i64, at: Timestamp) {
        let part = self.parts.entry(key.clone()).or_default();
        if part.generation != generation {
            self.waiting -= part.waiting.len();
            *part = Partition {
                generation,
                ..Partition::default()
            };
        }
        part.heard = at;
        part.at_end = false;
        part.next = Some(part.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Partition number `partition` (of any topic) was read to its end: it
    /// holds nothing back until it delivers again.
    pub fn at_end(&mut self, partition: i32) {
        for ((_, p), part) in &mut self.parts {
            if *p == partition {
                part.at_end = true;
            }
        }
    }

    /// A signal read under `generation` waits for its turn (its `ts` is its
    /// event time; one without waits with the time it was read).
    pub fn push(&mut self, received: Received, generation: u64, at: Timestamp) {
        let key = (received.topic.clone(), received.partition);
        self.read(&key, generation, received.offset, at);
        let ts = received.signal.ts.unwrap_or(at);
        let part = self.parts.get_mut(&key).expect("just read");
        part.high = Some(part.high.map_or(ts, |h| h.max(ts)));
        part.waiting.push_back(Waiting {
            received,
            ts,
            arrived: at,
        });
        self.waiting += 1;
    }

    /// The event time every partition still delivering has reached.
    fn watermark(&self, at: Timestamp) -> Timestamp {
        self.parts
            .values()
            .filter(|p| !p.at_end && at.0 - p.heard.0 < self.lateness.0)
            .map(|p| p.high.unwrap_or(Timestamp(i64::MIN)))
            .min()
            .unwrap_or(Timestamp(i64::MAX))
    }

    /// The signals whose turn has come at `at`: the partitions' queues
    /// merged in event-time order, each kept in its own order.
    pub fn release(&mut self, at: Timestamp) -> Vec<Received> {
        let watermark = self.watermark(at);
        let mut out = Vec::new();
        loop {
            let next = self
                .parts
                .values_mut()
                .filter_map(|p| p.waiting.front().map(|w| (w.ts, w.arrived)).zip(Some(p)))
                .min_by_key(|((ts, _), _)| *ts);
            let Some(((ts, arrived), part)) = next else {
                break;
            };
            let waited_enough = at.0 - arrived.0 >= self.lateness.0;
            if ts > watermark && !waited_enough && self.waiting <= MAX_WAITING {
                break;
            }
            let w = part.waiting.pop_front().expect("a head");
            self.waiting -= 1;
            out.push(w.received);
        }
        out
    }

    /// Per partition, the offset to commit once what was released is
    /// journaled: (topic, partition, generation, offset) — the first signal
    /// still waiting, or the offset after the last one read.
    pub fn commits(&self) -> Vec<(String, i32, u64, i64)> {
        self.parts
            .iter()
            .filter_map(|((topic, partition), p)| {
                let next = p.waiting.front().map(|w| w.received.offset).or(p.next)?;
                Some((topic.clone(), *partition, p.generation, next))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use remedy_engine::{Kind, Signal};

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp(1_800_000_000_000 + secs * 1000)
    }

    fn received(partition: i32, offset: i64, ts: i64) -> Received {
        let mut signal = Signal::new(
            format!("n{partition}-{offset}"),
            Kind::Hardware,
            "power.lost",
        );
        signal.ts = Some(at(ts));
        Received {
            signal,
            topic: "signals".into(),
            partition,
            offset,
            timestamp: None,
        }
    }

    fn key(p: i32) -> PartitionKey {
        ("signals".to_string(), p)
    }

    #[test]
    fn a_backlog_read_partition_by_partition_comes_out_in_event_time_order() {
        let mut r = Reorder::new(Duration::from_secs(5));
        let assigned = [(key(0), 1), (key(1), 1), (key(2), 1)];
        r.assigned(&assigned, at(100));
        // Partition 0's whole backlog first: nothing goes before 1 and 2 are heard.
        for (offset, ts) in [(0, 0), (1, 10), (2, 20)] {
            r.push(received(0, offset, ts), 1, at(100));
        }
        assert!(r.release(at(100)).is_empty());
        for (offset, ts) in [(0, 5), (1, 15)] {
            r.push(received(1, offset, ts), 1, at(101));
        }
        r.push(received(2, 0, 12), 1, at(101));
        let order: Vec<i64> = r
            .release(at(101))
            .iter()
            .map(|x| (x.signal.ts.unwrap().0 - at(0).0) / 1000)
            .collect();
        assert_eq!(order, [0, 5, 10, 12], "up to the slowest partition's time");
        assert_eq!(
            r.commits(),
            [
                ("signals".into(), 0, 1, 2),
                ("signals".into(), 1, 1, 1),
                ("signals".into(), 2, 1, 1)
            ],
            "each partition commits up to its first waiting signal"
        );
        // Partitions 1 and 2 fall silent: after max_lateness the rest goes, in order.
        let order: Vec<i64> = r
            .release(at(107))
            .iter()
            .map(|x| (x.signal.ts.unwrap().0 - at(0).0) / 1000)
            .collect();
        assert_eq!(order, [15, 20]);
        assert!(r.is_empty());
        assert_eq!(r.commits()[0], ("signals".into(), 0, 1, 3));
    }

    #[test]
    fn a_partition_read_to_its_end_holds_nothing_back() {
        let mut r = Reorder::new(Duration::from_secs(5));
        r.assigned(&[(key(0), 1), (key(1), 1)], at(0));
        r.push(received(0, 0, 10), 1, at(0));
        r.push(received(1, 0, 3), 1, at(0));
        assert_eq!(
            r.release(at(0)).len(),
            1,
            "partition 1 may still bring older ones"
        );
        r.at_end(1);
        assert_eq!(r.release(at(0)).len(), 1, "it has nothing more: no wait");
    }

    #[test]
    fn a_revoked_partition_drops_what_it_had_waiting() {
        let mut r = Reorder::new(Duration::from_secs(5));
        r.assigned(&[(key(0), 1), (key(1), 1)], at(0));
        r.push(received(0, 7, 1), 1, at(0));
        r.push(received(1, 3, 2), 1, at(0));
        r.assigned(&[(key(0), 1)], at(1));
        let out = r.release(at(1));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].partition, 0);
        assert_eq!(r.commits(), [("signals".into(), 0, 1, 8)]);
    }
}
