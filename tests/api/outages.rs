//! Outages answered properly: a database that goes away, a request past the server's
//! deadline, and the purge of idempotency keys after their retention.

use crate::helpers::{TestApp, assert_problem, database_reachable, spawn_app_with};
use crate::payments::body;
use serde_json::Value;
use std::time::{Duration, Instant};

async fn ready(app: &TestApp) -> u16 {
    app.admin_get("/readyz").await.status().as_u16()
}

async fn wait_ready(app: &TestApp, want: u16) {
    let started = Instant::now();
    while ready(app).await != want {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/readyz never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_database_outage_is_a_fast_503_and_the_same_key_succeeds_after_it() {
    let app = spawn_app_with(&[]).await;
    let m = app.create_merchant("Shop").await;
    let first = app.create_payment(&m.api_key, &body("FI")).await;

    database_reachable(&app, false).await;
    wait_ready(&app, 503).await;
    // The shopper's page says so too, with when to try again.
    let r = app
        .client
        .get(first["authorization_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "2");
    let started = Instant::now();
    let r = app.post_payment(&m.api_key, "k-outage", &body("FI")).await;
    let took = started.elapsed();
    assert_eq!(r.headers()["retry-after"], "1");
    assert_problem(r, 503, "database_unavailable").await;
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
    // Reads too, and never a 500.
    let r = app.get_as("/v1/payments", &m.api_key).await;
    assert_problem(r, 503, "database_unavailable").await;

    database_reachable(&app, true).await;
    wait_ready(&app, 200).await;
    let r = app.post_payment(&m.api_key, "k-outage", &body("FI")).await;
    assert_eq!(r.status(), 201);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn a_creation_cut_off_by_the_server_deadline_is_a_503_and_the_same_key_completes_it() {
    let app = spawn_app_with(&[
        ("PISGATE__SERVER__REQUEST_TIMEOUT_SECS", "3"),
        ("PISGATE__PAYMENTS__IDEMPOTENCY_STALE_AFTER_SECS", "2"),
        ("PISGATE__CALLBACK__REDIRECT_TIMEOUT", "1s"),
    ])
    .await;
    let m = app.create_merchant("Shop").await;
    // Something holds the idempotency table: the creation waits past the server's deadline.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = Instant::now();
    let r = app
        .post_payment(&m.api_key, "k-deadline", &body("SE"))
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(r.headers()["retry-after"], "1");
    let problem = assert_problem(r, 503, "deadline_exceeded").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("same Idempotency-Key")
    );
    blocker.rollback().await.unwrap();

    let started = Instant::now();
    let done = loop {
        let r = app
            .post_payment(&m.api_key, "k-deadline", &body("SE"))
            .await;
        if r.status() != 409 {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the key stays in flight"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done.status(), 201);
    let v: Value = done.json().await.unwrap();
    assert!(v["authorization_url"].is_string());
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn idempotency_keys_are_purged_after_their_retention_and_not_before() {
    let app = spawn_app_with(&[("PISGATE__PAYMENTS__IDEMPOTENCY_PURGE_INTERVAL", "200ms")]).await;
    let m = app.create_merchant("Shop").await;
    for key in ["k-old-1", "k-old-2", "k-new"] {
        assert_eq!(
            app.post_payment(&m.api_key, key, &body("DK"))
                .await
                .status(),
            201
        );
    }
    let expires: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT expires_at FROM idempotency_keys")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    for e in &expires {
        let kept = *e - chrono::Utc::now();
        assert!(
            kept > chrono::Duration::hours(23),
            "kept at least a day: {kept}"
        );
    }
    sqlx::query(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key LIKE 'k-old-%'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let started = Instant::now();
    loop {
        let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
            .fetch_all(&app.pool)
            .await
            .unwrap();
        if left == ["k-new"] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not purged: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The payments themselves stay.
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 3);
}

#[tokio::test]
async fn a_retention_under_a_day_is_refused_at_start() {
    let vars = [("PISGATE__PAYMENTS__IDEMPOTENCY_RETENTION", "1h")];
    let mut all: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    all.insert(
        "PISGATE__DATABASE__URL".into(),
        "postgres://u@localhost/db".into(),
    );
    all.insert("PISGATE__NORDEA__CLIENT_ID".into(), "c".into());
    all.insert("PISGATE__NORDEA__CLIENT_SECRET".into(), "s".into());
    all.insert("PISGATE__NORDEA__PRIVATE_KEY".into(), "k".into());
    all.insert("PISGATE__TOKENS__ENCRYPTION_KEY".into(), "k".into());
    for (k, v) in vars {
        all.insert(k.into(), v.into());
    }
    let e = pisgate::config::Settings::load_from(&pisgate::config::Sources {
        config_dir: crate::helpers::config_dir(),
        environment: None,
        vars: all,
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("PISGATE__PAYMENTS__IDEMPOTENCY_RETENTION"),
        "{e}"
    );
}

/// A TCP forwarder standing in for the database server: `kill` closes its port (new
/// connections refused) and cuts every open connection, as a crashed server does.
struct DyingServer {
    url: String,
    kill: tokio::sync::watch::Sender<bool>,
}

async fn dying_server(target_url: &str) -> DyingServer {
    let (listener, target, url) = crate::helpers::database_stand_in(target_url).await;
    let (kill, killed) = tokio::sync::watch::channel(false);
    let mut accept_killed = killed.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { return };
                    let target = target.clone();
                    let mut killed = killed.clone();
                    tokio::spawn(async move {
                        let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = killed.wait_for(|k| *k) => {}
                        }
                    });
                }
                // Dropping the listener closes the port.
                _ = accept_killed.wait_for(|k| *k) => return,
            }
        }
    });
    DyingServer { url, kill }
}

/// The first request after the database dies is answered 503 within a second (it once
/// waited out the pool's 5 s, retrying refused connections), and so are the ones after it.
#[tokio::test]
async fn the_first_request_after_the_database_dies_is_a_503_within_a_second() {
    let database = crate::helpers::fresh_database().await;
    let server = dying_server(&database).await;
    let app = crate::helpers::spawn_app_on(
        &server.url,
        &[("PISGATE__DATABASE__URL", server.url.as_str())],
        |_| {},
    )
    .await;
    let m = app.create_merchant("Shop").await;
    app.create_payment(&m.api_key, &body("FI")).await;
    assert_eq!(ready(&app).await, 200);

    server.kill.send(true).unwrap();
    for (i, key) in ["k-first", "k-second"].iter().enumerate() {
        let started = Instant::now();
        let r = app.post_payment(&m.api_key, key, &body("FI")).await;
        let took = started.elapsed();
        assert_problem(r, 503, "database_unavailable").await;
        assert!(
            took < Duration::from_secs(1),
            "request {i} answered in {took:?}"
        );
    }
    let started = Instant::now();
    let r = app.get_as("/v1/payments", &m.api_key).await;
    assert_problem(r, 503, "database_unavailable").await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(ready(&app).await, 503);
}
