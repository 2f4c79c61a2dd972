//! The `remedy` command: configuration and the subcommands that drive the
//! engine (`check`, `test`, `replay`). `main.rs` only parses arguments and
//! maps results to exit codes.

pub mod config;
pub mod diff;
pub mod efficacy;
pub mod explain;
pub mod pipeline;
pub mod replay;
pub mod rollout;
pub mod ruletest;
pub mod service;
pub mod simulate;
pub mod synth;
