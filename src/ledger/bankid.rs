//! The BankID orders of a payment's BankID page ([`crate::api::bankid`]): table
//! `bankid_orders`, one row per payment and purpose (`identify`: the shopper's decoupled
//! authorization for their token; `sign`: the signing order of the payment).
//!
//! The claims are the rules:
//! - [`claim_start`]: one order start per shopper action. Under the row lock, a start is
//!   claimed only when no order is running (none started, or the last one ended `failed`)
//!   and no other start is younger than the lease; so two clicks, two tabs or two replicas
//!   never both call the bank (BankID cancels *both* orders when a second one starts for the
//!   shopper). A start the bank refused, or provably never received, gives the claim back
//!   ([`start_failed`] with `release`); a start whose answer was lost keeps it until the
//!   lease passes.
//! - [`claim_poll`]: at most one progress read per payment and purpose per interval, across
//!   replicas (the page's debounce).
//! - [`claim_tokens`]: the bank hands out an identification's tokens once: only the request
//!   holding this claim asks for them.
//!
//! Every step appends a ledger event (`bankid_order_starting`, `bankid_order_started`,
//! `bankid_order_not_started`, `bankid_progress`, `shopper_identified`,
//! `shopper_identification_failed`, `shopper_token_bound`). The bank's order ids are kept
//! in this table only: never in an event, never in a log line; tokens, QR data and autostart
//! tokens never reach the database through this module.

use super::payments::{self, CancelBy, CancelStart, TransitionError, note};
use crate::bank::{BankIdProgress, BankIdPurpose, BankIdState};
use crate::domain::PaymentStatus;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// One BankID order row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub purpose: BankIdPurpose,
    /// Orders started so far for this purpose (each one a shopper's action).
    pub starts: i32,
    pub start_claimed_at: Option<DateTime<Utc>>,
    /// The bank's id of the current order, once its start is recorded.
    pub order_id: Option<String>,
    /// `none` (no order running), `pending`, `complete` or `failed`.
    pub state: String,
    pub hint_code: Option<String>,
    pub bank_status: Option<String>,
    pub tokens_claimed_at: Option<DateTime<Utc>>,
    /// Identification: the shopper key its tokens were stored under.
    pub psu_key: Option<String>,
}

impl Order {
    /// The state as the bank port names it; `None` while no order is running.
    pub fn bank_id_state(&self) -> Option<BankIdState> {
        match self.state.as_str() {
            "pending" => Some(BankIdState::Pending),
            "complete" => Some(BankIdState::Complete),
            "failed" => Some(BankIdState::Failed),
            _ => None,
        }
    }
}

fn state_str(s: BankIdState) -> &'static str {
    match s {
        BankIdState::Pending => "pending",
        BankIdState::Complete => "complete",
        BankIdState::Failed => "failed",
    }
}

fn purpose_of(s: &str) -> BankIdPurpose {
    if s == "sign" {
        BankIdPurpose::Sign
    } else {
        BankIdPurpose::Identify
    }
}

/// The payment's order of `purpose`, if any was ever claimed.
pub async fn get(
    conn: &mut PgConnection,
    id: Uuid,
    purpose: BankIdPurpose,
) -> Result<Option<Order>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT purpose, starts, start_claimed_at, order_id, state, hint_code, bank_status,
                  tokens_claimed_at, psu_key
           FROM bankid_orders WHERE payment_id = $1 AND purpose = $2"#,
        id,
        purpose.as_str()
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Order {
        purpose: purpose_of(&r.purpose),
        starts: r.starts,
        start_claimed_at: r.start_claimed_at,
        order_id: r.order_id,
        state: r.state,
        hint_code: r.hint_code,
        bank_status: r.bank_status,
        tokens_claimed_at: r.tokens_claimed_at,
        psu_key: r.psu_key,
    }))
}

