//! A throwaway PKI for tests and local runs: a test CA and a QSealC-like TPP signing
//! certificate it issued, as PEM, so that an in-process simulator (trusting the CA) and a
//! TPP under test (signing with the key and sending the certificate) can be set up without
//! files or other tools. Never for anything real: the keys are generated on the spot and
//! returned in the clear.
//!
//! [`generate_with_server`] also issues a TLS server certificate (SAN `localhost` and
//! `127.0.0.1`) from the same CA, for the SEB simulator's mutual-TLS listener; the TPP
//! certificate doubles as the client certificate (QWAC) there.

use std::time::Duration;

use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use sha2::Sha256;
use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
use x509_cert::der::{Decode as _, EncodePem as _};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

/// The test CA's name.
pub const CA_SUBJECT: &str = "CN=pisgate Test QTSP CA,O=pisgate Test Trust Services,C=FI";

/// A CA and one TPP certificate it issued, all PEM.
#[derive(Clone)]
pub struct TestPki {
    pub ca_pem: String,
    /// PKCS#8 `PRIVATE KEY` of the TPP.
    pub tpp_key_pem: String,
    pub tpp_cert_pem: String,
    /// The keyId the TPP's signatures must carry.
    pub key_id: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A TLS server certificate and its key (PKCS#8 PEM), issued by a [`TestPki`]'s CA.
#[derive(Clone)]
pub struct TestServerCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TestServerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServerCertificate")
            .finish_non_exhaustive()
    }
}

fn certificate(
    profile: Profile,
    serial: u64,
    subject: &str,
    subject_key: &RsaPrivateKey,
    issuer_key: &RsaPrivateKey,
    valid_for: Duration,
) -> Result<x509_cert::Certificate, String> {
    certificate_with(
        profile,
        serial,
        subject,
        subject_key,
        issuer_key,
        valid_for,
        |_| Ok(()),
    )
}

fn certificate_with(
    profile: Profile,
    serial: u64,
    subject: &str,
    subject_key: &RsaPrivateKey,
    issuer_key: &RsaPrivateKey,
    valid_for: Duration,
    extend: impl FnOnce(
        &mut CertificateBuilder<'_, SigningKey<Sha256>>,
    ) -> Result<(), x509_cert::builder::Error>,
) -> Result<x509_cert::Certificate, String> {
    let spki_der = subject_key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| e.to_string())?;
    let spki =
        SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).map_err(|e| e.to_string())?;
    let subject: Name = subject
        .parse()
        .map_err(|e: x509_cert::der::Error| e.to_string())?;
    let signer = SigningKey::<Sha256>::new(issuer_key.clone());
    let validity = Validity::from_now(valid_for).map_err(|e| e.to_string())?;
    let mut builder = CertificateBuilder::new(
        profile,
        SerialNumber::from(serial),
        validity,
        subject,
        spki,
        &signer,
    )
    .map_err(|e| e.to_string())?;
    extend(&mut builder).map_err(|e| e.to_string())?;
    builder
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(|e| e.to_string())
}

/// Generates a CA (RSA 2048) and a TPP certificate for `tpp_subject` (RFC 4514, e.g.
/// `CN=Shop TPP,O=Shop Oy,C=FI`), both valid for a year.
pub fn generate(tpp_subject: &str) -> Result<TestPki, String> {
    generate_keeping_ca(tpp_subject).map(|(pki, _)| pki)
}

/// As [`generate`], plus a TLS server certificate for `CN=localhost` with the SANs
/// `localhost` and `127.0.0.1` (and `::1`), issued by the same CA, valid for a year.
pub fn generate_with_server(tpp_subject: &str) -> Result<(TestPki, TestServerCertificate), String> {
    generate_with_server_keeping_ca(tpp_subject).map(|(pki, server, _)| (pki, server))
}

