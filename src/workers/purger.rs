//! The idempotency purger: deletes Idempotency-Keys (and the answers kept for them) once
//! their retention (`payments.idempotency_retention`, at least 24 hours) has passed, in
//! batches so that no statement holds many rows for long. Every replica may run it: batches
//! skip rows another replica is deleting.

use super::{WorkerContext, stopped};
use crate::ledger::idempotency;
use chrono::Utc;
use tokio::sync::watch;

/// Rows deleted per statement.
pub const BATCH: i64 = 1000;

pub async fn run(ctx: WorkerContext, mut stop: watch::Receiver<bool>) {
    let interval = ctx.settings.payments.idempotency_purge_interval;
    tracing::info!("idempotency purger started");
    loop {
        match purge(&ctx, &stop).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency keys purged"),
            Err(e) => {
                tracing::warn!(error = %e, "purging idempotency keys failed; retried next round")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stopped(&mut stop) => break,
        }
    }
    tracing::info!("idempotency purger stopped");
}

/// One round: batches until nothing expired is left (or the replica stops).
pub async fn purge(ctx: &WorkerContext, stop: &watch::Receiver<bool>) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = idempotency::purge_expired(&ctx.pool, Utc::now(), BATCH).await?;
        total += n;
        metrics::counter!("pisgate_idempotency_keys_purged_total").increment(n);
        if n < BATCH as u64 || *stop.borrow() {
            return Ok(total);
        }
    }
}
