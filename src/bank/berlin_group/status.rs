//! Berlin Group statuses and what they mean for the merchant ("Truth for Berlin Group
//! banks", issue 24; `berlin-group-pis.md` §3.3).
//!
//! | `transactionStatus` | pisgate |
//! |---|---|
//! | `ACSC`, `ACCC` (the configured paid set) | `paid` |
//! | `ACSP` | `authorized`, never `paid` unless a bank is configured so |
//! | `ACTC`, `ACCP`, `ACFC`, `ACWC`, `ACWP`, `PATC` | `authorized` |
//! | `RCVD` | `awaiting_authorization` |
//! | `PDNG` | not final: `authorized` when the SCA is finalised, `awaiting_authorization` while it is open; no status when the SCA is unknown |
//! | `RJCT` | `rejected`; `authorization_failed` when the SCA `failed` |
//! | `CANC` | `cancelled` |
//! | anything else (`PART`, unknown codes) | no status: change nothing |
//!
//! `scaStatus`: `finalised`/`exempted` → finalised, `failed` → failed, everything else
//! (`received`, `started`, `psuIdentified`, unknown values) → open. A failed SCA alone never
//! finalises a payment: pisgate then reads the transaction status.
//!
//! This module must never map anything to `paid` that is not in the bank's paid set.

use crate::bank::ScaState;
use crate::domain::PaymentStatus;

/// The statuses that mean paid unless a bank is configured otherwise.
pub const DEFAULT_PAID: [&str; 2] = ["ACSC", "ACCC"];

/// Every `transactionStatus` of the 1.3.12 enum (for the console's search).
pub const TRANSACTION_STATUSES: [&str; 14] = [
    "RCVD", "PDNG", "ACTC", "ACCP", "ACFC", "ACWC", "ACWP", "PATC", "ACSP", "ACSC", "ACCC", "PART",
    "RJCT", "CANC",
];

/// The codes a bank may list as paid: settled on the creditor's or debtor's side. `ACSP`
/// only for a bank known bilaterally to stop there for good.
pub const ALLOWED_PAID: [&str; 3] = ["ACSC", "ACCC", "ACSP"];

/// Whether `paid` may be a bank's paid set: only [`ALLOWED_PAID`] codes, and `ACSC` among
/// them.
pub fn paid_statuses_ok(paid: &[String]) -> bool {
    paid.iter().any(|s| s == "ACSC") && paid.iter().all(|s| ALLOWED_PAID.contains(&s.as_str()))
}

/// Whether the meaning of `code` depends on the SCA's state (read at the `scaStatus` link).
pub fn needs_sca_status(code: &str) -> bool {
    matches!(code, "RJCT" | "PDNG")
}

/// The merchant meaning of a `transactionStatus`. `paid`: the bank's paid set. `sca`: the
/// state of the payment's SCA, when known. `None`: unknown, change nothing.
pub fn map_transaction_status(
    code: &str,
    paid: &[String],
    sca: Option<ScaState>,
) -> Option<PaymentStatus> {
    if paid.iter().any(|p| p == code) {
        return Some(PaymentStatus::Paid);
    }
    match code {
        "RCVD" => Some(PaymentStatus::AwaitingAuthorization),
        "ACSC" | "ACCC" | "ACSP" | "ACTC" | "ACCP" | "ACFC" | "ACWC" | "ACWP" | "PATC" => {
            Some(PaymentStatus::Authorized)
        }
        "RJCT" => Some(match sca {
            Some(ScaState::Failed) => PaymentStatus::AuthorizationFailed,
            _ => PaymentStatus::Rejected,
        }),
        "CANC" => Some(PaymentStatus::Cancelled),
        "PDNG" => match sca? {
            ScaState::Finalised => Some(PaymentStatus::Authorized),
            ScaState::Open => Some(PaymentStatus::AwaitingAuthorization),
            // A failed SCA with a pending payment: not final, not authorised; read again.
            ScaState::Failed => None,
        },
        _ => None,
    }
}

