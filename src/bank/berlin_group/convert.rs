//! Between the port's neutral types and the Berlin Group wire types.
//!
//! What pisgate refuses before sending (a strict bank would refuse it, and a silent cut
//! would change what the shopper signs), as [`BankError::Validation`] naming the field:
//! a creditor name over 70 characters or none at all, a creditor message over 140, a
//! Swedish Bankgiro/Plusgiro account (no such `accountReference`), an end-to-end id over 35,
//! a recurrence the framework's `frequency` cannot express.
//!
//! This module must never cut, pad or round what the shopper signs: an amount is the exact
//! minor units of [`Money`], a text that does not fit is refused, not shortened.
//!
//! Decisions:
//! - `endToEndIdentification` is pisgate's payment id; a UUID (36 characters) is sent in its
//!   simple 32-hex form to fit the 35-character limit.
//! - The debtor's own statement message has no field in the framework's single payment: it
//!   is not sent.
//! - A structured reference goes to `remittanceInformationStructured` (`reference`,
//!   `referenceType` = `OCR`/`RF` as pisgate names it); the creditor message goes to
//!   `remittanceInformationUnstructured`. A bank that takes only one of the two
//!   (`remittance_exclusive`) refuses a payment with both (422 on `creditor.message` at
//!   creation), never drops the message.
//! - A periodic payment starts on the requested execution date (today when none); its
//!   `endDate` is the date of its last execution (none for 9999, "until deleted");
//!   `dayOfExecution` is the start's day (no leading zero), or `31` for end-of-month rules.

use super::wire;
use crate::bank::{
    Account, AccountType, BankError, BankFailure, BankPaymentId, PaymentDetails, PaymentInitiation,
    Recurring, StatusReport,
};
use crate::domain::{Currency, Money, RecurrenceType};
use chrono::{Datelike, NaiveDate};

pub const MAX_CREDITOR_NAME: usize = 70;
pub const MAX_REMITTANCE: usize = 140;
pub const MAX_END_TO_END: usize = 35;

/// pisgate's refusal of a field before any bank call.
pub fn refusal(path: &str, code: &str, description: impl Into<String>) -> BankError {
    BankError::Validation {
        failures: vec![BankFailure {
            code: code.to_owned(),
            description: Some(description.into()),
            path: Some(path.to_owned()),
        }],
    }
}

/// An account as an `accountReference`.
pub fn account_reference(
    account: &Account,
    path: &str,
) -> Result<wire::AccountReference, BankError> {
    let value = account.value.clone();
    match account.kind {
        AccountType::Iban => Ok(wire::AccountReference {
            iban: Some(value),
            ..Default::default()
        }),
        AccountType::BbanDk | AccountType::BbanSe | AccountType::BbanNo => {
            Ok(wire::AccountReference {
                bban: Some(value),
                ..Default::default()
            })
        }
        AccountType::Bgnr | AccountType::Pgnr => Err(refusal(
            path,
            "account_type_not_supported",
            "a Berlin Group bank takes an IBAN or a BBAN, not a Bankgiro or Plusgiro number",
        )),
    }
}

fn account_from(reference: &wire::AccountReference) -> Option<Account> {
    if let Some(iban) = &reference.iban {
        return Some(Account {
            kind: AccountType::Iban,
            value: iban.clone(),
        });
    }
    None
}

/// The `endToEndIdentification` for pisgate's id.
pub fn end_to_end_id(external_id: &str) -> Result<String, BankError> {
    if let Ok(uuid) = uuid::Uuid::parse_str(external_id) {
        return Ok(uuid.simple().to_string());
    }
    if external_id.chars().count() > MAX_END_TO_END {
        return Err(refusal(
            "external_id",
            "too_long",
            format!("at most {MAX_END_TO_END} characters"),
        ));
    }
    Ok(external_id.to_owned())
}

