//! Merchant webhooks end to end: the endpoints API, and the dispatcher delivering status
//! changes of real payments (created through the API against the Nordea sandbox, signed in
//! the sandbox's browser flow, moved on with the ledger's own `transition`) to test
//! receivers that verify every signature with the endpoint's secret.
//!
//! The status poller is off in these tests: a direct `transition` inside a transaction is
//! the code path it uses, and so is the callback that the signing flow ends in.

use crate::helpers::{TestApp, assert_problem, spawn_app_with};
use crate::payments::body as payment_body;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use pisgate::domain::{Evidence, PaymentStatus};
use pisgate::ledger::Db;
use pisgate::ledger::payments::{self, Change};
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it gives a value, failing the test after [`DEADLINE`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// 200 to everything.
    Ok,
    /// 500 the first time a webhook-id arrives, 200 after.
    FailFirst,
    /// This status to everything.
    Always(u16),
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) webhook_id: String,
    pub(crate) event_type: String,
    pub(crate) payment_id: String,
    payment_status: String,
    pub(crate) body: Value,
    pub(crate) answered: u16,
    user_agent: String,
    /// The request as signed: `webhook-timestamp`, `webhook-signature` and the raw body.
    timestamp: String,
    pub(crate) signature: String,
    raw: Bytes,
}

impl Received {
    /// Whether one of the signatures in `webhook-signature` verifies with `secret`.
    pub(crate) fn verifies_with(&self, secret: &str) -> bool {
        let expected = expected_signature(secret, &self.webhook_id, &self.timestamp, &self.raw);
        self.signature.split(' ').any(|s| s == expected)
    }
}

#[derive(Default)]
struct Inbox {
    secret: Option<String>,
    plan: Option<Plan>,
    received: Vec<Received>,
    /// Requests whose signature, timestamp or shape did not verify.
    bad: Vec<String>,
}

/// A merchant's webhook receiver on 127.0.0.1: verifies every request's Standard Webhooks
/// signature with the endpoint secret (recomputed here, independently of pisgate's code)
/// and records what arrived.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) url: String,
    inbox: Arc<Mutex<Inbox>>,
}

