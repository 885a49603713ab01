//! Merchants and their API keys.
//!
//! A key looks like `pgk_<key id>_<secret>`. The key id is public and finds the row in
//! `api_keys`; only SHA-256 of the secret is stored, and it is compared in constant time. A
//! key is shown once, at creation or rotation, and never logged. A merchant may hold several
//! keys (a rotation's grace period, or keys made through `/v1/api-keys`); an expired or
//! revoked key is refused like an unknown one.
//!
//! A key that `rotate-key` rotated away (`rotated_away_at`) is *in grace* until it expires:
//! it still authenticates, and the HTTP edge lets it create and read payments only. Every
//! change that refuses a key or narrows what it may do (disable, rotation, revocation)
//! notifies [`AUTH_CHANNEL`] in the same transaction, so every replica's cache forgets it
//! at commit.

use super::Db;
use crate::ledger::api_keys;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Notified (at commit) when a merchant or an API key changes in a way that refuses keys.
pub const AUTH_CHANNEL: &str = "pisgate_auth";

const KEY_PREFIX: &str = "pgk_";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Merchant {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub return_origins: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub disabled_at: Option<DateTime<Utc>>,
}

impl Merchant {
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// A freshly made API key: 64 bits of key id, 256 bits of secret.
pub struct NewApiKey {
    key_id: String,
    secret: SecretString,
}

impl NewApiKey {
    pub fn generate() -> NewApiKey {
        let mut rng = rand::rngs::OsRng;
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        NewApiKey {
            key_id: hex::encode(id),
            secret: SecretString::from(hex::encode(secret)),
        }
    }

    /// The full key as the merchant must send it. Show it once.
    pub fn reveal(&self) -> SecretString {
        SecretString::from(format!(
            "{KEY_PREFIX}{}_{}",
            self.key_id,
            self.secret.expose_secret()
        ))
    }

    /// The public part of the key (its id and visible prefix).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub(crate) fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.secret.expose_secret().as_bytes()).into()
    }
}

/// The key id of a presented key (the public part), without judging the key.
pub fn key_id_of(presented: &str) -> Option<&str> {
    split_key(presented).map(|(id, _)| id)
}

/// Splits a presented key into (key id, secret) without judging it yet.
fn split_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && !secret.is_empty()).then_some((id, secret))
}

/// Normalises a return origin to `scheme://host[:port]` (the domain's [`Origin`] rules:
/// https, or http only for loopback hosts; no path, query or user).
///
/// [`Origin`]: crate::domain::Origin
pub fn normalize_origin(raw: &str) -> Result<String, String> {
    crate::domain::Origin::parse(raw.trim())
        .map(|o| o.origin())
        .map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    #[error("invalid merchant: {0}")]
    Invalid(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub async fn create(
    pool: &Db,
    name: &str,
    return_origins: &[String],
) -> Result<(Merchant, SecretString), MerchantError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(MerchantError::Invalid(
            "name must be 1 to 200 characters".into(),
        ));
    }
    let id = Uuid::now_v7();
    // The default payee policy, sealed like one an operator sets.
    let (policy_key_id, policy_mac) =
        crate::ledger::payees::seal_policy(id, crate::ledger::payees::Policy::Open)?;
    let mut tx = pool.begin().await?;
    let merchant = sqlx::query_as!(
        Merchant,
        r#"INSERT INTO merchants (id, name, return_origins, payees, payees_mac, payees_mac_key_id)
           VALUES ($1, $2, $3, 'open', $4, $5)
           RETURNING id, name, status, return_origins, created_at, disabled_at"#,
        id,
        name,
        return_origins,
        &policy_mac[..],
        policy_key_id,
    )
    .fetch_one(&mut *tx)
    .await?;
    let (_, key) = api_keys::insert_key(&mut tx, merchant.id, None, None).await?;
    tx.commit().await?;
    Ok((merchant, key))
}

/// A key rotation's result: the new key (show it once) and until when the older keys work.
pub struct RotatedKey {
    pub merchant_id: Uuid,
    pub api_key: SecretString,
    pub old_keys_expire_at: DateTime<Utc>,
    /// How many older keys are still working until then.
    pub old_keys: u64,
}

