//! Operators' passwords: Argon2id (the `argon2` crate's defaults, a random salt each), in
//! the PHC string format. A password is never stored, logged or passed on a command line.
//! Checks in the console run on blocking threads under a small semaphore
//! ([`verify_limited`]).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::LazyLock;

/// The shortest password `pisgate operator create` accepts.
pub const MIN_LENGTH: usize = 12;

/// A hash of no one's password, checked when the email is unknown so that a sign-in takes
/// as long whether or not the account exists.
pub static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash("no one's password, only for timing").unwrap_or_default());

pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password failed: {e}"))
}

/// At most this many password checks run at once in this process (each takes a blocking
/// thread and ~19 MiB for tens of milliseconds), so a sign-in flood queues here instead of
/// starving the payment traffic of threads and memory.
pub const CONCURRENT_CHECKS: usize = 2;
static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_CHECKS);

/// [`verify`] on a blocking thread, under the process's [`CONCURRENT_CHECKS`] permits.
pub async fn verify_limited(password: &str, hash: &str) -> bool {
    let Ok(_permit) = CHECKS.acquire().await else {
        return false;
    };
    let (password, hash) = (secrecy::SecretString::from(password), hash.to_owned());
    tokio::task::spawn_blocking(move || {
        verify(secrecy::ExposeSecret::expose_secret(&password), &hash)
    })
    .await
    .unwrap_or(false)
}

pub fn verify(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_argon2id_hash_only() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!verify("anything", &DUMMY_HASH));
        assert!(
            PasswordHash::new(&DUMMY_HASH).is_ok(),
            "the dummy costs a real check"
        );
    }
}
