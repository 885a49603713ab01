//! The simulator's memory: BankID orders (identification for the shopper's tokens, and
//! signing of payments), the shopper's tokens, and payments, with the rules that move them.
//! A payment's status is computed from facts (when it was signed, cancelled or forced) and
//! the simulator clock, so a test that moves the clock sees later steps without sleeping.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::SebSandboxConfig;
use super::bankid;
use super::scenarios::{self, AppBehaviour, Scenario};

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
            TxStatus::Rjct => "RJCT",
            TxStatus::Canc => "CANC",
        }
    }

    pub fn parse(s: &str) -> Option<TxStatus> {
        Some(match s.to_ascii_uppercase().as_str() {
            "RCVD" => TxStatus::Rcvd,
            "ACTC" => TxStatus::Actc,
            "ACSP" => TxStatus::Acsp,
            "ACSC" => TxStatus::Acsc,
            "RJCT" => TxStatus::Rjct,
            "CANC" => TxStatus::Canc,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Identify,
    Sign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Pending,
    Complete,
    Failed,
}

/// A BankID order.
#[derive(Debug, Clone, Serialize)]
pub struct Order {
    /// `auth_req_id` (identify) or `authorisationId` (sign).
    pub id: String,
    pub purpose: Purpose,
    /// Sign: the shopper whose token started it. Identify: who approved it.
    pub shopper: Option<String>,
    pub autostart_token: String,
    pub qr_start_token: String,
    #[serde(skip)]
    pub qr_start_secret: String,
    pub started_at: DateTime<Utc>,
    pub state: OrderState,
    pub hint_code: &'static str,
    pub opened: bool,
    pub ended_at: Option<DateTime<Utc>>,
    /// Sign: the payments it signs.
    pub payment_ids: Vec<String>,
    /// Sign: `bankIdQr` or `bankIdSameDevice`.
    pub authentication_method_id: Option<String>,
    /// Identify: the requested scope and start mode.
    pub scope: Option<String>,
    pub start_mode: Option<String>,
    /// Identify: the tokens were taken (`POST /tokens` works once).
    pub tokens_taken: bool,
    /// Sign: the order answered ALREADY_IN_PROGRESS when started.
    pub already_in_progress: bool,
    #[serde(skip)]
    pub app: AppBehaviour,
}

impl Order {
    fn new(id: String, purpose: Purpose, now: DateTime<Utc>) -> Order {
        Order {
            id,
            purpose,
            shopper: None,
            autostart_token: new_id(),
            qr_start_token: new_id(),
            qr_start_secret: new_id(),
            started_at: now,
            state: OrderState::Pending,
            hint_code: "outstandingTransaction",
            opened: false,
            ended_at: None,
            payment_ids: Vec::new(),
            authentication_method_id: None,
            scope: None,
            start_mode: None,
            tokens_taken: false,
            already_in_progress: false,
            app: AppBehaviour::Normal,
        }
    }

    /// Whole seconds since the order started (the QR code's time).
    pub fn qr_secs(&self, now: DateTime<Utc>) -> i64 {
        (now - self.started_at).num_seconds().max(0)
    }

    /// The QR data now (`None` once the order ended).
    pub fn qr_data(&self, now: DateTime<Utc>) -> Option<String> {
        (self.state == OrderState::Pending).then(|| {
            bankid::qr_data(
                &self.qr_start_token,
                &self.qr_start_secret,
                self.qr_secs(now),
            )
        })
    }

    fn fail(&mut self, hint: &'static str, now: DateTime<Utc>) {
        self.state = OrderState::Failed;
        self.hint_code = hint;
        self.ended_at = Some(now);
    }

    pub fn view(&self, now: DateTime<Utc>) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["qr_data"] = json!(self.qr_data(now));
        v
    }
}

/// A payment.
#[derive(Debug, Clone, Serialize)]
pub struct Payment {
    pub id: String,
    pub product: String,
    /// `private` or `corporate`.
    pub api: &'static str,
    pub shopper: String,
    /// The initiation body as the TPP sent it.
    pub body: Value,
    pub currency: String,
    /// The amount string as sent (e.g. `345.50`).
    pub amount: String,
    pub created_at: DateTime<Utc>,
    pub scenario: &'static str,
    #[serde(skip)]
    pub scenario_ref: &'static Scenario,
    pub signed_at: Option<DateTime<Utc>>,
    pub cancelled: bool,
    pub forced: Option<TxStatus>,
    /// 66.04: the first signing start already answered ALREADY_IN_PROGRESS.
    pub already_in_progress_done: bool,
}

impl Payment {
    pub fn status(&self, now: DateTime<Utc>, config: &SebSandboxConfig) -> TxStatus {
        if let Some(s) = self.forced {
            return s;
        }
        if self.cancelled {
            return TxStatus::Canc;
        }
        match self.signed_at {
            Some(at) => {
                let elapsed = (now - at).to_std().unwrap_or_default().as_secs_f64();
                let step = config.status_step.as_secs_f64();
                let steps = if step > 0.0 { elapsed / step } else { f64::MAX };
                self.scenario_ref.status_after(steps)
            }
            None => {
                let age = (now - self.created_at).to_std().unwrap_or_default();
                if age >= config.signing_timeout {
                    TxStatus::Rjct
                } else {
                    TxStatus::Rcvd
                }
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AccessToken {
    pub shopper: String,
    pub scope: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefreshToken {
    pub shopper: String,
    pub scope: String,
    pub used: bool,
}

/// Why the test app (or its admin path) cannot do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    #[error("no BankID order has this autostart token")]
    Unknown,
    #[error("the order has ended ({0})")]
    Ended(&'static str),
    #[error("scenario {0}: the BankID app does not open this order")]
    WillNotOpen(&'static str),
    #[error("not this order's current QR code")]
    WrongQr,
    #[error("the QR code is older than 30 seconds")]
    StaleQr,
    #[error("unknown hint code {0:?}")]
    UnknownHint(String),
}

/// BankID's collect hint codes (and SEB's `sebTimeout`): the code itself as a static
/// string, and whether the order is still pending with it.
pub fn hint(code: &str) -> Option<(&'static str, bool)> {
    const PENDING: &[&str] = &["outstandingTransaction", "noClient", "started", "userSign"];
    const FAILED: &[&str] = &[
        "userCancel",
        "expiredTransaction",
        "certificateErr",
        "startFailed",
        "cancelled",
        "sebTimeout",
    ];
    PENDING
        .iter()
        .map(|c| (*c, true))
        .chain(FAILED.iter().map(|c| (*c, false)))
        .find(|(c, _)| *c == code)
}

#[derive(Debug, Default)]
pub struct Bank {
    pub orders: HashMap<String, Order>,
    /// autostart token → order id
    pub by_autostart: HashMap<String, String>,
    pub payments: HashMap<String, Payment>,
    pub access: HashMap<String, AccessToken>,
    pub refresh: HashMap<String, RefreshToken>,
}

impl Bank {
    /// Applies the timeouts: a pending signing order whose payment ran out of its time to
    /// sign (`signing_timeout`) fails `sebTimeout`; a pending order older than
    /// `order_timeout` fails (`startFailed` for scenario 66.06, else `expiredTransaction`).
    pub fn tick(&mut self, now: DateTime<Utc>, config: &SebSandboxConfig) {
        let timeout =
            chrono::Duration::from_std(config.order_timeout).unwrap_or(chrono::Duration::MAX);
        let signing_timeout =
            chrono::Duration::from_std(config.signing_timeout).unwrap_or(chrono::Duration::MAX);
        let payments = &self.payments;
        for o in self.orders.values_mut() {
            if o.state != OrderState::Pending {
                continue;
            }
            let payment_timed_out = o
                .payment_ids
                .iter()
                .filter_map(|id| payments.get(id))
                .any(|p| p.signed_at.is_none() && now - p.created_at >= signing_timeout);
            if payment_timed_out {
                o.fail("sebTimeout", now);
            } else if now - o.started_at >= timeout {
                let hint = if o.app == AppBehaviour::StartFailed {
                    "startFailed"
                } else {
                    "expiredTransaction"
                };
                let at = o.started_at + timeout;
                o.fail(hint, at);
            }
        }
    }

    pub fn start_identification(
        &mut self,
        now: DateTime<Utc>,
        scope: String,
        start_mode: String,
    ) -> String {
        let mut o = Order::new(new_id(), Purpose::Identify, now);
        o.scope = Some(scope);
        o.start_mode = Some(start_mode);
        let id = o.id.clone();
        self.by_autostart
            .insert(o.autostart_token.clone(), id.clone());
        self.orders.insert(id.clone(), o);
        id
    }

    /// A signing order for `shopper` over `payment_ids` (already checked: the shopper's,
    /// RCVD). Answers the order and whether it failed ALREADY_IN_PROGRESS.
    pub fn start_signing(
        &mut self,
        now: DateTime<Utc>,
        shopper: &str,
        payment_ids: Vec<String>,
        method: String,
    ) -> String {
        let mut o = Order::new(new_id(), Purpose::Sign, now);
        o.shopper = Some(shopper.to_owned());
        o.authentication_method_id = Some(method);
        o.app = payment_ids
            .iter()
            .filter_map(|id| self.payments.get(id))
            .map(|p| p.scenario_ref.app)
            .find(|a| *a != AppBehaviour::Normal)
            .unwrap_or(AppBehaviour::Normal);
        // 66.04: the first start finds "another order" running.
        let mut in_progress = false;
        for id in &payment_ids {
            if let Some(p) = self.payments.get_mut(id) {
                if p.scenario_ref.already_in_progress_first && !p.already_in_progress_done {
                    p.already_in_progress_done = true;
                    in_progress = true;
                }
            }
        }
        // BankID: a second order for the same person cancels both.
        for other in self.orders.values_mut() {
            if other.purpose == Purpose::Sign
                && other.state == OrderState::Pending
                && other.shopper.as_deref() == Some(shopper)
            {
                other.fail("cancelled", now);
                in_progress = true;
            }
        }
        o.payment_ids = payment_ids;
        if in_progress {
            o.already_in_progress = true;
            o.fail("cancelled", now);
        }
        let id = o.id.clone();
        self.by_autostart
            .insert(o.autostart_token.clone(), id.clone());
        self.orders.insert(id.clone(), o);
        id
    }

    fn order_by_autostart_mut(&mut self, token: &str) -> Result<&mut Order, AppError> {
        let id = self.by_autostart.get(token).ok_or(AppError::Unknown)?;
        self.orders.get_mut(id).ok_or(AppError::Unknown)
    }

    pub fn order_view_by_autostart(&self, token: &str, now: DateTime<Utc>) -> Value {
        self.by_autostart
            .get(token)
            .and_then(|id| self.orders.get(id))
            .map(|o| o.view(now))
            .unwrap_or(Value::Null)
    }

    /// The shopper opens the order in the app: `userSign` (66.02: refused, `userCancel`).
    pub fn open(&mut self, token: &str, now: DateTime<Utc>) -> Result<(), AppError> {
        let o = self.order_by_autostart_mut(token)?;
        if o.state != OrderState::Pending {
            return Err(AppError::Ended(o.hint_code));
        }
        match o.app {
            AppBehaviour::NeverOpened => return Err(AppError::WillNotOpen("66.03")),
            AppBehaviour::StartFailed => return Err(AppError::WillNotOpen("66.06")),
            AppBehaviour::RefusedOnOpen => {
                o.opened = true;
                o.fail("userCancel", now);
            }
            AppBehaviour::Normal => {
                o.opened = true;
                o.hint_code = "userSign";
            }
        }
        Ok(())
    }

    /// The QR code scanned: must be the order's current one (this second or the one before,
    /// what a screen may still show) and at most 30 s old; then the order opens.
    pub fn scan(&mut self, qr: &str, now: DateTime<Utc>) -> Result<String, AppError> {
        let (qst, secs, code) = bankid::parse_qr(qr).ok_or(AppError::WrongQr)?;
        let o = self
            .orders
            .values()
            .find(|o| o.qr_start_token == qst)
            .ok_or(AppError::WrongQr)?;
        if o.state != OrderState::Pending {
            return Err(AppError::Ended(o.hint_code));
        }
        if bankid::qr_auth_code(&o.qr_start_secret, secs) != code {
            return Err(AppError::WrongQr);
        }
        if secs > bankid::QR_MAX_AGE_SECS {
            return Err(AppError::StaleQr);
        }
        let current = o.qr_secs(now);
        if secs > current || current - secs > 1 {
            return Err(AppError::WrongQr);
        }
        let token = o.autostart_token.clone();
        self.open(&token, now)?;
        Ok(token)
    }

    /// Approve: identify completes (as `shopper`, a fresh one when `None`); sign completes
    /// and its payments are signed.
    pub fn approve(
        &mut self,
        token: &str,
        shopper: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let o = self.order_by_autostart_mut(token)?;
        if o.state != OrderState::Pending {
            return Err(AppError::Ended(o.hint_code));
        }
        if !o.opened {
            let t = o.autostart_token.clone();
            self.open(&t, now)?;
        }
        let o = self.order_by_autostart_mut(token)?;
        if o.state != OrderState::Pending {
            return Err(AppError::Ended(o.hint_code));
        }
        o.state = OrderState::Complete;
        o.ended_at = Some(now);
        match o.purpose {
            Purpose::Identify => {
                o.shopper = Some(
                    shopper
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_else(|| format!("shopper-{}", &new_id()[..8])),
                );
            }
            Purpose::Sign => {
                let ids = o.payment_ids.clone();
                for id in ids {
                    if let Some(p) = self.payments.get_mut(&id) {
                        p.signed_at = Some(now);
                    }
                }
            }
        }
        Ok(())
    }

    /// Puts a pending order on a hint code (admin, to show every hint): a pending one
    /// (`outstandingTransaction`, `noClient`, `started`, `userSign`) keeps it pending, a
    /// failing one (`userCancel`, `expiredTransaction`, `certificateErr`, `startFailed`,
    /// `cancelled`, `sebTimeout`) ends it.
    pub fn set_hint(
        &mut self,
        token: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let (code, pending) = hint(code).ok_or_else(|| AppError::UnknownHint(code.to_owned()))?;
        let o = self.order_by_autostart_mut(token)?;
        if o.state != OrderState::Pending {
            return Err(AppError::Ended(o.hint_code));
        }
        if pending {
            o.hint_code = code;
        } else {
            o.fail(code, now);
        }
        Ok(())
    }

    /// Reject in the app: the order fails `userCancel`.
    pub fn reject(&mut self, token: &str, now: DateTime<Utc>) -> Result<(), AppError> {
        let o = self.order_by_autostart_mut(token)?;
        if o.state != OrderState::Pending {
            return Err(AppError::Ended(o.hint_code));
        }
        o.opened = true;
        o.fail("userCancel", now);
        Ok(())
    }

    pub fn orders_view(&self, now: DateTime<Utc>) -> Vec<Value> {
        let mut all: Vec<&Order> = self.orders.values().collect();
        all.sort_by_key(|o| o.started_at);
        all.into_iter().map(|o| o.view(now)).collect()
    }

    pub fn payment_view(
        &self,
        p: &Payment,
        now: DateTime<Utc>,
        config: &SebSandboxConfig,
    ) -> Value {
        let mut v = serde_json::to_value(p).unwrap_or_default();
        v["transactionStatus"] = json!(p.status(now, config).code());
        v
    }

    pub fn payments_view(&self, now: DateTime<Utc>, config: &SebSandboxConfig) -> Vec<Value> {
        let mut all: Vec<&Payment> = self.payments.values().collect();
        all.sort_by_key(|p| p.created_at);
        all.into_iter()
            .map(|p| self.payment_view(p, now, config))
            .collect()
    }

    /// Issues a token pair for `shopper`.
    pub fn issue_tokens(
        &mut self,
        shopper: &str,
        scope: &str,
        now: DateTime<Utc>,
        config: &SebSandboxConfig,
    ) -> Value {
        let access = random_token();
        let refresh = random_token();
        let lifetime = chrono::Duration::from_std(config.access_token_lifetime)
            .unwrap_or(chrono::Duration::MAX);
        self.access.insert(
            access.clone(),
            AccessToken {
                shopper: shopper.to_owned(),
                scope: scope.to_owned(),
                expires_at: now + lifetime,
            },
        );
        self.refresh.insert(
            refresh.clone(),
            RefreshToken {
                shopper: shopper.to_owned(),
                scope: scope.to_owned(),
                used: false,
            },
        );
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": config.access_token_lifetime.as_secs(),
            "token_type": "Bearer",
            "scope": scope,
        })
    }

    /// The scenario a new payment plays.
    pub fn scenario_for(currency: &str, amount: &str) -> &'static Scenario {
        scenarios::pick(currency, amount)
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
