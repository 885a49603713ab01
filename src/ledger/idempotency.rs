//! Idempotency keys for creating payments, as payment APIs do it.
//!
//! The key is scoped to the merchant. The record is written in the same transaction as the
//! payment row it protects, so a key can never end up with two payments. The same key with
//! the same body replays the first answer; with a different body it is refused; while the
//! first request is still running it is "in flight". Records live at least 24 hours.
//!
//! A record left in flight by a replica that died mid-request becomes "stale" after a bound
//! and may be taken over by a retry with the same key and body, which resumes that payment.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// How long keys are kept.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

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
    /// The first request is still running.
    InFlight,
    /// The first request died before answering; the caller may resume this payment.
    Stale { payment_id: Uuid },
    /// The key was used with another body.
    Mismatch,
}

/// Tries to claim `key` for a request whose body hashes to `request_hash`, inside the
/// caller's transaction. On `Claim::New` the caller inserts its payment and calls
/// [`attach_payment`] in the same transaction.
pub async fn claim(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    key: &str,
    request_hash: &[u8],
    stale_after: Duration,
) -> Result<Claim, sqlx::Error> {
    // An expired record no longer protects anything.
    sqlx::query!(
        "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 AND expires_at < now()",
        merchant_id,
        key
    )
    .execute(&mut *conn)
    .await?;
    let expires_at = Utc::now() + chrono::Duration::from_std(RETENTION).expect("fits");
    let inserted = sqlx::query!(
        r#"INSERT INTO idempotency_keys (merchant_id, key, request_hash, expires_at)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (merchant_id, key) DO NOTHING"#,
        merchant_id,
        key,
        request_hash,
        expires_at
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let row = sqlx::query!(
        r#"SELECT request_hash, payment_id, response_status, response_body, created_at
           FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 FOR UPDATE"#,
        merchant_id,
        key
    )
    .fetch_one(&mut *conn)
    .await?;
    if row.request_hash != request_hash {
        return Ok(Claim::Mismatch);
    }
    if let (Some(status), Some(body)) = (row.response_status, row.response_body) {
        return Ok(Claim::Replay {
            payment_id: row.payment_id,
            status: u16::try_from(status).unwrap_or(500),
            body,
        });
    }
    let age = Utc::now() - row.created_at;
    match row.payment_id {
        Some(payment_id) if age.to_std().unwrap_or_default() > stale_after => {
            // Restart the clock so that two retries do not both take it over.
            sqlx::query!(
                "UPDATE idempotency_keys SET created_at = now() WHERE merchant_id = $1 AND key = $2",
                merchant_id,
                key
            )
            .execute(&mut *conn)
            .await?;
            Ok(Claim::Stale { payment_id })
        }
        _ => Ok(Claim::InFlight),
    }
}

pub async fn attach_payment(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    key: &str,
    payment_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE idempotency_keys SET payment_id = $3 WHERE merchant_id = $1 AND key = $2",
        merchant_id,
        key,
        payment_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Saves the answer to replay for this key.
pub async fn complete(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE idempotency_keys
           SET response_status = $3, response_body = $4, completed_at = now()
           WHERE merchant_id = $1 AND key = $2"#,
        merchant_id,
        key,
        i32::from(status),
        body
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes expired records; returns how many.
pub async fn purge_expired(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query!("DELETE FROM idempotency_keys WHERE expires_at < $1", now)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
