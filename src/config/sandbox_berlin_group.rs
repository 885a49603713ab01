//! Settings of `pisgate sandbox --protocol berlin-group` (the strict Berlin Group
//! simulator): section `[sandbox_berlin_group]`, i.e. `PISGATE__SANDBOX_BERLIN_GROUP__*`.
//! Every setting has a default except the CA file, which is required while signatures are
//! (the default).

use super::values::{Listen, parsed};
use super::{SettingsError, Sources};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SandboxBerlinGroupSettings {
    /// `listen` (default `127.0.0.1:8092`).
    pub listen: SocketAddr,
    /// `public_url`: `scheme://host:port` for `_links` and the SCA pages (default
    /// `http://<listen>`).
    pub public_url: String,
    /// `base_path` (default `/psd2`): a TPP's base URL is `<public_url><base_path>`.
    pub base_path: String,
    /// `products`: comma list (default `sepa-credit-transfers,instant-sepa-credit-transfers`).
    pub products: Vec<String>,
    /// `tpp_ca_file`: PEM CA certificate(s) that must have issued the TPP's signing
    /// certificate (the text, read at load).
    pub tpp_ca_pem: Option<String>,
    /// `signature_required` (default true).
    pub signature_required: bool,
    /// `max_clock_skew_secs` (default 120).
    pub max_clock_skew: Duration,
    /// `decoupled_timeout_secs` (default 30).
    pub decoupled_timeout: Duration,
    /// `status_step_ms` (default 2000): one scenario step after the SCA.
    pub status_step: Duration,
    /// `allow_request_id_reuse` (default false).
    pub allow_request_id_reuse: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    #[serde(deserialize_with = "parsed")]
    listen: Option<Listen>,
    public_url: Option<String>,
    base_path: Option<String>,
    products: Option<String>,
    /// The PEM itself: `PISGATE__SANDBOX_BERLIN_GROUP__TPP_CA_FILE=/path` lands here (the
    /// sources read a `*_FILE` variable's file into the key without `_FILE`).
    tpp_ca: Option<String>,
    tpp_ca_file: Option<String>,
    signature_required: Option<bool>,
    max_clock_skew_secs: Option<u64>,
    decoupled_timeout_secs: Option<u64>,
    status_step_ms: Option<u64>,
    allow_request_id_reuse: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Root {
    sandbox_berlin_group: Raw,
}

impl SandboxBerlinGroupSettings {
    pub fn load_from(sources: &Sources) -> Result<SandboxBerlinGroupSettings, SettingsError> {
        let raw = sources.read::<Root>()?.sandbox_berlin_group;
        let listen = raw
            .listen
            .map(|l| l.0)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8092)));
        let public_url = raw
            .public_url
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim()
            .trim_end_matches('/')
            .to_owned();
        let base_path = raw
            .base_path
            .unwrap_or_else(|| "/psd2".into())
            .trim()
            .to_owned();
        let products: Vec<String> = raw
            .products
            .unwrap_or_else(|| "sepa-credit-transfers,instant-sepa-credit-transfers".into())
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        if products.is_empty() {
            return Err(SettingsError::invalid(
                "sandbox_berlin_group.products",
                "names no product",
            ));
        }
        let signature_required = raw.signature_required.unwrap_or(true);
        let tpp_ca_pem = match raw.tpp_ca_file.filter(|f| !f.trim().is_empty()) {
            _ if raw.tpp_ca.as_deref().is_some_and(|p| !p.trim().is_empty()) => raw.tpp_ca,
            Some(path) => Some(std::fs::read_to_string(path.trim()).map_err(|e| {
                SettingsError::invalid(
                    "sandbox_berlin_group.tpp_ca_file",
                    format!("cannot read {path:?}: {e}"),
                )
            })?),
            None if signature_required => {
                return Err(SettingsError::missing("sandbox_berlin_group.tpp_ca_file"));
            }
            None => None,
        };
        Ok(SandboxBerlinGroupSettings {
            listen,
            public_url,
            base_path,
            products,
            tpp_ca_pem,
            signature_required,
            max_clock_skew: Duration::from_secs(raw.max_clock_skew_secs.unwrap_or(120)),
            decoupled_timeout: Duration::from_secs(raw.decoupled_timeout_secs.unwrap_or(30)),
            status_step: Duration::from_millis(raw.status_step_ms.unwrap_or(2000)),
            allow_request_id_reuse: raw.allow_request_id_reuse.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<SandboxBerlinGroupSettings, SettingsError> {
        Sources::with_only_vars(vars, SandboxBerlinGroupSettings::load_from)
    }

    #[test]
    fn the_berlin_group_sandbox_needs_a_ca_while_signatures_are_required_and_has_defaults() {
        let err = load(&[]).unwrap_err().to_string();
        assert!(
            err.contains("PISGATE__SANDBOX_BERLIN_GROUP__TPP_CA_FILE"),
            "{err}"
        );
        let s = load(&[("PISGATE__SANDBOX_BERLIN_GROUP__SIGNATURE_REQUIRED", "false")]).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8092");
        assert_eq!(s.public_url, "http://127.0.0.1:8092");
        assert_eq!(s.base_path, "/psd2");
        assert_eq!(
            s.products,
            ["sepa-credit-transfers", "instant-sepa-credit-transfers"]
        );
        assert_eq!(s.max_clock_skew, Duration::from_secs(120));
        assert_eq!(s.decoupled_timeout, Duration::from_secs(30));
        assert_eq!(s.status_step, Duration::from_millis(2000));
        assert!(!s.allow_request_id_reuse);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let s = load(&[
            (
                "PISGATE__SANDBOX_BERLIN_GROUP__TPP_CA_FILE",
                ca.to_str().unwrap(),
            ),
            (
                "PISGATE__SANDBOX_BERLIN_GROUP__PRODUCTS",
                "sepa-credit-transfers",
            ),
            ("PISGATE__SANDBOX_BERLIN_GROUP__DECOUPLED_TIMEOUT_SECS", "5"),
            (
                "PISGATE__SANDBOX_BERLIN_GROUP__PUBLIC_URL",
                "https://bank.test/",
            ),
        ])
        .unwrap();
        assert!(s.tpp_ca_pem.unwrap().starts_with("-----BEGIN"));
        assert_eq!(s.products, ["sepa-credit-transfers"]);
        assert_eq!(s.decoupled_timeout, Duration::from_secs(5));
        assert_eq!(s.public_url, "https://bank.test");
        let err = load(&[("PISGATE__SANDBOX_BERLIN_GROUP__MAX_CLOCK_SKEW_SECS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("MAX_CLOCK_SKEW_SECS"), "{err}");
    }
}
