//! The merchant's API keys: `GET/POST /v1/api-keys`, `DELETE /v1/api-keys/{id}`.
//!
//! Decisions:
//! - A key's `id` is its public key id, and `prefix` (`pgk_<id>`) is how it starts, so a
//!   merchant can tell which key a log or a config holds without the secret. The full key is
//!   in the creation answer only; no other answer and no log line carries it.
//! - `name` (1 to 100 characters) and `expires_at` (in the future) are optional; an expired
//!   key is refused like an unknown one and is listed as `expired` for 30 days.
//! - At most [`MAX_ACTIVE_KEYS`] working keys per merchant (409 beyond).
//! - Revoking is immediate on every replica (the auth cache is told in the same statement)
//!   and is refused for the merchant's last working full key (409 `last_api_key`), so a
//!   merchant cannot lock itself out; a key in its rotation grace (listed as `in_grace`)
//!   does not count, as it cannot manage keys and dies at its `expires_at`. A revoked key is
//!   no longer listed.
//! - `last_used_at` is recorded at most once a minute per key.
//! - Keys made by `pisgate merchant create` and `rotate-key` are listed too (without a name).
//! - A key in its rotation grace may not list, create or revoke keys (403 `key_in_grace`):
//!   a leaked key that was rotated away must not mint a key that outlives its grace, nor
//!   revoke the merchant's new one.

use crate::api::AppState;
use crate::api::auth::FullKey;
use crate::api::error::{ApiError, FieldError};
use crate::api::extract::{ApiPath, OptionalApiJson, non_null, present};
use crate::ledger::api_keys::{self, ApiKey, Created, Revoke};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

/// Working (not expired, not revoked) keys per merchant.
pub const MAX_ACTIVE_KEYS: i64 = 20;
const MAX_NAME_CHARS: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api-keys", get(list_keys).post(create_key))
        .route("/api-keys/{id}", delete(revoke_key))
}

/// A key as merchants see it. `api_key` only in the creation answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ApiKey)]
pub(crate) struct KeyView {
    /// The key's public id
    #[schema(pattern = "^[0-9a-f]{16}$")]
    id: String,
    /// How the key starts (`pgk_<id>`): tells keys apart without the secret
    prefix: String,
    #[schema(required = true, max_length = 100)]
    name: Option<String>,
    #[schema(value_type = KeyStatus, inline)]
    status: &'static str,
    created_at: DateTime<Utc>,
    #[schema(required = true)]
    expires_at: Option<DateTime<Utc>>,
    /// Recorded at most once a minute
    #[schema(required = true)]
    last_used_at: Option<DateTime<Utc>>,
    /// The full key; only in the creation answer
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    api_key: Option<String>,
}

/// A listed key's status.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum KeyStatus {
    Active,
    /// Rotated away: it creates and reads payments until `expires_at`, nothing else.
    InGrace,
    Expired,
}

impl From<&ApiKey> for KeyView {
    fn from(k: &ApiKey) -> Self {
        let expired = k.expires_at.is_some_and(|at| at <= Utc::now());
        KeyView {
            id: k.key_id.clone(),
            prefix: format!("pgk_{}", k.key_id),
            name: k.name.clone(),
            status: if expired {
                "expired"
            } else if k.in_grace {
                "in_grace"
            } else {
                "active"
            },
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            api_key: None,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct KeyList {
    data: Vec<KeyView>,
}

/// The merchant's API keys (revoked ones left out, expired ones for 30 days), newest first
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    operation_id = "listApiKeys",
    tag = "API keys",
    responses(
        (status = 200, description = "The keys", body = inline(KeyList)),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
    ),
)]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    FullKey(merchant, _): FullKey,
) -> Result<Json<KeyList>, ApiError> {
    let keys = api_keys::list(&state.pool, merchant.id).await?;
    Ok(Json(KeyList {
        data: keys.iter().map(KeyView::from).collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 100)]
    name: Option<Option<String>>,
    /// In the future; left out: the key does not expire
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = DateTime<Utc>)]
    expires_at: Option<Option<DateTime<Utc>>>,
}

/// Name and expiry of a create request, every violation named.
fn parse_create(body: CreateBody) -> Result<(Option<String>, Option<DateTime<Utc>>), ApiError> {
    let mut errors = Vec::new();
    let name = non_null("name", body.name, &mut errors).map(|n| n.trim().to_owned());
    if name
        .as_ref()
        .is_some_and(|n| n.chars().any(char::is_control))
    {
        // PostgreSQL cannot store a NUL in text; no other control character belongs in a name.
        errors.push(FieldError::new(
            "name",
            "invalid",
            "must not contain control characters",
        ));
    } else if name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.chars().count() > MAX_NAME_CHARS)
    {
        errors.push(FieldError::new(
            "name",
            "invalid_length",
            "must be 1 to 100 characters",
        ));
    }
    let expires_at = non_null("expires_at", body.expires_at, &mut errors);
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        errors.push(FieldError::new(
            "expires_at",
            "in_the_past",
            "must be in the future; leave it out for a key that does not expire",
        ));
    }
    if errors.is_empty() {
        Ok((name, expires_at))
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Create an API key
///
/// The full key (`api_key`) is in this answer only. A merchant has at most 20 working keys (409 `too_many_api_keys`). The body may be left out.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    operation_id = "createApiKey",
    tag = "API keys",
    request_body(content = inline(Option<CreateBody>), description = "May be left out"),
    responses(
        (status = 201, description = "Created, with the full key", body = KeyView),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
        (status = 409, description = "too_many_api_keys: the merchant already has the most working keys"),
        (status = 422, description = crate::api::openapi::INVALID),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %full.0.id, key_id = tracing::field::Empty))]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    full: FullKey,
    OptionalApiJson(body): OptionalApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let (name, expires_at) = match body {
        Some(body) => parse_create(body)?,
        None => (None, None),
    };
    let created = api_keys::create(
        &state.pool,
        full.manager(),
        name.as_deref(),
        expires_at,
        MAX_ACTIVE_KEYS,
    )
    .await?;
    let (key, secret) = match created {
        Created::Done(key, secret) => (key, secret),
        Created::TooMany { limit } => {
            return Err(ApiError::Conflict(
                "too_many_api_keys",
                format!("a merchant can have at most {limit} working API keys; revoke one first"),
            ));
        }
    };
    tracing::Span::current().record("key_id", tracing::field::display(&key.key_id));
    tracing::info!(expires_at = ?key.expires_at, "API key created");
    let mut view = KeyView::from(key.as_ref());
    view.api_key = Some(secret.expose_secret().to_owned());
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Revoke an API key
///
/// Refused at once on every replica. The merchant's last working key cannot be revoked (409 `last_api_key`).
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    operation_id = "revokeApiKey",
    tag = "API keys",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
        (status = 409, description = "last_api_key: the merchant's last working key that is not in its rotation grace"),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %full.0.id, key_id = %id))]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    full: FullKey,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    // Key ids are short ASCII tokens: anything else (a NUL, say) is no key of this merchant.
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::NotFound("API key"));
    }
    match api_keys::revoke(&state.pool, full.manager(), &id).await? {
        Revoke::NotFound => Err(ApiError::NotFound("API key")),
        Revoke::LastActiveKey => Err(ApiError::Conflict(
            "last_api_key",
            "this is the merchant's last working API key; create another one before revoking it"
                .into(),
        )),
        Revoke::Revoked => {
            // Other replicas forget it when the notification arrives; this one at once.
            state.auth_cache.clear();
            tracing::info!("API key revoked");
            Ok(StatusCode::NO_CONTENT)
        }
    }
}
