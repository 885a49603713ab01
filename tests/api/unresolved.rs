//! An operator reconciles a payment whose initiation answer was lost at a bank that may
//! execute it without the shopper (the Berlin Group simulator): from the console, against
//! the real service, the simulator and Postgres. The bank's payment is attached only when the
//! bank holds it with this payment's terms and no other payment holds it; the payment is
//! then followed to the bank's final word. Or it is ended `failed` on the bank's word that it
//! made none. Both need evidence and are audited.

use crate::berlin_group::{berlin_payment, spawn_with_berlin};
use crate::console::{EMAIL, PASSWORD, act, audit_actions, create_operator, get, post_action};
use crate::helpers::TestApp;
use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
use serde_json::Value;
use std::time::Duration;

/// Posts an action form once, without `confirm`: the confirmation page, or the refusal.
async fn ask(app: &TestApp, cookie: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let r = post_action(app, cookie, fields).await;
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn bank_id_of(app: &TestApp, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT bank_payment_id FROM payments WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn the_only_payment_since(app: &TestApp, known: &[String]) -> String {
    let ids: Vec<String> = sqlx::query_scalar("SELECT id::text FROM payments")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let new: Vec<String> = ids.into_iter().filter(|i| !known.contains(i)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new[0].clone()
}

/// The simulator's id of the payment it holds for `amount` with `message` from `debtor`.
fn sim_id(bank: &crate::berlin_group::BgBank, amount: &str, message: &str, debtor: &str) -> String {
    let all = bank.sandbox.payments();
    let found: Vec<&Value> = all
        .iter()
        .filter(|p| {
            p["body"]["instructedAmount"]["amount"] == amount
                && p["body"]["remittanceInformationUnstructured"] == message
                && p["body"]["debtorAccount"]["iban"] == debtor
        })
        .collect();
    assert_eq!(found.len(), 1, "{all:?}");
    found[0]["id"].as_str().unwrap().to_owned()
}

async fn status_becomes(app: &TestApp, key: &str, id: &str, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let p = app.get_payment(key, id).await;
        if p["status"] == want {
            return p;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {want}: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn kinds(app: &TestApp, id: &str) -> Vec<(String, Value)> {
    sqlx::query_as(
        "SELECT kind, detail FROM payment_events WHERE payment_id = $1::uuid ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Two initiations whose answers were lost (an exempted one, 77.09, the bank executes by
/// itself; a redirect one, 10.00, the merchant cancels meanwhile) and one recorded: the
/// operator's attachment is refused for an id the bank does not hold, a payment of another
/// amount, an id another payment holds, a malformed id or missing evidence, each naming
/// why, with nothing changed. The right id is shown as the bank holds it, attached, bound in
/// the ledger, and followed: the exempted payment to `paid` (a same-key retry then answers
/// it, no second payment at the bank), the cancelled one deleted at the bank (`cancelled`).
#[tokio::test]
async fn an_operator_attaches_the_banks_payment_only_when_it_is_this_payment_and_it_is_followed() {
    let (app, bank) = spawn_with_berlin(&[]).await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Initiate, Fault::DropAfterProcessing).times(4),
    ]);
    let m = app.create_merchant("Shop").await;
    let first = app
        .post_payment(&m.api_key, "k-exempt", &berlin_payment("77.09"))
        .await;
    assert_eq!(first.status(), 502);
    let exempt = the_only_payment_since(&app, &[]).await;
    let second = app
        .post_payment(&m.api_key, "k-redirect", &berlin_payment("10.00"))
        .await;
    assert_eq!(second.status(), 502);
    let redirect = the_only_payment_since(&app, std::slice::from_ref(&exempt)).await;
    // The same order tried again under other keys, from another account or with another
    // message: the bank's payments differ from the first only there.
    const OTHER_DEBTOR: &str = "FI4250001510000023";
    for (key, field, value) in [
        ("k-other-debtor", "/debtor/account/value", OTHER_DEBTOR),
        ("k-other-message", "/creditor/message", "Order 5678"),
    ] {
        let mut body = berlin_payment("77.09");
        *body.pointer_mut(field).unwrap() = Value::from(value);
        assert_eq!(app.post_payment(&m.api_key, key, &body).await.status(), 502);
    }
    let recorded = app
        .create_payment(&m.api_key, &berlin_payment("12.00"))
        .await;
    let recorded_id = recorded["id"].as_str().unwrap().to_owned();
    let held = recorded["bank_payment_id"].as_str().unwrap().to_owned();
    const DEBTOR: &str = "FI2112345600000785";
    let b_exempt = sim_id(&bank, "77.09", "Order 1234", DEBTOR);
    let b_redirect = sim_id(&bank, "10.00", "Order 1234", DEBTOR);
    let b_other_debtor = sim_id(&bank, "77.09", "Order 1234", OTHER_DEBTOR);
    let b_other_message = sim_id(&bank, "77.09", "Order 5678", DEBTOR);

    // The merchant cancels the redirect one while its answer is lost: left to the bank.
    let r = app
        .client
        .post(app.url(&format!("/v1/payments/{redirect}/cancel")))
        .bearer_auth(&m.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let cookie = crate::console::session_cookie(&app).await;
    let (_, page) = get(&app, &format!("/console/payments/{exempt}"), &cookie).await;
    assert!(page.contains("Unresolved initiation"), "{page}");
    assert!(
        page.contains(&exempt.replace('-', "")),
        "names the end-to-end id to ask the bank about"
    );
    let (_, page) = get(&app, &format!("/console/payments/{recorded_id}"), &cookie).await;
    assert!(!page.contains("Unresolved initiation"), "{page}");

    let attach = |id: &str, bank_id: &str, evidence: &str| {
        [
            ("action", "attach_bank_payment".to_owned()),
            ("payment", id.to_owned()),
            ("bank_payment_id", bank_id.to_owned()),
            ("evidence", evidence.to_owned()),
        ]
    };
    let refusals = [
        (
            attach(&exempt, "no-such-payment", "case 1"),
            "The bank answered 404 for payment no-such-payment",
        ),
        (
            attach(&exempt, &b_redirect, "case 1"),
            "is for 10.00 EUR, this payment for 77.09 EUR",
        ),
        (
            attach(&exempt, &held, "case 1"),
            &*format!("already belongs to payment {recorded_id}"),
        ),
        (
            attach(&exempt, &b_other_debtor, "case 1"),
            "is from account …0023, this payment from account …0785",
        ),
        (
            attach(&exempt, &b_other_message, "case 1"),
            "carries another message",
        ),
        (
            attach(&exempt, "bad id/..", "case 1"),
            "not a bank payment id",
        ),
        (attach(&exempt, &b_exempt, "  "), "Give the evidence"),
        (
            attach(&recorded_id, &held, "case 1"),
            "not waiting for an operator",
        ),
    ];
    for (fields, why) in &refusals {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, page) = ask(&app, &cookie, &fields).await;
        assert_eq!(code, 409, "{fields:?}: {page}");
        assert!(page.contains(why), "{fields:?}: wants {why:?} in {page}");
    }
    assert_eq!(bank_id_of(&app, &exempt).await, None, "nothing attached");
    assert!(
        audit_actions(&app)
            .await
            .iter()
            .all(|a| a != "attach_bank_payment")
    );

    // The right one: the confirmation shows what the bank holds; confirmed, it is attached.
    let fields = attach(&exempt, &b_exempt, "SEB support case 4711, Anna");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (done, confirmation) = act(&app, &cookie, &fields).await;
    assert!(
        confirmation.contains(&format!("The bank holds payment {b_exempt}"))
            && confirmation.contains("77.09 EUR")
            && confirmation.contains("…3458"),
        "{confirmation}"
    );
    assert!(!confirmation.contains("FI1410093000123458"), "masked");
    assert_eq!(done.status(), 303);
    assert_eq!(
        bank_id_of(&app, &exempt).await.as_deref(),
        Some(b_exempt.as_str())
    );
    let paid = status_becomes(&app, &m.api_key, &exempt, "paid").await;
    assert_eq!(paid["bank_payment_id"], b_exempt.as_str());
    let events = kinds(&app, &exempt).await;
    let attached = events
        .iter()
        .find(|(k, _)| k == "bank_payment_attached")
        .expect("the attachment is in the ledger");
    assert_eq!(attached.1["operator"], EMAIL);
    assert_eq!(attached.1["evidence"], "SEB support case 4711, Anna");
    assert!(
        events
            .iter()
            .any(|(k, d)| k == "initiated" && d["bank_payment_id"] == b_exempt.as_str())
    );
    assert!(
        audit_actions(&app)
            .await
            .iter()
            .any(|a| a == "attach_bank_payment")
    );
    let (_, page) = get(&app, &format!("/console/payments/{exempt}"), &cookie).await;
    assert!(
        page.contains("Verified:") && !page.contains("BROKEN"),
        "the ledger binds the attached id: {page}"
    );
    assert!(!page.contains("Unresolved initiation"));

    // The merchant's retry with the first key answers the payment; nothing new at the bank.
    let retry = app
        .post_payment(&m.api_key, "k-exempt", &berlin_payment("77.09"))
        .await;
    assert_eq!(retry.status(), 201);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], exempt.as_str());
    assert_eq!(retry["status"], "paid");
    assert_eq!(
        bank.sandbox.payments().len(),
        5,
        "no second payment at the bank"
    );

    // Attached again: refused, it is resolved.
    let fields = attach(&exempt, &b_exempt, "again");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, page) = ask(&app, &cookie, &fields).await;
    assert_eq!(code, 409, "{page}");

    // The redirect one, cancelled by the merchant meanwhile: deleted at the bank once attached.
    let fields = attach(&redirect, &b_redirect, "case 4712");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (done, _) = act(&app, &cookie, &fields).await;
    assert_eq!(done.status(), 303);
    status_becomes(&app, &m.api_key, &redirect, "cancelled").await;
    let deletes = crate::berlin_group::deletes(&bank);
    assert_eq!(deletes, 1, "the merchant's cancel reached the bank once");
}

/// An initiation whose connection dropped before the bank made anything: the operator,
/// told so by the bank, ends it `failed` (`not_made_at_bank`) with evidence; the merchant's
/// retry with the same key then answers that payment, and nothing is ever sent to the bank
/// again. Refused without evidence, and for a payment that is not unresolved.
#[tokio::test]
async fn an_operator_ends_a_lost_initiation_the_bank_made_none_of_as_failed() {
    let (app, bank) = spawn_with_berlin(&[]).await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Initiate, Fault::DropConnection).times(1),
    ]);
    let m = app.create_merchant("Shop").await;
    let first = app
        .post_payment(&m.api_key, "k-dropped", &berlin_payment("77.09"))
        .await;
    assert_eq!(first.status(), 502);
    let id = the_only_payment_since(&app, &[]).await;
    let recorded = app
        .create_payment(&m.api_key, &berlin_payment("12.00"))
        .await;
    let recorded_id = recorded["id"].as_str().unwrap();
    assert_eq!(
        bank.sandbox.payments().len(),
        1,
        "the bank made only the second"
    );

    let cookie = crate::console::session_cookie(&app).await;
    let end = |p: &str, evidence: &str| {
        [
            ("action", "end_unresolved".to_owned()),
            ("payment", p.to_owned()),
            ("evidence", evidence.to_owned()),
        ]
    };
    for (fields, why) in [
        (end(&id, ""), "Give the evidence"),
        (end(recorded_id, "case 9"), "not waiting for an operator"),
    ] {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, page) = ask(&app, &cookie, &fields).await;
        assert_eq!(code, 409, "{page}");
        assert!(page.contains(why), "wants {why:?}: {page}");
    }
    // Asked for on the confirmation, refused when confirmed (the payment ended meanwhile).
    let fields = end(recorded_id, "case 9");
    let mut form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    form.push(("confirm", "yes"));
    let (code, _) = ask(&app, &cookie, &form).await;
    assert_eq!(code, 409);
    assert_eq!(
        app.get_payment(&m.api_key, recorded_id).await["status"],
        "awaiting_authorization"
    );

    let fields = end(
        &id,
        "Bank support case 77, no payment with this end-to-end id",
    );
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (done, confirmation) = act(&app, &cookie, &fields).await;
    assert!(confirmation.contains("ends failed"), "{confirmation}");
    assert!(
        confirmation.contains("danger"),
        "a destructive action: {confirmation}"
    );
    assert_eq!(done.status(), 303);
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["status"], "failed", "{p}");
    assert_eq!(p["failure"]["code"], "not_made_at_bank", "{p}");
    let events = kinds(&app, &id).await;
    let ended = events
        .iter()
        .find(|(k, _)| k == "ended_by_operator")
        .expect("in the ledger");
    assert_eq!(ended.1["operator"], EMAIL);
    assert!(
        audit_actions(&app)
            .await
            .iter()
            .any(|a| a == "end_unresolved")
    );

    let retry = app
        .post_payment(&m.api_key, "k-dropped", &berlin_payment("77.09"))
        .await;
    assert_eq!(retry.status(), 201);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(
        (retry["id"].as_str(), retry["status"].as_str()),
        (Some(id.as_str()), Some("failed"))
    );
    assert_eq!(bank.sandbox.payments().len(), 1, "never initiated again");
    let (_, page) = get(&app, &format!("/console/payments/{id}"), &cookie).await;
    assert!(
        page.contains("Verified:") && !page.contains("BROKEN"),
        "{page}"
    );
    assert!(!page.contains("Unresolved initiation"));
}

