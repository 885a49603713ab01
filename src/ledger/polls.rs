//! The status poller's bookkeeping: claims with leases and the schedule, in the narrow
//! `payment_polls` table (one row per payment still followed, deleted when it is final), and
//! a standing order's progress. The poller (`crate::workers::poller`) decides; this module
//! only reads and writes.
//!
//! A claim moves `next_poll_at` to the end of the lease and writes the owner in
//! `poll_owner`, so a crashed replica's claims simply come due again; owner and lease end
//! together identify one claim. A poll that changes nothing ends its claim through
//! [`reschedule_many`]: one small row rewritten, many polls per statement.

use super::Db;
use crate::ledger::binding;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// A payment this replica has claimed.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub status: String,
    pub bank: String,
    pub bank_payment_id: Option<String>,
    /// The links the bank gave (Berlin Group `_links`), and the ledger MAC of the bank id
    /// and links.
    pub bank_links: serde_json::Value,
    pub bank_links_mac: Option<Vec<u8>>,
    pub bank_links_mac_key_id: Option<String>,
    /// The bank's last word as recorded when claimed.
    pub bank_status: Option<String>,
    pub psu_key: Option<String>,
    /// The merchant's id for the shopper (whose own token may ask the bank for this payment).
    pub psu_id: Option<String>,
    pub state_expires_at: Option<DateTime<Utc>>,
    /// pisgate's signing window (the poller polls faster within it).
    pub expires_at: Option<DateTime<Utc>>,
    /// The late-signing horizon: past it, with nothing signed, the payment expires.
    pub sign_horizon_at: Option<DateTime<Utc>>,
    /// Where the bank call stands (`initiated`, `outcome_unknown`, ...).
    pub initiation: String,
    /// When the shopper came back through the callback.
    pub state_used_at: Option<DateTime<Utc>>,
    /// When a shopper first went through the authorization hop (so holds the bank's link).
    pub hop_opened_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub poll_failures: i32,
    pub recurring_remaining: Option<i32>,
    pub recurring_executions: i32,
    pub execution_date: Option<String>,
    pub recurring_count: Option<i32>,
    /// A standing order's rule (`MONTHLY_SAME_DAY`, ...).
    pub recurrence_type: Option<String>,
    /// When it was due (the lag is measured from here).
    pub due_at: DateTime<Utc>,
    /// The end of this claim's lease: with the owner, it identifies the claim, so a second
    /// claim of the same row by the same replica (after a lease ran out) is told apart.
    pub lease_until: DateTime<Utc>,
    /// The creating request's `traceparent`: the poll's span links to it.
    pub trace_parent: Option<String>,
}

/// Claims up to `limit` due payments for `owner`, oldest due first (`FOR UPDATE SKIP
/// LOCKED`, so replicas never claim the same row), and commits.
pub async fn claim(
    pool: &Db,
    owner: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    sqlx::query_as!(
        Claimed,
        r#"WITH due AS (
               SELECT payment_id, pisgate_readable_time(next_poll_at) AS due_at
               FROM payment_polls
               WHERE next_poll_at <= now()
               ORDER BY next_poll_at
               LIMIT $3
               FOR UPDATE SKIP LOCKED
           ), claimed AS (
               UPDATE payment_polls s
               SET next_poll_at = now() + make_interval(secs => $2::bigint / 1000.0),
                   poll_owner = $1
               FROM due
               WHERE s.payment_id = due.payment_id
               RETURNING s.payment_id, s.poll_failures, s.next_poll_at, due.due_at
           )
           SELECT p.id, p.merchant_id, p.status, p.bank, p.bank_payment_id, p.bank_links,
                  p.bank_links_mac, p.bank_links_mac_key_id, p.bank_status,
                  p.psu_key, p.psu_id,
                  -- Times read through pisgate_readable_time: one edited in SQL beyond
                  -- what chrono holds ('infinity') stopped every replica's poller in turn.
                  pisgate_readable_time(p.state_expires_at) AS state_expires_at,
                  pisgate_readable_time(p.expires_at) AS expires_at,
                  pisgate_readable_time(p.sign_horizon_at) AS sign_horizon_at, p.initiation,
                  pisgate_readable_time(p.state_used_at) AS state_used_at,
                  pisgate_readable_time(p.hop_opened_at) AS hop_opened_at,
                  pisgate_readable_time(p.created_at) AS "created_at!",
                  c.poll_failures AS "poll_failures!",
                  p.recurring_remaining, p.recurring_executions,
                  p.request->>'execution_date' AS execution_date,
                  (p.request->'recurring'->>'count')::int AS recurring_count,
                  p.request->'recurring'->>'recurrence_type' AS recurrence_type,
                  c.due_at AS "due_at!", c.next_poll_at AS "lease_until!", p.trace_parent
           FROM claimed c JOIN payments p ON p.id = c.payment_id"#,
        owner,
        lease_ms,
        limit,
    )
    .fetch_all(pool)
    .await
}

