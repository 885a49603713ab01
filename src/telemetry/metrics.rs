//! The Prometheus side: one process-wide recorder, the HELP text of every family, and the
//! gauges nobody else keeps: build info (set once), and the process and database-pool gauges,
//! read when `/metrics` is scraped ([`refresh_on_scrape`]).
//!
//! The process series are Prometheus's standard `process_*` ones, read from `/proc/self`
//! (Linux only; elsewhere they are absent). `process_cpu_seconds_total` has whole-second
//! resolution (the recorder's counters are integers), enough for a rate over minutes.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// `pisgate_build_info`'s `git_sha` label, when the build set `PISGATE_GIT_SHA`.
const GIT_SHA: Option<&str> = option_env!("PISGATE_GIT_SHA");

/// Latency buckets in seconds, from 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe_metrics();
            let version = env!("CARGO_PKG_VERSION");
            match GIT_SHA.filter(|sha| !sha.is_empty()) {
                Some(sha) => {
                    metrics::gauge!("pisgate_build_info", "version" => version, "git_sha" => sha)
                        .set(1.0)
                }
                None => metrics::gauge!("pisgate_build_info", "version" => version).set(1.0),
            }
            // Series that alerts watch exist from the start, at zero, so that `increase()`
            // sees their first change.
            metrics::counter!("pisgate_payments_created_total").absolute(0);
            metrics::counter!("pisgate_ledger_verify_failures_total").absolute(0);
            metrics::counter!("pisgate_ledger_binding_mismatches_total").absolute(0);
            for worker in ["poller", "refresher", "purger", "webhooks", "checkpointer"] {
                metrics::counter!("pisgate_worker_restarts_total", "worker" => worker).absolute(0);
            }
            for outcome in ["ok", "failed", "retried"] {
                metrics::counter!("pisgate_token_exchanges_total", "outcome" => outcome)
                    .absolute(0);
            }
            handle
        })
        .clone()
}

