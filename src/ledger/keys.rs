//! The ledger key ring: the HMAC-SHA256 keys that chain payment events and sign checkpoints.
//!
//! The current key (`ledger.key`, named `ledger.key_id`) signs everything new; previous keys
//! (`ledger.previous_keys`, `id:base64,id:base64`) only verify what they once signed, so a
//! rotation never rewrites history. Each event and checkpoint stores the id of its key.
//!
//! A previous key can also be *retired* (`ledger.retired_key_ids`): it still verifies the
//! history it signed (event chains, checkpoints), but no live row sealed under it (an API
//! key, a webhook endpoint's URL, a payment's bank reference, a pending webhook event, a
//! stored idempotency answer) is trusted any more: [`LedgerKeys::seal_mac`] refuses it.
//! Nor does an event signed with it after the rotation, nor a newest checkpoint signed with
//! it ([`crate::ledger::verify`], [`crate::ledger::checkpoints`]), nor a decision read from
//! one event (`events::keyed_hash_holds`). That is the end of a rotation after a key leaked,
//! once `pisgate ledger reseal`
//! ([`crate::ledger::reseal`]) has moved those rows to the current key: whoever holds the
//! old key can then forge no row pisgate acts on.
//!
//! [`crate::ledger::events::append`] is called deep inside the payment code, in many places,
//! so the ring it signs with is process-wide: `serve` [`install`]s it once at start (tests
//! install theirs the same way). Verification and checkpoints are operator actions and are
//! handed their ring explicitly. Keys never print: `Debug` shows the ids only.

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, RwLock};

/// Why a key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a ledger key must be base64 of exactly 32 bytes")]
    Malformed,
    #[error("a key id must be 1 to 64 characters without ':' or ','")]
    BadId,
    #[error("key id {0:?} is given twice with different keys")]
    Duplicate(String),
    #[error("key id {0:?} cannot be retired: it is the current key")]
    RetiringCurrent(String),
    #[error("key id {0:?} cannot be retired: it is not one of the previous keys")]
    RetiringUnknown(String),
}

/// The current signing key and the previous ones, by id, and which of those are retired.
#[derive(Clone)]
pub struct LedgerKeys {
    current: String,
    keys: BTreeMap<String, aws_lc_rs::hmac::Key>,
    raw: BTreeMap<String, [u8; 32]>,
    retired: BTreeSet<String>,
}

impl fmt::Debug for LedgerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LedgerKeys")
            .field("current", &self.current)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .field("retired", &self.retired)
            .finish()
    }
}

fn decode(key: &SecretString) -> Result<[u8; 32], KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.expose_secret().trim())
        .map_err(|_| KeyError::Malformed)?;
    bytes.try_into().map_err(|_| KeyError::Malformed)
}

fn check_id(id: &str) -> Result<(), KeyError> {
    if id.is_empty() || id.len() > 64 || id.contains([':', ',']) || id.trim() != id {
        return Err(KeyError::BadId);
    }
    Ok(())
}

impl LedgerKeys {
    /// A ring whose current key is `key` (base64 of 32 bytes) under `key_id`.
    pub fn new(key_id: &str, key: &SecretString) -> Result<LedgerKeys, KeyError> {
        check_id(key_id)?;
        let ring = LedgerKeys {
            current: key_id.to_owned(),
            keys: BTreeMap::new(),
            raw: BTreeMap::new(),
            retired: BTreeSet::new(),
        };
        ring.with_key(key_id, decode(key)?)
    }

    /// Adds a previous key, which verifies but never signs.
    pub fn with_previous_key(
        self,
        key_id: &str,
        key: &SecretString,
    ) -> Result<LedgerKeys, KeyError> {
        check_id(key_id)?;
        self.with_key(key_id, decode(key)?)
    }

