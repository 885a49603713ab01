//! A strict simulator of SEB's PSD2 payment API with Mobilt BankID, for tests and local runs:
//! `pisgate sandbox --protocol seb`. It implements the wire of `notes/seb-contract.md` §3 and
//! the simulator of §4 (documented in `docs/sandbox-seb.md`):
//!
//! * the API listener is HTTPS with **mutual TLS**: a client without a certificate issued by
//!   the configured client CA is refused in the handshake ([`tls`]);
//! * SEB's decoupled authorization gives the shopper's tokens (`/auth/v4`, [`auth`]): a
//!   BankID identification order, its tokens once, refresh with rotation, expiry;
//! * payment initiation v1 (`/tpp/pis/{private|corporate}/v1/identified2`, [`pis`]) with
//!   SEB's products and body rules, every payment bound to the shopper whose token made it;
//! * the Signing External API (`/tpp/signing/v1`, [`signing`]) with BankID's order progress,
//!   hint codes, animated QR data (new every second) and autostart tokens, and BankID's rule
//!   that a second order for the same person cancels both;
//! * every refusal is RFC 9457 problem+json ([`problem`]) and is recorded with the rule that
//!   made it (`GET /admin/refusals`).
//!
//! A second, plain-HTTP listener serves the test BankID app that stands in for the shopper's
//! phone (`/test-bankid`, [`app`]) and the admin paths ([`admin`]). Payments play scenarios
//! chosen by their SEK amount (66.01–66.06, [`scenarios`]). Time comes from a clock tests can
//! move (`POST /admin/clock/advance`).
//!
//! It keeps everything in memory and its admin paths have no authentication: it must never
//! be exposed to anything but a test network, and never be pointed at real accounts. It
//! must never import pisgate's own SEB client (`bank/seb`): a bug there would be mirrored
//! here and never caught.

pub mod admin;
pub mod app;
pub mod auth;
pub mod bankid;
pub mod faults;
pub mod pis;
pub mod problem;
pub mod scenarios;
pub mod signing;
pub mod state;
pub mod tls;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;

use crate::sandbox::faults::FaultSwitch;
use crate::sandbox::{SimClock, lock};

pub use crate::sandbox::berlin_group::test_pki::{TestPki, TestServerCertificate};

/// How the simulator behaves. Build it with [`SebSandboxConfig::new`].
#[derive(Debug, Clone)]
pub struct SebSandboxConfig {
    /// The TPP's client id (decoupled authorization and tokens).
    pub client_id: String,
    /// The TPP's client secret (tokens).
    pub client_secret: SecretString,
    /// How long a BankID order (identification or signing) may take before it fails
    /// `expiredTransaction` (default 30 s, BankID's).
    pub order_timeout: Duration,
    /// How long a payment may stay unsigned before it becomes RJCT (default 300 s).
    pub signing_timeout: Duration,
    /// Lifetime of an access token (`expires_in`, default 1800 s).
    pub access_token_lifetime: Duration,
    /// One scenario step after the signing (default 1 s): ACTC, then ACSP/ACSC on later steps.
    pub status_step: Duration,
    /// The TPP's registered redirect URIs: when not empty, the token calls' `redirect_uri`
    /// must be one of them (default empty: any absolute http(s) URL).
    pub redirect_uris: Vec<String>,
    /// How many refusals `GET /admin/refusals` (and requests `GET /admin/requests`) keeps.
    pub refusal_log_capacity: usize,
}

impl SebSandboxConfig {
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> SebSandboxConfig {
        SebSandboxConfig {
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            order_timeout: Duration::from_secs(30),
            signing_timeout: Duration::from_secs(300),
            access_token_lifetime: Duration::from_secs(1800),
            status_step: Duration::from_secs(1),
            redirect_uris: Vec::new(),
            refusal_log_capacity: 10_000,
        }
    }
}

impl Default for SebSandboxConfig {
    /// Client id `pisgate-test-client`, secret `pisgate-test-secret`.
    fn default() -> SebSandboxConfig {
        SebSandboxConfig::new("pisgate-test-client", "pisgate-test-secret")
    }
}

