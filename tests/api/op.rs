//! OP end to end (issue 26): pisgate's API, the shopper's redirect through pisgate's consent
//! page to OP's authorization page (the simulator checks pisgate's signed request object
//! claim by claim) and back through `/v1/callbacks/oidc` with the answer in the fragment (as
//! the return page's script forwards it), the code exchange with both ID tokens checked, the
//! submit step, the poller and the webhooks, against OP's strict simulator over mutual TLS.
//! One test per scenario of the simulator (77.01–77.05, approve, reject), plus a replayed
//! return and a return carrying another payment's ID token.

use crate::helpers::{TestApp, TestMerchant, continue_to_bank, spawn_app_with};
use crate::webhooks::{Plan, Receiver};
use pisgate::sandbox::op::{OpSandbox, OpSandboxConfig};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

struct Op {
    app: TestApp,
    sim: OpSandbox,
    m: TestMerchant,
    /// The merchant's webhook endpoint (every event; signatures verified on receipt).
    hooks: Receiver,
}

fn bank_env(sim: &OpSandbox) -> Vec<(String, String)> {
    use secrecy::ExposeSecret;
    let v = |k: &str, v: &str| (format!("PISGATE__BANKS__OP__{k}"), v.to_owned());
    vec![
        v("PROTOCOL", "op"),
        v("NAME", "OP"),
        v("COUNTRIES", "FI"),
        v("ENVIRONMENT", "sandbox"),
        v("BASE_URL", &sim.api_url),
        v("AUTHORIZE_URL", &sim.authorize_url()),
        v("ISSUER", sim.issuer()),
        v("JWKS_URL", &sim.jwks_url()),
        v("PAYMENTS_JWKS_URL", &sim.payments_jwks_url()),
        v("CLIENT_ID", sim.client_id()),
        v("CLIENT_SECRET", sim.client_secret().expose_secret()),
        v("API_KEY", sim.api_key().expose_secret()),
        v("TLS_CERTIFICATE", &sim.pki.tpp_cert_pem),
        v("TLS_PRIVATE_KEY", &sim.pki.tpp_key_pem),
        v("TLS_CA", &sim.pki.ca_pem),
        v("PRIVATE_KEY", &sim.pki.tpp_key_pem),
        v("CERTIFICATE", &sim.pki.tpp_cert_pem),
        v("SIGNING_KEY_ID", sim.signing_key_id()),
        v("REQUEST_TIMEOUT_SECS", "5"),
    ]
}

/// pisgate with the bank `op` at a fresh simulator (its redirect URI registered there), the
/// poller and the webhooks on (fast), the merchant's webhook receiver registered.
async fn setup(extra: &[(&str, &str)]) -> Op {
    let sim = pisgate::sandbox::op::spawn(OpSandboxConfig::default())
        .await
        .expect("the OP simulator starts");
    let env = bank_env(&sim);
    let mut overrides: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    overrides.extend_from_slice(&[
        ("PISGATE__POLLER__ENABLED", "true"),
        ("PISGATE__POLLER__SIGNING_INTERVAL", "300ms"),
        ("PISGATE__POLLER__LATE_SIGNING_INTERVAL", "300ms"),
        ("PISGATE__POLLER__AUTHORIZED_INTERVAL", "300ms"),
        ("PISGATE__POLLER__MAX_BACKOFF", "1s"),
        ("PISGATE__WEBHOOKS__ENABLED", "true"),
        ("PISGATE__WEBHOOKS__RETRY_SCHEDULE", "200ms,200ms"),
        ("PISGATE__WEBHOOKS__IDLE_WAIT", "200ms"),
    ]);
    overrides.extend_from_slice(extra);
    let app = spawn_app_with(&overrides).await;
    sim.sim
        .register_redirect_uri(format!("{}/v1/callbacks/oidc", app.address));
    let m = app.create_merchant("Kauppa Oy").await;
    let hooks = Receiver::start(Plan::Ok).await;
    hooks.register(&app.client, &app.address, &m.api_key).await;
    Op { app, sim, m, hooks }
}

