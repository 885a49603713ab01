//! Truth at the late-signing horizon (issue 22, items 1 and 7): pisgate never finalizes a
//! payment on its own inference. At the horizon it asks the bank to delete a payment that
//! still shows nothing signed, and only the bank's answer decides; a shopper's late return is
//! still exchanged; a final status a later bank read contradicts is kept, counted, recorded
//! and shown; and a flood of error callbacks reads the bank once. Against the real Postgres
//! and the Nordea sandbox (whose bulk delete refuses a payment whose confirmation is still
//! running and one signed by another shopper, and deletes one nobody signed).

use crate::console::{EMAIL, PASSWORD, create_operator, get, session_cookie};
use crate::helpers::{TestApp, TestMerchant};
use crate::truth::{
    app_with, assert_agrees_with_the_bank, create, follow, ledger_kinds, location, press,
    reach_bank_page, status_of, sweep, until, wait_status, webhooks_of,
};
use pisgate::sandbox::{BankStatus, Operation};
use serde_json::Value;
use std::time::Duration;

async fn horizon_of(app: &TestApp, id: &str) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("SELECT sign_horizon_at FROM payments WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn sleep_until(at: chrono::DateTime<chrono::Utc>) {
    let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
}

/// A shopper who signs at the bank and comes back: pisgate then holds a live token of the
/// app (what the horizon's delete is sent with).
async fn a_shopper_comes_back(app: &TestApp, m: &TestMerchant, psu: &str) -> String {
    let (id, url) = create(app, m, "SE").await;
    let action = reach_bank_page(app, &url).await;
    let back = follow(app, &press(app, &action, psu, true).await).await;
    assert_eq!(back.status(), 303);
    until("the shopper's token", Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM psu_tokens WHERE status = 'live'")
            .fetch_one(&app.pool)
            .await
            .unwrap()
            > 0
    })
    .await;
    id
}

/// The bank's id of payment `id`.
async fn bank_id_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT bank_payment_id FROM payments WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn events_of(app: &TestApp, id: &str, kind: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT detail FROM payment_events WHERE payment_id = $1::uuid AND kind = $2 ORDER BY seq",
    )
    .bind(id)
    .bind(kind)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_shopper_who_signs_just_before_the_horizon_and_never_returns_ends_paid_not_expired() {
    // The outside tester's numbers: window 3 s, horizon 6 s, the bank confirms 8 s after
    // the signature (and shows PendingUserApproval until then).
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "3"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "6"),
        ],
        true,
        |c| {
            c.confirm_delay = Duration::from_millis(8000);
            c.paid_delay = Duration::from_millis(500);
        },
    )
    .await;
    let m = app.create_merchant("Shop").await;
    // A returning customer: pisgate holds a live token of the app, so at the horizon it can
    // ask the bank to delete the payment (and the bank refuses: it is being confirmed).
    a_shopper_comes_back(&app, &m, "psu-late").await;
    let (id, url) = create(&app, &m, "FI").await;
    let action = reach_bank_page(&app, &url).await;
    sleep_until(horizon_of(&app, &id).await - chrono::Duration::milliseconds(1500)).await;
    // Approves 1.5 s before the horizon and closes the tab: the callback is never followed.
    press(&app, &action, "psu-late", true).await;
    sleep_until(horizon_of(&app, &id).await + chrono::Duration::seconds(2)).await;
    assert_eq!(
        status_of(&app, &id).await,
        "awaiting_authorization",
        "the horizon alone expires nothing"
    );
    wait_status(&app, &id, "paid", Duration::from_secs(30)).await;
    assert_eq!(
        webhooks_of(&app, &id).await,
        ["payment.authorized", "payment.paid"]
    );
    let kinds = ledger_kinds(&app, &id).await;
    assert!(
        kinds.contains(&"horizon_delete_refused".to_owned()),
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"expired".to_owned()), "{kinds:?}");
    assert_agrees_with_the_bank(&app).await;
}

