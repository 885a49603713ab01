//! The merchant-visible payment status and the state machine that is the only way it may
//! change.
//!
//! # The truth rule
//! pisgate never tells a merchant something the bank contradicts. A status changes only
//! through [`PaymentStatus::apply`], which takes the [`Evidence`] for the change and derives
//! the new status from it; a caller cannot name a status the evidence does not support:
//! - [`Evidence::Bank`]: the bank reported a status (mapped to ours). Every final exit the
//!   bank can report (`paid`, `rejected`, `authorization_failed`, `cancelled`) needs it.
//! - [`Evidence::Unsignable`]: the payment provably can no longer be signed, for one of the
//!   reasons in [`Unsignable`]: the bank timed it out (UserApprovalTimeout), the bank
//!   confirmed the deletion pisgate asked for at the late-signing horizon, nobody was
//!   ever given the bank's signing link, or nobody opened that link at the bank before the
//!   bank's own time to sign ran out. Gives `expired`, or `cancelled` when the merchant
//!   had asked to cancel. Neither pisgate's signing window nor its late-signing horizon is
//!   evidence: the window only stops new shoppers reaching the bank (the authorization hop),
//!   and the horizon only makes pisgate *ask* the bank to make the payment unsignable; the
//!   bank's answer decides (a refusal because the shopper signed means following the
//!   payment on to the bank's final word). There is deliberately no way to say "the horizon
//!   passed" here.
//! - [`Evidence::InitiationRefused`]: the bank explicitly refused to create the payment
//!   (validation, credentials). With [`Evidence::InitiationNotSent`] (pisgate could not send
//!   the initiation at all: nothing reached the bank) and [`Evidence::NoneAtBank`] (below)
//!   the only ways to `failed`. A timeout, a
//!   dropped connection or an unreadable answer is no evidence at all: the initiation's
//!   outcome is unknown and the payment stays open for a retry with the same key.
//! - [`Evidence::LinkNeverHandedOut`]: the merchant cancelled before any shopper went
//!   through the hop, so the bank's signing link was never seen by anyone and nothing can be
//!   signed. Gives `cancelled`.
//! - [`Evidence::SubmissionWithheld`]: at a bank that executes a signed payment only when
//!   pisgate submits it (OP), the merchant cancelled before any submission was sent; pisgate
//!   never sends one and revoked the token that could. Nothing can move the money, so the
//!   payment is `cancelled`, signed or not.
//! - [`Evidence::NoneAtBank`]: at a bank that may execute a payment without the shopper,
//!   an initiation whose answer was lost stays open until an operator reconciles it; the
//!   bank told the operator it made no such payment, and the operator ended it on that word,
//!   with their evidence. Gives `failed`.
//! - [`Evidence::NeverSubmittable`]: at such a bank, a signed payment that pisgate can never
//!   submit: past the late-signing horizon no token of it was ever stored (its code exchange
//!   failed, or the shopper never came back with the code, and the state can no longer be
//!   used), no submission was ever attempted, and none is under way. Only pisgate could
//!   submit it, with that token, so the bank never debits it: `authorization_failed` (the
//!   authorization never completed), never `expired` (it was signed).
//!
//! A callback's `error` parameter is not evidence: it is recorded and triggers a status read.
//!
//! # Edges (anything not listed is refused)
//! - `awaiting_authorization` → `authorized`, `paid`, and every final exit. `paid` directly
//!   is legal because a poller may miss the intermediate bank statuses.
//! - `authorized` → `paid`, `rejected`, `authorization_failed`, `cancelled`. A signed payment
//!   can neither expire nor fail to be created. `authorization_failed` stays legal because
//!   PendingSecondConfirmation maps to `authorized` and a second confirmation can still fail.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

/// The proofs that a payment can no longer be signed. "The late-signing horizon passed" is
/// not one of them: at the horizon pisgate asks the bank to delete the payment, and only the
/// bank's confirmation ([`Unsignable::DeletedAtBank`]) is proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsignable {
    /// The bank reported UserApprovalTimeout.
    BankTimedOut,
    /// The bank confirmed that it deleted the (unsigned) payment when pisgate asked.
    DeletedAtBank,
    /// The bank's signing link never left pisgate: the authorization hop was never opened,
    /// or the bank's answer to the initiation was never recorded. Nobody can sign what
    /// nobody was shown.
    LinkNeverHandedOut,
    /// The link was handed out, but the bank still shows no such payment (a 404: nobody
    /// opened the link) after the time the bank gives to sign ran out (its approval
    /// timeout, counted from its answer to the initiation). Such a link no longer opens, so
    /// nobody can sign it; the bank itself never reports the timeout of a payment it never
    /// showed.
    BankTimeRanOutUnopened,
    /// A bank whose payments are signed only in signing orders pisgate starts with the
    /// shopper's token (SEB's BankID): no order was started, or every one ended failed at
    /// the bank; pisgate's window has closed, so no new one can start; and the time the
    /// bank gives to sign ran out. Nobody signed it. What lets a payment end when the
    /// shopper's token is gone and the bank can no longer be asked.
    NoSigningOrderSucceeded,
}

