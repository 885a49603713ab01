//! Closed sets that the OpenAPI document describes as enums where the code keeps a string
//! (the payment view stores what was validated). Only descriptions: nothing parses into
//! these; the domain types with the same names do.

use serde::Serialize;
use utoipa::ToSchema;

/// The kind of an account number.
#[derive(Serialize, ToSchema)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum AccountType {
    IBAN,
    BBAN_DK,
    BBAN_SE,
    BBAN_NO,
    BGNR,
    PGNR,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Standard,
    Express,
}

/// How often a standing order is executed (`EVERY_MINUTE_SANDBOX_ONLY` only in the sandbox).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecurrenceType {
    Daily,
    Weekly,
    Biweekly,
    MonthlySameDay,
    MonthlyEom,
    QuarterlySameDay,
    QuarterlyEom,
    TriAnnuallySameDay,
    SemiAnnuallySameDay,
    SemiAnnuallyEom,
    YearlySameDay,
    YearlyEom,
    EveryMinuteSandboxOnly,
}

/// The language of pisgate's pages and of the bank's signing page.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Fi,
    Sv,
    Da,
    No,
}

/// The bank's authentication method to offer first (BANKID_NO, BANKIDM_NO and MTA_NO only in Norway, BANKID_SE only in Sweden, NEMID_2F only in Denmark).
#[derive(Serialize, ToSchema)]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names<T: Serialize>(values: &[T]) -> Vec<String> {
        values
            .iter()
            .map(|v| {
                serde_json::to_value(v)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// The document's enums list exactly what the parsers accept.
    #[test]
    fn the_described_sets_are_the_accepted_ones() {
        use RecurrenceType as R;
        let described = names(&[
            R::Daily,
            R::Weekly,
            R::Biweekly,
            R::MonthlySameDay,
            R::MonthlyEom,
            R::QuarterlySameDay,
            R::QuarterlyEom,
            R::TriAnnuallySameDay,
            R::SemiAnnuallySameDay,
            R::SemiAnnuallyEom,
            R::YearlySameDay,
            R::YearlyEom,
            R::EveryMinuteSandboxOnly,
        ]);
        let accepted: Vec<&str> = crate::domain::RecurrenceType::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        assert_eq!(described, accepted);
        use Language as L;
        let described = names(&[L::En, L::Fi, L::Sv, L::Da, L::No]);
        let accepted: Vec<&str> = crate::domain::Language::ALL
            .iter()
            .map(|l| l.as_str())
            .collect();
        assert_eq!(described, accepted);
        use AuthenticationMethod as A;
        let described = names(&[
            A::Mta,
            A::MtaOff,
            A::Ccalc,
            A::CardRdr,
            A::QrRdr,
            A::BankidNo,
            A::BankidmNo,
            A::MtaNo,
            A::BankidSe,
            A::Nemid2f,
        ]);
        let accepted: Vec<&str> = crate::domain::AuthenticationMethod::ALL
            .iter()
            .map(|m| m.as_str())
            .collect();
        assert_eq!(described, accepted);
    }
}
