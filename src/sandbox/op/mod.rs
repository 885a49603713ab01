//! `pisgate sandbox --protocol op`: a strict simulator of OP's PSD2 payment API (FAPI), for
//! tests and local runs. It implements the wire of `docs/banks/op-wire.md` §2–§4 (documented
//! in `docs/sandbox-op.md`):
//!
//! * the API listener is HTTPS with **mutual TLS** (the SEB simulator's listener,
//!   [`crate::sandbox::seb::tls`]): a client without a certificate from the TPP CA is refused
//!   in the handshake, and a certificate of that CA that is not the registered client's is
//!   refused `FORBIDDEN_CLIENT` ([`api`]);
//! * the token endpoint (client credentials, single-use 60 s authorization codes whose reuse
//!   revokes the tokens issued for them, rotating refresh tokens), SEPA payment creation
//!   with a strict body schema ([`validate`]), read, revoke and the **submission** that only
//!   the authorization's own token can make, after authorization; every 2xx payment answer
//!   is signed (detached JWS, [`keys`]);
//! * a plain-HTTP listener with the authorization page that checks the signed request object
//!   claim by claim and shows Approve/Reject ([`app`]), the JWKS of ID tokens and of signed
//!   answers, the OIDC discovery document and the admin paths ([`admin`]).
//!
//! Payments play scenarios by amount (77.01–77.06, [`state::Scenario`]). It keeps everything
//! in memory; its admin paths have no authentication: it must never be exposed to anything
//! but a test network. It must never import pisgate's own OP client (`bank/op`): a bug there
//! would be mirrored here and never caught.

pub mod admin;
pub mod api;
pub mod app;
pub mod keys;
pub mod state;
pub mod validate;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;

use crate::sandbox::berlin_group::test_pki::{TestPki, TestServerCertificate};
use crate::sandbox::seb::tls;
use crate::sandbox::{SimClock, lock};

/// The default `kid` the TPP's request objects must carry (in-process simulators).
pub const DEFAULT_SIGNING_KEY_ID: &str = "pisgate-test-qsealc";

/// How the simulator behaves. Build it with [`OpSandboxConfig::new`].
#[derive(Debug, Clone)]
pub struct OpSandboxConfig {
    /// The registered client's id.
    pub client_id: String,
    /// Its client secret (token endpoint).
    pub client_secret: SecretString,
    /// Its API key (`x-api-key` on every `/paymentsapi` call).
    pub api_key: SecretString,
    /// Its registered redirect URIs (exact match); the starting value of
    /// [`OpSim::set_redirect_uris`].
    pub redirect_uris: Vec<String>,
    /// The TPP's QSealC certificate (PEM): request objects must verify with its key. Empty:
    /// [`spawn`] uses its test PKI's TPP certificate.
    pub tpp_signing_certificate_pem: String,
    /// The `kid` the request objects must carry.
    pub tpp_signing_key_id: String,
    /// The registered client's mutual-TLS certificate (PEM); `None`: the signing
    /// certificate (the test PKI's TPP certificate is both QWAC and QSealC).
    pub client_certificate_pem: Option<String>,
    /// The ID tokens' issuer; `None`: `http://<app listener>`.
    pub issuer: Option<String>,
    /// The request objects' required audience; `None`: the origin of the API listener.
    pub audience: Option<String>,
    /// The ID-token signing key (PEM); `None`: RSA-2048 generated at start.
    pub id_token_key_pem: Option<String>,
    /// The answer signing key (PEM); `None`: RSA-2048 generated at start.
    pub answer_key_pem: Option<String>,
    /// Authorization codes' lifetime (60 s).
    pub code_lifetime: Duration,
    /// Client-credentials tokens' lifetime (3600 s).
    pub client_token_lifetime: Duration,
    /// Authorization-code tokens' lifetime (600 s).
    pub authorization_token_lifetime: Duration,
    /// How many refusals `GET /admin/refusals` keeps.
    pub refusal_log_capacity: usize,
}

