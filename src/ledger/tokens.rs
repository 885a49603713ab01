//! Shoppers' bank tokens: exactly one live token per (bank, shopper key).
//!
//! Nordea revokes a shopper's older tokens whenever a new code is exchanged, so the token to
//! keep is the one the bank issued last. Two mechanisms make sure it is:
//!
//! 1. [`lock_psu`] takes a session-level Postgres advisory lock for the shopper on its own
//!    pooled connection. The caller holds it across the bank call for the code exchange or
//!    refresh, so exchanges for one shopper run one at a time, in the order the bank sees
//!    them. This is the one lock pisgate holds across a network call; it must never be held
//!    for anything else (no polling, no webhook, no other shopper), and never inside a
//!    transaction.
//! 2. [`next_issue_seq`] is taken under that lock *before* calling the bank, and [`store`]
//!    only replaces a row whose `issue_seq` is lower. So even without the lock (a replica
//!    whose lock connection died mid-exchange), an exchange that finishes late can never
//!    overwrite a newer token.
//!
//! Usage for an exchange or refresh:
//!
//! ```text
//! let mut lock = lock_psu(&pool, bank, psu_key).await?;
//! let seq = next_issue_seq(lock.connection()).await?;
//! let answer = bank.exchange_code(...).await;           // the lock is held here, on purpose
//! store(lock.connection(), &cipher, bank, psu_key, seq, &access, refresh.as_ref(), expires).await?;
//! lock.release().await;
//! ```
//!
//! Tokens are encrypted with [`TokenCipher`] (bound to bank, shopper key, field and issue
//! sequence) and are `SecretString` everywhere. This module must never log a token, nor the
//! raw shopper key (it may be a merchant's shopper id): spans carry [`psu_log_id`], a short
//! hash. A refresh that answers without a new refresh token must store the old one again;
//! a new pair is stored before the old refresh token is forgotten.

use crate::ledger::crypto::{CryptoError, TokenAad, TokenCipher, TokenField};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("shopper token cannot be sealed or opened: {0}")]
    Crypto(#[from] CryptoError),
}

/// A short, stable, non-reversible-at-a-glance id of a shopper key for logs and spans
/// (12 hex digits of SHA-256; correlation only, not a secret-grade hash).
pub fn psu_log_id(bank: &str, psu_key: &str) -> String {
    let digest = Sha256::digest(format!("psu-log:{bank}:{psu_key}").as_bytes());
    hex::encode(&digest[..6])
}

/// The advisory lock key: the first 8 bytes of SHA-256("psu-token:" + bank + ":" + psu_key).
/// A collision only makes two shoppers wait for each other.
fn advisory_key(bank: &str, psu_key: &str) -> i64 {
    let digest = Sha256::digest(format!("psu-token:{bank}:{psu_key}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Holds a shopper's advisory lock on a dedicated pooled connection.
///
/// Call [`PsuLock::release`]. A guard that is dropped instead (an error, a panic, a cancelled
/// future) detaches its connection from the pool and closes it, which makes Postgres release
/// the lock; a connection that may still hold the lock never goes back to the pool.
#[must_use = "the lock is held until release() or drop"]
pub struct PsuLock {
    conn: Option<PoolConnection<Postgres>>,
    key: i64,
    psu: String,
}

impl std::fmt::Debug for PsuLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PsuLock")
            .field("psu", &self.psu)
            .field("held", &self.conn.is_some())
            .finish()
    }
}

/// Waits for the shopper's lock. Cancel-safe: wrap it in `tokio::time::timeout` to bound the
/// wait; a cancelled wait closes its connection, so the lock is never taken behind your back.
#[tracing::instrument(skip_all, fields(psu = %psu_log_id(bank, psu_key), bank = %bank))]
pub async fn lock_psu(pool: &PgPool, bank: &str, psu_key: &str) -> Result<PsuLock, sqlx::Error> {
    let key = advisory_key(bank, psu_key);
    // The guard exists before the lock is requested, so a cancelled or failed wait closes
    // the connection instead of returning it to the pool with a lock request pending.
    let mut guard = PsuLock {
        conn: Some(pool.acquire().await?),
        key,
        psu: psu_log_id(bank, psu_key),
    };
    sqlx::query!(r#"SELECT pg_advisory_lock($1) AS "locked: ()""#, key)
        .fetch_one(guard.connection())
        .await?;
    tracing::debug!("shopper token lock taken");
    Ok(guard)
}

impl PsuLock {
    /// The connection holding the lock; use it for [`next_issue_seq`] and [`store`]. Never
    /// open a transaction on it that lives across the bank call.
    pub fn connection(&mut self) -> &mut PgConnection {
        self.conn
            .as_deref_mut()
            .expect("a live PsuLock has a connection")
    }

    /// Unlocks and gives the connection back to the pool.
    #[tracing::instrument(skip_all, fields(psu = %self.psu))]
    pub async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked = sqlx::query_scalar!(r#"SELECT pg_advisory_unlock($1) AS "u!""#, self.key)
            .fetch_one(&mut *conn)
            .await;
        match unlocked {
            Ok(true) => tracing::debug!("shopper token lock released"),
            Ok(false) => {
                tracing::warn!(
                    "shopper token lock was not held at release; closing its connection"
                );
                close_detached(conn);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the shopper token lock; closing its connection");
                close_detached(conn);
            }
        }
    }
}

impl Drop for PsuLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            tracing::debug!(psu = %self.psu, "shopper token lock dropped without release; closing its connection");
            close_detached(conn);
        }
    }
}

