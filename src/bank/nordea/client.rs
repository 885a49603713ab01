//! [`NordeaClient`]: the [`Bank`] port spoken to Nordea's single-SCA PIS API over HTTP.
//!
//! One reqwest client with connect and request timeouts. Every request is signed
//! (`signing.rs`), carries the app credentials (`X-IBM-Client-Id`/`-Secret`), the
//! originating host and date, a W3C `traceparent`, and — when the shopper is in session —
//! their IP and user agent. Endpoints and authentication follow `nordea-pis.md`:
//!
//! | operation | request | auth |
//! |---|---|---|
//! | initiate | POST /v2/payments/authorization/{sepa (FI), domestic (DK, SE, NO)}-credit-transfer | signature |
//! | status | GET /v2/single-sca-payments/{id}/status | signature |
//! | details | GET /v2/single-sca-payments/{id} | signature + bearer |
//! | funds | GET /v3/single-sca-payments/{id}?request_availability_of_funds=true | signature + bearer |
//! | cancel | DELETE /v2/single-sca-payments, JSON body | signature + bearer |
//! | exchange_code, refresh | POST {token_path}, sorted form body | signature |
//! | revoke | POST {token_path}/revoke, JSON body | signature |
//!
//! Decisions:
//! - The signed and sent `X-Nordea-Originating-Host` is the base URL's host in lower case,
//!   with `:port` only when the URL names a non-default port (as the HTTP `Host` header
//!   does): `api.nordeaopenbanking.com` in production, `127.0.0.1:8089` for a local sandbox.
//! - `(request-target)` is the full path of the URL actually requested, base path included
//!   (`/personal/v2/…`), with its query.
//! - Only reads (status, details, funds) are retried, and only on `Unavailable`, with
//!   jittered exponential backoff and a fresh date and signature per attempt. Initiation,
//!   code exchange, refresh, revoke and cancel are sent exactly once: repeating them could
//!   act twice at the bank (or burn a single-use code or refresh token). `RateLimited` is
//!   never retried here: the caller (the poller) honours `Retry-After`.
//! - `Unavailable` from a call that is not retried means "outcome unknown", unless it is
//!   `retry_safe` (a 503 with the bank's own error body, or no connection was ever made:
//!   a bare 503 may come from a gateway that passed the request on): then the bank provably did not
//!   process it ([`BankError::provably_not_processed`]).
//! - Metrics per HTTP attempt: `pisgate_bank_requests_total` and
//!   `pisgate_bank_request_duration_seconds`, labelled `operation` and `outcome`
//!   (`ok` or [`BankError::kind`]).
//!
//! Never logged or put into an error: the client secret, tokens, codes, keys, request or
//! answer bodies (account numbers), or serde messages that could quote them.

use super::signing::{self, DeleteSigning, RequestSigner, RequestToSign, SigningKey};
use super::{convert, errors, wire};
use crate::bank::{
    Bank, BankError, BankPaymentId, BankRef, BankTraits, CancelOutcome, FundsAvailability,
    Initiated, PaymentDetails, PaymentInitiation, PsuContext, Revocation, StatusReport, TokenSet,
    trace,
};
use crate::domain::Country;
use async_trait::async_trait;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};
use tracing::field::Empty;

const SEPA_PATH: &str = "/v2/payments/authorization/sepa-credit-transfer";
const DOMESTIC_PATH: &str = "/v2/payments/authorization/domestic-credit-transfer";
const PAYMENTS_PATH: &str = "/v2/single-sca-payments";
const PAYMENTS_V3_PATH: &str = "/v3/single-sca-payments";
const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";
/// The longest pause between two attempts of a read, whatever the policy says.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How reads are retried when the bank is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (1 = no retry).
    pub max_attempts: u32,
    /// The pause after the first failed attempt; it doubles each time (capped at 30 s), and
    /// each pause is drawn uniformly between half of it and all of it.
    pub base_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_backoff: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        use rand::Rng as _;
        let doubling = 1u32 << attempt.saturating_sub(1).min(16);
        let ceiling = self.base_backoff.saturating_mul(doubling).min(MAX_BACKOFF);
        let half = ceiling / 2;
        let jitter_nanos = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::thread_rng().gen_range(0..=jitter_nanos))
    }
}

