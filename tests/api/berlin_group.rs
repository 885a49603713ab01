//! Payments at a Berlin Group bank, end to end: pisgate (API, hop, consent page, return,
//! poller, ledger events as the webhooks carry them) against the strict Berlin Group
//! simulator (`pisgate sandbox --protocol berlin-group`, in process), which validates every
//! request pisgate sends and every answer it gives against the vendored OpenAPI 1.3.12.

use crate::helpers::{TestApp, TestMerchant, fresh_database, spawn_app_on};
use pisgate::sandbox::berlin_group::{BgSandbox, BgSandboxConfig, serve, test_pki, verify};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The poller on, fast.
const POLLER: &[(&str, &str)] = &[
    ("PISGATE__POLLER__ENABLED", "true"),
    ("PISGATE__POLLER__SIGNING_INTERVAL", "200ms"),
    ("PISGATE__POLLER__LATE_SIGNING_INTERVAL", "300ms"),
    ("PISGATE__POLLER__AUTHORIZED_INTERVAL", "300ms"),
    ("PISGATE__POLLER__IDLE_WAIT", "300ms"),
    ("PISGATE__POLLER__MAX_BACKOFF", "1s"),
];

pub(crate) struct BgBank {
    pub sandbox: Arc<BgSandbox>,
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    pub key_pem: String,
    pub cert_pem: String,
}

/// The simulator on a random port, trusting a fresh test CA whose TPP certificate pisgate
/// signs with; scenario steps every 300 ms.
pub(crate) async fn spawn_bg_sandbox() -> BgBank {
    let pki = test_pki::generate("CN=pisgate test TPP,O=pisgate,C=FI").expect("a test PKI");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let mut config = BgSandboxConfig::new(
        origin.clone(),
        verify::parse_cas(&pki.ca_pem).expect("the CA parses"),
    );
    config.status_step = Duration::from_millis(300);
    let sandbox = BgSandbox::new(config).expect("the simulator builds");
    tokio::spawn(serve(listener, sandbox.clone(), std::future::pending()));
    BgBank {
        sandbox,
        origin,
        key_pem: pki.tpp_key_pem,
        cert_pem: pki.tpp_cert_pem,
    }
}

/// pisgate with Nordea (its sandbox) and the bank `berlin` (FI) on the simulator.
pub(crate) async fn spawn_with_berlin(extra: &[(&str, &str)]) -> (TestApp, BgBank) {
    let bank = spawn_bg_sandbox().await;
    let base = format!("{}/psd2", bank.origin);
    let mut vars: Vec<(&str, &str)> = vec![
        ("PISGATE__BANKS__BERLIN__PROTOCOL", "berlin-group"),
        ("PISGATE__BANKS__BERLIN__NAME", "Berlin Test Bank"),
        ("PISGATE__BANKS__BERLIN__COUNTRIES", "FI"),
        ("PISGATE__BANKS__BERLIN__BASE_URL", &base),
        ("PISGATE__BANKS__BERLIN__PRIVATE_KEY", &bank.key_pem),
        ("PISGATE__BANKS__BERLIN__CERTIFICATE", &bank.cert_pem),
        ("PISGATE__BANKS__BERLIN__ENVIRONMENT", "sandbox"),
        ("PISGATE__BANKS__BERLIN__PSU_IP_FALLBACK", "203.0.113.9"),
        ("PISGATE__BANKS__BERLIN__REQUEST_TIMEOUT_SECS", "5"),
    ];
    vars.extend_from_slice(POLLER);
    vars.extend_from_slice(extra);
    let app = spawn_app_on(&fresh_database().await, &vars, |_| {}).await;
    (app, bank)
}

/// A FI payment at `berlin` for `amount` (the simulator's scenario), from a known IBAN.
pub(crate) fn berlin_payment(amount: &str) -> Value {
    json!({
        "amount": amount,
        "currency": "EUR",
        "country": "FI",
        "bank": "berlin",
        "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"},
                     "name": "Kauppa Oy", "message": "Order 1234"},
        "debtor": {"account": {"type": "IBAN", "value": "FI2112345600000785"}},
        "reference": "order-1234",
        "return_url": "https://shop.example/checkout/done?order=1234",
        "psu_id": "shopper-1",
    })
}

/// How many DELETEs the simulator received.
pub(crate) fn deletes(bank: &BgBank) -> usize {
    bank.sandbox
        .requests()
        .into_iter()
        .filter(|e| e.method == "DELETE")
        .count()
}

