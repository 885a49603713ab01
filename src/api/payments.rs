//! Payments: `POST /v1/payments`, `GET /v1/payments`, `GET /v1/payments/{id}`,
//! `GET /v1/payments/{id}/events`, `POST /v1/payments/{id}/cancel`,
//! `GET /v1/payments/{id}/funds`.
//!
//! Creation follows design.md's order and never holds a transaction across the bank call:
//! validate → insert the payment, the idempotency record and the start of the bank attempt,
//! and commit → initiate at the bank (bounded below the key's in-flight bound) → record the
//! answer and the idempotent response and commit → answer.
//!
//! Only an explicit refusal by the bank (validation, credentials) ends a payment `failed`.
//! A timeout or a dropped connection after sending, an unreadable answer, or a database
//! failure after the bank answered leave the outcome unknown: the payment stays open, the
//! merchant is told `initiation_outcome_unknown` and retries with the same key, which resumes
//! the payment with a new attempt. The bank's link of a lost attempt was never handed to
//! anyone (merchants only ever see the authorization hop, which leads to the recorded
//! attempt's link), so it cannot be signed; the ledger lists every attempt and its outcome.
//! A stale key resumes only a payment with no bank id that is not final, guarded in SQL.
//! Not at a bank that may execute a payment nobody signed through pisgate's link
//! ([`crate::bank::BankTraits::acts_without_hop`]: an SCA exemption, a decoupled SCA pushed
//! at initiation): there the lost attempt may be live, so the retry answers `409
//! initiation_not_resumable` and nothing is sent.
//!
//! Deferred initiation (the shopper chooses the bank, or gives their IBAN, on pisgate's page)
//! creates the payment without a bank call and answers at once; its attempts are the page's
//! (`api::authorize`), never a merchant retry's. The bank call and the recording of its
//! outcome are one service for both callers: [`crate::api::initiation`].

use crate::api::AppState;
use crate::api::auth::{AuthedMerchant, FullKey};
use crate::api::authorize;
use crate::api::console::unresolved;
use crate::api::error::{ApiError, FieldError};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, StrictValue};
use crate::api::initiation;
use crate::api::openapi::PaymentCreate;
use crate::api::pagination::{Page, page_with};
use crate::api::payment_input::{self, Validated};
use crate::api::payment_search;
use crate::bank::BankError;
use crate::domain::{Evidence, PaymentStatus};
use crate::ledger::idempotency::{self, Claim};
use crate::ledger::payments::{
    self, CancelBy, CancelStart, Change, Creation, KeyClaim, NewPayment, PaymentRecord,
};
use crate::ledger::{events, tokens};
use anyhow::Context as _;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::Utc;
use rand::RngCore;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/payments", post(create_payment).get(list_payments))
        .route("/payments/{id}", get(get_payment))
        .route("/payments/{id}/events", get(payment_events))
        .route("/payments/{id}/cancel", post(cancel_payment))
        .route("/payments/{id}/funds", get(payment_funds))
}

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

pub use crate::ledger::view::PaymentView;

/// The request's `Idempotency-Key` header as sent (judged by [`idempotency_key`] in the
/// handler, after the body is read): axum's `HeaderMap` extractor would copy every header.
pub(crate) struct IdempotencyHeader(Option<HeaderValue>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(IdempotencyHeader(
            parts.headers.get(IDEMPOTENCY_HEADER).cloned(),
        ))
    }
}

/// The payment as this server's API shows it (its hop link built from `server.public_url`,
/// never read back from the row: [`PaymentView::shown`]).
pub(crate) fn view(state: &AppState, p: &PaymentRecord) -> PaymentView {
    PaymentView::shown(p, &state.settings.server.public_url)
}

fn idempotency_key(header: Option<&HeaderValue>) -> Result<String, ApiError> {
    let missing = || {
        ApiError::Validation(vec![FieldError::new(
            "Idempotency-Key",
            "required",
            "send an Idempotency-Key header (e.g. a UUID) so a retry never creates a second payment",
        )])
    };
    let invalid = || {
        ApiError::Validation(vec![FieldError::new(
            "Idempotency-Key",
            "invalid",
            "must be 1 to 255 printable ASCII characters",
        )])
    };
    let value = header.ok_or_else(missing)?;
    // A value that is not visible ASCII (`clé`) was sent all the same: invalid, not missing.
    let key = value.to_str().map_err(|_| invalid())?.trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(key.to_owned())
}

/// A random, URL-safe OAuth state (256 bits) and the hash we keep of it.
pub(crate) fn new_state() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let state = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = Sha256::digest(state.as_bytes()).into();
    (state, hash)
}

pub fn state_hash(state: &str) -> [u8; 32] {
    Sha256::digest(state.as_bytes()).into()
}

pub fn callback_url(state: &AppState) -> String {
    format!("{}/v1/callbacks/nordea", state.settings.server.public_url)
}

/// Where a bank whose return carries no code (Berlin Group redirect SCA) sends the shopper
/// back; the adapter adds the payment's `state` to it.
pub fn return_url(state: &AppState) -> String {
    format!("{}/v1/callbacks/return", state.settings.server.public_url)
}

/// Where a bank that returns the shopper with its answer in the URL fragment sends them
/// (OpenID Connect hybrid flow): a page that moves the fragment into the query.
pub fn oidc_return_url(state: &AppState) -> String {
    format!("{}/v1/callbacks/oidc", state.settings.server.public_url)
}

/// The redirect URI a bank gets for a payment: the fragment return, the code callback, or
/// the plain return.
pub fn redirect_uri_for(state: &AppState, bank: &str) -> String {
    let traits = state.banks.client(bank).traits();
    if traits.return_in_fragment {
        oidc_return_url(state)
    } else if traits.return_carries_code {
        callback_url(state)
    } else {
        return_url(state)
    }
}

/// A JSON answer with every object's keys in sorted order: the order the stored answers
/// (creation, replays, webhooks) have, so that a payment reads the same from every endpoint.
pub(crate) struct Sorted<T>(pub T);

impl<T: Serialize> IntoResponse for Sorted<T> {
    fn into_response(self) -> Response {
        match serde_json::to_value(&self.0) {
            Ok(value) => Json(value).into_response(),
            Err(e) => ApiError::Internal(anyhow::Error::new(e).context("a view")).into_response(),
        }
    }
}

