//! Web origins and the shopper's return URL, parsed by hand (no URL crate) so that the
//! rules are exactly ours: an absolute `http`/`https` URL, `https` unless the host is a
//! loopback address, no user-info (`https://shop.example@evil.example/`), no fragment (we
//! append `payment_id` and `status` to the query), no backslashes or whitespace, at most
//! 2048 characters, host names in ASCII (IDNs in punycode).
//!
//! [`Origin::origin`] is the `scheme://host[:port]` form the API layer compares with a
//! merchant's registered origins (default ports are dropped, scheme and host lower-cased),
//! which is what prevents an open redirect. This module must never resolve host names or
//! do any I/O.

use serde::{Serialize, Serializer};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest return URL we accept.
pub const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Why a string is not an acceptable origin or return URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL is empty")]
    Empty,
    #[error("the URL is longer than 2048 characters")]
    TooLong,
    #[error("the URL contains whitespace, control, non-ASCII or backslash characters")]
    InvalidCharacters,
    #[error("the URL must be absolute (scheme://host)")]
    NotAbsolute,
    #[error("only http and https URLs are allowed")]
    UnsupportedScheme,
    #[error("https is required unless the host is localhost or a loopback address")]
    HttpsRequired,
    #[error("the URL must not contain user information before the host")]
    UserInfoNotAllowed,
    #[error("the URL has no valid host")]
    InvalidHost,
    #[error("the URL's port is not valid")]
    InvalidPort,
    #[error("the URL must not contain a fragment ('#')")]
    FragmentNotAllowed,
    #[error("an origin is scheme://host[:port] without path or query")]
    NotAnOrigin,
}

impl UrlError {
    /// Stable machine code, used in the API's validation errors.
    pub fn code(self) -> &'static str {
        match self {
            UrlError::Empty => "empty",
            UrlError::TooLong => "too_long",
            UrlError::InvalidCharacters => "invalid_characters",
            UrlError::NotAbsolute => "not_absolute",
            UrlError::UnsupportedScheme => "unsupported_scheme",
            UrlError::HttpsRequired => "https_required",
            UrlError::UserInfoNotAllowed => "userinfo_not_allowed",
            UrlError::InvalidHost => "invalid_host",
            UrlError::InvalidPort => "invalid_port",
            UrlError::FragmentNotAllowed => "fragment_not_allowed",
            UrlError::NotAnOrigin => "not_an_origin",
        }
    }
}

/// `scheme://host[:port]`, normalised: lower case, default port omitted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: Scheme,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses a bare origin (`https://shop.example`, `http://localhost:3000`); a trailing
    /// `/` is tolerated, any other path or a query is not.
    pub fn parse(s: &str) -> Result<Origin, UrlError> {
        let (origin, rest) = split_url(s)?;
        if !(rest.is_empty() || rest == "/") {
            return Err(UrlError::NotAnOrigin);
        }
        Ok(origin)
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The explicit port, `None` when it is the scheme's default.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `scheme://host[:port]`, e.g. `https://shop.example` or `http://localhost:3000`.
    pub fn origin(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme.as_str(), self.host),
            None => format!("{}://{}", self.scheme.as_str(), self.host),
        }
    }

    /// `localhost`, 127.0.0.0/8 or `[::1]`: the only hosts allowed over plain http.
    pub fn is_loopback(&self) -> bool {
        if self.host == "localhost" {
            return true;
        }
        if let Ok(v4) = self.host.parse::<Ipv4Addr>() {
            return v4.is_loopback();
        }
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<Ipv6Addr>().ok())
            .is_some_and(|v6| v6.is_loopback())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin())
    }
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.origin())
    }
}

/// Where the shopper is sent back after signing: an absolute URL whose origin is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReturnUrl {
    origin: Origin,
    /// Path and query, verbatim (may be empty).
    rest: String,
}

impl ReturnUrl {
    pub fn parse(s: &str) -> Result<ReturnUrl, UrlError> {
        let (origin, rest) = split_url(s)?;
        Ok(ReturnUrl {
            origin,
            rest: rest.to_owned(),
        })
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The normalised URL: the origin followed by the path and query as given.
    pub fn as_string(&self) -> String {
        format!("{}{}", self.origin.origin(), self.rest)
    }
}

impl fmt::Display for ReturnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin, self.rest)
    }
}

impl Serialize for ReturnUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

/// Splits an absolute URL into its origin and the rest (path and query).
fn split_url(s: &str) -> Result<(Origin, &str), UrlError> {
    if s.is_empty() {
        return Err(UrlError::Empty);
    }
    if s.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) || s.contains('\\') {
        return Err(UrlError::InvalidCharacters);
    }
    let (scheme, after) = s.split_once("://").ok_or(UrlError::NotAbsolute)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        "" => return Err(UrlError::NotAbsolute),
        _ => return Err(UrlError::UnsupportedScheme),
    };
    if after.contains('#') {
        return Err(UrlError::FragmentNotAllowed);
    }
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if authority.contains('@') {
        return Err(UrlError::UserInfoNotAllowed);
    }
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UrlError::InvalidPort);
            }
            let n: u32 = p.parse().map_err(|_| UrlError::InvalidPort)?;
            let n = u16::try_from(n).map_err(|_| UrlError::InvalidPort)?;
            if n == 0 {
                return Err(UrlError::InvalidPort);
            }
            (n != scheme.default_port()).then_some(n)
        }
    };
    let origin = Origin {
        scheme,
        host: normalise_host(host)?,
        port,
    };
    if origin.scheme == Scheme::Http && !origin.is_loopback() {
        return Err(UrlError::HttpsRequired);
    }
    Ok((origin, rest))
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), UrlError> {
    if authority.starts_with('[') {
        let close = authority.find(']').ok_or(UrlError::InvalidHost)?;
        let (host, after) = authority.split_at(close + 1);
        match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or(UrlError::InvalidHost),
        }
    } else {
        Ok(match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        })
    }
}