/// While the bank's answer may still be on its way (the attempt is `pending` and recent), the
/// console offers nothing: ending or attaching it then would leave the late answer an
/// orphan, nobody following a payment the bank may execute. Once the answer comes, the
/// payment is no longer unresolved at all.
#[tokio::test]
async fn an_initiation_whose_answer_may_still_come_is_not_offered_for_reconciliation() {
    let (app, bank) = spawn_with_berlin(&[]).await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Initiate, Fault::DelayAnswer { ms: 2500 }).times(1),
    ]);
    let m = app.create_merchant("Shop").await;
    let creating = {
        let (client, url, key) = (
            app.client.clone(),
            app.url("/v1/payments"),
            m.api_key.clone(),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", "k-slow")
                .json(&berlin_payment("77.09"))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let id = crate::berlin_group::first_payment_id(&app).await;
    let cookie = crate::console::session_cookie(&app).await;
    let (_, page) = get(&app, &format!("/console/payments/{id}"), &cookie).await;
    assert!(page.contains("Initiation in flight"), "{page}");
    assert!(
        !page.contains("end_unresolved"),
        "no action offered: {page}"
    );
    let (code, page) = ask(
        &app,
        &cookie,
        &[
            ("action", "end_unresolved"),
            ("payment", &id),
            ("evidence", "case 1"),
        ],
    )
    .await;
    assert_eq!(code, 409, "{page}");
    assert!(page.contains("may still be on its way"), "{page}");
    assert_eq!(creating.await.unwrap(), 201, "the answer came");
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["status"], "awaiting_authorization");
    assert!(p["bank_payment_id"].is_string(), "{p}");
    let (_, page) = get(&app, &format!("/console/payments/{id}"), &cookie).await;
    assert!(!page.contains("Initiation in flight") && !page.contains("Unresolved initiation"));
}

