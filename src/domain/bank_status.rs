//! The order in which a bank's own statuses follow each other, so that a stale read never
//! moves the recorded bank status backwards.
//!
//! Two reads of one payment can overlap (the poller's, the callback's, a cancel's, another
//! replica's); the one that started first may answer last. Its status is then older than the
//! one recorded, and writing it would show the merchant (and the console) a payment going
//! back from `Confirmed` to `PendingConfirmation`, or a final `RJCT` replaced by the `ACTC`
//! read before it. A bank status only moves forward, along its protocol's
//! order (a payment has one bank, so only statuses of one protocol are ever compared):
//!
//! | progress | Nordea | Berlin Group, SEB (ISO 20022) | OP |
//! |---|---|---|---|
//! | 0 | PendingUserApproval (not signed) | RCVD | Unauthorized |
//! | 1 | PendingConfirmation | | Authorizing |
//! | 2 | PendingSecondConfirmation, OnHold | ACTC, PATC (partly signed), ACCP, ACFC, ACWC | Authorized |
//! | 3 | Confirmed | ACSP, ACWP | SubmissionPending |
//! | 4 | | | Accepted |
//! | 9 | every final status: Paid, Rejected, InsufficientFunds, LimitExceeded, UserApprovalFailed, UserApprovalTimeout, UserApprovalCancelled, Cancelled, Stopped | ACSC, ACCC, RJCT, CANC | Debited, Rejected, Revoked, Cancelled |
//!
//! Two statuses of the same progress replace each other freely: one final word replacing
//! another is not "backwards", it is a disagreement, and the caller's truth rules decide
//! about it. A status this table does not know (Unknown, PDNG, which an ISO bank may report
//! at any step, PART) has no progress and is never judged here: it is compared by nothing.
//!
//! This module must never decide a payment's status (that is [`super::status`]'s job); it
//! only says whether a read is older than what is recorded.

/// How far a bank status is along its payment's life; `None` for a status of unknown order.
pub fn progress(bank_status: &str) -> Option<u8> {
    Some(match bank_status {
        // Nordea.
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
        | "Stopped" => FINAL,
        // ISO 20022 (Berlin Group, SEB).
        "RCVD" => 0,
        // PATC (partly signed) may follow an ACTC initiation answer; ACWP (accepted without
        // posting) may follow ACSP: neither is ranked before what it may follow.
        "ACTC" | "PATC" | "ACCP" | "ACFC" | "ACWC" => 2,
        "ACSP" | "ACWP" => 3,
        "ACSC" | "ACCC" | "RJCT" | "CANC" => FINAL,
        // OP ("Rejected" and "Cancelled" are Nordea's words too, final in both).
        "Unauthorized" => 0,
        "Authorizing" => 1,
        "Authorized" => 2,
        "SubmissionPending" => 3,
        "Accepted" => 4,
        "Debited" | "Revoked" => FINAL,
        _ => return None,
    })
}

/// The progress of every final status.
const FINAL: u8 = 9;

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
            !is_backwards(Some("ACSC"), "PDNG"),
            "PDNG may come at any step"
        );
        assert!(!is_backwards(Some("PDNG"), "RCVD"));
        assert!(!is_backwards(Some("RJCT"), "CANC"), "final after final");
        assert!(!is_backwards(Some("Debited"), "Revoked"));
    }

    #[test]
    fn an_iso_or_op_status_never_moves_back_along_its_order() {
        for order in [
            &["RCVD", "PATC", "ACSP", "ACSC"][..],
            &["RCVD", "ACTC", "ACWP", "ACCC"],
            &["RCVD", "ACCP", "ACSP", "RJCT"],
            &["RCVD", "ACWC", "ACSP", "CANC"],
            &[
                "Unauthorized",
                "Authorizing",
                "Authorized",
                "SubmissionPending",
                "Accepted",
                "Debited",
            ],
            &["Unauthorized", "Authorized", "Revoked"],
        ] {
            for (i, earlier) in order.iter().enumerate() {
                for later in &order[i + 1..] {
                    assert!(!is_backwards(Some(earlier), later), "{earlier} -> {later}");
                    assert!(is_backwards(Some(later), earlier), "{later} -> {earlier}");
                }
            }
        }
        // The accepted steps of ISO 20022 are one progress: none replaces another as older.
        assert!(!is_backwards(Some("ACCP"), "ACTC"));
        assert!(!is_backwards(Some("ACTC"), "PATC"));
        assert!(!is_backwards(Some("PATC"), "ACTC"));
        assert!(!is_backwards(Some("ACSP"), "ACWP"));
    }
}