fn normalise_host(host: &str) -> Result<String, UrlError> {
    let host = host.to_ascii_lowercase();
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().map_err(|_| UrlError::InvalidHost)?;
        return Ok(format!("[{ip}]"));
    }
    if host.is_empty() || host.len() > 253 {
        return Err(UrlError::InvalidHost);
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !host.split('.').all(label_ok) {
        return Err(UrlError::InvalidHost);
    }
    // All-numeric dotted hosts must be real IPv4 addresses ("1.2.3" or "999.1.1.1" are not).
    if host
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        host.parse::<Ipv4Addr>()
            .map_err(|_| UrlError::InvalidHost)?;
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin_of(url: &str) -> String {
        ReturnUrl::parse(url).unwrap().origin().origin()
    }

    #[test]
    fn return_url_origin_is_scheme_host_and_non_default_port() {
        assert_eq!(
            origin_of("https://shop.example/thanks?x=1"),
            "https://shop.example"
        );
        assert_eq!(
            origin_of("HTTPS://Shop.Example:443/a"),
            "https://shop.example"
        );
        assert_eq!(
            origin_of("https://shop.example:8443"),
            "https://shop.example:8443"
        );
        assert_eq!(
            origin_of("http://localhost:3000/cb"),
            "http://localhost:3000"
        );
        assert_eq!(origin_of("http://127.0.0.1/cb"), "http://127.0.0.1");
        assert_eq!(origin_of("http://[::1]:8080/cb"), "http://[::1]:8080");
        assert_eq!(
            origin_of("https://shop.example?x=1"),
            "https://shop.example"
        );
    }

    #[test]
    fn return_url_keeps_path_and_query_verbatim() {
        let u = ReturnUrl::parse("HTTPS://Shop.Example/Thanks?Order=A1").unwrap();
        assert_eq!(u.as_string(), "https://shop.example/Thanks?Order=A1");
        assert_eq!(u.to_string(), u.as_string());
    }

    #[test]
    fn refuses_bad_return_urls_with_their_own_error() {
        let cases = [
            ("", UrlError::Empty),
            ("shop.example/thanks", UrlError::NotAbsolute),
            ("/thanks", UrlError::NotAbsolute),
            ("://shop.example", UrlError::NotAbsolute),
            ("ftp://shop.example", UrlError::UnsupportedScheme),
            ("javascript://alert(1)", UrlError::UnsupportedScheme),
            ("http://shop.example/thanks", UrlError::HttpsRequired),
            ("http://10.0.0.1/", UrlError::HttpsRequired),
            (
                "https://shop.example@evil.example/",
                UrlError::UserInfoNotAllowed,
            ),
            (
                "https://shop.example/thanks#top",
                UrlError::FragmentNotAllowed,
            ),
            ("https://shop example/", UrlError::InvalidCharacters),
            (
                "https://shop.example\\@evil.example",
                UrlError::InvalidCharacters,
            ),
            ("https://shöp.example/", UrlError::InvalidCharacters),
            ("https:///thanks", UrlError::InvalidHost),
            ("https://-shop.example/", UrlError::InvalidHost),
            ("https://shop..example/", UrlError::InvalidHost),
            ("https://shop_1.example/", UrlError::InvalidHost),
            ("https://999.1.1.1/", UrlError::InvalidHost),
            ("https://[::zz]/", UrlError::InvalidHost),
            ("https://shop.example:/", UrlError::InvalidPort),
            ("https://shop.example:0/", UrlError::InvalidPort),
            ("https://shop.example:65536/", UrlError::InvalidPort),
            ("https://shop.example:8a/", UrlError::InvalidPort),
        ];
        for (url, expected) in cases {
            assert_eq!(ReturnUrl::parse(url), Err(expected), "{url}");
        }
        let long = format!("https://shop.example/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(ReturnUrl::parse(&long), Err(UrlError::TooLong));
    }

    #[test]
    fn a_bare_origin_has_no_path_or_query() {
        assert_eq!(
            Origin::parse("https://shop.example").unwrap().origin(),
            "https://shop.example"
        );
        assert_eq!(
            Origin::parse("https://shop.example/").unwrap().origin(),
            "https://shop.example"
        );
        assert_eq!(
            Origin::parse("https://shop.example/x"),
            Err(UrlError::NotAnOrigin)
        );
        assert_eq!(
            Origin::parse("https://shop.example?x"),
            Err(UrlError::NotAnOrigin)
        );
    }

    #[test]
    fn origins_compare_equal_after_normalisation() {
        let registered = Origin::parse("https://SHOP.example:443").unwrap();
        let url = ReturnUrl::parse("https://shop.example/thanks").unwrap();
        assert_eq!(url.origin(), &registered);
        let other = ReturnUrl::parse("https://shop.example.evil.example/").unwrap();
        assert_ne!(other.origin(), &registered);
    }
}
