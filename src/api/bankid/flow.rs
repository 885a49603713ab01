//! The BankID page's flow: `GET /authorize/{id}/bankid?t=…` (the page), `GET
//! /authorize/{id}/bankid/state?t=…` (the same as JSON, for the in-place updater),
//! `POST /authorize/{id}/bankid/start` ("try again": a new order, or a new initiation attempt)
//! and `POST /authorize/{id}/bankid/cancel`, each checked with the hop's token `t` (which
//! doubles as the forms' CSRF token), for a payment at a bank whose every call needs the
//! shopper's own token (SEB).
//!
//! The steps, one per page load (the page refreshes itself without JavaScript):
//! 1. **identify**: the first load starts the shopper's identification order
//!    ([`Bank::start_identification`]); later orders start only on the shopper's "try again"
//!    (one start per shopper action, under [`bankid::claim_start`]'s database claim: a double
//!    submit, a second tab or another replica never starts a second order, which BankID would
//!    answer by cancelling both). Each load reads the order's progress, at most once per
//!    [`POLL_EVERY`] per payment across replicas ([`bankid::claim_poll`]), and shows its QR
//!    code (new on every read) and the "open BankID on this device" link.
//! 2. **tokens**: a completed identification's tokens are taken once
//!    ([`bankid::claim_tokens`]: the bank gives them once) and stored by the latest-token rule
//!    ([`tokens::lease_psu`], [`tokens::next_issue_seq`], [`tokens::store`]) under the
//!    merchant's `psu_id` (else the payment).
//! 3. **initiation** through [`initiation::initiate_for_shopper_with_token`]: the attempt is
//!    in the ledger before the bank call, an explicit refusal ends the payment `failed`, an
//!    unknown outcome shows "try again" (a new attempt under the initiation lease). Once the
//!    bank's answer is recorded, the shopper key is bound to the payment
//!    ([`bankid::bind_psu_key`]): the poller reads it with that shopper's token only.
//! 4. **sign**: the signing order starts at once (the first only; later ones on "try
//!    again"), its progress is read as the identification's; finalised → the payment's status
//!    is read with the token and applied through the one path
//!    ([`payments::apply_bank_report`]) and the shopper goes to the merchant's return URL. A
//!    failed signing order never finalises the payment by itself: the status read decides,
//!    and the page offers "try again" and "cancel" while the payment can still be signed.
//!
//! Never logged: the tokens, the QR data, the autostart token, the bank's order ids (they are
//! kept in `bankid_orders` only) and the hop's token.

use super::page::{self, BankIdView};
use crate::api::AppState;
use crate::api::authorize::{closed, language, load, see_other};
use crate::api::client_ip::{Peer, client_ip};
use crate::api::consent::{self, Closed};
use crate::api::initiation::{self, Recorded, ShopperInitiation, ShopperToken};
use crate::api::payments::AWAITING_SHOPPER_IDENTIFICATION;
use crate::bank::{BankError, BankIdOrder, BankIdProgress, BankIdPurpose, BankIdState, PsuContext};
use crate::domain::{Currency, Language, PaymentStatus};
use crate::ledger::bankid::{self, StartClaim};
use crate::ledger::payments::{self, CancelStart, PaymentRecord};
use crate::ledger::tokens::{self, LiveToken};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// How long a claimed start keeps others from starting: longer than any bank call here.
pub const START_LEASE: Duration = Duration::from_secs(45);
/// At most one progress read per payment and purpose this often, whoever loads the page.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often the page reloads itself without JavaScript.
pub const REFRESH_SECS: u32 = 2;
/// The bound of one bank call made while the shopper's page waits.
pub const CALL_BOUND: Duration = Duration::from_secs(15);
/// A token closer than this to its expiry is not used for a new step.
const TOKEN_MARGIN: chrono::Duration = chrono::Duration::seconds(10);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/authorize/{id}/bankid", get(page))
        .route("/authorize/{id}/bankid/state", get(state))
        .route("/authorize/{id}/bankid/start", post(start))
        .route("/authorize/{id}/bankid/cancel", post(cancel))
}

/// Whether payments at `bank` go through the BankID page (its every call needs the
/// shopper's own token).
pub fn uses_bankid_page(state: &AppState, bank: &str) -> bool {
    !bank.is_empty()
        && state
            .banks
            .get(bank)
            .is_some_and(|b| b.client.traits().shopper_token_required)
}

/// The BankID page of a payment.
pub fn url(state: &AppState, p: &PaymentRecord) -> String {
    format!(
        "{}/authorize/{}/bankid?t={}",
        state.settings.server.public_url,
        p.id,
        p.authorize_token.as_deref().unwrap_or("")
    )
}

fn path(p: &PaymentRecord, tail: &str) -> String {
    format!("/authorize/{}/bankid{tail}", p.id)
}

/// The link that opens the BankID app on this device with the order's autostart token.
fn autostart_url(state: &AppState, bank: &str, token: &str) -> String {
    let base = bankid_app_url(state, bank);
    let mut url = format!("{base}?autostarttoken=");
    url.extend(url::form_urlencoded::byte_serialize(token.as_bytes()));
    url.push_str("&redirect=null");
    url
}