/// As [`generate_with_server`], also returning the CA's key so that more client
/// certificates can be issued ([`issue_client_certificate`]).
pub(crate) fn generate_with_server_keeping_ca(
    tpp_subject: &str,
) -> Result<(TestPki, TestServerCertificate, RsaPrivateKey), String> {
    use x509_cert::der::asn1::{Ia5String, OctetString};
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let (pki, ca_key) = generate_keeping_ca(tpp_subject)?;
    let mut rng = rand::thread_rng();
    let server_key = RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
    let issuer: Name = CA_SUBJECT
        .parse()
        .map_err(|e: x509_cert::der::Error| e.to_string())?;
    let leaf = Profile::Leaf {
        issuer,
        enable_key_agreement: false,
        enable_key_encipherment: true,
    };
    let dns = Ia5String::new("localhost").map_err(|e| e.to_string())?;
    let v4 = OctetString::new(vec![127u8, 0, 0, 1]).map_err(|e| e.to_string())?;
    let mut v6 = vec![0u8; 16];
    v6[15] = 1;
    let v6 = OctetString::new(v6).map_err(|e| e.to_string())?;
    let san = SubjectAltName(vec![
        GeneralName::DnsName(dns),
        GeneralName::IpAddress(v4),
        GeneralName::IpAddress(v6),
    ]);
    let serial = 0x0051_5256_0000_0000 | u64::from(rand::random::<u32>());
    let server = certificate_with(
        leaf,
        serial,
        "CN=localhost,O=pisgate test bank,C=SE",
        &server_key,
        &ca_key,
        Duration::from_secs(365 * 86_400),
        |b| b.add_extension(&san),
    )?;
    Ok((
        pki,
        TestServerCertificate {
            cert_pem: server
                .to_pem(x509_cert::der::pem::LineEnding::LF)
                .map_err(|e| e.to_string())?,
            key_pem: server_key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| e.to_string())?
                .to_string(),
        },
        ca_key,
    ))
}

/// Another client certificate for `subject` issued by the test CA whose key is `ca_key`
/// (valid for a year): `(certificate PEM, PKCS#8 key PEM)`.
pub(crate) fn issue_client_certificate(
    ca_key: &RsaPrivateKey,
    subject: &str,
) -> Result<(String, String), String> {
    let mut rng = rand::thread_rng();
    let key = RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
    let issuer: Name = CA_SUBJECT
        .parse()
        .map_err(|e: x509_cert::der::Error| e.to_string())?;
    let leaf = Profile::Leaf {
        issuer,
        enable_key_agreement: false,
        enable_key_encipherment: false,
    };
    let serial = 0x0043_4c49_0000_0000 | u64::from(rand::random::<u32>());
    let cert = certificate(
        leaf,
        serial,
        subject,
        &key,
        ca_key,
        Duration::from_secs(365 * 86_400),
    )?;
    Ok((
        cert.to_pem(x509_cert::der::pem::LineEnding::LF)
            .map_err(|e| e.to_string())?,
        key.to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?
            .to_string(),
    ))
}

fn generate_keeping_ca(tpp_subject: &str) -> Result<(TestPki, RsaPrivateKey), String> {
    let mut rng = rand::thread_rng();
    let ca_key = RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
    let tpp_key = RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
    let year = Duration::from_secs(365 * 86_400);
    let ca = certificate(Profile::Root, 1, CA_SUBJECT, &ca_key, &ca_key, year)?;
    let issuer: Name = CA_SUBJECT
        .parse()
        .map_err(|e: x509_cert::der::Error| e.to_string())?;
    // A serial with hex letters, so a keyId written in upper case is caught.
    let serial = 0x00ab_cdef_0000_0000 | u64::from(rand::random::<u32>());
    let leaf = Profile::Leaf {
        issuer,
        enable_key_agreement: false,
        enable_key_encipherment: false,
    };
    let tpp = certificate(leaf, serial, tpp_subject, &tpp_key, &ca_key, year)?;
    let pem = |c: &x509_cert::Certificate| {
        c.to_pem(x509_cert::der::pem::LineEnding::LF)
            .map_err(|e| e.to_string())
    };
    let pki = TestPki {
        ca_pem: pem(&ca)?,
        tpp_key_pem: tpp_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?
            .to_string(),
        tpp_cert_pem: pem(&tpp)?,
        key_id: super::verify::expected_key_id(&tpp),
    };
    Ok((pki, ca_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_tpp_certificate_is_trusted_through_the_generated_ca() {
        let pki = generate("CN=Shop TPP,O=Shop Oy,C=FI").unwrap();
        let cas = super::super::verify::parse_cas(&pki.ca_pem).unwrap();
        assert_eq!(cas.len(), 1);
        let cert = super::super::verify::parse_certificate_pem(&pki.tpp_cert_pem).unwrap();
        assert!(pki.key_id.starts_with("SN=abcdef"), "{}", pki.key_id);
        assert!(pki.key_id.ends_with(
            ",CA=CN=pisgate%20Test%20QTSP%20CA,O=pisgate%20Test%20Trust%20Services,C=FI"
        ));
        assert_eq!(super::super::verify::expected_key_id(&cert), pki.key_id);
        assert!(pki.tpp_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }
}
