//! pisgate's side of a bank that returns the shopper with the answer in the URL fragment and
//! executes a signed payment only when pisgate submits it (OP's shape:
//! `return_in_fragment`, `token_per_payment`, `submit_after_authorization`), against a small
//! in-process fake of such a bank: the fragment page, the code exchange with the state and
//! the front-channel ID token, the per-payment token, the submit step (one submission,
//! persisted before the call, the same key after an unknown outcome, a new key after
//! SubmissionPending, withheld on the merchant's cancel), and its truth rules. End to end
//! against OP's simulator: the coordinator's tests.

use crate::helpers::{continue_to_bank, fresh_database, ledger_keys, settings};
use crate::payments::body as payment_body;
use async_trait::async_trait;
use pisgate::app::Application;
use pisgate::bank::{
    Bank, BankEntry, BankError, BankFailure, BankLinks, BankPaymentId, BankRef, BankTraits,
    CancelError, CancelOutcome, FundsAvailability, Initiated, PaymentDetails, PaymentInitiation,
    PsuContext, Revocation, ScaStep, StatusReport, TokenSet,
};
use pisgate::domain::{Country, PaymentStatus};
use pisgate::ledger::Db;
use pisgate::workers::{Pacer, WorkerContext, poller};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// The fake bank
// ---------------------------------------------------------------------------------------

/// What the fake does with the next submission that is not a replay.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Performs it: `Debited`.
    Debit,
    /// `SubmissionPending` (nothing moved; a new key may submit again).
    Pending,
    /// `Rejected` at submission.
    Reject,
    /// Performs it (`Accepted`: not debited yet), then the answer is lost.
    PerformLoseAnswer,
    /// Never reaches the bank's books; the answer is lost (a timeout).
    LoseBeforePerforming,
    /// Performs it or not, then never answers.
    Hang { perform: bool },
}

#[derive(Default)]
struct FakePayment {
    status: String,
    /// pisgate's state sent with the initiation.
    state: String,
    redirect_uri: String,
    code: Option<String>,
    code_used: bool,
    /// The keys of the submissions performed (not replays).
    performed: Vec<String>,
    /// Recorded answer per key (a replay answers it).
    answers: HashMap<String, String>,
}

#[derive(Default)]
struct World {
    seq: u32,
    /// bank payment id → payment
    payments: HashMap<String, FakePayment>,
    /// access token → bank payment id
    tokens: HashMap<String, String>,
    /// The exchanges: (bank payment id, code, redirect uri, state, front ID token).
    exchanges: Vec<(String, String, String, String, Option<String>)>,
    /// Every submit call: (bank payment id, key).
    submit_calls: Vec<(String, String)>,
    revoked: Vec<String>,
    plans: VecDeque<Plan>,
    /// Status reads that fail (unavailable) before answering again.
    failing_reads: usize,
    /// Status reads that still show a submitted payment as `Authorized` (a lagging read).
    stale_reads: usize,
    submit_delay: Duration,
    /// How long the code exchange takes (a slow token endpoint).
    exchange_delay: Duration,
    calls: HashMap<&'static str, usize>,
    /// The bank offers no token revocation (OP's documented API): `revoke` sends nothing.
    no_revocation: bool,
    /// The terms the next creations' answers echo with other values than were sent.
    echo_mismatch: Vec<&'static str>,
}

#[derive(Clone, Default)]
struct FakeOp(Arc<Mutex<World>>);

fn mapped(status: &str) -> Option<PaymentStatus> {
    Some(match status {
        "Unauthorized" | "Authorizing" => PaymentStatus::AwaitingAuthorization,
        "Authorized" | "SubmissionPending" | "Accepted" => PaymentStatus::Authorized,
        "Debited" => PaymentStatus::Paid,
        "Rejected" => PaymentStatus::Rejected,
        "Revoked" | "Cancelled" => PaymentStatus::Cancelled,
        _ => return None,
    })
}

fn report(status: &str) -> StatusReport {
    StatusReport {
        bank_status: status.to_owned(),
        status: mapped(status),
    }
}

fn refused(code: &str) -> BankError {
    BankError::Validation {
        failures: vec![BankFailure {
            code: code.into(),
            description: None,
            path: None,
        }],
    }
}

impl FakeOp {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    fn count(&self, call: &'static str) -> usize {
        self.world().calls.get(call).copied().unwrap_or(0)
    }

