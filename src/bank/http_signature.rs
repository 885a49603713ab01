//! The draft-cavage HTTP Signatures core (version 10) that Nordea's scheme and the Berlin
//! Group scheme are two configurations of: the signing string, the RSA-SHA256 signature
//! and the `Signature` header. Which headers are signed, what the `keyId` is and what else
//! travels with the signature (`Digest`, a certificate) is the scheme's business:
//! [`crate::bank::nordea::signing`] (client id keyId, `(request-target)`, Nordea's headers)
//! and [`crate::bank::berlin_group::signing`] (`SN=…,CA=…` keyId, Digest on every request,
//! `X-Request-ID`, `Date`).
//!
//! The private-key operation is aws-lc-rs's, through [`SigningKey`]. This module must never
//! log, print or put into an error any key material.

use crate::bank::nordea::signing::{KeyError, SigningKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::BTreeMap;

/// The only algorithm pisgate signs with.
pub const ALGORITHM: &str = "rsa-sha256";

/// The string to sign: one `name: value` line per signed header, in the order given,
/// joined by `\n`, with no trailing newline. Names are used as given (the schemes pass them
/// in lower case).
pub fn signing_string(lines: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
    }
    out
}

/// The `Signature` header value.
pub fn signature_header(key_id: &str, headers: &str, signature_b64: &str) -> String {
    format!(
        "keyId=\"{key_id}\",algorithm=\"{ALGORITHM}\",headers=\"{headers}\",signature=\"{signature_b64}\""
    )
}

/// Signs `lines` with `key` and answers the `Signature` header naming them.
pub fn sign(key: &SigningKey, key_id: &str, lines: &[(&str, &str)]) -> Result<String, KeyError> {
    let text = signing_string(lines);
    let signature = B64.encode(key.sign(text.as_bytes())?);
    let names = lines
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(" ");
    Ok(signature_header(key_id, &names, &signature))
}

/// The parameters of a `Signature` header (`name="value"` pairs in any order; commas inside
/// the quotes allowed, as in a Berlin Group keyId). draft-cavage defines no escapes inside
/// the quotes: a value ends at the next `"`. `None` when the header is malformed.
pub fn parse_params(value: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let end = after.find('"')?;
        out.insert(name.trim().to_owned(), after[..end].to_owned());
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_signature_parses_quoted_params_with_commas() {
        let p = parse_params(
            r#"keyId="SN=1a,CA=CN=Test%20CA,O=X,C=FI",algorithm="rsa-sha256", headers="digest date",signature="c2ln""#,
        )
        .unwrap();
        assert_eq!(p["keyId"], "SN=1a,CA=CN=Test%20CA,O=X,C=FI");
        assert_eq!(p["headers"], "digest date");
        assert_eq!(p["signature"], "c2ln");
        assert!(parse_params(r#"keyId=unquoted"#).is_none());
        assert!(parse_params(r#"keyId="open"#).is_none());
    }

    #[test]
    fn http_signature_signing_string_has_no_trailing_newline() {
        assert_eq!(signing_string(&[("a", "1"), ("b", "2")]), "a: 1\nb: 2");
        assert_eq!(signing_string(&[]), "");
    }
}
