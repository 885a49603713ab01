//! The checkpoint worker: records a signed checkpoint of every payment's chain head at start
//! and then every `ledger.checkpoint_interval` ([`crate::ledger::checkpoints`]).
//!
//! Several replicas may run it: checkpoints are serialised in the database, and one more
//! checkpoint than needed costs only the heads that changed. A failed checkpoint (a refused
//! head, a database error) is logged as an error and tried again at the next interval; it
//! never stops the service. A refusal that means the ledger lost history (a head behind the
//! last checkpoint, checkpointed payments gone) also counts in
//! `pisgate_ledger_verify_failures_total`, which an alert watches.

use super::{WorkerContext, stopped};
use crate::ledger::{checkpoints, keys};
use tokio::sync::watch;

pub async fn run(ctx: WorkerContext, mut stop: watch::Receiver<bool>) {
    let Some(keys) = keys::installed() else {
        tracing::error!("no ledger key installed: the checkpoint worker does not run");
        return;
    };
    let interval = ctx.settings.ledger.checkpoint_interval;
    tracing::info!(?interval, "ledger checkpoint worker started");
    loop {
        if let Err(e) = checkpoints::create(&ctx.pool, &keys).await {
            if e.is_integrity_problem() {
                metrics::counter!("pisgate_ledger_verify_failures_total").increment(1);
            }
            tracing::error!(error = %e, "ledger checkpoint failed");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stopped(&mut stop) => break,
        }
    }
    tracing::info!("ledger checkpoint worker stopped");
}
