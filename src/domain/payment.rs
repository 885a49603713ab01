//! The merchant's payment request: the lenient input body of `POST /v1/payments`
//! ([`PaymentRequestInput`]) and the valid request built from it ([`PaymentRequest`]).
//!
//! [`PaymentRequest::parse`] checks everything at once and reports every violation as a
//! [`FieldError`] `{field, code, message}`; it never stops at the first. The input therefore
//! deserialises from any JSON object: every field is a [`Field`] that records "missing",
//! "present" or "present with the wrong JSON type", and unknown fields are collected
//! instead of failing (we report them as `unknown_field`, so a typo such as
//! `"excution_date"` is caught rather than silently ignored: that is our answer to
//! `deny_unknown_fields`).
//!
//! Rules (field paths as in the body):
//! - `amount` (required, decimal string, see [`Money::parse`]); at most the bank's field
//!   width per country from Nordea's published PIS swagger: FI 9+2 digits, SE 11+2, DK
//!   and NO 7+2 (`amount_too_large`).
//! - `currency` (required: EUR, DKK, SEK, NOK); `country` optional, derived from the
//!   currency; both given and not matching is `currency_country_mismatch`.
//! - `creditor` (required) `.account` (required) `{type, value}`: the type must be allowed
//!   for a creditor in the country ([`AccountType::allowed_for_creditor`]); an IBAN must be
//!   of a SEPA country for FI and of the payment's own country for DK, SE, NO
//!   (`iban_country_not_allowed`).
//! - `creditor.name`: required for FI (SEPA needs it), optional elsewhere (Nordea DK does
//!   not use it), 1..=70 characters (v2.8). Nordea's v4 swagger lists SE 35 and NO 30; the
//!   single-SCA seed raised only FI, so we leave the shorter limits to the bank.
//! - `creditor.message`: at most FI 140, DK 40, NO 140, SE 12 to a bank account, 25 to a
//!   Plusgiro, 150 to a Bankgiro (Nordea's PIS swagger; the seed gives none).
//! - `creditor.reference` `{type, value}`: see [`Reference::parse`]. Whether a message and a
//!   reference may be sent together is left to the bank.
//! - `debtor` optional; if present `.account` is required, its type must be the country's
//!   IBAN or BBAN, an IBAN of the payment's country; it may not equal the creditor account.
//!   `debtor.message` at most 20 characters (the bank ignores it for FI and NO).
//! - `execution_date` `YYYY-MM-DD`, not before `today`. How far ahead is left to the bank.
//! - `urgency` `standard` (default) or `express`; express only for FI and never with an
//!   execution date after today.
//! - `own_account_transfer` boolean; not in FI; when true it needs `debtor.account` and a
//!   creditor bank account (not a Bankgiro or Plusgiro).
//! - `recurring` `{count, recurrence_type}`: see [`crate::domain::recurrence`].
//! - `reference` (the merchant's own), `psu_id`: 1..=128 characters, no control characters.
//! - `return_url` (required): see [`ReturnUrl`].
//! - `language`: en, fi, sv, da, no. `authentication_method`: the v5 authorize enum (MTA,
//!   CCALC, CARD_RDR, QR_RDR, BANKID_NO, BANKIDM_NO, MTA_NO, BANKID_SE, NEMID_2F) plus
//!   MTA_OFF from older lists; the three `_NO` methods only in NO, BANKID_SE only in SE,
//!   NEMID_2F only in DK.
//!   Which of the others each country offers is left to the bank.
//! - `metadata`: a JSON object of at most 50 keys and 4096 bytes serialised.
//! - `consent`: `pisgate` (default: the shopper sees pisgate's consent page before the
//!   bank) or `merchant` (the merchant showed its own, the hop goes straight to the bank).
//!
//! Text fields are trimmed; control characters are refused; lengths count characters, not
//! bytes. An empty optional message is treated as absent.
//!
//! Error codes: `required`, `invalid_type`, `unknown_field`, `empty`, `too_long`,
//! `invalid_characters`, `not_nullable`, the [`MoneyError`] codes, `amount_too_large`,
//! `unsupported_currency`, `unsupported_country`, `currency_country_mismatch`,
//! `unknown_account_type`, `account_type_not_allowed`, the [`AccountError`] codes,
//! `iban_country_not_allowed`, `same_as_creditor`, `unknown_reference_type`, the
//! [`ReferenceError`] codes, `invalid_date`, `date_in_past`, `unknown_urgency`,
//! `express_not_allowed`, `express_with_future_date`, `not_allowed_in_country`,
//! `invalid_count`, `unknown_recurrence_type`, the [`RecurrenceError`] codes, the
//! [`UrlError`] codes, `unknown_language`, `unknown_authentication_method`,
//! `authentication_method_not_allowed`, `too_many_keys`, `too_large`, `too_deep`,
//! `unknown_consent`.
//!
//! This module must never do I/O, read the clock (the caller passes `today`), or accept a
//! request that one of these rules refuses.
//!
//! [`RecurrenceError`]: crate::domain::recurrence::RecurrenceError
//! [`MoneyError`]: crate::domain::money::MoneyError
//! [`AccountError`]: crate::domain::account::AccountError
//! [`UrlError`]: crate::domain::origin::UrlError

