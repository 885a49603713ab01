//! The payment as merchants see it: in API answers and in webhook payloads alike.

use crate::domain::PaymentStatus;
use crate::ledger::payments::PaymentRecord;
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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
    /// The bank's id (`GET /v1/banks`); null while the shopper has not chosen it yet (`initiation: awaiting_bank_choice`).
    #[schema(required = true)]
    pub bank: Option<String>,
    #[schema(required = true)]
    pub bank_status: Option<String>,
    #[schema(required = true)]
    pub bank_payment_id: Option<String>,
    pub amount: String,
    pub amount_minor: i64,
    pub currency: String,
    pub country: String,
    pub creditor: Creditor,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub debtor: Option<Debtor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub execution_date: Option<NaiveDate>,
    #[schema(value_type = crate::domain::schema::Urgency, inline)]
    pub urgency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub recurring: Option<Recurring>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, inline)]
    pub recurring_progress: Option<RecurringProgress>,
    pub own_account_transfer: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<crate::domain::schema::Language>, inline)]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<crate::domain::schema::AuthenticationMethod>, inline)]
    pub authentication_method: Option<String>,
    #[schema(required = true)]
    pub reference: Option<String>,
    #[schema(required = true)]
    pub psu_id: Option<String>,
    pub return_url: String,
    #[schema(value_type = std::collections::HashMap<String, serde_json::Value>)]
    pub metadata: Value,
    /// pisgate's authorization hop (`{public_url}/authorize/{id}?t=…`), never the bank's own link; present while the payment awaits authorization and the bank's answer to its creation is recorded, or, for a payment whose initiation waits for the shopper (`awaiting_bank_choice`, `awaiting_debtor_account`, `awaiting_shopper_identification`), from creation on: it opens pisgate's page where the shopper chooses the bank or gives their IBAN, and pisgate initiates then. Past `expires_at`, or once cancelled, it shows a plain page instead of leading to the bank.
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

/// An account: its kind and its normalised number.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Account {
    #[serde(rename = "type")]
    #[schema(value_type = crate::domain::schema::AccountType, inline)]
    pub kind: String,
    pub value: String,
}

/// Who is paid.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Creditor {
    pub account: Account,
    /// The creditor's name; required for FI payments (the bank needs it there)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 70)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, inline)]
    pub reference: Option<CreditorReference>,
}

/// The creditor's structured reference (RF, or a national one such as OCR).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreditorReference {
    #[serde(rename = "type")]
    #[schema(examples("RF", "OCR"))]
    pub kind: String,
    pub value: String,
}

/// Who pays, when the merchant knows.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Debtor {
    pub account: Account,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub message: Option<String>,
}

/// A standing order.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recurring {
    /// 2..=98, or 9999 for until deleted
    pub count: i64,
    #[schema(value_type = crate::domain::schema::RecurrenceType, inline)]
    pub recurrence_type: String,
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
    /// A stable code. A cancellation says whose it was: `cancelled_by_merchant` (the
    /// merchant's cancel), `cancelled_by_shopper` (the shopper's cancel on the consent page;
    /// the shopper never signed), `cancelled_at_bank` (at the bank).
    pub code: String,
    #[schema(required = true)]
    pub detail: Option<String>,
}

/// Where the payment's creation at the bank stands. `outcome_unknown` and `not_created`: retry the creation with the same Idempotency-Key (for a payment whose initiation the shopper started on pisgate's page, the shopper retries there). `awaiting_bank_choice`: several banks serve the country and the merchant named none; the shopper chooses on the page at `authorization_url`, and pisgate initiates at that bank then. `awaiting_debtor_account`: the bank needs the shopper's account and the merchant gave none; the shopper gives their IBAN on that page. `awaiting_shopper_identification`: the bank needs the shopper's own token for every call (SEB); the shopper identifies with BankID on that page, pisgate creates the payment at the bank then, and the shopper signs it there.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
enum Initiation {
    Pending,
    Initiated,
    OutcomeUnknown,
    NotCreated,
    Refused,
    AwaitingBankChoice,
    AwaitingDebtorAccount,
    AwaitingShopperIdentification,
}

/// The shopper's link to pisgate's hop for a payment: `{public_url}/authorize/{id}?t={token}`.
/// Always built from the server's own public URL, never read back from the row: a link
/// rewritten in SQL (a phishing page where the hop should be) is neither shown to a merchant
/// nor followed by pisgate's pages.
pub fn hop_url(public_url: &str, payment_id: Uuid, token: &str) -> String {
    format!("{public_url}/authorize/{payment_id}?t={token}")
}

impl PaymentView {
    /// The payment as shown by the API of the server at `public_url` (its hop link built
    /// from it, [`hop_url`]).
    pub fn shown(p: &PaymentRecord, public_url: &str) -> Self {
        PaymentView::with_hop(p, Some(public_url))
    }

    fn with_hop(p: &PaymentRecord, public_url: Option<&str>) -> Self {
        let currency = crate::domain::Currency::from_code(&p.currency);
        let amount = currency
            .and_then(|c| crate::domain::Money::from_minor(p.amount_minor, c))
            .map(|m| m.to_decimal_string())
            .unwrap_or_default();
        // Shown once the bank's answer is recorded, while the payment awaits authorization.
        // A deferred payment's hop is the shopper's page from creation on.
        let authorization_url = (p.status() == PaymentStatus::AwaitingAuthorization
            && (p.is_initiated() || p.deferred))
            .then(|| match &p.authorize_token {
                Some(token) => public_url.map(|u| hop_url(u, p.id, token)),
                // Payments made before the hop existed keep the bank link they were given.
                None => p.authorization_url.clone(),
            })
            .flatten();
        PaymentView {
            id: p.id,
            status: p.status.clone(),
            bank: Some(p.bank.clone()).filter(|b| !b.is_empty()),
            bank_status: p.bank_status.clone(),
            bank_payment_id: p.bank_payment_id.clone(),
            amount,
            amount_minor: p.amount_minor,
            currency: p.currency.clone(),
            country: p.country.clone(),
            creditor: part(p, "creditor").unwrap_or_default(),
            debtor: part(p, "debtor"),
            execution_date: part(p, "execution_date"),
            urgency: part(p, "urgency").unwrap_or_else(|| "standard".to_owned()),
            recurring: part(p, "recurring"),
            recurring_progress: p.request.get("recurring").map(|_| RecurringProgress {
                executions: p.recurring_executions,
                remaining_count: p.recurring_remaining,
            }),
            own_account_transfer: part(p, "own_account_transfer").unwrap_or(false),
            language: part(p, "language"),
            authentication_method: part(p, "authentication_method"),
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

/// The payment in a webhook's payload. Webhooks are sent for changes away from
/// `awaiting_authorization`, so no hop link is ever part of one.
impl From<&PaymentRecord> for PaymentView {
    fn from(p: &PaymentRecord) -> Self {
        PaymentView::with_hop(p, None)
    }
}

/// A part of the payment's stored request (its canonical form, `domain::PaymentRequest`);
/// `None` when absent. A part that does not read as its view is logged: the canonical form
/// and these views are meant to match.
fn part<T: DeserializeOwned>(p: &PaymentRecord, key: &str) -> Option<T> {
    let value = p.request.get(key).filter(|v| !v.is_null())?;
    serde_json::from_value(value.clone())
        .inspect_err(|e| tracing::error!(payment_id = %p.id, part = key, error = %e, "a stored request part does not match its view"))
        .ok()
}
