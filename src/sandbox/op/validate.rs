//! The creation body's strict schema (contract §3): unknown fields refused, the amount a
//! string with exactly two decimals and above zero, EUR only, IBANs with valid check digits,
//! the creditor's name at most 70 characters, a Finnish or RF creditor reference with a
//! valid check digit *or* a message of at most 140 characters. Every refusal names the
//! field. It must never accept a JSON number as an amount.

use serde_json::{Map, Value};

/// A refused body: the error code (`INVALID_REQUEST`, `INVALID_AMOUNT`, `INVALID_IBAN`,
/// `UNSUPPORTED_CURRENCY`), the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub code: &'static str,
    pub field: String,
    pub reason: String,
}

impl BodyError {
    fn new(code: &'static str, field: &str, reason: impl Into<String>) -> BodyError {
        BodyError {
            code,
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.reason)
    }
}

/// What the simulator keeps of a valid body.
#[derive(Debug, Clone)]
pub struct ValidBody {
    pub amount_cents: i64,
    pub amount: String,
    pub creditor_name: String,
    pub creditor_iban: String,
}

const TOP: &[&str] = &[
    "amount",
    "currency",
    "creditor",
    "debtor",
    "reference",
    "message",
    "endToEndId",
];

fn only_known(obj: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), BodyError> {
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            let field = format!("{prefix}{key}");
            return Err(BodyError::new(
                "INVALID_REQUEST",
                &field,
                "unknown field (not in the schema)",
            ));
        }
    }
    Ok(())
}

fn string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a str>, BodyError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(BodyError::new("INVALID_REQUEST", field, "must be a string")),
    }
}

/// Validates a creation body.
pub fn create_body(body: &Value) -> Result<ValidBody, BodyError> {
    let obj = body
        .as_object()
        .ok_or_else(|| BodyError::new("INVALID_REQUEST", "body", "must be a JSON object"))?;
    only_known(obj, TOP, "")?;
    let amount = match obj.get("amount") {
        None => return Err(BodyError::new("INVALID_AMOUNT", "amount", "is required")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(BodyError::new(
                "INVALID_AMOUNT",
                "amount",
                "must be a string with exactly two decimals, e.g. \"12.34\"",
            ));
        }
    };
    let amount_cents = amount_cents(&amount)?;
    match string(obj, "currency", "currency")? {
        None => return Err(BodyError::new("INVALID_REQUEST", "currency", "is required")),
        Some("EUR") => {}
        Some(other) => {
            return Err(BodyError::new(
                "UNSUPPORTED_CURRENCY",
                "currency",
                format!("{other:?} is not supported (EUR only)"),
            ));
        }
    }
    let creditor = match obj.get("creditor") {
        None => return Err(BodyError::new("INVALID_REQUEST", "creditor", "is required")),
        Some(Value::Object(c)) => c,
        Some(_) => {
            return Err(BodyError::new(
                "INVALID_REQUEST",
                "creditor",
                "must be an object",
            ));
        }
    };
    only_known(creditor, &["name", "iban"], "creditor.")?;
    let name = string(creditor, "name", "creditor.name")?
        .ok_or_else(|| BodyError::new("INVALID_REQUEST", "creditor.name", "is required"))?;
    if name.trim().is_empty() {
        return Err(BodyError::new(
            "INVALID_REQUEST",
            "creditor.name",
            "must not be empty",
        ));
    }
    if name.chars().count() > 70 {
        return Err(BodyError::new(
            "INVALID_REQUEST",
            "creditor.name",
            "must be at most 70 characters",
        ));
    }
    let iban = string(creditor, "iban", "creditor.iban")?
        .ok_or_else(|| BodyError::new("INVALID_REQUEST", "creditor.iban", "is required"))?;
    check_iban(iban).map_err(|r| BodyError::new("INVALID_IBAN", "creditor.iban", r))?;
    match obj.get("debtor") {
        None => {}
        Some(Value::Object(d)) => {
            only_known(d, &["iban"], "debtor.")?;
            let iban = string(d, "iban", "debtor.iban")?
                .ok_or_else(|| BodyError::new("INVALID_REQUEST", "debtor.iban", "is required"))?;
            check_iban(iban).map_err(|r| BodyError::new("INVALID_IBAN", "debtor.iban", r))?;
        }
        Some(_) => {
            return Err(BodyError::new(
                "INVALID_REQUEST",
                "debtor",
                "must be an object",
            ));
        }
    }
    let reference = string(obj, "reference", "reference")?;
    let message = string(obj, "message", "message")?;
    if reference.is_some() && message.is_some() {
        return Err(BodyError::new(
            "INVALID_REQUEST",
            "reference",
            "give a reference or a message, not both",
        ));
    }
    if let Some(r) = reference {
        check_reference(r).map_err(|why| BodyError::new("INVALID_REQUEST", "reference", why))?;
    }
    if let Some(m) = message {
        if m.trim().is_empty() {
            return Err(BodyError::new(
                "INVALID_REQUEST",
                "message",
                "must not be empty",
            ));
        }
        if m.chars().count() > 140 {
            return Err(BodyError::new(
                "INVALID_REQUEST",
                "message",
                "must be at most 140 characters",
            ));
        }
    }
    if let Some(e) = string(obj, "endToEndId", "endToEndId")?
        && (e.is_empty() || e.len() > 64 || !e.is_ascii())
    {
        return Err(BodyError::new(
            "INVALID_REQUEST",
            "endToEndId",
            "must be 1 to 64 ASCII characters",
        ));
    }
    Ok(ValidBody {
        amount_cents,
        amount,
        creditor_name: name.to_owned(),
        creditor_iban: iban.to_owned(),
    })
}

