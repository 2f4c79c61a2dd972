//! Decisions: what remedy concluded and did (contract section 4). Every
//! output of the engine is one of these, so replay, the journal, the HTTP API
//! and the decisions topic all speak the same JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// How bad a fault is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing, no harm yet.
    Info,
    /// Degraded: act before it gets worse.
    Warning,
    /// Failed: act now.
    Critical,
}

impl Severity {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses the contract's name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of decision this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A fault opened on a node.
    FaultOpened,
    /// A fault on a node cleared.
    FaultResolved,
    /// A condition fault was neither re-asserted nor resolved within its
    /// `stale_after`: its evidence is old, disruptive actions for it wait.
    FaultStale,
    /// A fault still open `verify` after its last action: that action did
    /// not fix it, the next rung is asked for at once.
    FaultUnverified,
    /// An action was attempted, held back or refused.
    Action,
    /// A node moved one step towards its final state (contract 10).
    Step,
}

impl Event {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::FaultOpened => "fault_opened",
            Event::FaultResolved => "fault_resolved",
            Event::FaultStale => "fault_stale",
            Event::FaultUnverified => "fault_unverified",
            Event::Action => "action",
            Event::Step => "step",
        }
    }
}

/// What became of an action. The serde names are the contract's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The executor did it.
    Executed,
    /// Would have been done; dry-run is on.
    DryRun,
    /// The executor tried and failed.
    Failed,
    /// A rate limit held it.
    RateLimited,
    /// Storm protection held it: too much of the domain is under remediation.
    BudgetExhausted,
    /// The executor's circuit breaker is open.
    CircuitOpen,
    /// A silence matched.
    Silenced,
    /// Waits for an operator's approval.
    AwaitingApproval,
    /// An operator rejected it, or it cannot be carried out.
    Rejected,
    /// The fault came back more often than `max_attempts` allows: a person
    /// takes over (the policy's `then` actions) instead of another cycle.
    AttemptsExhausted,
    /// A common cause (`[[correlate]]`) is open in the node's domain: the
    /// per-node repair waits until it resolves or an operator releases it.
    HeldCommonCause,
    /// The efficacy ledger shows this rung rarely fixes the fault (policy
    /// `demote`): it is skipped for the next rung.
    Demoted,
}

impl Outcome {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Executed => "executed",
            Outcome::DryRun => "dry_run",
            Outcome::Failed => "failed",
            Outcome::RateLimited => "rate_limited",
            Outcome::BudgetExhausted => "budget_exhausted",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::Silenced => "silenced",
            Outcome::AwaitingApproval => "awaiting_approval",
            Outcome::Rejected => "rejected",
            Outcome::AttemptsExhausted => "attempts_exhausted",
            Outcome::HeldCommonCause => "held_common_cause",
            Outcome::Demoted => "demoted",
        }
    }
}

/// One line of output. Optional fields are omitted when empty, so a line
/// carries only what its event needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Event time of the decision.
    pub ts: Timestamp,
    /// Opened, resolved or action.
    pub event: Event,
    /// The node concerned.
    pub node: String,
    /// The fault class concerned.
    pub fault: String,
    /// Severity, on `fault_opened`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The rule that classified the fault, on `fault_opened`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The action's name, on `action`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// What became of the action, on `action`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Why: the rule's reason on `fault_opened`; why an action was not done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On `fault_opened`: the fault keeps opening and resolving; it is now
    /// held open (no recovery actions) until it has been quiet for the flap window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flapping: bool,
    /// On an `executed` action: a summary of the executor's response (the
    /// API's answer, the ticket id, the command's acknowledgement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the action will be tried again: a `failed` one (transient
    /// error), or one held by a quota (`rate_limited`) or an open breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// A domain fault (`[[correlate]]`): the failure domain it is about,
    /// e.g. `{"rack": "r12"}`; `node` is then the domain's key (`rack=r12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<std::collections::BTreeMap<String, String>>,
    /// On `action`: the rule and policy rung that asked for it and every
    /// guard it met, with its numbers (contract 11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<Box<Why>>,
    /// On `action`: what it is to do beyond its name (an upgrade's
    /// `component` and `version`, the `gates` a cordon is for).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// On `step`: which (contract 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepKind>,
}

/// Why an action was asked for and what it met on the way: on every
/// `action` decision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Why {
    /// The rule that opened the fault (its file name under the rules
    /// directory), or `correlate LABEL` for a common cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The first 12 hex digits of the SHA-256 of the rule's file, as
    /// `sha256sum` prints it: which version of the rule it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_hash: Option<String>,
    /// The policy rung that asked for it: `actions` (on open),
    /// `escalate[N] after D`, `verify` (the last action did not help),
    /// `on_resolve`, `max_attempts` (the `then` actions).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rung: String,
    /// Every guard the action met, in the order it met them, with its
    /// numbers; the last one of a held action is the one that holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<Met>,
}

