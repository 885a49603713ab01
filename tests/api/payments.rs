//! Payments end to end against the real Postgres and the Nordea sandbox simulator.

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_app_full};
use pisgate::sandbox::Operation;
use serde_json::{Value, json};
use uuid::Uuid;

/// A valid body for each country's usual payment.
pub fn body(country: &str) -> Value {
    let (currency, creditor) = match country {
        "FI" => (
            "EUR",
            json!({"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Kauppa Oy",
                               "reference": {"type": "RF", "value": "RF18539007547034"}}),
        ),
        "DK" => (
            "DKK",
            json!({"account": {"type": "BBAN_DK", "value": "30004010021337"}, "name": "Butik ApS",
                               "message": "Order 1234"}),
        ),
        "SE" => (
            "SEK",
            json!({"account": {"type": "BGNR", "value": "50501055"}, "name": "Butik AB",
                               "reference": {"type": "OCR", "value": "1234566"}}),
        ),
        "NO" => (
            "NOK",
            json!({"account": {"type": "BBAN_NO", "value": "86011117947"}, "name": "Butikk AS",
                               "reference": {"type": "OCR", "value": "1234566"}}),
        ),
        _ => unreachable!(),
    };
    json!({
        "amount": "10.50",
        "currency": currency,
        "country": country,
        "creditor": creditor,
        "reference": "order-1234",
        "return_url": "https://shop.example/checkout/done?order=1234",
        "psu_id": "shopper-1",
    })
}

/// `body` with the top-level fields of `changes` set (replaced or added).
pub(crate) fn with(mut body: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Posts a payment and asserts a 422 whose errors include `field` with `code`.
pub(crate) async fn assert_refused(
    app: &TestApp,
    key: &str,
    body: &Value,
    field: &str,
    code: &str,
) {
    let r = app
        .post_payment(key, &Uuid::new_v4().to_string(), body)
        .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    let errors = problem["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["field"] == field && e["code"] == code),
        "expected {field}/{code} in {problem}"
    );
}

async fn events(app: &TestApp, key: &str, id: &str) -> Vec<Value> {
    let r = app.get_as(&format!("/v1/payments/{id}/events"), key).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["data"].as_array().unwrap().clone()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn full_flow(app: &TestApp, body: Value) {
    let m = app.create_merchant("Shop").await;
    let created = app.create_payment(&m.api_key, &body).await;
    assert_eq!(created["status"], "awaiting_authorization");
    assert_eq!(created["bank_status"], "PendingUserApproval");
    let id = created["id"].as_str().unwrap().to_owned();
    let url = created["authorization_url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&app.url(&format!("/authorize/{id}?t="))),
        "merchants get pisgate's hop, never the bank's link: {url}"
    );
    assert!(!created.to_string().contains(&app.sandbox_url), "{created}");

    let back = app.sign(&url, "psu-flow", true).await;
    assert_eq!(back.status(), 303);
    let location = back.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("https://shop.example/checkout/done?order=1234&payment_id="),
        "{location}"
    );
    assert_eq!(
        location,
        format!("https://shop.example/checkout/done?order=1234&payment_id={id}"),
        "the return carries the payment's id and nothing a merchant could take as proof of payment"
    );

    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["status"], "authorized");
    assert_eq!(p["bank_status"], "Confirmed");
    assert!(
        p["authorization_url"].is_null(),
        "no signing link once signed"
    );

    let evs = events(app, &m.api_key, &id).await;
    assert_eq!(
        kinds(&evs),
        [
            "created",
            "initiation_attempt",
            "initiated",
            "authorization_opened",
            "callback",
            "token_exchanged",
            "status_changed"
        ],
        "{evs:#?}"
    );
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["seq"], i as i64 + 1);
    }
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.events_checked, 7);
}

#[tokio::test]
async fn finnish_sepa_standard_payment_from_creation_to_authorized() {
    full_flow(&spawn_app().await, body("FI")).await;
}

