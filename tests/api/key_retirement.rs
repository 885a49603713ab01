//! Retiring a ledger key after a rotation (`PISGATE__LEDGER__RETIRED_KEY_IDS`,
//! `pisgate ledger reseal`): a key that may have leaked keeps verifying the history it signed,
//! but vouches for no live row any more, so whoever holds it can forge no API key, webhook
//! endpoint, bank reference, webhook event or idempotency answer that pisgate acts on. The
//! reseal moves the live rows written under it to the current key, after checking each
//! under its own, and leaves a row edited meanwhile refused.

use crate::console::{EMAIL, PASSWORD, create_operator, sign_in};
use crate::helpers::{
    LEDGER_KEY, TestApp, fresh_database, ledger_keys, settings, sign_and_return, spawn_app_on,
};
use crate::payments::body;
use crate::webhooks::post_endpoint;
use pisgate::ledger::events::{BreakReason, NewEvent};
use pisgate::ledger::keys::LedgerKeys;
use pisgate::ledger::verify::VerifyReport;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

/// Base64 of 32 bytes: the key the tests rotate to, id `l2`.
const NEW_LEDGER_KEY: &str = "bmV3LWxlZGdlci1rZXktZm9yLXRlc3RzLW9ubHktMzI=";

fn rotated(previous_retired: bool) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("PISGATE__LEDGER__KEY", NEW_LEDGER_KEY.to_owned()),
        ("PISGATE__LEDGER__KEY_ID", "l2".to_owned()),
        ("PISGATE__LEDGER__PREVIOUS_KEYS", format!("l1:{LEDGER_KEY}")),
    ];
    if previous_retired {
        vars.push(("PISGATE__LEDGER__RETIRED_KEY_IDS", "l1".to_owned()));
    }
    vars
}

async fn spawn_rotated(database_url: &str) -> (TestApp, LedgerKeys) {
    let vars = rotated(true);
    let overrides: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_on(database_url, &overrides, |_| {}).await;
    let ring = pisgate::app::ledger_keys(&app.settings.ledger).unwrap();
    (app, ring)
}

async fn verify(app: &TestApp, ring: &LedgerKeys) -> VerifyReport {
    pisgate::ledger::verify::verify_all(&app.pool, ring)
        .await
        .unwrap()
}

