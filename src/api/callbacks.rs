//! `GET /v1/callbacks/nordea` (a return with an authorization code, Nordea),
//! `GET /v1/callbacks/return` (a return without one, Berlin Group redirect SCA) and
//! `GET /v1/callbacks/oidc` (a return with the answer in the URL fragment, OP: without a
//! query it serves [`super::fragment_page`], which brings the fragment back as the query):
//! where the bank sends the shopper back after signing.
//!
//! Every code is exchanged through [`crate::bank::Bank::exchange_code_for`], with the state
//! the return carried and its front-channel ID token (the adapter checks them; Nordea's
//! default is the plain exchange). A bank whose token is per payment
//! ([`crate::bank::BankTraits::token_per_payment`]) has it stored under `payment:{id}`,
//! never under a shopper's key; a bank that executes only on pisgate's submission
//! ([`crate::bank::BankTraits::submit_after_authorization`]) gets the submit step
//! ([`super::submission`]) right after the token is stored, instead of the status read.
//!
//! Safe for a shopper's browser, which may refresh, go Back, or be retried by a proxy:
//! - The shopper is redirected (303) to the payment's `return_url` within
//!   `callback.redirect_timeout` whatever the bank does, with the payment's id and nothing
//!   else: a shopper can type any query string, so nothing on the redirect may look like proof
//!   of payment (the merchant confirms by API or webhook). The exchange and the status read
//!   run in a background task under their own bounds and finish there if they need longer.
//! - The `state` is random, bound to one payment, and valid until the payment's late-signing
//!   horizon, so a shopper who signs late is handled normally; past the horizon it is still
//!   exchanged while the payment is not final, because pisgate only learns that a payment is
//!   unsignable from the bank (the poller asks the bank to delete it at the horizon; a shopper
//!   who signed just before is still coming back). It is consumed only together
//!   with the durable outcome of the code exchange (the stored token, or the bank's refusal
//!   of the code), and one callback at a time may run the exchange (a claim with a lease):
//!   a repeated callback redirects again and never exchanges a code twice. An unknown or
//!   expired state exchanges nothing and shows a plain page.
//! - A code exchange the bank provably did not run (429 with a Retry-After within the bound,
//!   the bank's own 503, connection refused) is retried until `callback.exchange_deadline`.
//! - An `error` parameter (the shopper cancelled, or anyone typed it) is only a hint: it is
//!   recorded, the bank's status is read at once, and the bank's answer decides (the truth
//!   rule in [`crate::domain::status`]). It consumes nothing, so the real callback with the
//!   code still works after a forged error. The read is debounced ([`ErrorReads`]): at most
//!   one per payment per [`ERROR_READ_DEBOUNCE`] on each replica; the other error callbacks
//!   in that time record nothing, wait for that read (bounded) and answer the same redirect,
//!   so a flood of error callbacks cannot turn into a flood of bank calls or ledger events.
//! - If the merchant asked to cancel while the shopper was at the bank and the shopper signed
//!   anyway, the payment is deleted at the bank with the token just obtained. A cancel the
//!   shopper pressed on the consent page never deletes what the same shopper then signed
//!   (the old tab's button pressed after signing in a new one): the bank's word stands.
//!
//! Tokens: exchanges for one shopper key run under that key's lease ([`tokens::lease_psu`]);
//! a token is stored only if it is newer than the stored one (by the bank's issue time when
//! the answer has one), so the latest token the bank issued wins. The return URL was checked
//! against the merchant's registered origins at creation: never an open redirect. No code
//! path here waits for a second database connection while holding one.
//!
//! Never logged: the code, the state, the tokens.

use crate::api::AppState;
use crate::api::client_ip::{Peer, client_ip};
use crate::api::consent::text::{CallbackText, callback_text};
use crate::api::payments::{cancel_at_bank, redirect_uri_for, state_hash};
use crate::bank::{BankError, PsuContext};
use crate::config::ProviderSettings;
use crate::ledger::payments::{self, PaymentRecord};
use crate::ledger::tokens;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use rand::Rng;
use secrecy::SecretString;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument as _;
use uuid::Uuid;

