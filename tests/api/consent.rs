//! The shopper's consent page at the authorization hop, over HTTP against the real service,
//! Postgres and the sandbox: what it shows, its headers, the language it speaks, that only
//! the button opens the hop, and the shopper's cancel.

use crate::helpers::{TestApp, TestMerchant, continue_to_bank, spawn_app, spawn_app_full};
use crate::payments::body;
use serde_json::{Value, json};

struct Page {
    status: u16,
    csp: String,
    html: String,
}

async fn open(app: &TestApp, url: &str, accept_language: Option<&str>) -> Page {
    let mut r = app.client.get(url);
    if let Some(l) = accept_language {
        r = r.header("accept-language", l);
    }
    let r = r.send().await.unwrap();
    let csp = r
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    Page {
        status: r.status().as_u16(),
        csp,
        html: r.text().await.unwrap(),
    }
}

async fn create(app: &TestApp, m: &TestMerchant, body: Value) -> (String, String) {
    let p = app.create_payment(&m.api_key, &body).await;
    (
        p["id"].as_str().unwrap().to_owned(),
        p["authorization_url"].as_str().unwrap().to_owned(),
    )
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

async fn hop_opened(app: &TestApp, id: &str) -> bool {
    sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
        "SELECT hop_opened_at FROM payments WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
    .is_some()
}

async fn status_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM payments WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Presses the consent page's cancel button: posts the hop's token to `…/cancel`.
pub(crate) async fn press_cancel(app: &TestApp, url: &str) -> reqwest::Response {
    let (hop, token) = url.split_once("?t=").unwrap();
    app.client
        .post(format!("{hop}/cancel"))
        .form(&[("t", token)])
        .send()
        .await
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_consent_page_shows_the_payment_in_the_payments_language_and_opens_nothing() {
    let app = spawn_app().await;
    let m = app.create_merchant("Kahvila Aalto").await;
    let mut b = body("FI");
    b["language"] = json!("fi");
    b["execution_date"] = json!("2099-12-01");
    b["creditor"]["message"] = json!("Tilaus 1234");
    b["recurring"] = json!({"count": 12, "recurrence_type": "MONTHLY_SAME_DAY"});
    let (id, url) = create(&app, &m, b).await;

    let page = open(&app, &url, Some("sv")).await;
    assert_eq!(page.status, 200);
    let h = &page.html;
    assert!(h.contains(r#"<html lang="fi">"#), "{h}");
    for shown in [
        "Vahvista maksu",
        "Kahvila Aalto",
        "10,50\u{a0}€",
        "Kauppa Oy",
        "FI…3458",
        "Tilaus 1234",
        "RF18539007547034",
        "1.12.2099",
        "kuukausittain, 12 maksua",
        "Jatka pankkiin Nordea",
        "Peruuta ja palaa kauppaan",
    ] {
        assert!(h.contains(shown), "{shown:?} missing in {h}");
    }
    assert!(!h.contains("FI1410093000123458"), "never the full account");
    assert!(!h.contains(&app.sandbox_url), "never the bank's link");
    assert!(!h.contains("<script"), "no JavaScript");
    assert!(h.contains(r#"<input type="hidden" name="t""#));
    assert!(
        !hop_opened(&app, &id).await,
        "showing the page opens nothing"
    );
}

#[tokio::test]
async fn the_consent_page_has_a_strict_content_security_policy() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let (_, url) = create(&app, &m, body("FI")).await;
    let r = app.client.get(&url).send().await.unwrap();
    let h = |name: &str| r.headers()[name].to_str().unwrap().to_owned();
    let csp = h("content-security-policy");
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let sandbox_origin = url::Url::parse(&app.sandbox_url)
        .unwrap()
        .origin()
        .ascii_serialization();
    assert!(
        csp.contains(&format!(
            "form-action 'self' {sandbox_origin} https://shop.example;"
        )),
        "the form may be redirected to the bank and the shop only: {csp}"
    );
    assert_eq!(h("cache-control"), "no-store");
    assert_eq!(h("referrer-policy"), "no-referrer");
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert!(h("content-type").starts_with("text/html"));
}

#[tokio::test]
async fn without_a_payment_language_the_browsers_language_is_spoken() {
    let app = spawn_app().await;
    let m = app.create_merchant("Butikk").await;
    let (_, url) = create(&app, &m, with(body("NO"), "amount", json!("250"))).await;
    let cases = [
        (
            Some("nb-NO,nb;q=0.9,en;q=0.5"),
            "nb",
            "kr\u{a0}250,00",
            "Fortsett til Nordea",
        ),
        (
            Some("de;q=0.9, sv;q=0.8"),
            "sv",
            "250,00\u{a0}NOK",
            "Fortsätt till Nordea",
        ),
        (Some("da"), "da", "250,00\u{a0}NOK", "Fortsæt til Nordea"),
        (None, "en", "NOK\u{a0}250.00", "Continue to Nordea"),
    ];
    for (accept, lang, amount, button) in cases {
        let page = open(&app, &url, accept).await;
        assert_eq!(page.status, 200);
        assert!(
            page.html.contains(&format!(r#"<html lang="{lang}">"#)),
            "{accept:?}"
        );
        assert!(page.html.contains(amount), "{amount:?} for {accept:?}");
        assert!(page.html.contains(button), "{button:?} for {accept:?}");
    }
}

#[tokio::test]
async fn continuing_opens_the_hop_once_and_redirects_to_the_bank() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, body("FI")).await;
    let (hop, _) = url.split_once("?t=").unwrap();

    // A post without the token (or with another) is not the shopper's: nothing opens.
    let forged = app
        .client
        .post(hop)
        .form(&[("t", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);
    assert!(location(&forged).is_empty());
    assert!(!hop_opened(&app, &id).await);

    let r = continue_to_bank(&app.client, &url).await;
    assert_eq!(r.status(), 303);
    assert!(
        location(&r).starts_with(&app.sandbox_url),
        "{}",
        location(&r)
    );
    assert!(hop_opened(&app, &id).await);
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM payment_events WHERE payment_id = $1::uuid AND kind = 'authorization_opened'",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(events.len(), 1);
    let again = continue_to_bank(&app.client, &url).await;
    assert_eq!(
        again.status(),
        303,
        "the shopper may come back to the bank's page"
    );
    assert_eq!(
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM payment_events WHERE payment_id = $1::uuid AND kind = 'authorization_opened'",
        )
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap(),
        1,
        "recorded once"
    );
}

#[tokio::test]
async fn cancelling_on_the_consent_page_ends_the_payment_cancelled_and_returns_to_the_shop() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, body("FI")).await;
    let r = press_cancel(&app, &url).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        location(&r),
        format!("https://shop.example/checkout/done?order=1234&payment_id={id}")
    );
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["status"], "cancelled");
    assert_eq!(p["failure"]["code"], "cancelled_by_shopper");
    let hooks: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM webhook_events WHERE payment_id = $1::uuid ORDER BY created_at",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(hooks, ["payment.cancelled"]);
    assert!(app.bank_payments_for(&id).iter().all(|b| !b.exists_at_bank));

    // The link now shows a plain page with a way back to the shop and none to the bank.
    let page = open(&app, &url, None).await;
    assert_eq!(page.status, 410);
    assert!(page.html.contains("Payment cancelled"));
    assert!(page.html.contains("Return to the shop"));
    assert!(page.html.contains(&format!("payment_id={id}")));
    assert!(!page.html.contains("status="));
    assert!(!page.html.contains("<form"), "no way to the bank");
    assert_eq!(continue_to_bank(&app.client, &url).await.status(), 410);
}

#[tokio::test]
async fn a_shopper_who_reached_the_bank_and_cancels_leaves_the_decision_to_the_bank() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, body("SE")).await;
    assert_eq!(continue_to_bank(&app.client, &url).await.status(), 303);
    let r = press_cancel(&app, &url).await;
    assert_eq!(r.status(), 303);
    assert!(
        location(&r).ends_with(&format!("&payment_id={id}")),
        "{}",
        location(&r)
    );
    let p = app.get_payment(&m.api_key, &id).await;
    assert_eq!(p["status"], "awaiting_authorization", "the bank decides");
    assert_eq!(p["cancel_requested"], true);
    assert_eq!(continue_to_bank(&app.client, &url).await.status(), 410);
}