/// The bank's `bankid_app_url` setting (BankID's own `bankid:///` by default; in sandbox
/// mode the simulator's test BankID app).
fn bankid_app_url(state: &AppState, bank: &str) -> String {
    use crate::config::BankProtocolSettings;
    state
        .settings
        .banks
        .iter()
        .find(|b| b.id == bank)
        .and_then(|b| match &b.protocol {
            BankProtocolSettings::Seb(seb) => Some(seb.bankid_app_url.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "bankid:///".to_owned())
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

/// What the shopper did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Loaded the page (or its JSON): reads progress, starts only the first order.
    Load,
    /// Pressed "try again": may start a new order or initiation attempt.
    Start,
}

/// What the page shows after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The flow is over here: the shopper goes to this URL.
    Redirect(String),
    Closed(Closed),
    Show(Shown),
}

/// The page's state (without the payment's facts).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    purpose: BankIdPurpose,
    state: BankIdState,
    hint_code: Option<String>,
    qr_data: Option<String>,
    autostart_token: Option<String>,
    can_retry: bool,
}

impl Shown {
    fn waiting(purpose: BankIdPurpose) -> Shown {
        Shown {
            purpose,
            state: BankIdState::Pending,
            hint_code: None,
            qr_data: None,
            autostart_token: None,
            can_retry: false,
        }
    }

    fn failed(purpose: BankIdPurpose, hint: Option<&str>) -> Shown {
        Shown {
            purpose,
            state: BankIdState::Failed,
            hint_code: hint.map(str::to_owned),
            qr_data: None,
            autostart_token: None,
            can_retry: true,
        }
    }

    fn from_progress(purpose: BankIdPurpose, progress: BankIdProgress) -> Shown {
        let failed = progress.state == BankIdState::Failed;
        Shown {
            purpose,
            state: progress.state,
            hint_code: progress.hint_code,
            qr_data: progress.qr_data.filter(|_| !failed),
            autostart_token: progress.autostart_token.filter(|_| !failed),
            can_retry: failed,
        }
    }
}

fn psu_context(state: &AppState, peer: Peer, headers: &HeaderMap) -> PsuContext {
    PsuContext {
        ip: client_ip(peer, headers, &state.settings.server.trusted_proxies),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect()),
    }
}

/// Checks the link (an unknown payment and a wrong token get the same page), runs the
/// step and answers with the page, its JSON, or a redirect.
#[allow(clippy::too_many_arguments)]
async fn handle(
    state: &AppState,
    id: &str,
    token: &str,
    peer: Peer,
    headers: &HeaderMap,
    action: Action,
    as_json: bool,
    shown_purpose: Option<&str>,
) -> Response {
    let fallback = language(None, headers);
    let result = async {
        let Some(p) = load(state, id, token).await? else {
            return Ok(closed(state, Closed::Unknown, fallback, None));
        };
        let lang = language(Some(&p), headers);
        if crate::api::authorize::merchant_disabled(state, &p).await? {
            return Ok(closed(state, Closed::Closed, lang, Some(&p)));
        }
        if !uses_bankid_page(state, &p.bank) {
            return Ok(see_other(crate::api::authorize::url(state, p.id, token)));
        }
        let psu = psu_context(state, peer, headers);
        let outcome = advance(state, &p, &psu, action).await?;
        let now = payments::get(&mut *state.pool.read_conn().await?, p.id)
            .await?
            .unwrap_or(p);
        let merchant = crate::ledger::merchants::get(&state.pool, now.merchant_id)
            .await?
            .map(|m| m.name)
            .unwrap_or_default();
        Ok(respond(
            state,
            &now,
            token,
            lang,
            outcome,
            action,
            as_json,
            shown_purpose,
            merchant,
        ))
    }
    .await;
    result.unwrap_or_else(|e: anyhow::Error| {
        tracing::error!(error = format!("{e:#}"), "the BankID page failed");
        closed(state, Closed::Unavailable, fallback, None)
    })
}

