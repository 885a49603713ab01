use crate::helpers::{assert_problem, empty_database, settings, spawn_app, spawn_app_full};
use pisgate::app::Application;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let r = app.admin_get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn readyz_is_ready_when_the_database_is_migrated() {
    let app = spawn_app().await;
    let r = app.admin_get("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn readyz_is_unavailable_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.pool.close().await;
    let r = app.admin_get("/readyz").await;
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
    let text = app.metrics().await;
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

/// SDK generators read the committed `openapi.json` at the repository root: it must be the
/// document the service serves (generated from the code), byte for byte.
#[tokio::test]
async fn the_served_openapi_document_is_the_committed_openapi_json() {
    let app = spawn_app().await;
    let served = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    assert!(
        served == committed,
        "openapi.json differs from the served document: refresh it with `cargo run -q -- openapi > openapi.json`"
    );
}

/// What SDK generators need of every operation: a unique `operationId` (the method name)
/// and one tag the document declares (the class it goes in), and the request id declared
/// on every answer.
#[tokio::test]
async fn every_openapi_operation_has_a_unique_id_a_declared_tag_and_its_headers() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                !id.is_empty() && ids.insert(id.to_owned()),
                "{method} {path}: {id:?}"
            );
            let op_tags = op["tags"].as_array().unwrap();
            assert_eq!(op_tags.len(), 1, "{method} {path}");
            assert!(
                tags.contains(&op_tags[0].as_str().unwrap()),
                "{method} {path}"
            );
            for (code, response) in op["responses"].as_object().unwrap() {
                assert!(
                    response["headers"]["X-Request-Id"].is_object(),
                    "{method} {path} {code}"
                );
            }
        }
    }
    assert!(ids.contains("listEvents") && ids.contains("createApiKey"));
}

#[tokio::test]
async fn openapi_describes_only_routes_that_exist() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for required in [
        "/v1/payments",
        "/v1/payments/{id}",
        "/v1/payments/{id}/events",
        "/v1/payments/{id}/cancel",
        "/v1/payments/{id}/funds",
        "/v1/webhook-endpoints",
        "/v1/webhook-endpoints/{id}",
        "/v1/merchant",
        "/v1/events",
        "/v1/events/{id}",
        "/v1/api-keys",
        "/v1/api-keys/{id}",
        "/v1/webhook-endpoints/{id}/rotate-secret",
    ] {
        assert!(paths.contains_key(required), "{required} is not described");
    }
    // Every operation it lists is routed: without a key a /v1 route answers 401, never the
    // unknown-route 404 or a 405.
    let id = uuid::Uuid::new_v4().to_string();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let url = app.url(&path.replace("{id}", &id).replace("{webhook_id}", "evt_x"));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app
                .client
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            if path.starts_with("/v1/") {
                assert_eq!(status, 401, "{method} {path}");
            } else {
                assert_eq!(status, 200, "{method} {path}");
            }
        }
    }
    // Every schema it refers to is defined.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{name} is referred to but not defined"
        );
    }
}

#[tokio::test]
async fn every_metric_family_has_help_text() {
    let app = spawn_app().await;
    let m = app.create_merchant("Help shop").await;
    assert_eq!(app.get_as("/v1/merchant", &m.api_key).await.status(), 200);
    let text = app.metrics().await;
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.contains(&"pisgate_http_requests_total"), "{text}");
    for family in families {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {family} ")) && l.len() > family.len() + 12),
            "no HELP for {family} in:\n{text}"
        );
    }
}

#[tokio::test]
async fn metrics_answer_on_the_admin_listener_and_404_on_the_public_one() {
    let app = spawn_app().await;
    for path in ["/metrics", "/healthz", "/readyz"] {
        let admin = app.admin_get(path).await;
        assert_eq!(admin.status(), 200, "{path} on the admin listener");
        let public = app.client.get(app.url(path)).send().await.unwrap();
        assert_problem(public, 404, "route_not_found").await;
    }
    let text = app.metrics().await;
    assert!(text.contains("# TYPE pisgate_build_info gauge"), "{text}");
    // The public listener keeps the API description; the admin one serves none of the
    // merchant-facing surface.
    let public = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 200);
    for path in ["/openapi.json", "/v1/merchant", "/v1/callbacks/nordea"] {
        let admin = app.admin_get(path).await;
        assert_problem(admin, 404, "route_not_found").await;
    }
    assert_ne!(app.address, app.admin_address);
}

#[tokio::test]
async fn readyz_answers_503_as_soon_as_shutdown_begins_while_requests_drain() {
    let mut app = spawn_app_full(&[], |c| {
        c.faults = vec![
            serde_json::from_value(
                serde_json::json!({"operation": "initiate", "kind": "latency", "ms": 1500}),
            )
            .unwrap(),
        ];
    })
    .await;
    let m = app.create_merchant("Drain shop").await;
    let ready = app.admin_get("/readyz").await;
    assert_eq!(ready.status(), 200);
    // A payment whose bank call takes a while is in flight when the stop begins.
    let client = app.client.clone();
    let url = app.url("/v1/payments");
    let key = m.api_key.clone();
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(key)
            .header("idempotency-key", "drain")
            .json(&crate::payments::body("FI"))
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.begin_shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let draining = app.admin_get("/readyz").await;
    let problem = assert_problem(draining, 503, "service_unavailable").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{problem}"
    );
    assert_eq!(
        in_flight.await.unwrap(),
        201,
        "the in-flight request finishes"
    );
}

/// The value of the unlabelled gauge `name` in a `/metrics` scrape, if there.
fn gauge(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Replicas compare times each other wrote (leases, when a payment is polled next) with the
/// database's `now()`: the watchdog's probe measures this replica's clock against the
/// database's and exports it, so a drifting node shows (and alerts) instead of silently
/// polling too late. Here the database's clock, as its sessions read it, runs 90 s ahead.
#[tokio::test]
async fn the_watchdog_reports_the_replicas_clock_skew_against_the_database() {
    use sqlx::{Connection, Executor};
    let app = spawn_app().await;
    let skew = crate::webhooks::eventually("the in-step clock's skew", || async {
        gauge(&app.metrics().await, "pisgate_clock_skew_seconds")
    })
    .await;
    assert!(skew.abs() < 0.5, "the same machine's clocks: {skew} s");
    // The gauge is the process's: only the next app's probe sets it from here on.
    drop(app);

    let url = crate::helpers::fresh_database().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    conn.execute(
        "CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE sql
         AS $$ SELECT pg_catalog.clock_timestamp() + interval '90 seconds' $$",
    )
    .await
    .unwrap();
    let (_, db) = url.rsplit_once('/').unwrap();
    conn.execute(format!(r#"ALTER DATABASE "{db}" SET search_path = public, pg_catalog"#).as_str())
        .await
        .unwrap();
    conn.close().await.unwrap();
    let ahead = crate::helpers::spawn_app_on(&url, &[], |_| {}).await;
    let skew = crate::webhooks::eventually("the skewed clock's skew", || async {
        gauge(&ahead.metrics().await, "pisgate_clock_skew_seconds").filter(|s| *s > 1.0)
    })
    .await;
    assert!((89.5..=90.5).contains(&skew), "{skew} s");
}