/// One guard an action met, with its numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "guard", rename_all = "snake_case")]
pub enum Met {
    /// A failure domain's budget (`[[guards.levels]]`).
    Budget {
        /// The level and its domain, e.g. `rack r12`.
        level: String,
        /// Nodes of the domain under remediation.
        under: usize,
        /// Known nodes of the domain.
        known: usize,
        /// How many `max_unhealthy` allows there (absent: no such budget).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allows: Option<usize>,
        /// Disruptive jobs in flight in the domain, with `max_in_flight`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_flight: Option<usize>,
        /// `max_in_flight`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_in_flight: Option<u32>,
        /// It fit.
        pass: bool,
    },
    /// A quota (`rate`, `per`, or a level's `rate`).
    Quota {
        /// Which quota, e.g. `cordon fleet-wide`.
        quota: String,
        /// Its rate, e.g. `10/1h`.
        rate: String,
        /// Tokens left after this action.
        left: u32,
        /// When the next token comes back (absent: the bucket is full).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refill_at: Option<Timestamp>,
        /// A token was taken.
        pass: bool,
    },
    /// The executor's circuit breaker.
    Breaker {
        /// The action whose executor it guards.
        executor: String,
        /// `closed`, `half_open` or `open`.
        state: String,
        /// Since when it is open.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Timestamp>,
        /// Until when it stays open.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Timestamp>,
        /// It let the call through.
        pass: bool,
    },
    /// A silence matched.
    Silence {
        /// Its id.
        id: u64,
        /// When it ends.
        until: Timestamp,
        /// Who and why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// An operator's approval was asked for or given.
    Approval {
        /// The request's id.
        id: u64,
        /// Given (else: waiting, or rejected on a `rejected` decision).
        approved: bool,
    },
    /// A common cause holds disruptive repairs in the domain.
    Hold {
        /// The label of the domain.
        label: String,
        /// Its value.
        value: String,
        /// The common cause's fault.
        cause: String,
    },
    /// `[[correlate]] settle`: waits for a common cause to show.
    Settle {
        /// The block's label.
        label: String,
        /// The node's value of it.
        value: String,
        /// Until when.
        until: Timestamp,
    },
    /// Dry-run is on: nothing was carried out.
    DryRun,
}

impl Decision {
    /// A `fault_stale` decision.
    pub fn stale(ts: Timestamp, node: &str, fault: &str, reason: String) -> Self {
        let mut d = Decision::resolved(ts, node, fault);
        d.event = Event::FaultStale;
        d.reason = Some(reason);
        d
    }

    /// A `fault_unverified` decision.
    pub fn unverified(ts: Timestamp, node: &str, fault: &str, reason: String) -> Self {
        let mut d = Decision::resolved(ts, node, fault);
        d.event = Event::FaultUnverified;
        d.reason = Some(reason);
        d
    }

    /// A `fault_opened` decision.
    pub fn opened(
        ts: Timestamp,
        node: &str,
        fault: &str,
        severity: Severity,
        rule: &str,
        reason: Option<String>,
    ) -> Self {
        Decision {
            ts,
            event: Event::FaultOpened,
            node: node.to_string(),
            fault: fault.to_string(),
            severity: Some(severity),
            rule: Some(rule.to_string()),
            action: None,
            outcome: None,
            reason,
            flapping: false,
            detail: None,
            retry_at: None,
            domain: None,
            why: None,
            params: BTreeMap::new(),
            step: None,
        }
    }

    /// A `fault_resolved` decision.
    pub fn resolved(ts: Timestamp, node: &str, fault: &str) -> Self {
        Decision {
            ts,
            event: Event::FaultResolved,
            node: node.to_string(),
            fault: fault.to_string(),
            severity: None,
            rule: None,
            action: None,
            outcome: None,
            reason: None,
            flapping: false,
            detail: None,
            retry_at: None,
            domain: None,
            why: None,
            params: BTreeMap::new(),
            step: None,
        }
    }

    /// An `action` decision.
    pub fn action(
        ts: Timestamp,
        node: &str,
        fault: &str,
        action: &str,
        outcome: Outcome,
        reason: Option<String>,
    ) -> Self {
        Decision {
            ts,
            event: Event::Action,
            node: node.to_string(),
            fault: fault.to_string(),
            severity: None,
            rule: None,
            action: Some(action.to_string()),
            outcome: Some(outcome),
            reason,
            flapping: false,
            detail: None,
            retry_at: None,
            domain: None,
            why: None,
            params: BTreeMap::new(),
            step: None,
        }
    }

    /// A `step` decision: `node` moved to `step` while converging `fault`.
    pub fn step(
        ts: Timestamp,
        node: &str,
        fault: &str,
        step: StepKind,
        reason: Option<String>,
    ) -> Self {
        let mut d = Decision::resolved(ts, node, fault);
        d.event = Event::Step;
        d.step = Some(step);
        d.reason = reason;
        d
    }

    /// One JSON line, no trailing newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a decision always serialises")
    }
}

/// Why an action is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The fault opened or escalated: remedy the node.
    Remedy,
    /// The fault resolved: its `on_resolve` actions put the node back.
    Recover,
}