use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

use super::Environment;
use super::account::{Account, AccountType, is_sepa_country};
use super::money::{Country, Currency, Money};
use super::origin::ReturnUrl;
use super::recurrence::{RecurrenceType, Recurring, RecurringCount};
use super::reference::{Reference, ReferenceError, ReferenceType};

/// Longest creditor name (Nordea v2.8).
pub const MAX_CREDITOR_NAME: usize = 70;
/// Longest debtor (own) message.
pub const MAX_DEBTOR_MESSAGE: usize = 20;
/// Longest merchant reference and `psu_id`.
pub const MAX_MERCHANT_TEXT: usize = 128;
/// Most keys in `metadata`.
pub const MAX_METADATA_KEYS: usize = 50;
/// Largest `metadata`, serialised as compact JSON.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Deepest nesting of objects and arrays in `metadata`, its own object counting as 1. A
/// payment's metadata is stored and sent on inside deeper JSON (the webhook payload's `data`),
/// which must stay well within the 128 levels serde_json and sqlx read back.
pub const MAX_METADATA_DEPTH: usize = 16;

// ---------------------------------------------------------------------------------------
// Lenient input
// ---------------------------------------------------------------------------------------

/// One field of the input body: missing (absent), present with the expected JSON type, or
/// present with another JSON type or `null` (kept so that it can be reported: `null` is a
/// 422 naming the field, never taken as absence).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<T> {
    #[default]
    Missing,
    Present(T),
    Invalid(Value),
}

impl<T> Field<T> {
    pub fn is_missing(&self) -> bool {
        matches!(self, Field::Missing)
    }
}

impl<T> From<T> for Field<T> {
    fn from(t: T) -> Self {
        Field::Present(t)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `null` is not absence: it is kept (as invalid) so that validation names the field.
        let v = Value::deserialize(d)?;
        if v.is_null() {
            return Ok(Field::Invalid(v));
        }
        Ok(match T::deserialize(&v) {
            Ok(t) => Field::Present(t),
            Err(_) => Field::Invalid(v),
        })
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Missing => s.serialize_none(),
            Field::Present(t) => t.serialize(s),
            Field::Invalid(v) => v.serialize(s),
        }
    }
}

