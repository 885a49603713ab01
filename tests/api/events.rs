//! `GET /v1/events`: every event that is or would be sent as a webhook, with the webhooks'
//! own ids and bodies, newest first, filtered and cursor-paginated; never another merchant's.

use crate::helpers::{assert_problem, error_fields, spawn_app};
use crate::webhooks::{
    Plan, Receiver, authorized_payment, create_endpoint, eventually, get_json,
    spawn_dispatching_app, transition,
};
use pisgate::domain::PaymentStatus;
use serde_json::Value;

fn data(page: &Value) -> Vec<Value> {
    page["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_paid_payments_events_are_listed_newest_first_with_the_webhooks_ids_and_bodies() {
    let app = spawn_dispatching_app("200ms,400ms").await;
    let m = app.create_merchant("Shop").await;
    let receiver = Receiver::start(Plan::Ok).await;
    create_endpoint(&app, &m.api_key, &receiver, &[]).await;
    let payment = authorized_payment(&app, &m.api_key).await;
    transition(&app, &payment, PaymentStatus::Paid, "Paid").await;
    let authorized = eventually("payment.authorized delivered", || async {
        receiver.accepted("payment.authorized")
    })
    .await;
    let paid = eventually("payment.paid delivered", || async {
        receiver.accepted("payment.paid")
    })
    .await;

    let page = get_json(
        &app,
        &format!("/v1/events?payment_id={payment}"),
        &m.api_key,
    )
    .await;
    let events = data(&page);
    assert_eq!(page["has_more"], false);
    assert!(page["next_cursor"].is_null(), "{page}");
    // Newest first, and each one is exactly what the receiver got.
    assert_eq!(events, vec![paid.body.clone(), authorized.body.clone()]);
    assert_eq!(events[0]["id"], paid.webhook_id.as_str());
    assert_eq!(events[0]["type"], "payment.paid");
    assert_eq!(events[0]["data"]["id"], payment.as_str());
    assert_eq!(events[1]["id"], authorized.webhook_id.as_str());
    assert_eq!(events[1]["data"]["status"], "authorized");

    // One by one, with the same body.
    for received in [&paid, &authorized] {
        let one = get_json(
            &app,
            &format!("/v1/events/{}", received.webhook_id),
            &m.api_key,
        )
        .await;
        assert_eq!(one, received.body);
    }

    // By type.
    let only_paid = data(&get_json(&app, "/v1/events?type=payment.paid", &m.api_key).await);
    assert_eq!(only_paid, vec![paid.body.clone()]);

    // Page by page with the cursor; an empty cursor is the first page.
    let first = get_json(&app, "/v1/events?limit=1", &m.api_key).await;
    assert_eq!(first["has_more"], true);
    assert_eq!(data(&first), vec![paid.body.clone()]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = get_json(
        &app,
        &format!("/v1/events?limit=1&cursor={cursor}"),
        &m.api_key,
    )
    .await;
    assert_eq!(data(&second), vec![authorized.body.clone()]);
    assert_eq!(second["has_more"], false);
    let again = get_json(&app, "/v1/events?limit=1&cursor=", &m.api_key).await;
    assert_eq!(data(&again), data(&first));
}

#[tokio::test]
async fn events_are_kept_without_any_endpoint_and_another_merchant_never_sees_them() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let other = app.create_merchant("Other").await;
    let payment = authorized_payment(&app, &m.api_key).await;
    transition(&app, &payment, PaymentStatus::Paid, "Paid").await;

    let events = data(&get_json(&app, "/v1/events", &m.api_key).await);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["payment.paid", "payment.authorized"]);
    let id = events[0]["id"].as_str().unwrap();
    assert!(id.starts_with("evt_"), "{id}");

    // Time filters use the names of GET /v1/payments.
    let at = events[0]["timestamp"].as_str().unwrap().replace('+', "%2B");
    let since = data(&get_json(&app, &format!("/v1/events?created_gte={at}"), &m.api_key).await);
    assert_eq!(
        since.len(),
        1 + usize::from(events[1]["timestamp"] == events[0]["timestamp"])
    );
    let before = data(&get_json(&app, &format!("/v1/events?created_lt={at}"), &m.api_key).await);
    assert!(
        before.iter().all(|e| e["type"] == "payment.authorized"),
        "{before:?}"
    );

    // Kept well past 30 days: nothing ages an event out of the list or the lookup.
    sqlx::query(
        "UPDATE webhook_events SET created_at = created_at - interval '400 days' WHERE payment_id = $1",
    )
    .bind(payment.parse::<uuid::Uuid>().unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    let old = data(
        &get_json(
            &app,
            &format!("/v1/events?payment_id={payment}"),
            &m.api_key,
        )
        .await,
    );
    assert_eq!(old, events);
    assert_eq!(
        get_json(&app, &format!("/v1/events/{id}"), &m.api_key).await,
        events[0]
    );

    assert!(data(&get_json(&app, "/v1/events", &other.api_key).await).is_empty());
    let theirs = format!("/v1/events?payment_id={payment}");
    assert!(data(&get_json(&app, &theirs, &other.api_key).await).is_empty());
    assert_problem(
        app.get_as(&format!("/v1/events/{id}"), &other.api_key)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get_as("/v1/events/evt_nope", &m.api_key).await,
        404,
        "not_found",
    )
    .await;

    let bad = assert_problem(
        app.get_as(
            "/v1/events?type=charge.succeeded&limit=0&cursor=zz",
            &m.api_key,
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&bad), ["limit", "cursor", "type"]);
    let r = app
        .get_as("/v1/events?payment_id=not-a-uuid", &m.api_key)
        .await;
    assert_problem(r, 422, "validation_failed").await;
}

/// serde's parse of `DateTime` took any signed year chrono holds, and PostgreSQL refused
/// the far ones (22008): a 500. The time filters are read as `GET /v1/payments` reads them,
/// and refused with the same error.
#[tokio::test]
async fn a_time_filter_that_is_not_a_plain_rfc_3339_date_time_is_a_422_as_for_payments() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    for (query, field) in [
        ("created_gte=-5000-01-01T00:00:00Z", "created_gte"),
        ("created_lt=-5000-01-01T00:00:00Z", "created_lt"),
        ("created_gte=%2B262142-01-01T00:00:00Z", "created_gte"),
        ("created_lt=%2B10000-01-01T00:00:00Z", "created_lt"),
        ("created_gte=yesterday", "created_gte"),
    ] {
        let events = assert_problem(
            app.get_as(&format!("/v1/events?{query}"), &m.api_key).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(error_fields(&events), [field], "{query}");
        assert_eq!(events["errors"][0]["code"], "invalid_type", "{query}");
        let payments = assert_problem(
            app.get_as(&format!("/v1/payments?{query}"), &m.api_key)
                .await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(events["errors"], payments["errors"], "{query}");
    }
    let page = get_json(
        &app,
        "/v1/events?created_gte=2000-01-01T00:00:00Z&created_lt=9999-12-31T23:59:59%2B01:00",
        &m.api_key,
    )
    .await;
    assert!(data(&page).is_empty(), "{page}");
}

/// `n` levels of arrays around a number: `[[…[1.5]…]]`.
fn nested(n: usize) -> Value {
    let mut v = serde_json::json!(1.5);
    for _ in 0..n {
        v = Value::Array(vec![v]);
    }
    v
}

/// Metadata nested past 16 levels is refused as `metadata` / `too_deep` and nothing is
/// written. Before, 125 levels were accepted: the webhook payload wrapping the payment under
/// `data` was then too deep to read back (sqlx and serde_json stop at 128), so
/// `GET /v1/events` answered 500 and the dispatcher's batch with that event failed for every
/// merchant in it. At the limit, the payment's events are written, read and listed.
#[tokio::test]
async fn metadata_nested_too_deep_is_refused_naming_the_field_and_the_limit_is_listed_in_events() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    // 124 levels still parse and are refused by metadata's own limit; 126 and 300 exceed what
    // the JSON parser reads (128 levels with the body and metadata), and are named the same
    // way, not answered `malformed_json` with no field.
    for levels in [16, 124, 126, 300] {
        let mut body = crate::payments::body("FI");
        body["metadata"] = serde_json::json!({ "a": nested(levels) });
        let r = app
            .post_payment(&m.api_key, &uuid::Uuid::new_v4().to_string(), &body)
            .await;
        let problem = assert_problem(r, 422, "validation_failed").await;
        assert_eq!(error_fields(&problem), ["metadata"], "{problem}");
        assert_eq!(problem["errors"][0]["code"], "too_deep", "{problem}");
    }
    let none = get_json(&app, "/v1/payments", &m.api_key).await;
    assert!(data(&none).is_empty(), "nothing written: {none}");

    let mut body = crate::payments::body("FI");
    body["metadata"] = serde_json::json!({ "a": nested(15) });
    let p = app.create_payment(&m.api_key, &body).await;
    assert_eq!(p["metadata"], body["metadata"]);
    let id = p["id"].as_str().unwrap();
    let r = crate::truth::cancel(&app, &m.api_key, id).await;
    assert!(r.status().is_success(), "{}", r.status());
    let events = get_json(&app, &format!("/v1/events?payment_id={id}"), &m.api_key).await;
    let events = data(&events);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "payment.cancelled");
    assert_eq!(events[0]["data"]["metadata"], body["metadata"]);
}

/// A query parameter given twice is named with code `duplicate`, on every listing as on
/// `GET /v1/payments`. Before, the events, endpoints and deliveries listings named the field
/// `query` and the parameter only in the message.
#[tokio::test]
async fn a_query_parameter_given_twice_is_named() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    for path in [
        "/v1/events?limit=5&limit=6",
        "/v1/webhook-endpoints?limit=5&limit=6",
        "/v1/payments?limit=5&limit=6",
    ] {
        let problem =
            assert_problem(app.get_as(path, &m.api_key).await, 422, "validation_failed").await;
        assert_eq!(error_fields(&problem), ["limit"], "{path}: {problem}");
        assert_eq!(
            problem["errors"][0]["code"], "duplicate",
            "{path}: {problem}"
        );
    }
}
