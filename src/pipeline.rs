//! Engine and guard chain together: what `replay` runs and what the service
//! will run. The engine says which faults open and which actions they want;
//! the guard chain decides what becomes of each action. Both run on the
//! signal's event time.

use remedy_actions::{DomainSizes, Guards};
use remedy_engine::{Decision, Engine, Output, Signal, Step, Timestamp};

/// Known nodes per failure domain, from the engine's fleet.
struct Known<'a>(&'a remedy_engine::fleet::Fleet);

impl DomainSizes for Known<'_> {
    fn known(&self, label: &str, value: &str) -> usize {
        self.0.known_in(label, value)
    }
}

/// The engine and its guard chain.
#[derive(Debug)]
pub struct Pipeline {
    /// Rules, fleet state, lifecycle.
    pub engine: Engine,
    /// Budgets, limits, breakers, silences, approvals.
    pub guards: Guards,
}

impl Pipeline {
    /// Joins an engine and a guard chain.
    pub fn new(engine: Engine, guards: Guards) -> Self {
        Pipeline { engine, guards }
    }

    /// Processes one signal at `now` (its `ts` if it has one). Rule errors and
    /// prints are left in `step`; every decision, in order, goes to `out`.
    pub fn on_signal(
        &mut self,
        signal: Signal,
        now: Timestamp,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) {
        let at = signal.ts.unwrap_or(now);
        self.engine.on_signal_into(signal, now, step);
        let Pipeline { engine, guards } = self;
        engine.with_fleet(|fleet| {
            let known = Known(fleet);
            // Held-back actions whose guard freed by now go before new ones.
            guards.tick(at, &known, out);
            for o in step.out.drain(..) {
                match o {
                    Output::Decision(d) => out.push(d),
                    Output::Released {
                        node,
                        fault,
                        on_resolve,
                    } => guards.resolved(&node, &fault, on_resolve, at),
                    Output::Act(intent) => {
                        let when = intent.at;
                        guards.submit(intent, when, &known, out);
                    }
                }
            }
            // A node this signal released lets held actions go at once.
            guards.tick(at, &known, out);
        });
    }
}
