//! Whether the database can be reached right now, so that callers can answer an outage
//! at once (`503 database_unavailable`) instead of each waiting out the pool's acquire
//! timeout.
//!
//! [`DbHealth`] is told about connection failures as they happen ([`DbHealth::observe`]) and
//! a watchdog ([`DbHealth::watch`]) probes the database every interval with a bounded
//! `SELECT clock_timestamp()` (which also measures this replica's clock skew); the first failure marks it down, the first success up again. A request that
//! waits on the database longer than it should, or that fails to reach it, asks for a
//! [`DbHealth::check_now`]: one fresh connection outside the pool (the pool retries refused
//! connections until its acquire timeout, which would keep the first requests after a crash
//! waiting seconds); refused means down at once, and waiting requests are answered through
//! [`DbHealth::went_down`]. It never
//! decides anything about data: a query error that is not about reaching the database
//! (a constraint, a serialization failure) is not an outage.

use super::Db;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// The longest a probe may take before the database counts as down.
pub const PROBE_BOUND: Duration = Duration::from_secs(3);

/// Shared, cheap to clone.
#[derive(Debug, Clone)]
pub struct DbHealth {
    down: Arc<AtomicBool>,
    /// Sends `true` whenever the database is marked down (requests waiting on it answer).
    changes: Arc<watch::Sender<bool>>,
    /// One [`DbHealth::check_now`] at a time per replica.
    checking: Arc<AtomicBool>,
}

impl Default for DbHealth {
    fn default() -> Self {
        DbHealth {
            down: Arc::default(),
            changes: Arc::new(watch::channel(false).0),
            checking: Arc::default(),
        }
    }
}

/// After a check found the database reachable, the next one waits this long.
pub const CHECK_SPACING: Duration = Duration::from_secs(1);

/// How long [`DbHealth::check_now`]'s connection may take; a slower one proves nothing.
pub const CHECK_BOUND: Duration = Duration::from_millis(800);

/// Whether an error means the database could not be reached (or went away), as opposed to a
/// query the database refused.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exceptions; 57P01..57P03: shutdown, crash, not yet
            // accepting connections; 53300: too many connections; 55000 at connect: the
            // database is not accepting connections; 25006: a write reached a server that
            // is read-only (a standby not yet promoted, a pooler repointed mid-failover).
            // PgBouncer's own errors (cannot connect, server conn crashed, query_wait_timeout)
            // are 08P01.
            code.starts_with("08")
                || matches!(
                    &*code,
                    "57P01" | "57P02" | "57P03" | "53300" | "55000" | "25006"
                )
        }),
        _ => false,
    }
}

/// Whether an error chain holds a database error that means "unreachable".
pub fn chain_is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .is_some_and(is_unavailable)
    })
}

impl DbHealth {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn set(&self, down: bool) {
        let was = self.down.swap(down, Ordering::Relaxed);
        self.changes.send_replace(down);
        if was != down {
            if down {
                tracing::error!("the database is unreachable; answering 503 until it is back");
            } else {
                tracing::info!("the database is reachable again");
            }
            metrics::gauge!("pisgate_database_up").set(if down { 0.0 } else { 1.0 });
        }
    }

    /// Marks the database down when `e` says it is unreachable.
    pub fn observe(&self, e: &sqlx::Error) {
        if is_unavailable(e) {
            self.set(true);
        }
    }

    /// Resolves once the database is marked down (at once if it is).
    pub async fn went_down(&self) {
        let mut rx = self.changes.subscribe();
        let _ = rx.wait_for(|down| *down).await;
    }

    /// Opens one connection outside the pool (bounded by [`CHECK_BOUND`]) and marks the
    /// database down if the server refuses or cannot be reached; a connection that only
    /// takes long marks nothing. Concurrent calls share the one check in flight.
    pub async fn check_now(&self, options: &sqlx::postgres::PgConnectOptions) {
        use sqlx::Connection;
        if self.is_down() || self.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let attempt = tokio::time::timeout(
            CHECK_BOUND,
            sqlx::postgres::PgConnection::connect_with(options),
        )
        .await;
        match attempt {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                // Reachable: slow requests (a slow bank) ask again at most once a second,
                // so a busy replica does not open a connection per request.
                tokio::time::sleep(CHECK_SPACING).await;
            }
            Ok(Err(e)) if is_unavailable(&e) => {
                tracing::warn!(error = %e, "a fresh connection to the database failed");
                self.set(true);
            }
            Ok(Err(_)) | Err(_) => {}
        }
        self.checking.store(false, Ordering::Release);
    }

    /// One bounded probe. It reads the database's clock too: the answer, less the middle of
    /// the round trip on this replica's clock, is this replica's clock skew (see
    /// [`observe_skew`]).
    pub async fn probe(&self, pool: &Db, bound: Duration) -> bool {
        let sent = chrono::Utc::now();
        let answer = tokio::time::timeout(
            bound,
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>("SELECT clock_timestamp()")
                .fetch_one(pool),
        )
        .await;
        let ok = match answer {
            Ok(Ok(database_now)) => {
                let received = chrono::Utc::now();
                observe_skew(database_now - (sent + (received - sent) / 2));
                true
            }
            _ => false,
        };
        self.set(!ok);
        ok
    }

    /// Probes every `interval` until `stop` turns true. A probe may take up to
    /// [`PROBE_BOUND`]: a database that refuses connections fails at once, and a loaded one
    /// that answers slowly is not down (a bound as short as the interval would keep a
    /// recovering database marked down for as long as the machine is busy).
    pub async fn watch(self, pool: Db, interval: Duration, mut stop: watch::Receiver<bool>) {
        metrics::gauge!("pisgate_database_up").set(1.0);
        loop {
            self.probe(&pool, PROBE_BOUND).await;
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Beyond this much, the skew is logged as a warning (at most once a minute).
pub const SKEW_WARN: Duration = Duration::from_secs(1);

/// Records the database's clock less this replica's (`pisgate_clock_skew_seconds`).
///
/// Replicas write times from their own clock (ledger events, leases, when a payment is polled
/// next) that other replicas and the database's `now()` compare: pisgate assumes clocks kept
/// in step by NTP. A replica whose clock drifts polls too early or too late, and its leases
/// run out early or late; this gauge (and the `PisgateClockSkew` alert) makes that visible.
fn observe_skew(skew: chrono::TimeDelta) {
    static WARNED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let seconds = skew
        .num_microseconds()
        .map_or(f64::MAX, |us| us as f64 / 1e6);
    metrics::gauge!("pisgate_clock_skew_seconds").set(seconds);
    if seconds.abs() > SKEW_WARN.as_secs_f64() {
        let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *warned = Some(std::time::Instant::now());
            tracing::warn!(
                skew_seconds = seconds,
                "this replica's clock and the database's differ: leases and poll times written \
                 here are off by as much; check NTP on this node"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_outages_and_query_errors_are_not() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused"
        ))));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        let wrapped = anyhow::Error::new(sqlx::Error::PoolTimedOut).context("saving");
        assert!(chain_is_unavailable(&wrapped));
        assert!(!chain_is_unavailable(&anyhow::anyhow!("other")));
    }
}
