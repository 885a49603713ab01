//! Operators of the console: accounts (an Argon2id hash, never a password), lock-out after
//! repeated failures, disabled accounts, sessions (only the SHA-256 of the cookie's token is
//! stored, with the session's CSRF token), the append-only audit log, and the console's
//! read-only payment search and delivery list, and the operator list the CLI prints.
//!
//! The lock-out is decided before a password is checked ([`admit`]): the attempt is counted
//! under the operator's row lock, so parallel guesses count one by one, and a locked or
//! disabled account is refused without a check. Only an admitted attempt whose password is
//! right resets the count ([`sign_in`]). Every write that an operator (or the CLI) makes here
//! commits with its audit row in one transaction; [`audit_in`] is for actions elsewhere to do
//! the same.
//!
//! Never stored or logged: a password, a session token.

use super::{Db, binding, keys};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// `Debug` leaves the password hash out (as every type here that carries it or a session's
/// CSRF token does), so no log line or panic message can carry it.
#[derive(Clone)]
pub struct Operator {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub failed_attempts: i32,
    pub locked_until: Option<DateTime<Utc>>,
}

/// Creates an operator, sealed with the installed ledger key (an operator inserted in SQL,
/// without it, cannot sign in).
pub async fn create(pool: &Db, email: &str, password_hash: &str) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let (key_id, mac) = seal_account(id, email, password_hash, false)?;
    sqlx::query!(
        "INSERT INTO operators (id, email, password_hash, mac, mac_key_id)
         VALUES ($1, $2, $3, $4, $5)",
        id,
        email,
        password_hash,
        &mac[..],
        key_id,
    )
    .execute(pool)
    .await?;
    Ok(id)
}

/// The current key's id and the MAC of an operator's account in the state `disabled`.
fn seal_account(
    id: Uuid,
    email: &str,
    password_hash: &str,
    disabled: bool,
) -> Result<(String, [u8; 32]), sqlx::Error> {
    keys::seal_with_current("writing an operator's account", |ring, key_id| {
        binding::operator_mac(ring, key_id, id, email, password_hash, disabled)
    })
}

