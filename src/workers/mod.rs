//! Background workers inside `serve`: the status poller, the token refresher, the webhook
//! dispatcher and the ledger checkpointer (each switchable per replica), and the idempotency
//! purger.
//!
//! Replicas coordinate through Postgres only: work is claimed with `FOR UPDATE SKIP LOCKED`
//! and a lease (the claim moves the row's due time to the end of the lease and names the
//! owner), committed, done outside any transaction, then recorded. A replica that dies
//! simply lets its leases run out; one that is asked to stop finishes or abandons its
//! in-flight work within a bound and hands its leases back at once.

pub mod checkpointer;
pub mod poller;
pub mod purger;
pub mod refresher;
pub mod webhooks;

use crate::bank::Banks;
use crate::config::Settings;
pub use crate::finishing::Finishing;
use crate::ledger::Db;
use crate::ledger::crypto::TokenCipher;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What every worker needs. Cheap to clone.
#[derive(Clone)]
pub struct WorkerContext {
    pub pool: Db,
    pub settings: Arc<Settings>,
    /// The configured banks; a payment's calls go to the bank it recorded.
    pub banks: Arc<Banks>,
    pub cipher: Arc<TokenCipher>,
    /// This replica's name on the leases it takes (host name and a random suffix).
    pub owner: Arc<str>,
    /// Ends the claims of quiet polls many at a time.
    pub reschedules: Arc<poller::GroupReschedule>,
    /// Wakes the poller and the dispatcher when the database notifies them.
    pub listener: Arc<crate::ledger::listener::Listener>,
    /// Bank exchanges that must reach their commit once begun (see [`Finishing`]).
    pub finishing: Finishing,
}

impl WorkerContext {
    pub fn new(
        pool: Db,
        settings: Arc<Settings>,
        banks: Arc<Banks>,
        cipher: Arc<TokenCipher>,
    ) -> WorkerContext {
        WorkerContext {
            pool,
            listener: crate::ledger::listener::Listener::new(settings.database.session_url()),
            settings,
            banks,
            cipher,
            owner: owner_id().into(),
            reschedules: Arc::default(),
            finishing: Finishing::default(),
        }
    }
}

/// `<host>-<8 hex>`: unique per process, readable in the database.
pub fn owner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "pisgate".to_owned());
    let suffix: u32 = rand::thread_rng().r#gen();
    format!("{host}-{suffix:08x}")
}

/// The running workers of one replica.
pub struct Workers {
    handles: Vec<(&'static str, JoinHandle<()>)>,
}

impl Workers {
    /// Starts the workers the settings switch on; they stop when `stop` turns true.
    pub fn spawn(ctx: WorkerContext, stop: watch::Receiver<bool>) -> Workers {
        let mut handles = Vec::new();
        let s = &ctx.settings;
        let mut start = |name: &'static str, run: WorkerRun| {
            handles.push((
                name,
                tokio::spawn(supervise(
                    name,
                    ctx.clone(),
                    stop.clone(),
                    run,
                    RESTART_PAUSE,
                )),
            ));
        };
        if s.poller.enabled {
            start("poller", |c, s| Box::pin(poller::run(c, s)));
        }
        if s.refresher.enabled {
            start("refresher", |c, s| Box::pin(refresher::run(c, s)));
        }
        // Cheap and idempotent: every replica runs it.
        start("purger", |c, s| Box::pin(purger::run(c, s)));
        if s.webhooks.enabled {
            start("webhooks", |c, s| Box::pin(webhooks::run(c, s)));
        }
        if s.ledger.checkpoint_enabled {
            start("checkpointer", |c, s| Box::pin(checkpointer::run(c, s)));
        }
        tracing::info!(
            owner = %ctx.owner,
            workers = ?handles.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "background workers started"
        );
        Workers { handles }
    }

