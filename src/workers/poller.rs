//! The status poller: follows every payment to a final state without anyone asking.
//!
//! The SQL lives in [`crate::ledger::polls`]. Loop: claim due payments (`FOR UPDATE SKIP LOCKED`; the claim moves `next_poll_at` to the
//! end of the lease and writes our name in `poll_owner`) and commit; poll each outside any
//! transaction, paced by a per-replica rate limit; then, in one short transaction that still
//! owns the row, apply the bank's answer through the domain status machine
//! ([`payments::transition`], one ledger event and one webhook per change) and set the next
//! due time. A replica that dies leaves rows whose lease simply comes due again.
//!
//! Schedule: every `signing_interval` within pisgate's signing window; past it every
//! `late_signing_interval`, because a shopper who reached the bank in time may still sign
//! (the truth rule: the window only closes the authorization hop). Every
//! `authorized_interval` once authorized, or `scheduled_interval` while a future execution
//! date is still ahead (but never later than that date). A 404 before the shopper opened the
//! signing link is "not yet". A 429 waits at least its `Retry-After` (and holds back every
//! poll of this replica that long); 5xx and timeouts back off exponentially with jitter.
//!
//! # The late-signing horizon
//! pisgate never finalizes a payment on its own inference. An unsigned payment expires on
//! the bank's UserApprovalTimeout, or at the horizon on proof that nobody can sign it
//! ([`Unsignable`]):
//! - nobody was ever given the bank's link (the authorization hop was never opened, or the
//!   bank's answer to the initiation was never recorded): `expired` at the horizon;
//! - otherwise, when the bank still shows nothing signed (404 or PendingUserApproval, which a
//!   bank that confirms slowly also shows for a payment signed a moment ago), the poller asks
//!   the bank to delete the payment (Nordea's bulk DELETE, only with that shopper's own
//!   token: a returning shopper, known by the merchant's `psu_id`; never another
//!   shopper's). The DELETE is noted (`horizon_delete_requested`) with the claim's renewal
//!   before it goes out, so a deletion whose answer was lost (a stopped replica, a dropped
//!   connection) still reads as that deletion when a later poll finds the bank's status of
//!   a deleted payment, with no answer noted since (refused, needs authorisation, provably
//!   not taken: `horizon_delete_not_taken`) and no shopper back. Deleted: `expired` (or
//!   `cancelled` when the merchant had asked). Refused
//!   (signed, being executed, not ours to delete) or not askable (no token of this shopper,
//!   the bank unavailable): noted and followed on, every `late_signing_interval` or with
//!   backoff, until the bank's own final word: its UserApprovalTimeout;
//! - a link handed out that nobody opened at the bank is never reported timed out (the bank
//!   answers 404 for it before and after its approval timeout): with no token to ask, once
//!   the bank's time to sign (`nordea.approval_timeout_secs`, from its answer to the
//!   initiation) has run out with the bank still answering 404, the link no longer opens
//!   and the payment is `expired` ([`Unsignable::BankTimeRanOutUnopened`]).
//!   A shopper who came back (a code exchanged) is never deleted at the horizon.
//! - a bank read only with the shopper's own token (SEB) whose token is gone past the
//!   horizon: expired only when no signing order succeeded (none started, or the last one
//!   failed at the bank) and the bank's time to sign ran out
//!   ([`Unsignable::NoSigningOrderSucceeded`], checked again under the row lock); else it
//!   waits, on the console's attention list.
//! - a Berlin Group bank (no shopper token, a return without a code) may keep a signed
//!   payment `RCVD` and take a DELETE of it as enough to cancel it, so before asking, the
//!   poller reads the payment's SCA status (its `scaStatus` link): `finalised`/`exempted`
//!   means signed, and the payment is never deleted but followed to the bank's own word
//!   (it stays `awaiting_authorization`, as its transaction status says); an open or failed
//!   SCA is the bank's word that nothing is signed, and the DELETE is asked. Without an
//!   SCA status (no link, or the read fails, as it does at some banks once the SCA is over)
//!   a shopper who came back to pisgate's return URL (the bank's "ok" redirect; its "nok"
//!   one carries `error` and uses no state) counts as signed, and nothing is deleted.
//!
//! # After a final status
//! A payment that ends `expired` or `cancelled` while someone may hold its bank link keeps
//! [`payments::AFTER_FINAL_READS`] more bank reads, `after_final_interval` apart. A bank that
//! then contradicts the final status is recorded as a disagreement
//! ([`crate::ledger::disagreements`]), never applied; every other final payment leaves the
//! schedule.
//!
//! A bank whose every call needs the shopper's own token (SEB) is read with the token of the
//! shopper bound to the payment ([`read_status`]); without a live one the poll waits. At the
//! horizon such a payment is deleted with that token (the bank refuses a signed one).
//!
//! A bank that executes a signed payment only on pisgate's submission (OP,
//! `submit_after_authorization`): when its status asks for one ([`crate::bank::Bank::needs_submission`])
//! the poll runs the submit step ([`submission::submit`]: its own claim and status read,
//! persisted before the call, the same key after an unknown outcome); its `rejected` with no
//! submission attempt on record is the shopper's refusal ([`submission::truth`]). Past the
//! horizon, such a payment that pisgate can never submit (no token of it stored, no attempt,
//! no exchange under way, the state spent or expired) ends `authorization_failed`
//! ([`submissions::end_never_submittable`]): only pisgate's submission could debit it.
//!
//! Never done here: a status change outside the status machine, a bank call inside a
//! transaction, a log line with a token or an account number.

use super::{Pacer, Pacers, WorkerContext, backoff, stopped, stretch};
use crate::api::submission;
use crate::bank::{BankError, BankRef, ScaState, StatusReport};
use crate::domain::{Evidence, PaymentStatus, Unsignable};
use crate::ledger::Db;
use crate::ledger::payments::{self, Change, POLL_CHANNEL};
pub use crate::ledger::polls::Claimed;
use crate::ledger::{polls, submissions, tokens, webhooks};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;

/// How long the loop waits for more free slots before claiming for the few it has.
const CLAIM_GATHER: Duration = Duration::from_millis(20);

/// The longest `Retry-After` we wait for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `now + wait`, saturating instead of overflowing.
fn after(wait: Duration) -> DateTime<Utc> {
    let now = Utc::now();
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub async fn run(ctx: WorkerContext, mut stop: watch::Receiver<bool>) {
    let cfg = ctx.settings.poller.clone();
    let wake = ctx.listener.wake(POLL_CHANNEL);
    // Per bank: one bank's Retry-After never holds back the polls of another.
    let pacers = Pacers::new(cfg.rate_per_sec);
    let slots = Arc::new(Semaphore::new(cfg.concurrency));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut gauges_at = Instant::now();
    let reach = longest_gap(&ctx.settings);
    refresh_gauges(&ctx.pool, reach).await;
    tracing::info!(owner = %ctx.owner, "status poller started");
    loop {
        if *stop.borrow() {
            break;
        }
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "a poll task failed");
            }
        }
        if gauges_at.elapsed() >= Duration::from_secs(5) {
            gauges_at = Instant::now();
            refresh_gauges(&ctx.pool, reach).await;
        }
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = tasks.join_next() => {}
                () = stopped(&mut stop) => break,
            }
            continue;
        }
        // Claims are batched: while polls are in flight and fewer than half the slots are
        // free, give the others a moment to finish, so that one claim statement takes many
        // rows instead of one row per finished poll.
        if !tasks.is_empty() && free < cfg.concurrency.div_ceil(2) {
            tokio::select! {
                _ = tasks.join_next() => continue,
                () = tokio::time::sleep(CLAIM_GATHER) => {}
                () = stopped(&mut stop) => break,
            }
        }
        let limit = free.min(cfg.batch_size as usize) as i64;
        match claim(&ctx.pool, &ctx.owner, cfg.lease, limit).await {
            Ok(batch) if !batch.is_empty() => {
                for p in batch {
                    let permit = slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed");
                    let span = tracing::info_span!("poll", payment_id = %p.id, bank = %p.bank);
                    crate::telemetry::link_to_creation(&span, p.trace_parent.as_deref());
                    let pacer = pacers.for_bank(&p.bank);
                    tasks.spawn(poll_one(ctx.clone(), pacer, p, permit).instrument(span));
                }
            }
            Ok(_) => {
                let wait = match polls::next_due(&ctx.pool).await {
                    Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or_default(),
                    Ok(None) => cfg.idle_wait,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the next due time");
                        cfg.idle_wait
                    }
                }
                .min(cfg.idle_wait)
                // Due rows may be locked by someone else for a moment: never spin.
                .max(Duration::from_millis(100));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = wake.notified() => {}
                    // A finished poll has set a new due time: look again.
                    Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                        if let Err(e) = done {
                            tracing::error!(error = %e, "a poll task failed");
                        }
                    }
                    () = stopped(&mut stop) => break,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim due payments; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stopped(&mut stop) => break,
                }
            }
        }
    }
    // Stopping: in-flight polls get one bank timeout to finish, then are abandoned.
    let bound = ctx
        .settings
        .longest_bank_call()
        .min(Duration::from_secs(10));
    let drained =
        tokio::time::timeout(bound, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = tasks.len(), "abandoning in-flight polls");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    match polls::release(&ctx.pool, &ctx.owner).await {
        Ok(n) => tracing::info!(released = n, "status poller stopped; leases handed back"),
        Err(e) => tracing::error!(error = %e, "cannot hand back leases; they will expire"),
    }
}