/// A payment found by the operator long after its late-signing horizon, that nobody signed
/// yet (the bank may still push it to the shopper's app): attaching it gives the shopper the
/// horizon from now before pisgate asks the bank to delete it, not an instant DELETE.
#[tokio::test]
async fn a_payment_attached_past_its_horizon_gets_the_horizon_from_now() {
    let (app, bank) = crate::berlin_group::spawn_for_the_horizon().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Initiate, Fault::DropAfterProcessing).times(1),
    ]);
    let m = app.create_merchant("Shop").await;
    let first = app
        .post_payment(&m.api_key, "k-late", &berlin_payment("10.00"))
        .await;
    assert_eq!(first.status(), 502);
    let id = the_only_payment_since(&app, &[]).await;
    let bank_id = sim_id(&bank, "10.00", "Order 1234", "FI2112345600000785");
    // Past the horizon (3 s).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // An insider has pushed the row's horizon out a century: the attach extends the horizon
    // the ledger recorded, so this one is neither kept nor signed into the ledger.
    sqlx::query(
        "UPDATE payments SET sign_horizon_at = now() + interval '100 years' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let cookie = crate::console::session_cookie(&app).await;
    let (done, _) = act(
        &app,
        &cookie,
        &[
            ("action", "attach_bank_payment"),
            ("payment", &id),
            ("bank_payment_id", &bank_id),
            ("evidence", "case 5"),
        ],
    )
    .await;
    assert_eq!(done.status(), 303);
    let ahead: bool = sqlx::query_scalar(
        "SELECT sign_horizon_at > now() + interval '1 second'
                AND sign_horizon_at < now() + interval '1 day'
         FROM payments WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        ahead,
        "the horizon runs from the attachment, not from the row's"
    );
    // The attachment recorded the new horizon in the ledger, which holds the row to it.
    crate::helpers::assert_ledger_verifies(&app.pool).await;
    // The poller follows it at once; it asks the bank nothing to delete yet.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let deletes = crate::berlin_group::deletes(&bank);
    assert_eq!(deletes, 0);
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["status"], "awaiting_authorization", "{p}");
    assert_eq!(p["bank_status"], "RCVD", "followed: {p}");
}

