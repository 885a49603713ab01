//! The shopper's signing page, standing in for Nordea's signing app.
//!
//! `GET /sandbox/sign/{token}` shows the payment with a PSU identity field (default
//! `sandbox-psu-1`, or `?psu_id=` to prefill) and Approve / Reject buttons; opening it is what
//! makes the payment exist at the bank. The buttons post a form
//! (`decision=approve|reject&psu_id=…`) to the same URL, which answers 303 to the payment's
//! `redirect_uri` with `code` and `state`, or with `error=access_denied`,
//! `error_description` and `state`. The PSU identity decides whose tokens the code gives, so
//! tests sign as different shoppers by changing that one field.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::payments::{Decision, Payment};
use super::{Sandbox, lock};
use crate::domain::{Language, display};

/// The PSU who signs when the form is not changed.
pub const DEFAULT_PSU_ID: &str = "sandbox-psu-1";

pub(crate) fn routes(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/sandbox/sign/{token}", get(page).post(decide))
        .route(
            "/sandbox/scenarios",
            get(|| async { axum::Json(super::scenarios::ALL) }),
        )
        .with_state(sandbox)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Nordea sandbox</title></head>\
             <body><h1>Nordea sandbox</h1><p>{}</p></body></html>",
            escape(message)
        )),
    )
        .into_response()
}

fn summary(p: &Payment) -> String {
    let d = &p.details;
    let creditor = d.creditor();
    let account = creditor
        .get("account")
        .and_then(|a| a.get("value"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let name = creditor.get("name").and_then(|v| v.as_str()).unwrap_or("");
    // The amount as the shopper's language writes it (`€10.50`, `10,50 €`, `kr 250,00`).
    let lang = d
        .language
        .as_deref()
        .and_then(Language::parse)
        .unwrap_or(Language::En);
    let mut rows = vec![
        ("Amount", display::amount(d.amount_minor, d.currency, lang)),
        ("To", format!("{name} {account}")),
        ("Country", d.country.to_string()),
    ];
    if let Some(m) = &d.merchant {
        rows.push(("Merchant", m.clone()));
    }
    if let Some(r) = creditor.get("reference") {
        let kind = r.get("type").and_then(|v| v.as_str()).unwrap_or("");
        let value = r.get("value").and_then(|v| v.as_str()).unwrap_or("");
        rows.push(("Reference", format!("{kind} {value}")));
    }
    if let Some(m) = creditor.get("message").and_then(|v| v.as_str()) {
        rows.push(("Message", m.to_owned()));
    }
    if let Some(date) = d.requested_execution_date {
        rows.push(("Execution date", display::date(date, lang)));
    }
    if let Some(r) = &d.recurring {
        rows.push(("Recurring", format!("{} × {}", r.count, r.recurrence_type)));
    }
    rows.iter()
        .map(|(k, v)| format!("<tr><th>{k}</th><td>{}</td></tr>", escape(v)))
        .collect()
}

fn scenario_rows() -> String {
    super::scenarios::ALL
        .iter()
        .map(|s| {
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(s.psu_id),
                escape(s.amount),
                escape(s.description),
                escape(s.pisgate_status)
            )
        })
        .collect()
}

async fn page(
    State(sandbox): State<Arc<Sandbox>>,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let now = sandbox.now();
    let mut bank = lock(&sandbox.bank);
    let Some(id) = bank.by_signing_token.get(&token).cloned() else {
        return plain(StatusCode::NOT_FOUND, "This signing link is not valid.");
    };
    let Some(p) = bank.payments.get_mut(&id) else {
        return plain(StatusCode::NOT_FOUND, "This signing link is not valid.");
    };
    p.opened_at.get_or_insert(now);
    if p.approval_timed_out(now, sandbox.config()) {
        return plain(
            StatusCode::GONE,
            "The time to sign this payment has run out.",
        );
    }
    if p.decision.is_some() || p.cancelled_at.is_some() || p.forced_status.is_some() {
        return plain(
            StatusCode::CONFLICT,
            "This payment has already been handled.",
        );
    }
    let psu = query.get("psu_id").map_or(DEFAULT_PSU_ID, String::as_str);
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Nordea sandbox: sign payment</title></head>\
         <body><h1>Sign payment</h1><table>{rows}</table>\
         <form method=\"post\" action=\"{action}\">\
         <label>PSU identity <input name=\"psu_id\" value=\"{psu}\"></label>\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button type=\"submit\" name=\"decision\" value=\"reject\">Reject</button>\
         </form><h2>Scenarios</h2><p>Type one of these PSU identities (or pay its amount) and \
         press Approve to choose how the bank goes on.</p>\
         <table><tr><th>PSU identity</th><th>amount</th><th>at the bank</th><th>pisgate reports</th></tr>\
         {scenarios}</table></body></html>",
        scenarios = scenario_rows(),
        rows = summary(p),
        action = escape(&sandbox.signing_link(&token)),
        psu = escape(psu),
    );
    Html(html).into_response()
}

async fn decide(
    State(sandbox): State<Arc<Sandbox>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let approve = match form.get("decision").map(String::as_str) {
        Some("approve") => true,
        Some("reject") => false,
        _ => return plain(StatusCode::BAD_REQUEST, "Choose Approve or Reject."),
    };
    let psu = form
        .get("psu_id")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_PSU_ID)
        .to_owned();
    let now = sandbox.now();
    let cfg = sandbox.config();
    let mut bank = lock(&sandbox.bank);
    let Some(id) = bank.by_signing_token.get(&token).cloned() else {
        return plain(StatusCode::NOT_FOUND, "This signing link is not valid.");
    };
    let Some(p) = bank.payments.get_mut(&id) else {
        return plain(StatusCode::NOT_FOUND, "This signing link is not valid.");
    };
    if p.opened_at.is_none() {
        // A form can only come from the page, but a test may post directly: opening counts.
        p.opened_at = Some(now);
    }
    if p.approval_timed_out(now, cfg) {
        return plain(
            StatusCode::GONE,
            "The time to sign this payment has run out.",
        );
    }
    if p.decision.is_some() || p.cancelled_at.is_some() || p.forced_status.is_some() {
        return plain(
            StatusCode::CONFLICT,
            "This payment has already been handled.",
        );
    }
    p.owner = Some(psu.clone());
    let scenario = super::scenarios::pick(&psu, p.details.amount_minor);
    // The shopper who picks "cancel in the app" approves nothing.
    let approve = approve && !scenario.is_some_and(|s| s.cancels);
    if approve && let Some(s) = scenario {
        p.scenario = Some(s);
        p.funds_not_available |= s.funds_not_available;
    }
    let redirect_uri = p.details.redirect_uri.clone();
    let state = p.details.state.clone();
    let Ok(mut target) = url::Url::parse(&redirect_uri) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The redirect_uri is invalid.",
        );
    };
    if approve {
        p.decision = Some(Decision::Approved { at: now });
        let code = bank.issue_code(&psu, &redirect_uri, now, cfg);
        target
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &state);
    } else {
        p.decision = Some(Decision::Rejected);
        target
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The user cancelled the signing.")
            .append_pair("state", &state);
    }
    drop(bank);
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(target.as_str()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
