//! `pisgate ledger reseal`: moves every live row sealed under an older ledger key to the
//! current one, so that the older key can be retired (`ledger.retired_key_ids`, see
//! [`crate::ledger::keys`]) or, once no history needs it either, dropped.
//!
//! The rows are the bindings of [`crate::ledger::binding`]: webhook events, stored
//! idempotency answers, payments' bank references, webhook endpoints' URLs, API keys and their
//! ends, merchants' payee policies and their payees, console operators (their sessions are
//! not moved: they end, and the operator signs in again). Each is checked under the key it names (a retired one included: this is what reads
//! them) and only a row whose MAC holds is sealed again; one that fails (edited, or under a
//! key the ring lacks) is left as it is, counted and named, and stays refused. History (event
//! chains, checkpoints) is never rewritten: it keeps verifying under the old key.
//!
//! Each batch runs in one transaction that locks its rows (`FOR NO KEY UPDATE`) between the
//! check and the write, so a row changed meanwhile by a replica (a key rotated, an endpoint
//! edited: rewritten under the current key anyway) or by anyone else is never sealed from a
//! stale read. It runs beside live replicas, on a session straight to the primary, like
//! `ledger seal`.
//!
//! What it cannot tell: a row forged with the old key itself. If that key leaked, every row
//! sealed under it is what its holder could have written; compare `ledger verify` with the
//! checkpoint log line first, and revoke and re-issue the API keys (`merchant revoke-keys`)
//! rather than reseal them.

use super::binding::{self, StoredApiKey, WebhookEventFacts};
use super::keys::LedgerKeys;
use sqlx::PgPool;
use uuid::Uuid;

/// Rows checked and sealed per transaction.
const BATCH: i64 = 500;

/// What [`reseal`] moved to the current key, and what it refused.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resealed {
    /// The key everything was moved to.
    pub key_id: String,
    pub webhook_events: u64,
    pub idempotency_answers: u64,
    pub bank_links: u64,
    pub webhook_endpoints: u64,
    pub api_keys: u64,
    pub api_key_lifetimes: u64,
    pub payee_policies: u64,
    pub payees: u64,
    pub operators: u64,
    /// Rows under an older key whose MAC does not hold: left as they are (still refused).
    pub refused: u64,
    /// The first of them: which row, and why.
    pub first_refused: Option<String>,
    /// Open payments (awaiting authorization, authorized) with ledger events signed with an
    /// older key. Their events are not rewritten; a decision read from such an event (the
    /// signing link the hop follows, the merchant's cancel, a submission attempt) is refused
    /// once that key is retired, so retire it when this is 0: they end within the late-signing
    /// horizon and the bank's own time.
    pub open_payments_with_older_key_events: u64,
}

impl Resealed {
    fn refuse(&mut self, what: String) {
        self.refused += 1;
        if self.first_refused.is_none() {
            tracing::warn!(row = %what, "not resealed");
            self.first_refused = Some(what);
        }
    }

    /// Logs the counts.
    pub fn log(&self) {
        tracing::info!(
            key_id = %self.key_id,
            webhook_events = self.webhook_events,
            idempotency_answers = self.idempotency_answers,
            bank_links = self.bank_links,
            webhook_endpoints = self.webhook_endpoints,
            api_keys = self.api_keys,
            api_key_lifetimes = self.api_key_lifetimes,
            payee_policies = self.payee_policies,
            payees = self.payees,
            operators = self.operators,
            refused = self.refused,
            open_payments_with_older_key_events = self.open_payments_with_older_key_events,
            "resealed the live rows under older ledger keys (ledger reseal)"
        );
    }
}

/// Why a stored MAC under `key_id` does not hold, `expected` being the MAC of the row's content
/// under that key (`None`: the ring lacks it).
fn old_mac_problem(expected: Option<[u8; 32]>, stored: &[u8], key_id: &str) -> Option<String> {
    match expected {
        None => Some(format!(
            "its MAC key {key_id:?} is not in the ledger key ring (PISGATE__LEDGER__PREVIOUS_KEYS)"
        )),
        Some(e) if aws_lc_rs::constant_time::verify_slices_are_equal(&e, stored).is_ok() => None,
        Some(_) => Some("its content is not what was sealed (edited)".to_owned()),
    }
}

