//! Merchant authentication (`Authorization: Bearer <api key>`) and per-merchant rate limits.
//!
//! The key is never logged; the span gets the merchant id once the key is accepted.

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::ledger::api_keys;
use crate::ledger::merchants::{self, Merchant, VerifiedKey};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The key that authenticated the request (set beside [`AuthedMerchant`]).
#[derive(Debug, Clone)]
pub struct AuthedKey {
    /// The public part of the key.
    pub key_id: String,
    /// Rotated away and still in its grace period.
    pub in_grace: bool,
}

/// The authenticated merchant, for operations a key in its rotation grace may not do:
/// managing API keys and webhook endpoints, cancelling payments and re-sending webhooks
/// (403 `key_in_grace`). A key that leaked and was rotated away can then neither mint a key
/// that outlives its grace, nor take the merchant's new key or its notifications away, nor
/// cancel the merchant's payments (signed ones included) or replay old `payment.paid`
/// webhooks; it may only create and read payments until it expires.
/// The second field is the public id of the key that asked: the change itself checks again,
/// under the merchant's lock, that it still works and is not in grace
/// ([`crate::ledger::api_keys::lock_for`]).
#[derive(Debug, Clone)]
pub struct FullKey(pub Merchant, pub String);

impl FullKey {
    /// Who asks, for the ledger's checked changes.
    pub fn manager(&self) -> crate::ledger::api_keys::Manager<'_> {
        crate::ledger::api_keys::Manager {
            merchant_id: self.0.id,
            key_id: &self.1,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for FullKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let AuthedMerchant(merchant) = AuthedMerchant::from_request_parts(parts, state).await?;
        let key = parts
            .extensions
            .get::<AuthedKey>()
            .ok_or(ApiError::Unauthenticated("authentication is required"))?;
        if key.in_grace {
            tracing::warn!(
                merchant_id = %merchant.id,
                key_id = %key.key_id,
                "a key in its rotation grace tried what only a full key may do"
            );
            metrics::counter!("pisgate_key_in_grace_refused_total").increment(1);
            return Err(ApiError::KeyInGrace);
        }
        Ok(FullKey(merchant, key.key_id.clone()))
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
/// key revoked or rotated away) from any process is refused by every replica as soon as the
/// `pisgate_auth` notification arrives (milliseconds); this bound covers a session that
/// died without the socket telling us yet.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(5);
pub use crate::ledger::merchants::AUTH_CHANNEL;
/// At most this many keys are remembered; past it the cache starts over.
const AUTH_CACHE_CAPACITY: usize = 10_000;
/// A key's `last_used_at` is written at most this often (per replica here, across replicas
/// by the statement's own guard), never on every request.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// Verified API keys, by the SHA-256 of the presented key (never the key itself), with the
/// merchant they belong to. Only successes are kept, so unknown keys cannot fill it.
///
/// Two rules keep a refused key from coming back:
/// - It serves and stores only while the LISTEN session it was last cleared under is still
///   the one in place ([`Listener::connection`]): a dropped session stops all caching at
///   once, and a new one serves nothing until the cache has been cleared under it.
/// - A fill (database read, then store) is stored only if no invalidation happened since it
///   began ([`AuthCache::begin_fill`]): a read that saw a key before its revocation cannot
///   put it back after the revocation cleared the cache.
///
/// [`Listener::connection`]: crate::ledger::listener::Listener::connection
#[derive(Debug, Default)]
pub struct AuthCache {
    inner: Mutex<Entries>,
    /// The LISTEN session's number ([`Listener::connection`]): odd while it is in place.
    ///
    /// [`Listener::connection`]: crate::ledger::listener::Listener::connection
    connection: Arc<AtomicU64>,
    /// When this replica last recorded each key's use, by key id (the public part).
    used: Mutex<HashMap<String, Instant>>,
    /// Bounds the database reads of keys not in the cache ([`AuthCache::bounded`]): a flood
    /// of made-up keys (each a read, none cached) then holds a quarter of the pool at most,
    /// and the merchants whose keys are cached, the workers and the probes keep the rest.
    lookups: Option<(Arc<tokio::sync::Semaphore>, Duration)>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Each key and until when it may be served from here.
    keys: HashMap<[u8; 32], (VerifiedKey, Instant)>,
    /// Counts invalidations; a fill that began under another count is not stored.
    generation: u64,
    /// The LISTEN session under which the cache was last cleared.
    synced: u64,
}

impl Entries {
    /// Whether the cache may serve and store under LISTEN session `connection`.
    fn usable(&self, connection: u64) -> bool {
        connection % 2 == 1 && connection == self.synced
    }
}

/// A database read of a key under way: where it started among the invalidations.
#[derive(Debug, Clone, Copy)]
pub struct Fill(u64);

impl AuthCache {
    /// A cache that serves keys only while the LISTEN session numbered by `connection`
    /// ([`Listener::connection`]) lasts and it has been cleared under that session.
    ///
    /// [`Listener::connection`]: crate::ledger::listener::Listener::connection
    pub fn following(connection: Arc<AtomicU64>) -> AuthCache {
        AuthCache {
            connection,
            ..AuthCache::default()
        }
    }

    /// At most a quarter of `pool_size` (at least one) database reads of keys at once; a
    /// read that cannot start within `wait` is answered 503 (the pool's own acquire timeout
    /// is the natural bound).
    pub fn bounded(mut self, pool_size: u32, wait: Duration) -> AuthCache {
        let permits = (pool_size / 4).max(1) as usize;
        self.lookups = Some((Arc::new(tokio::sync::Semaphore::new(permits)), wait));
        self
    }

    /// A turn to read a key from the database (none needed when unbounded); `None` when no
    /// turn came within the bound's wait.
    async fn lookup_turn(&self) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
        let Some((turns, wait)) = &self.lookups else {
            return Some(None);
        };
        match tokio::time::timeout(*wait, turns.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(Some(permit)),
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, hash: &[u8; 32]) -> Option<VerifiedKey> {
        let connection = self.connection.load(Ordering::SeqCst);
        let entries = self.lock();
        if !entries.usable(connection) {
            return None;
        }
        entries
            .keys
            .get(hash)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(k, _)| k.clone())
    }

    /// Call before reading a key from the database; hand the result to [`AuthCache::put`].
    pub fn begin_fill(&self) -> Fill {
        Fill(self.lock().generation)
    }

    /// Remembers a verified key for [`AUTH_CACHE_TTL`] (or until it expires, if sooner),
    /// unless the cache was invalidated since `fill` began or cannot hear invalidations.
    /// Returns whether it was stored.
    pub fn put(&self, fill: Fill, hash: [u8; 32], key: VerifiedKey) -> bool {
        let mut ttl = AUTH_CACHE_TTL;
        if let Some(at) = key.expires_at {
            ttl = ttl.min((at - Utc::now()).to_std().unwrap_or_default());
        }
        let connection = self.connection.load(Ordering::SeqCst);
        let now = Instant::now();
        let mut entries = self.lock();
        if !entries.usable(connection) || entries.generation != fill.0 || ttl.is_zero() {
            return false;
        }
        if entries.keys.len() >= AUTH_CACHE_CAPACITY {
            entries.keys.retain(|_, (_, until)| now < *until);
            if entries.keys.len() >= AUTH_CACHE_CAPACITY {
                entries.keys.clear();
            }
        }
        entries.keys.insert(hash, (key, now + ttl));
        true
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

    /// Forgets every key (the next request of each merchant asks the database) and every
    /// fill under way; from now on the cache may serve under the current LISTEN session.
    pub fn clear(&self) {
        let connection = self.connection.load(Ordering::SeqCst);
        let mut entries = self.lock();
        entries.keys.clear();
        entries.generation += 1;
        entries.synced = connection;
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

/// The key as verified, from the cache or the database.
async fn authenticate(state: &AppState, key: &str) -> Result<Option<VerifiedKey>, ApiError> {
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    if let Some(verified) = state.auth_cache.get(&hash) {
        return Ok(Some(verified));
    }
    let Some(_turn) = state.auth_cache.lookup_turn().await else {
        metrics::counter!("pisgate_auth_lookups_total", "outcome" => "busy").increment(1);
        tracing::warn!("API key reads at their bound: a key was answered 503 unread");
        return Err(ApiError::DatabaseUnavailable);
    };
    let fill = state.auth_cache.begin_fill();
    let Some(verified) = merchants::authenticate_key(&state.pool, key).await? else {
        metrics::counter!("pisgate_auth_lookups_total", "outcome" => "unknown").increment(1);
        return Ok(None);
    };
    metrics::counter!("pisgate_auth_lookups_total", "outcome" => "found").increment(1);
    state.auth_cache.put(fill, hash, verified.clone());
    Ok(Some(verified))
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
    let verified = authenticate(&state, key)
        .await?
        .ok_or(ApiError::Unauthenticated("the API key is not valid"))?;
    let merchant = verified.merchant;
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
    request.extensions_mut().insert(AuthedKey {
        key_id: verified.key_id,
        in_grace: verified.in_grace,
    });
    let mut response = next.run(request).await;
    decision.apply(response.headers_mut());
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> VerifiedKey {
        VerifiedKey {
            merchant: Merchant {
                id: uuid::Uuid::nil(),
                name: "Shop".into(),
                status: "active".into(),
                return_origins: Vec::new(),
                created_at: Utc::now(),
                disabled_at: None,
            },
            key_id: id.into(),
            expires_at: None,
            in_grace: false,
        }
    }

    /// A cache under LISTEN session 1, cleared under it (as the reconnection wake does).
    fn listening() -> (AuthCache, Arc<AtomicU64>) {
        let connection = Arc::new(AtomicU64::new(1));
        let cache = AuthCache::following(connection.clone());
        cache.clear();
        (cache, connection)
    }

    #[test]
    fn a_fill_that_began_before_a_revocation_is_not_stored_after_it() {
        let (cache, _) = listening();
        let hash = [7u8; 32];
        // The fill reads the key from the database (still valid there)...
        let fill = cache.begin_fill();
        // ...the revocation commits and its notification clears the cache...
        cache.clear();
        // ...and only then the fill tries to store what it read.
        assert!(!cache.put(fill, hash, key("a")), "stored a revoked key");
        assert!(cache.get(&hash).is_none());
        // A fill that began after the invalidation is stored as usual.
        let fill = cache.begin_fill();
        assert!(cache.put(fill, hash, key("a")));
        assert_eq!(cache.get(&hash).unwrap().key_id, "a");
    }

    #[test]
    fn nothing_is_served_or_stored_while_the_listen_session_is_down() {
        let (cache, connection) = listening();
        let hash = [1u8; 32];
        assert!(cache.put(cache.begin_fill(), hash, key("a")));
        // The session drops: even (down), nothing served, nothing stored.
        connection.fetch_add(1, Ordering::SeqCst);
        assert!(cache.get(&hash).is_none(), "served while not listening");
        assert!(!cache.put(cache.begin_fill(), [2u8; 32], key("b")));
        // A new session: still nothing until the cache is cleared under it.
        connection.fetch_add(1, Ordering::SeqCst);
        let fill = cache.begin_fill();
        assert!(
            cache.get(&hash).is_none(),
            "served an entry from before the drop"
        );
        assert!(!cache.put(fill, hash, key("a")));
        cache.clear();
        // A fill that began before that clear is refused; a new one is stored.
        assert!(!cache.put(fill, hash, key("a")));
        assert!(cache.put(cache.begin_fill(), hash, key("a")));
        assert!(cache.get(&hash).is_some());
    }

    #[test]
    fn a_key_past_its_expiry_is_not_cached() {
        let (cache, _) = listening();
        let mut k = key("a");
        k.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        assert!(!cache.put(cache.begin_fill(), [3u8; 32], k));
    }
}
