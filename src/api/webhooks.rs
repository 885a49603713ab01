//! Webhook endpoints and their deliveries:
//! `POST/GET /v1/webhook-endpoints`, `GET/DELETE /v1/webhook-endpoints/{id}`,
//! `PATCH /v1/webhook-endpoints/{id}` (url, events, description),
//! `POST /v1/webhook-endpoints/{id}/rotate-secret`,
//! `POST /v1/webhook-endpoints/{id}/enable`,
//! `GET /v1/webhook-endpoints/{id}/deliveries`,
//! `POST /v1/webhook-endpoints/{id}/deliveries/{webhook_id}/replay`,
//! `POST /v1/webhook-endpoints/{id}/replay` (every dead delivery).
//!
//! Decisions:
//! - The signing secret (`whsec_` + base64 of 32 random bytes, the Standard Webhooks form)
//!   is made here, sealed with the token cipher and shown in the creation answer only; no
//!   other answer and no log line ever carries it.
//! - Rotation makes a new secret, shown in its answer only; the replaced one keeps signing
//!   beside it (`webhook-signature: v1,<new> v1,<old>`) until `previous_secret_expires_at`
//!   (`overlap_secs`, default 24 h, 0 to 7 days). A second rotation within the overlap
//!   drops the oldest secret: at most two sign at once.
//! - `PATCH` takes `url`, `events` and `description`, each validated as at creation; a field
//!   left out is kept, `null` clears the description and is refused for the others.
//! - `events` empty or absent subscribes to every event type, including ones added later.
//! - URLs are absolute `http(s)`, at most 2048 characters, without credentials. Unless
//!   `webhooks.allow_insecure_urls` is set they must be `https` and must not name
//!   `localhost` or a loopback, private, link-local or otherwise non-public IP literal (the
//!   dispatcher applies the same rule to the addresses a host name resolves to).
//! - A merchant has at most [`MAX_ENABLED_ENDPOINTS`] enabled endpoints (409 beyond).
//! - Delete is soft (`status: deleted`, still readable by id, left out of the list unless
//!   asked for with `?status=deleted`); its pending deliveries become dead. A disabled
//!   endpoint (the dispatcher disables one that answers 410) can be enabled again; its dead
//!   deliveries can then be replayed.
//! - Another merchant's endpoint answers 404 everywhere.
//! - A key in its rotation grace may read endpoints and deliveries but not create, change,
//!   enable, delete or rotate an endpoint, nor replay deliveries (403 `key_in_grace`): a
//!   leaked key that was rotated away must not redirect the merchant's notifications, learn
//!   a secret or have old `payment.paid` webhooks sent again.

use crate::api::AppState;
use crate::api::auth::{AuthedMerchant, FullKey};
use crate::api::error::{ApiError, FieldError};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, OptionalApiJson, non_null, present};
use crate::api::pagination::{self, Cursor, Page, page};
use crate::ledger::crypto::WebhookSecretAad;
use crate::ledger::webhooks::{
    self, CapOutcome, Delivery, EVENT_TYPES, Endpoint, NewEndpoint, Replay,
};
use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// Enabled endpoints per merchant.
pub const MAX_ENABLED_ENDPOINTS: i64 = 20;
const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_CHARS: usize = 500;
const SECRET_PREFIX: &str = "whsec_";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/webhook-endpoints",
            post(create_endpoint).get(list_endpoints),
        )
        .route(
            "/webhook-endpoints/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route("/webhook-endpoints/{id}/rotate-secret", post(rotate_secret))
        .route("/webhook-endpoints/{id}/enable", post(enable_endpoint))
        .route("/webhook-endpoints/{id}/deliveries", get(list_deliveries))
        .route(
            "/webhook-endpoints/{id}/deliveries/{webhook_id}/replay",
            post(replay_delivery),
        )
        .route("/webhook-endpoints/{id}/replay", post(replay_dead))
}

