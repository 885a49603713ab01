//! The logs of a real `pisgate serve` process: JSON lines carrying the request id, and no
//! API key anywhere. Also: SIGTERM stops it cleanly.

use crate::helpers::fresh_database;
use crate::serve::Serve;
use pisgate::ledger::Db;

/// `serve` with JSON debug logs: the most a log line could ever leak.
async fn spawn_serve(database_url: &str, extra: &[(&str, &str)]) -> Serve {
    let mut all = vec![("RUST_LOG", "debug")];
    all.extend_from_slice(extra);
    Serve::start(database_url, &all).await
}

#[tokio::test]
async fn request_logs_carry_the_request_id_and_never_the_api_key() {
    let url = fresh_database().await;
    let pool = Db::from(sqlx::PgPool::connect(&url).await.unwrap());
    let (_, key) = pisgate::ledger::merchants::create(&pool, "Log shop", &[])
        .await
        .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    let serve = spawn_serve(&url, &[]).await;
    let client = reqwest::Client::new();
    let base = serve.base.clone();
    let ok = client
        .get(format!("{base}/v1/merchant"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok_id = ok.headers()["x-request-id"].to_str().unwrap().to_owned();
    // A wrong key, which must not be logged either.
    let wrong_key = format!("{}x", &key[..key.len() - 1]);
    let bad = client
        .get(format!("{base}/v1/merchant"))
        .bearer_auth(&wrong_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let bad_id = bad.headers()["x-request-id"].to_str().unwrap().to_owned();

    // SIGTERM: a graceful stop with exit code 0.
    let (exit, stdout, stderr, _) = serve.stop().await;
    assert!(exit.success(), "exit {exit:?}; stderr: {stderr}");
    let logs = format!("{stdout}{stderr}");

    for line in stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    let finished: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "request finished")
        .collect();
    for (id, status) in [(&ok_id, 200), (&bad_id, 401)] {
        let line = finished
            .iter()
            .find(|v| v.to_string().contains(id.as_str()))
            .unwrap_or_else(|| panic!("no log line carries request id {id}:\n{stdout}"));
        assert_eq!(line["status"], status, "{line}");
    }
    assert!(!logs.contains(&key), "the API key appears in the logs");
    assert!(
        !logs.contains(&wrong_key),
        "the wrong API key appears in the logs"
    );
    let secret_part = key.rsplit('_').next().unwrap();
    assert!(
        !logs.contains(secret_part),
        "the key's secret appears in the logs"
    );
    assert!(
        logs.contains("stopped"),
        "no clean stop in the logs:\n{logs}"
    );
}

#[tokio::test]
async fn a_whole_payment_flow_logs_no_code_state_token_key_or_account() {
    use crate::helpers::{TOKEN_KEY, browser_sign, spawn_sandbox};
    let (_sandbox, sandbox_url) = spawn_sandbox(|_| {}).await;
    let url = fresh_database().await;
    let pool = Db::from(sqlx::PgPool::connect(&url).await.unwrap());
    let (_, key) =
        pisgate::ledger::merchants::create(&pool, "Log shop", &["https://shop.example".into()])
            .await
            .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    let bank = format!("{sandbox_url}/personal");
    let serve = spawn_serve(
        &url,
        &[
            ("PISGATE__NORDEA__BASE_URL", &bank),
            ("PISGATE__NORDEA__ENVIRONMENT", "sandbox"),
        ],
    )
    .await;
    let base = serve.base.clone();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let iban = "FI1410093000123458";
    let created: serde_json::Value = client
        .post(format!("{base}/v1/payments"))
        .bearer_auth(&key)
        .header("idempotency-key", "log-flow")
        .json(&serde_json::json!({
            "amount": "12.00", "currency": "EUR",
            "creditor": {"account": {"type": "IBAN", "value": iban}, "name": "Kauppa"},
            "return_url": "https://shop.example/done", "psu_id": "shopper-log"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let callback = browser_sign(
        &client,
        created["authorization_url"].as_str().unwrap(),
        "psu-log",
        true,
    )
    .await;
    let parsed = reqwest::Url::parse(&callback).unwrap();
    let param = |name: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k == name)
            .unwrap()
            .1
            .into_owned()
    };
    let (code, state) = (param("code"), param("state"));
    let back = client.get(&callback).send().await.unwrap();
    assert_eq!(back.status(), 303);
    let funds = client
        .get(format!(
            "{base}/v1/payments/{}/funds",
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(funds.status(), 200);

    let (_, stdout, stderr, _) = serve.stop().await;
    let logs = format!("{stdout}{stderr}");
    assert!(
        logs.contains("request finished"),
        "no request logs captured:\n{logs}"
    );

    let (bank, psu_key): (String, String) = sqlx::query_as("SELECT bank, psu_key FROM psu_tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    let cipher = pisgate::ledger::crypto::TokenCipher::from_base64(
        "k1",
        &secrecy::SecretString::from(TOKEN_KEY),
    )
    .unwrap();
    let token = pisgate::ledger::tokens::load(&pool, &cipher, &bank, &psu_key)
        .await
        .unwrap()
        .unwrap();
    let access = secrecy::ExposeSecret::expose_secret(&token.access_token).to_owned();
    let refresh =
        secrecy::ExposeSecret::expose_secret(token.refresh_token.as_ref().unwrap()).to_owned();
    for (what, secret) in [
        ("API key", key.as_str()),
        ("authorization code", code.as_str()),
        ("OAuth state", state.as_str()),
        ("access token", access.as_str()),
        ("refresh token", refresh.as_str()),
        ("creditor account number", iban),
        ("shopper id", "shopper-log"),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
    }
}

/// One log format: `serve` in the sandbox environment (scripts/run.sh) writes JSON lines when
/// stdout is not a terminal, like the sandbox and production (it once wrote plain text).
#[tokio::test]
async fn serve_in_the_sandbox_environment_logs_json_lines_off_a_terminal() {
    let url = fresh_database().await;
    let serve = Serve::start(
        &url,
        &[
            ("PISGATE_ENV", "sandbox"),
            ("PISGATE__TELEMETRY__LOG_FORMAT", ""),
        ],
    )
    .await;
    let status = reqwest::get(format!("{}/v1/merchant", serve.base))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    let (_, stdout, _, _) = serve.stop().await;
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "serve logged nothing");
    for line in lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
}
