//! Ledger checkpoints: a signed digest of every payment's chain head at one moment.
//!
//! A chain can prove that nothing inside it changed, and a payment's head that its last
//! events are there; neither can show that a whole payment (row and events) or the whole
//! ledger is gone. A checkpoint can: [`create`] (`pisgate ledger checkpoint`, and the
//! checkpoint worker of `serve`) reads every head in one REPEATABLE READ snapshot and records
//!
//! ```text
//! digest = SHA-256(str("pisgate/ledger_heads/v1")
//!                  || for each payment with a head, in ascending UUID byte order:
//!                     payment_id (16 bytes) || seq (4 bytes BE) || head hash (32 bytes))
//! mac    = HMAC-SHA256(ledger key[key_id],
//!                      str("pisgate/ledger_checkpoint/v1") || str(key_id) || id (8 BE)
//!                      || str(created_at, as events) || payments (8 BE) || events (8 BE)
//!                      || v1_events (8 BE) || digest)
//! ```
//!
//! with `payments` the number of heads, `events` the sum of their seqs and `v1_events` the
//! number of unkeyed (version 1) events, in `ledger_checkpoints` (append-only, like the
//! events) and in the log (`ledger checkpoint recorded`, with the digest and mac: the copy
//! outside the database). The heads themselves go to `ledger_checkpoint_heads`, only those
//! that changed since the previous checkpoint; a checkpoint's full set is, per payment, its
//! row of the latest checkpoint up to that one.
//!
//! [`crate::ledger::verify::verify_all`] rebuilds the last checkpoint's set, proves it is the
//! signed one (count and digest), and proves the current ledger extends it: every payment in
//! it still has its checkpointed event with the checkpointed hash.
//!
//! Checkpoints are serialised by a transaction-scoped advisory lock held in a transaction of its own
//! (the snapshot is taken after the lock, so it sees the previous checkpoint). A checkpoint
//! refuses to sign heads that went back or payments that vanished since the previous one; it
//! does not recompute chains (that is `verify`). It never blocks appends.

use super::Db;
use crate::ledger::events::{format_timestamp, now_micros};
use crate::ledger::keys::LedgerKeys;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use uuid::Uuid;

const HEADS_TAG: &str = "pisgate/ledger_heads/v1";
const CHECKPOINT_TAG: &str = "pisgate/ledger_checkpoint/v1";
/// `pg_advisory_lock` key of checkpoint creation ("pisgate-checkpoint" folded into an i64).
const CHECKPOINT_LOCK: i64 = 0x7069_7367_636b_7074;
const BATCH: i64 = 1000;

/// A recorded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub payments: i64,
    pub events: i64,
    pub v1_events: i64,
    #[serde(serialize_with = "hex_bytes")]
    pub digest: Vec<u8>,
    pub key_id: String,
    #[serde(serialize_with = "hex_bytes")]
    pub mac: Vec<u8>,
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Checkpoint {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        put_str(&mut out, CHECKPOINT_TAG);
        put_str(&mut out, &self.key_id);
        out.extend_from_slice(&self.id.to_be_bytes());
        put_str(&mut out, &format_timestamp(self.created_at));
        out.extend_from_slice(&self.payments.to_be_bytes());
        out.extend_from_slice(&self.events.to_be_bytes());
        out.extend_from_slice(&self.v1_events.to_be_bytes());
        out.extend_from_slice(&self.digest);
        out
    }

    /// The mac under `keys`, or `None` when the ring does not have the checkpoint's key.
    fn expected_mac(&self, keys: &LedgerKeys) -> Option<[u8; 32]> {
        keys.mac(&self.key_id, &[&self.signed_bytes()])
    }
}

/// The digest of a set of heads, fed in ascending payment id order.
struct HeadDigest {
    hasher: Sha256,
    payments: i64,
    events: i64,
}

impl HeadDigest {
    fn new() -> HeadDigest {
        let mut tag = Vec::new();
        put_str(&mut tag, HEADS_TAG);
        let mut hasher = Sha256::new();
        hasher.update(tag);
        HeadDigest {
            hasher,
            payments: 0,
            events: 0,
        }
    }

    fn add(&mut self, payment_id: Uuid, seq: i32, head: &[u8]) {
        self.hasher.update(payment_id.as_bytes());
        self.hasher.update(seq.to_be_bytes());
        self.hasher.update(head);
        self.payments += 1;
        self.events += i64::from(seq);
    }

