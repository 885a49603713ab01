//! `spawn_app` and friends: a running pisgate on a random port with its own database.

use pisgate::app::Application;
use pisgate::config::{Settings, Sources};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use std::collections::HashMap;
use std::path::PathBuf;
use uuid::Uuid;

pub fn cluster_url() -> String {
    std::env::var("PISGATE_TEST_DATABASE_URL").expect(
        "PISGATE_TEST_DATABASE_URL is not set: run the tests through scripts/test.sh, which starts PostgreSQL",
    )
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
        let pool = PgPool::connect(&with_database(&admin_url, &template))
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

pub fn settings(database_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("PISGATE__DATABASE__URL".into(), database_url.into());
    vars.insert("PISGATE__SERVER__LISTEN".into(), "127.0.0.1:0".into());
    vars.insert("PISGATE__DATABASE__MAX_CONNECTIONS".into(), "5".into());
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
    pub pool: PgPool,
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

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let settings = settings(&fresh_database().await, overrides);
    let app = Application::build(settings).await.expect("the app builds");
    let address = format!("http://{}", app.local_addr());
    let pool = app.pool().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        address,
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

    pub async fn get_as(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }
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
