//! Nordea request signing: the digest, the signing string, the `Signature` header, and the
//! RSA keys behind them (reading, size checks, generation, verification).
//!
//! The format follows `nordea-pis.md` (draft-cavage HTTP Signatures, version 10):
//! - `Digest: sha-256=<base64(SHA-256(exact body bytes))>`;
//! - the signing string is one `name: value` line per signed header, joined by `\n`, with
//!   no trailing newline; `(request-target)` is the lower-case method, a space and the path
//!   with its query string; the host is lower case; the date is an RFC 7231 IMF-fixdate;
//! - a request with a body also signs `content-type` and `digest`; a request without one
//!   signs only the first three. The bulk DELETE has a body, but how Nordea wants it signed
//!   is not published consistently ([`DeleteSigning`]): Nordea's eIDAS article and its
//!   current personal Postman script sign it with the three base headers and no `Digest`;
//!   older scripts sign `content-type digest` whenever there is a body. It is a setting;
//! - form bodies are sent as Nordea's *normalized string* ([`form_body`]): keys in
//!   alphabetical order, values unencoded but for the characters that would break the form,
//!   because Nordea's signing script digests that string, not a percent-encoded one;
//! - `Signature: keyId="<client id>",algorithm="rsa-sha256",headers="…",signature="…"`.
//!
//! Who does what with keys (see design.md, "Signing key decision"): private-key signing is
//! done by aws-lc-rs (constant time). The `rsa` crate only reads keys (PEM PKCS#1, PEM
//! PKCS#8, or a bare base64 body), checks their size, generates keys and verifies
//! signatures; it never signs in production code, because of RUSTSEC-2023-0071.
//!
//! This module must never log, print or put into an error any key material, and never sign
//! with a key under 2048 bits.

use crate::bank::http_signature;
use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::{Signature as RsaSignature, VerifyingKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{RsaPrivateKey, RsaPublicKey};
use secrecy::SecretString;
use sha2::Sha256;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The smallest key Nordea accepts, and so do we.
pub const MIN_KEY_BITS: usize = 2048;
/// Larger keys are refused as a configuration mistake (and would make every call slow).
pub const MAX_KEY_BITS: usize = 8192;

/// The signed header list of a request without a body.
pub const HEADERS_WITHOUT_BODY: &str =
    "(request-target) x-nordea-originating-host x-nordea-originating-date";
/// The signed header list of a request with a body.
pub const HEADERS_WITH_BODY: &str =
    "(request-target) x-nordea-originating-host x-nordea-originating-date content-type digest";

/// Why a key could not be read, made, stored or used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "not a readable RSA private key: expected PEM (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`) or a bare base64 body"
    )]
    Unreadable,
    #[error("not a readable RSA public key: expected PEM `PUBLIC KEY` (SubjectPublicKeyInfo)")]
    UnreadablePublic,
    #[error("encrypted private keys are not supported: store the key unencrypted in a secret")]
    Encrypted,
    #[error("the RSA key has {bits} bits; Nordea needs at least {MIN_KEY_BITS}")]
    TooSmall { bits: usize },
    #[error("the RSA key has {bits} bits; at most {MAX_KEY_BITS} are supported")]
    TooLarge { bits: usize },
    #[error("the crypto library refused the RSA key")]
    Rejected,
    #[error("RSA key generation failed")]
    Generation,
    #[error("signing failed")]
    SigningFailed,
    #[error("{path} already exists; refusing to overwrite a key")]
    AlreadyExists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A private RSA key ready to sign with aws-lc-rs. `Debug` shows only its size.
pub struct SigningKey {
    pair: RsaKeyPair,
    public: RsaPublicKey,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a private key as the Nordea portal hands it out: PEM PKCS#1, PEM PKCS#8, or a
    /// bare base64 body without BEGIN/END lines (PKCS#8 or PKCS#1 inside).
    pub fn from_text(text: &str) -> Result<SigningKey, KeyError> {
        SigningKey::from_rsa(parse_private_key(text)?)
    }

