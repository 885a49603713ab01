//! [`BerlinGroupClient`]: the [`Bank`] port spoken to a Berlin Group NextGenPSD2 (XS2A) bank
//! over HTTP (`berlin-group-pis.md` §1–§5).
//!
//! | operation | request |
//! |---|---|
//! | initiate | POST {base}/v1/{payments, periodic-payments}/{product of the currency} |
//! | status | GET the payment's `status` link; for `RJCT`/`PDNG` also its `scaStatus` link |
//! | details | GET the payment's `self` link |
//! | cancel | DELETE the payment's `self` link: 204 deleted, 202 needs the PSU's authorisation |
//! | start_authorisation | POST the payment's `startAuthorisation*` link, body `{}` |
//! | sca_status | GET the given `scaStatus` link |
//!
//! Decisions:
//! - **Links are followed, never rebuilt.** A relative href is resolved against the base
//!   URL's origin; an absolute one must have the base URL's scheme, host and port, else the
//!   call is refused (`NotSent`) before anything is sent: an edited link in the database
//!   must not send our signed requests elsewhere. The shopper's `scaRedirect` is exempt (it
//!   is where the browser goes, often the bank's web host), but must be http(s).
//! - **What `RJCT` means needs the SCA.** The status read alone cannot tell a refused SCA
//!   from a rejected payment, so when the transaction status is `RJCT` or `PDNG` and the
//!   payment has a `scaStatus` link, `status()` (and `details()`) read it too: `RJCT` +
//!   `failed` → `authorization_failed`, other `RJCT` → `rejected`; `PDNG` → `authorized` when
//!   finalised, `awaiting_authorization` when open. Any failure at that link (404, a 400/403
//!   such as `RESOURCE_EXPIRED` once the SCA is over, 5xx after the read retries, an
//!   unreadable answer) counts as unknown: `RJCT` → `rejected` (the bank's final word, the
//!   generic reason), `PDNG` → no status. It is logged and counted
//!   (`pisgate_bank_sca_status_unknown_total`), never a failed read: a definite `RJCT`
//!   must not wait forever on a secondary read. Links of an authorisation started later
//!   (explicit or decoupled SCA) are in its [`Authorisation::links`]: the caller keeps
//!   them with the payment.
//! - **`PSU-IP-Address`** (mandatory on initiation): the shopper's address when pisgate has
//!   it, else the configured fallback (`psu_ip_fallback`, e.g. the server's own public
//!   address); with neither, initiation is refused before any call, naming the setting.
//! - **Refused before sending** ([`BankError::NotSent`], provably not processed): no
//!   `PSU-IP-Address`, a body that cannot be encoded, a request that cannot be signed, a
//!   header value HTTP cannot carry (a control character), a missing or foreign link.
//!   Never for anything after a request went out: an answer pisgate cannot use is
//!   `Unexpected` (its outcome is unknown).
//! - **The redirect back**: a Berlin Group bank returns the shopper with no parameters, so
//!   the state travels inside `TPP-Redirect-URI` as `state=…`; `TPP-Nok-Redirect-URI` is the
//!   same URL plus `error=access_denied` (a hint: the bank's status stays the truth).
//! - **SCA preference**: `redirect` sends `TPP-Redirect-Preferred: true`;
//!   `explicit-redirect` also `TPP-Explicit-Authorisation-Preferred: true`; `decoupled`
//!   sends `TPP-Redirect-Preferred: false` and `TPP-Decoupled-Preferred: true`; `oauth`
//!   prefers redirect (the framework subsumes OAuth under it).
//! - **Next step from the 201**: `scaRedirect` → redirect; `scaOAuth` → OAuth;
//!   `startAuthorisation*` → start an authorisation (also for a decoupled bank: the PSU-ID
//!   goes there); an `ASPSP-SCA-Approach: DECOUPLED` answer without any of them →
//!   decoupled (the authorisation already exists).
//! - Only reads (status, details, sca_status) are retried, on `Unavailable`, with the
//!   Nordea adapter's jittered backoff and a fresh `X-Request-ID`, `Date` and signature per
//!   attempt. Initiation, start authorisation and cancel are sent exactly once.
//! - Berlin Group redirect SCA gives pisgate no shopper tokens: `exchange_code`, `refresh`,
//!   `revoke` and `funds` answer `Unexpected`.
//! - Metrics per HTTP attempt: `pisgate_bank_requests_total` and
//!   `pisgate_bank_request_duration_seconds`, labelled `operation`, `outcome` and `bank`
//!   (the bank's id).
//!
//! Never logged or put into an error: keys, the redirect URIs (they hold the state), PSU-ID,
//! request or answer bodies (account numbers), serde messages that could quote them.

use super::convert::{self, BodyOptions};
use super::signing::{BgSigner, digest_header, headers_to_sign};
use super::status::{self, map_transaction_status, needs_sca_status, sca_state};
use super::{errors, wire};
pub use crate::bank::nordea::RetryPolicy;
use crate::bank::nordea::certificate::EidasCertificate;
use crate::bank::nordea::errors::{
    parse_retry_after, transport, transport_after_answer, unreadable,
};
use crate::bank::nordea::signing::SigningKey;
use crate::bank::retry::with_read_retries;
use crate::bank::{
    Authentication, Authorisation, AuthorisationRequest, Bank, BankError, BankLinks, BankPaymentId,
    BankRef, BankTraits, CancelOutcome, FundsAvailability, Initiated, PaymentDetails,
    PaymentInitiation, PsuContext, Revocation, ScaReport, ScaState, ScaStep, StatusReport,
    TokenSet, trace,
};
use async_trait::async_trait;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Url};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};
use tracing::field::Empty;

