//! The merchant-facing HTTP surface.
//!
//! One module per resource, each exposing a `router()`; this module merges them and wraps
//! them in the cross-cutting layers: request id and span, metrics, problem+json for every
//! error, body limit, timeout, panic catching, and (for `/v1`) merchant authentication with
//! rate limiting. Nothing below `api` knows about HTTP status codes.

pub mod auth;
pub mod authorize;
pub mod callbacks;
pub mod error;
pub mod extract;
pub mod health;
pub mod merchant;
pub mod middleware;
pub mod payment_input;
pub mod payments;
pub mod rate_limit;
pub mod webhooks;

use crate::bank::Bank;
use crate::config::Settings;
use crate::ledger::crypto::TokenCipher;
use crate::ledger::health::DbHealth;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use rate_limit::RateLimiter;
use sqlx::PgPool;
use std::sync::Arc;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub rate_limiter: Arc<RateLimiter>,
    pub metrics: PrometheusHandle,
    pub bank: Arc<dyn Bank>,
    pub cipher: Arc<TokenCipher>,
    /// Whether the database is reachable (a watchdog keeps it current).
    pub db_health: DbHealth,
    /// Verified API keys, for a few seconds (see [`auth::AUTH_CACHE_TTL`]).
    pub auth_cache: Arc<auth::AuthCache>,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        settings: Settings,
        metrics: PrometheusHandle,
        bank: Arc<dyn Bank>,
        cipher: Arc<TokenCipher>,
    ) -> AppState {
        let rate_limiter = Arc::new(RateLimiter::new(
            settings.rate_limit.requests_per_window,
            settings.rate_limit.window,
        ));
        AppState {
            pool,
            settings: Arc::new(settings),
            rate_limiter,
            metrics,
            bank,
            cipher,
            db_health: DbHealth::default(),
            auth_cache: Arc::default(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let authenticated = Router::new()
        .merge(merchant::router())
        .merge(payments::router())
        .merge(webhooks::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_merchant,
        ))
        // Outermost: during a database outage, answer at once without touching the pool.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::database_gate,
        ));
    let body_limit = state.settings.server.body_limit_bytes;
    let timeout = state.settings.server.request_timeout;
    Router::new()
        .merge(health::router())
        .merge(callbacks::router())
        .merge(authorize::router())
        .nest("/v1", authenticated)
        .fallback(middleware::unknown_route)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn(middleware::request_context))
                .layer(axum::middleware::from_fn(error::problem_for_bare_errors))
                .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                    middleware::panic_response,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    timeout,
                    middleware::deadline,
                ))
                .layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
}
