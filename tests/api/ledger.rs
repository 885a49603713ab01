//! The payment ledger and the shopper token store against the real PostgreSQL.

use crate::helpers::fresh_database;
use chrono::{Duration as ChronoDuration, Utc};
use pisgate::domain::PaymentStatus;
use pisgate::ledger::crypto::TokenCipher;
use pisgate::ledger::events::{self, BreakReason, NewEvent};
use pisgate::ledger::{merchants, tokens};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn ledger_db() -> PgPool {
    PgPoolOptions::new()
        .max_connections(20)
        .connect(&fresh_database().await)
        .await
        .expect("connect to the test database")
}

async fn insert_payment(pool: &PgPool) -> Uuid {
    let (merchant, _) = merchants::create(pool, "Ledger shop", &["https://shop.example".into()])
        .await
        .unwrap();
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO payments (id, merchant_id, status, amount_minor, currency, country, request, return_url)
         VALUES ($1, $2, 'awaiting_authorization', 1250, 'EUR', 'FI', '{}', 'https://shop.example/done')",
    )
    .bind(id)
    .bind(merchant.id)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn append(pool: &PgPool, payment_id: Uuid, event: NewEvent) -> events::StoredEvent {
    let mut tx = pool.begin().await.unwrap();
    let stored = events::append(&mut tx, payment_id, event).await.unwrap();
    tx.commit().await.unwrap();
    stored
}

/// created → initiated → callback, the way a payment's first steps look.
async fn payment_with_three_events(pool: &PgPool) -> Uuid {
    let id = insert_payment(pool).await;
    append(
        pool,
        id,
        NewEvent {
            new_status: Some(PaymentStatus::AwaitingAuthorization),
            detail: json!({"amount_minor": 1250, "currency": "EUR"}),
            ..NewEvent::new("created")
        },
    )
    .await;
    append(
        pool,
        id,
        NewEvent {
            bank_status: Some("PendingUserApproval".into()),
            detail: json!({"bank_payment_id": "bp-1"}),
            ..NewEvent::new("initiated")
        },
    )
    .await;
    append(
        pool,
        id,
        NewEvent {
            old_status: Some(PaymentStatus::AwaitingAuthorization),
            new_status: Some(PaymentStatus::Authorized),
            bank_status: Some("Confirmed".into()),
            detail: json!({"via": "callback"}),
            ..NewEvent::new("status_changed")
        },
    )
    .await;
    id
}

async fn set_append_only_trigger(pool: &PgPool, enabled: bool) {
    let verb = if enabled { "ENABLE" } else { "DISABLE" };
    sqlx::query(&format!(
        "ALTER TABLE payment_events {verb} TRIGGER payment_events_append_only"
    ))
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn ledger_appended_events_chain_and_verify() {
    let pool = ledger_db().await;
    let id = payment_with_three_events(&pool).await;
    let other = payment_with_three_events(&pool).await;

    let listed = events::list(&pool, id).await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(listed[0].prev_hash, None);
    assert_eq!(listed[1].prev_hash.as_deref(), Some(&listed[0].hash[..]));
    assert_eq!(listed[2].prev_hash.as_deref(), Some(&listed[1].hash[..]));
    assert_eq!(
        listed[2].old_status,
        Some(PaymentStatus::AwaitingAuthorization)
    );
    assert_eq!(listed[2].new_status, Some(PaymentStatus::Authorized));
    assert_eq!(
        listed[1].bank_status.as_deref(),
        Some("PendingUserApproval")
    );
    assert_eq!(
        listed[0].detail,
        json!({"amount_minor": 1250, "currency": "EUR"})
    );

    let api = serde_json::to_value(&listed[0]).unwrap();
    assert_eq!(api["kind"], "created");
    assert_eq!(api["hash"], hex::encode(&listed[0].hash));
    assert_eq!(api["hash"].as_str().unwrap().len(), 64);

    let report = events::verify_all(&pool).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.payments_checked, report.events_checked), (2, 6));
    let one = events::verify_payment(&pool, other).await.unwrap();
    assert!(one.is_ok());
    assert_eq!((one.payments_checked, one.events_checked), (1, 3));
}

#[tokio::test]
async fn ledger_append_returns_what_is_stored() {
    let pool = ledger_db().await;
    let id = insert_payment(&pool).await;
    let returned = append(
        &pool,
        id,
        NewEvent {
            detail: json!({"b": 1e18, "a": [1.5, -0.0]}),
            ..NewEvent::new("callback")
        },
    )
    .await;
    let listed = events::list(&pool, id).await.unwrap();
    assert_eq!(listed, vec![returned]);
}

