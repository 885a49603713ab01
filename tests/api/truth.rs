//! The truth rule, end to end: pisgate never tells a merchant something the bank
//! contradicts. Late signing, forged callbacks, unknown initiation outcomes, a slow or
//! refusing token endpoint, one shopper at two merchants, a burst of callbacks on a small
//! pool, and cancellation at every stage, each against the real Postgres and the Nordea
//! sandbox. Every test ends with [`sweep`], which compares every payment pisgate holds with
//! the sandbox bank's own view of it.
//!
//! What the merchant is told is read from the webhook outbox (`webhook_events`: one row per
//! event, written with the change; delivery itself is the webhooks tests' subject).

use crate::helpers::{TestApp, TestMerchant, open_authorization, spawn_app_full};
use crate::payments::body;
use pisgate::sandbox::{BankStatus, Fault, FaultRule, FaultTarget, Operation, SandboxConfig};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The poller on, fast; webhooks are only written to the outbox (no dispatcher).
pub(crate) const POLLER: &[(&str, &str)] = &[
    ("PISGATE__POLLER__ENABLED", "true"),
    ("PISGATE__POLLER__SIGNING_INTERVAL", "200ms"),
    ("PISGATE__POLLER__LATE_SIGNING_INTERVAL", "300ms"),
    ("PISGATE__POLLER__AUTHORIZED_INTERVAL", "300ms"),
    ("PISGATE__POLLER__IDLE_WAIT", "500ms"),
    ("PISGATE__POLLER__LEASE", "10s"),
    ("PISGATE__POLLER__MAX_BACKOFF", "1s"),
];

pub(crate) async fn app_with(
    extra: &[(&'static str, &'static str)],
    poller: bool,
    sandbox: impl FnOnce(&mut SandboxConfig),
) -> TestApp {
    let mut all: Vec<(&str, &str)> = if poller { POLLER.to_vec() } else { Vec::new() };
    all.extend_from_slice(extra);
    spawn_app_full(&all, sandbox).await
}

fn rule(operation: FaultTarget, fault: Fault, times: u32) -> FaultRule {
    FaultRule::always(operation, fault).times(times)
}

/// Waits for a condition, failing with `what` after `within`.
pub(crate) async fn until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn status_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM payments WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

pub(crate) async fn wait_status(app: &TestApp, id: &str, want: &str, within: Duration) {
    until(&format!("{id} to be {want}"), within, || async {
        status_of(app, id).await == want
    })
    .await;
}

/// The webhook event types the merchant was given for a payment, oldest first.
pub(crate) async fn webhooks_of(app: &TestApp, id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type FROM webhook_events WHERE payment_id = $1::uuid ORDER BY created_at, id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

pub(crate) async fn ledger_kinds(app: &TestApp, id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM payment_events WHERE payment_id = $1::uuid ORDER BY seq")
        .bind(id)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// Opens the payment's authorization_url as a browser (through pisgate's hop to the bank's
/// page) and returns where the bank's form posts.
pub(crate) async fn reach_bank_page(app: &TestApp, authorization_url: &str) -> String {
    let page = open_authorization(&app.client, authorization_url).await;
    assert_eq!(page.status(), 200, "the bank's signing page opens");
    let html = page.text().await.unwrap();
    html.split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the signing page has a form")
        .replace("&amp;", "&")
}

/// Presses Approve or Reject on the bank's page; returns the callback URL the bank sends
/// the shopper to.
pub(crate) async fn press(app: &TestApp, action: &str, psu: &str, approve: bool) -> String {
    let decision = if approve { "approve" } else { "reject" };
    let r = app
        .client
        .post(action)
        .form(&[("decision", decision), ("psu_id", psu)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the bank redirects back");
    r.headers()["location"].to_str().unwrap().to_owned()
}

pub(crate) async fn follow(app: &TestApp, url: &str) -> reqwest::Response {
    app.client.get(url).send().await.unwrap()
}

pub(crate) fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub(crate) async fn cancel(app: &TestApp, key: &str, id: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/payments/{id}/cancel")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// The final merchant status a final bank status means (None: not final at the bank).
fn bank_final(status: BankStatus) -> Option<&'static str> {
    match status {
        BankStatus::Paid => Some("paid"),
        BankStatus::Rejected | BankStatus::InsufficientFunds | BankStatus::LimitExceeded => {
            Some("rejected")
        }
        BankStatus::UserApprovalFailed | BankStatus::UserApprovalCancelled => {
            Some("authorization_failed")
        }
        BankStatus::UserApprovalTimeout => Some("expired"),
        BankStatus::Cancelled | BankStatus::Stopped => Some("cancelled"),
        _ => None,
    }
}

/// id, status, bank payment id, bank status, cancel requested.
type Row = (Uuid, String, Option<String>, Option<String>, bool);

/// Compares every payment pisgate holds with the sandbox bank's view of it and returns the
/// disagreements:
/// - a final status must be the bank's final status (UserApprovalTimeout may end
///   `cancelled` when the merchant had asked to cancel);
/// - `expired` and `cancelled` never stand beside a bank payment that is paid or still
///   signable by someone who was given its link;
/// - `failed` only where no bank payment was ever opened by a shopper;
/// - a bank payment of a lost attempt (not the one pisgate recorded) was never opened: its
///   link never reached anybody;
/// - the bank status pisgate shows is the bank's last word once the payment is final.
pub(crate) async fn sweep(app: &TestApp) -> Vec<String> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, status, bank_payment_id, bank_status, cancel_requested_at IS NOT NULL
         FROM payments ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut wrong = Vec::new();
    for (id, status, bank_id, bank_status, cancel_requested) in rows {
        let at_bank = app.bank_payments_for(&id.to_string());
        for orphan in at_bank
            .iter()
            .filter(|b| Some(&b.payment_id) != bank_id.as_ref())
        {
            if orphan.exists_at_bank {
                wrong.push(format!("{id}: the link of a lost attempt was opened"));
            }
        }
        let recorded = at_bank
            .iter()
            .find(|b| Some(&b.payment_id) == bank_id.as_ref());
        let is_final = crate::workers::FINAL.contains(&status.as_str());
        match (status.as_str(), recorded) {
            ("failed", Some(b)) if b.exists_at_bank => {
                wrong.push(format!("{id}: failed, but its bank payment was opened"))
            }
            (_, Some(b)) if is_final => {
                let bank_says = bank_final(b.status);
                let agrees = match (status.as_str(), bank_says) {
                    (s, Some(want)) => {
                        s == want
                            || (s == "cancelled" && want == "expired" && cancel_requested)
                            // Deleted at pisgate's request at the late-signing horizon.
                            || (s == "expired" && want == "cancelled" && !cancel_requested)
                    }
                    // Not final at the bank: only an unopened, never-signable payment may be
                    // over for us (expired at the horizon, or cancelled before its link was
                    // handed out).
                    ("expired" | "cancelled", None) => {
                        !b.exists_at_bank && b.status == BankStatus::PendingUserApproval
                    }
                    _ => false,
                };
                if !agrees {
                    wrong.push(format!(
                        "{id}: pisgate says {status}, the bank says {:?} (opened: {})",
                        b.status, b.exists_at_bank
                    ));
                }
                // Before a shopper opens it the bank answers 404: nothing to show then.
                if bank_says.is_some()
                    && b.exists_at_bank
                    && bank_status.as_deref() != Some(&format!("{:?}", b.status))
                {
                    wrong.push(format!(
                        "{id}: shows bank status {bank_status:?}, the bank says {:?}",
                        b.status
                    ));
                }
            }
            _ => {}
        }
    }
    wrong
}

pub(crate) async fn assert_agrees_with_the_bank(app: &TestApp) {
    let wrong = sweep(app).await;
    assert!(wrong.is_empty(), "disagreements with the bank: {wrong:#?}");
}

pub(crate) async fn create(app: &TestApp, m: &TestMerchant, country: &str) -> (String, String) {
    let p = app.create_payment(&m.api_key, &body(country)).await;
    (
        p["id"].as_str().unwrap().to_owned(),
        p["authorization_url"].as_str().unwrap().to_owned(),
    )
}

// 1 -------------------------------------------------------------------------------------

#[tokio::test]
async fn a_shopper_who_signs_after_the_window_pays_and_the_merchant_hears_paid() {
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "5"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "120"),
        ],
        true,
        |c| {
            c.approval_timeout = Some(Duration::from_secs(60));
            c.paid_delay = Duration::from_millis(500);
        },
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "FI").await;
    // The shopper reaches the bank in time...
    let action = reach_bank_page(&app, &url).await;
    // ...and is still on its page when pisgate's window closes.
    let window_end: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT expires_at FROM payments WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let wait = (window_end - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(1500)).await;
    assert_eq!(
        status_of(&app, &id).await,
        "awaiting_authorization",
        "the window is no evidence"
    );
    // A new shopper can no longer start...
    let late = app.client.get(&url).send().await.unwrap();
    assert_eq!(late.status(), 410);
    assert!(location(&late).is_empty());
    // ...but the one at the bank signs, and comes back.
    let callback = press(&app, &action, "psu-late", true).await;
    let back = follow(&app, &callback).await;
    assert_eq!(back.status(), 303);
    assert!(!location(&back).contains("status="), "{}", location(&back));
    wait_status(&app, &id, "paid", Duration::from_secs(20)).await;
    assert_eq!(
        webhooks_of(&app, &id).await,
        ["payment.authorized", "payment.paid"]
    );
    assert_agrees_with_the_bank(&app).await;
}

