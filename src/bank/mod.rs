//! The bank port: what pisgate asks of a bank, in bank-neutral terms.
//!
//! [`Bank`] is the one trait the rest of pisgate (the API, the workers) talks to; an adapter
//! such as [`nordea::NordeaClient`] implements it with that bank's wire format, signing and
//! status mapping. The types here carry domain values ([`Money`], [`Country`],
//! [`PaymentStatus`]) and never a bank's JSON, headers or HTTP status codes.
//!
//! What this module must never do:
//! - know about the database, the merchant API or any particular bank's wire format;
//! - change a payment's status itself: a [`StatusReport`] only proposes the mapped status,
//!   and `None` means "unknown, no change";
//! - print a secret: tokens and codes are [`SecretString`], account numbers are masked in
//!   `Debug`, and no [`BankError`] text carries a token, key, code or account number.

pub mod berlin_group;
pub mod http_signature;
pub mod nordea;
pub mod op;
pub mod registry;
pub(crate) mod retry;
pub mod seb;

pub use registry::{BankEntry, Banks};
mod trace;

use crate::domain::{Country, Money, PaymentStatus};
use async_trait::async_trait;
use chrono::NaiveDate;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// A bank's own identifier of a payment.
///
/// It is put into URL paths, so it only ever holds URL-safe characters (RFC 3986 unreserved:
/// ASCII letters, digits, `-`, `.`, `_`, `~`), is not empty and at most 128 bytes long.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BankPaymentId(String);

impl BankPaymentId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(id: impl Into<String>) -> Option<BankPaymentId> {
        let id = id.into();
        let safe = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id != "."
            && id != ".."
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        safe.then_some(BankPaymentId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BankPaymentId {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        BankPaymentId::parse(value).ok_or_else(|| "not a valid bank payment id".to_owned())
    }
}

impl From<BankPaymentId> for String {
    fn from(id: BankPaymentId) -> String {
        id.0
    }
}

impl fmt::Display for BankPaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use crate::domain::AccountType;
pub use crate::domain::Urgency;

/// An account: its kind and its number. `Debug` shows only the last four characters.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub kind: AccountType,
    pub value: String,
}

impl Account {
    /// The account number with all but its last four characters hidden, for logs.
    pub fn masked(&self) -> String {
        let chars: Vec<char> = self.value.chars().collect();
        let keep = chars.len().min(4);
        let tail: String = chars[chars.len() - keep..].iter().collect();
        format!("…{tail}")
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("kind", &self.kind)
            .field("value", &self.masked())
            .finish()
    }
}

/// A structured creditor reference, e.g. `OCR` (Finnish/Norwegian KID) or `RF`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creditor {
    pub account: Account,
    pub name: Option<String>,
    /// Message to the creditor (free text).
    pub message: Option<String>,
    pub reference: Option<Reference>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debtor {
    pub account: Option<Account>,
    /// Message on the debtor's own statement.
    pub message: Option<String>,
}

/// A standing order: `count` executions (9999 = until deleted) at `recurrence_type`
/// (the bank's own code, e.g. `MONTHLY_SAME_DAY`; the bank decides what it accepts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurring {
    pub count: u32,
    pub recurrence_type: String,
}

/// Where the bank sends the shopper after signing and what it shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// Our random, single-use state; it comes back on the redirect.
    pub state: String,
    pub redirect_uri: String,
    pub language: Option<String>,
    /// The bank's code for the signing method (e.g. `MTA`, `BANKID_NO`).
    pub authentication_method: Option<String>,
}

/// Everything needed to initiate one payment.
///
/// The domain has already checked the business rules (currency per country, creditor name
/// length, express and own-account rules, recurrence counts); an adapter does not second-guess
/// them, and whatever the bank still refuses comes back as [`BankError::Validation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentInitiation {
    /// The debtor's country: it picks the bank's product (SEPA for FI, domestic otherwise).
    pub country: Country,
    pub amount: Money,
    pub creditor: Creditor,
    pub debtor: Option<Debtor>,
    /// Our id for the payment at the bank (pisgate's payment id).
    pub external_id: String,
    /// The merchant's display name, if the bank shows one.
    pub merchant_name: Option<String>,
    pub urgency: Urgency,
    pub requested_execution_date: Option<NaiveDate>,
    pub recurring: Option<Recurring>,
    pub own_account_transfer: bool,
    pub authentication: Authentication,
}

/// The shopper's own connection, when the call is made while they are in session with us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsuContext {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// The bank's status of a payment and what it means for the merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The bank's own word, kept beside ours.
    pub bank_status: String,
    /// The mapped status; `None` means unknown: change nothing (count and alert).
    pub status: Option<PaymentStatus>,
}

