//! More than one bank: `[banks.<id>]` settings, `GET /v1/banks`, and a payment's calls going
//! to the bank it names (here a second Nordea-protocol bank on its own sandbox).

use crate::helpers::{
    TestApp, assert_problem, fresh_database, private_key_pem, spawn_app, spawn_app_on,
    spawn_sandbox,
};
use crate::payments::{assert_refused, body, with};
use pisgate::sandbox::Sandbox;
use serde_json::{Value, json};
use std::sync::Arc;

/// The app with Nordea (all four countries) and a second bank `second` serving FI only,
/// on a sandbox of its own.
async fn two_banks() -> (TestApp, Arc<Sandbox>) {
    let (second, second_url) = spawn_sandbox(|_| {}).await;
    let base = format!("{second_url}/personal");
    let key = private_key_pem();
    let app = spawn_app_on(
        &fresh_database().await,
        &[
            ("PISGATE__BANKS__SECOND__PROTOCOL", "nordea"),
            ("PISGATE__BANKS__SECOND__NAME", "Second Bank"),
            ("PISGATE__BANKS__SECOND__COUNTRIES", "FI"),
            ("PISGATE__BANKS__SECOND__BASE_URL", &base),
            (
                "PISGATE__BANKS__SECOND__CLIENT_ID",
                crate::helpers::CLIENT_ID,
            ),
            (
                "PISGATE__BANKS__SECOND__CLIENT_SECRET",
                crate::helpers::CLIENT_SECRET,
            ),
            ("PISGATE__BANKS__SECOND__PRIVATE_KEY", &key),
            ("PISGATE__BANKS__SECOND__ENVIRONMENT", "sandbox"),
            ("PISGATE__BANKS__SECOND__TOKEN_PATH", "/v5/authorize/token"),
        ],
        |_| {},
    )
    .await;
    (app, second)
}

#[tokio::test]
async fn get_banks_lists_every_configured_bank_with_its_countries_and_needs() {
    let (app, _second) = two_banks().await;
    let m = app.create_merchant("Shop").await;
    let r = app.get_as("/v1/banks", &m.api_key).await;
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    assert_eq!(
        list,
        json!({"data": [
            {"id": "nordea", "name": "Nordea", "countries": ["DK", "FI", "NO", "SE"],
             "protocol": "nordea", "needs": {"debtor_account": false}},
            {"id": "second", "name": "Second Bank", "countries": ["FI"],
             "protocol": "nordea", "needs": {"debtor_account": false}},
        ]})
    );
    let anonymous = app.client.get(app.url("/v1/banks")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_payment_that_names_its_bank_is_made_signed_and_read_at_that_bank_only() {
    let (app, second) = two_banks().await;
    let m = app.create_merchant("Shop").await;
    let p = app
        .create_payment(&m.api_key, &with(body("FI"), json!({"bank": "second"})))
        .await;
    assert_eq!(p["bank"], "second");
    let id = p["id"].as_str().unwrap();
    let external = uuid::Uuid::parse_str(id).unwrap().simple().to_string();
    assert_eq!(second.payment_by_external_id(&external).len(), 1);
    assert!(app.bank_payments_for(id).is_empty(), "not at Nordea");

    let back = app
        .sign(p["authorization_url"].as_str().unwrap(), "psu-2", true)
        .await;
    assert_eq!(back.status(), 303);
    let after = app.get_payment(&m.api_key, id).await;
    assert_eq!(after["bank"], "second");
    assert_eq!(after["status"], "authorized", "{after}");
    // The code was exchanged and the status read at the second bank, never at Nordea.
    assert_eq!(
        app.bank_calls(pisgate::sandbox::Operation::Token),
        0,
        "no token call at Nordea"
    );
    let at_second = second
        .requests()
        .iter()
        .filter(|r| r.operation == Some(pisgate::sandbox::Operation::Token))
        .count();
    assert_eq!(at_second, 1, "the code was exchanged at the second bank");
}

#[tokio::test]
async fn the_bank_is_chosen_by_country_and_a_wrong_bank_is_refused_by_field() {
    let (app, _second) = two_banks().await;
    let m = app.create_merchant("Shop").await;
    // DK has one bank: it is used without naming it.
    let dk = app.create_payment(&m.api_key, &body("DK")).await;
    assert_eq!(dk["bank"], "nordea");
    // FI has two, and nobody chose yet: the shopper chooses on pisgate's page.
    let fi = app.create_payment(&m.api_key, &body("FI")).await;
    assert_eq!(fi["initiation"], "awaiting_bank_choice");
    assert_eq!(fi["bank"], Value::Null);
    assert_refused(
        &app,
        &m.api_key,
        &with(body("DK"), json!({"bank": "second"})),
        "bank",
        "bank_not_in_country",
    )
    .await;
    assert_refused(
        &app,
        &m.api_key,
        &with(body("FI"), json!({"bank": "nosuchbank"})),
        "bank",
        "unknown_bank",
    )
    .await;
    assert_refused(
        &app,
        &m.api_key,
        &with(body("FI"), json!({"bank": "Second Bank"})),
        "bank",
        "unknown_bank",
    )
    .await;
    let r = app
        .post_payment(&m.api_key, "k-1", &with(body("FI"), json!({"bank": 7})))
        .await;
    assert_problem(r, 422, "validation_failed").await;
}

#[tokio::test]
async fn with_one_bank_payments_need_no_bank_and_name_it_in_their_view() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    assert_eq!(p["bank"], "nordea");
    let named = app
        .create_payment(&m.api_key, &with(body("SE"), json!({"bank": "nordea"})))
        .await;
    assert_eq!(named["bank"], "nordea");
}
