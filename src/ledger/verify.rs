//! `pisgate ledger verify`: recomputes every chain and cross-checks it against its payment's
//! head and status and against the last checkpoint.
//!
//! It also checks what the chain binds of its payment row ([`crate::ledger::binding`]): the
//! facts digest of the `created` event against the row's merchant, amount, currency,
//! country, bank, return URL, shopper id and request (creditor, debtor); the bank payment id
//! of the recorded initiation, the last bank status, the shopper key and the last recorded
//! late-signing horizon against the row; and
//! every webhook event's payload MAC and every stored idempotency answer's. Payments written
//! before binding have no facts digest: they are counted (`unbound_payments`), not failed,
//! and the rest of their checks still run (chain, head, status, bank id, bank status).
//! Webhook events and idempotency answers have no such exemption: those written before
//! their binding were sealed at that upgrade (`ledger::seal`), so one without a MAC fails.
//!
//! Batched (keyset pagination over `(payment_id, seq)`, no long transaction), so it runs
//! beside a live `serve`: each batch reads events together with their payment's head, and a
//! payment is judged on the head read with its last event, so concurrent appends never look
//! like tampering. The checkpoint's heads are held in memory (one entry per payment).
//! It reads only; it never repairs anything.

use super::Db;
use crate::ledger::binding::{self, WebhookEventFacts};
use crate::ledger::checkpoints::{self, CheckpointProblem};
use crate::ledger::events::{HASH_V1, HASH_V2, RawEvent, list_raw};
use crate::ledger::keys::LedgerKeys;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use uuid::Uuid;

const VERIFY_BATCH: i64 = 1000;

/// Why a payment's ledger is not what was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakReason {
    /// The event's seq is not the next one: events before it are missing.
    Gap { expected_seq: i32 },
    /// `prev_hash` is not the hash of the event before it.
    PrevHashMismatch,
    /// The stored hash is not the hash of the stored content: the event was edited, or
    /// rewritten without the ledger key.
    HashMismatch,
    /// The event is signed with a key id the ring does not have.
    UnknownKey { key_id: String },
    /// A `hash_version` this build does not know.
    UnknownHashVersion { version: i16 },
    /// An unkeyed (version 1) event after a keyed one: a rewrite without the key.
    Downgraded,
    /// The payment's head (`payments.ledger_seq`/`ledger_head`) is not the chain's last event.
    HeadMismatch { head_seq: i32, last_seq: i32 },
    /// The payment has no event at all (whatever its head says: every payment is written
    /// with its `created` event).
    EventsMissing { head_seq: i32 },
    /// The chain's first event is not the payment's `created` event: wiped and restarted.
    NotStartedByCreation,
    /// The payment's status is not the one its ledger ends in.
    StatusMismatch {
        payment_status: String,
        ledger_status: Option<String>,
    },
    /// Events whose payment row is gone.
    PaymentMissing,
    /// The event the last checkpoint recorded as this payment's head is gone or different.
    CheckpointMismatch { checkpoint: i64 },
    /// A payment in the last checkpoint is gone, with all its events.
    GoneSinceCheckpoint { checkpoint: i64 },
    /// The payment row's immutable facts (merchant, amount, currency, country, creditor,
    /// debtor, return URL, shopper id, bank) are not the ones its `created` event bound.
    FactsMismatch,
    /// The payment row's bank payment id is not the one its ledger recorded.
    BankPaymentIdMismatch {
        payment: Option<String>,
        ledger: Option<String>,
    },
    /// The payment row's bank status is not the last one its ledger recorded.
    BankStatusMismatch {
        payment: Option<String>,
        ledger: Option<String>,
    },
    /// The payment row's shopper key (whose bank token it uses) is not the one its ledger
    /// recorded at the code exchange.
    ShopperKeyMismatch,
    /// A deferred payment's row names another bank, or another shopper-given debtor
    /// account, than the shopper's choice its ledger recorded (`bank_chosen`,
    /// `debtor_account_given`).
    ShopperChoiceMismatch { what: String },
    /// The bank's signing page the hop sends shoppers to (`authorization_url`) is not the
    /// one its ledger recorded (`authorization_url_sha256` of `initiated` or
    /// `authorisation_started`).
    AuthorizationUrlMismatch,
    /// The payment row says nobody reached the bank's signing page (`hop_opened_at` empty)
    /// while its ledger recorded that the link went out (`authorization_opened`, an
    /// authorisation or a BankID signing order started, or a bank that may act without the
    /// hop): cleared in SQL, it would let pisgate end the payment without the bank's word.
    HopOpenedCleared,
    /// A standing order's count of executions on the row is not the highest occurrence its
    /// ledger recorded paid (`occurrence_paid`): set back, it would notify occurrences again;
    /// set forward, it would hide the next ones.
    OccurrencesMismatch { payment: i32, ledger: i32 },
    /// The payment row's late-signing horizon (`sign_horizon_at`) is not the last one its
    /// ledger recorded (`created`, `initiation_attempt`, `bank_payment_attached`): pushed out,
    /// it keeps a payment nobody could sign open and hides a frozen poll schedule from the
    /// alert; pulled in, it ends one early.
    HorizonMismatch {
        payment: Option<String>,
        ledger: String,
    },
    /// The payment row's cancel request (`cancel_requested_at`, `cancel_requested_by`) is not
    /// the last one its ledger recorded (`cancel_requested` and its `by`): cleared, pisgate
    /// would no longer stop a payment its merchant cancelled, and the merchant would hear
    /// `paid`; set, it would end one nobody cancelled as cancelled; moved from the shopper to
    /// the merchant, it would let pisgate delete a signed payment at the bank (which checks
    /// the ledger first, and refuses).
    CancelMismatch {
        payment: Option<String>,
        ledger: Option<String>,
    },
    /// The payment row's bank links (what pisgate follows for the shopper and for the
    /// bank's word) fail their ledger MAC: edited, added, or moved from another payment.
    BankLinksUnbound { why: String },
    /// The payment's submission attempts (`payment_submissions`) are not the ones its ledger
    /// records as started (`submission_started`): rows deleted or added in SQL. Each attempt
    /// writes both in one transaction; the submit step holds such a payment.
    SubmissionsMismatch { rows: i64, ledger: i64 },
    /// An event signed with a retired key after the rotation: after an event of the chain
    /// signed with a newer key, or past the head the newest checkpoint (signed with a newer
    /// key) recorded. Only whoever holds the retired key writes such an event.
    RetiredKeyAfterRotation { key_id: String },
    /// An open payment (awaiting authorization or authorized) without its poll schedule
    /// (`payment_polls`, written with the payment and removed only once it is final):
    /// deleted, so no replica would ever ask the bank about it again and the merchant would
    /// never hear how it ended.
    ScheduleMissing { status: String },
}

