//! Disagreements between a payment's final status and a later read of the bank.
//!
//! pisgate enters a final status only on the bank's evidence (the truth rule in
//! [`crate::domain::status`]), and final states never change. If a bank read after that
//! still contradicts it about whether money moves ([`PaymentStatus::disagrees_with_bank`]),
//! something is wrong that no code path may paper over: the final status stays, the bank's
//! status is kept beside it as observed (on the payment and here), and the disagreement is
//! made loud: a `bank_disagreement` ledger event, one row per payment and bank status in
//! `bank_disagreements` (it survives restarts and feeds the operator console's attention
//! page), an error log line and `pisgate_bank_disagreements_total`. A disagreement seen again
//! (the same bank status on a later read) only moves `last_seen_at`: counted, logged and
//! chained once.
//!
//! Never done here: changing the payment's status, or logging anything but ids and statuses.

use super::events::{self, NewEvent};
use crate::domain::PaymentStatus;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

/// Records that the bank said `bank_status` (mapped to `bank`) about a payment pisgate holds
/// as `ours` (final), in the caller's transaction. Returns whether it is new.
#[tracing::instrument(skip_all, fields(payment_id = %id, status = ours.as_str(), bank_status))]
pub async fn record(
    conn: &mut PgConnection,
    id: Uuid,
    ours: PaymentStatus,
    bank_status: &str,
    bank: PaymentStatus,
    source: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let new = sqlx::query_scalar!(
        r#"INSERT INTO bank_disagreements (payment_id, status, bank_status)
           VALUES ($1, $2, $3)
           ON CONFLICT (payment_id, bank_status)
           DO UPDATE SET last_seen_at = now(), seen = bank_disagreements.seen + 1
           RETURNING (xmax = 0) AS "new!""#,
        id,
        ours.as_str(),
        bank_status,
    )
    .fetch_one(&mut *conn)
    .await?;
    if new {
        events::append(
            conn,
            id,
            NewEvent {
                kind: "bank_disagreement".into(),
                old_status: Some(ours),
                new_status: Some(ours),
                // In the detail only: the event's own bank status is what the row shows
                // (`ledger verify` binds the two), and a stale read never moves that.
                bank_status: None,
                detail: json!({
                    "status": ours.as_str(),
                    "bank_status": bank_status,
                    "bank_means": bank.as_str(),
                    "seen_by": source,
                }),
            },
        )
        .await?;
        metrics::counter!("pisgate_bank_disagreements_total").increment(1);
        tracing::error!(
            status = ours.as_str(),
            bank_status,
            bank_means = bank.as_str(),
            "a final status disagrees with the bank; both are kept, nothing is overwritten"
        );
    }
    Ok(new)
}

/// A disagreement as the console shows it.
#[derive(Debug, Clone)]
pub struct Disagreement {
    pub payment_id: Uuid,
    pub status: String,
    pub bank_status: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub seen: i32,
}

/// The disagreements of one payment, oldest first.
pub async fn for_payment(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Vec<Disagreement>, sqlx::Error> {
    sqlx::query_as!(
        Disagreement,
        "SELECT payment_id, status, bank_status, first_seen_at, last_seen_at, seen
           FROM bank_disagreements WHERE payment_id = $1 ORDER BY id",
        id
    )
    .fetch_all(conn)
    .await
}
