//! How fast the workers are, against the real Postgres and the in-process sandbox.
//!
//! 1. Status polls per second one replica sustains: many payments awaiting the shopper's
//!    signature (link opened, so each poll is a full 200 answer), a schedule that makes every
//!    one due at once, no rate limit; counted at the sandbox over a fixed window.
//! 2. Delay from a status change at the bank to the merchant's webhook, with the default
//!    schedule: the bank's status of each payment is changed at a known instant, a receiver
//!    notes when `payment.authorized` arrives; p50/p90/p99/max are printed.
//!
//! Run with `scripts/bench.sh` (it starts PostgreSQL). Note that the sandbox runs in the same
//! process and on the same two cores, so it takes CPU a real bank would not.

use axum::extract::State;
use axum::http::HeaderMap;
use pisgate::app::Application;
use pisgate::config::{Settings, Sources};
use pisgate::sandbox::{BankStatus, Operation, Sandbox, SandboxConfig};
use rand::Rng;
use rand::seq::SliceRandom;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "bench-client";
const CLIENT_SECRET: &str = "bench-secret";
const TOKEN_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const LEDGER_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/nordea").join(name)).unwrap()
}

async fn fresh_database(admin_url: &str) -> String {
    let mut admin = PgConnection::connect(admin_url).await.expect("connect");
    let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let pool = PgPool::connect(&url).await.unwrap();
    pisgate::ledger::migrate(&pool).await.unwrap();
    pool.close().await;
    url
}

async fn spawn_sandbox() -> (Arc<Sandbox>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = SandboxConfig::new(
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET),
        fixture("kat-public.pem"),
        url.clone(),
    );
    config.confirm_delay = Duration::ZERO;
    config.paid_delay = Duration::from_secs(3600);
    let sandbox = Sandbox::new(config).unwrap();
    tokio::spawn(pisgate::sandbox::serve(
        listener,
        sandbox.clone(),
        std::future::pending(),
    ));
    (sandbox, url)
}

struct App {
    base: String,
    pool: pisgate::ledger::Db,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn spawn_app(db: &str, sandbox_url: &str, overrides: &[(&str, &str)]) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut vars: HashMap<String, String> = HashMap::new();
    for (k, v) in [
        ("PISGATE__DATABASE__URL", db),
        ("PISGATE__DATABASE__MAX_CONNECTIONS", "20"),
        ("PISGATE__SERVER__LISTEN", "127.0.0.1:0"),
        ("PISGATE__ADMIN__LISTEN", "127.0.0.1:0"),
        ("PISGATE__SERVER__PUBLIC_URL", &base),
        (
            "PISGATE__NORDEA__BASE_URL",
            &format!("{sandbox_url}/personal"),
        ),
        ("PISGATE__NORDEA__CLIENT_ID", CLIENT_ID),
        ("PISGATE__NORDEA__CLIENT_SECRET", CLIENT_SECRET),
        ("PISGATE__NORDEA__PRIVATE_KEY", &fixture("kat-private.pem")),
        ("PISGATE__NORDEA__ENVIRONMENT", "sandbox"),
        ("PISGATE__TOKENS__ENCRYPTION_KEY", TOKEN_KEY),
        ("PISGATE__LEDGER__KEY", LEDGER_KEY),
        ("PISGATE__RATE_LIMIT__REQUESTS_PER_WINDOW", "1000000"),
        ("PISGATE__WEBHOOKS__ALLOW_INSECURE_URLS", "true"),
    ] {
        vars.insert(k.to_owned(), v.to_owned());
    }
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let settings = Settings::load_from(&Sources {
        config_dir: root().join("config"),
        environment: None,
        vars,
    })
    .expect("bench settings");
    let app = Application::build_on(settings, listener).await.unwrap();
    let pool = app.pool().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    App {
        base,
        pool,
        stop: Some(tx),
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn merchant(pool: &pisgate::ledger::Db) -> String {
    let (_, key) =
        pisgate::ledger::merchants::create(pool, "Bench", &["https://shop.example".into()])
            .await
            .unwrap();
    secrecy::ExposeSecret::expose_secret(&key).to_owned()
}

fn payment_body() -> Value {
    json!({
        "amount": "10.50", "currency": "EUR", "country": "FI",
        "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Kauppa Oy"},
        "return_url": "https://shop.example/done",
    })
}

/// Creates `n` payments (a few at a time) and opens each signing link, so the bank knows
/// them. Returns (our id, bank id).
async fn create_opened(
    client: &reqwest::Client,
    app: &App,
    key: &str,
    n: usize,
) -> Vec<(String, String)> {
    let slots = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, base, key, slots) = (
            client.clone(),
            app.base.clone(),
            key.to_owned(),
            slots.clone(),
        );
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.unwrap();
            let p: Value = client
                .post(format!("{base}/v1/payments"))
                .bearer_auth(&key)
                .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                .json(&payment_body())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let page = client
                .get(p["authorization_url"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), 200);
            (
                p["id"].as_str().unwrap().to_owned(),
                p["bank_payment_id"].as_str().unwrap().to_owned(),
            )
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap());
    }
    out
}

