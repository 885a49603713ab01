//! Initiation at the bank: one bank attempt of a payment, from the bank call (bounded by a
//! budget) to its recorded outcome. Two callers share it: `POST /v1/payments` (the merchant's
//! request, with its Idempotency-Key) and the shopper's page at the authorization hop
//! (deferred initiation: the shopper chose the bank or gave their IBAN).
//!
//! A bank whose every call needs the shopper's own token (SEB) is initiated from the
//! BankID page once the shopper identified ([`initiate_for_shopper_with_token`]).
//!
//! The truth rules are the same for all: an attempt is started in the ledger before the
//! bank call ([`payments::begin_attempt`], [`payments::begin_shopper_attempt`] or creation);
//! only the current attempt may record the bank's answer ([`payments::record_initiated`],
//! else the answer is an orphan in the ledger); an explicit refusal, or a request pisgate
//! could not send at all ([`BankError::NotSent`]), ends the payment `failed`; a timeout, a dropped connection or an unreadable answer leaves
//! `initiation: outcome_unknown` (the bank's link of such an attempt is never handed to
//! anyone); every attempt and its outcome is in the ledger.
//!
//! Never: hold a transaction across the bank call, hand out a link that is not the recorded
//! attempt's, or log the shopper's IBAN in full.
//!
//! A bank answer that made the payment with other terms than pisgate sent (another amount,
//! currency or creditor account echoed back: [`Initiated::echo_mismatch`]) is recorded as
//! the payment's (the bank holds it, so pisgate follows it) with a `bank_terms_mismatch`
//! event, and pisgate never has it signed or submitted (see [`record_contradiction`]).

use crate::api::AppState;
use crate::api::error::{ApiError, FieldError};
use crate::api::payment_input::Validated;
use crate::api::payments::{redirect_uri_for, view};
use crate::bank::{BankError, Initiated, PaymentInitiation, PsuContext};
use crate::domain::{Evidence, PaymentRequest, PaymentRequestInput};
use crate::ledger::idempotency;
use crate::ledger::payments::{self, Change, PaymentRecord};
use crate::ledger::submissions;
use anyhow::Context as _;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// The merchant's idempotency key an attempt answers, if a merchant's request runs it.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    pub merchant_id: Uuid,
    pub key: &'a str,
}

/// One bank attempt of a payment.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub payment_id: Uuid,
    pub attempt: i32,
    /// The bank it was sent to.
    pub bank: &'a str,
    /// `None` for the shopper's page: there is no key to complete or release.
    pub key: Option<KeyRef<'a>>,
}

/// What was recorded of an attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The bank's answer is the payment's: its link is the one the hop leads to.
    Initiated,
    /// A newer attempt owns the payment (or it ended): this answer is an orphan.
    Superseded,
    /// The bank refused it, or pisgate could not send it at all: the payment is `failed`.
    Refused,
    /// No answer pisgate can trust (`not_created` when the bank provably made nothing).
    Unanswered { not_created: bool },
}

/// An attempt's recorded outcome and what a merchant's request answers for it.
#[derive(Debug)]
pub struct Answer {
    pub recorded: Recorded,
    pub status: StatusCode,
    pub body: Value,
}

/// A retry with the same key of a payment whose initiation answer was lost, at a bank that
/// may execute a payment without the shopper ([`crate::bank::BankTraits::acts_without_hop`]):
/// no second attempt is sent.
pub fn not_resumable(bank: &str) -> ApiError {
    ApiError::Conflict(
        "initiation_not_resumable",
        format!(
            "the bank's answer to this payment's initiation was lost, and {bank} may execute a payment without the shopper (an SCA exemption): a second initiation could pay twice, so none is sent. The payment stays open until an operator reconciles it with the bank; do not create it again with another key unless the operator says it was not made"
        ),
    )
}

/// [`outcome_unknown`] at a bank that may execute a payment without the shopper: a retry
/// does not resume it (it answers [`not_resumable`]).
pub fn outcome_unknown_at(bank: &str) -> ApiError {
    ApiError::InitiationOutcomeUnknown(format!(
        "the bank's answer to this payment was lost or unreadable, so we cannot tell whether it was created; {bank} may execute a payment without the shopper (an SCA exemption), so pisgate does not initiate it again (a retry with the same Idempotency-Key answers 409 initiation_not_resumable). The payment stays open until an operator reconciles it with the bank"
    ))
}

