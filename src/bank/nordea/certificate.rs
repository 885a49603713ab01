//! The app's eIDAS certificate (a QSealC for PSD2 apps): reading it, checking it against the
//! signing key and the clock, and making a key with a certificate signing request (CSR) for a
//! certificate authority.
//!
//! Nordea's developer portal takes the certificate as the bare base64 body without the
//! BEGIN/END lines (seed 000); `PISGATE__NORDEA__CERTIFICATE_FILE` takes that or PEM. Its
//! private key is the one that signs every request, so at start in production pisgate checks
//! that the certificate parses, that its public key is the signing key's, that it is valid now,
//! and that it looks like a QSealC (the qcStatements extension; only a warning when missing,
//! since a test CA may leave it out). An expired or not yet valid certificate, or one for
//! another key, refuses the start: every signed call would be refused.
//!
//! The CSR is signed with the `rsa` crate's PKCS#1 v1.5 signer: a one-off local operation on a
//! key that was generated a moment before, with no one to time it (RUSTSEC-2023-0071 needs an
//! observer of many private-key operations). Request signing stays with aws-lc-rs.
//!
//! This module must never print or log key material.

use super::signing::{KeyError, MIN_KEY_BITS, SigningKey, write_new_file};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1v15::SigningKey as RsaPkcs1SigningKey;
use rsa::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::{Duration, SystemTime};
use x509_cert::builder::{Builder as _, CertificateBuilder, Profile, RequestBuilder};
use x509_cert::der::asn1::Any;
use x509_cert::der::oid::{AssociatedOid, ObjectIdentifier};
use x509_cert::der::{Decode as _, DecodePem as _, Encode as _, EncodePem as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

/// `id-pe-qcStatements` (RFC 3739), the extension that makes a certificate qualified.
pub const QC_STATEMENTS_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.3");

/// Why a certificate could not be read, used or made. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error(
        "not a readable X.509 certificate: expected PEM (`BEGIN CERTIFICATE`) or the bare base64 body the developer portal takes"
    )]
    Unreadable,
    #[error(
        "the certificate's public key is not the signing key's (PISGATE__NORDEA__PRIVATE_KEY_FILE): Nordea would refuse every signature"
    )]
    KeyMismatch,
    #[error("the certificate expired at {not_after}; renew it and register it at Nordea")]
    Expired { not_after: String },
    #[error("the certificate is not valid before {not_before}; check this host's clock")]
    NotYetValid { not_before: String },
    #[error("the subject {0:?} is not a distinguished name like \"CN=Shop Oy,O=Shop Oy,C=FI\"")]
    Subject(String),
    #[error("could not build the certificate or request: {0}")]
    Build(String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A parsed certificate.
#[derive(Debug, Clone)]
pub struct EidasCertificate {
    cert: x509_cert::Certificate,
}

/// What the start-up check found in a usable certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateCheck {
    pub subject: String,
    pub not_after: SystemTime,
    /// Time left until it expires (zero when it just did).
    pub expires_in: Duration,
    /// Whether it carries the qcStatements extension (a QSealC does).
    pub qc_statements: bool,
}

impl EidasCertificate {
    /// Reads PEM or the bare base64 DER body.
    pub fn from_text(text: &str) -> Result<EidasCertificate, CertificateError> {
        let text = text.trim().replace("\r\n", "\n");
        let cert = if text.contains("-----BEGIN CERTIFICATE-----") {
            x509_cert::Certificate::from_pem(text.as_bytes())
                .map_err(|_| CertificateError::Unreadable)?
        } else {
            let body: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let der = B64.decode(body).map_err(|_| CertificateError::Unreadable)?;
            x509_cert::Certificate::from_der(&der).map_err(|_| CertificateError::Unreadable)?
        };
        Ok(EidasCertificate { cert })
    }

    /// The parsed X.509 certificate (the Berlin Group signer reads its serial, issuer and DER).
    pub fn certificate(&self) -> &x509_cert::Certificate {
        &self.cert
    }

    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    pub fn not_before(&self) -> SystemTime {
        self.cert
            .tbs_certificate
            .validity
            .not_before
            .to_system_time()
    }

    pub fn not_after(&self) -> SystemTime {
        self.cert
            .tbs_certificate
            .validity
            .not_after
            .to_system_time()
    }

    pub fn has_qc_statements(&self) -> bool {
        self.cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .any(|e| e.extn_id == QC_STATEMENTS_OID)
    }

    /// Whether the certificate's public key is `key`.
    pub fn matches(&self, key: &RsaPublicKey) -> bool {
        self.cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .ok()
            .and_then(|der| RsaPublicKey::from_public_key_der(&der).ok())
            .is_some_and(|public| &public == key)
    }

