//! Registered payees: a merchant set to `payees = registered` pays only the creditor
//! accounts an operator registered for it (CLI or console, audited), never ones its API key
//! names, so a stolen key cannot redirect money; idempotent replays still answer as before.

use crate::cli::pisgate;
use crate::helpers::{TestApp, assert_problem, spawn_app};
use crate::payments::body;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

/// The creditor of `body("FI")`, in another formatting.
const REGISTERED_SPACED: &str = "fi14 1009 3000 1234 58";
const REGISTERED: &str = "FI1410093000123458";
/// A valid Finnish IBAN nobody registered.
const ELSEWHERE: &str = "FI2112345600000785";

/// `pisgate merchant …` against the app's database, not run yet.
fn merchant_command(app: &TestApp, args: &[&str]) -> std::process::Command {
    let mut c = pisgate();
    c.arg("merchant")
        .args(args)
        .env(
            "PISGATE__DATABASE__URL",
            app.settings.database.url.expose_secret(),
        )
        .env(
            "PISGATE__DATABASE__POOLER",
            app.settings.database.pooler.as_str(),
        )
        .env("USER", "ops-tester");
    c
}

/// Runs a command; (exit ok, stdout, stderr).
fn run(mut c: std::process::Command) -> (bool, String, String) {
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pisgate merchant …` against the app's database; (exit ok, stdout, stderr).
fn merchant_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    run(merchant_command(app, args))
}

fn paying(iban: &str) -> Value {
    let mut b = body("FI");
    b["creditor"]["account"] = json!({ "type": "IBAN", "value": iban });
    b
}

async fn audit(app: &TestApp) -> Vec<(String, String, Option<String>, Value)> {
    sqlx::query_as("SELECT email, action, target, detail FROM operator_audit ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_merchant_on_registered_payees_is_refused_an_unregistered_creditor_and_pays_a_registered_one_in_any_formatting()
 {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let id = m.id.to_string();

    // Open by default: existing integrations keep working.
    app.create_payment(&m.api_key, &paying(ELSEWHERE)).await;

    let (ok, out, err) = merchant_cli(
        &app,
        &[
            "payee",
            "add",
            &id,
            "--type",
            "IBAN",
            "--account",
            REGISTERED_SPACED,
            "--label",
            "payouts",
        ],
    );
    assert!(ok, "{err}");
    let added: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        added["account"],
        json!({ "type": "IBAN", "value": REGISTERED })
    );
    assert_eq!(added["added"], true);
    let (ok, out, err) = merchant_cli(&app, &["set", &id, "--payees", "registered"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({ "id": id, "payees": "registered" })
    );
    let (ok, out, err) = merchant_cli(&app, &["payee", "list", &id]);
    assert!(ok, "{err}");
    assert!(err.contains("payees policy: registered"), "{err}");
    let listed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{out}");
    assert_eq!(listed[0]["account"]["value"], REGISTERED);
    assert_eq!(listed[0]["label"], "payouts");
    assert_eq!(listed[0]["trusted"], true, "{out}");
    assert!(!err.contains("NOT TRUSTED"), "{err}");

    // A stolen key sends the money elsewhere: refused, naming the field.
    let refused_key = Uuid::new_v4().to_string();
    let r = app
        .post_payment(&m.api_key, &refused_key, &paying(ELSEWHERE))
        .await;
    let problem = assert_problem(r, 422, "payee_not_registered").await;
    assert_eq!(problem["errors"][0]["field"], "creditor.account");
    assert_eq!(problem["errors"][0]["code"], "payee_not_registered");
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(payments, 1, "nothing was created for the refused one");
    let claimed: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key = $1")
        .bind(&refused_key)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(claimed, 0, "nor was its key claimed");

    // The registered account, however it is written, is paid.
    let key = Uuid::new_v4().to_string();
    let r = app
        .post_payment(&m.api_key, &key, &paying("FI14 1009 3000 1234 58"))
        .await;
    assert_eq!(r.status(), 201);
    let first: Value = r.json().await.unwrap();

    // Removed: new payments to it are refused, the earlier request's replay is not.
    let (ok, out, err) = merchant_cli(
        &app,
        &[
            "payee",
            "remove",
            &id,
            "--type",
            "IBAN",
            "--account",
            REGISTERED,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["removed"],
        true
    );
    let r = app
        .post_payment(&m.api_key, &key, &paying("FI14 1009 3000 1234 58"))
        .await;
    assert_eq!(r.status(), 201, "the stored answer is replayed");
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.json::<Value>().await.unwrap()["id"], first["id"]);
    // The same key with another creditor is judged, not waved through as a retry.
    let r = app.post_payment(&m.api_key, &key, &paying(ELSEWHERE)).await;
    assert_problem(r, 422, "payee_not_registered").await;
    let r = app
        .post_payment(&m.api_key, &Uuid::new_v4().to_string(), &paying(REGISTERED))
        .await;
    assert_problem(r, 422, "payee_not_registered").await;
    let (ok, _, err) = merchant_cli(
        &app,
        &[
            "payee",
            "remove",
            &id,
            "--type",
            "IBAN",
            "--account",
            REGISTERED,
        ],
    );
    assert!(!ok && err.contains("is not a payee"), "{err}");

    // Back to open.
    let (ok, _, err) = merchant_cli(&app, &["set", &id, "--payees", "open"]);
    assert!(ok, "{err}");
    app.create_payment(&m.api_key, &paying(ELSEWHERE)).await;

    // Audited, by whoever ran the tool, without the full account number.
    let rows = audit(&app).await;
    let actions: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        actions,
        ["add_payee", "set_payees", "remove_payee", "set_payees"]
    );
    assert!(rows.iter().all(|r| r.0 == "cli:ops-tester"), "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.2.as_deref() == Some(&format!("merchant {id}"))),
        "{rows:?}"
    );
    assert!(!format!("{rows:?}").contains(REGISTERED), "{rows:?}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("pisgate_payees_refused_total 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_merchant_api_has_no_way_to_register_a_payee_or_change_the_policy() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let payee = json!({ "account": { "type": "IBAN", "value": ELSEWHERE } });
    for path in ["/v1/payees", "/v1/merchant/payees"] {
        let r = app
            .client
            .post(app.url(path))
            .bearer_auth(&m.api_key)
            .json(&payee)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = app
        .client
        .patch(app.url("/v1/merchant"))
        .bearer_auth(&m.api_key)
        .json(&json!({ "payees": "open" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM merchant_payees")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[test]
fn payee_cli_refuses_a_bad_account_naming_the_option() {
    let out = pisgate()
        .args([
            "merchant",
            "payee",
            "add",
            &Uuid::new_v4().to_string(),
            "--type",
            "IBAN",
            "--account",
            "FI00 0000",
        ])
        .env("PISGATE__DATABASE__URL", "postgres://127.0.0.1:1/none")
        .env("PISGATE__DATABASE__POOLER", "none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--account"), "{err}");
}

/// An insider's payee row for the merchant: no MAC.
async fn insert_in_sql(app: &TestApp, merchant: Uuid, iban: &str) {
    sqlx::query(
        "INSERT INTO merchant_payees (merchant_id, account_type, account) VALUES ($1, 'IBAN', $2)",
    )
    .bind(merchant)
    .bind(iban)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// Whoever can write the database but holds no ledger key (an insider, a leaked database
/// password) cannot open a merchant's payee policy for a stolen API key: a payee inserted in
/// SQL, a registered payee's MAC copied onto another account, and a policy set back to
/// `open` in SQL each let no payment through, and `ledger verify` names each without the
/// full account number. What an operator registers or sets (CLI) is trusted as before.
#[tokio::test]
async fn a_payee_or_an_open_policy_written_in_sql_lets_no_payment_through_and_verify_names_it() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let id = m.id.to_string();
    let keys = crate::helpers::ledger_keys();
    let verify = || pisgate::ledger::events::verify_all(&app.pool, &keys);
    assert!(merchant_cli(&app, &["set", &id, "--payees", "registered"]).0);
    let (ok, _, err) = merchant_cli(
        &app,
        &[
            "payee",
            "add",
            &id,
            "--type",
            "IBAN",
            "--account",
            REGISTERED,
        ],
    );
    assert!(ok, "{err}");
    let pay = |iban: &'static str| {
        let app = &app;
        let key = m.api_key.clone();
        async move {
            app.post_payment(&key, &Uuid::new_v4().to_string(), &paying(iban))
                .await
        }
    };
    assert_eq!(pay(REGISTERED).await.status(), 201);
    let report = verify().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.payees_checked, 2, "{report:?}");

    // A payee inserted in SQL.
    insert_in_sql(&app, m.id, ELSEWHERE).await;
    assert_problem(pay(ELSEWHERE).await, 422, "payee_not_registered").await;
    // The operator's list says which one no operator registered.
    let listed = |app: &TestApp| {
        let (ok, out, err) = merchant_cli(app, &["payee", "list", &id]);
        assert!(ok, "{err}");
        let rows: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (rows, err)
    };
    let (rows, err) = listed(&app);
    let row = |acc: &str| {
        rows.iter()
            .find(|r| r["account"]["value"] == acc)
            .cloned()
            .unwrap()
    };
    assert_eq!(row(REGISTERED)["trusted"], true, "{rows:?}");
    assert_eq!(row(ELSEWHERE)["trusted"], false, "{rows:?}");
    assert!(
        row(ELSEWHERE)["problem"]
            .as_str()
            .unwrap()
            .contains("added in SQL"),
        "{rows:?}"
    );
    assert!(err.contains("1 payee(s) NOT TRUSTED"), "{err}");
    assert!(err.contains("payees policy: registered\n"), "{err}");
    // Without the ledger key the list checks nothing and says so: no false alarm.
    let mut without_key = merchant_command(&app, &["payee", "list", &id]);
    without_key
        .env_remove("PISGATE__LEDGER__KEY")
        .env_remove("PISGATE__LEDGER__KEY_FILE");
    let (ok, stdout, stderr) = run(without_key);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("cannot check the payees' seals"),
        "{stderr}"
    );
    assert!(!stderr.contains("NOT TRUSTED"), "{stderr}");
    for line in stdout.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        assert_eq!(row["trusted"], Value::Null, "{line}");
    }
    let report = verify().await.unwrap();
    assert_eq!(report.broken_payees, 1, "{report:?}");
    let named = report.first_broken_payee.clone().unwrap();
    assert!(named.contains("added in SQL"), "{named}");
    assert!(
        !named.contains(ELSEWHERE),
        "the full account in a log line: {named}"
    );

    // The registered payee's MAC copied onto it.
    sqlx::query(
        "UPDATE merchant_payees f SET mac = r.mac, mac_key_id = r.mac_key_id
           FROM merchant_payees r
          WHERE f.merchant_id = $1 AND f.account = $2 AND r.merchant_id = $1 AND r.account = $3",
    )
    .bind(m.id)
    .bind(ELSEWHERE)
    .bind(REGISTERED)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_problem(pay(ELSEWHERE).await, 422, "payee_not_registered").await;
    assert_eq!(verify().await.unwrap().broken_payees, 1);
    sqlx::query("DELETE FROM merchant_payees WHERE account = $1")
        .bind(ELSEWHERE)
        .execute(&app.pool)
        .await
        .unwrap();

    // The policy set back to open in SQL (its MAC is the one of `registered`), then with
    // the MAC removed as well: taken as `registered`.
    for sql in [
        "UPDATE merchants SET payees = 'open' WHERE id = $1",
        "UPDATE merchants SET payees_mac = NULL, payees_mac_key_id = NULL WHERE id = $1",
    ] {
        sqlx::query(sql)
            .bind(m.id)
            .execute(&app.pool)
            .await
            .unwrap();
        assert_problem(pay(ELSEWHERE).await, 422, "payee_not_registered").await;
        assert_eq!(pay(REGISTERED).await.status(), 201, "its payees still pay");
        let (rows, err) = listed(&app);
        assert!(
            err.contains("payees policy: open NOT TRUSTED (the payee policy"),
            "{err}"
        );
        assert!(rows.iter().all(|r| r["trusted"] == true), "{rows:?}");
        let report = verify().await.unwrap();
        assert_eq!(report.broken_payees, 1, "{report:?}");
        assert!(
            report
                .first_broken_payee
                .as_deref()
                .unwrap()
                .contains("payee policy"),
            "{report:?}"
        );
    }

    // An operator opens it: trusted again.
    assert!(merchant_cli(&app, &["set", &id, "--payees", "open"]).0);
    assert!(listed(&app).1.contains("payees policy: open\n"));
    assert_eq!(pay(ELSEWHERE).await.status(), 201);
    // An operator registering a row someone wrote in SQL vouches for it (the same account
    // for the same merchant).
    assert!(merchant_cli(&app, &["set", &id, "--payees", "registered"]).0);
    insert_in_sql(&app, m.id, ELSEWHERE).await;
    assert_problem(pay(ELSEWHERE).await, 422, "payee_not_registered").await;
    let (ok, out, err) = merchant_cli(
        &app,
        &[
            "payee",
            "add",
            &id,
            "--type",
            "IBAN",
            "--account",
            ELSEWHERE,
        ],
    );
    assert!(ok, "{err}");
    let vouched: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        vouched["added"], true,
        "the operator's registration seals it: {out}"
    );
    assert_eq!(pay(ELSEWHERE).await.status(), 201);
    let report = verify().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
}

/// Payee rows written in SQL in a form pisgate never stores (a number un-normalised, one
/// that is no account, a type pisgate does not know) were left out of `payee list` (an
/// insider's row hidden from the operator) or could not be removed (removal matched the
/// normalised form only). Now each is listed as not trusted, with why, also without the
/// ledger key; none pays; and `payee remove` with the account as listed removes it, audited
/// masked.
#[tokio::test]
async fn payee_rows_in_no_form_pisgate_stores_are_listed_untrusted_and_removed_as_listed() {
    let app = spawn_app().await;
    let m = app.create_merchant("Odd rows shop").await;
    let id = m.id.to_string();
    assert!(merchant_cli(&app, &["set", &id, "--payees", "registered"]).0);
    let spaced = "fi21 1234 5600 0007 85";
    for (t, account) in [
        ("IBAN", spaced),
        ("IBAN", "NOT-AN-IBAN-4711"),
        ("BBAN_XX", "12345678"),
    ] {
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
    let pay = app
        .post_payment(&m.api_key, &Uuid::new_v4().to_string(), &paying(ELSEWHERE))
        .await;
    assert_problem(pay, 422, "payee_not_registered").await;

    for with_key in [true, false] {
        let mut list = merchant_command(&app, &["payee", "list", &id]);
        if !with_key {
            list.env_remove("PISGATE__LEDGER__KEY")
                .env_remove("PISGATE__LEDGER__KEY_FILE");
        }
        let (ok, out, err) = run(list);
        assert!(ok, "{err}");
        let rows: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 3, "every row is listed: {out}");
        let problem = |value: &str| {
            let r = rows
                .iter()
                .find(|r| r["account"]["value"] == value)
                .unwrap_or_else(|| panic!("{value} not listed: {out}"));
            assert_eq!(r["trusted"], false, "with key {with_key}: {r}");
            r["problem"].as_str().unwrap().to_owned()
        };
        assert!(problem(spaced).contains("normalised form"), "{out}");
        assert!(
            problem("NOT-AN-IBAN-4711").contains("not a valid account"),
            "{out}"
        );
        assert!(problem("12345678").contains("account type"), "{out}");
        assert!(err.contains("3 payee(s) NOT TRUSTED"), "{err}");
    }

    for (t, account) in [
        ("IBAN", spaced),
        ("IBAN", "NOT-AN-IBAN-4711"),
        ("BBAN_XX", "12345678"),
    ] {
        let (ok, out, err) = merchant_cli(
            &app,
            &["payee", "remove", &id, "--type", t, "--account", account],
        );
        assert!(ok, "{account}: {err}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["removed"], true, "{out}");
    }
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM merchant_payees WHERE merchant_id = $1")
            .bind(m.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
    // Gone: a number that is no account is refused naming the option, as before.
    let (ok, _, err) = merchant_cli(
        &app,
        &[
            "payee",
            "remove",
            &id,
            "--type",
            "IBAN",
            "--account",
            "NOT-AN-IBAN-4711",
        ],
    );
    assert!(!ok);
    assert!(err.contains("--account"), "{err}");
    let removals: Vec<String> = audit(&app)
        .await
        .into_iter()
        .filter(|(_, action, _, _)| action == "remove_payee")
        .map(|(_, _, _, detail)| detail["account"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(removals, ["FI…0785", "NO…4711", "BBAN_XX…5678"]);
}
