//! Traces as an operator's collector receives them: a real `serve` process exports over
//! OTLP/HTTP to a receiver here, which decodes the protobuf with `opentelemetry-proto`. The
//! merchant's `traceparent` must carry through pisgate to the bank, and the JSON logs must
//! name the trace.

use crate::helpers::{fresh_database, sign_and_return, spawn_sandbox};
use crate::serve::Serve;
use crate::webhooks::{Plan, Receiver, eventually};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use pisgate::ledger::Db;
use prost::Message as _;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// The merchant's trace and the span of its own call to us.
const MERCHANT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const MERCHANT_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver on 127.0.0.1 (`POST /v1/traces`, protobuf), as a collector would be.
#[derive(Clone)]
struct Collector {
    endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    /// Requests it could not decode, or sent with another content type.
    bad: Arc<Mutex<Vec<String>>>,
}

type Inbox = (Arc<Mutex<Vec<Span>>>, Arc<Mutex<Vec<String>>>);

async fn receive(
    State((spans, bad)): State<Inbox>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/x-protobuf" {
        bad.lock()
            .unwrap()
            .push(format!("content type {content_type:?}"));
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            let mut spans = spans.lock().unwrap();
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .map(|a| format!("{:?}", a.value));
                if !service.is_some_and(|s| s.contains("pisgate")) {
                    bad.lock().unwrap().push("no service.name pisgate".into());
                }
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
            (
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(e) => {
            bad.lock().unwrap().push(format!("undecodable: {e}"));
            (StatusCode::BAD_REQUEST, Vec::new())
        }
    }
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let collector = Collector {
            endpoint: format!("http://{}", listener.local_addr().unwrap()),
            spans: Arc::default(),
            bad: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state((collector.spans.clone(), collector.bad.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        collector
    }

    /// Every span received so far; fails on anything it could not decode.
    fn spans(&self) -> Vec<Span> {
        let bad = self.bad.lock().unwrap();
        assert!(bad.is_empty(), "bad OTLP requests: {bad:?}");
        self.spans.lock().unwrap().clone()
    }

    /// Waits until a span matching `want` has arrived.
    async fn span(&self, what: &str, want: impl Fn(&Span) -> bool) -> Span {
        eventually(what, || async {
            self.spans().into_iter().find(|s| want(s))
        })
        .await
    }
}

fn trace_of(span: &Span) -> String {
    hex::encode(&span.trace_id)
}

/// An attribute's value as text (strings as they are, numbers in decimal).
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(n) => n.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

fn links_to(span: &Span, trace_id: &str) -> bool {
    span.links
        .iter()
        .any(|l| hex::encode(&l.trace_id) == trace_id)
}

/// `serve` exporting to `collector`, against the sandbox at `sandbox_url`.
async fn serve_exporting(
    database: &str,
    collector: &Collector,
    sandbox_url: &str,
    extra: &[(&str, &str)],
) -> Serve {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("PISGATE__REFRESHER__ENABLED", "false"),
    ];
    env.extend_from_slice(extra);
    Serve::with_bank(database, sandbox_url, &env).await
}

async fn merchant(database: &str) -> String {
    let pool = Db::from(sqlx::PgPool::connect(database).await.unwrap());
    let (_, key) =
        pisgate::ledger::merchants::create(&pool, "Trace shop", &["https://shop.example".into()])
            .await
            .unwrap();
    pool.close().await;
    secrecy::ExposeSecret::expose_secret(&key).to_owned()
}

/// Creates a payment as a merchant inside its own trace; returns the payment.
async fn create_in_merchant_trace(client: &reqwest::Client, base: &str, key: &str) -> Value {
    let r = client
        .post(format!("{base}/v1/payments"))
        .bearer_auth(key)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .header(
            "traceparent",
            format!("00-{MERCHANT_TRACE}-{MERCHANT_SPAN}-01"),
        )
        .json(&crate::payments::body("FI"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Exporter trouble shows as warnings or errors of the OpenTelemetry crates, or a panic.
fn assert_no_exporter_trouble(stdout: &str, stderr: &str) {
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let target = v["target"].as_str().unwrap_or_default();
        let level = v["level"].as_str().unwrap_or_default();
        assert!(
            !(target.starts_with("opentelemetry") && matches!(level, "WARN" | "ERROR")),
            "exporter trouble: {line}"
        );
    }
    for needle in ["panicked", "no reactor", "OTLP", "export"] {
        assert!(!stderr.contains(needle), "{needle:?} on stderr: {stderr}");
    }
}

#[tokio::test]
async fn a_payment_creation_is_exported_in_the_merchants_trace_with_the_bank_call_as_a_client_child()
 {
    let collector = Collector::start().await;
    let (sandbox, sandbox_url) = spawn_sandbox(|_| {}).await;
    let database = fresh_database().await;
    let key = merchant(&database).await;
    let serve = serve_exporting(&database, &collector, &sandbox_url, &[]).await;
    let payment = create_in_merchant_trace(&no_redirects(), &serve.base, &key).await;
    let payment_id = payment["id"].as_str().unwrap().to_owned();

    // The server span of the creation, inside the merchant's trace, child of its span.
    let server = collector
        .span("the server span of POST /v1/payments", |s| {
            s.kind == SpanKind::Server as i32 && s.name == "POST /v1/payments"
        })
        .await;
    assert_eq!(trace_of(&server), MERCHANT_TRACE);
    assert_eq!(hex::encode(&server.parent_span_id), MERCHANT_SPAN);
    for (key, want) in [
        ("http.request.method", "POST"),
        ("url.path", "/v1/payments"),
        ("http.route", "/v1/payments"),
        ("http.response.status_code", "201"),
        ("url.scheme", "http"),
    ] {
        assert_eq!(
            attribute(&server, key).as_deref(),
            Some(want),
            "{key}: {server:?}"
        );
    }

    // The bank call: a CLIENT span in the same trace, below the server span.
    let client_span = collector
        .span("the bank call's client span", |s| {
            s.kind == SpanKind::Client as i32 && trace_of(s) == MERCHANT_TRACE
        })
        .await;
    let spans = collector.spans();
    let mut ancestor = client_span.parent_span_id.clone();
    let mut chain = Vec::new();
    while let Some(parent) = spans.iter().find(|s| s.span_id == ancestor) {
        chain.push(parent.name.clone());
        if parent.span_id == server.span_id {
            break;
        }
        ancestor = parent.parent_span_id.clone();
    }
    assert_eq!(
        ancestor, server.span_id,
        "the bank call is not below the server span: {chain:?}"
    );
    assert_eq!(client_span.name, "POST");
    assert_eq!(
        attribute(&client_span, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attribute(&client_span, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    let status = attribute(&client_span, "http.response.status_code").unwrap();
    assert!(status.starts_with('2'), "{status}");
    assert_eq!(
        attribute(&client_span, "operation").as_deref(),
        Some("initiate")
    );

    // The sandbox bank received the client span's context.
    let initiation = sandbox
        .requests()
        .into_iter()
        .find(|r| r.operation == Some(pisgate::sandbox::Operation::Initiate))
        .expect("the sandbox saw the initiation");
    assert_eq!(
        initiation.header("traceparent"),
        Some(
            format!(
                "00-{MERCHANT_TRACE}-{}-01",
                hex::encode(&client_span.span_id)
            )
            .as_str()
        )
    );

    // The payment remembers its creation's trace.
    let pool = Db::from(sqlx::PgPool::connect(&database).await.unwrap());
    let stored: Option<String> =
        sqlx::query_scalar("SELECT trace_parent FROM payments WHERE id = $1::uuid")
            .bind(&payment_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        stored
            .as_deref()
            .is_some_and(|tp| tp.starts_with(&format!("00-{MERCHANT_TRACE}-"))),
        "{stored:?}"
    );

    let (exit, stdout, stderr, _) = serve.stop().await;
    assert!(exit.success(), "exit {exit:?}; stderr: {stderr}");
    assert_no_exporter_trouble(&stdout, &stderr);

    // Every JSON line written inside a span names its trace and span; the creation's lines
    // name the merchant's trace.
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let in_spans: Vec<&Value> = lines.iter().filter(|v| v.get("span").is_some()).collect();
    assert!(!in_spans.is_empty(), "{stdout}");
    for v in &in_spans {
        let (trace, span) = (&v["trace_id"], &v["span_id"]);
        assert!(
            trace.as_str().is_some_and(|t| t.len() == 32)
                && span.as_str().is_some_and(|s| s.len() == 16),
            "a line inside a span without trace_id and span_id: {v}"
        );
    }
    let finished = in_spans
        .iter()
        .find(|v| v["message"] == "request finished" && v["span"]["http.route"] == "/v1/payments")
        .unwrap_or_else(|| panic!("no request line for the creation:\n{stdout}"));
    assert_eq!(finished["trace_id"], MERCHANT_TRACE, "{finished}");
    assert_eq!(
        finished["span_id"],
        hex::encode(&server.span_id),
        "{finished}"
    );
}

#[tokio::test]
async fn a_payments_polls_callback_and_webhooks_link_to_the_trace_of_its_creation() {
    let collector = Collector::start().await;
    let (_sandbox, sandbox_url) = spawn_sandbox(|_| {}).await;
    let database = fresh_database().await;
    let key = merchant(&database).await;
    let serve = serve_exporting(
        &database,
        &collector,
        &sandbox_url,
        &[
            ("PISGATE__POLLER__SIGNING_INTERVAL", "200ms"),
            ("PISGATE__POLLER__IDLE_WAIT", "200ms"),
            ("PISGATE__WEBHOOKS__ALLOW_INSECURE_URLS", "true"),
            ("PISGATE__WEBHOOKS__IDLE_WAIT", "200ms"),
        ],
    )
    .await;
    let client = no_redirects();
    let receiver = Receiver::start(Plan::Ok).await;
    receiver.register(&client, &serve.base, &key).await;

    let payment = create_in_merchant_trace(&client, &serve.base, &key).await;
    // The shopper's browser sends no traceparent: the callback is a trace of its own.
    let back = sign_and_return(&client, &payment, "psu-trace").await;
    assert_eq!(back.status(), 303);
    eventually("payment.authorized to be delivered", || async {
        receiver.accepted("payment.authorized")
    })
    .await;

    let linked = |what: &'static str, name: &'static str| {
        collector.span(what, move |s| {
            s.name == name && trace_of(s) != MERCHANT_TRACE && links_to(s, MERCHANT_TRACE)
        })
    };
    linked("a poll linked to the creation", "poll").await;
    linked("the callback linked to the creation", "bank_callback").await;
    linked("a webhook attempt linked to the creation", "attempt").await;

    let (exit, stdout, stderr, _) = serve.stop().await;
    assert!(exit.success(), "exit {exit:?}; stderr: {stderr}");
    assert_no_exporter_trouble(&stdout, &stderr);
}