    /// The start-up check: the key matches and the certificate is valid at `now`.
    pub fn check(
        &self,
        key: &SigningKey,
        now: SystemTime,
    ) -> Result<CertificateCheck, CertificateError> {
        if !self.matches(key.public_key()) {
            return Err(CertificateError::KeyMismatch);
        }
        if now < self.not_before() {
            return Err(CertificateError::NotYetValid {
                not_before: httpdate::fmt_http_date(self.not_before()),
            });
        }
        let expires_in =
            self.not_after()
                .duration_since(now)
                .map_err(|_| CertificateError::Expired {
                    not_after: httpdate::fmt_http_date(self.not_after()),
                })?;
        Ok(CertificateCheck {
            subject: self.subject(),
            not_after: self.not_after(),
            expires_in,
            qc_statements: self.has_qc_statements(),
        })
    }
}

/// A minimal qcStatements value: QcCompliance and QcType eseal (ETSI EN 319 412-5).
struct QcStatements(Any);

impl AssociatedOid for QcStatements {
    const OID: ObjectIdentifier = QC_STATEMENTS_OID;
}

impl x509_cert::der::Encode for QcStatements {
    fn encoded_len(&self) -> x509_cert::der::Result<x509_cert::der::Length> {
        self.0.encoded_len()
    }

    fn encode(&self, writer: &mut impl x509_cert::der::Writer) -> x509_cert::der::Result<()> {
        self.0.encode(writer)
    }
}

impl x509_cert::ext::AsExtension for QcStatements {
    fn critical(&self, _: &Name, _: &[x509_cert::ext::Extension]) -> bool {
        false
    }
}

fn qc_statements() -> Result<QcStatements, CertificateError> {
    // SEQUENCE { SEQUENCE { 0.4.0.1862.1.1 } ,
    //            SEQUENCE { 0.4.0.1862.1.6, SEQUENCE { 0.4.0.1862.1.6.2 } } }
    const DER: &[u8] = &[
        0x30, 0x1f, 0x30, 0x08, 0x06, 0x06, 0x04, 0x00, 0x8e, 0x46, 0x01, 0x01, 0x30, 0x13, 0x06,
        0x06, 0x04, 0x00, 0x8e, 0x46, 0x01, 0x06, 0x30, 0x09, 0x06, 0x07, 0x04, 0x00, 0x8e, 0x46,
        0x01, 0x06, 0x02,
    ];
    let value = Any::from_der(DER).map_err(|e| CertificateError::Build(e.to_string()))?;
    Ok(QcStatements(value))
}

fn parse_subject(subject: &str) -> Result<Name, CertificateError> {
    let name = Name::from_str(subject).map_err(|_| CertificateError::Subject(subject.into()))?;
    if name.0.is_empty() {
        return Err(CertificateError::Subject(subject.into()));
    }
    Ok(name)
}

fn time(at: SystemTime) -> Result<Time, CertificateError> {
    Time::try_from(at).map_err(|e| CertificateError::Build(e.to_string()))
}

/// A self-signed certificate for `key` as PEM, valid from `not_before` to `not_after`, with
/// the qcStatements extension when `qc`. For tests and local runs only: a real QSealC comes
/// from a qualified trust service provider.
pub fn self_signed_pem(
    key: &RsaPrivateKey,
    subject: &str,
    not_before: SystemTime,
    not_after: SystemTime,
    qc: bool,
) -> Result<String, CertificateError> {
    let subject = parse_subject(subject)?;
    let signer = RsaPkcs1SigningKey::<Sha256>::new(key.clone());
    let spki_der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| CertificateError::Build(e.to_string()))?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
        .map_err(|e| CertificateError::Build(e.to_string()))?;
    let validity = Validity {
        not_before: time(not_before)?,
        not_after: time(not_after)?,
    };
    let serial = SerialNumber::from(rand::random::<u32>());
    let mut builder =
        CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)
            .map_err(|e| CertificateError::Build(e.to_string()))?;
    if qc {
        builder
            .add_extension(&qc_statements()?)
            .map_err(|e| CertificateError::Build(e.to_string()))?;
    }
    let cert = builder
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(|e| CertificateError::Build(e.to_string()))?;
    cert.to_pem(x509_cert::der::pem::LineEnding::LF)
        .map_err(|e| CertificateError::Build(e.to_string()))
}

/// A PKCS#10 certificate signing request for `key` with `subject`, as PEM.
pub fn csr_pem(key: &RsaPrivateKey, subject: &str) -> Result<String, CertificateError> {
    let subject = parse_subject(subject)?;
    let signer = RsaPkcs1SigningKey::<Sha256>::new(key.clone());
    let request = RequestBuilder::new(subject, &signer)
        .map_err(|e| CertificateError::Build(e.to_string()))?
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(|e| CertificateError::Build(e.to_string()))?;
    request
        .to_pem(x509_cert::der::pem::LineEnding::LF)
        .map_err(|e| CertificateError::Build(e.to_string()))
}

