//! Payments: the current state (one row each) and every change to it, each written in one
//! transaction with its ledger event.
//!
//! A status changes only through [`transition`], which hands the domain status machine the
//! [`Evidence`] for the change (the new status follows from it, see
//! [`crate::domain::status`]) and appends the ledger event in the same transaction; the
//! `WHERE status = old` guard makes a concurrent change lose instead of overwriting. A bank
//! status report goes through [`apply_bank_report`], the one path shared by the callback,
//! the poller and cancellation.
//!
//! The ledger binds the row ([`crate::ledger::binding`], checked by `ledger verify`): every
//! write of `bank_payment_id` or `bank_status` appends, in the same transaction, an event
//! carrying it (`initiated` with `detail.bank_payment_id` and its `bank_status`; any other
//! event but `initiation_orphan` with the new `bank_status`), and no event carries a bank
//! status the row does not take. A new path that breaks this makes verify report the
//! payment. [`apply_bank_report`] refuses a report for a row whose bank id is not the one its
//! ledger recorded.
//!
//! Initiation attempts are guarded in SQL, not only in Rust: an attempt starts only on a
//! payment that has no bank id and is not final ([`begin_attempt`]), and only the current
//! attempt may record the bank's answer ([`record_initiated`]); a late answer of an older
//! attempt is kept in the ledger as an orphan, never over the current one.

use super::Db;
use crate::domain::{Evidence, PaymentStatus, Transition, Unsignable, bank_status};
use crate::ledger::binding;
use crate::ledger::disagreements;
use crate::ledger::events::{self, NewEvent};
use crate::ledger::webhooks;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct PaymentRecord {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub status: String,
    pub bank: String,
    pub bank_status: Option<String>,
    pub bank_payment_id: Option<String>,
    pub authorization_url: Option<String>,
    /// The links the bank gave (Berlin Group `_links`), `{}` for Nordea.
    pub bank_links: serde_json::Value,
    /// The ledger MAC of the bank id and links, and its key ([`binding::bank_links_mac`]).
    pub bank_links_mac: Option<Vec<u8>>,
    pub bank_links_mac_key_id: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub country: String,
    pub request: serde_json::Value,
    pub merchant_reference: Option<String>,
    pub psu_id: Option<String>,
    pub psu_key: Option<String>,
    pub return_url: String,
    pub metadata: serde_json::Value,
    pub state_expires_at: Option<DateTime<Utc>>,
    pub state_used_at: Option<DateTime<Utc>>,
    pub failure_code: Option<String>,
    pub failure_detail: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Standing orders: executions still to come as the bank last counted them.
    pub recurring_remaining: Option<i32>,
    /// Standing orders: executions seen so far.
    pub recurring_executions: i32,
    /// pisgate's signing window: past it the hop no longer leads to the bank.
    pub expires_at: Option<DateTime<Utc>>,
    /// The late-signing horizon: past it, with nothing signed, the payment expires.
    pub sign_horizon_at: Option<DateTime<Utc>>,
    /// The hop's token and URL (`{public_url}/authorize/{id}?t=…`).
    pub authorize_token: Option<String>,
    pub authorize_url: Option<String>,
    /// When a shopper first went through the hop to the bank's page.
    pub hop_opened_at: Option<DateTime<Utc>>,
    /// `pending`, `initiated`, `outcome_unknown`, `not_created`, `refused`,
    /// `awaiting_bank_choice`, `awaiting_debtor_account` or
    /// `awaiting_shopper_identification`.
    pub initiation: String,
    pub initiation_attempts: i32,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// A callback is running the code exchange until then.
    pub callback_claimed_until: Option<DateTime<Utc>>,
    /// The W3C `traceparent` of the request that created it.
    pub trace_parent: Option<String>,
    /// Initiation waits for the shopper (bank choice or IBAN on pisgate's page): the page,
    /// never a merchant's retry, starts its bank attempts.
    pub deferred: bool,
    /// The debtor IBAN the shopper gave on pisgate's page (never logged in full).
    pub shopper_debtor_account: Option<String>,
    /// A shopper's submit holds the initiation until then.
    pub initiation_lease_until: Option<DateTime<Utc>>,
}

/// The bank of a deferred payment nobody has chosen yet (`payments.bank`, and what its
/// `created` event binds).
pub const NO_BANK_YET: &str = "";

/// A payment's reference at its bank from its stored columns: `None` before the bank's
/// answer is recorded, and `None` (logged as an error, counted in
/// `pisgate_ledger_binding_mismatches_total`) when its bank id and links fail their ledger
/// MAC: a bank id or links edited (or emptied) in SQL (an authorisation server of the editor's, another payment's status link)
/// are never followed, and nothing is sent to the bank for the payment until an operator
/// has looked (`pisgate ledger verify` names it). Callers that decide from a missing
/// reference that nothing was ever made at the bank check `bank_payment_id` first.
pub(crate) fn stored_bank_ref(
    payment_id: Uuid,
    bank_payment_id: Option<&str>,
    links: &serde_json::Value,
    mac: Option<&[u8]>,
    key_id: Option<&str>,
) -> Option<crate::bank::BankRef> {
    let id = bank_payment_id.and_then(crate::bank::BankPaymentId::parse)?;
    let ring = crate::ledger::keys::installed();
    if let Some(why) = binding::bank_links_problem(
        ring.as_deref(),
        payment_id,
        bank_payment_id,
        links,
        mac,
        key_id,
    ) {
        tracing::error!(
            %payment_id,
            why,
            "the payment's bank id and links fail their ledger MAC; nothing is sent to the bank for it: run `pisgate ledger verify`"
        );
        metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
        return None;
    }
    Some(crate::bank::BankRef {
        id,
        links: crate::bank::BankLinks::from_json(links),
    })
}

/// The ledger MAC of a payment's bank reference (its bank payment id and links, `{}`
/// included) under the installed ring's current key, as stored beside them
/// (`bank_links_mac`, `bank_links_mac_key_id`).
pub(crate) fn seal_bank_links(
    payment_id: Uuid,
    bank_payment_id: &str,
    links: &serde_json::Value,
) -> Result<(Vec<u8>, String), sqlx::Error> {
    let ring = crate::ledger::keys::installed().ok_or_else(|| {
        sqlx::Error::Configuration("no ledger key is installed (ledger::keys::install)".into())
    })?;
    let key_id = ring.current_id().to_owned();
    let mac = binding::bank_links_mac(&ring, &key_id, payment_id, bank_payment_id, links)
        .ok_or_else(|| {
            sqlx::Error::Configuration("the ledger ring lacks its current key".into())
        })?;
    Ok((mac.to_vec(), key_id))
}

impl PaymentRecord {
    /// The payment as its bank knows it (id and links), once initiated and only while its
    /// bank id and links hold their ledger MAC ([`stored_bank_ref`]).
    pub fn bank_ref(&self) -> Option<crate::bank::BankRef> {
        stored_bank_ref(
            self.id,
            self.bank_payment_id.as_deref(),
            &self.bank_links,
            self.bank_links_mac.as_deref(),
            self.bank_links_mac_key_id.as_deref(),
        )
    }

    pub fn status(&self) -> PaymentStatus {
        PaymentStatus::parse(&self.status).unwrap_or(PaymentStatus::Failed)
    }

    /// Whether a shopper has come back from the bank, or is coming back right now: such a
    /// payment is signed as far as we can tell, and only the bank's word ends it.
    pub fn shopper_returned(&self, now: DateTime<Utc>) -> bool {
        self.psu_key.is_some()
            || self.state_used_at.is_some()
            || self.callback_claimed_until.is_some_and(|t| t > now)
    }

    /// Whether the bank's answer to the initiation is recorded (so its link exists).
    pub fn is_initiated(&self) -> bool {
        self.initiation == "initiated" && self.bank_payment_id.is_some()
    }

    /// Whether an attempt went to the bank and its answer is not recorded: lost
    /// (`outcome_unknown`) or not in yet (`pending`). The bank may hold a payment pisgate has
    /// no id for; at a bank that acts without the hop ([`crate::bank::BankTraits::acts_without_hop`])
    /// it may be live.
    pub fn answer_unrecorded(&self) -> bool {
        self.bank_payment_id.is_none()
            && self.initiation_attempts > 0
            && matches!(self.initiation.as_str(), "pending" | "outcome_unknown")
    }
}