/// A cancel request as `ledger verify` names it.
fn cancel_text(by: Option<&str>) -> String {
    match by {
        None => "nobody asked to cancel".to_owned(),
        Some(by) => format!("the {by} asked to cancel"),
    }
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakReason::Gap { expected_seq } => {
                write!(f, "gap: expected seq {expected_seq}, so events are missing")
            }
            BreakReason::PrevHashMismatch => {
                f.write_str("prev_hash is not the hash of the previous event (reordered or relinked)")
            }
            BreakReason::HashMismatch => f.write_str(
                "hash does not match the event's content (edited, or rewritten without the ledger key)",
            ),
            BreakReason::UnknownKey { key_id } => write!(
                f,
                "signed with ledger key {key_id:?}, which is not configured (PISGATE__LEDGER__PREVIOUS_KEYS)"
            ),
            BreakReason::UnknownHashVersion { version } => {
                write!(f, "unknown hash version {version}")
            }
            BreakReason::Downgraded => f.write_str(
                "an unkeyed (version 1) event after keyed ones (rewritten without the ledger key)",
            ),
            BreakReason::HeadMismatch { head_seq, last_seq } if head_seq > last_seq => write!(
                f,
                "missing: the payment's head is seq {head_seq} but its last event is seq {last_seq} (last events deleted)"
            ),
            BreakReason::HeadMismatch { head_seq, last_seq } => write!(
                f,
                "the payment's head (seq {head_seq}) is not its last event (seq {last_seq}) or has another hash"
            ),
            BreakReason::EventsMissing { head_seq } => write!(
                f,
                "missing: the payment's head is seq {head_seq} but it has no events (all events deleted)"
            ),
            BreakReason::NotStartedByCreation => f.write_str(
                "the chain does not start with the payment's created event (wiped and started again)",
            ),
            BreakReason::StatusMismatch {
                payment_status,
                ledger_status,
            } => write!(
                f,
                "the payment is {payment_status} but its ledger ends in {}",
                ledger_status.as_deref().unwrap_or("no status")
            ),
            BreakReason::PaymentMissing => f.write_str("the payment row is gone (deleted)"),
            BreakReason::CheckpointMismatch { checkpoint } => write!(
                f,
                "not the event checkpoint {checkpoint} recorded as the head (history rewritten or cut since the checkpoint)"
            ),
            BreakReason::GoneSinceCheckpoint { checkpoint } => write!(
                f,
                "missing: in checkpoint {checkpoint}, but the payment and all its events are gone (deleted)"
            ),
            BreakReason::ShopperChoiceMismatch { what } => write!(
                f,
                "the payment row's {what} is not the shopper's choice its ledger recorded (row rewritten)"
            ),
            BreakReason::FactsMismatch => f.write_str(
                "the payment row's facts (merchant, amount, currency, country, creditor, debtor, return URL, shopper id or bank) are not the ones its created event bound (row rewritten)",
            ),
            BreakReason::BankPaymentIdMismatch { payment, ledger } => write!(
                f,
                "the payment row's bank payment id is {} but its ledger recorded {} (row rewritten)",
                payment.as_deref().unwrap_or("none"),
                ledger.as_deref().unwrap_or("none")
            ),
            BreakReason::BankStatusMismatch { payment, ledger } => write!(
                f,
                "the payment row's bank status is {} but its ledger's last is {} (row rewritten)",
                payment.as_deref().unwrap_or("none"),
                ledger.as_deref().unwrap_or("none")
            ),
            BreakReason::ShopperKeyMismatch => f.write_str(
                "the payment row's shopper key is not the one its ledger recorded at the code exchange (row rewritten)",
            ),
            BreakReason::AuthorizationUrlMismatch => f.write_str(
                "the payment row's bank signing page (authorization_url) is not the one its ledger recorded (row rewritten: the hop would send shoppers elsewhere)",
            ),
            BreakReason::OccurrencesMismatch { payment, ledger } => write!(
                f,
                "the payment row counts {payment} executions of the standing order, its ledger recorded {ledger} (row rewritten)"
            ),
            BreakReason::HorizonMismatch { payment, ledger } => write!(
                f,
                "the payment row's late-signing horizon is {}, its ledger recorded {ledger} (row rewritten)",
                payment.as_deref().unwrap_or("empty")
            ),
            BreakReason::CancelMismatch { payment, ledger } => write!(
                f,
                "the payment row says {}, its ledger says {} (row rewritten)",
                cancel_text(payment.as_deref()),
                cancel_text(ledger.as_deref())
            ),
            BreakReason::HopOpenedCleared => f.write_str(
                "the payment row says nobody reached the bank's signing page, its ledger says the link went out (row rewritten: the payment could be ended without the bank's word)",
            ),
            BreakReason::BankLinksUnbound { why } => write!(
                f,
                "the payment row's bank links are not followed: {why} (row rewritten)"
            ),
            BreakReason::RetiredKeyAfterRotation { key_id } => write!(
                f,
                "signed with ledger key {key_id:?}, retired (PISGATE__LEDGER__RETIRED_KEY_IDS), after the rotation: forged with that key"
            ),
            BreakReason::SubmissionsMismatch { rows, ledger } => write!(
                f,
                "{rows} submission attempt row(s) against {ledger} `submission_started` event(s) in its ledger (payment_submissions rows deleted or added)"
            ),
            BreakReason::ScheduleMissing { status } => write!(
                f,
                "the payment is {status} and its poll schedule is gone (payment_polls row deleted): nothing would follow it to its end"
            ),
        }
    }
}

/// The first problem of one payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenEvent {
    pub payment_id: Uuid,
    pub seq: i32,
    pub reason: BreakReason,
}

impl fmt::Display for BrokenEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "payment {} event seq {}: {}",
            self.payment_id, self.seq, self.reason
        )
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub payments_checked: u64,
    pub events_checked: u64,
    /// Payments with a problem.
    pub broken_payments: u64,
    /// The first problem in (payment_id, seq) order.
    pub first_broken: Option<BrokenEvent>,
    /// The last checkpoint, which the ledger was checked to extend.
    pub checkpoint: Option<i64>,
    /// A problem with the checkpoint itself (or with what only the checkpoint can see).
    pub checkpoint_problem: Option<CheckpointProblem>,
    /// Payments whose `created` event binds no facts (created before facts were bound): their
    /// chains, heads, statuses and bank ids are checked, their amount, merchant and creditor
    /// cannot be.
    pub unbound_payments: u64,
    pub webhook_events_checked: u64,
    /// Webhook events whose MAC does not match their stored row.
    pub broken_webhook_events: u64,
    /// The first of those, in id order.
    pub first_broken_webhook_event: Option<BrokenWebhookEvent>,
    /// Answers idempotency keys replay (the keys' stored 201s), checked against their MACs.
    pub idempotency_answers_checked: u64,
    /// Answers whose MAC does not hold (edited, or the MAC removed).
    pub broken_idempotency_answers: u64,
    /// The first of those, by merchant and key.
    pub first_broken_idempotency_answer: Option<String>,
    /// Webhook endpoints (deleted ones included), their URLs checked against their MACs.
    pub webhook_endpoints_checked: u64,
    /// Endpoints whose URL fails its MAC (pointed elsewhere, or the MAC removed).
    pub broken_webhook_endpoints: u64,
    /// The first of those, in id order.
    pub first_broken_webhook_endpoint: Option<String>,
    /// API keys that are not revoked (expired ones included), checked against their MACs.
    pub api_keys_checked: u64,
    /// Keys whose row fails a MAC (added, moved or given back its life in SQL, revoked then
    /// un-revoked, or a MAC removed).
    pub broken_api_keys: u64,
    /// The first of those, by key id.
    pub first_broken_api_key: Option<String>,
    /// Merchants' payee policies and registered payees, checked against their MACs.
    pub payees_checked: u64,
    /// Policies and payees whose MAC does not hold (a payee added, or a policy set back to
    /// `open`, in SQL; or a MAC removed): creation does not trust them.
    pub broken_payees: u64,
    /// The first of those.
    pub first_broken_payee: Option<String>,
    /// Console operators, checked against their MACs.
    pub operators_checked: u64,
    /// Operators whose MAC does not hold (inserted, re-enabled or given another password
    /// hash in SQL; or a MAC removed): they cannot sign in, nor be enabled.
    pub broken_operators: u64,
    /// The first of those, by id.
    pub first_broken_operator: Option<String>,
}

/// A webhook event whose stored row is not what was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenWebhookEvent {
    pub id: Uuid,
    pub reason: String,
}

impl fmt::Display for BrokenWebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "webhook event {}: {}", self.id, self.reason)
    }
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.first_broken.is_none()
            && self.checkpoint_problem.is_none()
            && self.first_broken_webhook_event.is_none()
            && self.first_broken_idempotency_answer.is_none()
            && self.first_broken_webhook_endpoint.is_none()
            && self.first_broken_api_key.is_none()
            && self.first_broken_payee.is_none()
            && self.first_broken_operator.is_none()
    }

    fn record(&mut self, broken: BrokenEvent) {
        self.broken_payments += 1;
        let earlier = self
            .first_broken
            .as_ref()
            .is_none_or(|f| (broken.payment_id, broken.seq) < (f.payment_id, f.seq));
        if earlier {
            tracing::warn!(payment_id = %broken.payment_id, seq = broken.seq, reason = %broken.reason, "ledger problem");
            self.first_broken = Some(broken);
        }
    }
}

