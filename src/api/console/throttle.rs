//! Sign-in failures per source address: a flood of sign-ins (unknown emails, guesses at many
//! accounts) from one address is refused at once, before the database or a password check.
//!
//! The per-account lock ([`super::MAX_FAILURES`]) stops guesses at one account; it cannot
//! stop a flood over many emails, each of which costs a full Argon2 check (the dummy one for
//! an unknown email, so that timing never tells who exists) and an audit row, and takes a
//! slot of the checks' small semaphore from the operators signing in. Here, past
//! [`FAILURES_PER_SOURCE`] failed sign-ins from one address within [`WINDOW`], the address
//! gets `429` with `Retry-After` until the window ends: no check, no database write (one audit
//! row, `sign_in_throttled`, when it starts). A success from the address clears its count.
//!
//! The address is the client's as [`crate::api::client_ip`] tells it (`X-Forwarded-For` only
//! from `server.trusted_proxies`); an IPv6 client counts by its /64, which one host can
//! otherwise rotate through. Counts live in each replica's memory: with N replicas a source
//! gets up to N times the allowance, the usual trade for no shared counter. At most
//! [`MAX_SOURCES`] addresses are tracked; past that, expired ones are dropped, and when none
//! has expired the newcomers share one count (a flood from that many addresses is throttled
//! as one source rather than growing the map).

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

/// Where sign-ins come from, as counted: an IPv4 address, an IPv6 /64, or `Unknown` (no
/// address, or the shared count of newcomers past [`MAX_SOURCES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(std::net::Ipv4Addr),
    V6Net(u64),
    Unknown,
}

impl Source {
    pub fn of(ip: Option<IpAddr>) -> Source {
        match ip {
            Some(IpAddr::V4(v4)) => Source::V4(v4),
            Some(IpAddr::V6(v6)) => Source::V6Net((u128::from(v6) >> 64) as u64),
            None => Source::Unknown,
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

    /// How long `source` is refused for, or `None` when it may sign in.
    pub fn refused(&self, source: Source, now: Instant) -> Option<Duration> {
        let counts = self.counts();
        let c = counts.get(&source).or_else(|| {
            counts
                .get(&Source::Unknown)
                .filter(|_| counts.len() >= MAX_SOURCES)
        })?;
        let ends = c.started + WINDOW;
        (c.failures >= FAILURES_PER_SOURCE && now < ends).then(|| ends - now)
    }

    /// Counts a failed sign-in from `source`; `true` when this failure reached the allowance
    /// (the throttle starts: audit it once).
    pub fn failed(&self, source: Source, now: Instant) -> bool {
        let mut counts = self.counts();
        if !counts.contains_key(&source) && counts.len() >= MAX_SOURCES {
            counts.retain(|_, c| now < c.started + WINDOW);
        }
        let key = if counts.contains_key(&source) || counts.len() < MAX_SOURCES {
            source
        } else {
            Source::Unknown
        };
        let c = counts.entry(key).or_insert(Count {
            started: now,
            failures: 0,
        });
        if now >= c.started + WINDOW {
            *c = Count {
                started: now,
                failures: 0,
            };
        }
        c.failures = c.failures.saturating_add(1);
        c.failures == FAILURES_PER_SOURCE
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
        Source::of(Some(IpAddr::from([198, 51, 100, last])))
    }

    #[test]
    fn an_address_is_refused_past_its_allowance_until_the_window_ends() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 1..FAILURES_PER_SOURCE {
            assert!(!t.failed(v4(7), now), "{i}");
            assert_eq!(t.refused(v4(7), now), None);
        }
        assert!(
            t.failed(v4(7), now),
            "the allowance is reached: audited once"
        );
        assert_eq!(t.refused(v4(7), now), Some(WINDOW));
        assert!(!t.failed(v4(7), now), "only once");
        assert_eq!(t.refused(v4(8), now), None, "another address is not");
        let later = now + WINDOW;
        assert_eq!(t.refused(v4(7), later), None, "the window ended");
        assert!(!t.failed(v4(7), later), "counted afresh");
    }

    #[test]
    fn a_success_clears_the_count_and_ipv6_counts_by_its_64() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..FAILURES_PER_SOURCE - 1 {
            t.failed(v4(7), now);
        }
        t.succeeded(v4(7));
        assert!(!t.failed(v4(7), now));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(Some(a)), Source::of(Some(b)));
        assert_ne!(Source::of(Some(a)), Source::of(Some(c)));
    }

    #[test]
    fn past_the_most_addresses_newcomers_share_one_count() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            t.failed(Source::V6Net(u64::from(i)), now);
        }
        let newcomer = Source::V6Net(u64::MAX);
        for _ in 0..FAILURES_PER_SOURCE {
            t.failed(newcomer, now);
        }
        assert!(t.refused(newcomer, now).is_some());
        assert!(
            t.refused(Source::V6Net(u64::MAX - 1), now).is_some(),
            "another newcomer shares the count"
        );
        assert_eq!(
            t.refused(Source::V6Net(1), now),
            None,
            "a tracked one keeps its own"
        );
        assert!(t.counts().len() <= MAX_SOURCES + 1);
        // Once the tracked ones expire, a newcomer gets a count of its own again.
        let later = now + WINDOW;
        assert!(!t.failed(Source::V6Net(u64::MAX - 2), later));
        assert_eq!(t.refused(Source::V6Net(u64::MAX - 2), later), None);
    }
}