/// The body of `POST /v1/payments` as received: nothing is checked yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PaymentRequestInput {
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub amount: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub currency: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub country: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub creditor: Field<CreditorInput>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub debtor: Field<DebtorInput>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub execution_date: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub urgency: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub recurring: Field<RecurringInput>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub own_account_transfer: Field<bool>,
    /// The merchant's own reference (order id).
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub reference: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub return_url: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub psu_id: Field<String>,
    /// The bank's id (`GET /v1/banks`); absent: the country's only bank, or the shopper's choice.
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub bank: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub language: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub authentication_method: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub metadata: Field<Value>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub consent: Field<String>,
    /// Fields we do not know; each is reported as `unknown_field`.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreditorInput {
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub account: Field<AccountInput>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub name: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub message: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub reference: Field<ReferenceInput>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DebtorInput {
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub account: Field<AccountInput>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub message: Field<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// An account as received. Its `Debug` hides the number: inputs end up in logs more
/// easily than parsed values.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountInput {
    #[serde(rename = "type", default, skip_serializing_if = "Field::is_missing")]
    pub account_type: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub value: Field<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

impl fmt::Debug for AccountInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = match &self.value {
            Field::Missing => "missing",
            Field::Present(_) => "<redacted>",
            Field::Invalid(_) => "<invalid type>",
        };
        f.debug_struct("AccountInput")
            .field("account_type", &self.account_type)
            .field("value", &value)
            .field("unknown", &self.unknown.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceInput {
    #[serde(rename = "type", default, skip_serializing_if = "Field::is_missing")]
    pub reference_type: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub value: Field<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecurringInput {
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub count: Field<i64>,
    #[serde(default, skip_serializing_if = "Field::is_missing")]
    pub recurrence_type: Field<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// One violation: which field, a stable snake_case code, and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

/// Every violation found in one request, in field order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `field` has a violation with `code`.
    pub fn has(&self, field: &str, code: &str) -> bool {
        self.0.iter().any(|e| e.field == field && e.code == code)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} validation error(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, " {}: {} ({});", e.field, e.message, e.code)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

#[derive(Default)]
struct Collector(Vec<FieldError>);

impl Collector {
    fn push(&mut self, field: &str, code: &'static str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_owned(),
            code,
            message: message.into(),
        });
    }

    fn unknown(&mut self, prefix: &str, unknown: &BTreeMap<String, Value>) {
        for key in unknown.keys() {
            self.push(
                &format!("{prefix}{key}"),
                "unknown_field",
                "is not a known field",
            );
        }
    }

    /// The value of a field that must be present with type `T`.
    fn required<'a, T>(&mut self, field: &str, f: &'a Field<T>, expected: &str) -> Option<&'a T> {
        match f {
            Field::Missing => {
                self.push(field, "required", "is required");
                None
            }
            other => self.optional(field, other, expected),
        }
    }

    /// The value of an optional field; a wrong JSON type is reported.
    fn optional<'a, T>(&mut self, field: &str, f: &'a Field<T>, expected: &str) -> Option<&'a T> {
        match f {
            Field::Missing => None,
            Field::Present(t) => Some(t),
            Field::Invalid(Value::Null) => {
                self.push(
                    field,
                    "not_nullable",
                    format!("must be {expected}, not null; leave it out if it does not apply"),
                );
                None
            }
            Field::Invalid(_) => {
                self.push(field, "invalid_type", format!("must be {expected}"));
                None
            }
        }
    }

    /// Checks a free-text value: trimmed, no control characters, `1..=max` characters.
    fn text(&mut self, field: &str, value: &str, max: usize) -> Option<String> {
        let v = value.trim();
        if v.is_empty() {
            self.push(field, "empty", "must not be empty");
            return None;
        }
        if v.chars().any(char::is_control) {
            self.push(
                field,
                "invalid_characters",
                "must not contain control characters",
            );
            return None;
        }
        let len = v.chars().count();
        if len > max {
            self.push(
                field,
                "too_long",
                format!("must be at most {max} characters, got {len}"),
            );
            return None;
        }
        Some(v.to_owned())
    }
}

// ---------------------------------------------------------------------------------------
// Parsed request
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    #[default]
    Standard,
    Express,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Standard => "standard",
            Urgency::Express => "express",
        }
    }

    pub fn parse(s: &str) -> Option<Urgency> {
        [Urgency::Standard, Urgency::Express]
            .into_iter()
            .find(|u| u.as_str() == s)
    }
}

/// The language of the bank's signing pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Fi,
    Sv,
    Da,
    No,
}

impl Language {
    pub const ALL: [Language; 5] = [
        Language::En,
        Language::Fi,
        Language::Sv,
        Language::Da,
        Language::No,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Fi => "fi",
            Language::Sv => "sv",
            Language::Da => "da",
            Language::No => "no",
        }
    }

    pub fn parse(s: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// Who shows the shopper what they are about to pay before the bank does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consent {
    /// pisgate's consent page at the authorization hop.
    #[default]
    Pisgate,
    /// The merchant's own screen: the hop goes straight to the bank.
    Merchant,
}

impl Consent {
    pub fn as_str(self) -> &'static str {
        match self {
            Consent::Pisgate => "pisgate",
            Consent::Merchant => "merchant",
        }
    }

    pub fn parse(s: &str) -> Option<Consent> {
        [Consent::Pisgate, Consent::Merchant]
            .into_iter()
            .find(|c| c.as_str() == s)
    }

    fn is_default(&self) -> bool {
        *self == Consent::Pisgate
    }
}

/// How the shopper signs at Nordea, with the wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthenticationMethod {
    Mta,
    MtaOff,
    Ccalc,
    CardRdr,
    QrRdr,
    BankidNo,
    BankidmNo,
    MtaNo,
    BankidSe,
    #[serde(rename = "NEMID_2F")]
    Nemid2f,
}

