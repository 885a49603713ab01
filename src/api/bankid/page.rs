//! pisgate's BankID page: what the shopper sees while identifying or signing with Mobilt
//! BankID (a bank such as SEB that signs by BankID, not by a web redirect). Pure rendering:
//! the caller (the BankID flow) reads the order's progress and hands a [`BankIdView`]; this
//! module turns it into the page, into the page's JSON state, and into the QR code.
//!
//! The page works without JavaScript: while the order is pending it refreshes itself (a
//! `<noscript>` meta refresh to its own URL, so that a browser with JavaScript never has a
//! refresh to cancel). With JavaScript, a small static script (`bankid.js`, inline and
//! allowed by its hash in the page's Content-Security-Policy, the way the consent page's
//! stylesheet is) reads the JSON state every second and replaces the QR code and the
//! message in place. The QR code is an inline SVG rendered on the server: no image request,
//! no third-party asset, `img-src 'none'`.
//!
//! Never: a database read, a bank call, a log line (the QR data and the autostart token are
//! the shopper's keys to the order), the bank's own text in place of pisgate's message, or
//! any text of the view unescaped.

use super::text::{hint_message, words};
use crate::api::consent::{self, provider_line, style_hash};
use crate::bank::{BankIdPurpose, BankIdState};
use crate::config::ProviderSettings;
use crate::domain::{Currency, Language, display};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use serde_json::{Value, json};
use std::sync::LazyLock;

/// How often the page refreshes itself without JavaScript. BankID's QR code changes every
/// second; a phone scans a code a second or two old without trouble, and a full reload
/// every second would make the page flicker for a screen reader.
pub const REFRESH_SECS: u32 = 2;

/// The consent page's look (same colours, same card, same buttons: contrast above 10:1, a
/// thick focus ring) plus the QR code and the live message.
const CSS: &str = "\
*{box-sizing:border-box}\
[hidden]{display:none!important}\
body{margin:0;font:1rem/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1a1a1a;background:#f4f5f7}\
main{max-width:32rem;margin:2rem auto;padding:1.5rem;background:#fff;border:1px solid #c8ccd2;border-radius:.5rem}\
h1{font-size:1.5rem;margin:0 0 .5rem}\
.to{font-size:1.125rem;margin:0 0 1rem}\
.amount{font-size:2rem;font-weight:700;margin:0 0 1rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0 0 1.5rem}\
dt{font-weight:600;color:#3a3f45}\
dd{margin:0;overflow-wrap:anywhere}\
button{font:inherit;cursor:pointer}\
.go{display:block;width:100%;padding:.75rem 1rem;border:0;border-radius:.375rem;background:#0b3d91;color:#fff;font-weight:700;text-align:center;text-decoration:none}\
.go:hover{background:#082e6e}\
.link{padding:.25rem 0;border:0;background:none;color:#0b3d91;text-decoration:underline}\
a{color:#0b3d91}\
a.go{color:#fff;margin:0 0 1rem}\
form{margin:0 0 1rem}\
footer{max-width:32rem;margin:0 auto 2rem;padding:0 1.5rem;font-size:.875rem;color:#3a3f45}\
:focus-visible{outline:3px solid #b35c00;outline-offset:3px}\
.hint{font-size:.875rem;color:#3a3f45;margin:0 0 1rem}\
.status{font-weight:600;margin:0 0 1rem;padding:.75rem 1rem;border-left:4px solid #0b3d91;background:#eef2f9}\
.failed .status{border-color:#a4120c;background:#fbeceb;color:#7a0d08}\
.qrbox{margin:0 0 .5rem;text-align:center}\
.qr{display:block;width:100%;max-width:16rem;height:auto;margin:0 auto}\
";

/// The script that updates the page in place (see the module doc).
pub const SCRIPT: &str = include_str!("bankid.js");

static STYLE_HASH: LazyLock<String> = LazyLock::new(|| style_hash(CSS));
static SCRIPT_HASH: LazyLock<String> = LazyLock::new(|| style_hash(SCRIPT));

