//! The outcomes a test or a merchant chooses by a SEK payment's amount (66.01–66.08, like
//! the Berlin Group simulator's 77.xx); any other amount (and every EUR payment) plays the
//! default. Listed at `GET /admin/scenarios`.
//!
//! Steps start when the signing order finalises and follow the simulator clock: step
//! `(n, status)` holds from `n` status steps (`status_step`, 1 s by default) after it.

use serde::Serialize;

use super::state::TxStatus;
use crate::sandbox::scenarios::{normalize_amount, status_after_steps};

/// What the test BankID app does with a signing order of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppBehaviour {
    /// Opens; Approve signs, Reject refuses (`userCancel`).
    Normal,
    /// Opening it refuses the signature: the order fails `userCancel`.
    RefusedOnOpen,
    /// The shopper never opens it: the app refuses to open it, the order fails
    /// `expiredTransaction` after `order_timeout`, the payment becomes RJCT after
    /// `signing_timeout`.
    NeverOpened,
    /// The BankID app never starts: the app refuses to open it and the order fails
    /// `startFailed` after `order_timeout`.
    StartFailed,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scenario {
    pub id: &'static str,
    /// The SEK amount that picks it (`None`: the default for every other amount).
    pub amount: Option<&'static str>,
    pub description: &'static str,
    /// What pisgate should report in the end.
    pub pisgate_status: &'static str,
    #[serde(skip)]
    pub(crate) steps: &'static [(u32, TxStatus)],
    pub app: AppBehaviour,
    /// The first signing start for the payment answers 200 `failed` `ALREADY_IN_PROGRESS`
    /// (as if the shopper had another order running); later starts work.
    pub already_in_progress_first: bool,
    /// SEB makes the payment with this amount instead of the one sent (a bank fault): its
    /// 201 echoes it, and it is what the app shows and what signing would pay.
    pub made_amount: Option<&'static str>,
    /// A `DELETE` of the unsigned payment answers `202 Accepted` (the Berlin Group's "the
    /// cancellation needs the shopper's authorisation"; SEB documents no such answer) and
    /// cancels nothing: the payment stays RCVD.
    pub delete_needs_authorisation: bool,
}

const DEFAULT_STEPS: &[(u32, TxStatus)] = &[(0, TxStatus::Actc), (1, TxStatus::Acsc)];

const fn scenario(
    id: &'static str,
    amount: Option<&'static str>,
    description: &'static str,
    pisgate_status: &'static str,
) -> Scenario {
    Scenario {
        id,
        amount,
        description,
        pisgate_status,
        steps: DEFAULT_STEPS,
        app: AppBehaviour::Normal,
        already_in_progress_first: false,
        made_amount: None,
        delete_needs_authorisation: false,
    }
}

pub const DEFAULT: Scenario = scenario(
    "signed",
    None,
    "signed in the app: ACTC, one step later ACSC (the default)",
    "paid",
);

pub const ALL: &[Scenario] = &[
    DEFAULT,
    Scenario {
        steps: &[
            (0, TxStatus::Actc),
            (1, TxStatus::Acsp),
            (2, TxStatus::Acsc),
        ],
        ..scenario(
            "signed-acsc",
            Some("66.01"),
            "signed in the app: ACTC, ACSP one step later, ACSC one more step later",
            "paid",
        )
    },
    Scenario {
        app: AppBehaviour::RefusedOnOpen,
        ..scenario(
            "refused-in-app",
            Some("66.02"),
            "the shopper refuses in the app: the signing order fails userCancel when opened; the payment stays RCVD until the signing timeout (then RJCT)",
            "authorization_failed (or expired)",
        )
    },
    Scenario {
        app: AppBehaviour::NeverOpened,
        ..scenario(
            "never-opened",
            Some("66.03"),
            "the app is never opened: the order fails expiredTransaction after order_timeout; the payment stays RCVD until signing_timeout, then RJCT",
            "expired / rejected",
        )
    },
    Scenario {
        already_in_progress_first: true,
        ..scenario(
            "already-in-progress",
            Some("66.04"),
            "the first signing start answers 200 scaStatus failed ALREADY_IN_PROGRESS (both orders cancelled); a new start works, then the default",
            "paid (after a retry)",
        )
    },
    Scenario {
        steps: &[(0, TxStatus::Actc), (1, TxStatus::Rjct)],
        ..scenario(
            "rejected-after-acceptance",
            Some("66.05"),
            "signed: ACTC, one step later RJCT",
            "rejected",
        )
    },
    Scenario {
        app: AppBehaviour::StartFailed,
        ..scenario(
            "start-failed",
            Some("66.06"),
            "the BankID app never starts: the order fails startFailed after order_timeout; the payment stays RCVD until signing_timeout, then RJCT",
            "authorization_failed (or expired)",
        )
    },
    Scenario {
        made_amount: Some("67.07"),
        ..scenario(
            "other-amount",
            Some("66.07"),
            "SEB makes the payment with another amount (67.07 SEK) and its 201 echoes it: pisgate must never start signing it",
            "cancelled (bank_terms_mismatch), never signed",
        )
    },
    Scenario {
        delete_needs_authorisation: true,
        ..scenario(
            "delete-needs-authorisation",
            Some("66.08"),
            "a DELETE of the unsigned payment answers 202 (cancellation needs authorisation) and cancels nothing: the payment stays RCVD",
            "not cancelled by the DELETE; the bank's status decides",
        )
    },
];

/// The scenario of a payment: by its SEK amount, else the default.
pub fn pick(currency: &str, amount: &str) -> &'static Scenario {
    if currency == "SEK" {
        let n = normalize_amount(amount);
        if let Some(s) = ALL
            .iter()
            .find(|s| s.amount.map(normalize_amount) == Some(n.clone()))
        {
            return s;
        }
    }
    &ALL[0]
}

impl Scenario {
    /// The transaction status `steps_elapsed` steps after the signing.
    pub(crate) fn status_after(&self, steps_elapsed: f64) -> TxStatus {
        status_after_steps(self.steps, steps_elapsed, TxStatus::Actc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seb_scenarios_are_picked_by_sek_amount_and_default_otherwise() {
        assert_eq!(pick("SEK", "66.01").id, "signed-acsc");
        assert_eq!(pick("SEK", "66.010").id, "signed-acsc");
        assert_eq!(pick("SEK", "66.06").id, "start-failed");
        assert_eq!(pick("SEK", "66.07").id, "other-amount");
        assert_eq!(pick("SEK", "66.08").id, "delete-needs-authorisation");
        assert_eq!(pick("EUR", "66.02").id, "signed");
        assert_eq!(pick("SEK", "66.1").id, "signed");
        let mut ids: Vec<_> = ALL.iter().map(|s| s.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
    }
}