#[tokio::test]
async fn an_unsigned_payment_expires_only_when_the_bank_confirms_it_deleted_it() {
    let (app, m, id) = opened_and_past_the_horizon(&[], 2).await;
    // Nothing to ask the bank with yet (no live token): the horizon alone proves nothing.
    assert_eq!(status_of(&app, &id).await, "awaiting_authorization");
    assert_eq!(app.bank_calls(Operation::Cancel), 0);
    // Once pisgate can ask, the bank deletes it, and that is the proof.
    a_shopper_comes_back(&app, &m, "psu-other").await;
    wait_status(&app, &id, "expired", Duration::from_secs(10)).await;
    assert!(app.bank_calls(Operation::Cancel) >= 1);
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["bank_status"], "Cancelled");
    assert_eq!(p["failure"]["code"], "not_signed");
    assert_eq!(webhooks_of(&app, &id).await, ["payment.expired"]);
    let expired = events_of(&app, &id, "expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["proof"], "deleted_at_bank");
    let at_bank = app.bank_payments_for(&id);
    assert_eq!(at_bank.len(), 1);
    assert_eq!(at_bank[0].status, BankStatus::Cancelled);
    // Its link no longer signs at the bank either.
    assert_agrees_with_the_bank(&app).await;
}

#[tokio::test]
async fn a_final_status_the_bank_later_contradicts_is_kept_counted_recorded_and_shown() {
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "2"),
            ("PISGATE__POLLER__AFTER_FINAL_INTERVAL", "700ms"),
        ],
        true,
        |_| {},
    )
    .await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Shop").await;
    a_shopper_comes_back(&app, &m, "psu-other").await;
    let (id, url) = create(&app, &m, "NO").await;
    reach_bank_page(&app, &url).await;
    wait_status(&app, &id, "expired", Duration::from_secs(15)).await;
    // The bank then says Paid (a bank fault, or a deletion it did not really make).
    let bank_id = bank_id_of(&app, &id).await;
    assert!(app.sandbox.force_status(&bank_id, Some(BankStatus::Paid)));
    // One of the few reads after the final status sees it.
    until("the disagreement", Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM bank_disagreements WHERE payment_id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
            > 0
    })
    .await;
    // The reads run out, then the payment leaves the schedule.
    until(
        "the reads after final to end",
        Duration::from_secs(10),
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM payment_polls WHERE payment_id = $1::uuid",
            )
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
                == 0
        },
    )
    .await;
    // Neither side overwritten: the final status stays, the bank's word stands beside it.
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["status"], "expired");
    assert_eq!(p["bank_status"], "Paid");
    assert_eq!(webhooks_of(&app, &id).await, ["payment.expired"]);
    let (status, bank_status, seen): (String, String, i32) = sqlx::query_as(
        "SELECT status, bank_status, seen FROM bank_disagreements WHERE payment_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), bank_status.as_str()), ("expired", "Paid"));
    assert!(seen >= 1);
    // Recorded once in the chain and counted once, however often it is seen again.
    let recorded = events_of(&app, &id, "bank_disagreement").await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["bank_status"], "Paid");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("# HELP pisgate_bank_disagreements_total"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pisgate_bank_disagreements_total") && l.ends_with(" 1")),
        "{metrics}"
    );
    // On the operator console's attention page.
    let cookie = session_cookie(&app).await;
    let (code, html) = get(&app, "/console/attention", &cookie).await;
    assert_eq!(code, 200);
    assert!(html.contains("disagrees with the bank"), "{html}");
    assert!(html.contains(&id), "{html}");
    // The sweep sees exactly this one.
    let wrong = sweep(&app).await;
    assert_eq!(wrong.len(), 1, "{wrong:#?}");
    assert!(wrong[0].contains("pisgate says expired"), "{wrong:#?}");
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