/// The state of an SCA from the bank's `scaStatus`.
pub fn sca_state(code: &str) -> ScaState {
    match code {
        // `finalized`: the US spelling some banks send (berlin-group-pis.md §3.2).
        "finalised" | "finalized" | "exempted" => ScaState::Finalised,
        "failed" => ScaState::Failed,
        _ => ScaState::Open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentStatus::*;

    fn default_paid() -> Vec<String> {
        DEFAULT_PAID.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn berlin_group_transaction_statuses_map_as_the_truth_table_says() {
        let paid = default_paid();
        let table: [(&str, Option<PaymentStatus>); 17] = [
            ("ACSC", Some(Paid)),
            ("ACCC", Some(Paid)),
            ("ACSP", Some(Authorized)),
            ("ACTC", Some(Authorized)),
            ("ACCP", Some(Authorized)),
            ("ACFC", Some(Authorized)),
            ("ACWC", Some(Authorized)),
            ("ACWP", Some(Authorized)),
            ("PATC", Some(Authorized)),
            ("RCVD", Some(AwaitingAuthorization)),
            ("RJCT", Some(Rejected)),
            ("CANC", Some(Cancelled)),
            ("PDNG", None),
            ("PART", None),
            ("acsc", None),
            ("", None),
            ("XXXX", None),
        ];
        for (code, expected) in table {
            assert_eq!(
                map_transaction_status(code, &paid, None),
                expected,
                "{code}"
            );
        }
    }

    #[test]
    fn berlin_group_acsp_is_never_paid_by_default() {
        for sca in [
            None,
            Some(ScaState::Finalised),
            Some(ScaState::Open),
            Some(ScaState::Failed),
        ] {
            assert_eq!(
                map_transaction_status("ACSP", &default_paid(), sca),
                Some(Authorized)
            );
        }
        let acsp_paid = vec!["ACSC".to_owned(), "ACSP".to_owned()];
        assert_eq!(map_transaction_status("ACSP", &acsp_paid, None), Some(Paid));
    }

    #[test]
    fn berlin_group_rjct_with_a_failed_sca_is_authorization_failed() {
        let paid = default_paid();
        assert_eq!(
            map_transaction_status("RJCT", &paid, Some(ScaState::Failed)),
            Some(AuthorizationFailed)
        );
        for sca in [None, Some(ScaState::Finalised), Some(ScaState::Open)] {
            assert_eq!(map_transaction_status("RJCT", &paid, sca), Some(Rejected));
        }
    }

    #[test]
    fn berlin_group_pdng_is_not_final_and_follows_the_sca() {
        let paid = default_paid();
        assert_eq!(
            map_transaction_status("PDNG", &paid, Some(ScaState::Finalised)),
            Some(Authorized)
        );
        assert_eq!(
            map_transaction_status("PDNG", &paid, Some(ScaState::Open)),
            Some(AwaitingAuthorization)
        );
        assert_eq!(
            map_transaction_status("PDNG", &paid, Some(ScaState::Failed)),
            None
        );
        assert_eq!(map_transaction_status("PDNG", &paid, None), None);
    }

    #[test]
    fn berlin_group_sca_statuses_map_to_open_finalised_or_failed() {
        for (code, state) in [
            ("finalised", ScaState::Finalised),
            ("exempted", ScaState::Finalised),
            ("finalized", ScaState::Finalised),
            ("failed", ScaState::Failed),
            ("received", ScaState::Open),
            ("started", ScaState::Open),
            ("psuIdentified", ScaState::Open),
            ("psuAuthenticated", ScaState::Open),
            ("scaMethodSelected", ScaState::Open),
            ("unconfirmed", ScaState::Open),
            ("somethingNew", ScaState::Open),
        ] {
            assert_eq!(sca_state(code), state, "{code}");
        }
    }
}
