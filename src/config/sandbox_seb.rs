//! Settings of `pisgate sandbox --protocol seb` (the strict SEB simulator): section
//! `[sandbox_seb]`, i.e. `PISGATE__SANDBOX_SEB__*`. The three PEM files (server certificate,
//! its key, the client CA) are required; everything else has a default. A `*_FILE`
//! environment variable carries the file's path (its content lands in the key without
//! `_FILE`); in TOML `tls_certificate_file = "path"` and the like.

use super::values::{Listen, parsed};
use super::{SettingsError, Sources};
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SandboxSebSettings {
    /// `listen` (default `127.0.0.1:8094`): the API, HTTPS with mutual TLS.
    pub listen: SocketAddr,
    /// `app_listen` (default `127.0.0.1:8095`): plain HTTP, the test BankID app and admin.
    pub app_listen: SocketAddr,
    /// `tls_certificate_file`: the server certificate (chain), PEM text.
    pub tls_certificate_pem: String,
    /// `tls_private_key_file`: its key, PEM text.
    pub tls_private_key_pem: SecretString,
    /// `client_ca_file`: the CA whose client certificates it accepts, PEM text.
    pub client_ca_pem: String,
    /// `client_id` (default `pisgate-sandbox-client`).
    pub client_id: String,
    /// `client_secret` (default `pisgate-sandbox-secret`; a test value).
    pub client_secret: SecretString,
    /// `order_timeout_secs` (default 30, BankID's).
    pub order_timeout: Duration,
    /// `signing_timeout_secs` (default 300): an unsigned payment becomes RJCT after it.
    pub signing_timeout: Duration,
    /// `access_token_lifetime_secs` (default 1800).
    pub access_token_lifetime: Duration,
    /// `status_step_ms` (default 1000): one scenario step after signing.
    pub status_step: Duration,
    /// `redirect_uris`: comma list of the TPP's registered redirect URIs (default empty: any
    /// absolute http(s) URL).
    pub redirect_uris: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    #[serde(deserialize_with = "parsed")]
    listen: Option<Listen>,
    #[serde(deserialize_with = "parsed")]
    app_listen: Option<Listen>,
    tls_certificate: Option<String>,
    tls_certificate_file: Option<String>,
    tls_private_key: Option<String>,
    tls_private_key_file: Option<String>,
    client_ca: Option<String>,
    client_ca_file: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    order_timeout_secs: Option<u64>,
    signing_timeout_secs: Option<u64>,
    access_token_lifetime_secs: Option<u64>,
    status_step_ms: Option<u64>,
    redirect_uris: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Root {
    sandbox_seb: Raw,
}

/// The PEM text: the content given through `*_FILE` (env), else the file named in TOML.
fn pem(content: Option<String>, path: Option<String>, key: &str) -> Result<String, SettingsError> {
    if let Some(c) = content.filter(|c| !c.trim().is_empty()) {
        return Ok(c);
    }
    match path.filter(|p| !p.trim().is_empty()) {
        Some(path) => std::fs::read_to_string(path.trim()).map_err(|e| {
            SettingsError::invalid(
                &format!("sandbox_seb.{key}"),
                format!("cannot read {path:?}: {e}"),
            )
        }),
        None => Err(SettingsError::missing(&format!("sandbox_seb.{key}"))),
    }
}

impl SandboxSebSettings {
    pub fn load_from(sources: &Sources) -> Result<SandboxSebSettings, SettingsError> {
        let raw = sources.read::<Root>()?.sandbox_seb;
        let listen = raw
            .listen
            .map(|l| l.0)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8094)));
        let app_listen = raw
            .app_listen
            .map(|l| l.0)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8095)));
        let tls_certificate_pem = pem(
            raw.tls_certificate,
            raw.tls_certificate_file,
            "tls_certificate_file",
        )?;
        let tls_private_key_pem = SecretString::from(pem(
            raw.tls_private_key,
            raw.tls_private_key_file,
            "tls_private_key_file",
        )?);
        let client_ca_pem = pem(raw.client_ca, raw.client_ca_file, "client_ca_file")?;
        let client_id = raw
            .client_id
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "pisgate-sandbox-client".into());
        let client_secret = SecretString::from(
            raw.client_secret
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "pisgate-sandbox-secret".into()),
        );
        Ok(SandboxSebSettings {
            listen,
            app_listen,
            tls_certificate_pem,
            tls_private_key_pem,
            client_ca_pem,
            client_id,
            client_secret,
            order_timeout: Duration::from_secs(raw.order_timeout_secs.unwrap_or(30)),
            signing_timeout: Duration::from_secs(raw.signing_timeout_secs.unwrap_or(300)),
            access_token_lifetime: Duration::from_secs(
                raw.access_token_lifetime_secs.unwrap_or(1800),
            ),
            status_step: Duration::from_millis(raw.status_step_ms.unwrap_or(1000)),
            redirect_uris: raw
                .redirect_uris
                .unwrap_or_default()
                .split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<SandboxSebSettings, SettingsError> {
        Sources::with_only_vars(vars, SandboxSebSettings::load_from)
    }

    #[test]
    fn the_seb_sandbox_needs_its_three_pem_files_and_has_defaults() {
        let err = load(&[]).unwrap_err().to_string();
        assert!(
            err.contains("PISGATE__SANDBOX_SEB__TLS_CERTIFICATE_FILE"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, "-----BEGIN X-----\n").unwrap();
            p.to_str().unwrap().to_owned()
        };
        let (cert, key, ca) = (f("c.pem"), f("k.pem"), f("ca.pem"));
        let err = load(&[
            ("PISGATE__SANDBOX_SEB__TLS_CERTIFICATE_FILE", &cert),
            ("PISGATE__SANDBOX_SEB__TLS_PRIVATE_KEY_FILE", &key),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("PISGATE__SANDBOX_SEB__CLIENT_CA_FILE"),
            "{err}"
        );
        let s = load(&[
            ("PISGATE__SANDBOX_SEB__TLS_CERTIFICATE_FILE", &cert),
            ("PISGATE__SANDBOX_SEB__TLS_PRIVATE_KEY_FILE", &key),
            ("PISGATE__SANDBOX_SEB__CLIENT_CA_FILE", &ca),
            ("PISGATE__SANDBOX_SEB__ORDER_TIMEOUT_SECS", "5"),
            (
                "PISGATE__SANDBOX_SEB__REDIRECT_URIS",
                "https://a.example/cb, https://b.example/cb",
            ),
        ])
        .unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8094");
        assert_eq!(s.app_listen.to_string(), "127.0.0.1:8095");
        assert!(s.client_ca_pem.starts_with("-----BEGIN"));
        assert_eq!(s.client_id, "pisgate-sandbox-client");
        assert_eq!(s.order_timeout, Duration::from_secs(5));
        assert_eq!(s.signing_timeout, Duration::from_secs(300));
        assert_eq!(s.access_token_lifetime, Duration::from_secs(1800));
        assert_eq!(s.status_step, Duration::from_millis(1000));
        assert_eq!(
            s.redirect_uris,
            ["https://a.example/cb", "https://b.example/cb"]
        );
    }
}
