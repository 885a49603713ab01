//! A merchant's API keys as the merchant manages them: create (the key shown once), list,
//! revoke, and when each was last used.
//!
//! Revoking keeps the row for the record (`revoked_at`) but overwrites the hash of the key's
//! secret and drops its ledger MACs, so no edit of the row brings the key back; it notifies
//! `pisgate_auth` in the same statement, so every replica forgets the keys it verified when
//! the revocation commits. A merchant always keeps one working key: revoking the last one
//! that is not expired is refused. `last_used_at` is written at most once a minute per key
//! (the caller throttles per replica; the statement's guard across replicas). Only the
//! SHA-256 of a key's secret is stored (see [`crate::ledger::merchants`]); nothing here
//! sees or logs a key after it is made.

use super::Db;
use crate::ledger::merchants::NewApiKey;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgConnection;
use uuid::Uuid;

/// How long an expired key is still listed.
pub const LISTED_AFTER_EXPIRY_DAYS: i32 = 30;

/// One key, without its secret. `key_id` is the public part of `pgk_<key id>_<secret>`.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key_id: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Rotated away (`pisgate merchant rotate-key`): it works for payments only, until it
    /// expires.
    pub in_grace: bool,
}

/// Adds a key to a merchant in the caller's transaction; returns it and the full key (show
/// it once).
pub async fn insert_key(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    name: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(ApiKey, SecretString), sqlx::Error> {
    let key = NewApiKey::generate();
    let hash = key.hash();
    // The row's ledger MAC: a key row added in SQL (no ledger key) authenticates nobody.
    let ring = crate::ledger::keys::installed().ok_or_else(|| {
        sqlx::Error::Configuration(
            "making an API key needs the ledger key (PISGATE__LEDGER__KEY_FILE): it seals the key's row"
                .into(),
        )
    })?;
    let mac_key_id = ring.current_id().to_owned();
    let lacks = || sqlx::Error::Configuration("the ledger ring lacks its current key".into());
    let mac =
        crate::ledger::binding::api_key_mac(&ring, &mac_key_id, key.key_id(), merchant_id, &hash)
            .ok_or_else(lacks)?;
    // Microseconds, as PostgreSQL keeps it: the MAC is over the value read back.
    let expires_at = expires_at.map(crate::ledger::binding::to_micros);
    let lifetime_mac = crate::ledger::binding::api_key_lifetime_mac(
        &ring,
        &mac_key_id,
        key.key_id(),
        expires_at,
        None,
    )
    .ok_or_else(lacks)?;
    let row = sqlx::query_as!(
        ApiKey,
        r#"INSERT INTO api_keys (key_id, merchant_id, key_hash, name, expires_at, key_mac,
                                 key_mac_key_id, lifetime_mac, lifetime_mac_key_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7)
           RETURNING key_id, name, created_at, expires_at, last_used_at,
                     rotated_away_at IS NOT NULL AS "in_grace!""#,
        key.key_id(),
        merchant_id,
        &hash[..],
        name,
        expires_at,
        &mac[..],
        mac_key_id,
        &lifetime_mac[..],
    )
    .fetch_one(conn)
    .await?;
    Ok((row, key.reveal()))
}

/// The answer to a create within the per-merchant cap.
pub enum Created {
    Done(Box<ApiKey>, SecretString),
    /// The merchant already has `limit` working keys.
    TooMany {
        limit: i64,
    },
}

/// Who changes a merchant's keys, webhook endpoints or settings through the API: the
/// merchant and the key that asked (its public id).
#[derive(Debug, Clone, Copy)]
pub struct Manager<'a> {
    pub merchant_id: Uuid,
    pub key_id: &'a str,
}

/// Why a change by a [`Manager`] was not made.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The key that asked was rotated away, revoked or expired after the request was
    /// authenticated (it was in flight when the rotation committed).
    #[error("the API key that asked was rotated away, revoked or expired meanwhile")]
    KeyNoLongerFull,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Takes the merchant's row (`FOR NO KEY UPDATE`: after a rotation, which holds it `FOR
/// UPDATE`, and after other changes of the merchant's keys or endpoints) and only then
/// checks that the key that asked still works and is not in its rotation grace. The request
/// was authenticated earlier (or from the replica's cache): a request with a leaked key that
/// was in flight when the merchant rotated it away or revoked it must not mint a key, take
/// an endpoint or change a setting once the rotation has committed.
pub async fn lock_for(conn: &mut PgConnection, by: Manager<'_>) -> Result<(), ManageError> {
    sqlx::query!(
        "SELECT id FROM merchants WHERE id = $1 FOR NO KEY UPDATE",
        by.merchant_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    // A statement of its own, after the lock: under READ COMMITTED it sees what the rotation
    // committed (a re-check inside the locking statement would read the old snapshot).
    let full = sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM api_keys
                WHERE key_id = $1 AND merchant_id = $2 AND revoked_at IS NULL
                  AND rotated_away_at IS NULL
                  AND (expires_at IS NULL OR expires_at > now())) AS "full!""#,
        by.key_id,
        by.merchant_id,
    )
    .fetch_one(&mut *conn)
    .await?;
    if full {
        Ok(())
    } else {
        Err(ManageError::KeyNoLongerFull)
    }
}

