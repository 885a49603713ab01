//! OP's JSON as serde types (contract §2–§3, docs/banks/op.md). Amounts are decimal
//! strings (`"12.34"`), never JSON numbers; they are read exactly in `convert`.

use serde::{Deserialize, Serialize};

/// An account by IBAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iban {
    pub iban: String,
}

/// The creditor of a payment: name and IBAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creditor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub iban: String,
}

/// `POST /paymentsapi/v2/sepa-payments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    pub amount: String,
    pub currency: String,
    pub creditor: Creditor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debtor: Option<Iban>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub end_to_end_id: String,
}

/// A payment as OP answers it (create 201, read 200).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentAnswer {
    pub payment_id: String,
    #[serde(default)]
    pub authorization_id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub amount: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub creditor: Option<Creditor>,
    #[serde(default)]
    pub debtor: Option<Iban>,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub end_to_end_id: Option<String>,
}

/// The answer to a revoke (`DELETE`) or a submission (`POST …/submissions`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusAnswer {
    pub payment_id: String,
    pub status: String,
}

/// The body of a submission: empty.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitRequest {}

/// `POST /oauth/token` answers (client credentials, code, refresh).
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
}

/// OP's business API error body (ASSUMED shape: `{"code","message"}`).
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// OP's older published error descriptor (`{"errors":[{"id","level","type","message",
/// "code"}]}`, seed 004 of the OP Developer portal); read as well, the first error's code.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorDescriptor {
    #[serde(default)]
    pub errors: Vec<ErrorBody>,
}

/// An OAuth endpoint's error body (RFC 6749 §5.2).
#[derive(Debug, Default, Deserialize)]
pub struct OAuthError {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn op_payment_request_has_the_contract_shape_with_the_amount_as_a_string() {
        let body = PaymentRequest {
            amount: "12.34".into(),
            currency: "EUR".into(),
            creditor: Creditor {
                name: Some("Shop Oy".into()),
                iban: "FI2112345600000785".into(),
            },
            debtor: None,
            reference: Some("RF18539007547034".into()),
            message: None,
            end_to_end_id: "p-1".into(),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"amount": "12.34", "currency": "EUR",
                   "creditor": {"name": "Shop Oy", "iban": "FI2112345600000785"},
                   "reference": "RF18539007547034", "endToEndId": "p-1"})
        );
        assert_eq!(serde_json::to_value(SubmitRequest {}).unwrap(), json!({}));
    }

    #[test]
    fn op_payment_answers_read_with_and_without_optional_fields() {
        let full: PaymentAnswer = serde_json::from_value(json!({
            "paymentId": "pay-1", "authorizationId": "auth-1", "status": "Unauthorized",
            "amount": "12.34", "currency": "EUR",
            "creditor": {"name": "Shop Oy", "iban": "FI2112345600000785"},
            "debtor": {"iban": "FI4950009420028730"}, "message": "Order 1234",
            "endToEndId": "p-1", "created": "2026-12-05T09:00:00Z"
        }))
        .unwrap();
        assert_eq!(full.authorization_id.as_deref(), Some("auth-1"));
        assert_eq!(full.amount.as_deref(), Some("12.34"));
        assert_eq!(full.debtor.unwrap().iban, "FI4950009420028730");
        let bare: PaymentAnswer =
            serde_json::from_value(json!({"paymentId": "pay-1", "status": "Debited"})).unwrap();
        assert_eq!(bare.status, "Debited");
        assert!(bare.creditor.is_none());
        let s: StatusAnswer =
            serde_json::from_value(json!({"paymentId": "pay-1", "status": "SubmissionPending"}))
                .unwrap();
        assert_eq!(s.status, "SubmissionPending");
    }
}
