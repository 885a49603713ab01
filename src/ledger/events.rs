//! The append-only payment ledger: `payment_events`.
//!
//! One row per transition or bank interaction of a payment, numbered `seq = 1, 2, 3, …` per
//! payment and hash-chained, so that any edit, deletion or reordering is detectable by
//! [`verify_all`] (`pisgate ledger verify`). A trigger refuses UPDATE, DELETE and TRUNCATE;
//! the chain catches whoever disables it.
//!
//! [`append`] runs inside the caller's transaction (the one that changes the payment, so the
//! event and the change commit together). It locks the `payments` row (`FOR UPDATE`), which
//! serialises appends per payment, then reads the last event in a new statement; this needs
//! the default READ COMMITTED isolation (under REPEATABLE READ a concurrent append makes the
//! insert fail on the primary key instead of chaining wrongly). This module must never hold
//! that transaction open across a network call, and must never UPDATE or DELETE an event.
//!
//! # Hash chain (storage contract, version 1)
//!
//! ```text
//! hash(seq = 1) = SHA-256(32 zero bytes || canonical(event))
//! hash(seq = n) = SHA-256(hash(seq = n - 1) || canonical(event))   (stored as prev_hash)
//! ```
//!
//! `canonical(event)` is the concatenation of, in this order:
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
//! where `str(s)` = 4-byte big-endian byte length of `s` followed by its UTF-8 bytes, and
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
//! What the chain cannot see on its own: removal of a payment's *last* events. The current
//! state in `payments` (status, bank status) is the cross-check for that.

use crate::domain::PaymentStatus;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use std::fmt;
use uuid::Uuid;

const DOMAIN_TAG: &str = "pisgate/payment_event/v1";
const GENESIS_PREV: [u8; 32] = [0; 32];
const VERIFY_BATCH: i64 = 1000;

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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    #[serde(skip)]
    pub payment_id: Uuid,
    pub seq: i32,
    pub kind: String,
    pub old_status: Option<PaymentStatus>,
    pub new_status: Option<PaymentStatus>,
    pub bank_status: Option<String>,
    pub detail: Value,
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "serialize_hex")]
    pub hash: Vec<u8>,
    #[serde(skip)]
    pub prev_hash: Option<Vec<u8>>,
}

fn serialize_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// The hashed fields, borrowed as they are stored (statuses as text, so a tampered status
/// that no longer parses is still just a hash mismatch).
struct CanonicalEvent<'a> {
    payment_id: Uuid,
    seq: i32,
    kind: &'a str,
    old_status: Option<&'a str>,
    new_status: Option<&'a str>,
    bank_status: Option<&'a str>,
    created_at: DateTime<Utc>,
    detail: &'a Value,
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

impl CanonicalEvent<'_> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        put_str(&mut out, DOMAIN_TAG);
        out.extend_from_slice(self.payment_id.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        put_str(&mut out, self.kind);
        put_opt(&mut out, self.old_status);
        put_opt(&mut out, self.new_status);
        put_opt(&mut out, self.bank_status);
        put_str(&mut out, &format_timestamp(self.created_at));
        put_str(&mut out, &canonical_json(self.detail));
        out
    }

    fn hash(&self, prev_hash: Option<&[u8]>) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(prev_hash.unwrap_or(&GENESIS_PREV));
        h.update(self.encode());
        h.finalize().into()
    }
}

fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Now, at the precision Postgres stores.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The canonical JSON text of a value (see the module doc).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_canonical(out, v);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    use std::fmt::Write as _;
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        // 2^63 and 2^64 are exact in f64; every integral f64 in between is an exact integer.
        // -0.0 >= 0.0, so it is written as 0.
        const I64_MIN: f64 = -9_223_372_036_854_775_808.0;
        const U64_END: f64 = 18_446_744_073_709_551_616.0;
        if f.fract() == 0.0 && (I64_MIN..0.0).contains(&f) {
            let _ = write!(out, "{}", f as i64);
        } else if f.fract() == 0.0 && (0.0..U64_END).contains(&f) {
            let _ = write!(out, "{}", f as u64);
        } else {
            // Our own format, not serde_json's (which has changed between versions): the
            // shortest digits that read back as f, in exponent form (std's `{:e}`).
            let _ = write!(out, "{f:e}");
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
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

    let seq = last.seq.unwrap_or(0) + 1;
    let prev_hash = last.hash;
    let created_at = now_micros();
    let hash = CanonicalEvent {
        payment_id,
        seq,
        kind: &event.kind,
        old_status: event.old_status.map(PaymentStatus::as_str),
        new_status: event.new_status.map(PaymentStatus::as_str),
        bank_status: event.bank_status.as_deref(),
        created_at,
        // What jsonb will give back for the same text, not what we were handed.
        detail: &last.detail,
    }
    .hash(prev_hash.as_deref());

    sqlx::query!(
        r#"INSERT INTO payment_events
               (payment_id, seq, kind, old_status, new_status, bank_status, detail,
                created_at, prev_hash, hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
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
pub async fn list(pool: &PgPool, payment_id: Uuid) -> Result<Vec<StoredEvent>, sqlx::Error> {
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
struct RawEvent {
    payment_id: Uuid,
    seq: i32,
    kind: String,
    old_status: Option<String>,
    new_status: Option<String>,
    bank_status: Option<String>,
    detail: Value,
    created_at: DateTime<Utc>,
    prev_hash: Option<Vec<u8>>,
    hash: Vec<u8>,
}

impl RawEvent {
    fn canonical(&self) -> CanonicalEvent<'_> {
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

async fn list_raw(pool: &PgPool, payment_id: Uuid) -> Result<Vec<RawEvent>, sqlx::Error> {
    sqlx::query_as!(
        RawEvent,
        r#"SELECT payment_id, seq, kind, old_status, new_status, bank_status, detail,
                  created_at, prev_hash, hash
           FROM payment_events WHERE payment_id = $1 ORDER BY seq"#,
        payment_id
    )
    .fetch_all(pool)
    .await
}

/// Why an event breaks its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakReason {
    /// The event's seq is not the next one: events before it are missing.
    Gap { expected_seq: i32 },
    /// `prev_hash` is not the hash of the event before it.
    PrevHashMismatch,
    /// The stored hash is not the hash of the stored content: the event was edited.
    HashMismatch,
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakReason::Gap { expected_seq } => {
                write!(f, "gap: expected seq {expected_seq}, so events are missing")
            }
            BreakReason::PrevHashMismatch => {
                f.write_str("prev_hash is not the hash of the previous event")
            }
            BreakReason::HashMismatch => {
                f.write_str("hash does not match the event's content (edited)")
            }
        }
    }
}

/// The event at which a chain first breaks.
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

/// The outcome of recomputing chains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub payments_checked: u64,
    pub events_checked: u64,
    /// Payments whose chain is broken somewhere.
    pub broken_payments: u64,
    /// The first broken event in (payment_id, seq) order.
    pub first_broken: Option<BrokenEvent>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Walks events in (payment_id, seq) order and checks each chain.
#[derive(Default)]
struct Verifier {
    report: VerifyReport,
    current: Option<Uuid>,
    expected_seq: i32,
    prev_hash: Option<Vec<u8>>,
    current_broken: bool,
}

impl Verifier {
    fn check(&mut self, row: &RawEvent) {
        let e = row.canonical();
        let (stored_prev, stored_hash) = (row.prev_hash.as_deref(), &row.hash[..]);
        self.report.events_checked += 1;
        if self.current != Some(e.payment_id) {
            self.current = Some(e.payment_id);
            self.report.payments_checked += 1;
            self.expected_seq = 1;
            self.prev_hash = None;
            self.current_broken = false;
        }
        if self.current_broken {
            return;
        }
        let reason = if e.seq != self.expected_seq {
            Some(BreakReason::Gap {
                expected_seq: self.expected_seq,
            })
        } else if stored_prev != self.prev_hash.as_deref() {
            Some(BreakReason::PrevHashMismatch)
        } else if e.hash(stored_prev)[..] != *stored_hash {
            Some(BreakReason::HashMismatch)
        } else {
            None
        };
        match reason {
            None => {
                self.expected_seq += 1;
                self.prev_hash = Some(stored_hash.to_vec());
            }
            Some(reason) => {
                self.current_broken = true;
                self.report.broken_payments += 1;
                if self.report.first_broken.is_none() {
                    tracing::warn!(payment_id = %e.payment_id, seq = e.seq, %reason, "ledger chain broken");
                    self.report.first_broken = Some(BrokenEvent {
                        payment_id: e.payment_id,
                        seq: e.seq,
                        reason,
                    });
                }
            }
        }
    }
}

/// Recomputes every payment's chain, in batches (keyset pagination, no long transaction).
#[tracing::instrument(skip_all, fields(payments, events, broken))]
pub async fn verify_all(pool: &PgPool) -> Result<VerifyReport, sqlx::Error> {
    let mut verifier = Verifier::default();
    let mut cursor = (Uuid::nil(), 0i32);
    loop {
        let rows = sqlx::query_as!(
            RawEvent,
            r#"SELECT payment_id, seq, kind, old_status, new_status, bank_status, detail,
                      created_at, prev_hash, hash
               FROM payment_events
               WHERE (payment_id, seq) > ($1, $2)
               ORDER BY payment_id, seq
               LIMIT $3"#,
            cursor.0,
            cursor.1,
            VERIFY_BATCH,
        )
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        cursor = (last.payment_id, last.seq);
        rows.iter().for_each(|r| verifier.check(r));
        if (rows.len() as i64) < VERIFY_BATCH {
            break;
        }
    }
    let span = tracing::Span::current();
    span.record("payments", verifier.report.payments_checked);
    span.record("events", verifier.report.events_checked);
    span.record("broken", verifier.report.broken_payments);
    Ok(verifier.report)
}

/// Recomputes one payment's chain.
#[tracing::instrument(skip_all, fields(payment_id = %payment_id))]
pub async fn verify_payment(pool: &PgPool, payment_id: Uuid) -> Result<VerifyReport, sqlx::Error> {
    let mut verifier = Verifier::default();
    list_raw(pool, payment_id)
        .await?
        .iter()
        .for_each(|r| verifier.check(r));
    Ok(verifier.report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"z":[3,{"y":true,"x":null}],"m":"é"},"A":2}"#)
                .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"A":2,"a":{"m":"é","z":[3,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_escapes_only_quote_backslash_and_controls() {
        let v = json!({"s": "q\"b\\n\nt\t\u{1}/€😀"});
        assert_eq!(
            canonical_json(&v),
            "{\"s\":\"q\\\"b\\\\n\\u000at\\u0009\\u0001/€😀\"}"
        );
    }

    #[test]
    fn canonical_json_numbers_depend_on_the_value_not_the_form() {
        let same = |a: &str, b: &str| {
            let a: Value = serde_json::from_str(a).unwrap();
            let b: Value = serde_json::from_str(b).unwrap();
            assert_eq!(canonical_json(&a), canonical_json(&b));
            canonical_json(&a)
        };
        assert_eq!(same("1e18", "1000000000000000000"), "1000000000000000000");
        assert_eq!(same("5.0", "5"), "5");
        assert_eq!(same("-0.0", "0"), "0");
        assert_eq!(same("-3.0", "-3"), "-3");
        assert_eq!(
            same("18446744073709551615", "18446744073709551615"),
            "18446744073709551615"
        );
        assert_eq!(
            same("-9223372036854775808", "-9.223372036854775808e18"),
            "-9223372036854775808"
        );
        assert_eq!(same("0.1", "0.10"), "1e-1");
        assert_eq!(same("1e-7", "0.0000001"), "1e-7");
        assert_eq!(same("1e20", "100000000000000000000"), "1e20");
        assert_eq!(same("-2.5", "-2.50"), "-2.5e0");
        assert_eq!(same("123.456", "1.23456e2"), "1.23456e2");
        assert_eq!(
            same("1.7976931348623157e308", "1.7976931348623157E+308"),
            "1.7976931348623157e308"
        );
    }

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
        assert_eq!(e.encode(), expected);

        let prev = [0xabu8; 32];
        let mut h = Sha256::new();
        h.update(prev);
        h.update(&expected);
        assert_eq!(e.hash(Some(&prev))[..], h.finalize()[..]);
        let genesis: [u8; 32] = Sha256::digest([&[0u8; 32][..], &expected].concat()).into();
        assert_eq!(e.hash(None), genesis);
        // Computed independently (Python, from the module doc) for other verifiers to check.
        assert_eq!(
            hex::encode(e.hash(None)),
            "71cc643d3c5feef884647ae83f2cd938bfff8917984aaf6434cfd8bf7506f03b"
        );
        assert_eq!(
            hex::encode(e.hash(Some(&prev))),
            "4d45e68550ac9e91b434edbb40b3d7f196e067feb5362157a7857b2737209c70"
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
    fn the_verifier_reports_the_first_break_per_payment() {
        let (id, detail) = sample();
        let t = now_micros();
        let event = |seq, prev_hash: Option<[u8; 32]>, hash: Option<[u8; 32]>| {
            let mut raw = RawEvent {
                payment_id: id,
                seq,
                kind: "callback".into(),
                old_status: None,
                new_status: None,
                bank_status: Some("Paid".into()),
                detail: detail.clone(),
                created_at: t,
                prev_hash: prev_hash.map(|h| h.to_vec()),
                hash: Vec::new(),
            };
            raw.hash = hash
                .unwrap_or_else(|| raw.canonical().hash(prev_hash.as_ref().map(|h| &h[..])))
                .to_vec();
            raw
        };
        let e1 = event(1, None, None);
        let h1: [u8; 32] = e1.hash[..].try_into().unwrap();
        let e2 = event(2, Some(h1), None);
        let h2: [u8; 32] = e2.hash[..].try_into().unwrap();
        let e3 = event(3, Some(h2), None);

        let mut ok = Verifier::default();
        [&e1, &e2, &e3].into_iter().for_each(|e| ok.check(e));
        assert!(ok.report.is_ok());
        assert_eq!(
            (ok.report.payments_checked, ok.report.events_checked),
            (1, 3)
        );

        let mut gap = Verifier::default();
        [&e1, &e3].into_iter().for_each(|e| gap.check(e));
        assert_eq!(
            gap.report.first_broken.unwrap(),
            BrokenEvent {
                payment_id: id,
                seq: 3,
                reason: BreakReason::Gap { expected_seq: 2 }
            }
        );

        let mut relinked = Verifier::default();
        relinked.check(&e1);
        relinked.check(&event(2, Some(h2), None));
        assert_eq!(
            relinked.report.first_broken.unwrap().reason,
            BreakReason::PrevHashMismatch
        );

        let mut edited = Verifier::default();
        edited.check(&e1);
        edited.check(&event(2, Some(h1), Some([9; 32])));
        edited.check(&e3);
        assert_eq!(
            edited.report.first_broken.unwrap().reason,
            BreakReason::HashMismatch
        );
        assert_eq!(edited.report.broken_payments, 1);
        assert_eq!(edited.report.events_checked, 3);
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