/// Everything the Nordea client needs; the application's settings build it.
pub struct NordeaConfig {
    /// Including the API's base path: `https://api.nordeaopenbanking.com/personal`, or
    /// `http://127.0.0.1:PORT/personal` for the sandbox simulator.
    pub base_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// The app's private key (its `keyId` is the client id).
    pub signing_key: SigningKey,
    pub connect_timeout: Duration,
    /// The whole request, answer body included.
    pub request_timeout: Duration,
    /// The token endpoint under the base URL. Configurable because the single-SCA token
    /// path is not confirmed by a second source; revoke is `{token_path}/revoke`.
    pub token_path: String,
    pub read_retries: RetryPolicy,
    /// How the bulk DELETE (a DELETE with a body) is signed.
    pub delete_signing: DeleteSigning,
    /// The bank's id in pisgate's settings (`nordea`, or a `[banks.<id>]`): the `bank`
    /// label of the bank-call metrics and a field of every bank-call log line.
    pub bank_id: String,
}

impl NordeaConfig {
    pub const DEFAULT_TOKEN_PATH: &str = "/v5/authorize/token";
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// A configuration with the defaults for everything but the credentials.
    pub fn new(
        base_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
        signing_key: SigningKey,
    ) -> NordeaConfig {
        NordeaConfig {
            base_url: base_url.into(),
            client_id: client_id.into(),
            client_secret,
            signing_key,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            token_path: Self::DEFAULT_TOKEN_PATH.to_owned(),
            read_retries: RetryPolicy::default(),
            delete_signing: DeleteSigning::default(),
            bank_id: "nordea".to_owned(),
        }
    }
}

impl fmt::Debug for NordeaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NordeaConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("signing_key", &self.signing_key)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("token_path", &self.token_path)
            .field("read_retries", &self.read_retries)
            .field("delete_signing", &self.delete_signing)
            .finish_non_exhaustive()
    }
}

/// Why a [`NordeaClient`] could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum NordeaConfigError {
    #[error(
        "nordea base_url must be an absolute http(s) URL with a host and no query, user or fragment"
    )]
    BaseUrl,
    #[error("nordea token_path must start with '/' and hold no query or fragment")]
    TokenPath,
    #[error("nordea client_id and client_secret must be non-empty visible ASCII")]
    Credentials,
    #[error("could not build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// The Nordea adapter. Cheap to share behind an `Arc<dyn Bank>`.
pub struct NordeaClient {
    http: reqwest::Client,
    /// Scheme, host, port and base path, without a trailing slash.
    base: String,
    /// `base` parsed once: a request's URL is this with the call's path set (see
    /// [`NordeaClient::url_for`]), so the host is not parsed (IDNA) again per request.
    base_url: Url,
    /// The `X-Nordea-Originating-Host` value.
    host: String,
    client_id: HeaderValue,
    client_secret: HeaderValue,
    signer: RequestSigner,
    token_path: String,
    retries: RetryPolicy,
    delete_signing: DeleteSigning,
    /// Shared, so that the metrics' `bank` label costs no allocation per request.
    bank_id: std::sync::Arc<str>,
    /// `[banks.<id>] needs_debtor_account` of a Nordea-protocol bank (Nordea itself never).
    needs_debtor_account: bool,
}

impl fmt::Debug for NordeaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NordeaClient")
            .field("base", &self.base)
            .field("host", &self.host)
            .field("token_path", &self.token_path)
            .field("retries", &self.retries)
            .field("delete_signing", &self.delete_signing)
            .finish_non_exhaustive()
    }
}

