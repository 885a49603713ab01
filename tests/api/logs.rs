//! The logs of a real `pisgate serve` process: JSON lines carrying the request id, and no
//! API key anywhere. Also: SIGTERM stops it cleanly.

use crate::cli::pisgate;
use crate::helpers::fresh_database;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A `pisgate serve` child process with JSON debug logs, up and answering.
struct Serve {
    child: std::process::Child,
    base: String,
    /// Readers of stdout and stderr, started with the child so that a chatty process never
    /// blocks on a full pipe.
    readers: Vec<std::thread::JoinHandle<String>>,
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = pipe.read_to_string(&mut out);
        out
    })
}

async fn spawn_serve(database_url: &str, extra: &[(&str, String)]) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = pisgate();
    cmd.arg("serve")
        .env("PISGATE__DATABASE__URL", database_url)
        .env("PISGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("PISGATE__SERVER__PUBLIC_URL", &base)
        .env("PISGATE__TELEMETRY__LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let readers = vec![
        drain(child.stdout.take().unwrap()),
        drain(child.stderr.take().unwrap()),
    ];
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Serve {
        child,
        base,
        readers,
    }
}

impl Serve {
    /// SIGTERM, then (exit status, stdout, stderr).
    async fn stop(mut self) -> (std::process::ExitStatus, String, String) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::task::spawn_blocking(move || {
            let exit = self.child.wait().unwrap();
            let mut outputs = self.readers.into_iter().map(|r| r.join().unwrap());
            let out = outputs.next().unwrap();
            let err = outputs.next().unwrap();
            (exit, out, err)
        })
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn request_logs_carry_the_request_id_and_never_the_api_key() {
    let url = fresh_database().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
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
    let (exit, stdout, stderr) = serve.stop().await;
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
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (_, key) =
        pisgate::ledger::merchants::create(&pool, "Log shop", &["https://shop.example".into()])
            .await
            .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    let serve = spawn_serve(
        &url,
        &[
            (
                "PISGATE__NORDEA__BASE_URL",
                format!("{sandbox_url}/personal"),
            ),
            ("PISGATE__NORDEA__ENVIRONMENT", "sandbox".into()),
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

    let (_, stdout, stderr) = serve.stop().await;
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
