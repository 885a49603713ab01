//! An operator's reconciliation of an **unresolved initiation**: at a bank that may execute a
//! payment without the shopper ([`crate::bank::BankTraits::acts_without_hop`]), a payment
//! whose initiation answer was lost ([`PaymentRecord::answer_unrecorded`]) is never
//! initiated again, cancelled locally or expired (any of those could pay twice, or call a
//! paid payment failed). It waits for an operator, who asks the bank what it made and then:
//!
//! - **attaches the bank's payment id** ([`look_up`], then [`attach_in`]): pisgate reads the
//!   payment at the bank (its standard path, [`crate::bank::Bank::reference_for`]) and attaches
//!   it only when the bank shows this payment's end-to-end id (its id, as sent), amount,
//!   currency and creditor account, its debtor account and message where the bank shows
//!   them, and no other payment holds that id. Only once the attempt cannot be running any
//!   more ([`Standing`]): a late answer would otherwise be an orphan. It is then recorded as the initiation's answer (the same ledger event, the
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
use crate::ledger::binding;
use crate::ledger::payments::{self, Change, PaymentRecord};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

/// The longest evidence text kept.
pub const EVIDENCE_MAX: usize = 500;

/// Whether the payment's initiation answer is not recorded, at a bank that may execute it
/// without the shopper (it may still be on its way: see [`standing`]).
pub fn is_unresolved(state: &AppState, p: &PaymentRecord) -> bool {
    !p.status().is_final()
        && p.answer_unrecorded()
        && state.banks.client(&p.bank).traits().acts_without_hop
}

/// Where an unresolved payment stands for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Its answer is recorded, it is final, or its bank never acts without the shopper.
    Resolved,
    /// Its attempt may still be running (`pending`, recently): the answer may yet come, and
    /// the late answer of an attempt ended or overwritten meanwhile would be an orphan.
    InFlight,
    /// Lost (`outcome_unknown`), or `pending` with nothing written for longer than any bank
    /// call could take (its replica stopped midway): waits for an operator.
    Waiting,
}

/// How long an attempt left `pending` is taken as still running: the longest bank call or
/// the in-flight bound of an Idempotency-Key, and a minute to record its answer.
fn in_flight_secs(state: &AppState) -> f64 {
    let s = &state.settings;
    (s.longest_bank_call()
        .max(s.payments.idempotency_stale_after)
        .max(s.callback.exchange_deadline)
        + std::time::Duration::from_secs(60))
    .as_secs_f64()
}

/// Where `p` stands ([`Standing`]), judged on the database's clock; call it under the row's
/// lock to act on it.
pub async fn standing(
    state: &AppState,
    conn: &mut PgConnection,
    p: &PaymentRecord,
) -> Result<Standing, sqlx::Error> {
    if !is_unresolved(state, p) {
        return Ok(Standing::Resolved);
    }
    if p.initiation == "outcome_unknown" {
        return Ok(Standing::Waiting);
    }
    let quiet = sqlx::query_scalar!(
        r#"SELECT coalesce((SELECT max(created_at) FROM payment_events WHERE payment_id = $1)
                           < now() - make_interval(secs => $2), true)
              AND coalesce((SELECT initiation_lease_until FROM payments WHERE id = $1) < now(), true)
              AS "quiet!""#,
        p.id,
        in_flight_secs(state),
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(if quiet {
        Standing::Waiting
    } else {
        Standing::InFlight
    })
}

