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

fn canonical_value(canonical_text: &str) -> Result<Value, ApiError> {
    serde_json::from_str(canonical_text).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))
}

impl Validated {
    /// The canonical form again, for a caller that gave [`Validated::canonical`] away.
    pub fn canonical_value(&self) -> Result<Value, ApiError> {
        canonical_value(&self.request.canonical_json())
    }
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
    // Read from the tree in place (`&Value` is a deserializer): no copy of the body.
    let input = <PaymentRequestInput as serde::Deserialize>::deserialize(body).map_err(|e| {
        ApiError::Validation(vec![FieldError::new("body", "invalid_type", e.to_string())])
    })?;
    match PaymentRequest::parse(&input, today, environment) {
        Ok(request) => {
            if let Some(e) = origin_error(merchant, request.return_url()) {
                return Err(ApiError::Validation(vec![e]));
            }
            let canonical_text = request.canonical_json();
            Ok(Validated {
                canonical: canonical_value(&canonical_text)?,
                fingerprint: Sha256::digest(canonical_text.as_bytes()).into(),
                request,
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

/// Property tests: whatever a merchant sends, validation answers a list of field errors or
/// a request we can initiate and show, never a panic and never an internal error. Inputs are
/// arbitrary Unicode around each country's valid shapes (digits with a stray multi-byte
/// character, the right length in bytes but not in characters, and so on), so that slicing
/// by bytes, checksums over non-digits and the like are reached, not just rejected early.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::domain::Language;
    use chrono::Utc;
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn merchant() -> Merchant {
        Merchant {
            id: Uuid::nil(),
            name: "Shop".into(),
            status: "active".into(),
            return_origins: vec!["https://shop.example".into()],
            created_at: Utc::now(),
            disabled_at: None,
        }
    }

    /// Text that looks like what a field wants, or close to it, or anything at all.
    fn text(valid: &'static [&'static str]) -> impl Strategy<Value = String> {
        let near = (
            proptest::sample::select(valid),
            any::<prop::sample::Index>(),
            "\\PC{0,3}",
        )
            .prop_map(|(v, at, extra)| {
                // Splice arbitrary characters into a valid value at a char boundary.
                let chars: Vec<char> = v.chars().collect();
                let i = at.index(chars.len() + 1);
                let mut s: String = chars[..i].iter().collect();
                s.push_str(&extra);
                s.extend(&chars[i..]);
                s
            });
        prop_oneof![
            3 => proptest::sample::select(valid).prop_map(str::to_owned),
            4 => near,
            2 => "\\PC{0,40}",
            1 => any::<String>(),
            1 => "[0-9é€ -]{0,30}",
        ]
    }

    const ACCOUNT_TYPES: &[&str] = &[
        "IBAN", "BBAN_DK", "BBAN_SE", "BBAN_NO", "BGNR", "PGNR", "iban", "ÍBAN",
    ];
    const ACCOUNTS: &[&str] = &[
        "FI1450000120236228",
        "FI7473834510057469",
        "SE1730000000031412034086",
        "DK5000400440116243",
        "NO9386011117947",
        "23001546147254",
        "33000000031412",
        "60391598838",
        "3300308",
        "1234567",
        "€",
        "",
    ];
    const REFERENCE_TYPES: &[&str] = &["RF", "OCR", "INVOICE", "ocr", "Ö"];
    const REFERENCES: &[&str] = &[
        "RF18539007547034",
        "12345678903",
        "12345674",
        "1234561",
        "123-",
        "+71<000000001000000+",
        "é",
        "",
    ];
    const CURRENCIES: &[&str] = &["EUR", "DKK", "SEK", "NOK", "eur", "ÉUR", "XXX"];
    const COUNTRIES: &[&str] = &["FI", "DK", "SE", "NO", "fi", "DE", "Ñ"];
    const AMOUNTS: &[&str] = &[
        "10.50",
        "1",
        "0.01",
        "99999999999.99",
        "1e3",
        "١٢",
        "-1",
        "0",
    ];
    const DATES: &[&str] = &[
        "2030-01-31",
        "2025-02-29",
        "2030-٠١-31",
        "2030-1-1",
        "é030-01-01",
    ];
    const RECURRENCES: &[&str] = &[
        "MONTHLY_SAME_DAY",
        "WEEKLY",
        "DAILY",
        "monthly",
        "MONTHLY_EOM",
    ];
    const URLS: &[&str] = &[
        "https://shop.example/thanks",
        "https://shop.example:443/ä?x=é#f",
        "https://[::1]/x",
        "https://shop.example@evil.example/",
        "http://shop.example/",
    ];
    const WORDS: &[&str] = &[
        "Test Name",
        "Order 1",
        "Åsa Öberg",
        "x",
        "nul\u{0}here",
        "tab\there",
        "\u{202e}rtl",
    ];
    const LANGUAGES: &[&str] = &["en", "fi", "sv", "da", "no", "EN", "ü"];
    const METHODS: &[&str] = &["MTA", "CCALC", "BANKID_SE", "bankid"];

    const URGENCIES: &[&str] = &["standard", "express", "Éxpress"];
    const COUNTS: &[&str] = &["1", "3", "0", "999", "-1", "3.5"];
    const BOOLS: &[&str] = &["true", "false"];

    /// The fields a mutation may set (creating it where absent), with values near theirs.
    const FIELDS: &[(&str, &[&str])] = &[
        ("amount", AMOUNTS),
        ("currency", CURRENCIES),
        ("country", COUNTRIES),
        ("creditor.account.type", ACCOUNT_TYPES),
        ("creditor.account.value", ACCOUNTS),
        ("creditor.name", WORDS),
        ("creditor.message", WORDS),
        ("creditor.reference.type", REFERENCE_TYPES),
        ("creditor.reference.value", REFERENCES),
        ("debtor.account.type", ACCOUNT_TYPES),
        ("debtor.account.value", ACCOUNTS),
        ("debtor.message", WORDS),
        ("execution_date", DATES),
        ("urgency", URGENCIES),
        ("recurring.count", COUNTS),
        ("recurring.recurrence_type", RECURRENCES),
        ("own_account_transfer", BOOLS),
        ("reference", WORDS),
        ("psu_id", WORDS),
        ("return_url", URLS),
        ("language", LANGUAGES),
        ("authentication_method", METHODS),
        ("metadata.order", WORDS),
    ];

    /// A valid payment per country, each with the reference kinds it allows.
    fn templates() -> Vec<Value> {
        let fi = json!({
            "amount": "10.50", "currency": "EUR",
            "creditor": {
                "account": {"type": "IBAN", "value": "FI1450000120236228"},
                "name": "Test Name", "message": "Order 1",
                "reference": {"type": "RF", "value": "RF18539007547034"}
            },
            "debtor": {"account": {"type": "IBAN", "value": "FI7473834510057469"}},
            "return_url": "https://shop.example/thanks"
        });
        let fi_ocr = json!({
            "amount": "1.00", "currency": "EUR",
            "creditor": {
                "account": {"type": "IBAN", "value": "FI1450000120236228"},
                "name": "Test Name",
                "reference": {"type": "OCR", "value": "1234561"}
            },
            "return_url": "https://shop.example/thanks"
        });
        let dk = json!({
            "amount": "14.24", "currency": "DKK",
            "creditor": {"account": {"type": "BBAN_DK", "value": "23001546147254"}, "message": "1831653108"},
            "debtor": {"account": {"type": "BBAN_DK", "value": "23001546139529"}},
            "return_url": "https://shop.example/thanks"
        });
        let se = json!({
            "amount": "12.24", "currency": "SEK",
            "creditor": {
                "account": {"type": "BGNR", "value": "3300308"},
                "name": "Beneficiary name",
                "reference": {"type": "OCR", "value": "12345678903"}
            },
            "debtor": {"account": {"type": "IBAN", "value": "SE1730000000031412034086"}},
            "return_url": "https://shop.example/thanks"
        });
        let no = json!({
            "amount": "1.00", "currency": "NOK",
            "creditor": {
                "account": {"type": "BBAN_NO", "value": "60391598838"},
                "name": "Test Name",
                "reference": {"type": "OCR", "value": "12345674"}
            },
            "debtor": {"account": {"type": "BBAN_NO", "value": "60010503178"}},
            "return_url": "https://shop.example/thanks"
        });
        vec![fi, fi_ocr, dk, se, no]
    }

    /// Sets a dotted path, creating objects on the way (and replacing non-objects).
    fn set(body: &mut Value, path: &str, value: Value) {
        let mut at = body;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if !at.is_object() {
                *at = json!({});
            }
            let map = at.as_object_mut().expect("object");
            if parts.peek().is_none() {
                map.insert(part.to_owned(), value);
                return;
            }
            at = map.entry(part).or_insert_with(|| json!({}));
        }
    }

    /// A mutation: a field and its new value (a JSON number or boolean where the text is one).
    fn mutation() -> impl Strategy<Value = (usize, String)> {
        (0..FIELDS.len()).prop_flat_map(|i| (Just(i), text(FIELDS[i].1)))
    }

    fn body() -> impl Strategy<Value = Value> {
        let templates = templates();
        (0..templates.len(), prop::collection::vec(mutation(), 0..4)).prop_map(
            move |(t, mutations)| {
                let mut b = templates[t].clone();
                for (field, text) in mutations {
                    let (path, _) = FIELDS[field];
                    let value = match path {
                        "recurring.count" | "own_account_transfer" => {
                            serde_json::from_str(&text).unwrap_or(Value::String(text))
                        }
                        _ => Value::String(text),
                    };
                    set(&mut b, path, value);
                }
                b
            },
        )
    }

    /// Everything a valid request is later turned into: the bank's initiation (and Nordea's
    /// wire body), the masked accounts for logs, the amount as the consent page shows it.
    fn use_valid(v: &Validated) -> Result<(), TestCaseError> {
        // PostgreSQL stores neither a NUL in text nor the escape \u0000 in jsonb.
        let stored = v.canonical.to_string();
        prop_assert!(
            !stored.contains("\\u0000"),
            "a NUL would be stored: {stored}"
        );
        let initiation = v.initiation(Uuid::nil(), "Shop", "state".into(), "https://x/cb".into());
        let wire = crate::bank::nordea::convert::initiation_request(&initiation);
        serde_json::to_string(&wire).expect("wire body serialises");
        let r = &v.request;
        let _ = r.creditor().account().masked();
        if let Some(d) = r.debtor() {
            let _ = d.account().masked();
        }
        for lang in [
            Language::En,
            Language::Fi,
            Language::Sv,
            Language::Da,
            Language::No,
        ] {
            let _ = crate::domain::display::amount(r.amount().minor(), r.currency(), lang);
        }
        Ok(())
    }

    fn check(body: &Value, valid: &AtomicUsize) -> Result<(), TestCaseError> {
        let today = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        for env in [Environment::Production, Environment::Sandbox] {
            match validate(body, &merchant(), today, env) {
                Ok(v) => {
                    valid.fetch_add(1, Ordering::Relaxed);
                    use_valid(&v)?
                }
                Err(ApiError::Validation(errors)) => {
                    prop_assert!(!errors.is_empty(), "a refusal names at least one field");
                    for e in &errors {
                        prop_assert!(!e.field.is_empty() && !e.code.is_empty(), "{e:?}");
                    }
                }
                Err(other) => prop_assert!(false, "not a validation error: {other:?} for {body}"),
            }
        }
        Ok(())
    }

    #[test]
    fn any_payment_body_is_a_field_error_or_a_request_never_a_panic() {
        // The composed strategy is deep; debug builds need more than a test thread's stack.
        let run = || {
            let config = ProptestConfig {
                cases: 3000
                    * std::env::var("PROPTEST_SCALE")
                        .ok()
                        .and_then(|s| s.parse::<u32>().ok())
                        .unwrap_or(1),
                ..ProptestConfig::default()
            };
            let mut runner = proptest::test_runner::TestRunner::new(config);
            let valid = AtomicUsize::new(0);
            if let Err(e) = runner.run(&body(), |b| check(&b, &valid)) {
                panic!("{e}");
            }
            // The generator must reach valid requests too, or the bank mapping is untested.
            let valid = valid.into_inner();
            assert!(valid >= 30, "only {valid} of 6000 validations passed");
        };
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(run)
            .expect("thread")
            .join()
            .expect("no panic");
    }

    /// The cases an outside tester found by hand, kept as plain examples.
    #[test]
    fn hostile_references_and_accounts_are_field_errors() {
        let base = json!({
            "amount": "1.00", "currency": "NOK",
            "creditor": {"account": {"type": "BBAN_NO", "value": "60391598838"}, "name": "N"},
            "return_url": "https://shop.example/thanks"
        });
        let cases = [
            json!({"type": "OCR", "value": "é"}),
            json!({"type": "OCR", "value": "1é"}),
            json!({"type": "OCR", "value": "€€"}),
            json!({"type": "RF", "value": "RFé1234"}),
            json!({"type": "RF", "value": "RF1€234"}),
        ];
        let today = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        for reference in cases {
            let mut b = base.clone();
            b["creditor"]["reference"] = reference.clone();
            match validate(&b, &merchant(), today, Environment::Production) {
                Err(ApiError::Validation(errors)) => assert!(
                    errors
                        .iter()
                        .any(|e| e.field.starts_with("creditor.reference")),
                    "{reference}: {errors:?}"
                ),
                other => panic!("{reference}: {other:?}"),
            }
        }
        for (kind, value) in [
            ("BBAN_NO", "6039159883é"),
            ("IBAN", "NOé386011117947"),
            ("IBAN", "€€€€€"),
            ("BBAN_DK", "2300é546147254"),
            ("BBAN_SE", "é"),
            ("BGNR", "330030é"),
        ] {
            let mut b = base.clone();
            b["creditor"]["account"] = json!({"type": kind, "value": value});
            assert!(
                matches!(
                    validate(&b, &merchant(), today, Environment::Production),
                    Err(ApiError::Validation(_))
                ),
                "{kind} {value}"
            );
        }
    }
}
