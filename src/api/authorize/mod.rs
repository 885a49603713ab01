//! The authorization hop: `{public_url}/authorize/{payment_id}?t=…`, the only authorization
//! link a merchant ever hands to a shopper.
//!
//! `GET` shows the shopper's consent page (see [`consent`]) while the payment can still be
//! signed (awaiting authorization, the bank's answer recorded, within pisgate's signing
//! window, not cancelled), and a plain page with a way back to the merchant otherwise; it
//! records nothing. The page's button `POST`s the token back; only then is the shopper
//! redirected (303) to the bank's signing link and is it recorded, once, that the link was
//! handed out. So pisgate knows whether any shopper can have reached the bank's page, which
//! is what lets a merchant cancel an abandoned checkout at once and what makes a lost
//! initiation's link unsignable. The page's cancel button `POST`s to `…/cancel`, which takes
//! the merchant's cancel path ([`payments::start_cancel`]) as the shopper's cancel: a payment
//! whose link nobody followed ends `cancelled` (`cancelled_by_shopper`); once someone reached
//! the bank, the bank decides, and a payment the shopper signs anyway (the old tab's button
//! pressed after signing in a new one) is never deleted for it. Either way the shopper lands
//! on the merchant's return URL, with the payment's id and no status.
//!
//! A payment created with `consent: "merchant"` skips the page: `GET` redirects to the bank
//! as the button would.
//!
//! A payment whose initiation waits for the shopper (several banks serve its country and the
//! merchant named none, or its bank needs the debtor's account and the merchant gave none)
//! shows, before the bank's answer is recorded, pisgate's bank choice or IBAN form instead
//! ([`deferred`]): the submit records the choice and initiates at that bank then, and the
//! shopper comes back here for the consent page (for such a payment even with
//! `consent: "merchant"`: the page's strict `form-action` could not allow a redirect chain
//! from pisgate's form to a bank link that did not exist when the form was served).
//!
//! A payment at a bank whose every call needs the shopper's own token (SEB) is shown the
//! BankID page instead ([`crate::api::bankid`]): identify, then initiate, then sign there.
//!
//! The token `t` is 256 random bits, compared in constant time; a wrong or missing token
//! answers the same page as an unknown payment. It doubles as the forms' CSRF token: only
//! someone holding the link can post them. Never logged: the token, the bank's link.

use crate::api::AppState;
use crate::api::consent::{self, Closed};
use crate::domain::{Language, PaymentStatus};
use crate::ledger::merchants;
use crate::ledger::payments::{self, CancelBy, CancelStart, Hop, HopClosed, PaymentRecord};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::Utc;
use rand::RngCore;
use std::collections::HashMap;
use uuid::Uuid;

mod deferred;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/authorize/{id}",
            get(show).post(|State(s), Path(id), h, Form(f)| posted(s, id, h, f, Action::Proceed)),
        )
        .route(
            "/authorize/{id}/cancel",
            post(|State(s), Path(id), h, Form(f)| posted(s, id, h, f, Action::Cancel)),
        )
        .route(
            "/authorize/{id}/bank",
            post(|State(s), Path(id), h, Form(f)| posted(s, id, h, f, Action::ChooseBank)),
        )
        .route(
            "/authorize/{id}/account",
            post(|State(s), Path(id), h, Form(f)| posted(s, id, h, f, Action::GiveAccount)),
        )
        .route(
            "/authorize/{id}/initiate",
            post(|State(s), Path(id), h, Form(f)| posted(s, id, h, f, Action::Initiate)),
        )
}

/// A new hop token: 256 random bits, URL-safe.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The hop's URL for a payment.
pub fn url(state: &AppState, payment_id: Uuid, token: &str) -> String {
    crate::ledger::view::hop_url(&state.settings.server.public_url, payment_id, token)
}

/// The hop's URL for a stored payment, built from this server's public URL and the payment's
/// token ([`crate::ledger::view::hop_url`]), never the row's stored link; empty for a payment
/// without a hop (made before the hop existed).
pub fn url_of(state: &AppState, p: &PaymentRecord) -> String {
    p.authorize_token
        .as_deref()
        .map(|t| url(state, p.id, t))
        .unwrap_or_default()
}

