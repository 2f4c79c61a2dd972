//! Executors: what carries out an action a decision asks for. Each executor
//! is one module with its own `Config`, knows no rule, and reports an
//! [`Outcome`](remedy_engine::Outcome). Until executors are wired into the
//! service, every action is reported as `dry_run` by the engine.
