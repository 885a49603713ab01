//! Webhook hardening that needs the network: one blackholed endpoint does not starve other
//! merchants' deliveries, and proxy settings from the environment are never used (only the
//! one named in pisgate's settings). Address and port rules are unit-tested beside the code.

use crate::helpers::{TestApp, fresh_database, spawn_app_with};
use crate::payments::body;
use crate::serve::Serve;
use axum::Router;
use axum::routing::post;
use pisgate::ledger::Db;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A receiver that records when each webhook type arrived (no signature checks: the
/// webhooks tests do those).
async fn receiver() -> (String, Arc<std::sync::Mutex<Vec<(String, Instant)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Arc<std::sync::Mutex<Vec<(String, Instant)>>> = Arc::default();
    let seen = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                seen.lock().unwrap().push((
                    v["data"]["id"].as_str().unwrap_or_default().to_owned(),
                    Instant::now(),
                ));
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// Accepts connections and never answers; counts them.
async fn blackhole() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (format!("http://{addr}"), count)
}

async fn endpoint(base: &str, client: &reqwest::Client, key: &str, url: &str) {
    let r = client
        .post(format!("{base}/v1/webhook-endpoints"))
        .bearer_auth(key)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// A payment created and cancelled before anyone opened it: one `payment.cancelled` event.
async fn cancelled_payment(app: &TestApp, key: &str) -> String {
    let p = app.create_payment(key, &body("FI")).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let r = app
        .client
        .post(app.url(&format!("/v1/payments/{id}/cancel")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    id
}

#[tokio::test]
async fn a_blackholed_endpoint_does_not_delay_another_merchants_deliveries() {
    let app = spawn_app_with(&[
        ("PISGATE__WEBHOOKS__ENABLED", "true"),
        ("PISGATE__WEBHOOKS__REQUEST_TIMEOUT", "2s"),
        ("PISGATE__WEBHOOKS__LEASE", "5s"),
        ("PISGATE__WEBHOOKS__IDLE_WAIT", "200ms"),
        ("PISGATE__WEBHOOKS__CONCURRENCY", "4"),
        ("PISGATE__WEBHOOKS__PER_ENDPOINT_CONCURRENCY", "2"),
    ])
    .await;
    let (hole, connections) = blackhole().await;
    let (good, got) = receiver().await;
    let slow = app.create_merchant("Slow shop").await;
    let fine = app.create_merchant("Fine shop").await;
    endpoint(
        &app.address,
        &app.client,
        &slow.api_key,
        &format!("{hole}/hook"),
    )
    .await;
    endpoint(&app.address, &app.client, &fine.api_key, &good).await;
    for _ in 0..10 {
        cancelled_payment(&app, &slow.api_key).await;
    }
    // The slow endpoint now holds what it may of the dispatcher.
    let started = Instant::now();
    while connections.load(Ordering::SeqCst) < 2 {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let created = Instant::now();
    let id = cancelled_payment(&app, &fine.api_key).await;
    let arrived = loop {
        if let Some((_, at)) = got.lock().unwrap().iter().find(|(p, _)| *p == id) {
            break *at;
        }
        assert!(
            created.elapsed() < Duration::from_secs(10),
            "the other merchant's webhook never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let waited = arrived - created;
    assert!(
        waited < Duration::from_secs(2),
        "delivered {waited:?} after the event: more than one timeout"
    );
    assert!(
        connections.load(Ordering::SeqCst) <= 2,
        "at most two deliveries of one endpoint at once"
    );
}

#[tokio::test]
async fn webhooks_ignore_proxies_from_the_environment_and_use_only_the_configured_one() {
    let db = fresh_database().await;
    let pool = Db::from(sqlx::PgPool::connect(&db).await.unwrap());
    let (_, key) = pisgate::ledger::merchants::create(&pool, "Proxy shop", &[])
        .await
        .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    let (proxy, proxied) = blackhole().await;
    let (good, got) = receiver().await;
    let common = [
        ("PISGATE__WEBHOOKS__ENABLED", "true"),
        ("PISGATE__WEBHOOKS__ALLOW_INSECURE_URLS", "true"),
        ("PISGATE__WEBHOOKS__IDLE_WAIT", "200ms"),
        ("PISGATE__WEBHOOKS__REQUEST_TIMEOUT", "1s"),
        ("PISGATE__WEBHOOKS__LEASE", "3s"),
        ("PISGATE__POLLER__ENABLED", "false"),
        ("PISGATE__REFRESHER__ENABLED", "false"),
        ("PISGATE__NORDEA__BASE_URL", "http://127.0.0.1:9/personal"),
    ];
    let env_proxies = [
        ("HTTP_PROXY", proxy.as_str()),
        ("HTTPS_PROXY", proxy.as_str()),
        ("ALL_PROXY", proxy.as_str()),
        ("http_proxy", proxy.as_str()),
        ("https_proxy", proxy.as_str()),
        ("all_proxy", proxy.as_str()),
    ];
    let mut env: Vec<(&str, &str)> = common.to_vec();
    env.extend_from_slice(&env_proxies);
    let serve = Serve::start(&db, &env).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    endpoint(&serve.base, &client, &key, &good).await;
    let event = enqueue_event(&pool).await;
    let started = Instant::now();
    while !got.lock().unwrap().iter().any(|(p, _)| *p == event) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not delivered directly: {}",
            serve.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        proxied.load(Ordering::SeqCst),
        0,
        "the environment's proxy was used"
    );
    drop(serve);

    // Named in pisgate's settings, the proxy is used.
    let mut env: Vec<(&str, &str)> = common.to_vec();
    let setting = proxy.clone();
    env.push(("PISGATE__WEBHOOKS__PROXY", &setting));
    let serve = Serve::start(&db, &env).await;
    enqueue_event(&pool).await;
    let started = Instant::now();
    while proxied.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the configured proxy was not used: {}",
            serve.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A payment cancelled before anyone reached the bank, written straight to the database:
/// its `payment.cancelled` event is in the outbox. Returns the payment id.
async fn enqueue_event(pool: &Db) -> String {
    use pisgate::domain::Evidence;
    crate::helpers::install_ledger_key();
    use pisgate::ledger::payments::{self, Change, KeyClaim, NewPayment};
    let merchant: uuid::Uuid = sqlx::query_scalar("SELECT id FROM merchants LIMIT 1")
        .fetch_one(pool)
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7();
    let later = chrono::Utc::now() + chrono::Duration::minutes(15);
    let created = payments::create_with_key(
        pool,
        NewPayment {
            id,
            merchant_id: merchant,
            amount_minor: 1050,
            currency: "EUR",
            country: "FI",
            request: json!({ "creditor": { "name": "Proxy test" } }),
            merchant_reference: None,
            psu_id: None,
            return_url: "https://shop.example/done",
            metadata: json!({}),
            state_hash: id.as_bytes(),
            expires_at: later,
            sign_horizon_at: later,
            first_poll_at: later,
            authorize_token: "t",
            authorize_url: "https://pisgate.example/authorize",
            trace_parent: None,
            bank: "nordea",
            deferred: None,
        },
        KeyClaim {
            key: &id.to_string(),
            request_hash: b"proxy test",
            body_hash: b"proxy test body",
            in_flight_for: std::time::Duration::from_secs(15),
            expires_at: later,
            payee: None,
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(created, payments::Creation::Created(_)),
        "a new key"
    );
    let mut tx = pool.begin().await.unwrap();
    payments::transition(
        &mut tx,
        id,
        Change {
            evidence: Evidence::LinkNeverHandedOut,
            bank_status: None,
            kind: "cancelled",
            detail: json!({}),
            failure: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id.to_string()
}

/// Hostile bodies an outside tester sent (and their neighbours): each answers a 4xx that
/// names what is wrong, none a 500, and nothing is stored for them.
#[tokio::test]
async fn hostile_payment_bodies_are_refused_by_field_never_with_a_500() {
    let app = crate::helpers::spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let with = |country: &str, path: &str, value: Value| {
        let mut b = body(country);
        let mut at = &mut b;
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            at = at.as_object_mut().unwrap().entry(*p).or_insert(json!({}));
        }
        at[parts[parts.len() - 1]] = value;
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            with(
                "NO",
                "creditor.reference",
                json!({"type": "OCR", "value": "é"}),
            ),
            "creditor.reference",
        ),
        (
            with(
                "NO",
                "creditor.reference",
                json!({"type": "OCR", "value": "1é"}),
            ),
            "creditor.reference",
        ),
        (
            with(
                "NO",
                "creditor.reference",
                json!({"type": "OCR", "value": "12345€-"}),
            ),
            "creditor.reference",
        ),
        (
            with(
                "FI",
                "creditor.reference",
                json!({"type": "RF", "value": "RFé81234"}),
            ),
            "creditor.reference",
        ),
        (
            with(
                "SE",
                "creditor.reference",
                json!({"type": "OCR", "value": "١٢٣٤٥"}),
            ),
            "creditor.reference",
        ),
        (
            with(
                "NO",
                "creditor.account",
                json!({"type": "BBAN_NO", "value": "8601111794é"}),
            ),
            "creditor.account",
        ),
        (
            with(
                "FI",
                "creditor.account",
                json!({"type": "IBAN", "value": "FIé410093000123458"}),
            ),
            "creditor.account",
        ),
        (
            with(
                "DK",
                "creditor.account",
                json!({"type": "BBAN_DK", "value": "€€€€€€€"}),
            ),
            "creditor.account",
        ),
        (
            with("FI", "metadata", json!({"order": "a\u{0}b"})),
            "metadata",
        ),
        (with("FI", "metadata", json!({"a\u{0}b": "x"})), "metadata"),
        (
            with("FI", "metadata", json!({"deep": [[{"x": "\u{0}"}]]})),
            "metadata",
        ),
        (
            with("FI", "execution_date", json!("2030-٠١-31")),
            "execution_date",
        ),
        (with("FI", "amount", json!("١٠.٥٠")), "amount"),
        (
            with("FI", "amount", json!("99999999999999999999999")),
            "amount",
        ),
        (
            with("FI", "creditor.name", json!("a\u{0}b")),
            "creditor.name",
        ),
        (with("FI", "psu_id", json!("\u{0}")), "psu_id"),
        (
            with(
                "FI",
                "recurring",
                json!({"count": 1e300, "recurrence_type": "MONTHLY_SAME_DAY"}),
            ),
            "recurring",
        ),
        (
            with("FI", "return_url", json!("https://shop.example:99999999/")),
            "return_url",
        ),
    ];
    for (i, (b, field)) in cases.iter().enumerate() {
        let r = app
            .post_payment(&m.api_key, &format!("hostile-{i}"), b)
            .await;
        let status = r.status().as_u16();
        let problem: Value = r.json().await.unwrap();
        assert!(
            (400..500).contains(&status),
            "case {i} ({field}): {status} {problem}"
        );
        let fields = crate::helpers::error_fields(&problem);
        assert!(
            fields.iter().any(|f| f.starts_with(field)),
            "case {i}: expected an error on {field}, got {problem}"
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "a refused body left a payment");
}

/// The shopper's IP told to the bank on the reads after the return: with no trusted proxies a forged
/// `X-Forwarded-For` is ignored (the peer's address is sent); with the peer trusted, the
/// rightmost address the proxy did not write itself.
#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    for (trusted, forwarded, expected) in [
        ("", "203.0.113.9", "127.0.0.1"),
        ("10.0.0.0/8", "203.0.113.9", "127.0.0.1"),
        ("127.0.0.1", "6.6.6.6, 203.0.113.9", "203.0.113.9"),
    ] {
        let app = spawn_app_with(&[("PISGATE__SERVER__TRUSTED_PROXIES", trusted)]).await;
        let m = app.create_merchant("Shop").await;
        let payment = app.create_payment(&m.api_key, &body("FI")).await;
        let callback = app
            .sign_at_bank(
                payment["authorization_url"].as_str().unwrap(),
                "shopper",
                true,
            )
            .await;
        let r = app
            .client
            .get(callback)
            .header("x-forwarded-for", forwarded)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let sent: Vec<String> = app
            .sandbox
            .requests()
            .iter()
            .filter_map(|r| r.header("x-nordea-originating-user-ip").map(str::to_owned))
            .collect();
        assert!(!sent.is_empty(), "no call carried the shopper's IP");
        assert!(
            sent.iter().all(|ip| ip == expected),
            "trusted {trusted:?}, forwarded {forwarded:?}: sent {sent:?}"
        );
    }
}

/// An operator disables a merchant (a stolen key, a fraudulent shop): its keys stop at once,
/// and so do its shoppers' next steps on links already handed out. The hop shows the closed
/// page and sends nobody to the bank; enabled again, the same link works.
#[tokio::test]
async fn a_disabled_merchants_open_payments_cannot_be_taken_to_the_bank() {
    let app = crate::helpers::spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let url = p["authorization_url"].as_str().unwrap();
    let id = p["id"].as_str().unwrap();
    assert_eq!(app.client.get(url).send().await.unwrap().status(), 200);

    pisgate::ledger::merchants::disable(&app.pool, m.id)
        .await
        .unwrap()
        .unwrap();
    let page = app.client.get(url).send().await.unwrap();
    assert_eq!(page.status(), 410);
    let html = page.text().await.unwrap();
    assert!(html.contains("can no longer be signed"), "{html}");
    let pressed = crate::helpers::continue_to_bank(&app.client, url).await;
    assert_eq!(pressed.status(), 410, "no redirect to the bank");
    let opened: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT hop_opened_at FROM payments WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(opened, None, "the hop was opened");

    pisgate::ledger::merchants::enable(&app.pool, m.id)
        .await
        .unwrap()
        .unwrap();
    let pressed = crate::helpers::continue_to_bank(&app.client, url).await;
    assert_eq!(pressed.status(), 303, "enabled again, the link works");
}