fn body(amount: &str) -> Value {
    json!({
        "amount": amount,
        "currency": "EUR",
        "country": "FI",
        "bank": "op",
        "creditor": {"account": {"type": "IBAN", "value": "FI2112345600000785"}, "name": "Kauppa Oy",
                     "message": "Tilaus 1234"},
        "return_url": "https://shop.example/checkout/done?order=1234",
        "language": "fi",
    })
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// The value of a hidden input of OP's authorization page.
fn hidden(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no {name} on the page: {html}"));
    let rest = &html[at..];
    let v = rest.find("value=\"").unwrap() + "value=\"".len();
    rest[v..v + rest[v..].find('"').unwrap()].to_owned()
}

/// The fragment's parameters.
fn fragment(location: &str) -> Vec<(String, String)> {
    let (_, f) = location
        .split_once('#')
        .expect("the answer is in the fragment");
    url::form_urlencoded::parse(f.as_bytes())
        .into_owned()
        .collect()
}

impl Op {
    async fn pay(&self, amount: &str) -> Value {
        let p = self
            .app
            .create_payment(&self.m.api_key, &body(amount))
            .await;
        assert_eq!(p["bank"], "op", "{p}");
        assert!(p["bank_payment_id"].is_string(), "created at OP: {p}");
        p
    }

    /// Through the hop and the consent page: OP's authorization URL.
    async fn to_op(&self, p: &Value) -> String {
        let r = continue_to_bank(&self.app.client, p["authorization_url"].as_str().unwrap()).await;
        assert_eq!(r.status(), 303, "{:?}", r.text().await);
        let to = location(&r);
        assert!(
            to.starts_with(&format!("{}?request=", self.sim.authorize_url())),
            "{to}"
        );
        to
    }

    /// Opens OP's page and presses Approve or Reject: where OP sends the browser (pisgate's
    /// return with the answer in the fragment).
    async fn at_op(&self, authorize: &str, approve: bool) -> String {
        let web = &self.app.client;
        let r = web.get(authorize).send().await.unwrap();
        assert_eq!(r.status(), 200, "OP's page opens");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("Approve") && html.contains("Reject"),
            "{html}"
        );
        let form = [
            ("session", hidden(&html, "session")),
            ("authorization_id", hidden(&html, "authorization_id")),
            (
                "decision",
                if approve { "approve" } else { "reject" }.to_owned(),
            ),
        ];
        let r = web
            .post(format!("{}/oauth/authorize/decision", self.sim.app_url))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let back = location(&r);
        assert!(
            back.starts_with(&format!("{}/v1/callbacks/oidc#", self.app.address)),
            "{back}"
        );
        back
    }

    /// What pisgate's return page does with JavaScript: the fragment into the query.
    async fn come_back(&self, back: &str) -> reqwest::Response {
        let page = self
            .app
            .client
            .get(back.split('#').next().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "the fragment page");
        let html = page.text().await.unwrap();
        assert!(html.contains("location.replace"), "{html}");
        self.app
            .client
            .get(back.replacen('#', "?", 1))
            .send()
            .await
            .unwrap()
    }

    /// The shopper's whole way: to OP, the decision, back to pisgate; the redirect to the
    /// merchant.
    async fn shopper(&self, p: &Value, approve: bool) -> String {
        let authorize = self.to_op(p).await;
        let back = self.at_op(&authorize, approve).await;
        let r = self.come_back(&back).await;
        assert_eq!(r.status(), 303);
        let to = location(&r);
        assert_eq!(
            to,
            format!(
                "https://shop.example/checkout/done?order=1234&payment_id={}",
                p["id"].as_str().unwrap()
            )
        );
        to
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

    /// OP's record of the payment (status, the submissions it performed and their keys).
    fn at_bank(&self, p: &Value) -> Value {
        self.sim
            .sim
            .payment(p["bank_payment_id"].as_str().unwrap())
            .expect("OP knows the payment")
    }

    async fn webhook(&self, id: &str, event: &'static str) {
        self.hooks.accepted_for(id, event).await;
    }

    /// Nothing pisgate sent was refused by the simulator.
    fn assert_nothing_refused(&self) {
        let refused = self.sim.sim.refusals();
        assert!(refused.is_empty(), "refused: {refused:#?}");
    }

    async fn assert_ledger_verifies(&self) {
        let report =
            pisgate::ledger::events::verify_all(&self.app.pool, &crate::helpers::ledger_keys())
                .await
                .unwrap();
        assert_eq!(report.broken_payments, 0, "{report:?}");
        assert!(report.payments_checked > 0);
    }
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

/// Approve at OP: the shopper lands on the merchant's return URL, pisgate submitted the
/// payment once with the token of this payment's authorization, OP debited it: `paid`, the
/// webhooks arrive, the ledger holds every step.
#[tokio::test]
async fn op_approved_at_op_is_submitted_once_and_ends_paid_with_webhooks() {
    let s = setup(&[]).await;
    let p = s.pay("15.00").await;
    let id = p["id"].as_str().unwrap();
    assert_eq!(p["bank_status"], "Unauthorized", "{p}");
    s.shopper(&p, true).await;
    let paid = s.wait_for_status(id, "paid").await;
    assert_eq!(paid["bank_status"], "Debited", "{paid}");
    let op = s.at_bank(&p);
    assert_eq!(op["status"], "Debited");
    assert_eq!(op["submissions"], 1, "{op}");
    let kinds = s.kinds(id).await;
    assert_eq!(count(&kinds, "submission_started"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "submission_answered"), 1, "{kinds:?}");
    assert!(kinds.contains(&"token_exchanged".to_owned()), "{kinds:?}");
    s.webhook(id, "payment.paid").await;
    s.assert_nothing_refused();
    s.assert_ledger_verifies().await;
}

/// Reject at OP: OP says `Rejected` and nothing was ever submitted: the shopper refused,
/// `authorization_failed`; the `error` on the return is only a hint, OP's status decides.
#[tokio::test]
async fn op_rejected_by_the_shopper_ends_authorization_failed_and_is_never_submitted() {
    let s = setup(&[]).await;
    let p = s.pay("16.00").await;
    let id = p["id"].as_str().unwrap();
    let authorize = s.to_op(&p).await;
    let back = s.at_op(&authorize, false).await;
    assert!(
        fragment(&back)
            .iter()
            .any(|(k, v)| k == "error" && v == "access_denied"),
        "{back}"
    );
    let r = s.come_back(&back).await;
    assert_eq!(r.status(), 303);
    let failed = s.wait_for_status(id, "authorization_failed").await;
    assert_eq!(failed["bank_status"], "Rejected", "{failed}");
    assert_eq!(s.at_bank(&p)["submissions"], 0);
    assert_eq!(count(&s.kinds(id).await, "submission_started"), 0);
    s.webhook(id, "payment.authorization_failed").await;
    s.assert_nothing_refused();
    s.assert_ledger_verifies().await;
}

/// `77.01`: the first submission answers `SubmissionPending` (never final); pisgate submits
/// again later with a new key; OP debits it: `paid`, two submissions with two keys.
#[tokio::test]
async fn op_submission_pending_is_submitted_again_with_a_new_key_and_ends_paid() {
    let s = setup(&[]).await;
    let p = s.pay("77.01").await;
    let id = p["id"].as_str().unwrap();
    s.shopper(&p, true).await;
    let paid = s.wait_for_status(id, "paid").await;
    assert_eq!(paid["bank_status"], "Debited");
    let op = s.at_bank(&p);
    assert_eq!(op["submissions"], 2, "{op}");
    let keys = op["submission_keys"].as_array().unwrap();
    assert_ne!(keys[0], keys[1], "a new key after SubmissionPending");
    let kinds = s.kinds(id).await;
    assert_eq!(count(&kinds, "submission_started"), 2, "{kinds:?}");
    s.webhook(id, "payment.paid").await;
    s.assert_nothing_refused();
    s.assert_ledger_verifies().await;
}

/// `77.02`: OP rejects the payment at submission: `rejected` (not the shopper's refusal).
#[tokio::test]
async fn op_rejected_at_submission_ends_rejected() {
    let s = setup(&[]).await;
    let p = s.pay("77.02").await;
    let id = p["id"].as_str().unwrap();
    s.shopper(&p, true).await;
    let rejected = s.wait_for_status(id, "rejected").await;
    assert_eq!(rejected["bank_status"], "Rejected");
    assert_eq!(s.at_bank(&p)["submissions"], 1);
    s.webhook(id, "payment.rejected").await;
    s.assert_nothing_refused();
    s.assert_ledger_verifies().await;
}

/// `77.03`: submitted, OP says `Accepted` (money not moved: `authorized`), later `Debited`:
/// `paid`, one submission.
#[tokio::test]
async fn op_accepted_stays_authorized_until_op_debits_it() {
    let s = setup(&[]).await;
    let p = s.pay("77.03").await;
    let id = p["id"].as_str().unwrap();
    s.shopper(&p, true).await;
    let authorized = s.wait_for_status(id, "authorized").await;
    assert!(
        ["Accepted", "Authorized"].contains(&authorized["bank_status"].as_str().unwrap()),
        "{authorized}"
    );
    let paid = s.wait_for_status(id, "paid").await;
    assert_eq!(paid["bank_status"], "Debited");
    assert_eq!(s.at_bank(&p)["submissions"], 1);
    s.webhook(id, "payment.authorized").await;
    s.webhook(id, "payment.paid").await;
    s.assert_nothing_refused();
}

/// `77.04`: OP performs the submission but the answer is lost: an unknown outcome; pisgate
/// asks again only with the same key (OP answers the recorded result): one submission,
/// `paid`.
#[tokio::test]
async fn op_a_lost_submit_answer_is_retried_with_the_same_key_and_submitted_once() {
    let s = setup(&[]).await;
    let p = s.pay("77.04").await;
    let id = p["id"].as_str().unwrap();
    s.shopper(&p, true).await;
    let paid = s.wait_for_status(id, "paid").await;
    assert_eq!(paid["bank_status"], "Debited");
    let op = s.at_bank(&p);
    assert_eq!(op["submissions"], 1, "{op}");
    assert_eq!(op["submission_keys"].as_array().unwrap().len(), 1);
    let kinds = s.kinds(id).await;
    assert!(
        kinds.contains(&"submission_outcome_unknown".to_owned()),
        "{kinds:?}"
    );
    s.webhook(id, "payment.paid").await;
    s.assert_ledger_verifies().await;
}

/// `77.05`: the shopper opens OP's page (`Authorizing`) and walks away: at pisgate's
/// late-signing horizon the poller revokes the payment at OP (`Revoked`): `expired`, never
/// submitted. A payment whose link nobody ever took expires without a call: its signed
/// request object was never handed out (and expires), so nobody can authorize it at OP.
#[tokio::test]
async fn op_abandoned_at_ops_page_is_revoked_at_op_at_the_horizon_and_expires() {
    let s = setup(&[
        ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "3"),
        ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "6"),
    ])
    .await;
    let p = s.pay("77.05").await;
    let id = p["id"].as_str().unwrap();
    let authorize = s.to_op(&p).await;
    let page = s.app.client.get(&authorize).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(s.at_bank(&p)["status"], "Authorizing");
    let never = s.pay("77.05").await;
    let expired = s.wait_for_status(id, "expired").await;
    assert_eq!(expired["bank_status"], "Revoked", "{expired}");
    let op = s.at_bank(&p);
    assert_eq!(op["status"], "Revoked");
    assert_eq!(op["submissions"], 0);
    s.webhook(id, "payment.expired").await;
    let untouched = s
        .wait_for_status(never["id"].as_str().unwrap(), "expired")
        .await;
    assert_eq!(untouched["failure"]["code"], "not_signed", "{untouched}");
    assert_eq!(s.at_bank(&never)["status"], "Unauthorized");
    s.assert_nothing_refused();
    s.assert_ledger_verifies().await;
}