async fn polls_per_second(admin_url: &str) {
    const PAYMENTS: usize = 500;
    const WINDOW: Duration = Duration::from_secs(10);
    let (sandbox, sandbox_url) = spawn_sandbox().await;
    let db = fresh_database(admin_url).await;
    let concurrency = std::env::var("BENCH_POLL_CONCURRENCY").unwrap_or_else(|_| "32".into());
    let app = spawn_app(
        &db,
        &sandbox_url,
        &[
            ("PISGATE__POLLER__ENABLED", "true"),
            ("PISGATE__POLLER__SIGNING_INTERVAL", "1ms"),
            ("PISGATE__POLLER__RATE_PER_SEC", "1000000"),
            ("PISGATE__POLLER__CONCURRENCY", &concurrency),
            ("PISGATE__POLLER__BATCH_SIZE", "100"),
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "3600"),
            ("PISGATE__WEBHOOKS__ENABLED", "false"),
            ("PISGATE__REFRESHER__ENABLED", "false"),
        ],
    )
    .await;
    let key = merchant(&app.pool).await;
    let client = reqwest::Client::new();
    create_opened(&client, &app, &key, PAYMENTS).await;
    let count = || sandbox.counters()[&Operation::Status].received;
    // Warm up, then count over the window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = count();
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let polls = count() - before;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "status polls: {polls} in {secs:.1} s = {:.0} polls/s (one replica, {PAYMENTS} payments awaiting signature, concurrency {concurrency}, sandbox in process)",
        polls as f64 / secs
    );
}

#[derive(Clone, Default)]
struct Received {
    at: Arc<Mutex<HashMap<String, Instant>>>,
}

async fn receive(State(r): State<Received>, headers: HeaderMap, body: String) -> &'static str {
    let now = Instant::now();
    assert!(headers.contains_key("webhook-signature"));
    let v: Value = serde_json::from_str(&body).unwrap();
    if v["type"] == "payment.authorized" {
        let id = v["data"]["id"].as_str().unwrap().to_owned();
        r.at.lock().unwrap().entry(id).or_insert(now);
    }
    "ok"
}

async fn webhook_delay(admin_url: &str) {
    const PAYMENTS: usize = 200;
    let (sandbox, sandbox_url) = spawn_sandbox().await;
    let db = fresh_database(admin_url).await;
    // The default schedule and dispatcher settings (config/default.toml).
    let app = spawn_app(
        &db,
        &sandbox_url,
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "3600"),
            ("PISGATE__REFRESHER__ENABLED", "false"),
            // The default 50 calls/s would cap 200 payments at one poll each 4 s: measure
            // the schedule, not the limiter.
            ("PISGATE__POLLER__RATE_PER_SEC", "1000"),
        ],
    )
    .await;
    let key = merchant(&app.pool).await;
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/webhook-endpoints", app.base))
        .bearer_auth(&key)
        .json(&json!({"url": receiver_url, "events": ["payment.authorized"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let payments = create_opened(&client, &app, &key, PAYMENTS).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sandbox.clear_requests();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let polls = sandbox
        .requests()
        .iter()
        .filter(|r| r.operation == Some(Operation::Status))
        .count();
    println!(
        "steady state: {polls} status polls in 4 s for {PAYMENTS} payments awaiting signature"
    );

    // Change each payment's status at the bank at a known instant: in random order at
    // random moments over ~6 s, so the changes do not line up with the poll cycle.
    let mut order = payments.clone();
    order.shuffle(&mut rand::thread_rng());
    let mut changed_at: HashMap<String, Instant> = HashMap::new();
    for (id, bank_id) in &order {
        assert!(sandbox.force_status(bank_id, Some(BankStatus::Confirmed)));
        changed_at.insert(id.clone(), Instant::now());
        let pause = rand::thread_rng().gen_range(0..60);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let started = Instant::now();
    while received.at.lock().unwrap().len() < PAYMENTS {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "webhooks missing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = received.at.lock().unwrap().clone();
    let mut delays: Vec<Duration> = changed_at
        .iter()
        .map(|(id, t)| at[id].saturating_duration_since(*t))
        .collect();
    delays.sort();
    let pct = |p: f64| delays[((delays.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "bank status change -> webhook received ({PAYMENTS} payments, signing_interval 2s, dispatcher woken by NOTIFY): p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        delays.last().unwrap()
    );
}

fn main() {
    let Ok(admin_url) = std::env::var("PISGATE_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("PISGATE_TEST_DATABASE_URL"))
    else {
        eprintln!("skipping: set PISGATE_BENCH_DATABASE_URL (scripts/bench.sh does)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        polls_per_second(&admin_url).await;
        webhook_delay(&admin_url).await;
    });
}
