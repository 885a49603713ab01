//! OP's non-2xx answers as [`BankError`].
//!
//! Business API (`/paymentsapi`): HTTP status + `{"code","message"}` (ASSUMED shape, contract
//! §2; OP's older published descriptor `{"errors":[{…,"code","message"}]}` is read too).
//! OAuth endpoints: RFC 6749 `{"error","error_description"}`. Order of decision:
//! 1. `FORBIDDEN_CLIENT` or `invalid_client` → `BadCredentials` (our QWAC or client);
//! 2. 429 → `RateLimited`;
//! 3. 401 → `TokenRejected` when the call carried the payment's own token (code exchange
//!    token), else `BadCredentials` (the client's token: the client retries once first);
//! 4. 404 → `NotFound`;
//! 5. 408/5xx → `Unavailable`, retry-safe only for a 503 with OP's own error body;
//! 6. other 4xx with a code → `Validation` (the code, OP's message);
//! 7. anything else → `Unexpected`.
//!
//! Texts hold OP's codes and messages, never bodies, headers, tokens or URLs.

use super::wire;
use crate::bank::{BankError, BankFailure};
use std::time::Duration;

fn codes(body: &[u8]) -> Option<(String, Option<String>)> {
    if let Ok(e) = serde_json::from_slice::<wire::ErrorBody>(body)
        && let Some(code) = e.code.filter(|c| !c.trim().is_empty())
    {
        return Some((code, e.message));
    }
    if let Ok(d) = serde_json::from_slice::<wire::ErrorDescriptor>(body)
        && let Some(e) = d.errors.into_iter().find(|e| e.code.is_some())
        && let Some(code) = e.code.filter(|c| !c.trim().is_empty())
    {
        return Some((code, e.message));
    }
    if let Ok(e) = serde_json::from_slice::<wire::OAuthError>(body)
        && let Some(code) = e.error.filter(|c| !c.trim().is_empty())
    {
        return Some((code, e.error_description));
    }
    None
}

/// A code fit for a log line and an error text: short, plain ASCII.
fn plain(code: String) -> String {
    if code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        code
    } else {
        "unreadable_code".to_owned()
    }
}

/// Maps a non-2xx answer. `with_payment_token`: the call carried the token from this
/// payment's code exchange (a submit), not the client-credentials token.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    with_payment_token: bool,
) -> BankError {
    let found = codes(body).map(|(c, m)| (plain(c), m));
    let code = found.as_ref().map(|(c, _)| c.as_str());
    if matches!(code, Some("FORBIDDEN_CLIENT" | "invalid_client")) {
        return BankError::BadCredentials {
            code: code.unwrap_or_default().to_owned(),
        };
    }
    if status == 429 {
        return BankError::RateLimited { retry_after };
    }
    match status {
        401 if with_payment_token => BankError::TokenRejected,
        401 => BankError::BadCredentials {
            code: code.unwrap_or("http_401").to_owned(),
        },
        404 => BankError::NotFound,
        408 | 500..=599 => BankError::Unavailable {
            detail: format!("HTTP {status}"),
            retry_safe: status == 503 && found.is_some(),
        },
        400..=499 if found.is_some() => {
            let (code, description) = found.unwrap_or_default();
            BankError::Validation {
                failures: vec![BankFailure {
                    code,
                    description,
                    path: None,
                }],
            }
        }
        _ => BankError::Unexpected {
            status: Some(status),
            detail: code
                .map(|c| format!("OP answered {c}"))
                .unwrap_or_else(|| "no error body we could read".to_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(code: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"code": code, "message": "refused"})).unwrap()
    }

    #[test]
    fn op_errors_map_to_the_bank_port() {
        assert_eq!(
            classify(403, None, &op("FORBIDDEN_CLIENT"), false),
            BankError::BadCredentials {
                code: "FORBIDDEN_CLIENT".into()
            }
        );
        let oauth = serde_json::to_vec(&json!({"error": "invalid_client"})).unwrap();
        assert!(classify(401, None, &oauth, false).is_configuration_fault());
        assert_eq!(
            classify(401, None, &op("UNAUTHORIZED"), true),
            BankError::TokenRejected
        );
        assert_eq!(
            classify(404, None, &op("PAYMENT_NOT_FOUND"), false),
            BankError::NotFound
        );
        let BankError::Validation { failures } =
            classify(409, None, &op("REVOKE_NOT_ALLOWED"), false)
        else {
            panic!()
        };
        assert_eq!(failures[0].code, "REVOKE_NOT_ALLOWED");
        assert_eq!(failures[0].description.as_deref(), Some("refused"));
        // OP's older published error descriptor is read too.
        let descriptor = serde_json::to_vec(&json!({"errors": [{
            "id": "G_-1", "level": "ERROR", "type": "BUSINESS",
            "message": "Account balance exceeded", "code": "ACC_ERR_123"
        }]}))
        .unwrap();
        let BankError::Validation { failures } = classify(400, None, &descriptor, false) else {
            panic!()
        };
        assert_eq!(failures[0].code, "ACC_ERR_123");
        let grant = serde_json::to_vec(&json!({"error": "invalid_grant"})).unwrap();
        assert!(matches!(
            classify(400, None, &grant, false),
            BankError::Validation { .. }
        ));
        assert!(classify(503, None, &op("MAINTENANCE"), false).provably_not_processed());
        assert!(!classify(503, None, b"", false).provably_not_processed());
        assert!(!classify(502, None, &op("X"), false).provably_not_processed());
        assert_eq!(
            classify(429, Some(Duration::from_secs(3)), b"", false),
            BankError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(
            classify(400, None, b"<html>", false),
            BankError::Unexpected {
                status: Some(400),
                ..
            }
        ));
        let BankError::Validation { failures } =
            classify(400, None, &op("a token: eyJhbGciOi.x.y with spaces"), false)
        else {
            panic!()
        };
        assert_eq!(failures[0].code, "unreadable_code");
    }
}