/// `pisgate keys csr`: generates a key of `bits` bits and writes `private.pem` (mode 0600)
/// and `request.csr` (PEM `CERTIFICATE REQUEST`) into `dir`. Never overwrites a file.
pub fn write_key_and_csr(
    dir: &Path,
    subject: &str,
    bits: usize,
) -> Result<(PathBuf, PathBuf), CertificateError> {
    let private_path = dir.join("private.pem");
    let csr_path = dir.join("request.csr");
    for path in [&private_path, &csr_path] {
        if path.exists() {
            return Err(KeyError::AlreadyExists { path: path.clone() }.into());
        }
    }
    if bits < MIN_KEY_BITS {
        return Err(KeyError::TooSmall { bits }.into());
    }
    parse_subject(subject)?;
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).map_err(|_| KeyError::Generation)?;
    SigningKey::from_text(
        key.to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| KeyError::Generation)?
            .as_str(),
    )?;
    let csr = csr_pem(&key, subject)?;
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| KeyError::Generation)?;
    write_new_file(&private_path, private_pem.as_bytes(), 0o600)?;
    write_new_file(&csr_path, csr.as_bytes(), 0o644)?;
    Ok((private_path, csr_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::nordea::signing::parse_private_key;

    const KAT_PRIVATE: &str = include_str!("../../../tests/fixtures/nordea/kat-private.pem");
    const OTHER_PRIVATE: &str =
        include_str!("../../../tests/fixtures/nordea/unregistered-private.pem");
    const DAY: Duration = Duration::from_secs(86_400);

    fn cert(from: SystemTime, to: SystemTime, qc: bool) -> String {
        let key = parse_private_key(KAT_PRIVATE).unwrap();
        self_signed_pem(&key, "CN=Shop Oy,O=Shop Oy,C=FI", from, to, qc).unwrap()
    }

    #[test]
    fn a_matching_current_qseal_passes_and_reports_its_expiry() {
        let now = SystemTime::now();
        let pem = cert(now - DAY, now + 90 * DAY, true);
        let key = SigningKey::from_text(KAT_PRIVATE).unwrap();
        let check = EidasCertificate::from_text(&pem)
            .unwrap()
            .check(&key, now)
            .unwrap();
        assert!(check.qc_statements);
        assert!(check.subject.contains("CN=Shop Oy"), "{}", check.subject);
        assert!(check.expires_in > 89 * DAY && check.expires_in <= 90 * DAY);
        // The bare base64 body the portal takes reads the same.
        let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let same = EidasCertificate::from_text(&bare).unwrap();
        assert_eq!(same.check(&key, now).unwrap(), check);
    }

    #[test]
    fn another_key_an_expired_or_a_future_certificate_is_refused() {
        let now = SystemTime::now();
        let key = SigningKey::from_text(KAT_PRIVATE).unwrap();
        let other = SigningKey::from_text(OTHER_PRIVATE).unwrap();
        let current = EidasCertificate::from_text(&cert(now - DAY, now + DAY, false)).unwrap();
        assert!(!current.has_qc_statements());
        assert!(matches!(
            current.check(&other, now),
            Err(CertificateError::KeyMismatch)
        ));
        let expired = EidasCertificate::from_text(&cert(now - 9 * DAY, now - DAY, true)).unwrap();
        assert!(matches!(
            expired.check(&key, now),
            Err(CertificateError::Expired { .. })
        ));
        let future = EidasCertificate::from_text(&cert(now + DAY, now + 9 * DAY, true)).unwrap();
        assert!(matches!(
            future.check(&key, now),
            Err(CertificateError::NotYetValid { .. })
        ));
        assert!(matches!(
            EidasCertificate::from_text("not a certificate"),
            Err(CertificateError::Unreadable)
        ));
    }

    #[test]
    fn keys_csr_writes_a_private_key_and_a_request_for_its_subject() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("eidas");
        let (private, csr) = write_key_and_csr(&out, "CN=Shop Oy,O=Shop Oy,C=FI", 2048).unwrap();
        let key = SigningKey::from_file(&private).unwrap();
        let text = std::fs::read_to_string(&csr).unwrap();
        assert!(
            text.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{text}"
        );
        let request = x509_cert::request::CertReq::from_pem(text.as_bytes()).unwrap();
        assert_eq!(
            request.info.subject.to_string(),
            "CN=Shop Oy,O=Shop Oy,C=FI"
        );
        let spki = request.info.public_key.to_der().unwrap();
        assert_eq!(
            &RsaPublicKey::from_public_key_der(&spki).unwrap(),
            key.public_key()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            write_key_and_csr(&out, "CN=x", 2048),
            Err(CertificateError::Key(KeyError::AlreadyExists { .. }))
        ));
        assert!(matches!(
            write_key_and_csr(&dir.path().join("b"), "not a dn", 2048),
            Err(CertificateError::Subject(_))
        ));
    }
}
