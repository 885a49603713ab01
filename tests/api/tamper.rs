//! Ledgers to tamper with, and the tampers of issue 11, done the way an intruder with write
//! access to the database would: append-only triggers switched off, rows edited in SQL,
//! hashes recomputed where that needs no key.

use chrono::SecondsFormat;
use pisgate::domain::PaymentStatus;
use pisgate::ledger::Db;
use pisgate::ledger::events::{self, NewEvent, StoredEvent};
use pisgate::ledger::merchants;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Every tamper the ledger must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// An event's detail changed in place.
    Edit,
    /// The last event of a paid payment deleted (the payment still says paid).
    DeleteLast,
    /// All events of a payment deleted, the payment row kept.
    DeleteAll,
    /// All events of a payment deleted, and the payment row too.
    DeletePayment,
    /// `TRUNCATE payment_events, payments CASCADE`.
    Truncate,
    /// The paid event changed to rejected and every later hash recomputed with the unkeyed
    /// SHA-256 of version 1; head and status moved to match.
    UnkeyedRewrite,
    /// The same, but the rewritten events also claim to be version 1 (unkeyed).
    UnkeyedDowngrade,
    /// After a checkpoint, the payment's history replaced by a different one signed with the
    /// real key (what an insider with the key could do); head and status moved to match.
    RewriteAfterCheckpoint,
}

pub const ALL: [Tamper; 8] = [
    Tamper::Edit,
    Tamper::DeleteLast,
    Tamper::DeleteAll,
    Tamper::DeletePayment,
    Tamper::Truncate,
    Tamper::UnkeyedRewrite,
    Tamper::UnkeyedDowngrade,
    Tamper::RewriteAfterCheckpoint,
];

pub async fn insert_payment(pool: &Db) -> Uuid {
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
    // Its poll schedule, as creation writes it (an open payment without one is reported).
    sqlx::query("INSERT INTO payment_polls (payment_id, next_poll_at) VALUES ($1, now())")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    id
}

