//! Deferred initiation (issue 24): a payment whose bank the shopper chooses on pisgate's page,
//! or whose debtor IBAN the shopper gives there, is created without a bank call and initiated
//! on the shopper's submit, under the same truth rules as immediate initiation. Two
//! Nordea-protocol banks on their own sandboxes serve FI.

use crate::helpers::{
    TestApp, fresh_database, ledger_keys, private_key_pem, spawn_app_on, spawn_sandbox,
};
use crate::payments::{body, with};
use crate::truth::{POLLER, ledger_kinds, webhooks_of};
use pisgate::ledger::events::{self, BreakReason};
use pisgate::sandbox::{Fault, FaultRule, FaultTarget, Operation, Sandbox, SandboxConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Nordea (every country) and `second` (FI only) on a sandbox of its own; `extra` settings.
async fn two_banks(
    extra: &[(&str, &str)],
    second_sandbox: impl FnOnce(&mut SandboxConfig),
) -> (TestApp, Arc<Sandbox>) {
    let (second, second_url) = spawn_sandbox(second_sandbox).await;
    let base = format!("{second_url}/personal");
    let key = private_key_pem();
    let mut settings: Vec<(&str, &str)> = vec![
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
    ];
    settings.extend_from_slice(extra);
    let app = spawn_app_on(&fresh_database().await, &settings, |_| {}).await;
    (app, second)
}

fn external_id(id: &str) -> String {
    Uuid::parse_str(id).unwrap().simple().to_string()
}

/// The hop's form target (`…/authorize/{id}`) and token.
fn hop_parts(url: &str) -> (String, String) {
    let (hop, token) = url.split_once("?t=").expect("a hop URL");
    (hop.to_owned(), token.to_owned())
}

async fn get_page(
    app: &TestApp,
    url: &str,
    lang: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let r = app
        .client
        .get(url)
        .header("accept-language", lang)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.text().await.unwrap(), headers)
}

