//! Explicit and decoupled SCA at the hop (src/api/sca.rs), end to end through the API, the
//! hop, the bank's page or app and `/v1/callbacks/return`, against the independent strict
//! Berlin Group ASPSP (`tests/bg-aspsp/aspsp.py`, which checks our signatures and validates
//! every request and answer against the Berlin Group OpenAPI). Each test ends with the
//! ASPSP's self-check empty. Without the ASPSP's venv (`scripts/bg-aspsp-check.sh`) the tests
//! say so and pass without running.

use crate::bg_aspsp::Aspsp;
use crate::helpers::{TestApp, TestMerchant, continue_to_bank, spawn_app_with};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

struct Bg {
    app: TestApp,
    bank: Aspsp,
    m: TestMerchant,
}

fn bank_env(bank: &Aspsp, approach: &str) -> Vec<(String, String)> {
    let v = |k: &str, v: &str| (format!("PISGATE__BANKS__TESTBANK__{k}"), v.to_owned());
    vec![
        v("PROTOCOL", "berlin-group"),
        v("NAME", "Test Bank"),
        v("COUNTRIES", "FI"),
        v("BASE_URL", &bank.base),
        v("PRIVATE_KEY", &bank.key_pem),
        v("CERTIFICATE", &bank.cert_pem),
        v("SCA_APPROACH", approach),
        v("PSU_IP_FALLBACK", "203.0.113.9"),
        v("ENVIRONMENT", "sandbox"),
    ]
}

/// pisgate with the bank `testbank` at a fresh ASPSP, and the poller on (fast).
async fn setup(approach: &str, decoupled_timeout: u32) -> Option<Bg> {
    setup_with(approach, decoupled_timeout, true).await
}

/// As [`setup`]; without the poller only the shopper's pages read the bank.
async fn setup_with(approach: &str, decoupled_timeout: u32, poller: bool) -> Option<Bg> {
    let bank = Aspsp::start_with(decoupled_timeout).await?;
    let env = bank_env(&bank, approach);
    let mut overrides: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    overrides.extend_from_slice(&[
        (
            "PISGATE__POLLER__ENABLED",
            if poller { "true" } else { "false" },
        ),
        ("PISGATE__POLLER__SIGNING_INTERVAL", "300ms"),
        ("PISGATE__POLLER__AUTHORIZED_INTERVAL", "300ms"),
    ]);
    let app = spawn_app_with(&overrides).await;
    let m = app.create_merchant("Shop").await;
    Some(Bg { app, bank, m })
}

fn body(amount: &str) -> Value {
    json!({
        "amount": amount, "currency": "EUR", "bank": "testbank",
        "creditor": {"account": {"type": "IBAN", "value": "FI1410093000123458"}, "name": "Kauppa"},
        "debtor": {"account": {"type": "IBAN", "value": "FI7473834510057469"}},
        "return_url": "https://shop.example/done"
    })
}

impl Bg {
    /// A payment at the bank; returns its id and hop URL.
    async fn pay(&self, amount: &str) -> (String, String) {
        let p = self
            .app
            .create_payment(&self.m.api_key, &body(amount))
            .await;
        assert_eq!(p["bank"], "testbank", "{p}");
        (
            p["id"].as_str().unwrap().to_owned(),
            p["authorization_url"].as_str().unwrap().to_owned(),
        )
    }

