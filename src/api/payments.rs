//! Payments: `POST /v1/payments`, `GET /v1/payments`, `GET /v1/payments/{id}`,
//! `GET /v1/payments/{id}/events`, `POST /v1/payments/{id}/cancel`,
//! `GET /v1/payments/{id}/funds`.
//!
//! Creation follows design.md's order and never holds a transaction across the bank call:
//! validate → insert the payment and the idempotency record and commit → initiate at the bank
//! → record the answer and the idempotent response and commit → answer. Before the shopper
//! opens the signing URL nothing exists at the bank, so a failed initiation is safely final
//! (`failed`), and a retry with the same key replays that answer.

use crate::api::AppState;
use crate::api::auth::AuthedMerchant;
use crate::api::error::{ApiError, FieldError};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::payment_input::{self, Validated};
use crate::bank::{BankError, BankPaymentId};
use crate::domain::PaymentStatus;
use crate::ledger::idempotency::{self, Claim};
use crate::ledger::payments::{self, Change, ListFilter, NewPayment, PaymentRecord};
use crate::ledger::{events, tokens};
use anyhow::Context as _;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
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

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let missing = || {
        ApiError::Validation(vec![FieldError::new(
            "Idempotency-Key",
            "required",
            "send an Idempotency-Key header (e.g. a UUID) so a retry never creates a second payment",
        )])
    };
    let value = headers.get(IDEMPOTENCY_HEADER).ok_or_else(missing)?;
    let key = value.to_str().map_err(|_| missing())?.trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "Idempotency-Key",
            "invalid",
            "must be 1 to 255 printable ASCII characters",
        )]));
    }
    Ok(key.to_owned())
}