impl Claimed {
    /// The payment as its bank knows it (id and links), once initiated and only while its
    /// bank id and links hold their ledger MAC ([`crate::ledger::payments::stored_bank_ref`]).
    pub fn bank_ref(&self) -> Option<crate::bank::BankRef> {
        crate::ledger::payments::stored_bank_ref(
            self.id,
            self.bank_payment_id.as_deref(),
            &self.bank_links,
            self.bank_links_mac.as_deref(),
            self.bank_links_mac_key_id.as_deref(),
        )
    }
}

/// Hands every lease of `owner` back: those payments are due again at once.
pub async fn release(pool: &Db, owner: &str) -> Result<u64, sqlx::Error> {
    let r = sqlx::query!(
        "UPDATE payment_polls SET next_poll_at = now(), poll_owner = NULL WHERE poll_owner = $1",
        owner
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// The earliest due time of any payment still followed (claimed ones included).
pub async fn next_due(pool: &Db) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    // Read through pisgate_readable_time: one schedule set to 'infinity' in SQL (the only
    // one left) stopped the poller.
    sqlx::query_scalar!("SELECT pisgate_readable_time(min(next_poll_at)) FROM payment_polls")
        .fetch_one(pool)
        .await
}

/// How many payments are due and not claimed, and how many seconds the oldest is late.
pub async fn queue_stats(pool: &Db) -> Result<(i64, f64), sqlx::Error> {
    let r = sqlx::query!(
        r#"SELECT count(*) AS "depth!",
                  COALESCE(EXTRACT(EPOCH FROM now() - min(next_poll_at)), 0)::float8 AS "oldest!"
           FROM payment_polls WHERE next_poll_at <= now()"#
    )
    .fetch_one(pool)
    .await?;
    Ok((r.depth, r.oldest))
}

/// How many payments are scheduled further ahead than `beyond` from now, and than their own
/// late-signing horizon plus `beyond` (a deferred payment's first poll is its horizon, set
/// when the horizon setting may have been longer): further than any schedule pisgate
/// writes, so frozen (edited in SQL, or a defect). A range of the due index above the
/// reach, empty in the normal case. The horizon is the last one the payment's ledger
/// recorded ([`crate::ledger::binding::HORIZON_FIELD`]), not the row's, so that pushing the
/// row's horizon out with the schedule does not hide it; the row's only for a payment whose
/// ledger recorded none (written before it was bound).
pub async fn frozen_count(pool: &Db, beyond: Duration) -> Result<i64, sqlx::Error> {
    let millis = i64::try_from(beyond.as_millis()).unwrap_or(i64::MAX);
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM payment_polls s JOIN payments p ON p.id = s.payment_id
           WHERE s.next_poll_at > now() + $1 * interval '1 millisecond'
             AND s.next_poll_at > COALESCE(pisgate_ledger_horizon(s.payment_id, $2, $3),
                                           pisgate_readable_time(p.sign_horizon_at), now())
                                  + $1 * interval '1 millisecond'"#,
        millis as f64,
        binding::HORIZON_FIELD,
        binding::HORIZON_EVENT_KINDS as &[&str],
    )
    .fetch_one(pool)
    .await
}

/// A claimed row as it is now, locked for the caller's transaction.
#[derive(Debug)]
pub struct ClaimState {
    pub poll_owner: Option<String>,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub recurring_executions: i32,
    pub recurring_remaining: Option<i32>,
}

impl ClaimState {
    /// Whether this is still the claim `owner` made with lease end `lease_until`.
    pub fn is_claim(&self, owner: &str, lease_until: DateTime<Utc>) -> bool {
        self.poll_owner.as_deref() == Some(owner) && self.next_poll_at == Some(lease_until)
    }
}

/// Renews `owner`'s claim with lease end `lease_until` to a fresh `lease` (on the
/// database's clock) for the horizon's DELETE; the new lease end, or `None` when the claim no
/// longer holds, the payment left `awaiting_authorization`, or (`shopper_may_return`: a bank
/// whose return tells pisgate a shopper signed) a shopper came back since the claim read
/// the row: a code exchanged (`psu_key`), the state used, or a return being handled right
/// now. Checked in the statement, so that no DELETE is sent on facts a return changed
/// meanwhile (at a Berlin Group bank a DELETE may cancel even a signed payment). Renewed, the
/// bank's "deleted" is never dropped as "lease lost" (the poll is then recorded under the
/// new lease end).
pub async fn renew_claim(
    conn: &mut PgConnection,
    id: Uuid,
    owner: &str,
    lease_until: DateTime<Utc>,
    lease: std::time::Duration,
    shopper_may_return: bool,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    sqlx::query_scalar!(
        r#"UPDATE payment_polls s
           SET next_poll_at = now() + make_interval(secs => $4::bigint / 1000.0)
           FROM payments p
           WHERE s.payment_id = $1 AND s.poll_owner = $2 AND s.next_poll_at = $3
             AND p.id = s.payment_id AND p.status = 'awaiting_authorization'
             AND (NOT $5 OR (p.psu_key IS NULL AND p.state_used_at IS NULL
                             AND (p.callback_claimed_until IS NULL OR p.callback_claimed_until <= now())))
           RETURNING s.next_poll_at AS "next_poll_at!""#,
        id,
        owner,
        lease_until,
        ms,
        shopper_may_return,
    )
    .fetch_optional(conn)
    .await
}

