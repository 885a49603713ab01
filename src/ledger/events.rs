//! The append-only payment ledger: `payment_events`, and each payment's chain head.
//!
//! One row per transition or bank interaction of a payment, numbered `seq = 1, 2, 3, …` per
//! payment and chained with a keyed hash, so that an edit, a reordering or a rewrite by
//! someone without the ledger key is detectable by [`crate::ledger::verify::verify_all`]
//! (`pisgate ledger verify`). A trigger refuses UPDATE, DELETE and TRUNCATE; the chain, the
//! heads and the checkpoints catch whoever disables it.
//!
//! [`append`] runs inside the caller's transaction (the one that changes the payment, so the
//! event and the change commit together). It locks the `payments` row (`FOR UPDATE`), which
//! serialises appends per payment, then reads the last event in a new statement; this needs
//! the default READ COMMITTED isolation (under REPEATABLE READ a concurrent append makes the
//! insert fail on the primary key instead of chaining wrongly). In the same transaction it
//! moves the payment's head (`payments.ledger_seq`, `payments.ledger_head`: the last seq and
//! its hash), so that deleting a payment's last events, or all of them, leaves a head that
//! no chain ends at. This module must never hold that transaction open across a network
//! call, and must never UPDATE or DELETE an event.
//!
//! The key: `append` signs with the process's installed ring ([`crate::ledger::keys`]), set
//! once by `serve` from `ledger.key`/`ledger.key_id`; it fails rather than write an unkeyed
//! event when none is installed. Every event stores its `hash_version` and `key_id`, so old
//! chains keep verifying under the version and key they were written with.
//!
//! # Hash chain (storage contract)
//!
//! ```text
//! version 1 (hash_version = 1, key_id NULL; every event written before keyed chains):
//!   hash(seq = n) = SHA-256(prev || canonical_v1(event))
//! version 2 (hash_version = 2, key_id = the ledger key's id; every event since):
//!   hash(seq = n) = HMAC-SHA256(ledger key[key_id], prev || canonical_v2(event))
//! prev = hash(seq = n - 1) (stored as prev_hash), or 32 zero bytes for seq = 1
//! ```
//!
//! A chain may start in version 1 and go on in version 2 (a payment in flight when keyed
//! chains arrived), never the other way round. `canonical_v1(event)` is the concatenation of,
//! in this order:
//!
//! | field        | encoding                                                          |
//! |--------------|-------------------------------------------------------------------|
//! | domain tag   | `str("pisgate/payment_event/v1")`                                 |
//! | payment_id   | the UUID's 16 bytes in RFC 4122 (big-endian) order                |
//! | seq          | 4 bytes, big-endian                                               |
//! | kind         | `str(kind)`                                                       |
//! | old_status   | `opt(old_status)` (the snake_case status as stored)               |
//! | new_status   | `opt(new_status)`                                                 |
//! | bank_status  | `opt(bank_status)`                                                |
//! | created_at   | `str(RFC 3339 UTC, exactly 6 fractional digits, "Z")`, e.g. `2026-11-21T20:11:00.123456Z` |
//! | detail       | `str(canonical JSON of detail)`                                   |
//!
//! `canonical_v2(event)` is `str("pisgate/payment_event/v2")`, then `str(key_id)`, then the
//! fields of version 1 from `payment_id` on, unchanged. The key id is hashed so that a
//! relabelled key is an edit. The key is the 32 bytes of `ledger.key` (base64 decoded).
//!
//! `str(s)` = 4-byte big-endian byte length of `s` followed by its UTF-8 bytes, and
//! `opt(None)` = the byte `0x00`, `opt(Some(s))` = the byte `0x01` followed by `str(s)`.
//!
//! Canonical JSON (our own writer, never serde_json's map order, because jsonb reorders keys
//! and `preserve_order` may be switched on by any dependency): no whitespace; `null`, `true`,
//! `false`; objects with keys sorted by their UTF-8 bytes; arrays in order; strings quoted
//! with `"` and `\` escaped as `\"` and `\\`, control characters U+0000..U+001F as `\u00xx`
//! (lower-case hex) and every other character as its raw UTF-8; numbers: integers in
//! decimal, a float with an integral value in the i64/u64 range written as that integer
//! (so `-0.0` is `0`), any other float as the shortest decimal digits `d1 d2 … dn` that read
//! back as the same f64, written `[-]d1[.d2…dn]e<exponent>` with no `+` and no leading zeros
//! in the exponent (Rust's `{:e}`; e.g. `1e-1`, `2.5e0`, `1e-7`, `1e20`).
//!
//! `created_at` is taken in Rust and truncated to microseconds, Postgres's precision, so what
//! is hashed is exactly what is stored. `detail` is first passed through Postgres
//! (`$1::jsonb`) and the value jsonb gives back is what is hashed, so number forms jsonb
//! normalises (`1e18` → `1000000000000000000`) hash the same at append and at verify.
//!
//! # What catches what
//!
//! * An edited, reordered or relinked event: its hash or the next event's `prev_hash`.
//! * A rewrite with recomputed hashes: version 2 hashes need the key; downgrading events to
//!   the unkeyed version 1 is refused after a version 2 event and caught by the checkpoint's
//!   count of version 1 events.
//! * Deleted last events, or all of a payment's events: the payment's head.
//! * A payment row rewritten (amount, merchant, creditor, bank id, bank status, shopper key):
//!   what its chain binds ([`crate::ledger::binding`]), checked by `ledger verify`.
//! * A deleted payment with its events, a truncated ledger, a chain cut back to an older head:
//!   the last checkpoint ([`crate::ledger::checkpoints`]), whose signed digest of every head
//!   the current ledger must extend.
//!
//! What it cannot see: events appended after the last checkpoint, deleted together with
//! their payment (or cut back with the head moved to match) by someone with write access.
//! Checkpoints bound that window; the checkpoint's log line is the copy outside the database
//! that catches deleted checkpoints. Version 1 chains are only protected from the first
//! checkpoint on (`serve` records one at start, or run `pisgate ledger checkpoint` right after
//! migrating).