/// Why a simulator cannot be built or started.
#[derive(Debug, thiserror::Error)]
pub enum SebSandboxError {
    #[error("client_id must not be empty")]
    EmptyClientId,
    #[error("cannot make a test PKI: {0}")]
    Pki(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// One refused request (`GET /admin/refusals`): which rule refused it and how.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalRecord {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// `api` (the mutual-TLS listener, handshake included) or `app` (the test BankID app).
    pub listener: &'static str,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The rule, e.g. `mtls-client-certificate`, `psu-ip-address`, `token-binding`.
    pub rule: &'static str,
    /// The problem's `code` (PIS and signing) or type name (authorization).
    pub code: Option<String>,
    pub detail: String,
}

/// One API request as received and answered (`GET /admin/requests`): headers with the
/// bearer token masked, no bodies (payments' bodies are at `GET /admin/payments`).
#[derive(Debug, Clone, Serialize)]
pub struct ApiRequest {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// 0 when the connection was closed before the call ran (an injected `drop_connection`).
    pub status: u16,
    /// The refusal rule, when it was refused.
    pub rule: Option<&'static str>,
    /// The injected fault that answered or changed it (`http503`, `drop_after_processing`,
    /// …; see `PUT /admin/faults`).
    pub fault: Option<&'static str>,
}

/// The simulator's state, shared as `Arc<SebSim>`.
pub struct SebSim {
    config: SebSandboxConfig,
    clock: SimClock,
    bank: Mutex<state::Bank>,
    refusals: Mutex<(u64, VecDeque<RefusalRecord>)>,
    requests: Mutex<(u64, VecDeque<ApiRequest>)>,
    /// Injected faults: the Nordea sandbox's rules ([`faults`]).
    faults: Arc<FaultSwitch>,
}

impl std::fmt::Debug for SebSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SebSim")
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl SebSim {
    pub fn new(config: SebSandboxConfig) -> Result<Arc<SebSim>, SebSandboxError> {
        if config.client_id.trim().is_empty() {
            return Err(SebSandboxError::EmptyClientId);
        }
        Ok(Arc::new(SebSim {
            config,
            clock: SimClock::default(),
            bank: Mutex::new(state::Bank::default()),
            refusals: Mutex::new((0, VecDeque::new())),
            requests: Mutex::new((0, VecDeque::new())),
            faults: Arc::default(),
        }))
    }

    pub fn config(&self) -> &SebSandboxConfig {
        &self.config
    }

    /// The injected faults on the API ([`faults`]).
    pub fn faults(&self) -> &Arc<FaultSwitch> {
        &self.faults
    }

    /// The simulator's clock: the wall clock moved by [`SebSim::advance_clock`]. Order
    /// timeouts, QR seconds, token expiry and scenario steps follow it.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The bank's state with the timeouts applied up to now.
    pub(crate) fn bank(&self) -> MutexGuard<'_, state::Bank> {
        let now = self.now();
        let mut bank = lock(&self.bank);
        bank.tick(now, &self.config);
        bank
    }

    pub(crate) fn record_refusal(&self, mut r: RefusalRecord) {
        let mut log = lock(&self.refusals);
        log.0 += 1;
        r.seq = log.0;
        if log.1.len() >= self.config.refusal_log_capacity.max(1) {
            log.1.pop_front();
        }
        tracing::info!(
            rule = r.rule,
            status = r.status,
            path = %r.path,
            "SEB sandbox refused a request"
        );
        log.1.push_back(r);
    }

    pub(crate) fn record_request(&self, mut r: ApiRequest) {
        let mut log = lock(&self.requests);
        log.0 += 1;
        r.seq = log.0;
        if log.1.len() >= self.config.refusal_log_capacity.max(1) {
            log.1.pop_front();
        }
        log.1.push_back(r);
    }

