//! The console's pages (maud): sign-in, payment search, one payment's timeline, needs
//! attention, merchants, payees, the audit log, and action confirmations.
//!
//! Every time is shown with its zone (UTC); a list with nothing in it says so in words
//! rather than as an empty table; a destructive action's button has the danger style (from
//! the hashed stylesheet: never an inline style, which the CSP refuses).

use crate::bank::nordea::NordeaStatus;
use crate::domain::AccountType;
use crate::domain::PaymentStatus;
use crate::domain::{Currency, Language, display};
use crate::ledger::events::StoredEvent;
use crate::ledger::merchants::Merchant;
use crate::ledger::operators::{
    AttentionPayment, AuditEntry, DeadDelivery, Delivery, DisabledEndpoint, PaymentRow, Session,
    Usage, WebhookHealth,
};
use crate::ledger::payees::{Payee, Policy, PolicyState};
use crate::ledger::verify::VerifyReport;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::collections::HashMap;

pub const CSS: &str = "\
body{margin:0;font:0.95rem/1.45 system-ui,sans-serif;color:#1a1a1a;background:#fff}\
header{display:flex;gap:1rem;align-items:center;justify-content:space-between;padding:.5rem 1rem;background:#1f2933;color:#fff}\
header a{color:#fff}\
main{padding:1rem;max-width:72rem}\
table{border-collapse:collapse;width:100%;margin:0 0 1.5rem}\
th,td{border-bottom:1px solid #c8ccd2;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#f4f5f7}\
form.search{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end;margin:0 0 1rem}\
label{display:flex;flex-direction:column;font-weight:600;font-size:.85rem}\
input,select,button{font:inherit;padding:.3rem .4rem}\
button{background:#0b3d91;color:#fff;border:0;border-radius:.25rem;padding:.4rem .9rem;cursor:pointer}\
button.danger{background:#a3160b;font-weight:700}\
.empty{color:#4a5260;font-style:italic}\
.ok{color:#0a6b2d;font-weight:700}.bad{color:#a3160b;font-weight:700}\
.error{color:#a3160b}\
code{font-size:.85rem;overflow-wrap:anywhere}\
a{color:#0b3d91}\
:focus-visible{outline:3px solid #b35c00;outline-offset:2px}\
";

/// A time as the console shows it: with its zone, e.g. "2026-12-05 14:03:07 UTC".
fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The actions that take something away: their buttons and confirmations look dangerous.
pub fn is_destructive(action: &str) -> bool {
    matches!(
        action,
        "disable_merchant" | "revoke_all_keys" | "remove_payee" | "rotate_key" | "end_unresolved"
    )
}

/// What a list with nothing in it says instead of an empty table.
fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

/// A select of `choices` with an "any" choice first, keeping the chosen one chosen.
fn select(label: &str, name: &str, chosen: &str, choices: &[&str]) -> Markup {
    html! {
        label { (label) select name=(name) {
            option value="" { "any" }
            @for c in choices { option value=(c) selected[*c == chosen] { (c) } }
        } }
    }
}

fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · pisgate console" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    strong { "pisgate console" }
                    @if let Some(s) = session {
                        nav {
                            a href="/console/payments" { "Payments" } " · "
                            a href="/console/attention" { "Needs attention" } " · "
                            a href="/console/merchants" { "Merchants" } " · "
                            a href="/console/audit" { "Audit log" }
                        }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(s.csrf_token);
                            span { (s.email) " " }
                            button type="submit" { "Sign out" }
                        }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(s.csrf_token);
                            input type="hidden" name="everywhere" value="yes";
                            button type="submit" { "Sign out everywhere" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn message(title: &str, text: &str) -> Markup {
    layout(title, None, html! { p { (text) } })
}

pub fn login(csrf: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(csrf);
                p { label { "Email" input type="email" name="email" autocomplete="username" required; } }
                p { label { "Password" input type="password" name="password" autocomplete="current-password" required; } }
                p { button type="submit" { "Sign in" } }
            }
        },
    )
}

fn amount(minor: i64, currency: &str) -> String {
    Currency::from_code(currency).map_or_else(
        || format!("{minor} {currency}"),
        |c| display::amount(minor, c, Language::En),
    )
}

