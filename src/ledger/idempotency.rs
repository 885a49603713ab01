//! Idempotency keys for creating payments, as payment APIs do it.
//!
//! The key is scoped to the merchant. The record is written in the same transaction as the
//! payment row it protects, so a key can never end up with two payments. The same key with
//! the same body replays the first answer; with a different body it is refused; while the
//! first request is still running it is "in flight". Records live at least 24 hours.
//!
//! "The same body" is either the same validated request (`request_hash`: the same meaning,
//! whatever the spelling) or the same body as sent (`body_hash`, taken before validation).
//! The second is what lets an answered key be replayed whatever today's rules say of the
//! body (an execution date now in the past, a return origin since removed, a stricter rule
//! in a new release): validation never decides a replay ([`answered`]).
//!
//! A request holds its key in flight until `locked_until` (now + the in-flight bound, on the
//! database's clock): the request's bank call ends before then. Past it, or as soon as the
//! request gives the key back because the bank's answer was unknown ([`release`]), a retry
//! with the same key and body takes the key over and resumes that payment. A crashed
//! replica's key is resumable after the bound, seconds, not minutes.

use super::Db;
use crate::ledger::{binding, keys};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// The shortest time keys are kept (payment APIs promise at least a day).
pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// What a new request with a key finds.
#[derive(Debug)]
pub enum Claim {
    /// The key is new: the caller owns it and must `complete` it.
    New,
    /// The first request finished: replay its answer.
    Replay {
        payment_id: Option<Uuid>,
        status: u16,
        body: serde_json::Value,
    },
    /// The first request is still running, at most until `locked_until`.
    InFlight { retry_after: Duration },
    /// The first request died, or gave the key back without an answer to replay: the caller
    /// now holds the key and may resume this payment.
    Stale { payment_id: Uuid },
    /// The key was used with another body.
    Mismatch,
    /// The stored answer fails its ledger MAC (edited in SQL, or its MAC removed): it is
    /// never replayed.
    AnswerNotInLedger,
}

/// Tries to claim `key` for a request whose body hashes to `request_hash`, inside the
/// caller's transaction. On `Claim::New` the key was free after all: the caller rolls back
/// and creates the payment with `payments::create_with_key`.
#[allow(clippy::too_many_arguments)]
pub async fn claim(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    key: &str,
    request_hash: &[u8],
    body_hash: &[u8],
    in_flight_for: Duration,
    retention: Duration,
) -> Result<Claim, sqlx::Error> {
    // An expired record no longer protects anything.
    sqlx::query!(
        "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 AND expires_at < now()",
        merchant_id,
        key
    )
    .execute(&mut *conn)
    .await?;
    let expires_at = Utc::now()
        + chrono::Duration::from_std(retention.max(MIN_RETENTION))
            .unwrap_or(chrono::Duration::days(1));
    let in_flight_ms = i64::try_from(in_flight_for.as_millis()).unwrap_or(i64::MAX);
    let inserted = sqlx::query!(
        r#"INSERT INTO idempotency_keys (merchant_id, key, request_hash, expires_at, locked_until, body_hash)
           VALUES ($1, $2::text, $3, $4, now() + make_interval(secs => $5::bigint / 1000.0), $6)
           ON CONFLICT (merchant_id, key) DO NOTHING"#,
        merchant_id,
        key,
        request_hash,
        expires_at,
        in_flight_ms,
        body_hash,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let row = sqlx::query!(
        r#"SELECT request_hash, body_hash, payment_id, response_status, response_body,
                  response_mac, response_mac_key_id,
                  GREATEST(EXTRACT(EPOCH FROM COALESCE(locked_until, created_at + interval '60 seconds') - now()), 0)::float8
                      AS "locked_for!"
           FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 FOR UPDATE"#,
        merchant_id,
        key
    )
    .fetch_one(&mut *conn)
    .await?;
    if row.request_hash != request_hash && row.body_hash.as_deref() != Some(body_hash) {
        return Ok(Claim::Mismatch);
    }
    if let (Some(status), Some(body)) = (row.response_status, row.response_body) {
        let status = u16::try_from(status).unwrap_or(500);
        let stored = StoredMac {
            mac: row.response_mac.as_deref(),
            key_id: row.response_mac_key_id.as_deref(),
        };
        if !answer_holds(merchant_id, key, status, &body, stored) {
            return Ok(Claim::AnswerNotInLedger);
        }
        return Ok(Claim::Replay {
            payment_id: row.payment_id,
            status,
            body,
        });
    }
    match row.payment_id {
        Some(payment_id) if row.locked_for <= 0.0 => {
            // Ours now, until our own bound: a second retry finds it in flight.
            sqlx::query!(
                r#"UPDATE idempotency_keys
                   SET locked_until = now() + make_interval(secs => $3::bigint / 1000.0)
                   WHERE merchant_id = $1 AND key = $2"#,
                merchant_id,
                key,
                in_flight_ms,
            )
            .execute(&mut *conn)
            .await?;
            Ok(Claim::Stale { payment_id })
        }
        _ => Ok(Claim::InFlight {
            retry_after: Duration::from_secs_f64(row.locked_for.clamp(0.0, 3600.0))
                .max(Duration::from_secs(1)),
        }),
    }
}

/// Whether the merchant has a live record for `key` made by a request with this very body
/// (`request_hash`): such a request is answered by the record (replayed or resumed), never
/// judged again by rules that changed since. Another body under the key is not covered.
pub async fn recorded(
    pool: &Db,
    merchant_id: Uuid,
    key: &str,
    request_hash: &[u8],
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "SELECT 1 AS one FROM idempotency_keys
         WHERE merchant_id = $1 AND key = $2 AND request_hash = $3 AND expires_at >= now()",
        merchant_id,
        key,
        request_hash
    )
    .fetch_optional(pool)
    .await?
    .is_some())
}