    pub fn from_file(path: &Path) -> Result<SigningKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        SigningKey::from_text(&text)
    }

    fn from_rsa(key: RsaPrivateKey) -> Result<SigningKey, KeyError> {
        check_size(key.n().bits())?;
        let der = key.to_pkcs8_der().map_err(|_| KeyError::Rejected)?;
        let pair = RsaKeyPair::from_pkcs8(der.as_bytes()).map_err(|_| KeyError::Rejected)?;
        Ok(SigningKey {
            pair,
            public: key.to_public_key(),
            rng: SystemRandom::new(),
        })
    }

    pub fn bits(&self) -> usize {
        self.public.n().bits()
    }

    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message` (deterministic), by aws-lc-rs.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
            .map_err(|_| KeyError::SigningFailed)?;
        Ok(signature)
    }
}

fn check_size(bits: usize) -> Result<(), KeyError> {
    if bits < MIN_KEY_BITS {
        return Err(KeyError::TooSmall { bits });
    }
    if bits > MAX_KEY_BITS {
        return Err(KeyError::TooLarge { bits });
    }
    Ok(())
}

/// Parses an RSA private key with the `rsa` crate (PEM PKCS#1, PEM PKCS#8, bare base64).
/// Size is not checked here; [`SigningKey::from_text`] does.
pub fn parse_private_key(text: &str) -> Result<RsaPrivateKey, KeyError> {
    let text = text.trim().replace("\r\n", "\n");
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(KeyError::Encrypted);
    }
    if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        return RsaPrivateKey::from_pkcs1_pem(&text).map_err(|_| KeyError::Unreadable);
    }
    if text.contains("-----BEGIN PRIVATE KEY-----") {
        return RsaPrivateKey::from_pkcs8_pem(&text).map_err(|_| KeyError::Unreadable);
    }
    if text.contains("-----") {
        return Err(KeyError::Unreadable);
    }
    let body: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let der = B64.decode(body).map_err(|_| KeyError::Unreadable)?;
    RsaPrivateKey::from_pkcs8_der(&der)
        .or_else(|_| RsaPrivateKey::from_pkcs1_der(&der))
        .map_err(|_| KeyError::Unreadable)
}

/// Parses a PEM SubjectPublicKeyInfo (`PUBLIC KEY`) RSA public key.
pub fn parse_public_key(text: &str) -> Result<RsaPublicKey, KeyError> {
    let text = text.trim().replace("\r\n", "\n");
    RsaPublicKey::from_public_key_pem(&text).map_err(|_| KeyError::UnreadablePublic)
}

/// Verifies a base64 RSASSA-PKCS1-v1_5 SHA-256 signature over `message` (the `rsa` crate:
/// verification involves no secret, so RUSTSEC-2023-0071 does not apply).
pub fn verify(public: &RsaPublicKey, message: &[u8], signature_b64: &str) -> bool {
    let Ok(raw) = B64.decode(signature_b64) else {
        return false;
    };
    let Ok(signature) = RsaSignature::try_from(raw.as_slice()) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(public.clone())
        .verify(message, &signature)
        .is_ok()
}

/// A freshly generated key pair as PEM text.
pub struct GeneratedKeyPair {
    /// PKCS#8 `PRIVATE KEY` PEM.
    pub private_pem: SecretString,
    /// SubjectPublicKeyInfo `PUBLIC KEY` PEM, to register with the bank.
    pub public_pem: String,
}

impl fmt::Debug for GeneratedKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKeyPair")
            .field("public_pem", &self.public_pem)
            .finish_non_exhaustive()
    }
}

/// Generates an RSA key pair of `bits` bits (at least 2048) with the operating system's
/// random source.
pub fn generate_key_pair(bits: usize) -> Result<GeneratedKeyPair, KeyError> {
    check_size(bits)?;
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).map_err(|_| KeyError::Generation)?;
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| KeyError::Generation)?;
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|_| KeyError::Generation)?;
    Ok(GeneratedKeyPair {
        private_pem: SecretString::from(private_pem.as_str()),
        public_pem,
    })
}

/// Generates a key pair and writes `private.pem` (mode 0600) and `public.pem` into `dir`,
/// creating `dir` if needed. Never overwrites an existing key file. Returns both paths.
pub fn write_key_pair(dir: &Path, bits: usize) -> Result<(PathBuf, PathBuf), KeyError> {
    use secrecy::ExposeSecret as _;

    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    let private_path = dir.join("private.pem");
    let public_path = dir.join("public.pem");
    for path in [&private_path, &public_path] {
        if path.exists() {
            return Err(KeyError::AlreadyExists { path: path.clone() });
        }
    }
    let pair = generate_key_pair(bits)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_new_file(
        &private_path,
        pair.private_pem.expose_secret().as_bytes(),
        0o600,
    )?;
    write_new_file(&public_path, pair.public_pem.as_bytes(), 0o644)?;
    Ok((private_path, public_path))
}

pub(crate) fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::io::Write as _;

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let to_error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::AlreadyExists {
                path: path.to_owned(),
            }
        } else {
            KeyError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };
    let mut file = options.open(path).map_err(to_error)?;
    file.write_all(contents).map_err(to_error)?;
    file.sync_all().map_err(to_error)
}

/// `sha-256=<base64(SHA-256(body))>`, the `Digest` header value.
pub fn digest_header(body: &[u8]) -> String {
    format!(
        "sha-256={}",
        B64.encode(digest::digest(&digest::SHA256, body))
    )
}

/// The `X-Nordea-Originating-Date` value for `at`: an RFC 7231 IMF-fixdate in GMT.
pub fn originating_date(at: SystemTime) -> String {
    httpdate::fmt_http_date(at)
}

/// An `application/x-www-form-urlencoded` body whose bytes are Nordea's normalized string:
/// `k1=v1&k2=v2` with the keys in alphabetical order and the values **not** percent-encoded
/// (Nordea's signing script digests exactly that string over the decoded parameters), except
/// the characters that would break the form or the header: `&`, `=`, `+`, `%`, `#`,
/// whitespace, control characters and non-ASCII bytes (see [`form_escape`]). For the values
/// Nordea hands out (codes, tokens) and registered redirect URIs none of these occur, so the
/// digest of the bytes sent equals the digest of the normalized string, whichever of the two
/// the gateway computes. Send exactly these bytes.
pub fn form_body(params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", form_escape(k), form_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes (upper-case hex) only the bytes that would change the meaning of a form
/// body or cannot travel in it raw: `& = + % #`, ASCII whitespace and control characters,
/// and every non-ASCII byte. Everything else (`:`, `/`, `?`, `-`, `.`, `~`, …) stays as is.
pub fn form_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        let breaks = matches!(b, b'&' | b'=' | b'+' | b'%' | b'#')
            || b.is_ascii_whitespace()
            || b.is_ascii_control()
            || !b.is_ascii();
        if breaks {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// How a DELETE with a body (the bulk delete) is signed; setting
/// `nordea.delete_signing_profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeleteSigning {
    /// The three base headers, no `Digest` (Nordea's eIDAS article, current personal script).
    #[default]
    ThreeHeaders,
    /// `content-type` and `digest` too, as for every other request with a body.
    WithDigest,
}

impl DeleteSigning {
    pub fn parse(text: &str) -> Option<DeleteSigning> {
        match text.trim().to_ascii_lowercase().as_str() {
            "three_headers" => Some(DeleteSigning::ThreeHeaders),
            "with_digest" => Some(DeleteSigning::WithDigest),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeleteSigning::ThreeHeaders => "three_headers",
            DeleteSigning::WithDigest => "with_digest",
        }
    }
}

/// The signed body headers of a request that has a body.
#[derive(Debug, Clone, Copy)]
pub struct BodyHeaders<'a> {
    /// The exact `Content-Type` value sent.
    pub content_type: &'a str,
    /// The exact `Digest` value sent.
    pub digest: &'a str,
}