/// Posts one of the hop's forms (`sub`: `bank`, `account`, `initiate`, `cancel`).
async fn submit(app: &TestApp, url: &str, sub: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let (hop, token) = hop_parts(url);
    let mut form: Vec<(&str, &str)> = vec![("t", &token)];
    form.extend_from_slice(fields);
    app.client
        .post(format!("{hop}/{sub}"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

async fn initiation_of(app: &TestApp, id: &str) -> (String, String, i32) {
    sqlx::query_as("SELECT initiation, bank, initiation_attempts FROM payments WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Creates an FI payment with no bank: deferred, nothing sent to any bank.
async fn deferred_payment(app: &TestApp, second: &Sandbox, key: &str) -> Value {
    let p = app.create_payment(key, &body("FI")).await;
    assert_eq!(p["initiation"], "awaiting_bank_choice", "{p}");
    assert_eq!(p["bank"], Value::Null, "{p}");
    assert_eq!(p["status"], "awaiting_authorization");
    assert!(p["bank_payment_id"].is_null());
    let url = p["authorization_url"]
        .as_str()
        .expect("the hop is handed out");
    assert!(url.contains("/authorize/") && url.contains("?t="), "{url}");
    let id = p["id"].as_str().unwrap();
    assert!(app.bank_payments_for(id).is_empty(), "no call at Nordea");
    assert!(
        second.payment_by_external_id(&external_id(id)).is_empty(),
        "no call at Second"
    );
    p
}

#[tokio::test]
async fn several_banks_and_none_named_defer_initiation_to_the_shoppers_choice_on_pisgates_page() {
    let (app, second) = two_banks(&[], |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let p = deferred_payment(&app, &second, &m.api_key).await;
    let id = p["id"].as_str().unwrap();
    let url = p["authorization_url"].as_str().unwrap();

    // The page: one button per bank serving FI, by name; the consent page's headers.
    let (status, html, headers) = get_page(&app, url, "fi").await;
    assert_eq!(status, 200);
    assert!(html.contains("Valitse pankkisi"), "in Finnish: {html}");
    assert!(
        html.contains(">Nordea<") && html.contains(">Second Bank<"),
        "{html}"
    );
    assert!(html.contains("name=\"bank\" value=\"second\""), "{html}");
    assert!(!html.contains("<script"), "no JavaScript");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    // Showing the page records and calls nothing.
    assert_eq!(
        initiation_of(&app, id).await,
        ("awaiting_bank_choice".into(), "".into(), 0)
    );

    // The shopper chooses Second Bank: initiated there, then to the consent step.
    let r = submit(&app, url, "bank", &[("bank", "second")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), url, "back to the hop");
    assert_eq!(second.payment_by_external_id(&external_id(id)).len(), 1);
    assert!(app.bank_payments_for(id).is_empty(), "never at Nordea");
    let now = app.get_payment(&m.api_key, id).await;
    assert_eq!(now["bank"], "second");
    assert_eq!(now["initiation"], "initiated");
    assert_eq!(now["authorization_url"], url, "the same hop");
    let (status, consent, _) = get_page(&app, url, "en").await;
    assert_eq!(status, 200);
    assert!(consent.contains("Continue to Second Bank"), "{consent}");

    // The shopper signs at the second bank; the payment ends as that bank says.
    let back = app.sign(url, "psu-deferred", true).await;
    assert_eq!(back.status(), 303);
    let after = app.get_payment(&m.api_key, id).await;
    assert_eq!(after["status"], "authorized", "{after}");
    let kinds = ledger_kinds(&app, id).await;
    assert_eq!(
        &kinds[..5],
        [
            "created",
            "initiation_deferred",
            "bank_chosen",
            "initiation_attempt",
            "initiated"
        ],
        "{kinds:?}"
    );
    // The choice is bound in the ledger and verifies.
    let report = events::verify_all(&app.pool, &ledger_keys()).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("pisgate_bank_choices_total{bank=\"second\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_bank_that_does_not_serve_the_country_is_not_accepted_from_the_page() {
    let (app, second) = two_banks(&[], |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let p = deferred_payment(&app, &second, &m.api_key).await;
    let url = p["authorization_url"].as_str().unwrap();
    for bank in ["nosuchbank", ""] {
        let r = submit(&app, url, "bank", &[("bank", bank)]).await;
        assert_eq!(r.status(), 422, "{bank:?}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("Choose your bank"),
            "the choice again: {html}"
        );
    }
    let id = p["id"].as_str().unwrap();
    assert_eq!(initiation_of(&app, id).await.0, "awaiting_bank_choice");
    assert!(second.payment_by_external_id(&external_id(id)).is_empty());
}

#[tokio::test]
async fn a_double_submit_of_the_bank_choice_makes_one_signable_bank_payment() {
    // The bank answers slowly, so the submits overlap its call.
    let (app, second) = two_banks(&[], |c| {
        c.faults = vec![FaultRule::always(
            FaultTarget::Initiate,
            Fault::Latency { ms: 700 },
        )];
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let p = deferred_payment(&app, &second, &m.api_key).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let url = p["authorization_url"].as_str().unwrap().to_owned();
    // A double click, a second tab choosing the other bank, and a retry, all at once.
    let (a, b, c, d) = tokio::join!(
        submit(&app, &url, "bank", &[("bank", "second")]),
        submit(&app, &url, "bank", &[("bank", "second")]),
        submit(&app, &url, "bank", &[("bank", "nordea")]),
        submit(&app, &url, "initiate", &[]),
    );
    for r in [a, b, c, d] {
        assert!(
            [303, 409].contains(&r.status().as_u16()),
            "redirected, or told the first is running: {}",
            r.status()
        );
    }
    // Then Back and submit again once it answered.
    let again = submit(&app, &url, "bank", &[("bank", "nordea")]).await;
    assert_eq!(again.status(), 303);
    let at_second = second.payment_by_external_id(&external_id(&id)).len();
    let at_nordea = app.bank_payments_for(&id).len();
    assert_eq!(at_second + at_nordea, 1, "one bank payment in all");
    let kinds = ledger_kinds(&app, &id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "bank_chosen").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "initiated").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "initiation_attempt").count(),
        1,
        "{kinds:?}"
    );
    let view = app.get_payment(&m.api_key, &id).await;
    assert_eq!(view["initiation"], "initiated");
}

#[tokio::test]
async fn an_unknown_outcome_on_the_shoppers_submit_stays_open_and_the_retry_page_resumes_it() {
    let (app, second) = two_banks(&[], |c| {
        c.faults = vec![FaultRule::always(FaultTarget::Initiate, Fault::MalformedJson).times(1)];
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let p = deferred_payment(&app, &second, &m.api_key).await;
    let id = p["id"].as_str().unwrap();
    let url = p["authorization_url"].as_str().unwrap();
    let r = submit(&app, url, "bank", &[("bank", "second")]).await;
    assert_eq!(r.status(), 503);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Please try again") && html.contains("/initiate"),
        "{html}"
    );
    let view = app.get_payment(&m.api_key, id).await;
    assert_eq!(view["initiation"], "outcome_unknown");
    assert_eq!(
        view["status"], "awaiting_authorization",
        "never failed on an unknown"
    );
    // The hop shows the same retry page, never the lost attempt's link.
    let (status, again, _) = get_page(&app, url, "en").await;
    assert_eq!(status, 200);
    assert!(again.contains("/initiate"), "{again}");

    let r = submit(&app, url, "initiate", &[]).await;
    assert_eq!(r.status(), 303);
    let view = app.get_payment(&m.api_key, id).await;
    assert_eq!(view["initiation"], "initiated");
    // The lost attempt's payment is at the bank but not the payment's; only the second is.
    let at_bank = second.payment_by_external_id(&external_id(id));
    assert_eq!(at_bank.len(), 2, "{at_bank:?}");
    assert!(
        at_bank
            .iter()
            .any(|b| Some(b.payment_id.as_str()) == view["bank_payment_id"].as_str())
    );
    let kinds = ledger_kinds(&app, id).await;
    assert_eq!(
        &kinds[..7],
        [
            "created",
            "initiation_deferred",
            "bank_chosen",
            "initiation_attempt",
            "initiation_unanswered",
            "initiation_attempt",
            "initiated"
        ],
        "{kinds:?}"
    );
    let back = app.sign(url, "psu-retried", true).await;
    assert_eq!(back.status(), 303);
    assert_eq!(
        app.get_payment(&m.api_key, id).await["status"],
        "authorized"
    );
}

#[tokio::test]
async fn a_bank_that_needs_the_debtor_account_asks_the_shopper_for_a_valid_iban_first() {
    let (app, second) = two_banks(
        &[("PISGATE__BANKS__SECOND__NEEDS_DEBTOR_ACCOUNT", "true")],
        |_| {},
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let p = app
        .create_payment(&m.api_key, &with(body("FI"), json!({"bank": "second"})))
        .await;
    assert_eq!(p["initiation"], "awaiting_debtor_account", "{p}");
    assert_eq!(p["bank"], "second");
    let id = p["id"].as_str().unwrap();
    let url = p["authorization_url"].as_str().unwrap();
    let (status, html, _) = get_page(&app, url, "sv").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Ditt konto") && html.contains("name=\"iban\""),
        "{html}"
    );

    // Wrong check digits, wrong length, not an IBAN country, not the payment's country, the
    // creditor's own account: the form again, with the error at the field and the value
    // kept; no bank call.
    for (typed, words) in [
        ("FI21 1234 5600 0007 86", "check digits"),
        ("FI21 1234 5600 0007", "wrong length"),
        ("ZZ21 1234 5600 0007 85", "SEPA country"),
        ("", "Enter your IBAN"),
        // Valid IBANs that creation would refuse as the debtor of an FI payment: another
        // country's, and the very account being paid.
        (
            "DE89 3704 0044 0532 0130 00",
            "same country as this payment",
        ),
        ("FI14 1009 3000 1234 58", "account this payment goes to"),
    ] {
        let r = submit(&app, url, "account", &[("iban", typed)]).await;
        assert_eq!(r.status(), 422, "{typed}");
        let html = r.text().await.unwrap();
        assert!(html.contains(words), "{typed}: {html}");
        assert!(html.contains("aria-invalid=\"true\""), "{html}");
        assert!(
            html.contains(&format!("value=\"{typed}\"")),
            "the form keeps it: {html}"
        );
        assert!(
            html.contains("href=\"#iban\""),
            "the summary names the field"
        );
    }
    assert!(
        second.payment_by_external_id(&external_id(id)).is_empty(),
        "no bank call"
    );
    assert_eq!(app.bank_calls(Operation::Initiate), 0);

    let r = submit(&app, url, "account", &[("iban", "fi21 1234 5600 0007 85")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        app.get_payment(&m.api_key, id).await["initiation"],
        "initiated"
    );
    let sent: Vec<_> = second
        .requests()
        .into_iter()
        .filter(|r| r.operation == Some(Operation::Initiate))
        .collect();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].body.contains("FI2112345600000785"),
        "{}",
        sent[0].body
    );
    // The ledger shows it masked and binds its digest.
    let given: Value = sqlx::query_scalar(
        "SELECT detail FROM payment_events WHERE payment_id = $1::uuid AND kind = 'debtor_account_given'",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(given["account"], "FI…0785");
    assert!(!given.to_string().contains("FI2112345600000785"));
    let report = events::verify_all(&app.pool, &ledger_keys()).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test]
async fn a_cancelled_or_expired_deferred_payment_shows_the_closed_page_instead_of_the_forms() {
    let (app, second) = two_banks(&[], |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let cancelled = deferred_payment(&app, &second, &m.api_key).await;
    let id = cancelled["id"].as_str().unwrap();
    let url = cancelled["authorization_url"].as_str().unwrap();
    let r = app
        .client
        .post(app.url(&format!("/v1/payments/{id}/cancel")))
        .bearer_auth(&m.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, html, _) = get_page(&app, url, "en").await;
    assert_eq!(status, 410);
    assert!(
        html.contains("Payment cancelled") && !html.contains("name=\"bank\""),
        "{html}"
    );
    let r = submit(&app, url, "bank", &[("bank", "second")]).await;
    assert_eq!(r.status(), 410);
    assert!(second.payment_by_external_id(&external_id(id)).is_empty());

    let late = deferred_payment(&app, &second, &m.api_key).await;
    let id = late["id"].as_str().unwrap();
    let url = late["authorization_url"].as_str().unwrap();
    sqlx::query("UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, html, _) = get_page(&app, url, "en").await;
    assert_eq!(status, 410);
    assert!(html.contains("Payment link expired"), "{html}");
    let r = submit(&app, url, "bank", &[("bank", "second")]).await;
    assert_eq!(r.status(), 410);
    assert!(second.payment_by_external_id(&external_id(id)).is_empty());
    assert_eq!(initiation_of(&app, id).await.1, "", "no choice recorded");
}

#[tokio::test]
async fn the_late_signing_horizon_ends_a_payment_nobody_chose_a_bank_for() {
    let mut settings = POLLER.to_vec();
    settings.extend_from_slice(&[
        ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
        ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "3"),
    ]);
    let (app, second) = two_banks(&settings, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let p = deferred_payment(&app, &second, &m.api_key).await;
    let id = p["id"].as_str().unwrap().to_owned();
    crate::truth::wait_status(&app, &id, "expired", Duration::from_secs(20)).await;
    let view = app.get_payment(&m.api_key, &id).await;
    assert_eq!(view["failure"]["code"], "not_signed", "{view}");
    assert_eq!(view["bank"], Value::Null);
    assert_eq!(webhooks_of(&app, &id).await, ["payment.expired"]);
    assert_eq!(app.bank_calls(Operation::Initiate), 0);
    assert!(second.payment_by_external_id(&external_id(&id)).is_empty());
}

#[tokio::test]
async fn ledger_verify_catches_a_chosen_bank_edited_in_sql() {
    let (app, second) = two_banks(&[], |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let p = deferred_payment(&app, &second, &m.api_key).await;
    let id: Uuid = p["id"].as_str().unwrap().parse().unwrap();
    let url = p["authorization_url"].as_str().unwrap();
    assert_eq!(
        submit(&app, url, "bank", &[("bank", "second")])
            .await
            .status(),
        303
    );
    let report = events::verify_all(&app.pool, &ledger_keys()).await.unwrap();
    assert!(report.is_ok(), "{report:?}");

    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE payments DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE payments SET bank = 'nordea' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE payments ENABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let report = events::verify_all(&app.pool, &ledger_keys()).await.unwrap();
    let first = report.first_broken.clone().expect("the edit is caught");
    assert_eq!(first.payment_id, id);
    assert_eq!(
        first.reason,
        BreakReason::ShopperChoiceMismatch {
            what: "bank".into()
        },
        "{report:?}"
    );
    let one = pisgate::ledger::verify::verify_payment(&app.pool, &ledger_keys(), id)
        .await
        .unwrap();
    assert!(!one.is_ok(), "{one:?}");

    // A deferred payment nobody chose a bank for, given one in SQL: the created facts
    // bound none.
    let p = deferred_payment(&app, &second, &m.api_key).await;
    let other: Uuid = p["id"].as_str().unwrap().parse().unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE payments DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE payments SET bank = 'second' WHERE id = $1")
        .bind(other)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE payments ENABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let one = pisgate::ledger::verify::verify_payment(&app.pool, &ledger_keys(), other)
        .await
        .unwrap();
    assert_eq!(
        one.first_broken.map(|b| b.reason),
        Some(BreakReason::FactsMismatch)
    );
}

#[tokio::test]
async fn a_deferred_payment_with_merchant_consent_still_shows_the_button_to_the_chosen_bank() {
    let (app, second) = two_banks(&[], |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let p = app
        .create_payment(
            &m.api_key,
            &with(body("FI"), json!({"consent": "merchant"})),
        )
        .await;
    assert_eq!(p["initiation"], "awaiting_bank_choice", "{p}");
    let id = p["id"].as_str().unwrap();
    let url = p["authorization_url"].as_str().unwrap();
    let r = submit(&app, url, "bank", &[("bank", "second")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), url);
    // The form's redirect ends on pisgate's page, whose policy allows the bank's origin.
    let (status, html, headers) = get_page(&app, url, "en").await;
    assert_eq!(status, 200);
    assert!(html.contains("Continue to Second Bank"), "{html}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    let bank_origin = second
        .config()
        .public_base_url
        .trim_end_matches('/')
        .to_owned();
    assert!(csp.contains(&bank_origin), "{csp} allows {bank_origin}");
    let back = app.sign(url, "psu-merchant-consent", true).await;
    assert_eq!(back.status(), 303);
    assert_eq!(
        app.get_payment(&m.api_key, id).await["status"],
        "authorized"
    );
}

#[tokio::test]
async fn the_shoppers_iban_is_never_logged_in_full_and_the_choice_is_logged_with_its_bank() {
    use crate::helpers::{CLIENT_ID, CLIENT_SECRET};
    use pisgate::ledger::Db;
    let (_sandbox, sandbox_url) = spawn_sandbox(|_| {}).await;
    let url = fresh_database().await;
    let pool = Db::from(sqlx::PgPool::connect(&url).await.unwrap());
    let (_, key) =
        pisgate::ledger::merchants::create(&pool, "Log shop", &["https://shop.example".into()])
            .await
            .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    let bank = format!("{sandbox_url}/personal");
    let pem = private_key_pem();
    let serve = crate::serve::Serve::start(
        &url,
        &[
            ("RUST_LOG", "debug"),
            ("PISGATE__NORDEA__BASE_URL", &bank),
            ("PISGATE__NORDEA__ENVIRONMENT", "sandbox"),
            ("PISGATE__BANKS__SECOND__PROTOCOL", "nordea"),
            ("PISGATE__BANKS__SECOND__NAME", "Second Bank"),
            ("PISGATE__BANKS__SECOND__COUNTRIES", "FI"),
            ("PISGATE__BANKS__SECOND__BASE_URL", &bank),
            ("PISGATE__BANKS__SECOND__CLIENT_ID", CLIENT_ID),
            ("PISGATE__BANKS__SECOND__CLIENT_SECRET", CLIENT_SECRET),
            ("PISGATE__BANKS__SECOND__PRIVATE_KEY", &pem),
            ("PISGATE__BANKS__SECOND__ENVIRONMENT", "sandbox"),
            ("PISGATE__BANKS__SECOND__NEEDS_DEBTOR_ACCOUNT", "true"),
        ],
    )
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let created: Value = client
        .post(format!("{}/v1/payments", serve.base))
        .bearer_auth(&key)
        .header("idempotency-key", "log-deferred")
        .json(&json!({
            "amount": "12.00", "currency": "EUR", "bank": "second",
            "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Kauppa"},
            "return_url": "https://shop.example/done"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        created["initiation"], "awaiting_debtor_account",
        "{created}"
    );
    let (hop, token) = hop_parts(created["authorization_url"].as_str().unwrap());
    let post = |iban: &'static str| {
        client
            .post(format!("{hop}/account"))
            .form(&[("t", token.as_str()), ("iban", iban)])
            .send()
    };
    assert_eq!(post("FI21 1234 5600 0007 86").await.unwrap().status(), 422);
    assert_eq!(post("FI21 1234 5600 0007 85").await.unwrap().status(), 303);
    let (_, stdout, stderr, _) = serve.stop().await;
    let logs = format!("{stdout}{stderr}");
    assert!(
        logs.contains("the shopper gave the debtor account"),
        "{logs}"
    );
    assert!(
        logs.contains("FI…0785"),
        "masked, as the rest of the code masks accounts"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("initiating at the shopper's bank")
                && l.contains("\"bank\":\"second\"")),
        "the bank id is on the initiation's log line"
    );
    for full in [
        "FI2112345600000785",
        "FI21 1234 5600 0007 85",
        "FI2112345600000786",
        "FI21 1234 5600 0007 86",
    ] {
        assert!(!logs.contains(full), "{full} appears in the logs");
    }
}

/// An insider rewrites the creditor of a payment waiting for the shopper's bank choice. The
/// bank call is built from the stored row when the shopper chooses, so pisgate first checks
/// the row against the facts its `created` event bound: nothing is sent to any bank, and the
/// shopper gets "try again later" rather than a payment to the insider's account.
#[tokio::test]
async fn a_deferred_payment_whose_creditor_was_rewritten_in_sql_is_never_sent_to_a_bank() {
    let (app, second) = two_banks(&[], |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let p = deferred_payment(&app, &second, &m.api_key).await;
    let id: Uuid = p["id"].as_str().unwrap().parse().unwrap();
    let url = p["authorization_url"].as_str().unwrap();
    crate::binding::as_insider(
        &app,
        id,
        "UPDATE payments SET request = jsonb_set(request, '{creditor,account,value}',
                                                 '\"FI2112345600000785\"')
          WHERE id = $1",
    )
    .await;

    let r = submit(&app, url, "bank", &[("bank", "second")]).await;
    assert_eq!(r.status(), 503, "the shopper is told to try again later");
    assert!(
        second
            .payment_by_external_id(&external_id(&id.to_string()))
            .is_empty(),
        "nothing was sent to the chosen bank"
    );
    assert!(app.bank_payments_for(&id.to_string()).is_empty());
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains("pisgate_ledger_binding_mismatches_total 0"),
        "the refusal is counted: {metrics}"
    );
}

/// After the shopper's choice, pisgate sends the shopper on to the hop it builds from its own
/// public URL and the payment's token, never to the link stored on the row: a link rewritten
/// in SQL (a phishing page) is not followed. Before, the redirect read the row's
/// `authorize_url`.
#[tokio::test]
async fn the_hop_after_the_shoppers_choice_is_never_a_link_rewritten_in_sql() {
    let (app, second) = two_banks(&[], |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let p = deferred_payment(&app, &second, &m.api_key).await;
    let id = p["id"].as_str().unwrap();
    let url = p["authorization_url"].as_str().unwrap();
    crate::binding::as_insider(
        &app,
        id.parse().unwrap(),
        "UPDATE payments SET authorize_url = 'https://phish.example/authorize' WHERE id = $1",
    )
    .await;
    let r = submit(&app, url, "bank", &[("bank", "second")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), url, "back to pisgate's own hop");
    let (_, bank, attempts) = initiation_of(&app, id).await;
    assert_eq!((bank.as_str(), attempts), ("second", 1));
}