fn replayed(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    if status.is_client_error() || status.is_server_error() {
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Create a payment
///
/// Answers 201 with the payment and its `authorization_url`: send the shopper there to sign. Without `bank`, where several banks serve the debtor's country, no bank is called yet: the payment answers `initiation: "awaiting_bank_choice"` and `bank: null`, and its `authorization_url` opens pisgate's page where the shopper chooses the bank (pisgate initiates there then); likewise `initiation: "awaiting_debtor_account"` where the bank needs the debtor's account and `debtor` was not given (the shopper gives their IBAN on that page), and `initiation: "awaiting_shopper_identification"` at a bank that needs the shopper's own token for every call (SEB: the page identifies the shopper with BankID, then pisgate creates the payment at the bank and the shopper signs it there). The same Idempotency-Key with the same body replays the first answer (header `Idempotent-Replayed: true`), even if today's validation would refuse that body; with another body it is a 422; while the first request runs, a 409. Keys are kept at least 24 hours.
#[utoipa::path(
    post,
    path = "/v1/payments",
    operation_id = "createPayment",
    tag = "Payments",
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255)),
    request_body = PaymentCreate,
    responses(
        (status = 201, description = "Created", body = PaymentView),
        (status = 409, description = "idempotency_key_in_flight: a request with this key is still running; retry after Retry-After with the same key. idempotency_key_unresumable: the key's payment has an unknown bank outcome and today's rules (e.g. a return origin removed since) refuse its body, so a retry cannot resume it; the payment is followed to its end. initiation_not_resumable: the bank's answer was lost and the bank may execute a payment without the shopper (an SCA exemption), so no second initiation is sent; the payment stays open for the operator to reconcile",
            headers(("Retry-After" = i64))),
        (status = 422, description = "validation_failed: one entry per invalid field in `errors`; idempotency_key_reused; or payee_not_registered: the merchant pays registered accounts only and `creditor.account` is not one of them"),
        (status = 502, description = "initiation_outcome_unknown (the bank's answer was lost: retry with the same key, which resumes the payment, except at a bank that may execute a payment without the shopper, where the retry answers 409 initiation_not_resumable), bank_unavailable (nothing was created: retry with the same key), or the bank refused our credentials (the payment is failed)"),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %merchant.id, payment_id = tracing::field::Empty, bank = tracing::field::Empty))]