const JSON: &str = "application/json";

/// The SCA approach pisgate asks a bank for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaApproach {
    /// Implicit redirect: the 201 carries `scaRedirect`.
    #[default]
    Redirect,
    /// The shopper approves in their bank's app; pisgate polls `scaStatus`.
    Decoupled,
    /// Redirect after an explicit `POST …/authorisations`.
    ExplicitRedirect,
    /// OAuth SCA (`scaOAuth`); preferred as redirect.
    OAuth,
}

impl ScaApproach {
    /// `redirect`, `decoupled`, `explicit-redirect`, `oauth`.
    pub fn parse(text: &str) -> Option<ScaApproach> {
        match text.trim().to_ascii_lowercase().as_str() {
            "redirect" => Some(ScaApproach::Redirect),
            "decoupled" => Some(ScaApproach::Decoupled),
            "explicit-redirect" => Some(ScaApproach::ExplicitRedirect),
            "oauth" => Some(ScaApproach::OAuth),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ScaApproach::Redirect => "redirect",
            ScaApproach::Decoupled => "decoupled",
            ScaApproach::ExplicitRedirect => "explicit-redirect",
            ScaApproach::OAuth => "oauth",
        }
    }
}

/// Everything a Berlin Group client needs; the `[banks.<id>]` settings build it.
pub struct BerlinGroupConfig {
    /// The bank's id in pisgate (`testbank`): the `bank` label of metrics, traces and logs.
    pub bank_id: String,
    /// The server base, with its path: `https://api.bank.example/psd2`. pisgate appends
    /// `/v1/{payment-service}/{payment-product}`; links are resolved against its origin.
    pub base_url: String,
    /// The QSealC's private key (PEM). Needed when `sign_requests`.
    pub signing_key: Option<SigningKey>,
    /// The QSealC (PEM or bare base64): its serial and issuer make the `keyId`, its DER is
    /// sent as `TPP-Signature-Certificate`. Needed when `sign_requests`.
    pub certificate: Option<EidasCertificate>,
    /// Sign every request (default true). A bank that wants no message signature (SEB)
    /// sets it false; then no `Digest`, `Signature` or certificate header is sent.
    pub sign_requests: bool,
    /// The payment product per currency, keyed by ISO 4217 code (default `EUR` →
    /// `sepa-credit-transfers`). A currency not listed is refused before any call.
    pub products: BTreeMap<String, String>,
    /// The product of periodic payments, when it differs from the currency's.
    pub periodic_product: Option<String>,
    /// The `transactionStatus` codes that mean paid (default `ACSC`, `ACCC`). Only `ACSC`,
    /// `ACCC` and `ACSP` may be listed and `ACSC` must be: `ACSP` only for a bank known to
    /// stop there for good, never by default.
    pub paid_statuses: Vec<String>,
    /// The bank needs the debtor's account at initiation (default true: the 1.3.12 schema
    /// requires `debtorAccount`; false for a bank that documents it optional).
    pub needs_debtor_account: bool,
    /// The SCA approach pisgate asks for (default redirect).
    pub sca_approach: ScaApproach,
    /// The bank takes a structured reference or an unstructured message, not both (default
    /// false): with a reference, the message is then not sent.
    pub remittance_exclusive: bool,
    pub connect_timeout: Duration,
    /// The whole request, answer body included.
    pub request_timeout: Duration,
    /// How reads are retried when the bank is unavailable (default 3 attempts).
    pub read_retries: RetryPolicy,
    /// `PSU-ID-Type` sent with a PSU-ID, when the bank wants one.
    pub psu_id_type: Option<String>,
    /// The `PSU-IP-Address` sent when the shopper's own is not known (initiation through the
    /// merchant API). Default none: initiation without the shopper's address is refused.
    pub psu_ip_fallback: Option<IpAddr>,
    /// The `client_id` of OAuth SCA's authorization-code flow (the TPP's id at the bank's
    /// authorisation server; default `pisgate`).
    pub oauth_client_id: String,
}

impl BerlinGroupConfig {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_PRODUCT: &str = "sepa-credit-transfers";

    /// A configuration with the defaults for everything but the bank, its URL and the
    /// signing credentials.
    pub fn new(
        bank_id: impl Into<String>,
        base_url: impl Into<String>,
        signing_key: Option<SigningKey>,
        certificate: Option<EidasCertificate>,
    ) -> BerlinGroupConfig {
        BerlinGroupConfig {
            bank_id: bank_id.into(),
            base_url: base_url.into(),
            signing_key,
            certificate,
            sign_requests: true,
            products: BTreeMap::from([("EUR".to_owned(), Self::DEFAULT_PRODUCT.to_owned())]),
            periodic_product: None,
            paid_statuses: status::DEFAULT_PAID
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            needs_debtor_account: true,
            sca_approach: ScaApproach::default(),
            remittance_exclusive: false,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            read_retries: RetryPolicy::default(),
            psu_id_type: None,
            psu_ip_fallback: None,
            oauth_client_id: "pisgate".to_owned(),
        }
    }
}