/// Creates a key unless the merchant already has `max_active` working keys.
pub async fn create(
    pool: &Db,
    by: Manager<'_>,
    name: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
    max_active: i64,
) -> Result<Created, ManageError> {
    let merchant_id = by.merchant_id;
    let mut tx = pool.begin().await?;
    lock_for(&mut tx, by).await?;
    if lock_and_count_active(&mut tx, merchant_id, None, false).await? >= max_active {
        return Ok(Created::TooMany { limit: max_active });
    }
    let (key, secret) = insert_key(&mut tx, merchant_id, name, expires_at).await?;
    tx.commit().await?;
    Ok(Created::Done(Box::new(key), secret))
}

/// Serialises key changes of one merchant (its row) and counts its working keys other than
/// `except`; with `full_only`, only those not rotated away (in their grace a key may not
/// manage keys, so it cannot stand in for the merchant's last full one).
async fn lock_and_count_active(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    except: Option<&str>,
    full_only: bool,
) -> Result<i64, sqlx::Error> {
    sqlx::query!(
        "SELECT id FROM merchants WHERE id = $1 FOR NO KEY UPDATE",
        merchant_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM api_keys
           WHERE merchant_id = $1 AND revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > now())
             AND key_id IS DISTINCT FROM $2
             AND (NOT $3 OR rotated_away_at IS NULL)"#,
        merchant_id,
        except,
        full_only,
    )
    .fetch_one(&mut *conn)
    .await
}

/// A merchant's keys that are not revoked (expired ones for
/// [`LISTED_AFTER_EXPIRY_DAYS`]), newest first.
pub async fn list(pool: &Db, merchant_id: Uuid) -> Result<Vec<ApiKey>, sqlx::Error> {
    sqlx::query_as!(
        ApiKey,
        r#"SELECT key_id, name, created_at, expires_at, last_used_at,
                  rotated_away_at IS NOT NULL AS "in_grace!"
           FROM api_keys
           WHERE merchant_id = $1 AND revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > now() - make_interval(days => $2))
           ORDER BY created_at DESC, key_id DESC"#,
        merchant_id,
        LISTED_AFTER_EXPIRY_DAYS,
    )
    .fetch_all(pool)
    .await
}

/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    Revoked,
    /// No such key of this merchant (or it is revoked already).
    NotFound,
    /// It is the merchant's last working full key (keys in their rotation grace, which
    /// cannot manage keys, do not count).
    LastActiveKey,
}

/// Revokes a key of the merchant, unless it is the last working full one (a key in its
/// grace left alone could not make a new one). Every replica forgets
/// the keys it verified when this commits (`pisgate_auth`, in the same statement).
pub async fn revoke(pool: &Db, by: Manager<'_>, key_id: &str) -> Result<Revoke, ManageError> {
    let merchant_id = by.merchant_id;
    let mut tx = pool.begin().await?;
    lock_for(&mut tx, by).await?;
    let others = lock_and_count_active(&mut tx, merchant_id, Some(key_id), true).await?;
    // Whether it is a working full key: revoking one in its grace (or expired) leaves the
    // merchant's full keys as they are.
    let active = sqlx::query_scalar!(
        r#"SELECT ((expires_at IS NULL OR expires_at > now()) AND rotated_away_at IS NULL)
                      AS "active!"
           FROM api_keys
           WHERE key_id = $1 AND merchant_id = $2 AND revoked_at IS NULL"#,
        key_id,
        merchant_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    match active {
        None => return Ok(Revoke::NotFound),
        Some(true) if others == 0 => return Ok(Revoke::LastActiveKey),
        Some(_) => {}
    }
    // The secret's hash is overwritten (and the MACs go): clearing `revoked_at` in SQL
    // later gives back no key anybody holds.
    sqlx::query!(
        r#"WITH n AS (SELECT pg_notify('pisgate_auth', '') AS sent)
           UPDATE api_keys
              SET revoked_at = now(),
                  key_hash = sha256(convert_to(gen_random_uuid()::text, 'UTF8')),
                  key_mac = NULL, key_mac_key_id = NULL,
                  lifetime_mac = NULL, lifetime_mac_key_id = NULL
           FROM n
           WHERE key_id = $1 AND merchant_id = $2"#,
        key_id,
        merchant_id,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Revoke::Revoked)
}

/// Records that a key was used now, unless that was recorded less than a minute ago (by
/// any replica): such an update writes nothing.
pub async fn touch(pool: &Db, key_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE api_keys SET last_used_at = now()
           WHERE key_id = $1
             AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"#,
        key_id,
    )
    .execute(pool)
    .await?;
    Ok(())
}
