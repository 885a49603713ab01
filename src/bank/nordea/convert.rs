//! Conversions between the bank port's neutral types and Nordea's wire types.
//!
//! Outbound it is exact (amounts from integer minor units to the currency's decimals, dates
//! as `YYYY-MM-DD`); inbound it is careful: an amount that cannot be read exactly becomes
//! `None`, never a rounded number, and no floating point is used anywhere.

use super::status::{NordeaStatus, map_status};
use super::wire;
use crate::bank::{
    Account, AccountType, BankError, BankLinks, BankPaymentId, CancelError, CancelOutcome,
    FundsAvailability, Initiated, PaymentDetails, PaymentInitiation, Recurring, ScaStep,
    StatusReport, TokenSet, Urgency,
};
use crate::domain::{Currency, Money};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use secrecy::SecretString;
use std::time::Duration;

/// Nordea's documented access token lifetime ("about 3600 s"), used only when a token
/// answer leaves `expires_in` out (and then with a warning).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

fn account(a: &Account, currency: Currency) -> wire::AccountBody {
    wire::AccountBody {
        value: a.value.clone(),
        currency: Some(currency.code().to_owned()),
        kind: a.kind.as_str().to_owned(),
    }
}

/// The v2 initiation body. `is_own_account_transfer` is only sent when true (absent means
/// false at Nordea, and Finland does not accept the field at all).
pub fn initiation_request(p: &PaymentInitiation) -> wire::InitiationRequest {
    let currency = p.amount.currency();
    wire::InitiationRequest {
        payment: wire::PaymentBody {
            amount: wire::DecimalAmount(p.amount.to_decimal_string()),
            currency: currency.code().to_owned(),
            creditor: wire::CreditorBody {
                account: account(&p.creditor.account, currency),
                name: p.creditor.name.clone(),
                message: p.creditor.message.clone(),
                reference: p.creditor.reference.as_ref().map(|r| wire::ReferenceBody {
                    kind: r.kind.clone(),
                    value: r.value.clone(),
                }),
            },
            debtor: p.debtor.as_ref().map(|d| wire::DebtorBody {
                account: d.account.as_ref().map(|a| account(a, currency)),
                message: d.message.clone(),
            }),
            external_id: Some(p.external_id.clone()),
            merchant: p.merchant_name.clone(),
            urgency: Some(
                match p.urgency {
                    Urgency::Standard => "standard",
                    Urgency::Express => "express",
                }
                .to_owned(),
            ),
            requested_execution_date: p
                .requested_execution_date
                .map(|d| d.format("%Y-%m-%d").to_string()),
            recurring: p.recurring.as_ref().map(|r| wire::RecurringBody {
                count: r.count,
                recurrence_type: r.recurrence_type.clone(),
            }),
            is_own_account_transfer: p.own_account_transfer.then_some(true),
        },
        authentication: Some(wire::AuthenticationBody {
            state: p.authentication.state.clone(),
            redirect_uri: p.authentication.redirect_uri.clone(),
            language: p.authentication.language.clone(),
            authentication_method: p.authentication.authentication_method.clone(),
        }),
    }
}

pub fn status_report(bank_status: &str) -> StatusReport {
    StatusReport {
        bank_status: bank_status.to_owned(),
        status: map_status(bank_status),
    }
}

fn unexpected(detail: impl Into<String>) -> BankError {
    BankError::Unexpected {
        status: None,
        detail: detail.into(),
    }
}

fn bank_payment_id(id: &str) -> Result<BankPaymentId, BankError> {
    BankPaymentId::parse(id).ok_or_else(|| unexpected("the bank answered an unusable payment id"))
}

/// The 201 answer: signing URL and payment id are required; the status is the one the
/// answer gives, else the documented initial `PendingUserApproval`.
pub fn initiated(answer: &wire::InitiationAnswer) -> Result<Initiated, BankError> {
    let url = answer
        .signing_url()
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| unexpected("initiation answer without a redirect link"))?;
    let id = answer
        .payment_id()
        .ok_or_else(|| unexpected("initiation answer without a payment id or status link"))?;
    let bank_status = answer
        .status
        .as_deref()
        .unwrap_or(NordeaStatus::INITIAL.as_str());
    Ok(Initiated {
        bank_payment_id: bank_payment_id(id)?,
        next: ScaStep::Redirect {
            url: url.to_owned(),
        },
        status: status_report(bank_status),
        links: BankLinks::default(),
        // Nordea's answer echoes no terms.
        echo_mismatch: Vec::new(),
    })
}