async fn new_endpoint(app: &TestApp, key: &str, url: &str) -> String {
    let r = post_endpoint(app, key, &json!({ "url": url })).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_retired_ledger_key_vouches_for_no_live_row_until_ledger_reseal_moves_them() {
    let database = fresh_database().await;
    // Under l1: a merchant's API key, two webhook endpoints, and a payment created with an
    // Idempotency-Key and signed (bank reference, `payment.authorized` webhook event).
    let old = spawn_app_on(&database, &[], |_| {}).await;
    let m = old.create_merchant("Retiring shop").await;
    let kept = new_endpoint(&old, &m.api_key, "https://hooks.shop.example/kept").await;
    let edited = new_endpoint(&old, &m.api_key, "https://hooks.shop.example/edited").await;
    let created = old.post_payment(&m.api_key, "order-77", &body("FI")).await;
    assert_eq!(created.status(), 201);
    let first: Value = created.json().await.unwrap();
    let back = sign_and_return(&old.client, &first, "psu-retire").await;
    assert_eq!(back.status(), 303);
    let payment: Uuid = first["id"].as_str().unwrap().parse().unwrap();
    // A registered payee, beside the merchant's payee policy (`open`, sealed at creation).
    let payee =
        pisgate::domain::Account::parse(pisgate::domain::AccountType::Iban, "FI1410093000123458")
            .unwrap();
    let mut tx = old.pool.begin().await.unwrap();
    let added = pisgate::ledger::payees::add(&mut tx, m.id, &payee, None)
        .await
        .unwrap();
    assert_eq!(added, pisgate::ledger::payees::Added::Added);
    tx.commit().await.unwrap();
    // A console operator, sealed by `pisgate operator create` under l1.
    assert!(create_operator(&old, EMAIL, PASSWORD).status.success());
    drop(old);
    // Before the reseal, an insider points one endpoint elsewhere (its MAC under l1 breaks).
    let direct = sqlx::PgPool::connect(&database).await.unwrap();
    sqlx::query(
        "UPDATE webhook_endpoints SET url = 'https://attacker.example/hook' WHERE id = $1::uuid",
    )
    .bind(&edited)
    .execute(&direct)
    .await
    .unwrap();

    // Rotated to l2 with l1 retired: nothing sealed under l1 is trusted any more.
    let (app, ring) = spawn_rotated(&database).await;
    assert_eq!(app.get_as("/v1/payments", &m.api_key).await.status(), 401);
    let before = verify(&app, &ring).await;
    // History under l1 (the chain, events) still verifies; the live rows do not.
    let broken = before
        .first_broken
        .clone()
        .unwrap_or_else(|| panic!("the bank reference under l1 went unnoticed: {before:?}"));
    assert_eq!(broken.payment_id, payment);
    assert!(format!("{broken:?}").contains("retired"), "{broken:?}");
    assert_eq!(before.broken_api_keys, 1, "{before:?}");
    assert!(
        before
            .first_broken_api_key
            .as_deref()
            .unwrap()
            .contains("retired"),
        "{before:?}"
    );
    assert_eq!(before.broken_webhook_endpoints, 2, "{before:?}");
    assert_eq!(before.broken_idempotency_answers, 1, "{before:?}");
    assert_eq!(
        before.broken_payees, 2,
        "the policy and the payee: {before:?}"
    );
    assert_eq!(before.broken_operators, 1, "{before:?}");
    assert_eq!(
        sign_in(&app, EMAIL, PASSWORD).await.status(),
        401,
        "an operator sealed under the retired key signs in nowhere"
    );
    assert!(before.broken_webhook_events >= 1, "{before:?}");
    assert!(
        before
            .first_broken_webhook_event
            .as_ref()
            .unwrap()
            .reason
            .contains("retired"),
        "{before:?}"
    );

    // `pisgate ledger reseal`: everything that holds under l1 moves to l2; the edited
    // endpoint is refused and named.
    let session = app.direct_pool().await;
    let resealed = pisgate::ledger::reseal::reseal(&session, &ring)
        .await
        .unwrap();
    assert_eq!(resealed.key_id, "l2");
    assert_eq!(resealed.api_keys, 1, "{resealed:?}");
    assert_eq!(resealed.api_key_lifetimes, 1, "{resealed:?}");
    assert_eq!(resealed.webhook_endpoints, 1, "{resealed:?}");
    assert_eq!(resealed.bank_links, 1, "{resealed:?}");
    assert_eq!(resealed.idempotency_answers, 1, "{resealed:?}");
    assert_eq!(resealed.payee_policies, 1, "{resealed:?}");
    assert_eq!(resealed.payees, 1, "{resealed:?}");
    assert_eq!(resealed.operators, 1, "{resealed:?}");
    assert_eq!(
        resealed.webhook_events, before.broken_webhook_events,
        "{resealed:?}"
    );
    assert_eq!(resealed.refused, 1, "{resealed:?}");
    // The signed payment is still open, its events under l1.
    assert_eq!(
        resealed.open_payments_with_older_key_events, 1,
        "{resealed:?}"
    );
    let refused = resealed.first_refused.as_deref().unwrap();
    assert!(
        refused.contains(&edited) && refused.contains("edited"),
        "{refused}"
    );
    assert!(!refused.contains(&kept), "{refused}");

    // The merchant's key and its stored answer work again; only the edited endpoint is
    // still reported, and the chains verify under l1 as before.
    assert_eq!(app.get_as("/v1/payments", &m.api_key).await.status(), 200);
    let replay = app.post_payment(&m.api_key, "order-77", &body("FI")).await;
    assert_eq!(replay.status(), 201);
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(
        replayed, first,
        "the replay is the first answer, byte for byte"
    );
    let after = verify(&app, &ring).await;
    assert!(after.first_broken.is_none(), "{after:?}");
    assert_eq!(after.broken_api_keys, 0, "{after:?}");
    assert_eq!(after.broken_idempotency_answers, 0, "{after:?}");
    assert_eq!(after.broken_webhook_events, 0, "{after:?}");
    assert_eq!(after.broken_payees, 0, "{after:?}");
    assert_eq!(after.broken_operators, 0, "{after:?}");
    assert_eq!(sign_in(&app, EMAIL, PASSWORD).await.status(), 303);
    assert_eq!(after.broken_webhook_endpoints, 1, "{after:?}");
    assert!(
        after
            .first_broken_webhook_endpoint
            .as_deref()
            .unwrap()
            .contains(&edited),
        "{after:?}"
    );
    // A second run finds nothing left to move, and refuses the same row again.
    let again = pisgate::ledger::reseal::reseal(&session, &ring)
        .await
        .unwrap();
    assert_eq!(
        (
            again.api_keys,
            again.webhook_endpoints,
            again.bank_links,
            again.webhook_events
        ),
        (0, 0, 0, 0),
        "{again:?}"
    );
    assert_eq!(again.refused, 1, "{again:?}");

    // Whoever holds the old key mints an API key row sealed under l1: refused, because l1 is
    // retired (before retirement such a row authenticated like any other).
    pisgate::ledger::keys::install(ledger_keys());
    let mut conn = session.acquire().await.unwrap();
    let (_, forged) = pisgate::ledger::api_keys::insert_key(&mut conn, m.id, Some("forged"), None)
        .await
        .unwrap();
    drop(conn);
    pisgate::ledger::keys::install(ring.clone());
    assert_eq!(
        app.get_as("/v1/payments", forged.expose_secret())
            .await
            .status(),
        401
    );

    // The old key also signs no history after the rotation. A checkpoint under l2, then an
    // event appended under l1 past the head it recorded: verify names it.
    pisgate::ledger::checkpoints::create(&app.pool, &ring)
        .await
        .unwrap();
    let clean = verify(&app, &ring).await;
    assert!(clean.first_broken.is_none(), "{clean:?}");
    pisgate::ledger::keys::install(ledger_keys());
    let mut conn = session.acquire().await.unwrap();
    pisgate::ledger::events::append(
        &mut conn,
        payment,
        NewEvent {
            kind: "cancel_requested".into(),
            old_status: None,
            new_status: None,
            bank_status: None,
            detail: json!({"by": "merchant"}),
        },
    )
    .await
    .unwrap();
    drop(conn);
    pisgate::ledger::keys::install(ring.clone());
    let forged_event = verify(&app, &ring).await;
    let broken = forged_event
        .first_broken
        .clone()
        .unwrap_or_else(|| panic!("an event signed with the retired key went unnoticed"));
    assert_eq!(broken.payment_id, payment);
    assert!(
        matches!(broken.reason, BreakReason::RetiredKeyAfterRotation { .. }),
        "{broken}"
    );
    // And a checkpoint signed with it is refused as the newest.
    pisgate::ledger::checkpoints::create(&app.pool, &ledger_keys())
        .await
        .unwrap();
    let forged_checkpoint = verify(&app, &ring).await;
    assert!(
        forged_checkpoint
            .checkpoint_problem
            .as_ref()
            .is_some_and(|p| p.to_string().contains("retired")),
        "{forged_checkpoint:?}"
    );
}

/// A retired id must name a previous key, and never the current one: the setting is refused
/// at start, named.
#[tokio::test]
async fn retiring_the_current_key_or_an_unknown_one_is_a_settings_error_naming_the_variable() {
    for (retired, why) in [("l2", "current"), ("l1,l9", "not one of the previous keys")] {
        let mut vars = rotated(false);
        vars.push(("PISGATE__LEDGER__RETIRED_KEY_IDS", retired.to_owned()));
        let overrides: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let s = settings("postgres://postgres@127.0.0.1:9/none", &overrides);
        let e = pisgate::app::ledger_keys(&s.ledger)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PISGATE__LEDGER__RETIRED_KEY_IDS") && e.contains(why),
            "{retired}: {e}"
        );
    }
    // Retiring a previous key is fine.
    let vars = rotated(true);
    let overrides: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = settings("postgres://postgres@127.0.0.1:9/none", &overrides);
    let ring = pisgate::app::ledger_keys(&s.ledger).unwrap();
    assert!(ring.is_retired("l1") && !ring.is_retired("l2"));
}