/// HELP text for every series pisgate exports (Prometheus's format wants one per family;
/// `promtool check metrics` refuses families without).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "pisgate_http_requests_total",
        "HTTP requests answered, by method, route and status."
    );
    describe_histogram!(
        "pisgate_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by method, route and status."
    );
    describe_counter!(
        "pisgate_bank_requests_total",
        "Calls to the banks, by bank (its id in the settings), operation and outcome (every attempt, retries included)."
    );
    describe_histogram!(
        "pisgate_bank_request_duration_seconds",
        Unit::Seconds,
        "Time of one call to a bank, by bank, operation and outcome."
    );
    describe_counter!(
        "pisgate_bank_config_errors_total",
        "Bank refusals that are our configuration's fault (credentials, signature, clock), by code."
    );
    describe_counter!(
        "pisgate_bank_sca_status_unknown_total",
        "Berlin Group SCA status reads behind a RJCT or PDNG that failed (404, a refusal, 5xx, unreadable), by bank and error kind; the transaction status was applied with the SCA unknown."
    );
    describe_counter!(
        "pisgate_bank_choices_total",
        "Banks chosen by shoppers on pisgate's page (deferred initiation), by bank."
    );
    describe_counter!(
        "pisgate_deferred_initiations_total",
        "Bank attempts started from the shopper's page (deferred initiation), by bank and outcome (initiated, outcome_unknown, not_created, refused, superseded)."
    );
    describe_counter!(
        "pisgate_authorisations_started_total",
        "Authorisations pisgate started at the bank for a shopper at the hop (explicit redirect, decoupled SCA), by bank and outcome (redirect, decoupled, or the error kind)."
    );
    describe_counter!(
        "pisgate_debtor_account_refused_total",
        "IBANs refused on pisgate's page before any bank call, by reason (empty, invalid_characters, invalid_country, invalid_length, invalid_checksum)."
    );
    describe_counter!(
        "pisgate_unknown_bank_status_total",
        "Bank statuses pisgate does not know; the payment was left unchanged."
    );
    describe_counter!(
        "pisgate_bank_disagreements_total",
        "Final payment statuses a later bank read contradicts (e.g. expired while the bank says Paid); each is kept, recorded and shown on the console's attention page."
    );
    describe_counter!(
        "pisgate_ledger_binding_mismatches_total",
        "Actions refused because a row is not what its ledger recorded (a row rewritten outside pisgate): a bank report for a bank id the ledger never recorded, a shopper not sent to a bank link the ledger never recorded, a webhook event whose payload fails its MAC, an idempotency answer that fails its MAC. Investigate, run `pisgate ledger verify`."
    );
    describe_counter!(
        "pisgate_worker_restarts_total",
        "Background worker loops (poller, refresher, webhooks, purger, checkpointer) run again after a panic, by worker. Any is a bug or a row edited outside pisgate: read the replica's log (\"worker panicked\")."
    );
    describe_counter!(
        "pisgate_polls_total",
        "Status polls by outcome (changed, unchanged, not_yet, expired, rate_limited, unavailable, failed, ...)."
    );
    describe_gauge!(
        "pisgate_poll_queue_depth",
        "Payments due for a status poll and not yet claimed."
    );
    describe_gauge!(
        "pisgate_poll_oldest_due_seconds",
        Unit::Seconds,
        "How late the oldest payment due for a poll is."
    );
    describe_gauge!(
        "pisgate_poll_frozen_schedules",
        "Payments whose next poll lies further ahead than any schedule pisgate sets (frozen)."
    );
    describe_histogram!(
        "pisgate_poll_lag_seconds",
        Unit::Seconds,
        "From a payment's due time to its claim by a poller."
    );
    describe_counter!(
        "pisgate_token_refreshes_total",
        "Shopper token refreshes by outcome."
    );
    describe_counter!(
        "pisgate_webhook_deliveries_total",
        "Webhook delivery attempts by outcome."
    );
    describe_histogram!(
        "pisgate_webhook_delivery_lag_seconds",
        Unit::Seconds,
        "From a status change to its webhook being delivered."
    );
    describe_gauge!(
        "pisgate_webhook_queue_depth",
        "Webhook deliveries due and not yet claimed."
    );
    describe_counter!(
        "pisgate_idempotency_keys_purged_total",
        "Idempotency keys deleted after their retention."
    );
    describe_gauge!(
        "pisgate_database_up",
        "1 while the database answers the watchdog's probe, 0 during an outage."
    );
    describe_gauge!(
        "pisgate_clock_skew_seconds",
        Unit::Seconds,
        "The database's clock less this replica's, measured by the watchdog's probe (the middle of its round trip). Replicas compare times written by each other and by the database: keep it well under a second (NTP)."
    );
    describe_gauge!(
        "pisgate_database_replica_lag_seconds",
        Unit::Seconds,
        "How far the read replica (database.read_url) is behind the primary: seconds since the last transaction it replayed, 0 when it has replayed all the primary had written."
    );
    describe_gauge!(
        "pisgate_database_replica_lag_bytes",
        Unit::Bytes,
        "Bytes of WAL the primary had written that the read replica had not replayed, at the last probe."
    );
    describe_gauge!(
        "pisgate_database_replica_in_use",
        "1 while list reads go to the read replica (reachable, within database.read_max_lag), 0 while they go to the primary."
    );
    describe_gauge!(
        "pisgate_build_info",
        "Always 1; the labels name the running version (and git commit when known)."
    );
    describe_gauge!(
        "pisgate_ready",
        "1 while /readyz answers 200 (database reachable, migrations applied, not stopping), else 0."
    );
    describe_counter!(
        "pisgate_shopper_link_previews_total",
        "Link previews, HEAD requests and prefetches of a shopper's link (the hop, the BankID page) answered with the neutral page, acting on nothing."
    );
    describe_counter!(
        "pisgate_payments_created_total",
        "Payments created (first attempts; replays and resumed attempts are not counted)."
    );
    describe_counter!(
        "pisgate_payees_refused_total",
        "Payment creations refused because the creditor is not a registered payee of a merchant that pays registered payees only."
    );
    describe_counter!(
        "pisgate_key_in_grace_refused_total",
        "Requests refused because a key in its rotation grace tried to manage API keys or webhook endpoints (a leaked key at work?)."
    );
    describe_counter!(
        "pisgate_payments_finished_total",
        "Payments that reached a final status, by status (paid, rejected, authorization_failed, cancelled, expired, failed)."
    );
    describe_counter!(
        "pisgate_auth_lookups_total",
        "API keys read from the database (not in the replica's cache), by outcome: found, unknown, busy (no turn within the pool's acquire timeout: at most a quarter of the pool reads keys at once; answered 503)."
    );
    describe_counter!(
        "pisgate_token_exchanges_total",
        "Authorization-code exchanges at the bank: ok or failed once per exchange, retried per retry."
    );
    describe_counter!(
        "pisgate_bank_submissions_total",
        "Submissions of signed payments to a bank that executes only on pisgate's submission (OP), by bank and outcome (answered, pending, refused, outcome_unknown, withheld)."
    );
    describe_counter!(
        "pisgate_ledger_verify_failures_total",
        "Ledger integrity problems the checkpoint worker found (a payment's head behind the last checkpoint, checkpointed payments gone); run `pisgate ledger verify`."
    );
    describe_gauge!(
        "pisgate_db_pool_connections",
        "Database connections of this replica's pool, by state (idle, used)."
    );
    describe_gauge!(
        "pisgate_db_pool_max",
        "The most connections this replica's pool may open (database.max_connections)."
    );
    describe_counter!(
        "process_cpu_seconds_total",
        Unit::Seconds,
        "Total user and system CPU time spent in seconds."
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory size in bytes."
    );
    describe_gauge!(
        "process_virtual_memory_bytes",
        Unit::Bytes,
        "Virtual memory size in bytes."
    );
    describe_gauge!("process_open_fds", "Number of open file descriptors.");
    describe_gauge!(
        "process_max_fds",
        "Maximum number of open file descriptors."
    );
    describe_gauge!(
        "process_start_time_seconds",
        Unit::Seconds,
        "Start time of the process since unix epoch in seconds."
    );
    describe_gauge!("process_threads", "Number of OS threads in the process.");
    describe_gauge!(
        "pisgate_nordea_certificate_expiry_seconds",
        Unit::Seconds,
        "Seconds until the eIDAS certificate expires (negative once expired)."
    );
}

