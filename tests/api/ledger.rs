//! The payment ledger and the shopper token store against the real PostgreSQL.

use crate::helpers::{fresh_database, install_ledger_key};
use crate::tamper::{self, Tamper, append, insert_payment, paid_payment};
use chrono::{Duration as ChronoDuration, Utc};
use pisgate::domain::PaymentStatus;
use pisgate::ledger::Db;
use pisgate::ledger::checkpoints::{self, CheckpointError, CheckpointProblem};
use pisgate::ledger::crypto::TokenCipher;
use pisgate::ledger::events::{self, BreakReason, NewEvent};
use pisgate::ledger::keys::{self, LedgerKeys};
use pisgate::ledger::tokens;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A fresh database; this process appends under the test ledger key.
async fn ledger_db() -> Db {
    install_ledger_key();
    Db::from(
        PgPoolOptions::new()
            .max_connections(20)
            .connect(&fresh_database().await)
            .await
            .expect("connect to the test database"),
    )
}

/// created → initiated → callback, the way a payment's first steps look.
async fn payment_with_three_events(pool: &Db) -> Uuid {
    crate::tamper::authorized_payment(pool).await
}

fn keys() -> LedgerKeys {
    crate::helpers::ledger_keys()
}

async fn set_append_only_trigger(pool: &Db, enabled: bool) {
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

    let report = events::verify_all(&pool, &keys()).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.payments_checked, report.events_checked), (2, 6));
    let one = events::verify_payment(&pool, &keys(), other).await.unwrap();
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
            ..NewEvent::new("created")
        },
    )
    .await;
    let listed = events::list(&pool, id).await.unwrap();
    assert_eq!(listed, vec![returned]);
}

#[tokio::test]
async fn ledger_append_to_an_unknown_payment_is_row_not_found() {
    let pool = ledger_db().await;
    let mut conn = pool.pool().acquire().await.unwrap();
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
    assert!(events::verify_all(&pool, &keys()).await.unwrap().is_ok());
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

    let report = events::verify_all(&pool, &keys()).await.unwrap();
    let broken = report.first_broken.clone().expect("the edit is detected");
    assert_eq!(broken.payment_id, edited);
    assert_eq!(broken.seq, 2);
    assert_eq!(broken.reason, BreakReason::HashMismatch);
    assert_eq!(report.broken_payments, 1);
    assert_eq!((report.payments_checked, report.events_checked), (3, 9));
    assert!(broken.to_string().contains(&edited.to_string()), "{broken}");

    for fine in [before, after] {
        assert!(
            events::verify_payment(&pool, &keys(), fine)
                .await
                .unwrap()
                .is_ok()
        );
    }
    let one = events::verify_payment(&pool, &keys(), edited)
        .await
        .unwrap();
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

    let report = events::verify_all(&pool, &keys()).await.unwrap();
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
    let report = events::verify_payment(&pool, &keys(), id).await.unwrap();
    assert_eq!(
        report.first_broken.map(|b| (b.seq, b.reason)),
        Some((3, BreakReason::HashMismatch))
    );
    sqlx::query(
        // Flips every bit of the first byte: always a change, whatever the byte was.
        "UPDATE payment_events SET prev_hash = set_byte(prev_hash, 0, get_byte(prev_hash, 0) # 255)
         WHERE payment_id = $1 AND seq = 2",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let report = events::verify_payment(&pool, &keys(), id).await.unwrap();
    assert_eq!(
        report.first_broken.map(|b| (b.seq, b.reason)),
        Some((2, BreakReason::PrevHashMismatch))
    );
}

#[tokio::test]
async fn ledger_concurrent_appends_to_one_payment_get_consecutive_seqs() {
    let pool = ledger_db().await;
    let id = insert_payment(&pool).await;
    // Every chain starts with its payment's `created` event.
    append(&pool, id, NewEvent::new("created")).await;
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
    assert_eq!(seqs, (2..=11).collect::<Vec<_>>());
    let listed = events::list(&pool, id).await.unwrap();
    let mut tasks_seen: Vec<i64> = listed[1..]
        .iter()
        .map(|e| e.detail["task"].as_i64().unwrap())
        .collect();
    tasks_seen.sort_unstable();
    assert_eq!(tasks_seen, (0..10).collect::<Vec<_>>());
    let report = events::verify_all(&pool, &keys()).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.events_checked, 11);
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
            ..NewEvent::new("created")
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
    let report = events::verify_all(&pool, &keys()).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.events_checked, 2);
    let listed = events::list(&pool, id).await.unwrap();
    assert_eq!(listed[0].detail["zeta"]["x"], "Zürich ✓ 😀");
    assert_eq!(
        listed[0].detail["amounts"][4],
        json!(18446744073709551615u64)
    );
}

