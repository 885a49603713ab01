//! Money: integer minor units plus a currency. Floating point never touches an amount.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The currencies pisgate can move. Every one of them has two minor-unit decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl Money {
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

    #[test]
    fn refuses_zero_and_negative_amounts() {
        assert!(Money::from_minor(0, Currency::Eur).is_none());
        assert!(Money::from_minor(-1, Currency::Eur).is_none());
    }
}

/// Why a decimal amount was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be a decimal string such as \"10.50\"")]
    NotDecimal,
    #[error("has more decimals than the currency has")]
    TooManyDecimals,
    #[error("must be greater than zero")]
    NotPositive,
    #[error("is larger than the maximum of 999999999.99")]
    TooLarge,
}

impl MoneyError {
    /// A stable code for API field errors.
    pub fn code(self) -> &'static str {
        match self {
            MoneyError::NotDecimal => "invalid_amount",
            MoneyError::TooManyDecimals => "too_many_decimals",
            MoneyError::NotPositive => "not_positive",
            MoneyError::TooLarge => "too_large",
        }
    }
}

impl Money {
    /// The largest amount accepted, in major units: far above any single account-to-account
    /// payment, far below i64's range.
    pub const MAX_MAJOR: i64 = 999_999_999;

    /// Parses a merchant's decimal string ("10", "10.5", "10.50") into minor units exactly.
    /// Refuses signs, exponents, spaces, separators and more decimals than the currency has.
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (text, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || frac.is_some_and(|f| !digits(f)) {
            return Err(MoneyError::NotDecimal);
        }
        let decimals = currency.decimals() as usize;
        let frac = frac.unwrap_or("");
        let significant = frac.trim_end_matches('0');
        if significant.len() > decimals {
            return Err(MoneyError::TooManyDecimals);
        }
        let whole_trimmed = whole.trim_start_matches('0');
        if whole_trimmed.len() > 9 {
            return Err(MoneyError::TooLarge);
        }
        let major: i64 = if whole_trimmed.is_empty() {
            0
        } else {
            whole_trimmed.parse().map_err(|_| MoneyError::TooLarge)?
        };
        let mut minor_part: i64 = 0;
        for i in 0..decimals {
            let d = significant
                .as_bytes()
                .get(i)
                .map_or(0, |b| i64::from(b - b'0'));
            minor_part = minor_part * 10 + d;
        }
        let minor = major * 10i64.pow(currency.decimals()) + minor_part;
        Money::from_minor(minor, currency).ok_or(MoneyError::NotPositive)
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn parses_decimal_strings_exactly() {
        for (text, minor) in [
            ("10", 1000),
            ("10.5", 1050),
            ("10.50", 1050),
            ("0.01", 1),
            ("999999999.99", 99_999_999_999),
            ("007.10", 710),
            ("1.500", 150),
        ] {
            assert_eq!(
                Money::parse(text, Currency::Eur).unwrap().minor(),
                minor,
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_plain_positive_decimal() {
        use MoneyError::*;
        for (text, err) in [
            ("", NotDecimal),
            ("-1", NotDecimal),
            ("+1", NotDecimal),
            ("1e3", NotDecimal),
            ("1,50", NotDecimal),
            (" 1", NotDecimal),
            ("1.", NotDecimal),
            (".5", NotDecimal),
            ("abc", NotDecimal),
            ("1.2.3", NotDecimal),
            ("0", NotPositive),
            ("0.00", NotPositive),
            ("10.001", TooManyDecimals),
            ("1000000000", TooLarge),
            ("99999999999999999999999", TooLarge),
        ] {
            assert_eq!(Money::parse(text, Currency::Eur), Err(err), "{text:?}");
        }
    }
}
