//! The submit step: a bank whose [`BankTraits::submit_after_authorization`] (OP) executes a
//! signed payment only when pisgate submits it, with the token of that payment's code
//! exchange. It gets the care of an initiation:
//!
//! - **One in flight.** Every run takes the payment's submission claim under its row lock
//!   ([`submissions::claim`], a lease: a crashed holder's claim runs out).
//! - **The bank's status first.** Under the claim the bank's status is read and applied
//!   through the one truth path ([`payments::apply_bank_report`]); a submission is sent only
//!   while the bank still asks for one ([`Bank::needs_submission`]), and never again once an
//!   answer on record said anything else (accepted, executed, rejected, cancelled).
//! - **Persist, then call.** The attempt and its idempotency key are committed with the
//!   ledger event `submission_started` before the call. The answer is recorded with
//!   `submission_answered` and its status applied in the same transaction; a refusal with
//!   `submission_refused`; a timeout, drop or unreadable answer with
//!   `submission_outcome_unknown`.
//! - **Keys.** An attempt whose outcome is unknown (or was refused) is retried with the
//!   **same** key, so the bank performs at most one submission for it (a replay answers the
//!   recorded result). Only an answer that still asks for a submission (OP's
//!   `SubmissionPending`) makes the next attempt take a new key, after a backoff.
//! - **The merchant's cancel** recorded before any attempt withholds the submission
//!   (`submission_withheld`): nothing is sent, the payment's refresh token is revoked at the
//!   bank where the bank offers that ([`Bank::revoke`]; the event's `refresh_token_revocation`
//!   says what happened: `revoked`, `not_offered`, `failed`, `no_refresh_token` or
//!   `no_token`, and `refresh_token_revoked` is true only for `revoked`) and marked dead
//!   here, and the payment ends `cancelled` ([`crate::domain::Evidence::SubmissionWithheld`]).
//! - **A bank that made the payment with other terms** than pisgate sent (its answer to the
//!   creation echoed another amount, currency or creditor account,
//!   [`crate::bank::Initiated::echo_mismatch`]) never gets a submission either: the
//!   initiation withholds it at once ([`submissions::withhold_contradicted`]).
//! - **The truth rule** of such a bank ([`truth`]): its `rejected` with no submission attempt
//!   on record is the shopper's refusal at the bank: `authorization_failed`.
//!
//! Run from the callback once the exchanged token is stored, and from the poller when the
//! bank's status asks for a submission; both are safe at once (the claim), and a crash at
//! any point leaves either no attempt (the poller submits) or an attempt on record (the
//! poller reads the status and replays the same key only while the bank still asks).
//!
//! Counted in `pisgate_bank_submissions_total{bank,outcome}` (`answered`, `pending`,
//! `refused`, `outcome_unknown`, `withheld`). Never logged: tokens.

use crate::bank::{Bank, BankError, BankTraits, Banks, PsuContext, StatusReport};
use crate::config::Settings;
use crate::domain::PaymentStatus;
use crate::ledger::Db;
use crate::ledger::crypto::TokenCipher;
use crate::ledger::payments;
use crate::ledger::submissions::{self, Claim, Finished, Started};
use crate::ledger::tokens;
use chrono::Utc;
use secrecy::SecretString;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// What the submit step needs (the API's state and the workers' context both have it).
#[derive(Clone, Copy)]
pub struct Deps<'a> {
    pub pool: &'a Db,
    pub cipher: &'a TokenCipher,
    pub banks: &'a Banks,
    pub settings: &'a Settings,
    /// A token refresh runs to its end through it (a refresh token is single use).
    pub finishing: &'a crate::finishing::Finishing,
}

/// What one run of the submit step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// `submitted`, `pending`, `refused`, `outcome_unknown`, `withheld`, `not_needed`,
    /// `busy`, `not_due`, `final`, `no_token`, `read_failed`, `not_offered`, `claim_lost`.
    pub outcome: &'static str,
    /// The bank's latest word (truth-mapped), when one was read or answered.
    pub report: Option<StatusReport>,
    /// When it is worth trying again, if it is.
    pub retry_in: Option<Duration>,
}

impl Submission {
    fn just(outcome: &'static str) -> Submission {
        Submission {
            outcome,
            report: None,
            retry_in: None,
        }
    }
}

/// The wait before the attempt after `attempt` answered with a status that still asks for a
/// submission: the poller's signing interval, doubled per attempt, up to its backoff cap.
fn backoff(settings: &Settings, attempt: i32) -> Duration {
    let base = settings.poller.signing_interval;
    let factor = 2u32.saturating_pow(u32::try_from(attempt.clamp(1, 16) - 1).unwrap_or(0));
    base.saturating_mul(factor).min(settings.poller.max_backoff)
}

