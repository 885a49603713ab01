//! The order in which a bank's own statuses follow each other, so that a stale read never
//! moves the recorded bank status backwards.
//!
//! Two reads of one payment can overlap (the poller's, the callback's, a cancel's, another
//! replica's); the one that started first may answer last. Its status is then older than the
//! one recorded, and writing it would show the merchant (and the console) a payment going
//! back from `Confirmed` to `PendingConfirmation`. A bank status only moves forward:
//!
//! | progress | Nordea |
//! |---|---|
//! | 0 | PendingUserApproval (not signed) |
//! | 1 | PendingConfirmation |
//! | 2 | PendingSecondConfirmation, OnHold |
//! | 3 | Confirmed |
//! | 4 | every final status: Paid, Rejected, InsufficientFunds, LimitExceeded, UserApprovalFailed, UserApprovalTimeout, UserApprovalCancelled, Cancelled, Stopped |
//!
//! Two final statuses have the same progress: one final word replacing another is not
//! "backwards", it is a disagreement, and the caller's truth rules decide about it. A status
//! this table does not know (Unknown, another protocol's) has no progress and is never
//! judged here: it is compared by nothing.
//!
//! This module must never decide a payment's status (that is [`super::status`]'s job); it
//! only says whether a read is older than what is recorded.

/// How far a bank status is along its payment's life; `None` for a status of unknown order.
pub fn progress(bank_status: &str) -> Option<u8> {
    Some(match bank_status {
        "PendingUserApproval" => 0,
        "PendingConfirmation" => 1,
        "PendingSecondConfirmation" | "OnHold" => 2,
        "Confirmed" => 3,
        "Paid"
        | "Rejected"
        | "InsufficientFunds"
        | "LimitExceeded"
        | "UserApprovalFailed"
        | "UserApprovalTimeout"
        | "UserApprovalCancelled"
        | "Cancelled"
        | "Stopped" => 4,
        _ => return None,
    })
}

/// Whether a read of `read` is older than the `recorded` status: it must not replace it.
pub fn is_backwards(recorded: Option<&str>, read: &str) -> bool {
    match (recorded.and_then(progress), progress(read)) {
        (Some(recorded), Some(read)) => read < recorded,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bank_status_never_moves_back_along_nordeas_order() {
        let order = [
            "PendingUserApproval",
            "PendingConfirmation",
            "PendingSecondConfirmation",
            "Confirmed",
            "Paid",
        ];
        for (i, earlier) in order.iter().enumerate() {
            for later in &order[i..] {
                assert!(!is_backwards(Some(earlier), later), "{earlier} -> {later}");
            }
            for later in &order[i + 1..] {
                assert!(is_backwards(Some(later), earlier), "{later} -> {earlier}");
            }
        }
        assert!(is_backwards(Some("Confirmed"), "OnHold"));
        assert!(is_backwards(Some("Cancelled"), "Confirmed"));
    }

    #[test]
    fn final_words_and_unknown_statuses_are_never_called_backwards() {
        assert!(!is_backwards(Some("Paid"), "Cancelled"));
        assert!(!is_backwards(Some("Cancelled"), "Paid"));
        assert!(!is_backwards(Some("Confirmed"), "Unknown"));
        assert!(!is_backwards(Some("Unknown"), "PendingUserApproval"));
        assert!(!is_backwards(None, "PendingUserApproval"));
        assert!(
            !is_backwards(Some("ACSC"), "ACTC"),
            "another protocol's: not judged here"
        );
    }
}
