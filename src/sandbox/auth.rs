//! Authentication of every request under `/personal`: the app's credentials, the
//! draft-cavage HTTP signature, the body digest and the freshness of the originating date;
//! and, for the calls that need one, the PSU's bearer token.
//!
//! Written from the protocol description alone (never from pisgate's client): the signing
//! string is rebuilt from the request as received, so a client that signs something other
//! than what it sends is caught.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method, Uri};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::ExposeSecret;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::Sandbox;
use super::wire::ApiError;

/// The header list Nordea requires on a request without a body.
pub(crate) const HEADERS_WITHOUT_BODY: &str =
    "(request-target) x-nordea-originating-host x-nordea-originating-date";
/// The header list Nordea requires on a request with a body. A DELETE with a body (the bulk
/// delete) may be signed either way: Nordea's eIDAS article and current personal script sign
/// it with [`HEADERS_WITHOUT_BODY`] and no `Digest`, older scripts with this list.
pub(crate) const HEADERS_WITH_BODY: &str =
    "(request-target) x-nordea-originating-host x-nordea-originating-date content-type digest";

/// The parameters of a `Signature` header.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SignatureParams {
    pub key_id: Option<String>,
    pub algorithm: Option<String>,
    pub headers: Option<String>,
    pub signature: Option<String>,
}

/// Parses `keyId="…",algorithm="…",headers="…",signature="…"`. Values must be quoted;
/// unknown parameters (e.g. `created`) are ignored; a repeated parameter is an error.
pub(crate) fn parse_signature_header(value: &str) -> Result<SignatureParams, String> {
    let mut params = SignatureParams::default();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("expected name=\"value\" at '{rest}'"))?;
        let name = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let after = after
            .strip_prefix('"')
            .ok_or_else(|| format!("the value of {name} must be quoted"))?;
        let close = after
            .find('"')
            .ok_or_else(|| format!("the value of {name} is not closed"))?;
        let val = after[..close].to_owned();
        rest = after[close + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected ',' after {name}"));
        }
        let slot = match name {
            "keyId" => &mut params.key_id,
            "algorithm" => &mut params.algorithm,
            "headers" => &mut params.headers,
            "signature" => &mut params.signature,
            _ => continue,
        };
        if slot.replace(val).is_some() {
            return Err(format!("{name} is given twice"));
        }
    }
    Ok(params)
}

/// All values of a header joined by ", " (as draft-cavage says), or `None` when absent or
/// not visible ASCII. Borrowed from the request when the header appears once (the usual case).
fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.to_str().ok()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut joined = first.to_owned();
    for value in std::iter::once(second).chain(values) {
        joined.push_str(", ");
        joined.push_str(value.to_str().ok()?);
    }
    Some(Cow::Owned(joined))
}

/// Rebuilds the signing string from the request as received.
pub(crate) fn signing_string(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    list: &str,
) -> Result<String, ApiError> {
    let mut out = String::with_capacity(256);
    for name in list.split_whitespace() {
        if !out.is_empty() {
            out.push('\n');
        }
        if name == "(request-target)" {
            let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
            out.push_str("(request-target): ");
            for c in method.as_str().chars() {
                out.push(c.to_ascii_lowercase());
            }
            out.push(' ');
            out.push_str(target);
        } else {
            let value = header_value(headers, name).ok_or_else(|| {
                ApiError::signature(format!(
                    "Header {name} is listed in the signature but missing from the request."
                ))
            })?;
            out.push_str(name);
            out.push_str(": ");
            out.push_str(&value);
        }
    }
    Ok(out)
}

