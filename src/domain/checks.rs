//! Check digits of account numbers and payment references: IBAN mod-97, Luhn (mod 10),
//! Norwegian mod 11, the Finnish 7-3-1 reference and the RF creditor reference (ISO 11649).
//!
//! Pure functions over ASCII digits; callers normalise (strip spaces, upper-case) first.

/// ISO 13616 IBAN lengths of the SEPA countries (and a few more that Nordic shoppers pay).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AT", 20),
    ("BE", 16),
    ("BG", 22),
    ("CH", 21),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("EE", 20),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IS", 26),
    ("IT", 27),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MT", 31),
    ("NL", 18),
    ("NO", 15),
    ("PL", 28),
    ("PT", 25),
    ("RO", 24),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("VA", 22),
];

/// Remainder mod 97 of a string where letters count as 10..35 (ISO 7064 MOD 97-10).
fn mod97(chars: impl Iterator<Item = char>) -> Option<u32> {
    let mut rem: u32 = 0;
    for c in chars {
        let v = c.to_digit(36)?;
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    Some(rem)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IbanError {
    Format,
    UnknownCountry,
    Length { expected: usize },
    Checksum,
}

/// Checks a normalised IBAN (upper case, no spaces).
pub fn check_iban(iban: &str) -> Result<(), IbanError> {
    if iban.len() < 5
        || !iban
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err(IbanError::Format);
    }
    let (country, rest) = iban.split_at(2);
    if !country.chars().all(|c| c.is_ascii_uppercase())
        || !rest[..2].chars().all(|c| c.is_ascii_digit())
    {
        return Err(IbanError::Format);
    }
    let expected = IBAN_LENGTHS
        .iter()
        .find(|(c, _)| *c == country)
        .map(|(_, l)| *l)
        .ok_or(IbanError::UnknownCountry)?;
    if iban.len() != expected {
        return Err(IbanError::Length { expected });
    }
    let rearranged = iban[4..].chars().chain(iban[..4].chars());
    match mod97(rearranged) {
        Some(1) => Ok(()),
        _ => Err(IbanError::Checksum),
    }
}

fn digits(s: &str) -> Option<Vec<u32>> {
    (!s.is_empty()).then_some(())?;
    s.chars().map(|c| c.to_digit(10)).collect()
}

/// Luhn (mod 10) over all digits, the last being the check digit.
pub fn luhn_ok(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &v)| {
            if i % 2 == 1 {
                let x = v * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                v
            }
        })
        .sum();
    sum % 10 == 0
}

/// Mod 11 with weights 2,3,4,5,6,7 repeating from the right (Norwegian accounts and KID);
/// the last digit is the check digit (`-` as 10 is not valid here).
pub fn mod11_ok(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    let (body, check) = d.split_at(d.len() - 1);
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &v)| v * (2 + (i as u32 % 6)))
        .sum();
    let expected = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        x => x,
    };
    check[0] == expected
}

/// The Finnish national reference: 4 to 20 digits, weights 7,3,1 from the right.
pub fn finnish_reference_ok(s: &str) -> bool {
    let Some(d) = digits(s) else { return false };
    if !(4..=20).contains(&d.len()) {
        return false;
    }
    let (body, check) = d.split_at(d.len() - 1);
    let weights = [7, 3, 1];
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &v)| v * weights[i % 3])
        .sum();
    (10 - sum % 10) % 10 == check[0]
}

/// The RF creditor reference (ISO 11649): `RF`, two check digits, up to 21 alphanumerics.
pub fn rf_reference_ok(s: &str) -> bool {
    if !(5..=25).contains(&s.len())
        || !s.starts_with("RF")
        || !s.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return false;
    }
    let rearranged = s[4..].chars().chain(s[..4].chars());
    mod97(rearranged.map(|c| c.to_ascii_uppercase())) == Some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibans_of_each_nordic_country_check() {
        for iban in [
            "FI1410093000123458",
            "DK5000400440116243",
            "SE4550000000058398257466",
            "NO9386011117947",
            "DE89370400440532013000",
        ] {
            assert_eq!(check_iban(iban), Ok(()), "{iban}");
        }
        assert_eq!(check_iban("FI1410093000123459"), Err(IbanError::Checksum));
        assert_eq!(
            check_iban("FI141009300012345"),
            Err(IbanError::Length { expected: 18 })
        );
        assert_eq!(
            check_iban("XX1410093000123458"),
            Err(IbanError::UnknownCountry)
        );
        assert_eq!(check_iban("FI14-1009"), Err(IbanError::Format));
    }

    #[test]
    fn luhn_and_mod11_check_digits() {
        assert!(luhn_ok("79927398713"));
        assert!(!luhn_ok("79927398710"));
        assert!(mod11_ok("86011117947"), "a Norwegian account");
        assert!(!mod11_ok("86011117948"));
        assert!(luhn_ok("1234566"), "a KID with a Luhn check digit");
    }

    #[test]
    fn finnish_and_rf_references_check() {
        assert!(finnish_reference_ok("1232"));
        assert!(finnish_reference_ok("1234561"));
        assert!(!finnish_reference_ok("1234562"));
        assert!(rf_reference_ok("RF18539007547034"));
        assert!(!rf_reference_ok("RF19539007547034"));
    }
}
