//! The merchant's event log: every row of `webhook_events`, read back for `GET /v1/events`.
//!
//! [`crate::ledger::webhooks::enqueue`] writes one event per status change whether or not
//! the merchant has an endpoint, so this log is complete even for a merchant that never
//! subscribed; events are never deleted. The payload is the webhook body itself, so the API
//! answers the same id and the same bytes a receiver got. Reads only; never another
//! merchant's rows.

use super::Db;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// One event as stored: its payload is the webhook body (`id`, `type`, `timestamp`, `data`).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: Uuid,
    pub payment_id: Option<Uuid>,
    pub event_type: String,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// What a list of events is narrowed to.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub payment_id: Option<Uuid>,
    pub created_gte: Option<DateTime<Utc>>,
    pub created_lt: Option<DateTime<Utc>>,
    /// Continue after this (created_at, id), newest first.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// A merchant's events, newest first, at most `limit`.
pub async fn list(
    pool: &Db,
    merchant_id: Uuid,
    filter: &EventFilter,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let (after_ts, after_id) = filter.after.unzip();
    sqlx::query_as!(
        StoredEvent,
        r#"SELECT id, payment_id, event_type, payload, created_at
           FROM webhook_events
           WHERE merchant_id = $1
             AND ($2::text IS NULL OR event_type = $2)
             AND ($3::uuid IS NULL OR payment_id = $3)
             AND ($4::timestamptz IS NULL OR created_at >= $4)
             AND ($5::timestamptz IS NULL OR created_at < $5)
             AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::uuid))
           ORDER BY created_at DESC, id DESC
           LIMIT $8"#,
        merchant_id,
        filter.event_type,
        filter.payment_id,
        filter.created_gte,
        filter.created_lt,
        after_ts,
        after_id,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// One of the merchant's events; another merchant's is not found.
pub async fn get(
    pool: &Db,
    merchant_id: Uuid,
    id: Uuid,
) -> Result<Option<StoredEvent>, sqlx::Error> {
    sqlx::query_as!(
        StoredEvent,
        r#"SELECT id, payment_id, event_type, payload, created_at
           FROM webhook_events WHERE id = $1 AND merchant_id = $2"#,
        id,
        merchant_id,
    )
    .fetch_optional(pool)
    .await
}