    /// The current key plus `previous` as `id:base64,id:base64` (empty entries ignored).
    pub fn parse(
        key_id: &str,
        key: &SecretString,
        previous: &SecretString,
    ) -> Result<LedgerKeys, KeyError> {
        let mut ring = LedgerKeys::new(key_id, key)?;
        for entry in previous
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (id, key) = entry.split_once(':').ok_or(KeyError::BadId)?;
            ring = ring.with_previous_key(id.trim(), &SecretString::from(key.to_owned()))?;
        }
        Ok(ring)
    }

    /// Retires the previous keys named in `ids` (`id,id`, empty entries ignored): they keep
    /// verifying history, and no longer vouch for a live row ([`LedgerKeys::seal_mac`]). The
    /// current key cannot be retired, nor a key the ring does not hold.
    pub fn with_retired(mut self, ids: &str) -> Result<LedgerKeys, KeyError> {
        for id in ids.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if id == self.current {
                return Err(KeyError::RetiringCurrent(id.to_owned()));
            }
            if !self.keys.contains_key(id) {
                return Err(KeyError::RetiringUnknown(id.to_owned()));
            }
            self.retired.insert(id.to_owned());
        }
        Ok(self)
    }

    /// The same ring with no key retired: what `ledger reseal` checks the rows under a
    /// retired key with before it moves them to the current key.
    pub fn unretired(&self) -> LedgerKeys {
        LedgerKeys {
            retired: BTreeSet::new(),
            ..self.clone()
        }
    }

    /// The ids of the keys a live row may be sealed under: every key of the ring but the
    /// retired ones.
    pub fn usable_ids(&self) -> impl Iterator<Item = &str> {
        self.keys
            .keys()
            .map(String::as_str)
            .filter(|id| !self.retired.contains(*id))
    }

    /// Whether `key_id` is a retired key.
    pub fn is_retired(&self, key_id: &str) -> bool {
        self.retired.contains(key_id)
    }

    /// The ids of the retired keys.
    pub fn retired_ids(&self) -> impl Iterator<Item = &str> {
        self.retired.iter().map(String::as_str)
    }

    fn with_key(mut self, key_id: &str, bytes: [u8; 32]) -> Result<LedgerKeys, KeyError> {
        match self.raw.get(key_id) {
            Some(existing) if *existing != bytes => {
                return Err(KeyError::Duplicate(key_id.to_owned()));
            }
            Some(_) => return Ok(self),
            None => {}
        }
        self.keys.insert(
            key_id.to_owned(),
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes),
        );
        self.raw.insert(key_id.to_owned(), bytes);
        Ok(self)
    }

    /// A fresh random key as base64 (for tests and `scripts/run.sh`-like tooling).
    pub fn generate_key_base64() -> String {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// The id of the key that signs new events and checkpoints.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    pub fn knows(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// HMAC-SHA256 over the concatenated `parts` under the key `key_id`, if the ring has it.
    pub(crate) fn mac(&self, key_id: &str, parts: &[&[u8]]) -> Option<[u8; 32]> {
        let key = self.keys.get(key_id)?;
        let mut ctx = aws_lc_rs::hmac::Context::with_key(key);
        for p in parts {
            ctx.update(p);
        }
        ctx.sign().as_ref().try_into().ok()
    }

    /// [`LedgerKeys::mac`] for the MAC of a live row (a binding of
    /// [`crate::ledger::binding`]): `None` for a retired key as for an unknown one, so that
    /// no row sealed under a retired key is ever trusted again.
    pub(crate) fn seal_mac(&self, key_id: &str, parts: &[&[u8]]) -> Option<[u8; 32]> {
        if self.retired.contains(key_id) {
            return None;
        }
        self.mac(key_id, parts)
    }
}

static INSTALLED: RwLock<Option<Arc<LedgerKeys>>> = RwLock::new(None);

/// Makes `keys` the ring [`crate::ledger::events::append`] signs with in this process,
/// replacing any earlier one (`serve` installs once at start; a rotation is a restart).
pub fn install(keys: LedgerKeys) {
    let mut slot = INSTALLED.write().unwrap_or_else(|e| e.into_inner());
    *slot = Some(Arc::new(keys));
}