/// Everything the BankID page shows, decided by the caller.
pub struct BankIdView<'a> {
    pub lang: Language,
    pub purpose: BankIdPurpose,
    pub state: BankIdState,
    /// The order's hint code as the bank gave it (shown as pisgate's message for it).
    pub hint_code: Option<&'a str>,
    /// The shop's name.
    pub merchant: &'a str,
    /// What is paid (minor units and currency), shown in the shopper's words. Phase sign;
    /// phase identify may show it too.
    pub amount: Option<(i64, Currency)>,
    /// The bank's name as configured.
    pub bank_name: &'a str,
    /// BankID's QR data of this read (`bankid.…`), while pending.
    pub qr_data: Option<&'a str>,
    /// `{bankid_app_url}?autostarttoken=…&redirect=null`, built by the caller, while pending.
    pub autostart_url: Option<&'a str>,
    /// This page's own URL (the refresh goes there).
    pub page_url: &'a str,
    /// The URL of [`state_json`] for this page.
    pub state_url: &'a str,
    /// Where "try again" posts (a failed order).
    pub retry_url: &'a str,
    /// Where "cancel" posts.
    pub cancel_url: &'a str,
    /// The hop's form token, posted as `t` with both forms.
    pub form_token: &'a str,
    /// Where the shopper goes next (a complete order: the next phase or the merchant's
    /// return URL). With JavaScript the page goes there as soon as the state says so.
    pub next: Option<&'a str>,
    pub provider: &'a ProviderSettings,
}

fn state_str(state: BankIdState) -> &'static str {
    match state {
        BankIdState::Pending => "pending",
        BankIdState::Complete => "complete",
        BankIdState::Failed => "failed",
    }
}

/// A QR code of `data` as an SVG element: black on white, with BankID's quiet zone of four
/// modules, scaled by its container (up to 16rem, about 4 cm on a screen: a phone's camera
/// reads it from arm's length) and named for screen readers. Empty when the data cannot be
/// a QR code (longer than a QR code holds).
pub fn qr_svg(data: &str) -> String {
    qr_svg_named(data, words(Language::En).qr_label).unwrap_or_default()
}

/// [`qr_svg`] with its accessible name in the shopper's language.
pub fn qr_svg_named(data: &str, name: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).ok()?;
    let drawn = code
        .render::<svg::Color>()
        .quiet_zone(true)
        .module_dimensions(1, 1)
        .dark_color(svg::Color("#000"))
        .light_color(svg::Color("#fff"))
        .build();
    // The renderer's own header is an XML document's (prolog, pixel size); the page wants
    // an element that scales with its container and has a name.
    let view_box = drawn.split("viewBox=\"").nth(1)?.split('"').next()?;
    let shapes = &drawn[drawn.find("<rect")?..];
    let name = html! { (name) }.into_string();
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"qr\" viewBox=\"{view_box}\" \
         width=\"256\" height=\"256\" shape-rendering=\"crispEdges\" role=\"img\" \
         aria-label=\"{name}\"><title>{name}</title>{shapes}"
    ))
}

/// The QR code the page shows: only while pending, and only with data.
fn shown_qr(v: &BankIdView<'_>) -> Option<String> {
    let data = v.qr_data.filter(|_| v.state == BankIdState::Pending)?;
    qr_svg_named(data, words(v.lang).qr_label)
}

fn shown_autostart<'a>(v: &BankIdView<'a>) -> Option<&'a str> {
    v.autostart_url.filter(|_| v.state == BankIdState::Pending)
}

/// The page's state for the in-place updater: `{"state","purpose","message","qr_svg",
/// "autostart_url","next"}` (`qr_svg` and `autostart_url` only while pending, else null).
/// `purpose` (`identify`|`sign`) beyond the contract's five: a new phase is a new page.
pub fn state_json(v: &BankIdView<'_>) -> Value {
    json!({
        "state": state_str(v.state),
        "purpose": v.purpose.as_str(),
        "message": hint_message(v.hint_code, v.purpose, v.state, v.lang),
        "qr_svg": shown_qr(v),
        "autostart_url": shown_autostart(v),
        "next": v.next,
    })
}

/// The whole page.
pub fn render(v: &BankIdView<'_>) -> String {
    page(v).into_string()
}

