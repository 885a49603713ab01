//! A strict simulator of Nordea's PIS API for single SCA, for tests and local runs.
//!
//! `pisgate sandbox` serves it, and pisgate's integration tests point the real Nordea client at
//! it with the base URL `http://HOST:PORT/personal`. It is strict where the bank is strict, so
//! that a client bug shows up here rather than in production:
//!
//! * every call under `/personal` must carry the app's `X-IBM-Client-Id`/`X-IBM-Client-Secret`
//!   and a draft-cavage `Signature` over exactly the header list Nordea requires, checked
//!   against the registered public key; bodies must match their `Digest`; the
//!   `X-Nordea-Originating-Date` must be a fresh IMF-fixdate ([`auth`]);
//! * payment bodies are validated by the rules of the Nordea change log and answered with
//!   Nordea-style 400 failures ([`validation`]);
//! * a payment does not exist for status or details until the shopper opens the signing link
//!   (as the seed's Norway example says), then moves PendingUserApproval → Confirmed → Paid on
//!   the configured delays ([`payments`]); one opened but not signed within
//!   [`SandboxConfig::approval_timeout`] (30 minutes by default, counted from initiation)
//!   becomes UserApprovalTimeout and its link refuses, as a real bank times out unsigned
//!   payments (a payment never opened keeps answering 404);
//! * codes are single use, tokens belong to one PSU and every new exchange or refresh revokes
//!   that PSU's older tokens ([`tokens`]).
//!
//! The signature verification here is written from the protocol description
//! (`shared/nordea-pis.md`), independently of pisgate's own Nordea client in `bank/`: the
//! sandbox must never import the client's signing code, or a bug in it would be mirrored here
//! and never caught.
//!
//! Outside `/personal` it serves the shopper's signing page (`/sandbox/sign/{token}`) and an
//! unauthenticated admin API (`/sandbox/admin/...`, see [`admin`]) for fault injection,
//! inspection of received requests, scenarios and a movable clock. It keeps everything in
//! memory. It must never be exposed to anything but a test network: the admin API has no
//! authentication by design.
//!
//! # Choices where the published material is silent
//! * Missing credentials answer 401 `error.apikey.missing`; wrong ones 401 `unauthorized`.
//!   Every signature problem (missing or malformed header, keyId, algorithm, header list,
//!   a listed header missing, bad signature) answers 401 `error.signature.invalid` with a
//!   precise description; a body that does not match its digest answers 401
//!   `error.digest.invalid` (a form body's digest is over Nordea's normalized string of the
//!   decoded parameters, as Nordea's signing script computes it); an originating date that
//!   is malformed or more than `max_clock_skew` away from the gateway's clock answers 401
//!   `error.date.invalid` naming the header. The gateway's clock can be moved
//!   (`PUT /sandbox/admin/gateway-clock`) and every answer carries it as `Date`.
//! * A DELETE with a body may be signed with the three base headers (Nordea's eIDAS
//!   article) or with `content-type digest` too; both are accepted.
//! * Bearer problems answer 401 `error.token.invalid` (missing, unknown or revoked, as
//!   Nordea documents) or `error.token.expired`; a payment signed by another PSU answers 403
//!   `error.resource.denied`; an unknown (or not yet opened) payment 404
//!   `error.resource.not_found`. A payment nobody has signed yet (opened, pending) can be
//!   read and deleted with any live token of the app. The status call needs no bearer and
//!   ignores one if sent.
//! * Bulk delete answers 200 with `{"response": [deleted ids], "errors": [{"payment_id",
//!   "code", "description"}]}`; deletable are PendingUserApproval, PendingConfirmation,
//!   PendingSecondConfirmation, OnHold and Confirmed (a running recurring series included);
//!   anything else is `error.payment.not_deletable`, and so is a payment signed a moment ago
//!   whose confirmation is still running (`confirm_delay`: it still shows
//!   PendingUserApproval, but the signature is being processed). A payment whose link nobody
//!   opened yet (status 404) can be deleted by any live token, and its link then refuses.
//!   Deleted payments become Cancelled.
//! * The token endpoint answers OAuth-style failure codes (`invalid_request`,
//!   `invalid_grant`, `unsupported_grant_type`) inside Nordea's error envelope. Its success
//!   answer is bare, as in Nordea's v5 schema (`access_token`, `expires_in`, `token_type`,
//!   `refresh_token`; no `group_header`); revoke answers a bare JSON string. With
//!   [`SandboxConfig::refresh_keeps_refresh_token`] a refresh answers without
//!   `refresh_token` and the refresh token stays valid (a bank that does not rotate them).
//! * By default the initiation answer carries only `_links`, as in every example of the seed
//!   (the payment id is the last segment of the status link);
//!   [`SandboxConfig::echo_payment_id_on_initiation`] adds `payment_id` and `payment_status`.
//! * The PSU identity is whatever the signing form's `psu_id` field holds (default
//!   `sandbox-psu-1`): codes, tokens and payment ownership are keyed by it.
//! * Scenario FundsNotAvailable (seed, v3 funds check): set when the creditor's or debtor's
//!   `message` contains `FundsNotAvailable` at initiation, or through
//!   `PUT /sandbox/admin/payments/{id}/scenario`. Other outcomes (Rejected,
//!   InsufficientFunds, …) are forced through `PUT /sandbox/admin/payments/{id}/status`.
//! * Nordea's sandbox `/confirm` step is not simulated: its single-SCA path is not published
//!   and production never has it; the signing page is the only way to sign.
//! * Nordea's published token answer has no `id_token`. With token identity on
//!   ([`SandboxConfig::token_identity`], setting `sandbox.token_identity`, or at run time
//!   `PUT /sandbox/admin/token-identity` / [`Sandbox::set_token_identity`]) every token
//!   answer (code exchange and refresh) carries an unsigned JWT `id_token` with claims
//!   `{"sub": <PSU id>, "iat": <issue time on the sandbox clock, fractional seconds with
//!   microsecond precision>}` (see [`tokens`]).
//! * Amounts are echoed the way the seed's examples show them: trailing zeros dropped
//!   (`10.00` → `"10"`), and `availability_of_funds` is the string `"true"`/`"false"`.

