//! A merchant's registered payees (the creditor accounts it pays out to) and its payee
//! policy.
//!
//! `payees = "open"` (the default) lets a merchant pay any valid creditor account;
//! `"registered"` only the accounts in `merchant_payees`, so a stolen API key cannot send
//! the shoppers' money elsewhere. Payees and the policy are changed by operators only (the
//! console and `pisgate merchant payee …`), never through the merchant API; every change is
//! written to `operator_audit` in the same transaction by the caller.
//!
//! Accounts are stored in the domain's normalised form ([`Account::parse`]), so a payee
//! registered as `FI21 1234 5600 0007 85` matches a payment to `fi2112345600000785`. The full
//! number is data, never a log line: callers log [`Account::masked`].
//!
//! The policy is judged inside the statement that creates a payment
//! (`payments::create_with_key`, its `allowed` part): read at every creation, so a change
//! applies to the next payment on every replica, at no round trip of its own.
//!
//! The policy and each payee are sealed with the ledger key when an operator sets them
//! ([`crate::ledger::binding::payee_policy_mac`], [`crate::ledger::binding::payee_mac`]),
//! and creation trusts only what carries its MAC: a payee inserted in SQL lets no payment
//! through, and a policy whose MAC does not hold (set back to `open` in SQL) counts as
//! `registered`. `ledger verify` reports both.

use super::Db;
use super::binding;
use super::keys::LedgerKeys;
use crate::domain::account::{Account, AccountType};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Which creditor accounts a merchant may pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Any valid account (the default, so existing integrations keep working).
    Open,
    /// Only the merchant's registered payees.
    Registered,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Open => "open",
            Policy::Registered => "registered",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "open" => Some(Policy::Open),
            "registered" => Some(Policy::Registered),
            _ => None,
        }
    }
}

/// One registered payee, as its row stores it.
#[derive(Debug, Clone)]
pub struct Payee {
    /// The row's account type and number exactly as stored: what the console's removal
    /// sends back, so a row written outside pisgate can be removed too. Rows pisgate writes
    /// hold the normalised form ([`Account::parse`]). Data, never a log line.
    pub account_type: String,
    pub account: String,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Why the row can never match a payment whatever its MAC: it is no account of its
    /// type, or not in the normalised form pisgate stores (written in SQL). Checked without
    /// the ledger key.
    pub malformed: Option<&'static str>,
    /// Why its row is not trusted: `malformed`, or no MAC of the installed ledger ring
    /// (written in SQL, copied, or sealed under a key the ring lacks or retired); `None`:
    /// trusted. Creation pays such a row no more than an unregistered account; an
    /// operator's `add` of the same account vouches for a well-formed one.
    pub problem: Option<&'static str>,
}

impl Payee {
    /// A form of the stored number safe for logs and the audit log (as [`Account::masked`]).
    pub fn masked(&self) -> String {
        masked_stored(&self.account_type, &self.account)
    }
}

/// [`Account::masked`] for a number as stored, which may not parse: the IBAN country (if
/// any) and at most the last four characters, never more than half of it.
pub fn masked_stored(account_type: &str, account: &str) -> String {
    // Shown and audited: a control character (a NUL PostgreSQL cannot store) as `?`.
    let visible = |c: char| if c.is_control() { '?' } else { c };
    let account_type: String = account_type.chars().map(visible).collect();
    let chars: Vec<char> = account.chars().map(visible).collect();
    let shown = (chars.len() / 2).min(4);
    let tail: String = chars[chars.len() - shown..].iter().collect();
    if account_type == AccountType::Iban.as_str() && chars.len() >= 2 && shown > 0 {
        let cc: String = chars[..2].iter().collect();
        format!("{cc}…{tail}")
    } else {
        format!("{account_type}…{tail}")
    }
}

/// Why a stored row can never match a payment, or `None`.
fn malformed(account_type: &str, account: &str) -> Option<&'static str> {
    let Some(t) = AccountType::parse(account_type) else {
        return Some("not an account type pisgate knows (written outside pisgate)");
    };
    match Account::parse(t, account) {
        Err(_) => Some("not a valid account of its type (written outside pisgate)"),
        Ok(a) if a.value() != account => Some(
            "not in the normalised form pisgate stores (written in SQL): it matches no payment",
        ),
        Ok(_) => None,
    }
}

/// A merchant's payee policy as stored, and why it is not trusted (`None`: it is). An
/// untrusted policy counts as [`Policy::Registered`] at creation, whatever it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyState {
    pub stored: Policy,
    pub problem: Option<&'static str>,
}

/// What adding a payee did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Added,
    /// It was registered already (its label is left as it was).
    AlreadyRegistered,
    /// Its row was there without a MAC this ring trusts (written in SQL, or sealed under
    /// another key): the operator's registration of this account for this merchant seals it
    /// (label and date left as they were).
    Vouched,
    UnknownMerchant,
}

