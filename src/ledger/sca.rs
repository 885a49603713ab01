//! The state of an authorisation that pisgate starts at the bank for the shopper (explicit
//! redirect or decoupled SCA, [`crate::api::sca`]): the claim of its one start, the
//! recorded answer and the waiting page's debounce. Columns of `payments`
//! (`sca_started_at`, `sca_authorisation_id`, `sca_state_hash`, `sca_psu_message`,
//! `sca_polled_at`).
//!
//! The claim is the rule: [`claim_start`] sets `sca_started_at` under the payment's row lock
//! only when no authorisation is recorded and no start is younger than the lease, so two
//! clicks, two tabs or two replicas never both call the bank. Never stored here: the PSU-ID
//! (it goes to the bank and nowhere else), the state (only its hash).

use super::payments::{Hop, get_for_update, hop_for, note};
use crate::bank::BankLinks;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// The authorisation columns of a payment.
#[derive(Debug, Clone, Default)]
pub struct ScaHop {
    pub started_at: Option<DateTime<Utc>>,
    pub authorisation_id: Option<String>,
    pub psu_message: Option<String>,
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<ScaHop, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT pisgate_readable_time(sca_started_at) AS sca_started_at, sca_authorisation_id,
                sca_psu_message
         FROM payments WHERE id = $1",
        id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row
        .map(|r| ScaHop {
            started_at: r.sca_started_at,
            authorisation_id: r.sca_authorisation_id,
            psu_message: r.sca_psu_message,
        })
        .unwrap_or_default())
}

/// What a request to start the authorisation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request starts it (and nobody else until the lease passes).
    Claimed,
    /// Another request started it less than a lease ago; its answer is not recorded (yet).
    Busy,
    /// The authorisation is started and recorded.
    Started,
    /// The hop leads elsewhere (the payment is closed, or already has a signing link).
    Not(Hop),
}

/// Claims the one start of the payment's authorisation. With the claim, records that a
/// shopper went through the hop (`hop_opened_at`: from now on someone may reach the bank,
/// so a cancel lets the bank decide) and the hash of the state sent with the start.
pub async fn claim_start(
    conn: &mut PgConnection,
    id: Uuid,
    lease: Duration,
    state_hash: &[u8],
) -> Result<Option<Claim>, sqlx::Error> {
    let Some(p) = get_for_update(conn, id).await? else {
        return Ok(None);
    };
    let hop = hop_for(&p, Utc::now());
    if hop != Hop::StartAuthorisation {
        return Ok(Some(Claim::Not(hop)));
    }
    let sca = get(conn, id).await?;
    if sca.authorisation_id.is_some() {
        return Ok(Some(Claim::Started));
    }
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
    if sca.started_at.is_some_and(|t| t > Utc::now() - lease) {
        return Ok(Some(Claim::Busy));
    }
    sqlx::query!(
        "UPDATE payments SET sca_started_at = now(), sca_state_hash = $2,
                hop_opened_at = coalesce(hop_opened_at, now())
         WHERE id = $1",
        id,
        state_hash
    )
    .execute(&mut *conn)
    .await?;
    note(
        conn,
        id,
        "authorisation_starting",
        json!({ "retry": sca.started_at.is_some() }),
    )
    .await?;
    Ok(Some(Claim::Claimed))
}

/// What the bank answered to the start, as recorded.
pub struct Started<'a> {
    pub authorisation_id: &'a str,
    /// The authorisation's links (its `scaStatus`, `scaRedirect` …), merged into the payment's.
    pub links: &'a BankLinks,
    /// The bank's signing page, for a redirect.
    pub authorization_url: Option<&'a str>,
    pub sca_status: &'a str,
    pub approach: &'a str,
    pub psu_message: Option<&'a str>,
}

