//! The Berlin Group message signature, checked the strict way (draft-cavage HTTP Signatures
//! as the framework profiles it; `shared/berlin-group-pis.md` §4 and §8), written from the
//! protocol description and independent of pisgate's own Berlin Group signer: this module
//! must never import the client's signing code, or a bug in it would be mirrored here.
//!
//! Order of checks, each with the status and code of §8: `Signature` present (401
//! SIGNATURE_MISSING), `Digest` and `Date` present (400 FORMAT_ERROR), `Date` an
//! IMF-fixdate (400 FORMAT_ERROR) within the window (400 TIMESTAMP_INVALID),
//! `TPP-Signature-Certificate` present (401 CERTIFICATE_MISSING), base64 of a DER X.509
//! certificate issued (signature checked) by a configured CA (401 CERTIFICATE_INVALID) and
//! valid now (401 CERTIFICATE_EXPIRED), the `Signature` parameters well formed with
//! `algorithm="rsa-sha256"` (401 SIGNATURE_INVALID), `keyId` exactly
//! `SN=<serial in lower-case hex, no leading zeros>,CA=<issuer DN (RFC 4514), spaces as %20>`
//! (401 SIGNATURE_INVALID; a CA written in another RFC 4514 spelling of the same name is
//! accepted), `headers` listing `digest`, `x-request-id`, `date` and `psu-id`,
//! `psu-corporate-id`, `tpp-redirect-uri` when the request has them, every listed header
//! present (401 SIGNATURE_INVALID), `Digest` a `SHA-256=` or `SHA-512=` (upper case, as the
//! spec writes them) value that matches the exact body bytes, the empty body included (400
//! FORMAT_ERROR), and last the RSA PKCS#1 v1.5 SHA-256 signature over the signing string (401
//! SIGNATURE_INVALID).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature as RsaSignature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use x509_cert::Certificate;
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::name::Name;

use super::refusal::Refusal;

const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const SHA384_WITH_RSA: &str = "1.2.840.113549.1.1.12";
const SHA512_WITH_RSA: &str = "1.2.840.113549.1.1.13";

/// A CA that may issue TPP signing certificates.
#[derive(Debug, Clone)]
pub struct TrustedCa {
    subject: Name,
    key: RsaPublicKey,
}

/// Reads every CA certificate of a PEM text (one or more `CERTIFICATE` blocks).
pub fn parse_cas(pem: &str) -> Result<Vec<TrustedCa>, String> {
    let certs = Certificate::load_pem_chain(pem.as_bytes())
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the CA file".into());
    }
    certs
        .into_iter()
        .map(|c| {
            let key = rsa_key(&c).ok_or("a CA certificate without an RSA key")?;
            Ok(TrustedCa {
                subject: c.tbs_certificate.subject.clone(),
                key,
            })
        })
        .collect()
}

/// Parses one PEM certificate (for tests and the CLI's checks).
pub fn parse_certificate_pem(pem: &str) -> Result<Certificate, String> {
    Certificate::from_pem(pem.as_bytes()).map_err(|e| e.to_string())
}

fn rsa_key(cert: &Certificate) -> Option<RsaPublicKey> {
    let der = cert.tbs_certificate.subject_public_key_info.to_der().ok()?;
    RsaPublicKey::from_public_key_der(&der).ok()
}

/// What a verified request proves: which certificate signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// SHA-256 of the certificate's DER, hex: the TPP's identity for resource ownership.
    pub fingerprint: String,
    pub key_id: String,
}