/// The `X-Nordea-Originating-Host` value for a base URL (see the module docs).
pub fn originating_host(url: &Url) -> Option<String> {
    let host = url.host_str()?.to_ascii_lowercase();
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

fn credential_header(value: &str, sensitive: bool) -> Result<HeaderValue, NordeaConfigError> {
    if value.is_empty() {
        return Err(NordeaConfigError::Credentials);
    }
    let mut header = HeaderValue::from_str(value).map_err(|_| NordeaConfigError::Credentials)?;
    header.set_sensitive(sensitive);
    Ok(header)
}

impl NordeaClient {
    /// A Nordea-protocol bank that needs the shopper's account before initiation
    /// (`[banks.<id>] needs_debtor_account`); pisgate asks the shopper for the IBAN when the
    /// merchant did not give it.
    pub fn with_needs_debtor_account(mut self, needs: bool) -> NordeaClient {
        self.needs_debtor_account = needs;
        self
    }

    pub fn new(config: NordeaConfig) -> Result<NordeaClient, NordeaConfigError> {
        let url = Url::parse(config.base_url.trim()).map_err(|_| NordeaConfigError::BaseUrl)?;
        let usable = matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none();
        let host = originating_host(&url)
            .filter(|_| usable)
            .ok_or(NordeaConfigError::BaseUrl)?;
        let base = url.as_str().trim_end_matches('/').to_owned();
        let token_path = config.token_path.trim().trim_end_matches('/').to_owned();
        if !token_path.starts_with('/') || token_path.contains(['?', '#']) {
            return Err(NordeaConfigError::TokenPath);
        }
        let http = crate::bank::without_unset_proxies(
            reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .timeout(config.request_timeout)
                .user_agent(concat!("pisgate/", env!("CARGO_PKG_VERSION"))),
        )
        .build()
        .map_err(NordeaConfigError::Http)?;
        let base_url = Url::parse(&base).map_err(|_| NordeaConfigError::BaseUrl)?;
        Ok(NordeaClient {
            http,
            base,
            base_url,
            host,
            client_id: credential_header(&config.client_id, false)?,
            client_secret: credential_header(config.client_secret.expose_secret(), true)?,
            signer: RequestSigner::new(config.client_id, config.signing_key),
            token_path,
            retries: config.read_retries,
            delete_signing: config.delete_signing,
            bank_id: config.bank_id.into(),
            needs_debtor_account: false,
        })
    }

    /// Sends `call`, retrying it if it is a read and the bank is unavailable.
    async fn execute(&self, call: &Call<'_>) -> Result<(u16, Vec<u8>), BankError> {
        crate::bank::retry::with_read_retries(&self.retries, &self.bank_id, call.read, |attempt| {
            self.attempt(call, attempt)
        })
        .await
    }

    #[tracing::instrument(
        name = "bank_http",
        skip_all,
        fields(
            otel.name = call.method.as_str(),
            otel.kind = "client",
            otel.status_code = Empty,
            operation = call.operation,
            attempt = attempt,
            http.request.method = call.method.as_str(),
            http.request.resend_count = attempt.checked_sub(1).filter(|n| *n > 0),
            server.address = Empty,
            server.port = Empty,
            url.full = Empty,
            http.response.status_code = Empty,
            error.type = Empty,
        )
    )]
    async fn attempt(&self, call: &Call<'_>, attempt: u32) -> Result<(u16, Vec<u8>), BankError> {
        let started = Instant::now();
        let result = self.send_once(call).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        if result.is_err() {
            let span = tracing::Span::current();
            span.record("error.type", outcome);
            span.record("otel.status_code", "ERROR");
        }
        metrics::counter!("pisgate_bank_requests_total", "bank" => self.bank_id.clone(), "operation" => call.operation, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("pisgate_bank_request_duration_seconds", "bank" => self.bank_id.clone(), "operation" => call.operation, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => tracing::debug!(outcome, "bank call done"),
            Err(error) => match error.configuration_code() {
                // One clear line for the operator: nothing about the payment or the
                // shopper is wrong, our own setup is (credentials, key, clock).
                Some(code) => {
                    metrics::counter!("pisgate_bank_config_errors_total", "code" => code.to_owned())
                        .increment(1);
                    tracing::error!(
                        outcome,
                        code,
                        operation = call.operation,
                        %error,
                        "the bank refused our configuration; an operator must fix it"
                    );
                }
                None => tracing::debug!(outcome, %error, "bank call failed"),
            },
        }
        result
    }

    /// The URL of `path` (below the base URL, with its query if any): the URL that
    /// `Url::parse(base + path)` gives. A path of plain characters (the only kind pisgate's
    /// calls make: fixed paths, the bank's ids, `?key=value`) is set on the base URL parsed
    /// once; anything else (percent signs, dots, a `#`, …) is parsed whole as before, so
    /// that no corner of URL parsing differs.
    fn url_for(&self, path: &str) -> Result<Url, BankError> {
        let plain = path.starts_with('/')
            && path.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'=' | b'&' | b'?')
            })
            && path.bytes().filter(|b| *b == b'?').count() <= 1;
        if !plain {
            return Url::parse(&format!("{}{}", self.base, path)).map_err(|_| {
                BankError::Unexpected {
                    status: None,
                    detail: "could not build the request URL".to_owned(),
                }
            });
        }
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let base_path = self.base_url.path().trim_end_matches('/');
        let mut full = String::with_capacity(base_path.len() + path.len());
        full.push_str(base_path);
        full.push_str(path);
        let mut url = self.base_url.clone();
        url.set_path(&full);
        url.set_query(query);
        Ok(url)
    }

    async fn send_once(&self, call: &Call<'_>) -> Result<(u16, Vec<u8>), BankError> {
        let url = self.url_for(&call.path)?;
        let span = tracing::Span::current();
        span.record("server.address", url.host_str());
        span.record("server.port", url.port_or_known_default());
        span.record("url.full", url.as_str());
        // Sign exactly the path and query that will be sent.
        let path_and_query = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let date = signing::originating_date(SystemTime::now());
        let signed = self
            .signer
            .sign(&RequestToSign {
                method: call.method.as_str(),
                path_and_query: &path_and_query,
                host: &self.host,
                date: &date,
                body: call
                    .body
                    .as_ref()
                    .map(|(content_type, bytes)| (*content_type, &bytes[..])),
                body_signed: call.method != Method::DELETE
                    || self.delete_signing == DeleteSigning::WithDigest,
            })
            .map_err(|_| BankError::Unexpected {
                status: None,
                detail: "could not sign the request".to_owned(),
            })?;

        let mut request = self
            .http
            .request(call.method.clone(), url)
            .header(ACCEPT, JSON)
            .header("x-ibm-client-id", self.client_id.clone())
            .header("x-ibm-client-secret", self.client_secret.clone())
            .header("x-nordea-originating-host", &self.host)
            .header("x-nordea-originating-date", &date)
            .header("signature", signed.signature);
        for (name, value) in trace::trace_headers() {
            request = request.header(name, value);
        }
        if let Some((content_type, bytes)) = &call.body {
            request = request
                .header(CONTENT_TYPE, *content_type)
                .body(bytes.clone());
        }
        if let Some(digest) = signed.digest {
            request = request.header("digest", digest);
        }
        if let Some(token) = call.bearer {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| BankError::TokenRejected)?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        if let Some(psu) = call.psu {
            if let Some(ip) = psu.ip {
                request = request.header("x-nordea-originating-user-ip", ip.to_string());
            }
            if let Some(agent) = psu
                .user_agent
                .as_deref()
                .and_then(|a| HeaderValue::from_str(a).ok())
            {
                request = request.header("x-nordea-originating-user-agent", agent);
            }
        }

        let response = request.send().await.map_err(errors::transport)?;
        let status = response.status().as_u16();
        if let Some(sink) = call.date_sink {
            let date = response
                .headers()
                .get(reqwest::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok());
            if let Ok(mut slot) = sink.lock() {
                *slot = date;
            }
        }
        tracing::Span::current().record("http.response.status_code", status);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(errors::parse_retry_after);
        let body = response
            .bytes()
            .await
            .map_err(errors::transport_after_answer)?
            .to_vec();
        if (200..300).contains(&status) {
            Ok((status, body))
        } else {
            Err(errors::classify(
                status,
                retry_after,
                &body,
                call.token_call,
            ))
        }
    }

    /// One harmless signed call for `pisgate check`: the status of a payment id nobody has
    /// (answered 404 when credentials, signature and date are right), sent once, with the
    /// bank's `Date` header.
    pub async fn probe(&self) -> (Result<(), BankError>, Option<SystemTime>) {
        let sink = std::sync::Mutex::new(None);
        let id = uuid::Uuid::new_v4();
        let mut call = Call::new("probe", Method::GET, format!("{PAYMENTS_PATH}/{id}/status"));
        call.date_sink = Some(&sink);
        let result = match self.execute(&call).await {
            Ok(_) | Err(BankError::NotFound) => Ok(()),
            Err(e) => Err(e),
        };
        let date = sink.lock().ok().and_then(|d| *d);
        (result, date)
    }

    async fn fetch<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<T, BankError> {
        let (status, body) = self.execute(call).await?;
        serde_json::from_slice(&body).map_err(|e| errors::unreadable(status, &e))
    }

    async fn token_call(
        &self,
        operation: &'static str,
        params: &[(&str, &str)],
        token_call: bool,
    ) -> Result<TokenSet, BankError> {
        let body = signing::form_body(params).into_bytes();
        let call = Call::new(operation, Method::POST, self.token_path.clone())
            .body(FORM, body)
            .token_call(token_call);
        let (status, bytes) = self.execute(&call).await?;
        let answer =
            wire::TokenAnswer::from_json(&bytes).map_err(|e| errors::unreadable(status, &e))?;
        convert::token_set(answer)
    }
}

