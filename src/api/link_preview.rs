//! Link previews, link checks and prefetches of the shopper's links.
//!
//! A payment link travels by chat and e-mail (pay by link), and what carries it fetches it
//! before the shopper does: chat apps' link previewers (Slack, WhatsApp, iMessage, Teams,
//! Telegram, Discord, ...), link checkers that send `HEAD`, and browsers that prefetch a
//! link the page suggests. Two of pisgate's shopper links act on `GET`:
//!
//! - the hop of a payment created with `consent: "merchant"` opens the hop (recorded once:
//!   from then on a merchant's cancel leaves the decision to the bank) and, at a bank whose
//!   authorisation pisgate starts, starts one;
//! - the BankID page's first load starts the shopper's identification order, which a
//!   previewer never scans and which has run out by the time the shopper opens the link.
//!
//! Such a request gets a neutral page ([`consent::preview_page`]: "open this link in your
//! browser", nothing of the payment, not even whether it exists) and nothing is read,
//! recorded or sent to a bank. A `HEAD` never acts on any of them (HTTP's safe methods). A
//! browser's prefetch or prerender gets that page with `503`: a speculative load answered
//! outside 2xx is dropped, so the shopper's own navigation is a fresh request that acts
//! (answered `200`, a prerendered neutral page would be what the shopper sees).
//!
//! Recognised: `HEAD`; a `Sec-Purpose` or `Purpose` header naming a prefetch or prerender
//! (Chromium), `X-Moz: prefetch` (Firefox), `X-Purpose: preview` (Safari); a `User-Agent`
//! naming one of the previewers in [`PREVIEWERS`]. The list names bots only (never a word an
//! in-app browser's agent carries: Facebook's in-app browser says `FBAN`, not
//! `facebookexternalhit`), so a shopper's browser is never taken for one. A scanner that
//! passes as a browser (some mail filters do) is not recognised; with the default consent
//! page it meets a page whose only action is a button.
//!
//! A person whose browser is taken for a previewer (its agent names one of them) is not
//! stuck: the neutral page links to the same address with `open=1` ("Continue"), which no
//! previewer follows (it fetches the one URL it was given, and the page says `nofollow`).
//! That request acts on nothing either: it is sent back to the address without `open=1`
//! ([`opened`]) with a cookie for the payment's pages ([`OPENED_COOKIE`], path
//! `/authorize/{id}`, an hour), and with the cookie that address and the rest of the flow
//! (the BankID page and its refreshes) proceed. So no address a person can copy from the
//! address bar carries `open=1`. `HEAD`, prefetches and prerenders never proceed, whatever
//! they carry.

use crate::api::AppState;
use crate::api::consent;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

/// The cookie that says a person opened this payment's link from the neutral page.
pub const OPENED_COOKIE: &str = "pisgate_opened";

/// What a request to a shopper's link that acts on `GET` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A preview, a check or a prefetch: answer [`page`], act on nothing.
    Preview,
    /// A person: act, or with `remember` (they came through the neutral page's link,
    /// `open=1`) answer [`opened`] and act on the next request.
    Proceed { remember: bool },
}

/// Judges a `GET` (or `HEAD`) of a shopper's link with its query.
pub fn judge(method: &Method, headers: &HeaderMap, query: &HashMap<String, String>) -> Verdict {
    if method == Method::HEAD
        || is_speculative(headers)
        || names(headers, "x-purpose", &["preview"])
    {
        return Verdict::Preview;
    }
    if !names(headers, header::USER_AGENT.as_str(), PREVIEWERS) {
        return Verdict::Proceed { remember: false };
    }
    if has_opened_cookie(headers) {
        Verdict::Proceed { remember: false }
    } else if query.get("open").is_some_and(|v| v == "1") {
        Verdict::Proceed { remember: true }
    } else {
        Verdict::Preview
    }
}

fn has_opened_cookie(headers: &HeaderMap) -> bool {
    headers.get_all(header::COOKIE).iter().any(|v| {
        v.to_str().unwrap_or("").split(';').any(|c| {
            c.trim()
                .split_once('=')
                .is_some_and(|(k, v)| k == OPENED_COOKIE && v == "1")
        })
    })
}

