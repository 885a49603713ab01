//! The BankID page's flow (src/api/bankid/flow.rs) against a small in-process fake of a
//! bank whose every call needs the shopper's own token (`shopper_token_required`, SEB's
//! shape): the order of the steps, the claims (one order start per shopper action, tokens
//! taken once), the latest-token rule, the truth rules of the initiation with the token, and
//! the poller's token path. End to end against SEB's simulator: tests/api/seb.rs.

use crate::helpers::{fresh_database, settings};
use async_trait::async_trait;
use pisgate::app::Application;
use pisgate::bank::{
    Bank, BankEntry, BankError, BankFailure, BankIdOrder, BankIdProgress, BankIdState, BankLinks,
    BankPaymentId, BankRef, BankTraits, CancelOutcome, FundsAvailability, Initiated,
    PaymentDetails, PaymentInitiation, PsuContext, Revocation, ScaStep, StatusReport, TokenSet,
};
use pisgate::domain::{Country, PaymentStatus};
use pisgate::ledger::Db;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// The fake bank
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct World {
    seq: u32,
    /// order id → (purpose sign?, state, hint, shopper, payment ids, tokens given)
    orders: HashMap<String, Order>,
    /// access token → shopper
    tokens: HashMap<String, String>,
    /// bank payment id → (shopper, status)
    payments: HashMap<String, (String, String)>,
    /// Calls made, by name.
    calls: HashMap<&'static str, usize>,
    /// The next identification completes as this shopper.
    initiate_fails: Option<BankError>,
    /// The terms the next initiations' answers echo with other values than were sent.
    echo_mismatch: Vec<&'static str>,
}

#[derive(Clone)]
struct Order {
    sign: bool,
    state: BankIdState,
    hint: String,
    shopper: Option<String>,
    payment: Option<String>,
    tokens_given: bool,
}

#[derive(Clone, Default)]
struct FakeSeb(Arc<Mutex<World>>);

impl FakeSeb {
    fn count(&self, call: &'static str) -> usize {
        self.0.lock().unwrap().calls.get(call).copied().unwrap_or(0)
    }

    fn called(&self, call: &'static str) -> std::sync::MutexGuard<'_, World> {
        let mut w = self.0.lock().unwrap();
        *w.calls.entry(call).or_default() += 1;
        w
    }

    /// The shopper approves the order of this autostart token in the app.
    fn approve(&self, autostart: &str, shopper: &str) {
        let mut w = self.0.lock().unwrap();
        let id = autostart.trim_start_matches("ast-").to_owned();
        let order = w
            .orders
            .get_mut(&id)
            .expect("an order of that autostart token");
        assert_eq!(
            order.state,
            BankIdState::Pending,
            "approving an order that ended"
        );
        order.state = BankIdState::Complete;
        order.hint = "complete".into();
        if !order.sign {
            order.shopper = Some(shopper.to_owned());
        } else if let Some(pid) = order.payment.clone() {
            w.payments.get_mut(&pid).unwrap().1 = "ACTC".into();
        }
    }

    fn reject(&self, autostart: &str) {
        let mut w = self.0.lock().unwrap();
        let id = autostart.trim_start_matches("ast-").to_owned();
        let order = w.orders.get_mut(&id).unwrap();
        order.state = BankIdState::Failed;
        order.hint = "userCancel".into();
    }

    fn set_status(&self, payment: &str, status: &str) {
        self.0.lock().unwrap().payments.get_mut(payment).unwrap().1 = status.into();
    }

    fn shopper_of(&self, token: &SecretString) -> Result<String, BankError> {
        self.0
            .lock()
            .unwrap()
            .tokens
            .get(token.expose_secret())
            .cloned()
            .ok_or(BankError::TokenRejected)
    }

    fn progress(order: &Order, id: &str, read: u32) -> BankIdProgress {
        let pending = order.state == BankIdState::Pending;
        BankIdProgress {
            state: order.state,
            bank_status: format!("{:?}", order.state),
            hint_code: Some(order.hint.clone()),
            qr_data: pending.then(|| format!("bankid.qr-{id}.{read}")),
            autostart_token: pending.then(|| format!("ast-{id}")),
            psu_message: None,
            poll_delay: None,
        }
    }

    fn new_order(&self, w: &mut World, sign: bool, payment: Option<String>) -> BankIdOrder {
        w.seq += 1;
        let id = format!("ord{}", w.seq);
        let order = Order {
            sign,
            state: BankIdState::Pending,
            hint: "outstandingTransaction".into(),
            shopper: None,
            payment,
            tokens_given: false,
        };
        let progress = FakeSeb::progress(&order, &id, w.seq);
        w.orders.insert(id.clone(), order);
        BankIdOrder { id, progress }
    }
}

fn mapped(status: &str) -> Option<PaymentStatus> {
    Some(match status {
        "RCVD" => PaymentStatus::AwaitingAuthorization,
        "ACTC" | "ACSP" => PaymentStatus::Authorized,
        "ACSC" => PaymentStatus::Paid,
        "RJCT" => PaymentStatus::Rejected,
        "CANC" => PaymentStatus::Cancelled,
        _ => return None,
    })
}

#[async_trait]
impl Bank for FakeSeb {
    fn traits(&self) -> BankTraits {
        BankTraits {
            protocol: "seb",
            return_carries_code: false,
            needs_debtor_account: false,
            shopper_token_required: true,
            submit_after_authorization: false,
            token_per_payment: false,
            return_in_fragment: false,
            cancel_needs_shopper_token: true,
            deleted_status: "CANC",
            acts_without_hop: false,
        }
    }

