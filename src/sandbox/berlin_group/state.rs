//! The simulator's memory: payments, their authorisations (payment and cancellation SCA),
//! seen `X-Request-ID`s and PKCE challenges, and the rules that move them. Every status is
//! computed from facts (when the SCA was finalised, whether it failed, whether a
//! cancellation was approved) and the simulator clock, so a test that moves the clock sees
//! the scenario's later steps without sleeping.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::scenarios::{ScaApproach, Scenario};

/// ISO 20022 transaction statuses the simulator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TxStatus {
    #[serde(rename = "RCVD")]
    Rcvd,
    #[serde(rename = "ACTC")]
    Actc,
    #[serde(rename = "ACSP")]
    Acsp,
    #[serde(rename = "ACSC")]
    Acsc,
    #[serde(rename = "PDNG")]
    Pdng,
    #[serde(rename = "RJCT")]
    Rjct,
    #[serde(rename = "CANC")]
    Canc,
}

impl TxStatus {
    pub fn code(self) -> &'static str {
        match self {
            TxStatus::Rcvd => "RCVD",
            TxStatus::Actc => "ACTC",
            TxStatus::Acsp => "ACSP",
            TxStatus::Acsc => "ACSC",
            TxStatus::Pdng => "PDNG",
            TxStatus::Rjct => "RJCT",
            TxStatus::Canc => "CANC",
        }
    }

    /// Final as the reference ASPSP treats them (ACSC, RJCT, CANC; ACCC is never answered).
    pub fn is_final(self) -> bool {
        matches!(self, TxStatus::Acsc | TxStatus::Rjct | TxStatus::Canc)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ScaStatus {
    Received,
    PsuIdentified,
    Started,
    Finalised,
    Failed,
}

impl ScaStatus {
    pub fn code(self) -> &'static str {
        match self {
            ScaStatus::Received => "received",
            ScaStatus::PsuIdentified => "psuIdentified",
            ScaStatus::Started => "started",
            ScaStatus::Finalised => "finalised",
            ScaStatus::Failed => "failed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, ScaStatus::Finalised | ScaStatus::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    Payment,
    Cancellation,
}

/// The SCA approach of a payment (answered in `ASPSP-SCA-Approach`; OAuth is "subsumed by
/// REDIRECT" there, as the spec says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Approach {
    Redirect,
    Decoupled,
    OAuth,
}

impl Approach {
    pub fn header(self) -> &'static str {
        match self {
            Approach::Decoupled => "DECOUPLED",
            Approach::Redirect | Approach::OAuth => "REDIRECT",
        }
    }

    pub fn from_scenario(s: ScaApproach, decoupled_preferred: bool) -> Approach {
        match s {
            ScaApproach::OAuth => Approach::OAuth,
            ScaApproach::Decoupled => Approach::Decoupled,
            ScaApproach::Any if decoupled_preferred => Approach::Decoupled,
            ScaApproach::Any => Approach::Redirect,
        }
    }
}

/// An issued OAuth authorization code.
#[derive(Debug, Clone, Serialize)]
pub struct OAuthCode {
    #[serde(skip)]
    pub code: String,
    pub redirect_uri: String,
    pub issued_at: DateTime<Utc>,
    pub used: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Authorisation {
    pub id: String,
    pub payment_id: String,
    pub kind: AuthKind,
    pub approach: Approach,
    pub sca_status: ScaStatus,
    pub created_at: DateTime<Utc>,
    /// When the decoupled SCA started (the timeout counts from here).
    pub started_at: Option<DateTime<Utc>>,
    pub psu_id: Option<String>,
    /// OAuth: the PKCE S256 challenge of the authorize request.
    #[serde(skip)]
    pub code_challenge: Option<String>,
    /// OAuth: the authorize request's `redirect_uri` and `state`.
    pub authorize_request: Option<(String, String)>,
    pub oauth_code: Option<OAuthCode>,
    /// OAuth: the shopper approved on the page; finalised by the token exchange.
    pub approved: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Payment {
    pub id: String,
    pub service: String,
    pub product: String,
    /// The initiation body as the TPP sent it (details echo it).
    pub body: Value,
    pub created_at: DateTime<Utc>,
    pub scenario: &'static str,
    #[serde(skip)]
    pub scenario_ref: &'static Scenario,
    pub approach: Approach,
    pub explicit: bool,
    pub redirect_uri: Option<String>,
    pub nok_redirect_uri: Option<String>,
    pub psu_id: Option<String>,
    /// SHA-256 of the signing certificate that created it ("unsigned" without one).
    pub owner: String,
    pub authorisations: Vec<String>,
    pub cancellation_authorisations: Vec<String>,
    /// The shopper opened the SCA (or OAuth) page.
    pub opened: bool,
    pub signed_at: Option<DateTime<Utc>>,
    pub sca_failed: bool,
    pub cancelled: bool,
    /// A DELETE answered 202: a cancellation authorisation may be started.
    pub cancel_pending: bool,
}

impl Payment {
    pub fn status(&self, now: DateTime<Utc>, step: Duration) -> TxStatus {
        if self.cancelled {
            return TxStatus::Canc;
        }
        if self.sca_failed {
            return TxStatus::Rjct;
        }
        match self.signed_at {
            None => TxStatus::Rcvd,
            Some(at) => {
                let elapsed = (now - at).to_std().unwrap_or_default().as_secs_f64();
                let step = step.as_secs_f64();
                let steps = if step > 0.0 { elapsed / step } else { f64::MAX };
                self.scenario_ref.status_after(steps)
            }
        }
    }

    /// Hidden from the API (404) until the shopper opens the page, in that scenario.
    pub fn hidden(&self) -> bool {
        self.scenario_ref.unknown_until_opened && !self.opened
    }
}

#[derive(Debug, Default)]
pub struct Bank {
    pub payments: HashMap<String, Payment>,
    pub auths: HashMap<String, Authorisation>,
    pub seen_request_ids: HashSet<String>,
    /// With request id reuse allowed: the answer given to each X-Request-ID.
    pub replays: HashMap<String, Replay>,
    pub used_challenges: HashSet<String>,
}

/// A successful answer kept for an idempotent replay of the same request.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Method, path, body hash and TPP of the first request.
    pub fingerprint: String,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
    pub schema: Option<&'static str>,
}

/// Why the shopper's decision cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideError {
    Unknown,
    /// Already decided, timed out, or the scenario never lets it be approved.
    Conflict(String),
}

