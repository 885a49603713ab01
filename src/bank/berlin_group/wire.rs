//! The Berlin Group NextGenPSD2 1.3.12 JSON (`berlin-group-pis.md` §1.3–1.5, §5) as serde
//! types. Requests carry only the fields pisgate fills (absent fields are not sent: a strict
//! bank refuses `null`s and unknown fields); answers ignore fields they do not name, and a
//! required field missing makes the answer unreadable (`Unexpected`).
//!
//! Amounts are JSON strings with the currency's decimals (`"123.50"`), never numbers.
//! These types must never be logged whole (`Debug` of a request shows account numbers):
//! only codes and ids leave this module in logs.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `accountReference`: one identifier (IBAN or BBAN here) and optionally its currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AccountReference {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iban: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bban: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub currency: Option<String>,
}

/// `amount`: `{currency, amount}` with the amount as a decimal string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub currency: String,
    pub amount: String,
}

/// `remittance` (`remittanceInformationStructured`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemittanceStructured {
    pub reference: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reference_type: Option<String>,
}

/// The initiation body: `paymentInitiation_json` (single) or
/// `periodicPaymentInitiation_json` (periodic: `startDate`, `frequency`, … and no
/// `requestedExecutionDate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitiationRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_to_end_identification: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debtor_account: Option<AccountReference>,
    pub instructed_amount: Amount,
    pub creditor_account: AccountReference,
    pub creditor_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remittance_information_unstructured: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remittance_information_structured: Option<RemittanceStructured>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_execution_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency: Option<&'static str>,
    /// `"1"`…`"31"`, no leading zero (31 = the month's last day).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day_of_execution: Option<String>,
}

/// A `hrefType`: `{"href": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Href {
    pub href: String,
}

/// `_links`: name → `{"href"}`. Entries that are not an href object are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Links(pub BTreeMap<String, serde_json::Value>);

impl Links {
    /// The hrefs by name, as given.
    pub fn hrefs(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter_map(|(name, value)| {
                let href = value.get("href")?.as_str()?;
                Some((name.clone(), href.to_owned()))
            })
            .collect()
    }
}

/// The 201 of an initiation (`paymentInitiationRequestResponse-201`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitiationAnswer {
    pub transaction_status: String,
    pub payment_id: String,
    #[serde(rename = "_links")]
    pub links: Links,
    #[serde(default)]
    pub psu_message: Option<String>,
    #[serde(default)]
    pub sca_status: Option<String>,
}

/// The 200 of a status read (`paymentInitiationStatusResponse-200_json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusAnswer {
    pub transaction_status: String,
    #[serde(default)]
    pub psu_message: Option<String>,
}

/// The 200 of a details read: the initiation body plus `transactionStatus`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailsAnswer {
    pub transaction_status: String,
    #[serde(default)]
    pub end_to_end_identification: Option<String>,
    #[serde(default)]
    pub debtor_account: Option<AccountReference>,
    #[serde(default)]
    pub instructed_amount: Option<Amount>,
    #[serde(default)]
    pub creditor_account: Option<AccountReference>,
    #[serde(default)]
    pub creditor_name: Option<String>,
    #[serde(default)]
    pub remittance_information_unstructured: Option<String>,
    #[serde(default)]
    pub requested_execution_date: Option<NaiveDate>,
    #[serde(default)]
    pub start_date: Option<NaiveDate>,
    #[serde(default)]
    pub end_date: Option<NaiveDate>,
    #[serde(default)]
    pub frequency: Option<String>,
}

/// The 200 of an SCA status read (`scaStatusResponse`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaStatusAnswer {
    pub sca_status: String,
    #[serde(default)]
    pub psu_message: Option<String>,
}

/// The 201 of a start authorisation (`startScaprocessResponse`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartAuthorisationAnswer {
    pub sca_status: String,
    pub authorisation_id: String,
    #[serde(rename = "_links")]
    pub links: Links,
    #[serde(default)]
    pub psu_message: Option<String>,
}

/// The 202 of a cancellation that needs the PSU's authorisation.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancellationAnswer {
    #[serde(default)]
    pub transaction_status: Option<String>,
    #[serde(rename = "_links", default)]
    pub links: Links,
}

/// One `tppMessage`.
#[derive(Debug, Clone, Deserialize)]
pub struct TppMessage {
    #[serde(default)]
    pub category: Option<String>,
    pub code: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
}

/// One entry of a problem+json's `additionalErrors`.
#[derive(Debug, Clone, Deserialize)]
pub struct AdditionalError {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    pub code: String,
}

/// An error answer in either shape: `{"tppMessages": […]}` or problem+json
/// (`{"type", "title", "detail", "code", "additionalErrors"}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorAnswer {
    #[serde(default)]
    pub tpp_messages: Vec<TppMessage>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub additional_errors: Vec<AdditionalError>,
    /// problem+json's `type` (a URI, or `about:blank`); SEB's auth API names its problem
    /// there and gives no `code`.
    #[serde(rename = "type", default)]
    pub problem_type: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn berlin_group_answers_ignore_unknown_fields_and_need_required_ones() {
        let answer: InitiationAnswer = serde_json::from_value(json!({
            "transactionStatus": "RCVD", "paymentId": "p1", "newField": [1],
            "_links": {"scaRedirect": {"href": "https://bank/sca"}, "self": {"href": "/v1/payments/x/p1"}, "odd": 3}
        }))
        .unwrap();
        assert_eq!(answer.payment_id, "p1");
        let hrefs = answer.links.hrefs();
        assert_eq!(hrefs.len(), 2);
        assert_eq!(hrefs["scaRedirect"], "https://bank/sca");
        assert!(
            serde_json::from_value::<InitiationAnswer>(json!({"paymentId": "p1", "_links": {}}))
                .is_err()
        );
        assert!(serde_json::from_value::<StatusAnswer>(json!({"psuMessage": "x"})).is_err());
    }

    #[test]
    fn berlin_group_errors_read_in_both_shapes() {
        let tpp: ErrorAnswer = serde_json::from_value(json!({
            "tppMessages": [{"category": "ERROR", "code": "FORMAT_ERROR", "path": "creditorName", "text": "too long"}]
        }))
        .unwrap();
        assert_eq!(tpp.tpp_messages[0].code, "FORMAT_ERROR");
        let problem: ErrorAnswer = serde_json::from_value(json!({
            "type": "https://berlingroup.com/error-codes/FORMAT_ERROR", "title": "t", "detail": "d",
            "code": "FORMAT_ERROR", "additionalErrors": [{"code": "PERIOD_INVALID", "detail": "x"}]
        }))
        .unwrap();
        assert_eq!(problem.code.as_deref(), Some("FORMAT_ERROR"));
        assert_eq!(problem.additional_errors[0].code, "PERIOD_INVALID");
    }
}