/// Gives a merchant a new key; its current keys keep working for `grace` (a key that
/// already expires sooner keeps its earlier end). `None` for an unknown merchant.
pub async fn rotate_key_in(
    tx: &mut PgConnection,
    merchant_id: Uuid,
    grace: std::time::Duration,
) -> Result<Option<RotatedKey>, sqlx::Error> {
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    // Serialises rotations of one merchant.
    let found = sqlx::query_scalar!(
        "SELECT id FROM merchants WHERE id = $1 FOR UPDATE",
        merchant_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if found.is_none() {
        return Ok(None);
    }
    let until = sqlx::query_scalar!(
        r#"SELECT now() + make_interval(secs => $1::bigint / 1000.0) AS "until!""#,
        grace_ms
    )
    .fetch_one(&mut *tx)
    .await?;
    // The notification is delivered at commit: every replica forgets the old keys (a cached
    // copy would not know it is in grace, or with no grace, that it is over).
    let ring = crate::ledger::keys::installed().ok_or_else(|| {
        sqlx::Error::Configuration(
            "rotating a key needs the ledger key (PISGATE__LEDGER__KEY_FILE): it seals the keys' ends"
                .into(),
        )
    })?;
    // The keys it rotates away, each checked against its MACs first: a row edited in SQL
    // (a leaked key's end pushed back, a key written or moved by an insider) must not come
    // out of the rotation freshly sealed with a grace period. Such a key, which
    // authentication already refuses, is revoked instead.
    let current = sqlx::query!(
        "SELECT key_id, merchant_id, key_hash, key_mac, key_mac_key_id, expires_at,
                rotated_away_at, lifetime_mac, lifetime_mac_key_id
         FROM api_keys
         WHERE merchant_id = $1 AND revoked_at IS NULL
           AND (expires_at IS NULL OR expires_at > now())
         ORDER BY key_id
         FOR UPDATE",
        merchant_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    let (mut sound, mut edited) = (Vec::new(), Vec::new());
    for k in current {
        let problem = crate::ledger::binding::api_key_row_problem(
            Some(&ring),
            &crate::ledger::binding::StoredApiKey {
                api_key_id: &k.key_id,
                merchant_id: k.merchant_id,
                key_hash: &k.key_hash,
                key_mac: k.key_mac.as_deref(),
                key_mac_key_id: k.key_mac_key_id.as_deref(),
                expires_at: k.expires_at,
                rotated_away_at: k.rotated_away_at,
                lifetime_mac: k.lifetime_mac.as_deref(),
                lifetime_mac_key_id: k.lifetime_mac_key_id.as_deref(),
            },
        );
        match problem {
            None => sound.push(k.key_id),
            Some(why) => {
                tracing::error!(
                    key_id = %k.key_id,
                    %merchant_id,
                    why,
                    "an API key fails its ledger MAC: revoked by the rotation, not given a grace; run `pisgate ledger verify`"
                );
                metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
                edited.push(k.key_id);
            }
        }
    }
    if !edited.is_empty() {
        sqlx::query!(
            "WITH n AS (SELECT pg_notify('pisgate_auth', '') AS sent)
             UPDATE api_keys
                SET revoked_at = now(),
                    key_hash = sha256(convert_to(gen_random_uuid()::text, 'UTF8')),
                    key_mac = NULL, key_mac_key_id = NULL,
                    lifetime_mac = NULL, lifetime_mac_key_id = NULL
             FROM n
             WHERE key_id = ANY($1)",
            &edited,
        )
        .execute(&mut *tx)
        .await?;
    }
    let old = sqlx::query!(
        "WITH n AS (SELECT pg_notify('pisgate_auth', '') AS sent)
         UPDATE api_keys
         SET expires_at = LEAST(COALESCE(expires_at, $2), $2),
             rotated_away_at = COALESCE(rotated_away_at, now())
         FROM n
         WHERE key_id = ANY($1)
         RETURNING key_id, expires_at, rotated_away_at",
        &sound,
        until,
    )
    .fetch_all(&mut *tx)
    .await?;
    let old_keys = old.len() as u64;
    // Each old key's new end, sealed: a key rotated away after a leak cannot be made full
    // (or endless) again in SQL.
    let mac_key_id = ring.current_id().to_owned();
    let (mut ids, mut macs) = (Vec::with_capacity(old.len()), Vec::with_capacity(old.len()));
    for k in old {
        let mac = crate::ledger::binding::api_key_lifetime_mac(
            &ring,
            &mac_key_id,
            &k.key_id,
            k.expires_at,
            k.rotated_away_at,
        )
        .ok_or_else(|| {
            sqlx::Error::Configuration("the ledger ring lacks its current key".into())
        })?;
        ids.push(k.key_id);
        macs.push(mac.to_vec());
    }
    if !ids.is_empty() {
        sqlx::query!(
            "UPDATE api_keys k SET lifetime_mac = u.mac, lifetime_mac_key_id = $3
             FROM unnest($1::text[], $2::bytea[]) AS u(id, mac)
             WHERE k.key_id = u.id",
            &ids,
            &macs,
            mac_key_id,
        )
        .execute(&mut *tx)
        .await?;
    }
    let (_, api_key) = api_keys::insert_key(tx, merchant_id, None, None).await?;
    Ok(Some(RotatedKey {
        merchant_id,
        api_key,
        old_keys_expire_at: until,
        old_keys,
    }))
}

/// Revokes every working key of a merchant at once (an operator's emergency stop): no
/// grace, nothing kept. The merchant has no key until it is given one (`rotate-key`).
/// Returns how many keys were revoked, `None` for an unknown merchant. Every replica forgets
/// them at commit ([`AUTH_CHANNEL`]).
pub async fn revoke_all_keys(
    conn: &mut sqlx::PgConnection,
    merchant_id: Uuid,
) -> Result<Option<u64>, sqlx::Error> {
    let found = sqlx::query_scalar!(
        "SELECT id FROM merchants WHERE id = $1 FOR UPDATE",
        merchant_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    if found.is_none() {
        return Ok(None);
    }
    // As one revocation: each secret's hash overwritten, the MACs gone.
    let revoked = sqlx::query!(
        "WITH n AS (SELECT pg_notify('pisgate_auth', '') AS sent)
         UPDATE api_keys
            SET revoked_at = now(),
                key_hash = sha256(convert_to(gen_random_uuid()::text, 'UTF8')),
                key_mac = NULL, key_mac_key_id = NULL,
                lifetime_mac = NULL, lifetime_mac_key_id = NULL
         FROM n
         WHERE merchant_id = $1 AND revoked_at IS NULL
           AND (expires_at IS NULL OR expires_at > now())",
        merchant_id,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(Some(revoked))
}

/// [`rotate_key_in`] in a transaction of its own.
pub async fn rotate_key(
    pool: &Db,
    merchant_id: Uuid,
    grace: std::time::Duration,
) -> Result<Option<RotatedKey>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let out = rotate_key_in(&mut tx, merchant_id, grace).await?;
    tx.commit().await?;
    Ok(out)
}

pub async fn list(pool: &Db) -> Result<Vec<Merchant>, sqlx::Error> {
    sqlx::query_as!(
        Merchant,
        r#"SELECT id, name, status, return_origins, created_at, disabled_at
           FROM merchants ORDER BY created_at, id"#
    )
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &Db, id: Uuid) -> Result<Option<Merchant>, sqlx::Error> {
    sqlx::query_as!(
        Merchant,
        r#"SELECT id, name, status, return_origins, created_at, disabled_at
           FROM merchants WHERE id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await
}

/// Disables a merchant (`None` for an unknown id): its keys are refused from now on. Every replica forgets the keys it
/// verified when the notification arrives at commit ([`AUTH_CHANNEL`]).
pub async fn disable<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    id: Uuid,
) -> Result<Option<Merchant>, sqlx::Error> {
    sqlx::query_as!(
        Merchant,
        r#"WITH n AS (SELECT pg_notify('pisgate_auth', '') AS sent)
           UPDATE merchants
           SET status = 'disabled', disabled_at = COALESCE(disabled_at, now())
           FROM n
           WHERE id = $1
           RETURNING id, name, status, return_origins, created_at, disabled_at"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// Enables a disabled merchant: its keys (those not expired) work again. `None` for an
/// unknown id.
pub async fn enable<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    id: Uuid,
) -> Result<Option<Merchant>, sqlx::Error> {
    sqlx::query_as!(
        Merchant,
        r#"WITH n AS (SELECT pg_notify('pisgate_auth', '') AS sent)
           UPDATE merchants SET status = 'active', disabled_at = NULL
           FROM n
           WHERE id = $1
           RETURNING id, name, status, return_origins, created_at, disabled_at"#,
        id
    )
    .fetch_optional(db)
    .await
}

pub async fn set_return_origins(
    pool: &Db,
    by: api_keys::Manager<'_>,
    origins: &[String],
) -> Result<Option<Merchant>, api_keys::ManageError> {
    let id = by.merchant_id;
    let mut tx = pool.begin().await?;
    api_keys::lock_for(&mut tx, by).await?;
    // Every replica's key cache holds the merchant with its origins: forgotten at commit.
    sqlx::query!("SELECT pg_notify('pisgate_auth', '') AS \"n: ()\"")
        .fetch_one(&mut *tx)
        .await?;
    let merchant = sqlx::query_as!(
        Merchant,
        r#"UPDATE merchants SET return_origins = $2
           WHERE id = $1
           RETURNING id, name, status, return_origins, created_at, disabled_at"#,
        id,
        origins
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(merchant)
}

/// Finds the merchant a presented API key belongs to, active or not. `None` when the key is
/// malformed, unknown or wrong.
pub async fn authenticate(pool: &Db, presented: &str) -> Result<Option<Merchant>, sqlx::Error> {
    Ok(authenticate_key(pool, presented).await?.map(|k| k.merchant))
}

/// A presented key that checked out: whose it is and what it may do.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub merchant: Merchant,
    /// The public part of the key.
    pub key_id: String,
    /// When it stops working (a rotated-away key's end of grace, or its own expiry).
    pub expires_at: Option<DateTime<Utc>>,
    /// Rotated away and still in its grace: payments only.
    pub in_grace: bool,
}

/// As [`authenticate`], with the key's id, expiry and whether it is in a rotation's grace.
pub async fn authenticate_key(
    pool: &Db,
    presented: &str,
) -> Result<Option<VerifiedKey>, sqlx::Error> {
    let Some((key_id, secret)) = split_key(presented) else {
        return Ok(None);
    };
    // An expired key (rotated away, past its grace period) is as good as unknown.
    let row = sqlx::query!(
        r#"SELECT m.id, m.name, m.status, m.return_origins, m.created_at, m.disabled_at,
                  k.key_hash AS api_key_hash, k.expires_at, k.merchant_id AS key_merchant_id,
                  k.key_mac, k.key_mac_key_id, k.rotated_away_at, k.lifetime_mac,
                  k.lifetime_mac_key_id
           FROM api_keys k JOIN merchants m ON m.id = k.merchant_id
           WHERE k.key_id = $1 AND k.revoked_at IS NULL
             AND (k.expires_at IS NULL OR k.expires_at > now())"#,
        key_id
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let presented_hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    if !bool::from(presented_hash.ct_eq(row.api_key_hash.as_slice())) {
        return Ok(None);
    }
    // The row must be one pisgate wrote: a key added (or moved to another merchant) in SQL
    // fails its ledger MAC and opens nothing.
    // Its expiry and rotation too: a key rotated away or expiring that was given its full
    // life back in SQL opens nothing either.
    let ring = crate::ledger::keys::installed();
    let problem = crate::ledger::binding::api_key_row_problem(
        ring.as_deref(),
        &crate::ledger::binding::StoredApiKey {
            api_key_id: key_id,
            merchant_id: row.key_merchant_id,
            key_hash: &row.api_key_hash,
            key_mac: row.key_mac.as_deref(),
            key_mac_key_id: row.key_mac_key_id.as_deref(),
            expires_at: row.expires_at,
            rotated_away_at: row.rotated_away_at,
            lifetime_mac: row.lifetime_mac.as_deref(),
            lifetime_mac_key_id: row.lifetime_mac_key_id.as_deref(),
        },
    );
    if let Some(why) = problem {
        tracing::error!(
            key_id,
            merchant_id = %row.key_merchant_id,
            why,
            "an API key fails its ledger MAC and is refused: run `pisgate ledger verify`"
        );
        metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
        return Ok(None);
    }
    Ok(Some(VerifiedKey {
        merchant: Merchant {
            id: row.id,
            name: row.name,
            status: row.status,
            return_origins: row.return_origins,
            created_at: row.created_at,
            disabled_at: row.disabled_at,
        },
        key_id: key_id.to_owned(),
        expires_at: row.expires_at,
        in_grace: row.rotated_away_at.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_split_back_into_id_and_secret() {
        let key = NewApiKey::generate();
        let full = key.reveal();
        let (id, secret) = split_key(full.expose_secret()).unwrap();
        assert_eq!(id, key.key_id);
        assert_eq!(secret, key.secret.expose_secret());
        assert_eq!(secret.len(), 64, "256 bits of secret");
    }

    #[test]
    fn origins_are_normalised_and_checked() {
        assert_eq!(
            normalize_origin("HTTPS://Shop.Example/").unwrap(),
            "https://shop.example"
        );
        assert_eq!(
            normalize_origin("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        assert!(normalize_origin("http://shop.example").is_err());
        assert!(normalize_origin("https://shop.example/path").is_err());
        assert!(normalize_origin("https://user@shop.example").is_err());
        assert!(normalize_origin("shop.example").is_err());
        assert!(normalize_origin("ftp://shop.example").is_err());
    }

    #[test]
    fn malformed_keys_do_not_split() {
        for k in [
            "",
            "pgk_",
            "pgk_abc_def",
            "sk_0123456789abcdef_x",
            "pgk_0123456789abcdef_",
        ] {
            assert!(split_key(k).is_none(), "{k}");
        }
    }
}