#[allow(clippy::too_many_arguments)]
fn respond(
    state: &AppState,
    p: &PaymentRecord,
    token: &str,
    lang: Language,
    outcome: Outcome,
    action: Action,
    as_json: bool,
    shown_purpose: Option<&str>,
    merchant_name: String,
) -> Response {
    let shown = match outcome {
        Outcome::Redirect(to) if as_json => {
            return no_store(Json(json!({ "state": "done", "next": to })).into_response());
        }
        Outcome::Redirect(to) => return see_other(to),
        Outcome::Closed(_) if as_json => {
            // The page shows why (a plain page without the order).
            let next = path(p, &format!("?t={token}"));
            return no_store(Json(json!({ "state": "closed", "next": next })).into_response());
        }
        Outcome::Closed(kind) => return closed(state, kind, lang, Some(p)),
        Outcome::Show(s) => s,
    };
    if action == Action::Start && !as_json {
        // After a form post, the page is loaded again by GET (Back and reload stay safe).
        return see_other(url(state, p));
    }
    let merchant = merchant_name;
    let bank_name = state
        .banks
        .get(&p.bank)
        .map(|b| b.name.clone())
        .unwrap_or_else(|| consent::bank_name(&p.bank));
    let autostart = shown
        .autostart_token
        .as_deref()
        .map(|t| autostart_url(state, &p.bank, t));
    let page_url = path(p, &format!("?t={token}"));
    let state_url = path(
        p,
        &format!("/state?t={token}&purpose={}", shown.purpose.as_str()),
    );
    let retry_url = path(p, "/start");
    let cancel_url = path(p, "/cancel");
    // The page the updater shows is of another phase now: it reloads (the server renders
    // the new phase's page).
    let next = (as_json && shown_purpose.is_some_and(|asked| asked != shown.purpose.as_str()))
        .then(|| page_url.clone());
    let view = BankIdView {
        lang,
        purpose: shown.purpose,
        state: shown.state,
        hint_code: shown.hint_code.as_deref(),
        merchant: &merchant,
        amount: Currency::from_code(&p.currency).map(|c| (p.amount_minor, c)),
        bank_name: &bank_name,
        qr_data: shown.qr_data.as_deref(),
        autostart_url: autostart.as_deref(),
        page_url: &page_url,
        state_url: &state_url,
        retry_url: &retry_url,
        cancel_url: &cancel_url,
        form_token: token,
        next: next.as_deref(),
        provider: &state.settings.provider,
    };
    if as_json {
        return page::respond_state(&view);
    }
    let targets: Vec<String> = consent::origin_of(&p.return_url).into_iter().collect();
    page::respond(StatusCode::OK, &view, &targets)
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

#[tracing::instrument(skip_all, fields(payment_id = tracing::field::Empty))]
async fn page(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    peer: Peer,
    method: Method,
    headers: HeaderMap,
) -> Response {
    // A previewer's first load would start an identification order nobody scans.
    use crate::api::link_preview::{self, Verdict};
    match link_preview::judge(&method, &headers, &q) {
        Verdict::Preview => return link_preview::page(&s, &headers, &q),
        Verdict::Proceed { remember: true } => {
            return link_preview::opened(&s, &id, &q);
        }
        Verdict::Proceed { remember: false } => {}
    }
    let token = q.get("t").map(String::as_str).unwrap_or("");
    handle(&s, &id, token, peer, &headers, Action::Load, false, None).await
}

#[tracing::instrument(skip_all, fields(payment_id = tracing::field::Empty))]
async fn state(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    peer: Peer,
    method: Method,
    headers: HeaderMap,
) -> Response {
    // A previewer's first load would start an identification order nobody scans.
    use crate::api::link_preview::{self, Verdict};
    match link_preview::judge(&method, &headers, &q) {
        Verdict::Preview => return link_preview::page(&s, &headers, &q),
        Verdict::Proceed { remember: true } => {
            return link_preview::opened(&s, &id, &q);
        }
        Verdict::Proceed { remember: false } => {}
    }
    let token = q.get("t").map(String::as_str).unwrap_or("");
    let shown = q.get("purpose").map(String::as_str);
    handle(&s, &id, token, peer, &headers, Action::Load, true, shown).await
}

#[tracing::instrument(skip_all, fields(payment_id = tracing::field::Empty))]
async fn start(
    State(s): State<AppState>,
    Path(id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let token = f.get("t").map(String::as_str).unwrap_or("");
    handle(&s, &id, token, peer, &headers, Action::Start, false, None).await
}

/// `POST …/bankid/cancel`: the shopper's cancel, by the same rule as on the consent page
/// ([`bankid::start_shopper_cancel`]): before the payment exists at the bank it ends
/// `cancelled` at once (nothing was sent); a payment signed as far as pisgate knows
/// (authorized, or its signing order complete: an old tab's button pressed after signing)
/// sends nothing to the bank and is left as it is; else the bank's status is read with the
/// shopper's token first, and only a payment the bank still shows unsigned is deleted there
/// with that token (the bank refuses a signed one: its status decides). If the status
/// cannot be read, nothing is sent (the bank's own timeout or the late-signing horizon ends
/// an unsigned payment). Either way the shopper goes to the merchant's return URL (or the
/// plain page with the payment's state).
#[tracing::instrument(skip_all, fields(payment_id = tracing::field::Empty))]
async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let state = &s;
    let token = f.get("t").map(String::as_str).unwrap_or("");
    let fallback = language(None, &headers);
    let result = async {
        let Some(p) = load(state, &id, token).await? else {
            return Ok(closed(state, Closed::Unknown, fallback, None));
        };
        let lang = language(Some(&p), &headers);
        let mut tx = state.pool.begin().await?;
        let start = bankid::start_shopper_cancel(&mut tx, p.id).await?;
        tx.commit().await?;
        match start {
            Some(CancelStart::BankDecides(_)) => {
                let psu = psu_context(state, peer, &headers);
                let now = current(state, &p).await?;
                if still_unsigned_at_bank(state, &now, &psu).await? {
                    let now = current(state, &p).await?;
                    let by = payments::CancelBy::Shopper;
                    match crate::api::payments::cancel_at_bank_by(state, &now, by).await {
                        Ok(_) => tracing::info!("the shopper cancelled on the BankID page"),
                        Err(e) => tracing::warn!(
                            code = e.code(),
                            "the shopper's cancel did not go through at the bank; the bank's status decides"
                        ),
                    }
                }
            }
            Some(CancelStart::Signed(_)) => tracing::info!(
                "the shopper's cancel of a signed payment: nothing is sent to the bank"
            ),
            Some(CancelStart::Cancelled) => {
                tracing::info!("the shopper cancelled on the BankID page before the bank")
            }
            Some(CancelStart::Final(_)) | None => {}
        }
        let now = current(state, &p).await?;
        Ok(match consent::return_url(&now) {
            Some(back) => see_other(back),
            None => closed(state, Closed::Closed, lang, Some(&now)),
        })
    }
    .await;
    result.unwrap_or_else(|e: anyhow::Error| {
        tracing::error!(error = format!("{e:#}"), "the BankID page's cancel failed");
        closed(state, Closed::Unavailable, fallback, None)
    })
}

/// Before the shopper's delete: whether the bank still shows the payment unsigned, read
/// with the shopper's token and applied through the one path. False (send nothing) when
/// it shows it signed, when pisgate's signing order completed meanwhile, or when there is
/// no live token or the read fails: a shopper's cancel never risks a signed payment.
async fn still_unsigned_at_bank(
    state: &AppState,
    p: &PaymentRecord,
    psu: &PsuContext,
) -> anyhow::Result<bool> {
    let Some((key, token)) = live_token(state, p).await? else {
        tracing::info!(
            "no live shopper token to read the payment before the shopper's delete; nothing is sent"
        );
        return Ok(false);
    };
    if !read_status(state, p, &key, &token, psu, "shopper_cancel").await? {
        tracing::info!(
            "the payment's status could not be read before the shopper's delete; nothing is sent"
        );
        return Ok(false);
    }
    let now = current(state, p).await?;
    let signing_complete = bankid::get(
        &mut *state.pool.read_conn().await?,
        p.id,
        BankIdPurpose::Sign,
    )
    .await?
    .is_some_and(|o| o.bank_id_state() == Some(BankIdState::Complete));
    Ok(now.status() == PaymentStatus::AwaitingAuthorization && !signing_complete)
}

// ---------------------------------------------------------------------------------------
// The steps
// ---------------------------------------------------------------------------------------

async fn current(state: &AppState, p: &PaymentRecord) -> anyhow::Result<PaymentRecord> {
    Ok(payments::get(&mut *state.pool.read_conn().await?, p.id)
        .await?
        .unwrap_or_else(|| p.clone()))
}

/// The merchant's return URL with the payment's id (the merchant asks the API for its
/// status), or the plain page.
fn to_merchant(p: &PaymentRecord) -> Outcome {
    match consent::return_url(p) {
        Some(url) => Outcome::Redirect(url),
        None => Outcome::Closed(Closed::Closed),
    }
}

/// The shopper key the payment's token is kept under: the merchant's `psu_id`, else the
/// payment (SEB's answer names no shopper pisgate could key on across merchants).
pub fn psu_key_for(p: &PaymentRecord) -> String {
    match &p.psu_id {
        Some(psu_id) => format!("merchant:{}:{psu_id}", p.merchant_id),
        None => format!("payment:{}", p.id),
    }
}

/// The shopper's live token for this payment: under the key bound to the payment, else
/// the key its identification stored it under; not one about to expire.
async fn live_token(
    state: &AppState,
    p: &PaymentRecord,
) -> anyhow::Result<Option<(String, LiveToken)>> {
    let key = match &p.psu_key {
        Some(k) => Some(k.clone()),
        None => bankid::get(
            &mut *state.pool.read_conn().await?,
            p.id,
            BankIdPurpose::Identify,
        )
        .await?
        .and_then(|o| o.psu_key),
    };
    let Some(key) = key else {
        return Ok(None);
    };
    let token = tokens::load(&state.pool, &state.cipher, &p.bank, &key).await?;
    Ok(token
        .filter(|t| t.access_expires_at > Utc::now() + TOKEN_MARGIN)
        .map(|t| (key, t)))
}

async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, BankError>>,
) -> Result<T, BankError> {
    tokio::time::timeout(CALL_BOUND, call)
        .await
        .unwrap_or_else(|_| {
            Err(BankError::Unexpected {
                status: None,
                detail: format!("no answer within {} s", CALL_BOUND.as_secs()),
            })
        })
}

