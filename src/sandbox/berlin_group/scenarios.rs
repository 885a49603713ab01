//! The outcomes a test or a merchant chooses by the payment: its amount (EUR) or the
//! scenario's id anywhere in `creditorName` (case-insensitive). The amounts are those of the
//! independent Python ASPSP (`tests/bg-aspsp/`, 77.01–77.06) so both banks agree where they
//! overlap; 77.07 to 77.10 are this simulator's own. Listed at `GET /admin/scenarios`.
//!
//! A scenario's steps start when the SCA is finalised and follow the simulator clock: step
//! `(n, status)` holds from `n` status steps (`status_step`, 2 s by default) after it. The
//! shopper's refusal (page or machine path) ends any scenario in RJCT with `scaStatus:
//! failed`.

use serde::Serialize;

use super::state::TxStatus;
use crate::sandbox::scenarios::{normalize_amount, status_after_steps};

/// How a scenario wants the shopper to authenticate (the TPP's headers may also ask for
/// decoupled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaApproach {
    /// Whatever the TPP's headers choose (redirect by default).
    Any,
    Decoupled,
    OAuth,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scenario {
    pub id: &'static str,
    /// The EUR amount that picks it (`None`: the default for every other amount).
    pub amount: Option<&'static str>,
    pub description: &'static str,
    /// What pisgate should report in the end (issue 24's truth rules).
    pub pisgate_status: &'static str,
    #[serde(skip)]
    pub(crate) steps: &'static [(u32, TxStatus)],
    /// Status, details, authorisations and DELETE answer 404 until the shopper opens the
    /// SCA page.
    pub unknown_until_opened: bool,
    /// DELETE of the unsigned payment answers 202 and needs a cancellation authorisation.
    pub cancel_needs_sca: bool,
    /// DELETE of a signed payment that is not final yet cancels it at once (204, CANC): the
    /// spec's "this TPP call might be sufficient to cancel". Otherwise a signed payment's
    /// DELETE answers 202 and needs a cancellation authorisation.
    pub cancel_signed_without_sca: bool,
    /// The decoupled SCA is never approved: the machine path answers 409 and the SCA fails
    /// after the decoupled timeout.
    pub decoupled_never_approved: bool,
    /// The bank exempts the payment from SCA at initiation (`scaStatus: exempted`, no SCA
    /// link at all): it runs its steps from creation, whoever opens anything.
    pub exempted: bool,
    pub approach: ScaApproach,
}

const DEFAULT_STEPS: &[(u32, TxStatus)] = &[
    (0, TxStatus::Actc),
    (1, TxStatus::Acsp),
    (2, TxStatus::Acsc),
];

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
        unknown_until_opened: false,
        cancel_needs_sca: false,
        cancel_signed_without_sca: false,
        decoupled_never_approved: false,
        exempted: false,
        approach: ScaApproach::Any,
    }
}

pub const DEFAULT: Scenario = scenario(
    "acsc-after-acsp",
    None,
    "after the SCA: ACTC, one step later ACSP, one more step later ACSC (the default)",
    "paid",
);