/// A payment row as read with its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PaymentHead {
    pub(crate) seq: i32,
    pub(crate) head: Option<Vec<u8>>,
    pub(crate) status: String,
    /// The columns the ledger binds (`None` only in unit tests of the chain walk).
    pub(crate) row: Option<Box<BoundColumns>>,
}

/// The payment row's columns that its ledger binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BoundColumns {
    pub(crate) merchant_id: Uuid,
    pub(crate) amount_minor: i64,
    pub(crate) currency: String,
    pub(crate) country: String,
    pub(crate) bank: String,
    pub(crate) return_url: String,
    pub(crate) psu_id: Option<String>,
    pub(crate) psu_key: Option<String>,
    pub(crate) request: serde_json::Value,
    pub(crate) bank_payment_id: Option<String>,
    pub(crate) bank_status: Option<String>,
    pub(crate) shopper_debtor_account: Option<String>,
    /// Copies of `request.reference` and `request.metadata` kept for search and for what
    /// merchants and webhooks are shown: never changed after creation.
    pub(crate) merchant_reference: Option<String>,
    pub(crate) metadata: serde_json::Value,
    pub(crate) authorization_url: Option<String>,
    pub(crate) hop_opened_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) recurring_executions: i32,
    pub(crate) sign_horizon_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Who asked to cancel (`merchant` or `shopper`; a request recorded before requests
    /// said whose is the merchant's), `None` when nobody did.
    pub(crate) cancel_requested_by: Option<String>,
    pub(crate) bank_links: serde_json::Value,
    pub(crate) bank_links_mac: Option<Vec<u8>>,
    pub(crate) bank_links_mac_key_id: Option<String>,
}

impl BoundColumns {
    /// Whether `merchant_reference` and `metadata` are what the request says (the request
    /// is bound by the facts digest; these two are copies of it).
    fn copies_match_request(&self) -> bool {
        let reference = self.request.get("reference").and_then(|r| r.as_str());
        let metadata = match self.request.get("metadata") {
            Some(m @ serde_json::Value::Object(_)) => m.clone(),
            _ => serde_json::Value::Object(Default::default()),
        };
        self.merchant_reference.as_deref() == reference && self.metadata == metadata
    }

    /// The facts digest with `bank` as the bank its `created` event bound.
    fn facts_digest(&self, bank: &str) -> String {
        binding::facts_digest(&binding::PaymentFacts {
            merchant_id: self.merchant_id,
            amount_minor: self.amount_minor,
            currency: &self.currency,
            country: &self.country,
            bank,
            return_url: &self.return_url,
            psu_id: self.psu_id.as_deref(),
            request: &self.request,
        })
    }
}

/// The chain being walked.
struct Chain {
    payment_id: Uuid,
    expected_seq: i32,
    prev_hash: Option<Vec<u8>>,
    broken: bool,
    keyed: bool,
    /// An event signed with a key that is not retired was seen: none with a retired key may
    /// follow it.
    unretired_seen: bool,
    last_status: Option<String>,
    /// What the chain bound: the `created` event's facts digest, the bank payment id of the
    /// recorded initiation, the last bank status, the shopper key's digest.
    facts: Option<String>,
    bank_payment_id: Option<String>,
    bank_status: Option<String>,
    psu_key_digest: Option<String>,
    /// A deferred payment's choices: the bank (`bank_chosen`) and the digest of the IBAN the
    /// shopper gave (`debtor_account_given`).
    chosen_bank: Option<String>,
    debtor_digest: Option<String>,
    /// The digest of the bank's signing page the ledger last recorded ("" for none); `None`
    /// for a chain whose events never recorded one (written before it was bound).
    authorization_url_digest: Option<String>,
    /// Whether an event recorded that the bank's link went out (see
    /// [`crate::ledger::payments::link_may_be_out`]).
    link_out: bool,
    /// The highest occurrence of a standing order recorded paid.
    occurrences: i32,
    /// The last late-signing horizon recorded ([`binding::HORIZON_FIELD`]); `None` for a
    /// chain whose events never recorded one (written before it was bound).
    horizon: Option<String>,
    /// Who the last `cancel_requested` event says asked to cancel, `None` for nobody.
    cancel_by: Option<String>,
    /// Whether that event is unkeyed (version 1): written before the keyed chain, so before
    /// the row's cancel columns.
    cancel_unkeyed: bool,
    payment: Option<PaymentHead>,
    /// The checkpoint's (seq, head) for this payment, and whether the walk passed it.
    checkpointed: Option<(i32, Vec<u8>)>,
    checkpoint_seen: bool,
}

/// Walks events in (payment_id, seq) order and checks each chain.
pub(crate) struct Verifier<'k> {
    keys: &'k LedgerKeys,
    report: VerifyReport,
    checkpoint: Option<i64>,
    checkpoint_heads: HashMap<Uuid, (i32, Vec<u8>)>,
    /// The newest checkpoint verified (so it is signed with a key that is not retired): an
    /// event signed with a retired key past the heads it recorded was written after the
    /// rotation, by whoever holds that key.
    checkpoint_trusted: bool,
    v1_events: i64,
    chain: Option<Chain>,
}