/// The id of the app's one payment, once its creation wrote it.
pub(crate) async fn first_payment_id(app: &TestApp) -> String {
    loop {
        let found: Option<String> = sqlx::query_scalar("SELECT id::text FROM payments")
            .fetch_optional(&app.pool)
            .await
            .unwrap();
        if let Some(id) = found {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The shopper passes the hop (consent page, Continue) and lands on the bank's SCA page,
/// whose URL this returns (the page is opened).
pub(crate) async fn to_bank_page(app: &TestApp, payment: &Value) -> String {
    let url = payment["authorization_url"].as_str().expect("a hop link");
    let first = app.client.get(url).send().await.unwrap();
    let hop = if first.status() == 200 {
        crate::helpers::continue_to_bank(&app.client, url).await
    } else {
        first
    };
    assert_eq!(hop.status(), 303, "the hop sends the shopper to the bank");
    let bank_page = hop.headers()["location"].to_str().unwrap().to_owned();
    let page = app.client.get(&bank_page).send().await.unwrap();
    assert_eq!(page.status(), 200, "the bank's SCA page opens: {bank_page}");
    bank_page
}

/// Approves (or refuses) on the bank's page and follows the bank's redirect back to
/// pisgate; returns pisgate's answer (a 303 to the merchant).
pub(crate) async fn decide(app: &TestApp, bank_page: &str, approve: bool) -> reqwest::Response {
    let r = app
        .client
        .post(bank_page)
        .form(&[("decision", if approve { "approve" } else { "refuse" })])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the bank redirects back");
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        back.starts_with(&app.url("/v1/callbacks/return")),
        "the bank returns to pisgate's return path: {back}"
    );
    let returned = app.client.get(&back).send().await.unwrap();
    assert_eq!(returned.status(), 303, "pisgate sends the shopper on");
    let to = returned.headers()["location"].to_str().unwrap();
    assert!(to.starts_with("https://shop.example/checkout/done"), "{to}");
    returned
}

pub(crate) async fn wait_for_status(
    app: &TestApp,
    m: &TestMerchant,
    id: &str,
    want: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = app.get_payment(&m.api_key, id).await;
        if p["status"] == want {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{id} is {} (bank {}), not {want}",
            p["status"],
            p["bank_status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The event types (as webhooks carry them) of a payment, oldest first.
async fn webhook_types(app: &TestApp, m: &TestMerchant, id: &str) -> Vec<String> {
    let r = app
        .get_as(&format!("/v1/events?payment_id={id}&limit=100"), &m.api_key)
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let mut types: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    types.reverse();
    types
}

/// Nothing pisgate sent was refused (but the expected refusals `allowed` by status), and
/// every answer the simulator gave passed its OpenAPI self-check.
pub(crate) fn assert_spec_clean(bank: &BgBank, allowed: &[u16]) {
    let refused: Vec<String> = bank
        .sandbox
        .requests()
        .iter()
        .filter(|e| e.status >= 400 && !allowed.contains(&e.status))
        .map(|e| format!("{} {} -> {} {:?}", e.method, e.path, e.status, e.code))
        .collect();
    assert!(refused.is_empty(), "refused requests: {refused:#?}");
    let failures = bank.sandbox.selfcheck_failures();
    assert!(failures.is_empty(), "answers off the spec: {failures:#?}");
}

#[tokio::test]
async fn berlin_group_redirect_payment_is_paid_on_acsc_through_the_pages_and_webhooks() {
    let (app, bank) = spawn_with_berlin(&[
        ("PISGATE__WEBHOOKS__ENABLED", "true"),
        ("PISGATE__WEBHOOKS__RETRY_SCHEDULE", "200ms,200ms"),
        ("PISGATE__WEBHOOKS__IDLE_WAIT", "200ms"),
    ])
    .await;
    let m = app.create_merchant("Shop").await;
    let receiver = crate::webhooks::Receiver::start(crate::webhooks::Plan::Ok).await;
    receiver
        .register(&app.client, &app.address, &m.api_key)
        .await;
    let p = app
        .create_payment(&m.api_key, &berlin_payment("10.50"))
        .await;
    assert_eq!(p["bank"], "berlin");
    assert_eq!(p["bank_status"], "RCVD");
    assert_eq!(p["status"], "awaiting_authorization");
    let id = p["id"].as_str().unwrap();

    let page = to_bank_page(&app, &p).await;
    decide(&app, &page, true).await;
    let paid = wait_for_status(&app, &m, id, "paid").await;
    assert_eq!(paid["bank_status"], "ACSC");
    let types = webhook_types(&app, &m, id).await;
    assert!(
        types.contains(&"payment.authorized".to_owned())
            && types.last().map(String::as_str) == Some("payment.paid"),
        "{types:?}"
    );
    // The merchant's receiver got them, each signature verified by the receiver.
    let delivered = crate::webhooks::eventually("payment.paid delivered", || {
        let receiver = receiver.clone();
        async move {
            let got: Vec<String> = receiver
                .received()
                .iter()
                .map(|r| r.body["type"].as_str().unwrap_or("").to_owned())
                .collect();
            got.contains(&"payment.paid".to_owned()).then_some(got)
        }
    })
    .await;
    assert!(
        delivered.contains(&"payment.authorized".to_owned()),
        "{delivered:?}"
    );
    // Every request carried a signature the simulator verified, every body and header
    // matched the OpenAPI, and so did every answer.
    assert_spec_clean(&bank, &[]);
    let sent = bank.sandbox.requests();
    assert!(
        sent.iter().all(|e| e
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("signature"))),
        "every request is signed"
    );
}

/// A deployment of Berlin Group banks only: no `[nordea]` credentials at all (blank, as an
/// unset variable is). The bank list is that bank, a payment for its country goes there
/// without naming it and ends paid, a country no bank serves is refused naming `country`, and
/// nothing is ever sent to the Nordea sandbox the harness runs beside it.
#[tokio::test]
async fn a_deployment_without_nordea_takes_payments_at_its_berlin_group_bank() {
    let (app, bank) = spawn_with_berlin(&[
        ("PISGATE__NORDEA__CLIENT_ID", ""),
        ("PISGATE__NORDEA__CLIENT_SECRET", ""),
        ("PISGATE__NORDEA__PRIVATE_KEY", ""),
    ])
    .await;
    assert!(app.settings.nordea.is_none());
    let m = app.create_merchant("Shop").await;
    let list: Value = app
        .get_as("/v1/banks", &m.api_key)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["berlin"]);

    let mut body = berlin_payment("10.50");
    body.as_object_mut().unwrap().remove("bank");
    let p = app.create_payment(&m.api_key, &body).await;
    assert_eq!(p["bank"], "berlin");
    let id = p["id"].as_str().unwrap();
    let page = to_bank_page(&app, &p).await;
    decide(&app, &page, true).await;
    let paid = wait_for_status(&app, &m, id, "paid").await;
    assert_eq!(paid["bank_status"], "ACSC");

    let mut swedish = berlin_payment("10.50");
    swedish["country"] = json!("SE");
    swedish["currency"] = json!("SEK");
    swedish["creditor"]["account"]["value"] = json!("SE4550000000058398257466");
    let fields = swedish.as_object_mut().unwrap();
    fields.remove("bank");
    fields.remove("debtor");
    let r = app
        .post_payment(&m.api_key, &uuid::Uuid::new_v4().to_string(), &swedish)
        .await;
    assert_eq!(r.status(), 422);
    let err: Value = r.json().await.unwrap();
    assert!(
        err.to_string().contains("no_bank_for_country") && err.to_string().contains("\"country\""),
        "names the country: {err}"
    );
    assert!(app.sandbox.requests().is_empty(), "nothing went to Nordea");
    assert_spec_clean(&bank, &[]);
}

#[tokio::test]
async fn berlin_group_statuses_end_each_payment_as_the_bank_says() {
    let (app, bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    // (amount = the simulator's scenario, what pisgate must report)
    let cases = [
        ("77.01", "rejected", "RJCT"),
        ("77.03", "paid", "ACSC"),
        ("77.04", "paid", "ACSC"),
    ];
    let mut ids = Vec::new();
    for (amount, _, _) in cases {
        let p = app
            .create_payment(&m.api_key, &berlin_payment(amount))
            .await;
        let id = p["id"].as_str().unwrap().to_owned();
        if amount == "77.04" {
            // The bank does not know it before the page is opened: the poller's 404s
            // change nothing.
            tokio::time::sleep(Duration::from_millis(800)).await;
            let still = app.get_payment(&m.api_key, &id).await;
            assert_eq!(still["status"], "awaiting_authorization", "{still}");
        }
        let page = to_bank_page(&app, &p).await;
        decide(&app, &page, true).await;
        ids.push(id);
    }
    for ((_, want, bank_status), id) in cases.iter().zip(&ids) {
        let p = wait_for_status(&app, &m, id, want).await;
        assert_eq!(p["bank_status"], *bank_status, "{p}");
    }
    // ACSP for good: authorized, never paid.
    let p = app
        .create_payment(&m.api_key, &berlin_payment("77.02"))
        .await;
    let id = p["id"].as_str().unwrap();
    let page = to_bank_page(&app, &p).await;
    decide(&app, &page, true).await;
    wait_for_status(&app, &m, id, "authorized").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = app.get_payment(&m.api_key, id).await;
    assert_eq!(p["status"], "authorized", "ACSP is never paid: {p}");
    assert_eq!(p["bank_status"], "ACSP");
    // 77.04's reads before the page opened were 404s, the only refusals.
    assert_spec_clean(&bank, &[404]);
}

#[tokio::test]
async fn berlin_group_a_refused_sca_is_authorization_failed_not_rejected() {
    let (app, bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    let p = app
        .create_payment(&m.api_key, &berlin_payment("10.50"))
        .await;
    let id = p["id"].as_str().unwrap();
    let page = to_bank_page(&app, &p).await;
    decide(&app, &page, false).await;
    let failed = wait_for_status(&app, &m, id, "authorization_failed").await;
    assert_eq!(failed["bank_status"], "RJCT");
    let types = webhook_types(&app, &m, id).await;
    assert_eq!(
        types.last().map(String::as_str),
        Some("payment.authorization_failed")
    );
    assert_spec_clean(&bank, &[]);
}

/// The bank's `RJCT` is applied even when its SCA status cannot be read (every
/// `getPaymentInitiationScaStatus` answers 500 here; a real bank answered 400
/// `RESOURCE_EXPIRED` once the SCA was over): the SCA is then unknown and the payment
/// `rejected`. Before, the failed SCA read failed the whole status read, so the payment stayed
/// `authorized` and was polled with backoff for ever.
#[tokio::test]
async fn berlin_group_a_rjct_is_applied_when_the_sca_status_cannot_be_read() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget, Operation};
    let (app, bank) = spawn_with_berlin(&[]).await;
    bank.sandbox.faults().set(vec![FaultRule::always(
        FaultTarget::ScaStatus,
        Fault::Http500,
    )]);
    let m = app.create_merchant("Shop").await;
    // 77.01: ACSP after the SCA, RJCT one step later (no funds at execution).
    let p = app
        .create_payment(&m.api_key, &berlin_payment("77.01"))
        .await;
    let id = p["id"].as_str().unwrap();
    let page = to_bank_page(&app, &p).await;
    decide(&app, &page, true).await;
    let rejected = wait_for_status(&app, &m, id, "rejected").await;
    assert_eq!(rejected["bank_status"], "RJCT", "{rejected}");
    let sca_reads = bank.sandbox.faults().counters()[&Operation::ScaStatus];
    assert!(
        sca_reads.received >= 1 && sca_reads.faulted == sca_reads.received,
        "the SCA status was asked for and never given: {sca_reads:?}"
    );
    assert_eq!(
        webhook_types(&app, &m, id).await.last().map(String::as_str),
        Some("payment.rejected")
    );
    assert_spec_clean(&bank, &[500]);
}

#[tokio::test]
async fn berlin_group_a_merchants_cancel_of_an_opened_unsigned_payment_is_a_delete_at_the_bank() {
    let (app, bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    let p = app
        .create_payment(&m.api_key, &berlin_payment("10.50"))
        .await;
    let id = p["id"].as_str().unwrap();
    to_bank_page(&app, &p).await;
    let r = app
        .client
        .post(app.url(&format!("/v1/payments/{id}/cancel")))
        .bearer_auth(&m.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "cancelled", "{body}");
    assert_eq!(body["bank_status"], "CANC");
    let deletes: Vec<_> = bank
        .sandbox
        .requests()
        .into_iter()
        .filter(|e| e.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].status, 204);

    // 77.06: the bank wants the cancellation authorised; nothing changes until it says so.
    let p = app
        .create_payment(&m.api_key, &berlin_payment("77.06"))
        .await;
    let id = p["id"].as_str().unwrap();
    to_bank_page(&app, &p).await;
    let r = app
        .client
        .post(app.url(&format!("/v1/payments/{id}/cancel")))
        .bearer_auth(&m.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "awaiting_authorization", "{body}");
    let events = app
        .get_as(&format!("/v1/payments/{id}/events"), &m.api_key)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert!(
        events["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "cancel_needs_authorisation"),
        "{events}"
    );
    assert_spec_clean(&bank, &[]);
}

#[tokio::test]
async fn berlin_group_and_nordea_payments_work_in_the_same_run() {
    let (app, bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    let nordea = app
        .create_payment(
            &m.api_key,
            &crate::payments::with(crate::payments::body("FI"), json!({"bank": "nordea"})),
        )
        .await;
    let back = crate::helpers::sign_and_return(&app.client, &nordea, "psu-n").await;
    assert_eq!(back.status(), 303);
    let berlin = app
        .create_payment(&m.api_key, &berlin_payment("10.50"))
        .await;
    let page = to_bank_page(&app, &berlin).await;
    decide(&app, &page, true).await;
    wait_for_status(&app, &m, berlin["id"].as_str().unwrap(), "paid").await;
    let n = app
        .get_payment(&m.api_key, nordea["id"].as_str().unwrap())
        .await;
    assert_eq!(n["bank"], "nordea");
    assert!(
        matches!(n["status"].as_str(), Some("authorized" | "paid")),
        "{n}"
    );
    assert!(
        bank.sandbox.payments().len() == 1,
        "only the berlin payment went to the simulator"
    );
    assert_spec_clean(&bank, &[]);
}

/// What a Berlin Group `transactionStatus` means for pisgate when it is final (the default
/// paid set), or `None` while it is not.
fn bg_final(code: &str) -> Option<&'static str> {
    match code {
        "ACSC" | "ACCC" => Some("paid"),
        "RJCT" => Some("rejected|authorization_failed"),
        "CANC" => Some("cancelled"),
        _ => None,
    }
}

/// Every payment pisgate holds at `berlin` against the simulator's own view of it: a final
/// status only on the bank's final word (RJCT: rejected, or authorization_failed where the
/// shopper's SCA failed), the bank status shown is the bank's once final, `paid` only on
/// ACSC/ACCC, and a payment cancelled without the bank only if nobody opened its SCA page.
async fn bg_sweep(app: &TestApp, bank: &BgBank) -> Vec<String> {
    let rows: Vec<(uuid::Uuid, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT id, status, bank_payment_id, bank_status FROM payments WHERE bank = 'berlin'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut wrong = Vec::new();
    for (id, status, bank_id, bank_status) in rows {
        let Some(at_bank) = bank_id.as_deref().and_then(|b| bank.sandbox.payment(b)) else {
            if status != "awaiting_authorization" && status != "cancelled" {
                wrong.push(format!("{id}: {status} with no payment at the bank"));
            }
            continue;
        };
        let code = at_bank["transactionStatus"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let sca_failed = at_bank["sca_failed"].as_bool().unwrap_or(false);
        let opened = at_bank["opened"].as_bool().unwrap_or(false);
        let is_final = crate::workers::FINAL.contains(&status.as_str());
        match bg_final(&code) {
            Some(want) if is_final => {
                let agrees = match want {
                    "rejected|authorization_failed" => {
                        status
                            == if sca_failed {
                                "authorization_failed"
                            } else {
                                "rejected"
                            }
                    }
                    w => status == w,
                };
                if !agrees {
                    wrong.push(format!(
                        "{id}: pisgate says {status}, the bank {code} (sca failed: {sca_failed})"
                    ));
                }
                if bank_status.as_deref() != Some(code.as_str()) {
                    wrong.push(format!("{id}: shows {bank_status:?}, the bank says {code}"));
                }
            }
            None if is_final && (status != "cancelled" || opened) => {
                wrong.push(format!(
                    "{id}: pisgate says {status}, the bank {code} is not final"
                ));
            }
            _ => {}
        }
        if status == "paid" && !matches!(code.as_str(), "ACSC" | "ACCC") {
            wrong.push(format!("{id}: paid while the bank says {code}"));
        }
    }
    wrong
}

#[tokio::test]
async fn berlin_group_truth_sweep_every_payment_agrees_with_the_bank() {
    let (app, bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    let new = |amount: &'static str| {
        let (app, key) = (&app, m.api_key.clone());
        async move { app.create_payment(&key, &berlin_payment(amount)).await }
    };
    // Signed after a forged refusal on the same return link: the bank's word (paid) stands.
    let forged = new("10.50").await;
    let page = to_bank_page(&app, &forged).await;
    let state_link = {
        let r = app
            .client
            .post(&page)
            .form(&[("decision", "approve")])
            .send()
            .await
            .unwrap();
        r.headers()["location"].to_str().unwrap().to_owned()
    };
    let forged_error = format!("{state_link}&error=access_denied");
    let r = app.client.get(&forged_error).send().await.unwrap();
    assert_eq!(r.status(), 303, "a forged refusal is only a hint");
    let r = app.client.get(&state_link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    // Refused at the bank, then the shopper's (real) refusal return is replayed twice.
    let refused = new("10.50").await;
    let page = to_bank_page(&app, &refused).await;
    decide(&app, &page, false).await;
    // Rejected after acceptance, accepted for good, pending then settled.
    let mut signed = Vec::new();
    for amount in ["77.01", "77.02", "77.03", "12.00"] {
        let p = new(amount).await;
        let page = to_bank_page(&app, &p).await;
        decide(&app, &page, true).await;
        signed.push(p);
    }
    // Walked away on the bank's page, and never opened at all.
    let walked = new("10.50").await;
    to_bank_page(&app, &walked).await;
    let unopened = new("10.50").await;
    // Cancelled by the merchant: one the shopper opened (a DELETE at the bank), one nobody
    // opened (no bank call needed).
    let opened_cancel = new("10.50").await;
    to_bank_page(&app, &opened_cancel).await;
    let unopened_cancel = new("10.50").await;
    for p in [&opened_cancel, &unopened_cancel] {
        let r = app
            .client
            .post(app.url(&format!(
                "/v1/payments/{}/cancel",
                p["id"].as_str().unwrap()
            )))
            .bearer_auth(&m.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let id = |p: &Value| p["id"].as_str().unwrap().to_owned();
    wait_for_status(&app, &m, &id(&forged), "paid").await;
    wait_for_status(&app, &m, &id(&refused), "authorization_failed").await;
    for (p, want) in signed
        .iter()
        .zip(["rejected", "authorized", "paid", "paid"])
    {
        wait_for_status(&app, &m, &id(p), want).await;
    }
    for p in [&walked, &unopened] {
        let now = app.get_payment(&m.api_key, &id(p)).await;
        assert_eq!(now["status"], "awaiting_authorization", "{now}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_berlin: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE bank = 'berlin'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(at_berlin, 10, "the sweep compares every one of them");
    let wrong = bg_sweep(&app, &bank).await;
    assert!(wrong.is_empty(), "disagreements with the bank: {wrong:#?}");
    assert_eq!(
        app.get_payment(&m.api_key, &id(&signed[1])).await["status"],
        "authorized",
        "ACSP for good is never paid"
    );
    assert_spec_clean(&bank, &[]);
}

/// The shopper's decision on the simulator's OAuth authorize page (its form posts the
/// hidden fields back); returns where the bank's authorisation server sends the browser.
async fn decide_oauth(app: &TestApp, page_url: &str, approve: bool) -> String {
    let html = app
        .client
        .get(page_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let action = html
        .split("action=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the authorize page has a form")
        .replace("&amp;", "&");
    let mut form: Vec<(String, String)> = html
        .split("<input type=\"hidden\" ")
        .skip(1)
        .map(|chunk| {
            let field = |name: &str| {
                chunk
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("")
                    .replace("&amp;", "&")
            };
            (field("name"), field("value"))
        })
        .collect();
    form.push((
        "decision".into(),
        if approve { "approve" } else { "refuse" }.into(),
    ));
    let base = reqwest::Url::parse(page_url).unwrap();
    let r = app
        .client
        .post(base.join(&action).unwrap())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the authorisation server redirects back");
    r.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn berlin_group_oauth_sca_exchanges_the_code_with_its_own_pkce_verifier_and_ends_paid() {
    let (app, bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    // 77.08: the bank answers the initiation with scaOAuth (RFC 8414 metadata).
    let p = app
        .create_payment(&m.api_key, &berlin_payment("77.08"))
        .await;
    let id = p["id"].as_str().unwrap();
    let page = to_bank_page(&app, &p).await;
    assert!(page.contains("/oauth/authorize?"), "{page}");
    assert!(page.contains("code_challenge_method=S256"), "{page}");
    let back = decide_oauth(&app, &page, true).await;
    assert!(
        back.starts_with(&app.url("/v1/callbacks/return?")) && back.contains("code="),
        "{back}"
    );
    let r = app.client.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let paid = wait_for_status(&app, &m, id, "paid").await;
    assert_eq!(paid["bank_status"], "ACSC");
    let kinds: Vec<String> = app
        .get_as(&format!("/v1/payments/{id}/events"), &m.api_key)
        .await
        .json::<Value>()
        .await
        .unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kinds.contains(&"oauth_code_exchanged".to_owned()),
        "{kinds:?}"
    );
    // The verifier is kept sealed, never in the clear.
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT sca_pkce_verifier FROM payments WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let sealed = sealed.expect("the verifier is stored");
    assert!(sealed.len() > 43 && !sealed.iter().all(|b| b.is_ascii_alphanumeric()));
    // A replayed return exchanges nothing twice.
    let again = app.client.get(&back).send().await.unwrap();
    assert_eq!(again.status(), 303);

    // A second payment gets a PKCE challenge of its own (the simulator refuses a reused one).
    let q = app
        .create_payment(&m.api_key, &berlin_payment("77.08"))
        .await;
    let second = to_bank_page(&app, &q).await;
    let challenge = |u: &str| {
        reqwest::Url::parse(u)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code_challenge")
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    assert_ne!(challenge(&page), challenge(&second));
    // Refused at the authorisation server: authorization_failed.
    let back = decide_oauth(&app, &second, false).await;
    assert!(back.contains("error=access_denied"), "{back}");
    app.client.get(&back).send().await.unwrap();
    wait_for_status(&app, &m, q["id"].as_str().unwrap(), "authorization_failed").await;
    assert_spec_clean(&bank, &[]);
}

/// The shopper approved at the bank's authorisation server and came back with the code, and
/// the authorisation server was not ready (its metadata answered 503, twice). Before, the
/// return took that for a refusal: the state was used up and the code never sent, so the
/// approval never reached the bank. Now the exchange is tried again while the code provably
/// was not sent, the shopper is not held, and the payment ends paid.
#[tokio::test]
async fn berlin_group_an_oauth_code_the_bank_was_not_ready_for_is_exchanged_when_it_is() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    let p = app
        .create_payment(&m.api_key, &berlin_payment("77.08"))
        .await;
    let id = p["id"].as_str().unwrap();
    let page = to_bank_page(&app, &p).await;
    let back = decide_oauth(&app, &page, true).await;
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Token, Fault::Http503).times(2),
    ]);
    let r = app.client.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let paid = wait_for_status(&app, &m, id, "paid").await;
    assert_eq!(paid["bank_status"], "ACSC");
    let exchanged: Vec<Value> = sqlx::query_scalar(
        "SELECT detail FROM payment_events WHERE payment_id = $1::uuid AND kind = 'oauth_code_exchanged'",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(exchanged.len(), 1);
    assert_eq!(exchanged[0]["tries"], 3, "{exchanged:?}");
    let faulted = bank.sandbox.faults().counters()[&pisgate::sandbox::Operation::Token].faulted;
    assert_eq!(faulted, 2);
}

/// The shopper passes the hop of a decoupled payment: the consent page's button leads to the
/// PSU-ID form, whose post starts the authorisation; returns the authorisation's id.
async fn decoupled_start(app: &TestApp, payment: &Value, psu_id: &str) -> String {
    let hop = payment["authorization_url"].as_str().unwrap();
    let form = crate::helpers::continue_to_bank(&app.client, hop).await;
    assert_eq!(form.status(), 200, "the PSU-ID form");
    let (url, token) = hop.split_once("?t=").unwrap();
    let r = app
        .client
        .post(format!("{url}/psu"))
        .form(&[("t", token), ("psu_id", psu_id)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "on to the waiting page");
    let id = payment["id"].as_str().unwrap();
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT sca_authorisation_id FROM payments WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
    .expect("the authorisation is recorded")
}

#[tokio::test]
async fn berlin_group_decoupled_sca_on_the_simulator_ends_paid_and_its_timeout_authorization_failed()
 {
    let (app, bank) =
        spawn_with_berlin(&[("PISGATE__BANKS__BERLIN__SCA_APPROACH", "decoupled")]).await;
    let m = app.create_merchant("Shop").await;
    // Approved in the bank's app (77.07: decoupled whatever the TPP prefers).
    let p = app
        .create_payment(&m.api_key, &berlin_payment("77.07"))
        .await;
    let aid = decoupled_start(&app, &p, "psu-4711").await;
    bank.sandbox
        .decide(&aid, true)
        .expect("the bank takes the approval");
    let paid = wait_for_status(&app, &m, p["id"].as_str().unwrap(), "paid").await;
    assert_eq!(paid["bank_status"], "ACSC");
    // Never approved (77.05): the bank's decoupled timeout, RJCT with scaStatus failed.
    let q = app
        .create_payment(&m.api_key, &berlin_payment("77.05"))
        .await;
    decoupled_start(&app, &q, "psu-4712").await;
    bank.sandbox.advance_clock(Duration::from_secs(31));
    let failed = wait_for_status(&app, &m, q["id"].as_str().unwrap(), "authorization_failed").await;
    assert_eq!(failed["bank_status"], "RJCT");
    // The PSU-ID went to the bank as a header of the start, nowhere else.
    let starts: Vec<_> = bank
        .sandbox
        .requests()
        .into_iter()
        .filter(|e| e.method == "POST" && e.path.ends_with("/authorisations"))
        .collect();
    assert_eq!(starts.len(), 2);
    assert!(starts.iter().all(|e| {
        e.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("psu-id") && v.starts_with("psu-47"))
    }));
    assert_spec_clean(&bank, &[]);
}

/// The bank refused to process the initiation (its own 503: provably nothing made), then
/// its status reads fail for a while (503s, a garbled answer): the merchant gets 502
/// `bank_unavailable`, the same key resumes the payment with a second attempt (a bank that
/// may act without the shopper made nothing that could be live), and it ends paid once the
/// reads come back. One payment at the bank. (A lost answer there is never resumed:
/// `berlin_group_a_lost_answer_at_a_bank_that_exempts_is_never_initiated_again_cancelled_or_expired`.)
#[tokio::test]
async fn berlin_group_an_initiation_the_bank_did_not_process_is_resumed_by_the_same_key() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, bank) = spawn_with_berlin(&[]).await;
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Initiate, Fault::Http503).times(1),
    ]);
    let m = app.create_merchant("Shop").await;
    let first = app
        .post_payment(&m.api_key, "k-bg-lost", &berlin_payment("10.50"))
        .await;
    crate::helpers::assert_problem(first, 502, "bank_unavailable").await;
    assert!(bank.sandbox.payments().is_empty(), "the bank made nothing");

    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Status, Fault::Http503).times(3),
        FaultRule::always(FaultTarget::Status, Fault::MalformedJson).times(1),
    ]);
    let retry = app
        .post_payment(&m.api_key, "k-bg-lost", &berlin_payment("10.50"))
        .await;
    assert_eq!(retry.status(), 201);
    let p: Value = retry.json().await.unwrap();
    let id = p["id"].as_str().unwrap();
    let page = to_bank_page(&app, &p).await;
    decide(&app, &page, true).await;
    let paid = wait_for_status(&app, &m, id, "paid").await;
    assert_eq!(paid["bank_status"], "ACSC");
    assert_eq!(bank.sandbox.payments().len(), 1, "one payment at the bank");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "one payment for one key");
    let attempts: i32 = sqlx::query_scalar("SELECT initiation_attempts FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    let faulted: u64 = bank
        .sandbox
        .faults()
        .counters()
        .values()
        .map(|c| c.faulted)
        .sum();
    assert_eq!(faulted, 5, "every injected fault was met");
}

/// A bank that exempts a payment from SCA at initiation (77.09: `scaStatus: exempted`, only
/// `self` and `status` links) made it and will execute it with nobody at the hop: pisgate
/// keeps its id and follows it to paid (before, the answer was "unexpected", the id was lost,
/// a retry made a second payment and the first ended `expired` while the bank paid it). A
/// merchant's cancel of such a payment goes to the bank, never decided locally as "nobody
/// could sign it".
#[tokio::test]
async fn berlin_group_an_sca_exemption_at_initiation_is_followed_to_paid_and_never_cancelled_locally()
 {
    let (app, bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    let p = app
        .create_payment(&m.api_key, &berlin_payment("77.09"))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    assert_eq!(p["status"], "awaiting_authorization", "{p}");
    assert!(
        p["bank_payment_id"].is_string(),
        "the bank's id is kept: {p}"
    );
    // A shopper who opens the link anyway is told the bank has it and needs nothing more
    // (not "not ready, try again"), with the way back to the shop; nothing is opened.
    let hop = p["authorization_url"].as_str().unwrap();
    for r in [
        app.client.get(hop).send().await.unwrap(),
        crate::helpers::continue_to_bank(&app.client, hop).await,
    ] {
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("location").is_none());
        let html = r.text().await.unwrap();
        assert!(html.contains("Payment sent to your bank"), "{html}");
        assert!(html.contains("Return to the shop"), "{html}");
    }
    // Nobody opens anything: the bank executes it by itself.
    let paid = wait_for_status(&app, &m, &id, "paid").await;
    assert_eq!(paid["bank_status"], "ACSC", "{paid}");

    // The merchant cancels the next one at once: the bank decides (it refuses: its SCA was
    // exempted and it is executing), and pisgate follows the bank to paid.
    let p = app
        .create_payment(&m.api_key, &berlin_payment("77.09"))
        .await;
    let second = p["id"].as_str().unwrap().to_owned();
    let r = app
        .client
        .post(app.url(&format!("/v1/payments/{second}/cancel")))
        .bearer_auth(&m.api_key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_ne!(body["status"], "cancelled", "{status} {body}");
    let deletes = deletes(&bank);
    assert_eq!(deletes, 1, "the cancel asked the bank");
    wait_for_status(&app, &m, &second, "paid").await;
    let initiations = bank
        .sandbox
        .requests()
        .into_iter()
        .filter(|e| e.method == "POST" && e.path.contains("/payments/"))
        .count();
    assert_eq!(initiations, 2, "one bank payment per merchant payment");
}

/// The merchant's cancel of a payment.
async fn cancel(app: &TestApp, m: &TestMerchant, id: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(&format!("/v1/payments/{id}/cancel")))
        .bearer_auth(&m.api_key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A bank that exempts a payment from SCA (77.09) executes it with nobody at the hop, so an
/// initiation whose answer was lost may be live there. Before, a retry with the same key
/// made a second payment at the bank (both executed: paid twice for one key), a cancel
/// ended it `cancelled` locally and the horizon `expired` it, while the bank paid the
/// first. Now the first answer says no retry resumes it, the retry is refused
/// (`initiation_not_resumable`) with nothing sent, the cancel is left to the bank (202),
/// and the horizon keeps it open for an operator.
#[tokio::test]
async fn berlin_group_a_lost_answer_at_a_bank_that_exempts_is_never_initiated_again_cancelled_or_expired()
 {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, bank) = spawn_for_the_horizon().await;
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Initiate, Fault::DropAfterProcessing).times(1),
    ]);
    let m = app.create_merchant("Shop").await;
    let first = app
        .post_payment(&m.api_key, "k-exempt-lost", &berlin_payment("77.09"))
        .await;
    assert_eq!(first.status(), 502);
    let problem: Value = first.json().await.unwrap();
    assert_eq!(problem["code"], "initiation_outcome_unknown", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("does not initiate it again"),
        "{problem}"
    );
    assert_eq!(bank.sandbox.payments().len(), 1);

    let retry = app
        .post_payment(&m.api_key, "k-exempt-lost", &berlin_payment("77.09"))
        .await;
    crate::helpers::assert_problem(retry, 409, "initiation_not_resumable").await;
    assert_eq!(
        bank.sandbox.payments().len(),
        1,
        "no second payment at the bank"
    );

    let id: String = sqlx::query_scalar("SELECT id::text FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (code, body) = cancel(&app, &m, &id).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "awaiting_authorization", "{body}");

    // Past the horizon the poller looks again later; it never expires it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, rescheduled): (String, bool) = sqlx::query_as(
            "SELECT p.status, COALESCE(s.next_poll_at > p.sign_horizon_at + interval '1 second', false)
               FROM payments p LEFT JOIN payment_polls s ON s.payment_id = p.id
              WHERE p.id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(status, "awaiting_authorization", "never ended here");
        if rescheduled && chrono::Utc::now() > app_horizon(&app, &id).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poller never looked past the horizon"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deletes = deletes(&bank);
    assert_eq!(deletes, 0);
    assert_eq!(bank.sandbox.payments().len(), 1);
}

async fn app_horizon(app: &TestApp, id: &str) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("SELECT sign_horizon_at FROM payments WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A payment of `amount` whose initiation the bank answers late (`delay_ms`), cancelled by
/// the merchant while it is at the bank: the cancel is left to the bank (202, the payment
/// still open), and the creation then answers 201. The app, the bank, the merchant and the
/// payment's id.
async fn cancelled_while_initiating(
    amount: &str,
    delay_ms: u64,
) -> (TestApp, BgBank, TestMerchant, String) {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, bank) = spawn_with_berlin(&[]).await;
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Initiate, Fault::DelayAnswer { ms: delay_ms }).times(1),
    ]);
    let m = app.create_merchant("Shop").await;
    let creating = {
        let client = app.client.clone();
        let url = app.url("/v1/payments");
        let key = m.api_key.clone();
        let body = berlin_payment(amount);
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", "k-cancelled-in-flight")
                .json(&body)
                .send()
                .await
                .unwrap()
        })
    };
    let id = first_payment_id(&app).await;
    let (code, body) = cancel(&app, &m, &id).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "awaiting_authorization", "{body}");
    assert_eq!(creating.await.unwrap().status(), 201);
    (app, bank, m, id)
}

