//! A leaked key cannot take a merchant over: a key rotated away may only create and read
//! payments during its grace (403 `key_in_grace` for keys and webhook endpoints), and a
//! rotation or revocation reaches every replica's key cache at once, also after that
//! replica's LISTEN session was cut.

use crate::cli::pisgate;
use crate::helpers::{TestApp, assert_problem, fresh_database, spawn_app, spawn_sandbox};
use crate::payments::body;
use crate::serve::Serve;
use crate::webhooks::post_endpoint;
use pisgate::ledger::Db;
use pisgate::ledger::merchants::rotate_key;
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn send(
    client: &reqwest::Client,
    method: Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut r = client.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn a_key_in_its_rotation_grace_creates_and_reads_payments_but_cannot_cancel_them_or_manage_keys_or_webhooks()
 {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let old = m.api_key.clone();
    let r = post_endpoint(
        &app,
        &old,
        &json!({ "url": "http://127.0.0.1:9/hooks/pisgate" }),
    )
    .await;
    assert_eq!(r.status(), 201);
    let endpoint = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The merchant rotates (the old key leaked); the old key has two minutes of grace.
    let rotated = rotate_key(&app.pool, m.id, Duration::from_secs(120))
        .await
        .unwrap()
        .unwrap();
    let new = rotated.api_key.expose_secret().to_owned();
    let new_id = pisgate::ledger::merchants::key_id_of(&new)
        .unwrap()
        .to_owned();

    // A checkout the merchant opened with its new key: the leaked key must not kill it.
    let checkout = app.create_payment(&new, &body("FI")).await;
    let checkout = checkout["id"].as_str().unwrap().to_owned();

    // The attack: mint a key that outlives the grace, then revoke the merchant's new key;
    // cancel the merchant's payments; re-send old webhooks.
    let forbidden = [
        (
            Method::POST,
            format!("/v1/payments/{checkout}/cancel"),
            None,
        ),
        (
            Method::POST,
            format!(
                "/v1/webhook-endpoints/{endpoint}/deliveries/evt_{}/replay",
                uuid::Uuid::now_v7().simple()
            ),
            None,
        ),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{endpoint}/replay"),
            None,
        ),
        (
            Method::POST,
            "/v1/api-keys".to_owned(),
            Some(json!({ "name": "mine" })),
        ),
        (Method::GET, "/v1/api-keys".to_owned(), None),
        (Method::DELETE, format!("/v1/api-keys/{new_id}"), None),
        (
            Method::POST,
            "/v1/webhook-endpoints".to_owned(),
            Some(json!({ "url": "http://127.0.0.1:9/elsewhere" })),
        ),
        (
            Method::PATCH,
            format!("/v1/webhook-endpoints/{endpoint}"),
            Some(json!({ "url": "http://127.0.0.1:9/elsewhere" })),
        ),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{endpoint}/rotate-secret"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{endpoint}/enable"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/webhook-endpoints/{endpoint}"),
            None,
        ),
        (
            Method::PATCH,
            "/v1/merchant".to_owned(),
            Some(json!({ "return_origins": ["https://elsewhere.example"] })),
        ),
    ];
    // The rotation reached this replica through its notification (the contract: within a
    // second); until then its cache may still know the old key as a full one.
    let started = std::time::Instant::now();
    loop {
        let r = send(
            &app.client,
            Method::GET,
            app.url("/v1/api-keys"),
            &old,
            None,
        )
        .await;
        if r.status() == 403 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the old key still manages keys a second after the rotation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (method, path, body) in forbidden {
        let r = send(&app.client, method.clone(), app.url(&path), &old, body).await;
        let problem = assert_problem(r, 403, "key_in_grace").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("grace"),
            "{method} {path}: {problem}"
        );
    }
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE merchant_id = $1")
        .bind(m.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, 2, "no key was made");
    assert_eq!(
        app.get_payment(&new, &checkout).await["status"],
        "awaiting_authorization",
        "the leaked key cancelled a payment"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("pisgate_key_in_grace_refused_total 13"),
        "{metrics}"
    );

    // Payments still work with it until the grace ends.
    let created = app.create_payment(&old, &body("FI")).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(app.get_payment(&old, id).await["id"], created["id"]);
    assert_eq!(app.get_as("/v1/payments", &old).await.status(), 200);
    assert_eq!(app.get_as("/v1/merchant", &old).await.status(), 200);

    // The merchant's new key manages everything, and still works.
    assert_eq!(app.get_as("/v1/api-keys", &new).await.status(), 200);
    let path = format!("/v1/webhook-endpoints/{endpoint}");
    let r = send(
        &app.client,
        Method::PATCH,
        app.url(&path),
        &new,
        Some(json!({ "description": "ours" })),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_key_made_over_the_api_before_a_rotation_is_in_grace_after_it() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let r = send(
        &app.client,
        Method::POST,
        app.url("/v1/api-keys"),
        &m.api_key,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let extra = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get_as("/v1/api-keys", &extra).await.status(), 200);
    rotate_key(&app.pool, m.id, Duration::from_secs(120))
        .await
        .unwrap()
        .unwrap();
    // Cached a moment ago as a full key; the rotation's notification made it forget that.
    let started = Instant::now();
    loop {
        let r = app.get_as("/v1/api-keys", &extra).await;
        if r.status() == 403 {
            assert_problem(r, 403, "key_in_grace").await;
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still a full key after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asks `base` with `key` until it is refused (401), for at most `within`; returns how long.
async fn refused_within(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let r = send(
            client,
            Method::GET,
            format!("{base}/v1/merchant"),
            key,
            None,
        )
        .await;
        if r.status() == 401 {
            return started.elapsed();
        }
        assert_eq!(r.status(), 200);
        assert!(
            started.elapsed() < within,
            "{base}: still accepted after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn accepted(client: &reqwest::Client, base: &str, key: &str) -> bool {
    send(
        client,
        Method::GET,
        format!("{base}/v1/merchant"),
        key,
        None,
    )
    .await
    .status()
        == 200
}

#[tokio::test]
async fn rotate_key_with_no_grace_and_an_api_revocation_reach_every_replica_within_a_second() {
    let database_url = fresh_database().await;
    let (_sandbox, sandbox_url) = spawn_sandbox(|_| {}).await;
    let env = [("PISGATE__RATE_LIMIT__REQUESTS_PER_WINDOW", "100000")];
    let a = Serve::with_bank(&database_url, &sandbox_url, &env).await;
    let b = Serve::with_bank(&database_url, &sandbox_url, &env).await;
    let pool = Db::from(sqlx::PgPool::connect(&database_url).await.unwrap());
    let (merchant, key) =
        pisgate::ledger::merchants::create(&pool, "Shop", &["https://shop.example".into()])
            .await
            .unwrap();
    let old = key.expose_secret().to_owned();
    let client = reqwest::Client::new();
    // Both replicas have verified (and cached) the old key.
    for base in [&a.base, &b.base] {
        assert!(accepted(&client, base, &old).await);
        assert!(accepted(&client, base, &old).await);
    }

    let out = pisgate()
        .args([
            "merchant",
            "rotate-key",
            &merchant.id.to_string(),
            "--grace",
            "0s",
        ])
        .env("PISGATE__DATABASE__URL", &database_url)
        .env("PISGATE__DATABASE__POOLER", "none")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = serde_json::from_slice::<Value>(&out.stdout).unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    for base in [&a.base, &b.base] {
        let took = refused_within(&client, base, &old, Duration::from_secs(1)).await;
        eprintln!("{base}: the rotated-away key refused after {took:?}");
        assert!(accepted(&client, base, &new).await);
    }

    // A key revoked through one replica's API is refused by the other at once.
    let r = send(
        &client,
        Method::POST,
        format!("{}/v1/api-keys", a.base),
        &new,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let made = r.json::<Value>().await.unwrap();
    let extra = made["api_key"].as_str().unwrap().to_owned();
    assert!(accepted(&client, &b.base, &extra).await);
    assert!(accepted(&client, &b.base, &extra).await);
    let r = send(
        &client,
        Method::DELETE,
        format!("{}/v1/api-keys/{}", a.base, made["id"].as_str().unwrap()),
        &new,
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    let took = refused_within(&client, &b.base, &extra, Duration::from_secs(1)).await;
    eprintln!("the other replica refused the revoked key after {took:?}");
}

/// The backends of this database that LISTEN (the app's one LISTEN session).
async fn listen_backends(pool: &Db) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_replica_whose_listen_session_was_cut_refuses_a_key_revoked_meanwhile_at_once() {
    let app: TestApp = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let r = send(
        &app.client,
        Method::POST,
        app.url("/v1/api-keys"),
        &m.api_key,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let made = r.json::<Value>().await.unwrap();
    let doomed = made["api_key"].as_str().unwrap().to_owned();
    let doomed_id = made["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let listening = loop {
        let pids = listen_backends(&app.pool).await;
        if !pids.is_empty() {
            break pids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no LISTEN session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Verified and cached.
    assert_eq!(app.get_as("/v1/merchant", &doomed).await.status(), 200);
    assert_eq!(app.get_as("/v1/merchant", &doomed).await.status(), 200);

    // The LISTEN session is cut; the revocation's notification has nowhere to go.
    for pid in &listening {
        let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    }
    // Wait until the replica noticed: it LISTENs again on a new session (it reconnects only
    // after it marked the old one down). Waiting only for the old session to vanish raced the
    // replica's own noticing under load.
    let started = Instant::now();
    loop {
        let now = listen_backends(&app.pool).await;
        if !now.is_empty() && now.iter().all(|p| !listening.contains(p)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the replica never listened again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The revocation whose notification was lost with the cut session: written without its
    // NOTIFY, so only the replica's own bookkeeping of the cut can refuse the cached key.
    let revoked = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1")
        .bind(&doomed_id)
        .execute(&app.pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(revoked, 1);
    assert_problem(
        app.get_as("/v1/merchant", &doomed).await,
        401,
        "unauthenticated",
    )
    .await;
    // The other key still works, and the session comes back.
    assert_eq!(app.get_as("/v1/merchant", &m.api_key).await.status(), 200);
    let started = Instant::now();
    while listen_backends(&app.pool).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "LISTEN not back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A leaked key's request that was authenticated before the merchant rotated it away, and
/// reaches the database only after the rotation committed (it waited behind the rotation's
/// lock on the merchant), mints no key, takes no webhook endpoint and changes no setting:
/// the change checks the asking key again under the lock (403 `key_in_grace`).
#[tokio::test]
async fn a_leaked_keys_change_in_flight_across_a_rotation_is_refused_after_it_commits() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let mut leaked = m.api_key.clone();
    let receiver = "http://127.0.0.1:9/hooks/pisgate".to_owned();
    let changes: Vec<(Method, &str, Option<Value>)> = vec![
        (
            Method::POST,
            "/v1/api-keys",
            Some(json!({"name": "attacker"})),
        ),
        (
            Method::POST,
            "/v1/webhook-endpoints",
            Some(json!({"url": receiver})),
        ),
        (
            Method::PATCH,
            "/v1/merchant",
            Some(json!({"return_origins": ["https://attacker.example"]})),
        ),
    ];
    for (method, path, body) in changes {
        // Verified and cached: the request below is authenticated without the database.
        assert_eq!(app.get_as("/v1/merchant", &leaked).await.status(), 200);
        // The rotation holds the merchant's row, as `merchant rotate-key` does until commit.
        let mut rotation = app.pool.begin().await.unwrap();
        let rotated = pisgate::ledger::merchants::rotate_key_in(
            &mut rotation,
            m.id,
            Duration::from_secs(3600),
        )
        .await
        .unwrap()
        .unwrap();
        let (client, url, key) = (app.client.clone(), app.url(path), leaked.clone());
        let request =
            tokio::spawn(async move { send(&client, method.clone(), url, &key, body).await });
        // The request is inside the database, waiting for the rotation's lock.
        let waited = Instant::now();
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype IN ('tuple', 'transactionid')",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "{path}: the request never waited for the rotation"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rotation.commit().await.unwrap();
        let r = request.await.unwrap();
        assert_problem(r, 403, "key_in_grace").await;
        // The merchant's new key still manages everything, and nothing was changed.
        let fresh = rotated.api_key.expose_secret().to_owned();
        let keys = app.get_as("/v1/api-keys", &fresh).await;
        let keys: Value = keys.json().await.unwrap();
        assert!(
            keys["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|k| k["name"] != "attacker"),
            "{path}: {keys}"
        );
        // The next round's leaked key is this round's new one.
        leaked = fresh;
    }
    let endpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(endpoints, 0);
    let origins: Vec<String> =
        sqlx::query_scalar("SELECT return_origins FROM merchants WHERE id = $1")
            .bind(m.id)
            .fetch_one(&app.pool)
            .await
            .map(|o: Vec<String>| o)
            .unwrap();
    assert!(
        !origins.iter().any(|o| o.contains("attacker")),
        "{origins:?}"
    );
}
