//! A strict Berlin Group NextGenPSD2 (XS2A 1.3.12) ASPSP for payment initiation, for tests
//! and local runs: `pisgate sandbox --protocol berlin-group`. A TPP's base URL is
//! `http://HOST:PORT/psd2` (the base path is a setting) and it calls
//! `/psd2/v1/{payment-service}/{payment-product}...` as the spec defines.
//!
//! It errs the strict way, so that a client bug shows up here rather than at a bank:
//! * every request must carry a UUID `X-Request-ID` (never reused, unless replay is
//!   allowed), a draft-cavage `Signature` with the Berlin Group's keyId and header rules, a
//!   `Digest` over the exact body (the empty one too), a fresh `Date` and a
//!   `TPP-Signature-Certificate` issued by a configured CA ([`verify`]);
//! * bodies are validated against the vendored OpenAPI's schemas with unknown fields
//!   refused ([`spec`]), then by the rules the schema cannot say ([`rules`]);
//! * every refusal is the spec's HTTP status and code in the `tppMessages` shape, with the
//!   request's `X-Request-ID` echoed ([`refusal`]);
//! * every answer it gives is validated against the same OpenAPI (body schema, declared
//!   status and headers): a violation is a bug of the simulator, logged as an error and
//!   listed at `GET /admin/selfcheck`;
//! * `_links` are absolute and carry the payment product, so a client that rebuilds links
//!   from the spec's examples (which omit the product) instead of following them fails.
//!
//! Payments play scenarios chosen by their amount or creditor name ([`scenarios`]); the
//! shopper approves or refuses on the simulator's HTML page (`/sca/{authorisationId}`,
//! no JavaScript) or through the machine path `POST /admin/sca/{authorisationId}`
//! ([`admin`]). Time comes from a clock tests can move (`POST /admin/clock/advance`).
//! Faults (latency, 5xx, 429, dropped connections, garbled or late answers after the bank
//! acted) are injected with the Nordea sandbox's rules (`PUT /admin/faults`).
//!
//! The paths, settings, scenarios and refusals are documented in
//! `docs/sandbox-berlin-group.md`.
//!
//! It keeps everything in memory and its admin paths have no authentication: it must never
//! be exposed to anything but a test network, and never be pointed at real accounts. It must
//! never import pisgate's own Berlin Group client (`bank/`), or a bug there would be
//! mirrored here and never caught.

pub mod admin;
mod api;
mod operations;
pub(crate) mod pages;
pub mod refusal;
pub mod rules;
pub mod scenarios;
pub mod spec;
pub mod state;
pub mod test_pki;
pub mod verify;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::sandbox::faults::FaultSwitch;
use crate::sandbox::{SimClock, lock};

pub use verify::TrustedCa;

/// How the simulator behaves. Build it with [`BgSandboxConfig::new`].
#[derive(Debug, Clone)]
pub struct BgSandboxConfig {
    /// `scheme://host:port` at which TPPs and browsers reach the simulator; every `_links`
    /// href and the SCA pages are built on it.
    pub public_url: String,
    /// Prefix before `/v1/...` (default `/psd2`).
    pub base_path: String,
    /// Payment products offered (others: 404 PRODUCT_UNKNOWN).
    pub products: Vec<String>,
    /// CA certificates (PEM) that may issue TPP signing certificates.
    pub tpp_cas: Vec<TrustedCa>,
    /// Whether every request must be signed (default true). Off: unsigned requests pass,
    /// signed ones are still verified.
    pub signature_required: bool,
    /// How far `Date` may be from the simulator's clock (default 120 s).
    pub max_clock_skew: Duration,
    /// How long the shopper has to approve a decoupled SCA (default 30 s).
    pub decoupled_timeout: Duration,
    /// The length of one scenario step after the SCA (default 2 s).
    pub status_step: Duration,
    /// Accept an `X-Request-ID` already seen (default false: 400 FORMAT_ERROR).
    pub allow_request_id_reuse: bool,
    /// How many requests `/admin/requests` keeps.
    pub request_log_capacity: usize,
}

