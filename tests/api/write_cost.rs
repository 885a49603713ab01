//! What PostgreSQL writes for a payment (issue 28, migration 20261205300000): the bank's
//! answer to a new payment is a HOT update (it touches no index of `payments`), and the bank's
//! payment id, no longer indexed on `payments`, is still unique per bank through
//! `payment_bank_ids`, which follows every change of it.
//!
//! Migration 20261205400000 rewrote the value-list CHECKs of `payments` as calls of PL/pgSQL
//! functions and moved the fifteen-column test of `payments_touch_updated_at` from its
//! `WHEN` into its function (both cheaper per statement): the tests below pin down that each
//! constraint still refuses exactly what it refused, under the same name and error, and that
//! `updated_at` moves exactly when it moved before.
//!
//! Migration 20261206100000 made the single-column CHECKs of `payments`, `payment_events`,
//! `payment_polls` and `idempotency_keys` the columns' domains (compiled once per connection,
//! not re-read per statement): the same values are refused with the same SQLSTATE, and the
//! error names the constraint and the domain instead of the table.
//!
//! Creation schedules a new payment's first poll a signing interval on, so the bank's answer
//! no longer rewrites `payment_polls` (a non-HOT update: its `next_poll_at` is indexed) unless
//! a poller got there first.

use crate::helpers::spawn_app;
use crate::payments::body;
use uuid::Uuid;

/// Of the live rows of `table` that `filter` (SQL, `$1` bound to `arg`) selects: how many
/// there are, and how many are heap-only tuples (written by a HOT update).
async fn heap_only_rows(
    pool: &pisgate::ledger::Db,
    table: &str,
    filter: &str,
    arg: &str,
) -> (i64, i64) {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pageinspect")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_as(&format!(
        "SELECT count(*), count(*) FILTER (WHERE (h.t_infomask2 & x'8000'::int) <> 0)
           FROM {table} t,
                heap_page_items(get_raw_page('{table}', (t.ctid::text::point)[0]::int)) h
          WHERE ({filter}) AND h.lp = (t.ctid::text::point)[1]::int"
    ))
    .bind(arg)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Whether the live version of payment `id` is a heap-only tuple (written by a HOT update).