/// The links a bank handed out for one payment (Berlin Group `_links`: name → href, as
/// given, relative or absolute). They are kept with the payment and followed, never rebuilt
/// from the path scheme: banks differ in what they put there. Empty for Nordea.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BankLinks(pub std::collections::BTreeMap<String, String>);

impl BankLinks {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The links from a stored JSON object; anything else (or a non-string href) is dropped.
    pub fn from_json(value: &serde_json::Value) -> BankLinks {
        let mut links = std::collections::BTreeMap::new();
        if let Some(map) = value.as_object() {
            for (name, href) in map {
                if let Some(href) = href.as_str() {
                    links.insert(name.clone(), href.to_owned());
                }
            }
        }
        BankLinks(links)
    }

    /// These links with `later`'s added on top (a name in both takes `later`'s href): the
    /// payment's links after an authorisation was started (its `scaStatus`, `scaRedirect` …).
    pub fn merged(&self, later: &BankLinks) -> BankLinks {
        let mut links = self.0.clone();
        links.extend(later.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        BankLinks(links)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_else(|_| serde_json::json!({}))
    }
}

/// A payment as pisgate addresses it at its bank: the bank's id and the links the bank gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankRef {
    pub id: BankPaymentId,
    pub links: BankLinks,
}

impl BankRef {
    /// A payment addressed by its id alone (a protocol without links, e.g. Nordea).
    pub fn id_only(id: BankPaymentId) -> BankRef {
        BankRef {
            id,
            links: BankLinks::default(),
        }
    }
}

/// What the shopper (or pisgate for them) must do next so that the payment can be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaStep {
    /// The shopper's browser goes to this URL at the bank (Nordea's authorization URL, a
    /// Berlin Group `scaRedirect`).
    Redirect { url: String },
    /// pisgate must start an authorisation at the bank first (a Berlin Group
    /// `startAuthorisation*` link, explicit authorisation); its answer gives the next step.
    StartAuthorisation,
    /// The shopper approves in their bank's app; pisgate polls the SCA status. The message
    /// is the bank's text for the shopper, if any.
    Decoupled { psu_message: Option<String> },
    /// OAuth SCA: the bank's authorisation server metadata (RFC 8414) is at this URL.
    OAuth { metadata_url: String },
    /// The shopper signs with Mobilt BankID on pisgate's BankID page: pisgate starts a
    /// signing order at the bank ([`Bank::start_signing`]) and follows its progress.
    BankIdSigning,
    /// The bank names no step for the shopper: it exempted the payment from SCA (Berlin
    /// Group `scaStatus: exempted`; which links come back is "the ASPSP's dynamical
    /// decision"), or gives no link at all. The bank may execute the payment without anyone
    /// passing pisgate's hop; pisgate records it and follows its status.
    Exempted,
}

impl ScaStep {
    /// The bank's signing page, when the next step is a browser redirect.
    pub fn redirect_url(&self) -> Option<&str> {
        match self {
            ScaStep::Redirect { url } => Some(url),
            _ => None,
        }
    }
}

/// The answer to an initiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiated {
    pub bank_payment_id: BankPaymentId,
    /// What happens next for the shopper to sign.
    pub next: ScaStep,
    pub status: StatusReport,
    /// The links the bank gave (empty for Nordea); kept with the payment.
    pub links: BankLinks,
    /// The terms the bank's answer echoed with another value than pisgate sent
    /// ([`Initiated::AMOUNT`], [`Initiated::CURRENCY`], [`Initiated::CREDITOR_ACCOUNT`]),
    /// in that order; empty when every term it echoed is the payment's (or it echoed none).
    /// The payment then exists at the bank with other terms than the merchant asked for:
    /// pisgate follows it, but never has it signed or submitted (see
    /// [`crate::api::initiation`]).
    pub echo_mismatch: Vec<&'static str>,
}

impl Initiated {
    /// The amount's echo differs (or cannot be read exactly in its currency).
    pub const AMOUNT: &str = "amount";
    /// The currency's echo differs.
    pub const CURRENCY: &str = "currency";
    /// The creditor account's echo differs.
    pub const CREDITOR_ACCOUNT: &str = "creditor_account";

    /// Where the shopper goes to sign, when it is a redirect.
    pub fn authorization_url(&self) -> Option<&str> {
        self.next.redirect_url()
    }

    /// Whether the bank may execute the payment with nobody passing pisgate's hop: an SCA
    /// exemption, or a decoupled SCA the bank already pushed to the shopper's app at
    /// initiation. Such a payment is recorded as if its hop were opened at once, so that
    /// neither a cancel nor the late-signing horizon takes "nobody could sign it" for a fact.
    pub fn bank_may_act_without_hop(&self) -> bool {
        matches!(self.next, ScaStep::Exempted | ScaStep::Decoupled { .. })
    }

