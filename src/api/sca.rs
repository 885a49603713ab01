//! Explicit and decoupled SCA at the authorization hop: the authorisation pisgate starts at
//! the bank for the shopper when the bank's answer to the initiation carried a
//! `startAuthorisation*` link instead of a signing link ([`Hop::StartAuthorisation`]).
//!
//! - **Explicit redirect** (`startAuthorisation`): when the shopper presses the consent
//!   page's button, pisgate starts the authorisation, records it (event
//!   `authorisation_started` with its id; its links merged into the payment's `bank_links`,
//!   so that `scaStatus` tells a refused SCA from a rejection; its `scaRedirect` as the
//!   payment's signing link) and redirects (303) to the bank. From then on the hop is an
//!   ordinary redirect hop, and the return is `/v1/callbacks/return`.
//! - **Decoupled** (`startAuthorisationWithPsuIdentification`): the button leads to a form
//!   asking the shopper's user id at the bank (PSU-ID: not empty, at most 70 characters, no
//!   control characters), `POST /authorize/{id}/psu`; pisgate starts the authorisation with it
//!   and sends the shopper to the waiting page `GET /authorize/{id}/wait?t=…`. That page
//!   refreshes itself without JavaScript (`<meta http-equiv="refresh">`, every
//!   [`REFRESH_SECS`] s) and on a load reads the SCA status, at most once per payment per
//!   [`POLL_EVERY`] across replicas (a database debounce) and within [`READ_BOUND`]; once it
//!   is finalised or failed, it reads the transaction status and applies it through the one
//!   path ([`payments::apply_bank_report`]), and a payment that left
//!   `awaiting_authorization` sends the shopper to the merchant's return URL with the
//!   payment's id only. `scaStatus: failed` alone finalises nothing: the bank's transaction
//!   status decides (RJCT with a failed SCA is `authorization_failed`). The poller reads the
//!   transaction status as for every payment, so a shopper who closes the page changes
//!   nothing.
//!
//! **One start per shopper action.** The start is claimed in the database
//! ([`sca::claim_start`], under the payment's row lock, lease [`START_LEASE`]): a double
//! click, a second tab or another replica finds the claim and waits (bounded) for the first
//! start's recorded answer, then follows it; it never calls the bank. The answer is recorded
//! once (`WHERE sca_authorisation_id IS NULL`). A start the bank refused, or provably never
//! received (429, its own 503, no connection), gives the claim back at once: no authorisation
//! exists. A start whose answer was lost (timeout or drop after sending, unreadable answer)
//! keeps the claim: the shopper sees "try again", and a retry within the lease changes
//! nothing; after the lease, the retry (a new shopper action) starts again. It cannot make
//! two signable authorisations for one shopper action: each action makes at most one call;
//! a lost explicit-redirect authorisation has a signing link nobody holds, so only the new
//! one can be signed through pisgate; a lost decoupled one may have reached the shopper's app,
//! and a bank that still holds it open refuses the second start (Berlin Group 409
//! `STATUS_INVALID`, as the strict ASPSP does), which gives the claim back and shows "try
//! again" while the first is approved or times out. Not done: listing the bank's
//! authorisations (`GET …/authorisations`) to adopt a lost one instead of starting again.
//!
//! The forms carry the hop's token (`t`), which doubles as their CSRF token. Never logged or
//! stored: the PSU-ID (it goes to the bank in a header marked sensitive, and nowhere else),
//! the token, the bank's links.

use super::AppState;
use super::authorize::{closed, language, load, see_other};
use super::client_ip::{Peer, client_ip};
use super::consent::text::{ScaText, sca_text};
use super::consent::{self, Closed, Text, text};
use super::payments::{redirect_uri_for, state_hash};
use crate::bank::{Authentication, AuthorisationRequest, BankError, PsuContext, ScaState, ScaStep};
use crate::domain::{Language, PaymentStatus};
use crate::ledger::payments::{self, Hop, PaymentRecord};
use crate::ledger::sca::{self, Claim};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use maud::{PreEscaped, html};
use rand::RngCore;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// How long a claimed start keeps others from starting: longer than any bank call.
pub const START_LEASE: Duration = Duration::from_secs(90);
/// How often the waiting page reloads itself.
pub const REFRESH_SECS: u32 = 3;
/// At most one SCA status read per payment this often, whoever loads the page.
pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// The bound of the waiting page's bank reads.
pub const READ_BOUND: Duration = Duration::from_secs(5);
/// How long a second request waits for the first start's answer.
const FOLLOW_FOR: Duration = Duration::from_secs(8);
/// The longest PSU-ID the form accepts (the Berlin Group `Max70Text` habit).
pub const PSU_ID_MAX: usize = 70;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/authorize/{id}/psu", post(psu_posted))
        .route("/authorize/{id}/wait", get(wait))
}

