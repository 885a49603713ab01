//! SEB's non-2xx answers as [`BankError`], on top of the Berlin Group reading
//! ([`crate::bank::berlin_group::errors`]): SEB answers RFC 9457 problem+json
//! (`{"type","title","status","detail","code"?,"instance"?}`), its auth API names the
//! problem only in `type` (`https://authorize.sebgroup.com/problems/invalid-client`), and
//! `type` may be `about:blank` or a URI pisgate has never seen.
//!
//! Order of decision, first match wins:
//! 1. a `CERTIFICATE_*`/`ROLE_INVALID` code → `BadCredentials` (our QWAC);
//! 2. `invalid-client` (auth API) → `BadCredentials` (our client id or secret);
//! 3. `invalid-refresh-token` → `TokenRejected` (the shopper's refresh token is dead);
//! 4. 401 on a call made with the shopper's token → `TokenRejected`;
//! 5. everything else as for a Berlin Group bank (429 rate limited, 404 not found but
//!    `PRODUCT_UNKNOWN`, 408/5xx unavailable with `retry_safe` only for a 503 with SEB's own
//!    error body, other 4xx with a reason → `Validation` with the reason's `path`).
//!
//! Texts hold codes and SEB's texts, never bodies, headers, tokens or URLs.

use crate::bank::berlin_group::errors::{classify_failures, failures as bg_failures};
use crate::bank::{BankError, BankFailure};
use serde::Deserialize;
use std::time::Duration;

/// The parts of a problem+json the Berlin Group reading does not take.
#[derive(Deserialize, Default)]
struct Problem {
    #[serde(rename = "type", default)]
    problem_type: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    /// The field a refusal concerns, when SEB (or its simulator) says so.
    #[serde(default)]
    path: Option<String>,
}

/// The problem's name from its `type` URI: its last path segment (`invalid-client`), or
/// `None` for `about:blank` and anything without one.
fn type_code(problem_type: &str) -> Option<String> {
    let t = problem_type.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("about:blank") {
        return None;
    }
    let last = t.trim_end_matches('/').rsplit('/').next()?;
    let ok = !last.is_empty()
        && last.len() <= 64
        && !last.contains(':')
        && last
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| last.to_owned())
}

/// Every reason an SEB error body gives.
pub fn failures(body: &[u8]) -> Vec<BankFailure> {
    let mut out = bg_failures(body);
    let Ok(problem) = serde_json::from_slice::<Problem>(body) else {
        return out;
    };
    match problem.code {
        // The Berlin Group reading took the code; add the problem's path to it.
        Some(code) => {
            if let Some(f) = out.iter_mut().find(|f| f.code == code && f.path.is_none()) {
                f.path = problem.path;
            }
        }
        None => {
            if let Some(code) = problem.problem_type.as_deref().and_then(type_code) {
                out.push(BankFailure {
                    code,
                    description: problem.detail.or(problem.title),
                    path: problem.path,
                });
            }
        }
    }
    out
}

