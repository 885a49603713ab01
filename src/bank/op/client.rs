//! [`OpClient`]: the [`Bank`] port spoken to OP over HTTPS with mutual TLS (the QWAC), per
//! docs/banks/op.md and the OP contract §2–§3.
//!
//! | operation | request | token | retried |
//! |---|---|---|---|
//! | (client token) | POST {base}/oauth/token `grant_type=client_credentials` | – | never; cached until 60 s before expiry |
//! | initiate | POST {base}/paymentsapi/v2/sepa-payments (`x-idempotency-key` = pisgate's id) | client | never (but once after a 401) |
//! | status, details | GET {base}/paymentsapi/v2/sepa-payments/{id} | client | yes |
//! | cancel | DELETE {base}/paymentsapi/v2/sepa-payments/{id} (OP's revoke) | client | never (but once after a 401) |
//! | exchange_code_for | POST {base}/oauth/token `grant_type=authorization_code` | – | never (single-use code) |
//! | refresh | POST {base}/oauth/token `grant_type=refresh_token` | – | never (rotating) |
//! | submit | POST {base}/paymentsapi/v2/sepa-payments/{id}/submissions | the payment's | never |
//!
//! Every `/paymentsapi` call carries `x-api-key`, a fresh `x-fapi-interaction-id` (UUID) and,
//! when the shopper's address is known, `x-fapi-customer-ip-address`; every POST carries
//! `x-idempotency-key`. With `payments_jwks_url` set, every 2xx `/paymentsapi` answer must
//! carry a valid detached `x-jws-signature`; a missing or bad one is a garbled answer
//! ([`BankError::Unexpected`]: for a create or a submit an unknown outcome, never a refusal).
//!
//! Decisions:
//! - **401 with the client token**: OP refused before processing; the cached token is
//!   dropped and the call is sent once more with a new one (reads and writes alike: nothing
//!   was processed). A second 401 is `Unavailable { retry_safe: true }`.
//! - **401 with the payment's token** (submit): `TokenRejected`.
//! - **ID tokens**: the front channel's (hybrid flow) is checked before the code is spent
//!   (signature, iss, aud, exp, nonce derived from the state, authorizationId, c_hash,
//!   s_hash); the token endpoint's after (the same but the hashes). Either refused →
//!   `Validation` `ID_TOKEN_INVALID` naming the claim.
//! - Metrics per HTTP attempt as for the other adapters: `pisgate_bank_requests_total` and
//!   `pisgate_bank_request_duration_seconds` (`operation`, `outcome`, `bank`).
//!
//! Never logged or put into an error: tokens (client, access, refresh, ID), codes, states,
//! nonces, the request object, the client secret, the API key, keys, bodies, full IBANs.
//! Span fields carry the route template (`/paymentsapi/v2/sepa-payments/{id}`).

