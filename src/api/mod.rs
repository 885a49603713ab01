//! The merchant-facing HTTP surface.
//!
//! One module per resource, each exposing a `router()`; this module merges them and wraps
//! them in the cross-cutting layers: request id and span, metrics, problem+json for every
//! error, body limit, timeout, panic catching, and (for `/v1`) merchant authentication with
//! rate limiting. Nothing below `api` knows about HTTP status codes.
//!
//! Two listeners: [`router`] is the public one (the merchant API, the bank's callback, the
//! shopper pages, `/openapi.json`); [`admin_router`] the admin one (health, readiness,
//! metrics, operator endpoints), which must never be exposed to the internet.

pub mod api_keys;
pub mod auth;
pub mod authorize;
pub mod bankid;
pub mod banks;
pub mod callbacks;
pub mod client_ip;
pub mod consent;
pub mod console;
pub mod error;
pub mod error_pages;
pub mod events;
pub mod extract;
pub mod fragment_page;
pub mod health;
pub mod initiation;
pub mod link_preview;
pub mod merchant;
pub mod middleware;
pub mod openapi;
pub mod pagination;
pub mod payment_input;
pub mod payment_search;
pub mod payments;
pub mod rate_limit;
pub mod sca;
pub mod submission;
pub mod webhooks;

use crate::bank::Banks;
use crate::config::Settings;
use crate::ledger::Db;
use crate::ledger::crypto::TokenCipher;
use crate::ledger::health::DbHealth;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use rate_limit::RateLimiter;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What every handler can reach: one `Arc`, so that axum's `State` extractor and each
/// `from_fn_with_state` layer clone (and drop) one reference count per request instead of a
/// dozen (the fields are reached through `Deref`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The fields of [`AppState`].
#[derive(Clone)]
pub struct Shared {
    pub pool: Db,
    pub settings: Arc<Settings>,
    pub rate_limiter: Arc<RateLimiter>,
    pub metrics: PrometheusHandle,
    /// The configured banks; a payment's calls go to the bank it recorded.
    pub banks: Arc<Banks>,
    pub cipher: Arc<TokenCipher>,
    /// Whether the database is reachable (a watchdog keeps it current).
    pub db_health: DbHealth,
    /// Verified API keys, for a few seconds (see [`auth::AUTH_CACHE_TTL`]).
    pub auth_cache: Arc<auth::AuthCache>,
    /// Where staleness-tolerant list reads go (a read replica when configured and caught up).
    pub reads: Arc<crate::ledger::Reads>,
    /// This replica's one LISTEN connection (started by `Application::run_until_stopped`).
    pub listener: Arc<crate::ledger::listener::Listener>,
    /// Set once shutdown begins: `/readyz` answers 503 so that load balancers stop sending.
    draining: Arc<AtomicBool>,
    /// The debounce of bank reads triggered by callbacks with an `error`.
    pub error_reads: Arc<callbacks::ErrorReads>,
    /// Bank exchanges that must reach their commit once begun (a code exchange uses the
    /// code up), shared with the workers: shutdown waits for them.
    pub finishing: crate::finishing::Finishing,
    /// Failed console sign-ins per source address (a flood is refused before any check).
    pub sign_in_throttle: Arc<console::throttle::Throttle>,
}

impl AppState {
    pub fn new(
        pool: Db,
        settings: Settings,
        metrics: PrometheusHandle,
        banks: Arc<Banks>,
        cipher: Arc<TokenCipher>,
    ) -> AppState {
        let rate_limiter = Arc::new(RateLimiter::new(
            settings.rate_limit.requests_per_window,
            settings.rate_limit.window,
        ));
        let listener = crate::ledger::listener::Listener::new(settings.database.session_url());
        error_pages::set_public_url(&settings.server.public_url);
        let auth_cache = Arc::new(
            auth::AuthCache::following(listener.connection_counter()).bounded(
                settings.database.max_connections,
                settings.database.acquire_timeout,
            ),
        );
        AppState(Arc::new(Shared {
            reads: Arc::new(crate::ledger::Reads::primary_only(pool.clone())),
            pool,
            settings: Arc::new(settings),
            rate_limiter,
            metrics,
            banks,
            cipher,
            db_health: DbHealth::default(),
            auth_cache,
            listener,
            draining: Arc::default(),
            error_reads: Arc::default(),
            finishing: crate::finishing::Finishing::default(),
            sign_in_throttle: Arc::default(),
        }))
    }

    /// The same state with list reads going to `reads` (a read replica); for the
    /// application's build, before the state is shared.
    pub fn with_reads(mut self, reads: Arc<crate::ledger::Reads>) -> AppState {
        Arc::make_mut(&mut self.0).reads = reads;
        self
    }

    /// Marks this replica as shutting down (readiness fails from now on).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub fn router(state: AppState) -> Router {
    let authenticated = Router::new()
        .merge(merchant::router())
        .merge(banks::router())
        .merge(api_keys::router())
        .merge(events::router())
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
        .merge(health::public_router())
        .merge(callbacks::router())
        .merge(authorize::router())
        .merge(sca::router())
        .merge(bankid::router())
        .merge(error_pages::router())
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

/// The admin listener's router: `/healthz`, `/readyz` and `/metrics`, without request logs
/// or per-request metrics (probes and scrapes would drown the real traffic). Operator
/// endpoints (the console) merge or nest here; nothing here may be reachable from the
/// internet, and nothing of the merchant API is served here.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .merge(health::admin_router())
        .merge(console::router())
        .fallback(middleware::unknown_route)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn(middleware::request_id_only))
                .layer(axum::middleware::from_fn(error::problem_for_bare_errors))
                .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                    middleware::panic_response,
                )),
        )
        .with_state(state)
}