/// Registers `account` as a payee of the merchant, in the caller's transaction.
pub async fn add(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    account: &Account,
    label: Option<&str>,
) -> Result<Added, sqlx::Error> {
    if !merchant_exists(conn, merchant_id).await? {
        return Ok(Added::UnknownMerchant);
    }
    let (key_id, mac) = seal(|ring, key_id| {
        binding::payee_mac(
            ring,
            key_id,
            merchant_id,
            account.account_type().as_str(),
            account.value(),
        )
    })?;
    // A row already there keeps its label and date; one without this very MAC (written in
    // SQL, or sealed under another key) is sealed by the operator's registration of exactly
    // this account for this merchant.
    let written = sqlx::query_scalar!(
        r#"INSERT INTO merchant_payees (merchant_id, account_type, account, label, mac, mac_key_id)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (merchant_id, account_type, account)
               DO UPDATE SET mac = EXCLUDED.mac, mac_key_id = EXCLUDED.mac_key_id
               WHERE merchant_payees.mac IS DISTINCT FROM EXCLUDED.mac
                  OR merchant_payees.mac_key_id IS DISTINCT FROM EXCLUDED.mac_key_id
           RETURNING (xmax = 0) AS "inserted!""#,
        merchant_id,
        account.account_type().as_str(),
        account.value(),
        label,
        &mac[..],
        key_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match written {
        Some(true) => Added::Added,
        Some(false) => Added::Vouched,
        None => Added::AlreadyRegistered,
    })
}

/// The current key's id and `mac(ring, key id)`, for a row an operator writes now.
fn seal(
    mac: impl FnOnce(&LedgerKeys, &str) -> Option<[u8; 32]>,
) -> Result<(String, [u8; 32]), sqlx::Error> {
    crate::ledger::keys::seal_with_current("changing a merchant's payees", mac)
}

/// The current key's id and the MAC of `policy` for the merchant (its creation seals
/// `open`).
pub(crate) fn seal_policy(
    merchant_id: Uuid,
    policy: Policy,
) -> Result<(String, [u8; 32]), sqlx::Error> {
    seal(|ring, key_id| binding::payee_policy_mac(ring, key_id, merchant_id, policy.as_str()))
}

/// Removes a payee of the merchant, in the caller's transaction; whether there was one.
pub async fn remove(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    account: &Account,
) -> Result<bool, sqlx::Error> {
    remove_stored(
        conn,
        merchant_id,
        account.account_type().as_str(),
        account.value(),
    )
    .await
}

/// Removes the payee row whose type and number are exactly these (as [`list`] shows them:
/// also a row written outside pisgate, which no normalised form matches), in the caller's
/// transaction; whether there was one.
pub async fn remove_stored(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    account_type: &str,
    account: &str,
) -> Result<bool, sqlx::Error> {
    let removed = sqlx::query!(
        "DELETE FROM merchant_payees
         WHERE merchant_id = $1 AND account_type = $2 AND account = $3",
        merchant_id,
        account_type,
        account,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(removed > 0)
}

/// The merchant's payees, oldest first, each checked against the installed ledger ring.
pub async fn list(pool: &Db, merchant_id: Uuid) -> Result<Vec<Payee>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT account_type, account, label, created_at, mac, mac_key_id FROM merchant_payees
         WHERE merchant_id = $1 ORDER BY created_at, account_type, account",
        merchant_id,
    )
    .fetch_all(pool)
    .await?;
    let ring = crate::ledger::keys::installed();
    // Every row is listed, also one that is no account pisgate would store: an operator
    // sees what an insider wrote, and can remove it.
    Ok(rows
        .into_iter()
        .map(|r| {
            let malformed = malformed(&r.account_type, &r.account);
            let problem = malformed.or_else(|| {
                binding::payee_problem(
                    ring.as_deref(),
                    merchant_id,
                    &r.account_type,
                    &r.account,
                    r.mac.as_deref(),
                    r.mac_key_id.as_deref(),
                )
            });
            Payee {
                account_type: r.account_type,
                account: r.account,
                label: r.label,
                created_at: r.created_at,
                malformed,
                problem,
            }
        })
        .collect())
}

/// The merchant's policy as stored, checked against the installed ledger ring; `None` for
/// an unknown merchant.
pub async fn policy_state(
    pool: &Db,
    merchant_id: Uuid,
) -> Result<Option<PolicyState>, sqlx::Error> {
    let Some(row) = sqlx::query!(
        "SELECT payees, payees_mac, payees_mac_key_id FROM merchants WHERE id = $1",
        merchant_id
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let ring = crate::ledger::keys::installed();
    let problem = binding::payee_policy_problem(
        ring.as_deref(),
        merchant_id,
        &row.payees,
        row.payees_mac.as_deref(),
        row.payees_mac_key_id.as_deref(),
    );
    // A value no writer of ours stores is no policy an operator set: registered payees only.
    Ok(Some(match Policy::parse(&row.payees) {
        Some(stored) => PolicyState { stored, problem },
        None => PolicyState {
            stored: Policy::Registered,
            problem: Some(problem.unwrap_or("the payee policy is not one pisgate knows")),
        },
    }))
}

/// Sets the merchant's policy in the caller's transaction; `false` for an unknown merchant.
pub async fn set_policy(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    policy: Policy,
) -> Result<bool, sqlx::Error> {
    let (key_id, mac) = seal_policy(merchant_id, policy)?;
    let updated = sqlx::query!(
        "UPDATE merchants SET payees = $2::text, payees_mac = $3, payees_mac_key_id = $4
         WHERE id = $1",
        merchant_id,
        policy.as_str(),
        &mac[..],
        key_id,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

async fn merchant_exists(conn: &mut PgConnection, merchant_id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query_scalar!("SELECT id FROM merchants WHERE id = $1", merchant_id)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}