/// The string to sign, exactly as `nordea-pis.md` gives it (no trailing newline): the
/// shared draft-cavage core ([`http_signature`]) over Nordea's header lines.
pub fn signing_string(
    method: &str,
    path_and_query: &str,
    host: &str,
    date: &str,
    body: Option<BodyHeaders<'_>>,
) -> String {
    http_signature::signing_string(&signed_lines(
        &request_target(method, path_and_query),
        &host.to_ascii_lowercase(),
        date,
        body,
    ))
}

fn request_target(method: &str, path_and_query: &str) -> String {
    format!("{} {}", method.to_ascii_lowercase(), path_and_query)
}

/// Nordea's signed header lines, in order.
fn signed_lines<'a>(
    request_target: &'a str,
    host: &'a str,
    date: &'a str,
    body: Option<BodyHeaders<'a>>,
) -> Vec<(&'static str, &'a str)> {
    let mut lines = vec![
        ("(request-target)", request_target),
        ("x-nordea-originating-host", host),
        ("x-nordea-originating-date", date),
    ];
    if let Some(b) = body {
        lines.push(("content-type", b.content_type));
        lines.push(("digest", b.digest));
    }
    lines
}

pub use crate::bank::http_signature::{ALGORITHM, signature_header};

/// The parts of a `Signature` header, for whoever verifies one (the sandbox, tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSignature {
    pub key_id: String,
    pub algorithm: String,
    pub headers: String,
    pub signature: String,
}

