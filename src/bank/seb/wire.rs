//! SEB's JSON (docs/banks/seb.md; contract §3) as serde types: the decoupled authorization
//! (`/auth/v4`), PIS v1 (`/tpp/pis/{private|corporate}/v1/identified2`) and the Signing
//! External API 1.0.0 (`/tpp/signing/v1`).
//!
//! Requests carry only the fields pisgate fills (SEB refuses unknown top-level fields and
//! `null`s are never sent); answers ignore fields they do not name.
//!
//! Amounts: pisgate sends `"345.50"` (a string with the currency's decimals); SEB answers
//! `345.5`, a JSON **number**. [`WireAmount`] keeps the number's literal text (serde_json's
//! `RawValue`) and reads it with [`Money::parse`], so no float ever touches money: a value
//! that is not exactly representable in the currency's minor units is `None`, never rounded.
//!
//! These types must never be logged whole (`Debug` of a request shows account numbers and
//! an answer holds tokens): only codes and ids leave this module in logs.

use crate::domain::{Currency, Money};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

// ---- decoupled authorization (/auth/v4) ----

/// `POST /authorizations`.
#[derive(Debug, Serialize)]
pub struct AuthorizationRequest<'a> {
    pub client_id: &'a str,
    pub scope: &'a str,
    pub start_mode: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<&'a str>,
}

/// 200 of `POST /authorizations`.
#[derive(Deserialize)]
pub struct AuthorizationStarted {
    pub auth_req_id: String,
}

/// 200 of `GET /authorizations/{auth_req_id}`.
#[derive(Deserialize)]
pub struct AuthorizationStatus {
    pub status: String,
    #[serde(default)]
    pub hint_code: Option<String>,
    /// Milliseconds.
    #[serde(default)]
    pub poll_delay: Option<u64>,
    #[serde(default)]
    pub qr_token: Option<String>,
    #[serde(default)]
    pub autostart_token: Option<String>,
}

/// `POST /tokens` for a completed order.
#[derive(Serialize)]
pub struct TokenForOrder<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub auth_req_id: &'a str,
    pub redirect_uri: &'a str,
}

/// `POST /tokens` with a refresh token.
#[derive(Serialize)]
pub struct TokenRefresh<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub grant_type: &'static str,
    pub refresh_token: &'a str,
    pub redirect_uri: &'a str,
}

/// 200 of `POST /tokens`.
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub token_type: Option<String>,
}

// ---- PIS v1 ----

/// `creditorAccount` / `debtorAccount`: exactly one identifier.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SebAccount {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iban: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bban: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bgnr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pgnr: Option<String>,
}

/// `instructedAmount` as pisgate sends it: the amount as a decimal string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub currency: String,
    pub amount: String,
}

/// `remittanceInformationStructured`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemittanceStructured {
    pub reference: String,
    pub reference_type: String,
}

/// The body of `POST /payments/{product}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitiationRequest {
    pub instructed_amount: Amount,
    pub creditor_account: SebAccount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creditor_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debtor_account: Option<SebAccount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remittance_information_unstructured: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remittance_information_structured: Option<RemittanceStructured>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debtor_account_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creditor_account_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_execution_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_to_end_identification: Option<String>,
}

/// An amount as SEB answers it: `{"amount": 345.5, "currency": "SEK"}`; the amount is a
/// JSON number (or a string), kept as its literal text.
#[derive(Debug, Deserialize)]
pub struct WireAmount {
    pub currency: String,
    pub amount: Box<RawValue>,
}

impl WireAmount {
    /// The exact amount, whatever way the literal spells it (`345.5`, `345.500`,
    /// `3.455E2` SEK are all 34550 öre). `None` when the value itself is not a whole number
    /// of minor units (`1.005` SEK), is not positive, is absurdly large, or the currency is
    /// unknown: never rounded.
    pub fn money(&self) -> Option<Money> {
        let currency = Currency::from_code(&self.currency)?;
        exact_money(self.amount.get(), currency)
    }
}

