//! Money: integer minor units plus a currency. Floating point never touches an amount.
//!
//! This module turns a merchant's decimal string into minor units ([`Money::parse`]) and
//! back ([`Money::to_decimal_string`]). It must never go through `f32`/`f64`, never round
//! (an amount with more decimals than the currency has is refused, not rounded), and never
//! accept a number in any other spelling than plain `digits[.digits]`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The currencies pisgate can move. Every one of them has two minor-unit decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "EUR")]
    Eur,
    #[serde(rename = "DKK")]
    Dkk,
    #[serde(rename = "SEK")]
    Sek,
    #[serde(rename = "NOK")]
    Nok,
}

impl Currency {
    pub const ALL: [Currency; 4] = [Currency::Eur, Currency::Dkk, Currency::Sek, Currency::Nok];

    /// ISO 4217 code.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Eur => "EUR",
            Currency::Dkk => "DKK",
            Currency::Sek => "SEK",
            Currency::Nok => "NOK",
        }
    }

    /// Number of decimals of the minor unit (ISO 4217 exponent).
    pub fn decimals(self) -> u32 {
        2
    }

    pub fn from_code(code: &str) -> Option<Currency> {
        Currency::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The Nordic countries Nordea serves through this API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Country {
    #[serde(rename = "DK")]
    Dk,
    #[serde(rename = "FI")]
    Fi,
    #[serde(rename = "NO")]
    No,
    #[serde(rename = "SE")]
    Se,
}

impl Country {
    pub const ALL: [Country; 4] = [Country::Dk, Country::Fi, Country::No, Country::Se];

    /// ISO 3166-1 alpha-2 code.
    pub fn code(self) -> &'static str {
        match self {
            Country::Dk => "DK",
            Country::Fi => "FI",
            Country::No => "NO",
            Country::Se => "SE",
        }
    }

    pub fn from_code(code: &str) -> Option<Country> {
        Country::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The country whose single-SCA payments are made in `currency` (EUR means Finland:
    /// it is the only euro country Nordea serves here).
    pub fn from_currency(currency: Currency) -> Country {
        match currency {
            Currency::Eur => Country::Fi,
            Currency::Dkk => Country::Dk,
            Currency::Sek => Country::Se,
            Currency::Nok => Country::No,
        }
    }

    /// The only currency Nordea accepts for single-SCA payments from this country.
    pub fn currency(self) -> Currency {
        match self {
            Country::Fi => Currency::Eur,
            Country::Dk => Currency::Dkk,
            Country::Se => Currency::Sek,
            Country::No => Currency::Nok,
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A positive amount of money in integer minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

/// Why a decimal string is not an amount. Each variant has a stable snake_case [`code`].
///
/// [`code`]: MoneyError::code
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("the amount is empty")]
    Empty,
    #[error("the amount must not contain whitespace")]
    Whitespace,
    #[error("the amount must not be negative")]
    Negative,
    #[error("the amount must not carry a sign")]
    ExplicitSign,
    #[error("the amount must not use exponent notation")]
    Exponent,
    #[error("the amount must use '.' as the decimal separator and no grouping")]
    DecimalComma,
    #[error("the amount may only contain digits and one '.'")]
    InvalidCharacter,
    #[error("the amount must look like 10, 10.5 or 10.50")]
    Malformed,
    #[error("the amount has more decimals than the currency allows")]
    TooManyDecimals,
    #[error("the amount is larger than the maximum of 99999999999.99")]
    TooLarge,
    #[error("the amount must be greater than zero")]
    Zero,
}

impl MoneyError {
    /// Stable machine code, used in the API's validation errors.
    pub fn code(self) -> &'static str {
        match self {
            MoneyError::Empty => "empty",
            MoneyError::Whitespace => "whitespace_not_allowed",
            MoneyError::Negative => "negative_amount",
            MoneyError::ExplicitSign => "sign_not_allowed",
            MoneyError::Exponent => "exponent_not_allowed",
            MoneyError::DecimalComma => "decimal_comma_not_allowed",
            MoneyError::InvalidCharacter => "invalid_characters",
            MoneyError::Malformed => "malformed_amount",
            MoneyError::TooManyDecimals => "too_many_decimals",
            MoneyError::TooLarge => "amount_too_large",
            MoneyError::Zero => "zero_amount",
        }
    }
}

impl Money {
    /// The most integer digits [`Money::parse`] accepts: 11, the widest amount field Nordea
    /// publishes (SE domestic, 11+2 digits). Per-country limits are checked by the payment
    /// request, this is only the "absurd size" guard.
    pub const MAX_INTEGER_DIGITS: usize = 11;

    /// Parses the merchant's decimal string (`"10"`, `"10.5"`, `"10.50"`) into minor units.
    ///
    /// Accepted: `digits` or `digits.digits`, no leading zeros (except a single `0` before
    /// the point), at most [`Currency::decimals`] decimals, at most
    /// [`Money::MAX_INTEGER_DIGITS`] integer digits, strictly positive. Everything else
    /// (signs, exponents, whitespace, commas, `.5`, `10.`) is refused with its own error.
    pub fn parse(decimal: &str, currency: Currency) -> Result<Money, MoneyError> {
        if decimal.is_empty() {
            return Err(MoneyError::Empty);
        }
        if decimal.chars().any(char::is_whitespace) {
            return Err(MoneyError::Whitespace);
        }
        if decimal.starts_with('-') {
            return Err(MoneyError::Negative);
        }
        if decimal.starts_with('+') {
            return Err(MoneyError::ExplicitSign);
        }
        let exponent_form = decimal.contains(['e', 'E'])
            && decimal
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
        if exponent_form {
            return Err(MoneyError::Exponent);
        }
        if decimal.contains(',') {
            return Err(MoneyError::DecimalComma);
        }
        if !decimal.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(MoneyError::InvalidCharacter);
        }
        let (int, frac) = match decimal.split_once('.') {
            None => (decimal, ""),
            Some((_, "")) => return Err(MoneyError::Malformed),
            Some((int, frac)) => (int, frac),
        };
        if int.is_empty() || frac.contains('.') || (int.len() > 1 && int.starts_with('0')) {
            return Err(MoneyError::Malformed);
        }
        let decimals = currency.decimals() as usize;
        if frac.len() > decimals {
            return Err(MoneyError::TooManyDecimals);
        }
        if int.len() > Money::MAX_INTEGER_DIGITS {
            return Err(MoneyError::TooLarge);
        }
        // At most 11 + 2 digits: always fits in an i64.
        let mut minor: i64 = 0;
        for d in int.bytes().chain(frac.bytes()) {
            minor = minor * 10 + i64::from(d - b'0');
        }
        for _ in frac.len()..decimals {
            minor *= 10;
        }
        Money::from_minor(minor, currency).ok_or(MoneyError::Zero)
    }

    /// Builds an amount from minor units; `None` unless it is strictly positive.
    pub fn from_minor(minor: i64, currency: Currency) -> Option<Money> {
        (minor > 0).then_some(Money { minor, currency })
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    /// The decimal string with exactly the currency's decimals, as Nordea and our API expect
    /// (`1050` EUR cents is `"10.50"`).
    pub fn to_decimal_string(self) -> String {
        let scale = 10i64.pow(self.currency.decimals());
        format!(
            "{}.{:0width$}",
            self.minor / scale,
            self.minor % scale,
            width = self.currency.decimals() as usize
        )
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_minor_units_with_the_currency_decimals() {
        let m = Money::from_minor(1050, Currency::Eur).unwrap();
        assert_eq!(m.to_decimal_string(), "10.50");
        assert_eq!(
            Money::from_minor(7, Currency::Sek)
                .unwrap()
                .to_decimal_string(),
            "0.07"
        );
    }

    fn parse(s: &str) -> Result<i64, MoneyError> {
        Money::parse(s, Currency::Eur).map(Money::minor)
    }

    #[test]
    fn parses_whole_and_decimal_amounts_into_minor_units() {
        assert_eq!(parse("10"), Ok(1000));
        assert_eq!(parse("10.5"), Ok(1050));
        assert_eq!(parse("10.50"), Ok(1050));
        assert_eq!(parse("0.01"), Ok(1));
        assert_eq!(parse("0.1"), Ok(10));
        assert_eq!(parse("99999999999.99"), Ok(9_999_999_999_999));
    }

    #[test]
    fn parsing_keeps_the_currency() {
        let m = Money::parse("4", Currency::Sek).unwrap();
        assert_eq!(m.currency(), Currency::Sek);
        assert_eq!(m.to_decimal_string(), "4.00");
    }

    #[test]
    fn refuses_each_malformed_amount_with_its_own_error() {
        let cases = [
            ("", MoneyError::Empty),
            ("0", MoneyError::Zero),
            ("0.00", MoneyError::Zero),
            ("-1", MoneyError::Negative),
            ("-0.01", MoneyError::Negative),
            ("+1", MoneyError::ExplicitSign),
            ("1e3", MoneyError::Exponent),
            ("1E3", MoneyError::Exponent),
            ("1.5e-2", MoneyError::Exponent),
            ("ten", MoneyError::InvalidCharacter),
            (" 10", MoneyError::Whitespace),
            ("10 ", MoneyError::Whitespace),
            ("1 000", MoneyError::Whitespace),
            ("10,50", MoneyError::DecimalComma),
            ("1,000.00", MoneyError::DecimalComma),
            ("abc", MoneyError::InvalidCharacter),
            ("10€", MoneyError::InvalidCharacter),
            ("0x10", MoneyError::InvalidCharacter),
            ("NaN", MoneyError::InvalidCharacter),
            (".5", MoneyError::Malformed),
            ("10.", MoneyError::Malformed),
            ("1.2.3", MoneyError::Malformed),
            ("010", MoneyError::Malformed),
            ("10.505", MoneyError::TooManyDecimals),
            ("0.001", MoneyError::TooManyDecimals),
            ("100000000000", MoneyError::TooLarge),
            ("99999999999999999999999", MoneyError::TooLarge),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn error_codes_are_distinct() {
        let all = [
            MoneyError::Empty,
            MoneyError::Whitespace,
            MoneyError::Negative,
            MoneyError::ExplicitSign,
            MoneyError::Exponent,
            MoneyError::DecimalComma,
            MoneyError::InvalidCharacter,
            MoneyError::Malformed,
            MoneyError::TooManyDecimals,
            MoneyError::TooLarge,
            MoneyError::Zero,
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn parse_and_format_round_trip() {
        for s in ["0.01", "1.00", "10.50", "12345678901.99"] {
            assert_eq!(
                Money::parse(s, Currency::Nok).unwrap().to_decimal_string(),
                s
            );
        }
    }

    #[test]
    fn refuses_zero_and_negative_amounts() {
        assert!(Money::from_minor(0, Currency::Eur).is_none());
        assert!(Money::from_minor(-1, Currency::Eur).is_none());
    }
}