pub(crate) async fn create_payment(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    IdempotencyHeader(key_header): IdempotencyHeader,
    ApiJson(StrictValue(body)): ApiJson<StrictValue>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(key_header.as_ref())?;
    let body_hash = payment_input::body_fingerprint(&body);
    let today = Utc::now().date_naive();
    let mut validated: Validated = match payment_input::validate(
        &body,
        &merchant,
        today,
        state.settings.payment_rules_environment(),
    ) {
        Ok(v) => v,
        // Today's rules never decide a replay: an answered key replays its answer, and a
        // key whose request was accepted but not answered (in flight, or its bank outcome
        // unknown) is judged by the day it was first used (a retry past midnight of a
        // payment for 'today' resumes it).
        Err(refused) => {
            match idempotency::answered(&state.pool, merchant.id, &key, &body_hash).await? {
                Some(idempotency::Answered::Taken {
                    same_body: true,
                    in_flight,
                    first_used_at,
                }) => match payment_input::validate(
                    &body,
                    &merchant,
                    first_used_at.date_naive(),
                    state.settings.payment_rules_environment(),
                ) {
                    Ok(v) => v,
                    Err(_) => return Err(unresumable(in_flight, &refused)),
                },
                _ => return answered_or(&state, merchant.id, &key, &body_hash, refused).await,
            }
        }
    };
    let r = &validated.request;
    let (bank_id, deferred) = match choose_bank(&state, r) {
        Ok(BankChoice::Bank(id)) => (id, None),
        Ok(BankChoice::Deferred { bank, waiting }) => (bank, Some(waiting)),
        Err(refused) => return answered_or(&state, merchant.id, &key, &body_hash, refused).await,
    };
    let bank_id = bank_id.as_str();
    let settings = &state.settings.payments;
    let id = Uuid::now_v7();
    let (oauth_state, oauth_state_hash) = new_state();
    // The bank's own rules (what its request can carry), before anything is written: a 422
    // naming the field, never a payment that is made here and fails when the bank is
    // called. The initiation built for it is the one sent (when this request makes the
    // payment).
    let mut initiation = None;
    if bank_id != payments::NO_BANK_YET {
        let built = validated.initiation(
            id,
            &merchant.name,
            oauth_state.clone(),
            redirect_uri_for(&state, bank_id),
        );
        if let Err(e) = state.banks.client(bank_id).check(&built) {
            let refused = bank_refusal(e);
            return answered_or(&state, merchant.id, &key, &body_hash, refused).await;
        }
        initiation = Some(built);
    } else {
        // The shopper will choose among the country's banks: only those whose rules can carry
        // this payment are offered (`authorize::deferred`); when none can, it is refused
        // here, naming the field, as for a bank the merchant named.
        let built = validated.initiation(id, &merchant.name, oauth_state.clone(), String::new());
        let mut first_refusal = None;
        let mut any = false;
        for b in state.banks.for_country(r.country()) {
            match b.client.check(&built) {
                Ok(()) => any = true,
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        if let (false, Some(e)) = (any, first_refusal) {
            let refused = bank_refusal(e);
            return answered_or(&state, merchant.id, &key, &body_hash, refused).await;
        }
    }
    // The bank call must end before the key's in-flight bound, measured from the claim.
    let claimed_at = tokio::time::Instant::now();

    let now = Utc::now();
    let expires_at = now + chrono::Duration::from_std(settings.signing_window).context("window")?;
    let sign_horizon_at =
        now + chrono::Duration::from_std(settings.late_signing_horizon).context("horizon")?;
    // A payment whose bank call starts now is first polled a signing interval on (the fast
    // path then leaves this schedule as it is); a deferred one at its horizon.
    let first_poll_at = match deferred {
        Some(_) => sign_horizon_at,
        None => (now
            + chrono::Duration::from_std(state.settings.poller.signing_interval)
                .context("signing interval")?)
        .min(sign_horizon_at),
    };

    let hop = authorize::new_token();
    let hop_url = authorize::url(&state, id, &hop);
    let return_url = r.return_url().as_string();
    let trace_parent = crate::telemetry::current_traceparent();
    // Built afresh for each try of the claim below; the first (almost always the only one)
    // takes the canonical request validation made, later ones a copy of it.
    let new_payment = |request: Value| NewPayment {
        id,
        merchant_id: merchant.id,
        amount_minor: r.amount().minor(),
        currency: r.currency().code(),
        country: r.country().code(),
        request,
        merchant_reference: r.merchant_reference(),
        psu_id: r.psu_id(),
        return_url: &return_url,
        metadata: Value::Object(r.metadata().cloned().unwrap_or_default()),
        state_hash: &oauth_state_hash,
        expires_at,
        sign_horizon_at,
        first_poll_at,
        authorize_token: &hop,
        authorize_url: &hop_url,
        trace_parent: trace_parent.as_deref(),
        bank: bank_id,
        deferred,
    };
    let key_expires_at = now
        + chrono::Duration::from_std(
            settings
                .idempotency_retention
                .max(idempotency::MIN_RETENTION),
        )
        .context("retention")?;
    // The fast path: a new key, the payment and its events in one statement. A key that is
    // already there (a retry, a request in flight, another body) takes the path below; a key
    // that expired in between sends it back here.
    let mut tries = 0;
    let mut request = Some(std::mem::take(&mut validated.canonical));
    // The bank of a payment the key resumed (the slow path).
    let mut resumed_at: Option<String> = None;
    let (created, payment_id, attempt) = loop {
        tries += 1;
        let created = payments::create_with_key(
            &state.pool,
            new_payment(request.take().context("the canonical request")?),
            KeyClaim {
                key: &key,
                request_hash: &validated.fingerprint,
                body_hash: &body_hash,
                in_flight_for: settings.idempotency_stale_after,
                expires_at: key_expires_at,
                payee: Some(r.creditor().account()),
            },
        )
        .await?;
        match created {
            Creation::Created(created) => {
                break (Some(*created), id, if deferred.is_some() { 0 } else { 1 });
            }
            Creation::KeyTaken => {}
            // A merchant that pays registered accounts only: a stolen key cannot redirect
            // money (judged in the creating statement itself). A retry of an accepted
            // request (same key, same body) is answered by its record (a replay), not
            // judged again against today's payees; any other body is refused.
            Creation::PayeeNotRegistered => {
                if !idempotency::recorded(&state.pool, merchant.id, &key, &validated.fingerprint)
                    .await?
                {
                    tracing::warn!(
                        merchant_id = %merchant.id,
                        creditor = %r.creditor().account().masked(),
                        "payment to an account that is not a registered payee refused"
                    );
                    metrics::counter!("pisgate_payees_refused_total").increment(1);
                    return Err(ApiError::PayeeNotRegistered);
                }
            }
        }
        match claim_slow(
            &state,
            merchant.id,
            &key,
            &validated,
            &body_hash,
            (expires_at, sign_horizon_at),
            &oauth_state_hash,
        )
        .await?
        {
            SlowClaim::Proceed {
                payment_id,
                attempt,
                bank,
            } => {
                resumed_at = Some(bank);
                break (None, payment_id, attempt);
            }
            SlowClaim::Answer(response) => return Ok(response),
            SlowClaim::Retry if tries < 3 => {
                // The canonical request went with the last try: the next one makes it again.
                request = Some(validated.canonical_value()?);
                continue;
            }
            SlowClaim::Retry => {
                return Err(ApiError::Conflict(
                    "idempotency_key_in_flight",
                    "this Idempotency-Key is changing hands; retry shortly with the same key"
                        .into(),
                ));
            }
        }
    };
    if attempt <= 1 {
        metrics::counter!("pisgate_payments_created_total").increment(1);
    }
    // A resumed payment goes to the bank its row names, never to today's choice for the
    // request (the banks configured for its country may have changed since).
    let (bank_id, deferred) = match &resumed_at {
        Some(bank) => (bank.as_str(), None),
        None => (bank_id, deferred),
    };
    tracing::Span::current().record("payment_id", tracing::field::display(payment_id));
    tracing::Span::current().record("bank", bank_id);
    if deferred.is_some() {
        return answer_deferred(&state, merchant.id, &key, created, payment_id).await;
    }
    let initiation = match initiation {
        Some(built) if payment_id == id => built,
        // Another payment of this key resumed (the slow path): its own id.
        _ => validated.initiation(
            payment_id,
            &merchant.name,
            oauth_state,
            redirect_uri_for(&state, bank_id),
        ),
    };
    let budget = settings
        .initiation_budget()
        .saturating_sub(claimed_at.elapsed());
    // The bank call and the recording of its answer run to their end as a task of their
    // own: a request cut off midway (the deadline, the database gate, a client gone) never
    // leaves an answer the bank gave unrecorded (the key's retry then replays it).
    let work = call_and_record(
        state.clone(),
        CallAndRecord {
            bank: bank_id.to_owned(),
            initiation,
            budget,
            created,
            payment_id,
            attempt,
            merchant_id: merchant.id,
            key,
        },
    );
    let answer = state.finishing.run(crate::api::error::carried(work)).await;
    match answer {
        Ok(answer) => answer,
        Err(e) => Err(ApiError::Unavailable(format!(
            "{e}; retry with the same Idempotency-Key"
        ))),
    }
}

/// What [`call_and_record`] sends and records.
struct CallAndRecord {
    bank: String,
    initiation: crate::bank::PaymentInitiation,
    budget: std::time::Duration,
    /// The payment as this request's creation wrote it (`None`: a resumed one).
    created: Option<payments::Created>,
    payment_id: Uuid,
    attempt: i32,
    merchant_id: Uuid,
    key: String,
}

/// Sends the initiation and records the bank's answer and the key's: the creation's answer.
async fn call_and_record(state: AppState, c: CallAndRecord) -> Result<Response, ApiError> {
    let outcome = initiation::call_bank(&state, &c.bank, &c.initiation, c.budget).await;
    // An answer that contradicts the payment's terms takes the transactional path, which
    // records the contradiction with it (see [`initiation`]).
    if let (Some(created), Ok(initiated)) = (&c.created, &outcome)
        && initiated.echo_mismatch.is_empty()
        && let Some(body) = record_first_answer(&state, created, initiated, &c.key).await
    {
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
    let attempt = initiation::Attempt {
        payment_id: c.payment_id,
        attempt: c.attempt,
        bank: &c.bank,
        key: Some(initiation::KeyRef {
            merchant_id: c.merchant_id,
            key: &c.key,
        }),
    };
    let recorded = initiation::record_outcome(&state, attempt, &outcome).await;
    let (status, body) = match recorded {
        Ok(answer) => (answer.status, answer.body),
        Err(e) => {
            // The bank may hold the payment and we could not write it down: unknown. The key
            // stays in flight until its bound, then a retry with it resumes the payment.
            tracing::error!(
                error = format!("{e:#}"),
                "cannot record the bank's answer to the initiation"
            );
            return Err(if state.banks.client(&c.bank).traits().acts_without_hop {
                initiation::outcome_unknown_at(&c.bank)
            } else {
                initiation::outcome_unknown()
            });
        }
    };
    let mut response = (status, Json(body)).into_response();
    if !status.is_success() {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
    }
    Ok(response)
}

/// A deferred payment's creation answer (no bank call: the shopper's page starts it): the
/// payment with `initiation: awaiting_…` and its hop, recorded as the key's answer.
async fn answer_deferred(
    state: &AppState,
    merchant_id: Uuid,
    key: &str,
    created: Option<payments::Created>,
    payment_id: Uuid,
) -> Result<Response, ApiError> {
    let mut tx = state.pool.begin().await?;
    let record = match created {
        Some(c) => c.record,
        None => payments::get(&mut tx, payment_id)
            .await?
            .context("the payment of an idempotency key is gone")?,
    };
    let body = serde_json::to_value(view(state, &record)).context("view")?;
    idempotency::complete(&mut tx, merchant_id, key, 201, &body).await?;
    tx.commit().await?;
    tracing::info!(initiation = %record.initiation, "payment created; initiation waits for the shopper");
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A body today's validation refuses: replayed if its key already answered this same body
/// (it was valid when first sent), 422 `idempotency_key_reused` if the key holds another
/// body, the refusal otherwise.
async fn answered_or(
    state: &AppState,
    merchant_id: Uuid,
    key: &str,
    body_hash: &[u8],
    refused: ApiError,
) -> Result<Response, ApiError> {
    match idempotency::answered(&state.pool, merchant_id, key, body_hash).await? {
        Some(idempotency::Answered::Replay { status, body }) => Ok(replayed(status, body)),
        Some(idempotency::Answered::AnswerNotInLedger) => Err(answer_not_in_ledger()),
        Some(idempotency::Answered::Taken {
            same_body: false, ..
        }) => Err(ApiError::IdempotencyMismatch(
            "this Idempotency-Key was already used with a different request body".into(),
        )),
        Some(idempotency::Answered::Taken {
            same_body: true,
            in_flight,
            ..
        }) => Err(unresumable(in_flight, &refused)),
        None => Err(refused),
    }
}

/// An adapter's refusal at creation as the API's validation error: its paths in the API's
/// field names.
fn bank_refusal(e: crate::bank::BankError) -> ApiError {
    match e {
        crate::bank::BankError::Validation { failures } => ApiError::Validation(
            failures
                .into_iter()
                .map(|f| {
                    let field = match f.path.as_deref() {
                        Some("amount.currency") => "currency".to_owned(),
                        Some("creditor.reference.kind") => "creditor.reference.type".to_owned(),
                        Some(path) => path.to_owned(),
                        None => "bank".to_owned(),
                    };
                    let message = f
                        .description
                        .unwrap_or_else(|| "this bank cannot take it".to_owned());
                    FieldError::new(field, f.code, message)
                })
                .collect(),
        ),
        other => ApiError::Internal(anyhow::Error::new(other).context("the bank's own check")),
    }
}

/// A key whose stored answer fails its ledger MAC (idempotency::answer_holds logged and
/// counted it): a 500, never the edited answer, never a second payment.
fn answer_not_in_ledger() -> ApiError {
    ApiError::Internal(anyhow::anyhow!(
        "the stored answer of this Idempotency-Key fails its ledger MAC"
    ))
}

/// A retry of an accepted request (same key, same body, no answer yet) that today's rules
/// refuse: it is not a new request, so not a validation error; the payment exists.
fn unresumable(in_flight: bool, refused: &ApiError) -> ApiError {
    if in_flight {
        return ApiError::Conflict(
            "idempotency_key_in_flight",
            "a request with this Idempotency-Key is still running; retry shortly with the same key"
                .into(),
        );
    }
    let why = match refused {
        ApiError::Validation(errors) => errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    ApiError::Conflict(
        "idempotency_key_unresumable",
        format!(
            "a payment was created with this Idempotency-Key and its bank outcome is not known yet; today's rules refuse the request ({why}), so a retry cannot resume it: the payment is followed to the end the bank gives it (find it with GET /v1/payments, or wait for its webhook)"
        ),
    )
}

/// What the transactional claim of a key found: go on with the bank call, or an answer.
enum SlowClaim {
    /// A new attempt of the payment the key names, at the bank its row names (a payment
    /// resumed is never deferred; today's choice of bank for the request is not asked).
    Proceed {
        payment_id: Uuid,
        attempt: i32,
        bank: String,
    },
    Answer(Response),
    /// The key is free again: try the fast path once more.
    Retry,
}

/// The Retry-After of a key whose payment's earlier attempt may still be recording its
/// answer (see [`claim_slow`]).
const IN_FLIGHT_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// 409 `idempotency_key_in_flight` with a Retry-After of `retry_after` (at least a second).
fn key_in_flight(retry_after: std::time::Duration) -> Response {
    let mut response = ApiError::Conflict(
        "idempotency_key_in_flight",
        "a request with this Idempotency-Key is still being processed; retry shortly with the same key".into(),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// The key is already there (or the fast path could not take it): claim it in a
/// transaction that tells a replay, a request in flight, another body and an interrupted
/// request apart, as [`idempotency::claim`] documents.
async fn claim_slow(
    state: &AppState,
    merchant_id: Uuid,
    key: &str,
    validated: &Validated,
    body_hash: &[u8],
    (expires_at, sign_horizon_at): (chrono::DateTime<Utc>, chrono::DateTime<Utc>),
    oauth_state_hash: &[u8],
) -> Result<SlowClaim, ApiError> {
    let settings = &state.settings.payments;
    let mut tx = state.pool.begin().await?;
    let claim = idempotency::claim(
        &mut tx,
        merchant_id,
        key,
        &validated.fingerprint,
        body_hash,
        settings.idempotency_stale_after,
        settings.idempotency_retention,
    )
    .await?;
    let (payment_id, attempt, bank) = match claim {
        Claim::Replay { status, body, .. } => {
            tx.commit().await?;
            return Ok(SlowClaim::Answer(replayed(status, body)));
        }
        Claim::AnswerNotInLedger => return Err(answer_not_in_ledger()),
        Claim::InFlight { retry_after } => {
            drop(tx);
            return Ok(SlowClaim::Answer(key_in_flight(retry_after)));
        }
        Claim::Mismatch => {
            return Err(ApiError::IdempotencyMismatch(
                "this Idempotency-Key was already used with a different request body".into(),
            ));
        }
        Claim::New => {
            // The key expired or was purged since the fast path looked: nothing is kept of
            // this claim, and the fast path takes the key over.
            drop(tx);
            return Ok(SlowClaim::Retry);
        }
        Claim::Stale { payment_id } => {
            // The key's row names the payment to resume, and the call is built from this
            // request: only resume a payment of this merchant made from this very request,
            // whose row its ledger vouches for (the key's row carries no MAC while in flight:
            // an insider could point it at any payment).
            // (The canonical request moved into the fast path's claim: built again from the
            // validated request, as it was then.)
            let canonical = validated.canonical_value()?;
            let found = payments::get(&mut tx, payment_id).await?;
            let resumable = match &found {
                Some(p) => {
                    p.merchant_id == merchant_id
                        && crate::ledger::events::facts_match_ledger(&mut tx, p, &canonical).await?
                }
                None => false,
            };
            let Some(p) = found.filter(|_| resumable) else {
                metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
                return Err(anyhow::anyhow!(
                    "the idempotency key names a payment that is not this merchant's request as its ledger recorded it: nothing is sent to the bank (run `pisgate ledger verify`)"
                )
                .into());
            };
            // At a bank that may execute a payment nobody signed through pisgate's link (an
            // SCA exemption, a decoupled SCA pushed at initiation), the attempt whose answer
            // was lost may be live: a second one could pay twice. Nothing is sent.
            if p.answer_unrecorded() && state.banks.client(&p.bank).traits().acts_without_hop {
                // The earlier attempt may still be recording its answer (its key went stale
                // while its database write waited): that answer may yet come, so the retry is
                // told to come back, not that the payment cannot be resumed.
                if unresolved::standing(state, &mut tx, &p).await? == unresolved::Standing::InFlight
                {
                    drop(tx);
                    return Ok(SlowClaim::Answer(key_in_flight(IN_FLIGHT_RETRY_AFTER)));
                }
                tracing::warn!(%payment_id, bank = %p.bank, "a retry of a payment whose initiation answer was lost, at a bank that may execute it without the shopper: not initiated again");
                metrics::counter!("pisgate_initiations_not_resumed_total").increment(1);
                return Err(initiation::not_resumable(&p.bank));
            }
            match payments::begin_attempt(
                &mut tx,
                payment_id,
                oauth_state_hash,
                expires_at,
                sign_horizon_at,
            )
            .await?
            {
                Some(attempt) => {
                    tracing::warn!(%payment_id, attempt, "resuming a payment whose earlier attempt has no recorded answer");
                    (payment_id, attempt, p.bank)
                }
                None => {
                    // Its bank answer is recorded, or it is final: answer with it as it is.
                    let record = payments::get(&mut tx, payment_id)
                        .await?
                        .context("the payment of an idempotency key is gone")?;
                    let body = serde_json::to_value(view(state, &record)).context("view")?;
                    idempotency::complete(&mut tx, merchant_id, key, 201, &body).await?;
                    tx.commit().await?;
                    return Ok(SlowClaim::Answer(
                        (StatusCode::CREATED, Json(body)).into_response(),
                    ));
                }
            }
        }
    };
    tx.commit().await?;
    Ok(SlowClaim::Proceed {
        payment_id,
        attempt,
        bank,
    })
}

/// Where a new payment goes: a bank now, or the shopper's page first.
enum BankChoice {
    Bank(String),
    /// Initiation waits for the shopper: `bank` is the merchant's (or the country's only)
    /// bank that needs the shopper's IBAN, or [`payments::NO_BANK_YET`] when the shopper
    /// chooses among several.
    Deferred {
        bank: String,
        waiting: &'static str,
    },
}

pub const AWAITING_BANK_CHOICE: &str = "awaiting_bank_choice";
pub const AWAITING_DEBTOR_ACCOUNT: &str = "awaiting_debtor_account";
/// The bank needs the shopper's own token for every call (SEB): nothing is sent to it
/// before the shopper identifies on pisgate's BankID page ([`crate::api::bankid`]).
pub const AWAITING_SHOPPER_IDENTIFICATION: &str = "awaiting_shopper_identification";

/// The bank a new payment goes to: the one the merchant named (configured, serving the
/// debtor's country), else the country's only bank; with several and none named, the
/// shopper chooses on pisgate's page. A bank that needs the debtor's account the merchant
/// did not give waits for the shopper's IBAN on that page.
fn choose_bank(
    state: &AppState,
    r: &crate::domain::PaymentRequest,
) -> Result<BankChoice, ApiError> {
    let country = r.country();
    let refuse = |code: &'static str, message: String| {
        ApiError::Validation(vec![FieldError::new("bank", code, message)])
    };
    let entry = match r.bank() {
        Some(id) => {
            let Some(entry) = state.banks.get(id) else {
                return Err(refuse(
                    "unknown_bank",
                    format!("no bank {id:?} is configured: see GET /v1/banks"),
                ));
            };
            if !entry.countries.contains(&country) {
                return Err(refuse(
                    "bank_not_in_country",
                    format!("{} does not serve {}", entry.name, country.code()),
                ));
            }
            entry
        }
        None => match state.banks.for_country(country).as_slice() {
            [] => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "country",
                    "no_bank_for_country",
                    format!("no configured bank serves {}", country.code()),
                )]));
            }
            [only] => *only,
            _several => {
                return Ok(BankChoice::Deferred {
                    bank: payments::NO_BANK_YET.to_owned(),
                    waiting: AWAITING_BANK_CHOICE,
                });
            }
        },
    };
    if entry.client.traits().shopper_token_required {
        return Ok(BankChoice::Deferred {
            bank: entry.id.clone(),
            waiting: AWAITING_SHOPPER_IDENTIFICATION,
        });
    }
    if entry.client.traits().needs_debtor_account && r.debtor().is_none() {
        return Ok(BankChoice::Deferred {
            bank: entry.id.clone(),
            waiting: AWAITING_DEBTOR_ACCOUNT,
        });
    }
    Ok(BankChoice::Bank(entry.id.clone()))
}

/// The fast path of recording a new payment's bank answer (see
/// [`payments::record_first_answer`]): the answer's body, or `None` when the payment moved
/// since creation or the statement failed, and the transactional path must record it.
async fn record_first_answer(
    state: &AppState,
    created: &payments::Created,
    initiated: &crate::bank::Initiated,
    key: &str,
) -> Option<Value> {
    let mut answered = created.record.clone();
    answered.bank_payment_id = Some(initiated.bank_payment_id.as_str().to_owned());
    answered.authorization_url = initiated.authorization_url().map(str::to_owned);
    answered.bank_links = initiated.links.to_json();
    answered.bank_status = Some(initiated.status.bank_status.as_str().to_owned());
    answered.initiation = "initiated".into();
    // Strictly later than creation's, so the row's trigger keeps it.
    answered.updated_at = crate::ledger::events::now_micros()
        .max(created.record.updated_at + chrono::Duration::microseconds(1));
    // A bank that may act with nobody passing the hop (an SCA exemption, a decoupled SCA
    // pushed at initiation): as if the hop were opened now.
    answered.hop_opened_at = initiated
        .bank_may_act_without_hop()
        .then_some(answered.updated_at);
    let body = serde_json::to_value(view(state, &answered)).ok()?;
    let first_poll_at = answered.updated_at
        + chrono::Duration::from_std(state.settings.poller.signing_interval).ok()?;
    match payments::record_first_answer(&state.pool, created, &answered, first_poll_at, key, &body)
        .await
    {
        Ok(true) => Some(body),
        Ok(false) => None,
        Err(e) => {
            tracing::warn!(error = %e, "recording the initiation in one statement failed; retrying in a transaction");
            None
        }
    }
}

/// The merchant's payment; another merchant's id is simply not found.
async fn own_payment(
    state: &AppState,
    merchant_id: Uuid,
    id: Uuid,
) -> Result<PaymentRecord, ApiError> {
    payments::get_for_merchant(&state.pool, merchant_id, id)
        .await?
        .ok_or(ApiError::NotFound("payment"))
}

/// One payment
#[utoipa::path(
    get,
    path = "/v1/payments/{id}",
    operation_id = "getPayment",
    tag = "Payments",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The payment", body = PaymentView),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
    ),
)]
pub(crate) async fn get_payment(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Sorted<PaymentView>, ApiError> {
    let p = own_payment(&state, merchant.id, id).await?;
    Ok(Sorted(view(&state, &p)))
}

/// List payments, newest first
///
/// Newest first, cursor-paginated. Every filter is exact and all given must hold; each is served by an index. Each parameter at most once; an unknown one is a 422 naming it.
#[utoipa::path(
    get,
    path = "/v1/payments",
    operation_id = "listPayments",
    tag = "Payments",
    params(crate::api::pagination::PageParams, payment_search::SearchParams),
    responses(
        (status = 200, description = "A page", body = Page<PaymentView>),
        (status = 422, description = crate::api::openapi::INVALID),
    ),
)]
pub(crate) async fn list_payments(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Sorted<Page<PaymentView>>, ApiError> {
    let search = payment_search::parse(pairs)?;
    let rows = payments::list_for_merchant(
        state.reads.db(),
        merchant.id,
        &search.filter,
        search.limit + 1,
    )
    .await?;
    Ok(Sorted(page_with(
        rows,
        search.limit,
        |p| (p.created_at, p.id),
        |p| view(&state, p),
    )))
}

/// A payment's ledger, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LedgerEvents {
    data: Vec<events::StoredEvent>,
}