/// Whether the bank looked at a start and said no, or never got it: no order exists.
fn no_order_made(e: &BankError) -> bool {
    e.provably_not_processed()
        || matches!(
            e,
            BankError::Validation { .. } | BankError::TokenRejected | BankError::NotFound
        )
        || e.is_configuration_fault()
}

/// One step of the flow for the payment as it stands.
async fn advance(
    state: &AppState,
    p: &PaymentRecord,
    psu: &PsuContext,
    action: Action,
) -> anyhow::Result<Outcome> {
    let mut p = p.clone();
    // At most: identify, then initiate and sign in the same request.
    for _ in 0..3 {
        if p.status() != PaymentStatus::AwaitingAuthorization {
            return Ok(to_merchant(&p));
        }
        if p.cancel_requested_at.is_some() {
            return Ok(Outcome::Closed(Closed::Cancelled));
        }
        if !p.is_initiated() && p.expires_at.is_some_and(|t| t <= Utc::now()) {
            return Ok(Outcome::Closed(Closed::Expired));
        }
        let Some((key, token)) = live_token(state, &p).await? else {
            match identify(state, &p, psu, action).await? {
                Step::Show(o) => return Ok(o),
                Step::Next => {
                    p = current(state, &p).await?;
                    continue;
                }
            }
        };
        if !p.is_initiated() {
            match initiate(state, &p, psu, action, &key, &token).await? {
                Step::Show(o) => return Ok(o),
                Step::Next => {
                    p = current(state, &p).await?;
                    continue;
                }
            }
        }
        return sign(state, &p, psu, action, &key, &token).await;
    }
    Ok(Outcome::Show(Shown::waiting(BankIdPurpose::Identify)))
}

