//! Sign-in failures per source address: a flood of sign-ins (unknown emails, guesses at many
//! accounts) from one address is refused at once, before the database or a password check.
//!
//! The per-account lock ([`super::MAX_FAILURES`]) stops guesses at one account; it cannot
//! stop a flood over many emails, each of which costs a full Argon2 check (the dummy one for
//! an unknown email, so that timing never tells who exists) and an audit row, and takes a
//! slot of the checks' small semaphore from the operators signing in. Here, past
//! [`FAILURES_PER_SOURCE`] sign-ins from one address within [`WINDOW`] that did not succeed,
//! the address gets `429` with `Retry-After` until the window ends: no check, no database write (one audit
//! row, `sign_in_throttled`, when it starts). A success from the address clears its count.
//!
//! The address is the client's as [`crate::api::client_ip`] tells it (`X-Forwarded-For` only
//! from `server.trusted_proxies`); an IPv6 client counts by its /64, which one host can
//! otherwise rotate through. Counts live in each replica's memory: with N replicas a source
//! gets up to N times the allowance, the usual trade for no shared counter. At most
//! [`MAX_SOURCES`] addresses are tracked; past that, expired ones are dropped, then the
//! oldest: a newcomer always counts alone, so no flood from many addresses can lock out an
//! operator at another. Every attempt is counted when it begins (parallel attempts count
//! as many, before any check), and a success gives the count back. An operator at a
//! loopback address (`kubectl port-forward`, where every operator's peer is 127.0.0.1) is
//! never throttled: one operator's typos must not lock the others out, and whoever reaches
//! the listener that way has the cluster already. The per-account lock still holds there.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins one address may make within [`WINDOW`].
pub const FAILURES_PER_SOURCE: u32 = 50;
/// The window the failures are counted in, from the first.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The most addresses tracked at once.
pub const MAX_SOURCES: usize = 10_000;

/// Where sign-ins come from, as counted: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(std::net::Ipv4Addr),
    V6Net(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => Source::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Count {
    started: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
pub struct Throttle {
    counts: Mutex<HashMap<Source, Count>>,
}

impl Throttle {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Source, Count>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a sign-in from `source` into the count before anything is checked, so that
    /// parallel attempts count as many: `Err(wait)` when the source is refused for that long;
    /// `Ok(true)` when this attempt reached the allowance (the throttle starts: audit it once).
    /// A success gives the count back ([`Throttle::succeeded`]).
    pub fn begin(&self, source: Source, now: Instant) -> Result<bool, Duration> {
        let mut counts = self.counts();
        if !counts.contains_key(&source) && counts.len() >= MAX_SOURCES {
            counts.retain(|_, c| now < c.started + WINDOW);
            if counts.len() >= MAX_SOURCES {
                // Room for the newcomer: the source whose window began first goes.
                if let Some(oldest) = counts
                    .iter()
                    .min_by_key(|(_, c)| c.started)
                    .map(|(k, _)| *k)
                {
                    counts.remove(&oldest);
                }
            }
        }
        let c = counts.entry(source).or_insert(Count {
            started: now,
            failures: 0,
        });
        if now >= c.started + WINDOW {
            *c = Count {
                started: now,
                failures: 0,
            };
        }
        if c.failures >= FAILURES_PER_SOURCE {
            return Err(c.started + WINDOW - now);
        }
        c.failures += 1;
        Ok(c.failures == FAILURES_PER_SOURCE)
    }

    /// A sign-in from `source` succeeded: its count starts over.
    pub fn succeeded(&self, source: Source) {
        self.counts().remove(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> Source {
        Source::of(IpAddr::from([198, 51, 100, last]))
    }

    #[test]
    fn an_address_is_refused_past_its_allowance_until_the_window_ends() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 1..FAILURES_PER_SOURCE {
            assert_eq!(t.begin(v4(7), now), Ok(false), "{i}");
        }
        assert_eq!(
            t.begin(v4(7), now),
            Ok(true),
            "the allowance is reached: audited once"
        );
        assert_eq!(
            t.begin(v4(7), now),
            Err(WINDOW),
            "refused, counted no further"
        );
        assert_eq!(t.begin(v4(8), now), Ok(false), "another address is not");
        let later = now + WINDOW;
        assert_eq!(
            t.begin(v4(7), later),
            Ok(false),
            "the window ended: counted afresh"
        );
    }

    #[test]
    fn a_success_clears_the_count_and_ipv6_counts_by_its_64() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..FAILURES_PER_SOURCE - 1 {
            t.begin(v4(7), now).unwrap();
        }
        t.succeeded(v4(7));
        assert_eq!(t.begin(v4(7), now), Ok(false));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
    }

    #[test]
    fn past_the_most_addresses_the_oldest_goes_and_a_newcomer_counts_alone() {
        let t = Throttle::default();
        let start = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            let at = start + Duration::from_millis(u64::from(i));
            t.begin(Source::V6Net(u64::from(i)), at).unwrap();
        }
        let now = start + Duration::from_secs(60);
        let newcomer = Source::V6Net(u64::MAX);
        assert_eq!(t.begin(newcomer, now), Ok(false));
        assert_eq!(t.counts().len(), MAX_SOURCES, "bounded");
        assert!(
            !t.counts().contains_key(&Source::V6Net(0)),
            "the oldest went"
        );
        for _ in 1..FAILURES_PER_SOURCE {
            t.begin(newcomer, now).unwrap();
        }
        assert!(t.begin(newcomer, now).is_err());
        assert_eq!(
            t.begin(Source::V6Net(u64::MAX - 1), now),
            Ok(false),
            "another newcomer has its own count"
        );
    }
}
