//! Liveness, readiness and metrics (for the orchestrator and Prometheus, on the admin
//! listener), and the API description (for merchants' tooling, on the public one). All
//! unauthenticated.

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::ledger;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// What the admin listener serves.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// What the public listener serves beside the API.
pub fn public_router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi))
}

/// The OpenAPI 3.1 description of the merchant API and of the webhooks it sends, generated
/// from the code once ([`crate::api::openapi`]). A test keeps `openapi.json` at the root
/// identical to it and every listed route routed, `scripts/openapi-check.sh` lints it,
/// `scripts/schemathesis.sh` fuzzes the service against it and `scripts/sdk-check.sh` uses
/// an SDK generated from it.
async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::api::openapi::json(),
    )
}

/// The process is alive; says nothing about its dependencies.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready to take traffic: not shutting down, the database answers and every migration of
/// this binary is applied. Sets `pisgate_ready`.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    readiness(&state).await?;
    Ok(Json(
        json!({ "status": "ready", "database": "ok", "migrations": "applied" }),
    ))
}

/// Why this replica should not take traffic, if it should not; keeps `pisgate_ready` current.
async fn readiness(state: &AppState) -> Result<(), ApiError> {
    let ready = not_ready(state).await;
    metrics::gauge!("pisgate_ready").set(if ready.is_ok() { 1.0 } else { 0.0 });
    ready
}

async fn not_ready(state: &AppState) -> Result<(), ApiError> {
    if state.is_draining() {
        return Err(ApiError::Unavailable(
            "shutting down: finishing in-flight requests".into(),
        ));
    }
    if state.db_health.is_down() {
        return Err(ApiError::Unavailable(
            "the database is not reachable".into(),
        ));
    }
    let pending = ledger::pending_migrations(&state.pool).await.map_err(|e| {
        state.db_health.observe(&e);
        tracing::warn!(error = %e, "readiness: database check failed");
        ApiError::Unavailable("the database is not reachable".into())
    })?;
    if !pending.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "{} database migration(s) are not applied; run `pisgate migrate`",
            pending.len()
        )));
    }
    Ok(())
}

/// Prometheus text; the readiness, process and pool gauges are read now.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let _ = readiness(&state).await;
    crate::telemetry::metrics::refresh_on_scrape(&state.pool);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