fn page(v: &BankIdView<'_>) -> Markup {
    let t = consent::text(v.lang);
    let w = words(v.lang);
    let title = match v.purpose {
        BankIdPurpose::Identify => w.title_identify,
        BankIdPurpose::Sign => w.title_sign,
    };
    let lead = match v.purpose {
        BankIdPurpose::Identify => w.lead_identify,
        BankIdPurpose::Sign => w.lead_sign,
    };
    let message = hint_message(v.hint_code, v.purpose, v.state, v.lang);
    let pending = v.state == BankIdState::Pending;
    let qr = shown_qr(v);
    let autostart = shown_autostart(v);
    let amount = v
        .amount
        .map(|(minor, currency)| display::amount(minor, currency, v.lang));
    html! {
        (DOCTYPE)
        html lang=(t.html_lang) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                @if pending {
                    noscript {
                        meta http-equiv="refresh" content={ (REFRESH_SECS) "; url=" (v.page_url) };
                    }
                }
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                main #bankid class=(state_str(v.state)) data-state=(state_str(v.state))
                    data-purpose=(v.purpose.as_str()) data-state-url=(v.state_url)
                    data-page-url=(v.page_url) {
                    h1 { (title) }
                    p.to { (t.shop) ": " strong { (v.merchant) } }
                    @if let Some(amount) = &amount {
                        p.amount { (amount) }
                    }
                    p { (lead) }
                    p #bankid-message .status role="status" aria-live="polite" { (message) }
                    @if pending {
                        div #bankid-qr .qrbox hidden[qr.is_none()] {
                            @if let Some(svg) = &qr { (PreEscaped(svg)) }
                        }
                        p.hint { (w.scan) }
                        a #bankid-open .go href=[autostart] hidden[autostart.is_none()] {
                            (w.open_here)
                        }
                        p.hint { (w.updates_itself) }
                    }
                    @match v.state {
                        BankIdState::Failed => {
                            form method="post" action=(v.retry_url) {
                                input type="hidden" name="t" value=(v.form_token);
                                button.go type="submit" { (w.try_again) }
                            }
                        }
                        BankIdState::Complete => {
                            @if let Some(next) = v.next {
                                a.go href=(next) { (w.continue_) }
                            }
                        }
                        BankIdState::Pending => {}
                    }
                    @if v.state != BankIdState::Complete {
                        form method="post" action=(v.cancel_url) {
                            input type="hidden" name="t" value=(v.form_token);
                            button.link type="submit" { (t.cancel) }
                        }
                    }
                    dl {
                        dt { (t.bank) } dd { (v.bank_name) }
                    }
                }
                footer { p.provider { (provider_line(v.provider, v.lang)) } }
                @if pending {
                    script { (PreEscaped(SCRIPT)) }
                }
            }
        }
    }
}

/// The BankID page's Content-Security-Policy: the consent page's, plus its one script by
/// its hash and reads of its own JSON state (`connect-src 'self'`). Forms go to pisgate and
/// may be redirected to `form_targets` only (the merchant's return URL after "cancel").
pub fn policy(form_targets: &[String]) -> String {
    let mut targets = String::from("'self'");
    for t in form_targets {
        targets.push(' ');
        targets.push_str(t);
    }
    format!(
        "default-src 'none'; style-src {}; script-src {}; connect-src 'self'; img-src 'none'; \
         base-uri 'none'; form-action {targets}; frame-ancestors 'none'",
        *STYLE_HASH, *SCRIPT_HASH
    )
}

/// The rendered page with the headers of every pisgate page (no caching, no referrer, no
/// sniffing, no framing) and [`policy`].
pub fn respond(status: StatusCode, v: &BankIdView<'_>, form_targets: &[String]) -> Response {
    consent::html_page(status, PreEscaped(render(v)), &policy(form_targets))
}

