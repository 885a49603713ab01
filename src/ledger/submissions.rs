//! The submit step's persistence (a bank whose `submit_after_authorization`, OP): the one
//! claim per payment, the attempts with their idempotency keys, and their ledger events.
//! The flow that calls the bank is [`crate::api::submission`].
//!
//! Rules kept here, in SQL under the payment's row lock:
//! - one submission in flight per payment: [`claim`] takes `payments.submission_claim` for a
//!   lease; a crashed holder's claim simply runs out, and the next claim turns the attempt it
//!   left `in_flight` into `outcome_unknown` (with its `submission_outcome_unknown` event);
//! - an attempt and its idempotency key are committed with `submission_started` before the
//!   bank is called ([`start_attempt`]), and only by the claim's holder;
//! - the merchant's cancel recorded before any attempt withholds the submission: the claim
//!   and [`start_attempt`] both say so under the lock, so a cancel committed before an
//!   attempt starts always wins ([`withhold`] ends the payment `cancelled`);
//! - after an answer that still asks for a submission (`needs_resubmit`, OP's
//!   `SubmissionPending`) the next attempt is not due before a backoff.
//!
//! Never stored or logged here: tokens. The idempotency key is not a secret (it is in the
//! ledger on purpose: it proves which attempts may have reached the bank).

use super::Db;
use crate::domain::Evidence;
use crate::ledger::payments::{self, Change, TransitionError};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// One submission attempt as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: i32,
    pub idempotency_key: String,
    /// `in_flight`, `answered`, `refused` or `outcome_unknown`.
    pub outcome: String,
    /// The answer still asked for a submission (a new key after a backoff).
    pub needs_resubmit: bool,
    pub bank_status: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Final already: nothing is ever submitted.
    Final,
    /// Another holder's claim is live.
    Busy,
    /// The attempts on record contradict the ledger ([`OnRecord::Contradicted`]): nothing
    /// is submitted or withheld until an operator has looked.
    Contradicted,
    /// The last answer asked for a new submission, but not before this time.
    NotDue(DateTime<Utc>),
    /// Claimed until the lease ends. `last` is the latest attempt on record (one a crashed
    /// holder left in flight is already `outcome_unknown`); `withhold`: the merchant asked
    /// to cancel and nothing was ever sent, so nothing may be.
    Claimed {
        token: Uuid,
        last: Option<Attempt>,
        withhold: bool,
        psu_key: Option<String>,
    },
}

async fn last_attempt(conn: &mut PgConnection, id: Uuid) -> Result<Option<Attempt>, sqlx::Error> {
    sqlx::query_as!(
        Attempt,
        r#"SELECT attempt, idempotency_key, outcome, needs_resubmit, bank_status, finished_at
           FROM payment_submissions WHERE payment_id = $1
           ORDER BY attempt DESC LIMIT 1"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// What the payment's records say of its submission attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRecord {
    /// None in the table, none in the ledger: nothing was ever sent.
    Nothing,
    /// The table and the ledger agree on at least one attempt.
    Attempted,
    /// The table's attempts are not the ones the ledger records as started (rows deleted or
    /// added in SQL, or an event forged): one may have reached the bank, and nothing
    /// here can say which. Logged and counted; neither submitted nor withheld.
    Contradicted,
}

/// The attempts of the payment, from `payment_submissions` and the ledger's
/// `submission_started` events together (each attempt writes both in one transaction).
pub async fn on_record(conn: &mut PgConnection, id: Uuid) -> Result<OnRecord, sqlx::Error> {
    let rows = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM payment_submissions WHERE payment_id = $1"#,
        id
    )
    .fetch_one(&mut *conn)
    .await?;
    let ledger = super::events::submission_attempts_in_ledger(conn, id).await?;
    Ok(
        match (usize::try_from(rows).unwrap_or(usize::MAX), ledger) {
            (0, 0) => OnRecord::Nothing,
            (r, l) if r == l => OnRecord::Attempted,
            (r, l) => {
                tracing::error!(payment_id = %id, rows = r, ledger = l, "the payment's submission attempts are not the ones its ledger recorded: neither submitted nor withheld; run `pisgate ledger verify`");
                metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
                OnRecord::Contradicted
            }
        },
    )
}

/// Whether a submission attempt of the payment may have reached the bank: one is on record,
/// or the records contradict each other ([`on_record`]). The truth rule of a bank that
/// submits after authorization: its `rejected` with none is the shopper's refusal
/// (`authorization_failed`); and only a payment with none may be withheld or ended unsent.
pub async fn any_attempt(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(on_record(conn, id).await? != OnRecord::Nothing)
}

/// The row's state under its lock: status, whether the merchant asked to cancel, the live
/// claim, the shopper key.
struct Locked {
    status: String,
    merchant_cancel: bool,
    claimed_until: Option<DateTime<Utc>>,
    claim: Option<Uuid>,
    psu_key: Option<String>,
}

