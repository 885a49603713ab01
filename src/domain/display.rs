//! Amounts, dates and recurrences in the shopper's own words, for the pages a shopper reads
//! (the consent page, the sandbox's signing page).
//!
//! Amounts are formatted from integer minor units with integer arithmetic only; a float
//! never touches them. The forms follow CLDR's conventions for each language: `€10.50` (en),
//! `10,50 €` (fi, sv, da), `€ 10,50` and `kr 250,00` (nb), `250,00 kr` (sv), `250,00 kr.`
//! (da). Separators inside an amount are no-break spaces (U+00A0), so an amount never
//! breaks across lines.

use super::money::Currency;
use super::payment::Language;
use super::recurrence::RecurrenceType;
use chrono::{Datelike, NaiveDate};

/// The no-break space between an amount's digit groups and between number and symbol.
pub const NBSP: char = '\u{a0}';

/// `minor` (minor units, two decimals) in `currency`, as a shopper reading `lang` writes it.
pub fn amount(minor: i64, currency: Currency, lang: Language) -> String {
    let (group, decimal) = match lang {
        Language::En => (',', '.'),
        Language::Da => ('.', ','),
        Language::Fi | Language::Sv | Language::No => (NBSP, ','),
    };
    let scale = 10_i64.pow(currency.decimals());
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let (units, cents) = (abs / scale as u64, abs % scale as u64);
    let digits = units.to_string();
    let mut number = String::with_capacity(digits.len() + 8);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            number.push(group);
        }
        number.push(d);
    }
    let number = format!(
        "{sign}{number}{decimal}{cents:0width$}",
        width = currency.decimals() as usize
    );
    let code = currency.code();
    match (lang, currency) {
        (Language::En, Currency::Eur) => format!("€{number}"),
        (Language::En, _) => format!("{code}{NBSP}{number}"),
        (Language::No, Currency::Eur) => format!("€{NBSP}{number}"),
        (Language::No, Currency::Nok) => format!("kr{NBSP}{number}"),
        (Language::No, _) => format!("{code}{NBSP}{number}"),
        (_, Currency::Eur) => format!("{number}{NBSP}€"),
        (Language::Sv, Currency::Sek) => format!("{number}{NBSP}kr"),
        (Language::Da, Currency::Dkk) => format!("{number}{NBSP}kr."),
        _ => format!("{number}{NBSP}{code}"),
    }
}

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_SV: [&str; 12] = [
    "januari",
    "februari",
    "mars",
    "april",
    "maj",
    "juni",
    "juli",
    "augusti",
    "september",
    "oktober",
    "november",
    "december",
];
const MONTHS_DA: [&str; 12] = [
    "januar",
    "februar",
    "marts",
    "april",
    "maj",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "december",
];
const MONTHS_NB: [&str; 12] = [
    "januar",
    "februar",
    "mars",
    "april",
    "mai",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "desember",
];

/// A calendar date in words: `1 December 2026`, `1.12.2026`, `1 december 2026`,
/// `1. december 2026`, `1. desember 2026`.
pub fn date(d: NaiveDate, lang: Language) -> String {
    let (day, month, year) = (d.day(), d.month0() as usize, d.year());
    match lang {
        Language::En => format!("{day} {} {year}", MONTHS_EN[month]),
        Language::Fi => format!("{day}.{}.{year}", month + 1),
        Language::Sv => format!("{day} {} {year}", MONTHS_SV[month]),
        Language::Da => format!("{day}. {} {year}", MONTHS_DA[month]),
        Language::No => format!("{day}. {} {year}", MONTHS_NB[month]),
    }
}