pub mod admin;
mod auth;
pub mod berlin_group;
pub mod faults;
mod handlers;
mod json;
pub mod op;
pub mod payments;
mod record;
pub mod scenarios;
pub mod seb;
mod server;
mod signing;
mod tokens;
mod validation;
mod wire;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use rsa::RsaPublicKey;
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs1v15::VerifyingKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use secrecy::SecretString;
use sha2::Sha256;

pub use faults::{Fault, FaultRule, FaultTarget, OperationCounters};
pub use payments::{BankStatus, PaymentView};
pub use record::RecordedRequest;
pub use server::{serve, serve_on_one_thread};
pub use signing::DEFAULT_PSU_ID;

/// The operations of Nordea's API that the sandbox serves, used for fault injection, counters
/// and the request log.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Initiate,
    Status,
    Details,
    Funds,
    Cancel,
    Token,
    Revoke,
    /// A Berlin Group authorisation resource (start, list, update), or one of SEB's BankID
    /// orders: the Berlin Group and SEB simulators' faults only; Nordea has none.
    Authorise,
    /// A Berlin Group payment authorisation's SCA status (`GET …/authorisations/{id}`): the
    /// Berlin Group simulator only. A `status` fault rule covers it too.
    ScaStatus,
}

impl Operation {
    pub const ALL: [Operation; 9] = [
        Operation::Initiate,
        Operation::Status,
        Operation::Details,
        Operation::Funds,
        Operation::Cancel,
        Operation::Token,
        Operation::Revoke,
        Operation::Authorise,
        Operation::ScaStatus,
    ];
}