#[tokio::test]
async fn a_signed_payment_is_not_cancelled_from_the_consent_page() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, body("FI")).await;
    assert_eq!(app.sign(&url, "psu-signed", true).await.status(), 303);
    let r = press_cancel(&app, &url).await;
    assert_eq!(r.status(), 303);
    let p = app.get_payment(&m.api_key, &id).await;
    assert_ne!(p["status"], "cancelled");
    assert_eq!(p["cancel_requested"], false);
}

#[tokio::test]
async fn consent_merchant_goes_straight_to_the_bank() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, with(body("DK"), "consent", json!("merchant"))).await;
    let stored: Value = sqlx::query_scalar("SELECT request FROM payments WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored["consent"], "merchant");
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with(&app.sandbox_url));
    assert!(hop_opened(&app, &id).await);
}

/// What a chat app's previewer, a link checker's `HEAD` and a browser's prefetch get from a
/// hop that would otherwise go to the bank on `GET`: a neutral page, and nothing opened.
#[tokio::test]
async fn a_link_preview_a_head_or_a_prefetch_of_a_consent_merchant_hop_opens_nothing() {
    let app = spawn_app().await;
    let m = app.create_merchant("Preview Shop").await;
    let (id, url) = create(&app, &m, with(body("DK"), "consent", json!("merchant"))).await;

    let head = app.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(location(&head), "");
    // A browser's prefetch gets a status outside 2xx, so the browser drops it and the
    // shopper's own navigation is a request of its own.
    let slack = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";
    for (name, value, status) in [
        ("user-agent", slack, 200),
        (
            "user-agent",
            "facebookexternalhit/1.1 Facebot Twitterbot/1.0",
            200,
        ),
        ("user-agent", "WhatsApp/2.23.20.0 A", 200),
        ("sec-purpose", "prefetch", 503),
        ("sec-purpose", "prefetch;prerender", 503),
    ] {
        let r = app
            .client
            .get(&url)
            .header(name, value)
            .header("accept-language", "sv-SE")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{value}");
        assert_eq!(location(&r), "", "{value}: no redirect to the bank");
        assert_eq!(r.headers()["x-robots-tag"], "noindex, nofollow");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let html = r.text().await.unwrap();
        assert!(html.contains("Betalningslänk"), "{value}: {html}");
        for secret in ["Preview Shop", &app.sandbox_url, &id] {
            assert!(
                !html.contains(secret),
                "{value}: the preview names {secret}: {html}"
            );
        }
    }
    // The same page for a link nobody knows: a preview tells nothing of the payment. Its
    // one link is the address it was asked for, with `open=1`.
    let (base, token) = url.split_once("?t=").unwrap();
    let unknown = format!("{base}?t=nope");
    let telegram = "TelegramBot (like TwitterBot)";
    let preview = |u: String| {
        let client = app.client.clone();
        async move {
            let r = client
                .get(&u)
                .header("user-agent", telegram)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let known = preview(url.clone()).await;
    assert!(
        known.contains(&format!("href=\"?t={token}&amp;open=1\"")),
        "{known}"
    );
    assert_eq!(
        known.replace(token, "TOKEN"),
        preview(unknown).await.replace("nope", "TOKEN"),
        "a preview of a live link and of an unknown one differ"
    );
    // HEAD and prefetches of that link still act on nothing.
    let followed = format!("{url}&open=1");
    let r = app
        .client
        .head(&followed)
        .header("user-agent", telegram)
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), location(&r)), (200, String::new()));
    let r = app
        .client
        .get(&followed)
        .header("sec-purpose", "prefetch")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);

    assert!(!hop_opened(&app, &id).await, "a preview opened the hop");
    let opened: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payment_events WHERE payment_id = $1::uuid AND kind = 'authorization_opened'",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(opened, 0);
    // The merchant can still cancel the untouched payment at once.
    assert_eq!(status_of(&app, &id).await, "awaiting_authorization");

    // The shopper's browser goes straight to the bank, as before.
    let r = app
        .client
        .get(&url)
        .header(
            "user-agent",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/440.0.0.0]",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with(&app.sandbox_url));
    assert!(hop_opened(&app, &id).await);

    // A person whose browser is taken for a previewer follows the neutral page's link: a
    // cookie that keeps this payment's pages from taking them for one again, then the bank.
    let (id, url) = create(&app, &m, with(body("DK"), "consent", json!("merchant"))).await;
    let r = app
        .client
        .get(format!("{url}&open=1"))
        .header("user-agent", telegram)
        .send()
        .await
        .unwrap();
    // Back to the address without `open=1`, with the cookie: that request opened nothing.
    assert_eq!(r.status(), 303);
    let token = url.split_once("?t=").unwrap().1;
    assert_eq!(location(&r), format!("?t={token}"));
    assert!(!hop_opened(&app, &id).await);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("pisgate_opened=1; Path=/authorize/{id};")),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "the test server is plain http: {cookie}"
    );
    let r = app
        .client
        .get(&url)
        .header("user-agent", telegram)
        .header("cookie", "pisgate_opened=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with(&app.sandbox_url));
    assert!(hop_opened(&app, &id).await);
}

