use crate::helpers::{empty_database, settings, spawn_app};
use pisgate::app::Application;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn readyz_is_ready_when_the_database_is_migrated() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn readyz_is_unavailable_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.pool.close().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    crate::helpers::assert_problem(r, 503, "service_unavailable").await;
}

#[tokio::test]
async fn serve_refuses_a_database_with_unapplied_migrations() {
    let url = empty_database().await;
    let Err(e) = Application::build(settings(&url, &[])).await else {
        panic!("serve started on an unmigrated database");
    };
    assert!(e.to_string().contains("pisgate migrate"), "{e}");
}

#[tokio::test]
async fn serve_with_migrate_applies_them_first() {
    let url = empty_database().await;
    let app = Application::build(settings(
        &url,
        &[("PISGATE__DATABASE__MIGRATE_ON_START", "true")],
    ))
    .await
    .expect("migrates and builds");
    assert!(
        pisgate::ledger::pending_migrations(app.pool())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn metrics_show_the_request_just_made() {
    let app = spawn_app().await;
    let m = app.create_merchant("Metrics shop").await;
    let r = app.get_as("/v1/merchant", &m.api_key).await;
    assert_eq!(r.status(), 200);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("pisgate_http_requests_total")
                && l.contains(r#"route="/v1/merchant""#)
                && l.contains(r#"status="200""#)
                && l.contains(r#"method="GET""#)
        })
        .unwrap_or_else(|| panic!("no counter for the request in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{line}");
    assert!(
        text.lines().any(
            |l| l.starts_with("pisgate_http_request_duration_seconds_bucket")
                && l.contains(r#"route="/v1/merchant""#)
        ),
        "no latency histogram in:\n{text}"
    );
}