impl OpSandboxConfig {
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        api_key: impl Into<String>,
        redirect_uris: Vec<String>,
    ) -> OpSandboxConfig {
        OpSandboxConfig {
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            api_key: SecretString::from(api_key.into()),
            redirect_uris,
            tpp_signing_certificate_pem: String::new(),
            tpp_signing_key_id: DEFAULT_SIGNING_KEY_ID.into(),
            client_certificate_pem: None,
            issuer: None,
            audience: None,
            id_token_key_pem: None,
            answer_key_pem: None,
            code_lifetime: Duration::from_secs(60),
            client_token_lifetime: Duration::from_secs(3600),
            authorization_token_lifetime: Duration::from_secs(600),
            refusal_log_capacity: 10_000,
        }
    }
}

impl Default for OpSandboxConfig {
    /// Client `pisgate-test-client`, secret `pisgate-test-secret`, API key
    /// `pisgate-test-api-key`, redirect URI `http://127.0.0.1/v1/callbacks/oidc`.
    fn default() -> OpSandboxConfig {
        OpSandboxConfig::new(
            "pisgate-test-client",
            "pisgate-test-secret",
            "pisgate-test-api-key",
            vec!["http://127.0.0.1/v1/callbacks/oidc".into()],
        )
    }
}

/// Why a simulator cannot be built or started.
#[derive(Debug, thiserror::Error)]
pub enum OpSandboxError {
    #[error("{0}")]
    Config(String),
    #[error("cannot make a test PKI: {0}")]
    Pki(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// One refused request (`GET /admin/refusals`).
#[derive(Debug, Clone, Serialize)]
pub struct RefusalRecord {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// `api` (mutual TLS, the handshake included) or `app` (authorization page, admin).
    pub listener: &'static str,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The check that refused it, e.g. `mtls-client-certificate`, `request-object-signature`.
    pub check: &'static str,
    /// The error code (`FORBIDDEN_CLIENT`, `invalid_grant`, …) when there is one.
    pub code: Option<String>,
    pub detail: String,
}

/// Put on a refused answer; the recording middleware reads it.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub check: &'static str,
    pub code: Option<String>,
    pub detail: String,
}

/// The simulator's state, shared as `Arc<OpSim>`.
pub struct OpSim {
    config: OpSandboxConfig,
    issuer: String,
    audience: String,
    api_url: String,
    app_url: String,
    signing_key: jsonwebtoken::DecodingKey,
    client_certificate_der: Vec<u8>,
    id_key: keys::SimKey,
    answer_key: keys::SimKey,
    clock: SimClock,
    redirect_uris: Mutex<Vec<String>>,
    bank: Mutex<state::Bank>,
    hold: tokio::sync::watch::Sender<bool>,
    refusals: Mutex<(u64, VecDeque<RefusalRecord>)>,
}

impl std::fmt::Debug for OpSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpSim")
            .field("client_id", &self.config.client_id)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl OpSim {
    /// Builds the simulator for an API at `api_url` (`https://host:port`) and an app at
    /// `app_url` (`http://host:port`).
    pub fn new(
        config: OpSandboxConfig,
        api_url: &str,
        app_url: &str,
    ) -> Result<Arc<OpSim>, OpSandboxError> {
        let cfg = |m: String| OpSandboxError::Config(m);
        if config.client_id.trim().is_empty() {
            return Err(cfg("client_id must not be empty".into()));
        }
        if config.tpp_signing_key_id.trim().is_empty() {
            return Err(cfg("tpp_signing_key_id must not be empty".into()));
        }
        let (signing_key, signing_der) =
            keys::certificate_rsa_key(&config.tpp_signing_certificate_pem)
                .map_err(|e| cfg(format!("tpp_signing_certificate_file: {e}")))?;
        let client_certificate_der = match &config.client_certificate_pem {
            Some(pem) => {
                keys::certificate_rsa_key(pem)
                    .map_err(|e| cfg(format!("client_certificate_file: {e}")))?
                    .1
            }
            None => signing_der,
        };
        let id_key = match &config.id_token_key_pem {
            Some(pem) => keys::SimKey::from_pem("op-sandbox-id-token-1", pem)
                .map_err(|e| cfg(format!("id_token_key_file: {e}")))?,
            None => keys::SimKey::generate("op-sandbox-id-token-1").map_err(cfg)?,
        };
        let answer_key = match &config.answer_key_pem {
            Some(pem) => keys::SimKey::from_pem("op-sandbox-answers-1", pem)
                .map_err(|e| cfg(format!("answer_key_file: {e}")))?,
            None => keys::SimKey::generate("op-sandbox-answers-1").map_err(cfg)?,
        };
        let api_url = api_url.trim_end_matches('/').to_owned();
        let app_url = app_url.trim_end_matches('/').to_owned();
        let issuer = config.issuer.clone().unwrap_or_else(|| app_url.clone());
        let audience = config.audience.clone().unwrap_or_else(|| api_url.clone());
        let redirect_uris = Mutex::new(config.redirect_uris.clone());
        Ok(Arc::new(OpSim {
            redirect_uris,
            config,
            issuer,
            audience,
            api_url,
            app_url,
            signing_key,
            client_certificate_der,
            id_key,
            answer_key,
            clock: SimClock::default(),
            bank: Mutex::new(state::Bank::default()),
            hold: tokio::sync::watch::channel(false).0,
            refusals: Mutex::new((0, VecDeque::new())),
        }))
    }

    pub fn config(&self) -> &OpSandboxConfig {
        &self.config
    }

    /// The ID tokens' `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audience request objects must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The registered redirect URIs now.
    pub fn redirect_uris(&self) -> Vec<String> {
        lock(&self.redirect_uris).clone()
    }

    /// Replaces the registered redirect URIs (a test that learns pisgate's port after the
    /// simulator started registers its callback here).
    pub fn set_redirect_uris(&self, uris: Vec<String>) {
        *lock(&self.redirect_uris) = uris;
    }

    /// Registers one more redirect URI.
    pub fn register_redirect_uri(&self, uri: impl Into<String>) {
        let uri = uri.into();
        let mut uris = lock(&self.redirect_uris);
        if !uris.contains(&uri) {
            uris.push(uri);
        }
    }

    /// The simulator's clock (codes, tokens, request objects and 77.03 follow it).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub(crate) fn bank(&self) -> MutexGuard<'_, state::Bank> {
        lock(&self.bank)
    }

