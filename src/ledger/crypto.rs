//! Encryption of shoppers' bank tokens and merchants' webhook signing secrets at rest.
//!
//! AES-256-GCM (RustCrypto `aes-gcm`). Each key is 32 random bytes given as base64 text
//! (`openssl rand -base64 32`) and has a short public id that is stored beside every
//! ciphertext, so keys can be rotated: [`TokenCipher`] encrypts with its current key and
//! decrypts with the current key or any previous key it was given. Re-encrypting old rows is
//! not needed for rotation; a row moves to the new key the next time its token is stored.
//!
//! Sealed layout: `nonce (12 random bytes) || ciphertext || tag (16 bytes)`. A random 96-bit
//! nonce per encryption is safe for well below 2^32 encryptions per key; rotate long before.
//!
//! The additional authenticated data binds a ciphertext to its place: bank, shopper key,
//! which field (access or refresh token) and the token's issue sequence number. A ciphertext
//! copied to another shopper's row, to the other field, or back into a row issued later fails
//! to decrypt instead of handing out the wrong shopper's token. Webhook signing secrets use
//! the same keys under their own AAD domain, bound to merchant and endpoint
//! ([`WebhookSecretAad`]).
//!
//! A webhook secret is sealed once, when its endpoint is created or its secret rotated, and
//! never re-sealed: keep a retired key among the previous keys for as long as endpoints
//! sealed with it exist.
//!
//! This module must never print, log or return in an error a key, a plaintext token or a
//! webhook secret: keys live only inside the cipher (its `Debug` shows key ids), tokens and
//! secrets are `SecretString`.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use base64::Engine as _;
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::fmt;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const AAD_DOMAIN: &str = "pisgate/psu_token/v1";
const WEBHOOK_AAD_DOMAIN: &str = "pisgate/webhook_secret/v1";

/// Why a key could not be loaded. Never contains key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "token encryption key {key_id:?} is not valid base64 (expected base64 of 32 random bytes, e.g. `openssl rand -base64 32`)"
    )]
    NotBase64 { key_id: String },
    #[error(
        "token encryption key {key_id:?} is {len} bytes long; AES-256 needs exactly 32 bytes (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)"
    )]
    WrongLength { key_id: String, len: usize },
    #[error(
        "token encryption key id {0:?} is invalid: use 1 to 64 characters of A-Z a-z 0-9 . _ -"
    )]
    BadKeyId(String),
    #[error("token encryption key id {0:?} is given twice")]
    DuplicateKeyId(String),
}

/// Why a token could not be sealed or opened. Never contains a token or a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error(
        "the token was encrypted with key id {0:?}, which is not configured (neither the current nor a previous key)"
    )]
    UnknownKeyId(String),
    #[error("the sealed token is too short to be AES-256-GCM output")]
    Truncated,
    #[error(
        "the sealed token failed authentication (tampered, wrong key, or copied from another row or field)"
    )]
    Authentication,
    #[error("the decrypted token is not UTF-8")]
    NotUtf8,
    #[error("encryption failed")]
    Encrypt,
}

/// Which of a row's tokens a ciphertext belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenField {
    Access,
    Refresh,
}

impl TokenField {
    fn as_str(self) -> &'static str {
        match self {
            TokenField::Access => "access_token",
            TokenField::Refresh => "refresh_token",
        }
    }
}

/// Where a ciphertext lives; authenticated but not encrypted.
#[derive(Clone, Copy)]
pub struct TokenAad<'a> {
    pub bank: &'a str,
    pub psu_key: &'a str,
    pub field: TokenField,
    pub issue_seq: i64,
}

impl TokenAad<'_> {
    /// Length-prefixed, so no two different places share AAD bytes.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.bank.len() + self.psu_key.len());
        for part in [AAD_DOMAIN, self.bank, self.psu_key, self.field.as_str()] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(&self.issue_seq.to_be_bytes());
        out
    }
}

/// Where a merchant's webhook signing secret lives: its endpoint and merchant. A different
/// domain string from [`TokenAad`]'s, so a shopper token's ciphertext never opens as a
/// webhook secret (or the other way round), nor one endpoint's secret as another's.
#[derive(Clone, Copy)]
pub struct WebhookSecretAad {
    pub merchant_id: uuid::Uuid,
    pub endpoint_id: uuid::Uuid,
}

impl WebhookSecretAad {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + WEBHOOK_AAD_DOMAIN.len() + 32);
        out.extend_from_slice(&(WEBHOOK_AAD_DOMAIN.len() as u32).to_be_bytes());
        out.extend_from_slice(WEBHOOK_AAD_DOMAIN.as_bytes());
        out.extend_from_slice(self.merchant_id.as_bytes());
        out.extend_from_slice(self.endpoint_id.as_bytes());
        out
    }
}

