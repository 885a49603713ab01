//! `spawn_app` and friends: a running pisgate on a random port with its own database.

use pisgate::app::Application;
use pisgate::config::{Settings, Sources};
use pisgate::ledger::Db;
use pisgate::ledger::keys::LedgerKeys;
use pisgate::sandbox::{Sandbox, SandboxConfig};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub fn cluster_url() -> String {
    std::env::var("PISGATE_TEST_DATABASE_URL").expect(
        "PISGATE_TEST_DATABASE_URL is not set: run the tests through scripts/test.sh, which starts PostgreSQL",
    )
}

/// How `pisgate` reaches a test database: directly, or (when `PISGATE_TEST_PGBOUNCER_URL`
/// names a PgBouncer in transaction mode in front of the test cluster, `scripts/test.sh
/// --pgbouncer`) through the pooler, with the direct URL for LISTEN and migrations. Either
/// way `database.pooler` is left to its default, "auto": every pisgate under test finds out
/// at start what it is talking to. Tests create and inspect databases directly either way.
pub fn database_env(database_url: &str) -> Vec<(&'static str, String)> {
    match std::env::var("PISGATE_TEST_PGBOUNCER_URL") {
        Ok(pooler) if !pooler.is_empty() => {
            let (_, db) = database_url
                .rsplit_once('/')
                .expect("a database URL has a path");
            vec![
                ("PISGATE__DATABASE__URL", with_database(&pooler, db)),
                ("PISGATE__DATABASE__DIRECT_URL", database_url.into()),
            ]
        }
        _ => vec![("PISGATE__DATABASE__URL", database_url.into())],
    }
}

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database URL has a path");
    format!("{base}/{db}")
}

/// A name that changes whenever the migrations change, so a stale template is never used.
fn template_name() -> String {
    let mut fingerprint = 0u64;
    for m in pisgate::ledger::MIGRATOR.iter() {
        for b in m.checksum.iter() {
            fingerprint = fingerprint.wrapping_mul(31).wrapping_add(u64::from(*b));
        }
        fingerprint = fingerprint.wrapping_mul(31).wrapping_add(m.version as u64);
    }
    format!("pisgate_template_{fingerprint:016x}")
}

