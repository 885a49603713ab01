//! The logs of a real `pisgate serve` process: JSON lines carrying the request id, and no
//! API key anywhere. Also: SIGTERM stops it cleanly.

use crate::cli::pisgate;
use crate::helpers::fresh_database;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[tokio::test]
async fn request_logs_carry_the_request_id_and_never_the_api_key() {
    let url = fresh_database().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (_, key) = pisgate::ledger::merchants::create(&pool, "Log shop", &[])
        .await
        .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let mut child = pisgate()
        .arg("serve")
        .env("PISGATE__DATABASE__URL", &url)
        .env("PISGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("PISGATE__TELEMETRY__LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let exit = child.wait().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (exit, out, err)
    })
    .await
    .unwrap();
    let (exit, stdout, stderr) = exit;
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
