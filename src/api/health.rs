//! Liveness, readiness, metrics and the API description: unauthenticated, for the
//! orchestrator, Prometheus and merchants' tooling.

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::ledger;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The OpenAPI 3.1 description of the merchant API and of the webhooks it sends.
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// The process is alive; says nothing about its dependencies.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready to take traffic: the database answers and every migration of this binary is applied.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
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
    Ok(Json(
        json!({ "status": "ready", "database": "ok", "migrations": "applied" }),
    ))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
