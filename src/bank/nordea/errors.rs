//! Turns Nordea's non-2xx answers and transport failures into [`BankError`].
//!
//! Order of decision, first match wins:
//! 1. a failure code `unauthorized` or `error.apikey.*` → `BadCredentials` (our client id or
//!    secret: a configuration fault). Also on a bearer call: a wrong app credential must
//!    never make us throw away a shopper's token, which only the shopper can replace;
//! 2. `error.signature.*` / `error.digest.*` → `BadSignature`; `error.date.*` →
//!    `ClockRejected` (our originating date refused: this host's clock, a configuration
//!    fault; never a dead token, even on a bearer call);
//! 3. 429 → `RateLimited` with `Retry-After`;
//! 4. on a call whose credential is a shopper token (bearer calls, refresh, revoke): 401,
//!    or OAuth `invalid_grant`/`invalid_token` → `TokenRejected`;
//! 5. any other 401 → `BadCredentials`;
//! 6. 404 → `NotFound`; 408 and 5xx → `Unavailable`, with `retry_safe` only for a 503 that
//!    carries the bank's own error body (the bank says it is not serving requests). A bare
//!    503 (empty, HTML, anything but Nordea's error JSON) comes from a gateway, load
//!    balancer or proxy in front of the bank, which may have passed the request on before it
//!    gave up: its outcome is unknown, like that of 500, 502, 504 and 408;
//! 7. other 4xx (not 403) with failures or `tpp_messages` → `Validation`;
//! 8. everything else (403, a 4xx without reasons, 3xx) → `Unexpected`.
//!
//! A transport failure is `Unavailable` with `retry_safe` true only when reqwest says the
//! connection was never established ([`reqwest::Error::is_connect`]: refused, DNS failure,
//! connect timeout, TLS handshake): then no byte of the request reached the bank. A timeout
//! or a drop after sending, or a body that never fully arrived, is not retry-safe.
//!
//! Texts built here hold failure codes and the bank's descriptions, never bodies, headers,
//! URLs with secrets, or serde messages (which can quote the input).

use super::wire::{ErrorAnswer, ErrorField};
use crate::bank::{BankError, BankFailure};
use std::time::{Duration, SystemTime};

fn is_credentials_code(code: &str) -> bool {
    code.eq_ignore_ascii_case("unauthorized") || code.starts_with("error.apikey")
}

fn is_signature_code(code: &str) -> bool {
    code.starts_with("error.signature") || code.starts_with("error.digest")
}

fn is_date_code(code: &str) -> bool {
    code.starts_with("error.date")
}

fn is_dead_token_code(code: &str) -> bool {
    matches!(code, "invalid_grant" | "invalid_token")
}

/// Every reason an error body gives, in the bank-neutral shape.
pub fn failures(body: &[u8]) -> Vec<BankFailure> {
    let Ok(answer) = serde_json::from_slice::<ErrorAnswer>(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut tpp = answer.tpp_messages;
    match answer.error {
        Some(ErrorField::Detail(detail)) => {
            out.extend(detail.failures.into_iter().map(|f| BankFailure {
                code: f.code,
                description: f.description,
                path: f.path,
            }));
            tpp.extend(detail.tpp_messages);
        }
        Some(ErrorField::Code(code)) => out.push(BankFailure {
            code,
            description: answer.error_description,
            path: None,
        }),
        None => {}
    }
    out.extend(tpp.into_iter().map(|m| BankFailure {
        code: m.code,
        description: m.text,
        path: None,
    }));
    out
}

/// Maps a non-2xx answer. `token_call`: the call's credential is a shopper token.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    token_call: bool,
) -> BankError {
    let failures = failures(body);
    let code_where = |pred: fn(&str) -> bool| {
        failures
            .iter()
            .find(|f| pred(&f.code))
            .map(|f| f.code.clone())
    };
    if let Some(code) = code_where(is_credentials_code) {
        return BankError::BadCredentials { code };
    }
    if let Some(code) = code_where(is_signature_code) {
        return BankError::BadSignature { code };
    }
    if let Some(code) = code_where(is_date_code) {
        return BankError::ClockRejected { code };
    }
    if status == 429 {
        return BankError::RateLimited { retry_after };
    }
    if token_call && (status == 401 || code_where(is_dead_token_code).is_some()) {
        return BankError::TokenRejected;
    }
    match status {
        401 => BankError::BadCredentials {
            code: failures
                .first()
                .map(|f| f.code.clone())
                .unwrap_or_else(|| "http_401".to_owned()),
        },
        404 => BankError::NotFound,
        408 | 500..=599 => BankError::Unavailable {
            detail: format!("HTTP {status}"),
            retry_safe: status == 503 && !failures.is_empty(),
        },
        400..=499 if status != 403 && !failures.is_empty() => BankError::Validation { failures },
        _ => BankError::Unexpected {
            status: Some(status),
            detail: summary(&failures),
        },
    }
}