#[tokio::test]
async fn ledger_append_to_an_unknown_payment_is_row_not_found() {
    let pool = ledger_db().await;
    let mut conn = pool.acquire().await.unwrap();
    let err = events::append(&mut conn, Uuid::now_v7(), NewEvent::new("created"))
        .await
        .unwrap_err();
    assert!(matches!(err, sqlx::Error::RowNotFound), "{err}");
}

#[tokio::test]
async fn ledger_events_cannot_be_updated_deleted_or_truncated() {
    let pool = ledger_db().await;
    let id = payment_with_three_events(&pool).await;
    for sql in [
        "UPDATE payment_events SET detail = '{\"forged\": true}' WHERE payment_id = $1 AND seq = 2",
        "DELETE FROM payment_events WHERE payment_id = $1 AND seq = 3",
    ] {
        let err = sqlx::query(sql).bind(id).execute(&pool).await.unwrap_err();
        let db = err.as_database_error().expect("a database error");
        assert_eq!(db.code().as_deref(), Some("42501"), "{sql}: {db}");
        assert!(db.message().contains("append-only"), "{db}");
    }
    let err = sqlx::query("TRUNCATE payment_events CASCADE")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_eq!(events::list(&pool, id).await.unwrap().len(), 3);
    assert!(events::verify_all(&pool).await.unwrap().is_ok());
}

#[tokio::test]
async fn ledger_verify_names_the_edited_event() {
    let pool = ledger_db().await;
    let before = payment_with_three_events(&pool).await;
    let edited = payment_with_three_events(&pool).await;
    let after = payment_with_three_events(&pool).await;

    set_append_only_trigger(&pool, false).await;
    sqlx::query(
        "UPDATE payment_events SET detail = '{\"bank_payment_id\": \"bp-forged\"}'
         WHERE payment_id = $1 AND seq = 2",
    )
    .bind(edited)
    .execute(&pool)
    .await
    .unwrap();
    set_append_only_trigger(&pool, true).await;

    let report = events::verify_all(&pool).await.unwrap();
    let broken = report.first_broken.clone().expect("the edit is detected");
    assert_eq!(broken.payment_id, edited);
    assert_eq!(broken.seq, 2);
    assert_eq!(broken.reason, BreakReason::HashMismatch);
    assert_eq!(report.broken_payments, 1);
    assert_eq!((report.payments_checked, report.events_checked), (3, 9));
    assert!(broken.to_string().contains(&edited.to_string()), "{broken}");

    for fine in [before, after] {
        assert!(events::verify_payment(&pool, fine).await.unwrap().is_ok());
    }
    let one = events::verify_payment(&pool, edited).await.unwrap();
    assert_eq!(one.first_broken, Some(broken));
}

#[tokio::test]
async fn ledger_verify_reports_a_deleted_middle_event_as_a_gap() {
    let pool = ledger_db().await;
    let id = payment_with_three_events(&pool).await;
    set_append_only_trigger(&pool, false).await;
    sqlx::query("DELETE FROM payment_events WHERE payment_id = $1 AND seq = 2")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    set_append_only_trigger(&pool, true).await;

    let report = events::verify_all(&pool).await.unwrap();
    let broken = report.first_broken.expect("the deletion is detected");
    assert_eq!((broken.payment_id, broken.seq), (id, 3));
    assert_eq!(broken.reason, BreakReason::Gap { expected_seq: 2 });
}

