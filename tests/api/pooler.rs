//! Scale-out plumbing: a transaction pooler in front of PostgreSQL (`database.pooler =
//! "transaction"`, `ledger::db`) and a read replica for list reads (`database.read_url`).
//! The whole suite also runs behind a real PgBouncer in transaction mode (`scripts/test.sh
//! --pgbouncer`, part of every full run).

use crate::helpers::{fresh_database, spawn_app_with};
use crate::payments::body;
use pisgate::config::{DatabaseSettings, Pooler};
use pisgate::ledger::Db;
use secrecy::SecretString;
use serde_json::Value;
use std::time::{Duration, Instant};

fn db_settings(pooler: Pooler, max_connections: u32) -> DatabaseSettings {
    DatabaseSettings {
        url: SecretString::from("postgres://unused"),
        pooler,
        direct_url: None,
        read_url: None,
        read_max_lag: Duration::from_secs(5),
        max_connections,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(10),
        migrate_on_start: false,
    }
}

/// Statements prepared by sqlx that are still on the server, the asking one excluded.
async fn leftover_statements(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_prepared_statements
          WHERE statement NOT LIKE '%pg_prepared_statements%'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

/// Many different statements, single and in transactions, over two connections.
async fn workload(db: &Db, tasks: usize, rounds: usize) -> Result<(), sqlx::Error> {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let db = db.clone();
        set.spawn(async move {
            for i in 0..rounds {
                // A different SQL text each time: a fresh statement name every time too.
                let sql = format!("SELECT $1::int8 + {i} AS v /* task {t} */");
                let v: i64 = sqlx::query_scalar(&sql)
                    .bind(t as i64)
                    .fetch_one(&db)
                    .await?;
                assert_eq!(v, (t + i) as i64);
                let mut tx = db.begin().await?;
                let w: i64 = sqlx::query_scalar("SELECT $1::int8 * 2")
                    .bind(i as i64)
                    .fetch_one(&mut *tx)
                    .await?;
                assert_eq!(w, 2 * i as i64);
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap()?;
    }
    Ok(())
}

#[tokio::test]
async fn behind_a_transaction_pooler_no_prepared_statement_outlives_its_transaction() {
    let url = fresh_database().await;
    let pooled = Db::connect(&db_settings(Pooler::Transaction, 2), &url)
        .await
        .unwrap();
    assert!(pooled.pooled());
    workload(&pooled, 4, 50).await.unwrap();
    // Every transaction there starts clean, whatever ran on the connection before.
    let mut tx = pooled.begin().await.unwrap();
    assert_eq!(leftover_statements(&mut tx).await, 0);
    tx.rollback().await.unwrap();
    // A single query through the pool runs in a transaction of its own: it sees no
    // statement but itself.
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements /* single */")
        .fetch_one(&pooled)
        .await
        .unwrap();
    assert_eq!(seen, 1, "only the asking statement");
    // Without the pooler mode, sqlx caches statements on the session (the fast path).
    let direct = Db::connect(&db_settings(Pooler::None, 1), &url)
        .await
        .unwrap();
    workload(&direct, 1, 5).await.unwrap();
    let mut conn = direct.read_conn().await.unwrap();
    assert!(leftover_statements(&mut conn).await >= 5);
}

#[tokio::test]
async fn a_read_conn_behind_a_transaction_pooler_never_keeps_a_write() {
    let url = fresh_database().await;
    let pooled = Db::connect(&db_settings(Pooler::Transaction, 1), &url)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (v int)")
        .execute(&pooled)
        .await
        .unwrap();
    {
        let mut conn = pooled.read_conn().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    // Writes through the pool itself are committed before their answer comes back.
    sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&pooled)
        .await
        .unwrap();
    let kept: Vec<i32> = sqlx::query_scalar("SELECT v FROM t ORDER BY v")
        .fetch_all(&pooled)
        .await
        .unwrap();
    assert_eq!(kept, vec![2]);
}

/// Runs only behind the real PgBouncer of `scripts/test.sh --pgbouncer`: there, plain sqlx
/// (named statements, two exchanges per query) breaks under concurrency, and the pooled
/// mode does not.
#[tokio::test]
async fn through_pgbouncer_in_transaction_mode_only_the_pooled_mode_survives_concurrency() {
    let Ok(pooler) = std::env::var("PISGATE_TEST_PGBOUNCER_URL") else {
        eprintln!("PISGATE_TEST_PGBOUNCER_URL is not set: runs in the PgBouncer pass only");
        return;
    };
    let direct = fresh_database().await;
    let (_, name) = direct.rsplit_once('/').unwrap();
    let (base, _) = pooler.rsplit_once('/').unwrap();
    let through = format!("{base}/{name}");
    let pooled = Db::connect(&db_settings(Pooler::Transaction, 8), &through)
        .await
        .unwrap();
    workload(&pooled, 8, 100).await.unwrap();
    let plain = Db::connect(&db_settings(Pooler::None, 8), &through)
        .await
        .unwrap();
    let err = workload(&plain, 8, 100)
        .await
        .expect_err("plain sqlx through a transaction pooler should trip over statements");
    assert!(
        err.to_string().contains("prepared statement"),
        "an error about prepared statements: {err}"
    );
}

async fn copy_row(from: &Db, to: &Db, table: &str, id: &str) {
    let row: Value = sqlx::query_scalar(&format!(
        "SELECT to_jsonb(t) FROM {table} t WHERE id = $1::uuid"
    ))
    .bind(id)
    .fetch_one(from)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {table} SELECT * FROM jsonb_populate_record(NULL::{table}, $1)"
    ))
    .bind(row)
    .execute(to)
    .await
    .unwrap();
}

async fn listed(app: &crate::helpers::TestApp, key: &str) -> Vec<String> {
    let r = app.get_as("/v1/payments", key).await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn metric(app: &crate::helpers::TestApp, name: &str) -> Option<f64> {
    app.metrics()
        .await
        .lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits (10 s at most) for the replica probe to say whether list reads use the replica.
async fn wait_replica_in_use(app: &crate::helpers::TestApp, in_use: bool) {
    let want = if in_use { 1.0 } else { 0.0 };
    let started = Instant::now();
    while metric(app, "pisgate_database_replica_in_use").await != Some(want) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "pisgate_database_replica_in_use never {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn list_reads_go_to_the_read_replica_and_a_just_made_write_is_read_from_the_primary() {
    // The "replica": another database holding what the primary had when it was copied.
    let replica_url = fresh_database().await;
    let app = spawn_app_with(&[
        ("PISGATE__DATABASE__READ_URL", &replica_url),
        ("PISGATE__DATABASE__READ_MAX_LAG", "5s"),
    ])
    .await;
    let m = app.create_merchant("Shop").await;
    let first = app.create_payment(&m.api_key, &body("FI")).await;
    let first = first["id"].as_str().unwrap().to_owned();
    let replica = Db::from(sqlx::PgPool::connect(&replica_url).await.unwrap());
    copy_row(&app.pool, &replica, "merchants", &m.id.to_string()).await;
    copy_row(&app.pool, &replica, "payments", &first).await;
    // Written after the copy: on the primary only.
    let second = app.create_payment(&m.api_key, &body("SE")).await;
    let second = second["id"].as_str().unwrap().to_owned();

    wait_replica_in_use(&app, true).await;
    assert_eq!(
        metric(&app, "pisgate_database_replica_lag_seconds").await,
        Some(0.0)
    );
    // The list comes from the replica: the payment made after the copy is not there yet.
    assert_eq!(listed(&app, &m.api_key).await, vec![first.clone()]);
    // The payment itself is read from the primary.
    let r = app
        .get_as(&format!("/v1/payments/{second}"), &m.api_key)
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_unreachable_read_replica_sends_list_reads_to_the_primary() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let replica_url = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
    let app = spawn_app_with(&[("PISGATE__DATABASE__READ_URL", &replica_url)]).await;
    let m = app.create_merchant("Shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    // The app started although the replica is down, and lists still answer, from the primary.
    wait_replica_in_use(&app, false).await;
    assert_eq!(
        listed(&app, &m.api_key).await,
        vec![p["id"].as_str().unwrap().to_owned()]
    );
}

#[tokio::test]
async fn a_replica_listens_on_every_channel_over_one_connection() {
    let app = spawn_app_with(&[
        ("PISGATE__POLLER__ENABLED", "true"),
        ("PISGATE__WEBHOOKS__ENABLED", "true"),
    ])
    .await;
    let database = app
        .pool
        .pool()
        .connect_options()
        .get_database()
        .map(str::to_owned);
    let direct = Db::from(
        sqlx::PgPool::connect(&crate::helpers::cluster_url())
            .await
            .unwrap(),
    );
    let started = Instant::now();
    loop {
        let listening: Vec<String> = sqlx::query_scalar(
            "SELECT query FROM pg_stat_activity
              WHERE datname = $1 AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_all(&direct)
        .await
        .unwrap();
        if listening.len() == 1 {
            for channel in ["pisgate_poll", "pisgate_webhooks", "pisgate_auth"] {
                assert!(listening[0].contains(channel), "{listening:?}");
            }
            break;
        }
        assert!(listening.len() <= 1, "one LISTEN connection: {listening:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never listening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