fn summary(failures: &[BankFailure]) -> String {
    if failures.is_empty() {
        return "no error body we could read".to_owned();
    }
    failures
        .iter()
        .map(|f| f.code.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A transport failure while sending (no HTTP answer). Retry-safe only when the connection
/// was never established.
pub fn transport(error: reqwest::Error) -> BankError {
    let retry_safe = error.is_connect();
    transport_error(error, retry_safe)
}

/// A transport failure while reading an answer's body: the bank has answered, so it has
/// processed the request; never retry-safe.
pub fn transport_after_answer(error: reqwest::Error) -> BankError {
    transport_error(error, false)
}

fn transport_error(error: reqwest::Error, retry_safe: bool) -> BankError {
    let error = error.without_url();
    if error.is_builder() {
        return BankError::Unexpected {
            status: None,
            detail: "could not build the request".to_owned(),
        };
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    let mut detail = what.to_owned();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    BankError::Unavailable { detail, retry_safe }
}

/// An answer body that is not what the call promises. serde's message is not used: it can
/// quote the input (an account number, a token).
pub fn unreadable(status: u16, error: &serde_json::Error) -> BankError {
    BankError::Unexpected {
        status: Some(status),
        detail: format!(
            "unreadable answer ({:?} error at line {} column {})",
            error.classify(),
            error.line(),
            error.column()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nordea_error(code: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "group_header": {"http_code": 401},
            "error": {"request": {"url": "/v5/authorize"},
                      "failures": [{"code": code, "description": "d", "path": "p", "type": "t"}]}
        }))
        .unwrap()
    }

    #[test]
    fn credential_codes_are_configuration_faults_even_on_bearer_calls() {
        for code in [
            "unauthorized",
            "error.apikey.missing",
            "error.apikey.invalid",
        ] {
            for token_call in [false, true] {
                assert_eq!(
                    classify(401, None, &nordea_error(code), token_call),
                    BankError::BadCredentials { code: code.into() }
                );
            }
        }
    }

    #[test]
    fn signature_and_digest_codes_are_bad_signatures() {
        for code in ["error.signature.invalid", "error.digest.invalid"] {
            assert_eq!(
                classify(401, None, &nordea_error(code), true),
                BankError::BadSignature { code: code.into() }
            );
            assert_eq!(
                classify(400, None, &nordea_error(code), false),
                BankError::BadSignature { code: code.into() }
            );
        }
    }

    #[test]
    fn date_codes_are_clock_faults_never_dead_tokens() {
        for token_call in [false, true] {
            let e = classify(401, None, &nordea_error("error.date.invalid"), token_call);
            assert_eq!(
                e,
                BankError::ClockRejected {
                    code: "error.date.invalid".into()
                }
            );
            assert!(e.is_configuration_fault());
            assert!(!e.provably_not_processed());
        }
    }

    #[test]
    fn nordea_token_codes_on_bearer_calls_kill_the_token() {
        for code in ["error.token.invalid", "error.token.expired", "error.token"] {
            assert_eq!(
                classify(401, None, &nordea_error(code), true),
                BankError::TokenRejected,
                "{code}"
            );
        }
    }

    #[test]
    fn a_401_kills_the_token_only_on_token_calls() {
        assert_eq!(classify(401, None, b"", true), BankError::TokenRejected);
        assert_eq!(
            classify(401, None, b"", false),
            BankError::BadCredentials {
                code: "http_401".into()
            }
        );
        let grant = br#"{"error": "invalid_grant", "error_description": "refresh token used"}"#;
        assert_eq!(classify(400, None, grant, true), BankError::TokenRejected);
        assert_eq!(
            classify(400, None, grant, false),
            BankError::Validation {
                failures: vec![BankFailure {
                    code: "invalid_grant".into(),
                    description: Some("refresh token used".into()),
                    path: None,
                }]
            }
        );
    }

    #[test]
    fn validation_failures_come_from_failures_and_tpp_messages() {
        let body = br#"{"error": {"failures": [{"code": "error.validation", "description": "name too long", "path": "payment.creditor.name"}]},
                        "tpp_messages": [{"category": "ERROR", "code": "AM04", "text": "Insufficient funds"}]}"#;
        let BankError::Validation { failures } = classify(400, None, body, false) else {
            panic!("expected validation")
        };
        assert_eq!(failures.len(), 2);
        assert_eq!(failures[0].path.as_deref(), Some("payment.creditor.name"));
        assert_eq!(failures[1].code, "AM04");
        assert_eq!(
            failures[1].description.as_deref(),
            Some("Insufficient funds")
        );
    }

    #[test]
    fn maps_statuses_without_reasons() {
        assert_eq!(
            classify(429, Some(Duration::from_secs(7)), b"", false),
            BankError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(classify(404, None, b"{}", true), BankError::NotFound);
        // Without the bank's own error body even a 503 may be a gateway's: not retry-safe.
        for status in [408, 500, 502, 503, 504] {
            assert_eq!(
                classify(status, None, b"<html>", false),
                BankError::Unavailable {
                    detail: format!("HTTP {status}"),
                    retry_safe: false,
                }
            );
        }
        assert_eq!(
            classify(400, None, b"not json", false),
            BankError::Unexpected {
                status: Some(400),
                detail: "no error body we could read".into()
            }
        );
        let denied = nordea_error("error.resource.denied");
        assert_eq!(
            classify(403, None, &denied, true),
            BankError::Unexpected {
                status: Some(403),
                detail: "error.resource.denied".into()
            }
        );
    }

    #[test]
    fn a_bare_503_from_a_gateway_is_an_unknown_outcome() {
        let html = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>";
        for body in [
            &b""[..],
            html,
            b"Service Unavailable",
            br#"{"message": "upstream"}"#,
        ] {
            for token_call in [false, true] {
                let e = classify(503, None, body, token_call);
                assert!(
                    matches!(
                        e,
                        BankError::Unavailable {
                            retry_safe: false,
                            ..
                        }
                    ),
                    "{e:?}"
                );
                assert!(!e.provably_not_processed(), "{e:?}");
            }
        }
    }

    #[test]
    fn only_a_503_is_retry_safe() {
        let bank = nordea_error("error.service.unavailable");
        for token_call in [false, true] {
            let e = classify(503, None, &bank, token_call);
            assert!(
                matches!(
                    e,
                    BankError::Unavailable {
                        retry_safe: true,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.provably_not_processed());
        }
        for status in [500, 502, 504, 408] {
            let e = classify(status, None, b"", false);
            assert!(
                matches!(
                    e,
                    BankError::Unavailable {
                        retry_safe: false,
                        ..
                    }
                ),
                "{status}: {e:?}"
            );
            assert!(!e.provably_not_processed(), "{status}");
        }
    }

    #[test]
    fn reads_retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
