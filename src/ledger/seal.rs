//! Sealing at the upgrade that introduced a binding: the webhook events (migration
//! 20261205000030), idempotency answers (20261206200000), payments' bank links
//! (20261208100000), webhook endpoints' URLs (20261208100001), API keys (20261208100002),
//! their ends (20261208100003), merchants' payee policies and payees (20261209100000) and
//! console operators (20261210100000; at that upgrade only, never by `ledger seal`) already
//! written then get the ledger MAC every later one is
//! written with; a key revoked without its secret's hash being overwritten (by the version
//! before 20261208100003, during a rolling update) has it overwritten.
//!
//! The process that applies such a migration seals, right after applying it, with the
//! ledger key (and an operator with the key can with `pisgate ledger seal`, for what a run
//! without the key, or the previous version's replicas during a rolling update, left): it trusts exactly what the version before it trusted (which sent and replayed
//! those rows without any MAC). From then on there is no exemption: a row without its MAC is
//! never sent nor replayed and `ledger verify` reports it, whatever its dates say (an
//! insider can write any `created_at`; a cut-over read from the rows themselves was a way
//! to forge a signed `payment.paid`). A `pisgate migrate` run without the ledger key cannot
//! seal: it says so, and those rows stay refused.

use super::binding::{self, WebhookEventFacts};
use super::keys::LedgerKeys;
use sqlx::PgPool;
use uuid::Uuid;

/// The migration that bound webhook events to the ledger key.
pub const WEBHOOK_EVENTS_BOUND: i64 = 20261205000030;
/// The migration that bound idempotency answers to the ledger key.
pub const IDEMPOTENCY_ANSWERS_BOUND: i64 = 20261206200000;
/// The migration that bound payments' bank links to the ledger key.
pub const BANK_LINKS_BOUND: i64 = 20261208100000;
/// The migration that bound webhook endpoints' URLs to the ledger key.
pub const ENDPOINT_URLS_BOUND: i64 = 20261208100001;
/// The migration that bound API keys to the ledger key.
pub const API_KEYS_BOUND: i64 = 20261208100002;
/// The migration that bound API keys' expiry and rotation to the ledger key.
pub const API_KEY_LIFETIMES_BOUND: i64 = 20261208100003;

/// The migration that bound merchants' payee policies and payees to the ledger key.
pub const PAYEES_BOUND: i64 = 20261209100000;

/// The migration that bound console operators (and their sessions) to the ledger key.
pub const OPERATORS_BOUND: i64 = 20261210100000;

/// Rows sealed per statement.
const BATCH: i64 = 500;

/// What [`seal_unbound`] sealed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sealed {
    pub webhook_events: u64,
    pub idempotency_answers: u64,
    pub bank_links: u64,
    pub webhook_endpoints: u64,
    pub api_keys: u64,
    pub api_key_lifetimes: u64,
    /// Merchants' payee policies.
    pub payee_policies: u64,
    /// Registered payees.
    pub payees: u64,
    /// Console operators, in their state (at the upgrade that binds them only).
    pub operators: u64,
    /// Revoked keys whose secret's hash was still there, now overwritten.
    pub revoked_keys_erased: u64,
}

impl Sealed {
    /// Logs the counts, with `what` happened.
    pub fn log(&self, what: &str) {
        tracing::info!(
            webhook_events = self.webhook_events,
            idempotency_answers = self.idempotency_answers,
            bank_links = self.bank_links,
            webhook_endpoints = self.webhook_endpoints,
            api_keys = self.api_keys,
            api_key_lifetimes = self.api_key_lifetimes,
            payee_policies = self.payee_policies,
            payees = self.payees,
            operators = self.operators,
            revoked_keys_erased = self.revoked_keys_erased,
            "{what}"
        );
    }
}

/// Whether applying `pending` (migration versions) introduces a binding whose rows written
/// before it must be sealed.
pub fn binds(pending: &[i64]) -> bool {
    [
        WEBHOOK_EVENTS_BOUND,
        IDEMPOTENCY_ANSWERS_BOUND,
        BANK_LINKS_BOUND,
        ENDPOINT_URLS_BOUND,
        API_KEYS_BOUND,
        API_KEY_LIFETIMES_BOUND,
        PAYEES_BOUND,
        OPERATORS_BOUND,
    ]
    .iter()
    .any(|v| pending.contains(v))
}

