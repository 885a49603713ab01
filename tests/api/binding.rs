//! The ledger binds the whole payment (issue 22, item 4): a payment row or a webhook payload
//! rewritten in SQL by an insider (append-only triggers off, no ledger key) fails
//! `ledger verify`, and a row pointed at another bank payment is never paid by the poller.
//! Payments go through the real API, the sandbox bank and the callback first.

use crate::helpers::{
    TestApp, continue_to_bank, ledger_keys, sign_and_return, spawn_app, spawn_app_full,
};
use crate::payments::body;
use crate::tamper;
use pisgate::ledger::events::{self, BreakReason, NewEvent};
use pisgate::ledger::verify::VerifyReport;
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A payment created through the API, signed at the bank and back through the callback:
/// authorized, with a token, a bank id and a `payment.authorized` webhook event.
async fn authorized(app: &TestApp, key: &str) -> Uuid {
    let p = app.create_payment(key, &body("FI")).await;
    let back = sign_and_return(&app.client, &p, "psu-binding").await;
    assert_eq!(back.status(), 303);
    let id = p["id"].as_str().unwrap().to_owned();
    assert_eq!(app.get_payment(key, &id).await["status"], "authorized");
    id.parse().unwrap()
}

async fn verify(app: &TestApp) -> VerifyReport {
    events::verify_all(&app.pool, &ledger_keys()).await.unwrap()
}

/// Runs `sql` ($1 = the payment id) as an insider: every user trigger of the tables off.
pub(crate) async fn as_insider(app: &TestApp, id: Uuid, sql: &str) {
    as_insider_all(app, id, &[sql]).await
}