    pub fn bank_ref(&self) -> BankRef {
        BankRef {
            id: self.bank_payment_id.clone(),
            links: self.links.clone(),
        }
    }
}

/// The state of an SCA (a Berlin Group `scaStatus`), as far as pisgate acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaState {
    /// Not final (`received`, `started`, `psuIdentified`, unknown values …).
    Open,
    /// The shopper completed the SCA (`finalised`, `exempted`).
    Finalised,
    /// The shopper refused or failed the SCA (`failed`): pisgate then reads the transaction
    /// status; this alone never finalises a payment.
    Failed,
}

/// The bank's SCA status of one authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaReport {
    /// The bank's own word (e.g. `started`).
    pub bank_sca_status: String,
    pub state: ScaState,
    /// The bank's text for the shopper, if any.
    pub psu_message: Option<String>,
}

/// What pisgate sends to start an authorisation (explicit or decoupled SCA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorisationRequest {
    pub authentication: Authentication,
    /// The shopper's identity at the bank, for a decoupled SCA (`PSU-ID`).
    pub psu_id: Option<String>,
}

/// A started authorisation: its id, its first SCA status and the next step.
#[derive(Debug, Clone)]
pub struct Authorisation {
    pub id: String,
    pub sca: ScaReport,
    pub next: ScaStep,
    pub links: BankLinks,
    /// OAuth SCA: the PKCE verifier of this authorisation (one per authorisation), which
    /// pisgate keeps, encrypted, until the shopper's code comes back. Never logged.
    pub pkce_verifier: Option<SecretString>,
}

/// Which BankID order: the shopper identifying (for the shopper's token) or signing
/// payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BankIdPurpose {
    Identify,
    Sign,
}

impl BankIdPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            BankIdPurpose::Identify => "identify",
            BankIdPurpose::Sign => "sign",
        }
    }
}

/// Where a BankID order stands, as far as pisgate acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankIdState {
    /// Waiting for the shopper (to open the app, scan, enter the PIN …).
    Pending,
    /// The shopper identified or signed in the app.
    Complete,
    /// The order ended without it: refused in the app, expired, cancelled, another order
    /// already in progress for the shopper. The hint code says which. For a signing order
    /// this alone never finalises a payment: pisgate then reads the payment's status.
    Failed,
}

/// A BankID order's progress as the bank reports it on one read. The QR data changes on
/// every read (BankID's animated QR code); the autostart token opens the BankID app on
/// the shopper's own device. Neither is a secret worth a log line's risk: they are never
/// logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankIdProgress {
    pub state: BankIdState,
    /// The bank's own word (`PENDING`, `started`, `finalised`, `failed` …).
    pub bank_status: String,
    /// BankID's hint code (`outstandingTransaction`, `userSign`, `userCancel`,
    /// `expiredTransaction`, `startFailed`, SEB's `sebTimeout`, `ALREADY_IN_PROGRESS` …),
    /// as given; unknown ones are shown with a general message.
    pub hint_code: Option<String>,
    pub qr_data: Option<String>,
    pub autostart_token: Option<String>,
    /// The bank's text for the shopper, if any.
    pub psu_message: Option<String>,
    /// How long the bank asks pisgate to wait before reading again.
    pub poll_delay: Option<Duration>,
}

/// A started BankID order: the bank's id for it and its first progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankIdOrder {
    pub id: String,
    pub progress: BankIdProgress,
}

