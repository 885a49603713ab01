//! Work that must reach its commit once begun, through a shutdown.

use std::time::Duration;

/// Work that must run to its end once begun, whatever happens to whoever began it: a token
/// refresh uses up the shopper's single-use refresh token at the bank, so the pair the bank
/// answers with must be stored, or the shopper's token is lost. [`Finishing::run`] runs it
/// as a task of its own (a worker aborted at the end of the shutdown drain does not cancel
/// it) and the shutdown waits for those tasks ([`Finishing::wait`]) before the pool closes.
#[derive(Debug, Clone, Default)]
pub struct Finishing(tokio_util::task::TaskTracker);

impl Finishing {
    /// Runs `work` to its end as a tracked task and returns its answer; refuses (before
    /// `work` begins) once the replica is stopping ([`Finishing::close`]): nothing begun
    /// then could be waited for.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> anyhow::Result<T> {
        if self.0.is_closed() {
            anyhow::bail!("the replica is stopping: not begun");
        }
        match self.0.spawn(work).await {
            Ok(answer) => Ok(answer),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only the runtime's own shutdown cancels it, and that drops this caller too.
            Err(e) => Err(anyhow::anyhow!(
                "a task that must finish was cancelled: {e}"
            )),
        }
    }

    /// How many are running now.
    pub fn running(&self) -> usize {
        self.0.len()
    }

    /// Takes no new work from now on (the HTTP drain is over).
    pub fn close(&self) {
        self.0.close();
    }

    /// Takes no new work and waits for what is running, at most `bound`; whether all of it
    /// finished.
    pub async fn wait(&self, bound: Duration) -> bool {
        self.0.close();
        tokio::time::timeout(bound, self.0.wait()).await.is_ok()
    }
}
