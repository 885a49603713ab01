//! Nordea's JSON, as serde types: every request and answer of the single-SCA PIS API in the
//! seed (`seeds/001`), plus the token and error bodies.
//!
//! Both directions derive `Serialize` and `Deserialize`, so the sandbox simulator can speak
//! the same wire format. Rules:
//! - tolerant on input: unknown fields are ignored, fields the seed shows inconsistently are
//!   optional or accept both shapes (an amount as string or number, `availability_of_funds`
//!   as bool or `"true"`, `type` or `_type`, `messageIdentification`);
//! - exact on output: absent optionals are left out, amounts are decimal strings, never
//!   floats.
//!
//! This module knows nothing about HTTP, signing or pisgate's own types; the conversions
//! live in `convert.rs`. Types that hold tokens have a `Debug` that hides them.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// `group_header` of every answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeader {
    #[serde(
        default,
        alias = "messageIdentification",
        skip_serializing_if = "Option::is_none"
    )]
    pub message_identification: Option<String>,
    #[serde(
        default,
        alias = "creationDateTime",
        skip_serializing_if = "Option::is_none"
    )]
    pub creation_date_time: Option<String>,
    #[serde(default, alias = "httpCode", skip_serializing_if = "Option::is_none")]
    pub http_code: Option<u16>,
}

/// `{"group_header": …, "response": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_header: Option<GroupHeader>,
    pub response: T,
}

/// A decimal amount as Nordea writes it. Sent as a string with the currency's decimals;
/// read from a string or a JSON number (the seed shows both), kept as its exact text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecimalAmount(pub String);

impl Serialize for DecimalAmount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DecimalAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(serde_json::Number),
        }
        Ok(DecimalAmount(match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Number(n) => n.to_string(),
        }))
    }
}

/// A boolean Nordea sometimes writes as a string (`"availability_of_funds": "true"`).
/// Written back as the seed shows it: a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlexBool(pub bool);

impl Serialize for FlexBool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0 { "true" } else { "false" })
    }
}

impl<'de> Deserialize<'de> for FlexBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(b) => Ok(FlexBool(b)),
            Raw::Text(s) if s.eq_ignore_ascii_case("true") => Ok(FlexBool(true)),
            Raw::Text(s) if s.eq_ignore_ascii_case("false") => Ok(FlexBool(false)),
            Raw::Text(_) => Err(de::Error::custom("expected true or false")),
        }
    }
}

/// A count of seconds written as a number or a string of digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FlexU64(pub u64);

impl<'de> Deserialize<'de> for FlexU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(FlexU64(n)),
            Raw::Text(s) => s
                .trim()
                .parse()
                .map(FlexU64)
                .map_err(|_| de::Error::custom("expected a whole number")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Initiation: POST /v2/payments/authorization/{sepa,domestic}-credit-transfer
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitiationRequest {
    pub payment: PaymentBody,
    /// Always sent by us; one seed example (FI) leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationBody>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentBody {
    pub amount: DecimalAmount,
    pub currency: String,
    pub creditor: CreditorBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debtor: Option<DebtorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// `standard` or `express`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_execution_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring: Option<RecurringBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_own_account_transfer: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBody {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// `IBAN`, `BBAN_DK`, `BBAN_SE`, `BBAN_NO`, `BGNR`, `PGNR` (older examples: `_type`).
    #[serde(rename = "type", alias = "_type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceBody {
    #[serde(rename = "type", alias = "_type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditorBody {
    pub account: AccountBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceBody>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebtorBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringBody {
    pub count: u32,
    pub recurrence_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticationBody {
    pub state: String,
    pub redirect_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_method: Option<String>,
}

/// One `_links` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub rel: String,
    pub href: String,
}

/// The `response` of a 201 initiation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitiationAnswer {
    #[serde(rename = "_links", default)]
    pub links: Vec<Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl InitiationAnswer {
    pub fn link(&self, rel: &str) -> Option<&str> {
        self.links
            .iter()
            .find(|l| l.rel.eq_ignore_ascii_case(rel))
            .map(|l| l.href.as_str())
    }

    /// The shopper's signing URL: `rel=redirect`, or `rel=signing` in some versions.
    pub fn signing_url(&self) -> Option<&str> {
        self.link("redirect").or_else(|| self.link("signing"))
    }

    /// The payment id: `payment_id` if given, else the last path segment of the status link
    /// (`/v2/single-sca-payments/{id}/status`), else of the details link.
    pub fn payment_id(&self) -> Option<&str> {
        if let Some(id) = self.payment_id.as_deref() {
            return Some(id);
        }
        self.link("status")
            .and_then(|href| segment_before(href, Some("status")))
            .or_else(|| {
                self.link("details")
                    .and_then(|href| segment_before(href, None))
            })
    }
}

/// The path segment before `last` (or the last one when `last` is `None`), if not empty.
fn segment_before<'a>(href: &'a str, last: Option<&str>) -> Option<&'a str> {
    let path = href.split(['?', '#']).next().unwrap_or_default();
    let mut segments = path.trim_end_matches('/').rsplit('/');
    if let Some(last) = last {
        if segments.next() != Some(last) {
            return None;
        }
    }
    segments.next().filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------------------
// Status, details and funds: GET /v2/single-sca-payments/{id}[/status],
// GET /v3/single-sca-payments/{id}?request_availability_of_funds=true
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    pub status: String,
}

