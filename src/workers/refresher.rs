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
//! ([`super::Finishing`]): the bank has used up the old refresh token by then.
//!
//! Never logged: tokens. Shoppers appear only as their hashed log id.

use super::{WorkerContext, stopped};
use crate::bank::BankError;
use crate::ledger::tokens::{self, psu_log_id};
use std::time::Duration;
use tokio::sync::watch;

/// Tokens refreshed per round at most.
const BATCH: i64 = 100;
/// A shopper whose lease is held (by a code exchange, or by another replica's refresher) is
/// left at once, not waited for: replicas walking the same list share it this way, and the
/// holder either refreshes that token or the next round does.
const LOCK_WAIT: Duration = Duration::ZERO;

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
pub async fn refresh_due(
    ctx: &WorkerContext,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<usize> {
    let within = ctx.settings.refresher.refresh_before;
    let mut refreshed = 0;
    for d in tokens::due_for_refresh(&ctx.pool, within, BATCH, true).await? {
        // Stop between shoppers, never in the middle of one (a refresh token is single use).
        if *stop.borrow() {
            break;
        }
        // To its end even if this worker is stopped meanwhile: once the bank is asked, the
        // refresh token is used up, and only the stored answer keeps the shopper's token.
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
            }
            Err(e) => {
                metrics::counter!("pisgate_token_refreshes_total", "outcome" => "error")
                    .increment(1);
                tracing::warn!(psu = %psu_log_id(&d.bank, &d.psu_key), error = %e, "token refresh failed; retried next round");
            }
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
            let expires_at = tokens::expires_at(set.expires_in);
            // A write: in a transaction of its own (a read_conn is rolled back behind a
            // transaction pooler).
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
            return Err(e.into());
        }
    };
    lock.release().await;
    Ok(outcome)
}