/// The installed ring, if any.
pub fn installed() -> Option<Arc<LedgerKeys>> {
    INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The installed ring's current key id and `mac(ring, key id)`, for a row an operator
/// writes now; `doing` names the write in the error when no ring is installed.
pub(crate) fn seal_with_current(
    doing: &str,
    mac: impl FnOnce(&LedgerKeys, &str) -> Option<[u8; 32]>,
) -> Result<(String, [u8; 32]), sqlx::Error> {
    let ring = installed().ok_or_else(|| {
        sqlx::Error::Configuration(
            format!("{doing} needs the ledger key (PISGATE__LEDGER__KEY_FILE): it seals it").into(),
        )
    })?;
    let key_id = ring.current_id().to_owned();
    let mac = mac(&ring, &key_id).ok_or_else(|| {
        sqlx::Error::Configuration("the ledger ring lacks its current key".into())
    })?;
    Ok((key_id, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn keys_are_32_bytes_of_base64_and_never_print() {
        let k = LedgerKeys::generate_key_base64();
        let ring = LedgerKeys::new("l1", &secret(&k)).unwrap();
        assert_eq!(ring.current_id(), "l1");
        assert!(!format!("{ring:?}").contains(&k));
        assert_eq!(
            LedgerKeys::new("l1", &secret("c2hvcnQ=")).unwrap_err(),
            KeyError::Malformed
        );
        assert_eq!(
            LedgerKeys::new("l:1", &secret(&k)).unwrap_err(),
            KeyError::BadId
        );
    }

    #[test]
    fn previous_keys_verify_but_the_current_one_signs() {
        let (k1, k2) = (
            LedgerKeys::generate_key_base64(),
            LedgerKeys::generate_key_base64(),
        );
        let old = LedgerKeys::new("l1", &secret(&k1)).unwrap();
        let ring = LedgerKeys::parse("l2", &secret(&k2), &secret(&format!(" l1:{k1} ,"))).unwrap();
        assert_eq!(ring.current_id(), "l2");
        assert!(ring.knows("l1") && ring.knows("l2") && !ring.knows("l3"));
        assert_eq!(ring.mac("l1", &[b"x"]), old.mac("l1", &[b"x"]));
        assert_ne!(ring.mac("l1", &[b"x"]), ring.mac("l2", &[b"x"]));
        assert_eq!(
            LedgerKeys::parse("l2", &secret(&k2), &secret(&format!("l2:{k1}"))).unwrap_err(),
            KeyError::Duplicate("l2".into())
        );
        assert_eq!(
            LedgerKeys::parse("l2", &secret(&k2), &secret("nocolon")).unwrap_err(),
            KeyError::BadId
        );
    }

    #[test]
    fn a_retired_key_verifies_history_but_vouches_for_no_live_row() {
        let (k1, k2) = (
            LedgerKeys::generate_key_base64(),
            LedgerKeys::generate_key_base64(),
        );
        let ring = LedgerKeys::parse("l2", &secret(&k2), &secret(&format!("l1:{k1}"))).unwrap();
        let retired = ring.clone().with_retired(" l1 ,").unwrap();
        assert!(retired.is_retired("l1") && !retired.is_retired("l2"));
        // History (chains, checkpoints) still verifies under it.
        assert_eq!(retired.mac("l1", &[b"x"]), ring.mac("l1", &[b"x"]));
        // A live row's MAC under it is refused; under the current key it is not.
        assert_eq!(retired.seal_mac("l1", &[b"x"]), None);
        assert_eq!(ring.seal_mac("l1", &[b"x"]), ring.mac("l1", &[b"x"]));
        assert_eq!(retired.seal_mac("l2", &[b"x"]), ring.mac("l2", &[b"x"]));
        // Resealing reads the old rows through a ring with nothing retired.
        assert_eq!(
            retired.unretired().seal_mac("l1", &[b"x"]),
            ring.mac("l1", &[b"x"])
        );
        assert!(!format!("{retired:?}").contains(&k1));
        assert_eq!(
            ring.clone().with_retired("l2").unwrap_err(),
            KeyError::RetiringCurrent("l2".into())
        );
        assert_eq!(
            ring.with_retired("l1,l3").unwrap_err(),
            KeyError::RetiringUnknown("l3".into())
        );
    }
}