use super::Db;
use crate::domain::PaymentStatus;
use crate::ledger::keys::{self, LedgerKeys};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

pub use crate::ledger::canonical::canonical_json;
pub use crate::ledger::verify::{
    BreakReason, BrokenEvent, VerifyReport, verify_all, verify_payment,
};

const DOMAIN_TAG_V1: &str = "pisgate/payment_event/v1";
const DOMAIN_TAG_V2: &str = "pisgate/payment_event/v2";
const GENESIS_PREV: [u8; 32] = [0; 32];
/// The unkeyed SHA-256 chain of the events written before keyed chains.
pub const HASH_V1: i16 = 1;
/// HMAC-SHA256 under the ledger key named by the event's `key_id`.
pub const HASH_V2: i16 = 2;

/// An event to record. `detail` is free-form JSON for the reader of the ledger (never a
/// token, key or full account number).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: String,
    pub old_status: Option<PaymentStatus>,
    pub new_status: Option<PaymentStatus>,
    pub bank_status: Option<String>,
    pub detail: Value,
}

impl NewEvent {
    /// An event of this kind with no statuses and an empty detail object.
    pub fn new(kind: impl Into<String>) -> NewEvent {
        NewEvent {
            kind: kind.into(),
            old_status: None,
            new_status: None,
            bank_status: None,
            detail: Value::Object(Default::default()),
        }
    }
}

/// An event as stored; serialises to what `GET /v1/payments/{id}/events` shows.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(
    as = LedgerEvent,
    description = "One entry of a payment's ledger: a transition or a bank interaction"
)]
pub struct StoredEvent {
    #[serde(skip)]
    pub payment_id: Uuid,
    pub seq: i32,
    pub kind: String,
    #[schema(required = true, inline)]
    pub old_status: Option<PaymentStatus>,
    #[schema(required = true, inline)]
    pub new_status: Option<PaymentStatus>,
    #[schema(required = true)]
    pub bank_status: Option<String>,
    #[schema(value_type = std::collections::HashMap<String, serde_json::Value>)]
    pub detail: Value,
    pub created_at: DateTime<Utc>,
    /// hex SHA-256(prev_hash || canonical event)
    #[serde(serialize_with = "serialize_hex")]
    #[schema(value_type = String)]
    pub hash: Vec<u8>,
    #[serde(skip)]
    pub prev_hash: Option<Vec<u8>>,
}