/// What the API hands over to create a payment.
#[derive(Clone)]
pub struct NewPayment<'a> {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub country: &'a str,
    pub request: serde_json::Value,
    pub merchant_reference: Option<&'a str>,
    pub psu_id: Option<&'a str>,
    pub return_url: &'a str,
    pub metadata: serde_json::Value,
    pub state_hash: &'a [u8],
    /// The signing window's end.
    pub expires_at: DateTime<Utc>,
    /// The late-signing horizon (the OAuth state expires with it).
    pub sign_horizon_at: DateTime<Utc>,
    /// When the poller first looks at it: a signing interval on for a payment whose bank
    /// call starts now (its answer is normally recorded by then, and
    /// [`record_first_answer`] then leaves this schedule as it is); the horizon for a
    /// deferred one (nothing at any bank until the shopper's page starts it).
    pub first_poll_at: DateTime<Utc>,
    pub authorize_token: &'a str,
    pub authorize_url: &'a str,
    /// The creating request's W3C `traceparent`; later work on the payment links to it.
    pub trace_parent: Option<&'a str>,
    /// The bank's id in the settings (`[banks.<id>]`), or [`NO_BANK_YET`].
    pub bank: &'a str,
    /// `Some("awaiting_bank_choice" | "awaiting_debtor_account")`: created without a bank
    /// attempt; the shopper's page starts it.
    pub deferred: Option<&'static str>,
}

/// The bank of payments created before banks were configurable (the column's default).
pub const DEFAULT_BANK: &str = "nordea";

impl NewPayment<'_> {
    /// The facts the `created` event binds ([`binding::facts_digest`]).
    pub fn facts(&self) -> binding::PaymentFacts<'_> {
        binding::PaymentFacts {
            merchant_id: self.merchant_id,
            amount_minor: self.amount_minor,
            currency: self.currency,
            country: self.country,
            bank: self.bank,
            return_url: self.return_url,
            psu_id: self.psu_id,
            request: &self.request,
        }
    }
}

impl PaymentRecord {
    /// The facts its `created` event binds, read from the row.
    pub fn facts(&self) -> binding::PaymentFacts<'_> {
        binding::PaymentFacts {
            merchant_id: self.merchant_id,
            amount_minor: self.amount_minor,
            currency: &self.currency,
            country: &self.country,
            bank: &self.bank,
            return_url: &self.return_url,
            psu_id: self.psu_id.as_deref(),
            request: &self.request,
        }
    }
}

/// A payment row as [`PaymentRecord`]. Its times are read through `pisgate_readable_time`
/// (migration `20261212100000_readable_times`): one set in SQL to a value chrono cannot hold
/// (`'infinity'`, a year past 262,142) made sqlx panic on reading it, so the API answered that
/// payment with a 500 and its poll died before recording the bank's answer. Clamped, the
/// payment reads as "in 9999" (or "in 1970"), and `ledger verify` names the row where a
/// bound time was edited.
macro_rules! select_payment {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            PaymentRecord,
            "SELECT id, merchant_id, status, bank, bank_status, bank_payment_id, authorization_url,
                    bank_links, bank_links_mac, bank_links_mac_key_id, amount_minor, currency,
                    country, request, merchant_reference, psu_id, psu_key,
                    return_url, metadata,
                    pisgate_readable_time(state_expires_at) AS state_expires_at,
                    pisgate_readable_time(state_used_at) AS state_used_at, failure_code,
                    failure_detail, pisgate_readable_time(created_at) AS \"created_at!\",
                    pisgate_readable_time(updated_at) AS \"updated_at!\", recurring_remaining,
                    recurring_executions, pisgate_readable_time(expires_at) AS expires_at,
                    pisgate_readable_time(sign_horizon_at) AS sign_horizon_at, authorize_token,
                    authorize_url, pisgate_readable_time(hop_opened_at) AS hop_opened_at,
                    initiation, initiation_attempts,
                    pisgate_readable_time(cancel_requested_at) AS cancel_requested_at,
                    pisgate_readable_time(callback_claimed_until) AS callback_claimed_until,
                    trace_parent, deferred, shopper_debtor_account,
                    pisgate_readable_time(initiation_lease_until) AS initiation_lease_until
             FROM payments " + $tail
            $(, $arg)*
        )
    };
}

/// The channel pollers listen on; a notification means "a payment became due".
pub const POLL_CHANNEL: &str = "pisgate_poll";

/// The idempotency key a creation claims together with its payment.
pub struct KeyClaim<'a> {
    pub key: &'a str,
    pub request_hash: &'a [u8],
    /// The hash of the body as sent, before validation ([`idempotency::claim`]).
    pub body_hash: &'a [u8],
    /// The in-flight bound (`payments.idempotency_stale_after_secs`).
    pub in_flight_for: std::time::Duration,
    pub expires_at: DateTime<Utc>,
    /// The account the payment pays: nothing is written unless the merchant may pay it
    /// (its payee policy is open, or the account is one of its payees), judged in the same
    /// statement. `None` only where no payee policy applies (tools, tests).
    pub payee: Option<&'a crate::domain::Account>,
}

/// What [`create_with_key`] did.
#[derive(Debug)]
pub enum Creation {
    /// The key was new (or expired) and the payment is written.
    Created(Box<Created>),
    /// The key is live: nothing written; [`idempotency::claim`](crate::ledger::idempotency::claim)
    /// tells a replay, an in-flight request and a mismatch apart.
    KeyTaken,
    /// The merchant pays registered accounts only and the payee is not one of them:
    /// nothing written, the key not claimed.
    PayeeNotRegistered,
}

/// The events of a new payment: `created`, then the start of its first bank attempt (none
/// for a deferred payment: the shopper's page starts it).
fn creation_events(p: &NewPayment<'_>) -> Vec<NewEvent> {
    let mut events = vec![NewEvent {
        kind: "created".into(),
        old_status: None,
        new_status: Some(PaymentStatus::AwaitingAuthorization),
        bank_status: None,
        detail: json!({
            "amount_minor": p.amount_minor,
            "currency": p.currency,
            "country": p.country,
            "facts": binding::facts_digest(&p.facts()),
            (binding::HORIZON_FIELD): binding::horizon_text(p.sign_horizon_at),
        }),
    }];
    match p.deferred {
        None => events.push(NewEvent {
            detail: json!({ "attempt": 1 }),
            ..NewEvent::new("initiation_attempt")
        }),
        Some(waiting) => events.push(NewEvent {
            detail: json!({ "initiation": waiting }),
            ..NewEvent::new("initiation_deferred")
        }),
    }
    events
}

/// Creates a payment, one statement (one round trip, one commit): claims the key (new, or
/// expired and so taken over), inserts the payment in `awaiting_authorization` with its
/// `created` event and the start of its first bank attempt (chained in memory), and points
/// the key at it. It is first due for the poller at `first_poll_at`; if the bank's answer is
/// never recorded and nobody retries, the poller expires it at its late-signing horizon (its
/// signing link was never handed to anyone). Returns the payment as written, or `None` when the
/// key is live (nothing written: the caller's [`idempotency::claim`](crate::ledger::idempotency::claim)
/// then tells a replay, an in-flight request and a mismatch apart).
/// A payment [`create_with_key`] wrote, and the head of its chain.
#[derive(Debug, Clone)]
pub struct Created {
    pub record: PaymentRecord,
    pub seq: i32,
    pub head: Vec<u8>,
}