/// The exact [`Money`] of a JSON number's or string's literal text, in integer arithmetic
/// only. SEB answers amounts as JSON numbers, which a Java or JavaScript serialiser may
/// write with trailing zeros (`345.500`) or an exponent (`1.2345678E7` for 12,345,678:
/// Java writes every double of 10^7 and above so, and `BigDecimal` stripped of trailing
/// zeros `1E+2`). Each is the same exact value; a mismatch is judged on the value, never
/// on its spelling.
pub fn exact_money(literal: &str, currency: Currency) -> Option<Money> {
    let literal = literal.trim();
    let text: String = if literal.starts_with('"') {
        serde_json::from_str(literal).ok()?
    } else {
        literal.to_owned()
    };
    let minor = exact_minor_units(&text, currency.decimals())?;
    Money::from_minor(minor, currency)
}

/// `text` (JSON number grammar: digits, optional `.digits`, optional exponent) times
/// 10^`decimals`, when that is a whole number that fits; `None` otherwise.
fn exact_minor_units(text: &str, decimals: u32) -> Option<i64> {
    /// More significant digits or a larger exponent than any amount has: refused rather
    /// than computed.
    const MAX_DIGITS: usize = 40;
    const MAX_EXPONENT: i64 = 40;
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => {
            let e = &text[at + 1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            (&text[..at], e.parse::<i64>().ok()?)
        }
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let valid = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !valid(whole) || !valid(fraction) || mantissa.ends_with('.') {
        return None;
    }
    // The digits with the point removed, then where the point belongs among them.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > MAX_DIGITS || exponent.abs() > MAX_EXPONENT {
        return None;
    }
    let shift = exponent - fraction.len() as i64 + i64::from(decimals);
    let (kept, dropped) = if shift >= 0 {
        (digits.to_owned() + &"0".repeat(shift as usize), "")
    } else {
        let cut = digits.len().saturating_sub(shift.unsigned_abs() as usize);
        (digits[..cut].to_owned(), &digits[cut..])
    };
    if !dropped.bytes().all(|b| b == b'0') {
        return None;
    }
    if kept.is_empty() {
        return Some(0);
    }
    kept.parse::<i64>().ok()
}

/// `_links` entries: `{"href": "…"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Href {
    pub href: String,
}

/// The links SEB gives with a payment (hrefs relative to the PIS base).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PaymentLinks {
    #[serde(rename = "self", default)]
    pub self_: Option<Href>,
    #[serde(default)]
    pub status: Option<Href>,
}

/// 201 of `POST /payments/{product}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitiationAnswer {
    pub payment_id: String,
    pub transaction_status: String,
    #[serde(default)]
    pub instructed_amount: Option<WireAmount>,
    #[serde(rename = "_links", default)]
    pub links: PaymentLinks,
}

/// 200 of `GET /payments/{product}/{id}/status`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusAnswer {
    pub transaction_status: String,
}

/// 200 of `GET /payments/{product}/{id}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailsAnswer {
    pub transaction_status: String,
    #[serde(default)]
    pub end_to_end_identification: Option<String>,
    #[serde(default)]
    pub instructed_amount: Option<WireAmount>,
    #[serde(default)]
    pub creditor_account: Option<SebAccount>,
    #[serde(default)]
    pub creditor_name: Option<String>,
    #[serde(default)]
    pub debtor_account: Option<SebAccount>,
    #[serde(default)]
    pub remittance_information_unstructured: Option<String>,
    #[serde(default)]
    pub creditor_account_message: Option<String>,
    #[serde(default)]
    pub requested_execution_date: Option<NaiveDate>,
}

// ---- Signing External API 1.0.0 ----

/// `POST /signing-orders`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningRequest<'a> {
    pub order_ids: Vec<&'a str>,
    pub authentication_method_id: &'a str,
}

/// One `tppMessage` of the signing API.
#[derive(Debug, Clone, Deserialize)]
pub struct TppMessage {
    #[serde(default)]
    pub category: Option<String>,
    pub code: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// A signing order (201/200 of `POST /signing-orders`, 200 of `GET …/{authorisationId}`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningOrder {
    pub authorisation_id: String,
    pub sca_status: String,
    #[serde(default)]
    pub psu_message: Option<String>,
    #[serde(default)]
    pub qr_data: Option<String>,
    #[serde(default)]
    pub auto_start_token: Option<String>,
    #[serde(default)]
    pub hint_code: Option<String>,
    #[serde(default)]
    pub tpp_messages: Vec<TppMessage>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn amount(json_text: &str) -> Option<Money> {
        let wire: WireAmount = serde_json::from_str(json_text).unwrap();
        wire.money()
    }