// ---- heads, keys and checkpoints ---------------------------------------------------------

#[tokio::test]
async fn ledger_append_signs_with_the_installed_key_and_moves_the_head() {
    let pool = ledger_db().await;
    let id = paid_payment(&pool).await;
    let (seq, head, status): (i32, Vec<u8>, String) =
        sqlx::query_as("SELECT ledger_seq, ledger_head, status FROM payments WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let listed = events::list(&pool, id).await.unwrap();
    assert_eq!((seq, status.as_str()), (5, "paid"));
    assert_eq!(head, listed[4].hash);
    let versions: Vec<(i16, Option<String>)> = sqlx::query_as(
        "SELECT hash_version, key_id FROM payment_events WHERE payment_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        versions.iter().all(|v| *v == (2, Some("l1".into()))),
        "{versions:?}"
    );
    // Without the key nobody can make these hashes.
    assert_ne!(
        tamper::unkeyed_hash(listed[3].prev_hash.as_deref(), &listed[4]),
        listed[4].hash
    );
    let report = events::verify_all(&pool, &keys()).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.payments_checked, report.events_checked), (1, 5));
}

#[tokio::test]
async fn ledger_an_untouched_ledger_with_a_checkpoint_verifies() {
    let pool = ledger_db().await;
    let first = paid_payment(&pool).await;
    let cp = checkpoints::create(&pool, &keys()).await.unwrap();
    assert_eq!((cp.id, cp.payments, cp.events, cp.v1_events), (1, 1, 5, 0));
    // Life goes on after the checkpoint: new payments, new events on old ones.
    paid_payment(&pool).await;
    append(&pool, first, NewEvent::new("callback")).await;
    let report = events::verify_all(&pool, &keys()).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checkpoint, Some(1));
    assert_eq!((report.payments_checked, report.events_checked), (2, 11));

    // The second checkpoint records only the heads that moved.
    let cp = checkpoints::create(&pool, &keys()).await.unwrap();
    assert_eq!((cp.id, cp.payments, cp.events), (2, 2, 11));
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_checkpoint_heads WHERE checkpoint_id = 2")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, 2);
    let report = events::verify_all(&pool, &keys()).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checkpoint, Some(2));
}

