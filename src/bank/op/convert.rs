//! OP's payments in pisgate's terms: the status table of contract §1, amounts as exact
//! decimal strings, the creation body and the details of a read. No I/O, no logging.

use super::wire;
use crate::bank::berlin_group::convert::refusal;
use crate::bank::nordea::convert::parse_minor_units;
use crate::bank::{
    Account, AccountType, BankError, BankPaymentId, Initiated, PaymentDetails, PaymentInitiation,
    StatusReport,
};
use crate::domain::{Currency, Money, PaymentStatus, Urgency};

/// The only status that means paid unless configured otherwise (`paid_statuses`).
pub const DEFAULT_PAID: &str = "Debited";
/// The statuses `paid_statuses` may name: `Debited` (required) and, by agreement with OP
/// only, `Accepted`.
pub const PAYABLE: [&str; 2] = ["Debited", "Accepted"];
/// Free text on a payment: at most 140 characters (contract §3).
pub const MAX_MESSAGE: usize = 140;

/// OP's status in pisgate's terms (contract §1). `paid` lists the statuses that mean the
/// money moved (default `Debited`). `Rejected` is `rejected` here: whether it was the
/// shopper's refusal (before any submission) is the flow's to decide. Unknown → `None`.
pub fn map_status(code: &str, paid: &[String]) -> Option<PaymentStatus> {
    if paid.iter().any(|p| p == code) {
        return Some(PaymentStatus::Paid);
    }
    Some(match code {
        "Unauthorized" | "Authorizing" => PaymentStatus::AwaitingAuthorization,
        "Authorized" | "SubmissionPending" | "Accepted" => PaymentStatus::Authorized,
        "Debited" => PaymentStatus::Paid,
        "Rejected" => PaymentStatus::Rejected,
        "Revoked" | "Cancelled" => PaymentStatus::Cancelled,
        _ => return None,
    })
}

pub fn report(code: &str, paid: &[String]) -> StatusReport {
    StatusReport {
        bank_status: code.to_owned(),
        status: map_status(code, paid),
    }
}

/// OP's status asks pisgate to submit: `Authorized` (signed, never submitted) or
/// `SubmissionPending` (a retryable submission failure).
pub fn needs_submission(bank_status: &str) -> bool {
    matches!(bank_status, "Authorized" | "SubmissionPending")
}

/// An amount as OP takes it: a decimal string with exactly two decimals.
pub fn amount_text(money: Money) -> String {
    let minor = money.minor();
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// OP's decimal-string amount read exactly (`"12.34"` → 1234 cents); `None` for anything
/// that is not a plain positive decimal with at most two decimals (no sign, exponent or
/// float rounding).
pub fn money(amount: &str, currency: &str) -> Option<Money> {
    let currency = Currency::from_code(currency.trim())?;
    Money::from_minor(parse_minor_units(amount, currency)?, currency)
}

/// The terms OP's answer to a creation echoed with another value than pisgate sent in
/// `sent` (for `amount`): [`Initiated::AMOUNT`] (another amount, or one that cannot be read
/// exactly: never rounded, so never taken as equal), [`Initiated::CURRENCY`],
/// [`Initiated::CREDITOR_ACCOUNT`] (another creditor IBAN, compared without spaces and
/// case). A term the answer does not echo contradicts nothing.
pub fn echo_mismatch(
    answer: &wire::PaymentAnswer,
    sent: &wire::PaymentRequest,
    amount: Money,
) -> Vec<&'static str> {
    let mut mismatch = Vec::new();
    let currency = answer.currency.as_deref().map(str::trim);
    if let Some(echo) = &answer.amount {
        let read = Currency::from_code(currency.unwrap_or(&sent.currency))
            .and_then(|c| parse_minor_units(echo, c));
        if read != Some(amount.minor()) {
            mismatch.push(Initiated::AMOUNT);
        }
    }
    if currency.is_some_and(|c| c != sent.currency) {
        mismatch.push(Initiated::CURRENCY);
    }
    let plain = |iban: &str| -> String {
        iban.chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase()
    };
    if answer
        .creditor
        .as_ref()
        .is_some_and(|c| plain(&c.iban) != plain(&sent.creditor.iban))
    {
        mismatch.push(Initiated::CREDITOR_ACCOUNT);
    }
    mismatch
}

fn iban(account: &Account, path: &str) -> Result<String, BankError> {
    if account.kind != AccountType::Iban {
        return Err(refusal(
            path,
            "account_not_supported",
            "OP takes SEPA payments between IBANs only",
        ));
    }
    Ok(account.value.split_whitespace().collect())
}

