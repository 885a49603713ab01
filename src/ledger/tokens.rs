//! Shoppers' bank tokens: exactly one live token per (bank, shopper key).
//!
//! Nordea revokes a shopper's older tokens whenever a new code is exchanged, so the token to
//! keep is the one the bank issued last. Three mechanisms make sure it is:
//!
//! 1. [`lease_psu`] takes a lease row for the shopper (`psu_locks`). The caller holds it
//!    across the bank call for the code exchange or refresh, so exchanges for one shopper key
//!    run one at a time, in the order the bank sees them. No database connection and no
//!    transaction is held across that call (a lease is a row, not a session lock): the pool
//!    is never held while waiting for the bank, and a transaction pooler sees no session
//!    state. A holder that dies leaves a lease that simply runs out; a lease must outlast
//!    the bank call it covers (callers bound the call below it).
//! 2. [`next_issue_seq`] is taken under that lease *before* calling the bank, and [`store`]
//!    only replaces a row whose token is older. So even if a lease ran out mid-exchange, an
//!    exchange that finishes late can never overwrite a newer token. When the bank's answer
//!    names the shopper (a key other than the one leased), the exchange takes that key's
//!    lease too and a fresh number under it: a refresh that succeeded under that key was
//!    issued before this exchange (the exchange revoked its refresh token), so this token
//!    must come after it.
//! 3. Where the bank's answer carries its issue time (`issued_at`, the id_token's `iat`),
//!    that time orders the tokens instead of our sequence. It is the only order that holds
//!    across lock keys: two merchants' exchanges for one bank shopper take different keys
//!    (each merchant's own shopper id) until the bank's answer names the shopper, so they run
//!    side by side and their answers may come back in any order.
//!
//! When the bank's answer names no shopper, a token is stored under the merchant's shopper
//! id (or the payment) and serves only those payments. If the bank has since revoked it
//! because the same person signed elsewhere, the bank answers 401 on its next use: it is
//! marked dead (superseded), calls that need it answer `no_shopper_token`, and status
//! polling, which needs no token, goes on.
//!
//! Tokens are encrypted with [`TokenCipher`] (bound to bank, shopper key, field and issue
//! sequence) and are `SecretString` everywhere. This module must never log a token, nor the
//! raw shopper key (it may be a merchant's shopper id): spans carry [`psu_log_id`], a short
//! hash. A refresh that answers without a new refresh token must store the old one again;
//! a new pair is stored before the old refresh token is forgotten.

use super::Db;
use crate::ledger::crypto::{CryptoError, TokenAad, TokenCipher, TokenField};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("shopper token cannot be sealed or opened: {0}")]
    Crypto(#[from] CryptoError),
}

/// When a token the bank says lives `expires_in` expires, counted from now. An absurd
/// `expires_in` is capped at a day rather than trusted.
pub fn expires_at(expires_in: Duration) -> DateTime<Utc> {
    let lifetime = expires_in.min(Duration::from_secs(86_400));
    Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or_default()
}

/// A short, stable, non-reversible-at-a-glance id of a shopper key for logs and spans
/// (12 hex digits of SHA-256; correlation only, not a secret-grade hash).
pub fn psu_log_id(bank: &str, psu_key: &str) -> String {
    let digest = Sha256::digest(format!("psu-log:{bank}:{psu_key}").as_bytes());
    hex::encode(&digest[..6])
}

/// A shopper's lease (see the module docs): held until [`PsuLease::release`] or until it runs
/// out. Dropping it without release gives it back in the background.
#[must_use = "the lease is held until release() or until it runs out"]
pub struct PsuLease {
    pool: Db,
    bank: String,
    keys: Vec<String>,
    holder: uuid::Uuid,
    released: bool,
}

