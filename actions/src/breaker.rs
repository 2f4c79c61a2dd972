//! A failsafe circuit breaker per executor instance (`[actions.NAME]`).
//!
//! failsafe's [`StateMachine`] holds the state (closed, open, half-open);
//! remedy gives it its failure policy ("`failures` within `window` open
//! the breaker", [`WindowPolicy`]) and the backoff for the open interval
//! (from `cooldown`, doubling up to `max_cooldown` while trials keep
//! failing), and watches its transitions to know until when it is open and
//! to let one trial at a time through while half-open.
//!
//! Time is failsafe's clock: the service's own clock (`replay` and dry-run
//! never call an executor, so their breakers never open). Tests freeze and
//! advance it with `failsafe::clock::freeze`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use failsafe::{clock, FailurePolicy, Instrument, StateMachine};
use remedy_engine::{Backoff, Duration};
use serde::Deserialize;

/// `breaker = { failures = 5, window = "60s", cooldown = "120s" }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failures within `window` that open the breaker. Default 5.
    pub failures: u32,
    /// The window failures are counted in. Default 60s.
    pub window: Duration,
    /// How long it stays open before one trial call is let through.
    /// Default 120s.
    pub cooldown: Duration,
    /// While trials keep failing, the open interval doubles up to this.
    /// Default: `cooldown` (always the same interval).
    pub max_cooldown: Option<Duration>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(120),
            max_cooldown: None,
        }
    }
}

impl BreakerConfig {
    /// The backoff of the open interval.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.cooldown, self.max_cooldown.unwrap_or(self.cooldown))
    }
}

/// What the breaker's watchers share: where failsafe's state machine is.
#[derive(Debug, Default)]
struct Phase {
    /// Open until then (set on `on_open`).
    open_until: Option<Instant>,
    /// Half-open: trial calls may go.
    half_open: bool,
    /// A half-open trial is out and has not reported.
    trial: bool,
    /// The open interval the policy chose last.
    delay: std::time::Duration,
}

fn lock(phase: &Mutex<Phase>) -> MutexGuard<'_, Phase> {
    phase.lock().unwrap_or_else(|e| e.into_inner())
}

/// failsafe's failure policy: `failures` within `window` mark the executor
/// dead, for the next wait of the open-interval backoff; a failed trial
/// while half-open does so at once.
pub struct WindowPolicy {
    failures: u32,
    window: std::time::Duration,
    backoff: Backoff,
    delays: remedy_engine::backoff::Delays,
    recent: VecDeque<Instant>,
    phase: Arc<Mutex<Phase>>,
}

impl FailurePolicy for WindowPolicy {
    fn record_success(&mut self) {}

    fn mark_dead_on_failure(&mut self) -> Option<std::time::Duration> {
        let now = clock::now();
        let mut phase = lock(&self.phase);
        if !phase.half_open {
            self.recent.push_back(now);
            while self
                .recent
                .front()
                .is_some_and(|&t| now.duration_since(t) >= self.window)
            {
                self.recent.pop_front();
            }
            if self.recent.len() < self.failures.max(1) as usize {
                return None;
            }
        }
        self.recent.clear();
        let delay = self.delays.next().unwrap_or_default();
        phase.delay = delay;
        Some(delay)
    }

    fn revived(&mut self) {
        self.recent.clear();
        self.delays = self.backoff.delays();
    }
}

/// failsafe's instrument: records the transitions in the shared [`Phase`].
pub struct Watch {
    phase: Arc<Mutex<Phase>>,
}

impl Instrument for Watch {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        let mut phase = lock(&self.phase);
        phase.open_until = Some(clock::now() + phase.delay);
        phase.half_open = false;
        phase.trial = false;
    }

    fn on_half_open(&self) {
        let mut phase = lock(&self.phase);
        phase.half_open = true;
        phase.open_until = None;
    }

    fn on_closed(&self) {
        let mut phase = lock(&self.phase);
        *phase = Phase {
            delay: phase.delay,
            ..Phase::default()
        };
    }
}

