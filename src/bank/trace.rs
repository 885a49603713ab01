//! W3C trace context for outbound bank calls.
//!
//! Every call to a bank carries a `traceparent`, so one of our traces can be quoted to the
//! bank's support. In order of preference it is: what the global OpenTelemetry propagator
//! injects for the current tracing span's context; else that span context itself, when it
//! is valid but no propagator was installed; else a freshly generated one (flags `00`:
//! nothing of ours recorded it). It never carries anything but ids.

use opentelemetry::trace::TraceContextExt as _;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The headers to send: always a valid `traceparent`, plus `tracestate` when the propagator
/// gave one.
pub(crate) fn trace_headers() -> Vec<(&'static str, String)> {
    let cx = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    if let Some(tp) = carrier.remove("traceparent").filter(|tp| is_valid(tp)) {
        let mut headers = vec![("traceparent", tp)];
        if let Some(state) = carrier.remove("tracestate").filter(|s| !s.is_empty()) {
            headers.push(("tracestate", state));
        }
        return headers;
    }
    let span = cx.span();
    let sc = span.span_context();
    let tp = if sc.is_valid() {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    } else {
        fresh()
    };
    vec![("traceparent", tp)]
}

fn fresh() -> String {
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    let trace_id: u128 = rng.gen_range(1..=u128::MAX);
    let span_id: u64 = rng.gen_range(1..=u64::MAX);
    format!("00-{trace_id:032x}-{span_id:016x}-00")
}

/// `00-<32 hex, not all zero>-<16 hex, not all zero>-<2 hex>`, lower case.
pub(crate) fn is_valid(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, span, flags]
        if *version == "00" && hex(trace, 32) && nonzero(trace) && hex(span, 16) && nonzero(span) && hex(flags, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_traceparents_are_valid_and_distinct() {
        let a = fresh();
        let b = fresh();
        assert!(is_valid(&a), "{a}");
        assert_ne!(a, b);
        assert_ne!(a[3..35], b[3..35]);
    }

    #[test]
    fn refuses_malformed_traceparents() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
        assert!(is_valid(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
    }

    #[test]
    fn without_any_trace_context_a_fresh_traceparent_is_made() {
        let headers = trace_headers();
        assert_eq!(headers[0].0, "traceparent");
        assert!(is_valid(&headers[0].1));
    }
}