impl std::fmt::Debug for PsuLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PsuLease")
            .field(
                "psu",
                &self
                    .keys
                    .iter()
                    .map(|k| psu_log_id(&self.bank, k))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Tries once to take (or renew, for the same holder) the lease of one shopper key.
async fn try_lease(
    pool: &Db,
    bank: &str,
    psu_key: &str,
    holder: uuid::Uuid,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let taken = sqlx::query!(
        r#"INSERT INTO psu_locks (bank, psu_key, holder, locked_until)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4::bigint / 1000.0))
           ON CONFLICT (bank, psu_key) DO UPDATE
               SET holder = EXCLUDED.holder, locked_until = EXCLUDED.locked_until
               WHERE psu_locks.locked_until < now() OR psu_locks.holder = EXCLUDED.holder"#,
        bank,
        psu_key,
        holder,
        lease_ms,
    )
    .execute(pool)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// Waits up to `wait` for a shopper key's lease. Returns `None` if someone else still held it
/// then.
async fn wait_for_lease(
    pool: &Db,
    bank: &str,
    psu_key: &str,
    holder: uuid::Uuid,
    lease: Duration,
    wait: Duration,
) -> Result<bool, sqlx::Error> {
    let until = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(10);
    loop {
        if try_lease(pool, bank, psu_key, holder, lease).await? {
            return Ok(true);
        }
        if tokio::time::Instant::now() + pause > until {
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Takes the lease of a shopper key for `lease`, waiting up to `wait` for another holder.
#[tracing::instrument(skip_all, fields(psu = %psu_log_id(bank, psu_key), bank = %bank))]
pub async fn lease_psu(
    pool: &Db,
    bank: &str,
    psu_key: &str,
    lease: Duration,
    wait: Duration,
) -> Result<Option<PsuLease>, sqlx::Error> {
    let holder = uuid::Uuid::new_v4();
    if !wait_for_lease(pool, bank, psu_key, holder, lease, wait).await? {
        return Ok(None);
    }
    tracing::debug!("shopper lease taken");
    Ok(Some(PsuLease {
        pool: pool.clone(),
        bank: bank.to_owned(),
        keys: vec![psu_key.to_owned()],
        holder,
        released: false,
    }))
}

impl PsuLease {
    /// Also takes the lease of another key of the same shopper (the key the bank's answer
    /// named). Keys are only ever added in the order merchant key → bank key, so two holders
    /// never wait for each other in a circle.
    pub async fn add_key(
        &mut self,
        psu_key: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<bool, sqlx::Error> {
        if self.keys.iter().any(|k| k == psu_key) {
            return Ok(true);
        }
        let taken =
            wait_for_lease(&self.pool, &self.bank, psu_key, self.holder, lease, wait).await?;
        if taken {
            self.keys.push(psu_key.to_owned());
        }
        Ok(taken)
    }

    /// Renews every key of the lease to `lease` from now, while it is still this holder's
    /// or has run out unclaimed. Returns whether all were renewed (false: another holder took
    /// one after it ran out).
    pub async fn renew(&self, lease: Duration) -> Result<bool, sqlx::Error> {
        let mut all = true;
        for key in &self.keys {
            all &= try_lease(&self.pool, &self.bank, key, self.holder, lease).await?;
        }
        Ok(all)
    }

    /// Gives every key of the lease back.
    pub async fn release(mut self) {
        self.released = true;
        if let Err(e) = release_keys(&self.pool, &self.bank, &self.keys, self.holder).await {
            tracing::warn!(error = %e, "cannot give a shopper lease back; it runs out by itself");
        }
    }
}

async fn release_keys(
    pool: &Db,
    bank: &str,
    keys: &[String],
    holder: uuid::Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM psu_locks WHERE bank = $1 AND psu_key = ANY($2) AND holder = $3",
        bank,
        keys,
        holder
    )
    .execute(pool)
    .await?;
    Ok(())
}

impl Drop for PsuLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (pool, bank, keys, holder) = (
                self.pool.clone(),
                self.bank.clone(),
                std::mem::take(&mut self.keys),
                self.holder,
            );
            rt.spawn(async move {
                let _ = release_keys(&pool, &bank, &keys, holder).await;
            });
        }
    }
}

/// The next token issue number. Take it under the shopper's lease, before calling the bank.
#[tracing::instrument(skip_all)]
pub async fn next_issue_seq(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT nextval('psu_token_issue_seq') AS "seq!""#)
        .fetch_one(conn)
        .await
}

/// Stores a token pair unless a newer token is already stored: newer by the bank's issue
/// time when both have one and they differ, else by our issue sequence. The stored token is live again.
/// Without a `refresh_token` (the bank's answer had none: it keeps the one it had) the
/// stored refresh token is kept, sealed again for the new issue sequence, with the new
/// access token. Returns whether it was stored.
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(skip_all, fields(psu = %psu_log_id(bank, psu_key), bank = %bank, issue_seq, stored))]
pub async fn store(
    conn: &mut PgConnection,
    cipher: &TokenCipher,
    bank: &str,
    psu_key: &str,
    issue_seq: i64,
    issued_at: Option<DateTime<Utc>>,
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
    let kept;
    let refresh_token = match refresh_token {
        Some(t) => Some(t),
        None => {
            kept = stored_refresh_token(&mut *conn, cipher, bank, psu_key).await?;
            kept.as_ref()
        }
    };
    let refresh = refresh_token
        .map(|t| cipher.encrypt(t, &aad(TokenField::Refresh)))
        .transpose()?;
    let result = sqlx::query!(
        r#"INSERT INTO psu_tokens
               (bank, psu_key, issue_seq, key_id, access_token, refresh_token,
                access_expires_at, status, dead_reason, obtained_at, issued_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'live', NULL, now(), $8)
           ON CONFLICT (bank, psu_key) DO UPDATE SET
               issue_seq = EXCLUDED.issue_seq,
               issued_at = EXCLUDED.issued_at,
               key_id = EXCLUDED.key_id,
               access_token = EXCLUDED.access_token,
               refresh_token = EXCLUDED.refresh_token,
               access_expires_at = EXCLUDED.access_expires_at,
               status = 'live',
               dead_reason = NULL,
               obtained_at = EXCLUDED.obtained_at,
               refresh_failures = 0,
               refresh_not_before = NULL
           WHERE CASE WHEN psu_tokens.issued_at IS NOT NULL AND EXCLUDED.issued_at IS NOT NULL
                           AND psu_tokens.issued_at <> EXCLUDED.issued_at
                      THEN psu_tokens.issued_at < EXCLUDED.issued_at
                      ELSE psu_tokens.issue_seq < EXCLUDED.issue_seq END"#,
        bank,
        psu_key,
        issue_seq,
        access.key_id,
        access.bytes,
        refresh.as_ref().map(|r| r.bytes.as_slice()),
        access_expires_at,
        issued_at,
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

/// The refresh token stored for a shopper (locking its row for the caller's transaction), to
/// be kept when the bank's new answer brings none. A dead token's was wiped: `None`.
async fn stored_refresh_token(
    conn: &mut PgConnection,
    cipher: &TokenCipher,
    bank: &str,
    psu_key: &str,
) -> Result<Option<SecretString>, TokenError> {
    let row = sqlx::query!(
        r#"SELECT issue_seq, key_id, refresh_token FROM psu_tokens
           WHERE bank = $1 AND psu_key = $2 AND status = 'live' FOR UPDATE"#,
        bank,
        psu_key
    )
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let Some(sealed) = row.refresh_token else {
        return Ok(None);
    };
    let aad = TokenAad {
        bank,
        psu_key,
        field: TokenField::Refresh,
        issue_seq: row.issue_seq,
    };
    Ok(Some(cipher.decrypt(&row.key_id, &sealed, &aad)?))
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
    pool: &Db,
    cipher: &TokenCipher,
    bank: &str,
    psu_key: &str,
) -> Result<Option<LiveToken>, TokenError> {
    let Some(row) = sqlx::query!(
        // Clamped like the refresher's read of the due tokens (`due_for_refresh`).
        r#"SELECT issue_seq, key_id, access_token, refresh_token,
                  pisgate_readable_time(access_expires_at) AS "access_expires_at!"
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

/// The live token of the shopper a payment is for, as its merchant knows the shopper: the
/// token the latest earlier payment of the same merchant and `psu_id` was exchanged into
/// (a returning shopper). Never another shopper's token: a bank call made for one shopper's
/// payment carries only that shopper's consent. `None` when the shopper never came back.
pub async fn for_merchant_shopper(
    pool: &Db,
    cipher: &TokenCipher,
    bank: &str,
    merchant_id: uuid::Uuid,
    psu_id: &str,
) -> Result<Option<(String, LiveToken)>, TokenError> {
    let Some(psu_key) = sqlx::query_scalar!(
        r#"SELECT t.psu_key FROM payments p
           JOIN psu_tokens t ON t.bank = p.bank AND t.psu_key = p.psu_key
           WHERE p.merchant_id = $1 AND p.psu_id = $2 AND p.bank = $3 AND p.psu_key IS NOT NULL
             AND t.status = 'live' AND t.access_expires_at > now() + interval '5 seconds'
           ORDER BY t.issue_seq DESC LIMIT 1"#,
        merchant_id,
        psu_id,
        bank,
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let token = load(pool, cipher, bank, &psu_key).await?;
    Ok(token.map(|t| (psu_key, t)))
}

/// Marks the shopper's token dead (e.g. the bank answered 401), only if it is still the one
/// with this issue sequence: a newer token is never killed. The ciphertexts are wiped, as a
/// dead token is never used again. Returns whether a token was marked.
#[tracing::instrument(skip_all, fields(psu = %psu_log_id(bank, psu_key), bank = %bank, issue_seq))]
pub async fn mark_dead(
    pool: &Db,
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
    pool: &Db,
    within: Duration,
    limit: i64,
    in_flight_only: bool,
    skip_banks: &[String],
) -> Result<Vec<DueToken>, sqlx::Error> {
    let within = chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
    let cutoff = Utc::now()
        .checked_add_signed(within)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let due = sqlx::query_as!(
        DueToken,
        // The expiry read clamped (`pisgate_readable_time`): one set to '-infinity' in SQL
        // made sqlx panic here and stopped the refresher of every replica in turn.
        r#"SELECT t.bank, t.psu_key, t.issue_seq,
                  pisgate_readable_time(t.access_expires_at) AS "access_expires_at!"
           FROM psu_tokens t
           WHERE t.status = 'live' AND t.refresh_token IS NOT NULL AND t.access_expires_at <= $1
             AND (t.refresh_not_before IS NULL OR t.refresh_not_before <= now())
             AND t.bank <> ALL($4)
             -- Shoppers leased right now (an exchange, another replica's refresher) are
             -- someone else's this round.
             AND NOT EXISTS (
                     SELECT 1 FROM psu_locks l
                     WHERE l.bank = t.bank AND l.psu_key = t.psu_key AND l.locked_until > now())
             AND (NOT $3 OR EXISTS (
                     SELECT 1 FROM payments p
                     WHERE p.psu_key = t.psu_key AND p.bank = t.bank
                       AND p.status IN ('awaiting_authorization', 'authorized')))
           ORDER BY t.access_expires_at, t.bank, t.psu_key
           LIMIT $2"#,
        cutoff,
        limit,
        in_flight_only,
        skip_banks,
    )
    .fetch_all(pool)
    .await?;
    tracing::Span::current().record("found", due.len());
    Ok(due)
}

/// Records a failed refresh of the token issued as `issue_seq`: it is not due again until a
/// backoff of `base` doubled per consecutive failure (at most `max`) has passed, on the
/// database's clock. A token replaced meanwhile is left alone. Returns the failures so far.
pub async fn refresh_failed(
    pool: &Db,
    bank: &str,
    psu_key: &str,
    issue_seq: i64,
    base: Duration,
    max: Duration,
) -> Result<Option<i32>, sqlx::Error> {
    let base_ms = i64::try_from(base.as_millis()).unwrap_or(i64::MAX);
    let max_ms = i64::try_from(max.as_millis()).unwrap_or(i64::MAX);
    sqlx::query_scalar!(
        r#"UPDATE psu_tokens
           SET refresh_failures = refresh_failures + 1,
               refresh_not_before = now() + make_interval(
                   secs => LEAST($5::bigint::float8,
                                 $4::bigint::float8 * power(2, LEAST(refresh_failures, 30))) / 1000.0)
           WHERE bank = $1 AND psu_key = $2 AND issue_seq = $3
           RETURNING refresh_failures"#,
        bank,
        psu_key,
        issue_seq,
        base_ms,
        max_ms,
    )
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ids_are_stable_and_hide_the_shopper() {
        assert_eq!(psu_log_id("nordea", "a"), psu_log_id("nordea", "a"));
        assert_ne!(psu_log_id("nordea", "a"), psu_log_id("nordea", "b"));
        let id = psu_log_id("nordea", "shopper@example.com");
        assert_eq!(id.len(), 12);
        assert!(!id.contains("shopper"));
    }
}