/// Takes a connection out of the pool for good and closes it; closing the session releases
/// every advisory lock it holds.
fn close_detached(conn: PoolConnection<Postgres>) {
    let conn = conn.detach();
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                let _ = sqlx::Connection::close(conn).await;
            });
        }
        // No runtime: dropping the socket ends the session all the same.
        Err(_) => drop(conn),
    }
}

/// The next token issue number. Take it under the shopper's lock, before calling the bank.
#[tracing::instrument(skip_all)]
pub async fn next_issue_seq(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT nextval('psu_token_issue_seq') AS "seq!""#)
        .fetch_one(conn)
        .await
}

/// Stores a token pair unless a token with a higher (newer) issue sequence is already
/// stored. The stored token is live again. Returns whether it was stored.
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(skip_all, fields(psu = %psu_log_id(bank, psu_key), bank = %bank, issue_seq, stored))]
pub async fn store(
    conn: &mut PgConnection,
    cipher: &TokenCipher,
    bank: &str,
    psu_key: &str,
    issue_seq: i64,
    access_token: &SecretString,
    refresh_token: Option<&SecretString>,
    access_expires_at: DateTime<Utc>,
) -> Result<bool, TokenError> {
    let aad = |field| TokenAad {
        bank,
        psu_key,
        field,
        issue_seq,
    };
    let access = cipher.encrypt(access_token, &aad(TokenField::Access))?;
    let refresh = refresh_token
        .map(|t| cipher.encrypt(t, &aad(TokenField::Refresh)))
        .transpose()?;
    let result = sqlx::query!(
        r#"INSERT INTO psu_tokens
               (bank, psu_key, issue_seq, key_id, access_token, refresh_token,
                access_expires_at, status, dead_reason, obtained_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'live', NULL, now())
           ON CONFLICT (bank, psu_key) DO UPDATE SET
               issue_seq = EXCLUDED.issue_seq,
               key_id = EXCLUDED.key_id,
               access_token = EXCLUDED.access_token,
               refresh_token = EXCLUDED.refresh_token,
               access_expires_at = EXCLUDED.access_expires_at,
               status = 'live',
               dead_reason = NULL,
               obtained_at = EXCLUDED.obtained_at
           WHERE psu_tokens.issue_seq < EXCLUDED.issue_seq"#,
        bank,
        psu_key,
        issue_seq,
        access.key_id,
        access.bytes,
        refresh.as_ref().map(|r| r.bytes.as_slice()),
        access_expires_at,
    )
    .execute(conn)
    .await?;
    let stored = result.rows_affected() == 1;
    let span = tracing::Span::current();
    span.record("issue_seq", issue_seq);
    span.record("stored", stored);
    if !stored {
        tracing::info!("a newer shopper token is already stored; this one is discarded");
    }
    Ok(stored)
}

/// The live token of a shopper, decrypted.
#[derive(Debug)]
pub struct LiveToken {
    pub issue_seq: i64,
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub access_expires_at: DateTime<Utc>,
}