pub async fn lock_claim(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ClaimState>, sqlx::Error> {
    sqlx::query_as!(
        ClaimState,
        r#"SELECT s.poll_owner, s.next_poll_at AS "next_poll_at?", p.recurring_executions,
                  p.recurring_remaining
           FROM payments p JOIN payment_polls s ON s.payment_id = p.id
           WHERE p.id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// Ends a claim: the next due time (ignored once the payment is final) and the count of
/// consecutive failures.
pub async fn reschedule(
    conn: &mut PgConnection,
    id: Uuid,
    next_at: Option<DateTime<Utc>>,
    failures: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"WITH p AS (SELECT status IN ('awaiting_authorization', 'authorized') AS open
                      FROM payments WHERE id = $1),
                gone AS (DELETE FROM payment_polls
                         WHERE payment_id = $1 AND ($2::timestamptz IS NULL OR NOT (SELECT open FROM p)))
           UPDATE payment_polls
           SET next_poll_at = $2, poll_owner = NULL, poll_failures = $3::integer, polls = polls + 1,
               last_polled_at = now()
           WHERE payment_id = $1 AND $2::timestamptz IS NOT NULL AND (SELECT open FROM p)"#,
        id,
        next_at,
        failures,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends a claim on a payment that is final now: its row goes, unless reads after the final
/// status are left (see [`crate::ledger::disagreements`]); then the next one is at `next_at`.
/// `was_final`: this poll was itself one of those reads (one fewer left).
pub async fn end_final_claim(
    conn: &mut PgConnection,
    id: Uuid,
    next_at: DateTime<Utc>,
    was_final: bool,
) -> Result<(), sqlx::Error> {
    let used = i32::from(was_final);
    sqlx::query!(
        r#"WITH gone AS (DELETE FROM payment_polls WHERE payment_id = $1 AND final_reads_left <= $3)
           UPDATE payment_polls
           SET next_poll_at = $2, poll_owner = NULL, poll_failures = 0, polls = polls + 1,
               last_polled_at = now(), final_reads_left = final_reads_left - $3
           WHERE payment_id = $1 AND final_reads_left > $3"#,
        id,
        next_at,
        used,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The end of a claim whose poll changed nothing: when to poll next and the failures so far.
#[derive(Debug, Clone)]
pub struct Reschedule {
    pub id: Uuid,
    /// With the owner, identifies the claim; a claim that ran out is left alone.
    pub lease_until: DateTime<Utc>,
    pub next_at: DateTime<Utc>,
    pub failures: i32,
}

/// Ends many claims of `owner` in one statement; returns the ids whose claim was still
/// theirs (the others' leases ran out and were claimed again: that claim's answer wins).
pub async fn reschedule_many(
    pool: &Db,
    owner: &str,
    batch: &[Reschedule],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|r| r.id).collect();
    let leases: Vec<DateTime<Utc>> = batch.iter().map(|r| r.lease_until).collect();
    let next: Vec<DateTime<Utc>> = batch.iter().map(|r| r.next_at).collect();
    let failures: Vec<i32> = batch.iter().map(|r| r.failures).collect();
    sqlx::query_scalar!(
        r#"UPDATE payment_polls s
           SET next_poll_at = b.next_at, poll_owner = NULL, poll_failures = b.failures,
               polls = s.polls + 1, last_polled_at = now()
           FROM unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[], $5::int[])
                AS b(id, lease_until, next_at, failures)
           WHERE s.payment_id = b.id AND s.poll_owner = $1 AND s.next_poll_at = b.lease_until
           RETURNING s.payment_id"#,
        owner,
        &ids,
        &leases,
        &next,
        &failures,
    )
    .fetch_all(pool)
    .await
}

/// A standing order's count still to come and executions seen (never lowered).
pub async fn set_recurring_progress(
    conn: &mut PgConnection,
    id: Uuid,
    remaining: i32,
    executions: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payments SET recurring_remaining = $2, recurring_executions = GREATEST(recurring_executions, $3) WHERE id = $1",
        id,
        remaining,
        executions,
    )
    .execute(conn)
    .await?;
    Ok(())
}