fn serialize_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// The hashed fields, borrowed as they are stored (statuses as text, so a tampered status
/// that no longer parses is still just a hash mismatch).
pub(crate) struct CanonicalEvent<'a> {
    pub(crate) payment_id: Uuid,
    pub(crate) seq: i32,
    pub(crate) kind: &'a str,
    pub(crate) old_status: Option<&'a str>,
    pub(crate) new_status: Option<&'a str>,
    pub(crate) bank_status: Option<&'a str>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) detail: &'a Value,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

impl<'a> CanonicalEvent<'a> {
    /// The hashed fields of `event` as `seq` of `payment_id`, with the `detail` as stored.
    pub(crate) fn of(
        payment_id: Uuid,
        seq: i32,
        event: &'a NewEvent,
        created_at: DateTime<Utc>,
        detail: &'a Value,
    ) -> CanonicalEvent<'a> {
        CanonicalEvent {
            payment_id,
            seq,
            kind: &event.kind,
            old_status: event.old_status.map(PaymentStatus::as_str),
            new_status: event.new_status.map(PaymentStatus::as_str),
            bank_status: event.bank_status.as_deref(),
            created_at,
            detail,
        }
    }

    /// `canonical_v1(event)` of the module doc.
    pub(crate) fn encode_v1(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        put_str(&mut out, DOMAIN_TAG_V1);
        self.encode_fields(&mut out);
        out
    }

    /// `canonical_v2(event)` of the module doc.
    pub(crate) fn encode_v2(&self, key_id: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        put_str(&mut out, DOMAIN_TAG_V2);
        put_str(&mut out, key_id);
        self.encode_fields(&mut out);
        out
    }

    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.payment_id.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        put_str(out, self.kind);
        put_opt(out, self.old_status);
        put_opt(out, self.new_status);
        put_opt(out, self.bank_status);
        put_str(out, &format_timestamp(self.created_at));
        put_str(out, &canonical_json(self.detail));
    }

    /// The version 1 (unkeyed) hash.
    pub(crate) fn hash_v1(&self, prev_hash: Option<&[u8]>) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(prev_hash.unwrap_or(&GENESIS_PREV));
        h.update(self.encode_v1());
        h.finalize().into()
    }

    /// The version 2 hash under `key_id`, or `None` when the ring has no such key.
    pub(crate) fn hash_v2(
        &self,
        keys: &LedgerKeys,
        key_id: &str,
        prev_hash: Option<&[u8]>,
    ) -> Option<[u8; 32]> {
        keys.mac(
            key_id,
            &[prev_hash.unwrap_or(&GENESIS_PREV), &self.encode_v2(key_id)],
        )
    }
}

