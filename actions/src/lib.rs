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
    disruptive, restorative, ActionGuards, Budget, Dispatch, DomainSizes, GuardConfig, Guards,
    LogOnly,
};
pub use rate::{EventClock, Rate, RateError};
pub use silence::Silence;
