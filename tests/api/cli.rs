//! The binary as an operator runs it: settings failures stop it with one clear line.

use crate::helpers::{
    CLIENT_ID, CLIENT_SECRET, LEDGER_KEY, TOKEN_KEY, config_dir, fixture, fresh_database,
};
use pisgate::ledger::Db;
use std::process::{Command, Output};

pub fn pisgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pisgate"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PISGATE_CONFIG_DIR", config_dir())
        .env("PISGATE__ADMIN__LISTEN", "127.0.0.1:0")
        .env("PISGATE__NORDEA__CLIENT_ID", CLIENT_ID)
        .env("PISGATE__NORDEA__CLIENT_SECRET", CLIENT_SECRET)
        .env(
            "PISGATE__NORDEA__PRIVATE_KEY_FILE",
            fixture("kat-private.pem"),
        )
        .env("PISGATE__TOKENS__ENCRYPTION_KEY", TOKEN_KEY)
        .env("PISGATE__LEDGER__KEY", LEDGER_KEY);
    cmd
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_missing_database_url_stops_serve_naming_the_setting() {
    let out = pisgate().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("PISGATE__DATABASE__URL"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
}

#[test]
fn a_malformed_setting_stops_serve_naming_the_setting() {
    let out = pisgate()
        .arg("serve")
        .env("PISGATE__DATABASE__URL", "postgres://localhost/x")
        .env("PISGATE__SERVER__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("PISGATE__SERVER__LISTEN"),
        "{}",
        stderr(&out)
    );

    let out = pisgate()
        .arg("serve")
        .env("PISGATE__DATABASE__URL", "postgres://localhost/x")
        .env("PISGATE__RATE_LIMIT__WINDOW_SECS", "a minute")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("PISGATE__RATE_LIMIT__WINDOW_SECS"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unknown_environment_file_stops_serve() {
    let out = pisgate()
        .arg("serve")
        .env("PISGATE_ENV", "staging-typo")
        .env("PISGATE__DATABASE__URL", "postgres://localhost/x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("staging-typo"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_database_stops_serve_with_a_clear_message() {
    // A port nothing listens on: bind one, note it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = pisgate()
        .arg("serve")
        .env(
            "PISGATE__DATABASE__URL",
            format!("postgres://postgres:secret-pw@127.0.0.1:{port}/x"),
        )
        .env("PISGATE__DATABASE__ACQUIRE_TIMEOUT_SECS", "2")
        .env("PISGATE__SERVER__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot connect to the database"), "{err}");
    assert!(!err.contains("secret-pw"), "the password leaked: {err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret-pw"));
}

#[tokio::test]
async fn migrate_then_merchant_create_list_disable() {
    let url = fresh_database().await; // already migrated: migrate must be a no-op
    let out = pisgate()
        .arg("migrate")
        .env("PISGATE__DATABASE__URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let out = pisgate()
        .args([
            "merchant",
            "create",
            "--name",
            "CLI shop",
            "--return-origin",
            "https://cli.example/",
        ])
        .env("PISGATE__DATABASE__URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["api_key"].as_str().unwrap().starts_with("pgk_"));
    assert_eq!(
        created.as_object().unwrap().len(),
        2,
        "only id and api_key: {created}"
    );

    let out = pisgate()
        .args(["merchant", "list"])
        .env("PISGATE__DATABASE__URL", &url)
        .output()
        .unwrap();
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(
        listed.contains(&id) && listed.contains("https://cli.example"),
        "{listed}"
    );
    assert!(
        !listed.contains("pgk_"),
        "list must never show keys: {listed}"
    );

    let out = pisgate()
        .args(["merchant", "disable", &id])
        .env("PISGATE__DATABASE__URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""status":"disabled""#));
}

#[test]
fn merchant_create_refuses_an_insecure_origin() {
    let out = pisgate()
        .args([
            "merchant",
            "create",
            "--name",
            "x",
            "--return-origin",
            "http://shop.example",
        ])
        .env("PISGATE__DATABASE__URL", "postgres://127.0.0.1:1/x")
        .env("PISGATE__DATABASE__ACQUIRE_TIMEOUT_SECS", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("--return-origin") && err.contains("https"),
        "{err}"
    );
}

#[tokio::test]
async fn ledger_verify_passes_on_an_intact_ledger_and_names_the_first_edited_event() {
    crate::helpers::install_ledger_key();
    let url = fresh_database().await;
    let pool = Db::from(sqlx::PgPool::connect(&url).await.unwrap());
    let (merchant, _) = pisgate::ledger::merchants::create(&pool, "Ledger shop", &[])
        .await
        .unwrap();
    let payment = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO payments (id, merchant_id, status, amount_minor, currency, country, request, return_url)
         VALUES ($1, $2, 'awaiting_authorization', 100, 'EUR', 'FI', '{}', 'https://x.example')",
    )
    .bind(payment)
    .bind(merchant.id)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO payment_polls (payment_id, next_poll_at) VALUES ($1, now())")
        .bind(payment)
        .execute(&pool)
        .await
        .unwrap();
    let mut conn = pool.pool().acquire().await.unwrap();
    for kind in ["created", "initiated", "callback"] {
        pisgate::ledger::events::append(
            &mut conn,
            payment,
            pisgate::ledger::events::NewEvent::new(kind),
        )
        .await
        .unwrap();
    }
    let ok = pisgate()
        .args(["ledger", "verify"])
        .env("PISGATE__DATABASE__URL", &url)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "ledger ok: 1 payment(s), 3 event(s), no checkpoint yet verified"
    );

    sqlx::query("ALTER TABLE payment_events DISABLE TRIGGER payment_events_append_only")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE payment_events SET detail = '{\"forged\": true}' WHERE payment_id = $1 AND seq = 2",
    )
    .bind(payment)
    .execute(&mut *conn)
    .await
    .unwrap();
    let broken = pisgate()
        .args(["ledger", "verify"])
        .env("PISGATE__DATABASE__URL", &url)
        .output()
        .unwrap();
    assert_eq!(broken.status.code(), Some(1));
    let err = stderr(&broken);
    assert!(
        err.contains(&payment.to_string()) && err.contains("seq 2"),
        "{err}"
    );
}

/// `pisgate check` against a sandbox on `base` with a fresh, migrated database.
async fn check(base: &str, secret: &str, key: &str) -> Output {
    let db = fresh_database().await;
    let mut cmd = pisgate();
    cmd.args(["check", "--json"])
        .envs(crate::helpers::database_env(&db))
        .env("PISGATE__NORDEA__ENVIRONMENT", "sandbox")
        .env("PISGATE__NORDEA__BASE_URL", format!("{base}/personal"))
        .env("PISGATE__NORDEA__CLIENT_SECRET", secret)
        .env("PISGATE__NORDEA__PRIVATE_KEY_FILE", fixture(key))
        .env("PISGATE__NORDEA__REQUEST_TIMEOUT_SECS", "5");
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn outcome<'r>(r: &'r serde_json::Value, name: &str) -> (&'r str, &'r str) {
    let c = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {r}"));
    (
        c["outcome"].as_str().unwrap(),
        c["detail"].as_str().unwrap(),
    )
}

#[tokio::test]
async fn check_passes_against_the_sandbox() {
    let (_sandbox, base) = crate::helpers::spawn_sandbox(|_| {}).await;
    let out = check(&base, CLIENT_SECRET, "kat-private.pem").await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["ok"], true);
    for name in [
        "settings",
        "key",
        "database",
        "network",
        "credentials",
        "signature",
        "clock",
    ] {
        assert_eq!(outcome(&r, name).0, "ok", "{name}: {r}");
    }
    // The pooler is probed (database.pooler is unset): PostgreSQL itself is a session,
    // the PgBouncer pass's pooler a transaction pooler.
    let behind_pgbouncer = std::env::var("PISGATE_TEST_PGBOUNCER_URL").is_ok_and(|u| !u.is_empty());
    let expected = if behind_pgbouncer {
        "pooler auto: transaction"
    } else {
        "pooler auto: none"
    };
    assert!(outcome(&r, "database").1.contains(expected), "{r}");
    // Lines for people: one per check.
    let db = fresh_database().await;
    let mut cmd = pisgate();
    cmd.arg("check")
        .env("PISGATE__DATABASE__URL", db)
        .env("PISGATE__NORDEA__ENVIRONMENT", "sandbox")
        .env("PISGATE__NORDEA__BASE_URL", format!("{base}/personal"));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("ok   signature")),
        "{text}"
    );
    assert!(!text.contains(CLIENT_SECRET), "{text}");
}