/// v3 `instructed_amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructedAmount {
    pub amount: DecimalAmount,
    pub currency: String,
}

/// The `response` of the details call (v2) and of the v3 call with the funds check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDetailsAnswer {
    pub payment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<DecimalAmount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructed_amount: Option<InstructedAmount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debtor: Option<DebtorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creditor: Option<CreditorBody>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_execution_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_execution_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring: Option<RecurringBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_of_funds: Option<FlexBool>,
}

// ---------------------------------------------------------------------------------------
// Bulk delete: DELETE /v2/single-sca-payments
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkDeleteRequest {
    pub payments: Vec<PaymentRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRef {
    pub payment_id: String,
}

/// `{"group_header": …, "response": [ids deleted], "errors": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkDeleteAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_header: Option<GroupHeader>,
    #[serde(default)]
    pub response: Vec<String>,
    #[serde(default)]
    pub errors: Vec<BulkDeleteError>,
}

/// One entry of the bulk delete `errors`. Its shape is not published, so it is read
/// tolerantly: the id from `payment_id`/`paymentId`/`id`, the code from `code`/`error`/
/// `error_code`, the text from `description`/`message`/`text`/`error_description`
/// (a bare string becomes the description).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct BulkDeleteError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl<'de> Deserialize<'de> for BulkDeleteError {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let pick = |names: &[&str]| {
            names.iter().find_map(|n| match value.get(*n)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        Ok(match &value {
            serde_json::Value::String(s) => BulkDeleteError {
                description: Some(s.clone()),
                ..BulkDeleteError::default()
            },
            _ => BulkDeleteError {
                payment_id: pick(&["payment_id", "paymentId", "id", "_id"]),
                code: pick(&["code", "error", "error_code"]),
                description: pick(&["description", "message", "text", "error_description"]),
            },
        })
    }
}

// ---------------------------------------------------------------------------------------
// Tokens: POST /v5/authorize/token (form), POST /v5/authorize/token/revoke (JSON)
// ---------------------------------------------------------------------------------------

/// The token endpoint's answer (OAuth 2.0 shape). `Debug` hides the tokens.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<FlexU64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// An OpenID Connect ID token, when the bank sends one (the signing URL asks for the
    /// `openid` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("expires_in", &self.expires_in)
            .field("token_type", &self.token_type)
            .finish_non_exhaustive()
    }
}

impl TokenAnswer {
    /// Reads a token answer that is either bare OAuth JSON or wrapped in
    /// `{"group_header", "response"}` (not confirmed which one Nordea's v5 sends).
    pub fn from_json(bytes: &[u8]) -> Result<TokenAnswer, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        match value.get("response") {
            Some(inner) if inner.get("access_token").is_some() => {
                TokenAnswer::deserialize(inner.clone())
            }
            _ => TokenAnswer::deserialize(value),
        }
    }
}

/// `{"token": "<refresh token>"}`. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeRequest {
    pub token: String,
}