/// The operator's sentence for a payment that does not wait for them.
fn not_waiting(standing: Standing) -> String {
    match standing {
        Standing::InFlight => "The bank's answer to this payment's initiation may still be on its way: look again in a few minutes.".into(),
        _ => not_unresolved(),
    }
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

/// `payment` if it waits for an operator; `Ok(Err(why))` with a sentence when it does not.
pub async fn check(
    state: &AppState,
    payment: Uuid,
) -> anyhow::Result<Result<PaymentRecord, String>> {
    let mut conn = state.pool.read_conn().await?;
    let Some(p) = payments::get(&mut conn, payment).await? else {
        return Ok(Err("No such payment.".into()));
    };
    Ok(match standing(state, &mut conn, &p).await? {
        Standing::Waiting => Ok(p),
        other => Err(not_waiting(other)),
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
    let p = match check(state, payment).await? {
        Ok(p) => p,
        Err(why) => return Ok(Err(why)),
    };
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
                "The bank answered 404 for payment {id} under this payment's product: check the id. (If the bank's product for such payments changed in pisgate's settings since, the 404 proves nothing.)"
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
    // The one term that names this payment and no other (an order tried twice has the same
    // amount, creditor, debtor and message): required.
    let ours_e2e = end_to_end_id(p.id);
    match details
        .external_id
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        None => {
            return Ok(Err(format!(
                "The bank's answer for payment {id} does not show its end-to-end id, so pisgate cannot tell it from another payment of the same terms: nothing was attached."
            )));
        }
        Some(e2e) if e2e.replace('-', "").to_ascii_lowercase() != ours_e2e => {
            return Ok(Err(format!(
                "The bank's payment {id} carries end-to-end id {e2e}, this payment {ours_e2e}: not this payment."
            )));
        }
        Some(_) => {}
    }
    let bank_status = details.status.bank_status.clone();
    Ok(Ok(Found {
        payment_id: p.id,
        bank: p.bank.clone(),
        summary: format!(
            "The bank holds payment {id}: {ours} to account {}, end-to-end id {ours_e2e}, bank status {bank_status}. Its end-to-end id, amount, currency and creditor account are this payment's.",
            masked(creditor),
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
    match standing(state, &mut *tx, &p).await? {
        Standing::Waiting if p.bank == found.bank => {}
        Standing::Waiting => return Ok(Err(not_unresolved())),
        other => return Ok(Err(not_waiting(other))),
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
    .await;
    let recorded = match recorded {
        Ok(r) => r,
        // Another payment took this bank id meanwhile (payment_bank_ids): the caller rolls
        // this back.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Ok(Err(format!(
                "The bank's payment {id} was just attached to another payment."
            )));
        }
        Err(e) => return Err(e),
    };
    if !recorded {
        return Ok(Err(not_unresolved()));
    }
    // Found late (its horizon usually passed long ago): the shopper gets the late-signing
    // horizon from now before pisgate asks the bank to delete a payment nobody signed (this
    // reference has no scaStatus link that would show an approval in the bank's app).
    // The ledger records the new horizon (`ledger verify` holds the row to it). It extends
    // the horizon the ledger recorded, never the row's: a horizon pushed out in SQL would
    // otherwise be signed into the ledger here.
    let horizon = sqlx::query_scalar!(
        r#"UPDATE payments
           SET sign_horizon_at = greatest(COALESCE(pisgate_ledger_horizon(id, $3, $4),
                                                   pisgate_readable_time(sign_horizon_at)),
                                          now() + make_interval(secs => $2))
           WHERE id = $1
           RETURNING sign_horizon_at AS "sign_horizon_at!""#,
        p.id,
        state.settings.payments.late_signing_horizon.as_secs_f64(),
        binding::HORIZON_FIELD,
        binding::HORIZON_EVENT_KINDS as &[&str],
    )
    .fetch_one(&mut *tx)
    .await?;
    payments::note(
        &mut *tx,
        p.id,
        "bank_payment_attached",
        json!({
            "bank_payment_id": id,
            "operator": operator,
            "evidence": evidence,
            (binding::HORIZON_FIELD): binding::horizon_text(horizon),
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
    match standing(state, &mut *tx, &p).await? {
        Standing::Waiting => {}
        other => return Ok(Err(not_waiting(other))),
    }
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
    // Nothing exists at the bank: a same-key retry answers the failed payment, never a
    // "not resumable" one.
    sqlx::query!(
        "UPDATE payments SET initiation = 'not_created' WHERE id = $1",
        payment
    )
    .execute(&mut *tx)
    .await?;
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