/// What a protocol needs and offers, for the parts of pisgate that differ per protocol.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BankTraits {
    /// `nordea`, `berlin-group`, …: for logs, metrics and `GET /v1/banks`.
    pub protocol: &'static str,
    /// The shopper's return from the bank carries an authorization code that pisgate
    /// exchanges for the shopper's tokens (Nordea). Without it (Berlin Group redirect SCA)
    /// the return only tells pisgate to read the status.
    pub return_carries_code: bool,
    /// The bank needs the debtor's account at initiation.
    pub needs_debtor_account: bool,
    /// Every call about a payment carries the shopper's own token, initiation included
    /// (SEB): the shopper identifies first (a BankID order, [`Bank::start_identification`]),
    /// pisgate keeps the token by the latest-token rule, and only then creates the payment
    /// ([`Bank::initiate_with_token`]) and reads it ([`Bank::status_with_token`]).
    pub shopper_token_required: bool,
    /// The shopper's authorization only allows the payment; pisgate must then **submit** it
    /// ([`Bank::submit`]) with the token from the code exchange before the bank moves money
    /// (OP). The bank's status says when a submission is due ([`Bank::needs_submission`]);
    /// a bank refusal (`Rejected`) before any submission is the shopper's refusal.
    pub submit_after_authorization: bool,
    /// The token from the code exchange is bound to this one payment's authorization, not
    /// to the shopper (OP): it is kept under the payment's own key, never shared with the
    /// shopper's other payments by the latest-token rule.
    pub token_per_payment: bool,
    /// The bank returns the shopper with the code in the URL fragment (OpenID Connect
    /// hybrid flow, `response_type=code id_token`), which a browser never sends to a server:
    /// the return goes to `/v1/callbacks/oidc`, whose page moves the fragment into the
    /// query and comes back.
    pub return_in_fragment: bool,
    /// Deleting an unsigned payment (the shopper's cancel, the late-signing horizon) goes
    /// on the shopper's own token (Nordea, SEB); without it, on pisgate's own credentials
    /// (the Berlin Group's certificate, OP's client credentials), and the bank deletes only
    /// what nobody signed.
    pub cancel_needs_shopper_token: bool,
    /// The bank's own word for a payment it deleted at pisgate's request (Nordea's
    /// `Cancelled`, OP's `Revoked`, the Berlin Group's and SEB's `CANC`), recorded as the
    /// bank's status when the horizon's delete succeeds.
    pub deleted_status: &'static str,
    /// The bank may execute a payment with nobody passing pisgate's hop: it exempts a payment
    /// from SCA, or starts a decoupled SCA in the shopper's app at initiation (Berlin Group).
    /// So an attempt whose answer was never recorded (lost, or still in flight) may be live
    /// at the bank: pisgate starts no second attempt for the payment (that could pay twice),
    /// never cancels it locally as "nothing could be signed", and never expires it at the
    /// horizon; it stays open for an operator to reconcile. Without it (Nordea, SEB, OP) a
    /// payment nobody signed through pisgate's link never moves money.
    pub acts_without_hop: bool,
}

/// A payment as the bank holds it (needs the shopper's token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentDetails {
    pub bank_payment_id: BankPaymentId,
    pub external_id: Option<String>,
    pub status: StatusReport,
    /// `None` when the bank's amount or currency could not be read exactly.
    pub amount: Option<Money>,
    pub creditor_account: Option<Account>,
    pub creditor_name: Option<String>,
    pub creditor_message: Option<String>,
    pub debtor_account: Option<Account>,
    pub requested_execution_date: Option<NaiveDate>,
    pub planned_execution_date: Option<NaiveDate>,
    /// For a standing order: the executions still to come, as the bank counts them.
    pub recurring: Option<Recurring>,
}

/// The bank's confirmation of availability of funds for a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundsAvailability {
    /// `None` when the bank did not say (e.g. the payment is already executed or rejected).
    pub available: Option<bool>,
    pub details: PaymentDetails,
}

/// One payment the bank refused to cancel, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelError {
    /// The payment it concerns, when the bank says so.
    pub bank_payment_id: Option<String>,
    pub code: Option<String>,
    pub description: Option<String>,
}

/// The answer to a cancellation: the bank's per-id answers are the truth.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CancelOutcome {
    pub deleted: Vec<BankPaymentId>,
    pub errors: Vec<CancelError>,
    /// The bank accepted the cancellation but needs the shopper to authorise it (Berlin
    /// Group 202): not cancelled yet; the bank's status decides.
    pub needs_authorisation: Vec<BankPaymentId>,
}

impl CancelOutcome {
    /// Records the bank's refusal to cancel `payment` that `error` carries: its first
    /// validation failure, `RESOURCE_UNKNOWN` with `unknown` (the bank's wording of "does not
    /// know this payment") for a 404, `http_<status>` with the detail for another 4xx. Any
    /// other error is a fault of the bank or of our setup, not a refusal: it comes back as
    /// `Err` and ends the cancellation.
    pub fn refused(
        &mut self,
        payment: &BankPaymentId,
        error: BankError,
        unknown: &str,
    ) -> Result<(), BankError> {
        let (code, description) = match error {
            BankError::Validation { failures } => {
                let first = failures.into_iter().next();
                (
                    first.as_ref().map(|f| f.code.clone()),
                    first.and_then(|f| f.description),
                )
            }
            BankError::NotFound => (
                Some("RESOURCE_UNKNOWN".to_owned()),
                Some(unknown.to_owned()),
            ),
            BankError::Unexpected {
                status: Some(status @ 400..=499),
                detail,
            } => (Some(format!("http_{status}")), Some(detail)),
            e => return Err(e),
        };
        self.errors.push(CancelError {
            bank_payment_id: Some(payment.to_string()),
            code,
            description,
        });
        Ok(())
    }
}

/// What [`Bank::revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The bank took the revocation: the token is dead there.
    Revoked,
    /// The bank offers no token revocation: nothing was sent, and the token lives at the
    /// bank until it lapses (pisgate only forgets it).
    NotOffered,
}

