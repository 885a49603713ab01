//! What every problem `code` means and what to do about it: the table merchants' engineers
//! read, served as one page per code at `{public_url}/errors/{code}` (each problem's `type`)
//! and as the index at `{public_url}/errors`.
//!
//! The table is the catalogue of codes: a test fails when the API can answer a code that is
//! not in it, so a new error cannot ship without its page. Pages are static HTML with the
//! same strict policy as the shopper's pages (no script, one hashed stylesheet).

use crate::api::AppState;
use crate::api::consent::{html_page, style_hash};
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};
use std::sync::{LazyLock, RwLock};

/// One problem code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorDoc {
    pub code: &'static str,
    pub status: u16,
    pub title: &'static str,
    /// What happened.
    pub meaning: &'static str,
    /// What the client should do.
    pub action: &'static str,
}

const fn doc(
    code: &'static str,
    status: u16,
    title: &'static str,
    meaning: &'static str,
    action: &'static str,
) -> ErrorDoc {
    ErrorDoc {
        code,
        status,
        title,
        meaning,
        action,
    }
}

/// Every code the merchant API answers, in the order of the index page.
pub const CATALOGUE: &[ErrorDoc] = &[
    doc(
        "validation_failed",
        422,
        "Validation failed",
        "One or more fields of the request are invalid. `errors` lists each one with its `field` (a dotted path such as `creditor.account.value`), a stable `code` and a message.",
        "Fix the named fields and send the request again. Nothing was stored, nothing reached the bank.",
    ),
    doc(
        "malformed_json",
        400,
        "Malformed JSON",
        "The body is not valid JSON.",
        "Send a JSON object with `Content-Type: application/json`.",
    ),
    doc(
        "bad_request",
        400,
        "Bad request",
        "A header or query parameter is missing or invalid (for example `Idempotency-Key`, or a cursor).",
        "Read `detail`, fix the request and send it again.",
    ),
    doc(
        "unsupported_media_type",
        415,
        "Unsupported media type",
        "The body is not sent as `application/json`.",
        "Send `Content-Type: application/json`.",
    ),
    doc(
        "payload_too_large",
        413,
        "Payload too large",
        "The body is larger than the server accepts (`server.body_limit_bytes`).",
        "Send a smaller body; metadata is limited to 50 keys and 4096 bytes.",
    ),
    doc(
        "unauthenticated",
        401,
        "Unauthenticated",
        "No API key, a key that is not known, expired or revoked, or a scheme other than `Bearer`.",
        "Send `Authorization: Bearer <api key>` with a working key. Keys are shown once, when made.",
    ),
    doc(
        "merchant_disabled",
        401,
        "Merchant disabled",
        "The merchant was disabled by the operator: none of its keys work.",
        "Contact the operator of this pisgate.",
    ),
    doc(
        "key_in_grace",
        403,
        "Key in grace period",
        "This key was rotated away. Until its grace ends it may create and read payments, but not manage API keys or webhook endpoints or change the merchant.",
        "Use the merchant's new key. If you did not rotate it, your old key may have leaked: ask the operator to revoke all keys.",
    ),
    doc(
        "payee_not_registered",
        422,
        "Payee not registered",
        "The merchant may pay only creditor accounts the operator registered for it, and `creditor.account` is not one of them.",
        "Pay a registered account, or ask the operator to register this one. The API cannot register payees, by design.",
    ),
    doc(
        "not_found",
        404,
        "Not found",
        "No such object for this merchant (another merchant's objects answer the same).",
        "Check the id.",
    ),
    doc(
        "route_not_found",
        404,
        "Not found",
        "No such path.",
        "Check the path against the API reference (`/openapi.json`).",
    ),
    doc(
        "method_not_allowed",
        405,
        "Method not allowed",
        "The path exists, but not with this method.",
        "See the `Allow` header.",
    ),
    doc(
        "idempotency_key_reused",
        422,
        "Idempotency key reused",
        "This `Idempotency-Key` was used before with a different body.",
        "Use a new key for a new payment; repeat the first body to get the first answer again.",
    ),
    doc(
        "idempotency_key_in_flight",
        409,
        "Idempotency key in flight",
        "A request with this `Idempotency-Key` is still being processed.",
        "Retry after `Retry-After` seconds with the same key and body: you get its answer, and the payment is made once.",
    ),
    doc(
        "initiation_not_resumable",
        409,
        "Initiation not resumable",
        "The bank's answer to this payment's initiation was lost, and the bank may execute a payment without the shopper (an SCA exemption, or an approval pushed to the shopper's app): a second initiation could pay twice, so pisgate sends none. The payment stays open, `initiation: outcome_unknown`, and is never cancelled or expired on pisgate's word alone.",
        "Ask the operator: they reconcile the payment with the bank. Create it again with a new key only once they confirm the bank did not make it.",
    ),
    doc(
        "idempotency_key_unresumable",
        409,
        "Idempotency key unresumable",
        "A payment was created with this `Idempotency-Key`, its bank outcome is not known yet, and today's rules refuse its body (for example a return origin removed since), so a retry cannot resume it.",
        "Do not create it again: the payment exists and pisgate follows it to the end the bank gives it; find it with `GET /v1/payments` or wait for its webhook. Restore the rule (the origin) and retry with the same key to resume it now.",
    ),
    doc(
        "no_shopper_token",
        409,
        "No shopper token",
        "The call needs the shopper's bank token, and there is none that works (the shopper has not come back from the bank, or the bank issued a newer token).",
        "Wait for the shopper to return, or send the shopper to the bank again.",
    ),
    doc(
        "not_initiated",
        409,
        "Not initiated",
        "The payment's creation at the bank is not confirmed yet.",
        "Retry the creation with the same `Idempotency-Key`, then try again.",
    ),
    doc(
        "payment_final",
        409,
        "Payment final",
        "The payment has a final status and can no longer change.",
        "Read the payment: its status is the bank's last word.",
    ),
    doc(
        "cancel_too_late",
        409,
        "Too late to cancel",
        "The bank no longer lets this payment be cancelled (the shopper signed it, or it is executing).",
        "Follow the payment to its final status; refund by other means if needed.",
    ),
    doc(
        "too_many_endpoints",
        409,
        "Too many webhook endpoints",
        "The merchant already has the most enabled webhook endpoints allowed.",
        "Delete or disable one first.",
    ),
    doc(
        "endpoint_deleted",
        409,
        "Endpoint deleted",
        "The webhook endpoint is deleted.",
        "Create a new endpoint.",
    ),
    doc(
        "endpoint_not_enabled",
        409,
        "Endpoint not enabled",
        "The webhook endpoint is disabled, so nothing can be delivered to it.",
        "Enable it (`POST /v1/webhook-endpoints/{id}/enable`), then replay.",
    ),
    doc(
        "delivery_pending",
        409,
        "Delivery pending",
        "The delivery is still pending and will be attempted again at its `next_attempt_at`.",
        "Wait for it, or look at its attempts.",
    ),
    doc(
        "too_many_api_keys",
        409,
        "Too many API keys",
        "The merchant already has the most working API keys allowed.",
        "Revoke one first.",
    ),
    doc(
        "last_api_key",
        409,
        "Last API key",
        "This is the merchant's last working key; revoking it would lock the merchant out.",
        "Create another key first.",
    ),
    doc(
        "rate_limited",
        429,
        "Too many requests",
        "The merchant sent more requests than its limit in the current window (`X-RateLimit-*` headers).",
        "Wait `Retry-After` seconds.",
    ),
    doc(
        "bank_rejected",
        422,
        "Refused by the bank",
        "The bank refused the request; `errors` carries its reasons. Nothing was created at the bank.",
        "Fix what the bank names and create the payment again (with a new `Idempotency-Key`).",
    ),
    doc(
        "bank_unavailable",
        502,
        "Bank unavailable",
        "The bank did not answer, or answered with an error of its own.",
        "Retry later; for a creation, retry with the same `Idempotency-Key`.",
    ),
    doc(
        "initiation_outcome_unknown",
        502,
        "Initiation outcome unknown",
        "The bank may or may not have created the payment (the answer was lost or unreadable). pisgate keeps the attempt.",
        "Retry with the same `Idempotency-Key`: it resumes the same payment and never creates a second one.",
    ),
    doc(
        "service_unavailable",
        503,
        "Service unavailable",
        "pisgate is starting or stopping.",
        "Retry after `Retry-After` seconds.",
    ),
    doc(
        "database_unavailable",
        503,
        "Database unavailable",
        "pisgate cannot reach its database. Nothing was changed by this request unless it was already committed.",
        "Retry after `Retry-After` seconds with the same `Idempotency-Key`.",
    ),
    doc(
        "deadline_exceeded",
        503,
        "Deadline exceeded",
        "The request took longer than the server's deadline and was stopped; nothing it had not committed is kept.",
        "Retry with the same `Idempotency-Key`: a creation cut off this way is resumed.",
    ),
    doc(
        "internal_error",
        500,
        "Internal server error",
        "A fault on pisgate's side. Details are in pisgate's log under the `request_id`.",
        "Retry once; if it persists, give the `request_id` to the operator.",
    ),
];