#[tokio::test]
async fn finnish_sepa_express_payment_from_creation_to_authorized() {
    let mut b = body("FI");
    b["urgency"] = json!("express");
    full_flow(&spawn_app().await, b).await;
}

#[tokio::test]
async fn danish_domestic_payment_from_creation_to_authorized() {
    full_flow(&spawn_app().await, body("DK")).await;
}

#[tokio::test]
async fn swedish_bankgiro_payment_from_creation_to_authorized() {
    full_flow(&spawn_app().await, body("SE")).await;
}

#[tokio::test]
async fn norwegian_kid_payment_from_creation_to_authorized() {
    full_flow(&spawn_app().await, body("NO")).await;
}

#[tokio::test]
async fn the_shopper_rejecting_ends_in_authorization_failed() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let created = app.create_payment(&m.api_key, &body("FI")).await;
    let back = app
        .sign(
            created["authorization_url"].as_str().unwrap(),
            "psu-x",
            false,
        )
        .await;
    assert_eq!(back.status(), 303);
    assert!(
        !back.headers()["location"]
            .to_str()
            .unwrap()
            .contains("status=")
    );
    let p = app
        .get_payment(&m.api_key, created["id"].as_str().unwrap())
        .await;
    assert_eq!(p["status"], "authorization_failed");
    assert_eq!(app.bank_calls(Operation::Token), 0);
}

#[tokio::test]
async fn the_same_key_and_body_twice_gives_one_payment_and_the_same_answer() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let key = Uuid::new_v4().to_string();
    let first = app.post_payment(&m.api_key, &key, &body("SE")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    // Same meaning, other key order: still the same request.
    let reordered: Value = serde_json::from_str(&body("SE").to_string()).unwrap();
    let second = app.post_payment(&m.api_key, &key, &reordered).await;
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let key = Uuid::new_v4().to_string();
    assert_eq!(
        app.post_payment(&m.api_key, &key, &body("SE"))
            .await
            .status(),
        201
    );
    let mut other = body("SE");
    other["amount"] = json!("11.00");
    let r = app.post_payment(&m.api_key, &key, &other).await;
    assert_problem(r, 422, "idempotency_key_reused").await;
}