/// How often the poller held a payment because its bank reference failed its ledger MAC.
async fn held_polls(app: &TestApp) -> u64 {
    app.metrics()
        .await
        .lines()
        .find(|l| l.starts_with("pisgate_polls_total{outcome=\"bank_ref_refused\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// An insider breaks the bank reference of a payment pisgate ended `expired` while its link
/// was out, so that the reads after the final status (which catch a bank that pays it
/// after all) cannot be made. They are held, not used up: once the reference is sealed
/// again the bank's `Paid` is seen and recorded as a disagreement.
#[tokio::test]
async fn reads_after_the_final_status_wait_while_the_bank_reference_is_refused() {
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "2"),
            ("PISGATE__POLLER__AFTER_FINAL_INTERVAL", "300ms"),
        ],
        true,
        |_| {},
    )
    .await;
    let m = app.create_merchant("Shop").await;
    a_shopper_comes_back(&app, &m, "psu-other").await;
    let (id, url) = create(&app, &m, "NO").await;
    reach_bank_page(&app, &url).await;
    wait_status(&app, &id, "expired", Duration::from_secs(15)).await;
    let (bank_id, mac, mac_key): (String, Vec<u8>, String) = sqlx::query_as(
        "SELECT bank_payment_id, bank_links_mac, bank_links_mac_key_id FROM payments
          WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let set_mac = |mac: Option<Vec<u8>>| {
        let (pool, id) = (app.pool.clone(), id.clone());
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("ALTER TABLE payments DISABLE TRIGGER USER")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("UPDATE payments SET bank_links_mac = $2 WHERE id = $1::uuid")
                .bind(&id)
                .bind(mac)
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("ALTER TABLE payments ENABLE TRIGGER USER")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    set_mac(Some(vec![0; 32])).await;
    assert!(app.sandbox.force_status(&bank_id, Some(BankStatus::Paid)));
    let reads_left = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT final_reads_left FROM payment_polls WHERE payment_id = $1::uuid",
        )
        .bind(&id)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
    };
    let before = reads_left()
        .await
        .expect("reads after the final status are left");
    // Many polls' worth of time (reads 300 ms apart would all be used up in 1 s).
    let held = held_polls(&app).await;
    until(
        "the poller to hold it a few times",
        Duration::from_secs(10),
        || async { held_polls(&app).await >= held + 4 },
    )
    .await;
    // One read claimed before the tamper may have been made (and counted); no other.
    let left = reads_left().await.expect("the reads were used up");
    assert!(left >= (before - 1).max(1), "{left} of {before} left");
    let seen = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM bank_disagreements WHERE payment_id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    assert_eq!(
        seen().await,
        0,
        "the bank was read through a refused reference"
    );
    // Sealed again (an operator's fix): the held read goes ahead and sees the bank's word.
    set_mac(Some(mac)).await;
    assert_eq!(
        sqlx::query_scalar::<_, String>(
            "SELECT bank_links_mac_key_id FROM payments WHERE id = $1::uuid"
        )
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap(),
        mac_key
    );
    sqlx::query("UPDATE payment_polls SET next_poll_at = now() WHERE payment_id = $1::uuid")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    until("the disagreement", Duration::from_secs(10), || async {
        seen().await > 0
    })
    .await;
    assert_eq!(status_of(&app, &id).await, "expired");
}

