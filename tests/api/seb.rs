//! SEB end to end (issue 25): pisgate's API, the BankID page played as a browser without
//! JavaScript would (plain GETs of the self-refreshing page, form POSTs), SEB's strict
//! simulator (mutual TLS, decoupled authorization, PIS v1, the Signing External API) with its
//! test BankID app and admin endpoints standing in for the shopper's phone, the poller and
//! the webhooks. One test per scenario of the simulator (66.01–66.06), plus the claims (a
//! double "try again" starts one order), the shoppers' tokens kept apart, and the logs.

use crate::helpers::{TestApp, TestMerchant, spawn_app_with};
use crate::webhooks::{Plan, Receiver};
use pisgate::sandbox::seb::{SebSandbox, SebSandboxConfig};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

struct Seb {
    app: TestApp,
    sim: SebSandbox,
    m: TestMerchant,
    web: reqwest::Client,
    /// The merchant's webhook endpoint (every event; signatures verified on receipt).
    hooks: Receiver,
}

fn bank_env(sim: &SebSandbox) -> Vec<(String, String)> {
    let v = |k: &str, v: &str| (format!("PISGATE__BANKS__SEB__{k}"), v.to_owned());
    vec![
        v("PROTOCOL", "seb"),
        v("NAME", "SEB"),
        v("COUNTRIES", "SE"),
        v("BASE_URL", &sim.api_url),
        v("CLIENT_ID", sim.client_id()),
        v(
            "CLIENT_SECRET",
            secrecy::ExposeSecret::expose_secret(sim.client_secret()),
        ),
        v("TLS_CERTIFICATE", &sim.pki.tpp_cert_pem),
        v("TLS_PRIVATE_KEY", &sim.pki.tpp_key_pem),
        v("TLS_CA", &sim.pki.ca_pem),
        v("PSU_IP_FALLBACK", "203.0.113.9"),
        v("BANKID_APP_URL", &sim.bankid_app_url()),
        v("ENVIRONMENT", "sandbox"),
        v("REQUEST_TIMEOUT_SECS", "5"),
    ]
}

/// pisgate with the bank `seb` at a fresh simulator, the poller and the webhooks on (fast),
/// the merchant's webhook receiver registered.
async fn setup(configure: impl FnOnce(&mut SebSandboxConfig), extra: &[(&str, &str)]) -> Seb {
    let mut config = SebSandboxConfig::new("pisgate-seb-test", "seb-test-secret");
    config.status_step = Duration::from_millis(500);
    configure(&mut config);
    let sim = pisgate::sandbox::seb::spawn(config)
        .await
        .expect("the SEB simulator starts");
    let env = bank_env(&sim);
    let mut overrides: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    overrides.extend_from_slice(&[
        ("PISGATE__POLLER__ENABLED", "true"),
        ("PISGATE__POLLER__SIGNING_INTERVAL", "300ms"),
        ("PISGATE__POLLER__LATE_SIGNING_INTERVAL", "300ms"),
        ("PISGATE__POLLER__AUTHORIZED_INTERVAL", "300ms"),
        ("PISGATE__WEBHOOKS__ENABLED", "true"),
        ("PISGATE__WEBHOOKS__RETRY_SCHEDULE", "200ms,200ms"),
        ("PISGATE__WEBHOOKS__IDLE_WAIT", "200ms"),
    ]);
    overrides.extend_from_slice(extra);
    let app = spawn_app_with(&overrides).await;
    let m = app.create_merchant("Butik AB").await;
    let hooks = Receiver::start(Plan::Ok).await;
    hooks.register(&app.client, &app.address, &m.api_key).await;
    Seb {
        app,
        sim,
        m,
        web: reqwest::Client::new(),
        hooks,
    }
}

