//! One LISTEN connection per replica for every channel pisgate uses (payments to poll,
//! webhooks to send, API keys refused), on a session of its own: `database.direct_url`, or
//! `database.url` when no transaction pooler sits behind it. Behind a transaction pooler
//! without a direct URL there is no LISTEN at all: the poller and the dispatcher fall back
//! to their timers, and the API-key cache stays off (it may only serve keys while it hears
//! every invalidation).

use crate::ledger::merchants::AUTH_CHANNEL;
use crate::ledger::payments::POLL_CHANNEL;
use crate::ledger::webhooks::NOTIFY_CHANNEL;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
        })
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
                "no database session for LISTEN (database.pooler is \"transaction\" and \
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
                this.live.store(true, Ordering::SeqCst);
                // Anything notified while we were away: look once.
                this.wake_all();
                loop {
                    tokio::select! {
                        () = stopped(&mut stop) => {
                            this.live.store(false, Ordering::SeqCst);
                            return;
                        }
                        n = listener.recv() => match n {
                            Ok(n) => {
                                if let Some((_, w)) = this.wakes.iter().find(|(c, _)| *c == n.channel()) {
                                    w.notify_one();
                                }
                            }
                            Err(e) => {
                                this.live.store(false, Ordering::SeqCst);
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
