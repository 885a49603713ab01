//! Per-merchant request limits: a fixed window per replica, held in memory.
//!
//! With N replicas behind a load balancer a merchant gets up to N times the limit in the
//! worst case; that is the usual trade for not putting a shared counter on every request's
//! path. Every authenticated answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (seconds until the window resets); a refused one is a 429 with
//! `Retry-After`.

use axum::http::{HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    windows: Mutex<HashMap<Uuid, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    used: u32,
}

/// The outcome of one check, with what the headers should say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    pub reset_after_secs: u64,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            limit,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, merchant: Uuid) -> Decision {
        self.check_at(merchant, Instant::now())
    }

    fn check_at(&self, merchant: Uuid, now: Instant) -> Decision {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > 10_000 {
            let window = self.window;
            windows.retain(|_, w| now.duration_since(w.started) < window);
        }
        let w = windows.entry(merchant).or_insert(Window {
            started: now,
            used: 0,
        });
        if now.duration_since(w.started) >= self.window {
            *w = Window {
                started: now,
                used: 0,
            };
        }
        let allowed = w.used < self.limit;
        if allowed {
            w.used += 1;
        }
        let elapsed = now.duration_since(w.started);
        let reset = self.window.saturating_sub(elapsed);
        Decision {
            allowed,
            limit: self.limit,
            remaining: self.limit - w.used,
            // Round up: "0 seconds" while still limited would invite a busy loop.
            reset_after_secs: reset.as_secs() + u64::from(reset.subsec_nanos() > 0),
        }
    }
}

impl Decision {
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert(
            "x-ratelimit-reset",
            HeaderValue::from(self.reset_after_secs),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_the_limit_then_refuses_until_the_window_resets() {
        let rl = RateLimiter::new(2, Duration::from_secs(10));
        let m = Uuid::new_v4();
        let t0 = Instant::now();
        assert!(rl.check_at(m, t0).allowed);
        let second = rl.check_at(m, t0);
        assert!(second.allowed);
        assert_eq!(second.remaining, 0);
        let third = rl.check_at(m, t0 + Duration::from_secs(3));
        assert!(!third.allowed);
        assert_eq!(third.reset_after_secs, 7);
        assert!(rl.check_at(m, t0 + Duration::from_secs(10)).allowed);
    }

    #[test]
    fn merchants_have_separate_budgets() {
        let rl = RateLimiter::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(rl.check_at(Uuid::new_v4(), t0).allowed);
        assert!(rl.check_at(Uuid::new_v4(), t0).allowed);
    }
}