/// The creation body for `payment` (EUR SEPA only).
pub fn payment_request(payment: &PaymentInitiation) -> Result<wire::PaymentRequest, BankError> {
    let currency = payment.amount.currency();
    if currency != Currency::Eur {
        return Err(refusal(
            "amount.currency",
            "currency_not_supported",
            format!("OP takes EUR SEPA payments only, not {currency}"),
        ));
    }
    // OP's SEPA payment has no field for a date, a series or an express payment: dropping
    // them would move the money at once and once, while the shopper and the merchant were
    // shown another date or a standing order.
    if payment.requested_execution_date.is_some() {
        return Err(refusal(
            "execution_date",
            "not_supported",
            "OP executes its payments at once; leave execution_date out",
        ));
    }
    if payment.recurring.is_some() {
        return Err(refusal(
            "recurring",
            "not_supported",
            "pisgate's OP adapter makes single payments only",
        ));
    }
    if payment.urgency == Urgency::Express {
        return Err(refusal(
            "urgency",
            "not_supported",
            "OP's SEPA payments here have no express payment",
        ));
    }
    if payment.own_account_transfer {
        return Err(refusal(
            "own_account_transfer",
            "not_supported",
            "pisgate's OP adapter makes no own-account transfers",
        ));
    }
    let creditor = &payment.creditor;
    let reference = creditor
        .reference
        .as_ref()
        .map(|r| r.value.trim().to_owned());
    let message = creditor.message.as_ref().map(|m| m.trim().to_owned());
    if reference.is_some() && message.is_some() {
        return Err(refusal(
            "creditor.message",
            "reference_and_message",
            "OP takes a creditor reference or a message, not both",
        ));
    }
    if message
        .as_ref()
        .is_some_and(|m| m.chars().count() > MAX_MESSAGE)
    {
        return Err(refusal(
            "creditor.message",
            "too_long",
            format!("at most {MAX_MESSAGE} characters at OP"),
        ));
    }
    let debtor = match payment.debtor.as_ref().and_then(|d| d.account.as_ref()) {
        Some(account) => Some(wire::Iban {
            iban: iban(account, "debtor.account")?,
        }),
        None => None,
    };
    Ok(wire::PaymentRequest {
        amount: amount_text(payment.amount),
        currency: currency.code().to_owned(),
        creditor: wire::Creditor {
            name: creditor.name.clone(),
            iban: iban(&creditor.account, "creditor.account")?,
        },
        debtor,
        reference,
        message,
        end_to_end_id: payment.external_id.clone(),
    })
}

fn account(a: Option<&str>) -> Option<Account> {
    a.map(|value| Account {
        kind: AccountType::Iban,
        value: value.to_owned(),
    })
}