impl BgSandboxConfig {
    pub fn new(public_url: impl Into<String>, tpp_cas: Vec<TrustedCa>) -> BgSandboxConfig {
        BgSandboxConfig {
            public_url: public_url.into().trim_end_matches('/').to_owned(),
            base_path: "/psd2".into(),
            products: vec![
                "sepa-credit-transfers".into(),
                "instant-sepa-credit-transfers".into(),
            ],
            tpp_cas,
            signature_required: true,
            max_clock_skew: Duration::from_secs(120),
            decoupled_timeout: Duration::from_secs(30),
            status_step: Duration::from_secs(2),
            allow_request_id_reuse: false,
            request_log_capacity: 10_000,
        }
    }
}

/// One API call as received and answered (`GET /admin/requests`). Bodies only ever hold
/// test data; the `Authorization` value is masked.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    pub seq: u64,
    pub received_at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    /// The spec's operationId, when the path is one.
    pub operation: Option<&'static str>,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
    pub response_headers: Vec<(String, String)>,
    pub response_body: Option<Value>,
    /// The first tppMessages code of a refusal.
    pub code: Option<String>,
    /// The injected fault that answered or changed it (`http503`, `drop_after_processing`,
    /// ...; see `PUT /admin/faults`). `status` is 0 when no answer was sent.
    pub fault: Option<&'static str>,
}

/// A violation of the OpenAPI by one of the simulator's own answers.
#[derive(Debug, Clone, Serialize)]
pub struct SelfCheckFailure {
    pub at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub schema: String,
    pub violations: Vec<String>,
}

/// The simulator's state, shared as `Arc<BgSandbox>`.
pub struct BgSandbox {
    config: BgSandboxConfig,
    clock: SimClock,
    bank: Mutex<state::Bank>,
    log: Mutex<(u64, VecDeque<Exchange>)>,
    selfcheck: Mutex<Vec<SelfCheckFailure>>,
    /// Injected faults: the Nordea sandbox's rules ([`crate::sandbox::faults`]).
    faults: Arc<FaultSwitch>,
}

impl std::fmt::Debug for BgSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgSandbox")
            .field("public_url", &self.config.public_url)
            .finish_non_exhaustive()
    }
}

/// Why a simulator cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BgSandboxError {
    #[error("public_url must be an absolute http(s) URL without a path: {0}")]
    PublicUrl(String),
    #[error("base_path must start with / and not end with one: {0}")]
    BasePath(String),
    #[error("no TPP CA certificate configured (signatures are required)")]
    NoCa,
    #[error("no payment product configured")]
    NoProducts,
}

impl BgSandbox {
    pub fn new(config: BgSandboxConfig) -> Result<Arc<BgSandbox>, BgSandboxError> {
        let url = url::Url::parse(&config.public_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host() && u.path() == "/")
            .ok_or_else(|| BgSandboxError::PublicUrl(config.public_url.clone()))?;
        drop(url);
        if !config.base_path.is_empty()
            && (!config.base_path.starts_with('/') || config.base_path.ends_with('/'))
        {
            return Err(BgSandboxError::BasePath(config.base_path.clone()));
        }
        if config.signature_required && config.tpp_cas.is_empty() {
            return Err(BgSandboxError::NoCa);
        }
        if config.products.is_empty() {
            return Err(BgSandboxError::NoProducts);
        }
        Ok(Arc::new(BgSandbox {
            config,
            clock: SimClock::default(),
            bank: Mutex::new(state::Bank::default()),
            log: Mutex::new((0, VecDeque::new())),
            selfcheck: Mutex::new(Vec::new()),
            faults: Arc::default(),
        }))
    }

    pub fn config(&self) -> &BgSandboxConfig {
        &self.config
    }