impl Unsignable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unsignable::BankTimedOut => "bank_timed_out",
            Unsignable::DeletedAtBank => "deleted_at_bank",
            Unsignable::LinkNeverHandedOut => "link_never_handed_out",
            Unsignable::BankTimeRanOutUnopened => "bank_time_ran_out_unopened",
            Unsignable::NoSigningOrderSucceeded => "no_signing_order_succeeded",
        }
    }
}

/// Why a status changes: the only input to [`PaymentStatus::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// The bank reported this (mapped) status.
    Bank(PaymentStatus),
    /// The payment provably can no longer be signed (see [`Unsignable`] for the proofs).
    /// `expired`, or `cancelled` if the merchant asked.
    Unsignable {
        why: Unsignable,
        cancel_requested: bool,
    },
    /// The bank explicitly refused the initiation: `failed`.
    InitiationRefused,
    /// pisgate could not send the initiation at all (its setup for the bank lacks what the
    /// bank requires, or the request cannot be built or signed): nothing reached the bank,
    /// so nothing exists there to sign or execute, and the same request fails the same way.
    /// `failed`.
    InitiationNotSent,
    /// Cancelled by the merchant before any shopper reached the bank's signing link.
    LinkNeverHandedOut,
    /// Cancelled by the merchant before pisgate submitted a payment that the bank executes
    /// only on pisgate's submission: it is never submitted.
    SubmissionWithheld,
    /// A payment that the bank executes only on pisgate's submission, signed at the bank,
    /// but past the late-signing horizon pisgate holds no token to submit it with (the code
    /// exchange failed, or the shopper never came back with the code) and never tried: it
    /// can never be submitted, so the bank never debits it. `authorization_failed`.
    NeverSubmittable,
    /// At a bank that may execute a payment without the shopper, an initiation whose answer
    /// was lost: the bank told the operator that it made no payment from it, and the operator
    /// ended it on that word (recorded with their evidence in the ledger and the audit log).
    /// Nothing exists at the bank to sign or execute: `failed`.
    NoneAtBank,
}

impl Evidence {
    /// The status this evidence leads to.
    pub fn status(self) -> PaymentStatus {
        match self {
            Evidence::Bank(s) => s,
            Evidence::Unsignable {
                cancel_requested: true,
                ..
            }
            | Evidence::LinkNeverHandedOut
            | Evidence::SubmissionWithheld => PaymentStatus::Cancelled,
            Evidence::Unsignable {
                cancel_requested: false,
                ..
            } => PaymentStatus::Expired,
            Evidence::InitiationRefused | Evidence::InitiationNotSent | Evidence::NoneAtBank => {
                PaymentStatus::Failed
            }
            Evidence::NeverSubmittable => PaymentStatus::AuthorizationFailed,
        }
    }

    /// Evidence that only speaks of a payment nobody has signed.
    fn needs_unsigned(self) -> bool {
        !matches!(
            self,
            Evidence::Bank(_) | Evidence::SubmissionWithheld | Evidence::NeverSubmittable
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
            (Authorized, Expired | Failed) => Err(TransitionError::NotAllowed { from: self, to }),
            (Authorized, _) => Ok(Transition::Changed { from: self, to }),
            _ => Err(TransitionError::NotAllowed { from: self, to }),
        }
    }

    /// The one way a payment's status changes: the new status follows from the evidence,
    /// then the edge must be allowed (see the module docs).
    pub fn apply(self, evidence: Evidence) -> Result<Transition, TransitionError> {
        let to = evidence.status();
        if evidence.needs_unsigned() && self != PaymentStatus::AwaitingAuthorization {
            if self == to {
                return Ok(Transition::Unchanged(self));
            }
            return if self.is_final() {
                Err(TransitionError::FromFinal { from: self, to })
            } else {
                Err(TransitionError::NotAllowed { from: self, to })
            };
        }
        self.transition(to)
    }