    async fn initiate(
        &self,
        _: &PaymentInitiation,
        _: Option<&PsuContext>,
    ) -> Result<Initiated, BankError> {
        drop(self.called("initiate"));
        Err(BankError::TokenRejected)
    }

    async fn status(&self, _: &BankRef, _: Option<&PsuContext>) -> Result<StatusReport, BankError> {
        drop(self.called("status"));
        Err(BankError::TokenRejected)
    }

    async fn details(
        &self,
        _: &BankRef,
        _: Option<&SecretString>,
        _: Option<&PsuContext>,
    ) -> Result<PaymentDetails, BankError> {
        Err(BankError::NotFound)
    }

    async fn funds(
        &self,
        _: &BankPaymentId,
        _: &SecretString,
        _: Option<&PsuContext>,
    ) -> Result<FundsAvailability, BankError> {
        Err(BankError::NotFound)
    }

    async fn cancel(
        &self,
        payments: &[BankRef],
        token: Option<&SecretString>,
        _: Option<&PsuContext>,
    ) -> Result<CancelOutcome, BankError> {
        let shopper = self.shopper_of(token.ok_or(BankError::TokenRejected)?)?;
        let mut w = self.called("cancel");
        let mut outcome = CancelOutcome::default();
        for r in payments {
            match w.payments.get_mut(r.id.as_str()) {
                Some((owner, status)) if *owner == shopper && status == "RCVD" => {
                    *status = "CANC".into();
                    outcome.deleted.push(r.id.clone());
                }
                _ => outcome.errors.push(pisgate::bank::CancelError {
                    bank_payment_id: Some(r.id.to_string()),
                    code: Some("CANCELLATION_INVALID".into()),
                    description: None,
                }),
            }
        }
        Ok(outcome)
    }

    async fn exchange_code(&self, _: &SecretString, _: &str) -> Result<TokenSet, BankError> {
        Err(BankError::NotFound)
    }

    async fn refresh(&self, _: &SecretString) -> Result<TokenSet, BankError> {
        Err(BankError::TokenRejected)
    }

    async fn revoke(&self, _: &SecretString) -> Result<Revocation, BankError> {
        Ok(Revocation::NotOffered)
    }

    async fn initiate_with_token(
        &self,
        _: &PaymentInitiation,
        token: &SecretString,
        _: Option<&PsuContext>,
    ) -> Result<Initiated, BankError> {
        let shopper = self.shopper_of(token)?;
        let mut w = self.called("initiate_with_token");
        if let Some(e) = w.initiate_fails.take() {
            return Err(e);
        }
        w.seq += 1;
        let id = format!("bp{}", w.seq);
        w.payments.insert(id.clone(), (shopper, "RCVD".into()));
        Ok(Initiated {
            bank_payment_id: BankPaymentId::parse(id).unwrap(),
            next: ScaStep::BankIdSigning,
            status: StatusReport {
                bank_status: "RCVD".into(),
                status: mapped("RCVD"),
            },
            links: BankLinks::default(),
            echo_mismatch: w.echo_mismatch.clone(),
        })
    }