// 2, 3 ----------------------------------------------------------------------------------

#[tokio::test]
async fn an_unsigned_payment_expires_on_the_banks_timeout_and_its_link_closes() {
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "600"),
        ],
        true,
        |c| c.approval_timeout = Some(Duration::from_secs(4)),
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "SE").await;
    let started = Instant::now();
    reach_bank_page(&app, &url).await;
    // Past pisgate's window, before the bank's timeout: still open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status_of(&app, &id).await, "awaiting_authorization");
    wait_status(&app, &id, "expired", Duration::from_secs(15)).await;
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "expired only on the bank's UserApprovalTimeout"
    );
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["bank_status"], "UserApprovalTimeout");
    assert_eq!(p["failure"]["code"], "not_signed");
    assert!(p["authorization_url"].is_null());
    // Exactly one final webhook, even though the poller keeps nothing else to say.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(webhooks_of(&app, &id).await, ["payment.expired"]);
    // 3: the link no longer leads to the bank's page.
    let hop = app.client.get(&url).send().await.unwrap();
    assert_eq!(hop.status(), 410);
    assert!(location(&hop).is_empty());
    assert!(hop.text().await.unwrap().contains("expired"));
    assert_agrees_with_the_bank(&app).await;
}

#[tokio::test]
async fn a_payment_nobody_opens_expires_at_the_horizon_and_not_before() {
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "4"),
        ],
        true,
        |_| {},
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, _) = create(&app, &m, "DK").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status_of(&app, &id).await,
        "awaiting_authorization",
        "past the window, before the horizon"
    );
    wait_status(&app, &id, "expired", Duration::from_secs(15)).await;
    let horizon: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT sign_horizon_at FROM payments WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let finalized: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT finalized_at FROM payments WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        finalized >= horizon,
        "{finalized} before the horizon {horizon}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(webhooks_of(&app, &id).await, ["payment.expired"]);
    assert_agrees_with_the_bank(&app).await;
}

// 4 -------------------------------------------------------------------------------------

#[tokio::test]
async fn a_forged_error_on_an_approved_payment_changes_nothing_the_bank_did_not_say() {
    let app = app_with(&[], true, |c| c.paid_delay = Duration::from_secs(1)).await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "FI").await;
    let action = reach_bank_page(&app, &url).await;
    let callback = press(&app, &action, "psu-forged", true).await;
    // Someone who saw the state sends the shopper's browser an error first.
    let state = reqwest::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let forged = reqwest::Url::parse_with_params(
        &app.url("/v1/callbacks/nordea"),
        &[
            ("state", state.as_str()),
            ("error", "access_denied"),
            ("error_description", "forged"),
        ],
    )
    .unwrap();
    let r = follow(&app, forged.as_str()).await;
    assert_eq!(r.status(), 303);
    assert!(
        !location(&r).contains("authorization_failed"),
        "{}",
        location(&r)
    );
    assert_ne!(status_of(&app, &id).await, "authorization_failed");
    // The real return still works: the error consumed nothing.
    let real = follow(&app, &callback).await;
    assert_eq!(real.status(), 303);
    let token: Option<String> =
        sqlx::query_scalar("SELECT psu_key FROM payments WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        token.is_some(),
        "the code was exchanged after the forged error"
    );
    wait_status(&app, &id, "paid", Duration::from_secs(15)).await;
    let kinds = ledger_kinds(&app, &id).await;
    assert!(kinds.contains(&"callback_error".to_owned()), "{kinds:?}");
    assert!(
        !webhooks_of(&app, &id)
            .await
            .contains(&"payment.authorization_failed".to_owned())
    );
    assert_agrees_with_the_bank(&app).await;
}

