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

use super::Db;
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

/// One registered payee.
#[derive(Debug, Clone)]
pub struct Payee {
    pub account: Account,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What adding a payee did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Added,
    /// It was registered already (its label is left as it was).
    AlreadyRegistered,
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
    let inserted = sqlx::query!(
        "INSERT INTO merchant_payees (merchant_id, account_type, account, label)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (merchant_id, account_type, account) DO NOTHING",
        merchant_id,
        account.account_type().as_str(),
        account.value(),
        label,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(if inserted == 1 {
        Added::Added
    } else {
        Added::AlreadyRegistered
    })
}

/// Removes a payee of the merchant, in the caller's transaction; whether there was one.
pub async fn remove(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    account: &Account,
) -> Result<bool, sqlx::Error> {
    let removed = sqlx::query!(
        "DELETE FROM merchant_payees
         WHERE merchant_id = $1 AND account_type = $2 AND account = $3",
        merchant_id,
        account.account_type().as_str(),
        account.value(),
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(removed > 0)
}

/// The merchant's payees, oldest first.
pub async fn list(pool: &Db, merchant_id: Uuid) -> Result<Vec<Payee>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT account_type, account, label, created_at FROM merchant_payees
         WHERE merchant_id = $1 ORDER BY created_at, account_type, account",
        merchant_id,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            // Stored in normalised form by `add`; a row that no longer parses (a rule that
            // tightened) is left out rather than shown wrong.
            let t = AccountType::parse(&r.account_type)?;
            Some(Payee {
                account: Account::parse(t, &r.account).ok()?,
                label: r.label,
                created_at: r.created_at,
            })
        })
        .collect())
}

/// The merchant's policy; `None` for an unknown merchant.
pub async fn policy(pool: &Db, merchant_id: Uuid) -> Result<Option<Policy>, sqlx::Error> {
    let found = sqlx::query_scalar!("SELECT payees FROM merchants WHERE id = $1", merchant_id)
        .fetch_optional(pool)
        .await?;
    Ok(found.as_deref().and_then(Policy::parse))
}

/// Sets the merchant's policy in the caller's transaction; `false` for an unknown merchant.
pub async fn set_policy(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    policy: Policy,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE merchants SET payees = $2 WHERE id = $1",
        merchant_id,
        policy.as_str(),
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
