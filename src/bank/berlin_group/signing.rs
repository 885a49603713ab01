//! Berlin Group request signing (`berlin-group-pis.md` §4): draft-cavage HTTP Signatures as
//! the NextGenPSD2 framework configures them.
//!
//! - `Digest: SHA-256=<base64>` of the exact body bytes on **every** request (the digest of
//!   the empty string for GET and DELETE);
//! - signed headers, in this order: `digest x-request-id`, then `psu-id`,
//!   `psu-corporate-id`, `tpp-redirect-uri` when the request carries them, then `date` (an
//!   RFC 7231 IMF-fixdate); no `(request-target)`; lower-case names in the signing string,
//!   `name: value` lines joined by `\n`, no trailing newline;
//! - `Signature: keyId="SN=<serial, lower-case hex>,CA=<issuer DN, RFC 4514, spaces as
//!   %20>",algorithm="rsa-sha256",headers="…",signature="<base64 RSASSA-PKCS1-v1_5 SHA-256>"`;
//! - `TPP-Signature-Certificate`: the base64 of the certificate's DER.
//!
//! The Nordea scheme and this one are two configurations of one draft-cavage signer,
//! [`crate::bank::http_signature`] (signing string, RSA-SHA256 with the aws-lc-rs
//! [`SigningKey`], the `Signature` header); this module only says which headers, which
//! `keyId` and which certificate.
//!
//! This module must never log, print or put into an error any key material.

use crate::bank::http_signature;
use crate::bank::nordea::certificate::{CertificateError, EidasCertificate};
use crate::bank::nordea::signing::{KeyError, SigningKey};
use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::fmt;
use x509_cert::der::Encode as _;
use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, TeletexStringRef, Utf8StringRef};
use x509_cert::der::{Tag, Tagged as _};
use x509_cert::name::Name;

/// The headers a Berlin Group signature covers when the request carries them, in order.
pub const OPTIONAL_SIGNED: [&str; 3] = ["psu-id", "psu-corporate-id", "tpp-redirect-uri"];

/// `SHA-256=<base64(SHA-256(body))>` (the framework's spelling; RFC 3230 names are
/// case-insensitive).
pub fn digest_header(body: &[u8]) -> String {
    format!(
        "SHA-256={}",
        B64.encode(digest::digest(&digest::SHA256, body))
    )
}

/// The certificate's serial number as lower-case hex without leading zeros.
pub fn serial_hex(cert: &x509_cert::Certificate) -> String {
    let hex: String = cert
        .tbs_certificate
        .serial_number
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn attribute_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' | '"' | '+' | ',' | ';' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    if out.starts_with(['#', ' ']) {
        out.insert(0, '\\');
    }
    if out.ends_with(' ') && !out.ends_with("\\ ") {
        out.pop();
        out.push_str("\\ ");
    }
    out
}