#[tokio::test]
async fn a_shopper_who_returns_after_the_horizon_is_still_exchanged() {
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "3"),
        ],
        true,
        |c| {
            c.confirm_delay = Duration::from_secs(6);
            c.paid_delay = Duration::from_millis(500);
        },
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "FI").await;
    let action = reach_bank_page(&app, &url).await;
    let horizon = horizon_of(&app, &id).await;
    sleep_until(horizon - chrono::Duration::milliseconds(500)).await;
    let callback = press(&app, &action, "psu-slow", true).await;
    // The shopper's browser brings them back only after the horizon (and after its
    // state's expiry): the bank has not confirmed the payment unsignable, so it counts.
    sleep_until(horizon + chrono::Duration::seconds(1)).await;
    assert_eq!(status_of(&app, &id).await, "awaiting_authorization");
    let back = follow(&app, &callback).await;
    assert_eq!(back.status(), 303, "{}", location(&back));
    assert!(
        location(&back).contains(&format!("payment_id={id}")),
        "{}",
        location(&back)
    );
    assert_eq!(
        app.bank_calls(Operation::Token),
        1,
        "the code was exchanged"
    );
    until("the token stored", Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, Option<String>>("SELECT psu_key FROM payments WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let kinds = ledger_kinds(&app, &id).await;
    assert!(
        !kinds.contains(&"callback_rejected".to_owned()),
        "{kinds:?}"
    );
    wait_status(&app, &id, "paid", Duration::from_secs(20)).await;
    assert_eq!(
        webhooks_of(&app, &id).await,
        ["payment.authorized", "payment.paid"]
    );
    assert_agrees_with_the_bank(&app).await;
}

#[tokio::test]
async fn many_parallel_error_callbacks_read_the_bank_once_and_answer_the_same_redirect() {
    // No poller: every status read is the callbacks'.
    let app = app_with(&[], false, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "SE").await;
    reach_bank_page(&app, &url).await;
    let state = app.bank_payments_for(&id)[0].state.clone();
    let callback = app.url(&format!(
        "/v1/callbacks/nordea?state={state}&error=access_denied&error_description=cancelled"
    ));
    let before = app.bank_calls(Operation::Status);
    let answers = futures_util::future::join_all((0..40).map(|_| {
        let (client, callback) = (app.client.clone(), callback.clone());
        async move { client.get(&callback).send().await.unwrap() }
    }))
    .await;
    let reads = app.bank_calls(Operation::Status) - before;
    assert_eq!(reads, 1, "one bank read for 40 error callbacks");
    let locations: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status(), 303);
            location(r)
        })
        .collect();
    assert_eq!(locations.len(), 1, "{locations:?}");
    assert_eq!(events_of(&app, &id, "callback_error").await.len(), 1);
    assert_eq!(status_of(&app, &id).await, "awaiting_authorization");
}

/// An `error` or `error_description` holding NUL (anyone can type one) failed the jsonb note
/// recording it, and the bank's status was then never read. The hint is now kept without
/// control characters, and the bank is read as for any other error callback.
#[tokio::test]
async fn an_error_callback_with_control_characters_is_noted_without_them_and_reads_the_bank() {
    let app = app_with(&[], false, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "SE").await;
    reach_bank_page(&app, &url).await;
    let state = app.bank_payments_for(&id)[0].state.clone();
    let callback = app.url(&format!(
        "/v1/callbacks/nordea?state={state}&error=access%00denied&error_description=can%0Acelled%00"
    ));
    let before = app.bank_calls(Operation::Status);
    let r = follow(&app, &callback).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        app.bank_calls(Operation::Status) - before,
        1,
        "the bank's status was read"
    );
    assert_eq!(
        events_of(&app, &id, "callback_error").await,
        [serde_json::json!({ "error": "accessdenied", "error_description": "cancelled" })]
    );
}

/// Past the horizon with no token of this shopper to ask the bank with, the payment is
/// followed to the bank's own word: its approval timeout ends it `expired`.
#[tokio::test]
async fn without_the_shoppers_token_the_banks_own_timeout_ends_it() {
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "2"),
            ("PISGATE__POLLER__LATE_SIGNING_INTERVAL", "500ms"),
        ],
        true,
        |c| c.approval_timeout = Some(Duration::from_secs(5)),
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "DK").await;
    reach_bank_page(&app, &url).await;
    wait_status(&app, &id, "expired", Duration::from_secs(20)).await;
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["bank_status"], "UserApprovalTimeout");
    assert_eq!(
        app.bank_calls(Operation::Cancel),
        0,
        "no other shopper's token was used"
    );
}