pub async fn create_with_key(
    pool: &Db,
    p: NewPayment<'_>,
    key: KeyClaim<'_>,
) -> Result<Creation, sqlx::Error> {
    let now = events::now_micros();
    let sealed = events::seal(p.id, None, &creation_events(&p), now)?;
    let (seq, head) = sealed.head();
    let in_flight_ms = i64::try_from(key.in_flight_for.as_millis()).unwrap_or(i64::MAX);
    // What a sealed policy and payee would carry (without the ledger key: nothing, and only
    // a payment without a payee check passes).
    let payee_macs = match (key.payee, crate::ledger::keys::installed()) {
        (Some(a), Some(ring)) => {
            binding::PayeeMacs::new(&ring, p.merchant_id, a.account_type().as_str(), a.value())
        }
        _ => binding::PayeeMacs::default(),
    };
    let written = sqlx::query!(
        r#"WITH allowed AS (
               SELECT $37::text IS NULL
                      OR (m.payees = 'open' AND EXISTS (
                             SELECT 1 FROM unnest($40::text[], $41::bytea[]) AS o(key_id, mac)
                             WHERE o.key_id = m.payees_mac_key_id AND o.mac = m.payees_mac))
                      OR EXISTS (
                             SELECT 1 FROM merchant_payees mp
                             JOIN unnest($40::text[], $42::bytea[]) AS r(key_id, mac)
                               ON r.key_id = mp.mac_key_id AND r.mac = mp.mac
                             WHERE mp.merchant_id = m.id AND mp.account_type = $37
                               AND mp.account = $38) AS ok,
                      $37::text IS NOT NULL AND (m.payees = 'open' OR EXISTS (
                             SELECT 1 FROM merchant_payees mp
                             WHERE mp.merchant_id = m.id AND mp.account_type = $37
                               AND mp.account = $38)) AS as_stored
               FROM merchants m WHERE m.id = $2
           ), k AS (
               INSERT INTO idempotency_keys
                   (merchant_id, key, request_hash, expires_at, payment_id, locked_until, body_hash)
               SELECT $2, $16::text, $17, $18, $1, now() + make_interval(secs => $19::bigint / 1000.0), $34
               FROM allowed WHERE allowed.ok
               ON CONFLICT (merchant_id, key) DO UPDATE
                   SET request_hash = EXCLUDED.request_hash, payment_id = EXCLUDED.payment_id,
                       body_hash = EXCLUDED.body_hash,
                       response_status = NULL, response_body = NULL, completed_at = NULL,
                       response_mac = NULL, response_mac_key_id = NULL,
                       created_at = now(), expires_at = EXCLUDED.expires_at,
                       locked_until = EXCLUDED.locked_until
                   WHERE idempotency_keys.expires_at < now()
               RETURNING 1
           ), p AS (
               INSERT INTO payments
                   (id, merchant_id, status, amount_minor, currency, country, request,
                    merchant_reference, psu_id, return_url, metadata, state_hash,
                    state_expires_at, expires_at, sign_horizon_at,
                    authorize_token, authorize_url, initiation, initiation_attempts,
                    created_at, updated_at, ledger_seq, ledger_head, trace_parent, bank, deferred)
               SELECT $1, $2, 'awaiting_authorization', $3::bigint, $4::text, $5::text, $6, $7, $8, $9, $10, $11,
                      $12, $13, $12, $14, $15, COALESCE($36, 'pending'),
                      CASE WHEN $36::text IS NULL THEN 1 ELSE 0 END, $20, $20, $21::integer, $22::bytea, $33, $35,
                      $36::text IS NOT NULL
               FROM k
               RETURNING id
           ), s AS (
               INSERT INTO payment_polls (payment_id, next_poll_at)
               SELECT id, $39 FROM p
           ), e AS (
               INSERT INTO payment_events
                   (payment_id, seq, kind, old_status, new_status, bank_status, detail,
                    created_at, prev_hash, hash, hash_version, key_id)
               SELECT p.id, ev.seq, ev.kind, ev.old_status, ev.new_status, ev.bank_status,
                      ev.detail, $20, ev.prev_hash, ev.hash, $23::smallint, $24
               FROM p, unnest($25::int[], $26::text[], $27::text[], $28::text[], $29::text[],
                              $30::jsonb[], $31::bytea[], $32::bytea[])
                    AS ev(seq, kind, old_status, new_status, bank_status, detail, prev_hash, hash)
               RETURNING 1
           )
           SELECT (SELECT count(*) FROM e) AS "n!",
                  COALESCE((SELECT ok FROM allowed), false) AS "allowed!",
                  COALESCE((SELECT as_stored FROM allowed), false) AS "allowed_as_stored!""#,
        p.id,
        p.merchant_id,
        p.amount_minor,
        p.currency,
        p.country,
        p.request,
        p.merchant_reference,
        p.psu_id,
        p.return_url,
        p.metadata,
        p.state_hash,
        p.sign_horizon_at,
        p.expires_at,
        p.authorize_token,
        p.authorize_url,
        key.key,
        key.request_hash,
        key.expires_at,
        in_flight_ms,
        now,
        seq,
        head,
        events::HASH_V2,
        &sealed.key_id,
        &sealed.seq,
        &sealed.kind,
        &sealed.old_status as &[Option<String>],
        &sealed.new_status as &[Option<String>],
        &sealed.bank_status as &[Option<String>],
        &sealed.detail,
        &sealed.prev_hash as &[Option<Vec<u8>>],
        &sealed.hash,
        p.trace_parent,
        key.body_hash,
        p.bank,
        p.deferred,
        key.payee.map(|a| a.account_type().as_str()),
        key.payee.map(|a| a.value()),
        p.first_poll_at,
        &payee_macs.key_ids,
        &payee_macs.open_policy,
        &payee_macs.payee,
    )
    .fetch_one(pool)
    .await?;
    if !written.allowed {
        if written.allowed_as_stored {
            // The stored policy or payee would let it through, but its MAC does not hold: set
            // in SQL, or sealed under a key this ring lacks or retired.
            tracing::error!(
                merchant_id = %p.merchant_id,
                "the merchant's payee policy or payee row lacks a valid ledger MAC: the payment is refused (run `pisgate ledger verify`)"
            );
            metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
        }
        return Ok(Creation::PayeeNotRegistered);
    }
    if written.n == 0 {
        return Ok(Creation::KeyTaken);
    }
    let head = head.to_vec();
    let record = PaymentRecord {
        id: p.id,
        merchant_id: p.merchant_id,
        status: PaymentStatus::AwaitingAuthorization.as_str().to_owned(),
        bank: p.bank.to_owned(),
        bank_status: None,
        bank_payment_id: None,
        authorization_url: None,
        bank_links: serde_json::json!({}),
        bank_links_mac: None,
        bank_links_mac_key_id: None,
        amount_minor: p.amount_minor,
        currency: p.currency.to_owned(),
        country: p.country.to_owned(),
        request: p.request,
        merchant_reference: p.merchant_reference.map(str::to_owned),
        psu_id: p.psu_id.map(str::to_owned),
        psu_key: None,
        return_url: p.return_url.to_owned(),
        metadata: p.metadata,
        state_expires_at: Some(p.sign_horizon_at),
        state_used_at: None,
        failure_code: None,
        failure_detail: None,
        created_at: now,
        updated_at: now,
        recurring_remaining: None,
        recurring_executions: 0,
        expires_at: Some(p.expires_at),
        sign_horizon_at: Some(p.sign_horizon_at),
        authorize_token: Some(p.authorize_token.to_owned()),
        authorize_url: Some(p.authorize_url.to_owned()),
        hop_opened_at: None,
        initiation: p.deferred.unwrap_or("pending").into(),
        initiation_attempts: if p.deferred.is_some() { 0 } else { 1 },
        cancel_requested_at: None,
        callback_claimed_until: None,
        trace_parent: p.trace_parent.map(str::to_owned),
        deferred: p.deferred.is_some(),
        shopper_debtor_account: None,
        initiation_lease_until: None,
    };
    Ok(Creation::Created(Box::new(Created { record, seq, head })))
}

/// The fast path of recording the bank's answer to a payment's first attempt, with the
/// answer its idempotency key replays, in one statement (one round trip, one commit).
/// `answered` is the payment as [`create_with_key`] returned it with the bank's answer
/// applied and a new `updated_at` (the caller built `body` from it); the statement is guarded
/// on the row being exactly as creation left it (the chain head `created` and its
/// `updated_at`), so `body` is the row's truth. Returns false when the row moved; nothing is
/// written and the caller takes the transactional path.
///
/// The first poll: no NOTIFY, it is at most a signing interval away (`first_poll_at`), which
/// the pollers' timer catches. Creation already scheduled the payment a signing interval
/// after it was created (earlier than `first_poll_at` by the bank's latency), so the
/// schedule's row is left as it is when it polls no later than `first_poll_at` and not
/// within the next second, unclaimed and with no failures: no new tuple and no index entries
/// (issue 28). Otherwise it is rewritten to `first_poll_at`, as it always was: when a poller
/// got there first (a bank slower than a signing interval: the poller found no bank id and
/// put it off by a late-signing interval, `workers::poller`), and when it is due within a
/// second, so that this write takes the row's lock and a claim either comes before it (this
/// write then wins over the claim's end, whose guard on the lease fails) or after it (and
/// finds it no longer due). Only a commit slower than that second leaves a claim that read
/// no bank id, and the first poll comes a late-signing interval later.
pub async fn record_first_answer(
    pool: &Db,
    created: &Created,
    answered: &PaymentRecord,
    first_poll_at: DateTime<Utc>,
    key: &str,
    body: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let bank_payment_id = answered.bank_payment_id.as_deref().unwrap_or_default();
    let event = NewEvent {
        bank_status: answered.bank_status.clone(),
        detail: initiated_detail(
            1,
            bank_payment_id,
            answered.authorization_url.as_deref(),
            answered.hop_opened_at.is_some(),
        ),
        ..NewEvent::new("initiated")
    };
    let (seq, head) = (created.seq, created.head.as_slice());
    let sealed = events::seal(
        answered.id,
        Some((seq, head)),
        &[event],
        answered.updated_at,
    )?;
    let (new_seq, new_head) = sealed.head();
    let (answer_mac, answer_key_id) =
        crate::ledger::idempotency::seal_answer(created.record.merchant_id, key, 201, body)?;
    let (links_mac, links_key_id) =
        seal_bank_links(answered.id, bank_payment_id, &answered.bank_links)?;
    let written = sqlx::query_scalar!(
        r#"WITH u AS (
               UPDATE payments
               SET bank_payment_id = $2, authorization_url = $3, bank_status = $4,
                   initiation = 'initiated', updated_at = $6, ledger_seq = $7::integer, ledger_head = $8::bytea,
                   bank_links = $17, hop_opened_at = $18, bank_links_mac = $21,
                   bank_links_mac_key_id = $22
               WHERE id = $1 AND ledger_seq = $9 AND ledger_head = $10 AND updated_at = $11
                 AND initiation_attempts = 1 AND initiation = 'pending'
                 AND bank_payment_id IS NULL AND status = 'awaiting_authorization'
               RETURNING id, merchant_id
           ), s AS (
               UPDATE payment_polls SET next_poll_at = $5, poll_failures = 0
               FROM u WHERE payment_polls.payment_id = u.id
                 AND NOT (payment_polls.next_poll_at <= $5
                          AND payment_polls.next_poll_at > now() + interval '1 second'
                          AND payment_polls.poll_owner IS NULL
                          AND payment_polls.poll_failures = 0)
           ), e AS (
               INSERT INTO payment_events
                   (payment_id, seq, kind, old_status, new_status, bank_status, detail,
                    created_at, prev_hash, hash, hash_version, key_id)
               SELECT u.id, $7, 'initiated', NULL, NULL, $4, $12, $6, $10, $8, $13::smallint, $14
               FROM u
               RETURNING 1
           ), k AS (
               UPDATE idempotency_keys
               SET response_status = 201, response_body = $15, completed_at = now(),
                   response_mac = $19, response_mac_key_id = $20
               FROM u
               WHERE idempotency_keys.merchant_id = u.merchant_id
                 AND idempotency_keys.key = $16 AND idempotency_keys.payment_id = u.id
               RETURNING 1
           )
           SELECT (SELECT count(*) FROM e) + (SELECT count(*) FROM k) AS "n!""#,
        answered.id,
        answered.bank_payment_id,
        answered.authorization_url,
        answered.bank_status,
        first_poll_at,
        answered.updated_at,
        new_seq,
        new_head,
        seq,
        head,
        created.record.updated_at,
        &sealed.detail[0],
        events::HASH_V2,
        &sealed.key_id,
        body,
        key,
        answered.bank_links,
        answered.hop_opened_at,
        &answer_mac[..],
        answer_key_id,
        links_mac,
        links_key_id,
    )
    .fetch_one(pool)
    .await?;
    Ok(written == 2)
}