/// `merchant_cancel` holds only when the ledger recorded the merchant's cancel too: the row's
/// columns alone (an insider could set them) never withhold a payment the shopper approved.
async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<Locked>, sqlx::Error> {
    let Some(mut row) = sqlx::query_as!(
        Locked,
        r#"SELECT status,
                  (cancel_requested_at IS NOT NULL
                   AND COALESCE(cancel_requested_by, 'merchant') = 'merchant') AS "merchant_cancel!",
                  pisgate_readable_time(submission_claimed_until) AS claimed_until,
                  submission_claim AS claim, psu_key
           FROM payments WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    if row.merchant_cancel && !super::events::merchant_cancel_in_ledger(conn, id).await? {
        tracing::error!(payment_id = %id, "the row says the merchant cancelled, its ledger does not: not withholding");
        metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
        row.merchant_cancel = false;
    }
    Ok(Some(row))
}

fn is_final(status: &str) -> bool {
    crate::domain::PaymentStatus::parse(status).is_none_or(|s| s.is_final())
}

/// Takes the payment's one submission claim for `lease` (see the module docs).
/// `backoff(n)` is the wait after the n-th attempt answered with a status that still asks
/// for a submission.
pub async fn claim(
    pool: &Db,
    id: Uuid,
    lease: Duration,
    backoff: impl Fn(i32) -> Duration,
) -> Result<Claim, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(row) = lock(&mut tx, id).await? else {
        return Ok(Claim::Final);
    };
    if is_final(&row.status) {
        return Ok(Claim::Final);
    }
    let now = Utc::now();
    if row.claimed_until.is_some_and(|t| t > now) {
        return Ok(Claim::Busy);
    }
    if on_record(&mut tx, id).await? == OnRecord::Contradicted {
        return Ok(Claim::Contradicted);
    }
    let mut last = last_attempt(&mut tx, id).await?;
    if let Some(a) = last.as_mut().filter(|a| a.outcome == "in_flight") {
        // Its holder's claim ran out (a crash, or a call that outlived the lease): the bank
        // may or may not have acted on it.
        sqlx::query!(
            "UPDATE payment_submissions SET outcome = 'outcome_unknown', finished_at = now()
             WHERE payment_id = $1 AND attempt = $2",
            id,
            a.attempt
        )
        .execute(&mut *tx)
        .await?;
        payments::note(
            &mut tx,
            id,
            "submission_outcome_unknown",
            json!({ "attempt": a.attempt, "reason": "holder_lost" }),
        )
        .await?;
        a.outcome = "outcome_unknown".into();
        a.finished_at = Some(now);
        metrics::counter!("pisgate_bank_submissions_total", "bank" => bank_of(&mut tx, id).await?, "outcome" => "outcome_unknown").increment(1);
    }
    if let Some(a) = &last
        && a.outcome == "answered"
        && a.needs_resubmit
    {
        let due = a
            .finished_at
            .and_then(|t| {
                chrono::Duration::from_std(backoff(a.attempt))
                    .ok()
                    .map(|b| t + b)
            })
            .unwrap_or(now);
        if due > now {
            tx.commit().await?;
            return Ok(Claim::NotDue(due));
        }
    }
    let token = Uuid::new_v4();
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    sqlx::query!(
        r#"UPDATE payments
           SET submission_claimed_until = now() + make_interval(secs => $2::bigint / 1000.0),
               submission_claim = $3
           WHERE id = $1"#,
        id,
        lease_ms,
        token
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Claim::Claimed {
        token,
        withhold: row.merchant_cancel && last.is_none(),
        last,
        psu_key: row.psu_key,
    })
}

async fn bank_of(conn: &mut PgConnection, id: Uuid) -> Result<String, sqlx::Error> {
    sqlx::query_scalar!("SELECT bank FROM payments WHERE id = $1", id)
        .fetch_one(conn)
        .await
}

/// What [`start_attempt`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Recorded: the bank may be called now.
    Started,
    /// The claim is no longer this holder's (its lease ran out): call nothing.
    ClaimLost,
    /// The merchant's cancel came first and nothing was ever sent: withhold instead.
    Withhold,
}

