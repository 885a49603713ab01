//! The token refresher: keeps a shopper's access token fresh while that shopper still has
//! payments in flight (details, funds checks and cancellation need it).
//!
//! Each refresh runs under the shopper's lease, the same one code exchanges take, so the
//! order in which the bank issues tokens is the order in which they are stored. Under the
//! lease the token is read again: if another replica (or a new exchange) already replaced
//! it, there is nothing to do. The new pair overwrites the old one in a single statement, so
//! the old refresh token is forgotten only once the new pair is stored. A refresh token the
//! bank refuses marks the token dead; status polling does not need it and goes on. A
//! refresh, once begun, runs to its commit even through a shutdown
//! ([`super::Finishing`]): the bank has used up the old refresh token by then, and its
//! store is retried through a database outage. A token whose refresh fails otherwise waits
//! a backoff of its own (doubling per failure, at most 15 minutes), and a failure of the
//! bank as a whole (unreachable, rate limiting) ends that round's calls to that bank, so
//! one bank's failing tokens never hold back another's.
//!
//! Never logged: tokens. Shoppers appear only as their hashed log id.

use super::{WorkerContext, stopped};
use crate::bank::BankError;
use crate::ledger::health::is_unavailable;
use crate::ledger::tokens::{self, psu_log_id};
use std::time::Duration;
use tokio::sync::watch;

/// Tokens read per batch.
const BATCH: i64 = 100;
/// Batches read per round at most (see [`refresh_due`]).
const PASSES: usize = 4;
/// A shopper whose lease is held (by a code exchange, or by another replica's refresher) is
/// left at once, not waited for: replicas walking the same list share it this way, and the
/// holder either refreshes that token or the next round does.
const LOCK_WAIT: Duration = Duration::ZERO;

/// How long a refreshed pair's store is retried while the database is unreachable (a
/// failover, a restarting pooler): the bank has used up the old refresh token, so the new
/// pair is all the shopper's token has left.
const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// The longest a token whose refreshes keep failing waits between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// A lease outlasts the refresh call it covers (one bank call, never retried).
pub fn lease_for(ctx: &WorkerContext) -> Duration {
    ctx.settings.longest_bank_call() + Duration::from_secs(10)
}