#[tokio::test]
async fn twenty_concurrent_requests_with_one_key_make_one_payment_at_the_bank() {
    let app = spawn_app_full(&[], |c| {
        c.faults = vec![
            serde_json::from_value(json!({"operation": "initiate", "kind": "latency", "ms": 300}))
                .unwrap(),
        ];
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let key = Uuid::new_v4().to_string();
    let b = body("DK");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = app.client.clone();
        let (url, api_key, key, b) = (
            app.url("/v1/payments"),
            m.api_key.clone(),
            key.clone(),
            b.clone(),
        );
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(api_key)
                .header("idempotency-key", key)
                .json(&b)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(statuses.contains(&201), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let initiations = app.bank_calls(Operation::Initiate);
    assert_eq!(initiations, 1);
}

#[tokio::test]
async fn another_merchants_payment_is_404_on_every_endpoint() {
    let app = spawn_app().await;
    let owner = app.create_merchant("Owner").await;
    let other = app.create_merchant("Other").await;
    let created = app.create_payment(&owner.api_key, &body("FI")).await;
    let id = created["id"].as_str().unwrap();
    for path in [
        format!("/v1/payments/{id}"),
        format!("/v1/payments/{id}/events"),
        format!("/v1/payments/{id}/funds"),
    ] {
        assert_problem(app.get_as(&path, &other.api_key).await, 404, "not_found").await;
    }
    let r = app
        .client
        .post(app.url(&format!("/v1/payments/{id}/cancel")))
        .bearer_auth(&other.api_key)
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
    let list: Value = app
        .get_as("/v1/payments", &other.api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_return_url_outside_the_registered_origins_is_refused_at_creation() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let mut b = body("FI");
    b["return_url"] = json!("https://evil.example/steal");
    let r = app.post_payment(&m.api_key, "k1", &b).await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "return_url");
    assert_eq!(problem["errors"][0]["code"], "origin_not_registered");
    assert!(
        app.sandbox.requests().is_empty(),
        "nothing reached the bank"
    );
}

#[tokio::test]
async fn forged_reused_and_expired_states_exchange_nothing() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let created = app.create_payment(&m.api_key, &body("FI")).await;
    let callback = app
        .sign_at_bank(
            created["authorization_url"].as_str().unwrap(),
            "psu-s",
            true,
        )
        .await;

    // Forged: a state we never issued.
    let forged = reqwest::Url::parse_with_params(
        &app.url("/v1/callbacks/nordea"),
        &[("code", "abc"), ("state", "forged")],
    )
    .unwrap();
    let r = app.client.get(forged).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // The real one works once...
    let back = app.client.get(&callback).send().await.unwrap();
    assert_eq!(back.status(), 303);
    // ...and a replay (refresh, Back, a proxy retry) redirects again and exchanges nothing.
    let again = app.client.get(&callback).send().await.unwrap();
    assert_eq!(again.status(), 303);
    assert_eq!(again.headers()["location"], back.headers()["location"]);
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        app.get_payment(&m.api_key, id).await["status"],
        "authorized"
    );
    let token_calls = app.bank_calls(Operation::Token);
    assert_eq!(token_calls, 1);

    // Expired: another payment whose state is past its late-signing horizon and that is
    // final (past the horizon a payment that is not final still takes its shopper back).
    let created = app.create_payment(&m.api_key, &body("FI")).await;
    let callback = app
        .sign_at_bank(
            created["authorization_url"].as_str().unwrap(),
            "psu-s",
            true,
        )
        .await;
    sqlx::query(
        "UPDATE payments SET state_expires_at = now() - interval '1 second', status = 'expired' WHERE id = $1::uuid",
    )
    .bind(created["id"].as_str().unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        app.client.get(&callback).send().await.unwrap().status(),
        400
    );
    let token_calls = app.bank_calls(Operation::Token);
    assert_eq!(token_calls, 1, "the expired state exchanged nothing");
    let evs = events(&app, &m.api_key, created["id"].as_str().unwrap()).await;
    assert_eq!(evs.last().unwrap()["kind"], "callback_rejected");
    assert_eq!(evs.last().unwrap()["detail"]["reason"], "state_expired");
}

#[tokio::test]
async fn tokens_in_the_database_are_not_plaintext() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let created = app.create_payment(&m.api_key, &body("FI")).await;
    let back = app
        .sign(
            created["authorization_url"].as_str().unwrap(),
            "psu-t",
            true,
        )
        .await;
    assert_eq!(back.status(), 303);
    let (bank, psu_key, access, refresh): (String, String, Vec<u8>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT bank, psu_key, access_token, refresh_token FROM psu_tokens")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    // Decrypt with the service's key: the plaintext must not be found in the stored bytes.
    let cipher = pisgate::ledger::crypto::TokenCipher::from_base64(
        "k1",
        &secrecy::SecretString::from(crate::helpers::TOKEN_KEY),
    )
    .unwrap();
    let live = pisgate::ledger::tokens::load(&app.pool, &cipher, &bank, &psu_key)
        .await
        .unwrap()
        .expect("a live token");
    let plain_access = secrecy::ExposeSecret::expose_secret(&live.access_token)
        .as_bytes()
        .to_vec();
    let plain_refresh = secrecy::ExposeSecret::expose_secret(live.refresh_token.as_ref().unwrap())
        .as_bytes()
        .to_vec();
    assert!(plain_access.len() >= 16 && plain_refresh.len() >= 16);
    for stored in [&access, refresh.as_ref().unwrap()] {
        for plain in [&plain_access, &plain_refresh] {
            assert!(
                !stored.windows(plain.len()).any(|w| w == plain.as_slice()),
                "a token is stored in plaintext"
            );
        }
    }
}

#[tokio::test]
async fn validation_errors_name_every_field_and_write_nothing() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"amount": "10.001"}), "amount", "too_many_decimals"),
        (json!({"amount": "0"}), "amount", "zero_amount"),
        (json!({"amount": "-5"}), "amount", "negative_amount"),
        (json!({"amount": "1e3"}), "amount", "exponent_not_allowed"),
        (json!({"amount": 10.5}), "amount", "invalid_type"),
        (
            json!({"amount": "1000000000"}),
            "amount",
            "amount_too_large",
        ),
        (
            json!({"currency": "SEK"}),
            "currency",
            "currency_country_mismatch",
        ),
        (
            json!({"creditor": {"account": {"type": "IBAN", "value": "FI1410093000123459"}, "name": "x"}}),
            "creditor.account.value",
            "invalid_checksum",
        ),
        (
            json!({"creditor": {"account": {"type": "IBAN", "value": "FI141009300012345"}, "name": "x"}}),
            "creditor.account.value",
            "invalid_length",
        ),
        (
            json!({"creditor": {"account": {"type": "BGNR", "value": "50501055"}, "name": "x"}}),
            "creditor.account.type",
            "account_type_not_allowed",
        ),
        (
            json!({"creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "x".repeat(71)}}),
            "creditor.name",
            "too_long",
        ),
        (
            json!({"creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "x", "reference": {"type": "RF", "value": "RF19539007547034"}}}),
            "creditor.reference.value",
            "invalid_checksum",
        ),
        (
            json!({"execution_date": "2000-01-01"}),
            "execution_date",
            "date_in_past",
        ),
        (
            json!({"urgency": "express", "execution_date": "2999-01-01"}),
            "urgency",
            "express_with_future_date",
        ),
        (
            json!({"own_account_transfer": true}),
            "own_account_transfer",
            "not_allowed_in_country",
        ),
        (
            json!({"recurring": {"count": 1, "recurrence_type": "MONTHLY_SAME_DAY"}}),
            "recurring.count",
            "invalid_count",
        ),
        (
            json!({"recurring": {"count": 99, "recurrence_type": "MONTHLY_SAME_DAY"}}),
            "recurring.count",
            "invalid_count",
        ),
        (
            json!({"recurring": {"count": 3, "recurrence_type": "FORTNIGHTLY"}}),
            "recurring.recurrence_type",
            "unknown_recurrence_type",
        ),
        (json!({"language": "xx"}), "language", "unknown_language"),
        (
            json!({"return_url": "shop.example/done"}),
            "return_url",
            "not_absolute",
        ),
    ];
    for (patch, field, code) in cases {
        assert_refused(&app, &m.api_key, &with(body("FI"), patch), field, code).await;
    }
    // Other countries' rules.
    let mut b = body("SE");
    b["urgency"] = json!("express");
    let problem = assert_problem(
        app.post_payment(&m.api_key, "se-express", &b).await,
        422,
        "validation_failed",
    )
    .await;
    assert!(
        problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == "express_not_allowed"),
        "{problem}"
    );
    let mut b = body("NO");
    b["creditor"]["account"]["value"] = json!("86011117948");
    let problem = assert_problem(
        app.post_payment(&m.api_key, "no-acct", &b).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "creditor.account.value");
    let mut b = body("NO");
    b["recurring"] = json!({"count": 3, "recurrence_type": "BIWEEKLY"});
    let problem = assert_problem(
        app.post_payment(&m.api_key, "no-biweekly", &b).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "recurring.recurrence_type");
    // Several violations at once.
    let r = app
        .post_payment(
            &m.api_key,
            "many",
            &json!({"amount": "x", "currency": "EUR"}),
        )
        .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["amount", "creditor", "return_url"] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing written");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, 0, "no key consumed");
    assert!(
        app.sandbox.requests().is_empty(),
        "nothing reached the bank"
    );
}

#[tokio::test]
async fn sandbox_only_recurrence_is_refused_in_production() {
    let app =
        crate::helpers::spawn_app_with(&[("PISGATE__NORDEA__ENVIRONMENT", "production")]).await;
    let m = app.create_merchant("Shop").await;
    let mut b = body("FI");
    b["recurring"] = json!({"count": 3, "recurrence_type": "EVERY_MINUTE_SANDBOX_ONLY"});
    let problem = assert_problem(
        app.post_payment(&m.api_key, "k", &b).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "recurring.recurrence_type");
}

#[tokio::test]
async fn a_missing_idempotency_key_is_422_naming_the_header() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let r = app
        .client
        .post(app.url("/v1/payments"))
        .bearer_auth(&m.api_key)
        .json(&body("FI"))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
}

