//! `/metrics` as Prometheus and an SRE see it: a scrape after real payments passes
//! `promtool check metrics`, and carries the series the alert rules use.

use crate::helpers::spawn_app_full;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// The value of the first sample whose line starts with `series` (name and labels).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// `promtool check metrics` on `text`: its exit status and what it printed.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is on PATH (Debian package prometheus; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn a_scrape_after_payments_passes_promtool_and_has_the_series_alerts_use() {
    let app = spawn_app_full(&[], |_| {}).await;
    let m = app.create_merchant("Metrics shop").await;
    // One payment signed (a code exchange), one refused by the shopper (a final status).
    for approve in [true, false] {
        let p = app
            .create_payment(&m.api_key, &crate::payments::body("FI"))
            .await;
        let back = app
            .sign(
                p["authorization_url"].as_str().unwrap(),
                "psu-metrics",
                approve,
            )
            .await;
        assert_eq!(back.status(), 303);
    }
    let text = app.metrics().await;

    let (ok, problems) = promtool_check(&text);
    assert!(
        ok && problems.trim().is_empty(),
        "promtool: {problems}\n{text}"
    );

    let version = env!("CARGO_PKG_VERSION");
    for (series, want) in [
        (
            format!("pisgate_build_info{{version=\"{version}\"}}"),
            Some(1.0),
        ),
        ("pisgate_payments_created_total".into(), Some(2.0)),
        (
            "pisgate_payments_finished_total{status=\"authorization_failed\"}".into(),
            Some(1.0),
        ),
        (
            "pisgate_token_exchanges_total{outcome=\"ok\"}".into(),
            Some(1.0),
        ),
        (
            "pisgate_token_exchanges_total{outcome=\"failed\"}".into(),
            Some(0.0),
        ),
        (
            "pisgate_token_exchanges_total{outcome=\"retried\"}".into(),
            Some(0.0),
        ),
        ("pisgate_ledger_verify_failures_total".into(), Some(0.0)),
        ("pisgate_ready".into(), Some(1.0)),
        ("pisgate_db_pool_max".into(), Some(10.0)),
        ("pisgate_db_pool_connections{state=\"idle\"}".into(), None),
        ("pisgate_db_pool_connections{state=\"used\"}".into(), None),
        ("process_resident_memory_bytes".into(), None),
        ("process_open_fds".into(), None),
        ("process_max_fds".into(), None),
        ("process_start_time_seconds".into(), None),
        ("process_cpu_seconds_total".into(), None),
        ("process_threads".into(), None),
    ] {
        let value = sample(&text, &series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        if let Some(want) = want {
            assert_eq!(value, want, "{series}");
        }
    }
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(
        text.lines().any(
            |l| l.starts_with("pisgate_bank_request_duration_seconds_bucket{")
                && l.contains(r#"operation="initiate""#)
        ),
        "bank latency by operation:\n{text}"
    );
}

#[test]
fn promtool_is_not_a_rubber_stamp() {
    let (ok, problems) = promtool_check("# TYPE x_total counter\nx_total 1\n");
    assert!(!ok || !problems.trim().is_empty(), "{problems}");
}