/// Reads a decimal amount exactly into minor units: `"10"` → 1000, `"14.24"` → 1424,
/// `"1.5"` → 150. Refuses signs, exponents, and non-zero digits past the currency's
/// decimals.
pub fn parse_minor_units(text: &str, currency: Currency) -> Option<i64> {
    let decimals = currency.decimals() as usize;
    let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    let (kept, rest) = fraction.split_at(fraction.len().min(decimals));
    if rest.bytes().any(|b| b != b'0') {
        return None;
    }
    let scale = 10i64.checked_pow(decimals as u32)?;
    let mut minor = whole.parse::<i64>().ok()?.checked_mul(scale)?;
    if !kept.is_empty() {
        let padded = format!("{kept:0<decimals$}");
        minor = minor.checked_add(padded.parse::<i64>().ok()?)?;
    }
    Some(minor)
}

fn money(amount: &wire::DecimalAmount, currency: &str) -> Option<Money> {
    let currency = Currency::from_code(currency.trim())?;
    Money::from_minor(parse_minor_units(&amount.0, currency)?, currency)
}

fn date(text: Option<&str>) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text?.trim(), "%Y-%m-%d").ok()
}

fn account_from_wire(a: &wire::AccountBody) -> Option<Account> {
    Some(Account {
        kind: AccountType::parse(a.kind.trim())?,
        value: a.value.clone(),
    })
}

pub fn payment_details(d: &wire::PaymentDetailsAnswer) -> Result<PaymentDetails, BankError> {
    let amount = match (&d.amount, &d.currency, &d.instructed_amount) {
        (Some(amount), Some(currency), _) => money(amount, currency),
        (_, _, Some(instructed)) => money(&instructed.amount, &instructed.currency),
        _ => None,
    };
    let creditor = d.creditor.as_ref();
    Ok(PaymentDetails {
        bank_payment_id: bank_payment_id(&d.payment_id)?,
        external_id: d.external_id.clone(),
        status: status_report(&d.status),
        amount,
        creditor_account: creditor.and_then(|c| account_from_wire(&c.account)),
        creditor_name: creditor.and_then(|c| c.name.clone()),
        creditor_message: creditor.and_then(|c| c.message.clone()),
        debtor_account: d
            .debtor
            .as_ref()
            .and_then(|x| x.account.as_ref())
            .and_then(account_from_wire),
        requested_execution_date: date(d.requested_execution_date.as_deref()),
        planned_execution_date: date(d.planned_execution_date.as_deref()),
        recurring: d.recurring.as_ref().map(|r| Recurring {
            count: r.count,
            recurrence_type: r.recurrence_type.clone(),
        }),
    })
}

pub fn funds(d: &wire::PaymentDetailsAnswer) -> Result<FundsAvailability, BankError> {
    Ok(FundsAvailability {
        available: d.availability_of_funds.map(|b| b.0),
        details: payment_details(d)?,
    })
}

pub fn bulk_delete_request(ids: &[BankPaymentId]) -> wire::BulkDeleteRequest {
    wire::BulkDeleteRequest {
        payments: ids
            .iter()
            .map(|id| wire::PaymentRef {
                payment_id: id.as_str().to_owned(),
            })
            .collect(),
    }
}

pub fn cancel_outcome(answer: &wire::BulkDeleteAnswer) -> Result<CancelOutcome, BankError> {
    Ok(CancelOutcome {
        deleted: answer
            .response
            .iter()
            .map(|id| bank_payment_id(id))
            .collect::<Result<_, _>>()?,
        errors: answer
            .errors
            .iter()
            .map(|e| CancelError {
                bank_payment_id: e.payment_id.clone(),
                code: e.code.clone(),
                description: e.description.clone(),
            })
            .collect(),
        needs_authorisation: Vec::new(),
    })
}