#[tokio::test]
async fn a_real_error_from_the_bank_ends_as_the_bank_says() {
    let app = app_with(&[], false, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "NO").await;
    let action = reach_bank_page(&app, &url).await;
    let callback = press(&app, &action, "psu-no", false).await;
    let r = follow(&app, &callback).await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).ends_with(&format!("payment_id={id}")));
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["bank_status"], "UserApprovalCancelled");
    assert_agrees_with_the_bank(&app).await;
}

// 5 -------------------------------------------------------------------------------------

/// A payment whose first bank answer is lost: the merchant hears
/// `initiation_outcome_unknown`, a retry with the same key resumes it, and only the second
/// attempt's link is ever handed out.
async fn lost_answer_then_retry(app: &TestApp, key: &str) {
    let m = app.create_merchant("Shop").await;
    let first = app.post_payment(&m.api_key, key, &body("FI")).await;
    let problem = crate::helpers::assert_problem(first, 502, "initiation_outcome_unknown").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("same Idempotency-Key")
    );
    let (id, status, initiation): (String, String, String) =
        sqlx::query_as("SELECT id::text, status, initiation FROM payments")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        status, "awaiting_authorization",
        "never failed on an unknown"
    );
    assert_eq!(initiation, "outcome_unknown");
    assert_eq!(
        app.get_payment(&m.api_key, &id).await["authorization_url"],
        Value::Null
    );

    let retry = app.post_payment(&m.api_key, key, &body("FI")).await;
    assert_eq!(retry.status(), 201);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], id.as_str(), "one payment");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    // Its link works...
    let url = retry["authorization_url"].as_str().unwrap();
    let action = reach_bank_page(app, url).await;
    let back = follow(app, &press(app, &action, "psu-retry", true).await).await;
    assert_eq!(back.status(), 303);
    assert!(
        location(&back).ends_with(&format!("payment_id={id}")),
        "{}",
        location(&back)
    );
    wait_status(app, &id, "authorized", Duration::from_secs(10)).await;
    // ...and leads to the attempt pisgate recorded, never to the lost one.
    let at_bank = app.bank_payments_for(&id);
    assert_eq!(at_bank.len(), 2, "two attempts reached the bank");
    let recorded = retry["bank_payment_id"].as_str().unwrap();
    for b in &at_bank {
        assert_eq!(b.exists_at_bank, b.payment_id == recorded, "{b:?}");
    }
    // The ledger lists both attempts and what became of each.
    let kinds = ledger_kinds(app, &id).await;
    assert_eq!(
        &kinds[..5],
        [
            "created",
            "initiation_attempt",
            "initiation_unanswered",
            "initiation_attempt",
            "initiated"
        ],
        "{kinds:?}"
    );
    assert_agrees_with_the_bank(app).await;
    // The retry started a new late-signing horizon, and its ledger recorded it: the row
    // verifies against the second attempt's, not the first's.
    let horizons: Vec<String> = sqlx::query_scalar(
        "SELECT detail->>'sign_horizon_at' FROM payment_events
         WHERE payment_id = $1::uuid AND detail ? 'sign_horizon_at' ORDER BY seq",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(horizons.len(), 2, "{horizons:?}");
    assert_ne!(horizons[0], horizons[1]);
    crate::helpers::assert_ledger_verifies(&app.pool).await;
}

#[tokio::test]
async fn a_malformed_initiation_answer_is_an_unknown_outcome_resumed_by_the_same_key() {
    let app = app_with(&[], false, |c| {
        c.faults = vec![rule(FaultTarget::Initiate, Fault::MalformedJson, 1)];
    })
    .await;
    lost_answer_then_retry(&app, "k-malformed").await;
}

#[tokio::test]
async fn a_timeout_after_sending_is_an_unknown_outcome_resumed_by_the_same_key() {
    let app = app_with(
        &[("PISGATE__NORDEA__REQUEST_TIMEOUT_SECS", "1")],
        false,
        |c| {
            c.faults = vec![rule(
                FaultTarget::Initiate,
                Fault::DelayAnswer { ms: 2500 },
                1,
            )];
        },
    )
    .await;
    lost_answer_then_retry(&app, "k-timeout").await;
}

#[tokio::test]
async fn a_connection_dropped_after_sending_is_an_unknown_outcome_resumed_by_the_same_key() {
    let app = app_with(&[], false, |c| {
        c.faults = vec![rule(FaultTarget::Initiate, Fault::DropAfterProcessing, 1)];
    })
    .await;
    lost_answer_then_retry(&app, "k-dropped").await;
}

/// An insider (database write, no ledger key) points an in-flight Idempotency-Key row at a
/// payment whose bank answer was lost, with the request hash of a request of theirs (paying
/// their own account), then sends that request with a stolen API key. The resume path builds
/// the bank call from the request it is sent, so it first checks that the payment is this
/// merchant's and was created from this very request as its ledger recorded it: a 500, and
/// nothing is sent to the bank. The payment's own retry still resumes it.
#[tokio::test]
async fn a_forged_idempotency_row_never_resumes_another_payment_with_its_request() {
    let app = app_with(&[], false, |c| {
        c.faults = vec![rule(FaultTarget::Initiate, Fault::DropAfterProcessing, 1)];
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let first = app.post_payment(&m.api_key, "k-victim", &body("FI")).await;
    crate::helpers::assert_problem(first, 502, "initiation_outcome_unknown").await;
    let victim: Uuid = sqlx::query_scalar("SELECT id FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // The insider's request, and the hashes pisgate keeps for it (from a request of theirs).
    let mut evil = body("FI");
    evil["creditor"]["account"] = json!({ "type": "IBAN", "value": "FI2112345600000785" });
    assert_eq!(
        app.post_payment(&m.api_key, "k-probe", &evil)
            .await
            .status(),
        201
    );
    sqlx::query(
        "INSERT INTO idempotency_keys (merchant_id, key, request_hash, body_hash, payment_id,
                                       expires_at, locked_until)
         SELECT merchant_id, 'k-evil', request_hash, body_hash, $1,
                now() + interval '1 day', now() - interval '1 minute'
           FROM idempotency_keys WHERE key = 'k-probe'",
    )
    .bind(victim)
    .execute(&app.pool)
    .await
    .unwrap();
    let sent = app.bank_calls(Operation::Initiate);

    let r = app.post_payment(&m.api_key, "k-evil", &evil).await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        app.bank_calls(Operation::Initiate),
        sent,
        "nothing was sent to the bank"
    );
    let initiation: String = sqlx::query_scalar("SELECT initiation FROM payments WHERE id = $1")
        .bind(victim)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(initiation, "outcome_unknown", "the victim was not touched");

    // The payment's own key resumes it with its own request.
    let retry = app.post_payment(&m.api_key, "k-victim", &body("FI")).await;
    assert_eq!(retry.status(), 201);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], victim.to_string());
}

