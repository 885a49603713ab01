//! Starts the independent strict Berlin Group ASPSP (`tests/bg-aspsp/aspsp.py`) as a process
//! on a free port with a fresh test PKI, and plays its shopper and admin paths. Shared by the
//! adapter's tests in the library (`src/bank/berlin_group/aspsp_tests.rs`, through a
//! `#[path]` module) and the API tests (`tests/api/berlin_group_sca.rs`): one spawner.
//!
//! The ASPSP runs in the venv `~/.cache/pisgate/venv-bgaspsp` that
//! `scripts/bg-aspsp-check.sh` creates; without it [`Aspsp::start`] says so and answers `None`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt as _;

pub struct Aspsp {
    pub _process: tokio::process::Child,
    pub _pki: tempfile::TempDir,
    /// `http://127.0.0.1:PORT/psd2`
    pub base: String,
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    pub key_pem: String,
    pub cert_pem: String,
    /// The keyId the ASPSP computes for the TPP certificate.
    pub key_id: String,
    pub http: reqwest::Client,
}

pub fn python() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let py = Path::new(&home).join(".cache/pisgate/venv-bgaspsp/bin/python");
    py.exists().then_some(py)
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bg-aspsp/aspsp.py")
}

impl Aspsp {
    /// `None` (with a message) when the venv is missing.
    pub async fn start() -> Option<Aspsp> {
        Aspsp::start_with(5).await
    }

    /// With a decoupled SCA that fails after `decoupled_timeout` seconds without approval.
    pub async fn start_with(decoupled_timeout: u32) -> Option<Aspsp> {
        let Some(py) = python() else {
            // scripts/test.sh makes the venv first and sets this: there, a missing venv fails.
            assert!(
                std::env::var_os("PISGATE_REQUIRE_BG_ASPSP").is_none(),
                "the Berlin Group ASPSP's venv is missing (scripts/bg-aspsp-check.sh makes it)"
            );
            eprintln!(
                "SKIPPED: the Berlin Group ASPSP's venv ~/.cache/pisgate/venv-bgaspsp is missing; run scripts/bg-aspsp-check.sh once to create it"
            );
            return None;
        };
        let pki = tempfile::tempdir().unwrap();
        let made = tokio::process::Command::new(&py)
            .arg(script())
            .arg("--make-test-pki")
            .arg(pki.path())
            .output()
            .await
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let printed = String::from_utf8(made.stdout).unwrap();
        let key_id = printed
            .trim()
            .rsplit_once(": ")
            .map(|(_, id)| id.to_owned())
            .unwrap();
        let mut process = tokio::process::Command::new(&py)
            .arg(script())
            .args(["--port", "0", "--decoupled-timeout"])
            .arg(decoupled_timeout.to_string())
            .arg("--tpp-ca")
            .arg(pki.path().join("ca.pem"))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the ASPSP did not start within 60 s")
            .unwrap()
            .unwrap();
        let base = first
            .split_once("listening on ")
            .map(|(_, url)| url.trim().to_owned())
            .unwrap();
        let origin = base.trim_end_matches("/psd2").to_owned();
        let read = |name: &str| std::fs::read_to_string(pki.path().join(name)).unwrap();
        Some(Aspsp {
            key_pem: read("tpp-key.pem"),
            cert_pem: read("tpp-cert.pem"),
            _process: process,
            _pki: pki,
            base,
            origin,
            key_id,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        })
    }

    /// The shopper opens the bank's page.
    pub async fn open(&self, url: &str) {
        let r = self.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "opening {url}");
    }

    /// The shopper decides on the bank's page; returns where the bank sends them back.
    pub async fn decide(&self, url: &str, decision: &str) -> String {
        self.open(url).await;
        let r = self
            .http
            .post(url)
            .form(&[("decision", decision)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        r.headers()["location"].to_str().unwrap().to_owned()
    }

    pub async fn decoupled(&self, authorisation_id: &str, approve: bool) {
        let r = self
            .http
            .post(format!(
                "{}/admin/decoupled/{authorisation_id}",
                self.origin
            ))
            .json(&serde_json::json!({ "approve": approve }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// The ASPSP's self-check (every answer validated against the OpenAPI) found nothing.
    pub async fn assert_selfcheck_empty(&self) {
        let check: serde_json::Value = self
            .http
            .get(format!("{}/admin/selfcheck", self.origin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(check["failures"], serde_json::json!([]), "{check}");
    }
}
