//! Carrying out decisions: the guard chain every action passes (silences,
//! approvals, storm budgets, rate limits, circuit breakers, dry-run) and,
//! behind it, the executors. Nothing here knows a rule: it receives action
//! requests from the engine and answers with decisions.

#![warn(missing_docs)]

pub mod breaker;
pub mod executor;
pub mod executors;
pub mod guards;
pub mod publish;
pub mod rate;
pub mod silence;

pub use breaker::{Breaker, BreakerConfig};
pub use executor::{ExecError, Executor, Job};
pub use executors::{ExecutorConfig, ExecutorKind, Executors, Spec};
pub use guards::{
    ActionGuards, ActionKind, Budget, DomainSizes, Finished, GuardConfig, Guards, Level, BUILT_IN,
    RETRY, RETRY_FOR,
};
pub use rate::{EventClock, Rate, RateError};
pub use silence::Silence;