/// The current key's id and the MAC of a console session.
fn seal_session(
    token_hash: &[u8],
    operator_id: Uuid,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> Result<(String, [u8; 32]), sqlx::Error> {
    keys::seal_with_current("opening a console session", |ring, key_id| {
        binding::operator_session_mac(
            ring,
            key_id,
            token_hash,
            operator_id,
            csrf_token,
            expires_at,
        )
    })
}

/// A row of an operator's account or session whose MAC fails: logged at error (no secret:
/// the operator's id and why) and counted; the caller refuses it.
fn refuse_unsealed(what: &str, operator_id: Uuid, problem: &str) {
    tracing::error!(
        operator_id = %operator_id,
        problem,
        "a console {what} whose ledger MAC fails is refused (written without the ledger key?)"
    );
    metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
}

/// One operator as `pisgate operator list` prints it: never the password hash.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub id: Uuid,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub disabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Locked now (too many failed sign-ins), until `locked_until`.
    pub locked: bool,
    pub locked_until: Option<DateTime<Utc>>,
    pub failed_attempts: i32,
    /// The last console sign-in the audit log records, if any.
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

/// Every operator, oldest first, with their state and last sign-in.
pub async fn list(pool: &Db) -> Result<Vec<Listed>, sqlx::Error> {
    sqlx::query_as!(
        Listed,
        r#"SELECT o.id, o.email, o.created_at,
                  o.disabled_at IS NOT NULL AS "disabled!", o.disabled_at,
                  COALESCE(o.locked_until > now(), false) AS "locked!",
                  CASE WHEN o.locked_until > now() THEN o.locked_until END AS locked_until,
                  o.failed_attempts,
                  (SELECT max(a.created_at) FROM operator_audit a
                    WHERE a.operator_id = o.id AND a.action = 'signed_in') AS last_sign_in_at
             FROM operators o
            ORDER BY o.created_at, o.id"#
    )
    .fetch_all(pool)
    .await
}

pub async fn by_email(pool: &Db, email: &str) -> Result<Option<Operator>, sqlx::Error> {
    sqlx::query_as!(
        Operator,
        "SELECT id, email, password_hash, failed_attempts, locked_until FROM operators WHERE email = $1",
        email
    )
    .fetch_optional(pool)
    .await
}

/// What the lock-out decided about one sign-in attempt, before any password is checked.
#[derive(Clone)]
pub enum Gate {
    /// No operator has this email.
    Unknown,
    /// The operator is disabled (`pisgate operator disable`); refused and audited.
    Disabled { id: Uuid, email: String },
    /// The account is locked; refused and audited, the password never checked.
    Locked { id: Uuid, email: String },
    /// The account's ledger MAC fails (inserted, edited or re-enabled in SQL, or sealed
    /// under a key the ring lacks or retired): refused, logged at error and audited, the
    /// password never checked.
    Unsealed { id: Uuid, email: String },
    /// The attempt is counted and may check the password. `locks`: it was the attempt that
    /// reached the limit, so the account is locked unless the password is right.
    /// `settled_before`: failures whose check had finished when this attempt was counted.
    Admitted {
        id: Uuid,
        email: String,
        password_hash: String,
        locks: bool,
        counted: i32,
        settled_before: i32,
    },
}

/// Counts a sign-in attempt and decides whether it may check a password, in one transaction
/// holding the operator's row, BEFORE the (slow) password check: every attempt counts as a
/// failure until its password proves right ([`sign_in`] takes back the attempts counted up
/// to its own, never those counted after it), so N parallel guesses count as N, even beside
/// the right password. The attempt that makes `max` in a row locks the account until
/// `now + lock_for`; while locked, attempts are refused without a password check. A lock
/// that has run out starts the count again. Refusals are audited in the same transaction.
pub async fn admit(
    pool: &Db,
    email: &str,
    max: i32,
    lock_for: chrono::Duration,
) -> Result<Gate, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(o) = sqlx::query!(
        "SELECT id, email, password_hash, failed_attempts, settled_failures, locked_until,
                disabled_at, mac, mac_key_id
           FROM operators WHERE email = $1 FOR UPDATE",
        email
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Gate::Unknown);
    };
    let now = Utc::now();
    let unsealed = binding::operator_problem(
        keys::installed().as_deref(),
        o.id,
        &o.email,
        &o.password_hash,
        false,
        o.mac.as_deref(),
        o.mac_key_id.as_deref(),
    );
    let refused = if o.disabled_at.is_some() {
        Some("disabled")
    } else if let Some(problem) = unsealed {
        refuse_unsealed("operator", o.id, problem);
        Some("unsealed")
    } else if o.locked_until.is_some_and(|t| t > now) {
        Some("locked")
    } else {
        None
    };
    if let Some(why) = refused {
        audit_in(
            &mut tx,
            Some(o.id),
            &o.email,
            "sign_in_refused",
            None,
            serde_json::json!({ "why": why }),
        )
        .await?;
        tx.commit().await?;
        return Ok(if why == "disabled" {
            Gate::Disabled {
                id: o.id,
                email: o.email,
            }
        } else if why == "unsealed" {
            Gate::Unsealed {
                id: o.id,
                email: o.email,
            }
        } else {
            Gate::Locked {
                id: o.id,
                email: o.email,
            }
        });
    }
    // A lock that ran out: a fresh count.
    let (before, settled) = if o.locked_until.is_some() {
        (0, 0)
    } else {
        (o.failed_attempts, o.settled_failures)
    };
    let counted = before.saturating_add(1);
    let locks = counted >= max;
    sqlx::query!(
        "UPDATE operators SET failed_attempts = $2, settled_failures = $4, locked_until = $3
          WHERE id = $1",
        o.id,
        counted,
        locks.then(|| now + lock_for),
        settled,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Gate::Admitted {
        id: o.id,
        email: o.email,
        password_hash: o.password_hash,
        locks,
        counted,
        settled_before: settled,
    })
}