#[tokio::test]
async fn ledger_verify_detects_a_relinked_or_restatused_event() {
    let pool = ledger_db().await;
    let id = payment_with_three_events(&pool).await;
    set_append_only_trigger(&pool, false).await;
    sqlx::query("UPDATE payment_events SET new_status = 'paid' WHERE payment_id = $1 AND seq = 3")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let report = events::verify_payment(&pool, id).await.unwrap();
    assert_eq!(
        report.first_broken.map(|b| (b.seq, b.reason)),
        Some((3, BreakReason::HashMismatch))
    );
    sqlx::query(
        "UPDATE payment_events SET prev_hash = '\\x00'::bytea || substring(prev_hash from 2)
         WHERE payment_id = $1 AND seq = 2",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let report = events::verify_payment(&pool, id).await.unwrap();
    assert_eq!(
        report.first_broken.map(|b| (b.seq, b.reason)),
        Some((2, BreakReason::PrevHashMismatch))
    );
}

#[tokio::test]
async fn ledger_concurrent_appends_to_one_payment_get_consecutive_seqs() {
    let pool = ledger_db().await;
    let id = insert_payment(&pool).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut tx = pool.begin().await.unwrap();
                let e = events::append(
                    &mut tx,
                    id,
                    NewEvent {
                        detail: json!({"task": i}),
                        ..NewEvent::new("callback")
                    },
                )
                .await
                .unwrap();
                // Hold the payment lock a little so the others really queue up behind it.
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.commit().await.unwrap();
                e.seq
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    let listed = events::list(&pool, id).await.unwrap();
    let mut tasks_seen: Vec<i64> = listed
        .iter()
        .map(|e| e.detail["task"].as_i64().unwrap())
        .collect();
    tasks_seen.sort_unstable();
    assert_eq!(tasks_seen, (0..10).collect::<Vec<_>>());
    let report = events::verify_all(&pool).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.events_checked, 10);
}

#[tokio::test]
async fn ledger_jsonb_key_reordering_does_not_break_verification() {
    let pool = ledger_db().await;
    let id = insert_payment(&pool).await;
    // Keys out of order at every level, keys jsonb sorts differently (by length first),
    // nested arrays and objects, unicode, escapes and numbers in several forms.
    let text = r#"{
        "zeta": {"yy": [3, 2, {"b": null, "a": false}], "x": "Zürich ✓ 😀"},
        "alpha": "quote \" backslash \\ newline \n tab \t nul-free",
        "longer_key": 1, "k": 2, "é": "non-ascii key", "Z": "upper",
        "amounts": [0, -1, 1250, 9223372036854775807, 18446744073709551615, -9223372036854775808],
        "floats": [1.5, 0.1, -2.50, 1e-7, 1e18, 1E+20, 5.0, -0.0, 123456.789],
        "empty": {"obj": {}, "arr": []}
    }"#;
    let detail: serde_json::Value = serde_json::from_str(text).unwrap();
    append(
        &pool,
        id,
        NewEvent {
            detail: detail.clone(),
            ..NewEvent::new("callback")
        },
    )
    .await;
    append(&pool, id, NewEvent::new("status_changed")).await;

    // jsonb really did reorder the keys (shorter keys first), so order-sensitive hashing
    // would have failed.
    let stored_text: String = sqlx::query_scalar(
        "SELECT detail::text FROM payment_events WHERE payment_id = $1 AND seq = 1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        stored_text.find("\"k\"").unwrap() < stored_text.find("\"zeta\"").unwrap(),
        "{stored_text}"
    );
    let report = events::verify_all(&pool).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.events_checked, 2);
    let listed = events::list(&pool, id).await.unwrap();
    assert_eq!(listed[0].detail["zeta"]["x"], "Zürich ✓ 😀");
    assert_eq!(
        listed[0].detail["amounts"][4],
        json!(18446744073709551615u64)
    );
}

// ---- shopper tokens -------------------------------------------------------------------