/// Starts another bank attempt for a payment whose earlier attempt never recorded an
/// answer: a fresh OAuth state (the old one never reached anybody), a new signing window
/// and horizon. Guarded in SQL: only a payment with no bank id, and no bank answer in its
/// ledger, that is still awaiting authorization. Returns the attempt number, or `None` when it may not be resumed.
pub async fn begin_attempt(
    conn: &mut PgConnection,
    id: Uuid,
    state_hash: &[u8],
    expires_at: DateTime<Utc>,
    sign_horizon_at: DateTime<Utc>,
) -> Result<Option<i32>, sqlx::Error> {
    let previous = sqlx::query!(
        r#"SELECT initiation, initiation_attempts FROM payments
           WHERE id = $1 AND bank_payment_id IS NULL AND status = 'awaiting_authorization'
             AND NOT deferred
             -- The ledger agrees that no answer was recorded (a bank id cleared in SQL
             -- would otherwise start a second payment at the bank).
             AND NOT EXISTS (SELECT 1 FROM payment_events
                             WHERE payment_id = $1 AND kind = 'initiated')
           FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(previous) = previous else {
        return Ok(None);
    };
    let attempt = sqlx::query_scalar!(
        r#"UPDATE payments
           SET state_hash = $2, state_expires_at = $4, state_used_at = NULL,
               expires_at = $3, sign_horizon_at = $4,
               initiation = 'pending', initiation_attempts = initiation_attempts + 1
           WHERE id = $1 AND bank_payment_id IS NULL AND status = 'awaiting_authorization'
           RETURNING initiation_attempts"#,
        id,
        state_hash,
        expires_at,
        sign_horizon_at,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(attempt) = attempt {
        sqlx::query!(
            "UPDATE payment_polls SET next_poll_at = $2 WHERE payment_id = $1",
            id,
            sign_horizon_at
        )
        .execute(&mut *conn)
        .await?;
        // An attempt whose replica died before recording anything has no outcome of its own.
        let earlier = if previous.initiation == "pending" {
            "no answer recorded (interrupted)"
        } else {
            previous.initiation.as_str()
        };
        note(
            conn,
            id,
            "initiation_attempt",
            json!({
                "attempt": attempt,
                "resumes": previous.initiation_attempts,
                "previous_outcome": earlier,
                (binding::HORIZON_FIELD): binding::horizon_text(sign_horizon_at),
            }),
        )
        .await?;
    }
    Ok(attempt)
}
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<PaymentRecord>, sqlx::Error> {
    select_payment!("WHERE id = $1", id)
        .fetch_optional(conn)
        .await
}

/// Locks the row for the rest of the caller's transaction.
pub async fn get_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<PaymentRecord>, sqlx::Error> {
    select_payment!("WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(conn)
        .await
}

/// A merchant's payment; another merchant's id is simply not found.
pub async fn get_for_merchant(
    pool: &Db,
    merchant_id: Uuid,
    id: Uuid,
) -> Result<Option<PaymentRecord>, sqlx::Error> {
    select_payment!("WHERE id = $1 AND merchant_id = $2", id, merchant_id)
        .fetch_optional(pool)
        .await
}

/// Finds the payment an OAuth `state` belongs to (the initiation's, or the one sent with an
/// authorisation pisgate started: [`super::sca`]).
pub async fn find_by_state(
    conn: &mut PgConnection,
    state_hash: &[u8],
) -> Result<Option<PaymentRecord>, sqlx::Error> {
    select_payment!("WHERE state_hash = $1 OR sca_state_hash = $1", state_hash)
        .fetch_optional(conn)
        .await
}

/// Filters and keyset cursor for listing.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub status: Option<String>,
    pub created_gte: Option<DateTime<Utc>>,
    pub created_lt: Option<DateTime<Utc>>,
    /// The merchant's own reference, exactly.
    pub reference: Option<String>,
    pub psu_id: Option<String>,
    /// Metadata keys that must hold exactly these string values.
    pub metadata: Vec<(String, String)>,
    /// Amount bounds in minor units, both inclusive.
    pub amount_gte: Option<i64>,
    pub amount_lte: Option<i64>,
    pub currency: Option<String>,
    /// Continue after this (created_at, id), newest first.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// The statement that finds the ids of a merchant's payments matching `filter`, newest
/// first, at most `limit`, after `head` (empty, or `EXPLAIN …` to see its plan). Only the
/// filters given become conditions, so each shape is planned with its own index (a
/// catch-all `$n IS NULL OR …` would hide them from a generic plan).
pub fn search_query(
    head: &str,
    merchant_id: Uuid,
    filter: &ListFilter,
    limit: i64,
) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::new(head);
    q.push(" SELECT id FROM payments WHERE merchant_id = ");
    q.push_bind(merchant_id);
    fn equal(q: &mut QueryBuilder<'static, Postgres>, column: &str, value: &Option<String>) {
        if let Some(v) = value {
            q.push(format!(" AND {column} = ")).push_bind(v.clone());
        }
    }
    equal(&mut q, "status", &filter.status);
    equal(&mut q, "merchant_reference", &filter.reference);
    equal(&mut q, "psu_id", &filter.psu_id);
    equal(&mut q, "currency", &filter.currency);
    if let Some(t) = filter.created_gte {
        q.push(" AND created_at >= ").push_bind(t);
    }
    if let Some(t) = filter.created_lt {
        q.push(" AND created_at < ").push_bind(t);
    }
    if !filter.metadata.is_empty() {
        let wanted: serde_json::Map<String, serde_json::Value> = filter
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        // `metadata <> '{}'` follows from the containment (the filter is never empty): it
        // lets the planner use the metadata index, which holds only payments with metadata.
        q.push(" AND metadata <> '{}'::jsonb AND metadata @> ")
            .push_bind(serde_json::Value::Object(wanted));
    }
    if let Some(a) = filter.amount_gte {
        q.push(" AND amount_minor >= ").push_bind(a);
    }
    if let Some(a) = filter.amount_lte {
        q.push(" AND amount_minor <= ").push_bind(a);
    }
    if let Some((ts, id)) = filter.after {
        // After the cursor's payment where it is stored: its `created_at` read back by id
        // (one primary-key read, planned once per page). The cursor carries the time as the
        // API read it, clamped to 1970..9999 (`select_payment!`): for a time set to
        // '-infinity' in SQL, comparing with it would serve the same page again and again.
        // The cursor's own time only where its payment is not the merchant's (a cursor made
        // up by hand).
        q.push(
            " AND (created_at, id) < (COALESCE((SELECT c.created_at FROM payments c WHERE c.id = ",
        )
        .push_bind(id)
        .push(" AND c.merchant_id = ")
        .push_bind(merchant_id)
        .push("), ")
        .push_bind(ts)
        .push("), ")
        .push_bind(id)
        .push(")");
    }
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    q
}

/// Newest first, at most `limit` rows: the ids through [`search_query`], then the rows.
pub async fn list_for_merchant(
    pool: &Db,
    merchant_id: Uuid,
    filter: &ListFilter,
    limit: i64,
) -> Result<Vec<PaymentRecord>, sqlx::Error> {
    let ids: Vec<Uuid> = search_query("", merchant_id, filter, limit)
        .build_query_scalar()
        .fetch_all(pool)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    select_payment!(
        "WHERE id = ANY($1) ORDER BY created_at DESC, id DESC",
        &ids[..],
    )
    .fetch_all(pool)
    .await
}

/// Records the shopper's bank choice for a deferred payment nobody chose a bank for yet
/// (guarded in SQL: open, not cancelled, no bank yet), with a `bank_chosen` event binding
/// it; the initiation then waits for the shopper's IBAN when `awaiting_debtor_account`.
/// Returns whether it was recorded (a second tab's choice after the first is not).
pub async fn record_bank_choice(
    conn: &mut PgConnection,
    id: Uuid,
    bank: &str,
    then: &str,
) -> Result<bool, sqlx::Error> {
    let recorded = sqlx::query!(
        r#"UPDATE payments SET bank = $2, initiation = $3::text, updated_at = now()
           WHERE id = $1 AND deferred AND bank = '' AND bank_payment_id IS NULL
             AND status = 'awaiting_authorization' AND cancel_requested_at IS NULL"#,
        id,
        bank,
        then,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if recorded {
        note(conn, id, "bank_chosen", json!({ "bank": bank })).await?;
    }
    Ok(recorded)
}

/// Records the debtor IBAN the shopper gave for a deferred payment (guarded in SQL: open,
/// not cancelled, none given yet), with a `debtor_account_given` event binding its digest
/// and showing it masked. Returns whether it was recorded.
pub async fn record_debtor_account(
    conn: &mut PgConnection,
    id: Uuid,
    iban: &crate::domain::Account,
) -> Result<bool, sqlx::Error> {
    let recorded = sqlx::query!(
        r#"UPDATE payments SET shopper_debtor_account = $2, updated_at = now()
           WHERE id = $1 AND deferred AND shopper_debtor_account IS NULL
             AND bank_payment_id IS NULL AND status = 'awaiting_authorization'
             AND cancel_requested_at IS NULL"#,
        id,
        iban.value(),
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if recorded {
        note(
            conn,
            id,
            "debtor_account_given",
            json!({
                "account": iban.masked(),
                "debtor_account_sha256": binding::debtor_account_digest(iban.value()),
            }),
        )
        .await?;
    }
    Ok(recorded)
}

/// Starts a bank attempt for a deferred payment on the shopper's submit: guarded in SQL
/// (deferred, a bank chosen, no bank id, open, not cancelled, within the signing window, and
/// no other submit's attempt running: `pending` under a live lease), with a fresh OAuth
/// state and the lease until `lease_until`. The signing window and horizon stay as creation
/// set them. Returns the attempt number, or `None` when no attempt may start now.
pub async fn begin_shopper_attempt(
    conn: &mut PgConnection,
    id: Uuid,
    state_hash: &[u8],
    lease_until: DateTime<Utc>,
    earlier_may_be_live: bool,
) -> Result<Option<i32>, sqlx::Error> {
    // `earlier_may_be_live`: the bank may execute a payment without the shopper
    // (`BankTraits::acts_without_hop`), so an attempt whose answer was lost or never came
    // back may be live there, and no further attempt starts.
    let previous = sqlx::query!(
        r#"SELECT initiation, initiation_attempts FROM payments
           WHERE id = $1 AND deferred AND bank <> '' AND bank_payment_id IS NULL
             AND status = 'awaiting_authorization' AND cancel_requested_at IS NULL
             AND (expires_at IS NULL OR expires_at > now())
             AND initiation IN ('awaiting_bank_choice', 'awaiting_debtor_account',
                                'awaiting_shopper_identification',
                                'outcome_unknown', 'not_created', 'pending')
             AND (initiation <> 'pending' OR initiation_lease_until IS NULL
                  OR initiation_lease_until < now())
             AND NOT ($2 AND initiation IN ('outcome_unknown', 'pending'))
             AND NOT EXISTS (SELECT 1 FROM payment_events
                             WHERE payment_id = $1 AND kind = 'initiated')
           FOR UPDATE"#,
        id,
        earlier_may_be_live
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(previous) = previous else {
        return Ok(None);
    };
    let attempt = sqlx::query_scalar!(
        r#"UPDATE payments
           SET state_hash = $2, state_used_at = NULL, initiation_lease_until = $3,
               initiation = 'pending', initiation_attempts = initiation_attempts + 1
           WHERE id = $1
           RETURNING initiation_attempts"#,
        id,
        state_hash,
        lease_until,
    )
    .fetch_one(&mut *conn)
    .await?;
    let earlier = match previous.initiation.as_str() {
        "pending" => "no answer recorded (interrupted)",
        other => other,
    };
    note(
        conn,
        id,
        "initiation_attempt",
        json!({
            "attempt": attempt,
            "by": "shopper",
            "previous_outcome": earlier,
        }),
    )
    .await?;
    Ok(Some(attempt))
}

/// Records the bank's answer to attempt `attempt`, if that attempt is still the current one
/// and nothing is recorded yet (guarded in SQL). Otherwise the answer is kept in the ledger
/// as an orphan (a bank payment whose link nobody will ever see). Returns whether it was
/// recorded.
#[allow(clippy::too_many_arguments)] // one column each; a struct would only rename them
pub async fn record_initiated(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    bank_payment_id: &str,
    bank_link: Option<&str>,
    bank_links: &serde_json::Value,
    bank_status: Option<&str>,
    bank_may_act_without_hop: bool,
) -> Result<bool, sqlx::Error> {
    let (links_mac, links_key_id) = seal_bank_links(id, bank_payment_id, bank_links)?;
    // A bank that may act with nobody passing the hop: recorded as if it were opened now,
    // so that neither a cancel nor the horizon takes "nobody could sign" for a fact.
    let recorded = sqlx::query!(
        r#"UPDATE payments
           SET bank_payment_id = $2, authorization_url = $3, bank_status = $4,
               initiation = 'initiated', bank_links = $6,
               hop_opened_at = CASE WHEN $7 THEN coalesce(hop_opened_at, now()) ELSE hop_opened_at END,
               bank_links_mac = $8, bank_links_mac_key_id = $9
           WHERE id = $1 AND initiation_attempts = $5 AND bank_payment_id IS NULL
             AND status = 'awaiting_authorization'"#,
        id,
        bank_payment_id,
        bank_link,
        bank_status,
        attempt,
        bank_links,
        bank_may_act_without_hop,
        links_mac,
        links_key_id,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    events::append(
        conn,
        id,
        NewEvent {
            kind: if recorded {
                "initiated"
            } else {
                "initiation_orphan"
            }
            .into(),
            old_status: None,
            new_status: None,
            bank_status: bank_status.map(str::to_owned),
            detail: if recorded {
                initiated_detail(
                    attempt,
                    bank_payment_id,
                    bank_link,
                    bank_may_act_without_hop,
                )
            } else {
                json!({ "attempt": attempt, "bank_payment_id": bank_payment_id })
            },
        },
    )
    .await?;
    if recorded {
        sqlx::query!(
            "UPDATE payment_polls SET next_poll_at = now(), poll_failures = 0 WHERE payment_id = $1",
            id
        )
        .execute(&mut *conn)
        .await?;
        // Wakes the pollers at commit: the new payment is due now.
        sqlx::query!("SELECT pg_notify($1, '') AS \"n: ()\"", POLL_CHANNEL)
            .fetch_one(&mut *conn)
            .await?;
    }
    Ok(recorded)
}

/// The ledger event of a bank answer to an initiation that echoed the payment's terms with
/// other values than pisgate sent ([`crate::bank::Initiated::echo_mismatch`]).
pub const TERMS_MISMATCH: &str = "bank_terms_mismatch";

/// Records, with the answer of attempt `attempt` it belongs to, that the bank made the
/// payment with other `fields` (`amount`, `currency`, `creditor_account`) than pisgate
/// sent: from now on pisgate never has it signed or submitted ([`terms_mismatch`]). Only
/// the names of the terms go into the ledger, never the bank's values (an account number).
pub async fn record_terms_mismatch(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    bank_payment_id: &str,
    fields: &[&str],
) -> Result<(), sqlx::Error> {
    note(
        conn,
        id,
        TERMS_MISMATCH,
        json!({
            "attempt": attempt,
            "bank_payment_id": bank_payment_id,
            "fields": fields,
        }),
    )
    .await
}

/// Whether the bank's recorded answer to the payment's initiation contradicted its terms
/// (its [`TERMS_MISMATCH`] event, in the hash-chained ledger): such a payment is never
/// signed or submitted through pisgate.
pub async fn terms_mismatch(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM payment_events
                          WHERE payment_id = $1 AND kind = 'bank_terms_mismatch') AS "any!""#,
        id
    )
    .fetch_one(conn)
    .await
}

/// When pisgate recorded the bank's answer to the payment's initiation (its last `initiated`
/// event): the bank created the payment before that. `None` when no answer is recorded.
pub async fn bank_answered_at(pool: &Db, id: Uuid) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT max(created_at) AS "at" FROM payment_events
           WHERE payment_id = $1 AND kind = 'initiated'"#,
        id
    )
    .fetch_one(pool)
    .await
}

/// Whether `attempt` is still the payment's current, unanswered attempt; locks the row for
/// the caller's transaction. Only that attempt may record a refusal or give its key back.
pub async fn is_current_attempt(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT 1 AS "one!" FROM payments
           WHERE id = $1 AND initiation_attempts = $2 AND initiation = 'pending'
             AND bank_payment_id IS NULL AND status = 'awaiting_authorization'
           FOR UPDATE"#,
        id,
        attempt
    )
    .fetch_optional(conn)
    .await?
    .is_some())
}