/// An endpoint URL that passed the rules in the module doc. Only [`EndpointUrl::parse`]
/// makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    pub fn parse(text: &str, allow_insecure: bool) -> Result<EndpointUrl, FieldError> {
        let invalid = |code: &str, message: &str| FieldError::new("url", code, message);
        let text = text.trim();
        if text.is_empty() {
            return Err(invalid(
                "required",
                "give the URL we should send webhooks to",
            ));
        }
        if text.len() > MAX_URL_LEN {
            return Err(invalid("too_long", "must be at most 2048 characters"));
        }
        let url = url::Url::parse(text)
            .map_err(|_| invalid("invalid_url", "must be an absolute http(s) URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("invalid_url", "must be an absolute http(s) URL"));
        }
        let Some(host) = url.host() else {
            return Err(invalid("invalid_url", "must be an absolute http(s) URL"));
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials_not_allowed",
                "must not carry a user name or password; we sign every webhook instead",
            ));
        }
        if !allow_insecure {
            if url.scheme() != "https" {
                return Err(invalid("https_required", "must use https"));
            }
            let private = match host {
                url::Host::Domain(d) => {
                    let d = d.trim_end_matches('.').to_ascii_lowercase();
                    d == "localhost" || d.ends_with(".localhost")
                }
                url::Host::Ipv4(ip) => !webhooks::is_public_ip(ip.into()),
                url::Host::Ipv6(ip) => !webhooks::is_public_ip(ip.into()),
            };
            if private {
                return Err(invalid(
                    "private_address",
                    "must be reachable on the public internet (not localhost, a loopback, private or link-local address, nor one that embeds such an address)",
                ));
            }
            if !url
                .port_or_known_default()
                .is_some_and(|p| webhooks::ALLOWED_PORTS.contains(&p))
            {
                return Err(invalid("port_not_allowed", "must use port 443 or 8443"));
            }
        }
        let normalized = url.to_string();
        if normalized.len() > MAX_URL_LEN {
            return Err(invalid("too_long", "must be at most 2048 characters"));
        }
        Ok(EndpointUrl(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    #[schema(format = "uri", max_length = 2048)]
    url: String,
    /// Empty or absent: every event type
    #[serde(default)]
    #[schema(value_type = Vec<crate::api::openapi::EventType>, inline, nullable = false)]
    events: Option<Vec<String>>,
    #[serde(default)]
    #[schema(nullable = false, max_length = 500)]
    description: Option<String>,
}

/// A create request that passed every rule.
struct ValidEndpoint {
    url: EndpointUrl,
    events: Vec<String>,
    description: Option<String>,
}

impl ValidEndpoint {
    /// Collects every violation, not the first.
    fn parse(body: CreateBody, allow_insecure: bool) -> Result<ValidEndpoint, ApiError> {
        let mut errors = Vec::new();
        let url = EndpointUrl::parse(&body.url, allow_insecure)
            .map_err(|e| errors.push(e))
            .ok();
        let events = parse_events(body.events.unwrap_or_default(), &mut errors);
        let description = parse_description(body.description, &mut errors);
        match url {
            Some(url) if errors.is_empty() => Ok(ValidEndpoint {
                url,
                events,
                description,
            }),
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

/// Known event types without duplicates, in the order given; unknown ones named by index.
fn parse_events(given: Vec<String>, errors: &mut Vec<FieldError>) -> Vec<String> {
    let mut events: Vec<String> = Vec::new();
    for (i, event) in given.into_iter().enumerate() {
        if !EVENT_TYPES.contains(&event.as_str()) {
            errors.push(FieldError::new(
                format!("events[{i}]"),
                "unknown_event_type",
                format!("must be one of {}", EVENT_TYPES.join(", ")),
            ));
        } else if !events.contains(&event) {
            events.push(event);
        }
    }
    events
}

/// Trimmed, at most [`MAX_DESCRIPTION_CHARS`], no control characters (PostgreSQL cannot
/// store NUL in text); blank is none.
fn parse_description(given: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let description = given.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().any(char::is_control))
    {
        errors.push(FieldError::new(
            "description",
            "invalid",
            "must not contain control characters",
        ));
        return None;
    }
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        errors.push(FieldError::new(
            "description",
            "too_long",
            "must be at most 500 characters",
        ));
    }
    description
}

/// An endpoint as merchants see it. `secret` only in the creation answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookEndpoint)]
pub(crate) struct EndpointView {
    id: Uuid,
    url: String,
    #[schema(required = true)]
    description: Option<String>,
    /// Empty: every event type
    #[schema(value_type = Vec<crate::api::openapi::EventType>, inline)]
    events: Vec<String>,
    #[schema(value_type = EndpointStatus, inline)]
    status: String,
    #[schema(required = true)]
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// While a rotation's overlap lasts: until when the replaced secret still signs deliveries (beside the new one)
    #[schema(required = true)]
    previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Only in the answers to creation and to rotate-secret
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    secret: Option<String>,
}

/// An endpoint's status.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum EndpointStatus {
    Enabled,
    Disabled,
    Deleted,
}

/// A delivery's status.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum DeliveryStatus {
    Pending,
    Delivered,
    Dead,
}