/// The shopper's live token, if any (expired or not: check `access_expires_at`).
#[tracing::instrument(skip_all, fields(psu = %psu_log_id(bank, psu_key), bank = %bank))]
pub async fn load(
    pool: &PgPool,
    cipher: &TokenCipher,
    bank: &str,
    psu_key: &str,
) -> Result<Option<LiveToken>, TokenError> {
    let Some(row) = sqlx::query!(
        r#"SELECT issue_seq, key_id, access_token, refresh_token, access_expires_at
           FROM psu_tokens
           WHERE bank = $1 AND psu_key = $2 AND status = 'live'"#,
        bank,
        psu_key
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let aad = |field| TokenAad {
        bank,
        psu_key,
        field,
        issue_seq: row.issue_seq,
    };
    let access_token = cipher.decrypt(&row.key_id, &row.access_token, &aad(TokenField::Access))?;
    let refresh_token = row
        .refresh_token
        .as_deref()
        .map(|b| cipher.decrypt(&row.key_id, b, &aad(TokenField::Refresh)))
        .transpose()?;
    Ok(Some(LiveToken {
        issue_seq: row.issue_seq,
        access_token,
        refresh_token,
        access_expires_at: row.access_expires_at,
    }))
}

/// Marks the shopper's token dead (e.g. the bank answered 401), only if it is still the one
/// with this issue sequence: a newer token is never killed. The ciphertexts are wiped, as a
/// dead token is never used again. Returns whether a token was marked.
#[tracing::instrument(skip_all, fields(psu = %psu_log_id(bank, psu_key), bank = %bank, issue_seq))]
pub async fn mark_dead(
    pool: &PgPool,
    bank: &str,
    psu_key: &str,
    issue_seq: i64,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        r#"UPDATE psu_tokens
           SET status = 'dead', dead_reason = $4,
               access_token = '\x'::bytea, refresh_token = NULL
           WHERE bank = $1 AND psu_key = $2 AND issue_seq = $3 AND status = 'live'"#,
        bank,
        psu_key,
        issue_seq,
        reason
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A live token whose access token expires soon and that has a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueToken {
    pub bank: String,
    pub psu_key: String,
    pub issue_seq: i64,
    pub access_expires_at: DateTime<Utc>,
}

/// Live, refreshable tokens whose access token expires within `within` (or already has),
/// soonest first. With `in_flight_only`, only those of shoppers who still have a payment
/// awaiting authorization or authorized (the refresher's question).
#[tracing::instrument(skip_all, fields(within_s = within.as_secs(), limit = limit, found))]
pub async fn due_for_refresh(
    pool: &PgPool,
    within: Duration,
    limit: i64,
    in_flight_only: bool,
) -> Result<Vec<DueToken>, sqlx::Error> {
    let within = chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
    let cutoff = Utc::now()
        .checked_add_signed(within)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let due = sqlx::query_as!(
        DueToken,
        r#"SELECT t.bank, t.psu_key, t.issue_seq, t.access_expires_at
           FROM psu_tokens t
           WHERE t.status = 'live' AND t.refresh_token IS NOT NULL AND t.access_expires_at <= $1
             AND (NOT $3 OR EXISTS (
                     SELECT 1 FROM payments p
                     WHERE p.psu_key = t.psu_key AND p.bank = t.bank
                       AND p.status IN ('awaiting_authorization', 'authorized')))
           ORDER BY t.access_expires_at, t.bank, t.psu_key
           LIMIT $2"#,
        cutoff,
        limit,
        in_flight_only,
    )
    .fetch_all(pool)
    .await?;
    tracing::Span::current().record("found", due.len());
    Ok(due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_and_log_ids_are_stable_and_differ_per_shopper() {
        assert_eq!(advisory_key("nordea", "a"), advisory_key("nordea", "a"));
        assert_ne!(advisory_key("nordea", "a"), advisory_key("nordea", "b"));
        assert_ne!(advisory_key("nordea", "a"), advisory_key("other", "a"));
        let id = psu_log_id("nordea", "shopper@example.com");
        assert_eq!(id.len(), 12);
        assert!(!id.contains("shopper"));
    }
}