/// The payment's ledger: every transition and bank interaction, hash-chained
#[utoipa::path(
    get,
    path = "/v1/payments/{id}/events",
    operation_id = "listPaymentLedgerEvents",
    tag = "Payments",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Oldest first", body = inline(LedgerEvents)),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
    ),
)]
pub(crate) async fn payment_events(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<LedgerEvents>, ApiError> {
    own_payment(&state, merchant.id, id).await?;
    let data = events::list(&state.pool, id).await?;
    Ok(Json(LedgerEvents { data }))
}

/// The shopper's latest live token for a payment, or a clear error.
async fn shopper_token(
    state: &AppState,
    p: &PaymentRecord,
) -> Result<(String, tokens::LiveToken), ApiError> {
    let psu_key = p.psu_key.clone().ok_or_else(|| {
        ApiError::Conflict(
            "no_shopper_token",
            "the shopper has not come back from the bank yet, so there is no bank token for this payment".into(),
        )
    })?;
    let token = tokens::load(&state.pool, &state.cipher, &p.bank, &psu_key)
        .await
        .context("loading the shopper's token")?
        .ok_or_else(|| {
            ApiError::Conflict(
                "no_shopper_token",
                "the shopper's bank token is no longer valid (the bank issued a newer one, or it was refused); the bank needs the shopper again".into(),
            )
        })?;
    Ok((psu_key, token))
}

fn bank_ref(p: &PaymentRecord) -> Result<crate::bank::BankRef, ApiError> {
    p.bank_ref().ok_or_else(|| {
        ApiError::Conflict(
            "not_initiated",
            "the payment's creation at the bank is not confirmed yet".into(),
        )
    })
}

/// A bank error on a call made with the shopper's token.
async fn bearer_call_failed(
    state: &AppState,
    p: &PaymentRecord,
    psu_key: &str,
    issue_seq: i64,
    error: BankError,
) -> ApiError {
    if error == BankError::TokenRejected {
        if let Err(e) = tokens::mark_dead(
            &state.pool,
            &p.bank,
            psu_key,
            issue_seq,
            "rejected by the bank",
        )
        .await
        {
            tracing::error!(error = %e, "cannot mark the shopper's token dead");
        }
        return ApiError::Conflict(
            "no_shopper_token",
            "the bank no longer accepts the shopper's token (a newer one was issued, or it was revoked); the bank needs the shopper again".into(),
        );
    }
    tracing::warn!(error = %error, kind = error.kind(), "bank call failed");
    match error {
        BankError::NotFound => ApiError::NotFound("payment at the bank"),
        BankError::Validation { failures } => {
            ApiError::BankRejected(initiation::bank_failures(&failures))
        }
        _ => {
            ApiError::BankUnavailable("the bank did not answer as expected; try again later".into())
        }
    }
}

/// `POST /v1/payments/{id}/cancel`. The hop stops leading to the bank at once. Then:
/// - nobody has gone through the hop yet: nothing can be signed, the payment is `cancelled`;
/// - a shopper reached the bank's page but has not come back: `202`, the payment is
///   cancelled at the bank with the token of the callback if they sign anyway, or ends
///   `cancelled` once the bank says it can no longer be signed;
/// - the shopper has signed: the bank is asked to delete it with the shopper's token; if the
///   bank refuses because it already executed it, the payment is `paid` with a
///   `cancel_too_late` event and the answer is a `409 cancel_too_late`.
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/cancel",
    operation_id = "cancelPayment",
    tag = "Payments",
    summary = "Cancel a payment: at once if no shopper reached the bank, else at the bank",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Cancelled", body = PaymentView),
        (status = 202, description = "A shopper may be at the bank's page: the authorization_url no longer leads there, and the payment ends as the bank decides (cancelled, or paid with a cancel_too_late event)", body = PaymentView),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
        (status = 409, description = "payment_final, cancel_too_late (the bank had already executed it), no_shopper_token, not_initiated"),
        (status = 422, description = "The bank refused to delete it (its per-payment reasons in errors)"),
        (status = 502, description = "bank_unavailable: the bank did not answer as expected"),
    ),
)]
pub(crate) async fn cancel_payment(
    State(state): State<AppState>,
    FullKey(merchant, _): FullKey,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    own_payment(&state, merchant.id, id).await?;
    let acts_without_hop = |bank: &str| state.banks.client(bank).traits().acts_without_hop;
    let mut tx = state.pool.begin().await?;
    let start = payments::start_cancel(&mut tx, id, CancelBy::Merchant, &acts_without_hop)
        .await
        .map_err(|e| anyhow::anyhow!(e))?
        .ok_or(ApiError::NotFound("payment"))?;
    tx.commit().await?;
    match start {
        CancelStart::Final(p) => Err(ApiError::Conflict(
            "payment_final",
            format!("the payment is {} and can no longer be cancelled", p.status),
        )),
        CancelStart::Cancelled => {
            let p = own_payment(&state, merchant.id, id).await?;
            Ok(Sorted(view(&state, &p)).into_response())
        }
        CancelStart::BankDecides(p)
            if p.is_initiated() && !state.banks.client(&p.bank).traits().return_carries_code =>
        {
            // A bank that deletes on pisgate's own certificate: ask it now; it deletes a
            // payment nobody signed and refuses one that was signed (then its status rules).
            let p = cancel_at_bank(&state, &p).await?;
            let code = if p.status().is_final() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok((code, Sorted(view(&state, &p))).into_response())
        }
        CancelStart::BankDecides(_) => {
            let p = own_payment(&state, merchant.id, id).await?;
            Ok((StatusCode::ACCEPTED, Sorted(view(&state, &p))).into_response())
        }
        CancelStart::Signed(p)
            if state
                .banks
                .client(&p.bank)
                .traits()
                .submit_after_authorization =>
        {
            // A bank that executes a signed payment only on pisgate's submission: nothing
            // submitted yet means nothing will be (the submission is withheld).
            let deps = crate::api::submission::Deps {
                pool: &state.pool,
                cipher: &state.cipher,
                banks: &state.banks,
                settings: &state.settings,
                finishing: &state.finishing,
            };
            match crate::api::submission::withhold(deps, id).await? {
                "withheld" | "final" => {
                    let p = own_payment(&state, merchant.id, id).await?;
                    if p.status() == PaymentStatus::Cancelled {
                        Ok(Sorted(view(&state, &p)).into_response())
                    } else {
                        Err(ApiError::Conflict(
                            "payment_final",
                            format!("the payment is {} and can no longer be cancelled", p.status),
                        ))
                    }
                }
                "busy" => {
                    let p = own_payment(&state, merchant.id, id).await?;
                    Ok((StatusCode::ACCEPTED, Sorted(view(&state, &p))).into_response())
                }
                _ => {
                    let p = cancel_at_bank(&state, &p).await?;
                    Ok(Sorted(view(&state, &p)).into_response())
                }
            }
        }
        CancelStart::Signed(p) => {
            // Deleted at the bank: 200. Accepted there but not cancelled yet (a Berlin Group
            // or SEB 202 that wants the shopper's authorisation): 202, the bank decides.
            let p = cancel_at_bank(&state, &p).await?;
            let code = if p.status().is_final() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok((code, Sorted(view(&state, &p))).into_response())
        }
    }
}

