//! Fault injection: rules that add latency or replace the bank's answer for chosen
//! operations, switchable at run time, plus per-operation counters.
//!
//! The Nordea sandbox, the Berlin Group simulator and the SEB simulator take the same rules,
//! each through its [`FaultSwitch`]. The Berlin Group simulator maps its operations onto these
//! names: `initiate`, `details` for reading the payment, `status` for the transaction and SCA
//! statuses, `sca_status` for the SCA status of a payment's authorisation alone, `cancel`
//! for the cancellation and its authorisations, `authorise` for the payment's authorisations
//! (start, list, update); SEB's are in `seb::faults`.
//!
//! A rule is `{"operation": "status" | … | "all", "kind": …, "probability": 0.0..=1.0,
//! "times": n | null}` with the kind's own fields:
//! `{"kind": "latency", "ms": 250}`, `{"kind": "http500"}`, `{"kind": "http503"}`,
//! `{"kind": "http429", "retry_after_secs": 2}`, `{"kind": "drop_connection"}`,
//! `{"kind": "malformed_json"}`, `{"kind": "delay_answer", "ms": 2000}`,
//! `{"kind": "drop_after_processing"}`. Every matching latency rule that fires adds its delay; then
//! the first matching answer-changing rule that fires is applied. `times` counts down on each
//! application and the rule stops firing at zero (null: unlimited). With probability 1 and a
//! `times`, a fault is fully deterministic ("fail the next two status calls").
//!
//! 500, 503 and 429 answer without running the call (nothing changes at the bank);
//! `malformed_json` runs the call (its effect happens) and cuts the JSON answer in half;
//! `drop_connection` closes the TCP connection without an HTTP answer and without running
//! the call (only when served by [`super::serve`], whose accept loop turns the marker into a
//! closed connection).
//!
//! Two faults make the bank act and then lose or delay the answer, the cases where the
//! client cannot know what happened:
//! * `delay_answer` runs the call first (its effect happens at the bank: a payment is
//!   created, a code is exchanged and tokens issued, …) and only then waits `ms` before
//!   sending the answer; unlike `latency`, which waits *before* the call. A client whose
//!   timeout is shorter gives up on a call the bank has already carried out. The request
//!   log records the answer before the wait.
//! * `drop_after_processing` runs the call (its effect happens) and then closes the TCP
//!   connection without an HTTP answer (like `drop_connection`, and with the same need for
//!   [`super::serve`]); the request log shows no status.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::Operation;

/// Which operations a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultTarget {
    All,
    Initiate,
    Status,
    Details,
    Funds,
    Cancel,
    Token,
    Revoke,
    /// A Berlin Group authorisation resource, or one of SEB's BankID orders (the Berlin
    /// Group and SEB simulators only).
    Authorise,
    /// A Berlin Group payment authorisation's SCA status read only (the Berlin Group
    /// simulator only); `status` covers it too.
    ScaStatus,
}

impl FaultTarget {
    pub fn matches(self, op: Operation) -> bool {
        matches!(
            (self, op),
            (FaultTarget::All, _)
                | (FaultTarget::Initiate, Operation::Initiate)
                | (
                    FaultTarget::Status | FaultTarget::ScaStatus,
                    Operation::ScaStatus
                )
                | (FaultTarget::Status, Operation::Status)
                | (FaultTarget::Details, Operation::Details)
                | (FaultTarget::Funds, Operation::Funds)
                | (FaultTarget::Cancel, Operation::Cancel)
                | (FaultTarget::Token, Operation::Token)
                | (FaultTarget::Revoke, Operation::Revoke)
                | (FaultTarget::Authorise, Operation::Authorise)
        )
    }
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Adds `ms` milliseconds before the call is handled.
    Latency { ms: u64 },
    /// 500 with a Nordea error body.
    Http500,
    /// 503 with a Nordea error body.
    Http503,
    /// 429 with `Retry-After: retry_after_secs`.
    Http429 { retry_after_secs: u64 },
    /// Closes the connection with no HTTP answer.
    DropConnection,
    /// Runs the call, then sends a truncated JSON body.
    MalformedJson,
    /// Runs the call, then waits `ms` milliseconds before sending its answer.
    DelayAnswer { ms: u64 },
    /// Runs the call, then closes the connection with no HTTP answer.
    DropAfterProcessing,
}

impl Fault {
    /// Whether the fault answers (or hangs up) instead of the bank, which then never acts:
    /// 500, 503, 429 and a dropped connection.
    pub fn replaces_the_call(&self) -> bool {
        matches!(
            self,
            Fault::Http500 | Fault::Http503 | Fault::Http429 { .. } | Fault::DropConnection
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Fault::Latency { .. } => "latency",
            Fault::Http500 => "http500",
            Fault::Http503 => "http503",
            Fault::Http429 { .. } => "http429",
            Fault::DropConnection => "drop_connection",
            Fault::MalformedJson => "malformed_json",
            Fault::DelayAnswer { .. } => "delay_answer",
            Fault::DropAfterProcessing => "drop_after_processing",
        }
    }
}