#[tokio::test]
async fn expired_paid_and_unknown_payments_get_plain_pages_without_a_way_to_the_bank() {
    let app = spawn_app().await;
    let m = app.create_merchant("Shop").await;

    let (expired, url) = create(&app, &m, with(body("FI"), "language", json!("fi"))).await;
    sqlx::query("UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&expired)
        .execute(&app.pool)
        .await
        .unwrap();
    let page = open(&app, &url, None).await;
    assert_eq!(page.status, 410);
    assert!(
        page.html.contains("Maksulinkki on vanhentunut"),
        "{}",
        page.html
    );
    assert!(page.html.contains("Palaa kauppaan"));
    assert!(!page.html.contains("<form"));
    assert_eq!(continue_to_bank(&app.client, &url).await.status(), 410);
    assert!(!hop_opened(&app, &expired).await);

    let (paid, url) = create(&app, &m, body("FI")).await;
    assert_eq!(app.sign(&url, "psu-paid", true).await.status(), 303);
    let page = open(&app, &url, Some("da")).await;
    assert_eq!(page.status, 410);
    assert!(page.html.contains(r#"<html lang="da">"#));
    assert!(page.html.contains(&format!("payment_id={paid}")));
    assert!(!page.html.contains("<form"));
    assert_ne!(status_of(&app, &paid).await, "awaiting_authorization");

    let (_, url) = create(&app, &m, body("FI")).await;
    let unknown = url.replace("?t=", "?t=x");
    let page = open(&app, &unknown, Some("fi")).await;
    assert_eq!(page.status, 404);
    assert!(page.html.contains("Linkki ei kelpaa"));
    assert!(
        !page.html.contains("<a "),
        "no way back for an unknown payment"
    );
    assert!(page.csp.starts_with("default-src 'none'"));
    let page = open(&app, &app.url("/authorize/not-a-uuid?t=x"), None).await;
    assert_eq!(page.status, 404);
}

/// The poller on, fast, for the tests that wait for the bank's final word.
const POLLER: &[(&str, &str)] = &[
    ("PISGATE__POLLER__ENABLED", "true"),
    ("PISGATE__POLLER__SIGNING_INTERVAL", "200ms"),
    ("PISGATE__POLLER__LATE_SIGNING_INTERVAL", "300ms"),
    ("PISGATE__POLLER__AUTHORIZED_INTERVAL", "300ms"),
    ("PISGATE__POLLER__IDLE_WAIT", "500ms"),
    ("PISGATE__POLLER__MAX_BACKOFF", "1s"),
];

async fn wait_for_status(app: &TestApp, m: &TestMerchant, id: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let p = app.get_payment(&m.api_key, id).await;
        if p["status"] == want {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} is {}, not {want}",
            p["status"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn cancel_requests(app: &TestApp, id: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT detail FROM payment_events WHERE payment_id = $1::uuid AND kind = 'cancel_requested' ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// The shopper signs at the bank in a new tab, then presses cancel on the consent page left
/// open in the old one, then comes back from the bank: the cancel is the shopper's, it never
/// deletes what the shopper signed, and the payment follows the bank to paid.
#[tokio::test]
async fn a_shopper_who_signed_and_then_cancels_in_the_old_tab_still_ends_paid() {
    let app = spawn_app_full(POLLER, |c| {
        c.confirm_delay = std::time::Duration::ZERO;
        c.paid_delay = std::time::Duration::from_secs(1);
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, body("FI")).await;
    let callback = app.sign_at_bank(&url, "psu-old-tab", true).await;
    let r = press_cancel(&app, &url).await;
    assert_eq!(r.status(), 303);
    let back = app.client.get(&callback).send().await.unwrap();
    assert_eq!(back.status(), 303);

    let p = wait_for_status(&app, &m, &id, "paid").await;
    assert_eq!(p["bank_status"], "Paid");
    assert_eq!(p["failure"], Value::Null);
    assert_eq!(
        app.bank_calls(pisgate::sandbox::Operation::Cancel),
        0,
        "no DELETE for a shopper's cancel"
    );
    assert_eq!(cancel_requests(&app, &id).await, [json!({"by": "shopper"})]);
    assert!(app.bank_payments_for(&id).iter().any(|b| b.exists_at_bank));
}

/// A shopper who reached the bank, cancels on the consent page and never signs: the payment
/// ends `cancelled` on the bank's word, recorded as the shopper's cancel, not the merchant's.
#[tokio::test]
async fn a_shoppers_cancel_after_reaching_the_bank_ends_cancelled_by_the_shopper() {
    let app = spawn_app_full(POLLER, |c| {
        c.approval_timeout = Some(std::time::Duration::from_secs(1));
    })
    .await;
    let m = app.create_merchant("Shop").await;
    let (id, url) = create(&app, &m, body("FI")).await;
    let bank_page = crate::helpers::open_authorization(&app.client, &url).await;
    assert_eq!(bank_page.status(), 200, "the shopper is at the bank");
    assert_eq!(press_cancel(&app, &url).await.status(), 303);
    assert_eq!(cancel_requests(&app, &id).await, [json!({"by": "shopper"})]);

    let p = wait_for_status(&app, &m, &id, "cancelled").await;
    assert_eq!(p["failure"]["code"], "cancelled_by_shopper", "{p}");

    // The merchant's own cancel is told apart in the ledger.
    let (other, _) = create(&app, &m, body("FI")).await;
    let r = app
        .client
        .post(app.url(&format!("/v1/payments/{other}/cancel")))
        .bearer_auth(&m.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let o = app.get_payment(&m.api_key, &other).await;
    assert_eq!(o["failure"]["code"], "cancelled_by_merchant");
}

/// The text of the first element that opens with `open` (up to its closing `close`), tags
/// removed.
fn element_text(html: &str, open: &str, close: &str) -> String {
    let start = html
        .find(open)
        .unwrap_or_else(|| panic!("{open} missing in {html}"));
    let rest = &html[start..];
    let inner = &rest[..rest.find(close).unwrap()];
    let mut text = String::new();
    let mut in_tag = false;
    for c in inner.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

/// `(dt, dd)` pairs of the page's table, in order.
fn rows(html: &str) -> Vec<(String, String)> {
    html.split("<dt>")
        .skip(1)
        .map(|part| {
            let (dt, rest) = part.split_once("</dt>").unwrap();
            let dd = rest
                .split_once("<dd>")
                .and_then(|(_, r)| r.split_once("</dd>"))
                .unwrap()
                .0;
            (dt.to_owned(), dd.to_owned())
        })
        .collect()
}

const DEMO_PROVIDER: &str = "pisgate demo TPP (sandbox)";
const DEMO_LICENCE: &str = "sandbox only, not licensed";

#[tokio::test]
async fn a_standing_order_reads_how_often_beside_the_amount_with_the_order_number_and_the_provider_in_every_language()
 {
    let app = spawn_app().await;
    let m = app.create_merchant("Verkkokauppa").await;
    // language, country, the amount's large type, the order number's label, the provider line
    let cases = [
        (
            "en",
            "FI",
            "€250.00 a month, 3 payments",
            "Order number",
            "This page is provided by pisgate demo TPP (sandbox), a payment initiation service provider (licence: ",
        ),
        (
            "fi",
            "FI",
            "250,00\u{a0}€ kuukaudessa, 3 maksua",
            "Tilausnumero",
            "Tämän sivun tarjoaa pisgate demo TPP (sandbox), maksutoimeksiantopalvelun tarjoaja (toimilupa: ",
        ),
        (
            "sv",
            "SE",
            "250,00\u{a0}kr i månaden, 3 betalningar",
            "Ordernummer",
            "Sidan tillhandahålls av pisgate demo TPP (sandbox), leverantör av betalningsinitieringstjänster (tillstånd: ",
        ),
        (
            "da",
            "DK",
            "250,00\u{a0}kr. om måneden, 3 betalinger",
            "Ordrenummer",
            "Siden leveres af pisgate demo TPP (sandbox), udbyder af betalingsinitieringstjenester (tilladelse: ",
        ),
        (
            "no",
            "NO",
            "kr\u{a0}250,00 i måneden, 3 betalinger",
            "Ordrenummer",
            "Siden leveres av pisgate demo TPP (sandbox), tilbyder av betalingsfullmaktstjenester (tillatelse: ",
        ),
    ];
    for (lang, country, amount, order, provider) in cases {
        let mut b = body(country);
        b["language"] = json!(lang);
        b["amount"] = json!("250.00");
        b["reference"] = json!("ORDER-2026-0042");
        b["recurring"] = json!({"count": 3, "recurrence_type": "MONTHLY_SAME_DAY"});
        let (_, url) = create(&app, &m, b).await;
        let page = open(&app, &url, None).await;
        assert_eq!(page.status, 200, "{lang}");
        let h = &page.html;
        assert_eq!(
            element_text(h, r#"<p class="amount">"#, "</p>"),
            amount,
            "{lang}: how often is said in the amount's large type"
        );
        assert!(
            rows(h).contains(&(order.to_owned(), "ORDER-2026-0042".to_owned())),
            "{lang}: the merchant's order number in {h}"
        );
        assert_eq!(
            element_text(h, "<footer>", "</footer>"),
            format!("{provider}{DEMO_LICENCE})."),
            "{lang}: who runs the page"
        );
    }
}

#[tokio::test]
async fn a_shop_that_is_the_recipient_is_shown_once_and_each_party_has_one_name_per_language() {
    let app = spawn_app().await;
    // language, country, the shop's word, the recipient's word
    let cases = [
        ("en", "FI", "Shop", "Recipient"),
        ("fi", "FI", "Kauppa", "Saaja"),
        ("sv", "SE", "Butik", "Mottagare"),
        ("da", "DK", "Butik", "Modtager"),
        ("no", "NO", "Butikk", "Mottaker"),
    ];
    for (lang, country, shop_word, recipient_word) in cases {
        let creditor = body(country)["creditor"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        // The shop is the recipient: one row, as the recipient; the header names the shop.
        let same = app.create_merchant(&creditor).await;
        let mut b = body(country);
        b["language"] = json!(lang);
        let (_, url) = create(&app, &same, b.clone()).await;
        let h = open(&app, &url, None).await.html;
        let table = rows(&h);
        assert_eq!(
            table.iter().filter(|(_, dd)| *dd == creditor).count(),
            1,
            "{lang}: {creditor} once in {table:?}"
        );
        assert!(table.contains(&(recipient_word.to_owned(), creditor.clone())));
        assert!(!table.iter().any(|(dt, _)| dt == shop_word), "{table:?}");
        assert_eq!(
            element_text(&h, r#"<p class="to">"#, "</p>"),
            format!("{shop_word}: {creditor}"),
            "{lang}: the header names the shop with the table's word for it"
        );

        // Another shop: both rows, each with its one word.
        let other = app.create_merchant(&format!("Marketplace {lang}")).await;
        let (_, url) = create(&app, &other, b).await;
        let h = open(&app, &url, None).await.html;
        let table = rows(&h);
        assert!(table.contains(&(shop_word.to_owned(), format!("Marketplace {lang}"))));
        assert!(table.contains(&(recipient_word.to_owned(), creditor.clone())));
        assert_eq!(
            element_text(&h, r#"<p class="to">"#, "</p>"),
            format!("{shop_word}: Marketplace {lang}")
        );
    }
}

#[tokio::test]
async fn every_shopper_page_names_the_configured_provider() {
    let app = crate::helpers::spawn_app_with(&[
        ("PISGATE__PROVIDER__LEGAL_NAME", "Example Payments Oy"),
        (
            "PISGATE__PROVIDER__LICENCE",
            "FIN-FSA, payment institution 1234567-8",
        ),
    ])
    .await;
    let m = app.create_merchant("Shop").await;
    let line = "This page is provided by Example Payments Oy, a payment initiation service \
                provider (licence: FIN-FSA, payment institution 1234567-8).";

    let (expired, url) = create(&app, &m, body("FI")).await;
    let consent = open(&app, &url, Some("en")).await;
    sqlx::query("UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&expired)
        .execute(&app.pool)
        .await
        .unwrap();
    let closed = open(&app, &url, Some("en")).await;
    assert_eq!(closed.status, 410);
    let unknown = open(&app, &url.replace("?t=", "?t=x"), Some("en")).await;
    assert_eq!(unknown.status, 404);
    let callback = open(&app, &app.url("/v1/callbacks/nordea?code=x"), None).await;
    assert_eq!(callback.status, 400);
    for (name, page) in [
        ("consent", &consent),
        ("expired", &closed),
        ("unknown", &unknown),
        ("callback", &callback),
    ] {
        assert_eq!(
            element_text(&page.html, "<footer>", "</footer>"),
            line,
            "{name}: {}",
            page.html
        );
        assert!(!page.html.contains(DEMO_PROVIDER), "{name}");
        assert!(
            page.csp
                .starts_with("default-src 'none'; style-src 'sha256-"),
            "{name}: {}",
            page.csp
        );
    }
}

/// The callback's plain pages speak the shopper's language: the payment's own when the
/// return link names a payment, else the browser's (`Accept-Language`), else English.
#[tokio::test]
async fn the_callbacks_pages_speak_the_payments_language_else_the_browsers() {
    let app = spawn_app().await;
    // No payment named: the browser's language.
    let sv = open(
        &app,
        &app.url("/v1/callbacks/nordea?code=x"),
        Some("sv-SE,sv;q=0.9"),
    )
    .await;
    assert_eq!(sv.status, 400);
    assert!(sv.html.contains("<html lang=\"sv\""), "{}", sv.html);
    assert!(sv.html.contains("Länken är inte giltig"), "{}", sv.html);
    assert!(sv.html.contains("ofullständig"), "{}", sv.html);
    let da = open(
        &app,
        &app.url("/v1/callbacks/nordea?code=x&state=not-a-state"),
        Some("da"),
    )
    .await;
    assert!(
        da.html.contains("Dette returlink kender vi ikke."),
        "{}",
        da.html
    );
    let en = open(&app, &app.url("/v1/callbacks/nordea?code=x"), None).await;
    assert!(en.html.contains("Link not valid"), "{}", en.html);

    // A payment in Finnish, its return link without the code: Finnish, whatever the
    // browser says.
    let m = app.create_merchant("Kahvila Aalto").await;
    let mut b = body("FI");
    b["language"] = json!("fi");
    let p = app.create_payment(&m.api_key, &b).await;
    let callback = app
        .sign_at_bank(p["authorization_url"].as_str().unwrap(), "shopper-fi", true)
        .await;
    let mut url = reqwest::Url::parse(&callback).unwrap();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "code")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(kept);
    let fi = open(&app, url.as_str(), Some("en-GB,en;q=0.9")).await;
    assert_eq!(fi.status, 400);
    assert!(fi.html.contains("<html lang=\"fi\""), "{}", fi.html);
    assert!(fi.html.contains("Linkki ei kelpaa"), "{}", fi.html);
    assert!(
        fi.html.contains("Tässä paluulinkissä ei ole valtuutusta."),
        "{}",
        fi.html
    );
}
