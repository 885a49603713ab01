use crate::helpers::{assert_problem, spawn_app, spawn_app_with};
use serde_json::Value;

#[tokio::test]
async fn a_merchant_with_a_valid_key_reaches_an_authenticated_endpoint() {
    let app = spawn_app().await;
    let m = app.create_merchant("Good shop").await;
    let r = app.get_as("/v1/merchant", &m.api_key).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], m.id.to_string());
    assert_eq!(body["name"], "Good shop");
    assert_eq!(body["return_origins"][0], "https://shop.example");
}

#[tokio::test]
async fn a_missing_key_is_401() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/v1/merchant"))
        .send()
        .await
        .unwrap();
    // RFC 9110: a 401 names the scheme to authenticate with.
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"pisgate\"");
    assert_problem(r, 401, "unauthenticated").await;
}

#[tokio::test]
async fn a_wrong_key_is_401() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    // Right key id, wrong secret; and a key that is not even well-formed.
    let (id_part, _) = m.api_key.rsplit_once('_').unwrap();
    let forged = format!("{id_part}_{}", "0".repeat(64));
    for key in [forged.as_str(), "not-a-key"] {
        let r = app.get_as("/v1/merchant", key).await;
        assert_problem(r, 401, "unauthenticated").await;
    }
}

#[tokio::test]
async fn a_non_bearer_scheme_is_401() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let r = app
        .client
        .get(app.url("/v1/merchant"))
        .header("authorization", format!("Basic {}", m.api_key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"pisgate\"");
    assert_problem(r, 401, "unauthenticated").await;
}

#[tokio::test]
async fn a_disabled_merchant_is_401() {
    let app = spawn_app().await;
    let m = app.create_merchant("Soon gone").await;
    assert_eq!(app.get_as("/v1/merchant", &m.api_key).await.status(), 200);
    pisgate::ledger::merchants::disable(&app.pool, m.id)
        .await
        .unwrap()
        .unwrap();
    // The key was verified and cached a moment ago: the disable's notification clears the
    // cache within milliseconds, far inside the cache's own bound.
    let started = std::time::Instant::now();
    let r = loop {
        let r = app.get_as("/v1/merchant", &m.api_key).await;
        if r.status() != 200 {
            break r;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "still accepted a second after the merchant was disabled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_problem(r, 401, "merchant_disabled").await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_the_headers() {
    let app = spawn_app_with(&[("PISGATE__RATE_LIMIT__REQUESTS_PER_WINDOW", "3")]).await;
    let m = app.create_merchant("Busy shop").await;
    for expected_remaining in [2, 1, 0] {
        let r = app.get_as("/v1/merchant", &m.api_key).await;
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(
            h["x-ratelimit-remaining"],
            expected_remaining.to_string().as_str()
        );
        let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
    }
    let r = app.get_as("/v1/merchant", &m.api_key).await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(r.headers()["x-ratelimit-limit"], "3");
    assert_problem(r, 429, "rate_limited").await;

    // Another merchant has its own budget.
    let other = app.create_merchant("Quiet shop").await;
    assert_eq!(
        app.get_as("/v1/merchant", &other.api_key).await.status(),
        200
    );
}

#[tokio::test]
async fn a_rotated_key_works_through_its_grace_period_and_is_refused_once_it_expires() {
    use pisgate::ledger::merchants::rotate_key;
    use secrecy::ExposeSecret as _;
    use std::time::Duration;
    let app = spawn_app().await;
    let m = app.create_merchant("Rotating shop").await;
    let second = rotate_key(&app.pool, m.id, Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    let second_key = second.api_key.expose_secret().to_owned();
    for key in [&m.api_key, &second_key] {
        assert_eq!(app.get_as("/v1/merchant", key).await.status(), 200);
    }
    // The grace period ends (here: a rotation without one).
    let third = rotate_key(&app.pool, m.id, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.old_keys, 2);
    let third_key = third.api_key.expose_secret().to_owned();
    assert_eq!(app.get_as("/v1/merchant", &third_key).await.status(), 200);
    // Authentication may sit behind a short cache: an expired key is refused within seconds.
    for key in [&m.api_key, &second_key] {
        let started = std::time::Instant::now();
        loop {
            let r = app.get_as("/v1/merchant", key).await;
            if r.status() == 401 {
                assert_problem(r, 401, "unauthenticated").await;
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "an expired key still works"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        rotate_key(&app.pool, uuid::Uuid::new_v4(), Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );
}