/// The resilience drill's stuck payment: a shopper went through pisgate's hop (so was handed
/// the bank's link) but never opened it at the bank (their connection died with the replica
/// that answered the hop), and pisgate holds no token of theirs. The bank answers 404 for a
/// payment nobody opened, before and after its own approval timeout, so it never reports
/// UserApprovalTimeout. Once the time the bank gives to sign (`nordea.approval_timeout_secs`,
/// counted from the bank's answer to the initiation) has run out with the bank still showing
/// nothing, the link refuses and nobody can sign it: `expired`, never before, and never on the
/// horizon alone.
#[tokio::test]
async fn a_link_handed_out_but_never_opened_at_the_bank_expires_once_the_banks_time_to_sign_ran_out()
 {
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "2"),
            ("PISGATE__POLLER__LATE_SIGNING_INTERVAL", "500ms"),
            ("PISGATE__NORDEA__APPROVAL_TIMEOUT_SECS", "5"),
        ],
        true,
        |c| c.approval_timeout = Some(Duration::from_secs(5)),
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "DK").await;
    // Through the hop (the link is handed out), but the bank's page is never loaded.
    let hop = crate::helpers::continue_to_bank(&app.client, &url).await;
    assert_eq!(hop.status(), 303, "the hop leads to the bank");
    let answered: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT created_at FROM payment_events WHERE payment_id = $1::uuid AND kind = 'initiated'",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // Past the horizon, within the bank's time to sign: the shopper may still open the link.
    sleep_until(horizon_of(&app, &id).await + chrono::Duration::milliseconds(1500)).await;
    assert_eq!(
        status_of(&app, &id).await,
        "awaiting_authorization",
        "the horizon alone expires nothing"
    );
    wait_status(&app, &id, "expired", Duration::from_secs(20)).await;
    assert!(
        chrono::Utc::now() >= answered + chrono::Duration::seconds(5),
        "expired only once the bank's time to sign ran out"
    );
    let expired = events_of(&app, &id, "expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["proof"], "bank_time_ran_out_unopened");
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["failure"]["code"], "not_signed");
    assert_eq!(webhooks_of(&app, &id).await, ["payment.expired"]);
    assert_eq!(
        app.bank_calls(Operation::Cancel),
        0,
        "no other shopper's token was used"
    );
    let at_bank = app.bank_payments_for(&id);
    assert_eq!(at_bank.len(), 1);
    assert!(!at_bank[0].exists_at_bank, "nobody opened it at the bank");
    assert_eq!(at_bank[0].status, BankStatus::UserApprovalTimeout);
    assert_agrees_with_the_bank(&app).await;
}

/// The horizon's DELETE goes out under a renewed lease, never from a claim whose lease ran
/// out. While every status read outlasts the poller's lease (each claim runs out and the
/// payment is claimed again while it reads), no DELETE is sent: before, each ran-out claim
/// sent one, the bank deleted, the answer was dropped as "lease lost", and a later read of
/// the bank's Cancelled made it a cancel at the bank. Once reads are quick again, a claim
/// deletes and records it: `expired`, `deleted_at_bank`.
#[tokio::test]
async fn a_claim_whose_lease_ran_out_never_sends_the_horizons_delete() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, m, id) = opened_and_past_the_horizon(&[("PISGATE__POLLER__LEASE", "2s")], 1).await;
    assert_eq!(status_of(&app, &id).await, "awaiting_authorization");
    app.sandbox.add_fault(FaultRule::always(
        FaultTarget::Status,
        Fault::Latency { ms: 2_600 },
    ));
    a_shopper_comes_back(&app, &m, "psu-other").await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        app.bank_calls(Operation::Cancel),
        0,
        "no DELETE from a claim whose lease ran out"
    );
    assert_eq!(status_of(&app, &id).await, "awaiting_authorization");
    app.sandbox.clear_faults();
    wait_status(&app, &id, "expired", Duration::from_secs(20)).await;
    let expired = events_of(&app, &id, "expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["proof"], "deleted_at_bank");
    assert_eq!(webhooks_of(&app, &id).await, ["payment.expired"]);
    assert_agrees_with_the_bank(&app).await;
}