/// Every tamper of issue 11, each on a fresh ledger of two paid payments with a checkpoint.
#[tokio::test]
async fn ledger_verify_catches_every_tamper_and_names_it() {
    for t in tamper::ALL {
        let pool = ledger_db().await;
        let victim = paid_payment(&pool).await;
        let bystander = paid_payment(&pool).await;
        checkpoints::create(&pool, &keys()).await.unwrap();
        assert!(events::verify_all(&pool, &keys()).await.unwrap().is_ok());

        tamper::tamper(&pool, victim, t).await;
        let report = events::verify_all(&pool, &keys()).await.unwrap();
        assert!(!report.is_ok(), "{t:?} went unnoticed: {report:?}");
        let first = report.first_broken.clone().expect("a named problem");
        let expected = match t {
            Tamper::Edit => (2, BreakReason::HashMismatch),
            Tamper::DeleteLast => (
                5,
                BreakReason::HeadMismatch {
                    head_seq: 5,
                    last_seq: 4,
                },
            ),
            Tamper::DeleteAll => (5, BreakReason::EventsMissing { head_seq: 5 }),
            Tamper::DeletePayment | Tamper::Truncate => {
                (5, BreakReason::GoneSinceCheckpoint { checkpoint: 1 })
            }
            Tamper::UnkeyedRewrite => (4, BreakReason::HashMismatch),
            Tamper::UnkeyedDowngrade => (4, BreakReason::Downgraded),
            Tamper::RewriteAfterCheckpoint => {
                (5, BreakReason::CheckpointMismatch { checkpoint: 1 })
            }
        };
        let named = if t == Tamper::Truncate {
            victim.min(bystander)
        } else {
            victim
        };
        assert_eq!(
            (first.payment_id, first.seq, first.reason),
            (named, expected.0, expected.1),
            "{t:?}"
        );
        let broken = if t == Tamper::Truncate { 2 } else { 1 };
        assert_eq!(report.broken_payments, broken, "{t:?}: {report:?}");
    }
}

#[tokio::test]
async fn ledger_a_payment_rewritten_as_unkeyed_from_its_first_event_is_caught_by_the_checkpoint() {
    let pool = ledger_db().await;
    let id = paid_payment(&pool).await;
    checkpoints::create(&pool, &keys()).await.unwrap();
    // Every event re-chained as version 1 (no key needed), head moved to match.
    tamper::rechain_unkeyed(&pool, id).await;
    let report = events::verify_all(&pool, &keys()).await.unwrap();
    let first = report.first_broken.expect("caught");
    assert_eq!(
        (first.payment_id, first.seq, first.reason),
        (id, 5, BreakReason::CheckpointMismatch { checkpoint: 1 })
    );
    assert_eq!(
        report.checkpoint_problem,
        Some(CheckpointProblem::UnkeyedEventsChanged {
            checkpoint: 1,
            signed: 0,
            found: 5
        })
    );
}

/// Cuts a paid payment's chain back to its third event, head and status included, as someone
/// with write access but without the ledger key would.
async fn cut_back_to_seq_3(pool: &Db, id: Uuid) {
    let listed = events::list(pool, id).await.unwrap();
    set_append_only_trigger(pool, false).await;
    sqlx::query("DELETE FROM payment_events WHERE payment_id = $1 AND seq > 3")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE payments SET ledger_seq = 3, ledger_head = $2, status = 'authorized',
                             bank_status = 'Confirmed' WHERE id = $1",
    )
    .bind(id)
    .bind(&listed[2].hash)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn ledger_a_chain_cut_back_below_the_checkpoint_is_caught() {
    let pool = ledger_db().await;
    let id = paid_payment(&pool).await;
    checkpoints::create(&pool, &keys()).await.unwrap();
    cut_back_to_seq_3(&pool, id).await;
    let report = events::verify_all(&pool, &keys()).await.unwrap();
    let first = report.first_broken.expect("caught");
    assert_eq!(
        (first.seq, first.reason),
        (5, BreakReason::CheckpointMismatch { checkpoint: 1 })
    );
    // And a checkpoint refuses to sign it.
    let err = checkpoints::create(&pool, &keys()).await.unwrap_err();
    assert!(
        matches!(err, CheckpointError::HeadWentBack { payment_id, seq: 3, checkpoint: 1, checkpointed_seq: 5 } if payment_id == id),
        "{err}"
    );
}