/// Records attempt `attempt` with `key` and its `submission_started` event, if the claim
/// `token` is still the holder's: committed before the bank is called.
pub async fn start_attempt(
    pool: &Db,
    id: Uuid,
    token: Uuid,
    attempt: i32,
    key: &str,
    reuses_key: bool,
    trigger: &str,
) -> Result<Started, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(row) = lock(&mut tx, id).await? else {
        return Ok(Started::ClaimLost);
    };
    if row.claim != Some(token) || row.claimed_until.is_none_or(|t| t <= Utc::now()) {
        return Ok(Started::ClaimLost);
    }
    if is_final(&row.status) {
        return Ok(Started::ClaimLost);
    }
    if row.merchant_cancel && !any_attempt(&mut tx, id).await? {
        return Ok(Started::Withhold);
    }
    sqlx::query!(
        "INSERT INTO payment_submissions (payment_id, attempt, idempotency_key) VALUES ($1, $2, $3)",
        id,
        attempt,
        key
    )
    .execute(&mut *tx)
    .await?;
    payments::note(
        &mut tx,
        id,
        "submission_started",
        json!({
            "attempt": attempt,
            "idempotency_key": key,
            "reuses_key": reuses_key,
            "trigger": trigger,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(Started::Started)
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The bank answered with its status; `needs_resubmit` when that status still asks for
    /// a submission.
    Answered {
        bank_status: String,
        needs_resubmit: bool,
    },
    /// The bank refused before acting (or provably did not process it).
    Refused { error: String, detail: String },
    /// Timeout, dropped connection, unreadable answer: it may have been performed.
    OutcomeUnknown { error: String, detail: String },
}

impl Finished {
    /// The label of `pisgate_bank_submissions_total{outcome}`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Finished::Answered {
                needs_resubmit: false,
                ..
            } => "answered",
            Finished::Answered {
                needs_resubmit: true,
                ..
            } => "pending",
            Finished::Refused { .. } => "refused",
            Finished::OutcomeUnknown { .. } => "outcome_unknown",
        }
    }
}

/// Records how attempt `attempt` ended, with its event, in the caller's transaction (the
/// caller applies the bank's status in the same one), and ends the claim `token` if it is
/// still the holder's. An answer is recorded even when the claim ran out meanwhile: it is
/// the bank's word about an attempt on record.
pub async fn finish_attempt(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    attempt: i32,
    finished: &Finished,
) -> Result<(), sqlx::Error> {
    lock(conn, id).await?;
    let (outcome, bank_status, needs_resubmit, kind, detail) = match finished {
        Finished::Answered {
            bank_status,
            needs_resubmit,
        } => (
            "answered",
            Some(bank_status.as_str()),
            *needs_resubmit,
            "submission_answered",
            json!({ "attempt": attempt, "bank_answer": bank_status, "needs_resubmit": needs_resubmit }),
        ),
        Finished::Refused { error, detail } => (
            "refused",
            None,
            false,
            "submission_refused",
            json!({ "attempt": attempt, "error": error, "detail": detail }),
        ),
        Finished::OutcomeUnknown { error, detail } => (
            "outcome_unknown",
            None,
            false,
            "submission_outcome_unknown",
            json!({ "attempt": attempt, "error": error, "detail": detail }),
        ),
    };
    sqlx::query!(
        r#"UPDATE payment_submissions
           SET outcome = $3, bank_status = $4, needs_resubmit = $5, finished_at = now()
           WHERE payment_id = $1 AND attempt = $2"#,
        id,
        attempt,
        outcome,
        bank_status,
        needs_resubmit
    )
    .execute(&mut *conn)
    .await?;
    payments::note(conn, id, kind, detail).await?;
    release_in(conn, id, token).await
}