    /// The simulator's clock: the wall clock moved by [`BgSandbox::advance_clock`]. Scenario
    /// steps, decoupled timeouts and execution dates follow it; the `Date` check and
    /// certificate validity use the real time (the client signs with it).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The bank's state with the decoupled timeout applied.
    fn bank(&self) -> MutexGuard<'_, state::Bank> {
        let mut bank = lock(&self.bank);
        bank.refresh(self.now(), self.config.decoupled_timeout);
        bank
    }

    /// Every API call received, oldest first.
    pub fn requests(&self) -> Vec<Exchange> {
        lock(&self.log).1.iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.log).1.clear();
    }

    fn record(&self, mut exchange: Exchange) {
        exchange.received_at = self.now();
        let mut log = lock(&self.log);
        log.0 += 1;
        exchange.seq = log.0;
        if log.1.len() >= self.config.request_log_capacity.max(1) {
            log.1.pop_front();
        }
        log.1.push_back(exchange);
    }

    /// The injected faults (`PUT /admin/faults`).
    pub fn faults(&self) -> &Arc<FaultSwitch> {
        &self.faults
    }

    /// Every violation of the OpenAPI by the simulator's own answers (empty when healthy).
    pub fn selfcheck_failures(&self) -> Vec<SelfCheckFailure> {
        lock(&self.selfcheck).clone()
    }

    /// The payments as the simulator sees them (status computed now).
    pub fn payments(&self) -> Vec<Value> {
        let now = self.now();
        let bank = self.bank();
        let mut all: Vec<&state::Payment> = bank.payments.values().collect();
        all.sort_by_key(|p| p.created_at);
        all.into_iter()
            .map(|p| self.payment_view(p, &bank, now))
            .collect()
    }

    pub fn payment(&self, id: &str) -> Option<Value> {
        let now = self.now();
        let bank = self.bank();
        bank.payments
            .get(id)
            .map(|p| self.payment_view(p, &bank, now))
    }

    fn payment_view(&self, p: &state::Payment, bank: &state::Bank, now: DateTime<Utc>) -> Value {
        let auths: Vec<&state::Authorisation> = p
            .authorisations
            .iter()
            .chain(&p.cancellation_authorisations)
            .filter_map(|a| bank.auths.get(a))
            .collect();
        let mut v = serde_json::to_value(p).unwrap_or_default();
        v["transactionStatus"] = Value::from(p.status(now, self.config.status_step).code());
        v["authorisation_details"] = serde_json::to_value(auths).unwrap_or_default();
        v
    }

    /// Forgets every payment, authorisation, seen request id, request and self-check failure.
    pub fn reset(&self) {
        self.faults.reset();
        *lock(&self.bank) = state::Bank::default();
        self.clear_requests();
        lock(&self.selfcheck).clear();
    }

    /// The shopper's decision through the machine path.
    pub fn decide(
        &self,
        authorisation_id: &str,
        approve: bool,
    ) -> Result<state::Decided, state::DecideError> {
        let now = self.now();
        let mut bank = self.bank();
        bank.decide(authorisation_id, approve, now, self.config.status_step)
    }

    /// The shopper opens the SCA page (without a browser).
    pub fn open(&self, authorisation_id: &str) -> bool {
        let now = self.now();
        self.bank().open(authorisation_id, now).is_some()
    }

    fn link(&self, path: &str) -> String {
        format!("{}{path}", self.config.public_url)
    }

    fn api_link(&self, rest: &str) -> String {
        format!("{}{}{rest}", self.config.public_url, self.config.base_path)
    }
}

/// The whole simulator: the API under the base path, the shopper's pages, the OAuth server
/// and the admin paths.
pub fn router(sandbox: Arc<BgSandbox>) -> Router {
    api::routes(sandbox.clone())
        .merge(pages::routes(sandbox.clone()))
        .merge(admin::routes(sandbox))
}

/// Serves the simulator on `listener` until `shutdown` completes (on the Nordea sandbox's
/// accept loop, which can close a connection with no answer for a fault).
pub async fn serve(
    listener: tokio::net::TcpListener,
    sandbox: Arc<BgSandbox>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::sandbox::server::serve_app(listener, router(sandbox), shutdown).await
}