    /// Waits for every worker to finish (they were told to stop through the watch), at most
    /// `bound`; a worker still running then is aborted. Its leases run out on their own.
    pub async fn join(self, bound: Duration) {
        let deadline = Instant::now() + bound;
        for (name, mut handle) in self.handles {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(())) => tracing::info!(worker = name, "worker stopped"),
                Ok(Err(e)) => tracing::error!(worker = name, error = %e, "worker failed"),
                Err(_) => {
                    tracing::warn!(worker = name, "worker did not stop in time; aborting it");
                    handle.abort();
                }
            }
        }
    }
}

pub use crate::ledger::listener::stopped;

/// One run of a worker loop.
type WorkerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A worker loop as [`Workers::spawn`] starts it (`C`: what it runs with, [`WorkerContext`]).
type WorkerRun<C = WorkerContext> = fn(C, watch::Receiver<bool>) -> WorkerFuture;

/// The pause before a panicked worker runs again: it doubles from the first to the second
/// after each panic in a row, and starts over once a run has lasted the second.
const RESTART_PAUSE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// Aborts the task when dropped: a supervisor aborted at shutdown takes its worker with it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a worker loop, and runs it again when it panics (after a pause, [`RESTART_PAUSE`])
/// until it is told to stop: one row whose read panics (a time edited in SQL beyond what
/// chrono holds, a bug) must not end a replica's poller, dispatcher or refresher for good,
/// leaving payments nobody asks the bank about and merchants who hear nothing. Each restart
/// is logged and counted (`pisgate_worker_restarts_total{worker}`, alert
/// `PisgateWorkerRestarting`). The loops start from the database each time; what a dead run
/// held (leases) runs out on its own.
async fn supervise<C: Clone>(
    name: &'static str,
    ctx: C,
    stop: watch::Receiver<bool>,
    run: WorkerRun<C>,
    (first_pause, longest_pause): (Duration, Duration),
) {
    let mut pause = first_pause;
    loop {
        let started = Instant::now();
        let mut task = AbortOnDrop(tokio::spawn(run(ctx.clone(), stop.clone())));
        match (&mut task.0).await {
            Ok(()) => return,
            Err(e) if e.is_panic() && !*stop.borrow() => {}
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(worker = name, "worker panicked while stopping");
                }
                return;
            }
        }
        if started.elapsed() >= longest_pause {
            pause = first_pause;
        }
        metrics::counter!("pisgate_worker_restarts_total", "worker" => name).increment(1);
        tracing::error!(
            worker = name,
            restart_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            "worker panicked; running it again"
        );
        let mut until_stop = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(&mut until_stop) => return,
        }
        pause = (pause * 2).min(longest_pause);
    }
}