/// An app (signing window 1 s, horizon 3 s, `extra` settings) with a DK payment whose
/// shopper reached the bank's page (so holds its link) and never signed, `after` seconds
/// past its late-signing horizon.
async fn opened_and_past_the_horizon(
    extra: &[(&'static str, &'static str)],
    after: i64,
) -> (TestApp, TestMerchant, String) {
    let mut settings = vec![
        ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
        ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "3"),
    ];
    settings.extend_from_slice(extra);
    let app = app_with(&settings, true, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "DK").await;
    reach_bank_page(&app, &url).await;
    sleep_until(horizon_of(&app, &id).await + chrono::Duration::seconds(after)).await;
    (app, m, id)
}

/// The shopper signs and comes back while the poller's read at the horizon is on its way:
/// the claim read the payment before the return, so its facts said "nobody came back". The
/// DELETE is decided again in the statement that renews the claim before it is sent: a
/// shopper who came back since (a code exchanged) gets none, and the payment is followed to
/// the bank's word. Before, the DELETE went out with the token of that very return.
#[tokio::test]
async fn a_shopper_who_comes_back_while_the_horizons_read_runs_gets_no_delete() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    // The first poll comes 6 s after creation, past the horizon (3 s).
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "3"),
            ("PISGATE__POLLER__SIGNING_INTERVAL", "6s"),
            ("PISGATE__POLLER__LATE_SIGNING_INTERVAL", "6s"),
        ],
        true,
        |_| {},
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "DK").await;
    let action = reach_bank_page(&app, &url).await;
    // That first status read answers 2.5 s late.
    app.sandbox.add_fault(
        FaultRule::always(FaultTarget::Status, Fault::DelayAnswer { ms: 2_500 }).times(1),
    );
    until(
        "the horizon's read started",
        Duration::from_secs(20),
        || async { app.sandbox.faults().iter().all(|f| f.times == Some(0)) },
    )
    .await;
    let back = follow(&app, &press(&app, &action, "psu-back", true).await).await;
    assert_eq!(back.status(), 303);
    let returned: bool =
        sqlx::query_scalar("SELECT psu_key IS NOT NULL FROM payments WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(returned, "the code was exchanged while the read ran");
    assert!(chrono::Utc::now() > horizon_of(&app, &id).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        app.bank_calls(Operation::Cancel),
        0,
        "no DELETE for a shopper who came back"
    );
    assert_ne!(status_of(&app, &id).await, "expired");
}

/// The bank deletes the payment at the horizon's DELETE, but its answer never reaches
/// pisgate (the connection drops after the bank acted; a stopped replica or a failed write
/// loses it the same way). The DELETE was noted before it went out, so the next read of the
/// bank's Cancelled is that deletion: `expired` (not signed), as the answer would have made
/// it, never a cancel at the bank. Before, it ended `cancelled`, `cancelled_at_bank`.
#[tokio::test]
async fn a_horizon_delete_whose_answer_is_lost_still_ends_expired() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, m, id) = opened_and_past_the_horizon(&[], 1).await;
    app.sandbox
        .add_fault(FaultRule::always(FaultTarget::Cancel, Fault::DropAfterProcessing).times(1));
    a_shopper_comes_back(&app, &m, "psu-other").await;
    wait_status(&app, &id, "expired", Duration::from_secs(20)).await;
    assert_eq!(
        app.sandbox.faults()[0].times,
        Some(0),
        "the answer was lost"
    );
    assert_eq!(app.bank_calls(Operation::Cancel), 1, "one DELETE");
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["failure"]["code"], "not_signed");
    assert_eq!(p["bank_status"], "Cancelled");
    let requested = events_of(&app, &id, "horizon_delete_requested").await;
    assert_eq!(requested.len(), 1);
    let expired = events_of(&app, &id, "expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["proof"], "deleted_at_bank");
    assert_eq!(webhooks_of(&app, &id).await, ["payment.expired"]);
    assert_agrees_with_the_bank(&app).await;
}