use super::jose::{
    self, IdTokenExpectations, Jwks, RequestObject, RequestObjectAlg, RequestSigner,
};
use super::{convert, errors, wire};
use crate::bank::berlin_group::client::{api_base_url, record_attempt};
pub use crate::bank::nordea::RetryPolicy;
use crate::bank::nordea::errors::{
    parse_retry_after, transport, transport_after_answer, unreadable,
};
use crate::bank::retry::with_read_retries;
use crate::bank::{
    Bank, BankError, BankLinks, BankPaymentId, BankRef, BankTraits, CancelOutcome,
    FundsAvailability, Initiated, PaymentDetails, PaymentInitiation, PsuContext, Revocation,
    ScaStep, StatusReport, TokenSet, trace,
};
use async_trait::async_trait;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tracing::field::Empty;

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";
const PAYMENTS: &str = "/paymentsapi/v2/sepa-payments";
/// The link under which the payment's `authorizationId` is kept.
pub const AUTHORIZATION_ID: &str = "authorizationId";
/// A cached client token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// Everything an OP client needs; the `[banks.<id>]` settings build it.
pub struct OpConfig {
    /// The bank's id in pisgate (`op`): the `bank` label of metrics and logs.
    pub bank_id: String,
    /// The mutual-TLS host of the business APIs and the token endpoint:
    /// `https://mtls-apis.psd2-sandbox.op.fi`. pisgate appends the paths.
    pub base_url: String,
    /// The authorization endpoint (front channel, the shopper's browser):
    /// `https://authorize.psd2-sandbox.op.fi/oauth/authorize`.
    pub authorize_url: String,
    /// The ID tokens' `iss`.
    pub issuer: String,
    /// The JWKS of OP's ID-token keys.
    pub jwks_url: String,
    /// The JWKS of OP's answer-signing keys; when set, answers must be signed.
    pub payments_jwks_url: Option<String>,
    pub client_id: String,
    pub client_secret: SecretString,
    pub api_key: SecretString,
    /// The QWAC and its private key, PEM, for mutual TLS. `None` only against a plain HTTP
    /// mock in tests.
    pub tls_identity_pem: Option<SecretString>,
    /// Extra root CA(s), PEM, trusted for OP's server certificates beside the platform's.
    pub tls_ca_pem: Option<String>,
    /// The QSealC's RSA private key (PEM) that signs request objects.
    pub signing_key_pem: SecretString,
    /// The request object's `kid` (the key's id in pisgate's JWKS registered at OP).
    pub signing_key_id: String,
    pub request_object_alg: RequestObjectAlg,
    /// The request object's `aud`; `None`: the origin of `base_url`.
    pub request_object_audience: Option<String>,
    /// OP statuses that mean paid (default `Debited`).
    pub paid_statuses: Vec<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub read_retries: RetryPolicy,
}

impl OpConfig {
    /// A configuration with the defaults for everything but the URLs, client and keys.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        bank_id: impl Into<String>,
        base_url: impl Into<String>,
        authorize_url: impl Into<String>,
        issuer: impl Into<String>,
        jwks_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
        api_key: SecretString,
        signing_key_pem: SecretString,
        signing_key_id: impl Into<String>,
    ) -> OpConfig {
        OpConfig {
            bank_id: bank_id.into(),
            base_url: base_url.into(),
            authorize_url: authorize_url.into(),
            issuer: issuer.into(),
            jwks_url: jwks_url.into(),
            payments_jwks_url: None,
            client_id: client_id.into(),
            client_secret,
            api_key,
            tls_identity_pem: None,
            tls_ca_pem: None,
            signing_key_pem,
            signing_key_id: signing_key_id.into(),
            request_object_alg: RequestObjectAlg::Rs256,
            request_object_audience: None,
            paid_statuses: vec![convert::DEFAULT_PAID.to_owned()],
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            read_retries: RetryPolicy::default(),
        }
    }
}

impl fmt::Debug for OpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpConfig")
            .field("bank_id", &self.bank_id)
            .field("base_url", &self.base_url)
            .field("authorize_url", &self.authorize_url)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("signing_key_id", &self.signing_key_id)
            .field("paid_statuses", &self.paid_statuses)
            .finish_non_exhaustive()
    }
}

/// Why an [`OpClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OpConfigError {
    #[error(
        "bank {0}: {1} must be an absolute http(s) URL with a host and no query, user or fragment"
    )]
    Url(String, &'static str),
    #[error("bank {0}: paid_statuses may list only Debited and Accepted, and must list Debited")]
    PaidStatuses(String),
    #[error("bank {0}: the TLS certificate and key (the QWAC) cannot be read as PEM: {1}")]
    Identity(String, String),
    #[error("bank {0}: tls_ca_file holds no PEM certificate we can read: {1}")]
    Ca(String, String),
    #[error("bank {0}: {1}")]
    SigningKey(String, String),
    #[error("bank {0}: {1} must not be empty")]
    Empty(String, &'static str),
    #[error("could not build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// Which token a call carries.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// None (the token endpoint: the client authenticates in the form).
    None,
    /// The cached client-credentials token.
    Client,
    /// The token from this payment's code exchange (submit).
    Payment(&'a SecretString),
}

/// One logical call to OP.
struct Call<'a> {
    operation: &'static str,
    /// The path template for traces, never the real path.
    route: &'static str,
    method: Method,
    url: Url,
    body: Option<(Vec<u8>, &'static str)>,
    auth: Auth<'a>,
    idempotency_key: Option<&'a str>,
    psu: Option<&'a PsuContext>,
    read: bool,
}

impl<'a> Call<'a> {
    fn new(operation: &'static str, route: &'static str, method: Method, url: Url) -> Call<'a> {
        Call {
            operation,
            route,
            method,
            url,
            body: None,
            auth: Auth::None,
            idempotency_key: None,
            psu: None,
            read: false,
        }
    }

    fn json(mut self, body: &impl Serialize) -> Result<Self, BankError> {
        let bytes =
            serde_json::to_vec(body).map_err(|_| unexpected("could not encode the body"))?;
        self.body = Some((bytes, JSON));
        Ok(self)
    }

    fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            out.append_pair(k, v);
        }
        self.body = Some((out.finish().into_bytes(), FORM));
        self
    }

    fn auth(mut self, auth: Auth<'a>) -> Self {
        self.auth = auth;
        self
    }

    fn idempotency(mut self, key: &'a str) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    fn psu(mut self, psu: Option<&'a PsuContext>) -> Self {
        self.psu = psu;
        self
    }

    fn read(mut self) -> Self {
        self.read = true;
        self
    }

    fn business(&self) -> bool {
        !matches!(self.auth, Auth::None)
    }
}