/// Records that the bank refused attempt `attempt` (call [`transition`] to `failed` with it).
pub async fn mark_refused(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payments SET initiation = 'refused' WHERE id = $1 AND initiation = 'pending'",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that attempt `attempt` got no answer pisgate can trust (`outcome_unknown`: a
/// timeout or a dropped connection after sending, an unreadable answer) or provably created
/// nothing (`not_created`: 429, 503, connection refused). The payment stays open for a retry
/// with the same key.
pub async fn record_attempt_unanswered(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    outcome: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE payments SET initiation = $3::text
           WHERE id = $1 AND initiation_attempts = $2 AND initiation = 'pending'"#,
        id,
        attempt,
        outcome,
    )
    .execute(&mut *conn)
    .await?;
    let mut detail = detail;
    if let Some(obj) = detail.as_object_mut() {
        obj.insert("attempt".into(), json!(attempt));
        obj.insert("outcome".into(), json!(outcome));
    }
    note(conn, id, "initiation_unanswered", detail).await
}

/// Marks the state used together with the durable outcome of the code exchange (call it in
/// that transaction), and ends the callback's claim.
pub async fn consume_state(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payments SET state_used_at = now(), callback_claimed_until = NULL WHERE id = $1",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims the right to run the code exchange of a payment's callback for `lease`: only one
/// callback at a time, and none once the state is used. Returns whether it was claimed.
pub async fn claim_callback(
    pool: &Db,
    id: Uuid,
    lease: std::time::Duration,
) -> Result<bool, sqlx::Error> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let claimed = sqlx::query!(
        r#"UPDATE payments
           SET callback_claimed_until = now() + make_interval(secs => $2::bigint / 1000.0)
           WHERE id = $1 AND state_used_at IS NULL
             AND (callback_claimed_until IS NULL OR callback_claimed_until < now())"#,
        id,
        lease_ms,
    )
    .execute(pool)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

/// Gives a callback's claim back without using the state (the exchange can be tried again
/// by a repeated callback).
pub async fn release_callback(pool: &Db, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payments SET callback_claimed_until = NULL WHERE id = $1",
        id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// What the authorization hop may do for a shopper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// Send the shopper to the bank's signing link.
    ToBank(String),
    /// The bank wants an authorisation started first (explicit redirect or decoupled SCA:
    /// a `startAuthorisation*` link, no signing link yet): [`crate::api::sca`] takes over.
    StartAuthorisation,
    /// The payment cannot be signed (any more): show a plain page.
    Closed(HopClosed),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopClosed {
    /// The bank's answer is not recorded (yet).
    NotReady,
    /// pisgate's signing window has passed.
    WindowPassed,
    /// The merchant cancelled.
    CancelRequested,
    /// The bank took the payment with no step on a page of its own (an SCA exemption, or a
    /// decoupled SCA it started in the shopper's app): it is processing it, nothing to open.
    AtTheBank,
    /// The payment is signed or final.
    Done(PaymentStatus),
    /// The bank link on the payment row is not the one its ledger recorded (the row was
    /// edited without the ledger key: a page swapped in SQL): no shopper is sent there.
    LinkNotInLedger,
}

/// What the hop would do for this payment at `now`, recording nothing: the consent page
/// shows its button only when this leads to the bank.
pub fn hop_for(p: &PaymentRecord, now: DateTime<Utc>) -> Hop {
    let status = p.status();
    if status != PaymentStatus::AwaitingAuthorization || p.psu_key.is_some() {
        Hop::Closed(HopClosed::Done(status))
    } else if p.cancel_requested_at.is_some() {
        Hop::Closed(HopClosed::CancelRequested)
    } else if p.expires_at.is_some_and(|t| t <= now) {
        Hop::Closed(HopClosed::WindowPassed)
    } else {
        match (&p.authorization_url, p.is_initiated()) {
            (Some(link), true) => Hop::ToBank(link.clone()),
            (None, true) if starts_authorisation(&p.bank_links) => Hop::StartAuthorisation,
            // Recorded as opened with the bank's answer (`Initiated::bank_may_act_without_hop`).
            (None, true) if p.hop_opened_at.is_some() => Hop::Closed(HopClosed::AtTheBank),
            _ => Hop::Closed(HopClosed::NotReady),
        }
    }
}

/// The `initiated` event's detail: the attempt, the bank's payment id, the digest of its
/// signing page, and, at a bank that may act with nobody passing the hop, `hop_opened`
/// (recorded as if the hop were opened: [`link_may_be_out`] reads it).
fn initiated_detail(
    attempt: i32,
    bank_payment_id: &str,
    bank_link: Option<&str>,
    hop_opened: bool,
) -> serde_json::Value {
    let mut detail = json!({
        "attempt": attempt,
        "bank_payment_id": bank_payment_id,
        "authorization_url_sha256": binding::authorization_url_digest(bank_link),
    });
    if hop_opened {
        detail["hop_opened"] = json!(true);
    }
    detail
}

/// Whether someone may hold the bank's link of payment `id`, or the bank may act on it
/// without anyone: the row says so (`hop_opened_at`), or its ledger does (the hop opened,
/// a Berlin Group authorisation or a BankID signing order started, or the bank's answer
/// said it may act without the hop) although the row's column is empty: cleared in SQL,
/// which is logged as a binding mismatch (`ledger verify` names it). What every "nobody
/// could sign it" decision asks: such a payment is never ended here without the bank's word.
/// One indexed read (the payment's few events of those kinds), only when the column is empty.
pub(crate) async fn link_may_be_out(
    conn: &mut PgConnection,
    id: Uuid,
    hop_opened_at: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    if hop_opened_at.is_some() {
        return Ok(true);
    }
    let in_ledger = sqlx::query!(
        "SELECT kind, detail FROM payment_events WHERE payment_id = $1 AND kind = ANY($2)",
        id,
        binding::LINK_OUT_EVENT_KINDS as &[&str],
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .any(|e| binding::event_says_link_went_out(&e.kind, &e.detail));
    if in_ledger {
        tracing::error!(
            payment_id = %id,
            "the payment row says nobody reached the bank, its ledger says the link went out: taken as out (run `pisgate ledger verify`)"
        );
        metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
    }
    Ok(in_ledger)
}

/// Whether the bank's links ask pisgate to start an authorisation (`startAuthorisation*`,
/// or an OAuth SCA's `scaOAuth`, whose start is the shopper's authorization-code flow).
fn starts_authorisation(links: &serde_json::Value) -> bool {
    links.as_object().is_some_and(|m| {
        m.keys()
            .any(|k| k.starts_with("startAuthorisation") || k == "scaOAuth")
    })
}

/// Decides the hop for a shopper and, when it leads to the bank, records (once) that the
/// bank's link was handed out. Locks the row, so a concurrent cancel either sees the
/// opened hop or closes it first.
pub async fn open_hop(conn: &mut PgConnection, id: Uuid) -> Result<Option<Hop>, sqlx::Error> {
    let Some(p) = get_for_update(conn, id).await? else {
        return Ok(None);
    };
    let mut hop = hop_for(&p, Utc::now());
    if let Hop::ToBank(link) = &hop
        && !crate::ledger::events::link_matches_ledger(conn, id, link).await?
    {
        tracing::error!(
            payment_id = %id,
            "the bank link on the payment row is not the one its ledger recorded: no shopper is sent there (run `pisgate ledger verify`)"
        );
        metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
        hop = Hop::Closed(HopClosed::LinkNotInLedger);
    }
    if let Hop::ToBank(_) = hop
        && p.hop_opened_at.is_none()
    {
        sqlx::query!(
            "UPDATE payments SET hop_opened_at = now() WHERE id = $1",
            id
        )
        .execute(&mut *conn)
        .await?;
        note(conn, id, "authorization_opened", json!({})).await?;
    }
    Ok(Some(hop))
}

/// Where a cancel stands after its first step ([`start_cancel`]).
#[derive(Debug)]
pub enum CancelStart {
    /// Final already: nothing to cancel.
    Final(PaymentRecord),
    /// Nobody went through the hop: nothing can be signed, the payment is now `cancelled`.
    Cancelled,
    /// A shopper may be at the bank's page right now: the bank decides what happens.
    BankDecides(PaymentRecord),
    /// The shopper signed: only the bank can delete it.
    Signed(PaymentRecord),
}

/// Who asks to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelBy {
    Merchant,
    /// On the consent page: never a payment already signed, which only the merchant may
    /// have deleted at the bank, nor one the shopper signs afterwards (in another tab, or
    /// the old tab's button pressed after signing): then the bank's word stands.
    Shopper,
}

impl CancelBy {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelBy::Merchant => "merchant",
            CancelBy::Shopper => "shopper",
        }
    }
}