pub(crate) fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Now, at the precision Postgres stores.
pub fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Appends an event to a payment's chain, inside the caller's transaction.
///
/// Errors with `RowNotFound` when the payment does not exist.
#[tracing::instrument(skip_all, fields(payment_id = %payment_id, kind = %event.kind, seq))]
pub async fn append(
    conn: &mut PgConnection,
    payment_id: Uuid,
    event: NewEvent,
) -> Result<StoredEvent, sqlx::Error> {
    // Serialises appends for this payment until the caller's transaction ends.
    sqlx::query!(
        "SELECT 1 AS one FROM payments WHERE id = $1 FOR UPDATE",
        payment_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(sqlx::Error::RowNotFound)?;
    let keys = keys::installed().ok_or_else(|| {
        sqlx::Error::Configuration("no ledger key is installed (ledger::keys::install)".into())
    })?;
    let key_id = keys.current_id();

    // A new statement, so (under READ COMMITTED) it sees appends committed while we waited.
    let last = sqlx::query!(
        r#"SELECT $2::jsonb AS "detail!",
                  last.seq AS "seq?", last.hash AS "hash?"
           FROM (SELECT 1) AS one
           LEFT JOIN LATERAL (
               SELECT seq, hash FROM payment_events
               WHERE payment_id = $1 ORDER BY seq DESC LIMIT 1
           ) AS last ON true"#,
        payment_id,
        &event.detail,
    )
    .fetch_one(&mut *conn)
    .await?;

    // A chain starts only with the payment's `created` event (written with the payment in
    // one statement): never restart one under a payment whose events were wiped, or the key
    // would sign whatever its rewritten row says from here on.
    if last.seq.is_none() && event.kind != "created" {
        tracing::error!(%payment_id, kind = %event.kind, "refusing to start a payment's ledger with anything but its created event: its events are gone");
        metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
        return Err(sqlx::Error::Protocol(format!(
            "payment {payment_id} has no ledger events: its chain cannot start with {:?}",
            event.kind
        )));
    }
    let seq = last.seq.unwrap_or(0) + 1;
    let prev_hash = last.hash;
    let created_at = now_micros();
    // What jsonb will give back for the same text, not what we were handed.
    let hash = CanonicalEvent::of(payment_id, seq, &event, created_at, &last.detail)
        .hash_v2(&keys, key_id, prev_hash.as_deref())
        .expect("the current key is in its own ring");

    sqlx::query!(
        r#"INSERT INTO payment_events
               (payment_id, seq, kind, old_status, new_status, bank_status, detail,
                created_at, prev_hash, hash, hash_version, key_id)
           VALUES ($1, $2::integer, $3, $4, $5, $6, $7, $8, $9, $10::bytea, $11::smallint, $12)"#,
        payment_id,
        seq,
        &event.kind,
        event.old_status.map(PaymentStatus::as_str),
        event.new_status.map(PaymentStatus::as_str),
        event.bank_status.as_deref(),
        // The same value as above, so Postgres stores the text it normalised above.
        &event.detail,
        created_at,
        prev_hash.as_deref(),
        &hash[..],
        HASH_V2,
        key_id,
    )
    .execute(&mut *conn)
    .await?;
    // The head moves with the event, in the same transaction.
    sqlx::query!(
        "UPDATE payments SET ledger_seq = $2::integer, ledger_head = $3::bytea WHERE id = $1",
        payment_id,
        seq,
        &hash[..],
    )
    .execute(&mut *conn)
    .await?;

    tracing::Span::current().record("seq", seq);
    Ok(StoredEvent {
        payment_id,
        seq,
        kind: event.kind,
        old_status: event.old_status,
        new_status: event.new_status,
        bank_status: event.bank_status,
        detail: last.detail,
        created_at,
        hash: hash.to_vec(),
        prev_hash,
    })
}

/// Events chained in memory after a head the caller knows, to be written in the same
/// statement as the payment row (the columns of [`Sealed`]): a payment being created, or one
/// whose row the statement guards on its `ledger_seq`. Nothing is read from the chain, so a
/// `detail` must come back from jsonb exactly as given (objects, strings, integers, booleans;
/// no floats): it is checked.
pub fn seal(
    payment_id: Uuid,
    head: Option<(i32, &[u8])>,
    events: &[NewEvent],
    created_at: DateTime<Utc>,
) -> Result<Sealed, sqlx::Error> {
    let keys = keys::installed().ok_or_else(|| {
        sqlx::Error::Configuration("no ledger key is installed (ledger::keys::install)".into())
    })?;
    let key_id = keys.current_id().to_owned();
    let (mut seq, mut prev) = match head {
        Some((seq, hash)) => (seq, Some(hash.to_vec())),
        None => (0, None),
    };
    let mut sealed = Sealed {
        key_id,
        created_at,
        ..Sealed::default()
    };
    for event in events {
        if !jsonb_stable(&event.detail) {
            return Err(sqlx::Error::Protocol(format!(
                "event {} has a detail jsonb may rewrite; append it instead",
                event.kind
            )));
        }
        seq += 1;
        let hash = CanonicalEvent::of(payment_id, seq, event, created_at, &event.detail)
            .hash_v2(&keys, &sealed.key_id, prev.as_deref())
            .expect("the current key is in its own ring");
        sealed.seq.push(seq);
        sealed.kind.push(event.kind.clone());
        sealed
            .old_status
            .push(event.old_status.map(|s| s.as_str().to_owned()));
        sealed
            .new_status
            .push(event.new_status.map(|s| s.as_str().to_owned()));
        sealed.bank_status.push(event.bank_status.clone());
        sealed.detail.push(event.detail.clone());
        sealed.prev_hash.push(prev.take());
        sealed.hash.push(hash.to_vec());
        prev = Some(hash.to_vec());
    }
    Ok(sealed)
}

/// Whether jsonb gives `v` back unchanged (no numbers but integers).
pub(crate) fn jsonb_stable(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::Array(a) => a.iter().all(jsonb_stable),
        Value::Object(o) => o.values().all(jsonb_stable),
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

/// Sealed events as column arrays, for `INSERT INTO payment_events ... SELECT FROM unnest(...)`.
#[derive(Debug, Default)]
pub struct Sealed {
    pub seq: Vec<i32>,
    pub kind: Vec<String>,
    pub old_status: Vec<Option<String>>,
    pub new_status: Vec<Option<String>>,
    pub bank_status: Vec<Option<String>>,
    pub detail: Vec<Value>,
    pub prev_hash: Vec<Option<Vec<u8>>>,
    pub hash: Vec<Vec<u8>>,
    pub key_id: String,
    pub created_at: DateTime<Utc>,
}

impl Sealed {
    /// The chain's new head: (seq, hash).
    pub fn head(&self) -> (i32, &[u8]) {
        (
            *self.seq.last().expect("at least one event"),
            self.hash.last().expect("at least one event"),
        )
    }
}

fn parse_status(column: &str, s: Option<String>) -> Result<Option<PaymentStatus>, sqlx::Error> {
    s.map(|s| {
        PaymentStatus::parse(&s).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: format!("{s:?} is not a payment status").into(),
        })
    })
    .transpose()
}