/// Records a wrong password (or an unknown email, `id` `None`): `sign_in_failed`, and
/// `locked_out` when this attempt locked the account, in one transaction.
pub async fn record_failure(
    pool: &Db,
    id: Option<Uuid>,
    email: &str,
    locked: bool,
    lock_minutes: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let detail = if id.is_some() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "unknown_email": true })
    };
    audit_in(&mut tx, id, email, "sign_in_failed", None, detail).await?;
    if let Some(id) = id {
        sqlx::query!(
            "UPDATE operators SET settled_failures = settled_failures + 1 WHERE id = $1",
            id
        )
        .execute(&mut *tx)
        .await?;
    }
    if locked {
        audit_in(
            &mut tx,
            id,
            email,
            "locked_out",
            None,
            serde_json::json!({ "minutes": lock_minutes }),
        )
        .await?;
    }
    tx.commit().await
}

/// A signed-in operator, as the session cookie finds them.
#[derive(Clone)]
pub struct Session {
    pub operator_id: Uuid,
    pub email: String,
    pub csrf_token: String,
}

/// What [`admit`] counted for the attempt that is signing in.
#[derive(Clone)]
pub struct Admission {
    /// Failures that had finished their check when this attempt was counted.
    pub settled_before: i32,
    /// Whether this attempt set the lock.
    pub locks: bool,
    /// The Argon2id hash the password was checked against: a sign-in whose check started
    /// before `operator reset-password` and ended after it starts no session.
    pub password_hash: String,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("settled_before", &self.settled_before)
            .field("locks", &self.locks)
            .finish_non_exhaustive()
    }
}