/// MACs every webhook event, stored idempotency answer, payment's bank reference (bank id and
/// links), webhook endpoint's URL, API key, payee policy and payee that has none, under the
/// ring's current key, one read and one `UPDATE … FROM unnest(…)` per batch of each: `pisgate
/// ledger seal`, an operator's choice after `ledger verify`.
pub async fn seal_unbound(pool: &PgPool, keys: &LedgerKeys) -> Result<Sealed, sqlx::Error> {
    seal_kinds(pool, keys, None).await
}

/// [`seal_unbound`] for the kinds whose binding migration is among `pending` only: what the
/// process that just applied them seals ([`binds`]). A row without a MAC of a kind bound at an
/// earlier upgrade is not one the version before wrote (it wrote each with its MAC): someone
/// wrote it without the key, or an old replica during that earlier rolling update (`ledger
/// seal` is for those). It stays refused rather than being sealed by a later, unrelated
/// upgrade.
pub async fn seal_newly_bound(
    pool: &PgPool,
    keys: &LedgerKeys,
    pending: &[i64],
) -> Result<Sealed, sqlx::Error> {
    seal_kinds(pool, keys, Some(pending)).await
}

async fn seal_kinds(
    pool: &PgPool,
    keys: &LedgerKeys,
    only: Option<&[i64]>,
) -> Result<Sealed, sqlx::Error> {
    let wants = |bound: i64| only.is_none_or(|pending| pending.contains(&bound));
    let key_id = keys.current_id().to_owned();
    let mut sealed = Sealed::default();
    let mut cursor = Uuid::nil();
    if wants(WEBHOOK_EVENTS_BOUND) {
        loop {
            let rows = sqlx::query!(
                r#"SELECT id, merchant_id, payment_id, event_type, payload, created_at
               FROM webhook_events WHERE payload_mac IS NULL AND id > $1
               ORDER BY id LIMIT $2"#,
                cursor,
                BATCH,
            )
            .fetch_all(pool)
            .await?;
            let n = rows.len();
            let (mut ids, mut macs) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for r in rows {
                cursor = r.id;
                let facts = WebhookEventFacts {
                    id: r.id,
                    merchant_id: r.merchant_id,
                    payment_id: r.payment_id,
                    event_type: &r.event_type,
                    created_at: r.created_at,
                    payload: &r.payload,
                };
                let mac = binding::webhook_mac(keys, &key_id, &facts)
                    .expect("the current key is in its own ring");
                ids.push(r.id);
                macs.push(mac.to_vec());
            }
            if !ids.is_empty() {
                sealed.webhook_events += sqlx::query!(
                    "UPDATE webhook_events e SET payload_mac = u.mac, mac_key_id = $3
                 FROM unnest($1::uuid[], $2::bytea[]) AS u(id, mac)
                 WHERE e.id = u.id AND e.payload_mac IS NULL",
                    &ids,
                    &macs,
                    key_id,
                )
                .execute(pool)
                .await?
                .rows_affected();
            }
            if (n as i64) < BATCH {
                break;
            }
        }
    }
    let mut cursor = (Uuid::nil(), String::new());
    if wants(IDEMPOTENCY_ANSWERS_BOUND) {
        loop {
            let rows = sqlx::query!(
                r#"SELECT merchant_id, key AS "key!: String", response_status AS "status!",
                      response_body AS "body!"
               FROM idempotency_keys
               WHERE response_status IS NOT NULL AND response_body IS NOT NULL
                 AND response_mac IS NULL AND (merchant_id, key) > ($1, $2::text)
               ORDER BY merchant_id, key LIMIT $3"#,
                cursor.0,
                cursor.1,
                BATCH,
            )
            .fetch_all(pool)
            .await?;
            let n = rows.len();
            let (mut merchants, mut answer_keys, mut macs) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for r in rows {
                let status = u16::try_from(r.status).unwrap_or(0);
                let mac = binding::idempotency_answer_mac(
                    keys,
                    &key_id,
                    r.merchant_id,
                    &r.key,
                    status,
                    &r.body,
                )
                .expect("the current key is in its own ring");
                macs.push(mac.to_vec());
                merchants.push(r.merchant_id);
                cursor = (r.merchant_id, r.key.clone());
                answer_keys.push(r.key);
            }
            if !merchants.is_empty() {
                sealed.idempotency_answers += sqlx::query!(
                    "UPDATE idempotency_keys k SET response_mac = u.mac, response_mac_key_id = $4
                 FROM unnest($1::uuid[], $2::text[], $3::bytea[]) AS u(merchant_id, key, mac)
                 WHERE k.merchant_id = u.merchant_id AND k.key = u.key
                   AND k.response_mac IS NULL",
                    &merchants,
                    &answer_keys,
                    &macs,
                    key_id,
                )
                .execute(pool)
                .await?
                .rows_affected();
            }
            if (n as i64) < BATCH {
                break;
            }
        }
    }
    if wants(BANK_LINKS_BOUND) {
        sealed.bank_links = seal_bank_links(pool, keys, &key_id).await?;
    }
    if wants(ENDPOINT_URLS_BOUND) {
        sealed.webhook_endpoints = seal_endpoint_urls(pool, keys, &key_id).await?;
    }
    if wants(API_KEY_LIFETIMES_BOUND) {
        sealed.revoked_keys_erased = erase_revoked_keys(pool).await?;
    }
    if wants(API_KEYS_BOUND) {
        sealed.api_keys = seal_api_keys(pool, keys, &key_id).await?;
    }
    if wants(API_KEY_LIFETIMES_BOUND) {
        sealed.api_key_lifetimes = seal_api_key_lifetimes(pool, keys, &key_id).await?;
    }
    if wants(PAYEES_BOUND) {
        (sealed.payee_policies, sealed.payees) = seal_payees(pool, keys, &key_id).await?;
    }
    // Operators only at the upgrade that binds them, never by `ledger seal`: an operator
    // without its MAC later is an account someone wrote without the key (or the previous
    // version during the rollout), and sealing it would let in whoever chose its password.
    // `pisgate operator reset-password` seals such an account, with a password an operator
    // chose.
    if only.is_some_and(|pending| pending.contains(&OPERATORS_BOUND)) {
        sealed.operators = seal_operators(pool, keys, &key_id).await?;
    }
    Ok(sealed)
}

