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