/// Appends `event`, moving the payment to its new status, bank status and (for `initiated`)
/// bank payment id in the same transaction (as `payments::transition` and
/// `payments::record_initiated` do), so the row is what its ledger binds.
pub async fn append(pool: &Db, payment_id: Uuid, event: NewEvent) -> StoredEvent {
    let mut tx = pool.begin().await.unwrap();
    if let Some(status) = event.new_status {
        sqlx::query("UPDATE payments SET status = $2 WHERE id = $1")
            .bind(payment_id)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    if let Some(bank_status) = &event.bank_status {
        sqlx::query("UPDATE payments SET bank_status = $2 WHERE id = $1")
            .bind(payment_id)
            .bind(bank_status)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    if event.kind == "initiated" {
        // With the MAC of the bank reference (bank id and links), as pisgate writes it.
        let bank_id = event.detail["bank_payment_id"].as_str().unwrap_or_default();
        let ring = pisgate::ledger::keys::installed().expect("a ledger key is installed");
        let key_id = ring.current_id();
        let links = serde_json::json!({});
        let mac =
            pisgate::ledger::binding::bank_links_mac(&ring, key_id, payment_id, bank_id, &links)
                .unwrap();
        sqlx::query(
            "UPDATE payments SET bank_payment_id = $2, bank_links = $3, bank_links_mac = $4,
                                 bank_links_mac_key_id = $5
             WHERE id = $1",
        )
        .bind(payment_id)
        .bind(bank_id)
        .bind(&links)
        .bind(&mac[..])
        .bind(key_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let stored = events::append(&mut tx, payment_id, event).await.unwrap();
    tx.commit().await.unwrap();
    stored
}

fn status_change(from: PaymentStatus, to: PaymentStatus, bank: &str) -> NewEvent {
    NewEvent {
        old_status: Some(from),
        new_status: Some(to),
        bank_status: Some(bank.into()),
        detail: json!({"via": "poll"}),
        ..NewEvent::new("status_changed")
    }
}

/// The bank payment id [`authorized_payment`] records (unique, like the bank's).
pub fn bank_payment_id(payment_id: Uuid) -> String {
    format!("bp-{}", payment_id.simple())
}

/// created → initiated → authorized: three events, authorized.
pub async fn authorized_payment(pool: &Db) -> Uuid {
    use PaymentStatus::*;
    let id = insert_payment(pool).await;
    append(
        pool,
        id,
        NewEvent {
            new_status: Some(AwaitingAuthorization),
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
            detail: json!({"bank_payment_id": bank_payment_id(id)}),
            ..NewEvent::new("initiated")
        },
    )
    .await;
    append(
        pool,
        id,
        status_change(AwaitingAuthorization, Authorized, "Confirmed"),
    )
    .await;
    id
}

/// created → initiated → authorized → paid → a later callback note: five events, paid.
pub async fn paid_payment(pool: &Db) -> Uuid {
    use PaymentStatus::*;
    let id = authorized_payment(pool).await;
    append(pool, id, status_change(Authorized, Paid, "Paid")).await;
    append(
        pool,
        id,
        NewEvent {
            detail: json!({"late": true}),
            ..NewEvent::new("callback")
        },
    )
    .await;
    id
}

/// Runs `sql` (binding the payment id as `$1`) with every append-only trigger off.
async fn as_intruder(pool: &Db, payment_id: Uuid, sql: &[&str]) {
    let mut tx = pool.begin().await.unwrap();
    for table in ["payment_events", "payments"] {
        sqlx::query(&format!("ALTER TABLE {table} DISABLE TRIGGER USER"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    for statement in sql {
        let q = sqlx::query(statement);
        let q = if statement.contains("$1") {
            q.bind(payment_id)
        } else {
            q
        };
        q.execute(&mut *tx).await.unwrap();
    }
    for table in ["payment_events", "payments"] {
        sqlx::query(&format!("ALTER TABLE {table} ENABLE TRIGGER USER"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// The version 1 hash, from the storage contract in the module doc of `ledger::events`:
/// nothing but public knowledge.
pub fn unkeyed_hash(prev: Option<&[u8]>, e: &StoredEvent) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, "pisgate/payment_event/v1");
    out.extend_from_slice(e.payment_id.as_bytes());
    out.extend_from_slice(&e.seq.to_be_bytes());
    put_str(&mut out, &e.kind);
    put_opt(&mut out, e.old_status.map(PaymentStatus::as_str));
    put_opt(&mut out, e.new_status.map(PaymentStatus::as_str));
    put_opt(&mut out, e.bank_status.as_deref());
    put_str(
        &mut out,
        &e.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    put_str(&mut out, &events::canonical_json(&e.detail));
    let mut h = Sha256::new();
    h.update(prev.unwrap_or(&[0; 32]));
    h.update(&out);
    h.finalize().to_vec()
}

/// Re-chains every event of the payment as version 1 (unkeyed, as written before the keyed
/// chain: no key needed) and moves its head to match.
pub async fn rechain_unkeyed(pool: &Db, id: Uuid) {
    let listed = events::list(pool, id).await.unwrap();
    let mut prev: Option<Vec<u8>> = None;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE payment_events DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    for e in &listed {
        let hash = unkeyed_hash(prev.as_deref(), e);
        sqlx::query(
            "UPDATE payment_events SET hash_version = 1, key_id = NULL, prev_hash = $3, hash = $4
             WHERE payment_id = $1 AND seq = $2",
        )
        .bind(id)
        .bind(e.seq)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .unwrap();
        prev = Some(hash);
    }
    sqlx::query("ALTER TABLE payment_events ENABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE payments SET ledger_head = $2 WHERE id = $1")
        .bind(id)
        .bind(&prev)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Rewrites a paid payment's paid event (seq 4) as rejected and re-chains it and everything
/// after it with unkeyed hashes; `downgrade` also marks them version 1.
async fn unkeyed_rewrite(pool: &Db, id: Uuid, downgrade: bool) {
    let mut events = events::list(pool, id).await.unwrap();
    events[3].new_status = Some(PaymentStatus::Rejected);
    events[3].bank_status = Some("Rejected".into());
    let mut prev = events[2].hash.clone();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE payment_events DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    for e in &mut events[3..] {
        let hash = unkeyed_hash(Some(&prev), e);
        sqlx::query(
            "UPDATE payment_events
             SET new_status = $3, bank_status = $4, prev_hash = $5, hash = $6,
                 hash_version = CASE WHEN $7 THEN 1 ELSE hash_version END,
                 key_id = CASE WHEN $7 THEN NULL ELSE key_id END
             WHERE payment_id = $1 AND seq = $2",
        )
        .bind(id)
        .bind(e.seq)
        .bind(e.new_status.map(PaymentStatus::as_str))
        .bind(&e.bank_status)
        .bind(&prev)
        .bind(&hash)
        .bind(downgrade)
        .execute(&mut *tx)
        .await
        .unwrap();
        prev = hash;
    }
    sqlx::query("ALTER TABLE payment_events ENABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE payments SET status = 'rejected', bank_status = 'Rejected', ledger_head = $2
         WHERE id = $1",
    )
    .bind(id)
    .bind(&prev)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Replaces a paid payment's history by a rejected one, signed with the installed key.
async fn keyed_rewrite(pool: &Db, id: Uuid) {
    as_intruder(
        pool,
        id,
        &[
            "DELETE FROM payment_events WHERE payment_id = $1",
            "UPDATE payments SET ledger_seq = 0, ledger_head = NULL, bank_payment_id = NULL,
                                 bank_status = NULL, status = 'awaiting_authorization'
             WHERE id = $1",
        ],
    )
    .await;
    use PaymentStatus::*;
    append(
        pool,
        id,
        NewEvent {
            new_status: Some(AwaitingAuthorization),
            detail: json!({"amount_minor": 1250, "currency": "EUR"}),
            ..NewEvent::new("created")
        },
    )
    .await;
    for _ in 0..3 {
        append(pool, id, NewEvent::new("callback")).await;
    }
    append(
        pool,
        id,
        status_change(AwaitingAuthorization, Rejected, "Rejected"),
    )
    .await;
}

/// Does `tamper` to payment `id` (a [`paid_payment`]).
pub async fn tamper(pool: &Db, id: Uuid, tamper: Tamper) {
    match tamper {
        Tamper::Edit => {
            as_intruder(
                pool,
                id,
                &[
                    "UPDATE payment_events SET detail = '{\"bank_payment_id\": \"bp-forged\"}'
                   WHERE payment_id = $1 AND seq = 2",
                ],
            )
            .await
        }
        Tamper::DeleteLast => {
            as_intruder(
                pool,
                id,
                &["DELETE FROM payment_events WHERE payment_id = $1 AND seq = 5"],
            )
            .await
        }
        Tamper::DeleteAll => {
            as_intruder(
                pool,
                id,
                &["DELETE FROM payment_events WHERE payment_id = $1"],
            )
            .await
        }
        Tamper::DeletePayment => {
            as_intruder(
                pool,
                id,
                &[
                    "DELETE FROM payment_events WHERE payment_id = $1",
                    "DELETE FROM payment_polls WHERE payment_id = $1",
                    "DELETE FROM payments WHERE id = $1",
                ],
            )
            .await
        }
        Tamper::Truncate => {
            as_intruder(pool, id, &["TRUNCATE payment_events, payments CASCADE"]).await
        }
        Tamper::UnkeyedRewrite => unkeyed_rewrite(pool, id, false).await,
        Tamper::UnkeyedDowngrade => unkeyed_rewrite(pool, id, true).await,
        Tamper::RewriteAfterCheckpoint => keyed_rewrite(pool, id).await,
    }
}
