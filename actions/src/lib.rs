//! Carrying out decisions: the guard chain every action passes (silences,
//! approvals, storm budgets, rate limits, circuit breakers, dry-run) and,
//! behind it, the executors. Nothing here knows a rule: it receives action
//! requests from the engine and answers with decisions.

pub mod breaker;
pub mod guards;
pub mod rate;
pub mod silence;

pub use breaker::{Breaker, BreakerConfig};
pub use guards::{
    disruptive, ActionGuards, Budget, Dispatch, DomainSizes, GuardConfig, Guards, LogOnly, Request,
    Trigger,
};
pub use rate::{EventClock, Rate, RateError};
pub use silence::Silence;

use remedy_engine::Duration;
use serde::{Deserialize, Deserializer};

/// Deserialises a duration written as text (`"60s"`, `"2m"`).
pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}