/// A sealed token and the id of the key that sealed it (store both).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// AES-256-GCM with a current key and previous keys kept for decryption.
#[derive(Clone)]
pub struct TokenCipher {
    current_id: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous: Vec<&str> = self
            .keys
            .keys()
            .map(String::as_str)
            .filter(|id| *id != self.current_id)
            .collect();
        previous.sort_unstable();
        f.debug_struct("TokenCipher")
            .field("current_key_id", &self.current_id)
            .field("previous_key_ids", &previous)
            .finish_non_exhaustive()
    }
}

fn check_key_id(key_id: &str) -> Result<(), KeyError> {
    let ok = (1..=64).contains(&key_id.len())
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadKeyId(key_id.to_owned()))
    }
}

fn parse_key(key_id: &str, key_base64: &SecretString) -> Result<Aes256Gcm, KeyError> {
    check_key_id(key_id)?;
    let text = key_base64.expose_secret().trim();
    let mut raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
        .map_err(|_| KeyError::NotBase64 {
            key_id: key_id.to_owned(),
        })?;
    let result = if raw.len() == KEY_LEN {
        Aes256Gcm::new_from_slice(&raw).map_err(|_| KeyError::WrongLength {
            key_id: key_id.to_owned(),
            len: raw.len(),
        })
    } else {
        Err(KeyError::WrongLength {
            key_id: key_id.to_owned(),
            len: raw.len(),
        })
    };
    raw.zeroize();
    result
}

impl TokenCipher {
    /// A cipher that encrypts with this key. `key_base64` is base64 (standard or URL-safe,
    /// padded) of exactly 32 bytes.
    pub fn from_base64(key_id: &str, key_base64: &SecretString) -> Result<TokenCipher, KeyError> {
        let key = parse_key(key_id, key_base64)?;
        Ok(TokenCipher {
            current_id: key_id.to_owned(),
            keys: HashMap::from([(key_id.to_owned(), key)]),
        })
    }

    /// Adds a retired key that is still accepted for decryption.
    pub fn with_previous_key(
        mut self,
        key_id: &str,
        key_base64: &SecretString,
    ) -> Result<TokenCipher, KeyError> {
        let key = parse_key(key_id, key_base64)?;
        if self.keys.contains_key(key_id) {
            return Err(KeyError::DuplicateKeyId(key_id.to_owned()));
        }
        self.keys.insert(key_id.to_owned(), key);
        Ok(self)
    }

    /// Fresh random key material as base64, for `keys`-style tooling and tests.
    pub fn generate_key_base64() -> SecretString {
        let key = Aes256Gcm::generate_key(OsRng);
        let text = base64::engine::general_purpose::STANDARD.encode(key);
        SecretString::from(text)
    }

    /// The id of the key new ciphertexts are sealed with.
    pub fn current_key_id(&self) -> &str {
        &self.current_id
    }

    pub fn encrypt(
        &self,
        plaintext: &SecretString,
        aad: &TokenAad<'_>,
    ) -> Result<Sealed, CryptoError> {
        self.seal(plaintext, &aad.encode())
    }

    pub fn decrypt(
        &self,
        key_id: &str,
        sealed: &[u8],
        aad: &TokenAad<'_>,
    ) -> Result<SecretString, CryptoError> {
        self.open(key_id, sealed, &aad.encode())
    }

    /// Seals a merchant's webhook signing secret, bound to its endpoint.
    pub fn encrypt_webhook_secret(
        &self,
        secret: &SecretString,
        aad: &WebhookSecretAad,
    ) -> Result<Sealed, CryptoError> {
        self.seal(secret, &aad.encode())
    }

    /// Opens a webhook signing secret sealed by [`TokenCipher::encrypt_webhook_secret`].
    pub fn decrypt_webhook_secret(
        &self,
        key_id: &str,
        sealed: &[u8],
        aad: &WebhookSecretAad,
    ) -> Result<SecretString, CryptoError> {
        self.open(key_id, sealed, &aad.encode())
    }

    fn seal(&self, plaintext: &SecretString, aad: &[u8]) -> Result<Sealed, CryptoError> {
        let cipher = &self.keys[&self.current_id];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.expose_secret().as_bytes(),
                    aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        Ok(Sealed {
            key_id: self.current_id.clone(),
            bytes,
        })
    }

