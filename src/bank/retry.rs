//! What every bank adapter's HTTP calls share.

use super::BankError;
use crate::bank::nordea::RetryPolicy;

/// Runs `attempt` (numbered from 1) once, or, for a read, until it is not `Unavailable` or
/// `retries.max_attempts` are spent, pausing with the jittered backoff in between. Every bank
/// adapter sends through it: only reads are ever repeated.
pub(crate) async fn with_read_retries<T, F, Fut>(
    retries: &RetryPolicy,
    bank_id: &str,
    read: bool,
    mut attempt: F,
) -> Result<T, BankError>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, BankError>>,
{
    let attempts = if read { retries.max_attempts.max(1) } else { 1 };
    let mut n = 1;
    loop {
        match attempt(n).await {
            Err(BankError::Unavailable { detail, .. }) if n < attempts => {
                let pause = retries.backoff(n);
                tracing::warn!(
                    bank = %bank_id,
                    attempt = n,
                    pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                    %detail,
                    "bank unavailable; retrying the read"
                );
                tokio::time::sleep(pause).await;
                n += 1;
            }
            other => return other,
        }
    }
}