    /// Every API request (over mutual TLS, past the handshake), oldest first.
    pub fn requests(&self) -> Vec<ApiRequest> {
        lock(&self.requests).1.iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.requests).1.clear();
    }

    /// Every refusal, oldest first.
    pub fn refusals(&self) -> Vec<RefusalRecord> {
        lock(&self.refusals).1.iter().cloned().collect()
    }

    pub fn clear_refusals(&self) {
        lock(&self.refusals).1.clear();
    }

    /// Every BankID order (identification and signing) as JSON, oldest first.
    pub fn orders(&self) -> Vec<serde_json::Value> {
        let now = self.now();
        let bank = self.bank();
        bank.orders_view(now)
    }

    /// Every payment as JSON (with its status now), oldest first.
    pub fn payments(&self) -> Vec<serde_json::Value> {
        let now = self.now();
        let bank = self.bank();
        bank.payments_view(now, &self.config)
    }

    /// One payment as JSON (with its status now).
    pub fn payment(&self, id: &str) -> Option<serde_json::Value> {
        let now = self.now();
        let bank = self.bank();
        bank.payments
            .get(id)
            .map(|p| bank.payment_view(p, now, &self.config))
    }

    /// The shopper opens the order in the BankID app (as the test app's page does).
    pub fn open(&self, autostart_token: &str) -> Result<serde_json::Value, state::AppError> {
        let now = self.now();
        let mut bank = self.bank();
        bank.open(autostart_token, now)?;
        Ok(bank.order_view_by_autostart(autostart_token, now))
    }

    /// The shopper approves the order (identify: as `shopper`, a fresh one when `None`).
    pub fn approve(
        &self,
        autostart_token: &str,
        shopper: Option<&str>,
    ) -> Result<serde_json::Value, state::AppError> {
        let now = self.now();
        let mut bank = self.bank();
        bank.approve(autostart_token, shopper, now)?;
        Ok(bank.order_view_by_autostart(autostart_token, now))
    }

    /// Puts a pending order on a BankID hint code (see [`state::Bank::set_hint`]).
    pub fn set_hint(
        &self,
        autostart_token: &str,
        code: &str,
    ) -> Result<serde_json::Value, state::AppError> {
        let now = self.now();
        let mut bank = self.bank();
        bank.set_hint(autostart_token, code, now)?;
        Ok(bank.order_view_by_autostart(autostart_token, now))
    }

    /// The shopper refuses the order in the app (`userCancel`).
    pub fn reject(&self, autostart_token: &str) -> Result<serde_json::Value, state::AppError> {
        let now = self.now();
        let mut bank = self.bank();
        bank.reject(autostart_token, now)?;
        Ok(bank.order_view_by_autostart(autostart_token, now))
    }

    /// Moves a payment into a status from now on, as the bank's back office would. `false`
    /// if unknown.
    pub fn force_status(&self, payment_id: &str, status: state::TxStatus) -> bool {
        let mut bank = self.bank();
        match bank.payments.get_mut(payment_id) {
            Some(p) => {
                p.forced = Some(status);
                true
            }
            None => false,
        }
    }
}

/// A simulator running in-process (tests): the API over mutual TLS on `api_url`, the test
/// BankID app and admin paths over plain HTTP on `app_url`, and the throwaway PKI both sides
/// use. Dropping it stops both listeners.
pub struct SebSandbox {
    /// `https://127.0.0.1:PORT`: a SEB bank's `base_url`.
    pub api_url: String,
    /// `http://127.0.0.1:PORT2`: the test BankID app (`/test-bankid`) and `/admin/...`.
    pub app_url: String,
    /// The test CA (`ca_pem`: trust it for the server certificate, and it issued the client
    /// certificate), and the TPP's client certificate and key (the QWAC for mutual TLS).
    pub pki: TestPki,
    /// The simulator's TLS server certificate (SAN localhost, 127.0.0.1), issued by `pki`'s CA.
    pub server_certificate: TestServerCertificate,
    /// The simulator's state, for tests that drive it without HTTP.
    pub sim: Arc<SebSim>,
    _stop: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for SebSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SebSandbox")
            .field("api_url", &self.api_url)
            .field("app_url", &self.app_url)
            .finish_non_exhaustive()
    }
}

impl SebSandbox {
    pub fn client_id(&self) -> &str {
        &self.sim.config.client_id
    }

    pub fn client_secret(&self) -> &SecretString {
        &self.sim.config.client_secret
    }

    /// The link pisgate's "open BankID on this device" button points to in sandbox mode
    /// (`bankid_app_url`): `{app_url}/test-bankid`.
    pub fn bankid_app_url(&self) -> String {
        format!("{}/test-bankid", self.app_url)
    }