    /// Whether a later bank read (mapped to `bank`) contradicts this final status about the
    /// one thing that matters: whether money moves. A non-paid final status beside a bank that
    /// says signed (authorized) or paid, or `paid` beside a bank that says a non-paid final
    /// status. A bank still showing nothing signed, or another non-paid final word (a timeout
    /// beside a deletion), is no contradiction. Never true for a status that is not final.
    pub fn disagrees_with_bank(self, bank: PaymentStatus) -> bool {
        use PaymentStatus::*;
        match self {
            s if !s.is_final() => false,
            Paid => bank.is_final() && bank != Paid,
            _ => matches!(bank, Authorized | Paid),
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
        for to in [Paid, Rejected, AuthorizationFailed, Cancelled] {
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
    fn a_signed_payment_cannot_fail_to_be_created() {
        assert!(!Authorized.can_become(Failed));
    }

    #[test]
    fn the_new_status_follows_from_the_evidence() {
        assert_eq!(
            AwaitingAuthorization
                .apply(Evidence::Bank(Paid))
                .unwrap()
                .status(),
            Paid
        );
        let unsignable = |cancel_requested| Evidence::Unsignable {
            why: Unsignable::DeletedAtBank,
            cancel_requested,
        };
        assert_eq!(
            AwaitingAuthorization
                .apply(unsignable(false))
                .unwrap()
                .status(),
            Expired
        );
        assert_eq!(
            AwaitingAuthorization
                .apply(unsignable(true))
                .unwrap()
                .status(),
            Cancelled
        );
        assert_eq!(
            AwaitingAuthorization
                .apply(Evidence::InitiationRefused)
                .unwrap()
                .status(),
            Failed
        );
        assert_eq!(
            AwaitingAuthorization
                .apply(Evidence::InitiationNotSent)
                .unwrap()
                .status(),
            Failed
        );
        assert_eq!(
            AwaitingAuthorization
                .apply(Evidence::LinkNeverHandedOut)
                .unwrap()
                .status(),
            Cancelled
        );
        assert_eq!(
            AwaitingAuthorization
                .apply(Evidence::NoneAtBank)
                .unwrap()
                .status(),
            Failed
        );
    }

    #[test]
    fn evidence_about_unsigned_payments_never_touches_a_signed_one() {
        for evidence in [
            Evidence::Unsignable {
                why: Unsignable::BankTimedOut,
                cancel_requested: false,
            },
            Evidence::Unsignable {
                why: Unsignable::DeletedAtBank,
                cancel_requested: true,
            },
            Evidence::InitiationRefused,
            Evidence::InitiationNotSent,
            Evidence::LinkNeverHandedOut,
            Evidence::NoneAtBank,
        ] {
            assert!(Authorized.apply(evidence).is_err(), "{evidence:?}");
            assert!(Paid.apply(evidence).is_err(), "{evidence:?}");
        }
        // The bank's own word still moves a signed payment.
        assert_eq!(
            Authorized
                .apply(Evidence::Bank(Cancelled))
                .unwrap()
                .status(),
            Cancelled
        );
        // A signed payment nobody can ever submit ends authorization_failed, never expired;
        // it never ends a final one.
        assert_eq!(
            Authorized
                .apply(Evidence::NeverSubmittable)
                .unwrap()
                .status(),
            AuthorizationFailed
        );
        assert!(Paid.apply(Evidence::NeverSubmittable).is_err());
        assert!(Cancelled.apply(Evidence::NeverSubmittable).is_err());
        // Expired is final: a late Paid from the bank cannot reopen it, which is why
        // nothing but the bank's evidence may ever expire a payment.
        assert!(Expired.apply(Evidence::Bank(Paid)).is_err());
    }

    #[test]
    fn a_final_status_disagrees_with_the_bank_only_about_whether_money_moves() {
        for ours in [Expired, Cancelled, Rejected, AuthorizationFailed, Failed] {
            assert!(ours.disagrees_with_bank(Paid), "{ours}");
            assert!(ours.disagrees_with_bank(Authorized), "{ours}");
            assert!(!ours.disagrees_with_bank(AwaitingAuthorization), "{ours}");
            assert!(!ours.disagrees_with_bank(Cancelled), "{ours}");
        }
        assert!(Paid.disagrees_with_bank(Rejected));
        assert!(Paid.disagrees_with_bank(Cancelled));
        assert!(!Paid.disagrees_with_bank(Paid));
        assert!(!Paid.disagrees_with_bank(Authorized));
        for open in [AwaitingAuthorization, Authorized] {
            for bank in PaymentStatus::ALL {
                assert!(!open.disagrees_with_bank(bank));
            }
        }
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
        assert_eq!(allowed.len(), 7 + 4);
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