/// The answer to the neutral page's link (`open=1`): `303` to the same address without it
/// (relative: the path stays, with the query's token and the BankID state's `purpose`, nothing
/// else), with [`OPENED_COOKIE`] for the payment
/// `id`'s pages (none for an id that is not a payment id: the cookie's path carries it).
pub fn opened(state: &AppState, id: &str, query: &HashMap<String, String>) -> Response {
    let mut r = axum::response::Redirect::to(&kept_query(query, false)).into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let Ok(id) = uuid::Uuid::parse_str(id) else {
        return r;
    };
    let secure = if state.settings.server.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{OPENED_COOKIE}=1; Path=/authorize/{id}; Max-Age=3600; HttpOnly; SameSite=Lax{secure}"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

fn names(headers: &HeaderMap, name: &str, words: &[&str]) -> bool {
    headers.get_all(name).iter().any(|v| {
        let v = v.to_str().unwrap_or("").to_ascii_lowercase();
        words.iter().any(|w| v.contains(w))
    })
}

/// Lower-case words of the previewers' `User-Agent`s.
pub const PREVIEWERS: &[&str] = &[
    "slackbot",
    "slack-imgproxy",
    "facebookexternalhit",
    "facebot",
    "twitterbot",
    "whatsapp/",
    "telegrambot",
    "discordbot",
    "linkedinbot",
    "skypeuripreview",
    "mattermost-bot",
    "google-pagerenderer",
    "googlebot",
    "bingbot",
    "bingpreview",
    "applebot",
    "embedly",
    "iframely",
    "pinterestbot",
    "redditbot",
    "signal-preview",
    "zoom-link-preview",
    // Office's own fetches of a link in a document or a mail (not the browser it opens).
    "ms-office",
    "microsoft office existence discovery",
];

/// Whether a browser loads the link ahead of a navigation that may follow.
fn is_speculative(headers: &HeaderMap) -> bool {
    ["sec-purpose", "purpose", "x-moz"].iter().any(|name| {
        headers.get_all(*name).iter().any(|v| {
            let v = v.to_str().unwrap_or("").to_ascii_lowercase();
            v.contains("prefetch") || v.contains("prerender")
        })
    })
}

/// The neutral page a preview gets: 200 (503 to a prefetch or prerender), in the browser's
/// language, marked not to be indexed; nothing of the payment (no database read: the same
/// page for a link that names none). Its one link is the address it was asked for with
/// `open=1`, for a person taken for a previewer.
pub fn page(state: &AppState, headers: &HeaderMap, query: &HashMap<String, String>) -> Response {
    metrics::counter!("pisgate_shopper_link_previews_total").increment(1);
    tracing::debug!("a preview or prefetch of a shopper's link: answered without acting");
    let lang = crate::api::authorize::language(None, headers);
    let status = if is_speculative(headers) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut r = consent::respond(
        status,
        consent::preview_page(lang, &kept_query(query, true), &state.settings.provider),
        &[],
    );
    r.headers_mut().insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow"),
    );
    r
}

/// The query parameters of a shopper's link that the neutral page's link and [`opened`]'s
/// redirect carry on: the token, and the BankID state's `purpose` (which order the page
/// shows). Nothing else of the query is echoed.
const KEPT: &[&str] = &["t", "purpose"];

/// A relative address (the path stays) with the query's [`KEPT`] parameters and, with
/// `open`, `open=1`: the neutral page's link, and where [`opened`] sends it back.
fn kept_query(query: &HashMap<String, String>, open: bool) -> String {
    let mut q = url::form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
    for name in KEPT {
        if let Some(v) = query.get(*name) {
            q.append_pair(name, v);
        }
    }
    if open {
        q.append_pair("open", "1");
    }
    q.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request without `open=1` judged a preview.
    fn is_preview(method: &Method, headers: &HeaderMap) -> bool {
        judge(method, headers, &HashMap::new()) == Verdict::Preview
    }

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn previewers_checks_and_prefetches_are_recognised() {
        assert!(is_preview(&Method::HEAD, &HeaderMap::new()));
        for ua in [
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "facebookexternalhit/1.1 Facebot Twitterbot/1.0",
            "WhatsApp/2.23.20.0 A",
            "TelegramBot (like TwitterBot)",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
            "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
            "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
            "Microsoft Office Existence Discovery",
        ] {
            assert!(is_preview(&Method::GET, &with("user-agent", ua)), "{ua}");
        }
        assert!(is_preview(
            &Method::GET,
            &with("sec-purpose", "prefetch;prerender")
        ));
        assert!(is_preview(&Method::GET, &with("sec-purpose", "prefetch")));
        assert!(is_preview(&Method::GET, &with("purpose", "prefetch")));
        assert!(is_preview(&Method::GET, &with("x-moz", "prefetch")));
        assert!(is_preview(&Method::GET, &with("x-purpose", "preview")));
    }

    #[test]
    fn shoppers_browsers_are_not_previews() {
        assert!(!is_preview(&Method::GET, &HeaderMap::new()));
        for ua in [
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
            // Facebook's and Instagram's in-app browsers: shoppers, not the previewer.
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/440.0.0.0]",
            "Mozilla/5.0 (Linux; Android 13; CUBOT KingKong) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0 Mobile Safari/537.36 Instagram 300.0",
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        ] {
            assert!(!is_preview(&Method::GET, &with("user-agent", ua)), "{ua}");
        }
    }

    #[test]
    fn the_neutral_pages_link_and_its_redirect_keep_the_token_and_the_purpose_only() {
        let q: HashMap<String, String> = [
            ("t", "tok+en/="),
            ("purpose", "sign"),
            ("open", "1"),
            ("next", "https://evil.example/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            kept_query(&q, true),
            "?t=tok%2Ben%2F%3D&purpose=sign&open=1"
        );
        assert_eq!(kept_query(&q, false), "?t=tok%2Ben%2F%3D&purpose=sign");
        assert_eq!(kept_query(&HashMap::new(), false), "?");
    }
}
