//! [`SebClient`]: the [`Bank`] port spoken to SEB over HTTPS with mutual TLS (the QWAC),
//! per docs/banks/seb.md and the SEB contract §3.
//!
//! | operation | request | retried |
//! |---|---|---|
//! | start_identification | POST {base}/auth/v4/authorizations | never |
//! | identification_progress | GET {base}/auth/v4/authorizations/{auth_req_id} | yes |
//! | identification_tokens | POST {base}/auth/v4/tokens (auth_req_id) | never (single use) |
//! | refresh | POST {base}/auth/v4/tokens (grant_type=refresh_token) | never (single use) |
//! | initiate_with_token | POST {pis}/payments/{product of the currency} | never |
//! | status_with_token | GET the payment's `status` link | yes |
//! | details | GET the payment's `self` link | yes |
//! | cancel | DELETE the payment's `self` link | never |
//! | start_signing | POST {base}/tpp/signing/v1/signing-orders | never |
//! | signing_progress | GET {base}/tpp/signing/v1/signing-orders/{authorisationId} | yes |
//!
//! `{pis}` is `{base}/tpp/pis/private/v1/identified2` (or `…/corporate/…`, with
//! `PSU-Corporate-ID`). Every call carries a fresh `X-Request-ID` (UUID) and
//! `PSU-IP-Address` (the shopper's, else `psu_ip_fallback`); PIS and signing calls carry
//! `Authorization: Bearer <the shopper's token>`. SEB needs the shopper's token for every
//! PIS call: [`Bank::initiate`] and [`Bank::status`] (no token) answer
//! [`BankError::TokenRejected`], as do `details`/`cancel` without one.
//!
//! Decisions:
//! - **Links**: SEB's hrefs are relative to the PIS base; they are kept with the payment and
//!   followed, resolved against the PIS base (or, when absolute, only on the base URL's
//!   origin and under the PIS path): an edited link must not send the shopper's token
//!   elsewhere.
//! - **Retries**: only reads, on `Unavailable`, with the Nordea adapter's jittered backoff
//!   and a fresh `X-Request-ID` per attempt. Everything that creates or spends something
//!   (an order, a payment, a single-use token, a cancellation) is sent once.
//! - **Errors**: [`super::errors`]; a 401 on a call with the shopper's token is
//!   `TokenRejected`.
//! - Metrics per HTTP attempt as for the other adapters: `pisgate_bank_requests_total` and
//!   `pisgate_bank_request_duration_seconds` (`operation`, `outcome`, `bank`).
//!
//! Never logged or put into an error: tokens (access, refresh, autostart), QR data,
//! `auth_req_id` (span fields carry the route, e.g. `/auth/v4/authorizations/{id}`, not the
//! URL), the client secret, request or answer bodies, full account numbers.

use super::{convert, errors, wire};
use crate::bank::berlin_group::client::{api_base_url, product_ok, record_attempt};
use crate::bank::berlin_group::convert::refusal;
use crate::bank::berlin_group::status::{self as bg_status, map_transaction_status};
pub use crate::bank::nordea::RetryPolicy;
use crate::bank::nordea::errors::{
    parse_retry_after, transport, transport_after_answer, unreadable,
};
use crate::bank::retry::with_read_retries;
use crate::bank::{
    Bank, BankError, BankIdOrder, BankIdProgress, BankLinks, BankPaymentId, BankRef, BankTraits,
    CancelOutcome, FundsAvailability, Initiated, PaymentDetails, PaymentInitiation, PsuContext,
    Revocation, ScaStep, StatusReport, TokenSet, trace,
};
use async_trait::async_trait;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tracing::field::Empty;

const JSON: &str = "application/json";

/// SEB's private or corporate PIS API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SebApi {
    Private,
    /// Corporate: every PIS call carries `PSU-Corporate-ID`.
    Corporate {
        psu_corporate_id: String,
    },
}

impl SebApi {
    fn segment(&self) -> &'static str {
        match self {
            SebApi::Private => "private",
            SebApi::Corporate { .. } => "corporate",
        }
    }
}

