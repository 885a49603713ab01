//! Several real `pisgate serve` processes against one database and one sandbox: the poller's
//! leases share the work with no leader, survive a SIGKILL, and are handed back on SIGTERM.

use crate::helpers::{browser_sign, fresh_database, spawn_sandbox};
use crate::payments::body;
use crate::serve::Serve;
use crate::workers::FINAL;
use pisgate::ledger::Db;
use pisgate::sandbox::{Fault, FaultRule, FaultTarget, Operation, Sandbox};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A replica: `serve` wired to the sandbox, with the given worker settings.
async fn replica(database_url: &str, sandbox_url: &str, extra: &[(&str, &str)]) -> Serve {
    let mut all = vec![
        ("PISGATE__DATABASE__MAX_CONNECTIONS", "10"),
        ("PISGATE__RATE_LIMIT__REQUESTS_PER_WINDOW", "100000"),
    ];
    all.extend_from_slice(extra);
    Serve::with_bank(database_url, sandbox_url, &all).await
}

fn poller(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut all = vec![
        ("PISGATE__POLLER__ENABLED", "true"),
        ("PISGATE__POLLER__SIGNING_INTERVAL", "1s"),
        ("PISGATE__POLLER__AUTHORIZED_INTERVAL", "1s"),
        ("PISGATE__POLLER__IDLE_WAIT", "1s"),
        ("PISGATE__POLLER__MAX_BACKOFF", "2s"),
    ];
    all.extend_from_slice(extra);
    all
}

async fn merchant(pool: &Db) -> String {
    let (_, key) =
        pisgate::ledger::merchants::create(pool, "Shop", &["https://shop.example".into()])
            .await
            .unwrap();
    secrecy::ExposeSecret::expose_secret(&key).to_owned()
}

async fn create(client: &reqwest::Client, base: &str, key: &str, body: &Value) -> Value {
    let r = client
        .post(format!("{base}/v1/payments"))
        .bearer_auth(key)
        .header("idempotency-key", Uuid::new_v4().to_string())
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v
}

