//! Payments: the current state (one row each) and every change to it, each written in one
//! transaction with its ledger event.
//!
//! A status changes only through [`transition`], which asks the domain status machine
//! first and appends the ledger event in the same transaction; the `WHERE status = old`
//! guard makes a concurrent change lose instead of overwriting.

use crate::domain::{PaymentStatus, Transition};
use crate::ledger::events::{self, NewEvent};
use crate::ledger::webhooks;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct PaymentRecord {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub status: String,
    pub bank: String,
    pub bank_status: Option<String>,
    pub bank_payment_id: Option<String>,
    pub authorization_url: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub country: String,
    pub request: serde_json::Value,
    pub merchant_reference: Option<String>,
    pub psu_id: Option<String>,
    pub psu_key: Option<String>,
    pub return_url: String,
    pub metadata: serde_json::Value,
    pub state_expires_at: Option<DateTime<Utc>>,
    pub state_used_at: Option<DateTime<Utc>>,
    pub failure_code: Option<String>,
    pub failure_detail: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Standing orders: executions still to come as the bank last counted them.
    pub recurring_remaining: Option<i32>,
    /// Standing orders: executions seen so far.
    pub recurring_executions: i32,
}

impl PaymentRecord {
    pub fn status(&self) -> PaymentStatus {
        PaymentStatus::parse(&self.status).unwrap_or(PaymentStatus::Failed)
    }
}

/// What the API hands over to create a payment.
pub struct NewPayment<'a> {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub country: &'a str,
    pub request: serde_json::Value,
    pub merchant_reference: Option<&'a str>,
    pub psu_id: Option<&'a str>,
    pub return_url: &'a str,
    pub metadata: serde_json::Value,
    pub state_hash: &'a [u8],
    pub state_expires_at: DateTime<Utc>,
}

macro_rules! select_payment {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            PaymentRecord,
            "SELECT id, merchant_id, status, bank, bank_status, bank_payment_id, authorization_url,
                    amount_minor, currency, country, request, merchant_reference, psu_id, psu_key,
                    return_url, metadata, state_expires_at, state_used_at, failure_code,
                    failure_detail, created_at, updated_at, recurring_remaining,
                    recurring_executions
             FROM payments " + $tail
            $(, $arg)*
        )
    };
}

/// The channel pollers listen on; a notification means "a payment became due".
pub const POLL_CHANNEL: &str = "pisgate_poll";

/// Inserts a payment in `awaiting_authorization` with its `created` event. It is first due
/// for the poller when its signing window closes: if the bank's answer is never recorded
/// (a crash mid-initiation), the poller expires it then.
pub async fn insert(conn: &mut PgConnection, p: NewPayment<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO payments (id, merchant_id, status, amount_minor, currency, country, request,
                                 merchant_reference, psu_id, return_url, metadata, state_hash,
                                 state_expires_at, next_poll_at)
           VALUES ($1, $2, 'awaiting_authorization', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                   $12)"#,
        p.id,
        p.merchant_id,
        p.amount_minor,
        p.currency,
        p.country,
        p.request,
        p.merchant_reference,
        p.psu_id,
        p.return_url,
        p.metadata,
        p.state_hash,
        p.state_expires_at,
    )
    .execute(&mut *conn)
    .await?;
    events::append(
        conn,
        p.id,
        NewEvent {
            kind: "created".into(),
            old_status: None,
            new_status: Some(PaymentStatus::AwaitingAuthorization),
            bank_status: None,
            detail: json!({
                "amount_minor": p.amount_minor,
                "currency": p.currency,
                "country": p.country,
            }),
        },
    )
    .await?;
    Ok(())
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<PaymentRecord>, sqlx::Error> {
    select_payment!("WHERE id = $1", id)
        .fetch_optional(conn)
        .await
}