/// A payment's events, oldest first.
#[tracing::instrument(skip_all, fields(payment_id = %payment_id))]
pub async fn list(pool: &Db, payment_id: Uuid) -> Result<Vec<StoredEvent>, sqlx::Error> {
    list_raw(pool, payment_id)
        .await?
        .into_iter()
        .map(|r| {
            Ok(StoredEvent {
                payment_id: r.payment_id,
                seq: r.seq,
                kind: r.kind,
                old_status: parse_status("old_status", r.old_status)?,
                new_status: parse_status("new_status", r.new_status)?,
                bank_status: r.bank_status,
                detail: r.detail,
                created_at: r.created_at,
                hash: r.hash,
                prev_hash: r.prev_hash,
            })
        })
        .collect()
}

/// An event row exactly as stored, statuses as text.
#[derive(Debug, Clone)]
pub(crate) struct RawEvent {
    pub(crate) payment_id: Uuid,
    pub(crate) seq: i32,
    pub(crate) kind: String,
    pub(crate) old_status: Option<String>,
    pub(crate) new_status: Option<String>,
    pub(crate) bank_status: Option<String>,
    pub(crate) detail: Value,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) prev_hash: Option<Vec<u8>>,
    pub(crate) hash: Vec<u8>,
    pub(crate) hash_version: i16,
    pub(crate) key_id: Option<String>,
}

impl RawEvent {
    pub(crate) fn canonical(&self) -> CanonicalEvent<'_> {
        CanonicalEvent {
            payment_id: self.payment_id,
            seq: self.seq,
            kind: &self.kind,
            old_status: self.old_status.as_deref(),
            new_status: self.new_status.as_deref(),
            bank_status: self.bank_status.as_deref(),
            created_at: self.created_at,
            detail: &self.detail,
        }
    }
}

/// A payment's events as stored (a time edited in SQL beyond what chrono holds is read at the
/// nearest end, `pisgate_readable_time`, and then fails its hash in `ledger verify`).
pub(crate) async fn list_raw(pool: &Db, payment_id: Uuid) -> Result<Vec<RawEvent>, sqlx::Error> {
    sqlx::query_as!(
        RawEvent,
        r#"SELECT payment_id, seq, kind, old_status, new_status, bank_status, detail,
                  pisgate_readable_time(created_at) AS "created_at!", prev_hash, hash,
                  hash_version, key_id
           FROM payment_events WHERE payment_id = $1 ORDER BY seq"#,
        payment_id
    )
    .fetch_all(pool)
    .await
}

