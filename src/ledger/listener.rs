//! One LISTEN connection per replica for every channel pisgate uses (payments to poll,
//! webhooks to send, API keys refused), on a session of its own: `database.direct_url`, or
//! `database.url` when no transaction pooler sits behind it. Behind a transaction pooler
//! without a direct URL there is no LISTEN at all: the poller and the dispatcher fall back
//! to their timers, and the API-key cache stays off (it may only serve keys while it hears
//! every invalidation).
//!
//! A lost connection is noticed, never papered over: sqlx's `recv()` reconnects silently and
//! drops what was notified meanwhile, so this uses `try_recv()` without eager reconnection,
//! marks the LISTEN down the moment the session is gone, and only marks it up again (with a
//! new [`Listener::connection`] number and a wake on every channel) once a fresh LISTEN is in
//! place. Whoever caches on the strength of notifications must compare that number.

use crate::ledger::merchants::AUTH_CHANNEL;
use crate::ledger::payments::POLL_CHANNEL;
use crate::ledger::webhooks::NOTIFY_CHANNEL;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Every channel anything LISTENs on.
const CHANNELS: [&str; 3] = [POLL_CHANNEL, NOTIFY_CHANNEL, AUTH_CHANNEL];

/// Wakes per channel, and whether the LISTEN is in place.
#[derive(Debug)]
pub struct Listener {
    url: Option<String>,
    wakes: Vec<(&'static str, Arc<Notify>)>,
    live: Arc<AtomicBool>,
    /// Counts every change of the LISTEN's state: odd while it is in place, even while not.
    /// Two equal odd readings mean no notification can have been missed in between.
    connection: Arc<AtomicU64>,
}

impl Listener {
    /// A listener on `url` (`None`: never connects). Nothing happens until [`Listener::spawn`].
    pub fn new(url: Option<&str>) -> Arc<Listener> {
        Arc::new(Listener {
            url: url.map(str::to_owned),
            wakes: CHANNELS
                .iter()
                .map(|c| (*c, Arc::new(Notify::new())))
                .collect(),
            live: Arc::default(),
            connection: Arc::default(),
        })
    }

    /// The LISTEN session's number: odd while it is in place (the same odd number for as
    /// long as that one session lasts), even while there is none.
    pub fn connection(&self) -> u64 {
        self.connection.load(Ordering::SeqCst)
    }

    /// The shared counter behind [`Listener::connection`], for a cache that must compare it
    /// without holding the listener.
    pub fn connection_counter(&self) -> Arc<AtomicU64> {
        self.connection.clone()
    }

    fn went_up(&self) {
        if !self.live.swap(true, Ordering::SeqCst) {
            self.connection.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn went_down(&self) {
        if self.live.swap(false, Ordering::SeqCst) {
            self.connection.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Notified on each notification of `channel`, and once after every reconnection (a
    /// notification may have been missed).
    pub fn wake(&self, channel: &str) -> Arc<Notify> {
        self.wakes
            .iter()
            .find(|(c, _)| *c == channel)
            .map(|(_, w)| w.clone())
            .unwrap_or_else(|| panic!("no LISTEN channel {channel:?}: add it to CHANNELS"))
    }

    /// True exactly while the LISTEN is in place.
    pub fn live(&self) -> Arc<AtomicBool> {
        self.live.clone()
    }

    /// Whether this replica has a session to LISTEN on at all.
    pub fn configured(&self) -> bool {
        self.url.is_some()
    }

    fn wake_all(&self) {
        for (_, w) in &self.wakes {
            w.notify_one();
        }
    }

    /// Keeps the LISTEN in place (reconnecting every second while it cannot) until `stop`.
    pub fn spawn(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(url) = self.url.clone() else {
            tracing::info!(
                "no database session for LISTEN (database.pooler is a transaction pooler and \
                 database.direct_url is not set): workers poll on their timers and API keys \
                 are not cached"
            );
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let attempt = async {
                    let mut l = sqlx::postgres::PgListener::connect(&url).await?;
                    // A lost session must surface as `Ok(None)` here, not be replaced
                    // behind our back while notifications are lost.
                    l.eager_reconnect(false);
                    l.listen_all(CHANNELS).await?;
                    Ok::<_, sqlx::Error>(l)
                };
                let mut listener = tokio::select! {
                    () = stopped(&mut stop) => return,
                    r = attempt => match r {
                        Ok(l) => l,
                        Err(e) => {
                            // sqlx's error kinds never quote the URL.
                            tracing::warn!(error = %e, "cannot LISTEN; retrying");
                            tokio::select! {
                                () = stopped(&mut stop) => return,
                                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            }
                        }
                    },
                };
                this.went_up();
                // Anything notified while we were away: look once.
                this.wake_all();
                loop {
                    tokio::select! {
                        () = stopped(&mut stop) => {
                            this.went_down();
                            return;
                        }
                        n = listener.try_recv() => match n {
                            Ok(Some(n)) => {
                                if let Some((_, w)) = this.wakes.iter().find(|(c, _)| *c == n.channel()) {
                                    w.notify_one();
                                }
                            }
                            Ok(None) => {
                                this.went_down();
                                tracing::warn!("LISTEN connection lost; reconnecting");
                                this.wake_all();
                                break;
                            }
                            Err(e) => {
                                this.went_down();
                                tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                                this.wake_all();
                                break;
                            }
                        }
                    }
                }
            }
        });
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