/// An action a fault asks for. The engine says what is wanted; the guard
/// chain decides what happens (the `action` decision).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Event time it was asked for.
    pub at: Timestamp,
    /// The node.
    pub node: String,
    /// `node` names a failure domain (a cluster-wide alert's fault), not a
    /// machine: nothing disruptive can be done to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub domain: bool,
    /// The fault class.
    pub fault: String,
    /// When the fault asking for it opened: with node and fault, what
    /// identifies one occurrence of a fault (executors' idempotency keys).
    pub opened: Timestamp,
    /// Why: the rule's reason, or what escalated or resolved the fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The action name.
    pub action: String,
    /// The node's labels as last seen (failure domains, silence matchers).
    pub labels: Vec<(String, String)>,
    /// Remedy or recover.
    pub trigger: Trigger,
    /// The fault's policy wants an operator's approval first.
    pub approval: bool,
    /// The rule and rung behind it, and the guards met so far (boxed: a
    /// held action's queue stays compact).
    #[serde(default)]
    pub why: Box<Why>,
    /// What the action is to do beyond its name, e.g. an upgrade's
    /// `component` and `version`, or the gates a cordon is for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl Intent {
    /// One occurrence of one action: `node/fault/opened/action`, plus
    /// `/recover` for an `on_resolve` action. Stable across restarts, so a
    /// retried action is recognised by its executor.
    pub fn key(&self) -> String {
        let recover = if self.trigger == Trigger::Recover {
            "/recover"
        } else {
            ""
        };
        // An upgrade of one component of several is its own occurrence.
        let component = self
            .param("component")
            .map(|c| format!("/{c}"))
            .unwrap_or_default();
        format!(
            "{}/{}/{}/{}{component}{recover}",
            self.node, self.fault, self.opened, self.action
        )
    }

    /// The value of one of its `params`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// The value of one of the node's labels.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A step of convergence, each a decision `{"event":"step","step":...}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Cordoned (unschedulable).
    Cordoned,
    /// Drained.
    Drained,
    /// The upgrade was applied (the node agent acknowledged it).
    Applied,
    /// Versions converged and every gate holds.
    GatesPassed,
    /// Back in service.
    Uncordoned,
    /// A step failed or went past its deadline: the wave stops.
    Halted,
    /// An operator resumed the halted wave: the node that stopped it is
    /// left as it is (cordoned, its fault open) and the wave goes on.
    Resumed,
}

impl StepKind {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Cordoned => "cordoned",
            StepKind::Drained => "drained",
            StepKind::Applied => "applied",
            StepKind::GatesPassed => "gates_passed",
            StepKind::Uncordoned => "uncordoned",
            StepKind::Halted => "halted",
            StepKind::Resumed => "resumed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_exactly_as_the_contract_shows() {
        let ts = Timestamp::parse_rfc3339("2026-11-24T23:58:07Z").unwrap();
        let opened = Decision::opened(
            ts,
            "node-0042",
            "memory_failure",
            Severity::Critical,
            "hardware/memory.rhai",
            Some("UE on node-0042".into()),
        );
        assert_eq!(
            opened.to_json(),
            r#"{"ts":"2026-11-24T23:58:07Z","event":"fault_opened","node":"node-0042","fault":"memory_failure","severity":"critical","rule":"hardware/memory.rhai","reason":"UE on node-0042"}"#
        );
        let action = Decision::action(
            ts,
            "node-0042",
            "memory_failure",
            "cordon",
            Outcome::DryRun,
            None,
        );
        assert_eq!(
            action.to_json(),
            r#"{"ts":"2026-11-24T23:58:07Z","event":"action","node":"node-0042","fault":"memory_failure","action":"cordon","outcome":"dry_run"}"#
        );
        let resolved = Decision::resolved(ts, "node-0042", "memory_failure");
        assert_eq!(
            resolved.to_json(),
            r#"{"ts":"2026-11-24T23:58:07Z","event":"fault_resolved","node":"node-0042","fault":"memory_failure"}"#
        );
        let back: Decision = serde_json::from_str(&opened.to_json()).unwrap();
        assert_eq!(back, opened);
        for e in [
            Event::FaultOpened,
            Event::FaultResolved,
            Event::FaultStale,
            Event::FaultUnverified,
            Event::Action,
        ] {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
    }

    #[test]
    fn outcome_names_match_the_contract() {
        let all = [
            (Outcome::Executed, "executed"),
            (Outcome::DryRun, "dry_run"),
            (Outcome::Failed, "failed"),
            (Outcome::RateLimited, "rate_limited"),
            (Outcome::BudgetExhausted, "budget_exhausted"),
            (Outcome::CircuitOpen, "circuit_open"),
            (Outcome::Silenced, "silenced"),
            (Outcome::AwaitingApproval, "awaiting_approval"),
            (Outcome::Rejected, "rejected"),
            (Outcome::AttemptsExhausted, "attempts_exhausted"),
            (Outcome::HeldCommonCause, "held_common_cause"),
            (Outcome::Demoted, "demoted"),
        ];
        for (o, name) in all {
            assert_eq!(serde_json::to_value(o).unwrap(), name);
            assert_eq!(o.as_str(), name);
        }
    }
}
