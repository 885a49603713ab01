//! What PostgreSQL writes for a payment (issue 28, migration 20261205300000): the bank's
//! answer to a new payment is a HOT update (it touches no index of `payments`), and the bank's
//! payment id, no longer indexed on `payments`, is still unique per bank through
//! `payment_bank_ids`, which follows every change of it.

use crate::helpers::spawn_app;
use crate::payments::body;
use uuid::Uuid;

/// Whether the live version of payment `id` is a heap-only tuple (written by a HOT update).
async fn is_heap_only(pool: &pisgate::ledger::Db, id: Uuid) -> bool {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pageinspect")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar::<_, bool>(
        "SELECT (h.t_infomask2 & x'8000'::int) <> 0
           FROM payments p,
                heap_page_items(get_raw_page('payments', (p.ctid::text::point)[0]::int)) h
          WHERE p.id = $1 AND h.lp = (p.ctid::text::point)[1]::int",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_bank_answer_to_a_new_payment_touches_no_index_of_payments() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    for _ in 0..3 {
        let p = app.create_payment(&m.api_key, &body("FI")).await;
        assert!(p["bank_status"].is_string(), "the bank answered: {p}");
        let id: Uuid = p["id"].as_str().unwrap().parse().unwrap();
        assert!(
            is_heap_only(&app.pool, id).await,
            "recording the bank's answer was not a HOT update"
        );
    }
}

#[tokio::test]
async fn two_payments_never_carry_the_same_bank_payment_id_of_one_bank() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let a: Uuid = app.create_payment(&m.api_key, &body("FI")).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let b: Uuid = app.create_payment(&m.api_key, &body("FI")).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (bank, a_bank_id): (String, String) =
        sqlx::query_as("SELECT bank, bank_payment_id FROM payments WHERE id = $1")
            .bind(a)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let copy = "UPDATE payments SET bank = $2, bank_payment_id = $3 WHERE id = $1";
    let err = sqlx::query(copy)
        .bind(b)
        .bind(&bank)
        .bind(&a_bank_id)
        .execute(&app.pool)
        .await
        .unwrap_err();
    assert!(
        err.as_database_error()
            .is_some_and(|e| e.is_unique_violation()),
        "{err}"
    );
    // The same id at another bank is another payment.
    sqlx::query(copy)
        .bind(b)
        .bind("other-bank")
        .bind(&a_bank_id)
        .execute(&app.pool)
        .await
        .unwrap();
    // Once a's id is gone (a retried attempt clears it), b may carry it at a's bank.
    sqlx::query("UPDATE payments SET bank_payment_id = NULL WHERE id = $1")
        .bind(a)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query(copy)
        .bind(b)
        .bind(&bank)
        .bind(&a_bank_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let held: Vec<(String, String, Uuid)> =
        sqlx::query_as("SELECT bank, bank_payment_id, payment_id FROM payment_bank_ids ORDER BY 3")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(held, vec![(bank, a_bank_id, b)]);
}