impl fmt::Debug for RevokeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RevokeRequest { .. }")
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// An error answer: Nordea's `error.failures`, business `tpp_messages`, or an OAuth
/// `error`/`error_description` pair from the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_header: Option<GroupHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tpp_messages: Vec<TppMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorField {
    Detail(ErrorDetail),
    /// OAuth 2.0 style: `"error": "invalid_grant"`.
    Code(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ErrorRequest>,
    #[serde(default)]
    pub failures: Vec<Failure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tpp_messages: Vec<TppMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(default)]
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TppMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default)]
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_initiation_answer_and_takes_the_id_from_the_status_link() {
        let json = r#"{
            "group_header": {"message_identification": "c7751cf38378244f31c5c29274f2689a",
                             "creation_date_time": "2025-03-27T15:59:39.280487499Z", "http_code": 201},
            "response": {"_links": [
                {"rel": "redirect", "href": "https://<nordeasigninghost>?client_id=dummy&state=x"},
                {"rel": "status", "href": "/v2/single-sca-payments/b084d0ac-a708-43a1-bdc9-c90939a150be/status"},
                {"rel": "details", "href": "/v2/single-sca-payments/b084d0ac-a708-43a1-bdc9-c90939a150be"}]}}"#;
        let answer: Envelope<InitiationAnswer> = serde_json::from_str(json).unwrap();
        assert_eq!(answer.group_header.unwrap().http_code, Some(201));
        let r = answer.response;
        assert_eq!(r.payment_id(), Some("b084d0ac-a708-43a1-bdc9-c90939a150be"));
        assert!(r.signing_url().unwrap().contains("client_id=dummy"));
    }

    #[test]
    fn falls_back_to_the_signing_rel_and_the_details_link() {
        let r = InitiationAnswer {
            links: vec![
                Link {
                    rel: "signing".into(),
                    href: "https://sign.example/x".into(),
                },
                Link {
                    rel: "details".into(),
                    href: "/v2/single-sca-payments/abc-1".into(),
                },
            ],
            payment_id: None,
            status: None,
        };
        assert_eq!(r.signing_url(), Some("https://sign.example/x"));
        assert_eq!(r.payment_id(), Some("abc-1"));
        let no_id = InitiationAnswer {
            links: vec![Link {
                rel: "status".into(),
                href: "/v2/single-sca-payments/".into(),
            }],
            payment_id: None,
            status: None,
        };
        assert_eq!(no_id.payment_id(), None);
    }

    #[test]
    fn reads_amounts_as_strings_or_numbers_and_writes_strings() {
        let body: PaymentBody = serde_json::from_str(
            r#"{"amount": 14.24, "currency": "DKK",
                "creditor": {"account": {"value": "23001546147254", "currency": "DKK", "_type": "BBAN_DK"},
                             "message": "1831653108"},
                "external_id": "bbb441ff", "merchant": "Shoe shop", "unknown_field": 1}"#,
        )
        .unwrap();
        assert_eq!(body.amount, DecimalAmount("14.24".into()));
        assert_eq!(body.creditor.account.kind, "BBAN_DK");
        let out = serde_json::to_value(&body).unwrap();
        assert_eq!(out["amount"], "14.24");
        assert_eq!(out["creditor"]["account"]["type"], "BBAN_DK");
        assert!(out.get("debtor").is_none());
        assert!(out.get("urgency").is_none());
    }

    #[test]
    fn reads_the_seed_v3_funds_answer_with_a_string_boolean() {
        let json = r#"{"group_header": {"message_identification": "2cd1", "http_code": 200},
            "response": {"payment_id": "051800e8-9664-43b3-8fcd-8e8f8bee618e", "external_id": "someids178456",
              "instructed_amount": {"amount": "1.38", "currency": "DKK"},
              "debtor": {"account": {"type": "IBAN", "value": "DK6120301544118028", "currency": "DKK"}},
              "creditor": {"account": {"type": "IBAN", "value": "DK1053930000412656", "currency": "DKK"},
                           "message": "Message to Ben"},
              "status": "Confirmed", "requested_execution_date": "2024-11-13",
              "planned_execution_date": "2024-11-13", "availability_of_funds": "true"}}"#;
        let answer: Envelope<PaymentDetailsAnswer> = serde_json::from_str(json).unwrap();
        assert_eq!(answer.response.availability_of_funds, Some(FlexBool(true)));
        assert_eq!(
            answer.response.instructed_amount.unwrap().amount,
            DecimalAmount("1.38".into())
        );
        let b: FlexBool = serde_json::from_str("false").unwrap();
        assert_eq!(b, FlexBool(false));
        assert!(serde_json::from_str::<FlexBool>("\"maybe\"").is_err());
    }

    #[test]
    fn reads_the_seed_details_answer_with_a_camel_case_group_header() {
        let json = r#"{"group_header": {"messageIdentification": "b395", "http_code": 200},
            "response": {"payment_id": "501f7c38-a410-4cf6-9d68-168bf0b6f4dd", "amount": "10",
              "currency": "EUR", "status": "Paid",
              "creditor": {"account": {"type": "IBAN", "value": "FI1450000120236228", "currency": "EUR"},
                           "name": "Test Name", "message": "Beneficiary message"}}}"#;
        let answer: Envelope<PaymentDetailsAnswer> = serde_json::from_str(json).unwrap();
        assert_eq!(
            answer
                .group_header
                .unwrap()
                .message_identification
                .as_deref(),
            Some("b395")
        );
        assert_eq!(answer.response.amount, Some(DecimalAmount("10".into())));
    }

    #[test]
    fn bulk_delete_request_and_answer_follow_the_seed() {
        let req = BulkDeleteRequest {
            payments: vec![PaymentRef {
                payment_id: "11d55648".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"payments":[{"payment_id":"11d55648"}]}"#
        );
        let answer: BulkDeleteAnswer = serde_json::from_str(
            r#"{"group_header": {"http_code": 200}, "response": ["a", "b"],
                "errors": [{"payment_id": "c", "code": "NotDeletable", "description": "Paid"},
                           {"id": "d", "error": "x", "message": "y"}, "plain text"]}"#,
        )
        .unwrap();
        assert_eq!(answer.response, vec!["a", "b"]);
        assert_eq!(answer.errors[0].code.as_deref(), Some("NotDeletable"));
        assert_eq!(answer.errors[1].payment_id.as_deref(), Some("d"));
        assert_eq!(answer.errors[1].description.as_deref(), Some("y"));
        assert_eq!(answer.errors[2].description.as_deref(), Some("plain text"));
        let empty: BulkDeleteAnswer = serde_json::from_str(r#"{"response": []}"#).unwrap();
        assert!(empty.errors.is_empty());
    }

    #[test]
    fn token_answers_are_read_bare_or_wrapped_and_never_debug_printed() {
        let bare = br#"{"access_token": "AT-secret", "refresh_token": "RT-secret",
                        "expires_in": "3599", "token_type": "Bearer"}"#;
        let wrapped = br#"{"group_header": {"http_code": 200},
            "response": {"access_token": "AT-secret", "refresh_token": "RT-secret", "expires_in": 3599}}"#;
        for bytes in [&bare[..], &wrapped[..]] {
            let t = TokenAnswer::from_json(bytes).unwrap();
            assert_eq!(t.access_token, "AT-secret");
            assert_eq!(t.expires_in, Some(FlexU64(3599)));
            assert!(!format!("{t:?}").contains("secret"));
        }
        let revoke = RevokeRequest {
            token: "RT-secret".into(),
        };
        assert_eq!(
            serde_json::to_string(&revoke).unwrap(),
            r#"{"token":"RT-secret"}"#
        );
        assert!(!format!("{revoke:?}").contains("secret"));
    }

    #[test]
    fn reads_nordea_oauth_and_tpp_error_bodies() {
        let nordea: ErrorAnswer = serde_json::from_str(
            r#"{"group_header": {"http_code": 401}, "error": {"request": {"url": "/v5/authorize"},
                "failures": [{"code": "error.signature.invalid",
                              "description": "KeyId claim doesn't match", "path": "signature", "type": "auth"}]}}"#,
        )
        .unwrap();
        let Some(ErrorField::Detail(detail)) = nordea.error else {
            panic!("expected a Nordea error detail")
        };
        assert_eq!(detail.failures[0].code, "error.signature.invalid");
        assert_eq!(detail.failures[0].kind.as_deref(), Some("auth"));

        let oauth: ErrorAnswer =
            serde_json::from_str(r#"{"error": "invalid_grant", "error_description": "expired"}"#)
                .unwrap();
        assert_eq!(oauth.error, Some(ErrorField::Code("invalid_grant".into())));

        let tpp: ErrorAnswer = serde_json::from_str(
            r#"{"tpp_messages": [{"category": "ERROR", "code": "AM04", "text": "Insufficient funds"}]}"#,
        )
        .unwrap();
        assert_eq!(tpp.tpp_messages[0].code, "AM04");
    }
}