#[tokio::test]
async fn a_database_lost_after_the_bank_answered_leaves_a_resumable_payment() {
    let app = app_with(
        &[("PISGATE__PAYMENTS__IDEMPOTENCY_STALE_AFTER_SECS", "5")],
        false,
        |c| {
            c.faults = vec![rule(
                FaultTarget::Initiate,
                Fault::DelayAnswer { ms: 1500 },
                1,
            )]
        },
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let request = create_in_background(&app, &m, "k-db");
    // The bank has the payment and is answering; the database goes away before it arrives.
    until(
        "the bank to hold the payment",
        Duration::from_secs(5),
        || async { !app.sandbox.payments().is_empty() },
    )
    .await;
    crate::helpers::database_reachable(&app, false).await;
    let answer = request.await.unwrap();
    crate::helpers::database_reachable(&app, true).await;
    // Either the handler saw the database fail when it came to record the bank's answer
    // (502: the bank may hold it), or the outage was noticed first and the waiting request
    // was answered at once (503, as the deadline does). Both tell the merchant to retry
    // with the same key, which is what this test is about.
    match answer.status().as_u16() {
        502 => crate::helpers::assert_problem(answer, 502, "initiation_outcome_unknown").await,
        _ => crate::helpers::assert_problem(answer, 503, "database_unavailable").await,
    };

    // The key is in flight until its bound, then the same key resumes the payment.
    let started = Instant::now();
    // A merchant retries 409 (key in flight) and 503 (the database coming back) as told.
    let retry = loop {
        let r = app.post_payment(&m.api_key, "k-db", &body("FI")).await;
        if r.status() != 409 && r.status() != 503 {
            break r;
        }
        assert!(r.headers().contains_key("retry-after"));
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the key stays in flight"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(retry.status(), 201);
    let retry: Value = retry.json().await.unwrap();
    let id = retry["id"].as_str().unwrap().to_owned();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let action = reach_bank_page(&app, retry["authorization_url"].as_str().unwrap()).await;
    let back = follow(&app, &press(&app, &action, "psu-db", true).await).await;
    assert!(
        location(&back).ends_with(&format!("payment_id={id}")),
        "{}",
        location(&back)
    );
    wait_status(&app, &id, "authorized", Duration::from_secs(10)).await;
    let attempts: Vec<Value> = sqlx::query_scalar(
        "SELECT detail FROM payment_events WHERE payment_id = $1::uuid AND kind = 'initiation_attempt' ORDER BY seq",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    // The bank call and its recording run on when the request is cut off: once the
    // database is back within the recording's retries, the bank's answer is recorded and
    // the retry replays it (one payment at the bank); otherwise the first attempt is in the
    // ledger with no outcome of its own and the retry made a second one.
    match app.bank_payments_for(&id).len() {
        1 => assert_eq!(attempts.len(), 1, "{attempts:?}"),
        2 => {
            assert_eq!(attempts.len(), 2, "{attempts:?}");
            assert_eq!(attempts[1]["attempt"], 2);
            assert_eq!(
                attempts[1]["previous_outcome"],
                "no answer recorded (interrupted)"
            );
        }
        n => panic!("{n} payments at the bank for one key"),
    }
    assert_agrees_with_the_bank(&app).await;
}

// 6 -------------------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_token_endpoint_never_holds_the_shopper_and_a_repeat_never_exchanges_twice() {
    let app = app_with(
        &[
            ("PISGATE__CALLBACK__REDIRECT_TIMEOUT", "1s"),
            ("PISGATE__CALLBACK__EXCHANGE_DEADLINE", "20s"),
        ],
        false,
        |c| c.faults = vec![rule(FaultTarget::Token, Fault::Latency { ms: 3000 }, 1)],
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "FI").await;
    let action = reach_bank_page(&app, &url).await;
    let callback = press(&app, &action, "psu-slow", true).await;
    let started = Instant::now();
    let back = follow(&app, &callback).await;
    assert_eq!(back.status(), 303);
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    assert!(
        location(&back).ends_with(&format!("payment_id={id}")),
        "{}",
        location(&back)
    );
    // The shopper presses reload while the exchange still runs.
    let again = follow(&app, &callback).await;
    assert_eq!(again.status(), 303);
    // The background task stores the token, then reads the bank's status.
    wait_status(&app, &id, "authorized", Duration::from_secs(10)).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM psu_tokens WHERE status = 'live'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    // And once more, after it finished: the same redirect (the status is the API's to tell).
    let later = follow(&app, &callback).await;
    assert_eq!(later.status(), 303);
    assert_eq!(location(&later), location(&back));
    assert_eq!(
        app.bank_calls(Operation::Token),
        1,
        "one exchange, whatever the browser did"
    );
    assert_agrees_with_the_bank(&app).await;
}

#[tokio::test]
async fn a_code_exchange_the_bank_did_not_run_is_retried_and_the_token_stored() {
    let app = app_with(&[], false, |c| {
        c.faults = vec![
            rule(
                FaultTarget::Token,
                Fault::Http429 {
                    retry_after_secs: 1,
                },
                1,
            ),
            rule(FaultTarget::Token, Fault::Http503, 1),
        ];
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "DK").await;
    let action = reach_bank_page(&app, &url).await;
    let callback = press(&app, &action, "psu-retry", true).await;
    let back = follow(&app, &callback).await;
    assert_eq!(back.status(), 303);
    until(
        "the token to be stored",
        Duration::from_secs(15),
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM psu_tokens WHERE status = 'live'")
                .fetch_one(&app.pool)
                .await
                .unwrap()
                == 1
        },
    )
    .await;
    let counters = app.sandbox.counters()[&Operation::Token];
    assert_eq!((counters.received, counters.faulted), (3, 2));
    // The token works.
    wait_status(&app, &id, "authorized", Duration::from_secs(5)).await;
    let funds = app
        .get_as(&format!("/v1/payments/{id}/funds"), &m.api_key)
        .await;
    assert_eq!(funds.status(), 200);
    assert_agrees_with_the_bank(&app).await;
}

// 7 -------------------------------------------------------------------------------------

/// One bank shopper signs a payment at each of two merchants; the first exchange is issued
/// first at the bank but its answer arrives last.
async fn one_shopper_two_merchants(identity: bool) -> (TestApp, [(TestMerchant, String); 2]) {
    let app = app_with(&[], false, |c| {
        c.token_identity = identity;
        c.faults = vec![rule(FaultTarget::Token, Fault::DelayAnswer { ms: 1500 }, 1)];
    })
    .await;
    let mut out = Vec::new();
    let mut callbacks = Vec::new();
    for name in ["Shop A", "Shop B"] {
        let m = app.create_merchant(name).await;
        let mut b = body("FI");
        b["psu_id"] = json!(format!("{name} customer 7"));
        let p = app.create_payment(&m.api_key, &b).await;
        let action = reach_bank_page(&app, p["authorization_url"].as_str().unwrap()).await;
        callbacks.push(press(&app, &action, "psu-same-person", true).await);
        out.push((m, p["id"].as_str().unwrap().to_owned()));
    }
    let first = {
        let (client, url) = (app.client.clone(), callbacks[0].clone());
        tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
    };
    until(
        "the first exchange to be issued",
        Duration::from_secs(5),
        || async { app.bank_calls(Operation::Token) == 1 },
    )
    .await;
    let second = follow(&app, &callbacks[1]).await;
    assert_eq!(second.status(), 303);
    assert_eq!(first.await.unwrap(), 303);
    // The background exchange of the first finishes after the second.
    until("both exchanges to be recorded", Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM payment_events WHERE kind IN ('token_exchanged', 'token_exchange_failed')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
            == 2
    })
    .await;
    let [a, b]: [(TestMerchant, String); 2] = out.try_into().ok().unwrap();
    (app, [a, b])
}

#[tokio::test]
async fn with_the_banks_shopper_identity_the_last_issued_token_wins_across_merchants() {
    let (app, [(ma, a), (mb, b)]) = one_shopper_two_merchants(true).await;
    let keys: Vec<Option<String>> =
        sqlx::query_scalar("SELECT psu_key FROM payments ORDER BY created_at")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(keys[0], keys[1], "one shopper at the bank, one token");
    assert_eq!(keys[0].as_deref(), Some("bank:psu-same-person"));
    // The late answer (issued first) did not overwrite the newer token.
    let stored: Vec<Value> = sqlx::query_scalar(
        "SELECT detail FROM payment_events WHERE kind = 'token_exchanged' ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(
        stored[0]["stored"], true,
        "the second exchange, answered first"
    );
    assert_eq!(
        stored[1]["stored"], false,
        "the first exchange, answered last"
    );
    for (m, id) in [(&ma, &a), (&mb, &b)] {
        let funds = app
            .get_as(&format!("/v1/payments/{id}/funds"), &m.api_key)
            .await;
        assert_eq!(funds.status(), 200, "funds for {id}");
    }
    for (m, id) in [(&ma, &a), (&mb, &b)] {
        let r = cancel(&app, &m.api_key, id).await;
        assert_eq!(r.status(), 200, "cancel {id}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "cancelled");
        assert_eq!(v["bank_status"], "Cancelled");
    }
    assert_agrees_with_the_bank(&app).await;
}

#[tokio::test]
async fn without_the_banks_shopper_identity_a_superseded_token_is_reported_not_used() {
    let (app, [(ma, a), (mb, b)]) = one_shopper_two_merchants(false).await;
    // Each token serves its own merchant's payments; the bank revoked the first one when it
    // issued the second, and says so on first use.
    let r = app
        .get_as(&format!("/v1/payments/{a}/funds"), &ma.api_key)
        .await;
    crate::helpers::assert_problem(r, 409, "no_shopper_token").await;
    let dead: Vec<String> =
        sqlx::query_scalar("SELECT status FROM psu_tokens ORDER BY obtained_at")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead.contains(&"dead".to_owned()));
    let r = app
        .get_as(&format!("/v1/payments/{b}/funds"), &mb.api_key)
        .await;
    assert_eq!(r.status(), 200);
    // Status reads need no token: the payment is still followed.
    assert_eq!(
        app.get_payment(&ma.api_key, &a).await["status"],
        "authorized"
    );
    assert_agrees_with_the_bank(&app).await;
}

// 8 -------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hundred_concurrent_callbacks_on_a_pool_of_ten_all_redirect() {
    let app = app_with(
        &[("PISGATE__DATABASE__MAX_CONNECTIONS", "10")],
        false,
        |_| {},
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let mut callbacks = Vec::new();
    for i in 0..100 {
        let mut b = body(["FI", "SE", "DK", "NO"][i % 4]);
        b["psu_id"] = json!(format!("shopper-{i}"));
        let p = app.create_payment(&m.api_key, &b).await;
        let action = reach_bank_page(&app, p["authorization_url"].as_str().unwrap()).await;
        callbacks.push(press(&app, &action, &format!("psu-{i}"), true).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for url in callbacks {
        let client = app.client.clone();
        tasks.spawn(async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), location(&r))
        });
    }
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        statuses.push(r.unwrap());
    }
    let not_redirected: Vec<_> = statuses.iter().filter(|(s, _)| *s != 303).collect();
    assert!(not_redirected.is_empty(), "{not_redirected:?}");
    until(
        "every token to be stored",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments WHERE psu_key IS NOT NULL")
                .fetch_one(&app.pool)
                .await
                .unwrap()
                == 100
        },
    )
    .await;
    assert_eq!(app.bank_calls(Operation::Token), 100);
    assert_agrees_with_the_bank(&app).await;
}