/// Records the started authorisation once (event `authorisation_started`). Returns whether
/// it was recorded (false: another answer was recorded first, which cannot happen under the
/// claim but is refused rather than overwritten).
pub async fn record_started(
    conn: &mut PgConnection,
    id: Uuid,
    s: &Started<'_>,
) -> Result<bool, sqlx::Error> {
    let Some(p) = get_for_update(conn, id).await? else {
        return Ok(false);
    };
    // Merged only into links that hold their ledger MAC (checked again under the row's
    // lock): links edited in SQL are never sealed anew with the authorisation's. The
    // authorisation the bank started is still recorded, as an orphan.
    let Some(bank_ref) = p.bank_ref() else {
        note(
            conn,
            id,
            "authorisation_orphan",
            json!({
                "authorisation_id": s.authorisation_id,
                "approach": s.approach,
                "sca_status": s.sca_status,
                "reason": "bank_ref_refused",
            }),
        )
        .await?;
        return Ok(false);
    };
    let links = bank_ref.links.merged(s.links).to_json();
    let (links_mac, links_key_id) =
        super::payments::seal_bank_links(id, bank_ref.id.as_str(), &links)?;
    let recorded = sqlx::query!(
        "UPDATE payments
         SET sca_authorisation_id = $2, bank_links = $3,
             authorization_url = coalesce($4, authorization_url), sca_psu_message = $5,
             bank_links_mac = $6, bank_links_mac_key_id = $7
         WHERE id = $1 AND sca_authorisation_id IS NULL",
        id,
        s.authorisation_id,
        links,
        s.authorization_url,
        s.psu_message,
        links_mac,
        links_key_id,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    note(
        conn,
        id,
        if recorded {
            "authorisation_started"
        } else {
            "authorisation_orphan"
        },
        if recorded {
            // The page the hop now sends shoppers to (the start's, or the one kept).
            let page = s.authorization_url.or(p.authorization_url.as_deref());
            json!({
                "authorisation_id": s.authorisation_id,
                "approach": s.approach,
                "sca_status": s.sca_status,
                "authorization_url_sha256": crate::ledger::binding::authorization_url_digest(page),
            })
        } else {
            json!({
                "authorisation_id": s.authorisation_id,
                "approach": s.approach,
                "sca_status": s.sca_status,
            })
        },
    )
    .await?;
    Ok(recorded)
}

/// Gives the claim back: the bank refused the start, or provably never received it, so no
/// authorisation exists and the next click may start one.
pub async fn release_start(
    conn: &mut PgConnection,
    id: Uuid,
    why: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payments SET sca_started_at = NULL WHERE id = $1 AND sca_authorisation_id IS NULL",
        id
    )
    .execute(&mut *conn)
    .await?;
    note(
        conn,
        id,
        "authorisation_not_started",
        json!({ "reason": why }),
    )
    .await
}

/// Records that the start's outcome is unknown (sent, answer lost): the claim stays until
/// its lease passes.
pub async fn start_unknown(
    conn: &mut PgConnection,
    id: Uuid,
    kind: &str,
) -> Result<(), sqlx::Error> {
    note(
        conn,
        id,
        "authorisation_outcome_unknown",
        json!({ "error": kind }),
    )
    .await
}

/// Takes the waiting page's turn to read the SCA status: true at most once per `every` per
/// payment, across replicas.
pub async fn claim_poll(
    conn: &mut PgConnection,
    id: Uuid,
    every: Duration,
) -> Result<bool, sqlx::Error> {
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::seconds(2));
    let claimed = sqlx::query!(
        "UPDATE payments SET sca_polled_at = now()
         WHERE id = $1 AND (sca_polled_at IS NULL OR sca_polled_at <= $2)",
        id,
        Utc::now() - every
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Keeps the bank's latest text for the shopper.
pub async fn set_psu_message(
    conn: &mut PgConnection,
    id: Uuid,
    message: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payments SET sca_psu_message = $2 WHERE id = $1",
        id,
        message
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Keeps an OAuth authorisation's PKCE verifier, sealed, until the shopper's code comes back.
pub async fn store_verifier(
    conn: &mut PgConnection,
    id: Uuid,
    key_id: &str,
    sealed: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payments SET sca_pkce_verifier = $2, sca_pkce_key_id = $3 WHERE id = $1",
        id,
        sealed,
        key_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The sealed PKCE verifier of the payment's OAuth authorisation, if any: (key id, bytes).
pub async fn verifier(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(String, Vec<u8>)>, sqlx::Error> {
    let r = sqlx::query!(
        "SELECT sca_pkce_verifier, sca_pkce_key_id FROM payments WHERE id = $1",
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(r.and_then(|r| Some((r.sca_pkce_key_id?, r.sca_pkce_verifier?))))
}
