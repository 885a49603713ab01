//! Merchant authentication (`Authorization: Bearer <api key>`) and per-merchant rate limits.
//!
//! The key is never logged; the span gets the merchant id once the key is accepted.

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::ledger::api_keys;
use crate::ledger::merchants::{self, Merchant};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long a verified API key is trusted without asking the database again. Keys are
/// cached only while this replica LISTENs for invalidations, so a merchant disabled (or a
/// key revoked) from any process is refused by every replica as soon as the `pisgate_auth`
/// notification arrives (milliseconds); this bound covers a notification lost in flight.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(5);
pub use crate::ledger::merchants::AUTH_CHANNEL;
/// At most this many keys are remembered; past it the cache starts over.
const AUTH_CACHE_CAPACITY: usize = 10_000;
/// A key's `last_used_at` is written at most this often (per replica here, across replicas
/// by the statement's own guard), never on every request.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// Verified API keys, by the SHA-256 of the presented key (never the key itself), with the
/// merchant they belong to. Only successes are kept, so unknown keys cannot fill it.
#[derive(Debug, Default)]
pub struct AuthCache {
    /// The merchant of each key and until when it may be served from here.
    entries: Mutex<HashMap<[u8; 32], (Merchant, Instant)>>,
    /// Whether invalidations are heard (the LISTEN is in place); nothing is cached otherwise.
    live: Arc<AtomicBool>,
    /// When this replica last recorded each key's use, by key id (the public part).
    used: Mutex<HashMap<String, Instant>>,
}

impl AuthCache {
    /// A cache that serves keys only while `live` (the LISTEN on [`AUTH_CHANNEL`]) is true.
    pub fn following(live: Arc<AtomicBool>) -> AuthCache {
        AuthCache {
            live,
            ..AuthCache::default()
        }
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Merchant> {
        if !self.live.load(Ordering::SeqCst) {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(m, _)| m.clone())
    }

    /// Remembers a verified key for [`AUTH_CACHE_TTL`], or until it expires if sooner.
    fn put(&self, hash: [u8; 32], merchant: Merchant, key_expires_at: Option<DateTime<Utc>>) {
        if !self.live.load(Ordering::SeqCst) {
            return;
        }
        let mut ttl = AUTH_CACHE_TTL;
        if let Some(at) = key_expires_at {
            ttl = ttl.min((at - Utc::now()).to_std().unwrap_or_default());
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= AUTH_CACHE_CAPACITY {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= AUTH_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(hash, (merchant, now + ttl));
    }

    /// Whether this key's use should be recorded now (at most once a [`LAST_USED_EVERY`]);
    /// if so, it counts as recorded from now.
    fn use_is_due(&self, key_id: &str) -> bool {
        let now = Instant::now();
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used
            .get(key_id)
            .is_some_and(|at| now.duration_since(*at) < LAST_USED_EVERY)
        {
            return false;
        }
        if used.len() >= AUTH_CACHE_CAPACITY {
            used.retain(|_, at| now.duration_since(*at) < LAST_USED_EVERY);
            if used.len() >= AUTH_CACHE_CAPACITY {
                used.clear();
            }
        }
        used.insert(key_id.to_owned(), now);
        true
    }

    /// Forgets every key: the next request of each merchant asks the database.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Clears `cache` whenever [`AUTH_CHANNEL`] is notified (and after the LISTEN connection is
/// re-established, since a notification may have been missed), until `stop`.
pub async fn follow_invalidations(
    cache: Arc<AuthCache>,
    listener: Arc<crate::ledger::listener::Listener>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let wake = listener.wake(AUTH_CHANNEL);
    loop {
        tokio::select! {
            () = wake.notified() => cache.clear(),
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
    }
}

/// The merchant of a presented key, from the cache or the database.
async fn authenticate(state: &AppState, key: &str) -> Result<Option<Merchant>, ApiError> {
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    if let Some(merchant) = state.auth_cache.get(&hash) {
        return Ok(Some(merchant));
    }
    let Some((merchant, expires_at)) = merchants::authenticate_key(&state.pool, key).await? else {
        return Ok(None);
    };
    state.auth_cache.put(hash, merchant.clone(), expires_at);
    Ok(Some(merchant))
}

/// Writes the key's `last_used_at` in the background when it is due: the request never
/// waits for it, and a failure only costs a stale time.
fn record_use(state: &AppState, key: &str) {
    let Some(key_id) = merchants::key_id_of(key) else {
        return;
    };
    if !state.auth_cache.use_is_due(key_id) {
        return;
    }
    let pool = state.pool.clone();
    let key_id = key_id.to_owned();
    tokio::spawn(async move {
        if let Err(e) = api_keys::touch(&pool, &key_id).await {
            tracing::warn!(error = %e, "cannot record when an API key was last used");
        }
    });
}

pub async fn require_merchant(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = bearer(&request)?;
    let merchant = authenticate(&state, key)
        .await?
        .ok_or(ApiError::Unauthenticated("the API key is not valid"))?;
    if !merchant.is_active() {
        return Err(ApiError::MerchantDisabled);
    }
    tracing::Span::current().record("merchant_id", tracing::field::display(merchant.id));
    record_use(&state, key);

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
