//! Cross-cutting layers: request id, the request span, HTTP metrics, and the fallbacks.

use crate::api::AppState;
use crate::api::error::{ApiError, REQUEST_ID};
use axum::extract::State;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Accepts the caller's `x-request-id` when it is short and printable, else makes one; puts
/// it on the response, in the request span (so every log line of the request carries it)
/// and in the task-local that error bodies read. Records request count and latency by
/// route and status.
///
/// The request span is the OpenTelemetry SERVER span, named `{method} {route}` with the HTTP
/// semantic-convention attributes; a valid incoming W3C `traceparent` makes it a child of the
/// caller's trace (merchants see our work inside theirs).
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id_of(&request);
    // One header value for the request and the answer (a clone shares its bytes).
    let request_id_value = HeaderValue::from_str(&request_id).ok();
    // `MatchedPath` clones by reference count.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map(MatchedPath::as_str);
    let method = request.method().clone();
    if let Some(v) = &request_id_value {
        request.headers_mut().insert(REQUEST_ID_HEADER, v.clone());
    }
    let span = tracing::info_span!(
        "request",
        otel.name = %match route {
            Some(route) => format!("{method} {route}"),
            None => method.to_string(),
        },
        otel.kind = "server",
        otel.status_code = Empty,
        request_id = %request_id,
        http.request.method = %method,
        url.path = %request.uri().path(),
        url.scheme = "http",
        http.route = route,
        http.response.status_code = Empty,
        merchant_id = Empty,
    );
    // A disabled span (the log level is above `info`) takes no parent.
    if !span.is_disabled()
        && let Some(parent) = crate::telemetry::remote_parent(request.headers())
    {
        let _ = span.set_parent(parent);
    }
    let mut response = REQUEST_ID
        .scope(request_id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    let status = response.status();
    let elapsed = started.elapsed();
    if !span.is_disabled() {
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        span.in_scope(|| {
            tracing::info!(
                status = status.as_u16(),
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                "request finished"
            );
        });
    }
    http_metrics::record(&method, route.unwrap_or("unmatched"), status, elapsed);
    if let Some(v) = request_id_value {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

/// `pisgate_http_requests_total` and `pisgate_http_request_duration_seconds`, labelled
/// `method`, `route` and `status`, with their handles kept per label set: the `metrics`
/// macros build a key (its label strings and their vector) and look it up in the recorder on
/// every call, which cost a handful of allocations per request.
mod http_metrics {
    use axum::http::{Method, StatusCode};
    use metrics::{Counter, Histogram};
    use std::collections::HashMap;
    use std::sync::{LazyLock, RwLock};
    use std::time::Duration;

    /// Label sets kept at most (methods and statuses come from clients; routes are ours).
    /// Past it a request is recorded through the macros, as before, and nothing is kept.
    const MAX_KEPT: usize = 1024;

    struct Handles {
        requests: Counter,
        duration: Histogram,
    }

    type ByRoute = HashMap<Box<str>, Handles>;

    static KEPT: LazyLock<RwLock<HashMap<(Method, StatusCode), ByRoute>>> =
        LazyLock::new(RwLock::default);

    pub(super) fn record(method: &Method, route: &str, status: StatusCode, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let key = (method.clone(), status);
        if let Ok(kept) = KEPT.read()
            && let Some(handles) = kept.get(&key).and_then(|routes| routes.get(route))
        {
            handles.requests.increment(1);
            handles.duration.record(seconds);
            return;
        }
        // Handles are bound to the recorder installed when they are made: make sure it is
        // the process's (the router is only built with it, but a kept no-op would be silent).
        let _ = crate::telemetry::metrics_handle();
        let labels = [
            ("method", method.to_string()),
            ("route", route.to_owned()),
            ("status", status.as_u16().to_string()),
        ];
        let handles = Handles {
            requests: metrics::counter!("pisgate_http_requests_total", &labels),
            duration: metrics::histogram!("pisgate_http_request_duration_seconds", &labels),
        };
        handles.requests.increment(1);
        handles.duration.record(seconds);
        if let Ok(mut kept) = KEPT.write()
            && kept.values().map(HashMap::len).sum::<usize>() < MAX_KEPT
        {
            kept.entry(key)
                .or_default()
                .entry(route.into())
                .or_insert(handles);
        }
    }
}

/// The caller's `x-request-id` when it is short and printable, else a new one.
fn request_id_of(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// The admin listener's lighter [`request_context`]: a request id on the answer and in
/// error bodies, but no span, log line or HTTP metrics (probes and scrapes are constant).
pub async fn request_id_only(request: Request, next: Next) -> Response {
    let request_id = request_id_of(&request);
    let mut response = REQUEST_ID
        .scope(request_id.clone(), next.run(request))
        .await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

pub async fn unknown_route(uri: Uri) -> ApiError {
    ApiError::UnknownRoute(uri.path().to_owned())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// A panic in a handler becomes a plain 500 problem; the panic message goes to the log only.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

/// A request still running after this long makes the gate check, once, that the database
/// can be reached at all (most requests take a few milliseconds).
const SLOW_REQUEST: Duration = Duration::from_millis(200);

/// During a database outage, `/v1` answers `503 database_unavailable` with `Retry-After` at
/// once instead of waiting for the pool: when the database is known down before the
/// request, and as soon as it is found down while the request waits (a request that runs
/// long, or one that failed to reach the database, makes [`crate::ledger::health::DbHealth::check_now`] open a
/// connection of its own). A request cut off this way is like one cut off by the deadline:
/// nothing it had not committed is kept, and a creation resumes with its Idempotency-Key.
pub async fn database_gate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let health = &state.db_health;
    if health.is_down() {
        return ApiError::DatabaseUnavailable.into_response();
    }
    let check = || {
        let health = health.clone();
        let options = state.pool.pool().connect_options();
        tokio::spawn(async move { health.check_now(&options).await });
    };
    let run = next.run(request);
    tokio::pin!(run);
    let response = tokio::select! {
        response = &mut run => response,
        () = tokio::time::sleep(SLOW_REQUEST) => {
            check();
            tokio::select! {
                response = &mut run => response,
                () = health.went_down() => ApiError::DatabaseUnavailable.into_response(),
            }
        }
    };
    if response.extensions().get::<DatabaseUnreachable>().is_some() {
        check();
    }
    response
}

/// Marks an answer that failed to reach the database (set by [`ApiError`]'s response).
#[derive(Debug, Clone, Copy)]
pub struct DatabaseUnreachable;

/// The server's per-request deadline: past it the request is dropped (nothing it had not
/// committed is kept) and the client gets `503 deadline_exceeded` with `Retry-After`. A
/// payment creation cut off this way is resumed by a retry with the same Idempotency-Key.
pub async fn deadline(
    State(bound): State<std::time::Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(bound, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                bound_ms = bound.as_millis() as u64,
                "request cut off at the server's deadline"
            );
            ApiError::DeadlineExceeded.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::http_metrics;
    use axum::http::{Method, StatusCode};
    use std::time::Duration;

    fn requests_counted(text: &str, route: &str, status: &str) -> Option<u64> {
        text.lines()
            .find(|l| {
                l.starts_with("pisgate_http_requests_total{")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("status=\"{status}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
    }

    #[test]
    fn every_request_is_counted_under_its_labels_with_kept_handles_and_past_the_cap() {
        let handle = crate::telemetry::metrics_handle();
        let route = "/test/kept/{id}";
        for _ in 0..3 {
            http_metrics::record(
                &Method::GET,
                route,
                StatusCode::OK,
                Duration::from_millis(2),
            );
        }
        http_metrics::record(&Method::GET, route, StatusCode::NOT_FOUND, Duration::ZERO);
        // Fill the cache; label sets past it are still counted, through the macros.
        for i in 0..1100 {
            let route = format!("/test/filler/{i}");
            http_metrics::record(&Method::POST, &route, StatusCode::OK, Duration::ZERO);
        }
        let late = "/test/past-the-cap";
        for _ in 0..2 {
            http_metrics::record(&Method::GET, late, StatusCode::OK, Duration::ZERO);
        }
        let text = handle.render();
        assert_eq!(requests_counted(&text, route, "200"), Some(3), "{text}");
        assert_eq!(requests_counted(&text, route, "404"), Some(1));
        assert_eq!(requests_counted(&text, late, "200"), Some(2));
        assert_eq!(requests_counted(&text, "/test/filler/1099", "200"), Some(1));
        assert!(text.contains("pisgate_http_request_duration_seconds_bucket{"));
    }
}