/// A step's result: show this, or go on to the next step.
enum Step {
    Show(Outcome),
    Next,
}

/// Waits (bounded) for the payment's turn to read an order's progress.
async fn read_turn(
    state: &AppState,
    p: &PaymentRecord,
    purpose: BankIdPurpose,
) -> anyhow::Result<bool> {
    for attempt in 0..2 {
        let mut tx = state.pool.begin().await?;
        let mine = bankid::claim_poll(&mut tx, p.id, purpose, POLL_EVERY).await?;
        tx.commit().await?;
        if mine {
            return Ok(true);
        }
        if attempt == 0 {
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    Ok(false)
}

/// Claims and makes the start of an order of `purpose`; `call` is the bank call.
async fn start_order<F, Fut>(
    state: &AppState,
    p: &PaymentRecord,
    purpose: BankIdPurpose,
    action: Action,
    call: F,
) -> anyhow::Result<Option<Result<BankIdOrder, BankError>>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<BankIdOrder, BankError>>,
{
    let mut tx = state.pool.begin().await?;
    let claim =
        bankid::claim_start(&mut tx, p.id, purpose, START_LEASE, action == Action::Load).await?;
    tx.commit().await?;
    let StartClaim::Claimed { start } = claim else {
        return Ok(None);
    };
    tracing::info!(purpose = purpose.as_str(), start, "starting a BankID order");
    let answer = bounded(call()).await;
    let mut tx = state.pool.begin().await?;
    match &answer {
        Ok(order) => {
            bankid::record_started(&mut tx, p.id, purpose, start, &order.id, &order.progress)
                .await?;
        }
        Err(e) => {
            let release = no_order_made(e);
            tracing::warn!(error = %e, kind = e.kind(), release, "the BankID order did not start");
            bankid::start_failed(
                &mut tx,
                p.id,
                purpose,
                start,
                if release {
                    "startRefused"
                } else {
                    "startUnknown"
                },
                e.kind(),
                release,
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Some(answer))
}

/// The identify phase: start (the first order on a load, later ones on "try again"), read
/// the progress, and take the tokens once complete.
async fn identify(
    state: &AppState,
    p: &PaymentRecord,
    psu: &PsuContext,
    action: Action,
) -> anyhow::Result<Step> {
    const ID: BankIdPurpose = BankIdPurpose::Identify;
    let client = state.banks.client(&p.bank);
    let started = start_order(state, p, ID, action, || {
        client.start_identification(Some(psu))
    })
    .await?;
    if let Some(answer) = started {
        return Ok(match answer {
            // A start that is complete at once: its tokens are taken on the next step.
            Ok(order) if order.progress.state == BankIdState::Complete => Step::Next,
            Ok(order) => Step::Show(Outcome::Show(Shown::from_progress(ID, order.progress))),
            Err(_) => Step::Show(Outcome::Show(Shown::failed(ID, Some("startFailed")))),
        });
    }
    let conn = &mut *state.pool.read_conn().await?;
    let Some(order) = bankid::get(conn, p.id, ID).await? else {
        return Ok(Step::Show(Outcome::Show(Shown::waiting(ID))));
    };
    let Some(order_id) = order.order_id.clone() else {
        // A start runs, or its answer was lost (the shopper may try again after the lease).
        return Ok(Step::Show(Outcome::Show(match order.state.as_str() {
            "failed" => Shown::failed(ID, order.hint_code.as_deref()),
            _ => Shown::waiting(ID),
        })));
    };
    match order.bank_id_state() {
        Some(BankIdState::Failed) => {
            return Ok(Step::Show(Outcome::Show(Shown::failed(
                ID,
                order.hint_code.as_deref(),
            ))));
        }
        Some(BankIdState::Complete) => return take_tokens_to_the_end(state, p, &order_id).await,
        _ => {}
    }
    if !read_turn(state, p, ID).await? {
        return Ok(Step::Show(Outcome::Show(Shown::waiting(ID))));
    }
    let progress = match bounded(client.identification_progress(&order_id, Some(psu))).await {
        Ok(progress) => progress,
        Err(BankError::NotFound) => order_unknown(),
        Err(e) => {
            tracing::warn!(error = %e, kind = e.kind(), "reading the identification failed; the next load reads again");
            return Ok(Step::Show(Outcome::Show(Shown::waiting(ID))));
        }
    };
    let mut tx = state.pool.begin().await?;
    bankid::record_progress(
        &mut tx,
        p.id,
        ID,
        &order_id,
        progress.state,
        progress.hint_code.as_deref(),
        &progress.bank_status,
    )
    .await?;
    tx.commit().await?;
    if progress.state == BankIdState::Complete {
        return take_tokens_to_the_end(state, p, &order_id).await;
    }
    Ok(Step::Show(Outcome::Show(Shown::from_progress(
        ID, progress,
    ))))
}

/// [`take_tokens`] run to its commit before the replica lets go of the database (the
/// shutdown waits for it): once claimed and fetched, the tokens exist nowhere else.
async fn take_tokens_to_the_end(
    state: &AppState,
    p: &PaymentRecord,
    order_id: &str,
) -> anyhow::Result<Step> {
    let work = {
        let (state, p, order_id) = (state.clone(), p.clone(), order_id.to_owned());
        async move { take_tokens(&state, &p, &order_id).await }
    };
    state.finishing.run(work).await.and_then(|step| step)
}

/// Takes a completed identification's tokens (once: the claim) and stores them by the
/// latest-token rule.
async fn take_tokens(state: &AppState, p: &PaymentRecord, order_id: &str) -> anyhow::Result<Step> {
    const ID: BankIdPurpose = BankIdPurpose::Identify;
    let mut tx = state.pool.begin().await?;
    let claimed = bankid::claim_tokens(&mut tx, p.id, order_id).await?;
    tx.commit().await?;
    if !claimed {
        // Another request takes them (or took them: the next load finds the token).
        let stored = bankid::get(&mut *state.pool.read_conn().await?, p.id, ID)
            .await?
            .and_then(|o| o.psu_key)
            .is_some();
        return Ok(if stored {
            Step::Next
        } else {
            Step::Show(Outcome::Show(Shown::waiting(ID)))
        });
    }
    let key = psu_key_for(p);
    let lease_len = CALL_BOUND + Duration::from_secs(15);
    let Some(lease) = tokens::lease_psu(
        &state.pool,
        &p.bank,
        &key,
        lease_len,
        Duration::from_secs(5),
    )
    .await?
    else {
        let mut tx = state.pool.begin().await?;
        bankid::tokens_failed(&mut tx, p.id, order_id, "shopper_busy", true).await?;
        tx.commit().await?;
        return Ok(Step::Show(Outcome::Show(Shown::waiting(ID))));
    };
    let issue_seq = tokens::next_issue_seq(&mut *state.pool.read_conn().await?).await?;
    let answer = bounded(state.banks.client(&p.bank).identification_tokens(order_id)).await;
    let step = match answer {
        Ok(set) => {
            let expires_at = tokens::expires_at(set.expires_in);
            let mut tx = state.pool.begin().await?;
            let stored = tokens::store(
                &mut tx,
                &state.cipher,
                &p.bank,
                &key,
                issue_seq,
                set.issued_at,
                &set.access_token,
                set.refresh_token.as_ref(),
                expires_at,
            )
            .await?;
            bankid::record_identified(&mut tx, p.id, &key, issue_seq, stored, expires_at).await?;
            tx.commit().await?;
            tracing::info!(
                psu = %tokens::psu_log_id(&p.bank, &key),
                stored,
                "the shopper identified with BankID"
            );
            metrics::counter!("pisgate_bankid_identifications_total", "outcome" => "identified")
                .increment(1);
            Step::Next
        }
        Err(e) => {
            let release = e.provably_not_processed();
            tracing::warn!(error = %e, kind = e.kind(), release, "the identification's tokens could not be had");
            let mut tx = state.pool.begin().await?;
            bankid::tokens_failed(&mut tx, p.id, order_id, e.kind(), release).await?;
            tx.commit().await?;
            metrics::counter!("pisgate_bankid_identifications_total", "outcome" => "tokens_failed")
                .increment(1);
            Step::Show(Outcome::Show(if release {
                Shown::waiting(ID)
            } else {
                Shown::failed(ID, Some("tokensRefused"))
            }))
        }
    };
    lease.release().await;
    Ok(step)
}

/// The initiation with the shopper's token: at once after the identification, and again
/// only on "try again" after an unknown outcome.
async fn initiate(
    state: &AppState,
    p: &PaymentRecord,
    psu: &PsuContext,
    action: Action,
    key: &str,
    token: &LiveToken,
) -> anyhow::Result<Step> {
    const ID: BankIdPurpose = BankIdPurpose::Identify;
    let first = p.initiation == AWAITING_SHOPPER_IDENTIFICATION;
    let retry = action == Action::Start
        && matches!(
            p.initiation.as_str(),
            "outcome_unknown" | "not_created" | "pending"
        );
    if !first && !retry {
        return Ok(Step::Show(Outcome::Show(match p.initiation.as_str() {
            "pending" if p.initiation_lease_until.is_some_and(|t| t > Utc::now()) => {
                Shown::waiting(ID)
            }
            _ => Shown::failed(ID, Some("initiationUnknown")),
        })));
    }
    let ran = initiation::initiate_for_shopper_with_token(
        state,
        p,
        ShopperToken {
            access_token: &token.access_token,
            psu: Some(psu),
        },
    )
    .await?;
    if ran.token_rejected {
        let _ = tokens::mark_dead(
            &state.pool,
            &p.bank,
            key,
            token.issue_seq,
            "rejected on initiation",
        )
        .await;
    }
    let now = current(state, p).await?;
    Ok(match ran.initiation {
        ShopperInitiation::Ran(Recorded::Initiated) => {
            let mut tx = state.pool.begin().await?;
            bankid::bind_psu_key(&mut tx, p.id, key).await?;
            let contradicted = payments::terms_mismatch(&mut tx, p.id).await?;
            tx.commit().await?;
            if contradicted {
                return Ok(Step::Show(
                    delete_contradicted(state, &now, key, token, psu).await?,
                ));
            }
            Step::Next
        }
        ShopperInitiation::Ran(Recorded::Refused) => Step::Show(to_merchant(&now)),
        ShopperInitiation::Ran(Recorded::Unanswered { .. }) => {
            Step::Show(Outcome::Show(Shown::failed(ID, Some("initiationUnknown"))))
        }
        ShopperInitiation::Ran(Recorded::Superseded) | ShopperInitiation::NotStarted => {
            if now.is_initiated() || now.status() != PaymentStatus::AwaitingAuthorization {
                Step::Next
            } else {
                Step::Show(Outcome::Show(Shown::waiting(ID)))
            }
        }
    })
}

/// The sign phase: the signing order (the first at once, later ones on "try again"), its
/// progress, and the payment's status once it ends.
async fn sign(
    state: &AppState,
    p: &PaymentRecord,
    psu: &PsuContext,
    action: Action,
    key: &str,
    token: &LiveToken,
) -> anyhow::Result<Outcome> {
    const SIGN: BankIdPurpose = BankIdPurpose::Sign;
    if p.psu_key.is_none() {
        let mut tx = state.pool.begin().await?;
        bankid::bind_psu_key(&mut tx, p.id, key).await?;
        tx.commit().await?;
    }
    let Some(bank_ref) = p.bank_ref() else {
        return Ok(Outcome::Show(Shown::waiting(SIGN)));
    };
    if payments::terms_mismatch(&mut *state.pool.read_conn().await?, p.id).await? {
        // The bank made it with other terms than pisgate sent: never signed through pisgate.
        return Ok(Outcome::Closed(Closed::TermsMismatch));
    }
    let client = state.banks.client(&p.bank);
    let started = start_order(state, p, SIGN, action, || {
        client.start_signing(&bank_ref, &token.access_token, Some(psu))
    })
    .await?;
    if let Some(answer) = started {
        return match answer {
            Ok(order) => match order.progress.state {
                BankIdState::Pending => {
                    Ok(Outcome::Show(Shown::from_progress(SIGN, order.progress)))
                }
                _ => ended(state, p, key, token, psu, order.progress).await,
            },
            Err(BankError::TokenRejected) => {
                token_dead(state, p, key, token, "rejected on signing").await;
                Ok(Outcome::Show(Shown::waiting(BankIdPurpose::Identify)))
            }
            Err(_) => Ok(Outcome::Show(Shown::failed(SIGN, Some("startFailed")))),
        };
    }
    let Some(order) = bankid::get(&mut *state.pool.read_conn().await?, p.id, SIGN).await? else {
        return Ok(Outcome::Show(Shown::waiting(SIGN)));
    };
    let Some(order_id) = order.order_id.clone() else {
        return Ok(Outcome::Show(match order.state.as_str() {
            "failed" => Shown::failed(SIGN, order.hint_code.as_deref()),
            _ => Shown::waiting(SIGN),
        }));
    };
    match order.bank_id_state() {
        Some(BankIdState::Failed) => {
            return Ok(Outcome::Show(Shown::failed(
                SIGN,
                order.hint_code.as_deref(),
            )));
        }
        Some(BankIdState::Complete) => {
            // Signed (another tab saw it): read the status once more, then to the merchant.
            return finish(state, p, key, token, psu, "finalised").await;
        }
        _ => {}
    }
    if !read_turn(state, p, SIGN).await? {
        return Ok(Outcome::Show(Shown::waiting(SIGN)));
    }
    let progress = match bounded(client.signing_progress(&order_id, &token.access_token, Some(psu)))
        .await
    {
        Ok(progress) => progress,
        Err(BankError::TokenRejected) => {
            token_dead(state, p, key, token, "rejected on signing progress").await;
            return Ok(Outcome::Show(Shown::waiting(BankIdPurpose::Identify)));
        }
        Err(BankError::NotFound) => order_unknown(),
        Err(e) => {
            tracing::warn!(error = %e, kind = e.kind(), "reading the signing order failed; the next load reads again");
            return Ok(Outcome::Show(Shown::waiting(SIGN)));
        }
    };
    let mut tx = state.pool.begin().await?;
    bankid::record_progress(
        &mut tx,
        p.id,
        SIGN,
        &order_id,
        progress.state,
        progress.hint_code.as_deref(),
        &progress.bank_status,
    )
    .await?;
    tx.commit().await?;
    match progress.state {
        BankIdState::Pending => Ok(Outcome::Show(Shown::from_progress(SIGN, progress))),
        _ => ended(state, p, key, token, psu, progress).await,
    }
}

/// The bank's answer to the initiation just recorded made the payment with other terms than
/// pisgate sent (the `bank_terms_mismatch` event, [`initiation`]): no signing order is ever
/// started for it. The bank is asked once, with the shopper's token, to delete it: only its
/// deletion (SEB's 204) ends the payment `cancelled` (failure `bank_terms_mismatch`); a
/// refusal or a failure is noted (`cancel_refused`, `by: pisgate`) and the payment is
/// followed to the bank's own word (its timeout, or the late-signing horizon's delete). The
/// shopper is shown why.
async fn delete_contradicted(
    state: &AppState,
    p: &PaymentRecord,
    key: &str,
    token: &LiveToken,
    psu: &PsuContext,
) -> anyhow::Result<Outcome> {
    let shown = Outcome::Closed(Closed::TermsMismatch);
    let Some(bank_ref) = p.bank_ref() else {
        return Ok(shown);
    };
    let client = state.banks.client(&p.bank);
    let answer = bounded(client.cancel(
        std::slice::from_ref(&bank_ref),
        Some(&token.access_token),
        Some(psu),
    ))
    .await;
    let mut tx = state.pool.begin().await?;
    match answer {
        Ok(outcome) if outcome.deleted.contains(&bank_ref.id) => {
            tracing::info!("the bank deleted the payment it made with other terms");
            payments::transition(
                &mut tx,
                p.id,
                payments::Change {
                    evidence: crate::domain::Evidence::Bank(PaymentStatus::Cancelled),
                    bank_status: Some(client.traits().deleted_status),
                    kind: "cancelled",
                    detail: json!({
                        "by": "pisgate",
                        "reason": payments::TERMS_MISMATCH,
                        "deleted_at_bank": true,
                    }),
                    failure: Some((
                        payments::TERMS_MISMATCH,
                        "the bank made the payment with other terms (amount, currency or creditor account) than were sent; it was never signed, and the bank deleted it",
                    )),
                },
            )
            .await?;
        }
        Ok(outcome) => {
            let errors: Vec<_> = outcome
                .errors
                .iter()
                .map(|e| json!({ "code": e.code, "description": e.description }))
                .collect();
            tracing::warn!(
                "the bank did not delete the payment it made with other terms; it is followed, never signed"
            );
            payments::note(
                &mut tx,
                p.id,
                "cancel_refused",
                json!({
                    "by": "pisgate",
                    "reason": payments::TERMS_MISMATCH,
                    "errors": errors,
                    "needs_authorisation": outcome.needs_authorisation.contains(&bank_ref.id),
                }),
            )
            .await?;
        }
        Err(e) => {
            if e == BankError::TokenRejected {
                token_dead(state, p, key, token, "rejected on a delete").await;
            }
            tracing::warn!(error = %e, kind = e.kind(), "deleting the payment the bank made with other terms failed; it is followed, never signed");
            payments::note(
                &mut tx,
                p.id,
                "cancel_refused",
                json!({
                    "by": "pisgate",
                    "reason": payments::TERMS_MISMATCH,
                    "error": e.kind(),
                }),
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(shown)
}

/// A signing order ended: the payment's status decides (a failed order alone finalises
/// nothing). Signed: to the merchant. Failed: to the merchant if the payment is final, else
/// the failure and "try again".
async fn ended(
    state: &AppState,
    p: &PaymentRecord,
    key: &str,
    token: &LiveToken,
    psu: &PsuContext,
    progress: BankIdProgress,
) -> anyhow::Result<Outcome> {
    if progress.state == BankIdState::Complete {
        return finish(state, p, key, token, psu, &progress.bank_status).await;
    }
    metrics::counter!("pisgate_bankid_signings_total", "outcome" => "failed").increment(1);
    read_status(state, p, key, token, psu, &progress.bank_status).await?;
    let now = current(state, p).await?;
    if now.status() != PaymentStatus::AwaitingAuthorization {
        return Ok(to_merchant(&now));
    }
    Ok(Outcome::Show(Shown::failed(
        BankIdPurpose::Sign,
        progress.hint_code.as_deref(),
    )))
}

/// Signed: reads and records the payment's status, then sends the shopper to the merchant
/// (the poller follows the payment to its final status).
async fn finish(
    state: &AppState,
    p: &PaymentRecord,
    key: &str,
    token: &LiveToken,
    psu: &PsuContext,
    order_status: &str,
) -> anyhow::Result<Outcome> {
    read_status(state, p, key, token, psu, order_status).await?;
    metrics::counter!("pisgate_bankid_signings_total", "outcome" => "signed").increment(1);
    Ok(to_merchant(&current(state, p).await?))
}

/// Reads the payment's status with the shopper's token and applies it through the one path;
/// whether the bank answered.
async fn read_status(
    state: &AppState,
    p: &PaymentRecord,
    key: &str,
    token: &LiveToken,
    psu: &PsuContext,
    order_status: &str,
) -> anyhow::Result<bool> {
    let Some(bank_ref) = p.bank_ref() else {
        return Ok(false);
    };
    let client = state.banks.client(&p.bank);
    match bounded(client.status_with_token(&bank_ref, Some(&token.access_token), Some(psu))).await {
        Ok(report) => {
            let mut tx = state.pool.begin().await?;
            payments::apply_bank_report(
                &mut tx,
                p.id,
                &report.bank_status,
                report.status,
                json!({ "source": "bankid_page", "signing_order": order_status }),
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        }
        Err(BankError::TokenRejected) => {
            token_dead(state, p, key, token, "rejected on a status read").await;
            Ok(false)
        }
        Err(e) => {
            tracing::warn!(error = %e, kind = e.kind(), "reading the payment's status failed; the poller follows it");
            Ok(false)
        }
    }
}

async fn token_dead(state: &AppState, p: &PaymentRecord, key: &str, token: &LiveToken, why: &str) {
    tracing::warn!(
        psu = %tokens::psu_log_id(&p.bank, key),
        "the bank refused the shopper's token; marked dead"
    );
    if let Err(e) = tokens::mark_dead(&state.pool, &p.bank, key, token.issue_seq, why).await {
        tracing::error!(error = %e, "cannot mark the shopper's token dead");
    }
}

/// The progress of an order the bank no longer knows (its 404): failed, `orderUnknown`.
fn order_unknown() -> BankIdProgress {
    BankIdProgress {
        state: BankIdState::Failed,
        bank_status: "unknown".into(),
        hint_code: Some("orderUnknown".into()),
        qr_data: None,
        autostart_token: None,
        psu_message: None,
        poll_delay: None,
    }
}