/// A key that is not visible ASCII (`clé`, sent as UTF-8) was answered as a missing one:
/// it is `invalid` with the rule, as every other invalid key, and nothing is written.
#[tokio::test]
async fn an_idempotency_key_that_is_not_printable_ascii_is_invalid_naming_the_rule() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let long = "k".repeat(256);
    let keys: [&[u8]; 4] = [
        "clé".as_bytes(),
        b"two words",
        b"tab\there",
        long.as_bytes(),
    ];
    for key in keys {
        let r = app
            .client
            .post(app.url("/v1/payments"))
            .bearer_auth(&m.api_key)
            .header(
                "idempotency-key",
                reqwest::header::HeaderValue::from_bytes(key).unwrap(),
            )
            .json(&body("FI"))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(r, 422, "validation_failed").await;
        let error = &problem["errors"][0];
        assert_eq!(error["field"], "Idempotency-Key", "{problem}");
        assert_eq!(error["code"], "invalid", "{problem}");
        assert_eq!(
            error["message"], "must be 1 to 255 printable ASCII characters",
            "{problem}"
        );
    }
    let written: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM payments) + (SELECT count(*) FROM idempotency_keys)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(written, 0);
}

#[tokio::test]
async fn a_bank_that_provably_created_nothing_leaves_the_payment_open_for_the_same_key() {
    let app = spawn_app_full(&[], |c| {
        c.faults = vec![
            serde_json::from_value(json!({"operation": "initiate", "kind": "http503", "times": 1}))
                .unwrap(),
        ];
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let r = app.post_payment(&m.api_key, "k-503", &body("FI")).await;
    let problem = assert_problem(r, 502, "bank_unavailable").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("same Idempotency-Key"),
        "{problem}"
    );
    let payment: (String, String, String, Option<String>) =
        sqlx::query_as("SELECT id::text, status, initiation, failure_code FROM payments")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(payment.1, "awaiting_authorization", "a 503 is no refusal");
    assert_eq!(payment.2, "not_created");
    assert_eq!(payment.3, None);
    // The retry with the same key resumes the same payment at once.
    let again = app.post_payment(&m.api_key, "k-503", &body("FI")).await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], payment.0.as_str());
    assert!(again["authorization_url"].is_string(), "{again}");
    assert_eq!(again["initiation"], "initiated");
    assert_eq!(app.bank_calls(Operation::Initiate), 2);
    assert_eq!(app.bank_payments_for(&payment.0).len(), 1);
    let evs = events(&app, &m.api_key, &payment.0).await;
    assert_eq!(
        kinds(&evs),
        [
            "created",
            "initiation_attempt",
            "initiation_unanswered",
            "initiation_attempt",
            "initiated"
        ]
    );
    assert_eq!(evs[2]["detail"]["outcome"], "not_created");
    // And now it replays.
    let third = app.post_payment(&m.api_key, "k-503", &body("FI")).await;
    assert_eq!(third.headers()["idempotent-replayed"], "true");
    assert_eq!(app.bank_calls(Operation::Initiate), 2);
}

