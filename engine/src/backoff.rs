//! The one retry policy of the project: how long to wait before each next
//! attempt. Every retry loop (HTTP executor, Kafka commands and deliveries,
//! the decisions topic, collectors, Kubernetes 429s) and the circuit
//! breakers' open interval take a [`Backoff`] handed in, instead of each
//! growing its own doubling loop.
//!
//! It is a value, not a timer: [`Backoff::delays`] yields the waits
//! (exponential from `first`, capped at `max`), so the same policy serves
//! the live service (which sleeps them) and event-time code (which adds them
//! to a timestamp), and failsafe's breakers take it as their backoff
//! iterator. No jitter: what two runs of the same input wait is the same.

use crate::time::Duration;

/// Exponential backoff: `first`, then doubling, never above `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// Waits from `first` doubling up to `max` (at least `first`).
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max }
    }

    /// Always the same wait.
    pub const fn constant(wait: Duration) -> Self {
        Backoff {
            first: wait,
            max: wait,
        }
    }

    /// The waits, one per retry, for ever.
    pub fn delays(self) -> Delays {
        Delays {
            next: self.first.0.max(0),
            max: self.max.0.max(self.first.0).max(0),
        }
    }

    /// The wait before retry number `attempt` (0 = the first retry).
    pub fn nth(self, attempt: u32) -> Duration {
        let first = self.first.0.max(0);
        let max = self.max.0.max(first);
        let grown = first.saturating_mul(1i64.checked_shl(attempt.min(62)).unwrap_or(i64::MAX));
        Duration(grown.min(max))
    }

    /// The sum of the first `attempts` waits.
    pub fn total(self, attempts: u32) -> Duration {
        Duration((0..attempts).fold(0i64, |sum, k| sum.saturating_add(self.nth(k).0)))
    }
}

/// The waits of a [`Backoff`], as `std::time::Duration` (what sleeps and
/// failsafe's failure policies take).
#[derive(Clone, Debug)]
pub struct Delays {
    next: i64,
    max: i64,
}

impl Iterator for Delays {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        Some(std::time::Duration::from_millis(wait as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> std::time::Duration {
        std::time::Duration::from_millis(n)
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let b = Backoff::new(Duration(100), Duration(1000));
        let waits: Vec<_> = b.delays().take(6).collect();
        assert_eq!(
            waits,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(b.nth(0), Duration(100));
        assert_eq!(b.nth(3), Duration(800));
        assert_eq!(b.nth(40), Duration(1000), "no overflow far out");
        assert_eq!(b.total(3), Duration(700));
    }

    #[test]
    fn a_constant_backoff_and_a_cap_below_first_wait_the_same() {
        let c = Backoff::constant(Duration(250));
        assert!(c.delays().take(4).all(|d| d == ms(250)));
        let odd = Backoff::new(Duration(300), Duration(100));
        assert_eq!(odd.delays().take(2).collect::<Vec<_>>(), [ms(300), ms(300)]);
    }
}