fn always() -> f64 {
    1.0
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    pub operation: FaultTarget,
    #[serde(flatten)]
    pub fault: Fault,
    /// Share of matching calls it applies to (0.0 to 1.0; default 1.0).
    #[serde(default = "always")]
    pub probability: f64,
    /// How many more times it may apply; `None` for no limit.
    #[serde(default)]
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule that always applies to `operation`, with no limit.
    pub fn always(operation: FaultTarget, fault: Fault) -> FaultRule {
        FaultRule {
            operation,
            fault,
            probability: 1.0,
            times: None,
        }
    }

    /// The same rule, limited to `n` applications.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.times = Some(n);
        self
    }

    fn fires(&mut self, op: Operation) -> bool {
        if !self.operation.matches(op) || self.times == Some(0) {
            return false;
        }
        let p = self.probability.clamp(0.0, 1.0);
        let hit = p >= 1.0 || (p > 0.0 && rand::thread_rng().gen_bool(p));
        if hit {
            if let Some(t) = self.times.as_mut() {
                *t -= 1;
            }
        }
        hit
    }
}

/// Requests received and faults injected for one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OperationCounters {
    pub received: u64,
    pub faulted: u64,
}

/// What the gateway does to one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub latency_ms: u64,
    pub fault: Option<Fault>,
}

#[derive(Debug, Default)]
pub(crate) struct FaultState {
    pub rules: Vec<FaultRule>,
    pub counters: BTreeMap<Operation, OperationCounters>,
}

impl FaultState {
    pub fn new(rules: Vec<FaultRule>) -> FaultState {
        FaultState {
            rules,
            counters: BTreeMap::new(),
        }
    }

    /// Counts the call and decides its faults.
    pub fn plan(&mut self, op: Operation) -> Plan {
        let mut plan = Plan::default();
        for rule in &mut self.rules {
            if let Fault::Latency { ms } = rule.fault {
                if rule.fires(op) {
                    plan.latency_ms = plan.latency_ms.saturating_add(ms);
                }
            }
        }
        for rule in &mut self.rules {
            if !matches!(rule.fault, Fault::Latency { .. }) && rule.fires(op) {
                plan.fault = Some(rule.fault.clone());
                break;
            }
        }
        let counters = self.counters.entry(op).or_default();
        counters.received += 1;
        if plan.fault.is_some() || plan.latency_ms > 0 {
            counters.faulted += 1;
        }
        plan
    }
}

/// A simulator's fault rules and counters, shared by its handlers, with the admin paths
/// that read and replace them (`GET`/`PUT /admin/faults`: [`FaultSwitch::admin_routes`]).
/// Each simulator keeps one.
#[derive(Debug, Default)]
pub struct FaultSwitch(std::sync::Mutex<FaultState>);

impl FaultSwitch {
    /// A switch with these rules in force (a simulator's configured faults).
    pub fn new(rules: Vec<FaultRule>) -> FaultSwitch {
        FaultSwitch(std::sync::Mutex::new(FaultState::new(rules)))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        super::lock(&self.0)
    }

