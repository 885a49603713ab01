//! OAuth SCA building blocks (`scaOAuth`, `berlin-group-pis.md` §2): the bank's
//! authorisation server metadata (RFC 8414), PKCE S256 (RFC 7636) with one fresh verifier
//! per authorisation, the authorization URL for the shopper's browser, and the code
//! exchange with that verifier.
//!
//! These are inherent methods of [`BerlinGroupClient`], not yet wired into the port: the
//! port's `exchange_code(code, redirect_uri)` has no room for a verifier, and the verifier
//! has to be kept (encrypted) with the authorisation between the redirect and the return.
//! Wiring them is the coordinator's (see the report of this item).
//!
//! Rules: metadata and token endpoints must be https, or on the bank's own base origin (a
//! local test bank); the metadata must offer `code` and, when it lists PKCE methods, `S256`.
//! The verifier is 32 random bytes base64url (43 characters), never logged, never in an
//! error; the code exchange is sent once (a code is single-use).

use super::client::BerlinGroupClient;
use crate::bank::nordea::errors::{parse_retry_after, transport, transport_after_answer};
use crate::bank::nordea::{convert as nordea_convert, wire as nordea_wire};
use crate::bank::{BankError, TokenSet};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::fmt;

/// The parts of RFC 8414 metadata pisgate uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OAuthMetadata {
    #[serde(default)]
    pub issuer: Option<String>,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub response_types_supported: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

/// One PKCE pair: a fresh verifier per authorisation and its S256 challenge. `Debug` shows
/// only the challenge.
pub struct Pkce {
    pub verifier: SecretString,
    pub challenge: String,
}

impl fmt::Debug for Pkce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkce")
            .field("challenge", &self.challenge)
            .finish_non_exhaustive()
    }
}

impl Pkce {
    /// A new verifier (32 random bytes, base64url: 43 characters) and its challenge.
    pub fn generate() -> Pkce {
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut bytes);
        let verifier = B64URL.encode(bytes);
        Pkce {
            challenge: challenge(&verifier),
            verifier: SecretString::from(verifier),
        }
    }
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 §4.2).
pub fn challenge(verifier: &str) -> String {
    B64URL.encode(Sha256::digest(verifier.as_bytes()))
}

fn unexpected(detail: &str) -> BankError {
    BankError::Unexpected {
        status: None,
        detail: detail.to_owned(),
    }
}

/// The shopper's authorization URL: `response_type=code`, `client_id`, `redirect_uri`,
/// `scope` (the framework's `PIS:<paymentId>`), `state`, `code_challenge`,
/// `code_challenge_method=S256`.
pub fn authorization_url(
    metadata: &OAuthMetadata,
    client_id: &str,
    redirect_uri: &str,
    scope: &str,
    state: &str,
    pkce: &Pkce,
) -> Result<String, BankError> {
    let mut url = Url::parse(&metadata.authorization_endpoint)
        .map_err(|_| unexpected("the bank's authorization_endpoint is not a URL"))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", scope)
        .append_pair("state", state)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256");
    Ok(url.to_string())
}

impl BerlinGroupClient {
    /// An OAuth endpoint we may talk to: https anywhere, or http on the bank's own origin.
    fn oauth_endpoint(&self, href: &str) -> Result<Url, BankError> {
        if let Ok(url) = self.resolve(href) {
            return Ok(url);
        }
        let url = Url::parse(href).map_err(|_| unexpected("the bank's OAuth link is not a URL"))?;
        if url.scheme() != "https" || !url.username().is_empty() || url.password().is_some() {
            return Err(unexpected(
                "the bank's OAuth endpoint is not https on a host of its own",
            ));
        }
        Ok(url)
    }

