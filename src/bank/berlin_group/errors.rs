//! Turns a Berlin Group bank's non-2xx answers into [`BankError`]; transport failures are
//! read as for Nordea ([`crate::bank::nordea::errors::transport`]).
//!
//! Both error shapes are read: `{"tppMessages": [{category, code, path, text}]}` and
//! problem+json `{type, title, detail, code, additionalErrors}`. Order of decision, first
//! match wins:
//! 1. `CERTIFICATE_*` or `ROLE_INVALID` → `BadCredentials` (our QSealC: configuration);
//! 2. `SIGNATURE_*` → `BadSignature`; `TIMESTAMP_INVALID` → `ClockRejected`;
//! 3. 429 → `RateLimited` with `Retry-After`;
//! 4. any other 401 → `BadCredentials`;
//! 5. 404 → `NotFound`, except `PRODUCT_UNKNOWN` (a product this bank does not offer: a
//!    configuration fault of the products per currency) → `Validation`;
//! 6. 408 and 5xx → `Unavailable`, `retry_safe` only for a 503 with the bank's own error
//!    body (a bare 503, 502 or 504 may come from a gateway that passed the request on);
//! 7. other 4xx but 403 with reasons → `Validation` (the `path` names the field);
//! 8. everything else → `Unexpected`.
//!
//! Texts hold codes and the bank's texts, never bodies, headers or URLs.

use super::wire::ErrorAnswer;
use crate::bank::{BankError, BankFailure};
use std::time::Duration;

/// Every reason an error body gives, in the bank-neutral shape.
pub fn failures(body: &[u8]) -> Vec<BankFailure> {
    let Ok(answer) = serde_json::from_slice::<ErrorAnswer>(body) else {
        return Vec::new();
    };
    let mut out: Vec<BankFailure> = answer
        .tpp_messages
        .into_iter()
        .map(|m| BankFailure {
            code: m.code,
            description: m.text,
            path: m.path,
        })
        .collect();
    if let Some(code) = answer.code {
        out.push(BankFailure {
            code,
            description: answer.detail.or(answer.title),
            path: None,
        });
    }
    out.extend(answer.additional_errors.into_iter().map(|e| BankFailure {
        code: e.code,
        description: e.detail.or(e.title),
        path: None,
    }));
    out
}

fn is_certificate_code(code: &str) -> bool {
    code.starts_with("CERTIFICATE_") || code == "ROLE_INVALID"
}

/// Maps a non-2xx answer.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> BankError {
    classify_failures(status, retry_after, failures(body))
}