pub async fn run(ctx: WorkerContext, mut stop: watch::Receiver<bool>) {
    let cfg = ctx.settings.refresher.clone();
    tracing::info!("token refresher started");
    loop {
        match refresh_due(&ctx, &stop).await {
            Ok(n) if n > 0 => tracing::info!(refreshed = n, "refreshed shoppers' tokens"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "token refresh round failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(cfg.interval) => {}
            () = stopped(&mut stop) => break,
        }
    }
    tracing::info!("token refresher stopped");
}

/// One round: refreshes every due token. Returns how many were refreshed.
///
/// A bank that fails as a whole (see [`bank_wide`]) gets no more calls this round, and the
/// batch is read again without it, so that its due tokens never fill the batch ahead of
/// other banks' (at most [`PASSES`] reads a round).
pub async fn refresh_due(
    ctx: &WorkerContext,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<usize> {
    let within = ctx.settings.refresher.refresh_before;
    let mut refreshed = 0;
    // Banks that failed as a whole this round: their other tokens wait for the next one.
    let mut down: Vec<String> = Vec::new();
    for _ in 0..PASSES {
        let due = tokens::due_for_refresh(&ctx.pool, within, BATCH, true, &down).await?;
        let full = due.len() as i64 == BATCH;
        let down_before = down.len();
        for d in due {
            // Stop between shoppers, never in the middle of one (a refresh token is single
            // use).
            if *stop.borrow() {
                return Ok(refreshed);
            }
            if down.contains(&d.bank) {
                continue;
            }
            // To its end even if this worker is stopped meanwhile: once the bank is asked,
            // the refresh token is used up, and only the stored answer keeps the shopper's
            // token.
            let work = {
                let (ctx, d) = (ctx.clone(), d.clone());
                async move { refresh_one(&ctx, &d).await }
            };
            match ctx.finishing.run(work).await.and_then(|done| done) {
                Ok(outcome) => {
                    metrics::counter!("pisgate_token_refreshes_total", "outcome" => outcome)
                        .increment(1);
                    if outcome == "refreshed" {
                        refreshed += 1;
                    }
                    if outcome == "bank_failed" {
                        tracing::warn!(bank = %d.bank, "the bank failed a refresh; its other tokens wait for the next round");
                        down.push(d.bank.clone());
                    }
                }
                Err(e) => {
                    metrics::counter!("pisgate_token_refreshes_total", "outcome" => "error")
                        .increment(1);
                    tracing::warn!(psu = %psu_log_id(&d.bank, &d.psu_key), error = %e, "token refresh failed; retried next round");
                }
            }
        }
        // Read again only when a full batch left tokens of other banks behind a bank that
        // went down meanwhile.
        if !full || down.len() == down_before {
            break;
        }
    }
    Ok(refreshed)
}

async fn refresh_one(ctx: &WorkerContext, d: &tokens::DueToken) -> anyhow::Result<&'static str> {
    let psu = psu_log_id(&d.bank, &d.psu_key);
    let Some(lock) =
        tokens::lease_psu(&ctx.pool, &d.bank, &d.psu_key, lease_for(ctx), LOCK_WAIT).await?
    else {
        return Ok("busy");
    };
    // Read again under the lock: an exchange or another replica may have replaced it.
    let current = tokens::load(&ctx.pool, &ctx.cipher, &d.bank, &d.psu_key).await?;
    let Some(current) = current.filter(|t| t.issue_seq == d.issue_seq) else {
        lock.release().await;
        return Ok("superseded");
    };
    let Some(refresh_token) = current.refresh_token.as_ref() else {
        lock.release().await;
        return Ok("not_refreshable");
    };
    let seq = tokens::next_issue_seq(&mut *ctx.pool.read_conn().await?).await?;
    let outcome = match ctx.banks.client(&d.bank).refresh(refresh_token).await {
        Ok(set) => {
            let stored = store_refreshed(ctx, d, &lock, seq, &set).await?;
            tracing::info!(psu = %psu, stored, "shopper token refreshed");
            if stored { "refreshed" } else { "superseded" }
        }
        Err(BankError::TokenRejected) => {
            tokens::mark_dead(
                &ctx.pool,
                &d.bank,
                &d.psu_key,
                d.issue_seq,
                "refresh refused",
            )
            .await?;
            tracing::warn!(psu = %psu, "the bank refused the refresh token; token marked dead");
            "rejected"
        }
        Err(e) => {
            lock.release().await;
            // This token waits out a backoff of its own, so that failing tokens never fill
            // a round's batch; a failure of the bank itself also ends this round's calls to
            // that bank (see [`refresh_due`]).
            let failures = tokens::refresh_failed(
                &ctx.pool,
                &d.bank,
                &d.psu_key,
                d.issue_seq,
                ctx.settings.refresher.interval.max(Duration::from_secs(1)),
                MAX_BACKOFF,
            )
            .await?;
            tracing::warn!(psu = %psu, error = %e, kind = e.kind(), failures, "token refresh failed; backing off");
            return Ok(if bank_wide(&e) {
                "bank_failed"
            } else {
                "failed"
            });
        }
    };
    lock.release().await;
    Ok(outcome)
}

/// Whether a refresh's failure is the bank's (unreachable, rate limiting, refusing our
/// credentials, signature or clock), so every other token of that bank would fail the same
/// way this round; not the one token's.
fn bank_wide(e: &BankError) -> bool {
    matches!(
        e,
        BankError::Unavailable { .. }
            | BankError::RateLimited { .. }
            | BankError::BadCredentials { .. }
            | BankError::BadSignature { .. }
            | BankError::ClockRejected { .. }
    )
}

/// Stores a refreshed pair ([`tokens::store`], in a transaction of its own: a read_conn is
/// rolled back behind a transaction pooler). Retried with backoff (200 ms doubling to 2 s)
/// while the database is unreachable, for up to [`STORE_PATIENCE`]: a pair the bank issued
/// and pisgate failed to keep is the shopper's token lost. The shopper's lease is renewed
/// before each retry; the store keeps only the newest pair (by issue time or issue
/// sequence) whoever stores last.
async fn store_refreshed(
    ctx: &WorkerContext,
    d: &tokens::DueToken,
    lock: &tokens::PsuLease,
    seq: i64,
    set: &crate::bank::TokenSet,
) -> anyhow::Result<bool> {
    let expires_at = tokens::expires_at(set.expires_in);
    let give_up = tokio::time::Instant::now() + STORE_PATIENCE;
    let mut wait = Duration::from_millis(200);
    loop {
        let attempt = async {
            let mut tx = ctx.pool.begin().await?;
            let stored = tokens::store(
                &mut tx,
                &ctx.cipher,
                &d.bank,
                &d.psu_key,
                seq,
                set.issued_at,
                &set.access_token,
                set.refresh_token.as_ref(),
                expires_at,
            )
            .await?;
            tx.commit().await?;
            Ok::<_, tokens::TokenError>(stored)
        }
        .await;
        match attempt {
            Ok(stored) => return Ok(stored),
            Err(tokens::TokenError::Database(e))
                if is_unavailable(&e) && tokio::time::Instant::now() + wait < give_up =>
            {
                metrics::counter!("pisgate_token_refreshes_total", "outcome" => "store_retried")
                    .increment(1);
                tracing::warn!(
                    psu = %psu_log_id(&d.bank, &d.psu_key),
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "the database is unreachable while storing a refreshed token; retrying"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
                // The shopper's lease is renewed first, so that no other replica's round
                // takes the token meanwhile and refreshes with the used-up refresh token (a
                // bank may revoke the whole grant on a reused one). A failed renewal (the
                // database still away) is the next store's failure too.
                match lock.renew(lease_for(ctx)).await {
                    Ok(true) | Err(_) => {}
                    Ok(false) => tracing::warn!(
                        psu = %psu_log_id(&d.bank, &d.psu_key),
                        "the shopper's lease was taken while the database was away; storing the newer pair anyway"
                    ),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