/// Spaces calls to at most `per_sec` a second, allowing a burst of one second's worth.
/// Shared by every task of one worker in one replica.
pub struct Pacer {
    interval: Duration,
    burst: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn new(per_sec: u32) -> Pacer {
        let interval = Duration::from_secs(1) / per_sec.max(1);
        Pacer {
            interval,
            burst: Duration::from_secs(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this call's slot.
    pub async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let earliest = now.checked_sub(self.burst).unwrap_or(now);
            let at = (*next).max(earliest);
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// How long until the next call may go (a `hold` still running, or the rate).
    pub async fn held_for(&self) -> Duration {
        self.next
            .lock()
            .await
            .saturating_duration_since(Instant::now())
    }

    /// Holds every call back for `wait` (the bank said "slow down" for our client).
    pub async fn hold(&self, wait: Duration) {
        let mut next = self.next.lock().await;
        let until = Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        *next = (*next).max(until);
    }
}

/// One [`Pacer`] per bank, each at the same rate: a bank's `Retry-After` holds back the
/// calls to that bank only.
pub struct Pacers {
    per_sec: u32,
    banks: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Pacer>>>,
}

impl Pacers {
    pub fn new(per_sec: u32) -> Pacers {
        Pacers {
            per_sec,
            banks: std::sync::Mutex::default(),
        }
    }

    /// The pacer of the bank `bank` (the settings' id).
    pub fn for_bank(&self, bank: &str) -> std::sync::Arc<Pacer> {
        let mut banks = self.banks.lock().unwrap_or_else(|e| e.into_inner());
        banks
            .entry(bank.to_owned())
            .or_insert_with(|| std::sync::Arc::new(Pacer::new(self.per_sec)))
            .clone()
    }
}

/// `base` lengthened by a random 0..=`percent`% (jitter that never shortens a wait).
pub fn stretch(base: Duration, percent: u32) -> Duration {
    let extra = base.as_millis() as u64 * u64::from(percent) / 100;
    base + Duration::from_millis(rand::thread_rng().gen_range(0..=extra))
}

/// `base` moved by a random ±`percent`%.
pub fn jitter(base: Duration, percent: u32) -> Duration {
    let ms = base.as_millis() as i64;
    let span = ms * i64::from(percent) / 100;
    let delta = rand::thread_rng().gen_range(-span..=span);
    Duration::from_millis((ms + delta).max(0) as u64)
}

/// Exponential backoff after `failures` consecutive failures: `base * 2^(failures-1)`,
/// capped at `max`, then "equal jitter" (between half and all of it).
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let full = base.saturating_mul(1u32 << exp).min(max);
    let half = full / 2;
    half + Duration::from_millis(rand::thread_rng().gen_range(0..=half.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretch_never_shortens_and_stays_within_its_bound() {
        for _ in 0..200 {
            let d = stretch(Duration::from_secs(10), 10);
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for _ in 0..100 {
            let b1 = backoff(base, max, 1);
            assert!(b1 >= Duration::from_millis(500) && b1 <= base, "{b1:?}");
            let b4 = backoff(base, max, 4);
            assert!(
                b4 >= Duration::from_secs(4) && b4 <= Duration::from_secs(8),
                "{b4:?}"
            );
            let b30 = backoff(base, max, 30);
            assert!(b30 >= Duration::from_secs(30) && b30 <= max, "{b30:?}");
        }
    }

    #[test]
    fn jitter_stays_within_its_percentage() {
        for _ in 0..200 {
            let d = jitter(Duration::from_secs(100), 20);
            assert!(
                d >= Duration::from_secs(80) && d <= Duration::from_secs(120),
                "{d:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_calls_after_its_burst() {
        let pacer = Pacer::new(10);
        let start = Instant::now();
        // A fresh pacer has no burst credit yet: 10 calls take about a second.
        for _ in 0..10 {
            pacer.acquire().await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900), "{took:?}");
        assert!(took <= Duration::from_millis(1100), "{took:?}");
    }

    /// A run that panics on its first `ctx.1` calls, then waits for the stop.
    fn panics_at_first(
        ctx: (Arc<std::sync::atomic::AtomicUsize>, usize),
        mut stop: watch::Receiver<bool>,
    ) -> WorkerFuture {
        Box::pin(async move {
            let run = ctx.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if run <= ctx.1 {
                panic!("run {run} panics");
            }
            stopped(&mut stop).await;
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicked_worker_runs_again_after_a_doubling_pause_until_stopped() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let start = Instant::now();
        let pauses = (Duration::from_secs(1), Duration::from_secs(60));
        let supervisor = tokio::spawn(supervise(
            "test",
            (runs.clone(), 3),
            stop,
            panics_at_first,
            pauses,
        ));
        while runs.load(std::sync::atomic::Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Three panics, three pauses: 1 s, 2 s, 4 s.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(7) && took < Duration::from_secs(8),
            "{took:?}"
        );
        assert!(!supervisor.is_finished(), "the fourth run is still running");
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), supervisor)
            .await
            .expect("the supervisor returns once stopped")
            .unwrap();
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_stopped_during_the_pause_is_not_run_again() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let pauses = (Duration::from_secs(30), Duration::from_secs(60));
        let supervisor = tokio::spawn(supervise(
            "test",
            (runs.clone(), usize::MAX),
            stop,
            panics_at_first,
            pauses,
        ));
        while runs.load(std::sync::atomic::Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), supervisor)
            .await
            .expect("the supervisor returns during its pause")
            .unwrap();
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