/// What an unexpired key holds for a body that today's validation refuses.
#[derive(Debug)]
pub enum Answered {
    /// The same body as sent was answered: replay it.
    Replay {
        status: u16,
        body: serde_json::Value,
    },
    /// The same body as sent was answered, and the stored answer fails its ledger MAC: it is
    /// never replayed.
    AnswerNotInLedger,
    /// The key was used with another body, or with this one and no answer yet: still
    /// running (`in_flight`), or given back with its bank outcome unknown. `first_used_at`:
    /// when the key was first used (its request was validated on that day).
    Taken {
        same_body: bool,
        in_flight: bool,
        first_used_at: chrono::DateTime<chrono::Utc>,
    },
}

/// Looks a key up for a body that today's validation refuses, without claiming it: `None`
/// when the key is free (the refusal stands). Read only, so a refused request changes nothing.
pub async fn answered(
    pool: &Db,
    merchant_id: Uuid,
    key: &str,
    body_hash: &[u8],
) -> Result<Option<Answered>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT body_hash, response_status, response_body, created_at,
                  response_mac, response_mac_key_id,
                  coalesce(locked_until > now(), false) AS "in_flight!"
           FROM idempotency_keys
           WHERE merchant_id = $1 AND key = $2 AND expires_at >= now()"#,
        merchant_id,
        key
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| {
        let same_body = row.body_hash.as_deref() == Some(body_hash);
        match (same_body, row.response_status, row.response_body) {
            (true, Some(status), Some(body)) => {
                let status = u16::try_from(status).unwrap_or(500);
                let stored = StoredMac {
                    mac: row.response_mac.as_deref(),
                    key_id: row.response_mac_key_id.as_deref(),
                };
                if answer_holds(merchant_id, key, status, &body, stored) {
                    Answered::Replay { status, body }
                } else {
                    Answered::AnswerNotInLedger
                }
            }
            _ => Answered::Taken {
                same_body,
                in_flight: row.in_flight,
                first_used_at: row.created_at,
            },
        }
    }))
}

/// Gives the key back without an answer to replay (the bank's answer was unknown, or it
/// provably created nothing): a retry with the same key resumes the payment at once.
pub async fn release(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE idempotency_keys SET locked_until = now() WHERE merchant_id = $1 AND key = $2 AND completed_at IS NULL",
        merchant_id,
        key
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An answer's MAC as stored.
#[derive(Clone, Copy)]
pub(crate) struct StoredMac<'a> {
    pub(crate) mac: Option<&'a [u8]>,
    pub(crate) key_id: Option<&'a str>,
}