/// How often a standing order runs, in words: `monthly`, `kuukausittain`, …
fn every(kind: RecurrenceType, lang: Language) -> &'static str {
    use Language::*;
    use RecurrenceType::*;
    match (kind, lang) {
        (Daily, En) => "daily",
        (Daily, Fi) => "päivittäin",
        (Daily, Sv) => "dagligen",
        (Daily, Da | No) => "daglig",
        (Weekly, En) => "weekly",
        (Weekly, Fi) => "viikoittain",
        (Weekly, Sv) => "varje vecka",
        (Weekly, Da) => "ugentlig",
        (Weekly, No) => "ukentlig",
        (Biweekly, En) => "every two weeks",
        (Biweekly, Fi) => "joka toinen viikko",
        (Biweekly, Sv) => "varannan vecka",
        (Biweekly, Da) => "hver anden uge",
        (Biweekly, No) => "annenhver uke",
        (MonthlySameDay, En) => "monthly",
        (MonthlySameDay, Fi) => "kuukausittain",
        (MonthlySameDay, Sv) => "varje månad",
        (MonthlySameDay, Da) => "månedlig",
        (MonthlySameDay, No) => "månedlig",
        (MonthlyEom, En) => "monthly, on the last day of the month",
        (MonthlyEom, Fi) => "kuukausittain, kuun viimeisenä päivänä",
        (MonthlyEom, Sv) => "varje månad, på månadens sista dag",
        (MonthlyEom, Da) => "månedlig, på månedens sidste dag",
        (MonthlyEom, No) => "månedlig, på månedens siste dag",
        (QuarterlySameDay, En) => "quarterly",
        (QuarterlySameDay, Fi) => "neljännesvuosittain",
        (QuarterlySameDay, Sv) => "varje kvartal",
        (QuarterlySameDay, Da) => "kvartalsvis",
        (QuarterlySameDay, No) => "kvartalsvis",
        (QuarterlyEom, En) => "quarterly, on the last day of the month",
        (QuarterlyEom, Fi) => "neljännesvuosittain, kuun viimeisenä päivänä",
        (QuarterlyEom, Sv) => "varje kvartal, på månadens sista dag",
        (QuarterlyEom, Da) => "kvartalsvis, på månedens sidste dag",
        (QuarterlyEom, No) => "kvartalsvis, på månedens siste dag",
        (TriAnnuallySameDay, En) => "every four months",
        (TriAnnuallySameDay, Fi) => "neljän kuukauden välein",
        (TriAnnuallySameDay, Sv) => "var fjärde månad",
        (TriAnnuallySameDay, Da) => "hver fjerde måned",
        (TriAnnuallySameDay, No) => "hver fjerde måned",
        (SemiAnnuallySameDay, En) => "every six months",
        (SemiAnnuallySameDay, Fi) => "puolivuosittain",
        (SemiAnnuallySameDay, Sv) => "varje halvår",
        (SemiAnnuallySameDay, Da) => "halvårlig",
        (SemiAnnuallySameDay, No) => "halvårlig",
        (SemiAnnuallyEom, En) => "every six months, on the last day of the month",
        (SemiAnnuallyEom, Fi) => "puolivuosittain, kuun viimeisenä päivänä",
        (SemiAnnuallyEom, Sv) => "varje halvår, på månadens sista dag",
        (SemiAnnuallyEom, Da) => "halvårlig, på månedens sidste dag",
        (SemiAnnuallyEom, No) => "halvårlig, på månedens siste dag",
        (YearlySameDay, En) => "yearly",
        (YearlySameDay, Fi) => "vuosittain",
        (YearlySameDay, Sv) => "varje år",
        (YearlySameDay, Da) => "årlig",
        (YearlySameDay, No) => "årlig",
        (YearlyEom, En) => "yearly, on the last day of the month",
        (YearlyEom, Fi) => "vuosittain, kuun viimeisenä päivänä",
        (YearlyEom, Sv) => "varje år, på månadens sista dag",
        (YearlyEom, Da) => "årlig, på månedens sidste dag",
        (YearlyEom, No) => "årlig, på månedens siste dag",
        (EveryMinuteSandboxOnly, En) => "every minute (sandbox)",
        (EveryMinuteSandboxOnly, Fi) => "joka minuutti (testiympäristö)",
        (EveryMinuteSandboxOnly, Sv) => "varje minut (testmiljö)",
        (EveryMinuteSandboxOnly, Da) => "hvert minut (testmiljø)",
        (EveryMinuteSandboxOnly, No) => "hvert minutt (testmiljø)",
    }
}

