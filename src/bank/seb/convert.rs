//! Between the port's neutral types and SEB's wire types: the initiation body, the payment
//! as SEB holds it, and BankID progress (identification and signing) as [`BankIdProgress`].
//!
//! The body (docs/banks/seb.md "Body"):
//! - `creditorAccount`: IBAN → `iban`, Swedish BBAN → `bban`, Bankgiro → `bgnr` written
//!   `NNN-NNNN`/`NNNN-NNNN` (the dash before the last four digits), Plusgiro → `pgnr` as
//!   its digits; SEPA (EUR) takes an IBAN only. Danish/Norwegian BBANs are refused.
//! - `creditorName`: the creditor's name, else the merchant's (required for iban/bban).
//! - A structured reference of kind `OCR` → `remittanceInformationStructured` (`OCR`); any
//!   other kind is refused. Without a reference the creditor message goes to
//!   `remittanceInformationUnstructured`; with one (SEB takes only one of the two) the
//!   message goes to `creditorAccountMessage`.
//! - The debtor's own statement message → `debtorAccountMessage`.
//! - `endToEndIdentification`: pisgate's payment id (a UUID in its 32-hex form).
//!
//! Texts over SEB's limits (creditor name 70, unstructured remittance 140, debtor and
//! creditor account messages 12, end-to-end id 35) are **refused** before any call, as
//! [`BankError::Validation`] naming pisgate's field: never cut, since a cut text changes
//! what the shopper signs. Standing orders, express payments and own-account transfers are
//! refused too (not offered through this adapter).
//!
//! This module must never round an amount or log what it converts.

use super::wire;
use crate::bank::berlin_group::convert::{end_to_end_id, refusal};
use crate::bank::{
    Account, AccountType, BankError, BankIdProgress, BankIdState, BankPaymentId, Initiated,
    PaymentDetails, PaymentInitiation, StatusReport, Urgency,
};
use crate::domain::{Currency, Money};
use std::time::Duration;

pub const MAX_CREDITOR_NAME: usize = 70;
pub const MAX_REMITTANCE: usize = 140;
/// `debtorAccountMessage` (SEB's example says "max 12 chars").
pub const MAX_DEBTOR_MESSAGE: usize = 12;
/// `creditorAccountMessage` (ASSUMED from SEB's example "max 12 chars").
pub const MAX_CREDITOR_MESSAGE: usize = 12;

fn too_long(path: &str, max: usize) -> BankError {
    refusal(
        path,
        "too_long",
        format!("SEB takes at most {max} characters"),
    )
}

fn fits(text: &str, max: usize) -> bool {
    text.chars().count() <= max
}

/// A Bankgiro number (7 or 8 digits, as pisgate normalises it) as SEB writes it.
pub fn bankgiro(digits: &str) -> Option<String> {
    let digits: String = digits.chars().filter(|c| *c != '-').collect();
    if !(7..=8).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (head, tail) = digits.split_at(digits.len() - 4);
    Some(format!("{head}-{tail}"))
}

/// An account as SEB's `accountReference`. `sepa`: the product is SEPA (IBAN only).
pub fn seb_account(
    account: &Account,
    path: &str,
    sepa: bool,
) -> Result<wire::SebAccount, BankError> {
    let value = account.value.clone();
    let not_here = |what: &str| {
        refusal(
            path,
            "account_type_not_supported",
            format!("SEB does not take {what} here"),
        )
    };
    if sepa && account.kind != AccountType::Iban {
        return Err(not_here("anything but an IBAN in a SEPA payment"));
    }
    Ok(match account.kind {
        AccountType::Iban => wire::SebAccount {
            iban: Some(value),
            ..Default::default()
        },
        AccountType::BbanSe => wire::SebAccount {
            bban: Some(value),
            ..Default::default()
        },
        AccountType::Bgnr => {
            wire::SebAccount {
                bgnr: Some(bankgiro(&value).ok_or_else(|| {
                    refusal(path, "invalid", "a Bankgiro number has 7 or 8 digits")
                })?),
                ..Default::default()
            }
        }
        AccountType::Pgnr => wire::SebAccount {
            pgnr: Some(value.chars().filter(|c| *c != '-').collect()),
            ..Default::default()
        },
        AccountType::BbanDk | AccountType::BbanNo => {
            return Err(not_here("a Danish or Norwegian BBAN"));
        }
    })
}