/// Creates an empty, fully migrated database and returns its URL. A migrated template is
/// made once per cluster (under an advisory lock, as test processes run in parallel) and
/// copied, which is much faster than migrating every time.
pub async fn fresh_database() -> String {
    // What `serve` installs at start: the tests that write merchants, keys or events before
    // (or without) an app in this process seal them with the test ledger key.
    install_ledger_key();
    let admin_url = cluster_url();
    let template = template_name();
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .expect("connect to the test cluster");
    admin
        .execute("SELECT pg_advisory_lock(727272)")
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if !exists {
        admin
            .execute(format!(r#"CREATE DATABASE "{template}""#).as_str())
            .await
            .unwrap();
        let pool = sqlx::PgPool::connect(&with_database(&admin_url, &template))
            .await
            .unwrap();
        pisgate::ledger::migrate(&pool)
            .await
            .expect("migrations apply");
        pool.close().await;
    }
    let name = format!("test_{}", Uuid::new_v4().simple());
    admin
        .execute(format!(r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#).as_str())
        .await
        .unwrap();
    admin
        .execute("SELECT pg_advisory_unlock(727272)")
        .await
        .unwrap();
    admin.close().await.ok();
    with_database(&admin_url, &name)
}

/// A database with no migrations applied.
pub async fn empty_database() -> String {
    let admin_url = cluster_url();
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    let name = format!("test_{}", Uuid::new_v4().simple());
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap();
    with_database(&admin_url, &name)
}

pub fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

pub const CLIENT_ID: &str = "pisgate-test-client";
pub const CLIENT_SECRET: &str = "pisgate-test-secret";
/// Base64 of 32 bytes: the test token-encryption key.
pub const TOKEN_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// Base64 of 32 bytes: the test ledger key, id `l1` (the default `ledger.key_id`).
pub const LEDGER_KEY: &str = "bGVkZ2VyLWtleS1mb3ItdGVzdHMtb25seS0zMi1ieXQ=";

/// The ring of the test ledger key, as `serve` builds it from [`settings`].
pub fn ledger_keys() -> LedgerKeys {
    LedgerKeys::new("l1", &SecretString::from(LEDGER_KEY)).expect("the test ledger key is valid")
}

/// Makes this process append events under the test ledger key (what `serve` does at start),
/// for tests that append without an app.
pub fn install_ledger_key() -> LedgerKeys {
    pisgate::ledger::keys::install(ledger_keys());
    ledger_keys()
}

/// `ledger verify` over the whole database passes: every chain intact and every row it
/// binds as its ledger recorded it.
pub async fn assert_ledger_verifies(pool: &Db) {
    let report = pisgate::ledger::events::verify_all(pool, &ledger_keys())
        .await
        .unwrap();
    assert!(report.is_ok(), "ledger verify: {report:?}");
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nordea")
        .join(name)
}

pub fn private_key_pem() -> String {
    std::fs::read_to_string(fixture("kat-private.pem")).unwrap()
}

pub fn public_key_pem() -> String {
    std::fs::read_to_string(fixture("kat-public.pem")).unwrap()
}

/// Settings for a test app: the test key, client and token key; no bank calls unless a
/// sandbox is wired in through the overrides.
pub fn settings(database_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = HashMap::new();
    for (k, v) in database_env(database_url) {
        vars.insert(k.into(), v);
    }
    vars.insert("PISGATE__SERVER__LISTEN".into(), "127.0.0.1:0".into());
    vars.insert("PISGATE__ADMIN__LISTEN".into(), "127.0.0.1:0".into());
    // The tests reach the console over plain HTTP (as scripts/run.sh does).
    vars.insert(
        "PISGATE__ADMIN__CONSOLE_SECURE_COOKIE".into(),
        "false".into(),
    );
    vars.insert("PISGATE__DATABASE__MAX_CONNECTIONS".into(), "10".into());
    vars.insert(
        "PISGATE__NORDEA__BASE_URL".into(),
        "http://127.0.0.1:9/personal".into(),
    );
    vars.insert("PISGATE__NORDEA__CLIENT_ID".into(), CLIENT_ID.into());
    vars.insert(
        "PISGATE__NORDEA__CLIENT_SECRET".into(),
        CLIENT_SECRET.into(),
    );
    vars.insert("PISGATE__NORDEA__PRIVATE_KEY".into(), private_key_pem());
    vars.insert("PISGATE__NORDEA__ENVIRONMENT".into(), "sandbox".into());
    vars.insert("PISGATE__NORDEA__REQUEST_TIMEOUT_SECS".into(), "5".into());
    vars.insert("PISGATE__TOKENS__ENCRYPTION_KEY".into(), TOKEN_KEY.into());
    vars.insert("PISGATE__LEDGER__KEY".into(), LEDGER_KEY.into());
    vars.insert("PISGATE__LEDGER__CHECKPOINT_ENABLED".into(), "false".into());
    // Workers are off unless a test switches them on, so a test owns every bank call.
    vars.insert("PISGATE__POLLER__ENABLED".into(), "false".into());
    vars.insert("PISGATE__REFRESHER__ENABLED".into(), "false".into());
    vars.insert("PISGATE__WEBHOOKS__ENABLED".into(), "false".into());
    vars.insert(
        "PISGATE__WEBHOOKS__ALLOW_INSECURE_URLS".into(),
        "true".into(),
    );
    for (k, v) in overrides {
        vars.insert((*k).into(), (*v).into());
    }
    Settings::load_from(&Sources {
        config_dir: config_dir(),
        environment: None,
        vars,
    })
    .expect("test settings are valid")
}

pub struct TestApp {
    pub address: String,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub admin_address: String,
    /// The settings the app runs with (its own fresh database).
    pub settings: Settings,
    pub sandbox: Arc<Sandbox>,
    pub sandbox_url: String,
    pub pool: Db,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub struct TestMerchant {
    pub id: Uuid,
    pub api_key: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A listener on a free local port standing in for the database at `target_url`: the
/// listener, the `host:port` to forward to, and `target_url` with the listener's port.
pub async fn database_stand_in(target_url: &str) -> (tokio::net::TcpListener, String, String) {
    let parsed = reqwest::Url::parse(target_url).unwrap();
    let target = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432)
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut url = parsed;
    url.set_port(Some(listener.local_addr().unwrap().port()))
        .unwrap();
    (listener, target, url.to_string())
}

/// Starts the Nordea sandbox simulator on a random port (payments confirm at once and stay
/// Confirmed unless the test changes the delays).
pub async fn spawn_sandbox(configure: impl FnOnce(&mut SandboxConfig)) -> (Arc<Sandbox>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = SandboxConfig::new(
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET),
        public_key_pem(),
        url.clone(),
    );
    config.confirm_delay = Duration::ZERO;
    config.paid_delay = Duration::from_secs(3600);
    configure(&mut config);
    let sandbox = Sandbox::new(config).expect("the sandbox builds");
    tokio::spawn(pisgate::sandbox::serve(
        listener,
        sandbox.clone(),
        std::future::pending(),
    ));
    (sandbox, url)
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_full(overrides, |_| {}).await
}

pub async fn spawn_app_full(
    overrides: &[(&str, &str)],
    configure_sandbox: impl FnOnce(&mut SandboxConfig),
) -> TestApp {
    spawn_app_on(&fresh_database().await, overrides, configure_sandbox).await
}

/// As [`spawn_app_full`], on a database the test made (or reaches its own way).
pub async fn spawn_app_on(
    database_url: &str,
    overrides: &[(&str, &str)],
    configure_sandbox: impl FnOnce(&mut SandboxConfig),
) -> TestApp {
    let (sandbox, sandbox_url) = spawn_sandbox(configure_sandbox).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let base_url = format!("{sandbox_url}/personal");
    let mut all: Vec<(&str, &str)> = vec![
        ("PISGATE__NORDEA__BASE_URL", &base_url),
        ("PISGATE__SERVER__PUBLIC_URL", &address),
    ];
    all.extend_from_slice(overrides);
    let settings = settings(database_url, &all);
    let app = Application::build_on(settings.clone(), listener)
        .await
        .expect("the app builds");
    let pool = app.pool().clone();
    let admin_address = format!("http://{}", app.admin_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        address,
        admin_address,
        settings,
        sandbox,
        sandbox_url,
        pool,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        shutdown: Some(tx),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A pool of the test's own, straight to PostgreSQL (around a PgBouncer the app is given
    /// under test): survives the app's pool closing, and is safe for raw sqlx calls that
    /// prepare named statements.
    pub async fn direct_pool(&self) -> sqlx::PgPool {
        let db = &self.settings.database;
        let url = db.direct_url.as_ref().unwrap_or(&db.url);
        sqlx::PgPool::connect(secrecy::ExposeSecret::expose_secret(url))
            .await
            .unwrap()
    }

    /// Starts the graceful stop, as SIGTERM does.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{}", self.admin_address, path)
    }

    pub async fn create_merchant(&self, name: &str) -> TestMerchant {
        let (m, key) =
            pisgate::ledger::merchants::create(&self.pool, name, &["https://shop.example".into()])
                .await
                .unwrap();
        TestMerchant {
            id: m.id,
            api_key: secrecy::ExposeSecret::expose_secret(&key).to_owned(),
        }
    }

    pub async fn post_payment(
        &self,
        key: &str,
        idempotency_key: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/v1/payments"))
            .bearer_auth(key)
            .header("idempotency-key", idempotency_key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a payment that must succeed, and returns its JSON.
    pub async fn create_payment(&self, key: &str, body: &Value) -> Value {
        let r = self
            .post_payment(key, &Uuid::new_v4().to_string(), body)
            .await;
        let status = r.status();
        let json: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{json}");
        json
    }

    /// Plays the shopper's browser: opens the signing link, presses Approve (or Reject) as
    /// `psu_id`, and follows the bank's redirect to our callback. Returns the callback's
    /// answer (a 303 to the merchant's return URL, or an error page).
    pub async fn sign(
        &self,
        authorization_url: &str,
        psu_id: &str,
        approve: bool,
    ) -> reqwest::Response {
        let callback = self.sign_at_bank(authorization_url, psu_id, approve).await;
        self.client.get(callback).send().await.unwrap()
    }

    /// Signs at the bank and returns the callback URL it redirects to, without following it.
    pub async fn sign_at_bank(
        &self,
        authorization_url: &str,
        psu_id: &str,
        approve: bool,
    ) -> String {
        let location = browser_sign(&self.client, authorization_url, psu_id, approve).await;
        assert!(
            location.starts_with(&self.url("/v1/callbacks/nordea")),
            "{location}"
        );
        location
    }

    /// Every payment the sandbox bank holds for one pisgate payment (pisgate sends its
    /// payment id, without hyphens, as the external id).
    pub fn bank_payments_for(&self, payment_id: &str) -> Vec<pisgate::sandbox::PaymentView> {
        let id: Uuid = payment_id.parse().expect("a payment id");
        self.sandbox
            .payment_by_external_id(&id.simple().to_string())
    }

    /// How many calls of this kind the sandbox received.
    pub fn bank_calls(&self, operation: pisgate::sandbox::Operation) -> usize {
        self.sandbox
            .requests()
            .iter()
            .filter(|r| r.operation == Some(operation))
            .count()
    }

    pub async fn get_payment(&self, key: &str, id: &str) -> Value {
        let r = self.get_as(&format!("/v1/payments/{id}"), key).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.admin_url(path)).send().await.unwrap()
    }

    /// A scrape of `/metrics`, as Prometheus would take it.
    pub async fn metrics(&self) -> String {
        let r = self.admin_get("/metrics").await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    pub async fn get_as(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }
}

/// Cuts the app's database off, as a stopped server would be (new connections refused,
/// open ones terminated), or lets it back in. Other tests' databases are not touched.
pub async fn database_reachable(app: &TestApp, on: bool) {
    let admin = Db::from(sqlx::PgPool::connect(&cluster_url()).await.unwrap());
    let db = app
        .settings
        .database
        .url()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    sqlx::query(&format!(r#"ALTER DATABASE "{db}" ALLOW_CONNECTIONS {on}"#))
        .execute(&admin)
        .await
        .unwrap();
    if !on {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&db)
            .execute(&admin)
            .await
            .unwrap();
    }
    admin.close().await;
}

/// Posts each body with a fresh Idempotency-Key and asserts a 422 naming its field, then that
/// no payment was written at all (a bank's refusal at creation writes nothing).
pub async fn assert_refused_at_creation(app: &TestApp, api_key: &str, cases: Vec<(Value, &str)>) {
    for (body, field) in cases {
        let r = app
            .post_payment(api_key, &uuid::Uuid::new_v4().to_string(), &body)
            .await;
        let problem = assert_problem(r, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let made: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(made, 0, "nothing written");
}

/// Asserts that a response is an RFC 9457 problem with this status and code, and returns it.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(content_type, "application/problem+json", "content type");
    let request_id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .expect("every answer has an x-request-id");
    let body: Value = response.json().await.expect("a problem body is JSON");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["request_id"], request_id, "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    body
}

/// The `field` of each entry of a validation problem's `errors`, in order.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .expect("a validation problem has errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

/// Opens a payment's `authorization_url` (pisgate's hop) as a browser would: on the consent
/// page presses "Continue", then follows the redirect to the bank's signing page, if it
/// gives one.
pub async fn open_authorization(
    client: &reqwest::Client,
    authorization_url: &str,
) -> reqwest::Response {
    let mut hop = client.get(authorization_url).send().await.unwrap();
    if hop.status() == 200 {
        hop = continue_to_bank(client, authorization_url).await;
    }
    if hop.status() != 303 {
        return hop;
    }
    let bank = hop.headers()["location"].to_str().unwrap().to_owned();
    client.get(&bank).send().await.unwrap()
}

/// Presses the consent page's "Continue" button: posts the hop's token back to the hop.
pub async fn continue_to_bank(
    client: &reqwest::Client,
    authorization_url: &str,
) -> reqwest::Response {
    let (hop, token) = authorization_url.split_once("?t=").expect("a hop URL");
    client.post(hop).form(&[("t", token)]).send().await.unwrap()
}

/// Plays the shopper approving `payment` at the bank and coming back: returns the callback's
/// answer (a 303 to the merchant's return URL).
pub async fn sign_and_return(
    client: &reqwest::Client,
    payment: &Value,
    psu_id: &str,
) -> reqwest::Response {
    let authorization_url = payment["authorization_url"].as_str().expect("a payment");
    let callback = browser_sign(client, authorization_url, psu_id, true).await;
    client.get(callback).send().await.unwrap()
}

/// Plays the shopper's browser at the bank: opens the signing link, presses Approve (or
/// Reject) as `psu_id`, and returns where the bank redirects (our callback with code and
/// state), without following it.
pub async fn browser_sign(
    client: &reqwest::Client,
    authorization_url: &str,
    psu_id: &str,
    approve: bool,
) -> String {
    let page = open_authorization(client, authorization_url).await;
    assert_eq!(page.status(), 200, "the signing page opens");
    let html = page.text().await.unwrap();
    let action = html
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the signing page has a form")
        .replace("&amp;", "&");
    let decision = if approve { "approve" } else { "reject" };
    let r = client
        .post(&action)
        .form(&[("decision", decision), ("psu_id", psu_id)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the bank redirects back");
    r.headers()["location"].to_str().unwrap().to_owned()
}