/// How the sandbox behaves. Build it with [`SandboxConfig::new`] and change the fields
/// tests care about.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The app's client id (`X-IBM-Client-Id`, and the signature's `keyId`).
    pub client_id: String,
    /// The app's client secret (`X-IBM-Client-Secret`).
    pub client_secret: SecretString,
    /// The registered RSA public key: SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`, as PEM or
    /// as a bare base64 body.
    pub public_key_pem: String,
    /// Absolute URL at which a browser reaches the sandbox (signing links are built on it).
    pub public_base_url: String,
    /// When set, `X-Nordea-Originating-Host` must equal it; otherwise any non-empty value.
    pub expected_originating_host: Option<String>,
    /// How far `X-Nordea-Originating-Date` may be from the sandbox's clock.
    pub max_clock_skew: Duration,
    /// From the PSU's approval to Confirmed.
    pub confirm_delay: Duration,
    /// From Confirmed to Paid (for a payment due today).
    pub paid_delay: Duration,
    /// Between two occurrences of an `EVERY_MINUTE_SANDBOX_ONLY` recurring payment.
    pub recurring_interval: Duration,
    /// When set, a payment whose link was opened but not signed within this time (from its
    /// initiation) becomes UserApprovalTimeout and its link stops working. Default 30
    /// minutes (a real bank times out unsigned payments); `None` switches it off.
    pub approval_timeout: Option<Duration>,
    /// How long an authorization code can be exchanged.
    pub code_lifetime: Duration,
    /// Lifetime of an access token (`expires_in`).
    pub access_token_lifetime: Duration,
    /// When not empty, `authentication.redirect_uri` must be one of these (as an app's
    /// registered redirect URIs); when empty, any absolute http(s) URL.
    pub allowed_redirect_uris: Vec<String>,
    /// Adds `payment_id` and `payment_status` to the initiation answer (the seed's examples
    /// carry only `_links`).
    pub echo_payment_id_on_initiation: bool,
    /// Token answers also carry an unsigned `id_token` with the PSU (`sub`) and the issue
    /// time (`iat`); the starting value of [`Sandbox::set_token_identity`]. Default false.
    pub token_identity: bool,
    /// A refresh answers a new access token and no `refresh_token`, and the refresh token
    /// stays valid (a bank that does not rotate refresh tokens: RFC 6749 §6 allows it).
    /// Default false (every refresh rotates the pair, as Nordea does).
    pub refresh_keeps_refresh_token: bool,
    /// Faults active from the start (they can be changed at run time).
    pub faults: Vec<FaultRule>,
    /// How many requests the request log keeps (the oldest go first); the per-operation
    /// counters count every request regardless.
    pub request_log_capacity: usize,
}

impl SandboxConfig {
    /// A configuration with the usual defaults: 5 min clock skew, 2 s to Confirmed, 3 s more
    /// to Paid, 60 s recurring interval, 30 min to sign, 10 min codes, 3600 s access tokens,
    /// no `id_token`, no faults.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: SecretString,
        public_key_pem: impl Into<String>,
        public_base_url: impl Into<String>,
    ) -> SandboxConfig {
        SandboxConfig {
            client_id: client_id.into(),
            client_secret,
            public_key_pem: public_key_pem.into(),
            public_base_url: public_base_url.into(),
            expected_originating_host: None,
            max_clock_skew: Duration::from_secs(300),
            confirm_delay: Duration::from_secs(2),
            paid_delay: Duration::from_secs(3),
            recurring_interval: Duration::from_secs(60),
            approval_timeout: Some(Duration::from_secs(30 * 60)),
            code_lifetime: Duration::from_secs(600),
            access_token_lifetime: Duration::from_secs(3600),
            allowed_redirect_uris: Vec::new(),
            echo_payment_id_on_initiation: false,
            token_identity: false,
            refresh_keeps_refresh_token: false,
            faults: Vec::new(),
            request_log_capacity: 10_000,
        }
    }
}