    fn called(&self, call: &'static str) -> std::sync::MutexGuard<'_, World> {
        let mut w = self.world();
        *w.calls.entry(call).or_default() += 1;
        w
    }

    /// The shopper approves at the bank: `Authorized`; returns (code, state).
    fn approve(&self, bank_id: &str) -> (String, String) {
        let mut w = self.world();
        let p = w.payments.get_mut(bank_id).unwrap();
        p.status = "Authorized".into();
        let code = format!("code-{bank_id}");
        p.code = Some(code.clone());
        (code, p.state.clone())
    }

    /// The shopper refuses at the bank: `Rejected`; returns the state.
    fn reject(&self, bank_id: &str) -> String {
        let mut w = self.world();
        let p = w.payments.get_mut(bank_id).unwrap();
        p.status = "Rejected".into();
        p.state.clone()
    }

    fn plan(&self, plans: &[Plan]) {
        self.world().plans = plans.iter().copied().collect();
    }

    fn performed(&self, bank_id: &str) -> Vec<String> {
        self.world().payments[bank_id].performed.clone()
    }

    fn submit_keys(&self) -> Vec<String> {
        self.world()
            .submit_calls
            .iter()
            .map(|(_, k)| k.clone())
            .collect()
    }
}

#[async_trait]
impl Bank for FakeOp {
    fn traits(&self) -> BankTraits {
        BankTraits {
            protocol: "fakeop",
            return_carries_code: true,
            needs_debtor_account: false,
            shopper_token_required: false,
            submit_after_authorization: true,
            token_per_payment: true,
            return_in_fragment: true,
            cancel_needs_shopper_token: false,
            deleted_status: "Revoked",
            acts_without_hop: false,
        }
    }

    async fn initiate(
        &self,
        payment: &PaymentInitiation,
        _: Option<&PsuContext>,
    ) -> Result<Initiated, BankError> {
        let mut w = self.called("initiate");
        w.seq += 1;
        let id = format!("op{}", w.seq);
        w.payments.insert(
            id.clone(),
            FakePayment {
                status: "Unauthorized".into(),
                state: payment.authentication.state.clone(),
                redirect_uri: payment.authentication.redirect_uri.clone(),
                ..FakePayment::default()
            },
        );
        Ok(Initiated {
            bank_payment_id: BankPaymentId::parse(id.clone()).unwrap(),
            next: ScaStep::Redirect {
                url: format!("https://op.example/oauth/authorize?p={id}"),
            },
            status: report("Unauthorized"),
            links: BankLinks::default(),
            echo_mismatch: w.echo_mismatch.clone(),
        })
    }

