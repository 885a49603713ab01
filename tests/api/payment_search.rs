//! Searching a merchant's payments: each filter of `GET /v1/payments` returns exactly the
//! matching payments (never another merchant's), and each is served by an index on a table
//! of realistic size. Also the strictness fixes from fuzzing: an empty cursor starts from
//! the beginning, and `null` for a field that cannot be null is a 422 naming it.

use crate::helpers::{TestApp, assert_problem, error_fields, spawn_app};
use crate::payments::{assert_refused, body, with};
use crate::webhooks::get_json;
use pisgate::ledger::payments::{ListFilter, search_query};
use serde_json::{Value, json};

async fn ids(app: &TestApp, key: &str, query: &str) -> Vec<String> {
    get_json(app, &format!("/v1/payments?{query}"), key).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_search_filter_returns_exactly_the_matching_payments() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let other = app.create_merchant("Other").await;
    let mut made = Vec::new();
    for (country, changes) in [
        (
            "FI",
            json!({ "amount": "10.50", "reference": "order-1", "psu_id": "shopper-1",
                    "metadata": { "order_id": "o-1", "channel": "web" } }),
        ),
        (
            "FI",
            json!({ "amount": "99.99", "reference": "order-2", "psu_id": "shopper-2",
                    "metadata": { "order_id": "o-2", "channel": "app" } }),
        ),
        (
            "SE",
            json!({ "amount": "10.5", "reference": "order-3", "psu_id": "shopper-1",
                    "metadata": { "order_id": "o-3", "channel": "web", "n": 5 } }),
        ),
    ] {
        let p = app
            .create_payment(&m.api_key, &with(body(country), changes))
            .await;
        made.push(p["id"].as_str().unwrap().to_owned());
    }
    // Another merchant's twin of the first is never found.
    let twin = with(
        body("FI"),
        json!({ "reference": "order-1", "psu_id": "shopper-1", "metadata": { "order_id": "o-1", "channel": "web" } }),
    );
    app.create_payment(&other.api_key, &twin).await;
    let [p1, p2, p3] = [made[0].as_str(), made[1].as_str(), made[2].as_str()];

    for (query, expected) in [
        ("reference=order-1", vec![p1]),
        ("psu_id=shopper-1", vec![p3, p1]),
        ("metadata%5Bchannel%5D=web", vec![p3, p1]),
        ("metadata[channel]=web&metadata[order_id]=o-3", vec![p3]),
        ("metadata[n]=5", vec![]),
        ("metadata[channel]=pos", vec![]),
        ("amount_gte=50", vec![p2]),
        ("amount_lte=10.50", vec![p3, p1]),
        ("amount_gte=10.5&amount_lte=10.5&currency=SEK", vec![p3]),
        ("currency=EUR", vec![p2, p1]),
        ("currency=NOK", vec![]),
        ("reference=order-1&psu_id=shopper-2", vec![]),
        ("cursor=&limit=100", vec![p3, p2, p1]),
    ] {
        let expected: Vec<&str> = expected;
        assert_eq!(ids(&app, &m.api_key, query).await, expected, "{query}");
    }

    let r = app
        .get_as(
            "/v1/payments?amount_gte=10.505&currency=USD&colour=red",
            &m.api_key,
        )
        .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["colour", "currency", "amount_gte"]);
}

#[tokio::test]
async fn null_for_a_field_that_cannot_be_null_is_a_422_naming_it() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    for field in [
        "reference",
        "psu_id",
        "metadata",
        "debtor",
        "execution_date",
    ] {
        let null = with(body("FI"), json!({ field: null }));
        assert_refused(&app, &m.api_key, &null, field, "not_nullable").await;
    }
}

/// Every `Index Name` and `Node Type` in an EXPLAIN (FORMAT JSON) plan.
fn plan_nodes(plan: &Value, indexes: &mut Vec<String>, nodes: &mut Vec<String>) {
    match plan {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("Index Name", Value::String(s)) => indexes.push(s.clone()),
                    ("Node Type", Value::String(s)) => nodes.push(s.clone()),
                    _ => plan_nodes(v, indexes, nodes),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| plan_nodes(v, indexes, nodes)),
        _ => {}
    }
}