impl AuthenticationMethod {
    pub const ALL: [AuthenticationMethod; 10] = [
        AuthenticationMethod::Mta,
        AuthenticationMethod::MtaOff,
        AuthenticationMethod::Ccalc,
        AuthenticationMethod::CardRdr,
        AuthenticationMethod::QrRdr,
        AuthenticationMethod::BankidNo,
        AuthenticationMethod::BankidmNo,
        AuthenticationMethod::MtaNo,
        AuthenticationMethod::BankidSe,
        AuthenticationMethod::Nemid2f,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthenticationMethod::Mta => "MTA",
            AuthenticationMethod::MtaOff => "MTA_OFF",
            AuthenticationMethod::Ccalc => "CCALC",
            AuthenticationMethod::CardRdr => "CARD_RDR",
            AuthenticationMethod::QrRdr => "QR_RDR",
            AuthenticationMethod::BankidNo => "BANKID_NO",
            AuthenticationMethod::BankidmNo => "BANKIDM_NO",
            AuthenticationMethod::MtaNo => "MTA_NO",
            AuthenticationMethod::BankidSe => "BANKID_SE",
            AuthenticationMethod::Nemid2f => "NEMID_2F",
        }
    }

    pub fn parse(s: &str) -> Option<AuthenticationMethod> {
        AuthenticationMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
    }

    /// The national methods only exist in their country (Norwegian BankID and MTA_NO, Swedish
    /// BankID, Danish NemID); the rest is left to the bank.
    pub fn allowed_in(self, country: Country) -> bool {
        use AuthenticationMethod::*;
        match self {
            BankidNo | BankidmNo | MtaNo => country == Country::No,
            BankidSe => country == Country::Se,
            Nemid2f => country == Country::Dk,
            Mta | MtaOff | Ccalc | CardRdr | QrRdr => true,
        }
    }
}

/// Who is paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Creditor {
    account: Account,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<Reference>,
}

impl Creditor {
    pub fn account(&self) -> &Account {
        &self.account
    }
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
    pub fn reference(&self) -> Option<&Reference> {
        self.reference.as_ref()
    }
}

/// The shopper's own account, when the merchant knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Debtor {
    account: Account,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl Debtor {
    pub fn account(&self) -> &Account {
        &self.account
    }
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

/// A payment request that satisfies every rule of this module.
///
/// Its `Serialize` form is canonical and stable: fixed field order, normalised values
/// (amount with the currency's decimals, account numbers without separators, metadata keys
/// sorted, absent options left out). Compare or hash it to tell whether an idempotency key
/// is reused with a different request. It contains full account numbers: store it, never
/// log it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRequest {
    amount: Money,
    country: Country,
    creditor: Creditor,
    debtor: Option<Debtor>,
    execution_date: Option<NaiveDate>,
    urgency: Urgency,
    recurring: Option<Recurring>,
    own_account_transfer: bool,
    reference: Option<String>,
    return_url: ReturnUrl,
    psu_id: Option<String>,
    bank: Option<String>,
    language: Option<Language>,
    authentication_method: Option<AuthenticationMethod>,
    metadata: Option<Map<String, Value>>,
    consent: Consent,
}

#[derive(Serialize)]
struct Canonical<'a> {
    amount: String,
    currency: Currency,
    country: Country,
    creditor: &'a Creditor,
    #[serde(skip_serializing_if = "Option::is_none")]
    debtor: Option<&'a Debtor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    execution_date: Option<NaiveDate>,
    urgency: Urgency,
    #[serde(skip_serializing_if = "Option::is_none")]
    recurring: Option<Recurring>,
    own_account_transfer: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    return_url: &'a ReturnUrl,
    #[serde(skip_serializing_if = "Option::is_none")]
    psu_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bank: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<Language>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authentication_method: Option<AuthenticationMethod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Map<String, Value>>,
    /// Absent for the default, so requests from before this field keep their fingerprint.
    #[serde(skip_serializing_if = "Consent::is_default")]
    consent: Consent,
}

impl Serialize for PaymentRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Canonical {
            amount: self.amount.to_decimal_string(),
            currency: self.amount.currency(),
            country: self.country,
            creditor: &self.creditor,
            debtor: self.debtor.as_ref(),
            execution_date: self.execution_date,
            urgency: self.urgency,
            recurring: self.recurring,
            own_account_transfer: self.own_account_transfer,
            reference: self.reference.as_deref(),
            return_url: &self.return_url,
            psu_id: self.psu_id.as_deref(),
            bank: self.bank.as_deref(),
            language: self.language,
            authentication_method: self.authentication_method,
            metadata: self.metadata.as_ref(),
            consent: self.consent,
        }
        .serialize(s)
    }
}