#[tokio::test]
async fn an_explicit_refusal_by_the_bank_ends_failed_and_replays() {
    let app = spawn_app_full(&[], |c| {
        c.expected_originating_host = Some("not-us.example".into());
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let r = app.post_payment(&m.api_key, "k-refused", &body("FI")).await;
    let problem = assert_problem(r, 502, "bank_unavailable").await;
    let payment: (String, String, String, Option<String>) =
        sqlx::query_as("SELECT id::text, status, initiation, failure_code FROM payments")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(payment.1, "failed");
    assert_eq!(payment.3.as_deref(), Some("bank_configuration_error"));
    // A retry with the same key replays the same answer and never calls the bank again.
    let again = app.post_payment(&m.api_key, "k-refused", &body("FI")).await;
    assert_eq!(again.status(), 502);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["content-type"], "application/problem+json");
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        again, problem,
        "the very first answer, its request_id included"
    );
    assert_eq!(app.bank_calls(Operation::Initiate), 1);
    let evs = events(&app, &m.api_key, &payment.0).await;
    assert_eq!(
        kinds(&evs),
        ["created", "initiation_attempt", "initiation_refused"]
    );
}

#[tokio::test]
async fn a_bank_timeout_after_the_commit_is_an_unknown_outcome_not_a_failure() {
    let app = spawn_app_full(&[("PISGATE__NORDEA__REQUEST_TIMEOUT_SECS", "1")], |c| {
        c.faults = vec![
            serde_json::from_value(json!({"operation": "initiate", "kind": "latency", "ms": 3000}))
                .unwrap(),
        ];
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let r = app.post_payment(&m.api_key, "k-slow", &body("DK")).await;
    assert_problem(r, 502, "initiation_outcome_unknown").await;
    let (status, initiation): (String, String) =
        sqlx::query_as("SELECT status, initiation FROM payments")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "awaiting_authorization");
    assert_eq!(initiation, "outcome_unknown");
}

#[tokio::test]
async fn an_interrupted_request_is_resumed_by_a_retry_with_the_same_key() {
    let app =
        crate::helpers::spawn_app_with(&[("PISGATE__PAYMENTS__IDEMPOTENCY_STALE_AFTER_SECS", "2")])
            .await;
    let m = app.create_merchant("Shop").await;
    // A replica that recorded the bank's answer and died before answering the merchant.
    let key = "k-crash";
    let first = app.post_payment(&m.api_key, key, &body("FI")).await;
    assert_eq!(first.status(), 201);
    let id: String = sqlx::query_scalar("SELECT id::text FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE idempotency_keys SET response_status = NULL, response_body = NULL, completed_at = NULL, locked_until = now() + interval '2 seconds'")
        .execute(&app.pool).await.unwrap();
    // Within the in-flight bound: its own code, with a Retry-After.
    let early = app.post_payment(&m.api_key, key, &body("FI")).await;
    assert!(early.headers().contains_key("retry-after"));
    assert_problem(early, 409, "idempotency_key_in_flight").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let retry = app.post_payment(&m.api_key, key, &body("FI")).await;
    assert_eq!(retry.status(), 201);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], id, "the same payment, not a new one");
    assert!(retry["authorization_url"].is_string());
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    // Its bank answer was recorded: the resume never initiates it again.
    assert_eq!(app.bank_calls(Operation::Initiate), 1);
}