/// Why a sandbox could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the registered public key is neither an SPKI nor a PKCS#1 RSA public key")]
    InvalidPublicKey,
    #[error("the registered public key has {0} bits; Nordea requires at least 2048")]
    KeyTooSmall(usize),
    #[error("public_base_url must be an absolute http(s) URL: {0}")]
    InvalidBaseUrl(String),
    #[error("client_id must not be empty")]
    EmptyClientId,
}

/// The sandbox's state: configuration, the verifying key, payments, tokens, faults and the
/// request log. Shared as `Arc<Sandbox>`.
pub struct Sandbox {
    config: SandboxConfig,
    verifying_key: RequestVerifier,
    public_base_url: String,
    clock: SimClock,
    /// How far the API gateway's own clock is from the real one (seconds): it moves the
    /// originating-date check and the `Date` header of every answer under `/personal`, so a
    /// test can stand for a client whose clock is off ([`Sandbox::set_gateway_clock_offset`]).
    gateway_clock_offset: std::sync::atomic::AtomicI64,
    /// Whether token answers carry an `id_token` (switchable at run time).
    token_identity: AtomicBool,
    bank: Mutex<payments::BankState>,
    faults: faults::FaultSwitch,
    log: Mutex<record::RequestLog>,
    /// The `Date` header of the current second on the gateway's clock (formatted once a
    /// second, not once per answer).
    date_header: Mutex<Option<(u64, axum::http::HeaderValue)>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("client_id", &self.config.client_id)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

/// Parses a registered public key: SPKI (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`), as PEM
/// or as the bare base64 body the developer portal shows.
fn parse_public_key(pem: &str) -> Result<RsaPublicKey, SandboxError> {
    use base64::Engine;
    let pem = pem.trim();
    if pem.starts_with("-----BEGIN") {
        return RsaPublicKey::from_public_key_pem(pem)
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
            .map_err(|_| SandboxError::InvalidPublicKey);
    }
    let compact: String = pem.split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| SandboxError::InvalidPublicKey)?;
    RsaPublicKey::from_public_key_der(&der)
        .or_else(|_| RsaPublicKey::from_pkcs1_der(&der))
        .map_err(|_| SandboxError::InvalidPublicKey)
}

/// The registered key, parsed once at start (never per request), verifying
/// RSASSA-PKCS1-v1_5 SHA-256 signatures: by aws-lc-rs (several times cheaper per request than
/// the `rsa` crate) for the sizes it takes (2048 to 8192 bits), by the `rsa` crate above that. Both accept exactly the valid
/// signatures over the message; a signature whose length is not the modulus's is refused.
pub(crate) enum RequestVerifier {
    AwsLc {
        key: aws_lc_rs::signature::ParsedPublicKey,
        modulus_len: usize,
    },
    Rsa(VerifyingKey<Sha256>),
}

impl RequestVerifier {
    fn new(key: RsaPublicKey) -> Result<RequestVerifier, SandboxError> {
        if key.size() * 8 <= 8192 {
            let der = key
                .to_pkcs1_der()
                .map_err(|_| SandboxError::InvalidPublicKey)?;
            let parsed = aws_lc_rs::signature::ParsedPublicKey::new(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                der.as_bytes(),
            )
            .map_err(|_| SandboxError::InvalidPublicKey)?;
            return Ok(RequestVerifier::AwsLc {
                key: parsed,
                modulus_len: key.size(),
            });
        }
        Ok(RequestVerifier::Rsa(VerifyingKey::<Sha256>::new(key)))
    }

    /// Whether `signature` is this key's signature over `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            RequestVerifier::AwsLc { key, modulus_len } => {
                signature.len() == *modulus_len && key.verify_sig(message, signature).is_ok()
            }
            RequestVerifier::Rsa(key) => {
                use rsa::signature::Verifier as _;
                rsa::pkcs1v15::Signature::try_from(signature)
                    .is_ok_and(|s| key.verify(message, &s).is_ok())
            }
        }
    }
}