impl PaymentRequest {
    pub fn amount(&self) -> Money {
        self.amount
    }
    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }
    pub fn country(&self) -> Country {
        self.country
    }
    pub fn creditor(&self) -> &Creditor {
        &self.creditor
    }
    pub fn debtor(&self) -> Option<&Debtor> {
        self.debtor.as_ref()
    }
    /// The requested execution date; `None` means as soon as possible.
    pub fn execution_date(&self) -> Option<NaiveDate> {
        self.execution_date
    }
    pub fn urgency(&self) -> Urgency {
        self.urgency
    }
    pub fn recurring(&self) -> Option<Recurring> {
        self.recurring
    }
    pub fn own_account_transfer(&self) -> bool {
        self.own_account_transfer
    }
    /// The merchant's own reference.
    pub fn merchant_reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }
    pub fn return_url(&self) -> &ReturnUrl {
        &self.return_url
    }
    pub fn psu_id(&self) -> Option<&str> {
        self.psu_id.as_deref()
    }
    /// The bank the merchant named, if any (only its spelling is checked here).
    pub fn bank(&self) -> Option<&str> {
        self.bank.as_deref()
    }
    pub fn language(&self) -> Option<Language> {
        self.language
    }
    pub fn authentication_method(&self) -> Option<AuthenticationMethod> {
        self.authentication_method
    }
    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.metadata.as_ref()
    }
    pub fn consent(&self) -> Consent {
        self.consent
    }

    /// The canonical JSON text (see the type docs).
    pub fn canonical_json(&self) -> String {
        // Serialising plain data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks every rule of the module docs against `input` and reports all violations.
    pub fn parse(
        input: &PaymentRequestInput,
        today: NaiveDate,
        env: Environment,
    ) -> Result<PaymentRequest, ValidationErrors> {
        let mut e = Collector::default();
        e.unknown("", &input.unknown);

        // Currency and country first: most other rules depend on them.
        let currency = e
            .required("currency", &input.currency, "a string")
            .and_then(|c| match Currency::from_code(c) {
                Some(c) => Some(c),
                None => {
                    e.push(
                        "currency",
                        "unsupported_currency",
                        "must be one of EUR, DKK, SEK, NOK",
                    );
                    None
                }
            });
        let given_country = e
            .optional("country", &input.country, "a string")
            .and_then(|c| match Country::from_code(c) {
                Some(c) => Some(c),
                None => {
                    e.push(
                        "country",
                        "unsupported_country",
                        "must be one of DK, FI, NO, SE",
                    );
                    None
                }
            });
        if let (Some(country), Some(currency)) = (given_country, currency) {
            if country.currency() != currency {
                e.push(
                    "currency",
                    "currency_country_mismatch",
                    format!("payments from {country} must be in {}", country.currency()),
                );
            }
        }
        let country = given_country.or(currency.map(Country::from_currency));

        let amount = parse_amount(&mut e, input, currency, country);
        let own_account_transfer = e
            .optional(
                "own_account_transfer",
                &input.own_account_transfer,
                "a boolean",
            )
            .copied()
            .unwrap_or(false);
        let creditor = e
            .required("creditor", &input.creditor, "an object")
            .and_then(|c| parse_creditor(&mut e, c, country, own_account_transfer));
        let debtor = e
            .optional("debtor", &input.debtor, "an object")
            .and_then(|d| parse_debtor(&mut e, d, country));
        if let (Some(c), Some(d)) = (&creditor, &debtor) {
            if c.account == d.account {
                e.push(
                    "debtor.account.value",
                    "same_as_creditor",
                    "must differ from the creditor account",
                );
            }
        }

        let execution_date = e
            .optional("execution_date", &input.execution_date, "a string")
            .and_then(|d| match parse_date(d) {
                None => {
                    e.push(
                        "execution_date",
                        "invalid_date",
                        "must be a date as YYYY-MM-DD",
                    );
                    None
                }
                Some(d) if d < today => {
                    e.push(
                        "execution_date",
                        "date_in_past",
                        format!("must be {today} or later"),
                    );
                    None
                }
                Some(d) => Some(d),
            });

        let urgency = e
            .optional("urgency", &input.urgency, "a string")
            .and_then(|u| match Urgency::parse(u) {
                Some(u) => Some(u),
                None => {
                    e.push("urgency", "unknown_urgency", "must be standard or express");
                    None
                }
            })
            .unwrap_or_default();
        if urgency == Urgency::Express {
            if country.is_some_and(|c| c != Country::Fi) {
                e.push(
                    "urgency",
                    "express_not_allowed",
                    "express is only available for FI payments",
                );
            }
            if execution_date.is_some_and(|d| d > today) {
                e.push(
                    "urgency",
                    "express_with_future_date",
                    "an express payment cannot have a future execution_date",
                );
            }
        }

        if own_account_transfer {
            if country == Some(Country::Fi) {
                e.push(
                    "own_account_transfer",
                    "not_allowed_in_country",
                    "own-account transfers are not available in FI",
                );
            }
            if debtor.is_none() && !matches!(input.debtor, Field::Present(_)) {
                e.push(
                    "debtor.account",
                    "required",
                    "an own-account transfer needs the debtor account",
                );
            }
        }

        let recurring = e
            .optional("recurring", &input.recurring, "an object")
            .and_then(|r| parse_recurring(&mut e, r, country, own_account_transfer, env));

        let reference = e
            .optional("reference", &input.reference, "a string")
            .and_then(|r| e.text("reference", r, MAX_MERCHANT_TEXT));
        let return_url = e
            .required("return_url", &input.return_url, "a string")
            .and_then(|u| match ReturnUrl::parse(u) {
                Ok(u) => Some(u),
                Err(err) => {
                    e.push("return_url", err.code(), err.to_string());
                    None
                }
            });
        let psu_id = e
            .optional("psu_id", &input.psu_id, "a string")
            .and_then(|p| e.text("psu_id", p, MAX_MERCHANT_TEXT));
        let bank = e
            .optional("bank", &input.bank, "a string")
            .and_then(|b| {
                let ok = !b.is_empty()
                    && b.len() <= 32
                    && b.bytes().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_'
                    });
                if !ok {
                    e.push(
                        "bank",
                        "unknown_bank",
                        "must be the id of a bank from GET /v1/banks (lower case letters, digits, - and _)",
                    );
                }
                ok.then(|| b.clone())
            });
        let language = e
            .optional("language", &input.language, "a string")
            .and_then(|l| match Language::parse(l) {
                Some(l) => Some(l),
                None => {
                    e.push(
                        "language",
                        "unknown_language",
                        "must be one of en, fi, sv, da, no",
                    );
                    None
                }
            });
        let authentication_method = e
            .optional("authentication_method", &input.authentication_method, "a string")
            .and_then(|m| match AuthenticationMethod::parse(m) {
                None => {
                    e.push(
                        "authentication_method",
                        "unknown_authentication_method",
                        "must be one of MTA, MTA_OFF, CCALC, CARD_RDR, QR_RDR, BANKID_NO, BANKIDM_NO, MTA_NO, BANKID_SE, NEMID_2F",
                    );
                    None
                }
                Some(m) if country.is_some_and(|c| !m.allowed_in(c)) => {
                    e.push(
                        "authentication_method",
                        "authentication_method_not_allowed",
                        format!(
                            "{} is only available in {}",
                            m.as_str(),
                            match m {
                                AuthenticationMethod::BankidSe => "SE",
                                AuthenticationMethod::Nemid2f => "DK",
                                _ => "NO",
                            }
                        ),
                    );
                    None
                }
                Some(m) => Some(m),
            });
        let metadata = e
            .optional("metadata", &input.metadata, "an object")
            .and_then(|m| parse_metadata(&mut e, m));
        let consent = e
            .optional("consent", &input.consent, "a string")
            .and_then(|c| {
                let parsed = Consent::parse(c);
                if parsed.is_none() {
                    e.push("consent", "unknown_consent", "must be pisgate or merchant");
                }
                parsed
            })
            .unwrap_or_default();

        match (amount, country, creditor, return_url) {
            (Some(amount), Some(country), Some(creditor), Some(return_url)) if e.0.is_empty() => {
                Ok(PaymentRequest {
                    amount,
                    country,
                    creditor,
                    debtor,
                    execution_date,
                    urgency,
                    recurring,
                    own_account_transfer,
                    reference,
                    return_url,
                    psu_id,
                    bank,
                    language,
                    authentication_method,
                    metadata,
                    consent,
                })
            }
            // Every `None` above pushed its own error, so this list is never empty.
            _ => Err(ValidationErrors(e.0)),
        }
    }
}