/// Why a stored answer may not be replayed, or `None` when it may: its MAC holds under
/// `ring`, or it has none because its key was used before answers were bound. The one rule
/// replays and `ledger verify` apply.
pub(crate) fn answer_problem(
    ring: Option<&keys::LedgerKeys>,
    merchant_id: Uuid,
    key: &str,
    status: u16,
    body: &serde_json::Value,
    stored: StoredMac<'_>,
) -> Option<&'static str> {
    match (stored.mac, stored.key_id, ring) {
        // Answers written before binding were sealed at that upgrade (`ledger::seal`).
        (None, _, _) | (_, None, _) => Some("it has no ledger MAC (removed, or never sealed)"),
        (_, _, None) => Some("no ledger key is installed to check its MAC"),
        (Some(mac), Some(key_id), Some(ring)) => {
            match binding::idempotency_answer_mac(ring, key_id, merchant_id, key, status, body) {
                Some(expected) if expected[..] == mac[..] => None,
                Some(_) => Some("its status or body is not what was written (edited)"),
                None if ring.is_retired(key_id) => Some(
                    "it is sealed under a retired ledger key (PISGATE__LEDGER__RETIRED_KEY_IDS; `pisgate ledger reseal` moves it)",
                ),
                None => Some(
                    "its MAC key is not in the ledger key ring (PISGATE__LEDGER__PREVIOUS_KEYS)",
                ),
            }
        }
    }
}

/// Whether a stored answer may be replayed ([`answer_problem`] under the installed ring);
/// one that may not is logged and counted, never replayed.
fn answer_holds(
    merchant_id: Uuid,
    key: &str,
    status: u16,
    body: &serde_json::Value,
    stored: StoredMac<'_>,
) -> bool {
    let ring = keys::installed();
    let Some(why) = answer_problem(ring.as_deref(), merchant_id, key, status, body, stored) else {
        return true;
    };
    tracing::error!(
        %merchant_id,
        why,
        "the stored answer of an Idempotency-Key is not replayed: run `pisgate ledger verify`"
    );
    metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
    false
}

/// The MAC of the answer a key replays, under the installed ring's current key: what
/// [`complete`] and the creation's one-statement path store with the answer.
pub fn seal_answer(
    merchant_id: Uuid,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<([u8; 32], String), sqlx::Error> {
    let ring = keys::installed().ok_or_else(|| {
        sqlx::Error::Configuration("no ledger key is installed (ledger::keys::install)".into())
    })?;
    let key_id = ring.current_id().to_owned();
    let mac = binding::idempotency_answer_mac(&ring, &key_id, merchant_id, key, status, body)
        .ok_or_else(|| {
            sqlx::Error::Configuration("the ledger ring lacks its current key".into())
        })?;
    Ok((mac, key_id))
}

/// Saves the answer to replay for this key, with its ledger MAC.
pub async fn complete(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    let (mac, key_id) = seal_answer(merchant_id, key, status, body)?;
    sqlx::query!(
        r#"UPDATE idempotency_keys
           SET response_status = $3, response_body = $4, completed_at = now(),
               response_mac = $5, response_mac_key_id = $6
           WHERE merchant_id = $1 AND key = $2"#,
        merchant_id,
        key,
        i32::from(status),
        body,
        &mac[..],
        key_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes up to `batch` expired records (oldest first); returns how many. Call it until it
/// deletes fewer than `batch`, so that no statement holds many locks for long.
pub async fn purge_expired(pool: &Db, now: DateTime<Utc>, batch: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        r#"DELETE FROM idempotency_keys
           WHERE (merchant_id, key) IN (
               SELECT merchant_id, key FROM idempotency_keys
               WHERE expires_at < $1
               ORDER BY expires_at
               LIMIT $2
               FOR UPDATE SKIP LOCKED)"#,
        now,
        batch
    )
    .execute(pool)
    .await?
    .rows_affected())
}