/// Locks the row for the rest of the caller's transaction.
pub async fn get_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<PaymentRecord>, sqlx::Error> {
    select_payment!("WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(conn)
        .await
}

/// A merchant's payment; another merchant's id is simply not found.
pub async fn get_for_merchant(
    pool: &PgPool,
    merchant_id: Uuid,
    id: Uuid,
) -> Result<Option<PaymentRecord>, sqlx::Error> {
    select_payment!("WHERE id = $1 AND merchant_id = $2", id, merchant_id)
        .fetch_optional(pool)
        .await
}

/// Finds the payment an OAuth `state` belongs to and locks it.
pub async fn find_by_state_for_update(
    conn: &mut PgConnection,
    state_hash: &[u8],
) -> Result<Option<PaymentRecord>, sqlx::Error> {
    select_payment!("WHERE state_hash = $1 FOR UPDATE", state_hash)
        .fetch_optional(conn)
        .await
}

/// Filters and keyset cursor for listing.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub status: Option<String>,
    pub created_gte: Option<DateTime<Utc>>,
    pub created_lt: Option<DateTime<Utc>>,
    /// Continue after this (created_at, id), newest first.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// Newest first, at most `limit` rows.
pub async fn list_for_merchant(
    pool: &PgPool,
    merchant_id: Uuid,
    filter: &ListFilter,
    limit: i64,
) -> Result<Vec<PaymentRecord>, sqlx::Error> {
    let (after_ts, after_id) = match filter.after {
        Some((ts, id)) => (Some(ts), Some(id)),
        None => (None, None),
    };
    select_payment!(
        "WHERE merchant_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::timestamptz IS NULL OR created_at >= $3)
           AND ($4::timestamptz IS NULL OR created_at < $4)
           AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
         ORDER BY created_at DESC, id DESC
         LIMIT $7",
        merchant_id,
        filter.status,
        filter.created_gte,
        filter.created_lt,
        after_ts,
        after_id,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// Records the bank's answer to the initiation.
pub async fn record_initiated(
    conn: &mut PgConnection,
    id: Uuid,
    bank_payment_id: &str,
    authorization_url: &str,
    bank_status: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE payments
           SET bank_payment_id = $2, authorization_url = $3, bank_status = $4,
               next_poll_at = now(), poll_failures = 0
           WHERE id = $1"#,
        id,
        bank_payment_id,
        authorization_url,
        bank_status,
    )
    .execute(&mut *conn)
    .await?;
    events::append(
        conn,
        id,
        NewEvent {
            kind: "initiated".into(),
            old_status: None,
            new_status: None,
            bank_status: bank_status.map(str::to_owned),
            detail: json!({ "bank_payment_id": bank_payment_id }),
        },
    )
    .await?;
    // Wakes the pollers at commit: the new payment is due now.
    sqlx::query!("SELECT pg_notify($1, '') AS \"n: ()\"", POLL_CHANNEL)
        .fetch_one(&mut *conn)
        .await?;
    Ok(())
}

/// Gives a resumed payment a fresh OAuth state (the old one was never shown to anyone).
pub async fn replace_state(
    conn: &mut PgConnection,
    id: Uuid,
    state_hash: &[u8],
    state_expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payments SET state_hash = $2, state_expires_at = $3, state_used_at = NULL WHERE id = $1",
        id,
        state_hash,
        state_expires_at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the state used (single use), without changing the status.
pub async fn consume_state(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payments SET state_used_at = now() WHERE id = $1",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_psu_key(
    conn: &mut PgConnection,
    id: Uuid,
    psu_key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payments SET psu_key = $2 WHERE id = $1",
        id,
        psu_key
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A status change request.
pub struct Change<'a> {
    pub to: PaymentStatus,
    pub bank_status: Option<&'a str>,
    pub kind: &'a str,
    pub detail: serde_json::Value,
    pub failure: Option<(&'a str, &'a str)>,
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("payment {0} not found")]
    NotFound(Uuid),
    #[error("{0}")]
    Refused(#[from] crate::domain::status::TransitionError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Moves a payment to a new status through the domain status machine, in the caller's
/// transaction, with its ledger event. Returns the old status. A change to the same status
/// only records the bank status if it changed (no event otherwise).
pub async fn transition(
    conn: &mut PgConnection,
    id: Uuid,
    change: Change<'_>,
) -> Result<Option<PaymentStatus>, TransitionError> {
    let current = get_for_update(conn, id)
        .await?
        .ok_or(TransitionError::NotFound(id))?;
    let from = current.status();
    if let Transition::Unchanged(_) = from.transition(change.to)? {
        if change.bank_status.is_some() && change.bank_status != current.bank_status.as_deref() {
            sqlx::query!(
                "UPDATE payments SET bank_status = $2 WHERE id = $1",
                id,
                change.bank_status
            )
            .execute(&mut *conn)
            .await?;
            events::append(
                conn,
                id,
                NewEvent {
                    kind: "bank_status_changed".into(),
                    old_status: Some(from),
                    new_status: Some(from),
                    bank_status: change.bank_status.map(str::to_owned),
                    detail: change.detail,
                },
            )
            .await?;
        }
        return Ok(None);
    }
    let (failure_code, failure_detail) = change.failure.unzip();
    sqlx::query!(
        r#"UPDATE payments
           SET status = $2,
               bank_status = COALESCE($3, bank_status),
               failure_code = COALESCE($4, failure_code),
               failure_detail = COALESCE($5, failure_detail),
               authorized_at = CASE WHEN $2 = 'authorized' THEN now() ELSE authorized_at END,
               finalized_at = CASE WHEN $6 THEN now() ELSE finalized_at END,
               next_poll_at = CASE WHEN $6 THEN NULL ELSE next_poll_at END,
               poll_owner = CASE WHEN $6 THEN NULL ELSE poll_owner END
           WHERE id = $1 AND status = $7"#,
        id,
        change.to.as_str(),
        change.bank_status,
        failure_code,
        failure_detail,
        change.to.is_final(),
        from.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    let event = events::append(
        conn,
        id,
        NewEvent {
            kind: change.kind.to_owned(),
            old_status: Some(from),
            new_status: Some(change.to),
            bank_status: change.bank_status.map(str::to_owned),
            detail: change.detail,
        },
    )
    .await?;
    // The merchant hears of it through the outbox, committed with the change or not at all.
    let after = get(conn, id).await?.ok_or(TransitionError::NotFound(id))?;
    webhooks::enqueue(
        conn,
        &after,
        &format!("payment.{}", change.to.as_str()),
        json!({ "previous_status": from.as_str(), "ledger_seq": event.seq }),
    )
    .await?;
    Ok(Some(from))
}

/// Appends an event that changes no status (a callback seen, a token exchanged, a cancel
/// asked for), locking the payment row like every other write.
pub async fn note(
    conn: &mut PgConnection,
    id: Uuid,
    kind: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    events::append(
        conn,
        id,
        NewEvent {
            kind: kind.to_owned(),
            old_status: None,
            new_status: None,
            bank_status: None,
            detail,
        },
    )
    .await?;
    Ok(())
}