/// The answer to one HTTP call that succeeded (2xx).
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// A client token and when it stops being used.
struct CachedToken {
    token: SecretString,
    renew_at: Instant,
}

/// The OP adapter. Cheap to share behind an `Arc<dyn Bank>`.
pub struct OpClient {
    http: reqwest::Client,
    bank_id: String,
    /// `{base}` without a trailing `/`.
    base: String,
    authorize: Url,
    issuer: String,
    client_id: String,
    client_secret: SecretString,
    api_key: SecretString,
    signer: RequestSigner,
    audience: String,
    paid: Vec<String>,
    retries: RetryPolicy,
    id_jwks: Jwks,
    payments_jwks: Option<Jwks>,
    client_token: Mutex<Option<CachedToken>>,
}

impl fmt::Debug for OpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpClient")
            .field("bank_id", &self.bank_id)
            .field("base", &self.base)
            .field("client_id", &self.client_id)
            .field("paid", &self.paid)
            .finish_non_exhaustive()
    }
}

fn unexpected(detail: impl Into<String>) -> BankError {
    BankError::Unexpected {
        status: None,
        detail: detail.into(),
    }
}

/// An absolute http(s) URL without user, query or fragment.
fn plain_url(raw: &str) -> Option<Url> {
    api_base_url(raw).and_then(|(_, base)| Url::parse(&base).ok())
}