/// Sets the gauges read at scrape time: the process's and the database pool's.
pub fn refresh_on_scrape(pool: &crate::ledger::Db) {
    let size = f64::from(pool.size());
    let idle = pool.num_idle() as f64;
    metrics::gauge!("pisgate_db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("pisgate_db_pool_connections", "state" => "used").set((size - idle).max(0.0));
    metrics::gauge!("pisgate_db_pool_max")
        .set(f64::from(pool.pool().options().get_max_connections()));
    if let Some(p) = ProcessStats::read() {
        metrics::counter!("process_cpu_seconds_total").absolute(p.cpu_seconds as u64);
        metrics::gauge!("process_resident_memory_bytes").set(p.resident_bytes);
        metrics::gauge!("process_virtual_memory_bytes").set(p.virtual_bytes);
        metrics::gauge!("process_open_fds").set(p.open_fds);
        if let Some(max) = p.max_fds {
            metrics::gauge!("process_max_fds").set(max);
        }
        metrics::gauge!("process_start_time_seconds").set(p.start_time_seconds);
        metrics::gauge!("process_threads").set(p.threads);
    }
}

/// What `/proc/self` tells about this process.
#[derive(Debug, Clone, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: Option<f64>,
    start_time_seconds: f64,
    threads: f64,
}

/// Linux reports times in `/proc` in USER_HZ, which is 100 on every architecture we run on.
const USER_HZ: f64 = 100.0;

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        ProcessStats::parse(&stat, &status, &boot, &limits, open_fds)
    }

    fn parse(
        stat: &str,
        status: &str,
        boot: &str,
        limits: &str,
        open_fds: usize,
    ) -> Option<ProcessStats> {
        // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        // fields[0] is field 3 (state) of proc(5).
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        let kilobytes = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
                .map(|kb| kb * 1024.0)
        };
        let boot_time = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse::<f64>()
            .ok()?;
        let max_fds = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok());
        Some(ProcessStats {
            cpu_seconds: (field(14)? + field(15)?) / USER_HZ,
            resident_bytes: kilobytes("VmRSS:").unwrap_or(0.0),
            virtual_bytes: field(23)?,
            open_fds: open_fds as f64,
            max_fds,
            start_time_seconds: boot_time + field(22)? / USER_HZ,
            threads: field(20)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (pis gate) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 130 0 0 20 0 \
                    9 0 123456 2000000000 5000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        let status = "Name:\tpisgate\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let p = ProcessStats::parse(stat, status, boot, limits, 12).unwrap();
        assert!(
            (p.start_time_seconds - 1_700_001_234.56).abs() < 1e-3,
            "{p:?}"
        );
        assert_eq!(
            p,
            ProcessStats {
                cpu_seconds: 3.8,
                resident_bytes: 20_971_520.0,
                virtual_bytes: 2_000_000_000.0,
                open_fds: 12.0,
                max_fds: Some(1024.0),
                start_time_seconds: p.start_time_seconds,
                threads: 9.0,
            }
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_can_be_read() {
        let p = ProcessStats::read().expect("/proc/self is readable");
        assert!(
            p.resident_bytes > 0.0 && p.threads >= 1.0 && p.open_fds >= 3.0,
            "{p:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0 * 365.0);
    }
}