/// The merchant's answer for an attempt whose outcome is unknown.
pub fn outcome_unknown() -> ApiError {
    ApiError::InitiationOutcomeUnknown(
        "the bank's answer to this payment was lost or unreadable, so we cannot tell whether it was created; retry with the same Idempotency-Key to resume it (it can never be paid twice)".into(),
    )
}

/// Sends the initiation to `bank`, within `budget`: no time left means not sent (provably
/// not created); no answer within it means the outcome is unknown.
pub async fn call_bank(
    state: &AppState,
    bank: &str,
    initiation: &PaymentInitiation,
    budget: Duration,
) -> Result<Initiated, BankError> {
    if budget.is_zero() {
        return Err(BankError::Unavailable {
            detail: "no time left before the key's in-flight bound; not sent".into(),
            retry_safe: true,
        });
    }
    bounded(budget, state.banks.client(bank).initiate(initiation, None)).await
}

/// Sends the initiation to `bank` with the shopper's own token (a bank whose
/// `shopper_token_required`), within `budget`, with the same rules as [`call_bank`].
pub async fn call_bank_with_token(
    state: &AppState,
    bank: &str,
    initiation: &PaymentInitiation,
    access_token: &SecretString,
    psu: Option<&PsuContext>,
    budget: Duration,
) -> Result<Initiated, BankError> {
    if budget.is_zero() {
        return Err(BankError::Unavailable {
            detail: "no time left before the key's in-flight bound; not sent".into(),
            retry_safe: true,
        });
    }
    bounded(
        budget,
        state
            .banks
            .client(bank)
            .initiate_with_token(initiation, access_token, psu),
    )
    .await
}

async fn bounded(
    budget: Duration,
    call: impl std::future::Future<Output = Result<Initiated, BankError>>,
) -> Result<Initiated, BankError> {
    match tokio::time::timeout(budget, call).await {
        Ok(answer) => answer,
        // The request may have reached the bank: its outcome is unknown.
        Err(_) => Err(BankError::Unexpected {
            status: None,
            detail: format!("no answer within {} ms", budget.as_millis()),
        }),
    }
}

