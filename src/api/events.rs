//! The merchant's events: `GET /v1/events` and `GET /v1/events/{id}`.
//!
//! Every event that is or would be sent as a webhook (one per status change, written with
//! the change whether or not the merchant has an endpoint), kept for good. Each is answered
//! as the webhook body itself: the same `evt_…` id, `type`, `timestamp` and `data`, so a
//! merchant that missed deliveries reconciles from here with the code that reads webhooks.
//!
//! Lists are newest first and cursor-paginated like `GET /v1/payments`, filtered by `type`,
//! `payment_id`, `created_gte` and `created_lt` (the names `GET /v1/payments` uses). Another
//! merchant's event is 404 and never listed.

use crate::api::AppState;
use crate::api::auth::AuthedMerchant;
use crate::api::error::{ApiError, FieldError};
use crate::api::extract::{ApiPath, ApiQuery};
use crate::api::openapi::WebhookEvent;
use crate::api::pagination::{self, Page, page};
use crate::api::payment_search::date_time;
use crate::ledger::webhook_events::{self, EventFilter, StoredEvent};
use crate::ledger::webhooks::{EVENT_TYPES, parse_webhook_id};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/events", get(list_events))
        .route("/events/{id}", get(get_event))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only events of this type
    #[serde(rename = "type")]
    #[param(value_type = Option<crate::api::openapi::EventType>, inline, nullable = false)]
    event_type: Option<String>,
    /// Only events about this payment
    #[param(nullable = false)]
    payment_id: Option<Uuid>,
    /// Created at or after
    // Read as text and parsed strictly (as `GET /v1/payments` does): serde's parse of
    // `DateTime` takes any signed year chrono can hold, and PostgreSQL refuses those before
    // 4713 BC (`-5000-01-01T00:00:00Z` was a 500).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>, nullable = false)]
    created_gte: Option<String>,
    /// Created before
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>, nullable = false)]
    created_lt: Option<String>,
    #[param(nullable = false, minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page; empty or absent: from the newest
    #[param(nullable = false)]
    cursor: Option<String>,
}

/// The event as its webhook carried it (the stored webhook body).
/// Described as [`crate::api::openapi::WebhookEvent`].
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub(crate) struct EventView(Value);

impl From<&StoredEvent> for EventView {
    fn from(event: &StoredEvent) -> Self {
        EventView(event.payload.clone())
    }
}

/// The merchant's events (every webhook that was or would be sent), newest first
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "listEvents",
    tag = "Events",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of events, newest first", body = Page<WebhookEvent>),
        (status = 422, description = crate::api::openapi::INVALID),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %merchant.id))]
pub(crate) async fn list_events(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<EventView>>, ApiError> {
    let mut errors = Vec::new();
    let (limit, after) = pagination::limit_and_cursor(q.limit, q.cursor.as_deref(), &mut errors);
    if let Some(t) = &q.event_type
        && !EVENT_TYPES.contains(&t.as_str())
    {
        errors.push(FieldError::new(
            "type",
            "invalid",
            format!("must be one of {}", EVENT_TYPES.join(", ")),
        ));
    }
    let created_gte = date_time("created_gte", &q.created_gte, &mut errors);
    let created_lt = date_time("created_lt", &q.created_lt, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let filter = EventFilter {
        event_type: q.event_type,
        payment_id: q.payment_id,
        created_gte,
        created_lt,
        after,
    };
    let rows = webhook_events::list(state.reads.db(), merchant.id, &filter, limit + 1).await?;
    Ok(Json(page(rows, limit, |e| (e.created_at, e.id))))
}

/// One event, as its webhook carried it
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    operation_id = "getEvent",
    tag = "Events",
    params(("id" = String, Path, pattern = "^evt_[0-9a-f]{32}$", description = "The event's id (the webhook-id)")),
    responses(
        (status = 200, description = "The event", body = WebhookEvent),
        (status = 404, description = crate::api::openapi::NOT_FOUND),
    ),
)]
#[tracing::instrument(skip_all, fields(merchant_id = %merchant.id, event_id = %id))]
pub(crate) async fn get_event(
    State(state): State<AppState>,
    AuthedMerchant(merchant): AuthedMerchant,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EventView>, ApiError> {
    let event_id = parse_webhook_id(&id).ok_or(ApiError::NotFound("event"))?;
    // From the replica when it is in use; an event it has not replayed yet (a merchant
    // looking up the webhook it just received) is then read from the primary.
    let mut event = webhook_events::get(state.reads.db(), merchant.id, event_id).await?;
    if event.is_none() && state.reads.replica_in_use() {
        event = webhook_events::get(state.reads.primary(), merchant.id, event_id).await?;
    }
    let event = event.ok_or(ApiError::NotFound("event"))?;
    Ok(Json(EventView::from(&event)))
}
