//! Handling signals a few behind their arrival, so that the node state each
//! will read is already on its way into the cache when its turn comes.
//!
//! A fleet of 100k nodes keeps megabytes of state; a signal touches its
//! node's index slot and state, and each is a cache miss that the CPU would
//! otherwise wait out one signal at a time. Callers that read ahead (replay
//! of a file, a batch from Kafka or HTTP) push items through a [`Lookahead`]:
//! every item comes back out in the order it went in, [`Lookahead::DEPTH`]
//! items later, and meanwhile the engine was told which nodes are coming.
//! Nothing is decided differently; only when memory is loaded changes.

use std::collections::VecDeque;

use crate::lifecycle::Engine;
use crate::signal::Signal;

/// Items in flight between arrival and their turn, in arrival order.
#[derive(Debug)]
pub struct Lookahead<T> {
    queue: VecDeque<T>,
}

impl<T> Default for Lookahead<T> {
    fn default() -> Self {
        Lookahead {
            queue: VecDeque::with_capacity(Self::DEPTH + 1),
        }
    }
}

impl<T> Lookahead<T> {
    /// How many items wait before their turn: enough to overlap several
    /// cache misses, few enough that their memory stays loaded until used.
    pub const DEPTH: usize = 8;

    /// Queues `item` (whose signal, if any, `signal` finds) and returns the
    /// item whose turn it now is, once the queue is full.
    pub fn push(
        &mut self,
        engine: &Engine,
        item: T,
        signal: impl Fn(&T) -> Option<&Signal>,
    ) -> Option<T> {
        if let Some(s) = signal(&item) {
            engine.prefetch_index(s);
        }
        self.queue.push_back(item);
        // Halfway through the queue, the index slot has arrived: ask for the state.
        if let Some(s) = self
            .queue
            .len()
            .checked_sub(Self::DEPTH / 2 + 1)
            .and_then(|i| self.queue.get(i))
            .and_then(&signal)
        {
            engine.prefetch_state(s);
        }
        if self.queue.len() > Self::DEPTH {
            self.queue.pop_front()
        } else {
            None
        }
    }

    /// The next waiting item, at the end of the input.
    pub fn pop(&mut self) -> Option<T> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, Options, Policies};

    #[test]
    fn items_come_out_in_arrival_order_depth_items_later() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("none.rhai"), "fn classify(s) { () }").expect("rule");
        let mut engine = Engine::load(dir.path(), Policies::default(), &Options::default())
            .expect("rule compiles");
        // Half the nodes are known (their state is prefetched), half are new.
        for i in 0..10 {
            engine.on_signal(
                Signal::new(format!("n{i}"), Kind::Hardware, "t"),
                Default::default(),
            );
        }
        let mut ahead = Lookahead::default();
        let mut out = Vec::new();
        for i in 0..20_u32 {
            let item = (
                i,
                (i % 3 != 0).then(|| Signal::new(format!("n{i}"), Kind::Hardware, "t")),
            );
            if let Some((n, _)) = ahead.push(&engine, item, |(_, s)| s.as_ref()) {
                out.push(n);
            }
            assert_eq!(
                out.len(),
                (i as usize + 1).saturating_sub(Lookahead::<()>::DEPTH)
            );
        }
        while let Some((n, _)) = ahead.pop() {
            out.push(n);
        }
        assert_eq!(out, (0..20).collect::<Vec<_>>());
    }
}