fn cipher() -> TokenCipher {
    TokenCipher::from_base64("test-1", &TokenCipher::generate_key_base64()).unwrap()
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

async fn store(
    pool: &PgPool,
    cipher: &TokenCipher,
    psu_key: &str,
    issue_seq: i64,
    access: &str,
    expires_in: ChronoDuration,
) -> bool {
    let mut conn = pool.acquire().await.unwrap();
    tokens::store(
        &mut conn,
        cipher,
        "nordea",
        psu_key,
        issue_seq,
        None,
        &secret(access),
        Some(&secret(&format!("refresh-of-{access}"))),
        Utc::now() + expires_in,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn ledger_tokens_round_trip_and_are_encrypted_at_rest() {
    let pool = ledger_db().await;
    let cipher = cipher();
    let lock = lease(&pool, "nordea", "shopper-1", Duration::from_secs(1))
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let seq = tokens::next_issue_seq(&mut conn).await.unwrap();
    let expires = Utc::now() + ChronoDuration::minutes(30);
    let stored = tokens::store(
        &mut conn,
        &cipher,
        "nordea",
        "shopper-1",
        seq,
        None,
        &secret("access-token-plaintext-AAA"),
        Some(&secret("refresh-token-plaintext-BBB")),
        expires,
    )
    .await
    .unwrap();
    lock.release().await;
    assert!(stored);

    let live = tokens::load(&pool, &cipher, "nordea", "shopper-1")
        .await
        .unwrap()
        .expect("a live token");
    assert_eq!(live.issue_seq, seq);
    assert_eq!(
        live.access_token.expose_secret(),
        "access-token-plaintext-AAA"
    );
    assert_eq!(
        live.refresh_token.as_ref().unwrap().expose_secret(),
        "refresh-token-plaintext-BBB"
    );
    assert_eq!(
        live.access_expires_at.timestamp_micros(),
        expires.timestamp_micros()
    );
    assert!(!format!("{live:?}").contains("plaintext"));

    let (key_id, access, refresh): (String, Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT key_id, access_token, refresh_token FROM psu_tokens WHERE psu_key = 'shopper-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(key_id, "test-1");
    for (column, plaintext) in [
        (&access, &b"access-token-plaintext-AAA"[..]),
        (&refresh, &b"refresh-token-plaintext-BBB"[..]),
    ] {
        assert!(!column.windows(plaintext.len()).any(|w| w == plaintext));
        assert!(!column.windows(9).any(|w| w == b"plaintext"));
    }
    assert!(
        tokens::load(&pool, &cipher, "nordea", "someone-else")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn ledger_tokens_copied_to_another_shopper_do_not_decrypt() {
    let pool = ledger_db().await;
    let cipher = cipher();
    assert!(
        store(
            &pool,
            &cipher,
            "victim",
            1,
            "victims-token",
            ChronoDuration::hours(1)
        )
        .await
    );
    assert!(
        store(
            &pool,
            &cipher,
            "attacker",
            2,
            "own-token",
            ChronoDuration::hours(1)
        )
        .await
    );
    sqlx::query(
        "UPDATE psu_tokens SET access_token = v.access_token, refresh_token = v.refresh_token,
                issue_seq = v.issue_seq
         FROM psu_tokens v WHERE v.psu_key = 'victim' AND psu_tokens.psu_key = 'attacker'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let err = tokens::load(&pool, &cipher, "nordea", "attacker")
        .await
        .unwrap_err();
    assert!(matches!(err, tokens::TokenError::Crypto(_)), "{err}");
}

#[tokio::test]
async fn ledger_an_older_token_never_overwrites_a_newer_one() {
    let pool = ledger_db().await;
    let cipher = cipher();
    assert!(
        store(
            &pool,
            &cipher,
            "shopper",
            20,
            "newer",
            ChronoDuration::hours(1)
        )
        .await
    );
    assert!(
        !store(
            &pool,
            &cipher,
            "shopper",
            10,
            "older",
            ChronoDuration::hours(1)
        )
        .await
    );
    assert!(
        !store(
            &pool,
            &cipher,
            "shopper",
            20,
            "same-seq",
            ChronoDuration::hours(1)
        )
        .await
    );
    let live = tokens::load(&pool, &cipher, "nordea", "shopper")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.issue_seq, 20);
    assert_eq!(live.access_token.expose_secret(), "newer");
    assert!(
        store(
            &pool,
            &cipher,
            "shopper",
            30,
            "newest",
            ChronoDuration::hours(1)
        )
        .await
    );
    let live = tokens::load(&pool, &cipher, "nordea", "shopper")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.access_token.expose_secret(), "newest");
}

#[tokio::test]
async fn ledger_mark_dead_with_a_stale_seq_does_nothing() {
    let pool = ledger_db().await;
    let cipher = cipher();
    assert!(
        store(
            &pool,
            &cipher,
            "shopper",
            5,
            "first",
            ChronoDuration::hours(1)
        )
        .await
    );
    assert!(
        store(
            &pool,
            &cipher,
            "shopper",
            6,
            "second",
            ChronoDuration::hours(1)
        )
        .await
    );
    assert!(
        !tokens::mark_dead(&pool, "nordea", "shopper", 5, "401 on funds")
            .await
            .unwrap()
    );
    let live = tokens::load(&pool, &cipher, "nordea", "shopper")
        .await
        .unwrap()
        .expect("the newer token is still live");
    assert_eq!(live.access_token.expose_secret(), "second");

    assert!(
        tokens::mark_dead(&pool, "nordea", "shopper", 6, "401 on funds")
            .await
            .unwrap()
    );
    assert!(
        tokens::load(&pool, &cipher, "nordea", "shopper")
            .await
            .unwrap()
            .is_none()
    );
    let (status, reason, refresh): (String, Option<String>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT status, dead_reason, refresh_token FROM psu_tokens WHERE psu_key = 'shopper'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), reason.as_deref(), refresh),
        ("dead", Some("401 on funds"), None)
    );
    // A new exchange brings the shopper back to life.
    assert!(
        store(
            &pool,
            &cipher,
            "shopper",
            7,
            "third",
            ChronoDuration::hours(1)
        )
        .await
    );
    assert!(
        tokens::load(&pool, &cipher, "nordea", "shopper")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn ledger_due_for_refresh_lists_live_tokens_expiring_soon() {
    let pool = ledger_db().await;
    let cipher = cipher();
    store(&pool, &cipher, "soon", 1, "a", ChronoDuration::seconds(30)).await;
    store(
        &pool,
        &cipher,
        "expired",
        2,
        "b",
        ChronoDuration::seconds(-30),
    )
    .await;
    store(&pool, &cipher, "later", 3, "c", ChronoDuration::hours(2)).await;
    store(&pool, &cipher, "dead", 4, "d", ChronoDuration::seconds(10)).await;
    tokens::mark_dead(&pool, "nordea", "dead", 4, "revoked")
        .await
        .unwrap();
    let due = tokens::due_for_refresh(&pool, Duration::from_secs(120), 10, false)
        .await
        .unwrap();
    let keys: Vec<&str> = due.iter().map(|d| d.psu_key.as_str()).collect();
    assert_eq!(keys, vec!["expired", "soon"]);
    let limited = tokens::due_for_refresh(&pool, Duration::from_secs(120), 1, false)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
}

async fn lease(pool: &PgPool, bank: &str, psu: &str, wait: Duration) -> Option<tokens::PsuLease> {
    tokens::lease_psu(pool, bank, psu, Duration::from_secs(60), wait)
        .await
        .unwrap()
}

#[tokio::test]
async fn ledger_psu_leases_on_one_shopper_are_serialised() {
    let pool = ledger_db().await;
    let first = lease(&pool, "nordea", "shopper", Duration::ZERO)
        .await
        .unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let lock = lease(&pool, "nordea", "shopper", Duration::from_secs(10))
                .await
                .expect("taken once the first is released");
            let acquired = Instant::now();
            lock.release().await;
            acquired
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the second lease waits for the first"
    );

    let released_at = Instant::now();
    first.release().await;
    let acquired = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the second lease is taken once the first is released")
        .unwrap();
    assert!(acquired >= released_at);
}

#[tokio::test]
async fn ledger_psu_leases_on_different_shoppers_do_not_block_each_other() {
    let pool = ledger_db().await;
    let a = lease(&pool, "nordea", "shopper-a", Duration::ZERO).await;
    let b = lease(&pool, "nordea", "shopper-b", Duration::ZERO).await;
    let other_bank = lease(&pool, "otherbank", "shopper-a", Duration::ZERO).await;
    assert!(a.is_some() && b.is_some() && other_bank.is_some());
    let busy = lease(&pool, "nordea", "shopper-a", Duration::from_millis(200)).await;
    assert!(busy.is_none(), "a held lease is not given twice");
    for l in [a, b, other_bank].into_iter().flatten() {
        l.release().await;
    }
}

#[tokio::test]
async fn ledger_a_psu_lease_holds_no_database_connection() {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&fresh_database().await)
        .await
        .unwrap();
    let held = lease(&pool, "nordea", "shopper", Duration::ZERO)
        .await
        .unwrap();
    // With one connection in the pool, this would time out if the lease kept it.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
    held.release().await;
}

#[tokio::test]
async fn ledger_a_dropped_or_abandoned_psu_lease_does_not_leave_the_shopper_locked() {
    let pool = ledger_db().await;
    let dropped = lease(&pool, "nordea", "shopper", Duration::ZERO)
        .await
        .unwrap();
    drop(dropped);
    let again = lease(&pool, "nordea", "shopper", Duration::from_secs(10))
        .await
        .expect("a dropped lease is given back");
    again.release().await;

    // A holder that died without giving anything back: its lease simply runs out.
    let short = tokens::lease_psu(
        &pool,
        "nordea",
        "gone",
        Duration::from_millis(300),
        Duration::ZERO,
    )
    .await
    .unwrap()
    .unwrap();
    std::mem::forget(short);
    let started = Instant::now();
    let next = lease(&pool, "nordea", "gone", Duration::from_secs(10))
        .await
        .expect("the abandoned lease runs out");
    assert!(started.elapsed() >= Duration::from_millis(100));
    next.release().await;
}