#[tokio::test]
async fn ledger_edited_or_deleted_checkpoints_are_caught() {
    let pool = ledger_db().await;
    paid_payment(&pool).await;
    paid_payment(&pool).await;
    checkpoints::create(&pool, &keys()).await.unwrap();
    for (table, trigger) in [
        ("ledger_checkpoints", "ledger_checkpoints_append_only"),
        (
            "ledger_checkpoint_heads",
            "ledger_checkpoint_heads_append_only",
        ),
    ] {
        let err = sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        sqlx::query(&format!("ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "DELETE FROM ledger_checkpoint_heads
         WHERE payment_id = (SELECT payment_id FROM ledger_checkpoint_heads
                             ORDER BY payment_id LIMIT 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let report = events::verify_all(&pool, &keys()).await.unwrap();
    assert_eq!(
        report.checkpoint_problem,
        Some(CheckpointProblem::HeadsAltered { checkpoint: 1 })
    );
    sqlx::query("UPDATE ledger_checkpoints SET payments = 1")
        .execute(&pool)
        .await
        .unwrap();
    let report = events::verify_all(&pool, &keys()).await.unwrap();
    assert_eq!(
        report.checkpoint_problem,
        Some(CheckpointProblem::SignatureMismatch { checkpoint: 1 })
    );
    assert!(!report.is_ok());
}

#[tokio::test]
async fn ledger_a_rotated_key_still_verifies_old_chains_and_signs_new_events() {
    let pool = ledger_db().await;
    let l1 = LedgerKeys::generate_key_base64();
    let l2 = LedgerKeys::generate_key_base64();
    let secret = |s: &str| SecretString::from(s.to_owned());
    let before = LedgerKeys::new("l1", &secret(&l1)).unwrap();
    keys::install(before.clone());
    let old = paid_payment(&pool).await;
    checkpoints::create(&pool, &before).await.unwrap();

    // The rotation: a new current key, the old one kept to verify.
    let after = LedgerKeys::parse("l2", &secret(&l2), &secret(&format!("l1:{l1}"))).unwrap();
    keys::install(after.clone());
    append(&pool, old, NewEvent::new("callback")).await;
    let new = paid_payment(&pool).await;
    let key_ids: Vec<(Uuid, i32, String)> = sqlx::query_as(
        "SELECT payment_id, seq, key_id FROM payment_events ORDER BY payment_id, seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (payment, seq, key_id) in &key_ids {
        let expected = if *payment == old && *seq <= 5 {
            "l1"
        } else {
            "l2"
        };
        assert_eq!(key_id, expected, "{payment} seq {seq}");
    }
    assert_eq!(key_ids.iter().filter(|k| k.0 == new).count(), 5);
    let report = events::verify_all(&pool, &after).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checkpoint, Some(1));
    checkpoints::create(&pool, &after).await.unwrap();
    assert!(events::verify_all(&pool, &after).await.unwrap().is_ok());

    // Without the old key the old events cannot be verified: named, not passed.
    let only_new = LedgerKeys::new("l2", &secret(&l2)).unwrap();
    let report = events::verify_all(&pool, &only_new).await.unwrap();
    let first = report.first_broken.expect("an unknown key is a problem");
    assert_eq!(
        (first.payment_id, first.seq, first.reason),
        (
            old,
            1,
            BreakReason::UnknownKey {
                key_id: "l1".into()
            }
        )
    );
    // Nor by a ring whose l1 is another key.
    let forged = LedgerKeys::parse("l2", &secret(&l2), &secret(&format!("l1:{l2}"))).unwrap();
    let report = events::verify_all(&pool, &forged).await.unwrap();
    assert_eq!(
        report.first_broken.unwrap().reason,
        BreakReason::HashMismatch
    );
}

#[tokio::test]
async fn ledger_the_checkpoint_worker_records_a_checkpoint_at_start() {
    let app = crate::helpers::spawn_app_with(&[
        ("PISGATE__LEDGER__CHECKPOINT_ENABLED", "true"),
        ("PISGATE__LEDGER__CHECKPOINT_INTERVAL", "200ms"),
    ])
    .await;
    let started = std::time::Instant::now();
    let mut payment = None;
    loop {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT id, payments FROM ledger_checkpoints ORDER BY id")
                .fetch_all(&app.pool)
                .await
                .unwrap();
        // One at start; then the next ones see the payment made after it.
        if !rows.is_empty() && payment.is_none() {
            payment = Some(paid_payment(&app.pool).await);
        }
        if rows.last().is_some_and(|r| r.1 == 1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no checkpoint of the payment recorded: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = events::verify_all(&app.pool, &keys()).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.checkpoint.unwrap() >= 2);
}

#[tokio::test]
async fn ledger_the_checkpoint_worker_counts_a_chain_cut_back_below_its_checkpoint() {
    let app = crate::helpers::spawn_app_with(&[
        ("PISGATE__LEDGER__CHECKPOINT_ENABLED", "true"),
        ("PISGATE__LEDGER__CHECKPOINT_INTERVAL", "200ms"),
    ])
    .await;
    let id = paid_payment(&app.pool).await;
    let failures = || async {
        crate::metrics::sample(&app.metrics().await, "pisgate_ledger_verify_failures_total")
            .expect("the counter exists from the start")
    };
    let started = std::time::Instant::now();
    // A checkpoint of the payment's whole chain (one taken while it was being written covers
    // an earlier head, below which the cut would not reach).
    let head_seq: i32 = sqlx::query_scalar("SELECT ledger_seq FROM payments WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(head_seq > 3, "the payment has events past seq 3");
    loop {
        let covered: Option<i32> = sqlx::query_scalar(
            "SELECT max(seq) FROM ledger_checkpoint_heads WHERE payment_id = $1",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if covered == Some(head_seq) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no checkpoint of the payment's last head"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failures().await, 0.0);
    cut_back_to_seq_3(&app.pool, id).await;
    while failures().await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the worker did not count the cut-back chain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- shopper tokens -------------------------------------------------------------------

fn cipher() -> TokenCipher {
    TokenCipher::from_base64("test-1", &TokenCipher::generate_key_base64()).unwrap()
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

async fn store(
    pool: &Db,
    cipher: &TokenCipher,
    psu_key: &str,
    issue_seq: i64,
    access: &str,
    expires_in: ChronoDuration,
) -> bool {
    let mut conn = pool.pool().acquire().await.unwrap();
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
    let mut conn = pool.pool().acquire().await.unwrap();
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
    let due = tokens::due_for_refresh(&pool, Duration::from_secs(120), 10, false, &[])
        .await
        .unwrap();
    let keys: Vec<&str> = due.iter().map(|d| d.psu_key.as_str()).collect();
    assert_eq!(keys, vec!["expired", "soon"]);
    let limited = tokens::due_for_refresh(&pool, Duration::from_secs(120), 1, false, &[])
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    // A shopper someone holds the lease of (an exchange, another replica's refresher) is
    // theirs this round: the list skips it, and a try-lease gives up at once.
    let held = lease(&pool, "nordea", "soon", Duration::ZERO)
        .await
        .unwrap();
    let due = tokens::due_for_refresh(&pool, Duration::from_secs(120), 10, false, &[])
        .await
        .unwrap();
    let keys: Vec<&str> = due.iter().map(|d| d.psu_key.as_str()).collect();
    assert_eq!(keys, vec!["expired"]);
    let started = std::time::Instant::now();
    assert!(
        lease(&pool, "nordea", "soon", Duration::ZERO)
            .await
            .is_none()
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    held.release().await;
    let due = tokens::due_for_refresh(&pool, Duration::from_secs(120), 10, false, &[])
        .await
        .unwrap();
    assert_eq!(due.len(), 2);
}

async fn lease(pool: &Db, bank: &str, psu: &str, wait: Duration) -> Option<tokens::PsuLease> {
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
    let pool = Db::from(
        PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect(&fresh_database().await)
            .await
            .unwrap(),
    );
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