/// Records the bank's answer to an attempt (and, for a merchant's request, what its key
/// answers) in one transaction; retried briefly if the database fails, since the bank may
/// now hold the payment.
pub async fn record_outcome(
    state: &AppState,
    attempt: Attempt<'_>,
    outcome: &Result<Initiated, BankError>,
) -> anyhow::Result<Answer> {
    let mut tries = 0;
    loop {
        tries += 1;
        match try_record_outcome(state, attempt, outcome).await {
            Ok(answer) => {
                if answer.recorded == Recorded::Initiated {
                    follow_a_cancel(state, attempt.payment_id, attempt.bank).await;
                }
                return Ok(answer);
            }
            Err(e) if tries < 3 => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    tries,
                    "recording the initiation failed; retrying"
                );
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A cancel that came while the bank's answer was not in yet, at a bank that may execute a
/// payment without the shopper, was left to the bank (`start_cancel`'s `BankDecides`): now
/// that the answer (and with it the payment's link) is recorded, the bank is asked to delete
/// it, as a cancel a moment later would have done. The bank deletes a payment nobody signed
/// and refuses one it executes (an SCA exemption): its word decides. Failures are logged;
/// the bank's status and the horizon decide then.
pub(crate) async fn follow_a_cancel(state: &AppState, id: Uuid, bank: &str) {
    if !state.banks.client(bank).traits().acts_without_hop {
        return;
    }
    // Only the merchant's (by its ledger; a shopper's cancel leaves the decision to the bank,
    // which may be holding a payment the shopper approved in the app), and only one that came
    // before the answer (one after it asked the bank itself).
    let found = async {
        let mut conn = state.pool.read_conn().await?;
        if !crate::ledger::events::merchant_cancel_before_answer(&mut conn, id).await? {
            return anyhow::Ok(None);
        }
        Ok(payments::get(&mut conn, id).await?)
    }
    .await;
    match found {
        Ok(Some(p)) if p.is_initiated() && !p.status().is_final() => {
            tracing::info!(payment_id = %id, "a merchant's cancel came during the initiation: asking the bank to delete the payment now");
            if let Err(e) =
                crate::api::payments::cancel_at_bank_by(state, &p, payments::CancelBy::Merchant)
                    .await
            {
                tracing::warn!(payment_id = %id, error = ?e, "the cancel after the initiation's answer failed; the bank's status decides");
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(payment_id = %id, error = format!("{e:#}"), "cannot read the payment's cancel after its initiation")
        }
    }
}

/// An error's status and problem body, as the idempotency record keeps them.
fn problem_answer(recorded: Recorded, error: &ApiError) -> anyhow::Result<Answer> {
    Ok(Answer {
        recorded,
        status: error.status(),
        body: serde_json::to_value(error.problem()).context("problem")?,
    })
}

async fn try_record_outcome(
    state: &AppState,
    a: Attempt<'_>,
    outcome: &Result<Initiated, BankError>,
) -> anyhow::Result<Answer> {
    let Attempt {
        payment_id,
        attempt,
        bank,
        key,
    } = a;
    let mut tx = state.pool.begin().await?;
    let answer = match outcome {
        Ok(initiated) => {
            let recorded = payments::record_initiated(
                &mut tx,
                payment_id,
                attempt,
                initiated.bank_payment_id.as_str(),
                initiated.authorization_url(),
                &initiated.links.to_json(),
                Some(initiated.status.bank_status.as_str()),
                initiated.bank_may_act_without_hop(),
            )
            .await?;
            if !recorded {
                // A newer attempt owns the payment (or it ended): this answer is an orphan
                // in the ledger, and the key belongs to that attempt.
                tracing::warn!(
                    attempt,
                    "a newer attempt owns this payment; this answer is kept as an orphan"
                );
                tx.commit().await?;
                return problem_answer(Recorded::Superseded, &outcome_unknown());
            }
            if !initiated.echo_mismatch.is_empty() {
                record_contradiction(state, &mut tx, payment_id, attempt, initiated).await?;
            }
            let record = payments::get(&mut tx, payment_id)
                .await?
                .context("the payment just written is gone")?;
            let body = serde_json::to_value(view(state, &record)).context("view")?;
            if let Some(k) = key {
                idempotency::complete(&mut tx, k.merchant_id, k.key, 201, &body).await?;
            }
            Answer {
                recorded: Recorded::Initiated,
                status: StatusCode::CREATED,
                body,
            }
        }
        Err(error) if !payments::is_current_attempt(&mut tx, payment_id, attempt).await? => {
            tracing::warn!(error = %error, attempt, "a newer attempt owns this payment; this attempt's answer is only noted");
            payments::note(
                &mut tx,
                payment_id,
                "initiation_superseded",
                json!({ "attempt": attempt, "error": error.kind(), "detail": error.to_string() }),
            )
            .await?;
            tx.commit().await?;
            return problem_answer(Recorded::Superseded, &outcome_unknown());
        }
        Err(error) if ends_failed(error) => {
            let ended = initiation_ended(error);
            if matches!(error, BankError::NotSent { .. }) {
                tracing::error!(error = %error, kind = error.kind(), "the initiation could not be sent to the bank (nothing was sent); the payment is failed; an operator must fix the cause");
            } else {
                tracing::warn!(error = %error, kind = error.kind(), "the bank refused the initiation");
            }
            payments::mark_refused(&mut tx, payment_id).await?;
            payments::transition(
                &mut tx,
                payment_id,
                Change {
                    evidence: ended.evidence,
                    bank_status: None,
                    kind: ended.kind,
                    detail: json!({ "attempt": attempt, "error": error.kind(), "detail": error.to_string() }),
                    failure: Some((ended.code, &error.to_string())),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
            let answer = problem_answer(Recorded::Refused, &ended.api_error)?;
            if let Some(k) = key {
                idempotency::complete(
                    &mut tx,
                    k.merchant_id,
                    k.key,
                    answer.status.as_u16(),
                    &answer.body,
                )
                .await?;
            }
            answer
        }
        Err(error) => {
            let not_created = error.provably_not_processed();
            tracing::warn!(error = %error, kind = error.kind(), not_created, "no usable answer from the bank to the initiation");
            payments::record_attempt_unanswered(
                &mut tx,
                payment_id,
                attempt,
                if not_created {
                    "not_created"
                } else {
                    "outcome_unknown"
                },
                json!({ "error": error.kind(), "detail": error.to_string() }),
            )
            .await?;
            // No answer to replay: a retry with the same key resumes the payment at once.
            if let Some(k) = key {
                idempotency::release(&mut tx, k.merchant_id, k.key).await?;
            }
            let api_error = if not_created {
                ApiError::BankUnavailable(
                    "the bank is not answering and did not create the payment; retry with the same Idempotency-Key".into(),
                )
            } else if state.banks.client(bank).traits().acts_without_hop {
                outcome_unknown_at(bank)
            } else {
                outcome_unknown()
            };
            problem_answer(Recorded::Unanswered { not_created }, &api_error)?
        }
    };
    tx.commit().await?;
    Ok(answer)
}

/// The bank made the payment, but its answer echoed other terms than pisgate sent
/// ([`Initiated::echo_mismatch`]): the payment exists at the bank with another amount,
/// currency or creditor account than the merchant asked for. Recorded with the answer, in
/// its transaction, as the `bank_terms_mismatch` event (the terms' names only), so pisgate
/// never has it signed or submitted:
/// - at a bank that executes a signed payment only on pisgate's submission (OP) the
///   submission is withheld at once and the payment ends `cancelled` with the failure
///   `bank_terms_mismatch` ([`submissions::withhold_contradicted`]): no money can move;
/// - at any other bank it is followed as usual (only the bank's word ends it), but pisgate
///   starts no signing for it: SEB's BankID page refuses to start the signing order, shows
///   the shopper why, and asks SEB to delete the payment ([`crate::api::bankid`]).
async fn record_contradiction(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    payment_id: Uuid,
    attempt: i32,
    initiated: &Initiated,
) -> anyhow::Result<()> {
    tracing::error!(
        fields = ?initiated.echo_mismatch,
        "the bank made the payment with other terms than pisgate sent: it is never signed or submitted through pisgate"
    );
    payments::record_terms_mismatch(
        tx,
        payment_id,
        attempt,
        initiated.bank_payment_id.as_str(),
        &initiated.echo_mismatch,
    )
    .await?;
    let bank = payments::get(tx, payment_id)
        .await?
        .context("the payment just written is gone")?
        .bank;
    if state
        .banks
        .client(&bank)
        .traits()
        .submit_after_authorization
    {
        submissions::withhold_contradicted(tx, payment_id, &initiated.echo_mismatch)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(())
}

/// An answer that ends the payment `failed`: nothing exists at the bank, and the same
/// request would end the same way. An explicit refusal (the bank looked at the request and
/// said no), or a request pisgate could not send at all ([`BankError::NotSent`]: nothing
/// left pisgate, e.g. no `PSU-IP-Address` to send; answering "outcome unknown, retry" would
/// send the merchant into retries that fail the same way, and leave the payment open until
/// its horizon).
fn ends_failed(error: &BankError) -> bool {
    matches!(
        error,
        BankError::Validation { .. }
            | BankError::BadCredentials { .. }
            | BankError::BadSignature { .. }
            | BankError::ClockRejected { .. }
            | BankError::NotSent { .. }
    )
}

/// How an initiation that [`ends_failed`] is recorded and answered.
struct Ended {
    evidence: Evidence,
    /// The ledger event's kind.
    kind: &'static str,
    /// The failure code kept on the payment.
    code: &'static str,
    /// What the merchant is told.
    api_error: ApiError,
}

fn initiation_ended(error: &BankError) -> Ended {
    match error {
        BankError::Validation { failures } => Ended {
            evidence: Evidence::InitiationRefused,
            kind: "initiation_refused",
            code: "bank_rejected",
            api_error: ApiError::BankRejected(bank_failures(failures)),
        },
        BankError::NotSent { .. } => Ended {
            evidence: Evidence::InitiationNotSent,
            kind: "initiation_not_sent",
            code: "bank_configuration_error",
            api_error: ApiError::BankUnavailable(
                "the payment could not be sent to the bank because of our setup for this bank; this is on our side and has been logged; nothing reached the bank and the payment was not created".into(),
            ),
        },
        _ => Ended {
            evidence: Evidence::InitiationRefused,
            kind: "initiation_refused",
            code: "bank_configuration_error",
            api_error: ApiError::BankUnavailable(
                "the bank refused our credentials; this is on our side and has been logged; the payment was not created".into(),
            ),
        },
    }
}

/// The bank's reasons for refusing, as field errors for the merchant.
pub fn bank_failures(failures: &[crate::bank::BankFailure]) -> Vec<FieldError> {
    failures
        .iter()
        .map(|f| {
            FieldError::new(
                f.path.clone().unwrap_or_else(|| "payment".into()),
                f.code.clone(),
                f.description.clone().unwrap_or_else(|| f.code.clone()),
            )
        })
        .collect()
}

/// The stored request without its null members (the canonical form leaves options out;
/// this keeps an older row's explicit nulls from reading as "given").
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The bank-neutral initiation of a stored payment (deferred initiation): its stored
/// request, read with the rules of the day it was created, and the debtor IBAN the shopper
/// gave, if any.
pub fn stored_initiation(
    state: &AppState,
    p: &PaymentRecord,
    merchant_name: &str,
    oauth_state: String,
) -> anyhow::Result<PaymentInitiation> {
    let input: PaymentRequestInput = serde_json::from_value(without_nulls(&p.request))
        .context("the stored request does not read as a request")?;
    let request = PaymentRequest::parse(
        &input,
        p.created_at.date_naive(),
        state.settings.payment_rules_environment(),
    )
    .map_err(|e| anyhow::anyhow!("the stored request no longer passes validation: {e}"))?;
    let validated = Validated {
        request,
        canonical: p.request.clone(),
        fingerprint: [0; 32],
    };
    let mut initiation = validated.initiation(
        p.id,
        merchant_name,
        oauth_state,
        redirect_uri_for(state, &p.bank),
    );
    if let Some(iban) = &p.shopper_debtor_account {
        let message = initiation.debtor.as_ref().and_then(|d| d.message.clone());
        initiation.debtor = Some(crate::bank::Debtor {
            account: Some(crate::bank::Account {
                kind: crate::domain::AccountType::Iban,
                value: iban.clone(),
            }),
            message,
        });
    }
    Ok(initiation)
}

/// What the shopper's submit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShopperInitiation {
    /// No attempt may start now: another submit's attempt is running, the payment is
    /// closed, or its bank is already answered. The caller shows the payment as it is.
    NotStarted,
    /// An attempt ran; its outcome is recorded.
    Ran(Recorded),
}

/// Deferred initiation on the shopper's submit: starts an attempt (guarded, under a lease
/// so a second submit does not start another while it runs), calls the payment's bank within
/// the initiation budget, and records the outcome as a merchant's attempt would be.
pub async fn initiate_for_shopper(
    state: &AppState,
    p: &PaymentRecord,
) -> anyhow::Result<ShopperInitiation> {
    // To its end as a task of its own: a shopper who closes the tab (or loses signal) while
    // the bank call runs never leaves an answer the bank gave unrecorded.
    let (st, rec) = (state.clone(), p.clone());
    let work = async move { initiate_for_shopper_with(&st, &rec, None).await };
    Ok(state
        .finishing
        .run(crate::api::error::carried(work))
        .await??
        .0)
}

/// The shopper's own token (and connection) for a bank whose every call needs it.
#[derive(Clone, Copy)]
pub struct ShopperToken<'a> {
    pub access_token: &'a SecretString,
    pub psu: Option<&'a PsuContext>,
}

/// Deferred initiation with the shopper's token, at a bank whose
/// `shopper_token_required` (SEB, after the shopper identified on the BankID page): the
/// same attempt, lease and truth rules as [`initiate_for_shopper`], the bank call made with
/// [`crate::bank::Bank::initiate_with_token`].
pub async fn initiate_for_shopper_with_token(
    state: &AppState,
    p: &PaymentRecord,
    token: ShopperToken<'_>,
) -> anyhow::Result<TokenInitiation> {
    let (initiation, token_rejected) = initiate_for_shopper_with(state, p, Some(token)).await?;
    Ok(TokenInitiation {
        initiation,
        token_rejected,
    })
}

/// What an initiation with the shopper's token came to, and whether the bank refused the
/// token (the caller marks it dead: the shopper identifies again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInitiation {
    pub initiation: ShopperInitiation,
    pub token_rejected: bool,
}

async fn initiate_for_shopper_with(
    state: &AppState,
    p: &PaymentRecord,
    token: Option<ShopperToken<'_>>,
) -> anyhow::Result<(ShopperInitiation, bool)> {
    let settings = &state.settings.payments;
    let budget = settings.initiation_budget();
    let started = tokio::time::Instant::now();
    let (oauth_state, oauth_state_hash) = crate::api::payments::new_state();
    // The lease outlives the bank call and its recording.
    let lease = chrono::Duration::from_std(budget + Duration::from_secs(10)).context("lease")?;
    let mut tx = state.pool.begin().await?;
    // The bank call is built from the stored row: only from one its ledger vouches for (an
    // insider could have rewritten the creditor).
    if !crate::ledger::events::facts_match_ledger(&mut tx, p, &p.request).await? {
        metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
        anyhow::bail!(
            "the payment row's facts are not the ones its ledger recorded: nothing is sent to the bank (run `pisgate ledger verify`)"
        );
    }
    let attempt = payments::begin_shopper_attempt(
        &mut tx,
        p.id,
        &oauth_state_hash,
        chrono::Utc::now() + lease,
        state.banks.client(&p.bank).traits().acts_without_hop,
    )
    .await?;
    tx.commit().await?;
    let Some(attempt) = attempt else {
        return Ok((ShopperInitiation::NotStarted, false));
    };
    tracing::info!(bank = %p.bank, attempt, "initiating at the shopper's bank");
    let merchant = crate::ledger::merchants::get(&state.pool, p.merchant_id)
        .await?
        .map(|m| m.name)
        .unwrap_or_default();
    let outcome = match stored_initiation(state, p, &merchant, oauth_state) {
        Ok(initiation) => {
            let left = budget.saturating_sub(started.elapsed());
            match token {
                None => call_bank(state, &p.bank, &initiation, left).await,
                Some(t) => {
                    call_bank_with_token(state, &p.bank, &initiation, t.access_token, t.psu, left)
                        .await
                }
            }
        }
        Err(e) => {
            // Nothing was sent: the attempt provably created nothing at the bank.
            tracing::error!(error = format!("{e:#}"), "cannot build the initiation");
            Err(BankError::Unavailable {
                detail: "the stored request could not be read; not sent".into(),
                retry_safe: true,
            })
        }
    };
    let answer = record_outcome(
        state,
        Attempt {
            payment_id: p.id,
            attempt,
            bank: &p.bank,
            key: None,
        },
        &outcome,
    )
    .await?;
    metrics::counter!(
        "pisgate_deferred_initiations_total",
        "bank" => p.bank.clone(),
        "outcome" => match answer.recorded {
            Recorded::Initiated => "initiated",
            Recorded::Superseded => "superseded",
            Recorded::Refused => "refused",
            Recorded::Unanswered { not_created: true } => "not_created",
            Recorded::Unanswered { not_created: false } => "outcome_unknown",
        }
    )
    .increment(1);
    let token_rejected = matches!(outcome, Err(BankError::TokenRejected));
    Ok((ShopperInitiation::Ran(answer.recorded), token_rejected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PaymentStatus;

    /// A request pisgate could not send ends the payment `failed` with a configuration error
    /// the merchant is told about, never "outcome unknown, retry": nothing reached the bank,
    /// and a retry would fail the same way.
    #[test]
    fn an_initiation_that_was_never_sent_ends_failed_as_a_configuration_error() {
        let error = BankError::NotSent {
            detail: "no PSU-IP-Address".into(),
        };
        assert!(ends_failed(&error));
        let ended = initiation_ended(&error);
        assert_eq!(ended.evidence, Evidence::InitiationNotSent);
        assert_eq!(ended.evidence.status(), PaymentStatus::Failed);
        assert_eq!(ended.kind, "initiation_not_sent");
        assert_eq!(ended.code, "bank_configuration_error");
        assert_eq!(ended.api_error.code(), "bank_unavailable");
        assert_ne!(
            ended.api_error.code(),
            outcome_unknown().code(),
            "never answered as an unknown outcome"
        );
        // What may have reached the bank never ends it.
        for unknown in [
            BankError::Unexpected {
                status: None,
                detail: "timeout".into(),
            },
            BankError::Unavailable {
                detail: "dropped".into(),
                retry_safe: false,
            },
        ] {
            assert!(!ends_failed(&unknown), "{unknown:?}");
        }
    }
}