impl Chain {
    /// Takes what a verified event binds (see [`crate::ledger::binding`]).
    fn bind(&mut self, row: &RawEvent) {
        let text = |k: &str| {
            row.detail
                .get(k)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        match row.kind.as_str() {
            "created" if row.seq == 1 => self.facts = text("facts"),
            // The answer recorded on the row (an orphan's never is): its id and status.
            "initiated" => {
                self.bank_payment_id = text("bank_payment_id");
                self.bank_status = row.bank_status.clone();
            }
            "initiation_orphan" => {}
            "bank_chosen" => self.chosen_bank = text("bank"),
            "debtor_account_given" => self.debtor_digest = text("debtor_account_sha256"),
            _ => {
                if row.bank_status.is_some() {
                    self.bank_status = row.bank_status.clone();
                }
            }
        }
        if let Some(d) = text("psu_key_sha256") {
            self.psu_key_digest = Some(d);
        }
        if row.kind == "occurrence_paid"
            && let Some(n) = row.detail.get("occurrence").and_then(|n| n.as_i64())
        {
            self.occurrences = self.occurrences.max(i32::try_from(n).unwrap_or(i32::MAX));
        }
        self.link_out |= binding::event_says_link_went_out(&row.kind, &row.detail);
        if let Some(h) = binding::recorded_horizon(&row.kind, &row.detail) {
            self.horizon = Some(h.to_owned());
        }
        if row.kind == "cancel_requested" {
            self.cancel_by = Some(binding::cancel_requested_by(&row.detail).to_owned());
            self.cancel_unkeyed = row.hash_version == HASH_V1;
        }
        if matches!(row.kind.as_str(), "initiated" | "authorisation_started")
            && let Some(d) = row.detail.get("authorization_url_sha256")
        {
            self.authorization_url_digest = Some(d.as_str().unwrap_or_default().to_owned());
        }
    }

    /// The first binding the payment row breaks, if any.
    fn binding_problem(&self, row: &BoundColumns, keys: &LedgerKeys) -> Option<BreakReason> {
        // A bank the shopper chose later: `created` bound none ("").
        let created_bank = match &self.chosen_bank {
            Some(_) => crate::ledger::payments::NO_BANK_YET,
            None => row.bank.as_str(),
        };
        if self
            .facts
            .as_ref()
            .is_some_and(|f| *f != row.facts_digest(created_bank))
        {
            return Some(BreakReason::FactsMismatch);
        }
        // The reference and metadata merchants and webhooks are shown are copies of the bound
        // request's: an order's reference moved to another payment would ship that order.
        if self.facts.is_some() && !row.copies_match_request() {
            return Some(BreakReason::FactsMismatch);
        }
        if self.chosen_bank.as_ref().is_some_and(|b| *b != row.bank) {
            return Some(BreakReason::ShopperChoiceMismatch {
                what: "bank".into(),
            });
        }
        if self.debtor_digest
            != row
                .shopper_debtor_account
                .as_deref()
                .map(binding::debtor_account_digest)
        {
            return Some(BreakReason::ShopperChoiceMismatch {
                what: "debtor account".into(),
            });
        }
        // A chain from before binding (no facts) is held to what it recorded: a bank id if it
        // has one; its bank statuses may have been written by older code, so not those.
        let bound = self.facts.is_some();
        if (bound || self.bank_payment_id.is_some()) && self.bank_payment_id != row.bank_payment_id
        {
            return Some(BreakReason::BankPaymentIdMismatch {
                payment: row.bank_payment_id.clone(),
                ledger: self.bank_payment_id.clone(),
            });
        }
        if bound && self.bank_status != row.bank_status {
            return Some(BreakReason::BankStatusMismatch {
                payment: row.bank_status.clone(),
                ledger: self.bank_status.clone(),
            });
        }
        // A chain from before shopper keys were bound says nothing about its row's key.
        let bound_key = bound || self.psu_key_digest.is_some();
        if bound_key && self.psu_key_digest != row.psu_key.as_deref().map(binding::psu_key_digest) {
            return Some(BreakReason::ShopperKeyMismatch);
        }
        if self.authorization_url_digest.as_ref().is_some_and(|d| {
            *d != binding::authorization_url_digest(row.authorization_url.as_deref())
        }) {
            return Some(BreakReason::AuthorizationUrlMismatch);
        }
        if self.link_out && row.hop_opened_at.is_none() {
            return Some(BreakReason::HopOpenedCleared);
        }
        if bound && self.occurrences != row.recurring_executions {
            return Some(BreakReason::OccurrencesMismatch {
                payment: row.recurring_executions,
                ledger: self.occurrences,
            });
        }
        if let Some(ledger) = &self.horizon {
            let payment = row.sign_horizon_at.map(binding::horizon_text);
            if payment.as_ref() != Some(ledger) {
                return Some(BreakReason::HorizonMismatch {
                    payment,
                    ledger: ledger.clone(),
                });
            }
        }
        // Every request is written with its event in one transaction (`request_cancel`), and
        // nothing clears one. Before the columns existed (migration 20261128000001, just
        // before the keyed chain), a merchant's cancel wrote its event alone: an unkeyed
        // (version 1) cancel event may stand without the row's request.
        let from_before_the_columns = self.cancel_unkeyed
            && self.cancel_by.as_deref() == Some("merchant")
            && row.cancel_requested_by.is_none();
        if self.cancel_by != row.cancel_requested_by && !from_before_the_columns {
            return Some(BreakReason::CancelMismatch {
                payment: row.cancel_requested_by.clone(),
                ledger: self.cancel_by.clone(),
            });
        }
        if let Some(why) = binding::bank_links_problem(
            Some(keys),
            self.payment_id,
            row.bank_payment_id.as_deref(),
            &row.bank_links,
            row.bank_links_mac.as_deref(),
            row.bank_links_mac_key_id.as_deref(),
        ) {
            return Some(BreakReason::BankLinksUnbound { why: why.into() });
        }
        None
    }
}

impl<'k> Verifier<'k> {
    pub(crate) fn new(keys: &'k LedgerKeys) -> Verifier<'k> {
        Verifier {
            keys,
            report: VerifyReport::default(),
            checkpoint: None,
            checkpoint_heads: HashMap::new(),
            checkpoint_trusted: false,
            v1_events: 0,
            chain: None,
        }
    }

    fn broken(&mut self, payment_id: Uuid, seq: i32, reason: BreakReason) {
        self.report.record(BrokenEvent {
            payment_id,
            seq,
            reason,
        });
    }

    /// Checks one event; `payment` is its payment row as read in the same statement.
    pub(crate) fn check(&mut self, row: &RawEvent, payment: Option<PaymentHead>) {
        self.report.events_checked += 1;
        if row.hash_version == HASH_V1 {
            self.v1_events += 1;
        }
        if self.chain.as_ref().map(|c| c.payment_id) != Some(row.payment_id) {
            self.finish_chain();
            self.report.payments_checked += 1;
            self.chain = Some(Chain {
                payment_id: row.payment_id,
                expected_seq: 1,
                prev_hash: None,
                broken: false,
                keyed: false,
                unretired_seen: false,
                last_status: None,
                facts: None,
                bank_payment_id: None,
                bank_status: None,
                psu_key_digest: None,
                chosen_bank: None,
                debtor_digest: None,
                authorization_url_digest: None,
                link_out: false,
                occurrences: 0,
                horizon: None,
                cancel_by: None,
                cancel_unkeyed: false,
                payment: None,
                checkpointed: self.checkpoint_heads.remove(&row.payment_id),
                checkpoint_seen: false,
            });
        }
        let Some(chain) = self.chain.as_mut() else {
            return;
        };
        chain.payment = payment;
        if chain.broken {
            return;
        }
        let e = row.canonical();
        let stored_prev = row.prev_hash.as_deref();
        let reason = if e.seq != chain.expected_seq {
            Some(BreakReason::Gap {
                expected_seq: chain.expected_seq,
            })
        } else if e.seq == 1 && row.kind != "created" {
            // Every payment's chain is written with its `created` event in the statement
            // that creates it; a chain starting otherwise was wiped and started again (by
            // pisgate's next append, signed with the key), e.g. under a rewritten row.
            Some(BreakReason::NotStartedByCreation)
        } else if stored_prev != chain.prev_hash.as_deref() {
            Some(BreakReason::PrevHashMismatch)
        } else {
            match (row.hash_version, row.key_id.as_deref()) {
                (HASH_V1, _) if chain.keyed => Some(BreakReason::Downgraded),
                (HASH_V1, None) => (e.hash_v1(stored_prev)[..] != row.hash[..])
                    .then_some(BreakReason::HashMismatch),
                (HASH_V2, Some(key_id))
                    if self.keys.is_retired(key_id)
                        && (chain.unretired_seen
                            || (self.checkpoint_trusted
                                && chain
                                    .checkpointed
                                    .as_ref()
                                    .is_none_or(|(seq, _)| row.seq > *seq))) =>
                {
                    Some(BreakReason::RetiredKeyAfterRotation {
                        key_id: key_id.to_owned(),
                    })
                }
                (HASH_V2, Some(key_id)) => match e.hash_v2(self.keys, key_id, stored_prev) {
                    None => Some(BreakReason::UnknownKey {
                        key_id: key_id.to_owned(),
                    }),
                    Some(h) => (h[..] != row.hash[..]).then_some(BreakReason::HashMismatch),
                },
                (version, _) => Some(BreakReason::UnknownHashVersion { version }),
            }
        };
        let reason = reason.or_else(|| match &chain.checkpointed {
            Some((seq, head)) if *seq == row.seq => {
                chain.checkpoint_seen = true;
                (head[..] != row.hash[..]).then_some(BreakReason::CheckpointMismatch {
                    checkpoint: self.checkpoint.unwrap_or_default(),
                })
            }
            _ => None,
        });
        match reason {
            None => {
                chain.expected_seq += 1;
                chain.prev_hash = Some(row.hash.clone());
                chain.keyed |= row.hash_version == HASH_V2;
                chain.unretired_seen |= row.hash_version == HASH_V2
                    && row
                        .key_id
                        .as_deref()
                        .is_some_and(|k| !self.keys.is_retired(k));
                if let Some(s) = &row.new_status {
                    chain.last_status = Some(s.clone());
                }
                chain.bind(row);
            }
            Some(reason) => {
                chain.broken = true;
                self.broken(row.payment_id, row.seq, reason);
            }
        }
    }

    /// The end of a chain: its payment's head and status, and the checkpoint's head.
    fn finish_chain(&mut self) {
        let Some(chain) = self.chain.take() else {
            return;
        };
        if chain.broken {
            return;
        }
        let id = chain.payment_id;
        let last_seq = chain.expected_seq - 1;
        let Some(payment) = chain.payment.clone() else {
            self.broken(id, last_seq, BreakReason::PaymentMissing);
            return;
        };
        if chain.facts.is_none() && payment.row.is_some() {
            self.report.unbound_payments += 1;
        }
        if payment.seq != last_seq || payment.head != chain.prev_hash {
            let seq = payment.seq.max(last_seq);
            self.broken(
                id,
                seq,
                BreakReason::HeadMismatch {
                    head_seq: payment.seq,
                    last_seq,
                },
            );
        } else if chain
            .last_status
            .as_ref()
            .is_some_and(|ledger| *ledger != payment.status)
        {
            self.broken(
                id,
                last_seq,
                BreakReason::StatusMismatch {
                    payment_status: payment.status,
                    ledger_status: chain.last_status.clone(),
                },
            );
        } else if let Some(reason) = payment
            .row
            .as_ref()
            .and_then(|r| chain.binding_problem(r, self.keys))
        {
            self.broken(id, last_seq, reason);
        } else if let Some((seq, _)) = chain.checkpointed.filter(|_| !chain.checkpoint_seen) {
            self.broken(
                id,
                seq,
                BreakReason::CheckpointMismatch {
                    checkpoint: self.checkpoint.unwrap_or_default(),
                },
            );
        }
    }

    pub(crate) fn into_report(mut self) -> VerifyReport {
        self.finish_chain();
        self.report
    }
}

/// Verifies the whole ledger: every chain, every payment's head and status, and that the
/// ledger extends the last checkpoint (which must be signed by a key of `keys`).
#[tracing::instrument(skip_all, fields(payments, events, broken, checkpoint))]
pub async fn verify_all(pool: &Db, keys: &LedgerKeys) -> Result<VerifyReport, sqlx::Error> {
    let mut verifier = Verifier::new(keys);
    let last = checkpoints::load_last(pool, keys).await?;
    let mut signed_v1 = None;
    if let Some(last) = last {
        verifier.checkpoint = Some(last.id);
        verifier.report.checkpoint = Some(last.id);
        match last.problem {
            Some(problem) => verifier.report.checkpoint_problem = Some(problem),
            None => {
                verifier.checkpoint_heads = last.heads;
                verifier.checkpoint_trusted = true;
                signed_v1 = Some(last.v1_events);
            }
        }
    }

    let mut cursor = (Uuid::nil(), 0i32);
    loop {
        let rows = sqlx::query!(
            r#"SELECT e.payment_id, e.seq, e.kind, e.old_status, e.new_status, e.bank_status,
                      e.detail, pisgate_readable_time(e.created_at) AS "created_at!",
                      e.prev_hash, e.hash, e.hash_version, e.key_id,
                      p.ledger_seq AS "head_seq?", p.ledger_head AS "head?",
                      p.status AS "payment_status?",
                      p.merchant_id AS "merchant_id?", p.amount_minor AS "amount_minor?",
                      p.currency AS "currency?", p.country AS "country?", p.bank AS "bank?",
                      p.return_url AS "return_url?", p.psu_id AS "psu_id?",
                      p.psu_key AS "psu_key?", p.request AS "request?",
                      p.bank_payment_id AS "payment_bank_payment_id?",
                      p.bank_status AS "payment_bank_status?",
                      p.shopper_debtor_account AS "shopper_debtor_account?",
                      p.merchant_reference AS "merchant_reference?",
                      p.metadata AS "metadata?",
                      p.authorization_url AS "authorization_url?",
                      pisgate_readable_time(p.hop_opened_at) AS "hop_opened_at?",
                      p.recurring_executions AS "recurring_executions?",
                      pisgate_readable_time(p.sign_horizon_at) AS "sign_horizon_at?",
                      CASE WHEN p.cancel_requested_at IS NOT NULL
                           THEN COALESCE(p.cancel_requested_by, 'merchant') END
                        AS "cancel_requested_by?",
                      p.bank_links AS "bank_links?", p.bank_links_mac AS "bank_links_mac?",
                      p.bank_links_mac_key_id AS "bank_links_mac_key_id?"
               FROM payment_events e
               LEFT JOIN payments p ON p.id = e.payment_id
               WHERE (e.payment_id, e.seq) > ($1, $2)
               ORDER BY e.payment_id, e.seq
               LIMIT $3"#,
            cursor.0,
            cursor.1,
            VERIFY_BATCH,
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        for r in rows {
            cursor = (r.payment_id, r.seq);
            let payment = match (r.head_seq, r.payment_status) {
                (Some(seq), Some(status)) => Some(PaymentHead {
                    seq,
                    head: r.head,
                    status,
                    row: Some(Box::new(BoundColumns {
                        merchant_id: r.merchant_id.unwrap_or_default(),
                        amount_minor: r.amount_minor.unwrap_or_default(),
                        currency: r.currency.unwrap_or_default(),
                        country: r.country.unwrap_or_default(),
                        bank: r.bank.unwrap_or_default(),
                        return_url: r.return_url.unwrap_or_default(),
                        psu_id: r.psu_id,
                        psu_key: r.psu_key,
                        request: r.request.unwrap_or_default(),
                        bank_payment_id: r.payment_bank_payment_id,
                        bank_status: r.payment_bank_status,
                        shopper_debtor_account: r.shopper_debtor_account,
                        merchant_reference: r.merchant_reference,
                        metadata: r.metadata.unwrap_or_default(),
                        authorization_url: r.authorization_url,
                        hop_opened_at: r.hop_opened_at,
                        recurring_executions: r.recurring_executions.unwrap_or_default(),
                        sign_horizon_at: r.sign_horizon_at,
                        cancel_requested_by: r.cancel_requested_by,
                        bank_links: r.bank_links.unwrap_or_default(),
                        bank_links_mac: r.bank_links_mac,
                        bank_links_mac_key_id: r.bank_links_mac_key_id,
                    })),
                }),
                _ => None,
            };
            let raw = RawEvent {
                payment_id: r.payment_id,
                seq: r.seq,
                kind: r.kind,
                old_status: r.old_status,
                new_status: r.new_status,
                bank_status: r.bank_status,
                detail: r.detail,
                created_at: r.created_at,
                prev_hash: r.prev_hash,
                hash: r.hash,
                hash_version: r.hash_version,
                key_id: r.key_id,
            };
            verifier.check(&raw, payment);
        }
        if (n as i64) < VERIFY_BATCH {
            break;
        }
    }
    verifier.finish_chain();

    // Payments with no event at all: every payment is written with its `created` event, so
    // none is legitimate, whatever its head says (an insider's row with `ledger_seq = 0`).
    // And open payments whose poll schedule is gone: the schedule is written with the
    // payment and removed only once it is final (after its reads past the end), so an open
    // payment without one was edited out of the pollers' reach.
    let mut cursor = Uuid::nil();
    loop {
        let rows = sqlx::query!(
            r#"SELECT p.id, p.ledger_seq, p.status::text AS "status!",
                      NOT EXISTS (SELECT 1 FROM payment_events e WHERE e.payment_id = p.id)
                          AS "no_events!"
               FROM payments p
               WHERE p.id > $1
                 AND (NOT EXISTS (SELECT 1 FROM payment_events e WHERE e.payment_id = p.id)
                      OR (p.status IN ('awaiting_authorization', 'authorized')
                          AND NOT EXISTS (SELECT 1 FROM payment_polls s
                                          WHERE s.payment_id = p.id)))
               ORDER BY p.id
               LIMIT $2"#,
            cursor,
            VERIFY_BATCH,
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        for r in rows {
            cursor = r.id;
            let reason = if r.no_events {
                verifier.checkpoint_heads.remove(&r.id);
                BreakReason::EventsMissing {
                    head_seq: r.ledger_seq,
                }
            } else {
                BreakReason::ScheduleMissing { status: r.status }
            };
            verifier.broken(r.id, r.ledger_seq, reason);
        }
        if (n as i64) < VERIFY_BATCH {
            break;
        }
    }

    // Submission attempts: one row and one `submission_started` event each, written together.
    // Only payments where the two counts differ come back (normally none).
    let mismatched = sqlx::query!(
        r#"WITH s AS (SELECT payment_id, count(*) AS n FROM payment_submissions
                      GROUP BY payment_id),
                e AS (SELECT payment_id, count(*) AS n FROM payment_events
                      WHERE kind = 'submission_started' GROUP BY payment_id)
           SELECT COALESCE(s.payment_id, e.payment_id) AS "id!",
                  COALESCE(s.n, 0) AS "rows!", COALESCE(e.n, 0) AS "ledger!",
                  COALESCE(p.ledger_seq, 0) AS "seq!"
           FROM s FULL JOIN e ON e.payment_id = s.payment_id
           LEFT JOIN payments p ON p.id = COALESCE(s.payment_id, e.payment_id)
           WHERE COALESCE(s.n, 0) <> COALESCE(e.n, 0)
           ORDER BY 1"#
    )
    .fetch_all(pool)
    .await?;
    for r in mismatched {
        verifier.broken(
            r.id,
            r.seq,
            BreakReason::SubmissionsMismatch {
                rows: r.rows,
                ledger: r.ledger,
            },
        );
    }

    // What the checkpoint holds and the ledger no longer has at all.
    let checkpoint = verifier.checkpoint.unwrap_or_default();
    let mut gone: Vec<(Uuid, i32)> = verifier
        .checkpoint_heads
        .drain()
        .map(|(id, (seq, _))| (id, seq))
        .collect();
    gone.sort_unstable();
    for (id, seq) in gone {
        verifier.broken(id, seq, BreakReason::GoneSinceCheckpoint { checkpoint });
    }
    if let Some(signed) = signed_v1 {
        if signed != verifier.v1_events && verifier.report.checkpoint_problem.is_none() {
            verifier.report.checkpoint_problem = Some(CheckpointProblem::UnkeyedEventsChanged {
                checkpoint,
                signed,
                found: verifier.v1_events,
            });
        }
    }

    verify_webhook_events(pool, keys, &mut verifier.report).await?;
    verify_idempotency_answers(pool, keys, &mut verifier.report).await?;
    verify_webhook_endpoints(pool, keys, &mut verifier.report).await?;
    verify_api_keys(pool, keys, &mut verifier.report).await?;
    verify_payees(pool, keys, &mut verifier.report).await?;
    verify_operators(pool, keys, &mut verifier.report).await?;

    let report = verifier.into_report();
    let span = tracing::Span::current();
    span.record("payments", report.payments_checked);
    span.record("events", report.events_checked);
    span.record("broken", report.broken_payments);
    if let Some(c) = report.checkpoint {
        span.record("checkpoint", c);
    }
    Ok(report)
}

/// Checks every webhook event's payload MAC ([`binding::webhook_mac`]), in id order.
async fn verify_webhook_events(
    pool: &Db,
    keys: &LedgerKeys,
    report: &mut VerifyReport,
) -> Result<(), sqlx::Error> {
    // Every event has its MAC: written with it, or sealed at the upgrade that bound them
    // (`ledger::seal`). None is a stripped MAC (a forged event, whatever its date) or a row
    // that upgrade could not seal.
    let mut cursor = Uuid::nil();
    loop {
        let rows = sqlx::query!(
            r#"SELECT id, merchant_id, payment_id, event_type, payload, created_at,
                      payload_mac, mac_key_id
               FROM webhook_events WHERE id > $1 ORDER BY id LIMIT $2"#,
            cursor,
            VERIFY_BATCH,
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        for r in rows {
            cursor = r.id;
            report.webhook_events_checked += 1;
            let (mac, key_id) = match (r.payload_mac, r.mac_key_id) {
                (Some(mac), Some(key_id)) => (mac, key_id),
                _ => {
                    let reason = "it has no ledger MAC (removed, or never sealed)".to_owned();
                    report.broken_webhook_events += 1;
                    if report.first_broken_webhook_event.is_none() {
                        tracing::warn!(event_id = %r.id, %reason, "webhook event problem");
                        report.first_broken_webhook_event =
                            Some(BrokenWebhookEvent { id: r.id, reason });
                    }
                    continue;
                }
            };
            let facts = WebhookEventFacts {
                id: r.id,
                merchant_id: r.merchant_id,
                payment_id: r.payment_id,
                event_type: &r.event_type,
                created_at: r.created_at,
                payload: &r.payload,
            };
            let reason = match binding::webhook_mac(keys, &key_id, &facts) {
                None if keys.is_retired(&key_id) => Some(format!(
                    "signed with ledger key {key_id:?}, which is retired (PISGATE__LEDGER__RETIRED_KEY_IDS; `pisgate ledger reseal` moves it)"
                )),
                None => Some(format!(
                    "signed with ledger key {key_id:?}, which is not configured (PISGATE__LEDGER__PREVIOUS_KEYS)"
                )),
                Some(h) if h[..] != mac[..] => Some(
                    "its payload, type, payment, merchant or time is not what was written (edited)"
                        .to_owned(),
                ),
                Some(_) => None,
            };
            if let Some(reason) = reason {
                report.broken_webhook_events += 1;
                if report.first_broken_webhook_event.is_none() {
                    tracing::warn!(event_id = %r.id, %reason, "webhook event problem");
                    report.first_broken_webhook_event =
                        Some(BrokenWebhookEvent { id: r.id, reason });
                }
            }
        }
        if (n as i64) < VERIFY_BATCH {
            break;
        }
    }
    Ok(())
}

/// Checks every webhook endpoint's URL against its MAC ([`binding::endpoint_url_problem`],
/// the rule the dispatcher applies before it sends), in id order.
async fn verify_webhook_endpoints(
    pool: &Db,
    keys: &LedgerKeys,
    report: &mut VerifyReport,
) -> Result<(), sqlx::Error> {
    let mut cursor = Uuid::nil();
    loop {
        let rows = sqlx::query!(
            r#"SELECT id, merchant_id, url, url_mac, url_mac_key_id
               FROM webhook_endpoints WHERE id > $1 ORDER BY id LIMIT $2"#,
            cursor,
            VERIFY_BATCH,
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        for r in rows {
            cursor = r.id;
            report.webhook_endpoints_checked += 1;
            if let Some(why) = binding::endpoint_url_problem(
                Some(keys),
                r.id,
                r.merchant_id,
                &r.url,
                r.url_mac.as_deref(),
                r.url_mac_key_id.as_deref(),
            ) {
                report.broken_webhook_endpoints += 1;
                if report.first_broken_webhook_endpoint.is_none() {
                    tracing::warn!(endpoint_id = %r.id, why, "webhook endpoint problem");
                    report.first_broken_webhook_endpoint =
                        Some(format!("webhook endpoint {}: {why}", r.id));
                }
            }
        }
        if (n as i64) < VERIFY_BATCH {
            break;
        }
    }
    Ok(())
}

/// Checks every merchant's payee policy and every registered payee against its MAC
/// ([`binding::payee_policy_problem`], [`binding::payee_problem`]: what creation trusts).
/// Operators write them one by one: they are read whole.
async fn verify_payees(
    pool: &Db,
    keys: &LedgerKeys,
    report: &mut VerifyReport,
) -> Result<(), sqlx::Error> {
    let broken = |report: &mut VerifyReport, what: String| {
        report.broken_payees += 1;
        if report.first_broken_payee.is_none() {
            tracing::warn!(problem = %what, "payee problem");
            report.first_broken_payee = Some(what);
        }
    };
    let policies = sqlx::query!(
        r#"SELECT id, payees AS "payees!: String", payees_mac, payees_mac_key_id
           FROM merchants ORDER BY id"#
    )
    .fetch_all(pool)
    .await?;
    for r in policies {
        report.payees_checked += 1;
        if let Some(why) = binding::payee_policy_problem(
            Some(keys),
            r.id,
            &r.payees,
            r.payees_mac.as_deref(),
            r.payees_mac_key_id.as_deref(),
        ) {
            broken(report, format!("merchant {} ({:?}): {why}", r.id, r.payees));
        }
    }
    let payees = sqlx::query!(
        "SELECT merchant_id, account_type, account, mac, mac_key_id FROM merchant_payees
         ORDER BY merchant_id, account_type, account"
    )
    .fetch_all(pool)
    .await?;
    for r in payees {
        report.payees_checked += 1;
        if let Some(why) = binding::payee_problem(
            Some(keys),
            r.merchant_id,
            &r.account_type,
            &r.account,
            r.mac.as_deref(),
            r.mac_key_id.as_deref(),
        ) {
            // The account is named masked: verify's output goes to logs.
            let account = crate::domain::account::AccountType::parse(&r.account_type)
                .and_then(|t| crate::domain::Account::parse(t, &r.account).ok())
                .map(|a| a.masked())
                .unwrap_or_else(|| "an unreadable account".to_owned());
            broken(
                report,
                format!("payee {account} of merchant {}: {why}", r.merchant_id),
            );
        }
    }
    Ok(())
}

/// Checks every console operator against its MAC ([`binding::operator_problem`]: what signing
/// in and `operator enable` trust), in its state (enabled or disabled). Operators are few:
/// read whole. Named by id (an email is personal data in a log line).
async fn verify_operators(
    pool: &Db,
    keys: &LedgerKeys,
    report: &mut VerifyReport,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT id, email, password_hash, disabled_at IS NOT NULL AS "disabled!", mac,
                  mac_key_id
           FROM operators ORDER BY id"#
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        report.operators_checked += 1;
        if let Some(why) = binding::operator_problem(
            Some(keys),
            r.id,
            &r.email,
            &r.password_hash,
            r.disabled,
            r.mac.as_deref(),
            r.mac_key_id.as_deref(),
        ) {
            report.broken_operators += 1;
            if report.first_broken_operator.is_none() {
                let what = format!("operator {}: {why}", r.id);
                tracing::warn!(problem = %what, "operator problem");
                report.first_broken_operator = Some(what);
            }
        }
    }
    Ok(())
}

/// Checks every API key that is not revoked against its MACs ([`binding::api_key_problem`]
/// and [`binding::api_key_lifetime_problem`], the rules authentication applies), by key id.
/// A revoked key authenticates nobody: revoking overwrote its secret's hash and dropped its
/// MACs, so one whose `revoked_at` is cleared in SQL is reported here.
async fn verify_api_keys(
    pool: &Db,
    keys: &LedgerKeys,
    report: &mut VerifyReport,
) -> Result<(), sqlx::Error> {
    let mut cursor = String::new();
    loop {
        let rows = sqlx::query!(
            r#"SELECT key_id, merchant_id, key_hash, key_mac, key_mac_key_id, expires_at,
                      rotated_away_at, lifetime_mac, lifetime_mac_key_id
               FROM api_keys WHERE key_id > $1 AND revoked_at IS NULL
               ORDER BY key_id LIMIT $2"#,
            cursor,
            VERIFY_BATCH,
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        for r in rows {
            report.api_keys_checked += 1;
            if let Some(why) = binding::api_key_row_problem(
                Some(keys),
                &binding::StoredApiKey {
                    api_key_id: &r.key_id,
                    merchant_id: r.merchant_id,
                    key_hash: &r.key_hash,
                    key_mac: r.key_mac.as_deref(),
                    key_mac_key_id: r.key_mac_key_id.as_deref(),
                    expires_at: r.expires_at,
                    rotated_away_at: r.rotated_away_at,
                    lifetime_mac: r.lifetime_mac.as_deref(),
                    lifetime_mac_key_id: r.lifetime_mac_key_id.as_deref(),
                },
            ) {
                report.broken_api_keys += 1;
                if report.first_broken_api_key.is_none() {
                    tracing::warn!(key_id = %r.key_id, why, "API key problem");
                    report.first_broken_api_key = Some(format!("API key {}: {why}", r.key_id));
                }
            }
            cursor = r.key_id;
        }
        if (n as i64) < VERIFY_BATCH {
            break;
        }
    }
    Ok(())
}

/// Checks the answer every live idempotency key replays against its MAC
/// ([`crate::ledger::idempotency::answer_problem`], the rule replays apply), by merchant and
/// key.
async fn verify_idempotency_answers(
    pool: &Db,
    keys: &LedgerKeys,
    report: &mut VerifyReport,
) -> Result<(), sqlx::Error> {
    use crate::ledger::idempotency::{StoredMac, answer_problem};
    let mut cursor = (Uuid::nil(), String::new());
    loop {
        let rows = sqlx::query!(
            r#"SELECT merchant_id, key AS "key!: String", response_status AS "status!",
                      response_body AS "body!", response_mac, response_mac_key_id
               FROM idempotency_keys
               WHERE response_status IS NOT NULL AND response_body IS NOT NULL
                 AND (merchant_id, key) > ($1, $2::text)
               ORDER BY merchant_id, key LIMIT $3"#,
            cursor.0,
            cursor.1,
            VERIFY_BATCH,
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        for r in rows {
            report.idempotency_answers_checked += 1;
            let stored = StoredMac {
                mac: r.response_mac.as_deref(),
                key_id: r.response_mac_key_id.as_deref(),
            };
            let status = u16::try_from(r.status).unwrap_or(0);
            if let Some(why) =
                answer_problem(Some(keys), r.merchant_id, &r.key, status, &r.body, stored)
            {
                report.broken_idempotency_answers += 1;
                if report.first_broken_idempotency_answer.is_none() {
                    let at = format!("merchant {} key {:?}: {why}", r.merchant_id, r.key);
                    tracing::warn!(%at, "idempotency answer problem");
                    report.first_broken_idempotency_answer = Some(at);
                }
            }
            cursor = (r.merchant_id, r.key);
        }
        if (n as i64) < VERIFY_BATCH {
            break;
        }
    }
    Ok(())
}

/// Recomputes one payment's chain and checks it against its payment row (not against the
/// checkpoint: that needs the whole ledger).
#[tracing::instrument(skip_all, fields(payment_id = %payment_id))]
pub async fn verify_payment(
    pool: &Db,
    keys: &LedgerKeys,
    payment_id: Uuid,
) -> Result<VerifyReport, sqlx::Error> {
    let payment = sqlx::query!(
        "SELECT ledger_seq, ledger_head, status, merchant_id, amount_minor, currency, country,
                bank, return_url, psu_id, psu_key, request, bank_payment_id, bank_status,
                shopper_debtor_account, merchant_reference, metadata, authorization_url,
                pisgate_readable_time(hop_opened_at) AS hop_opened_at, recurring_executions,
                pisgate_readable_time(sign_horizon_at) AS sign_horizon_at,
                CASE WHEN cancel_requested_at IS NOT NULL
                     THEN COALESCE(cancel_requested_by, 'merchant') END AS cancel_requested_by,
                bank_links,
                bank_links_mac, bank_links_mac_key_id
         FROM payments WHERE id = $1",
        payment_id
    )
    .fetch_optional(pool)
    .await?
    .map(|p| PaymentHead {
        seq: p.ledger_seq,
        head: p.ledger_head,
        status: p.status,
        row: Some(Box::new(BoundColumns {
            merchant_id: p.merchant_id,
            amount_minor: p.amount_minor,
            currency: p.currency,
            country: p.country,
            bank: p.bank,
            return_url: p.return_url,
            psu_id: p.psu_id,
            psu_key: p.psu_key,
            request: p.request,
            bank_payment_id: p.bank_payment_id,
            bank_status: p.bank_status,
            shopper_debtor_account: p.shopper_debtor_account,
            merchant_reference: p.merchant_reference,
            metadata: p.metadata,
            authorization_url: p.authorization_url,
            hop_opened_at: p.hop_opened_at,
            recurring_executions: p.recurring_executions,
            sign_horizon_at: p.sign_horizon_at,
            cancel_requested_by: p.cancel_requested_by,
            bank_links: p.bank_links,
            bank_links_mac: p.bank_links_mac,
            bank_links_mac_key_id: p.bank_links_mac_key_id,
        })),
    });
    let mut verifier = Verifier::new(keys);
    let events = list_raw(pool, payment_id).await?;
    if events.is_empty() {
        // Every payment is written with its `created` event: none is legitimate.
        if let Some(p) = payment.as_ref() {
            verifier.broken(
                payment_id,
                p.seq,
                BreakReason::EventsMissing { head_seq: p.seq },
            );
        }
    }
    for e in &events {
        verifier.check(e, payment.clone());
    }
    Ok(verifier.into_report())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::events::now_micros;
    use secrecy::SecretString;
    use serde_json::json;

    fn keys() -> LedgerKeys {
        LedgerKeys::new("l1", &SecretString::from(LedgerKeys::generate_key_base64())).unwrap()
    }

    struct Events {
        keys: LedgerKeys,
        id: Uuid,
        rows: Vec<RawEvent>,
    }

    impl Events {
        fn push(&mut self, version: i16, status: Option<&str>) -> &RawEvent {
            let prev = self.rows.last().map(|r| r.hash.clone());
            let mut raw = RawEvent {
                payment_id: self.id,
                seq: self.rows.len() as i32 + 1,
                kind: if self.rows.is_empty() {
                    "created"
                } else {
                    "callback"
                }
                .into(),
                old_status: None,
                new_status: status.map(str::to_owned),
                bank_status: Some("Paid".into()),
                detail: json!({"n": self.rows.len()}),
                created_at: now_micros(),
                prev_hash: prev.clone(),
                hash: Vec::new(),
                hash_version: version,
                key_id: (version == HASH_V2).then(|| "l1".to_owned()),
            };
            raw.hash = match version {
                HASH_V1 => raw.canonical().hash_v1(prev.as_deref()).to_vec(),
                _ => raw
                    .canonical()
                    .hash_v2(&self.keys, "l1", prev.as_deref())
                    .unwrap()
                    .to_vec(),
            };
            self.rows.push(raw);
            self.rows.last().unwrap()
        }

        fn head(&self, status: &str) -> Option<PaymentHead> {
            let last = self.rows.last().unwrap();
            Some(PaymentHead {
                seq: last.seq,
                head: Some(last.hash.clone()),
                status: status.into(),
                row: None,
            })
        }

        fn verify(&self, rows: &[&RawEvent], head: Option<PaymentHead>) -> VerifyReport {
            let mut v = Verifier::new(&self.keys);
            rows.iter().for_each(|r| v.check(r, head.clone()));
            v.into_report()
        }
    }

    fn chain() -> Events {
        let mut e = Events {
            keys: keys(),
            id: Uuid::now_v7(),
            rows: Vec::new(),
        };
        e.push(HASH_V1, Some("awaiting_authorization"));
        e.push(HASH_V2, None);
        e.push(HASH_V2, Some("paid"));
        e
    }

    #[test]
    fn a_chain_from_version_1_into_version_2_verifies_against_its_head() {
        let e = chain();
        let all: Vec<&RawEvent> = e.rows.iter().collect();
        let ok = e.verify(&all, e.head("paid"));
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!((ok.payments_checked, ok.events_checked), (1, 3));
    }

    #[test]
    fn the_verifier_names_the_first_problem_of_a_chain() {
        let e = chain();
        let (e1, e2, e3) = (&e.rows[0], &e.rows[1], &e.rows[2]);
        let reason = |rows: &[&RawEvent], head| e.verify(rows, head).first_broken.unwrap();

        let gap = reason(&[e1, e3], e.head("paid"));
        assert_eq!(
            (gap.seq, gap.reason),
            (3, BreakReason::Gap { expected_seq: 2 })
        );

        // A chain wiped and started again by a later append: its first event is not the
        // payment's `created` one (even when its own hashes hold).
        let mut restarted = Events {
            keys: keys(),
            id: Uuid::now_v7(),
            rows: Vec::new(),
        };
        restarted.push(HASH_V2, Some("awaiting_authorization"));
        restarted.rows[0].kind = "bank_chosen".into();
        restarted.rows[0].hash = restarted.rows[0]
            .canonical()
            .hash_v2(&restarted.keys, "l1", None)
            .unwrap()
            .to_vec();
        let only: Vec<&RawEvent> = restarted.rows.iter().collect();
        let report = restarted.verify(&only, restarted.head("awaiting_authorization"));
        assert_eq!(
            report.first_broken.map(|b| (b.seq, b.reason)),
            Some((1, BreakReason::NotStartedByCreation))
        );

        let mut relinked = e2.clone();
        relinked.prev_hash = Some(e3.hash.clone());
        assert_eq!(
            reason(&[e1, &relinked, e3], e.head("paid")).reason,
            BreakReason::PrevHashMismatch
        );

        let mut edited = e2.clone();
        edited.bank_status = Some("Rejected".into());
        assert_eq!(
            reason(&[e1, &edited, e3], e.head("paid")).reason,
            BreakReason::HashMismatch
        );

        // Recomputed without the key: the unkeyed hash is not the keyed one.
        let mut unkeyed = e3.clone();
        unkeyed.hash = unkeyed
            .canonical()
            .hash_v1(e3.prev_hash.as_deref())
            .to_vec();
        assert_eq!(
            reason(&[e1, e2, &unkeyed], e.head("paid")).reason,
            BreakReason::HashMismatch
        );
        unkeyed.hash_version = HASH_V1;
        unkeyed.key_id = None;
        assert_eq!(
            reason(&[e1, e2, &unkeyed], e.head("paid")).reason,
            BreakReason::Downgraded
        );

        let mut foreign = e3.clone();
        foreign.key_id = Some("l9".into());
        assert_eq!(
            reason(&[e1, e2, &foreign], e.head("paid")).reason,
            BreakReason::UnknownKey {
                key_id: "l9".into()
            }
        );

        let cut = reason(&[e1, e2], e.head("paid"));
        assert_eq!(
            (cut.seq, cut.reason.clone()),
            (
                3,
                BreakReason::HeadMismatch {
                    head_seq: 3,
                    last_seq: 2
                }
            )
        );
        assert!(cut.to_string().contains("last events deleted"), "{cut}");

        assert_eq!(
            reason(&[e1, e2, e3], e.head("rejected")).reason,
            BreakReason::StatusMismatch {
                payment_status: "rejected".into(),
                ledger_status: Some("paid".into())
            }
        );
        assert_eq!(
            reason(&[e1, e2, e3], None).reason,
            BreakReason::PaymentMissing
        );
    }

    #[test]
    fn the_first_problem_is_the_first_in_payment_order() {
        let mut report = VerifyReport::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        report.record(BrokenEvent {
            payment_id: b,
            seq: 1,
            reason: BreakReason::PaymentMissing,
        });
        report.record(BrokenEvent {
            payment_id: a,
            seq: 4,
            reason: BreakReason::EventsMissing { head_seq: 4 },
        });
        assert_eq!(report.broken_payments, 2);
        assert_eq!(report.first_broken.unwrap().payment_id, a);
    }
}