    async fn status_with_token(
        &self,
        payment: &BankRef,
        token: Option<&SecretString>,
        _: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError> {
        let shopper = self.shopper_of(token.ok_or(BankError::TokenRejected)?)?;
        let w = self.called("status_with_token");
        match w.payments.get(payment.id.as_str()) {
            Some((owner, status)) if *owner == shopper => Ok(StatusReport {
                bank_status: status.clone(),
                status: mapped(status),
            }),
            // Another shopper's payment: the bank knows no such payment for this token.
            _ => Err(BankError::NotFound),
        }
    }

    async fn start_identification(&self, _: Option<&PsuContext>) -> Result<BankIdOrder, BankError> {
        let mut w = self.called("start_identification");
        Ok(self.new_order(&mut w, false, None))
    }

    async fn identification_progress(
        &self,
        order_id: &str,
        _: Option<&PsuContext>,
    ) -> Result<BankIdProgress, BankError> {
        let mut w = self.called("identification_progress");
        w.seq += 1;
        let read = w.seq;
        let order = w.orders.get(order_id).ok_or(BankError::NotFound)?;
        Ok(FakeSeb::progress(order, order_id, read))
    }

    async fn identification_tokens(&self, order_id: &str) -> Result<TokenSet, BankError> {
        let mut w = self.called("identification_tokens");
        w.seq += 1;
        let n = w.seq;
        let order = w.orders.get_mut(order_id).ok_or(BankError::NotFound)?;
        if order.state != BankIdState::Complete || order.tokens_given {
            return Err(BankError::Validation {
                failures: vec![BankFailure {
                    code: "invalid-auth-req-id".into(),
                    description: Some("already used".into()),
                    path: None,
                }],
            });
        }
        order.tokens_given = true;
        let shopper = order.shopper.clone().unwrap();
        let access = format!("access-SECRET-{shopper}-{n}");
        w.tokens.insert(access.clone(), shopper);
        Ok(TokenSet {
            access_token: SecretString::from(access),
            refresh_token: Some(SecretString::from(format!("refresh-SECRET-{n}"))),
            expires_in: Duration::from_secs(1800),
            token_type: "Bearer".into(),
            shopper_id: None,
            issued_at: None,
        })
    }

    async fn start_signing(
        &self,
        payment: &BankRef,
        token: &SecretString,
        _: Option<&PsuContext>,
    ) -> Result<BankIdOrder, BankError> {
        let shopper = self.shopper_of(token)?;
        let mut w = self.called("start_signing");
        match w.payments.get(payment.id.as_str()) {
            Some((owner, status)) if *owner == shopper && status == "RCVD" => {}
            _ => {
                return Err(BankError::Validation {
                    failures: vec![BankFailure {
                        code: "STATUS_INVALID".into(),
                        description: None,
                        path: None,
                    }],
                });
            }
        }
        // BankID's rule: a second order for the shopper cancels both.
        let running: Vec<String> = w
            .orders
            .iter()
            .filter(|(_, o)| o.sign && o.state == BankIdState::Pending)
            .filter(|(_, o)| {
                o.payment
                    .as_ref()
                    .and_then(|p| w.payments.get(p))
                    .is_some_and(|(owner, _)| *owner == shopper)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut order = self.new_order(&mut w, true, Some(payment.id.to_string()));
        if !running.is_empty() {
            for id in running.iter().chain([&order.id]) {
                let o = w.orders.get_mut(id).unwrap();
                o.state = BankIdState::Failed;
                o.hint = "ALREADY_IN_PROGRESS".into();
            }
            order.progress = FakeSeb::progress(&w.orders[&order.id], &order.id, 0);
        }
        Ok(order)
    }

    async fn signing_progress(
        &self,
        order_id: &str,
        token: &SecretString,
        _: Option<&PsuContext>,
    ) -> Result<BankIdProgress, BankError> {
        self.shopper_of(token)?;
        let mut w = self.called("signing_progress");
        w.seq += 1;
        let read = w.seq;
        let order = w.orders.get(order_id).ok_or(BankError::NotFound)?;
        Ok(FakeSeb::progress(order, order_id, read))
    }
}

// ---------------------------------------------------------------------------------------
// The app with the fake
// ---------------------------------------------------------------------------------------

struct Flow {
    base: String,
    pool: Db,
    bank: FakeSeb,
    client: reqwest::Client,
    key: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn spawn(overrides: &[(&str, &str)]) -> Flow {
    let url = fresh_database().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut all = vec![("PISGATE__SERVER__PUBLIC_URL", base.as_str())];
    all.extend_from_slice(overrides);
    let settings = settings(&url, &all);
    let bank = FakeSeb::default();
    let entry = BankEntry {
        id: "sebfake".into(),
        name: "SEB (fake)".into(),
        countries: vec![Country::Se],
        client: Arc::new(bank.clone()),
    };
    let app = Application::build_on_with_banks(settings, listener, vec![entry])
        .await
        .unwrap();
    let pool = app.pool().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let (_, key) =
        pisgate::ledger::merchants::create(&pool, "Butik AB", &["https://shop.example".into()])
            .await
            .unwrap();
    Flow {
        base,
        pool,
        bank,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        key: key.expose_secret().to_owned(),
        _stop: tx,
    }
}

fn body(psu_id: Option<&str>) -> Value {
    let mut b = json!({
        "amount": "66.01",
        "currency": "SEK",
        "country": "SE",
        "bank": "sebfake",
        "creditor": {"account": {"type": "BGNR", "value": "50501055"}, "name": "Butik AB",
                     "reference": {"type": "OCR", "value": "1234566"}},
        "return_url": "https://shop.example/checkout/done?order=1234",
    });
    if let Some(psu) = psu_id {
        b["psu_id"] = json!(psu);
    }
    b
}

impl Flow {
    async fn pay(&self, psu_id: Option<&str>) -> Value {
        let r = self
            .client
            .post(format!("{}/v1/payments", self.base))
            .bearer_auth(&self.key)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&body(psu_id))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.unwrap()
    }

    async fn payment(&self, id: &str) -> Value {
        self.client
            .get(format!("{}/v1/payments/{id}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn events(&self, id: &str) -> Vec<String> {
        let v: Value = self
            .client
            .get(format!("{}/v1/payments/{id}/events", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
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

    /// Follows the hop to the BankID page; returns its absolute URL.
    async fn bankid_page(&self, hop: &str) -> String {
        let r = self.get(hop).await;
        assert_eq!(
            r.status(),
            303,
            "the hop sends a token-only bank's shopper on"
        );
        let to = location(&r);
        assert!(to.contains("/bankid?t="), "{to}");
        to
    }

    /// Loads the page until it shows an autostart link (bounded); returns (html, token).
    async fn autostart(&self, page: &str) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get(page).await;
            assert_eq!(r.status(), 200);
            let html = r.text().await.unwrap();
            if let Some(t) = autostart_token(&html) {
                return (html, t);
            }
            assert!(Instant::now() < deadline, "no autostart link:\n{html}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Loads the page until it redirects (bounded); returns where to.
    async fn until_redirect(&self, page: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get(page).await;
            if r.status() == 303 {
                return location(&r);
            }
            assert!(
                Instant::now() < deadline,
                "the page never sent the shopper on"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn post(&self, page: &str, action: &str) -> reqwest::Response {
        let (base, token) = page.split_once("?t=").unwrap();
        self.client
            .post(format!("{base}/{action}"))
            .form(&[("t", token)])
            .send()
            .await
            .unwrap()
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// The autostart token in the page's "open BankID on this device" link.
fn autostart_token(html: &str) -> Option<String> {
    let i = html.find("autostarttoken=")? + "autostarttoken=".len();
    let rest = &html[i..];
    let end = rest.find(['&', '"'])?;
    Some(rest[..end].to_owned()).filter(|t| !t.is_empty())
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_token_only_banks_payment_is_created_without_a_bank_call_awaiting_shopper_identification()
{
    let f = spawn(&[]).await;
    let p = f.pay(Some("shopper-a")).await;
    assert_eq!(p["initiation"], "awaiting_shopper_identification", "{p}");
    assert_eq!(p["status"], "awaiting_authorization");
    assert!(p["bank_payment_id"].is_null());
    assert!(
        p["authorization_url"]
            .as_str()
            .unwrap()
            .contains("/authorize/")
    );
    assert_eq!(f.bank.count("initiate"), 0);
    assert_eq!(f.bank.count("initiate_with_token"), 0);
    assert_eq!(f.bank.count("start_identification"), 0);
}

#[tokio::test]
async fn identify_then_sign_on_the_bankid_page_ends_at_the_merchants_return_url_authorized() {
    let f = spawn(&[]).await;
    let p = f.pay(Some("shopper-a")).await;
    let id = p["id"].as_str().unwrap();
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;

    // Phase identify: the first load starts one identification order.
    let (html, ast) = f.autostart(&page).await;
    assert!(html.contains("<svg"), "a QR code: {html}");
    assert!(
        html.contains("http-equiv=\"refresh\""),
        "refreshes without JS"
    );
    assert_eq!(f.bank.count("start_identification"), 1);
    // Reloads read the progress; they start nothing more.
    f.autostart(&page).await;
    assert_eq!(f.bank.count("start_identification"), 1);
    assert!(f.bank.count("identification_progress") >= 1);

    // The JSON state for the in-place updater.
    let state_url = format!(
        "{}&purpose=identify",
        page.replacen("/bankid?", "/bankid/state?", 1)
    );
    let s: Value = f.get(&state_url).await.json().await.unwrap();
    assert_eq!(s["state"], "pending", "{s}");
    assert!(s["qr_svg"].as_str().unwrap().contains("<svg"), "{s}");

    // The shopper identifies: the next load takes the tokens (once), initiates with them and
    // starts the signing order.
    f.bank.approve(&ast, "alice");
    let (html, sign_ast) = f.autostart(&page).await;
    assert_ne!(
        sign_ast, ast,
        "the signing order's own autostart token: {html}"
    );
    assert_eq!(f.bank.count("identification_tokens"), 1);
    assert_eq!(f.bank.count("initiate_with_token"), 1);
    assert_eq!(f.bank.count("start_signing"), 1);
    let now = f.payment(id).await;
    assert_eq!(now["initiation"], "initiated", "{now}");
    assert!(now["bank_payment_id"].is_string());
    // An updater still showing the identify phase is told to reload.
    let s: Value = f.get(&state_url).await.json().await.unwrap();
    assert!(s["next"].as_str().unwrap().contains("/bankid?t="), "{s}");

    // Signed: the status is read with the token and recorded; to the merchant.
    f.bank.approve(&sign_ast, "alice");
    let to = f.until_redirect(&page).await;
    assert!(
        to.starts_with("https://shop.example/checkout/done?order=1234&payment_id="),
        "{to}"
    );
    let now = f.payment(id).await;
    assert_eq!(now["status"], "authorized", "{now}");
    assert_eq!(f.bank.count("status"), 0, "never read without the token");
    let kinds = f.events(id).await;
    for k in [
        "bankid_order_starting",
        "bankid_order_started",
        "bankid_progress",
        "shopper_identified",
        "initiation_attempt",
        "initiated",
        "shopper_token_bound",
    ] {
        assert!(kinds.iter().any(|e| e == k), "{k} in {kinds:?}");
    }
    // The ledger never carries a token, an order id, QR data or an autostart token.
    let ledger: String = sqlx::query_scalar(
        "SELECT string_agg(detail::text, ' ') FROM payment_events WHERE payment_id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&f.pool)
    .await
    .unwrap();
    for secret in ["SECRET", "ast-", "qr-", "\"ord"] {
        assert!(!ledger.contains(secret), "{secret} in the ledger: {ledger}");
    }
    // The tokens are kept under the merchant's shopper id, encrypted.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM psu_tokens WHERE bank = 'sebfake' AND psu_key LIKE 'merchant:%:shopper-a' AND status = 'live'",
    )
    .fetch_one(&f.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1);
}

/// A chat app's previewer follows the hop to the BankID page; a link checker sends `HEAD`.
/// Neither starts an identification order (which nobody would scan, and which would have run
/// out when the shopper opens the link): the shopper's own first load starts the first one.
#[tokio::test]
async fn a_link_preview_or_a_head_of_the_bankid_page_starts_no_order() {
    let f = spawn(&[]).await;
    let p = f.pay(Some("shopper-a")).await;
    let hop = p["authorization_url"].as_str().unwrap();
    let slack = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";

    let r = f
        .client
        .get(hop)
        .header("user-agent", slack)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the previewer is not sent on to the BankID page"
    );
    let page = f.bankid_page(hop).await;
    let state_url = format!(
        "{}&purpose=identify",
        page.replacen("/bankid?", "/bankid/state?", 1)
    );
    for url in [&page, &state_url] {
        let r = f.client.head(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "HEAD {url}");
        for ua in [
            slack,
            "WhatsApp/2.23.20.0 A",
            "TelegramBot (like TwitterBot)",
        ] {
            let r = f
                .client
                .get(url)
                .header("user-agent", ua)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{ua}");
            let html = r.text().await.unwrap();
            assert!(html.contains("Payment link"), "{ua}: {html}");
            assert!(!html.contains("autostarttoken"), "{ua}: {html}");
        }
        let r = f
            .client
            .get(url)
            .header("sec-purpose", "prefetch;prerender")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "a prerender is dropped, not shown later");
    }
    assert_eq!(f.bank.count("start_identification"), 0);
    assert_eq!(f.bank.count("identification_progress"), 0);

    // The shopper's first load starts the one order.
    f.autostart(&page).await;
    assert_eq!(f.bank.count("start_identification"), 1);
}

/// A person whose browser is taken for a previewer (its agent says WhatsApp) is not stuck on
/// the neutral page: its link (the address with `open=1`) proceeds, and the cookie it leaves
/// carries the person through the hop's redirect to the BankID page, which starts the order,
/// and through the page's state updates. Without the cookie the same agent still gets the
/// neutral page; `HEAD` and prefetches never proceed, cookie or not.
#[tokio::test]
async fn a_person_taken_for_a_previewer_continues_through_the_neutral_pages_link() {
    let f = spawn(&[]).await;
    let p = f.pay(Some("shopper-a")).await;
    let hop = p["authorization_url"].as_str().unwrap();
    let id = p["id"].as_str().unwrap();
    let whatsapp = "WhatsApp/2.23.20.0 A";
    let get = |url: String, cookie: Option<&'static str>| {
        let client = f.client.clone();
        async move {
            let mut rq = client.get(&url).header("user-agent", whatsapp);
            if let Some(c) = cookie {
                rq = rq.header("cookie", c);
            }
            rq.send().await.unwrap()
        }
    };

    let r = get(hop.to_owned(), None).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let token = hop.split_once("?t=").unwrap().1;
    let href = format!("?t={token}&amp;open=1");
    assert!(
        html.contains(&format!("href=\"{href}\" rel=\"nofollow noopener\"")),
        "{html}"
    );
    assert_eq!(f.bank.count("start_identification"), 0);

    // The person follows it: sent on to the BankID page, with the cookie for this payment.
    let followed = format!("{hop}&open=1");
    for refused in [
        f.client.head(&followed).header("user-agent", whatsapp),
        f.client.get(&followed).header("sec-purpose", "prefetch"),
    ] {
        let r = refused.send().await.unwrap();
        assert!(r.headers().get("set-cookie").is_none());
        assert_ne!(r.status(), 303, "HEAD and prefetches never proceed");
    }
    // That request acts on nothing either: back to the address without `open=1` (so none
    // the person can copy carries it), with the cookie.
    let r = get(followed, None).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("?t={token}"));
    assert_eq!(f.bank.count("start_identification"), 0);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with(&format!(
            "pisgate_opened=1; Path=/authorize/{id}; Max-Age=3600; HttpOnly; SameSite=Lax"
        )),
        "{cookie}"
    );
    let sent = "pisgate_opened=1";
    let r = get(hop.to_owned(), Some(sent)).await;
    assert_eq!(r.status(), 303);
    let page = location(&r);
    assert!(page.contains("/bankid?t="), "{page}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(page.clone(), Some(sent)).await;
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        assert!(!html.contains("Payment link"), "{html}");
        if autostart_token(&html).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no autostart link:\n{html}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(f.bank.count("start_identification"), 1);
    let state_url = format!(
        "{}&purpose=identify",
        page.replacen("/bankid?", "/bankid/state?", 1)
    );
    let r = get(state_url.clone(), Some(sent)).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    // The same agent without the cookie: the neutral page again; HEAD with it: the same.
    let r = get(state_url.clone(), None).await;
    assert!(r.text().await.unwrap().contains("Payment link"));
    let r = f
        .client
        .head(&page)
        .header("user-agent", whatsapp)
        .header("cookie", sent)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-robots-tag"],
        "noindex, nofollow",
        "the neutral page"
    );
    assert_eq!(f.bank.count("start_identification"), 1);
}

#[tokio::test]
async fn a_double_submit_of_try_again_starts_one_order() {
    let f = spawn(&[]).await;
    let p = f.pay(None).await;
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;
    let (_, ast) = f.autostart(&page).await;
    // Refused in the app: the page shows it, with "try again".
    f.bank.reject(&ast);
    let deadline = Instant::now() + Duration::from_secs(10);
    let html = loop {
        let html = f.get(&page).await.text().await.unwrap();
        if html.contains("/bankid/start") {
            break html;
        }
        assert!(Instant::now() < deadline, "no try again:\n{html}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        autostart_token(&html).is_none(),
        "no link to a failed order"
    );
    // Two submits at once (a double click, two tabs): one new order.
    let (a, b) = tokio::join!(f.post(&page, "start"), f.post(&page, "start"));
    assert_eq!(a.status(), 303);
    assert_eq!(b.status(), 303);
    assert_eq!(
        f.bank.count("start_identification"),
        2,
        "the first and one retry"
    );
    // And a reload never starts another.
    f.autostart(&page).await;
    assert_eq!(f.bank.count("start_identification"), 2);
}

#[tokio::test]
async fn the_identifications_tokens_are_taken_once_by_concurrent_page_loads() {
    let f = spawn(&[]).await;
    let p = f.pay(Some("shopper-b")).await;
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;
    let (_, ast) = f.autostart(&page).await;
    f.bank.approve(&ast, "bob");
    let loads: Vec<_> = (0..4).map(|_| f.get(&page)).collect();
    futures_util::future::join_all(loads).await;
    f.autostart(&page).await;
    assert_eq!(f.bank.count("identification_tokens"), 1);
    assert_eq!(f.bank.count("initiate_with_token"), 1);
    assert_eq!(f.bank.count("start_signing"), 1);
}

#[tokio::test]
async fn an_initiation_whose_answer_is_lost_shows_try_again_and_the_retry_resumes_it() {
    let f = spawn(&[]).await;
    let p = f.pay(None).await;
    let id = p["id"].as_str().unwrap();
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;
    let (_, ast) = f.autostart(&page).await;
    f.bank.0.lock().unwrap().initiate_fails = Some(BankError::Unexpected {
        status: Some(504),
        detail: "gateway timeout".into(),
    });
    f.bank.approve(&ast, "carol");
    let html = f.get(&page).await.text().await.unwrap();
    assert!(html.contains("/bankid/start"), "try again:\n{html}");
    assert_eq!(f.payment(id).await["initiation"], "outcome_unknown");
    // A reload does not initiate again by itself; the shopper's retry does.
    f.get(&page).await;
    assert_eq!(f.bank.count("initiate_with_token"), 1);
    assert_eq!(f.post(&page, "start").await.status(), 303);
    assert_eq!(f.bank.count("initiate_with_token"), 2);
    assert_eq!(f.payment(id).await["initiation"], "initiated");
    assert_eq!(
        f.bank.count("identification_tokens"),
        1,
        "the token is reused"
    );
    f.autostart(&page).await;
    assert_eq!(f.bank.count("start_signing"), 1);
}

#[tokio::test]
async fn a_refused_initiation_ends_the_payment_failed_and_sends_the_shopper_back() {
    let f = spawn(&[]).await;
    let p = f.pay(None).await;
    let id = p["id"].as_str().unwrap();
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;
    let (_, ast) = f.autostart(&page).await;
    f.bank.0.lock().unwrap().initiate_fails = Some(BankError::Validation {
        failures: vec![BankFailure {
            code: "FORMAT_ERROR".into(),
            description: None,
            path: Some("creditorAccount".into()),
        }],
    });
    f.bank.approve(&ast, "dave");
    let to = f.until_redirect(&page).await;
    assert!(to.starts_with("https://shop.example/"), "{to}");
    assert_eq!(f.payment(id).await["status"], "failed");
}

#[tokio::test]
async fn a_second_signing_order_already_in_progress_fails_and_the_payment_waits_for_the_bank() {
    let f = spawn(&[]).await;
    // Two payments of one shopper (the merchant's psu_id): the second's signing order finds
    // the first's running; BankID cancels both.
    let p1 = f.pay(Some("shopper-e")).await;
    let p2 = f.pay(Some("shopper-e")).await;
    let page1 = f
        .bankid_page(p1["authorization_url"].as_str().unwrap())
        .await;
    let page2 = f
        .bankid_page(p2["authorization_url"].as_str().unwrap())
        .await;
    let (_, ast) = f.autostart(&page1).await;
    f.bank.approve(&ast, "erin");
    f.autostart(&page1).await; // signing order 1 running
    let (_, ast2) = f.autostart(&page2).await;
    f.bank.approve(&ast2, "erin");
    let deadline = Instant::now() + Duration::from_secs(10);
    let html = loop {
        let html = f.get(&page2).await.text().await.unwrap();
        if html.contains("/bankid/start") {
            break html;
        }
        assert!(Instant::now() < deadline, "no failure shown:\n{html}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(autostart_token(&html).is_none());
    // The failed order finalised nothing: the bank's status (RCVD) decides.
    assert_eq!(
        f.payment(p2["id"].as_str().unwrap()).await["status"],
        "awaiting_authorization"
    );
}

#[tokio::test]
async fn a_second_shoppers_token_never_reads_the_first_shoppers_payment() {
    let f = spawn(&[
        ("PISGATE__POLLER__ENABLED", "true"),
        ("PISGATE__POLLER__SIGNING_INTERVAL", "200ms"),
        ("PISGATE__POLLER__AUTHORIZED_INTERVAL", "200ms"),
    ])
    .await;
    let a = f.pay(Some("shopper-f")).await;
    let b = f.pay(Some("shopper-g")).await;
    for (p, who) in [(&a, "frank"), (&b, "gina")] {
        let page = f
            .bankid_page(p["authorization_url"].as_str().unwrap())
            .await;
        let (_, ast) = f.autostart(&page).await;
        f.bank.approve(&ast, who);
        f.autostart(&page).await;
    }
    let bp_a = f.payment(a["id"].as_str().unwrap()).await["bank_payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The bank moves A; only A's own shopper's token can read it: the poller sees it.
    f.bank.set_status(&bp_a, "ACSC");
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.payment(a["id"].as_str().unwrap()).await["status"] != "paid" {
        assert!(
            Instant::now() < deadline,
            "the poller never read A with A's token"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every status read was made with a token; none answered "not found" (another
    // shopper's token on a payment would).
    assert_eq!(f.bank.count("status"), 0);
    let keys: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id::text, psu_key FROM payments ORDER BY created_at")
            .fetch_all(&f.pool)
            .await
            .unwrap();
    assert!(
        keys[0].1.as_deref().unwrap().ends_with(":shopper-f"),
        "{keys:?}"
    );
    assert!(
        keys[1].1.as_deref().unwrap().ends_with(":shopper-g"),
        "{keys:?}"
    );
    let logs_404: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payment_events WHERE detail::text LIKE '%not_found%'",
    )
    .fetch_one(&f.pool)
    .await
    .unwrap();
    assert_eq!(logs_404, 0);
}

#[tokio::test]
async fn the_poller_waits_without_a_token_and_marks_a_refused_token_dead() {
    let f = spawn(&[
        ("PISGATE__POLLER__ENABLED", "true"),
        ("PISGATE__POLLER__SIGNING_INTERVAL", "200ms"),
    ])
    .await;
    let p = f.pay(Some("shopper-h")).await;
    let id = p["id"].as_str().unwrap();
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;
    let (_, ast) = f.autostart(&page).await;
    f.bank.approve(&ast, "hank");
    f.autostart(&page).await;
    // The bank forgets the token (revoked): the next read answers 401, the token is dead,
    // and the poller waits from then on, never reading without a token.
    f.bank.0.lock().unwrap().tokens.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM psu_tokens WHERE psu_key LIKE '%:shopper-h'")
                .fetch_optional(&f.pool)
                .await
                .unwrap();
        if status.as_deref() == Some("dead") {
            break;
        }
        assert!(Instant::now() < deadline, "the token was never marked dead");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(f.bank.count("status"), 0, "never read without the token");
    assert_eq!(f.payment(id).await["status"], "awaiting_authorization");
}

#[tokio::test]
async fn the_shoppers_cancel_on_the_bankid_page_deletes_the_payment_at_the_bank_with_the_token() {
    let f = spawn(&[]).await;
    let p = f.pay(None).await;
    let id = p["id"].as_str().unwrap();
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;
    let (_, ast) = f.autostart(&page).await;
    f.bank.approve(&ast, "ivan");
    f.autostart(&page).await;
    let r = f.post(&page, "cancel").await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("https://shop.example/"));
    assert_eq!(f.bank.count("cancel"), 1);
    assert_eq!(f.payment(id).await["status"], "cancelled");
}

/// The shopper signs, then presses "cancel" on the page (an old tab): a shopper's cancel
/// never touches a signed payment, so nothing is sent to the bank, the payment stays
/// `authorized`, no cancel is recorded, and the shopper goes back to the merchant.
#[tokio::test]
async fn the_shoppers_cancel_after_signing_sends_nothing_to_the_bank() {
    let f = spawn(&[]).await;
    let p = f.pay(Some("shopper-old-tab")).await;
    let id = p["id"].as_str().unwrap();
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;
    let (_, ast) = f.autostart(&page).await;
    f.bank.approve(&ast, "olga");
    let (_, sign) = f.autostart(&page).await;
    f.bank.approve(&sign, "olga");
    f.until_redirect(&page).await;
    assert_eq!(f.payment(id).await["status"], "authorized");

    let r = f.post(&page, "cancel").await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("https://shop.example/"));
    assert_eq!(f.bank.count("cancel"), 0, "nothing sent to the bank");
    assert_eq!(f.payment(id).await["status"], "authorized");
    let kinds = f.events(id).await;
    assert!(!kinds.iter().any(|k| k == "cancel_requested"), "{kinds:?}");
}

/// Signed at the bank, but pisgate has not seen it yet (the signing order completed, the
/// status not read): the shopper's cancel reads the bank's status with the shopper's token
/// first, finds the payment signed, and sends no delete.
#[tokio::test]
async fn the_shoppers_cancel_reads_the_bank_first_and_sends_nothing_for_a_payment_signed_meanwhile()
{
    let f = spawn(&[]).await;
    let p = f.pay(Some("shopper-race")).await;
    let id = p["id"].as_str().unwrap();
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;
    let (_, ast) = f.autostart(&page).await;
    f.bank.approve(&ast, "rita");
    let (_, sign) = f.autostart(&page).await;
    // Signed in the app; nobody reloads the page, the poller is off.
    f.bank.approve(&sign, "rita");
    assert_eq!(f.payment(id).await["status"], "awaiting_authorization");

    let r = f.post(&page, "cancel").await;
    assert_eq!(r.status(), 303);
    assert_eq!(f.bank.count("cancel"), 0, "nothing sent to the bank");
    assert_eq!(f.payment(id).await["status"], "authorized");
}

/// The bank's answer to the initiation echoes another amount: the payment is recorded (the
/// bank holds it) with `bank_terms_mismatch`, no signing order is ever started, the shopper
/// sees why, and the bank is asked to delete it: `cancelled`, failure `bank_terms_mismatch`.
#[tokio::test]
async fn an_initiation_answer_with_another_amount_starts_no_signing_order() {
    let f = spawn(&[]).await;
    f.bank.0.lock().unwrap().echo_mismatch = vec!["amount"];
    let p = f.pay(Some("shopper-m")).await;
    let id = p["id"].as_str().unwrap();
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;
    let (_, ast) = f.autostart(&page).await;
    f.bank.approve(&ast, "mona");
    let r = f.get(&page).await;
    assert_eq!(r.status(), 410);
    let html = r.text().await.unwrap();
    assert!(html.contains("Payment stopped"), "{html}");
    assert_eq!(f.bank.count("initiate_with_token"), 1);
    assert_eq!(f.bank.count("start_signing"), 0, "no signing order");
    assert_eq!(f.bank.count("cancel"), 1, "deleted at the bank");
    let now = f.payment(id).await;
    assert_eq!(now["status"], "cancelled", "{now}");
    assert_eq!(now["failure"]["code"], "bank_terms_mismatch", "{now}");
    let kinds = f.events(id).await;
    assert!(
        kinds.iter().any(|k| k == "bank_terms_mismatch"),
        "{kinds:?}"
    );
    // Reloads and "try again" start nothing either.
    f.post(&page, "start").await;
    f.get(&page).await;
    assert_eq!(f.bank.count("start_signing"), 0);
}

#[tokio::test]
async fn the_shoppers_cancel_before_identifying_cancels_without_a_bank_call() {
    let f = spawn(&[]).await;
    let p = f.pay(None).await;
    let id = p["id"].as_str().unwrap();
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;
    f.autostart(&page).await;
    let r = f.post(&page, "cancel").await;
    assert_eq!(r.status(), 303);
    assert_eq!(f.payment(id).await["status"], "cancelled");
    assert_eq!(f.bank.count("cancel"), 0);
    assert_eq!(f.bank.count("initiate_with_token"), 0);
}

#[tokio::test]
async fn choosing_a_token_only_bank_on_the_choice_page_leads_to_the_bankid_page_without_a_bank_call()
 {
    let f = spawn(&[]).await;
    let mut b = body(None);
    b.as_object_mut().unwrap().remove("bank");
    let r = f
        .client
        .post(format!("{}/v1/payments", f.base))
        .bearer_auth(&f.key)
        .header("idempotency-key", "choice")
        .json(&b)
        .send()
        .await
        .unwrap();
    let p: Value = r.json().await.unwrap();
    // Nordea and the fake both serve SE: the shopper chooses.
    assert_eq!(p["initiation"], "awaiting_bank_choice", "{p}");
    let hop = p["authorization_url"].as_str().unwrap();
    let (base, token) = hop.split_once("?t=").unwrap();
    let r = f
        .client
        .post(format!("{base}/bank"))
        .form(&[("t", token), ("bank", "sebfake")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = location(&r);
    assert!(to.contains("/bankid?t="), "{to}");
    let id = p["id"].as_str().unwrap();
    let now = f.payment(id).await;
    assert_eq!(now["bank"], "sebfake");
    assert_eq!(
        now["initiation"], "awaiting_shopper_identification",
        "{now}"
    );
    assert_eq!(f.bank.count("initiate"), 0);
    assert_eq!(f.bank.count("initiate_with_token"), 0);
    // The hop itself leads there too from now on.
    assert!(f.bankid_page(hop).await.contains("/bankid?t="));
    f.autostart(&to).await;
    assert_eq!(f.bank.count("start_identification"), 1);
}

#[tokio::test]
async fn a_start_whose_answer_was_lost_keeps_its_claim_for_the_lease_and_a_retry_after_it_starts_again()
 {
    let f = spawn(&[]).await;
    let p = f.pay(None).await;
    let id = p["id"].as_str().unwrap();
    let page = f
        .bankid_page(p["authorization_url"].as_str().unwrap())
        .await;
    let (_, ast) = f.autostart(&page).await;
    f.bank.reject(&ast);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f
        .get(&page)
        .await
        .text()
        .await
        .unwrap()
        .contains("/bankid/start")
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The retry's start is sent and its answer lost: unknown, the claim stays.
    sqlx::query(
        "UPDATE bankid_orders SET order_id = NULL, state = 'failed', hint_code = 'startUnknown',
                start_claimed_at = now() WHERE payment_id = $1::uuid AND purpose = 'identify'",
    )
    .bind(id)
    .execute(&f.pool)
    .await
    .unwrap();
    assert_eq!(f.post(&page, "start").await.status(), 303);
    assert_eq!(
        f.bank.count("start_identification"),
        1,
        "within the lease: no new start"
    );
    // After the lease, the shopper's retry starts a new order.
    sqlx::query(
        "UPDATE bankid_orders SET start_claimed_at = now() - interval '10 minutes'
         WHERE payment_id = $1::uuid AND purpose = 'identify'",
    )
    .bind(id)
    .execute(&f.pool)
    .await
    .unwrap();
    assert_eq!(f.post(&page, "start").await.status(), 303);
    assert_eq!(f.bank.count("start_identification"), 2);
}