impl From<&Endpoint> for EndpointView {
    fn from(e: &Endpoint) -> Self {
        EndpointView {
            id: e.id,
            url: e.url.clone(),
            description: e.description.clone(),
            events: e.event_types.clone(),
            status: e.status.clone(),
            disabled_reason: e.disabled_reason.clone(),
            created_at: e.created_at,
            updated_at: e.updated_at,
            previous_secret_expires_at: e.previous_secret_expires_at.filter(|t| *t > Utc::now()),
            secret: None,
        }
    }
}

/// `whsec_` + base64 of 32 random bytes.
fn new_secret() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    secrecy::zeroize::Zeroize::zeroize(&mut bytes);
    SecretString::from(secret)
}

/// Register a webhook endpoint
///
/// The `secret` (`whsec_…`) is in this answer only. Deliveries carry Standard Webhooks headers: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed with the base64-decoded part after `whsec_`.
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints",
    operation_id = "createWebhookEndpoint",
    tag = "Webhook endpoints",
    request_body = inline(CreateBody),
    responses(
        (status = 201, description = "Created, with its secret", body = EndpointView),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
        (status = 409, description = "too_many_endpoints: the merchant already has the most enabled endpoints"),
        (status = 422, description = crate::api::openapi::INVALID),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %merchant.id, endpoint_id = tracing::field::Empty))]
pub(crate) async fn create_endpoint(
    State(state): State<AppState>,
    FullKey(merchant, by_key): FullKey,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let valid = ValidEndpoint::parse(body, state.settings.webhooks.allow_insecure_urls)?;
    let id = Uuid::now_v7();
    tracing::Span::current().record("endpoint_id", tracing::field::display(id));
    let secret = new_secret();
    let sealed = state
        .cipher
        .encrypt_webhook_secret(
            &secret,
            &WebhookSecretAad {
                merchant_id: merchant.id,
                endpoint_id: id,
            },
        )
        .context("sealing the webhook secret")?;
    let outcome = webhooks::create_endpoint(
        &state.pool,
        crate::ledger::api_keys::Manager {
            merchant_id: merchant.id,
            key_id: &by_key,
        },
        NewEndpoint {
            id,
            merchant_id: merchant.id,
            url: valid.url.as_str(),
            description: valid.description.as_deref(),
            event_types: &valid.events,
            secret: &sealed,
        },
        MAX_ENABLED_ENDPOINTS,
    )
    .await?;
    let endpoint = match outcome {
        CapOutcome::Done(e) => e,
        CapOutcome::TooMany { limit } => return Err(too_many(limit)),
    };
    tracing::info!(events = ?endpoint.event_types, "webhook endpoint created");
    let mut view = EndpointView::from(&endpoint);
    view.secret = Some(secret.expose_secret().to_owned());
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

fn too_many(limit: i64) -> ApiError {
    ApiError::Conflict(
        "too_many_endpoints",
        format!("a merchant can have at most {limit} enabled webhook endpoints; delete one first"),
    )
}

/// The merchant's endpoint; another merchant's id is simply not found.
async fn own_endpoint(state: &AppState, merchant_id: Uuid, id: Uuid) -> Result<Endpoint, ApiError> {
    webhooks::get_endpoint(&state.pool, merchant_id, id)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))
}