    #[test]
    fn seb_number_amounts_are_read_exactly_without_a_float() {
        for (text, minor) in [
            // SEB's own example: 345.5 SEK is 34550 öre.
            (r#"{"amount": 345.5, "currency": "SEK"}"#, 34550),
            // 0.1 + 0.2 as a float is 0.30000000000000004; the literal 0.3 is 30 öre
            // exactly, and values a float cannot hold exactly stay exact.
            (r#"{"amount": 0.3, "currency": "SEK"}"#, 30),
            (r#"{"amount": 0.1, "currency": "SEK"}"#, 10),
            (
                r#"{"amount": 99999999999.99, "currency": "SEK"}"#,
                9_999_999_999_999,
            ),
            (r#"{"amount": 1234567.89, "currency": "EUR"}"#, 123_456_789),
            (r#"{"amount": 12, "currency": "SEK"}"#, 1200),
            // A string is read the same way.
            (r#"{"amount": "345.50", "currency": "SEK"}"#, 34550),
            // The same values, spelled as serialisers write them: trailing zeros, and
            // exponents (Java writes doubles of 10^7 and above so; BigDecimal `1E+2`).
            (r#"{"amount": 345.500, "currency": "SEK"}"#, 34550),
            (r#"{"amount": 3.455e2, "currency": "SEK"}"#, 34550),
            (
                r#"{"amount": 1.23456789E7, "currency": "SEK"}"#,
                1_234_567_890,
            ),
            (r#"{"amount": 1E+2, "currency": "SEK"}"#, 10000),
            (r#"{"amount": 12345e-2, "currency": "SEK"}"#, 12345),
            (r#"{"amount": 0.05, "currency": "SEK"}"#, 5),
        ] {
            assert_eq!(amount(text).map(Money::minor), Some(minor), "{text}");
        }
    }

    #[test]
    fn seb_amounts_that_are_not_exact_are_unknown_not_rounded() {
        for bad in [
            r#"{"amount": 0.30000000000000004, "currency": "SEK"}"#,
            r#"{"amount": 3.45555e2, "currency": "SEK"}"#,
            r#"{"amount": 1e-3, "currency": "SEK"}"#,
            r#"{"amount": 0, "currency": "SEK"}"#,
            r#"{"amount": 1e40, "currency": "SEK"}"#,
            r#"{"amount": 99999999999999999999, "currency": "SEK"}"#,
            r#"{"amount": "12.", "currency": "SEK"}"#,
            r#"{"amount": ".5", "currency": "SEK"}"#,
            r#"{"amount": "1e", "currency": "SEK"}"#,
            r#"{"amount": "0x10", "currency": "SEK"}"#,
            r#"{"amount": -1.5, "currency": "SEK"}"#,
            r#"{"amount": 1.005, "currency": "SEK"}"#,
            r#"{"amount": 10.5, "currency": "XXX"}"#,
            r#"{"amount": null, "currency": "SEK"}"#,
            r#"{"amount": true, "currency": "SEK"}"#,
        ] {
            assert_eq!(amount(bad), None, "{bad}");
        }
    }

    #[test]
    fn seb_initiation_answer_reads_the_number_amount_and_links() {
        let answer: InitiationAnswer = serde_json::from_str(
            &json!({
                "paymentId": "p-1", "transactionStatus": "RCVD",
                "instructedAmount": {"amount": 345.5, "currency": "SEK"},
                "_links": {"self": {"href": "/payments/x/p-1"}, "status": {"href": "/payments/x/p-1/status"}},
                "somethingNew": 1
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            answer
                .instructed_amount
                .and_then(|a| a.money())
                .map(Money::minor),
            Some(34550)
        );
        assert_eq!(answer.links.status.unwrap().href, "/payments/x/p-1/status");
    }
}