/// The checks shared by every call: credentials, signature, date and digest.
pub(crate) fn verify_request(
    sandbox: &Sandbox,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let cfg = sandbox.config();
    let client_id = header_value(headers, "x-ibm-client-id").filter(|v| !v.is_empty());
    let client_secret = header_value(headers, "x-ibm-client-secret").filter(|v| !v.is_empty());
    let (Some(client_id), Some(client_secret)) = (client_id, client_secret) else {
        let which = if header_value(headers, "x-ibm-client-id").is_none() {
            "X-IBM-Client-Id"
        } else {
            "X-IBM-Client-Secret"
        };
        return Err(ApiError::unauthorized(
            "error.apikey.missing",
            format!("{which} header is missing."),
            which,
        ));
    };
    let id_ok = client_id.as_bytes().ct_eq(cfg.client_id.as_bytes());
    let secret_ok = client_secret
        .as_bytes()
        .ct_eq(cfg.client_secret.expose_secret().as_bytes());
    if !bool::from(id_ok & secret_ok) {
        return Err(ApiError::unauthorized(
            "unauthorized",
            "Invalid client id or secret.",
            "X-IBM-Client-Id",
        ));
    }

    let raw = header_value(headers, "signature")
        .ok_or_else(|| ApiError::signature("Signature header is missing."))?;
    let params = parse_signature_header(&raw)
        .map_err(|e| ApiError::signature(format!("Signature header is malformed: {e}.")))?;
    let key_id = params
        .key_id
        .ok_or_else(|| ApiError::signature("Signature header has no keyId."))?;
    if key_id != client_id {
        return Err(ApiError::signature(
            "KeyId claim doesn't match to Client Id from X-IBM-Client-Id header.",
        ));
    }
    match params.algorithm.as_deref() {
        Some("rsa-sha256") => {}
        Some(other) => {
            return Err(ApiError::signature(format!(
                "Algorithm {other} is not supported; use rsa-sha256."
            )));
        }
        None => return Err(ApiError::signature("Signature header has no algorithm.")),
    }
    let list = params
        .headers
        .ok_or_else(|| ApiError::signature("Signature header has no headers list."))?;
    let is = |l: &str| list.split_whitespace().eq(l.split_whitespace());
    let allowed: &[&str] = if body.is_empty() {
        &[HEADERS_WITHOUT_BODY]
    } else if *method == Method::DELETE {
        &[HEADERS_WITHOUT_BODY, HEADERS_WITH_BODY]
    } else {
        &[HEADERS_WITH_BODY]
    };
    if !allowed.iter().any(|l| is(l)) {
        return Err(ApiError::signature(format!(
            "Signed headers must be \"{}\" for this request, got \"{list}\".",
            allowed.join("\" or \"")
        )));
    }
    let signature_b64 = params
        .signature
        .ok_or_else(|| ApiError::signature("Signature header has no signature."))?;

    check_originating_host(headers, cfg.expected_originating_host.as_deref())?;
    check_date(headers, cfg.max_clock_skew, sandbox.gateway_now())?;

    let message = signing_string(method, uri, headers, &list)?;
    let signature_bytes = STANDARD
        .decode(signature_b64.as_bytes())
        .map_err(|_| ApiError::signature("Signature is not valid base64."))?;
    if !sandbox
        .verifying_key
        .verify(message.as_bytes(), &signature_bytes)
    {
        return Err(ApiError::signature(
            "Signature verification failed against the registered key.",
        ));
    }

    // A body is bound to the signature through its digest; a DELETE signed with the three
    // base headers has none to check unless it sends one anyway.
    if !body.is_empty() && (is(HEADERS_WITH_BODY) || header_value(headers, "digest").is_some()) {
        check_digest(headers, body)?;
    }
    Ok(())
}

fn check_originating_host(headers: &HeaderMap, expected: Option<&str>) -> Result<(), ApiError> {
    let host = header_value(headers, "x-nordea-originating-host")
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| ApiError::signature("X-Nordea-Originating-Host header is missing."))?;
    match expected {
        Some(e) if host != e => Err(ApiError::signature(format!(
            "X-Nordea-Originating-Host must be {e}."
        ))),
        _ => Ok(()),
    }
}

/// The date must be an RFC 7231 IMF-fixdate (formatting it back gives the same text) and
/// within the allowed skew of the gateway's clock. A date that is malformed or too far off
/// answers 401 `error.date.invalid` naming the header (a clock problem, not a signature or
/// token problem: a third-party report shows Nordea answering so for a date in the future).
fn check_date(headers: &HeaderMap, max_skew: Duration, now: SystemTime) -> Result<(), ApiError> {
    let date_error =
        |d: String| ApiError::unauthorized("error.date.invalid", d, "X-Nordea-Originating-Date");
    let raw = header_value(headers, "x-nordea-originating-date")
        .ok_or_else(|| ApiError::signature("X-Nordea-Originating-Date header is missing."))?;
    let parsed = httpdate::parse_http_date(&raw)
        .ok()
        .filter(|t| formats_as(*t, &raw))
        .ok_or_else(|| {
            date_error(format!(
                "X-Nordea-Originating-Date '{raw}' is not an RFC 7231 IMF-fixdate in GMT."
            ))
        })?;
    let skew = now
        .duration_since(parsed)
        .or_else(|_| parsed.duration_since(now))
        .unwrap_or_default();
    if skew > max_skew {
        let when = if parsed > now { "ahead of" } else { "behind" };
        return Err(date_error(format!(
            "X-Nordea-Originating-Date '{raw}' is {} s {when} the server time (at most {} s allowed).",
            skew.as_secs(),
            max_skew.as_secs()
        )));
    }
    Ok(())
}

/// Whether `date` as an IMF-fixdate is exactly `text`, compared as it is written (no
/// allocation).
fn formats_as(date: SystemTime, text: &str) -> bool {
    struct Compare<'a> {
        rest: &'a str,
    }
    impl std::fmt::Write for Compare<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.rest = self.rest.strip_prefix(s).ok_or(std::fmt::Error)?;
            Ok(())
        }
    }
    let mut compare = Compare { rest: text };
    std::fmt::Write::write_fmt(
        &mut compare,
        format_args!("{}", httpdate::HttpDate::from(date)),
    )
    .is_ok()
        && compare.rest.is_empty()
}

