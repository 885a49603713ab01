//! OP's JOSE: the request object pisgate signs with its QSealC key, the ID tokens OP signs
//! (front channel and token endpoint), OP's detached signatures on payment answers, and the
//! JWKS they are checked against (fetched when a `kid` is unknown, at most once a minute).
//!
//! Built on `jsonwebtoken` (no hand-rolled JWS): only RS256 and PS256 are ever accepted;
//! `none`, HS* and every other algorithm are refused before any key is looked at.
//!
//! Never: put a token, code, state, nonce or key into an error or a log line. An ID token
//! refusal names the claim (`ID_TOKEN_INVALID`, path `id_token.<claim>`), never its value.

use crate::bank::{BankError, BankFailure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The prefix of the nonce derivation (contract §3).
const NONCE_PREFIX: &str = "pisgate-oidc-nonce:";
/// The PSD2 SCA `acr` value pisgate asks for as essential.
pub const ACR_SCA: &str = "urn:openbanking:psd2:sca";
/// Clock leeway for `exp`/`nbf`/`iat` (contract §3: 60 s).
pub const LEEWAY_SECS: u64 = 60;
/// A request object lives this long (`exp - iat`).
pub const REQUEST_OBJECT_TTL_SECS: i64 = 600;
/// The algorithms OP's signatures may use.
const ACCEPTED: [Algorithm; 2] = [Algorithm::RS256, Algorithm::PS256];

/// The OIDC nonce of a payment's authorization, derived from its state: base64url (no pad)
/// of SHA-256(`"pisgate-oidc-nonce:" + state`). pisgate stores the state only hashed, so
/// the exchange recomputes the nonce from the state that came back.
pub fn nonce_for(state: &str) -> String {
    B64.encode(Sha256::digest(format!("{NONCE_PREFIX}{state}").as_bytes()))
}

/// OIDC `c_hash`/`s_hash` (and `at_hash`) for RS256/PS256: base64url of the left half of
/// SHA-256 of the ASCII value.
pub fn half_hash(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    B64.encode(&digest[..16])
}

/// Constant-time equality of two short texts (hashes, nonces).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn unexpected(detail: impl Into<String>) -> BankError {
    BankError::Unexpected {
        status: None,
        detail: detail.into(),
    }
}

/// Why an ID token is refused: `ID_TOKEN_INVALID` naming the claim (never its value).
pub fn id_token_invalid(which: &str, claim: &str) -> BankError {
    BankError::Validation {
        failures: vec![BankFailure {
            code: "ID_TOKEN_INVALID".to_owned(),
            description: Some(format!("OP's {which} ID token: {claim} is not acceptable")),
            path: Some(format!("id_token.{claim}")),
        }],
    }
}

/// The request object's signing algorithm (`request_object_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestObjectAlg {
    Rs256,
    Ps256,
}

impl RequestObjectAlg {
    pub fn parse(text: &str) -> Option<RequestObjectAlg> {
        match text.trim().to_ascii_uppercase().as_str() {
            "RS256" => Some(RequestObjectAlg::Rs256),
            "PS256" => Some(RequestObjectAlg::Ps256),
            _ => None,
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            RequestObjectAlg::Rs256 => Algorithm::RS256,
            RequestObjectAlg::Ps256 => Algorithm::PS256,
        }
    }
}

/// pisgate's request-object signer: the QSealC's RSA key, its `kid` and the algorithm.
pub struct RequestSigner {
    key: EncodingKey,
    kid: String,
    alg: RequestObjectAlg,
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSigner")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl RequestSigner {
    /// From an RSA private key in PEM (PKCS#8 or PKCS#1). The error never quotes the key.
    pub fn from_pem(pem: &[u8], kid: &str, alg: RequestObjectAlg) -> Result<Self, String> {
        let key = EncodingKey::from_rsa_pem(pem)
            .map_err(|_| "the QSealC private key is not an RSA private key in PEM".to_owned())?;
        Ok(RequestSigner {
            key,
            kid: kid.to_owned(),
            alg,
        })
    }

    /// The compact JWS of `claims`, header `{"alg","typ":"JWT","kid"}`.
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, BankError> {
        let mut header = Header::new(self.alg.algorithm());
        header.typ = Some("JWT".to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|_| unexpected("could not sign the request object with the QSealC key"))
    }
}

