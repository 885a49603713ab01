//! Nordea's payment statuses and their meaning for the merchant (design.md, "Payment
//! lifecycle").
//!
//! This is the only place that maps a Nordea status to a [`PaymentStatus`]. It proposes;
//! the domain's transition function decides. Anything unrecognised maps to `None`
//! ("unknown: no change"), never to a guess.

use crate::domain::PaymentStatus;
use std::fmt;

/// Every status the single-SCA API documents (Cancelled and Stopped come with newer SEPA
/// versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NordeaStatus {
    PendingConfirmation,
    PendingSecondConfirmation,
    PendingUserApproval,
    OnHold,
    Confirmed,
    Rejected,
    Paid,
    InsufficientFunds,
    LimitExceeded,
    UserApprovalFailed,
    UserApprovalTimeout,
    UserApprovalCancelled,
    Unknown,
    Cancelled,
    Stopped,
}

impl NordeaStatus {
    pub const ALL: [NordeaStatus; 15] = [
        NordeaStatus::PendingConfirmation,
        NordeaStatus::PendingSecondConfirmation,
        NordeaStatus::PendingUserApproval,
        NordeaStatus::OnHold,
        NordeaStatus::Confirmed,
        NordeaStatus::Rejected,
        NordeaStatus::Paid,
        NordeaStatus::InsufficientFunds,
        NordeaStatus::LimitExceeded,
        NordeaStatus::UserApprovalFailed,
        NordeaStatus::UserApprovalTimeout,
        NordeaStatus::UserApprovalCancelled,
        NordeaStatus::Unknown,
        NordeaStatus::Cancelled,
        NordeaStatus::Stopped,
    ];

    /// The status right after initiation (seed v2.2).
    pub const INITIAL: NordeaStatus = NordeaStatus::PendingUserApproval;

    pub fn as_str(self) -> &'static str {
        match self {
            NordeaStatus::PendingConfirmation => "PendingConfirmation",
            NordeaStatus::PendingSecondConfirmation => "PendingSecondConfirmation",
            NordeaStatus::PendingUserApproval => "PendingUserApproval",
            NordeaStatus::OnHold => "OnHold",
            NordeaStatus::Confirmed => "Confirmed",
            NordeaStatus::Rejected => "Rejected",
            NordeaStatus::Paid => "Paid",
            NordeaStatus::InsufficientFunds => "InsufficientFunds",
            NordeaStatus::LimitExceeded => "LimitExceeded",
            NordeaStatus::UserApprovalFailed => "UserApprovalFailed",
            NordeaStatus::UserApprovalTimeout => "UserApprovalTimeout",
            NordeaStatus::UserApprovalCancelled => "UserApprovalCancelled",
            NordeaStatus::Unknown => "Unknown",
            NordeaStatus::Cancelled => "Cancelled",
            NordeaStatus::Stopped => "Stopped",
        }
    }

    /// Exact spelling first, then ignoring ASCII case (the bank's casing is not a contract
    /// we want to fail on).
    pub fn parse(s: &str) -> Option<NordeaStatus> {
        let s = s.trim();
        NordeaStatus::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .or_else(|| {
                NordeaStatus::ALL
                    .into_iter()
                    .find(|n| n.as_str().eq_ignore_ascii_case(s))
            })
    }

    /// Final at the bank: it will not change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            NordeaStatus::Paid
                | NordeaStatus::Rejected
                | NordeaStatus::InsufficientFunds
                | NordeaStatus::LimitExceeded
                | NordeaStatus::UserApprovalFailed
                | NordeaStatus::UserApprovalTimeout
                | NordeaStatus::UserApprovalCancelled
                | NordeaStatus::Cancelled
                | NordeaStatus::Stopped
        )
    }

    /// What it means for the merchant; `None` for `Unknown` (no change).
    pub fn payment_status(self) -> Option<PaymentStatus> {
        Some(match self {
            NordeaStatus::PendingUserApproval => PaymentStatus::AwaitingAuthorization,
            NordeaStatus::PendingConfirmation
            | NordeaStatus::PendingSecondConfirmation
            | NordeaStatus::OnHold
            | NordeaStatus::Confirmed => PaymentStatus::Authorized,
            NordeaStatus::Paid => PaymentStatus::Paid,
            NordeaStatus::Rejected
            | NordeaStatus::InsufficientFunds
            | NordeaStatus::LimitExceeded => PaymentStatus::Rejected,
            NordeaStatus::UserApprovalFailed | NordeaStatus::UserApprovalCancelled => {
                PaymentStatus::AuthorizationFailed
            }
            // The bank's evidence that it can no longer be signed (design.md's mapping).
            NordeaStatus::UserApprovalTimeout => PaymentStatus::Expired,
            NordeaStatus::Cancelled | NordeaStatus::Stopped => PaymentStatus::Cancelled,
            NordeaStatus::Unknown => return None,
        })
    }
}

impl fmt::Display for NordeaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Maps the bank's status text; `None` for `Unknown` and for anything unrecognised.
pub fn map_status(bank_status: &str) -> Option<PaymentStatus> {
    NordeaStatus::parse(bank_status).and_then(NordeaStatus::payment_status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentStatus as P;

    #[test]
    fn maps_every_documented_status_as_the_design_says() {
        let expected = [
            ("PendingUserApproval", Some(P::AwaitingAuthorization)),
            ("PendingConfirmation", Some(P::Authorized)),
            ("PendingSecondConfirmation", Some(P::Authorized)),
            ("OnHold", Some(P::Authorized)),
            ("Confirmed", Some(P::Authorized)),
            ("Paid", Some(P::Paid)),
            ("Rejected", Some(P::Rejected)),
            ("InsufficientFunds", Some(P::Rejected)),
            ("LimitExceeded", Some(P::Rejected)),
            ("UserApprovalFailed", Some(P::AuthorizationFailed)),
            ("UserApprovalTimeout", Some(P::Expired)),
            ("UserApprovalCancelled", Some(P::AuthorizationFailed)),
            ("Cancelled", Some(P::Cancelled)),
            ("Stopped", Some(P::Cancelled)),
            ("Unknown", None),
        ];
        assert_eq!(expected.len(), NordeaStatus::ALL.len());
        for (text, status) in expected {
            assert_eq!(map_status(text), status, "{text}");
        }
    }

    #[test]
    fn anything_unrecognised_is_no_change() {
        for text in ["", "Executed", "paid-ish", "PENDING"] {
            assert_eq!(map_status(text), None, "{text}");
        }
        assert_eq!(map_status("paid"), Some(P::Paid));
    }

    #[test]
    fn final_bank_statuses_map_to_final_merchant_statuses() {
        for s in NordeaStatus::ALL {
            if s.is_final() {
                assert!(s.payment_status().unwrap().is_final(), "{s}");
            } else if let Some(p) = s.payment_status() {
                assert!(!p.is_final(), "{s}");
            }
            assert_eq!(NordeaStatus::parse(s.as_str()), Some(s));
        }
    }
}