/// [`as_insider`] for several statements in one transaction.
async fn as_insider_all(app: &TestApp, id: Uuid, sqls: &[&str]) {
    let mut tx = app.pool.begin().await.unwrap();
    let tables = ["payments", "payment_events", "webhook_events"];
    for t in tables {
        sqlx::query(&format!("ALTER TABLE {t} DISABLE TRIGGER USER"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    for sql in sqls {
        let q = sqlx::query(sql);
        let q = if sql.contains("$1") { q.bind(id) } else { q };
        let changed = q.execute(&mut *tx).await.unwrap().rows_affected();
        assert!(changed > 0, "the tamper changed nothing: {sql}");
    }
    for t in tables {
        sqlx::query(&format!("ALTER TABLE {t} ENABLE TRIGGER USER"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

/// A fresh app with one authorized payment that verifies, bound (no unbound payment).
async fn bound_payment() -> (TestApp, String, Uuid) {
    let app = spawn_app().await;
    let m = app.create_merchant("Binding shop").await;
    let id = authorized(&app, &m.api_key).await;
    let report = verify(&app).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.unbound_payments, 0, "{report:?}");
    assert!(report.webhook_events_checked >= 1, "{report:?}");
    assert_eq!(report.broken_webhook_events, 0, "{report:?}");
    (app, m.api_key, id)
}

fn first_reason(report: &VerifyReport, id: Uuid) -> BreakReason {
    let first = report
        .first_broken
        .clone()
        .unwrap_or_else(|| panic!("the tamper went unnoticed: {report:?}"));
    assert_eq!(first.payment_id, id, "{report:?}");
    first.reason
}

#[tokio::test]
async fn ledger_verify_catches_a_payment_amount_multiplied_in_sql() {
    let (app, _, id) = bound_payment().await;
    as_insider(
        &app,
        id,
        "UPDATE payments SET amount_minor = amount_minor * 100 WHERE id = $1",
    )
    .await;
    assert_eq!(
        first_reason(&verify(&app).await, id),
        BreakReason::FactsMismatch
    );
}

#[tokio::test]
async fn ledger_verify_catches_a_payment_moved_to_another_merchant() {
    let (app, _, id) = bound_payment().await;
    let other = app.create_merchant("Other shop").await;
    as_insider(
        &app,
        id,
        &format!(
            "UPDATE payments SET merchant_id = '{}' WHERE id = $1",
            other.id
        ),
    )
    .await;
    assert_eq!(
        first_reason(&verify(&app).await, id),
        BreakReason::FactsMismatch
    );
}

#[tokio::test]
async fn ledger_verify_catches_a_rewritten_creditor() {
    let (app, _, id) = bound_payment().await;
    as_insider(
        &app,
        id,
        r#"UPDATE payments
           SET request = jsonb_set(request, '{creditor,account,value}', '"FI7955500000000112"')
           WHERE id = $1 AND request #> '{creditor,account,value}' IS NOT NULL"#,
    )
    .await;
    assert_eq!(
        first_reason(&verify(&app).await, id),
        BreakReason::FactsMismatch
    );
}

/// The reference and metadata merchants and webhooks are shown are copies of the bound
/// request: an insider who moves another order's reference or metadata onto a payment (so
/// that its `payment.paid` ships that order) fails verify.
#[tokio::test]
async fn ledger_verify_catches_a_rewritten_reference_or_metadata_copy() {
    for sql in [
        "UPDATE payments SET merchant_reference = 'order-9999' WHERE id = $1",
        "UPDATE payments SET merchant_reference = NULL WHERE id = $1",
        r#"UPDATE payments SET metadata = '{"order": "B-77"}' WHERE id = $1"#,
    ] {
        let (app, _, id) = bound_payment().await;
        as_insider(&app, id, sql).await;
        assert_eq!(
            first_reason(&verify(&app).await, id),
            BreakReason::FactsMismatch,
            "{sql}"
        );
    }
}

#[tokio::test]
async fn ledger_verify_catches_a_bank_payment_id_swapped_with_another_payments() {
    let app = spawn_app().await;
    let m = app.create_merchant("Binding shop").await;
    let victim = authorized(&app, &m.api_key).await;
    let other = authorized(&app, &m.api_key).await;
    assert!(verify(&app).await.is_ok());
    // A swap through a spare value (bank ids are unique).
    let ids: (String, String) = sqlx::query_as(
        "SELECT (SELECT bank_payment_id FROM payments WHERE id = $1),
                (SELECT bank_payment_id FROM payments WHERE id = $2)",
    )
    .bind(victim)
    .bind(other)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    as_insider_all(
        &app,
        victim,
        &[
            &format!("UPDATE payments SET bank_payment_id = 'spare' WHERE id = '{other}'"),
            &format!(
                "UPDATE payments SET bank_payment_id = '{}' WHERE id = $1",
                ids.1
            ),
            &format!(
                "UPDATE payments SET bank_payment_id = '{}' WHERE id = '{other}'",
                ids.0
            ),
        ],
    )
    .await;
    let report = verify(&app).await;
    assert_eq!(report.broken_payments, 2, "{report:?}");
    let first = report.first_broken.clone().unwrap();
    assert!(
        matches!(first.reason, BreakReason::BankPaymentIdMismatch { .. }),
        "{report:?}"
    );
    assert!(first.payment_id == victim.min(other), "{report:?}");
}

#[tokio::test]
async fn ledger_verify_catches_a_status_or_bank_status_rewritten_in_sql() {
    let (app, _, id) = bound_payment().await;
    // The bank status alone: the row claims the bank said Paid.
    as_insider(
        &app,
        id,
        "UPDATE payments SET bank_status = 'Paid' WHERE id = $1",
    )
    .await;
    assert_eq!(
        first_reason(&verify(&app).await, id),
        BreakReason::BankStatusMismatch {
            payment: Some("Paid".into()),
            ledger: Some("Confirmed".into())
        }
    );
    // And the status with it.
    as_insider(
        &app,
        id,
        "UPDATE payments SET status = 'paid' WHERE id = $1",
    )
    .await;
    assert_eq!(
        first_reason(&verify(&app).await, id),
        BreakReason::StatusMismatch {
            payment_status: "paid".into(),
            ledger_status: Some("authorized".into())
        }
    );
}

#[tokio::test]
async fn ledger_verify_catches_an_edited_webhook_payload() {
    let (app, _, id) = bound_payment().await;
    as_insider(
        &app,
        id,
        r#"UPDATE webhook_events
           SET payload = jsonb_set(jsonb_set(payload, '{type}', '"payment.paid"'),
                                   '{data,status}', '"paid"')
           WHERE payment_id = $1"#,
    )
    .await;
    let report = verify(&app).await;
    assert!(!report.is_ok(), "{report:?}");
    assert!(
        report.first_broken.is_none(),
        "the payment itself is intact"
    );
    assert_eq!(report.broken_webhook_events, 1, "{report:?}");
    let broken = report.first_broken_webhook_event.unwrap();
    assert!(broken.reason.contains("edited"), "{broken}");
}

/// A webhook event forged by removing its MAC (so that nothing binds it) while other events
/// carry theirs fails verify; only events older than the first MAC'd one count as written
/// before binding.
#[tokio::test]
async fn ledger_verify_catches_a_webhook_event_whose_mac_was_removed() {
    let (app, key, _) = bound_payment().await;
    let second = authorized(&app, &key).await;
    as_insider(
        &app,
        second,
        r#"UPDATE webhook_events
           SET payload = jsonb_set(payload, '{type}', '"payment.paid"'),
               event_type = 'payment.paid', payload_mac = NULL, mac_key_id = NULL
           WHERE payment_id = $1"#,
    )
    .await;
    let report = verify(&app).await;
    assert!(!report.is_ok(), "{report:?}");
    assert!(report.broken_webhook_events >= 1, "{report:?}");
    let broken = report.first_broken_webhook_event.unwrap();
    assert!(broken.reason.contains("no ledger MAC"), "{broken}");
}

/// The bank's signing page the hop sends shoppers to is bound by the `initiated` event: an
/// insider who swaps in another page (a phishing page, or another payment's signing link)
/// or clears it fails verify.
#[tokio::test]
async fn ledger_verify_catches_a_swapped_bank_signing_page() {
    for sql in [
        "UPDATE payments SET authorization_url = 'https://phish.example/sign' WHERE id = $1",
        "UPDATE payments SET authorization_url = NULL WHERE id = $1",
    ] {
        let (app, _, id) = bound_payment().await;
        as_insider(&app, id, sql).await;
        assert_eq!(
            first_reason(&verify(&app).await, id),
            BreakReason::AuthorizationUrlMismatch,
            "{sql}"
        );
    }
}

/// The hop checks the bank link against the ledger before it sends a shopper there: a page
/// swapped in SQL (a phishing page) is never handed out, even before anyone runs verify. The
/// shopper gets the "try again later" page, the hop stays unopened (a merchant's cancel still
/// ends the payment at once), and the refusal is counted for the alert. An untouched
/// payment of the same app goes to the bank.
#[tokio::test]
async fn the_hop_never_sends_a_shopper_to_a_bank_link_its_ledger_did_not_record() {
    let app = spawn_app().await;
    let m = app.create_merchant("Hop binding shop").await;
    let untouched = app.create_payment(&m.api_key, &body("FI")).await;
    let swapped = app.create_payment(&m.api_key, &body("FI")).await;
    let id: Uuid = swapped["id"].as_str().unwrap().parse().unwrap();
    as_insider(
        &app,
        id,
        "UPDATE payments SET authorization_url = 'https://phish.example/sign' WHERE id = $1",
    )
    .await;

    let r = continue_to_bank(&app.client, swapped["authorization_url"].as_str().unwrap()).await;
    assert_eq!(r.status(), 503, "the shopper is not sent anywhere");
    assert!(r.headers().get("location").is_none());
    let html = r.text().await.unwrap();
    assert!(!html.contains("phish.example"), "{html}");
    let (opened, opened_event): (bool, bool) = sqlx::query_as(
        "SELECT hop_opened_at IS NOT NULL,
                EXISTS (SELECT 1 FROM payment_events
                        WHERE payment_id = $1 AND kind = 'authorization_opened')
         FROM payments WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        !opened && !opened_event,
        "nobody reached a bank page through the hop"
    );
    let scrape = app.metrics().await;
    assert!(
        scrape.contains("pisgate_ledger_binding_mismatches_total 1"),
        "{scrape}"
    );

    // The link the ledger recorded is handed out as before.
    let r = continue_to_bank(
        &app.client,
        untouched["authorization_url"].as_str().unwrap(),
    )
    .await;
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with(&app.sandbox_url), "{to}");

    // An event relabelled to vouch for the phishing page does not hold under the key.
    let phish =
        pisgate::ledger::binding::authorization_url_digest(Some("https://phish.example/sign"));
    as_insider(
        &app,
        id,
        &format!(
            "UPDATE payment_events SET detail = jsonb_set(detail, '{{authorization_url_sha256}}', '\"{phish}\"')
             WHERE payment_id = $1 AND kind = 'initiated'"
        ),
    )
    .await;
    let r = continue_to_bank(&app.client, swapped["authorization_url"].as_str().unwrap()).await;
    assert_eq!(r.status(), 503, "an edited event vouches for nothing");
}

#[tokio::test]
async fn ledger_verify_catches_a_payment_pointed_at_another_shoppers_token() {
    let (app, _, id) = bound_payment().await;
    as_insider(
        &app,
        id,
        "UPDATE payments SET psu_key = 'bank:someone-else' WHERE id = $1",
    )
    .await;
    assert_eq!(
        first_reason(&verify(&app).await, id),
        BreakReason::ShopperKeyMismatch
    );
}

/// Payments from before binding (no facts digest) are counted, not failed, and their chains,
/// statuses and bank ids are still checked. Webhook events have no such exemption: those
/// from before their binding were sealed at that upgrade, so one without its MAC fails.
#[tokio::test]
async fn ledger_verify_counts_unbound_payments_and_fails_webhook_events_without_a_mac() {
    let (app, _, _) = bound_payment().await;
    let legacy = tamper::paid_payment(&app.pool).await;
    let report = verify(&app).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.unbound_payments, 1, "{report:?}");
    sqlx::query(
        "UPDATE webhook_events SET payload_mac = NULL, mac_key_id = NULL,
                created_at = '2020-01-01T00:00:00Z'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let report = verify(&app).await;
    assert!(!report.is_ok(), "{report:?}");
    assert_eq!(
        report.broken_webhook_events, report.webhook_events_checked,
        "an old date exempts nothing: {report:?}"
    );
    // An unbound payment's bank id is still checked against its chain.
    as_insider(
        &app,
        legacy,
        "UPDATE payments SET bank_payment_id = 'bp-other' WHERE id = $1",
    )
    .await;
    assert_eq!(
        first_reason(&verify(&app).await, legacy),
        BreakReason::BankPaymentIdMismatch {
            payment: Some("bp-other".into()),
            ledger: Some(tamper::bank_payment_id(legacy))
        }
    );
}

/// The issue's attack: a payment's bank id pointed at another payment the bank has paid.
/// The poller reads "Paid" for it, and must not pay it (nor tell the merchant so).
#[tokio::test]
async fn the_poller_never_pays_a_payment_whose_bank_id_is_not_the_one_its_ledger_recorded() {
    let app = spawn_app_full(crate::workers::FAST_POLLER, |c| {
        c.paid_delay = Duration::from_millis(300)
    })
    .await;
    let m = app.create_merchant("Binding shop").await;
    let paid = authorized(&app, &m.api_key).await;
    let victim = app.create_payment(&m.api_key, &body("SE")).await;
    let victim: Uuid = victim["id"].as_str().unwrap().parse().unwrap();
    wait_for_status(&app, &m.api_key, paid, "paid").await;
    let paid_bank_id: String =
        sqlx::query_scalar("SELECT bank_payment_id FROM payments WHERE id = $1")
            .bind(paid)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    as_insider_all(
        &app,
        victim,
        &[
            &format!("UPDATE payments SET bank_payment_id = 'moved' WHERE id = '{paid}'"),
            &format!("UPDATE payments SET bank_payment_id = '{paid_bank_id}' WHERE id = $1"),
        ],
    )
    .await;
    // Several polls of the victim, each answered "Paid" (for the other payment).
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let view = app.get_payment(&m.api_key, &victim.to_string()).await;
        assert_eq!(view["status"], "awaiting_authorization", "{view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let told: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_events WHERE payment_id = $1 AND event_type = 'payment.paid'",
    )
    .bind(victim)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(told, 0, "the merchant was told it was paid");
    assert!(
        app.metrics()
            .await
            .contains("pisgate_ledger_binding_mismatches_total"),
        "counted"
    );
}

async fn wait_for_status(app: &TestApp, key: &str, id: Uuid, status: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let view = app.get_payment(key, &id.to_string()).await;
        if view["status"] == status {
            return view;
        }
        assert!(Instant::now() < until, "never {status}: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Events appended after creation keep the binding: a later bank status and note verify.
#[tokio::test]
async fn a_bound_payment_still_verifies_after_more_events() {
    let (app, _, id) = bound_payment().await;
    let mut tx = app.pool.begin().await.unwrap();
    events::append(&mut tx, id, NewEvent::new("callback"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let report = verify(&app).await;
    assert!(report.is_ok(), "{report:?}");
    let single = events::verify_payment(&app.pool, &ledger_keys(), id)
        .await
        .unwrap();
    assert!(single.is_ok(), "{single:?}");
}

/// The binary: an untouched ledger with a bound payment, a legacy payment and a webhook
/// passes (the legacy one named on stderr), a rewritten amount and an edited payload fail
/// with one line naming them.
#[tokio::test]
async fn ledger_verify_the_command_reports_unbound_rows_and_names_a_rewritten_one() {
    let (app, _, id) = bound_payment().await;
    tamper::paid_payment(&app.pool).await;
    let url = secrecy::ExposeSecret::expose_secret(&app.settings.database.url).to_owned();
    let run = || {
        crate::cli::pisgate()
            .args(["ledger", "verify"])
            .env("PISGATE__DATABASE__URL", &url)
            .env(
                "PISGATE__DATABASE__POOLER",
                app.settings.database.pooler.as_str(),
            )
            .output()
            .unwrap()
    };
    let ok = run();
    let (out, err) = (
        String::from_utf8_lossy(&ok.stdout).into_owned(),
        String::from_utf8_lossy(&ok.stderr).into_owned(),
    );
    assert!(ok.status.success(), "{err}");
    assert!(out.starts_with("ledger ok: 2 payment(s)"), "{out}");
    assert!(out.contains("webhook events ok: 1 checked"), "{out}");
    assert!(
        err.contains("written before binding") && err.contains("1 payment(s)"),
        "{err}"
    );

    as_insider(
        &app,
        id,
        "UPDATE payments SET amount_minor = amount_minor * 100 WHERE id = $1",
    )
    .await;
    let broken = run();
    let err = String::from_utf8_lossy(&broken.stderr).into_owned();
    assert_eq!(broken.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&id.to_string()) && err.contains("row rewritten"),
        "{err}"
    );

    as_insider(
        &app,
        id,
        "UPDATE payments SET amount_minor = amount_minor / 100 WHERE id = $1",
    )
    .await;
    as_insider(
        &app,
        id,
        r#"UPDATE webhook_events SET payload = jsonb_set(payload, '{data,amount}', '"1.00"')
           WHERE payment_id = $1"#,
    )
    .await;
    let broken = run();
    let err = String::from_utf8_lossy(&broken.stderr).into_owned();
    assert_eq!(broken.status.code(), Some(1), "{err}");
    assert!(
        err.contains("webhook event") && err.contains("edited"),
        "{err}"
    );
}

/// The answer an Idempotency-Key replays is bound to the ledger key: an insider who edits it
/// (a phishing authorization_url, another payment's id) or strips its MAC gets a 500 for the
/// retry, never the edited answer and never a second payment; the untouched answer replays
/// byte for byte. An answer whose key was used before the binding (no MAC, first used before
/// the migration) replays as before.
#[tokio::test]
async fn a_replayed_idempotency_answer_is_checked_against_its_ledger_mac() {
    let app = spawn_app().await;
    let m = app.create_merchant("Replay binding shop").await;
    let b = body("FI");
    let post = |key: &'static str| {
        let (app, api_key, b) = (&app, m.api_key.clone(), b.clone());
        async move { app.post_payment(&api_key, key, &b).await }
    };
    let first = post("order-1").await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let mac: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT response_mac FROM idempotency_keys WHERE merchant_id = $1 AND key = 'order-1'",
    )
    .bind(m.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        mac.map(|m| m.len()),
        Some(32),
        "the answer is stored with its MAC"
    );
    let again = post("order-1").await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    let payments = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments WHERE merchant_id = $1")
            .bind(m.id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    for (what, sql) in [
        (
            "a phishing link",
            r#"UPDATE idempotency_keys
               SET response_body = jsonb_set(response_body, '{authorization_url}', '"https://phish.example/pay"')
               WHERE merchant_id = $1 AND key = 'order-1'"#,
        ),
        (
            "the MAC removed",
            "UPDATE idempotency_keys SET response_mac = NULL, response_mac_key_id = NULL
             WHERE merchant_id = $1 AND key = 'order-1'",
        ),
    ] {
        let changed = sqlx::query(sql)
            .bind(m.id)
            .execute(&app.pool)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(changed, 1, "{what}");
        let r = post("order-1").await;
        assert_eq!(r.status(), 500, "{what}");
        let text = r.text().await.unwrap();
        assert!(!text.contains("phish.example"), "{what}: {text}");
        assert_eq!(payments().await, 1, "{what}: never a second payment");
        let report = verify(&app).await;
        assert!(!report.is_ok(), "{what}: {report:?}");
        assert_eq!(report.broken_idempotency_answers, 1, "{what}: {report:?}");
        let first = report.first_broken_idempotency_answer.unwrap();
        assert!(first.contains("order-1"), "{what}: {first}");
    }
    let scrape = app.metrics().await;
    assert!(
        scrape.contains("pisgate_ledger_binding_mismatches_total 2"),
        "{scrape}"
    );

    // An answer whose MAC was removed and whose key was backdated to before answers were
    // bound (an insider planting a phishing link for a merchant's retry) is refused too:
    // answers from before the binding were sealed at that upgrade, so no date exempts one.
    let planted = post("order-2").await;
    assert_eq!(planted.status(), 201);
    sqlx::query(
        r#"UPDATE idempotency_keys
           SET response_body = jsonb_set(response_body, '{authorization_url}', '"https://phish.example/pay"'),
               response_mac = NULL, response_mac_key_id = NULL,
               created_at = '2020-01-01T00:00:00Z'
           WHERE merchant_id = $1 AND key = 'order-2'"#,
    )
    .bind(m.id)
    .execute(&app.pool)
    .await
    .unwrap();
    let r = post("order-2").await;
    assert_eq!(r.status(), 500);
    assert!(!r.text().await.unwrap().contains("phish.example"));
    assert_eq!(payments().await, 2, "never a third payment");
    let report = verify(&app).await;
    assert_eq!(report.idempotency_answers_checked, 2, "{report:?}");
    assert_eq!(report.broken_idempotency_answers, 2, "{report:?}");
}

/// A `payment.paid` webhook event for the merchant without a MAC (as written before the
/// binding, or by an insider).
async fn insert_unsealed_paid_event(db: &sqlx::PgPool, merchant: Uuid) {
    sqlx::query(
        r#"INSERT INTO webhook_events (id, merchant_id, event_type, payload, created_at)
           VALUES ($1, $2, 'payment.paid', '{"type": "payment.paid", "data": {"amount": "10.50"}}', now())"#,
    )
    .bind(Uuid::now_v7())
    .bind(merchant)
    .execute(db)
    .await
    .unwrap();
}

/// A new database with the migrations before `version` applied: the database an upgrade
/// across `version` starts from.
async fn migrated_before(version: i64) -> (String, sqlx::PgPool) {
    let url = crate::helpers::empty_database().await;
    let old = sqlx::PgPool::connect(&url).await.unwrap();
    let before = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            pisgate::ledger::MIGRATOR
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    before.run(&old).await.unwrap();
    (url, old)
}

/// Upgrading a database from before webhook events, idempotency answers, endpoint URLs, API
/// keys and payees were bound: the process that applies those migrations seals the rows already written
/// with the ledger key
/// (the version before sent and replayed them without any), so they verify, are sent and are
/// replayed as every later row, and no row needs an exemption by date.
#[tokio::test]
async fn an_upgrade_across_the_binding_seals_the_rows_written_before_it() {
    use pisgate::ledger::seal::WEBHOOK_EVENTS_BOUND;
    let (url, old) = migrated_before(WEBHOOK_EVENTS_BOUND).await;
    let merchant = Uuid::now_v7();
    sqlx::query("INSERT INTO merchants (id, name) VALUES ($1, 'Old shop')")
        .bind(merchant)
        .execute(&old)
        .await
        .unwrap();
    insert_unsealed_paid_event(&old, merchant).await;
    sqlx::query(
        r#"INSERT INTO idempotency_keys (merchant_id, key, request_hash, response_status,
                                         response_body, expires_at)
           VALUES ($1, 'order-old', '\x00', 201, '{"id": "old"}', now() + interval '1 day')"#,
    )
    .bind(merchant)
    .execute(&old)
    .await
    .unwrap();
    // A key rotated away (in its grace), and one revoked: the revoked one's secret hash is
    // overwritten by the upgrade, the other's end sealed as it stands.
    sqlx::query(
        "INSERT INTO api_keys (key_id, merchant_id, key_hash, expires_at, rotated_away_at)
         VALUES ('0123456789abcdef', $1, sha256('old secret'), now() + interval '1 day', now()),
                ('fedcba9876543210', $1, sha256('revoked secret'), NULL, NULL)",
    )
    .bind(merchant)
    .execute(&old)
    .await
    .unwrap();
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_id = 'fedcba9876543210'")
        .execute(&old)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, key_id, secret)
         VALUES ($1, $2, 'https://old-shop.example/hooks', 'k1', '\\x00')",
    )
    .bind(Uuid::now_v7())
    .bind(merchant)
    .execute(&old)
    .await
    .unwrap();
    // A registered payee (its policy is the default `open`).
    sqlx::query(
        "INSERT INTO merchant_payees (merchant_id, account_type, account)
         VALUES ($1, 'IBAN', 'FI1410093000123458')",
    )
    .bind(merchant)
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let app = crate::helpers::spawn_app_on(
        &url,
        &[("PISGATE__DATABASE__MIGRATE_ON_START", "true")],
        |_| {},
    )
    .await;
    let unsealed: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM webhook_events WHERE payload_mac IS NULL)
              + (SELECT count(*) FROM idempotency_keys WHERE response_mac IS NULL)
              + (SELECT count(*) FROM webhook_endpoints WHERE url_mac IS NULL)
              + (SELECT count(*) FROM api_keys
                  WHERE revoked_at IS NULL AND (key_mac IS NULL OR lifetime_mac IS NULL))
              + (SELECT count(*) FROM merchants WHERE payees_mac IS NULL)
              + (SELECT count(*) FROM merchant_payees WHERE mac IS NULL)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(unsealed, 0);
    let revoked_hash_kept: bool = sqlx::query_scalar(
        "SELECT key_hash = sha256('revoked secret') FROM api_keys
          WHERE key_id = 'fedcba9876543210'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!revoked_hash_kept, "a revoked key kept its secret's hash");
    let report = verify(&app).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.webhook_events_checked, 1, "{report:?}");
    assert_eq!(report.idempotency_answers_checked, 1, "{report:?}");
    assert_eq!(report.webhook_endpoints_checked, 1, "{report:?}");
    assert_eq!(report.api_keys_checked, 1, "{report:?}");
    assert_eq!(
        report.payees_checked, 2,
        "the policy and the payee: {report:?}"
    );
}

/// An upgrade seals only the kinds its own migrations bind. A webhook event without a MAC in
/// a database already past that binding was not written by pisgate (the version before wrote
/// every one with its MAC): the upgrade that binds the payees leaves it refused, and
/// `ledger verify` still names it.
#[tokio::test]
async fn a_later_upgrade_seals_only_the_kinds_it_binds() {
    use pisgate::ledger::seal::PAYEES_BOUND;
    let (url, old) = migrated_before(PAYEES_BOUND).await;
    let merchant = Uuid::now_v7();
    sqlx::query("INSERT INTO merchants (id, name) VALUES ($1, 'Shop')")
        .bind(merchant)
        .execute(&old)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO merchant_payees (merchant_id, account_type, account)
         VALUES ($1, 'IBAN', 'FI1410093000123458')",
    )
    .bind(merchant)
    .execute(&old)
    .await
    .unwrap();
    // An insider's `payment.paid` for the merchant's endpoint, without a MAC.
    insert_unsealed_paid_event(&old, merchant).await;
    // Console operators (one enabled with a session, one disabled), from before operators
    // were bound: both are sealed in their state, so the enabled one signs in and clearing
    // the disabled one's `disabled_at` in SQL enables nobody; the session ends.
    let hash = pisgate::api::console::password::hash(crate::console::PASSWORD).unwrap();
    sqlx::query(
        "INSERT INTO operators (id, email, password_hash, disabled_at)
         VALUES (gen_random_uuid(), $1, $2, NULL), (gen_random_uuid(), 'gone@pisgate.example', $2, now())",
    )
    .bind(crate::console::EMAIL)
    .bind(&hash)
    .execute(&old)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO operator_sessions (token_hash, operator_id, csrf_token, expires_at)
         SELECT sha256('old session'), id, 'csrf', now() + interval '1 hour' FROM operators
          WHERE disabled_at IS NULL",
    )
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let app = crate::helpers::spawn_app_on(
        &url,
        &[("PISGATE__DATABASE__MIGRATE_ON_START", "true")],
        |_| {},
    )
    .await;
    let report = verify(&app).await;
    assert_eq!(report.operators_checked, 2, "{report:?}");
    assert_eq!(report.broken_operators, 0, "{report:?}");
    let (sealed, sessions): (Vec<bool>, i64) = sqlx::query_as(
        "SELECT array_agg(mac IS NOT NULL ORDER BY email DESC),
                (SELECT count(*) FROM operator_sessions)
           FROM operators",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(sealed, [true, true]);
    assert_eq!(sessions, 0, "sessions from before the upgrade end");
    assert_eq!(
        crate::console::sign_in(&app, crate::console::EMAIL, crate::console::PASSWORD)
            .await
            .status(),
        303
    );
    sqlx::query("UPDATE operators SET disabled_at = NULL WHERE email = 'gone@pisgate.example'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        crate::console::sign_in(&app, "gone@pisgate.example", crate::console::PASSWORD)
            .await
            .status(),
        401,
        "re-enabled in SQL"
    );
    assert_eq!(report.payees_checked, 2, "{report:?}");
    assert_eq!(
        report.broken_payees, 0,
        "the payees were sealed: {report:?}"
    );
    assert_eq!(report.broken_webhook_events, 1, "{report:?}");
    assert!(
        report
            .first_broken_webhook_event
            .as_ref()
            .unwrap()
            .reason
            .contains("no ledger MAC"),
        "{report:?}"
    );
}

/// An insider deletes a payment's whole chain and rewrites its row (here: paid), with the
/// head at 0 as if it never had events. No payment is ever without its `created` event, so
/// verify names it; and pisgate never starts a fresh chain under it, which its key would
/// sign (the next step of a deferred payment, e.g. the shopper's bank choice, would
/// otherwise go on to the bank with the rewritten creditor, on a chain that verifies).
#[tokio::test]
async fn a_payment_whose_chain_was_wiped_is_named_by_verify_and_never_signed_again() {
    let (app, _, id) = bound_payment().await;
    as_insider_all(
        &app,
        id,
        &[
            "DELETE FROM payment_events WHERE payment_id = $1",
            "UPDATE payments SET ledger_seq = 0, ledger_head = NULL, status = 'paid',
                                 bank_status = 'Paid' WHERE id = $1",
        ],
    )
    .await;
    let report = verify(&app).await;
    assert!(!report.is_ok(), "{report:?}");
    assert_eq!(
        first_reason(&report, id),
        BreakReason::EventsMissing { head_seq: 0 }
    );
    let mut tx = app.pool.begin().await.unwrap();
    let refused = events::append(&mut tx, id, NewEvent::new("bank_chosen")).await;
    assert!(refused.is_err(), "a fresh chain was started: {refused:?}");
    tx.rollback().await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_events WHERE payment_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// An insider clears the bank id of a payment the bank made (and the shopper may sign), and
/// moves its horizon into the past: to the row, no bank answer was ever recorded, which is
/// what lets the poller expire a payment ("nothing at any bank to sign"). The ledger
/// recorded the answer, so the poller holds it instead, counted for the alert: never
/// `expired` while the bank may pay it.
#[tokio::test]
async fn the_poller_never_expires_a_payment_whose_bank_id_was_cleared_in_sql() {
    let app = spawn_app_full(crate::workers::FAST_POLLER, |_| {}).await;
    let m = app.create_merchant("Binding shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let id: Uuid = p["id"].as_str().unwrap().parse().unwrap();
    assert!(p["bank_payment_id"].is_string(), "{p}");
    as_insider(
        &app,
        id,
        "UPDATE payments SET bank_payment_id = NULL, initiation = 'outcome_unknown',
                authorization_url = NULL, expires_at = now() - interval '2 hours',
                sign_horizon_at = now() - interval '1 hour' WHERE id = $1",
    )
    .await;
    sqlx::query("UPDATE payment_polls SET next_poll_at = now() WHERE payment_id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let view = app.get_payment(&m.api_key, &id.to_string()).await;
        assert_eq!(view["status"], "awaiting_authorization", "{view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let claimed: bool =
        sqlx::query_scalar("SELECT next_poll_at > now() FROM payment_polls WHERE payment_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(claimed, "the poller looked at it and put it off");
    assert!(
        app.metrics()
            .await
            .contains("pisgate_ledger_binding_mismatches_total"),
        "counted"
    );
}

/// An insider clears a payment's bank id and its key's stored answer, so that to the rows
/// no bank answer was ever recorded and the merchant's retry with the same key resumes it.
/// The ledger recorded the answer: the retry starts no second payment at the bank (which
/// the shopper could sign as well as the first).
#[tokio::test]
async fn a_retry_never_initiates_again_a_payment_whose_bank_id_was_cleared_in_sql() {
    let app = spawn_app().await;
    let m = app.create_merchant("Binding shop").await;
    let r = app
        .post_payment(&m.api_key, "order-cleared", &body("FI"))
        .await;
    assert_eq!(r.status(), 201);
    let id: Uuid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    as_insider_all(
        &app,
        id,
        &[
            "UPDATE payments SET bank_payment_id = NULL, initiation = 'outcome_unknown',
                    authorization_url = NULL WHERE id = $1",
            "UPDATE idempotency_keys SET response_status = NULL, response_body = NULL,
                    response_mac = NULL, response_mac_key_id = NULL,
                    locked_until = now() - interval '1 minute'
             WHERE payment_id = $1",
        ],
    )
    .await;
    let retry = app
        .post_payment(&m.api_key, "order-cleared", &body("FI"))
        .await;
    let status = retry.status();
    let answer = retry.text().await.unwrap();
    let (initiated, attempts): (i64, i32) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM payment_events WHERE payment_id = $1 AND kind = 'initiated'),
                initiation_attempts
         FROM payments WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (initiated, attempts),
        (1, 1),
        "a second attempt went to the bank ({status}: {answer})"
    );
}

/// The shopper's link a merchant is given (`authorization_url`, pisgate's hop) is built from
/// the server's own public URL, the payment's id and its hop token, never read back from the
/// payment row: a link rewritten in SQL to a phishing page is shown by neither the payment
/// nor the list. Before, both showed the row's `authorize_url` as it stood.
#[tokio::test]
async fn a_hop_link_rewritten_in_sql_is_never_shown_to_the_merchant() {
    let app = spawn_app().await;
    let m = app.create_merchant("Binding shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let id: Uuid = p["id"].as_str().unwrap().parse().unwrap();
    let link = p["authorization_url"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with(&format!("{}/authorize/{id}?t=", app.address)),
        "{link}"
    );
    as_insider(
        &app,
        id,
        "UPDATE payments SET authorize_url = 'https://phish.example/authorize/' || $1::text || '?t=x' WHERE id = $1",
    )
    .await;
    let shown = app.get_payment(&m.api_key, &id.to_string()).await;
    assert_eq!(shown["authorization_url"], link.as_str(), "{shown}");
    let listed = crate::webhooks::get_json(&app, "/v1/payments", &m.api_key).await;
    assert_eq!(listed["data"][0]["id"], id.to_string(), "{listed}");
    assert_eq!(
        listed["data"][0]["authorization_url"],
        link.as_str(),
        "{listed}"
    );
    // The link still leads the shopper to the bank.
    let r = continue_to_bank(&app.client, &link).await;
    assert!(r.status().is_redirection(), "{}", r.status());
}

/// A cancel request is bound to the ledger (`cancel_requested` and its `by`). An insider who
/// clears a merchant's cancel (pisgate would no longer stop the payment, and the merchant
/// would hear `paid` for an order it cancelled), sets one nobody made, or moves a request
/// from one party to the other (the merchant's alone lets pisgate delete a signed payment at
/// the bank) is named by `ledger verify` and by the console's check of that payment. A
/// payment cancelled by its merchant or its shopper and left alone verifies, and so does a
/// chain from before the columns (its unkeyed cancel event alone, without `by`).
#[tokio::test]
async fn a_cancel_request_edited_in_sql_is_named_by_ledger_verify() {
    let app = spawn_app().await;
    let m = app.create_merchant("Binding shop").await;
    let mut ids = Vec::new();
    let mut links = Vec::new();
    for _ in 0..6 {
        let p = app.create_payment(&m.api_key, &body("FI")).await;
        ids.push(p["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        links.push(p["authorization_url"].as_str().unwrap().to_owned());
    }
    let [cleared, set, handed, taken, by_merchant, by_shopper] = ids[..] else {
        unreachable!()
    };
    for id in [cleared, handed, by_merchant] {
        let r = crate::truth::cancel(&app, &m.api_key, &id.to_string()).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    for (id, link) in ids.iter().zip(&links) {
        if [taken, by_shopper].contains(id) {
            let r = crate::consent::press_cancel(&app, link).await;
            assert!(r.status().is_redirection(), "{}", r.status());
        }
    }
    // From before the columns: a cancel event alone, without `by`, in an unkeyed chain
    // (version 1, as written then).
    let legacy = tamper::insert_payment(&app.pool).await;
    tamper::append(&app.pool, legacy, NewEvent::new("created")).await;
    tamper::append(&app.pool, legacy, NewEvent::new("cancel_requested")).await;
    tamper::rechain_unkeyed(&app.pool, legacy).await;
    crate::helpers::assert_ledger_verifies(&app.pool).await;
    // The same event signed with the key, its row without the request: an insider's clear of
    // a chain written after the columns and before the binding (no facts) is held.
    let keyed = tamper::insert_payment(&app.pool).await;
    tamper::append(&app.pool, keyed, NewEvent::new("created")).await;
    tamper::append(&app.pool, keyed, NewEvent::new("cancel_requested")).await;

    for (id, edit) in [
        (
            cleared,
            "UPDATE payments SET cancel_requested_at = NULL, cancel_requested_by = NULL WHERE id = $1",
        ),
        (
            set,
            "UPDATE payments SET cancel_requested_at = now(), cancel_requested_by = 'merchant' WHERE id = $1",
        ),
        (
            handed,
            "UPDATE payments SET cancel_requested_by = 'shopper' WHERE id = $1",
        ),
        (
            taken,
            "UPDATE payments SET cancel_requested_by = 'merchant' WHERE id = $1",
        ),
    ] {
        as_insider(&app, id, edit).await;
    }

    let keys = crate::helpers::ledger_keys();
    let report = events::verify_all(&app.pool, &keys).await.unwrap();
    assert_eq!(report.broken_payments, 5, "{report:?}");
    let unkeyed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payment_events WHERE payment_id = $1 AND hash_version = 1",
    )
    .bind(legacy)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(unkeyed, 2, "the legacy chain is unkeyed");
    let expected = [
        (
            cleared,
            None,
            Some("merchant"),
            "the payment row says nobody asked to cancel, its ledger says the merchant asked to cancel",
        ),
        (
            set,
            Some("merchant"),
            None,
            "the payment row says the merchant asked to cancel, its ledger says nobody asked to cancel",
        ),
        (
            handed,
            Some("shopper"),
            Some("merchant"),
            "the payment row says the shopper asked to cancel, its ledger says the merchant asked to cancel",
        ),
        (
            taken,
            Some("merchant"),
            Some("shopper"),
            "the payment row says the merchant asked to cancel, its ledger says the shopper asked to cancel",
        ),
        (
            keyed,
            None,
            Some("merchant"),
            "the payment row says nobody asked to cancel, its ledger says the merchant asked to cancel",
        ),
    ];
    for (id, row, ledger, text) in expected {
        let one = events::verify_payment(&app.pool, &keys, id).await.unwrap();
        let broken = one
            .first_broken
            .expect("an edited cancel request went unnoticed");
        assert_eq!(
            broken.reason,
            BreakReason::CancelMismatch {
                payment: row.map(str::to_owned),
                ledger: ledger.map(str::to_owned),
            },
            "{broken}"
        );
        assert!(broken.to_string().contains(text), "{broken}");
    }
    for id in [by_merchant, by_shopper, legacy] {
        let one = events::verify_payment(&app.pool, &keys, id).await.unwrap();
        assert!(one.first_broken.is_none(), "{one:?}");
    }
}