#[tokio::test]
async fn check_with_a_wrong_secret_fails_the_credentials_line_with_the_hint() {
    let (_sandbox, base) = crate::helpers::spawn_sandbox(|_| {}).await;
    let out = check(&base, "not-the-secret", "kat-private.pem").await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(8), "{r}");
    let (word, detail) = outcome(&r, "credentials");
    assert_eq!(word, "fail");
    assert!(detail.contains("unauthorized"), "{detail}");
    assert!(
        detail.contains("sandbox credentials against production?"),
        "{detail}"
    );
    assert_eq!(outcome(&r, "network").0, "ok");
    assert!(!out.stdout.windows(14).any(|w| w == b"not-the-secret"));
}

#[tokio::test]
async fn check_with_another_key_fails_the_signature_line() {
    let (_sandbox, base) = crate::helpers::spawn_sandbox(|_| {}).await;
    let out = check(&base, CLIENT_SECRET, "unregistered-private.pem").await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(9), "{r}");
    let (word, detail) = outcome(&r, "signature");
    assert_eq!(word, "fail");
    assert!(detail.contains("error.signature.invalid"), "{detail}");
    assert_eq!(outcome(&r, "credentials").0, "ok");
}

#[tokio::test]
async fn check_with_the_sandbox_down_fails_the_network_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = check(
        &format!("http://127.0.0.1:{port}"),
        CLIENT_SECRET,
        "kat-private.pem",
    )
    .await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(7), "{r}");
    assert_eq!(outcome(&r, "network").0, "fail");
    assert_eq!(outcome(&r, "credentials").0, "skip");
    assert_eq!(outcome(&r, "database").0, "ok");
}

