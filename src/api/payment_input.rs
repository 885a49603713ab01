//! The body of `POST /v1/payments` and its validation into a payment we can initiate.
//!
//! Every field is read leniently (optional, as text) so that validation can report every
//! violated field at once, each with a stable code, instead of stopping at the first. The
//! rules are Nordea's (seed and nordea-pis.md): currency per country, account types per
//! country with their check digits, creditor name at most 70 characters, express only in
//! Finland and never with a future date, no own-account transfer in Finland, recurring
//! counts 2..=98 or 9999, sandbox-only recurrence refused in production; plus ours: the
//! return URL must be on one of the merchant's registered origins (no open redirect).

use crate::api::error::{ApiError, FieldError};
use crate::bank::{
    Account, AccountType, Authentication, Creditor, Debtor, PaymentInitiation, Recurring,
    Reference, Urgency,
};
use crate::config::BankEnvironment;
use crate::domain::checks::{self, IbanError};
use crate::domain::{Country, Currency, Money};
use crate::ledger::merchants::{Merchant, normalize_origin};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub const CREDITOR_NAME_MAX: usize = 70;
pub const MESSAGE_MAX: usize = 140;
pub const MERCHANT_REFERENCE_MAX: usize = 100;
pub const PSU_ID_MAX: usize = 100;
pub const METADATA_MAX_BYTES: usize = 4096;
pub const RECURRENCE_TYPES: &[&str] = &[
    "DAILY",
    "WEEKLY",
    "BIWEEKLY",
    "MONTHLY_SAME_DAY",
    "MONTHLY_EOM",
    "QUARTERLY_SAME_DAY",
    "QUARTERLY_EOM",
    "SEMI_ANNUALLY_SAME_DAY",
    "SEMI_ANNUALLY_EOM",
    "TRI_ANNUALLY_SAME_DAY",
    "YEARLY_SAME_DAY",
    "YEARLY_EOM",
    "EVERY_MINUTE_SANDBOX_ONLY",
];
pub const AUTHENTICATION_METHODS: &[&str] = &[
    "MTA",
    "MTA_OFF",
    "CCALC",
    "CARD_RDR",
    "QR_RDR",
    "BANKID_NO",
    "BANKIDM_NO",
    "MTA_NO",
];
pub const LANGUAGES: &[&str] = &["en", "fi", "sv", "da", "no", "nb"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountInput {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceInput {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditorInput {
    pub account: Option<AccountInput>,
    pub name: Option<String>,
    pub message: Option<String>,
    pub reference: Option<ReferenceInput>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebtorInput {
    pub account: Option<AccountInput>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurringInput {
    pub count: Option<i64>,
    pub recurrence_type: Option<String>,
}

/// `POST /v1/payments` as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentInput {
    pub amount: Option<Value>,
    pub currency: Option<String>,
    pub country: Option<String>,
    pub creditor: Option<CreditorInput>,
    pub debtor: Option<DebtorInput>,
    pub execution_date: Option<String>,
    pub urgency: Option<String>,
    pub recurring: Option<RecurringInput>,
    pub own_account_transfer: Option<bool>,
    pub reference: Option<String>,
    pub return_url: Option<String>,
    pub psu_id: Option<String>,
    pub language: Option<String>,
    pub authentication_method: Option<String>,
    pub metadata: Option<Value>,
}

/// The canonical, validated payment: what is stored in `payments.request` and shown back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalRequest {
    pub creditor: CanonicalCreditor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debtor: Option<CanonicalDebtor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_date: Option<NaiveDate>,
    pub urgency: Urgency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurring: Option<CanonicalRecurring>,
    pub own_account_transfer: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalAccount {
    #[serde(rename = "type")]
    pub kind: AccountType,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalReference {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalCreditor {
    pub account: CanonicalAccount,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<CanonicalReference>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalDebtor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<CanonicalAccount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalRecurring {
    pub count: u32,
    pub recurrence_type: String,
}

/// A payment request that passed every rule.
#[derive(Debug, Clone)]
pub struct Validated {
    pub amount: Money,
    pub country: Country,
    pub request: CanonicalRequest,
    /// `request` as JSON, for storage.
    pub canonical: Value,
    pub reference: Option<String>,
    pub psu_id: Option<String>,
    pub return_url: String,
    pub metadata: Value,
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: &str, code: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, code, message));
    }
}

fn text_len_ok(
    errors: &mut Errors,
    field: &str,
    value: &Option<String>,
    max: usize,
) -> Option<String> {
    let v = value.as_ref()?.trim().to_owned();
    if v.is_empty() {
        errors.add(field, "empty", "must not be empty when given");
        return None;
    }
    if v.chars().count() > max {
        errors.add(field, "too_long", format!("at most {max} characters"));
        return None;
    }
    if v.chars().any(char::is_control) {
        errors.add(
            field,
            "invalid_characters",
            "must not contain control characters",
        );
        return None;
    }
    Some(v)
}

/// Account types a shopper in `country` can pay to (creditor) or from (debtor).
fn allowed_account_types(country: Country) -> &'static [AccountType] {
    match country {
        Country::Fi => &[AccountType::Iban],
        Country::Dk => &[AccountType::BbanDk, AccountType::Iban],
        Country::No => &[AccountType::BbanNo, AccountType::Iban],
        Country::Se => &[
            AccountType::BbanSe,
            AccountType::Bankgiro,
            AccountType::Plusgiro,
            AccountType::Iban,
        ],
    }
}

fn parse_account(
    errors: &mut Errors,
    field: &str,
    input: Option<&AccountInput>,
    country: Option<Country>,
) -> Option<CanonicalAccount> {
    let Some(input) = input else {
        errors.add(field, "required", "the account is required");
        return None;
    };
    let kind_field = format!("{field}.type");
    let value_field = format!("{field}.value");
    let kind = match input.kind.as_deref() {
        None => {
            errors.add(
                &kind_field,
                "required",
                "one of IBAN, BBAN_DK, BBAN_SE, BBAN_NO, BGNR, PGNR",
            );
            None
        }
        Some(k) => match AccountType::from_code(k) {
            Some(t) => Some(t),
            None => {
                errors.add(
                    &kind_field,
                    "invalid",
                    "one of IBAN, BBAN_DK, BBAN_SE, BBAN_NO, BGNR, PGNR",
                );
                None
            }
        },
    };
    let Some(raw) = input.value.as_deref() else {
        errors.add(&value_field, "required", "the account number is required");
        return None;
    };
    let kind = kind?;
    if let Some(c) = country
        && !allowed_account_types(c).contains(&kind)
    {
        errors.add(
            &kind_field,
            "not_allowed_for_country",
            format!(
                "{} accounts cannot be used in {c}; use {}",
                kind.code(),
                allowed_account_types(c)
                    .iter()
                    .map(|t| t.code())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        );
        return None;
    }
    let value: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect::<String>()
        .to_ascii_uppercase();
    let digits_only = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    let problem: Option<(&str, String)> = match kind {
        AccountType::Iban => match checks::check_iban(&value) {
            Ok(()) => None,
            Err(IbanError::Format) => Some(("invalid_format", "not an IBAN".into())),
            Err(IbanError::UnknownCountry) => Some(("invalid_format", "unknown IBAN country".into())),
            Err(IbanError::Length { expected }) => Some((
                "invalid_length",
                format!("an IBAN of {} has {expected} characters", &value[..2]),
            )),
            Err(IbanError::Checksum) => Some(("invalid_checksum", "the IBAN check digits are wrong".into())),
        },
        AccountType::BbanDk if !digits_only || !(5..=14).contains(&value.len()) => Some((
            "invalid_format",
            "a Danish account is a 4-digit registration number and an account number of up to 10 digits".into(),
        )),
        AccountType::BbanSe if !digits_only || !(8..=16).contains(&value.len()) => Some((
            "invalid_format",
            "a Swedish account is a clearing number and an account number, 8 to 16 digits".into(),
        )),
        AccountType::BbanNo if !digits_only || value.len() != 11 => {
            Some(("invalid_format", "a Norwegian account has 11 digits".into()))
        }
        AccountType::BbanNo if !checks::mod11_ok(&value) => {
            Some(("invalid_checksum", "the account's check digit is wrong".into()))
        }
        AccountType::Bankgiro if !digits_only || !(7..=8).contains(&value.len()) => {
            Some(("invalid_format", "a Bankgiro number has 7 or 8 digits".into()))
        }
        AccountType::Plusgiro if !digits_only || !(2..=8).contains(&value.len()) => {
            Some(("invalid_format", "a Plusgiro number has 2 to 8 digits".into()))
        }
        AccountType::Bankgiro | AccountType::Plusgiro if !checks::luhn_ok(&value) => {
            Some(("invalid_checksum", "the check digit is wrong".into()))
        }
        _ => None,
    };
    if let Some((code, message)) = problem {
        errors.add(&value_field, code, message);
        return None;
    }
    Some(CanonicalAccount { kind, value })
}

fn parse_reference(
    errors: &mut Errors,
    input: &ReferenceInput,
    country: Option<Country>,
) -> Option<CanonicalReference> {
    let kind = match input.kind.as_deref().map(str::to_ascii_uppercase) {
        Some(k) if k == "OCR" || k == "RF" => k,
        Some(_) => {
            errors.add("creditor.reference.type", "invalid", "one of OCR, RF");
            return None;
        }
        None => {
            errors.add("creditor.reference.type", "required", "one of OCR, RF");
            return None;
        }
    };
    let Some(raw) = input.value.as_deref() else {
        errors.add(
            "creditor.reference.value",
            "required",
            "the reference is required",
        );
        return None;
    };
    let value: String = raw
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let ok = match (kind.as_str(), country) {
        ("RF", _) => checks::rf_reference_ok(&value),
        // Finland: the national reference with its 7-3-1 check digit.
        ("OCR", Some(Country::Fi)) => checks::finnish_reference_ok(&value),
        // Norway (KID): 2 to 25 digits with a mod 10 or mod 11 check digit.
        ("OCR", Some(Country::No)) => {
            (2..=25).contains(&value.len()) && (checks::luhn_ok(&value) || checks::mod11_ok(&value))
        }
        // Sweden: OCR numbers carry a Luhn check digit.
        ("OCR", Some(Country::Se)) => (2..=25).contains(&value.len()) && checks::luhn_ok(&value),
        // Denmark: digits only; the check depends on the FI card type, left to the bank.
        _ => !value.is_empty() && value.len() <= 25 && value.bytes().all(|b| b.is_ascii_digit()),
    };
    if !ok {
        errors.add(
            "creditor.reference.value",
            "invalid_checksum",
            format!("not a valid {kind} reference for this country (check digit or format)"),
        );
        return None;
    }
    Some(CanonicalReference { kind, value })
}

/// The origin (`scheme://host[:port]`) of an absolute URL, or why it is not one.
fn url_origin(url: &str) -> Result<String, String> {
    let (scheme, rest) = url.split_once("://").ok_or("must be an absolute URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    normalize_origin(&format!("{scheme}://{authority}"))
}

impl PaymentInput {
    /// Applies every rule and reports every violation.
    pub fn validate(
        self,
        merchant: &Merchant,
        today: NaiveDate,
        environment: BankEnvironment,
    ) -> Result<Validated, ApiError> {
        let mut e = Errors(Vec::new());

        let currency = match self.currency.as_deref() {
            None => {
                e.add("currency", "required", "one of EUR, DKK, SEK, NOK");
                None
            }
            Some(c) => Currency::from_code(c).or_else(|| {
                e.add("currency", "invalid", "one of EUR, DKK, SEK, NOK");
                None
            }),
        };
        let country = match self.country.as_deref() {
            Some(c) => Country::from_code(c).or_else(|| {
                e.add("country", "invalid", "one of DK, FI, NO, SE");
                None
            }),
            None => currency.and_then(|cur| Country::ALL.into_iter().find(|c| c.currency() == cur)),
        };
        if let (Some(country), Some(currency)) = (country, currency)
            && country.currency() != currency
        {
            e.add(
                "currency",
                "currency_not_allowed_for_country",
                format!("payments from {country} are in {}", country.currency()),
            );
        }

        let amount = match (&self.amount, currency) {
            (None, _) => {
                e.add("amount", "required", "a decimal string such as \"10.50\"");
                None
            }
            (Some(Value::String(s)), Some(cur)) => match Money::parse(s, cur) {
                Ok(m) => Some(m),
                Err(err) => {
                    e.add("amount", err.code(), format!("{s:?} {err}"));
                    None
                }
            },
            (Some(Value::String(_)), None) => None,
            (Some(_), _) => {
                e.add(
                    "amount",
                    "invalid_type",
                    "send the amount as a decimal string such as \"10.50\", never a number",
                );
                None
            }
        };

        let creditor_in = self.creditor.clone().unwrap_or_default();
        if self.creditor.is_none() {
            e.add("creditor", "required", "who is paid");
        }
        let creditor_account = self.creditor.as_ref().and_then(|_| {
            parse_account(
                &mut e,
                "creditor.account",
                creditor_in.account.as_ref(),
                country,
            )
        });
        let creditor_name = match &creditor_in.name {
            None if self.creditor.is_some() => {
                e.add("creditor.name", "required", "the creditor's name");
                None
            }
            None => None,
            name => text_len_ok(&mut e, "creditor.name", name, CREDITOR_NAME_MAX),
        };
        let creditor_message = text_len_ok(
            &mut e,
            "creditor.message",
            &creditor_in.message,
            MESSAGE_MAX,
        );
        let creditor_reference = creditor_in
            .reference
            .as_ref()
            .and_then(|r| parse_reference(&mut e, r, country));

        let debtor = self.debtor.as_ref().map(|d| CanonicalDebtor {
            account: d
                .account
                .as_ref()
                .and_then(|a| parse_account(&mut e, "debtor.account", Some(a), country)),
            message: text_len_ok(&mut e, "debtor.message", &d.message, MESSAGE_MAX),
        });

        let execution_date = self.execution_date.as_deref().and_then(|d| {
            match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
                Ok(date) if date < today => {
                    e.add(
                        "execution_date",
                        "in_the_past",
                        format!("must be {today} or later"),
                    );
                    None
                }
                Ok(date) => Some(date),
                Err(_) => {
                    e.add("execution_date", "invalid", "a date as YYYY-MM-DD");
                    None
                }
            }
        });

        let urgency = match self.urgency.as_deref() {
            None | Some("standard") => Urgency::Standard,
            Some("express") => Urgency::Express,
            Some(_) => {
                e.add("urgency", "invalid", "standard or express");
                Urgency::Standard
            }
        };
        if urgency == Urgency::Express {
            if country.is_some_and(|c| c != Country::Fi) {
                e.add(
                    "urgency",
                    "express_not_allowed_for_country",
                    "express is only for Finnish (SEPA) payments",
                );
            }
            if execution_date.is_some_and(|d| d > today) {
                e.add(
                    "execution_date",
                    "express_with_future_date",
                    "an express payment cannot be dated in the future",
                );
            }
        }

        let own_account_transfer = self.own_account_transfer.unwrap_or(false);
        if own_account_transfer && country == Some(Country::Fi) {
            e.add(
                "own_account_transfer",
                "not_allowed_for_country",
                "own-account transfers are not available in Finland",
            );
        }

        let recurring = self.recurring.as_ref().and_then(|r| {
            let count = match r.count {
                Some(c) if (2..=98).contains(&c) || c == 9999 => Some(c as u32),
                Some(_) => {
                    e.add(
                        "recurring.count",
                        "out_of_range",
                        "2 to 98, or 9999 for until cancelled",
                    );
                    None
                }
                None => {
                    e.add(
                        "recurring.count",
                        "required",
                        "2 to 98, or 9999 for until cancelled",
                    );
                    None
                }
            };
            let kind = match r.recurrence_type.as_deref() {
                Some(t) if RECURRENCE_TYPES.contains(&t) => Some(t.to_owned()),
                Some(_) => {
                    e.add(
                        "recurring.recurrence_type",
                        "invalid",
                        format!("one of {}", RECURRENCE_TYPES.join(", ")),
                    );
                    None
                }
                None => {
                    e.add(
                        "recurring.recurrence_type",
                        "required",
                        format!("one of {}", RECURRENCE_TYPES.join(", ")),
                    );
                    None
                }
            };
            let kind = kind?;
            let refusal = match (kind.as_str(), country, own_account_transfer) {
                ("EVERY_MINUTE_SANDBOX_ONLY", _, _)
                    if environment == BankEnvironment::Production =>
                {
                    Some("only available in the sandbox")
                }
                ("BIWEEKLY", Some(Country::No), false) => {
                    Some("in Norway BIWEEKLY is only for own-account transfers")
                }
                ("MONTHLY_SAME_DAY", Some(Country::Se), true) => {
                    Some("in Sweden MONTHLY_SAME_DAY is not available for own-account transfers")
                }
                _ => None,
            };
            if let Some(message) = refusal {
                e.add("recurring.recurrence_type", "not_allowed", message);
                return None;
            }
            Some(CanonicalRecurring {
                count: count?,
                recurrence_type: kind,
            })
        });

        let reference = text_len_ok(&mut e, "reference", &self.reference, MERCHANT_REFERENCE_MAX);
        let psu_id = text_len_ok(&mut e, "psu_id", &self.psu_id, PSU_ID_MAX);
        let language = self.language.as_deref().and_then(|l| {
            let l = l.to_ascii_lowercase();
            if LANGUAGES.contains(&l.as_str()) {
                Some(l)
            } else {
                e.add(
                    "language",
                    "invalid",
                    format!("one of {}", LANGUAGES.join(", ")),
                );
                None
            }
        });
        let authentication_method = self.authentication_method.as_deref().and_then(|m| {
            if AUTHENTICATION_METHODS.contains(&m) {
                Some(m.to_owned())
            } else {
                e.add(
                    "authentication_method",
                    "invalid",
                    format!("one of {}", AUTHENTICATION_METHODS.join(", ")),
                );
                None
            }
        });

        let return_url = match self.return_url.as_deref().map(str::trim) {
            None | Some("") => {
                e.add(
                    "return_url",
                    "required",
                    "where the shopper lands after signing",
                );
                None
            }
            Some(url) if url.len() > 2048 => {
                e.add("return_url", "too_long", "at most 2048 characters");
                None
            }
            Some(url) => match url_origin(url) {
                Err(reason) => {
                    e.add("return_url", "invalid_url", reason);
                    None
                }
                Ok(origin) if !merchant.return_origins.contains(&origin) => {
                    e.add(
                        "return_url",
                        "origin_not_registered",
                        format!("{origin} is not one of your registered return origins (PATCH /v1/merchant)"),
                    );
                    None
                }
                Ok(_) => Some(url.to_owned()),
            },
        };

        let metadata = match self.metadata {
            None => Value::Object(Default::default()),
            Some(Value::Object(m))
                if serde_json::to_vec(&m)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX)
                    <= METADATA_MAX_BYTES =>
            {
                Value::Object(m)
            }
            Some(Value::Object(_)) => {
                e.add(
                    "metadata",
                    "too_large",
                    format!("at most {METADATA_MAX_BYTES} bytes of JSON"),
                );
                Value::Null
            }
            Some(_) => {
                e.add("metadata", "invalid_type", "a JSON object of your own keys");
                Value::Null
            }
        };

        if !e.0.is_empty() {
            return Err(ApiError::Validation(e.0));
        }
        let (Some(amount), Some(country), Some(account), Some(name), Some(return_url)) =
            (amount, country, creditor_account, creditor_name, return_url)
        else {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "validation passed without a required value"
            )));
        };
        let request = CanonicalRequest {
            creditor: CanonicalCreditor {
                account,
                name,
                message: creditor_message,
                reference: creditor_reference,
            },
            debtor,
            execution_date,
            urgency,
            recurring,
            own_account_transfer,
            language,
            authentication_method,
        };
        let canonical =
            serde_json::to_value(&request).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
        Ok(Validated {
            amount,
            country,
            request,
            canonical,
            reference,
            psu_id,
            return_url,
            metadata,
        })
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
        let account = |a: &CanonicalAccount| Account {
            kind: a.kind,
            value: a.value.clone(),
        };
        PaymentInitiation {
            country: self.country,
            amount: self.amount,
            creditor: Creditor {
                account: account(&r.creditor.account),
                name: Some(r.creditor.name.clone()),
                message: r.creditor.message.clone(),
                reference: r.creditor.reference.as_ref().map(|x| Reference {
                    kind: x.kind.clone(),
                    value: x.value.clone(),
                }),
            },
            debtor: r.debtor.as_ref().map(|d| Debtor {
                account: d.account.as_ref().map(account),
                message: d.message.clone(),
            }),
            external_id: payment_id.simple().to_string(),
            merchant_name: Some(merchant_name.chars().take(CREDITOR_NAME_MAX).collect()),
            urgency: r.urgency,
            requested_execution_date: r.execution_date,
            recurring: r.recurring.as_ref().map(|x| Recurring {
                count: x.count,
                recurrence_type: x.recurrence_type.clone(),
            }),
            own_account_transfer: r.own_account_transfer,
            authentication: Authentication {
                state,
                redirect_uri,
                language: r.language.clone(),
                authentication_method: r.authentication_method.clone(),
            },
        }
    }
}

/// JSON with object keys sorted at every level and no insignificant whitespace, so two
/// bodies that mean the same hash the same (for idempotency).
pub fn canonical_json(value: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}
