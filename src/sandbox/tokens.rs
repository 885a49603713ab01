//! Authorization codes and the PSU's single-SCA tokens.
//!
//! A code is issued when the PSU approves a payment, is bound to that payment's
//! `redirect_uri`, expires after `code_lifetime` and can be exchanged exactly once. Every
//! exchange and every refresh issues a new pair for the PSU and revokes all of that PSU's
//! older tokens (the v2.1 change log: "the previous tokens are automatically revoked"). A
//! refresh token works once. Revoking a token revokes its whole grant (the access and refresh
//! token issued together).
//!
//! With token identity on ([`super::Sandbox::set_token_identity`], setting
//! `sandbox.token_identity`), every token answer also carries an `id_token`: an unsigned JWT
//! `base64url({"alg":"none","typ":"JWT"}).base64url(claims).` (no padding, empty signature
//! part) whose claims are `{"sub": <the PSU id>, "iat": <issue time on the sandbox clock,
//! fractional seconds with six decimals, e.g. 1795000000.123456>}`. That is the shape
//! pisgate's Nordea client reads (`bank::nordea::convert`).

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::SandboxConfig;
use super::payments::BankState;
use super::wire::{ApiError, random_hex};

#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    pub psu: String,
    pub redirect_uri: String,
    pub expires_at: DateTime<Utc>,
    pub used: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub psu: String,
    pub grant: u64,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshToken {
    pub psu: String,
    pub grant: u64,
    pub used: bool,
    pub revoked: bool,
}

/// The unsigned ID token of a token answer: `sub` is the PSU, `iat` the issue time in
/// seconds with exactly six decimals (written as text, so no float rounds it).
pub(crate) fn id_token(psu: &str, issued_at: DateTime<Utc>) -> String {
    let micros = issued_at.timestamp_micros();
    let claims = format!(
        "{{\"sub\":{},\"iat\":{}.{:06}}}",
        Value::from(psu),
        micros.div_euclid(1_000_000),
        micros.rem_euclid(1_000_000)
    );
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.as_bytes())
    )
}

fn lifetime(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl BankState {
    pub fn issue_code(
        &mut self,
        psu: &str,
        redirect_uri: &str,
        now: DateTime<Utc>,
        cfg: &SandboxConfig,
    ) -> String {
        let code = random_hex(24);
        self.codes.insert(
            code.clone(),
            AuthCode {
                psu: psu.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                expires_at: now + lifetime(cfg.code_lifetime),
                used: false,
            },
        );
        code
    }

    /// Issues a new pair for `psu`, revoking every older token of that PSU; with
    /// `identity`, the answer carries an `id_token` (see the module doc).
    fn issue_tokens(
        &mut self,
        psu: &str,
        now: DateTime<Utc>,
        cfg: &SandboxConfig,
        identity: bool,
    ) -> Value {
        for t in self.access_tokens.values_mut().filter(|t| t.psu == psu) {
            t.revoked = true;
        }
        for t in self.refresh_tokens.values_mut().filter(|t| t.psu == psu) {
            t.revoked = true;
        }
        self.next_grant += 1;
        let grant = self.next_grant;
        let access = random_hex(32);
        let refresh = random_hex(32);
        self.access_tokens.insert(
            access.clone(),
            AccessToken {
                psu: psu.to_owned(),
                grant,
                expires_at: now + lifetime(cfg.access_token_lifetime),
                revoked: false,
            },
        );
        self.refresh_tokens.insert(
            refresh.clone(),
            RefreshToken {
                psu: psu.to_owned(),
                grant,
                used: false,
                revoked: false,
            },
        );
        let mut answer = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": cfg.access_token_lifetime.as_secs(),
            "refresh_token": refresh,
        });
        if identity {
            answer["id_token"] = json!(id_token(psu, now));
        }
        answer
    }

    pub fn exchange_code(
        &mut self,
        code: &str,
        redirect_uri: &str,
        now: DateTime<Utc>,
        cfg: &SandboxConfig,
        identity: bool,
    ) -> Result<Value, ApiError> {
        let entry = self
            .codes
            .get_mut(code)
            .ok_or_else(|| ApiError::token("The authorization code is unknown."))?;
        if entry.used {
            return Err(ApiError::token(
                "The authorization code has already been used.",
            ));
        }
        if now >= entry.expires_at {
            return Err(ApiError::token("The authorization code has expired."));
        }
        if entry.redirect_uri != redirect_uri {
            return Err(ApiError::token(
                "redirect_uri does not match the one the code was issued for.",
            ));
        }
        entry.used = true;
        let psu = entry.psu.clone();
        Ok(self.issue_tokens(&psu, now, cfg, identity))
    }

    pub fn refresh(
        &mut self,
        refresh_token: &str,
        now: DateTime<Utc>,
        cfg: &SandboxConfig,
        identity: bool,
    ) -> Result<Value, ApiError> {
        let entry = self
            .refresh_tokens
            .get_mut(refresh_token)
            .ok_or_else(|| ApiError::token("The refresh token is unknown."))?;
        if entry.used {
            return Err(ApiError::token("The refresh token has already been used."));
        }
        if entry.revoked {
            return Err(ApiError::token("The refresh token has been revoked."));
        }
        let psu = entry.psu.clone();
        if cfg.refresh_keeps_refresh_token {
            // The same grant goes on with a new access token; the refresh token stays.
            let grant = entry.grant;
            for t in self.access_tokens.values_mut().filter(|t| t.psu == psu) {
                t.revoked = true;
            }
            let access = random_hex(32);
            self.access_tokens.insert(
                access.clone(),
                AccessToken {
                    psu: psu.clone(),
                    grant,
                    expires_at: now + lifetime(cfg.access_token_lifetime),
                    revoked: false,
                },
            );
            let mut answer = json!({
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": cfg.access_token_lifetime.as_secs(),
            });
            if identity {
                answer["id_token"] = json!(id_token(&psu, now));
            }
            return Ok(answer);
        }
        entry.used = true;
        Ok(self.issue_tokens(&psu, now, cfg, identity))
    }

    /// Revokes the grant a refresh (or access) token belongs to. Unknown tokens are not an
    /// error (RFC 7009).
    pub fn revoke(&mut self, token: &str) {
        let grant = self
            .refresh_tokens
            .get(token)
            .map(|t| t.grant)
            .or_else(|| self.access_tokens.get(token).map(|t| t.grant));
        if let Some(g) = grant {
            for t in self.access_tokens.values_mut().filter(|t| t.grant == g) {
                t.revoked = true;
            }
            for t in self.refresh_tokens.values_mut().filter(|t| t.grant == g) {
                t.revoked = true;
            }
        }
    }

    /// The PSU a live access token belongs to.
    pub fn bearer_psu(&self, access_token: &str, now: DateTime<Utc>) -> Result<String, ApiError> {
        let invalid = |d: &str| ApiError::unauthorized("error.token.invalid", d, "Authorization");
        let t = self
            .access_tokens
            .get(access_token)
            .ok_or_else(|| invalid("The access token is unknown."))?;
        if t.revoked {
            return Err(invalid("The access token has been revoked."));
        }
        if now >= t.expires_at {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "error.token.expired",
                "The access token has expired.",
                "Authorization",
            ));
        }
        Ok(t.psu.clone())
    }
}