    /// Reads the bank's authorisation server metadata (the `scaOAuth` link), once.
    pub async fn oauth_metadata(&self, metadata_url: &str) -> Result<OAuthMetadata, BankError> {
        let url = self.oauth_endpoint(metadata_url)?;
        let response = self
            .http()
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport_after_answer)?;
        if status == 404 {
            return Err(BankError::NotFound);
        }
        if !(200..300).contains(&status) {
            return Err(BankError::Unexpected {
                status: Some(status),
                detail: "the authorisation server metadata could not be read".to_owned(),
            });
        }
        let metadata: OAuthMetadata = serde_json::from_slice(&body)
            .map_err(|e| crate::bank::nordea::errors::unreadable(status, &e))?;
        if !metadata.response_types_supported.is_empty()
            && !metadata
                .response_types_supported
                .iter()
                .any(|t| t == "code")
        {
            return Err(unexpected(
                "the bank's authorisation server offers no code flow",
            ));
        }
        if !metadata.code_challenge_methods_supported.is_empty()
            && !metadata
                .code_challenge_methods_supported
                .iter()
                .any(|m| m == "S256")
        {
            return Err(unexpected(
                "the bank's authorisation server offers no PKCE S256",
            ));
        }
        self.oauth_endpoint(&metadata.authorization_endpoint)?;
        self.oauth_endpoint(&metadata.token_endpoint)?;
        Ok(metadata)
    }

    /// Exchanges the code of an OAuth SCA with the authorisation's own verifier. Sent once.
    pub async fn oauth_exchange_code(
        &self,
        metadata: &OAuthMetadata,
        client_id: &str,
        code: &SecretString,
        redirect_uri: &str,
        verifier: &SecretString,
    ) -> Result<TokenSet, BankError> {
        let url = self.oauth_endpoint(&metadata.token_endpoint)?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code.expose_secret())
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("client_id", client_id)
            .append_pair("code_verifier", verifier.expose_secret())
            .finish();
        let response = self
            .http()
            .post(url)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.bytes().await.map_err(transport_after_answer)?;
        if !(200..300).contains(&status) {
            // OAuth errors (`invalid_grant`, …) read like Nordea's token endpoint's.
            return Err(crate::bank::nordea::errors::classify(
                status,
                retry_after,
                &body,
                false,
            ));
        }
        let answer = nordea_wire::TokenAnswer::from_json(&body)
            .map_err(|e| crate::bank::nordea::errors::unreadable(status, &e))?;
        nordea_convert::token_set(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::berlin_group::client::tests::test_client;
    use serde_json::json;
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[test]
    fn berlin_group_oauth_pkce_is_s256_and_fresh_per_authorisation() {
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let a = Pkce::generate();
        let b = Pkce::generate();
        assert_eq!(a.verifier.expose_secret().len(), 43);
        assert_ne!(a.verifier.expose_secret(), b.verifier.expose_secret());
        assert_eq!(a.challenge, challenge(a.verifier.expose_secret()));
        assert!(!format!("{a:?}").contains(a.verifier.expose_secret()));
    }

    #[tokio::test]
    async fn berlin_group_oauth_metadata_authorization_url_and_code_exchange() {
        let server = MockServer::start().await;
        let base = server.uri();
        Mock::given(method("GET"))
            .and(path("/psd2/.well-known/oauth-authorization-server"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "issuer": base, "authorization_endpoint": format!("{base}/oauth/authorize"),
                "token_endpoint": format!("{base}/oauth/token"),
                "response_types_supported": ["code"], "code_challenge_methods_supported": ["plain", "S256"]
            })))
            .mount(&server)
            .await;
        let pkce = Pkce::generate();
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .and(body_string_contains(format!(
                "code_verifier={}",
                pkce.verifier.expose_secret()
            )))
            .and(body_string_contains("grant_type=authorization_code"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "at", "token_type": "Bearer", "expires_in": 300
            })))
            .expect(1)
            .mount(&server)
            .await;
        let client = test_client(&server);
        let metadata = client
            .oauth_metadata("/psd2/.well-known/oauth-authorization-server")
            .await
            .unwrap();
        let url = authorization_url(
            &metadata,
            "PSDFI-FINFSA-1234",
            "https://pisgate.example/cb",
            "PIS:p1",
            "st",
            &pkce,
        )
        .unwrap();
        let parsed = Url::parse(&url).unwrap();
        let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], pkce.challenge);
        assert_eq!(q["scope"], "PIS:p1");
        assert_eq!(q["state"], "st");
        assert!(!url.contains(pkce.verifier.expose_secret()));
        let tokens = client
            .oauth_exchange_code(
                &metadata,
                "PSDFI-FINFSA-1234",
                &SecretString::from("code-1"),
                "https://pisgate.example/cb",
                &pkce.verifier,
            )
            .await
            .unwrap();
        assert_eq!(tokens.access_token.expose_secret(), "at");
    }

    #[tokio::test]
    async fn berlin_group_oauth_refuses_plain_only_servers_and_foreign_http_endpoints() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "authorization_endpoint": "https://bank.example/authorize",
                "token_endpoint": "https://bank.example/token",
                "code_challenge_methods_supported": ["plain"]
            })))
            .mount(&server)
            .await;
        let client = test_client(&server);
        assert!(client.oauth_metadata("/meta").await.is_err());
        assert!(
            client
                .oauth_metadata("http://evil.example/meta")
                .await
                .is_err()
        );
    }
}