/// `Digest: sha-256=<base64 of SHA-256>`. For a JSON body the hash is over the exact bytes.
/// For a form body it is over the *normalized string*, as Nordea's signing script computes
/// it: the decoded parameters, keys in alphabetical order, `k=v` joined by `&`, values not
/// percent-encoded. A body whose values were percent-encoded (`redirect_uri=https%3A%2F%2F…`)
/// and digested as sent therefore fails, as it would at Nordea.
fn check_digest(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let digest_error = |d: String| ApiError::unauthorized("error.digest.invalid", d, "Digest");
    let raw = header_value(headers, "digest")
        .ok_or_else(|| digest_error("Digest header is missing.".into()))?;
    let (alg, value) = raw
        .split_once('=')
        .ok_or_else(|| digest_error("Digest header must be sha-256=<base64>.".into()))?;
    if !alg.eq_ignore_ascii_case("sha-256") {
        return Err(digest_error(format!(
            "Digest algorithm {alg} is not supported; use sha-256."
        )));
    }
    let claimed = STANDARD
        .decode(value.as_bytes())
        .map_err(|_| digest_error("Digest value is not valid base64.".into()))?;
    let is_form = header_value(headers, "content-type")
        .is_some_and(|ct| media_type(&ct) == "application/x-www-form-urlencoded");
    if is_form {
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(body).into_owned().collect();
        if params.windows(2).any(|w| w[0].0 > w[1].0) {
            return Err(digest_error(
                "Form parameters must be sent in alphabetical order (the digest is computed over them sorted).".into(),
            ));
        }
        let actual = Sha256::digest(normalized_form(params).as_bytes());
        if !bool::from(claimed.as_slice().ct_eq(&actual[..])) {
            return Err(digest_error(
                "Digest does not match the normalized form string (decoded parameters, keys sorted, values not encoded).".into(),
            ));
        }
        return Ok(());
    }
    let actual = Sha256::digest(body);
    if !bool::from(claimed.as_slice().ct_eq(&actual[..])) {
        return Err(digest_error(
            "Digest does not match the request body.".into(),
        ));
    }
    Ok(())
}

/// Nordea's normalized string of form parameters: sorted by key, `k=v` joined by `&`, the
/// decoded values written as they are.
pub(crate) fn normalized_form(mut params: Vec<(String, String)>) -> String {
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The lower-case media type of a Content-Type value, without parameters.
pub(crate) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The access token of an `Authorization: Bearer …` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = header_value(headers, "authorization").ok_or_else(|| {
        ApiError::unauthorized(
            "error.token.invalid",
            "This call requires an Authorization: Bearer access token.",
            "Authorization",
        )
    })?;
    let (scheme, token) = raw.split_once(' ').unwrap_or((&raw, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthorized(
            "error.token.invalid",
            "Authorization must be 'Bearer <access token>'.",
            "Authorization",
        ));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_cavage_signature_header() {
        let p = parse_signature_header(
            r#"keyId="my-client",algorithm="rsa-sha256",headers="(request-target) x-nordea-originating-host",signature="YWJj""#,
        )
        .unwrap();
        assert_eq!(p.key_id.as_deref(), Some("my-client"));
        assert_eq!(p.algorithm.as_deref(), Some("rsa-sha256"));
        assert_eq!(
            p.headers.as_deref(),
            Some("(request-target) x-nordea-originating-host")
        );
        assert_eq!(p.signature.as_deref(), Some("YWJj"));
    }

    #[test]
    fn a_date_is_an_imf_fixdate_only_when_it_is_written_exactly_so() {
        let text = "Wed, 24 Apr 2019 14:00:37 GMT";
        let t = httpdate::parse_http_date(text).unwrap();
        assert!(formats_as(t, text));
        assert!(!formats_as(t, "Wed, 24 Apr 2019 14:00:37 GMT "));
        assert!(!formats_as(t, "Wed, 24 Apr 2019 14:00:37"));
        assert!(!formats_as(t, "Wed, 24 Apr 2019 14:00:38 GMT"));
        assert!(!formats_as(t, ""));
    }

    #[test]
    fn refuses_unquoted_and_repeated_parameters() {
        assert!(parse_signature_header("keyId=abc").is_err());
        assert!(parse_signature_header(r#"keyId="a",keyId="b""#).is_err());
        assert!(parse_signature_header(r#"keyId="a" algorithm="b""#).is_err());
    }

    #[test]
    fn signing_string_uses_the_lower_case_method_and_the_path_with_query() {
        let mut headers = HeaderMap::new();
        headers.insert("x-nordea-originating-host", "api.example".parse().unwrap());
        headers.insert(
            "x-nordea-originating-date",
            "Wed, 24 Apr 2019 14:00:37 GMT".parse().unwrap(),
        );
        let uri: Uri = "/personal/v3/single-sca-payments/abc?request_availability_of_funds=true"
            .parse()
            .unwrap();
        let s = signing_string(&Method::GET, &uri, &headers, HEADERS_WITHOUT_BODY).unwrap();
        assert_eq!(
            s,
            "(request-target): get /personal/v3/single-sca-payments/abc?request_availability_of_funds=true\n\
             x-nordea-originating-host: api.example\n\
             x-nordea-originating-date: Wed, 24 Apr 2019 14:00:37 GMT"
        );
    }
}