/// The body of `POST /payments/{product}`. `sepa`: the product is SEPA.
pub fn initiation_request(
    payment: &PaymentInitiation,
    sepa: bool,
) -> Result<wire::InitiationRequest, BankError> {
    if payment.recurring.is_some() {
        return Err(refusal(
            "recurring",
            "not_supported",
            "pisgate's SEB adapter makes single payments only",
        ));
    }
    if payment.own_account_transfer {
        return Err(refusal(
            "own_account_transfer",
            "not_supported",
            "pisgate's SEB adapter makes no own-account transfers",
        ));
    }
    if payment.urgency == Urgency::Express {
        return Err(refusal(
            "urgency",
            "not_supported",
            "SEB's payment products here have no express payment",
        ));
    }
    let creditor = &payment.creditor;
    let creditor_account = seb_account(&creditor.account, "creditor.account", sepa)?;
    let creditor_name = creditor
        .name
        .clone()
        .or_else(|| payment.merchant_name.clone())
        .filter(|n| !n.trim().is_empty());
    let name_required = creditor_account.iban.is_some() || creditor_account.bban.is_some();
    match &creditor_name {
        None if name_required => {
            return Err(refusal(
                "creditor.name",
                "required",
                "SEB needs the creditor's name for an account payment",
            ));
        }
        Some(n) if !fits(n, MAX_CREDITOR_NAME) => {
            return Err(too_long("creditor.name", MAX_CREDITOR_NAME));
        }
        _ => {}
    }
    let structured = match &creditor.reference {
        Some(r) if r.kind.eq_ignore_ascii_case("OCR") => Some(wire::RemittanceStructured {
            reference: r.value.clone(),
            reference_type: "OCR".to_owned(),
        }),
        Some(_) => {
            return Err(refusal(
                "creditor.reference.kind",
                "not_supported",
                "SEB takes an OCR reference only",
            ));
        }
        None => None,
    };
    let message = creditor.message.clone().filter(|m| !m.trim().is_empty());
    let (unstructured, creditor_account_message) = match (&structured, message) {
        (_, None) => (None, None),
        (None, Some(m)) if fits(&m, MAX_REMITTANCE) => (Some(m), None),
        (None, Some(_)) => return Err(too_long("creditor.message", MAX_REMITTANCE)),
        (Some(_), Some(m)) if fits(&m, MAX_CREDITOR_MESSAGE) => (None, Some(m)),
        (Some(_), Some(_)) => {
            return Err(refusal(
                "creditor.message",
                "too_long",
                format!(
                    "with an OCR reference SEB carries the message as creditorAccountMessage, at most {MAX_CREDITOR_MESSAGE} characters"
                ),
            ));
        }
    };
    let debtor_account_message = match payment
        .debtor
        .as_ref()
        .and_then(|d| d.message.clone())
        .filter(|m| !m.trim().is_empty())
    {
        Some(m) if fits(&m, MAX_DEBTOR_MESSAGE) => Some(m),
        Some(_) => return Err(too_long("debtor.message", MAX_DEBTOR_MESSAGE)),
        None => None,
    };
    let debtor_account = match payment.debtor.as_ref().and_then(|d| d.account.as_ref()) {
        Some(account) => {
            let a = seb_account(account, "debtor.account", sepa)?;
            if a.bgnr.is_some() || a.pgnr.is_some() {
                return Err(refusal(
                    "debtor.account",
                    "account_type_not_supported",
                    "a debtor account is an IBAN or a BBAN",
                ));
            }
            Some(a)
        }
        None => None,
    };
    Ok(wire::InitiationRequest {
        instructed_amount: wire::Amount {
            currency: payment.amount.currency().code().to_owned(),
            amount: payment.amount.to_decimal_string(),
        },
        creditor_account,
        creditor_name,
        debtor_account,
        remittance_information_unstructured: unstructured,
        remittance_information_structured: structured,
        debtor_account_message,
        creditor_account_message,
        requested_execution_date: payment.requested_execution_date,
        end_to_end_identification: Some(end_to_end_id(&payment.external_id)?),
    })
}

fn account_from(a: &wire::SebAccount) -> Option<Account> {
    let (kind, value) = if let Some(v) = &a.iban {
        (AccountType::Iban, v)
    } else if let Some(v) = &a.bban {
        (AccountType::BbanSe, v)
    } else if let Some(v) = &a.bgnr {
        (AccountType::Bgnr, v)
    } else if let Some(v) = &a.pgnr {
        (AccountType::Pgnr, v)
    } else {
        return None;
    };
    Some(Account {
        kind,
        value: value.clone(),
    })
}

