//! The simulator's memory: payments with their status and submissions, the idempotency
//! records, authorization sessions (a page opened), codes, tokens and refresh tokens. Pure
//! state transitions under one lock; the HTTP layers decide what to answer. It must never
//! let a payment be submitted before it is `Authorized`, or twice after a final answer.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// OP's payment statuses (contract §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Status {
    Unauthorized,
    Authorizing,
    Authorized,
    SubmissionPending,
    Accepted,
    Debited,
    Rejected,
    Revoked,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unauthorized => "Unauthorized",
            Status::Authorizing => "Authorizing",
            Status::Authorized => "Authorized",
            Status::SubmissionPending => "SubmissionPending",
            Status::Accepted => "Accepted",
            Status::Debited => "Debited",
            Status::Rejected => "Rejected",
            Status::Revoked => "Revoked",
            Status::Cancelled => "Cancelled",
        }
    }
}

/// The scenario a payment plays, chosen by its amount (EUR cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Approve → submit → Debited.
    Normal,
    /// 77.01: the first submission answers SubmissionPending, a later one Debited.
    PendingThenDebited,
    /// 77.02: the submission answers Rejected.
    RejectedAtSubmission,
    /// 77.03: the submission answers Accepted; Debited 2 s later.
    AcceptedThenDebited,
    /// 77.04: the first submission is performed but its answer is lost.
    AnswerLost,
    /// 77.05: abandoned (nothing special).
    Abandoned,
    /// 77.06: OP makes the payment with another amount (1.00 EUR more) and its answer to the
    /// creation echoes that amount (a bank fault: the TPP must never submit it).
    OtherAmount,
}

impl Scenario {
    pub fn of(cents: i64) -> Scenario {
        match cents {
            7701 => Scenario::PendingThenDebited,
            7702 => Scenario::RejectedAtSubmission,
            7703 => Scenario::AcceptedThenDebited,
            7704 => Scenario::AnswerLost,
            7705 => Scenario::Abandoned,
            7706 => Scenario::OtherAmount,
            _ => Scenario::Normal,
        }
    }
}

/// How long an Accepted payment of 77.03 takes to become Debited.
pub const ACCEPTED_TO_DEBITED_SECS: i64 = 2;

#[derive(Debug, Clone)]
pub struct Payment {
    pub id: String,
    pub authorization_id: String,
    pub status: Status,
    pub scenario: Scenario,
    pub amount_cents: i64,
    pub amount: String,
    pub creditor_name: String,
    pub creditor_iban: String,
    /// The creation body as sent (echoed in answers).
    pub body: Value,
    pub created: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    /// Submissions performed (keys in order).
    pub submission_keys: Vec<String>,
    /// The recorded answer (status) per submission key.
    pub submission_answers: HashMap<String, Status>,
    /// Whether 77.04 already lost an answer.
    pub answer_lost: bool,
}

impl Payment {
    /// Applies the passage of time (77.03: Accepted → Debited after 2 s).
    pub fn tick(&mut self, now: DateTime<Utc>) {
        if self.status == Status::Accepted
            && let Some(at) = self.accepted_at
            && (now - at).num_seconds() >= ACCEPTED_TO_DEBITED_SECS
        {
            self.status = Status::Debited;
        }
    }

    /// The API's view (create and read answers).
    pub fn view(&self) -> Value {
        let mut v = self.body.clone();
        if !v.is_object() {
            v = json!({});
        }
        v["paymentId"] = json!(self.id);
        v["authorizationId"] = json!(self.authorization_id);
        v["status"] = json!(self.status.as_str());
        v["created"] = json!(
            self.created
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        v
    }

    /// The admin view (contract §4).
    pub fn admin_view(&self) -> Value {
        json!({
            "paymentId": self.id,
            "authorizationId": self.authorization_id,
            "status": self.status.as_str(),
            "submissions": self.submission_keys.len(),
            "submission_keys": self.submission_keys,
            "amount": self.amount,
            "creditor": self.creditor_name,
        })
    }
}

/// An authorization page opened with a valid request object, waiting for Approve/Reject.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub authorization_id: String,
    pub redirect_uri: String,
    pub state: String,
    pub nonce: String,
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    ClientCredentials,
    /// An authorization-code token for one authorization (issued for `code`).
    Authorization {
        authorization_id: String,
        code: String,
    },
}