/// The operators at the upgrade that binds them: every operator without a MAC, sealed in its
/// state (a disabled one as disabled: clearing its `disabled_at` in SQL enables nobody), one
/// read and one `UPDATE … FROM unnest(…)` (operators are few).
async fn seal_operators(
    pool: &PgPool,
    keys: &LedgerKeys,
    key_id: &str,
) -> Result<u64, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT id, email, password_hash, disabled_at IS NOT NULL AS "disabled!"
           FROM operators WHERE mac IS NULL"#
    )
    .fetch_all(pool)
    .await?;
    let (mut ids, mut emails, mut hashes, mut states, mut macs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let mac = binding::operator_mac(keys, key_id, r.id, &r.email, &r.password_hash, r.disabled)
            .expect("the current key is in its own ring");
        ids.push(r.id);
        emails.push(r.email);
        hashes.push(r.password_hash);
        states.push(r.disabled);
        macs.push(mac.to_vec());
    }
    // Only the values the MAC was computed over: an account changed meanwhile stays unsealed.
    Ok(sqlx::query!(
        "UPDATE operators o SET mac = u.mac, mac_key_id = $6
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::bytea[])
              AS u(id, email, password_hash, disabled, mac)
         WHERE o.id = u.id AND o.email = u.email AND o.password_hash = u.password_hash
           AND (o.disabled_at IS NOT NULL) = u.disabled AND o.mac IS NULL",
        &ids,
        &emails,
        &hashes,
        &states,
        &macs,
        key_id,
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// The payees part of [`seal_unbound`]: every merchant's policy and every registered payee
/// without a MAC, in one read and one `UPDATE … FROM unnest(…)` each (operators write them
/// one by one: they are few).
async fn seal_payees(
    pool: &PgPool,
    keys: &LedgerKeys,
    key_id: &str,
) -> Result<(u64, u64), sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT id, payees AS "payees!: String" FROM merchants WHERE payees_mac IS NULL"#
    )
    .fetch_all(pool)
    .await?;
    let (mut ids, mut policies, mut macs) = (Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let mac = binding::payee_policy_mac(keys, key_id, r.id, &r.payees)
            .expect("the current key is in its own ring");
        ids.push(r.id);
        policies.push(r.payees);
        macs.push(mac.to_vec());
    }
    // Only the values the MAC was computed over: a policy changed meanwhile stays unsealed.
    let policies = sqlx::query!(
        "UPDATE merchants m SET payees_mac = u.mac, payees_mac_key_id = $4
         FROM unnest($1::uuid[], $2::text[], $3::bytea[]) AS u(id, payees, mac)
         WHERE m.id = u.id AND m.payees_mac IS NULL AND m.payees = u.payees",
        &ids,
        &policies,
        &macs,
        key_id,
    )
    .execute(pool)
    .await?
    .rows_affected();
    let rows = sqlx::query!(
        "SELECT merchant_id, account_type, account FROM merchant_payees WHERE mac IS NULL"
    )
    .fetch_all(pool)
    .await?;
    let (mut merchants, mut types, mut accounts, mut macs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let mac = binding::payee_mac(keys, key_id, r.merchant_id, &r.account_type, &r.account)
            .expect("the current key is in its own ring");
        merchants.push(r.merchant_id);
        types.push(r.account_type);
        accounts.push(r.account);
        macs.push(mac.to_vec());
    }
    let payees = sqlx::query!(
        "UPDATE merchant_payees p SET mac = u.mac, mac_key_id = $5
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[])
              AS u(merchant_id, account_type, account, mac)
         WHERE p.merchant_id = u.merchant_id AND p.account_type = u.account_type
           AND p.account = u.account AND p.mac IS NULL",
        &merchants,
        &types,
        &accounts,
        &macs,
        key_id,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok((policies, payees))
}