fn json_body<T: Serialize>(value: &T) -> Result<Vec<u8>, BankError> {
    serde_json::to_vec(value).map_err(|_| BankError::Unexpected {
        status: None,
        detail: "could not encode the request body".to_owned(),
    })
}

/// One logical call to the bank.
struct Call<'a> {
    operation: &'static str,
    method: Method,
    /// Below the base URL, starting with `/`, with its query if any.
    path: String,
    /// Shared bytes: handing them to reqwest (once per attempt) copies nothing.
    body: Option<(&'static str, bytes::Bytes)>,
    bearer: Option<&'a SecretString>,
    psu: Option<&'a PsuContext>,
    /// The call's credential is a shopper token: a 401 means that token is dead.
    token_call: bool,
    /// A read: safe to repeat, so retried when the bank is unavailable.
    read: bool,
    /// Where to put the bank's `Date` header, when the caller wants it (`pisgate check`).
    date_sink: Option<&'a std::sync::Mutex<Option<SystemTime>>>,
}

impl<'a> Call<'a> {
    fn new(operation: &'static str, method: Method, path: String) -> Call<'a> {
        Call {
            operation,
            method,
            path,
            body: None,
            bearer: None,
            psu: None,
            token_call: false,
            read: false,
            date_sink: None,
        }
    }

    fn body(mut self, content_type: &'static str, bytes: Vec<u8>) -> Self {
        self.body = Some((content_type, bytes.into()));
        self
    }

    fn bearer(mut self, token: &'a SecretString) -> Self {
        self.bearer = Some(token);
        self.token_call = true;
        self
    }

    fn psu(mut self, psu: Option<&'a PsuContext>) -> Self {
        self.psu = psu;
        self
    }

    fn token_call(mut self, token_call: bool) -> Self {
        self.token_call = token_call;
        self
    }

    fn read(mut self) -> Self {
        self.read = true;
        self
    }
}

#[async_trait]
impl Bank for NordeaClient {
    fn traits(&self) -> BankTraits {
        BankTraits {
            protocol: "nordea",
            return_carries_code: true,
            needs_debtor_account: self.needs_debtor_account,
            shopper_token_required: false,
            submit_after_authorization: false,
            token_per_payment: false,
            cancel_needs_shopper_token: true,
            deleted_status: "Cancelled",
            return_in_fragment: false,
            acts_without_hop: false,
        }
    }