impl Sandbox {
    /// Builds a sandbox; fails on a key that cannot be read or is under 2048 bits, or a
    /// base URL that is not absolute.
    pub fn new(mut config: SandboxConfig) -> Result<Arc<Sandbox>, SandboxError> {
        if config.client_id.is_empty() {
            return Err(SandboxError::EmptyClientId);
        }
        let key = parse_public_key(&config.public_key_pem)?;
        let bits = key.size() * 8;
        if bits < 2048 {
            return Err(SandboxError::KeyTooSmall(bits));
        }
        let base = url::Url::parse(&config.public_base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| SandboxError::InvalidBaseUrl(config.public_base_url.clone()))?;
        let public_base_url = base.as_str().trim_end_matches('/').to_owned();
        let initial_faults = std::mem::take(&mut config.faults);
        let log_capacity = config.request_log_capacity;
        let token_identity = AtomicBool::new(config.token_identity);
        Ok(Arc::new(Sandbox {
            config,
            verifying_key: RequestVerifier::new(key)?,
            public_base_url,
            clock: SimClock::default(),
            gateway_clock_offset: std::sync::atomic::AtomicI64::new(0),
            token_identity,
            bank: Mutex::new(payments::BankState::default()),
            faults: faults::FaultSwitch::new(initial_faults),
            log: Mutex::new(record::RequestLog::with_capacity(log_capacity)),
            date_header: Mutex::new(None),
        }))
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The sandbox's notion of now: the wall clock moved by [`Sandbox::advance_clock`].
    /// Payment lifecycles and token expiry follow it; the request-date check does not (the
    /// client signs with the real time).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves the sandbox's clock forward, so tests can make time pass without sleeping.
    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Sets how far (seconds, either way) the API gateway's clock is from the real one: the
    /// originating-date check and the answers' `Date` header follow it.
    pub fn set_gateway_clock_offset(&self, seconds: i64) {
        self.gateway_clock_offset.store(seconds, Ordering::SeqCst);
    }

    /// The API gateway's clock (the real one moved by the gateway offset).
    pub fn gateway_now(&self) -> std::time::SystemTime {
        let offset = self.gateway_clock_offset.load(Ordering::SeqCst);
        let now = std::time::SystemTime::now();
        let by = Duration::from_secs(offset.unsigned_abs());
        if offset >= 0 { now + by } else { now - by }
    }

    /// The `Date` header of an answer: the gateway's clock as an IMF-fixdate.
    pub(crate) fn date_header(&self) -> Option<axum::http::HeaderValue> {
        let now = self.gateway_now();
        let format = || axum::http::HeaderValue::from_str(&httpdate::fmt_http_date(now)).ok();
        let Ok(since_epoch) = now.duration_since(std::time::UNIX_EPOCH) else {
            return format();
        };
        let second = since_epoch.as_secs();
        let mut cached = lock(&self.date_header);
        if let Some((at, value)) = &*cached
            && *at == second
        {
            return Some(value.clone());
        }
        let value = format()?;
        *cached = Some((second, value.clone()));
        Some(value)
    }

    /// Switches the `id_token` in token answers on or off from the next token call on
    /// (see [`SandboxConfig::token_identity`]).
    pub fn set_token_identity(&self, on: bool) {
        self.token_identity.store(on, Ordering::SeqCst);
    }

    /// Whether token answers carry an `id_token` now.
    pub fn token_identity(&self) -> bool {
        self.token_identity.load(Ordering::SeqCst)
    }

    /// Every request received under `/personal`, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.log).entries()
    }

    pub fn clear_requests(&self) {
        lock(&self.log).clear();
    }