impl Revocation {
    pub fn as_str(self) -> &'static str {
        match self {
            Revocation::Revoked => "revoked",
            Revocation::NotOffered => "not_offered",
        }
    }
}

/// A shopper's token pair. `Debug` never shows the tokens.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    /// Single use where the bank rotates it (each refresh answers with a new one). `None`
    /// when the answer carries none (RFC 6749 §6 lets a bank keep the refresh token it
    /// had): the stored one stays the shopper's refresh token.
    pub refresh_token: Option<SecretString>,
    pub expires_in: Duration,
    pub token_type: String,
    /// The shopper's identity at the bank, when the answer carries one.
    pub shopper_id: Option<String>,
    /// When the bank issued this token, when its answer says so (the ID token's `iat`).
    /// It orders two answers for the same shopper by the bank's clock, not by arrival.
    pub issued_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One reason the bank gave for refusing a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankFailure {
    pub code: String,
    pub description: Option<String>,
    /// The field it concerns, when the bank says so.
    pub path: Option<String>,
}

/// Everything that can go wrong when talking to a bank.
///
/// Texts carry the bank's failure codes and descriptions, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    /// Our client id or secret was refused: a configuration fault, not a payment fault.
    #[error("the bank refused our client credentials ({code}): check the configuration")]
    BadCredentials { code: String },
    /// Our signature or digest was refused: a key or clock or configuration fault.
    #[error("the bank refused our request signature ({code})")]
    BadSignature { code: String },
    /// The bank refused our `X-Nordea-Originating-Date` (`error.date.*`): this host's clock
    /// is off, a configuration fault. Never a dead token, never a payment fault.
    #[error("the bank refused our request date ({code}): check this host's clock (NTP)")]
    ClockRejected { code: String },
    /// The bank refused the request's content.
    #[error("the bank refused the request: {}", codes(failures))]
    Validation { failures: Vec<BankFailure> },
    #[error("the bank is rate limiting us")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the bank does not know this resource")]
    NotFound,
    /// A 401 on a call made with the shopper's token (or a refresh token refused):
    /// that token is dead.
    #[error("the bank rejected the shopper's token")]
    TokenRejected,
    /// 408 or 5xx, connection failure or timeout: the call may be tried again later.
    ///
    /// `retry_safe` is true only when the bank provably did **not** process the request:
    /// it answered HTTP 503 with its own error body (a bare 503 may come from a gateway
    /// that passed the request on), or the TCP connection was never established (connection
    /// refused, DNS failure, connect timeout, failed TLS handshake: nothing was sent). A
    /// timeout or a dropped connection after the request was sent, and 500, 502, 504 and
    /// 408, leave it false: the bank may have acted on the request, so its outcome is
    /// unknown and must be found out, not assumed.
    #[error("the bank is unavailable: {detail}")]
    Unavailable { detail: String, retry_safe: bool },
    /// Anything else, including an answer we cannot read.
    #[error("unexpected answer from the bank{}: {detail}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Unexpected { status: Option<u16>, detail: String },
    /// pisgate refused to send the request before anything left this process: it could not
    /// be built, encoded or signed here, a header value cannot travel in HTTP, a link of the
    /// bank's points where our signed requests must not go, or our setup lacks what the bank
    /// requires (no `PSU-IP-Address` to send). Nothing reached the bank, so it provably
    /// processed nothing; the same request fails the same way until the cause is fixed, so
    /// it is no reason to retry. Never used once a request may have gone out.
    #[error("not sent to the bank: {detail}")]
    NotSent { detail: String },
}

