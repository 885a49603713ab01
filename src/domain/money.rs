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