/// The payment as SEB holds it; `status` is the already mapped report.
pub fn payment_details(
    id: &BankPaymentId,
    answer: &wire::DetailsAnswer,
    status: StatusReport,
) -> PaymentDetails {
    PaymentDetails {
        bank_payment_id: id.clone(),
        external_id: answer.end_to_end_identification.clone(),
        status,
        amount: answer.instructed_amount.as_ref().and_then(|a| a.money()),
        creditor_account: answer.creditor_account.as_ref().and_then(account_from),
        creditor_name: answer.creditor_name.clone(),
        creditor_message: answer
            .remittance_information_unstructured
            .clone()
            .or_else(|| answer.creditor_account_message.clone()),
        debtor_account: answer.debtor_account.as_ref().and_then(account_from),
        requested_execution_date: answer.requested_execution_date,
        planned_execution_date: None,
        recurring: None,
    }
}

/// The terms of `sent` that SEB's echo of the instructed amount contradicts:
/// [`Initiated::CURRENCY`] when the currency differs, [`Initiated::AMOUNT`] when the amount
/// differs or cannot be read exactly in the echoed currency (an exponent, more decimals
/// than the currency has: never rounded, so never taken as equal).
pub fn amount_mismatch(echo: &wire::WireAmount, sent: Money) -> Vec<&'static str> {
    let mut mismatch = Vec::new();
    let currency = Currency::from_code(echo.currency.trim());
    let same_currency = currency == Some(sent.currency());
    let amount = currency.and_then(|c| wire::exact_money(echo.amount.get(), c));
    if amount.is_none_or(|m| m.minor() != sent.minor()) {
        mismatch.push(Initiated::AMOUNT);
    }
    if !same_currency {
        mismatch.push(Initiated::CURRENCY);
    }
    mismatch
}

/// Whether a currency's product is SEPA (EUR), where SEB takes an IBAN only.
pub fn is_sepa(currency: Currency) -> bool {
    currency == Currency::Eur
}

/// An identification order's progress (`GET /auth/v4/authorizations/{id}`): `PENDING` →
/// pending, `COMPLETE` → complete, `FAILED` → failed; an unknown status is pending (read
/// again), never an end.
pub fn identification_progress(answer: wire::AuthorizationStatus) -> BankIdProgress {
    let state = match answer.status.to_ascii_uppercase().as_str() {
        "COMPLETE" => BankIdState::Complete,
        "FAILED" => BankIdState::Failed,
        _ => BankIdState::Pending,
    };
    let pending = state == BankIdState::Pending;
    BankIdProgress {
        state,
        bank_status: answer.status,
        hint_code: answer.hint_code.filter(|h| !h.is_empty()),
        qr_data: answer.qr_token.filter(|_| pending),
        autostart_token: answer.autostart_token.filter(|_| pending),
        psu_message: None,
        poll_delay: answer.poll_delay.map(Duration::from_millis),
    }
}

/// The tppMessage code of "a BankID order was already running for the shopper".
pub const ALREADY_IN_PROGRESS: &str = "ALREADY_IN_PROGRESS";