/// Signs an admitted operator in, in one transaction: takes back its own attempt and the
/// failures settled before it (see the query), forgets ended sessions, starts the session
/// and audits `signed_in`. Returns false (nothing written) when the operator was disabled
/// or their password reset meanwhile (the password was checked against the old hash).
pub async fn sign_in(
    pool: &Db,
    id: Uuid,
    email: &str,
    token_hash: &[u8],
    csrf_token: &str,
    expires_at: DateTime<Utc>,
    admitted: &Admission,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Takes back this attempt and the failures that had settled before it was counted (the
    // operator's own typos); guesses still in flight beside it stay counted, so N parallel
    // guesses count as N even with the right password among them, and a lock they set stays
    // unless this attempt set it.
    let reset = sqlx::query!(
        "UPDATE operators
            SET failed_attempts = GREATEST(failed_attempts - 1 - $2, 0),
                settled_failures = GREATEST(settled_failures - $2, 0),
                locked_until = CASE WHEN $3 THEN NULL ELSE locked_until END
          WHERE id = $1 AND disabled_at IS NULL AND password_hash = $4",
        id,
        admitted.settled_before,
        admitted.locks,
        admitted.password_hash,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if reset == 0 {
        return Ok(false);
    }
    sqlx::query!("DELETE FROM operator_sessions WHERE expires_at <= now()")
        .execute(&mut *tx)
        .await?;
    insert_session(&mut tx, token_hash, id, csrf_token, expires_at).await?;
    audit_in(
        &mut tx,
        Some(id),
        email,
        "signed_in",
        None,
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Inserts a session, sealed with the installed ledger key (its end in microseconds, as
/// PostgreSQL keeps it).
async fn insert_session(
    conn: &mut PgConnection,
    token_hash: &[u8],
    operator_id: Uuid,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let expires_at = expires_at.trunc_subsecs(6);
    let (key_id, mac) = seal_session(token_hash, operator_id, csrf_token, expires_at)?;
    sqlx::query!(
        "INSERT INTO operator_sessions (token_hash, operator_id, csrf_token, expires_at, mac, mac_key_id)
         VALUES ($1, $2, $3, $4, $5, $6)",
        token_hash,
        operator_id,
        csrf_token,
        expires_at,
        &mac[..],
        key_id,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The live session of a cookie's token; never a disabled operator's, nor one whose ledger
/// MAC fails (a session inserted or edited in SQL, or one sealed under a key the ring lacks
/// or retired: logged at error, and the console asks to sign in).
pub async fn session(pool: &Db, token_hash: &[u8]) -> Result<Option<Session>, sqlx::Error> {
    let Some(s) = sqlx::query!(
        "SELECT s.operator_id, o.email, s.csrf_token, s.expires_at, s.mac, s.mac_key_id,
                o.password_hash, o.mac AS operator_mac, o.mac_key_id AS operator_mac_key_id
           FROM operator_sessions s JOIN operators o ON o.id = s.operator_id
          WHERE s.token_hash = $1 AND s.expires_at > now() AND o.disabled_at IS NULL",
        token_hash
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let ring = keys::installed();
    // The session as a sign-in wrote it, of an operator as `pisgate operator` left it (an
    // operator re-enabled or given another email in SQL has no session either).
    let problem = binding::operator_session_problem(
        ring.as_deref(),
        token_hash,
        s.operator_id,
        &s.csrf_token,
        s.expires_at,
        s.mac.as_deref(),
        s.mac_key_id.as_deref(),
    )
    .or_else(|| {
        binding::operator_problem(
            ring.as_deref(),
            s.operator_id,
            &s.email,
            &s.password_hash,
            false,
            s.operator_mac.as_deref(),
            s.operator_mac_key_id.as_deref(),
        )
        .map(|why| binding::SessionProblem {
            why,
            ends: true,
            mismatch: true,
        })
    });
    if let Some(problem) = problem {
        if problem.ends {
            // Refused once, not on every request of a browser that keeps the cookie.
            sqlx::query!(
                "DELETE FROM operator_sessions WHERE token_hash = $1",
                token_hash
            )
            .execute(pool)
            .await?;
        }
        if problem.mismatch {
            refuse_unsealed("session", s.operator_id, problem.why);
        } else {
            tracing::info!(operator_id = %s.operator_id, problem = problem.why, "a console session refused");
        }
        return Ok(None);
    }
    Ok(Some(Session {
        operator_id: s.operator_id,
        email: s.email,
        csrf_token: s.csrf_token,
    }))
}

/// Ends one session (`signed_out`), or with `everywhere` every session of its operator
/// (`signed_out_everywhere`, with how many), with the audit row in the same transaction.
pub async fn sign_out(
    pool: &Db,
    session: &Session,
    token_hash: &[u8],
    everywhere: bool,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ended = if everywhere {
        sqlx::query!(
            "DELETE FROM operator_sessions WHERE operator_id = $1",
            session.operator_id
        )
        .execute(&mut *tx)
        .await?
    } else {
        sqlx::query!(
            "DELETE FROM operator_sessions WHERE token_hash = $1",
            token_hash
        )
        .execute(&mut *tx)
        .await?
    }
    .rows_affected();
    let (action, detail) = if everywhere {
        (
            "signed_out_everywhere",
            serde_json::json!({ "sessions": ended }),
        )
    } else {
        ("signed_out", serde_json::json!({}))
    };
    audit_in(
        &mut tx,
        Some(session.operator_id),
        &session.email,
        action,
        None,
        detail,
    )
    .await?;
    tx.commit().await?;
    Ok(ended)
}

/// What `pisgate operator disable|enable|reset-password` does to an account.
#[derive(Clone)]
pub enum AccountChange<'a> {
    /// Cannot sign in; every session ends.
    Disable,
    /// May sign in again, with a fresh failure count and no lock.
    Enable,
    /// A new password (its Argon2id hash); the count and the lock reset; every session ends.
    ResetPassword { password_hash: &'a str },
}

/// What [`change_account`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// Applied and audited: the sessions it ended, and whether the account is disabled.
    Done {
        sessions_ended: u64,
        disabled: bool,
    },
    NoSuchOperator,
    /// `enable` refused: the account's ledger MAC fails (its password hash or state was set
    /// outside pisgate); `reset-password` gives it a new one and seals it.
    SealFails(&'static str),
}

/// Applies `change` to the operator `email`, ends sessions where it says so, and audits it
/// (`by: cli`), in one transaction, sealing the account as it then is (the MAC records
/// whether it is disabled).
pub async fn change_account(
    pool: &Db,
    email: &str,
    change: AccountChange<'_>,
) -> Result<Changed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(o) = sqlx::query!(
        "SELECT id, password_hash, disabled_at, mac, mac_key_id FROM operators
          WHERE email = $1 FOR UPDATE",
        email
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Changed::NoSuchOperator);
    };
    // The state the stored MAC vouches for, with the hash as stored: enabled, disabled, or
    // neither (no MAC this ring trusts: written in SQL, by the previous version, or under a
    // key the ring lacks or retired). Only a vouched hash is ever sealed again.
    let ring = keys::installed();
    let vouched_as = |disabled: bool| {
        binding::operator_problem(
            ring.as_deref(),
            o.id,
            email,
            &o.password_hash,
            disabled,
            o.mac.as_deref(),
            o.mac_key_id.as_deref(),
        )
    };
    let vouched = match (vouched_as(false), vouched_as(true)) {
        (None, _) => Ok(false),
        (_, None) => Ok(true),
        (Some(problem), Some(_)) => Err(problem),
    };
    let disabled_now = o.disabled_at.is_some();
    let (hash, disabled, seal_it, action) = match &change {
        // Sealed as disabled only when its hash is vouched for: a hash an insider set stays
        // unsealed (no MAC), and only a new password seals the account again.
        AccountChange::Disable => (
            o.password_hash.as_str(),
            true,
            vouched.is_ok(),
            "operator_disabled",
        ),
        AccountChange::Enable => match vouched {
            Ok(_) => (o.password_hash.as_str(), false, true, "operator_enabled"),
            Err(problem) => return Ok(Changed::SealFails(problem)),
        },
        // A new password vouches for the hash; the account stays disabled unless both the
        // row and its MAC say enabled.
        AccountChange::ResetPassword { password_hash } => (
            *password_hash,
            disabled_now || vouched != Ok(false),
            true,
            "password_reset",
        ),
    };
    // Disabling with no ledger key at hand still disables: the account keeps no MAC, and
    // only a new password (with the key) seals it again.
    let sealed = if seal_it && (ring.is_some() || !matches!(change, AccountChange::Disable)) {
        Some(seal_account(o.id, email, hash, disabled)?)
    } else {
        None
    };
    sqlx::query!(
        "UPDATE operators
            SET password_hash = $2,
                disabled_at = CASE WHEN $3 THEN COALESCE(disabled_at, now()) END,
                failed_attempts = CASE WHEN $6 THEN failed_attempts ELSE 0 END,
                settled_failures = CASE WHEN $6 THEN settled_failures ELSE 0 END,
                locked_until = CASE WHEN $6 THEN locked_until END,
                mac = $4, mac_key_id = $5
          WHERE id = $1",
        o.id,
        hash,
        disabled,
        sealed.as_ref().map(|(_, m)| &m[..]),
        sealed.as_ref().map(|(k, _)| k.as_str()),
        matches!(change, AccountChange::Disable),
    )
    .execute(&mut *tx)
    .await?;
    let id = o.id;
    let ended = if matches!(change, AccountChange::Enable) {
        0
    } else {
        sqlx::query!("DELETE FROM operator_sessions WHERE operator_id = $1", id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
    };
    audit_in(
        &mut tx,
        Some(id),
        email,
        action,
        Some(&format!("operator {email}")),
        serde_json::json!({ "by": "cli", "sessions_ended": ended }),
    )
    .await?;
    tx.commit().await?;
    Ok(Changed::Done {
        sessions_ended: ended,
        disabled,
    })
}

/// Appends to the audit log: who did what to what, and when. On a pool it is a write of its
/// own; an action passes its transaction ([`audit_in`]) so both commit together.
pub async fn audit<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    operator_id: Option<Uuid>,
    email: &str,
    action: &str,
    target: Option<&str>,
    detail: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO operator_audit (operator_id, email, action, target, detail)
         VALUES ($1, $2, $3, $4, $5)",
        operator_id,
        email,
        action,
        target,
        detail
    )
    .execute(db)
    .await?;
    Ok(())
}

/// [`audit`] in the caller's transaction, so an action and its audit row commit together.
pub async fn audit_in(
    conn: &mut PgConnection,
    operator_id: Option<Uuid>,
    email: &str,
    action: &str,
    target: Option<&str>,
    detail: Value,
) -> Result<(), sqlx::Error> {
    audit(conn, operator_id, email, action, target, detail).await
}

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub email: String,
    pub action: String,
    pub target: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn recent_audit(pool: &Db, limit: i64) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as!(
        AuditEntry,
        "SELECT email, action, target, created_at FROM operator_audit ORDER BY id DESC LIMIT $1",
        limit
    )
    .fetch_all(pool)
    .await
}

/// What the console's payment search may filter on; `None` is "any".
#[derive(Debug, Default, Clone)]
pub struct Search {
    pub id: Option<Uuid>,
    pub merchant_id: Option<Uuid>,
    pub reference: Option<String>,
    pub psu_id: Option<String>,
    pub status: Option<String>,
    pub bank_status: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub id: Uuid,
    pub merchant_name: String,
    pub merchant_reference: Option<String>,
    pub status: String,
    /// The bank's id (`''` while the shopper has not chosen it).
    pub bank: String,
    pub bank_status: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

/// The newest payments matching `s`, at most `limit`.
pub async fn search(pool: &Db, s: &Search, limit: i64) -> Result<Vec<PaymentRow>, sqlx::Error> {
    sqlx::query_as!(
        PaymentRow,
        r#"SELECT p.id, m.name AS merchant_name, p.merchant_reference, p.status, p.bank,
                  p.bank_status, p.amount_minor, p.currency,
                  -- as the API reads it (select_payment!): 'infinity' edited in SQL is no panic
                  pisgate_readable_time(p.created_at) AS "created_at!"
             FROM payments p JOIN merchants m ON m.id = p.merchant_id
            WHERE ($1::uuid IS NULL OR p.id = $1)
              AND ($2::uuid IS NULL OR p.merchant_id = $2)
              AND ($3::text IS NULL OR p.merchant_reference = $3)
              AND ($4::text IS NULL OR p.psu_id = $4)
              AND ($5::text IS NULL OR p.status = $5)
              AND ($6::text IS NULL OR p.bank_status = $6)
              AND ($7::timestamptz IS NULL OR p.created_at >= $7)
              AND ($8::timestamptz IS NULL OR p.created_at < $8)
            ORDER BY p.created_at DESC, p.id DESC
            LIMIT $9"#,
        s.id,
        s.merchant_id,
        s.reference,
        s.psu_id,
        s.status,
        s.bank_status,
        s.from,
        s.to,
        limit
    )
    .fetch_all(pool)
    .await
}

/// One webhook delivery of a payment's events, with its attempts so far.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub url: String,
    pub status: String,
    pub attempts: i32,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_response_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

pub async fn deliveries(pool: &Db, payment_id: Uuid) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as!(
        Delivery,
        "SELECT d.endpoint_id, d.event_id, e.event_type, w.url, d.status, d.attempts, d.last_attempt_at,
                d.last_response_status, d.last_error, d.delivered_at
           FROM webhook_deliveries d
           JOIN webhook_events e ON e.id = d.event_id
           JOIN webhook_endpoints w ON w.id = d.endpoint_id
          WHERE e.payment_id = $1
          ORDER BY e.created_at, w.url",
        payment_id
    )
    .fetch_all(pool)
    .await
}

/// A payment that needs a human, and why.
#[derive(Debug, Clone)]
pub struct AttentionPayment {
    pub id: Uuid,
    pub merchant_name: String,
    pub status: String,
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// Payments a human should look at: final statuses a later bank read contradicts (first:
/// see [`crate::ledger::disagreements`]), initiations whose outcome is unknown, shoppers who
/// went to the bank and may sign late (pisgate's window passed, the bank's horizon not yet),
/// payments past their late-signing horizon that still wait (the bank has not confirmed them
/// unsignable), and authorized ones with no bank word for three days.
pub async fn attention_payments(
    pool: &Db,
    limit: i64,
) -> Result<Vec<AttentionPayment>, sqlx::Error> {
    sqlx::query_as!(
        AttentionPayment,
        r#"SELECT a.id AS "id!", a.merchant_name AS "merchant_name!", a.status AS "status!",
                  a.reason AS "reason!", a.since AS "since!"
             FROM (
               SELECT p.id, m.name AS merchant_name, p.status,
                      'disagrees with the bank: pisgate says ' || d.status
                          || ', the bank says ' || d.bank_status AS reason,
                      pisgate_readable_time(d.first_seen_at) AS since, 0 AS rank
                 FROM bank_disagreements d
                 JOIN payments p ON p.id = d.payment_id
                 JOIN merchants m ON m.id = p.merchant_id
               UNION ALL
               SELECT p.id, m.name, p.status, x.reason, pisgate_readable_time(p.updated_at), 1
                 FROM payments p
                 JOIN merchants m ON m.id = p.merchant_id
                 CROSS JOIN LATERAL (SELECT CASE
                     WHEN p.initiation = 'outcome_unknown' THEN 'initiation outcome unknown'
                     WHEN p.status = 'awaiting_authorization' AND p.sign_horizon_at < now()
                         THEN 'still waiting past the late-signing horizon'
                     WHEN p.status = 'awaiting_authorization' AND p.expires_at < now()
                          AND p.hop_opened_at IS NOT NULL THEN 'may be signed late'
                     WHEN p.status = 'authorized' AND p.updated_at < now() - interval '3 days'
                         THEN 'authorized for over 3 days'
                 END AS reason) x
                WHERE x.reason IS NOT NULL
             ) a
            ORDER BY a.rank, a.since
            LIMIT $1"#,
        limit
    )
    .fetch_all(pool)
    .await
}

/// A dead webhook delivery, for the attention list.
#[derive(Debug, Clone)]
pub struct DeadDelivery {
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub payment_id: Option<Uuid>,
    pub event_type: String,
    pub url: String,
    pub merchant_name: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

pub async fn dead_deliveries(pool: &Db, limit: i64) -> Result<Vec<DeadDelivery>, sqlx::Error> {
    sqlx::query_as!(
        DeadDelivery,
        "SELECT d.endpoint_id, d.event_id, e.payment_id, e.event_type, w.url, m.name AS merchant_name,
                d.attempts, d.last_error
           FROM webhook_deliveries d
           JOIN webhook_events e ON e.id = d.event_id
           JOIN webhook_endpoints w ON w.id = d.endpoint_id
           JOIN merchants m ON m.id = w.merchant_id
          WHERE d.status = 'dead'
          ORDER BY d.updated_at DESC
          LIMIT $1",
        limit
    )
    .fetch_all(pool)
    .await
}

/// A disabled webhook endpoint, for the attention list.
#[derive(Debug, Clone)]
pub struct DisabledEndpoint {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub merchant_name: String,
    pub url: String,
    pub disabled_reason: Option<String>,
}

pub async fn disabled_endpoints(
    pool: &Db,
    limit: i64,
) -> Result<Vec<DisabledEndpoint>, sqlx::Error> {
    sqlx::query_as!(
        DisabledEndpoint,
        "SELECT w.id, w.merchant_id, m.name AS merchant_name, w.url, w.disabled_reason
           FROM webhook_endpoints w JOIN merchants m ON m.id = w.merchant_id
          WHERE w.status = 'disabled'
          ORDER BY w.updated_at DESC
          LIMIT $1",
        limit
    )
    .fetch_all(pool)
    .await
}

/// The merchant of a webhook endpoint.
pub async fn endpoint_merchant<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    endpoint_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT merchant_id FROM webhook_endpoints WHERE id = $1",
        endpoint_id
    )
    .fetch_optional(db)
    .await
}

/// Payments of one merchant in one status, over the last 24 hours and 30 days.
#[derive(Debug, Clone)]
pub struct Usage {
    pub merchant_id: Uuid,
    pub status: String,
    pub last_day: i64,
    pub last_month: i64,
}

pub async fn usage(pool: &Db) -> Result<Vec<Usage>, sqlx::Error> {
    sqlx::query_as!(
        Usage,
        r#"SELECT merchant_id, status,
                  count(*) FILTER (WHERE created_at > now() - interval '24 hours') AS "last_day!",
                  count(*) AS "last_month!"
             FROM payments
            WHERE created_at > now() - interval '30 days'
            GROUP BY merchant_id, status
            ORDER BY merchant_id, status"#
    )
    .fetch_all(pool)
    .await
}

/// A merchant's webhooks at a glance: endpoints enabled and disabled, deliveries pending
/// and dead.
#[derive(Debug, Clone)]
pub struct WebhookHealth {
    pub merchant_id: Uuid,
    pub enabled: i64,
    pub disabled: i64,
    pub pending: i64,
    pub dead: i64,
}

pub async fn webhook_health(pool: &Db) -> Result<Vec<WebhookHealth>, sqlx::Error> {
    sqlx::query_as!(
        WebhookHealth,
        r#"SELECT w.merchant_id,
                  count(DISTINCT w.id) FILTER (WHERE w.status = 'enabled') AS "enabled!",
                  count(DISTINCT w.id) FILTER (WHERE w.status = 'disabled') AS "disabled!",
                  count(d.event_id) FILTER (WHERE d.status = 'pending') AS "pending!",
                  count(d.event_id) FILTER (WHERE d.status = 'dead') AS "dead!"
             FROM webhook_endpoints w
             LEFT JOIN webhook_deliveries d ON d.endpoint_id = w.id
            WHERE w.status <> 'deleted'
            GROUP BY w.merchant_id"#
    )
    .fetch_all(pool)
    .await
}

const REDACTED: &str = "[redacted]";

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("password_hash", &REDACTED)
            .field("failed_attempts", &self.failed_attempts)
            .field("locked_until", &self.locked_until)
            .finish()
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gate::Unknown => f.write_str("Unknown"),
            Gate::Disabled { id, email } => f
                .debug_struct("Disabled")
                .field("id", id)
                .field("email", email)
                .finish(),
            Gate::Locked { id, email } => f
                .debug_struct("Locked")
                .field("id", id)
                .field("email", email)
                .finish(),
            Gate::Unsealed { id, email } => f
                .debug_struct("Unsealed")
                .field("id", id)
                .field("email", email)
                .finish(),
            Gate::Admitted {
                id,
                email,
                password_hash: _,
                locks,
                counted,
                settled_before,
            } => f
                .debug_struct("Admitted")
                .field("id", id)
                .field("email", email)
                .field("password_hash", &REDACTED)
                .field("locks", locks)
                .field("counted", counted)
                .field("settled_before", settled_before)
                .finish(),
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("operator_id", &self.operator_id)
            .field("email", &self.email)
            .field("csrf_token", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for AccountChange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountChange::Disable => f.write_str("Disable"),
            AccountChange::Enable => f.write_str("Enable"),
            AccountChange::ResetPassword { password_hash: _ } => f
                .debug_struct("ResetPassword")
                .field("password_hash", &REDACTED)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_carries_a_password_hash_or_a_csrf_token() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
        let csrf = "csrf-7f3a9c1e5b";
        let id = Uuid::now_v7();
        let shown = [
            format!(
                "{:?}",
                Operator {
                    id,
                    email: "ops@example.com".into(),
                    password_hash: hash.into(),
                    failed_attempts: 2,
                    locked_until: None,
                }
            ),
            format!(
                "{:?}",
                Gate::Admitted {
                    id,
                    email: "ops@example.com".into(),
                    password_hash: hash.into(),
                    locks: true,
                    counted: 5,
                    settled_before: 4,
                }
            ),
            format!(
                "{:?}",
                Session {
                    operator_id: id,
                    email: "ops@example.com".into(),
                    csrf_token: csrf.into(),
                }
            ),
            format!(
                "{:#?}",
                AccountChange::ResetPassword {
                    password_hash: hash
                }
            ),
        ];
        for s in &shown {
            assert!(!s.contains("argon2id") && !s.contains(csrf), "{s}");
            assert!(s.contains("[redacted]"), "{s}");
        }
        // The rest is still there for whoever debugs.
        assert!(shown[1].contains("ops@example.com") && shown[1].contains("counted: 5"));
        assert!(shown[2].contains(&id.to_string()));
    }
}