fn tokens_match(given: &str, stored: &str) -> bool {
    let (a, b) = (given.as_bytes(), stored.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The shopper's language for a page: the payment's own, else the browser's.
pub(crate) fn language(p: Option<&PaymentRecord>, headers: &HeaderMap) -> Language {
    consent::choose(
        p.and_then(|p| p.request["language"].as_str()),
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// A page with no way to the bank.
pub(super) fn closed(
    state: &AppState,
    kind: Closed,
    lang: Language,
    back: Option<&PaymentRecord>,
) -> Response {
    // A payment pisgate stopped because its bank made it with other terms says why.
    let kind = match (kind, back) {
        (Closed::Cancelled | Closed::Closed, Some(p))
            if p.failure_code.as_deref() == Some(payments::TERMS_MISMATCH) =>
        {
            Closed::TermsMismatch
        }
        _ => kind,
    };
    let status = match kind {
        Closed::Unknown => StatusCode::NOT_FOUND,
        Closed::NotReady => StatusCode::CONFLICT,
        Closed::AtTheBank => StatusCode::OK,
        Closed::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::GONE,
    };
    consent::respond(
        status,
        consent::closed_page(kind, lang, back, &state.settings.provider),
        &[],
    )
}

fn closed_kind(c: HopClosed) -> Closed {
    match c {
        HopClosed::NotReady => Closed::NotReady,
        HopClosed::WindowPassed | HopClosed::Done(PaymentStatus::Expired) => Closed::Expired,
        HopClosed::CancelRequested | HopClosed::Done(PaymentStatus::Cancelled) => Closed::Cancelled,
        HopClosed::Done(PaymentStatus::Paid) => Closed::Paid,
        HopClosed::Done(PaymentStatus::AwaitingAuthorization | PaymentStatus::Authorized) => {
            Closed::Signed
        }
        HopClosed::Done(_) => Closed::Closed,
        HopClosed::LinkNotInLedger => Closed::Unavailable,
        HopClosed::AtTheBank => Closed::AtTheBank,
    }
}

pub(super) fn see_other(location: String) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::REFERRER_POLICY, "no-referrer".to_owned()),
        ],
    )
        .into_response()
}

/// The payment behind a hop link, if the id parses, the payment exists and the token is its.
pub(super) async fn load(
    state: &AppState,
    id: &str,
    token: &str,
) -> anyhow::Result<Option<PaymentRecord>> {
    let Ok(id) = id.parse::<Uuid>() else {
        return Ok(None);
    };
    tracing::Span::current().record("payment_id", tracing::field::display(id));
    let Some(p) = payments::get(&mut *state.pool.read_conn().await?, id).await? else {
        return Ok(None);
    };
    if !p
        .authorize_token
        .as_deref()
        .is_some_and(|stored| tokens_match(token, stored))
    {
        tracing::warn!("authorization hop with a wrong token");
        return Ok(None);
    }
    Ok(Some(p))
}

/// Whether `p`'s merchant was disabled by an operator (`pisgate merchant disable`, the
/// console): its shoppers can no longer go on to sign what is open (nothing more is started
/// at any bank; the closed page is shown). Cancelling and the bank's returns still work, so
/// what already happened at the bank is recorded as ever.
pub(crate) async fn merchant_disabled(state: &AppState, p: &PaymentRecord) -> anyhow::Result<bool> {
    let disabled = merchants::get(&state.pool, p.merchant_id)
        .await?
        .is_none_or(|m| m.status == "disabled");
    if disabled {
        tracing::warn!(merchant_id = %p.merchant_id, "a shopper's step refused: the merchant is disabled");
    }
    Ok(disabled)
}

/// What the shopper asked of the hop.
#[derive(Clone, Copy)]
enum Action {
    Show,
    Proceed,
    Cancel,
    /// Deferred initiation: the bank chosen (`bank`), the IBAN given (`iban`), or a retry.
    ChooseBank,
    GiveAccount,
    Initiate,
}

/// Checks the link (an unknown payment and a wrong token get the same page), picks the
/// language and does `action`; a failure is logged and answered with the "try again" page.
async fn act(
    state: &AppState,
    id: &str,
    token: &str,
    headers: &HeaderMap,
    action: Action,
    form: &HashMap<String, String>,
) -> Response {
    let fallback = language(None, headers);
    let result = async {
        let Some(p) = load(state, id, token).await? else {
            return Ok(closed(state, Closed::Unknown, fallback, None));
        };
        let lang = language(Some(&p), headers);
        if !matches!(action, Action::Cancel) && merchant_disabled(state, &p).await? {
            return Ok(closed(state, Closed::Closed, lang, Some(&p)));
        }
        // A bank whose every call needs the shopper's own token (SEB): its payments are
        // identified, initiated and signed on the BankID page.
        if matches!(action, Action::Show | Action::Proceed | Action::Initiate)
            && crate::api::bankid::uses_bankid_page(state, &p.bank)
        {
            return Ok(see_other(crate::api::bankid::url(state, &p)));
        }
        match action {
            Action::Show => show_page(state, &p, token, lang).await,
            Action::Proceed => to_bank(state, &p, lang).await,
            Action::Cancel => shopper_cancel(state, &p, lang).await,
            Action::ChooseBank => {
                let bank = form.get("bank").map(String::as_str).unwrap_or("");
                deferred::choose_bank(state, &p, token, lang, bank).await
            }
            Action::GiveAccount => {
                let iban = form.get("iban").map(String::as_str).unwrap_or("");
                deferred::give_account(state, &p, token, lang, iban).await
            }
            Action::Initiate => deferred::proceed(state, &p, token, lang).await,
        }
    }
    .await;
    result.unwrap_or_else(|e: anyhow::Error| {
        tracing::error!(error = format!("{e:#}"), "authorization hop failed");
        closed(state, Closed::Unavailable, fallback, None)
    })
}