async fn release_in(conn: &mut PgConnection, id: Uuid, token: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE payments SET submission_claimed_until = NULL, submission_claim = NULL
           WHERE id = $1 AND submission_claim = $2"#,
        id,
        token
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives the claim `token` back (nothing was sent under it).
pub async fn release(pool: &Db, id: Uuid, token: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    release_in(&mut tx, id, token).await?;
    tx.commit().await
}

/// Ends a signed payment that can never be submitted `authorization_failed`
/// ([`Evidence::NeverSubmittable`]), checked under its row lock: not final, no submission
/// attempt on record and no submission claim live, no token of the payment stored
/// (`psu_key`), no code exchange under way, and the state spent (the exchange ended for
/// good) or expired (no return can bring a code any more). The caller has the bank's word
/// that it still asks for a submission, and the late-signing horizon has passed. Like a
/// withheld submission the payment then leaves the poll schedule: the bank keeps calling it
/// authorized until it lapses there, and nothing can execute it. Returns whether it ended
/// (false: one of the conditions no longer holds; nothing written).
pub async fn end_never_submittable(pool: &Db, id: Uuid) -> Result<bool, TransitionError> {
    let mut tx = pool.begin().await?;
    let Some(row) = lock(&mut tx, id).await? else {
        return Ok(false);
    };
    let now = Utc::now();
    if is_final(&row.status)
        || row.psu_key.is_some()
        || row.claimed_until.is_some_and(|t| t > now)
        || any_attempt(&mut tx, id).await?
    {
        return Ok(false);
    }
    let callback = sqlx::query!(
        // Read clamped like select_payment!: 'infinity' edited in SQL is no panic.
        r#"SELECT pisgate_readable_time(callback_claimed_until) AS callback_claimed_until,
                  pisgate_readable_time(state_used_at) AS state_used_at,
                  pisgate_readable_time(state_expires_at) AS state_expires_at
           FROM payments WHERE id = $1"#,
        id
    )
    .fetch_one(&mut *tx)
    .await?;
    let exchange_running = callback.callback_claimed_until.is_some_and(|t| t > now);
    let state_spent =
        callback.state_used_at.is_some() || callback.state_expires_at.is_none_or(|t| t <= now);
    if exchange_running || !state_spent {
        return Ok(false);
    }
    payments::note(
        &mut tx,
        id,
        "submission_impossible",
        json!({
            "reason": "no_token_past_horizon",
            "state": if callback.state_used_at.is_some() { "exchange_failed" } else { "never_returned" },
        }),
    )
    .await?;
    payments::transition(
        &mut tx,
        id,
        Change {
            evidence: Evidence::NeverSubmittable,
            bank_status: None,
            kind: "authorization_failed",
            detail: json!({ "source": "poller", "reason": "late_signing_horizon", "proof": "never_submittable" }),
            failure: None,
        },
    )
    .await?;
    sqlx::query!("DELETE FROM payment_polls WHERE payment_id = $1", id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Ends the payment `cancelled` without ever submitting it (the merchant asked before any
/// attempt): `submission_withheld` with what became of the payment's refresh token at the
/// bank (`refresh_token_revocation`: `revoked`, `not_offered`, `failed`, `no_refresh_token`
/// or `no_token`; `refresh_token_revoked` is true only when the bank revoked it), then the
/// status change, and the payment leaves the poll schedule (the bank keeps calling it
/// authorized until it lapses there; that is no disagreement: nothing can execute it
/// without a submission, and only pisgate could submit). Returns false when the claim is
/// no longer the holder's or an attempt appeared (nothing written then).
pub async fn withhold(
    pool: &Db,
    id: Uuid,
    token: Uuid,
    refresh_token_revocation: &str,
) -> Result<bool, TransitionError> {
    let mut tx = pool.begin().await?;
    let Some(row) = lock(&mut tx, id).await? else {
        return Ok(false);
    };
    if row.claim != Some(token) || is_final(&row.status) || any_attempt(&mut tx, id).await? {
        return Ok(false);
    }
    payments::note(
        &mut tx,
        id,
        "submission_withheld",
        json!({
            "reason": "cancel_requested_by_merchant",
            "refresh_token_revoked": refresh_token_revocation == "revoked",
            "refresh_token_revocation": refresh_token_revocation,
        }),
    )
    .await?;
    payments::transition(
        &mut tx,
        id,
        Change {
            evidence: Evidence::SubmissionWithheld,
            bank_status: None,
            kind: "cancelled",
            detail: json!({ "by": "merchant", "submission_withheld": true }),
            failure: None,
        },
    )
    .await?;
    sqlx::query!("DELETE FROM payment_polls WHERE payment_id = $1", id)
        .execute(&mut *tx)
        .await?;
    release_in(&mut tx, id, token).await?;
    tx.commit().await?;
    Ok(true)
}

/// Ends a payment whose bank made it with other terms than pisgate sent (the creation's
/// answer echoed another `fields`: amount, currency, creditor account) without ever
/// submitting it, in the caller's transaction that records the answer: `submission_withheld`
/// (reason `bank_terms_mismatch`; no token exists yet, so none is revoked), then
/// `cancelled` with the failure `bank_terms_mismatch`, and the payment leaves the poll
/// schedule. As for [`withhold`]: the bank executes such a payment only on pisgate's
/// submission, and pisgate never sends one, so no money moves at any amount; the bank may
/// show the payment unsigned (or signed) until it lapses there, which is no disagreement.
pub async fn withhold_contradicted(
    conn: &mut PgConnection,
    id: Uuid,
    fields: &[&str],
) -> Result<(), TransitionError> {
    payments::note(
        conn,
        id,
        "submission_withheld",
        json!({
            "reason": payments::TERMS_MISMATCH,
            "fields": fields,
            "refresh_token_revoked": false,
            "refresh_token_revocation": "no_token",
        }),
    )
    .await?;
    payments::transition(
        conn,
        id,
        Change {
            evidence: Evidence::SubmissionWithheld,
            bank_status: None,
            kind: "cancelled",
            detail: json!({
                "by": "pisgate",
                "reason": payments::TERMS_MISMATCH,
                "submission_withheld": true,
            }),
            failure: Some((
                payments::TERMS_MISMATCH,
                "the bank made the payment with other terms (amount, currency or creditor account) than were sent; it is never submitted, so no money moves",
            )),
        },
    )
    .await?;
    sqlx::query!("DELETE FROM payment_polls WHERE payment_id = $1", id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