/// The bank links part of [`seal_unbound`]: one read and one `UPDATE … FROM unnest(…)` per
/// batch of payments.
async fn seal_bank_links(
    pool: &PgPool,
    keys: &LedgerKeys,
    key_id: &str,
) -> Result<u64, sqlx::Error> {
    let mut sealed = 0;
    let mut cursor = Uuid::nil();
    loop {
        let rows = sqlx::query!(
            r#"SELECT id, bank_payment_id, bank_links FROM payments
               WHERE bank_links_mac IS NULL AND bank_payment_id IS NOT NULL AND id > $1
               ORDER BY id LIMIT $2"#,
            cursor,
            BATCH,
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        let (mut ids, mut macs, mut bank_ids, mut links) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in rows {
            cursor = r.id;
            let bank_payment_id = r.bank_payment_id.unwrap_or_default();
            let mac = binding::bank_links_mac(keys, key_id, r.id, &bank_payment_id, &r.bank_links)
                .expect("the current key is in its own ring");
            ids.push(r.id);
            macs.push(mac.to_vec());
            bank_ids.push(bank_payment_id);
            links.push(r.bank_links);
        }
        if !ids.is_empty() {
            // Only the values the MAC was computed over: a row written meanwhile stays unsealed.
            sealed += sqlx::query!(
                "UPDATE payments p SET bank_links_mac = u.mac, bank_links_mac_key_id = $3
                 FROM unnest($1::uuid[], $2::bytea[], $4::text[], $5::jsonb[])
                      AS u(id, mac, bank_payment_id, links)
                 WHERE p.id = u.id AND p.bank_links_mac IS NULL
                   AND p.bank_payment_id = u.bank_payment_id AND p.bank_links = u.links",
                &ids,
                &macs,
                key_id,
                &bank_ids,
                &links,
            )
            .execute(pool)
            .await?
            .rows_affected();
        }
        if (n as i64) < BATCH {
            break;
        }
    }
    Ok(sealed)
}

/// The webhook endpoints part of [`seal_unbound`]: one read and one `UPDATE … FROM
/// unnest(…)` per batch of endpoints (deleted ones included: verify checks every one).
async fn seal_endpoint_urls(
    pool: &PgPool,
    keys: &LedgerKeys,
    key_id: &str,
) -> Result<u64, sqlx::Error> {
    let mut sealed = 0;
    let mut cursor = Uuid::nil();
    loop {
        let rows = sqlx::query!(
            r#"SELECT id, merchant_id, url FROM webhook_endpoints
               WHERE url_mac IS NULL AND id > $1 ORDER BY id LIMIT $2"#,
            cursor,
            BATCH,
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        let (mut ids, mut macs, mut merchants, mut urls) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in rows {
            cursor = r.id;
            let mac = binding::endpoint_url_mac(keys, key_id, r.id, r.merchant_id, &r.url)
                .expect("the current key is in its own ring");
            ids.push(r.id);
            macs.push(mac.to_vec());
            merchants.push(r.merchant_id);
            urls.push(r.url);
        }
        if !ids.is_empty() {
            sealed += sqlx::query!(
                "UPDATE webhook_endpoints w SET url_mac = u.mac, url_mac_key_id = $3
                 FROM unnest($1::uuid[], $2::bytea[], $4::uuid[], $5::text[])
                      AS u(id, mac, merchant_id, url)
                 WHERE w.id = u.id AND w.url_mac IS NULL
                   AND w.merchant_id = u.merchant_id AND w.url = u.url",
                &ids,
                &macs,
                key_id,
                &merchants,
                &urls,
            )
            .execute(pool)
            .await?
            .rows_affected();
        }
        if (n as i64) < BATCH {
            break;
        }
    }
    Ok(sealed)
}

/// Overwrites the secret's hash of every revoked key that still has it (a revocation by the
/// version before migration 20261208100003, which kept it), as revoking does now.
async fn erase_revoked_keys(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE api_keys
            SET key_hash = sha256(convert_to(gen_random_uuid()::text, 'UTF8')),
                key_mac = NULL, key_mac_key_id = NULL,
                lifetime_mac = NULL, lifetime_mac_key_id = NULL
          WHERE revoked_at IS NOT NULL
            AND (key_mac IS NOT NULL OR lifetime_mac IS NOT NULL)"
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// The API keys part of [`seal_unbound`] (expired ones included: verify checks every key
/// that is not revoked), one `UPDATE … FROM unnest(…)` per batch.
async fn seal_api_keys(pool: &PgPool, keys: &LedgerKeys, key_id: &str) -> Result<u64, sqlx::Error> {
    let mut sealed = 0;
    let mut cursor = String::new();
    loop {
        let rows = sqlx::query!(
            r#"SELECT key_id, merchant_id, key_hash FROM api_keys
               WHERE key_mac IS NULL AND revoked_at IS NULL AND key_id > $1
               ORDER BY key_id LIMIT $2"#,
            cursor,
            BATCH,
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        let (mut ids, mut macs, mut merchants, mut hashes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in rows {
            let mac = binding::api_key_mac(keys, key_id, &r.key_id, r.merchant_id, &r.key_hash)
                .expect("the current key is in its own ring");
            macs.push(mac.to_vec());
            cursor.clone_from(&r.key_id);
            ids.push(r.key_id);
            merchants.push(r.merchant_id);
            hashes.push(r.key_hash);
        }
        if !ids.is_empty() {
            sealed += sqlx::query!(
                "UPDATE api_keys k SET key_mac = u.mac, key_mac_key_id = $3
                 FROM unnest($1::text[], $2::bytea[], $4::uuid[], $5::bytea[])
                      AS u(id, mac, merchant_id, key_hash)
                 WHERE k.key_id = u.id AND k.key_mac IS NULL
                   AND k.merchant_id = u.merchant_id AND k.key_hash = u.key_hash",
                &ids,
                &macs,
                key_id,
                &merchants,
                &hashes,
            )
            .execute(pool)
            .await?
            .rows_affected();
        }
        if (n as i64) < BATCH {
            break;
        }
    }
    Ok(sealed)
}

/// The API keys' ends part of [`seal_unbound`]: the expiry and rotation each key that is not
/// revoked has now, one `UPDATE … FROM unnest(…)` per batch, guarded by those values.
async fn seal_api_key_lifetimes(
    pool: &PgPool,
    keys: &LedgerKeys,
    key_id: &str,
) -> Result<u64, sqlx::Error> {
    let mut sealed = 0;
    let mut cursor = String::new();
    loop {
        let rows = sqlx::query!(
            r#"SELECT key_id, expires_at, rotated_away_at FROM api_keys
               WHERE lifetime_mac IS NULL AND revoked_at IS NULL AND key_id > $1
               ORDER BY key_id LIMIT $2"#,
            cursor,
            BATCH,
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        let (mut ids, mut macs, mut ends, mut rotations) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in rows {
            let mac = binding::api_key_lifetime_mac(
                keys,
                key_id,
                &r.key_id,
                r.expires_at,
                r.rotated_away_at,
            )
            .expect("the current key is in its own ring");
            macs.push(mac.to_vec());
            cursor.clone_from(&r.key_id);
            ids.push(r.key_id);
            ends.push(r.expires_at);
            rotations.push(r.rotated_away_at);
        }
        if !ids.is_empty() {
            sealed += sqlx::query!(
                "UPDATE api_keys k SET lifetime_mac = u.mac, lifetime_mac_key_id = $3
                 FROM unnest($1::text[], $2::bytea[], $4::timestamptz[], $5::timestamptz[])
                      AS u(id, mac, expires_at, rotated_away_at)
                 WHERE k.key_id = u.id AND k.lifetime_mac IS NULL AND k.revoked_at IS NULL
                   AND k.expires_at IS NOT DISTINCT FROM u.expires_at
                   AND k.rotated_away_at IS NOT DISTINCT FROM u.rotated_away_at",
                &ids,
                &macs,
                key_id,
                &ends as &[Option<chrono::DateTime<chrono::Utc>>],
                &rotations as &[Option<chrono::DateTime<chrono::Utc>>],
            )
            .execute(pool)
            .await?
            .rows_affected();
        }
        if (n as i64) < BATCH {
            break;
        }
    }
    Ok(sealed)
}