#[tokio::test]
async fn every_search_filter_is_served_by_an_index() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let other = app.create_merchant("Other").await;
    app.create_payment(&m.api_key, &body("FI")).await;
    // 60,000 payments, half of them another merchant's, copied from a real one with the
    // searched columns varied: unique references and order ids, 3,000 shoppers, amounts
    // spread over 0.01 to 10,000.00, four currencies, one a second apart.
    sqlx::query(
        "INSERT INTO payments
         SELECT (jsonb_populate_record(p, jsonb_build_object(
                    'id', gen_random_uuid(),
                    'merchant_id', CASE WHEN g % 2 = 0 THEN $1 ELSE $2 END,
                    'merchant_reference', 'order-' || g,
                    'psu_id', 'shopper-' || (g % 3000),
                    'metadata', jsonb_build_object('order_id', 'o-' || g,
                                                   'channel', (ARRAY['web', 'app', 'pos'])[g % 3 + 1]),
                    'amount_minor', 1 + (g * 7919) % 1000000,
                    'currency', (ARRAY['EUR', 'DKK', 'SEK', 'NOK'])[g % 4 + 1],
                    'created_at', now() - g * interval '1 second',
                    'state_hash', NULL,
                    'bank_payment_id', NULL))).*
         FROM payments p, generate_series(1, 60000) g",
    )
    .bind(m.id)
    .bind(other.id)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE payments")
        .execute(&app.pool)
        .await
        .unwrap();

    let cases = [
        (
            ListFilter {
                reference: Some("order-5000".into()),
                ..Default::default()
            },
            "payments_merchant_reference_created",
        ),
        (
            ListFilter {
                psu_id: Some("shopper-17".into()),
                ..Default::default()
            },
            "payments_merchant_psu_created",
        ),
        (
            ListFilter {
                metadata: vec![("order_id".into(), "o-5000".into())],
                ..Default::default()
            },
            "payments_metadata",
        ),
        (
            ListFilter {
                amount_gte: Some(100_000),
                amount_lte: Some(101_000),
                ..Default::default()
            },
            "payments_merchant_amount",
        ),
        (
            ListFilter {
                currency: Some("SEK".into()),
                ..Default::default()
            },
            // The list's own index, which carries the currency (and the status) and filters
            // on it while reading newest first.
            "payments_merchant_created",
        ),
        (
            ListFilter {
                status: Some("awaiting_authorization".into()),
                ..Default::default()
            },
            "payments_merchant_created",
        ),
        (
            ListFilter {
                status: Some("awaiting_authorization".into()),
                currency: Some("SEK".into()),
                ..Default::default()
            },
            "payments_merchant_created",
        ),
        // A status a merchant has few of: its own (partial) index.
        (
            ListFilter {
                status: Some("failed".into()),
                ..Default::default()
            },
            "payments_merchant_status_created",
        ),
        (ListFilter::default(), "payments_merchant_created"),
    ];
    for (filter, index) in cases {
        // The statement the API runs, for the first page.
        let plan: Value = search_query("EXPLAIN (FORMAT JSON)", m.id, &filter, 21)
            .build_query_scalar()
            .fetch_one(&app.pool)
            .await
            .unwrap();
        let (mut indexes, mut nodes) = (Vec::new(), Vec::new());
        plan_nodes(&plan, &mut indexes, &mut nodes);
        assert!(
            indexes.iter().any(|i| i == index),
            "{filter:?} does not use {index}: {plan}"
        );
        assert!(
            !nodes.iter().any(|n| n == "Seq Scan"),
            "{filter:?} scans the table: {plan}"
        );
    }
}

/// PostgreSQL refuses NUL in text (22021) and `\u0000` in jsonb (22P05): a filter holding
/// one was a 500. Each is now a 422 naming the parameter; a reference or PSU id cannot hold
/// any control character (creation refuses them), metadata only NUL (it may hold the rest).
#[tokio::test]
async fn a_nul_in_a_search_filter_is_a_422_naming_the_parameter() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let p = app
        .create_payment(
            &m.api_key,
            &with(body("FI"), json!({ "metadata": { "note": "two\nlines" } })),
        )
        .await;
    for (query, field) in [
        ("reference=a%00b", "reference"),
        ("psu_id=%00", "psu_id"),
        ("reference=a%0Ab", "reference"),
        ("metadata[order]=%00", "metadata[order]"),
        ("metadata[%00]=x", "metadata[\0]"),
    ] {
        let r = app
            .get_as(&format!("/v1/payments?{query}"), &m.api_key)
            .await;
        let problem = assert_problem(r, 422, "validation_failed").await;
        assert_eq!(error_fields(&problem), [field], "{query}");
        assert_eq!(
            problem["errors"][0]["code"], "invalid_characters",
            "{query}"
        );
    }
    assert_eq!(
        ids(&app, &m.api_key, "metadata[note]=two%0Alines").await,
        [p["id"].as_str().unwrap()],
        "a control character other than NUL in metadata is matched as given"
    );
}