/// A random, URL-safe OAuth state (256 bits) and the hash we keep of it.
fn new_state() -> (String, [u8; 32]) {
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

#[tracing::instrument(skip_all, fields(merchant_id = %merchant.id, payment_id = tracing::field::Empty))]
async fn create_payment(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let today = Utc::now().date_naive();
    let validated: Validated =
        payment_input::validate(&body, &merchant, today, state.settings.nordea.environment)?;
    let r = &validated.request;

    let (oauth_state, oauth_state_hash) = new_state();
    let state_expires_at = Utc::now()
        + chrono::Duration::from_std(state.settings.payments.signing_window).context("window")?;

    let mut tx = state.pool.begin().await?;
    let claim = idempotency::claim(
        &mut tx,
        merchant.id,
        &key,
        &validated.fingerprint,
        state.settings.payments.idempotency_stale_after,
    )
    .await?;
    let payment_id = match claim {
        Claim::Replay { status, body, .. } => {
            tx.commit().await?;
            return Ok(replayed(status, body));
        }
        Claim::InFlight => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still being processed; retry shortly"
                    .into(),
            ));
        }
        Claim::Mismatch => {
            return Err(ApiError::IdempotencyMismatch(
                "this Idempotency-Key was already used with a different request body".into(),
            ));
        }
        Claim::New => {
            let id = Uuid::now_v7();
            payments::insert(
                &mut tx,
                NewPayment {
                    id,
                    merchant_id: merchant.id,
                    amount_minor: r.amount().minor(),
                    currency: r.currency().code(),
                    country: r.country().code(),
                    request: validated.canonical.clone(),
                    merchant_reference: r.merchant_reference(),
                    psu_id: r.psu_id(),
                    return_url: &r.return_url().as_string(),
                    metadata: Value::Object(r.metadata().cloned().unwrap_or_default()),
                    state_hash: &oauth_state_hash,
                    state_expires_at,
                },
            )
            .await?;
            idempotency::attach_payment(&mut tx, merchant.id, &key, id).await?;
            id
        }
        Claim::Stale { payment_id } => {
            // The replica that held this key died before answering: resume its payment
            // with a fresh state (the old one never reached anybody).
            tracing::warn!(%payment_id, "resuming a payment whose first request was interrupted");
            payments::replace_state(&mut tx, payment_id, &oauth_state_hash, state_expires_at)
                .await?;
            payments::note(&mut tx, payment_id, "initiation_resumed", json!({})).await?;
            payment_id
        }
    };
    tx.commit().await?;
    tracing::Span::current().record("payment_id", tracing::field::display(payment_id));

    let initiation = validated.initiation(
        payment_id,
        &merchant.name,
        oauth_state,
        callback_url(&state),
    );
    let outcome = state.bank.initiate(&initiation, None).await;

    let mut tx = state.pool.begin().await?;
    let (status, body) = match outcome {
        Ok(initiated) => {
            payments::record_initiated(
                &mut tx,
                payment_id,
                initiated.bank_payment_id.as_str(),
                &initiated.authorization_url,
                Some(initiated.status.bank_status.as_str()),
            )
            .await?;
            let record = payments::get(&mut tx, payment_id)
                .await?
                .context("the payment just written is gone")?;
            (
                StatusCode::CREATED,
                serde_json::to_value(PaymentView::from(&record)).context("view")?,
            )
        }
        Err(error) => {
            let (code, api_error) = initiation_failure(&error);
            tracing::warn!(error = %error, kind = error.kind(), "initiation failed at the bank");
            payments::transition(
                &mut tx,
                payment_id,
                Change {
                    to: PaymentStatus::Failed,
                    bank_status: None,
                    kind: "initiation_failed",
                    detail: json!({ "error": error.kind(), "detail": error.to_string() }),
                    failure: Some((code, &error.to_string())),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
            let problem = serde_json::to_value(api_error.problem()).context("problem")?;
            (api_error.status(), problem)
        }
    };
    idempotency::complete(&mut tx, merchant.id, &key, status.as_u16(), &body).await?;
    tx.commit().await?;
    let mut response = (status, Json(body)).into_response();
    if !status.is_success() {
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
    }
    Ok(response)
}

/// What the merchant is told when the bank refused or failed the initiation, and the
/// failure code kept on the payment.
fn initiation_failure(error: &BankError) -> (&'static str, ApiError) {
    match error {
        BankError::Validation { failures } => (
            "bank_rejected",
            ApiError::BankRejected(bank_failures(failures)),
        ),
        BankError::BadCredentials { .. } | BankError::BadSignature { .. } => (
            "bank_configuration_error",
            ApiError::BankUnavailable(
                "the bank refused our credentials; this is on our side and has been logged".into(),
            ),
        ),
        BankError::RateLimited { .. } | BankError::Unavailable { .. } => (
            "bank_unavailable",
            ApiError::BankUnavailable(
                "the bank is not answering; the payment was not created, retry with a new Idempotency-Key".into(),
            ),
        ),
        _ => (
            "bank_error",
            ApiError::BankUnavailable(
                "the bank gave an unexpected answer; the payment was not created".into(),
            ),
        ),
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

/// The bank's reasons for refusing, as field errors for the merchant.
fn bank_failures(failures: &[crate::bank::BankFailure]) -> Vec<FieldError> {
    failures
        .iter()
        .map(|f| {
            FieldError::new(
                f.path.clone().unwrap_or_else(|| "payment".into()),
                f.code.clone(),
                f.description.clone().unwrap_or_else(|| f.code.clone()),
            )
        })
        .collect()
}

async fn get_payment(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<PaymentView>, ApiError> {
    let p = own_payment(&state, merchant.id, id).await?;
    Ok(Json(PaymentView::from(&p)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    created_gte: Option<DateTime<Utc>>,
    created_lt: Option<DateTime<Utc>>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct PaymentList {
    data: Vec<PaymentView>,
    has_more: bool,
    next_cursor: Option<String>,
}

fn encode_cursor(p: &PaymentRecord) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        p.created_at.to_rfc3339(),
        p.id
    ))
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (ts, id) = text.split_once('|')?;
    Some((
        DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc),
        id.parse().ok()?,
    ))
}

async fn list_payments(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<PaymentList>, ApiError> {
    let mut errors = Vec::new();
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        errors.push(FieldError::new("limit", "out_of_range", "must be 1 to 100"));
    }
    if let Some(s) = &q.status
        && PaymentStatus::parse(s).is_none()
    {
        errors.push(FieldError::new(
            "status",
            "invalid",
            format!(
                "must be one of {}",
                PaymentStatus::ALL.map(|s| s.as_str()).join(", ")
            ),
        ));
    }
    let after = match &q.cursor {
        Some(c) => match decode_cursor(c) {
            Some(a) => Some(a),
            None => {
                errors.push(FieldError::new(
                    "cursor",
                    "invalid",
                    "not a cursor this API gave",
                ));
                None
            }
        },
        None => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let filter = ListFilter {
        status: q.status,
        created_gte: q.created_gte,
        created_lt: q.created_lt,
        after,
    };
    let mut rows =
        payments::list_for_merchant(&state.pool, merchant.id, &filter, limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if has_more {
        rows.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Json(PaymentList {
        data: rows.iter().map(PaymentView::from).collect(),
        has_more,
        next_cursor,
    }))
}

async fn payment_events(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    own_payment(&state, merchant.id, id).await?;
    let events = events::list(&state.pool, id).await?;
    Ok(Json(json!({ "data": events })))
}

/// The shopper's latest live token for a payment, or a clear error.
async fn shopper_token(
    state: &AppState,
    p: &PaymentRecord,
) -> Result<(String, tokens::LiveToken), ApiError> {
    let psu_key = p.psu_key.clone().ok_or_else(|| {
        ApiError::Conflict(
            "the shopper has not come back from the bank yet, so there is no bank token for this payment".into(),
        )
    })?;
    let token = tokens::load(&state.pool, &state.cipher, &p.bank, &psu_key)
        .await
        .context("loading the shopper's token")?
        .ok_or_else(|| {
            ApiError::Conflict(
                "the shopper's bank token is no longer valid; the bank needs the shopper again"
                    .into(),
            )
        })?;
    Ok((psu_key, token))
}

fn bank_payment_id(p: &PaymentRecord) -> Result<BankPaymentId, ApiError> {
    p.bank_payment_id
        .as_deref()
        .and_then(BankPaymentId::parse)
        .ok_or_else(|| ApiError::Conflict("the payment was never created at the bank".into()))
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
            "the bank no longer accepts the shopper's token; the bank needs the shopper again"
                .into(),
        );
    }
    tracing::warn!(error = %error, kind = error.kind(), "bank call failed");
    match error {
        BankError::NotFound => ApiError::NotFound("payment at the bank"),
        BankError::Validation { failures } => ApiError::BankRejected(bank_failures(&failures)),
        _ => {
            ApiError::BankUnavailable("the bank did not answer as expected; try again later".into())
        }
    }
}

async fn cancel_payment(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let p = own_payment(&state, merchant.id, id).await?;
    if p.status().is_final() {
        return Err(ApiError::Conflict(format!(
            "the payment is {} and can no longer be cancelled",
            p.status
        )));
    }
    let bank_id = bank_payment_id(&p)?;
    let (psu_key, token) = shopper_token(&state, &p).await?;
    {
        let mut tx = state.pool.begin().await?;
        payments::note(&mut tx, id, "cancel_requested", json!({})).await?;
        tx.commit().await?;
    }
    let outcome = state
        .bank
        .cancel(std::slice::from_ref(&bank_id), &token.access_token, None)
        .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Err(bearer_call_failed(&state, &p, &psu_key, token.issue_seq, e).await),
    };
    let deleted = outcome.deleted.iter().any(|d| d == &bank_id);
    let bank_errors: Vec<Value> = outcome
        .errors
        .iter()
        .map(|e| json!({ "bank_payment_id": e.bank_payment_id, "code": e.code, "description": e.description }))
        .collect();
    let mut tx = state.pool.begin().await?;
    if deleted {
        payments::transition(
            &mut tx,
            id,
            Change {
                to: PaymentStatus::Cancelled,
                bank_status: Some("Cancelled"),
                kind: "cancelled",
                detail: json!({ "by": "merchant" }),
                failure: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    } else {
        payments::note(
            &mut tx,
            id,
            "cancel_refused",
            json!({ "errors": bank_errors }),
        )
        .await?;
    }
    tx.commit().await?;
    if !deleted {
        return Err(ApiError::BankRejected(
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
        ));
    }
    let p = own_payment(&state, merchant.id, id).await?;
    Ok(Json(
        serde_json::to_value(PaymentView::from(&p)).context("view")?,
    ))
}

async fn payment_funds(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let p = own_payment(&state, merchant.id, id).await?;
    let bank_id = bank_payment_id(&p)?;
    let (psu_key, token) = shopper_token(&state, &p).await?;
    match state.bank.funds(&bank_id, &token.access_token, None).await {
        Ok(funds) => Ok(Json(json!({
            "payment_id": p.id,
            "available": funds.available,
            "bank_status": funds.details.status.bank_status,
            "checked_at": Utc::now(),
        }))),
        Err(e) => Err(bearer_call_failed(&state, &p, &psu_key, token.issue_seq, e).await),
    }
}