    fn finish(self) -> (i64, i64, [u8; 32]) {
        (self.payments, self.events, self.hasher.finalize().into())
    }
}

/// Why a checkpoint cannot be trusted (or what only it can see).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckpointProblem {
    /// Its mac is not the ledger key's signature of its content.
    SignatureMismatch { checkpoint: i64 },
    /// Signed with a key id the ring does not have.
    UnknownKey { checkpoint: i64, key_id: String },
    /// The newest checkpoint is signed with a retired key: every checkpoint since the
    /// rotation is signed with a newer one, so whoever holds the retired key made it.
    RetiredKey { checkpoint: i64, key_id: String },
    /// Its recorded heads are not the signed count and digest.
    HeadsAltered { checkpoint: i64 },
    /// The number of unkeyed (version 1) events is not the signed one: events were rewritten
    /// as unkeyed, or unkeyed ones removed.
    UnkeyedEventsChanged {
        checkpoint: i64,
        signed: i64,
        found: i64,
    },
}

impl fmt::Display for CheckpointProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointProblem::SignatureMismatch { checkpoint } => write!(
                f,
                "checkpoint {checkpoint}: its signature does not match its content (edited)"
            ),
            CheckpointProblem::UnknownKey { checkpoint, key_id } => write!(
                f,
                "checkpoint {checkpoint}: signed with ledger key {key_id:?}, which is not configured (PISGATE__LEDGER__PREVIOUS_KEYS)"
            ),
            CheckpointProblem::RetiredKey { checkpoint, key_id } => write!(
                f,
                "checkpoint {checkpoint}: the newest checkpoint is signed with ledger key {key_id:?}, which is retired (PISGATE__LEDGER__RETIRED_KEY_IDS): forged with that key"
            ),
            CheckpointProblem::HeadsAltered { checkpoint } => write!(
                f,
                "checkpoint {checkpoint}: its recorded heads are not the signed count and digest (edited or deleted)"
            ),
            CheckpointProblem::UnkeyedEventsChanged {
                checkpoint,
                signed,
                found,
            } => write!(
                f,
                "checkpoint {checkpoint}: it counted {signed} unkeyed (version 1) event(s), the ledger has {found} (rewritten without the ledger key)"
            ),
        }
    }
}

/// Why [`create`] did not record a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(
        "payment {payment_id}: its head (seq {seq}) is behind checkpoint {checkpoint} (seq {checkpointed_seq}); run `pisgate ledger verify`"
    )]
    HeadWentBack {
        payment_id: Uuid,
        seq: i32,
        checkpoint: i64,
        checkpointed_seq: i32,
    },
    #[error(
        "{missing} payment(s) of checkpoint {checkpoint} are gone; run `pisgate ledger verify`"
    )]
    PaymentsVanished { checkpoint: i64, missing: i64 },
}

impl CheckpointError {
    /// The ledger lost history (not a database hiccup): someone must run `ledger verify`.
    pub fn is_integrity_problem(&self) -> bool {
        matches!(
            self,
            CheckpointError::HeadWentBack { .. } | CheckpointError::PaymentsVanished { .. }
        )
    }
}

/// Records a checkpoint of every head, signed with the current key of `keys`.
#[tracing::instrument(skip_all, fields(checkpoint, payments))]
pub async fn create(pool: &Db, keys: &LedgerKeys) -> Result<Checkpoint, CheckpointError> {
    // A transaction of its own holds the lock, so that the snapshot below is taken after it;
    // ending that transaction (or losing its connection) releases it whatever happens. A
    // transaction-scoped lock, not a session one: behind a transaction pooler a session lock
    // would stay on whichever server connection took it.
    let mut lock = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHECKPOINT_LOCK)
        .execute(&mut *lock)
        .await?;
    let result = create_locked(pool, keys).await;
    let _ = lock.rollback().await;
    let checkpoint = result?;
    let span = tracing::Span::current();
    span.record("checkpoint", checkpoint.id);
    span.record("payments", checkpoint.payments);
    tracing::info!(
        checkpoint = checkpoint.id,
        created_at = %format_timestamp(checkpoint.created_at),
        payments = checkpoint.payments,
        events = checkpoint.events,
        v1_events = checkpoint.v1_events,
        digest = %hex::encode(&checkpoint.digest),
        key_id = %checkpoint.key_id,
        mac = %hex::encode(&checkpoint.mac),
        "ledger checkpoint recorded"
    );
    Ok(checkpoint)
}

