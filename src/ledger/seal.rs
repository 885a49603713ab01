//! Sealing at the upgrade that introduced a binding: the webhook events (migration
//! 20261205000030) and idempotency answers (20261206200000) already written then get the
//! ledger MAC every later one is written with.
//!
//! Only the process that applies such a migration seals, right after applying it, with the
//! ledger key: it trusts exactly what the version before it trusted (which sent and replayed
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

/// Rows sealed per statement.
const BATCH: i64 = 500;

/// What [`seal_unbound`] sealed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub webhook_events: u64,
    pub idempotency_answers: u64,
}

/// Whether applying `pending` (migration versions) introduces a binding whose rows written
/// before it must be sealed.
pub fn binds(pending: &[i64]) -> bool {
    pending.contains(&WEBHOOK_EVENTS_BOUND) || pending.contains(&IDEMPOTENCY_ANSWERS_BOUND)
}

/// MACs every webhook event and stored idempotency answer that has none, under the ring's
/// current key. Call only right after this process applied a binding migration ([`binds`]).
pub async fn seal_unbound(pool: &PgPool, keys: &LedgerKeys) -> Result<Sealed, sqlx::Error> {
    let key_id = keys.current_id().to_owned();
    let mut sealed = Sealed::default();
    let mut cursor = Uuid::nil();
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
            sqlx::query!(
                "UPDATE webhook_events SET payload_mac = $2, mac_key_id = $3
                 WHERE id = $1 AND payload_mac IS NULL",
                r.id,
                &mac[..],
                key_id,
            )
            .execute(pool)
            .await?;
            sealed.webhook_events += 1;
        }
        if (n as i64) < BATCH {
            break;
        }
    }
    let mut cursor = (Uuid::nil(), String::new());
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
            sqlx::query!(
                "UPDATE idempotency_keys SET response_mac = $3, response_mac_key_id = $4
                 WHERE merchant_id = $1 AND key = $2 AND response_mac IS NULL",
                r.merchant_id,
                &r.key,
                &mac[..],
                key_id,
            )
            .execute(pool)
            .await?;
            sealed.idempotency_answers += 1;
            cursor = (r.merchant_id, r.key);
        }
        if (n as i64) < BATCH {
            break;
        }
    }
    Ok(sealed)
}