/// [`state_json`] as a response that no cache keeps.
pub fn respond_state(v: &BankIdView<'_>) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(state_json(v)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    const BANKID_QR: &str = "bankid.67df3917-fa0d-44e5-b327-edcc928297f8.7.\
        dc69358e712458a66a7525beef148ae8526b1c71610eff2c16cdffb4cdac9bf8";

    fn provider() -> ProviderSettings {
        ProviderSettings {
            legal_name: "Example Payments AB".into(),
            licence: "Finansinspektionen, betalningsinstitut 12345".into(),
        }
    }

    fn view<'a>(provider: &'a ProviderSettings, state: BankIdState) -> BankIdView<'a> {
        BankIdView {
            lang: Language::Sv,
            purpose: BankIdPurpose::Sign,
            state,
            hint_code: Some("outstandingTransaction"),
            merchant: "Kaffebaren i Lund",
            amount: Some((34550, Currency::from_code("SEK").unwrap())),
            bank_name: "SEB",
            qr_data: Some(BANKID_QR),
            autostart_url: Some(
                "bankid:///?autostarttoken=46f4c7f2-7d42-4bc9-a8e1-1d1bd64a5b2e&redirect=null",
            ),
            page_url: "/bankid/0193a0b4-hop",
            state_url: "/bankid/0193a0b4-hop/state",
            retry_url: "/bankid/0193a0b4-hop/retry",
            cancel_url: "/bankid/0193a0b4-hop/cancel",
            form_token: "form-token-123",
            next: None,
            provider,
        }
    }

    /// Draws the SVG's dark modules (the renderer's `M x y h w v h H x V y` rectangles) at
    /// `scale` pixels per module, as a phone's camera would see the screen: 0 dark, 255 light.
    fn rasterize(svg: &str, scale: usize) -> (usize, Vec<u8>) {
        let view_box = svg
            .split("viewBox=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let modules: usize = view_box.split(' ').nth(2).unwrap().parse().unwrap();
        let size = modules * scale;
        let mut pixels = vec![255u8; size * size];
        let d = svg
            .split(" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        for rect in d.split('M').skip(1) {
            let n: Vec<usize> = rect
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            let (left, top, width, height) = (n[0], n[1], n[2], n[3]);
            for y in top * scale..(top + height) * scale {
                for x in left * scale..(left + width) * scale {
                    pixels[y * size + x] = 0;
                }
            }
        }
        (size, pixels)
    }

    fn decode(svg: &str) -> String {
        let (size, pixels) = rasterize(svg, 6);
        let mut img =
            rqrr::PreparedImage::prepare_from_greyscale(size, size, |x, y| pixels[y * size + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the SVG");
        grids[0].decode().expect("the QR code decodes").1
    }

    #[test]
    fn the_qr_code_decodes_back_to_the_exact_data() {
        assert_eq!(decode(&qr_svg(BANKID_QR)), BANKID_QR);
        let next = BANKID_QR.replace(".7.", ".8.");
        assert_eq!(decode(&qr_svg(&next)), next);
    }

    #[test]
    fn different_qr_data_give_different_svgs() {
        let a = qr_svg(BANKID_QR);
        let b = qr_svg(&BANKID_QR.replace(".7.", ".8."));
        assert!(a.starts_with("<svg"), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn the_qr_code_is_black_on_white_with_a_quiet_zone_and_a_name() {
        let svg = qr_svg(BANKID_QR);
        assert!(
            !svg.contains("<?xml"),
            "an element for the page, not a document"
        );
        assert!(svg.contains("fill=\"#000\""), "{svg}");
        assert!(svg.contains("fill=\"#fff\""), "{svg}");
        assert!(svg.contains("role=\"img\""));
        assert!(svg.contains("aria-label=\"QR code for the BankID app\""));
        assert!(svg.contains("<title>QR code for the BankID app</title>"));
        // Four light modules on every side: no dark pixel there.
        let (size, pixels) = rasterize(&svg, 1);
        for y in 0..size {
            for x in 0..size {
                let edge = x < 4 || y < 4 || x >= size - 4 || y >= size - 4;
                if edge {
                    assert_eq!(pixels[y * size + x], 255, "quiet zone at {x},{y}");
                }
            }
        }
        // The finder pattern starts right after it.
        assert_eq!(pixels[4 * size + 4], 0);
        let sv = qr_svg_named(BANKID_QR, words(Language::Sv).qr_label).unwrap();
        assert!(sv.contains("aria-label=\"QR-kod för BankID-appen\""));
    }

    #[test]
    fn data_too_long_for_a_qr_code_gives_no_svg() {
        assert_eq!(qr_svg(&"x".repeat(8000)), "");
    }

    #[test]
    fn the_page_shows_the_shop_the_amount_the_qr_code_and_the_message_in_swedish() {
        let p = provider();
        let html = render(&view(&p, BankIdState::Pending));
        assert!(html.contains("<html lang=\"sv\">"), "{html}");
        assert!(html.contains("<h1>Skriv under betalningen med BankID</h1>"));
        assert!(html.contains("Kaffebaren i Lund"));
        let amount = display::amount(34550, Currency::from_code("SEK").unwrap(), Language::Sv);
        assert!(
            html.contains(&format!("<p class=\"amount\">{amount}</p>")),
            "{html}"
        );
        assert!(html.contains(
            "Starta BankID-appen och läs av QR-koden, eller öppna BankID på den här enheten."
        ));
        assert!(html.contains("aria-label=\"QR-kod för BankID-appen\""));
        assert!(html.contains("Öppna BankID på den här enheten"));
        assert!(html.contains("Example Payments AB"), "the provider line");
        // The QR code on the page is the view's data.
        let svg = html.split("<div").nth(1).unwrap();
        let svg = &svg[svg.find("<svg").unwrap()..svg.find("</svg>").unwrap() + 6];
        assert_eq!(decode(svg), BANKID_QR);
    }

    #[test]
    fn the_identify_phase_asks_to_identify_with_bankid() {
        let p = provider();
        let mut v = view(&p, BankIdState::Pending);
        v.purpose = BankIdPurpose::Identify;
        v.lang = Language::En;
        let html = render(&v);
        assert!(
            html.contains("<h1>Identify yourself with BankID</h1>"),
            "{html}"
        );
        assert!(html.contains("<html lang=\"en\">"));
    }

    #[test]
    fn the_lang_attribute_follows_the_shoppers_language() {
        let p = provider();
        for (lang, tag) in [
            (Language::En, "en"),
            (Language::Fi, "fi"),
            (Language::Sv, "sv"),
            (Language::Da, "da"),
            (Language::No, "nb"),
        ] {
            let mut v = view(&p, BankIdState::Pending);
            v.lang = lang;
            let html = render(&v);
            assert!(html.contains(&format!("<html lang=\"{tag}\">")), "{lang:?}");
            assert!(html.contains(words(lang).title_sign));
        }
    }

    #[test]
    fn the_open_on_this_device_link_carries_the_autostart_token() {
        let p = provider();
        let html = render(&view(&p, BankIdState::Pending));
        assert!(
            html.contains(
                "<a class=\"go\" id=\"bankid-open\" href=\"bankid:///?autostarttoken=\
                 46f4c7f2-7d42-4bc9-a8e1-1d1bd64a5b2e&amp;redirect=null\">"
            ),
            "{html}"
        );
    }

    #[test]
    fn the_page_refreshes_itself_only_while_pending() {
        let p = provider();
        let refresh = "<noscript><meta http-equiv=\"refresh\" content=\"2; url=/bankid/0193a0b4-hop\"></noscript>";
        let pending = render(&view(&p, BankIdState::Pending));
        assert!(pending.contains(refresh), "{pending}");
        assert!(
            pending.contains("<script>"),
            "the in-place updater while pending"
        );
        for state in [BankIdState::Failed, BankIdState::Complete] {
            let html = render(&view(&p, state));
            assert!(!html.contains("http-equiv"), "{state:?}: {html}");
            assert!(!html.contains("<script"), "{state:?}");
        }
    }

    #[test]
    fn without_qr_data_there_is_no_qr_code() {
        let p = provider();
        let mut v = view(&p, BankIdState::Pending);
        v.qr_data = None;
        v.autostart_url = None;
        let html = render(&v);
        assert!(!html.contains("<svg"), "{html}");
        assert!(
            html.contains("<div class=\"qrbox\" id=\"bankid-qr\" hidden>"),
            "{html}"
        );
        assert!(
            html.contains("<a class=\"go\" id=\"bankid-open\" hidden>"),
            "{html}"
        );
        // A failed or complete order shows none even with data.
        for state in [BankIdState::Failed, BankIdState::Complete] {
            let html = render(&view(&p, state));
            assert!(!html.contains("<svg"), "{state:?}");
            assert!(!html.contains("autostarttoken"), "{state:?}");
        }
    }

    #[test]
    fn a_failed_order_offers_try_again_and_cancel_with_the_form_token() {
        let p = provider();
        let mut v = view(&p, BankIdState::Failed);
        v.hint_code = Some("userCancel");
        let html = render(&v);
        assert!(
            html.contains("Underskriften avbröts i BankID-appen."),
            "{html}"
        );
        assert!(
            html.contains(
                "<form method=\"post\" action=\"/bankid/0193a0b4-hop/retry\">\
             <input type=\"hidden\" name=\"t\" value=\"form-token-123\">\
             <button class=\"go\" type=\"submit\">Försök igen</button></form>"
            ),
            "{html}"
        );
        assert!(
            html.contains(
                "<form method=\"post\" action=\"/bankid/0193a0b4-hop/cancel\">\
             <input type=\"hidden\" name=\"t\" value=\"form-token-123\">\
             <button class=\"link\" type=\"submit\">Avbryt och återgå till butiken</button></form>"
            ),
            "{html}"
        );
        assert!(html.contains("class=\"failed\""));
        let pending = render(&view(&p, BankIdState::Pending));
        assert!(!pending.contains("/retry"), "no try again while pending");
        assert!(pending.contains("/cancel"), "cancel while pending");
    }

    #[test]
    fn a_complete_order_offers_the_continue_link_and_no_forms() {
        let p = provider();
        let mut v = view(&p, BankIdState::Complete);
        v.next = Some("https://shop.example/done?payment_id=1&x=\"y\"");
        let html = render(&v);
        assert!(html.contains("Betalningen är underskriven."));
        assert!(
            html.contains(
                "<a class=\"go\" href=\"https://shop.example/done?payment_id=1&amp;x=&quot;y&quot;\">Fortsätt</a>"
            ),
            "{html}"
        );
        assert!(!html.contains("<form"));
    }

    #[test]
    fn every_text_of_the_view_is_escaped() {
        let evil = "<b>\"x\"&amp;</b>";
        let escaped = "&lt;b&gt;&quot;x&quot;&amp;amp;&lt;/b&gt;";
        let p = ProviderSettings {
            legal_name: evil.into(),
            licence: evil.into(),
        };
        for state in [
            BankIdState::Pending,
            BankIdState::Failed,
            BankIdState::Complete,
        ] {
            let v = BankIdView {
                merchant: evil,
                bank_name: evil,
                autostart_url: Some(evil),
                page_url: evil,
                state_url: evil,
                retry_url: evil,
                cancel_url: evil,
                form_token: evil,
                next: Some(evil),
                hint_code: Some(evil),
                ..view(&p, state)
            };
            let html = render(&v);
            assert!(!html.contains("<b>"), "{state:?}: {html}");
            assert!(!html.contains("\"x\""), "{state:?}: {html}");
            assert!(html.contains(escaped), "{state:?}");
        }
        let named = qr_svg_named("x", evil).unwrap();
        assert!(!named.contains("<b>"));
        assert!(named.contains(escaped));
    }

    #[test]
    fn the_page_has_an_accessible_structure() {
        let p = provider();
        for state in [
            BankIdState::Pending,
            BankIdState::Failed,
            BankIdState::Complete,
        ] {
            let mut v = view(&p, state);
            v.next = Some("/next");
            let html = render(&v);
            assert!(html.starts_with("<!DOCTYPE html><html lang=\"sv\">"));
            assert_eq!(html.matches("<h1>").count(), 1, "one heading");
            assert_eq!(html.matches("<main").count(), 1, "one main landmark");
            assert!(html.contains("<footer>"));
            assert!(html.contains("<title>Skriv under betalningen med BankID</title>"));
            assert!(
                html.contains(
                    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                ),
                "zoom allowed"
            );
            // The message is announced when it changes.
            assert!(html.contains(
                "<p class=\"status\" id=\"bankid-message\" role=\"status\" aria-live=\"polite\">"
            ));
            // Every button and link has text.
            assert!(!html.contains("\"></button>"));
            assert!(!html.contains("\"></a>"));
            // The QR code is an image with a name, never a bare drawing.
            if state == BankIdState::Pending {
                assert!(html.contains("role=\"img\" aria-label=\"QR-kod för BankID-appen\""));
            }
        }
    }

    #[test]
    fn the_script_and_the_stylesheet_are_allowed_by_their_hashes_only() {
        let p = provider();
        let html = render(&view(&p, BankIdState::Pending));
        let between = |open: &str, close: &str| {
            let start = html.find(open).unwrap() + open.len();
            html[start..start + html[start..].find(close).unwrap()].to_owned()
        };
        let hash = |s: &str| {
            use base64::Engine as _;
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s))
            )
        };
        let policy = policy(&["https://shop.example".into()]);
        let script = between("<script>", "</script>");
        let style = between("<style>", "</style>");
        assert_eq!(script, SCRIPT);
        assert!(
            policy.contains(&format!("script-src {};", hash(&script))),
            "{policy}"
        );
        assert!(
            policy.contains(&format!("style-src {};", hash(&style))),
            "{policy}"
        );
        assert!(policy.starts_with("default-src 'none';"));
        assert!(policy.contains("connect-src 'self';"));
        assert!(policy.contains("img-src 'none';"));
        assert!(policy.contains("form-action 'self' https://shop.example;"));
        assert!(!policy.contains("unsafe"));
        // One script, one style, no inline handler.
        assert_eq!(html.matches("<script").count(), 1);
        assert_eq!(html.matches("<style").count(), 1);
        assert!(!html.contains(" onclick") && !html.contains(" onload"));
    }

    #[test]
    fn the_state_json_carries_the_qr_code_the_message_and_the_link_while_pending() {
        let p = provider();
        let v = view(&p, BankIdState::Pending);
        let s = state_json(&v);
        assert_eq!(s["state"], "pending");
        assert_eq!(
            s["message"],
            "Starta BankID-appen och läs av QR-koden, eller öppna BankID på den här enheten."
        );
        assert_eq!(decode(s["qr_svg"].as_str().unwrap()), BANKID_QR);
        assert_eq!(
            s["autostart_url"],
            "bankid:///?autostarttoken=46f4c7f2-7d42-4bc9-a8e1-1d1bd64a5b2e&redirect=null"
        );
        assert!(s["next"].is_null());
        assert_eq!(s["purpose"], "sign");
        let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        // A new read, new QR data: a new QR code.
        let newer = BANKID_QR.replace(".7.", ".8.");
        let v2 = BankIdView {
            qr_data: Some(&newer),
            ..view(&p, BankIdState::Pending)
        };
        assert_ne!(state_json(&v2)["qr_svg"], s["qr_svg"]);
    }

    #[test]
    fn the_state_json_of_a_finished_order_has_no_qr_code_and_says_where_next() {
        let p = provider();
        let mut v = view(&p, BankIdState::Complete);
        v.next = Some("https://shop.example/done?payment_id=1");
        let s = state_json(&v);
        assert_eq!(s["state"], "complete");
        assert_eq!(s["message"], "Betalningen är underskriven.");
        assert!(s["qr_svg"].is_null());
        assert!(s["autostart_url"].is_null());
        assert_eq!(s["next"], "https://shop.example/done?payment_id=1");
        let mut f = view(&p, BankIdState::Failed);
        f.hint_code = Some("expiredTransaction");
        let s = state_json(&f);
        assert_eq!(s["state"], "failed");
        assert!(
            s["message"]
                .as_str()
                .unwrap()
                .starts_with("BankID-appen svarar inte.")
        );
        assert!(s["qr_svg"].is_null());
    }

    #[tokio::test]
    async fn the_page_and_its_state_are_never_cached_and_carry_the_policy() {
        let p = provider();
        let v = view(&p, BankIdState::Pending);
        let r = respond(StatusCode::OK, &v, &[]);
        let h = r.headers();
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], policy(&[]).as_str());
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        let r = respond_state(&v);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json, state_json(&v));
    }
}