/// A browser that repeats the return (refresh, Back, a proxy's retry): one code exchange,
/// one submission, the same redirect each time.
#[tokio::test]
async fn op_a_replayed_return_exchanges_once_and_submits_once() {
    let s = setup(&[]).await;
    let p = s.pay("18.00").await;
    let id = p["id"].as_str().unwrap();
    let authorize = s.to_op(&p).await;
    let back = s.at_op(&authorize, true).await;
    let (a, b, c) = tokio::join!(s.come_back(&back), s.come_back(&back), s.come_back(&back));
    for r in [a, b, c] {
        assert_eq!(r.status(), 303);
    }
    s.wait_for_status(id, "paid").await;
    let kinds = s.kinds(id).await;
    assert_eq!(count(&kinds, "token_exchanged"), 1, "{kinds:?}");
    assert_eq!(s.at_bank(&p)["submissions"], 1);
    s.assert_nothing_refused();
}

/// Sends the shopper of `p1` back with their own return, except that its ID token is
/// `p2`'s (a real one, signed by OP, but for another authorization, nonce and code). Both
/// payments are authorized at OP first.
async fn return_with_another_payments_id_token(s: &Op, p1: &Value, p2: &Value) {
    let back1 = s.at_op(&s.to_op(p1).await, true).await;
    let back2 = s.at_op(&s.to_op(p2).await, true).await;
    let other_token = fragment(&back2)
        .into_iter()
        .find(|(k, _)| k == "id_token")
        .unwrap()
        .1;
    let forged: Vec<(String, String)> = fragment(&back1)
        .into_iter()
        .map(|(k, v)| {
            if k == "id_token" {
                (k, other_token.clone())
            } else {
                (k, v)
            }
        })
        .collect();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(forged)
        .finish();
    let r = s
        .app
        .client
        .get(format!("{}/v1/callbacks/oidc?{query}", s.app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the shopper still goes back to the shop");
}

/// A return whose ID token is another payment's: pisgate refuses it before spending the
/// code, stores no token and submits nothing.
#[tokio::test]
async fn op_a_return_with_another_payments_id_token_is_refused_and_nothing_is_submitted() {
    let s = setup(&[]).await;
    let (p1, p2) = (s.pay("19.00").await, s.pay("19.01").await);
    let id1 = p1["id"].as_str().unwrap();
    return_with_another_payments_id_token(&s, &p1, &p2).await;
    let kinds = s.kinds(id1).await;
    assert!(!kinds.contains(&"token_exchanged".to_owned()), "{kinds:?}");
    assert!(
        kinds.contains(&"token_exchange_failed".to_owned()),
        "{kinds:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.at_bank(&p1)["submissions"], 0, "nothing submitted");
    assert_eq!(count(&s.kinds(id1).await, "submission_started"), 0);
}

/// A payment the shopper authorized at OP whose code exchange failed (or whose shopper never
/// came back with the code): pisgate holds no token to submit it with, so OP never debits
/// it. Past the late-signing horizon it ends `authorization_failed`
/// (`authorization_not_completed`) with its webhook; it sat `authorized` for ever before.
#[tokio::test]
async fn op_an_authorized_payment_whose_code_exchange_failed_ends_at_the_horizon() {
    let s = setup(&[
        ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "3"),
        ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "6"),
    ])
    .await;
    let (p1, p2) = (s.pay("19.00").await, s.pay("19.01").await);
    let id1 = p1["id"].as_str().unwrap();
    return_with_another_payments_id_token(&s, &p1, &p2).await;
    let ended = s.wait_for_status(id1, "authorization_failed").await;
    assert_eq!(
        ended["failure"]["code"], "authorization_not_completed",
        "{ended}"
    );
    // OP still holds it signed and unsubmitted: it never debits it.
    let op = s.at_bank(&p1);
    assert_eq!(op["status"], "Authorized", "{op}");
    assert_eq!(op["submissions"], 0);
    let kinds = s.kinds(id1).await;
    assert_eq!(count(&kinds, "submission_impossible"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "submission_started"), 0, "{kinds:?}");
    s.webhook(id1, "payment.authorization_failed").await;
    // The other payment was authorized at OP too, but its shopper never came back with the
    // code (only its ID token was taken): it can never be submitted either.
    let never = s
        .wait_for_status(p2["id"].as_str().unwrap(), "authorization_failed")
        .await;
    assert_eq!(never["failure"]["code"], "authorization_not_completed");
    assert_eq!(s.at_bank(&p2)["submissions"], 0);
    // And it left the poll schedule: no later read calls it a disagreement.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = s.payment(id1).await;
    assert_eq!(still["status"], "authorization_failed");
    let disagreements: i64 = sqlx::query_scalar("SELECT count(*) FROM bank_disagreements")
        .fetch_one(&s.app.pool)
        .await
        .unwrap();
    assert_eq!(disagreements, 0);
    s.assert_ledger_verifies().await;
}

/// What OP's payment cannot carry (a date, a series, express) is a 422 at creation naming
/// the field, with nothing written and nothing sent to OP: before, OP made one immediate
/// payment while the shopper and the merchant were shown another date.
#[tokio::test]
async fn op_refuses_at_creation_what_its_payment_cannot_carry_and_writes_nothing() {
    let t = setup(&[]).await;
    let mut dated = body("12.00");
    dated["execution_date"] =
        json!((chrono::Utc::now().date_naive() + chrono::Duration::days(7)).to_string());
    let mut express = body("12.00");
    express["urgency"] = json!("express");
    crate::helpers::assert_refused_at_creation(
        &t.app,
        &t.m.api_key,
        vec![(dated, "execution_date"), (express, "urgency")],
    )
    .await;
    t.pay("12.00").await;
}

impl Op {
    /// The detail of the payment's first `kind` event.
    async fn event(&self, id: &str, kind: &str) -> Option<Value> {
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
            .find(|e| e["kind"] == kind)
            .map(|e| e["detail"].clone())
    }
}

/// The merchant cancels while the shopper is at OP; the shopper approves anyway and comes
/// back: the submission is withheld (`cancelled`, never submitted). OP documents no token
/// revocation, so pisgate sends none and its ledger says so: `refresh_token_revoked` false,
/// `refresh_token_revocation` `not_offered` (the refresh token is dead at pisgate only).
#[tokio::test]
async fn op_a_withheld_submission_records_that_no_token_was_revoked_at_op() {
    let s = setup(&[]).await;
    let p = s.pay("18.00").await;
    let id = p["id"].as_str().unwrap();
    let authorize = s.to_op(&p).await;
    let r = s
        .app
        .client
        .post(s.app.url(&format!("/v1/payments/{id}/cancel")))
        .bearer_auth(&s.m.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let back = s.at_op(&authorize, true).await;
    let r = s.come_back(&back).await;
    assert_eq!(r.status(), 303);
    s.wait_for_status(id, "cancelled").await;
    assert_eq!(s.at_bank(&p)["submissions"], 0, "never submitted");
    let withheld = s.event(id, "submission_withheld").await.expect("withheld");
    assert_eq!(withheld["refresh_token_revoked"], false, "{withheld}");
    assert_eq!(
        withheld["refresh_token_revocation"], "not_offered",
        "{withheld}"
    );
    s.assert_nothing_refused();
    s.assert_ledger_verifies().await;
}

/// `77.06`: OP makes the payment with another amount (78.06 for 77.06) and its answer to
/// the creation echoes it. pisgate records the answer (OP holds the payment) with a
/// `bank_terms_mismatch` event and withholds the submission at once: the merchant's answer
/// is already `cancelled` (failure `bank_terms_mismatch`) with no link for a shopper, and a
/// shopper who reaches OP's page anyway and approves gets nothing submitted: OP never
/// debits it.
#[tokio::test]
async fn op_a_payment_op_made_with_another_amount_is_never_submitted() {
    let s = setup(&[]).await;
    let p = s.app.create_payment(&s.m.api_key, &body("77.06")).await;
    let id = p["id"].as_str().unwrap();
    assert!(
        p["bank_payment_id"].is_string(),
        "OP's payment recorded: {p}"
    );
    assert_eq!(p["status"], "cancelled", "{p}");
    assert_eq!(p["failure"]["code"], "bank_terms_mismatch", "{p}");
    assert_eq!(s.at_bank(&p)["amount"], "78.06");
    let mismatch = s
        .event(id, "bank_terms_mismatch")
        .await
        .expect("the ledger says why");
    assert_eq!(mismatch["fields"], json!(["amount"]), "{mismatch}");
    let withheld = s.event(id, "submission_withheld").await.expect("withheld");
    assert_eq!(withheld["reason"], "bank_terms_mismatch", "{withheld}");
    assert!(
        p["authorization_url"].is_null(),
        "no link for a shopper: {p}"
    );

    // The bank's link is kept with the payment; a shopper who reaches it anyway and
    // approves at OP comes back to a payment that is never submitted.
    let authorize: String =
        sqlx::query_scalar("SELECT authorization_url FROM payments WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&s.app.pool)
            .await
            .unwrap();
    let back = s.at_op(&authorize, true).await;
    s.come_back(&back).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let op = s.at_bank(&p);
    assert_eq!(op["submissions"], 0, "{op}");
    assert_ne!(op["status"], "Debited", "{op}");
    assert_eq!(s.payment(id).await["status"], "cancelled");
    assert_eq!(count(&s.kinds(id).await, "submission_started"), 0);
    s.assert_ledger_verifies().await;
}

/// Without a bank named, the shopper chooses among FI's banks (Nordea and OP). OP's SEPA
/// payment has no express payment: an express payment's choice page never offers OP (it
/// would fail after the shopper's choice), a choice of OP posted anyway is refused on the
/// page, and nothing is sent to either bank. When none of the country's banks can carry
/// it, the merchant hears 422 at creation, naming the field, as for a bank it named.
#[tokio::test]
async fn op_is_not_offered_for_a_payment_it_cannot_carry_and_no_bank_that_can_is_a_422() {
    let op = setup(&[]).await;
    let mut express = body("12.00");
    express.as_object_mut().unwrap().remove("bank");
    express["urgency"] = json!("express");
    let p = op.app.create_payment(&op.m.api_key, &express).await;
    assert_eq!(p["initiation"], "awaiting_bank_choice", "{p}");
    let url = p["authorization_url"].as_str().unwrap();
    let page = op.app.client.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"name="bank" value="nordea""#), "{html}");
    assert!(!html.contains(r#"value="op""#), "OP is offered: {html}");
    let (hop, token) = url.split_once("?t=").unwrap();
    let posted = op
        .app
        .client
        .post(format!("{hop}/bank"))
        .form(&[("t", token), ("bank", "op")])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 422);
    let id = p["id"].as_str().unwrap();
    let now = op.app.get_payment(&op.m.api_key, id).await;
    assert_eq!(now["initiation"], "awaiting_bank_choice", "{now}");
    assert_eq!(now["status"], "awaiting_authorization", "{now}");
    assert!(op.app.bank_payments_for(id).is_empty(), "nothing at Nordea");

    // A standard payment: both are offered.
    let mut standard = body("12.00");
    standard.as_object_mut().unwrap().remove("bank");
    let p = op.app.create_payment(&op.m.api_key, &standard).await;
    let html = op
        .app
        .client
        .get(p["authorization_url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"value="op""#), "{html}");

    // FI served by OP and a second OP-protocol bank only: neither has an express payment.
    let env: Vec<(String, String)> = bank_env(&op.sim)
        .into_iter()
        .flat_map(|(k, v)| [(k.replace("__OP__", "__OP2__"), v.clone()), (k, v)])
        .collect();
    let mut overrides: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    overrides.push(("PISGATE__NORDEA__COUNTRIES", "SE"));
    let app = spawn_app_with(&overrides).await;
    let m = app.create_merchant("Kauppa Oy").await;
    let r = app
        .post_payment(&m.api_key, "express-nowhere", &express)
        .await;
    let problem = crate::helpers::assert_problem(r, 422, "validation_failed").await;
    assert_eq!(
        crate::helpers::error_fields(&problem),
        vec!["urgency".to_owned()],
        "{problem}"
    );
    let made: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(made, 0, "nothing written");
}

/// An insider sets the row's cancel columns (`cancel_requested_at`/`_by = merchant`) on a
/// payment the merchant never cancelled, hoping pisgate withholds what the shopper approves.
/// Only the merchant's cancel the ledger recorded withholds: the approved payment is
/// submitted and paid, and the mismatch is counted. (The same check guards deleting a
/// signed payment at the bank after the shopper's return.)
#[tokio::test]
async fn op_a_cancel_set_in_the_row_but_not_in_the_ledger_withholds_nothing() {
    let s = setup(&[]).await;
    let p = s.pay("19.00").await;
    let id = p["id"].as_str().unwrap();
    let authorize = s.to_op(&p).await;
    sqlx::query(
        "UPDATE payments SET cancel_requested_at = now(), cancel_requested_by = 'merchant'
         WHERE id = $1::uuid",
    )
    .bind(id)
    .execute(&s.app.pool)
    .await
    .unwrap();
    let back = s.at_op(&authorize, true).await;
    let r = s.come_back(&back).await;
    assert_eq!(r.status(), 303);
    s.wait_for_status(id, "paid").await;
    assert_eq!(s.at_bank(&p)["submissions"], 1, "submitted once");
    assert!(s.event(id, "submission_withheld").await.is_none());
    let scrape = s.app.metrics().await;
    assert!(
        scrape.contains("pisgate_ledger_binding_mismatches_total"),
        "{scrape}"
    );
}