// 9 -------------------------------------------------------------------------------------

/// An insider sets the row's cancel columns (merchant) while the shopper is at the bank;
/// the shopper signs and comes back. Only a merchant's cancel the ledger recorded makes
/// pisgate delete a signed payment at the bank: this one stays, and the shopper's signature
/// is followed.
#[tokio::test]
async fn a_cancel_set_in_the_row_but_not_in_the_ledger_never_deletes_a_signed_payment() {
    let app = app_with(&[], false, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "FI").await;
    let action = reach_bank_page(&app, &url).await;
    sqlx::query(
        "UPDATE payments SET cancel_requested_at = now(), cancel_requested_by = 'merchant'
         WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let callback = press(&app, &action, "psu-1", true).await;
    let r = app.client.get(callback).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        app.bank_payments_for(&id).iter().all(|b| b.exists_at_bank),
        "deleted at the bank"
    );
    assert_eq!(app.bank_calls(Operation::Cancel), 0);
    assert_ne!(status_of(&app, &id).await, "cancelled");
}

#[tokio::test]
async fn cancelling_before_anyone_reached_the_bank_ends_cancelled_at_once() {
    let app = app_with(&[], false, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "FI").await;
    let r = cancel(&app, &m.api_key, &id).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "cancelled");
    assert_eq!(v["failure"]["code"], "cancelled_by_merchant");
    assert_eq!(webhooks_of(&app, &id).await, ["payment.cancelled"]);
    // 3: the link no longer leads to the bank, and the bank's page was never seen.
    let hop = app.client.get(&url).send().await.unwrap();
    assert_eq!(hop.status(), 410);
    assert!(location(&hop).is_empty());
    assert!(app.bank_payments_for(&id).iter().all(|b| !b.exists_at_bank));
    // Cancelling again is a clear conflict.
    crate::helpers::assert_problem(cancel(&app, &m.api_key, &id).await, 409, "payment_final").await;
    assert_agrees_with_the_bank(&app).await;
}