    /// The rules in force.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.state().rules.clone()
    }

    /// Replaces the rules (an empty list switches faults off); the counters go on.
    pub fn set(&self, rules: Vec<FaultRule>) {
        self.state().rules = rules;
    }

    /// Adds one rule to those in force.
    pub fn add(&self, rule: FaultRule) {
        self.state().rules.push(rule);
    }

    /// Calls received and faults injected, per operation.
    pub fn counters(&self) -> BTreeMap<Operation, OperationCounters> {
        self.state().counters.clone()
    }

    /// Zeroes the counters; the rules stay.
    pub fn reset_counters(&self) {
        self.state().counters.clear();
    }

    /// Forgets the rules and the counters.
    pub fn reset(&self) {
        *self.state() = FaultState::default();
    }

    /// Counts a call of `op` and decides its faults.
    pub(crate) fn plan(&self, op: Operation) -> Plan {
        self.state().plan(op)
    }

    /// `GET /admin/faults` (`{"rules": [...], "counters": {...}}`) and `PUT /admin/faults`
    /// (`{"rules": [...]}`: replaces every rule, 204).
    pub(crate) fn admin_routes(switch: std::sync::Arc<FaultSwitch>) -> axum::Router {
        use axum::extract::State;
        use axum::routing::get;
        #[derive(Deserialize)]
        struct Rules {
            rules: Vec<FaultRule>,
        }
        async fn read(
            State(s): State<std::sync::Arc<FaultSwitch>>,
        ) -> axum::Json<serde_json::Value> {
            axum::Json(serde_json::json!({ "rules": s.rules(), "counters": s.counters() }))
        }
        async fn replace(
            State(s): State<std::sync::Arc<FaultSwitch>>,
            axum::Json(body): axum::Json<Rules>,
        ) -> axum::http::StatusCode {
            s.set(body.rules);
            axum::http::StatusCode::NO_CONTENT
        }
        axum::Router::new()
            .route("/admin/faults", get(read).put(replace))
            .with_state(switch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_round_trip_through_their_json_form() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"operation":"status","kind":"http429","retry_after_secs":3,"times":2}"#,
        )
        .unwrap();
        assert_eq!(
            rule,
            FaultRule::always(
                FaultTarget::Status,
                Fault::Http429 {
                    retry_after_secs: 3
                }
            )
            .times(2)
        );
        let back = serde_json::to_value(&rule).unwrap();
        assert_eq!(back["kind"], "http429");
        assert_eq!(back["operation"], "status");
    }

    #[test]
    fn every_kind_round_trips_through_json_under_its_name() {
        let kinds = [
            (
                json!({"kind": "latency", "ms": 250}),
                Fault::Latency { ms: 250 },
            ),
            (json!({"kind": "http500"}), Fault::Http500),
            (json!({"kind": "http503"}), Fault::Http503),
            (
                json!({"kind": "http429", "retry_after_secs": 2}),
                Fault::Http429 {
                    retry_after_secs: 2,
                },
            ),
            (json!({"kind": "drop_connection"}), Fault::DropConnection),
            (json!({"kind": "malformed_json"}), Fault::MalformedJson),
            (
                json!({"kind": "delay_answer", "ms": 1500}),
                Fault::DelayAnswer { ms: 1500 },
            ),
            (
                json!({"kind": "drop_after_processing"}),
                Fault::DropAfterProcessing,
            ),
        ];
        for (mut text, fault) in kinds {
            text["operation"] = json!("initiate");
            let rule: FaultRule = serde_json::from_value(text.clone()).unwrap();
            assert_eq!(
                rule,
                FaultRule::always(FaultTarget::Initiate, fault.clone()),
                "{text}"
            );
            let back = serde_json::to_value(&rule).unwrap();
            assert_eq!(back["kind"], fault.name(), "{text}");
            assert_eq!(serde_json::from_value::<FaultRule>(back).unwrap(), rule);
        }
    }

    #[test]
    fn answer_faults_that_run_the_call_are_planned_like_the_others() {
        let mut state = FaultState::new(vec![
            FaultRule::always(FaultTarget::Initiate, Fault::DelayAnswer { ms: 40 }).times(1),
            FaultRule::always(FaultTarget::Token, Fault::DropAfterProcessing).times(1),
        ]);
        let plan = state.plan(Operation::Initiate);
        assert_eq!(plan.fault, Some(Fault::DelayAnswer { ms: 40 }));
        assert_eq!(
            plan.latency_ms, 0,
            "the wait comes after the call, not before"
        );
        assert_eq!(state.plan(Operation::Initiate).fault, None);
        assert_eq!(
            state.plan(Operation::Token).fault,
            Some(Fault::DropAfterProcessing)
        );
        assert_eq!(state.plan(Operation::Token).fault, None);
        assert_eq!(state.counters[&Operation::Token].faulted, 1);
    }

    #[test]
    fn a_limited_rule_stops_after_its_count_and_latency_adds_up() {
        let mut state = FaultState::new(vec![
            FaultRule::always(FaultTarget::All, Fault::Latency { ms: 5 }),
            FaultRule::always(FaultTarget::Details, Fault::Latency { ms: 7 }),
            FaultRule::always(FaultTarget::Details, Fault::Http503).times(1),
            FaultRule::always(FaultTarget::Status, Fault::Http500),
        ]);
        let first = state.plan(Operation::Details);
        assert_eq!(first.latency_ms, 12);
        assert_eq!(first.fault, Some(Fault::Http503));
        assert_eq!(state.plan(Operation::Details).fault, None);
        assert_eq!(state.plan(Operation::Status).fault, Some(Fault::Http500));
        assert_eq!(state.counters[&Operation::Details].received, 2);
    }

    #[test]
    fn an_sca_status_rule_faults_the_sca_status_reads_only_and_a_status_rule_both() {
        let rule: FaultRule =
            serde_json::from_value(json!({"operation": "sca_status", "kind": "http500"})).unwrap();
        let mut state = FaultState::new(vec![rule]);
        assert_eq!(state.plan(Operation::Status).fault, None);
        assert_eq!(state.plan(Operation::Authorise).fault, None);
        assert_eq!(state.plan(Operation::ScaStatus).fault, Some(Fault::Http500));
        let mut state =
            FaultState::new(vec![FaultRule::always(FaultTarget::Status, Fault::Http503)]);
        assert_eq!(state.plan(Operation::Status).fault, Some(Fault::Http503));
        assert_eq!(state.plan(Operation::ScaStatus).fault, Some(Fault::Http503));
        assert_eq!(state.counters[&Operation::ScaStatus].faulted, 1);
    }
}