impl fmt::Debug for BerlinGroupConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BerlinGroupConfig")
            .field("bank_id", &self.bank_id)
            .field("base_url", &self.base_url)
            .field("signing_key", &self.signing_key)
            .field("sign_requests", &self.sign_requests)
            .field("products", &self.products)
            .field("periodic_product", &self.periodic_product)
            .field("paid_statuses", &self.paid_statuses)
            .field("needs_debtor_account", &self.needs_debtor_account)
            .field("sca_approach", &self.sca_approach)
            .field("remittance_exclusive", &self.remittance_exclusive)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("read_retries", &self.read_retries)
            .field("psu_id_type", &self.psu_id_type)
            .field("psu_ip_fallback", &self.psu_ip_fallback)
            .finish_non_exhaustive()
    }
}

/// Why a [`BerlinGroupClient`] could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BerlinGroupConfigError {
    #[error(
        "bank {0}: base_url must be an absolute http(s) URL with a host and no query, user or fragment"
    )]
    BaseUrl(String),
    #[error(
        "bank {0}: sign_requests needs both private_key_file and certificate_file (the QSealC)"
    )]
    MissingCredentials(String),
    #[error("bank {bank}: the certificate cannot sign with this key: {source}")]
    Certificate {
        bank: String,
        #[source]
        source: crate::bank::nordea::certificate::CertificateError,
    },
    #[error("bank {0}: paid_statuses may list only ACSC, ACCC and ACSP, and must list ACSC")]
    PaidStatuses(String),
    #[error(
        "bank {0}: a payment product must be a non-empty path segment (e.g. sepa-credit-transfers)"
    )]
    Product(String),
    #[error("bank {0}: psu_id_type must be visible ASCII")]
    PsuIdType(String),
    #[error("could not build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// The Berlin Group adapter. Cheap to share behind an `Arc<dyn Bank>`.
pub struct BerlinGroupClient {
    http: reqwest::Client,
    bank_id: String,
    /// Scheme, host, port and base path, without a trailing slash.
    base: String,
    /// The base URL's origin (`scheme://host:port/`): links resolve against it.
    origin: Url,
    signer: Option<BgSigner>,
    products: BTreeMap<String, String>,
    periodic_product: Option<String>,
    paid: Vec<String>,
    needs_debtor_account: bool,
    approach: ScaApproach,
    body_options: BodyOptions,
    retries: RetryPolicy,
    psu_id_type: Option<String>,
    psu_ip_fallback: Option<IpAddr>,
    oauth_client_id: String,
}

impl fmt::Debug for BerlinGroupClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BerlinGroupClient")
            .field("bank_id", &self.bank_id)
            .field("base", &self.base)
            .field("signer", &self.signer)
            .field("products", &self.products)
            .field("paid", &self.paid)
            .field("approach", &self.approach)
            .finish_non_exhaustive()
    }
}

/// Whether a payment product may stand as a path segment: non-empty, letters, digits,
/// `-`, `.` and `_` only. SEB's client checks its products the same way.
pub(crate) fn product_ok(product: &str) -> bool {
    !product.is_empty()
        && product
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// A bank's base URL as its settings give it, when usable: an absolute http(s) URL with a
/// host and no user, password, query or fragment. Returns its origin (the path `/`) and
/// the base without a trailing `/`. SEB's client reads its base URL the same way.
pub(crate) fn api_base_url(raw: &str) -> Option<(Url, String)> {
    let url = Url::parse(raw.trim()).ok()?;
    let usable = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if !usable {
        return None;
    }
    let mut origin = url.clone();
    origin.set_path("/");
    let base = url.as_str().trim_end_matches('/').to_owned();
    Some((origin, base))
}

/// The answer to one HTTP call that succeeded (2xx).
struct Answer {
    status: u16,
    /// `ASPSP-SCA-Approach`, when the bank said.
    approach: Option<String>,
    body: Vec<u8>,
}

/// What a 2xx answer to a payment's DELETE proves.
#[derive(Debug, PartialEq, Eq)]
enum Cancellation {
    Deleted,
    /// Accepted, but the shopper must authorise the cancellation: not cancelled yet.
    NeedsAuthorisation,
    /// Nothing deleted is proven (why, for the error).
    Unproven(String),
}

/// Reads a 2xx answer to a DELETE of a payment. The spec answers 204 (deleted) or 202 with
/// the cancellation's own authorisation links (not deleted yet). A 200 with a body (some
/// banks send one) counts as deleted only when it says `CANC`, and as waiting for the
/// shopper when it names a `startAuthorisation*` link; anything else proves nothing
/// deleted, so the payment is not ended on it.
fn cancellation(answer: &Answer) -> Cancellation {
    match answer.status {
        204 => return Cancellation::Deleted,
        202 => return Cancellation::NeedsAuthorisation,
        _ => {}
    }
    let Ok(body) = serde_json::from_slice::<wire::CancellationAnswer>(&answer.body) else {
        return Cancellation::Unproven(format!(
            "a deletion answers 204 (or 202: not deleted yet); this {} has no cancellation answer to read",
            answer.status
        ));
    };
    if body
        .links
        .0
        .keys()
        .any(|k| k.starts_with("startAuthorisation"))
    {
        return Cancellation::NeedsAuthorisation;
    }
    match body.transaction_status.as_deref() {
        Some("CANC") => Cancellation::Deleted,
        other => Cancellation::Unproven(format!(
            "a deletion answers 204 (or 202: not deleted yet); this {} says transactionStatus {} and proves nothing deleted",
            answer.status,
            other.unwrap_or("(none)")
        )),
    }
}

/// One logical call to the bank.
struct Call<'a> {
    operation: &'static str,
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
    /// Extra request headers (lower-case names); `psu-id`, `psu-corporate-id` and
    /// `tpp-redirect-uri` among them are signed.
    headers: Vec<(&'static str, String)>,
    psu: Option<&'a PsuContext>,
    /// A read: safe to repeat, so retried when the bank is unavailable.
    read: bool,
}

impl<'a> Call<'a> {
    fn new(operation: &'static str, method: Method, url: Url) -> Call<'a> {
        Call {
            operation,
            method,
            url,
            body: None,
            headers: Vec::new(),
            psu: None,
            read: false,
        }
    }

    fn json(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
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

    fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| *n == name)
    }
}

fn unexpected(detail: impl Into<String>) -> BankError {
    BankError::Unexpected {
        status: None,
        detail: detail.into(),
    }
}

/// A request refused here, before anything was sent ([`BankError::NotSent`]).
fn not_sent(detail: impl Into<String>) -> BankError {
    BankError::NotSent {
        detail: detail.into(),
    }
}

fn not_offered(what: &str) -> BankError {
    unexpected(format!(
        "the berlin-group protocol does not {what}: redirect SCA gives pisgate no shopper tokens"
    ))
}

/// The metrics, span fields and log line of one HTTP attempt (inside its `bank_http`
/// span). Shared by the Berlin Group and SEB adapters. Logs carry the error's text (codes
/// and the bank's descriptions), never a body, header or URL.
pub(crate) fn record_attempt<T>(
    bank_id: &str,
    operation: &'static str,
    started: Instant,
    result: &Result<T, BankError>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    if result.is_err() {
        let span = tracing::Span::current();
        span.record("error.type", outcome);
        span.record("otel.status_code", "ERROR");
    }
    let bank = bank_id.to_owned();
    metrics::counter!("pisgate_bank_requests_total", "operation" => operation, "outcome" => outcome, "bank" => bank.clone())
        .increment(1);
    metrics::histogram!("pisgate_bank_request_duration_seconds", "operation" => operation, "outcome" => outcome, "bank" => bank.clone())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(_) => tracing::debug!(outcome, "bank call done"),
        Err(error) => match error.configuration_code() {
            Some(code) => {
                metrics::counter!("pisgate_bank_config_errors_total", "code" => code.to_owned(), "bank" => bank)
                    .increment(1);
                tracing::error!(
                    bank = %bank_id,
                    code,
                    error = %error,
                    "the bank refused our own setup (certificate, key, client credentials or clock); every call will fail until an operator fixes it"
                );
            }
            None => tracing::warn!(outcome, error = %error, "bank call failed"),
        },
    }
}