/// The public base the problem `type` URIs point at (`server.public_url`), set when the app
/// is built; until then, and in unit tests, a relative `/errors/{code}`.
static PUBLIC_URL: RwLock<String> = RwLock::new(String::new());

/// Sets the base of problem `type` URIs (the last app built in a process wins).
pub fn set_public_url(url: &str) {
    if let Ok(mut base) = PUBLIC_URL.write() {
        url.trim_end_matches('/').clone_into(&mut base);
    }
}

/// `{public_url}/errors/{code}`.
pub fn type_uri(code: &str) -> String {
    let base = PUBLIC_URL.read().map(|b| b.clone()).unwrap_or_default();
    format!("{base}/errors/{code}")
}

pub fn find(code: &str) -> Option<&'static ErrorDoc> {
    CATALOGUE.iter().find(|d| d.code == code)
}

const CSS: &str = "\
body{margin:0;font:1rem/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1a1a1a;background:#f4f5f7}\
main{max-width:44rem;margin:2rem auto;padding:1.5rem;background:#fff;border:1px solid #c8ccd2;border-radius:.5rem}\
h1{font-size:1.5rem;margin:0 0 .5rem}\
code{font:.95em ui-monospace,monospace;background:#eef0f3;padding:0 .2em;border-radius:.2em}\
table{border-collapse:collapse;width:100%}\
td,th{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #d5d8dd;vertical-align:top}\
a{color:#0b3d91}\
";

