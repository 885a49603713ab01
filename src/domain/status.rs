//! The merchant-visible payment status.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a merchant sees. `awaiting_authorization` → `authorized` → `paid`, with the final
/// exits `rejected`, `authorization_failed`, `cancelled`, `expired` and `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    AwaitingAuthorization,
    Authorized,
    Paid,
    Rejected,
    AuthorizationFailed,
    Cancelled,
    Expired,
    Failed,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 8] = [
        PaymentStatus::AwaitingAuthorization,
        PaymentStatus::Authorized,
        PaymentStatus::Paid,
        PaymentStatus::Rejected,
        PaymentStatus::AuthorizationFailed,
        PaymentStatus::Cancelled,
        PaymentStatus::Expired,
        PaymentStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::AwaitingAuthorization => "awaiting_authorization",
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Paid => "paid",
            PaymentStatus::Rejected => "rejected",
            PaymentStatus::AuthorizationFailed => "authorization_failed",
            PaymentStatus::Cancelled => "cancelled",
            PaymentStatus::Expired => "expired",
            PaymentStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<PaymentStatus> {
        PaymentStatus::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Final states never change again.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            PaymentStatus::AwaitingAuthorization | PaymentStatus::Authorized
        )
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a status change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the payment is {0} and final; it cannot become {1}")]
    FromFinal(PaymentStatus, PaymentStatus),
    #[error("a payment cannot go from {0} back to {1}")]
    Backwards(PaymentStatus, PaymentStatus),
    #[error("only a payment awaiting authorization can expire (it is {0})")]
    ExpiredAfterAuthorization(PaymentStatus),
}

/// The status machine: the only rule by which a status may change.
///
/// * final states never change;
/// * `awaiting_authorization` may move to any other state;
/// * `authorized` may move to `paid` or a final exit other than `authorization_failed` and
///   `expired` (the shopper already signed; the bank may still reject or the merchant cancel);
/// * nothing goes back to `awaiting_authorization`.
pub fn check_transition(from: PaymentStatus, to: PaymentStatus) -> Result<(), TransitionError> {
    use PaymentStatus::*;
    if from.is_final() {
        return Err(TransitionError::FromFinal(from, to));
    }
    match (from, to) {
        (_, AwaitingAuthorization) => Err(TransitionError::Backwards(from, to)),
        (Authorized, Expired) => Err(TransitionError::ExpiredAfterAuthorization(from)),
        (Authorized, AuthorizationFailed) => Err(TransitionError::Backwards(from, to)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;
    use super::*;

    #[test]
    fn final_states_never_change() {
        for from in PaymentStatus::ALL.into_iter().filter(|s| s.is_final()) {
            for to in PaymentStatus::ALL {
                assert!(check_transition(from, to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn awaiting_authorization_may_move_anywhere_forward() {
        for to in PaymentStatus::ALL
            .into_iter()
            .filter(|s| *s != AwaitingAuthorization)
        {
            assert!(check_transition(AwaitingAuthorization, to).is_ok(), "{to}");
        }
    }

    #[test]
    fn authorized_payments_cannot_expire_fail_authorization_or_go_back() {
        for to in [AwaitingAuthorization, Expired, AuthorizationFailed] {
            assert!(check_transition(Authorized, to).is_err(), "{to}");
        }
        for to in [Paid, Rejected, Cancelled, Failed] {
            assert!(check_transition(Authorized, to).is_ok(), "{to}");
        }
    }
}