/// One endpoint
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}",
    operation_id = "getWebhookEndpoint",
    tag = "Webhook endpoints",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
    ),
)]
pub(crate) async fn get_endpoint(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndpointView>, ApiError> {
    let e = own_endpoint(&state, merchant.id, id).await?;
    Ok(Json(EndpointView::from(&e)))
}

/// Delete it; its pending deliveries become dead
#[utoipa::path(
    delete,
    path = "/v1/webhook-endpoints/{id}",
    operation_id = "deleteWebhookEndpoint",
    tag = "Webhook endpoints",
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %merchant.id, endpoint_id = %id))]
pub(crate) async fn delete_endpoint(
    State(state): State<AppState>,
    FullKey(merchant, by_key): FullKey,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    if !webhooks::delete_endpoint(
        &state.pool,
        crate::ledger::api_keys::Manager {
            merchant_id: merchant.id,
            key_id: &by_key,
        },
        id,
    )
    .await?
    {
        return Err(ApiError::NotFound("webhook endpoint"));
    }
    tracing::info!("webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Turn an endpoint disabled by a 410 back on
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/enable",
    operation_id = "enableWebhookEndpoint",
    tag = "Webhook endpoints",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
        (status = 409, description = "endpoint_deleted, or too_many_endpoints"),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %merchant.id, endpoint_id = %id))]
pub(crate) async fn enable_endpoint(
    State(state): State<AppState>,
    FullKey(merchant, by_key): FullKey,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndpointView>, ApiError> {
    live_endpoint(&state, merchant.id, id).await?;
    match webhooks::enable_endpoint(
        &state.pool,
        crate::ledger::api_keys::Manager {
            merchant_id: merchant.id,
            key_id: &by_key,
        },
        id,
        MAX_ENABLED_ENDPOINTS,
    )
    .await?
    {
        None => Err(endpoint_deleted()),
        Some(CapOutcome::TooMany { limit }) => Err(too_many(limit)),
        Some(CapOutcome::Done(e)) => {
            tracing::info!("webhook endpoint enabled");
            Ok(Json(EndpointView::from(&e)))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The merchant's endpoint unless it is deleted (409: it can no longer be changed).
async fn live_endpoint(
    state: &AppState,
    merchant_id: Uuid,
    id: Uuid,
) -> Result<Endpoint, ApiError> {
    let endpoint = own_endpoint(state, merchant_id, id).await?;
    if endpoint.status == "deleted" {
        return Err(endpoint_deleted());
    }
    Ok(endpoint)
}

fn endpoint_deleted() -> ApiError {
    ApiError::Conflict(
        "endpoint_deleted",
        "the webhook endpoint is deleted; create a new one".into(),
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, format = "uri", max_length = 2048)]
    url: Option<Option<String>>,
    /// Empty: every event type
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Vec<crate::api::openapi::EventType>, inline)]
    events: Option<Option<Vec<String>>>,
    /// `null` or blank clears it
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 500)]
    description: Option<Option<String>>,
}

