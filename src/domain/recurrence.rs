//! Recurring (standing-order) payments: the count and the recurrence type, and the
//! per-country rules we are sure of.
//!
//! The seed's table of recurrence types per country lost its column positions when it was
//! copied, so we only enforce what is certain:
//! - `count` is 2..=98, or 9999 meaning "until deleted" (the first payment is the one on the
//!   requested execution date, so 1 is not a series).
//! - `MONTHLY_SAME_DAY` exists in all four countries.
//! - NO: `BIWEEKLY` only for own-account transfers.
//! - SE: `MONTHLY_SAME_DAY` not for own-account transfers.
//! - `EVERY_MINUTE_SANDBOX_ONLY` is refused in production.
//!
//! Every other type/country combination is passed to the bank, whose refusal the bank
//! adapter maps to a clear error. This module must never guess the lost table columns.

use chrono::{Datelike, Days, Months, NaiveDate};
use serde::{Deserialize, Serialize};
use std::fmt;

use super::Environment;
use super::money::Country;

/// How often a recurring payment repeats, with Nordea's wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl RecurrenceType {
    pub const ALL: [RecurrenceType; 13] = [
        RecurrenceType::Daily,
        RecurrenceType::Weekly,
        RecurrenceType::Biweekly,
        RecurrenceType::MonthlySameDay,
        RecurrenceType::MonthlyEom,
        RecurrenceType::QuarterlySameDay,
        RecurrenceType::QuarterlyEom,
        RecurrenceType::TriAnnuallySameDay,
        RecurrenceType::SemiAnnuallySameDay,
        RecurrenceType::SemiAnnuallyEom,
        RecurrenceType::YearlySameDay,
        RecurrenceType::YearlyEom,
        RecurrenceType::EveryMinuteSandboxOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecurrenceType::Daily => "DAILY",
            RecurrenceType::Weekly => "WEEKLY",
            RecurrenceType::Biweekly => "BIWEEKLY",
            RecurrenceType::MonthlySameDay => "MONTHLY_SAME_DAY",
            RecurrenceType::MonthlyEom => "MONTHLY_EOM",
            RecurrenceType::QuarterlySameDay => "QUARTERLY_SAME_DAY",
            RecurrenceType::QuarterlyEom => "QUARTERLY_EOM",
            RecurrenceType::TriAnnuallySameDay => "TRI_ANNUALLY_SAME_DAY",
            RecurrenceType::SemiAnnuallySameDay => "SEMI_ANNUALLY_SAME_DAY",
            RecurrenceType::SemiAnnuallyEom => "SEMI_ANNUALLY_EOM",
            RecurrenceType::YearlySameDay => "YEARLY_SAME_DAY",
            RecurrenceType::YearlyEom => "YEARLY_EOM",
            RecurrenceType::EveryMinuteSandboxOnly => "EVERY_MINUTE_SANDBOX_ONLY",
        }
    }

    /// The date of occurrence `n` (0 is the first, on `start`), or `None` for the sandbox's
    /// every-minute series (not a calendar rule) and past the calendar's end. SAME_DAY rules
    /// keep the start's day, moved to the month's last day where the month is shorter; EOM
    /// rules fall on the last day of each month they name.
    pub fn occurrence(self, start: NaiveDate, n: u32) -> Option<NaiveDate> {
        let months = |step: u32| {
            let target = start.checked_add_months(Months::new(step.checked_mul(n)?))?;
            Some(target)
        };
        let end_of_month = |d: NaiveDate| {
            let first = d.with_day(1)?;
            first.checked_add_months(Months::new(1))?.pred_opt()
        };
        match self {
            RecurrenceType::Daily => start.checked_add_days(Days::new(u64::from(n))),
            RecurrenceType::Weekly => start.checked_add_days(Days::new(7 * u64::from(n))),
            RecurrenceType::Biweekly => start.checked_add_days(Days::new(14 * u64::from(n))),
            RecurrenceType::MonthlySameDay => months(1),
            RecurrenceType::QuarterlySameDay => months(3),
            RecurrenceType::TriAnnuallySameDay => months(4),
            RecurrenceType::SemiAnnuallySameDay => months(6),
            RecurrenceType::YearlySameDay => months(12),
            RecurrenceType::MonthlyEom => months(1).and_then(end_of_month),
            RecurrenceType::QuarterlyEom => months(3).and_then(end_of_month),
            RecurrenceType::SemiAnnuallyEom => months(6).and_then(end_of_month),
            RecurrenceType::YearlyEom => months(12).and_then(end_of_month),
            RecurrenceType::EveryMinuteSandboxOnly => None,
        }
    }

    pub fn parse(s: &str) -> Option<RecurrenceType> {
        RecurrenceType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The certain per-country and per-environment rules (see module docs).
    pub fn check(
        self,
        country: Country,
        own_account_transfer: bool,
        env: Environment,
    ) -> Result<(), RecurrenceError> {
        match (self, country) {
            (RecurrenceType::EveryMinuteSandboxOnly, _) if env == Environment::Production => {
                Err(RecurrenceError::SandboxOnly)
            }
            (RecurrenceType::Biweekly, Country::No) if !own_account_transfer => {
                Err(RecurrenceError::OwnAccountTransferOnly)
            }
            (RecurrenceType::MonthlySameDay, Country::Se) if own_account_transfer => {
                Err(RecurrenceError::NotForOwnAccountTransfer)
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for RecurrenceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a recurrence type cannot be used for this payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    #[error("EVERY_MINUTE_SANDBOX_ONLY is only accepted in the sandbox")]
    SandboxOnly,
    #[error("in Norway BIWEEKLY is only available for own-account transfers")]
    OwnAccountTransferOnly,
    #[error("in Sweden MONTHLY_SAME_DAY is not available for own-account transfers")]
    NotForOwnAccountTransfer,
}

impl RecurrenceError {
    pub fn code(self) -> &'static str {
        match self {
            RecurrenceError::SandboxOnly => "sandbox_only",
            RecurrenceError::OwnAccountTransferOnly | RecurrenceError::NotForOwnAccountTransfer => {
                "recurrence_type_not_allowed"
            }
        }
    }
}

/// The number of payments in a series: 2..=98, or 9999 for "until deleted".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RecurringCount(u16);

impl RecurringCount {
    pub const UNTIL_DELETED: RecurringCount = RecurringCount(9999);

    pub fn new(count: i64) -> Option<RecurringCount> {
        match count {
            2..=98 | 9999 => u16::try_from(count).ok().map(RecurringCount),
            _ => None,
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }

    pub fn is_until_deleted(self) -> bool {
        self == RecurringCount::UNTIL_DELETED
    }
}

/// A valid recurrence: how many payments and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Recurring {
    count: RecurringCount,
    recurrence_type: RecurrenceType,
}

impl Recurring {
    pub fn new(count: RecurringCount, recurrence_type: RecurrenceType) -> Recurring {
        Recurring {
            count,
            recurrence_type,
        }
    }

    pub fn count(self) -> RecurringCount {
        self.count
    }

    pub fn recurrence_type(self) -> RecurrenceType {
        self.recurrence_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occurrences_follow_the_calendar() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        let start = d(2027, 1, 31);
        let on = |t: RecurrenceType, n| t.occurrence(start, n);
        assert_eq!(on(RecurrenceType::MonthlySameDay, 0), Some(start));
        assert_eq!(on(RecurrenceType::MonthlySameDay, 1), Some(d(2027, 2, 28)));
        assert_eq!(on(RecurrenceType::MonthlySameDay, 2), Some(d(2027, 3, 31)));
        assert_eq!(
            on(RecurrenceType::QuarterlySameDay, 1),
            Some(d(2027, 4, 30))
        );
        assert_eq!(on(RecurrenceType::YearlySameDay, 1), Some(d(2028, 1, 31)));
        assert_eq!(on(RecurrenceType::Daily, 3), Some(d(2027, 2, 3)));
        assert_eq!(on(RecurrenceType::Weekly, 1), Some(d(2027, 2, 7)));
        assert_eq!(on(RecurrenceType::Biweekly, 1), Some(d(2027, 2, 14)));
        let mid = d(2027, 1, 15);
        assert_eq!(
            RecurrenceType::MonthlyEom.occurrence(mid, 1),
            Some(d(2027, 2, 28))
        );
        assert_eq!(
            RecurrenceType::SemiAnnuallyEom.occurrence(mid, 1),
            Some(d(2027, 7, 31))
        );
        assert_eq!(
            RecurrenceType::EveryMinuteSandboxOnly.occurrence(mid, 1),
            None
        );
    }

    #[test]
    fn count_is_two_to_ninety_eight_or_9999() {
        for ok in [2, 3, 98, 9999] {
            assert_eq!(
                RecurringCount::new(ok).map(|c| i64::from(c.get())),
                Some(ok)
            );
        }
        for bad in [-1, 0, 1, 99, 100, 9998, 10000, i64::MAX] {
            assert_eq!(RecurringCount::new(bad), None, "{bad}");
        }
        assert!(RecurringCount::new(9999).unwrap().is_until_deleted());
        assert!(!RecurringCount::new(98).unwrap().is_until_deleted());
    }

    #[test]
    fn recurrence_types_round_trip_through_their_wire_names() {
        for t in RecurrenceType::ALL {
            assert_eq!(RecurrenceType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(RecurrenceType::parse("monthly_same_day"), None);
    }

    #[test]
    fn monthly_same_day_is_allowed_in_every_country() {
        for c in Country::ALL {
            assert_eq!(
                RecurrenceType::MonthlySameDay.check(c, false, Environment::Production),
                Ok(())
            );
        }
    }

    #[test]
    fn every_minute_is_sandbox_only() {
        let t = RecurrenceType::EveryMinuteSandboxOnly;
        assert_eq!(t.check(Country::Fi, false, Environment::Sandbox), Ok(()));
        assert_eq!(
            t.check(Country::Fi, false, Environment::Production),
            Err(RecurrenceError::SandboxOnly)
        );
    }

    #[test]
    fn norwegian_biweekly_is_only_for_own_account_transfers() {
        let t = RecurrenceType::Biweekly;
        assert_eq!(t.check(Country::No, true, Environment::Production), Ok(()));
        assert_eq!(
            t.check(Country::No, false, Environment::Production),
            Err(RecurrenceError::OwnAccountTransferOnly)
        );
        assert_eq!(t.check(Country::Dk, false, Environment::Production), Ok(()));
    }

    #[test]
    fn swedish_monthly_same_day_is_not_for_own_account_transfers() {
        let t = RecurrenceType::MonthlySameDay;
        assert_eq!(
            t.check(Country::Se, true, Environment::Production),
            Err(RecurrenceError::NotForOwnAccountTransfer)
        );
        assert_eq!(t.check(Country::Dk, true, Environment::Production), Ok(()));
    }
}