/// `GET /authorize/{id}?t=…`: the consent page, or the plain page of a payment that cannot
/// be signed. Records nothing (but for `consent: "merchant"`, which goes to the bank). A
/// link previewer, a `HEAD` or a prefetch gets the neutral page of
/// [`crate::api::link_preview`] instead, whatever the payment.
#[tracing::instrument(skip_all, fields(payment_id = tracing::field::Empty))]
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    use crate::api::link_preview::{self, Verdict};
    match link_preview::judge(&method, &headers, &q) {
        Verdict::Preview => return link_preview::page(&state, &headers, &q),
        Verdict::Proceed { remember: true } => {
            return link_preview::opened(&state, &id, &q);
        }
        Verdict::Proceed { remember: false } => {}
    }
    let token = q.get("t").map(String::as_str).unwrap_or("");
    act(&state, &id, token, &headers, Action::Show, &HashMap::new()).await
}

/// `POST /authorize/{id}` (the shopper pressed "Continue to the bank") and
/// `POST /authorize/{id}/cancel` ("Cancel"), each with the token in the form.
#[tracing::instrument(skip_all, fields(payment_id = tracing::field::Empty))]
async fn posted(
    state: AppState,
    id: String,
    headers: HeaderMap,
    form: HashMap<String, String>,
    action: Action,
) -> Response {
    let token = form.get("t").map(String::as_str).unwrap_or("");
    act(&state, &id, token, &headers, action, &form).await
}

async fn show_page(
    state: &AppState,
    p: &PaymentRecord,
    token: &str,
    lang: Language,
) -> anyhow::Result<Response> {
    if p.deferred && !p.is_initiated() {
        return deferred::show(state, p, token, lang).await;
    }
    // A deferred payment's shopper arrives from pisgate's own form: a redirect chain from it
    // to the bank would need the bank's link origin in that form's `form-action` before the
    // link exists, so such a payment shows the consent page's button even with
    // `consent: "merchant"`.
    if p.request["consent"] == "merchant" && !p.deferred {
        return to_bank(state, p, lang).await;
    }
    let link = match payments::hop_for(p, Utc::now()) {
        Hop::ToBank(link) => link,
        Hop::StartAuthorisation => super::sca::form_target(state, p),
        Hop::Closed(c) => return Ok(closed(state, closed_kind(c), lang, Some(p))),
    };
    let merchant = merchants::get(&state.pool, p.merchant_id)
        .await?
        .map(|m| m.name)
        .unwrap_or_default();
    let targets: Vec<String> = consent::origin_of(&link)
        .into_iter()
        .chain(consent::origin_of(&p.return_url))
        .collect();
    let bank_name = state
        .banks
        .get(&p.bank)
        .map(|b| b.name.clone())
        .unwrap_or_else(|| consent::bank_name(&p.bank));
    let page = consent::consent_page(
        &consent::Consent {
            payment: p,
            merchant: &merchant,
            token,
            provider: &state.settings.provider,
            bank_name: &bank_name,
        },
        lang,
    );
    Ok(consent::respond(StatusCode::OK, page, &targets))
}

/// Opens the hop (recording it, once) and redirects to the bank, or shows why not.
async fn to_bank(state: &AppState, p: &PaymentRecord, lang: Language) -> anyhow::Result<Response> {
    let mut tx = state.pool.begin().await?;
    let hop = payments::open_hop(&mut tx, p.id).await?;
    tx.commit().await?;
    match hop {
        None => Ok(closed(state, Closed::Unknown, lang, None)),
        Some(Hop::ToBank(link)) => {
            tracing::info!("shopper sent to the bank to sign");
            Ok(see_other(link))
        }
        Some(Hop::StartAuthorisation) => super::sca::start(state, p, lang).await,
        Some(Hop::Closed(c)) => {
            let now = payments::get(&mut *state.pool.read_conn().await?, p.id).await?;
            Ok(closed(state, closed_kind(c), lang, now.as_ref()))
        }
    }
}

/// Takes the merchant's cancel path for the shopper, then returns them to the merchant
/// with the payment's id (its status is for the merchant to ask the API).
async fn shopper_cancel(
    state: &AppState,
    p: &PaymentRecord,
    lang: Language,
) -> anyhow::Result<Response> {
    let mut tx = state.pool.begin().await?;
    let acts_without_hop = |bank: &str| state.banks.client(bank).traits().acts_without_hop;
    let start = payments::start_cancel(&mut tx, p.id, CancelBy::Shopper, &acts_without_hop).await?;
    tx.commit().await?;
    match start {
        Some(CancelStart::Cancelled) => tracing::info!("shopper cancelled on the consent page"),
        Some(CancelStart::BankDecides(_)) => {
            tracing::info!("shopper cancelled after reaching the bank: the bank decides")
        }
        _ => {}
    }
    let now = payments::get(&mut *state.pool.read_conn().await?, p.id).await?;
    Ok(match now.as_ref().and_then(consent::return_url) {
        Some(back) => see_other(back),
        None => closed(state, Closed::Closed, lang, now.as_ref()),
    })
}