/// Whether `link`, the bank's signing page on the payment row, is the one the payment's
/// ledger recorded last (`authorization_url_sha256` of an `initiated` or
/// `authorisation_started` event whose keyed hash holds under the installed ring). A chain
/// that never recorded a page (written before pages were bound) says nothing: `true`, as
/// `ledger verify` holds it. An event whose hash does not hold, or whose key the ring lacks,
/// vouches for nothing: `false`. One indexed read and one HMAC, inside the caller's
/// transaction.
pub(crate) async fn link_matches_ledger(
    conn: &mut PgConnection,
    payment_id: Uuid,
    link: &str,
) -> Result<bool, sqlx::Error> {
    let Some(raw) = sqlx::query_as!(
        RawEvent,
        r#"SELECT payment_id, seq, kind, old_status, new_status, bank_status, detail,
                  created_at, prev_hash, hash, hash_version, key_id
           FROM payment_events
           WHERE payment_id = $1 AND kind IN ('initiated', 'authorisation_started')
             AND detail ? 'authorization_url_sha256'
           ORDER BY seq DESC LIMIT 1"#,
        payment_id
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(true);
    };
    let holds = keyed_hash_holds(&raw);
    Ok(holds
        && raw.detail["authorization_url_sha256"].as_str()
            == Some(crate::ledger::binding::authorization_url_digest(Some(link)).as_str()))
}

/// Whether the payment row's fixed facts (merchant, amount, currency, country, return URL,
/// shopper id) with `request` (the row's stored request, or the request a retry resumes the
/// payment with: creditor, debtor and all) are the ones its `created` event bound ([`crate::ledger::binding::facts_digest`]), that event's keyed hash holding
/// under the installed ring: what pisgate checks before it builds a bank call from a stored
/// payment (a deferred initiation, a resumed attempt), since an insider could rewrite the
/// row's creditor. The bank may be the one `created` bound or none yet (the shopper chose
/// later: the choice is checked on its own). A `created` event written before payments were
/// bound (no `facts`) says nothing: `true`, as `ledger verify` counts it. No `created` event,
/// or one whose hash does not hold: `false`. One indexed read and one HMAC.
pub(crate) async fn facts_match_ledger(
    conn: &mut PgConnection,
    p: &crate::ledger::payments::PaymentRecord,
    request: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let Some(raw) = sqlx::query_as!(
        RawEvent,
        r#"SELECT payment_id, seq, kind, old_status, new_status, bank_status, detail,
                  created_at, prev_hash, hash, hash_version, key_id
           FROM payment_events
           WHERE payment_id = $1 AND seq = 1"#,
        p.id
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(false);
    };
    if raw.kind != "created" {
        return Ok(false);
    }
    let Some(bound) = raw.detail.get("facts").and_then(|f| f.as_str()) else {
        return Ok(true);
    };
    if !keyed_hash_holds(&raw) {
        return Ok(false);
    }
    let digest = |bank: &str| {
        crate::ledger::binding::facts_digest(&crate::ledger::binding::PaymentFacts {
            merchant_id: p.merchant_id,
            amount_minor: p.amount_minor,
            currency: &p.currency,
            country: &p.country,
            bank,
            return_url: &p.return_url,
            psu_id: p.psu_id.as_deref(),
            request,
        })
    };
    Ok(bound == digest(&p.bank) || bound == digest(crate::ledger::payments::NO_BANK_YET))
}

/// Whether the payment's ledger recorded the bank's answer to an attempt (an `initiated`
/// event): what the poller asks before it expires a payment whose row says none was.
pub(crate) async fn initiation_recorded(pool: &Db, payment_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM payment_events
                          WHERE payment_id = $1 AND kind = 'initiated') AS "recorded!""#,
        payment_id
    )
    .fetch_one(pool)
    .await
}

/// Whether one stored event's keyed (version 2) hash holds under the installed ring: what a
/// decision read from a single event checks before it trusts that event.
fn keyed_hash_holds(raw: &RawEvent) -> bool {
    match (raw.hash_version, raw.key_id.as_deref(), keys::installed()) {
        // A retired key vouches for nothing pisgate acts on, as for live rows.
        (2, Some(key_id), Some(ring)) if ring.is_retired(key_id) => false,
        (2, Some(key_id), Some(ring)) => raw
            .canonical()
            .hash_v2(&ring, key_id, raw.prev_hash.as_deref())
            .is_some_and(|h| h[..] == raw.hash[..]),
        _ => false,
    }
}