    /// Writes the test CA (`ca.pem`: a SEB bank's `tls_ca_file`) and the TPP's client
    /// certificate and key (`tpp-cert.pem`, `tpp-key.pem` (0600): its `tls_certificate_file`
    /// and `tls_private_key_file`) into `dir`, for settings that take file paths.
    pub fn write_pki(&self, dir: &std::path::Path) -> std::io::Result<PkiFiles> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::create_dir_all(dir)?;
        let write = |name: &str, text: &str, mode: u32| -> std::io::Result<std::path::PathBuf> {
            let path = dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&path)?;
            f.write_all(text.as_bytes())?;
            Ok(path)
        };
        Ok(PkiFiles {
            ca: write("ca.pem", &self.pki.ca_pem, 0o644)?,
            tpp_cert: write("tpp-cert.pem", &self.pki.tpp_cert_pem, 0o644)?,
            tpp_key: write("tpp-key.pem", &self.pki.tpp_key_pem, 0o600)?,
        })
    }

    /// A reqwest client with the TPP's identity that trusts the simulator (for tests).
    pub fn tpp_client(&self) -> reqwest::Client {
        tls::client(&self.pki, true).expect("a TPP client for the SEB simulator")
    }
}

/// Where [`SebSandbox::write_pki`] wrote the PKI.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    pub ca: std::path::PathBuf,
    pub tpp_cert: std::path::PathBuf,
    pub tpp_key: std::path::PathBuf,
}

/// Starts a simulator on two fresh local ports with a fresh test PKI (TPP subject
/// `CN=pisgate test TPP,O=pisgate,C=SE`). It runs until the returned value is dropped.
pub async fn spawn(config: SebSandboxConfig) -> Result<SebSandbox, SebSandboxError> {
    let (pki, server_certificate) = crate::sandbox::berlin_group::test_pki::generate_with_server(
        "CN=pisgate test TPP,O=pisgate,C=SE",
    )
    .map_err(SebSandboxError::Pki)?;
    let tls = tls::server_config(
        &server_certificate.cert_pem,
        &server_certificate.key_pem,
        &pki.ca_pem,
    )?;
    let sim = SebSim::new(config)?;
    let api = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let app = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let api_url = format!("https://127.0.0.1:{}", api.local_addr()?.port());
    let app_url = format!("http://127.0.0.1:{}", app.local_addr()?.port());
    let (stop, rx) = tokio::sync::watch::channel(());
    let shutdown = async move {
        let mut rx = rx;
        // Completes when the sender (the SebSandbox) is dropped.
        while rx.changed().await.is_ok() {}
    };
    tokio::spawn(serve(api, app, sim.clone(), tls, shutdown));
    Ok(SebSandbox {
        api_url,
        app_url,
        pki,
        server_certificate,
        sim,
        _stop: stop,
    })
}

/// The API router (served over mutual TLS).
pub fn api_router(sim: Arc<SebSim>) -> Router {
    auth::routes(sim.clone())
        .merge(pis::routes(sim.clone()))
        .merge(signing::routes(sim.clone()))
        .fallback(|uri: axum::http::Uri| async move {
            problem::Problem::pis(
                axum::http::StatusCode::NOT_FOUND,
                "RESOURCE_UNKNOWN",
                "unknown-path",
                format!("no such API path: {}", uri.path()),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            faults::inject,
        ))
        .layer(axum::middleware::from_fn_with_state(
            (sim, "api"),
            problem::record_refusals,
        ))
}

/// The plain-HTTP router: the test BankID app and the admin paths.
pub fn app_router(sim: Arc<SebSim>) -> Router {
    app::routes(sim.clone())
        .merge(admin::routes(sim.clone()))
        .layer(axum::middleware::from_fn_with_state(
            (sim, "app"),
            problem::record_refusals,
        ))
}

/// Serves the API on `api` (mutual TLS with `tls`) and the app on `app` (plain HTTP) until
/// `shutdown` completes.
pub async fn serve(
    api: tokio::net::TcpListener,
    app: tokio::net::TcpListener,
    sim: Arc<SebSim>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut rx_app = rx.clone();
    let api_task = tokio::spawn(tls::serve_mtls(
        api,
        api_router(sim.clone()),
        sim.clone(),
        tls,
        async move {
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    let app_task = tokio::spawn(async move {
        axum::serve(app, app_router(sim))
            .with_graceful_shutdown(async move {
                let _ = rx_app.wait_for(|s| *s).await;
            })
            .await
    });
    shutdown.await;
    let _ = tx.send(true);
    let _ = api_task.await;
    let _ = app_task.await;
    Ok(())
}