/// One executor instance's breaker.
pub struct Breaker {
    machine: StateMachine<WindowPolicy, Watch>,
    phase: Arc<Mutex<Phase>>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("phase", &*lock(&self.phase))
            .finish()
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let phase = Arc::new(Mutex::new(Phase::default()));
        let backoff = config.backoff();
        let policy = WindowPolicy {
            failures: config.failures,
            window: std::time::Duration::from_millis(config.window.0.max(0) as u64),
            backoff,
            delays: backoff.delays(),
            recent: VecDeque::new(),
            phase: phase.clone(),
        };
        let machine = StateMachine::new(
            policy,
            Watch {
                phase: phase.clone(),
            },
        );
        Breaker { machine, phase }
    }

    /// May a call go through now? `Err` says how long until it may be
    /// tried again. While half-open, one trial at a time.
    pub fn permit(&self) -> Result<(), std::time::Duration> {
        {
            let phase = lock(&self.phase);
            if phase.half_open && phase.trial {
                // The next may follow as soon as the trial reports.
                return Err(std::time::Duration::from_millis(1));
            }
        }
        if self.machine.is_call_permitted() {
            let mut phase = lock(&self.phase);
            if phase.half_open {
                phase.trial = true;
            }
            return Ok(());
        }
        let until = lock(&self.phase).open_until;
        let left = until.map_or(std::time::Duration::from_millis(1), |u| {
            u.saturating_duration_since(clock::now())
                .max(std::time::Duration::from_millis(1))
        });
        Err(left)
    }

    /// The call succeeded.
    pub fn success(&self) {
        self.machine.on_success();
        lock(&self.phase).trial = false;
    }

    /// The call failed.
    pub fn failure(&self) {
        self.machine.on_error();
        lock(&self.phase).trial = false;
    }

    /// `closed`, `half_open` (one trial at a time) or `open`, for a
    /// decision's `why`.
    pub fn state(&self) -> &'static str {
        let phase = lock(&self.phase);
        if phase.half_open {
            "half_open"
        } else if phase.open_until.is_some_and(|u| clock::now() < u) {
            "open"
        } else {
            "closed"
        }
    }

    /// How long it stays open this time (since when it is open is its
    /// `until` less this).
    pub fn open_interval(&self) -> std::time::Duration {
        lock(&self.phase).delay
    }

    /// Whether it refuses calls now (for metrics and reasons).
    pub fn is_open(&self) -> bool {
        lock(&self.phase)
            .open_until
            .is_some_and(|u| clock::now() < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> std::time::Duration {
        std::time::Duration::from_secs(n)
    }

    #[test]
    fn opens_after_failures_within_the_window_then_half_opens_after_cooldown() {
        clock::freeze(|time| {
            let b = Breaker::new(BreakerConfig {
                failures: 3,
                window: Duration::from_secs(60),
                cooldown: Duration::from_secs(120),
                max_cooldown: None,
            });
            b.failure();
            time.advance(secs(30));
            b.failure();
            time.advance(secs(31));
            b.failure(); // the first has left the window
            time.advance(secs(1));
            assert_eq!(b.permit(), Ok(()));
            b.failure();
            time.advance(secs(1));
            assert_eq!(b.permit(), Err(secs(119)));
            assert!(b.is_open());
            // half-open: one trial; it fails, so open again for a cooldown
            time.advance(secs(120));
            assert_eq!(b.permit(), Ok(()));
            assert!(b.permit().is_err(), "one trial at a time");
            time.advance(secs(1));
            b.failure();
            time.advance(secs(1));
            assert_eq!(b.permit(), Err(secs(119)));
            // the next trial succeeds: closed
            time.advance(secs(120));
            assert_eq!(b.permit(), Ok(()));
            b.success();
            assert_eq!(b.permit(), Ok(()));
            assert!(!b.is_open());
        });
    }

    #[test]
    fn failing_trials_stretch_the_open_interval_up_to_max_cooldown() {
        clock::freeze(|time| {
            let b = Breaker::new(BreakerConfig {
                failures: 1,
                window: Duration::from_secs(60),
                cooldown: Duration::from_secs(10),
                max_cooldown: Some(Duration::from_secs(25)),
            });
            let mut opened_for = Vec::new();
            for _ in 0..4 {
                b.failure();
                let left = b.permit().unwrap_err();
                opened_for.push(left.as_secs());
                time.advance(left + secs(1));
                assert_eq!(b.permit(), Ok(()), "half-open after the interval");
            }
            assert_eq!(opened_for, [10, 20, 25, 25]);
            b.success();
            b.failure();
            assert_eq!(b.permit(), Err(secs(10)), "closed again: back to cooldown");
        });
    }
}