/// `TPP-Redirect-URI` (with the state) and `TPP-Nok-Redirect-URI` (plus
/// `error=access_denied`).
pub fn redirect_uris(auth: &Authentication) -> Result<(String, String), BankError> {
    let mut ok = Url::parse(&auth.redirect_uri)
        .map_err(|_| not_sent("the redirect URI is not an absolute URL"))?;
    ok.query_pairs_mut().append_pair("state", &auth.state);
    let mut nok = ok.clone();
    nok.query_pairs_mut().append_pair("error", "access_denied");
    Ok((ok.to_string(), nok.to_string()))
}

impl BerlinGroupClient {
    pub fn new(config: BerlinGroupConfig) -> Result<BerlinGroupClient, BerlinGroupConfigError> {
        let bank = config.bank_id.clone();
        let (origin, base) = api_base_url(&config.base_url)
            .ok_or_else(|| BerlinGroupConfigError::BaseUrl(bank.clone()))?;
        let signer = if config.sign_requests {
            let (Some(key), Some(certificate)) = (config.signing_key, config.certificate) else {
                return Err(BerlinGroupConfigError::MissingCredentials(bank));
            };
            Some(BgSigner::new(key, &certificate).map_err(|source| {
                BerlinGroupConfigError::Certificate {
                    bank: bank.clone(),
                    source,
                }
            })?)
        } else {
            None
        };
        if !status::paid_statuses_ok(&config.paid_statuses) {
            return Err(BerlinGroupConfigError::PaidStatuses(bank));
        }
        if !config
            .products
            .values()
            .chain(config.periodic_product.iter())
            .all(|p| product_ok(p))
        {
            return Err(BerlinGroupConfigError::Product(bank));
        }
        if config
            .psu_id_type
            .as_deref()
            .is_some_and(|t| t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        {
            return Err(BerlinGroupConfigError::PsuIdType(bank));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("pisgate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(BerlinGroupConfigError::Http)?;
        Ok(BerlinGroupClient {
            http,
            bank_id: config.bank_id,
            base,
            origin,
            signer,
            products: config.products,
            periodic_product: config.periodic_product,
            paid: config.paid_statuses,
            needs_debtor_account: config.needs_debtor_account,
            approach: config.sca_approach,
            body_options: BodyOptions {
                remittance_exclusive: config.remittance_exclusive,
            },
            retries: config.read_retries,
            psu_id_type: config.psu_id_type,
            psu_ip_fallback: config.psu_ip_fallback,
            oauth_client_id: config.oauth_client_id,
        })
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The bank's id in pisgate.
    pub fn bank_id(&self) -> &str {
        &self.bank_id
    }

    /// The `keyId` pisgate signs with, when it signs.
    pub fn key_id(&self) -> Option<&str> {
        self.signer.as_ref().map(BgSigner::key_id)
    }

    /// A link of the bank's resolved to a URL our signed requests may go to: a relative
    /// href against the base URL's origin; an absolute one only on that origin.
    pub fn resolve(&self, href: &str) -> Result<Url, BankError> {
        let url = self
            .origin
            .join(href.trim())
            .map_err(|_| not_sent("the bank's link is not a URL"))?;
        if url.scheme() != self.origin.scheme()
            || url.host_str() != self.origin.host_str()
            || url.port_or_known_default() != self.origin.port_or_known_default()
        {
            return Err(not_sent(
                "the bank's link points away from its base URL; refusing to send a signed request there",
            ));
        }
        if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(not_sent("the bank's link carries a fragment or user info"));
        }
        Ok(url)
    }

    /// Where the shopper's browser goes: relative hrefs resolved against the origin, any
    /// http(s) host allowed (the bank's SCA web may live elsewhere).
    fn browser_url(&self, href: &str) -> Result<String, BankError> {
        let url = self
            .origin
            .join(href.trim())
            .map_err(|_| unexpected("the bank's redirect link is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(unexpected("the bank's redirect link is not http(s)"));
        }
        Ok(url.to_string())
    }

    /// The payment's `name` link, only when its path names the payment's bank id (the
    /// spec's resource path `/v1/{service}/{product}/{paymentId}[/status]`). The links are
    /// stored beside the bound bank id but not bound themselves: a link of another payment
    /// at the same bank (an insider's copy) must not have that payment's status applied to
    /// this one, nor this payment's DELETE sent to that one.
    fn link(&self, payment: &BankRef, name: &str) -> Result<Url, BankError> {
        let href = payment
            .links
            .get(name)
            .ok_or_else(|| not_sent(format!("the payment has no `{name}` link from the bank")))?;
        let url = self.resolve(href)?;
        let id = payment.id.as_str();
        if !url
            .path_segments()
            .is_some_and(|mut segments| segments.any(|s| s == id))
        {
            tracing::error!(
                link = name,
                "the payment's link from the bank does not name its bank payment id; not followed"
            );
            return Err(not_sent(format!(
                "the payment's `{name}` link does not name its bank payment id"
            )));
        }
        Ok(url)
    }

    fn endpoint(&self, service: &str, product: &str) -> Result<Url, BankError> {
        Url::parse(&format!("{}/v1/{service}/{product}", self.base))
            .map_err(|_| not_sent("could not build the initiation URL"))
    }

    /// One harmless call for `pisgate check`: the status of a payment id nobody has
    /// (answered 404 when certificate, signature and date are right), sent once.
    pub async fn probe(&self) -> Result<(), BankError> {
        let product = self
            .products
            .values()
            .next()
            .map(String::as_str)
            .unwrap_or(BerlinGroupConfig::DEFAULT_PRODUCT);
        let id = uuid::Uuid::new_v4();
        let url = Url::parse(&format!("{}/v1/payments/{product}/{id}/status", self.base))
            .map_err(|_| not_sent("could not build the probe URL"))?;
        match self.execute(&Call::new("probe", Method::GET, url)).await {
            Ok(_) | Err(BankError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends `call`, retrying it if it is a read and the bank is unavailable.
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
            url.path = call.url.path(),
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
        let date = httpdate::fmt_http_date(SystemTime::now());
        let body: &[u8] = call.body.as_deref().unwrap_or_default();
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .header(ACCEPT, JSON)
            .header("x-request-id", &request_id)
            .header("date", &date);
        if call.body.is_some() {
            request = request.header(CONTENT_TYPE, JSON).body(body.to_vec());
        }
        let mut headers: Vec<(&str, String)> = call.headers.clone();
        if let Some(psu) = call.psu {
            if let Some(ip) = psu.ip
                && !call.has("psu-ip-address")
            {
                headers.push(("psu-ip-address", ip.to_string()));
            }
            if let Some(agent) = psu.user_agent.as_deref()
                && reqwest::header::HeaderValue::from_str(agent).is_ok()
            {
                headers.push(("psu-user-agent", agent.to_owned()));
            }
        }
        if let Some(signer) = &self.signer {
            let digest = digest_header(body);
            let present: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let signed = headers_to_sign(&digest, &request_id, &present, &date);
            let signature = signer
                .sign(&signed)
                .map_err(|_| not_sent("could not sign the request"))?;
            request = request
                .header("digest", &digest)
                .header("signature", signature)
                .header("tpp-signature-certificate", signer.certificate_header());
        }
        for (name, value) in &headers {
            let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                not_sent(format!("header {name} holds characters HTTP cannot carry"))
            })?;
            if *name == "psu-id" {
                value.set_sensitive(true);
            }
            request = request.header(*name, value);
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
        let approach = response
            .headers()
            .get("aspsp-sca-approach")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .bytes()
            .await
            .map_err(transport_after_answer)?
            .to_vec();
        if (200..300).contains(&status) {
            Ok(Answer {
                status,
                approach,
                body,
            })
        } else {
            Err(errors::classify(status, retry_after, &body))
        }
    }

    async fn fetch<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<(T, Answer), BankError> {
        let answer = self.execute(call).await?;
        let value =
            serde_json::from_slice(&answer.body).map_err(|e| unreadable(answer.status, &e))?;
        Ok((value, answer))
    }

    /// The SCA state behind a `RJCT`/`PDNG`, from the payment's `scaStatus` link if any.
    /// `None` (unknown) when there is no such link or the bank does not answer it usefully
    /// (404, a refusal such as 400/403 `RESOURCE_EXPIRED` after the SCA ended, 5xx after the
    /// read retries, an unreadable answer): the transaction status is the payment's truth,
    /// and a bank's `RJCT` must never wait on a secondary read.
    async fn sca_behind(
        &self,
        code: &str,
        payment: &BankRef,
        psu: Option<&PsuContext>,
    ) -> Option<ScaState> {
        if !needs_sca_status(code) {
            return None;
        }
        let link = payment.links.get("scaStatus")?;
        match self.sca_status(link, psu).await {
            Ok(report) => Some(report.state),
            Err(error) => {
                tracing::warn!(
                    transaction_status = code,
                    kind = error.kind(),
                    %error,
                    "the SCA status behind the transaction status could not be read; applied as unknown SCA"
                );
                metrics::counter!("pisgate_bank_sca_status_unknown_total", "bank" => self.bank_id.clone(), "kind" => error.kind())
                    .increment(1);
                None
            }
        }
    }

    async fn report(
        &self,
        code: &str,
        payment: &BankRef,
        psu: Option<&PsuContext>,
    ) -> StatusReport {
        let sca = self.sca_behind(code, payment, psu).await;
        StatusReport {
            bank_status: code.to_owned(),
            status: map_transaction_status(code, &self.paid, sca),
        }
    }

    fn redirect_headers<'a>(
        &self,
        call: Call<'a>,
        auth: &Authentication,
    ) -> Result<Call<'a>, BankError> {
        let (ok, nok) = redirect_uris(auth)?;
        let mut call = call
            .header("tpp-redirect-uri", ok)
            .header("tpp-nok-redirect-uri", nok);
        call = match self.approach {
            ScaApproach::Decoupled => call
                .header("tpp-redirect-preferred", "false")
                .header("tpp-decoupled-preferred", "true"),
            _ => call.header("tpp-redirect-preferred", "true"),
        };
        Ok(call)
    }

    /// The next step from a set of links (and the bank's approach header).
    fn next_step(
        &self,
        links: &BankLinks,
        approach: Option<&str>,
        psu_message: Option<String>,
    ) -> Result<Option<ScaStep>, BankError> {
        // A link no browser may be sent to (not http(s), say an app's own scheme) is not
        // used, and never fails the initiation: the bank made the payment, and its id must
        // be kept and followed (an error here would lose it). Without a usable step the
        // payment is followed as one the shopper needs no page for.
        if let Some(href) = links.get("scaRedirect") {
            match self.browser_url(href) {
                Ok(url) => return Ok(Some(ScaStep::Redirect { url })),
                Err(e) => {
                    tracing::error!(error = %e, "the bank's scaRedirect link cannot be opened in a browser: not used")
                }
            }
        }
        if let Some(href) = links.get("scaOAuth") {
            match self.browser_url(href) {
                Ok(metadata_url) => return Ok(Some(ScaStep::OAuth { metadata_url })),
                Err(e) => {
                    tracing::error!(error = %e, "the bank's scaOAuth link cannot be used: not used")
                }
            }
        }
        if links.0.keys().any(|k| k.starts_with("startAuthorisation")) {
            return Ok(Some(ScaStep::StartAuthorisation));
        }
        if approach.is_some_and(|a| a.eq_ignore_ascii_case("DECOUPLED")) {
            return Ok(Some(ScaStep::Decoupled { psu_message }));
        }
        Ok(None)
    }
}

#[async_trait]
impl Bank for BerlinGroupClient {
    fn traits(&self) -> BankTraits {
        BankTraits {
            protocol: "berlin-group",
            return_carries_code: false,
            needs_debtor_account: self.needs_debtor_account,
            shopper_token_required: false,
            submit_after_authorization: false,
            token_per_payment: false,
            cancel_needs_shopper_token: false,
            deleted_status: "CANC",
            return_in_fragment: false,
            acts_without_hop: true,
        }
    }

    fn check(&self, payment: &PaymentInitiation) -> Result<(), BankError> {
        let currency = payment.amount.currency();
        if !self.products.contains_key(currency.code()) {
            return Err(convert::refusal(
                "amount.currency",
                "currency_not_supported",
                format!("this bank takes no {currency} payments"),
            ));
        }
        convert::initiation_request(payment, self.body_options, chrono::Utc::now().date_naive())
            .map(|_| ())
    }

    /// The standard path of a payment of `id` (`self`, and `status` under it) for the product
    /// pisgate initiates in `currency` with, as an initiation would: what the operator's
    /// reconciliation follows ([`Bank::reference_for`]).
    fn reference_for(&self, id: &BankPaymentId, currency: &str, periodic: bool) -> Option<BankRef> {
        let product = self.products.get(currency)?;
        let (service, product) = if periodic {
            (
                "periodic-payments",
                self.periodic_product.as_ref().unwrap_or(product),
            )
        } else {
            ("payments", product)
        };
        let standard = format!("{}/v1/{service}/{product}/{id}", self.base);
        // Only what `link` would follow: under the bank's origin, naming the id.
        let url = self.resolve(&standard).ok()?;
        if !url
            .path_segments()
            .is_some_and(|mut s| s.any(|x| x == id.as_str()))
        {
            return None;
        }
        Some(BankRef {
            id: id.clone(),
            links: BankLinks(BTreeMap::from([
                ("status".to_owned(), format!("{standard}/status")),
                ("self".to_owned(), standard),
            ])),
        })
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
        let currency = payment.amount.currency();
        let product = self.products.get(currency.code()).ok_or_else(|| {
            convert::refusal(
                "amount.currency",
                "currency_not_supported",
                format!("this bank takes no {currency} payments"),
            )
        })?;
        let (service, product) = match &payment.recurring {
            Some(_) => (
                "periodic-payments",
                self.periodic_product.as_ref().unwrap_or(product),
            ),
            None => ("payments", product),
        };
        let ip = psu.and_then(|p| p.ip).or(self.psu_ip_fallback).ok_or_else(|| {
            not_sent(
                "no PSU-IP-Address: the shopper's address is unknown and the bank has no psu_ip_fallback setting",
            )
        })?;
        let body = convert::initiation_request(
            payment,
            self.body_options,
            chrono::Utc::now().date_naive(),
        )?;
        let body =
            serde_json::to_vec(&body).map_err(|_| not_sent("could not encode the request body"))?;
        let mut call = Call::new("initiate", Method::POST, self.endpoint(service, product)?)
            .json(body)
            .psu(psu)
            .header("psu-ip-address", ip.to_string());
        call = self.redirect_headers(call, &payment.authentication)?;
        if self.approach == ScaApproach::ExplicitRedirect {
            call = call.header("tpp-explicit-authorisation-preferred", "true");
        }
        let (answer, raw): (wire::InitiationAnswer, _) = self.fetch(&call).await?;
        if raw.status != 201 && raw.status != 200 {
            return Err(BankError::Unexpected {
                status: Some(raw.status),
                detail: "an initiation answers 201".to_owned(),
            });
        }
        let bank_payment_id = BankPaymentId::parse(answer.payment_id.clone())
            .ok_or_else(|| unexpected("the bank's paymentId is not URL-safe"))?;
        tracing::Span::current().record("bank_payment_id", bank_payment_id.as_str());
        let links = BankLinks(answer.links.hrefs());
        // No step for the shopper (an SCA exemption, or no link at all): the bank made the
        // payment and may execute it by itself. Its id must be kept and followed: an error
        // here would lose it, and a retry would make a second payment.
        let next = self
            .next_step(&links, raw.approach.as_deref(), answer.psu_message.clone())?
            .unwrap_or_else(|| {
                tracing::warn!(
                    sca_status = answer.sca_status.as_deref().unwrap_or(""),
                    "the bank's initiation answer names no step for the shopper (no scaRedirect, scaOAuth, startAuthorisation or decoupled approach): followed as exempted from SCA"
                );
                ScaStep::Exempted
            });
        let sca = answer.sca_status.as_deref().map(sca_state);
        Ok(Initiated {
            bank_payment_id,
            next,
            status: StatusReport {
                bank_status: answer.transaction_status.clone(),
                status: map_transaction_status(&answer.transaction_status, &self.paid, sca),
            },
            links,
            // A Berlin Group initiation answer echoes no terms (§1.5).
            echo_mismatch: Vec::new(),
        })
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "status", bank_payment_id = %payment.id))]
    async fn status(
        &self,
        payment: &BankRef,
        psu: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError> {
        let call = Call::new("status", Method::GET, self.link(payment, "status")?)
            .psu(psu)
            .read();
        let (answer, _): (wire::StatusAnswer, _) = self.fetch(&call).await?;
        Ok(self.report(&answer.transaction_status, payment, psu).await)
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "details", bank_payment_id = %payment.id))]
    async fn details(
        &self,
        payment: &BankRef,
        _access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<PaymentDetails, BankError> {
        let call = Call::new("details", Method::GET, self.link(payment, "self")?)
            .psu(psu)
            .read();
        let (answer, _): (wire::DetailsAnswer, _) = self.fetch(&call).await?;
        let report = self.report(&answer.transaction_status, payment, psu).await;
        Ok(convert::payment_details(&payment.id, &answer, report))
    }

    async fn funds(
        &self,
        _id: &BankPaymentId,
        _access_token: &SecretString,
        _psu: Option<&PsuContext>,
    ) -> Result<FundsAvailability, BankError> {
        Err(unexpected(
            "the berlin-group protocol has no confirmation of funds for a payment",
        ))
    }

    /// One DELETE per payment at its `self` link, each sent once. A refusal of one payment
    /// (4xx) is its error in the outcome; a fault of the bank or of our setup (5xx,
    /// transport, rate limit, certificate, signature, clock) ends the call with that error.
    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "cancel", count = payments.len()))]
    async fn cancel(
        &self,
        payments: &[BankRef],
        _access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<CancelOutcome, BankError> {
        let mut outcome = CancelOutcome::default();
        for payment in payments {
            let call = Call::new("cancel", Method::DELETE, self.link(payment, "self")?).psu(psu);
            match self.execute(&call).await {
                Ok(answer) => match cancellation(&answer) {
                    Cancellation::Deleted => outcome.deleted.push(payment.id.clone()),
                    Cancellation::NeedsAuthorisation => {
                        outcome.needs_authorisation.push(payment.id.clone())
                    }
                    Cancellation::Unproven(detail) => {
                        return Err(BankError::Unexpected {
                            status: Some(answer.status),
                            detail,
                        });
                    }
                },
                Err(e) => outcome.refused(&payment.id, e, "the bank does not know this payment")?,
            }
        }
        Ok(outcome)
    }

    async fn exchange_code(
        &self,
        _code: &SecretString,
        _redirect_uri: &str,
    ) -> Result<TokenSet, BankError> {
        Err(not_offered("exchange an authorization code"))
    }

    async fn refresh(&self, _refresh_token: &SecretString) -> Result<TokenSet, BankError> {
        Err(not_offered("refresh a token"))
    }

    /// Redirect SCA gives pisgate no shopper tokens: nothing to revoke, nothing is sent.
    async fn revoke(&self, _refresh_token: &SecretString) -> Result<Revocation, BankError> {
        Ok(Revocation::NotOffered)
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "start_authorisation", bank_payment_id = %payment.id))]
    async fn start_authorisation(
        &self,
        payment: &BankRef,
        request: &AuthorisationRequest,
        psu: Option<&PsuContext>,
    ) -> Result<Authorisation, BankError> {
        let explicit = payment
            .links
            .0
            .keys()
            .any(|k| k.starts_with("startAuthorisation"));
        if !explicit && let Some(metadata_url) = payment.links.get("scaOAuth") {
            // OAuth SCA (`scaOAuth`): the authorisation is the shopper's authorization-code
            // flow at the bank's authorisation server, with a fresh PKCE verifier.
            let metadata = self.oauth_metadata(metadata_url).await?;
            let pkce = super::oauth::Pkce::generate();
            let url = super::oauth::authorization_url(
                &metadata,
                &self.oauth_client_id,
                &request.authentication.redirect_uri,
                &format!("PIS:{}", payment.id),
                &request.authentication.state,
                &pkce,
            )?;
            return Ok(Authorisation {
                id: format!("oauth-{}", pkce.challenge.get(..12).unwrap_or("")),
                sca: ScaReport {
                    bank_sca_status: "received".into(),
                    state: crate::bank::ScaState::Open,
                    psu_message: None,
                },
                next: ScaStep::Redirect { url },
                links: BankLinks::default(),
                pkce_verifier: Some(pkce.verifier),
            });
        }
        let mut names = vec![];
        if request.psu_id.is_some() {
            names.push("startAuthorisationWithPsuIdentification");
        }
        names.push("startAuthorisation");
        let href = names
            .iter()
            .find_map(|n| payment.links.get(n))
            .or_else(|| {
                payment
                    .links
                    .0
                    .iter()
                    .find(|(k, _)| k.starts_with("startAuthorisation"))
                    .map(|(_, v)| v.as_str())
            })
            .ok_or_else(|| not_sent("the payment has no startAuthorisation link from the bank"))?;
        let mut call = Call::new("start_authorisation", Method::POST, self.resolve(href)?)
            .json(b"{}".to_vec())
            .psu(psu);
        if let Some(psu_id) = &request.psu_id {
            call = call.header("psu-id", psu_id.clone());
            if let Some(kind) = &self.psu_id_type {
                call = call.header("psu-id-type", kind.clone());
            }
        }
        call = self.redirect_headers(call, &request.authentication)?;
        let (answer, raw): (wire::StartAuthorisationAnswer, _) = self.fetch(&call).await?;
        let links = BankLinks(answer.links.hrefs());
        let next = self
            .next_step(&links, raw.approach.as_deref(), answer.psu_message.clone())?
            .filter(|step| *step != ScaStep::StartAuthorisation)
            .unwrap_or(ScaStep::Decoupled {
                psu_message: answer.psu_message.clone(),
            });
        Ok(Authorisation {
            id: answer.authorisation_id,
            sca: ScaReport {
                state: sca_state(&answer.sca_status),
                bank_sca_status: answer.sca_status,
                psu_message: answer.psu_message,
            },
            next,
            links,
            pkce_verifier: None,
        })
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "finish_oauth"))]
    async fn finish_oauth(
        &self,
        payment: &BankRef,
        code: &SecretString,
        redirect_uri: &str,
        verifier: &SecretString,
    ) -> Result<(), BankError> {
        let metadata_url = payment
            .links
            .get("scaOAuth")
            .ok_or_else(|| not_sent("the payment has no scaOAuth link from the bank"))?;
        // No answer about the metadata means the code was not sent: safe to try again.
        let metadata = self
            .oauth_metadata(metadata_url)
            .await
            .map_err(|e| match e {
                BankError::NotSent { .. } | BankError::RateLimited { .. } => e,
                e => BankError::Unavailable {
                    detail: format!("the authorisation server's metadata could not be read ({e}); the code was not sent"),
                    retry_safe: true,
                },
            })?;
        self.oauth_exchange_code(
            &metadata,
            &self.oauth_client_id,
            code,
            redirect_uri,
            verifier,
        )
        .await
        .map(|_| ())
    }

    #[tracing::instrument(skip_all, fields(bank = %self.bank_id, operation = "sca_status"))]
    async fn sca_status(
        &self,
        link: &str,
        psu: Option<&PsuContext>,
    ) -> Result<ScaReport, BankError> {
        let call = Call::new("sca_status", Method::GET, self.resolve(link)?)
            .psu(psu)
            .read();
        let (answer, _): (wire::ScaStatusAnswer, _) = self.fetch(&call).await?;
        Ok(ScaReport {
            state: sca_state(&answer.sca_status),
            bank_sca_status: answer.sca_status,
            psu_message: answer.psu_message,
        })
    }
}

#[cfg(test)]
pub(super) mod tests;