/// A merchant's cancel while the initiation is still at a bank that exempts it: before, it
/// ended the payment `cancelled` at once ("nobody could sign it"), the bank's answer then
/// arriving was kept only as an orphan, and the bank paid a payment pisgate called
/// cancelled. Now the cancel is left to the bank (202), the answer is recorded and followed,
/// and the payment ends as the bank says: paid.
#[tokio::test]
async fn berlin_group_a_cancel_during_the_initiation_at_a_bank_that_exempts_follows_the_bank() {
    let (app, bank, m, id) = cancelled_while_initiating("77.09", 2500).await;
    let paid = wait_for_status(&app, &m, &id, "paid").await;
    assert_eq!(paid["bank_status"], "ACSC", "{paid}");
    assert_eq!(bank.sandbox.payments().len(), 1);
}

/// The shopper chose a bank that exempts the payment (77.09) on pisgate's page, and the
/// bank's answer to that initiation was lost: the page offered "try again", and a second
/// submit made a second payment there (both executed). Now the page says to check with the
/// bank before paying again, and a submit sends nothing.
#[tokio::test]
async fn berlin_group_the_shoppers_page_never_initiates_again_after_a_lost_answer_at_a_bank_that_exempts()
 {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, bank) = spawn_with_berlin(&[]).await;
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Initiate, Fault::DropAfterProcessing).times(1),
    ]);
    let m = app.create_merchant("Shop").await;
    let mut body = berlin_payment("77.09");
    body.as_object_mut().unwrap().remove("bank");
    let p = app.create_payment(&m.api_key, &body).await;
    assert_eq!(p["initiation"], "awaiting_bank_choice", "{p}");
    let url = p["authorization_url"].as_str().unwrap();
    let (hop, token) = url.split_once("?t=").unwrap();
    let post = |sub: &'static str, fields: Vec<(&'static str, &'static str)>| {
        let mut form: Vec<(&str, &str)> = vec![("t", token)];
        form.extend(fields);
        let client = app.client.clone();
        let to = format!("{hop}/{sub}");
        async move { client.post(to).form(&form).send().await.unwrap() }
    };
    let first = post("bank", vec![("bank", "berlin")]).await;
    assert_eq!(first.status(), 502);
    let html = first.text().await.unwrap();
    assert!(html.contains("Check with your bank"), "{html}");
    assert!(!html.contains("/initiate"), "no retry offered: {html}");
    assert_eq!(bank.sandbox.payments().len(), 1);

    // The hop, and a submit of the old retry form, send nothing more.
    let again = app.client.get(url).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert!(again.text().await.unwrap().contains("Check with your bank"));
    let retry = post("initiate", vec![]).await;
    assert_eq!(retry.status(), 200);
    assert!(retry.text().await.unwrap().contains("Check with your bank"));
    assert_eq!(
        bank.sandbox.payments().len(),
        1,
        "no second payment at the bank"
    );
    let view = app.get_payment(&m.api_key, p["id"].as_str().unwrap()).await;
    assert_eq!(view["initiation"], "outcome_unknown", "{view}");
    assert_eq!(view["status"], "awaiting_authorization");
}