/// An id OP gave that pisgate puts into a URL or a JWT: visible ASCII, at most 128 bytes.
fn plain_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Percent-encoding for a query value, spaces as `%20` (OP's own example URLs).
fn query_value(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl OpClient {
    pub fn new(config: OpConfig) -> Result<OpClient, OpConfigError> {
        let bank = config.bank_id.clone();
        let (origin, base) = api_base_url(&config.base_url)
            .ok_or_else(|| OpConfigError::Url(bank.clone(), "base_url"))?;
        let authorize = plain_url(&config.authorize_url)
            .ok_or_else(|| OpConfigError::Url(bank.clone(), "authorize_url"))?;
        let jwks_url = plain_url(&config.jwks_url)
            .ok_or_else(|| OpConfigError::Url(bank.clone(), "jwks_url"))?;
        let payments_jwks_url = match &config.payments_jwks_url {
            Some(u) => Some(
                plain_url(u)
                    .ok_or_else(|| OpConfigError::Url(bank.clone(), "payments_jwks_url"))?,
            ),
            None => None,
        };
        if !config
            .paid_statuses
            .iter()
            .any(|s| s == convert::DEFAULT_PAID)
            || config
                .paid_statuses
                .iter()
                .any(|s| !convert::PAYABLE.contains(&s.as_str()))
        {
            return Err(OpConfigError::PaidStatuses(bank));
        }
        for (value, name) in [
            (config.client_id.as_str(), "client_id"),
            (config.issuer.as_str(), "issuer"),
            (config.signing_key_id.as_str(), "signing_key_id"),
        ] {
            if value.trim().is_empty() {
                return Err(OpConfigError::Empty(bank, name));
            }
        }
        let signer = RequestSigner::from_pem(
            config.signing_key_pem.expose_secret().as_bytes(),
            &config.signing_key_id,
            config.request_object_alg,
        )
        .map_err(|e| OpConfigError::SigningKey(bank.clone(), e))?;
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .timeout(config.request_timeout)
                .user_agent(concat!("pisgate/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
        };
        let mut mtls = builder();
        let mut plain = builder();
        if let Some(pem) = &config.tls_identity_pem {
            let identity = reqwest::Identity::from_pem(pem.expose_secret().as_bytes())
                // reqwest's message names the PEM problem, never the key's bytes.
                .map_err(|e| OpConfigError::Identity(bank.clone(), e.to_string()))?;
            mtls = mtls.identity(identity);
        }
        if let Some(ca) = &config.tls_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
                .map_err(|e| OpConfigError::Ca(bank.clone(), e.to_string()))?;
            if certs.is_empty() {
                return Err(OpConfigError::Ca(bank, "no certificate".into()));
            }
            mtls = mtls.tls_certs_merge(certs.clone());
            plain = plain.tls_certs_merge(certs);
        }
        let http = mtls.build().map_err(OpConfigError::Http)?;
        // The JWKS are public documents on other hosts: fetched without the client
        // certificate, trusting the same roots.
        let jwks_http = plain.build().map_err(OpConfigError::Http)?;
        let audience = config
            .request_object_audience
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| origin.as_str().trim_end_matches('/').to_owned());
        Ok(OpClient {
            http,
            bank_id: config.bank_id,
            base,
            authorize,
            issuer: config.issuer,
            client_id: config.client_id,
            client_secret: config.client_secret,
            api_key: config.api_key,
            signer,
            audience,
            paid: config.paid_statuses,
            retries: config.read_retries,
            id_jwks: Jwks::new(jwks_url, jwks_http.clone()),
            payments_jwks: payments_jwks_url.map(|u| Jwks::new(u, jwks_http)),
            client_token: Mutex::new(None),
        })
    }

    /// The bank's id in pisgate.
    pub fn bank_id(&self) -> &str {
        &self.bank_id
    }

    /// The request object's `aud`.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    fn url(&self, path: &str) -> Result<Url, BankError> {
        Url::parse(&format!("{}{path}", self.base))
            .map_err(|_| unexpected("could not build OP's URL"))
    }

    fn payment_url(&self, id: &BankPaymentId, tail: &str) -> Result<Url, BankError> {
        self.url(&format!("{PAYMENTS}/{id}{tail}"))
    }

    fn report(&self, code: &str) -> StatusReport {
        convert::report(code, &self.paid)
    }

    /// OP's authorization URL for one payment: the request object signed with the QSealC
    /// key, and the same `response_type`, `client_id` and `scope` in the query (OIDC Core
    /// §6.1: they must match the request object's).
    pub fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        authorization_id: &str,
    ) -> Result<String, BankError> {
        let now = chrono::Utc::now().timestamp();
        let claims = RequestObject::new(
            &self.client_id,
            &self.audience,
            redirect_uri,
            state,
            authorization_id,
            now,
        );
        let request = self.signer.sign(&claims)?;
        Ok(format!(
            "{}?request={request}&response_type={}&client_id={}&scope={}",
            self.authorize,
            query_value(RequestObject::RESPONSE_TYPE),
            query_value(&self.client_id),
            query_value(RequestObject::SCOPE),
        ))
    }

    /// One harmless call for `pisgate check`: a fresh client-credentials token from OP's
    /// token endpoint (mutual TLS, client id and secret), sent once.
    pub async fn probe(&self) -> Result<(), BankError> {
        self.client_token(true).await.map(|_| ())
    }

    /// The client-credentials token: cached until 60 s before it expires; `renew` fetches a
    /// new one (after OP refused the cached one).
    async fn client_token(&self, renew: bool) -> Result<SecretString, BankError> {
        let mut cached = self.client_token.lock().await;
        if !renew
            && let Some(c) = cached.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        *cached = None;
        let call = Call::new(
            "client_token",
            "/oauth/token",
            Method::POST,
            self.url("/oauth/token")?,
        )
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "payments"),
            ("client_id", &self.client_id),
            ("client_secret", self.client_secret.expose_secret()),
        ]);
        // Sent once, outside `execute` (which asks for this token).
        let raw = self.attempt(&call, None, 1).await?;
        let answer: wire::TokenAnswer =
            serde_json::from_slice(&raw.body).map_err(|e| unreadable(raw.status, &e))?;
        let lives = Duration::from_secs(answer.expires_in.unwrap_or(300));
        let token = SecretString::from(answer.access_token);
        *cached = Some(CachedToken {
            token: token.clone(),
            renew_at: Instant::now() + lives.saturating_sub(TOKEN_MARGIN),
        });
        Ok(token)
    }

    async fn drop_client_token(&self) {
        *self.client_token.lock().await = None;
    }

    /// Sends `call`: reads retried when OP is unavailable; a client-token call refused
    /// with 401 sent once more with a new token.
    async fn execute(&self, call: &Call<'_>) -> Result<Answer, BankError> {
        let mut renew = false;
        loop {
            let token = match call.auth {
                Auth::Client => Some(self.client_token(renew).await?),
                Auth::Payment(t) => Some(t.clone()),
                Auth::None => None,
            };
            let result = with_read_retries(&self.retries, &self.bank_id, call.read, |attempt| {
                self.attempt(call, token.as_ref(), attempt)
            })
            .await;
            match result {
                Err(BankError::Unexpected {
                    status: Some(401), ..
                }) if matches!(call.auth, Auth::Client) => {
                    self.drop_client_token().await;
                    if renew {
                        return Err(BankError::Unavailable {
                            detail: "OP refused our client token (HTTP 401) twice".to_owned(),
                            retry_safe: true,
                        });
                    }
                    renew = true;
                }
                other => return other,
            }
        }
    }

    #[tracing::instrument(
        name = "bank_http",
        skip_all,
        fields(
            otel.name = call.method.as_str(),
            otel.kind = "client",
            otel.status_code = Empty,
            bank = %self.bank_id,
            operation = call.operation,
            attempt = attempt,
            http.request.method = call.method.as_str(),
            http.request.resend_count = attempt.checked_sub(1).filter(|n| *n > 0),
            server.address = call.url.host_str(),
            server.port = call.url.port_or_known_default(),
            url.path = call.route,
            http.response.status_code = Empty,
            error.type = Empty,
        )
    )]
    async fn attempt(
        &self,
        call: &Call<'_>,
        token: Option<&SecretString>,
        attempt: u32,
    ) -> Result<Answer, BankError> {
        let started = Instant::now();
        let result = self.send_once(call, token).await;
        record_attempt(&self.bank_id, call.operation, started, &result);
        result
    }

    async fn send_once(
        &self,
        call: &Call<'_>,
        token: Option<&SecretString>,
    ) -> Result<Answer, BankError> {
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .header(ACCEPT, JSON);
        if let Some((body, content_type)) = &call.body {
            request = request
                .header(CONTENT_TYPE, *content_type)
                .body(body.clone());
        }
        if call.business() {
            request = request.header("x-fapi-interaction-id", uuid::Uuid::new_v4().to_string());
            let mut key = HeaderValue::from_str(self.api_key.expose_secret())
                .map_err(|_| unexpected("api_key holds characters HTTP cannot carry"))?;
            key.set_sensitive(true);
            request = request.header("x-api-key", key);
            if let Some(ip) = call.psu.and_then(|p| p.ip) {
                request = request.header("x-fapi-customer-ip-address", ip.to_string());
            }
        }
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| unexpected("OP's token holds characters HTTP cannot carry"))?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        if let Some(key) = call.idempotency_key {
            let value = HeaderValue::from_str(key).map_err(|_| {
                unexpected("the idempotency key holds characters HTTP cannot carry")
            })?;
            request = request.header("x-idempotency-key", value);
        }
        for (name, value) in trace::trace_headers() {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        tracing::Span::current().record("http.response.status_code", status);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let signature = response
            .headers()
            .get("x-jws-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .bytes()
            .await
            .map_err(transport_after_answer)?
            .to_vec();
        if (200..300).contains(&status) {
            if call.business()
                && let Some(jwks) = &self.payments_jwks
                && let Err(why) = jose::verify_detached(jwks, signature.as_deref(), &body).await?
            {
                return Err(BankError::Unexpected {
                    status: Some(status),
                    detail: why.to_string(),
                });
            }
            return Ok(Answer { status, body });
        }
        if status == 401 && matches!(call.auth, Auth::Client) {
            // Handled by `execute`: a new client token, once.
            return Err(BankError::Unexpected {
                status: Some(401),
                detail: "OP refused our client token".to_owned(),
            });
        }
        Err(errors::classify(
            status,
            retry_after,
            &body,
            matches!(call.auth, Auth::Payment(_)),
        ))
    }

    async fn fetch<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<(T, Answer), BankError> {
        let answer = self.execute(call).await?;
        let value =
            serde_json::from_slice(&answer.body).map_err(|e| unreadable(answer.status, &e))?;
        Ok((value, answer))
    }

    async fn read_payment(
        &self,
        operation: &'static str,
        payment: &BankRef,
        psu: Option<&PsuContext>,
    ) -> Result<wire::PaymentAnswer, BankError> {
        let call = Call::new(
            operation,
            "/paymentsapi/v2/sepa-payments/{id}",
            Method::GET,
            self.payment_url(&payment.id, "")?,
        )
        .auth(Auth::Client)
        .psu(psu)
        .read();
        let (answer, _): (wire::PaymentAnswer, _) = self.fetch(&call).await?;
        if answer.payment_id != payment.id.as_str() {
            return Err(unexpected("OP answered about another payment"));
        }
        Ok(answer)
    }

    /// `POST /oauth/token` with a grant (code or refresh), sent once.
    async fn token_grant(
        &self,
        operation: &'static str,
        pairs: &[(&str, &str)],
    ) -> Result<wire::TokenAnswer, BankError> {
        let mut form: Vec<(&str, &str)> = pairs.to_vec();
        form.push(("client_id", &self.client_id));
        form.push(("client_secret", self.client_secret.expose_secret()));
        let call = Call::new(
            operation,
            "/oauth/token",
            Method::POST,
            self.url("/oauth/token")?,
        )
        .form(&form);
        let (answer, _) = self.fetch(&call).await?;
        Ok(answer)
    }
}

