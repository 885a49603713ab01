//! Logs, traces and metrics.
//!
//! Logs are JSON (one object a line, with the fields of the enclosing spans, so a request's
//! lines carry its `request_id`, and the `trace_id` and `span_id` of the span they were
//! written in) unless stdout is a terminal, where they are human-readable.
//!
//! Traces: every process has an OpenTelemetry tracer behind `tracing`, so spans have W3C ids
//! (an incoming `traceparent` is honoured, outgoing bank calls carry one, log lines name
//! them). They are exported over OTLP/HTTP (protobuf) only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set (the exporter also reads `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, and the SDK
//! `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*`); without it nothing is recorded, only ids made.
//! The exporter runs on the batch processor's own thread with a blocking HTTP client, so it
//! needs no async runtime there (the async client panicked: "there is no reactor running").
//!
//! Metrics go to one process-wide Prometheus recorder rendered at `/metrics` on the admin
//! listener (see [`metrics`]).
//!
//! Nothing here may ever log a secret: callers record ids, never keys, tokens or accounts.

pub mod metrics;
pub mod traces;

pub use self::metrics::metrics_handle;
pub use self::traces::{current_traceparent, link_to_creation, remote_parent};

use crate::config::{LogFormat, TelemetrySettings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
            .event_format(traces::WithTraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .flatten_event(true)
                    .with_target(true),
            ))
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .boxed()
    };

    let exporting = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .is_ok_and(|endpoint| !endpoint.trim().is_empty());
    let provider = if exporting {
        traces::otlp_provider(&settings.service_name)?
    } else {
        traces::ids_only_provider()
    };
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(settings.service_name.clone()))
        .with_threads(false);

    tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(fmt_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    Ok(TelemetryGuard {
        tracer_provider: Some(provider),
    })
}