/// Asks the bank to delete a payment and records the bank's answer: with the shopper's
/// token where the bank has shopper tokens (Nordea), else on pisgate's own certificate
/// (Berlin Group: the bank deletes only what it may, e.g. nothing signed yet). A refusal is
/// followed by a status read, so a payment the bank already executed ends `paid` (with a
/// `cancel_too_late` event) instead of staying in doubt. A cancellation the bank accepted
/// but wants the shopper to authorise (Berlin Group 202) changes nothing yet: the bank's
/// status decides.
pub async fn cancel_at_bank(
    state: &AppState,
    p: &PaymentRecord,
) -> Result<PaymentRecord, ApiError> {
    cancel_at_bank_by(state, p, payments::CancelBy::Merchant).await
}

/// [`cancel_at_bank`] for `by` (the shopper's cancel on the BankID page, at a bank whose
/// every call needs the shopper's token, deletes the payment the same way).
pub async fn cancel_at_bank_by(
    state: &AppState,
    p: &PaymentRecord,
    by: payments::CancelBy,
) -> Result<PaymentRecord, ApiError> {
    let id = p.id;
    let bank_ref = bank_ref(p)?;
    let bank_id = bank_ref.id.clone();
    let client = state.banks.client(&p.bank);
    let traits = client.traits();
    let tokenless = !traits.cancel_needs_shopper_token;
    let held = if tokenless {
        None
    } else {
        Some(shopper_token(state, p).await?)
    };
    let outcome = client
        .cancel(
            std::slice::from_ref(&bank_ref),
            held.as_ref().map(|(_, token)| &token.access_token),
            None,
        )
        .await;
    let outcome = match (outcome, &held) {
        (Ok(o), _) => o,
        (Err(e), Some((psu_key, token))) => {
            return Err(bearer_call_failed(state, p, psu_key, token.issue_seq, e).await);
        }
        (Err(e), None) => {
            tracing::warn!(error = %e, kind = e.kind(), "cancel at the bank failed");
            return Err(match e {
                BankError::NotFound => ApiError::NotFound("payment at the bank"),
                BankError::Validation { failures } => {
                    ApiError::BankRejected(initiation::bank_failures(&failures))
                }
                _ => ApiError::BankUnavailable(
                    "the bank did not answer as expected; try again later".into(),
                ),
            });
        }
    };
    if outcome.needs_authorisation.contains(&bank_id) {
        let mut tx = state.pool.begin().await?;
        payments::note(
            &mut tx,
            id,
            "cancel_needs_authorisation",
            json!({ "by": by.as_str() }),
        )
        .await?;
        tx.commit().await?;
        return payments::get(&mut *state.pool.read_conn().await?, id)
            .await?
            .ok_or(ApiError::NotFound("payment"));
    }
    let deleted = outcome.deleted.iter().any(|d| d == &bank_id);
    if deleted {
        let mut tx = state.pool.begin().await?;
        payments::transition(
            &mut tx,
            id,
            Change {
                evidence: Evidence::Bank(PaymentStatus::Cancelled),
                bank_status: Some(traits.deleted_status),
                kind: "cancelled",
                detail: json!({ "by": by.as_str(), "deleted_at_bank": true }),
                failure: Some(match by {
                    payments::CancelBy::Merchant => (
                        "cancelled_by_merchant",
                        "cancelled by the merchant at the bank",
                    ),
                    payments::CancelBy::Shopper => (
                        "cancelled_by_shopper",
                        "cancelled by the shopper, deleted at the bank",
                    ),
                }),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        tx.commit().await?;
        return payments::get(&mut *state.pool.read_conn().await?, id)
            .await?
            .ok_or(ApiError::NotFound("payment"));
    }
    let bank_errors: Vec<Value> = outcome
        .errors
        .iter()
        .map(|e| json!({ "bank_payment_id": e.bank_payment_id, "code": e.code, "description": e.description }))
        .collect();
    // The bank said no: find out why from its own status.
    let report = client
        .status_with_token(
            &bank_ref,
            held.as_ref().map(|(_, token)| &token.access_token),
            None,
        )
        .await
        .ok();
    let mut tx = state.pool.begin().await?;
    payments::note(
        &mut tx,
        id,
        "cancel_refused",
        json!({ "errors": bank_errors }),
    )
    .await?;
    if let Some(report) = &report {
        payments::apply_bank_report(
            &mut tx,
            id,
            &report.bank_status,
            report.status,
            json!({ "source": "cancel" }),
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    }
    let now = payments::get(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound("payment"))?;
    let too_late = now.status() == PaymentStatus::Paid;
    if too_late {
        payments::note(
            &mut tx,
            id,
            "cancel_too_late",
            json!({ "bank_status": now.bank_status }),
        )
        .await?;
    }
    tx.commit().await?;
    if too_late || now.status().is_final() {
        return Err(ApiError::Conflict(
            if too_late {
                "cancel_too_late"
            } else {
                "payment_final"
            },
            format!(
                "the bank had already {} the payment; it can no longer be cancelled",
                if too_late { "executed" } else { "finished" }
            ),
        ));
    }
    Err(ApiError::BankRejected(
        outcome
            .errors
            .iter()
            .map(|e| {
                FieldError::new(
                    "payment",
                    e.code.clone().unwrap_or_else(|| "not_deletable".into()),
                    e.description
                        .clone()
                        .unwrap_or_else(|| "the bank refused to cancel this payment".into()),
                )
            })
            .collect(),
    ))
}

/// The bank's answer to an availability-of-funds check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Funds {
    payment_id: Uuid,
    /// `null`: the bank did not say
    #[schema(required = true)]
    available: Option<bool>,
    bank_status: String,
    checked_at: chrono::DateTime<Utc>,
}

/// The bank's availability-of-funds check (v3)
#[utoipa::path(
    get,
    path = "/v1/payments/{id}/funds",
    operation_id = "checkPaymentFunds",
    tag = "Payments",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The bank's answer", body = inline(Funds)),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
        (status = 409, description = "no_shopper_token (the bank needs the shopper again), or not_initiated"),
        (status = 502, description = "bank_unavailable: the bank did not answer as expected"),
    ),
)]
pub(crate) async fn payment_funds(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Funds>, ApiError> {
    let p = own_payment(&state, merchant.id, id).await?;
    let bank_id = bank_ref(&p)?.id;
    let (psu_key, token) = shopper_token(&state, &p).await?;
    match state
        .banks
        .client(&p.bank)
        .funds(&bank_id, &token.access_token, None)
        .await
    {
        Ok(funds) => Ok(Json(Funds {
            payment_id: p.id,
            available: funds.available,
            bank_status: funds.details.status.bank_status,
            checked_at: Utc::now(),
        })),
        Err(e) => Err(bearer_call_failed(&state, &p, &psu_key, token.issue_seq, e).await),
    }
}
