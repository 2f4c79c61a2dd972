//! Rate limits with governor, driven by event time.
//!
//! governor reads time through its `Clock` trait; [`EventClock`] answers with
//! the event time the guard chain was last advanced to, so a replay of last
//! night's storm meets exactly the quota refills the live service met.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use remedy_engine::Timestamp;

/// A point in event time, in nanoseconds since the Unix epoch (clamped at 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventInstant(u64);

impl std::ops::Add<Nanos> for EventInstant {
    type Output = Self;
    fn add(self, other: Nanos) -> Self {
        EventInstant(self.0.saturating_add(other.as_u64()))
    }
}

impl Reference for EventInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_sub(earlier.0))
    }
    fn saturating_sub(&self, duration: Nanos) -> Self {
        EventInstant(self.0.saturating_sub(duration.as_u64()))
    }
}

impl EventInstant {
    /// The instant `nanos` after the epoch.
    pub fn of_nanos(nanos: u64) -> Self {
        EventInstant(nanos)
    }

    /// As an event timestamp (milliseconds), rounded up.
    pub fn timestamp(self) -> Timestamp {
        Timestamp(self.0.div_ceil(1_000_000) as i64)
    }
}

/// The event-time clock shared by every limiter of one guard chain.
#[derive(Clone, Debug, Default)]
pub struct EventClock(Arc<AtomicU64>);

impl EventClock {
    /// Moves the clock to `now` (event time never runs backwards here).
    pub fn set(&self, now: Timestamp) {
        self.set_nanos(nanos_of(now));
    }

    /// Moves the clock to `nanos` since the epoch (never backwards).
    pub fn set_nanos(&self, nanos: u64) {
        self.0.fetch_max(nanos, Ordering::Relaxed);
    }

    /// The time it shows, in nanoseconds since the epoch.
    pub fn nanos(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A timestamp in nanoseconds since the epoch (clamped at 0).
pub fn nanos_of(t: Timestamp) -> u64 {
    (t.0.max(0) as u64).saturating_mul(1_000_000)
}

impl Clock for EventClock {
    type Instant = EventInstant;
    fn now(&self) -> EventInstant {
        EventInstant(self.0.load(Ordering::Relaxed))
    }
}

/// A fleet-wide limiter.
pub type Direct = RateLimiter<NotKeyed, InMemoryState, EventClock, NoOpMiddleware<EventInstant>>;
/// A limiter per failure domain (keyed by the label's value).
pub type Keyed =
    RateLimiter<String, HashMapStateStore<String>, EventClock, NoOpMiddleware<EventInstant>>;

/// `20/min`: at most 20 at once, refilled evenly over a minute (governor's
/// burst = the count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// How many per period.
    pub count: NonZeroU32,
    /// The period in seconds.
    pub period_secs: u64,
}

/// Why a rate did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid rate {0:?}: write COUNT/PERIOD with PERIOD one of s, min, hour, day (e.g. 20/min)"
)]
pub struct RateError(pub String);

impl std::str::FromStr for Rate {
    type Err = RateError;
    fn from_str(text: &str) -> Result<Self, RateError> {
        let err = || RateError(text.to_string());
        let (count, period) = text.split_once('/').ok_or_else(err)?;
        let count: u32 = count.trim().parse().map_err(|_| err())?;
        let count = NonZeroU32::new(count).ok_or_else(err)?;
        let period_secs = match period.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(err()),
        };
        Ok(Rate { count, period_secs })
    }
}

impl<'de> serde::Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let period = match self.period_secs {
            1 => "s",
            60 => "min",
            3600 => "hour",
            _ => "day",
        };
        write!(f, "{}/{period}", self.count)
    }
}

impl Rate {
    fn quota(self) -> Quota {
        let per = std::time::Duration::from_secs(self.period_secs) / self.count.get();
        Quota::with_period(per)
            .expect("a positive period")
            .allow_burst(self.count)
    }

    /// Nanoseconds between two refills (governor's emission interval).
    pub fn interval(self) -> u64 {
        (std::time::Duration::from_secs(self.period_secs) / self.count.get()).as_nanos() as u64
    }

    /// Whether a call at `t0` passes a limiter of this rate whose state is
    /// `tat` (its theoretical arrival time, `None` for a full bucket):
    /// governor's own GCRA test, done without taking a token.
    pub fn conforms(self, tat: Option<u64>, t0: u64) -> bool {
        let tau = self.interval() * u64::from(self.count.get() - 1);
        tat.is_none_or(|tat| t0 >= tat.saturating_sub(tau))
    }

    /// The state after a call at `t0` passed (governor's update).
    pub fn passed(self, tat: Option<u64>, t0: u64) -> u64 {
        tat.unwrap_or(t0).max(t0) + self.interval()
    }