#[tokio::test]
async fn a_shopper_who_signs_after_the_merchant_cancelled_has_the_payment_deleted_at_the_bank() {
    let app = app_with(&[], false, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "SE").await;
    let action = reach_bank_page(&app, &url).await;
    let r = cancel(&app, &m.api_key, &id).await;
    assert_eq!(
        r.status(),
        202,
        "a shopper is at the bank: the bank decides"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "awaiting_authorization");
    assert_eq!(v["cancel_requested"], true);
    // No new shopper reaches the bank...
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 410);
    // ...but the one already there signs anyway.
    let back = follow(&app, &press(&app, &action, "psu-late", true).await).await;
    assert_eq!(back.status(), 303);
    wait_status(&app, &id, "cancelled", Duration::from_secs(10)).await;
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["bank_status"], "Cancelled");
    assert_eq!(webhooks_of(&app, &id).await, ["payment.cancelled"]);
    assert_agrees_with_the_bank(&app).await;
}

#[tokio::test]
async fn a_cancel_the_bank_overtook_reports_paid_with_cancel_too_late() {
    // The bank executes at once: by the time the signed shopper is back, it is paid.
    let app = app_with(&[], false, |c| c.paid_delay = Duration::ZERO).await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "DK").await;
    let action = reach_bank_page(&app, &url).await;
    assert_eq!(cancel(&app, &m.api_key, &id).await.status(), 202);
    let back = follow(&app, &press(&app, &action, "psu-fast", true).await).await;
    assert_eq!(back.status(), 303);
    wait_status(&app, &id, "paid", Duration::from_secs(10)).await;
    let kinds = ledger_kinds(&app, &id).await;
    assert!(kinds.contains(&"cancel_too_late".to_owned()), "{kinds:?}");
    assert_eq!(
        webhooks_of(&app, &id).await,
        ["payment.authorized", "payment.paid"]
    );
    // And the merchant's cancel of a payment the bank already executed says so.
    let (id2, url2) = create(&app, &m, "DK").await;
    let action = reach_bank_page(&app, &url2).await;
    follow(&app, &press(&app, &action, "psu-fast-2", true).await).await;
    wait_status(&app, &id2, "paid", Duration::from_secs(10)).await;
    crate::helpers::assert_problem(cancel(&app, &m.api_key, &id2).await, 409, "payment_final")
        .await;
    assert_agrees_with_the_bank(&app).await;
}

#[tokio::test]
async fn a_cancelled_checkout_the_shopper_abandons_at_the_bank_ends_cancelled_on_the_banks_timeout()
{
    let app = app_with(
        &[("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1")],
        true,
        |c| c.approval_timeout = Some(Duration::from_secs(3)),
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "NO").await;
    reach_bank_page(&app, &url).await;
    assert_eq!(cancel(&app, &m.api_key, &id).await.status(), 202);
    wait_status(&app, &id, "cancelled", Duration::from_secs(15)).await;
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["bank_status"], "UserApprovalTimeout");
    assert_eq!(webhooks_of(&app, &id).await, ["payment.cancelled"]);
    assert_agrees_with_the_bank(&app).await;
}

// 10 ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_mixed_run_ends_with_pisgate_and_the_bank_agreeing_on_every_payment() {
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "2"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "8"),
        ],
        true,
        |c| {
            c.approval_timeout = Some(Duration::from_secs(5));
            c.paid_delay = Duration::from_millis(300);
            c.faults = vec![
                FaultRule {
                    probability: 0.2,
                    ..FaultRule::always(FaultTarget::Status, Fault::Http503)
                },
                FaultRule {
                    probability: 0.2,
                    ..FaultRule::always(FaultTarget::Token, Fault::Http503)
                },
            ];
        },
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let mut ids = Vec::new();
    for i in 0..24 {
        let (id, url) = create(&app, &m, ["FI", "SE", "DK", "NO"][i % 4]).await;
        match i % 6 {
            // Signs and comes back.
            0 => {
                let action = reach_bank_page(&app, &url).await;
                follow(&app, &press(&app, &action, &format!("p{i}"), true).await).await;
            }
            // Refuses.
            1 => {
                let action = reach_bank_page(&app, &url).await;
                follow(&app, &press(&app, &action, &format!("p{i}"), false).await).await;
            }
            // Opens and walks away.
            2 => {
                reach_bank_page(&app, &url).await;
            }
            // Never opens.
            3 => {}
            // Cancelled before anyone opened it.
            4 => {
                cancel(&app, &m.api_key, &id).await;
            }
            // Signs at the bank, but a forged error arrives instead of the shopper.
            _ => {
                let action = reach_bank_page(&app, &url).await;
                let callback = press(&app, &action, &format!("p{i}"), true).await;
                let forged = callback.replace("code=", "error=access_denied&ignored=");
                follow(&app, &forged).await;
            }
        }
        ids.push(id);
    }
    until("every payment to be final", Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM payments WHERE status IN ('awaiting_authorization', 'authorized')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
            == 0
    })
    .await;
    let finals: Vec<String> = sqlx::query_scalar("SELECT status FROM payments ORDER BY created_at")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for (i, status) in finals.iter().enumerate() {
        let want = match i % 6 {
            0 | 5 => "paid",
            1 => "authorization_failed",
            2 | 3 => "expired",
            _ => "cancelled",
        };
        assert_eq!(status, want, "payment {i}");
    }
    assert_agrees_with_the_bank(&app).await;
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

// The guards under the API ---------------------------------------------------------------