/// Maps a non-2xx answer. `with_token`: the call carried the shopper's access token.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    with_token: bool,
) -> BankError {
    let failures = failures(body);
    let has = |pred: &dyn Fn(&str) -> bool| failures.iter().find(|f| pred(&f.code));
    if let Some(f) = has(&|c| c.starts_with("CERTIFICATE_") || c == "ROLE_INVALID") {
        return BankError::BadCredentials {
            code: f.code.clone(),
        };
    }
    if let Some(f) = has(&|c| c == "invalid-client" || c == "invalid_client") {
        return BankError::BadCredentials {
            code: f.code.clone(),
        };
    }
    if has(&|c| c == "invalid-refresh-token").is_some() {
        return BankError::TokenRejected;
    }
    if status == 401 && with_token {
        return BankError::TokenRejected;
    }
    classify_failures(status, retry_after, failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn seb_a_401_with_the_shoppers_token_is_a_dead_token_without_it_our_credentials() {
        let problem = body(json!({"type": "about:blank", "title": "Unauthorized", "status": 401}));
        assert_eq!(
            classify(401, None, &problem, true),
            BankError::TokenRejected
        );
        assert!(matches!(
            classify(401, None, &problem, false),
            BankError::BadCredentials { .. }
        ));
        // Our certificate is never the shopper's token.
        let cert = body(json!({"type": "t", "status": 401, "code": "CERTIFICATE_INVALID"}));
        assert_eq!(
            classify(401, None, &cert, true),
            BankError::BadCredentials {
                code: "CERTIFICATE_INVALID".into()
            }
        );
    }

    #[test]
    fn seb_auth_problems_are_named_by_their_type() {
        let client = body(json!({
            "type": "https://authorize.sebgroup.com/problems/invalid-client",
            "title": "Invalid parameter value", "status": 400, "detail": "unknown client"
        }));
        assert_eq!(
            classify(400, None, &client, false),
            BankError::BadCredentials {
                code: "invalid-client".into()
            }
        );
        // SEB's own example of a refused refresh token (v4 migration notes).
        let refresh = body(json!({
            "type": "https://authorize.sebgroup.com/problems/invalid-refresh-token",
            "title": "Invalid parameter value", "status": 400,
            "detail": "The provided refresh token is invalid", "instance": "/auth/v4/tokens"
        }));
        assert_eq!(
            classify(400, None, &refresh, false),
            BankError::TokenRejected
        );
        let used = body(json!({
            "type": "https://authorize.sebgroup.com/problems/invalid-auth-req-id",
            "title": "Invalid parameter value", "status": 400, "detail": "already used"
        }));
        let BankError::Validation { failures } = classify(400, None, &used, false) else {
            panic!("not a validation");
        };
        assert_eq!(failures[0].code, "invalid-auth-req-id");
        assert_eq!(failures[0].description.as_deref(), Some("already used"));
    }

    #[test]
    fn seb_format_errors_name_the_field_and_unknown_types_are_handled() {
        let format = body(json!({
            "type": "https://berlingroup.com/error-codes/FORMAT_ERROR", "title": "Format error",
            "status": 400, "code": "FORMAT_ERROR", "detail": "bad check digit",
            "path": "remittanceInformationStructured.reference"
        }));
        let BankError::Validation { failures } = classify(400, None, &format, true) else {
            panic!("not a validation");
        };
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].code, "FORMAT_ERROR");
        assert_eq!(
            failures[0].path.as_deref(),
            Some("remittanceInformationStructured.reference")
        );
        // SEB's signing API example: RESOURCE_UNKNOWN with `status`.
        let unknown = body(json!({
            "type": "https://sign.seb.se/error-codes/RESOURCE_UNKNOWN",
            "title": "The addressed resource is unknown relative to the API Client.",
            "detail": "The provided authorisationId is unknown", "status": 404, "code": "RESOURCE_UNKNOWN"
        }));
        assert_eq!(classify(404, None, &unknown, true), BankError::NotFound);
        let product = body(json!({"type": "x", "status": 404, "code": "PRODUCT_UNKNOWN"}));
        assert!(matches!(
            classify(404, None, &product, true),
            BankError::Validation { .. }
        ));
        let blank = body(json!({"type": "about:blank", "title": "Bad Request", "status": 400}));
        assert!(matches!(
            classify(400, None, &blank, true),
            BankError::Unexpected {
                status: Some(400),
                ..
            }
        ));
        assert!(matches!(
            classify(400, None, b"not json", true),
            BankError::Unexpected { .. }
        ));
    }

    #[test]
    fn seb_only_its_own_503_is_retry_safe() {
        let own =
            body(json!({"type": "about:blank", "status": 503, "code": "SERVICE_UNAVAILABLE"}));
        assert!(matches!(
            classify(503, None, &own, true),
            BankError::Unavailable {
                retry_safe: true,
                ..
            }
        ));
        for status in [500, 502, 503, 504, 408] {
            assert!(
                matches!(
                    classify(status, None, b"<html>gateway</html>", true),
                    BankError::Unavailable {
                        retry_safe: false,
                        ..
                    }
                ),
                "{status}"
            );
        }
    }
}
