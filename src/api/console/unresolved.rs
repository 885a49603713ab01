//! An operator's reconciliation of an **unresolved initiation**: at a bank that may execute a
//! payment without the shopper ([`crate::bank::BankTraits::acts_without_hop`]), a payment
//! whose initiation answer was lost ([`PaymentRecord::answer_unrecorded`]) is never
//! initiated again, cancelled locally or expired (any of those could pay twice, or call a
//! paid payment failed). It waits for an operator, who asks the bank what it made and then:
//!
//! - **attaches the bank's payment id** ([`look_up`], then [`attach_in`]): pisgate reads the
//!   payment at the bank (its standard path, [`crate::bank::Bank::reference_for`]) and attaches
//!   it only when the bank's amount, currency and creditor account are this payment's, its
//!   debtor account, message and end-to-end id (where the bank shows them) are this
//!   payment's, and no other payment holds that id. It is then recorded as the initiation's answer (the same ledger event, the
//!   bank id bound by its MAC), the poller follows the bank to its final word, a same-key
//!   retry answers the payment, and a merchant's cancel made meanwhile is sent to the bank.
//! - **ends it as not made at the bank** ([`end_in`]): on the bank's word to the operator,
//!   `failed` (`failure.code` `not_made_at_bank`, [`crate::domain::Evidence::NoneAtBank`]).
//!
//! Either needs the operator's evidence (a case number, who at the bank said so), kept in the
//! payment's ledger with the operator's email; the console's audit log records the action in
//! the same transaction.

use crate::api::AppState;
use crate::bank::{BankError, BankPaymentId, BankRef};
use crate::domain::{Evidence, Money};
use crate::ledger::payments::{self, Change, PaymentRecord};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

/// The longest evidence text kept.
pub const EVIDENCE_MAX: usize = 500;

/// Whether the payment waits for an operator: its initiation answer is not recorded, at a
/// bank that may execute it without the shopper.
pub fn is_unresolved(state: &AppState, p: &PaymentRecord) -> bool {
    !p.status().is_final()
        && p.answer_unrecorded()
        && state.banks.client(&p.bank).traits().acts_without_hop
}