/// `PATCH /v1/webhook-endpoints/{id}`: url, events and description, each validated as at
/// creation; a field left out stays as it is.
#[utoipa::path(
    patch,
    path = "/v1/webhook-endpoints/{id}",
    operation_id = "updateWebhookEndpoint",
    tag = "Webhook endpoints",
    summary = "Change an endpoint's url, events or description",
    description = "Each field is validated as at creation; a field left out is kept. Pending deliveries go to the new URL; new events follow the new subscription. A deleted endpoint answers 409 `endpoint_deleted`.",
    params(("id" = Uuid, Path)),
    request_body = inline(UpdateBody),
    responses(
        (status = 200, description = "The endpoint as changed", body = EndpointView),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
        (status = 409, description = "endpoint_deleted: a deleted endpoint cannot be changed"),
        (status = 422, description = crate::api::openapi::INVALID),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %merchant.id, endpoint_id = %id))]
pub(crate) async fn update_endpoint(
    State(state): State<AppState>,
    FullKey(merchant, by_key): FullKey,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<EndpointView>, ApiError> {
    let mut errors = Vec::new();
    let url = non_null("url", body.url, &mut errors).and_then(|u| {
        EndpointUrl::parse(&u, state.settings.webhooks.allow_insecure_urls)
            .map_err(|e| errors.push(e))
            .ok()
    });
    let events = non_null("events", body.events, &mut errors).map(|e| parse_events(e, &mut errors));
    let description = body.description.map(|d| parse_description(d, &mut errors));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    live_endpoint(&state, merchant.id, id).await?;
    let change = webhooks::EndpointChange {
        url: url.as_ref().map(EndpointUrl::as_str),
        event_types: events.as_deref(),
        description: description.as_ref().map(Option::as_deref),
    };
    let endpoint = webhooks::update_endpoint(
        &state.pool,
        crate::ledger::api_keys::Manager {
            merchant_id: merchant.id,
            key_id: &by_key,
        },
        id,
        change,
    )
    .await?
    .ok_or_else(endpoint_deleted)?;
    tracing::info!(events = ?endpoint.event_types, "webhook endpoint updated");
    Ok(Json(EndpointView::from(&endpoint)))
}

/// How long a replaced secret keeps signing unless the request says otherwise.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// The longest overlap a rotation may ask for.
pub const MAX_OVERLAP: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = i64, minimum = 0, maximum = 604800, default = 86400)]
    overlap_secs: Option<Option<i64>>,
}

/// `POST /v1/webhook-endpoints/{id}/rotate-secret`: a new secret, shown in this answer only;
/// the replaced one keeps signing beside it for `overlap_secs` (default 24 h, 0 to end it at
/// once, at most 7 days). The body may be left out.
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/rotate-secret",
    operation_id = "rotateWebhookEndpointSecret",
    tag = "Webhook endpoints",
    summary = "Rotate the endpoint's signing secret",
    description = "The new `secret` is in this answer only. For `overlap_secs` (default 86400, 0 to 604800) deliveries carry both signatures, space-separated: `webhook-signature: v1,<new> v1,<previous>`; after it only the new one. A second rotation within the overlap drops the oldest secret. The body may be left out.",
    params(("id" = Uuid, Path)),
    request_body(content = inline(Option<RotateBody>), description = "May be left out"),
    responses(
        (status = 200, description = "The endpoint with its new secret", body = EndpointView),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
        (status = 409, description = "endpoint_deleted: a deleted endpoint has no secret to rotate"),
        (status = 422, description = crate::api::openapi::INVALID),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %merchant.id, endpoint_id = %id))]
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    FullKey(merchant, by_key): FullKey,
    ApiPath(id): ApiPath<Uuid>,
    OptionalApiJson(body): OptionalApiJson<RotateBody>,
) -> Result<Json<EndpointView>, ApiError> {
    let mut errors = Vec::new();
    let overlap = match non_null(
        "overlap_secs",
        body.and_then(|b| b.overlap_secs),
        &mut errors,
    ) {
        None if !errors.is_empty() => return Err(ApiError::Validation(errors)),
        None => DEFAULT_OVERLAP,
        Some(secs) => u64::try_from(secs)
            .ok()
            .map(Duration::from_secs)
            .filter(|d| *d <= MAX_OVERLAP)
            .ok_or_else(|| {
                ApiError::Validation(vec![FieldError::new(
                    "overlap_secs",
                    "out_of_range",
                    format!("must be 0 to {}", MAX_OVERLAP.as_secs()),
                )])
            })?,
    };
    live_endpoint(&state, merchant.id, id).await?;
    let secret = new_secret();
    let sealed = state
        .cipher
        .encrypt_webhook_secret(
            &secret,
            &WebhookSecretAad {
                merchant_id: merchant.id,
                endpoint_id: id,
            },
        )
        .context("sealing the webhook secret")?;
    let endpoint = webhooks::rotate_secret(
        &state.pool,
        crate::ledger::api_keys::Manager {
            merchant_id: merchant.id,
            key_id: &by_key,
        },
        id,
        &sealed,
        overlap,
    )
    .await?
    .ok_or_else(endpoint_deleted)?;
    tracing::info!(
        overlap_secs = overlap.as_secs(),
        "webhook endpoint secret rotated"
    );
    let mut view = EndpointView::from(&endpoint);
    view.secret = Some(secret.expose_secret().to_owned());
    Ok(Json(view))
}