/// Seals every live row under a key other than the ring's current one again under the current
/// key, after checking it under its own (retired keys included).
pub async fn reseal(pool: &PgPool, keys: &LedgerKeys) -> Result<Resealed, sqlx::Error> {
    let old = keys.unretired();
    let current = keys.current_id().to_owned();
    let mut out = Resealed {
        key_id: current.clone(),
        ..Resealed::default()
    };
    for kind in [
        ByUuid::WebhookEvents,
        ByUuid::BankLinks,
        ByUuid::WebhookEndpoints,
        ByUuid::PayeePolicies,
        ByUuid::Operators,
    ] {
        reseal_by_uuid(kind, pool, &old, &current, &mut out).await?;
    }
    idempotency_answers(pool, &old, &current, &mut out).await?;
    api_keys(pool, &old, &current, &mut out).await?;
    payees(pool, &old, &current, &mut out).await?;
    out.open_payments_with_older_key_events = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM payments p
           WHERE p.status IN ('awaiting_authorization', 'authorized')
             AND EXISTS (SELECT 1 FROM payment_events e
                         WHERE e.payment_id = p.id AND e.key_id <> $1)"#,
        current
    )
    .fetch_one(pool)
    .await?
    .try_into()
    .unwrap_or_default();
    Ok(out)
}

/// The kinds whose rows are named by a uuid and carry one MAC.
#[derive(Clone, Copy)]
enum ByUuid {
    WebhookEvents,
    BankLinks,
    WebhookEndpoints,
    /// Merchants, their payee policy.
    PayeePolicies,
    /// Console operators (their MAC records whether they are disabled).
    Operators,
}

/// A row under an older key, checked: its id, and its MAC under the current key or why its
/// own does not hold.
struct Checked {
    id: Uuid,
    resealed: Result<Vec<u8>, String>,
}

/// One batch of `kind` after `cursor`, locked in `tx` and checked.
async fn fetch_checked(
    kind: ByUuid,
    tx: &mut sqlx::PgConnection,
    old: &LedgerKeys,
    current: &str,
    cursor: Uuid,
) -> Result<Vec<Checked>, sqlx::Error> {
    let checked = |id: Uuid, mac: &[u8], key_id: &str, under: &dyn Fn(&str) -> Option<[u8; 32]>| {
        let resealed = match old_mac_problem(under(key_id), mac, key_id) {
            Some(why) => Err(why),
            None => Ok(under(current)
                .expect("the current key is in its own ring")
                .to_vec()),
        };
        Checked { id, resealed }
    };
    Ok(match kind {
        ByUuid::WebhookEvents => sqlx::query!(
            r#"SELECT id, merchant_id, payment_id, event_type, payload, created_at,
                      payload_mac AS "mac!", mac_key_id AS "key_id!"
               FROM webhook_events
               WHERE mac_key_id IS NOT NULL AND mac_key_id <> $1 AND id > $2
               ORDER BY id LIMIT $3
               FOR NO KEY UPDATE"#,
            current,
            cursor,
            BATCH,
        )
        .fetch_all(tx)
        .await?
        .into_iter()
        .map(|r| {
            let facts = WebhookEventFacts {
                id: r.id,
                merchant_id: r.merchant_id,
                payment_id: r.payment_id,
                event_type: &r.event_type,
                created_at: r.created_at,
                payload: &r.payload,
            };
            checked(r.id, &r.mac, &r.key_id, &|k| {
                binding::webhook_mac(old, k, &facts)
            })
        })
        .collect(),
        ByUuid::BankLinks => sqlx::query!(
            r#"SELECT id, bank_payment_id AS "bank_payment_id!", bank_links,
                      bank_links_mac AS "mac!", bank_links_mac_key_id AS "key_id!"
               FROM payments
               WHERE bank_links_mac_key_id IS NOT NULL AND bank_links_mac_key_id <> $1
                 AND bank_links_mac IS NOT NULL AND bank_payment_id IS NOT NULL AND id > $2
               ORDER BY id LIMIT $3
               FOR NO KEY UPDATE"#,
            current,
            cursor,
            BATCH,
        )
        .fetch_all(tx)
        .await?
        .into_iter()
        .map(|r| {
            checked(r.id, &r.mac, &r.key_id, &|k| {
                binding::bank_links_mac(old, k, r.id, &r.bank_payment_id, &r.bank_links)
            })
        })
        .collect(),
        ByUuid::WebhookEndpoints => sqlx::query!(
            r#"SELECT id, merchant_id, url, url_mac AS "mac!", url_mac_key_id AS "key_id!"
               FROM webhook_endpoints
               WHERE url_mac_key_id IS NOT NULL AND url_mac_key_id <> $1
                 AND url_mac IS NOT NULL AND id > $2
               ORDER BY id LIMIT $3
               FOR NO KEY UPDATE"#,
            current,
            cursor,
            BATCH,
        )
        .fetch_all(tx)
        .await?
        .into_iter()
        .map(|r| {
            checked(r.id, &r.mac, &r.key_id, &|k| {
                binding::endpoint_url_mac(old, k, r.id, r.merchant_id, &r.url)
            })
        })
        .collect(),
        ByUuid::PayeePolicies => sqlx::query!(
            r#"SELECT id, payees AS "payees!: String", payees_mac AS "mac!",
                      payees_mac_key_id AS "key_id!"
               FROM merchants
               WHERE payees_mac_key_id IS NOT NULL AND payees_mac_key_id <> $1
                 AND payees_mac IS NOT NULL AND id > $2
               ORDER BY id LIMIT $3
               FOR NO KEY UPDATE"#,
            current,
            cursor,
            BATCH,
        )
        .fetch_all(tx)
        .await?
        .into_iter()
        .map(|r| {
            checked(r.id, &r.mac, &r.key_id, &|k| {
                binding::payee_policy_mac(old, k, r.id, &r.payees)
            })
        })
        .collect(),
        ByUuid::Operators => sqlx::query!(
            r#"SELECT id, email, password_hash, disabled_at IS NOT NULL AS "disabled!",
                      mac AS "mac!", mac_key_id AS "key_id!"
               FROM operators
               WHERE mac_key_id IS NOT NULL AND mac_key_id <> $1 AND mac IS NOT NULL
                 AND id > $2
               ORDER BY id LIMIT $3
               FOR NO KEY UPDATE"#,
            current,
            cursor,
            BATCH,
        )
        .fetch_all(tx)
        .await?
        .into_iter()
        .map(|r| {
            checked(r.id, &r.mac, &r.key_id, &|k| {
                binding::operator_mac(old, k, r.id, &r.email, &r.password_hash, r.disabled)
            })
        })
        .collect(),
    })
}