    async fn wait_for_status(&self, id: &str, want: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let p = self.app.get_payment(&self.m.api_key, id).await;
            if p["status"] == want {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "{id} is {}, not {want}",
                p["status"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn events(&self, id: &str) -> Vec<Value> {
        sqlx::query_scalar(
            "SELECT jsonb_build_object('kind', kind, 'detail', detail) FROM payment_events
             WHERE payment_id = $1::uuid ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.app.pool)
        .await
        .unwrap()
    }

    async fn authorisation_id(&self, id: &str) -> String {
        sqlx::query_scalar("SELECT sca_authorisation_id FROM payments WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }

    /// The ASPSP's log of the authorisation starts it received.
    async fn starts(&self) -> Vec<Value> {
        let log: Vec<Value> = self
            .bank
            .http
            .get(format!("{}/admin/requests", self.bank.origin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        log.into_iter()
            .filter(|r| {
                r["method"] == "POST"
                    && r["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("/authorisations"))
            })
            .collect()
    }

    fn hop_parts(hop: &str) -> (String, String) {
        let (url, token) = hop.split_once("?t=").unwrap();
        (url.to_owned(), token.to_owned())
    }

    /// Posts the PSU-ID form.
    async fn post_psu_id(&self, hop: &str, psu_id: &str) -> reqwest::Response {
        let (url, token) = Self::hop_parts(hop);
        self.app
            .client
            .post(format!("{url}/psu"))
            .form(&[("t", token.as_str()), ("psu_id", psu_id)])
            .send()
            .await
            .unwrap()
    }

    /// Loads the waiting page as a browser without JavaScript would, every refresh, until
    /// it sends the shopper on; returns where.
    async fn wait_page_until_redirect(&self, wait_url: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let r = self.app.client.get(wait_url).send().await.unwrap();
            if r.status() == 303 {
                return r.headers()["location"].to_str().unwrap().to_owned();
            }
            assert_eq!(r.status(), 200);
            assert!(
                Instant::now() < deadline,
                "the waiting page never sent the shopper on"
            );
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn berlin_group_sca_explicit_redirect_starts_the_authorisation_at_the_hop_and_ends_paid() {
    let Some(bg) = setup("explicit-redirect", 30).await else {
        return;
    };
    let (id, hop) = bg.pay("12.00").await;
    // The consent page offers the bank.
    let page = bg.app.client.get(&hop).send().await.unwrap();
    assert_eq!(page.status(), 200);
    // The form's redirect chain ends at the bank's page: its origin is in `form-action`.
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains(&format!("form-action 'self' {}", bg.bank.origin)),
        "{csp}"
    );
    assert!(page.text().await.unwrap().contains("Test Bank"));
    assert!(
        bg.starts().await.is_empty(),
        "showing the page starts nothing"
    );

    let to_bank = continue_to_bank(&bg.app.client, &hop).await;
    assert_eq!(to_bank.status(), 303);
    let sca_page = location(&to_bank);
    assert!(
        sca_page.starts_with(&format!("{}/sca/", bg.bank.origin)),
        "{sca_page}"
    );
    let events = bg.events(&id).await;
    let started = events
        .iter()
        .find(|e| e["kind"] == "authorisation_started")
        .unwrap_or_else(|| panic!("no authorisation_started in {events:?}"));
    assert_eq!(
        started["detail"]["authorisation_id"].as_str().unwrap(),
        bg.authorisation_id(&id).await
    );
    let links: Value = sqlx::query_scalar("SELECT bank_links FROM payments WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&bg.app.pool)
        .await
        .unwrap();
    assert!(links["scaStatus"].is_string(), "{links}");
    assert!(links["startAuthorisation"].is_string(), "{links}");

    let back = bg.bank.decide(&sca_page, "approve").await;
    assert!(back.contains("/v1/callbacks/return"), "{back}");
    let r = bg.app.client.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        location(&r),
        format!("https://shop.example/done?payment_id={id}")
    );
    let paid = bg
        .wait_for_status(&id, "paid", Duration::from_secs(20))
        .await;
    assert_eq!(paid["bank_status"], "ACSC", "{paid}");
    assert_eq!(bg.starts().await.len(), 1);
    let report = pisgate::ledger::events::verify_all(&bg.app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    bg.bank.assert_selfcheck_empty().await;
}

#[tokio::test]
async fn berlin_group_sca_a_double_submit_starts_one_authorisation() {
    let Some(bg) = setup("explicit-redirect", 30).await else {
        return;
    };
    let (_id, hop) = bg.pay("13.00").await;
    let (a, b, c) = tokio::join!(
        continue_to_bank(&bg.app.client, &hop),
        continue_to_bank(&bg.app.client, &hop),
        continue_to_bank(&bg.app.client, &hop),
    );
    let targets: Vec<String> = [a, b, c]
        .iter()
        .map(|r| {
            assert_eq!(r.status(), 303);
            location(r)
        })
        .collect();
    assert!(targets.iter().all(|t| *t == targets[0]), "{targets:?}");
    // Another click later (a second tab) follows the recorded link.
    let again = continue_to_bank(&bg.app.client, &hop).await;
    assert_eq!(location(&again), targets[0]);
    assert_eq!(bg.starts().await.len(), 1, "one authorisation at the bank");
    bg.bank.assert_selfcheck_empty().await;
}

#[tokio::test]
async fn berlin_group_sca_decoupled_approval_ends_paid_through_a_waiting_page_without_javascript() {
    let Some(bg) = setup("decoupled", 30).await else {
        return;
    };
    let (id, hop) = bg.pay("14.00").await;
    let form = continue_to_bank(&bg.app.client, &hop).await;
    assert_eq!(form.status(), 200);
    let html = form.text().await.unwrap();
    assert!(html.contains("Your user ID at Test Bank"), "{html}");
    assert!(html.contains("name=\"psu_id\""), "{html}");
    assert!(!html.contains("<script"), "{html}");

    // Bad input is refused naming the field, before any bank call.
    for bad in ["", "   ", &"x".repeat(71), "psu\u{1}id", "jöns-4711"] {
        let r = bg.post_psu_id(&hop, bad).await;
        assert_eq!(r.status(), 422, "{bad:?}");
        let html = r.text().await.unwrap();
        assert!(html.contains("Your user ID at Test Bank: "), "{html}");
        assert!(html.contains("role=\"alert\""), "{html}");
    }
    assert!(bg.starts().await.is_empty());

    let r = bg.post_psu_id(&hop, "psu-4711").await;
    assert_eq!(r.status(), 303);
    let wait = format!("{}{}", bg.app.address, location(&r));
    assert!(wait.contains(&format!("/authorize/{id}/wait?t=")), "{wait}");
    let starts = bg.starts().await;
    assert_eq!(starts.len(), 1);
    let psu_header = starts[0]["headers"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("psu-id"))
        .map(|(_, v)| v.clone());
    assert_eq!(psu_header, Some(json!("psu-4711")), "{}", starts[0]);

    // The waiting page: plain HTTP, refreshes itself, no script.
    let page = bg.app.client.get(&wait).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("http-equiv=\"refresh\""), "{html}");
    assert!(html.contains(&format!("/authorize/{id}/wait?t=")), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("Approve the payment in your bank"), "{html}");
    assert!(
        html.contains("Please approve the payment in your bank app."),
        "{html}"
    );

    bg.bank
        .decoupled(&bg.authorisation_id(&id).await, true)
        .await;
    let back = bg
        .wait_page_until_redirect(&wait, Duration::from_secs(15))
        .await;
    assert_eq!(back, format!("https://shop.example/done?payment_id={id}"));
    bg.wait_for_status(&id, "paid", Duration::from_secs(20))
        .await;
    // A double post of the form starts nothing more.
    let again = bg.post_psu_id(&hop, "psu-4711").await;
    assert_eq!(again.status(), 303);
    assert_eq!(bg.starts().await.len(), 1);
    bg.bank.assert_selfcheck_empty().await;
}

#[tokio::test]
async fn berlin_group_sca_decoupled_refusal_ends_authorization_failed_through_the_waiting_page() {
    // No poller: the waiting page alone reads the SCA status and the transaction status.
    let Some(bg) = setup_with("decoupled", 30, false).await else {
        return;
    };
    let (id, hop) = bg.pay("15.00").await;
    continue_to_bank(&bg.app.client, &hop).await;
    let r = bg.post_psu_id(&hop, "psu-4712").await;
    assert_eq!(r.status(), 303);
    let wait = format!("{}{}", bg.app.address, location(&r));
    bg.bank
        .decoupled(&bg.authorisation_id(&id).await, false)
        .await;
    let back = bg
        .wait_page_until_redirect(&wait, Duration::from_secs(15))
        .await;
    assert_eq!(back, format!("https://shop.example/done?payment_id={id}"));
    let p = bg
        .wait_for_status(&id, "authorization_failed", Duration::from_secs(5))
        .await;
    assert_eq!(p["bank_status"], "RJCT", "{p}");
    let events = bg.events(&id).await;
    assert!(
        events
            .iter()
            .any(|e| e["detail"]["source"] == "waiting_page"
                && e["detail"]["sca_status"] == "failed"),
        "{events:?}"
    );
    bg.bank.assert_selfcheck_empty().await;
}

#[tokio::test]
async fn berlin_group_sca_decoupled_timeout_ends_authorization_failed_with_the_waiting_page_closed()
{
    let Some(bg) = setup("decoupled", 2).await else {
        return;
    };
    let (id, hop) = bg.pay("77.05").await;
    continue_to_bank(&bg.app.client, &hop).await;
    let r = bg.post_psu_id(&hop, "psu-4713").await;
    assert_eq!(r.status(), 303);
    // The shopper closes the waiting page: only the poller reads the bank from now on.
    let p = bg
        .wait_for_status(&id, "authorization_failed", Duration::from_secs(20))
        .await;
    assert_eq!(p["bank_status"], "RJCT", "{p}");
    bg.bank.assert_selfcheck_empty().await;
}

#[tokio::test]
async fn berlin_group_sca_no_psu_id_appears_in_the_logs() {
    use crate::helpers::fresh_database;
    use crate::serve::Serve;
    let Some(bank) = Aspsp::start_with(30).await else {
        return;
    };
    let url = fresh_database().await;
    let pool = pisgate::ledger::Db::from(sqlx::PgPool::connect(&url).await.unwrap());
    let (_, key) =
        pisgate::ledger::merchants::create(&pool, "Log shop", &["https://shop.example".into()])
            .await
            .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    let env = bank_env(&bank, "decoupled");
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    extra.push(("RUST_LOG", "debug"));
    let serve = Serve::start(&url, &extra).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let created: Value = client
        .post(format!("{}/v1/payments", serve.base))
        .bearer_auth(&key)
        .header("idempotency-key", "psu-log")
        .json(&body("16.00"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let hop = created["authorization_url"].as_str().unwrap().to_owned();
    let (hop_url, token) = Bg::hop_parts(&hop);
    assert_eq!(continue_to_bank(&client, &hop).await.status(), 200);
    let post = |psu_id: &'static str| {
        client
            .post(format!("{hop_url}/psu"))
            .form(&[("t", token.as_str()), ("psu_id", psu_id)])
            .send()
    };
    let refused = post("LOGCHECK-refused\u{7}").await.unwrap();
    assert_eq!(refused.status(), 422);
    let started = post("LOGCHECK-psu-93f1").await.unwrap();
    assert_eq!(started.status(), 303);
    let wait = format!("{}{}", serve.base, location(&started));
    let aid: String =
        sqlx::query_scalar("SELECT sca_authorisation_id FROM payments WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(pool.pool())
            .await
            .unwrap();
    bank.decoupled(&aid, true).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = client.get(&wait).send().await.unwrap();
        if r.status() == 303 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the waiting page never sent the shopper on"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    let (_, stdout, stderr, _) = serve.stop().await;
    let logs = format!("{stdout}{stderr}");
    assert!(
        logs.contains("authorisation started at the bank"),
        "no authorisation logs captured:\n{logs}"
    );
    assert!(!logs.contains("LOGCHECK"), "a PSU-ID appears in the logs");
    bank.assert_selfcheck_empty().await;
}

#[tokio::test]
async fn berlin_group_sca_the_start_claim_holds_for_its_lease_and_a_retry_after_it_starts_again() {
    use pisgate::ledger::sca::{self, Claim};
    let Some(bg) = setup_with("explicit-redirect", 30, false).await else {
        return;
    };
    let (id, _hop) = bg.pay("17.00").await;
    let id: uuid::Uuid = id.parse().unwrap();
    let claim = |hash: &'static [u8]| {
        let pool = bg.app.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let c = sca::claim_start(&mut tx, id, Duration::from_secs(90), hash)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            c
        }
    };
    assert_eq!(claim(b"state-1").await, Some(Claim::Claimed));
    // A lost answer: the claim stays; a second click within the lease starts nothing.
    assert_eq!(claim(b"state-2").await, Some(Claim::Busy));
    sqlx::query("UPDATE payments SET sca_started_at = now() - interval '91 seconds' WHERE id = $1")
        .bind(id)
        .execute(&bg.app.pool)
        .await
        .unwrap();
    assert_eq!(claim(b"state-3").await, Some(Claim::Claimed));
    let kinds: Vec<Value> = bg
        .events(&id.to_string())
        .await
        .into_iter()
        .filter(|e| e["kind"] == "authorisation_starting")
        .map(|e| e["detail"]["retry"].clone())
        .collect();
    assert_eq!(kinds, vec![json!(false), json!(true)]);
    assert!(bg.starts().await.is_empty(), "claims alone call no bank");
}

/// Through pisgate's API and pages against the independent strict ASPSP, with a Nordea
/// payment in the same run: each redirect payment ends as that bank says, and a merchant's
/// cancel of an unsigned payment the shopper opened is a DELETE at the bank.
#[tokio::test]
async fn berlin_group_sca_redirect_payments_at_the_independent_aspsp_end_as_it_says() {
    let Some(bg) = setup("redirect", 30).await else {
        return;
    };
    // (amount, approve?, what pisgate must report)
    let cases = [
        ("10.00", true, "paid"),                  // ACSC
        ("77.01", true, "rejected"),              // ACSP, then RJCT
        ("77.03", true, "paid"),                  // PDNG, then ACSC
        ("77.04", true, "paid"),                  // 404 before the page is opened
        ("10.00", false, "authorization_failed"), // refused SCA
    ];
    let mut ids = Vec::new();
    for (amount, approve, _) in cases {
        let (id, hop) = bg.pay(amount).await;
        let to_bank = continue_to_bank(&bg.app.client, &hop).await;
        assert_eq!(to_bank.status(), 303, "the hop leads to the bank");
        let page = location(&to_bank);
        let back = bg
            .bank
            .decide(&page, if approve { "approve" } else { "refuse" })
            .await;
        assert!(back.contains("/v1/callbacks/return?state="), "{back}");
        let r = bg.app.client.get(&back).send().await.unwrap();
        assert_eq!(r.status(), 303);
        ids.push(id);
    }
    for ((_, _, want), id) in cases.iter().zip(&ids) {
        bg.wait_for_status(id, want, Duration::from_secs(20)).await;
    }
    // ACSP for good: authorized, never paid.
    let (id, hop) = bg.pay("77.02").await;
    let page = location(&continue_to_bank(&bg.app.client, &hop).await);
    let back = bg.bank.decide(&page, "approve").await;
    bg.app.client.get(&back).send().await.unwrap();
    bg.wait_for_status(&id, "authorized", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = bg.app.get_payment(&bg.m.api_key, &id).await;
    assert_eq!(p["status"], "authorized", "ACSP is never paid: {p}");
    // The merchant cancels an unsigned payment the shopper opened: a DELETE at the bank.
    let (id, hop) = bg.pay("10.00").await;
    let page = location(&continue_to_bank(&bg.app.client, &hop).await);
    bg.bank.open(&page).await;
    let r = bg
        .app
        .client
        .post(bg.app.url(&format!("/v1/payments/{id}/cancel")))
        .bearer_auth(&bg.m.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cancelled: Value = r.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let deletes: Vec<Value> = bg
        .bank
        .http
        .get(format!("{}/admin/requests", bg.bank.origin))
        .send()
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r["method"] == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    // A Nordea payment in the same run.
    let nordea = bg
        .app
        .create_payment(
            &bg.m.api_key,
            &crate::payments::with(crate::payments::body("DK"), json!({})),
        )
        .await;
    assert_eq!(nordea["bank"], "nordea");
    let back = crate::helpers::sign_and_return(&bg.app.client, &nordea, "psu-dk").await;
    assert_eq!(back.status(), 303);
    bg.bank.assert_selfcheck_empty().await;
}