/// Limit, status (one of `allowed`) and cursor of a list request, every violation named.
fn list_params(q: &ListQuery, allowed: &[&str]) -> Result<(i64, Option<Cursor>), ApiError> {
    let mut errors = Vec::new();
    let (limit, after) = pagination::limit_and_cursor(q.limit, q.cursor.as_deref(), &mut errors);
    if let Some(s) = &q.status
        && !allowed.contains(&s.as_str())
    {
        errors.push(FieldError::new(
            "status",
            "invalid",
            format!("must be one of {}", allowed.join(", ")),
        ));
    }
    if errors.is_empty() {
        Ok((limit, after))
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// List endpoints, newest first
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints",
    operation_id = "listWebhookEndpoints",
    tag = "Webhook endpoints",
    params(
        crate::api::pagination::PageParams,
        ("status" = inline(Option<EndpointStatus>), Query, nullable = false, description = "Deleted endpoints are listed only when asked for"),
    ),
    responses(
        (status = 200, description = "A page", body = Page<EndpointView>),
        (status = 422, description = crate::api::openapi::INVALID),
    ),
)]
pub(crate) async fn list_endpoints(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<EndpointView>>, ApiError> {
    let (limit, after) = list_params(&q, &["enabled", "disabled", "deleted"])?;
    let rows = webhooks::list_endpoints(
        &state.pool,
        merchant.id,
        q.status.as_deref(),
        after,
        limit + 1,
    )
    .await?;
    Ok(Json(page(rows, limit, |e| (e.created_at, e.id))))
}

/// One delivery as merchants see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDelivery)]
pub(crate) struct DeliveryView {
    webhook_id: String,
    endpoint_id: Uuid,
    #[schema(value_type = crate::api::openapi::EventType, inline)]
    event_type: String,
    #[schema(required = true)]
    payment_id: Option<Uuid>,
    #[schema(value_type = DeliveryStatus, inline)]
    status: String,
    attempts: i32,
    #[schema(required = true)]
    last_attempt_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    last_response_status: Option<i32>,
    #[schema(required = true)]
    last_error: Option<String>,
    #[schema(required = true)]
    next_attempt_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    delivered_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        DeliveryView {
            webhook_id: webhooks::webhook_id(d.event_id),
            endpoint_id: d.endpoint_id,
            event_type: d.event_type.clone(),
            payment_id: d.payment_id,
            status: d.status.clone(),
            attempts: d.attempts,
            last_attempt_at: d.last_attempt_at,
            last_response_status: d.last_response_status,
            last_error: d.last_error.clone(),
            next_attempt_at: d.next_attempt_at,
            delivered_at: d.delivered_at,
            created_at: d.created_at,
        }
    }
}

