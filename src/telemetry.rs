//! Logs, traces and metrics.
//!
//! Logs are JSON (one object a line, with the fields of the enclosing spans, so a request's
//! lines carry its `request_id`) unless stdout is a terminal, where they are human-readable.
//! Traces are exported over OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the
//! W3C trace-context propagator is installed either way so outgoing calls carry a
//! `traceparent`. Metrics go to one process-wide Prometheus recorder rendered at `/metrics`.
//!
//! Nothing here may ever log a secret: callers record ids, never keys, tokens or accounts.

use crate::config::{LogFormat, TelemetrySettings};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Latency buckets in seconds, from 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Flushes and stops trace export when dropped.
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("trace export did not shut down cleanly: {e}");
        }
    }
}

/// Installs the global subscriber. Call once, early, from the binary.
pub fn init(settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .map_err(|e| anyhow::anyhow!("invalid setting PISGATE__TELEMETRY__LOG_LEVEL: {e}"))?;

    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .flatten_event(true)
            .with_target(true)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .boxed()
    };

    let tracer_provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => Some(otlp_provider(settings)?),
        _ => None,
    };
    let otel_layer = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(settings.service_name.clone()))
    });

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    Ok(TelemetryGuard { tracer_provider })
}

fn otlp_provider(settings: &TelemetrySettings) -> anyhow::Result<SdkTracerProvider> {
    // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and _HEADERS, _TIMEOUT) itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the OTLP exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

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