    /// Holds (or releases) submissions: a held submission waits until released, then is
    /// performed even if its client went away.
    pub fn set_hold_submissions(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    pub fn hold_submissions(&self) -> bool {
        *self.hold.borrow()
    }

    /// Waits while submissions are held.
    pub(crate) async fn wait_unheld(&self) {
        let mut rx = self.hold.subscribe();
        let _ = rx.wait_for(|held| !*held).await;
    }

    /// A payment's admin view (`GET /admin/payments/{id}`).
    pub fn payment(&self, payment_id: &str) -> Option<serde_json::Value> {
        let now = self.now();
        self.bank()
            .payment_mut(payment_id, now)
            .map(|p| p.admin_view())
    }

    /// Every payment's admin view, oldest first.
    pub fn payments(&self) -> Vec<serde_json::Value> {
        let now = self.now();
        let mut bank = self.bank();
        let mut all: Vec<&mut state::Payment> = bank.payments.values_mut().collect();
        all.sort_by_key(|p| p.created);
        all.into_iter()
            .map(|p| {
                p.tick(now);
                p.admin_view()
            })
            .collect()
    }

    /// Moves a payment to `status` (as OP's back office or the shopper at OP would, e.g.
    /// `Cancelled`). `false` if unknown.
    pub fn force_status(&self, payment_id: &str, status: state::Status) -> bool {
        match self.bank().payments.get_mut(payment_id) {
            Some(p) => {
                p.status = status;
                true
            }
            None => false,
        }
    }

    pub(crate) fn record_refusal(&self, mut r: RefusalRecord) {
        let mut log = lock(&self.refusals);
        log.0 += 1;
        r.seq = log.0;
        if log.1.len() >= self.config.refusal_log_capacity.max(1) {
            log.1.pop_front();
        }
        tracing::info!(
            check = r.check,
            status = r.status,
            path = %r.path,
            "OP sandbox refused a request"
        );
        log.1.push_back(r);
    }

    /// Every refusal, oldest first.
    pub fn refusals(&self) -> Vec<RefusalRecord> {
        lock(&self.refusals).1.iter().cloned().collect()
    }

    pub fn clear_refusals(&self) {
        lock(&self.refusals).1.clear();
    }

    /// The discovery document.
    pub fn discovery(&self) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.issuer,
            "authorization_endpoint": format!("{}/oauth/authorize", self.app_url),
            "token_endpoint": format!("{}/oauth/token", self.api_url),
            "revocation_endpoint": format!("{}/oauth/revoke", self.api_url),
            "jwks_uri": format!("{}/oauth/jwks", self.app_url),
            "payments_jwks_uri": format!("{}/jwks/payments", self.app_url),
            "response_types_supported": ["code id_token"],
            "response_modes_supported": ["fragment"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "scopes_supported": ["openid", "payments"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "request_object_signing_alg_values_supported": ["RS256", "PS256"],
            "request_parameter_supported": true,
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "tls_client_certificate_bound_access_tokens": false,
            "acr_values_supported": [app::ACR_SCA],
            "claims_parameter_supported": true,
        })
    }
}