/// The framework's `frequency` and `dayOfExecution` for pisgate's recurrence type.
pub fn frequency(
    recurrence_type: &str,
    start: NaiveDate,
) -> Result<(&'static str, Option<String>), BankError> {
    let same_day = Some(start.day().to_string());
    let eom = Some("31".to_owned());
    let parsed = RecurrenceType::parse(recurrence_type);
    Ok(match parsed {
        Some(RecurrenceType::Daily) => ("Daily", None),
        Some(RecurrenceType::Weekly) => ("Weekly", None),
        Some(RecurrenceType::Biweekly) => ("EveryTwoWeeks", None),
        Some(RecurrenceType::MonthlySameDay) => ("Monthly", same_day),
        Some(RecurrenceType::MonthlyEom) => ("Monthly", eom),
        Some(RecurrenceType::QuarterlySameDay) => ("Quarterly", same_day),
        Some(RecurrenceType::QuarterlyEom) => ("Quarterly", eom),
        Some(RecurrenceType::SemiAnnuallySameDay) => ("SemiAnnual", same_day),
        Some(RecurrenceType::SemiAnnuallyEom) => ("SemiAnnual", eom),
        Some(RecurrenceType::YearlySameDay) => ("Annual", same_day),
        Some(RecurrenceType::YearlyEom) => ("Annual", eom),
        Some(RecurrenceType::TriAnnuallySameDay | RecurrenceType::EveryMinuteSandboxOnly)
        | None => {
            return Err(refusal(
                "recurring.recurrence_type",
                "recurrence_type_not_supported",
                "a Berlin Group standing order has no such frequency",
            ));
        }
    })
}

/// What the body builder needs from the bank's configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyOptions {
    /// Send a structured reference without the unstructured message.
    pub remittance_exclusive: bool,
}

/// The initiation body, and whether it is a periodic payment.
pub fn initiation_request(
    payment: &PaymentInitiation,
    options: BodyOptions,
    today: NaiveDate,
) -> Result<wire::InitiationRequest, BankError> {
    // The product is the bank's setting per currency (`products`), never an instant one
    // chosen per payment: an express payment sent as a standard one would move the money
    // later than the merchant asked, so it is refused, naming the field.
    if payment.urgency == crate::domain::Urgency::Express {
        return Err(refusal(
            "urgency",
            "not_supported",
            "this bank's payment product here has no express payment",
        ));
    }
    let creditor = &payment.creditor;
    let creditor_name = creditor
        .name
        .clone()
        .or_else(|| payment.merchant_name.clone())
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            refusal(
                "creditor.name",
                "required",
                "a Berlin Group bank needs the creditor's name",
            )
        })?;
    if creditor_name.chars().count() > MAX_CREDITOR_NAME {
        return Err(refusal(
            "creditor.name",
            "too_long",
            format!("at most {MAX_CREDITOR_NAME} characters"),
        ));
    }
    if let Some(message) = &creditor.message
        && message.chars().count() > MAX_REMITTANCE
    {
        return Err(refusal(
            "creditor.message",
            "too_long",
            format!("at most {MAX_REMITTANCE} characters"),
        ));
    }
    let structured = creditor
        .reference
        .as_ref()
        .map(|r| wire::RemittanceStructured {
            reference: r.value.clone(),
            reference_type: Some(r.kind.clone()),
        });
    // A bank that takes one of the two: refused at creation ([`crate::bank::Bank::check`])
    // rather than dropping the merchant's message without a word.
    if options.remittance_exclusive && structured.is_some() && creditor.message.is_some() {
        return Err(refusal(
            "creditor.message",
            "not_with_reference",
            "this bank takes a creditor reference or a message, not both: send one",
        ));
    }
    let unstructured = creditor.message.clone();
    let debtor_account = match payment.debtor.as_ref().and_then(|d| d.account.as_ref()) {
        Some(account) => Some(account_reference(account, "debtor.account")?),
        None => None,
    };
    let mut body = wire::InitiationRequest {
        end_to_end_identification: Some(end_to_end_id(&payment.external_id)?),
        debtor_account,
        instructed_amount: wire::Amount {
            currency: payment.amount.currency().code().to_owned(),
            amount: payment.amount.to_decimal_string(),
        },
        creditor_account: account_reference(&creditor.account, "creditor.account")?,
        creditor_name,
        remittance_information_unstructured: unstructured,
        remittance_information_structured: structured,
        requested_execution_date: payment.requested_execution_date,
        start_date: None,
        end_date: None,
        frequency: None,
        day_of_execution: None,
    };
    if let Some(recurring) = &payment.recurring {
        let start = payment.requested_execution_date.unwrap_or(today);
        let (freq, day) = frequency(&recurring.recurrence_type, start)?;
        body.requested_execution_date = None;
        body.start_date = Some(start);
        body.frequency = Some(freq);
        body.day_of_execution = day;
        body.end_date = end_date(recurring, start);
    }
    Ok(body)
}