/// A token answer as a [`TokenSet`]. Takes the answer by value so that the token strings
/// move into secrets instead of being copied.
pub fn token_set(answer: wire::TokenAnswer) -> Result<TokenSet, BankError> {
    let claims = answer.id_token.as_deref().and_then(id_token_claims);
    let shopper_id = claims.as_ref().and_then(subject);
    let issued_at = claims.as_ref().and_then(issued_at);
    if answer.access_token.is_empty() {
        return Err(unexpected("token answer with an empty access token"));
    }
    // No refresh token (or an empty one): the bank keeps the one it had (RFC 6749 §6), and
    // so do we; it is not a reason to throw the new access token away.
    let refresh_token = answer.refresh_token.filter(|t| !t.is_empty());
    let expires_in = match answer.expires_in {
        Some(seconds) => Duration::from_secs(seconds.0),
        None => {
            tracing::warn!(
                assumed_seconds = DEFAULT_TOKEN_LIFETIME.as_secs(),
                "token answer without expires_in"
            );
            DEFAULT_TOKEN_LIFETIME
        }
    };
    Ok(TokenSet {
        access_token: SecretString::from(answer.access_token),
        refresh_token: refresh_token.map(SecretString::from),
        expires_in,
        token_type: answer.token_type.unwrap_or_else(|| "Bearer".to_owned()),
        shopper_id,
        issued_at,
    })
}

/// The claims of an OpenID Connect ID token (`header.claims.signature`, each part base64url,
/// padding tolerated; an unsigned token with an empty signature part is read the same way).
/// The token's signature is not checked: it came straight from the bank over TLS as the
/// answer to our own signed request, and its claims are only used to key and order the
/// shopper's token, never to authorise anything.
fn id_token_claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.is_object().then_some(claims)
}