/// The endpoint's deliveries
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}/deliveries",
    operation_id = "listWebhookDeliveries",
    tag = "Webhook endpoints",
    params(
        ("id" = Uuid, Path),
        crate::api::pagination::PageParams,
        ("status" = inline(Option<DeliveryStatus>), Query, nullable = false),
    ),
    responses(
        (status = 200, description = "A page", body = Page<DeliveryView>),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
        (status = 422, description = crate::api::openapi::INVALID),
    ),
)]
pub(crate) async fn list_deliveries(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<DeliveryView>>, ApiError> {
    own_endpoint(&state, merchant.id, id).await?;
    let (limit, after) = list_params(&q, &["pending", "delivered", "dead"])?;
    let rows =
        webhooks::list_deliveries(&state.pool, id, q.status.as_deref(), after, limit + 1).await?;
    Ok(Json(page(rows, limit, |d| (d.created_at, d.event_id))))
}

fn not_enabled(endpoint: &Endpoint) -> ApiError {
    ApiError::Conflict(
        "endpoint_not_enabled",
        format!(
            "the webhook endpoint is {}; only an enabled endpoint's deliveries can be replayed",
            endpoint.status
        ),
    )
}

/// Deliver one event again
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/deliveries/{webhook_id}/replay",
    operation_id = "replayWebhookDelivery",
    tag = "Webhook endpoints",
    params(("id" = Uuid, Path), ("webhook_id" = String, Path, example = "evt_01a2…")),
    responses(
        (status = 202, description = "Pending again", body = DeliveryView),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
        (status = 409, description = "endpoint_not_enabled, or delivery_pending (it will be attempted at its next_attempt_at)"),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %merchant.id, endpoint_id = %id, webhook_id = %webhook_id))]
pub(crate) async fn replay_delivery(
    State(state): State<AppState>,
    FullKey(merchant, _): FullKey,
    ApiPath((id, webhook_id)): ApiPath<(Uuid, String)>,
) -> Result<Response, ApiError> {
    let endpoint = own_endpoint(&state, merchant.id, id).await?;
    let event_id =
        webhooks::parse_webhook_id(&webhook_id).ok_or(ApiError::NotFound("webhook delivery"))?;
    match webhooks::replay_delivery(&state.pool, id, event_id).await? {
        Replay::NotFound => Err(ApiError::NotFound("webhook delivery")),
        Replay::EndpointNotEnabled => Err(not_enabled(&endpoint)),
        Replay::AlreadyPending => Err(ApiError::Conflict(
            "delivery_pending",
            "the delivery is still pending; it will be attempted again at its next_attempt_at"
                .into(),
        )),
        Replay::Queued(d) => {
            tracing::info!("webhook delivery replayed");
            Ok((StatusCode::ACCEPTED, Json(DeliveryView::from(d.as_ref()))).into_response())
        }
    }
}

/// How many dead deliveries were queued again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Replayed {
    replayed: u64,
}

/// Deliver every dead delivery again
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/replay",
    operation_id = "replayDeadWebhookDeliveries",
    tag = "Webhook endpoints",
    params(("id" = Uuid, Path)),
    responses(
        (status = 202, description = "How many", body = inline(Replayed)),
        (status = 403, description = crate::api::openapi::KEY_IN_GRACE),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
        (status = 409, description = "endpoint_not_enabled: only an enabled endpoint's deliveries are replayed"),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %merchant.id, endpoint_id = %id))]