#[derive(Debug, Clone)]
pub struct Token {
    pub grant: Grant,
    pub expires: DateTime<Utc>,
    pub revoked: bool,
}

#[derive(Debug, Clone)]
pub struct Code {
    pub authorization_id: String,
    pub redirect_uri: String,
    pub nonce: String,
    pub issued: DateTime<Utc>,
    pub used: bool,
}

#[derive(Debug, Clone)]
pub struct Refresh {
    pub authorization_id: String,
    pub code: String,
    pub nonce: String,
    pub live: bool,
}

/// A creation's idempotency record: the body it was made with and the payment.
#[derive(Debug, Clone)]
pub struct CreateRecord {
    pub body: Value,
    pub answer: Value,
}

#[derive(Debug, Default)]
pub struct Bank {
    pub payments: HashMap<String, Payment>,
    pub by_authorization: HashMap<String, String>,
    pub creates: HashMap<String, CreateRecord>,
    pub sessions: HashMap<String, Session>,
    pub codes: HashMap<String, Code>,
    pub tokens: HashMap<String, Token>,
    pub refresh: HashMap<String, Refresh>,
}

impl Bank {
    pub fn payment_mut(&mut self, id: &str, now: DateTime<Utc>) -> Option<&mut Payment> {
        let p = self.payments.get_mut(id)?;
        p.tick(now);
        Some(p)
    }

    pub fn payment_by_authorization(
        &mut self,
        authorization_id: &str,
        now: DateTime<Utc>,
    ) -> Option<&mut Payment> {
        let id = self.by_authorization.get(authorization_id)?.clone();
        self.payment_mut(&id, now)
    }

    /// Revokes every token and refresh token issued for `code` (a reused code, RFC 6749
    /// §4.1.2).
    pub fn revoke_code_tokens(&mut self, code: &str) -> usize {
        let mut n = 0;
        for t in self.tokens.values_mut() {
            if let Grant::Authorization { code: c, .. } = &t.grant
                && c == code
                && !t.revoked
            {
                t.revoked = true;
                n += 1;
            }
        }
        for r in self.refresh.values_mut() {
            if r.code == code && r.live {
                r.live = false;
                n += 1;
            }
        }
        n
    }
}

/// Why a submission is refused before anything is performed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitRefusal {
    NotFound,
    NotAuthorized(Status),
    AlreadySubmitted(Status),
}

/// What a submission did: the answer, and whether the answer must be lost (77.04).
#[derive(Debug, Clone, Copy)]
pub struct Submitted {
    pub status: Status,
    pub lose_answer: bool,
}

impl Bank {
    /// Performs (or replays) a submission of `payment_id` under `key`.
    pub fn submit(
        &mut self,
        payment_id: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Submitted, SubmitRefusal> {
        let p = self
            .payment_mut(payment_id, now)
            .ok_or(SubmitRefusal::NotFound)?;
        if let Some(status) = p.submission_answers.get(key) {
            return Ok(Submitted {
                status: *status,
                lose_answer: false,
            });
        }
        match p.status {
            Status::Authorized | Status::SubmissionPending => {}
            Status::Accepted | Status::Debited => {
                return Err(SubmitRefusal::AlreadySubmitted(p.status));
            }
            Status::Rejected if !p.submission_keys.is_empty() => {
                return Err(SubmitRefusal::AlreadySubmitted(p.status));
            }
            other => return Err(SubmitRefusal::NotAuthorized(other)),
        }
        let first = p.submission_keys.is_empty();
        let status = match p.scenario {
            Scenario::PendingThenDebited if first => Status::SubmissionPending,
            Scenario::RejectedAtSubmission => Status::Rejected,
            Scenario::AcceptedThenDebited => Status::Accepted,
            _ => Status::Debited,
        };
        let lose_answer = p.scenario == Scenario::AnswerLost && !p.answer_lost;
        if lose_answer {
            p.answer_lost = true;
        }
        p.status = status;
        if status == Status::Accepted {
            p.accepted_at = Some(now);
        }
        p.submission_keys.push(key.to_owned());
        p.submission_answers.insert(key.to_owned(), status);
        Ok(Submitted {
            status,
            lose_answer,
        })
    }
}