/// `payment` or `payments` (and the like) for `count`.
fn payments(count: u32, lang: Language) -> &'static str {
    match (lang, count) {
        (Language::En, 1) => "payment",
        (Language::En, _) => "payments",
        (Language::Fi, 1) => "maksu",
        (Language::Fi, _) => "maksua",
        (Language::Sv, 1) => "betalning",
        (Language::Sv, _) => "betalningar",
        (Language::Da | Language::No, 1) => "betaling",
        (Language::Da | Language::No, _) => "betalinger",
    }
}

/// A standing order in words: `monthly, 12 payments`, `kuukausittain, 12 maksua`.
pub fn recurrence(kind: RecurrenceType, count: u32, lang: Language) -> String {
    format!("{}, {count} {}", every(kind, lang), payments(count, lang))
}

/// How often an amount is paid, said after the amount: `a month`, `kuukaudessa`,
/// `i månaden`, `om måneden`, `i måneden`; where a language has no such phrase for a period,
/// the same words as [`recurrence`] (`every two weeks`).
fn per(kind: RecurrenceType, lang: Language) -> String {
    use Language::*;
    use RecurrenceType::*;
    let last_day = match lang {
        En => ", on the last day of the month",
        Fi => ", kuun viimeisenä päivänä",
        Sv => ", på månadens sista dag",
        Da => ", på månedens sidste dag",
        No => ", på månedens siste dag",
    };
    let (base, eom) = match kind {
        MonthlyEom => (MonthlySameDay, true),
        QuarterlyEom => (QuarterlySameDay, true),
        SemiAnnuallyEom => (SemiAnnuallySameDay, true),
        YearlyEom => (YearlySameDay, true),
        other => (other, false),
    };
    let phrase = match (base, lang) {
        (Daily, En) => "a day",
        (Daily, Fi) => "päivässä",
        (Daily, Sv) => "om dagen",
        (Daily, Da | No) => "om dagen",
        (Weekly, En) => "a week",
        (Weekly, Fi) => "viikossa",
        (Weekly, Sv) => "i veckan",
        (Weekly, Da) => "om ugen",
        (Weekly, No) => "i uken",
        (MonthlySameDay, En) => "a month",
        (MonthlySameDay, Fi) => "kuukaudessa",
        (MonthlySameDay, Sv) => "i månaden",
        (MonthlySameDay, Da) => "om måneden",
        (MonthlySameDay, No) => "i måneden",
        (QuarterlySameDay, En) => "a quarter",
        (QuarterlySameDay, Sv | No) => "per kvartal",
        (QuarterlySameDay, Da) => "i kvartalet",
        (SemiAnnuallySameDay, En) => "every six months",
        (SemiAnnuallySameDay, Sv) => "per halvår",
        (SemiAnnuallySameDay, Da) => "hvert halve år",
        (SemiAnnuallySameDay, No) => "hvert halvår",
        (YearlySameDay, En) => "a year",
        (YearlySameDay, Fi) => "vuodessa",
        (YearlySameDay, Sv | Da) => "om året",
        (YearlySameDay, No) => "i året",
        (other, _) => every(other, lang),
    };
    if eom {
        format!("{phrase}{last_day}")
    } else {
        phrase.to_owned()
    }
}

/// What follows an amount paid again and again: `a month, 3 payments`, `i månaden,
/// 3 betalningar`.
pub fn recurrence_after_amount(kind: RecurrenceType, count: u32, lang: Language) -> String {
    format!("{}, {count} {}", per(kind, lang), payments(count, lang))
}