/// Writes the new MACs of one batch of `kind`; how many rows took them.
async fn write_macs(
    kind: ByUuid,
    tx: &mut sqlx::PgConnection,
    ids: &[Uuid],
    macs: &[Vec<u8>],
    current: &str,
) -> Result<u64, sqlx::Error> {
    let done = match kind {
        ByUuid::WebhookEvents => {
            sqlx::query!(
                "UPDATE webhook_events e SET payload_mac = u.mac, mac_key_id = $3
             FROM unnest($1::uuid[], $2::bytea[]) AS u(id, mac) WHERE e.id = u.id",
                ids,
                macs,
                current,
            )
            .execute(tx)
            .await?
        }
        ByUuid::BankLinks => {
            sqlx::query!(
                "UPDATE payments p SET bank_links_mac = u.mac, bank_links_mac_key_id = $3
             FROM unnest($1::uuid[], $2::bytea[]) AS u(id, mac) WHERE p.id = u.id",
                ids,
                macs,
                current,
            )
            .execute(tx)
            .await?
        }
        ByUuid::WebhookEndpoints => {
            sqlx::query!(
                "UPDATE webhook_endpoints w SET url_mac = u.mac, url_mac_key_id = $3
             FROM unnest($1::uuid[], $2::bytea[]) AS u(id, mac) WHERE w.id = u.id",
                ids,
                macs,
                current,
            )
            .execute(tx)
            .await?
        }
        ByUuid::PayeePolicies => {
            sqlx::query!(
                "UPDATE merchants m SET payees_mac = u.mac, payees_mac_key_id = $3
             FROM unnest($1::uuid[], $2::bytea[]) AS u(id, mac) WHERE m.id = u.id",
                ids,
                macs,
                current,
            )
            .execute(tx)
            .await?
        }
        ByUuid::Operators => {
            sqlx::query!(
                "UPDATE operators o SET mac = u.mac, mac_key_id = $3
             FROM unnest($1::uuid[], $2::bytea[]) AS u(id, mac) WHERE o.id = u.id",
                ids,
                macs,
                current,
            )
            .execute(tx)
            .await?
        }
    };
    Ok(done.rows_affected())
}

