//! Carrying out decisions: the guard chain every action passes (silences,
//! approvals, storm budgets, rate limits, circuit breakers, dry-run) and,
//! behind it, the executors. Nothing here knows a rule: it receives action
//! requests from the engine and answers with decisions.

pub mod breaker;
pub mod executors;
pub mod guards;
pub mod publish;
pub mod rate;
pub mod silence;

pub use breaker::{Breaker, BreakerConfig};
pub use executors::{ExecError, Executor, Executors, Spec};
pub use guards::{
    disruptive, restorative, ActionGuards, Budget, DomainSizes, GuardConfig, Guards, Job,
};
pub use rate::{EventClock, Rate, RateError};
pub use silence::Silence;
