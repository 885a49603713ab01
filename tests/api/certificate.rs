//! The eIDAS certificate at start: each certificate gives its start-up result, and the
//! expiry gauge is on `/metrics`. The tests make their own certificates.

use crate::helpers::{fixture, fresh_database, private_key_pem, settings};
use pisgate::app::Application;
use pisgate::bank::nordea::certificate::self_signed_pem;
use pisgate::bank::nordea::signing::parse_private_key;
use std::time::{Duration, SystemTime};

const DAY: Duration = Duration::from_secs(86_400);

fn certificate(key_pem: &str, from: SystemTime, to: SystemTime) -> String {
    let key = parse_private_key(key_pem).unwrap();
    self_signed_pem(&key, "CN=Test Shop Oy,O=Test Shop Oy,C=FI", from, to, true).unwrap()
}

/// Builds the app in production with this certificate; the start-up error, if any.
async fn start_with(certificate: &str) -> Result<Application, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = settings(
        &fresh_database().await,
        &[
            ("PISGATE__NORDEA__ENVIRONMENT", "production"),
            ("PISGATE__NORDEA__CERTIFICATE", certificate),
        ],
    );
    Application::build_on(s, listener)
        .await
        .map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn a_matching_certificate_starts_and_its_expiry_gauge_is_on_metrics() {
    let now = SystemTime::now();
    let app = start_with(&certificate(&private_key_pem(), now - DAY, now + 400 * DAY))
        .await
        .expect("a matching, current certificate starts");
    let addr = app.admin_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("pisgate_nordea_certificate_expiry_seconds"))
        .unwrap_or_else(|| panic!("no expiry gauge in {text}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    // The gauge is global to the test process: some test's certificate is on it.
    assert!(value.is_finite(), "{line}");
    let _ = tx.send(());
}

#[tokio::test]
async fn the_bare_base64_body_the_portal_takes_starts_too() {
    let now = SystemTime::now();
    let pem = certificate(&private_key_pem(), now - DAY, now + 400 * DAY);
    let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!bare.contains("BEGIN"));
    start_with(&bare).await.expect("bare base64 starts");
}

#[tokio::test]
async fn a_certificate_for_another_key_refuses_to_start() {
    let now = SystemTime::now();
    let other = std::fs::read_to_string(fixture("unregistered-private.pem")).unwrap();
    let err = start_with(&certificate(&other, now - DAY, now + 400 * DAY))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("PISGATE__NORDEA__CERTIFICATE_FILE"), "{err}");
    assert!(err.contains("not the signing key"), "{err}");
}

#[tokio::test]
async fn an_expired_certificate_refuses_to_start() {
    let now = SystemTime::now();
    let err = start_with(&certificate(&private_key_pem(), now - 400 * DAY, now - DAY))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("expired"), "{err}");
}

#[tokio::test]
async fn a_certificate_not_yet_valid_refuses_to_start() {
    let now = SystemTime::now();
    let err = start_with(&certificate(&private_key_pem(), now + DAY, now + 400 * DAY))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("not valid before"), "{err}");
}

#[tokio::test]
async fn garbage_in_the_certificate_setting_refuses_to_start() {
    let err = start_with("not a certificate")
        .await
        .err()
        .expect("refused");
    assert!(err.contains("not a readable X.509 certificate"), "{err}");
}