/// Reseals every row of `kind` under an older key, batch by batch, each batch one
/// transaction.
async fn reseal_by_uuid(
    kind: ByUuid,
    pool: &PgPool,
    old: &LedgerKeys,
    current: &str,
    out: &mut Resealed,
) -> Result<(), sqlx::Error> {
    let what = match kind {
        ByUuid::WebhookEvents => "webhook event",
        ByUuid::BankLinks => "payment (its bank reference)",
        ByUuid::WebhookEndpoints => "webhook endpoint",
        ByUuid::PayeePolicies => "merchant (its payee policy)",
        ByUuid::Operators => "operator",
    };
    let mut cursor = Uuid::nil();
    loop {
        let mut tx = pool.begin().await?;
        let rows = fetch_checked(kind, &mut tx, old, current, cursor).await?;
        let n = rows.len();
        let (mut ids, mut macs) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for r in rows {
            cursor = r.id;
            match r.resealed {
                Ok(mac) => {
                    ids.push(r.id);
                    macs.push(mac);
                }
                Err(why) => out.refuse(format!("{what} {}: {why}", r.id)),
            }
        }
        if !ids.is_empty() {
            let done = write_macs(kind, &mut tx, &ids, &macs, current).await?;
            match kind {
                ByUuid::WebhookEvents => out.webhook_events += done,
                ByUuid::BankLinks => out.bank_links += done,
                ByUuid::WebhookEndpoints => out.webhook_endpoints += done,
                ByUuid::PayeePolicies => out.payee_policies += done,
                ByUuid::Operators => out.operators += done,
            }
        }
        tx.commit().await?;
        if (n as i64) < BATCH {
            return Ok(());
        }
    }
}