#[tokio::test]
async fn a_shopper_coming_back_at_the_horizon_is_never_expired() {
    // The bank confirms slowly and the token endpoint is slow: the poller sees
    // PendingUserApproval past the horizon while the shopper's return is being handled.
    let app = app_with(
        &[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "1"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "3"),
            ("PISGATE__CALLBACK__REDIRECT_TIMEOUT", "1s"),
        ],
        true,
        |c| {
            c.confirm_delay = Duration::from_secs(6);
            c.faults = vec![rule(FaultTarget::Token, Fault::Latency { ms: 2500 }, 1)];
        },
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "FI").await;
    let action = reach_bank_page(&app, &url).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let callback = press(&app, &action, "psu-edge", true).await;
    follow(&app, &callback).await;
    // Well past the horizon, the bank still says PendingUserApproval for a while.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(status_of(&app, &id).await, "awaiting_authorization");
    wait_status(&app, &id, "authorized", Duration::from_secs(15)).await;
    assert!(
        !webhooks_of(&app, &id)
            .await
            .contains(&"payment.expired".to_owned())
    );
    assert_agrees_with_the_bank(&app).await;
}

#[tokio::test]
async fn only_the_current_attempt_records_and_paid_implies_authorized() {
    use pisgate::domain::Evidence;
    use pisgate::ledger::payments::{self, Change};
    // Attempt 1's answer is lost (a garbled answer): nothing recorded, in the row or the
    // ledger, so the payment may be resumed.
    let app = app_with(&[], false, |c| {
        c.faults = vec![rule(FaultTarget::Initiate, Fault::MalformedJson, 1)];
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let first = app
        .post_payment(&m.api_key, "k-attempts", &body("FI"))
        .await;
    crate::helpers::assert_problem(first, 502, "initiation_outcome_unknown").await;
    let uuid: Uuid = sqlx::query_scalar("SELECT id FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let id = uuid.to_string();
    let mut tx = app.pool.begin().await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::minutes(10);
    let attempt = payments::begin_attempt(&mut tx, uuid, &[7; 32], later, later)
        .await
        .unwrap();
    assert_eq!(attempt, Some(2));
    // Attempt 1's answers, arriving late, change nothing.
    assert!(
        !payments::is_current_attempt(&mut tx, uuid, 1)
            .await
            .unwrap()
    );
    assert!(
        !payments::record_initiated(
            &mut tx,
            uuid,
            1,
            "late-one",
            Some("https://bank/late"),
            &serde_json::json!({}),
            None,
            false,
        )
        .await
        .unwrap()
    );
    payments::record_attempt_unanswered(&mut tx, uuid, 1, "outcome_unknown", json!({}))
        .await
        .unwrap();
    let record = payments::get(&mut tx, uuid).await.unwrap().unwrap();
    assert_eq!(record.initiation, "pending");
    assert_eq!(record.bank_payment_id, None);
    // Attempt 2's does.
    assert!(
        payments::is_current_attempt(&mut tx, uuid, 2)
            .await
            .unwrap()
    );
    assert!(
        payments::record_initiated(
            &mut tx,
            uuid,
            2,
            "current-one",
            Some("https://bank/now"),
            &serde_json::json!({}),
            None,
            false,
        )
        .await
        .unwrap()
    );
    // A resume of a payment with a bank id is refused in SQL.
    assert_eq!(
        payments::begin_attempt(&mut tx, uuid, &[8; 32], later, later)
            .await
            .unwrap(),
        None
    );
    // Paid straight from awaiting: the merchant hears authorized, then paid.
    payments::transition(
        &mut tx,
        uuid,
        Change {
            evidence: Evidence::Bank(pisgate::domain::PaymentStatus::Paid),
            bank_status: Some("Paid"),
            kind: "status_changed",
            detail: json!({}),
            failure: None,
        },
    )
    .await
    .unwrap();
    // An older read arriving after that does not move the bank status backwards.
    let applied = payments::apply_bank_report(
        &mut tx,
        uuid,
        "Confirmed",
        Some(pisgate::domain::PaymentStatus::Authorized),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(applied, payments::Applied::Refused);
    tx.commit().await.unwrap();
    let kinds = ledger_kinds(&app, &id).await;
    assert!(kinds.contains(&"initiation_orphan".to_owned()), "{kinds:?}");
    assert_eq!(
        webhooks_of(&app, &id).await,
        ["payment.authorized", "payment.paid"]
    );
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(
        (p["status"].as_str(), p["bank_status"].as_str()),
        (Some("paid"), Some("Paid"))
    );
}

async fn bank_status_of(app: &TestApp, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT bank_status FROM payments WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Two reads of one payment race: the callback's, deliberately slow, read
/// PendingConfirmation; a newer read (the poller's, another replica's) recorded Confirmed while
/// it was on its way. The slow answer lands last and must not move the bank status back (nor
/// put a step back into the ledger).
#[tokio::test]
async fn a_slow_stale_bank_read_never_moves_the_bank_status_backwards() {
    let app = app_with(&[], false, |c| {
        c.confirm_delay = Duration::ZERO;
        c.paid_delay = Duration::from_secs(3600);
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, "FI").await;
    let action = reach_bank_page(&app, &url).await;
    let callback = press(&app, &action, "psu-stale", true).await;
    let bank_id = app.bank_payments_for(&id)[0].payment_id.clone();
    assert!(
        app.sandbox
            .force_status(&bank_id, Some(BankStatus::PendingConfirmation))
    );
    // The callback's status read is slow: the bank answers what it says now, 1.5 s later.
    app.sandbox.add_fault(rule(
        FaultTarget::Status,
        Fault::DelayAnswer { ms: 1500 },
        1,
    ));
    let back = tokio::spawn({
        let client = app.client.clone();
        async move { client.get(callback).send().await.unwrap().status() }
    });
    until("the slow read started", Duration::from_secs(5), || async {
        app.sandbox.faults().iter().all(|f| f.times == Some(0))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Meanwhile the bank confirms, and a newer read records it.
    assert!(
        app.sandbox
            .force_status(&bank_id, Some(BankStatus::Confirmed))
    );
    let mut tx = app.pool.begin().await.unwrap();
    pisgate::ledger::payments::apply_bank_report(
        &mut tx,
        id.parse().unwrap(),
        "Confirmed",
        Some(pisgate::domain::PaymentStatus::Authorized),
        json!({ "source": "test" }),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        bank_status_of(&app, &id).await.as_deref(),
        Some("Confirmed")
    );

    // The slow read lands.
    assert_eq!(back.await.unwrap(), 303);
    // (The callback answers once its read is applied, or after its redirect bound with the
    // read still running in the background: give that one time to land too.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        bank_status_of(&app, &id).await.as_deref(),
        Some("Confirmed")
    );
    let seen: Vec<String> = sqlx::query_scalar(
        "SELECT bank_status FROM payment_events WHERE payment_id = $1::uuid AND bank_status IS NOT NULL ORDER BY seq",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let confirmed = seen
        .iter()
        .position(|s| s == "Confirmed")
        .expect("Confirmed is in the ledger");
    assert!(
        seen[confirmed..].iter().all(|s| s == "Confirmed"),
        "the bank status went back: {seen:?}"
    );
    assert_eq!(status_of(&app, &id).await, "authorized");
}

/// A bank slower than a signing interval: a poller claims the new payment before its answer
/// is recorded (creation scheduled its first poll a signing interval on), finds no bank id
/// on an attempt still pending and puts it off by a late-signing interval (here a minute),
/// not to the horizon; the answer, recorded after, brings the first poll back to a signing
/// interval on, so the signed payment moves on at once.
#[tokio::test]
async fn an_answer_recorded_after_a_poller_looked_is_followed_at_once() {
    let app = app_with(
        &[("PISGATE__POLLER__LATE_SIGNING_INTERVAL", "60s")],
        true,
        |c| {
            c.faults = vec![rule(
                FaultTarget::Initiate,
                Fault::DelayAnswer { ms: 3000 },
                1,
            )];
        },
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let request = create_in_background(&app, &m, "k-slow-bank");
    // While the bank is still answering, a poller claims the payment and finds no bank id.
    until(
        "a poller to look at the new payment",
        Duration::from_millis(2500),
        || async { polls_of_the_only_payment(&app).await > 0 },
    )
    .await;
    let (initiation, wait) = schedule_of_the_only_payment(&app).await;
    assert_eq!(initiation, "pending", "the poller looked before the answer");
    assert!(
        (50.0..=60.0).contains(&wait),
        "a pending attempt is looked at again a late-signing interval on (not at the horizon, an hour away): {wait} s"
    );

    let answer = request.await.unwrap();
    assert_eq!(answer.status(), 201);
    let p: Value = answer.json().await.unwrap();
    let wait: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM next_poll_at - now())::float8 FROM payment_polls",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // A signing interval (200 ms) on, or a poller's lease (10 s) if one claimed it since.
    assert!(
        wait <= 10.0,
        "the recorded answer brings the first poll back from a minute away: {wait} s"
    );
    app.sign_at_bank(p["authorization_url"].as_str().unwrap(), "psu-1", true)
        .await;
    let id = p["id"].as_str().unwrap();
    until(
        "the signed payment to move on",
        Duration::from_secs(10),
        || async { status_of(&app, id).await != "awaiting_authorization" },
    )
    .await;
}

/// `POST /v1/payments` (a FI payment, with `idempotency_key`) on a task of its own, for a
/// test that acts while the request waits for the bank.
fn create_in_background(
    app: &TestApp,
    m: &TestMerchant,
    idempotency_key: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let request = app
        .client
        .post(app.url("/v1/payments"))
        .bearer_auth(&m.api_key)
        .header("idempotency-key", idempotency_key)
        .json(&body("FI"));
    tokio::spawn(async move { request.send().await.unwrap() })
}

/// The only payment's `initiation`, and the seconds until its next poll.
async fn schedule_of_the_only_payment(app: &TestApp) -> (String, f64) {
    sqlx::query_as(
        "SELECT p.initiation, EXTRACT(EPOCH FROM s.next_poll_at - now())::float8
           FROM payments p JOIN payment_polls s ON s.payment_id = p.id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// How many polls the only payment's schedule has seen.
async fn polls_of_the_only_payment(app: &TestApp) -> i32 {
    sqlx::query_scalar::<_, i32>("SELECT polls FROM payment_polls")
        .fetch_optional(&app.pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

/// A payment whose bank answer was lost (an unknown outcome) has nothing at any bank that a
/// poll could read: after its first look (a signing interval after creation) it waits for its
/// horizon or a retry with the same key, not polled every signing interval meanwhile.
#[tokio::test]
async fn an_unknown_outcome_is_not_polled_again_before_its_horizon() {
    let app = app_with(&[], true, |c| {
        c.faults = vec![rule(FaultTarget::Initiate, Fault::DropAfterProcessing, 1)];
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let first = app.post_payment(&m.api_key, "k-lost", &body("FI")).await;
    crate::helpers::assert_problem(first, 502, "initiation_outcome_unknown").await;
    until(
        "the first look at the payment",
        Duration::from_secs(3),
        || async { polls_of_the_only_payment(&app).await > 0 },
    )
    .await;
    // Signing interval 200 ms: polled on that schedule, it would be looked at about ten
    // more times in the next two seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(polls_of_the_only_payment(&app).await, 1);
    let (initiation, wait) = schedule_of_the_only_payment(&app).await;
    assert_eq!(initiation, "outcome_unknown");
    assert!(
        wait > 3500.0,
        "it waits for its horizon, an hour after creation: {wait} s"
    );
}

/// A retry of a request whose bank outcome is unknown, which today's rules refuse (the
/// merchant removed the return URL's origin in between), is not a validation error of a
/// new request (a 422 would say nothing was made): it is a 409 that names the rule and says
/// the payment exists and is followed; nothing new is made. The same retry after the origin
/// is back resumes the one payment.
#[tokio::test]
async fn a_retry_of_an_unknown_outcome_that_todays_rules_refuse_says_the_payment_exists() {
    let app = app_with(&[], false, |c| {
        c.faults = vec![rule(FaultTarget::Initiate, Fault::MalformedJson, 1)];
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let key = "order-1234-unresumable";
    let first = app.post_payment(&m.api_key, key, &body("FI")).await;
    crate::helpers::assert_problem(first, 502, "initiation_outcome_unknown").await;
    let origins = |list: Value| {
        let app = &app;
        let api_key = m.api_key.clone();
        async move {
            let r = app
                .client
                .patch(app.url("/v1/merchant"))
                .bearer_auth(api_key)
                .json(&json!({ "return_origins": list }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    origins(json!(["https://other-shop.example"])).await;
    let retry = app.post_payment(&m.api_key, key, &body("FI")).await;
    let problem = crate::helpers::assert_problem(retry, 409, "idempotency_key_unresumable").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("return_url"), "{detail}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    // A new key with the same body is a new request: today's 422.
    let fresh = app
        .post_payment(&m.api_key, "another-key", &body("FI"))
        .await;
    crate::helpers::assert_problem(fresh, 422, "validation_failed").await;

    origins(json!(["https://shop.example"])).await;
    let resumed = app.post_payment(&m.api_key, key, &body("FI")).await;
    assert_eq!(resumed.status(), 201);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "resumed, not made again");
}
