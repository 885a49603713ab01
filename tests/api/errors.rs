//! Every rejection the service can give is problem+json with the right status.

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "route_not_found").await;
    let r = app.client.get(app.url("/")).send().await.unwrap();
    assert_problem(r, 404, "route_not_found").await;
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["allow"].to_str().unwrap().contains("GET"));
    assert_problem(r, 405, "method_not_allowed").await;
    let r = app
        .client
        .post(app.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 405, "method_not_allowed").await;
    let m = app.create_merchant("Shop").await;
    let r = app
        .client
        .delete(app.url("/v1/merchant"))
        .bearer_auth(&m.api_key)
        .send()
        .await
        .unwrap();
    assert_problem(r, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn bad_json_is_a_400_problem() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let r = app
        .client
        .patch(app.url("/v1/merchant"))
        .bearer_auth(&m.api_key)
        .header("content-type", "application/json")
        .body("{\"return_origins\": [")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "malformed_json").await;
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_a_422_naming_the_field() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let r = app
        .client
        .patch(app.url("/v1/merchant"))
        .bearer_auth(&m.api_key)
        .json(&serde_json::json!({ "return_origins": "https://one.example" }))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "return_origins", "{body}");
    assert_eq!(body["errors"][0]["code"], "invalid_type", "{body}");
}

/// `1e400` is well-formed JSON that no 64-bit float holds: it was a 400 `malformed_json`
/// naming nothing; it is a 422 naming the field, and no payment is made.
#[tokio::test]
async fn a_number_beyond_a_float_is_a_422_naming_the_field() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let mut body = crate::payments::body("FI").to_string();
    body.insert_str(body.len() - 1, r#","metadata":{"n":1e400}"#);
    let r = app
        .client
        .post(app.url("/v1/payments"))
        .bearer_auth(&m.api_key)
        .header("idempotency-key", "far-number")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "metadata.n", "{problem}");
    assert_eq!(problem["errors"][0]["code"], "out_of_range", "{problem}");
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(payments, 0);
}

#[tokio::test]
async fn a_wrong_content_type_is_a_415_problem() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let r = app
        .client
        .patch(app.url("/v1/merchant"))
        .bearer_auth(&m.api_key)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(r, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn an_oversized_body_is_a_413_problem() {
    let app = spawn_app_with(&[("PISGATE__SERVER__BODY_LIMIT_BYTES", "1024")]).await;
    let m = app.create_merchant("Shop").await;
    let big = format!("{{\"return_origins\": [\"{}\"]}}", "a".repeat(4096));
    let r = app
        .client
        .patch(app.url("/v1/merchant"))
        .bearer_auth(&m.api_key)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_problem(r, 413, "payload_too_large").await;
}

#[tokio::test]
async fn an_invalid_origin_is_a_422_naming_the_entry() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let r = app
        .client
        .patch(app.url("/v1/merchant"))
        .bearer_auth(&m.api_key)
        .json(
            &serde_json::json!({ "return_origins": ["https://ok.example", "http://evil.example"] }),
        )
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "return_origins[1]", "{body}");
}

#[tokio::test]
async fn a_merchant_can_change_its_return_origins() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let r = app
        .client
        .patch(app.url("/v1/merchant"))
        .bearer_auth(&m.api_key)
        .json(&serde_json::json!({ "return_origins": ["HTTPS://New.Example/"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["return_origins"],
        serde_json::json!(["https://new.example"])
    );
}

#[tokio::test]
async fn a_caller_request_id_is_echoed() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "req-abc-123")
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 404, "route_not_found").await;
    assert_eq!(body["request_id"], "req-abc-123");
}

/// A problem's `type` is a page pisgate serves: what the code means and what to do; the
/// index lists every code; an unknown code is a plain 404 page.
#[tokio::test]
async fn a_problems_type_url_answers_with_that_codes_page() {
    let app = crate::helpers::spawn_app().await;
    let r = app
        .client
        .get(app.url("/v1/merchant"))
        .send()
        .await
        .unwrap();
    let problem = crate::helpers::assert_problem(r, 401, "unauthenticated").await;
    let type_url = problem["type"].as_str().unwrap();
    assert_eq!(type_url, app.url("/errors/unauthenticated"));
    let page = app.client.get(type_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    let text = page.text().await.unwrap();
    assert!(text.contains("Authorization: Bearer"), "{text}");
    assert!(text.contains("What to do"), "{text}");

    let index = app
        .client
        .get(app.url("/errors"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for d in pisgate::api::error_pages::CATALOGUE {
        assert!(
            index.contains(&format!("/errors/{}", d.code)),
            "{} missing",
            d.code
        );
    }
    let unknown = app
        .client
        .get(app.url("/errors/no_such_code"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}