/// The first request's answer from the bank is being recorded when its key goes stale (its
/// write waits on the payment's row, locked here past the 2 s in-flight bound). A same-key
/// retry is told the key is still in flight (409 `idempotency_key_in_flight`, Retry-After),
/// not that the payment cannot be resumed: that answer may yet come, and it does. Once the
/// write goes through, the first request answers 201 and the retry answers the same payment;
/// the bank made one.
#[tokio::test]
async fn a_retry_while_the_first_answer_is_still_being_recorded_is_told_to_come_back() {
    let (app, bank) =
        spawn_with_berlin(&[("PISGATE__PAYMENTS__IDEMPOTENCY_STALE_AFTER_SECS", "2")]).await;
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Initiate, Fault::DelayAnswer { ms: 800 }).times(1),
    ]);
    let m = app.create_merchant("Shop").await;
    let body = berlin_payment("12.00");
    let holder = async {
        let id = crate::berlin_group::first_payment_id(&app).await;
        let mut tx = app.pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM payments WHERE id = $1::uuid FOR UPDATE")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let retry = app.post_payment(&m.api_key, "k-slow", &body).await;
        let status = retry.status().as_u16();
        let retry_after = retry.headers().get("retry-after").cloned();
        let answer: Value = retry.json().await.unwrap();
        tx.rollback().await.unwrap();
        (id, status, retry_after, answer)
    };
    let (first, (id, status, retry_after, answer)) =
        tokio::join!(app.post_payment(&m.api_key, "k-slow", &body), holder);
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["code"], "idempotency_key_in_flight", "{answer}");
    assert!(retry_after.is_some());
    assert_eq!(first.status(), 201);
    let again = app.post_payment(&m.api_key, "k-slow", &body).await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], id.as_str());
    assert!(again["bank_payment_id"].is_string(), "{again}");
    assert_eq!(bank.sandbox.payments().len(), 1, "one payment at the bank");
}