/// Records every answer that carries [`Refused`].
pub(crate) async fn record_refusals(
    State((sim, listener)): State<(Arc<OpSim>, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    if let Some(r) = resp.extensions().get::<Refused>() {
        sim.record_refusal(RefusalRecord {
            seq: 0,
            at: sim.now(),
            listener,
            method,
            path,
            status: resp.status().as_u16(),
            check: r.check,
            code: r.code.clone(),
            detail: r.detail.clone(),
        });
    }
    resp
}

/// A simulator running in-process (tests). Dropping it stops both listeners.
pub struct OpSandbox {
    /// `https://127.0.0.1:PORT`: an OP bank's `base_url` (mutual TLS).
    pub api_url: String,
    /// `http://127.0.0.1:PORT2`: authorization page, JWKS, discovery and `/admin`.
    pub app_url: String,
    /// The test CA (`ca_pem`: trust it for the server certificate; it issued the client
    /// certificate) and the TPP's certificate and key (`tpp_cert_pem`, `tpp_key_pem`):
    /// both the QWAC for mutual TLS and the QSealC for request objects.
    pub pki: TestPki,
    /// The simulator's TLS server certificate (SAN localhost, 127.0.0.1).
    pub server_certificate: TestServerCertificate,
    pub sim: Arc<OpSim>,
    ca_key: rsa::RsaPrivateKey,
    _stop: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for OpSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpSandbox")
            .field("api_url", &self.api_url)
            .field("app_url", &self.app_url)
            .finish_non_exhaustive()
    }
}

impl OpSandbox {
    pub fn client_id(&self) -> &str {
        &self.sim.config.client_id
    }

    pub fn client_secret(&self) -> &SecretString {
        &self.sim.config.client_secret
    }

    pub fn api_key(&self) -> &SecretString {
        &self.sim.config.api_key
    }

    /// The `kid` request objects must carry.
    pub fn signing_key_id(&self) -> &str {
        &self.sim.config.tpp_signing_key_id
    }

    /// `{app_url}/oauth/authorize`.
    pub fn authorize_url(&self) -> String {
        format!("{}/oauth/authorize", self.app_url)
    }

    /// `{app_url}/oauth/jwks`: the ID tokens' keys.
    pub fn jwks_url(&self) -> String {
        format!("{}/oauth/jwks", self.app_url)
    }

    /// `{app_url}/jwks/payments`: the signed answers' keys.
    pub fn payments_jwks_url(&self) -> String {
        format!("{}/jwks/payments", self.app_url)
    }

    /// The ID tokens' `iss` (`app_url` unless configured).
    pub fn issuer(&self) -> &str {
        self.sim.issuer()
    }

    /// The audience request objects must name (`api_url` unless configured).
    pub fn audience(&self) -> &str {
        self.sim.audience()
    }