/// `"12.34"` → 1234: digits, a dot, exactly two digits; no sign, no leading zero (but
/// `0.xx`), above zero.
pub fn amount_cents(s: &str) -> Result<i64, BodyError> {
    let bad = |why: &str| BodyError::new("INVALID_AMOUNT", "amount", why.to_owned());
    let (int, frac) = s
        .split_once('.')
        .ok_or_else(|| bad("must have exactly two decimals, e.g. \"12.34\""))?;
    if frac.len() != 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("must have exactly two decimals, e.g. \"12.34\""));
    }
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("must be a plain decimal number, e.g. \"12.34\""));
    }
    if int.len() > 1 && int.starts_with('0') {
        return Err(bad("must not have leading zeros"));
    }
    if int.len() > 12 {
        return Err(bad("is too large"));
    }
    let cents = int.parse::<i64>().map_err(|_| bad("is not a number"))? * 100
        + frac.parse::<i64>().map_err(|_| bad("is not a number"))?;
    if cents <= 0 {
        return Err(bad("must be above zero"));
    }
    Ok(cents)
}

/// ISO 13616: two letters, two check digits, up to 30 alphanumerics; mod 97 = 1.
pub fn check_iban(iban: &str) -> Result<(), String> {
    let b = iban.as_bytes();
    if !(15..=34).contains(&b.len()) {
        return Err("must be 15 to 34 characters without spaces".into());
    }
    if !b[..2].iter().all(u8::is_ascii_uppercase)
        || !b[2..4].iter().all(u8::is_ascii_digit)
        || !b[4..]
            .iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    {
        return Err("must be a country code, two check digits and upper-case alphanumerics".into());
    }
    let rearranged = iban[4..].bytes().chain(iban[..4].bytes());
    if mod97(rearranged) != Some(1) {
        return Err("check digits are wrong".into());
    }
    Ok(())
}

/// The remainder mod 97 of an alphanumeric string read as ISO 7064 digits (A=10 … Z=35).
fn mod97(chars: impl Iterator<Item = u8>) -> Option<u32> {
    let mut rem: u32 = 0;
    for c in chars {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return None,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    Some(rem)
}

/// A Finnish creditor reference (4–20 digits, the last the 7-3-1 check digit) or an
/// ISO 11649 RF reference (`RF`, two check digits, 1–21 alphanumerics; mod 97 = 1).
pub fn check_reference(r: &str) -> Result<(), String> {
    if let Some(rest) = r.strip_prefix("RF") {
        let b = rest.as_bytes();
        if b.len() < 3
            || b.len() > 23
            || !b[..2].iter().all(u8::is_ascii_digit)
            || !b[2..]
                .iter()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        {
            return Err(
                "an RF reference is RF, two check digits and 1 to 21 upper-case alphanumerics"
                    .into(),
            );
        }
        let rearranged = rest[2..].bytes().chain(r[..4].bytes());
        if mod97(rearranged) != Some(1) {
            return Err("the RF reference's check digits are wrong (ISO 11649)".into());
        }
        return Ok(());
    }
    let b = r.as_bytes();
    if !(4..=20).contains(&b.len()) || !b.iter().all(u8::is_ascii_digit) {
        return Err("a Finnish reference is 4 to 20 digits (or use an RF reference)".into());
    }
    let (body, check) = b.split_at(b.len() - 1);
    let weights = [7u32, 3, 1];
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * weights[i % 3])
        .sum();
    let expected = (10 - sum % 10) % 10;
    if u32::from(check[0] - b'0') != expected {
        return Err("the Finnish reference's check digit is wrong".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_ibans_are_checked_by_their_check_digits() {
        assert!(check_reference("RF18539007547034").is_ok());
        assert!(check_reference("RF19539007547034").is_err());
        assert!(check_reference("1232").is_ok());
        assert!(check_reference("1233").is_err());
        assert!(check_reference("12345672").is_ok());
        assert!(check_iban("FI2112345600000785").is_ok());
        assert!(check_iban("FI2112345600000786").is_err());
        assert_eq!(amount_cents("12.34").unwrap(), 1234);
        for bad in ["12.3", "12", "-1.00", "0.00", "01.00", "1.234", "1e2.00"] {
            assert!(amount_cents(bad).is_err(), "{bad}");
        }
    }
}