pub fn payments(
    session: &Session,
    q: &HashMap<String, String>,
    errors: &[String],
    rows: &[PaymentRow],
) -> Markup {
    let v = |k: &str| q.get(k).cloned().unwrap_or_default();
    layout(
        "Payments",
        Some(session),
        html! {
            form.search method="get" action="/console/payments" role="search" {
                label { "Payment id" input name="id" value=(v("id")); }
                label { "Merchant id" input name="merchant" value=(v("merchant")); }
                label { "Reference" input name="reference" value=(v("reference")); }
                label { "PSU id" input name="psu_id" value=(v("psu_id")); }
                (select("Status", "status", &v("status"), &PaymentStatus::ALL.map(PaymentStatus::as_str)))
                (select("Bank status", "bank_status", &v("bank_status"), &bank_statuses()))
                label { "From" input type="date" name="from" value=(v("from")); }
                label { "To" input type="date" name="to" value=(v("to")); }
                button type="submit" { "Search" }
            }
            @for e in errors { p.error role="alert" { (e) } }
            @if !errors.is_empty() {
                // Refused: the errors above say why; no list beside them.
            } @else if rows.is_empty() {
                (empty("No payments match."))
            } @else {
            table {
                caption { (rows.len()) " payment(s), newest first" }
                thead { tr { th { "Payment" } th { "Merchant" } th { "Reference" } th { "Status" } th { "Bank" } th { "Bank status" } th { "Amount" } th { "Created" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href={ "/console/payments/" (r.id) } { code { (r.id) } } }
                            td { (r.merchant_name) }
                            td { (r.merchant_reference.as_deref().unwrap_or("")) }
                            td { (r.status) }
                            td { (r.bank) }
                            td { (r.bank_status.as_deref().unwrap_or("")) }
                            td { (amount(r.amount_minor, &r.currency)) }
                            td { (when(r.created_at)) }
                        }
                    }
                }
            }
            }
        },
    )
}

/// Every bank status the console searches by: Nordea's, then the Berlin Group's.
pub fn bank_statuses() -> Vec<&'static str> {
    NordeaStatus::ALL
        .map(NordeaStatus::as_str)
        .into_iter()
        .chain(crate::bank::berlin_group::status::TRANSACTION_STATUSES)
        .collect()
}