static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; style-src {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        style_hash(CSS)
    )
});

/// Renders the `backtick` spans of a catalogue text as code.
fn prose(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

fn shell(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · pisgate errors" }
                style { (maud::PreEscaped(CSS)) }
            }
            body { main { (body) } }
        }
    }
}

async fn index() -> Response {
    let body = html! {
        h1 { "pisgate API errors" }
        p { "Every error answer is an RFC 9457 problem (" code { "application/problem+json" }
            ") with a stable " code { "code" } "; switch on it, never on " code { "detail" } "." }
        table {
            tr { th { "Code" } th { "Status" } th { "Meaning" } }
            @for d in CATALOGUE {
                tr {
                    td { a href={ "/errors/" (d.code) } { code { (d.code) } } }
                    td { (d.status) }
                    td { (prose(d.meaning)) }
                }
            }
        }
    };
    html_page(StatusCode::OK, shell("All codes", body), &CSP)
}

async fn one(Path(code): Path<String>) -> Response {
    let Some(d) = find(&code) else {
        let body = html! {
            h1 { "Unknown error code" }
            p { "pisgate has no error code by that name. " a href="/errors" { "All codes" } }
        };
        return html_page(StatusCode::NOT_FOUND, shell("Unknown code", body), &CSP);
    };
    let body = html! {
        h1 { code { (d.code) } }
        p { strong { (d.status) " " (d.title) } }
        h2 { "What it means" }
        p { (prose(d.meaning)) }
        h2 { "What to do" }
        p { (prose(d.action)) }
        p { a href="/errors" { "All codes" } }
    };
    html_page(StatusCode::OK, shell(d.title, body), &CSP)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/errors", get(index))
        .route("/errors/{code}", get(one))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::error::ApiError;
    use std::path::Path as FsPath;

    /// Every code the API can answer has its page: the fixed ones (each variant once) and
    /// the conflict codes named in the source.
    #[test]
    fn every_code_the_api_answers_is_in_the_catalogue() {
        let fixed = [
            ApiError::MalformedJson(String::new()),
            ApiError::BadRequest(String::new()),
            ApiError::Validation(Vec::new()),
            ApiError::Unauthenticated(""),
            ApiError::MerchantDisabled,
            ApiError::KeyInGrace,
            ApiError::PayeeNotRegistered,
            ApiError::NotFound(""),
            ApiError::UnknownRoute(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::IdempotencyMismatch(String::new()),
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::RateLimited {
                retry_after_secs: 1,
            },
            ApiError::Unavailable(String::new()),
            ApiError::DatabaseUnavailable,
            ApiError::DeadlineExceeded,
            ApiError::BankRejected(Vec::new()),
            ApiError::BankUnavailable(String::new()),
            ApiError::InitiationOutcomeUnknown(String::new()),
            ApiError::Internal(anyhow::anyhow!("x")),
        ];
        let mut missing: Vec<String> = Vec::new();
        for e in &fixed {
            match find(e.code()) {
                Some(d) if d.status == e.status().as_u16() => {}
                Some(d) => missing.push(format!(
                    "{}: status {} in the catalogue, {} answered",
                    d.code,
                    d.status,
                    e.status()
                )),
                None => missing.push(e.code().to_owned()),
            }
        }
        // Conflict codes are chosen where they are raised: read them from the source.
        let mut stack = vec![FsPath::new(env!("CARGO_MANIFEST_DIR")).join("src/api")];
        let re = regex_lite_conflicts;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    for code in re(&std::fs::read_to_string(&path).unwrap()) {
                        match find(&code) {
                            Some(d) if d.status == 409 => {}
                            _ => missing.push(format!("{code} (409, {})", path.display())),
                        }
                    }
                }
            }
        }
        assert!(missing.is_empty(), "codes without a page: {missing:?}");
        let mut codes: Vec<&str> = CATALOGUE.iter().map(|d| d.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(
            codes.len(),
            CATALOGUE.len(),
            "a code twice in the catalogue"
        );
    }

    /// The string literal after each `ApiError::Conflict(` in `source`.
    fn regex_lite_conflicts(source: &str) -> Vec<String> {
        source
            .split(concat!("ApiError::", "Conflict("))
            .skip(1)
            .filter_map(|rest| {
                let rest = rest.trim_start();
                let rest = rest.strip_prefix('"')?;
                Some(rest[..rest.find('"')?].to_owned())
            })
            .collect()
    }
}