/// One essential claim request (`{"value","essential":true}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Essential {
    pub value: String,
    pub essential: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EssentialValues {
    pub essential: bool,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserinfoClaims {
    pub authorization_id: Essential,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdTokenClaimsRequest {
    pub authorization_id: Essential,
    pub acr: EssentialValues,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimsRequest {
    pub userinfo: UserinfoClaims,
    pub id_token: IdTokenClaimsRequest,
}

/// The request object's claims (contract §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestObject {
    pub iss: String,
    pub aud: String,
    pub client_id: String,
    pub response_type: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: String,
    pub nonce: String,
    pub max_age: u64,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub claims: ClaimsRequest,
}

impl RequestObject {
    pub const RESPONSE_TYPE: &str = "code id_token";
    pub const SCOPE: &str = "openid payments";

    /// The claims for one payment's authorization at `now` (Unix seconds).
    pub fn new(
        client_id: &str,
        audience: &str,
        redirect_uri: &str,
        state: &str,
        authorization_id: &str,
        now: i64,
    ) -> RequestObject {
        let authorization = Essential {
            value: authorization_id.to_owned(),
            essential: true,
        };
        RequestObject {
            iss: client_id.to_owned(),
            aud: audience.to_owned(),
            client_id: client_id.to_owned(),
            response_type: Self::RESPONSE_TYPE.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            scope: Self::SCOPE.to_owned(),
            state: state.to_owned(),
            nonce: nonce_for(state),
            max_age: 86_400,
            iat: now,
            nbf: now,
            exp: now + REQUEST_OBJECT_TTL_SECS,
            jti: uuid::Uuid::new_v4().to_string(),
            claims: ClaimsRequest {
                userinfo: UserinfoClaims {
                    authorization_id: authorization.clone(),
                },
                id_token: IdTokenClaimsRequest {
                    authorization_id: authorization,
                    acr: EssentialValues {
                        essential: true,
                        values: vec![ACR_SCA.to_owned()],
                    },
                },
            },
        }
    }
}

/// A JWKS fetched from a URL and cached; re-fetched when a `kid` is unknown, at most once
/// per `min_refetch` (a minute by default), so that a flood of forged `kid`s cannot make
/// pisgate hammer OP.
pub struct Jwks {
    url: reqwest::Url,
    http: reqwest::Client,
    min_refetch: Duration,
    state: Mutex<JwksState>,
}

#[derive(Default)]
struct JwksState {
    keys: Vec<(Option<String>, DecodingKey)>,
    last_fetch: Option<Instant>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Jwks {
    pub const MIN_REFETCH: Duration = Duration::from_secs(60);

    pub fn new(url: reqwest::Url, http: reqwest::Client) -> Jwks {
        Jwks {
            url,
            http,
            min_refetch: Self::MIN_REFETCH,
            state: Mutex::new(JwksState::default()),
        }
    }

    #[cfg(test)]
    pub fn with_min_refetch(mut self, min: Duration) -> Jwks {
        self.min_refetch = min;
        self
    }

    /// The verification key for `kid` (or the only key, when the header names none).
    /// `Ok(None)`: not in the set even after a (rate-limited) re-fetch.
    pub async fn key(&self, kid: Option<&str>) -> Result<Option<DecodingKey>, BankError> {
        let mut state = self.state.lock().await;
        if let Some(key) = find(&state.keys, kid) {
            return Ok(Some(key));
        }
        let due = state
            .last_fetch
            .is_none_or(|at| at.elapsed() >= self.min_refetch);
        if !due {
            return Ok(None);
        }
        state.last_fetch = Some(Instant::now());
        state.keys = self.fetch().await?;
        Ok(find(&state.keys, kid))
    }

    async fn fetch(&self) -> Result<Vec<(Option<String>, DecodingKey)>, BankError> {
        let answer = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(crate::bank::nordea::errors::transport)?;
        let status = answer.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(BankError::Unavailable {
                detail: format!("OP's JWKS answered HTTP {status}"),
                retry_safe: true,
            });
        }
        let body = answer
            .bytes()
            .await
            .map_err(crate::bank::nordea::errors::transport_after_answer)?;
        let set: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| crate::bank::nordea::errors::unreadable(status, &e))?;
        let mut keys = Vec::new();
        // One key at a time: a key type we cannot read does not hide the others.
        for value in set
            .get("keys")
            .and_then(|k| k.as_array())
            .into_iter()
            .flatten()
        {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
                continue;
            };
            if let Some(key) = rsa_key(&jwk) {
                keys.push((jwk.common.key_id.clone(), key));
            }
        }
        if keys.is_empty() {
            return Err(unexpected("OP's JWKS holds no RSA key pisgate can use"));
        }
        Ok(keys)
    }
}

fn rsa_key(jwk: &Jwk) -> Option<DecodingKey> {
    match &jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => DecodingKey::from_jwk(jwk).ok(),
        _ => None,
    }
}

fn find(keys: &[(Option<String>, DecodingKey)], kid: Option<&str>) -> Option<DecodingKey> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|(k, _)| k.as_deref() == Some(kid))
            .map(|(_, key)| key.clone()),
        None if keys.len() == 1 => Some(keys[0].1.clone()),
        None => None,
    }
}

/// What an ID token must say (contract §3).
pub struct IdTokenExpectations<'a> {
    /// `front channel` or `token endpoint`, for the refusal's text.
    pub which: &'a str,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub authorization_id: &'a str,
    /// The code, when `c_hash` must match it (front channel).
    pub code: Option<&'a str>,
    /// The state, when `s_hash` must match it (front channel).
    pub state: Option<&'a str>,
}