pub const ALL: &[Scenario] = &[
    DEFAULT,
    Scenario {
        steps: &[(0, TxStatus::Acsp), (1, TxStatus::Rjct)],
        ..scenario(
            "acsp-then-rjct",
            Some("77.01"),
            "ACSP after the SCA, one step later RJCT (no funds at execution)",
            "rejected",
        )
    },
    Scenario {
        steps: &[(0, TxStatus::Acsp)],
        ..scenario(
            "acsp-forever",
            Some("77.02"),
            "ACSP after the SCA, for good",
            "authorized (never paid)",
        )
    },
    Scenario {
        steps: &[(0, TxStatus::Pdng), (2, TxStatus::Acsc)],
        ..scenario(
            "pdng-then-acsc",
            Some("77.03"),
            "PDNG after the SCA for two steps, then ACSC",
            "paid",
        )
    },
    Scenario {
        unknown_until_opened: true,
        ..scenario(
            "unknown-until-opened",
            Some("77.04"),
            "404 RESOURCE_UNKNOWN on every read (details, status, authorisations, DELETE) until the shopper opens the SCA page; then the default",
            "paid",
        )
    },
    Scenario {
        decoupled_never_approved: true,
        approach: ScaApproach::Decoupled,
        ..scenario(
            "decoupled-timeout",
            Some("77.05"),
            "decoupled SCA the shopper never approves: scaStatus failed and RJCT after the decoupled timeout",
            "authorization_failed",
        )
    },
    Scenario {
        cancel_needs_sca: true,
        ..scenario(
            "cancel-needs-sca",
            Some("77.06"),
            "DELETE of the unsigned payment answers 202 and needs a cancellation authorisation (redirect); approving it makes it CANC",
            "cancelled",
        )
    },
    Scenario {
        approach: ScaApproach::Decoupled,
        ..scenario(
            "decoupled",
            Some("77.07"),
            "decoupled SCA whatever the TPP prefers: the shopper approves in the bank's app (machine path or /sca page), then the default",
            "paid",
        )
    },
    Scenario {
        approach: ScaApproach::OAuth,
        ..scenario(
            "oauth",
            Some("77.08"),
            "OAuth SCA: scaOAuth to RFC 8414 metadata, authorization code with PKCE S256; finalised by the token exchange, then the default",
            "paid",
        )
    },
    Scenario {
        exempted: true,
        ..scenario(
            "sca-exempted",
            Some("77.09"),
            "exempted from SCA at initiation (scaStatus exempted, only self and status links): the default steps run from creation without the shopper",
            "paid",
        )
    },
    Scenario {
        steps: &[(0, TxStatus::Rcvd)],
        cancel_signed_without_sca: true,
        ..scenario(
            "rcvd-after-sca",
            Some("77.10"),
            "RCVD after the SCA is finalised, for good (a bank that books signed payments later); a DELETE cancels even the signed payment at once (204, CANC)",
            "awaiting_authorization (signed: never deleted at the late-signing horizon)",
        )
    },
];

/// The scenario a payment picks: an id in the creditor name first, then the amount.
pub fn pick(creditor_name: &str, currency: &str, amount: &str) -> &'static Scenario {
    let name = creditor_name.to_ascii_lowercase();
    // Longest id first, so "decoupled-timeout" is not read as "decoupled".
    let mut by_len: Vec<&'static Scenario> = ALL.iter().collect();
    by_len.sort_by_key(|s| std::cmp::Reverse(s.id.len()));
    if let Some(s) = by_len.iter().find(|s| name.contains(s.id)) {
        return s;
    }
    if currency == "EUR" {
        let normalized = normalize_amount(amount);
        if let Some(s) = ALL
            .iter()
            .find(|s| s.amount.map(normalize_amount) == Some(normalized.clone()))
        {
            return s;
        }
    }
    &ALL[0]
}

impl Scenario {
    /// The transaction status `steps_elapsed` status steps after the SCA was finalised.
    pub(crate) fn status_after(&self, steps_elapsed: f64) -> TxStatus {
        status_after_steps(self.steps, steps_elapsed, TxStatus::Actc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_picked_by_creditor_name_then_amount_and_default_otherwise() {
        assert_eq!(pick("Shop", "EUR", "77.01").id, "acsp-then-rjct");
        assert_eq!(pick("Shop", "EUR", "77.10").id, "rcvd-after-sca");
        assert_eq!(pick("Shop", "EUR", "77.1").id, "rcvd-after-sca");
        assert_eq!(pick("Shop", "EUR", "77.99").id, "acsc-after-acsp");
        assert_eq!(
            pick("Shop DECOUPLED-TIMEOUT", "EUR", "1").id,
            "decoupled-timeout"
        );
        assert_eq!(pick("Shop decoupled", "EUR", "1").id, "decoupled");
        assert_eq!(pick("Shop", "EUR", "77.050").id, "decoupled-timeout");
        let mut ids: Vec<_> = ALL.iter().map(|s| s.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
    }
}