    /// Writes `ca.pem`, `tpp-cert.pem` and `tpp-key.pem` (0600) into `dir`.
    pub fn write_pki(
        &self,
        dir: &std::path::Path,
    ) -> std::io::Result<crate::sandbox::seb::PkiFiles> {
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
        Ok(crate::sandbox::seb::PkiFiles {
            ca: write("ca.pem", &self.pki.ca_pem, 0o644)?,
            tpp_cert: write("tpp-cert.pem", &self.pki.tpp_cert_pem, 0o644)?,
            tpp_key: write("tpp-key.pem", &self.pki.tpp_key_pem, 0o600)?,
        })
    }

    /// A reqwest client with the TPP's identity that trusts the simulator.
    pub fn tpp_client(&self) -> reqwest::Client {
        tls::client(&self.pki, true).expect("a TPP client for the OP simulator")
    }

    /// Another client certificate issued by the same test CA (not the registered client's):
    /// `(certificate PEM, key PEM)`.
    pub fn issue_client_certificate(&self, subject: &str) -> Result<(String, String), String> {
        crate::sandbox::berlin_group::test_pki::issue_client_certificate(&self.ca_key, subject)
    }
}

/// Starts a simulator on two fresh local ports with a fresh test PKI (TPP subject
/// `CN=pisgate test TPP,O=pisgate,C=FI`). An empty `tpp_signing_certificate_pem` becomes the
/// PKI's TPP certificate. It runs until the returned value is dropped.
pub async fn spawn(mut config: OpSandboxConfig) -> Result<OpSandbox, OpSandboxError> {
    let (pki, server_certificate, ca_key) =
        crate::sandbox::berlin_group::test_pki::generate_with_server_keeping_ca(
            "CN=pisgate test TPP,O=pisgate,C=FI",
        )
        .map_err(OpSandboxError::Pki)?;
    if config.tpp_signing_certificate_pem.trim().is_empty() {
        config.tpp_signing_certificate_pem = pki.tpp_cert_pem.clone();
    }
    let tls = tls::server_config(
        &server_certificate.cert_pem,
        &server_certificate.key_pem,
        &pki.ca_pem,
    )
    .map_err(|e| OpSandboxError::Tls(e.to_string()))?;
    let api = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let app = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let api_url = format!("https://127.0.0.1:{}", api.local_addr()?.port());
    let app_url = format!("http://127.0.0.1:{}", app.local_addr()?.port());
    let sim = OpSim::new(config, &api_url, &app_url)?;
    let (stop, rx) = tokio::sync::watch::channel(());
    let shutdown = async move {
        let mut rx = rx;
        while rx.changed().await.is_ok() {}
    };
    tokio::spawn(serve(api, app, sim.clone(), tls, shutdown));
    Ok(OpSandbox {
        api_url,
        app_url,
        pki,
        server_certificate,
        sim,
        ca_key,
        _stop: stop,
    })
}

/// The API router (served over mutual TLS).
pub fn api_router(sim: Arc<OpSim>) -> Router {
    api::routes(sim.clone()).layer(axum::middleware::from_fn_with_state(
        (sim, "api"),
        record_refusals,
    ))
}

/// The plain-HTTP router: authorization page, JWKS, discovery and admin.
pub fn app_router(sim: Arc<OpSim>) -> Router {
    app::routes(sim.clone())
        .merge(admin::routes(sim.clone()))
        .layer(axum::middleware::from_fn_with_state(
            (sim, "app"),
            record_refusals,
        ))
}

/// Serves the API on `api` (mutual TLS with `tls`) and the app on `app` (plain HTTP) until
/// `shutdown` completes.
pub async fn serve(
    api: tokio::net::TcpListener,
    app: tokio::net::TcpListener,
    sim: Arc<OpSim>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut rx_app = rx.clone();
    let refusing = sim.clone();
    let on_refused = move |detail: String| {
        refusing.record_refusal(RefusalRecord {
            seq: 0,
            at: refusing.now(),
            listener: "api",
            method: String::new(),
            path: String::new(),
            status: 0,
            check: "mtls-client-certificate",
            code: None,
            detail,
        });
    };
    let api_task = tokio::spawn(tls::serve_mtls_with(
        api,
        api_router(sim.clone()),
        tls,
        async move {
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        },
        on_refused,
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