/// The claims pisgate reads from a valid ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default, rename = "authorizationId")]
    pub authorization_id: Option<String>,
    #[serde(default)]
    pub c_hash: Option<String>,
    #[serde(default)]
    pub s_hash: Option<String>,
    #[serde(default)]
    pub acr: Option<String>,
}

/// Validates an ID token: signature by OP's JWKS (RS256/PS256 only), `iss`, `aud`, `exp`
/// (60 s leeway), `nonce`, `authorizationId`, and `c_hash`/`s_hash` where expected.
pub async fn validate_id_token(
    jwks: &Jwks,
    token: &str,
    expect: &IdTokenExpectations<'_>,
) -> Result<IdClaims, BankError> {
    let refuse = |claim: &str| id_token_invalid(expect.which, claim);
    // `alg: none` and unknown algorithms fail here (the header does not parse).
    let header = jsonwebtoken::decode_header(token).map_err(|_| refuse("alg"))?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(refuse("alg"));
    }
    let key = jwks
        .key(header.kid.as_deref())
        .await?
        .ok_or_else(|| refuse("kid"))?;
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.set_issuer(&[expect.issuer]);
    validation.set_audience(&[expect.client_id]);
    let data = jsonwebtoken::decode::<IdClaims>(token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        refuse(match e.kind() {
            K::InvalidSignature => "signature",
            K::InvalidIssuer => "iss",
            K::InvalidAudience => "aud",
            K::ExpiredSignature => "exp",
            K::ImmatureSignature => "nbf",
            K::InvalidAlgorithm | K::MissingAlgorithm => "alg",
            K::MissingRequiredClaim(c) | K::InvalidClaimFormat(c) => match c.as_str() {
                "exp" => "exp",
                "iss" => "iss",
                "aud" => "aud",
                "nbf" => "nbf",
                _ => "format",
            },
            _ => "format",
        })
    })?;
    let claims = data.claims;
    if !claims
        .nonce
        .as_deref()
        .is_some_and(|n| same(n, expect.nonce))
    {
        return Err(refuse("nonce"));
    }
    if claims.authorization_id.as_deref() != Some(expect.authorization_id) {
        return Err(refuse("authorizationId"));
    }
    if let Some(code) = expect.code
        && !claims
            .c_hash
            .as_deref()
            .is_some_and(|h| same(h, &half_hash(code)))
    {
        return Err(refuse("c_hash"));
    }
    if let Some(state) = expect.state
        && !claims
            .s_hash
            .as_deref()
            .is_some_and(|h| same(h, &half_hash(state)))
    {
        return Err(refuse("s_hash"));
    }
    Ok(claims)
}

/// Why a signed answer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerSignature {
    #[error("OP's answer carries no x-jws-signature")]
    Missing,
    #[error("OP's answer signature is not a detached compact JWS")]
    Malformed,
    #[error("OP's answer signature uses an algorithm pisgate does not accept")]
    Algorithm,
    #[error("OP's answer signature names a key OP's payments JWKS does not hold")]
    UnknownKey,
    #[error("OP's answer signature does not verify")]
    Invalid,
}

#[derive(Deserialize)]
struct JwsHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    b64: Option<bool>,
}

/// Checks `x-jws-signature` (RFC 7515 App. F detached payload: `<header>..<signature>` over
/// `<header>.<b64url body>`) against the payments JWKS. A JWKS OP cannot serve is an error
/// of its own (`Err(Err(BankError))`).
pub async fn verify_detached(
    jwks: &Jwks,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Result<(), AnswerSignature>, BankError> {
    let Some(signature) = signature.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(Err(AnswerSignature::Missing));
    };
    let mut parts = signature.split('.');
    let (Some(encoded_header), Some(""), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Err(AnswerSignature::Malformed));
    };
    let Some(header) = B64
        .decode(encoded_header)
        .ok()
        .and_then(|h| serde_json::from_slice::<JwsHeader>(&h).ok())
    else {
        return Ok(Err(AnswerSignature::Malformed));
    };
    if header.b64 == Some(false) {
        return Ok(Err(AnswerSignature::Malformed));
    }
    let alg = match header.alg.as_str() {
        "RS256" => Algorithm::RS256,
        "PS256" => Algorithm::PS256,
        _ => return Ok(Err(AnswerSignature::Algorithm)),
    };
    let Some(key) = jwks.key(header.kid.as_deref()).await? else {
        return Ok(Err(AnswerSignature::UnknownKey));
    };
    let message = format!("{encoded_header}.{}", B64.encode(body));
    match jsonwebtoken::crypto::verify(sig, message.as_bytes(), &key, alg) {
        Ok(true) => Ok(Ok(())),
        _ => Ok(Err(AnswerSignature::Invalid)),
    }
}

#[cfg(test)]
pub(crate) mod tests;