/// Whether the payment's ledger records a merchant's cancel request: its last
/// `cancel_requested` event says `by: merchant`, and that event's keyed hash holds. The row's
/// `cancel_requested_at`/`_by` alone is not enough before pisgate deletes a signed payment at
/// the bank or withholds its submission: an insider could set them.
pub(crate) async fn merchant_cancel_in_ledger(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let Some(raw) = sqlx::query_as!(
        RawEvent,
        r#"SELECT payment_id, seq, kind, old_status, new_status, bank_status, detail,
                  created_at, prev_hash, hash, hash_version, key_id
           FROM payment_events
           WHERE payment_id = $1 AND kind = 'cancel_requested'
           ORDER BY seq DESC LIMIT 1"#,
        payment_id
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(false);
    };
    let holds = keyed_hash_holds(&raw);
    Ok(holds && crate::ledger::binding::cancel_requested_by(&raw.detail) == "merchant")
}

/// Whether the payment's ledger records a merchant's cancel ([`merchant_cancel_in_ledger`])
/// that came before the bank's answer to its initiation was recorded (the last
/// `cancel_requested` precedes the `initiated` event): a cancel after it asks the bank itself.
pub(crate) async fn merchant_cancel_before_answer(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<bool, sqlx::Error> {
    if !merchant_cancel_in_ledger(conn, payment_id).await? {
        return Ok(false);
    }
    sqlx::query_scalar!(
        r#"SELECT COALESCE(
               (SELECT max(seq) FROM payment_events
                 WHERE payment_id = $1 AND kind = 'cancel_requested')
             < (SELECT max(seq) FROM payment_events
                 WHERE payment_id = $1 AND kind = 'initiated'),
               false) AS "before!""#,
        payment_id
    )
    .fetch_one(&mut *conn)
    .await
}

