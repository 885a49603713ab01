//! The status poller and the token refresher, in process, against the real Postgres and the
//! Nordea sandbox simulator. Nobody asks for a status here: the workers find out.

use crate::helpers::{TestApp, spawn_app_full};
use crate::payments::body;
use pisgate::sandbox::{Fault, FaultRule, FaultTarget, Operation, RecordedRequest};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The poller on, with a schedule short enough for tests.
pub const FAST_POLLER: &[(&str, &str)] = &[
    ("PISGATE__POLLER__ENABLED", "true"),
    ("PISGATE__POLLER__SIGNING_INTERVAL", "200ms"),
    ("PISGATE__POLLER__AUTHORIZED_INTERVAL", "300ms"),
    ("PISGATE__POLLER__IDLE_WAIT", "1s"),
    ("PISGATE__POLLER__LEASE", "10s"),
    ("PISGATE__POLLER__MAX_BACKOFF", "1s"),
];

pub const FINAL: &[&str] = &[
    "paid",
    "rejected",
    "authorization_failed",
    "cancelled",
    "expired",
    "failed",
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut all = FAST_POLLER.to_vec();
    all.extend_from_slice(extra);
    all
}

/// Waits until every payment is final (merchant view), failing after `within`.
async fn wait_final(app: &TestApp, key: &str, ids: &[String], within: Duration) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let mut views = Vec::new();
        for id in ids {
            views.push(app.get_payment(key, id).await);
        }
        if views
            .iter()
            .all(|v| FINAL.contains(&v["status"].as_str().unwrap()))
        {
            return views;
        }
        assert!(
            started.elapsed() < within,
            "not final after {within:?}: {:?}",
            views
                .iter()
                .map(|v| (v["status"].clone(), v["bank_status"].clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn events(app: &TestApp, key: &str, id: &str) -> Vec<Value> {
    let r = app.get_as(&format!("/v1/payments/{id}/events"), key).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["data"].as_array().unwrap().clone()
}

/// The status changes of a payment's ledger, in order.
fn changes(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| {
            e["new_status"].is_string()
                && e["old_status"].is_string()
                && e["old_status"] != e["new_status"]
        })
        .map(|e| {
            (
                e["old_status"].as_str().unwrap_or("").to_owned(),
                e["new_status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn status_polls(app: &TestApp, bank_payment_id: &str) -> Vec<RecordedRequest> {
    app.sandbox
        .requests()
        .into_iter()
        .filter(|r| r.operation == Some(Operation::Status) && r.path.contains(bank_payment_id))
        .collect()
}

#[tokio::test]
async fn payments_end_paid_expired_or_failed_with_no_client_action() {
    let app = spawn_app_full(
        &with(&[
            ("PISGATE__PAYMENTS__SIGNING_WINDOW_SECS", "3"),
            ("PISGATE__PAYMENTS__LATE_SIGNING_HORIZON_SECS", "4"),
        ]),
        |c| c.paid_delay = Duration::from_millis(800),
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let approved = app.create_payment(&m.api_key, &body("FI")).await;
    let never = app.create_payment(&m.api_key, &body("SE")).await;
    let rejected = app.create_payment(&m.api_key, &body("DK")).await;
    // The shopper signs (or refuses) at the bank but never comes back to us: only the
    // poller can learn how these end.
    app.sign_at_bank(
        approved["authorization_url"].as_str().unwrap(),
        "psu-1",
        true,
    )
    .await;
    app.sign_at_bank(
        rejected["authorization_url"].as_str().unwrap(),
        "psu-2",
        false,
    )
    .await;

    let ids: Vec<String> = [&approved, &never, &rejected]
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    let views = wait_final(&app, &m.api_key, &ids, Duration::from_secs(20)).await;
    assert_eq!(views[0]["status"], "paid", "{}", views[0]);
    assert_eq!(views[0]["bank_status"], "Paid");
    assert_eq!(views[1]["status"], "expired", "{}", views[1]);
    assert_eq!(views[1]["failure"]["code"], "not_signed");
    assert_eq!(views[2]["status"], "authorization_failed", "{}", views[2]);
    assert_eq!(views[2]["bank_status"], "UserApprovalCancelled");

    let expected = [
        vec![
            ("awaiting_authorization", "authorized"),
            ("authorized", "paid"),
        ],
        vec![("awaiting_authorization", "expired")],
        vec![("awaiting_authorization", "authorization_failed")],
    ];
    for (id, want) in ids.iter().zip(expected) {
        let got = changes(&events(&app, &m.api_key, id).await);
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        assert_eq!(got, want, "each transition exactly once for {id}");
    }
    // Final payments are not polled any more.
    let polls_then = app.bank_calls(Operation::Status);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.bank_calls(Operation::Status), polls_then);
    // Nothing left on the poll schedule: final payments leave it.
    let followed: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_polls")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(followed, 0);
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");

    // Operators see the poller at work.
    let metrics = app.metrics().await;
    for series in [
        "pisgate_polls_total{outcome=\"changed\"}",
        "pisgate_polls_total{outcome=\"expired\"}",
        "pisgate_poll_queue_depth",
        "pisgate_poll_oldest_due_seconds",
        "pisgate_poll_lag_seconds",
    ] {
        assert!(metrics.contains(series), "{series} missing from /metrics");
    }
}

#[tokio::test]
async fn a_payment_not_yet_opened_is_not_a_failure_and_is_polled_on_schedule() {
    let app = spawn_app_full(FAST_POLLER, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let id = p["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let view = app.get_payment(&m.api_key, id).await;
    assert_eq!(view["status"], "awaiting_authorization");
    let bank_id = view["bank_payment_id"].as_str().unwrap();
    let polls = status_polls(&app, bank_id);
    // 404 every time (the link was never opened), at most one per signing interval.
    assert!(polls.len() >= 3, "polled: {}", polls.len());
    assert!(polls.iter().all(|r| r.status == Some(404)));
    for pair in polls.windows(2) {
        let gap = pair[1].received_at - pair[0].received_at;
        assert!(
            gap >= chrono::Duration::milliseconds(190),
            "polled again after {gap}"
        );
    }
    assert_eq!(changes(&events(&app, &m.api_key, id).await), vec![]);
}

#[tokio::test]
async fn a_rate_limited_poll_waits_for_retry_after() {
    let app = spawn_app_full(FAST_POLLER, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    app.sandbox.add_fault(
        FaultRule::always(
            FaultTarget::Status,
            Fault::Http429 {
                retry_after_secs: 5,
            },
        )
        .times(1),
    );
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let id = p["id"].as_str().unwrap().to_owned();
    app.sign_at_bank(p["authorization_url"].as_str().unwrap(), "psu-1", true)
        .await;
    let started = Instant::now();
    // Polled fast before and after, but nothing in the five seconds after the 429.
    loop {
        let view = app.get_payment(&m.api_key, &id).await;
        if view["status"] == "authorized" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bank_id = app.get_payment(&m.api_key, &id).await["bank_payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let polls = status_polls(&app, &bank_id);
    let limited = polls
        .iter()
        .position(|r| r.status == Some(429))
        .expect("the first poll was rate limited");
    let next = &polls[limited + 1];
    let gap = next.received_at - polls[limited].received_at;
    assert!(
        gap >= chrono::Duration::seconds(5),
        "polled again {gap} after a 429 with Retry-After: 5"
    );
}

#[tokio::test]
async fn with_thirty_percent_503s_every_payment_still_ends_final() {
    // One attempt per poll, so every 503 reaches the poller's own backoff.
    let app = spawn_app_full(&with(&[("PISGATE__NORDEA__READ_ATTEMPTS", "1")]), |c| {
        c.paid_delay = Duration::from_millis(500)
    })
    .await;
    let m = app.create_merchant("Shop").await;
    // From the start (status reads only: creation and signing are untouched), so that every
    // poll of every payment can meet a 503. Added after the creations, the fault could find
    // most payments already final on a slow box, and too few polls left to fire at all.
    let mut flaky = FaultRule::always(FaultTarget::Status, Fault::Http503);
    flaky.probability = 0.3;
    app.sandbox.add_fault(flaky);
    // And the first two reads for certain: with few reads (most payments end after one or
    // two), 30% alone sometimes fired none, and the test proved nothing that run.
    app.sandbox
        .add_fault(FaultRule::always(FaultTarget::Status, Fault::Http503).times(2));
    let mut ids = Vec::new();
    for i in 0..12 {
        let p = app.create_payment(&m.api_key, &body("FI")).await;
        app.sign_at_bank(
            p["authorization_url"].as_str().unwrap(),
            &format!("psu-{i}"),
            i % 4 != 0,
        )
        .await;
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    let views = wait_final(&app, &m.api_key, &ids, Duration::from_secs(40)).await;
    for (i, v) in views.iter().enumerate() {
        let want = if i % 4 != 0 {
            "paid"
        } else {
            "authorization_failed"
        };
        assert_eq!(v["status"], want, "{v}");
    }
    let failed_polls = app
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.operation == Some(Operation::Status) && r.status == Some(503))
        .count();
    assert!(failed_polls > 0, "the fault fired");
    for id in &ids {
        let got = changes(&events(&app, &m.api_key, id).await);
        let mut seen = HashMap::new();
        for c in &got {
            *seen.entry(c.clone()).or_insert(0) += 1;
        }
        assert!(seen.values().all(|n| *n == 1), "{got:?}");
    }
}

/// An app whose sandbox executes a standing order every `every`, with a signed standing order
/// of three occurrences (the shopper came back, so pisgate holds a token and can read the
/// order's progress): the app, the merchant and the payment's id.
async fn a_signed_standing_order(
    every: Duration,
) -> (TestApp, crate::helpers::TestMerchant, String) {
    let app = spawn_app_full(FAST_POLLER, |c| {
        c.paid_delay = Duration::from_millis(300);
        c.recurring_interval = every;
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let mut b = body("FI");
    b["recurring"] = json!({"count": 3, "recurrence_type": "EVERY_MINUTE_SANDBOX_ONLY"});
    let p = app.create_payment(&m.api_key, &b).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let r = app
        .sign(p["authorization_url"].as_str().unwrap(), "psu-1", true)
        .await;
    assert_eq!(r.status(), 303);
    (app, m, id)
}

/// Waits for the standing order `id` to end paid, all three occurrences executed.
async fn ends_paid_after_three(app: &TestApp, key: &str, id: &str) {
    let views = wait_final(app, key, &[id.to_owned()], Duration::from_secs(20)).await;
    assert_eq!(views[0]["status"], "paid", "{}", views[0]);
    assert_eq!(
        views[0]["recurring_progress"],
        json!({"executions": 3, "remaining_count": 0})
    );
}

#[tokio::test]
async fn a_standing_order_records_each_paid_occurrence_and_the_remaining_count() {
    let (app, m, id) = a_signed_standing_order(Duration::from_millis(700)).await;
    ends_paid_after_three(&app, &m.api_key, &id).await;
    let evs = events(&app, &m.api_key, &id).await;
    let occurrences: Vec<(i64, i64, i64)> = evs
        .iter()
        .filter(|e| e["kind"] == "occurrence_paid")
        .map(|e| {
            (
                e["detail"]["occurrence"].as_i64().unwrap(),
                e["detail"]["remaining_count"].as_i64().unwrap(),
                e["seq"].as_i64().unwrap(),
            )
        })
        .collect();
    let counts: Vec<(i64, i64)> = occurrences.iter().map(|o| (o.0, o.1)).collect();
    assert_eq!(counts, vec![(1, 2), (2, 1), (3, 0)]);
    // Each occurrence's webhook names its ledger event, so a merchant receiving them out of
    // order can order them (by `data.ledger_seq`), as every other payment event's.
    let hooks: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM webhook_events
         WHERE payment_id = $1 AND event_type = 'payment.occurrence_paid' ORDER BY created_at",
    )
    .bind(id.parse::<uuid::Uuid>().unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let hooked: Vec<(i64, i64, i64)> = hooks
        .iter()
        .map(|h| {
            let d = &h["data"];
            (
                d["occurrence"].as_i64().unwrap(),
                d["remaining_count"].as_i64().unwrap(),
                d["ledger_seq"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(hooked, occurrences);
    assert_eq!(
        changes(&evs),
        vec![
            ("awaiting_authorization".to_owned(), "authorized".to_owned()),
            ("authorized".to_owned(), "paid".to_owned())
        ]
    );
    // The progress was read from the bank's details while the order ran.
    assert!(app.bank_calls(Operation::Details) >= 1);
}

/// A standing order's count of executions set back in SQL while it runs (an insider) does not
/// notify its occurrences again: the poller follows the ledger's `occurrence_paid` events, so
/// each occurrence is recorded and sent once, and `ledger verify` names the row meanwhile.
/// Before, every occurrence up to the bank's count was recorded and notified again, under new
/// webhook ids.
#[tokio::test]
async fn a_standing_orders_count_set_back_in_sql_never_notifies_an_occurrence_twice() {
    let (app, m, id) = a_signed_standing_order(Duration::from_millis(1_500)).await;
    let uuid: uuid::Uuid = id.parse().unwrap();
    let executions = || async {
        sqlx::query_scalar::<_, i32>("SELECT recurring_executions FROM payments WHERE id = $1")
            .bind(uuid)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let started = Instant::now();
    while executions().await < 1 {
        assert!(started.elapsed() < Duration::from_secs(15), "no occurrence");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::binding::as_insider(
        &app,
        uuid,
        "UPDATE payments SET recurring_executions = 0, recurring_remaining = NULL WHERE id = $1",
    )
    .await;
    let report =
        pisgate::ledger::events::verify_payment(&app.pool, &crate::helpers::ledger_keys(), uuid)
            .await
            .unwrap();
    assert!(
        report.first_broken.as_ref().is_some_and(|b| matches!(
            b.reason,
            pisgate::ledger::events::BreakReason::OccurrencesMismatch { payment: 0, .. }
        )),
        "{report:?}"
    );
    ends_paid_after_three(&app, &m.api_key, &id).await;
    let occurrences: Vec<i64> = events(&app, &m.api_key, &id)
        .await
        .iter()
        .filter(|e| e["kind"] == "occurrence_paid")
        .map(|e| e["detail"]["occurrence"].as_i64().unwrap())
        .collect();
    assert_eq!(occurrences, [1, 2, 3]);
    let hooks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_events
         WHERE payment_id = $1 AND event_type = 'payment.occurrence_paid'",
    )
    .bind(uuid)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(hooks, 3);
}

/// An app whose token refresher runs every 200 ms, refreshing `refresh_before` ahead of
/// expiry, with the sandbox's access tokens living `lifetime_secs`.
async fn refreshing_app(refresh_before: &'static str, lifetime_secs: u64) -> TestApp {
    spawn_app_full(
        &[
            ("PISGATE__REFRESHER__ENABLED", "true"),
            ("PISGATE__REFRESHER__INTERVAL", "200ms"),
            ("PISGATE__REFRESHER__REFRESH_BEFORE", refresh_before),
        ],
        |c| c.access_token_lifetime = Duration::from_secs(lifetime_secs),
    )
    .await
}

/// Creates `payment` and has shopper `psu` sign it and come back (a code exchanged, a token
/// stored); its id.
async fn signed(
    app: &TestApp,
    m: &crate::helpers::TestMerchant,
    psu: &str,
    payment: Value,
) -> String {
    let p = app.create_payment(&m.api_key, &payment).await;
    let r = app
        .sign(p["authorization_url"].as_str().unwrap(), psu, true)
        .await;
    assert_eq!(r.status(), 303);
    p["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_token_about_to_expire_is_refreshed_while_its_shopper_has_payments_in_flight() {
    let app = refreshing_app("9s", 10).await;
    let m = app.create_merchant("Shop").await;
    let id = signed(&app, &m, "psu-1", body("FI")).await;
    // Tokens live 10 s here: within 9 s of expiry comes about a second after the exchange.
    let seq_at_exchange: i64 = sqlx::query_scalar("SELECT issue_seq FROM psu_tokens")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let seq: i64 = sqlx::query_scalar("SELECT issue_seq FROM psu_tokens")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if seq > seq_at_exchange {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never refreshed: {:?}",
            app.sandbox
                .requests()
                .iter()
                .filter(|r| r.operation == Some(Operation::Token))
                .map(|r| (r.status, r.body.len()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        app.bank_calls(Operation::Token) >= 2,
        "exchange, then refresh"
    );
    // The refreshed token works at the bank (the funds check needs the shopper's token),
    // and the one it replaced (single use) is gone from our store.
    let funds = app
        .get_as(&format!("/v1/payments/{id}/funds"), &m.api_key)
        .await;
    assert_eq!(funds.status(), 200, "{}", funds.text().await.unwrap());
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM psu_tokens WHERE status = 'live'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(live, 1);

    // Once the shopper has nothing in flight, the token is left alone.
    sqlx::query("UPDATE payments SET status = 'paid', finalized_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let calls = app.bank_calls(Operation::Token);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(app.bank_calls(Operation::Token), calls);
}

/// One shopper's token expiry set to `'-infinity'` in SQL: the refresher's read of the due
/// tokens made sqlx panic (a time chrono cannot hold), which stopped that replica's
/// refresher for every shopper (and each replica's in turn). Now it reads it clamped: both
/// shoppers' tokens are refreshed.
#[tokio::test]
async fn a_token_expiry_set_to_minus_infinity_stops_no_refresher() {
    let app = refreshing_app("9s", 10).await;
    let m = app.create_merchant("Shop").await;
    for shopper in ["shopper-1", "shopper-2"] {
        let payment = crate::payments::with(body("FI"), json!({ "psu_id": shopper }));
        signed(&app, &m, shopper, payment).await;
    }
    let seqs = || async {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT psu_key, issue_seq FROM psu_tokens ORDER BY psu_key")
                .fetch_all(&app.pool)
                .await
                .unwrap();
        rows
    };
    let at_exchange = seqs().await;
    assert_eq!(at_exchange.len(), 2, "{at_exchange:?}");
    sqlx::query("UPDATE psu_tokens SET access_expires_at = '-infinity' WHERE psu_key = $1")
        .bind(&at_exchange[0].0)
        .execute(&app.pool)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let now = seqs().await;
        if now.iter().zip(&at_exchange).all(|(n, e)| n.1 > e.1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not both refreshed: {at_exchange:?} then {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The database is unreachable (57P01, as a restarting primary answers) for the first three
/// tries to store a refreshed pair. The bank has already used up the old refresh token, so
/// the new pair is retried until it is stored: the shopper's token stays live and works.
/// Before, the pair was dropped, the next round refreshed with the used-up token, the bank
/// refused it, and the shopper's token was marked dead.
#[tokio::test]
async fn a_refreshed_pair_is_stored_through_a_database_outage() {
    let app = refreshing_app("9s", 10).await;
    let m = app.create_merchant("Shop").await;
    // The code exchange inserts the token; a refresh updates it: the first three updates fail.
    for sql in [
        "CREATE SEQUENCE test_store_tries",
        "CREATE FUNCTION test_unreachable() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('test_store_tries') <= 3 THEN
             RAISE EXCEPTION 'terminating connection due to administrator command'
               USING ERRCODE = '57P01';
           END IF;
           RETURN NEW;
         END $$",
        "CREATE TRIGGER test_unreachable BEFORE UPDATE ON psu_tokens
         FOR EACH ROW EXECUTE FUNCTION test_unreachable()",
    ] {
        sqlx::query(sql).execute(&app.pool).await.unwrap();
    }
    let id = signed(&app, &m, "psu-1", body("FI")).await;
    let seq_at_exchange: i64 = sqlx::query_scalar("SELECT issue_seq FROM psu_tokens")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let (seq, status): (i64, String) =
            sqlx::query_as("SELECT issue_seq, status FROM psu_tokens")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(status, "live", "the shopper's token was lost");
        if seq > seq_at_exchange {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tries: i64 = sqlx::query_scalar("SELECT last_value FROM test_store_tries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(tries >= 4, "the store failed three times first ({tries})");
    // The first refresh's pair is the one stored: the bank answered one refresh per stored
    // pair, and none was refused.
    let refused = app
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.operation == Some(Operation::Token) && r.status.is_some_and(|s| s >= 400))
        .count();
    assert_eq!(refused, 0, "a refresh token was used twice");
    let funds = app
        .get_as(&format!("/v1/payments/{id}/funds"), &m.api_key)
        .await;
    assert_eq!(funds.status(), 200, "{}", funds.text().await.unwrap());
}

/// The bank answers every refresh 503 for a while. Each failing token waits a backoff of
/// its own (1 s, then doubling), and a failure of the bank as a whole ends that round's calls
/// to it: three shoppers' due tokens make a handful of refresh calls in 3 s, one a round at
/// most, not one per token per round (15 a second here). Before, failing tokens stayed first in every round's
/// batch: 100 of them held back every other token. Once the bank is back, all three are
/// refreshed and their failure counts start again at 0.
#[tokio::test]
async fn refreshes_the_bank_fails_back_off_per_token_and_per_round() {
    let app = refreshing_app("1s", 600).await;
    let m = app.create_merchant("Shop").await;
    for psu in ["psu-1", "psu-2", "psu-3"] {
        let mut b = body("FI");
        b["psu_id"] = json!(psu);
        signed(&app, &m, psu, b).await;
    }
    app.sandbox
        .add_fault(FaultRule::always(FaultTarget::Token, Fault::Http503));
    // All three are due now.
    sqlx::query("UPDATE psu_tokens SET access_expires_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    let before = app.bank_calls(Operation::Token);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = app.bank_calls(Operation::Token) - before;
    // Rounds are at least 200 ms apart (the refresher sleeps its interval between them): a
    // round that stops calling a bank once it failed makes its calls that far apart, never
    // two in one round.
    let at: Vec<chrono::DateTime<chrono::Utc>> = app
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.operation == Some(Operation::Token))
        .skip(before)
        .map(|r| r.received_at)
        .collect();
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono::Duration::milliseconds(150),
            "two refresh calls in one round to a bank that had just failed: {at:?}"
        );
    }
    assert!(
        (3..=10).contains(&calls),
        "{calls} refresh calls in 3 s for 3 failing tokens"
    );
    let failures: Vec<i32> =
        sqlx::query_scalar("SELECT refresh_failures FROM psu_tokens ORDER BY psu_key")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(failures.iter().all(|f| *f >= 1), "{failures:?}");
    app.sandbox.clear_faults();
    let started = Instant::now();
    loop {
        let (fresh, reset): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE access_expires_at > now() + interval '1 minute'),
                    count(*) FILTER (WHERE refresh_failures = 0 AND refresh_not_before IS NULL)
             FROM psu_tokens WHERE status = 'live'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if fresh == 3 && reset == 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not all refreshed once the bank was back: {fresh} fresh, {reset} reset"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the sandbox has seen `calls` token calls (an exchange or a refresh under way
/// at the bank), then starts the replica's graceful stop, and returns a pool of the test's
/// own (the replica's closes as it stops) and `sql`'s i64 once it exceeds `above`, failing
/// with `lost` after 8 s.
async fn stop_during_token_call(
    app: &mut TestApp,
    calls: usize,
    sql: &str,
    above: i64,
    lost: &str,
) -> sqlx::PgPool {
    let started = Instant::now();
    while app.bank_calls(Operation::Token) < calls {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no token call began"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.begin_shutdown();
    let db = app.direct_pool().await;
    let started = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&db).await.unwrap();
        if n > above {
            return db;
        }
        assert!(started.elapsed() < Duration::from_secs(8), "{lost}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The replica stops while a token refresh is under way at the bank (which has used up the
/// shopper's refresh token by then), and the bank answers only after the shutdown drain
/// (1 s here) is over. The refresh still reaches its commit before the process lets go of
/// the database: the shopper's new pair is stored, not lost with the aborted worker.
#[tokio::test]
async fn a_refresh_under_way_at_shutdown_is_stored_before_the_replica_stops() {
    let mut app = spawn_app_full(
        &[
            ("PISGATE__REFRESHER__ENABLED", "true"),
            ("PISGATE__REFRESHER__INTERVAL", "200ms"),
            ("PISGATE__REFRESHER__REFRESH_BEFORE", "9s"),
            ("PISGATE__SERVER__SHUTDOWN_TIMEOUT_SECS", "1"),
        ],
        |c| c.access_token_lifetime = Duration::from_secs(10),
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    // The refresh's answer comes 3 s after the bank made the new pair.
    app.sandbox
        .add_fault(FaultRule::always(FaultTarget::Token, Fault::DelayAnswer { ms: 3000 }).times(2));
    let r = app
        .sign(p["authorization_url"].as_str().unwrap(), "psu-1", true)
        .await;
    assert_eq!(r.status(), 303);
    let seq_at_exchange: i64 = sqlx::query_scalar("SELECT issue_seq FROM psu_tokens")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let db = stop_during_token_call(
        &mut app,
        2,
        "SELECT issue_seq FROM psu_tokens",
        seq_at_exchange,
        "the refreshed pair was never stored: the shopper's token is lost",
    )
    .await;
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM psu_tokens WHERE status = 'live'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(live, 1);
}

/// The same for the shopper's return: the replica stops while the code exchange is at the
/// bank (the code is used up there), and the bank answers after the drain is over. The
/// request is cut, but the exchange reaches its commit: the shopper's token is stored.
#[tokio::test]
async fn a_code_exchange_under_way_at_shutdown_is_stored_before_the_replica_stops() {
    let mut app = spawn_app_full(&[("PISGATE__SERVER__SHUTDOWN_TIMEOUT_SECS", "1")], |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let callback = app
        .sign_at_bank(p["authorization_url"].as_str().unwrap(), "psu-1", true)
        .await;
    app.sandbox
        .add_fault(FaultRule::always(FaultTarget::Token, Fault::DelayAnswer { ms: 3000 }).times(1));
    let back = tokio::spawn(app.client.get(callback).send());
    let db = stop_during_token_call(
        &mut app,
        1,
        "SELECT count(*) FROM psu_tokens WHERE status = 'live'",
        0,
        "the exchanged token was never stored: the shopper's consent is lost",
    )
    .await;
    let exchanged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment_events WHERE kind = 'token_exchanged'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(exchanged, 1);
    back.abort();
}

#[tokio::test]
async fn an_answer_from_an_expired_claim_is_dropped_even_by_the_replica_that_claimed_again() {
    use pisgate::workers::{Pacer, WorkerContext, poller};
    let app = spawn_app_full(&[], |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    app.sign_at_bank(p["authorization_url"].as_str().unwrap(), "psu-1", true)
        .await;
    let ctx = WorkerContext::new(
        app.pool.clone(),
        std::sync::Arc::new(app.settings.clone()),
        std::sync::Arc::new(pisgate::app::banks(&app.settings).unwrap()),
        std::sync::Arc::new(pisgate::app::token_cipher(&app.settings).unwrap()),
    );
    let pacer = Pacer::new(100);
    let lease = Duration::from_secs(30);
    // Due now (a new payment's first poll is a signing interval away).
    sqlx::query("UPDATE payment_polls SET next_poll_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    let first = poller::claim(&app.pool, &ctx.owner, lease, 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // The first poll outlives its lease; the same replica claims the payment again.
    sqlx::query("UPDATE payment_polls SET next_poll_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let second = poller::claim(&app.pool, &ctx.owner, lease, 10)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(poller::poll(&ctx, &pacer, &first[0]).await, "lease_lost");
    assert_eq!(poller::poll(&ctx, &pacer, &second[0]).await, "changed");
    let id = p["id"].as_str().unwrap();
    assert_eq!(
        changes(&events(&app, &m.api_key, id).await),
        vec![("awaiting_authorization".to_owned(), "authorized".to_owned())]
    );
    let owner: Option<Option<String>> = sqlx::query_scalar("SELECT poll_owner FROM payment_polls")
        .fetch_optional(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        owner.flatten(),
        None,
        "the lease is handed back once recorded"
    );
}

#[tokio::test]
async fn a_poll_that_changes_nothing_rewrites_only_the_schedule_row() {
    let app = spawn_app_full(
        &[
            ("PISGATE__POLLER__ENABLED", "true"),
            ("PISGATE__POLLER__SIGNING_INTERVAL", "50ms"),
            ("PISGATE__POLLER__IDLE_WAIT", "100ms"),
        ],
        |_| {},
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let id: uuid::Uuid = p["id"].as_str().unwrap().parse().unwrap();
    let bank_id = p["bank_payment_id"].as_str().unwrap().to_owned();
    // The shopper opens the signing page (the bank now answers PendingUserApproval) and
    // stays there: every poll from now on finds nothing new.
    let page = crate::helpers::open_authorization(
        &reqwest::Client::new(),
        p["authorization_url"].as_str().unwrap(),
    )
    .await;
    assert_eq!(page.status(), 200);
    let version = || async {
        sqlx::query_as::<_, (String, chrono::DateTime<chrono::Utc>, i32)>(
            "SELECT p.xmin::text, p.updated_at, s.polls
             FROM payments p JOIN payment_polls s ON s.payment_id = p.id WHERE p.id = $1",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    // Wait for the first poll that sees the opened link (it records nothing new either,
    // but the hop's opening was written just before).
    let started = Instant::now();
    while status_polls(&app, &bank_id)
        .iter()
        .all(|r| r.status != Some(200))
    {
        assert!(started.elapsed() < Duration::from_secs(10), "never polled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (xmin, updated_at, polls) = version().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (xmin_after, updated_after, polls_after) = version().await;
    assert!(
        polls_after >= polls + 5,
        "polled {} times in a second",
        polls_after - polls
    );
    assert_eq!(
        (xmin_after, updated_after),
        (xmin, updated_at),
        "the payment row was rewritten by polls that changed nothing"
    );
}

/// A bank may answer a refresh with a new access token and no refresh token (it keeps the
/// one it had, RFC 6749 §6): the new access token is stored and the refresh token kept, so the
/// next refresh works too.
#[tokio::test]
async fn a_refresh_answer_without_a_refresh_token_keeps_the_previous_refresh_token_and_the_new_access_token()
 {
    let app = spawn_app_full(
        &[
            ("PISGATE__REFRESHER__ENABLED", "true"),
            ("PISGATE__REFRESHER__INTERVAL", "200ms"),
            ("PISGATE__REFRESHER__REFRESH_BEFORE", "9s"),
        ],
        |c| {
            c.access_token_lifetime = Duration::from_secs(10);
            c.refresh_keeps_refresh_token = true;
        },
    )
    .await;
    let m = app.create_merchant("Shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let r = app
        .sign(p["authorization_url"].as_str().unwrap(), "psu-keep", true)
        .await;
    assert_eq!(r.status(), 303);
    let cipher = pisgate::ledger::crypto::TokenCipher::from_base64(
        "k1",
        &secrecy::SecretString::from(crate::helpers::TOKEN_KEY),
    )
    .unwrap();
    let load = || async {
        let psu_key: String = sqlx::query_scalar("SELECT psu_key FROM psu_tokens")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        pisgate::ledger::tokens::load(&app.pool, &cipher, "nordea", &psu_key)
            .await
            .unwrap()
            .expect("a live token")
    };
    let first = load().await;
    let refresh_at_exchange = first.refresh_token.as_ref().expect("a refresh token");
    // The exchange and two refreshes answered: the second refresh can only have used the
    // refresh token kept by the first.
    let answered = || {
        app.sandbox
            .requests()
            .iter()
            .filter(|r| r.operation == Some(Operation::Token) && r.status == Some(200))
            .count()
    };
    let started = Instant::now();
    while answered() < 3 || load().await.issue_seq <= first.issue_seq {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not refreshed twice: {} answered, issue_seq {} -> {}",
            answered(),
            first.issue_seq,
            load().await.issue_seq
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    use secrecy::ExposeSecret as _;
    let now = load().await;
    assert_ne!(
        now.access_token.expose_secret(),
        first.access_token.expose_secret(),
        "the new access token is stored"
    );
    assert_eq!(
        now.refresh_token.as_ref().expect("kept").expose_secret(),
        refresh_at_exchange.expose_secret(),
        "the previous refresh token is kept"
    );
    // The new access token works at the bank (the funds check needs the shopper's token).
    // The refresher goes on refreshing about every second here, and the bank takes only the
    // newest token: a funds check that met a refresh midway is asked again (3 tries).
    let mut answers = Vec::new();
    for _ in 0..3 {
        let funds = app
            .get_as(&format!("/v1/payments/{id}/funds"), &m.api_key)
            .await;
        let status = funds.status().as_u16();
        answers.push((status, funds.text().await.unwrap()));
        if status == 200 {
            break;
        }
    }
    assert_eq!(answers.last().map(|a| a.0), Some(200), "{answers:?}");
}

/// `pisgate_poll_frozen_schedules` as /metrics shows it.
fn frozen_gauge(metrics: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with("pisgate_poll_frozen_schedules "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// An insider freezes a payment's poll schedule and pushes its late-signing horizon out
/// further still, so that the row itself no longer says the schedule lies beyond anything
/// pisgate writes: one payment by decades (next poll in 50 years, horizon in 100), another
/// to `'infinity'` (both). The frozen-schedule gauge reads the horizon the ledger recorded,
/// not the row's, and counts both; `ledger verify` names both rewritten horizons (the
/// console's check of one payment too); and the poller, which reads those times, keeps
/// polling every other payment. Before, the gauge stayed at 0 and verify passed (and,
/// reading `'infinity'`, the poller and verify panicked): the payments would sit open for
/// ever.
#[tokio::test]
async fn a_frozen_schedule_is_counted_and_named_when_the_horizon_is_pushed_out_with_it() {
    use pisgate::ledger::events::BreakReason;
    let app = spawn_app_full(FAST_POLLER, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let id_of = |p: &Value| -> uuid::Uuid { p["id"].as_str().unwrap().parse().unwrap() };
    let decades = id_of(&app.create_payment(&m.api_key, &body("FI")).await);
    let infinite = id_of(&app.create_payment(&m.api_key, &body("FI")).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(frozen_gauge(&app.metrics().await), Some(0.0));
    crate::helpers::assert_ledger_verifies(&app.pool).await;

    for (id, schedule, horizon) in [
        (
            decades,
            "now() + interval '50 years'",
            "now() + interval '100 years'",
        ),
        (infinite, "'infinity'", "'infinity'"),
    ] {
        for edit in [
            format!("UPDATE payment_polls SET next_poll_at = {schedule} WHERE payment_id = $1"),
            format!("UPDATE payments SET sign_horizon_at = {horizon} WHERE id = $1"),
        ] {
            sqlx::query(&edit)
                .bind(id)
                .execute(&app.pool)
                .await
                .unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while frozen_gauge(&app.metrics().await) != Some(2.0) {
        assert!(
            Instant::now() < deadline,
            "the frozen schedules behind pushed-out horizons were not both counted: {:?}",
            frozen_gauge(&app.metrics().await)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The poller lives on: a payment made now is polled.
    let other = app.create_payment(&m.api_key, &body("FI")).await;
    let other_bank_id = other["bank_payment_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_polls(&app, &other_bank_id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the poller stopped after reading a schedule of 'infinity'"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert_eq!(report.broken_payments, 2, "{report:?}");
    for (id, row_year) in [(decades, "21"), (infinite, "9999-12-31")] {
        let one =
            pisgate::ledger::events::verify_payment(&app.pool, &crate::helpers::ledger_keys(), id)
                .await
                .unwrap();
        let broken = one
            .first_broken
            .clone()
            .expect("a pushed-out horizon went unnoticed");
        assert!(
            matches!(
                &broken.reason,
                BreakReason::HorizonMismatch { payment: Some(p), ledger }
                    if p.starts_with(row_year) && ledger.starts_with("20")
            ),
            "{broken}"
        );
        assert!(
            broken.to_string().contains("late-signing horizon"),
            "{broken}"
        );
    }
    // The same count under a parallel plan, which PostgreSQL picks on a large table: the
    // ledger's horizon is read by a function with an EXCEPTION block, which a parallel plan
    // may not run (marked parallel safe, the count failed and the gauge stayed at 0).
    let direct = app.settings.database.direct_url.as_ref();
    let url = secrecy::ExposeSecret::expose_secret(direct.unwrap_or(&app.settings.database.url));
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let parallel = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.options([("force_parallel_mode", "on")]))
        .await
        .unwrap();
    let counted = pisgate::ledger::polls::frozen_count(
        &pisgate::ledger::Db::direct(parallel),
        pisgate::workers::poller::longest_gap(&app.settings),
    )
    .await;
    assert_eq!(
        counted.ok(),
        Some(2),
        "the frozen-schedule count under a parallel plan"
    );
}

/// The poll schedule edited out of the pollers' reach: a payment pushed far beyond any
/// interval pisgate sets is counted (`pisgate_poll_frozen_schedules`, alert
/// `PisgatePollScheduleFrozen`) and never polled; one whose schedule was deleted is named by
/// `ledger verify`. Both would otherwise sit open for ever, and the merchant never hear.
#[tokio::test]
async fn a_payment_whose_poll_schedule_was_frozen_or_deleted_is_counted_and_named() {
    let app = spawn_app_full(FAST_POLLER, |_| {}).await;
    let m = app.create_merchant("Shop").await;
    let frozen = app.create_payment(&m.api_key, &body("FI")).await;
    let frozen_id = frozen["id"].as_str().unwrap().to_owned();
    let deleted = app.create_payment(&m.api_key, &body("FI")).await;
    let deleted_id: uuid::Uuid = deleted["id"].as_str().unwrap().parse().unwrap();
    // Normal schedules are within reach.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(frozen_gauge(&app.metrics().await), Some(0.0));

    // An insider pushes one payment's next poll to the far future.
    sqlx::query(
        "UPDATE payment_polls SET next_poll_at = now() + interval '30 days'
         WHERE payment_id = $1::uuid",
    )
    .bind(&frozen_id)
    .execute(&app.pool)
    .await
    .unwrap();
    let bank_id = frozen["bank_payment_id"].as_str().unwrap().to_owned();
    let polls_then = status_polls(&app, &bank_id).len();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if frozen_gauge(&app.metrics().await) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the frozen schedule was never counted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        status_polls(&app, &bank_id).len(),
        polls_then,
        "a frozen payment is not polled"
    );

    // Another's schedule is deleted: `ledger verify` names it, the chains being intact.
    sqlx::query("DELETE FROM payment_polls WHERE payment_id = $1")
        .bind(deleted_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    let broken = report
        .first_broken
        .clone()
        .expect("the deleted schedule went unnoticed");
    assert_eq!(broken.payment_id, deleted_id, "{report:?}");
    assert_eq!(report.broken_payments, 1, "{report:?}");
    assert!(
        broken.to_string().contains("poll schedule is gone"),
        "{broken}"
    );
}

/// Every time of a payment row set in SQL to what chrono cannot hold (`'infinity'`,
/// `'-infinity'`), as an insider with write access could: before, sqlx panicked on reading
/// the payment, so the API answered it with a 500 (one payment, and the merchant's whole
/// list with it), the operator console's search and page failed the same way, and its poll
/// died before recording the bank's answer, so the payment never ended. Now they read those
/// times clamped (`select_payment!`, the console's search): the payment is served, listed
/// and shown, and the bank's `Paid`, which comes after the edit, is recorded.
#[tokio::test]
async fn a_payment_whose_times_are_set_to_infinity_in_sql_is_served_listed_and_polled_to_paid() {
    let app = spawn_app_full(FAST_POLLER, |c| c.paid_delay = Duration::from_millis(1500)).await;
    let m = app.create_merchant("Shop").await;
    let signed = app.create_payment(&m.api_key, &body("FI")).await;
    let cancelled = app.create_payment(&m.api_key, &body("FI")).await;
    let id = signed["id"].as_str().unwrap().to_owned();
    let other = cancelled["id"].as_str().unwrap().to_owned();
    // Signed at the bank, never back at pisgate: only the poller can learn it was paid, and
    // the bank pays it after the edit below.
    app.sign_at_bank(signed["authorization_url"].as_str().unwrap(), "psu-1", true)
        .await;

    let times = "created_at = '-infinity', updated_at = 'infinity',
                 state_expires_at = 'infinity', state_used_at = '-infinity',
                 expires_at = 'infinity', sign_horizon_at = 'infinity',
                 hop_opened_at = '-infinity', callback_claimed_until = '-infinity',
                 initiation_lease_until = '-infinity'";
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE payments DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    // Before the bank pays it: the `paid` that ends the test is recorded after the edit.
    let (status, seq_at_edit): (String, i32) = sqlx::query_as(&format!(
        "UPDATE payments SET {times} WHERE id = '{id}' RETURNING status, ledger_seq"
    ))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_ne!(status, "paid", "the bank paid before the edit");
    for statement in [
        format!(
            "UPDATE payments SET {times}, cancel_requested_at = 'infinity' WHERE id = '{other}'"
        ),
        "ALTER TABLE payments ENABLE TRIGGER USER".to_owned(),
    ] {
        sqlx::query(&statement).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    for pid in [&id, &other] {
        let r = app.get_as(&format!("/v1/payments/{pid}"), &m.api_key).await;
        assert_eq!(r.status(), 200, "GET of a payment with 'infinity' times");
        let view: Value = r.json().await.unwrap();
        assert!(
            view["created_at"]
                .as_str()
                .unwrap()
                .starts_with("1970-01-01"),
            "{view}"
        );
    }
    let r = app.get_as("/v1/payments?limit=10", &m.api_key).await;
    assert_eq!(
        r.status(),
        200,
        "the merchant's list with such a payment in it"
    );
    let listed: Value = r.json().await.unwrap();
    let listed: Vec<&str> = listed["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&id.as_str()) && listed.contains(&other.as_str()),
        "{listed:?}"
    );
    // Page by page: both payments once each, and the pages end (the cursor carries the
    // clamped time; compared with it, the same page came back for ever).
    let mut paged = Vec::new();
    let mut path = "/v1/payments?limit=1".to_owned();
    for _ in 0..4 {
        let page: Value = app.get_as(&path, &m.api_key).await.json().await.unwrap();
        for p in page["data"].as_array().unwrap() {
            paged.push(p["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/payments?limit=1&cursor={c}"),
            None => break,
        }
    }
    let mut want = vec![id.clone(), other.clone()];
    want.sort();
    want.reverse();
    assert_eq!(
        paged, want,
        "one page each, newest id first (both made '-infinity')"
    );
    // The operator console's search and payment page read the same row.
    use crate::console::{EMAIL, PASSWORD, create_operator, get, session_cookie};
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let cookie = session_cookie(&app).await;
    let (status, html) = get(&app, "/console/payments", &cookie).await;
    assert_eq!(status, 200, "the console's search: {html}");
    assert!(html.contains(&id) && html.contains(&other), "{html}");
    for pid in [&id, &other] {
        let (status, html) = get(&app, &format!("/console/payments/{pid}"), &cookie).await;
        assert_eq!(status, 200, "the console's payment page: {html}");
    }

    let views = wait_final(
        &app,
        &m.api_key,
        std::slice::from_ref(&id),
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(views[0]["status"], "paid", "{}", views[0]);
    let paid_at_seq: i32 = sqlx::query_scalar(
        "SELECT seq FROM payment_events WHERE payment_id = $1::uuid AND new_status = 'paid'",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        paid_at_seq > seq_at_edit,
        "the poll recorded the bank's Paid after the edit ({paid_at_seq} > {seq_at_edit})"
    );
}