/// The bank's amount field width per country (Nordea PIS swagger: integer digits + 2
/// decimals), as the largest amount in minor units.
fn max_amount_minor(country: Country) -> i64 {
    let integer_digits = match country {
        Country::Fi => 9,
        Country::Se => 11,
        Country::Dk | Country::No => 7,
    };
    10i64.pow(integer_digits + 2) - 1
}

fn parse_amount(
    e: &mut Collector,
    input: &PaymentRequestInput,
    currency: Option<Currency>,
    country: Option<Country>,
) -> Option<Money> {
    let raw = e.required(
        "amount",
        &input.amount,
        "a decimal string such as \"10.50\"",
    )?;
    // Every supported currency has two decimals, so the format can be checked even when
    // the currency itself is wrong.
    let money = match Money::parse(raw, currency.unwrap_or(Currency::Eur)) {
        Ok(m) => m,
        Err(err) => {
            e.push("amount", err.code(), err.to_string());
            return None;
        }
    };
    if let Some(country) = country {
        let max = max_amount_minor(country);
        if money.minor() > max {
            let shown = Money::from_minor(max, money.currency()).map(|m| m.to_decimal_string());
            e.push(
                "amount",
                "amount_too_large",
                format!(
                    "must be at most {} for {country} payments",
                    shown.unwrap_or_default()
                ),
            );
            return None;
        }
    }
    currency.map(|_| money)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Creditor,
    Debtor,
}