/// A read payment as pisgate's details; the amount is `None` unless read exactly.
pub fn payment_details(
    id: &BankPaymentId,
    answer: &wire::PaymentAnswer,
    status: StatusReport,
) -> PaymentDetails {
    let amount = match (&answer.amount, &answer.currency) {
        (Some(a), Some(c)) => money(a, c),
        _ => None,
    };
    PaymentDetails {
        bank_payment_id: id.clone(),
        external_id: answer.end_to_end_id.clone(),
        status,
        amount,
        creditor_account: account(answer.creditor.as_ref().map(|c| c.iban.as_str())),
        creditor_name: answer.creditor.as_ref().and_then(|c| c.name.clone()),
        creditor_message: answer.message.clone().or(answer.reference.clone()),
        debtor_account: account(answer.debtor.as_ref().map(|d| d.iban.as_str())),
        requested_execution_date: None,
        planned_execution_date: None,
        recurring: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bank::{Authentication, Creditor, Debtor, Reference};
    use crate::domain::Country;

    pub(crate) fn eur_payment() -> PaymentInitiation {
        PaymentInitiation {
            country: Country::Fi,
            amount: Money::from_minor(1234, Currency::Eur).unwrap(),
            creditor: Creditor {
                account: Account {
                    kind: AccountType::Iban,
                    value: "FI2112345600000785".into(),
                },
                name: Some("Shop Oy".into()),
                message: None,
                reference: Some(Reference {
                    kind: "RF".into(),
                    value: "RF18539007547034".into(),
                }),
            },
            debtor: None,
            external_id: "3f0c1c9e-7d7a-4c55-9a57-8f1d2f7c0a11".into(),
            merchant_name: Some("Shop".into()),
            urgency: Urgency::Standard,
            requested_execution_date: None,
            recurring: None,
            own_account_transfer: false,
            authentication: Authentication {
                state: "state-abc".into(),
                redirect_uri: "https://pisgate.example/v1/callbacks/oidc".into(),
                language: None,
                authentication_method: None,
            },
        }
    }

    fn paid() -> Vec<String> {
        vec![DEFAULT_PAID.to_owned()]
    }

    #[test]
    fn op_refuses_what_its_payment_cannot_carry_naming_the_field_instead_of_dropping_it() {
        let refused = |change: &dyn Fn(&mut PaymentInitiation), field: &str| {
            let mut p = eur_payment();
            change(&mut p);
            match payment_request(&p) {
                Err(BankError::Validation { failures }) => {
                    assert_eq!(failures[0].path.as_deref(), Some(field));
                    assert_eq!(failures[0].code, "not_supported");
                }
                other => panic!("{field}: {other:?}"),
            }
        };
        refused(
            &|p| p.requested_execution_date = chrono::NaiveDate::from_ymd_opt(2027, 3, 1),
            "execution_date",
        );
        refused(
            &|p| {
                p.recurring = Some(crate::bank::Recurring {
                    count: 12,
                    recurrence_type: "MONTHLY_SAME_DAY".into(),
                })
            },
            "recurring",
        );
        refused(&|p| p.urgency = Urgency::Express, "urgency");
        refused(&|p| p.own_account_transfer = true, "own_account_transfer");
        assert!(payment_request(&eur_payment()).is_ok());
    }

    #[test]
    fn op_statuses_map_exactly_as_the_truth_rules_say() {
        use PaymentStatus::*;
        let table = [
            ("Unauthorized", Some(AwaitingAuthorization)),
            ("Authorizing", Some(AwaitingAuthorization)),
            ("Authorized", Some(Authorized)),
            ("SubmissionPending", Some(Authorized)),
            ("Accepted", Some(Authorized)),
            ("Debited", Some(Paid)),
            ("Rejected", Some(Rejected)),
            ("Revoked", Some(Cancelled)),
            ("Cancelled", Some(Cancelled)),
            ("debited", None),
            ("ACSC", None),
            ("", None),
        ];
        for (code, expected) in table {
            assert_eq!(map_status(code, &paid()), expected, "{code}");
        }
        // Accepted is paid only when an operator says so.
        let with_accepted = vec!["Debited".to_owned(), "Accepted".to_owned()];
        assert_eq!(map_status("Accepted", &with_accepted), Some(Paid));
        assert_eq!(report("Debited", &paid()).bank_status, "Debited");
    }

    #[test]
    fn op_asks_for_a_submission_only_when_authorized_or_pending() {
        for code in ["Authorized", "SubmissionPending"] {
            assert!(needs_submission(code), "{code}");
        }
        for code in [
            "Unauthorized",
            "Authorizing",
            "Accepted",
            "Debited",
            "Rejected",
            "Revoked",
            "Cancelled",
            "authorized",
            "",
        ] {
            assert!(!needs_submission(code), "{code}");
        }
    }

    #[test]
    fn op_amounts_are_exact_decimal_strings_both_ways() {
        let eur = |m| Money::from_minor(m, Currency::Eur).unwrap();
        for (minor, text) in [(1234, "12.34"), (1, "0.01"), (100, "1.00"), (7701, "77.01")] {
            assert_eq!(amount_text(eur(minor)), text);
            assert_eq!(money(text, "EUR"), Some(eur(minor)), "{text}");
        }
        assert_eq!(money("12.3", "EUR"), Some(eur(1230)));
        assert_eq!(money("12", "EUR"), Some(eur(1200)));
        assert_eq!(money("12.340", "EUR"), Some(eur(1234)));
        // 0.1 + 0.2 style float noise, signs, exponents and excess precision are refused.
        for bad in [
            "12.345",
            "-1.00",
            "1e3",
            "0.30000000000000004",
            "",
            "abc",
            "0.00",
        ] {
            assert_eq!(money(bad, "EUR"), None, "{bad}");
        }
        assert_eq!(money("12.34", "XXX"), None);
    }

    #[test]
    fn op_creation_body_carries_the_payment_and_refuses_what_op_cannot_take() {
        let p = eur_payment();
        let body = payment_request(&p).unwrap();
        assert_eq!(body.amount, "12.34");
        assert_eq!(body.currency, "EUR");
        assert_eq!(body.creditor.iban, "FI2112345600000785");
        assert_eq!(body.reference.as_deref(), Some("RF18539007547034"));
        assert_eq!(body.end_to_end_id, p.external_id);
        assert!(body.debtor.is_none());

        let mut with_debtor = eur_payment();
        with_debtor.debtor = Some(Debtor {
            account: Some(Account {
                kind: AccountType::Iban,
                value: "FI49 5000 9420 0287 30".into(),
            }),
            message: None,
        });
        assert_eq!(
            payment_request(&with_debtor).unwrap().debtor.unwrap().iban,
            "FI4950009420028730"
        );

        let field = |e: BankError| match e {
            BankError::Validation { failures } => failures[0].path.clone().unwrap(),
            other => panic!("{other:?}"),
        };
        let mut sek = eur_payment();
        sek.amount = Money::from_minor(100, Currency::Sek).unwrap();
        assert_eq!(field(payment_request(&sek).unwrap_err()), "amount.currency");
        let mut both = eur_payment();
        both.creditor.message = Some("Order 1".into());
        assert_eq!(
            field(payment_request(&both).unwrap_err()),
            "creditor.message"
        );
        let mut long = eur_payment();
        long.creditor.reference = None;
        long.creditor.message = Some("x".repeat(141));
        assert_eq!(
            field(payment_request(&long).unwrap_err()),
            "creditor.message"
        );
        let mut bban = eur_payment();
        bban.creditor.account.kind = AccountType::BbanSe;
        assert_eq!(
            field(payment_request(&bban).unwrap_err()),
            "creditor.account"
        );
    }
}