/// The first step of every cancel, the merchant's and the shopper's on the consent page:
/// the hop stops leading to the bank at once, and a payment whose link nobody followed ends
/// `cancelled` in the same transaction.
pub async fn start_cancel(
    conn: &mut PgConnection,
    id: Uuid,
    by: CancelBy,
    acts_without_hop: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Option<CancelStart>, TransitionError> {
    let Some(p) = get_for_update(conn, id).await? else {
        return Ok(None);
    };
    let signed = p.status() != PaymentStatus::AwaitingAuthorization || p.psu_key.is_some();
    if p.status().is_final() {
        return Ok(Some(CancelStart::Final(p)));
    }
    if signed && by == CancelBy::Shopper {
        return Ok(Some(CancelStart::Signed(p)));
    }
    request_cancel(conn, id, by).await?;
    if signed {
        return Ok(Some(CancelStart::Signed(p)));
    }
    // At a bank that may execute a payment without the shopper (`acts_without_hop`), an
    // attempt whose answer is lost or not in yet may be live: the cancel is recorded (the
    // hop stays closed, an answer that comes in is recorded and followed) and the bank's
    // status decides; nothing is ended here as "nobody could sign it".
    // (Judged by the locked row's bank: a deferred payment's bank may have been chosen
    // since the caller looked.)
    if (p.answer_unrecorded() && acts_without_hop(&p.bank))
        || link_may_be_out(conn, id, p.hop_opened_at).await?
    {
        return Ok(Some(CancelStart::BankDecides(p)));
    }
    transition(
        conn,
        id,
        Change {
            evidence: Evidence::LinkNeverHandedOut,
            bank_status: None,
            kind: "cancelled",
            detail: json!({ "by": by.as_str() }),
            failure: (by == CancelBy::Shopper).then_some((
                "cancelled_by_shopper",
                "cancelled by the shopper on the consent page, before reaching the bank",
            )),
        },
    )
    .await?;
    Ok(Some(CancelStart::Cancelled))
}

/// Records a request to cancel, and whose: the hop stops leading to the bank at once. The
/// merchant's request stands over the shopper's (it is the one that may delete a signed
/// payment at the bank), so a merchant's cancel after the shopper's is recorded too.
/// Returns the payment as it was (locked for the caller's transaction).
pub async fn request_cancel(
    conn: &mut PgConnection,
    id: Uuid,
    by: CancelBy,
) -> Result<Option<PaymentRecord>, sqlx::Error> {
    let Some(p) = get_for_update(conn, id).await? else {
        return Ok(None);
    };
    if p.status().is_final() {
        return Ok(Some(p));
    }
    let recorded = sqlx::query!(
        r#"UPDATE payments
           SET cancel_requested_at = COALESCE(cancel_requested_at, now()),
               cancel_requested_by = $2
           WHERE id = $1
             AND (cancel_requested_at IS NULL
                  OR ($2 = 'merchant' AND cancel_requested_by = 'shopper'))"#,
        id,
        by.as_str()
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if recorded == 1 {
        note(conn, id, "cancel_requested", json!({ "by": by.as_str() })).await?;
    }
    Ok(Some(p))
}

pub(crate) use super::events::merchant_cancel_in_ledger;

/// Who asked to cancel the payment, if anyone did. A request recorded before requests said
/// whose is the merchant's (the only rule there was).
pub async fn cancel_requested_by(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<CancelBy>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT cancel_requested_at IS NOT NULL AS "requested!", cancel_requested_by
           FROM payments WHERE id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row
        .filter(|r| r.requested)
        .map(|r| match r.cancel_requested_by.as_deref() {
            Some("shopper") => CancelBy::Shopper,
            _ => CancelBy::Merchant,
        }))
}

pub async fn set_psu_key(
    conn: &mut PgConnection,
    id: Uuid,
    psu_key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payments SET psu_key = $2 WHERE id = $1",
        id,
        psu_key
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A status change request: the evidence decides the new status.
pub struct Change<'a> {
    pub evidence: Evidence,
    pub bank_status: Option<&'a str>,
    pub kind: &'a str,
    pub detail: serde_json::Value,
    /// Failure code and detail; when `None` a final failure gets its default.
    pub failure: Option<(&'a str, &'a str)>,
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("payment {0} not found")]
    NotFound(Uuid),
    #[error("{0}")]
    Refused(#[from] crate::domain::status::TransitionError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The failure code recorded with a final status when the caller gives none.
fn default_failure(evidence: Evidence) -> Option<(&'static str, &'static str)> {
    match evidence {
        Evidence::Bank(PaymentStatus::Rejected) => {
            Some(("rejected_by_bank", "the bank rejected the payment"))
        }
        Evidence::Bank(PaymentStatus::AuthorizationFailed) => Some((
            "authorization_failed",
            "the shopper did not complete the authorization at the bank",
        )),
        Evidence::Bank(PaymentStatus::Cancelled) => {
            Some(("cancelled_at_bank", "the payment was cancelled at the bank"))
        }
        Evidence::Bank(PaymentStatus::Expired)
        | Evidence::Unsignable {
            cancel_requested: false,
            ..
        } => Some((
            "not_signed",
            "the shopper did not sign and the bank no longer accepts a signature",
        )),
        Evidence::Unsignable {
            cancel_requested: true,
            ..
        } => Some((
            "cancelled_by_merchant",
            "cancelled by the merchant; the shopper never signed",
        )),
        Evidence::LinkNeverHandedOut => Some((
            "cancelled_by_merchant",
            "cancelled by the merchant before the shopper reached the bank",
        )),
        Evidence::SubmissionWithheld => Some((
            "cancelled_by_merchant",
            "cancelled by the merchant before the signed payment was submitted; it was never submitted",
        )),
        Evidence::NoneAtBank => Some((
            "not_made_at_bank",
            "the bank's answer to the initiation was lost, and the bank confirmed to pisgate's operator that it made no such payment",
        )),
        Evidence::NeverSubmittable => Some((
            "authorization_not_completed",
            "the shopper authorized the payment at the bank, but the authorization never reached pisgate (the code exchange failed or the shopper never came back), so it was never submitted and the bank will not debit it",
        )),
        _ => None,
    }
}

/// Moves a payment to the status its evidence supports, through the domain status machine,
/// in the caller's transaction, with its ledger event and webhook. Returns the old status,
/// or `None` when the status stays. A bank status is recorded even when the status does not
/// change (or may not: a final payment keeps its status but shows the bank's latest word).
pub async fn transition(
    conn: &mut PgConnection,
    id: Uuid,
    change: Change<'_>,
) -> Result<Option<PaymentStatus>, TransitionError> {
    let current = get_for_update(conn, id)
        .await?
        .ok_or(TransitionError::NotFound(id))?;
    let from = current.status();
    let outcome = from.apply(change.evidence);
    // A read older than the recorded bank status (it started before a newer one was
    // written) never moves it backwards.
    let stale = change
        .bank_status
        .is_some_and(|read| bank_status::is_backwards(current.bank_status.as_deref(), read));
    if stale {
        tracing::info!(
            recorded = current.bank_status.as_deref(),
            read = change.bank_status,
            "a stale bank read: the recorded bank status stays"
        );
    }
    let to = match outcome {
        Ok(Transition::Changed { to, .. }) => to,
        Ok(Transition::Unchanged(_)) | Err(_) => {
            // A final status the bank now contradicts stays; the bank's word is kept beside
            // it and the disagreement recorded (never silently overwritten either way).
            // Recorded even for a read that looks stale by the bank's order: a bank that goes
            // back on a final word (a deleted payment it executes after all) looks the same,
            // and must never go unseen; the shown bank status stays the newer word.
            let disagreement = match (change.evidence, change.bank_status) {
                (Evidence::Bank(bank), Some(bank_status)) if from.disagrees_with_bank(bank) => {
                    Some((bank, bank_status))
                }
                _ => None,
            };
            let source = change.detail.clone();
            // A refused change may come from an older read (a poll answered before the
            // callback's): only a final word of the bank, or one that contradicts a final
            // status, is worth showing then; a stale one never.
            let worth_showing =
                outcome.is_ok() || change.evidence.status().is_final() || disagreement.is_some();
            if worth_showing
                && !stale
                && change.bank_status.is_some()
                && change.bank_status != current.bank_status.as_deref()
            {
                sqlx::query!(
                    "UPDATE payments SET bank_status = $2 WHERE id = $1",
                    id,
                    change.bank_status
                )
                .execute(&mut *conn)
                .await?;
                events::append(
                    conn,
                    id,
                    NewEvent {
                        kind: "bank_status_changed".into(),
                        old_status: Some(from),
                        new_status: Some(from),
                        bank_status: change.bank_status.map(str::to_owned),
                        detail: change.detail,
                    },
                )
                .await?;
            }
            if let Some((bank, bank_status)) = disagreement {
                disagreements::record(conn, id, from, bank_status, bank, &source).await?;
            }
            outcome?;
            return Ok(None);
        }
    };
    if from == PaymentStatus::AwaitingAuthorization && to == PaymentStatus::Paid {
        // Paid implies authorized: the merchant hears both, in order, even when no poll
        // caught the bank in between.
        Box::pin(transition(
            conn,
            id,
            Change {
                evidence: Evidence::Bank(PaymentStatus::Authorized),
                bank_status: change.bank_status,
                kind: change.kind,
                detail: json!({ "implied_by": "paid" }),
                failure: None,
            },
        ))
        .await?;
        return Box::pin(transition(conn, id, change)).await;
    }
    let shoppers_cancel = change.failure.is_none()
        && matches!(
            change.evidence,
            Evidence::Unsignable {
                cancel_requested: true,
                ..
            }
        )
        && cancel_requested_by(conn, id).await? == Some(CancelBy::Shopper);
    let (failure_code, failure_detail) = change
        .failure
        .or(shoppers_cancel.then_some((
            "cancelled_by_shopper",
            "cancelled by the shopper on the consent page; the shopper never signed",
        )))
        .or_else(|| default_failure(change.evidence))
        .unzip();
    sqlx::query!(
        r#"UPDATE payments
           SET status = $2::text,
               bank_status = COALESCE($3, bank_status),
               failure_code = COALESCE($4, failure_code),
               failure_detail = COALESCE($5, failure_detail),
               authorized_at = CASE WHEN $2 = 'authorized' THEN now() ELSE authorized_at END,
               finalized_at = CASE WHEN $6 THEN now() ELSE finalized_at END
           WHERE id = $1 AND status = $7"#,
        id,
        to.as_str(),
        change.bank_status.filter(|_| !stale),
        failure_code,
        failure_detail,
        to.is_final(),
        from.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    // Counted as the change is written: a caller whose transaction then fails (rare) has
    // been counted anyway.
    if to.is_final() {
        metrics::counter!("pisgate_payments_finished_total", "status" => to.as_str()).increment(1);
    }
    if to.is_final() {
        // Nothing more to follow, except a payment that ends expired or cancelled while
        // someone may hold its bank link: a few more reads of the bank, so that a bank that
        // later says otherwise is seen (see `crate::ledger::disagreements`).
        let watch = matches!(to, PaymentStatus::Expired | PaymentStatus::Cancelled)
            && current.bank_payment_id.is_some()
            && link_may_be_out(conn, id, current.hop_opened_at).await?;
        if watch {
            sqlx::query!(
                "UPDATE payment_polls SET final_reads_left = $2::integer WHERE payment_id = $1",
                id,
                AFTER_FINAL_READS,
            )
            .execute(&mut *conn)
            .await?;
        } else {
            sqlx::query!("DELETE FROM payment_polls WHERE payment_id = $1", id)
                .execute(&mut *conn)
                .await?;
        }
    }
    let event = events::append(
        conn,
        id,
        NewEvent {
            kind: change.kind.to_owned(),
            old_status: Some(from),
            new_status: Some(to),
            // As the row: a stale read's status is in neither (the ledger binds the row's).
            bank_status: change.bank_status.filter(|_| !stale).map(str::to_owned),
            detail: change.detail,
        },
    )
    .await?;
    // The merchant hears of it through the outbox, committed with the change or not at all.
    let after = get(conn, id).await?.ok_or(TransitionError::NotFound(id))?;
    webhooks::enqueue(
        conn,
        &after,
        &format!("payment.{}", to.as_str()),
        json!({ "previous_status": from.as_str(), "ledger_seq": event.seq }),
    )
    .await?;
    Ok(Some(from))
}

/// How many more times the bank is read after a payment ended `expired` or `cancelled`
/// with a bank link someone may hold (spaced by `poller.after_final_interval`).
pub const AFTER_FINAL_READS: i32 = 3;

/// What applying a bank report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The status changed from this one.
    Changed(PaymentStatus),
    /// Nothing to change (the bank status alone may have been recorded).
    Unchanged,
    /// The bank's status has no meaning for us: nothing changed (counted and alerted).
    UnknownStatus,
    /// The status machine refused (e.g. the payment is already final).
    Refused,
}

/// Applies a bank status report to a payment: the one path for the callback, the poller and
/// cancellation. UserApprovalTimeout (mapped to `expired`) is evidence that the payment can
/// no longer be signed, which ends it `cancelled` instead when the merchant asked to cancel.
pub async fn apply_bank_report(
    conn: &mut PgConnection,
    id: Uuid,
    bank_status: &str,
    mapped: Option<PaymentStatus>,
    detail: serde_json::Value,
) -> Result<Applied, TransitionError> {
    let current = get_for_update(conn, id)
        .await?
        .ok_or(TransitionError::NotFound(id))?;
    let Some(to) = mapped else {
        tracing::warn!(bank_status, "unknown bank status: no change");
        metrics::counter!("pisgate_unknown_bank_status_total").increment(1);
        return Ok(Applied::UnknownStatus);
    };
    if let Some(recorded) = bank_id_mismatch(conn, &current).await? {
        // The row's bank id is not the one the ledger recorded at initiation: the report is
        // about another bank payment (a row rewritten in SQL). Never act on it.
        tracing::error!(
            bank_status,
            ledger_bank_payment_id = recorded.as_deref().unwrap_or("none"),
            "the payment's bank id is not the one its ledger recorded: bank report refused"
        );
        metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
        return Ok(Applied::Refused);
    }
    let evidence = match to {
        PaymentStatus::Expired => Evidence::Unsignable {
            why: Unsignable::BankTimedOut,
            cancel_requested: current.cancel_requested_at.is_some(),
        },
        s => Evidence::Bank(s),
    };
    match transition(
        conn,
        id,
        Change {
            evidence,
            bank_status: Some(bank_status),
            kind: "status_changed",
            detail,
            failure: None,
        },
    )
    .await
    {
        Ok(Some(from)) => Ok(Applied::Changed(from)),
        Ok(None) => Ok(Applied::Unchanged),
        Err(TransitionError::Refused(e)) => {
            tracing::info!(error = %e, bank_status, "bank status not applied");
            Ok(Applied::Refused)
        }
        Err(e) => Err(e),
    }
}

/// The bank payment id the ledger recorded for `p` (its last `initiated` event), when the
/// row says another: `Some(recorded)` on a mismatch. A payment from before the ledger bound
/// its facts is held only to an id it recorded. One indexed read; the events' hashes are not
/// recomputed here (`ledger verify` does that), so an intruder must also edit an event,
/// which breaks the chain.
async fn bank_id_mismatch(
    conn: &mut PgConnection,
    p: &PaymentRecord,
) -> Result<Option<Option<String>>, sqlx::Error> {
    let found = sqlx::query!(
        r#"SELECT (SELECT detail->>'bank_payment_id' FROM payment_events
                   WHERE payment_id = $1 AND kind = 'initiated'
                   ORDER BY seq DESC LIMIT 1) AS "recorded",
                  (SELECT detail ? 'facts' FROM payment_events
                   WHERE payment_id = $1 AND seq = 1) AS "bound""#,
        p.id
    )
    .fetch_one(&mut *conn)
    .await?;
    let recorded = found.recorded.filter(|id| !id.is_empty());
    let bound = found.bound.unwrap_or(false);
    let mismatch = (bound || recorded.is_some()) && recorded != p.bank_payment_id;
    Ok(mismatch.then_some(recorded))
}

/// Appends an event that changes no status (a callback seen, a token exchanged, a cancel
/// asked for), locking the payment row like every other write.
pub async fn note(
    conn: &mut PgConnection,
    id: Uuid,
    kind: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    note_seq(conn, id, kind, detail).await.map(drop)
}

/// The highest occurrence of a standing order its ledger recorded paid (`occurrence_paid`
/// events; each is notified to the merchant once), 0 for none. One indexed read.
pub async fn occurrences_recorded(conn: &mut PgConnection, id: Uuid) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(max((detail->>'occurrence')::integer), 0) AS "n!"
           FROM payment_events WHERE payment_id = $1 AND kind = 'occurrence_paid'"#,
        id
    )
    .fetch_one(conn)
    .await
}

/// [`note`], giving the event's `seq` (a webhook about it carries it as `ledger_seq`).
pub async fn note_seq(
    conn: &mut PgConnection,
    id: Uuid,
    kind: &str,
    detail: serde_json::Value,
) -> Result<i32, sqlx::Error> {
    let event = events::append(
        conn,
        id,
        NewEvent {
            kind: kind.to_owned(),
            old_status: None,
            new_status: None,
            bank_status: None,
            detail,
        },
    )
    .await?;
    Ok(event.seq)
}
