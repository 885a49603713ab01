//! The shopper's pages at the authorization hop: the consent page (what is paid, to whom, on
//! whose behalf, in the shopper's language) and the pages of a payment that can no longer be
//! signed. Server-rendered with maud, compiled into the binary: no JavaScript, no third-party
//! asset, one inline stylesheet allowed by its hash in a strict Content-Security-Policy.
//!
//! Every page names who runs it: the payment initiation service provider's legal name and
//! licence (`[provider]` settings), as PSD2 asks the shopper to be told. Each party has one
//! word per language: the shop (the merchant), the recipient (the creditor, shown once when
//! it is the shop itself), the bank, and the provider.
//!
//! Never shown: the full account number (masked to its last characters), the bank's link
//! (it is only ever the target of a 303 after the shopper presses the button).

pub mod choice;
pub mod choice_text;
pub mod text;

use crate::config::ProviderSettings;
use crate::domain::{Account, AccountType, Currency, Language, RecurrenceType, display};
use crate::ledger::payments::PaymentRecord;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;
pub use text::{Text, choose, text};

/// Dark text on white (contrast above 15:1), a dark blue button with white text (above
/// 10:1), and a thick focus ring, so the page reads and works by keyboard.
const CSS: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:1rem/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1a1a1a;background:#f4f5f7}\
main{max-width:32rem;margin:2rem auto;padding:1.5rem;background:#fff;border:1px solid #c8ccd2;border-radius:.5rem}\
h1{font-size:1.5rem;margin:0 0 .5rem}\
.to{font-size:1.125rem;margin:0 0 1rem}\
.amount{font-size:2rem;font-weight:700;margin:0 0 1rem}\
.per{font-size:1.25rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0 0 1.5rem}\
dt{font-weight:600;color:#3a3f45}\
dd{margin:0;overflow-wrap:anywhere}\
button{font:inherit;cursor:pointer}\
.go{display:block;width:100%;padding:.75rem 1rem;border:0;border-radius:.375rem;background:#0b3d91;color:#fff;font-weight:700}\
.go:hover{background:#082e6e}\
.link{padding:.25rem 0;border:0;background:none;color:#0b3d91;text-decoration:underline}\
a{color:#0b3d91}\
form{margin:0 0 1rem}\
footer{max-width:32rem;margin:0 auto 2rem;padding:0 1.5rem;font-size:.875rem;color:#3a3f45}\
:focus-visible{outline:3px solid #b35c00;outline-offset:3px}\
fieldset{border:0;margin:0 0 1rem;padding:0}\
legend{font-weight:600;margin:0 0 .5rem}\
.bank{margin:0 0 .75rem}\
label{display:block;font-weight:600;margin:0 0 .25rem}\
.field{display:block;width:100%;padding:.625rem;font:inherit;border:2px solid #3a3f45;border-radius:.375rem;margin:0 0 .25rem}\
.hint{font-size:.875rem;color:#3a3f45;margin:0 0 1rem}\
.error{color:#a4120c;font-weight:700;margin:0 0 .5rem}\
.summary{border:3px solid #a4120c;border-radius:.375rem;padding:.75rem 1rem;margin:0 0 1rem}\
.summary h2{font-size:1.125rem;margin:0 0 .25rem}\
";

/// The CSP source of an inline stylesheet: `'sha256-…'` of its exact text.
pub fn style_hash(css: &str) -> String {
    let digest = Sha256::digest(css.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

static STYLE_HASH: LazyLock<String> = LazyLock::new(|| style_hash(CSS));

/// What the consent page shows, read from the stored canonical request.
pub struct Consent<'a> {
    pub payment: &'a PaymentRecord,
    pub merchant: &'a str,
    pub token: &'a str,
    pub provider: &'a ProviderSettings,
    /// The bank's name as configured (`[banks.<id>] name`), shown to the shopper.
    pub bank_name: &'a str,
}

/// A bank's name from its id, for a bank no longer configured.
pub fn bank_name(bank: &str) -> String {
    match bank {
        "nordea" => "Nordea".into(),
        other => {
            let mut c = other.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
    }
}

/// The creditor's account as `FI…6228`: never the whole number.
fn masked_account(account: &Value) -> Option<String> {
    let kind = AccountType::parse(account["type"].as_str()?)?;
    let value = account["value"].as_str()?;
    Some(match Account::parse(kind, value) {
        Ok(a) => a.masked(),
        Err(_) => crate::bank::Account {
            kind,
            value: value.to_owned(),
        }
        .masked(),
    })
}

/// The amount in the shopper's words; the stored record's minor units and currency.
pub fn amount(p: &PaymentRecord, lang: Language) -> String {
    match Currency::from_code(&p.currency) {
        Some(c) => display::amount(p.amount_minor, c, lang),
        None => format!("{} {}", p.amount_minor, p.currency),
    }
}

/// Who runs the page, in the shopper's language.
pub fn provider_line(provider: &ProviderSettings, lang: Language) -> String {
    let t = text(lang);
    format!(
        "{} {}, {} ({}: {}).",
        t.provided_by, provider.legal_name, t.pisp, t.licence, provider.licence
    )
}

pub(crate) fn layout(
    t: &Text,
    lang: Language,
    provider: &ProviderSettings,
    title: &str,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(t.html_lang) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                main { (body) }
                footer { p.provider { (provider_line(provider, lang)) } }
            }
        }
    }
}

/// The consent page: what is paid, to whom, and the button to the bank.
pub fn consent_page(c: &Consent<'_>, lang: Language) -> Markup {
    let t = text(lang);
    let p = c.payment;
    let r = &p.request;
    let creditor = &r["creditor"];
    let bank = c.bank_name;
    let date = r["execution_date"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .map(|d| display::date(d, lang))
        .unwrap_or_else(|| t.as_soon_as_possible.to_owned());
    let recurring = r["recurring"]["recurrence_type"]
        .as_str()
        .and_then(RecurrenceType::parse)
        .zip(r["recurring"]["count"].as_u64())
        .map(|(kind, count)| (kind, count.min(u32::MAX as u64) as u32));
    let reference = creditor["reference"]["value"].as_str();
    let recipient = creditor["name"].as_str();
    // The shop that is also the recipient is one party: one row, as the recipient.
    let shop_row = !recipient.is_some_and(|name| same_party(name, c.merchant));
    let action = p.id.to_string();
    let amount = amount(p, lang);
    layout(
        t,
        lang,
        c.provider,
        t.title,
        html! {
            h1 { (t.title) }
            p.to { (t.shop) ": " strong { (c.merchant) } }
            @if let Some((kind, count)) = recurring {
                p.amount {
                    (amount) " "
                    span.per { (display::recurrence_after_amount(kind, count, lang)) }
                }
            } @else {
                p.amount { (amount) }
            }
            p { (t.next_step) }
            dl {
                @if shop_row {
                    dt { (t.shop) } dd { (c.merchant) }
                }
                @if let Some(name) = recipient {
                    dt { (t.recipient) } dd { (name) }
                }
                @if let Some(account) = masked_account(&creditor["account"]) {
                    dt { (t.account) } dd { (account) }
                }
                @if let Some(order) = &p.merchant_reference {
                    dt { (t.order) } dd { (order) }
                }
                @if let Some(message) = creditor["message"].as_str() {
                    dt { (t.message) } dd { (message) }
                }
                @if let Some(reference) = reference {
                    dt { (t.reference) } dd { (reference) }
                }
                dt { (t.date) } dd { (date) }
                @if let Some((kind, count)) = recurring {
                    dt { (t.repeats) } dd { (display::recurrence(kind, count, lang)) }
                }
                dt { (t.bank) } dd { (bank) }
            }
            form method="post" action=(action) {
                input type="hidden" name="t" value=(c.token);
                button.go type="submit" { (t.continue_to) " " (bank) }
            }
            form method="post" action={ (action) "/cancel" } {
                input type="hidden" name="t" value=(c.token);
                button.link type="submit" { (t.cancel) }
            }
        },
    )
}

/// Whether the creditor's name is the shop's own (ignoring case and surrounding space).
fn same_party(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// Which plain page a payment that cannot be signed gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Unknown,
    NotReady,
    Expired,
    Cancelled,
    Paid,
    Signed,
    Closed,
    Unavailable,
    /// The bank made the payment with other terms (amount, currency, creditor account) than
    /// pisgate sent: it is not sent for signing.
    TermsMismatch,
    /// The bank needs nothing on its page (an SCA exemption, or a decoupled SCA it started
    /// in the shopper's app): nothing to open, the bank is processing it.
    AtTheBank,
}

/// A page without a way to the bank; with a payment, a link back to the merchant carrying
/// the payment's id.
pub fn closed_page(
    kind: Closed,
    lang: Language,
    back: Option<&PaymentRecord>,
    provider: &ProviderSettings,
) -> Markup {
    let t = text(lang);
    let (title, message) = match kind {
        Closed::Unknown => t.unknown,
        Closed::NotReady => t.not_ready,
        Closed::Expired => t.expired,
        Closed::Cancelled => t.cancelled,
        Closed::Paid => t.paid,
        Closed::Signed => t.signed,
        Closed::Closed => t.closed,
        Closed::Unavailable => t.unavailable,
        Closed::TermsMismatch => t.terms_mismatch,
        Closed::AtTheBank => t.at_the_bank,
    };
    let back = back.and_then(return_url);
    layout(
        t,
        lang,
        provider,
        title,
        html! {
            h1 { (title) }
            p { (message) }
            @if let Some(p) = back {
                p { a href=(p) { (t.back) } }
            } @else {
                p { (t.close_window) }
            }
        },
    )
}

/// The neutral page of a link previewer, a link check or a prefetch
/// ([`crate::api::link_preview`]): nothing of the payment, and one link, `continue_href`
/// (this address with `open=1`), for a person whose browser was taken for a previewer.
pub fn preview_page(lang: Language, continue_href: &str, provider: &ProviderSettings) -> Markup {
    let t = text(lang);
    let (title, message) = t.preview;
    layout(
        t,
        lang,
        provider,
        title,
        html! {
            h1 { (title) }
            p { (message) }
            p { a href=(continue_href) rel="nofollow noopener" { (t.preview_continue) } }
        },
    )
}

/// A plain page with a title and a message in `lang` (the callback's pages: the payment's
/// language when the return link names a payment, else the browser's), and the way to close
/// the window.
pub fn plain_page(
    title: &str,
    message: &str,
    provider: &ProviderSettings,
    lang: Language,
) -> Markup {
    let t = text(lang);
    layout(
        t,
        lang,
        provider,
        title,
        html! {
            h1 { (title) }
            p { (message) }
            p { (t.close_window) }
        },
    )
}

/// The merchant's return URL with the payment's id added, and nothing a merchant could take
/// as proof of payment (no status: whoever holds the URL can edit it). The merchant confirms
/// with `GET /v1/payments/{id}` or the webhook.
pub fn return_url(p: &PaymentRecord) -> Option<String> {
    let mut url = url::Url::parse(&p.return_url).ok()?;
    url.query_pairs_mut()
        .append_pair("payment_id", &p.id.to_string());
    Some(url.into())
}

/// The origin of a URL (`https://bank.example:8443`), for the policy's `form-action`.
pub fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(u.origin().ascii_serialization()).filter(|o| o != "null")
}

/// The Content-Security-Policy of the hop's pages: nothing may load but the inline style of
/// its hash; forms may go to pisgate, and be redirected to the bank and the merchant only.
pub fn policy(form_targets: &[String]) -> String {
    let mut targets = String::from("'self'");
    for t in form_targets {
        targets.push(' ');
        targets.push_str(t);
    }
    format!(
        "default-src 'none'; style-src {}; img-src 'none'; base-uri 'none'; \
         form-action {targets}; frame-ancestors 'none'",
        *STYLE_HASH
    )
}

/// A rendered page with the hop's headers: no caching, no referrer, the strict policy.
pub fn respond(status: StatusCode, page: Markup, form_targets: &[String]) -> Response {
    html_page(status, page, &policy(form_targets))
}

/// A server-rendered page with the headers every pisgate page carries: `csp`, no caching,
/// no referrer, no sniffing, no framing.
pub fn html_page(status: StatusCode, page: Markup, csp: &str) -> Response {
    let csp = HeaderValue::from_str(csp)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    let response = (
        status,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::CONTENT_SECURITY_POLICY, csp),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        Html(page.into_string()),
    )
        .into_response();
    with_retry_after(response)
}

/// A 503 page says when to try again, like the API's 503s (a browser ignores it; proxies,
/// monitors and scripts do not).
pub fn with_retry_after(mut response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_inline_style_only_by_its_hash() {
        let p = policy(&["https://bank.example".into()]);
        assert!(
            p.starts_with("default-src 'none'; style-src 'sha256-"),
            "{p}"
        );
        assert!(!p.contains("unsafe-inline"));
        assert!(
            p.contains("form-action 'self' https://bank.example;"),
            "{p}"
        );
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS));
        assert!(p.contains(&hash));
    }

    #[test]
    fn accounts_are_masked_to_their_last_characters() {
        let a = serde_json::json!({"type": "IBAN", "value": "FI1450000120236228"});
        assert_eq!(masked_account(&a).unwrap(), "FI…6228");
    }

    #[test]
    fn banks_are_named_as_shoppers_know_them() {
        assert_eq!(bank_name("nordea"), "Nordea");
        assert_eq!(bank_name("op"), "Op");
    }
}