/// The date of the last of `count` executions; `None` for 9999 ("until deleted").
fn end_date(recurring: &Recurring, start: NaiveDate) -> Option<NaiveDate> {
    if recurring.count >= 9999 {
        return None;
    }
    RecurrenceType::parse(&recurring.recurrence_type)?
        .occurrence(start, recurring.count.saturating_sub(1))
}

/// An amount as the bank wrote it, only when it is exactly representable.
pub fn money(amount: &wire::Amount) -> Option<Money> {
    let currency = Currency::from_code(&amount.currency)?;
    Money::parse(&amount.amount, currency).ok()
}

/// The details answer in the port's terms; `status` is the already mapped report.
pub fn payment_details(
    id: &BankPaymentId,
    answer: &wire::DetailsAnswer,
    status: StatusReport,
) -> PaymentDetails {
    PaymentDetails {
        bank_payment_id: id.clone(),
        external_id: answer.end_to_end_identification.clone(),
        status,
        amount: answer.instructed_amount.as_ref().and_then(money),
        creditor_account: answer.creditor_account.as_ref().and_then(account_from),
        creditor_name: answer.creditor_name.clone(),
        creditor_message: answer.remittance_information_unstructured.clone(),
        debtor_account: answer.debtor_account.as_ref().and_then(account_from),
        requested_execution_date: answer.requested_execution_date.or(answer.start_date),
        planned_execution_date: None,
        recurring: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bank::{Authentication, Creditor, Debtor, Reference, Urgency};
    use crate::domain::Country;
    use serde_json::json;

    pub(crate) fn sample_payment() -> PaymentInitiation {
        PaymentInitiation {
            country: Country::Fi,
            amount: Money::from_minor(12350, Currency::Eur).unwrap(),
            creditor: Creditor {
                account: Account {
                    kind: AccountType::Iban,
                    value: "FI1410093000123458".into(),
                },
                name: Some("Merchant Oy".into()),
                message: Some("Order 42".into()),
                reference: None,
            },
            debtor: Some(Debtor {
                account: Some(Account {
                    kind: AccountType::Iban,
                    value: "DE89370400440532013000".into(),
                }),
                message: Some("shop".into()),
            }),
            external_id: "5a3f726e-1bd9-4d7f-a3e9-7c9c7e24e092".into(),
            merchant_name: Some("Merchant".into()),
            urgency: Urgency::Standard,
            requested_execution_date: None,
            recurring: None,
            own_account_transfer: false,
            authentication: Authentication {
                state: "state-123".into(),
                redirect_uri: "https://pisgate.example/v1/callbacks/berlin".into(),
                language: None,
                authentication_method: None,
            },
        }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 5).unwrap()
    }

    #[test]
    fn berlin_group_single_body_matches_the_spec_shape() {
        let body = initiation_request(&sample_payment(), BodyOptions::default(), today()).unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "endToEndIdentification": "5a3f726e1bd94d7fa3e97c9c7e24e092",
                "debtorAccount": {"iban": "DE89370400440532013000"},
                "instructedAmount": {"currency": "EUR", "amount": "123.50"},
                "creditorAccount": {"iban": "FI1410093000123458"},
                "creditorName": "Merchant Oy",
                "remittanceInformationUnstructured": "Order 42"
            })
        );
    }

    #[test]
    fn berlin_group_refuses_an_express_payment_instead_of_sending_it_as_a_standard_one() {
        let mut p = sample_payment();
        p.urgency = Urgency::Express;
        match initiation_request(&p, BodyOptions::default(), today()) {
            Err(BankError::Validation { failures }) => {
                assert_eq!(failures[0].path.as_deref(), Some("urgency"));
                assert_eq!(failures[0].code, "not_supported");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn berlin_group_amounts_are_strings_with_the_currency_decimals() {
        let mut p = sample_payment();
        p.amount = Money::from_minor(500, Currency::Eur).unwrap();
        let body =
            serde_json::to_value(initiation_request(&p, BodyOptions::default(), today()).unwrap())
                .unwrap();
        assert_eq!(body["instructedAmount"]["amount"], json!("5.00"));
    }

    #[test]
    fn berlin_group_structured_reference_and_exclusive_remittance() {
        let mut p = sample_payment();
        p.creditor.reference = Some(Reference {
            kind: "RF".into(),
            value: "RF18539007547034".into(),
        });
        let both =
            serde_json::to_value(initiation_request(&p, BodyOptions::default(), today()).unwrap())
                .unwrap();
        assert_eq!(
            both["remittanceInformationStructured"],
            json!({"reference": "RF18539007547034", "referenceType": "RF"})
        );
        assert_eq!(both["remittanceInformationUnstructured"], json!("Order 42"));
        // A bank that takes one of the two refuses both, naming the message, rather than
        // dropping it; either one alone goes.
        let exclusive = BodyOptions {
            remittance_exclusive: true,
        };
        let BankError::Validation { failures } =
            initiation_request(&p, exclusive, today()).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(failures[0].path.as_deref(), Some("creditor.message"));
        let mut reference_only = p.clone();
        reference_only.creditor.message = None;
        let one =
            serde_json::to_value(initiation_request(&reference_only, exclusive, today()).unwrap())
                .unwrap();
        assert!(one.get("remittanceInformationUnstructured").is_none());
        assert_eq!(
            one["remittanceInformationStructured"]["reference"],
            "RF18539007547034"
        );
        let mut message_only = p.clone();
        message_only.creditor.reference = None;
        let one =
            serde_json::to_value(initiation_request(&message_only, exclusive, today()).unwrap())
                .unwrap();
        assert_eq!(one["remittanceInformationUnstructured"], json!("Order 42"));
    }

    #[test]
    fn berlin_group_refuses_over_long_fields_naming_them() {
        let mut p = sample_payment();
        p.creditor.name = Some("x".repeat(71));
        let BankError::Validation { failures } =
            initiation_request(&p, BodyOptions::default(), today()).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(failures[0].path.as_deref(), Some("creditor.name"));
        let mut p = sample_payment();
        p.creditor.message = Some("m".repeat(141));
        let BankError::Validation { failures } =
            initiation_request(&p, BodyOptions::default(), today()).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(failures[0].path.as_deref(), Some("creditor.message"));
        let mut p = sample_payment();
        p.creditor.account.kind = AccountType::Bgnr;
        assert!(initiation_request(&p, BodyOptions::default(), today()).is_err());
    }

    #[test]
    fn berlin_group_periodic_body_has_start_frequency_and_day_without_leading_zero() {
        let mut p = sample_payment();
        p.requested_execution_date = NaiveDate::from_ymd_opt(2027, 1, 7);
        p.recurring = Some(Recurring {
            count: 3,
            recurrence_type: "MONTHLY_SAME_DAY".into(),
        });
        let body =
            serde_json::to_value(initiation_request(&p, BodyOptions::default(), today()).unwrap())
                .unwrap();
        assert_eq!(body["startDate"], json!("2027-01-07"));
        assert_eq!(body["endDate"], json!("2027-03-07"));
        assert_eq!(body["frequency"], json!("Monthly"));
        assert_eq!(body["dayOfExecution"], json!("7"));
        assert!(body.get("requestedExecutionDate").is_none());
        p.recurring = Some(Recurring {
            count: 9999,
            recurrence_type: "WEEKLY".into(),
        });
        let body =
            serde_json::to_value(initiation_request(&p, BodyOptions::default(), today()).unwrap())
                .unwrap();
        assert_eq!(body["frequency"], json!("Weekly"));
        assert!(body.get("endDate").is_none());
        assert!(body.get("dayOfExecution").is_none());
    }

    #[test]
    fn berlin_group_end_to_end_id_fits_35_characters() {
        assert_eq!(end_to_end_id("abc").unwrap(), "abc");
        let simple = end_to_end_id("5a3f726e-1bd9-4d7f-a3e9-7c9c7e24e092").unwrap();
        assert_eq!(simple.len(), 32);
        assert!(end_to_end_id(&"y".repeat(36)).is_err());
    }
}
