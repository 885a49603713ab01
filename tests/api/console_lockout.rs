//! The console's lock-out holds under parallel guesses, every sign-in, failure, lock-out and
//! sign-out is audited, an action and its audit row commit together, and operators can be
//! disabled, enabled and given a new password from the CLI (issue 22, item 5).

use crate::cli::pisgate;
use crate::console::{
    EMAIL, PASSWORD, act, audit_actions, cookie_value, cookies, create_operator, get, hidden_csrf,
    session_cookie, sign_in,
};
use crate::helpers::{TestApp, spawn_app};
use secrecy::ExposeSecret;
use sha2::Digest;
use std::io::Write;
use std::process::Stdio;

/// A sign-in form as a browser holds it: its CSRF cookie and field.
struct LoginForm {
    cookie: String,
    csrf: String,
}

async fn login_form(app: &TestApp) -> LoginForm {
    let form = app
        .client
        .get(app.admin_url("/console/login"))
        .send()
        .await
        .unwrap();
    let cookie = cookie_value(&cookies(&form), "pisgate_console_login").unwrap();
    let csrf = hidden_csrf(&form.text().await.unwrap());
    LoginForm { cookie, csrf }
}

/// Posts a sign-in; returns the status and whether a session cookie was set.
async fn post_login(
    client: reqwest::Client,
    url: String,
    form: LoginForm,
    password: String,
) -> (u16, bool) {
    let r = client
        .post(url)
        .header("cookie", format!("pisgate_console_login={}", form.cookie))
        .form(&[
            ("csrf", form.csrf.as_str()),
            ("email", EMAIL),
            ("password", password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let session = cookie_value(&cookies(&r), "pisgate_console").is_some_and(|v| !v.is_empty());
    (r.status().as_u16(), session)
}

/// 40 sign-ins at once, the right password at `right`: the answers in order.
async fn forty_at_once(app: &TestApp, right: usize, delay_right: bool) -> Vec<(u16, bool)> {
    let mut forms = Vec::new();
    for _ in 0..40 {
        forms.push(login_form(app).await);
    }
    let url = app.admin_url("/console/login");
    let mut tasks = Vec::new();
    for (i, form) in forms.into_iter().enumerate() {
        let password = if i == right {
            PASSWORD.to_owned()
        } else {
            format!("wrong password number {i}")
        };
        let (client, url) = (app.client.clone(), url.clone());
        let late = delay_right && i == right;
        tasks.push(tokio::spawn(async move {
            if late {
                // Sent while the guesses before it are still being checked.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            post_login(client, url, form, password).await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

async fn count_audit(app: &TestApp, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM operator_audit WHERE action = $1")
        .bind(action)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn forty_parallel_sign_ins_with_the_right_password_last_issue_no_session() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let answers = forty_at_once(&app, 39, true).await;
    assert!(
        answers
            .iter()
            .all(|(status, session)| *status == 401 && !session),
        "{answers:?}"
    );
    // Five attempts were counted and checked; every other one was refused unchecked.
    assert_eq!(count_audit(&app, "sign_in_failed").await, 5);
    assert_eq!(count_audit(&app, "locked_out").await, 1);
    assert_eq!(count_audit(&app, "sign_in_refused").await, 35);
    // And the right password is refused while the lock holds.
    let r = sign_in(&app, EMAIL, PASSWORD).await;
    assert_eq!(r.status(), 401);
    assert!(cookie_value(&cookies(&r), "pisgate_console").is_none());
}

#[tokio::test]
async fn forty_parallel_sign_ins_check_at_most_five_passwords_wherever_the_right_one_is() {
    for right in [0, 17] {
        let app = spawn_app().await;
        assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
        let answers = forty_at_once(&app, right, false).await;
        // Never more than five wrong passwords checked, wherever the right one lands: its
        // success takes back only itself and failures settled before it, never the guesses in
        // flight beside it (which once let up to nine through). Five attempts were counted:
        // the lock was reached.
        let failed = count_audit(&app, "sign_in_failed").await;
        let signed = count_audit(&app, "signed_in").await;
        assert!(
            failed <= 5,
            "right at {right}: {failed} wrong passwords checked: {answers:?}"
        );
        assert!(
            failed + signed >= 5,
            "right at {right}: the lock was never reached"
        );
        assert_eq!(
            count_audit(&app, "sign_in_refused").await,
            40 - failed - signed,
            "right at {right}"
        );
        let sessions = answers.iter().filter(|(_, s)| *s).count();
        // The right one gets in only when it was among the five counted before the lock.
        assert_eq!(
            sessions as i64,
            count_audit(&app, "signed_in").await,
            "{answers:?}"
        );
        assert!(sessions <= 1);
        for (i, (status, session)) in answers.iter().enumerate() {
            if i != right {
                assert_eq!((*status, *session), (401, false), "guess {i}");
            }
        }
    }
}

#[tokio::test]
async fn sign_in_failure_lock_out_and_sign_out_are_audited() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    assert_eq!(sign_in(&app, EMAIL, "wrong password!").await.status(), 401);
    assert_eq!(
        sign_in(&app, "nobody@pisgate.example", PASSWORD)
            .await
            .status(),
        401
    );
    let cookie = session_cookie(&app).await;
    let (_, html) = get(&app, "/console/payments", &cookie).await;
    assert!(html.contains("Sign out everywhere"), "{html}");
    let r = app
        .client
        .post(app.admin_url("/console/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", hidden_csrf(&html).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    for _ in 0..5 {
        assert_eq!(sign_in(&app, EMAIL, "wrong password!").await.status(), 401);
    }
    assert_eq!(sign_in(&app, EMAIL, PASSWORD).await.status(), 401);
    assert_eq!(
        audit_actions(&app).await,
        [
            "sign_in_failed",
            "sign_in_failed",
            "signed_in",
            "signed_out",
            "sign_in_failed",
            "sign_in_failed",
            "sign_in_failed",
            "sign_in_failed",
            "sign_in_failed",
            "locked_out",
            "sign_in_refused",
        ]
    );
    let unknown: (Option<uuid::Uuid>, String) = sqlx::query_as(
        "SELECT operator_id, email FROM operator_audit ORDER BY id LIMIT 1 OFFSET 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(unknown, (None, "nobody@pisgate.example".to_owned()));
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session_of_the_operator_only() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    assert!(
        create_operator(&app, "other@pisgate.example", PASSWORD)
            .status
            .success()
    );
    let laptop = session_cookie(&app).await;
    let phone = session_cookie(&app).await;
    let r = sign_in(&app, "other@pisgate.example", PASSWORD).await;
    let other = format!(
        "pisgate_console={}",
        cookie_value(&cookies(&r), "pisgate_console").unwrap()
    );
    let (_, html) = get(&app, "/console/payments", &phone).await;
    let r = app
        .client
        .post(app.admin_url("/console/logout"))
        .header("cookie", &phone)
        .form(&[("csrf", hidden_csrf(&html).as_str()), ("everywhere", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(get(&app, "/console/payments", &laptop).await.0, 303);
    assert_eq!(get(&app, "/console/payments", &phone).await.0, 303);
    assert_eq!(get(&app, "/console/payments", &other).await.0, 200);
    let detail: serde_json::Value = sqlx::query_scalar(
        "SELECT detail FROM operator_audit WHERE action = 'signed_out_everywhere'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(detail["sessions"], 2);
}

#[tokio::test]
async fn a_console_action_whose_audit_row_cannot_be_written_is_not_done() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let m = app.create_merchant("Audited shop").await;
    let cookie = session_cookie(&app).await;
    sqlx::query(
        "CREATE FUNCTION refuse_disable_audit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.action = 'disable_merchant' THEN RAISE EXCEPTION 'audit refused'; END IF;
             RETURN NEW;
         END $$",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_disable_audit BEFORE INSERT ON operator_audit
         FOR EACH ROW EXECUTE FUNCTION refuse_disable_audit()",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let merchant = m.id.to_string();
    let (done, _) = act(
        &app,
        &cookie,
        &[("action", "disable_merchant"), ("merchant", &merchant)],
    )
    .await;
    assert_eq!(done.status(), 500);
    let status: String = sqlx::query_scalar("SELECT status FROM merchants WHERE id = $1")
        .bind(m.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "active", "the action was undone with its audit row");
    assert_eq!(app.get_as("/v1/merchant", &m.api_key).await.status(), 200);
    // Another action, whose audit row is written, is done.
    let (done, _) = act(
        &app,
        &cookie,
        &[("action", "rotate_key"), ("merchant", &merchant)],
    )
    .await;
    assert_eq!(done.status(), 200);
    assert_eq!(audit_actions(&app).await, ["signed_in", "rotate_key"]);
}

/// `pisgate operator <command> --email …`, with `stdin` on standard input.
fn operator(app: &TestApp, command: &str, email: &str, stdin: &str) -> std::process::Output {
    let mut child = pisgate()
        .args(["operator", command, "--email", email])
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
    let _ = writeln!(child.stdin.take().unwrap(), "{stdin}");
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn operator_disable_enable_and_reset_password_from_the_cli() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let session = session_cookie(&app).await;

    let out = operator(&app, "disable", "Ops@Pisgate.example", "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["sessions_ended"], 1);
    assert_eq!(get(&app, "/console/payments", &session).await.0, 303);
    assert_eq!(sign_in(&app, EMAIL, PASSWORD).await.status(), 401);

    let out = operator(&app, "enable", EMAIL, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let session = session_cookie(&app).await;

    let new_password = "a brand new operator password";
    let short = operator(&app, "reset-password", EMAIL, "short");
    assert_eq!(short.status.code(), Some(1));
    let out = operator(&app, "reset-password", EMAIL, new_password);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(&app, "/console/payments", &session).await.0, 303);
    assert_eq!(sign_in(&app, EMAIL, PASSWORD).await.status(), 401);
    assert_eq!(sign_in(&app, EMAIL, new_password).await.status(), 303);

    let unknown = operator(&app, "disable", "nobody@pisgate.example", "");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no such operator"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let actions = audit_actions(&app).await;
    for a in ["operator_disabled", "operator_enabled", "password_reset"] {
        assert!(actions.iter().any(|x| x == a), "{a}: {actions:?}");
    }
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM operators WHERE email = $1")
        .bind(EMAIL)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(new_password));
}

/// A locked operator can be let back in by `enable` (which clears the lock).
#[tokio::test]
async fn operator_enable_clears_a_lock() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    for _ in 0..5 {
        assert_eq!(sign_in(&app, EMAIL, "wrong password!").await.status(), 401);
    }
    assert_eq!(sign_in(&app, EMAIL, PASSWORD).await.status(), 401);
    assert!(operator(&app, "enable", EMAIL, "").status.success());
    assert_eq!(sign_in(&app, EMAIL, PASSWORD).await.status(), 303);
}

/// A sign-in whose password check began before `operator reset-password` and ended after it
/// (the old, leaked password was right when it was admitted) starts no session: the reset
/// wins, whatever the timing (the check queues behind others under a flood).
#[tokio::test]
async fn a_sign_in_checked_against_a_password_reset_meanwhile_starts_no_session() {
    use pisgate::ledger::operators::{self, AccountChange, Admission, Gate};
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let sessions = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM operator_sessions")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let admit = || async {
        match operators::admit(&app.pool, EMAIL, 5, chrono::Duration::minutes(15))
            .await
            .unwrap()
        {
            Gate::Admitted {
                id,
                password_hash,
                locks,
                settled_before,
                ..
            } => (
                id,
                Admission {
                    settled_before,
                    locks,
                    password_hash,
                },
            ),
            _ => panic!("the operator is not admitted"),
        }
    };
    let sign_in_with = |id, admitted: Admission| {
        let pool = app.pool.clone();
        async move {
            let expires = chrono::Utc::now() + chrono::Duration::hours(1);
            operators::sign_in(&pool, id, EMAIL, &[7u8; 32], "csrf", expires, &admitted)
                .await
                .unwrap()
        }
    };

    // The old password was checked right; the reset lands before the session is written.
    let (id, admitted) = admit().await;
    let new_hash = pisgate::api::console::password::hash("a brand new operator password").unwrap();
    let reset = operators::change_account(
        &app.pool,
        EMAIL,
        AccountChange::ResetPassword {
            password_hash: &new_hash,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        reset,
        operators::Changed::Done {
            sessions_ended: 0,
            disabled: false
        }
    );
    assert!(
        !sign_in_with(id, admitted).await,
        "a session after the reset"
    );
    assert_eq!(sessions().await, 0);

    // Without a reset in between, the same steps sign in (the guard is the reset, not the
    // steps).
    let (id, admitted) = admit().await;
    assert!(sign_in_with(id, admitted).await);
    assert_eq!(sessions().await, 1);
}

/// Whoever can write the database but holds no ledger key does not get into the console (and
/// so cannot register a payee, open a payee policy or rotate a key, which the console seals
/// with the key it holds): an operator inserted in SQL, a known password's hash set on an
/// operator, a disabled operator re-enabled, a session inserted (or given a real session's
/// MAC) each sign in nobody, and `ledger verify` names the operators. What `pisgate operator`
/// writes with the key is trusted as before.
#[tokio::test]
async fn an_operator_or_a_session_written_in_sql_opens_no_console() {
    let app = spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let keys = crate::helpers::ledger_keys();
    let verify = || pisgate::ledger::events::verify_all(&app.pool, &keys);
    let report = verify().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.operators_checked, 1);
    let known = "the insider's own password";
    let known_hash = pisgate::api::console::password::hash(known).unwrap();
    let sql = |q: &'static str| {
        let pool = app.pool.clone();
        let hash = known_hash.clone();
        async move { sqlx::query(q).bind(hash).execute(&pool).await.unwrap() }
    };

    // An operator inserted in SQL (an id ordered after the real one's, so that `verify`'s
    // first broken operator below is the real one once it is edited too).
    sql("INSERT INTO operators (id, email, password_hash) VALUES ('f0000000-0000-4000-8000-000000000001', 'mallory@pisgate.example', $1)").await;
    assert_eq!(
        sign_in(&app, "mallory@pisgate.example", known)
            .await
            .status(),
        401
    );
    let report = verify().await.unwrap();
    assert_eq!(report.broken_operators, 1, "{report:?}");
    let named = report.first_broken_operator.unwrap();
    assert!(named.contains("inserted in SQL"), "{named}");
    assert!(
        !named.contains("mallory"),
        "an email in a log line: {named}"
    );
    // Its audit rows keep it (disabled in SQL, still without a MAC: verify keeps naming it).
    sql("UPDATE operators SET disabled_at = now() WHERE email = 'mallory@pisgate.example' AND $1 <> ''").await;

    // A real operator given a known password's hash in SQL: neither password signs in.
    sql("UPDATE operators SET password_hash = $1 WHERE disabled_at IS NULL").await;
    assert_eq!(sign_in(&app, EMAIL, known).await.status(), 401);
    assert_eq!(sign_in(&app, EMAIL, PASSWORD).await.status(), 401);
    let report = verify().await.unwrap();
    assert!(
        report
            .first_broken_operator
            .as_deref()
            .unwrap()
            .contains("(edited)"),
        "{report:?}"
    );
    // The operator's own reset (with the key) seals a new password; the account, whose row
    // was edited, stays disabled until an operator enables it.
    let out = operator(&app, "reset-password", EMAIL, PASSWORD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sign_in(&app, EMAIL, PASSWORD).await.status(), 401);
    assert!(operator(&app, "enable", EMAIL, "").status.success());
    let cookie = session_cookie(&app).await;
    let report = verify().await.unwrap();
    assert_eq!(
        report.broken_operators, 1,
        "only mallory, disabled in SQL without a MAC: {report:?}"
    );

    // A session inserted in SQL for that operator, then one given the real session's MAC.
    let forged = "a-session-token-nobody-was-given";
    let forged_hash = sha2::Sha256::digest(forged.as_bytes()).to_vec();
    for copy_mac in [false, true] {
        sqlx::query(
            "INSERT INTO operator_sessions (token_hash, operator_id, csrf_token, expires_at, mac, mac_key_id)
             SELECT $1, id, 'csrf', now() + interval '1 hour',
                    CASE WHEN $2 THEN (SELECT mac FROM operator_sessions LIMIT 1) END,
                    CASE WHEN $2 THEN (SELECT mac_key_id FROM operator_sessions LIMIT 1) END
               FROM operators WHERE disabled_at IS NULL",
        )
        .bind(&forged_hash)
        .bind(copy_mac)
        .execute(&app.pool)
        .await
        .unwrap();
        let (status, _) = get(
            &app,
            "/console/payments",
            &format!("pisgate_console={forged}"),
        )
        .await;
        assert_eq!(
            status, 303,
            "a forged session (MAC copied: {copy_mac}) is sent to sign in"
        );
        sqlx::query("DELETE FROM operator_sessions WHERE token_hash = $1")
            .bind(&forged_hash)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    assert_eq!(
        get(&app, "/console/payments", &cookie).await.0,
        200,
        "the real session"
    );

    // A session kept aside before the operator is disabled, put back, and the operator
    // re-enabled in SQL: the session is refused (the operator's MAC says disabled), and so
    // is a sign-in; verify names the operator. `enable` (whose hash is authentic) lets them
    // back.
    sqlx::query("CREATE TABLE kept_session AS SELECT * FROM operator_sessions")
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(operator(&app, "disable", EMAIL, "").status.success());
    assert_eq!(get(&app, "/console/payments", &cookie).await.0, 303);
    sql("UPDATE operators SET disabled_at = NULL WHERE email <> 'mallory@pisgate.example' AND $1 <> ''").await;
    sqlx::query("INSERT INTO operator_sessions SELECT * FROM kept_session")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        get(&app, "/console/payments", &cookie).await.0,
        303,
        "a session put back for an operator re-enabled in SQL"
    );
    assert_eq!(sign_in(&app, EMAIL, PASSWORD).await.status(), 401);
    assert_eq!(verify().await.unwrap().broken_operators, 2);
    assert!(operator(&app, "enable", EMAIL, "").status.success());
    let cookie = session_cookie(&app).await;

    // An operator's email changed in SQL: their live session is refused.
    sql("UPDATE operators SET email = 'other@pisgate.example' WHERE email = 'ops@pisgate.example' AND $1 <> ''").await;
    assert_eq!(get(&app, "/console/payments", &cookie).await.0, 303);
    sql("UPDATE operators SET email = 'ops@pisgate.example' WHERE email = 'other@pisgate.example' AND $1 <> ''").await;

    // A known hash set in SQL on the enabled account, then an operator disables it (say,
    // after `ledger verify` named it): `disable` seals no such hash, so `enable` refuses.
    sql("UPDATE operators SET password_hash = $1 WHERE email = 'ops@pisgate.example'").await;
    assert!(operator(&app, "disable", EMAIL, "").status.success());
    assert_eq!(operator(&app, "enable", EMAIL, "").status.code(), Some(1));
    assert_eq!(sign_in(&app, EMAIL, known).await.status(), 401);
    let out = operator(&app, "reset-password", EMAIL, PASSWORD);
    assert!(out.status.success());
    assert!(operator(&app, "enable", EMAIL, "").status.success());
    // Mallory, inserted in SQL, disabled by an operator, then enabled: refused as well.
    let out = operator(&app, "disable", "mallory@pisgate.example", "");
    assert!(out.status.success());
    assert_eq!(
        operator(&app, "enable", "mallory@pisgate.example", "")
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        sign_in(&app, "mallory@pisgate.example", known)
            .await
            .status(),
        401
    );

    // Disabled, then given a known password's hash in SQL: `enable` seals no such hash.
    assert!(operator(&app, "disable", EMAIL, "").status.success());
    sql("UPDATE operators SET password_hash = $1 WHERE email = 'ops@pisgate.example'").await;
    let out = operator(&app, "enable", EMAIL, "");
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("reset-password"), "{said}");
    assert_eq!(sign_in(&app, EMAIL, known).await.status(), 401);
    // A new password from the CLI vouches (the account stays disabled until enabled).
    let out = operator(&app, "reset-password", EMAIL, PASSWORD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sign_in(&app, EMAIL, PASSWORD).await.status(),
        401,
        "still disabled"
    );
    assert!(operator(&app, "enable", EMAIL, "").status.success());
    assert_eq!(sign_in(&app, EMAIL, PASSWORD).await.status(), 303);
    let refused: Vec<String> = sqlx::query_scalar(
        "SELECT detail->>'why' FROM operator_audit WHERE action = 'sign_in_refused' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        refused.iter().filter(|w| *w == "unsealed").count() >= 3,
        "{refused:?}"
    );
}

/// Opens the sign-in page and posts `email` and `password` as a client at `forwarded` behind
/// the trusted proxy; returns the answer.
async fn sign_in_from(
    app: &TestApp,
    forwarded: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let form = login_form(app).await;
    app.client
        .post(app.admin_url("/console/login"))
        .header("cookie", format!("pisgate_console_login={}", form.cookie))
        .header("x-forwarded-for", forwarded)
        .form(&[
            ("csrf", form.csrf.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

/// A flood of sign-ins over many unknown emails from one address: each cost a full password
/// check (the dummy one) and an audit row, with no account ever locked, and took the checks'
/// slots from operators. Past 50 failures the address is refused with 429 and Retry-After
/// before any check or database write (one `sign_in_throttled` audit row), the right password
/// from there included; an operator at another address signs in, and a success clears an
/// address's count.
#[tokio::test]
async fn a_flood_of_sign_ins_from_one_address_is_refused_before_any_check() {
    use pisgate::api::console::throttle::FAILURES_PER_SOURCE;
    let app =
        crate::helpers::spawn_app_with(&[("PISGATE__SERVER__TRUSTED_PROXIES", "127.0.0.1")]).await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let flooder = "198.51.100.7";
    for batch in 0..FAILURES_PER_SOURCE / 10 {
        let emails: Vec<String> = (0..10)
            .map(|i| format!("nobody-{batch}-{i}@pisgate.example"))
            .collect();
        let answers = futures_util::future::join_all(
            emails
                .iter()
                .map(|email| sign_in_from(&app, flooder, email, "some guess at all")),
        )
        .await;
        for r in answers {
            assert_eq!(r.status(), 401);
        }
    }
    assert_eq!(
        count_audit(&app, "sign_in_failed").await,
        i64::from(FAILURES_PER_SOURCE)
    );

    let refused = sign_in_from(&app, flooder, "nobody-more@pisgate.example", "x").await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&wait), "{wait}");
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins")
    );
    let right = sign_in_from(&app, flooder, EMAIL, PASSWORD).await;
    assert_eq!(
        right.status(),
        429,
        "refused before the password is looked at"
    );
    assert_eq!(
        count_audit(&app, "sign_in_failed").await,
        i64::from(FAILURES_PER_SOURCE),
        "nothing more checked or written"
    );
    assert_eq!(count_audit(&app, "sign_in_throttled").await, 1);

    // Another address signs in; there a success clears the count of earlier failures.
    let other = "198.51.100.8";
    for _ in 0..3 {
        assert_eq!(
            sign_in_from(&app, other, "nobody@pisgate.example", "x")
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        sign_in_from(&app, other, EMAIL, PASSWORD).await.status(),
        303
    );
    assert_eq!(count_audit(&app, "signed_in").await, 1);
}
