//! The page of `GET /v1/callbacks/oidc` without a query: a bank that returns the shopper
//! with its answer in the URL fragment (OpenID Connect hybrid flow:
//! `#code=…&id_token=…&state=…`) reaches pisgate without it, because a browser never sends
//! the fragment. This page's one inline script moves the fragment into the query with
//! `location.replace` (so the fragment's URL does not stay in the history), and the return
//! is handled like every code return.
//!
//! The script is static and allowed by its SHA-256 hash alone in the page's
//! Content-Security-Policy (nothing else may run or load); the page is never cached, sends
//! no referrer (the URL may hold the code), and tells a browser without JavaScript what
//! happened in a `<noscript>` text.
//!
//! Never done here: reading, logging or echoing the fragment (the server never sees it).

use super::consent;
use crate::config::ProviderSettings;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{DOCTYPE, PreEscaped, html};
use std::sync::LazyLock;

/// The script that moves the fragment into the query.
pub const SCRIPT: &str = include_str!("fragment_page.js");

static SCRIPT_HASH: LazyLock<String> = LazyLock::new(|| consent::style_hash(SCRIPT));

/// The page's Content-Security-Policy: its one script by its hash, nothing else.
pub fn policy() -> String {
    format!(
        "default-src 'none'; script-src {}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        *SCRIPT_HASH
    )
}

/// The page, with the headers of every pisgate page (no caching, no referrer) and [`policy`].
pub fn respond(provider: &ProviderSettings) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { "Returning from your bank" }
            }
            body {
                main {
                    h1 { "Returning from your bank" }
                    p #message { "One moment, please…" }
                    noscript {
                        p {
                            "Your browser does not run JavaScript, which this page needs to take "
                            "your bank's answer back to " (provider.legal_name) ". Please enable it and "
                            "reload this page, or return to the shop: the shop will learn the "
                            "outcome of your payment from your bank."
                        }
                    }
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    };
    consent::html_page(StatusCode::OK, page, &policy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_pages_script() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(SCRIPT.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest);
        assert!(
            policy().contains(&format!("script-src 'sha256-{hash}';")),
            "{}",
            policy()
        );
        assert!(policy().starts_with("default-src 'none';"));
    }
}