    /// Tokens a limiter of this rate in state `tat` still has at `t0`.
    pub fn left(self, tat: Option<u64>, t0: u64) -> u32 {
        let used = tat.map_or(0, |tat| tat.saturating_sub(t0).div_ceil(self.interval()));
        u64::from(self.count.get()).saturating_sub(used) as u32
    }

    /// When the next token comes back to a limiter in state `tat` at `t0`
    /// (nanoseconds; `None`: the bucket is full).
    pub fn refill_at(self, tat: Option<u64>, t0: u64) -> Option<u64> {
        let tat = tat.filter(|&tat| tat > t0)?;
        let used = (tat - t0).div_ceil(self.interval());
        Some(tat - (used - 1) * self.interval())
    }

    /// A fleet-wide limiter on `clock`.
    pub fn direct(self, clock: &EventClock) -> Direct {
        RateLimiter::direct_with_clock(self.quota(), clock.clone())
    }

    /// A per-domain limiter on `clock`.
    pub fn keyed(self, clock: &EventClock) -> Keyed {
        RateLimiter::new(self.quota(), HashMapStateStore::default(), clock.clone())
    }
}

/// When a refused call may pass.
pub fn retry_at(refused: &NotUntil<EventInstant>) -> Timestamp {
    refused.earliest_possible().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_name_the_problem() {
        let r: Rate = "20/min".parse().unwrap();
        assert_eq!((r.count.get(), r.period_secs), (20, 60));
        assert_eq!(r.to_string(), "20/min");
        assert_eq!("2/hour".parse::<Rate>().unwrap().period_secs, 3600);
        let e = "20 per minute".parse::<Rate>().unwrap_err();
        assert!(e.to_string().contains("\"20 per minute\""), "{e}");
        assert!("0/min".parse::<Rate>().is_err());
        assert!("5/fortnight".parse::<Rate>().is_err());
    }

    #[test]
    fn tokens_left_and_the_next_refill_follow_governor() {
        let clock = EventClock::default();
        let t0 = nanos_of(Timestamp(1_000_000));
        clock.set_nanos(t0);
        let r: Rate = "3/min".parse().unwrap();
        let limiter = r.direct(&clock);
        let mut tat = None;
        assert_eq!((r.left(tat, t0), r.refill_at(tat, t0)), (3, None));
        for left in [2, 1, 0] {
            assert!(limiter.check().is_ok());
            tat = Some(r.passed(tat, t0));
            assert_eq!(r.left(tat, t0), left);
            // One token back 20 s after the first was taken.
            assert_eq!(r.refill_at(tat, t0), Some(t0 + 20_000_000_000));
        }
        assert!(limiter.check().is_err());
        assert!(!r.conforms(tat, t0));
        // Governor agrees: a token is back exactly at refill_at.
        let at = r.refill_at(tat, t0).unwrap();
        clock.set_nanos(at - 1);
        assert!(limiter.check().is_err());
        clock.set_nanos(at);
        assert_eq!(r.left(tat, at), 1);
        assert!(limiter.check().is_ok());
    }

    #[test]
    fn the_quota_refills_in_event_time_only() {
        let clock = EventClock::default();
        clock.set(Timestamp(1_000_000));
        let limiter: Direct = "2/min".parse::<Rate>().unwrap().direct(&clock);
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_ok());
        let refused = limiter.check().unwrap_err();
        // one token back every 30 s of event time, however fast we run
        assert_eq!(retry_at(&refused), Timestamp(1_030_000));
        clock.set(Timestamp(1_029_999));
        assert!(limiter.check().is_err());
        clock.set(Timestamp(1_030_000));
        assert!(limiter.check().is_ok());
    }

    proptest::proptest! {
        /// The state kept beside governor predicts exactly what governor
        /// decides, so a quota can be tested without taking a token, and
        /// saved and put back.
        #[test]
        fn the_kept_state_predicts_governor_exactly(
            count in 1u32..6,
            period in proptest::sample::select(vec![1u64, 60, 3600]),
            gaps in proptest::collection::vec(0u64..4_000, 1..200),
        ) {
            let rate = Rate { count: NonZeroU32::new(count).unwrap(), period_secs: period };
            let clock = EventClock::default();
            let limiter = rate.direct(&clock);
            let mut tat = None;
            let mut t = 1_700_000_000_000u64;
            for gap in gaps {
                t += gap * period * 1_000 / 1_000;
                clock.set(Timestamp(t as i64));
                let t0 = clock.nanos();
                let predicted = rate.conforms(tat, t0);
                proptest::prop_assert_eq!(limiter.check().is_ok(), predicted);
                if predicted {
                    tat = Some(rate.passed(tat, t0));
                }
            }
        }
    }
}