/// What a request to start an order found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartClaim {
    /// This request starts order number `start` (and nobody else until the lease passes).
    Claimed { start: i32 },
    /// Another request started one less than a lease ago; its answer is not recorded (yet).
    Busy,
    /// An order is running or completed (or, with `first_only`, one was started before):
    /// nothing to start.
    NotNow,
}

/// Claims the start of a new order of `purpose`. With `first_only` (a page load, not a
/// button), only the very first order is started. A signing start also records that a
/// shopper may now sign (`hop_opened_at`), which is what the horizon asks.
pub async fn claim_start(
    conn: &mut PgConnection,
    id: Uuid,
    purpose: BankIdPurpose,
    lease: Duration,
    first_only: bool,
) -> Result<StartClaim, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO bankid_orders (payment_id, purpose) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
        id,
        purpose.as_str()
    )
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query!(
        r#"SELECT starts, start_claimed_at, order_id, state FROM bankid_orders
           WHERE payment_id = $1 AND purpose = $2 FOR UPDATE"#,
        id,
        purpose.as_str()
    )
    .fetch_one(&mut *conn)
    .await?;
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
    let claim_live = row.start_claimed_at.is_some_and(|t| t > Utc::now() - lease);
    if row.order_id.is_none() && claim_live && row.state != "failed" {
        return Ok(StartClaim::Busy);
    }
    if (row.order_id.is_some() && row.state != "failed") || (first_only && row.starts > 0) {
        return Ok(StartClaim::NotNow);
    }
    if claim_live && row.state == "failed" && row.order_id.is_none() {
        // A start whose answer was lost: the lease stands before the next one.
        return Ok(StartClaim::Busy);
    }
    let start = sqlx::query_scalar!(
        r#"UPDATE bankid_orders
           SET starts = starts + 1, start_claimed_at = now(), order_id = NULL, state = 'none',
               hint_code = NULL, bank_status = NULL, polled_at = NULL, tokens_claimed_at = NULL,
               updated_at = now()
           WHERE payment_id = $1 AND purpose = $2
           RETURNING starts"#,
        id,
        purpose.as_str()
    )
    .fetch_one(&mut *conn)
    .await?;
    if purpose == BankIdPurpose::Sign {
        sqlx::query!(
            "UPDATE payments SET hop_opened_at = coalesce(hop_opened_at, now()) WHERE id = $1",
            id
        )
        .execute(&mut *conn)
        .await?;
    }
    note(
        conn,
        id,
        "bankid_order_starting",
        json!({ "purpose": purpose.as_str(), "start": start }),
    )
    .await?;
    Ok(StartClaim::Claimed { start })
}

/// Records the bank's answer to start number `start` (its order id and first progress),
/// if it is still the current start. Returns whether it was recorded.
pub async fn record_started(
    conn: &mut PgConnection,
    id: Uuid,
    purpose: BankIdPurpose,
    start: i32,
    order_id: &str,
    progress: &BankIdProgress,
) -> Result<bool, sqlx::Error> {
    let (state, hint_code, bank_status) = (
        progress.state,
        progress.hint_code.as_deref(),
        progress.bank_status.as_str(),
    );
    let recorded = sqlx::query!(
        r#"UPDATE bankid_orders
           SET order_id = $4, state = $5, hint_code = $6, bank_status = $7, updated_at = now()
           WHERE payment_id = $1 AND purpose = $2 AND starts = $3 AND order_id IS NULL"#,
        id,
        purpose.as_str(),
        start,
        order_id,
        state_str(state),
        hint_code,
        bank_status,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    note(
        conn,
        id,
        if recorded {
            "bankid_order_started"
        } else {
            "bankid_order_orphan"
        },
        json!({
            "purpose": purpose.as_str(),
            "start": start,
            "state": state_str(state),
            "hint_code": hint_code,
            "bank_status": bank_status,
        }),
    )
    .await?;
    Ok(recorded)
}

/// Records that start number `start` made no order: the bank refused it or never got it
/// (`release`: the claim is given back, the next action may start again), or its answer was
/// lost (the claim stays until the lease passes). The order shows as failed with `hint`.
pub async fn start_failed(
    conn: &mut PgConnection,
    id: Uuid,
    purpose: BankIdPurpose,
    start: i32,
    hint: &str,
    error_kind: &str,
    release: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE bankid_orders
           SET state = 'failed', hint_code = $4,
               start_claimed_at = CASE WHEN $5 THEN NULL ELSE start_claimed_at END,
               updated_at = now()
           WHERE payment_id = $1 AND purpose = $2 AND starts = $3 AND order_id IS NULL"#,
        id,
        purpose.as_str(),
        start,
        hint,
        release,
    )
    .execute(&mut *conn)
    .await?;
    note(
        conn,
        id,
        "bankid_order_not_started",
        json!({
            "purpose": purpose.as_str(),
            "start": start,
            "error": error_kind,
            "claim_released": release,
        }),
    )
    .await
}