/// Everything an SEB client needs; the `[banks.<id>]` settings build it.
pub struct SebConfig {
    /// The bank's id in pisgate (`seb`): the `bank` label of metrics and logs.
    pub bank_id: String,
    /// The host: `https://api-sandbox.sebgroup.com`. pisgate appends the paths.
    pub base_url: String,
    pub api: SebApi,
    pub client_id: String,
    pub client_secret: SecretString,
    /// The QWAC and its private key, PEM, for mutual TLS (`Identity::from_pem`). `None`
    /// only in tests against a plain HTTP mock.
    pub tls_identity_pem: Option<SecretString>,
    /// Extra root CA(s), PEM, trusted for SEB's server certificate beside the platform's.
    pub tls_ca_pem: Option<String>,
    /// The payment product per currency code.
    pub products: BTreeMap<String, String>,
    /// The `transactionStatus` codes that mean paid (default `ACSC`).
    pub paid_statuses: Vec<String>,
    /// `PSU-IP-Address` when the shopper's own is not known.
    pub psu_ip_fallback: IpAddr,
    /// The `redirect_uri` SEB's `/tokens` requires (ASSUMED: the one registered with the
    /// client; the decoupled flow never sends anyone there).
    pub redirect_uri: String,
    /// `start_mode` of an identification order (`qr` or `ast`).
    pub start_mode: String,
    /// `authenticationMethodId` of a signing order (`bankIdQr` or `bankIdSameDevice`).
    pub signing_method: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub read_retries: RetryPolicy,
}

impl SebConfig {
    pub const SCOPE: &str = "psd2_payments";
    pub const DEFAULT_PRODUCTS: [(&str, &str); 2] = [
        ("SEK", "private-se-domestic-credit-transfers"),
        ("EUR", "sepa-credit-transfers"),
    ];

    /// A configuration with the defaults for everything but the bank, its URL and client.
    pub fn new(
        bank_id: impl Into<String>,
        base_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
        psu_ip_fallback: IpAddr,
    ) -> SebConfig {
        SebConfig {
            bank_id: bank_id.into(),
            base_url: base_url.into(),
            api: SebApi::Private,
            client_id: client_id.into(),
            client_secret,
            tls_identity_pem: None,
            tls_ca_pem: None,
            products: Self::DEFAULT_PRODUCTS
                .iter()
                .map(|(c, p)| ((*c).to_owned(), (*p).to_owned()))
                .collect(),
            paid_statuses: vec!["ACSC".to_owned()],
            psu_ip_fallback,
            redirect_uri: "https://localhost/pisgate/seb".to_owned(),
            start_mode: "qr".to_owned(),
            signing_method: "bankIdQr".to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            read_retries: RetryPolicy::default(),
        }
    }
}

impl fmt::Debug for SebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SebConfig")
            .field("bank_id", &self.bank_id)
            .field("base_url", &self.base_url)
            .field("api", &self.api.segment())
            .field("client_id", &self.client_id)
            .field("products", &self.products)
            .field("paid_statuses", &self.paid_statuses)
            .finish_non_exhaustive()
    }
}

/// Why an [`SebClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SebConfigError {
    #[error(
        "bank {0}: base_url must be an absolute http(s) URL with a host and no query, user or fragment"
    )]
    BaseUrl(String),
    #[error("bank {0}: paid_statuses may list only ACSC, ACCC and ACSP, and must list ACSC")]
    PaidStatuses(String),
    #[error("bank {0}: a payment product must be a non-empty path segment")]
    Product(String),
    #[error("bank {0}: the TLS certificate and key (the QWAC) cannot be read as PEM: {1}")]
    Identity(String, String),
    #[error("bank {0}: tls_ca_file holds no PEM certificate we can read: {1}")]
    Ca(String, String),
    #[error("could not build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// The SEB adapter. Cheap to share behind an `Arc<dyn Bank>`.