/// Parses `keyId="…",algorithm="…",headers="…",signature="…"` (any order; all four needed).
pub fn parse_signature_header(value: &str) -> Option<ParsedSignature> {
    let (mut key_id, mut algorithm, mut headers, mut signature) = (None, None, None, None);
    for part in value.split(',') {
        let (name, quoted) = part.trim().split_once('=')?;
        let inner = quoted.strip_prefix('"')?.strip_suffix('"')?.to_owned();
        match name {
            "keyId" => key_id = Some(inner),
            "algorithm" => algorithm = Some(inner),
            "headers" => headers = Some(inner),
            "signature" => signature = Some(inner),
            _ => {}
        }
    }
    Some(ParsedSignature {
        key_id: key_id?,
        algorithm: algorithm?,
        headers: headers?,
        signature: signature?,
    })
}

/// What to sign for one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    pub method: &'a str,
    /// The URL path with its query string, e.g. `/personal/v2/single-sca-payments/x/status`.
    pub path_and_query: &'a str,
    /// The `X-Nordea-Originating-Host` value.
    pub host: &'a str,
    /// The `X-Nordea-Originating-Date` value.
    pub date: &'a str,
    /// `(content type, exact body bytes)` when the request has a body.
    pub body: Option<(&'a str, &'a [u8])>,
    /// Whether a body is signed (`content-type` and `digest` in the list, a `Digest`
    /// header sent). True for every request with a body except a DELETE signed with
    /// [`DeleteSigning::ThreeHeaders`].
    pub body_signed: bool,
}

/// The headers that carry a request's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub digest: Option<String>,
    pub signature: String,
}

/// Signs requests as one Nordea app: the key and the client id that is its `keyId`.
#[derive(Debug)]
pub struct RequestSigner {
    client_id: String,
    key: SigningKey,
}