fn body(amount: &str, psu_id: Option<&str>) -> Value {
    let mut b = json!({
        "amount": amount,
        "currency": "SEK",
        "country": "SE",
        "bank": "seb",
        "creditor": {"account": {"type": "BGNR", "value": "5050-1055"}, "name": "Butik AB",
                     "reference": {"type": "OCR", "value": "1234566"}},
        "return_url": "https://shop.example/checkout/done?order=1234",
        "language": "sv",
    });
    if let Some(psu) = psu_id {
        b["psu_id"] = json!(psu);
    }
    b
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// The autostart token in the page's "open BankID on this device" link.
fn autostart_token(html: &str) -> Option<String> {
    let i = html.find("autostarttoken=")? + "autostarttoken=".len();
    let rest = &html[i..];
    let end = rest.find(['&', '"'])?;
    let raw = &rest[..end];
    let decoded: String = url::form_urlencoded::parse(format!("t={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    Some(decoded).filter(|t| !t.is_empty())
}

impl Seb {
    /// Waits for the merchant's receiver to accept `event` about payment `id` (its
    /// signature verified there).
    async fn webhook(&self, id: &str, event: &'static str) {
        self.hooks.accepted_for(id, event).await;
    }

    async fn pay(&self, amount: &str, psu_id: Option<&str>) -> Value {
        let p = self
            .app
            .create_payment(&self.m.api_key, &body(amount, psu_id))
            .await;
        assert_eq!(p["initiation"], "awaiting_shopper_identification", "{p}");
        assert_eq!(p["bank"], "seb");
        assert!(p["bank_payment_id"].is_null(), "nothing at SEB yet: {p}");
        p
    }

    /// The hop sends the shopper to the BankID page; its absolute URL.
    async fn bankid_page(&self, p: &Value) -> String {
        let r = self
            .app
            .client
            .get(p["authorization_url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let to = location(&r);
        assert!(to.contains("/bankid?t="), "{to}");
        to
    }

    async fn load(&self, page: &str) -> reqwest::Response {
        self.app.client.get(page).send().await.unwrap()
    }

    /// Loads the page (as its meta refresh would) until `want` holds for its HTML.
    async fn page_until(&self, page: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.load(page).await;
            assert_eq!(r.status(), 200, "{what}");
            let html = r.text().await.unwrap();
            if want(&html) {
                return html;
            }
            assert!(Instant::now() < deadline, "{what}: never came:\n{html}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Loads the page until it shows an order's autostart link other than `not`.
    async fn autostart(&self, page: &str, not: Option<&str>) -> (String, String) {
        let html = self
            .page_until(page, "an autostart link", |h| {
                autostart_token(h).is_some_and(|t| Some(t.as_str()) != not)
            })
            .await;
        let t = autostart_token(&html).unwrap();
        (html, t)
    }

    /// Loads the page until it sends the shopper on; where to.
    async fn until_redirect(&self, page: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.load(page).await;
            if r.status() == 303 {
                return location(&r);
            }
            assert!(
                Instant::now() < deadline,
                "the page never sent the shopper on"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn post(&self, page: &str, action: &str) -> reqwest::Response {
        let (base, token) = page.split_once("?t=").unwrap();
        self.app
            .client
            .post(format!("{base}/{action}"))
            .form(&[("t", token)])
            .send()
            .await
            .unwrap()
    }

    /// The phone: the test BankID app opened with the autostart token, then its button.
    async fn phone(&self, autostart: &str, approve: bool) {
        let page = self
            .web
            .get(format!(
                "{}/test-bankid?autostarttoken={autostart}&redirect=null",
                self.sim.app_url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "the test BankID app opens the order");
        let button = if approve { "approve" } else { "reject" };
        let r = self
            .web
            .post(format!("{}/test-bankid/{button}", self.sim.app_url))
            .form(&[("autostarttoken", autostart)])
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status().is_redirection(),
            "{}",
            r.status()
        );
    }

    /// The admin stand-in for the phone (`open`, `approve` as `shopper`, `reject`).
    async fn admin(
        &self,
        autostart: &str,
        action: &str,
        shopper: Option<&str>,
    ) -> reqwest::Response {
        let query = shopper.map(|s| format!("?shopper={s}")).unwrap_or_default();
        self.web
            .post(format!(
                "{}/admin/bankid/{autostart}/{action}{query}",
                self.sim.app_url
            ))
            .send()
            .await
            .unwrap()
    }

    async fn orders(&self) -> Vec<Value> {
        self.web
            .get(format!("{}/admin/orders", self.sim.app_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn refusals(&self) -> Vec<Value> {
        self.web
            .get(format!("{}/admin/refusals", self.sim.app_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn payment(&self, id: &str) -> Value {
        self.app.get_payment(&self.m.api_key, id).await
    }

    async fn wait_for_status(&self, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            let p = self.payment(id).await;
            if p["status"] == want {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "never {want}: {p}\nevents: {:?}",
                self.kinds(id).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn kinds(&self, id: &str) -> Vec<String> {
        let v: Value = self
            .app
            .get_as(&format!("/v1/payments/{id}/events"), &self.m.api_key)
            .await
            .json()
            .await
            .unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Identifies the shopper on the page (the phone approves as `shopper`) and waits for
    /// the signing order's link; returns its autostart token.
    async fn identify(&self, page: &str, shopper: &str) -> String {
        let (html, ast) = self.autostart(page, None).await;
        assert!(html.contains("<svg"), "the QR code: {html}");
        assert!(
            html.contains("http-equiv=\"refresh\""),
            "it refreshes without JavaScript"
        );
        assert!(
            html.contains(&format!("{}/test-bankid?autostarttoken=", self.sim.app_url)),
            "the link opens the test BankID app: {html}"
        );
        let r = self.admin(&ast, "approve", Some(shopper)).await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let (_, sign) = self.autostart(page, Some(&ast)).await;
        sign
    }

    /// `pisgate ledger verify`: every chain intact, every bound column (bank id, bank
    /// status, the shopper key bound at initiation) what the ledger says.
    async fn assert_ledger_verifies(&self) {
        let report =
            pisgate::ledger::events::verify_all(&self.app.pool, &crate::helpers::ledger_keys())
                .await
                .unwrap();
        assert_eq!(report.broken_payments, 0, "{report:?}");
        assert!(report.payments_checked > 0);
    }

    /// Nothing pisgate sent was refused by the simulator.
    async fn assert_nothing_refused(&self) {
        let refused = self.refusals().await;
        assert!(refused.is_empty(), "refused: {refused:#?}");
    }
}

/// `66.01`: identified and signed on the page, through the test BankID app: the shopper
/// lands on the merchant's return URL; the poller follows ACTC → ACSP → ACSC to `paid`; the
/// merchant's webhooks arrive.
#[tokio::test]
async fn seb_signed_in_the_bankid_app_ends_paid_at_the_merchants_return_url_with_webhooks() {
    let s = setup(|_| {}, &[]).await;
    let receiver = &s.hooks;
    let p = s.pay("66.01", Some("kund-1")).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;

    // Identify with the phone (the test BankID app's page and its Approve button).
    let (html, ast) = s.autostart(&page, None).await;
    assert!(html.contains("lang=\"sv\""), "in Swedish: {html}");
    s.phone(&ast, true).await;
    let (_, sign) = s.autostart(&page, Some(&ast)).await;
    let created = s.payment(id).await;
    assert_eq!(created["initiation"], "initiated", "{created}");
    assert_eq!(created["bank_status"], "RCVD");

    // Sign with the phone: the page sends the shopper to the merchant.
    s.phone(&sign, true).await;
    let to = s.until_redirect(&page).await;
    assert!(
        to.starts_with(&format!(
            "https://shop.example/checkout/done?order=1234&payment_id={id}"
        )),
        "{to}"
    );
    let paid = s.wait_for_status(id, "paid").await;
    assert_eq!(paid["bank_status"], "ACSC");
    let got = crate::webhooks::eventually("payment.paid delivered", || async move {
        let got: Vec<String> = receiver
            .received()
            .iter()
            .map(|r| r.body["type"].as_str().unwrap_or("").to_owned())
            .collect();
        got.contains(&"payment.paid".to_owned()).then_some(got)
    })
    .await;
    assert!(got.contains(&"payment.authorized".to_owned()), "{got:?}");
    s.assert_nothing_refused().await;
    s.assert_ledger_verifies().await;
}

/// `66.02`: the shopper refuses in the app: the page says so and offers "try again" and
/// "cancel"; the refusal alone finalises nothing (the bank still shows RCVD); the shopper's
/// cancel deletes it at SEB with their token: `cancelled`.
#[tokio::test]
async fn seb_refused_in_the_app_shows_try_again_and_the_shoppers_cancel_deletes_it_at_seb() {
    let s = setup(|_| {}, &[]).await;
    let p = s.pay("66.02", None).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    let sign = s.identify(&page, "kund-2").await;
    // Opening the order refuses it (the scenario's app).
    let _ = s.admin(&sign, "open", None).await;
    let html = s
        .page_until(&page, "the refusal", |h| h.contains("/bankid/start"))
        .await;
    assert!(
        autostart_token(&html).is_none(),
        "no link to a failed order"
    );
    assert!(html.contains("/bankid/cancel"), "{html}");
    assert_eq!(s.payment(id).await["status"], "awaiting_authorization");
    let r = s.post(&page, "cancel").await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("https://shop.example/"));
    let done = s.wait_for_status(id, "cancelled").await;
    assert_eq!(done["bank_status"], "CANC", "{done}");
    assert_eq!(done["failure"]["code"], "cancelled_by_shopper", "{done}");
    s.webhook(id, "payment.cancelled").await;
    s.assert_nothing_refused().await;
    s.assert_ledger_verifies().await;
}

/// `66.03`: nobody opens the signing order: it fails `expiredTransaction` (the page says so);
/// the payment stays RCVD at SEB; at pisgate's late-signing horizon the poller deletes it
/// with the shopper's token: `expired`.
#[tokio::test]
async fn seb_never_opened_expires_at_the_horizon_deleted_at_seb_with_the_shoppers_token() {
    let s = setup(
        |c| c.order_timeout = Duration::from_secs(3),
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "6"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "10"),
        ],
    )
    .await;
    let p = s.pay("66.03", Some("kund-3")).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    s.identify(&page, "kund-3").await;
    let html = s
        .page_until(&page, "the order's expiry", |h| h.contains("/bankid/start"))
        .await;
    assert!(autostart_token(&html).is_none());
    assert_eq!(s.payment(id).await["status"], "awaiting_authorization");
    let expired = s.wait_for_status(id, "expired").await;
    assert_eq!(expired["bank_status"], "CANC", "{expired}");
    s.webhook(id, "payment.expired").await;
    s.assert_nothing_refused().await;
    s.assert_ledger_verifies().await;
}

/// `66.04`: the first signing start answers ALREADY_IN_PROGRESS (both orders cancelled):
/// the page says so; the shopper's "try again" starts a new order, which they sign: paid.
#[tokio::test]
async fn seb_already_in_progress_then_try_again_ends_paid() {
    let s = setup(|_| {}, &[]).await;
    let p = s.pay("66.04", None).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    let (_, ast) = s.autostart(&page, None).await;
    s.admin(&ast, "approve", Some("kund-4")).await;
    let html = s
        .page_until(&page, "already in progress", |h| {
            h.contains("/bankid/start")
        })
        .await;
    assert!(autostart_token(&html).is_none());
    assert_eq!(s.payment(id).await["status"], "awaiting_authorization");
    assert_eq!(s.post(&page, "start").await.status(), 303);
    let (_, sign) = s.autostart(&page, Some(&ast)).await;
    s.admin(&sign, "approve", None).await;
    s.until_redirect(&page).await;
    s.wait_for_status(id, "paid").await;
    s.webhook(id, "payment.paid").await;
    let kinds = s.kinds(id).await;
    assert!(
        kinds
            .iter()
            .filter(|k| *k == "bankid_order_started")
            .count()
            >= 3,
        "identify, the refused sign start, the retry: {kinds:?}"
    );
}

/// `66.05`: signed, accepted (ACTC: authorized), then rejected by SEB: `rejected`.
#[tokio::test]
async fn seb_rejected_after_acceptance_ends_rejected() {
    let s = setup(|_| {}, &[]).await;
    let p = s.pay("66.05", None).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    let sign = s.identify(&page, "kund-5").await;
    s.admin(&sign, "approve", None).await;
    s.until_redirect(&page).await;
    let rejected = s.wait_for_status(id, "rejected").await;
    assert_eq!(rejected["bank_status"], "RJCT");
    s.webhook(id, "payment.authorized").await;
    s.webhook(id, "payment.rejected").await;
    let v: Value = s
        .app
        .get_as(&format!("/v1/payments/{id}/events"), &s.m.api_key)
        .await
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["new_status"].as_str())
        .collect();
    assert!(
        statuses.contains(&"authorized"),
        "accepted first: {statuses:?}"
    );
    s.assert_nothing_refused().await;
}

/// `66.06`: the BankID app never starts: the order fails `startFailed`; the page offers
/// "try again"; nothing is finalised.
#[tokio::test]
async fn seb_start_failed_shows_try_again_and_finalises_nothing() {
    let s = setup(|c| c.order_timeout = Duration::from_secs(3), &[]).await;
    let p = s.pay("66.06", None).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    s.identify(&page, "kund-6").await;
    s.page_until(&page, "startFailed", |h| h.contains("/bankid/start"))
        .await;
    let orders = s.orders().await;
    assert!(
        orders.iter().any(|o| o.to_string().contains("startFailed")),
        "{orders:#?}"
    );
    assert_eq!(s.payment(id).await["status"], "awaiting_authorization");
}

/// A double submit of "try again" (a double click, two tabs) starts one order at SEB.
#[tokio::test]
async fn seb_a_double_submit_of_try_again_starts_one_order() {
    let s = setup(|_| {}, &[]).await;
    let p = s.pay("10.00", None).await;
    let page = s.bankid_page(&p).await;
    let (_, ast) = s.autostart(&page, None).await;
    s.admin(&ast, "reject", None).await;
    s.page_until(&page, "the refusal", |h| h.contains("/bankid/start"))
        .await;
    let before = s.orders().await.len();
    let (a, b) = tokio::join!(s.post(&page, "start"), s.post(&page, "start"));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (303, 303));
    s.autostart(&page, Some(&ast)).await;
    assert_eq!(s.orders().await.len(), before + 1, "one new order");
    s.assert_nothing_refused().await;
}

/// Two shoppers (two merchant shopper ids, two BankID identities): each payment is created,
/// signed and followed with its own shopper's token; the simulator, which binds a payment
/// to the shopper whose token created it, never sees one shopper's token on the other's.
#[tokio::test]
async fn seb_a_second_shoppers_token_never_reads_the_first_shoppers_payment() {
    let s = setup(|_| {}, &[]).await;
    let a = s.pay("12.00", Some("kund-a")).await;
    let b = s.pay("13.00", Some("kund-b")).await;
    let page_a = s.bankid_page(&a).await;
    let page_b = s.bankid_page(&b).await;
    let sign_a = s.identify(&page_a, "person-a").await;
    let sign_b = s.identify(&page_b, "person-b").await;
    s.admin(&sign_a, "approve", None).await;
    s.admin(&sign_b, "approve", None).await;
    s.until_redirect(&page_a).await;
    s.until_redirect(&page_b).await;
    s.wait_for_status(a["id"].as_str().unwrap(), "paid").await;
    s.wait_for_status(b["id"].as_str().unwrap(), "paid").await;
    let payments: Vec<Value> = s
        .web
        .get(format!("{}/admin/payments", s.sim.app_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shoppers: Vec<&str> = payments
        .iter()
        .map(|p| p["shopper"].as_str().unwrap())
        .collect();
    assert_eq!(shoppers.len(), 2);
    assert!(
        shoppers.contains(&"person-a") && shoppers.contains(&"person-b"),
        "{shoppers:?}"
    );
    // No request with the wrong shopper's token (SEB answers 404 RESOURCE_UNKNOWN).
    s.assert_nothing_refused().await;
}

/// No token, QR data, autostart token or order id in the logs of a whole signed payment
/// (the real binary, debug logs on).
#[tokio::test]
async fn seb_no_token_qr_data_autostart_token_or_order_id_appears_in_the_logs() {
    use crate::helpers::fresh_database;
    use crate::serve::Serve;
    let sim = pisgate::sandbox::seb::spawn({
        let mut c = SebSandboxConfig::new("pisgate-seb-log", "seb-log-secret");
        c.status_step = Duration::from_millis(300);
        c
    })
    .await
    .unwrap();
    let url = fresh_database().await;
    let pool = pisgate::ledger::Db::from(sqlx::PgPool::connect(&url).await.unwrap());
    let (_, key) =
        pisgate::ledger::merchants::create(&pool, "Log shop", &["https://shop.example".into()])
            .await
            .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    let env = bank_env(&sim);
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    extra.extend_from_slice(&[
        ("RUST_LOG", "debug"),
        ("PISGATE__POLLER__ENABLED", "true"),
        ("PISGATE__POLLER__SIGNING_INTERVAL", "300ms"),
        ("PISGATE__POLLER__AUTHORIZED_INTERVAL", "300ms"),
    ]);
    let serve = Serve::start(&url, &extra).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let created: Value = client
        .post(format!("{}/v1/payments", serve.base))
        .bearer_auth(&key)
        .header("idempotency-key", "seb-log")
        .json(&body("14.00", Some("kund-log")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let hop = client
        .get(created["authorization_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let page = location(&hop);
    let web = reqwest::Client::new();
    let mut seen: Vec<String> = Vec::new();
    let mut last = None::<String>;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut approved = 0;
    loop {
        let r = client.get(&page).send().await.unwrap();
        if r.status() == 303 {
            break;
        }
        let html = r.text().await.unwrap();
        if let Some(i) = html.find("bankid.") {
            seen.push(
                html[i..]
                    .chars()
                    .take_while(|c| *c != '"' && *c != '<')
                    .collect(),
            );
        }
        if let Some(ast) = autostart_token(&html)
            && last.as_deref() != Some(ast.as_str())
        {
            seen.push(ast.clone());
            let r = web
                .post(format!(
                    "{}/admin/bankid/{ast}/approve?shopper=log-person",
                    sim.app_url
                ))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            approved += 1;
            last = Some(ast);
        }
        assert!(Instant::now() < deadline, "never signed:\n{html}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(approved, 2, "identified and signed");
    // Let the poller read it with the token a few times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for order in sim.sim.orders() {
        for field in [
            "id",
            "auth_req_id",
            "authorisation_id",
            "qr_start_token",
            "qr_start_secret",
        ] {
            if let Some(v) = order[field].as_str() {
                seen.push(v.to_owned());
            }
        }
    }
    let (_, stdout, stderr, _) = serve.stop().await;
    let logs = format!("{stdout}{stderr}");
    assert!(
        logs.contains("the shopper identified with BankID"),
        "no flow logs captured"
    );
    assert!(logs.contains(&id), "the payment's logs were captured");
    for secret in seen.iter().filter(|s| s.len() >= 8) {
        assert!(
            !logs.contains(secret.as_str()),
            "{secret} appears in the logs"
        );
    }
    assert!(!logs.contains("Bearer "), "a bearer token in the logs");
}

/// The refresher keeps a SEB shopper's token fresh through SEB's own refresh (a new pair
/// each time, the old refresh token never used again), and the poller follows the payment
/// to `paid` with the refreshed token.
#[tokio::test]
async fn seb_the_refresher_refreshes_the_shoppers_token_at_seb_and_the_poller_uses_the_new_one() {
    let s = setup(
        |c| {
            c.access_token_lifetime = Duration::from_secs(30);
            c.status_step = Duration::from_secs(2);
        },
        &[
            ("PISGATE__REFRESHER__ENABLED", "true"),
            ("PISGATE__REFRESHER__INTERVAL", "500ms"),
            ("PISGATE__REFRESHER__REFRESH_BEFORE", "40s"),
        ],
    )
    .await;
    let p = s.pay("15.00", Some("kund-r")).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    let sign = s.identify(&page, "person-r").await;
    let first: i64 =
        sqlx::query_scalar("SELECT issue_seq FROM psu_tokens WHERE psu_key LIKE '%:kund-r'")
            .fetch_one(&s.app.pool)
            .await
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: i64 =
            sqlx::query_scalar("SELECT issue_seq FROM psu_tokens WHERE psu_key LIKE '%:kund-r'")
                .fetch_one(&s.app.pool)
                .await
                .unwrap();
        if now > first + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the token was never refreshed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.admin(&sign, "approve", None).await;
    s.until_redirect(&page).await;
    s.wait_for_status(id, "paid").await;
    let status: String =
        sqlx::query_scalar("SELECT status FROM psu_tokens WHERE psu_key LIKE '%:kund-r'")
            .fetch_one(&s.app.pool)
            .await
            .unwrap();
    assert_eq!(status, "live");
    s.assert_nothing_refused().await;
}

/// SEB's answer to the initiation is lost after SEB made the payment (the simulator's
/// `drop_after_processing`): pisgate cannot know the payment, so the page offers "try
/// again"; the new attempt makes a second payment at SEB, and only that one, the one
/// pisgate recorded, is ever signed (the lost one is never put into a signing order) and
/// read. Status reads that meet SEB's 503s are retried; the payment ends paid, once.
#[tokio::test]
async fn seb_a_lost_initiation_answer_is_tried_again_and_only_the_recorded_payment_is_signed() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget};
    let s = setup(|_| {}, &[]).await;
    s.sim
        .sim
        .faults()
        .add(FaultRule::always(FaultTarget::Initiate, Fault::DropAfterProcessing).times(1));
    let p = s.pay("120.00", Some("kund-lost")).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    let (_, ast) = s.autostart(&page, None).await;
    let r = s.admin(&ast, "approve", Some("kund-lost")).await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    // The answer is lost: "try again", nothing recorded of SEB's payment.
    let html = s
        .page_until(&page, "try again after the lost answer", |h| {
            h.contains("/bankid/start")
        })
        .await;
    assert!(autostart_token(&html).is_none(), "no order yet: {html}");
    let unknown = s.payment(id).await;
    assert!(unknown["bank_payment_id"].is_null(), "{unknown}");
    assert_eq!(unknown["status"], "awaiting_authorization");
    let lost = s.sim.sim.payments();
    assert_eq!(lost.len(), 1, "SEB made the first payment: {lost:?}");
    let lost_id = lost[0]["id"].as_str().unwrap().to_owned();

    // From here on, SEB answers some status reads 503 (SEB's own body: safe to retry).
    let mut flaky = FaultRule::always(FaultTarget::Status, Fault::Http503);
    flaky.probability = 0.5;
    s.sim.sim.faults().add(flaky);

    let r = s.post(&page, "start").await;
    assert!(r.status().is_redirection(), "{}", r.status());
    let (_, sign) = s.autostart(&page, None).await;
    let recorded = s.payment(id).await;
    let bank_id = recorded["bank_payment_id"].as_str().unwrap().to_owned();
    assert_ne!(bank_id, lost_id, "{recorded}");
    s.phone(&sign, true).await;
    let to = s.until_redirect(&page).await;
    assert!(to.starts_with("https://shop.example/"), "{to}");
    let paid = s.wait_for_status(id, "paid").await;
    assert_eq!(paid["bank_status"], "ACSC", "{paid}");

    // Only the recorded payment was ever signed; the lost one stays unsigned at SEB.
    let signing: Vec<Value> = s
        .orders()
        .await
        .into_iter()
        .filter(|o| o["purpose"] == "sign")
        .collect();
    assert_eq!(signing.len(), 1, "{signing:?}");
    assert_eq!(signing[0]["payment_ids"], json!([bank_id]));
    let at_seb = s.sim.sim.payments();
    assert_eq!(at_seb.len(), 2, "{at_seb:?}");
    let lost_now = at_seb.iter().find(|p| p["id"] == lost_id.as_str()).unwrap();
    assert!(lost_now["signed_at"].is_null(), "{lost_now}");
    assert_eq!(lost_now["transactionStatus"], "RCVD");
    // pisgate never read the lost one (it does not know it).
    let read_lost = s
        .sim
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.contains(&lost_id))
        .count();
    assert_eq!(read_lost, 0);
    let faulted = s.sim.sim.faults().counters();
    assert_eq!(faulted[&pisgate::sandbox::Operation::Initiate].faulted, 1);
    let kinds = s.kinds(id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "initiated").count(),
        1,
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "status_changed"), "{kinds:?}");
    s.webhook(id, "payment.paid").await;
    s.assert_nothing_refused().await;
    s.assert_ledger_verifies().await;
}

/// What SEB's request cannot carry is a 422 at creation naming the field, with nothing
/// written: before, the payment was made (awaiting the shopper's BankID), and only after the
/// shopper identified did the adapter refuse it, ending it `failed` with a webhook.
#[tokio::test]
async fn seb_refuses_at_creation_what_its_request_cannot_carry_and_writes_nothing() {
    let t = setup(|_| {}, &[]).await;
    let mut long_message = body("120.00", None);
    // With an OCR reference SEB carries a message of at most 12 characters.
    long_message["creditor"]["message"] = json!("Invoice 2026-0042");
    let mut series = body("120.00", None);
    series["recurring"] = json!({"count": 12, "recurrence_type": "MONTHLY_SAME_DAY"});
    crate::helpers::assert_refused_at_creation(
        &t.app,
        &t.m.api_key,
        vec![(long_message, "creditor.message"), (series, "recurring")],
    )
    .await;
    // What SEB can carry is still made.
    t.pay("120.00", None).await;
}

impl Seb {
    /// The payment's ledger: (kind, detail), oldest first.
    async fn events(&self, id: &str) -> Vec<(String, Value)> {
        let v: Value = self
            .app
            .get_as(&format!("/v1/payments/{id}/events"), &self.m.api_key)
            .await
            .json()
            .await
            .unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["detail"].clone()))
            .collect()
    }

    /// The API requests SEB's simulator received with `method` on a path containing `part`.
    fn sent(&self, method: &str, part: &str) -> Vec<pisgate::sandbox::seb::ApiRequest> {
        self.sim
            .sim
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.contains(part))
            .collect()
    }

    async fn merchant_cancel(&self, id: &str) -> reqwest::Response {
        self.app
            .client
            .post(self.app.url(&format!("/v1/payments/{id}/cancel")))
            .bearer_auth(&self.m.api_key)
            .send()
            .await
            .unwrap()
    }
}

/// `66.08`: SEB answers the DELETE of an unsigned payment with 202 (the Berlin Group's
/// "cancellation needs authorisation") and cancels nothing. pisgate takes that as not
/// cancelled: the merchant's cancel answers 202 with the payment still
/// `awaiting_authorization`, the ledger says `cancel_needs_authorisation`, and nothing ever
/// records `cancelled` while SEB still holds the payment unsigned (RCVD).
#[tokio::test]
async fn seb_a_delete_answered_202_cancels_nothing_and_the_payment_stays_followed() {
    let s = setup(|_| {}, &[]).await;
    let p = s.pay("66.08", Some("kund-202")).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    s.identify(&page, "kund-202").await;
    let bank_id = s.payment(id).await["bank_payment_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = s.merchant_cancel(id).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "awaiting_authorization", "{body}");
    let deletes = s.sent("DELETE", &bank_id);
    assert_eq!(deletes.len(), 1, "one DELETE");
    assert_eq!(deletes[0].status, 202);
    assert_eq!(
        s.sim.sim.payment(&bank_id).unwrap()["transactionStatus"],
        "RCVD",
        "SEB cancelled nothing"
    );
    let kinds = s.kinds(id).await;
    assert!(
        kinds.iter().any(|k| k == "cancel_needs_authorisation"),
        "{kinds:?}"
    );
    // The poller keeps following it; nothing says cancelled while SEB holds it unsigned.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = s.payment(id).await;
    assert_eq!(now["status"], "awaiting_authorization", "{now}");
    assert!(!s.kinds(id).await.iter().any(|k| k == "cancelled"));
    s.assert_nothing_refused().await;
    s.assert_ledger_verifies().await;
}

/// `66.07`: SEB makes the payment with another amount (67.07 SEK for 66.07) and its 201
/// echoes it. pisgate records the answer (SEB holds the payment) with a
/// `bank_terms_mismatch` event, never starts a signing order for it, shows the shopper why,
/// and has SEB delete it with the shopper's token: `cancelled` on SEB's 204, failure
/// `bank_terms_mismatch`. Nothing can be signed at the wrong amount.
#[tokio::test]
async fn seb_another_amount_in_the_initiation_answer_starts_no_signing_order() {
    let s = setup(|_| {}, &[]).await;
    let p = s.pay("66.07", Some("kund-7")).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    let (_, ast) = s.autostart(&page, None).await;
    let r = s.admin(&ast, "approve", Some("kund-7")).await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    // The next loads take the tokens and initiate; the page then says why it stops.
    let deadline = Instant::now() + Duration::from_secs(20);
    let html = loop {
        let r = s.load(&page).await;
        let status = r.status();
        let html = r.text().await.unwrap();
        assert!(
            autostart_token(&html).is_none_or(|t| t == ast),
            "a signing order was started: {html}"
        );
        if status == 410 {
            break html;
        }
        assert_eq!(status, 200, "{html}");
        assert!(Instant::now() < deadline, "the page never stopped:\n{html}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(html.contains("Betalningen stoppad"), "{html}");
    assert!(html.contains("https://shop.example/"), "a way back: {html}");

    assert!(
        s.sent("POST", "/tpp/signing/v1/signing-orders").is_empty(),
        "no signing order was asked for"
    );
    assert!(
        s.orders().await.iter().all(|o| o["purpose"] != "sign"),
        "{:?}",
        s.orders().await
    );
    let done = s.payment(id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["bank_status"], "CANC", "{done}");
    assert_eq!(done["failure"]["code"], "bank_terms_mismatch", "{done}");
    let bank_id = done["bank_payment_id"].as_str().unwrap();
    let at_seb = s.sim.sim.payment(bank_id).unwrap();
    assert_eq!(at_seb["transactionStatus"], "CANC", "{at_seb}");
    assert!(at_seb["signed_at"].is_null(), "{at_seb}");
    let events = s.events(id).await;
    let mismatch = events
        .iter()
        .find(|(k, _)| k == "bank_terms_mismatch")
        .expect("the ledger says why");
    assert_eq!(mismatch.1["fields"], json!(["amount"]), "{events:?}");
    // Later loads start nothing either: the payment is final, the shopper goes back.
    let r = s.load(&page).await;
    assert_eq!(r.status(), 303);
    assert!(s.sent("POST", "/tpp/signing/v1/signing-orders").is_empty());
    s.webhook(id, "payment.cancelled").await;
    s.assert_nothing_refused().await;
    s.assert_ledger_verifies().await;
}

/// The shopper signs, then presses "cancel" on an old tab of the BankID page: a shopper's
/// cancel never touches a signed payment. No DELETE reaches SEB (its request log), the
/// payment stays `authorized`, and the shopper lands on the merchant's return URL.
#[tokio::test]
async fn seb_the_shoppers_cancel_after_signing_sends_no_delete_to_seb() {
    let s = setup(|c| c.status_step = Duration::from_secs(600), &[]).await;
    let p = s.pay("17.00", Some("kund-old-tab")).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    let sign = s.identify(&page, "kund-old-tab").await;
    s.admin(&sign, "approve", None).await;
    s.until_redirect(&page).await;
    s.wait_for_status(id, "authorized").await;

    let r = s.post(&page, "cancel").await;
    assert_eq!(r.status(), 303);
    assert!(
        location(&r).starts_with("https://shop.example/"),
        "{}",
        location(&r)
    );
    assert!(
        s.sent("DELETE", "/payments/").is_empty(),
        "no DELETE reached SEB: {:?}",
        s.sim.sim.requests()
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let now = s.payment(id).await;
    assert_eq!(now["status"], "authorized", "{now}");
    assert!(now["failure"].is_null(), "{now}");
    let kinds = s.kinds(id).await;
    assert!(!kinds.iter().any(|k| k == "cancel_requested"), "{kinds:?}");
    s.assert_nothing_refused().await;
    s.assert_ledger_verifies().await;
}

/// The shopper's token dies (a 401 on a status read, a refused refresh) and no status can be
/// read at SEB any more. `66.03`: the signing order expired unsigned (SEB said so), pisgate's
/// window closed, SEB's time to sign ran out: nobody signed it, so it ends `expired` on
/// pisgate's own record (`no_signing_order_succeeded`) instead of waiting forever for a
/// token; no DELETE is sent without a token.
#[tokio::test]
async fn seb_with_the_shoppers_token_gone_an_unsigned_payment_still_expires() {
    let s = setup(
        |c| c.order_timeout = Duration::from_secs(2),
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "4"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "6"),
            ("PISGATE__BANKS__SEB__APPROVAL_TIMEOUT_SECS", "8"),
        ],
    )
    .await;
    let p = s.pay("66.03", Some("kund-9")).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    s.identify(&page, "kund-9").await;
    s.page_until(&page, "the order's expiry", |h| h.contains("/bankid/start"))
        .await;
    kill_tokens(&s).await;
    let expired = s.wait_for_status(id, "expired").await;
    assert_eq!(expired["failure"]["code"], "not_signed", "{expired}");
    let proof: Vec<Value> = sqlx::query_scalar(
        "SELECT detail->'proof' FROM payment_events WHERE payment_id = $1::uuid AND kind = 'expired'",
    )
    .bind(id)
    .fetch_all(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(proof, [json!("no_signing_order_succeeded")]);
    let deletes = s
        .sim
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .count();
    assert_eq!(deletes, 0, "nothing is sent without the shopper's token");
    s.webhook(id, "payment.expired").await;
    s.assert_ledger_verifies().await;
}

/// The same with the signing order still running at SEB when the token died: the shopper
/// may have signed, and without a token nothing can ask SEB, so the payment is never
/// expired on pisgate's word, even long past the horizon and SEB's time to sign.
#[tokio::test]
async fn seb_with_the_shoppers_token_gone_a_running_signing_order_is_never_expired() {
    let s = setup(
        |c| c.order_timeout = Duration::from_secs(60),
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "3"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "4"),
            ("PISGATE__BANKS__SEB__APPROVAL_TIMEOUT_SECS", "5"),
        ],
    )
    .await;
    let p = s.pay("66.03", Some("kund-10")).await;
    let id = p["id"].as_str().unwrap();
    let page = s.bankid_page(&p).await;
    s.identify(&page, "kund-10").await;
    kill_tokens(&s).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(s.payment(id).await["status"], "awaiting_authorization");
    let kinds = s.kinds(id).await;
    assert!(!kinds.iter().any(|k| k == "expired"), "{kinds:?}");
}

/// A signing order's start whose answer is lost (SEB made the order: the simulator's
/// `drop_after_processing`) may be signed in the shopper's app all the same. Before, the
/// start was recorded `failed` like a refusal, and with the shopper's token gone the
/// horizon took that for "no signing order succeeded" and expired the payment, which SEB
/// would execute if the shopper signed. Now an unanswered start is never that proof.
#[tokio::test]
async fn seb_a_signing_order_whose_start_answer_was_lost_is_never_taken_for_nobody_signed() {
    use pisgate::sandbox::{Fault, FaultRule, FaultTarget, Operation};
    let s = setup(
        |c| c.order_timeout = Duration::from_secs(60),
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "3"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "4"),
            ("PISGATE__BANKS__SEB__APPROVAL_TIMEOUT_SECS", "5"),
        ],
    )
    .await;
    let p = s.pay("120.00", Some("kund-12")).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let page = s.bankid_page(&p).await;
    let (_, ast) = s.autostart(&page, None).await;
    // The initiation answers late, so that the signing order's start after it can be
    // faulted alone.
    s.sim
        .sim
        .faults()
        .add(FaultRule::always(FaultTarget::Initiate, Fault::DelayAnswer { ms: 1500 }).times(1));
    let r = s.admin(&ast, "approve", Some("kund-12")).await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let loading = {
        let client = s.app.client.clone();
        let page = page.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                let html = client
                    .get(&page)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                if html.contains("/bankid/start")
                    || autostart_token(&html).is_some_and(|t| t != ast)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while s
        .sim
        .sim
        .faults()
        .counters()
        .get(&Operation::Initiate)
        .map_or(0, |c| c.faulted)
        == 0
    {
        assert!(Instant::now() < deadline, "the initiation never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.sim
        .sim
        .faults()
        .add(FaultRule::always(FaultTarget::Authorise, Fault::DropAfterProcessing).times(1));
    loading.await.unwrap();
    let (state, hint): (String, Option<String>) = sqlx::query_as(
        "SELECT state, hint_code FROM bankid_orders WHERE payment_id = $1::uuid AND purpose = 'sign'",
    )
    .bind(&id)
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(
        (state.as_str(), hint.as_deref()),
        ("failed", Some("startUnknown"))
    );
    assert_eq!(
        s.sim.sim.faults().counters()[&Operation::Authorise].faulted,
        1,
        "the signing order's start met the fault"
    );

    kill_tokens(&s).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(s.payment(&id).await["status"], "awaiting_authorization");
    let kinds = s.kinds(&id).await;
    assert!(!kinds.iter().any(|k| k == "expired"), "{kinds:?}");
}

/// Every shopper token in the app's database dead, as a 401 on a status read leaves it.
async fn kill_tokens(s: &Seb) {
    let killed = sqlx::query(
        "UPDATE psu_tokens SET status = 'dead', dead_reason = 'rejected on a status read'
         WHERE status <> 'dead'",
    )
    .execute(&s.app.pool)
    .await
    .unwrap()
    .rows_affected();
    assert!(killed >= 1, "the shopper had a token");
}
