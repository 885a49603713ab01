//! The operator console on the admin listener, over HTTP against the real service and
//! Postgres: operators made by `pisgate operator create`, sign-in with CSRF and lock-out,
//! sessions, payment search and one payment's timeline; never on the public listener.

use crate::cli::pisgate;
use crate::helpers::{TestApp, spawn_app};
use crate::payments::body;
use secrecy::ExposeSecret;
use std::io::Write;
use std::process::Stdio;

pub const EMAIL: &str = "ops@pisgate.example";
pub const PASSWORD: &str = "a long operator password";

/// `pisgate operator create --email …` with the password on standard input.
pub fn create_operator(app: &TestApp, email: &str, password: &str) -> std::process::Output {
    let mut child = pisgate()
        .args(["operator", "create", "--email", email])
        .env(
            "PISGATE__DATABASE__URL",
            app.settings.database.url.expose_secret(),
        )
        .env(
            "PISGATE__DATABASE__POOLER",
            app.settings.database.pooler.as_str(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

pub fn cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

pub fn cookie_value(set_cookies: &[String], name: &str) -> Option<String> {
    set_cookies.iter().find_map(|c| {
        c.split(';')
            .next()?
            .strip_prefix(&format!("{name}="))
            .map(str::to_owned)
    })
}

pub fn hidden_csrf(html: &str) -> String {
    html.split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a csrf field")
        .to_owned()
}

/// Opens the sign-in page and posts `password`; returns the answer.
pub async fn sign_in(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    let form = app
        .client
        .get(app.admin_url("/console/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let login_cookie = cookie_value(&cookies(&form), "pisgate_console_login").unwrap();
    let csrf = hidden_csrf(&form.text().await.unwrap());
    app.client
        .post(app.admin_url("/console/login"))
        .header("cookie", format!("pisgate_console_login={login_cookie}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

pub async fn session_cookie(app: &TestApp) -> String {
    let r = sign_in(app, EMAIL, PASSWORD).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/payments");
    let set = cookies(&r);
    let session = set
        .iter()
        .find(|c| c.starts_with("pisgate_console="))
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(
        !session.contains("Secure"),
        "plain HTTP on localhost: {session}"
    );
    format!(
        "pisgate_console={}",
        cookie_value(&set, "pisgate_console").unwrap()
    )
}

/// By default every console cookie is `Secure`, whatever Host the request names: behind a
/// reverse proxy that forwards `Host: localhost:9090` (nginx's default for a `proxy_pass` to
/// localhost) a session cookie must not lose `Secure`. Only the setting turns it off.
#[tokio::test]
async fn console_cookies_are_secure_by_default_whatever_the_host() {
    let app =
        crate::helpers::spawn_app_with(&[("PISGATE__ADMIN__CONSOLE_SECURE_COOKIE", "true")]).await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    for host in [None, Some("localhost:9090"), Some("console.example")] {
        let mut form = app.client.get(app.admin_url("/console/login"));
        if let Some(host) = host {
            form = form.header("host", host);
        }
        let form = form.send().await.unwrap();
        assert_eq!(form.status(), 200);
        let set = cookies(&form);
        let login = set
            .iter()
            .find(|c| c.starts_with("pisgate_console_login="))
            .unwrap();
        assert!(login.contains("; Secure"), "Host {host:?}: {login}");
    }
    let r = sign_in(&app, EMAIL, PASSWORD).await;
    assert_eq!(r.status(), 303);
    for c in cookies(&r) {
        assert!(c.contains("; Secure"), "{c}");
    }
}

pub async fn get(app: &TestApp, path: &str, cookie: &str) -> (u16, String) {
    let r = app
        .client
        .get(app.admin_url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn operator_create_reads_the_password_from_stdin_and_stores_only_an_argon2id_hash() {
    let app = spawn_app().await;
    let out = create_operator(&app, "Ops@Pisgate.example", PASSWORD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM operators WHERE email = $1")
        .bind(EMAIL)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
    let short = create_operator(&app, "short@pisgate.example", "short");
    assert!(!short.status.success());
    let again = create_operator(&app, EMAIL, PASSWORD);
    assert!(!again.status.success(), "one account per email");
}

#[tokio::test]
async fn the_console_is_not_on_the_public_listener() {
    let app = spawn_app().await;
    for path in ["/console", "/console/login", "/console/payments"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = app
        .client
        .get(app.admin_url("/console/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(csp.contains("form-action 'self'"));
}

#[tokio::test]
async fn an_operator_signs_in_finds_a_payment_by_reference_and_sees_its_timeline() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Console shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let id = p["id"].as_str().unwrap();
    let other = app
        .create_payment(&m.api_key, &{
            let mut b = body("FI");
            b["reference"] = serde_json::json!("another-order");
            b
        })
        .await;

    // Signed out: every page sends to the sign-in.
    let r = app
        .client
        .get(app.admin_url("/console/payments"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");

    let cookie = session_cookie(&app).await;
    let (status, html) = get(&app, "/console/payments?reference=order-1234", &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains(id), "{html}");
    assert!(
        !html.contains(other["id"].as_str().unwrap()),
        "only the reference's payment"
    );
    assert!(html.contains("Console shop"));
    assert!(html.contains("€10.50"));
    assert!(
        html.contains("<th>Bank</th>") && html.contains("<td>nordea</td>"),
        "the list names each payment's bank: {html}"
    );

    let (status, html) = get(&app, &format!("/console/payments/{id}"), &cookie).await;
    assert_eq!(status, 200);
    for shown in [
        "created",
        "awaiting_authorization",
        "PendingUserApproval",
        " · bank nordea",
        "Verified: ",
    ] {
        assert!(html.contains(shown), "{shown:?} missing in {html}");
    }
    let (status, html) = get(&app, "/console/payments?id=not-a-uuid", &cookie).await;
    assert_eq!(status, 400);
    assert!(html.contains("not a payment or merchant id"));

    let audit: Vec<String> =
        sqlx::query_scalar("SELECT action FROM operator_audit WHERE email = $1 ORDER BY id")
            .bind(EMAIL)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(audit, ["signed_in"]);
    let edit = sqlx::query("UPDATE operator_audit SET action = 'nothing'")
        .execute(&app.pool)
        .await;
    assert!(edit.is_err(), "the audit log is append-only");
}

#[tokio::test]
async fn five_wrong_passwords_lock_the_account_even_for_the_right_one() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    for _ in 0..5 {
        assert_eq!(sign_in(&app, EMAIL, "wrong password!").await.status(), 401);
    }
    let r = sign_in(&app, EMAIL, PASSWORD).await;
    assert_eq!(r.status(), 401, "locked for a while");
    assert!(cookie_value(&cookies(&r), "pisgate_console").is_none());
    let locked: bool =
        sqlx::query_scalar("SELECT locked_until > now() FROM operators WHERE email = $1")
            .bind(EMAIL)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(locked);
    // An unknown email answers the same.
    assert_eq!(
        sign_in(&app, "nobody@pisgate.example", PASSWORD)
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    // Sign-in without the cookie's twin.
    let r = app
        .client
        .post(app.admin_url("/console/login"))
        .form(&[("email", EMAIL), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .client
        .post(app.admin_url("/console/login"))
        .header("cookie", "pisgate_console_login=abc")
        .form(&[("csrf", "abd"), ("email", EMAIL), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Sign-out without the session's token keeps the session.
    let cookie = session_cookie(&app).await;
    let r = app
        .client
        .post(app.admin_url("/console/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(get(&app, "/console/payments", &cookie).await.0, 200);
    let (_, html) = get(&app, "/console/payments", &cookie).await;
    let r = app
        .client
        .post(app.admin_url("/console/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", hidden_csrf(&html).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        get(&app, "/console/payments", &cookie).await.0,
        303,
        "signed out"
    );
    // An ended session lets no one in, and is forgotten at the next sign-in.
    let cookie = session_cookie(&app).await;
    sqlx::query("UPDATE operator_sessions SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        get(&app, "/console/payments", &cookie).await.0,
        303,
        "expired"
    );
    session_cookie(&app).await;
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM operator_sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(live, 1);
}

/// A merchant's webhook receiver that answers 200 and counts what arrives.
async fn counting_receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, count)
}

/// Posts an action form once with the session's CSRF token, as the page would.
pub async fn post_action(
    app: &TestApp,
    cookie: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let (_, html) = get(app, "/console/payments", cookie).await;
    let csrf = hidden_csrf(&html);
    let mut form: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    app.client
        .post(app.admin_url("/console/actions"))
        .header("cookie", cookie)
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Posts an action form as the page would: first without `confirm` (the confirmation page),
/// then with it.
pub async fn act(
    app: &TestApp,
    cookie: &str,
    fields: &[(&str, &str)],
) -> (reqwest::Response, String) {
    let confirm = post_action(app, cookie, fields).await;
    assert_eq!(confirm.status(), 200);
    let page = confirm.text().await.unwrap();
    assert!(page.contains("Confirm"), "{page}");
    let mut form = fields.to_vec();
    form.push(("confirm", "yes"));
    (post_action(app, cookie, &form).await, page)
}

pub async fn audit_actions(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT action FROM operator_audit ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_operator_replays_a_dead_delivery_after_confirming_and_the_audit_log_shows_it() {
    let app = crate::helpers::spawn_app_with(&[
        ("PISGATE__WEBHOOKS__ENABLED", "true"),
        ("PISGATE__WEBHOOKS__IDLE_WAIT", "200ms"),
    ])
    .await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Hooked shop").await;
    let (url, received) = counting_receiver().await;
    let r = app
        .client
        .post(app.url("/v1/webhook-endpoints"))
        .bearer_auth(&m.api_key)
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let id = p["id"].as_str().unwrap();
    assert_eq!(
        app.sign(p["authorization_url"].as_str().unwrap(), "psu-hook", true)
            .await
            .status(),
        303
    );
    let wait = |n: usize| {
        let received = received.clone();
        async move {
            for _ in 0..100 {
                if received.load(std::sync::atomic::Ordering::SeqCst) >= n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("the receiver got fewer than {n} deliveries");
        }
    };
    wait(1).await;
    // The delivery died (as after its schedule ran out).
    let (endpoint, event): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "UPDATE webhook_deliveries d SET status = 'dead', next_attempt_at = NULL, delivered_at = NULL
           FROM webhook_events e
          WHERE e.id = d.event_id AND e.payment_id = $1::uuid
         RETURNING d.endpoint_id, d.event_id",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let before = received.load(std::sync::atomic::Ordering::SeqCst);

    let cookie = session_cookie(&app).await;
    let (_, html) = get(&app, "/console/attention", &cookie).await;
    assert!(
        html.contains("Dead webhook deliveries") && html.contains(&url),
        "{html}"
    );
    let (_, html) = get(&app, &format!("/console/payments/{id}"), &cookie).await;
    assert!(html.contains("dead") && html.contains("Replay"), "{html}");

    let (endpoint, event) = (endpoint.to_string(), event.to_string());
    let back = format!("/console/payments/{id}");
    let (done, confirm_page) = act(
        &app,
        &cookie,
        &[
            ("action", "replay_delivery"),
            ("endpoint", &endpoint),
            ("event", &event),
            ("back", &back),
        ],
    )
    .await;
    assert!(confirm_page.contains("replay delivery"));
    assert!(
        confirm_page.contains("Hooked shop"),
        "an endpoint's action names its merchant: {confirm_page}"
    );
    assert!(
        !confirm_page.contains(r#"class="danger""#),
        "a replay is not destructive"
    );
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], back.as_str());
    wait(before + 1).await;
    assert_eq!(audit_actions(&app).await, ["signed_in", "replay_delivery"]);
    let (_, html) = get(&app, "/console/audit", &cookie).await;
    assert!(
        html.contains("replay_delivery") && html.contains(EMAIL),
        "{html}"
    );
}

#[tokio::test]
async fn disabling_a_merchant_from_the_console_stops_its_key_and_only_after_confirming() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Paused shop").await;
    app.create_payment(&m.api_key, &body("FI")).await;
    let cookie = session_cookie(&app).await;
    let (_, html) = get(&app, "/console/merchants", &cookie).await;
    assert!(html.contains("Paused shop") && html.contains("Disable"));
    for destructive in ["Disable", "Rotate API key", "Revoke all keys now"] {
        assert!(
            html.contains(&format!(
                r#"<button class="danger" type="submit">{destructive}</button>"#
            )),
            "{destructive} styled as destructive: {html}"
        );
    }
    assert!(
        html.contains("awaiting_authorization: 1 / 1"),
        "usage over 24 h / 30 d: {html}"
    );
    assert!(html.contains("no endpoints"), "{html}");

    // The confirmation page alone changes nothing.
    let (_, html) = get(&app, "/console/payments", &cookie).await;
    let csrf = hidden_csrf(&html);
    let merchant = m.id.to_string();
    let r = app
        .client
        .post(app.admin_url("/console/actions"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("action", "disable_merchant"),
            ("merchant", &merchant),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let confirmation = r.text().await.unwrap();
    assert!(
        confirmation.contains("Paused shop") && confirmation.contains(&merchant),
        "the confirmation names the merchant by name and id: {confirmation}"
    );
    assert!(
        confirmation.contains(r#"<button class="danger" type="submit">Confirm"#),
        "a destructive action's button is styled as such: {confirmation}"
    );
    assert_eq!(app.get_as("/v1/merchant", &m.api_key).await.status(), 200);

    let (done, _) = act(
        &app,
        &cookie,
        &[
            ("action", "disable_merchant"),
            ("merchant", &merchant),
            ("back", "/console/merchants"),
        ],
    )
    .await;
    assert_eq!(done.status(), 303);
    let mut refused = false;
    for _ in 0..50 {
        if app.get_as("/v1/merchant", &m.api_key).await.status() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(refused, "the disabled merchant's key is refused");
    let (done, _) = act(
        &app,
        &cookie,
        &[
            ("action", "enable_merchant"),
            ("merchant", &merchant),
            ("back", "/console/merchants"),
        ],
    )
    .await;
    assert_eq!(done.status(), 303);
    assert_eq!(
        audit_actions(&app).await,
        ["signed_in", "disable_merchant", "enable_merchant"]
    );
    // Without the session's CSRF token, nothing.
    let r = app
        .client
        .post(app.admin_url("/console/actions"))
        .header("cookie", &cookie)
        .form(&[
            ("action", "disable_merchant"),
            ("merchant", merchant.as_str()),
            ("confirm", "yes"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn a_disabled_endpoint_is_listed_and_re_enabled_from_the_console() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Endpoint shop").await;
    let (url, _) = counting_receiver().await;
    let endpoint: serde_json::Value = app
        .client
        .post(app.url("/v1/webhook-endpoints"))
        .bearer_auth(&m.api_key)
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = endpoint["id"].as_str().unwrap().to_owned();
    // Disabled as the dispatcher does when a receiver answers 410.
    sqlx::query(
        "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = 'receiver answered 410'
          WHERE id = $1::uuid",
    )
    .bind(&endpoint)
    .execute(&app.pool)
    .await
    .unwrap();
    let cookie = session_cookie(&app).await;
    let (_, html) = get(&app, "/console/attention", &cookie).await;
    assert!(
        html.contains("receiver answered 410") && html.contains("Re-enable"),
        "{html}"
    );
    assert!(html.contains("eIDAS certificate"), "{html}");
    let (_, html) = get(&app, "/console/merchants", &cookie).await;
    assert!(html.contains("0 enabled, 1 disabled endpoint(s)"), "{html}");
    let (done, _) = act(
        &app,
        &cookie,
        &[("action", "enable_endpoint"), ("endpoint", &endpoint)],
    )
    .await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/console/attention");
    let status: String =
        sqlx::query_scalar("SELECT status FROM webhook_endpoints WHERE id = $1::uuid")
            .bind(&endpoint)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "enabled");
    assert_eq!(audit_actions(&app).await, ["signed_in", "enable_endpoint"]);
}

#[tokio::test]
async fn rotating_a_merchants_key_shows_the_new_key_once_and_keeps_it_out_of_the_audit_log() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Rotating shop").await;
    let cookie = session_cookie(&app).await;
    let merchant = m.id.to_string();
    let (done, _) = act(
        &app,
        &cookie,
        &[("action", "rotate_key"), ("merchant", &merchant)],
    )
    .await;
    assert_eq!(done.status(), 200);
    assert_eq!(done.headers()["cache-control"], "no-store");
    let html = done.text().await.unwrap();
    let key = html
        .split(r#"<code class="secret">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the new key")
        .to_owned();
    assert_ne!(key, m.api_key);
    assert_eq!(
        app.get_as("/v1/merchant", &key).await.status(),
        200,
        "the new key works"
    );
    assert_eq!(
        app.get_as("/v1/merchant", &m.api_key).await.status(),
        200,
        "the old one for a day more"
    );
    let audit: Vec<(String, Option<String>, serde_json::Value)> =
        sqlx::query_as("SELECT action, target, detail FROM operator_audit ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(audit.last().unwrap().0, "rotate_key");
    assert!(
        !format!("{audit:?}").contains(&key),
        "never the key in the audit log"
    );
}

#[tokio::test]
async fn revoking_all_keys_from_the_console_refuses_every_key_of_the_merchant_at_once() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Leaky shop").await;
    let other = app.create_merchant("Other shop").await;
    let r = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&m.api_key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let second = r.json::<serde_json::Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    // Both verified (and cached).
    for key in [&m.api_key, &second] {
        assert_eq!(app.get_as("/v1/merchant", key).await.status(), 200);
    }
    let cookie = session_cookie(&app).await;
    let (_, html) = get(&app, "/console/merchants", &cookie).await;
    assert!(html.contains("Revoke all keys now"), "{html}");
    let merchant = m.id.to_string();
    let (done, confirm) = act(
        &app,
        &cookie,
        &[("action", "revoke_all_keys"), ("merchant", &merchant)],
    )
    .await;
    assert!(confirm.contains("revoke all keys"), "{confirm}");
    assert!(
        confirm.contains("Leaky shop") && !confirm.contains("Other shop"),
        "{confirm}"
    );
    assert!(confirm.contains(r#"<button class="danger" type="submit">Confirm"#));
    assert_eq!(done.status(), 303);
    for key in [&m.api_key, &second] {
        assert_eq!(app.get_as("/v1/merchant", key).await.status(), 401);
    }
    assert_eq!(
        app.get_as("/v1/merchant", &other.api_key).await.status(),
        200,
        "another merchant's key is untouched"
    );
    assert_eq!(audit_actions(&app).await, ["signed_in", "revoke_all_keys"]);
}

#[tokio::test]
async fn an_operator_sets_the_payee_policy_and_adds_and_removes_a_payee_from_the_console() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Payout shop").await;
    let merchant = m.id.to_string();
    let cookie = session_cookie(&app).await;
    let page = format!("/console/merchants/{merchant}/payees");
    let (status, html) = get(&app, &page, &cookie).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Payee policy: <strong>open</strong>"),
        "{html}"
    );

    let back = page.as_str();
    let (done, confirm) = act(
        &app,
        &cookie,
        &[
            ("action", "add_payee"),
            ("merchant", &merchant),
            ("account_type", "IBAN"),
            ("account", "fi14 1009 3000 1234 58"),
            ("label", "payouts"),
            ("back", back),
        ],
    )
    .await;
    assert!(
        confirm.contains("FI…3458"),
        "masked on the confirmation: {confirm}"
    );
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], back);
    let (done, _) = act(
        &app,
        &cookie,
        &[
            ("action", "set_payees"),
            ("merchant", &merchant),
            ("policy", "registered"),
            ("back", back),
        ],
    )
    .await;
    assert_eq!(done.status(), 303);
    let (_, html) = get(&app, &page, &cookie).await;
    assert!(
        html.contains("Payee policy: <strong>registered</strong>"),
        "{html}"
    );
    assert!(html.contains("FI1410093000123458"), "{html}");

    let mut b = body("FI");
    let r = app
        .post_payment(&m.api_key, &uuid::Uuid::new_v4().to_string(), &b)
        .await;
    assert_eq!(r.status(), 201, "the registered account is paid");
    b["creditor"]["account"]["value"] = "FI2112345600000785".into();
    let r = app
        .post_payment(&m.api_key, &uuid::Uuid::new_v4().to_string(), &b)
        .await;
    assert_eq!(r.status(), 422);

    // An invalid account is refused with a sentence, and audited as refused.
    let (done, _) = act(
        &app,
        &cookie,
        &[
            ("action", "add_payee"),
            ("merchant", &merchant),
            ("account_type", "IBAN"),
            ("account", "FI00 1234"),
        ],
    )
    .await;
    assert_eq!(done.status(), 409);
    assert!(done.text().await.unwrap().contains("not valid"));

    let (done, confirm) = act(
        &app,
        &cookie,
        &[
            ("action", "remove_payee"),
            ("merchant", &merchant),
            ("account_type", "IBAN"),
            ("account", "FI1410093000123458"),
            ("back", back),
        ],
    )
    .await;
    assert!(confirm.contains("Payout shop"), "{confirm}");
    assert!(confirm.contains(r#"<button class="danger" type="submit">Confirm"#));
    assert_eq!(done.status(), 303);
    let r = app
        .post_payment(&m.api_key, &uuid::Uuid::new_v4().to_string(), &body("FI"))
        .await;
    assert_eq!(r.status(), 422, "removed: refused");

    assert_eq!(
        audit_actions(&app).await,
        [
            "signed_in",
            "add_payee",
            "set_payees",
            "add_payee",
            "remove_payee"
        ]
    );
    let targets: Vec<Option<String>> =
        sqlx::query_scalar("SELECT target FROM operator_audit ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(
        !format!("{targets:?}").contains("FI1410093000123458"),
        "{targets:?}"
    );
}

/// Every "YYYY-MM-DD HH:MM[:SS[.fff]]" in `html` that is not followed by " UTC".
fn times_without_zone(html: &str) -> Vec<String> {
    let b = html.as_bytes();
    let shape = |at: usize, pattern: &[u8]| {
        pattern.iter().enumerate().all(|(i, p)| {
            b.get(at + i).is_some_and(|c| match p {
                b'9' => c.is_ascii_digit(),
                p => c == p,
            })
        })
    };
    let mut bare = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if shape(i, b"9999-99-99 99:99") {
            let mut end = i + 16;
            if shape(end, b":99") {
                end += 3;
                if shape(end, b".999") {
                    end += 4;
                }
            }
            if !html[end..].starts_with(" UTC") {
                bare.push(html[i..end].to_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    bare
}

#[tokio::test]
async fn the_status_filters_offer_the_status_sets_and_refuse_an_unknown_value_naming_it() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Filter shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let id = p["id"].as_str().unwrap();
    let cookie = session_cookie(&app).await;

    let (status, html) = get(&app, "/console/payments", &cookie).await;
    assert_eq!(status, 200);
    for shown in [
        r#"<select name="status""#,
        r#"<select name="bank_status""#,
        r#"<option value="">any</option>"#,
        r#"<option value="awaiting_authorization">"#,
        r#"<option value="authorization_failed">"#,
        r#"<option value="PendingUserApproval">"#,
        r#"<option value="UserApprovalTimeout">"#,
    ] {
        assert!(html.contains(shown), "{shown:?} missing in {html}");
    }

    // "Paid" (the bank's spelling) or a typo is refused naming the field, never an empty list.
    for (query, named) in [
        (
            "status=Paid",
            "status: &quot;Paid&quot; is not a payment status",
        ),
        (
            "status=payed",
            "status: &quot;payed&quot; is not a payment status",
        ),
        (
            "bank_status=Payed",
            "bank_status: &quot;Payed&quot; is not a Nordea or Berlin Group status",
        ),
    ] {
        let (status, html) = get(&app, &format!("/console/payments?{query}"), &cookie).await;
        assert_eq!(status, 400, "{query}");
        assert!(html.contains(named), "{named:?} missing in {html}");
        assert!(!html.contains(id), "{query}: no results beside the error");
    }

    let (status, html) = get(
        &app,
        "/console/payments?status=awaiting_authorization&bank_status=PendingUserApproval",
        &cookie,
    )
    .await;
    assert_eq!(status, 200);
    assert!(html.contains(id), "{html}");
    assert!(
        html.contains(r#"<option value="awaiting_authorization" selected>"#),
        "the chosen status stays chosen: {html}"
    );
    let (status, html) = get(
        &app,
        "/console/payments?status=any&bank_status=any",
        &cookie,
    )
    .await;
    assert_eq!(status, 200);
    assert!(html.contains(id), "\"any\" filters nothing: {html}");

    let (status, html) = get(&app, "/console/payments?status=paid", &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains("No payments match"), "{html}");
    assert!(!html.contains("<table"), "no empty table: {html}");
}

#[tokio::test]
async fn every_time_the_console_shows_carries_its_zone() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Zoned shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let id = p["id"].as_str().unwrap();
    let cookie = session_cookie(&app).await;
    for path in [
        "/console/payments".to_owned(),
        format!("/console/payments/{id}"),
        "/console/audit".to_owned(),
    ] {
        let (status, html) = get(&app, &path, &cookie).await;
        assert_eq!(status, 200);
        assert!(html.contains(" UTC<"), "{path}: no time shown? {html}");
        assert_eq!(times_without_zone(&html), Vec::<String>::new(), "{path}");
    }
}

#[tokio::test]
async fn empty_console_pages_say_so_instead_of_showing_empty_tables() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let cookie = session_cookie(&app).await;
    let (status, html) = get(&app, "/console/attention", &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains("Nothing needs attention"), "{html}");
    assert!(!html.contains("<table"), "{html}");
    let (_, html) = get(&app, "/console/payments", &cookie).await;
    assert!(html.contains("No payments match"), "{html}");
    let (_, html) = get(&app, "/console/merchants", &cookie).await;
    assert!(html.contains("No merchants"), "{html}");

    let m = app.create_merchant("Quiet shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let (_, html) = get(
        &app,
        &format!("/console/payments/{}", p["id"].as_str().unwrap()),
        &cookie,
    )
    .await;
    assert!(html.contains("No deliveries"), "{html}");
    let (_, html) = get(
        &app,
        &format!("/console/merchants/{}/payees", m.id),
        &cookie,
    )
    .await;
    assert!(html.contains("No payees registered"), "{html}");
}

/// A payee or a payee policy no operator wrote under the ledger key (an insider's SQL) is
/// flagged on the merchant's payees page, with why and what vouches for it; an operator's
/// registration of the same account vouches for it and the flag goes.
#[tokio::test]
async fn the_payees_page_flags_a_payee_and_a_policy_written_in_sql() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Flagged shop").await;
    let merchant = m.id.to_string();
    let cookie = session_cookie(&app).await;
    let page = format!("/console/merchants/{merchant}/payees");
    let back = page.as_str();
    let (done, _) = act(
        &app,
        &cookie,
        &[
            ("action", "add_payee"),
            ("merchant", &merchant),
            ("account_type", "IBAN"),
            ("account", "FI1410093000123458"),
            ("back", back),
        ],
    )
    .await;
    assert_eq!(done.status(), 303);
    let (_, html) = get(&app, &page, &cookie).await;
    assert!(!html.contains("not trusted"), "{html}");
    assert!(html.contains("<td>Yes</td>"), "{html}");

    sqlx::query(
        "INSERT INTO merchant_payees (merchant_id, account_type, account) VALUES ($1, 'IBAN', 'FI2112345600000785')",
    )
    .bind(m.id)
    .execute(&app.pool)
    .await
    .unwrap();
    let (_, html) = get(&app, &page, &cookie).await;
    assert!(html.contains("1 payee is not trusted"), "{html}");
    assert!(
        html.contains("<span class=\"bad\">No</span>: the payee has no ledger MAC (added in SQL"),
        "{html}"
    );
    assert!(
        html.contains("Payee policy: <strong>open</strong>"),
        "{html}"
    );

    // The policy: open as an operator set it, then flipped to registered and back in SQL.
    sqlx::query("UPDATE merchants SET payees = 'registered' WHERE id = $1")
        .bind(m.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, html) = get(&app, &page, &cookie).await;
    assert!(
        html.contains("Payee policy not trusted: </strong>the payee policy is not what an operator set (edited)"),
        "{html}"
    );
    assert!(html.contains("(<code>registered</code>)"), "{html}");

    // The operator vouches for both: no flag left.
    for form in [
        vec![
            ("action", "set_payees"),
            ("merchant", merchant.as_str()),
            ("policy", "open"),
        ],
        vec![
            ("action", "add_payee"),
            ("merchant", merchant.as_str()),
            ("account_type", "IBAN"),
            ("account", "FI2112345600000785"),
        ],
    ] {
        let mut form = form;
        form.push(("back", back));
        let (done, _) = act(&app, &cookie, &form).await;
        assert_eq!(done.status(), 303);
    }
    let (_, html) = get(&app, &page, &cookie).await;
    assert!(!html.contains("not trusted"), "{html}");
    assert!(!html.contains("class=\"bad\""), "{html}");
    assert!(
        html.contains("Payee policy: <strong>open</strong>"),
        "{html}"
    );
}

/// Payee rows written in SQL in a form pisgate never stores were left off the payees page
/// (one that does not parse) or shown normalised with a Remove button that removed nothing.
/// Each is now listed as stored and not trusted, with why, and its Remove removes it.
#[tokio::test]
async fn the_payees_page_lists_and_removes_rows_in_no_form_pisgate_stores() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Odd rows shop").await;
    let merchant = m.id.to_string();
    let cookie = session_cookie(&app).await;
    let page = format!("/console/merchants/{merchant}/payees");
    let rows = [
        ("IBAN", "fi21 1234 5600 0007 85", "normalised form"),
        ("IBAN", "NOT-AN-IBAN-4711", "not a valid account"),
        ("BBAN_XX", "12345678", "account type"),
    ];
    for (t, account, _) in rows {
        sqlx::query(
            "INSERT INTO merchant_payees (merchant_id, account_type, account) VALUES ($1, $2, $3)",
        )
        .bind(m.id)
        .bind(t)
        .bind(account)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let (_, html) = get(&app, &page, &cookie).await;
    assert!(html.contains("3 payees are not trusted"), "{html}");
    for (t, account, why) in rows {
        assert!(
            html.contains(&format!("<td>{t}</td><td><code>{account}</code>")),
            "{account}: {html}"
        );
        assert!(html.contains(why), "{why}: {html}");
    }
    for (t, account, _) in rows {
        let (done, confirm) = act(
            &app,
            &cookie,
            &[
                ("action", "remove_payee"),
                ("merchant", &merchant),
                ("account_type", t),
                ("account", account),
                ("back", &page),
            ],
        )
        .await;
        // What the page says (its form carries the row back, as every confirmation's does).
        let shown = confirm
            .split("<main>")
            .nth(1)
            .unwrap()
            .split("<form")
            .next()
            .unwrap();
        assert!(shown.contains("remove payee"), "{confirm}");
        assert!(
            !shown.contains(account),
            "unmasked on the confirmation: {shown}"
        );
        assert_eq!(done.status(), 303, "{account}");
        let (_, html) = get(&app, &page, &cookie).await;
        assert!(!html.contains(account), "{account} still listed: {html}");
    }
    let (_, html) = get(&app, &page, &cookie).await;
    assert!(html.contains("No payees registered."), "{html}");
    let targets: Vec<String> = sqlx::query_scalar(
        "SELECT target FROM operator_audit WHERE action = 'remove_payee' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        targets,
        [
            format!("payee FI…0785 of merchant {merchant}"),
            format!("payee NO…4711 (not a valid account) of merchant {merchant}"),
            format!("payee BBAN_XX…5678 (not a valid account) of merchant {merchant}"),
        ]
    );
}

/// A date chrono reads but PostgreSQL cannot hold (`from=-5000-01-01`) was a 500, and one
/// chrono cannot add a day to (`to=+262142-12-31`) a panic; NUL in a text field (search,
/// sign-in email, payee label) a 500 from PostgreSQL. Each is now the console's ordinary
/// refusal, and nothing but the audit row of the refused sign-in is written.
#[tokio::test]
async fn far_dates_and_nul_characters_are_refused_by_the_console_never_failed() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Range shop").await;
    let p = app.create_payment(&m.api_key, &body("FI")).await;
    let id = p["id"].as_str().unwrap();
    let cookie = session_cookie(&app).await;
    for (query, named) in [
        ("to=%2B262142-12-31", "to: a date as YYYY-MM-DD"),
        ("to=%2B262143-12-31", "to: a date as YYYY-MM-DD"),
        ("from=-5000-01-01", "from: a date as YYYY-MM-DD"),
        (
            "reference=a%00b",
            "reference: must not contain control characters",
        ),
        ("psu_id=%00", "psu_id: must not contain control characters"),
    ] {
        let (status, html) = get(&app, &format!("/console/payments?{query}"), &cookie).await;
        assert_eq!(status, 400, "{query}: {html}");
        assert!(html.contains(named), "{named:?} missing in {html}");
        assert!(!html.contains(id), "{query}: no results beside the error");
    }
    let (status, html) = get(
        &app,
        "/console/payments?from=2000-01-01&to=9999-12-31",
        &cookie,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        html.contains(id),
        "the widest plain dates still search: {html}"
    );

    // Sign-in: an email with NUL is an unknown one, refused and audited as such.
    let r = sign_in(&app, "ops\0@pisgate.example", PASSWORD).await;
    assert_eq!(r.status(), 401);
    assert!(cookie_value(&cookies(&r), "pisgate_console").is_none());
    assert!(r.text().await.unwrap().contains("Wrong email or password"));
    let failed: Vec<String> =
        sqlx::query_scalar("SELECT email FROM operator_audit WHERE action = 'sign_in_failed'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(failed, ["ops\u{FFFD}@pisgate.example"]);

    // A payee label with NUL: refused with a sentence (audited as refused), not registered.
    let merchant = m.id.to_string();
    let (done, _) = act(
        &app,
        &cookie,
        &[
            ("action", "add_payee"),
            ("merchant", &merchant),
            ("account_type", "IBAN"),
            ("account", "FI1410093000123458"),
            ("label", "pay\0outs"),
        ],
    )
    .await;
    assert_eq!(done.status(), 409);
    assert!(done.text().await.unwrap().contains("control characters"));
    let payees: i64 = sqlx::query_scalar("SELECT count(*) FROM merchant_payees")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(payees, 0);
    assert_eq!(
        audit_actions(&app).await,
        ["signed_in", "sign_in_failed", "add_payee"]
    );
}

/// An action's `back` is followed only when it is a plain console path: one with a control
/// character (which a Location header cannot carry) or another origin goes back to the
/// attention page, from the confirmation page's Cancel link and after the action, never a
/// 500 after the action was done.
#[tokio::test]
async fn an_actions_back_link_is_a_console_path_or_the_attention_page() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Back link shop").await;
    let cookie = session_cookie(&app).await;
    let merchant = m.id.to_string();
    for back in [
        "/console/merchants\n",
        "https://evil.example/console/",
        "/console/x\u{7f}",
    ] {
        let (done, confirmation) = act(
            &app,
            &cookie,
            &[
                ("action", "disable_merchant"),
                ("merchant", &merchant),
                ("back", back),
            ],
        )
        .await;
        assert!(
            confirmation.contains(r#"<a href="/console/attention">Cancel</a>"#),
            "{back:?}: {confirmation}"
        );
        assert!(
            !confirmation.contains(r#"href="https://evil"#),
            "{confirmation}"
        );
        assert_eq!(done.status(), 303, "{back:?}");
        assert_eq!(done.headers()["location"], "/console/attention", "{back:?}");
    }
}

/// A control character in a payee form's account or account type (a NUL, which PostgreSQL
/// cannot store) is refused with a sentence, never a 500, and nothing is written. Before,
/// `remove_payee` sent the NUL to PostgreSQL and `add_payee` copied it into the audit row's
/// target: both answered "Something went wrong".
#[tokio::test]
async fn a_control_character_in_a_payee_form_is_refused_not_a_500() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Nul shop").await;
    let merchant = m.id.to_string();
    let cookie = session_cookie(&app).await;
    let page = format!("/console/merchants/{merchant}/payees");
    for (action, account_type, account) in [
        ("remove_payee", "IBAN", "\0"),
        ("add_payee", "IBAN", "FI21123456000007\0\0"),
        ("add_payee", "IB\0AN", "FI2112345600000785"),
        ("remove_payee", "IBAN", "FI211234560000\u{7}785"),
    ] {
        let (done, _) = act(
            &app,
            &cookie,
            &[
                ("action", action),
                ("merchant", &merchant),
                ("account_type", account_type),
                ("account", account),
                ("back", &page),
            ],
        )
        .await;
        let status = done.status();
        let body = done.text().await.unwrap();
        assert!(
            status.is_client_error() || status.is_success(),
            "{action} {account:?}: {status} {body}"
        );
        assert!(
            body.contains("control characters"),
            "{action} {account:?}: {body}"
        );
    }
    let payees: i64 =
        sqlx::query_scalar("SELECT count(*) FROM merchant_payees WHERE merchant_id = $1")
            .bind(m.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(payees, 0);
}