    #[tracing::instrument(
        skip_all,
        fields(operation = "initiate", country = %payment.country, external_id = %payment.external_id, bank_payment_id = Empty)
    )]
    async fn initiate(
        &self,
        payment: &PaymentInitiation,
        psu: Option<&PsuContext>,
    ) -> Result<Initiated, BankError> {
        let path = match payment.country {
            Country::Fi => SEPA_PATH,
            Country::Dk | Country::No | Country::Se => DOMESTIC_PATH,
        };
        let body = json_body(&convert::initiation_request(payment))?;
        let call = Call::new("initiate", Method::POST, path.to_owned())
            .body(JSON, body)
            .psu(psu);
        let answer: wire::Envelope<wire::InitiationAnswer> = self.fetch(&call).await?;
        let initiated = convert::initiated(&answer.response)?;
        tracing::Span::current().record("bank_payment_id", initiated.bank_payment_id.as_str());
        Ok(initiated)
    }

    #[tracing::instrument(skip_all, fields(operation = "status", bank_payment_id = %payment.id))]
    async fn status(
        &self,
        payment: &BankRef,
        psu: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError> {
        let id = &payment.id;
        let call = Call::new(
            "status",
            Method::GET,
            format!("{PAYMENTS_PATH}/{id}/status"),
        )
        .psu(psu)
        .read();
        let answer: wire::Envelope<wire::StatusAnswer> = self.fetch(&call).await?;
        Ok(convert::status_report(&answer.response.status))
    }

    #[tracing::instrument(skip_all, fields(operation = "details", bank_payment_id = %payment.id))]
    async fn details(
        &self,
        payment: &BankRef,
        access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<PaymentDetails, BankError> {
        let id = &payment.id;
        let access_token = access_token.ok_or(BankError::TokenRejected)?;
        let call = Call::new("details", Method::GET, format!("{PAYMENTS_PATH}/{id}"))
            .bearer(access_token)
            .psu(psu)
            .read();
        let answer: wire::Envelope<wire::PaymentDetailsAnswer> = self.fetch(&call).await?;
        convert::payment_details(&answer.response)
    }

    #[tracing::instrument(skip_all, fields(operation = "funds", bank_payment_id = %id))]
    async fn funds(
        &self,
        id: &BankPaymentId,
        access_token: &SecretString,
        psu: Option<&PsuContext>,
    ) -> Result<FundsAvailability, BankError> {
        let path = format!("{PAYMENTS_V3_PATH}/{id}?request_availability_of_funds=true");
        let call = Call::new("funds", Method::GET, path)
            .bearer(access_token)
            .psu(psu)
            .read();
        let answer: wire::Envelope<wire::PaymentDetailsAnswer> = self.fetch(&call).await?;
        convert::funds(&answer.response)
    }

    /// An empty list asks nothing of the bank and answers an empty outcome.
    #[tracing::instrument(skip_all, fields(operation = "cancel", count = payments.len()))]
    async fn cancel(
        &self,
        payments: &[BankRef],
        access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<CancelOutcome, BankError> {
        if payments.is_empty() {
            return Ok(CancelOutcome::default());
        }
        let access_token = access_token.ok_or(BankError::TokenRejected)?;
        let ids: Vec<BankPaymentId> = payments.iter().map(|p| p.id.clone()).collect();
        let body = json_body(&convert::bulk_delete_request(&ids))?;
        let call = Call::new("cancel", Method::DELETE, PAYMENTS_PATH.to_owned())
            .body(JSON, body)
            .bearer(access_token)
            .psu(psu);
        let answer: wire::BulkDeleteAnswer = self.fetch(&call).await?;
        convert::cancel_outcome(&answer)
    }

    #[tracing::instrument(skip_all, fields(operation = "exchange_code"))]
    async fn exchange_code(
        &self,
        code: &SecretString,
        redirect_uri: &str,
    ) -> Result<TokenSet, BankError> {
        let params = [
            ("code", code.expose_secret()),
            ("grant_type", "authorization_code"),
            ("redirect_uri", redirect_uri),
        ];
        self.token_call("exchange_code", &params, false).await
    }

    #[tracing::instrument(skip_all, fields(operation = "refresh"))]
    async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, BankError> {
        let params = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        self.token_call("refresh", &params, true).await
    }

    #[tracing::instrument(skip_all, fields(operation = "revoke"))]
    async fn revoke(&self, refresh_token: &SecretString) -> Result<Revocation, BankError> {
        let body = json_body(&wire::RevokeRequest {
            token: refresh_token.expose_secret().to_owned(),
        })?;
        let call = Call::new(
            "revoke",
            Method::POST,
            format!("{}/revoke", self.token_path),
        )
        .body(JSON, body)
        .token_call(true);
        self.execute(&call).await.map(|_| Revocation::Revoked)
    }
}

#[cfg(test)]
mod tests;