/// A merchant's cancel while the initiation of a payment the bank will want the shopper to
/// sign (a redirect) is still at the bank: left to the bank (202); once the answer is in,
/// the bank is asked to delete it at once (before, nothing was sent until the horizon, and a
/// decoupled approval pushed to the shopper's app could still be signed), and it ends
/// `cancelled` on the bank's word.
#[tokio::test]
async fn berlin_group_a_cancel_during_a_redirect_initiation_deletes_it_once_the_answer_is_in() {
    let (app, bank, m, id) = cancelled_while_initiating("10.50", 1500).await;
    let cancelled = wait_for_status(&app, &m, &id, "cancelled").await;
    assert_eq!(cancelled["bank_status"], "CANC", "{cancelled}");
    let deletes = deletes(&bank);
    assert_eq!(deletes, 1, "the bank was asked");
}

/// The shopper's own submit on pisgate's page (a deferred payment) whose tab closed while the
/// bank call ran: the call and its recording ran on, so the bank's answer is recorded (and
/// not left `pending`, which at a bank that may act without the shopper is beyond reach).
#[tokio::test]
async fn berlin_group_a_shoppers_submit_cut_off_midway_is_recorded() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, bank) = spawn_with_berlin(&[]).await;
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Initiate, Fault::DelayAnswer { ms: 1500 }).times(1),
    ]);
    let m = app.create_merchant("Shop").await;
    let mut body = berlin_payment("10.50");
    body.as_object_mut().unwrap().remove("bank");
    let p = app.create_payment(&m.api_key, &body).await;
    let url = p["authorization_url"].as_str().unwrap();
    let (hop, token) = url.split_once("?t=").unwrap();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{hop}/bank"))
        .form(&[("t", token), ("bank", "berlin")])
        .send()
        .await;
    assert!(
        gave_up.is_err(),
        "the shopper's browser gave up: {gave_up:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (initiation, bank_id): (String, Option<String>) =
            sqlx::query_as("SELECT initiation, bank_payment_id FROM payments WHERE id = $1::uuid")
                .bind(p["id"].as_str().unwrap())
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if initiation == "initiated" {
            assert!(bank_id.is_some());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bank's answer was never recorded ({initiation})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bank.sandbox.payments().len(), 1);
}

/// A merchant whose client gives up while the bank call is running (its own timeout, a
/// dropped connection) cut the request, and with it the bank call and the recording of its
/// answer: the bank made the payment, pisgate kept the attempt `pending` with no id, and
/// at a bank that exempts it that payment was beyond reach. The call and its recording now
/// run to their end on their own: the answer is recorded, and the key's retry replays it.
#[tokio::test]
async fn berlin_group_a_creation_the_merchant_gave_up_on_is_recorded_and_replayed() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, bank) = spawn_with_berlin(&[]).await;
    bank.sandbox.faults().set(vec![
        FaultRule::always(FaultTarget::Initiate, Fault::DelayAnswer { ms: 1500 }).times(1),
    ]);
    let m = app.create_merchant("Shop").await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(app.url("/v1/payments"))
        .bearer_auth(&m.api_key)
        .header("idempotency-key", "k-gave-up")
        .json(&berlin_payment("10.50"))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out: {gave_up:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (id, initiation) = loop {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT id::text, initiation FROM payments WHERE bank_payment_id IS NOT NULL",
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        if let Some(row) = row {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "the bank's answer was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(initiation, "initiated");
    let replay = app
        .post_payment(&m.api_key, "k-gave-up", &berlin_payment("10.50"))
        .await;
    assert_eq!(replay.status(), 201);
    let p: Value = replay.json().await.unwrap();
    assert_eq!(p["id"], id.as_str(), "{p}");
    assert!(p["authorization_url"].is_string(), "{p}");
    assert_eq!(bank.sandbox.payments().len(), 1, "one payment at the bank");
}

/// The bank's links are stored beside the bound bank id but are not bound themselves: an
/// insider who copies a paid payment's links onto an unsigned one at the same bank does not
/// get the paid one's status applied to it (nor its DELETE sent to the other): a link must
/// name the payment's own bank id.
#[tokio::test]
async fn berlin_group_a_link_copied_from_another_payment_is_never_followed() {
    let (app, bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    let paid = app
        .create_payment(&m.api_key, &berlin_payment("10.50"))
        .await;
    let paid_id = paid["id"].as_str().unwrap().to_owned();
    let page = to_bank_page(&app, &paid).await;
    decide(&app, &page, true).await;
    wait_for_status(&app, &m, &paid_id, "paid").await;

    let victim = app
        .create_payment(&m.api_key, &berlin_payment("10.60"))
        .await;
    let victim_id: uuid::Uuid = victim["id"].as_str().unwrap().parse().unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE payments DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    let changed = sqlx::query(
        "UPDATE payments SET bank_links = (SELECT bank_links FROM payments WHERE id = $2)
          WHERE id = $1",
    )
    .bind(victim_id)
    .bind(paid_id.parse::<uuid::Uuid>().unwrap())
    .execute(&mut *tx)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 1);
    sqlx::query("ALTER TABLE payments ENABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let reads_before = bank.sandbox.requests().len();
    // The poller comes round several times (200-300 ms intervals): the victim stays open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = app.get_payment(&m.api_key, &victim_id.to_string()).await;
    assert_eq!(v["status"], "awaiting_authorization", "{v}");
    assert_ne!(v["bank_status"], "ACSC", "{v}");
    // No read of the paid payment's links was made for the victim.
    let paid_bank_id = app.get_payment(&m.api_key, &paid_id).await["bank_payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let followed = bank.sandbox.requests()[reads_before..]
        .iter()
        .filter(|e| e.path.contains(&paid_bank_id))
        .count();
    assert_eq!(followed, 0, "the copied link was followed");
}

/// A 77.10 payment the shopper signed at the bank and came back from, that return
/// backdated past the poller's "just returned" guard.
async fn signed_and_returned_long_ago(app: &TestApp, m: &TestMerchant) -> Value {
    let returned = app
        .create_payment(&m.api_key, &berlin_payment("77.10"))
        .await;
    let page = to_bank_page(app, &returned).await;
    decide(app, &page, true).await;
    returned_long_ago(app, returned["id"].as_str().unwrap()).await;
    returned
}

/// The bank still holds the payment `RCVD` and pisgate never asked it to delete it; the
/// bank calls made for it.
async fn still_rcvd_and_never_deleted(
    app: &TestApp,
    bank: &BgBank,
    id: &str,
) -> Vec<(String, String, u16)> {
    let (calls, at_bank) = at_the_bank(app, bank, id).await;
    assert_eq!(at_bank["transactionStatus"], "RCVD", "{at_bank}");
    assert!(
        !calls.iter().any(|(m, _, _)| m == "DELETE"),
        "never asked to delete: {calls:?}"
    );
    calls
}

/// pisgate and the simulator for the late-signing horizon: a signing window of 1 s and a
/// horizon of 3 s.
pub(crate) async fn spawn_for_the_horizon() -> (TestApp, BgBank) {
    spawn_with_berlin(&[
        ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
        ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "3"),
    ])
    .await
}

/// The shopper approves on the bank's page, and the bank redirects back; the browser never
/// follows it (the tab was closed): pisgate never sees the shopper come back.
async fn approve_and_close_the_tab(app: &TestApp, bank_page: &str) {
    let r = app
        .client
        .post(bank_page)
        .form(&[("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the bank redirects back");
}

/// The bank's id of a payment, its requests at the simulator (method, operationId, status)
/// and the simulator's view of it.
async fn at_the_bank(
    app: &TestApp,
    bank: &BgBank,
    id: &str,
) -> (Vec<(String, String, u16)>, Value) {
    let bank_id: String =
        sqlx::query_scalar("SELECT bank_payment_id FROM payments WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let calls = bank
        .sandbox
        .requests()
        .into_iter()
        .filter(|e| e.path.contains(&bank_id))
        .map(|e| (e.method, e.operation.unwrap_or("").to_owned(), e.status))
        .collect();
    (calls, bank.sandbox.payment(&bank_id).expect("at the bank"))
}

/// The shopper's return to pisgate as if it were long ago: the poller leaves a payment
/// whose shopper came back in the last five minutes to the callback's own status read, and
/// a real horizon is much further from the return than this test's 3 s.
async fn returned_long_ago(app: &TestApp, id: &str) {
    let updated = sqlx::query(
        "UPDATE payments SET state_used_at = now() - interval '10 minutes' WHERE id = $1::uuid AND state_used_at IS NOT NULL",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(updated, 1, "the shopper came back");
}

async fn sleep_past_the_horizon(app: &TestApp, id: &str, by: Duration) {
    let horizon: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT sign_horizon_at FROM payments WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let until = horizon + chrono::Duration::from_std(by).unwrap();
    tokio::time::sleep((until - chrono::Utc::now()).to_std().unwrap_or_default()).await;
}

/// A payment signed at the bank is never deleted at the late-signing horizon, even while
/// the bank still shows it `RCVD` and would take a DELETE as enough to cancel it (77.10):
/// the bank's SCA status (`finalised`) is the proof it was signed, whether or not the
/// shopper came back to pisgate. It stays `awaiting_authorization` (the bank's RCVD),
/// followed to the bank's own word. A payment the shopper opened at the bank but never
/// signed is still deleted there and `expired`. Before, the poller sent the DELETE for all
/// three (it only looked for a shopper token, which Berlin Group never gives), the bank
/// cancelled the two signed ones, and pisgate recorded them `expired` "not signed".
#[tokio::test]
async fn berlin_group_a_signed_payment_the_bank_still_shows_rcvd_is_never_deleted_at_the_horizon() {
    let (app, bank) = spawn_for_the_horizon().await;
    let m = app.create_merchant("Shop").await;
    let returned = signed_and_returned_long_ago(&app, &m).await;
    let closed = app
        .create_payment(&m.api_key, &berlin_payment("77.10"))
        .await;
    let page = to_bank_page(&app, &closed).await;
    approve_and_close_the_tab(&app, &page).await;
    let walked = app
        .create_payment(&m.api_key, &berlin_payment("77.10"))
        .await;
    to_bank_page(&app, &walked).await;

    let id = |p: &Value| p["id"].as_str().unwrap().to_owned();
    let expired = wait_for_status(&app, &m, &id(&walked), "expired").await;
    assert_eq!(expired["failure"]["code"], "not_signed", "{expired}");
    assert_eq!(expired["bank_status"], "CANC", "{expired}");
    let (calls, at_bank) = at_the_bank(&app, &bank, &id(&walked)).await;
    assert_eq!(at_bank["transactionStatus"], "CANC");
    assert!(
        calls.iter().any(|(m, _, s)| m == "DELETE" && *s == 204),
        "{calls:?}"
    );

    for p in [&returned, &closed] {
        sleep_past_the_horizon(&app, &id(p), Duration::from_secs(2)).await;
        let now = app.get_payment(&m.api_key, &id(p)).await;
        assert_eq!(now["status"], "awaiting_authorization", "{now}");
        assert_eq!(now["bank_status"], "RCVD", "{now}");
        let calls = still_rcvd_and_never_deleted(&app, &bank, &id(p)).await;
        assert!(
            calls
                .iter()
                .any(|(_, op, _)| op == "getPaymentInitiationScaStatus"),
            "the SCA status was read at the horizon: {calls:?}"
        );
        let kinds: Vec<String> = sqlx::query_scalar(
            "SELECT kind FROM payment_events WHERE payment_id = $1::uuid ORDER BY seq",
        )
        .bind(id(p))
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert!(!kinds.contains(&"expired".to_owned()), "{kinds:?}");
    }
    assert_spec_clean(&bank, &[]);
}

/// Without the bank's SCA status (every read of it fails here: 500), a shopper who came back
/// to pisgate from the bank's "ok" redirect counts as signed: not deleted at the horizon.
/// One who opened the bank's page and never came back is still deleted there and `expired`.
#[tokio::test]
async fn berlin_group_without_an_sca_status_a_returned_shopper_is_never_deleted_at_the_horizon() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, bank) = spawn_for_the_horizon().await;
    let m = app.create_merchant("Shop").await;
    let returned = signed_and_returned_long_ago(&app, &m).await;
    let walked = app
        .create_payment(&m.api_key, &berlin_payment("77.10"))
        .await;
    to_bank_page(&app, &walked).await;
    bank.sandbox.faults().set(vec![FaultRule::always(
        FaultTarget::ScaStatus,
        Fault::Http500,
    )]);

    let id = |p: &Value| p["id"].as_str().unwrap().to_owned();
    let expired = wait_for_status(&app, &m, &id(&walked), "expired").await;
    assert_eq!(expired["bank_status"], "CANC", "{expired}");
    sleep_past_the_horizon(&app, &id(&returned), Duration::from_secs(2)).await;
    let now = app.get_payment(&m.api_key, &id(&returned)).await;
    assert_eq!(now["status"], "awaiting_authorization", "{now}");
    let calls = still_rcvd_and_never_deleted(&app, &bank, &id(&returned)).await;
    assert!(
        calls
            .iter()
            .any(|(_, op, s)| op == "getPaymentInitiationScaStatus" && *s == 500),
        "the SCA status was asked for and not given: {calls:?}"
    );
    assert_spec_clean(&bank, &[500]);
}

/// An insider rewrites the links a Berlin Group bank handed out for a payment (triggers
/// off, no ledger key): here the `scaOAuth` link, to an authorisation server of theirs that
/// would send the shopper to a phishing page. The links are bound to the ledger key
/// (`bank_links_mac`): the hop never contacts the rewritten server and sends the shopper
/// nowhere, the poller sends nothing to the bank for the payment (not even to its own status
/// link, which the rewrite kept), the refusal is counted for the alert, and `ledger verify`
/// names the payment. Sealing (as the upgrade that bound the links does) makes untouched
/// links followable again.
#[tokio::test]
async fn berlin_group_links_edited_in_sql_are_never_followed_and_verify_names_them() {
    use pisgate::ledger::events::BreakReason;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (app, bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    // The insider's authorisation server: counts every connection made to it.
    let phish = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let phish_url = format!(
        "https://{}/.well-known/oauth-authorization-server",
        phish.local_addr().unwrap()
    );
    let contacted = Arc::new(AtomicUsize::new(0));
    let counter = contacted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = phish.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });

    // 77.08: the bank answers the initiation with scaOAuth.
    let p = app
        .create_payment(&m.api_key, &berlin_payment("77.08"))
        .await;
    let id: uuid::Uuid = p["id"].as_str().unwrap().parse().unwrap();
    let bank_id = p["bank_payment_id"].as_str().unwrap().to_owned();
    let links: Value = sqlx::query_scalar("SELECT bank_links FROM payments WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(links["scaOAuth"].is_string(), "{links}");
    as_insider(
        &app,
        id,
        &format!(
            "UPDATE payments SET bank_links = jsonb_set(bank_links, '{{scaOAuth}}', '\"{phish_url}\"')
              WHERE id = $1"
        ),
    )
    .await;
    let sent_before = bank.sandbox.requests().len();

    let url = p["authorization_url"].as_str().unwrap();
    let first = app.client.get(url).send().await.unwrap();
    let hop = if first.status() == 200 {
        crate::helpers::continue_to_bank(&app.client, url).await
    } else {
        first
    };
    assert_ne!(hop.status(), 303, "the shopper is sent nowhere");
    assert!(hop.headers().get("location").is_none());
    // The poller comes round several times (200-300 ms intervals).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        contacted.load(Ordering::SeqCst),
        0,
        "the rewritten authorisation server was contacted"
    );
    let sent: Vec<String> = bank.sandbox.requests()[sent_before..]
        .iter()
        .filter(|e| e.path.contains(&bank_id))
        .map(|e| e.path.clone())
        .collect();
    assert!(sent.is_empty(), "sent for the rewritten payment: {sent:?}");
    let now = app.get_payment(&m.api_key, &id.to_string()).await;
    assert_eq!(now["status"], "awaiting_authorization", "{now}");
    let scrape = app.metrics().await;
    assert!(
        !scrape.contains("pisgate_ledger_binding_mismatches_total 0")
            && scrape.contains("pisgate_ledger_binding_mismatches_total "),
        "{scrape}"
    );
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    let first = report
        .first_broken
        .clone()
        .expect("the rewrite went unnoticed");
    assert_eq!(first.payment_id, id, "{report:?}");
    assert!(
        matches!(first.reason, BreakReason::BankLinksUnbound { .. }),
        "{report:?}"
    );
    assert_eq!(report.broken_payments, 1, "{report:?}");

    // The bank's own links, put back and sealed as the upgrade that bound links seals
    // those written before it, are followed again.
    put_back_and_seal(&app, id, &links).await;
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    let page = to_bank_page(&app, &p).await;
    assert!(page.contains("/oauth/authorize?"), "{page}");
    assert_eq!(contacted.load(Ordering::SeqCst), 0);
}

/// The links of an OAuth payment are edited in SQL while the shopper is at the bank's
/// authorisation server. Their return exchanges nothing (nothing is sent with a bank
/// reference that fails its MAC) and does not use their code up: once an operator has put
/// the bank's links back and sealed them (`pisgate ledger seal`), the same return completes
/// the payment.
#[tokio::test]
async fn berlin_group_a_return_while_the_links_fail_their_mac_keeps_the_code_for_later() {
    let (app, _bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    let p = app
        .create_payment(&m.api_key, &berlin_payment("77.08"))
        .await;
    let id = p["id"].as_str().unwrap();
    let uuid: uuid::Uuid = id.parse().unwrap();
    let page = to_bank_page(&app, &p).await;
    let back = decide_oauth(&app, &page, true).await;
    let links: Value = sqlx::query_scalar("SELECT bank_links FROM payments WHERE id = $1")
        .bind(uuid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    as_insider(
        &app,
        uuid,
        "UPDATE payments SET bank_links = jsonb_set(bank_links, '{status}', '\"https://evil.example/s\"')
          WHERE id = $1",
    )
    .await;

    app.client.get(&back).send().await.unwrap();
    let exchanged = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM payment_events
                            WHERE payment_id = $1 AND kind = 'oauth_code_exchanged')",
        )
        .bind(uuid)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!exchanged().await, "the code was exchanged");
    assert_eq!(
        app.get_payment(&m.api_key, id).await["status"],
        "awaiting_authorization"
    );

    put_back_and_seal(&app, uuid, &links).await;
    let r = app.client.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 303);
    wait_for_status(&app, &m, id, "paid").await;
    assert!(exchanged().await);
}

/// Runs `sql` ($1 = the payment id) on `payments` as an insider: its user triggers off.
async fn as_insider(app: &TestApp, id: uuid::Uuid, sql: &str) {
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE payments DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    let changed = sqlx::query(sql)
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1, "{sql}");
    sqlx::query("ALTER TABLE payments ENABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// What an operator does once the bank's own links are known again: puts them back and
/// seals them (`pisgate ledger seal`); exactly this payment's reference is sealed.
async fn put_back_and_seal(app: &TestApp, id: uuid::Uuid, links: &Value) {
    sqlx::query(
        "UPDATE payments SET bank_links = $2, bank_links_mac = NULL, bank_links_mac_key_id = NULL
          WHERE id = $1",
    )
    .bind(id)
    .bind(links)
    .execute(&app.pool)
    .await
    .unwrap();
    // As `pisgate ledger seal` does, on a session straight to PostgreSQL.
    let sealed = pisgate::ledger::seal::seal_unbound(
        &app.direct_pool().await,
        &crate::helpers::ledger_keys(),
    )
    .await
    .unwrap();
    assert_eq!(sealed.bank_links, 1, "{sealed:?}");
}

/// A read of a Berlin Group payment that started before the bank's final word and lands
/// after it (`ACTC` after `RJCT`): the shown bank status stays `RJCT`, by the ISO 20022
/// order. Before, the older `ACTC` replaced it. The contradiction is still recorded, as any
/// bank word beside a final status that says signed is (a bank going back on its word looks
/// the same and must never go unseen).
#[tokio::test]
async fn berlin_group_a_stale_read_after_the_banks_final_word_never_replaces_it() {
    let (app, _bank) = spawn_with_berlin(&[("PISGATE__POLLER__ENABLED", "false")]).await;
    let m = app.create_merchant("Shop").await;
    let p = app
        .create_payment(&m.api_key, &berlin_payment("12.00"))
        .await;
    let id: uuid::Uuid = p["id"].as_str().unwrap().parse().unwrap();
    let apply = |bank_status: &'static str, status: pisgate::domain::PaymentStatus| {
        let pool = app.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            pisgate::ledger::payments::apply_bank_report(
                &mut tx,
                id,
                bank_status,
                Some(status),
                json!({ "source": "test" }),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    };
    apply("ACSP", pisgate::domain::PaymentStatus::Authorized).await;
    apply("ACTC", pisgate::domain::PaymentStatus::Authorized).await;
    apply("RJCT", pisgate::domain::PaymentStatus::Rejected).await;
    apply("ACTC", pisgate::domain::PaymentStatus::Authorized).await;
    let view = app.get_payment(&m.api_key, &id.to_string()).await;
    assert_eq!(
        (view["status"].as_str(), view["bank_status"].as_str()),
        (Some("rejected"), Some("RJCT")),
        "{view}"
    );
    let shown: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT bank_status FROM payment_events WHERE payment_id = $1 AND bank_status IS NOT NULL ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let shown: Vec<String> = shown.into_iter().flatten().collect();
    assert_eq!(shown.last().map(String::as_str), Some("RJCT"), "{shown:?}");
    assert!(
        !shown.windows(2).any(|w| w[0] == "ACSP" && w[1] == "ACTC"),
        "ACTC after ACSP went back: {shown:?}"
    );
    let disagreements: i64 =
        sqlx::query_scalar("SELECT count(*) FROM bank_disagreements WHERE payment_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        disagreements, 1,
        "still recorded, for an operator to look at"
    );
}

/// At the horizon, a bank that wants the shopper to authorise the DELETE (77.06: 202 with a
/// cancellation authorisation): nothing is cancelled, the answer is noted once, and the
/// DELETE is never sent again. Before, each poll past the horizon sent another DELETE
/// (opening one more cancellation nobody authorises) and noted it as a refusal.
#[tokio::test]
async fn berlin_group_a_horizon_delete_the_bank_wants_authorised_is_sent_once() {
    let (app, bank) = spawn_for_the_horizon().await;
    let m = app.create_merchant("Shop").await;
    let p = app
        .create_payment(&m.api_key, &berlin_payment("77.06"))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    to_bank_page(&app, &p).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while deletes(&bank) == 0 {
        assert!(Instant::now() < deadline, "no DELETE at the horizon");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Polls go on (every second or so here): none sends another.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(deletes(&bank), 1);
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM payment_events WHERE payment_id = $1::uuid")
            .bind(&id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "horizon_delete_needs_authorisation")
            .count(),
        1,
        "{kinds:?}"
    );
    assert!(
        !kinds.iter().any(|k| k == "horizon_delete_refused"),
        "{kinds:?}"
    );
    let view = app.get_payment(&m.api_key, &id).await;
    assert_eq!(view["status"], "awaiting_authorization", "{view}");
}

/// Nordea answers a status poll 429 with a Retry-After of ten minutes: pisgate holds its
/// Nordea calls back that long, and only those. A Berlin Group payment the bank executes by
/// itself (77.09) is followed to `paid` meanwhile. Before, one pacer held every bank's polls,
/// and the slots sat waiting past their leases.
#[tokio::test]
async fn berlin_group_polls_go_on_while_nordea_asks_pisgate_to_wait() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, _bank) = spawn_with_berlin(&[]).await;
    let m = app.create_merchant("Shop").await;
    app.sandbox.add_fault(
        FaultRule::always(
            FaultTarget::Status,
            Fault::Http429 {
                retry_after_secs: 600,
            },
        )
        .times(1),
    );
    let nordea = app
        .create_payment(
            &m.api_key,
            &crate::payments::with(crate::payments::body("FI"), json!({"bank": "nordea"})),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !app.sandbox.faults().iter().all(|f| f.times == Some(0)) {
        assert!(Instant::now() < deadline, "Nordea was never polled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let berlin = app
        .create_payment(&m.api_key, &berlin_payment("77.09"))
        .await;
    let id = berlin["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = app.get_payment(&m.api_key, id).await;
        if p["status"] == "paid" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Berlin Group payment was held back: {p}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = app
        .get_payment(&m.api_key, nordea["id"].as_str().unwrap())
        .await;
    assert_eq!(n["status"], "awaiting_authorization", "{n}");
}

/// The simulator deletes a payment nobody signed at the horizon's DELETE, and the answer is
/// lost (the connection drops after it acted). The next poll reads CANC: that deletion, so
/// `expired` (not signed), never a cancel at the bank; one DELETE in all.
#[tokio::test]
async fn berlin_group_a_horizon_delete_whose_answer_is_lost_still_ends_expired() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let (app, bank) = spawn_for_the_horizon().await;
    let m = app.create_merchant("Shop").await;
    bank.sandbox
        .faults()
        .add(FaultRule::always(FaultTarget::Cancel, Fault::DropAfterProcessing).times(1));
    let walked = app
        .create_payment(&m.api_key, &berlin_payment("77.10"))
        .await;
    to_bank_page(&app, &walked).await;
    let id = walked["id"].as_str().unwrap().to_owned();
    let expired = wait_for_status(&app, &m, &id, "expired").await;
    assert_eq!(expired["failure"]["code"], "not_signed", "{expired}");
    assert_eq!(expired["bank_status"], "CANC", "{expired}");
    assert_eq!(deletes(&bank), 1);
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM payment_events WHERE payment_id = $1::uuid ORDER BY seq",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let requested = kinds.iter().position(|k| k == "horizon_delete_requested");
    let ended = kinds.iter().position(|k| k == "expired");
    assert!(requested.is_some() && requested < ended, "{kinds:?}");
    assert_spec_clean(&bank, &[]);
}