async fn idempotency_answers(
    pool: &PgPool,
    old: &LedgerKeys,
    current: &str,
    out: &mut Resealed,
) -> Result<(), sqlx::Error> {
    let mut cursor = (Uuid::nil(), String::new());
    loop {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT merchant_id, key AS "key!: String", response_status AS "status!",
                      response_body AS "body!", response_mac AS "mac!",
                      response_mac_key_id AS "key_id!"
               FROM idempotency_keys
               WHERE response_mac_key_id IS NOT NULL AND response_mac_key_id <> $1
                 AND response_status IS NOT NULL AND response_body IS NOT NULL
                 AND (merchant_id, key) > ($2, $3::text)
               ORDER BY merchant_id, key LIMIT $4
               FOR NO KEY UPDATE"#,
            current,
            cursor.0,
            cursor.1,
            BATCH,
        )
        .fetch_all(&mut *tx)
        .await?;
        let n = rows.len();
        let (mut merchants, mut answer_keys, mut macs) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in rows {
            cursor = (r.merchant_id, r.key.clone());
            let status = u16::try_from(r.status).unwrap_or(0);
            let expected = binding::idempotency_answer_mac(
                old,
                &r.key_id,
                r.merchant_id,
                &r.key,
                status,
                &r.body,
            );
            if let Some(why) = old_mac_problem(expected, &r.mac, &r.key_id) {
                // The key is the merchant's own label: named by merchant only.
                out.refuse(format!(
                    "an idempotency answer of merchant {}: {why}",
                    r.merchant_id
                ));
                continue;
            }
            let mac = binding::idempotency_answer_mac(
                old,
                current,
                r.merchant_id,
                &r.key,
                status,
                &r.body,
            )
            .expect("the current key is in its own ring");
            merchants.push(r.merchant_id);
            answer_keys.push(r.key);
            macs.push(mac.to_vec());
        }
        if !merchants.is_empty() {
            out.idempotency_answers += sqlx::query!(
                "UPDATE idempotency_keys k SET response_mac = u.mac, response_mac_key_id = $4
                 FROM unnest($1::uuid[], $2::text[], $3::bytea[]) AS u(merchant_id, key, mac)
                 WHERE k.merchant_id = u.merchant_id AND k.key = u.key",
                &merchants,
                &answer_keys,
                &macs,
                current,
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        if (n as i64) < BATCH {
            return Ok(());
        }
    }
}

/// API keys: both MACs of a key are checked under their keys, as authentication does
/// ([`binding::api_key_row_problem`]), before either is moved; a key that fails either
/// keeps both as they are. Revoked keys carry no MAC and are left alone.
async fn api_keys(
    pool: &PgPool,
    old: &LedgerKeys,
    current: &str,
    out: &mut Resealed,
) -> Result<(), sqlx::Error> {
    let mut cursor = String::new();
    loop {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT key_id, merchant_id, key_hash, key_mac, key_mac_key_id,
                      expires_at, rotated_away_at, lifetime_mac, lifetime_mac_key_id
               FROM api_keys
               WHERE revoked_at IS NULL AND key_id > $2
                 AND (key_mac_key_id <> $1 OR lifetime_mac_key_id <> $1)
               ORDER BY key_id LIMIT $3
               FOR NO KEY UPDATE"#,
            current,
            cursor,
            BATCH,
        )
        .fetch_all(&mut *tx)
        .await?;
        let n = rows.len();
        let (mut ids, mut key_macs, mut lifetime_macs) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in rows {
            cursor.clone_from(&r.key_id);
            let stored = StoredApiKey {
                api_key_id: &r.key_id,
                merchant_id: r.merchant_id,
                key_hash: &r.key_hash,
                key_mac: r.key_mac.as_deref(),
                key_mac_key_id: r.key_mac_key_id.as_deref(),
                expires_at: r.expires_at,
                rotated_away_at: r.rotated_away_at,
                lifetime_mac: r.lifetime_mac.as_deref(),
                lifetime_mac_key_id: r.lifetime_mac_key_id.as_deref(),
            };
            if let Some(why) = binding::api_key_row_problem(Some(old), &stored) {
                out.refuse(format!("API key {}: {why}", r.key_id));
                continue;
            }
            let key_mac = binding::api_key_mac(old, current, &r.key_id, r.merchant_id, &r.key_hash)
                .expect("the current key is in its own ring");
            let lifetime_mac = binding::api_key_lifetime_mac(
                old,
                current,
                &r.key_id,
                r.expires_at,
                r.rotated_away_at,
            )
            .expect("the current key is in its own ring");
            if r.key_mac_key_id.as_deref() != Some(current) {
                out.api_keys += 1;
            }
            if r.lifetime_mac_key_id.as_deref() != Some(current) {
                out.api_key_lifetimes += 1;
            }
            ids.push(r.key_id);
            key_macs.push(key_mac.to_vec());
            lifetime_macs.push(lifetime_mac.to_vec());
        }
        if !ids.is_empty() {
            sqlx::query!(
                "UPDATE api_keys k SET key_mac = u.key_mac, key_mac_key_id = $4,
                        lifetime_mac = u.lifetime_mac, lifetime_mac_key_id = $4
                 FROM unnest($1::text[], $2::bytea[], $3::bytea[]) AS u(id, key_mac, lifetime_mac)
                 WHERE k.key_id = u.id",
                &ids,
                &key_macs,
                &lifetime_macs,
                current,
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if (n as i64) < BATCH {
            return Ok(());
        }
    }
}

/// The registered payees under an older key, in one transaction (operators register them one
/// by one: they are few).
async fn payees(
    pool: &PgPool,
    old: &LedgerKeys,
    current: &str,
    out: &mut Resealed,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query!(
        r#"SELECT merchant_id, account_type, account, mac AS "mac!", mac_key_id AS "key_id!"
           FROM merchant_payees
           WHERE mac_key_id IS NOT NULL AND mac_key_id <> $1 AND mac IS NOT NULL
           ORDER BY merchant_id, account_type, account
           FOR NO KEY UPDATE"#,
        current,
    )
    .fetch_all(&mut *tx)
    .await?;
    let (mut merchants, mut types, mut accounts, mut macs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let under =
            |k: &str| binding::payee_mac(old, k, r.merchant_id, &r.account_type, &r.account);
        match old_mac_problem(under(&r.key_id), &r.mac, &r.key_id) {
            Some(why) => out.refuse(format!(
                "payee of merchant {} ({}): {why}",
                r.merchant_id, r.account_type
            )),
            None => {
                macs.push(
                    under(current)
                        .expect("the current key is in its own ring")
                        .to_vec(),
                );
                merchants.push(r.merchant_id);
                types.push(r.account_type);
                accounts.push(r.account);
            }
        }
    }
    if !merchants.is_empty() {
        out.payees += sqlx::query!(
            "UPDATE merchant_payees p SET mac = u.mac, mac_key_id = $5
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[])
                  AS u(merchant_id, account_type, account, mac)
             WHERE p.merchant_id = u.merchant_id AND p.account_type = u.account_type
               AND p.account = u.account",
            &merchants,
            &types,
            &accounts,
            &macs,
            current,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(())
}