fn parse_account(
    e: &mut Collector,
    prefix: &str,
    input: &AccountInput,
    country: Option<Country>,
    role: Role,
) -> Option<Account> {
    e.unknown(&format!("{prefix}."), &input.unknown);
    let type_field = format!("{prefix}.type");
    let value_field = format!("{prefix}.value");
    let account_type = e
        .required(&type_field, &input.account_type, "a string")
        .and_then(|t| match AccountType::parse(t) {
            Some(t) => Some(t),
            None => {
                e.push(
                    &type_field,
                    "unknown_account_type",
                    "must be one of IBAN, BBAN_DK, BBAN_SE, BBAN_NO, BGNR, PGNR",
                );
                None
            }
        });
    let value = e.required(&value_field, &input.value, "a string");
    let account_type = account_type?;
    let mut allowed = true;
    if let Some(country) = country {
        let ok = match role {
            Role::Creditor => account_type.allowed_for_creditor(country),
            Role::Debtor => account_type.allowed_for_debtor(country),
        };
        if !ok {
            e.push(
                &type_field,
                "account_type_not_allowed",
                format!("{account_type} is not available for this account in {country} payments"),
            );
            allowed = false;
        }
    }
    let account = match Account::parse(account_type, value?) {
        Ok(a) => a,
        Err(err) => {
            e.push(&value_field, err.code(), err.to_string());
            return None;
        }
    };
    if let (Some(country), Some(cc)) = (country, account.iban_country()) {
        let ok = match (role, country) {
            (Role::Creditor, Country::Fi) => is_sepa_country(cc),
            _ => cc == country.code(),
        };
        if !ok {
            let why = if role == Role::Creditor && country == Country::Fi {
                "must be an IBAN of a SEPA country".to_owned()
            } else {
                format!("must be a {} IBAN", country.code())
            };
            e.push(&value_field, "iban_country_not_allowed", why);
            return None;
        }
    }
    allowed.then_some(account)
}

fn creditor_message_limit(country: Country, account_type: Option<AccountType>) -> usize {
    match (country, account_type) {
        (Country::Fi, _) | (Country::No, _) => 140,
        (Country::Dk, _) => 40,
        (Country::Se, Some(AccountType::Bgnr)) => 150,
        (Country::Se, Some(AccountType::Pgnr)) => 25,
        (Country::Se, _) => 12,
    }
}

/// An optional message: `""` or whitespace only counts as absent.
fn optional_message(
    e: &mut Collector,
    field: &str,
    f: &Field<String>,
    max: usize,
) -> Option<String> {
    let m = e.optional(field, f, "a string")?;
    if m.trim().is_empty() {
        return None;
    }
    e.text(field, m, max)
}

fn parse_creditor(
    e: &mut Collector,
    input: &CreditorInput,
    country: Option<Country>,
    own_account_transfer: bool,
) -> Option<Creditor> {
    e.unknown("creditor.", &input.unknown);
    let account = e
        .required("creditor.account", &input.account, "an object")
        .and_then(|a| parse_account(e, "creditor.account", a, country, Role::Creditor));
    let account_type = match &input.account {
        Field::Present(a) => match &a.account_type {
            Field::Present(t) => AccountType::parse(t),
            _ => None,
        },
        _ => None,
    };
    if own_account_transfer && matches!(account_type, Some(AccountType::Bgnr | AccountType::Pgnr)) {
        e.push(
            "creditor.account.type",
            "account_type_not_allowed",
            "an own-account transfer must go to a bank account, not a giro number",
        );
    }

    let name = if country == Some(Country::Fi) {
        e.required("creditor.name", &input.name, "a string")
    } else {
        e.optional("creditor.name", &input.name, "a string")
    }
    .and_then(|n| e.text("creditor.name", n, MAX_CREDITOR_NAME));
    let name_ok = name.is_some() || (input.name.is_missing() && country != Some(Country::Fi));

    let message_limit = country.map(|c| creditor_message_limit(c, account_type));
    let message = optional_message(
        e,
        "creditor.message",
        &input.message,
        message_limit.unwrap_or(140),
    );
    let message_ok = message.is_some()
        || matches!(&input.message, Field::Missing)
        || matches!(&input.message, Field::Present(m) if m.trim().is_empty());

    let reference = e
        .optional("creditor.reference", &input.reference, "an object")
        .and_then(|r| parse_reference(e, r, country));
    let reference_ok = input.reference.is_missing() || reference.is_some();
    match account {
        Some(account) if name_ok && message_ok && reference_ok => Some(Creditor {
            account,
            name,
            message,
            reference,
        }),
        _ => None,
    }
}