pub(crate) async fn replay_dead(
    State(state): State<AppState>,
    FullKey(merchant, _): FullKey,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let endpoint = own_endpoint(&state, merchant.id, id).await?;
    match webhooks::replay_dead(&state.pool, id).await? {
        None => Err(not_enabled(&endpoint)),
        Some(n) => {
            tracing::info!(replayed = n, "dead webhook deliveries replayed");
            Ok((StatusCode::ACCEPTED, Json(Replayed { replayed: n })).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str, allow_insecure: bool) -> String {
        let e = EndpointUrl::parse(url, allow_insecure).unwrap_err();
        assert_eq!(e.field, "url");
        e.code
    }

    #[test]
    fn public_https_urls_are_accepted_and_normalized() {
        let u = EndpointUrl::parse(" https://Hooks.Example.com/pisgate?x=1 ", false).unwrap();
        assert_eq!(u.as_str(), "https://hooks.example.com/pisgate?x=1");
        assert!(EndpointUrl::parse("https://93.184.216.34:8443/h", false).is_ok());
    }

    #[test]
    fn malformed_and_non_http_urls_are_refused() {
        for url in [
            "",
            "not a url",
            "/relative",
            "ftp://example.com/x",
            "mailto:a@b.c",
        ] {
            let code = refused(url, true);
            assert!(code == "invalid_url" || code == "required", "{url}: {code}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2100));
        assert_eq!(refused(&long, true), "too_long");
        assert_eq!(
            refused("https://user:pw@example.com/", true),
            "credentials_not_allowed"
        );
    }

    #[test]
    fn http_and_private_hosts_are_refused_unless_insecure_urls_are_allowed() {
        assert_eq!(refused("http://example.com/hook", false), "https_required");
        for url in [
            "https://localhost/hook",
            "https://api.localhost./hook",
            "https://127.0.0.1/hook",
            "https://0x7f000001/hook",
            "https://10.0.0.5/hook",
            "https://192.168.1.1/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/hook",
            "https://[fd00::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            // Addresses that embed another one: 6to4 of 127.0.0.1, Teredo, NAT64, and
            // the documentation and unique-local ranges.
            "https://[2002:7f00:1::]/hook",
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
            "https://[64:ff9b::7f00:1]/hook",
            "https://[2001:db8::1]/hook",
            "https://[fc00::5]/hook",
            "https://[fe80::1]/hook",
            "https://[ff02::1]/hook",
            "https://203.0.113.9/hook",
        ] {
            assert_eq!(refused(url, false), "private_address", "{url}");
            assert!(EndpointUrl::parse(url, true).is_ok(), "{url}");
        }
        assert!(EndpointUrl::parse("http://127.0.0.1:9999/hook", true).is_ok());
    }

    #[test]
    fn only_ports_443_and_8443_unless_insecure_urls_are_allowed() {
        for url in [
            "https://example.com:22/hook",
            "https://example.com:6379/hook",
            "https://8.8.8.8:80/hook",
        ] {
            assert_eq!(refused(url, false), "port_not_allowed", "{url}");
            assert!(EndpointUrl::parse(url, true).is_ok(), "{url}");
        }
        for url in ["https://example.com/hook", "https://example.com:8443/hook"] {
            assert!(EndpointUrl::parse(url, false).is_ok(), "{url}");
        }
    }

    #[test]
    fn a_secret_is_whsec_and_base64_of_32_bytes() {
        let s = new_secret();
        let text = s.expose_secret();
        let body = text.strip_prefix("whsec_").unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(new_secret().expose_secret(), text);
    }

    #[test]
    fn unknown_event_types_are_named_by_index_and_duplicates_collapse() {
        let body = CreateBody {
            url: "https://example.com/h".into(),
            events: Some(vec![
                "payment.paid".into(),
                "payment.teleported".into(),
                "payment.paid".into(),
            ]),
            description: None,
        };
        match ValidEndpoint::parse(body, false) {
            Err(ApiError::Validation(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].field, "events[1]");
            }
            other => panic!("{:?}", other.err()),
        }
        let ok = ValidEndpoint::parse(
            CreateBody {
                url: "https://example.com/h".into(),
                events: Some(vec!["payment.paid".into(), "payment.paid".into()]),
                description: Some("  ".into()),
            },
            false,
        )
        .ok()
        .unwrap();
        assert_eq!(ok.events, vec!["payment.paid".to_owned()]);
        assert_eq!(ok.description, None);
    }
}