async fn not_final(pool: &Db) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM payments WHERE status IN ('awaiting_authorization', 'authorized')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_all_final(pool: &Db, within: Duration, replicas: &[&Serve]) {
    let started = Instant::now();
    while not_final(pool).await > 0 {
        if started.elapsed() > within {
            let left: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT p.status, p.bank_status, s.poll_owner
                 FROM payments p LEFT JOIN payment_polls s ON s.payment_id = p.id
                 WHERE p.status IN ('awaiting_authorization', 'authorized') LIMIT 10",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            let tail: Vec<String> = replicas
                .iter()
                .map(|r| {
                    let l = r.logs();
                    l.lines().rev().take(20).collect::<Vec<_>>().join("\n")
                })
                .collect();
            panic!(
                "not final after {within:?}: {left:?}\n{}",
                tail.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No (payment, from, to) status change appears twice in the ledger.
async fn assert_no_double_transitions(pool: &Db) {
    let doubled: Vec<(Uuid, String, String, i64)> = sqlx::query_as(
        "SELECT payment_id, old_status, new_status, count(*) FROM payment_events
         WHERE old_status IS NOT NULL AND new_status IS NOT NULL AND old_status <> new_status
         GROUP BY 1, 2, 3 HAVING count(*) > 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(doubled.is_empty(), "recorded twice: {doubled:?}");
    let report = pisgate::ledger::events::verify_all(pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

fn status_polls_by_payment(
    sandbox: &Sandbox,
) -> HashMap<String, Vec<chrono::DateTime<chrono::Utc>>> {
    let mut by: HashMap<String, Vec<_>> = HashMap::new();
    for r in sandbox.requests() {
        if r.operation == Some(Operation::Status) {
            let id = r
                .path
                .trim_end_matches("/status")
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned();
            by.entry(id).or_default().push(r.received_at);
        }
    }
    by
}

#[tokio::test]
async fn three_replicas_poll_a_thousand_payments_to_final_states_once_each() {
    const N: usize = 1000;
    let (sandbox, sandbox_url) = spawn_sandbox(|c| {
        c.paid_delay = Duration::from_secs(1);
        // Keep every request: the schedule is checked against all of them.
        c.request_log_capacity = 200_000;
    })
    .await;
    let db = fresh_database().await;
    let pool = Db::from(sqlx::PgPool::connect(&db).await.unwrap());
    let key = merchant(&pool).await;
    let settings = poller(&[
        ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "20"),
        ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "20"),
        ("PISGATE__POLLER__LEASE", "15s"),
        ("PISGATE__POLLER__RATE_PER_SEC", "400"),
        ("PISGATE__POLLER__CONCURRENCY", "32"),
    ]);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&db, &sandbox_url, &settings).await);
    }
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();

    // Merchants and shoppers spread over the replicas: a quarter never sign, a quarter
    // refuse, half approve. Nobody comes back to the callback: only the pollers learn.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let slots = Arc::new(tokio::sync::Semaphore::new(12));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let (client, key, base, slots) = (
            client.clone(),
            key.clone(),
            bases[i % 3].clone(),
            slots.clone(),
        );
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.unwrap();
            let country = ["FI", "SE", "DK", "NO"][i % 4];
            let p = create(&client, &base, &key, &body(country)).await;
            let url = p["authorization_url"].as_str().unwrap();
            let want = match i % 4 {
                0 => "expired",
                1 => {
                    browser_sign(&client, url, &format!("psu-{i}"), false).await;
                    "authorization_failed"
                }
                _ => {
                    browser_sign(&client, url, &format!("psu-{i}"), true).await;
                    "paid"
                }
            };
            (p["id"].as_str().unwrap().to_owned(), want)
        });
    }
    let mut want: HashMap<Uuid, &str> = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        let (id, w) = r.unwrap();
        want.insert(id.parse().unwrap(), w);
    }
    let created_all = Instant::now();
    wait_all_final(
        &pool,
        Duration::from_secs(240),
        &replicas.iter().collect::<Vec<_>>(),
    )
    .await;
    eprintln!(
        "all {N} final {:?} after the last creation",
        created_all.elapsed()
    );

    let got: Vec<(Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT id, status, bank_payment_id FROM payments")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(got.len(), N);
    for (id, status, _) in &got {
        assert_eq!(want[id], status, "payment {id}");
        assert!(FINAL.contains(&status.as_str()));
    }
    assert_no_double_transitions(&pool).await;

    // The schedule allows one poll per interval (1 s, stretched, never shortened), plus the
    // first one at initiation and one right at the signing deadline.
    let polls = status_polls_by_payment(&sandbox);
    let counted = sandbox.counters()[&Operation::Status].received as usize;
    let mut total = 0;
    for (_, _, bank_id) in &got {
        let times = &polls[bank_id.as_ref().unwrap()];
        total += times.len();
        let span = (*times.last().unwrap() - times[0]).num_milliseconds();
        let allowed = (span / 1000) as usize + 2;
        assert!(
            times.len() <= allowed,
            "{} polls in {span} ms for {bank_id:?}",
            times.len()
        );
        for pair in times.windows(2) {
            assert!(pair[1] > pair[0], "two polls at once for {bank_id:?}");
        }
    }
    assert_eq!(total, counted, "the request log kept every status poll");
    eprintln!("{total} status polls for {N} payments");

    for r in replicas {
        let (exit, out, err, took) = r.stop().await;
        assert!(exit.success(), "exit after SIGTERM: {out}{err}");
        assert!(took < Duration::from_secs(15), "{took:?}");
    }
}

