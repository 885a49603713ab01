//! Merchant authentication (`Authorization: Bearer <api key>`) and per-merchant rate limits.
//!
//! The key is never logged; the span gets the merchant id once the key is accepted.

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::ledger::merchants::{self, Merchant};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The authenticated merchant of the request. Handlers under `/v1` take it as an argument.
#[derive(Debug, Clone)]
pub struct AuthedMerchant(pub Merchant);

impl<S: Send + Sync> FromRequestParts<S> for AuthedMerchant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthedMerchant>()
            .cloned()
            .ok_or(ApiError::Unauthenticated("authentication is required"))
    }
}

fn bearer(request: &Request) -> Result<&str, ApiError> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthenticated(
            "send your API key as Authorization: Bearer <api key>",
        ))?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("the Authorization header is not valid text"))?;
    let (scheme, key) = value.split_once(' ').ok_or(ApiError::Unauthenticated(
        "expected Authorization: Bearer <api key>",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(ApiError::Unauthenticated(
            "expected Authorization: Bearer <api key>",
        ));
    }
    Ok(key.trim())
}

pub async fn require_merchant(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = bearer(&request)?;
    let merchant = merchants::authenticate(&state.pool, key)
        .await?
        .ok_or(ApiError::Unauthenticated("the API key is not valid"))?;
    if !merchant.is_active() {
        return Err(ApiError::MerchantDisabled);
    }
    tracing::Span::current().record("merchant_id", tracing::field::display(merchant.id));

    let decision = state.rate_limiter.check(merchant.id);
    if !decision.allowed {
        let mut response = ApiError::RateLimited {
            retry_after_secs: decision.reset_after_secs.max(1),
        }
        .into_response();
        decision.apply(response.headers_mut());
        return Ok(response);
    }
    request.extensions_mut().insert(AuthedMerchant(merchant));
    let mut response = next.run(request).await;
    decision.apply(response.headers_mut());
    Ok(response)
}