pub struct SebClient {
    http: reqwest::Client,
    bank_id: String,
    origin: Url,
    /// `{base}/auth/v4`.
    auth: String,
    /// `{base}/tpp/pis/{private|corporate}/v1/identified2`.
    pis: String,
    /// `{base}/tpp/signing/v1`.
    signing: String,
    api: SebApi,
    client_id: String,
    client_secret: SecretString,
    products: BTreeMap<String, String>,
    paid: Vec<String>,
    psu_ip_fallback: IpAddr,
    redirect_uri: String,
    start_mode: String,
    signing_method: String,
    retries: RetryPolicy,
}

impl fmt::Debug for SebClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SebClient")
            .field("bank_id", &self.bank_id)
            .field("pis", &self.pis)
            .field("products", &self.products)
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

/// A request pisgate could not build or send: nothing left pisgate, so nothing happened at
/// SEB (provably not processed; an initiation ends `failed`, never "outcome unknown").
fn not_sent(detail: impl Into<String>) -> BankError {
    BankError::NotSent {
        detail: detail.into(),
    }
}

/// An id SEB gave that pisgate puts into a URL path: URL-safe characters only.
fn path_id(id: &str, what: &str) -> Result<String, BankError> {
    BankPaymentId::parse(id)
        .map(|p| p.as_str().to_owned())
        .ok_or_else(|| not_sent(format!("the {what} is not URL-safe")))
}

/// The answer to one HTTP call that succeeded (2xx).
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// One logical call to SEB.
struct Call<'a> {
    operation: &'static str,
    /// The path template for traces (`/auth/v4/authorizations/{id}`): never the real path,
    /// which may hold an `auth_req_id`.
    route: &'static str,
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
    token: Option<&'a SecretString>,
    psu: Option<&'a PsuContext>,
    corporate: bool,
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
            token: None,
            psu: None,
            corporate: false,
            read: false,
        }
    }

    fn json(mut self, body: &impl Serialize) -> Result<Self, BankError> {
        self.body =
            Some(serde_json::to_vec(body).map_err(|_| not_sent("could not encode the body"))?);
        Ok(self)
    }

    fn token(mut self, token: &'a SecretString) -> Self {
        self.token = Some(token);
        self
    }

    fn psu(mut self, psu: Option<&'a PsuContext>) -> Self {
        self.psu = psu;
        self
    }

    fn pis(mut self) -> Self {
        self.corporate = true;
        self
    }

    fn read(mut self) -> Self {
        self.read = true;
        self
    }
}