/// How long one bank read answers every callback with an `error` for the same payment.
pub const ERROR_READ_DEBOUNCE: Duration = Duration::from_secs(3);

/// The bank reads triggered by callbacks with an `error`, per payment: when the last one
/// started, and a receiver that turns `true` when it is done.
#[derive(Debug, Default)]
pub struct ErrorReads {
    reads: std::sync::Mutex<HashMap<Uuid, (Instant, tokio::sync::watch::Receiver<bool>)>>,
}

/// Whether this callback reads the bank, or follows a read already started.
enum ErrorRead {
    Lead(tokio::sync::watch::Sender<bool>),
    Follow(tokio::sync::watch::Receiver<bool>),
}

impl ErrorReads {
    fn join(&self, id: Uuid) -> ErrorRead {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some((_, done)) = reads
            .get(&id)
            .filter(|(started, _)| now.duration_since(*started) < ERROR_READ_DEBOUNCE)
        {
            return ErrorRead::Follow(done.clone());
        }
        reads.retain(|_, (started, _)| now.duration_since(*started) < ERROR_READ_DEBOUNCE);
        let (tx, rx) = tokio::sync::watch::channel(false);
        reads.insert(id, (now, rx));
        ErrorRead::Lead(tx)
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/callbacks/nordea", get(bank_callback))
        .route("/v1/callbacks/return", get(bank_callback))
        .route("/v1/callbacks/oidc", get(oidc_callback))
}

/// `GET /v1/callbacks/oidc`: the return of a bank that puts its answer in the URL fragment
/// ([`crate::bank::BankTraits::return_in_fragment`], OpenID Connect hybrid flow), which a
/// browser never sends. Without `state` or `error` in the query it serves the page whose
/// one script moves the fragment into the query ([`super::fragment_page`]); the browser
/// comes back with it and the return is handled as every code return is.
async fn oidc_callback(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> Response {
    let has = |k: &str| raw.get(k).is_some_and(|v| !v.is_empty());
    if !has("state") && !has("error") {
        return super::fragment_page::respond(&state.settings.provider);
    }
    bank_callback(State(state), peer, headers, Query(raw)).await
}

/// A plain page naming who runs it, in the payment's language when the return link named a
/// payment (`payment`), else in the browser's (`Accept-Language`), else English.
fn page(
    provider: &ProviderSettings,
    headers: &HeaderMap,
    payment: Option<&PaymentRecord>,
    status: StatusCode,
    words: impl Fn(&'static CallbackText) -> (&'static str, &'static str),
) -> Response {
    let lang = super::authorize::language(payment, headers);
    let (title, message) = words(callback_text(lang));
    super::consent::respond(
        status,
        super::consent::plain_page(title, message, provider, lang),
        &[],
    )
}

/// The shopper's way back: the return URL with the payment's id only. No status: the shopper
/// holds this URL and can write any status into it, so the merchant must ask the API (or wait
/// for the webhook) whatever it says.
fn redirect_to_merchant(provider: &ProviderSettings, p: &PaymentRecord) -> Response {
    let location = match super::consent::return_url(p) {
        Some(url) => url,
        None => {
            // In the payment's language (every payment has one).
            return page(provider, &HeaderMap::new(), Some(p), StatusCode::OK, |t| {
                t.signed
            });
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

fn psu_context(state: &AppState, headers: &HeaderMap, peer: Peer) -> PsuContext {
    PsuContext {
        ip: client_ip(peer, headers, &state.settings.server.trusted_proxies),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect()),
    }
}

/// Whose token this is: the payment's own for a bank whose token is per payment
/// ([`crate::bank::BankTraits::token_per_payment`]: it can submit only that payment, and is
/// never a shopper's key), else the bank's shopper identity if the token answer has one,
/// else the merchant's stable shopper id, else the payment alone.
fn psu_key(state: &AppState, p: &PaymentRecord, shopper_id: Option<&str>) -> String {
    if state.banks.client(&p.bank).traits().token_per_payment {
        return format!("payment:{}", p.id);
    }
    match (shopper_id, &p.psu_id) {
        (Some(bank_id), _) => format!("bank:{bank_id}"),
        (None, Some(psu_id)) => format!("merchant:{}:{psu_id}", p.merchant_id),
        (None, None) => format!("payment:{}", p.id),
    }
}

#[tracing::instrument(skip_all, fields(payment_id = tracing::field::Empty, bank = tracing::field::Empty))]
async fn bank_callback(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> Response {
    match handle(&state, &headers, peer, raw).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "callback failed");
            page(
                &state.settings.provider,
                &headers,
                None,
                StatusCode::SERVICE_UNAVAILABLE,
                |t| t.retry,
            )
        }
    }
}

/// The payment as it is now.
async fn current(state: &AppState, id: Uuid) -> anyhow::Result<Option<PaymentRecord>> {
    Ok(payments::get(&mut *state.pool.read_conn().await?, id).await?)
}

/// Redirects to the merchant once the payment's row can be read (the shopper's way back is
/// not given before the callback's work is durable or handed to the background).
async fn redirect_now(state: &AppState, p: &PaymentRecord) -> anyhow::Result<Response> {
    let now = current(state, p.id).await?.unwrap_or_else(|| p.clone());
    Ok(redirect_to_merchant(&state.settings.provider, &now))
}

async fn note(
    state: &AppState,
    id: Uuid,
    kind: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let mut tx = state.pool.begin().await?;
    payments::note(&mut tx, id, kind, detail).await?;
    tx.commit().await?;
    Ok(())
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    peer: Peer,
    raw: HashMap<String, String>,
) -> anyhow::Result<Response> {
    let started = Instant::now();
    let param = |k: &str| raw.get(k).cloned().filter(|v| !v.is_empty());
    let Some(oauth_state) = param("state") else {
        tracing::warn!("callback without state");
        return Ok(page(
            &state.settings.provider,
            headers,
            None,
            StatusCode::BAD_REQUEST,
            |t| (t.link_not_valid, t.incomplete),
        ));
    };
    let found = payments::find_by_state(
        &mut *state.pool.read_conn().await?,
        &state_hash(&oauth_state),
    )
    .await?;
    let Some(p) = found else {
        tracing::warn!("callback with an unknown state");
        return Ok(page(
            &state.settings.provider,
            headers,
            None,
            StatusCode::BAD_REQUEST,
            |t| (t.link_not_valid, t.unknown),
        ));
    };
    tracing::Span::current().record("payment_id", tracing::field::display(p.id));
    tracing::Span::current().record("bank", p.bank.as_str());
    crate::telemetry::link_to_creation(&tracing::Span::current(), p.trace_parent.as_deref());
    let psu = psu_context(state, headers, peer);
    match returned(state, headers, &p, &raw, psu, started).await {
        Ok(response) => Ok(response),
        Err(e) => {
            // The shopper still goes back to the shop; the poller learns the outcome.
            tracing::error!(
                error = format!("{e:#}"),
                "handling the return failed; redirecting anyway"
            );
            Ok(redirect_to_merchant(&state.settings.provider, &p))
        }
    }
}

/// The shopper's return for a known payment.
async fn returned(
    state: &AppState,
    headers: &HeaderMap,
    p: &PaymentRecord,
    raw: &HashMap<String, String>,
    psu: PsuContext,
    started: Instant,
) -> anyhow::Result<Response> {
    let bound = state.settings.callback.redirect_timeout;
    let param = |k: &str| raw.get(k).cloned().filter(|v| !v.is_empty());
    let p = p.clone();

    if let Some(error) = param("error") {
        // A hint, never a transition: the bank's status decides. Anyone can type it, so it
        // is kept without control characters (jsonb cannot hold NUL: the note recording it
        // would fail, and the status read with it).
        let description: String = param("error_description")
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect();
        let error: String = error
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        let left = bound.saturating_sub(started.elapsed());
        match state.error_reads.join(p.id) {
            ErrorRead::Lead(done) => {
                tracing::info!(error = %error, "callback with an error; asking the bank");
                note(
                    state,
                    p.id,
                    "callback_error",
                    json!({ "error": error, "error_description": description }),
                )
                .await?;
                let task = tokio::spawn({
                    let (state, p) = (state.clone(), p.clone());
                    async move {
                        let _ = refresh_status(&state, &p, &psu).await;
                        let _ = done.send(true);
                    }
                    .in_current_span()
                });
                let _ = tokio::time::timeout(left, task).await;
            }
            ErrorRead::Follow(mut done) => {
                tracing::info!(error = %error, "callback with an error; a bank read for it is already under way");
                let _ = tokio::time::timeout(left, done.wait_for(|d| *d)).await;
            }
        }
        let now = current(state, p.id).await?.unwrap_or(p);
        return Ok(redirect_to_merchant(&state.settings.provider, &now));
    }
    if p.state_used_at.is_some() {
        // Refresh, Back or a proxy retry: the exchange is done; say where things stand.
        return redirect_now(state, &p).await;
    }
    // Past the horizon, a payment not yet provably unsignable (not final) still takes its
    // shopper's return: only a final payment refuses an expired state.
    if p.status().is_final() && p.state_expires_at.is_none_or(|t| t < Utc::now()) {
        note(
            state,
            p.id,
            "callback_rejected",
            json!({ "reason": "state_expired" }),
        )
        .await?;
        tracing::warn!("callback past the late-signing horizon on a final payment refused");
        return Ok(page(
            &state.settings.provider,
            headers,
            Some(&p),
            StatusCode::BAD_REQUEST,
            |t| (t.link_not_valid, t.expired),
        ));
    }
    if !state.banks.client(&p.bank).traits().return_carries_code {
        return returned_without_code(state, &p, psu, started, param("code")).await;
    }
    let Some(code) = param("code") else {
        note(
            state,
            p.id,
            "callback_rejected",
            json!({ "reason": "no_code" }),
        )
        .await?;
        return Ok(page(
            &state.settings.provider,
            headers,
            Some(&p),
            StatusCode::BAD_REQUEST,
            |t| (t.link_not_valid, t.no_authorization),
        ));
    };
    let cfg = &state.settings.callback;
    let claim_lease = cfg.exchange_deadline + Duration::from_secs(30);
    if !payments::claim_callback(&state.pool, p.id, claim_lease).await? {
        // Another request for this return is exchanging the code: wait for it, bounded.
        loop {
            let now = current(state, p.id).await?;
            let done = now.as_ref().is_none_or(|n| n.state_used_at.is_some());
            if done || started.elapsed() + Duration::from_millis(100) >= bound {
                return redirect_now(state, &p).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    note(
        state,
        p.id,
        "callback",
        json!({ "outcome": "code_received" }),
    )
    .await?;
    let task = tokio::spawn({
        let (state, p) = (state.clone(), p.clone());
        let answer = CodeAnswer {
            code: SecretString::from(code),
            state: SecretString::from(param("state").expect("a return is found by its state")),
            id_token: param("id_token"),
        };
        async move { finish(&state, &p, answer, &psu).await }.in_current_span()
    });
    match tokio::time::timeout(bound.saturating_sub(started.elapsed()), task).await {
        Ok(Ok(Err(e))) => {
            tracing::error!(error = format!("{e:#}"), "finishing the callback failed")
        }
        Ok(Err(e)) => tracing::error!(error = %e, "the callback task failed"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => tracing::info!(
            "the bank is slow; the shopper goes back now and the exchange finishes in the background"
        ),
    }
    redirect_now(state, &p).await
}

/// A return that carries no code (a Berlin Group redirect): it only tells pisgate to read
/// the bank's status. The state is consumed (a repeated return redirects again); the read
/// runs under the redirect bound and finishes in the background if the bank is slow.
async fn returned_without_code(
    state: &AppState,
    p: &PaymentRecord,
    psu: PsuContext,
    started: Instant,
    code: Option<String>,
) -> anyhow::Result<Response> {
    // A bank reference failing its ledger MAC (logged by `bank_ref`): nothing is sent to the
    // bank and the return is not used up (no claim, the state kept), so it completes once
    // an operator has put the reference right.
    let bank_ref = p.bank_ref();
    if p.bank_payment_id.is_some() && bank_ref.is_none() {
        return redirect_now(state, p).await;
    }
    let bound = state.settings.callback.redirect_timeout;
    // With a code, the claim covers its exchange and the exchange's retries.
    let claim_lease = match code {
        Some(_) => state.settings.callback.exchange_deadline,
        None => bound,
    } + Duration::from_secs(30);
    if !payments::claim_callback(&state.pool, p.id, claim_lease).await? {
        return redirect_now(state, p).await;
    }
    // The OAuth code's exchange (retried while the code provably was not sent), the return's
    // record and the status read run on after the shopper is redirected: a bank slow to
    // answer never costs the code that finalises the shopper's approval.
    // Under Finishing: a replica stopping waits for it (a code in its retries is still
    // sent); one that stops taking work gives the claim back, so a repeated return can.
    let task = tokio::spawn({
        let (state, p) = (state.clone(), p.clone());
        let work = {
            let (state, p) = (state.clone(), p.clone());
            async move {
                if let Some(code) = code {
                    finish_oauth(&state, &p, bank_ref.as_ref(), code).await?;
                }
                let mut tx = state.pool.begin().await?;
                payments::note(&mut tx, p.id, "callback", json!({ "outcome": "returned" })).await?;
                payments::consume_state(&mut tx, p.id).await?;
                tx.commit().await?;
                refresh_status(&state, &p, &psu).await
            }
        };
        async move {
            match state.finishing.run(crate::api::error::carried(work)).await {
                Ok(done) => done,
                Err(e) => {
                    payments::release_callback(&state.pool, p.id).await?;
                    Err(e)
                }
            }
        }
        .in_current_span()
    });
    match tokio::time::timeout(bound.saturating_sub(started.elapsed()), task).await {
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = format!("{e:#}"), "status after the return failed")
        }
        Ok(Err(e)) => tracing::error!(error = %e, "the return task failed"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => tracing::info!("the bank is slow; the shopper goes back now"),
    }
    redirect_now(state, p).await
}

/// OAuth SCA at a Berlin Group bank: the shopper came back with an authorization code, which
/// pisgate exchanges once (this request holds the callback claim) with the authorisation's
/// own PKCE verifier; the exchange finalises the SCA at the bank. Its outcome is recorded;
/// the bank's transaction status, read next, decides the payment. A code for a payment
/// without a stored verifier (no OAuth authorisation started) is ignored.
async fn finish_oauth(
    state: &AppState,
    p: &PaymentRecord,
    bank_ref: Option<&crate::bank::BankRef>,
    code: String,
) -> anyhow::Result<()> {
    let Some(bank_ref) = bank_ref else {
        return Ok(());
    };
    let Some((key_id, sealed)) =
        crate::ledger::sca::verifier(&mut *state.pool.read_conn().await?, p.id).await?
    else {
        return Ok(());
    };
    let key = crate::api::sca::pkce_key(p.id);
    let verifier = state
        .cipher
        .decrypt(&key_id, &sealed, &crate::api::sca::pkce_aad(&p.bank, &key))
        .map_err(|e| anyhow::anyhow!("cannot open the PKCE verifier: {e}"))?;
    let code = SecretString::from(code);
    let redirect_uri = crate::api::payments::return_url(state);
    // Until the exchange deadline: tried again while the code provably did not reach the
    // bank (its metadata unreadable, a 503 of its own, a 429, a refused connection).
    let deadline = Instant::now() + state.settings.callback.exchange_deadline;
    let mut wait = Duration::from_millis(250);
    let mut tries = 0;
    let answer = loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = tokio::time::timeout(
            left,
            state
                .banks
                .client(&p.bank)
                .finish_oauth(bank_ref, &code, &redirect_uri, &verifier),
        )
        .await
        .unwrap_or_else(|_| {
            Err(BankError::Unexpected {
                status: None,
                detail: "no answer to the OAuth code exchange in time".into(),
            })
        });
        let again = match &answer {
            Err(
                e @ (BankError::RateLimited { .. }
                | BankError::Unavailable {
                    retry_safe: true, ..
                }),
            ) => {
                let pause = match e {
                    BankError::RateLimited {
                        retry_after: Some(after),
                        ..
                    } => *after,
                    _ => wait,
                };
                (Instant::now() + pause < deadline).then_some(pause)
            }
            _ => None,
        };
        match again {
            Some(pause) => {
                tracing::info!(
                    tries,
                    "the OAuth code was not sent (the bank was not ready); trying again"
                );
                tokio::time::sleep(pause).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            None => break answer,
        }
    };
    let (kind, detail) = match &answer {
        Ok(()) => ("oauth_code_exchanged", json!({ "tries": tries })),
        Err(
            e @ (BankError::Validation { .. }
            | BankError::TokenRejected
            | BankError::BadCredentials { .. }
            | BankError::NotFound),
        ) => {
            tracing::warn!(error = %e, kind = e.kind(), "the bank refused the OAuth code; the bank's status decides");
            (
                "oauth_code_refused",
                json!({ "error": e.kind(), "tries": tries }),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, kind = e.kind(), tries, "the OAuth code exchange had no usable answer; the bank's status decides");
            (
                "oauth_code_unanswered",
                json!({ "error": e.kind(), "tries": tries }),
            )
        }
    };
    note(state, p.id, kind, detail).await
}

/// What a code return carried: the code, the state it came back with and, in the hybrid
/// flow, the front-channel ID token. Never logged.
struct CodeAnswer {
    code: SecretString,
    state: SecretString,
    id_token: Option<String>,
}

/// Exchanges the code, then either submits the payment (a bank that executes it only on
/// pisgate's submission: [`super::submission`], which also withholds it if the merchant
/// cancelled), deletes it at the bank (the merchant asked to cancel meanwhile) or reads its
/// status.
async fn finish(
    state: &AppState,
    p: &PaymentRecord,
    answer: CodeAnswer,
    psu: &PsuContext,
) -> anyhow::Result<()> {
    // To its commit before the replica lets go of the database (the shutdown waits for it,
    // past the drain): the bank has used the code up by then, and only the stored token
    // keeps the shopper's consent.
    let work = {
        let (state, p) = (state.clone(), p.clone());
        async move { exchange_and_store(&state, &p, answer).await }
    };
    state.finishing.run(work).await??;
    if state
        .banks
        .client(&p.bank)
        .traits()
        .submit_after_authorization
    {
        let done = super::submission::submit(
            super::submission::Deps {
                pool: &state.pool,
                cipher: &state.cipher,
                banks: &state.banks,
                settings: &state.settings,
                finishing: &state.finishing,
            },
            p.id,
            "callback",
            Some(psu),
        )
        .await?;
        tracing::info!(outcome = done.outcome, "submit step after the return");
        return Ok(());
    }
    let Some(now) = current(state, p.id).await? else {
        return Ok(());
    };
    let row_says_cancelled = now.cancel_requested_at.is_some()
        && payments::cancel_requested_by(&mut *state.pool.read_conn().await?, p.id).await?
            == Some(payments::CancelBy::Merchant);
    // Deleting a signed payment at the bank only on the merchant's cancel its ledger recorded
    // (an insider could set the row's columns).
    let merchant_cancelled = row_says_cancelled
        && payments::merchant_cancel_in_ledger(&mut *state.pool.read_conn().await?, p.id).await?;
    if row_says_cancelled && !merchant_cancelled {
        tracing::error!(
            "the row says the merchant cancelled, its ledger does not: not deleting at the bank"
        );
        metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
    }
    if merchant_cancelled && !now.status().is_final() && now.psu_key.is_some() {
        tracing::info!(
            "the shopper signed a payment the merchant cancelled; deleting it at the bank"
        );
        if let Err(e) = cancel_at_bank(state, &now).await {
            tracing::warn!(error = %e, code = e.code(), "cancelling after the shopper signed did not go through; the bank's status decides");
        } else {
            return Ok(());
        }
    }
    refresh_status(state, p, psu).await
}

/// Exchanges the code under the shopper's lease and keeps the token only if it is the
/// newest. Consumes the state with the durable outcome (the token, or the bank's refusal of
/// the code); gives the claim back if the bank could not be reached in time, so a repeated
/// callback can try again.
async fn exchange_and_store(
    state: &AppState,
    p: &PaymentRecord,
    answer: CodeAnswer,
) -> anyhow::Result<()> {
    let cfg = &state.settings.callback;
    let deadline = Instant::now() + cfg.exchange_deadline;
    let lease_len = cfg.exchange_deadline + Duration::from_secs(15);
    // Until the bank tells us who the shopper is, the key we can lease is the merchant's
    // shopper id (or the payment): the bank's identity is only known after the exchange.
    let lock_key = psu_key(state, p, None);
    // Waiting for another exchange of this shopper may take at most half the deadline, so
    // that this one still has time to run.
    let Some(mut lease) = tokens::lease_psu(
        &state.pool,
        &p.bank,
        &lock_key,
        lease_len,
        cfg.exchange_deadline / 2,
    )
    .await?
    else {
        payments::release_callback(&state.pool, p.id).await?;
        anyhow::bail!(
            "another exchange for this shopper held its lease too long; a repeated callback can try again"
        );
    };
    let issue_seq = tokens::next_issue_seq(&mut *state.pool.read_conn().await?).await?;
    let result = exchange_with_retries(state, p, &answer, deadline).await;
    let outcome = match result {
        Ok(set) => {
            let key = psu_key(state, p, set.shopper_id.as_deref());
            // The bank named the shopper: take that key's lease too (the refresher's), and
            // order this token after any refresh that finished under it.
            let issue_seq = if key != lock_key {
                if !lease
                    .add_key(&key, lease_len, Duration::from_secs(10))
                    .await?
                {
                    tracing::warn!(
                        "the shopper's bank key stayed busy; storing in order of issue numbers"
                    );
                }
                tokens::next_issue_seq(&mut *state.pool.read_conn().await?).await?
            } else {
                issue_seq
            };
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
            payments::set_psu_key(&mut tx, p.id, &key).await?;
            payments::consume_state(&mut tx, p.id).await?;
            payments::note(
                &mut tx,
                p.id,
                "token_exchanged",
                json!({
                    "issue_seq": issue_seq,
                    "stored": stored,
                    "access_expires_at": expires_at,
                    "issued_at": set.issued_at,
                    "bank_named_shopper": set.shopper_id.is_some(),
                    // Binds the row's psu_key to the ledger (checked by `ledger verify`).
                    "psu_key_sha256": crate::ledger::binding::psu_key_digest(&key),
                }),
            )
            .await?;
            tx.commit().await.map_err(anyhow::Error::from)
        }
        Err(error) => {
            tracing::warn!(error = %error, kind = error.kind(), "code exchange failed");
            // The bank refused the code, or it may have used it: either way exchanging it
            // again cannot help. Only a bank we never reached leaves it for a retry.
            let retryable = error.provably_not_processed();
            let mut tx = state.pool.begin().await?;
            payments::note(
                &mut tx,
                p.id,
                "token_exchange_failed",
                json!({ "error": error.kind(), "detail": error.to_string(), "retryable": retryable }),
            )
            .await?;
            if retryable {
                tx.commit().await?;
                payments::release_callback(&state.pool, p.id).await?;
            } else {
                payments::consume_state(&mut tx, p.id).await?;
                tx.commit().await?;
            }
            // A failed exchange does not stop the payment: status polling needs no token.
            Ok(())
        }
    };
    lease.release().await;
    outcome
}

/// The code exchange, retried while the bank provably did not run it (429 with a
/// Retry-After that fits, the bank's own 503, connection refused) and time is left. Counted in
/// `pisgate_token_exchanges_total{outcome}`: `ok` or `failed` once per exchange, `retried`
/// per retry.
async fn exchange_with_retries(
    state: &AppState,
    p: &PaymentRecord,
    answer: &CodeAnswer,
    deadline: Instant,
) -> Result<crate::bank::TokenSet, BankError> {
    let result = exchange_retrying(state, p, answer, deadline).await;
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    metrics::counter!("pisgate_token_exchanges_total", "outcome" => outcome).increment(1);
    result
}

async fn exchange_retrying(
    state: &AppState,
    p: &PaymentRecord,
    answer: &CodeAnswer,
    deadline: Instant,
) -> Result<crate::bank::TokenSet, BankError> {
    let client = state.banks.client(&p.bank);
    let redirect_uri = redirect_uri_for(state, &p.bank);
    let Some(bank_ref) = p.bank_ref() else {
        // A state is handed out only with the bank's answer; never exchange without it. No
        // bank reference, or one failing its ledger MAC (logged by `bank_ref`): nothing is
        // sent, so the code stays good for a repeated callback once an operator has looked.
        return Err(BankError::NotSent {
            detail: "the payment's bank reference is missing or fails its ledger MAC; no exchange"
                .into(),
        });
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(500) {
            // Not sent: the code is still good for a repeated callback.
            return Err(BankError::Unavailable {
                detail: "no time left for the code exchange; not sent".into(),
                retry_safe: true,
            });
        }
        let exchange = client.exchange_code_for(
            &bank_ref,
            &answer.code,
            &redirect_uri,
            &answer.state,
            answer.id_token.as_deref(),
        );
        let answer = match tokio::time::timeout(left, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(BankError::Unexpected {
                status: None,
                detail: "no answer to the code exchange within the deadline".into(),
            }),
        };
        let error = match answer {
            Ok(set) => return Ok(set),
            Err(e) if e.provably_not_processed() => e,
            Err(e) => return Err(e),
        };
        let backoff = Duration::from_millis(200 * 2u64.pow(attempt.min(6)))
            .mul_f64(rand::thread_rng().gen_range(0.8..1.2));
        let wait = match &error {
            BankError::RateLimited {
                retry_after: Some(after),
            } => (*after).max(Duration::from_millis(100)),
            _ => backoff,
        };
        if Instant::now() + wait >= deadline {
            return Err(error);
        }
        tracing::info!(
            attempt,
            wait_ms = wait.as_millis() as u64,
            kind = error.kind(),
            "the bank did not run the code exchange; retrying"
        );
        metrics::counter!("pisgate_token_exchanges_total", "outcome" => "retried").increment(1);
        tokio::time::sleep(wait).await;
    }
}

/// Asks the bank for the payment's status and applies it (the same path as the poller).
async fn refresh_status(
    state: &AppState,
    p: &PaymentRecord,
    psu: &PsuContext,
) -> anyhow::Result<()> {
    let Some(bank_ref) = p.bank_ref() else {
        return Ok(());
    };
    let report = match state
        .banks
        .client(&p.bank)
        .status(&bank_ref, Some(psu))
        .await
    {
        Ok(r) => r,
        Err(BankError::NotFound) => return Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "status after the callback failed; the poller will retry");
            return Ok(());
        }
    };
    let traits = state.banks.client(&p.bank).traits();
    let report = super::submission::truth(&state.pool, &traits, p.id, report).await?;
    let mut tx = state.pool.begin().await?;
    payments::apply_bank_report(
        &mut tx,
        p.id,
        &report.bank_status,
        report.status,
        json!({ "source": "callback" }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
