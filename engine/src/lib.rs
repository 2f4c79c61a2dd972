//! remedy's engine: the domain types (signal, fault, decision), the sandboxed
//! Rhai rule runtime and the fault lifecycle.
//!
//! The engine knows no transport and reads no clock: collectors hand it
//! decoded [`Signal`]s with an event time, and it answers with [`Decision`]s
//! for the actions side to carry out. That is what makes `remedy replay`
//! deterministic and lets tests drive the exact code the service runs.

#![warn(missing_docs)]

pub mod backoff;
pub mod correlate;
pub mod decision;
pub mod desired;
pub mod efficacy;
pub mod fleet;
pub mod identity;
pub mod lifecycle;
pub mod lookahead;
pub mod policy;
pub mod rules;
pub mod signal;
pub mod time;

pub use backoff::Backoff;
pub use correlate::Correlation;
pub use decision::{Decision, Event, Intent, Met, Outcome, Severity, Trigger, Why};
pub use desired::Observed;
pub use lifecycle::{Engine, Options, Output, Step};
pub use lookahead::Lookahead;
pub use policy::{Escalation, Flap, MaxAttempts, Policies, Policy};
pub use rules::{Classification, Gate, LoadError, Problem, RuleError, RuleSet, Sandbox, Sources};
pub use signal::{DecodeError, Kind, Labels, Report, Signal};
pub use time::{Duration, Timestamp};
