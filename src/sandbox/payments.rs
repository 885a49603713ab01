//! The sandbox bank's payments and their lifecycle.
//!
//! Statuses are computed lazily from timestamps on the sandbox clock ([`super::Sandbox::now`]),
//! so there is no background task and a test can reason about them exactly (or move the clock):
//!
//! * initiated, link not opened: the payment does not exist for the API (404);
//! * link opened: PendingUserApproval; rejected by the PSU: UserApprovalCancelled; not
//!   signed within `approval_timeout` (30 minutes by default; when set): UserApprovalTimeout,
//!   and its link refuses;
//! * approved at `t`: PendingUserApproval until `t + confirm_delay`, then Confirmed;
//! * the first execution is at `t + confirm_delay + paid_delay`, but not before the start
//!   (00:00 UTC) of a future `requested_execution_date`; then Paid;
//! * recurring: each execution lowers `count` by one; an `EVERY_MINUTE_SANDBOX_ONLY` series
//!   executes every `recurring_interval` after the first; other recurrence types execute
//!   only the first occurrence within a sandbox's life. The payment is Confirmed while
//!   `count` is above zero and Paid when it reaches zero; `9999` never decreases and stays
//!   Confirmed until deleted;
//! * deleted: Cancelled (the count is frozen); an admin-forced status wins over all of this.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::{Country, Currency};

use super::SandboxConfig;
use super::tokens::{AccessToken, AuthCode, RefreshToken};
use super::validation::{EVERY_MINUTE, Endpoint, Recurring, ValidPayment};
use super::wire::nordea_amount;

/// Nordea's payment statuses, spelt as the API spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BankStatus {
    PendingConfirmation,
    PendingSecondConfirmation,
    PendingUserApproval,
    OnHold,
    Confirmed,
    Rejected,
    Paid,
    InsufficientFunds,
    LimitExceeded,
    UserApprovalFailed,
    UserApprovalTimeout,
    UserApprovalCancelled,
    Cancelled,
    Stopped,
    Unknown,
}

