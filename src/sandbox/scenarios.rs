//! Deterministic outcomes a merchant can choose, like the mock banks of TrueLayer and
//! GoCardless: type a scenario's PSU identity on the signing page (or pay its amount), press
//! Approve, and the payment goes the scenario's way at the bank. Listed on the signing page
//! and at `GET /sandbox/scenarios`.
//!
//! Each scenario takes over the payment's life from the approval on (times on the sandbox
//! clock, from the moment it would be Confirmed): a final status, or an intermediate one
//! for a while and then a final one. The PSU identity still owns the tokens, so funds
//! checks and cancellation work as for anyone.

use serde::Serialize;

use super::payments::BankStatus;

/// An amount in the form a scenario's amount is compared in: no trailing zeros in the
/// fraction, and no `.` when none is left (`"66.010"` and `"66.01"` match, `"12.00"` is
/// `"12"`). The simulators that pick a scenario by its amount share it.
pub(crate) fn normalize_amount(amount: &str) -> String {
    match amount.split_once('.') {
        Some((w, f)) => {
            let f = f.trim_end_matches('0');
            if f.is_empty() {
                w.to_owned()
            } else {
                format!("{w}.{f}")
            }
        }
        None => amount.to_owned(),
    }
}

/// The status of a scenario's `steps` (`(at, status)`, `at` ascending) `steps_elapsed`
/// steps on: the last step reached, `before` while none is. The simulators that walk a
/// payment through steps share it.
pub(crate) fn status_after_steps<S: Copy>(steps: &[(u32, S)], steps_elapsed: f64, before: S) -> S {
    steps
        .iter()
        .rev()
        .find(|(at, _)| steps_elapsed >= f64::from(*at))
        .map(|(_, s)| *s)
        .unwrap_or(before)
}

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// The PSU identity that picks it on the signing page.
    pub psu_id: &'static str,
    /// The amount (in the payment's currency) that picks it, as an alternative.
    pub amount: &'static str,
    /// What happens at the bank, in words.
    pub description: &'static str,
    /// What pisgate reports in the end.
    pub pisgate_status: &'static str,
    #[serde(skip)]
    pub(crate) steps: &'static [(u32, BankStatus)],
    /// Approving ends in UserApprovalCancelled instead (the shopper cancels in the app).
    #[serde(skip)]
    pub(crate) cancels: bool,
    /// The funds check answers `false`.
    #[serde(skip)]
    pub(crate) funds_not_available: bool,
}

/// Steps are `(paid_delays after confirmation, status)`: the status holds from that many
/// `paid_delay`s after the moment the payment would be Confirmed.
pub const ALL: &[Scenario] = &[
    Scenario {
        psu_id: "scenario-rejected",
        amount: "66.01",
        description: "the bank rejects the payment after the shopper approved it",
        pisgate_status: "rejected",
        steps: &[(0, BankStatus::Rejected)],
        cancels: false,
        funds_not_available: false,
    },
    Scenario {
        psu_id: "scenario-insufficient-funds",
        amount: "66.02",
        description: "InsufficientFunds: the account cannot cover it",
        pisgate_status: "rejected",
        steps: &[(0, BankStatus::InsufficientFunds)],
        cancels: false,
        funds_not_available: true,
    },
    Scenario {
        psu_id: "scenario-limit-exceeded",
        amount: "66.03",
        description: "LimitExceeded: over the shopper's payment limit",
        pisgate_status: "rejected",
        steps: &[(0, BankStatus::LimitExceeded)],
        cancels: false,
        funds_not_available: false,
    },
    Scenario {
        psu_id: "scenario-second-confirmation",
        amount: "66.04",
        description: "PendingSecondConfirmation (a large payment confirmed in a second channel), then Paid",
        pisgate_status: "paid",
        steps: &[
            (0, BankStatus::PendingSecondConfirmation),
            (1, BankStatus::Confirmed),
            (2, BankStatus::Paid),
        ],
        cancels: false,
        funds_not_available: false,
    },
    Scenario {
        psu_id: "scenario-second-confirmation-rejected",
        amount: "66.05",
        description: "PendingSecondConfirmation, never confirmed, then Rejected",
        pisgate_status: "rejected",
        steps: &[
            (0, BankStatus::PendingSecondConfirmation),
            (1, BankStatus::Rejected),
        ],
        cancels: false,
        funds_not_available: false,
    },
    Scenario {
        psu_id: "scenario-on-hold",
        amount: "66.06",
        description: "OnHold at the bank for a while, then Paid",
        pisgate_status: "paid",
        steps: &[(0, BankStatus::OnHold), (2, BankStatus::Paid)],
        cancels: false,
        funds_not_available: false,
    },
    Scenario {
        psu_id: "scenario-user-cancelled",
        amount: "66.07",
        description: "the shopper cancels in the bank's app: UserApprovalCancelled",
        pisgate_status: "authorization_failed",
        steps: &[],
        cancels: true,
        funds_not_available: false,
    },
    Scenario {
        psu_id: "scenario-funds-not-available",
        amount: "66.08",
        description: "the funds check answers false; the payment is still paid",
        pisgate_status: "paid",
        steps: &[(0, BankStatus::Confirmed), (1, BankStatus::Paid)],
        cancels: false,
        funds_not_available: true,
    },
    Scenario {
        psu_id: "scenario-slow-paid",
        amount: "66.09",
        description: "Confirmed for ten times the usual delay, then Paid",
        pisgate_status: "paid",
        steps: &[(0, BankStatus::Confirmed), (10, BankStatus::Paid)],
        cancels: false,
        funds_not_available: false,
    },
];

/// The scenario a PSU identity or an amount (minor units) picks, if any.
pub fn pick(psu_id: &str, amount_minor: i64) -> Option<&'static Scenario> {
    ALL.iter()
        .find(|s| s.psu_id.eq_ignore_ascii_case(psu_id.trim()))
        .or_else(|| ALL.iter().find(|s| minor(s.amount) == Some(amount_minor)))
}

fn minor(amount: &str) -> Option<i64> {
    let (whole, cents) = amount.split_once('.')?;
    Some(whole.parse::<i64>().ok()? * 100 + cents.parse::<i64>().ok()?)
}

impl Scenario {
    /// The status at `elapsed` paid delays after the would-be confirmation (None: before
    /// the first step, the normal PendingUserApproval).
    pub(crate) fn status_at(&self, delays: f64) -> Option<BankStatus> {
        self.steps
            .iter()
            .rev()
            .find(|(at, _)| delays >= f64::from(*at))
            .map(|(_, s)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_picked_by_psu_identity_or_amount() {
        assert_eq!(
            pick("scenario-rejected", 1050).unwrap().psu_id,
            "scenario-rejected"
        );
        assert_eq!(
            pick("SCENARIO-ON-HOLD ", 1050).unwrap().psu_id,
            "scenario-on-hold"
        );
        assert_eq!(
            pick("anyone", 6602).unwrap().psu_id,
            "scenario-insufficient-funds"
        );
        assert!(pick("anyone", 1050).is_none());
        let mut ids: Vec<_> = ALL.iter().map(|s| s.psu_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
    }

    #[test]
    fn steps_follow_each_other() {
        let s = pick("scenario-second-confirmation", 0).unwrap();
        assert_eq!(
            s.status_at(0.0),
            Some(BankStatus::PendingSecondConfirmation)
        );
        assert_eq!(s.status_at(1.5), Some(BankStatus::Confirmed));
        assert_eq!(s.status_at(2.0), Some(BankStatus::Paid));
    }
}
