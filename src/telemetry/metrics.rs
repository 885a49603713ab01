//! The Prometheus side: one process-wide recorder, the HELP text of every family, and the
//! gauges nobody else keeps (build info, process, database pool, readiness).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

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
        "Calls to the bank, by operation and outcome (every attempt, retries included)."
    );
    describe_histogram!(
        "pisgate_bank_request_duration_seconds",
        Unit::Seconds,
        "Time of one call to the bank, by operation and outcome."
    );
    describe_counter!(
        "pisgate_bank_config_errors_total",
        "Bank refusals that are our configuration's fault (credentials, signature, clock), by code."
    );
    describe_counter!(
        "pisgate_unknown_bank_status_total",
        "Bank statuses pisgate does not know; the payment was left unchanged."
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
        "pisgate_nordea_certificate_expiry_seconds",
        Unit::Seconds,
        "Seconds until the eIDAS certificate expires (negative once expired)."
    );
}