fn codes(failures: &[BankFailure]) -> String {
    if failures.is_empty() {
        return "no reason given".to_owned();
    }
    failures
        .iter()
        .map(|f| match &f.description {
            Some(d) => format!("{}: {d}", f.code),
            None => f.code.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl BankError {
    /// A stable, low-cardinality name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            BankError::BadCredentials { .. } => "bad_credentials",
            BankError::BadSignature { .. } => "bad_signature",
            BankError::ClockRejected { .. } => "clock_rejected",
            BankError::Validation { .. } => "validation",
            BankError::RateLimited { .. } => "rate_limited",
            BankError::NotFound => "not_found",
            BankError::TokenRejected => "token_rejected",
            BankError::Unavailable { .. } => "unavailable",
            BankError::Unexpected { .. } => "unexpected",
            BankError::NotSent { .. } => "not_sent",
        }
    }

    /// A fault of our own setup (credentials, key, clock), not of the payment or the shopper:
    /// it needs an operator, and it says nothing about any token.
    pub fn is_configuration_fault(&self) -> bool {
        matches!(
            self,
            BankError::BadCredentials { .. }
                | BankError::BadSignature { .. }
                | BankError::ClockRejected { .. }
        )
    }

    /// The bank's failure code of a configuration fault.
    pub fn configuration_code(&self) -> Option<&str> {
        match self {
            BankError::BadCredentials { code }
            | BankError::BadSignature { code }
            | BankError::ClockRejected { code } => Some(code),
            _ => None,
        }
    }

    /// Whether the bank provably did not process the request, so that sending it again
    /// cannot act twice: true for [`BankError::RateLimited`] (a 429 is refused before any
    /// processing), for [`BankError::Unavailable`] with `retry_safe: true` (the bank's own
    /// 503, or no connection at all) and for [`BankError::NotSent`] (nothing left pisgate).
    /// False for everything else, including an `Unavailable` whose request may have reached
    /// the bank (timeout or drop after sending, 500/502/504/408): then the outcome is
    /// unknown. An explicit refusal (validation, credentials, signature) is also false here:
    /// the bank did process it, and said no.
    pub fn provably_not_processed(&self) -> bool {
        matches!(
            self,
            BankError::RateLimited { .. }
                | BankError::Unavailable {
                    retry_safe: true,
                    ..
                }
                | BankError::NotSent { .. }
        )
    }
}

/// The bank port. Implementations are cheap to share (`Arc<dyn Bank>`).
///
/// Reads (`status`, `details`, `funds`) may be retried inside the implementation; every other
/// call is made exactly once, because repeating it could act twice at the bank.
#[async_trait]
pub trait Bank: Send + Sync {
    /// What this bank's protocol needs and offers.
    fn traits(&self) -> BankTraits;

    /// The adapter's own refusals of `payment`, without any I/O: what its request body
    /// cannot carry (a field it would otherwise drop, a text too long for it, a product it
    /// does not offer). Called at creation, before anything is written, so that such a
    /// payment is a 422 naming the field instead of a payment that fails when the bank is
    /// called. The default refuses nothing.
    fn check(&self, _payment: &PaymentInitiation) -> Result<(), BankError> {
        Ok(())
    }

    /// The reference (id and links) this bank's protocol gives a payment of `id`, made by
    /// pisgate in `currency` (`periodic`: a standing order), for an operator who attaches the
    /// id the bank gave them to a payment whose initiation answer was lost. `None` where the
    /// protocol offers no such reconciliation (only banks that [`BankTraits::acts_without_hop`]
    /// leave such a payment open).
    fn reference_for(
        &self,
        _id: &BankPaymentId,
        _currency: &str,
        _periodic: bool,
    ) -> Option<BankRef> {
        None
    }

    /// Creates the payment at the bank and returns where the shopper signs it.
    async fn initiate(
        &self,
        payment: &PaymentInitiation,
        psu: Option<&PsuContext>,
    ) -> Result<Initiated, BankError>;

    /// The payment's status (no shopper token needed). `NotFound` before the shopper has
    /// opened the signing URL is normal.
    async fn status(
        &self,
        payment: &BankRef,
        psu: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError>;

    /// The payment as the bank holds it. Nordea needs the shopper's token (without one it
    /// answers [`BankError::TokenRejected`]); a Berlin Group bank needs none.
    async fn details(
        &self,
        payment: &BankRef,
        access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<PaymentDetails, BankError>;

    /// The payment's details with the bank's confirmation of availability of funds.
    async fn funds(
        &self,
        id: &BankPaymentId,
        access_token: &SecretString,
        psu: Option<&PsuContext>,
    ) -> Result<FundsAvailability, BankError>;

    /// Asks the bank to delete these payments; each id is answered separately. Nordea needs
    /// the shopper's token (without one it answers [`BankError::TokenRejected`]); a Berlin
    /// Group bank needs none.
    async fn cancel(
        &self,
        payments: &[BankRef],
        access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<CancelOutcome, BankError>;

    /// Exchanges the code from the signing redirect for the shopper's token pair. The bank
    /// revokes the shopper's older tokens when this succeeds.
    async fn exchange_code(
        &self,
        code: &SecretString,
        redirect_uri: &str,
    ) -> Result<TokenSet, BankError>;

    /// Exchanges the code of one payment's signing redirect (a bank whose
    /// [`BankTraits::return_carries_code`]). `state` is the payment's state as it came back
    /// (the adapter derives the OpenID Connect nonce it sent from it, and checks the ID
    /// token's nonce, issuer, audience, expiry and signature); `front_id_token` is the ID
    /// token the redirect itself carried, if any (hybrid flow), checked the same way and
    /// against the code (`c_hash`). By default this is [`Bank::exchange_code`]. Sent once
    /// (like the exchange it wraps).
    async fn exchange_code_for(
        &self,
        _payment: &BankRef,
        code: &SecretString,
        redirect_uri: &str,
        _state: &SecretString,
        _front_id_token: Option<&str>,
    ) -> Result<TokenSet, BankError> {
        self.exchange_code(code, redirect_uri).await
    }

    /// Trades a (single-use) refresh token for a new pair.
    async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, BankError>;

    /// Revokes a refresh token at the bank (and the access tokens issued with it), where the
    /// bank offers that; [`Revocation::NotOffered`] when it does not (nothing is sent).
    async fn revoke(&self, refresh_token: &SecretString) -> Result<Revocation, BankError>;

    /// Starts an authorisation of the payment (Berlin Group `startAuthorisation`): the
    /// answer says what the shopper does next. Made once: repeating it starts another.
    async fn start_authorisation(
        &self,
        _payment: &BankRef,
        _request: &AuthorisationRequest,
        _psu: Option<&PsuContext>,
    ) -> Result<Authorisation, BankError> {
        Err(not_offered(
            self.traits().protocol,
            "start an authorisation",
        ))
    }

    /// Finishes an OAuth SCA: exchanges the shopper's authorization code, with the
    /// authorisation's PKCE verifier and the same redirect URI, at the bank's token endpoint
    /// (which finalises the SCA at the bank). Sent once.
    async fn finish_oauth(
        &self,
        _payment: &BankRef,
        _code: &SecretString,
        _redirect_uri: &str,
        _verifier: &SecretString,
    ) -> Result<(), BankError> {
        Err(not_offered(self.traits().protocol, "finish an OAuth SCA"))
    }

    /// The SCA status of an authorisation, at the link the bank gave (`scaStatus`).
    async fn sca_status(
        &self,
        _link: &str,
        _psu: Option<&PsuContext>,
    ) -> Result<ScaReport, BankError> {
        Err(not_offered(self.traits().protocol, "read an SCA status"))
    }

    /// Creates the payment at the bank with the shopper's own token (a bank whose
    /// [`BankTraits::shopper_token_required`]). Made once, like [`Bank::initiate`].
    async fn initiate_with_token(
        &self,
        _payment: &PaymentInitiation,
        _access_token: &SecretString,
        _psu: Option<&PsuContext>,
    ) -> Result<Initiated, BankError> {
        Err(not_offered(
            self.traits().protocol,
            "initiate with the shopper's token",
        ))
    }

    /// The payment's status, read with the shopper's token where the bank needs one. By
    /// default the token is not needed and [`Bank::status`] answers.
    async fn status_with_token(
        &self,
        payment: &BankRef,
        _access_token: Option<&SecretString>,
        psu: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError> {
        self.status(payment, psu).await
    }

    /// Starts a BankID identification order for the shopper's token (SEB's decoupled
    /// authorization). Made once: repeating it starts another order (and BankID cancels
    /// both when one is already running for the shopper).
    async fn start_identification(
        &self,
        _psu: Option<&PsuContext>,
    ) -> Result<BankIdOrder, BankError> {
        Err(not_offered(
            self.traits().protocol,
            "start a BankID identification",
        ))
    }

    /// The progress of an identification order (a read: may be retried).
    async fn identification_progress(
        &self,
        _order_id: &str,
        _psu: Option<&PsuContext>,
    ) -> Result<BankIdProgress, BankError> {
        Err(not_offered(
            self.traits().protocol,
            "read a BankID identification",
        ))
    }

    /// The shopper's token pair for a completed identification order. The bank gives it
    /// once per order.
    async fn identification_tokens(&self, _order_id: &str) -> Result<TokenSet, BankError> {
        Err(not_offered(
            self.traits().protocol,
            "issue tokens for a BankID identification",
        ))
    }

    /// Starts a BankID signing order for the payment (SEB's `POST /signing-orders`), with
    /// the shopper's token. Made once: repeating it starts another.
    async fn start_signing(
        &self,
        _payment: &BankRef,
        _access_token: &SecretString,
        _psu: Option<&PsuContext>,
    ) -> Result<BankIdOrder, BankError> {
        Err(not_offered(
            self.traits().protocol,
            "start a BankID signing",
        ))
    }

    /// Submits an authorized payment for execution (OP's submit step, a bank whose
    /// [`BankTraits::submit_after_authorization`]), with the token from the payment's code
    /// exchange. `idempotency_key` is the attempt's key, persisted by pisgate before the call:
    /// the same key is sent again only to retry an attempt whose outcome is unknown. Returns
    /// the bank's status after the submission. Made once per call: never retried inside.
    async fn submit(
        &self,
        _payment: &BankRef,
        _access_token: &SecretString,
        _idempotency_key: &str,
        _psu: Option<&PsuContext>,
    ) -> Result<StatusReport, BankError> {
        Err(not_offered(self.traits().protocol, "submit a payment"))
    }

    /// Whether the bank's status (as read) asks pisgate to submit the payment: OP's
    /// `Authorized` (signed, not yet submitted) and `SubmissionPending` (a submission that
    /// failed in a way OP documents as retryable). Never for other banks.
    fn needs_submission(&self, _report: &StatusReport) -> bool {
        false
    }

    /// The progress of a signing order (a read: may be retried).
    async fn signing_progress(
        &self,
        _order_id: &str,
        _access_token: &SecretString,
        _psu: Option<&PsuContext>,
    ) -> Result<BankIdProgress, BankError> {
        Err(not_offered(self.traits().protocol, "read a BankID signing"))
    }
}

fn not_offered(protocol: &str, what: &str) -> BankError {
    BankError::Unexpected {
        status: None,
        detail: format!("the {protocol} protocol does not {what}"),
    }
}

/// The proxy environment variables reqwest's system proxy reads (hyper-util's
/// `Matcher::from_env`).
const PROXY_VARIABLES: [&str; 6] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
];

/// `builder` without reqwest's system proxy when no proxy variable is set (or all are
/// empty): then that proxy never intercepts anything, but reqwest still asks it about every
/// request (a `NO_PROXY` and host match per call). With any of them set, the builder is left
/// as it is, so deployments that send bank calls through `HTTPS_PROXY` keep doing so.
pub(crate) fn without_unset_proxies(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    if proxy_configured(|name| std::env::var_os(name)) {
        builder
    } else {
        builder.no_proxy()
    }
}

/// Whether any proxy variable holds a value, `var` reading the environment.
fn proxy_configured(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    PROXY_VARIABLES
        .iter()
        .any(|name| var(name).is_some_and(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bank_payment_ids_are_url_safe() {
        assert!(BankPaymentId::parse("5a3f726e-1bd9-4d7f-a3e9-7c9c7e24e092").is_some());
        for bad in ["", ".", "..", "a/b", "a?b", "a b", "a%2F", "ä"] {
            assert!(BankPaymentId::parse(bad).is_none(), "{bad:?}");
        }
        assert!(BankPaymentId::parse("x".repeat(129)).is_none());
    }

    #[test]
    fn account_debug_shows_only_the_last_four_characters() {
        let a = Account {
            kind: AccountType::Iban,
            value: "FI1450000120236228".into(),
        };
        let shown = format!("{a:?}");
        assert!(shown.contains("…6228"), "{shown}");
        assert!(!shown.contains("FI1450000120236228"), "{shown}");
        let short = Account {
            kind: AccountType::Bgnr,
            value: "12".into(),
        };
        assert_eq!(short.masked(), "…12");
    }

    #[test]
    fn token_sets_never_print_their_tokens() {
        let t = TokenSet {
            access_token: SecretString::from("access-secret-value"),
            refresh_token: Some(SecretString::from("refresh-secret-value")),
            expires_in: Duration::from_secs(3600),
            token_type: "Bearer".into(),
            shopper_id: None,
            issued_at: None,
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret-value"), "{shown}");
    }

    #[test]
    fn only_refusals_before_processing_are_provably_not_processed() {
        let unavailable = |retry_safe| BankError::Unavailable {
            detail: "x".into(),
            retry_safe,
        };
        assert!(BankError::RateLimited { retry_after: None }.provably_not_processed());
        assert!(unavailable(true).provably_not_processed());
        assert!(!unavailable(false).provably_not_processed());
        assert!(
            BankError::NotSent {
                detail: "no PSU-IP-Address".into()
            }
            .provably_not_processed()
        );
        for other in [
            BankError::NotFound,
            BankError::TokenRejected,
            BankError::BadCredentials { code: "c".into() },
            BankError::BadSignature { code: "c".into() },
            BankError::Validation { failures: vec![] },
            BankError::Unexpected {
                status: Some(201),
                detail: "d".into(),
            },
        ] {
            assert!(!other.provably_not_processed(), "{other:?}");
        }
    }

    #[test]
    fn the_system_proxy_is_kept_when_any_proxy_variable_is_set() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                set.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert!(!proxy_configured(env(&[])));
        assert!(!proxy_configured(env(&[
            ("HTTPS_PROXY", ""),
            ("NO_PROXY", "*")
        ])));
        for name in PROXY_VARIABLES {
            let set: &'static [(&'static str, &'static str)] =
                Box::leak(vec![(name, "http://proxy.internal:3128")].into_boxed_slice());
            assert!(proxy_configured(env(set)), "{name}");
        }
    }

    #[test]
    fn the_bank_port_is_object_safe() {
        fn takes(_: Option<std::sync::Arc<dyn Bank>>) {}
        takes(None);
    }
}