/// The horizon's DELETE is answered 429 (the bank did not act on it), and the bank then
/// cancels the payment on its own: that is the bank's cancel (`cancelled`,
/// `cancelled_at_bank`), never taken for the DELETE's deletion. The DELETE's request and
/// that it was not taken are both in the ledger.
#[tokio::test]
async fn a_horizon_delete_the_bank_did_not_take_never_makes_a_later_cancel_an_expiry() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, m, id) = opened_and_past_the_horizon(&[], 1).await;
    app.sandbox.add_fault(
        FaultRule::always(
            FaultTarget::Cancel,
            Fault::Http429 {
                retry_after_secs: 2,
            },
        )
        .times(1),
    );
    a_shopper_comes_back(&app, &m, "psu-other").await;
    until(
        "the DELETE answered 429",
        Duration::from_secs(20),
        || async { app.sandbox.faults()[0].times == Some(0) },
    )
    .await;
    let bank_id = bank_id_of(&app, &id).await;
    assert!(
        app.sandbox
            .force_status(&bank_id, Some(BankStatus::Cancelled))
    );
    wait_status(&app, &id, "cancelled", Duration::from_secs(20)).await;
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["failure"]["code"], "cancelled_at_bank", "{p}");
    let kinds = ledger_kinds(&app, &id).await;
    let requested = kinds.iter().position(|k| k == "horizon_delete_requested");
    let not_taken = kinds.iter().position(|k| k == "horizon_delete_not_taken");
    assert!(requested.is_some() && requested < not_taken, "{kinds:?}");
    assert!(!kinds.contains(&"expired".to_owned()), "{kinds:?}");
}

/// Clears, as an insider, the row's record that the payment's link went out.
async fn clear_hop_opened(app: &TestApp, id: &str) {
    crate::binding::as_insider(
        app,
        id.parse().unwrap(),
        "UPDATE payments SET hop_opened_at = NULL WHERE id = $1",
    )
    .await;
}

/// Whether `ledger verify` names payment `id` for a cleared `hop_opened_at`.
async fn verify_names_hop_cleared(app: &TestApp, id: &str) -> bool {
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    report.first_broken.is_some_and(|b| {
        b.payment_id.to_string() == id
            && b.reason == pisgate::ledger::events::BreakReason::HopOpenedCleared
    })
}

/// The shopper reached the bank's page (the ledger's `authorization_opened`), then an insider
/// cleared the row's `hop_opened_at`: past the horizon pisgate still takes the link as out,
/// so with nothing to ask the bank with it waits for the bank's word instead of expiring the
/// payment as "link never handed out" (the bank could still be paying it); once it can ask,
/// the bank deletes it. `ledger verify` names the row. Before, the horizon expired it at once
/// with no bank call.
#[tokio::test]
async fn a_hop_opened_at_cleared_in_sql_never_expires_a_payment_whose_link_went_out() {
    let app = crate::truth::app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "3"),
        ],
        true,
        |_| {},
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "DK").await;
    reach_bank_page(&app, &url).await;
    clear_hop_opened(&app, &id).await;
    assert!(verify_names_hop_cleared(&app, &id).await);
    sleep_until(horizon_of(&app, &id).await + chrono::Duration::seconds(2)).await;
    assert_eq!(status_of(&app, &id).await, "awaiting_authorization");
    assert!(events_of(&app, &id, "expired").await.is_empty());
    a_shopper_comes_back(&app, &m, "psu-other").await;
    wait_status(&app, &id, "expired", Duration::from_secs(10)).await;
    let expired = events_of(&app, &id, "expired").await;
    assert_eq!(expired[0]["proof"], "deleted_at_bank");
    assert!(app.bank_calls(Operation::Cancel) >= 1);
}

/// The same insider edit does not turn a merchant's cancel into a local one: the bank
/// decides (202), as for any payment whose link went out. Before, the cancel ended it
/// `cancelled` at once (200) while the shopper could still sign at the bank.
#[tokio::test]
async fn a_hop_opened_at_cleared_in_sql_leaves_a_merchants_cancel_to_the_bank() {
    let app = crate::truth::app_with(&[], false, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "FI").await;
    reach_bank_page(&app, &url).await;
    clear_hop_opened(&app, &id).await;
    let r = crate::truth::cancel(&app, &m.api_key, &id).await;
    assert_eq!(r.status(), 202);
    assert_ne!(status_of(&app, &id).await, "cancelled");
}
