//! End-to-end tests of the sandbox over real sockets: a sandbox bound to 127.0.0.1:0, a test
//! key pair generated once per test binary, and a small signer of our own in the helper.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::*;

const CLIENT_ID: &str = "test-client-id";
const CLIENT_SECRET: &str = "test-client-secret";
const REDIRECT_URI: &str = "https://shop.example/callback";

fn key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key"))
}

fn other_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key"))
}

fn public_pem() -> String {
    key()
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem")
}

/// What a test changes about an otherwise correct request.
#[derive(Default)]
struct Tweak<'a> {
    secret: Option<&'a str>,
    omit_client_id: bool,
    key_id: Option<&'a str>,
    key: Option<&'a RsaPrivateKey>,
    date: Option<String>,
    headers_list: Option<&'a str>,
    /// Sent instead of the body that was signed and digested.
    sent_body: Option<Vec<u8>>,
}

struct TestSandbox {
    base: String,
    sandbox: Arc<Sandbox>,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

async fn spawn() -> TestSandbox {
    spawn_with(|_| {}).await
}

/// A sandbox with zero delays (tests set others), served on its own port.
async fn spawn_with(tune: impl FnOnce(&mut SandboxConfig)) -> TestSandbox {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let mut cfg = SandboxConfig::new(
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET.to_owned()),
        public_pem(),
        base.clone(),
    );
    cfg.confirm_delay = Duration::ZERO;
    cfg.paid_delay = Duration::ZERO;
    tune(&mut cfg);
    let sandbox = Sandbox::new(cfg).expect("sandbox");
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, sandbox.clone(), async {
        let _ = rx.await;
    }));
    TestSandbox {
        base,
        sandbox,
        client: browser(),
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// A client that does not follow redirects (the redirect_uri is not a real host).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn body_for(country: &str) -> Value {
    let auth = json!({ "state": format!("state-{country}"), "redirect_uri": REDIRECT_URI });
    let payment = match country {
        "FI" => json!({
            "amount": "10.00", "currency": "EUR",
            "creditor": { "account": { "value": "FI1450000120236228", "currency": "EUR", "type": "IBAN" },
                          "name": "Test Name", "message": "Beneficiary message" },
            "debtor": { "account": { "value": "FI7473834510057469", "currency": "EUR", "type": "IBAN" } },
            "external_id": "ext-fi", "merchant": "shop", "urgency": "standard"
        }),
        "DK" => json!({
            "amount": 14.24, "currency": "DKK", "urgency": "standard",
            "creditor": { "account": { "value": "23001546147254", "currency": "DKK", "type": "BBAN_DK" },
                          "message": "1831653108" },
            "debtor": { "account": { "value": "23001546139529", "currency": "DKK", "type": "BBAN_DK" } },
            "external_id": "ext-dk", "merchant": "Shoe shop"
        }),
        "SE" => json!({
            "amount": "12.24", "currency": "SEK",
            "creditor": { "account": { "value": "3300308", "type": "BGNR" },
                          "name": "Beneficiary name", "message": "1831653108" },
            "debtor": { "account": { "value": "SE1730000000031412034086", "currency": "SEK", "type": "IBAN" } },
            "external_id": "ext-se", "merchant": "Shoe shop"
        }),
        "NO" => json!({
            "amount": "1.00", "currency": "NOK",
            "creditor": { "account": { "value": "NO5460391627641", "currency": "NOK", "type": "IBAN" },
                          "name": "Test Name", "message": "Pay 84bc41d0" },
            "debtor": { "account": { "value": "NO2860010503178", "currency": "NOK", "type": "IBAN" },
                        "message": "Pay a3fcec98" },
            "external_id": "ext-no", "merchant": "shop"
        }),
        other => panic!("no body for {other}"),
    };
    json!({ "payment": payment, "authentication": auth })
}

fn endpoint_for(country: &str) -> &'static str {
    if country == "FI" {
        "/personal/v2/payments/authorization/sepa-credit-transfer"
    } else {
        "/personal/v2/payments/authorization/domestic-credit-transfer"
    }
}

fn today() -> String {
    chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string()
}

fn in_days(days: i64) -> String {
    (chrono::Utc::now().date_naive() + chrono::Duration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

struct Initiated {
    id: String,
    signing_url: String,
}

impl TestSandbox {
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let done = tokio::time::timeout(Duration::from_secs(15), server).await;
            done.expect("serve ends after shutdown")
                .expect("serve task")
                .expect("serve result");
        }
    }

    /// Sends a request signed the way Nordea wants, changed by `t`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        bearer: Option<&str>,
        t: Tweak<'_>,
    ) -> reqwest::Response {
        self.try_call(method, path, body, bearer, t)
            .await
            .expect("request")
    }

    /// [`TestSandbox::call`] for a call that may get no answer at all.
    async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        bearer: Option<&str>,
        t: Tweak<'_>,
    ) -> reqwest::Result<reqwest::Response> {
        let date = t
            .date
            .unwrap_or_else(|| httpdate::fmt_http_date(SystemTime::now()));
        let host = "127.0.0.1";
        let mut lines = vec![
            (
                "(request-target)",
                format!("{} {path}", method.as_str().to_lowercase()),
            ),
            ("x-nordea-originating-host", host.to_owned()),
            ("x-nordea-originating-date", date.clone()),
        ];
        let mut list =
            String::from("(request-target) x-nordea-originating-host x-nordea-originating-date");
        let mut rb = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("x-nordea-originating-host", host)
            .header("x-nordea-originating-date", &date)
            .header("accept", "application/json");
        let mut sent = Vec::new();
        if let Some((content_type, bytes)) = body {
            let digest = format!("sha-256={}", STANDARD.encode(Sha256::digest(&bytes)));
            lines.push(("content-type", content_type.to_owned()));
            lines.push(("digest", digest.clone()));
            list.push_str(" content-type digest");
            rb = rb
                .header("content-type", content_type)
                .header("digest", digest);
            sent = bytes;
        }
        let list = t.headers_list.map_or(list, str::to_owned);
        let signing_string: Vec<String> = list
            .split_whitespace()
            .map(|name| {
                let value = lines
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or("", |(_, v)| v.as_str());
                format!("{name}: {value}")
            })
            .collect();
        let signer = SigningKey::<Sha256>::new(t.key.unwrap_or(key()).clone());
        let signature =
            STANDARD.encode(signer.sign(signing_string.join("\n").as_bytes()).to_bytes());
        rb = rb.header(
            "signature",
            format!(
                "keyId=\"{}\",algorithm=\"rsa-sha256\",headers=\"{list}\",signature=\"{signature}\"",
                t.key_id.unwrap_or(CLIENT_ID)
            ),
        );
        if !t.omit_client_id {
            rb = rb.header("x-ibm-client-id", CLIENT_ID);
        }
        rb = rb.header("x-ibm-client-secret", t.secret.unwrap_or(CLIENT_SECRET));
        if let Some(token) = bearer {
            rb = rb.header("authorization", format!("Bearer {token}"));
        }
        if let Some(b) = t.sent_body {
            sent = b;
        }
        if !sent.is_empty() {
            rb = rb.body(sent);
        }
        rb.send().await
    }

    async fn post_json(&self, path: &str, body: &Value, t: Tweak<'_>) -> reqwest::Response {
        let bytes = serde_json::to_vec(body).expect("json");
        self.call(
            Method::POST,
            path,
            Some(("application/json", bytes)),
            None,
            t,
        )
        .await
    }

    async fn get(&self, path: &str, bearer: Option<&str>) -> reqwest::Response {
        self.call(Method::GET, path, None, bearer, Tweak::default())
            .await
    }

    async fn initiate_body(&self, country: &str, body: &Value) -> Initiated {
        let resp = self
            .post_json(endpoint_for(country), body, Tweak::default())
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED, "{country}");
        let v: Value = resp.json().await.expect("json");
        let links = v["response"]["_links"].as_array().expect("links").clone();
        let href = |rel: &str| {
            links
                .iter()
                .find(|l| l["rel"] == rel)
                .and_then(|l| l["href"].as_str())
                .unwrap_or_else(|| panic!("no {rel} link"))
                .to_owned()
        };
        let status = href("status");
        let id = status
            .trim_end_matches("/status")
            .rsplit('/')
            .next()
            .expect("id")
            .to_owned();
        assert_eq!(href("details"), format!("/v2/single-sca-payments/{id}"));
        Initiated {
            id,
            signing_url: href("redirect"),
        }
    }

    async fn initiate(&self, country: &str) -> Initiated {
        self.initiate_body(country, &body_for(country)).await
    }

    /// Opens the link and signs as `psu`; returns the redirect's query parameters.
    async fn sign(&self, p: &Initiated, psu: &str, decision: &str) -> Vec<(String, String)> {
        let page = self.client.get(&p.signing_url).send().await.expect("page");
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("html");
        assert!(html.contains("name=\"psu_id\""), "{html}");
        let resp = self
            .client
            .post(&p.signing_url)
            .form(&[("psu_id", psu), ("decision", decision)])
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let location = resp.headers()["location"].to_str().expect("location");
        assert!(location.starts_with(REDIRECT_URI), "{location}");
        url::Url::parse(location)
            .expect("url")
            .query_pairs()
            .into_owned()
            .collect()
    }

    async fn approve(&self, p: &Initiated, psu: &str) -> String {
        let q = self.sign(p, psu, "approve").await;
        q.iter()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.clone())
            .expect("code")
    }

    async fn token_form(&self, form: &str) -> reqwest::Response {
        self.call(
            Method::POST,
            "/personal/v5/authorize/token",
            Some((
                "application/x-www-form-urlencoded",
                form.as_bytes().to_vec(),
            )),
            None,
            Tweak::default(),
        )
        .await
    }

    async fn exchange(&self, code: &str) -> reqwest::Response {
        let form = normalized_form(&[
            ("code", code),
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT_URI),
        ]);
        self.token_form(&form).await
    }

    /// Exchanges a code and returns (access token, refresh token).
    async fn tokens(&self, code: &str) -> (String, String) {
        let resp = self.exchange(code).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = resp.json().await.expect("json");
        // Nordea's token answer is bare: no group_header, no response envelope.
        assert!(v.get("group_header").is_none(), "{v}");
        let r = &v;
        assert_eq!(r["token_type"], "Bearer");
        assert!(r["expires_in"].as_u64().is_some());
        (
            r["access_token"].as_str().expect("access").to_owned(),
            r["refresh_token"].as_str().expect("refresh").to_owned(),
        )
    }

    async fn status_of(&self, id: &str) -> (StatusCode, Value) {
        let resp = self
            .get(
                &format!("/personal/v2/single-sca-payments/{id}/status"),
                None,
            )
            .await;
        let status = resp.status();
        (status, resp.json().await.expect("json"))
    }

    async fn details(&self, id: &str, token: &str) -> (StatusCode, Value) {
        let resp = self
            .get(
                &format!("/personal/v2/single-sca-payments/{id}"),
                Some(token),
            )
            .await;
        let status = resp.status();
        (status, resp.json().await.expect("json"))
    }

    async fn funds(&self, id: &str, token: &str) -> (StatusCode, Value) {
        let resp = self
            .get(
                &format!(
                    "/personal/v3/single-sca-payments/{id}?request_availability_of_funds=true"
                ),
                Some(token),
            )
            .await;
        let status = resp.status();
        (status, resp.json().await.expect("json"))
    }

    async fn delete(&self, ids: &[&str], token: &str) -> (StatusCode, Value) {
        let body = json!({ "payments": ids.iter().map(|id| json!({"payment_id": id})).collect::<Vec<_>>() });
        let resp = self
            .call(
                Method::DELETE,
                "/personal/v2/single-sca-payments",
                Some(("application/json", serde_json::to_vec(&body).expect("json"))),
                Some(token),
                Tweak::default(),
            )
            .await;
        let status = resp.status();
        (status, resp.json().await.expect("json"))
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut rb = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb.send().await.expect("admin")
    }
}