/// Claims up to `limit` due payments for `owner` (see [`polls::claim`]) and records how
/// late each was.
pub async fn claim(
    pool: &Db,
    owner: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let claimed = polls::claim(pool, owner, lease, limit).await?;
    let now = Utc::now();
    for p in &claimed {
        let lag = (now - p.due_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!("pisgate_poll_lag_seconds").record(lag);
    }
    Ok(claimed)
}

/// The furthest ahead any schedule this configuration writes can lie: the longest wait of
/// every rule (the intervals, the backoff, a bank's `Retry-After`, a standing order's daily
/// check, a deferred payment's first poll at its horizon), stretched as the schedule
/// stretches it, plus a lease and a minute. A payment scheduled beyond it is frozen.
pub fn longest_gap(settings: &crate::config::Settings) -> Duration {
    let cfg = &settings.poller;
    let longest = [
        cfg.signing_interval,
        cfg.late_signing_interval,
        cfg.after_final_interval,
        cfg.authorized_interval,
        cfg.scheduled_interval,
        cfg.max_backoff,
        cfg.lease,
        MAX_RETRY_AFTER,
        STANDING_ORDER_IDLE_CHECK,
        settings.payments.late_signing_horizon,
    ]
    .into_iter()
    .max()
    .unwrap_or_default();
    longest + longest / 5 + cfg.lease + Duration::from_secs(60)
}

/// Queue depth (due, not claimed), the age of the oldest of them, and the schedules frozen
/// beyond `reach` ([`longest_gap`]).
async fn refresh_gauges(pool: &Db, reach: Duration) {
    match polls::queue_stats(pool).await {
        Ok((depth, oldest)) => {
            metrics::gauge!("pisgate_poll_queue_depth").set(depth as f64);
            metrics::gauge!("pisgate_poll_oldest_due_seconds").set(oldest.max(0.0));
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the poll queue depth"),
    }
    match polls::frozen_count(pool, reach).await {
        Ok(n) => {
            if n > 0 {
                tracing::error!(
                    payments = n,
                    reach_secs = reach.as_secs(),
                    "payments are scheduled for their next poll further ahead than any schedule sets (frozen: edited in SQL?); run `pisgate ledger verify`"
                );
            }
            metrics::gauge!("pisgate_poll_frozen_schedules").set(n as f64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot count frozen poll schedules"),
    }
}

/// The outcome of a poll of a payment with no bank answer recorded.
const NOT_INITIATED: &str = "not_initiated";
/// The outcome of a poll that held a payment whose bank reference fails its ledger MAC.
const BANK_REF_REFUSED: &str = "bank_ref_refused";

/// What one poll decided.
#[derive(Debug)]
struct Decision {
    change: Option<ChangeSpec>,
    /// When to poll next (ignored if the payment ends final).
    next: Duration,
    failures: i32,
    outcome: &'static str,
    /// Standing-order progress read from the bank: executions still to come.
    remaining: Option<i32>,
    /// The claim's lease end when this poll renewed it (the horizon's DELETE): the poll is
    /// recorded under it instead of the claim's first.
    lease_until: Option<DateTime<Utc>>,
}

#[derive(Debug)]
enum ChangeSpec {
    /// The bank's report, applied through [`payments::apply_bank_report`].
    Bank {
        bank_status: String,
        mapped: PaymentStatus,
    },
    /// Provably unsignable (never "the horizon passed" alone).
    Unsignable {
        why: Unsignable,
        bank_status: Option<String>,
        failure: (&'static str, &'static str),
    },
    /// The bank refused to delete the payment at the horizon: noted, followed on.
    HorizonRefused { errors: serde_json::Value },
    /// The bank took the horizon's delete as a cancellation the shopper must authorise
    /// (Berlin Group 202): noted, never asked again, followed on.
    HorizonNeedsAuthorisation,
    /// The horizon's DELETE provably never acted at the bank (see [`delete_not_taken`]).
    HorizonDeleteNotTaken { error: &'static str },
}

impl ChangeSpec {
    /// The ledger note of the bank's answer to the horizon's DELETE, for the changes that
    /// are only that.
    fn horizon_note(&self) -> Option<(&'static str, serde_json::Value)> {
        match self {
            ChangeSpec::HorizonRefused { errors } => {
                Some((HORIZON_DELETE_REFUSED, json!({ "errors": errors })))
            }
            ChangeSpec::HorizonNeedsAuthorisation => {
                Some((HORIZON_DELETE_NEEDS_AUTHORISATION, json!({})))
            }
            ChangeSpec::HorizonDeleteNotTaken { error } => {
                Some((HORIZON_DELETE_NOT_TAKEN, json!({ "error": error })))
            }
            ChangeSpec::Bank { .. } | ChangeSpec::Unsignable { .. } => None,
        }
    }
}

/// Whether a queued reschedule's claim was still its own, or why it could not be written.
type Reply = oneshot::Sender<Result<bool, String>>;

/// Ends the claims of polls that changed nothing, many per statement (a group commit): each
/// poll queues its reschedule and takes the flush lock; whoever holds it writes everything
/// queued so far in one statement and tells each poll whether its claim was still its own.
/// Under load the batches grow by themselves; alone, a poll waits for one statement.
#[derive(Debug, Default)]
pub struct GroupReschedule {
    queued: std::sync::Mutex<Vec<(polls::Reschedule, Reply)>>,
    flush: tokio::sync::Mutex<()>,
}

impl GroupReschedule {
    /// Most reschedules written by one statement.
    const MAX_BATCH: usize = 500;

    /// Ends the claim `r` of `owner`; whether it was still theirs.
    pub async fn reschedule(
        &self,
        pool: &Db,
        owner: &str,
        r: polls::Reschedule,
    ) -> anyhow::Result<bool> {
        let (tx, mut rx) = oneshot::channel();
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((r, tx));
        loop {
            let _flushing = self.flush.lock().await;
            // A flush that ran while we waited may have taken ours.
            match rx.try_recv() {
                Ok(answer) => return answer.map_err(|e| anyhow::anyhow!(e)),
                Err(oneshot::error::TryRecvError::Closed) => {
                    anyhow::bail!("the reschedule was dropped")
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<_> = {
                let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
                let n = queued.len().min(Self::MAX_BATCH);
                queued.drain(..n).collect()
            };
            if batch.is_empty() {
                continue;
            }
            let items: Vec<polls::Reschedule> = batch.iter().map(|(r, _)| r.clone()).collect();
            match polls::reschedule_many(pool, owner, &items).await {
                Ok(kept) => {
                    let kept: std::collections::HashSet<uuid::Uuid> = kept.into_iter().collect();
                    for (r, reply) in batch {
                        let _ = reply.send(Ok(kept.contains(&r.id)));
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    for (_, reply) in batch {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

async fn poll_one(ctx: WorkerContext, pacer: Arc<Pacer>, p: Claimed, _slot: OwnedSemaphorePermit) {
    poll(&ctx, &pacer, &p).await;
}

/// Polls one claimed payment and records the answer; returns the outcome counted.
pub async fn poll(ctx: &WorkerContext, pacer: &Pacer, p: &Claimed) -> &'static str {
    let decision = decide(ctx, pacer, p).await;
    let outcome = decision.outcome;
    let counted = match record(ctx, p, decision).await {
        Ok(final_outcome) => final_outcome,
        Err(e) => {
            tracing::error!(error = %e, outcome, "cannot record the poll; the lease will expire and it is polled again");
            "record_failed"
        }
    };
    metrics::counter!("pisgate_polls_total", "outcome" => counted).increment(1);
    counted
}

/// The end of pisgate's signing window (faster polling before it).
fn window_end(ctx: &WorkerContext, p: &Claimed) -> DateTime<Utc> {
    p.expires_at.or(p.state_expires_at).unwrap_or_else(|| {
        chrono::Duration::from_std(ctx.settings.payments.signing_window)
            .ok()
            .and_then(|w| p.created_at.checked_add_signed(w))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    })
}

/// The late-signing horizon: past it, with nothing signed, the payment expires.
fn horizon(ctx: &WorkerContext, p: &Claimed) -> DateTime<Utc> {
    p.sign_horizon_at.or(p.state_expires_at).unwrap_or_else(|| {
        chrono::Duration::from_std(ctx.settings.payments.late_signing_horizon)
            .ok()
            .and_then(|w| p.created_at.checked_add_signed(w))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    })
}

async fn decide(ctx: &WorkerContext, pacer: &Pacer, p: &Claimed) -> Decision {
    let cfg = &ctx.settings.poller;
    let status = PaymentStatus::parse(&p.status).unwrap_or(PaymentStatus::Failed);
    let now = Utc::now();
    let horizon = horizon(ctx, p);
    // A shopper who came back just now is mid-callback (the code exchange may still be
    // running): the bank's answer decides, not our horizon.
    let returned_recently = p
        .state_used_at
        .is_some_and(|t| now - t < chrono::Duration::minutes(5));
    let past_horizon = now >= horizon && !returned_recently;
    let ok = |change, outcome| Decision {
        change,
        next: Duration::ZERO,
        failures: 0,
        outcome,
        remaining: None,
        lease_until: None,
    };
    // The bank asked to be left alone for longer than this claim lasts (a Retry-After): the
    // slot is not held waiting for it; the payment is put off until the hold ends.
    let held = pacer.held_for().await;
    if held > cfg.lease / 2 {
        tracing::info!(
            held_ms = held.as_millis() as u64,
            "the bank holds calls back; this poll is put off"
        );
        return Decision {
            change: None,
            next: held,
            failures: p.poll_failures,
            outcome: "bank_held",
            remaining: None,
            lease_until: None,
        };
    }
    if status.is_final() {
        return after_final_read(ctx, pacer, p).await;
    }
    let Some(bank_ref) = p.bank_ref() else {
        if p.bank_payment_id.is_some() {
            // The row names a bank payment but its reference is refused (its bank id and
            // links fail their ledger MAC, logged by `bank_ref`): the bank has the payment, so this is
            // never "nothing was made". Nothing is sent or decided; an operator looks
            // (`ledger verify` names it), and it is looked at again a late-signing interval on.
            let mut d = ok(None, BANK_REF_REFUSED);
            d.next = cfg.late_signing_interval;
            return d;
        }
        // No bank answer recorded (unknown outcome, or a crash in between): its link, if the
        // bank made one, was never handed to anyone, so nothing can be signed. It waits for
        // a retry with the same key until the horizon.
        if status == PaymentStatus::AwaitingAuthorization && past_horizon {
            // At a bank that may execute a payment without the shopper (an SCA exemption, a
            // decoupled SCA pushed at initiation), an attempt whose answer was lost (or never
            // came back) may have been made and executed: "nobody could sign it" is no
            // proof there. Not expired; looked at again a late-signing interval on, loudly,
            // until an operator reconciles it with the bank.
            if matches!(p.initiation.as_str(), "pending" | "outcome_unknown")
                && ctx.banks.client(&p.bank).traits().acts_without_hop
            {
                tracing::error!(
                    payment_id = %p.id,
                    bank = %p.bank,
                    "past the late-signing horizon with the bank's answer to the initiation never recorded, at a bank that may execute a payment without the shopper: not expired (the bank may have made and executed it); reconcile it with the bank"
                );
                metrics::counter!("pisgate_initiations_unresolved_total").increment(1);
                let mut d = ok(None, NOT_INITIATED);
                d.next = cfg.late_signing_interval;
                return d;
            }
            // The row says no answer was recorded; the ledger must say so too (a bank id
            // cleared in SQL would otherwise expire a payment the bank may pay).
            match crate::ledger::events::initiation_recorded(&ctx.pool, p.id).await {
                Ok(false) => {}
                Ok(true) => {
                    tracing::error!(
                        payment_id = %p.id,
                        "the payment row has no bank payment id but its ledger recorded the bank's answer; not expired: run `pisgate ledger verify`"
                    );
                    metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
                    let mut d = ok(None, BANK_REF_REFUSED);
                    d.next = cfg.late_signing_interval;
                    return d;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the payment's ledger before expiring it; tried again");
                    let mut d = ok(None, NOT_INITIATED);
                    d.next = cfg.late_signing_interval;
                    return d;
                }
            }
            // A deferred payment nobody chose a bank for (or gave the IBAN) had no attempt
            // at all: nothing at any bank to sign.
            let failure = if p.bank.is_empty() {
                (
                    "not_signed",
                    "nobody chose a bank for this payment before the late-signing horizon",
                )
            } else {
                (
                    "initiation_outcome_unknown",
                    "the bank's answer to the initiation was never recorded and nobody retried it",
                )
            };
            let change = ChangeSpec::Unsignable {
                why: Unsignable::LinkNeverHandedOut,
                bank_status: None,
                failure,
            };
            return ok(Some(change), "expired");
        }
        let mut d = ok(None, NOT_INITIATED);
        let until_horizon = (horizon - now).to_std().unwrap_or(cfg.signing_interval);
        // An attempt still `pending` may have its bank call under way (creation schedules
        // the first poll a signing interval on, and a slow bank's answer can be recorded
        // just after this claim read the row): looked at again a late-signing interval on.
        // Any other (an unknown outcome, a deferred payment) waits for its horizon, as
        // nothing at any bank can move it.
        d.next = if p.initiation == "pending" {
            until_horizon.min(cfg.late_signing_interval)
        } else {
            until_horizon
        };
        return d;
    };

    pacer.acquire().await;
    let Some(answer) = read_status(ctx, p, &bank_ref).await else {
        // A bank that answers only with the shopper's own token, and that token is not
        // there (yet, or any more): wait for it (the refresher, the shopper's page), never
        // guess and never use another shopper's. Past the horizon, what pisgate itself
        // knows may still prove that nobody signed (no signing order succeeded and the
        // bank's time to sign ran out); otherwise it stays open for an operator (the
        // console's attention list shows it), read again should a token come back.
        if status == PaymentStatus::AwaitingAuthorization && past_horizon {
            match nobody_signed_without_token(ctx, p).await {
                Ok(true) => {
                    tracing::info!(
                        "past the horizon, the shopper's token is gone, no signing order succeeded and the bank's time to sign ran out: expired"
                    );
                    let change = ChangeSpec::Unsignable {
                        why: Unsignable::NoSigningOrderSucceeded,
                        bank_status: None,
                        failure: (
                            "not_signed",
                            "no signing order succeeded before the bank's time to sign ran out",
                        ),
                    };
                    return ok(Some(change), "expired");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the payment's signing orders at the horizon");
                }
            }
        }
        return ok(None, "no_token");
    };
    let failures = p.poll_failures.saturating_add(1);
    let failed = |outcome, wait: Duration| Decision {
        change: None,
        next: wait,
        failures,
        outcome,
        remaining: None,
        lease_until: None,
    };
    let retry_wait = backoff(cfg.signing_interval, cfg.max_backoff, failures as u32);
    let client = ctx.banks.client(&p.bank);
    let traits = client.traits();
    let answer = match answer {
        Ok(report) if traits.submit_after_authorization => {
            if client.needs_submission(&report) {
                // Past the horizon, a signed payment that no token of ours can ever submit
                // ends (the conditions are checked under its row lock; a shopper coming
                // back right now holds the callback's claim, so it is not ended then).
                if now >= horizon {
                    match submissions::end_never_submittable(&ctx.pool, p.id).await {
                        Ok(true) => {
                            tracing::info!(
                                "signed at the bank, but never submittable (no token past the late-signing horizon): authorization_failed"
                            );
                            return ok(None, "never_submittable");
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot check whether the payment can still be submitted");
                        }
                    }
                }
                // Signed, not yet executed: the submit step (its own claim, its own status
                // read) submits it, or withholds it when the merchant cancelled.
                return submit_step(ctx, p).await;
            }
            match submission::truth(&ctx.pool, &traits, p.id, report).await {
                Ok(report) => Ok(report),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot check the submissions on record; backing off");
                    return failed("failed", retry_wait);
                }
            }
        }
        other => other,
    };
    match answer {
        Ok(StatusReport {
            bank_status,
            status: Some(to),
        }) => {
            if to == PaymentStatus::AwaitingAuthorization
                && status == PaymentStatus::AwaitingAuthorization
                && past_horizon
            {
                return at_horizon(ctx, pacer, p, &bank_ref, Some(bank_status)).await;
            }
            // The bank shows an unsigned payment deleted after pisgate's horizon DELETE went
            // out and its answer was never recorded: that DELETE's deletion, an expiry (see
            // [`deleted_by_horizon`]).
            if to == PaymentStatus::Cancelled && status == PaymentStatus::AwaitingAuthorization {
                match deleted_by_horizon(ctx, p, &bank_status).await {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::info!(
                            "the bank shows the payment cancelled after the horizon's delete, whose answer was never recorded: the delete's deletion"
                        );
                        let change = ChangeSpec::Unsignable {
                            why: Unsignable::DeletedAtBank,
                            bank_status: Some(bank_status),
                            failure: (
                                "not_signed",
                                "the shopper did not sign before the late-signing horizon; the bank deleted the payment",
                            ),
                        };
                        return ok(Some(change), "expired");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read whether the horizon's delete was sent; backing off");
                        return failed("failed", retry_wait);
                    }
                }
            }
            let mut d = ok(
                Some(ChangeSpec::Bank {
                    bank_status,
                    mapped: to,
                }),
                if to == status { "unchanged" } else { "changed" },
            );
            // A standing order's details are read when the status moved or an occurrence is
            // due, not on every poll.
            if p.recurring_count.is_some()
                && matches!(to, PaymentStatus::Authorized | PaymentStatus::Paid)
                && (to != status || occurrence_due(p, now))
            {
                d.remaining = recurring_remaining(ctx, pacer, p, &bank_ref).await;
            }
            d
        }
        Ok(StatusReport {
            bank_status,
            status: None,
        }) => {
            tracing::warn!(bank_status, "unknown bank status: no change");
            metrics::counter!("pisgate_unknown_bank_status_total").increment(1);
            ok(None, "unknown_status")
        }
        Err(BankError::NotFound) if status == PaymentStatus::AwaitingAuthorization => {
            // Before the shopper opens the signing link the payment does not exist yet.
            if past_horizon {
                at_horizon(ctx, pacer, p, &bank_ref, None).await
            } else {
                ok(None, "not_yet")
            }
        }
        Err(BankError::RateLimited { retry_after }) => {
            // A bank's Retry-After is honoured, but never beyond an hour.
            let retry_after = retry_after.map(|d| d.min(MAX_RETRY_AFTER));
            let wait = retry_after.unwrap_or(retry_wait).max(retry_wait);
            // The limit is on our client, not on this payment: hold every poll back.
            if let Some(after) = retry_after {
                pacer.hold(after).await;
            }
            tracing::warn!(
                retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
                "the bank is rate limiting status polls"
            );
            failed("rate_limited", wait)
        }
        Err(e @ (BankError::Unavailable { .. } | BankError::NotFound)) => {
            tracing::warn!(error = %e, failures, "status poll failed; backing off");
            failed("unavailable", retry_wait)
        }
        Err(e) => {
            tracing::error!(error = %e, kind = e.kind(), failures, "status poll failed; backing off");
            failed("failed", retry_wait)
        }
    }
}

/// The submit step for a payment whose bank asks for a submission
/// ([`submission::submit`]): the bank's latest word it read or got back is applied as any
/// poll's, and the next poll comes when the step says it is worth trying again.
async fn submit_step(ctx: &WorkerContext, p: &Claimed) -> Decision {
    let deps = submission::Deps {
        pool: &ctx.pool,
        cipher: &ctx.cipher,
        banks: &ctx.banks,
        settings: &ctx.settings,
        finishing: &ctx.finishing,
    };
    let done = match submission::submit(deps, p.id, "poller", None).await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "the submit step failed; retried at the next poll"
            );
            let failures = p.poll_failures.saturating_add(1);
            let cfg = &ctx.settings.poller;
            return Decision {
                change: None,
                next: backoff(cfg.signing_interval, cfg.max_backoff, failures as u32),
                failures,
                outcome: "submission_failed",
                remaining: None,
                lease_until: None,
            };
        }
    };
    let change = done.report.and_then(|r| {
        r.status.map(|mapped| ChangeSpec::Bank {
            bank_status: r.bank_status,
            mapped,
        })
    });
    Decision {
        change,
        next: done.retry_in.unwrap_or(Duration::ZERO),
        failures: 0,
        outcome: done.outcome,
        remaining: None,
        lease_until: None,
    }
}

/// The ledger notes of a bank's answer to the horizon's DELETE that stands: after either,
/// the DELETE is never sent again (see [`at_horizon`]).
const HORIZON_DELETE_REFUSED: &str = "horizon_delete_refused";
const HORIZON_DELETE_NEEDS_AUTHORISATION: &str = "horizon_delete_needs_authorisation";

/// The ledger note written, with the claim's renewal, just before the horizon's DELETE is
/// sent (see [`renew_and_note_delete`]), and the one of a DELETE the bank provably did not
/// act on (not sent, refused as a request, rate limited).
const HORIZON_DELETE_REQUESTED: &str = "horizon_delete_requested";
const HORIZON_DELETE_NOT_TAKEN: &str = "horizon_delete_not_taken";

/// The latest of the payment's horizon DELETE notes: the request and every answer.
async fn last_horizon_note(
    conn: &mut sqlx::PgConnection,
    id: uuid::Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT kind FROM payment_events
           WHERE payment_id = $1 AND kind = ANY($2)
           ORDER BY seq DESC LIMIT 1"#,
        id,
        &[
            HORIZON_DELETE_REQUESTED,
            HORIZON_DELETE_NOT_TAKEN,
            HORIZON_DELETE_REFUSED,
            HORIZON_DELETE_NEEDS_AUTHORISATION,
        ] as &[&str],
    )
    .fetch_optional(conn)
    .await
}

/// Renews the poll's claim for the horizon's DELETE ([`polls::renew_claim`]) and, in the
/// same transaction, notes that the DELETE is about to be sent (once: a DELETE whose answer
/// never came is not noted again when it is sent again). The bank's answer is recorded
/// later, under the renewed lease; if that record never comes (the process stops, the write
/// fails, the connection drops after the bank acted), the note is what tells the bank's
/// deletion on a later read apart from a cancellation of its own (see
/// [`deleted_by_horizon`]). The payment's row is locked first, in the order every status
/// change takes (the payment, then its poll schedule).
async fn renew_and_note_delete(
    ctx: &WorkerContext,
    p: &Claimed,
    shopper_may_return: bool,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let mut tx = ctx.pool.begin().await?;
    if payments::get_for_update(&mut tx, p.id).await?.is_none() {
        return Ok(None);
    }
    let renewed = polls::renew_claim(
        &mut tx,
        p.id,
        &ctx.owner,
        p.lease_until,
        ctx.settings.poller.lease,
        shopper_may_return,
    )
    .await?;
    if renewed.is_some() {
        if last_horizon_note(&mut tx, p.id).await?.as_deref() != Some(HORIZON_DELETE_REQUESTED) {
            payments::note(
                &mut tx,
                p.id,
                HORIZON_DELETE_REQUESTED,
                json!({ "by": "poller" }),
            )
            .await?;
        }
        tx.commit().await?;
    }
    Ok(renewed)
}

/// Whether the bank's `bank_status` for an unsigned payment is the answer to pisgate's own
/// horizon DELETE whose answer was lost: it is the bank's status of a deleted payment, the
/// latest horizon note is a DELETE sent with no answer after it (not refused, not "needs
/// the shopper's authorisation", not provably untaken), and no shopper came back. Then the
/// payment ends `expired` (not signed) as the DELETE's answer would have made it, not
/// `cancelled` by the bank. Anything else is the bank's own word.
async fn deleted_by_horizon(
    ctx: &WorkerContext,
    p: &Claimed,
    bank_status: &str,
) -> Result<bool, sqlx::Error> {
    let traits = ctx.banks.client(&p.bank).traits();
    let returned =
        p.state_used_at.is_some() || (p.psu_key.is_some() && !traits.shopper_token_required);
    if bank_status != traits.deleted_status || returned {
        return Ok(false);
    }
    let mut conn = ctx.pool.read_conn().await?;
    Ok(last_horizon_note(&mut conn, p.id).await?.as_deref() == Some(HORIZON_DELETE_REQUESTED))
}

/// Whether a DELETE that failed was provably not acted on by the bank: never sent or
/// refused before it was handled (rate limited, a bank-side 503, our token, credentials,
/// signature or clock refused, the request refused as such). A timeout, a dropped
/// connection, a 5xx or an unreadable answer leave it unknown.
fn delete_not_taken(e: &BankError) -> bool {
    e.provably_not_processed()
        || matches!(
            e,
            BankError::TokenRejected
                | BankError::BadCredentials { .. }
                | BankError::BadSignature { .. }
                | BankError::ClockRejected { .. }
                | BankError::Validation { .. }
        )
}

/// At the late-signing horizon, the bank still showing nothing signed (`bank_status`, or
/// `None` for a 404): proof that nobody can sign it, or the bank's refusal (see the module
/// docs). Never an expiry on the horizon alone.
async fn at_horizon(
    ctx: &WorkerContext,
    pacer: &Pacer,
    p: &Claimed,
    bank_ref: &BankRef,
    bank_status: Option<String>,
) -> Decision {
    let bank_id = &bank_ref.id;
    let cfg = &ctx.settings.poller;
    let ok = |change, outcome| Decision {
        change,
        next: Duration::ZERO,
        failures: 0,
        outcome,
        remaining: None,
        lease_until: None,
    };
    let failures = p.poll_failures.saturating_add(1);
    let failed = |outcome| Decision {
        change: None,
        next: backoff(cfg.signing_interval, cfg.max_backoff, failures as u32),
        failures,
        outcome,
        remaining: None,
        lease_until: None,
    };
    let client = ctx.banks.client(&p.bank);
    let traits = client.traits();
    // A bank whose every call needs the shopper's own token (SEB): the key set at the
    // payment's initiation is the shopper who identified, not one who signed; the payment is
    // asked to be deleted with that shopper's token (the bank refuses a signed one).
    let token_required = traits.shopper_token_required;
    if p.psu_key.is_some() && !token_required {
        // The shopper came back with a code: signed as far as we can tell. Only the bank's
        // word ends it.
        return ok(None, "shopper_returned");
    }
    // Out by the row, or by its ledger when the row's column is empty (cleared in SQL).
    let link_out = token_required
        || match async {
            payments::link_may_be_out(&mut *ctx.pool.read_conn().await?, p.id, p.hop_opened_at)
                .await
        }
        .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read whether the payment's link went out");
                return failed("horizon_failed");
            }
        };
    if !link_out {
        let change = ChangeSpec::Unsignable {
            why: Unsignable::LinkNeverHandedOut,
            bank_status,
            failure: (
                "not_signed",
                "nobody reached the bank's signing page before the late-signing horizon",
            ),
        };
        return ok(Some(change), "expired");
    }
    // A bank without shopper tokens (Berlin Group) takes the DELETE on pisgate's own
    // certificate. So does a bank whose token belongs to one payment's authorization (OP:
    // its revoke goes on pisgate's client credentials; no shopper token can exist for a
    // payment nobody came back from).
    let tokenless = !traits.cancel_needs_shopper_token && !token_required;
    if tokenless && !traits.return_carries_code {
        // Berlin Group: no code, no token ever says "this shopper signed", the transaction
        // status may stay RCVD after the SCA, and a DELETE "might be sufficient to cancel"
        // even a signed payment. So the DELETE is asked only when nothing says the shopper
        // signed: the bank's SCA status when it gives one, else the shopper's return.
        match sca_at_horizon(ctx, pacer, p, bank_ref).await {
            Some(ScaState::Finalised) => {
                tracing::info!(
                    "past the late-signing horizon, the bank says the shopper's SCA is finalised: signed, never deleted; following it to the bank's word"
                );
                return ok(None, "horizon_signed");
            }
            // The bank's own word that nothing is signed (open or failed): it may delete.
            Some(ScaState::Open | ScaState::Failed) => {}
            None if p.state_used_at.is_some() => {
                tracing::info!(
                    "past the late-signing horizon, the shopper came back from the bank and its SCA status is unknown: never deleted; following it to the bank's word"
                );
                return ok(None, "shopper_returned");
            }
            None => {}
        }
    }
    // Only this shopper's own token may ask the bank (a returning shopper, known by the
    // merchant's psu_id); a shopper pisgate never saw come back leaves the payment to the
    // bank's own approval timeout.
    let found = match p.psu_id.as_deref() {
        _ if tokenless => Ok(None),
        _ if token_required => match p.psu_key.as_deref() {
            Some(key) => tokens::load(&ctx.pool, &ctx.cipher, &p.bank, key)
                .await
                .map(|t| t.map(|t| (key.to_owned(), t))),
            None => Ok(None),
        },
        Some(psu_id) => {
            tokens::for_merchant_shopper(&ctx.pool, &ctx.cipher, &p.bank, p.merchant_id, psu_id)
                .await
        }
        None => Ok(None),
    };
    let held = match found {
        Ok(Some(found)) => Some(found),
        Ok(None) if tokenless => None,
        Ok(None) => {
            if bank_status.is_none() {
                // The bank shows no such payment: nobody opened its link. The bank never
                // reports the timeout of a payment it never showed, so its time to sign
                // running out is the proof.
                match bank_time_ran_out(ctx, p).await {
                    Ok(true) => {
                        tracing::info!(
                            "nobody opened the bank's link before the bank's time to sign ran out: expired"
                        );
                        let change = ChangeSpec::Unsignable {
                            why: Unsignable::BankTimeRanOutUnopened,
                            bank_status: None,
                            failure: (
                                "not_signed",
                                "nobody opened the bank's signing link before the bank's time to sign ran out",
                            ),
                        };
                        return ok(Some(change), "expired");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read when the bank answered the initiation");
                        return failed("horizon_failed");
                    }
                }
            }
            tracing::info!(
                "past the late-signing horizon, no token to ask the bank to delete the payment; following it to the bank's own word"
            );
            return ok(None, "horizon_no_token");
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot load a token for the horizon's delete");
            return failed("horizon_failed");
        }
    };
    // The bank answered an earlier horizon DELETE with a refusal (signed, executing) or with
    // "the cancellation needs the shopper's authorisation" (Berlin Group 202): its answer
    // stands; asking again would only open another cancellation nobody authorises. The
    // payment is followed to the bank's own word.
    // (Once answered so, no DELETE is sent again, so that answer stays the latest note.)
    let last = match ctx.pool.read_conn().await {
        Ok(mut conn) => last_horizon_note(&mut conn, p.id).await,
        Err(e) => Err(e),
    };
    match last.as_ref().map(|k| k.as_deref().unwrap_or_default()) {
        Ok(HORIZON_DELETE_REFUSED | HORIZON_DELETE_NEEDS_AUTHORISATION) => {
            return Decision {
                change: None,
                next: cfg.late_signing_interval,
                failures: 0,
                outcome: "horizon_answered",
                remaining: None,
                lease_until: None,
            };
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the payment's earlier horizon deletes");
            return failed("horizon_failed");
        }
    }
    pacer.acquire().await;
    // The DELETE is sent under a renewed lease (a fresh `poller.lease` on the database's
    // clock): a lease that ran out while this poll read the bank (slow reads, a 429's
    // wait) would drop the bank's "deleted" as "lease lost", and the next poll would read
    // the bank's Cancelled as a cancel at the bank instead of an expiry. A claim already
    // lost asks nothing: the claim that replaced it decides. So does a shopper who came back
    // since this poll's claim read the row (checked in the renewal's statement).
    let renewed = match renew_and_note_delete(ctx, p, !token_required).await {
        Ok(Some(until)) => until,
        Ok(None) => {
            tracing::info!(
                "the lease ran out, or a shopper came back, before the horizon's delete; nothing asked"
            );
            return ok(None, "lease_lost");
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot renew the poll's lease before the horizon's delete");
            return failed("horizon_failed");
        }
    };
    let answer = client
        .cancel(
            std::slice::from_ref(bank_ref),
            held.as_ref().map(|(_, token)| &token.access_token),
            None,
        )
        .await;
    let mut d = match answer {
        Ok(outcome) if outcome.deleted.iter().any(|d| d == bank_id) => {
            tracing::info!("the bank deleted the unsigned payment at the late-signing horizon");
            let change = ChangeSpec::Unsignable {
                why: Unsignable::DeletedAtBank,
                bank_status: Some(traits.deleted_status.into()),
                failure: (
                    "not_signed",
                    "the shopper did not sign before the late-signing horizon; the bank deleted the payment",
                ),
            };
            ok(Some(change), "expired")
        }
        Ok(outcome) if outcome.needs_authorisation.iter().any(|d| d == bank_id) => {
            tracing::info!(
                "the bank wants the shopper to authorise the horizon's delete: not deleted; following the payment to the bank's word"
            );
            Decision {
                change: Some(ChangeSpec::HorizonNeedsAuthorisation),
                next: cfg.late_signing_interval,
                failures: 0,
                outcome: "horizon_needs_authorisation",
                remaining: None,
                lease_until: None,
            }
        }
        Ok(outcome) => {
            let errors: Vec<serde_json::Value> = outcome
                .errors
                .iter()
                .map(|e| json!({ "code": e.code, "description": e.description }))
                .collect();
            tracing::info!(
                refusals = errors.len(),
                "the bank refused to delete the payment at the horizon (signed or executing?); following it on"
            );
            Decision {
                change: Some(ChangeSpec::HorizonRefused {
                    errors: json!(errors),
                }),
                ..failed("horizon_refused")
            }
        }
        Err(e) => {
            if let (BankError::TokenRejected, Some((psu_key, token))) = (&e, &held) {
                let _ = tokens::mark_dead(
                    &ctx.pool,
                    &p.bank,
                    psu_key,
                    token.issue_seq,
                    "rejected on the horizon's delete",
                )
                .await;
            }
            tracing::warn!(error = %e, kind = e.kind(), "the horizon's delete failed; following the payment on");
            if delete_not_taken(&e) {
                Decision {
                    change: Some(ChangeSpec::HorizonDeleteNotTaken { error: e.kind() }),
                    ..failed("horizon_failed")
                }
            } else {
                failed("horizon_failed")
            }
        }
    };
    d.lease_until = Some(renewed);
    d
}

/// The state of a payment's SCA at the bank, read at its `scaStatus` link (Berlin Group);
/// `None` when it has no such link or the read fails (logged).
async fn sca_at_horizon(
    ctx: &WorkerContext,
    pacer: &Pacer,
    p: &Claimed,
    bank_ref: &BankRef,
) -> Option<ScaState> {
    let link = bank_ref.links.get("scaStatus")?;
    pacer.acquire().await;
    match ctx.banks.client(&p.bank).sca_status(link, None).await {
        Ok(sca) => Some(sca.state),
        Err(e) => {
            tracing::warn!(error = %e, kind = e.kind(), "the SCA status at the late-signing horizon could not be read");
            None
        }
    }
}

/// For a payment signed only in signing orders pisgate starts (SEB's BankID), with no
/// token left to ask the bank: whether no order was started or the last one ended failed
/// at the bank (a start whose answer was never recorded, a pending or a completed order
/// are not proof), and the bank's time to sign ran out.
async fn nobody_signed_without_token(ctx: &WorkerContext, p: &Claimed) -> anyhow::Result<bool> {
    if !ctx.banks.client(&p.bank).traits().shopper_token_required {
        return Ok(false);
    }
    if !no_signing_order_succeeded(&mut *ctx.pool.read_conn().await?, p.id).await? {
        return Ok(false);
    }
    Ok(bank_time_ran_out(ctx, p).await?)
}

/// No signing order was started, or the last one ended failed (see
/// [`nobody_signed_without_token`]); read again under the payment's row lock before the
/// expiry is written.
async fn no_signing_order_succeeded(
    conn: &mut sqlx::PgConnection,
    id: uuid::Uuid,
) -> Result<bool, sqlx::Error> {
    use crate::bank::BankIdPurpose;
    use crate::ledger::bankid;
    let none_running = match bankid::get(conn, id, BankIdPurpose::Sign).await? {
        None => true,
        Some(order) => order.starts == 0 || order.state == "failed",
    };
    // A start whose answer was never recorded (`startUnknown`: a timeout, a lost answer)
    // may have made an order the shopper signs in the app (the bank pushes it to the
    // identified shopper), whatever later starts came to: never proof that nobody signed.
    // The ledger keeps every such start (`bankid_order_not_started`, claim not released).
    Ok(none_running && !bankid::sign_start_unknown(conn, id).await?)
}

/// Whether the time the bank gives to sign (`nordea.approval_timeout_secs`, or that bank's
/// own `approval_timeout_secs`) has run out for
/// `p`, counted from the bank's answer to its initiation as pisgate recorded it (the bank
/// created the payment before that, so its own timeout came no later). Never, when the
/// bank's time to sign is not known.
async fn bank_time_ran_out(ctx: &WorkerContext, p: &Claimed) -> Result<bool, sqlx::Error> {
    use crate::config::BankProtocolSettings;
    let timeout = ctx
        .settings
        .banks
        .iter()
        .find(|b| b.id == p.bank)
        .and_then(|b| match &b.protocol {
            BankProtocolSettings::Nordea(n) => n.approval_timeout,
            BankProtocolSettings::BerlinGroup(_) => None,
            BankProtocolSettings::Seb(s) => Some(s.approval_timeout),
            BankProtocolSettings::Op(_) => None,
        });
    let Some(timeout) = timeout else {
        return Ok(false);
    };
    let Some(answered) = payments::bank_answered_at(&ctx.pool, p.id).await? else {
        return Ok(false);
    };
    Ok(chrono::Duration::from_std(timeout)
        .ok()
        .and_then(|t| answered.checked_add_signed(t))
        .is_some_and(|ran_out| Utc::now() >= ran_out))
}

/// One of the few reads of the bank after a final status (see the module docs): the bank's
/// answer goes through the one path, which keeps the final status and records a
/// disagreement if the bank contradicts it.
async fn after_final_read(ctx: &WorkerContext, pacer: &Pacer, p: &Claimed) -> Decision {
    let done = |change, outcome| Decision {
        change,
        next: Duration::ZERO,
        failures: 0,
        outcome,
        remaining: None,
        lease_until: None,
    };
    let Some(bank_ref) = p.bank_ref() else {
        if p.bank_payment_id.is_some() {
            // The bank has the payment but its reference fails its ledger MAC (logged by
            // `bank_ref`): these reads watch for a bank that later says otherwise, so they
            // are held, not used up, until an operator looks (`ledger verify` names it).
            return Decision {
                next: ctx.settings.poller.late_signing_interval,
                ..done(None, BANK_REF_REFUSED)
            };
        }
        return done(None, "final");
    };
    pacer.acquire().await;
    let Some(answer) = read_status(ctx, p, &bank_ref).await else {
        return done(None, "after_final");
    };
    match answer {
        Ok(StatusReport {
            bank_status,
            status: Some(mapped),
        }) => done(
            Some(ChangeSpec::Bank {
                bank_status,
                mapped,
            }),
            "after_final",
        ),
        Ok(_) => done(None, "after_final"),
        Err(e) => {
            tracing::info!(error = %e, "a read after the final status failed");
            done(None, "after_final")
        }
    }
}

/// The payment's status at its bank. A bank whose every call needs the shopper's own token
/// (SEB, `shopper_token_required`) is read with the token of the shopper bound to this
/// payment (`psu_key`, set when that shopper's token created it at the bank), never another
/// shopper's: `None` when there is none live (not yet, expired before the refresher came, or
/// dead). A 401 marks that token dead.
async fn read_status(
    ctx: &WorkerContext,
    p: &Claimed,
    bank_ref: &BankRef,
) -> Option<Result<StatusReport, BankError>> {
    let client = ctx.banks.client(&p.bank);
    if !client.traits().shopper_token_required {
        return Some(client.status(bank_ref, None).await);
    }
    let psu_key = p.psu_key.as_deref()?;
    let token = match tokens::load(&ctx.pool, &ctx.cipher, &p.bank, psu_key).await {
        Ok(Some(t)) if t.access_expires_at > Utc::now() => t,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot load the shopper's token for a status read");
            return None;
        }
    };
    let answer = client
        .status_with_token(bank_ref, Some(&token.access_token), None)
        .await;
    if answer == Err(BankError::TokenRejected) {
        tracing::warn!(
            psu = %tokens::psu_log_id(&p.bank, psu_key),
            "the bank refused the shopper's token on a status read; marked dead"
        );
        let _ = tokens::mark_dead(
            &ctx.pool,
            &p.bank,
            psu_key,
            token.issue_seq,
            "rejected on a status read",
        )
        .await;
    }
    Some(answer)
}

/// A standing order's executions still to come, from the bank's details (needs the
/// shopper's live token; without one the progress is inferred when the order ends).
async fn recurring_remaining(
    ctx: &WorkerContext,
    pacer: &Pacer,
    p: &Claimed,
    bank_ref: &BankRef,
) -> Option<i32> {
    let psu_key = p.psu_key.as_deref()?;
    let token = match tokens::load(&ctx.pool, &ctx.cipher, &p.bank, psu_key).await {
        Ok(Some(t)) if t.access_expires_at > Utc::now() => t,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot load the shopper's token");
            return None;
        }
    };
    pacer.acquire().await;
    match ctx
        .banks
        .client(&p.bank)
        .details(bank_ref, Some(&token.access_token), None)
        .await
    {
        Ok(details) => details.recurring.and_then(|r| i32::try_from(r.count).ok()),
        Err(BankError::TokenRejected) => {
            let _ = tokens::mark_dead(
                &ctx.pool,
                &p.bank,
                psu_key,
                token.issue_seq,
                "rejected on details",
            )
            .await;
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the standing order's progress");
            None
        }
    }
}

/// Between two executions of a standing order, it is looked at this often.
const STANDING_ORDER_IDLE_CHECK: Duration = Duration::from_secs(24 * 3600);

/// The start (00:00 UTC) of a standing order's next execution date by its calendar rule:
/// occurrence number "executions seen so far", counted from the execution date (or the day
/// it was created). `None` for a payment that is not a standing order or whose rule is not a
/// calendar (the sandbox's every-minute series).
fn next_occurrence(p: &Claimed) -> Option<DateTime<Utc>> {
    p.recurring_count?;
    let rule = crate::domain::RecurrenceType::parse(p.recurrence_type.as_deref()?)?;
    let start = p
        .execution_date
        .as_deref()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .unwrap_or_else(|| p.created_at.date_naive());
    let n = u32::try_from(p.recurring_executions).unwrap_or(0);
    Some(rule.occurrence(start, n)?.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Whether a standing order's next execution may have happened (always, when its rule is
/// not a calendar).
fn occurrence_due(p: &Claimed, now: DateTime<Utc>) -> bool {
    next_occurrence(p).is_none_or(|next| now >= next)
}

/// When to poll a payment in `status` next, from now.
fn schedule(ctx: &WorkerContext, p: &Claimed, status: PaymentStatus) -> Option<Duration> {
    let cfg = &ctx.settings.poller;
    let now = Utc::now();
    match status {
        s if s.is_final() => None,
        PaymentStatus::AwaitingAuthorization => {
            let until_horizon = (horizon(ctx, p) - now).to_std().unwrap_or_default();
            let interval = if now < window_end(ctx, p) {
                cfg.signing_interval
            } else {
                cfg.late_signing_interval
            };
            if until_horizon.is_zero() {
                // Past the horizon and not provably unsignable yet: followed on.
                return Some(stretch(cfg.late_signing_interval, 10));
            }
            // Look once more right at the horizon, so the bank is asked on time.
            Some(stretch(interval, 10).min(until_horizon.max(Duration::from_millis(50))))
        }
        _ if next_occurrence(p).is_some() => {
            // A standing order is followed around its execution dates: once a day between
            // them (a deletion at the bank shows within a day), closely on and after the
            // date until the execution is seen, then less often if the bank shifts it.
            let next = next_occurrence(p).unwrap_or(now);
            let wait = if next > now {
                (next - now)
                    .to_std()
                    .unwrap_or_default()
                    .min(STANDING_ORDER_IDLE_CHECK)
                    .max(cfg.authorized_interval)
            } else if now - next < chrono::Duration::days(1) {
                cfg.authorized_interval
            } else {
                cfg.scheduled_interval
            };
            Some(stretch(wait, 10))
        }
        _ => {
            let execution_start = p
                .execution_date
                .as_deref()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|dt| dt.and_utc());
            let wait = match execution_start {
                Some(start) if start > now => {
                    let until = (start - now).to_std().unwrap_or_default();
                    cfg.scheduled_interval
                        .min(until)
                        .max(cfg.authorized_interval)
                }
                _ => cfg.authorized_interval,
            };
            Some(stretch(wait, 10))
        }
    }
}

/// Applies a decision in one transaction, if the row is still ours. Returns the outcome
/// to count.
async fn record(ctx: &WorkerContext, p: &Claimed, d: Decision) -> anyhow::Result<&'static str> {
    // A payment ended by the submit step's own transaction (a withheld submission, one that
    // can never be submitted) has left the poll schedule with it: nothing left to write.
    if matches!(d.outcome, "withheld" | "never_submittable") {
        return Ok(d.outcome);
    }
    // A poll that changed nothing (and has no standing-order progress to write) only ends
    // its claim: one small row, written together with other polls' (no lock of the payment).
    let status = PaymentStatus::parse(&p.status).unwrap_or(PaymentStatus::Failed);
    let quiet = match &d.change {
        None => true,
        // The bank says what we already recorded: nothing to write but the schedule.
        Some(ChangeSpec::Bank {
            bank_status,
            mapped,
        }) => *mapped == status && p.bank_status.as_ref() == Some(bank_status),
        Some(
            ChangeSpec::Unsignable { .. }
            | ChangeSpec::HorizonRefused { .. }
            | ChangeSpec::HorizonNeedsAuthorisation
            | ChangeSpec::HorizonDeleteNotTaken { .. },
        ) => false,
    };
    if quiet && (p.recurring_count.is_none() || d.remaining.is_none()) {
        let next_at = next_poll(ctx, p, status, &d).map(after);
        if let Some(next_at) = next_at {
            let kept = ctx
                .reschedules
                .reschedule(
                    &ctx.pool,
                    &ctx.owner,
                    polls::Reschedule {
                        id: p.id,
                        lease_until: d.lease_until.unwrap_or(p.lease_until),
                        next_at,
                        failures: d.failures,
                    },
                )
                .await?;
            if !kept {
                tracing::info!("lease lost before the poll was recorded; dropping this answer");
                return Ok("lease_lost");
            }
            return Ok(d.outcome);
        }
    }
    let mut tx = ctx.pool.begin().await?;
    let Some(row) = polls::lock_claim(&mut tx, p.id).await? else {
        return Ok("lease_lost");
    };
    if !row.is_claim(&ctx.owner, d.lease_until.unwrap_or(p.lease_until)) {
        // Our lease ran out and the payment was claimed again (by another replica or by
        // this one): that claim's answer wins.
        tracing::info!("lease lost before the poll was recorded; dropping this answer");
        return Ok("lease_lost");
    }
    // Progress as it is now, not as it was at the claim.
    let p = &Claimed {
        recurring_executions: row.recurring_executions,
        recurring_remaining: row.recurring_remaining,
        ..p.clone()
    };
    let mut status = PaymentStatus::parse(&p.status).unwrap_or(PaymentStatus::Failed);
    let mut outcome = d.outcome;
    if let Some(c) = &d.change {
        let applied = match c {
            ChangeSpec::Bank {
                bank_status,
                mapped,
            } => payments::apply_bank_report(
                &mut tx,
                p.id,
                bank_status,
                Some(*mapped),
                json!({ "source": "poller" }),
            )
            .await
            .map(|a| matches!(a, payments::Applied::Refused)),
            ChangeSpec::HorizonRefused { .. }
            | ChangeSpec::HorizonNeedsAuthorisation
            | ChangeSpec::HorizonDeleteNotTaken { .. } => {
                if let Some((kind, detail)) = c.horizon_note() {
                    payments::note(&mut tx, p.id, kind, detail).await?;
                }
                Ok(false)
            }
            ChangeSpec::Unsignable {
                why,
                bank_status,
                failure,
            } => {
                let Some(row) = payments::get(&mut tx, p.id).await? else {
                    return Ok("lease_lost");
                };
                // Checked again under the row lock: a shopper who came back (or is coming
                // back right now) signed, and only the bank's word ends that payment; a
                // shopper who just went through the hop holds the link now.
                let link_out_now = match why {
                    Unsignable::LinkNeverHandedOut => {
                        payments::link_may_be_out(&mut tx, p.id, row.hop_opened_at).await?
                    }
                    Unsignable::NoSigningOrderSucceeded => {
                        !no_signing_order_succeeded(&mut tx, p.id).await?
                    }
                    _ => false,
                };
                // The bank's deletion, and the signing orders' failure (at a bank whose
                // shopper key is set by identification, not by signing), stand whoever
                // came back.
                let proof_stands_alone = matches!(
                    why,
                    Unsignable::DeletedAtBank | Unsignable::NoSigningOrderSucceeded
                );
                if link_out_now || (!proof_stands_alone && row.shopper_returned(Utc::now())) {
                    tracing::info!("the shopper came back at the horizon: not expiring");
                    polls::reschedule(
                        &mut tx,
                        p.id,
                        Some(after(ctx.settings.poller.signing_interval)),
                        0,
                    )
                    .await?;
                    tx.commit().await?;
                    return Ok("shopper_returned");
                }
                let cancel_requested = row.cancel_requested_at.is_some();
                match payments::transition(
                    &mut tx,
                    p.id,
                    Change {
                        evidence: Evidence::Unsignable {
                            why: *why,
                            cancel_requested,
                        },
                        bank_status: bank_status.as_deref(),
                        kind: "expired",
                        detail: json!({
                            "source": "poller",
                            "reason": "late_signing_horizon",
                            "proof": why.as_str(),
                        }),
                        failure: (!cancel_requested).then_some(*failure),
                    },
                )
                .await
                {
                    Ok(_) => Ok(false),
                    Err(payments::TransitionError::Refused(e)) => {
                        tracing::warn!(error = %e, "horizon expiry not applied");
                        Ok(true)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if applied? {
            outcome = "refused";
        }
        if let Some(current) = payments::get(&mut tx, p.id).await? {
            status = current.status();
        }
        if status != PaymentStatus::parse(&p.status).unwrap_or(status) {
            tracing::info!(from = %p.status, to = status.as_str(), "payment status changed");
        }
    }
    record_progress(&mut tx, p, status, d.remaining).await?;
    if status.is_final() {
        let was_final = PaymentStatus::parse(&p.status).is_some_and(PaymentStatus::is_final);
        // A read after the final status that was held (its bank reference refused) read
        // nothing: it is not used up, and comes back when `decide` said.
        let held = was_final && d.change.is_none() && d.outcome == BANK_REF_REFUSED;
        let next_at = after(if held {
            d.next
        } else {
            ctx.settings.poller.after_final_interval
        });
        polls::end_final_claim(&mut tx, p.id, next_at, was_final && !held).await?;
    } else {
        let next_at = next_poll(ctx, p, status, &d).map(after);
        polls::reschedule(&mut tx, p.id, next_at, d.failures).await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// How long until the next poll of `p`, now in `status`, after decision `d`; `None` once
/// final.
fn next_poll(
    ctx: &WorkerContext,
    p: &Claimed,
    status: PaymentStatus,
    d: &Decision,
) -> Option<Duration> {
    match schedule(ctx, p, status) {
        None => None,
        // After failures the backoff; with no bank answer recorded, what `decide` said.
        Some(_) if d.failures > 0 || d.outcome == NOT_INITIATED => Some(d.next),
        Some(wait) if d.next > Duration::ZERO => {
            Some(d.next.min(wait).max(Duration::from_millis(50)))
        }
        Some(wait) => Some(wait),
    }
}

/// Records a standing order's executions: one `occurrence_paid` event (and webhook) per
/// execution seen, with the count still to come. When the order ends `paid`, every
/// execution has happened even if we never read the count in between.
async fn record_progress(
    tx: &mut sqlx::PgConnection,
    p: &Claimed,
    status: PaymentStatus,
    remaining: Option<i32>,
) -> anyhow::Result<()> {
    let Some(count) = p.recurring_count else {
        return Ok(());
    };
    const UNTIL_DELETED: i32 = 9999;
    let remaining = match (status, remaining) {
        (PaymentStatus::Paid, _) if count != UNTIL_DELETED => Some(0),
        (_, r) => r,
    };
    let Some(remaining) = remaining else {
        return Ok(());
    };
    // The occurrences already recorded and notified: the ledger's word, not the row's count
    // (which an edit in SQL could set back, to notify them all again under new webhook
    // ids, or forward, to hide the next ones).
    let notified = payments::occurrences_recorded(tx, p.id).await?;
    if notified != p.recurring_executions {
        tracing::error!(
            row = p.recurring_executions,
            ledger = notified,
            "the standing order's count of executions is not its ledger's: the ledger's is followed (run `pisgate ledger verify`)"
        );
        metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
    }
    let executed_now = if count == UNTIL_DELETED {
        // The bank never counts an open-ended order down: nothing to infer.
        notified
    } else {
        (count - remaining).clamp(0, count)
    };
    if executed_now <= notified && p.recurring_remaining == Some(remaining) {
        return Ok(());
    }
    polls::set_recurring_progress(tx, p.id, remaining, executed_now.max(notified)).await?;
    // The payment as the webhooks show it, with its progress: read once for all of them.
    let after = payments::get(tx, p.id).await?;
    for n in (notified + 1)..=executed_now {
        let left = count - n;
        let seq = payments::note_seq(
            tx,
            p.id,
            "occurrence_paid",
            json!({ "occurrence": n, "remaining_count": left, "count": count }),
        )
        .await?;
        if let Some(after) = &after {
            webhooks::enqueue(
                tx,
                after,
                "payment.occurrence_paid",
                json!({ "occurrence": n, "remaining_count": left, "ledger_seq": seq }),
            )
            .await?;
        }
        tracing::info!(
            occurrence = n,
            remaining_count = left,
            "standing order executed"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing_order(rule: &str, start: &str, executions: i32) -> Claimed {
        let created_at = DateTime::parse_from_rfc3339("2027-01-10T12:00:00Z")
            .unwrap()
            .to_utc();
        Claimed {
            id: uuid::Uuid::nil(),
            merchant_id: uuid::Uuid::nil(),
            status: "authorized".into(),
            bank: "nordea".into(),
            bank_payment_id: None,
            bank_links: serde_json::json!({}),
            bank_links_mac: None,
            bank_links_mac_key_id: None,
            bank_status: Some("Confirmed".into()),
            psu_key: None,
            psu_id: None,
            state_expires_at: None,
            expires_at: None,
            sign_horizon_at: None,
            initiation: "initiated".into(),
            state_used_at: None,
            hop_opened_at: None,
            created_at,
            poll_failures: 0,
            recurring_remaining: None,
            recurring_executions: executions,
            execution_date: Some(start.into()),
            recurring_count: Some(12),
            recurrence_type: Some(rule.into()),
            due_at: created_at,
            lease_until: created_at,
            trace_parent: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn a_standing_order_is_due_on_its_execution_dates_only() {
        // Two executions seen of a monthly order from 31 January: the next is 31 March.
        let p = standing_order("MONTHLY_SAME_DAY", "2027-01-31", 2);
        assert_eq!(next_occurrence(&p), Some(at("2027-03-31T00:00:00Z")));
        assert!(!occurrence_due(&p, at("2027-03-30T23:59:59Z")));
        assert!(occurrence_due(&p, at("2027-03-31T00:00:00Z")));
        // Not a calendar rule (the sandbox's every-minute series): always worth a look.
        let p = standing_order("EVERY_MINUTE_SANDBOX_ONLY", "2027-01-31", 2);
        assert_eq!(next_occurrence(&p), None);
        assert!(occurrence_due(&p, at("2027-01-01T00:00:00Z")));
        // A payment that is not a standing order has no occurrences.
        let p = Claimed {
            recurring_count: None,
            ..standing_order("MONTHLY_SAME_DAY", "2027-01-31", 0)
        };
        assert_eq!(next_occurrence(&p), None);
    }
}
