//! The payment as merchants see it: in API answers and in webhook payloads alike.

use crate::domain::PaymentStatus;
use crate::ledger::payments::PaymentRecord;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// The payment as merchants see it.
#[derive(Debug, Serialize)]
pub struct PaymentView {
    pub id: Uuid,
    pub status: String,
    pub bank: String,
    pub bank_status: Option<String>,
    pub bank_payment_id: Option<String>,
    pub amount: String,
    pub amount_minor: i64,
    pub currency: String,
    pub country: String,
    pub creditor: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub debtor: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub execution_date: Value,
    pub urgency: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub recurring: Value,
    /// Standing orders: executions seen so far and the count still to come.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurring_progress: Option<Value>,
    pub own_account_transfer: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub language: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub authentication_method: Value,
    pub reference: Option<String>,
    pub psu_id: Option<String>,
    pub return_url: String,
    pub metadata: Value,
    /// pisgate's authorization hop (never the bank's own link), while it can be signed.
    pub authorization_url: Option<String>,
    /// Where the bank call stands: `pending`, `initiated`, `outcome_unknown` (retry with the
    /// same Idempotency-Key), `not_created` or `refused`.
    pub initiation: String,
    /// The merchant asked to cancel; the bank decides what happens if a shopper signs anyway.
    pub cancel_requested: bool,
    /// pisgate's signing window: past it the authorization link no longer leads to the bank.
    pub expires_at: Option<DateTime<Utc>>,
    pub failure: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&PaymentRecord> for PaymentView {
    fn from(p: &PaymentRecord) -> Self {
        let currency = crate::domain::Currency::from_code(&p.currency);
        let amount = currency
            .and_then(|c| crate::domain::Money::from_minor(p.amount_minor, c))
            .map(|m| m.to_decimal_string())
            .unwrap_or_default();
        // Shown once the bank's answer is recorded, while the payment awaits authorization.
        let authorization_url = (p.status() == PaymentStatus::AwaitingAuthorization
            && p.is_initiated())
        // Payments made before the hop existed keep the bank link they were given.
        .then(|| {
            p.authorize_url
                .clone()
                .or_else(|| p.authorization_url.clone())
        })
        .flatten();
        PaymentView {
            id: p.id,
            status: p.status.clone(),
            bank: p.bank.clone(),
            bank_status: p.bank_status.clone(),
            bank_payment_id: p.bank_payment_id.clone(),
            amount,
            amount_minor: p.amount_minor,
            currency: p.currency.clone(),
            country: p.country.clone(),
            creditor: p.request["creditor"].clone(),
            debtor: p.request["debtor"].clone(),
            execution_date: p.request["execution_date"].clone(),
            urgency: p.request["urgency"].clone(),
            recurring: p.request["recurring"].clone(),
            recurring_progress: p.request.get("recurring").map(|_| {
                json!({
                    "executions": p.recurring_executions,
                    "remaining_count": p.recurring_remaining,
                })
            }),
            own_account_transfer: p.request["own_account_transfer"].clone(),
            language: p.request["language"].clone(),
            authentication_method: p.request["authentication_method"].clone(),
            reference: p.merchant_reference.clone(),
            psu_id: p.psu_id.clone(),
            return_url: p.return_url.clone(),
            metadata: p.metadata.clone(),
            authorization_url,
            initiation: p.initiation.clone(),
            cancel_requested: p.cancel_requested_at.is_some(),
            expires_at: p.expires_at,
            failure: p
                .failure_code
                .as_ref()
                .map(|code| json!({ "code": code, "detail": p.failure_detail })),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}
