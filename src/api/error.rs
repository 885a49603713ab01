//! The one error type of the HTTP edge and its RFC 9457 `application/problem+json` body.
//!
//! Every answer that is not a success goes through [`ApiError`]: handler failures, axum's
//! own rejections (through the extractors in `extract.rs`) and the router's 404/405 (through
//! [`problem_for_bare_errors`]). A 5xx says only that something failed and which request it
//! was; the whole cause chain goes to the log under the same `request_id`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware so that error
    /// bodies can name it without every handler passing it along.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// `work` carrying the current request's id and tracing span, for a task of its own (a
/// bank call that must outlive its request: its problem bodies and logs still name it).
pub fn carried<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    use tracing::Instrument;
    let id = current_request_id();
    let work = work.instrument(tracing::Span::current());
    async move {
        match id {
            Some(id) => REQUEST_ID.scope(id, work).await,
            None => work.await,
        }
    }
}

/// One violated field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    pub message: String,
}

impl FieldError {
    pub fn new(
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("this merchant is disabled")]
    MerchantDisabled,
    /// 403: the key was rotated away and is in its grace period; it may create and read
    /// payments, nothing else.
    #[error(
        "this API key was rotated away and is in its grace period: it may create and read payments only; use the merchant's current key"
    )]
    KeyInGrace,
    /// 422: the merchant pays registered accounts only and this creditor is not one.
    #[error("the creditor account is not one of the merchant's registered payees")]
    PayeeNotRegistered,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("no route for {0}")]
    UnknownRoute(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 with its own stable code (`payment_final`, `no_shopper_token`,
    /// `idempotency_key_in_flight`, `cancel_too_late`, ...).
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("{0}")]
    IdempotencyMismatch(String),
    #[error("the request body is larger than the limit")]
    PayloadTooLarge,
    #[error("unsupported content type: {0}")]
    UnsupportedMediaType(String),
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("the service is not ready: {0}")]
    Unavailable(String),
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable,
    #[error(
        "the request did not finish within the server's deadline; retry it (with the same Idempotency-Key for a payment)"
    )]
    DeadlineExceeded,
    #[error("the bank refused the request")]
    BankRejected(Vec<FieldError>),
    #[error("{0}")]
    BankUnavailable(String),
    /// The bank may or may not have created the payment: retry with the same key.
    #[error("{0}")]
    InitiationOutcomeUnknown(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::ledger::health::is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            return ApiError::DatabaseUnavailable;
        }
        ApiError::Internal(anyhow::Error::new(e).context("database error"))
    }
}

impl From<crate::ledger::api_keys::ManageError> for ApiError {
    fn from(e: crate::ledger::api_keys::ManageError) -> Self {
        use crate::ledger::api_keys::ManageError;
        match e {
            ManageError::KeyNoLongerFull => {
                tracing::warn!(
                    "a change by a key that was rotated away or revoked while the request was in flight refused"
                );
                metrics::counter!("pisgate_key_in_grace_refused_total").increment(1);
                ApiError::KeyInGrace
            }
            ManageError::Db(e) => e.into(),
        }
    }
}