/// The serial as the keyId must write it: lower-case hex without leading zeros.
pub fn serial_hex(cert: &Certificate) -> String {
    let hex = hex::encode(cert.tbs_certificate.serial_number.as_bytes());
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// The keyId a certificate's signatures must carry.
pub fn expected_key_id(cert: &Certificate) -> String {
    format!(
        "SN={},CA={}",
        serial_hex(cert),
        cert.tbs_certificate.issuer.to_string().replace(' ', "%20")
    )
}

/// The checks' inputs besides the request.
pub struct Policy<'a> {
    pub cas: &'a [TrustedCa],
    pub max_clock_skew: Duration,
    /// The bank's clock for the Date window and certificate validity (the real clock: the
    /// client signs with the real time).
    pub now: SystemTime,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Verifies a request's signature. `Ok(None)` when it carries no `Signature` and
/// `required` is false.
pub fn verify(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    policy: &Policy<'_>,
    required: bool,
) -> Result<Option<Signer>, Refusal> {
    let Some(signature) = header(headers, "signature") else {
        if headers.contains_key("signature") {
            return Err(Refusal::unauthorized(
                "SIGNATURE_INVALID",
                "Signature",
                "the Signature header is not visible ASCII",
            ));
        }
        if required {
            return Err(Refusal::unauthorized(
                "SIGNATURE_MISSING",
                "Signature",
                "this ASPSP requires a Signature on every request",
            ));
        }
        return Ok(None);
    };
    let digest = header(headers, "digest").ok_or_else(|| {
        Refusal::format(
            "Digest",
            "Digest is required with a Signature (on every request, the empty body too)",
        )
    })?;
    let date = header(headers, "date")
        .ok_or_else(|| Refusal::format("Date", "Date is required with a Signature"))?;
    check_date(date, policy)?;
    let cert = certificate(headers, policy)?;
    let params = parse_signature(signature)?;
    if params.algorithm.as_deref() != Some("rsa-sha256") {
        return Err(Refusal::unauthorized(
            "SIGNATURE_INVALID",
            "Signature",
            format!(
                "algorithm must be \"rsa-sha256\", not {:?}",
                params.algorithm.as_deref().unwrap_or("(absent)")
            ),
        ));
    }
    check_key_id(&params.key_id, &cert)?;
    let listed: Vec<String> = params
        .headers
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let mut must: Vec<&str> = vec!["digest", "x-request-id", "date"];
    for conditional in ["psu-id", "psu-corporate-id", "tpp-redirect-uri"] {
        if headers.contains_key(conditional) {
            must.push(conditional);
        }
    }
    if let Some(missing) = must.iter().find(|m| !listed.iter().any(|l| l == *m)) {
        return Err(Refusal::unauthorized(
            "SIGNATURE_INVALID",
            "Signature",
            format!(
                "headers must list {missing} (it must list {})",
                must.join(" ")
            ),
        ));
    }
    check_digest(digest, body)?;
    let mut lines = Vec::with_capacity(listed.len());
    for name in &listed {
        if name == "(request-target)" {
            lines.push(format!(
                "(request-target): {} {path_and_query}",
                method.as_str().to_ascii_lowercase()
            ));
            continue;
        }
        let value = header(headers, name).ok_or_else(|| {
            Refusal::unauthorized(
                "SIGNATURE_INVALID",
                "Signature",
                format!("headers lists {name}, which the request does not carry"),
            )
        })?;
        lines.push(format!("{name}: {value}"));
    }
    let signing_string = lines.join("\n");
    let raw = B64.decode(params.signature.as_bytes()).map_err(|_| {
        Refusal::unauthorized("SIGNATURE_INVALID", "Signature", "signature is not base64")
    })?;
    let sig = RsaSignature::try_from(raw.as_slice()).map_err(|_| {
        Refusal::unauthorized("SIGNATURE_INVALID", "Signature", "signature is malformed")
    })?;
    let key = rsa_key(&cert).ok_or_else(|| {
        Refusal::unauthorized(
            "CERTIFICATE_INVALID",
            "TPP-Signature-Certificate",
            "the certificate's key is not RSA",
        )
    })?;
    VerifyingKey::<Sha256>::new(key)
        .verify(signing_string.as_bytes(), &sig)
        .map_err(|_| {
            Refusal::unauthorized(
                "SIGNATURE_INVALID",
                "Signature",
                "the RSA-SHA256 signature does not verify over the listed headers with the certificate's key",
            )
        })?;
    let der = cert.to_der().unwrap_or_default();
    Ok(Some(Signer {
        fingerprint: hex::encode(Sha256::digest(&der)),
        key_id: params.key_id,
    }))
}

fn check_date(date: &str, policy: &Policy<'_>) -> Result<(), Refusal> {
    let at = httpdate::parse_http_date(date)
        .ok()
        .filter(|_| date.ends_with(" GMT") && date.len() == 29)
        .ok_or_else(|| {
            Refusal::format(
                "Date",
                "Date must be an IMF-fixdate (RFC 7231), e.g. Sun, 06 Nov 1994 08:49:37 GMT",
            )
        })?;
    let skew = match policy.now.duration_since(at) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > policy.max_clock_skew {
        return Err(Refusal::new(
            axum::http::StatusCode::BAD_REQUEST,
            "TIMESTAMP_INVALID",
            Some("Date"),
            format!(
                "Date is {} s away from the ASPSP's clock (at most {} s)",
                skew.as_secs(),
                policy.max_clock_skew.as_secs()
            ),
        ));
    }
    Ok(())
}

fn certificate(headers: &HeaderMap, policy: &Policy<'_>) -> Result<Certificate, Refusal> {
    const H: &str = "TPP-Signature-Certificate";
    let invalid = |text: &str| Refusal::unauthorized("CERTIFICATE_INVALID", H, text);
    let raw = header(headers, "tpp-signature-certificate").ok_or_else(|| {
        Refusal::unauthorized(
            "CERTIFICATE_MISSING",
            H,
            "TPP-Signature-Certificate is required with a Signature",
        )
    })?;
    let compact: String = raw.split_whitespace().collect();
    let der = B64
        .decode(compact.as_bytes())
        .map_err(|_| invalid("not base64"))?;
    let cert = Certificate::from_der(&der).map_err(|_| invalid("not a DER X.509 certificate"))?;
    let issued = policy
        .cas
        .iter()
        .any(|ca| ca.subject == cert.tbs_certificate.issuer && signed_by(&cert, &ca.key));
    if !issued {
        return Err(invalid(
            "the certificate was not issued by a CA this ASPSP trusts",
        ));
    }
    let validity = &cert.tbs_certificate.validity;
    if policy.now < validity.not_before.to_system_time()
        || policy.now > validity.not_after.to_system_time()
    {
        return Err(Refusal::unauthorized(
            "CERTIFICATE_EXPIRED",
            H,
            "the certificate is outside its validity",
        ));
    }
    Ok(cert)
}

fn signed_by(cert: &Certificate, ca: &RsaPublicKey) -> bool {
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    let Ok(sig) = RsaSignature::try_from(sig) else {
        return false;
    };
    match cert.signature_algorithm.oid.to_string().as_str() {
        SHA256_WITH_RSA => VerifyingKey::<Sha256>::new(ca.clone())
            .verify(&tbs, &sig)
            .is_ok(),
        SHA384_WITH_RSA => VerifyingKey::<Sha384>::new(ca.clone())
            .verify(&tbs, &sig)
            .is_ok(),
        SHA512_WITH_RSA => VerifyingKey::<Sha512>::new(ca.clone())
            .verify(&tbs, &sig)
            .is_ok(),
        _ => false,
    }
}

fn check_key_id(key_id: &str, cert: &Certificate) -> Result<(), Refusal> {
    let expected = expected_key_id(cert);
    if key_id == expected {
        return Ok(());
    }
    let wrong = || {
        Refusal::unauthorized(
            "SIGNATURE_INVALID",
            "Signature",
            format!(
                "keyId must be {expected} (the certificate's serial in lower-case hex and its issuer)"
            ),
        )
    };
    // The same issuer written in another RFC 4514 spelling (escaping, spacing) is the same
    // name; the serial must still be exact.
    let (sn, ca) = key_id
        .strip_prefix("SN=")
        .and_then(|rest| rest.split_once(",CA="))
        .ok_or_else(wrong)?;
    if sn != serial_hex(cert) {
        return Err(wrong());
    }
    let name = Name::from_str(&ca.replace("%20", " ")).map_err(|_| wrong())?;
    if name == cert.tbs_certificate.issuer {
        Ok(())
    } else {
        Err(wrong())
    }
}

fn check_digest(digest: &str, body: &[u8]) -> Result<(), Refusal> {
    let mut any = false;
    for part in digest.split(',') {
        let Some((alg, value)) = part.trim().split_once('=') else {
            continue;
        };
        let computed = match alg {
            "SHA-256" => B64.encode(Sha256::digest(body)),
            "SHA-512" => B64.encode(Sha512::digest(body)),
            _ => continue,
        };
        any = true;
        if computed != value {
            return Err(Refusal::format(
                "Digest",
                format!("the {alg} digest does not match the body as received"),
            ));
        }
    }
    if !any {
        return Err(Refusal::format(
            "Digest",
            "Digest must carry a SHA-256= or SHA-512= value",
        ));
    }
    Ok(())
}

struct SignatureParams {
    key_id: String,
    algorithm: Option<String>,
    headers: String,
    signature: String,
}

/// Parses `name="value"` pairs separated by commas (values may hold commas and `=`).
fn parse_signature(raw: &str) -> Result<SignatureParams, Refusal> {
    let bad = |text: &str| Refusal::unauthorized("SIGNATURE_INVALID", "Signature", text);
    let mut rest = raw.trim();
    let (mut key_id, mut algorithm, mut headers, mut signature) = (None, None, None, None);
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| bad("Signature must be name=\"value\" pairs"))?;
        let after = after
            .strip_prefix('"')
            .ok_or_else(|| bad("every Signature parameter value must be quoted"))?;
        let end = after
            .find('"')
            .ok_or_else(|| bad("an unterminated Signature parameter value"))?;
        let value = after[..end].to_owned();
        match name.trim() {
            "keyId" => key_id = Some(value),
            "algorithm" => algorithm = Some(value),
            "headers" => headers = Some(value),
            "signature" => signature = Some(value),
            _ => {}
        }
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(SignatureParams {
        key_id: key_id.ok_or_else(|| bad("Signature has no keyId"))?,
        algorithm,
        headers: headers.ok_or_else(|| bad("Signature has no headers"))?,
        signature: signature.ok_or_else(|| bad("Signature has no signature"))?,
    })
}
