//! `GET /v1/callbacks/nordea`: where the bank sends the shopper back after signing.
//!
//! The `state` is random, single use, bound to one payment and expires with the signing
//! window; an unknown, reused or expired state exchanges nothing and shows the shopper a
//! plain page. A valid one is consumed in the same transaction that records the callback,
//! so a replayed redirect (and its code) is never exchanged twice. The code exchange for a
//! shopper is serialised under that shopper's advisory lock, and the token is stored only
//! if it is newer than the stored one, so the latest token the bank issued always wins.
//! The shopper then goes (303) to the payment's `return_url`, which was checked against the
//! merchant's registered origins at creation: never an open redirect.
//!
//! Never logged: the code, the state, the tokens.

use crate::api::AppState;
use crate::api::payments::{callback_url, state_hash};
use crate::bank::{BankError, BankPaymentId, PsuContext};
use crate::domain::PaymentStatus;
use crate::ledger::payments::{self, Change, PaymentRecord};
use crate::ledger::tokens;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/callbacks/nordea", get(nordea_callback))
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{message}</p><p>You can close this window and return to the shop.</p></body></html>"
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

fn redirect_to_merchant(p: &PaymentRecord, status: PaymentStatus) -> Response {
    let location = match url::Url::parse(&p.return_url) {
        Ok(mut url) => {
            url.query_pairs_mut()
                .append_pair("payment_id", &p.id.to_string())
                .append_pair("status", status.as_str());
            url.to_string()
        }
        Err(_) => {
            return page(
                StatusCode::OK,
                "Payment signed",
                "Your payment was received. You can return to the shop.",
            );
        }
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

fn psu_context(headers: &HeaderMap) -> PsuContext {
    PsuContext {
        ip: headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|ip| ip.trim().parse().ok()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect()),
    }
}

/// Whose token this is: the bank's shopper identity if the token answer has one, else the
/// merchant's stable shopper id, else the payment alone.
fn psu_key(p: &PaymentRecord, shopper_id: Option<&str>) -> String {
    match (shopper_id, &p.psu_id) {
        (Some(bank_id), _) => format!("bank:{bank_id}"),
        (None, Some(psu_id)) => format!("merchant:{}:{psu_id}", p.merchant_id),
        (None, None) => format!("payment:{}", p.id),
    }
}

#[tracing::instrument(skip_all, fields(payment_id = tracing::field::Empty))]
async fn nordea_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> Response {
    match handle(&state, &headers, raw).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "callback failed");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "We could not record your return from the bank. Your bank has your payment; the shop will see its status.",
            )
        }
    }
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    raw: HashMap<String, String>,
) -> anyhow::Result<Response> {
    let q = CallbackQuery {
        code: raw.get("code").cloned().filter(|c| !c.is_empty()),
        state: raw.get("state").cloned().filter(|s| !s.is_empty()),
        error: raw.get("error").cloned().filter(|s| !s.is_empty()),
        error_description: raw.get("error_description").cloned(),
    };
    let Some(oauth_state) = q.state.as_deref() else {
        tracing::warn!("callback without state");
        return Ok(page(
            StatusCode::BAD_REQUEST,
            "Link not valid",
            "This return link is incomplete.",
        ));
    };
    let mut tx = state.pool.begin().await?;
    let Some(p) = payments::find_by_state_for_update(&mut tx, &state_hash(oauth_state)).await?
    else {
        tracing::warn!("callback with an unknown state");
        return Ok(page(
            StatusCode::BAD_REQUEST,
            "Link not valid",
            "This return link is not known to us.",
        ));
    };
    tracing::Span::current().record("payment_id", tracing::field::display(p.id));

    let rejection = if p.state_used_at.is_some() {
        Some("state_reused")
    } else if p.state_expires_at.is_none_or(|t| t < Utc::now()) {
        Some("state_expired")
    } else {
        None
    };
    if let Some(reason) = rejection {
        payments::note(
            &mut tx,
            p.id,
            "callback_rejected",
            json!({ "reason": reason }),
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(reason, "callback refused");
        let message = if reason == "state_reused" {
            "This return link was already used."
        } else {
            "This return link has expired."
        };
        return Ok(page(StatusCode::BAD_REQUEST, "Link not valid", message));
    }
    payments::consume_state(&mut tx, p.id).await?;

    if let Some(error) = &q.error {
        // The shopper cancelled or the bank refused: nothing to exchange.
        let description: String = q
            .error_description
            .clone()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let to = PaymentStatus::AuthorizationFailed;
        let changed = payments::transition(
            &mut tx,
            p.id,
            Change {
                to,
                bank_status: None,
                kind: "authorization_failed",
                detail: json!({ "error": error, "error_description": description }),
                failure: Some(("authorization_failed", error)),
            },
        )
        .await;
        if let Err(e) = &changed {
            // Already final (e.g. expired): keep it, but remember the callback.
            tracing::info!(error = %e, "callback error on a payment that cannot change");
            payments::note(&mut tx, p.id, "callback_error", json!({ "error": error })).await?;
        }
        tx.commit().await?;
        let now = payments::get(&mut *state.pool.acquire().await?, p.id)
            .await?
            .unwrap_or(p);
        return Ok(redirect_to_merchant(&now, now.status()));
    }

    let Some(code) = q.code.clone() else {
        payments::note(
            &mut tx,
            p.id,
            "callback_rejected",
            json!({ "reason": "no_code" }),
        )
        .await?;
        tx.commit().await?;
        return Ok(page(
            StatusCode::BAD_REQUEST,
            "Link not valid",
            "This return link carries no authorization.",
        ));
    };
    payments::note(
        &mut tx,
        p.id,
        "callback",
        json!({ "outcome": "code_received" }),
    )
    .await?;
    tx.commit().await?;

    let psu = psu_context(headers);
    exchange_and_store(state, &p, SecretString::from(code)).await?;
    refresh_status(state, &p, &psu).await?;

    let now = payments::get(&mut *state.pool.acquire().await?, p.id)
        .await?
        .unwrap_or(p);
    Ok(redirect_to_merchant(&now, now.status()))
}

/// Exchanges the code under the shopper's lock and keeps the token only if it is the
/// newest. The lock is held across the bank call on purpose: it orders the exchanges.
async fn exchange_and_store(
    state: &AppState,
    p: &PaymentRecord,
    code: SecretString,
) -> anyhow::Result<()> {
    // Until the bank tells us who the shopper is, the key we can lock is the merchant's
    // shopper id (or the payment): the bank's identity is only known after the exchange.
    let lock_key = psu_key(p, None);
    let lock = tokens::lock_psu(&state.pool, &p.bank, &lock_key).await?;
    let issue_seq = tokens::next_issue_seq(&mut *state.pool.acquire().await?).await?;
    let result = state.bank.exchange_code(&code, &callback_url(state)).await;
    let stored = match result {
        Ok(tokens_set) => {
            let key = psu_key(p, tokens_set.shopper_id.as_deref());
            // The token is kept under the bank's identity of the shopper, which the refresher
            // locks: take that lock too and order this token after any refresh that finished
            // under it (a refresh the bank answered before this exchange is revoked by it).
            let (key_lock, issue_seq) = if key != lock_key {
                let mut key_lock = tokens::lock_psu(&state.pool, &p.bank, &key).await?;
                let seq = tokens::next_issue_seq(key_lock.connection()).await?;
                (Some(key_lock), seq)
            } else {
                (None, issue_seq)
            };
            // An absurd `expires_in` is capped at a day rather than trusted.
            let lifetime = tokens_set
                .expires_in
                .min(std::time::Duration::from_secs(86_400));
            let expires_at = Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or_default();
            let mut tx = state.pool.begin().await?;
            let stored = tokens::store(
                &mut tx,
                &state.cipher,
                &p.bank,
                &key,
                issue_seq,
                &tokens_set.access_token,
                Some(&tokens_set.refresh_token),
                expires_at,
            )
            .await?;
            payments::set_psu_key(&mut tx, p.id, &key).await?;
            payments::note(
                &mut tx,
                p.id,
                "token_exchanged",
                json!({ "issue_seq": issue_seq, "stored": stored, "access_expires_at": expires_at }),
            )
            .await?;
            let committed = tx.commit().await;
            if let Some(key_lock) = key_lock {
                key_lock.release().await;
            }
            committed
        }
        Err(error) => {
            tracing::warn!(error = %error, kind = error.kind(), "code exchange failed");
            let mut tx = state.pool.begin().await?;
            payments::note(
                &mut tx,
                p.id,
                "token_exchange_failed",
                json!({ "error": error.kind(), "detail": error.to_string() }),
            )
            .await?;
            tx.commit().await?;
            // A failed exchange does not stop the payment: status polling needs no token.
            Ok(())
        }
    };
    lock.release().await;
    Ok(stored?)
}

/// Asks the bank for the payment's status now that the shopper is back, and applies it.
async fn refresh_status(
    state: &AppState,
    p: &PaymentRecord,
    psu: &PsuContext,
) -> anyhow::Result<()> {
    let Some(bank_id) = p.bank_payment_id.as_deref().and_then(BankPaymentId::parse) else {
        return Ok(());
    };
    let report = match state.bank.status(&bank_id, Some(psu)).await {
        Ok(r) => r,
        Err(BankError::NotFound) => return Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "status after the callback failed; the poller will retry");
            return Ok(());
        }
    };
    apply_status(state, p.id, &report.bank_status, report.status).await
}

/// Applies a bank status report through the status machine (no-op for an unknown status or
/// a change the machine refuses, which is logged).
pub async fn apply_status(
    state: &AppState,
    id: uuid::Uuid,
    bank_status: &str,
    status: Option<PaymentStatus>,
) -> anyhow::Result<()> {
    let Some(to) = status else {
        tracing::warn!(bank_status, "unknown bank status: no change");
        metrics::counter!("pisgate_unknown_bank_status_total").increment(1);
        return Ok(());
    };
    let mut tx = state.pool.begin().await?;
    match payments::transition(
        &mut tx,
        id,
        Change {
            to,
            bank_status: Some(bank_status),
            kind: "status_changed",
            detail: json!({ "source": "bank" }),
            failure: None,
        },
    )
    .await
    {
        Ok(_) => tx.commit().await?,
        Err(payments::TransitionError::Refused(e)) => {
            tracing::info!(error = %e, bank_status, "bank status not applied");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
