//! The authorization hop: `GET /authorize/{payment_id}?t=…`, the only authorization link a
//! merchant ever hands to a shopper.
//!
//! While the payment can still be signed (awaiting authorization, the bank's answer recorded,
//! within pisgate's signing window, not cancelled) it redirects the shopper's browser (303) to
//! the bank's signing link and records, once, that the link was handed out. Otherwise it
//! shows a plain page with a way back to the merchant and never leads to the bank. So pisgate
//! knows whether any shopper can have reached the bank's page, which is what lets a merchant
//! cancel an abandoned checkout at once and what makes a lost initiation's link unsignable.
//!
//! The token `t` is 256 random bits, compared in constant time; a wrong or missing token
//! answers the same page as an unknown payment. Never logged: the token, the bank's link.

use crate::api::AppState;
use crate::domain::PaymentStatus;
use crate::ledger::payments::{self, Hop, HopClosed, PaymentRecord};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use rand::RngCore;
use std::collections::HashMap;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new().route("/authorize/{id}", get(hop))
}

/// A new hop token: 256 random bits, URL-safe.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The hop's URL for a payment.
pub fn url(state: &AppState, payment_id: Uuid, token: &str) -> String {
    format!(
        "{}/authorize/{payment_id}?t={token}",
        state.settings.server.public_url
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A plain page; with a payment, a link back to the merchant carrying its id and status.
fn page(status: StatusCode, title: &str, message: &str, back: Option<&PaymentRecord>) -> Response {
    let back = back
        .and_then(|p| {
            let mut url = url::Url::parse(&p.return_url).ok()?;
            url.query_pairs_mut()
                .append_pair("payment_id", &p.id.to_string())
                .append_pair("status", p.status().as_str());
            Some(format!(
                "<p><a href=\"{}\">Return to the shop</a></p>",
                escape(url.as_str())
            ))
        })
        .unwrap_or_else(|| "<p>You can close this window and return to the shop.</p>".into());
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body><main><h1>{title}</h1><p>{message}</p>{back}</main></body></html>",
        title = escape(title),
        message = escape(message),
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(body),
    )
        .into_response()
}

fn not_valid() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "This payment link is not known to us.",
        None,
    )
}

fn tokens_match(given: &str, stored: &str) -> bool {
    let (a, b) = (given.as_bytes(), stored.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[tracing::instrument(skip_all, fields(payment_id = tracing::field::Empty))]
async fn hop(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return not_valid();
    };
    tracing::Span::current().record("payment_id", tracing::field::display(id));
    match decide(&state, id, q.get("t").map(String::as_str).unwrap_or("")).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "authorization hop failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "We could not open this payment just now. Please try again in a moment.",
                None,
            )
        }
    }
}

async fn decide(state: &AppState, id: Uuid, token: &str) -> anyhow::Result<Response> {
    let mut conn = state.pool.acquire().await?;
    let Some(p) = payments::get(&mut conn, id).await? else {
        return Ok(not_valid());
    };
    drop(conn);
    if !p
        .authorize_token
        .as_deref()
        .is_some_and(|stored| tokens_match(token, stored))
    {
        tracing::warn!("authorization hop with a wrong token");
        return Ok(not_valid());
    }
    let mut tx = state.pool.begin().await?;
    let hop = payments::open_hop(&mut tx, id).await?;
    tx.commit().await?;
    let Some(hop) = hop else {
        return Ok(not_valid());
    };
    let closed = match hop {
        Hop::ToBank(link) => {
            tracing::info!("shopper sent to the bank to sign");
            return Ok((
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, link),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                    (header::REFERRER_POLICY, "no-referrer".to_owned()),
                ],
            )
                .into_response());
        }
        Hop::Closed(closed) => closed,
    };
    let (title, message) = match closed {
        HopClosed::NotReady => (
            "Payment not ready",
            "This payment is not ready to be signed yet. Please return to the shop and try again.",
        ),
        HopClosed::WindowPassed | HopClosed::Done(PaymentStatus::Expired) => (
            "Payment link expired",
            "The time to sign this payment has run out. Please return to the shop to start again.",
        ),
        HopClosed::CancelRequested | HopClosed::Done(PaymentStatus::Cancelled) => (
            "Payment cancelled",
            "This payment was cancelled and can no longer be signed.",
        ),
        HopClosed::Done(PaymentStatus::Paid) => ("Payment complete", "This payment has been paid."),
        HopClosed::Done(PaymentStatus::AwaitingAuthorization | PaymentStatus::Authorized) => (
            "Payment signed",
            "This payment has already been signed. You can return to the shop.",
        ),
        HopClosed::Done(_) => (
            "Payment closed",
            "This payment can no longer be signed. Please return to the shop.",
        ),
    };
    let status = match closed {
        HopClosed::NotReady => StatusCode::CONFLICT,
        _ => StatusCode::GONE,
    };
    let now = payments::get(&mut *state.pool.acquire().await?, id).await?;
    Ok(page(status, title, message, now.as_ref()))
}