/// Where the shopper's browser goes after a decision (redirect approach only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub location: Option<String>,
}

impl Bank {
    /// Applies the decoupled timeout: a decoupled SCA not decided within `timeout` of its
    /// start fails, and so does the payment.
    pub fn refresh(&mut self, now: DateTime<Utc>, timeout: Duration) {
        let timeout = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let mut failed = Vec::new();
        for auth in self.auths.values_mut() {
            if auth.approach != Approach::Decoupled || auth.sca_status.is_final() {
                continue;
            }
            let Some(started) = auth.started_at else {
                continue;
            };
            if now - started >= timeout {
                auth.sca_status = ScaStatus::Failed;
                failed.push((auth.payment_id.clone(), auth.kind));
            }
        }
        for (pid, kind) in failed {
            if let Some(p) = self.payments.get_mut(&pid) {
                match kind {
                    AuthKind::Payment if p.signed_at.is_none() && !p.cancelled => {
                        p.sca_failed = true
                    }
                    AuthKind::Cancellation => p.cancel_pending = false,
                    AuthKind::Payment => {}
                }
            }
        }
    }

    /// The shopper opened the SCA page of an authorisation.
    pub fn open(&mut self, aid: &str, now: DateTime<Utc>) -> Option<()> {
        let auth = self.auths.get_mut(aid)?;
        if auth.sca_status == ScaStatus::Received || auth.sca_status == ScaStatus::PsuIdentified {
            auth.sca_status = ScaStatus::Started;
            auth.started_at.get_or_insert(now);
        }
        let pid = auth.payment_id.clone();
        if let Some(p) = self.payments.get_mut(&pid) {
            p.opened = true;
        }
        Some(())
    }

    /// The shopper approves or refuses. `from_machine` is the admin path (the decoupled
    /// never-approved scenario refuses its approval there and on the page alike).
    pub fn decide(
        &mut self,
        aid: &str,
        approve: bool,
        now: DateTime<Utc>,
        step: Duration,
    ) -> Result<Decided, DecideError> {
        let auth = self.auths.get(aid).ok_or(DecideError::Unknown)?.clone();
        let payment = self
            .payments
            .get(&auth.payment_id)
            .ok_or(DecideError::Unknown)?
            .clone();
        if auth.sca_status.is_final() {
            return Err(DecideError::Conflict(format!(
                "the SCA is already {}",
                auth.sca_status.code()
            )));
        }
        if auth.approved {
            return Err(DecideError::Conflict(
                "the SCA is already approved; the TPP must exchange the code".into(),
            ));
        }
        if auth.approach == Approach::Decoupled && auth.psu_id.is_none() {
            return Err(DecideError::Conflict(
                "the PSU is not identified yet (no PSU-ID)".into(),
            ));
        }
        if approve
            && auth.approach == Approach::Decoupled
            && payment.scenario_ref.decoupled_never_approved
        {
            return Err(DecideError::Conflict(
                "in this scenario the shopper never approves".into(),
            ));
        }
        if payment.status(now, step).is_final() {
            return Err(DecideError::Conflict("the payment is final".into()));
        }
        let location = match (auth.approach, approve) {
            (Approach::Redirect, true) => payment.redirect_uri.clone(),
            (Approach::Redirect, false) => payment
                .nok_redirect_uri
                .clone()
                .or_else(|| payment.redirect_uri.clone()),
            _ => None,
        };
        let a = self.auths.get_mut(aid).ok_or(DecideError::Unknown)?;
        a.started_at.get_or_insert(now);
        if approve && a.approach == Approach::OAuth && a.kind == AuthKind::Payment {
            a.approved = true;
            a.sca_status = ScaStatus::Started;
        } else if approve {
            a.sca_status = ScaStatus::Finalised;
        } else {
            a.sca_status = ScaStatus::Failed;
        }
        let kind = a.kind;
        let oauth = a.approach == Approach::OAuth;
        let p = self
            .payments
            .get_mut(&auth.payment_id)
            .ok_or(DecideError::Unknown)?;
        p.opened = true;
        match (kind, approve) {
            (AuthKind::Payment, true) if !oauth => p.signed_at = Some(now),
            (AuthKind::Payment, true) => {}
            (AuthKind::Payment, false) => p.sca_failed = true,
            (AuthKind::Cancellation, true) => {
                p.cancelled = true;
                p.cancel_pending = false;
            }
            (AuthKind::Cancellation, false) => p.cancel_pending = false,
        }
        Ok(Decided { location })
    }

    /// OAuth: the token exchange finalises the approved SCA.
    pub fn finalise_oauth(&mut self, aid: &str, now: DateTime<Utc>) {
        if let Some(a) = self.auths.get_mut(aid) {
            a.sca_status = ScaStatus::Finalised;
            let pid = a.payment_id.clone();
            if let Some(p) = self.payments.get_mut(&pid) {
                p.signed_at.get_or_insert(now);
            }
        }
    }
}

/// A fresh random id (hex, 128 bits): payment and authorisation ids are not guessable.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