    /// The active fault rules (with how many applications each has left).
    pub fn faults(&self) -> Vec<FaultRule> {
        self.faults.rules()
    }

    /// Replaces the fault rules.
    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        self.faults.set(rules);
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.faults.add(rule);
    }

    pub fn clear_faults(&self) {
        self.faults.set(Vec::new());
    }

    /// Requests received and faults injected, per operation.
    pub fn counters(&self) -> std::collections::BTreeMap<Operation, OperationCounters> {
        self.faults.counters()
    }

    pub fn reset_counters(&self) {
        self.faults.reset_counters();
    }

    /// A payment as the sandbox sees it (whether or not the bank API would show it yet).
    pub fn payment(&self, payment_id: &str) -> Option<PaymentView> {
        let now = self.now();
        lock(&self.bank)
            .payments
            .get(payment_id)
            .map(|p| p.view(now, &self.config))
    }

    pub fn payments(&self) -> Vec<PaymentView> {
        let now = self.now();
        let mut all: Vec<PaymentView> = lock(&self.bank)
            .payments
            .values()
            .map(|p| p.view(now, &self.config))
            .collect();
        all.sort_by_key(|p| p.created_at);
        all
    }

    /// Every payment whose `external_id` is exactly `external_id`, oldest first (pisgate
    /// sends its own payment id there, so this counts the bank payments made for one of
    /// its payments). Opened or not.
    pub fn payment_by_external_id(&self, external_id: &str) -> Vec<PaymentView> {
        let now = self.now();
        let mut found: Vec<PaymentView> = lock(&self.bank)
            .payments
            .values()
            .filter(|p| p.details.external_id.as_deref() == Some(external_id))
            .map(|p| p.view(now, &self.config))
            .collect();
        found.sort_by_key(|p| p.created_at);
        found
    }

    /// Sets or clears the FundsNotAvailable scenario of a payment. `false` if unknown.
    pub fn set_funds_not_available(&self, payment_id: &str, on: bool) -> bool {
        match lock(&self.bank).payments.get_mut(payment_id) {
            Some(p) => {
                p.funds_not_available = on;
                true
            }
            None => false,
        }
    }

    /// Forces a payment into a status (e.g. Rejected, InsufficientFunds) from now on, as the
    /// bank's back office would. `None` returns it to its normal lifecycle. `false` if unknown.
    pub fn force_status(&self, payment_id: &str, status: Option<BankStatus>) -> bool {
        match lock(&self.bank).payments.get_mut(payment_id) {
            Some(p) => {
                p.forced_status = status;
                true
            }
            None => false,
        }
    }

    /// The absolute signing link of a payment (what the initiation's `redirect` link holds).
    pub fn signing_url(&self, payment_id: &str) -> Option<String> {
        lock(&self.bank)
            .payments
            .get(payment_id)
            .map(|p| self.signing_link(&p.signing_token))
    }

    fn signing_link(&self, signing_token: &str) -> String {
        format!("{}/sandbox/sign/{signing_token}", self.public_base_url)
    }
}

/// The whole sandbox: Nordea's API under `/personal`, the signing page and the admin API.
pub fn router(sandbox: Arc<Sandbox>) -> Router {
    handlers::routes(sandbox.clone())
        .merge(signing::routes(sandbox.clone()))
        .merge(admin::routes(sandbox))
}

/// Locks a mutex, going on with the data if a panicking thread poisoned it (every critical
/// section here leaves the state consistent).
/// The simulators share it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A simulator's clock: the wall clock moved forward by `advance` (tests and the admin
/// API make time pass without sleeping). Never moves back.
#[derive(Debug, Default)]
pub(crate) struct SimClock {
    offset: Mutex<chrono::Duration>,
}

impl SimClock {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        Utc::now() + *lock(&self.offset)
    }

    pub(crate) fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let mut offset = lock(&self.offset);
        *offset = offset.checked_add(&by).unwrap_or(*offset);
    }
}