#[tokio::test]
async fn check_in_production_refuses_a_sandbox_host() {
    let (_sandbox, base) = crate::helpers::spawn_sandbox(|_| {}).await;
    let db = fresh_database().await;
    let mut cmd = pisgate();
    cmd.args(["check", "--json"])
        .envs(crate::helpers::database_env(&db))
        .env("PISGATE__NORDEA__ENVIRONMENT", "production")
        .env("PISGATE__NORDEA__BASE_URL", format!("{base}/personal"));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let r = report(&out);
    assert_eq!(out.status.code(), Some(3), "{r}");
    let (word, detail) = outcome(&r, "production");
    assert_eq!(word, "fail");
    assert!(detail.contains("sandbox or local host"), "{detail}");
}

fn ledger(url: &str, command: &str) -> Output {
    pisgate()
        .args(["ledger", command])
        .env("PISGATE__DATABASE__URL", url)
        .output()
        .unwrap()
}

/// Each tamper of issue 11 against the binary: `ledger verify` exits 1 with one line naming
/// the payment, the seq and what happened.
#[tokio::test]
async fn ledger_verify_exits_1_naming_every_tamper() {
    use crate::tamper::{self, Tamper};
    crate::helpers::install_ledger_key();
    for t in tamper::ALL {
        let url = fresh_database().await;
        let pool = Db::from(sqlx::PgPool::connect(&url).await.unwrap());
        let victim = tamper::paid_payment(&pool).await;
        let bystander = tamper::paid_payment(&pool).await;
        let out = ledger(&url, "checkpoint");
        assert!(out.status.success(), "{}", stderr(&out));
        let checkpoint: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (
                &checkpoint["id"],
                &checkpoint["payments"],
                &checkpoint["events"]
            ),
            (
                &serde_json::json!(1),
                &serde_json::json!(2),
                &serde_json::json!(10)
            )
        );
        let ok = ledger(&url, "verify");
        assert_eq!(
            String::from_utf8_lossy(&ok.stdout).trim(),
            "ledger ok: 2 payment(s), 10 event(s), checkpoint 1 verified",
            "{}",
            stderr(&ok)
        );

        tamper::tamper(&pool, victim, t).await;
        let broken = ledger(&url, "verify");
        let err = stderr(&broken);
        assert_eq!(broken.status.code(), Some(1), "{t:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{t:?}: one line: {err}");
        let named = if t == Tamper::Truncate {
            victim.min(bystander)
        } else {
            victim
        };
        let (seq, what) = match t {
            Tamper::Edit => ("seq 2", "edited"),
            Tamper::DeleteLast => ("seq 5", "last events deleted"),
            Tamper::DeleteAll => ("seq 5", "all events deleted"),
            Tamper::DeletePayment | Tamper::Truncate => {
                ("seq 5", "the payment and all its events are gone")
            }
            Tamper::UnkeyedRewrite => ("seq 4", "rewritten without the ledger key"),
            Tamper::UnkeyedDowngrade => ("seq 4", "rewritten without the ledger key"),
            Tamper::RewriteAfterCheckpoint => ("seq 5", "checkpoint 1"),
        };
        assert!(
            err.contains(&named.to_string()) && err.contains(seq) && err.contains(what),
            "{t:?}: {err}"
        );
    }
}