fn parse_reference(
    e: &mut Collector,
    input: &ReferenceInput,
    country: Option<Country>,
) -> Option<Reference> {
    e.unknown("creditor.reference.", &input.unknown);
    let reference_type = e
        .required("creditor.reference.type", &input.reference_type, "a string")
        .and_then(|t| match ReferenceType::parse(t) {
            Some(t) => Some(t),
            None => {
                e.push(
                    "creditor.reference.type",
                    "unknown_reference_type",
                    "must be OCR or RF",
                );
                None
            }
        });
    let value = e.required("creditor.reference.value", &input.value, "a string");
    let (reference_type, value, country) = (reference_type?, value?, country?);
    match Reference::parse(reference_type, value, country) {
        Ok(r) => Some(r),
        Err(ReferenceError::TypeNotAllowed) => {
            e.push(
                "creditor.reference.type",
                ReferenceError::TypeNotAllowed.code(),
                format!("{reference_type} references are not available for {country} payments"),
            );
            None
        }
        Err(err) => {
            e.push("creditor.reference.value", err.code(), err.to_string());
            None
        }
    }
}

fn parse_debtor(
    e: &mut Collector,
    input: &DebtorInput,
    country: Option<Country>,
) -> Option<Debtor> {
    e.unknown("debtor.", &input.unknown);
    let account = e
        .required("debtor.account", &input.account, "an object")
        .and_then(|a| parse_account(e, "debtor.account", a, country, Role::Debtor));
    let message = optional_message(e, "debtor.message", &input.message, MAX_DEBTOR_MESSAGE);
    Some(Debtor {
        account: account?,
        message,
    })
}

fn parse_recurring(
    e: &mut Collector,
    input: &RecurringInput,
    country: Option<Country>,
    own_account_transfer: bool,
    env: Environment,
) -> Option<Recurring> {
    e.unknown("recurring.", &input.unknown);
    let count = e
        .required("recurring.count", &input.count, "an integer")
        .and_then(|c| match RecurringCount::new(*c) {
            Some(c) => Some(c),
            None => {
                e.push(
                    "recurring.count",
                    "invalid_count",
                    "must be 2 to 98, or 9999 for until deleted",
                );
                None
            }
        });
    let recurrence_type = e
        .required(
            "recurring.recurrence_type",
            &input.recurrence_type,
            "a string",
        )
        .and_then(|t| match RecurrenceType::parse(t) {
            Some(t) => Some(t),
            None => {
                e.push(
                    "recurring.recurrence_type",
                    "unknown_recurrence_type",
                    format!(
                        "is not a known recurrence type; one of {}",
                        RecurrenceType::ALL.map(RecurrenceType::as_str).join(", ")
                    ),
                );
                None
            }
        });
    let recurrence_type = recurrence_type?;
    if let Some(country) = country {
        if let Err(err) = recurrence_type.check(country, own_account_transfer, env) {
            e.push("recurring.recurrence_type", err.code(), err.to_string());
            return None;
        }
    }
    Some(Recurring::new(count?, recurrence_type))
}

/// Strict `YYYY-MM-DD`.
fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return None;
    }
    let y = s[..4].parse().ok()?;
    let m = s[5..7].parse().ok()?;
    let d = s[8..].parse().ok()?;
    NaiveDate::from_ymd_opt(y, m, d)
}

fn parse_metadata(e: &mut Collector, value: &Value) -> Option<Map<String, Value>> {
    let Value::Object(map) = value else {
        e.push("metadata", "invalid_type", "must be an object");
        return None;
    };
    if map.len() > MAX_METADATA_KEYS {
        e.push(
            "metadata",
            "too_many_keys",
            format!("must have at most {MAX_METADATA_KEYS} keys"),
        );
        return None;
    }
    if depth(value) > MAX_METADATA_DEPTH {
        e.push(
            "metadata",
            "too_deep",
            format!("must nest objects and arrays at most {MAX_METADATA_DEPTH} levels deep"),
        );
        return None;
    }
    let canonical = canonicalise(value);
    let size = serde_json::to_vec(&canonical)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        e.push(
            "metadata",
            "too_large",
            format!("must be at most {MAX_METADATA_BYTES} bytes as JSON"),
        );
        return None;
    }
    // PostgreSQL's jsonb cannot hold U+0000 in a key or a string: refuse it by name here
    // rather than fail at the insert.
    if let Some(path) = nul_at(value, "metadata") {
        e.push(
            &path,
            "invalid_characters",
            "must not contain the NUL character (U+0000)",
        );
        return None;
    }
    match canonical {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// How deeply `value` nests objects and arrays (a scalar is 0, `{}` and `[]` are 1).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The dotted path of the first key or string holding U+0000 in `value`, if any.
fn nul_at(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_at(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let at = format!("{path}.{k}");
            if k.contains('\0') {
                Some(path.to_owned())
            } else {
                nul_at(v, &at)
            }
        }),
        _ => None,
    }
}

/// The same JSON with every object's keys in sorted order, whatever map type serde_json
/// was built with.
fn canonicalise(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonicalise(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonicalise).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