/// Maps a non-2xx answer whose reasons are already read (shared with SEB's adapter, which
/// reads its problem+json `type` too).
pub fn classify_failures(
    status: u16,
    retry_after: Option<Duration>,
    failures: Vec<BankFailure>,
) -> BankError {
    let code_where = |pred: &dyn Fn(&str) -> bool| {
        failures
            .iter()
            .find(|f| pred(&f.code))
            .map(|f| f.code.clone())
    };
    if let Some(code) = code_where(&is_certificate_code) {
        return BankError::BadCredentials { code };
    }
    if let Some(code) = code_where(&|c| c.starts_with("SIGNATURE_")) {
        return BankError::BadSignature { code };
    }
    if let Some(code) = code_where(&|c| c == "TIMESTAMP_INVALID") {
        return BankError::ClockRejected { code };
    }
    if status == 429 {
        return BankError::RateLimited { retry_after };
    }
    match status {
        401 => BankError::BadCredentials {
            code: failures
                .first()
                .map(|f| f.code.clone())
                .unwrap_or_else(|| "http_401".to_owned()),
        },
        404 if code_where(&|c| c == "PRODUCT_UNKNOWN").is_some() => {
            BankError::Validation { failures }
        }
        404 => BankError::NotFound,
        408 | 500..=599 => BankError::Unavailable {
            detail: format!("HTTP {status}"),
            retry_safe: status == 503 && !failures.is_empty(),
        },
        400..=499 if status != 403 && !failures.is_empty() => BankError::Validation { failures },
        _ => BankError::Unexpected {
            status: Some(status),
            detail: if failures.is_empty() {
                "no error body we could read".to_owned()
            } else {
                failures
                    .iter()
                    .map(|f| f.code.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tpp(code: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"tppMessages": [{"category": "ERROR", "code": code, "path": "creditorName", "text": "t"}]})).unwrap()
    }

    #[test]
    fn berlin_group_error_codes_map_to_bank_errors() {
        assert_eq!(
            classify(400, None, &tpp("FORMAT_ERROR")),
            BankError::Validation {
                failures: vec![BankFailure {
                    code: "FORMAT_ERROR".into(),
                    description: Some("t".into()),
                    path: Some("creditorName".into())
                }]
            }
        );
        assert_eq!(
            classify(401, None, &tpp("SIGNATURE_INVALID")),
            BankError::BadSignature {
                code: "SIGNATURE_INVALID".into()
            }
        );
        for code in [
            "CERTIFICATE_INVALID",
            "CERTIFICATE_EXPIRED",
            "CERTIFICATE_MISSING",
            "ROLE_INVALID",
        ] {
            assert_eq!(
                classify(401, None, &tpp(code)),
                BankError::BadCredentials { code: code.into() }
            );
        }
        assert_eq!(
            classify(400, None, &tpp("TIMESTAMP_INVALID")),
            BankError::ClockRejected {
                code: "TIMESTAMP_INVALID".into()
            }
        );
        assert_eq!(
            classify(404, None, &tpp("RESOURCE_UNKNOWN")),
            BankError::NotFound
        );
        assert!(matches!(
            classify(404, None, &tpp("PRODUCT_UNKNOWN")),
            BankError::Validation { .. }
        ));
        assert_eq!(
            classify(429, Some(Duration::from_secs(7)), &tpp("ACCESS_EXCEEDED")),
            BankError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert!(matches!(
            classify(409, None, &tpp("STATUS_INVALID")),
            BankError::Validation { .. }
        ));
        assert!(matches!(
            classify(403, None, &tpp("RESOURCE_UNKNOWN")),
            BankError::Unexpected {
                status: Some(403),
                ..
            }
        ));
    }

    #[test]
    fn berlin_group_only_a_503_with_the_banks_body_is_retry_safe() {
        let unavailable = |retry_safe| BankError::Unavailable {
            detail: String::new(),
            retry_safe,
        };
        let strip = |e: BankError| match e {
            BankError::Unavailable { retry_safe, .. } => unavailable(retry_safe),
            other => other,
        };
        assert_eq!(
            strip(classify(503, None, &tpp("SERVICE_UNAVAILABLE"))),
            unavailable(true)
        );
        for status in [500, 502, 503, 504, 408] {
            assert_eq!(
                strip(classify(status, None, b"<html>gateway</html>")),
                unavailable(false),
                "{status}"
            );
        }
    }

    #[test]
    fn berlin_group_problem_json_errors_are_read() {
        let body = serde_json::to_vec(&json!({
            "type": "https://berlingroup.com/error-codes/SIGNATURE_INVALID",
            "title": "Signature invalid", "code": "SIGNATURE_INVALID"
        }))
        .unwrap();
        assert_eq!(
            classify(401, None, &body),
            BankError::BadSignature {
                code: "SIGNATURE_INVALID".into()
            }
        );
        let body = serde_json::to_vec(&json!({
            "type": "t", "code": "FORMAT_ERROR", "detail": "creditorName too long",
            "additionalErrors": [{"code": "PERIOD_INVALID", "title": "dates"}]
        }))
        .unwrap();
        let BankError::Validation { failures } = classify(400, None, &body) else {
            panic!("not a validation");
        };
        assert_eq!(failures.len(), 2);
        assert_eq!(
            failures[0].description.as_deref(),
            Some("creditorName too long")
        );
    }
}
