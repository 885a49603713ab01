//! The merchant-visible payment status and the state machine that is the only way it may
//! change.
//!
//! Edges (anything not listed is refused):
//! - `awaiting_authorization` → `authorized`, `paid`, and every final exit (`rejected`,
//!   `authorization_failed`, `cancelled`, `expired`, `failed`). `paid` directly is legal
//!   because a poller may miss the intermediate bank statuses.
//! - `authorized` → `paid`, `rejected`, `authorization_failed`, `cancelled`, `failed`.
//!   `authorization_failed` stays legal here because PendingSecondConfirmation maps to
//!   `authorized` and a second confirmation can still fail at the bank; refusing a final
//!   bank answer would leave us disagreeing with the bank forever. `expired` is not legal:
//!   it is our own signing-window timeout and only applies before authorization.
//! - The same status again is a no-op ([`Transition::Unchanged`]), so replaying a poll is
//!   harmless.
//! - Final states never change; going back (`authorized` → `awaiting_authorization`) is
//!   refused with [`TransitionError::Backwards`], which callers log and ignore.
//! - An unknown bank status is no status at all: callers hold `None` and never call this.
//!
//! This module must never persist anything or look at bank statuses.

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

/// The outcome of an allowed [`PaymentStatus::transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The status stays as it is (same → same): record nothing new.
    Unchanged(PaymentStatus),
    /// The status changes: record the event.
    Changed {
        from: PaymentStatus,
        to: PaymentStatus,
    },
}

impl Transition {
    /// The status after the transition.
    pub fn status(self) -> PaymentStatus {
        match self {
            Transition::Unchanged(s) => s,
            Transition::Changed { to, .. } => to,
        }
    }

    pub fn is_change(self) -> bool {
        matches!(self, Transition::Changed { .. })
    }
}

/// A status change that must not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("payment is {from}, a final status; it cannot become {to}")]
    FromFinal {
        from: PaymentStatus,
        to: PaymentStatus,
    },
    #[error("payment is {from}; it cannot go back to {to}")]
    Backwards {
        from: PaymentStatus,
        to: PaymentStatus,
    },
    #[error("payment is {from}; it cannot become {to}")]
    NotAllowed {
        from: PaymentStatus,
        to: PaymentStatus,
    },
}

impl TransitionError {
    /// Stable machine code.
    pub fn code(self) -> &'static str {
        match self {
            TransitionError::FromFinal { .. } => "status_final",
            TransitionError::Backwards { .. } => "status_backwards",
            TransitionError::NotAllowed { .. } => "transition_not_allowed",
        }
    }
}

impl PaymentStatus {
    /// The only way a status changes: see the module docs for the edges.
    pub fn transition(self, to: PaymentStatus) -> Result<Transition, TransitionError> {
        use PaymentStatus::*;
        if self == to {
            return Ok(Transition::Unchanged(self));
        }
        if self.is_final() {
            return Err(TransitionError::FromFinal { from: self, to });
        }
        match (self, to) {
            (AwaitingAuthorization, _) => Ok(Transition::Changed { from: self, to }),
            (Authorized, AwaitingAuthorization) => {
                Err(TransitionError::Backwards { from: self, to })
            }
            (Authorized, Expired) => Err(TransitionError::NotAllowed { from: self, to }),
            (Authorized, _) => Ok(Transition::Changed { from: self, to }),
            _ => Err(TransitionError::NotAllowed { from: self, to }),
        }
    }

    /// Whether [`PaymentStatus::transition`] to `to` would succeed.
    pub fn can_become(self, to: PaymentStatus) -> bool {
        self.transition(to).is_ok()
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;
    use super::*;

    const FINAL: [PaymentStatus; 6] = [
        Paid,
        Rejected,
        AuthorizationFailed,
        Cancelled,
        Expired,
        Failed,
    ];

    #[test]
    fn only_awaiting_authorization_and_authorized_are_not_final() {
        for s in PaymentStatus::ALL {
            assert_eq!(s.is_final(), FINAL.contains(&s), "{s}");
        }
    }

    #[test]
    fn the_same_status_again_is_a_no_op() {
        for s in PaymentStatus::ALL {
            assert_eq!(s.transition(s), Ok(Transition::Unchanged(s)));
            assert!(!s.transition(s).unwrap().is_change());
        }
    }

    #[test]
    fn awaiting_authorization_may_become_anything_else() {
        for to in PaymentStatus::ALL {
            if to == AwaitingAuthorization {
                continue;
            }
            let t = AwaitingAuthorization.transition(to).unwrap();
            assert_eq!(
                t,
                Transition::Changed {
                    from: AwaitingAuthorization,
                    to
                }
            );
            assert_eq!(t.status(), to);
        }
    }

    #[test]
    fn authorized_may_become_paid_or_a_final_exit_other_than_expired() {
        for to in [Paid, Rejected, AuthorizationFailed, Cancelled, Failed] {
            assert!(Authorized.transition(to).unwrap().is_change(), "{to}");
        }
    }

    #[test]
    fn authorized_cannot_expire() {
        assert_eq!(
            Authorized.transition(Expired),
            Err(TransitionError::NotAllowed {
                from: Authorized,
                to: Expired
            })
        );
    }

    #[test]
    fn authorized_never_goes_back_to_awaiting_authorization() {
        let err = Authorized.transition(AwaitingAuthorization).unwrap_err();
        assert_eq!(
            err,
            TransitionError::Backwards {
                from: Authorized,
                to: AwaitingAuthorization
            }
        );
        assert_eq!(err.code(), "status_backwards");
    }

    #[test]
    fn final_states_never_change() {
        for from in FINAL {
            for to in PaymentStatus::ALL {
                if to == from {
                    continue;
                }
                assert_eq!(
                    from.transition(to),
                    Err(TransitionError::FromFinal { from, to }),
                    "{from} -> {to}"
                );
                assert!(!from.can_become(to));
            }
        }
    }

    #[test]
    fn every_edge_is_decided_as_documented() {
        let mut allowed = Vec::new();
        for from in PaymentStatus::ALL {
            for to in PaymentStatus::ALL {
                if from != to && from.can_become(to) {
                    allowed.push((from.as_str(), to.as_str()));
                }
            }
        }
        assert_eq!(allowed.len(), 7 + 5);
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