impl Receiver {
    pub(crate) async fn start(plan: Plan) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::start_on(listener, plan)
    }

    fn start_on(listener: tokio::net::TcpListener, plan: Plan) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::at(addr);
        receiver.inbox.lock().unwrap().plan = Some(plan);
        receiver.serve(listener);
        receiver
    }

    /// A receiver for an address nothing listens on yet (connection refused).
    fn at(addr: SocketAddr) -> Receiver {
        Receiver {
            url: format!("http://{addr}/hooks/pisgate?token=merchant-side-token"),
            inbox: Arc::new(Mutex::new(Inbox::default())),
        }
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/hooks/pisgate", post(receive))
            .with_state(self.inbox.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }

    /// Registers this receiver as an endpoint of the merchant with `key` at the pisgate at
    /// `base`, for every event, and learns its secret; returns the endpoint.
    pub(crate) async fn register(&self, client: &reqwest::Client, base: &str, key: &str) -> Value {
        let endpoint: Value = client
            .post(format!("{base}/v1/webhook-endpoints"))
            .bearer_auth(key)
            .json(&json!({ "url": self.url }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        self.set_secret(endpoint["secret"].as_str().unwrap());
        endpoint
    }

    pub(crate) fn set_secret(&self, secret: &str) {
        self.inbox.lock().unwrap().secret = Some(secret.to_owned());
    }

    fn set_plan(&self, plan: Plan) {
        self.inbox.lock().unwrap().plan = Some(plan);
    }

    /// Waits until this receiver has accepted (answered 2xx) `event` about payment `id`,
    /// its signature verified here, and returns it. Other payments' webhooks of the same type
    /// may come first: several payments can change at once.
    pub(crate) async fn accepted_for(&self, id: &str, event: &str) -> Received {
        eventually(event, || async {
            self.received().into_iter().find(|r| {
                r.event_type == event && r.payment_id == id && (200..300).contains(&r.answered)
            })
        })
        .await
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        let inbox = self.inbox.lock().unwrap();
        assert!(
            inbox.bad.is_empty(),
            "unverifiable webhooks: {:?}",
            inbox.bad
        );
        inbox.received.clone()
    }

    /// The first request of this type that was answered 2xx, if any yet.
    pub(crate) fn accepted(&self, event_type: &str) -> Option<Received> {
        self.received()
            .into_iter()
            .find(|r| r.event_type == event_type && (200..300).contains(&r.answered))
    }
}

fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key_bytes);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let tag = aws_lc_rs::hmac::sign(&key, &signed);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let mut inbox = inbox.lock().unwrap();
    let Some(secret) = inbox.secret.clone() else {
        inbox
            .bad
            .push(format!("{id}: arrived before the test knew the secret"));
        return StatusCode::UNAUTHORIZED;
    };
    let expected = expected_signature(&secret, &id, &timestamp, &body);
    let verified = signature.split(' ').any(|s| s == expected);
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() <= 300);
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut problems = Vec::new();
    if !verified {
        problems.push("signature does not verify");
    }
    if !fresh {
        problems.push("timestamp missing or not current");
    }
    if !id.starts_with("evt_") || payload["id"] != id.as_str() {
        problems.push("webhook-id missing or not the payload's id");
    }
    if header("content-type") != "application/json" {
        problems.push("content-type is not application/json");
    }
    if !problems.is_empty() {
        inbox.bad.push(format!("{id}: {problems:?}"));
        return StatusCode::UNAUTHORIZED;
    }
    let seen_before = inbox.received.iter().any(|r| r.webhook_id == id);
    let answer = match inbox.plan.unwrap_or(Plan::Ok) {
        Plan::Ok => 200,
        Plan::FailFirst if seen_before => 200,
        Plan::FailFirst => 500,
        Plan::Always(status) => status,
    };
    inbox.received.push(Received {
        webhook_id: id,
        event_type: payload["type"].as_str().unwrap_or_default().to_owned(),
        payment_id: payload["data"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        payment_status: payload["data"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body: payload,
        answered: answer,
        user_agent: header("user-agent"),
        timestamp,
        signature,
        raw: body,
    });
    StatusCode::from_u16(answer).unwrap()
}

/// An app whose webhook dispatcher runs with this retry schedule (the poller stays off).
pub(crate) async fn spawn_dispatching_app(retry_schedule: &str) -> TestApp {
    spawn_app_with(&[
        ("PISGATE__WEBHOOKS__ENABLED", "true"),
        ("PISGATE__WEBHOOKS__RETRY_SCHEDULE", retry_schedule),
        ("PISGATE__WEBHOOKS__REQUEST_TIMEOUT", "2s"),
        ("PISGATE__WEBHOOKS__LEASE", "5s"),
        ("PISGATE__WEBHOOKS__IDLE_WAIT", "1s"),
    ])
    .await
}

/// Creates an endpoint that must succeed; returns its id and secret and tells the receiver
/// the secret.
pub(crate) async fn create_endpoint(
    app: &TestApp,
    key: &str,
    receiver: &Receiver,
    events: &[&str],
) -> (String, String) {
    let r = post_endpoint(
        app,
        key,
        &json!({ "url": receiver.url, "events": events, "description": "test receiver" }),
    )
    .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let secret = v["secret"].as_str().unwrap().to_owned();
    receiver.set_secret(&secret);
    (v["id"].as_str().unwrap().to_owned(), secret)
}

pub(crate) async fn post_endpoint(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/webhook-endpoints"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn post_as(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn delete_as(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.client
        .delete(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn get_json(app: &TestApp, path: &str, key: &str) -> Value {
    let r = app.get_as(path, key).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// The endpoint's deliveries through the API, optionally filtered by status.
async fn deliveries(app: &TestApp, key: &str, endpoint: &str, status: Option<&str>) -> Vec<Value> {
    let path = match status {
        Some(s) => format!("/v1/webhook-endpoints/{endpoint}/deliveries?status={s}"),
        None => format!("/v1/webhook-endpoints/{endpoint}/deliveries"),
    };
    get_json(app, &path, key).await["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// The delivery of `event_type` to the endpoint once `ready` holds for it.
async fn delivery_when(
    app: &TestApp,
    key: &str,
    endpoint: &str,
    event_type: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    eventually(
        &format!("the {event_type} delivery to reach the expected state"),
        || async {
            deliveries(app, key, endpoint, None)
                .await
                .into_iter()
                .find(|d| d["event_type"] == event_type && ready(d))
        },
    )
    .await
}

/// A payment created through the API and signed by the shopper in the sandbox: the callback
/// moves it to `authorized`, which is its first webhook.
pub(crate) async fn authorized_payment(app: &TestApp, key: &str) -> String {
    let created = app.create_payment(key, &payment_body("FI")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let back = app
        .sign(
            created["authorization_url"].as_str().unwrap(),
            "psu-webhooks",
            true,
        )
        .await;
    assert_eq!(back.status(), 303);
    assert_eq!(app.get_payment(key, &id).await["status"], "authorized");
    id
}

/// Moves a payment on as the poller would: one `transition` in one transaction.
pub(crate) async fn transition(
    app: &TestApp,
    payment_id: &str,
    to: PaymentStatus,
    bank_status: &str,
) {
    let mut tx = app.pool.begin().await.unwrap();
    payments::transition(
        &mut tx,
        payment_id.parse().unwrap(),
        Change {
            evidence: Evidence::Bank(to),
            bank_status: Some(bank_status),
            kind: "status_changed",
            detail: json!({ "source": "test" }),
            failure: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// A port on 127.0.0.1 that nothing listens on (for now).
async fn unused_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn every_status_change_arrives_signed_with_a_webhook_id_that_is_stable_across_retries() {
    let app = spawn_dispatching_app("200ms,400ms,800ms").await;
    let m = app.create_merchant("Shop").await;
    let receiver = Receiver::start(Plan::FailFirst).await;
    let (endpoint, _) = create_endpoint(&app, &m.api_key, &receiver, &[]).await;
    let paid_only = Receiver::start(Plan::Ok).await;
    let (paid_endpoint, _) = create_endpoint(&app, &m.api_key, &paid_only, &["payment.paid"]).await;

    let payment = authorized_payment(&app, &m.api_key).await;
    transition(&app, &payment, PaymentStatus::Paid, "Paid").await;

    let authorized = eventually("payment.authorized to be accepted", || async {
        receiver.accepted("payment.authorized")
    })
    .await;
    let paid = eventually("payment.paid to be accepted", || async {
        receiver.accepted("payment.paid")
    })
    .await;
    assert_ne!(authorized.webhook_id, paid.webhook_id);
    for (accepted, status, previous) in [
        (&authorized, "authorized", "awaiting_authorization"),
        (&paid, "paid", "authorized"),
    ] {
        assert_eq!(accepted.payment_id, payment);
        assert_eq!(accepted.payment_status, status);
        assert_eq!(accepted.body["data"]["previous_status"], previous);
        assert!(
            accepted.body["data"]["ledger_seq"].is_i64(),
            "{}",
            accepted.body
        );
        assert!(
            accepted.user_agent.starts_with("pisgate-webhooks/"),
            "{}",
            accepted.user_agent
        );
        // The first attempt was answered 500; the retry carried the same id and body.
        let attempts: Vec<Received> = receiver
            .received()
            .into_iter()
            .filter(|r| r.webhook_id == accepted.webhook_id)
            .collect();
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert_eq!(attempts[0].answered, 500);
        assert_eq!(attempts[1].answered, 200);
        assert_eq!(attempts[0].body, attempts[1].body);
    }

    // The API tells the same story.
    for (event_type, accepted) in [("payment.authorized", &authorized), ("payment.paid", &paid)] {
        let d = delivery_when(&app, &m.api_key, &endpoint, event_type, |d| {
            d["status"] == "delivered"
        })
        .await;
        assert_eq!(d["webhook_id"], accepted.webhook_id.as_str());
        assert_eq!(d["payment_id"], payment.as_str());
        assert_eq!(d["attempts"], 2);
        assert_eq!(d["last_response_status"], 200);
        assert!(
            d["delivered_at"].is_string() && d["next_attempt_at"].is_null(),
            "{d}"
        );
    }

    // The endpoint subscribed to payment.paid only got that one, with the same id.
    let only_paid = eventually("payment.paid at the paid-only endpoint", || async {
        paid_only.accepted("payment.paid")
    })
    .await;
    assert_eq!(only_paid.webhook_id, paid.webhook_id);
    assert!(
        paid_only
            .received()
            .iter()
            .all(|r| r.event_type == "payment.paid"),
        "{:?}",
        paid_only.received()
    );
    assert_eq!(
        deliveries(&app, &m.api_key, &paid_endpoint, None)
            .await
            .len(),
        1
    );

    let metrics = app.metrics().await;
    for needle in [
        r#"pisgate_webhook_deliveries_total{outcome="failed"}"#,
        r#"pisgate_webhook_deliveries_total{outcome="delivered"}"#,
        "pisgate_webhook_delivery_lag_seconds",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from /metrics");
    }
}

#[tokio::test]
async fn an_endpoint_that_answers_410_is_disabled_and_receives_nothing_more() {
    let app = spawn_dispatching_app("200ms,400ms,800ms").await;
    let m = app.create_merchant("Shop").await;
    let gone = Receiver::start(Plan::Always(410)).await;
    let (gone_endpoint, _) = create_endpoint(&app, &m.api_key, &gone, &[]).await;
    let live = Receiver::start(Plan::Ok).await;
    create_endpoint(&app, &m.api_key, &live, &[]).await;

    let payment = authorized_payment(&app, &m.api_key).await;
    let disabled = eventually("the endpoint to be disabled", || async {
        let e = get_json(
            &app,
            &format!("/v1/webhook-endpoints/{gone_endpoint}"),
            &m.api_key,
        )
        .await;
        (e["status"] == "disabled").then_some(e)
    })
    .await;
    assert_eq!(disabled["disabled_reason"], "410 Gone from endpoint");
    let dead = delivery_when(
        &app,
        &m.api_key,
        &gone_endpoint,
        "payment.authorized",
        |d| d["status"] == "dead",
    )
    .await;
    assert_eq!(dead["last_response_status"], 410);
    assert_eq!(dead["attempts"], 1);

    transition(&app, &payment, PaymentStatus::Paid, "Paid").await;
    // Once the live endpoint has the later event, the disabled one would have it too.
    eventually("payment.paid at the live endpoint", || async {
        live.accepted("payment.paid")
    })
    .await;
    assert_eq!(gone.received().len(), 1, "{:?}", gone.received());
    assert_eq!(
        deliveries(&app, &m.api_key, &gone_endpoint, None)
            .await
            .len(),
        1,
        "no delivery is queued for a disabled endpoint"
    );
    let r = post_as(
        &app,
        &format!("/v1/webhook-endpoints/{gone_endpoint}/replay"),
        &m.api_key,
    )
    .await;
    assert_problem(r, 409, "endpoint_not_enabled").await;
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_events_once_it_is_back() {
    let app = spawn_dispatching_app(&["300ms"; 40].join(",")).await;
    let m = app.create_merchant("Shop").await;
    let addr = unused_address().await;
    let receiver = Receiver::at(addr);
    let (endpoint, _) = create_endpoint(&app, &m.api_key, &receiver, &[]).await;

    let payment = authorized_payment(&app, &m.api_key).await;
    let failing = delivery_when(&app, &m.api_key, &endpoint, "payment.authorized", |d| {
        d["status"] == "pending" && d["attempts"].as_i64().unwrap_or(0) >= 1
    })
    .await;
    let error = failing["last_error"].as_str().unwrap();
    assert!(error.starts_with("connection failed"), "{error}");
    assert!(!error.contains("merchant-side-token"), "{error}");
    assert!(failing["last_response_status"].is_null(), "{failing}");

    // The receiver comes up on the same port.
    let listener = eventually("the receiver's port to be free again", || async {
        tokio::net::TcpListener::bind(addr).await.ok()
    })
    .await;
    receiver.set_plan(Plan::Ok);
    receiver.serve(listener);

    let accepted = eventually("payment.authorized once the receiver is back", || async {
        receiver.accepted("payment.authorized")
    })
    .await;
    assert_eq!(accepted.payment_id, payment);
    let d = delivery_when(&app, &m.api_key, &endpoint, "payment.authorized", |d| {
        d["status"] == "delivered"
    })
    .await;
    assert_eq!(d["webhook_id"], accepted.webhook_id.as_str());
    assert!(d["attempts"].as_i64().unwrap() >= 2, "{d}");
}

#[tokio::test]
async fn a_delivery_that_exhausts_the_schedule_is_dead_listed_and_replayable() {
    let app = spawn_dispatching_app("100ms,100ms").await;
    let m = app.create_merchant("Shop").await;
    let receiver = Receiver::start(Plan::Always(500)).await;
    let (endpoint, _) = create_endpoint(&app, &m.api_key, &receiver, &[]).await;

    let payment = authorized_payment(&app, &m.api_key).await;
    let dead = eventually("the delivery to be dead", || async {
        deliveries(&app, &m.api_key, &endpoint, Some("dead"))
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(dead["event_type"], "payment.authorized");
    assert_eq!(dead["payment_id"], payment.as_str());
    assert_eq!(dead["attempts"], 3, "one attempt and two retries: {dead}");
    assert_eq!(dead["last_response_status"], 500);
    assert!(dead["next_attempt_at"].is_null(), "{dead}");
    let webhook_id = dead["webhook_id"].as_str().unwrap().to_owned();
    let tries = receiver.received();
    assert_eq!(tries.len(), 3, "{tries:?}");
    assert!(tries.iter().all(|r| r.webhook_id == webhook_id));
    assert!(
        deliveries(&app, &m.api_key, &endpoint, Some("pending"))
            .await
            .is_empty()
    );

    // Replay one delivery.
    receiver.set_plan(Plan::Ok);
    let r = post_as(
        &app,
        &format!("/v1/webhook-endpoints/{endpoint}/deliveries/{webhook_id}/replay"),
        &m.api_key,
    )
    .await;
    assert_eq!(r.status(), 202);
    let replayed: Value = r.json().await.unwrap();
    assert_eq!(replayed["webhook_id"], webhook_id.as_str());
    assert_eq!(replayed["status"], "pending", "{replayed}");
    assert_eq!(replayed["attempts"], 0, "{replayed}");
    assert!(replayed["next_attempt_at"].is_string(), "{replayed}");
    let accepted = eventually("the replayed delivery to arrive", || async {
        receiver.accepted("payment.authorized")
    })
    .await;
    assert_eq!(
        accepted.webhook_id, webhook_id,
        "a replay keeps the webhook-id"
    );
    let delivered = delivery_when(&app, &m.api_key, &endpoint, "payment.authorized", |d| {
        d["status"] == "delivered"
    })
    .await;
    assert_eq!(delivered["attempts"], 1);

    // Replay every dead delivery of the endpoint.
    receiver.set_plan(Plan::Always(500));
    transition(&app, &payment, PaymentStatus::Paid, "Paid").await;
    delivery_when(&app, &m.api_key, &endpoint, "payment.paid", |d| {
        d["status"] == "dead"
    })
    .await;
    receiver.set_plan(Plan::Ok);
    let r = post_as(
        &app,
        &format!("/v1/webhook-endpoints/{endpoint}/replay"),
        &m.api_key,
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "replayed": 1 }));
    eventually("the bulk-replayed delivery to arrive", || async {
        receiver.accepted("payment.paid")
    })
    .await;
    delivery_when(&app, &m.api_key, &endpoint, "payment.paid", |d| {
        d["status"] == "delivered"
    })
    .await;

    // Unknown or malformed webhook ids are not found.
    for id in [
        format!("evt_{}", Uuid::now_v7().simple()),
        "evt_nope".to_owned(),
    ] {
        let r = post_as(
            &app,
            &format!("/v1/webhook-endpoints/{endpoint}/deliveries/{id}/replay"),
            &m.api_key,
        )
        .await;
        assert_problem(r, 404, "not_found").await;
    }
}

#[tokio::test]
async fn deleting_an_endpoint_stops_its_deliveries() {
    let app = spawn_dispatching_app(&["300ms"; 40].join(",")).await;
    let m = app.create_merchant("Shop").await;
    let failing = Receiver::start(Plan::Always(503)).await;
    let (doomed, _) = create_endpoint(&app, &m.api_key, &failing, &[]).await;
    let live = Receiver::start(Plan::Ok).await;
    let (kept, _) = create_endpoint(&app, &m.api_key, &live, &[]).await;

    let payment = authorized_payment(&app, &m.api_key).await;
    delivery_when(&app, &m.api_key, &doomed, "payment.authorized", |d| {
        d["status"] == "pending" && d["attempts"].as_i64().unwrap_or(0) >= 1
    })
    .await;
    let r = delete_as(&app, &format!("/v1/webhook-endpoints/{doomed}"), &m.api_key).await;
    assert_eq!(r.status(), 204);
    let tries_at_delete = failing.received().len();

    let d = deliveries(&app, &m.api_key, &doomed, None).await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["status"], "dead");
    assert_eq!(d[0]["last_error"], "endpoint deleted");
    let e = get_json(&app, &format!("/v1/webhook-endpoints/{doomed}"), &m.api_key).await;
    assert_eq!(e["status"], "deleted");
    let listed = get_json(&app, "/v1/webhook-endpoints", &m.api_key).await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![kept.as_str()]);
    let deleted = get_json(&app, "/v1/webhook-endpoints?status=deleted", &m.api_key).await;
    assert_eq!(deleted["data"][0]["id"], doomed.as_str());

    transition(&app, &payment, PaymentStatus::Paid, "Paid").await;
    eventually("payment.paid at the kept endpoint", || async {
        live.accepted("payment.paid")
    })
    .await;
    // A few retry periods later the deleted endpoint has had nothing more (an attempt that
    // was already on the wire when it was deleted may still land).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = failing.received();
    assert!(after.len() <= tries_at_delete + 1, "{after:?}");
    assert!(after.iter().all(|r| r.event_type == "payment.authorized"));
    assert_eq!(deliveries(&app, &m.api_key, &doomed, None).await.len(), 1);

    let r = post_as(
        &app,
        &format!("/v1/webhook-endpoints/{doomed}/replay"),
        &m.api_key,
    )
    .await;
    assert_problem(r, 409, "endpoint_not_enabled").await;
    // Deleting again changes nothing.
    let r = delete_as(&app, &format!("/v1/webhook-endpoints/{doomed}"), &m.api_key).await;
    assert_eq!(r.status(), 204);
}

/// An app that refuses insecure URLs, as production does (the dispatcher stays off).
pub(crate) async fn spawn_strict_app() -> TestApp {
    spawn_app_with(&[("PISGATE__WEBHOOKS__ALLOW_INSECURE_URLS", "false")]).await
}

#[tokio::test]
async fn endpoint_urls_are_validated_and_every_error_names_the_url_field() {
    let app = spawn_strict_app().await;
    let m = app.create_merchant("Shop").await;
    let long = format!("https://hooks.example.com/{}", "a".repeat(2048));
    for (url, code) in [
        ("", "required"),
        ("not a url", "invalid_url"),
        ("/relative/path", "invalid_url"),
        ("ftp://hooks.example.com/x", "invalid_url"),
        (long.as_str(), "too_long"),
        (
            "https://user:pw@hooks.example.com/x",
            "credentials_not_allowed",
        ),
        ("http://hooks.example.com/x", "https_required"),
        ("https://localhost/x", "private_address"),
        ("https://127.0.0.1/x", "private_address"),
        ("https://10.1.2.3/x", "private_address"),
        ("https://192.168.0.10/x", "private_address"),
        (
            "https://169.254.169.254/latest/meta-data",
            "private_address",
        ),
        ("https://[::1]/x", "private_address"),
        ("https://[fe80::1]/x", "private_address"),
    ] {
        let r = post_endpoint(&app, &m.api_key, &json!({ "url": url })).await;
        let problem = assert_problem(r, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], "url", "{url}: {problem}");
        assert_eq!(problem["errors"][0]["code"], code, "{url}: {problem}");
    }
    let r = post_endpoint(&app, &m.api_key, &json!({})).await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "url", "{problem}");

    let r = post_endpoint(
        &app,
        &m.api_key,
        &json!({ "url": "https://hooks.example.com/pisgate" }),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["url"], "https://hooks.example.com/pisgate");
    assert_eq!(created["events"], json!([]));
    assert_eq!(created["status"], "enabled");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "refused requests write nothing");
}

#[tokio::test]
async fn unknown_event_types_are_refused_naming_their_index() {
    let app = spawn_strict_app().await;
    let m = app.create_merchant("Shop").await;
    let r = post_endpoint(
        &app,
        &m.api_key,
        &json!({
            "url": "http://hooks.example.com/x",
            "events": ["payment.paid", "payment.teleported", "payment.expired", "charge.succeeded"],
        }),
    )
    .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["url", "events[1]", "events[3]"], "{problem}");
    assert_eq!(problem["errors"][1]["code"], "unknown_event_type");

    let r = post_endpoint(
        &app,
        &m.api_key,
        &json!({ "url": "https://hooks.example.com/x", "events": "payment.paid" }),
    )
    .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "events", "{problem}");

    let r = post_endpoint(
        &app,
        &m.api_key,
        &json!({ "url": "https://hooks.example.com/x", "events": ["payment.paid", "payment.paid", "payment.failed"] }),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["events"], json!(["payment.paid", "payment.failed"]));
}

#[tokio::test]
async fn the_secret_is_shown_once_and_stored_encrypted() {
    let app = spawn_strict_app().await;
    let m = app.create_merchant("Shop").await;
    let r = post_endpoint(
        &app,
        &m.api_key,
        &json!({ "url": "https://hooks.example.com/x", "description": "orders" }),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    assert_eq!(raw.len(), 32);
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["description"], "orders");

    for path in [
        format!("/v1/webhook-endpoints/{id}"),
        "/v1/webhook-endpoints".to_owned(),
    ] {
        let r = app.get_as(&path, &m.api_key).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(!text.contains(&secret), "{path} shows the secret");
        assert!(!text.contains("\"secret\""), "{path}: {text}");
        assert!(text.contains(id), "{path}: {text}");
    }

    let (key_id, stored): (String, Vec<u8>) =
        sqlx::query_as("SELECT key_id, secret FROM webhook_endpoints WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(key_id, "k1");
    let body = secret.strip_prefix("whsec_").unwrap().as_bytes();
    assert!(
        !stored.windows(body.len()).any(|w| w == body)
            && !stored.windows(raw.len()).any(|w| w == raw.as_slice()),
        "the secret is stored in the clear"
    );
}

#[tokio::test]
async fn another_merchants_endpoint_is_404_everywhere() {
    let app = spawn_strict_app().await;
    let owner = app.create_merchant("Owner").await;
    let other = app.create_merchant("Other").await;
    let r = post_endpoint(
        &app,
        &owner.api_key,
        &json!({ "url": "https://hooks.example.com/x" }),
    )
    .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let some_webhook = format!("evt_{}", Uuid::now_v7().simple());

    let r = app
        .get_as(&format!("/v1/webhook-endpoints/{id}"), &other.api_key)
        .await;
    assert_problem(r, 404, "not_found").await;
    let r = app
        .get_as(
            &format!("/v1/webhook-endpoints/{id}/deliveries"),
            &other.api_key,
        )
        .await;
    assert_problem(r, 404, "not_found").await;
    for path in [
        format!("/v1/webhook-endpoints/{id}/replay"),
        format!("/v1/webhook-endpoints/{id}/enable"),
        format!("/v1/webhook-endpoints/{id}/deliveries/{some_webhook}/replay"),
    ] {
        let r = post_as(&app, &path, &other.api_key).await;
        assert_problem(r, 404, "not_found").await;
    }
    let r = delete_as(&app, &format!("/v1/webhook-endpoints/{id}"), &other.api_key).await;
    assert_problem(r, 404, "not_found").await;
    let listed = get_json(&app, "/v1/webhook-endpoints", &other.api_key).await;
    assert_eq!(listed["data"], json!([]));

    // Untouched for its owner.
    let e = get_json(&app, &format!("/v1/webhook-endpoints/{id}"), &owner.api_key).await;
    assert_eq!(e["status"], "enabled");
    // And a random id is not found either.
    let r = app
        .get_as(
            &format!("/v1/webhook-endpoints/{}", Uuid::now_v7()),
            &owner.api_key,
        )
        .await;
    assert_problem(r, 404, "not_found").await;
}

#[tokio::test]
async fn a_merchant_has_at_most_twenty_enabled_endpoints() {
    let app = spawn_strict_app().await;
    let m = app.create_merchant("Shop").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = post_endpoint(
            &app,
            &m.api_key,
            &json!({ "url": format!("https://hooks.example.com/{i}") }),
        )
        .await;
        assert_eq!(r.status(), 201, "endpoint {i}");
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let r = post_endpoint(
        &app,
        &m.api_key,
        &json!({ "url": "https://hooks.example.com/21" }),
    )
    .await;
    let problem = assert_problem(r, 409, "too_many_endpoints").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("at most 20"),
        "{problem}"
    );
    // Another merchant is not affected.
    let other = app.create_merchant("Other").await;
    let r = post_endpoint(
        &app,
        &other.api_key,
        &json!({ "url": "https://hooks.example.com/o" }),
    )
    .await;
    assert_eq!(r.status(), 201);
    // Deleting one makes room.
    let r = delete_as(
        &app,
        &format!("/v1/webhook-endpoints/{}", ids[0]),
        &m.api_key,
    )
    .await;
    assert_eq!(r.status(), 204);
    let r = post_endpoint(
        &app,
        &m.api_key,
        &json!({ "url": "https://hooks.example.com/21" }),
    )
    .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn endpoints_are_listed_newest_first_with_a_cursor() {
    let app = spawn_strict_app().await;
    let m = app.create_merchant("Shop").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = post_endpoint(
            &app,
            &m.api_key,
            &json!({ "url": format!("https://hooks.example.com/{i}") }),
        )
        .await;
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let first = get_json(&app, "/v1/webhook-endpoints?limit=2", &m.api_key).await;
    assert_eq!(first["has_more"], true);
    assert_eq!(first["data"][0]["id"], ids[2].as_str());
    assert_eq!(first["data"][1]["id"], ids[1].as_str());
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = get_json(
        &app,
        &format!("/v1/webhook-endpoints?limit=2&cursor={cursor}"),
        &m.api_key,
    )
    .await;
    assert_eq!(second["has_more"], false);
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert_eq!(second["data"][0]["id"], ids[0].as_str());
    assert!(second["next_cursor"].is_null());

    for query in ["limit=0", "limit=101", "cursor=garbage", "status=sleeping"] {
        let r = app
            .get_as(&format!("/v1/webhook-endpoints?{query}"), &m.api_key)
            .await;
        assert_problem(r, 422, "validation_failed").await;
    }
    let r = app
        .get_as(
            &format!("/v1/webhook-endpoints/{}/deliveries?status=lost", ids[0]),
            &m.api_key,
        )
        .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "status");
}

/// A real `pisgate serve` process (JSON debug logs) with the dispatcher on and the other
/// workers off: every attempt is logged with its ids, outcome and status, and neither the
/// endpoint's secret nor its URL (whose query string may carry a merchant's token) appears in
/// any log line. SIGTERM stops the dispatcher cleanly.
#[tokio::test]
async fn a_serve_process_logs_every_attempt_without_the_secret_or_the_url() {
    use crate::helpers::{fresh_database, sign_and_return, spawn_sandbox};
    use crate::serve::Serve;

    let (_sandbox, sandbox_url) = spawn_sandbox(|_| {}).await;
    let database = fresh_database().await;
    let pool = Db::from(sqlx::PgPool::connect(&database).await.unwrap());
    let (_, key) =
        pisgate::ledger::merchants::create(&pool, "Log shop", &["https://shop.example".into()])
            .await
            .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    let bank = format!("{sandbox_url}/personal");
    let serve = Serve::start(
        &database,
        &[
            ("PISGATE__NORDEA__BASE_URL", &bank),
            ("PISGATE__NORDEA__ENVIRONMENT", "sandbox"),
            ("PISGATE__POLLER__ENABLED", "false"),
            ("PISGATE__REFRESHER__ENABLED", "false"),
            ("PISGATE__WEBHOOKS__ENABLED", "true"),
            ("PISGATE__WEBHOOKS__ALLOW_INSECURE_URLS", "true"),
            ("PISGATE__WEBHOOKS__RETRY_SCHEDULE", "200ms,200ms"),
            ("PISGATE__WEBHOOKS__REQUEST_TIMEOUT", "2s"),
            ("PISGATE__WEBHOOKS__IDLE_WAIT", "1s"),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let base = serve.base.clone();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let receiver = Receiver::start(Plan::FailFirst).await;
    let created = receiver.register(&client, &base, &key).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let endpoint = created["id"].as_str().unwrap().to_owned();
    let payment: Value = client
        .post(format!("{base}/v1/payments"))
        .bearer_auth(&key)
        .header("idempotency-key", "webhook-log-flow")
        .json(&payment_body("FI"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let back = sign_and_return(&client, &payment, "psu-log").await;
    assert_eq!(back.status(), 303);
    let accepted = eventually("payment.authorized to be accepted", || async {
        receiver.accepted("payment.authorized")
    })
    .await;

    let (exit, stdout, stderr, _) = serve.stop().await;
    assert!(exit.success(), "exit {exit:?}; stderr: {stderr}");
    let logs = format!("{stdout}{stderr}");

    let attempts: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("webhook attempt"))
        })
        .collect();
    let outcomes: Vec<(&str, i64)> = attempts
        .iter()
        .map(|v| {
            // The attempt's span carries the ids; the line itself the outcome.
            let span = &v["span"];
            assert_eq!(span["webhook_id"], accepted.webhook_id.as_str(), "{v}");
            assert_eq!(span["endpoint_id"], endpoint.as_str(), "{v}");
            (
                v["outcome"].as_str().unwrap(),
                span["attempt"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![("failed", 1), ("delivered", 2)],
        "{attempts:?}"
    );
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(attempts[1]["status"], 200);

    let secret_body = secret.strip_prefix("whsec_").unwrap();
    for (what, text) in [
        ("webhook secret", secret.as_str()),
        ("webhook secret's base64", secret_body),
        ("endpoint URL", receiver.url.as_str()),
        ("endpoint URL's query token", "merchant-side-token"),
        ("API key", key.as_str()),
    ] {
        assert!(!logs.contains(text), "the {what} appears in the logs");
    }
    assert!(
        logs.contains("webhook dispatcher stopped"),
        "no clean dispatcher stop in the logs:\n{logs}"
    );
}

/// Dispatchers of several replicas claim at once: a delivery one of them claimed (and
/// committed) after another took its snapshot must not be claimed by that other one too
/// (the locking step re-checks that the row is still pending and due). Found as duplicate
/// deliveries, milliseconds apart, by scripts/scale.sh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_hand_one_delivery_to_two_dispatchers() {
    let app = crate::helpers::spawn_app().await;
    const N: usize = 400;
    endpoint_with_due_deliveries(&app, "https://hooks.example/x", N).await;
    let mut claimers = tokio::task::JoinSet::new();
    for i in 0..4 {
        let pool = app.pool.clone();
        claimers.spawn(async move {
            let mut got = Vec::new();
            let mut empty = 0;
            while empty < 3 {
                let claimed = pisgate::ledger::webhooks::claim_due(
                    &pool,
                    &format!("replica-{i}"),
                    Duration::from_secs(600),
                    2,
                    UNCAPPED,
                )
                .await
                .unwrap();
                if claimed.is_empty() {
                    empty += 1;
                }
                got.extend(claimed.into_iter().map(|c| c.event_id));
            }
            got
        });
    }
    let mut seen = std::collections::HashMap::new();
    while let Some(got) = claimers.join_next().await {
        for event in got.unwrap() {
            *seen.entry(event).or_insert(0) += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "claimed by two dispatchers: {twice:?}");
    assert_eq!(seen.len(), N, "every delivery claimed once");
}

/// A payload edited in the database after it was written (an insider forging what the
/// merchant is told) fails its ledger MAC: the dispatcher never signs and sends it.
#[tokio::test]
async fn a_webhook_payload_edited_in_the_database_is_never_sent() {
    tampered_event_is_never_sent(
        r#"UPDATE webhook_events SET payload = jsonb_set(payload, '{data,amount}', '"99999.00"')
           WHERE payment_id = $1"#,
        "ledger MAC (edited)",
    )
    .await;
}

/// The same forgery with the MAC removed (as if written before binding): not sent either.
#[tokio::test]
async fn a_webhook_event_whose_ledger_mac_was_removed_is_never_sent() {
    tampered_event_is_never_sent(
        r#"UPDATE webhook_events
           SET payload = jsonb_set(payload, '{data,amount}', '"99999.00"'),
               payload_mac = NULL, mac_key_id = NULL
           WHERE payment_id = $1"#,
        "no ledger MAC",
    )
    .await;
}

/// The dispatcher refuses the event `sql` ($1: the payment) tampered with, saying `error`.
async fn tampered_event_is_never_sent(sql: &str, error: &str) {
    let (app, key, endpoint, receiver) = first_attempt_failed_then(sql).await;
    let refused = delivery_when(&app, &key, &endpoint, "payment.authorized", |d| {
        d["last_error"].as_str().is_some_and(|e| e.contains(error))
    })
    .await;
    assert_eq!(refused["status"], "pending", "{refused}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(receiver.received().is_empty(), "the forged payload arrived");
}

/// A dispatching app whose `payment.authorized` delivery failed once (its receiver was not
/// listening yet); then `sql` ($1: the payment) runs and the receiver starts answering 200.
/// Gives the app, the merchant's API key, the endpoint and the receiver.
async fn first_attempt_failed_then(sql: &str) -> (TestApp, String, String, Receiver) {
    let app = spawn_dispatching_app(&["300ms"; 40].join(",")).await;
    let m = app.create_merchant("Shop").await;
    let addr = unused_address().await;
    let receiver = Receiver::at(addr);
    let (endpoint, _) = create_endpoint(&app, &m.api_key, &receiver, &[]).await;
    let payment = authorized_payment(&app, &m.api_key).await;
    delivery_when(&app, &m.api_key, &endpoint, "payment.authorized", |d| {
        d["attempts"].as_i64().unwrap_or(0) >= 1
    })
    .await;
    sqlx::query(sql)
        .bind(payment.parse::<Uuid>().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let listener = eventually("the receiver's port to be free again", || async {
        tokio::net::TcpListener::bind(addr).await.ok()
    })
    .await;
    receiver.set_plan(Plan::Ok);
    receiver.serve(listener);
    (app, m.api_key, endpoint, receiver)
}

/// An event's time set to `'infinity'` in SQL: the dispatcher's claim read it with sqlx,
/// which panics on a time chrono cannot hold, and the panic stopped that replica's
/// dispatcher (and each replica's in turn, as the lease ran out): no merchant heard anything
/// more. Now it reads it clamped (`pisgate_readable_time`), the event fails its MAC and is
/// refused like any other edit, and the dispatcher goes on.
#[tokio::test]
async fn a_webhook_event_whose_time_was_set_to_infinity_is_refused_and_stops_no_dispatcher() {
    tampered_event_is_never_sent(
        "UPDATE webhook_events SET created_at = 'infinity' WHERE payment_id = $1",
        "ledger MAC (edited)",
    )
    .await;
}

/// A pending delivery rescheduled to `'infinity'` in SQL is never claimed, so once nothing
/// else is pending it is the dispatcher's next due time: read as is, sqlx panicked and the
/// dispatcher stopped on every replica. Now the dispatcher idles past it without a restart
/// (`pisgate_worker_restarts_total` stays 0) and the payment's next event is delivered.
#[tokio::test]
async fn a_delivery_rescheduled_to_infinity_stops_no_dispatcher() {
    let (app, key, _endpoint, receiver) = first_attempt_failed_then(
        "UPDATE webhook_deliveries SET next_attempt_at = 'infinity', owner = NULL
         WHERE event_id IN (SELECT id FROM webhook_events WHERE payment_id = $1)",
    )
    .await;
    // The dispatcher waits with only that delivery pending (its idle wait is 1 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let payment: String = sqlx::query_scalar(
        "SELECT payment_id::text FROM webhook_events ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let r = crate::truth::cancel(&app, &key, &payment).await;
    assert!(r.status().is_success(), "{}", r.status());
    let got = eventually("the cancel's webhook", || async {
        let got = receiver.received();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert!(
        got.iter().all(|w| w.event_type != "payment.authorized"),
        "the rescheduled delivery was sent: {:?}",
        got.iter().map(|w| &w.event_type).collect::<Vec<_>>()
    );
    let scrape = app.metrics().await;
    assert!(
        scrape.contains("pisgate_worker_restarts_total{worker=\"webhooks\"} 0"),
        "{}",
        scrape
            .lines()
            .filter(|l| l.starts_with("pisgate_worker_restarts_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The insider's forgery with a date from before payloads were bound: an event edited, its
/// MAC removed and its `created_at` set to years ago. No date exempts an event from its MAC (those
/// from before the binding were sealed at that upgrade, `ledger::seal`): never sent.
#[tokio::test]
async fn a_webhook_event_without_its_mac_is_never_sent_whatever_its_date() {
    tampered_event_is_never_sent(
        r#"UPDATE webhook_events
           SET payload = jsonb_set(payload, '{data,amount}', '"99999.00"'),
               payload_mac = NULL, mac_key_id = NULL, created_at = '2020-01-01T00:00:00Z'
           WHERE payment_id = $1"#,
        "no ledger MAC",
    )
    .await;
}

/// A 410 decides only for the delivery still held and the URL the endpoint still has: an
/// attempt in flight while the merchant moved the endpoint to a new URL (its old host now
/// answers 410) leaves the endpoint enabled and the delivery to be tried at the new URL;
/// an attempt whose lease another dispatcher took over decides nothing. The endpoint's own
/// 410 still disables it.
#[tokio::test]
async fn a_410_from_a_stale_attempt_never_disables_the_endpoint() {
    use pisgate::ledger::webhooks as store;
    let app = crate::helpers::spawn_app().await;
    let endpoint = endpoint_with_due_deliveries(&app, "https://old.example/hooks", 3).await;
    let lease = Duration::from_secs(600);
    let claimed = store::claim_due(&app.pool, "replica-a", lease, 3, UNCAPPED)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let state = || async {
        let row: (String, String) =
            sqlx::query_as("SELECT status, url FROM webhook_endpoints WHERE id = $1")
                .bind(endpoint)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let deliveries: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT status, owner FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY event_id",
        )
        .bind(endpoint)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        (row, deliveries)
    };

    // The merchant moves the endpoint while the first attempt is in flight.
    sqlx::query("UPDATE webhook_endpoints SET url = 'https://new.example/hooks' WHERE id = $1")
        .bind(endpoint)
        .execute(&app.pool)
        .await
        .unwrap();
    let first = &claimed[0];
    assert_eq!(first.url, "https://old.example/hooks");
    let disabled = store::endpoint_gone(
        &app.pool,
        endpoint,
        first.event_id,
        "replica-a",
        &first.url,
        "410 Gone from endpoint",
    )
    .await
    .unwrap();
    assert!(!disabled);
    let (e, d) = state().await;
    assert_eq!(e.0, "enabled", "{e:?}");
    assert!(d.iter().all(|(status, _)| status == "pending"), "{d:?}");
    let (attempts, owner): (i32, Option<String>) = sqlx::query_as(
        "SELECT attempts, owner FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2",
    )
    .bind(endpoint)
    .bind(first.event_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((attempts, owner), (1, None), "tried again at the new URL");

    // Another dispatcher took the second over (its lease passed): the old holder's 410
    // decides nothing.
    let second = &claimed[1];
    sqlx::query("UPDATE webhook_deliveries SET owner = 'replica-b' WHERE event_id = $1")
        .bind(second.event_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let disabled = store::endpoint_gone(
        &app.pool,
        endpoint,
        second.event_id,
        "replica-a",
        "https://new.example/hooks",
        "410 Gone from endpoint",
    )
    .await
    .unwrap();
    assert!(!disabled);
    let (e, d) = state().await;
    assert_eq!(e.0, "enabled", "{e:?}");
    assert!(d.iter().all(|(status, _)| status == "pending"), "{d:?}");

    // The endpoint's own URL answering 410 for a delivery still held disables it.
    let third = &claimed[2];
    let disabled = store::endpoint_gone(
        &app.pool,
        endpoint,
        third.event_id,
        "replica-a",
        "https://new.example/hooks",
        "410 Gone from endpoint",
    )
    .await
    .unwrap();
    assert!(disabled);
    let (e, d) = state().await;
    assert_eq!(e.0, "disabled", "{e:?}");
    assert!(d.iter().all(|(status, _)| status == "dead"), "{d:?}");
}

/// An endpoint whose receiver is down builds a backlog; with its slots in flight it must not
/// make the dispatcher claim again ten times a second for nothing (the next due time was its
/// oldest overdue delivery, always in the past): the next due time is when one of its slots
/// frees (a lease end), or another endpoint's first delivery if sooner. A lease that ran out
/// (its dispatcher died) makes the backlog due again at once.
#[tokio::test]
async fn a_backlogged_endpoint_wakes_the_dispatcher_only_when_a_slot_frees() {
    use pisgate::ledger::webhooks::{self as store, Caps};
    let app = crate::helpers::spawn_app().await;
    let caps = Caps {
        per_endpoint: 2,
        per_merchant: 8,
    };
    let lease = Duration::from_secs(600);
    let backlogged = endpoint_with_due_deliveries(&app, "https://down.example/hooks", 50).await;
    let claimed = store::claim_due(&app.pool, "replica-a", lease, 10, caps)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2, "one endpoint's two slots");
    assert!(claimed.iter().all(|c| c.endpoint_id == backlogged));
    let again = store::claim_due(&app.pool, "replica-b", lease, 10, caps)
        .await
        .unwrap();
    assert!(again.is_empty(), "no free slot: {} claimed", again.len());

    let seconds_to_next = || async {
        let at = store::next_due(&app.pool, caps).await.unwrap();
        let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        at.map(|at| (at - now).num_milliseconds() as f64 / 1000.0)
    };
    let wait = seconds_to_next().await.expect("deliveries are pending");
    assert!(
        (590.0..=600.0).contains(&wait),
        "48 overdue deliveries behind two slots in flight: next due at the first lease end, not now: {wait} s"
    );

    // Another merchant's endpoint with a delivery due in 30 s comes first.
    let other = app.create_merchant("Other shop").await;
    endpoint_of(&app, other.id, "https://up.example/hooks", 1, 30).await;
    let wait = seconds_to_next().await.unwrap();
    assert!((25.0..=30.0).contains(&wait), "{wait} s");

    // The first dispatcher dies: its leases run out and the backlog is due again.
    sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second'
         WHERE owner = 'replica-a'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let wait = seconds_to_next().await.unwrap();
    assert!(wait <= 0.0, "{wait} s");
    let taken_over = store::claim_due(&app.pool, "replica-b", lease, 10, caps)
        .await
        .unwrap();
    assert_eq!(taken_over.len(), 2);
    assert!(taken_over.iter().all(|c| c.endpoint_id == backlogged));
}

/// One merchant's endpoints share `per_merchant_concurrency`: a merchant with many
/// unreachable endpoints cannot hold every slot of a replica while another merchant's
/// (younger) deliveries wait; each endpoint keeps its own cap inside that.
#[tokio::test]
async fn one_merchants_endpoints_together_stay_within_the_merchant_cap() {
    use pisgate::ledger::webhooks::{self as store, Caps};
    let app = crate::helpers::spawn_app().await;
    let caps = Caps {
        per_endpoint: 2,
        per_merchant: 4,
    };
    let lease = Duration::from_secs(600);
    let busy = app.create_merchant("Many endpoints").await;
    let mut busy_endpoints = Vec::new();
    for i in 0..6 {
        let url = format!("https://blackhole{i}.example/hooks");
        busy_endpoints.push(endpoint_of(&app, busy.id, &url, 5, -60).await);
    }
    let quiet = app.create_merchant("Quiet").await;
    let quiet_endpoint = endpoint_of(&app, quiet.id, "https://up.example/hooks", 5, 0).await;

    let claimed = store::claim_due(&app.pool, "replica-a", lease, 10, caps)
        .await
        .unwrap();
    let of = |claimed: &[store::Claimed], merchant: Uuid| {
        claimed.iter().filter(|c| c.merchant_id == merchant).count()
    };
    assert_eq!(of(&claimed, busy.id), 4, "the busy merchant's cap");
    assert_eq!(
        of(&claimed, quiet.id),
        2,
        "the quiet merchant's endpoint's cap"
    );
    let mut per_endpoint = std::collections::HashMap::new();
    for c in &claimed {
        *per_endpoint.entry(c.endpoint_id).or_insert(0) += 1;
    }
    assert!(per_endpoint.values().all(|n| *n <= 2), "{per_endpoint:?}");
    assert_eq!(per_endpoint[&quiet_endpoint], 2);

    // Both merchants are at their caps: nothing more, across replicas, until a slot frees.
    let again = store::claim_due(&app.pool, "replica-b", lease, 10, caps)
        .await
        .unwrap();
    assert!(again.is_empty(), "{} claimed past the caps", again.len());
    let at = store::next_due(&app.pool, caps).await.unwrap().unwrap();
    assert!(
        at > chrono::Utc::now() + chrono::Duration::seconds(500),
        "{at}"
    );

    // One of the busy merchant's deliveries is answered: one more of its backlog can go.
    let done = claimed.iter().find(|c| c.merchant_id == busy.id).unwrap();
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'delivered', next_attempt_at = NULL, owner = NULL
         WHERE endpoint_id = $1 AND event_id = $2",
    )
    .bind(done.endpoint_id)
    .bind(done.event_id)
    .execute(&app.pool)
    .await
    .unwrap();
    assert!(store::next_due(&app.pool, caps).await.unwrap().unwrap() <= chrono::Utc::now());
    let next = store::claim_due(&app.pool, "replica-b", lease, 10, caps)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].merchant_id, busy.id);
    assert!(busy_endpoints.contains(&next[0].endpoint_id));
}

/// An endpoint at `url` (its secret a placeholder: nothing is sent) of a new merchant, with
/// `n` deliveries of fresh events due now, written straight into the tables.
async fn endpoint_with_due_deliveries(app: &crate::helpers::TestApp, url: &str, n: usize) -> Uuid {
    let m = app.create_merchant("Shop").await;
    endpoint_of(app, m.id, url, n, 0).await
}

/// Caps no test below reaches.
const UNCAPPED: pisgate::ledger::webhooks::Caps = pisgate::ledger::webhooks::Caps {
    per_endpoint: 10_000,
    per_merchant: 10_000,
};

/// An enabled endpoint of `merchant` at `url` with `n` pending deliveries (of events of
/// their own), due `due_in` seconds from now (negative: overdue).
async fn endpoint_of(
    app: &crate::helpers::TestApp,
    merchant: Uuid,
    url: &str,
    n: usize,
    due_in: i32,
) -> Uuid {
    let endpoint = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, key_id, secret)
         VALUES ($1, $2, $3, 'k1', '\\x00')",
    )
    .bind(endpoint)
    .bind(merchant)
    .bind(url)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "WITH ev AS (
             INSERT INTO webhook_events (id, merchant_id, event_type, payload, created_at)
             SELECT gen_random_uuid(), $1, 'payment.paid', '{}'::jsonb, now()
             FROM generate_series(1, $2)
             RETURNING id, created_at
         )
         INSERT INTO webhook_deliveries (endpoint_id, event_id, next_attempt_at, created_at)
         SELECT $3, id, created_at + make_interval(secs => $4), created_at FROM ev",
    )
    .bind(merchant)
    .bind(n as i32)
    .bind(endpoint)
    .bind(due_in)
    .execute(&app.pool)
    .await
    .unwrap();
    endpoint
}

/// An insider points a merchant's endpoint at a server of theirs in SQL. The signing secret
/// is bound to the merchant and the endpoint, not to the URL, so that server would receive
/// every event signed with the merchant's real secret. The URL is bound to the ledger key
/// (`url_mac`): nothing is signed and sent there (nor anywhere), the delivery waits with the
/// reason and the refusal is counted, and `ledger verify` names the endpoint. The
/// merchant's own change of the URL through the API is sealed and followed.
#[tokio::test]
async fn an_endpoint_pointed_elsewhere_in_sql_is_sent_nothing_and_verify_names_it() {
    let app = spawn_dispatching_app(&["300ms"; 40].join(",")).await;
    let m = app.create_merchant("Shop").await;
    let merchants = Receiver::start(Plan::Ok).await;
    let insiders = Receiver::start(Plan::Ok).await;
    let (endpoint, secret) = create_endpoint(&app, &m.api_key, &merchants, &[]).await;
    insiders.set_secret(&secret);
    sqlx::query("UPDATE webhook_endpoints SET url = $2 WHERE id = $1::uuid")
        .bind(&endpoint)
        .bind(&insiders.url)
        .execute(&app.pool)
        .await
        .unwrap();
    let payment = authorized_payment(&app, &m.api_key).await;
    let refused = delivery_when(&app, &m.api_key, &endpoint, "payment.authorized", |d| {
        d["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("URL or merchant is not what was written"))
    })
    .await;
    assert_eq!(refused["status"], "pending", "{refused}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        insiders.received().is_empty(),
        "the insider's server got events"
    );
    assert!(merchants.received().is_empty());
    assert!(
        app.metrics()
            .await
            .contains("pisgate_ledger_binding_mismatches_total"),
        "counted"
    );
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(!report.is_ok(), "{report:?}");
    assert_eq!(report.broken_webhook_endpoints, 1, "{report:?}");
    assert!(
        report
            .first_broken_webhook_endpoint
            .as_deref()
            .is_some_and(|b| b.contains(&endpoint)),
        "{report:?}"
    );

    // The merchant points it back through the API: sealed, and the waiting event arrives.
    let r = app
        .client
        .patch(app.url(&format!("/v1/webhook-endpoints/{endpoint}")))
        .bearer_auth(&m.api_key)
        .json(&json!({ "url": merchants.url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = merchants.accepted_for(&payment, "payment.authorized").await;
    assert!(got.verifies_with(&secret));
    assert!(insiders.received().is_empty());
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.webhook_endpoints_checked, 1, "{report:?}");
}