/// An amount with how often it is paid, as one phrase for the amount's large type:
/// `250,00 kr i månaden, 3 betalningar`, `€10.50 a month, 3 payments`.
pub fn amount_with_recurrence(
    amount: &str,
    kind: RecurrenceType,
    count: u32,
    lang: Language,
) -> String {
    format!("{amount} {}", recurrence_after_amount(kind, count, lang))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: String) -> String {
        s.replace(NBSP, " ")
    }

    #[test]
    fn amounts_are_written_the_way_each_language_writes_them() {
        use Currency::*;
        use Language::*;
        let cases = [
            (1050, Eur, Fi, "10,50 €"),
            (25000, Nok, No, "kr 250,00"),
            (1050, Eur, No, "€ 10,50"),
            (1050, Eur, En, "€10.50"),
            (25000, Sek, En, "SEK 250.00"),
            (1050, Eur, Sv, "10,50 €"),
            (25000, Sek, Sv, "250,00 kr"),
            (25000, Nok, Sv, "250,00 NOK"),
            (1050, Eur, Da, "10,50 €"),
            (25000, Dkk, Da, "250,00 kr."),
            (25000, Sek, Fi, "250,00 SEK"),
            (1, Eur, Fi, "0,01 €"),
            (123_456_789, Eur, Fi, "1 234 567,89 €"),
            (123_456_789, Eur, En, "€1,234,567.89"),
            (123_456_789, Dkk, Da, "1.234.567,89 kr."),
            (100_000, Nok, No, "kr 1 000,00"),
            (99_999, Sek, Sv, "999,99 kr"),
        ];
        for (minor, currency, lang, want) in cases {
            assert_eq!(
                plain(amount(minor, currency, lang)),
                want,
                "{lang:?} {currency}"
            );
        }
    }

    #[test]
    fn amount_separators_never_break_a_line() {
        let s = amount(123_456_789, Currency::Eur, Language::Fi);
        assert!(!s.contains(' '), "{s:?}");
        assert_eq!(s, "1\u{a0}234\u{a0}567,89\u{a0}€");
    }

    #[test]
    fn the_largest_amount_is_formatted_exactly() {
        assert_eq!(
            plain(amount(i64::MAX, Currency::Eur, Language::En)),
            "€92,233,720,368,547,758.07"
        );
    }

    #[test]
    fn dates_are_written_in_words_per_language() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(date(d, Language::En), "1 December 2026");
        assert_eq!(date(d, Language::Fi), "1.12.2026");
        assert_eq!(date(d, Language::Sv), "1 december 2026");
        assert_eq!(date(d, Language::Da), "1. december 2026");
        assert_eq!(date(d, Language::No), "1. desember 2026");
    }

    #[test]
    fn recurrences_are_written_in_words() {
        let m = RecurrenceType::MonthlySameDay;
        assert_eq!(recurrence(m, 12, Language::En), "monthly, 12 payments");
        assert_eq!(recurrence(m, 12, Language::Fi), "kuukausittain, 12 maksua");
        assert_eq!(
            recurrence(m, 12, Language::Sv),
            "varje månad, 12 betalningar"
        );
        assert_eq!(recurrence(m, 12, Language::Da), "månedlig, 12 betalinger");
        assert_eq!(recurrence(m, 12, Language::No), "månedlig, 12 betalinger");
        assert_eq!(
            recurrence(RecurrenceType::Weekly, 1, Language::En),
            "weekly, 1 payment"
        );
    }

    #[test]
    fn an_amount_reads_with_how_often_it_is_paid() {
        use Language::*;
        use RecurrenceType::*;
        let cases = [
            (MonthlySameDay, 3, En, "€10.50 a month, 3 payments"),
            (MonthlySameDay, 3, Fi, "€10.50 kuukaudessa, 3 maksua"),
            (MonthlySameDay, 3, Sv, "€10.50 i månaden, 3 betalningar"),
            (MonthlySameDay, 3, Da, "€10.50 om måneden, 3 betalinger"),
            (MonthlySameDay, 3, No, "€10.50 i måneden, 3 betalinger"),
            (Weekly, 1, En, "€10.50 a week, 1 payment"),
            (Biweekly, 4, Sv, "€10.50 varannan vecka, 4 betalningar"),
            (
                MonthlyEom,
                12,
                Fi,
                "€10.50 kuukaudessa, kuun viimeisenä päivänä, 12 maksua",
            ),
            (YearlySameDay, 2, Da, "€10.50 om året, 2 betalinger"),
            (
                TriAnnuallySameDay,
                2,
                No,
                "€10.50 hver fjerde måned, 2 betalinger",
            ),
        ];
        for (kind, count, lang, want) in cases {
            assert_eq!(
                amount_with_recurrence("€10.50", kind, count, lang),
                want,
                "{kind:?} {lang:?}"
            );
        }
    }
}