/// The `sub` claim: the shopper's identity at the bank. Empty or not a string → `None`.
fn subject(claims: &serde_json::Value) -> Option<String> {
    claims
        .get("sub")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The `iat` claim: a JSON number of seconds since the epoch, whole or fractional, kept to
/// the microsecond. Anything else (a string, a negative or absurd number) → `None`.
fn issued_at(claims: &serde_json::Value) -> Option<DateTime<Utc>> {
    let iat = claims.get("iat")?;
    if let Some(seconds) = iat.as_i64() {
        return DateTime::from_timestamp(seconds, 0).filter(|_| seconds >= 0);
    }
    let seconds = iat.as_f64().filter(|s| s.is_finite() && *s >= 0.0)?;
    // Below 2^53 µs (year 2255) the nearest f64 to a 6-decimal timestamp times 10^6 rounds
    // back to exactly those microseconds.
    let micros = (seconds * 1_000_000.0).round();
    if micros >= 9_007_199_254_740_992.0 {
        return None;
    }
    // Whole, non-negative and below 2^53: the cast is exact.
    DateTime::from_timestamp_micros(micros as i64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bank::{Authentication, Creditor, Debtor, Recurring, Reference};
    use crate::domain::{Country, PaymentStatus};

    pub(crate) fn sample_payment(country: Country) -> PaymentInitiation {
        let currency = country.currency();
        PaymentInitiation {
            country,
            amount: Money::from_minor(1005, currency).unwrap(),
            creditor: Creditor {
                account: Account {
                    kind: AccountType::Iban,
                    value: "FI1450000120236228".into(),
                },
                name: Some("Test Name".into()),
                message: Some("Beneficiary message".into()),
                reference: Some(Reference {
                    kind: "RF".into(),
                    value: "RF18539007547034".into(),
                }),
            },
            debtor: Some(Debtor {
                account: None,
                message: Some("Pay a3fcec98".into()),
            }),
            external_id: "0190a0d4-0000-7000-8000-000000000001".into(),
            merchant_name: Some("shop".into()),
            urgency: Urgency::Standard,
            requested_execution_date: NaiveDate::from_ymd_opt(2025, 3, 27),
            recurring: Some(Recurring {
                count: 3,
                recurrence_type: "MONTHLY_SAME_DAY".into(),
            }),
            own_account_transfer: false,
            authentication: Authentication {
                state: "st-1".into(),
                redirect_uri: "https://pisgate.example/v1/callbacks/nordea".into(),
                language: Some("en".into()),
                authentication_method: None,
            },
        }
    }

    #[test]
    fn builds_the_exact_v2_initiation_body() {
        let body = serde_json::to_value(initiation_request(&sample_payment(Country::Fi))).unwrap();
        let expected = serde_json::json!({
            "payment": {
                "amount": "10.05",
                "currency": "EUR",
                "creditor": {
                    "account": {"value": "FI1450000120236228", "currency": "EUR", "type": "IBAN"},
                    "name": "Test Name",
                    "message": "Beneficiary message",
                    "reference": {"type": "RF", "value": "RF18539007547034"}
                },
                "debtor": {"message": "Pay a3fcec98"},
                "external_id": "0190a0d4-0000-7000-8000-000000000001",
                "merchant": "shop",
                "urgency": "standard",
                "requested_execution_date": "2025-03-27",
                "recurring": {"count": 3, "recurrence_type": "MONTHLY_SAME_DAY"}
            },
            "authentication": {
                "state": "st-1",
                "redirect_uri": "https://pisgate.example/v1/callbacks/nordea",
                "language": "en"
            }
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn sends_own_account_transfer_and_express_only_when_asked() {
        let mut p = sample_payment(Country::Se);
        p.own_account_transfer = true;
        p.urgency = Urgency::Express;
        let body = serde_json::to_value(initiation_request(&p)).unwrap();
        assert_eq!(body["payment"]["is_own_account_transfer"], true);
        assert_eq!(body["payment"]["urgency"], "express");
        assert_eq!(body["payment"]["currency"], "SEK");
    }

    #[test]
    fn reads_decimal_amounts_exactly() {
        let eur = Currency::Eur;
        assert_eq!(parse_minor_units("10", eur), Some(1000));
        assert_eq!(parse_minor_units("14.24", eur), Some(1424));
        assert_eq!(parse_minor_units("1.5", eur), Some(150));
        assert_eq!(parse_minor_units("0.07", eur), Some(7));
        assert_eq!(parse_minor_units("3.100", eur), Some(310));
        for bad in [
            "",
            ".5",
            "-1",
            "+1",
            "1e2",
            "1.234",
            "1,00",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(parse_minor_units(bad, eur), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_details_from_v2_and_v3_amount_shapes() {
        let v2: wire::PaymentDetailsAnswer = serde_json::from_value(serde_json::json!({
            "payment_id": "69bf731d-41af-47e0-b69b-dab4835b60c3", "amount": "4", "currency": "SEK",
            "debtor": {"account": {"type": "BBAN_SE", "value": "41351300039", "currency": "SEK"}},
            "creditor": {"account": {"type": "BBAN_SE", "value": "43951000887"}, "name": "Test Name"},
            "status": "Paid", "requested_execution_date": "2024-09-23", "planned_execution_date": "bad"
        }))
        .unwrap();
        let d = payment_details(&v2).unwrap();
        assert_eq!(d.amount, Money::from_minor(400, Currency::Sek));
        assert_eq!(d.status.status, Some(PaymentStatus::Paid));
        assert_eq!(d.debtor_account.unwrap().kind, AccountType::BbanSe);
        assert_eq!(
            d.requested_execution_date,
            NaiveDate::from_ymd_opt(2024, 9, 23)
        );
        assert_eq!(d.planned_execution_date, None);

        let v3: wire::PaymentDetailsAnswer = serde_json::from_value(serde_json::json!({
            "payment_id": "051800e8", "instructed_amount": {"amount": "1.38", "currency": "DKK"},
            "status": "Confirmed", "availability_of_funds": "false"
        }))
        .unwrap();
        let f = funds(&v3).unwrap();
        assert_eq!(f.available, Some(false));
        assert_eq!(f.details.amount, Money::from_minor(138, Currency::Dkk));
        assert_eq!(f.details.status.status, Some(PaymentStatus::Authorized));
    }

    #[test]
    fn token_answers_become_token_sets_with_the_id_token_subject() {
        use secrecy::ExposeSecret as _;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"psu-42","aud":"client"}"#);
        let answer = wire::TokenAnswer {
            access_token: "AT".into(),
            refresh_token: Some("RT".into()),
            expires_in: Some(wire::FlexU64(3599)),
            token_type: None,
            id_token: Some(format!("eyJhbGciOiJub25lIn0.{claims}.sig")),
        };
        let t = token_set(answer.clone()).unwrap();
        assert_eq!(t.access_token.expose_secret(), "AT");
        assert_eq!(t.refresh_token.unwrap().expose_secret(), "RT");
        assert_eq!(t.expires_in, Duration::from_secs(3599));
        assert_eq!(t.token_type, "Bearer");
        assert_eq!(t.shopper_id.as_deref(), Some("psu-42"));
        assert_eq!(t.issued_at, None, "no iat claim");

        let plain = wire::TokenAnswer {
            expires_in: None,
            id_token: Some("garbage".into()),
            ..answer.clone()
        };
        let t = token_set(plain).unwrap();
        assert_eq!(t.expires_in, DEFAULT_TOKEN_LIFETIME);
        assert_eq!(t.shopper_id, None);
        assert_eq!(t.issued_at, None);

        for missing in [None, Some(String::new())] {
            let no_refresh = wire::TokenAnswer {
                refresh_token: missing,
                ..answer.clone()
            };
            let t = token_set(no_refresh).expect("the new access token is kept");
            assert_eq!(t.access_token.expose_secret(), "AT");
            assert!(t.refresh_token.is_none());
        }
    }

    fn with_claims(claims: &str) -> TokenSet {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        token_set(wire::TokenAnswer {
            access_token: "AT".into(),
            refresh_token: Some("RT".into()),
            expires_in: Some(wire::FlexU64(3600)),
            token_type: Some("Bearer".into()),
            id_token: Some(format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(claims.as_bytes())
            )),
        })
        .unwrap()
    }

    #[test]
    fn the_id_token_issue_time_is_read_to_the_microsecond() {
        let t = with_claims(r#"{"sub":"psu-7","iat":1795000000.123456}"#);
        assert_eq!(t.shopper_id.as_deref(), Some("psu-7"));
        let at = t.issued_at.expect("an issue time");
        assert_eq!(at.timestamp(), 1_795_000_000);
        assert_eq!(at.timestamp_subsec_micros(), 123_456);
        assert_eq!(at.timestamp_micros(), 1_795_000_000_123_456);

        let whole = with_claims(r#"{"sub":"psu-7","iat":1795000000}"#);
        assert_eq!(
            whole.issued_at,
            DateTime::from_timestamp(1_795_000_000, 0),
            "whole seconds"
        );
        let tenth = with_claims(r#"{"iat":1795000000.1}"#);
        assert_eq!(
            tenth.issued_at.map(|t| t.timestamp_micros()),
            Some(1_795_000_000_100_000)
        );
        assert_eq!(tenth.shopper_id, None, "no sub");
        // Successive microseconds stay apart and ordered.
        let a = with_claims(r#"{"iat":1795000000.000001}"#)
            .issued_at
            .unwrap();
        let b = with_claims(r#"{"iat":1795000000.000002}"#)
            .issued_at
            .unwrap();
        assert!(a < b, "{a} < {b}");
    }

    #[test]
    fn a_garbled_or_absent_issue_time_is_none() {
        for claims in [
            r#"{"sub":"psu-7"}"#,
            r#"{"sub":"psu-7","iat":"1795000000"}"#,
            r#"{"sub":"psu-7","iat":null}"#,
            r#"{"sub":"psu-7","iat":-5}"#,
            r#"{"sub":"psu-7","iat":-5.5}"#,
            r#"{"sub":"psu-7","iat":1e300}"#,
            r#"{"sub":"psu-7","iat":{"s":1}}"#,
        ] {
            let t = with_claims(claims);
            assert_eq!(t.issued_at, None, "{claims}");
            assert_eq!(t.shopper_id.as_deref(), Some("psu-7"), "{claims}");
        }
        let t = with_claims("[1, 2]");
        assert_eq!((t.shopper_id, t.issued_at), (None, None));
    }

    #[test]
    fn an_initiation_answer_without_status_starts_pending_user_approval() {
        let answer = wire::InitiationAnswer {
            links: vec![
                wire::Link {
                    rel: "redirect".into(),
                    href: "https://sign.example/?x=1".into(),
                },
                wire::Link {
                    rel: "status".into(),
                    href: "/v2/single-sca-payments/pid-1/status".into(),
                },
            ],
            payment_id: None,
            status: None,
        };
        let i = initiated(&answer).unwrap();
        assert_eq!(i.bank_payment_id.as_str(), "pid-1");
        assert_eq!(i.status.bank_status, "PendingUserApproval");
        assert_eq!(i.status.status, Some(PaymentStatus::AwaitingAuthorization));

        let no_redirect = wire::InitiationAnswer {
            links: answer.links[1..].to_vec(),
            ..answer
        };
        assert!(matches!(
            initiated(&no_redirect),
            Err(BankError::Unexpected { .. })
        ));
    }
}
