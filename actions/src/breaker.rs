//! A circuit breaker per executor, in event time.
//!
//! The model is failsafe's (closed, open for a cooldown, then half-open with
//! one trial call). failsafe itself reads the wall clock (`Instant::now`), so
//! a replay could not reproduce when a breaker opened or closed; this small
//! state machine takes the event time instead and keeps the same behaviour
//! behind one type, so executors do not depend on either.

use std::collections::VecDeque;

use remedy_engine::{Duration, Timestamp};
use serde::Deserialize;

/// `breaker = { failures = 5, window = "60s", cooldown = "120s" }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failures within `window` that open the breaker.
    pub failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// How long it stays open before one trial call is let through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(120),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Timestamp },
    HalfOpen { trial: bool },
}

/// One executor's breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    failures: VecDeque<Timestamp>,
    state: State,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            failures: VecDeque::new(),
            state: State::Closed,
        }
    }

    /// May a call go through at `now`? Err holds when it may be tried again.
    pub fn permit(&mut self, now: Timestamp) -> Result<(), Timestamp> {
        match self.state {
            State::Closed => Ok(()),
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { trial: true };
                Ok(())
            }
            State::Open { until } => Err(until),
            State::HalfOpen { trial: false } => {
                self.state = State::HalfOpen { trial: true };
                Ok(())
            }
            // One trial at a time; the next may follow as soon as it reports.
            State::HalfOpen { trial: true } => Err(now.add(Duration(1))),
        }
    }

    /// The call succeeded.
    pub fn success(&mut self) {
        if matches!(self.state, State::HalfOpen { .. }) {
            self.state = State::Closed;
            self.failures.clear();
        }
    }

    /// The call failed at `now`.
    pub fn failure(&mut self, now: Timestamp) {
        if matches!(self.state, State::HalfOpen { .. }) {
            self.state = State::Open {
                until: now.add(self.config.cooldown),
            };
            return;
        }
        self.failures.push_back(now);
        let since = Timestamp(now.0 - self.config.window.0);
        while self.failures.front().is_some_and(|&t| t <= since) {
            self.failures.pop_front();
        }
        if self.failures.len() >= self.config.failures.max(1) as usize {
            self.failures.clear();
            self.state = State::Open {
                until: now.add(self.config.cooldown),
            };
        }
    }

    /// Whether it refuses calls at `now` (for metrics and reasons).
    pub fn is_open(&self, now: Timestamp) -> bool {
        matches!(self.state, State::Open { until } if now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp(secs * 1000)
    }

    #[test]
    fn opens_after_failures_within_the_window_then_half_opens_after_cooldown() {
        let mut b = Breaker::new(BreakerConfig {
            failures: 3,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(120),
        });
        b.failure(t(0));
        b.failure(t(30));
        b.failure(t(61)); // the first has left the window
        assert_eq!(b.permit(t(62)), Ok(()));
        b.failure(t(62));
        assert_eq!(b.permit(t(63)), Err(t(182)));
        assert!(b.is_open(t(100)));
        // half-open: one trial; it fails, so open again for a cooldown
        assert_eq!(b.permit(t(182)), Ok(()));
        assert!(b.permit(t(182)).is_err());
        b.failure(t(183));
        assert_eq!(b.permit(t(184)), Err(t(303)));
        // the next trial succeeds: closed
        assert_eq!(b.permit(t(303)), Ok(()));
        b.success();
        assert_eq!(b.permit(t(304)), Ok(()));
        assert!(!b.is_open(t(304)));
    }
}