fn token_set(answer: wire::TokenAnswer, claims: Option<&jose::IdClaims>) -> TokenSet {
    TokenSet {
        access_token: SecretString::from(answer.access_token),
        refresh_token: answer.refresh_token.map(SecretString::from),
        // OP's code-exchange token lives 600 s (contract §2) when the answer is silent.
        expires_in: Duration::from_secs(answer.expires_in.unwrap_or(600)),
        token_type: answer.token_type.unwrap_or_else(|| "Bearer".to_owned()),
        shopper_id: claims.and_then(|c| c.sub.clone()),
        issued_at: claims
            .and_then(|c| c.iat)
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
    }
}

#[async_trait]
impl Bank for OpClient {
    fn traits(&self) -> BankTraits {
        BankTraits {
            protocol: "op",
            return_carries_code: true,
            needs_debtor_account: false,
            shopper_token_required: false,
            submit_after_authorization: true,
            token_per_payment: true,
            cancel_needs_shopper_token: false,
            deleted_status: "Revoked",
            return_in_fragment: true,
            acts_without_hop: false,
        }
    }

    fn check(&self, payment: &PaymentInitiation) -> Result<(), BankError> {
        convert::payment_request(payment).map(|_| ())
    }

    #[tracing::instrument(
        skip_all,
        fields(bank = %self.bank_id, operation = "initiate", country = %payment.country, external_id = %payment.external_id, bank_payment_id = Empty)
    )]
    async fn initiate(
        &self,
        payment: &PaymentInitiation,
        psu: Option<&PsuContext>,
    ) -> Result<Initiated, BankError> {
        let body = convert::payment_request(payment)?;
        let call = Call::new("initiate", PAYMENTS, Method::POST, self.url(PAYMENTS)?)
            .json(&body)?
            .auth(Auth::Client)
            .idempotency(&payment.external_id)
            .psu(psu);
        let (answer, raw): (wire::PaymentAnswer, _) = self.fetch(&call).await?;
        if raw.status != 201 && raw.status != 200 {
            return Err(BankError::Unexpected {
                status: Some(raw.status),
                detail: "a payment creation answers 201".to_owned(),
            });
        }
        let bank_payment_id = BankPaymentId::parse(answer.payment_id.clone())
            .ok_or_else(|| unexpected("OP's paymentId is not URL-safe"))?;
        tracing::Span::current().record("bank_payment_id", bank_payment_id.as_str());
        let authorization_id = answer
            .authorization_id
            .clone()
            .filter(|a| plain_id(a))
            .ok_or_else(|| unexpected("OP's answer carries no usable authorizationId"))?;
        let echo_mismatch = convert::echo_mismatch(&answer, &body, payment.amount);
        if !echo_mismatch.is_empty() {
            // OP made the payment with other terms than pisgate sent (or an amount that
            // cannot be read exactly): it must never be submitted. The caller records it and
            // withholds the submission; say so loudly.
            tracing::error!(
                bank = %self.bank_id,
                bank_payment_id = %bank_payment_id,
                mismatch = ?echo_mismatch,
                "OP's answer to a payment creation carries other terms than pisgate sent"
            );
        }
        let url = self.authorization_url(
            &payment.authentication.redirect_uri,
            &payment.authentication.state,
            &authorization_id,
        )?;
        Ok(Initiated {
            bank_payment_id,
            next: ScaStep::Redirect { url },
            status: self.report(&answer.status),
            links: BankLinks(BTreeMap::from([(
                AUTHORIZATION_ID.to_owned(),
                authorization_id,
            )])),
            echo_mismatch,
        })
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "status", bank_payment_id = %payment.id))]
    async fn status(
        &self,
        payment: &BankRef,
        psu: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError> {
        let answer = self.read_payment("status", payment, psu).await?;
        Ok(self.report(&answer.status))
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "details", bank_payment_id = %payment.id))]
    async fn details(
        &self,
        payment: &BankRef,
        _access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<PaymentDetails, BankError> {
        let answer = self.read_payment("details", payment, psu).await?;
        let report = self.report(&answer.status);
        Ok(convert::payment_details(&payment.id, &answer, report))
    }

    async fn funds(
        &self,
        _id: &BankPaymentId,
        _access_token: &SecretString,
        _psu: Option<&PsuContext>,
    ) -> Result<FundsAvailability, BankError> {
        Err(unexpected(
            "the op protocol has no confirmation of funds for a payment",
        ))
    }

    /// OP's revoke, one `DELETE` per payment with the client token, each sent once. OP
    /// revokes only `Unauthorized`/`Authorizing` payments; its `REVOKE_NOT_ALLOWED` (409)
    /// is that payment's refusal in the outcome.
    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "cancel", count = payments.len()))]
    async fn cancel(
        &self,
        payments: &[BankRef],
        _access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<CancelOutcome, BankError> {
        let mut outcome = CancelOutcome::default();
        for payment in payments {
            let call = Call::new(
                "cancel",
                "/paymentsapi/v2/sepa-payments/{id}",
                Method::DELETE,
                self.payment_url(&payment.id, "")?,
            )
            .auth(Auth::Client)
            .psu(psu);
            match self.fetch::<wire::StatusAnswer>(&call).await {
                Ok((answer, _)) if answer.status == "Revoked" => {
                    outcome.deleted.push(payment.id.clone())
                }
                Ok((answer, _)) => {
                    return Err(unexpected(format!(
                        "OP answered a revoke with the status {:?}",
                        convert::report(&answer.status, &self.paid).bank_status
                    )));
                }
                Err(e) => outcome.refused(&payment.id, e, "OP does not know this payment")?,
            }
        }
        Ok(outcome)
    }

    /// Without the payment the ID token's nonce (derived from the payment's state) and
    /// `authorizationId` cannot be checked: refused, nothing is sent.
    async fn exchange_code(
        &self,
        _code: &SecretString,
        _redirect_uri: &str,
    ) -> Result<TokenSet, BankError> {
        Err(unexpected(
            "the op protocol exchanges a code only with its payment and state (exchange_code_for): the ID token's nonce and authorizationId must be checked",
        ))
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "exchange_code", bank_payment_id = %payment.id))]
    async fn exchange_code_for(
        &self,
        payment: &BankRef,
        code: &SecretString,
        redirect_uri: &str,
        state: &SecretString,
        front_id_token: Option<&str>,
    ) -> Result<TokenSet, BankError> {
        let authorization_id = payment
            .links
            .get(AUTHORIZATION_ID)
            .ok_or_else(|| unexpected("the payment has no authorizationId from OP"))?;
        let nonce = jose::nonce_for(state.expose_secret());
        // The hybrid flow's ID token is checked before the single-use code is spent.
        let front = front_id_token
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| jose::id_token_invalid("front-channel", "missing"))?;
        jose::validate_id_token(
            &self.id_jwks,
            front,
            &IdTokenExpectations {
                which: "front-channel",
                issuer: &self.issuer,
                client_id: &self.client_id,
                nonce: &nonce,
                authorization_id,
                code: Some(code.expose_secret()),
                state: Some(state.expose_secret()),
            },
        )
        .await?;
        let answer = self
            .token_grant(
                "exchange_code",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code.expose_secret()),
                    ("redirect_uri", redirect_uri),
                ],
            )
            .await?;
        let id_token = answer
            .id_token
            .clone()
            .ok_or_else(|| jose::id_token_invalid("token endpoint", "missing"))?;
        let claims = jose::validate_id_token(
            &self.id_jwks,
            &id_token,
            &IdTokenExpectations {
                which: "token endpoint",
                issuer: &self.issuer,
                client_id: &self.client_id,
                nonce: &nonce,
                authorization_id,
                code: None,
                state: None,
            },
        )
        .await?;
        Ok(token_set(answer, Some(&claims)))
    }

    /// OP's refresh tokens rotate: the answer's is the new one, the old one dies. A refused
    /// refresh token (`invalid_grant`) is dead.
    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "refresh"))]
    async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, BankError> {
        let answer = self
            .token_grant(
                "refresh",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.expose_secret()),
                ],
            )
            .await
            .map_err(|e| match e {
                BankError::Validation { failures }
                    if failures.iter().any(|f| f.code == "invalid_grant") =>
                {
                    BankError::TokenRejected
                }
                other => other,
            })?;
        Ok(token_set(answer, None))
    }

    /// OP documents no token revocation endpoint for PIS (docs/banks/op.md; the simulator's
    /// `/oauth/revoke` is its own addition, not OP's contract): nothing is sent, and the
    /// answer says so ([`Revocation::NotOffered`]), never that the token was revoked. The
    /// access token lapses (600 s); the refresh token lives at OP until OP ends it, and
    /// pisgate marks it dead and never uses it.
    async fn revoke(&self, _refresh_token: &SecretString) -> Result<Revocation, BankError> {
        Ok(Revocation::NotOffered)
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "submit", bank_payment_id = %payment.id))]
    async fn submit(
        &self,
        payment: &BankRef,
        access_token: &SecretString,
        idempotency_key: &str,
        psu: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError> {
        let call = Call::new(
            "submit",
            "/paymentsapi/v2/sepa-payments/{id}/submissions",
            Method::POST,
            self.payment_url(&payment.id, "/submissions")?,
        )
        .json(&wire::SubmitRequest {})?
        .auth(Auth::Payment(access_token))
        .idempotency(idempotency_key)
        .psu(psu);
        let (answer, _): (wire::StatusAnswer, _) = self.fetch(&call).await?;
        if answer.payment_id != payment.id.as_str() {
            return Err(unexpected("OP answered a submission about another payment"));
        }
        Ok(self.report(&answer.status))
    }

    fn needs_submission(&self, report: &StatusReport) -> bool {
        convert::needs_submission(&report.bank_status)
    }
}

#[cfg(test)]
mod tests;