/// The first failure of a Nordea error body.
fn failure(v: &Value) -> (&str, &str) {
    let f = &v["error"]["failures"][0];
    // Every failure is shaped like Nordea's: a path and a validator-like type.
    assert!(f["path"].is_string(), "{v}");
    assert!(
        matches!(
            f["type"].as_str(),
            Some("NotNull" | "Pattern" | "Size" | "Valid")
        ),
        "{v}"
    );
    (
        f["code"].as_str().unwrap_or_default(),
        f["description"].as_str().unwrap_or_default(),
    )
}

fn failure_codes(v: &Value) -> Vec<(String, String)> {
    v["error"]["failures"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    (
                        f["code"].as_str().unwrap_or_default().to_owned(),
                        f["path"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------- initiation and signing

#[tokio::test]
async fn a_signed_initiation_is_accepted_in_each_of_the_four_countries() {
    let sb = spawn().await;
    for country in ["FI", "DK", "SE", "NO"] {
        let p = sb.initiate(country).await;
        assert!(
            p.signing_url
                .starts_with(&format!("{}/sandbox/sign/", sb.base)),
            "{}",
            p.signing_url
        );
        let view = sb.sandbox.payment(&p.id).expect("view");
        assert_eq!(view.country.code(), country);
        assert_eq!(view.status, BankStatus::PendingUserApproval);
        assert!(!view.exists_at_bank);
    }
    let recorded = sb.sandbox.requests();
    assert_eq!(recorded.len(), 4);
    assert!(recorded.iter().all(|r| r.status == Some(201)));
    sb.stop().await;
}

#[tokio::test]
async fn the_initiation_answer_has_nordeas_envelope_and_only_links_by_default() {
    let sb = spawn().await;
    let resp = sb
        .post_json(endpoint_for("FI"), &body_for("FI"), Tweak::default())
        .await;
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["group_header"]["http_code"], 201);
    assert!(v["group_header"]["message_identification"].is_string());
    assert!(v["group_header"]["creation_date_time"].is_string());
    assert!(v["response"].get("payment_id").is_none());
    sb.stop().await;

    let sb = spawn_with(|c| c.echo_payment_id_on_initiation = true).await;
    let resp = sb
        .post_json(endpoint_for("FI"), &body_for("FI"), Tweak::default())
        .await;
    let v: Value = resp.json().await.expect("json");
    assert!(v["response"]["payment_id"].is_string());
    assert_eq!(v["response"]["payment_status"], "PendingUserApproval");
    sb.stop().await;
}

#[tokio::test]
async fn status_is_404_until_the_shopper_opens_the_signing_link() {
    let sb = spawn().await;
    let p = sb.initiate("NO").await;
    let (status, body) = sb.status_of(&p.id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(failure(&body).0, "error.resource.not_found");
    assert_eq!(body["group_header"]["http_code"], 404);

    let page = sb.client.get(&p.signing_url).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let (status, body) = sb.status_of(&p.id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["payment_id"], p.id.as_str());
    assert_eq!(body["response"]["status"], "PendingUserApproval");
    sb.stop().await;
}

#[tokio::test]
async fn a_full_flow_approve_exchange_details_funds_and_delete() {
    // Confirmed right away, paid only when the test moves the clock.
    let sb = spawn_with(|c| c.paid_delay = Duration::from_secs(3600)).await;
    let p = sb.initiate("DK").await;
    let q = sb.sign(&p, "psu-anna", "approve").await;
    assert!(q.contains(&("state".into(), "state-DK".into())));
    let code = q.iter().find(|(k, _)| k == "code").expect("code").1.clone();
    let (access, _refresh) = sb.tokens(&code).await;

    let (status, body) = sb.details(&p.id, &access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = &body["response"];
    assert_eq!(r["payment_id"], p.id.as_str());
    assert_eq!(r["amount"], "14.24");
    assert_eq!(r["currency"], "DKK");
    assert_eq!(r["status"], "Confirmed");
    assert_eq!(r["creditor"]["account"]["type"], "BBAN_DK");
    assert_eq!(r["requested_execution_date"], today());

    let (status, body) = sb.funds(&p.id, &access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["availability_of_funds"], "true");
    assert_eq!(body["response"]["instructed_amount"]["amount"], "14.24");

    let (status, body) = sb.delete(&[&p.id, "no-such-payment"], &access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["response"], json!([p.id]));
    assert_eq!(body["errors"][0]["payment_id"], "no-such-payment");
    assert_eq!(body["errors"][0]["code"], "error.resource.not_found");
    let (_, body) = sb.status_of(&p.id).await;
    assert_eq!(body["response"]["status"], "Cancelled");

    // A cancelled payment cannot be deleted again.
    let (_, body) = sb.delete(&[&p.id], &access).await;
    assert_eq!(body["response"], json!([]));
    assert_eq!(body["errors"][0]["code"], "error.payment.not_deletable");
    sb.stop().await;
}

#[tokio::test]
async fn a_payment_being_confirmed_cannot_be_deleted_and_an_unopened_one_can() {
    // The bank shows PendingUserApproval for 5 s after the signature: deleting it then is
    // refused, by the signer's own token too (the horizon's delete must not undo a signature).
    let sb = spawn_with(|c| {
        c.confirm_delay = Duration::from_secs(5);
        c.paid_delay = Duration::from_secs(3600);
    })
    .await;
    let p = sb.initiate("FI").await;
    let code = sb.approve(&p, "psu-1").await;
    let (access, _) = sb.tokens(&code).await;
    assert_eq!(
        sb.status_of(&p.id).await.1["response"]["status"],
        "PendingUserApproval"
    );
    let (status, body) = sb.delete(&[&p.id], &access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["response"], json!([]));
    assert_eq!(body["errors"][0]["code"], "error.payment.not_deletable");
    sb.sandbox.advance_clock(Duration::from_secs(5));
    assert_eq!(
        sb.status_of(&p.id).await.1["response"]["status"],
        "Confirmed"
    );
    // A payment whose link nobody opened (404 for status) exists and can be deleted.
    let unopened = sb.initiate("SE").await;
    assert_eq!(sb.status_of(&unopened.id).await.0, StatusCode::NOT_FOUND);
    let (_, body) = sb.delete(&[&unopened.id], &access).await;
    assert_eq!(body["response"], json!([unopened.id]), "{body}");
    sb.stop().await;
}

#[tokio::test]
async fn a_paid_payment_cannot_be_deleted_and_has_no_funds_check() {
    let sb = spawn().await;
    let p = sb.initiate("SE").await;
    let code = sb.approve(&p, "psu-1").await;
    let (access, _) = sb.tokens(&code).await;
    let (_, body) = sb.details(&p.id, &access).await;
    assert_eq!(body["response"]["status"], "Paid");
    assert_eq!(body["response"]["amount"], "12.24");
    let (_, body) = sb.funds(&p.id, &access).await;
    assert!(body["response"].get("availability_of_funds").is_none());
    let (_, body) = sb.delete(&[&p.id], &access).await;
    assert_eq!(body["errors"][0]["code"], "error.payment.not_deletable");
    sb.stop().await;
}

#[tokio::test]
async fn rejecting_redirects_with_access_denied_and_cancels_the_approval() {
    let sb = spawn().await;
    let p = sb.initiate("FI").await;
    let q = sb.sign(&p, "psu-1", "reject").await;
    assert!(q.contains(&("error".into(), "access_denied".into())));
    assert!(q.iter().any(|(k, _)| k == "error_description"));
    assert!(q.contains(&("state".into(), "state-FI".into())));
    assert!(!q.iter().any(|(k, _)| k == "code"));
    let (_, body) = sb.status_of(&p.id).await;
    assert_eq!(body["response"]["status"], "UserApprovalCancelled");
    // The link cannot be used twice.
    let again = sb.client.get(&p.signing_url).send().await.expect("page");
    assert_eq!(again.status(), StatusCode::CONFLICT);
    sb.stop().await;
}

// ---------------------------------------------------------------- authentication

#[tokio::test]
async fn a_wrong_client_secret_is_401_unauthorized() {
    let sb = spawn().await;
    let resp = sb
        .post_json(
            endpoint_for("FI"),
            &body_for("FI"),
            Tweak {
                secret: Some("wrong"),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(failure(&v).0, "unauthorized");
    assert_eq!(
        v["error"]["request"]["url"],
        "/v2/payments/authorization/sepa-credit-transfer"
    );
    assert!(sb.sandbox.payments().is_empty());
    sb.stop().await;
}

#[tokio::test]
async fn a_missing_client_id_is_401_apikey_missing() {
    let sb = spawn().await;
    let resp = sb
        .call(
            Method::GET,
            "/personal/v2/single-sca-payments/x/status",
            None,
            None,
            Tweak {
                omit_client_id: true,
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(failure(&v).0, "error.apikey.missing");
    sb.stop().await;
}

#[tokio::test]
async fn a_signature_by_another_key_is_refused() {
    let sb = spawn().await;
    let resp = sb
        .post_json(
            endpoint_for("FI"),
            &body_for("FI"),
            Tweak {
                key: Some(other_key()),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(failure(&v).0, "error.signature.invalid");
    sb.stop().await;
}

#[tokio::test]
async fn a_key_id_other_than_the_client_id_is_refused_with_nordeas_message() {
    let sb = spawn().await;
    let resp = sb
        .call(
            Method::GET,
            "/personal/v2/single-sca-payments/x/status",
            None,
            None,
            Tweak {
                key_id: Some("someone-else"),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(
        failure(&v),
        (
            "error.signature.invalid",
            "KeyId claim doesn't match to Client Id from X-IBM-Client-Id header."
        )
    );
    sb.stop().await;
}

#[tokio::test]
async fn a_body_changed_after_signing_fails_the_digest() {
    let sb = spawn().await;
    let mut tampered = body_for("FI");
    tampered["payment"]["amount"] = json!("9999.00");
    let resp = sb
        .post_json(
            endpoint_for("FI"),
            &body_for("FI"),
            Tweak {
                sent_body: Some(serde_json::to_vec(&tampered).expect("json")),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(failure(&v).0, "error.digest.invalid");
    sb.stop().await;
}

#[tokio::test]
async fn a_header_missing_from_the_signed_list_is_refused() {
    let sb = spawn().await;
    // Without a body: the date is left out of the list.
    let resp = sb
        .call(
            Method::GET,
            "/personal/v2/single-sca-payments/x/status",
            None,
            None,
            Tweak {
                headers_list: Some("(request-target) x-nordea-originating-host"),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(failure(&v).0, "error.signature.invalid");
    // With a body: the short list (content-type and digest not signed) is not enough.
    let resp = sb
        .post_json(
            endpoint_for("FI"),
            &body_for("FI"),
            Tweak {
                headers_list: Some(
                    "(request-target) x-nordea-originating-host x-nordea-originating-date",
                ),
                ..Tweak::default()
            },
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.expect("json");
    let (code, description) = failure(&v);
    assert_eq!(code, "error.signature.invalid");
    assert!(description.contains("content-type digest"), "{description}");
    sb.stop().await;
}

#[tokio::test]
async fn a_date_ten_minutes_old_or_not_an_imf_fixdate_is_refused() {
    let sb = spawn().await;
    let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(600));
    for date in [
        old,
        "2019-04-24T14:00:37Z".to_owned(),
        "Wednesday, 24-Apr-19 14:00:37 GMT".to_owned(),
    ] {
        let resp = sb
            .call(
                Method::GET,
                "/personal/v2/single-sca-payments/x/status",
                None,
                None,
                Tweak {
                    date: Some(date.clone()),
                    ..Tweak::default()
                },
            )
            .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{date}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(failure(&v).0, "error.date.invalid", "{date}");
        assert_eq!(
            v["error"]["failures"][0]["path"],
            "X-Nordea-Originating-Date"
        );
    }
    sb.stop().await;
}

/// The normalized form string Nordea's signing script digests: keys sorted, values as is.
fn normalized_form(params: &[(&str, &str)]) -> String {
    let mut params = params.to_vec();
    params.sort();
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn a_form_body_out_of_alphabetical_order_fails_the_digest() {
    let sb = spawn().await;
    let resp = sb
        .token_form(&format!(
            "grant_type=authorization_code&code=abc&redirect_uri={}",
            url::form_urlencoded::byte_serialize(REDIRECT_URI.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(failure(&v).0, "error.digest.invalid");
    sb.stop().await;
}

#[tokio::test]
async fn failures_carry_the_header_or_field_as_path_and_a_validator_type() {
    let sb = spawn().await;
    let resp = sb
        .call(
            Method::GET,
            "/personal/v2/single-sca-payments/x/status",
            None,
            None,
            Tweak {
                omit_client_id: true,
                ..Tweak::default()
            },
        )
        .await;
    let v: Value = resp.json().await.expect("json");
    let f = &v["error"]["failures"][0];
    assert_eq!(
        (f["code"].as_str(), f["path"].as_str(), f["type"].as_str()),
        (
            Some("error.apikey.missing"),
            Some("X-IBM-Client-Id"),
            Some("NotNull")
        )
    );
    let resp = sb
        .call(
            Method::GET,
            "/personal/v2/single-sca-payments/x/status",
            None,
            None,
            Tweak {
                secret: Some("wrong"),
                ..Tweak::default()
            },
        )
        .await;
    let v: Value = resp.json().await.expect("json");
    let f = &v["error"]["failures"][0];
    assert_eq!(
        (f["code"].as_str(), f["type"].as_str()),
        (Some("unauthorized"), Some("Valid"))
    );
    sb.stop().await;
}

#[tokio::test]
async fn a_percent_encoded_token_body_fails_the_digest_and_the_normalized_one_passes() {
    let sb = spawn().await;
    let p = sb.initiate("FI").await;
    let code = sb.approve(&p, "psu-1").await;
    // Our old way: values percent-encoded, the digest over those bytes.
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &code)
        .append_pair("grant_type", "authorization_code")
        .append_pair("redirect_uri", REDIRECT_URI)
        .finish();
    assert!(encoded.contains("https%3A%2F%2F"), "{encoded}");
    let resp = sb.token_form(&encoded).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(failure(&v).0, "error.digest.invalid");
    // Nordea's normalized string: the same parameters, values as they are.
    let normalized = normalized_form(&[
        ("redirect_uri", REDIRECT_URI),
        ("grant_type", "authorization_code"),
        ("code", &code),
    ]);
    assert!(normalized.contains("redirect_uri=https://"), "{normalized}");
    let resp = sb.token_form(&normalized).await;
    assert_eq!(resp.status(), StatusCode::OK);
    sb.stop().await;
}

#[tokio::test]
async fn pkcs1_and_bare_base64_public_keys_are_accepted_and_a_small_key_refused() {
    let pkcs1 = key()
        .to_public_key()
        .to_pkcs1_pem(LineEnding::LF)
        .expect("pem");
    let cfg = SandboxConfig::new(
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET.to_owned()),
        pkcs1,
        "http://127.0.0.1:1",
    );
    assert!(Sandbox::new(cfg).is_ok());
    let bare: String = public_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let cfg = SandboxConfig::new(
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET.to_owned()),
        bare,
        "http://127.0.0.1:1",
    );
    assert!(Sandbox::new(cfg).is_ok());
    let small = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).expect("key");
    let cfg = SandboxConfig::new(
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET.to_owned()),
        small
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem"),
        "http://127.0.0.1:1",
    );
    assert!(matches!(
        Sandbox::new(cfg),
        Err(SandboxError::KeyTooSmall(1024))
    ));
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn a_code_can_be_exchanged_only_once_and_only_with_its_redirect_uri() {
    let sb = spawn().await;
    let p = sb.initiate("FI").await;
    let code = sb.approve(&p, "psu-1").await;

    let form = normalized_form(&[
        ("code", &code),
        ("grant_type", "authorization_code"),
        ("redirect_uri", "https://elsewhere.example/cb"),
    ]);
    let resp = sb.token_form(&form).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(failure(&v).0, "invalid_grant");

    let _ = sb.tokens(&code).await;
    let resp = sb.exchange(&code).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(
        failure(&v),
        (
            "invalid_grant",
            "The authorization code has already been used."
        )
    );
    sb.stop().await;
}

#[tokio::test]
async fn a_new_exchange_revokes_the_psus_older_token() {
    let sb = spawn().await;
    let first = sb.initiate("SE").await;
    let second = sb.initiate("SE").await;
    let code1 = sb.approve(&first, "psu-bo").await;
    let code2 = sb.approve(&second, "psu-bo").await;
    let (old, _) = sb.tokens(&code1).await;
    let (status, _) = sb.details(&first.id, &old).await;
    assert_eq!(status, StatusCode::OK);

    let (new, _) = sb.tokens(&code2).await;
    let (status, body) = sb.details(&first.id, &old).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        failure(&body),
        ("error.token.invalid", "The access token has been revoked.")
    );
    // The newest token works for all of the PSU's payments.
    assert_eq!(sb.details(&first.id, &new).await.0, StatusCode::OK);
    assert_eq!(sb.details(&second.id, &new).await.0, StatusCode::OK);
    sb.stop().await;
}

#[tokio::test]
async fn another_psus_token_cannot_read_the_payment_and_unknown_tokens_are_401() {
    let sb = spawn().await;
    let mine = sb.initiate("NO").await;
    let theirs = sb.initiate("NO").await;
    let _ = sb.approve(&mine, "psu-a").await;
    let code = sb.approve(&theirs, "psu-b").await;
    let (token_b, _) = sb.tokens(&code).await;
    let (status, body) = sb.details(&mine.id, &token_b).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(failure(&body).0, "error.resource.denied");
    let (status, body) = sb.details(&mine.id, "made-up").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(failure(&body).0, "error.token.invalid");
    let resp = sb
        .get(
            &format!("/personal/v2/single-sca-payments/{}", mine.id),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    sb.stop().await;
}

#[tokio::test]
async fn a_refresh_token_works_once_and_revocation_kills_the_grant() {
    let sb = spawn().await;
    let p = sb.initiate("DK").await;
    let code = sb.approve(&p, "psu-1").await;
    let (access1, refresh1) = sb.tokens(&code).await;

    let form = format!("grant_type=refresh_token&refresh_token={refresh1}");
    let resp = sb.token_form(&form).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.expect("json");
    let access2 = v["access_token"].as_str().expect("at").to_owned();
    let refresh2 = v["refresh_token"].as_str().expect("rt").to_owned();
    assert_eq!(
        sb.details(&p.id, &access1).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(sb.details(&p.id, &access2).await.0, StatusCode::OK);

    let resp = sb.token_form(&form).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(failure(&v).0, "invalid_grant");

    let resp = sb
        .post_json(
            "/personal/v5/authorize/token/revoke",
            &json!({ "token": refresh2 }),
            Tweak::default(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        sb.details(&p.id, &access2).await.0,
        StatusCode::UNAUTHORIZED
    );
    let resp = sb
        .token_form(&format!(
            "grant_type=refresh_token&refresh_token={refresh2}"
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    sb.stop().await;
}

#[tokio::test]
async fn an_access_token_expires_on_the_sandbox_clock() {
    let sb = spawn_with(|c| c.access_token_lifetime = Duration::from_secs(60)).await;
    let p = sb.initiate("DK").await;
    let code = sb.approve(&p, "psu-1").await;
    let (access, _) = sb.tokens(&code).await;
    assert_eq!(sb.details(&p.id, &access).await.0, StatusCode::OK);
    sb.sandbox.advance_clock(Duration::from_secs(61));
    let (status, body) = sb.details(&p.id, &access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(failure(&body).0, "error.token.expired");
    sb.stop().await;
}

// ---------------------------------------------------------------- validation

async fn expect_refusal(sb: &TestSandbox, country: &str, body: Value, code: &str, path: &str) {
    let resp = sb
        .post_json(endpoint_for(country), &body, Tweak::default())
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{code} {path}");
    let v: Value = resp.json().await.expect("json");
    let failures = failure_codes(&v);
    assert!(
        failures.contains(&(code.to_owned(), path.to_owned())),
        "expected {code} at {path}, got {failures:?}"
    );
}

fn with(country: &str, change: impl FnOnce(&mut Value)) -> Value {
    let mut body = body_for(country);
    change(&mut body);
    body
}

#[tokio::test]
async fn each_validation_rule_is_answered_with_a_nordea_failure() {
    let sb = spawn().await;
    let cases: Vec<(&str, &str, Value, &str, &str)> = vec![
        // (endpoint country, rule, body, code, path)
        (
            "FI",
            "DKK on SEPA",
            with("FI", |b| b["payment"]["currency"] = json!("DKK")),
            "error.validation.currency",
            "payment.currency",
        ),
        (
            "DK",
            "EUR on domestic",
            with("DK", |b| b["payment"]["currency"] = json!("EUR")),
            "error.validation.currency",
            "payment.currency",
        ),
        (
            "DK",
            "GBP",
            with("DK", |b| b["payment"]["currency"] = json!("GBP")),
            "error.validation.currency",
            "payment.currency",
        ),
        (
            "DK",
            "BGNR in DK",
            with("DK", |b| {
                b["payment"]["creditor"]["account"] = json!({"type": "BGNR", "value": "3300308"})
            }),
            "error.validation.account_type",
            "payment.creditor.account.type",
        ),
        (
            "FI",
            "BBAN in FI",
            with("FI", |b| {
                b["payment"]["creditor"]["account"] =
                    json!({"type": "BBAN_SE", "value": "41351300039"})
            }),
            "error.validation.account_type",
            "payment.creditor.account.type",
        ),
        (
            "NO",
            "BBAN_SE in NO",
            with("NO", |b| {
                b["payment"]["creditor"]["account"] =
                    json!({"type": "BBAN_SE", "value": "41351300039"})
            }),
            "error.validation.account_type",
            "payment.creditor.account.type",
        ),
        (
            "FI",
            "IBAN checksum",
            with("FI", |b| {
                b["payment"]["creditor"]["account"]["value"] = json!("FI1450000120236229")
            }),
            "error.validation.account",
            "payment.creditor.account.value",
        ),
        (
            "SE",
            "account currency",
            with("SE", |b| {
                b["payment"]["debtor"]["account"]["currency"] = json!("EUR")
            }),
            "error.validation.currency",
            "payment.debtor.account.currency",
        ),
        (
            "FI",
            "name of 71",
            with("FI", |b| {
                b["payment"]["creditor"]["name"] = json!("x".repeat(71))
            }),
            "error.validation.creditor_name",
            "payment.creditor.name",
        ),
        (
            "FI",
            "three decimals",
            with("FI", |b| b["payment"]["amount"] = json!("10.001")),
            "error.validation.amount",
            "payment.amount",
        ),
        (
            "FI",
            "zero amount",
            with("FI", |b| b["payment"]["amount"] = json!("0.00")),
            "error.validation.amount",
            "payment.amount",
        ),
        (
            "DK",
            "number with 3 decimals",
            with("DK", |b| b["payment"]["amount"] = json!(1.234)),
            "error.validation.amount",
            "payment.amount",
        ),
        (
            "FI",
            "missing amount",
            with("FI", |b| {
                b["payment"].as_object_mut().expect("o").remove("amount");
            }),
            "error.validation.required",
            "payment.amount",
        ),
        (
            "SE",
            "express in SE",
            with("SE", |b| b["payment"]["urgency"] = json!("express")),
            "error.validation.urgency",
            "payment.urgency",
        ),
        (
            "FI",
            "express due-dated",
            with("FI", |b| {
                b["payment"]["urgency"] = json!("express");
                b["payment"]["requested_execution_date"] = json!(in_days(3));
            }),
            "error.validation.urgency",
            "payment.urgency",
        ),
        (
            "FI",
            "unknown urgency",
            with("FI", |b| b["payment"]["urgency"] = json!("instant")),
            "error.validation.urgency",
            "payment.urgency",
        ),
        (
            "FI",
            "past date",
            with("FI", |b| {
                b["payment"]["requested_execution_date"] = json!(in_days(-2))
            }),
            "error.validation.execution_date",
            "payment.requested_execution_date",
        ),
        (
            "FI",
            "own account in FI",
            with("FI", |b| {
                b["payment"]["is_own_account_transfer"] = json!(false)
            }),
            "error.validation.own_account_transfer",
            "payment.is_own_account_transfer",
        ),
        (
            "DK",
            "count 1",
            with("DK", |b| {
                b["payment"]["recurring"] =
                    json!({"count": 1, "recurrence_type": "MONTHLY_SAME_DAY"})
            }),
            "error.validation.recurring",
            "payment.recurring.count",
        ),
        (
            "DK",
            "count 99",
            with("DK", |b| {
                b["payment"]["recurring"] =
                    json!({"count": 99, "recurrence_type": "MONTHLY_SAME_DAY"})
            }),
            "error.validation.recurring",
            "payment.recurring.count",
        ),
        (
            "DK",
            "unknown recurrence",
            with("DK", |b| {
                b["payment"]["recurring"] = json!({"count": 3, "recurrence_type": "HOURLY"})
            }),
            "error.validation.recurring",
            "payment.recurring.recurrence_type",
        ),
        (
            "NO",
            "NO biweekly not own",
            with("NO", |b| {
                b["payment"]["recurring"] = json!({"count": 3, "recurrence_type": "BIWEEKLY"})
            }),
            "error.validation.recurring",
            "payment.recurring.recurrence_type",
        ),
        (
            "SE",
            "SE monthly own",
            with("SE", |b| {
                b["payment"]["creditor"]["account"] =
                    json!({"type": "BBAN_SE", "value": "43951000887"});
                b["payment"]["is_own_account_transfer"] = json!(true);
                b["payment"]["recurring"] =
                    json!({"count": 3, "recurrence_type": "MONTHLY_SAME_DAY"});
            }),
            "error.validation.recurring",
            "payment.recurring.recurrence_type",
        ),
        (
            "FI",
            "missing state",
            with("FI", |b| {
                b["authentication"]
                    .as_object_mut()
                    .expect("o")
                    .remove("state");
            }),
            "error.validation.required",
            "authentication.state",
        ),
        (
            "FI",
            "missing redirect_uri",
            with("FI", |b| {
                b["authentication"]
                    .as_object_mut()
                    .expect("o")
                    .remove("redirect_uri");
            }),
            "error.validation.required",
            "authentication.redirect_uri",
        ),
        (
            "FI",
            "relative redirect_uri",
            with("FI", |b| {
                b["authentication"]["redirect_uri"] = json!("/callback")
            }),
            "error.validation.format",
            "authentication.redirect_uri",
        ),
        (
            "FI",
            "missing authentication",
            with("FI", |b| {
                b.as_object_mut().expect("o").remove("authentication");
            }),
            "error.validation.required",
            "authentication",
        ),
        (
            "FI",
            "SEPA without creditor name",
            with("FI", |b| {
                b["payment"]["creditor"]
                    .as_object_mut()
                    .expect("o")
                    .remove("name");
            }),
            "error.validation.required",
            "payment.creditor.name",
        ),
        // The creditor message's limits per country and account type (Nordea's swagger:
        // "FI SEPA:140; SE:12; PGNR:25; BGNR:150; DK: 40; NO: 140").
        (
            "SE",
            "Bankgiro message over 150",
            with("SE", |b| {
                b["payment"]["creditor"]["message"] = json!("m".repeat(151))
            }),
            "error.validation.message",
            "payment.creditor.message",
        ),
        (
            "SE",
            "Plusgiro message over 25",
            with("SE", |b| {
                b["payment"]["creditor"]["account"] = json!({"type": "PGNR", "value": "4417012"});
                b["payment"]["creditor"]["message"] = json!("m".repeat(26))
            }),
            "error.validation.message",
            "payment.creditor.message",
        ),
        (
            "SE",
            "bank account message over 12",
            with("SE", |b| {
                b["payment"]["creditor"]["account"] =
                    json!({"type": "BBAN_SE", "value": "41351300039"});
                b["payment"]["creditor"]["message"] = json!("m".repeat(13))
            }),
            "error.validation.message",
            "payment.creditor.message",
        ),
        (
            "DK",
            "DK message over 40",
            with("DK", |b| {
                b["payment"]["creditor"]["message"] = json!("m".repeat(41))
            }),
            "error.validation.message",
            "payment.creditor.message",
        ),
        (
            "NO",
            "NO message over 140",
            with("NO", |b| {
                b["payment"]["creditor"]["message"] = json!("m".repeat(141))
            }),
            "error.validation.message",
            "payment.creditor.message",
        ),
    ];
    for (country, rule, body, code, path) in cases {
        eprintln!("rule: {rule}");
        expect_refusal(&sb, country, body, code, path).await;
    }
    assert!(sb.sandbox.payments().is_empty());
    sb.stop().await;
}

#[tokio::test]
async fn every_violation_is_reported_at_once() {
    let sb = spawn().await;
    let body = with("FI", |b| {
        b["payment"]["amount"] = json!("1.234");
        b["payment"]["creditor"]["name"] = json!("n".repeat(80));
        b["authentication"]
            .as_object_mut()
            .expect("o")
            .remove("state");
    });
    let resp = sb
        .post_json(endpoint_for("FI"), &body, Tweak::default())
        .await;
    let v: Value = resp.json().await.expect("json");
    assert_eq!(failure_codes(&v).len(), 3, "{v}");
    sb.stop().await;
}

#[tokio::test]
async fn sandbox_only_and_edge_values_are_accepted() {
    let sb = spawn().await;
    let accepted = [
        (
            "DK",
            with(
                "DK",
                |b| {
                    b["payment"]["recurring"] =
                        json!({"count": 9999, "recurrence_type": "EVERY_MINUTE_SANDBOX_ONLY"})
                },
            ),
        ),
        (
            "NO",
            with("NO", |b| {
                b["payment"]["recurring"] =
                    json!({"count": 98, "recurrence_type": "MONTHLY_SAME_DAY"})
            }),
        ),
        (
            "FI",
            with("FI", |b| {
                b["payment"]["urgency"] = json!("express");
                b["payment"]["requested_execution_date"] = json!(today());
            }),
        ),
        (
            "FI",
            with("FI", |b| {
                b["payment"]["creditor"]["name"] = json!("x".repeat(70))
            }),
        ),
        (
            "SE",
            with("SE", |b| {
                b["payment"]["creditor"]["account"] = json!({"type": "PGNR", "value": "4417012"})
            }),
        ),
        (
            "NO",
            with("NO", |b| {
                b["payment"]["creditor"]["account"] =
                    json!({"type": "BBAN_NO", "value": "60391598838"})
            }),
        ),
        (
            "DK",
            with("DK", |b| {
                b["payment"]["is_own_account_transfer"] = json!(true)
            }),
        ),
        // A Bankgiro message may be 150 characters long (pisgate's API allows that too).
        (
            "SE",
            with("SE", |b| {
                b["payment"]["creditor"]["message"] = json!("m".repeat(150))
            }),
        ),
        (
            "FI",
            with("FI", |b| {
                b["payment"]["creditor"]["message"] = json!("m".repeat(140))
            }),
        ),
        (
            "DK",
            with("DK", |b| {
                b["payment"]["creditor"]["message"] = json!("m".repeat(40))
            }),
        ),
    ];
    for (country, body) in accepted {
        let _ = sb.initiate_body(country, &body).await;
    }
    sb.stop().await;
}

// ---------------------------------------------------------------- lifecycle

#[tokio::test]
async fn with_zero_delays_an_approved_payment_is_paid_at_once() {
    let sb = spawn().await;
    let p = sb.initiate("FI").await;
    let _ = sb.approve(&p, "psu-1").await;
    let (_, body) = sb.status_of(&p.id).await;
    assert_eq!(body["response"]["status"], "Paid");
    sb.stop().await;
}

#[tokio::test]
async fn confirmed_turns_paid_after_the_configured_delays() {
    let sb = spawn_with(|c| {
        c.confirm_delay = Duration::from_secs(2);
        c.paid_delay = Duration::from_secs(3);
    })
    .await;
    let p = sb.initiate("FI").await;
    let _ = sb.approve(&p, "psu-1").await;
    assert_eq!(
        sb.status_of(&p.id).await.1["response"]["status"],
        "PendingUserApproval"
    );
    sb.sandbox.advance_clock(Duration::from_secs(2));
    assert_eq!(
        sb.status_of(&p.id).await.1["response"]["status"],
        "Confirmed"
    );
    sb.sandbox.advance_clock(Duration::from_secs(3));
    assert_eq!(sb.status_of(&p.id).await.1["response"]["status"], "Paid");
    sb.stop().await;
}

#[tokio::test]
async fn confirmed_turns_paid_in_real_time_with_short_delays() {
    let sb = spawn_with(|c| c.paid_delay = Duration::from_millis(200)).await;
    let p = sb.initiate("DK").await;
    let _ = sb.approve(&p, "psu-1").await;
    assert_eq!(
        sb.status_of(&p.id).await.1["response"]["status"],
        "Confirmed"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(sb.status_of(&p.id).await.1["response"]["status"], "Paid");
    sb.stop().await;
}

#[tokio::test]
async fn a_future_dated_payment_stays_confirmed_until_its_date() {
    let sb = spawn().await;
    let body = with("DK", |b| {
        b["payment"]["requested_execution_date"] = json!(in_days(2))
    });
    let p = sb.initiate_body("DK", &body).await;
    let _ = sb.approve(&p, "psu-1").await;
    assert_eq!(
        sb.status_of(&p.id).await.1["response"]["status"],
        "Confirmed"
    );
    sb.sandbox.advance_clock(Duration::from_secs(3 * 24 * 3600));
    assert_eq!(sb.status_of(&p.id).await.1["response"]["status"], "Paid");
    sb.stop().await;
}

#[tokio::test]
async fn an_every_minute_series_pays_one_occurrence_per_interval_and_counts_down() {
    let sb = spawn_with(|c| c.recurring_interval = Duration::from_millis(50)).await;
    let body =
        with(
            "SE",
            |b| {
                b["payment"]["recurring"] =
                    json!({"count": 3, "recurrence_type": "EVERY_MINUTE_SANDBOX_ONLY"})
            },
        );
    let p = sb.initiate_body("SE", &body).await;
    let code = sb.approve(&p, "psu-1").await;
    let (access, _) = sb.tokens(&code).await;
    let (_, d) = sb.details(&p.id, &access).await;
    assert_eq!(d["response"]["recurring"]["count"], 2);
    assert_eq!(d["response"]["status"], "Confirmed");
    sb.sandbox.advance_clock(Duration::from_millis(50));
    let (_, d) = sb.details(&p.id, &access).await;
    assert_eq!(d["response"]["recurring"]["count"], 1);
    sb.sandbox.advance_clock(Duration::from_millis(50));
    let (_, d) = sb.details(&p.id, &access).await;
    assert_eq!(d["response"]["recurring"]["count"], 0);
    assert_eq!(d["response"]["status"], "Paid");
    sb.sandbox.advance_clock(Duration::from_millis(500));
    let (_, d) = sb.details(&p.id, &access).await;
    assert_eq!(d["response"]["recurring"]["count"], 0);
    sb.stop().await;
}

#[tokio::test]
async fn an_open_ended_series_keeps_count_9999_until_deleted() {
    let sb = spawn_with(|c| c.recurring_interval = Duration::from_millis(10)).await;
    let body =
        with(
            "NO",
            |b| {
                b["payment"]["recurring"] =
                    json!({"count": 9999, "recurrence_type": "EVERY_MINUTE_SANDBOX_ONLY"})
            },
        );
    let p = sb.initiate_body("NO", &body).await;
    let code = sb.approve(&p, "psu-1").await;
    let (access, _) = sb.tokens(&code).await;
    sb.sandbox.advance_clock(Duration::from_secs(1));
    let (_, d) = sb.details(&p.id, &access).await;
    assert_eq!(d["response"]["recurring"]["count"], 9999);
    assert_eq!(d["response"]["status"], "Confirmed");
    assert!(sb.sandbox.payment(&p.id).expect("view").executions > 50);
    let (_, del) = sb.delete(&[&p.id], &access).await;
    assert_eq!(del["response"], json!([p.id]));
    assert_eq!(
        sb.status_of(&p.id).await.1["response"]["status"],
        "Cancelled"
    );
    sb.stop().await;
}

// ---------------------------------------------------------------- scenarios

#[tokio::test]
async fn funds_not_available_comes_from_the_message_or_the_admin_api() {
    let sb = spawn_with(|c| c.paid_delay = Duration::from_secs(3600)).await;
    let body = with("DK", |b| {
        b["payment"]["creditor"]["message"] = json!("FundsNotAvailable")
    });
    let p = sb.initiate_body("DK", &body).await;
    let code = sb.approve(&p, "psu-1").await;
    let (access, _) = sb.tokens(&code).await;
    let (_, v) = sb.funds(&p.id, &access).await;
    assert_eq!(v["response"]["availability_of_funds"], "false");

    let resp = sb
        .admin(
            Method::PUT,
            &format!("/sandbox/admin/payments/{}/scenario", p.id),
            Some(json!({"funds_not_available": false})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (_, v) = sb.funds(&p.id, &access).await;
    assert_eq!(v["response"]["availability_of_funds"], "true");

    // Without the query parameter, v3 answers the details only.
    let resp = sb
        .get(
            &format!("/personal/v3/single-sca-payments/{}", p.id),
            Some(&access),
        )
        .await;
    let v: Value = resp.json().await.expect("json");
    assert!(v["response"].get("availability_of_funds").is_none());
    sb.stop().await;
}

#[tokio::test]
async fn the_admin_api_can_force_a_status() {
    let sb = spawn_with(|c| c.paid_delay = Duration::from_secs(3600)).await;
    let p = sb.initiate("FI").await;
    let _ = sb.approve(&p, "psu-1").await;
    let resp = sb
        .admin(
            Method::PUT,
            &format!("/sandbox/admin/payments/{}/status", p.id),
            Some(json!({"status": "InsufficientFunds"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        sb.status_of(&p.id).await.1["response"]["status"],
        "InsufficientFunds"
    );
    let views: Value = sb
        .admin(Method::GET, "/sandbox/admin/payments", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(views[0]["psu_id"], "psu-1");
    assert_eq!(views[0]["status"], "InsufficientFunds");
    sb.stop().await;
}

// ---------------------------------------------------------------- faults

async fn put_faults(sb: &TestSandbox, rules: Value) {
    let resp = sb
        .admin(
            Method::PUT,
            "/sandbox/admin/faults",
            Some(json!({ "rules": rules })),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn injected_500_and_503_answer_with_nordea_bodies_and_change_nothing() {
    let sb = spawn().await;
    put_faults(
        &sb,
        json!([
            {"operation": "initiate", "kind": "http500", "times": 1},
            {"operation": "initiate", "kind": "http503", "times": 1}
        ]),
    )
    .await;
    let resp = sb
        .post_json(endpoint_for("FI"), &body_for("FI"), Tweak::default())
        .await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["group_header"]["http_code"], 500);
    let resp = sb
        .post_json(endpoint_for("FI"), &body_for("FI"), Tweak::default())
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(sb.sandbox.payments().is_empty());
    // Both rules are used up.
    let _ = sb.initiate("FI").await;
    let counters = sb.sandbox.counters();
    assert_eq!(counters[&Operation::Initiate].received, 3);
    assert_eq!(counters[&Operation::Initiate].faulted, 2);
    sb.stop().await;
}

#[tokio::test]
async fn an_injected_429_carries_retry_after() {
    let sb = spawn().await;
    sb.sandbox.add_fault(FaultRule::always(
        FaultTarget::Status,
        Fault::Http429 {
            retry_after_secs: 7,
        },
    ));
    let resp = sb
        .get("/personal/v2/single-sca-payments/x/status", None)
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");
    // Other operations are not affected.
    let p = sb.initiate("DK").await;
    assert!(!p.id.is_empty());
    sb.stop().await;
}

#[tokio::test]
async fn an_injected_drop_closes_the_connection_without_an_answer() {
    let sb = spawn().await;
    put_faults(
        &sb,
        json!([{"operation": "all", "kind": "drop_connection", "times": 1}]),
    )
    .await;
    let result = browser()
        .get(format!(
            "{}/personal/v2/single-sca-payments/x/status",
            sb.base
        ))
        .send()
        .await;
    let err = result.expect_err("no answer");
    assert!(!err.is_status(), "{err:?}");
    let recorded = sb.sandbox.requests();
    assert_eq!(recorded.last().expect("recorded").status, None);
    assert_eq!(
        recorded.last().expect("recorded").fault.as_deref(),
        Some("drop_connection")
    );
    // The sandbox keeps serving.
    let (status, _) = sb.status_of("x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sb.stop().await;
}

#[tokio::test]
async fn an_injected_malformed_body_is_not_json_but_the_call_happened() {
    let sb = spawn().await;
    sb.sandbox
        .add_fault(FaultRule::always(FaultTarget::Initiate, Fault::MalformedJson).times(1));
    let resp = sb
        .post_json(endpoint_for("NO"), &body_for("NO"), Tweak::default())
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let text = resp.text().await.expect("text");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert_eq!(sb.sandbox.payments().len(), 1);
    sb.stop().await;
}

#[tokio::test]
async fn injected_latency_delays_the_answer() {
    let sb = spawn().await;
    sb.sandbox.add_fault(FaultRule::always(
        FaultTarget::Status,
        Fault::Latency { ms: 300 },
    ));
    let start = Instant::now();
    let (status, _) = sb.status_of("x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(start.elapsed() >= Duration::from_millis(300));
    let faults: Value = sb
        .admin(Method::GET, "/sandbox/admin/faults", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(faults["rules"][0]["kind"], "latency");
    assert_eq!(faults["counters"]["status"]["received"], 1);
    let resp = sb
        .admin(Method::DELETE, "/sandbox/admin/faults", None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(sb.sandbox.faults().is_empty());
    sb.stop().await;
}

#[tokio::test]
async fn faults_can_be_configured_from_the_start() {
    let sb = spawn_with(|c| {
        c.faults = vec![FaultRule::always(FaultTarget::Token, Fault::Http503)];
    })
    .await;
    let resp = sb
        .token_form("grant_type=refresh_token&refresh_token=x")
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    sb.stop().await;
}

// ---------------------------------------------------------------- request log and serving

#[tokio::test]
async fn received_requests_are_recorded_without_secrets() {
    let sb = spawn().await;
    let p = sb.initiate("FI").await;
    let code = sb.approve(&p, "psu-1").await;
    let (access, _) = sb.tokens(&code).await;
    let _ = sb.details(&p.id, &access).await;

    let log = sb.sandbox.requests();
    let ops: Vec<_> = log.iter().map(|r| r.operation).collect();
    assert_eq!(
        ops,
        vec![
            Some(Operation::Initiate),
            Some(Operation::Token),
            Some(Operation::Details)
        ]
    );
    let init = &log[0];
    assert_eq!(init.method, "POST");
    assert!(init.header("x-ibm-client-secret").is_none());
    assert_eq!(init.header("x-ibm-client-id"), Some(CLIENT_ID));
    assert!(init.header("signature").is_some());
    assert!(init.body.contains("FI1450000120236228"));
    assert_eq!(log[2].header("authorization"), Some("Bearer <redacted>"));

    let via_http: Value = sb
        .admin(Method::GET, "/sandbox/admin/requests?operation=token", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(via_http.as_array().map(Vec::len), Some(1));
    assert_eq!(via_http[0]["status"], 200);
    let resp = sb
        .admin(Method::DELETE, "/sandbox/admin/requests", None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(sb.sandbox.requests().is_empty());
    sb.stop().await;
}

#[tokio::test]
async fn unknown_paths_under_personal_answer_a_nordea_404() {
    let sb = spawn().await;
    let resp = sb.get("/personal/v9/nothing", None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(failure(&v).0, "error.resource.not_found");
    sb.stop().await;
}

#[tokio::test]
async fn serve_stops_on_shutdown() {
    let sb = spawn().await;
    let base = sb.base.clone();
    sb.stop().await;
    assert!(
        browser()
            .get(format!("{base}/sandbox/admin/health"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_unsigned_payment_times_out_when_an_approval_timeout_is_set() {
    let sb = spawn_with(|c| c.approval_timeout = Some(Duration::from_secs(60))).await;
    let p = sb.initiate("FI").await;
    let page = sb.client.get(&p.signing_url).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    sb.sandbox.advance_clock(Duration::from_secs(61));
    assert_eq!(
        sb.status_of(&p.id).await.1["response"]["status"],
        "UserApprovalTimeout"
    );
    let resp = sb
        .client
        .post(&p.signing_url)
        .form(&[("psu_id", "psu-1"), ("decision", "approve")])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::GONE);
    sb.stop().await;
}

#[tokio::test]
async fn unsigned_payments_time_out_after_thirty_minutes_by_default() {
    let sb = spawn().await;
    assert_eq!(
        sb.sandbox.config().approval_timeout,
        Some(Duration::from_secs(1800))
    );
    let opened = sb.initiate("SE").await;
    let never_opened = sb.initiate("DK").await;
    let signed = sb.initiate("FI").await;
    let page = sb
        .client
        .get(&opened.signing_url)
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let _ = sb.approve(&signed, "psu-1").await;

    sb.sandbox.advance_clock(Duration::from_secs(29 * 60));
    assert_eq!(
        sb.status_of(&opened.id).await.1["response"]["status"],
        "PendingUserApproval"
    );
    sb.sandbox.advance_clock(Duration::from_secs(60));
    assert_eq!(
        sb.status_of(&opened.id).await.1["response"]["status"],
        "UserApprovalTimeout"
    );
    let late = sb
        .client
        .get(&opened.signing_url)
        .send()
        .await
        .expect("page");
    assert_eq!(late.status(), StatusCode::GONE);
    // Never opened: still nothing at the bank.
    assert_eq!(
        sb.status_of(&never_opened.id).await.0,
        StatusCode::NOT_FOUND
    );
    // Signed in time: not affected.
    assert_eq!(
        sb.status_of(&signed.id).await.1["response"]["status"],
        "Paid"
    );
    sb.stop().await;
}

#[tokio::test]
async fn no_approval_timeout_when_switched_off() {
    let sb = spawn_with(|c| c.approval_timeout = None).await;
    let p = sb.initiate("FI").await;
    let page = sb.client.get(&p.signing_url).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    sb.sandbox.advance_clock(Duration::from_secs(7 * 24 * 3600));
    assert_eq!(
        sb.status_of(&p.id).await.1["response"]["status"],
        "PendingUserApproval"
    );
    sb.stop().await;
}

/// The claims of an unsigned `header.claims.` JWT, checking its header and empty signature.
fn unsigned_jwt_claims(jwt: &str) -> (Value, String) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    assert_eq!(parts[2], "", "no signature");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    assert_eq!(header, json!({"alg": "none", "typ": "JWT"}));
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("utf8");
    (serde_json::from_str(&raw).expect("json"), raw)
}

#[tokio::test]
async fn token_answers_carry_an_id_token_only_when_token_identity_is_on() {
    let sb = spawn().await;
    assert!(!sb.sandbox.token_identity());
    let p = sb.initiate("FI").await;
    let code = sb.approve(&p, "psu-ident").await;
    let v: Value = sb.exchange(&code).await.json().await.expect("json");
    assert!(v.get("access_token").is_some());
    assert!(v.get("id_token").is_none(), "{v}");

    let resp = sb
        .admin(
            Method::PUT,
            "/sandbox/admin/token-identity",
            Some(json!({"on": true})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(sb.sandbox.token_identity());

    let p = sb.initiate("SE").await;
    let code = sb.approve(&p, "psu-ident").await;
    let before = sb.sandbox.now();
    let v: Value = sb.exchange(&code).await.json().await.expect("json");
    let after = sb.sandbox.now();
    let (claims, raw) = unsigned_jwt_claims(v["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["sub"], "psu-ident");
    // iat: fractional seconds with exactly six decimals, on the sandbox clock.
    let iat_text = raw
        .split("\"iat\":")
        .nth(1)
        .expect("iat")
        .trim_end_matches('}');
    let (whole, fraction) = iat_text.split_once('.').expect("a fraction");
    assert_eq!(fraction.len(), 6, "{iat_text}");
    let micros: i64 = format!("{whole}{fraction}").parse().expect("digits");
    assert!(
        before.timestamp_micros() <= micros && micros <= after.timestamp_micros(),
        "{before} <= {iat_text} <= {after}"
    );
    assert!(claims["iat"].is_f64(), "a JSON number");

    // A refresh carries one as well.
    let refresh = v["refresh_token"].as_str().expect("refresh");
    sb.sandbox.advance_clock(Duration::from_secs(10));
    let v: Value = sb
        .token_form(&format!("grant_type=refresh_token&refresh_token={refresh}"))
        .await
        .json()
        .await
        .expect("json");
    let (claims, _) = unsigned_jwt_claims(v["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["sub"], "psu-ident");
    assert!(claims["iat"].as_f64().expect("iat") >= (micros / 1_000_000 + 10) as f64);

    // And off again.
    sb.sandbox.set_token_identity(false);
    let p = sb.initiate("NO").await;
    let code = sb.approve(&p, "psu-ident").await;
    let v: Value = sb.exchange(&code).await.json().await.expect("json");
    assert!(v.get("id_token").is_none(), "{v}");
    sb.stop().await;
}

#[test]
fn the_id_token_writes_the_issue_time_to_the_microsecond() {
    let at = chrono::DateTime::from_timestamp_micros(1_795_000_000_000_042).expect("time");
    let (claims, raw) = unsigned_jwt_claims(&tokens::id_token("psu \"q\"", at));
    assert_eq!(raw, r#"{"sub":"psu \"q\"","iat":1795000000.000042}"#);
    assert_eq!(claims["sub"], "psu \"q\"");
}

#[tokio::test]
async fn a_delayed_answer_comes_after_the_call_has_run() {
    let sb = spawn().await;
    sb.sandbox.add_fault(
        FaultRule::always(FaultTarget::Initiate, Fault::DelayAnswer { ms: 400 }).times(1),
    );
    let body = body_for("FI");
    let started = Instant::now();
    let watch = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        (sb.sandbox.payments().len(), sb.sandbox.requests())
    };
    let (resp, (held, log)) = tokio::join!(
        sb.post_json(endpoint_for("FI"), &body, Tweak::default()),
        watch
    );
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(held, 1, "the payment existed before the answer was sent");
    assert_eq!(log.len(), 1, "logged before the wait");
    assert_eq!(log[0].status, Some(201));
    assert_eq!(log[0].fault.as_deref(), Some("delay_answer"));
    let v: Value = resp.json().await.expect("json");
    assert!(v["response"]["_links"].is_array());
    // Only once.
    let started = Instant::now();
    let _ = sb.initiate("FI").await;
    assert!(started.elapsed() < Duration::from_millis(400));
    sb.stop().await;
}

#[tokio::test]
async fn a_drop_after_processing_runs_the_call_then_closes_the_connection() {
    let sb = spawn().await;
    put_faults(
        &sb,
        json!([{"operation": "initiate", "kind": "drop_after_processing", "times": 1}]),
    )
    .await;
    let bytes = serde_json::to_vec(&body_for("DK")).expect("json");
    let result = sb
        .try_call(
            Method::POST,
            endpoint_for("DK"),
            Some(("application/json", bytes)),
            None,
            Tweak::default(),
        )
        .await;
    let err = result.expect_err("no answer");
    assert!(!err.is_status(), "{err:?}");
    // Yet the call ran: the payment exists at the bank.
    let held = sb.sandbox.payment_by_external_id("ext-dk");
    assert_eq!(held.len(), 1, "the payment was created: {held:?}");
    let recorded = sb.sandbox.requests();
    let last = recorded.last().expect("recorded");
    assert_eq!(last.status, None);
    assert_eq!(last.fault.as_deref(), Some("drop_after_processing"));

    // A token exchange: the code is spent, though its tokens never reached the client.
    let p = sb.initiate("FI").await;
    let code = sb.approve(&p, "psu-1").await;
    sb.sandbox
        .add_fault(FaultRule::always(FaultTarget::Token, Fault::DropAfterProcessing).times(1));
    let form = normalized_form(&[
        ("code", &code),
        ("grant_type", "authorization_code"),
        ("redirect_uri", REDIRECT_URI),
    ]);
    let lost = sb
        .try_call(
            Method::POST,
            "/personal/v5/authorize/token",
            Some(("application/x-www-form-urlencoded", form.into_bytes())),
            None,
            Tweak::default(),
        )
        .await;
    assert!(lost.is_err(), "no answer: {lost:?}");
    let again = sb.exchange(&code).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let v: Value = again.json().await.expect("json");
    assert_eq!(failure(&v).0, "invalid_grant");

    // The sandbox keeps serving.
    let p = sb.initiate("DK").await;
    assert!(!p.id.is_empty());
    assert_eq!(sb.sandbox.payment_by_external_id("ext-dk").len(), 2);
    sb.stop().await;
}

#[tokio::test]
async fn payments_are_found_by_external_id_oldest_first() {
    let sb = spawn().await;
    let first = sb.initiate("SE").await;
    sb.sandbox.advance_clock(Duration::from_millis(5));
    let other = sb.initiate("NO").await;
    sb.sandbox.advance_clock(Duration::from_millis(5));
    let second = sb.initiate("SE").await;
    let found = sb.sandbox.payment_by_external_id("ext-se");
    let ids: Vec<&str> = found.iter().map(|p| p.payment_id.as_str()).collect();
    assert_eq!(ids, [first.id.as_str(), second.id.as_str()]);
    assert!(found.iter().all(|p| !p.exists_at_bank));
    let found = sb.sandbox.payment_by_external_id("ext-no");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].payment_id, other.id);
    assert!(sb.sandbox.payment_by_external_id("ext").is_empty());
    sb.stop().await;
}

#[test]
fn the_request_verifier_accepts_only_the_registered_keys_exact_signature() {
    let verifier = RequestVerifier::new(key().to_public_key()).expect("verifier");
    assert!(matches!(verifier, RequestVerifier::AwsLc { .. }));
    let message = b"(request-target): post /personal/v2/payments";
    let signature = SigningKey::<Sha256>::new(key().clone())
        .sign(message)
        .to_vec();
    assert!(verifier.verify(message, &signature));
    // Another message, a changed bit, a byte short or long, another key: all refused.
    assert!(!verifier.verify(b"(request-target): get /personal/v2/payments", &signature));
    let mut flipped = signature.clone();
    flipped[10] ^= 1;
    assert!(!verifier.verify(message, &flipped));
    assert!(!verifier.verify(message, &signature[1..]));
    let mut longer = vec![0u8];
    longer.extend_from_slice(&signature);
    assert!(!verifier.verify(message, &longer));
    let other = SigningKey::<Sha256>::new(other_key().clone())
        .sign(message)
        .to_vec();
    assert!(!verifier.verify(message, &other));
}

#[tokio::test]
async fn the_sandbox_on_its_own_thread_answers_signed_calls_and_stops_on_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let cfg = SandboxConfig::new(
        CLIENT_ID,
        SecretString::from(CLIENT_SECRET.to_owned()),
        public_pem(),
        base.clone(),
    );
    let sandbox = Sandbox::new(cfg).expect("sandbox");
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(super::serve_on_one_thread(
        listener,
        sandbox.clone(),
        async {
            let _ = rx.await;
        },
    ));
    let sb = TestSandbox {
        base,
        sandbox,
        client: browser(),
        shutdown: None,
        server: None,
    };
    let p = sb.initiate("FI").await;
    assert!(sb.sandbox.payment(&p.id).is_some());
    assert_eq!(sb.sandbox.requests().len(), 1);
    tx.send(()).expect("the server is running");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops on shutdown")
        .expect("no panic")
        .expect("no error");
    assert!(
        sb.client
            .get(format!("{}/sandbox/admin/health", sb.base))
            .send()
            .await
            .is_err(),
        "the listener is closed after shutdown"
    );
}

#[test]
fn requests_are_classified_by_method_and_exact_path() {
    use axum::http::Method as M;
    let c = |m: &M, p: &str| handlers::classify(m, p);
    let id = "/personal/v2/single-sca-payments/abc";
    assert_eq!(
        c(
            &M::POST,
            "/personal/v2/payments/authorization/sepa-credit-transfer"
        ),
        Some(Operation::Initiate)
    );
    assert_eq!(
        c(
            &M::POST,
            "/personal/v2/payments/authorization/domestic-credit-transfer/"
        ),
        Some(Operation::Initiate)
    );
    assert_eq!(c(&M::GET, &format!("{id}/status")), Some(Operation::Status));
    assert_eq!(c(&M::GET, id), Some(Operation::Details));
    assert_eq!(
        c(&M::GET, "/personal/v3/single-sca-payments/abc"),
        Some(Operation::Funds)
    );
    assert_eq!(
        c(&M::DELETE, "/personal/v2/single-sca-payments/"),
        Some(Operation::Cancel)
    );
    assert_eq!(
        c(&M::POST, "/personal/v5/authorize/token"),
        Some(Operation::Token)
    );
    assert_eq!(
        c(&M::POST, "/personal/v5/authorize/token/revoke"),
        Some(Operation::Revoke)
    );
    assert_eq!(c(&M::GET, &format!("{id}/status/more")), None);
    assert_eq!(c(&M::GET, &format!("{id}/status/a/b/c/d")), None);
    assert_eq!(c(&M::POST, &format!("{id}/status")), None);
    assert_eq!(c(&M::GET, "/personal"), None);
}