/// How many submission attempts the payment's ledger records as started: its
/// `submission_started` events whose keyed hash holds (one forged in SQL does not count).
pub(crate) async fn submission_attempts_in_ledger(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<usize, sqlx::Error> {
    let raw = sqlx::query_as!(
        RawEvent,
        r#"SELECT payment_id, seq, kind, old_status, new_status, bank_status, detail,
                  created_at, prev_hash, hash, hash_version, key_id
           FROM payment_events
           WHERE payment_id = $1 AND kind = 'submission_started'
           ORDER BY seq"#,
        payment_id
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(raw.iter().filter(|e| keyed_hash_holds(e)).count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> (Uuid, Value) {
        (
            Uuid::parse_str("0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b").unwrap(),
            json!({"amount_minor": 1250, "currency": "EUR", "note": "ø"}),
        )
    }

    #[test]
    fn the_canonical_encoding_is_pinned() {
        let (id, detail) = sample();
        let created_at = DateTime::parse_from_rfc3339("2026-11-21T20:11:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = CanonicalEvent {
            payment_id: id,
            seq: 2,
            kind: "status_changed",
            old_status: Some("awaiting_authorization"),
            new_status: Some("authorized"),
            bank_status: None,
            created_at,
            detail: &detail,
        };
        let mut expected = Vec::new();
        expected.extend_from_slice(&24u32.to_be_bytes());
        expected.extend_from_slice(b"pisgate/payment_event/v1");
        expected.extend_from_slice(id.as_bytes());
        expected.extend_from_slice(&[0, 0, 0, 2]);
        expected.extend_from_slice(&14u32.to_be_bytes());
        expected.extend_from_slice(b"status_changed");
        expected.push(1);
        expected.extend_from_slice(&22u32.to_be_bytes());
        expected.extend_from_slice(b"awaiting_authorization");
        expected.push(1);
        expected.extend_from_slice(&10u32.to_be_bytes());
        expected.extend_from_slice(b"authorized");
        expected.push(0);
        expected.extend_from_slice(&27u32.to_be_bytes());
        expected.extend_from_slice(b"2026-11-21T20:11:00.123456Z");
        let json = "{\"amount_minor\":1250,\"currency\":\"EUR\",\"note\":\"ø\"}";
        expected.extend_from_slice(&(json.len() as u32).to_be_bytes());
        expected.extend_from_slice(json.as_bytes());
        assert_eq!(e.encode_v1(), expected);

        let prev = [0xabu8; 32];
        let mut h = Sha256::new();
        h.update(prev);
        h.update(&expected);
        assert_eq!(e.hash_v1(Some(&prev))[..], h.finalize()[..]);
        let genesis: [u8; 32] = Sha256::digest([&[0u8; 32][..], &expected].concat()).into();
        assert_eq!(e.hash_v1(None), genesis);
        // Computed independently (Python, from the module doc) for other verifiers to check.
        assert_eq!(
            hex::encode(e.hash_v1(None)),
            "71cc643d3c5feef884647ae83f2cd938bfff8917984aaf6434cfd8bf7506f03b"
        );
        assert_eq!(
            hex::encode(e.hash_v1(Some(&prev))),
            "4d45e68550ac9e91b434edbb40b3d7f196e067feb5362157a7857b2737209c70"
        );
    }

    #[test]
    fn the_keyed_version_2_encoding_is_pinned() {
        let (id, detail) = sample();
        let created_at = DateTime::parse_from_rfc3339("2026-11-21T20:11:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = CanonicalEvent {
            payment_id: id,
            seq: 2,
            kind: "status_changed",
            old_status: Some("awaiting_authorization"),
            new_status: Some("authorized"),
            bank_status: None,
            created_at,
            detail: &detail,
        };
        let v1 = e.encode_v1();
        let mut expected = Vec::new();
        expected.extend_from_slice(&24u32.to_be_bytes());
        expected.extend_from_slice(b"pisgate/payment_event/v2");
        expected.extend_from_slice(&2u32.to_be_bytes());
        expected.extend_from_slice(b"l1");
        // From the payment id on, the fields are those of version 1.
        expected.extend_from_slice(&v1[4 + 24..]);
        assert_eq!(e.encode_v2("l1"), expected);

        // The key is the 32 bytes 0x00, 0x01, …, 0x1f.
        let key: Vec<u8> = (0u8..32).collect();
        let keys = LedgerKeys::new(
            "l1",
            &secrecy::SecretString::from(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                &key,
            )),
        )
        .unwrap();
        let prev = [0xabu8; 32];
        let mac = |prev: &[u8]| {
            let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
            let tag = aws_lc_rs::hmac::sign(&k, &[prev, &expected].concat());
            hex::encode(tag.as_ref())
        };
        assert_eq!(
            hex::encode(e.hash_v2(&keys, "l1", Some(&prev)).unwrap()),
            mac(&prev)
        );
        assert_eq!(
            hex::encode(e.hash_v2(&keys, "l1", None).unwrap()),
            mac(&[0; 32])
        );
        assert_eq!(e.hash_v2(&keys, "l2", None), None);
        // Computed independently (Python's hmac, from the module doc) for other verifiers.
        assert_eq!(
            hex::encode(e.hash_v2(&keys, "l1", None).unwrap()),
            "3f971d4650ab8a76b35a566473d68fe58bae95964ec871f535d42784b71c756d"
        );
        assert_eq!(
            hex::encode(e.hash_v2(&keys, "l1", Some(&prev)).unwrap()),
            "8e9fa1a469575e7e316b8de0269ce0b4ecfd579cde63c857aa1aa0b5b92ac9a3"
        );
    }

    #[test]
    fn timestamps_have_exactly_six_fractional_digits() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(format_timestamp(t), "2027-01-15T08:00:00.000000Z");
        let now = now_micros();
        assert_eq!(now.timestamp_subsec_nanos() % 1000, 0);
    }

    #[test]
    fn stored_events_serialise_for_the_api() {
        let (id, detail) = sample();
        let e = StoredEvent {
            payment_id: id,
            seq: 1,
            kind: "created".into(),
            old_status: None,
            new_status: Some(PaymentStatus::AwaitingAuthorization),
            bank_status: None,
            detail,
            created_at: DateTime::from_timestamp(1_800_000_000, 5_000).unwrap(),
            hash: vec![0xde, 0xad],
            prev_hash: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["hash"], "dead");
        assert_eq!(v["new_status"], "awaiting_authorization");
        assert_eq!(v["seq"], 1);
        assert!(v.get("payment_id").is_none() && v.get("prev_hash").is_none());
    }
}