pub fn payment(
    session: &Session,
    p: &PaymentRow,
    events: &[StoredEvent],
    deliveries: &[Delivery],
    verified: Option<&VerifyReport>,
    unresolved: Option<(&str, bool)>,
) -> Markup {
    let title = format!("Payment {}", p.id);
    let back = format!("/console/payments/{}", p.id);
    layout(
        &title,
        Some(session),
        html! {
            p {
                (p.merchant_name) " · " (amount(p.amount_minor, &p.currency)) " · status "
                strong { (p.status) }
                " · bank " (if p.bank.is_empty() { "not chosen yet" } else { p.bank.as_str() })
                @if let Some(b) = &p.bank_status { " · bank status " (b) }
                @if let Some(r) = &p.merchant_reference { " · reference " (r) }
            }
            @if let Some((_, false)) = unresolved {
                h2 { "Initiation in flight" }
                p { "The bank's answer to this payment's initiation is not recorded yet, and may still be on its way. If it has not come in a few minutes, this page offers to reconcile it with the bank." }
            }
            @if let Some((e2e, true)) = unresolved {
                h2 { "Unresolved initiation" }
                p.bad {
                    "The bank's answer to this payment's initiation was lost, and this bank may execute a payment without the shopper (an SCA exemption, an approval in the bank's app). pisgate does not initiate it again, cancel it or expire it: ask the bank whether it made a payment of "
                    (amount(p.amount_minor, &p.currency)) " with end-to-end id " code { (e2e) } "."
                }
                form method="post" action="/console/actions" {
                    input type="hidden" name="csrf" value=(session.csrf_token);
                    input type="hidden" name="action" value="attach_bank_payment";
                    input type="hidden" name="payment" value=(p.id);
                    input type="hidden" name="back" value=(back);
                    label { "The bank's payment id " input name="bank_payment_id" required maxlength="200"; }
                    " "
                    label { "Evidence " input name="evidence" required maxlength=(super::unresolved::EVIDENCE_MAX) placeholder="case number, who at the bank"; }
                    " "
                    button type="submit" { "Attach (pisgate reads it at the bank first)" }
                }
                form method="post" action="/console/actions" {
                    input type="hidden" name="csrf" value=(session.csrf_token);
                    input type="hidden" name="action" value="end_unresolved";
                    input type="hidden" name="payment" value=(p.id);
                    input type="hidden" name="back" value=(back);
                    label { "Evidence " input name="evidence" required maxlength=(super::unresolved::EVIDENCE_MAX) placeholder="case number, who at the bank"; }
                    " "
                    button.danger type="submit" { "The bank made none: end it as failed" }
                }
            }
            h2 { "Ledger chain" }
            @match verified {
                Some(v) if v.broken_payments == 0 => p.ok { "Verified: " (v.events_checked) " event(s), every hash and the head agree." },
                Some(v) => p.bad { "BROKEN: " (v.first_broken.as_ref().map(|b| format!("{b:?}")).unwrap_or_default()) },
                None => p { "Not verified: this process has no ledger key." },
            }
            h2 { "Timeline" }
            table {
                thead { tr { th { "#" } th { "When" } th { "Event" } th { "Status" } th { "Bank status" } th { "Detail" } } }
                tbody {
                    @for e in events {
                        tr {
                            td { (e.seq) }
                            td { (e.created_at.format("%Y-%m-%d %H:%M:%S%.3f UTC")) }
                            td { (e.kind) }
                            td {
                                @if let Some(o) = e.old_status { (o.as_str()) " → " }
                                @if let Some(n) = e.new_status { (n.as_str()) }
                            }
                            td { (e.bank_status.as_deref().unwrap_or("")) }
                            td { code { (e.detail.to_string()) } }
                        }
                    }
                }
            }
            h2 { "Webhook deliveries" }
            @if deliveries.is_empty() {
                (empty("No deliveries."))
            } @else {
            table {
                thead { tr { th { "Event" } th { "Endpoint" } th { "Status" } th { "Attempts" } th { "Last attempt" } th { "Last answer" } th { "Action" } } }
                tbody {
                    @for d in deliveries {
                        tr {
                            td { (d.event_type) }
                            td { code { (d.url) } }
                            td { (d.status) }
                            td { (d.attempts) }
                            td { (d.last_attempt_at.map(when).unwrap_or_default()) }
                            td {
                                @if let Some(s) = d.last_response_status { "HTTP " (s) " " }
                                (d.last_error.as_deref().unwrap_or(""))
                            }
                            td {
                                @if d.status == "dead" {
                                    (action_form(session, "Replay", "replay_delivery", &[("endpoint", d.endpoint_id.to_string()), ("event", d.event_id.to_string())], &back))
                                }
                            }
                        }
                    }
                }
            }
            }
        },
    )
}

/// A form posting one action to `/console/actions`; the next page asks to confirm it.
fn action_form(
    session: &Session,
    label: &str,
    action: &str,
    fields: &[(&str, String)],
    back: &str,
) -> Markup {
    html! {
        form method="post" action="/console/actions" {
            input type="hidden" name="csrf" value=(session.csrf_token);
            input type="hidden" name="action" value=(action);
            input type="hidden" name="back" value=(back);
            @for (k, v) in fields { input type="hidden" name=(k) value=(v); }
            button class=[is_destructive(action).then_some("danger")] type="submit" { (label) }
        }
    }
}

/// The confirmation of an action: names the merchant by name and id (when it acts on one),
/// and a destructive action's button has the danger style.
pub fn confirm(
    session: &Session,
    action: &str,
    target: &str,
    merchant: Option<&Merchant>,
    destructive: bool,
    facts: Option<&str>,
    form: &HashMap<String, String>,
) -> Markup {
    layout(
        "Confirm",
        Some(session),
        html! {
            p {
                "Do " strong { (action.replace('_', " ")) } " for "
                @if let Some(m) = merchant {
                    "merchant " strong { (m.name) } " (" code { (m.id) } ")"
                    @if *target != format!("merchant {}", m.id) { ": " code { (target) } }
                } @else {
                    code { (target) }
                }
                "? It is recorded in the audit log under " (session.email) "."
            }
            @if let Some(f) = facts { p { (f) } }
            @if destructive { p.error { "This is a destructive action: check the merchant's name." } }
            form method="post" action="/console/actions" {
                @for (k, v) in form {
                    @if k != "confirm" { input type="hidden" name=(k) value=(v); }
                }
                input type="hidden" name="confirm" value="yes";
                button class=[destructive.then_some("danger")] type="submit" { "Confirm" }
                " "
                a href=(super::safe_back(form)) { "Cancel" }
            }
        },
    )
}

