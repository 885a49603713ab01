//! The simulator's keys and JOSE: its own RSA keys (ID tokens, signed answers) with their
//! JWKS, compact JWTs it issues, detached JWS over its answers (RFC 7515 App. F), and the
//! verification of a request object's signature with the TPP's registered certificate. It
//! must never accept `alg: none` or an HMAC algorithm, and never put a private key anywhere
//! but in memory.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rsa::RsaPrivateKey;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One RSA signing key of the simulator, with its `kid`.
pub struct SimKey {
    pub kid: String,
    encoding: EncodingKey,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl std::fmt::Debug for SimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SimKey {
    /// A fresh RSA-2048 key.
    pub fn generate(kid: impl Into<String>) -> Result<SimKey, String> {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(|e| e.to_string())?;
        SimKey::from_rsa(kid.into(), &key)
    }

    /// A key from a PEM file's text (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    pub fn from_pem(kid: impl Into<String>, pem: &str) -> Result<SimKey, String> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| "not an RSA private key in PKCS#8 or PKCS#1 PEM".to_owned())?;
        SimKey::from_rsa(kid.into(), &key)
    }

    fn from_rsa(kid: String, key: &RsaPrivateKey) -> Result<SimKey, String> {
        if key.size() * 8 < 2048 {
            return Err("the RSA key must have at least 2048 bits".into());
        }
        let der = key.to_pkcs1_der().map_err(|e| e.to_string())?;
        Ok(SimKey {
            kid,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            n: key.n().to_bytes_be(),
            e: key.e().to_bytes_be(),
        })
    }

    /// Its public JWK.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }

    /// A JWKS holding only this key.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    /// A compact RS256 JWT with `claims`.
    pub fn jwt(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("RS256 signing")
    }

    /// A detached JWS over `body` (RFC 7515 App. F): `<b64 header>..<b64 signature>`.
    pub fn detached(&self, body: &[u8]) -> String {
        let header = json!({"alg": "RS256", "kid": self.kid});
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let input = format!("{h}.{}", URL_SAFE_NO_PAD.encode(body));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, Algorithm::RS256)
            .expect("RS256 signing");
        format!("{h}..{sig}")
    }
}

/// The left half of SHA-256 of `value`, base64url (OIDC `c_hash`, `s_hash`, `at_hash`).
pub fn half_hash(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// The RSA public key (n, e) of a certificate (PEM), and its leaf DER.
pub fn certificate_rsa_key(pem: &str) -> Result<(DecodingKey, Vec<u8>), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    use x509_cert::der::{Decode as _, Encode as _};
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| "no PEM certificate".to_owned())?
        .map_err(|e| e.to_string())?;
    let cert = x509_cert::Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    use rsa::pkcs8::DecodePublicKey as _;
    let key = rsa::RsaPublicKey::from_public_key_der(&spki)
        .map_err(|_| "the certificate's key is not RSA".to_owned())?;
    Ok((
        DecodingKey::from_rsa_raw_components(&key.n().to_bytes_be(), &key.e().to_bytes_be()),
        der.as_ref().to_vec(),
    ))
}

/// Splits a compact JWS into its header (JSON), claims (JSON), signing input and signature.
pub struct Compact {
    pub header: Value,
    pub claims: Value,
    pub signing_input: String,
    pub signature: String,
}

pub fn split_compact(token: &str) -> Result<Compact, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("not a compact JWS (three dot-separated parts)".into());
    }
    let json = |p: &str, what: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| format!("the {what} is not base64url"))?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|_| format!("the {what} is not JSON"))?;
        if v.is_object() {
            Ok(v)
        } else {
            Err(format!("the {what} is not a JSON object"))
        }
    };
    Ok(Compact {
        header: json(parts[0], "header")?,
        claims: json(parts[1], "claims set")?,
        signing_input: format!("{}.{}", parts[0], parts[1]),
        signature: parts[2].to_owned(),
    })
}

/// Whether `signature` over `input` verifies with `key` under `alg` (RS256 or PS256 only).
pub fn verify_rsa(alg: &str, input: &str, signature: &str, key: &DecodingKey) -> bool {
    let alg = match alg {
        "RS256" => Algorithm::RS256,
        "PS256" => Algorithm::PS256,
        _ => return false,
    };
    jsonwebtoken::crypto::verify(signature, input.as_bytes(), key, alg).unwrap_or(false)
}