#[tokio::test]
async fn ledger_commands_need_the_ledger_key_and_migrate_does_not() {
    let url = fresh_database().await;
    for command in ["verify", "checkpoint"] {
        let out = pisgate()
            .args(["ledger", command])
            .env("PISGATE__DATABASE__URL", &url)
            .env_remove("PISGATE__LEDGER__KEY")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("PISGATE__LEDGER__KEY_FILE"),
            "{}",
            stderr(&out)
        );
        let out = pisgate()
            .args(["ledger", command])
            .env("PISGATE__DATABASE__URL", &url)
            .env("PISGATE__LEDGER__KEY", "dG9vIHNob3J0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("PISGATE__LEDGER__KEY") && !stderr(&out).contains("dG9vIHNob3J0"),
            "{}",
            stderr(&out)
        );
    }
    let out = pisgate()
        .arg("migrate")
        .env("PISGATE__DATABASE__URL", &url)
        .env_remove("PISGATE__LEDGER__KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn operator_commands_need_only_the_database_and_the_key_they_use() {
    let url = crate::helpers::empty_database().await;
    // No bank credentials, no signing key, no token key: an operator's migration Job.
    let bare = || {
        let mut cmd = pisgate();
        cmd.env("PISGATE__DATABASE__URL", &url)
            .env_remove("PISGATE__NORDEA__CLIENT_ID")
            .env_remove("PISGATE__NORDEA__CLIENT_SECRET")
            .env_remove("PISGATE__NORDEA__PRIVATE_KEY_FILE")
            .env_remove("PISGATE__TOKENS__ENCRYPTION_KEY");
        cmd
    };
    let out = bare()
        .arg("migrate")
        .env_remove("PISGATE__LEDGER__KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "migrate: {}", stderr(&out));
    // Making an API key seals its row with the ledger key (a key row written without it
    // authenticates nobody): without the key, nothing is made and the error says which.
    let out = bare()
        .args(["merchant", "create", "--name", "Keyless shop"])
        .env_remove("PISGATE__LEDGER__KEY")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "merchant create without the ledger key"
    );
    assert!(
        stderr(&out).contains("PISGATE__LEDGER__KEY"),
        "{}",
        stderr(&out)
    );
    let out = bare()
        .args(["merchant", "create", "--name", "Operator shop"])
        .output()
        .unwrap();
    assert!(out.status.success(), "merchant create: {}", stderr(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(created["api_key"].is_string());
    let out = bare().args(["merchant", "list"]).output().unwrap();
    assert!(out.status.success(), "merchant list: {}", stderr(&out));
    let id = created["id"].as_str().unwrap();
    let first_key = created["api_key"].as_str().unwrap().to_owned();
    let out = bare()
        .args(["merchant", "rotate-key", id, "--grace", "1h"])
        .env_remove("PISGATE__LEDGER__KEY")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "merchant rotate-key without the ledger key"
    );
    let out = bare()
        .args(["merchant", "rotate-key", id, "--grace", "1h"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "merchant rotate-key: {}",
        stderr(&out)
    );
    let rotated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let second_key = rotated["api_key"].as_str().unwrap().to_owned();
    assert_ne!(first_key, second_key);
    assert_eq!(rotated["id"], created["id"]);
    assert!(rotated["old_keys_expire_at"].is_string(), "{rotated}");
    assert!(
        !stderr(&out).contains(&second_key),
        "the key went to stderr"
    );
    let pool = Db::from(sqlx::PgPool::connect(&url).await.unwrap());
    // Authentication checks each key row's MAC under the ledger key, as `serve` does.
    crate::helpers::install_ledger_key();
    let works = |key: String| {
        let pool = pool.clone();
        async move {
            pisgate::ledger::merchants::authenticate(&pool, &key)
                .await
                .unwrap()
                .is_some()
        }
    };
    assert!(
        works(first_key.clone()).await,
        "the old key works during its grace"
    );
    assert!(works(second_key.clone()).await);
    let out = bare()
        .args(["merchant", "rotate-key", id, "--grace", "0s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let third_key = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!works(first_key).await && !works(second_key).await);
    assert!(works(third_key).await);
    for (command, status) in [("disable", "disabled"), ("enable", "active")] {
        let out = bare().args(["merchant", command, id]).output().unwrap();
        assert!(out.status.success(), "merchant {command}: {}", stderr(&out));
        let merchant: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(merchant["status"], status);
    }
    let out = bare()
        .args(["merchant", "enable", &uuid::Uuid::new_v4().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no merchant with id"),
        "{}",
        stderr(&out)
    );
    let out = bare().args(["ledger", "verify"]).output().unwrap();
    assert!(out.status.success(), "ledger verify: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ledger ok"));
    // serve still needs all of it, and says which.
    let out = bare().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("PISGATE__NORDEA__"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn keys_token_key_and_ledger_key_need_no_settings_and_print_fresh_keys_of_the_right_shape() {
    let run = |kind: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_pisgate"))
            .env_clear()
            .current_dir(std::env::temp_dir())
            .args(["keys", kind])
            .output()
            .unwrap();
        assert!(out.status.success(), "keys {kind}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (a, b) = (run("token-key"), run("token-key"));
    assert_ne!(a, b);
    pisgate::ledger::crypto::TokenCipher::from_base64("k1", &secrecy::SecretString::from(a))
        .expect("PISGATE__TOKENS__ENCRYPTION_KEY takes it");
    pisgate::ledger::keys::LedgerKeys::new("l1", &secrecy::SecretString::from(run("ledger-key")))
        .expect("PISGATE__LEDGER__KEY takes it");
}

#[test]
fn outside_the_repository_the_error_says_the_config_folder_was_not_found_and_how_to_point_at_it() {
    let elsewhere = tempfile::tempdir().unwrap();
    let out = pisgate()
        .env_remove("PISGATE_CONFIG_DIR")
        .env("PISGATE__DATABASE__URL", "postgres://127.0.0.1:1/x")
        .current_dir(elsewhere.path())
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("config folder not found")
            && err.contains("default.toml")
            && err.contains("PISGATE_CONFIG_DIR"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // --config-dir points at it.
    let out = pisgate()
        .env_remove("PISGATE_CONFIG_DIR")
        .env("PISGATE__DATABASE__URL", "postgres://127.0.0.1:1/x")
        .env("PISGATE__DATABASE__ACQUIRE_TIMEOUT_SECS", "1")
        .current_dir(elsewhere.path())
        .arg("--config-dir")
        .arg(config_dir())
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("cannot connect to the database"),
        "{}",
        stderr(&out)
    );
}

/// Behind a transaction pooler the migrator cannot hold its session lock: `migrate` asks for
/// the direct URL instead of migrating through the pooler, and migrates over it when given.
#[tokio::test]
async fn migrate_behind_a_transaction_pooler_uses_the_direct_url_and_refuses_without_it() {
    let url = crate::helpers::empty_database().await;
    let out = pisgate()
        .arg("migrate")
        .env("PISGATE__DATABASE__URL", &url)
        .env("PISGATE__DATABASE__POOLER", "transaction")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("PISGATE__DATABASE__DIRECT_URL"), "{err}");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let migrated: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!migrated, "nothing was applied through the pooler");

    let out = pisgate()
        .arg("migrate")
        .env("PISGATE__DATABASE__URL", &url)
        .env("PISGATE__DATABASE__POOLER", "transaction")
        .env("PISGATE__DATABASE__DIRECT_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, pisgate::ledger::MIGRATOR.iter().count());
}

/// `pisgate operator ARGS…` against the test app's database.
fn operator(app: &crate::helpers::TestApp, args: &[&str]) -> Output {
    use secrecy::ExposeSecret;
    pisgate()
        .arg("operator")
        .args(args)
        .env(
            "PISGATE__DATABASE__URL",
            app.settings.database.url.expose_secret(),
        )
        .env(
            "PISGATE__DATABASE__POOLER",
            app.settings.database.pooler.as_str(),
        )
        .output()
        .unwrap()
}

#[tokio::test]
async fn operator_list_prints_one_json_line_per_operator_with_its_state_and_last_sign_in() {
    use crate::console::{EMAIL, PASSWORD, create_operator, session_cookie};
    let app = crate::helpers::spawn_app().await;
    let out = operator(&app, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "no operators, no lines");

    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    assert!(
        create_operator(&app, "night@pisgate.example", PASSWORD)
            .status
            .success()
    );
    session_cookie(&app).await;
    let out = operator(&app, &["disable", "--email", "night@pisgate.example"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = operator(&app, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let by = |email: &str| lines.iter().find(|l| l["email"] == email).unwrap();
    let ops = by(EMAIL);
    assert!(ops["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    assert!(ops["created_at"].is_string(), "{ops}");
    assert_eq!(ops["disabled"], false);
    assert_eq!(ops["locked"], false);
    assert!(ops["last_sign_in_at"].is_string(), "signed in once: {ops}");
    let night = by("night@pisgate.example");
    assert_eq!(night["disabled"], true);
    assert!(night["disabled_at"].is_string(), "{night}");
    assert!(
        night["last_sign_in_at"].is_null(),
        "never signed in: {night}"
    );
    let text = serde_json::to_string(&lines).unwrap();
    assert!(!text.contains("argon2"), "never the password hash: {text}");
}

#[tokio::test]
async fn operator_create_with_a_taken_email_says_so_in_one_line() {
    use crate::console::{EMAIL, PASSWORD, create_operator};
    let app = crate::helpers::spawn_app().await;
    assert!(create_operator(&app, EMAIL, PASSWORD).status.success());
    let again = create_operator(&app, "OPS@pisgate.example", PASSWORD);
    assert_eq!(again.status.code(), Some(1));
    let err = stderr(&again);
    assert_eq!(
        err.trim(),
        format!("error: --email \"{EMAIL}\": an operator with this email exists already"),
        "one line naming the email"
    );
    assert!(again.stdout.is_empty());
}

/// The bank `second` (Nordea's protocol, FI, a sandbox) at `base`, with `secret` as its
/// client secret.
fn with_second_bank(cmd: &mut Command, base: &str, secret: &str) {
    cmd.env("PISGATE__BANKS__SECOND__PROTOCOL", "nordea")
        .env("PISGATE__BANKS__SECOND__NAME", "Second")
        .env("PISGATE__BANKS__SECOND__COUNTRIES", "FI")
        .env("PISGATE__BANKS__SECOND__ENVIRONMENT", "sandbox")
        .env(
            "PISGATE__BANKS__SECOND__BASE_URL",
            format!("{base}/personal"),
        )
        .env(
            "PISGATE__BANKS__SECOND__CLIENT_ID",
            crate::helpers::CLIENT_ID,
        )
        .env("PISGATE__BANKS__SECOND__CLIENT_SECRET", secret)
        .env(
            "PISGATE__BANKS__SECOND__PRIVATE_KEY_FILE",
            fixture("kat-private.pem"),
        );
}

#[tokio::test]
async fn check_reads_every_other_bank_once_and_names_the_one_that_fails() {
    let (_nordea, base) = crate::helpers::spawn_sandbox(|_| {}).await;
    let (_second, second_base) = crate::helpers::spawn_sandbox(|_| {}).await;
    let run = |second_secret: &'static str| {
        let (base, second_base) = (base.clone(), second_base.clone());
        async move {
            let db = fresh_database().await;
            let mut cmd = pisgate();
            cmd.args(["check", "--json"])
                .envs(crate::helpers::database_env(&db))
                .env("PISGATE__NORDEA__ENVIRONMENT", "sandbox")
                .env("PISGATE__NORDEA__BASE_URL", format!("{base}/personal"))
                .env(
                    "PISGATE__NORDEA__PRIVATE_KEY_FILE",
                    fixture("kat-private.pem"),
                );
            with_second_bank(&mut cmd, &second_base, second_secret);
            tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap()
        }
    };
    let good = run(CLIENT_SECRET).await;
    let r = report(&good);
    assert_eq!(good.status.code(), Some(0), "{r}");
    let (outcome_, detail) = outcome(&r, "banks");
    assert_eq!(outcome_, "ok", "{r}");
    assert!(detail.starts_with("second (nordea)"), "{detail}");

    let bad = run("not-the-secret").await;
    let r = report(&bad);
    assert_eq!(bad.status.code(), Some(11), "{r}");
    let (outcome_, detail) = outcome(&r, "banks");
    assert_eq!(outcome_, "fail", "{r}");
    assert!(detail.starts_with("second (nordea)"), "{detail}");
    assert!(!detail.contains("not-the-secret"), "{detail}");
}

/// `pisgate check` of a deployment without Nordea (no `[nordea]` credentials, one other
/// bank): the Nordea lines are skipped as not configured, the other bank is read, exit 0.
#[tokio::test]
async fn check_without_nordea_skips_its_lines_and_reads_the_other_bank() {
    let (_second, second_base) = crate::helpers::spawn_sandbox(|_| {}).await;
    let db = fresh_database().await;
    let mut cmd = pisgate();
    cmd.args(["check", "--json"])
        .envs(crate::helpers::database_env(&db))
        .env_remove("PISGATE__NORDEA__CLIENT_ID")
        .env_remove("PISGATE__NORDEA__CLIENT_SECRET")
        .env_remove("PISGATE__NORDEA__PRIVATE_KEY_FILE");
    with_second_bank(&mut cmd, &second_base, CLIENT_SECRET);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{r}");
    for name in [
        "key",
        "certificate",
        "network",
        "credentials",
        "signature",
        "clock",
    ] {
        assert_eq!(
            outcome(&r, name),
            ("skip", "no [nordea] bank configured"),
            "{name}: {r}"
        );
    }
    assert_eq!(
        outcome(&r, "production").0,
        "skip",
        "the only bank is a sandbox: {r}"
    );
    let (word, detail) = outcome(&r, "banks");
    assert_eq!(word, "ok", "{r}");
    assert!(detail.starts_with("second (nordea)"), "{detail}");
}

/// An insider deletes the newest checkpoint (and with it what it proved): a plain `ledger
/// verify` then checks against the one before and passes. An auditor who recorded the
/// checkpoint `ledger checkpoint` printed pins it (`--expect-checkpoint ID:MAC`): verify
/// fails naming it, and also for a checkpoint that is there with another MAC.
#[tokio::test]
async fn ledger_verify_with_an_expected_checkpoint_catches_deleted_checkpoints() {
    crate::helpers::install_ledger_key();
    let url = fresh_database().await;
    let pool = Db::from(sqlx::PgPool::connect(&url).await.unwrap());
    crate::tamper::paid_payment(&pool).await;
    let mut printed = Vec::new();
    for _ in 0..2 {
        let out = ledger(&url, "checkpoint");
        assert!(out.status.success(), "{}", stderr(&out));
        let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        printed.push(format!("{}:{}", c["id"], c["mac"].as_str().unwrap()));
    }
    let verify = |pin: &str| {
        pisgate()
            .args(["ledger", "verify", "--expect-checkpoint", pin])
            .env("PISGATE__DATABASE__URL", &url)
            .output()
            .unwrap()
    };
    assert!(verify(&printed[1]).status.success());
    assert!(verify("2").status.success());

    let mut tx = pool.begin().await.unwrap();
    for sql in [
        "ALTER TABLE ledger_checkpoints DISABLE TRIGGER USER",
        "ALTER TABLE ledger_checkpoint_heads DISABLE TRIGGER USER",
        "DELETE FROM ledger_checkpoint_heads WHERE checkpoint_id = 2",
        "DELETE FROM ledger_checkpoints WHERE id = 2",
        "ALTER TABLE ledger_checkpoints ENABLE TRIGGER USER",
        "ALTER TABLE ledger_checkpoint_heads ENABLE TRIGGER USER",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert!(
        ledger(&url, "verify").status.success(),
        "unpinned, it passes"
    );
    let gone = verify(&printed[1]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("checkpoint 2"), "{}", stderr(&gone));
    assert!(stderr(&gone).contains("gone"), "{}", stderr(&gone));
    let replaced = verify(&format!("1:{}", "00".repeat(32)));
    assert_eq!(replaced.status.code(), Some(1));
    assert!(
        stderr(&replaced).contains("MAC differs"),
        "{}",
        stderr(&replaced)
    );
    assert!(verify(&printed[0]).status.success());
    let bad = verify("two");
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        stderr(&bad).contains("--expect-checkpoint"),
        "{}",
        stderr(&bad)
    );
}

/// What an upgrade run without the ledger key leaves (or the previous version's replicas
/// write during a rolling update): rows of a bound kind without their MAC, refused and named
/// by `ledger verify`. `ledger seal`, run by an operator with the key, seals them and says
/// how many; a row that has its MAC is left as it is.
#[tokio::test]
async fn ledger_seal_seals_what_a_keyless_upgrade_left_and_says_how_many() {
    let url = crate::helpers::empty_database().await;
    let run = |args: &[&str]| {
        pisgate()
            .env("PISGATE__DATABASE__URL", &url)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["merchant", "create", "--name", "Old shop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["merchant", "create", "--name", "New shop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(
        "UPDATE api_keys SET key_mac = NULL, key_mac_key_id = NULL
         WHERE merchant_id = (SELECT id FROM merchants WHERE name = 'Old shop')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let out = run(&["ledger", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 API key(s)"), "{}", stderr(&out));
    let out = run(&["ledger", "seal"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sealed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sealed["api_keys"], 1, "{sealed}");
    assert_eq!(sealed["webhook_events"], 0, "{sealed}");
    let out = run(&["ledger", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["ledger", "seal"]);
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["api_keys"], 0, "{again}");
}

/// The rotation an operator runs after a ledger key may have leaked, with the binary: a new
/// key with the old one previous (everything keeps working), `ledger reseal` (moves the live
/// rows, prints how many), then the old one retired (`ledger verify` passes, the history
/// under it included). A row edited under the old key is not resealed: the command exits 1
/// naming it, and it stays refused.
#[tokio::test]
async fn ledger_reseal_moves_live_rows_to_the_new_key_so_the_old_one_can_be_retired() {
    const NEW_KEY: &str = "bmV3LWxlZGdlci1rZXktZm9yLXRlc3RzLW9ubHktMzI=";
    let url = crate::helpers::empty_database().await;
    let old_previous = format!("l1:{LEDGER_KEY}");
    let run = |args: &[&str], rotated: bool, retired: bool| {
        let mut cmd = pisgate();
        cmd.env("PISGATE__DATABASE__URL", &url);
        if rotated {
            cmd.env("PISGATE__LEDGER__KEY", NEW_KEY)
                .env("PISGATE__LEDGER__KEY_ID", "l2")
                .env("PISGATE__LEDGER__PREVIOUS_KEYS", &old_previous);
        }
        if retired {
            cmd.env("PISGATE__LEDGER__RETIRED_KEY_IDS", "l1");
        }
        cmd.args(args).output().unwrap()
    };
    let out = run(&["migrate"], false, false);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["Kept shop", "Edited shop"] {
        let out = run(&["merchant", "create", "--name", name], false, false);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Retired before the reseal: the keys sealed under l1 are reported.
    let out = run(&["ledger", "verify"], true, true);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("retired"), "{}", stderr(&out));
    // Rotated, l1 still trusted: verify passes.
    let out = run(&["ledger", "verify"], true, false);
    assert!(out.status.success(), "{}", stderr(&out));
    // An insider gives one merchant's key a new life under l1 (its end's MAC breaks).
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let edited: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM merchants WHERE name = 'Edited shop'")
            .fetch_one(&pool)
            .await
            .unwrap();
    sqlx::query(
        "UPDATE api_keys SET expires_at = now() + interval '10 years' WHERE merchant_id = $1",
    )
    .bind(edited)
    .execute(&pool)
    .await
    .unwrap();
    let out = run(&["ledger", "reseal"], true, false);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let resealed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resealed["key_id"], "l2", "{resealed}");
    assert_eq!(resealed["api_keys"], 1, "{resealed}");
    assert_eq!(resealed["refused"], 1, "{resealed}");
    assert!(
        stderr(&out).contains("not resealed") && stderr(&out).contains("edited"),
        "{}",
        stderr(&out)
    );
    // With l1 retired, verify names only the edited key (still under l1); once it is
    // revoked, it passes.
    let out = run(&["ledger", "verify"], true, true);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 API key(s)"), "{}", stderr(&out));
    assert!(stderr(&out).contains("retired"), "{}", stderr(&out));
    let edited = edited.to_string();
    let out = run(&["merchant", "revoke-keys", &edited], true, true);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["ledger", "verify"], true, true);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["ledger", "reseal"], true, true);
    assert!(out.status.success(), "{}", stderr(&out));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (again["api_keys"].as_u64(), again["refused"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );
}