    fn open(&self, key_id: &str, sealed: &[u8], aad: &[u8]) -> Result<SecretString, CryptoError> {
        let cipher = self
            .keys
            .get(key_id)
            .ok_or_else(|| CryptoError::UnknownKeyId(key_id.to_owned()))?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Truncated);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Truncated)?;
        let mut plain = cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Authentication)?;
        // Copy into an exactly sized string so no unzeroed spare capacity is left behind.
        let result = std::str::from_utf8(&plain)
            .map(|s| SecretString::from(s.to_owned()))
            .map_err(|_| CryptoError::NotUtf8);
        plain.zeroize();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aad(field: TokenField) -> TokenAad<'static> {
        TokenAad {
            bank: "nordea",
            psu_key: "shopper-1",
            field,
            issue_seq: 7,
        }
    }

    fn cipher(id: &str) -> (TokenCipher, SecretString) {
        let key = TokenCipher::generate_key_base64();
        (TokenCipher::from_base64(id, &key).unwrap(), key)
    }

    fn token(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn a_token_round_trips() {
        let (c, _) = cipher("k1");
        let sealed = c
            .encrypt(&token("access-abc"), &aad(TokenField::Access))
            .unwrap();
        assert_eq!(sealed.key_id, "k1");
        assert_eq!(sealed.bytes.len(), NONCE_LEN + "access-abc".len() + TAG_LEN);
        let opened = c
            .decrypt("k1", &sealed.bytes, &aad(TokenField::Access))
            .unwrap();
        assert_eq!(opened.expose_secret(), "access-abc");
    }

    #[test]
    fn the_same_token_encrypts_differently_each_time() {
        let (c, _) = cipher("k1");
        let a = c.encrypt(&token("t"), &aad(TokenField::Access)).unwrap();
        let b = c.encrypt(&token("t"), &aad(TokenField::Access)).unwrap();
        assert_ne!(a.bytes, b.bytes, "fresh nonce per encryption");
    }

    #[test]
    fn a_tampered_byte_fails_to_decrypt() {
        let (c, _) = cipher("k1");
        let sealed = c
            .encrypt(&token("secret"), &aad(TokenField::Access))
            .unwrap();
        for i in 0..sealed.bytes.len() {
            let mut bytes = sealed.bytes.clone();
            bytes[i] ^= 0x01;
            assert_eq!(
                c.decrypt("k1", &bytes, &aad(TokenField::Access))
                    .unwrap_err(),
                CryptoError::Authentication,
                "byte {i}"
            );
        }
        assert_eq!(
            c.decrypt("k1", &sealed.bytes[..20], &aad(TokenField::Access))
                .unwrap_err(),
            CryptoError::Truncated
        );
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_or_field_fails_to_decrypt() {
        let (c, _) = cipher("k1");
        let sealed = c
            .encrypt(&token("secret"), &aad(TokenField::Access))
            .unwrap();
        let other_field = aad(TokenField::Refresh);
        let other_psu = TokenAad {
            psu_key: "shopper-2",
            ..aad(TokenField::Access)
        };
        let other_bank = TokenAad {
            bank: "other",
            ..aad(TokenField::Access)
        };
        let other_issue = TokenAad {
            issue_seq: 8,
            ..aad(TokenField::Access)
        };
        // Without length prefixes these two would share AAD bytes.
        let shifted = TokenAad {
            bank: "nordeashopper-1",
            psu_key: "",
            ..aad(TokenField::Access)
        };
        for wrong in [other_field, other_psu, other_bank, other_issue, shifted] {
            assert_eq!(
                c.decrypt("k1", &sealed.bytes, &wrong).unwrap_err(),
                CryptoError::Authentication
            );
        }
    }

    #[test]
    fn a_webhook_secret_round_trips_and_is_bound_to_its_endpoint() {
        let (c, _) = cipher("k1");
        let merchant_id = uuid::Uuid::new_v4();
        let endpoint_id = uuid::Uuid::new_v4();
        let place = WebhookSecretAad {
            merchant_id,
            endpoint_id,
        };
        let sealed = c
            .encrypt_webhook_secret(&token("whsec_abc"), &place)
            .unwrap();
        let opened = c
            .decrypt_webhook_secret("k1", &sealed.bytes, &place)
            .unwrap();
        assert_eq!(opened.expose_secret(), "whsec_abc");
        let other_endpoint = WebhookSecretAad {
            endpoint_id: uuid::Uuid::new_v4(),
            ..place
        };
        let other_merchant = WebhookSecretAad {
            merchant_id: uuid::Uuid::new_v4(),
            ..place
        };
        for wrong in [other_endpoint, other_merchant] {
            assert_eq!(
                c.decrypt_webhook_secret("k1", &sealed.bytes, &wrong)
                    .unwrap_err(),
                CryptoError::Authentication
            );
        }
    }

    #[test]
    fn a_token_ciphertext_never_opens_as_a_webhook_secret_nor_the_reverse() {
        let (c, _) = cipher("k1");
        let place = WebhookSecretAad {
            merchant_id: uuid::Uuid::nil(),
            endpoint_id: uuid::Uuid::nil(),
        };
        let token_sealed = c
            .encrypt(&token("access"), &aad(TokenField::Access))
            .unwrap();
        assert_eq!(
            c.decrypt_webhook_secret("k1", &token_sealed.bytes, &place)
                .unwrap_err(),
            CryptoError::Authentication
        );
        let secret_sealed = c.encrypt_webhook_secret(&token("whsec_x"), &place).unwrap();
        assert_eq!(
            c.decrypt("k1", &secret_sealed.bytes, &aad(TokenField::Access))
                .unwrap_err(),
            CryptoError::Authentication
        );
    }

    #[test]
    fn an_old_key_id_still_decrypts_after_rotation() {
        let (old, old_key) = cipher("2026-01");
        let sealed = old
            .encrypt(&token("before-rotation"), &aad(TokenField::Refresh))
            .unwrap();

        let new_key = TokenCipher::generate_key_base64();
        let rotated = TokenCipher::from_base64("2026-06", &new_key)
            .unwrap()
            .with_previous_key("2026-01", &old_key)
            .unwrap();
        assert_eq!(rotated.current_key_id(), "2026-06");
        let opened = rotated
            .decrypt(&sealed.key_id, &sealed.bytes, &aad(TokenField::Refresh))
            .unwrap();
        assert_eq!(opened.expose_secret(), "before-rotation");
        let resealed = rotated.encrypt(&opened, &aad(TokenField::Refresh)).unwrap();
        assert_eq!(resealed.key_id, "2026-06");
        // The old key under the new id does not open it.
        assert_eq!(
            rotated
                .decrypt("2026-06", &sealed.bytes, &aad(TokenField::Refresh))
                .unwrap_err(),
            CryptoError::Authentication
        );
    }

    #[test]
    fn an_unknown_key_id_is_a_clear_error() {
        let (c, _) = cipher("k1");
        let sealed = c.encrypt(&token("t"), &aad(TokenField::Access)).unwrap();
        let err = c
            .decrypt("k0", &sealed.bytes, &aad(TokenField::Access))
            .unwrap_err();
        assert_eq!(err, CryptoError::UnknownKeyId("k0".into()));
        assert!(err.to_string().contains("\"k0\""), "{err}");
        assert!(err.to_string().contains("not configured"), "{err}");
    }

    #[test]
    fn keys_of_the_wrong_length_or_encoding_are_refused() {
        let short = SecretString::from(base64::engine::general_purpose::STANDARD.encode([7u8; 16]));
        let err = TokenCipher::from_base64("k1", &short).unwrap_err();
        assert_eq!(
            err,
            KeyError::WrongLength {
                key_id: "k1".into(),
                len: 16
            }
        );
        assert!(err.to_string().contains("exactly 32 bytes"), "{err}");
        let long = SecretString::from(base64::engine::general_purpose::STANDARD.encode([7u8; 33]));
        assert!(matches!(
            TokenCipher::from_base64("k1", &long),
            Err(KeyError::WrongLength { len: 33, .. })
        ));
        let garbage = SecretString::from("not base64 at all!".to_owned());
        assert!(matches!(
            TokenCipher::from_base64("k1", &garbage),
            Err(KeyError::NotBase64 { .. })
        ));
        let ok = TokenCipher::generate_key_base64();
        assert!(matches!(
            TokenCipher::from_base64("", &ok),
            Err(KeyError::BadKeyId(_))
        ));
        assert!(matches!(
            TokenCipher::from_base64("k 1", &ok),
            Err(KeyError::BadKeyId(_))
        ));
        assert_eq!(
            TokenCipher::from_base64("k1", &ok)
                .unwrap()
                .with_previous_key("k1", &ok)
                .unwrap_err(),
            KeyError::DuplicateKeyId("k1".into())
        );
    }

    #[test]
    fn debug_output_shows_key_ids_but_no_key_material() {
        let key = TokenCipher::generate_key_base64();
        let c = TokenCipher::from_base64("current", &key)
            .unwrap()
            .with_previous_key("old", &TokenCipher::generate_key_base64())
            .unwrap();
        let printed = format!("{c:?}");
        assert!(
            printed.contains("current") && printed.contains("old"),
            "{printed}"
        );
        assert!(!printed.contains(key.expose_secret()), "{printed}");
        let sealed = c.encrypt(&token("t"), &aad(TokenField::Access)).unwrap();
        assert_eq!(
            format!("{sealed:?}"),
            r#"Sealed { key_id: "current", len: 29 }"#
        );
    }
}
