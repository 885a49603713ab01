//! The test BankID app: the page that stands in for the shopper's phone (plain HTML forms,
//! no JavaScript). `GET /test-bankid?autostarttoken=…&redirect=null` opens the order (as
//! the real app does when started with the autostart token: the order moves to
//! `userSign`) and shows what it is for (identify, or sign with amount and payee) with
//! Approve and Reject; `GET /test-bankid/scan?qr=…` is the same after scanning a QR code
//! (refused when the QR is not the order's current one or older than 30 s, as BankID
//! does). Refusals are recorded like the API's.
//!
//! As BankID's `redirect` parameter: `redirect=null` (or none) leaves the shopper on the
//! app's "done" page after Approve or Reject; an absolute http(s) URL there sends the browser
//! to it (303) after the decision.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::SebSim;
use super::problem::Refused;
use super::state::{AppError, OrderState, Purpose};
use crate::sandbox::berlin_group::pages::sim_page;

pub(super) fn routes(sim: Arc<SebSim>) -> Router {
    Router::new()
        .route("/test-bankid", get(open_page))
        .route("/test-bankid/scan", get(scan_page))
        .route("/test-bankid/approve", post(approve))
        .route("/test-bankid/reject", post(reject))
        .with_state(sim)
}

fn page(title: &str, body: Markup) -> Markup {
    sim_page(
        title,
        "test BankID app",
        "A simulated BankID app for tests (SEB sandbox). Never use real credentials.",
        body,
    )
}

/// A refused app action: an HTML page with the reason, recorded with `rule`.
fn refusal(status: StatusCode, rule: &'static str, text: &str) -> Response {
    let mut resp = (
        status,
        Html(page("BankID", html! { p id="error" { (text) } }).into_string()),
    )
        .into_response();
    resp.extensions_mut().insert(Refused {
        rule,
        code: None,
        detail: text.to_owned(),
    });
    resp
}

pub(super) fn app_error(e: &AppError) -> Response {
    let (status, rule) = match e {
        AppError::Unknown => (StatusCode::NOT_FOUND, "app-order-unknown"),
        AppError::Ended(_) => (StatusCode::CONFLICT, "app-order-ended"),
        AppError::WillNotOpen(_) => (StatusCode::CONFLICT, "app-scenario"),
        AppError::WrongQr => (StatusCode::BAD_REQUEST, "qr-not-current"),
        AppError::StaleQr => (StatusCode::BAD_REQUEST, "qr-stale"),
        AppError::UnknownHint(_) => (StatusCode::BAD_REQUEST, "app-hint-code"),
    };
    refusal(status, rule, &e.to_string())
}

#[derive(Deserialize)]
struct OpenQuery {
    autostarttoken: Option<String>,
    redirect: Option<String>,
}

/// The `redirect` parameter as a URL to go to after the decision (`null` and anything not
/// an absolute http(s) URL: none).
fn redirect_target(redirect: Option<&str>) -> Option<String> {
    let r = redirect?.trim();
    url::Url::parse(r)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .map(|u| u.to_string())
}

async fn open_page(State(sim): State<Arc<SebSim>>, Query(q): Query<OpenQuery>) -> Response {
    let redirect = redirect_target(q.redirect.as_deref());
    let Some(token) = q.autostarttoken.filter(|t| !t.is_empty()) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "app-autostarttoken",
            "autostarttoken is required",
        );
    };
    let now = sim.now();
    let result = sim.bank().open(&token, now);
    match result {
        Ok(()) => order_page(&sim, &token, redirect.as_deref()),
        Err(e) => app_error(&e),
    }
}

#[derive(Deserialize)]
struct ScanQuery {
    qr: Option<String>,
}

async fn scan_page(State(sim): State<Arc<SebSim>>, Query(q): Query<ScanQuery>) -> Response {
    let Some(qr) = q.qr.filter(|t| !t.is_empty()) else {
        return refusal(StatusCode::BAD_REQUEST, "qr-not-current", "qr is required");
    };
    let now = sim.now();
    let result = sim.bank().scan(&qr, now);
    match result {
        Ok(token) => order_page(&sim, &token, None),
        Err(e) => app_error(&e),
    }
}

/// The opened order: what it is for, and the two buttons (or its end).
fn order_page(sim: &SebSim, token: &str, redirect: Option<&str>) -> Response {
    let bank = sim.bank();
    let Some(o) = bank
        .by_autostart
        .get(token)
        .and_then(|id| bank.orders.get(id))
    else {
        return app_error(&AppError::Unknown);
    };
    let what = match o.purpose {
        Purpose::Identify => {
            html! { p id="purpose" { "Identify yourself to the payment service (SEB)." } }
        }
        Purpose::Sign => html! {
            p id="purpose" { "Sign the payment:" }
            ul {
                @for id in &o.payment_ids {
                    @if let Some(p) = bank.payments.get(id) {
                        @let payee = p.body.get("creditorName").and_then(|v| v.as_str())
                            .map(str::to_owned)
                            .or_else(|| p.body.get("creditorAccount").map(|a| a.to_string()))
                            .unwrap_or_default();
                        li class="payment" { (p.amount) " " (p.currency) " to " (payee) }
                    }
                }
            }
        },
    };
    let body = html! {
        (what)
        p id="hint" { "Status: " (o.hint_code) }
        @if o.state == OrderState::Pending {
            form method="post" action="/test-bankid/approve" {
                input type="hidden" name="autostarttoken" value=(token);
                @if let Some(r) = redirect {
                    input type="hidden" name="redirect" value=(r);
                }
                @if o.purpose == Purpose::Identify {
                    label { "Shopper (personal number), optional: " input type="text" name="shopper"; }
                }
                button type="submit" id="approve" { "Approve" }
            }
            form method="post" action="/test-bankid/reject" {
                input type="hidden" name="autostarttoken" value=(token);
                @if let Some(r) = redirect {
                    input type="hidden" name="redirect" value=(r);
                }
                button type="submit" id="reject" { "Reject" }
            }
        } @else {
            p id="ended" { "This order has ended (" (o.hint_code) ")." }
        }
    };
    Html(page("BankID", body).into_string()).into_response()
}

#[derive(Deserialize)]
struct Decision {
    autostarttoken: String,
    shopper: Option<String>,
    redirect: Option<String>,
}

/// The answer after a decision: 303 to the redirect URL, or the "done" page.
fn decided(redirect: Option<&str>, text: &str) -> Response {
    match redirect_target(redirect) {
        Some(to) => (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, to)]).into_response(),
        None => {
            Html(page("BankID", html! { p id="done" { (text) } }).into_string()).into_response()
        }
    }
}

async fn approve(State(sim): State<Arc<SebSim>>, Form(d): Form<Decision>) -> Response {
    let now = sim.now();
    let result = sim
        .bank()
        .approve(&d.autostarttoken, d.shopper.as_deref(), now);
    match result {
        Ok(()) => decided(
            d.redirect.as_deref(),
            "Approved. You can go back to the shop.",
        ),
        Err(e) => app_error(&e),
    }
}

async fn reject(State(sim): State<Arc<SebSim>>, Form(d): Form<Decision>) -> Response {
    let now = sim.now();
    let result = sim.bank().reject(&d.autostarttoken, now);
    match result {
        Ok(()) => decided(
            d.redirect.as_deref(),
            "Rejected. You can go back to the shop.",
        ),
        Err(e) => app_error(&e),
    }
}
