//! The body of `POST /v1/payments`, turned into a payment we can initiate.
//!
//! The rules live in `domain::payment` (every violated field reported at once, each with a
//! stable code). This module adds the one rule that needs the merchant: the return URL must
//! be on one of the merchant's registered origins, so our callback is never an open
//! redirect. It also maps the domain's request onto the bank port's initiation.

use crate::api::error::{ApiError, FieldError};
use crate::bank::{
    Account, Authentication, Creditor, Debtor, PaymentInitiation, Recurring, Reference,
};
use crate::domain::payment::Field;
use crate::domain::{Environment, PaymentRequest, PaymentRequestInput, ReturnUrl};
use crate::ledger::merchants::Merchant;
use chrono::NaiveDate;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The creditor name Nordea accepts (v2.8), also used to trim the merchant's display name.
const NAME_MAX: usize = 70;

/// A payment request that passed every rule, with what we store of it.
#[derive(Debug, Clone)]
pub struct Validated {
    pub request: PaymentRequest,
    /// The canonical form, stored in `payments.request`.
    pub canonical: Value,
    /// SHA-256 of the canonical form: equal for requests that mean the same, so a reused
    /// idempotency key is judged by meaning, not by whitespace or key order.
    pub fingerprint: [u8; 32],
}

/// SHA-256 of the body as sent (its canonical JSON: key order and whitespace do not count),
/// taken before any validation, so that a retry is recognised whatever today's rules say.
pub fn body_fingerprint(body: &Value) -> [u8; 32] {
    Sha256::digest(crate::ledger::canonical::canonical_json(body).as_bytes()).into()
}

fn origin_error(merchant: &Merchant, url: &ReturnUrl) -> Option<FieldError> {
    let origin = url.origin().origin();
    (!merchant.return_origins.contains(&origin)).then(|| {
        FieldError::new(
            "return_url",
            "origin_not_registered",
            format!(
                "{origin} is not one of your registered return origins (see PATCH /v1/merchant)"
            ),
        )
    })
}

/// Validates a body against the domain rules and the merchant's origins.
pub fn validate(
    body: &Value,
    merchant: &Merchant,
    today: NaiveDate,
    environment: Environment,
) -> Result<Validated, ApiError> {
    if !body.is_object() {
        return Err(ApiError::Validation(vec![FieldError::new(
            "body",
            "invalid_type",
            "the body must be a JSON object",
        )]));
    }
    let input: PaymentRequestInput = serde_json::from_value(body.clone()).map_err(|e| {
        ApiError::Validation(vec![FieldError::new("body", "invalid_type", e.to_string())])
    })?;
    match PaymentRequest::parse(&input, today, environment) {
        Ok(request) => {
            if let Some(e) = origin_error(merchant, request.return_url()) {
                return Err(ApiError::Validation(vec![e]));
            }
            let canonical_text = request.canonical_json();
            let canonical: Value = serde_json::from_str(&canonical_text)
                .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
            Ok(Validated {
                fingerprint: Sha256::digest(canonical_text.as_bytes()).into(),
                request,
                canonical,
            })
        }
        Err(violations) => {
            let mut errors: Vec<FieldError> = violations
                .into_vec()
                .into_iter()
                .map(|e| FieldError::new(e.field, e.code, e.message))
                .collect();
            // Report a foreign return URL with the rest, not on the next attempt.
            if !errors.iter().any(|e| e.field == "return_url")
                && let Field::Present(raw) = &input.return_url
                && let Ok(url) = ReturnUrl::parse(raw)
                && let Some(e) = origin_error(merchant, &url)
            {
                errors.push(e);
            }
            Err(ApiError::Validation(errors))
        }
    }
}

impl Validated {
    /// The bank-neutral initiation for this payment.
    pub fn initiation(
        &self,
        payment_id: Uuid,
        merchant_name: &str,
        state: String,
        redirect_uri: String,
    ) -> PaymentInitiation {
        let r = &self.request;
        let account = |a: &crate::domain::Account| Account {
            kind: a.account_type(),
            value: a.value().to_owned(),
        };
        let c = r.creditor();
        PaymentInitiation {
            country: r.country(),
            amount: r.amount(),
            creditor: Creditor {
                account: account(c.account()),
                name: c.name().map(str::to_owned),
                message: c.message().map(str::to_owned),
                reference: c.reference().map(|x| Reference {
                    kind: x.reference_type().as_str().to_owned(),
                    value: x.value().to_owned(),
                }),
            },
            debtor: r.debtor().map(|d| Debtor {
                account: Some(account(d.account())),
                message: d.message().map(str::to_owned),
            }),
            external_id: payment_id.simple().to_string(),
            merchant_name: Some(merchant_name.chars().take(NAME_MAX).collect()),
            urgency: r.urgency(),
            requested_execution_date: r.execution_date(),
            recurring: r.recurring().map(|x| Recurring {
                count: u32::from(x.count().get()),
                recurrence_type: x.recurrence_type().as_str().to_owned(),
            }),
            own_account_transfer: r.own_account_transfer(),
            authentication: Authentication {
                state,
                redirect_uri,
                language: r.language().map(|l| l.as_str().to_owned()),
                authentication_method: r.authentication_method().map(|m| m.as_str().to_owned()),
            },
        }
    }
}