#[tokio::test]
async fn a_replica_killed_while_holding_leases_has_its_payments_finished_by_another() {
    let (sandbox, sandbox_url) = spawn_sandbox(|c| c.paid_delay = Duration::from_millis(500)).await;
    let db = fresh_database().await;
    let pool = Db::from(sqlx::PgPool::connect(&db).await.unwrap());
    let key = merchant(&pool).await;
    let settings = poller(&[
        ("PISGATE__POLLER__SIGNING_INTERVAL", "300ms"),
        ("PISGATE__POLLER__AUTHORIZED_INTERVAL", "300ms"),
        // Longer than creating the payments takes, so A never re-claims its own.
        ("PISGATE__POLLER__LEASE", "12s"),
        ("PISGATE__NORDEA__REQUEST_TIMEOUT_SECS", "30"),
    ]);
    let mut a = replica(&db, &sandbox_url, &settings).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The bank hangs on status: A's polls stay in flight and it keeps its leases.
    sandbox.add_fault(FaultRule::always(
        FaultTarget::Status,
        Fault::Latency { ms: 20_000 },
    ));
    for i in 0..10 {
        let p = create(&client, &a.base, &key, &body("FI")).await;
        browser_sign(
            &client,
            p["authorization_url"].as_str().unwrap(),
            &format!("psu-{i}"),
            true,
        )
        .await;
    }
    let started = Instant::now();
    let held = loop {
        let held: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT payment_id, next_poll_at FROM payment_polls WHERE poll_owner IS NOT NULL",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        if held.len() == 10 {
            break held;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "A never held all leases"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lease_end = held.iter().map(|(_, t)| *t).min().unwrap();
    a.kill9();
    let killed_at = chrono::Utc::now();
    sandbox.clear_faults();

    let b = replica(&db, &sandbox_url, &settings).await;
    wait_all_final(&pool, Duration::from_secs(60), &[&b]).await;
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM payments")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(statuses.iter().all(|s| s == "paid"), "{statuses:?}");
    assert_no_double_transitions(&pool).await;
    // B waited for the dead replica's leases to run out before touching its payments. (A
    // request A wrote just before dying may still be read by the sandbox a moment after the
    // kill: allow for that.)
    let settled = killed_at + chrono::Duration::milliseconds(500);
    let first_after_kill = sandbox
        .requests()
        .iter()
        .filter(|r| r.operation == Some(Operation::Status) && r.received_at > settled)
        .map(|r| r.received_at)
        .min()
        .unwrap();
    assert!(
        first_after_kill >= lease_end - chrono::Duration::milliseconds(50),
        "polled at {first_after_kill} before the lease ended at {lease_end}"
    );
}

#[tokio::test]
async fn sigterm_stops_within_a_bound_and_hands_leases_back() {
    let (sandbox, sandbox_url) = spawn_sandbox(|_| {}).await;
    let db = fresh_database().await;
    let pool = Db::from(sqlx::PgPool::connect(&db).await.unwrap());
    let key = merchant(&pool).await;
    let settings = poller(&[
        ("PISGATE__POLLER__LEASE", "5m"),
        ("PISGATE__NORDEA__REQUEST_TIMEOUT_SECS", "3"),
        ("PISGATE__NORDEA__READ_ATTEMPTS", "1"),
    ]);
    let r = replica(&db, &sandbox_url, &settings).await;
    sandbox.add_fault(FaultRule::always(
        FaultTarget::Status,
        Fault::Latency { ms: 60_000 },
    ));
    let client = reqwest::Client::new();
    for _ in 0..5 {
        create(&client, &r.base, &key, &body("FI")).await;
    }
    let started = Instant::now();
    loop {
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM payment_polls WHERE poll_owner IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        if held == 5 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "leases never taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (exit, out, err, took) = r.stop().await;
    let logs = format!("{out}{err}");
    assert!(exit.success(), "{logs}");
    // In-flight polls get one bank timeout (3 s here), then the leases go back.
    assert!(took < Duration::from_secs(8), "stopping took {took:?}");
    let (owned, due_later): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE poll_owner IS NOT NULL),
                count(*) FILTER (WHERE next_poll_at > now() + interval '1 minute')
         FROM payment_polls",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((owned, due_later), (0, 0), "leases handed back: {logs}");
    assert!(logs.contains("leases handed back"), "{logs}");
}