/// A signing order's progress: `started` (and any unknown status) → pending, `finalised`
/// (SEB's examples also spell it `finalized`) → complete, `failed` → failed. A
/// `tppMessages` entry `ALREADY_IN_PROGRESS` is failed with that hint code, whatever
/// `scaStatus` says (SEB cancels both orders).
pub fn signing_progress(order: &wire::SigningOrder) -> BankIdProgress {
    let already = order
        .tpp_messages
        .iter()
        .any(|m| m.code == ALREADY_IN_PROGRESS);
    let state = if already {
        BankIdState::Failed
    } else {
        match order.sca_status.as_str() {
            "finalised" | "finalized" => BankIdState::Complete,
            "failed" => BankIdState::Failed,
            _ => BankIdState::Pending,
        }
    };
    let pending = state == BankIdState::Pending;
    BankIdProgress {
        state,
        bank_status: order.sca_status.clone(),
        hint_code: if already {
            Some(ALREADY_IN_PROGRESS.to_owned())
        } else {
            order.hint_code.clone().filter(|h| !h.is_empty())
        },
        qr_data: order.qr_data.clone().filter(|_| pending),
        autostart_token: order.auto_start_token.clone().filter(|_| pending),
        psu_message: order.psu_message.clone(),
        poll_delay: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bank::{Authentication, Creditor, Debtor, Reference};
    use crate::domain::{Country, Money};
    use serde_json::json;

    pub(crate) fn sek_payment() -> PaymentInitiation {
        PaymentInitiation {
            country: Country::Se,
            amount: Money::from_minor(34550, Currency::Sek).unwrap(),
            creditor: Creditor {
                account: Account {
                    kind: AccountType::Bgnr,
                    value: "56781234".into(),
                },
                name: Some("Butiken AB".into()),
                message: None,
                reference: Some(Reference {
                    kind: "OCR".into(),
                    value: "1993112196394".into(),
                }),
            },
            debtor: Some(Debtor {
                account: None,
                message: Some("Butiken".into()),
            }),
            external_id: "5a3f726e-1bd9-4d7f-a3e9-7c9c7e24e092".into(),
            merchant_name: Some("Butiken".into()),
            urgency: Urgency::Standard,
            requested_execution_date: None,
            recurring: None,
            own_account_transfer: false,
            authentication: Authentication {
                state: "state-123".into(),
                redirect_uri: "https://pisgate.example/v1/bankid".into(),
                language: Some("sv".into()),
                authentication_method: None,
            },
        }
    }

    fn refused_path(result: Result<wire::InitiationRequest, BankError>) -> String {
        match result {
            Err(BankError::Validation { failures }) => failures[0].path.clone().unwrap(),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn seb_bankgiro_payment_with_ocr_has_the_documented_shape() {
        let body = initiation_request(&sek_payment(), false).unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "instructedAmount": {"currency": "SEK", "amount": "345.50"},
                "creditorAccount": {"bgnr": "5678-1234"},
                "creditorName": "Butiken AB",
                "remittanceInformationStructured": {"reference": "1993112196394", "referenceType": "OCR"},
                "debtorAccountMessage": "Butiken",
                "endToEndIdentification": "5a3f726e1bd94d7fa3e97c9c7e24e092"
            })
        );
    }

    #[test]
    fn seb_accounts_map_to_iban_bban_bgnr_and_pgnr() {
        let mut p = sek_payment();
        p.creditor.reference = None;
        p.creditor.message = Some("Order 42".into());
        p.creditor.account = Account {
            kind: AccountType::Pgnr,
            value: "12345678".into(),
        };
        let body = serde_json::to_value(initiation_request(&p, false).unwrap()).unwrap();
        assert_eq!(body["creditorAccount"], json!({"pgnr": "12345678"}));
        assert_eq!(body["remittanceInformationUnstructured"], "Order 42");
        assert!(body.get("creditorAccountMessage").is_none());
        assert_eq!(bankgiro("1234567").as_deref(), Some("123-4567"));
        assert_eq!(bankgiro("8080-1111").as_deref(), Some("8080-1111"));
        assert_eq!(bankgiro("123456"), None);
        p.creditor.account = Account {
            kind: AccountType::BbanSe,
            value: "50000000054400047903".into(),
        };
        let body = serde_json::to_value(initiation_request(&p, false).unwrap()).unwrap();
        assert_eq!(
            body["creditorAccount"],
            json!({"bban": "50000000054400047903"})
        );
        p.creditor.account.kind = AccountType::BbanNo;
        assert_eq!(
            refused_path(initiation_request(&p, false)),
            "creditor.account"
        );
        // SEPA: an IBAN only.
        p.creditor.account = Account {
            kind: AccountType::Bgnr,
            value: "56781234".into(),
        };
        assert_eq!(
            refused_path(initiation_request(&p, true)),
            "creditor.account"
        );
    }

    #[test]
    fn seb_a_message_beside_an_ocr_reference_is_the_creditor_account_message() {
        let mut p = sek_payment();
        p.creditor.message = Some("Order 42".into());
        let body = serde_json::to_value(initiation_request(&p, false).unwrap()).unwrap();
        assert_eq!(body["creditorAccountMessage"], "Order 42");
        assert!(body.get("remittanceInformationUnstructured").is_none());
    }

    #[test]
    fn seb_texts_over_its_limits_are_refused_naming_the_field_never_cut() {
        let mut p = sek_payment();
        p.debtor.as_mut().unwrap().message = Some("x".repeat(13));
        assert_eq!(
            refused_path(initiation_request(&p, false)),
            "debtor.message"
        );
        let mut p = sek_payment();
        p.creditor.message = Some("thirteen char".into());
        assert_eq!(
            refused_path(initiation_request(&p, false)),
            "creditor.message"
        );
        let mut p = sek_payment();
        p.creditor.reference = None;
        p.creditor.message = Some("é".repeat(141));
        assert_eq!(
            refused_path(initiation_request(&p, false)),
            "creditor.message"
        );
        p.creditor.message = Some("é".repeat(140));
        assert!(initiation_request(&p, false).is_ok());
        let mut p = sek_payment();
        p.creditor.name = Some("n".repeat(71));
        assert_eq!(refused_path(initiation_request(&p, false)), "creditor.name");
        let mut p = sek_payment();
        p.creditor.reference = Some(Reference {
            kind: "RF".into(),
            value: "RF18539007547034".into(),
        });
        assert_eq!(
            refused_path(initiation_request(&p, false)),
            "creditor.reference.kind"
        );
        let mut p = sek_payment();
        p.creditor.account = Account {
            kind: AccountType::Iban,
            value: "SE4550000000058398257466".into(),
        };
        p.creditor.name = None;
        p.merchant_name = None;
        assert_eq!(refused_path(initiation_request(&p, false)), "creditor.name");
    }

    #[test]
    fn seb_identification_statuses_map_to_bankid_states() {
        let read =
            |v: serde_json::Value| identification_progress(serde_json::from_value(v).unwrap());
        let pending = read(
            json!({"status": "PENDING", "hint_code": "outstandingTransaction",
            "poll_delay": 1000, "qr_token": "bankid.a.1.b", "autostart_token": "ast"}),
        );
        assert_eq!(pending.state, BankIdState::Pending);
        assert_eq!(pending.qr_data.as_deref(), Some("bankid.a.1.b"));
        assert_eq!(pending.autostart_token.as_deref(), Some("ast"));
        assert_eq!(pending.poll_delay, Some(Duration::from_secs(1)));
        let done = read(json!({"status": "COMPLETE", "hint_code": "", "qr_token": "stale"}));
        assert_eq!(done.state, BankIdState::Complete);
        assert_eq!((done.qr_data, done.hint_code), (None, None));
        let failed = read(json!({"status": "FAILED", "hint_code": "sebTimeout"}));
        assert_eq!(failed.state, BankIdState::Failed);
        assert_eq!(failed.hint_code.as_deref(), Some("sebTimeout"));
        assert_eq!(
            read(json!({"status": "SOMETHING_NEW"})).state,
            BankIdState::Pending
        );
    }

    #[test]
    fn seb_signing_statuses_and_already_in_progress_map_to_bankid_states() {
        let read = |v: serde_json::Value| {
            let order: wire::SigningOrder = serde_json::from_value(v).unwrap();
            signing_progress(&order)
        };
        let started = read(json!({"authorisationId": "a", "scaStatus": "started",
            "qrData": "bankid.x", "autoStartToken": "t", "hintCode": "outstandingTransaction"}));
        assert_eq!(started.state, BankIdState::Pending);
        assert_eq!(started.hint_code.as_deref(), Some("outstandingTransaction"));
        assert_eq!(started.qr_data.as_deref(), Some("bankid.x"));
        for done in ["finalised", "finalized"] {
            assert_eq!(
                read(json!({"authorisationId": "a", "scaStatus": done})).state,
                BankIdState::Complete
            );
        }
        let refused =
            read(json!({"authorisationId": "a", "scaStatus": "failed", "hintCode": "userCancel"}));
        assert_eq!(refused.state, BankIdState::Failed);
        assert_eq!(refused.hint_code.as_deref(), Some("userCancel"));
        // SEB's own example (Signing External API 1.0.0 release notes).
        let already = read(json!({
            "authorisationId": "13c853a9-ed7d-4aa1-83a4-44e1b10a46f2", "scaStatus": "failed",
            "scaMethod": {"authenticationType": "PHOTO_OTP", "authenticationMethodId": "bankIdQr",
                "name": "Mobilt BankId with QR-code", "explanation": "Mobilt BankId with QR-code scanning",
                "methodType": "DECOUPLED"},
            "psuMessage": "En identifiering eller underskrift pågår redan för ditt personnummer. Försök igen.",
            "orderIds": ["019ae839-03ee-7999-a01b-9027fd471c74"],
            "tppMessages": [{"category": "ERROR", "code": "ALREADY_IN_PROGRESS",
                "text": "A BankID signing transaction was already in progress for the PSU."}],
            "_links": {}
        }));
        assert_eq!(already.state, BankIdState::Failed);
        assert_eq!(already.hint_code.as_deref(), Some("ALREADY_IN_PROGRESS"));
        assert!(already.psu_message.unwrap().starts_with("En identifiering"));
        assert_eq!(
            read(json!({"authorisationId": "a", "scaStatus": "received"})).state,
            BankIdState::Pending
        );
    }
}