/// The bank's link that needs a PSU-ID: the decoupled flow asks the shopper for it.
fn wants_psu_id(p: &PaymentRecord) -> bool {
    p.bank_links
        .get("startAuthorisationWithPsuIdentification")
        .is_some()
        && p.bank_links.get("startAuthorisation").is_none()
}

/// Where the consent page's button may end up, for its `form-action`: the bank's origin
/// (where the signing page of an explicit redirect is, as far as pisgate can know it before
/// the start).
pub fn form_target(state: &AppState, p: &PaymentRecord) -> String {
    use crate::config::BankProtocolSettings;
    state
        .settings
        .banks
        .iter()
        .find(|b| b.id == p.bank)
        .and_then(|b| match &b.protocol {
            BankProtocolSettings::BerlinGroup(bg) => Some(bg.base_url.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn bank_name(state: &AppState, p: &PaymentRecord) -> String {
    state
        .banks
        .get(&p.bank)
        .map(|b| b.name.clone())
        .unwrap_or_else(|| consent::bank_name(&p.bank))
}

fn token(p: &PaymentRecord) -> &str {
    p.authorize_token.as_deref().unwrap_or("")
}

fn wait_url(p: &PaymentRecord) -> String {
    format!("/authorize/{}/wait?t={}", p.id, token(p))
}

/// A fresh state for the start's `TPP-Redirect-URI` and its hash.
fn new_state() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let state = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = state_hash(&state);
    (state, hash)
}

/// The hop's button for a payment whose bank wants an authorisation started: the PSU-ID form
/// (decoupled), or the start and the redirect to the bank (explicit).
pub async fn start(
    state: &AppState,
    p: &PaymentRecord,
    lang: Language,
) -> anyhow::Result<Response> {
    let recorded = sca::get(&mut *state.pool.read_conn().await?, p.id).await?;
    if recorded.authorisation_id.is_some() {
        return Ok(see_other(wait_url(p)));
    }
    if wants_psu_id(p) {
        return Ok(psu_form(state, p, lang, None, ""));
    }
    begin(state, p, lang, None, None).await
}

/// The form asking for the shopper's user id at the bank.
fn psu_form(
    state: &AppState,
    p: &PaymentRecord,
    lang: Language,
    error: Option<&str>,
    value: &str,
) -> Response {
    let (t, s) = (text(lang), sca_text(lang));
    let bank = bank_name(state, p);
    let label = format!("{} {bank}", s.user_id_at);
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = html! {
        h1 { (s.identify_title) }
        p.amount { (consent::amount(p, lang)) }
        form method="post" action={ "/authorize/" (p.id) "/psu" } {
            input type="hidden" name="t" value=(token(p));
            p {
                label for="psu_id" { (label) }
                br;
                input #psu_id type="text" name="psu_id" value=(value) maxlength="70"
                    autocomplete="username" required
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[error.map(|_| "psu_id_error")];
            }
            @if let Some(e) = error {
                p #psu_id_error role="alert" { strong { (label) ": " (e) } }
            }
            p { (s.identify_hint) }
            button.go type="submit" { (s.send) }
        }
        form method="post" action={ "/authorize/" (p.id) "/cancel" } {
            input type="hidden" name="t" value=(token(p));
            button.link type="submit" { (t.cancel) }
        }
    };
    let page = consent::layout(t, lang, &state.settings.provider, s.identify_title, body);
    let back: Vec<String> = consent::origin_of(&p.return_url).into_iter().collect();
    consent::respond(status, page, &back)
}

/// Whether a PSU-ID can go into the `PSU-ID` header as it is: printable ASCII (spaces
/// allowed). Otherwise HTTP would carry raw UTF-8 bytes (obsolete `obs-text`), which a bank
/// reads in whatever charset it guesses, or refuses.
fn sendable_psu_id(id: &str) -> bool {
    id.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

/// Checks a PSU-ID as the shopper typed it: the error to show, or the trimmed id.
pub fn parse_psu_id<'a>(raw: &'a str, s: &ScaText) -> Result<&'a str, &'static str> {
    let id = raw.trim();
    if id.is_empty() {
        Err(s.user_id_missing)
    } else if id.chars().count() > PSU_ID_MAX || !sendable_psu_id(id) {
        Err(s.user_id_invalid)
    } else {
        Ok(id)
    }
}

/// `POST /authorize/{id}/psu` with `t` and `psu_id`: starts the decoupled authorisation.
#[tracing::instrument(skip_all, fields(payment_id = tracing::field::Empty))]
async fn psu_posted(
    State(state): State<AppState>,
    Path(id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = form.get("t").map(String::as_str).unwrap_or("");
    let fallback = language(None, &headers);
    let result = async {
        let Some(p) = load(&state, &id, token).await? else {
            return Ok(closed(&state, Closed::Unknown, fallback, None));
        };
        let lang = language(Some(&p), &headers);
        if crate::api::authorize::merchant_disabled(&state, &p).await? {
            return Ok(closed(&state, Closed::Closed, lang, Some(&p)));
        }
        match payments::hop_for(&p, chrono::Utc::now()) {
            Hop::StartAuthorisation if wants_psu_id(&p) => {}
            Hop::StartAuthorisation | Hop::ToBank(_) => {
                return Ok(see_other(crate::api::authorize::url_of(&state, &p)));
            }
            Hop::Closed(_) => return Ok(see_other(wait_url(&p))),
        }
        let raw = form.get("psu_id").map(String::as_str).unwrap_or("");
        let psu_id = match parse_psu_id(raw, sca_text(lang)) {
            Ok(id) => id.to_owned(),
            Err(e) => {
                tracing::info!("PSU-ID form refused: field psu_id");
                let shown: String = raw
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(PSU_ID_MAX)
                    .collect();
                return Ok(psu_form(&state, &p, lang, Some(e), &shown));
            }
        };
        let psu = PsuContext {
            ip: client_ip(peer, &headers, &state.settings.server.trusted_proxies),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        begin(&state, &p, lang, Some(psu_id), Some(psu)).await
    }
    .await;
    result.unwrap_or_else(|e: anyhow::Error| {
        tracing::error!(
            error = format!("{e:#}"),
            "starting the authorisation failed"
        );
        closed(&state, Closed::Unavailable, fallback, None)
    })
}

/// Claims the start and makes it, or follows the start another request made.
async fn begin(
    state: &AppState,
    p: &PaymentRecord,
    lang: Language,
    psu_id: Option<String>,
    psu: Option<PsuContext>,
) -> anyhow::Result<Response> {
    // Before the claim: a payment whose bank links fail their ledger MAC holds no claim that
    // would keep the next try waiting once an operator has put them right.
    let Some(bank_ref) = p.bank_ref() else {
        return Ok(closed(state, Closed::NotReady, lang, Some(p)));
    };
    let (oauth_state, hash) = new_state();
    let mut tx = state.pool.begin().await?;
    let claim = sca::claim_start(&mut tx, p.id, START_LEASE, &hash).await?;
    tx.commit().await?;
    match claim {
        None => Ok(closed(state, Closed::Unknown, lang, None)),
        Some(Claim::Claimed) => {
            call_bank(state, p, &bank_ref, lang, oauth_state, psu_id, psu).await
        }
        Some(Claim::Busy) => follow(state, p, lang).await,
        Some(Claim::Started) => after_start(state, p.id, lang).await,
        Some(Claim::Not(Hop::ToBank(link))) => Ok(see_other(link)),
        Some(Claim::Not(_)) => Ok(see_other(wait_url(p))),
    }
}

/// Another request holds the start: wait (bounded) for its recorded answer and follow it.
async fn follow(state: &AppState, p: &PaymentRecord, lang: Language) -> anyhow::Result<Response> {
    let until = tokio::time::Instant::now() + FOLLOW_FOR;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = sca::get(&mut *state.pool.read_conn().await?, p.id).await?;
        if now.authorisation_id.is_some() {
            return after_start(state, p.id, lang).await;
        }
        if now.started_at.is_none() {
            break;
        }
    }
    Ok(closed(state, Closed::Unavailable, lang, Some(p)))
}

/// Where a shopper goes once the authorisation is recorded: the bank's signing page, or the
/// waiting page.
async fn after_start(state: &AppState, id: Uuid, lang: Language) -> anyhow::Result<Response> {
    let Some(now) = payments::get(&mut *state.pool.read_conn().await?, id).await? else {
        return Ok(closed(state, Closed::Unknown, lang, None));
    };
    Ok(match payments::hop_for(&now, chrono::Utc::now()) {
        Hop::ToBank(link) => see_other(link),
        _ => see_other(wait_url(&now)),
    })
}

/// Starts the authorisation at the bank (once: this request holds the claim) and records
/// the answer.
async fn call_bank(
    state: &AppState,
    p: &PaymentRecord,
    bank_ref: &crate::bank::BankRef,
    lang: Language,
    oauth_state: String,
    psu_id: Option<String>,
    psu: Option<PsuContext>,
) -> anyhow::Result<Response> {
    let request = AuthorisationRequest {
        authentication: Authentication {
            state: oauth_state,
            redirect_uri: redirect_uri_for(state, &p.bank),
            language: p.request["language"].as_str().map(str::to_owned),
            authentication_method: p.request["authentication_method"]
                .as_str()
                .map(str::to_owned),
        },
        psu_id,
    };
    let answer = state
        .banks
        .client(&p.bank)
        .start_authorisation(bank_ref, &request, psu.as_ref())
        .await;
    let auth = match answer {
        Ok(auth) => auth,
        Err(e) => {
            let mut tx = state.pool.begin().await?;
            if e.provably_not_processed() || refused(&e) {
                sca::release_start(&mut tx, p.id, e.kind()).await?;
                tracing::warn!(error = %e, "the bank did not start the authorisation");
            } else {
                sca::start_unknown(&mut tx, p.id, e.kind()).await?;
                tracing::warn!(error = %e, "the authorisation's start has an unknown outcome; the claim stays until its lease passes");
            }
            tx.commit().await?;
            metrics::counter!("pisgate_authorisations_started_total", "bank" => p.bank.clone(), "outcome" => e.kind()).increment(1);
            return Ok(closed(state, Closed::Unavailable, lang, Some(p)));
        }
    };
    let (approach, url) = match &auth.next {
        ScaStep::Redirect { url } => ("redirect", Some(url.as_str())),
        ScaStep::Decoupled { .. } => ("decoupled", None),
        ScaStep::OAuth { .. } => ("oauth", None),
        ScaStep::StartAuthorisation | ScaStep::BankIdSigning | ScaStep::Exempted => {
            ("unknown", None)
        }
    };
    let psu_message = auth.sca.psu_message.as_deref().map(bounded);
    let mut tx = state.pool.begin().await?;
    sca::record_started(
        &mut tx,
        p.id,
        &sca::Started {
            authorisation_id: &auth.id,
            links: &auth.links,
            authorization_url: url,
            sca_status: &auth.sca.bank_sca_status,
            approach,
            psu_message: psu_message.as_deref(),
        },
    )
    .await?;
    if let Some(verifier) = &auth.pkce_verifier {
        let sealed = state
            .cipher
            .encrypt(verifier, &pkce_aad(&p.bank, &pkce_key(p.id)))
            .map_err(|e| anyhow::anyhow!("cannot seal the PKCE verifier: {e}"))?;
        sca::store_verifier(&mut tx, p.id, &sealed.key_id, &sealed.bytes).await?;
    }
    tx.commit().await?;
    metrics::counter!("pisgate_authorisations_started_total", "bank" => p.bank.clone(), "outcome" => approach).increment(1);
    tracing::info!(approach, "authorisation started at the bank");
    match auth.next {
        ScaStep::Redirect { url } => Ok(see_other(url)),
        ScaStep::Decoupled { .. } => Ok(see_other(wait_url(p))),
        _ => {
            tracing::error!(
                approach,
                "the bank asks for an SCA approach pisgate does not offer here"
            );
            Ok(closed(state, Closed::Unavailable, lang, Some(p)))
        }
    }
}

/// What binds a payment's sealed PKCE verifier to it (a ciphertext moved to another row
/// does not open).
/// `key` is [`pkce_key`] of the payment.
pub fn pkce_aad<'a>(bank: &'a str, key: &'a str) -> crate::ledger::crypto::TokenAad<'a> {
    crate::ledger::crypto::TokenAad {
        bank,
        psu_key: key,
        field: crate::ledger::crypto::TokenField::Access,
        issue_seq: 0,
    }
}

pub fn pkce_key(id: Uuid) -> String {
    format!("pkce:{id}")
}

/// The bank processed the start and said no: no authorisation exists.
fn refused(e: &BankError) -> bool {
    matches!(
        e,
        BankError::Validation { .. } | BankError::NotFound | BankError::TokenRejected
    ) || matches!(
        e,
        BankError::Unexpected {
            status: Some(400..=499),
            ..
        }
    )
}

/// The bank's text for the shopper, cut to a length a page can show.
fn bounded(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(500).collect()
}

/// `GET /authorize/{id}/wait?t=…`: the waiting page of a decoupled SCA.
#[tracing::instrument(skip_all, fields(payment_id = tracing::field::Empty))]
async fn wait(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    let token = q.get("t").map(String::as_str).unwrap_or("");
    let fallback = language(None, &headers);
    let result = async {
        let Some(p) = load(&state, &id, token).await? else {
            return Ok(closed(&state, Closed::Unknown, fallback, None));
        };
        let lang = language(Some(&p), &headers);
        let psu = PsuContext {
            ip: client_ip(peer, &headers, &state.settings.server.trusted_proxies),
            user_agent: None,
        };
        waiting(&state, p, lang, &psu).await
    }
    .await;
    result.unwrap_or_else(|e: anyhow::Error| {
        tracing::error!(error = format!("{e:#}"), "the waiting page failed");
        closed(&state, Closed::Unavailable, fallback, None)
    })
}

/// The merchant's return URL with the payment's id, or the plain page when there is none.
fn to_merchant(state: &AppState, p: &PaymentRecord, lang: Language) -> Response {
    match consent::return_url(p) {
        Some(url) => see_other(url),
        None => closed(state, Closed::Closed, lang, Some(p)),
    }
}

async fn waiting(
    state: &AppState,
    p: PaymentRecord,
    lang: Language,
    psu: &PsuContext,
) -> anyhow::Result<Response> {
    if p.status() != PaymentStatus::AwaitingAuthorization {
        return Ok(to_merchant(state, &p, lang));
    }
    let recorded = sca::get(&mut *state.pool.read_conn().await?, p.id).await?;
    if recorded.authorisation_id.is_none() {
        // Nothing started (yet): back to the hop, which shows what can be done.
        return Ok(see_other(crate::api::authorize::url_of(state, &p)));
    }
    let mut message = recorded.psu_message.clone();
    let mut tx = state.pool.begin().await?;
    let my_turn = sca::claim_poll(&mut tx, p.id, POLL_EVERY).await?;
    tx.commit().await?;
    if my_turn {
        match tokio::time::timeout(READ_BOUND, read_bank(state, &p, psu)).await {
            Ok(Ok(Some(m))) => message = Some(m),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(
                error = format!("{e:#}"),
                "reading the SCA status failed; the next load tries again"
            ),
            Err(_) => tracing::info!("the bank is slow; the next load reads again"),
        }
        if let Some(now) = payments::get(&mut *state.pool.read_conn().await?, p.id).await?
            && now.status() != PaymentStatus::AwaitingAuthorization
        {
            return Ok(to_merchant(state, &now, lang));
        }
    }
    Ok(waiting_page(state, &p, lang, message.as_deref()))
}

/// Reads the SCA status; once it is finalised or failed, reads the transaction status and
/// applies it. Returns the bank's text for the shopper, when it gave one.
async fn read_bank(
    state: &AppState,
    p: &PaymentRecord,
    psu: &PsuContext,
) -> anyhow::Result<Option<String>> {
    let Some(bank_ref) = p.bank_ref() else {
        return Ok(None);
    };
    let Some(link) = bank_ref.links.get("scaStatus") else {
        return Ok(None);
    };
    let bank = state.banks.client(&p.bank);
    let sca = bank.sca_status(link, Some(psu)).await?;
    let message = sca.psu_message.as_deref().map(bounded);
    if message.is_some() {
        let mut tx = state.pool.begin().await?;
        sca::set_psu_message(&mut tx, p.id, message.as_deref()).await?;
        tx.commit().await?;
    }
    if sca.state == ScaState::Open {
        return Ok(message);
    }
    let report = match bank.status(&bank_ref, Some(psu)).await {
        Ok(r) => r,
        Err(BankError::NotFound) => return Ok(message),
        Err(e) => return Err(e.into()),
    };
    let mut tx = state.pool.begin().await?;
    payments::apply_bank_report(
        &mut tx,
        p.id,
        &report.bank_status,
        report.status,
        json!({ "source": "waiting_page", "sca_status": sca.bank_sca_status }),
    )
    .await?;
    tx.commit().await?;
    Ok(message)
}

/// The page that waits for the shopper's approval in their bank's app: it reloads itself
/// (no JavaScript), and offers a plain link to check at once.
fn waiting_page(
    state: &AppState,
    p: &PaymentRecord,
    lang: Language,
    message: Option<&str>,
) -> Response {
    let (t, s): (&Text, &ScaText) = (text(lang), sca_text(lang));
    let bank = bank_name(state, p);
    let here = wait_url(p);
    let body = html! {
        h1 { (s.approve_in_app) }
        p.amount { (consent::amount(p, lang)) }
        p.to { (s.open_app) " " strong { (bank) } }
        @if let Some(m) = message {
            p { (m) }
        }
        p { (s.page_refreshes) }
        p { a href=(here) { (s.check_now) } }
        form method="post" action={ "/authorize/" (p.id) "/cancel" } {
            input type="hidden" name="t" value=(token(p));
            button.link type="submit" { (t.cancel) }
        }
    };
    let mut page =
        consent::layout(t, lang, &state.settings.provider, s.approve_in_app, body).into_string();
    // The refresh goes into the head (maud's layout has no slot for it).
    let refresh = format!(
        "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS};url={}\">",
        maud::html! { (here) }.into_string()
    );
    page = page.replacen("<head>", &format!("<head>{refresh}"), 1);
    let back: Vec<String> = consent::origin_of(&p.return_url).into_iter().collect();
    consent::respond(StatusCode::OK, PreEscaped(page), &back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_psu_id_is_not_empty_at_most_70_printable_ascii_characters() {
        let s = sca_text(Language::En);
        assert_eq!(parse_psu_id("  psu-1 ", s), Ok("psu-1"));
        assert_eq!(parse_psu_id(&"x".repeat(70), s).map(str::len), Ok(70));
        assert_eq!(parse_psu_id("", s), Err(s.user_id_missing));
        assert_eq!(parse_psu_id(" \t ", s), Err(s.user_id_missing));
        assert_eq!(parse_psu_id(&"x".repeat(71), s), Err(s.user_id_invalid));
        assert_eq!(parse_psu_id("a\u{0}b", s), Err(s.user_id_invalid));
        assert_eq!(parse_psu_id("a\nb", s), Err(s.user_id_invalid));
        // Sent as the PSU-ID header: printable ASCII only, never raw UTF-8 bytes.
        assert_eq!(parse_psu_id("Jöns-1", s), Err(s.user_id_invalid));
        assert_eq!(parse_psu_id("id\u{a0}1", s), Err(s.user_id_invalid));
        assert_eq!(
            parse_psu_id(" user 1@bank.example ", s),
            Ok("user 1@bank.example")
        );
    }

    #[test]
    fn every_language_has_the_authorisation_pages_words() {
        for lang in [
            Language::En,
            Language::Fi,
            Language::Sv,
            Language::Da,
            Language::No,
        ] {
            let s = sca_text(lang);
            for word in [
                s.identify_title,
                s.user_id_at,
                s.approve_in_app,
                s.check_now,
            ] {
                assert!(!word.is_empty());
            }
        }
    }
}