impl RequestSigner {
    pub fn new(client_id: impl Into<String>, key: SigningKey) -> RequestSigner {
        RequestSigner {
            client_id: client_id.into(),
            key,
        }
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn sign(&self, request: &RequestToSign<'_>) -> Result<SignatureHeaders, KeyError> {
        let signed_body = request.body.filter(|_| request.body_signed);
        let digest = signed_body.map(|(_, bytes)| digest_header(bytes));
        let body = signed_body
            .zip(digest.as_deref())
            .map(|((content_type, _), digest)| BodyHeaders {
                content_type,
                digest,
            });
        let target = request_target(request.method, request.path_and_query);
        let host = request.host.to_ascii_lowercase();
        let lines = signed_lines(&target, &host, request.date, body);
        let signature = http_signature::sign(&self.key, &self.client_id, &lines)?;
        Ok(SignatureHeaders { digest, signature })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs1v15::SigningKey as RsaSigningKey;
    use rsa::signature::{SignatureEncoding, Signer as _};
    use secrecy::ExposeSecret as _;
    use serde::Deserialize;

    const KAT_PRIVATE: &str = include_str!("../../../tests/fixtures/nordea/kat-private.pem");
    const KAT_PUBLIC: &str = include_str!("../../../tests/fixtures/nordea/kat-public.pem");
    const KAT_REQUEST: &str = include_str!("../../../tests/fixtures/nordea/kat-request.json");
    const KAT_DIGEST: &str = include_str!("../../../tests/fixtures/nordea/kat-digest.txt");
    const KAT_SIGNING_STRING: &str =
        include_str!("../../../tests/fixtures/nordea/kat-signing-string.txt");
    const KAT_SIGNATURE_HEADER: &str =
        include_str!("../../../tests/fixtures/nordea/kat-signature-header.txt");
    const KAT_FORMS: &str = include_str!("../../../tests/fixtures/nordea/kat-forms.json");

    #[derive(Deserialize)]
    struct KatRequest {
        client_id: String,
        method: String,
        path_and_query: String,
        host: String,
        date: String,
        content_type: String,
        body: String,
    }

    fn kat() -> KatRequest {
        serde_json::from_str(KAT_REQUEST).unwrap()
    }

    fn kat_key() -> RsaPrivateKey {
        parse_private_key(KAT_PRIVATE).unwrap()
    }

    #[test]
    fn known_answer_digest_signing_string_and_signature_header_match_openssl() {
        let req = kat();
        let date = originating_date(httpdate::parse_http_date(&req.date).unwrap());
        assert_eq!(date, req.date, "IMF-fixdate round trip");

        assert_eq!(digest_header(req.body.as_bytes()), KAT_DIGEST);
        let text = signing_string(
            &req.method,
            &req.path_and_query,
            &req.host,
            &req.date,
            Some(BodyHeaders {
                content_type: &req.content_type,
                digest: KAT_DIGEST,
            }),
        );
        assert_eq!(text, KAT_SIGNING_STRING);

        let signer =
            RequestSigner::new(&req.client_id, SigningKey::from_text(KAT_PRIVATE).unwrap());
        let headers = signer
            .sign(&RequestToSign {
                method: &req.method,
                path_and_query: &req.path_and_query,
                host: &req.host,
                date: &req.date,
                body: Some((&req.content_type, req.body.as_bytes())),
                body_signed: true,
            })
            .unwrap();
        assert_eq!(headers.digest.as_deref(), Some(KAT_DIGEST));
        assert_eq!(headers.signature, KAT_SIGNATURE_HEADER);

        let parsed = parse_signature_header(&headers.signature).unwrap();
        assert_eq!(parsed.key_id, req.client_id);
        assert_eq!(parsed.headers, HEADERS_WITH_BODY);
        let public = parse_public_key(KAT_PUBLIC).unwrap();
        assert!(verify(&public, text.as_bytes(), &parsed.signature));
        assert!(!verify(&public, b"something else", &parsed.signature));
    }

    #[test]
    fn aws_lc_rs_and_the_rsa_crate_produce_identical_signatures() {
        let key = kat_key();
        let ours = SigningKey::from_rsa(key.clone()).unwrap();
        let reference = RsaSigningKey::<Sha256>::new(key);
        for message in [&b""[..], b"x", KAT_SIGNING_STRING.as_bytes()] {
            let a = ours.sign(message).unwrap();
            let b = reference.sign(message).to_vec();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn a_request_without_a_body_signs_three_headers() {
        let text = signing_string(
            "GET",
            "/personal/v3/single-sca-payments/abc?request_availability_of_funds=true",
            "API.NordeaOpenBanking.com",
            "Wed, 24 Apr 2019 14:00:37 GMT",
            None,
        );
        assert_eq!(
            text,
            "(request-target): get /personal/v3/single-sca-payments/abc?request_availability_of_funds=true\n\
             x-nordea-originating-host: api.nordeaopenbanking.com\n\
             x-nordea-originating-date: Wed, 24 Apr 2019 14:00:37 GMT"
        );
        let signer = RequestSigner::new("client", SigningKey::from_text(KAT_PRIVATE).unwrap());
        let headers = signer
            .sign(&RequestToSign {
                method: "GET",
                path_and_query: "/personal/v2/single-sca-payments/abc/status",
                host: "api.nordeaopenbanking.com",
                date: "Wed, 24 Apr 2019 14:00:37 GMT",
                body: None,
                body_signed: false,
            })
            .unwrap();
        assert_eq!(headers.digest, None);
        let parsed = parse_signature_header(&headers.signature).unwrap();
        assert_eq!(parsed.headers, HEADERS_WITHOUT_BODY);
        assert_eq!(parsed.algorithm, "rsa-sha256");
    }

    #[test]
    fn form_bodies_are_the_normalized_string_with_only_breaking_characters_encoded() {
        let body = form_body(&[
            ("redirect_uri", "https://shop.example/cb?x=1"),
            ("grant_type", "authorization_code"),
            ("code", "a-b_c.d~e/f:g"),
        ]);
        assert_eq!(
            body,
            "code=a-b_c.d~e/f:g&grant_type=authorization_code&redirect_uri=https://shop.example/cb?x%3D1"
        );
        assert_eq!(
            form_escape("a b+c&d=e%f#g\tz\u{e4}\u{7f}"),
            "a%20b%2Bc%26d%3De%25f%23g%09z%C3%A4%7F"
        );
        // Decoding what we send gives back the values exactly.
        let tricky = "a b+c&d=e%f#g\u{e4}";
        let sent = form_body(&[("k", tricky)]);
        let decoded: Vec<(String, String)> = form_urlencoded::parse(sent.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(decoded, vec![("k".to_owned(), tricky.to_owned())]);
    }

    #[derive(Deserialize)]
    struct FormKat {
        client_id: String,
        host: String,
        date: String,
        cases: Vec<FormKatCase>,
    }

    #[derive(Deserialize)]
    struct FormKatCase {
        name: String,
        method: String,
        path_and_query: String,
        content_type: String,
        body: String,
        profile: String,
        digest: String,
        signing_string: String,
        signature_header: String,
    }

    /// The params each form case was built from (the fixture holds only the bytes).
    fn form_params(name: &str) -> Vec<(&'static str, &'static str)> {
        match name {
            "code_exchange" => vec![
                (
                    "redirect_uri",
                    "https://shop.example.com/v1/callbacks/nordea",
                ),
                ("grant_type", "authorization_code"),
                ("code", "kat-code-7f3a9c21"),
            ],
            "refresh" => vec![
                ("refresh_token", "kat-refresh-5b1e2d08"),
                ("grant_type", "refresh_token"),
            ],
            other => panic!("no params for {other}"),
        }
    }

    /// Known answers computed by OpenSSL (`tests/fixtures/nordea/make-form-kat.sh`): the
    /// code exchange and the refresh (form bodies, the normalized string), and the bulk
    /// DELETE in both signing profiles, byte for byte.
    #[test]
    fn known_answer_form_bodies_and_bulk_delete_profiles_match_openssl() {
        let kat: FormKat = serde_json::from_str(KAT_FORMS).unwrap();
        let signer =
            RequestSigner::new(&kat.client_id, SigningKey::from_text(KAT_PRIVATE).unwrap());
        assert_eq!(kat.cases.len(), 4);
        for case in &kat.cases {
            let body = if case.content_type == "application/x-www-form-urlencoded" {
                let body = form_body(&form_params(&case.name));
                assert_eq!(body, case.body, "{}: body bytes", case.name);
                body
            } else {
                case.body.clone()
            };
            let profile = DeleteSigning::parse(&case.profile).unwrap();
            let headers = signer
                .sign(&RequestToSign {
                    method: &case.method.to_ascii_uppercase(),
                    path_and_query: &case.path_and_query,
                    host: &kat.host,
                    date: &kat.date,
                    body: Some((&case.content_type, body.as_bytes())),
                    body_signed: profile == DeleteSigning::WithDigest,
                })
                .unwrap();
            assert_eq!(headers.signature, case.signature_header, "{}", case.name);
            match profile {
                DeleteSigning::WithDigest => {
                    assert_eq!(headers.digest.as_deref(), Some(case.digest.as_str()));
                    let text = signing_string(
                        &case.method,
                        &case.path_and_query,
                        &kat.host,
                        &kat.date,
                        Some(BodyHeaders {
                            content_type: &case.content_type,
                            digest: &case.digest,
                        }),
                    );
                    assert_eq!(text, case.signing_string, "{}", case.name);
                }
                DeleteSigning::ThreeHeaders => {
                    assert_eq!(headers.digest, None, "{}", case.name);
                    let text = signing_string(
                        &case.method,
                        &case.path_and_query,
                        &kat.host,
                        &kat.date,
                        None,
                    );
                    assert_eq!(text, case.signing_string, "{}", case.name);
                }
            }
        }
    }

    #[test]
    fn reads_pkcs1_pkcs8_and_bare_base64_keys() {
        let key = kat_key();
        let pkcs1 = key.to_pkcs1_pem(LineEnding::CRLF).unwrap();
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let bare_pkcs8: String = pkcs8.lines().filter(|l| !l.starts_with("-----")).collect();
        let bare_pkcs1: String = key
            .to_pkcs1_pem(LineEnding::LF)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .join("\n");
        for text in [pkcs1.as_str(), pkcs8.as_str(), &bare_pkcs8, &bare_pkcs1] {
            assert_eq!(parse_private_key(text).unwrap(), key);
            assert_eq!(SigningKey::from_text(text).unwrap().bits(), 2048);
        }
    }

    #[test]
    fn refuses_small_encrypted_and_garbage_keys() {
        let small = RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        let pem = small.to_pkcs8_pem(LineEnding::LF).unwrap();
        let err = SigningKey::from_text(&pem).unwrap_err();
        assert!(matches!(err, KeyError::TooSmall { bits: 1024 }), "{err}");
        assert!(err.to_string().contains("at least 2048"));

        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----";
        assert!(matches!(
            SigningKey::from_text(encrypted),
            Err(KeyError::Encrypted)
        ));
        assert!(matches!(
            SigningKey::from_text("not a key at all"),
            Err(KeyError::Unreadable)
        ));
        assert!(matches!(
            generate_key_pair(1024),
            Err(KeyError::TooSmall { .. })
        ));
    }

    #[test]
    fn key_debug_output_has_no_key_material() {
        let key = SigningKey::from_text(KAT_PRIVATE).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey { bits: 2048, .. }");
    }

    #[test]
    fn writes_a_generated_key_pair_with_a_private_file_mode_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys");
        let (private, public) = write_key_pair(&out, 2048).unwrap();
        let key = SigningKey::from_file(&private).unwrap();
        assert_eq!(key.bits(), 2048);
        let public_key = parse_public_key(&std::fs::read_to_string(&public).unwrap()).unwrap();
        assert_eq!(&public_key, key.public_key());
        let signature = B64.encode(key.sign(b"hello").unwrap());
        assert!(verify(&public_key, b"hello", &signature));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            write_key_pair(&out, 2048),
            Err(KeyError::AlreadyExists { .. })
        ));
        let pair = generate_key_pair(2048).unwrap();
        assert!(
            pair.private_pem
                .expose_secret()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(!format!("{pair:?}").contains("PRIVATE"));
    }
}