#[tokio::test]
async fn listing_pages_through_payments_newest_first_with_filters() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            app.create_payment(&m.api_key, &body("FI")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut path = "/v1/payments?limit=2".to_owned();
    loop {
        let page: Value = app.get_as(&path, &m.api_key).await.json().await.unwrap();
        for p in page["data"].as_array().unwrap() {
            seen.push(p["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/payments?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let none: Value = app
        .get_as("/v1/payments?status=paid", &m.api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    assert_problem(
        app.get_as("/v1/payments?status=nope", &m.api_key).await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.get_as("/v1/payments?limit=1000", &m.api_key).await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.get_as("/v1/payments?cursor=garbage", &m.api_key).await,
        422,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn the_token_the_bank_issued_last_wins_even_when_the_first_exchange_is_slow() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    // Two payments of one shopper (same psu_id), both signed at the bank.
    let p1 = app.create_payment(&m.api_key, &body("FI")).await;
    let p2 = app.create_payment(&m.api_key, &body("FI")).await;
    let cb1 = app
        .sign_at_bank(
            p1["authorization_url"].as_str().unwrap(),
            "psu-latest",
            true,
        )
        .await;
    let cb2 = app
        .sign_at_bank(
            p2["authorization_url"].as_str().unwrap(),
            "psu-latest",
            true,
        )
        .await;
    // The first code exchange is slow at the bank.
    app.sandbox.add_fault(
        serde_json::from_value(
            json!({"operation": "token", "kind": "latency", "ms": 1500, "times": 1}),
        )
        .unwrap(),
    );
    let client = app.client.clone();
    let first = tokio::spawn(async move { client.get(cb1).send().await.unwrap().status() });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let second = app.client.get(cb2).send().await.unwrap().status();
    assert_eq!(first.await.unwrap(), 303);
    assert_eq!(second, 303);

    // Exactly one live token for the shopper, and it is the bank's newest: the bank accepts
    // it (it revoked every older one), for details (funds) and for cancel, on both payments.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM psu_tokens")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    for p in [&p1, &p2] {
        let r = app
            .get_as(
                &format!("/v1/payments/{}/funds", p["id"].as_str().unwrap()),
                &m.api_key,
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let r = app
        .client
        .post(app.url(&format!(
            "/v1/payments/{}/cancel",
            p1["id"].as_str().unwrap()
        )))
        .bearer_auth(&m.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cancelled: Value = r.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let token_calls: Vec<_> = app
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.operation == Some(Operation::Token))
        .collect();
    assert_eq!(token_calls.len(), 2);
    assert!(
        token_calls.iter().all(|r| r.status == Some(200)),
        "both exchanges succeeded at the bank"
    );
}

#[tokio::test]
async fn funds_and_cancel_report_the_banks_answers() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let mut b = body("DK");
    b["creditor"]["message"] = json!("FundsNotAvailable");
    let p = app.create_payment(&m.api_key, &b).await;
    let id = p["id"].as_str().unwrap();
    // Before the shopper is back there is no token.
    let r = app
        .get_as(&format!("/v1/payments/{id}/funds"), &m.api_key)
        .await;
    assert_problem(r, 409, "no_shopper_token").await;
    assert_eq!(
        app.sign(p["authorization_url"].as_str().unwrap(), "psu-f", true)
            .await
            .status(),
        303
    );
    let funds: Value = app
        .get_as(&format!("/v1/payments/{id}/funds"), &m.api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(funds["available"], false);

    // A payment the bank already executed cannot be cancelled: the bank refuses, its status
    // is read, and the payment ends paid with a cancel_too_late event.
    let bank_id = app.get_payment(&m.api_key, id).await["bank_payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.sandbox
        .force_status(&bank_id, Some(pisgate::sandbox::BankStatus::Paid));
    let r = app
        .client
        .post(app.url(&format!("/v1/payments/{id}/cancel")))
        .bearer_auth(&m.api_key)
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "cancel_too_late").await;
    let evs = events(&app, &m.api_key, id).await;
    let tail: Vec<String> = kinds(&evs).into_iter().rev().take(4).rev().collect();
    assert_eq!(
        tail,
        [
            "cancel_requested",
            "cancel_refused",
            "status_changed",
            "cancel_too_late"
        ]
    );
    let now = app.get_payment(&m.api_key, id).await;
    assert_eq!(now["status"], "paid");
    assert_eq!(now["bank_status"], "Paid");
}

#[tokio::test]
async fn a_bearer_call_refused_with_error_date_invalid_keeps_the_token_and_counts_a_configuration_fault()
 {
    let app = spawn_app().await;
    let m = app.create_merchant("Clock shop").await;
    let p = app.create_payment(&m.api_key, &body("DK")).await;
    let id = p["id"].as_str().unwrap();
    assert_eq!(
        app.sign(p["authorization_url"].as_str().unwrap(), "psu-clock", true)
            .await
            .status(),
        303
    );
    // The bank's clock runs ten minutes ahead of ours: it refuses our originating date.
    app.sandbox.set_gateway_clock_offset(600);
    let r = app
        .get_as(&format!("/v1/payments/{id}/funds"), &m.api_key)
        .await;
    let problem = assert_problem(r, 502, "bank_unavailable").await;
    assert!(
        !problem.to_string().contains("no_shopper_token"),
        "{problem}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pisgate_bank_config_errors_total{")
                && l.contains(r#"code="error.date.invalid""#)),
        "{metrics}"
    );
    // The token was never the problem: with the clocks agreeing it serves the next call.
    app.sandbox.set_gateway_clock_offset(0);
    let r = app
        .get_as(&format!("/v1/payments/{id}/funds"), &m.api_key)
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// A gateway in front of the bank that answers a bare 503 (an HTML page, or nothing) after
/// the initiation was sent may have passed it on: the bank may hold the payment.
#[tokio::test]
async fn a_bare_503_from_a_gateway_at_initiation_is_an_unknown_outcome_not_a_payment_never_created()
{
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_raw(
            "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
            "text/html",
        ))
        .mount(&gateway)
        .await;
    let base_url = format!("{}/personal", gateway.uri());
    let app = spawn_app_full(&[("PISGATE__NORDEA__BASE_URL", &base_url)], |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let r = app
        .post_payment(&m.api_key, &Uuid::new_v4().to_string(), &body("FI"))
        .await;
    assert_problem(r, 502, "initiation_outcome_unknown").await;
    let (status, initiation): (String, String) =
        sqlx::query_as("SELECT status, initiation FROM payments")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        status, "awaiting_authorization",
        "never failed on a gateway's word"
    );
    assert_eq!(initiation, "outcome_unknown", "not 'not_created'");
    assert_eq!(
        gateway.received_requests().await.unwrap().len(),
        1,
        "sent once"
    );
}

/// A key that was answered replays its answer whatever today's rules say of the same body
/// (here the merchant has since removed the return URL's origin, so the body is refused
/// when sent with a new key); another body with that key is still a 422 mismatch.
#[tokio::test]
async fn a_replayed_key_is_answered_from_the_stored_response_even_when_todays_rules_refuse_the_body()
 {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let key = Uuid::new_v4().to_string();
    let first = app.post_payment(&m.api_key, &key, &body("FI")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();

    let patched = app
        .client
        .patch(app.url("/v1/merchant"))
        .bearer_auth(&m.api_key)
        .json(&json!({"return_origins": ["https://other-shop.example"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    // Once this replica has heard of the change (its key cache is cleared by NOTIFY)...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let me: Value = app
            .get_as("/v1/merchant", &m.api_key)
            .await
            .json()
            .await
            .unwrap();
        if me["return_origins"] == json!(["https://other-shop.example"]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{me}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // ...the same body is refused today...
    let fresh = app
        .post_payment(&m.api_key, &Uuid::new_v4().to_string(), &body("FI"))
        .await;
    let problem = assert_problem(fresh, 422, "validation_failed").await;
    assert_eq!(crate::helpers::error_fields(&problem), ["return_url"]);

    // ...but its retry with the first key gets the first answer.
    let again = app.post_payment(&m.api_key, &key, &body("FI")).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);

    // Another body under that key is a mismatch, valid today or not.
    let mut other = body("FI");
    other["amount"] = json!("11.00");
    let r = app.post_payment(&m.api_key, &key, &other).await;
    assert_problem(r, 422, "idempotency_key_reused").await;
    other["return_url"] = json!("https://other-shop.example/done");
    let r = app.post_payment(&m.api_key, &key, &other).await;
    assert_problem(r, 422, "idempotency_key_reused").await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}