impl SebClient {
    pub fn new(config: SebConfig) -> Result<SebClient, SebConfigError> {
        let bank = config.bank_id.clone();
        let (origin, base) =
            api_base_url(&config.base_url).ok_or_else(|| SebConfigError::BaseUrl(bank.clone()))?;
        if !bg_status::paid_statuses_ok(&config.paid_statuses) {
            return Err(SebConfigError::PaidStatuses(bank));
        }
        if !config.products.values().all(|p| product_ok(p)) {
            return Err(SebConfigError::Product(bank));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("pisgate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &config.tls_identity_pem {
            let identity = reqwest::Identity::from_pem(pem.expose_secret().as_bytes())
                // reqwest's message names the PEM problem, never the key's bytes.
                .map_err(|e| SebConfigError::Identity(bank.clone(), e.to_string()))?;
            builder = builder.identity(identity);
        }
        if let Some(ca) = &config.tls_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
                .map_err(|e| SebConfigError::Ca(bank.clone(), e.to_string()))?;
            if certs.is_empty() {
                return Err(SebConfigError::Ca(bank, "no certificate".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(SebConfigError::Http)?;
        Ok(SebClient {
            http,
            bank_id: config.bank_id,
            origin,
            auth: format!("{base}/auth/v4"),
            pis: format!("{base}/tpp/pis/{}/v1/identified2", config.api.segment()),
            signing: format!("{base}/tpp/signing/v1"),
            api: config.api,
            client_id: config.client_id,
            client_secret: config.client_secret,
            products: config.products,
            paid: config.paid_statuses,
            psu_ip_fallback: config.psu_ip_fallback,
            redirect_uri: config.redirect_uri,
            start_mode: config.start_mode,
            signing_method: config.signing_method,
            retries: config.read_retries,
        })
    }

    /// The bank's id in pisgate.
    pub fn bank_id(&self) -> &str {
        &self.bank_id
    }

    fn url(&self, text: String) -> Result<Url, BankError> {
        Url::parse(&text).map_err(|_| not_sent("could not build the URL"))
    }

    /// A link SEB gave (relative to the PIS base, or absolute on the base URL's origin under
    /// the PIS path) resolved to the URL the shopper's token may go to.
    pub fn resolve(&self, href: &str) -> Result<Url, BankError> {
        let href = href.trim();
        let pis_path = Url::parse(&self.pis)
            .map_err(|_| not_sent("bad PIS base"))?
            .path()
            .to_owned();
        let url = if href.starts_with("http://") || href.starts_with("https://") {
            Url::parse(href).map_err(|_| not_sent("SEB's link is not a URL"))?
        } else if href.starts_with(&pis_path) {
            self.origin
                .join(href)
                .map_err(|_| not_sent("SEB's link is not a URL"))?
        } else {
            let rel = href.trim_start_matches('/');
            self.url(format!("{}/{rel}", self.pis))?
        };
        let same_origin = url.scheme() == self.origin.scheme()
            && url.host_str() == self.origin.host_str()
            && url.port_or_known_default() == self.origin.port_or_known_default();
        if !same_origin
            || !url.path().starts_with(&format!("{pis_path}/"))
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(not_sent(
                "SEB's link points away from its PIS base; refusing to send the shopper's token there",
            ));
        }
        Ok(url)
    }

    fn link(&self, payment: &BankRef, name: &str) -> Result<Url, BankError> {
        if let Some(href) = payment.links.get(name) {
            return self.resolve(href);
        }
        // `self` from `status` (…/status) and back, as SEB's paths are fixed.
        let derived = match name {
            "self" => payment
                .links
                .get("status")
                .and_then(|s| s.trim_end_matches('/').strip_suffix("/status"))
                .map(str::to_owned),
            "status" => payment
                .links
                .get("self")
                .map(|s| format!("{}/status", s.trim_end_matches('/'))),
            _ => None,
        };
        match derived {
            Some(href) => self.resolve(&href),
            None => Err(not_sent(format!(
                "the payment has no `{name}` link from SEB"
            ))),
        }
    }

    fn ip(&self, psu: Option<&PsuContext>) -> IpAddr {
        psu.and_then(|p| p.ip).unwrap_or(self.psu_ip_fallback)
    }

    /// One harmless call for `pisgate check`: `POST /auth/v4/tokens` for an order nobody
    /// started, sent once. SEB answers 400 (unknown order) when the TLS client certificate
    /// and our client id and secret are accepted; `invalid-client` or a TLS failure fails.
    pub async fn probe(&self) -> Result<(), BankError> {
        match self
            .tokens_for(&format!("pisgate-check-{}", uuid::Uuid::new_v4()))
            .await
        {
            Ok(_) | Err(BankError::Validation { .. }) | Err(BankError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn tokens_for(&self, order_id: &str) -> Result<TokenSet, BankError> {
        let body = wire::TokenForOrder {
            client_id: &self.client_id,
            client_secret: self.client_secret.expose_secret(),
            auth_req_id: order_id,
            redirect_uri: &self.redirect_uri,
        };
        let call = Call::new(
            "identification_tokens",
            "/auth/v4/tokens",
            Method::POST,
            self.url(format!("{}/tokens", self.auth))?,
        )
        .json(&body)?;
        let (answer, _): (wire::TokenAnswer, _) = self.fetch(&call).await?;
        Ok(token_set(answer))
    }

    /// Sends `call`, retrying it if it is a read and SEB is unavailable.
    async fn execute(&self, call: &Call<'_>) -> Result<Answer, BankError> {
        with_read_retries(&self.retries, &self.bank_id, call.read, |attempt| {
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
    async fn attempt(&self, call: &Call<'_>, attempt: u32) -> Result<Answer, BankError> {
        let started = Instant::now();
        let result = self.send_once(call).await;
        record_attempt(&self.bank_id, call.operation, started, &result);
        result
    }

    async fn send_once(&self, call: &Call<'_>) -> Result<Answer, BankError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .header(ACCEPT, JSON)
            .header("x-request-id", &request_id)
            .header("psu-ip-address", self.ip(call.psu).to_string());
        if let Some(body) = &call.body {
            request = request.header(CONTENT_TYPE, JSON).body(body.clone());
        }
        if let Some(token) = call.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| not_sent("the shopper's token holds characters HTTP cannot carry"))?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        if call.corporate
            && let SebApi::Corporate { psu_corporate_id } = &self.api
        {
            let mut value = HeaderValue::from_str(psu_corporate_id)
                .map_err(|_| not_sent("psu_corporate_id holds characters HTTP cannot carry"))?;
            value.set_sensitive(true);
            request = request.header("psu-corporate-id", value);
        }
        if let Some(agent) = call.psu.and_then(|p| p.user_agent.as_deref())
            && let Ok(value) = HeaderValue::from_str(agent)
        {
            request = request.header("psu-user-agent", value);
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
        let body = response
            .bytes()
            .await
            .map_err(transport_after_answer)?
            .to_vec();
        if (200..300).contains(&status) {
            Ok(Answer { status, body })
        } else {
            Err(errors::classify(
                status,
                retry_after,
                &body,
                call.token.is_some(),
            ))
        }
    }

    async fn fetch<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<(T, Answer), BankError> {
        let answer = self.execute(call).await?;
        let value =
            serde_json::from_slice(&answer.body).map_err(|e| unreadable(answer.status, &e))?;
        Ok((value, answer))
    }

    /// Reads one payment's resource at its `link` (`self` or `status`) with the shopper's
    /// token: a PIS read, retried as reads are.
    async fn read_payment<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        route: &'static str,
        link: &str,
        payment: &BankRef,
        access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<T, BankError> {
        let token = needs_token(access_token)?;
        let call = Call::new(operation, route, Method::GET, self.link(payment, link)?)
            .token(token)
            .psu(psu)
            .pis()
            .read();
        let (answer, _) = self.fetch(&call).await?;
        Ok(answer)
    }

    fn report(&self, code: &str) -> StatusReport {
        StatusReport {
            bank_status: code.to_owned(),
            status: map_transaction_status(code, &self.paid, None),
        }
    }
}

fn token_set(answer: wire::TokenAnswer) -> TokenSet {
    TokenSet {
        access_token: SecretString::from(answer.access_token),
        refresh_token: answer.refresh_token.map(SecretString::from),
        // SEB: an access token lives 30 minutes (expires_in 1800) when the answer is silent.
        expires_in: Duration::from_secs(answer.expires_in.unwrap_or(1800)),
        token_type: answer.token_type.unwrap_or_else(|| "Bearer".to_owned()),
        shopper_id: None,
        issued_at: None,
    }
}

fn needs_token(token: Option<&SecretString>) -> Result<&SecretString, BankError> {
    token.ok_or(BankError::TokenRejected)
}

#[async_trait]
impl Bank for SebClient {
    fn traits(&self) -> BankTraits {
        BankTraits {
            protocol: "seb",
            return_carries_code: false,
            needs_debtor_account: false,
            shopper_token_required: true,
            submit_after_authorization: false,
            token_per_payment: false,
            cancel_needs_shopper_token: true,
            deleted_status: "CANC",
            return_in_fragment: false,
            acts_without_hop: false,
        }
    }

    fn check(&self, payment: &PaymentInitiation) -> Result<(), BankError> {
        let currency = payment.amount.currency();
        if !self.products.contains_key(currency.code()) {
            return Err(refusal(
                "amount.currency",
                "currency_not_supported",
                format!("SEB takes no {currency} payments here"),
            ));
        }
        convert::initiation_request(payment, convert::is_sepa(currency)).map(|_| ())
    }

    /// SEB creates no payment without the shopper's token: see [`Bank::initiate_with_token`].
    async fn initiate(
        &self,
        _payment: &PaymentInitiation,
        _psu: Option<&PsuContext>,
    ) -> Result<Initiated, BankError> {
        Err(BankError::TokenRejected)
    }

    /// SEB reads no payment without the shopper's token: see [`Bank::status_with_token`].
    async fn status(
        &self,
        _payment: &BankRef,
        _psu: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError> {
        Err(BankError::TokenRejected)
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "details", bank_payment_id = %payment.id))]
    async fn details(
        &self,
        payment: &BankRef,
        access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<PaymentDetails, BankError> {
        let answer: wire::DetailsAnswer = self
            .read_payment(
                "details",
                "/payments/{product}/{id}",
                "self",
                payment,
                access_token,
                psu,
            )
            .await?;
        let report = self.report(&answer.transaction_status);
        Ok(convert::payment_details(&payment.id, &answer, report))
    }

    async fn funds(
        &self,
        _id: &BankPaymentId,
        _access_token: &SecretString,
        _psu: Option<&PsuContext>,
    ) -> Result<FundsAvailability, BankError> {
        Err(unexpected(
            "the seb protocol has no confirmation of funds for a payment in pisgate",
        ))
    }

    /// One DELETE per payment with the shopper's token, each sent once. Only `204 No
    /// Content` proves the payment deleted. A `202 Accepted` is the Berlin Group's "the
    /// cancellation needs the shopper's authorisation": nothing is cancelled yet, so the
    /// payment is in `needs_authorisation` and its status decides (as in the Berlin Group
    /// adapter). Any other 2xx is an answer SEB does not give for a deletion: an
    /// [`BankError::Unexpected`] that ends the call, never taken as "deleted". SEB's refusal
    /// of one payment (`CANCELLATION_INVALID`: already signed) is its error in the outcome;
    /// a fault of SEB or of our setup ends the call with that error.
    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "cancel", count = payments.len()))]
    async fn cancel(
        &self,
        payments: &[BankRef],
        access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<CancelOutcome, BankError> {
        let token = needs_token(access_token)?;
        let mut outcome = CancelOutcome::default();
        for payment in payments {
            let call = Call::new(
                "cancel",
                "/payments/{product}/{id}",
                Method::DELETE,
                self.link(payment, "self")?,
            )
            .token(token)
            .psu(psu)
            .pis();
            match self.execute(&call).await {
                Ok(answer) if answer.status == 204 => outcome.deleted.push(payment.id.clone()),
                Ok(answer) if answer.status == 202 => {
                    outcome.needs_authorisation.push(payment.id.clone())
                }
                Ok(answer) => {
                    return Err(BankError::Unexpected {
                        status: Some(answer.status),
                        detail: "a deletion answers 204 (or 202: not deleted yet); this answer proves nothing deleted".to_owned(),
                    });
                }
                Err(e) => outcome.refused(&payment.id, e, "SEB does not know this payment")?,
            }
        }
        Ok(outcome)
    }

    async fn exchange_code(
        &self,
        _code: &SecretString,
        _redirect_uri: &str,
    ) -> Result<TokenSet, BankError> {
        Err(unexpected(
            "the seb protocol takes the shopper's token from a BankID identification, not a code",
        ))
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "refresh"))]
    async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, BankError> {
        let body = wire::TokenRefresh {
            client_id: &self.client_id,
            client_secret: self.client_secret.expose_secret(),
            grant_type: "refresh_token",
            refresh_token: refresh_token.expose_secret(),
            redirect_uri: &self.redirect_uri,
        };
        let call = Call::new(
            "refresh",
            "/auth/v4/tokens",
            Method::POST,
            self.url(format!("{}/tokens", self.auth))?,
        )
        .json(&body)?;
        let (answer, _): (wire::TokenAnswer, _) = self.fetch(&call).await?;
        Ok(token_set(answer))
    }

    /// SEB documents no revocation endpoint (ASSUMED): nothing is sent, and the answer says
    /// so ([`Revocation::NotOffered`]), never that the token was revoked.
    async fn revoke(&self, _refresh_token: &SecretString) -> Result<Revocation, BankError> {
        Ok(Revocation::NotOffered)
    }

    #[tracing::instrument(
        skip_all,
        fields(bank = %self.bank_id, operation = "initiate", country = %payment.country, external_id = %payment.external_id, bank_payment_id = Empty)
    )]
    async fn initiate_with_token(
        &self,
        payment: &PaymentInitiation,
        access_token: &SecretString,
        psu: Option<&PsuContext>,
    ) -> Result<Initiated, BankError> {
        let currency = payment.amount.currency();
        let product = self.products.get(currency.code()).ok_or_else(|| {
            refusal(
                "amount.currency",
                "currency_not_supported",
                format!("SEB takes no {currency} payments here"),
            )
        })?;
        let body = convert::initiation_request(payment, convert::is_sepa(currency))?;
        let call = Call::new(
            "initiate",
            "/payments/{product}",
            Method::POST,
            self.url(format!("{}/payments/{product}", self.pis))?,
        )
        .json(&body)?
        .token(access_token)
        .psu(psu)
        .pis();
        let (answer, raw): (wire::InitiationAnswer, _) = self.fetch(&call).await?;
        if raw.status != 201 && raw.status != 200 {
            return Err(BankError::Unexpected {
                status: Some(raw.status),
                detail: "an initiation answers 201".to_owned(),
            });
        }
        let bank_payment_id = BankPaymentId::parse(answer.payment_id.clone())
            .ok_or_else(|| unexpected("SEB's paymentId is not URL-safe"))?;
        tracing::Span::current().record("bank_payment_id", bank_payment_id.as_str());
        let echo_mismatch = answer
            .instructed_amount
            .as_ref()
            .map(|echo| convert::amount_mismatch(echo, payment.amount))
            .unwrap_or_default();
        if !echo_mismatch.is_empty() {
            // SEB made the payment with other terms than pisgate sent (or an amount that
            // cannot be read exactly): it must never be signed through pisgate. The caller
            // records it; say so loudly.
            tracing::error!(
                bank = %self.bank_id,
                bank_payment_id = %bank_payment_id,
                mismatch = ?echo_mismatch,
                "SEB's answer to an initiation carries other terms than pisgate sent"
            );
        }
        let mut links = BTreeMap::new();
        let self_href = answer
            .links
            .self_
            .map(|h| h.href)
            .unwrap_or_else(|| format!("/payments/{product}/{bank_payment_id}"));
        let status_href = answer
            .links
            .status
            .map(|h| h.href)
            .unwrap_or_else(|| format!("{}/status", self_href.trim_end_matches('/')));
        // Both must be links our token may follow. SEB made the payment, so a link that
        // is not one (another host, another path) never fails the initiation (that would
        // lose the payment's id): SEB's paths are fixed, and the payment's own path under
        // the configured base is used instead.
        let standard = format!("/payments/{product}/{bank_payment_id}");
        let (self_href, status_href) = if self.resolve(&self_href).is_ok()
            && self.resolve(&status_href).is_ok()
        {
            (self_href, status_href)
        } else {
            tracing::error!(
                bank = %self.bank_id,
                bank_payment_id = %bank_payment_id,
                "SEB's links for the payment it made are not under its configured PIS base: the payment's standard path is used instead"
            );
            let status = format!("{standard}/status");
            (standard, status)
        };
        links.insert("self".to_owned(), self_href);
        links.insert("status".to_owned(), status_href);
        Ok(Initiated {
            bank_payment_id,
            next: ScaStep::BankIdSigning,
            status: self.report(&answer.transaction_status),
            links: BankLinks(links),
            echo_mismatch,
        })
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "status", bank_payment_id = %payment.id))]
    async fn status_with_token(
        &self,
        payment: &BankRef,
        access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError> {
        let answer: wire::StatusAnswer = self
            .read_payment(
                "status",
                "/payments/{product}/{id}/status",
                "status",
                payment,
                access_token,
                psu,
            )
            .await?;
        Ok(self.report(&answer.transaction_status))
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "start_identification"))]
    async fn start_identification(
        &self,
        psu: Option<&PsuContext>,
    ) -> Result<BankIdOrder, BankError> {
        let body = wire::AuthorizationRequest {
            client_id: &self.client_id,
            scope: SebConfig::SCOPE,
            start_mode: &self.start_mode,
            lang: None,
        };
        let call = Call::new(
            "start_identification",
            "/auth/v4/authorizations",
            Method::POST,
            self.url(format!("{}/authorizations", self.auth))?,
        )
        .json(&body)?
        .psu(psu);
        let (answer, _): (wire::AuthorizationStarted, _) = self.fetch(&call).await?;
        let id = path_id(&answer.auth_req_id, "auth_req_id")?;
        // The order's first progress is read at once (its QR data and autostart token). If
        // that read fails the order still exists at SEB: its id is returned with a bare
        // pending progress, and the next read shows the QR code.
        let progress = match self.identification_progress(&id, psu).await {
            Ok(progress) => progress,
            Err(error) => {
                tracing::warn!(bank = %self.bank_id, error = %error, "could not read a new identification order's first progress");
                BankIdProgress {
                    state: crate::bank::BankIdState::Pending,
                    bank_status: "PENDING".to_owned(),
                    hint_code: None,
                    qr_data: None,
                    autostart_token: None,
                    psu_message: None,
                    poll_delay: None,
                }
            }
        };
        Ok(BankIdOrder { id, progress })
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "identification_progress"))]
    async fn identification_progress(
        &self,
        order_id: &str,
        psu: Option<&PsuContext>,
    ) -> Result<BankIdProgress, BankError> {
        let id = path_id(order_id, "identification order id")?;
        let call = Call::new(
            "identification_progress",
            "/auth/v4/authorizations/{id}",
            Method::GET,
            self.url(format!("{}/authorizations/{id}", self.auth))?,
        )
        .psu(psu)
        .read();
        let (answer, _): (wire::AuthorizationStatus, _) = self.fetch(&call).await?;
        Ok(convert::identification_progress(answer))
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "identification_tokens"))]
    async fn identification_tokens(&self, order_id: &str) -> Result<TokenSet, BankError> {
        self.tokens_for(order_id).await
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "start_signing", bank_payment_id = %payment.id))]
    async fn start_signing(
        &self,
        payment: &BankRef,
        access_token: &SecretString,
        psu: Option<&PsuContext>,
    ) -> Result<BankIdOrder, BankError> {
        let body = wire::SigningRequest {
            order_ids: vec![payment.id.as_str()],
            authentication_method_id: &self.signing_method,
        };
        let call = Call::new(
            "start_signing",
            "/signing-orders",
            Method::POST,
            self.url(format!("{}/signing-orders", self.signing))?,
        )
        .json(&body)?
        .token(access_token)
        .psu(psu);
        let (order, _): (wire::SigningOrder, _) = self.fetch(&call).await?;
        let id = path_id(&order.authorisation_id, "signing order's authorisationId")?;
        Ok(BankIdOrder {
            id,
            progress: convert::signing_progress(&order),
        })
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "signing_progress"))]
    async fn signing_progress(
        &self,
        order_id: &str,
        access_token: &SecretString,
        psu: Option<&PsuContext>,
    ) -> Result<BankIdProgress, BankError> {
        let id = path_id(order_id, "signing order id")?;
        let call = Call::new(
            "signing_progress",
            "/signing-orders/{id}",
            Method::GET,
            self.url(format!("{}/signing-orders/{id}", self.signing))?,
        )
        .token(access_token)
        .psu(psu)
        .read();
        let (order, _): (wire::SigningOrder, _) = self.fetch(&call).await?;
        Ok(convert::signing_progress(&order))
    }
}

#[cfg(test)]
mod tests;