/// A distinguished name as an RFC 4514 string: RDNs in reverse order joined by `,`, the
/// RFC's short names (CN, L, ST, O, OU, C, STREET, DC, UID) and the dotted OID otherwise,
/// values escaped per §2.4 (non-string values as `#` and the hex of their DER).
pub fn rfc4514(name: &Name) -> String {
    let mut rdns = Vec::new();
    for rdn in name.0.iter().rev() {
        let mut parts = Vec::new();
        for atv in rdn.0.iter() {
            let oid = atv.oid.to_string();
            let key = attribute_name(&oid).map(str::to_owned).unwrap_or(oid);
            let text = match atv.value.tag() {
                Tag::PrintableString => PrintableStringRef::try_from(&atv.value)
                    .ok()
                    .map(|s| s.as_str().to_owned()),
                Tag::Utf8String => Utf8StringRef::try_from(&atv.value)
                    .ok()
                    .map(|s| s.as_str().to_owned()),
                Tag::Ia5String => Ia5StringRef::try_from(&atv.value)
                    .ok()
                    .map(|s| s.as_str().to_owned()),
                Tag::TeletexString => TeletexStringRef::try_from(&atv.value)
                    .ok()
                    .map(|s| s.as_str().to_owned()),
                _ => None,
            };
            let value = match text {
                Some(text) => escape_value(&text),
                None => {
                    let der = atv.value.to_der().unwrap_or_default();
                    let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
                    format!("#{hex}")
                }
            };
            parts.push(format!("{key}={value}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.join(",")
}

/// The Berlin Group `keyId` of a certificate: `SN=<serial hex>,CA=<issuer DN>` with the
/// DN's spaces written as `%20`.
pub fn key_id(cert: &x509_cert::Certificate) -> String {
    format!(
        "SN={},CA={}",
        serial_hex(cert),
        rfc4514(&cert.tbs_certificate.issuer).replace(' ', "%20")
    )
}

pub use crate::bank::http_signature::signing_string;

/// The headers to sign for a request, in order, from what it carries: `digest`,
/// `x-request-id`, the optional ones present, `date`. `present` gives the optional headers
/// the request carries (lower-case name, value).
pub fn headers_to_sign<'a>(
    digest: &'a str,
    request_id: &'a str,
    present: &[(&'a str, &'a str)],
    date: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut out = vec![("digest", digest), ("x-request-id", request_id)];
    for name in OPTIONAL_SIGNED {
        if let Some((_, value)) = present.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            out.push((name, value));
        }
    }
    out.push(("date", date));
    out
}

pub use crate::bank::http_signature::parse_params as parse_signature_params;

/// Signs requests as one TPP: the QSealC's private key, its `keyId` and its DER.
pub struct BgSigner {
    key: SigningKey,
    key_id: String,
    certificate_b64: String,
}

impl fmt::Debug for BgSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BgSigner")
            .field("key", &self.key)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl BgSigner {
    /// Refuses a certificate whose public key is not the signing key's: every signature
    /// would be refused.
    pub fn new(
        key: SigningKey,
        certificate: &EidasCertificate,
    ) -> Result<BgSigner, CertificateError> {
        if !certificate.matches(key.public_key()) {
            return Err(CertificateError::KeyMismatch);
        }
        let cert = certificate.certificate();
        let der = cert
            .to_der()
            .map_err(|e| CertificateError::Build(e.to_string()))?;
        Ok(BgSigner {
            key,
            key_id: key_id(cert),
            certificate_b64: B64.encode(der),
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The `TPP-Signature-Certificate` value.
    pub fn certificate_header(&self) -> &str {
        &self.certificate_b64
    }

    /// The `Signature` header over `headers` (from [`headers_to_sign`]).
    pub fn sign(&self, headers: &[(&str, &str)]) -> Result<String, KeyError> {
        http_signature::sign(&self.key, &self.key_id, headers)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bank::nordea::certificate::self_signed_pem;
    use crate::bank::nordea::signing::{parse_private_key, verify};
    use std::time::{Duration, SystemTime};

    pub(crate) const KAT_PRIVATE: &str =
        include_str!("../../../tests/fixtures/nordea/kat-private.pem");

    pub(crate) fn test_signer() -> BgSigner {
        let pem = test_certificate_pem("CN=Test CA\\, Inc.,O=Pisgate Test,C=FI");
        BgSigner::new(
            SigningKey::from_text(KAT_PRIVATE).unwrap(),
            &EidasCertificate::from_text(&pem).unwrap(),
        )
        .unwrap()
    }

    pub(crate) fn test_certificate_pem(subject: &str) -> String {
        let key = parse_private_key(KAT_PRIVATE).unwrap();
        let now = SystemTime::now();
        self_signed_pem(
            &key,
            subject,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(86_400),
            true,
        )
        .unwrap()
    }

    #[test]
    fn berlin_group_digest_covers_the_empty_body_too() {
        assert_eq!(
            digest_header(b""),
            "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_ne!(digest_header(b"{}"), digest_header(b""));
    }

    #[test]
    fn berlin_group_signed_headers_follow_the_framework_order() {
        let names = |present: &[(&str, &str)]| {
            headers_to_sign("d", "r", present, "t")
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(names(&[]), "digest x-request-id date");
        assert_eq!(
            names(&[
                ("tpp-redirect-uri", "u"),
                ("psu-id", "p"),
                ("psu-ip-address", "1.2.3.4")
            ]),
            "digest x-request-id psu-id tpp-redirect-uri date"
        );
        assert_eq!(
            signing_string(&headers_to_sign("D", "R", &[("psu-id", "P")], "T")),
            "digest: D\nx-request-id: R\npsu-id: P\ndate: T"
        );
    }

    #[test]
    fn berlin_group_signature_verifies_with_the_certificate_key_and_names_it() {
        let signer = test_signer();
        let headers = headers_to_sign(
            "SHA-256=x",
            "99391c7e-ad88-49ec-a2ad-99ddcb1f7721",
            &[],
            "Sun, 06 Dec 2026 10:00:00 GMT",
        );
        let value = signer.sign(&headers).unwrap();
        let parsed = parse_signature_params(&value).unwrap();
        assert_eq!(parsed["algorithm"], "rsa-sha256");
        assert_eq!(parsed["headers"], "digest x-request-id date");
        assert_eq!(parsed["keyId"], signer.key_id());
        let key = SigningKey::from_text(KAT_PRIVATE).unwrap();
        assert!(verify(
            key.public_key(),
            signing_string(&headers).as_bytes(),
            &parsed["signature"]
        ));
        assert!(signer.certificate_header().starts_with("MII"));
    }

    #[test]
    fn berlin_group_key_id_is_serial_hex_and_the_rfc4514_issuer_with_spaces_encoded() {
        let pem = test_certificate_pem("CN=Test CA\\, Inc.,O=Pisgate Test,C=FI");
        let cert = EidasCertificate::from_text(&pem).unwrap();
        let id = key_id(cert.certificate());
        let serial = serial_hex(cert.certificate());
        assert!(!serial.starts_with('0') || serial == "0", "{serial}");
        assert!(
            serial
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            id,
            format!("SN={serial},CA=CN=Test%20CA\\,%20Inc.,O=Pisgate%20Test,C=FI")
        );
    }

    #[test]
    fn berlin_group_signer_refuses_a_certificate_of_another_key() {
        let other = crate::bank::nordea::signing::generate_key_pair(2048).unwrap();
        use secrecy::ExposeSecret as _;
        let key = SigningKey::from_text(other.private_pem.expose_secret()).unwrap();
        let pem = test_certificate_pem("CN=Test,C=FI");
        assert!(matches!(
            BgSigner::new(key, &EidasCertificate::from_text(&pem).unwrap()),
            Err(CertificateError::KeyMismatch)
        ));
    }
}