/// Whether a signing order's start for the payment ever went unanswered ([`start_failed`]
/// with the claim kept: the bank may have made the order), by the payment's ledger.
pub async fn sign_start_unknown(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM payment_events
                           WHERE payment_id = $1 AND kind = 'bankid_order_not_started'
                             AND detail->>'purpose' = 'sign'
                             AND detail->'claim_released' = 'false'::jsonb) AS "unknown!""#,
        id
    )
    .fetch_one(&mut *conn)
    .await
}

/// Takes the page's turn to read an order's progress: true at most once per `every` per
/// payment and purpose, across replicas.
pub async fn claim_poll(
    conn: &mut PgConnection,
    id: Uuid,
    purpose: BankIdPurpose,
    every: Duration,
) -> Result<bool, sqlx::Error> {
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::seconds(1));
    let claimed = sqlx::query!(
        "UPDATE bankid_orders SET polled_at = now()
         WHERE payment_id = $1 AND purpose = $2 AND order_id IS NOT NULL
           AND (polled_at IS NULL OR polled_at <= $3)",
        id,
        purpose.as_str(),
        Utc::now() - every
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Records an order's progress as read, if `order_id` is still the current order. A change
/// of state or hint code is a ledger event (`bankid_progress`); a read that changes nothing
/// is not. A completed or failed order stays so.
pub async fn record_progress(
    conn: &mut PgConnection,
    id: Uuid,
    purpose: BankIdPurpose,
    order_id: &str,
    state: BankIdState,
    hint_code: Option<&str>,
    bank_status: &str,
) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query!(
        r#"UPDATE bankid_orders
           SET state = $4, hint_code = $5, bank_status = $6, updated_at = now()
           WHERE payment_id = $1 AND purpose = $2 AND order_id = $3
             AND state IN ('none', 'pending')
             AND (state <> $4 OR hint_code IS DISTINCT FROM $5
                  OR bank_status IS DISTINCT FROM $6)"#,
        id,
        purpose.as_str(),
        order_id,
        state_str(state),
        hint_code,
        bank_status,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if changed {
        note(
            conn,
            id,
            "bankid_progress",
            json!({
                "purpose": purpose.as_str(),
                "state": state_str(state),
                "hint_code": hint_code,
                "bank_status": bank_status,
            }),
        )
        .await?;
    }
    Ok(changed)
}

/// Claims the one token fetch of the completed identification order `order_id`.
pub async fn claim_tokens(
    conn: &mut PgConnection,
    id: Uuid,
    order_id: &str,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE bankid_orders SET tokens_claimed_at = now(), updated_at = now()
         WHERE payment_id = $1 AND purpose = 'identify' AND order_id = $2
           AND state = 'complete' AND tokens_claimed_at IS NULL",
        id,
        order_id
    )
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Records that the identification's tokens were taken and stored under `psu_key` (by the
/// latest-token rule: `stored` false when a newer token of the shopper was already there,
/// which then serves).
pub async fn record_identified(
    conn: &mut PgConnection,
    id: Uuid,
    psu_key: &str,
    issue_seq: i64,
    stored: bool,
    access_expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE bankid_orders SET psu_key = $2, updated_at = now()
         WHERE payment_id = $1 AND purpose = 'identify'",
        id,
        psu_key
    )
    .execute(&mut *conn)
    .await?;
    note(
        conn,
        id,
        "shopper_identified",
        json!({
            "issue_seq": issue_seq,
            "stored": stored,
            "access_expires_at": access_expires_at,
        }),
    )
    .await
}