    async fn status(
        &self,
        payment: &BankRef,
        _: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError> {
        let mut w = self.called("status");
        if w.failing_reads > 0 {
            w.failing_reads -= 1;
            return Err(BankError::Unavailable {
                detail: "read refused".into(),
                retry_safe: true,
            });
        }
        let status = w
            .payments
            .get(payment.id.as_str())
            .ok_or(BankError::NotFound)?
            .status
            .clone();
        if w.stale_reads > 0 && (status == "Debited" || status == "Accepted") {
            w.stale_reads -= 1;
            return Ok(report("Authorized"));
        }
        Ok(report(&status))
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

    /// OP's revoke: only an unauthorized payment.
    async fn cancel(
        &self,
        payments: &[BankRef],
        _: Option<&SecretString>,
        _: Option<&PsuContext>,
    ) -> Result<CancelOutcome, BankError> {
        let mut w = self.called("cancel");
        let mut outcome = CancelOutcome::default();
        for r in payments {
            match w.payments.get_mut(r.id.as_str()) {
                Some(p) if p.status == "Unauthorized" || p.status == "Authorizing" => {
                    p.status = "Revoked".into();
                    outcome.deleted.push(r.id.clone());
                }
                _ => outcome.errors.push(CancelError {
                    bank_payment_id: Some(r.id.to_string()),
                    code: Some("REVOKE_NOT_ALLOWED".into()),
                    description: None,
                }),
            }
        }
        Ok(outcome)
    }

    async fn exchange_code(&self, _: &SecretString, _: &str) -> Result<TokenSet, BankError> {
        drop(self.called("exchange_code"));
        Err(refused("invalid_grant"))
    }

    async fn exchange_code_for(
        &self,
        payment: &BankRef,
        code: &SecretString,
        redirect_uri: &str,
        state: &SecretString,
        front_id_token: Option<&str>,
    ) -> Result<TokenSet, BankError> {
        let delay = self.called("exchange_code_for").exchange_delay;
        tokio::time::sleep(delay).await;
        let mut w = self.world();
        let id = payment.id.to_string();
        w.exchanges.push((
            id.clone(),
            code.expose_secret().to_owned(),
            redirect_uri.to_owned(),
            state.expose_secret().to_owned(),
            front_id_token.map(str::to_owned),
        ));
        let p = w.payments.get_mut(&id).ok_or(BankError::NotFound)?;
        if p.code.as_deref() != Some(code.expose_secret()) || p.code_used {
            return Err(refused("invalid_grant"));
        }
        p.code_used = true;
        w.seq += 1;
        let access = format!("access-SECRET-{id}-{}", w.seq);
        w.tokens.insert(access.clone(), id.clone());
        Ok(TokenSet {
            access_token: SecretString::from(access),
            refresh_token: Some(SecretString::from(format!("refresh-SECRET-{id}-{}", w.seq))),
            expires_in: Duration::from_secs(600),
            token_type: "Bearer".into(),
            // OP names its shopper; the token still belongs to this payment only.
            shopper_id: Some("op-subject-1".into()),
            issued_at: None,
        })
    }

    async fn refresh(&self, _: &SecretString) -> Result<TokenSet, BankError> {
        Err(BankError::TokenRejected)
    }

    async fn revoke(&self, refresh_token: &SecretString) -> Result<Revocation, BankError> {
        let mut w = self.called("revoke");
        if w.no_revocation {
            return Ok(Revocation::NotOffered);
        }
        w.revoked.push(refresh_token.expose_secret().to_owned());
        Ok(Revocation::Revoked)
    }

    async fn submit(
        &self,
        payment: &BankRef,
        access_token: &SecretString,
        idempotency_key: &str,
        _: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError> {
        // A slow bank: the call is on the wire this long before the bank acts on it.
        let delay = {
            let mut w = self.called("submit");
            w.submit_calls
                .push((payment.id.to_string(), idempotency_key.to_owned()));
            w.submit_delay
        };
        tokio::time::sleep(delay).await;
        let plan = {
            let mut w = self.world();
            let id = payment.id.to_string();
            if w.tokens.get(access_token.expose_secret()) != Some(&id) {
                return Err(refused("TOKEN_NOT_FOR_PAYMENT"));
            }
            let plan = w.plans.front().copied().unwrap_or(Plan::Debit);
            let p = w.payments.get_mut(&id).ok_or(BankError::NotFound)?;
            if let Some(answer) = p.answers.get(idempotency_key) {
                return Ok(report(answer));
            }
            if !matches!(p.status.as_str(), "Authorized" | "SubmissionPending") {
                return Err(refused(if p.status == "Unauthorized" {
                    "PAYMENT_NOT_AUTHORIZED"
                } else {
                    "ALREADY_SUBMITTED"
                }));
            }
            let performs = match plan {
                Plan::LoseBeforePerforming | Plan::Hang { perform: false } => None,
                Plan::Debit | Plan::Hang { perform: true } => Some("Debited"),
                Plan::PerformLoseAnswer => Some("Accepted"),
                Plan::Pending => Some("SubmissionPending"),
                Plan::Reject => Some("Rejected"),
            };
            if let Some(status) = performs {
                p.performed.push(idempotency_key.to_owned());
                p.status = status.into();
                p.answers.insert(idempotency_key.to_owned(), status.into());
            }
            w.plans.pop_front();
            plan
        };
        match plan {
            Plan::Hang { .. } => std::future::pending().await,
            Plan::PerformLoseAnswer | Plan::LoseBeforePerforming => Err(BankError::Unexpected {
                status: None,
                detail: "the connection dropped before an answer".into(),
            }),
            _ => {
                let w = self.world();
                Ok(report(&w.payments[payment.id.as_str()].status))
            }
        }
    }

    fn needs_submission(&self, report: &StatusReport) -> bool {
        matches!(
            report.bank_status.as_str(),
            "Authorized" | "SubmissionPending"
        )
    }
}

// ---------------------------------------------------------------------------------------
// The app with the fake
// ---------------------------------------------------------------------------------------

struct Flow {
    base: String,
    admin: String,
    pool: Db,
    bank: FakeOp,
    client: reqwest::Client,
    key: String,
    ctx: WorkerContext,
    _stop: tokio::sync::oneshot::Sender<()>,
}

const BANK: &str = "fakeop";

fn entry(bank: &FakeOp) -> BankEntry {
    BankEntry {
        id: BANK.into(),
        name: "OP (fake)".into(),
        countries: vec![Country::Fi],
        client: Arc::new(bank.clone()),
    }
}

async fn spawn(overrides: &[(&str, &str)]) -> Flow {
    let url = fresh_database().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut all = vec![
        ("PISGATE__SERVER__PUBLIC_URL", base.as_str()),
        ("PISGATE__CALLBACK__REDIRECT_TIMEOUT", "2s"),
        ("PISGATE__POLLER__SIGNING_INTERVAL", "100ms"),
    ];
    all.extend_from_slice(overrides);
    let settings = settings(&url, &all);
    let bank = FakeOp::default();
    let app = Application::build_on_with_banks(settings.clone(), listener, vec![entry(&bank)])
        .await
        .unwrap();
    let pool = app.pool().clone();
    let admin = format!("http://{}", app.admin_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let (_, key) =
        pisgate::ledger::merchants::create(&pool, "Kauppa Oy", &["https://shop.example".into()])
            .await
            .unwrap();
    let ctx = WorkerContext::new(
        pool.clone(),
        Arc::new(settings.clone()),
        Arc::new(pisgate::app::banks(&settings).unwrap().with(entry(&bank))),
        Arc::new(pisgate::app::token_cipher(&settings).unwrap()),
    );
    Flow {
        base,
        admin,
        pool,
        bank,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        key: key.expose_secret().to_owned(),
        ctx,
        _stop: tx,
    }
}

impl Flow {
    /// A payment at the fake bank: (pisgate's payment, the bank's id).
    async fn pay(&self) -> (Value, String) {
        let mut b = payment_body("FI");
        b["bank"] = json!(BANK);
        b["return_url"] = json!("https://shop.example/checkout/done?order=1");
        let r = self
            .client
            .post(format!("{}/v1/payments", self.base))
            .bearer_auth(&self.key)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&b)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let p: Value = r.json().await.unwrap();
        let bank_id = p["bank_payment_id"]
            .as_str()
            .expect("initiated at the fake")
            .to_owned();
        (p, bank_id)
    }

    /// The shopper's browser back from the bank, with the fragment moved into the query.
    async fn come_back(&self, query: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .get(oidc_url(&self.base, query))
            .send()
            .await
            .unwrap()
    }

    /// Approves at the bank and comes back with code, ID token and state.
    async fn approve_and_return(&self, bank_id: &str) -> reqwest::Response {
        let (code, state) = self.bank.approve(bank_id);
        self.come_back(&[
            ("code", &code),
            ("id_token", "front-id-token"),
            ("state", &state),
        ])
        .await
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

    async fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.payment(id).await["status"].clone();
            if now == status {
                return;
            }
            assert!(Instant::now() < deadline, "still {now}, never {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn events(&self, id: &str) -> Vec<(String, Value)> {
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
            .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["detail"].clone()))
            .collect()
    }

    async fn kinds(&self, id: &str, kind: &str) -> usize {
        self.events(id)
            .await
            .iter()
            .filter(|(k, _)| k == kind)
            .count()
    }

    /// Waits up to 5 s for the payment's ledger to record an event of `kind`.
    async fn wait_kind(&self, id: &str, kind: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.kinds(id, kind).await == 0 {
            assert!(Instant::now() < deadline, "no {kind} event was recorded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs one poll of every payment (all made due now), as the poller would.
    async fn poll(&self) -> Vec<&'static str> {
        sqlx::query("UPDATE payment_polls SET next_poll_at = now(), poll_owner = NULL")
            .execute(&self.pool)
            .await
            .unwrap();
        let claimed = poller::claim(&self.pool, &self.ctx.owner, Duration::from_secs(30), 10)
            .await
            .unwrap();
        let pacer = Pacer::new(100);
        let mut outcomes = Vec::new();
        for c in &claimed {
            outcomes.push(poller::poll(&self.ctx, &pacer, c).await);
        }
        outcomes
    }

    async fn verify_ledger(&self) {
        let report = pisgate::ledger::verify::verify_all(&self.pool, &ledger_keys())
            .await
            .unwrap();
        assert!(report.is_ok(), "{report:?}");
    }
}

/// The return URL with the answer in the query (what the fragment page makes of it).
fn oidc_url(base: &str, query: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&format!("{base}/v1/callbacks/oidc")).unwrap();
    url.query_pairs_mut().extend_pairs(query);
    url.into()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_fragment_return_page_runs_only_its_own_script_and_is_never_cached() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let f = spawn(&[]).await;
    let r = f
        .client
        .get(format!("{}/v1/callbacks/oidc", f.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let csp = h["content-security-policy"].to_str().unwrap().to_owned();
    let html = r.text().await.unwrap();
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    let script = html
        .split("<script>")
        .nth(1)
        .and_then(|s| s.split("</script>").next())
        .unwrap();
    assert!(script.contains("location.replace"), "{script}");
    assert!(script.contains("location.hash"), "{script}");
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
    assert!(
        csp.contains(&format!("script-src 'sha256-{hash}';")),
        "{csp}"
    );
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(html.contains("<noscript>"), "{html}");
    // With the answer in the query it is the return itself, not the page.
    let (p, bank_id) = f.pay().await;
    let r = f.approve_and_return(&bank_id).await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("https://shop.example/checkout/done"));
    f.wait_status(p["id"].as_str().unwrap(), "paid").await;
}

#[tokio::test]
async fn a_signed_return_exchanges_with_the_state_and_id_token_keeps_the_token_per_payment_and_submits_once()
 {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    let oidc = format!("{}/v1/callbacks/oidc", f.base);
    assert_eq!(
        f.bank.world().payments[&bank_id].redirect_uri,
        oidc,
        "a fragment bank is sent back to the fragment page"
    );
    let state = f.bank.world().payments[&bank_id].state.clone();
    let r = f.approve_and_return(&bank_id).await;
    assert_eq!(r.status(), 303);
    f.wait_status(id, "paid").await;

    let exchanges = f.bank.world().exchanges.clone();
    assert_eq!(exchanges.len(), 1);
    let (ex_id, code, redirect_uri, ex_state, id_token) = &exchanges[0];
    assert_eq!(ex_id, &bank_id);
    assert_eq!(code, &format!("code-{bank_id}"));
    assert_eq!(redirect_uri, &oidc);
    assert_eq!(
        ex_state, &state,
        "the state reaches the adapter (its nonce)"
    );
    assert_eq!(id_token.as_deref(), Some("front-id-token"));
    assert_eq!(f.bank.count("exchange_code"), 0);

    // The token is the payment's own, never a shopper's, though the bank named one.
    let key = format!("payment:{id}");
    let row: (Option<String>,) = sqlx::query_as("SELECT psu_key FROM payments WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(row.0.as_deref(), Some(key.as_str()));
    let keys: Vec<String> = sqlx::query_scalar("SELECT psu_key FROM psu_tokens")
        .fetch_all(&f.pool)
        .await
        .unwrap();
    assert_eq!(keys, vec![key]);

    assert_eq!(f.bank.performed(&bank_id).len(), 1);
    assert_eq!(f.bank.count("submit"), 1);
    let events = f.events(id).await;
    let started: Vec<&Value> = events
        .iter()
        .filter(|(k, _)| k == "submission_started")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0]["idempotency_key"].as_str(),
        Some(f.bank.submit_keys()[0].as_str()),
        "the key sent is the key persisted"
    );
    assert_eq!(f.kinds(id, "submission_answered").await, 1);
    // A poll afterwards submits nothing more.
    f.poll().await;
    assert_eq!(f.bank.count("submit"), 1);
    let metrics = reqwest::get(format!("{}/metrics", f.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pisgate_bank_submissions_total")
                && l.contains("bank=\"fakeop\"")
                && l.contains("outcome=\"answered\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    f.verify_ledger().await;
}

#[tokio::test]
async fn concurrent_returns_and_polls_submit_a_payment_once() {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap().to_owned();
    f.bank.world().submit_delay = Duration::from_millis(400);
    let (code, state) = f.bank.approve(&bank_id);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let client = f.client.clone();
        let url = oidc_url(
            &f.base,
            &[
                ("code", &code),
                ("id_token", "front-id-token"),
                ("state", &state),
            ],
        );
        tasks.push(tokio::spawn(async move {
            client.get(url).send().await.unwrap().status()
        }));
    }
    // The poller at the same time, as soon as the token is stored, and again while the
    // first submission is in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM psu_tokens")
        .fetch_one(&f.pool)
        .await
        .unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "no token stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::join!(f.poll(), f.poll());
    // And while the callback's submission is on the wire (the bank has not acted yet).
    while f.bank.count("submit") == 0 {
        assert!(Instant::now() < deadline, "never submitted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::join!(f.poll(), f.poll());
    for t in tasks {
        assert_eq!(t.await.unwrap(), 303);
    }
    f.wait_status(&id, "paid").await;
    f.poll().await;
    assert_eq!(f.bank.performed(&bank_id).len(), 1);
    assert_eq!(f.bank.count("submit"), 1, "{:?}", f.bank.submit_keys());
    assert_eq!(f.bank.count("exchange_code_for"), 1);
    assert_eq!(f.kinds(&id, "submission_started").await, 1);
    f.verify_ledger().await;
}

#[tokio::test]
async fn a_submission_whose_answer_was_lost_is_not_submitted_again_once_the_bank_shows_it_done() {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    f.bank.plan(&[Plan::PerformLoseAnswer]);
    f.approve_and_return(&bank_id).await;
    f.wait_kind(id, "submission_outcome_unknown").await;
    assert_ne!(
        f.payment(id).await["status"],
        "paid",
        "nothing said paid yet"
    );
    // The poller's own read lags (still `Authorized`): the submit step reads the bank again
    // before it sends anything: the bank has it (accepted, not yet executed).
    f.bank.world().stale_reads = 1;
    f.poll().await;
    assert_eq!(
        f.bank.count("submit"),
        1,
        "read the status, never sent again"
    );
    assert_eq!(f.payment(id).await["status"], "authorized");
    // The bank executes it later.
    f.bank.world().payments.get_mut(&bank_id).unwrap().status = "Debited".into();
    f.poll().await;
    f.wait_status(id, "paid").await;
    f.poll().await;
    assert_eq!(f.bank.performed(&bank_id).len(), 1);
    assert_eq!(
        f.bank.count("submit"),
        1,
        "read the status, never sent again"
    );
    f.verify_ledger().await;
}

#[tokio::test]
async fn an_unknown_submit_outcome_is_retried_with_the_same_key_and_performed_once() {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    f.bank.plan(&[Plan::LoseBeforePerforming, Plan::Debit]);
    f.approve_and_return(&bank_id).await;
    f.wait_kind(id, "submission_outcome_unknown").await;
    f.poll().await;
    f.wait_status(id, "paid").await;
    let keys = f.bank.submit_keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1], "the retry reuses the attempt's key");
    assert_eq!(f.bank.performed(&bank_id).len(), 1);
    let events = f.events(id).await;
    let reused: Vec<bool> = events
        .iter()
        .filter(|(k, _)| k == "submission_started")
        .map(|(_, d)| d["reuses_key"].as_bool().unwrap())
        .collect();
    assert_eq!(reused, vec![false, true]);
    f.verify_ledger().await;
}

#[tokio::test]
async fn submission_pending_takes_a_new_key_after_a_backoff_and_ends_paid() {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    f.bank.plan(&[Plan::Pending, Plan::Debit]);
    f.approve_and_return(&bank_id).await;
    f.wait_kind(id, "submission_answered").await;
    assert_eq!(
        f.payment(id).await["status"],
        "authorized",
        "SubmissionPending is never final"
    );
    // Within the backoff nothing is sent again.
    f.poll().await;
    assert_eq!(f.bank.count("submit"), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    f.poll().await;
    f.wait_status(id, "paid").await;
    let keys = f.bank.submit_keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_ne!(keys[0], keys[1], "a new key after SubmissionPending");
    assert_eq!(f.bank.performed(&bank_id), keys);
    f.verify_ledger().await;
}

#[tokio::test]
async fn a_payment_rejected_at_submission_is_rejected() {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    f.bank.plan(&[Plan::Reject]);
    f.approve_and_return(&bank_id).await;
    f.wait_status(id, "rejected").await;
    f.poll().await;
    assert_eq!(f.bank.count("submit"), 1);
    assert_eq!(f.payment(id).await["status"], "rejected");
}

#[tokio::test]
async fn a_payment_the_shopper_refused_at_the_bank_is_authorization_failed() {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    let state = f.bank.reject(&bank_id);
    let r = f
        .come_back(&[
            ("error", "access_denied"),
            ("error_description", "refused"),
            ("state", &state),
        ])
        .await;
    assert_eq!(r.status(), 303);
    f.wait_status(id, "authorization_failed").await;
    assert_eq!(f.bank.count("submit"), 0);

    // The poller's truth is the same.
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    f.bank.reject(&bank_id);
    f.poll().await;
    f.wait_status(id, "authorization_failed").await;
    f.verify_ledger().await;
}

#[tokio::test]
async fn a_crash_between_the_exchange_and_the_submit_is_submitted_once_by_the_poller() {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    // The callback stores the token, then its submit step never gets past the bank's
    // status (as if the process died right after the exchange).
    f.bank.world().failing_reads = 1;
    f.approve_and_return(&bank_id).await;
    f.wait_kind(id, "token_exchanged").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.bank.count("submit"), 0);
    f.poll().await;
    f.wait_status(id, "paid").await;
    f.poll().await;
    assert_eq!(f.bank.count("submit"), 1);
    assert_eq!(f.bank.performed(&bank_id).len(), 1);
    f.verify_ledger().await;
}

#[tokio::test]
async fn a_crash_during_the_submission_leaves_it_to_the_next_holder_with_the_same_key() {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    // The holder sends the submission and never hears back (it died); the bank never
    // booked it.
    f.bank.plan(&[Plan::Hang { perform: false }, Plan::Debit]);
    f.approve_and_return(&bank_id).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.bank.count("submit") == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While its claim lives, nobody else submits.
    f.poll().await;
    assert_eq!(f.bank.count("submit"), 1);
    // Its lease runs out.
    sqlx::query("UPDATE payments SET submission_claimed_until = now() - interval '1 second'")
        .execute(&f.pool)
        .await
        .unwrap();
    f.poll().await;
    f.wait_status(id, "paid").await;
    let keys = f.bank.submit_keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1]);
    assert_eq!(f.bank.performed(&bank_id).len(), 1);
    let unknown = f.events(id).await;
    assert!(
        unknown
            .iter()
            .any(|(k, d)| k == "submission_outcome_unknown" && d["reason"] == "holder_lost"),
        "{unknown:?}"
    );
    f.verify_ledger().await;
}

#[tokio::test]
async fn the_merchants_cancel_while_the_shopper_is_at_the_bank_withholds_the_submission() {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    let hop = continue_to_bank(&f.client, p["authorization_url"].as_str().unwrap()).await;
    assert_eq!(hop.status(), 303);
    let r = f
        .client
        .post(format!("{}/v1/payments/{id}/cancel", f.base))
        .bearer_auth(&f.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The shopper signs anyway and comes back.
    f.approve_and_return(&bank_id).await;
    f.wait_status(id, "cancelled").await;
    f.poll().await;
    assert_eq!(f.bank.count("submit"), 0, "never submitted");
    assert_eq!(
        f.bank.world().revoked.len(),
        1,
        "its refresh token is revoked"
    );
    assert_eq!(f.kinds(id, "submission_withheld").await, 1);
    let withheld = withheld_detail(&f, id).await;
    assert_eq!(withheld["refresh_token_revoked"], true, "{withheld}");
    assert_eq!(
        withheld["refresh_token_revocation"], "revoked",
        "{withheld}"
    );
    let payment = f.payment(id).await;
    assert_eq!(payment["status"], "cancelled");
    let dead: Vec<String> = sqlx::query_scalar("SELECT status FROM psu_tokens")
        .fetch_all(&f.pool)
        .await
        .unwrap();
    assert_eq!(dead, vec!["dead".to_owned()]);
    f.verify_ledger().await;
}

async fn withheld_detail(f: &Flow, id: &str) -> Value {
    f.events(id)
        .await
        .into_iter()
        .find(|(k, _)| k == "submission_withheld")
        .map(|(_, d)| d)
        .expect("a submission_withheld event")
}

/// At a bank that offers no token revocation (OP's documented API: `revoke` sends
/// nothing), the withheld submission's ledger event says so: `refresh_token_revoked` false,
/// `refresh_token_revocation` `not_offered`; the token is still dead here and nothing is
/// submitted.
#[tokio::test]
async fn a_withheld_submission_at_a_bank_without_token_revocation_records_nothing_was_revoked() {
    let f = spawn(&[]).await;
    f.bank.world().no_revocation = true;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    let hop = continue_to_bank(&f.client, p["authorization_url"].as_str().unwrap()).await;
    assert_eq!(hop.status(), 303);
    let r = f
        .client
        .post(format!("{}/v1/payments/{id}/cancel", f.base))
        .bearer_auth(&f.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    f.approve_and_return(&bank_id).await;
    f.wait_status(id, "cancelled").await;
    assert_eq!(f.bank.count("submit"), 0, "never submitted");
    assert!(f.bank.world().revoked.is_empty());
    let withheld = withheld_detail(&f, id).await;
    assert_eq!(withheld["refresh_token_revoked"], false, "{withheld}");
    assert_eq!(
        withheld["refresh_token_revocation"], "not_offered",
        "{withheld}"
    );
    let dead: Vec<String> = sqlx::query_scalar("SELECT status FROM psu_tokens")
        .fetch_all(&f.pool)
        .await
        .unwrap();
    assert_eq!(dead, vec!["dead".to_owned()]);
    f.verify_ledger().await;
}

/// The bank's answer to the creation echoes another amount: the payment is the bank's (its
/// id recorded), but nothing is ever submitted: the submission is withheld at once
/// (`bank_terms_mismatch`), the payment is `cancelled` with that failure and no link for a
/// shopper, and a shopper who signs at the bank anyway gets nothing submitted.
#[tokio::test]
async fn a_creation_answer_with_another_amount_is_withheld_and_never_submitted() {
    let f = spawn(&[]).await;
    f.bank.world().echo_mismatch = vec!["amount"];
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    assert_eq!(p["status"], "cancelled", "{p}");
    assert_eq!(p["failure"]["code"], "bank_terms_mismatch", "{p}");
    let events = f.events(id).await;
    let mismatch = events
        .iter()
        .find(|(k, _)| k == "bank_terms_mismatch")
        .expect("the ledger says why");
    assert_eq!(mismatch.1["fields"], json!(["amount"]));
    assert_eq!(
        withheld_detail(&f, id).await["reason"],
        "bank_terms_mismatch"
    );
    assert!(
        p["authorization_url"].is_null(),
        "no link for a shopper: {p}"
    );
    // A shopper holding the hop's link (a deferred payment's) is told why.
    let hop: String = sqlx::query_scalar("SELECT authorize_url FROM payments WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&f.pool)
        .await
        .unwrap();
    let page = f.client.get(&hop).send().await.unwrap();
    assert_eq!(page.status(), 410);
    assert!(page.text().await.unwrap().contains("Payment stopped"));
    // Signed at the bank anyway (the link was the bank's): nothing is submitted.
    f.approve_and_return(&bank_id).await;
    f.poll().await;
    assert_eq!(f.bank.count("submit"), 0, "never submitted");
    assert!(f.bank.performed(&bank_id).is_empty());
    assert_eq!(f.payment(id).await["status"], "cancelled");
    f.verify_ledger().await;
}

#[tokio::test]
async fn the_merchants_cancel_after_the_return_but_before_the_submit_withholds_it() {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    f.bank.world().failing_reads = 1;
    f.approve_and_return(&bank_id).await;
    f.wait_kind(id, "token_exchanged").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = f
        .client
        .post(format!("{}/v1/payments/{id}/cancel", f.base))
        .bearer_auth(&f.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "cancelled");
    f.poll().await;
    assert_eq!(f.bank.count("submit"), 0);
    assert_eq!(f.bank.world().revoked.len(), 1);
    assert_eq!(f.payment(id).await["status"], "cancelled");
    f.verify_ledger().await;
}

/// Past the late-signing horizon a signed payment with no token ends
/// `authorization_failed` only once no return can bring one: a shopper coming back right
/// then (the code exchange under way, slow at the bank) keeps it. The poll that finds it
/// signed and tokenless mid-exchange leaves it; the exchange finishes, the submission goes
/// once and it is paid.
#[tokio::test]
async fn past_the_horizon_a_return_under_way_keeps_the_payment_and_it_is_submitted() {
    let f = spawn(&[
        ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "2"),
        ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "4"),
    ])
    .await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(4200)).await;
    f.bank.world().exchange_delay = Duration::from_millis(1500);
    let (back, outcomes) = tokio::join!(f.approve_and_return(&bank_id), async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        f.poll().await
    });
    assert_eq!(back.status(), 303);
    assert!(
        !outcomes.contains(&"never_submittable"),
        "ended mid-exchange: {outcomes:?}"
    );
    f.wait_status(id, "paid").await;
    assert_eq!(f.bank.performed(&bank_id).len(), 1);
    assert_eq!(f.kinds(id, "submission_impossible").await, 0);
}

/// Past the horizon, a signed payment whose code exchange failed for good ends
/// `authorization_failed` (`authorization_not_completed`) at the next poll, without a
/// submission; a return after that is refused and submits nothing.
#[tokio::test]
async fn past_the_horizon_a_signed_payment_whose_exchange_failed_ends_authorization_failed() {
    let f = spawn(&[
        ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "2"),
        ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "4"),
    ])
    .await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    let (_, state) = f.bank.approve(&bank_id);
    // A code the bank refuses: the exchange fails for good and spends the state.
    let r = f
        .come_back(&[
            ("code", "not-the-code"),
            ("id_token", "front-id-token"),
            ("state", &state),
        ])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(f.kinds(id, "token_exchange_failed").await, 1);
    // Before the horizon it stays authorized: only the horizon ends it.
    f.poll().await;
    assert_eq!(f.payment(id).await["status"], "authorized");
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let outcomes = f.poll().await;
    assert_eq!(outcomes, vec!["never_submittable"]);
    let ended = f.payment(id).await;
    assert_eq!(ended["status"], "authorization_failed");
    assert_eq!(ended["failure"]["code"], "authorization_not_completed");
    assert_eq!(f.bank.count("submit"), 0);
    assert_eq!(f.kinds(id, "submission_impossible").await, 1);
    // It left the poll schedule.
    let polls: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment_polls WHERE payment_id = $1::uuid")
            .bind(id)
            .fetch_one(&f.pool)
            .await
            .unwrap();
    assert_eq!(polls, 0);
    // The real code, late: refused, nothing submitted.
    f.approve_and_return(&bank_id).await;
    assert_eq!(f.bank.count("submit"), 0);
    assert_eq!(f.payment(id).await["status"], "authorization_failed");
}

/// An insider deletes a payment's submission attempts after one reached the bank (its
/// answer lost, the bank has it): the merchant's cancel must not then withhold it as if
/// nothing was ever sent (end it `cancelled`, revoke the shopper's token) while the bank
/// executes it. The table contradicts the ledger's `submission_started`, so nothing is
/// submitted or withheld, it is counted, and the bank's word still ends it.
#[tokio::test]
async fn deleted_submission_attempts_never_make_a_sent_payment_look_unsent() {
    let f = spawn(&[]).await;
    let (p, bank_id) = f.pay().await;
    let id = p["id"].as_str().unwrap();
    f.bank.plan(&[Plan::PerformLoseAnswer]);
    f.approve_and_return(&bank_id).await;
    f.wait_kind(id, "submission_outcome_unknown").await;
    sqlx::query("DELETE FROM payment_submissions WHERE payment_id = $1::uuid")
        .bind(id)
        .execute(&f.pool)
        .await
        .unwrap();
    // `ledger verify` names it.
    let report = pisgate::ledger::verify::verify_all(&f.pool, &ledger_keys())
        .await
        .unwrap();
    let broken = report
        .first_broken
        .clone()
        .expect("the deleted attempt went unnoticed");
    assert_eq!(broken.payment_id.to_string(), id, "{report:?}");
    assert!(
        broken.to_string().contains("submission attempt"),
        "{broken}"
    );
    let r = f
        .client
        .post(format!("{}/v1/payments/{id}/cancel", f.base))
        .bearer_auth(&f.key)
        .send()
        .await
        .unwrap();
    let answered = r.status();
    let _ = r.text().await;
    assert_eq!(
        f.kinds(id, "submission_withheld").await,
        0,
        "answered {answered}"
    );
    assert!(
        f.bank.world().revoked.is_empty(),
        "the shopper's token is kept"
    );
    assert_ne!(f.payment(id).await["status"], "cancelled");
    f.poll().await;
    assert_eq!(f.bank.count("submit"), 1, "nothing sent again");
    let metrics = reqwest::get(format!("{}/metrics", f.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pisgate_ledger_binding_mismatches_total") && !l.ends_with(" 0")),
        "the contradiction is counted"
    );
    // The bank executes it: the merchant hears paid.
    f.bank.world().payments.get_mut(&bank_id).unwrap().status = "Debited".into();
    f.poll().await;
    f.wait_status(id, "paid").await;
    assert_eq!(f.bank.performed(&bank_id).len(), 1);
}
