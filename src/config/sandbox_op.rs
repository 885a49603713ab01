//! Settings of `pisgate sandbox --protocol op` (the strict OP simulator): section
//! `[sandbox_op]`, i.e. `PISGATE__SANDBOX_OP__*`. The server certificate and key, the TPP
//! CA (client certificates) and the TPP's signing certificate are required PEM files;
//! everything else has a default. A `*_FILE` environment variable carries the file's path
//! (its content lands in the key without `_FILE`); in TOML `tls_certificate_file = "path"`
//! and the like.

use super::values::{Listen, parsed};
use super::{SettingsError, Sources};
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct SandboxOpSettings {
    /// `listen` (default `127.0.0.1:8096`): the API and token endpoint, HTTPS with mutual TLS.
    pub listen: SocketAddr,
    /// `app_listen` (default `127.0.0.1:8097`): plain HTTP, authorization page, JWKS, admin.
    pub app_listen: SocketAddr,
    /// `tls_certificate_file`: the server certificate (chain), PEM text.
    pub tls_certificate_pem: String,
    /// `tls_private_key_file`: its key, PEM text.
    pub tls_private_key_pem: SecretString,
    /// `tpp_ca_file`: the CA whose client certificates the handshake accepts, PEM text.
    pub tpp_ca_pem: String,
    /// `client_certificate_file` (optional): the registered client's mutual-TLS certificate;
    /// default the signing certificate (the test PKI's TPP certificate is both).
    pub client_certificate_pem: Option<String>,
    /// `client_id` (default `pisgate-sandbox-client`).
    pub client_id: String,
    /// `client_secret` (default `pisgate-sandbox-secret`; a test value).
    pub client_secret: SecretString,
    /// `api_key` (default `pisgate-sandbox-api-key`; a test value).
    pub api_key: SecretString,
    /// `redirect_uris`: comma list of registered redirect URIs (exact match), default
    /// `http://127.0.0.1:8080/v1/callbacks/oidc`.
    pub redirect_uris: Vec<String>,
    /// `tpp_signing_certificate_file`: the TPP's QSealC certificate, PEM text.
    pub tpp_signing_certificate_pem: String,
    /// `tpp_signing_key_id` (default `pisgate-test-qsealc`): the `kid` request objects carry.
    pub tpp_signing_key_id: String,
    /// `issuer` (default `http://<app_listen>`).
    pub issuer: String,
    /// `audience` (default `https://<listen>`): the request objects' `aud`.
    pub audience: String,
    /// `id_token_key_file` (optional; else RSA-2048 generated at start).
    pub id_token_key_pem: Option<SecretString>,
    /// `answer_key_file` (optional; else RSA-2048 generated at start).
    pub answer_key_pem: Option<SecretString>,
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
    tpp_ca: Option<String>,
    tpp_ca_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_file: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    api_key: Option<String>,
    redirect_uris: Option<String>,
    tpp_signing_certificate: Option<String>,
    tpp_signing_certificate_file: Option<String>,
    tpp_signing_key_id: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    id_token_key: Option<String>,
    id_token_key_file: Option<String>,
    answer_key: Option<String>,
    answer_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Root {
    sandbox_op: Raw,
}

/// The PEM text: the content given through `*_FILE` (env), else the file named in TOML;
/// `None` when neither is given.
fn optional_pem(
    content: Option<String>,
    path: Option<String>,
    key: &str,
) -> Result<Option<String>, SettingsError> {
    if let Some(c) = content.filter(|c| !c.trim().is_empty()) {
        return Ok(Some(c));
    }
    match path.filter(|p| !p.trim().is_empty()) {
        Some(path) => std::fs::read_to_string(path.trim()).map(Some).map_err(|e| {
            SettingsError::invalid(
                &format!("sandbox_op.{key}"),
                format!("cannot read {path:?}: {e}"),
            )
        }),
        None => Ok(None),
    }
}

fn pem(content: Option<String>, path: Option<String>, key: &str) -> Result<String, SettingsError> {
    optional_pem(content, path, key)?
        .ok_or_else(|| SettingsError::missing(&format!("sandbox_op.{key}")))
}

fn text(v: Option<String>, default: &str) -> String {
    v.map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

impl SandboxOpSettings {
    pub fn load_from(sources: &Sources) -> Result<SandboxOpSettings, SettingsError> {
        let raw = sources.read::<Root>()?.sandbox_op;
        let listen = raw
            .listen
            .map(|l| l.0)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8096)));
        let app_listen = raw
            .app_listen
            .map(|l| l.0)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8097)));
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
        let tpp_ca_pem = pem(raw.tpp_ca, raw.tpp_ca_file, "tpp_ca_file")?;
        let tpp_signing_certificate_pem = pem(
            raw.tpp_signing_certificate,
            raw.tpp_signing_certificate_file,
            "tpp_signing_certificate_file",
        )?;
        let client_certificate_pem = optional_pem(
            raw.client_certificate,
            raw.client_certificate_file,
            "client_certificate_file",
        )?;
        let redirect_uris: Vec<String> = raw
            .redirect_uris
            .unwrap_or_else(|| "http://127.0.0.1:8080/v1/callbacks/oidc".into())
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        for u in &redirect_uris {
            let ok = url::Url::parse(u)
                .map(|p| matches!(p.scheme(), "http" | "https") && p.fragment().is_none())
                .unwrap_or(false);
            if !ok {
                return Err(SettingsError::invalid(
                    "sandbox_op.redirect_uris",
                    format!("{u:?} is not an absolute http(s) URL without a fragment"),
                ));
            }
        }
        if redirect_uris.is_empty() {
            return Err(SettingsError::invalid(
                "sandbox_op.redirect_uris",
                "at least one redirect URI is required",
            ));
        }
        let origin = |scheme: &str, addr: SocketAddr| -> String {
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                match addr.ip() {
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    ip => ip.to_string(),
                }
            };
            format!("{scheme}://{host}:{}", addr.port())
        };
        let issuer = text(raw.issuer, &origin("http", app_listen));
        let audience = text(raw.audience, &origin("https", listen));
        Ok(SandboxOpSettings {
            listen,
            app_listen,
            tls_certificate_pem,
            tls_private_key_pem,
            tpp_ca_pem,
            client_certificate_pem,
            client_id: text(raw.client_id, "pisgate-sandbox-client"),
            client_secret: SecretString::from(text(raw.client_secret, "pisgate-sandbox-secret")),
            api_key: SecretString::from(text(raw.api_key, "pisgate-sandbox-api-key")),
            redirect_uris,
            tpp_signing_certificate_pem,
            tpp_signing_key_id: text(raw.tpp_signing_key_id, "pisgate-test-qsealc"),
            issuer,
            audience,
            id_token_key_pem: optional_pem(
                raw.id_token_key,
                raw.id_token_key_file,
                "id_token_key_file",
            )?
            .map(SecretString::from),
            answer_key_pem: optional_pem(raw.answer_key, raw.answer_key_file, "answer_key_file")?
                .map(SecretString::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<SandboxOpSettings, SettingsError> {
        Sources::with_only_vars(vars, SandboxOpSettings::load_from)
    }

    #[test]
    fn the_op_sandbox_needs_its_pem_files_names_what_is_missing_and_has_defaults() {
        let err = load(&[]).unwrap_err().to_string();
        assert!(
            err.contains("PISGATE__SANDBOX_OP__TLS_CERTIFICATE_FILE"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, "-----BEGIN X-----\n").unwrap();
            p.to_str().unwrap().to_owned()
        };
        let (cert, key, ca, qsealc) = (f("c.pem"), f("k.pem"), f("ca.pem"), f("q.pem"));
        let base = [
            ("PISGATE__SANDBOX_OP__TLS_CERTIFICATE_FILE", cert.as_str()),
            ("PISGATE__SANDBOX_OP__TLS_PRIVATE_KEY_FILE", key.as_str()),
        ];
        let err = load(&base).unwrap_err().to_string();
        assert!(err.contains("PISGATE__SANDBOX_OP__TPP_CA_FILE"), "{err}");
        let mut vars = base.to_vec();
        vars.push(("PISGATE__SANDBOX_OP__TPP_CA_FILE", &ca));
        let err = load(&vars).unwrap_err().to_string();
        assert!(
            err.contains("PISGATE__SANDBOX_OP__TPP_SIGNING_CERTIFICATE_FILE"),
            "{err}"
        );
        vars.push(("PISGATE__SANDBOX_OP__TPP_SIGNING_CERTIFICATE_FILE", &qsealc));
        let s = load(&vars).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8096");
        assert_eq!(s.app_listen.to_string(), "127.0.0.1:8097");
        assert_eq!(s.issuer, "http://127.0.0.1:8097");
        assert_eq!(s.audience, "https://127.0.0.1:8096");
        assert_eq!(s.client_id, "pisgate-sandbox-client");
        assert_eq!(s.tpp_signing_key_id, "pisgate-test-qsealc");
        assert_eq!(s.redirect_uris, ["http://127.0.0.1:8080/v1/callbacks/oidc"]);
        assert!(s.client_certificate_pem.is_none() && s.id_token_key_pem.is_none());

        let mut more = vars.clone();
        more.push((
            "PISGATE__SANDBOX_OP__REDIRECT_URIS",
            "https://a.example/cb, https://b.example/cb",
        ));
        more.push(("PISGATE__SANDBOX_OP__ISSUER", "https://op.example"));
        more.push(("PISGATE__SANDBOX_OP__LISTEN", "0.0.0.0:9443"));
        let s = load(&more).unwrap();
        assert_eq!(
            s.redirect_uris,
            ["https://a.example/cb", "https://b.example/cb"]
        );
        assert_eq!(s.issuer, "https://op.example");
        assert_eq!(s.audience, "https://127.0.0.1:9443");

        let mut bad = vars.clone();
        bad.push(("PISGATE__SANDBOX_OP__REDIRECT_URIS", "not a url"));
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("PISGATE__SANDBOX_OP__REDIRECT_URIS"), "{err}");
        let mut bad = vars.clone();
        bad.push((
            "PISGATE__SANDBOX_OP__ID_TOKEN_KEY_FILE",
            "/nonexistent/key.pem",
        ));
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("ID_TOKEN_KEY"), "{err}");
    }
}
