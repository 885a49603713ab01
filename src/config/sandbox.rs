//! Settings of `pisgate sandbox` (the Nordea simulator): section `[sandbox]`.

use super::values::{Listen, parsed};
use super::{SettingsError, Sources, required, required_secret, secs};
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// The sandbox's approval timeout when `sandbox.approval_timeout_secs` is not set.
pub const DEFAULT_SANDBOX_APPROVAL_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub listen: SocketAddr,
    /// How a browser reaches the sandbox; signing links are built on it.
    pub public_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// PEM (SPKI or PKCS#1) or bare base64 of the public key registered for the app.
    pub public_key_pem: String,
    pub confirm_delay: Duration,
    pub paid_delay: Duration,
    pub recurring_interval: Duration,
    /// `sandbox.approval_timeout_secs`: how long after initiation an opened but unsigned
    /// payment becomes UserApprovalTimeout. Absent: 1800 s (30 minutes, as a real bank times
    /// out unsigned payments); `0`: never.
    pub approval_timeout: Option<Duration>,
    pub access_token_lifetime: Duration,
    /// `sandbox.token_identity`: token answers carry an unsigned `id_token` with the PSU
    /// (`sub`) and the issue time (`iat`). Default false (Nordea's schema has no `id_token`).
    pub token_identity: bool,
    /// Fault rules active from the start, as the admin API's JSON list.
    pub faults_json: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSandbox {
    #[serde(deserialize_with = "parsed")]
    listen: Option<Listen>,
    public_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    public_key_file: Option<String>,
    public_key: Option<String>,
    confirm_delay_ms: Option<u64>,
    paid_delay_ms: Option<u64>,
    recurring_interval_secs: Option<u64>,
    approval_timeout_secs: Option<u64>,
    access_token_lifetime_secs: Option<u64>,
    token_identity: Option<bool>,
    faults: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSandboxRoot {
    sandbox: RawSandbox,
}

impl SandboxSettings {
    pub fn load() -> Result<SandboxSettings, SettingsError> {
        SandboxSettings::load_from(&Sources::from_process())
    }

    pub fn load_from(sources: &Sources) -> Result<SandboxSettings, SettingsError> {
        let raw = sources.read::<RawSandboxRoot>()?.sandbox;
        let listen = required("sandbox.listen", raw.listen)?.0;
        let public_url = raw
            .public_url
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| format!("http://{listen}"));
        let public_key_pem = match (raw.public_key, raw.public_key_file) {
            (Some(k), _) if !k.trim().is_empty() => k,
            (_, Some(path)) if !path.trim().is_empty() => std::fs::read_to_string(path.trim())
                .map_err(|e| {
                    SettingsError::invalid(
                        "sandbox.public_key_file",
                        format!("cannot read {path:?}: {e}"),
                    )
                })?,
            _ => return Err(SettingsError::missing("sandbox.public_key_file")),
        };
        let millis = |key: &str, v: Option<u64>| required(key, v).map(Duration::from_millis);
        let approval_timeout = match raw.approval_timeout_secs {
            Some(0) => None,
            Some(n) => Some(Duration::from_secs(n)),
            None => Some(DEFAULT_SANDBOX_APPROVAL_TIMEOUT),
        };
        Ok(SandboxSettings {
            listen,
            public_url: public_url.trim_end_matches('/').to_owned(),
            client_id: required("sandbox.client_id", raw.client_id)?,
            client_secret: required_secret("sandbox.client_secret", raw.client_secret)?,
            public_key_pem,
            confirm_delay: millis("sandbox.confirm_delay_ms", raw.confirm_delay_ms)?,
            paid_delay: millis("sandbox.paid_delay_ms", raw.paid_delay_ms)?,
            recurring_interval: secs(
                "sandbox.recurring_interval_secs",
                raw.recurring_interval_secs,
            )?,
            approval_timeout,
            access_token_lifetime: secs(
                "sandbox.access_token_lifetime_secs",
                raw.access_token_lifetime_secs,
            )?,
            token_identity: raw.token_identity.unwrap_or(false),
            faults_json: raw.faults.filter(|f| !f.trim().is_empty()),
        })
    }
}