async fn create_locked(pool: &Db, keys: &LedgerKeys) -> Result<Checkpoint, CheckpointError> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let previous =
        sqlx::query!("SELECT id, payments FROM ledger_checkpoints ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let id = sqlx::query_scalar!(
        r#"SELECT nextval(pg_get_serial_sequence('ledger_checkpoints', 'id')) AS "id!""#
    )
    .fetch_one(&mut *tx)
    .await?;
    let v1_events = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM payment_events WHERE hash_version = 1"#
    )
    .fetch_one(&mut *tx)
    .await?;
    let created_at = now_micros();

    let mut digest = HeadDigest::new();
    let mut carried = 0i64;
    let (mut changed_ids, mut changed_seqs, mut changed_heads) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut cursor = Uuid::nil();
    loop {
        let rows = sqlx::query!(
            r#"SELECT p.id, p.ledger_seq, p.ledger_head AS "ledger_head!",
                      prev.seq AS "prev_seq?", prev.head AS "prev_head?"
               FROM payments p
               LEFT JOIN LATERAL (
                   SELECT h.seq, h.head FROM ledger_checkpoint_heads h
                   WHERE h.payment_id = p.id ORDER BY h.checkpoint_id DESC LIMIT 1
               ) AS prev ON true
               WHERE p.ledger_seq > 0 AND p.id > $1
               ORDER BY p.id
               LIMIT $2"#,
            cursor,
            BATCH,
        )
        .fetch_all(&mut *tx)
        .await?;
        let n = rows.len();
        for r in rows {
            cursor = r.id;
            digest.add(r.id, r.ledger_seq, &r.ledger_head);
            if let Some(prev_seq) = r.prev_seq {
                carried += 1;
                let went_back = prev_seq > r.ledger_seq
                    || (prev_seq == r.ledger_seq && r.prev_head.as_ref() != Some(&r.ledger_head));
                if went_back {
                    return Err(CheckpointError::HeadWentBack {
                        payment_id: r.id,
                        seq: r.ledger_seq,
                        checkpoint: previous.as_ref().map(|p| p.id).unwrap_or_default(),
                        checkpointed_seq: prev_seq,
                    });
                }
                if prev_seq == r.ledger_seq {
                    continue;
                }
            }
            changed_ids.push(r.id);
            changed_seqs.push(r.ledger_seq);
            changed_heads.push(r.ledger_head);
        }
        if (n as i64) < BATCH {
            break;
        }
    }
    if let Some(prev) = &previous {
        if carried < prev.payments {
            return Err(CheckpointError::PaymentsVanished {
                checkpoint: prev.id,
                missing: prev.payments - carried,
            });
        }
    }

    let (payments, events, digest) = digest.finish();
    let mut checkpoint = Checkpoint {
        id,
        created_at,
        payments,
        events,
        v1_events,
        digest: digest.to_vec(),
        key_id: keys.current_id().to_owned(),
        mac: Vec::new(),
    };
    checkpoint.mac = checkpoint
        .expected_mac(keys)
        .expect("the current key is in its own ring")
        .to_vec();
    sqlx::query!(
        r#"INSERT INTO ledger_checkpoints
               (id, created_at, payments, events, v1_events, digest, key_id, mac)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
        checkpoint.id,
        checkpoint.created_at,
        checkpoint.payments,
        checkpoint.events,
        checkpoint.v1_events,
        &checkpoint.digest,
        &checkpoint.key_id,
        &checkpoint.mac,
    )
    .execute(&mut *tx)
    .await?;
    for ((ids, seqs), heads) in changed_ids
        .chunks(BATCH as usize)
        .zip(changed_seqs.chunks(BATCH as usize))
        .zip(changed_heads.chunks(BATCH as usize))
    {
        sqlx::query!(
            r#"INSERT INTO ledger_checkpoint_heads (checkpoint_id, payment_id, seq, head)
               SELECT $1, * FROM UNNEST($2::uuid[], $3::int4[], $4::bytea[])"#,
            id,
            ids,
            seqs,
            heads,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(checkpoint)
}

/// The last checkpoint as verify needs it: its full set of heads, or what is wrong with it.
pub(crate) struct LastCheckpoint {
    pub(crate) id: i64,
    pub(crate) v1_events: i64,
    pub(crate) heads: HashMap<Uuid, (i32, Vec<u8>)>,
    pub(crate) problem: Option<CheckpointProblem>,
}

/// The most recent checkpoint, if any.
pub async fn last(pool: &Db) -> Result<Option<Checkpoint>, sqlx::Error> {
    sqlx::query_as!(
        Checkpoint,
        r#"SELECT id, created_at, payments, events, v1_events, digest, key_id, mac
           FROM ledger_checkpoints ORDER BY id DESC LIMIT 1"#
    )
    .fetch_optional(pool)
    .await
}

/// Loads the last checkpoint and proves its signature and its heads.
pub(crate) async fn load_last(
    pool: &Db,
    keys: &LedgerKeys,
) -> Result<Option<LastCheckpoint>, sqlx::Error> {
    let Some(c) = last(pool).await? else {
        return Ok(None);
    };
    let mut loaded = LastCheckpoint {
        id: c.id,
        v1_events: c.v1_events,
        heads: HashMap::new(),
        problem: None,
    };
    if keys.is_retired(&c.key_id) {
        loaded.problem = Some(CheckpointProblem::RetiredKey {
            checkpoint: c.id,
            key_id: c.key_id.clone(),
        });
        return Ok(Some(loaded));
    }
    match c.expected_mac(keys) {
        None => {
            loaded.problem = Some(CheckpointProblem::UnknownKey {
                checkpoint: c.id,
                key_id: c.key_id.clone(),
            });
            return Ok(Some(loaded));
        }
        Some(mac) if mac[..] != c.mac[..] => {
            loaded.problem = Some(CheckpointProblem::SignatureMismatch { checkpoint: c.id });
            return Ok(Some(loaded));
        }
        Some(_) => {}
    }
    let mut digest = HeadDigest::new();
    let mut cursor = Uuid::nil();
    loop {
        let rows = sqlx::query!(
            r#"SELECT DISTINCT ON (payment_id) payment_id, seq, head
               FROM ledger_checkpoint_heads
               WHERE checkpoint_id <= $1 AND payment_id > $2
               ORDER BY payment_id, checkpoint_id DESC
               LIMIT $3"#,
            c.id,
            cursor,
            BATCH,
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        for r in rows {
            cursor = r.payment_id;
            digest.add(r.payment_id, r.seq, &r.head);
            loaded.heads.insert(r.payment_id, (r.seq, r.head));
        }
        if (n as i64) < BATCH {
            break;
        }
    }
    if digest.finish()
        != (
            c.payments,
            c.events,
            <[u8; 32]>::try_from(&c.digest[..]).unwrap_or_default(),
        )
    {
        loaded.problem = Some(CheckpointProblem::HeadsAltered { checkpoint: c.id });
        loaded.heads.clear();
    }
    Ok(Some(loaded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn the_checkpoint_signature_is_pinned() {
        let key: Vec<u8> = (0u8..32).collect();
        let keys = LedgerKeys::new(
            "l1",
            &SecretString::from(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                &key,
            )),
        )
        .unwrap();
        let mut d = HeadDigest::new();
        d.add(Uuid::from_u128(1), 3, &[0xaa; 32]);
        d.add(Uuid::from_u128(2), 1, &[0xbb; 32]);
        let (payments, events, digest) = d.finish();
        assert_eq!((payments, events), (2, 4));
        let c = Checkpoint {
            id: 7,
            created_at: DateTime::parse_from_rfc3339("2026-11-28T12:00:00.000001Z")
                .unwrap()
                .with_timezone(&Utc),
            payments,
            events,
            v1_events: 5,
            digest: digest.to_vec(),
            key_id: "l1".into(),
            mac: Vec::new(),
        };
        // Computed independently (Python, from the module doc).
        assert_eq!(
            hex::encode(digest),
            "b29a63e56e5245b2d1a9f4d1fbc486dc92bd9d1071fd7c2c3a665abd27f62ef8"
        );
        assert_eq!(
            hex::encode(c.expected_mac(&keys).unwrap()),
            "d196f13c60ded64fafd36449c2ab271168bd8ca8ad28e14f5007d83a2946ad2f"
        );
        let mut other = c.clone();
        other.payments = 1;
        assert_ne!(other.expected_mac(&keys), c.expected_mac(&keys));
        assert_eq!(
            Checkpoint {
                key_id: "l2".into(),
                ..c
            }
            .expected_mac(&keys),
            None
        );
    }
}