impl BankStatus {
    /// Statuses in which a payment can still be deleted: not yet executed and not final.
    pub fn is_deletable(self) -> bool {
        matches!(
            self,
            BankStatus::PendingConfirmation
                | BankStatus::PendingSecondConfirmation
                | BankStatus::PendingUserApproval
                | BankStatus::OnHold
                | BankStatus::Confirmed
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Decision {
    Approved { at: DateTime<Utc> },
    Rejected,
}

#[derive(Debug, Clone)]
pub(crate) struct Payment {
    pub id: String,
    pub endpoint: Endpoint,
    pub details: ValidPayment,
    pub signing_token: String,
    pub created_at: DateTime<Utc>,
    pub opened_at: Option<DateTime<Utc>>,
    pub decision: Option<Decision>,
    /// The PSU who signed (or rejected) it.
    pub owner: Option<String>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub forced_status: Option<BankStatus>,
    pub funds_not_available: bool,
    /// The outcome the shopper chose on the signing page, if any ([`super::scenarios`]).
    pub scenario: Option<&'static super::scenarios::Scenario>,
}

/// What the lifecycle gives at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub status: BankStatus,
    pub remaining_count: Option<u32>,
    pub executions: u64,
}

/// A payment as the sandbox sees it, for tests and the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentView {
    pub payment_id: String,
    pub endpoint: Endpoint,
    pub country: Country,
    pub currency: Currency,
    pub amount_minor: i64,
    pub status: BankStatus,
    /// Whether the shopper has opened the signing link (before that the API answers 404).
    pub exists_at_bank: bool,
    pub psu_id: Option<String>,
    pub recurring: Option<Recurring>,
    pub remaining_count: Option<u32>,
    pub executions: u64,
    pub funds_not_available: bool,
    pub forced_status: Option<BankStatus>,
    pub state: String,
    pub redirect_uri: String,
    pub language: Option<String>,
    pub authentication_method: Option<String>,
    pub external_id: Option<String>,
    pub requested_execution_date: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
}

fn std_to_chrono(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Payment {
    pub fn new(
        id: String,
        endpoint: Endpoint,
        details: ValidPayment,
        signing_token: String,
        now: DateTime<Utc>,
    ) -> Payment {
        let funds_not_available = details.says_funds_not_available;
        Payment {
            id,
            endpoint,
            details,
            signing_token,
            created_at: now,
            opened_at: None,
            decision: None,
            owner: None,
            cancelled_at: None,
            forced_status: None,
            funds_not_available,
            scenario: None,
        }
    }

    pub fn exists_at_bank(&self) -> bool {
        self.opened_at.is_some()
    }

    /// Whether the shopper ran out of time to sign (only with an `approval_timeout`).
    pub fn approval_timed_out(&self, now: DateTime<Utc>, cfg: &SandboxConfig) -> bool {
        self.decision.is_none()
            && cfg
                .approval_timeout
                .is_some_and(|t| now >= self.created_at + std_to_chrono(t))
    }

    /// The lifecycle at `now` (see the module doc).
    pub fn snapshot(&self, now: DateTime<Utc>, cfg: &SandboxConfig) -> Snapshot {
        let at = self.cancelled_at.map_or(now, |c| c.min(now));
        let count = self.details.recurring.as_ref().map(|r| r.count);
        let mut snap = Snapshot {
            status: BankStatus::PendingUserApproval,
            remaining_count: count,
            executions: 0,
        };
        match self.decision {
            None => {
                if self.approval_timed_out(at, cfg) {
                    snap.status = BankStatus::UserApprovalTimeout;
                }
            }
            Some(Decision::Rejected) => snap.status = BankStatus::UserApprovalCancelled,
            Some(Decision::Approved { at: approved }) if self.scenario.is_some() => {
                let scenario = self.scenario.expect("checked");
                let confirmed_at = approved + std_to_chrono(cfg.confirm_delay);
                if at >= confirmed_at {
                    let step = cfg.paid_delay.as_secs_f64();
                    let elapsed = (at - confirmed_at)
                        .to_std()
                        .unwrap_or_default()
                        .as_secs_f64();
                    let delays = if step > 0.0 { elapsed / step } else { f64::MAX };
                    snap.status = scenario.status_at(delays).unwrap_or(BankStatus::Confirmed);
                    if snap.status == BankStatus::Paid {
                        snap.executions = 1;
                        snap.remaining_count = snap.remaining_count.map(|_| 0);
                    }
                }
            }
            Some(Decision::Approved { at: approved }) => {
                let confirmed_at = approved + std_to_chrono(cfg.confirm_delay);
                if at >= confirmed_at {
                    snap.status = BankStatus::Confirmed;
                    let mut first = confirmed_at + std_to_chrono(cfg.paid_delay);
                    if let Some(date) = self.details.requested_execution_date {
                        let start = date.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
                        if let Some(start) = start {
                            first = first.max(start);
                        }
                    }
                    if at >= first {
                        let executions = match &self.details.recurring {
                            Some(r) if r.recurrence_type == EVERY_MINUTE => {
                                let interval = cfg.recurring_interval.as_millis().max(1);
                                let elapsed =
                                    u128::try_from((at - first).num_milliseconds()).unwrap_or(0);
                                1 + u64::try_from(elapsed / interval).unwrap_or(u64::MAX - 1)
                            }
                            _ => 1,
                        };
                        match count {
                            None => {
                                snap.status = BankStatus::Paid;
                                snap.executions = 1;
                            }
                            Some(9999) => snap.executions = executions,
                            Some(n) => {
                                let done = executions.min(u64::from(n));
                                snap.executions = done;
                                let left = n - u32::try_from(done).unwrap_or(n);
                                snap.remaining_count = Some(left);
                                if left == 0 {
                                    snap.status = BankStatus::Paid;
                                }
                            }
                        }
                    }
                }
            }
        }
        if self.cancelled_at.is_some() {
            snap.status = BankStatus::Cancelled;
        }
        if let Some(forced) = self.forced_status {
            snap.status = forced;
        }
        snap
    }

    pub fn view(&self, now: DateTime<Utc>, cfg: &SandboxConfig) -> PaymentView {
        let snap = self.snapshot(now, cfg);
        let d = &self.details;
        PaymentView {
            payment_id: self.id.clone(),
            endpoint: self.endpoint,
            country: d.country,
            currency: d.currency,
            amount_minor: d.amount_minor,
            status: snap.status,
            exists_at_bank: self.exists_at_bank(),
            psu_id: self.owner.clone(),
            recurring: d.recurring.clone(),
            remaining_count: snap.remaining_count,
            executions: snap.executions,
            funds_not_available: self.funds_not_available,
            forced_status: self.forced_status,
            state: d.state.clone(),
            redirect_uri: d.redirect_uri.clone(),
            language: d.language.clone(),
            authentication_method: d.authentication_method.clone(),
            external_id: d.external_id.clone(),
            requested_execution_date: d.requested_execution_date,
            created_at: self.created_at,
        }
    }

    /// The body of GET /v2/single-sca-payments/{id} (`v3`: the v3 shape, with
    /// `instructed_amount`; `funds`: add `availability_of_funds`).
    pub fn details_json(
        &self,
        now: DateTime<Utc>,
        cfg: &SandboxConfig,
        v3: bool,
        funds: bool,
    ) -> Value {
        let snap = self.snapshot(now, cfg);
        let d = &self.details;
        let mut out = json!({ "payment_id": self.id });
        let obj = out.as_object_mut().expect("an object");
        if let Some(e) = &d.external_id {
            obj.insert("external_id".into(), json!(e));
        }
        let amount = nordea_amount(d.amount_minor);
        if v3 {
            obj.insert(
                "instructed_amount".into(),
                json!({ "amount": amount, "currency": d.currency.code() }),
            );
        } else {
            obj.insert("amount".into(), json!(amount));
            obj.insert("currency".into(), json!(d.currency.code()));
        }
        if let Some(debtor) = d.debtor() {
            obj.insert("debtor".into(), debtor);
        }
        obj.insert("creditor".into(), d.creditor());
        obj.insert("status".into(), json!(snap.status));
        if let Some(u) = &d.urgency {
            obj.insert("urgency".into(), json!(u));
        }
        let created = self.created_at.date_naive();
        let requested = d.requested_execution_date.unwrap_or(created);
        obj.insert(
            "requested_execution_date".into(),
            json!(requested.format("%Y-%m-%d").to_string()),
        );
        obj.insert(
            "planned_execution_date".into(),
            json!(requested.format("%Y-%m-%d").to_string()),
        );
        if let Some(r) = &d.recurring {
            obj.insert(
                "recurring".into(),
                json!({
                    "count": snap.remaining_count.unwrap_or(r.count),
                    "recurrence_type": r.recurrence_type,
                }),
            );
        }
        if let Some(own) = d.own_account_transfer {
            obj.insert("is_own_account_transfer".into(), json!(own));
        }
        // The seed: the check applies while the payment is not Rejected or executed.
        if funds && !matches!(snap.status, BankStatus::Rejected | BankStatus::Paid) {
            let available = if self.funds_not_available {
                "false"
            } else {
                "true"
            };
            obj.insert("availability_of_funds".into(), json!(available));
        }
        out
    }
}

/// Everything the sandbox bank knows, behind one mutex (never held across an await).
#[derive(Debug, Default)]
pub(crate) struct BankState {
    /// Boxed: the map's growth moves pointers, not whole payments.
    pub payments: HashMap<String, Box<Payment>>,
    pub by_signing_token: HashMap<String, String>,
    pub codes: HashMap<String, AuthCode>,
    pub access_tokens: HashMap<String, AccessToken>,
    pub refresh_tokens: HashMap<String, RefreshToken>,
    pub next_grant: u64,
}
