//! API keys over the API: several working keys per merchant, each shown once, listed with
//! its prefix and last use, revoked at once on every replica, expiring on its own; never
//! the merchant's last working key revoked.

use crate::helpers::{TestApp, assert_problem, spawn_app};
use crate::webhooks::{delete_as, eventually, get_json};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn create_key(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Creates a key that must succeed; returns its view (with `api_key`).
async fn new_key(app: &TestApp, key: &str, body: Value) -> Value {
    let r = create_key(app, key, body).await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn listed(app: &TestApp, key: &str) -> Vec<Value> {
    get_json(app, "/v1/api-keys", key).await["data"]
        .as_array()
        .unwrap()
        .clone()
}

fn find<'a>(keys: &'a [Value], id: &Value) -> Option<&'a Value> {
    keys.iter().find(|k| k["id"] == *id)
}

/// Waits until `key` is refused (the auth cache may hold it for a moment), at most `within`.
async fn refused_within(app: &TestApp, key: &str, within: Duration) {
    let started = Instant::now();
    let r = loop {
        let r = app.get_as("/v1/merchant", key).await;
        if r.status() != 200 {
            break r;
        }
        assert!(
            started.elapsed() < within,
            "still accepted after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_problem(r, 401, "unauthenticated").await;
}

#[tokio::test]
async fn a_key_made_over_the_api_works_is_listed_with_its_last_use_and_is_refused_once_revoked() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let other = app.create_merchant("Other").await;

    let created = new_key(&app, &m.api_key, json!({ "name": "  checkout  " })).await;
    let id = created["id"].clone();
    let secret = created["api_key"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "checkout");
    assert_eq!(created["status"], "active");
    assert_eq!(created["prefix"], format!("pgk_{}", id.as_str().unwrap()));
    assert!(secret.starts_with(&format!("{}_", created["prefix"].as_str().unwrap())));
    assert!(created["last_used_at"].is_null() && created["expires_at"].is_null());

    // It works, and its use is recorded (in the background, at most once a minute).
    assert_eq!(app.get_as("/v1/payments", &secret).await.status(), 200);
    let used = eventually("last_used_at to be recorded", || async {
        let keys = listed(&app, &m.api_key).await;
        let k = find(&keys, &id)?;
        k["last_used_at"].as_str().map(str::to_owned)
    })
    .await;
    let used: DateTime<Utc> = used.parse().unwrap();
    assert!((Utc::now() - used).num_seconds().abs() < 10, "{used}");
    assert_eq!(app.get_as("/v1/payments", &secret).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys = listed(&app, &m.api_key).await;
    assert_eq!(keys.len(), 2, "the CLI's key and the new one: {keys:?}");
    let k = find(&keys, &id).unwrap();
    assert_eq!(
        k["last_used_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        used
    );
    assert!(keys.iter().all(|k| k.get("api_key").is_none()), "{keys:?}");
    // Newest first; the CLI's key has no name.
    assert_eq!(keys[0]["id"], id);
    assert!(keys[1]["name"].is_null());

    // Another merchant neither sees nor revokes it.
    assert!(find(&listed(&app, &other.api_key).await, &id).is_none());
    let path = format!("/v1/api-keys/{}", id.as_str().unwrap());
    assert_problem(
        delete_as(&app, &path, &other.api_key).await,
        404,
        "not_found",
    )
    .await;

    // Revoked: refused at once (this replica clears its cache itself), no longer listed.
    assert_eq!(app.get_as("/v1/merchant", &secret).await.status(), 200);
    assert_eq!(delete_as(&app, &path, &m.api_key).await.status(), 204);
    assert_problem(
        app.get_as("/v1/merchant", &secret).await,
        401,
        "unauthenticated",
    )
    .await;
    assert!(find(&listed(&app, &m.api_key).await, &id).is_none());
    assert_problem(delete_as(&app, &path, &m.api_key).await, 404, "not_found").await;
}

#[tokio::test]
async fn a_revocation_reaches_every_replicas_cache_through_the_notification() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let created = new_key(&app, &m.api_key, json!({})).await;
    let secret = created["api_key"].as_str().unwrap();
    // Verified and cached a moment ago.
    assert_eq!(app.get_as("/v1/merchant", secret).await.status(), 200);
    // Revoked as another replica would: only the notification can tell this one.
    let done = pisgate::ledger::api_keys::revoke(
        &app.pool,
        pisgate::ledger::api_keys::Manager {
            merchant_id: m.id,
            key_id: pisgate::ledger::merchants::key_id_of(&m.api_key).unwrap(),
        },
        created["id"].as_str().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(done, pisgate::ledger::api_keys::Revoke::Revoked);
    refused_within(&app, secret, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_last_working_key_cannot_be_revoked() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let keys = listed(&app, &m.api_key).await;
    assert_eq!(keys.len(), 1);
    let first = format!("/v1/api-keys/{}", keys[0]["id"].as_str().unwrap());
    let r = delete_as(&app, &first, &m.api_key).await;
    let problem = assert_problem(r, 409, "last_api_key").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("last working API key")
    );
    assert_eq!(app.get_as("/v1/merchant", &m.api_key).await.status(), 200);

    // With a second key, the first can go (revoking the key the request is made with).
    let second = new_key(&app, &m.api_key, json!({ "name": "new" })).await;
    let second_key = second["api_key"].as_str().unwrap();
    assert_eq!(delete_as(&app, &first, &m.api_key).await.status(), 204);
    assert_problem(
        app.get_as("/v1/merchant", &m.api_key).await,
        401,
        "unauthenticated",
    )
    .await;
    let path = format!("/v1/api-keys/{}", second["id"].as_str().unwrap());
    assert_problem(
        delete_as(&app, &path, second_key).await,
        409,
        "last_api_key",
    )
    .await;
}

/// After a rotation the old key is in its grace: it works for payments until it expires but
/// cannot manage keys. It must not count as the merchant's remaining key, or revoking the
/// new key would leave a merchant with nothing that can make another, and nothing at all
/// once the grace ends. The list says which key is in its grace.
#[tokio::test]
async fn a_key_in_its_rotation_grace_does_not_count_as_the_last_working_key() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let rotated = pisgate::ledger::merchants::rotate_key(&app.pool, m.id, Duration::from_secs(120))
        .await
        .unwrap()
        .unwrap();
    let new = secrecy::ExposeSecret::expose_secret(&rotated.api_key).to_owned();
    let new_id = pisgate::ledger::merchants::key_id_of(&new)
        .unwrap()
        .to_owned();
    let old_id = pisgate::ledger::merchants::key_id_of(&m.api_key)
        .unwrap()
        .to_owned();
    let keys = listed(&app, &new).await;
    let status_of = |id: &str| {
        keys.iter()
            .find(|k| k["id"] == id)
            .map(|k| k["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(status_of(&new_id).as_deref(), Some("active"), "{keys:?}");
    assert_eq!(status_of(&old_id).as_deref(), Some("in_grace"), "{keys:?}");

    let r = delete_as(&app, &format!("/v1/api-keys/{new_id}"), &new).await;
    assert_problem(r, 409, "last_api_key").await;
    assert_eq!(app.get_as("/v1/api-keys", &new).await.status(), 200);
    // The key in its grace may go, though (by the new key: the old one may not manage keys).
    let r = delete_as(&app, &format!("/v1/api-keys/{old_id}"), &new).await;
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn a_key_with_an_expiry_is_refused_once_it_expires_and_requests_are_validated() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    // Whole milliseconds: PostgreSQL keeps microseconds.
    let expires_at = DateTime::from_timestamp_millis(
        (Utc::now() + chrono::Duration::seconds(2)).timestamp_millis(),
    )
    .unwrap();
    let created = new_key(&app, &m.api_key, json!({ "expires_at": expires_at })).await;
    let secret = created["api_key"].as_str().unwrap();
    assert_eq!(
        created["expires_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        expires_at
    );
    assert_eq!(app.get_as("/v1/merchant", secret).await.status(), 200);
    let wait = (expires_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    // The auth cache never holds a key past its expiry.
    refused_within(&app, secret, Duration::from_millis(500)).await;
    let keys = listed(&app, &m.api_key).await;
    assert_eq!(find(&keys, &created["id"]).unwrap()["status"], "expired");

    // An expired key is no working key: the merchant's only working key stays unrevokable,
    // while the expired one can be revoked.
    let path = format!("/v1/api-keys/{}", created["id"].as_str().unwrap());
    assert_eq!(delete_as(&app, &path, &m.api_key).await.status(), 204);

    // A body is optional.
    let r = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&m.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    for (body, field, code) in [
        (
            json!({ "expires_at": "2020-01-01T00:00:00Z" }),
            "expires_at",
            "in_the_past",
        ),
        (json!({ "expires_at": null }), "expires_at", "not_nullable"),
        (
            json!({ "expires_at": "tomorrow" }),
            "expires_at",
            "invalid_type",
        ),
        (json!({ "name": null }), "name", "not_nullable"),
        (json!({ "name": " " }), "name", "invalid_length"),
        (json!({ "name": "n".repeat(101) }), "name", "invalid_length"),
        (json!({ "scopes": ["all"] }), "scopes", "unknown_field"),
    ] {
        let r = create_key(&app, &m.api_key, body.clone()).await;
        let problem = assert_problem(r, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["code"], code, "{body}: {problem}");
    }
}

/// A NUL (which PostgreSQL cannot store in text) in a key's name or id is the caller's
/// mistake, named, not a 500; nothing is written.
#[tokio::test]
async fn a_nul_in_a_keys_name_or_id_is_refused_not_a_server_error() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let before = listed(&app, &m.api_key).await.len();
    let r = create_key(&app, &m.api_key, json!({"name": "ops\u{0}key"})).await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "name", "{problem}");
    for id in ["%00", "abc%00def", "%C3%A9"] {
        let r = app
            .client
            .delete(app.url(&format!("/v1/api-keys/{id}")))
            .bearer_auth(&m.api_key)
            .send()
            .await
            .unwrap();
        assert_problem(r, 404, "not_found").await;
    }
    assert_eq!(listed(&app, &m.api_key).await.len(), before);
}

/// A flood of made-up keys (well-formed, none cached, each a database read) must not take
/// the whole pool: at most a quarter of it reads keys at once, so a merchant whose key is
/// cached, and the readiness probe, are served while those reads are stuck. Here every key
/// read blocks (its table locked by another session) behind 16 made-up keys.
#[tokio::test]
async fn a_flood_of_unknown_keys_holds_a_quarter_of_the_pool_at_most() {
    use sqlx::{Connection, Executor};
    let app = crate::helpers::spawn_app_with(&[
        ("PISGATE__DATABASE__MAX_CONNECTIONS", "8"),
        ("PISGATE__DATABASE__ACQUIRE_TIMEOUT_SECS", "3"),
    ])
    .await;
    let m = app.create_merchant("Shop").await;
    // Its use recorded (that write would wait on the lock below too), and its key served
    // from the cache (which serves only once the replica's LISTEN session is up): a request
    // that reads no key from the database.
    let found = || async {
        let scrape = app.metrics().await;
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(r#"pisgate_auth_lookups_total{outcome="found"} "#))
            .map(|v| v.trim().to_owned())
    };
    crate::webhooks::eventually("the merchant's key to be served from the cache", || async {
        let before = found().await;
        assert_eq!(app.get_as("/v1/payments", &m.api_key).await.status(), 200);
        (found().await == before).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let direct = app.settings.database.direct_url.as_ref();
    let url = direct.unwrap_or(&app.settings.database.url);
    let mut locker = sqlx::PgConnection::connect(secrecy::ExposeSecret::expose_secret(url))
        .await
        .unwrap();
    locker.execute("BEGIN").await.unwrap();
    locker
        .execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..16 {
        let request = app.client.get(app.url("/v1/payments")).bearer_auth(format!(
            "pgk_{:016x}_made-up-secret-{i}",
            0xdead_0000_u64 + i
        ));
        flood.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The flood's reads are stuck; the cached merchant and the probe are served.
    assert_eq!(app.get_as("/v1/payments", &m.api_key).await.status(), 200);
    assert_eq!(app.admin_get("/readyz").await.status(), 200);

    // Past the pool's acquire timeout the reads still waiting for a turn are told to retry.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    locker.execute("ROLLBACK").await.unwrap();
    let mut answers = Vec::new();
    while let Some(status) = flood.join_next().await {
        answers.push(status.unwrap());
    }
    assert!(
        answers.iter().all(|s| *s == 401 || *s == 503),
        "every made-up key refused or told to retry: {answers:?}"
    );
    assert!(
        answers.contains(&503),
        "some waited past the bound: {answers:?}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"pisgate_auth_lookups_total{outcome="busy"}"#),
        "{metrics}"
    );
}

/// An insider writes API keys in SQL: a key of their own for a merchant (only a key's hash
/// is stored, so they can write one for a secret they chose), and their own merchant's key
/// moved to another merchant. Neither authenticates (each row fails its ledger MAC), the
/// refusals are counted, and `ledger verify` names the keys; the merchant's own key works.
#[tokio::test]
async fn an_api_key_written_in_sql_opens_nothing_and_verify_names_it() {
    use sha2::Digest as _;
    let app = spawn_app().await;
    let victim = app.create_merchant("Victim shop").await;
    let insider = app.create_merchant("Insider's shop").await;
    let forged = pisgate::ledger::merchants::NewApiKey::generate();
    let full = secrecy::ExposeSecret::expose_secret(&forged.reveal()).to_owned();
    let secret = full.rsplit('_').next().unwrap();
    let hash: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
    sqlx::query("INSERT INTO api_keys (key_id, merchant_id, key_hash) VALUES ($1, $2, $3)")
        .bind(forged.key_id())
        .bind(victim.id)
        .bind(&hash[..])
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.get_as("/v1/payments", &full).await.status(), 401);
    let moved = pisgate::ledger::merchants::key_id_of(&insider.api_key).unwrap();
    sqlx::query("UPDATE api_keys SET merchant_id = $2 WHERE key_id = $1")
        .bind(moved)
        .bind(victim.id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        app.get_as("/v1/payments", &insider.api_key).await.status(),
        401
    );
    assert_eq!(
        app.get_as("/v1/payments", &victim.api_key).await.status(),
        200
    );
    assert!(
        app.metrics()
            .await
            .contains("pisgate_ledger_binding_mismatches_total 2"),
        "counted"
    );
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(!report.is_ok(), "{report:?}");
    assert_eq!(report.api_keys_checked, 3, "{report:?}");
    assert_eq!(report.broken_api_keys, 2, "{report:?}");
}

/// An insider gives keys their life back in SQL after a leak: a revoked key (`revoked_at`
/// cleared), a key rotated away (its end and rotation cleared: a full key again), and one
/// whose grace is made a year longer. None opens anything (revoking overwrote the secret's
/// hash; a key's end is sealed by each rotation), `ledger verify` names all three, and a key
/// rotated away and left alone still works in its grace.
#[tokio::test]
async fn a_key_revoked_or_rotated_away_given_its_life_back_in_sql_opens_nothing() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let leaked = new_key(&app, &m.api_key, json!({"name": "leaked"})).await;
    let leaked_key = leaked["api_key"].as_str().unwrap().to_owned();
    let leaked_id = leaked["id"].as_str().unwrap().to_owned();
    assert_eq!(app.get_as("/v1/payments", &leaked_key).await.status(), 200);
    let r = delete_as(&app, &format!("/v1/api-keys/{leaked_id}"), &m.api_key).await;
    assert_eq!(r.status(), 204);
    refused_within(&app, &leaked_key, Duration::from_secs(5)).await;
    sqlx::query("UPDATE api_keys SET revoked_at = NULL WHERE key_id = $1")
        .bind(&leaked_id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.get_as("/v1/payments", &leaked_key).await.status(), 401);

    let (kept, made_full, lengthened) = (
        app.create_merchant("Kept").await,
        app.create_merchant("Made full").await,
        app.create_merchant("Lengthened").await,
    );
    for shop in [&kept, &made_full, &lengthened] {
        pisgate::ledger::merchants::rotate_key(&app.pool, shop.id, Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
    }
    let id_of = |key: &str| {
        pisgate::ledger::merchants::key_id_of(key)
            .unwrap()
            .to_owned()
    };
    for (shop, sql) in [
        (
            &made_full,
            "UPDATE api_keys SET expires_at = NULL, rotated_away_at = NULL WHERE key_id = $1",
        ),
        (
            &lengthened,
            "UPDATE api_keys SET expires_at = expires_at + interval '1 year' WHERE key_id = $1",
        ),
    ] {
        sqlx::query(sql)
            .bind(id_of(&shop.api_key))
            .execute(&app.pool)
            .await
            .unwrap();
        assert_eq!(
            app.get_as("/v1/payments", &shop.api_key).await.status(),
            401
        );
    }
    // Sealed again by the rotation, the untouched one works for payments in its grace.
    assert_eq!(
        app.get_as("/v1/payments", &kept.api_key).await.status(),
        200
    );
    assert!(
        app.metrics()
            .await
            .contains("pisgate_ledger_binding_mismatches_total 2"),
        "counted"
    );
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(!report.is_ok(), "{report:?}");
    // Shop's two (one given back), and each rotated merchant's old and new key.
    assert_eq!(report.api_keys_checked, 8, "{report:?}");
    assert_eq!(report.broken_api_keys, 3, "{report:?}");
}

/// An insider pushes back the end of a key rotated away after a leak; authentication
/// refuses it. The merchant's next rotation must not launder it: the key fails its MAC, so
/// the rotation revokes it instead of sealing it a fresh grace period.
#[tokio::test]
async fn a_rotation_revokes_a_key_whose_end_was_edited_instead_of_giving_it_a_grace() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let rotate = || async {
        pisgate::ledger::merchants::rotate_key(&app.pool, m.id, Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap()
    };
    let second = rotate().await;
    let leaked_id = pisgate::ledger::merchants::key_id_of(&m.api_key)
        .unwrap()
        .to_owned();
    sqlx::query(
        "UPDATE api_keys SET expires_at = expires_at + interval '1 year' WHERE key_id = $1",
    )
    .bind(&leaked_id)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(app.get_as("/v1/payments", &m.api_key).await.status(), 401);
    let third = rotate().await;
    assert_eq!(third.old_keys, 1, "only the second key is in its grace now");
    assert_eq!(app.get_as("/v1/payments", &m.api_key).await.status(), 401);
    let revoked: bool =
        sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_id = $1")
            .bind(&leaked_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(revoked, "the edited key was not revoked by the rotation");
    // The key rotated away untouched keeps its grace; the new one works.
    for key in [&second.api_key, &third.api_key] {
        let key = secrecy::ExposeSecret::expose_secret(key);
        assert_eq!(app.get_as("/v1/payments", key).await.status(), 200);
    }
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

/// A key revoked by the previous release during a rolling update keeps its secret's hash
/// and MACs (that release only set `revoked_at`): `ledger seal` overwrites the hash, after
/// which clearing `revoked_at` brings back nothing.
#[tokio::test]
async fn ledger_seal_erases_the_hash_of_a_key_the_previous_release_revoked() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let extra = new_key(&app, &m.api_key, json!({"name": "old release"})).await;
    let (key, id) = (
        extra["api_key"].as_str().unwrap().to_owned(),
        extra["id"].as_str().unwrap().to_owned(),
    );
    let set_revoked = |at: &'static str| {
        let (pool, id) = (app.pool.clone(), id.clone());
        async move {
            sqlx::query(&format!(
                "UPDATE api_keys SET revoked_at = {at} WHERE key_id = $1"
            ))
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    set_revoked("now()").await;
    // What `pisgate ledger seal` does, on a session straight to PostgreSQL.
    let direct = app.direct_pool().await;
    let sealed = pisgate::ledger::seal::seal_unbound(&direct, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert_eq!(sealed.revoked_keys_erased, 1, "{sealed:?}");
    set_revoked("NULL").await;
    assert_eq!(app.get_as("/v1/payments", &key).await.status(), 401);
    let again = pisgate::ledger::seal::seal_unbound(&direct, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert_eq!(again.revoked_keys_erased, 0, "{again:?}");
}

/// A key made over the API with an expiry finer than PostgreSQL keeps (nanoseconds): its
/// end is sealed as stored, so it works until then.
#[tokio::test]
async fn a_key_with_a_nanosecond_expiry_is_sealed_as_stored_and_works() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let at = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M:%S.123456789Z")
        .to_string();
    let created = new_key(&app, &m.api_key, json!({"expires_at": at})).await;
    let key = created["api_key"].as_str().unwrap();
    assert_eq!(app.get_as("/v1/payments", key).await.status(), 200);
    let report = pisgate::ledger::events::verify_all(&app.pool, &crate::helpers::ledger_keys())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}