/// The claim's lease: longer than a status read, a token refresh and the submission.
fn lease(settings: &Settings) -> Duration {
    settings.poller.lease
}

/// A bank status as pisgate takes it from a bank that submits after authorization: its
/// `rejected` before any submission attempt is on record is the shopper's refusal
/// (`authorization_failed`). Any other bank's report is returned as it is.
pub async fn truth(
    pool: &Db,
    traits: &BankTraits,
    id: Uuid,
    mut report: StatusReport,
) -> Result<StatusReport, sqlx::Error> {
    if traits.submit_after_authorization
        && report.status == Some(PaymentStatus::Rejected)
        && !submissions::any_attempt(&mut *pool.read_conn().await?, id).await?
    {
        report.status = Some(PaymentStatus::AuthorizationFailed);
    }
    Ok(report)
}

async fn apply(d: Deps<'_>, id: Uuid, report: &StatusReport, source: &str) -> anyhow::Result<()> {
    let mut tx = d.pool.begin().await?;
    payments::apply_bank_report(
        &mut tx,
        id,
        &report.bank_status,
        report.status,
        json!({ "source": source }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn count(bank: &str, outcome: &'static str) {
    metrics::counter!("pisgate_bank_submissions_total", "bank" => bank.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Runs the submit step for a payment once (see the module docs). `trigger` names the
/// caller in the ledger (`callback`, `poller`, `cancel`).
#[tracing::instrument(skip_all, fields(payment_id = %id, trigger))]
pub async fn submit(
    d: Deps<'_>,
    id: Uuid,
    trigger: &str,
    psu: Option<&PsuContext>,
) -> anyhow::Result<Submission> {
    let Some(p) = payments::get(&mut *d.pool.read_conn().await?, id).await? else {
        return Ok(Submission::just("final"));
    };
    let client = d.banks.client(&p.bank);
    let traits = client.traits();
    if !traits.submit_after_authorization {
        return Ok(Submission::just("not_offered"));
    }
    let Some(bank_ref) = p.bank_ref() else {
        return Ok(Submission::just("not_offered"));
    };
    let claim =
        submissions::claim(d.pool, id, lease(d.settings), |n| backoff(d.settings, n)).await?;
    let (token, last, withhold, psu_key) = match claim {
        Claim::Final => return Ok(Submission::just("final")),
        Claim::Busy => return Ok(Submission::just("busy")),
        Claim::Contradicted => return Ok(Submission::just("contradicted")),
        Claim::NotDue(at) => {
            return Ok(Submission {
                retry_in: Some((at - Utc::now()).to_std().unwrap_or_default()),
                ..Submission::just("not_due")
            });
        }
        Claim::Claimed {
            token,
            last,
            withhold,
            psu_key,
        } => (token, last, withhold, psu_key),
    };
    if withhold {
        return withhold_submission(d, &*client, &p.bank, id, token, psu_key.as_deref()).await;
    }
    let result = submit_claimed(
        d,
        &*client,
        &p.bank,
        &bank_ref,
        id,
        token,
        last,
        psu_key.as_deref(),
        trigger,
        psu,
    )
    .await;
    // Whatever happened, the claim is not kept past this run (a recorded attempt's claim
    // was already ended with its outcome: this is a no-op then).
    if let Err(e) = submissions::release(d.pool, id, token).await {
        tracing::warn!(error = %e, "cannot give the submission claim back; it runs out by itself");
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn submit_claimed(
    d: Deps<'_>,
    client: &dyn Bank,
    bank: &str,
    bank_ref: &crate::bank::BankRef,
    id: Uuid,
    token: Uuid,
    last: Option<submissions::Attempt>,
    psu_key: Option<&str>,
    trigger: &str,
    psu: Option<&PsuContext>,
) -> anyhow::Result<Submission> {
    let traits = client.traits();
    // The bank's word first: it decides whether anything may be sent.
    let read = match client.status(bank_ref, psu).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, kind = e.kind(), "cannot read the bank's status before submitting; retried later");
            return Ok(Submission {
                retry_in: Some(backoff(d.settings, 1)),
                ..Submission::just("read_failed")
            });
        }
    };
    let needs = client.needs_submission(&read);
    let read = truth(d.pool, &traits, id, read).await?;
    apply(d, id, &read, "submission").await?;
    let answered_final = last
        .as_ref()
        .is_some_and(|a| a.outcome == "answered" && !a.needs_resubmit);
    if !needs || answered_final {
        if needs {
            tracing::warn!(
                bank_status = read.bank_status,
                "the bank asks for a submission after it answered one; never submitted twice"
            );
        }
        return Ok(Submission {
            report: Some(read),
            ..Submission::just("not_needed")
        });
    }
    // Only an answer that still asked for a submission takes a new key; any other attempt
    // on record (outcome unknown, refused) is retried with its own key.
    let (attempt, key, reuses_key) = match &last {
        None => (1, new_key(), false),
        Some(a) if a.outcome == "answered" => (a.attempt + 1, new_key(), false),
        Some(a) => (a.attempt + 1, a.idempotency_key.clone(), true),
    };
    let Some(psu_key) = psu_key else {
        tracing::info!("the bank asks for a submission but no token of this payment is stored yet");
        return Ok(Submission {
            report: Some(read),
            ..Submission::just("no_token")
        });
    };
    let Some((access_seq, access)) = live_token(d, bank, psu_key).await? else {
        return Ok(Submission {
            report: Some(read),
            ..Submission::just("no_token")
        });
    };
    match submissions::start_attempt(d.pool, id, token, attempt, &key, reuses_key, trigger).await? {
        Started::Started => {}
        Started::ClaimLost => return Ok(Submission::just("claim_lost")),
        Started::Withhold => {
            return withhold_submission(d, client, bank, id, token, Some(psu_key)).await;
        }
    }
    tracing::info!(attempt, reuses_key, "submitting the signed payment");
    let bound = lease(d.settings)
        .saturating_sub(Duration::from_secs(5))
        .max(Duration::from_secs(1));
    let answer = tokio::time::timeout(bound, client.submit(bank_ref, &access, &key, psu))
        .await
        .unwrap_or_else(|_| {
            Err(BankError::Unexpected {
                status: None,
                detail: "no answer to the submission in time".into(),
            })
        });
    let (finished, report) = match answer {
        Ok(report) => {
            let needs_resubmit = client.needs_submission(&report);
            (
                Finished::Answered {
                    bank_status: report.bank_status.clone(),
                    needs_resubmit,
                },
                Some(report),
            )
        }
        Err(e) => {
            if e == BankError::TokenRejected {
                let _ = tokens::mark_dead(
                    d.pool,
                    bank,
                    psu_key,
                    access_seq,
                    "rejected on a submission",
                )
                .await;
            }
            let unknown = !e.provably_not_processed()
                && matches!(
                    e,
                    BankError::Unavailable { .. } | BankError::Unexpected { .. }
                );
            tracing::warn!(error = %e, kind = e.kind(), unknown, "the submission did not come back answered");
            let (error, detail) = (e.kind().to_owned(), e.to_string());
            (
                if unknown {
                    Finished::OutcomeUnknown { error, detail }
                } else {
                    Finished::Refused { error, detail }
                },
                None,
            )
        }
    };
    let outcome = finished.outcome();
    let mut tx = d.pool.begin().await?;
    submissions::finish_attempt(&mut tx, id, token, attempt, &finished).await?;
    let report = match report {
        Some(r) => {
            // The attempt is on record now: a `rejected` answer is the bank's, not the
            // shopper's refusal.
            payments::apply_bank_report(
                &mut tx,
                id,
                &r.bank_status,
                r.status,
                json!({ "source": "submission", "attempt": attempt }),
            )
            .await?;
            Some(r)
        }
        None => Some(read),
    };
    tx.commit().await?;
    count(bank, outcome);
    Ok(Submission {
        outcome: match outcome {
            "answered" => "submitted",
            o => o,
        },
        retry_in: match outcome {
            "answered" => None,
            "pending" => Some(backoff(d.settings, attempt)),
            _ => Some(backoff(d.settings, 1)),
        },
        report,
    })
}

fn new_key() -> String {
    Uuid::new_v4().to_string()
}

/// The payment's live access token, refreshed through the shopper lease (as the
/// refresher does) when it has expired. `None` when there is none to use.
async fn live_token(
    d: Deps<'_>,
    bank: &str,
    psu_key: &str,
) -> anyhow::Result<Option<(i64, SecretString)>> {
    let soon = Utc::now() + chrono::Duration::seconds(5);
    match tokens::load(d.pool, d.cipher, bank, psu_key).await? {
        Some(t) if t.access_expires_at > soon => return Ok(Some((t.issue_seq, t.access_token))),
        Some(_) => {}
        None => return Ok(None),
    }
    let lease_len = d.settings.longest_bank_call() + Duration::from_secs(10);
    // The lease, the read under it, the refresh, its store and the lease's release run to
    // their end as one task (as the refresher's do): once the bank is asked, the refresh
    // token is used up, and only the stored answer keeps the payment's token; a lease freed
    // before that would let another replica refresh with the used-up token.
    let (pool, cipher, client) = (d.pool.clone(), d.cipher.clone(), d.banks.client(bank));
    let (bank, psu_key) = (bank.to_owned(), psu_key.to_owned());
    let work = async move {
        let Some(lock) =
            tokens::lease_psu(&pool, &bank, &psu_key, lease_len, Duration::from_secs(5)).await?
        else {
            return Ok(None);
        };
        // Read again under the lease: the refresher may have done it meanwhile.
        let outcome: anyhow::Result<Option<(i64, SecretString)>> = async {
            let Some(current) = tokens::load(&pool, &cipher, &bank, &psu_key).await? else {
                return Ok(None);
            };
            if current.access_expires_at > soon {
                return Ok(Some((current.issue_seq, current.access_token)));
            }
            let Some(refresh) = current.refresh_token.as_ref() else {
                return Ok(None);
            };
            let seq = tokens::next_issue_seq(&mut *pool.read_conn().await?).await?;
            match client.refresh(refresh).await {
                Ok(set) => {
                    let mut tx = pool.begin().await?;
                    tokens::store(
                        &mut tx,
                        &cipher,
                        &bank,
                        &psu_key,
                        seq,
                        set.issued_at,
                        &set.access_token,
                        set.refresh_token.as_ref(),
                        tokens::expires_at(set.expires_in),
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(Some((seq, set.access_token)))
                }
                Err(BankError::TokenRejected) => {
                    tokens::mark_dead(&pool, &bank, &psu_key, current.issue_seq, "refresh refused")
                        .await?;
                    Ok(None)
                }
                Err(e) => {
                    tracing::warn!(error = %e, kind = e.kind(), "cannot refresh the payment's token for its submission");
                    Ok(None)
                }
            }
        }
        .await;
        lock.release().await;
        outcome
    };
    d.finishing
        .run(crate::api::error::carried(work))
        .await
        .and_then(|done| done)
}

/// The merchant's cancel of a signed payment at such a bank (the cancel is recorded
/// already): withholds the submission if none was ever sent. Returns `withheld`, `busy`
/// (a submit step holds the claim: it sees the cancel before it sends anything, under the
/// row lock), `attempted` (an attempt is on record: the bank's word decides), or `final`.
pub async fn withhold(d: Deps<'_>, id: Uuid) -> anyhow::Result<&'static str> {
    let Some(p) = payments::get(&mut *d.pool.read_conn().await?, id).await? else {
        return Ok("final");
    };
    let client = d.banks.client(&p.bank);
    match submissions::claim(d.pool, id, lease(d.settings), |n| backoff(d.settings, n)).await? {
        Claim::Final => Ok("final"),
        Claim::Busy => Ok("busy"),
        Claim::Contradicted => Ok("contradicted"),
        Claim::NotDue(_) => Ok("attempted"),
        Claim::Claimed {
            token,
            withhold,
            psu_key,
            ..
        } => {
            let outcome = if withhold {
                withhold_submission(d, &*client, &p.bank, id, token, psu_key.as_deref())
                    .await?
                    .outcome
            } else {
                "attempted"
            };
            submissions::release(d.pool, id, token).await?;
            Ok(outcome)
        }
    }
}

/// The merchant cancelled before any submission: never submit, revoke the payment's
/// refresh token at the bank where it offers that (so nobody can get a token that
/// submits), mark it dead here, and end the payment `cancelled`. The ledger says what
/// became of the refresh token at the bank, never more than happened.
async fn withhold_submission(
    d: Deps<'_>,
    client: &dyn Bank,
    bank: &str,
    id: Uuid,
    token: Uuid,
    psu_key: Option<&str>,
) -> anyhow::Result<Submission> {
    let mut revocation = "no_token";
    if let Some(psu_key) = psu_key
        && let Some(t) = tokens::load(d.pool, d.cipher, bank, psu_key).await?
    {
        revocation = match &t.refresh_token {
            None => "no_refresh_token",
            Some(refresh) => match client.revoke(refresh).await {
                Ok(done) => done.as_str(),
                Err(e) => {
                    tracing::warn!(error = %e, kind = e.kind(), "revoking the withheld payment's token failed; it is never used again");
                    "failed"
                }
            },
        };
        tokens::mark_dead(d.pool, bank, psu_key, t.issue_seq, "submission withheld").await?;
    }
    let done = submissions::withhold(d.pool, id, token, revocation)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    if !done {
        return Ok(Submission::just("claim_lost"));
    }
    tracing::info!("the merchant cancelled before the submission: withheld, payment cancelled");
    count(bank, "withheld");
    Ok(Submission::just("withheld"))
}