/// Records that the tokens of a completed identification could not be had: the order is
/// spent (the bank gives tokens once), so it shows as failed and the shopper identifies
/// again. A fetch the bank provably never got (`release`) may be tried again instead.
pub async fn tokens_failed(
    conn: &mut PgConnection,
    id: Uuid,
    order_id: &str,
    error_kind: &str,
    release: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE bankid_orders
           SET tokens_claimed_at = NULL,
               state = CASE WHEN $3 THEN state ELSE 'failed' END,
               hint_code = CASE WHEN $3 THEN hint_code ELSE 'tokensRefused' END,
               start_claimed_at = CASE WHEN $3 THEN start_claimed_at ELSE NULL END,
               updated_at = now()
           WHERE payment_id = $1 AND purpose = 'identify' AND order_id = $2"#,
        id,
        order_id,
        release,
    )
    .execute(&mut *conn)
    .await?;
    note(
        conn,
        id,
        "shopper_identification_failed",
        json!({ "error": error_kind, "retryable": release }),
    )
    .await
}

/// Binds the shopper key to the payment (`payments.psu_key`, whose token the poller and
/// the cancel use from now on), with the event that binds it in the ledger. Once set, it
/// is not changed: a payment belongs to the shopper whose token created it at the bank.
pub async fn bind_psu_key(
    conn: &mut PgConnection,
    id: Uuid,
    psu_key: &str,
) -> Result<bool, sqlx::Error> {
    let bound = sqlx::query!(
        "UPDATE payments SET psu_key = $2 WHERE id = $1 AND psu_key IS NULL",
        id,
        psu_key
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if bound {
        note(
            conn,
            id,
            "shopper_token_bound",
            json!({ "psu_key_sha256": crate::ledger::binding::psu_key_digest(psu_key) }),
        )
        .await?;
    }
    Ok(bound)
}

/// The first step of the shopper's cancel on the BankID page: [`payments::start_cancel`]'s
/// rule for a bank whose shopper token is bound to the payment at initiation (so a bound
/// shopper key says nothing about signing here). Under the row lock:
/// - final: [`CancelStart::Final`];
/// - not at the bank yet: [`payments::start_cancel`] for the shopper;
/// - signed as far as pisgate knows (past `awaiting_authorization`, or its signing order
///   complete): [`CancelStart::Signed`], and nothing is recorded: a shopper's cancel never
///   touches a signed payment (only the merchant may have one deleted at the bank);
/// - else the request is recorded (the page starts no new order from now on) and the bank
///   decides: [`CancelStart::BankDecides`].
pub async fn start_shopper_cancel(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<CancelStart>, TransitionError> {
    let Some(p) = payments::get_for_update(conn, id).await? else {
        return Ok(None);
    };
    if p.status().is_final() {
        return Ok(Some(CancelStart::Final(p)));
    }
    if !p.is_initiated() {
        // The BankID banks (SEB) act only on a signing order pisgate starts.
        return payments::start_cancel(conn, id, CancelBy::Shopper, &|_| false).await;
    }
    let signing_complete = get(conn, id, BankIdPurpose::Sign)
        .await?
        .is_some_and(|o| o.bank_id_state() == Some(BankIdState::Complete));
    if p.status() != PaymentStatus::AwaitingAuthorization || signing_complete {
        return Ok(Some(CancelStart::Signed(p)));
    }
    payments::request_cancel(conn, id, CancelBy::Shopper).await?;
    Ok(Some(CancelStart::BankDecides(p)))
}