/// A secret the operator sees once (a merchant's new API key); the page is not cached.
pub fn shown_once(session: &Session, target: &str, secret: &str, back: &str) -> Markup {
    layout(
        "New API key",
        Some(session),
        html! {
            p { "The new key of " code { (target) } ", shown only this once; its older keys work for another day:" }
            p { code.secret { (secret) } }
            p { a href=(back) { "Back" } }
        },
    )
}

pub fn attention(
    session: &Session,
    certificate: &(String, bool),
    payments: &[AttentionPayment],
    dead: &[DeadDelivery],
    disabled: &[DisabledEndpoint],
) -> Markup {
    let back = "/console/attention";
    layout(
        "Needs attention",
        Some(session),
        html! {
            @if !certificate.1 && payments.is_empty() && dead.is_empty() && disabled.is_empty() {
                p.ok role="status" { "Nothing needs attention." }
            }
            h2 { "Certificate" }
            p class=(if certificate.1 { "bad" } else { "" }) { (certificate.0) }
            h2 { "Payments" }
            @if payments.is_empty() {
                (empty("No payments need attention."))
            } @else {
            table {
                thead { tr { th { "Payment" } th { "Merchant" } th { "Status" } th { "Why" } th { "Since" } } }
                tbody {
                    @for p in payments {
                        tr {
                            td { a href={ "/console/payments/" (p.id) } { code { (p.id) } } }
                            td { (p.merchant_name) } td { (p.status) } td { (p.reason) }
                            td { (when(p.since)) }
                        }
                    }
                }
            }
            }
            h2 { "Dead webhook deliveries" }
            @if dead.is_empty() {
                (empty("No dead deliveries."))
            } @else {
            table {
                thead { tr { th { "Event" } th { "Merchant" } th { "Endpoint" } th { "Attempts" } th { "Last error" } th { "Action" } } }
                tbody {
                    @for d in dead {
                        tr {
                            td {
                                (d.event_type)
                                @if let Some(p) = d.payment_id { " · " a href={ "/console/payments/" (p) } { "payment" } }
                            }
                            td { (d.merchant_name) } td { code { (d.url) } } td { (d.attempts) }
                            td { (d.last_error.as_deref().unwrap_or("")) }
                            td { (action_form(session, "Replay", "replay_delivery", &[("endpoint", d.endpoint_id.to_string()), ("event", d.event_id.to_string())], back)) }
                        }
                    }
                }
            }
            }
            h2 { "Disabled webhook endpoints" }
            @if disabled.is_empty() {
                (empty("No disabled endpoints."))
            } @else {
            table {
                thead { tr { th { "Merchant" } th { "Endpoint" } th { "Why" } th { "Action" } } }
                tbody {
                    @for e in disabled {
                        tr {
                            td { (e.merchant_name) } td { code { (e.url) } }
                            td { (e.disabled_reason.as_deref().unwrap_or("")) }
                            td { (action_form(session, "Re-enable", "enable_endpoint", &[("endpoint", e.id.to_string())], back)) }
                        }
                    }
                }
            }
            }
        },
    )
}

pub fn merchants(
    session: &Session,
    list: &[Merchant],
    usage: &[Usage],
    health: &[WebhookHealth],
) -> Markup {
    let back = "/console/merchants";
    layout(
        "Merchants",
        Some(session),
        html! {
            @if list.is_empty() {
                (empty("No merchants yet: create one with scripts/pisgate merchant create."))
            } @else {
            table {
                thead { tr {
                    th { "Merchant" } th { "Status" } th { "Payments: 24 h / 30 d by status" }
                    th { "Webhooks" } th { "Action" }
                } }
                tbody {
                    @for m in list {
                        tr {
                            td { a href={ "/console/payments?merchant=" (m.id) } { (m.name) } br; code { (m.id) } }
                            td { (m.status) }
                            td {
                                @for u in usage.iter().filter(|u| u.merchant_id == m.id) {
                                    (u.status) ": " (u.last_day) " / " (u.last_month) br;
                                }
                            }
                            td {
                                @if let Some(h) = health.iter().find(|h| h.merchant_id == m.id) {
                                    (h.enabled) " enabled, " (h.disabled) " disabled endpoint(s); "
                                    (h.pending) " pending, "
                                    span class=(if h.dead > 0 { "bad" } else { "" }) { (h.dead) " dead" }
                                } @else { "no endpoints" }
                            }
                            td {
                                @if m.status == "active" {
                                    (action_form(session, "Disable", "disable_merchant", &[("merchant", m.id.to_string())], back))
                                } @else {
                                    (action_form(session, "Enable", "enable_merchant", &[("merchant", m.id.to_string())], back))
                                }
                                (action_form(session, "Rotate API key", "rotate_key", &[("merchant", m.id.to_string())], back))
                                (action_form(session, "Revoke all keys now", "revoke_all_keys", &[("merchant", m.id.to_string())], back))
                                a href={ "/console/merchants/" (m.id) "/payees" } { "Payees" }
                            }
                        }
                    }
                }
            }
            }
        },
    )
}

