//! The payment as merchants see it: in API answers and in webhook payloads alike.

use crate::domain::PaymentStatus;
use crate::ledger::payments::PaymentRecord;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// The payment as merchants see it.
///
/// The parts the merchant sent (`creditor`, `debtor`, …) are shown as sent, normalised; their
/// schemas are those of `POST /v1/payments`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Payment)]
pub struct PaymentView {
    pub id: Uuid,
    #[schema(value_type = PaymentStatus, inline)]
    pub status: String,
    pub bank: String,
    #[schema(required = true)]
    pub bank_status: Option<String>,
    #[schema(required = true)]
    pub bank_payment_id: Option<String>,
    pub amount: String,
    pub amount_minor: i64,
    pub currency: String,
    pub country: String,
    #[schema(value_type = crate::api::openapi::Creditor)]
    pub creditor: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Option<crate::api::openapi::Debtor>, nullable = false)]
    pub debtor: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Option<String>, format = Date, nullable = false)]
    pub execution_date: Value,
    #[schema(value_type = crate::api::openapi::Urgency, inline)]
    pub urgency: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Option<crate::api::openapi::Recurring>, nullable = false)]
    pub recurring: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, inline)]
    pub recurring_progress: Option<RecurringProgress>,
    #[schema(value_type = bool)]
    pub own_account_transfer: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub language: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub authentication_method: Value,
    #[schema(required = true)]
    pub reference: Option<String>,
    #[schema(required = true)]
    pub psu_id: Option<String>,
    pub return_url: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// pisgate's authorization hop (`{public_url}/authorize/{id}?t=…`), never the bank's own link; present while the payment awaits authorization and the bank's answer to its creation is recorded. Past `expires_at`, or once cancelled, it shows a plain page instead of leading to the bank.
    #[schema(required = true)]
    pub authorization_url: Option<String>,
    #[schema(value_type = Initiation, inline)]
    pub initiation: String,
    /// The merchant asked to cancel while a shopper may be at the bank; the bank decides what happens if they sign anyway.
    pub cancel_requested: bool,
    /// End of the signing window: the authorization_url stops sending new shoppers to the bank. It does not end the payment; a shopper already at the bank can still sign.
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(required = true, inline)]
    pub failure: Option<Failure>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Standing orders: executions seen so far and the count still to come.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecurringProgress {
    pub executions: i32,
    #[schema(required = true)]
    pub remaining_count: Option<i32>,
}

/// Why a payment ended unsuccessfully.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Failure {
    pub code: String,
    #[schema(required = true)]
    pub detail: Option<String>,
}

/// Where the payment's creation at the bank stands. `outcome_unknown` and `not_created`: retry the creation with the same Idempotency-Key.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
enum Initiation {
    Pending,
    Initiated,
    OutcomeUnknown,
    NotCreated,
    Refused,
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
            recurring_progress: p.request.get("recurring").map(|_| RecurringProgress {
                executions: p.recurring_executions,
                remaining_count: p.recurring_remaining,
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
            failure: p.failure_code.as_ref().map(|code| Failure {
                code: code.clone(),
                detail: p.failure_detail.clone(),
            }),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}
