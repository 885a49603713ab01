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
//! Such a request gets a neutral page ([`Closed::Preview`]: "open this link in your
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

use crate::api::AppState;
use crate::api::consent::{self, Closed};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;

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

/// Whether this request is a preview, a check or a prefetch rather than a shopper opening
/// the link.
pub fn is_preview(method: &Method, headers: &HeaderMap) -> bool {
    if method == Method::HEAD {
        return true;
    }
    let names = |name: &str, words: &[&str]| {
        headers.get_all(name).iter().any(|v| {
            let v = v.to_str().unwrap_or("").to_ascii_lowercase();
            words.iter().any(|w| v.contains(w))
        })
    };
    is_speculative(headers)
        || names("x-purpose", &["preview"])
        || names(header::USER_AGENT.as_str(), PREVIEWERS)
}

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
/// language, marked not to be indexed; nothing of the payment.
pub fn page(state: &AppState, headers: &HeaderMap) -> Response {
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
        consent::closed_page(Closed::Preview, lang, None, &state.settings.provider),
        &[],
    );
    r.headers_mut().insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