/// A merchant's payee policy and payees; the account numbers are shown in full here (the
/// operator registers and checks them), never in the audit log.
pub fn payees(
    session: &Session,
    merchant: &Merchant,
    policy: PolicyState,
    list: &[Payee],
) -> Markup {
    let back = format!("/console/merchants/{}/payees", merchant.id);
    let id = merchant.id.to_string();
    let set = |label: &str, to: Policy| {
        action_form(
            session,
            label,
            "set_payees",
            &[("merchant", id.clone()), ("policy", to.as_str().into())],
            &back,
        )
    };
    let untrusted = list.iter().filter(|p| p.problem.is_some()).count();
    layout(
        "Payees",
        Some(session),
        html! {
            p { "Merchant " strong { (merchant.name) } " " code { (merchant.id) } }
            @if let Some(problem) = policy.problem {
                // What an insider's edit (or a key that left the ring) looks like here.
                p.error role="alert" {
                    strong { "Payee policy not trusted: " } (problem) ". "
                    "Payments go to the trusted payees below only, whatever it says ("
                    code { (policy.stored.as_str()) } "). Set it again to vouch for it. "
                    (set("Allow any account", Policy::Open))
                    (set("Pay registered payees only", Policy::Registered))
                }
            } @else {
            p {
                "Payee policy: " strong { (policy.stored.as_str()) }
                @if policy.stored == Policy::Open {
                    " (any valid creditor account). "
                    (set("Pay registered payees only", Policy::Registered))
                } @else {
                    " (only the accounts below). "
                    (set("Allow any account", Policy::Open))
                }
            }
            }
            @if untrusted > 0 {
                p.error role="alert" {
                    strong { (untrusted) @if untrusted == 1 { " payee is" } @else { " payees are" } " not trusted" }
                    " (marked below): no operator registered them under the ledger key. "
                    "No payment goes to them. Remove them, or add the same account again to vouch for it."
                }
            }
            @if list.is_empty() {
                (empty("No payees registered."))
            } @else {
            table {
                thead { tr { th { "Type" } th { "Account" } th { "Label" } th { "Registered" } th { "Trusted" } th { "Action" } } }
                tbody {
                    @for p in list {
                        tr {
                            td { (p.account_type) }
                            td { code { (p.account) } }
                            td { (p.label.as_deref().unwrap_or("")) }
                            td { (when(p.created_at)) }
                            td {
                                @if let Some(problem) = p.problem {
                                    span.bad { "No" } ": " (problem)
                                } @else {
                                    "Yes"
                                }
                            }
                            td { (action_form(session, "Remove", "remove_payee", &[("merchant", id.clone()), ("account_type", p.account_type.clone()), ("account", p.account.clone())], &back)) }
                        }
                    }
                }
            }
            }
            form.search method="post" action="/console/actions" {
                input type="hidden" name="csrf" value=(session.csrf_token);
                input type="hidden" name="action" value="add_payee";
                input type="hidden" name="back" value=(back);
                input type="hidden" name="merchant" value=(id);
                label { "Type" select name="account_type" {
                    @for t in AccountType::ALL { option value=(t.as_str()) { (t.as_str()) } }
                } }
                label { "Account" input name="account" required; }
                label { "Label" input name="label" maxlength="200"; }
                button type="submit" { "Add payee" }
            }
        },
    )
}

pub fn audit(session: &Session, list: &[AuditEntry]) -> Markup {
    layout(
        "Audit log",
        Some(session),
        html! {
            @if list.is_empty() {
                (empty("Nothing in the audit log yet."))
            } @else {
            table {
                thead { tr { th { "When" } th { "Operator" } th { "Action" } th { "Target" } } }
                tbody {
                    @for a in list {
                        tr {
                            td { (when(a.created_at)) }
                            td { (a.email) } td { (a.action) }
                            td { code { (a.target.as_deref().unwrap_or("")) } }
                        }
                    }
                }
            }
            }
        },
    )
}