async fn is_heap_only(pool: &pisgate::ledger::Db, id: Uuid) -> bool {
    heap_only_rows(pool, "payments", "t.id = $1::uuid", &id.to_string()).await == (1, 1)
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

/// The bank's answer to a new payment leaves the poll schedule creation wrote as it is (no
/// new tuple, no index entries): creation already put the first poll a signing interval on,
/// no later than the answer would.
#[tokio::test]
async fn the_bank_answer_to_a_new_payment_leaves_its_poll_schedule_as_creation_wrote_it() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let signing_interval =
        chrono::Duration::from_std(app.settings.poller.signing_interval).unwrap();
    for _ in 0..3 {
        let before = chrono::Utc::now();
        let p = app.create_payment(&m.api_key, &body("FI")).await;
        let after = chrono::Utc::now();
        assert!(p["bank_status"].is_string(), "the bank answered: {p}");
        let id: Uuid = p["id"].as_str().unwrap().parse().unwrap();
        // The creating statement's transaction wrote the `created` event; the answer's
        // statement wrote the `initiated` event and the new version of the payment.
        let (created_by, answered_by, payment_by, schedule_by): (String, String, String, String) =
            sqlx::query_as(
                "SELECT (SELECT xmin::text FROM payment_events WHERE payment_id = $1 AND kind = 'created'),
                        (SELECT xmin::text FROM payment_events WHERE payment_id = $1 AND kind = 'initiated'),
                        (SELECT xmin::text FROM payments WHERE id = $1),
                        (SELECT xmin::text FROM payment_polls WHERE payment_id = $1)",
            )
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_ne!(created_by, answered_by, "two statements, two transactions");
        assert_eq!(
            payment_by, answered_by,
            "the answer is recorded on the payment"
        );
        assert_eq!(
            schedule_by, created_by,
            "the answer rewrote the poll schedule creation wrote"
        );
        let (next, owner, failures): (chrono::DateTime<chrono::Utc>, Option<String>, i32) =
            sqlx::query_as(
                "SELECT next_poll_at, poll_owner, poll_failures FROM payment_polls WHERE payment_id = $1",
            )
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert!(
            next >= before + signing_interval && next <= after + signing_interval,
            "first poll {next} is not a signing interval after creation ({before} .. {after})"
        );
        assert_eq!((owner, failures), (None, 0));
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

/// A fresh payment of `app`, created through the API (the sandbox bank answered it).
async fn a_payment(app: &crate::helpers::TestApp) -> Uuid {
    let m = app.create_merchant("Shop").await;
    app.create_payment(&m.api_key, &body("FI")).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// How PostgreSQL refused a value: its SQLSTATE, the constraint, and what the error names
/// (the table for a table's CHECK, the type for a domain's).
type Refusal = (String, Option<String>, Option<String>);

/// Runs `sql` (with `$1` bound to `id` and the values after it as text) in a transaction
/// that is rolled back: `Ok` if PostgreSQL took it (one row), else how it refused.
async fn try_sql(
    pool: &pisgate::ledger::Db,
    sql: &str,
    id: Uuid,
    values: &[Option<&str>],
) -> Result<(), Refusal> {
    let mut tx = pool.begin().await.unwrap();
    let mut query = sqlx::query(sql).bind(id);
    for v in values {
        query = query.bind(*v);
    }
    let res = query.execute(&mut *tx).await;
    tx.rollback().await.unwrap();
    match res {
        Ok(done) => {
            assert_eq!(done.rows_affected(), 1, "{sql}");
            Ok(())
        }
        Err(e) => {
            let db = e.as_database_error().expect("a database error");
            let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
            Err((
                db.code().unwrap().into_owned(),
                db.constraint().map(str::to_owned),
                pg.and_then(|e| e.table().or(e.data_type()).map(str::to_owned)),
            ))
        }
    }
}

/// `UPDATE payments SET <column> = <value>` on payment `id`, rolled back.
async fn try_set(
    pool: &pisgate::ledger::Db,
    id: Uuid,
    column: &str,
    value: Option<&str>,
) -> Result<(), Refusal> {
    let sql = format!("UPDATE payments SET {column} = $2 WHERE id = $1");
    try_sql(pool, &sql, id, &[value]).await
}

#[tokio::test]
async fn every_value_list_of_payments_refuses_exactly_what_it_refused() {
    let app = spawn_app().await;
    let id = a_payment(&app).await;
    // The lists as the migrations before 20261205400000 wrote them (table CHECKs), the
    // constraint's name and the domain that holds it since 20261206100000, and whether the
    // column is NOT NULL.
    let lists: [(&str, &str, &str, &[&str], bool); 5] = [
        (
            "status",
            "payments_status_check",
            "pisgate_payment_status",
            &[
                "awaiting_authorization",
                "authorized",
                "paid",
                "rejected",
                "authorization_failed",
                "cancelled",
                "expired",
                "failed",
            ],
            true,
        ),
        (
            "initiation",
            "payments_initiation_check",
            "pisgate_payment_initiation",
            &[
                "pending",
                "initiated",
                "outcome_unknown",
                "not_created",
                "refused",
                "awaiting_bank_choice",
                "awaiting_debtor_account",
                "awaiting_shopper_identification",
            ],
            true,
        ),
        (
            "currency",
            "payments_currency_check",
            "pisgate_currency",
            &["EUR", "DKK", "SEK", "NOK"],
            true,
        ),
        (
            "country",
            "payments_country_check",
            "pisgate_country",
            &["DK", "FI", "NO", "SE"],
            true,
        ),
        (
            "cancel_requested_by",
            "payments_cancel_requested_by_check",
            "pisgate_cancel_requester",
            &["merchant", "shopper"],
            false,
        ),
    ];
    for (column, constraint, domain, allowed, not_null) in lists {
        for v in allowed {
            assert_eq!(
                try_set(&app.pool, id, column, Some(v)).await,
                Ok(()),
                "{column} = {v:?} is allowed"
            );
        }
        // Near misses of every allowed value (case, spaces, a prefix), the empty string, and
        // values of the other lists.
        let mut refused: Vec<String> = vec!["".into(), "unknown".into(), "x".repeat(300)];
        for v in allowed {
            refused.push(v.to_uppercase());
            refused.push(v.to_lowercase());
            refused.push(format!("{v} "));
            refused.push(format!(" {v}"));
            refused.push(v[..v.len() - 1].to_owned());
            refused.push(format!("{v}{v}"));
        }
        for (_, _, _, other, _) in lists {
            refused.extend(other.iter().map(|v| v.to_string()));
        }
        refused.retain(|v| !allowed.contains(&v.as_str()));
        for v in &refused {
            assert_eq!(
                try_set(&app.pool, id, column, Some(v)).await,
                Err((
                    "23514".to_owned(),
                    Some(constraint.to_owned()),
                    Some(domain.to_owned())
                )),
                "{column} = {v:?} is refused by {constraint} of {domain}"
            );
        }
        let null = try_set(&app.pool, id, column, None).await;
        if not_null {
            assert_eq!(
                null.map_err(|e| e.0),
                Err("23502".to_owned()),
                "{column} NULL"
            );
        } else {
            assert_eq!(null, Ok(()), "{column} NULL is allowed");
        }
    }
    // A new payment that breaks a list is refused on insert as well, by the same constraint
    // (a copy of the payment under a new id; the CHECKs run before any unique index).
    let err = sqlx::query(
        "INSERT INTO payments
         SELECT (jsonb_populate_record(NULL::payments, to_jsonb(p)
                 || jsonb_build_object('id', gen_random_uuid(), 'currency', 'USD'))).*
           FROM payments p WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap_err();
    let db = err.as_database_error().unwrap();
    assert_eq!(
        (db.code().as_deref(), db.constraint()),
        (Some("23514"), Some("payments_currency_check")),
        "{err}"
    );
}

/// The single-column rules of the tables a payment's creation writes that were table CHECKs
/// before migration 20261206100000 and are domains since: each refuses what its CHECK
/// refused (SQLSTATE 23514, naming its constraint and domain) and allows the edge it allowed;
/// the rules that read two columns are still the tables' own.
#[tokio::test]
async fn every_single_column_rule_of_the_payment_tables_refuses_what_it_refused() {
    let app = spawn_app().await;
    let id = a_payment(&app).await;
    let pool = &app.pool;
    let refused = |constraint: &str, domain: &str| -> Result<(), Refusal> {
        Err((
            "23514".to_owned(),
            Some(constraint.to_owned()),
            Some(domain.to_owned()),
        ))
    };
    let payments = |set: &str| format!("UPDATE payments SET {set} WHERE id = $1");
    let polls = |set: &str| format!("UPDATE payment_polls SET {set} WHERE payment_id = $1");
    let amount = ("payments_amount_minor_check", "pisgate_amount_minor");
    let count = ("pisgate_count_check", "pisgate_count");
    let sha256 = ("pisgate_sha256_check", "pisgate_sha256");
    // (statement, allowed?) with what refuses it.
    let cases: Vec<(String, Option<(&str, &str)>)> = vec![
        (payments("amount_minor = 1"), None),
        (payments("amount_minor = 0"), Some(amount)),
        (payments("amount_minor = -1050"), Some(amount)),
        (payments("initiation_attempts = 0"), None),
        (payments("initiation_attempts = -1"), Some(count)),
        (payments("recurring_executions = 0"), None),
        (payments("recurring_executions = -1"), Some(count)),
        (payments("ledger_seq = ledger_seq + 1"), None),
        (payments("ledger_seq = -1"), Some(count)),
        (payments("ledger_head = sha256('x')"), None),
        (
            payments("ledger_head = substring(sha256('x') from 2)"),
            Some(sha256),
        ),
        (
            payments("ledger_head = sha256('x') || '\\x00'::bytea"),
            Some(sha256),
        ),
        (payments("ledger_head = ''::bytea"), Some(sha256)),
        (
            polls("polls = 0, final_reads_left = 0, poll_failures = 0"),
            None,
        ),
        (polls("polls = -1"), Some(count)),
        (polls("final_reads_left = -1"), Some(count)),
        (polls("poll_failures = -1"), Some(count)),
    ];
    for (sql, refusal) in cases {
        let expected = match refusal {
            None => Ok(()),
            Some((constraint, domain)) => refused(constraint, domain),
        };
        assert_eq!(try_sql(pool, &sql, id, &[]).await, expected, "{sql}");
    }
    // The rule that reads two columns is still the table's: no head without a sequence.
    assert_eq!(
        try_sql(pool, &payments("ledger_head = NULL"), id, &[]).await,
        Err((
            "23514".to_owned(),
            Some("payments_ledger_head_with_seq".to_owned()),
            Some("payments".to_owned())
        ))
    );

    // An event is refused on insert (a copy of the payment's first event, one column
    // changed; the domain refuses it before the chain's own rules look at it).
    let event = |change: &str| {
        format!(
            "INSERT INTO payment_events
             SELECT (jsonb_populate_record(NULL::payment_events, to_jsonb(e) || {change})).*
               FROM payment_events e WHERE payment_id = $1 AND seq = 1"
        )
    };
    for (change, constraint, domain) in [
        (
            "jsonb_build_object('seq', 0)",
            "payment_events_seq_check",
            "pisgate_event_seq",
        ),
        (
            "jsonb_build_object('seq', -3)",
            "payment_events_seq_check",
            "pisgate_event_seq",
        ),
        (
            "jsonb_build_object('hash_version', 3)",
            "payment_events_hash_version_check",
            "pisgate_hash_version",
        ),
        (
            "jsonb_build_object('hash_version', 0)",
            "payment_events_hash_version_check",
            "pisgate_hash_version",
        ),
        (
            "jsonb_build_object('hash', '\\x00')",
            "pisgate_sha256_check",
            "pisgate_sha256",
        ),
    ] {
        assert_eq!(
            try_sql(pool, &event(change), id, &[]).await,
            refused(constraint, domain),
            "{change}"
        );
    }

    // An idempotency key is 1 to 255 characters.
    let key = "UPDATE idempotency_keys SET key = $2 WHERE payment_id = $1";
    let long = "k".repeat(255);
    assert_eq!(try_sql(pool, key, id, &[Some(long.as_str())]).await, Ok(()));
    assert_eq!(try_sql(pool, key, id, &[Some("k")]).await, Ok(()));
    for bad in [String::new(), "k".repeat(256)] {
        assert_eq!(
            try_sql(pool, key, id, &[Some(bad.as_str())]).await,
            refused("idempotency_keys_key_check", "pisgate_idempotency_key"),
            "a key of {} characters",
            bad.len()
        );
    }
}

/// Runs `UPDATE payments SET <set> WHERE id = $1` in a transaction that is rolled back, and
/// says what the statement left in `updated_at`: `None` when it is the transaction's `now()`
/// (the trigger set it), else the value.
async fn updated_at_after(
    pool: &pisgate::ledger::Db,
    id: Uuid,
    set: &str,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!("UPDATE payments SET {set} WHERE id = $1"))
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("SET {set}: {e}"));
    let (at, is_now): (chrono::DateTime<chrono::Utc>, bool) =
        sqlx::query_as("SELECT updated_at, updated_at = now() FROM payments WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.rollback().await.unwrap();
    (!is_now).then_some(at)
}

#[tokio::test]
async fn updated_at_moves_exactly_when_a_column_a_merchant_sees_changes_and_the_statement_did_not_set_it()
 {
    let app = spawn_app().await;
    let id = a_payment(&app).await;
    let past: chrono::DateTime<chrono::Utc> = "2001-01-01T00:00:00Z".parse().unwrap();
    // A statement that sets updated_at keeps its value.
    sqlx::query("UPDATE payments SET updated_at = '2001-01-01T00:00:00Z' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    // Each of the fifteen columns a merchant sees (PaymentView), changed alone, moves it.
    for set in [
        "status = CASE WHEN status = 'failed' THEN 'paid' ELSE 'failed' END",
        "bank_status = coalesce(bank_status, '') || 'x'",
        "bank_payment_id = coalesce(bank_payment_id, '') || 'x'",
        "authorization_url = coalesce(authorization_url, '') || 'x'",
        "authorize_url = coalesce(authorize_url, '') || 'x'",
        "initiation = CASE WHEN initiation = 'refused' THEN 'pending' ELSE 'refused' END",
        "cancel_requested_at = coalesce(cancel_requested_at, now()) + interval '1 second'",
        "expires_at = coalesce(expires_at, now()) + interval '1 second'",
        "failure_code = coalesce(failure_code, '') || 'x'",
        "failure_detail = coalesce(failure_detail, '') || 'x'",
        "recurring_remaining = coalesce(recurring_remaining, 0) + 1",
        "recurring_executions = recurring_executions + 1",
        "metadata = metadata || '{\"k\": \"v\"}'",
        "psu_id = coalesce(psu_id, '') || 'x'",
        "return_url = coalesce(return_url, '') || 'x'",
        // NULL to a value and back count as changes.
        "failure_code = 'x', failure_detail = NULL",
    ] {
        assert_eq!(
            updated_at_after(&app.pool, id, set).await,
            None,
            "SET {set} moves updated_at"
        );
    }
    // A statement that changes a seen column and sets updated_at to a new value keeps its
    // value (setting it to the value it has counts as not setting it: the old trigger's rule).
    assert_eq!(
        updated_at_after(
            &app.pool,
            id,
            "status = 'failed', updated_at = '2002-02-02T00:00:00Z'"
        )
        .await,
        Some("2002-02-02T00:00:00Z".parse().unwrap())
    );
    assert_eq!(
        updated_at_after(
            &app.pool,
            id,
            "status = 'failed', updated_at = '2001-01-01T00:00:00Z'"
        )
        .await,
        None
    );
    // Nothing moves it when the seen columns keep their values, or when only columns a
    // merchant does not see change.
    for set in [
        "status = status, metadata = metadata, failure_code = failure_code",
        "failure_code = NULL",
        "trace_parent = coalesce(trace_parent, '') || 'x'",
        "callback_claimed_until = now()",
        "request = request || '{\"k\": 1}'",
    ] {
        assert_eq!(
            updated_at_after(&app.pool, id, set).await,
            Some(past),
            "SET {set} leaves updated_at"
        );
    }
}

/// Keys claimed in a burst, faster than their bank answers come back, each get their answer
/// (about 1 kB added to a row of about 200 bytes) as a HOT update: `idempotency_keys` leaves
/// room on each page for it (fillfactor 10, migration 20261213100000). With pages packed full
/// of claims (the table's default), most of these answers moved their row to another page
/// and wrote new entries into both indexes of the table.
#[tokio::test]
async fn keys_claimed_in_a_burst_get_their_answers_as_hot_updates() {
    let app = spawn_app().await;
    let m = app.create_merchant("Burst shop").await;
    let answer = serde_json::json!({ "id": Uuid::new_v4(), "pad": "x".repeat(880) });
    for i in 0..24 {
        sqlx::query(
            "INSERT INTO idempotency_keys
                 (merchant_id, key, request_hash, expires_at, locked_until, body_hash)
             VALUES ($1, 'burst-' || $2, sha256($2::text::bytea), now() + interval '1 day',
                     now() + interval '15 seconds', sha256(('b' || $2)::bytea))",
        )
        .bind(m.id)
        .bind(i)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    for i in 0..24 {
        let n = sqlx::query(
            "UPDATE idempotency_keys
                SET response_status = 201, response_body = $3, completed_at = now()
              WHERE merchant_id = $1 AND key = 'burst-' || $2",
        )
        .bind(m.id)
        .bind(i)
        .bind(&answer)
        .execute(&app.pool)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(n, 1);
    }
    assert_eq!(
        heap_only_rows(&app.pool, "idempotency_keys", "t.key LIKE $1", "burst-%").await,
        (24, 24),
        "answers that moved their key's row to another page"
    );
}