/// The body of every error answer (RFC 9457).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    #[schema(value_type = String)]
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// A stable machine code. `key_in_grace` (403): the API key was rotated away and may only create and read payments until its grace ends. `payee_not_registered` (422, field `creditor.account`): the merchant pays registered accounts only. Each 409 names its reason in `code`: `idempotency_key_in_flight` (with Retry-After), `initiation_not_resumable` (the bank's answer was lost at a bank that may execute a payment without the shopper: no second initiation is sent), `payment_final`, `no_shopper_token`, `not_initiated`, `cancel_too_late`, `too_many_endpoints`, `endpoint_deleted`, `endpoint_not_enabled`, `delivery_pending`. `initiation_outcome_unknown` (502): the bank's answer to a payment creation was lost or unreadable; retry with the same Idempotency-Key to resume it.
    #[schema(value_type = String)]
    pub code: &'static str,
    /// The request's id, as in the `X-Request-Id` header
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = true)]
    pub request_id: Option<String>,
    /// One entry per violated field (422).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(inline)]
    pub errors: Vec<FieldError>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_)
            | ApiError::IdempotencyMismatch(_)
            | ApiError::BankRejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthenticated(_) | ApiError::MerchantDisabled => StatusCode::UNAUTHORIZED,
            ApiError::KeyInGrace => StatusCode::FORBIDDEN,
            ApiError::PayeeNotRegistered => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) | ApiError::UnknownRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_)
            | ApiError::DatabaseUnavailable
            | ApiError::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BankUnavailable(_) | ApiError::InitiationOutcomeUnknown(_) => {
                StatusCode::BAD_GATEWAY
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code; clients switch on this, never on `detail`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::MerchantDisabled => "merchant_disabled",
            ApiError::KeyInGrace => "key_in_grace",
            ApiError::PayeeNotRegistered => "payee_not_registered",
            ApiError::NotFound(_) => "not_found",
            ApiError::UnknownRoute(_) => "route_not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(code, _) => code,
            ApiError::IdempotencyMismatch(_) => "idempotency_key_reused",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "service_unavailable",
            ApiError::DatabaseUnavailable => "database_unavailable",
            ApiError::DeadlineExceeded => "deadline_exceeded",
            ApiError::BankRejected(_) => "bank_rejected",
            ApiError::BankUnavailable(_) => "bank_unavailable",
            ApiError::InitiationOutcomeUnknown(_) => "initiation_outcome_unknown",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "Malformed JSON",
            ApiError::BadRequest(_) => "Bad request",
            ApiError::Validation(_) => "Validation failed",
            ApiError::Unauthenticated(_) | ApiError::MerchantDisabled => "Unauthenticated",
            ApiError::KeyInGrace => "Key in grace period",
            ApiError::PayeeNotRegistered => "Payee not registered",
            ApiError::NotFound(_) | ApiError::UnknownRoute(_) => "Not found",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::Conflict(..) => "Conflict",
            ApiError::IdempotencyMismatch(_) => "Idempotency key reused",
            ApiError::PayloadTooLarge => "Payload too large",
            ApiError::UnsupportedMediaType(_) => "Unsupported media type",
            ApiError::RateLimited { .. } => "Too many requests",
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::DatabaseUnavailable => "Database unavailable",
            ApiError::DeadlineExceeded => "Deadline exceeded",
            ApiError::BankRejected(_) => "Refused by the bank",
            ApiError::BankUnavailable(_) => "Bank unavailable",
            ApiError::InitiationOutcomeUnknown(_) => "Initiation outcome unknown",
            ApiError::Internal(_) => "Internal server error",
        }
    }

    pub fn problem(&self) -> Problem {
        let detail = match self {
            // Never tell the client what broke inside; the log has it.
            ApiError::Internal(_) => {
                "Something went wrong on our side. Quote the request_id if you contact us."
                    .to_owned()
            }
            ApiError::BankRejected(errors) => format!(
                "The bank refused the request ({} reason{}); see errors.",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            ),
            ApiError::Validation(errors) => format!(
                "The request has {} invalid field{}; see errors.",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            ),
            other => other.to_string(),
        };
        let code = self.code();
        Problem {
            type_: crate::api::error_pages::type_uri(code),
            title: self.title(),
            status: self.status().as_u16(),
            detail,
            code,
            request_id: current_request_id(),
            errors: match self {
                ApiError::Validation(errors) | ApiError::BankRejected(errors) => errors.clone(),
                ApiError::PayeeNotRegistered => vec![FieldError::new(
                    "creditor.account",
                    "payee_not_registered",
                    "this merchant may only pay accounts an operator registered for it",
                )],
                _ => Vec::new(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = match self {
            // A known outage, however deep it surfaced: never a 500.
            ApiError::Internal(e) if crate::ledger::health::chain_is_unavailable(&e) => {
                tracing::warn!(error = format!("{e:#}"), "database unavailable");
                ApiError::DatabaseUnavailable
            }
            other => other,
        };
        if let ApiError::Internal(e) = &this {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let mut response = problem_response(this.status(), this.problem());
        let retry_after = match this {
            ApiError::RateLimited { retry_after_secs } => Some(retry_after_secs),
            ApiError::DatabaseUnavailable | ApiError::DeadlineExceeded => Some(1),
            _ => None,
        };
        if this.status() == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1 / RFC 6750 §3: the scheme to authenticate with.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pisgate\""),
            );
        }
        if matches!(this, ApiError::DatabaseUnavailable) {
            response
                .extensions_mut()
                .insert(crate::api::middleware::DatabaseUnreachable);
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn problem_response(status: StatusCode, mut problem: Problem) -> Response {
    problem.status = status.as_u16();
    let mut response = (status, Json(problem)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// Middleware: turns a bare error answer (axum's empty 405, a body-limit 413 from a layer,
/// a timeout 408, a caught panic) into problem+json, so no client ever sees plain text.
pub async fn problem_for_bare_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Shares the request's bytes; the path is copied only for a 404.
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Only bare answers: no body type at all, or axum's plain-text rejections. Our own
    // problems and deliberate pages (the shopper's HTML error page) pass through.
    let bare = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|ct| ct.as_bytes().starts_with(b"text/plain"));
    if !bare {
        return response;
    }
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::NOT_FOUND => ApiError::UnknownRoute(uri.path().to_owned()),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::REQUEST_TIMEOUT => ApiError::DeadlineExceeded,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("expected application/json".into())
        }
        s if s.is_server_error() => ApiError::Internal(anyhow::anyhow!("bare {s} answer")),
        s => ApiError::BadRequest(s.canonical_reason().unwrap_or("bad request").to_owned()),
    };
    if let ApiError::Internal(e) = &error {
        tracing::error!(error = %e, "request failed");
    }
    // Keep the original status (e.g. 408) and headers such as `Allow`.
    let mut problem = problem_response(status, error.problem());
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().entry(name).or_insert(value.clone());
        }
    }
    problem
}