/// The evidence as kept, or why not: required, at most [`EVIDENCE_MAX`] characters, no
/// control character.
pub fn evidence(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("Give the evidence: who at the bank said so, or their case number.".into());
    }
    if text.chars().count() > EVIDENCE_MAX {
        return Err(format!(
            "The evidence is longer than {EVIDENCE_MAX} characters."
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("The evidence must not contain control characters.".into());
    }
    Ok(text.to_owned())
}

/// The bank's payment, read and found to be this payment's.
#[derive(Debug, Clone)]
pub struct Found {
    pub payment_id: Uuid,
    pub bank: String,
    pub bank_ref: BankRef,
    pub bank_status: String,
    /// What the bank holds, in a sentence for the confirmation (masked account).
    pub summary: String,
}

/// pisgate's end-to-end id for a payment, as the Berlin Group initiation sent it.
pub fn end_to_end_id(payment_id: Uuid) -> String {
    payment_id.simple().to_string()
}

/// An account number as compared: upper case, without spaces.
fn normalised(account: &str) -> String {
    account
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

fn masked(account: &str) -> String {
    let chars: Vec<char> = account.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("…{tail}")
}

/// Whether `payment` waits for an operator; `Ok(Err(why))` with a sentence when it does not.
pub async fn check(state: &AppState, payment: Uuid) -> anyhow::Result<Result<(), String>> {
    let mut conn = state.pool.read_conn().await?;
    Ok(match payments::get(&mut conn, payment).await? {
        None => Err("No such payment.".into()),
        Some(p) if !is_unresolved(state, &p) => Err(not_unresolved()),
        Some(_) => Ok(()),
    })
}

/// Reads the bank's payment `bank_payment_id` and checks it is `payment`'s (see the module
/// documentation); `Ok(Err(why))` with a sentence for the operator when it is not, or when
/// the payment is not unresolved. Sends only reads to the bank.
pub async fn look_up(
    state: &AppState,
    payment: Uuid,
    bank_payment_id: &str,
) -> anyhow::Result<Result<Found, String>> {
    let p = {
        let mut conn = state.pool.read_conn().await?;
        payments::get(&mut conn, payment).await?
    };
    let Some(p) = p else {
        return Ok(Err("No such payment.".into()));
    };
    if !is_unresolved(state, &p) {
        return Ok(Err(not_unresolved()));
    }
    let Some(id) = BankPaymentId::parse(bank_payment_id.trim()) else {
        return Ok(Err(
            "That is not a bank payment id: letters, digits, '-', '.', '_' and '~' only.".into(),
        ));
    };
    let holder: Option<Uuid> = sqlx::query_scalar!(
        "SELECT payment_id FROM payment_bank_ids WHERE bank = $1 AND bank_payment_id = $2",
        p.bank,
        id.as_str()
    )
    .fetch_optional(&state.pool)
    .await?;
    if let Some(other) = holder {
        return Ok(Err(format!(
            "The bank's payment {id} already belongs to payment {other}."
        )));
    }
    let client = state.banks.client(&p.bank);
    let periodic = p.request.get("recurring").is_some_and(|r| !r.is_null());
    let Some(bank_ref) = client.reference_for(&id, &p.currency, periodic) else {
        return Ok(Err(format!(
            "pisgate cannot address a {} payment at bank {}: no product is configured for it.",
            p.currency, p.bank
        )));
    };
    let details = match client.details(&bank_ref, None, None).await {
        Ok(d) => d,
        Err(BankError::NotFound) => {
            return Ok(Err(format!(
                "The bank holds no payment {id} for pisgate (it answered 404)."
            )));
        }
        Err(e) => {
            tracing::warn!(payment_id = %payment, error = %e, "reading the bank's payment for an operator failed");
            return Ok(Err(format!(
                "The bank could not be asked ({}): nothing was attached. Try again later.",
                e.kind()
            )));
        }
    };
    let ours = crate::domain::Currency::from_code(&p.currency)
        .and_then(|c| Money::from_minor(p.amount_minor, c));
    let Some(ours) = ours else {
        return Ok(Err("The payment's amount cannot be read.".into()));
    };
    match details.amount {
        None => {
            return Ok(Err(
                "The bank's answer shows no amount pisgate can read exactly: nothing was attached."
                    .into(),
            ));
        }
        Some(theirs) if theirs != ours => {
            return Ok(Err(format!(
                "The bank's payment {id} is for {theirs}, this payment for {ours}: not this payment."
            )));
        }
        Some(_) => {}
    }
    let creditor = p
        .request
        .pointer("/creditor/account/value")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    match &details.creditor_account {
        None => {
            return Ok(Err(
                "The bank's answer shows no creditor account: nothing was attached.".into(),
            ));
        }
        Some(a) if normalised(&a.value) != normalised(creditor) => {
            return Ok(Err(format!(
                "The bank's payment {id} pays account {}, this payment account {}: not this payment.",
                masked(&a.value),
                masked(creditor)
            )));
        }
        Some(_) => {}
    }
    // The debtor and the message, where both sides show one: two lost payments of one
    // merchant with the same amount and creditor (an order tried twice) differ there.
    let debtor = p.shopper_debtor_account.as_deref().or_else(|| {
        p.request
            .pointer("/debtor/account/value")
            .and_then(|v| v.as_str())
    });
    if let (Some(ours), Some(theirs)) = (debtor, &details.debtor_account)
        && normalised(ours) != normalised(&theirs.value)
    {
        return Ok(Err(format!(
            "The bank's payment {id} is from account {}, this payment from account {}: not this payment.",
            masked(&theirs.value),
            masked(ours)
        )));
    }
    let message = p
        .request
        .pointer("/creditor/message")
        .and_then(|v| v.as_str());
    if let (Some(ours), Some(theirs)) = (message, details.creditor_message.as_deref())
        && ours.trim() != theirs.trim()
    {
        return Ok(Err(format!(
            "The bank's payment {id} carries another message than this payment: not this payment."
        )));
    }
    let ours_e2e = end_to_end_id(p.id);
    if let Some(e2e) = details.external_id.as_deref().map(str::trim)
        && !e2e.is_empty()
        && e2e.replace('-', "").to_ascii_lowercase() != ours_e2e
    {
        return Ok(Err(format!(
            "The bank's payment {id} carries end-to-end id {e2e}, this payment {ours_e2e}: not this payment."
        )));
    }
    let bank_status = details.status.bank_status.clone();
    Ok(Ok(Found {
        payment_id: p.id,
        bank: p.bank.clone(),
        summary: format!(
            "The bank holds payment {id}: {ours} to account {}{}, bank status {bank_status}. Its amount, currency and creditor account are this payment's.",
            masked(creditor),
            details
                .external_id
                .as_deref()
                .map(|e| format!(", end-to-end id {e}"))
                .unwrap_or_default(),
        ),
        bank_ref,
        bank_status,
    }))
}

fn not_unresolved() -> String {
    "This payment is not waiting for an operator: its initiation answer is recorded, it is final, or its bank never executes a payment without the shopper.".into()
}

/// Records `found` as the payment's initiation answer, in the caller's transaction, with the
/// operator's `evidence`; `Ok(Err(why))` when the payment changed meanwhile (its answer came
/// in, it ended). The caller commits, then follows a merchant's earlier cancel
/// ([`crate::api::initiation::follow_a_cancel`]).
pub async fn attach_in(
    tx: &mut PgConnection,
    state: &AppState,
    found: &Found,
    operator: &str,
    evidence: &str,
) -> Result<Result<(), String>, sqlx::Error> {
    let Some(p) = payments::get_for_update(&mut *tx, found.payment_id).await? else {
        return Ok(Err("No such payment.".into()));
    };
    if !is_unresolved(state, &p) || p.bank != found.bank {
        return Ok(Err(not_unresolved()));
    }
    let id = found.bank_ref.id.as_str();
    let recorded = payments::record_initiated(
        &mut *tx,
        p.id,
        p.initiation_attempts,
        id,
        None,
        &found.bank_ref.links.to_json(),
        Some(&found.bank_status),
        // The bank may act without the hop: neither a cancel nor the horizon takes "nobody
        // could sign" for a fact.
        true,
    )
    .await?;
    if !recorded {
        return Ok(Err(not_unresolved()));
    }
    payments::note(
        &mut *tx,
        p.id,
        "bank_payment_attached",
        json!({
            "bank_payment_id": id,
            "operator": operator,
            "evidence": evidence,
        }),
    )
    .await?;
    tracing::info!(payment_id = %p.id, bank = %p.bank, bank_payment_id = id, "an operator attached the bank's payment to a payment whose initiation answer was lost");
    Ok(Ok(()))
}

/// Ends the unresolved payment `payment` as `failed` (`not_made_at_bank`) on the bank's word
/// to the operator, in the caller's transaction, with the operator's `evidence`; the merchant
/// is told by the usual webhook. `Ok(Err(why))` when it is not unresolved.
pub async fn end_in(
    tx: &mut PgConnection,
    state: &AppState,
    payment: Uuid,
    operator: &str,
    evidence: &str,
) -> Result<Result<(), String>, sqlx::Error> {
    let Some(p) = payments::get_for_update(&mut *tx, payment).await? else {
        return Ok(Err("No such payment.".into()));
    };
    if !is_unresolved(state, &p) {
        return Ok(Err(not_unresolved()));
    }
    // Nothing exists at the bank: a same-key retry answers the failed payment, never a
    // "not resumable" one.
    sqlx::query!(
        "UPDATE payments SET initiation = 'not_created' WHERE id = $1",
        payment
    )
    .execute(&mut *tx)
    .await?;
    match payments::transition(
        &mut *tx,
        payment,
        Change {
            evidence: Evidence::NoneAtBank,
            bank_status: None,
            kind: "ended_by_operator",
            detail: json!({ "operator": operator, "evidence": evidence }),
            failure: None,
        },
    )
    .await
    {
        Ok(_) => {}
        Err(payments::TransitionError::Database(e)) => return Err(e),
        Err(e) => return Ok(Err(format!("Not ended: {e}."))),
    }
    tracing::warn!(payment_id = %payment, bank = %p.bank, "an operator ended a payment whose initiation answer was lost, on the bank's word that it made none");
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_required_bounded_and_plain_text() {
        assert!(evidence("  ").is_err());
        assert!(evidence("case\u{0}1").is_err());
        assert!(evidence(&"x".repeat(EVIDENCE_MAX + 1)).is_err());
        assert_eq!(
            evidence("  Bank support case 4711 (Anna K.) ").unwrap(),
            "Bank support case 4711 (Anna K.)"
        );
    }

    #[test]
    fn accounts_compare_without_spaces_or_case_and_show_only_their_tail() {
        assert_eq!(normalised("fi14 1009 3000 1234 58"), "FI1410093000123458");
        assert_eq!(masked("FI1410093000123458"), "…3458");
        assert_eq!(masked("12"), "…12");
    }
}
