//! The calling merchant's own profile: `GET /v1/merchant` and `PATCH /v1/merchant` (the
//! origins that payment return URLs may point to).
//!
//! A key in its rotation grace may read the profile but not change it (403 `key_in_grace`):
//! a leaked key that was rotated away must not point shoppers' return trips elsewhere.

use crate::api::AppState;
use crate::api::auth::{AuthedMerchant, FullKey};
use crate::api::error::{ApiError, FieldError};
use crate::api::extract::ApiJson;
use crate::ledger::merchants::{self, Merchant};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/merchant", get(get_merchant).patch(update_merchant))
}

/// The calling merchant
#[utoipa::path(
    get,
    path = "/v1/merchant",
    operation_id = "getMerchant",
    tag = "Merchant",
    responses((status = 200, description = "The merchant", body = Merchant)),
)]
pub(crate) async fn get_merchant(AuthedMerchant(merchant): AuthedMerchant) -> Json<Merchant> {
    Json(merchant)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateMerchant {
    #[schema(nullable = false, max_items = 20, examples("https://shop.example"))]
    return_origins: Option<Vec<String>>,
}

const MAX_ORIGINS: usize = 20;

/// Change the origins payment return URLs may use
#[utoipa::path(
    patch,
    path = "/v1/merchant",
    operation_id = "updateMerchant",
    tag = "Merchant",
    request_body = inline(UpdateMerchant),
    responses(
        (status = 200, description = "The merchant", body = Merchant),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
        (status = 422, description = crate::api::openapi::INVALID),
    ),
)]
pub(crate) async fn update_merchant(
    State(state): State<AppState>,
    FullKey(merchant, by_key): FullKey,
    ApiJson(update): ApiJson<UpdateMerchant>,
) -> Result<Json<Merchant>, ApiError> {
    let Some(origins) = update.return_origins else {
        return Ok(Json(merchant));
    };
    let mut errors = Vec::new();
    if origins.len() > MAX_ORIGINS {
        errors.push(FieldError::new(
            "return_origins",
            "too_many",
            format!("at most {MAX_ORIGINS} origins"),
        ));
    }
    let mut normalized = Vec::with_capacity(origins.len());
    for (i, o) in origins.iter().enumerate() {
        match merchants::normalize_origin(o) {
            Ok(n) if !normalized.contains(&n) => normalized.push(n),
            Ok(_) => {}
            Err(e) => errors.push(FieldError::new(
                format!("return_origins[{i}]"),
                "invalid_origin",
                e,
            )),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let updated = merchants::set_return_origins(
        &state.pool,
        crate::ledger::api_keys::Manager {
            merchant_id: merchant.id,
            key_id: &by_key,
        },
        &normalized,
    )
    .await?
    .ok_or(ApiError::NotFound("merchant"))?;
    // Other replicas forget the cached merchant when the notification arrives; this one now.
    state.auth_cache.clear();
    Ok(Json(updated))
}
